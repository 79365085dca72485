//! A test beacon node: the beacon API endpoints a worker uses to find a prompt blob, answered
//! from a beacon chain the test lays out slot by slot. A slot without a block is a missed slot
//! (404 `{"code":404,"message":...}`, as beacon nodes answer); the sidecars of a block are the
//! blobs of the execution block it carries, read from anvil, with their KZG commitments and
//! proofs computed here (anvil keeps blobs, not sidecars).
//!
//! Endpoints, with the JSON shapes of the Ethereum beacon API:
//!
//! - `GET /eth/v1/beacon/headers` with the optional `slot` and `parent_root` filters
//!   (`{"data": [...]}`); what it does with `parent_root` is the test's choice
//!   ([`ParentRootFilter`]): nodes differ there;
//! - `GET /eth/v1/beacon/headers/{block_id}` (`{"data": {...}}`);
//! - `GET /eth/v1/beacon/blob_sidecars/{block_id}` with the optional `indices` filter;
//! - `GET /eth/v1/node/version`.
//!
//! Every request is checked against the API (method, path, parameter names and values, an
//! `Accept` that allows JSON, no body) and recorded with its status; one that breaks it is
//! answered 400 and carries a [`Request::protocol_error`], which tests assert never happens.
//! Listens on 127.0.0.1 only; stops when dropped.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::consensus::Transaction as _;
use alloy::eips::eip4844::env_settings::EnvKzgSettings;
use alloy::eips::eip4844::{BYTES_PER_BLOB, Blob, BlobTransactionSidecar};
use alloy::primitives::{B256, Bytes, keccak256};
use alloy::providers::{DynProvider, Provider};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One beacon block of the laid-out chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconBlock {
    /// Its slot.
    pub slot: u64,
    /// Its root.
    pub root: B256,
    /// Its parent's root.
    pub parent_root: B256,
    /// The execution block it carries: the slot's sidecars are that block's blobs.
    pub execution_block: Option<u64>,
}

/// What the node does with `GET /eth/v1/beacon/headers?parent_root=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentRootFilter {
    /// Answers the blocks whose parent is that root, as the beacon API documents.
    Supported,
    /// Refuses the parameter with 400, as nodes without the filter do.
    Rejected,
    /// Ignores the parameter and answers the head's header, as a node that does not know it may.
    Ignored,
    /// Accepts the parameter but answers no header, whatever the root.
    Empty,
}

/// A request the node received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The status it was answered with; None while unanswered (or if the client went away).
    pub status: Option<u16>,
    /// How the request broke the beacon API, if it did.
    pub protocol_error: Option<String>,
}

impl Request {
    /// Path and query, as the client sent them.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// The version string `/eth/v1/node/version` answers.
pub const VERSION: &str = "lcw-test-beacon/0.1.0";

/// A running test beacon node; stops when dropped.
#[derive(Debug)]
pub struct TestBeacon {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBeacon {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Shared {
    el: DynProvider,
    blocks: Mutex<BTreeMap<u64, BeaconBlock>>,
    filter: Mutex<ParentRootFilter>,
    delay: Mutex<Duration>,
    requests: Mutex<Vec<Request>>,
    /// Sidecars by execution block: computing KZG proofs takes a while.
    sidecars: tokio::sync::Mutex<HashMap<u64, Arc<BlobTransactionSidecar>>>,
}

impl TestBeacon {
    /// Starts a node with an empty chain whose sidecars come from the execution node `el`
    /// (anvil: blobs are read with `anvil_getBlobByHash`).
    pub async fn start(el: DynProvider) -> TestBeacon {
        let shared = Arc::new(Shared {
            el,
            blocks: Mutex::new(BTreeMap::new()),
            filter: Mutex::new(ParentRootFilter::Supported),
            delay: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            sidecars: tokio::sync::Mutex::new(HashMap::new()),
        });
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test beacon");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestBeacon { url: format!("http://{addr}"), shared, task }
    }

    /// Adds (or replaces) the block at `block.slot`.
    pub fn add_block(&self, block: BeaconBlock) {
        self.shared.blocks.lock().expect("blocks").insert(block.slot, block);
    }

    /// Sets what the node does with the `parent_root` filter.
    pub fn set_parent_root_filter(&self, filter: ParentRootFilter) {
        *self.shared.filter.lock().expect("filter") = filter;
    }

    /// Every answer waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().expect("delay") = delay;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// The targets (path and query) of every request so far.
    pub fn targets(&self) -> Vec<String> {
        self.requests().iter().map(Request::target).collect()
    }

    /// The requests that broke the beacon API.
    pub fn protocol_errors(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.protocol_error.is_some()).collect()
    }
}

/// A block named by the API's `block_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockId {
    Head,
    Genesis,
    Finalized,
    Justified,
    Slot(u64),
    Root(B256),
}

/// What a valid request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Headers { slot: Option<u64>, parent_root: Option<B256> },
    Header(BlockId),
    BlobSidecars { id: BlockId, indices: Option<Vec<u64>> },
    Version,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let index = {
        let mut requests = shared.requests.lock().expect("requests");
        requests.push(Request {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            status: None,
            protocol_error: None,
        });
        requests.len() - 1
    };
    let delay = *shared.delay.lock().expect("delay");
    tokio::time::sleep(delay).await;
    let (status, answer, protocol_error) = match route(&method, &uri, &headers, &body) {
        Ok(route) => match answer(&shared, route).await {
            Ok((status, answer)) => (status, answer, None),
            // The node itself failed (anvil, KZG): the test must fail, so it counts as an error.
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, error_body(500, &e), Some(format!("test beacon: {e}"))),
        },
        Err(e) => (StatusCode::BAD_REQUEST, error_body(400, &e), Some(e)),
    };
    {
        let mut requests = shared.requests.lock().expect("requests");
        requests[index].status = Some(status.as_u16());
        requests[index].protocol_error = protocol_error;
    }
    (status, [(header::CONTENT_TYPE, "application/json")], answer.to_string()).into_response()
}

fn error_body(code: u16, message: &str) -> Value {
    json!({ "code": code, "message": message })
}

/// Checks a request against the beacon API and says what it asks for, or how it breaks the API.
fn route(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Route, String> {
    if method != Method::GET {
        return Err(format!("{method} {}: the beacon API reads with GET", uri.path()));
    }
    if !body.is_empty() {
        return Err(format!("GET {} with a {}-byte body", uri.path(), body.len()));
    }
    if let Some(accept) = headers.get(header::ACCEPT) {
        let accept = accept.to_str().map_err(|_| "Accept is not text".to_owned())?;
        let json = accept
            .split(',')
            .map(|t| t.split(';').next().unwrap_or("").trim())
            .any(|t| matches!(t, "application/json" | "application/*" | "*/*"));
        if !json {
            return Err(format!("Accept: {accept} does not allow JSON, the only type this node answers"));
        }
    }
    let params = match uri.query() {
        None => Vec::new(),
        Some(_) => Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|e| format!("query of {uri}: {e}"))?.0,
    };
    let segments: Vec<&str> = uri.path().split('/').collect();
    match segments[..] {
        ["", "eth", "v1", "beacon", "headers"] => {
            let mut slot = None;
            let mut parent_root = None;
            for (name, value) in &params {
                match name.as_str() {
                    "slot" if slot.is_none() => slot = Some(decimal(value).ok_or(format!("slot={value}"))?),
                    "parent_root" if parent_root.is_none() => {
                        parent_root = Some(root(value).ok_or(format!("parent_root={value} is not a 0x root"))?)
                    }
                    _ => return Err(format!("headers: unknown or repeated parameter `{name}`")),
                }
            }
            Ok(Route::Headers { slot, parent_root })
        }
        ["", "eth", "v1", "beacon", "headers", id] => {
            no_params(uri, &params)?;
            Ok(Route::Header(block_id(id)?))
        }
        ["", "eth", "v1", "beacon", "blob_sidecars", id] => {
            let mut indices: Option<Vec<u64>> = None;
            for (name, value) in &params {
                if name != "indices" {
                    return Err(format!("blob_sidecars: unknown parameter `{name}`"));
                }
                let index = decimal(value).ok_or(format!("indices={value}"))?;
                indices.get_or_insert_with(Vec::new).push(index);
            }
            Ok(Route::BlobSidecars { id: block_id(id)?, indices })
        }
        ["", "eth", "v1", "node", "version"] => {
            no_params(uri, &params)?;
            Ok(Route::Version)
        }
        _ => Err(format!("GET {}: not an endpoint of this node", uri.path())),
    }
}

fn no_params(uri: &Uri, params: &[(String, String)]) -> Result<(), String> {
    match params.first() {
        None => Ok(()),
        Some((name, _)) => Err(format!("{}: takes no parameter, got `{name}`", uri.path())),
    }
}

/// A decimal u64 as the API writes it (digits only: no sign, no hex).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A 0x-prefixed 32-byte hex root.
fn root(s: &str) -> Option<B256> {
    let hex = s.strip_prefix("0x")?;
    (hex.len() == 64).then(|| hex.parse().ok()).flatten()
}

fn block_id(id: &str) -> Result<BlockId, String> {
    match id {
        "head" => Ok(BlockId::Head),
        "genesis" => Ok(BlockId::Genesis),
        "finalized" => Ok(BlockId::Finalized),
        "justified" => Ok(BlockId::Justified),
        _ if id.starts_with("0x") => root(id).map(BlockId::Root).ok_or(format!("block id {id} is not a 0x root")),
        _ => decimal(id).map(BlockId::Slot).ok_or(format!("block id {id} is not a slot, root or tag")),
    }
}

fn resolve(blocks: &BTreeMap<u64, BeaconBlock>, id: BlockId) -> Option<BeaconBlock> {
    match id {
        // The laid-out chain is all final: head, justified and finalized are its last block.
        BlockId::Head | BlockId::Finalized | BlockId::Justified => blocks.values().next_back().cloned(),
        BlockId::Genesis => blocks.get(&0).cloned(),
        BlockId::Slot(slot) => blocks.get(&slot).cloned(),
        BlockId::Root(root) => blocks.values().find(|b| b.root == root).cloned(),
    }
}

fn not_found(id: BlockId) -> (StatusCode, Value) {
    let message = match id {
        BlockId::Slot(slot) => format!("No block found at slot {slot}"),
        BlockId::Root(root) => format!("No block found for root {root}"),
        other => format!("No block found for {other:?}"),
    };
    (StatusCode::NOT_FOUND, error_body(404, &message))
}

/// The derived roots a header carries besides its own and its parent's.
fn derived(root: B256, what: &str) -> B256 {
    keccak256([root.as_slice(), what.as_bytes()].concat())
}

fn header_message(b: &BeaconBlock) -> Value {
    json!({
        "slot": b.slot.to_string(),
        "proposer_index": (b.slot % 64).to_string(),
        "parent_root": b.parent_root,
        "state_root": derived(b.root, "state"),
        "body_root": derived(b.root, "body"),
    })
}

fn signature() -> String {
    format!("0x{}", "00".repeat(96))
}

fn header_item(b: &BeaconBlock) -> Value {
    json!({
        "root": b.root,
        "canonical": true,
        "header": { "message": header_message(b), "signature": signature() },
    })
}

fn envelope(data: Value) -> Value {
    json!({ "execution_optimistic": false, "finalized": true, "data": data })
}

async fn answer(shared: &Shared, route: Route) -> Result<(StatusCode, Value), String> {
    let blocks = shared.blocks.lock().expect("blocks").clone();
    match route {
        Route::Version => Ok((StatusCode::OK, json!({ "data": { "version": VERSION } }))),
        Route::Headers { slot, parent_root } => {
            let filter = *shared.filter.lock().expect("filter");
            let parent_root = match (parent_root, filter) {
                (Some(_), ParentRootFilter::Rejected) => {
                    let e = error_body(400, "Invalid query parameter: parent_root is not supported");
                    return Ok((StatusCode::BAD_REQUEST, e));
                }
                (Some(_), ParentRootFilter::Ignored) => None,
                (Some(_), ParentRootFilter::Empty) => return Ok((StatusCode::OK, envelope(json!([])))),
                (p, _) => p,
            };
            let found: Vec<Value> = match (slot, parent_root) {
                // Without a filter the API answers the head slot's blocks.
                (None, None) => blocks.values().next_back().map(header_item).into_iter().collect(),
                (slot, parent) => blocks
                    .values()
                    .filter(|b| slot.is_none_or(|s| b.slot == s) && parent.is_none_or(|p| b.parent_root == p))
                    .map(header_item)
                    .collect(),
            };
            Ok((StatusCode::OK, envelope(Value::Array(found))))
        }
        Route::Header(id) => Ok(match resolve(&blocks, id) {
            Some(b) => (StatusCode::OK, envelope(header_item(&b))),
            None => not_found(id),
        }),
        Route::BlobSidecars { id, indices } => {
            let Some(b) = resolve(&blocks, id) else { return Ok(not_found(id)) };
            let Some(number) = b.execution_block else {
                return Ok((StatusCode::OK, envelope(json!([]))));
            };
            let sidecar = sidecar_of(shared, number).await?;
            let items: Vec<Value> = (0..sidecar.blobs.len())
                .filter(|i| indices.as_ref().is_none_or(|wanted| wanted.contains(&(*i as u64))))
                .map(|i| {
                    json!({
                        "index": i.to_string(),
                        "blob": Bytes::copy_from_slice(sidecar.blobs[i].as_slice()),
                        "kzg_commitment": Bytes::copy_from_slice(sidecar.commitments[i].as_slice()),
                        "kzg_proof": Bytes::copy_from_slice(sidecar.proofs[i].as_slice()),
                        "signed_block_header": { "message": header_message(&b), "signature": signature() },
                        "kzg_commitment_inclusion_proof": vec![derived(b.root, "inclusion"); 17],
                    })
                })
                .collect();
            Ok((
                StatusCode::OK,
                json!({ "version": "deneb", "execution_optimistic": false, "finalized": true,
                "data": items }),
            ))
        }
    }
}

/// The sidecar of execution block `number`: its blob transactions' blobs, in order, read from
/// anvil, with their commitments and proofs. The versioned hashes must come out as the
/// transactions name them, or the node would serve something the chain does not say.
async fn sidecar_of(shared: &Shared, number: u64) -> Result<Arc<BlobTransactionSidecar>, String> {
    let mut cache = shared.sidecars.lock().await;
    if let Some(s) = cache.get(&number) {
        return Ok(s.clone());
    }
    let block = shared
        .el
        .get_block_by_number(number.into())
        .full()
        .await
        .map_err(|e| format!("eth_getBlockByNumber({number}): {e}"))?
        .ok_or(format!("anvil has no block {number}"))?;
    let hashes: Vec<B256> =
        block.transactions.txns().flat_map(|tx| tx.blob_versioned_hashes().unwrap_or_default().to_vec()).collect();
    let mut blobs = Vec::with_capacity(hashes.len());
    for hash in &hashes {
        let bytes: Option<Bytes> = shared
            .el
            .raw_request("anvil_getBlobByHash".into(), (hash,))
            .await
            .map_err(|e| format!("anvil_getBlobByHash({hash}): {e}"))?;
        let bytes = bytes.ok_or(format!("anvil has no blob {hash} of block {number}"))?;
        if bytes.len() != BYTES_PER_BLOB {
            return Err(format!("anvil's blob {hash} is {} bytes", bytes.len()));
        }
        blobs.push(Blob::from_slice(&bytes));
    }
    let sidecar = tokio::task::spawn_blocking(move || kzg_sidecar(blobs)).await.map_err(|e| e.to_string())??;
    let computed = lcw_schema::blob::versioned_hashes(&sidecar);
    if computed != hashes {
        return Err(format!("block {number}: blobs hash to {computed:?}, its transactions name {hashes:?}"));
    }
    let sidecar = Arc::new(sidecar);
    cache.insert(number, sidecar.clone());
    Ok(sidecar)
}

/// Commitments and proofs for `blobs`, on a thread with the stack c-kzg needs.
fn kzg_sidecar(blobs: Vec<Blob>) -> Result<BlobTransactionSidecar, String> {
    std::thread::Builder::new()
        .name("test-beacon-kzg".into())
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            BlobTransactionSidecar::try_from_blobs_with_settings(blobs, EnvKzgSettings::Default.get())
                .map_err(|e| format!("kzg: {e}"))
        })
        .map_err(|e| format!("cannot start the kzg thread: {e}"))?
        .join()
        .map_err(|_| "the kzg thread panicked".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str) -> Result<Route, String> {
        let uri: Uri = target.parse().unwrap();
        route(&Method::GET, &uri, &HeaderMap::new(), &[])
    }

    #[test]
    fn requests_of_the_beacon_api_are_routed() {
        let r = format!("0x{}", "ab".repeat(32));
        let root_value = B256::repeat_byte(0xab);
        assert_eq!(
            get(&format!("/eth/v1/beacon/headers?parent_root={r}")).unwrap(),
            Route::Headers { slot: None, parent_root: Some(root_value) }
        );
        assert_eq!(get("/eth/v1/beacon/headers/41").unwrap(), Route::Header(BlockId::Slot(41)));
        assert_eq!(get(&format!("/eth/v1/beacon/headers/{r}")).unwrap(), Route::Header(BlockId::Root(root_value)));
        assert_eq!(
            get("/eth/v1/beacon/blob_sidecars/43?indices=1&indices=0").unwrap(),
            Route::BlobSidecars { id: BlockId::Slot(43), indices: Some(vec![1, 0]) }
        );
        assert_eq!(get("/eth/v1/node/version").unwrap(), Route::Version);
    }

    #[test]
    fn requests_that_break_the_beacon_api_are_refused() {
        for bad in [
            "/eth/v1/beacon/headers?parent=0x00",
            "/eth/v1/beacon/headers?parent_root=0x1234",
            "/eth/v1/beacon/headers?slot=0x10",
            "/eth/v1/beacon/headers?slot=1&slot=2",
            "/eth/v1/beacon/headers/+5",
            "/eth/v1/beacon/headers/41?x=1",
            "/eth/v1/beacon/blob_sidecars/43?index=0",
            "/eth/v1/beacon/blob_sidecars/latest",
            "/eth/v2/beacon/headers/41",
            "/eth/v1/beacon/blocks/41",
        ] {
            assert!(get(bad).is_err(), "{bad} is accepted");
        }
        let uri: Uri = "/eth/v1/beacon/headers/41".parse().unwrap();
        assert!(route(&Method::POST, &uri, &HeaderMap::new(), &[]).is_err());
        let mut ssz = HeaderMap::new();
        ssz.insert(header::ACCEPT, "application/octet-stream".parse().unwrap());
        assert!(route(&Method::GET, &uri, &ssz, &[]).is_err());
    }
}
