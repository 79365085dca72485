//! The HTTP calls: sign-in (EIP-191 challenge), heartbeat, drain, undrain and the terminal
//! frame's fallback, each bounded by the timeout, with the token renewed before it runs out and
//! once more after a 401.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use lcw_schema::profile::redact_urls;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use tracing::{debug, warn};

use super::frames::{self, Challenge, Frame, HeartbeatBody, Verified, Verify};
use super::{Gateway, GatewayCall, GatewayError, GatewayResult, Heartbeat, bump, lock};

/// The gateway's bearer token. No `Debug`: nothing may print it.
pub(super) struct Token {
    /// `Bearer <token>`, checked to be a valid header value.
    header: HeaderValue,
    pub(super) expires_at: SystemTime,
}

impl Token {
    /// The `Authorization` header value.
    pub(super) fn header(&self) -> HeaderValue {
        self.header.clone()
    }
}

/// When to sign in again.
#[derive(Clone, Copy)]
enum Renew<'a> {
    /// Only when there is no token or it has less than five minutes left.
    IfStale,
    /// Unless another caller has already replaced this token (the gateway refused it).
    Replacing(&'a HeaderValue),
    /// Always (an explicit sign-in).
    Always,
}

impl Gateway {
    /// Signs in now (challenge, EIP-191 signature, verify) and keeps the token; `lcw preflight`
    /// uses it to prove the gateway knows the worker's key.
    pub async fn sign_in(&self) -> GatewayResult<()> {
        let result = self.bounded(GatewayCall::Verify, self.renew(Renew::Always)).await.map(drop);
        self.settle(result)
    }

    /// Sends one heartbeat (`204` expected).
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> GatewayResult<()> {
        let call = GatewayCall::Heartbeat;
        let body = HeartbeatBody::new(heartbeat);
        let result = self.bounded(call, async { self.post(call, call.path(), self.encode(call, &body)?).await }).await;
        let c = &self.inner.counters;
        match &result {
            Ok(()) => {
                bump(&c.heartbeats_sent);
                c.last_heartbeat_ok.store(frames::unix(SystemTime::now()), Ordering::Relaxed);
            }
            Err(_) => bump(&c.heartbeats_failed),
        }
        self.settle(result)
    }

    /// Asks the gateway to stop sending this worker new sessions (idempotent).
    pub async fn drain(&self) -> GatewayResult<()> {
        let call = GatewayCall::Drain;
        // No body, as the official worker sends none.
        let result = self.bounded(call, self.post(call, call.path(), Vec::new())).await;
        self.settle(result)
    }

    /// Makes this worker eligible for new sessions again (idempotent).
    pub async fn undrain(&self) -> GatewayResult<()> {
        let call = GatewayCall::Undrain;
        let result = self.bounded(call, self.post(call, call.path(), Vec::new())).await;
        self.settle(result)
    }

    /// Posts a terminal frame to `/api/jobs/{jobId}/response`.
    pub(super) async fn post_response(&self, frame: &Frame) -> GatewayResult<()> {
        let path = format!("/api/jobs/{}/response", frame.job_id);
        let call = GatewayCall::Response;
        self.bounded(call, async { self.post(call, &path, self.encode(call, &frame.response_body())?).await }).await
    }

    /// Records a failure as the last error and passes the result on.
    fn settle<T>(&self, result: GatewayResult<T>) -> GatewayResult<T> {
        if let Err(e) = &result {
            self.record(e);
        }
        result
    }

    /// `call` within the configured timeout, sign-in and retry included.
    pub(super) async fn bounded<T>(
        &self,
        call: GatewayCall,
        work: impl Future<Output = GatewayResult<T>>,
    ) -> GatewayResult<T> {
        let after = self.inner.config.timeout;
        tokio::time::timeout(after, work)
            .await
            .unwrap_or_else(|_| Err(GatewayError::Timeout { call, url: self.inner.label.clone(), after }))
    }

    /// A token with more than five minutes left, signing in when there is none.
    pub(super) async fn token(&self) -> GatewayResult<HeaderValue> {
        if let Some(header) = self.fresh_token() {
            return Ok(header);
        }
        self.renew(Renew::IfStale).await
    }

    /// Forgets `rejected` if it is still the current token (the gateway refused it).
    pub(super) fn forget_token(&self, rejected: &HeaderValue) {
        let mut token = lock(&self.inner.token);
        if token.as_ref().is_some_and(|t| t.header == *rejected) {
            *token = None;
        }
    }

    fn fresh_token(&self) -> Option<HeaderValue> {
        let token = lock(&self.inner.token);
        token.as_ref().filter(|t| !frames::needs_renewal(t.expires_at, SystemTime::now())).map(Token::header)
    }

    /// Signs in (one caller at a time) unless `when` says the current token will do.
    async fn renew(&self, when: Renew<'_>) -> GatewayResult<HeaderValue> {
        let _one_at_a_time = self.inner.sign_in.lock().await;
        // Another caller may have signed in while this one waited.
        match (when, self.fresh_token()) {
            (Renew::IfStale, Some(header)) => return Ok(header),
            (Renew::Replacing(rejected), Some(header)) if header != *rejected => return Ok(header),
            _ => {}
        }
        let challenge: Challenge = {
            let call = GatewayCall::Challenge;
            let response = self.send(call, self.inner.http.get(self.endpoint(call.path()))).await?;
            let response = self.expect(call, response, StatusCode::OK, None).await?;
            self.decode(call, response).await?
        };
        let signature = frames::personal_sign(&self.inner.signer, challenge.message.as_bytes(), "sign-in challenge")?;
        let call = GatewayCall::Verify;
        let body = Verify { message: &challenge.message, signature: &signature };
        let request = self.inner.http.post(self.endpoint(call.path())).header(CONTENT_TYPE, "application/json");
        let response = self.send(call, request.body(self.encode(call, &body)?)).await?;
        let response = self.expect(call, response, StatusCode::OK, None).await?;
        let verified: Verified = self.decode(call, response).await?;
        let now = SystemTime::now();
        let bad_token = |problem| GatewayError::BadToken { url: self.inner.label.clone(), problem };
        if verified.token.is_empty() {
            return Err(bad_token("empty"));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", verified.token))
            .map_err(|_| bad_token("not a valid HTTP header value"))?;
        header.set_sensitive(true);
        let expires_at = frames::token_expiry(&verified.expires_at, now);
        if frames::parse_rfc3339(&verified.expires_at).is_none()
            && let Some(repeats) = self.throttled("token expiry")
        {
            warn!(gateway = %self.inner.label, expires_at = %frames::excerpt(&verified.expires_at, 40), repeats, "the worker gateway's token expiry is not RFC 3339; assuming 30 minutes");
        }
        *lock(&self.inner.token) = Some(Token { header: header.clone(), expires_at });
        debug!(gateway = %self.inner.label, expires_in_s = expires_at.duration_since(now).map_or(0, |d| d.as_secs()), "signed in to the worker gateway");
        Ok(header)
    }

    /// An authenticated POST of `body` (JSON, or nothing) to `path`, expecting `204`; after a
    /// 401 the token is renewed once and the request retried once.
    async fn post(&self, call: GatewayCall, path: &str, body: Vec<u8>) -> GatewayResult<()> {
        let url = self.endpoint(path);
        let request = |token: &HeaderValue| {
            self.inner
                .http
                .post(&url)
                .header(CONTENT_TYPE, "application/json")
                .header(reqwest::header::AUTHORIZATION, token.clone())
                .body(body.clone())
        };
        let mut token = self.token().await?;
        let mut response = self.send(call, request(&token)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            debug!(gateway = %self.inner.label, %call, "the gateway refused the token; signing in again");
            token = self.renew(Renew::Replacing(&token)).await?;
            response = self.send(call, request(&token)).await?;
        }
        self.expect(call, response, StatusCode::NO_CONTENT, Some(&token)).await.map(drop)
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    fn encode(&self, call: GatewayCall, body: &impl Serialize) -> GatewayResult<Vec<u8>> {
        serde_json::to_vec(body).map_err(|source| GatewayError::Encode { call, source })
    }

    async fn send(&self, call: GatewayCall, request: reqwest::RequestBuilder) -> GatewayResult<reqwest::Response> {
        request.send().await.map_err(|e| self.transport(call, e))
    }

    fn transport(&self, call: GatewayCall, e: reqwest::Error) -> GatewayError {
        GatewayError::Request { call, url: self.inner.label.clone(), source: e.without_url() }
    }

    /// `response` if its status is `expected`, else a [`GatewayError::Status`] with the start of
    /// its body (URLs and the token blanked out).
    async fn expect(
        &self,
        call: GatewayCall,
        response: reqwest::Response,
        expected: StatusCode,
        token: Option<&HeaderValue>,
    ) -> GatewayResult<reqwest::Response> {
        let status = response.status();
        if status == expected {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED
            && let Some(token) = token
        {
            self.forget_token(token);
        }
        let mut body = response.text().await.unwrap_or_default();
        if let Some(secret) = token.and_then(|t| t.to_str().ok()).and_then(|t| t.strip_prefix("Bearer "))
            && !secret.is_empty()
        {
            body = body.replace(secret, "***");
        }
        Err(GatewayError::Status {
            call,
            url: self.inner.label.clone(),
            status: status.as_u16(),
            body: frames::excerpt(&redact_urls(&body), frames::BODY_EXCERPT),
        })
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        call: GatewayCall,
        response: reqwest::Response,
    ) -> GatewayResult<T> {
        let bytes = response.bytes().await.map_err(|e| self.transport(call, e))?;
        serde_json::from_slice(&bytes).map_err(|source| GatewayError::Decode {
            call,
            url: self.inner.label.clone(),
            source,
        })
    }
}
