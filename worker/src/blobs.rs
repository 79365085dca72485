//! Where prompt blobs come from. Contracts only carry a blob's versioned hash; the bytes live
//! beside the chain:
//!
//! - **beacon** (real networks), as the upstream worker finds them:
//!   1. the execution block whose transactions carry the hash is searched from the submission
//!      block backwards, at most [`SEARCH_BLOCKS`] blocks (the blob is posted before or with the
//!      job);
//!   2. that block is the payload of the beacon block whose parent is its header's
//!      `parentBeaconBlockRoot`. That child is *not* at the parent's slot plus one whenever slots
//!      in between were missed (about 8 % of slots are), so it is asked for:
//!      `GET /eth/v1/beacon/headers?parent_root=<root>` names it in one request. A node that
//!      refuses the filter (error status), answers nothing, or ignores it (answers headers of
//!      other parents) is walked instead: the parent's slot from
//!      `GET /eth/v1/beacon/headers/<root>`, then `GET /eth/v1/beacon/headers/<slot>` for up to
//!      [`WALK_SLOTS`] slots after it, a 404 being a missed slot, until a block names the parent
//!      as its parent. Slot times are never assumed;
//!   3. the sidecars of that slot (`GET /eth/v1/beacon/blob_sidecars/<slot>`) hold the blob: a
//!      sidecar matches when `0x01 ‖ sha256(kzg_commitment)[1..]` equals the versioned hash.
//! - **anvil** (devnet): `anvil_getBlobByHash`, which anvil answers from memory.
//!
//! Every request (beacon or execution node) is tried up to [`TRIES`] times (backoff 100 ms · 2ⁿ)
//! when it failed in a way worth retrying (no answer, HTTP 5xx or 429), each beacon try bounded by
//! the HTTP client's timeout.
//! The whole search (every block, every try) is bounded by the caller's deadline
//! ([`BlobSource::fetch_until`]); past it, [`BlobError::Deadline`] says how long it searched and
//! how far it got ([`Progress`]). Either way the blob is decoded with the shared codec
//! (`lcw_schema::blob`).
//!
//! The decisions (which header is the child, where the walk goes next, which sidecar matches,
//! what is retried and after how long) are pure functions; the search around them only fetches.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use alloy::consensus::Transaction as _;
use alloy::primitives::{B256, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::transports::{RpcError, TransportError};
use lcw_schema::profile::{redact_url, redact_urls};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// How far back from the submission block a prompt blob is searched (as upstream).
pub const SEARCH_BLOCKS: u64 = 100;
/// How many slots after the parent beacon block its child is looked for (as upstream).
pub const WALK_SLOTS: u64 = 32;
/// Tries of one request (as upstream).
pub const TRIES: u32 = 3;
/// The wait before the second try; it doubles for each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long [`BlobSource::fetch`] searches; callers that know their job's deadline pass their
/// own to [`BlobSource::fetch_until`].
pub const FETCH_BUDGET: Duration = Duration::from_secs(30);

/// Why a blob could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No source has a blob with this versioned hash, or the chain leads nowhere.
    #[error("blob {hash} not found: {where_}")]
    NotFound {
        /// The versioned hash.
        hash: B256,
        /// Where it was looked for, and where the trail ended.
        where_: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the beacon HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A beacon request got no (whole) answer: connection refused, timed out, body cut.
    #[error("GET {request} at {node}: {source}")]
    Http {
        /// Path and query.
        request: String,
        /// The beacon node (redacted).
        node: String,
        /// The transport's error, without the URL (it may carry a key).
        #[source]
        source: reqwest::Error,
    },
    /// The beacon node answered with an error status.
    #[error("GET {request} at {node}: HTTP {status}")]
    Status {
        /// Path and query.
        request: String,
        /// The beacon node (redacted).
        node: String,
        /// The status.
        status: StatusCode,
    },
    /// The answer is not the beacon API's JSON.
    #[error("GET {request} at {node}: not a beacon API answer: {source}")]
    Json {
        /// Path and query.
        request: String,
        /// The beacon node (redacted).
        node: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The URL answers, but not as a beacon node.
    #[error("{node} has no /eth/v1/node/version (HTTP 404): is it a beacon API URL?")]
    NotBeacon {
        /// The URL (redacted).
        node: String,
    },
    /// A JSON-RPC call to the execution node (or anvil) failed. Its text is kept, redacted,
    /// rather than the error itself: the transport's error quotes the node URL, key included.
    #[error("{call}: {reason}")]
    Rpc {
        /// The call.
        call: String,
        /// The node's or the transport's error, URLs redacted.
        reason: String,
        /// Whether trying again may help: no answer, or a busy node (HTTP 5xx, 429).
        transient: bool,
    },
    /// The execution node has no block the search needs.
    #[error("the execution node has no block {number}; is it synced?")]
    MissingBlock {
        /// The block number.
        number: u64,
    },
    /// The blob's bytes are not a payload of the codec.
    #[error("blob {hash} is not a valid payload: {source}")]
    Decode {
        /// The versioned hash.
        hash: B256,
        /// The codec's error.
        #[source]
        source: lcw_schema::blob::BlobError,
    },
    /// The search did not end before the caller's deadline.
    #[error(
        "blob {hash} not fetched: gave up after {searched:.1?} at the deadline; {progress}; the blob source answers \
         too slowly"
    )]
    Deadline {
        /// The versioned hash.
        hash: B256,
        /// How long it searched.
        searched: Duration,
        /// How far it got.
        progress: Box<Progress>,
    },
}

impl BlobError {
    /// Whether trying the same request again may succeed: no answer, or a busy server.
    pub fn is_transient(&self) -> bool {
        match self {
            BlobError::Http { .. } => true,
            BlobError::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            BlobError::Rpc { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// How far a search got: what [`BlobError::Deadline`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The block the search started from (the job's submission block).
    pub from_block: u64,
    /// The lowest execution block read so far.
    pub lowest_read: Option<u64>,
    /// The execution block whose transactions carry the blob, once found.
    pub carrier: Option<u64>,
    /// The parent beacon block's slot, once the walk resolved it.
    pub parent_slot: Option<u64>,
    /// The last request sent: a beacon path and query (the node's URL is left out), or the
    /// anvil method.
    pub last_request: Option<String>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.from_block;
        match (self.carrier, self.lowest_read) {
            (Some(block), _) => {
                write!(f, "the blob is in execution block {block}")?;
                if let Some(slot) = self.parent_slot {
                    write!(f, " (parent beacon block at slot {slot})")?;
                }
                match &self.last_request {
                    Some(r) => write!(f, "; last beacon request GET {r}"),
                    None => write!(f, "; no beacon request sent yet"),
                }
            }
            (None, Some(lowest)) => write!(f, "read execution blocks {from} down to {lowest} without finding it"),
            (None, None) => match &self.last_request {
                Some(r) => write!(f, "no answer to {r} yet"),
                None => write!(f, "execution block {from} was not read yet"),
            },
        }
    }
}

/// A source of blobs.
#[derive(Clone)]
pub enum BlobSource {
    /// anvil's in-memory blobs over JSON-RPC.
    Anvil(DynProvider),
    /// A beacon node's blob sidecars, found through the execution chain's beacon roots.
    Beacon {
        /// Execution-layer provider (blocks and their transactions).
        el: DynProvider,
        /// Beacon API base URL (may carry a key: never logged as is).
        url: String,
        /// HTTP client; its timeout bounds each try.
        http: reqwest::Client,
    },
}

impl fmt::Debug for BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobSource::Anvil(_) => f.write_str("BlobSource::Anvil"),
            BlobSource::Beacon { url, .. } => {
                f.debug_struct("BlobSource::Beacon").field("url", &redact_url(url)).finish()
            }
        }
    }
}

impl BlobSource {
    /// A beacon source; `timeout` bounds each try of each request.
    pub fn beacon(el: DynProvider, url: &str, timeout: Duration) -> Result<BlobSource, BlobError> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(BlobError::Client)?;
        Ok(BlobSource::Beacon { el, url: url.trim_end_matches('/').to_owned(), http })
    }

    /// The payload of the blob with `hash`, posted in or before block `near_block`, searched
    /// for at most [`FETCH_BUDGET`].
    pub async fn fetch(&self, hash: B256, near_block: u64) -> Result<Vec<u8>, BlobError> {
        self.fetch_until(hash, near_block, Instant::now() + FETCH_BUDGET).await
    }

    /// The payload of the blob with `hash`, posted in or before block `near_block`; the whole
    /// search (every block, request and retry) ends by `deadline`, with
    /// [`BlobError::Deadline`] if it has not found the blob by then.
    pub async fn fetch_until(&self, hash: B256, near_block: u64, deadline: Instant) -> Result<Vec<u8>, BlobError> {
        let started = Instant::now();
        let mut progress = Progress { from_block: near_block, ..Progress::default() };
        let search = async {
            match self {
                BlobSource::Anvil(p) => {
                    progress.last_request = Some("anvil_getBlobByHash".into());
                    anvil_blob(p, hash).await
                }
                BlobSource::Beacon { el, url, http } => {
                    Search { el, url, http, hash, progress: &mut progress }.run(near_block).await
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline.into(), search).await;
        let blob = match outcome {
            Ok(found) => found?,
            Err(_) => {
                return Err(BlobError::Deadline { hash, searched: started.elapsed(), progress: Box::new(progress) });
            }
        };
        lcw_schema::blob::decode(&blob).map_err(|source| BlobError::Decode { hash, source })
    }

    /// Whether the source answers, without fetching a blob (`lcw preflight`). anvil must know
    /// `anvil_getBlobByHash`: any answer about the zero hash (null, or an error other than
    /// "method not found") proves it. A beacon node must answer `/eth/v1/node/version`. Returns
    /// what answered: the method, or the beacon node's version string.
    pub async fn probe(&self) -> Result<String, BlobError> {
        match self {
            BlobSource::Anvil(p) => {
                let r: Result<Option<Bytes>, _> = p.raw_request("anvil_getBlobByHash".into(), (B256::ZERO,)).await;
                match r {
                    Ok(_) => Ok("anvil_getBlobByHash".into()),
                    Err(e) if e.as_error_resp().is_some_and(|p| p.code != -32601) => Ok("anvil_getBlobByHash".into()),
                    Err(e) => Err(rpc_error("anvil_getBlobByHash", e)),
                }
            }
            BlobSource::Beacon { url, http, .. } => {
                match beacon_get::<Version>(http, url, "/eth/v1/node/version").await? {
                    Some(v) => Ok(v.version),
                    None => Err(BlobError::NotBeacon { node: redact_url(url) }),
                }
            }
        }
    }
}

async fn anvil_blob(p: &DynProvider, hash: B256) -> Result<Vec<u8>, BlobError> {
    let r: Result<Option<Bytes>, _> = p.raw_request("anvil_getBlobByHash".into(), (hash,)).await;
    match r {
        Ok(Some(b)) => Ok(b.to_vec()),
        Ok(None) => Err(BlobError::NotFound { hash, where_: "anvil has no blob with this hash".into() }),
        Err(e) => Err(rpc_error("anvil_getBlobByHash", e)),
    }
}

fn rpc_error(call: impl Into<String>, e: TransportError) -> BlobError {
    let transient = match &e {
        RpcError::Transport(kind) => kind.is_retry_err() || kind.as_http_error().is_none_or(|h| h.status >= 500),
        _ => false,
    };
    BlobError::Rpc { call: call.into(), reason: redact_urls(&e.to_string()), transient }
}

/// One beacon search: the shell around the decisions below; records how far it got.
struct Search<'a> {
    el: &'a DynProvider,
    url: &'a str,
    http: &'a reqwest::Client,
    hash: B256,
    progress: &'a mut Progress,
}

impl Search<'_> {
    async fn run(mut self, near_block: u64) -> Result<Vec<u8>, BlobError> {
        let (block, parent_root) = self.carrier(near_block).await?;
        let slot = self.child_slot(block, parent_root).await?;
        tracing::debug!(hash = %self.hash, block, slot, "blob's beacon block");
        let sidecars = self.get::<Vec<Sidecar>>(format!("/eth/v1/beacon/blob_sidecars/{slot}")).await?;
        match matching_sidecar(sidecars.unwrap_or_default(), self.hash) {
            Some(s) => Ok(s.blob.to_vec()),
            None => Err(self.not_found(format!(
                "the sidecars of slot {slot} (the beacon block of execution block {block}) do not include it; the \
                 beacon node may have pruned them (nodes keep blobs for a limited window, 4096 epochs on mainnet)"
            ))),
        }
    }

    fn not_found(&self, where_: String) -> BlobError {
        BlobError::NotFound { hash: self.hash, where_ }
    }

    /// The execution block whose transactions carry the blob, and its `parentBeaconBlockRoot`.
    async fn carrier(&mut self, near_block: u64) -> Result<(u64, B256), BlobError> {
        let lowest = near_block.saturating_sub(SEARCH_BLOCKS);
        let el = self.el;
        for number in (lowest..=near_block).rev() {
            let block = retried(|| async move {
                el.get_block_by_number(number.into())
                    .full()
                    .await
                    .map_err(|e| rpc_error(format!("eth_getBlockByNumber({number})"), e))
            })
            .await?
            .ok_or(BlobError::MissingBlock { number })?;
            self.progress.lowest_read = Some(number);
            let mut carried = block.transactions.txns().flat_map(|tx| tx.blob_versioned_hashes().unwrap_or_default());
            if !carried.any(|h| *h == self.hash) {
                continue;
            }
            self.progress.carrier = Some(number);
            return match block.header.parent_beacon_block_root {
                Some(root) => Ok((number, root)),
                None => Err(self.not_found(format!(
                    "execution block {number} carries it but has no parentBeaconBlockRoot (a chain before Cancun has \
                     no blob sidecars)"
                ))),
            };
        }
        Err(self.not_found(format!(
            "no transaction in execution blocks {lowest}..={near_block} carries it (it must be posted at most \
             {SEARCH_BLOCKS} blocks before the job)"
        )))
    }

    /// The slot of the beacon block whose parent is `parent_root`: the one carrying execution
    /// block `block`.
    async fn child_slot(&mut self, block: u64, parent_root: B256) -> Result<u64, BlobError> {
        match self.get::<Vec<HeaderItem>>(format!("/eth/v1/beacon/headers?parent_root={parent_root}")).await {
            Ok(Some(headers)) => match child_in(&headers, parent_root) {
                Some(slot) => return Ok(slot),
                None => tracing::debug!(block, answered = headers.len(), "no child in the parent_root answer; walking"),
            },
            // A node without the filter refuses it or answers in its own way: walk instead.
            Ok(None) | Err(BlobError::Status { .. } | BlobError::Json { .. }) => {
                tracing::debug!(block, "the beacon node does not filter headers by parent_root; walking")
            }
            Err(e) => return Err(e),
        }
        let Some(parent) = self.get::<HeaderItem>(format!("/eth/v1/beacon/headers/{parent_root}")).await? else {
            return Err(self.not_found(format!(
                "the beacon node has no block {parent_root}, the parent beacon block of execution block {block}; is \
                 it synced?"
            )));
        };
        let parent_slot = parent.header.message.slot;
        self.progress.parent_slot = Some(parent_slot);
        let mut slot = parent_slot.saturating_add(1);
        loop {
            let header = self.get::<HeaderItem>(format!("/eth/v1/beacon/headers/{slot}")).await?;
            let seen = header.map(|h| Seen { slot: h.header.message.slot, parent_root: h.header.message.parent_root });
            match walk(parent_slot, parent_root, slot, seen) {
                Walk::Found(child) => return Ok(child),
                Walk::Next(next) => slot = next,
                Walk::Exhausted => {
                    return Err(self.not_found(format!(
                        "no beacon block in slots {}..={} (the {WALK_SLOTS} after the parent beacon block of \
                         execution block {block}, {parent_root} at slot {parent_slot}) has that parent",
                        parent_slot.saturating_add(1),
                        parent_slot.saturating_add(WALK_SLOTS)
                    )));
                }
            }
        }
    }

    /// A beacon GET, retried; `None` for a 404.
    async fn get<T: DeserializeOwned>(&mut self, path: String) -> Result<Option<T>, BlobError> {
        self.progress.last_request = Some(path.clone());
        let (http, url, path) = (self.http, self.url, path.as_str());
        retried(|| beacon_get(http, url, path)).await
    }
}

/// One try of a beacon GET: the `data` of the answer, `None` for a 404.
async fn beacon_get<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    path: &str,
) -> Result<Option<T>, BlobError> {
    let node = || redact_url(url);
    let http_error = |source: reqwest::Error| BlobError::Http {
        request: path.to_owned(),
        node: node(),
        source: source.without_url(),
    };
    let r = http
        .get(format!("{url}{path}"))
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(http_error)?;
    let status = r.status();
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(BlobError::Status { request: path.to_owned(), node: node(), status });
    }
    let body = r.bytes().await.map_err(http_error)?;
    let answer: Data<T> = serde_json::from_slice(&body).map_err(|source| BlobError::Json {
        request: path.to_owned(),
        node: node(),
        source,
    })?;
    Ok(Some(answer.data))
}

/// `attempt` up to [`TRIES`] times while it fails transiently, waiting [`backoff`] between.
async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, BlobError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BlobError>>,
{
    let mut tried = 0;
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && tried + 1 < TRIES => {
                tracing::debug!(error = %e, tried = tried + 1, "blob source request failed; retrying");
                tokio::time::sleep(backoff(tried)).await;
                tried += 1;
            }
            outcome => return outcome,
        }
    }
}

/// The wait after the `tried`-th failed try (from 0): 100 ms · 2ⁿ.
fn backoff(tried: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(tried))
}

/// The versioned hash of a KZG commitment (EIP-4844: version byte 0x01, then sha256[1..]).
pub fn versioned_hash(commitment: &[u8]) -> B256 {
    let mut h: [u8; 32] = Sha256::digest(commitment).into();
    h[0] = 0x01;
    B256::from(h)
}

/// The sidecar whose commitment hashes to `hash`.
fn matching_sidecar(sidecars: Vec<Sidecar>, hash: B256) -> Option<Sidecar> {
    sidecars.into_iter().find(|s| versioned_hash(&s.kzg_commitment) == hash)
}

/// The child's slot in an answer to `headers?parent_root=`: a header that names `parent_root`
/// (a node that ignores the filter answers others), the canonical one if there are several.
fn child_in(headers: &[HeaderItem], parent_root: B256) -> Option<u64> {
    let mut children = headers.iter().filter(|h| h.header.message.parent_root == parent_root);
    let first = children.clone().next()?;
    Some(children.find(|h| h.canonical).unwrap_or(first).header.message.slot)
}

/// The block a walk saw at a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    slot: u64,
    parent_root: B256,
}

/// Where a walk goes after a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The child is at this slot.
    Found(u64),
    /// Look at this slot next.
    Next(u64),
    /// [`WALK_SLOTS`] slots after the parent hold no child.
    Exhausted,
}

/// The walk's step at `slot` (after the parent at `parent_slot`) given the block there, if any:
/// no block is a missed slot; a block of another parent is not ours (the parent lost a fork, or
/// the node skipped); both mean the next slot, up to [`WALK_SLOTS`] after the parent.
fn walk(parent_slot: u64, parent_root: B256, slot: u64, seen: Option<Seen>) -> Walk {
    match seen {
        Some(b) if b.parent_root == parent_root => Walk::Found(b.slot),
        _ if slot >= parent_slot.saturating_add(WALK_SLOTS) => Walk::Exhausted,
        _ => Walk::Next(slot.saturating_add(1)),
    }
}

/// The beacon API's envelope.
#[derive(Debug, Deserialize)]
struct Data<T> {
    data: T,
}
/// One item of `/eth/v1/beacon/headers` (its `root` and signature are not needed).
#[derive(Debug, Deserialize)]
struct HeaderItem {
    #[serde(default)]
    canonical: bool,
    header: SignedHeader,
}
#[derive(Debug, Deserialize)]
struct SignedHeader {
    message: HeaderMessage,
}
#[derive(Debug, Deserialize)]
struct HeaderMessage {
    #[serde(deserialize_with = "decimal")]
    slot: u64,
    parent_root: B256,
}
#[derive(Debug, Deserialize)]
struct Version {
    version: String,
}
#[derive(Debug, Deserialize)]
struct Sidecar {
    blob: Bytes,
    kzg_commitment: Bytes,
}

/// The API writes integers as decimal strings.
fn decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| serde::de::Error::custom(format!("`{s}` is not a decimal integer")))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const PARENT: B256 = B256::repeat_byte(0xaa);
    const OTHER: B256 = B256::repeat_byte(0xbb);

    fn header(slot: u64, parent_root: B256, canonical: bool) -> HeaderItem {
        HeaderItem { canonical, header: SignedHeader { message: HeaderMessage { slot, parent_root } } }
    }

    #[test]
    fn versioned_hashes_match_the_shared_codec() {
        let sc = lcw_schema::blob::sidecar(&[b"a prompt".as_slice()]).unwrap();
        let expected = lcw_schema::blob::versioned_hashes(&sc)[0];
        assert_eq!(versioned_hash(sc.commitments[0].as_slice()), expected);
    }

    #[test]
    fn the_sidecar_whose_commitment_hashes_to_the_versioned_hash_matches() {
        let sc = lcw_schema::blob::sidecar(&[b"first".as_slice(), b"second".as_slice()]).unwrap();
        let hashes = lcw_schema::blob::versioned_hashes(&sc);
        let sidecars = || {
            sc.blobs
                .iter()
                .zip(&sc.commitments)
                .map(|(b, c)| Sidecar { blob: Bytes::copy_from_slice(b.as_slice()), kzg_commitment: c.to_vec().into() })
                .collect::<Vec<_>>()
        };
        let found = matching_sidecar(sidecars(), hashes[1]).expect("second sidecar");
        assert_eq!(lcw_schema::blob::decode(&found.blob).unwrap(), b"second");
        assert!(matching_sidecar(sidecars(), B256::repeat_byte(1)).is_none());
    }

    #[test]
    fn the_filter_answer_names_the_child_after_missed_slots() {
        assert_eq!(child_in(&[header(43, PARENT, true)], PARENT), Some(43));
        assert_eq!(child_in(&[], PARENT), None);
    }

    #[test]
    fn a_filter_answer_of_other_parents_is_no_answer() {
        // What a node that ignores `parent_root` answers: the head's header.
        assert_eq!(child_in(&[header(90, OTHER, true)], PARENT), None);
    }

    #[test]
    fn the_canonical_child_is_preferred_over_a_fork() {
        let headers = [header(43, OTHER, true), header(42, PARENT, false), header(44, PARENT, true)];
        assert_eq!(child_in(&headers, PARENT), Some(44));
        assert_eq!(child_in(&headers[..2], PARENT), Some(42));
    }

    #[test]
    fn the_walk_passes_missed_slots_and_blocks_of_other_parents() {
        assert_eq!(walk(40, PARENT, 41, None), Walk::Next(42));
        assert_eq!(walk(40, PARENT, 42, Some(Seen { slot: 42, parent_root: OTHER })), Walk::Next(43));
        assert_eq!(walk(40, PARENT, 43, Some(Seen { slot: 43, parent_root: PARENT })), Walk::Found(43));
    }

    #[test]
    fn the_walk_ends_32_slots_after_the_parent() {
        assert_eq!(walk(40, PARENT, 71, None), Walk::Next(72));
        assert_eq!(walk(40, PARENT, 72, None), Walk::Exhausted);
        // The last slot still counts.
        assert_eq!(walk(40, PARENT, 72, Some(Seen { slot: 72, parent_root: PARENT })), Walk::Found(72));
    }

    #[test]
    fn backoff_doubles_from_100_ms() {
        let waits: Vec<Duration> = (0..TRIES).map(backoff).collect();
        assert_eq!(waits, [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]);
    }

    #[test]
    fn only_unanswered_requests_and_busy_servers_are_retried() {
        let status = |s: StatusCode| BlobError::Status { request: "/x".into(), node: "n".into(), status: s };
        assert!(status(StatusCode::SERVICE_UNAVAILABLE).is_transient());
        assert!(status(StatusCode::TOO_MANY_REQUESTS).is_transient());
        assert!(!status(StatusCode::BAD_REQUEST).is_transient());
        let rpc = |transient| BlobError::Rpc { call: "eth_getBlockByNumber".into(), reason: "r".into(), transient };
        assert!(rpc(true).is_transient());
        assert!(!rpc(false).is_transient());
        assert!(!BlobError::NotFound { hash: PARENT, where_: "w".into() }.is_transient());
    }

    #[tokio::test]
    async fn a_request_is_tried_three_times_then_its_error_returned() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let outcome: Result<(), BlobError> = retried(|| async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err(BlobError::Status { request: "/x".into(), node: "n".into(), status: StatusCode::BAD_GATEWAY })
        })
        .await;
        assert!(matches!(outcome, Err(BlobError::Status { status: StatusCode::BAD_GATEWAY, .. })));
        assert_eq!(tries.load(Ordering::Relaxed), TRIES);
        assert!(started.elapsed() >= Duration::from_millis(300), "waited 100 ms, then 200 ms");
        // A definite answer is not retried.
        let tries = AtomicU32::new(0);
        let _ = retried(|| async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(BlobError::NotBeacon { node: "n".into() })
        })
        .await;
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn headers_of_the_beacon_api_parse_with_decimal_string_slots() {
        let json = format!(
            r#"{{"execution_optimistic":false,"finalized":true,"data":[{{"root":"{OTHER}","canonical":true,
            "header":{{"message":{{"slot":"4002","proposer_index":"7","parent_root":"{PARENT}",
            "state_root":"{OTHER}","body_root":"{OTHER}"}},"signature":"0x00"}}}}]}}"#
        );
        let parsed: Data<Vec<HeaderItem>> = serde_json::from_str(&json).unwrap();
        assert_eq!(child_in(&parsed.data, PARENT), Some(4002));
        let numeric = json.replace(r#""slot":"4002""#, r#""slot":4002"#);
        assert!(serde_json::from_str::<Data<Vec<HeaderItem>>>(&numeric).is_err());
    }

    #[test]
    fn the_deadline_error_says_how_far_the_search_got() {
        let mut p = Progress { from_block: 120, ..Progress::default() };
        assert_eq!(p.to_string(), "execution block 120 was not read yet");
        let anvil = Progress { last_request: Some("anvil_getBlobByHash".into()), ..p.clone() };
        assert_eq!(anvil.to_string(), "no answer to anvil_getBlobByHash yet");
        p.lowest_read = Some(64);
        assert_eq!(p.to_string(), "read execution blocks 120 down to 64 without finding it");
        p.carrier = Some(117);
        p.parent_slot = Some(4000);
        p.last_request = Some("/eth/v1/beacon/headers/4013".into());
        let e = BlobError::Deadline { hash: PARENT, searched: Duration::from_millis(2_040), progress: Box::new(p) };
        assert_eq!(
            e.to_string(),
            format!(
                "blob {PARENT} not fetched: gave up after 2.0s at the deadline; the blob is in execution block 117 \
                 (parent beacon block at slot 4000); last beacon request GET /eth/v1/beacon/headers/4013; the blob \
                 source answers too slowly"
            )
        );
    }
}
