//! The store's single writer: a dedicated thread that owns the write connection and commits
//! segments with the cursor moved in the same transaction: a live block alone, backfill
//! segments applied into one open transaction as they arrive (see `BATCH_LOGS`). It also
//! unwinds reorgs. Async callers talk to it through a channel; nothing else writes the store,
//! and [`crate::checkpoint`] copies its WAL into the database beside it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use alloy::primitives::B256;
use lcw_schema::store::raw::{BlockRow, Cursor, LogInserter, RangeRow, RawLog};
use lcw_schema::store::{Identity, Store, StoreError, StoreResult, ledger, raw, undo};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::apply::Meta;
use crate::cache::{JobCache, Projector};
use crate::checkpoint::Checkpointer;
use crate::decode::Decoder;
use crate::rpc::FetchedLog;
use crate::segment::Segment;
use crate::{IndexerError, IndexerResult};

/// Logs per backfill transaction at most. A job's events span several blocks; in a large
/// transaction most jobs are inserted once, complete, instead of inserted and then updated at
/// every step. Memory does not grow with it: logs are written as they arrive.
const BATCH_LOGS: u64 = 200_000;

/// Jobs held in memory by an open backfill transaction at most (finished jobs are written out
/// as they finish; this bounds the ones still in flight).
const BATCH_JOBS: usize = 20_000;

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
        // Checkpoints run on their own thread (see `checkpoint`), never inside a commit here.
        store.conn().pragma_update(None, "wal_autocheckpoint", 0).map_err(StoreError::from)?;
        let checkpointer = Checkpointer::start(&path)?;
        let cursor = Cursor::get(store.conn())?;
        let decoder = Decoder::new(identity.contracts);
        let (tx, rx) = mpsc::channel::<Cmd>(2);
        let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = failure.clone();
        std::thread::Builder::new()
            .name("lcw-store-writer".into())
            .spawn(move || writer_loop(store, decoder, rx, commits, slot, checkpointer))
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
    store: Store,
    decoder: Decoder,
    mut rx: mpsc::Receiver<Cmd>,
    commits: Commits,
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    checkpointer: Checkpointer,
) {
    let conn = store.conn();
    let mut cache = JobCache::default();
    let mut failed: Option<StoreError> = None;
    let mut last = Committed::default();
    // Marks the writer failed: later commands are refused with the first error.
    let fail = |e: StoreError, cache: &mut JobCache, failed: &mut Option<StoreError>| {
        cache.clear();
        tracing::error!(error = %e, "commit failed; nothing after the last committed block was written");
        if let Ok(mut g) = failure.lock() {
            *g = Some(e.to_string());
        }
        *failed = Some(e);
    };
    let mut next: Option<Cmd> = None;
    loop {
        let cmd = match next.take() {
            Some(cmd) => cmd,
            None => match rx.blocking_recv() {
                Some(cmd) => cmd,
                None => return,
            },
        };
        match cmd {
            Cmd::Backfill(segment) => {
                if failed.is_some() {
                    continue;
                }
                let started = Instant::now();
                checkpointer.before_transaction();
                let (result, after) = backfill_batch(conn, &mut cache, &decoder, segment, &mut rx);
                match result {
                    Ok(c) => {
                        checkpointer.request();
                        tracing::debug!(
                            block = c.block,
                            logs = c.logs,
                            ms = started.elapsed().as_millis() as u64,
                            "committed"
                        );
                        last = c;
                        let _ = commits.send(c);
                    }
                    Err(e) => fail(e, &mut cache, &mut failed),
                }
                match after {
                    After::Idle => {}
                    After::Cmd(cmd) => next = Some(*cmd),
                    After::Closed => return,
                }
            }
            Cmd::Flush(reply) => {
                // A backfill ended: leave no large WAL behind (the next commit would only reuse it).
                checkpointer.truncate(conn);
                let _ = reply.send(match &failed {
                    Some(e) => Err(earlier(e)),
                    None => Ok(last),
                });
            }
            Cmd::Block { segment, finalized, reply } => {
                checkpointer.before_transaction();
                let result = match &failed {
                    Some(e) => Err(earlier(e)),
                    None => Batch::begin(conn, &mut cache, Some(finalized), &segment)
                        .and_then(|mut b| b.add(&decoder, segment).and_then(|()| b.commit())),
                };
                match &result {
                    Ok(c) => {
                        checkpointer.request();
                        last = *c;
                        let _ = commits.send(*c);
                    }
                    // A live block that fails leaves the store at the previous block; the
                    // follower retries or stops, so the writer stays usable.
                    Err(_) => cache.clear(),
                }
                let _ = reply.send(result);
            }
            Cmd::Unwind { to, reply } => {
                cache.clear();
                checkpointer.before_transaction();
                let result = unwind(conn, to);
                if result.is_ok() {
                    checkpointer.request();
                    last.block = to;
                    let _ = commits.send(last);
                }
                let _ = reply.send(result);
            }
        }
    }
}

/// What the writer found after closing a backfill transaction.
enum After {
    /// Nothing queued.
    Idle,
    /// A command that is not a backfill segment (handled after the commit).
    Cmd(Box<Cmd>),
    /// Every sender is gone.
    Closed,
}

/// Applies `first` and every backfill segment already queued behind it in one transaction,
/// up to [`BATCH_LOGS`] logs or [`BATCH_JOBS`] jobs in memory, and commits. Segments are
/// written as they arrive, so memory holds the projection rows in play, not the logs.
fn backfill_batch(
    conn: &Connection,
    cache: &mut JobCache,
    decoder: &Decoder,
    first: Segment,
    rx: &mut mpsc::Receiver<Cmd>,
) -> (StoreResult<Committed>, After) {
    let mut batch = match Batch::begin(conn, cache, None, &first) {
        Ok(b) => b,
        Err(e) => return (Err(e), After::Idle),
    };
    let mut segment = first;
    let after = loop {
        if let Err(e) = batch.add(decoder, segment) {
            return (Err(e), After::Idle);
        }
        if batch.stats.logs >= BATCH_LOGS || batch.projector.jobs_in_memory() >= BATCH_JOBS {
            break After::Idle;
        }
        segment = match rx.try_recv() {
            Ok(Cmd::Backfill(s)) => s,
            Ok(cmd) => break After::Cmd(Box::new(cmd)),
            // Nothing queued right now: commit what we have instead of waiting.
            Err(mpsc::error::TryRecvError::Empty) => break After::Idle,
            Err(mpsc::error::TryRecvError::Disconnected) => break After::Closed,
        };
    };
    (batch.commit(), after)
}

fn earlier(e: &StoreError) -> StoreError {
    StoreError::Corrupt { what: "an earlier commit".into(), value: e.to_string() }
}

/// The last block of a batch (its cursor).
#[derive(Debug, Clone, Copy)]
struct Tail {
    to: u64,
    hash: B256,
    parent: Option<B256>,
    timestamp: u64,
}

/// An open write transaction that segments are applied into: raw logs inserted as they come,
/// projection rows changed in memory and written on commit, with the blocks, the range and the
/// cursor. Dropping it without committing rolls everything back.
struct Batch<'c> {
    tx: rusqlite::Transaction<'c>,
    projector: Projector<'c>,
    inserter: LogInserter<'c>,
    blocks: BTreeMap<u64, (B256, u64, u64)>,
    stats: Committed,
    from: u64,
    tail: Tail,
    /// Some for a block followed live: the finalized block then.
    live_finalized: Option<u64>,
    /// The block undo images are recorded under (a live block above the finalized one).
    undo_block: Option<u64>,
}

impl<'c> Batch<'c> {
    /// Opens a transaction for `first` and what may follow it. `live_finalized` is Some for a
    /// block followed live: it then records undo images unless the block is already final,
    /// merges live ranges, and prunes undo entries at or below the finalized block.
    fn begin(
        conn: &'c Connection,
        cache: &'c mut JobCache,
        live_finalized: Option<u64>,
        first: &Segment,
    ) -> StoreResult<Batch<'c>> {
        let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let undo_block = live_finalized.filter(|f| first.to > *f).map(|_| first.to);
        // The projector and inserter borrow the connection, not the transaction: both live
        // exactly as long as it does, and everything they write is inside it.
        let projector = Projector::with_cache(conn, undo_block.is_some(), cache)?;
        let inserter = LogInserter::new(conn)?;
        Ok(Batch {
            tx,
            projector,
            inserter,
            blocks: BTreeMap::new(),
            stats: Committed::default(),
            from: first.from,
            tail: Tail { to: first.to, hash: first.to_hash, parent: first.to_parent, timestamp: first.to_timestamp },
            live_finalized,
            undo_block,
        })
    }

    /// Applies a segment (the next blocks after what the batch holds). The logs are consumed:
    /// their topics and data move into the rows instead of being copied.
    fn add(&mut self, decoder: &Decoder, s: Segment) -> StoreResult<()> {
        for (hash, block, value) in &s.tx_values {
            raw::put_tx_value(&self.tx, hash, *block, value)?;
        }
        let (block_times, last_timestamp) = (&s.block_times, s.to_timestamp);
        for log in s.logs {
            let timestamp =
                log.block_timestamp.or_else(|| block_times.get(&log.block_number).copied()).unwrap_or(last_timestamp);
            let FetchedLog { log, block_number, block_hash, log_index, tx_hash, tx_index, .. } = log;
            let decoded = decoder.decode(&log);
            self.blocks.entry(block_number).or_insert((block_hash, timestamp, 0)).2 += 1;
            self.stats.logs += 1;
            match &decoded.event {
                Ok(event) => {
                    self.projector.count_event(decoded.name.unwrap_or("(unknown)"))?;
                    let meta = Meta { block: block_number, log_index, timestamp, tx_hash };
                    self.projector.apply(event, &meta)?;
                }
                Err(reason) => {
                    self.stats.undecodable += 1;
                    self.projector.count_event("(undecodable)")?;
                    tracing::warn!(block = block_number, log_index, %reason, "undecodable log kept raw");
                }
            }
            let (topics, data) = log.data.split();
            self.inserter.insert(RawLog {
                block_number,
                log_index,
                block_hash,
                block_timestamp: timestamp,
                tx_hash,
                tx_index,
                address: log.address,
                topics,
                data,
                event: decoded.name.map(str::to_owned),
                decode_error: decoded.event.err(),
                job_id: decoded.job_id,
            })?;
        }
        self.tail = Tail { to: s.to, hash: s.to_hash, parent: s.to_parent, timestamp: s.to_timestamp };
        if self.undo_block.is_none() {
            // Jobs that reached an end leave memory now; the events of one block arrive in one
            // segment, so whatever follows a release or time-out in its transaction is in.
            self.projector.write_finished_jobs()?;
        }
        Ok(())
    }

    /// Writes the projection rows, blocks, range and cursor, and commits.
    fn commit(mut self) -> StoreResult<Committed> {
        let tx = &self.tx;
        let tail = self.tail;
        self.inserter.finish()?;
        self.stats.unattributed = self.projector.unattributed;
        self.stats.block = tail.to;
        self.projector.flush(self.undo_block)?;
        for (number, (hash, timestamp, count)) in &self.blocks {
            let parent = if *number == tail.to { tail.parent } else { None };
            BlockRow { number: *number, hash: *hash, parent_hash: parent, timestamp: *timestamp, log_count: *count }
                .put(tx)?;
        }
        if !self.blocks.contains_key(&tail.to) {
            BlockRow {
                number: tail.to,
                hash: tail.hash,
                parent_hash: tail.parent,
                timestamp: tail.timestamp,
                log_count: 0,
            }
            .put(tx)?;
        }
        let log_count = self.stats.logs;
        match self.live_finalized {
            Some(_) => RangeRow::extend_live(tx, self.from, tail.to, log_count)?,
            None => RangeRow { from_block: self.from, to_block: tail.to, log_count, source: "backfill".into() }
                .insert(tx)?,
        }
        let finalized = self.live_finalized.unwrap_or(tail.to);
        Cursor { block_number: tail.to, block_hash: tail.hash, finalized_number: finalized }.set(tx)?;
        // The undo floor: blocks at or below it have no before-images and cannot be unwound.
        let floor = undo_floor(tx)?;
        let new_floor = if self.undo_block.is_some() { floor.max(finalized.min(tail.to)) } else { tail.to };
        if new_floor != floor {
            lcw_schema::store::meta_set(tx, UNDO_FLOOR, &new_floor.to_string())?;
        }
        undo::prune(tx, new_floor)?;
        let stats = self.stats;
        self.tx.commit()?;
        Ok(stats)
    }
}

/// `meta` key of the undo floor.
pub const UNDO_FLOOR: &str = "undo_floor";

/// The highest block applied without undo images (0 for a new store).
pub fn undo_floor(conn: &rusqlite::Connection) -> StoreResult<u64> {
    Ok(lcw_schema::store::meta_get(conn, UNDO_FLOOR)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Unwinds everything above `to` in one transaction; returns the number of rows restored.
fn unwind(conn: &Connection, to: u64) -> StoreResult<u64> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
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
