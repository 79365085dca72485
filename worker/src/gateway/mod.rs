//! The worker-gateway link, as the official worker's "sortition + gateway egress" profile speaks
//! it: sign-in by EIP-191 challenge, heartbeats, drain and undrain over HTTPS, and the response
//! stream over a WebSocket, with an HTTP fallback for the terminal frame.
//!
//! - [`Gateway`] is the client (cheap to clone). Calls are bounded by [`GatewayConfig::timeout`]
//!   (sign-in and one retry after a 401 included) and return typed [`GatewayError`]s; none of
//!   them is needed by the on-chain path, which goes on whatever the gateway does.
//! - Frames ([`Gateway::publish_chunk`], [`Gateway::publish_error`]) go into a bounded queue
//!   (256, never blocking; overflow is dropped and counted) that [`run`]'s connection loop pumps
//!   into the socket. [`Gateway::publish_complete`] signs the full response ciphertext and queues
//!   it behind the chunks while the socket is up, or posts it to `/api/jobs/{jobId}/response`
//!   when it is not.
//! - [`run`] is the background task: the stream's dial-pump-redial loop (backoff 1 s doubling to
//!   30 s) and the heartbeat ticker, until shutdown. Failures are logged at warn once a minute
//!   per kind, with a count of those held back.
//!
//! The token and the signing key never reach logs, errors or `Debug` output; the gateway URL is
//! redacted ([`lcw_schema::profile::redact_url`]) wherever it is shown.
//!
//! `frames` is the pure wire format (with the unit tests), `client` the HTTP calls, `stream` the
//! queue and the socket, `throttle` the log rate limit.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use lcw_schema::profile::redact_url;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::warn;

mod client;
mod error;
mod frames;
mod stream;
mod throttle;

pub use error::{GatewayCall, GatewayError, GatewayResult, UrlParseError};
pub use frames::FrameKind;
pub use stream::Delivery;

use frames::Frame;
use throttle::Throttle;

/// Frames waiting for the socket; beyond this they are dropped (the official worker's buffer).
pub const QUEUE_CAPACITY: usize = 256;

/// Where the gateway is and how patient to be with it.
#[derive(Clone)]
pub struct GatewayConfig {
    /// Base URL, e.g. `https://worker-gateway.testnet.lightchain.ai` (a trailing `/` is ignored).
    pub url: String,
    /// Longest any one call may take, sign-in and a retry after a 401 included; also bounds
    /// each WebSocket write.
    pub timeout: Duration,
    /// Time between heartbeats (the official worker's HEARTBEAT_INTERVAL).
    pub heartbeat_interval: Duration,
}

impl GatewayConfig {
    /// The default timeout of a call.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default heartbeat interval.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

    /// A configuration for the gateway at `url` with the defaults (10 s timeout, 10 s heartbeat).
    pub fn new(url: impl Into<String>) -> GatewayConfig {
        GatewayConfig {
            url: url.into(),
            timeout: Self::DEFAULT_TIMEOUT,
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
        }
    }

    /// Checks the configuration and returns the normalised base URL: http(s) with a host, no
    /// query or fragment; durations above zero.
    pub fn validate(&self) -> GatewayResult<String> {
        if self.timeout.is_zero() {
            return Err(GatewayError::ZeroDuration { setting: "timeout" });
        }
        if self.heartbeat_interval.is_zero() {
            return Err(GatewayError::ZeroDuration { setting: "heartbeat interval" });
        }
        frames::base_url(&self.url)
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .finish()
    }
}

/// What a heartbeat reports; the client adds `protocolVersion` 1.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Jobs in progress.
    pub active_jobs: u32,
    /// Most jobs served at once.
    pub max_jobs: u32,
    /// On-chain ids of the models served (sent as 0x-prefixed lowercase hex).
    pub models: Vec<B256>,
    /// Capability names (e.g. `search`); sent as `[]` when none.
    pub capabilities: Vec<String>,
    /// Whether the LLM server answers (`ollamaStatus` `ready`, else `unreachable`).
    pub llm_ready: bool,
    /// Seconds since the worker started.
    pub uptime_secs: u64,
}

/// The link's state, for `lcw status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GatewayStatus {
    /// The client holds a token that has not expired.
    pub signed_in: bool,
    /// The response stream's socket is open.
    pub stream_connected: bool,
    /// When the gateway last accepted a heartbeat (unix seconds).
    pub last_heartbeat_ok: Option<u64>,
    /// The last failure (redacted), if any.
    pub last_error: Option<String>,
    /// Frames written to the socket or accepted by the HTTP fallback.
    pub frames_sent: u64,
    /// Frames lost: queue full, a failed socket write, a failed fallback.
    pub frames_dropped: u64,
    /// Terminal frames that went by the HTTP fallback (counted in `frames_sent` too).
    pub responses_posted: u64,
    /// Heartbeats the gateway accepted.
    pub heartbeats_sent: u64,
    /// Heartbeats that failed.
    pub heartbeats_failed: u64,
}

/// The worker-gateway client. Cloning shares the connection state, token and frame queue.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    /// The base URL requests are built on.
    base: String,
    /// The base URL as shown in logs and errors (redacted).
    label: String,
    config: GatewayConfig,
    signer: PrivateKeySigner,
    http: reqwest::Client,
    token: Mutex<Option<client::Token>>,
    /// Held while signing in, so concurrent callers wait for one sign-in instead of each
    /// running their own; each sign-in is bounded by the call's timeout.
    sign_in: tokio::sync::Mutex<()>,
    queue: mpsc::Sender<Frame>,
    /// The queue's receiving end, locked by the [`run`] pumping it.
    pending: tokio::sync::Mutex<mpsc::Receiver<Frame>>,
    connected: AtomicBool,
    counters: Counters,
    last_error: Mutex<Option<String>>,
    throttle: Mutex<Throttle>,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_dropped: AtomicU64,
    responses_posted: AtomicU64,
    heartbeats_sent: AtomicU64,
    heartbeats_failed: AtomicU64,
    /// Unix seconds; 0 for never.
    last_heartbeat_ok: AtomicU64,
}

/// A lock that survives a panic elsewhere (the data are counters and a token, always valid).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Gateway {
    /// A client for the gateway in `config`, signing in with `signer` (the worker's registered
    /// key). Nothing is sent until the first call.
    pub fn new(config: GatewayConfig, signer: PrivateKeySigner) -> GatewayResult<Gateway> {
        let base = config.validate()?;
        lcw_schema::ensure_tls();
        // No per-request timeout: each call, sign-in and retry included, is bounded as a whole
        // by `config.timeout`, and reports which call ran out of time.
        let http = reqwest::Client::builder().build().map_err(|e| GatewayError::Client { source: e.without_url() })?;
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        Ok(Gateway {
            inner: Arc::new(Inner {
                label: redact_url(&base),
                base,
                config,
                signer,
                http,
                token: Mutex::new(None),
                sign_in: tokio::sync::Mutex::new(()),
                queue,
                pending: tokio::sync::Mutex::new(pending),
                connected: AtomicBool::new(false),
                counters: Counters::default(),
                last_error: Mutex::new(None),
                throttle: Mutex::new(Throttle::default()),
            }),
        })
    }

    /// The address the gateway knows this worker by (the signing key's).
    pub fn address(&self) -> Address {
        self.inner.signer.address()
    }

    /// The gateway's base URL, redacted for display.
    pub fn url(&self) -> &str {
        &self.inner.label
    }

    /// The link's state now.
    pub fn status(&self) -> GatewayStatus {
        let c = &self.inner.counters;
        let last_ok = c.last_heartbeat_ok.load(Ordering::Relaxed);
        GatewayStatus {
            signed_in: lock(&self.inner.token).as_ref().is_some_and(|t| t.expires_at > SystemTime::now()),
            stream_connected: self.inner.connected.load(Ordering::Relaxed),
            last_heartbeat_ok: (last_ok > 0).then_some(last_ok),
            last_error: lock(&self.inner.last_error).clone(),
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            frames_dropped: c.frames_dropped.load(Ordering::Relaxed),
            responses_posted: c.responses_posted.load(Ordering::Relaxed),
            heartbeats_sent: c.heartbeats_sent.load(Ordering::Relaxed),
            heartbeats_failed: c.heartbeats_failed.load(Ordering::Relaxed),
        }
    }

    /// Remembers `error` as the last failure (its text is already redacted).
    fn record(&self, error: &GatewayError) {
        *lock(&self.inner.last_error) = Some(error.to_string());
    }

    /// Whether a failure of `kind` is logged now; `Some(failures held back since the last)`.
    fn throttled(&self, kind: &'static str) -> Option<u64> {
        lock(&self.inner.throttle).admit(kind, Instant::now())
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status();
        f.debug_struct("Gateway")
            .field("url", &self.inner.label)
            .field("worker", &self.address())
            .field("timeout", &self.inner.config.timeout)
            .field("heartbeat_interval", &self.inner.config.heartbeat_interval)
            .field("signed_in", &status.signed_in)
            .field("stream_connected", &status.stream_connected)
            .finish_non_exhaustive()
    }
}

/// The background task: the response stream's connection loop and the heartbeat ticker (one
/// heartbeat at once, then every [`GatewayConfig::heartbeat_interval`]), until `shutdown` turns
/// true or its sender is dropped.
///
/// `heartbeat` is called for each heartbeat to read the worker's state at that moment (active
/// jobs, LLM health, uptime): a closure over the worker's shared counters, or over a
/// `watch::Receiver<Heartbeat>` (`move || rx.borrow().clone()`). Failures are logged and
/// retried at the next tick; nothing here ever stops the worker. Frames already queued when
/// shutdown comes are written before the socket closes (within the timeout). Run one `run` per
/// gateway at a time: a second one only sends heartbeats.
pub async fn run<F>(gateway: Gateway, heartbeat: F, shutdown: watch::Receiver<bool>)
where
    F: Fn() -> Heartbeat + Send,
{
    let heartbeats = heartbeat_loop(&gateway, heartbeat, shutdown.clone());
    // The guard is released however this ends (shutdown, or the task aborted).
    match gateway.inner.pending.try_lock() {
        Ok(mut queue) => {
            tokio::join!(stream::connection_loop(&gateway, &mut queue, shutdown), heartbeats);
        }
        Err(_) => {
            warn!(gateway = %gateway.url(), "another task already runs this gateway's response stream; only sending heartbeats");
            heartbeats.await;
        }
    }
}

/// Resolves when a stop is asked for (`true`, or the sender dropped).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn heartbeat_loop<F: Fn() -> Heartbeat>(gateway: &Gateway, heartbeat: F, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(gateway.inner.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop_requested(&mut shutdown) => return,
        }
        let hb = heartbeat();
        let result = tokio::select! {
            result = gateway.heartbeat(&hb) => result,
            () = stop_requested(&mut shutdown) => return,
        };
        if let Err(e) = result
            && let Some(repeats) = gateway.throttled("heartbeat")
        {
            warn!(gateway = %gateway.url(), repeats, error = %e, "worker gateway heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn a_gateway_refuses_unusable_configs_with_the_reason() {
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        let err = |config: GatewayConfig| Gateway::new(config, signer.clone()).unwrap_err().to_string();
        assert!(err(GatewayConfig::new("gateway.example")).contains("`gateway.example` does not parse"));
        assert!(err(GatewayConfig::new("ws://gw.example")).contains("is not an http:// or https:// URL"));
        let zero = GatewayConfig { timeout: Duration::ZERO, ..GatewayConfig::new("https://gw.example") };
        assert_eq!(err(zero), "the worker gateway timeout must be above zero");
        let zero = GatewayConfig { heartbeat_interval: Duration::ZERO, ..GatewayConfig::new("https://gw.example") };
        assert_eq!(err(zero), "the worker gateway heartbeat interval must be above zero");
    }

    #[test]
    fn debug_output_hides_credentials_in_the_url() {
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        let config = GatewayConfig::new("https://user:s3cret@gw.example/key/0123456789abcdefghijklmnop/");
        assert!(!format!("{config:?}").contains("s3cret"));
        let gateway = Gateway::new(config, signer).unwrap();
        let debug = format!("{gateway:?}");
        assert!(debug.contains("https://***@gw.example/…") && !debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("0123456789abcdefghijklmnop") && !debug.contains(&KEY[2..]), "{debug}");
        assert_eq!(gateway.status(), GatewayStatus::default());
    }
}
