//! JSON-RPC with failover: one client over the profile's endpoints (`rpc_url`, then
//! `rpc_fallback_urls`, in order of preference), for the indexer's typed calls ([`Rpc`]) and,
//! as an alloy transport ([`FailoverTransport`]), for every provider of [`crate::Chain`]: the
//! settler, the worker and the operator verbs fail over exactly as the indexer does.
//!
//! # Failover
//!
//! A call goes to the best endpoint: the first healthy one in preference order. A transport
//! error, HTTP 408/429/5xx, a garbled or null answer, or a JSON-RPC error that means "try again"
//! (rate limits, "header not found" from a lagging node, timeouts) moves it to the next endpoint
//! at once; when every endpoint failed in a round, the call backs off (exponentially, with
//! jitter) and starts another round, until its budget is spent (a minute for the indexer, the
//! request timeout for [`crate::Chain`]); every endpoint is tried at least once. An endpoint
//! that fails three times in a row rests for 30 s; the primary is preferred again as soon as it
//! is healthy (its first success clears the rest).
//!
//! Any other JSON-RPC error is the node's answer, not a failure: a revert, a refused transaction,
//! an invalid argument. It is returned at once, never retried elsewhere (another node would only
//! give the same answer, or worse, a different one). The indexer's `eth_getLogs` range refusals
//! are answers too, reported as [`RpcError::RangeTooLarge`] so that the caller splits the range.
//!
//! Requests are safe to repeat, with two kinds of exceptions. `eth_sendRawTransaction` does
//! move on to the next endpoint after a transport failure: the first node may have taken the
//! transaction before the connection broke, and the same signed bytes then reach a second node;
//! that is harmless (one transaction, one nonce), and the second answer "already known" is a
//! success ([`crate::Chain::send_raw`]), "nonce too low" means it was mined. Requests that change
//! a development node's state (`evm_*`, `anvil_*` setters, `hardhat_*`) or have the node sign
//! (`eth_sendTransaction`, `eth_sign`) are sent once, to one endpoint, and never retried.
//!
//! # Chain ids
//!
//! Every endpoint must serve the expected chain: the profile's ([`Rpc::for_profile`]), or else
//! the chain of the first endpoint that answers ([`Rpc::new`]). An endpoint's `eth_chainId` is
//! read before its first call, and again whenever the client comes to it after using another one
//! (a failover to a fallback, or back to the primary); between switches the check is cached. An
//! endpoint that answers another chain id is never used again for anything: a warning names it
//! (redacted) and both chain ids, and the call moves on. When no endpoint of the right chain is
//! left, calls fail with [`RpcError::WrongChain`], which names each refused endpoint. A testnet URL
//! listed as a mainnet fallback would otherwise return believable answers for the same predeploy
//! addresses.
//!
//! URLs in logs and errors are always redacted (they often embed API keys).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U64, U256};
use alloy::rpc::json_rpc::{RpcRecv, RpcSend};
use alloy::rpc::types::Filter;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};
use lcw_schema::profile::{Profile, redact_urls};
use serde::Deserialize;

mod pool;
mod transport;

use pool::{Endpoint, Failure, Pool};
pub use transport::FailoverTransport;

/// The indexer's calls keep retrying for this long before they give up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// An endpoint that answered another chain id than the expected one (never used again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The endpoint (redacted).
    pub endpoint: String,
    /// The chain id it answered.
    pub chain_id: u64,
}

fn refused_list(refused: &[Refused]) -> String {
    refused.iter().map(|r| format!("{} answers chain {}", r.endpoint, r.chain_id)).collect::<Vec<_>>().join(", ")
}

fn refused_note(refused: &[Refused]) -> String {
    if refused.is_empty() { String::new() } else { format!(" (not used, another chain: {})", refused_list(refused)) }
}

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
        "{method} kept failing on every RPC endpoint ({attempts} attempts); last error from {endpoint}: \
         {message}{}. Check that the node is reachable, or add fallback URLs (rpc_fallback_urls in the profile)",
        refused_note(refused)
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
        /// Endpoints left out because they serve another chain.
        refused: Vec<Refused>,
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
    /// No endpoint serves the expected chain: each one answered another chain id.
    #[error(
        "no RPC endpoint serves chain {expected}: {}; those endpoints are never used. Point --rpc-url (RPC_URL) \
         or the profile's rpc_url and rpc_fallback_urls at nodes of chain {expected}, or use the network \
         profile of the chain they serve",
        refused_list(refused)
    )]
    WrongChain {
        /// The chain the endpoints must serve.
        expected: u64,
        /// The endpoints that serve another one.
        refused: Vec<Refused>,
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

/// A JSON-RPC error answer: a revert is always the answer (its reason may say "timeout"); then
/// range refusals; then the errors that mean "try again, here or elsewhere".
fn classify_payload(code: i64, message: &str) -> Class {
    let msg = message.to_lowercase();
    if code == 3 || msg.contains("revert") {
        Class::Fatal(format!("{} (code {code})", truncate(message)))
    } else if RANGE_PHRASES.iter().any(|k| msg.contains(k)) {
        Class::Range(truncate(message), suggested_end(message), None)
    } else if code == 429
        || msg.contains("rate limit")
        || msg.contains("too many requests")
        || msg.contains("capacity")
        || msg.contains("throttl")
        || msg.contains("header not found")
        || msg.contains("unknown block")
        || msg.contains("timeout")
        || msg.contains("temporarily")
    {
        Class::Retry(format!("{} (code {code})", truncate(message)))
    } else {
        Class::Fatal(format!("{} (code {code})", truncate(message)))
    }
}

fn classify(e: &AlloyRpcError<TransportErrorKind>) -> Class {
    match e {
        AlloyRpcError::ErrorResp(p) => classify_payload(p.code, &p.message),
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
/// block number, hash or index (pending logs), or without their transaction's hash or index, are
/// refused at parse time: nothing is stored with a made-up zero hash or index.
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
        let (Some(tx_hash), Some(tx_index)) = (w.transaction_hash, w.transaction_index) else {
            return Err("a log without its transaction hash or index".into());
        };
        Ok(FetchedLog {
            log: alloy::primitives::Log {
                address: w.address,
                data: alloy::primitives::LogData::new_unchecked(w.topics, w.data),
            },
            block_number: block_number.to(),
            block_hash,
            block_timestamp: w.block_timestamp.map(|t| t.to()),
            tx_hash,
            tx_index: tx_index.to(),
            log_index: log_index.to(),
            removed: w.removed,
        })
    }
}

/// A JSON-RPC answer's body as text. JSON is UTF-8, and serde_json skips the bytes of a field it
/// ignores without checking them, so an answer that is not UTF-8 anywhere is refused whole here
/// (as alloy's own parse refuses it).
fn answer_text(buf: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(buf).map_err(|e| format!("an answer that is not UTF-8 ({} bytes): {e}", buf.len()))
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
    let text = answer_text(&buf).map_err(|e| Class::Retry(format!("malformed answer: {e}")))?;
    match serde_json::from_str::<Envelope>(text) {
        Ok(Envelope { error: Some(payload), .. }) => Err(classify(&AlloyRpcError::ErrorResp(payload))),
        Ok(Envelope { result: Some(logs), .. }) => Ok(logs),
        Ok(Envelope { result: None, .. }) => Err(classify(&AlloyRpcError::NullResp)),
        Err(e) => Err(Class::Retry(format!("malformed answer: {e}"))),
    }
}

/// A JSON-RPC client over one or more endpoints. Clones share the endpoints, their health and
/// their chain checks.
#[derive(Clone)]
pub struct Rpc {
    pool: Arc<Pool>,
    give_up_after: Duration,
    /// Request counters.
    pub stats: Arc<RpcStats>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("endpoints", &self.pool.labels())
            .field("chain_id", &self.pool.expected())
            .field("give_up_after", &self.give_up_after)
            .finish()
    }
}

impl Rpc {
    /// A client for `urls` (the first is preferred) with a per-request `timeout`. Every endpoint
    /// must serve the chain of the first one that answers; prefer [`Rpc::for_profile`], which
    /// knows the chain beforehand.
    pub fn new(urls: &[String], timeout: Duration) -> RpcResult<Rpc> {
        Self::with_chain(urls, timeout, None)
    }

    /// A client for the profile's endpoints (`rpc_url`, then `rpc_fallback_urls`), each of which
    /// must serve the profile's chain.
    pub fn for_profile(profile: &Profile, timeout: Duration) -> RpcResult<Rpc> {
        let mut urls = vec![profile.rpc_url.clone()];
        urls.extend(profile.rpc_fallback_urls.iter().cloned());
        Self::with_chain(&urls, timeout, Some(profile.chain_id))
    }

    /// A client for `urls` whose endpoints must all serve `chain_id` (or, with None, the chain of
    /// the first one that answers).
    pub fn with_chain(urls: &[String], timeout: Duration, chain_id: Option<u64>) -> RpcResult<Rpc> {
        let pool = Arc::new(Pool::new(urls, timeout, chain_id)?);
        let stats = pool.stats.clone();
        Ok(Rpc { pool, give_up_after: GIVE_UP_AFTER, stats })
    }

    /// This client with another retry budget: a call gives up at the end of the first round of
    /// endpoints that ends after `budget` (zero: one round, each usable endpoint tried once).
    /// The endpoints and what is known about them stay shared.
    pub fn give_up_after(&self, budget: Duration) -> Rpc {
        Rpc { give_up_after: budget, ..self.clone() }
    }

    /// The chain every endpoint must serve, once known.
    pub fn expected_chain_id(&self) -> Option<u64> {
        self.pool.expected()
    }

    /// The endpoints found serving another chain (never used again).
    pub fn refused(&self) -> Vec<Refused> {
        self.pool.refused()
    }

    /// Whether the preferred endpoint is on this machine (alloy polls local nodes faster).
    pub fn is_local(&self) -> bool {
        self.pool.endpoints.first().is_some_and(|e| alloy::transports::utils::guess_local_url(e.url.as_str()))
    }

    /// The client as an alloy transport, for a provider:
    /// `ProviderBuilder::new().connect_client(RpcClient::new(rpc.transport(), rpc.is_local()))`.
    pub fn transport(&self) -> FailoverTransport {
        FailoverTransport::new(self.clone())
    }

    fn error(&self, method: &'static str, failure: Failure) -> RpcError {
        match failure {
            Failure::Range { message, suggested_to, answer_bytes } => {
                RpcError::RangeTooLarge { method, message, suggested_to, answer_bytes }
            }
            Failure::Rejected { endpoint, message } => RpcError::Rejected { method, endpoint, message },
            Failure::Unavailable { attempts, endpoint, message } => {
                RpcError::Unavailable { method, attempts, endpoint, message, refused: self.pool.refused() }
            }
            Failure::WrongChain => RpcError::WrongChain {
                expected: self.pool.expected().unwrap_or_default(),
                refused: self.pool.refused(),
            },
        }
    }

    /// The retry and failover loop (see the module docs) around one attempt on one endpoint.
    async fn retrying<R>(
        &self,
        method: &'static str,
        attempt: impl for<'e> Fn(&'e Endpoint) -> futures::future::BoxFuture<'e, Result<R, Class>>,
    ) -> RpcResult<R> {
        self.pool.run(method, true, self.give_up_after, attempt).await.map_err(|f| self.error(method, f))
    }

    /// One call with retries and failover (see the module docs).
    pub async fn call<P: RpcSend + 'static, R: RpcRecv>(&self, method: &'static str, params: P) -> RpcResult<R> {
        self.retrying(method, |ep| {
            let params = params.clone();
            Box::pin(async move { ep.client.request::<P, R>(method, params).await.map_err(|e| classify(&e)) })
        })
        .await
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

    /// Fuzzing (fuzz/corpus/get_logs/crash-log-without-transaction) found a log without
    /// `transactionHash` and `transactionIndex` read as the zero hash at index 0.
    #[test]
    fn a_log_without_its_transaction_hash_or_index_is_refused_not_read_as_zero() {
        let log = format!(
            r#"{{"address":"0x00000000000000000000000000000000000000a1","topics":[],"data":"0x","blockNumber":"0x1","blockHash":"0x{}","transactionHash":"0x{}","transactionIndex":"0x2","logIndex":"0x0","removed":false}}"#,
            "bb".repeat(32),
            "cc".repeat(32)
        );
        let read = serde_json::from_str::<FetchedLog>(&log).unwrap();
        assert_eq!((read.tx_hash, read.tx_index), (B256::repeat_byte(0xcc), 2));
        let hash = format!(r#""transactionHash":"0x{}","#, "cc".repeat(32));
        for (what, without) in [
            ("hash", log.replace(&hash, "")),
            ("hash", log.replace(&hash, r#""transactionHash":null,"#)),
            ("index", log.replace(r#""transactionIndex":"0x2","#, "")),
            ("index", log.replace(r#""transactionIndex":"0x2","#, r#""transactionIndex":null,"#)),
        ] {
            let e = serde_json::from_str::<FetchedLog>(&without).unwrap_err().to_string();
            assert!(e.contains("without its transaction hash or index"), "without the {what}: {e}");
        }
    }

    /// Fuzzing (fuzz/corpus/get_logs/crash-answer-not-utf8) found an answer with bytes that are not
    /// UTF-8, in a field lcw ignores, read as if they were not there.
    #[test]
    fn an_answer_that_is_not_utf8_is_refused_even_where_lcw_ignores_the_field() {
        let answer = |note: &[u8]| [&br#"{"jsonrpc":"2.0","id":1,"result":[],"note":""#[..], note, br#""}"#].concat();
        assert_eq!(answer_text(&answer(b"fine")).unwrap(), r#"{"jsonrpc":"2.0","id":1,"result":[],"note":"fine"}"#);
        let e = answer_text(&answer(b"\xb2")).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

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
    fn a_revert_is_an_answer_even_when_its_reason_sounds_transient() {
        assert!(matches!(classify(&resp(3, "execution reverted: ack timeout passed")), Class::Fatal(_)));
        assert!(matches!(classify(&resp(-32000, "execution reverted")), Class::Fatal(_)));
        assert!(matches!(classify(&resp(-32000, "nonce too low")), Class::Fatal(_)));
        assert!(matches!(classify(&resp(-32000, "already known")), Class::Fatal(_)));
    }

    #[test]
    fn a_wrong_chain_error_names_every_refused_endpoint_and_both_chains() {
        let refused = vec![
            Refused { endpoint: "https://eth.example/…".into(), chain_id: 8200 },
            Refused { endpoint: "http://127.0.0.1:8546".into(), chain_id: 1 },
        ];
        let m = RpcError::WrongChain { expected: 9200, refused: refused.clone() }.to_string();
        assert!(m.starts_with("no RPC endpoint serves chain 9200: https://eth.example/… answers chain 8200, "), "{m}");
        assert!(m.contains("http://127.0.0.1:8546 answers chain 1") && m.contains("--rpc-url"), "{m}");
        let m = RpcError::Unavailable {
            method: "eth_call",
            attempts: 4,
            endpoint: "http://127.0.0.1:1".into(),
            message: "connection refused".into(),
            refused: refused[..1].to_vec(),
        }
        .to_string();
        assert!(
            m.contains("connection refused (not used, another chain: https://eth.example/… answers chain 8200)"),
            "{m}"
        );
    }

    #[test]
    fn bad_urls_are_refused_redacted() {
        let e = Rpc::new(&["ftp://user:pw@eth.example/v2/K3yOfTheOperatorK3yOf".into()], Duration::from_secs(1));
        let m = e.unwrap_err().to_string();
        assert!(!m.contains("K3y") && !m.contains("pw"), "{m}");
        assert!(Rpc::new(&[], Duration::from_secs(1)).is_err());
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
