//! What can go wrong talking to the worker gateway, each with what to do about it. None of the
//! messages carries the token or the signing key; URLs are redacted
//! ([`lcw_schema::profile::redact_url`]) before they are stored here.

use std::fmt;
use std::time::Duration;

use lcw_schema::profile::redact_urls;

/// Result of a gateway call.
pub type GatewayResult<T> = Result<T, GatewayError>;

/// The error `reqwest::Url::parse` returns (the `url` crate's, without depending on it).
pub type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

/// The gateway call that failed (also the kind under which repeated failures are logged once
/// a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GatewayCall {
    /// `GET /api/auth/challenge`.
    Challenge,
    /// `POST /api/auth/verify`.
    Verify,
    /// `POST /api/heartbeat`.
    Heartbeat,
    /// `POST /api/worker/drain`.
    Drain,
    /// `POST /api/worker/undrain`.
    Undrain,
    /// `POST /api/jobs/{jobId}/response`, the terminal frame's HTTP fallback.
    Response,
    /// The WebSocket `/api/stream/responses`.
    Stream,
}

impl GatewayCall {
    /// The path the call goes to (`{jobId}` left as is).
    pub fn path(self) -> &'static str {
        match self {
            GatewayCall::Challenge => "/api/auth/challenge",
            GatewayCall::Verify => "/api/auth/verify",
            GatewayCall::Heartbeat => "/api/heartbeat",
            GatewayCall::Drain => "/api/worker/drain",
            GatewayCall::Undrain => "/api/worker/undrain",
            GatewayCall::Response => "/api/jobs/{jobId}/response",
            GatewayCall::Stream => "/api/stream/responses",
        }
    }
}

impl fmt::Display for GatewayCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            GatewayCall::Challenge => "sign-in challenge",
            GatewayCall::Verify => "sign-in",
            GatewayCall::Heartbeat => "heartbeat",
            GatewayCall::Drain => "drain",
            GatewayCall::Undrain => "undrain",
            GatewayCall::Response => "response fallback",
            GatewayCall::Stream => "response stream",
        };
        write!(f, "{name} ({})", self.path())
    }
}

/// Errors of the worker-gateway link. The worker's on-chain path never depends on them: callers
/// log them and go on.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The gateway URL does not parse.
    #[error(
        "the worker gateway URL `{url}` does not parse ({source}); give its base URL, e.g. \
         https://worker-gateway.testnet.lightchain.ai"
    )]
    UrlParse {
        /// The URL as given (redacted).
        url: String,
        /// The parser's error.
        source: UrlParseError,
    },
    /// The URL parses but is not a base URL the API paths can be appended to.
    #[error(
        "the worker gateway URL `{url}` {problem}; give its base URL, e.g. https://worker-gateway.testnet.lightchain.ai"
    )]
    UrlNotBase {
        /// The URL as given (redacted).
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A duration setting is zero.
    #[error("the worker gateway {setting} must be above zero")]
    ZeroDuration {
        /// The setting (`timeout`, `heartbeat interval`).
        setting: &'static str,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the worker gateway's HTTP client: {}", chain(.source))]
    Client {
        /// reqwest's error.
        source: reqwest::Error,
    },
    /// Nothing answered, or the connection broke mid-request.
    #[error(
        "cannot reach the worker gateway at {url} for the {call}: {}; check the gateway URL and the network (the \
         worker keeps serving jobs on chain meanwhile)",
        chain(.source)
    )]
    Request {
        /// The call.
        call: GatewayCall,
        /// The gateway's base URL (redacted).
        url: String,
        /// The transport error, without its URL.
        source: reqwest::Error,
    },
    /// The gateway answered with a status the protocol does not expect.
    #[error("the worker gateway at {url} answered the {call} with HTTP {status}: {body}; {}", status_hint(*.call, *.status))]
    Status {
        /// The call.
        call: GatewayCall,
        /// The gateway's base URL (redacted).
        url: String,
        /// HTTP status code.
        status: u16,
        /// The start of the answer's body (redacted).
        body: String,
    },
    /// The gateway's answer is not the JSON the protocol describes.
    #[error(
        "the worker gateway at {url} answered the {call} with a body that does not decode ({source}); check that the \
         URL points at a LightChain worker gateway"
    )]
    Decode {
        /// The call.
        call: GatewayCall,
        /// The gateway's base URL (redacted).
        url: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The gateway accepted the sign-in but its token is unusable (empty, or not a header value).
    #[error(
        "the worker gateway at {url} signed the worker in but its token is {problem}; check that the URL points at \
         a LightChain worker gateway"
    )]
    BadToken {
        /// The gateway's base URL (redacted).
        url: String,
        /// What is wrong with the token (never the token).
        problem: &'static str,
    },
    /// A request body could not be encoded.
    #[error("cannot encode the {call} request: {source}")]
    Encode {
        /// The call.
        call: GatewayCall,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The signing key could not sign (the sign-in challenge or a response).
    #[error("cannot sign the {what} with the worker's signing key: {source}")]
    Sign {
        /// What was being signed.
        what: &'static str,
        /// The signer's error.
        source: alloy::signers::Error,
    },
    /// The call, sign-in and one retry included, took longer than the configured timeout.
    #[error(
        "the worker gateway at {url} did not finish the {call} within {after:?}; check that it is up (the worker \
         keeps serving jobs on chain meanwhile)"
    )]
    Timeout {
        /// The call.
        call: GatewayCall,
        /// The gateway's base URL (redacted).
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The response stream's WebSocket could not be opened or broke.
    #[error(
        "the response stream to the worker gateway at {url} failed: {}; lcw reconnects (the worker keeps \
         serving jobs on chain meanwhile)",
        chain(.source)
    )]
    WebSocket {
        /// The gateway's base URL (redacted).
        url: String,
        /// The WebSocket error.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}

/// What to do about an unexpected status.
fn status_hint(call: GatewayCall, status: u16) -> &'static str {
    match (call, status) {
        (GatewayCall::Verify, 401 | 403) => {
            "the gateway refused the signature; check that the signing key is the registered worker's key"
        }
        (_, 401 | 403) => {
            "the gateway refused a fresh token; check that the signing key is the registered worker's key"
        }
        (_, 404) => "check the gateway URL (its base, without /api)",
        (_, 429) => "the gateway is rate-limiting this worker; lcw retries at the next heartbeat",
        (_, s) if s >= 500 => "the gateway is failing or down; lcw retries (the worker keeps serving jobs on chain)",
        _ => "check the gateway URL and that the gateway speaks worker protocol version 1",
    }
}

/// An error with its causes, `: `-separated, with any URL in them redacted.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    redact_urls(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_say_what_to_do() {
        let e = GatewayError::Status {
            call: GatewayCall::Verify,
            url: "https://gw.example".into(),
            status: 401,
            body: "bad signature".into(),
        };
        assert_eq!(
            e.to_string(),
            "the worker gateway at https://gw.example answered the sign-in (/api/auth/verify) with HTTP 401: bad \
             signature; the gateway refused the signature; check that the signing key is the registered worker's key"
        );
    }

    #[test]
    fn websocket_errors_have_their_urls_redacted() {
        let source = tokio_tungstenite::tungstenite::Error::Url(
            tokio_tungstenite::tungstenite::error::UrlError::UnableToConnect(
                "wss://gw.example/v2/0123456789abcdef0123456789".into(),
            ),
        );
        let e = GatewayError::WebSocket { url: "https://gw.example".into(), source: Box::new(source) };
        let text = e.to_string();
        assert!(
            text.contains("Unable to connect to wss://gw.example/…") && !text.contains("0123456789abcdef"),
            "{text}"
        );
    }
}
