//! A hostile JSON-RPC relay for tests: forwards every request to a real node and rewrites chosen
//! answers as a broken cache or a malicious provider would: `eth_getLogs` answers with a log
//! outside the requested range, of an address or event nobody asked for, repeated, out of order,
//! or with another block hash than its block's other logs; answers cut short, carrying a pending log, or
//! padded far past any real block's size; headers of the next block, or with a forged parent.
//! With no lie it relays honestly and counts what it served. Listens on 127.0.0.1 only.
//!
//! Which answers: every `every`-th one that a lie of the [`Plan`] applies to (an answer with a
//! block of two logs for [`Lie::ConflictingHash`], a single block for [`Lie::Oversized`], ...),
//! at most `at_most` in all. The lies take turns: each answer gets the first lie that applies to
//! it, starting after the one used last.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One way to lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// A copy of a log moved five blocks past the requested range.
    OutOfRange,
    /// A log's address replaced by [`FOREIGN`].
    ForeignAddress,
    /// A log of another event added to an answer filtered by event.
    ForeignTopic,
    /// A log repeated right after itself.
    Duplicate,
    /// The first two logs swapped.
    Unordered,
    /// The second log of a block given another block hash.
    ConflictingHash,
    /// The answer cut in half.
    Truncated,
    /// A log without its block hash (a pending log).
    Pending,
    /// A single block's answer padded with this many bytes of whitespace (valid JSON: only its
    /// size is wrong), streamed without a length.
    Oversized(usize),
    /// For block `n`, the header of block `n + 1`.
    NextHeader,
    /// A header whose parent hash is forged.
    ForgedParent,
}

/// The address [`Lie::ForeignAddress`] puts in.
pub const FOREIGN: &str = "0x00000000000000000000000000000000deadbeef";

/// Which answers to rewrite, and how.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The lies, taking turns.
    pub lies: Vec<Lie>,
    /// Rewrite every `every`-th answer a lie applies to (1: all of them).
    pub every: u64,
    /// Rewrite at most this many.
    pub at_most: u64,
}

impl Plan {
    /// `lie`, on every second answer it applies to, at most `at_most` times.
    pub fn of(lie: Lie, at_most: u64) -> Plan {
        Plan { lies: vec![lie], every: 2, at_most }
    }

    /// No lies at all.
    pub fn honest() -> Plan {
        Plan { lies: Vec::new(), every: 1, at_most: 0 }
    }
}

/// What the relay did.
#[derive(Debug, Default)]
pub struct LieCounts {
    /// Requests relayed.
    pub requests: AtomicU64,
    /// Answers rewritten.
    pub lies: AtomicU64,
    /// Of them, `eth_getLogs` answers over a block range.
    pub range_lies: AtomicU64,
    /// Of them, `eth_getLogs` answers for one block asked by hash.
    pub block_lies: AtomicU64,
    /// Of them, `eth_getLogs` answers filtered by event.
    pub event_lies: AtomicU64,
    /// Of them, headers.
    pub header_lies: AtomicU64,
    /// Answers a lie applied to (rewritten or not).
    seen: AtomicU64,
}

impl LieCounts {
    /// Answers rewritten.
    pub fn lies(&self) -> u64 {
        self.lies.load(Ordering::Relaxed)
    }
}

struct Inner {
    upstream: String,
    plan: Plan,
    counts: Arc<LieCounts>,
    http: reqwest::Client,
}

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct Hostile {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// What it did.
    pub counts: Arc<LieCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Starts a relay in front of `upstream` that lies as `plan` says.
    pub async fn start(upstream: &str, plan: Plan) -> Hostile {
        let counts = Arc::new(LieCounts::default());
        let inner = Arc::new(Inner {
            upstream: upstream.to_owned(),
            plan,
            counts: counts.clone(),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new().route("/", axum::routing::post(handle)).with_state(inner);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hostile { url: format!("http://{addr}"), counts, task }
    }
}

fn json(body: impl Into<Body>) -> Response {
    ([("content-type", "application/json")], body.into()).into_response()
}

fn quantity(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

fn hex(n: u64) -> Value {
    Value::String(format!("{n:#x}"))
}

async fn forward(inner: &Inner, body: Vec<u8>) -> Option<(StatusCode, Bytes)> {
    let resp =
        inner.http.post(&inner.upstream).header("content-type", "application/json").body(body).send().await.ok()?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
    Some((status, resp.bytes().await.ok()?))
}

async fn handle(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.counts.requests.fetch_add(1, Ordering::Relaxed);
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some((status, answer)) = forward(&inner, body.to_vec()).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let method = request.get("method").and_then(Value::as_str).unwrap_or_default();
    if !status.is_success() || inner.plan.lies.is_empty() || inner.counts.lies() >= inner.plan.at_most {
        return (status, json(answer)).into_response();
    }
    let Ok(mut parsed) = serde_json::from_slice::<Value>(&answer) else { return json(answer) };
    let rewritten = match method {
        "eth_getLogs" => rewrite_logs(&inner, &request, &mut parsed),
        "eth_getBlockByNumber" => rewrite_header(&inner, &request, &mut parsed).await,
        _ => None,
    };
    let Some(rewritten) = rewritten else { return json(answer) };
    inner.counts.lies.fetch_add(1, Ordering::Relaxed);
    rewritten
}

/// The lie for an answer: the first that `applies`, in turn after the one used last, when it is
/// this answer's turn (every `every`-th answer a lie applies to).
fn pick(inner: &Inner, applies: impl Fn(Lie) -> bool) -> Option<Lie> {
    let lies = &inner.plan.lies;
    let start = inner.counts.lies() as usize;
    let lie = (0..lies.len()).map(|i| lies[(start + i) % lies.len()]).find(|l| applies(*l))?;
    let seen = inner.counts.seen.fetch_add(1, Ordering::Relaxed) + 1;
    seen.is_multiple_of(inner.plan.every.max(1)).then_some(lie)
}

/// Rewrites an `eth_getLogs` answer when a lie applies and it is its turn.
fn rewrite_logs(inner: &Inner, request: &Value, answer: &mut Value) -> Option<Response> {
    let filter = request.get("params")?.get(0)?;
    let by_hash = filter.get("blockHash").is_some();
    let by_event = filter.get("topics").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
    let single = by_hash || quantity(filter.get("fromBlock")?) == quantity(filter.get("toBlock")?);
    let logs = answer.get_mut("result")?.as_array_mut()?;
    let lie = pick(inner, |lie| match lie {
        Lie::ConflictingHash => two_in_a_block(logs).is_some(),
        Lie::Unordered => logs.len() > 1,
        Lie::ForeignTopic => by_event && !logs.is_empty(),
        Lie::Oversized(_) => single,
        Lie::NextHeader | Lie::ForgedParent => false,
        _ => !logs.is_empty(),
    })?;
    let counter = if by_event {
        &inner.counts.event_lies
    } else if by_hash {
        &inner.counts.block_lies
    } else {
        &inner.counts.range_lies
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match lie {
        Lie::OutOfRange => {
            let mut moved = logs[0].clone();
            let to = quantity(filter.get("toBlock").unwrap_or(&Value::Null))
                .or_else(|| quantity(&moved["blockNumber"]))
                .unwrap_or_default();
            moved["blockNumber"] = hex(to + 5);
            moved["logIndex"] = hex(0x7fff);
            logs.push(moved);
        }
        Lie::ForeignAddress => {
            let last = logs.len() - 1;
            logs[last]["address"] = Value::String(FOREIGN.into());
        }
        Lie::ForeignTopic => {
            let mut other = logs[0].clone();
            other["topics"][0] = Value::String(format!("0x{}", "ab".repeat(32)));
            other["logIndex"] = hex(0x7ffe);
            logs.push(other);
        }
        Lie::Duplicate => {
            let copy = logs[0].clone();
            logs.insert(1, copy);
        }
        Lie::Unordered => logs.swap(0, 1),
        Lie::ConflictingHash => {
            let second = two_in_a_block(logs)?;
            logs[second]["blockHash"] = Value::String(format!("0x{}", "11".repeat(32)));
        }
        Lie::Pending => {
            logs[0].as_object_mut()?.remove("blockHash");
        }
        Lie::Truncated => {
            let text = answer.to_string();
            return Some(json(text[..text.len() / 2].to_owned()));
        }
        Lie::Oversized(bytes) => {
            let head = Bytes::from(answer.to_string());
            let chunks = bytes.div_ceil(64 << 10);
            let pad = Bytes::from(vec![b' '; 64 << 10]);
            let stream = futures::stream::iter(
                std::iter::once(head).chain(std::iter::repeat_n(pad, chunks)).map(Ok::<_, std::convert::Infallible>),
            );
            return Some(json(Body::from_stream(stream)));
        }
        Lie::NextHeader | Lie::ForgedParent => return None,
    }
    Some(json(answer.to_string()))
}

/// The index of the second log of the first block with two logs in the answer.
fn two_in_a_block(logs: &[Value]) -> Option<usize> {
    (1..logs.len()).find(|&i| logs[i]["blockNumber"] == logs[i - 1]["blockNumber"])
}

/// Rewrites an `eth_getBlockByNumber` answer for a block number (not a tag) when a lie applies
/// and it is its turn.
async fn rewrite_header(inner: &Inner, request: &Value, answer: &mut Value) -> Option<Response> {
    let number = quantity(request.get("params")?.get(0)?)?;
    if answer.get("result")?.is_null() {
        return None;
    }
    // The next block, for a lie that needs it (the head has none: nothing to lie with).
    let next = if inner.plan.lies.contains(&Lie::NextHeader) {
        let mut next_request = request.clone();
        next_request["params"][0] = hex(number + 1);
        let (_, next) = forward(inner, serde_json::to_vec(&next_request).ok()?).await?;
        serde_json::from_slice::<Value>(&next).ok()?.get("result").cloned().filter(|r| !r.is_null())
    } else {
        None
    };
    match pick(inner, |lie| match lie {
        Lie::NextHeader => next.is_some(),
        Lie::ForgedParent => true,
        _ => false,
    })? {
        Lie::NextHeader => answer["result"] = next?,
        _ => answer["result"]["parentHash"] = Value::String(format!("0x{}", "66".repeat(32))),
    }
    inner.counts.header_lies.fetch_add(1, Ordering::Relaxed);
    Some(json(answer.to_string()))
}
