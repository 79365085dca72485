//! A fault-injecting JSON-RPC proxy for tests: forwards to a real node, but with configured
//! probabilities it hangs past the client's timeout (a dropped connection), cuts the answer short
//! (a garbled body), answers HTTP 429 or 5xx, answers slowly, and refuses `eth_getLogs` ranges
//! wider than `max_log_blocks` the way providers do. Listens on 127.0.0.1 only.
//!
//! Transactions (`eth_sendRawTransaction`, alone or in a JSON-RPC batch) can be faulted too
//! ([`TxFaults`]): refused with a node's error without reaching the node (`txpool is full`),
//! evicted (forwarded, then removed from anvil's pool with `anvil_dropTransaction` a moment
//! later, as a mempool under pressure does), or held back for a while when they come from given
//! senders (a slow competitor). Both fault sets can be changed while the proxy runs.
//!
//! On request ([`FlakyProxy::record_accepted`]) it keeps every transaction the node accepted
//! through it, with the node's head when the request came in: what the sender could know when it
//! sent it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{Address, B256};
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
    /// Transactions refused without reaching the node.
    pub refused_txs: AtomicU64,
    /// Transactions removed from the node's pool after they were accepted.
    pub evicted_txs: AtomicU64,
    /// Transactions held back before being forwarded.
    pub held_txs: AtomicU64,
}

/// Faults of `eth_sendRawTransaction` requests (probabilities 0.0–1.0).
#[derive(Debug, Clone)]
pub struct TxFaults {
    /// Answer with a node's refusal ([`TxFaults::refuse_message`]) and forward nothing.
    pub refuse: f64,
    /// The refusal's message.
    pub refuse_message: String,
    /// Forward, then `anvil_dropTransaction` the hash after `evict_after`.
    pub evict: f64,
    /// How long an evicted transaction stays in the pool.
    pub evict_after: Duration,
    /// Transactions signed by these senders are answered with their hash at once and forwarded
    /// only after `hold_for`.
    pub hold_from: Vec<Address>,
    /// How long a held transaction waits.
    pub hold_for: Duration,
}

impl Default for TxFaults {
    fn default() -> Self {
        TxFaults {
            refuse: 0.0,
            refuse_message: "txpool is full".into(),
            evict: 0.0,
            evict_after: Duration::from_millis(200),
            hold_from: Vec::new(),
            hold_for: Duration::ZERO,
        }
    }
}

/// An `eth_sendRawTransaction` the node accepted: answered with the hash, or "already known"
/// (the node had it from an earlier send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The transaction's hash.
    pub hash: B256,
    /// The node's head block when the request reached the proxy (None when it could not be read).
    pub head: Option<u64>,
}

impl TxFaults {
    fn active(&self) -> bool {
        self.refuse > 0.0 || self.evict > 0.0 || !self.hold_from.is_empty()
    }
}

struct Inner {
    upstream: String,
    faults: RwLock<Faults>,
    tx_faults: RwLock<TxFaults>,
    rng: std::sync::Mutex<rand::rngs::StdRng>,
    counts: Arc<FaultCounts>,
    http: reqwest::Client,
    record: AtomicBool,
    accepted: Mutex<Vec<Accepted>>,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct FlakyProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Fault counters.
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("upstream", &self.upstream).finish_non_exhaustive()
    }
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
    // The head is read before any delay: it is what the sender knew when it sent.
    let sent_at = if inner.record.load(Ordering::Relaxed) && carries_send(&json) {
        Some(SentAt { head: upstream_head(&inner).await })
    } else {
        None
    };
    let f = inner.faults.read().expect("faults").clone();
    let f = &f;
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
    let tx_faults = inner.tx_faults.read().expect("tx faults").clone();
    if tx_faults.active()
        && let Some(answer) = transactions(&inner, &tx_faults, &json, sent_at).await
    {
        return ([("content-type", "application/json")], answer.to_string()).into_response();
    }
    let upstream = inner.http.post(&inner.upstream).header("content-type", "application/json").body(body).send().await;
    let Ok(resp) = upstream else { return StatusCode::BAD_GATEWAY.into_response() };
    let status = resp.status();
    let Ok(bytes) = resp.bytes().await else { return StatusCode::BAD_GATEWAY.into_response() };
    if let Some(at) = sent_at {
        // The node's own answer, before any garbling: the node took it even if the sender never
        // learns so.
        let answers = serde_json::from_slice(&bytes).unwrap_or_default();
        for (call, answer) in pairs(&json, &answers) {
            note_accepted(&inner, call, answer, at);
        }
    }
    if garble && bytes.len() > 8 {
        inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        let cut = bytes.slice(0..bytes.len() / 2);
        return ([("content-type", "application/json")], cut).into_response();
    }
    (StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK), [("content-type", "application/json")], bytes)
        .into_response()
}

/// What the proxy does with one `eth_sendRawTransaction`.
enum TxFate {
    Refuse,
    Hold(B256),
    Forward { evict: bool },
}

/// The sender and hash of a raw transaction (network encoding, blob sidecars included).
fn sender_of(raw: &str) -> Option<(Address, B256)> {
    let bytes = alloy::primitives::hex::decode(raw.trim_start_matches("0x")).ok()?;
    let envelope = TxEnvelope::decode_2718(&mut bytes.as_slice()).ok()?;
    let from = envelope.signature().recover_address_from_prehash(&envelope.signature_hash()).ok()?;
    Some((from, *envelope.tx_hash()))
}

/// Applies [`TxFaults`] to a request (alone or a batch) that carries `eth_sendRawTransaction`s:
/// None when nothing is to be done to it (the caller forwards it as usual), else the answer,
/// with the refused and held ones answered here and the rest forwarded in one request.
async fn transactions(
    inner: &Arc<Inner>,
    faults: &TxFaults,
    json: &serde_json::Value,
    sent_at: Option<SentAt>,
) -> Option<serde_json::Value> {
    let batch = json.is_array();
    let calls: Vec<serde_json::Value> = match json {
        serde_json::Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let mut fates: Vec<Option<TxFate>> = Vec::with_capacity(calls.len());
    for call in &calls {
        if call.get("method").and_then(|m| m.as_str()) != Some("eth_sendRawTransaction") {
            fates.push(None);
            continue;
        }
        let raw = call.get("params").and_then(|p| p.get(0)).and_then(|r| r.as_str()).unwrap_or_default();
        let held = (!faults.hold_from.is_empty())
            .then(|| sender_of(raw))
            .flatten()
            .filter(|(from, _)| faults.hold_from.contains(from));
        let roll: f64 = inner.rng.lock().expect("rng").r#gen();
        fates.push(Some(match held {
            Some((_, hash)) => TxFate::Hold(hash),
            None if roll < faults.refuse => TxFate::Refuse,
            None => TxFate::Forward { evict: roll < faults.refuse + faults.evict },
        }));
    }
    if fates.iter().all(|f| matches!(f, None | Some(TxFate::Forward { evict: false }))) {
        return None;
    }
    let forwarded: Vec<serde_json::Value> = calls
        .iter()
        .zip(&fates)
        .filter(|(_, f)| matches!(f, None | Some(TxFate::Forward { .. })))
        .map(|(c, _)| c.clone())
        .collect();
    let mut answers: std::collections::HashMap<String, serde_json::Value> = std::collections::HashMap::new();
    if !forwarded.is_empty() {
        let resp = inner.http.post(&inner.upstream).json(&serde_json::Value::Array(forwarded)).send().await.ok()?;
        let body: serde_json::Value = resp.json().await.ok()?;
        for a in body.as_array().cloned().unwrap_or_default() {
            answers.insert(a.get("id").map(|i| i.to_string()).unwrap_or_default(), a);
        }
    }
    let mut out = Vec::with_capacity(calls.len());
    for (call, fate) in calls.iter().zip(fates) {
        let id = call.get("id").cloned().unwrap_or_default();
        let raw = call.get("params").and_then(|p| p.get(0)).cloned().unwrap_or_default();
        let answer = match fate {
            Some(TxFate::Refuse) => {
                inner.counts.refused_txs.fetch_add(1, Ordering::Relaxed);
                inner.counts.faults.fetch_add(1, Ordering::Relaxed);
                serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32003, "message": faults.refuse_message}})
            }
            Some(TxFate::Hold(hash)) => {
                inner.counts.held_txs.fetch_add(1, Ordering::Relaxed);
                let (inner, delay) = (inner.clone(), faults.hold_for);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]});
                    let _ = inner.http.post(&inner.upstream).json(&call).send().await;
                });
                serde_json::json!({"jsonrpc": "2.0", "id": id, "result": hash})
            }
            fate => {
                let answer = answers.remove(&id.to_string()).unwrap_or_else(
                    || serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": "no answer"}}),
                );
                if let (Some(TxFate::Forward { evict: true }), Some(hash)) =
                    (fate, answer.get("result").and_then(|h| h.as_str()))
                {
                    evict_later(inner.clone(), hash.to_owned(), faults.evict_after);
                }
                if let Some(at) = sent_at {
                    note_accepted(inner, call, &answer, at);
                }
                answer
            }
        };
        out.push(answer);
    }
    Some(if batch { serde_json::Value::Array(out) } else { out.pop().unwrap_or_default() })
}

/// When a request carrying `eth_sendRawTransaction`s reached the proxy.
#[derive(Debug, Clone, Copy)]
struct SentAt {
    head: Option<u64>,
}

fn is_send(call: &serde_json::Value) -> bool {
    call.get("method").and_then(|m| m.as_str()) == Some("eth_sendRawTransaction")
}

/// Whether a request (alone or a batch) carries an `eth_sendRawTransaction`.
fn carries_send(json: &serde_json::Value) -> bool {
    match json {
        serde_json::Value::Array(calls) => calls.iter().any(is_send),
        one => is_send(one),
    }
}

/// Each call of a request with its answer (a batch's answers matched by id).
fn pairs<'a>(
    json: &'a serde_json::Value,
    answers: &'a serde_json::Value,
) -> Vec<(&'a serde_json::Value, &'a serde_json::Value)> {
    match (json, answers) {
        (serde_json::Value::Array(calls), serde_json::Value::Array(answers)) => {
            calls.iter().filter_map(|c| Some((c, answers.iter().find(|a| a.get("id") == c.get("id"))?))).collect()
        }
        (serde_json::Value::Array(_), _) => Vec::new(),
        (one, answer) => vec![(one, answer)],
    }
}

/// The node's head, straight from it.
async fn upstream_head(inner: &Inner) -> Option<u64> {
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let resp = inner.http.post(&inner.upstream).json(&call).send().await.ok()?;
    let answer: serde_json::Value = resp.json().await.ok()?;
    u64::from_str_radix(answer.get("result")?.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// Keeps `call` if it is an `eth_sendRawTransaction` the node accepted (`answer` is the node's).
fn note_accepted(inner: &Inner, call: &serde_json::Value, answer: &serde_json::Value, at: SentAt) {
    if !is_send(call) {
        return;
    }
    let hash = match (answer.get("result").and_then(|h| h.as_str()), answer.get("error")) {
        (Some(hash), _) => hash.parse().ok(),
        (None, Some(error)) => {
            let message = error.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_lowercase();
            let known = message.contains("already known") || message.contains("already imported");
            let raw = call.get("params").and_then(|p| p.get(0)).and_then(|r| r.as_str()).unwrap_or_default();
            known.then(|| sender_of(raw)).flatten().map(|(_, hash)| hash)
        }
        (None, None) => None,
    };
    if let Some(hash) = hash {
        inner.accepted.lock().expect("accepted").push(Accepted { hash, head: at.head });
    }
}

/// Removes `hash` from the node's pool after `after`, unless it was mined by then.
fn evict_later(inner: Arc<Inner>, hash: String, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "anvil_dropTransaction", "params": [hash]});
        let Ok(resp) = inner.http.post(&inner.upstream).json(&call).send().await else { return };
        let dropped =
            resp.json::<serde_json::Value>().await.is_ok_and(|a| a.get("result").is_some_and(|r| !r.is_null()));
        if dropped {
            inner.counts.evicted_txs.fetch_add(1, Ordering::Relaxed);
            inner.counts.faults.fetch_add(1, Ordering::Relaxed);
        }
    });
}

impl FlakyProxy {
    /// Starts a proxy in front of `upstream`.
    pub async fn start(upstream: &str, faults: Faults) -> FlakyProxy {
        let counts = Arc::new(FaultCounts::default());
        let inner = Arc::new(Inner {
            upstream: upstream.to_owned(),
            rng: std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(faults.seed)),
            faults: RwLock::new(faults),
            tx_faults: RwLock::new(TxFaults::default()),
            counts: counts.clone(),
            http: reqwest::Client::new(),
            record: AtomicBool::new(false),
            accepted: Mutex::default(),
        });
        let app = axum::Router::new().route("/", axum::routing::post(handle)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FlakyProxy { url: format!("http://{addr}"), counts, task, inner }
    }

    /// Replaces the request faults; later requests see the new ones.
    pub fn set_faults(&self, faults: Faults) {
        *self.inner.faults.write().expect("faults") = faults;
    }

    /// Replaces the transaction faults; later requests see the new ones.
    pub fn set_tx_faults(&self, faults: TxFaults) {
        *self.inner.tx_faults.write().expect("tx faults") = faults;
    }

    /// From now on, keeps every transaction the node accepts through the proxy (each request
    /// carrying one costs one `eth_blockNumber` more).
    pub fn record_accepted(&self) {
        self.inner.record.store(true, Ordering::Relaxed);
    }

    /// The transactions the node accepted since [`FlakyProxy::record_accepted`], in order (one
    /// entry per accepted send: a transaction sent again appears again).
    pub fn accepted(&self) -> Vec<Accepted> {
        self.inner.accepted.lock().expect("accepted").clone()
    }
}

impl Default for Faults {
    /// No faults at all, and no range limit.
    fn default() -> Self {
        Faults {
            hang: 0.0,
            hang_for: Duration::from_secs(30),
            garble: 0.0,
            rate_limit: 0.0,
            server_error: 0.0,
            slow: 0.0,
            slow_for: Duration::from_secs(2),
            max_log_blocks: u64::MAX,
            seed: 0,
        }
    }
}
