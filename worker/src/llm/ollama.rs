//! Ollama's native API: request bodies and the NDJSON stream of `/api/generate` and `/api/chat`
//! (upstream.md §6). Pure: the HTTP shell in `http.rs` feeds lines in.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::stream::{Decoder, Draft, describe_json_error, error_text};
use super::{LlmConfig, LlmError, LlmResult, Message};

/// Generation options; `temperature` and `seed` are always sent (upstream: "so disputer
/// re-execution reproduces output").
#[derive(Debug, Serialize)]
pub(crate) struct Options {
    temperature: f64,
    seed: u64,
    num_predict: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_ctx: Option<u32>,
}

impl Options {
    fn new(config: &LlmConfig) -> Self {
        Options {
            temperature: config.temperature,
            seed: config.seed,
            num_predict: config.num_predict,
            num_ctx: config.num_ctx.filter(|&n| n > 0),
        }
    }
}

/// `POST /api/generate`. `keep_alive` is a JSON number: Ollama rejects the string "-1" ("missing
/// unit in duration").
#[derive(Debug, Serialize)]
pub(crate) struct GenerateRequest<'a> {
    model: &'a str,
    prompt: &'a str,
    stream: bool,
    keep_alive: i64,
    options: Options,
}

impl<'a> GenerateRequest<'a> {
    pub(crate) fn new(config: &LlmConfig, model: &'a str, prompt: &'a str) -> Self {
        GenerateRequest { model, prompt, stream: true, keep_alive: config.keep_alive, options: Options::new(config) }
    }
}

/// `POST /api/chat`.
#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    keep_alive: i64,
    options: Options,
}

impl<'a> ChatRequest<'a> {
    pub(crate) fn new(config: &LlmConfig, model: &'a str, messages: &'a [Message]) -> Self {
        ChatRequest { model, messages, stream: true, keep_alive: config.keep_alive, options: Options::new(config) }
    }
}

/// `POST /api/generate` without a prompt: Ollama loads the model and pins it for `keep_alive`.
#[derive(Debug, Serialize)]
pub(crate) struct WarmRequest<'a> {
    model: &'a str,
    stream: bool,
    keep_alive: i64,
}

impl<'a> WarmRequest<'a> {
    pub(crate) fn new(config: &LlmConfig, model: &'a str) -> Self {
        WarmRequest { model, stream: false, keep_alive: config.keep_alive }
    }

    /// `keep_alive: 0`: Ollama unloads the model at once.
    pub(crate) fn unload(model: &'a str) -> Self {
        WarmRequest { model, stream: false, keep_alive: 0 }
    }
}

/// `GET /api/tags`.
#[derive(Debug, Deserialize)]
pub(crate) struct Tags {
    #[serde(default)]
    models: Vec<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    name: String,
}

impl Tags {
    pub(crate) fn names(self) -> Vec<String> {
        self.models.into_iter().map(|m| m.name).collect()
    }
}

/// Whether the server's `available` names serve `wanted`: Ollama lists every model with its
/// tag, and a bare name means `:latest`.
pub(crate) fn serves(available: &[String], wanted: &str) -> bool {
    available.iter().any(|a| a == wanted || a.strip_suffix(":latest") == Some(wanted))
}

/// One line of either stream: `response` (generate) or `message.content` (chat), then a final
/// `done: true` line with the counts and durations (nanoseconds).
#[derive(Debug, Deserialize)]
struct Line {
    response: Option<String>,
    message: Option<LineMessage>,
    thinking: Option<String>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    load_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct LineMessage {
    content: Option<String>,
    thinking: Option<String>,
}

/// Decodes `/api/generate` or `/api/chat` NDJSON into a [`Draft`].
#[derive(Debug)]
pub(crate) struct OllamaStream {
    endpoint: &'static str,
    draft: Draft,
    lines: usize,
}

impl OllamaStream {
    pub(crate) fn new(endpoint: &'static str) -> Self {
        OllamaStream { endpoint, draft: Draft::default(), lines: 0 }
    }
}

impl Decoder for OllamaStream {
    fn line(&mut self, line: &str, at: Instant) -> LlmResult<bool> {
        if line.trim().is_empty() {
            return Ok(false);
        }
        self.lines += 1;
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            LlmError::Protocol(format!(
                "line {} of the {} stream ({} bytes) is not an Ollama stream object: {}",
                self.lines,
                self.endpoint,
                line.len(),
                describe_json_error(&e)
            ))
        })?;
        if let Some(error) = &parsed.error {
            return Err(LlmError::ServerError(error_text(error)));
        }
        let (content, thinking) = match parsed.message {
            Some(m) => (m.content, m.thinking),
            None => (parsed.response, parsed.thinking),
        };
        if let Some(content) = content {
            self.draft.push(&content, at);
        }
        self.draft.thinking_chars += thinking.map_or(0, |t| t.len());
        if parsed.done {
            let d = &mut self.draft;
            d.done = true;
            d.finish_reason = parsed.done_reason;
            d.prompt_tokens = parsed.prompt_eval_count;
            d.completion_tokens = parsed.eval_count;
            d.load = parsed.load_duration.map(Duration::from_nanos);
        }
        Ok(parsed.done)
    }

    fn end(self) -> LlmResult<Draft> {
        Ok(self.draft)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> LlmConfig {
        LlmConfig { num_predict: 64, ..LlmConfig::default() }
    }

    #[test]
    fn generate_body_pins_the_model_with_a_numeric_keep_alive_and_fixed_sampling() {
        let body = serde_json::to_value(GenerateRequest::new(&config(), "llama3-8b", "hi")).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3-8b",
                "prompt": "hi",
                "stream": true,
                "keep_alive": -1,
                "options": {"temperature": 0.0, "seed": 42, "num_predict": 64}
            })
        );
        assert!(body["keep_alive"].is_i64(), "keep_alive must be a JSON number, not \"-1\"");
    }

    #[test]
    fn chat_body_carries_messages_and_num_ctx_when_set() {
        let config = LlmConfig { num_ctx: Some(8192), temperature: 0.7, seed: 7, ..config() };
        let messages = [
            Message { role: "system".into(), content: "be brief".into() },
            Message { role: "user".into(), content: "hi".into() },
        ];
        let body = serde_json::to_value(ChatRequest::new(&config, "m", &messages)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "stream": true,
                "keep_alive": -1,
                "options": {"temperature": 0.7, "seed": 7, "num_predict": 64, "num_ctx": 8192}
            })
        );
    }

    #[test]
    fn num_ctx_zero_is_omitted_like_upstream() {
        let config = LlmConfig { num_ctx: Some(0), ..config() };
        let body = serde_json::to_value(GenerateRequest::new(&config, "m", "p")).unwrap();
        assert!(body["options"].get("num_ctx").is_none());
    }

    #[test]
    fn warm_body_has_no_prompt() {
        let body = serde_json::to_value(WarmRequest::new(&config(), "m")).unwrap();
        assert_eq!(body, json!({"model": "m", "stream": false, "keep_alive": -1}));
    }

    #[test]
    fn unload_body_asks_for_keep_alive_zero() {
        let body = serde_json::to_value(WarmRequest::unload("m")).unwrap();
        assert_eq!(body, json!({"model": "m", "stream": false, "keep_alive": 0}));
    }

    #[test]
    fn a_bare_name_is_served_by_its_latest_tag() {
        let available = vec!["llama3:latest".to_owned(), "llama3-8b:q4".to_owned()];
        assert!(serves(&available, "llama3"));
        assert!(serves(&available, "llama3:latest"));
        assert!(serves(&available, "llama3-8b:q4"));
        assert!(!serves(&available, "llama3-8b"));
        assert!(!serves(&available, "llama"));
    }

    #[test]
    fn chat_lines_accumulate_and_the_done_line_carries_the_counts() {
        let mut s = OllamaStream::new("/api/chat");
        let t = Instant::now();
        assert!(!s.line(r#"{"message":{"role":"assistant","content":""},"done":false}"#, t).unwrap());
        assert!(!s.line(r#"{"message":{"role":"assistant","content":"He"},"done":false}"#, t).unwrap());
        assert!(!s.line("", t).unwrap());
        let done = r#"{"message":{"role":"assistant","content":"y"},"done":true,"done_reason":"length",
            "total_duration":5,"load_duration":2000000,"prompt_eval_count":3,"eval_count":2}"#;
        assert!(s.line(&done.replace('\n', ""), t).unwrap());
        let d = s.end().unwrap();
        assert_eq!(d.text, "Hey");
        assert_eq!((d.prompt_tokens, d.completion_tokens), (Some(3), Some(2)));
        assert_eq!(d.load, Some(Duration::from_millis(2)));
        assert_eq!(d.finish_reason.as_deref(), Some("length"));
        assert_eq!(d.first_content, Some(t));
        assert!(d.done);
    }

    #[test]
    fn an_error_line_is_a_server_error() {
        let mut s = OllamaStream::new("/api/generate");
        let err = s.line(r#"{"error":"an error was encountered while running the model"}"#, Instant::now());
        assert!(
            matches!(err, Err(LlmError::ServerError(m)) if m == "an error was encountered while running the model")
        );
    }

    #[test]
    fn a_malformed_line_is_a_protocol_error_without_its_content() {
        let mut s = OllamaStream::new("/api/generate");
        s.line(r#"{"response":"a","done":false}"#, Instant::now()).unwrap();
        let err = s.line(r#"{"response":"secret words"#, Instant::now()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LlmError::Protocol(_)));
        assert!(msg.contains("line 2 of the /api/generate stream"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
}
