//! The store's single writer: a dedicated thread that owns the write connection and commits
//! segments, one transaction each (backfill segments are coalesced up to a log budget), with the
//! cursor moved in the same transaction. It also unwinds reorgs. Async callers talk to it
//! through a channel; nothing else writes the store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use alloy::primitives::B256;
use lcw_schema::store::raw::{BlockRow, Cursor, RangeRow, RawLog};
use lcw_schema::store::{Identity, Store, StoreResult, ledger, raw, undo};
use tokio::sync::{mpsc, oneshot};

use crate::apply::Meta;
use crate::cache::Projector;
use crate::decode::Decoder;
use crate::segment::Segment;
use crate::{IndexerError, IndexerResult};

/// Logs per backfill transaction: large enough to amortise commits, small enough to bound memory.
const COMMIT_LOGS: usize = 15_000;

/// What a commit did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    /// New cursor block.
    pub block: u64,
    /// Logs written.
    pub logs: u64,
    /// Undecodable logs among them.
    pub undecodable: u64,
    /// Events that could not be attributed to a known job or session.
    pub unattributed: u64,
}

enum Cmd {
    Backfill(Segment),
    Block { segment: Segment, finalized: u64, reply: oneshot::Sender<StoreResult<Committed>> },
    Flush(oneshot::Sender<StoreResult<Committed>>),
    Unwind { to: u64, reply: oneshot::Sender<StoreResult<u64>> },
}

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
    /// Set by the writer when a commit failed; later commands are refused with it.
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// Commit notifications: the block of every commit.
pub type Commits = tokio::sync::watch::Sender<Committed>;

impl Writer {
    /// Opens the store (checking its identity) and starts the writer thread.
    pub fn start(path: PathBuf, identity: Identity, commits: Commits) -> IndexerResult<(Writer, Option<Cursor>)> {
        let store = Store::open(&path, &identity)?;
        let cursor = Cursor::get(store.conn())?;
        let decoder = Decoder::new(identity.contracts);
        let (tx, rx) = mpsc::channel::<Cmd>(2);
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = failure.clone();
        std::thread::Builder::new()
            .name("lcw-store-writer".into())
            .spawn(move || writer_loop(store, decoder, rx, commits, slot))
            .map_err(|e| IndexerError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok((Writer { tx, failure }, cursor))
    }

    /// Queues a backfill segment (final blocks). Segments must arrive in block order.
    pub async fn backfill(&self, segment: Segment) -> IndexerResult<()> {
        if let Some(e) = self.failure.lock().ok().and_then(|g| g.clone()) {
            return Err(IndexerError::Commit(e));
        }
        self.tx.send(Cmd::Backfill(segment)).await.map_err(|_| IndexerError::WriterGone)
    }

    /// Commits everything queued.
    pub async fn flush(&self) -> IndexerResult<Committed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Flush(reply)).await.map_err(|_| IndexerError::WriterGone)?;
        Ok(rx.await.map_err(|_| IndexerError::WriterGone)??)
    }

    /// Commits one block followed live (with undo images when it is above `finalized`).
    pub async fn block(&self, segment: Segment, finalized: u64) -> IndexerResult<Committed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Block { segment, finalized, reply }).await.map_err(|_| IndexerError::WriterGone)?;
        Ok(rx.await.map_err(|_| IndexerError::WriterGone)??)
    }

    /// Unwinds raw logs and projections to block `to` (one transaction).
    pub async fn unwind(&self, to: u64) -> IndexerResult<u64> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Unwind { to, reply }).await.map_err(|_| IndexerError::WriterGone)?;
        Ok(rx.await.map_err(|_| IndexerError::WriterGone)??)
    }
}

fn writer_loop(
    mut store: Store,
    decoder: Decoder,
    mut rx: mpsc::Receiver<Cmd>,
    commits: Commits,
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
) {
    let mut pending: Vec<Segment> = Vec::new();
    let mut pending_logs = 0usize;
    let mut cache = crate::cache::JobCache::default();
    let mut failed: Option<lcw_schema::store::StoreError> = None;
    let mut last = Committed::default();
    let commit_pending = |store: &mut Store,
                          cache: &mut crate::cache::JobCache,
                          pending: &mut Vec<Segment>,
                          failed: &mut Option<_>,
                          last: &mut Committed| {
        if pending.is_empty() || failed.is_some() {
            return;
        }
        let started = Instant::now();
        match commit(store, cache, &decoder, pending, None, "backfill") {
            Ok(c) => {
                tracing::debug!(block = c.block, logs = c.logs, ms = started.elapsed().as_millis() as u64, "committed");
                *last = c;
                let _ = commits.send(c);
            }
            Err(e) => {
                cache.clear();
                tracing::error!(error = %e, "commit failed; nothing after the last committed block was written");
                if let Ok(mut g) = failure.lock() {
                    *g = Some(e.to_string());
                }
                *failed = Some(e);
            }
        }
        pending.clear();
    };
    loop {
        let cmd = match rx.try_recv() {
            Ok(cmd) => cmd,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing queued right now: commit what we have instead of waiting.
                commit_pending(&mut store, &mut cache, &mut pending, &mut failed, &mut last);
                pending_logs = 0;
                match rx.blocking_recv() {
                    Some(cmd) => cmd,
                    None => return,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                commit_pending(&mut store, &mut cache, &mut pending, &mut failed, &mut last);
                return;
            }
        };
        match cmd {
            Cmd::Backfill(segment) => {
                pending_logs += segment.logs.len();
                pending.push(segment);
                if pending_logs >= COMMIT_LOGS {
                    commit_pending(&mut store, &mut cache, &mut pending, &mut failed, &mut last);
                    pending_logs = 0;
                }
            }
            Cmd::Flush(reply) => {
                commit_pending(&mut store, &mut cache, &mut pending, &mut failed, &mut last);
                pending_logs = 0;
                let _ = reply.send(match &failed {
                    Some(e) => Err(earlier(e)),
                    None => Ok(last),
                });
            }
            Cmd::Block { segment, finalized, reply } => {
                commit_pending(&mut store, &mut cache, &mut pending, &mut failed, &mut last);
                pending_logs = 0;
                let result = match &failed {
                    Some(e) => Err(earlier(e)),
                    None => commit(
                        &mut store,
                        &mut cache,
                        &decoder,
                        std::slice::from_ref(&segment),
                        Some(finalized),
                        "live",
                    ),
                };
                if result.is_err() {
                    cache.clear();
                }
                if let Ok(c) = &result {
                    last = *c;
                    let _ = commits.send(*c);
                }
                let _ = reply.send(result);
            }
            Cmd::Unwind { to, reply } => {
                commit_pending(&mut store, &mut cache, &mut pending, &mut failed, &mut last);
                pending_logs = 0;
                cache.clear();
                let result = unwind(&mut store, to);
                if result.is_ok() {
                    last.block = to;
                    let _ = commits.send(last);
                }
                let _ = reply.send(result);
            }
        }
    }
}

fn earlier(e: &lcw_schema::store::StoreError) -> lcw_schema::store::StoreError {
    lcw_schema::store::StoreError::Corrupt { what: "an earlier commit".into(), value: e.to_string() }
}

/// Commits segments in one transaction. `live_finalized` is Some for a block followed live:
/// it then records undo images unless the block is already final, merges live ranges, and prunes
/// undo entries at or below the finalized block.
fn commit(
    store: &mut Store,
    cache: &mut crate::cache::JobCache,
    decoder: &Decoder,
    segments: &[Segment],
    live_finalized: Option<u64>,
    source: &str,
) -> StoreResult<Committed> {
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else { return Ok(Committed::default()) };
    let tx = store.begin()?;
    for s in segments {
        for (hash, block, value) in &s.tx_values {
            raw::put_tx_value(&tx, hash, *block, value)?;
        }
    }
    let undo_block = live_finalized.filter(|f| last.to > *f).map(|_| last.to);
    let mut projector = Projector::with_cache(&tx, undo_block.is_some(), cache)?;
    let mut inserter = lcw_schema::store::raw::LogInserter::new(&tx)?;
    let mut blocks: BTreeMap<u64, (B256, u64, u64)> = BTreeMap::new();
    let mut stats = Committed { block: last.to, ..Default::default() };
    for s in segments {
        for log in &s.logs {
            let (block_number, block_hash, log_index) = (log.block_number, log.block_hash, log.log_index);
            let timestamp = s.time_of(log);
            let decoded = decoder.decode(&log.log);
            inserter.insert(RawLog {
                block_number,
                log_index,
                block_hash,
                block_timestamp: timestamp,
                tx_hash: log.tx_hash,
                tx_index: log.tx_index,
                address: log.log.address,
                topics: log.log.topics().to_vec(),
                data: log.log.data.data.clone(),
                event: decoded.name.map(str::to_owned),
                decode_error: decoded.event.as_ref().err().cloned(),
                job_id: decoded.job_id,
            })?;
            blocks.entry(block_number).or_insert((block_hash, timestamp, 0)).2 += 1;
            stats.logs += 1;
            match &decoded.event {
                Ok(event) => {
                    projector.count_event(decoded.name.unwrap_or("(unknown)"))?;
                    let meta = Meta { block: block_number, log_index, timestamp, tx_hash: log.tx_hash };
                    projector.apply(event, &meta)?;
                }
                Err(reason) => {
                    stats.undecodable += 1;
                    projector.count_event("(undecodable)")?;
                    tracing::warn!(block = block_number, log_index, %reason, "undecodable log kept raw");
                }
            }
        }
    }
    inserter.finish()?;
    stats.unattributed = projector.unattributed;
    projector.flush(undo_block)?;
    for (number, (hash, timestamp, count)) in &blocks {
        let parent = if *number == last.to { last.to_parent } else { None };
        BlockRow { number: *number, hash: *hash, parent_hash: parent, timestamp: *timestamp, log_count: *count }
            .put(&tx)?;
    }
    if !blocks.contains_key(&last.to) {
        BlockRow {
            number: last.to,
            hash: last.to_hash,
            parent_hash: last.to_parent,
            timestamp: last.to_timestamp,
            log_count: 0,
        }
        .put(&tx)?;
    }
    let log_count = stats.logs;
    if source == "live" {
        RangeRow::extend_live(&tx, first.from, last.to, log_count)?;
    } else {
        RangeRow { from_block: first.from, to_block: last.to, log_count, source: source.into() }.insert(&tx)?;
    }
    let finalized = live_finalized.unwrap_or(last.to);
    Cursor { block_number: last.to, block_hash: last.to_hash, finalized_number: finalized }.set(&tx)?;
    // The undo floor: blocks at or below it have no before-images and cannot be unwound.
    let floor = undo_floor(&tx)?;
    let new_floor = if undo_block.is_some() { floor.max(finalized.min(last.to)) } else { last.to };
    if new_floor != floor {
        lcw_schema::store::meta_set(&tx, UNDO_FLOOR, &new_floor.to_string())?;
    }
    undo::prune(&tx, new_floor)?;
    tx.commit()?;
    Ok(stats)
}

/// `meta` key of the undo floor.
pub const UNDO_FLOOR: &str = "undo_floor";

/// The highest block applied without undo images (0 for a new store).
pub fn undo_floor(conn: &rusqlite::Connection) -> StoreResult<u64> {
    Ok(lcw_schema::store::meta_get(conn, UNDO_FLOOR)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Unwinds everything above `to` in one transaction; returns the number of rows restored.
fn unwind(store: &mut Store, to: u64) -> StoreResult<u64> {
    let tx = store.begin()?;
    let floor = undo_floor(&tx)?;
    if to < floor {
        return Err(lcw_schema::store::StoreError::Corrupt {
            what: "unwind target".into(),
            value: format!("block {to} is below the undo floor {floor}"),
        });
    }
    let hash = BlockRow::get(&tx, to)?.map(|b| b.hash).ok_or_else(|| lcw_schema::store::StoreError::Corrupt {
        what: "unwind target".into(),
        value: format!("block {to} is not in the store"),
    })?;
    let finalized = Cursor::get(&tx)?.map(|c| c.finalized_number.min(to)).unwrap_or(to);
    let restored = undo::unwind_above(&tx, to)?;
    RawLog::delete_above(&tx, to)?;
    BlockRow::delete_above(&tx, to)?;
    RangeRow::truncate_above(&tx, to)?;
    ledger::delete_above(&tx, to)?;
    raw::delete_tx_values_above(&tx, to)?;
    Cursor { block_number: to, block_hash: hash, finalized_number: finalized }.set(&tx)?;
    tx.commit()?;
    Ok(restored)
}
