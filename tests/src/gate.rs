//! A reverse proxy for HTTP servers such as the LLM server, whose delay can be changed while a
//! test runs: it holds every request for the current delay before forwarding it, and streams the
//! answer back as it comes. Listens on 127.0.0.1 only; stops when dropped. It can also be
//! stopped and started again on the same port ([`SlowGate::stop`], [`SlowGate::restart`]): while
//! stopped, connections are refused, as when the server is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

struct Inner {
    upstream: String,
    delay_ms: AtomicU64,
    forwarded: AtomicU64,
    http: reqwest::Client,
}

/// A running gate in front of `upstream`.
pub struct SlowGate {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    addr: std::net::SocketAddr,
}

impl std::fmt::Debug for SlowGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowGate").field("url", &self.url).field("upstream", &self.inner.upstream).finish()
    }
}

impl Drop for SlowGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let delay = inner.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Ok(body) = axum::body::to_bytes(req.into_body(), 16 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut out = inner.http.request(method, format!("{}{path}", inner.upstream)).body(body);
    if let Some(ct) = content_type {
        out = out.header("content-type", ct);
    }
    let Ok(resp) = out.send().await else { return StatusCode::BAD_GATEWAY.into_response() };
    inner.forwarded.fetch_add(1, Ordering::Relaxed);
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("text/plain").to_owned();
    let stream = resp.bytes_stream().map_ok(Bytes::from).map_err(std::io::Error::other);
    (status, [("content-type", ct)], Body::from_stream(stream)).into_response()
}

fn serve(listener: tokio::net::TcpListener, inner: Arc<Inner>) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().fallback(forward).with_state(inner);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

impl SlowGate {
    /// Starts a gate in front of `upstream` (a base URL), with no delay.
    pub async fn start(upstream: &str) -> SlowGate {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            delay_ms: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            http: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let addr = listener.local_addr().expect("addr");
        let task = serve(listener, inner.clone());
        SlowGate { url: format!("http://{addr}"), inner, task, addr }
    }

    /// Stops listening: new connections are refused until [`SlowGate::restart`] (requests
    /// already forwarded finish).
    pub fn stop(&mut self) {
        self.task.abort();
    }

    /// Listens again on the same port (after [`SlowGate::stop`]); retries the bind for a few
    /// seconds while the old socket is released.
    pub async fn restart(&mut self) {
        self.task.abort();
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "gate port not free yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind the gate again on {}: {e}", self.addr),
            }
        };
        self.task = serve(listener, self.inner.clone());
    }

    /// Requests forwarded so far (answered by the upstream).
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// Holds every later request for `delay` before forwarding it.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}
