//! JSON-RPC with failover: several endpoints in order of preference, retries with exponential
//! backoff and jitter on transport errors, HTTP 429 and 5xx, and a clear signal when a node
//! refuses an `eth_getLogs` range as too large (the caller splits it).
//!
//! An endpoint that fails three times in a row is rested for 30 s; the primary is preferred again
//! as soon as it is healthy. URLs in logs and errors are redacted (they often embed API keys).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U64, U256};
use alloy::rpc::client::RpcClient;
use alloy::rpc::json_rpc::{RpcRecv, RpcSend};
use alloy::rpc::types::Filter;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};
use lcw_schema::profile::{redact_url, redact_urls};
use serde::Deserialize;

/// A call keeps retrying for this long before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const REST_AFTER_FAILURES: u32 = 3;
const REST_FOR: Duration = Duration::from_secs(30);

/// Why an RPC call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The node refused the block range (too many blocks or results); split it.
    #[error("{method}: the RPC refused the block range: {message}")]
    RangeTooLarge {
        /// Method.
        method: &'static str,
        /// The node's message.
        message: String,
        /// The last block of a range the node suggested, if it did.
        suggested_to: Option<u64>,
        /// Size of the refused answer in bytes, when it was refused for the response cap.
        answer_bytes: Option<u64>,
    },
    /// Every endpoint kept failing with retryable errors.
    #[error(
        "{method} kept failing on every RPC endpoint ({attempts} attempts over a minute); last error from \
         {endpoint}: {message}. Check that the node is reachable, or add fallback URLs (rpc_fallback_urls in the profile)"
    )]
    Unavailable {
        /// Method.
        method: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The endpoint of the last error (redacted).
        endpoint: String,
        /// The last error.
        message: String,
    },
    /// The node answered with an error that retrying will not fix.
    #[error("{method} rejected by {endpoint}: {message}")]
    Rejected {
        /// Method.
        method: &'static str,
        /// Endpoint (redacted).
        endpoint: String,
        /// The node's message.
        message: String,
    },
    /// A bad URL in the configuration.
    #[error("invalid RPC URL `{0}`: expected http:// or https://")]
    BadUrl(String),
}

/// Result alias.
pub type RpcResult<T> = Result<T, RpcError>;

enum Class {
    /// Refused range: message, suggested last block, size of an answer over the cap.
    Range(String, Option<u64>, Option<u64>),
    Retry(String),
    Fatal(String),
}

/// A node's or transport's message, shortened, with any URL in it redacted (reqwest quotes the
/// request URL, API key included).
fn truncate(s: &str) -> String {
    let s = redact_urls(s.trim());
    let s = s.as_str();
    if s.len() > 300 { format!("{}…", &s[..s.floor_char_boundary(300)]) } else { s.to_owned() }
}

/// Range-refusal phrasings of common nodes and providers (geth, erigon, Alchemy, Infura,
/// QuickNode, Ankr, ...), lowercase.
const RANGE_PHRASES: &[&str] = &[
    "block range",
    "range too large",
    "range is too large",
    "range too wide",
    "too many results",
    "too many logs",
    "more than",
    "response size",
    "response is too big",
    "log response size exceeded",
    "query returned more than",
    "exceed maximum block range",
    "exceeds the range",
    "try with this block range",
    "this block range should work",
    "limited to a",
    "query timeout exceeded",
];

fn suggested_end(message: &str) -> Option<u64> {
    // "... [0x1a, 0x2b]" : the second number is the last block that would work.
    let open = message.rfind('[')?;
    let close = message[open..].find(']')? + open;
    let inner = &message[open + 1..close];
    let last = inner.split(',').nth(1)?.trim();
    if let Some(hex) = last.strip_prefix("0x") { u64::from_str_radix(hex, 16).ok() } else { last.parse().ok() }
}

fn classify(e: &AlloyRpcError<TransportErrorKind>) -> Class {
    match e {
        AlloyRpcError::ErrorResp(p) => {
            let msg = p.message.to_lowercase();
            if RANGE_PHRASES.iter().any(|k| msg.contains(k)) {
                Class::Range(truncate(&p.message), suggested_end(&p.message), None)
            } else if p.code == 429
                || msg.contains("rate limit")
                || msg.contains("too many requests")
                || msg.contains("capacity")
                || msg.contains("throttl")
                || msg.contains("header not found")
                || msg.contains("unknown block")
                || msg.contains("timeout")
                || msg.contains("temporarily")
            {
                Class::Retry(format!("{} (code {})", truncate(&p.message), p.code))
            } else {
                Class::Fatal(format!("{} (code {})", truncate(&p.message), p.code))
            }
        }
        AlloyRpcError::Transport(TransportErrorKind::HttpError(h))
        | AlloyRpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter { error: h, .. }) => match h.status {
            413 => Class::Range(format!("HTTP 413 {}", truncate(&h.body)), None, None),
            429 | 408 | 500..=599 => Class::Retry(format!("HTTP {} {}", h.status, truncate(&h.body))),
            s => Class::Fatal(format!("HTTP {s} {}", truncate(&h.body))),
        },
        AlloyRpcError::Transport(TransportErrorKind::NonRetryable(e)) => Class::Fatal(truncate(&e.to_string())),
        AlloyRpcError::Transport(other) => Class::Retry(truncate(&other.to_string())),
        AlloyRpcError::NullResp => Class::Retry("null response".into()),
        AlloyRpcError::DeserError { err, .. } => Class::Retry(format!("malformed answer: {err}")),
        other => Class::Fatal(truncate(&other.to_string())),
    }
}

struct Endpoint {
    label: String,
    client: RpcClient,
    /// The same connection pool, for `eth_getLogs` read straight off the wire.
    http: reqwest::Client,
    url: reqwest::Url,
    failures: AtomicU32,
    rest_until: Mutex<Option<Instant>>,
    last_success: Mutex<Option<Instant>>,
}

impl Endpoint {
    fn resting(&self) -> Option<Instant> {
        self.rest_until.lock().ok().and_then(|g| *g).filter(|t| *t > Instant::now())
    }

    fn last_success(&self) -> Option<Instant> {
        self.last_success.lock().ok().and_then(|g| *g)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.last_success.lock() {
            *g = Some(Instant::now());
        }
    }

    fn failed(&self) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= REST_AFTER_FAILURES
            && let Ok(mut g) = self.rest_until.lock()
        {
            *g = Some(Instant::now() + REST_FOR);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(endpoint = %self.label, secs = REST_FOR.as_secs(), "RPC endpoint keeps failing; resting it");
        }
    }
}

/// Counters for metrics and reports.
#[derive(Debug, Default)]
pub struct RpcStats {
    /// Requests sent (including retries).
    pub requests: AtomicU64,
    /// Retryable failures.
    pub retries: AtomicU64,
    /// Ranges refused as too large.
    pub range_splits: AtomicU64,
}

/// A log as `eth_getLogs` returns it. Parsed through a flat wire struct: alloy's `Log` uses
/// `serde(flatten)`, whose buffered path costs more than the rest of the parse. Logs without
/// block number, hash or index (pending logs) are refused at parse time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "LogWire")]
pub struct FetchedLog {
    /// Address, topics and data.
    pub log: alloy::primitives::Log,
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Block timestamp, when the node includes it.
    pub block_timestamp: Option<u64>,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Transaction index.
    pub tx_index: u64,
    /// Log index in the block.
    pub log_index: u64,
    /// Removed by a reorg (subscriptions only).
    pub removed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogWire {
    address: Address,
    topics: Vec<B256>,
    data: alloy::primitives::Bytes,
    block_number: Option<U64>,
    block_hash: Option<B256>,
    block_timestamp: Option<U64>,
    transaction_hash: Option<B256>,
    transaction_index: Option<U64>,
    log_index: Option<U64>,
    #[serde(default)]
    removed: bool,
}

impl TryFrom<LogWire> for FetchedLog {
    type Error = String;
    fn try_from(w: LogWire) -> Result<Self, String> {
        let (Some(block_number), Some(block_hash), Some(log_index)) = (w.block_number, w.block_hash, w.log_index)
        else {
            return Err("a log without block number, hash or index (a pending log)".into());
        };
        Ok(FetchedLog {
            log: alloy::primitives::Log {
                address: w.address,
                data: alloy::primitives::LogData::new_unchecked(w.topics, w.data),
            },
            block_number: block_number.to(),
            block_hash,
            block_timestamp: w.block_timestamp.map(|t| t.to()),
            tx_hash: w.transaction_hash.unwrap_or_default(),
            tx_index: w.transaction_index.map(|i| i.to()).unwrap_or_default(),
            log_index: log_index.to(),
            removed: w.removed,
        })
    }
}

/// A block header, reduced to what the indexer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    /// Number.
    #[serde(with = "alloy::serde::quantity")]
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp.
    #[serde(with = "alloy::serde::quantity")]
    pub timestamp: u64,
}

/// One `eth_getLogs` attempt on one endpoint, the body streamed into one buffer (sized from
/// Content-Length when the node sends it) and parsed in place.
async fn logs_attempt(ep: &Endpoint, body: Vec<u8>, max_bytes: Option<usize>) -> Result<Vec<FetchedLog>, Class> {
    let transport = |e: reqwest::Error| Class::Retry(truncate(&format!("{e:#}")));
    let mut response = ep
        .http
        .post(ep.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let too_large = |n: usize| {
        let cap = max_bytes.unwrap_or(usize::MAX);
        Class::Range(
            format!("the answer exceeds the response cap of {cap} bytes (at least {n}); splitting the range"),
            None,
            Some(n as u64),
        )
    };
    let limit = max_bytes.unwrap_or(usize::MAX);
    let expected = response.content_length().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if status.is_success()
        && let Some(n) = expected.filter(|n| *n > limit)
    {
        return Err(too_large(n));
    }
    let mut buf = Vec::with_capacity(expected.unwrap_or(64 * 1024).min(limit));
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit && status.is_success() {
            return Err(too_large(buf.len()));
        }
    }
    if !status.is_success() {
        let error =
            alloy::transports::HttpError { status: status.as_u16(), body: String::from_utf8_lossy(&buf).into_owned() };
        return Err(classify(&AlloyRpcError::Transport(TransportErrorKind::HttpError(error))));
    }
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        result: Option<Vec<FetchedLog>>,
        #[serde(default)]
        error: Option<alloy::rpc::json_rpc::ErrorPayload>,
    }
    match serde_json::from_slice::<Envelope>(&buf) {
        Ok(Envelope { error: Some(payload), .. }) => Err(classify(&AlloyRpcError::ErrorResp(payload))),
        Ok(Envelope { result: Some(logs), .. }) => Ok(logs),
        Ok(Envelope { result: None, .. }) => Err(classify(&AlloyRpcError::NullResp)),
        Err(e) => Err(Class::Retry(format!("malformed answer: {e}"))),
    }
}

/// A JSON-RPC client over one or more endpoints.
pub struct Rpc {
    endpoints: Vec<Endpoint>,
    /// Request counters.
    pub stats: RpcStats,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc").field("endpoints", &self.endpoints.iter().map(|e| &e.label).collect::<Vec<_>>()).finish()
    }
}

impl Rpc {
    /// A client for `urls` (the first is preferred) with a per-request `timeout`.
    pub fn new(urls: &[String], timeout: Duration) -> RpcResult<Rpc> {
        lcw_schema::ensure_tls();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RpcError::BadUrl(e.to_string()))?;
        let mut endpoints = Vec::new();
        for url in urls {
            let parsed: reqwest::Url = url.parse().map_err(|_| RpcError::BadUrl(redact_url(url)))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(RpcError::BadUrl(redact_url(url)));
            }
            endpoints.push(Endpoint {
                label: redact_url(url),
                client: RpcClient::new_http_with_client(http.clone(), parsed.clone()),
                http: http.clone(),
                url: parsed,
                failures: AtomicU32::new(0),
                rest_until: Mutex::new(None),
                last_success: Mutex::new(None),
            });
        }
        if endpoints.is_empty() {
            return Err(RpcError::BadUrl("(none)".into()));
        }
        Ok(Rpc { endpoints, stats: RpcStats::default() })
    }

    /// The best endpoint not yet tried in this round: healthy ones in preference order, then
    /// (all resting) the one that succeeded most recently.
    fn best(&self, tried: &[usize]) -> usize {
        let candidates = (0..self.endpoints.len()).filter(|i| !tried.contains(i));
        let healthy = candidates.clone().find(|i| self.endpoints[*i].resting().is_none());
        healthy.unwrap_or_else(|| candidates.max_by_key(|i| self.endpoints[*i].last_success()).unwrap_or(0))
    }

    /// One call with retries and failover: a failed attempt moves on to the next endpoint at
    /// once; only when every endpoint failed in a round does the call back off (exponentially,
    /// with jitter). It gives up after a minute of failures.
    pub async fn call<P: RpcSend + 'static, R: RpcRecv>(&self, method: &'static str, params: P) -> RpcResult<R> {
        self.retrying(method, |ep| {
            let params = params.clone();
            Box::pin(async move { ep.client.request::<P, R>(method, params).await.map_err(|e| classify(&e)) })
        })
        .await
    }

    /// The retry and failover loop of [`Rpc::call`] around one attempt on one endpoint.
    async fn retrying<R>(
        &self,
        method: &'static str,
        attempt: impl for<'e> Fn(&'e Endpoint) -> futures::future::BoxFuture<'e, Result<R, Class>>,
    ) -> RpcResult<R> {
        let started = Instant::now();
        let mut delay = BACKOFF_START;
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0u32;
        loop {
            let i = self.best(&tried);
            let ep = &self.endpoints[i];
            attempts += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match attempt(ep).await {
                Ok(r) => {
                    ep.succeeded();
                    return Ok(r);
                }
                Err(Class::Range(message, suggested_to, answer_bytes)) => {
                    ep.succeeded();
                    self.stats.range_splits.fetch_add(1, Ordering::Relaxed);
                    return Err(RpcError::RangeTooLarge { method, message, suggested_to, answer_bytes });
                }
                Err(Class::Fatal(message)) => {
                    return Err(RpcError::Rejected { method, endpoint: ep.label.clone(), message });
                }
                Err(Class::Retry(message)) => {
                    ep.failed();
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(method, endpoint = %ep.label, attempts, error = %message, "retrying RPC call");
                    if started.elapsed() > GIVE_UP_AFTER {
                        return Err(RpcError::Unavailable { method, attempts, endpoint: ep.label.clone(), message });
                    }
                    tried.push(i);
                    if tried.len() >= self.endpoints.len() {
                        tried.clear();
                        let jitter = Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64 / 2 + 1));
                        tokio::time::sleep(delay + jitter).await;
                        delay = (delay * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> RpcResult<u64> {
        Ok(self.call::<_, U64>("eth_chainId", ()).await?.to())
    }

    /// The header at `tag` (None when the node has no such block, e.g. no finalized block yet).
    pub async fn header(&self, tag: BlockNumberOrTag) -> RpcResult<Option<Header>> {
        self.call("eth_getBlockByNumber", (tag, false)).await
    }

    /// Logs of `addresses` in `from..=to`.
    pub async fn logs(&self, addresses: &[Address], from: u64, to: u64) -> RpcResult<Vec<FetchedLog>> {
        self.logs_capped(addresses, from, to, None).await
    }

    /// Logs of `addresses` in `from..=to`, read straight off the wire and parsed once (alloy's
    /// transport holds the whole body, copies the result into a `RawValue` and parses it again).
    /// With `max_bytes`, an answer larger than that is abandoned as it streams in and reported as
    /// [`RpcError::RangeTooLarge`], so the caller splits the range: memory stays bounded however
    /// dense the chain turns.
    pub async fn logs_capped(
        &self,
        addresses: &[Address],
        from: u64,
        to: u64,
        max_bytes: Option<usize>,
    ) -> RpcResult<Vec<FetchedLog>> {
        let filter = Filter::new().address(addresses.to_vec()).from_block(from).to_block(to);
        self.logs_where(&filter, max_bytes).await
    }

    /// Logs of `address` with `topic0` in `from..=to` (an event of one contract, across a range).
    pub async fn logs_of_event(
        &self,
        address: Address,
        topic0: B256,
        from: u64,
        to: u64,
    ) -> RpcResult<Vec<FetchedLog>> {
        let filter = Filter::new().address(address).event_signature(topic0).from_block(from).to_block(to);
        self.logs_where(&filter, None).await
    }

    /// `eth_getLogs` with `filter`, read off the wire as [`Rpc::logs_capped`] describes.
    async fn logs_where(&self, filter: &Filter, max_bytes: Option<usize>) -> RpcResult<Vec<FetchedLog>> {
        let request = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [filter]});
        let body = serde_json::to_vec(&request).map_err(|e| RpcError::Rejected {
            method: "eth_getLogs",
            endpoint: "(request)".into(),
            message: e.to_string(),
        })?;
        self.retrying("eth_getLogs", |ep| Box::pin(logs_attempt(ep, body.clone(), max_bytes))).await
    }

    /// Logs of `addresses` in the block with `hash` (consistent with that exact block).
    pub async fn logs_at(&self, addresses: &[Address], hash: B256) -> RpcResult<Vec<FetchedLog>> {
        let filter = Filter::new().address(addresses.to_vec()).at_block_hash(hash);
        self.call("eth_getLogs", (filter,)).await
    }

    /// The value (msg.value) of a transaction.
    pub async fn tx_value(&self, hash: B256) -> RpcResult<Option<U256>> {
        #[derive(Debug, Deserialize)]
        struct TxValue {
            value: U256,
        }
        let tx: Option<TxValue> = self.call("eth_getTransactionByHash", (hash,)).await?;
        Ok(tx.map(|t| t.value))
    }

    /// A contract call at `block`, returning the raw return data.
    pub async fn call_at(
        &self,
        to: Address,
        data: alloy::primitives::Bytes,
        block: u64,
    ) -> RpcResult<alloy::primitives::Bytes> {
        self.call_at_tag(to, data, BlockNumberOrTag::Number(block)).await
    }

    /// A contract call at `tag` (a number, `latest`, ...), returning the raw return data.
    pub async fn call_at_tag(
        &self,
        to: Address,
        data: alloy::primitives::Bytes,
        tag: BlockNumberOrTag,
    ) -> RpcResult<alloy::primitives::Bytes> {
        let request = alloy::rpc::types::TransactionRequest::default().to(to).input(data.into());
        self.call("eth_call", (request, tag)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::rpc::json_rpc::ErrorPayload;

    fn resp(code: i64, message: &str) -> AlloyRpcError<TransportErrorKind> {
        AlloyRpcError::ErrorResp(ErrorPayload { code, message: message.to_owned().into(), data: None })
    }

    #[test]
    fn urls_in_transport_errors_are_redacted() {
        let e = TransportErrorKind::custom_str(
            "error sending request for url (https://eth.example/v2/K3yOfTheOperator): connection refused",
        );
        let Class::Retry(message) = classify(&e) else { panic!("a transport error is retried") };
        assert_eq!(message, "error sending request for url (https://eth.example/…): connection refused");
    }

    #[test]
    fn recognises_range_refusals_of_common_providers() {
        for m in [
            "query returned more than 10000 results",
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range",
            "block range is too wide",
            "exceed maximum block range: 5000",
            "eth_getLogs is limited to a 10000 range",
            "query returned more than 10000 results. Try with this block range [0x1a, 0x2b].",
        ] {
            assert!(matches!(classify(&resp(-32005, m)), Class::Range(..)), "{m}");
        }
        let Class::Range(_, s, _) = classify(&resp(-32602, "this block range should work: [0x10, 0x20]")) else {
            panic!()
        };
        assert_eq!(s, Some(0x20));
    }

    #[test]
    fn retries_rate_limits_and_server_errors_but_not_bad_requests() {
        assert!(matches!(classify(&resp(429, "Too Many Requests")), Class::Retry(_)));
        assert!(matches!(classify(&resp(-32000, "header not found")), Class::Retry(_)));
        assert!(matches!(classify(&resp(-32602, "invalid argument 0: hex string without 0x prefix")), Class::Fatal(_)));
        let http = |status| {
            AlloyRpcError::Transport(TransportErrorKind::HttpError(alloy::transports::HttpError {
                status,
                body: "x".into(),
            }))
        };
        assert!(matches!(classify(&http(429)), Class::Retry(_)));
        assert!(matches!(classify(&http(503)), Class::Retry(_)));
        assert!(matches!(classify(&http(413)), Class::Range(..)));
        assert!(matches!(classify(&http(401)), Class::Fatal(_)));
    }
}
