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
//! # Checked answers
//!
//! A caller that must not trust an answer as it comes checks it inside the attempt that got it
//! ([`Rpc::checked`]): every request of the attempt goes to one endpoint ([`Node`]), so its
//! answers can be checked against each other, and an answer the check refuses
//! ([`AttemptError::bad_answer`]) is a failure of that endpoint. It is counted
//! ([`RpcStats::bad_answers`], and per endpoint by reason, [`Rpc::bad_answers`]), logged as a
//! warning with the endpoint (redacted), the reason and the detail, and the call moves on to the
//! next endpoint as after any other failure. Nothing of a refused answer reaches the caller.
//! An `eth_getLogs` answer that does not parse is refused the same way, and no answer is read
//! past a size limit ([`MAX_LOGS_ANSWER_BYTES`] unless the caller sets another), error bodies
//! past [`ERROR_BODY_BYTES`].
//!
//! URLs in logs and errors are always redacted (they often embed API keys).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U64, U256};
use alloy::rpc::json_rpc::{RpcRecv, RpcSend};
use alloy::rpc::types::Filter;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};
use futures::future::BoxFuture;
use lcw_schema::profile::{Profile, redact_urls};
use serde::{Deserialize, Serialize};

mod pool;
mod transport;

use pool::{Endpoint, Failure, Pool};
pub use transport::FailoverTransport;

/// The indexer's calls keep retrying for this long before they give up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// No `eth_getLogs` answer is read past this size unless the caller sets another limit: a
/// hostile or broken endpoint could otherwise fill the memory. A block of 12,000 logs answers
/// about 11 MB.
pub const MAX_LOGS_ANSWER_BYTES: usize = 64 << 20;

/// The part of an error answer (HTTP status other than 2xx) that is read; the rest is dropped.
pub const ERROR_BODY_BYTES: usize = 16 << 10;

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

#[derive(Debug)]
enum Class {
    /// Refused range: message, suggested last block, size of an answer over the cap.
    Range(String, Option<u64>, Option<u64>),
    Retry(String),
    Fatal(String),
}

/// How one attempt on one endpoint failed, for the failover loop.
#[derive(Debug)]
enum Fault {
    /// The node or the transport failed, or the node answered with an error.
    Node(Class),
    /// An answer came and is wrong: it does not parse, is too large, or a check refused it.
    Bad(BadAnswer),
}

/// A refused answer: what kind of wrong (a short snake_case label, bounded: it labels a metric)
/// and what exactly, with the values.
#[derive(Debug)]
struct BadAnswer {
    reason: &'static str,
    detail: String,
}

impl Fault {
    fn bad(reason: &'static str, detail: impl std::fmt::Display) -> Self {
        Fault::Bad(BadAnswer { reason, detail: detail.to_string() })
    }
}

impl From<Class> for Fault {
    fn from(c: Class) -> Self {
        Fault::Node(c)
    }
}

/// Why an attempt of [`Rpc::checked`] on one endpoint gave no answer.
#[derive(Debug)]
pub struct AttemptError(Fault);

impl AttemptError {
    /// The endpoint's answer is wrong: `reason` names the kind of wrong (a short snake_case
    /// label from a fixed set, such as `duplicate`: it labels the per-endpoint metric) and
    /// `detail` says what exactly, with the values. It is counted and reported with the
    /// endpoint, none of it is used, and the call moves on to the next endpoint.
    pub fn bad_answer(reason: &'static str, detail: impl std::fmt::Display) -> Self {
        AttemptError(Fault::bad(reason, detail))
    }

    /// The endpoint cannot answer yet (a node behind the others): the call moves on to the next
    /// endpoint, as after a timeout, without counting a bad answer.
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        AttemptError(Fault::Node(Class::Retry(truncate(&reason.to_string()))))
    }
}

impl From<AttemptError> for Fault {
    fn from(e: AttemptError) -> Self {
        e.0
    }
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
    /// Answers refused as wrong (each one retried on the next endpoint).
    pub bad_answers: AtomicU64,
}

/// The answers of one endpoint that were refused as wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadAnswers {
    /// The endpoint (redacted).
    pub endpoint: String,
    /// Answers refused.
    pub count: u64,
    /// Answers refused, by reason (see [`AttemptError::bad_answer`]).
    pub reasons: BTreeMap<&'static str, u64>,
    /// Why the last one was, with the values.
    pub last: String,
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
/// Content-Length when the node sends it) and parsed in place. With `split_above`, an answer
/// past it (or past `at_most`, if lower) is abandoned and its range reported as too large (the
/// caller splits it); without, an answer past `at_most` is a bad answer (so is one that does not
/// parse). Of an error answer (a status other than 2xx) at most [`ERROR_BODY_BYTES`] are read.
async fn logs_attempt(
    ep: &Endpoint,
    body: Vec<u8>,
    split_above: Option<usize>,
    at_most: usize,
) -> Result<Vec<FetchedLog>, Fault> {
    let transport = |e: reqwest::Error| Fault::Node(Class::Retry(truncate(&format!("{e:#}"))));
    let mut response = ep
        .http
        .post(ep.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    let limit = if status.is_success() { split_above.unwrap_or(at_most).min(at_most) } else { ERROR_BODY_BYTES };
    let too_large = |n: usize| match split_above {
        Some(cap) => Fault::Node(Class::Range(
            format!(
                "the answer exceeds the response cap of {} bytes (at least {n}); splitting the range",
                cap.min(at_most)
            ),
            None,
            Some(n as u64),
        )),
        None => Fault::bad(
            "too_large",
            format!("the answer exceeds {at_most} bytes (at least {n}), more than any block's logs"),
        ),
    };
    let expected = response.content_length().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if status.is_success()
        && let Some(n) = expected.filter(|n| *n > limit)
    {
        return Err(too_large(n));
    }
    let mut buf = Vec::with_capacity(expected.unwrap_or(64 * 1024).min(limit));
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if buf.len() + chunk.len() > limit {
            if status.is_success() {
                return Err(too_large(buf.len() + chunk.len()));
            }
            buf.extend_from_slice(&chunk[..limit - buf.len()]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let error =
            alloy::transports::HttpError { status: status.as_u16(), body: String::from_utf8_lossy(&buf).into_owned() };
        return Err(classify(&AlloyRpcError::Transport(TransportErrorKind::HttpError(error))).into());
    }
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        result: Option<Vec<FetchedLog>>,
        #[serde(default)]
        error: Option<alloy::rpc::json_rpc::ErrorPayload>,
    }
    let text = answer_text(&buf).map_err(|e| Fault::bad("malformed", e))?;
    match serde_json::from_str::<Envelope>(text) {
        Ok(Envelope { error: Some(payload), .. }) => Err(classify(&AlloyRpcError::ErrorResp(payload)).into()),
        Ok(Envelope { result: Some(logs), .. }) => Ok(logs),
        Ok(Envelope { result: None, .. }) => {
            Err(Fault::bad("malformed", "an answer with neither a result nor an error"))
        }
        Err(e) => Err(Fault::bad("malformed", format!("malformed answer ({} bytes): {e}", buf.len()))),
    }
}

/// The request body of `eth_getLogs` with `filter`.
fn logs_request(filter: &Filter) -> Result<Vec<u8>, serde_json::Error> {
    #[derive(Serialize)]
    struct Request<'f> {
        jsonrpc: &'static str,
        id: u64,
        method: &'static str,
        params: [&'f Filter; 1],
    }
    serde_json::to_vec(&Request { jsonrpc: "2.0", id: 1, method: "eth_getLogs", params: [filter] })
}

/// The endpoint one attempt of [`Rpc::checked`] runs on: every request of the attempt goes to it,
/// so its answers can be checked against each other, and a wrong one is that endpoint's.
pub struct Node<'e> {
    ep: &'e Endpoint,
    stats: Arc<RpcStats>,
    /// Whether a request was sent yet (the failover loop counts the first).
    sent: AtomicBool,
}

impl std::fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("endpoint", &self.ep.label).finish()
    }
}

impl Node<'_> {
    /// The endpoint (redacted).
    pub fn endpoint(&self) -> &str {
        &self.ep.label
    }

    fn count(&self) {
        if self.sent.swap(true, Ordering::Relaxed) {
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The header at `tag` (None when the node has no such block); an answer that does not parse
    /// is a bad answer.
    pub async fn header(&self, tag: BlockNumberOrTag) -> Result<Option<Header>, AttemptError> {
        self.count();
        self.ep.client.request("eth_getBlockByNumber", (tag, false)).await.map_err(|e| {
            AttemptError(match &e {
                AlloyRpcError::DeserError { err, .. } => Fault::bad("malformed", format!("malformed header: {err}")),
                e => classify(e).into(),
            })
        })
    }

    /// `eth_getLogs` with `filter`, read as [`Rpc::logs_capped`] reads it: past `split_above`
    /// bytes the range is reported as too large, past `at_most` the answer is a bad one.
    pub async fn logs(
        &self,
        filter: &Filter,
        split_above: Option<usize>,
        at_most: usize,
    ) -> Result<Vec<FetchedLog>, AttemptError> {
        self.count();
        let body = logs_request(filter)
            .map_err(|e| AttemptError(Fault::Node(Class::Fatal(format!("cannot encode the filter: {e}")))))?;
        logs_attempt(self.ep, body, split_above, at_most).await.map_err(AttemptError)
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
    async fn retrying<R, E: Into<Fault>>(
        &self,
        method: &'static str,
        attempt: impl for<'e> Fn(&'e Endpoint) -> BoxFuture<'e, Result<R, E>>,
    ) -> RpcResult<R> {
        self.pool.run(method, true, self.give_up_after, attempt).await.map_err(|f| self.error(method, f))
    }

    /// A call whose answers are checked before they are used: `attempt` makes its requests on
    /// the one endpoint it is given and checks what comes back; an answer it refuses
    /// ([`AttemptError::bad_answer`]) is counted and reported with the endpoint, and the call
    /// moves on to the next endpoint, with retries and failover as for any call (see the module
    /// docs). `method` names the call in logs and errors.
    pub async fn checked<R>(
        &self,
        method: &'static str,
        attempt: impl for<'e> Fn(Node<'e>) -> BoxFuture<'e, Result<R, AttemptError>>,
    ) -> RpcResult<R> {
        let stats = &self.stats;
        self.retrying(method, |ep| attempt(Node { ep, stats: stats.clone(), sent: AtomicBool::new(false) })).await
    }

    /// The endpoints whose answers were refused as wrong, with how many and why the last one was.
    pub fn bad_answers(&self) -> Vec<BadAnswers> {
        self.pool.bad_answers()
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
    /// dense the chain turns. No answer is read past [`MAX_LOGS_ANSWER_BYTES`].
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
        let body = logs_request(filter).map_err(|e| RpcError::Rejected {
            method: "eth_getLogs",
            endpoint: "(request)".into(),
            message: format!("cannot encode the filter: {e}"),
        })?;
        self.retrying("eth_getLogs", |ep| Box::pin(logs_attempt(ep, body.clone(), max_bytes, MAX_LOGS_ANSWER_BYTES)))
            .await
    }

    /// Logs of `addresses` in the block with `hash` (consistent with that exact block).
    pub async fn logs_at(&self, addresses: &[Address], hash: B256) -> RpcResult<Vec<FetchedLog>> {
        let filter = Filter::new().address(addresses.to_vec()).at_block_hash(hash);
        self.logs_where(&filter, None).await
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

    /// A node on 127.0.0.1 that answers `eth_chainId` with 1 and everything else with `status`
    /// and `body`; returns its URL.
    async fn stub(status: u16, body: String) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then as many body bytes as Content-Length says.
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&request).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let (status, answer) = if String::from_utf8_lossy(&request).contains("eth_chainId") {
                        (200, r#"{"jsonrpc":"2.0","id":0,"result":"0x1"}"#.to_owned())
                    } else {
                        (status, body)
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        answer.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    fn logs_answer(block: u64) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":[{{"address":"0x00000000000000000000000000000000000000a1","topics":[],"data":"0x","blockNumber":"{block:#x}","blockHash":"0x{}","transactionHash":"0x{}","transactionIndex":"0x0","logIndex":"0x0","removed":false}}]}}"#,
            "bb".repeat(32),
            "cc".repeat(32)
        )
    }

    fn logs_of(rpc: &Rpc) -> impl std::future::Future<Output = RpcResult<Vec<FetchedLog>>> + '_ {
        let filter = Filter::new().from_block(1).to_block(9);
        rpc.checked("eth_getLogs", move |node| {
            let filter = filter.clone();
            Box::pin(async move {
                let logs = node.logs(&filter, None, MAX_LOGS_ANSWER_BYTES).await?;
                match logs.iter().find(|l| l.block_number > 9) {
                    Some(l) => {
                        Err(AttemptError::bad_answer("out_of_range", format!("a log of block {}", l.block_number)))
                    }
                    None => Ok(logs),
                }
            })
        })
    }

    #[tokio::test]
    async fn a_refused_answer_is_counted_against_its_endpoint_and_asked_of_the_next() {
        let liar = stub(200, logs_answer(12)).await;
        let honest = stub(200, logs_answer(5)).await;
        let rpc = Rpc::new(&[liar.clone(), honest.clone()], Duration::from_secs(5)).unwrap();
        let logs = logs_of(&rpc).await.unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].block_number, 5, "the answer came from the second endpoint");
        assert_eq!(rpc.stats.bad_answers.load(Ordering::Relaxed), 1);
        let reasons = [("out_of_range", 1)].into_iter().collect();
        assert_eq!(
            rpc.bad_answers(),
            vec![BadAnswers { endpoint: liar, count: 1, reasons, last: "a log of block 12".into() }]
        );

        // With no other endpoint the call gives up and says why.
        let alone = Rpc::new(&[stub(200, logs_answer(12)).await], Duration::from_secs(5))
            .unwrap()
            .give_up_after(Duration::ZERO);
        let e = logs_of(&alone).await.unwrap_err().to_string();
        assert!(e.contains("bad answer: a log of block 12"), "{e}");
    }

    #[tokio::test]
    async fn an_answer_too_large_is_split_when_it_can_be_and_refused_when_not() {
        let url = stub(200, logs_answer(5)).await;
        let rpc = Rpc::new(&[url], Duration::from_secs(5)).unwrap().give_up_after(Duration::ZERO);
        let read = |split_above: Option<usize>, at_most: usize| {
            rpc.checked("eth_getLogs", move |node| {
                Box::pin(async move { node.logs(&Filter::new().from_block(1).to_block(9), split_above, at_most).await })
            })
        };
        assert_eq!(read(None, 4096).await.unwrap().len(), 1);
        let e = read(None, 64).await.unwrap_err();
        assert!(e.to_string().contains("bad answer: the answer exceeds 64 bytes"), "{e}");
        let e = read(Some(64), 4096).await.unwrap_err();
        assert!(matches!(e, RpcError::RangeTooLarge { answer_bytes: Some(n), .. } if n > 64), "{e}");
        // The lower of the two limits applies: the range is split.
        assert!(matches!(read(Some(4096), 64).await.unwrap_err(), RpcError::RangeTooLarge { .. }));
        assert_eq!(rpc.stats.bad_answers.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn malformed_answers_are_bad_answers_and_error_bodies_are_read_only_in_part() {
        let cut = logs_answer(5);
        let cut = stub(200, cut[..cut.len() / 2].to_owned()).await;
        let rpc = Rpc::new(&[cut], Duration::from_secs(5)).unwrap().give_up_after(Duration::ZERO);
        let e = rpc.logs(&[], 1, 9).await.unwrap_err().to_string();
        assert!(e.contains("bad answer: malformed answer"), "{e}");
        assert_eq!(rpc.stats.bad_answers.load(Ordering::Relaxed), 1);

        let pending = logs_answer(5).replace(&format!(r#""blockHash":"0x{}","#, "bb".repeat(32)), "");
        let rpc = Rpc::new(&[stub(200, pending).await], Duration::from_secs(5)).unwrap().give_up_after(Duration::ZERO);
        let e = rpc.logs(&[], 1, 9).await.unwrap_err().to_string();
        assert!(e.contains("pending log"), "{e}");

        let huge = stub(503, "x".repeat(4 << 20)).await;
        let rpc = Rpc::new(&[huge], Duration::from_secs(5)).unwrap().give_up_after(Duration::ZERO);
        let e = rpc.logs(&[], 1, 9).await.unwrap_err().to_string();
        assert!(e.contains("HTTP 503") && e.len() < 1_000, "{e}");
        assert_eq!(rpc.stats.bad_answers.load(Ordering::Relaxed), 0, "a failing node is not a bad answer");
    }
}
