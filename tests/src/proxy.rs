//! A fault-injecting JSON-RPC proxy for tests: forwards to a real node, but with configured
//! probabilities it hangs past the client's timeout (a dropped connection), cuts the answer short
//! (a garbled body), answers HTTP 429 or 5xx, answers slowly, and refuses `eth_getLogs` ranges
//! wider than `max_log_blocks` the way providers do. Listens on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::{Rng, SeedableRng};

/// Fault probabilities (0.0–1.0) and limits.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Hang longer than `hang` (the client times out).
    pub hang: f64,
    /// How long a hang lasts.
    pub hang_for: Duration,
    /// Return a truncated JSON body.
    pub garble: f64,
    /// Answer HTTP 429.
    pub rate_limit: f64,
    /// Answer HTTP 500 or 503.
    pub server_error: f64,
    /// Answer after `slow_for`.
    pub slow: f64,
    /// Delay of a slow answer.
    pub slow_for: Duration,
    /// Refuse eth_getLogs ranges wider than this many blocks.
    pub max_log_blocks: u64,
    /// RNG seed.
    pub seed: u64,
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Faults injected (of any kind).
    pub faults: AtomicU64,
    /// Ranges refused.
    pub refused_ranges: AtomicU64,
}

struct Inner {
    upstream: String,
    faults: Faults,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
    counts: Arc<FaultCounts>,
    http: reqwest::Client,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FlakyProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Fault counters.
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn range_of(body: &serde_json::Value) -> Option<u64> {
    let filter = body.get("params")?.get(0)?;
    let n = |k: &str| -> Option<u64> {
        let v = filter.get(k)?.as_str()?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    };
    Some(n("toBlock")?.saturating_sub(n("fromBlock")?) + 1)
}

async fn handle(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.counts.requests.fetch_add(1, Ordering::Relaxed);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (roll, kind) = {
        let mut rng = inner.rng.lock().expect("rng");
        (rng.r#gen::<f64>(), rng.r#gen::<u8>())
    };
    let f = &inner.faults;
    let mut edge = 0.0;
    let mut hit = |p: f64| {
        edge += p;
        roll < edge
    };
    if hit(f.hang) {
        inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(f.hang_for).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    if hit(f.rate_limit) {
        inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::TOO_MANY_REQUESTS, "rate limited").into_response();
    }
    if hit(f.server_error) {
        inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        let status = if kind % 2 == 0 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::SERVICE_UNAVAILABLE };
        return (status, "upstream error").into_response();
    }
    let slow = hit(f.slow);
    let garble = hit(f.garble);
    if json.get("method").and_then(|m| m.as_str()) == Some("eth_getLogs")
        && range_of(&json).is_some_and(|r| r > f.max_log_blocks)
    {
        inner.counts.refused_ranges.fetch_add(1, Ordering::Relaxed);
        let id = json.get("id").cloned().unwrap_or_default();
        let err = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32005,
            "message": format!("query returned more than 10000 results; limited to a {} block range", f.max_log_blocks)}});
        return ([("content-type", "application/json")], err.to_string()).into_response();
    }
    if slow {
        inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(f.slow_for).await;
    }
    let upstream = inner.http.post(&inner.upstream).header("content-type", "application/json").body(body).send().await;
    let Ok(resp) = upstream else { return StatusCode::BAD_GATEWAY.into_response() };
    let status = resp.status();
    let Ok(bytes) = resp.bytes().await else { return StatusCode::BAD_GATEWAY.into_response() };
    if garble && bytes.len() > 8 {
        inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        let cut = bytes.slice(0..bytes.len() / 2);
        return ([("content-type", "application/json")], cut).into_response();
    }
    (StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK), [("content-type", "application/json")], bytes)
        .into_response()
}

impl FlakyProxy {
    /// Starts a proxy in front of `upstream`.
    pub async fn start(upstream: &str, faults: Faults) -> FlakyProxy {
        let counts = Arc::new(FaultCounts::default());
        let inner = Arc::new(Inner {
            upstream: upstream.to_owned(),
            rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(faults.seed)),
            faults,
            counts: counts.clone(),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new().route("/", axum::routing::post(handle)).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FlakyProxy { url: format!("http://{addr}"), counts, task }
    }
}
