//! The I/O shell: URLs, requests, status and transport errors, and reading a streamed body
//! through [`Lines`] into a [`Decoder`].

use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::excerpt;
use super::lines::{LineError, Lines};
use super::stream::{Decoder, describe_json_error};
use super::{Api, Generation, Llm, LlmError, LlmResult, MAX_LINE, PROBE_TIMEOUT};

/// Characters of an error body kept in [`LlmError::Status`].
const BODY_EXCERPT: usize = 300;

/// The base URL requests are built on: http(s), no query, no trailing `/`, and for OpenAI no
/// `/v1` (the paths add it).
pub(super) fn base_url(url: &str, api: Api) -> LlmResult<String> {
    let not_http = || {
        LlmError::Config(format!(
            "`{}` is not an http(s) URL; give the LLM server's base URL, e.g. http://127.0.0.1:11434 (Ollama) or \
             http://127.0.0.1:8080 (llama-server)",
            redact(url)
        ))
    };
    let mut parsed = reqwest::Url::parse(url.trim()).map_err(|_| not_http())?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(not_http());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(LlmError::Config(format!(
            "`{}` has a query or fragment; give the LLM server's base URL, e.g. http://127.0.0.1:11434",
            redact(url)
        )));
    }
    let mut path = parsed.path().trim_end_matches('/');
    if api == Api::OpenAi {
        path = path.strip_suffix("/v1").unwrap_or(path);
    }
    let path = path.to_owned();
    parsed.set_path(&path);
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// `url` as it may be shown: user info, and the path and query of a remote server, hidden
/// (`lcw_schema::profile::redact_url`); an LLM server behind a gateway takes keys in either.
pub(super) fn redact(url: &str) -> String {
    lcw_schema::profile::redact_url(url.trim())
}

/// The cause chain of a transport error, without the URL (which may carry credentials).
fn reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = s.source();
    }
    reason
}

impl Llm {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn probe_timeout(&self) -> std::time::Duration {
        self.config.timeout.min(PROBE_TIMEOUT)
    }

    fn transport(&self, e: reqwest::Error, timeout: std::time::Duration) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(timeout)
        } else {
            LlmError::Unreachable { url: self.label.clone(), reason: reason(e) }
        }
    }

    /// Sends `request` with `timeout`; a non-success status becomes [`LlmError::Status`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        timeout: std::time::Duration,
    ) -> LlmResult<reqwest::Response> {
        let response = request.timeout(timeout).send().await.map_err(|e| self.transport(e, timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(LlmError::Status { status: status.as_u16(), body: excerpt(&body, BODY_EXCERPT) })
    }

    /// GET `path` and decode its JSON body.
    pub(super) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> LlmResult<T> {
        let timeout = self.probe_timeout();
        let response = self.send(self.http.get(self.url(path)), timeout).await?;
        let body = response.bytes().await.map_err(|e| self.transport(e, timeout))?;
        serde_json::from_slice(&body).map_err(|e| {
            LlmError::Protocol(format!(
                "GET {path} answered {} bytes that do not decode: {}",
                body.len(),
                describe_json_error(&e)
            ))
        })
    }

    /// GET `path` and expect a success status.
    pub(super) async fn get_ok(&self, path: &str) -> LlmResult<()> {
        let timeout = self.probe_timeout();
        let response = self.send(self.http.get(self.url(path)), timeout).await?;
        response.bytes().await.map_err(|e| self.transport(e, timeout))?;
        Ok(())
    }

    /// POST `body` to `path`, expect success, read the answer to its end; an `error` field in it
    /// is a [`LlmError::ServerError`].
    pub(super) async fn post_and_read(&self, path: &str, body: &impl Serialize) -> LlmResult<()> {
        let timeout = self.config.timeout;
        let response = self.send(self.http.post(self.url(path)).json(body), timeout).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e, timeout))?;
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && let Some(error) = o.get("error")
        {
            return Err(LlmError::ServerError(super::stream::error_text(error)));
        }
        Ok(())
    }

    /// POST `body` to `path` and decode the streamed answer with `decoder`, line by line as the
    /// chunks arrive.
    pub(super) async fn stream(
        &self,
        path: &str,
        body: &impl Serialize,
        model: &str,
        mut decoder: impl Decoder,
    ) -> LlmResult<Generation> {
        let timeout = self.config.timeout;
        let started = Instant::now();
        let response = self.send(self.http.post(self.url(path)).json(body), timeout).await?;
        let mut chunks = response.bytes_stream();
        let mut lines = Lines::new(MAX_LINE);
        let line_error = |e: LineError| match e {
            LineError::TooLong { max } => {
                LlmError::Protocol(format!("a line of the {path} stream exceeds {max} bytes"))
            }
            LineError::NotUtf8 { line } => LlmError::Protocol(format!("line {line} of the {path} stream is not UTF-8")),
        };
        let mut complete = false;
        'read: while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.transport(e, timeout))?;
            let at = Instant::now();
            for line in lines.push(&chunk).map_err(line_error)? {
                if decoder.line(&line, at)? {
                    complete = true;
                    break 'read;
                }
            }
        }
        if !complete && let Some(line) = lines.finish().map_err(line_error)? {
            decoder.line(&line, Instant::now())?;
        }
        decoder.end()?.finish(model, started, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        let ok = |url: &str, api| base_url(url, api).unwrap();
        assert_eq!(ok("http://127.0.0.1:11434", Api::Ollama), "http://127.0.0.1:11434");
        assert_eq!(ok("http://127.0.0.1:11434/", Api::Ollama), "http://127.0.0.1:11434");
        assert_eq!(ok("http://127.0.0.1:8080/v1/", Api::OpenAi), "http://127.0.0.1:8080");
        assert_eq!(ok("http://127.0.0.1:8080/v1", Api::OpenAi), "http://127.0.0.1:8080");
        assert_eq!(ok("https://gpu.example/llm/v1", Api::OpenAi), "https://gpu.example/llm");
        assert_eq!(ok(" http://localhost:8080 ", Api::OpenAi), "http://localhost:8080");
    }

    #[test]
    fn non_http_urls_are_refused_with_an_example() {
        for url in ["127.0.0.1:11434", "ftp://host", "localhost", ""] {
            let err = base_url(url, Api::Ollama).unwrap_err().to_string();
            assert!(err.contains(&format!("`{url}`")) && err.contains("http://127.0.0.1:11434"), "{err}");
        }
        let err = base_url("http://h/?key=SECRETKEY123", Api::Ollama).unwrap_err().to_string();
        assert!(err.contains("`http://h/…` has a query") && !err.contains("SECRETKEY123"), "{err}");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("http://user:pw@host:8080/v1"), "http://***@host:8080/…");
        assert_eq!(redact("http://host:8080"), "http://host:8080");
        assert_eq!(redact("https://llm.example/v1/SECRETKEY123"), "https://llm.example/…");
        assert_eq!(redact("http://127.0.0.1:8080/v1"), "http://127.0.0.1:8080/v1");
        let config = super::super::LlmConfig { url: "http://u:secret@h".into(), ..Default::default() };
        assert!(!format!("{config:?}").contains("secret"));
    }
}
