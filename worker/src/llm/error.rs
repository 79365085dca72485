//! What can go wrong talking to the LLM server, each with what to do about it.

use std::time::Duration;

use lcw_schema::profile::redact_urls;

/// Result of an LLM call.
pub type LlmResult<T> = Result<T, LlmError>;

/// Errors of the LLM backends. None of them carries prompt or response text. Texts that came from
/// the server or the transport are shown with their URLs redacted (an LLM gateway's key may be in
/// its URL, and error pages quote it), by `Display` and by the hand-written `Debug` alike.
#[derive(thiserror::Error)]
pub enum LlmError {
    /// The configuration is unusable (a bad URL, an unknown API name).
    #[error("invalid LLM configuration: {}", redact_urls(.0))]
    Config(String),
    /// Nothing answered at the URL (connection refused, DNS failure, connection dropped).
    #[error(
        "cannot reach the LLM server at {url}: {}; start it (`ollama serve`, or llama-server) or fix the LLM URL",
        redact_urls(.reason)
    )]
    Unreachable {
        /// The server's base URL (redacted).
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The server answered with a non-success HTTP status.
    #[error("the LLM server answered HTTP {status}: {}; {}", redact_urls(.body), status_hint(.status))]
    Status {
        /// HTTP status code.
        status: u16,
        /// The start of the response body (about 300 characters).
        body: String,
    },
    /// The whole request (connect, generation, last byte) took longer than the timeout.
    #[error(
        "the LLM server did not finish within {0:?}; raise the LLM timeout, lower num_predict, or check that the \
         server is not overloaded"
    )]
    Timeout(Duration),
    /// The model produced no content (upstream's `ErrEmptyGeneration`; not worth a retry).
    #[error(
        "model {model} returned no content; check the model with a direct request to the server (a reasoning \
         model may spend all of num_predict on thinking)"
    )]
    EmptyGeneration {
        /// The model asked.
        model: String,
    },
    /// Models the worker serves are not available on the server.
    #[error(
        "the LLM server lacks model(s) {}; it has: {}. Pull it (`ollama pull {first}`, then `ollama cp` if the \
         on-chain name differs) or start llama-server with --alias {first}",
        .missing.join(", "),
        if .available.is_empty() { "none".to_owned() } else { .available.join(", ") },
        first = .missing.first().map(String::as_str).unwrap_or("<model>")
    )]
    MissingModels {
        /// Wanted but not served.
        missing: Vec<String>,
        /// What the server lists.
        available: Vec<String>,
    },
    /// The response is not in the expected wire format (an undecodable stream line, a stream
    /// that ended early).
    #[error(
        "unexpected answer from the LLM server: {}; check that the LLM API setting (ollama/openai) matches it",
        redact_urls(.0)
    )]
    Protocol(String),
    /// The server reported an error inside a stream that had started.
    #[error("the LLM server failed mid-generation: {}; see the server's log", redact_urls(.0))]
    ServerError(String),
}

impl std::fmt::Debug for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let variant = match self {
            LlmError::Config(_) => "Config",
            LlmError::Unreachable { .. } => "Unreachable",
            LlmError::Status { .. } => "Status",
            LlmError::Timeout(_) => "Timeout",
            LlmError::EmptyGeneration { .. } => "EmptyGeneration",
            LlmError::MissingModels { .. } => "MissingModels",
            LlmError::Protocol(_) => "Protocol",
            LlmError::ServerError(_) => "ServerError",
        };
        f.debug_tuple(variant).field(&self.to_string()).finish()
    }
}

impl LlmError {
    /// The server is unavailable now (down, overloaded, cut off mid-answer), which passes; the
    /// others say it is misconfigured or the request is wrong.
    pub fn is_outage(&self) -> bool {
        match self {
            LlmError::Unreachable { .. } | LlmError::Timeout(_) | LlmError::ServerError(_) | LlmError::Protocol(_) => {
                true
            }
            LlmError::Status { status, .. } => *status == 429 || *status >= 500,
            LlmError::Config(_) | LlmError::MissingModels { .. } | LlmError::EmptyGeneration { .. } => false,
        }
    }
}

/// What to do about an HTTP status.
fn status_hint(status: &u16) -> &'static str {
    match *status {
        400 | 422 => "the server rejected the request; check the model name and the generation options",
        401 | 403 => "the server wants credentials; put them in the LLM URL or use a local server",
        404 => {
            "check the LLM URL and the API setting (Ollama serves /api/*, OpenAI-compatible servers /v1/*) and that \
             the model exists"
        }
        429 | 503 => "the server is busy or still loading the model; retry shortly",
        _ if *status >= 500 => "see the server's log",
        _ => "check the LLM URL and the API setting",
    }
}

/// The first `max` characters of `body`, marked when cut, its URLs redacted first (a URL cut in
/// the middle would keep part of a key).
pub(crate) fn excerpt(body: &str, max: usize) -> String {
    let body = redact_urls(body.trim());
    let body = body.as_str();
    match body.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_a_char_boundary() {
        assert_eq!(excerpt("  short ", 300), "short");
        assert_eq!(excerpt("ééééé", 3), "ééé…");
        let cut = excerpt("denied: http://127.0.0.1:1/v2/SECRETKEY123SECRET", 30);
        assert_eq!(cut, "denied: http://127.0.0.1:1/…", "redacted before it is cut");
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = LlmError::MissingModels { missing: vec!["llama3-8b".into()], available: vec![] };
        assert_eq!(
            e.to_string(),
            "the LLM server lacks model(s) llama3-8b; it has: none. Pull it (`ollama pull llama3-8b`, then `ollama \
             cp` if the on-chain name differs) or start llama-server with --alias llama3-8b"
        );
        let e = LlmError::Status { status: 404, body: "{\"error\":\"model 'x' not found\"}".into() };
        assert!(e.to_string().contains("HTTP 404: {\"error\":\"model 'x' not found\"}; check the LLM URL"));
    }
}
