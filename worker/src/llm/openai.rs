//! The OpenAI-compatible API (llama-server, vLLM, Ollama's `/v1`): the request body of
//! `/v1/chat/completions` and its server-sent event stream. Pure: the HTTP shell in `http.rs`
//! feeds lines in.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::lines::{Sse, SseEvent};
use super::stream::{Decoder, Draft, describe_json_error, error_text};
use super::{LlmConfig, LlmError, LlmResult, Message};

/// A borrowed chat message (so a prompt is not copied into a [`Message`]).
#[derive(Debug, Serialize)]
pub(crate) struct MessageRef<'a> {
    role: &'a str,
    content: &'a str,
}

impl<'a> MessageRef<'a> {
    pub(crate) fn user(content: &'a str) -> Self {
        MessageRef { role: "user", content }
    }

    pub(crate) fn all(messages: &'a [Message]) -> Vec<Self> {
        messages.iter().map(|m| MessageRef { role: &m.role, content: &m.content }).collect()
    }
}

#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// `POST /v1/chat/completions`. `cache_prompt: false` is llama.cpp's: a cached prefix changes
/// the batch shape and so the floating-point result, and greedy output stops being reproducible
/// (llm-runtime.md §6); other servers ignore the field.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<MessageRef<'a>>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    temperature: f64,
    seed: u64,
    max_tokens: u32,
    cache_prompt: bool,
}

impl<'a> ChatRequest<'a> {
    /// A streamed completion with the configured sampling.
    pub(crate) fn new(config: &LlmConfig, model: &'a str, messages: Vec<MessageRef<'a>>) -> Self {
        ChatRequest {
            model,
            messages,
            stream: true,
            stream_options: Some(StreamOptions { include_usage: true }),
            temperature: config.temperature,
            seed: config.seed,
            max_tokens: config.num_predict,
            cache_prompt: false,
        }
    }

    /// A one-token, unstreamed completion: loads the model on servers that load lazily.
    pub(crate) fn warm(config: &LlmConfig, model: &'a str) -> Self {
        ChatRequest {
            stream: false,
            stream_options: None,
            max_tokens: 1,
            ..Self::new(config, model, vec![MessageRef::user("hi")])
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Deserialize)]
pub(crate) struct Models {
    #[serde(default)]
    data: Vec<Model>,
}

#[derive(Debug, Deserialize)]
struct Model {
    id: String,
    /// Only llama-server in router mode says: `{"value": "loaded" | "unloaded" | "loading" | ...}`.
    status: Option<ModelStatus>,
}

#[derive(Debug, Deserialize)]
struct ModelStatus {
    value: String,
}

impl Models {
    pub(crate) fn ids(self) -> Vec<String> {
        self.data.into_iter().map(|m| m.id).collect()
    }

    /// Each id with whether it is loaded, when the server says (router mode); `None` otherwise.
    pub(crate) fn statuses(self) -> Option<Vec<(String, bool)>> {
        if self.data.is_empty() || self.data.iter().any(|m| m.status.is_none()) {
            return None;
        }
        Some(self.data.into_iter().map(|m| (m.id, m.status.is_some_and(|s| s.value == "loaded"))).collect())
    }
}

/// `POST /models/load` and `/models/unload` of llama-server's router mode.
#[derive(Debug, Serialize)]
pub(crate) struct ModelRequest<'a> {
    pub(crate) model: &'a str,
}

/// Whether `available` serves `wanted`: an exact id. llama-server in single-model mode answers
/// to any `model` name, so a lenient match would hide a worker advertising a model the server
/// does not run; lcw starts it with `--alias <on-chain model name>` so the id is exact.
pub(crate) fn serves(available: &[String], wanted: &str) -> bool {
    available.iter().any(|a| a == wanted)
}

/// One `chat.completion.chunk`.
#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// Decodes the `/v1/chat/completions` event stream into a [`Draft`].
#[derive(Debug, Default)]
pub(crate) struct OpenAiStream {
    sse: Sse,
    draft: Draft,
    events: usize,
}

impl OpenAiStream {
    fn event(&mut self, event: SseEvent, at: Instant) -> LlmResult<bool> {
        let data = match event {
            SseEvent::Error(e) => {
                let text = serde_json::from_str(&e).map(|v| error_text(&v)).unwrap_or(e);
                return Err(LlmError::ServerError(text));
            }
            SseEvent::Data(data) => data,
        };
        self.events += 1;
        if data.trim() == "[DONE]" {
            self.draft.done = true;
            return Ok(true);
        }
        let chunk: Chunk = serde_json::from_str(&data).map_err(|e| {
            LlmError::Protocol(format!(
                "event {} of the /v1/chat/completions stream ({} bytes) is not a chat.completion.chunk: {}",
                self.events,
                data.len(),
                describe_json_error(&e)
            ))
        })?;
        if let Some(error) = &chunk.error {
            return Err(LlmError::ServerError(error_text(error)));
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(content) = delta.content {
                    self.draft.push(&content, at);
                }
                self.draft.thinking_chars += delta.reasoning_content.map_or(0, |r| r.len());
            }
            if choice.finish_reason.is_some() {
                self.draft.finish_reason = choice.finish_reason;
            }
        }
        if let Some(usage) = chunk.usage {
            self.draft.prompt_tokens = usage.prompt_tokens;
            self.draft.completion_tokens = usage.completion_tokens;
        }
        Ok(false)
    }
}

impl Decoder for OpenAiStream {
    fn line(&mut self, line: &str, at: Instant) -> LlmResult<bool> {
        match self.sse.line(line) {
            Some(event) => self.event(event, at),
            None => Ok(false),
        }
    }

    fn end(mut self) -> LlmResult<Draft> {
        if let Some(event) = self.sse.finish() {
            self.event(event, Instant::now())?;
        }
        // Some OpenAI-compatible servers end the stream without `[DONE]`; a finish reason is
        // as good an end.
        if self.draft.finish_reason.is_some() {
            self.draft.done = true;
        }
        Ok(self.draft)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_body_asks_for_usage_and_no_prompt_cache() {
        let config = LlmConfig { num_predict: 16, num_ctx: Some(4096), ..LlmConfig::default() };
        let body =
            serde_json::to_value(ChatRequest::new(&config, "gemma3-270m", vec![MessageRef::user("hi")])).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gemma3-270m",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.0,
                "seed": 42,
                "max_tokens": 16,
                "cache_prompt": false
            })
        );
    }

    #[test]
    fn warm_body_is_one_unstreamed_token() {
        let body = serde_json::to_value(ChatRequest::warm(&LlmConfig::default(), "m")).unwrap();
        assert_eq!(body["max_tokens"], 1);
        assert_eq!(body["stream"], false);
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn router_listings_say_which_models_are_loaded_and_single_model_ones_do_not() {
        let router: Models = serde_json::from_value(json!({"data": [
            {"id": "a", "status": {"value": "loaded", "args": []}},
            {"id": "b", "status": {"value": "unloaded"}}
        ]}))
        .unwrap();
        assert_eq!(router.statuses(), Some(vec![("a".to_owned(), true), ("b".to_owned(), false)]));
        let single: Models = serde_json::from_value(json!({"data": [{"id": "a", "aliases": ["a"]}]})).unwrap();
        assert_eq!(single.statuses(), None);
    }

    #[test]
    fn model_ids_match_exactly() {
        let available = vec!["gemma3-270m".to_owned()];
        assert!(serves(&available, "gemma3-270m"));
        assert!(!serves(&available, "gemma3-270m:latest"));
        assert!(!serves(&available, "gemma3"));
    }

    fn feed(lines: &[&str]) -> LlmResult<Draft> {
        let mut s = OpenAiStream::default();
        for line in lines {
            if s.line(line, Instant::now())? {
                break;
            }
        }
        s.end()
    }

    #[test]
    fn deltas_finish_reason_and_usage_are_collected() {
        let d = feed(&[
            r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
            "",
            r#"data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
            "",
            r#"data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            "",
            r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            "",
            r#"data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            "",
            "data: [DONE]",
            "",
        ])
        .unwrap();
        assert_eq!(d.text, "Hello");
        assert_eq!(d.finish_reason.as_deref(), Some("length"));
        assert_eq!((d.prompt_tokens, d.completion_tokens), (Some(9), Some(2)));
        assert!(d.done);
    }

    #[test]
    fn a_stream_without_done_marker_ends_at_its_finish_reason() {
        let d = feed(&[r#"data: {"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}"#]).unwrap();
        assert!(d.done);
        assert_eq!(d.text, "x");
    }

    #[test]
    fn error_events_are_server_errors() {
        let err = feed(&[r#"data: {"error":{"code":500,"message":"context overflow","type":"server_error"}}"#, ""]);
        assert!(matches!(err, Err(LlmError::ServerError(m)) if m == "context overflow"));
        let err = feed(&[r#"error: {"code":500,"message":"slot failed"}"#]);
        assert!(matches!(err, Err(LlmError::ServerError(m)) if m == "slot failed"));
    }

    #[test]
    fn a_malformed_event_is_a_protocol_error() {
        let err = feed(&["data: {\"choices\":[{", ""]).unwrap_err();
        assert!(matches!(err, LlmError::Protocol(ref m) if m.contains("event 1 of the /v1/chat/completions")), "{err}");
    }
}
