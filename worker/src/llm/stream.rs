//! What both stream decoders build: a [`Draft`] of the generation, turned into a
//! [`Generation`] (or an error) when the stream ends. Pure.

use std::time::{Duration, Instant};

use super::{Generation, LlmError, LlmResult};

/// A wire format's stream decoder, fed one line at a time.
pub(crate) trait Decoder {
    /// Feeds one line received at `at`; true when the stream is complete (later bytes are not
    /// read).
    fn line(&mut self, line: &str, at: Instant) -> LlmResult<bool>;
    /// The stream ended (after a `true` from [`Decoder::line`] or when the body ran out).
    fn end(self) -> LlmResult<Draft>;
}

/// A generation being received.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub(crate) text: String,
    /// Bytes of reasoning output, which is not part of the result.
    pub(crate) thinking_chars: usize,
    pub(crate) prompt_tokens: Option<u64>,
    pub(crate) completion_tokens: Option<u64>,
    pub(crate) load: Option<Duration>,
    pub(crate) finish_reason: Option<String>,
    /// When the first non-empty content arrived.
    pub(crate) first_content: Option<Instant>,
    /// The stream's terminal message arrived.
    pub(crate) done: bool,
}

impl Draft {
    /// Appends content received at `at`.
    pub(crate) fn push(&mut self, content: &str, at: Instant) {
        if !content.is_empty() {
            self.first_content.get_or_insert(at);
            self.text.push_str(content);
        }
    }

    /// The finished generation of `model`, timed from `started` to `ended`.
    pub(crate) fn finish(self, model: &str, started: Instant, ended: Instant) -> LlmResult<Generation> {
        if !self.done {
            return Err(LlmError::Protocol(format!(
                "the stream ended after {} bytes of content without its final message; the server may have \
                 crashed or a proxy cut the connection",
                self.text.len()
            )));
        }
        if self.text.is_empty() {
            return Err(LlmError::EmptyGeneration { model: model.to_owned() });
        }
        Ok(Generation {
            text: self.text,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            first_token: self.first_content.map(|t| t.saturating_duration_since(started)),
            total: ended.saturating_duration_since(started),
            load: self.load,
            finish_reason: self.finish_reason,
        })
    }
}

/// A serde error described without the input it choked on (which may be the consumer's text).
pub(crate) fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax => format!("invalid JSON at column {}", e.column()),
        Category::Eof => "truncated JSON".to_owned(),
        Category::Data => format!("unexpected JSON shape at column {}", e.column()),
        Category::Io => "read error".to_owned(),
    }
}

/// The message of an `error` field: Ollama sends a string, OpenAI-compatible servers an object
/// with `message`.
pub(crate) fn error_text(error: &serde_json::Value) -> String {
    match error {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(o) => match o.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_owned(),
            None => error.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_done_stream_without_content_is_an_empty_generation() {
        let draft = Draft { done: true, ..Draft::default() };
        let t = Instant::now();
        assert!(matches!(draft.finish("m", t, t), Err(LlmError::EmptyGeneration { model }) if model == "m"));
    }

    #[test]
    fn a_stream_cut_before_its_end_is_a_protocol_error() {
        let mut draft = Draft::default();
        draft.push("partial", Instant::now());
        let t = Instant::now();
        assert!(matches!(draft.finish("m", t, t), Err(LlmError::Protocol(_))));
    }

    #[test]
    fn first_token_is_measured_from_the_request() {
        let started = Instant::now();
        let mut draft = Draft::default();
        draft.push("", started + Duration::from_millis(5));
        draft.push("a", started + Duration::from_millis(10));
        draft.push("b", started + Duration::from_millis(20));
        draft.done = true;
        let g = draft.finish("m", started, started + Duration::from_millis(30)).unwrap();
        assert_eq!(g.first_token, Some(Duration::from_millis(10)));
        assert_eq!(g.total, Duration::from_millis(30));
        assert_eq!(g.text, "ab");
    }

    #[test]
    fn error_text_reads_both_shapes() {
        assert_eq!(error_text(&json!("boom")), "boom");
        assert_eq!(error_text(&json!({"code": 500, "message": "boom", "type": "server_error"})), "boom");
        assert_eq!(error_text(&json!({"code": 500})), "{\"code\":500}");
    }
}
