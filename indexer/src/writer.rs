//! The store's single writer: a dedicated thread that owns the write connection and commits
//! segments with the cursor moved in the same transaction: a live block alone, backfill
//! segments applied into one open transaction as they arrive (see `BATCH_LOGS`; the
//! transaction itself is in `batch.rs`). It also unwinds reorgs, and at start deletes raw rows
//! an earlier version left above the cursor (`batch::clear_above_cursor`). Async callers talk
//! to it through a channel; nothing else writes the store, and [`crate::checkpoint`] copies its
//! WAL into the database beside it.

use std::path::PathBuf;
use std::time::Instant;

use lcw_schema::store::raw::Cursor;
use lcw_schema::store::{Identity, Store, StoreError, StoreResult};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{Batch, clear_above_cursor, unwind};
use crate::cache::JobCache;
use crate::checkpoint::Checkpointer;
use crate::decode::Decoder;
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
    /// The indexer is behind the head: the commit belongs to a backfill (blocks written in
    /// bulk), or to a live block with more known blocks after it. It stays behind until a commit
    /// without the flag, or the notice [`Writer::settled`] sends once it reaches the head.
    /// Whoever shares the machine with the indexer (the in-process replica follower) may give way
    /// meanwhile.
    pub backfill: bool,
}

enum Cmd {
    Backfill(Segment),
    Block { segment: Segment, finalized: u64, behind: bool, reply: oneshot::Sender<StoreResult<Committed>> },
    Settled,
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
        let stray = clear_above_cursor(store.conn())?;
        if stray > 0 {
            tracing::warn!(
                cursor = cursor.as_ref().map(|c| c.block_number),
                logs = stray,
                "deleted logs stored above the cursor from unchecked answers of an earlier version; \
                 run `lcw replay` to check the projections (`--write` rebuilds them)"
            );
        }
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

    /// Commits one block followed live (with undo images when it is above `finalized`);
    /// `behind`: more known blocks come after it ([`Committed::backfill`]).
    pub async fn block(&self, segment: Segment, finalized: u64, behind: bool) -> IndexerResult<Committed> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Block { segment, finalized, behind, reply }).await.map_err(|_| IndexerError::WriterGone)?;
        Ok(rx.await.map_err(|_| IndexerError::WriterGone)??)
    }

    /// The indexer has reached the head: if the last commit said it was behind, its watchers
    /// are told that it no longer is (nothing is written).
    pub async fn settled(&self) -> IndexerResult<()> {
        self.tx.send(Cmd::Settled).await.map_err(|_| IndexerError::WriterGone)
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
                    Ok(mut c) => {
                        checkpointer.request();
                        c.backfill = true;
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
            Cmd::Settled => {
                if last.backfill {
                    // Nothing new was written: this only tells the commit's watchers that the
                    // indexer has reached the head, so that none waits for the next block.
                    last.backfill = false;
                    let _ = commits.send(last);
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
            Cmd::Block { segment, finalized, behind, reply } => {
                checkpointer.before_transaction();
                let result = match &failed {
                    Some(e) => Err(earlier(e)),
                    None => Batch::begin(conn, &mut cache, Some(finalized), &segment)
                        .and_then(|mut b| b.add(&decoder, segment).and_then(|()| b.commit())),
                };
                let result = result.map(|mut c| {
                    c.backfill = behind;
                    c
                });
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
                    last.backfill = false;
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
        let (logs, jobs) = batch.size();
        if logs >= BATCH_LOGS || jobs >= BATCH_JOBS {
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

/// `meta` key of the undo floor.
pub const UNDO_FLOOR: &str = "undo_floor";

/// The highest block applied without undo images (0 for a new store).
pub fn undo_floor(conn: &rusqlite::Connection) -> StoreResult<u64> {
    Ok(lcw_schema::store::meta_get(conn, UNDO_FLOOR)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}
