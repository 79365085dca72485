//! # lcw-indexer: chain events into the store
//!
//! Streams the WorkerRegistry, JobRegistry and AIConfig logs of a network, and those of every
//! SessionManager AIConfig publishes, into the SQLite store: raw logs first (verbatim, the source
//! of truth, with the few contract reads their events lack), projections derived from them in
//! the same transaction as the cursor, reorg-safe and resumable.
//!
//! - [`watch`]: the watched addresses, following the SessionManagers AIConfig publishes.
//! - [`facts`]: what SessionRequested and SessionAdopted lack, read once and kept raw.
//! - [`rpc`]: JSON-RPC with retries, backoff and failover; range refusals recognised.
//! - [`answer`]: every answer of the node checked before anything of it is stored (logs within
//!   the range, of the addresses and topic asked, in order, unique, one hash and timestamp per
//!   block, agreeing with the headers; headers of the block asked, linked to their parent); a
//!   wrong answer is counted by endpoint and reason, reported, and asked of the next endpoint
//!   (`read`, the checked reads).
//! - [`backfill`]: concurrent adaptive `eth_getLogs` over the final part of the chain, in order.
//! - [`live`]: head following with parent-hash checks and unwinding to the common ancestor.
//! - [`writer`]: the single writer thread; one transaction per commit, cursor included
//!   ([`checkpoint`] copies the WAL into the database beside it).
//! - [`decode`] and [`apply`] (with [`cache`], and [`sortition`] for session requests): the pure
//!   core, log → event → projection rows.
//! - [`replay`]: projections rebuilt from raw logs alone and compared with the store.
//! - [`verify`]: the store checked against the chain.
//! - [`metrics`], [`progress`]: Prometheus endpoint, progress bar or periodic logs.
//!
//! Entry point: [`run`]. Data flow: RPC → backfill/live → writer → store → (notification) →
//! settler, worker, API.

pub mod answer;
pub mod apply;
pub mod backfill;
mod batch;
pub mod cache;
pub mod checkpoint;
pub mod decode;
pub mod facts;
pub mod live;
pub mod metrics;
pub mod progress;
mod read;
pub mod replay;
pub use lcw_chain::rpc;
pub mod segment;
mod sortition;
pub mod verify;
pub mod watch;
pub mod writer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use lcw_schema::profile::Profile;
use lcw_schema::store::raw::Cursor;
use lcw_schema::store::{Identity, Store, StoreError};
use serde::Serialize;

pub use backfill::BackfillOptions;
pub use live::LiveOptions;
pub use writer::{Commits, Committed};

/// Why indexing stopped.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// The node does not have a block the store has indexed: it is behind (a node restarting or
    /// catching up, a shorter branch for a moment during a reorg) or on another chain.
    #[error("the node does not have block {0} that the store has indexed; it is behind or on another chain")]
    NodeBehind(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The RPC failed for good.
    #[error(transparent)]
    Rpc(#[from] rpc::RpcError),
    /// The network profile does not fit the node.
    #[error(transparent)]
    Profile(#[from] lcw_schema::profile::ProfileError),
    /// A reorg deeper than the store can unwind.
    #[error(
        "the chain reorganised below block {floor}, the deepest this store can unwind (blocks at or below it were \
         final when indexed; the store's tip is {tip}). The node may be out of sync or serving another chain; check \
         it, then re-index into a fresh store (--db)"
    )]
    DeepReorg {
        /// The store's tip when the reorg was found.
        tip: u64,
        /// The undo floor.
        floor: u64,
    },
    /// A commit failed; nothing after the last committed block was written.
    #[error("writing the store failed: {0}")]
    Commit(String),
    /// The writer thread stopped.
    #[error("the store writer stopped unexpectedly (see the error logged before this one)")]
    WriterGone,
    /// Another process is already indexing into this store.
    #[error("another lcw process is already indexing into {0}; stop it, or use a different --db")]
    Locked(std::path::PathBuf),
    /// Stopped by a shutdown request.
    #[error("interrupted")]
    Interrupted,
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// Result alias.
pub type IndexerResult<T> = Result<T, IndexerError>;

/// A read-only store connection shared by async code; every use goes through [`Reader::read`].
#[derive(Debug, Clone)]
pub struct Reader(Arc<std::sync::Mutex<Store>>);

impl Reader {
    /// Opens `db` read-only.
    pub fn open(db: &std::path::Path) -> IndexerResult<Reader> {
        Ok(Reader(Arc::new(std::sync::Mutex::new(Store::open_readonly(db)?))))
    }

    /// Runs `f` on the connection on a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> lcw_schema::store::StoreResult<T> + Send + 'static,
    ) -> IndexerResult<T> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let store = inner.lock().map_err(|_| IndexerError::Internal("store reader poisoned".into()))?;
            Ok(f(store.conn())?)
        })
        .await
        .map_err(|e| IndexerError::Internal(format!("store read task: {e}")))?
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, periodic logs otherwise.
    Auto,
    /// Periodic structured logs.
    Logs,
    /// Nothing.
    Off,
}

/// Everything `lcw index` needs.
#[derive(Debug, Clone)]
pub struct IndexerConfig {
    /// The network.
    pub profile: Profile,
    /// The store file.
    pub db: PathBuf,
    /// First block for a new store (default: the profile's start block).
    pub from_block: Option<u64>,
    /// Backfill tuning.
    pub backfill: BackfillOptions,
    /// Live tuning.
    pub live: LiveOptions,
    /// Per-request RPC timeout.
    pub rpc_timeout: Duration,
    /// Stop once the head is indexed.
    pub until_head: bool,
    /// Progress display.
    pub progress: ProgressMode,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
}

impl IndexerConfig {
    /// Defaults for `profile` and `db`.
    pub fn new(profile: Profile, db: PathBuf) -> Self {
        let ws_url = profile.ws_url.clone();
        IndexerConfig {
            profile,
            db,
            from_block: None,
            backfill: BackfillOptions::default(),
            live: LiveOptions {
                confirmations: 0,
                finality_depth: 64,
                poll_interval: Duration::from_millis(500),
                ws_url,
                max_block_bytes: rpc::MAX_LOGS_ANSWER_BYTES,
            },
            rpc_timeout: Duration::from_secs(30),
            until_head: false,
            progress: ProgressMode::Auto,
            metrics: None,
        }
    }
}

/// What `lcw index` reports (JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Chain id.
    pub chain_id: u64,
    /// Head block when indexing stopped.
    pub head: u64,
    /// Last indexed block (the cursor).
    pub indexed_block: u64,
    /// Finalized block.
    pub finalized_block: u64,
    /// Logs per event name in the store.
    pub events: BTreeMap<String, u64>,
    /// All logs in the store.
    pub total_events: u64,
    /// Logs kept raw because they could not be decoded.
    pub undecodable: u64,
    /// Logs indexed by this run.
    pub indexed_this_run: u64,
    /// Reorgs handled by this run.
    pub reorgs: u64,
    /// Wall time of this run.
    pub elapsed_secs: f64,
    /// Logs per second of this run.
    pub events_per_sec: f64,
    /// RPC requests (with retries), retries, and refused ranges.
    pub rpc_requests: u64,
    /// Retried RPC requests.
    pub rpc_retries: u64,
    /// Ranges split after a refusal.
    pub range_splits: u64,
    /// Answers refused as wrong (out-of-range, foreign or duplicate logs, conflicting hashes,
    /// wrong headers, malformed or oversized answers), each asked again of the next endpoint.
    pub rpc_bad_answers: u64,
    /// The endpoints that gave them (redacted), how many each, and why the last one was refused.
    pub bad_answers: Vec<rpc::BadAnswers>,
}

/// Takes the store's indexer lock (`<db>.indexer.lock`, released when the process exits, even on
/// kill -9), so two indexers never write one store.
pub fn lock_store(db: &std::path::Path) -> IndexerResult<std::fs::File> {
    let mut name = db.as_os_str().to_os_string();
    name.push(".indexer.lock");
    let path = std::path::PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| IndexerError::Internal(format!("cannot open the lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IndexerError::Locked(db.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(IndexerError::Internal(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

/// [`run`] for a process that keeps running beside the indexer (`lcw run`, `lcw work`, `lcw
/// settle`): when every endpoint kept failing for the whole retry budget (a node outage of more
/// than a minute), or the node is behind the store, the indexer starts again 5 s later, from its
/// cursor, instead of stopping them.
/// Any other error, and shutdown, end it as [`run`] does.
pub async fn keep_running(
    config: IndexerConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    commits: Option<Commits>,
) -> IndexerResult<Summary> {
    loop {
        match run(config.clone(), shutdown.clone(), commits.clone()).await {
            Err(e @ (IndexerError::Rpc(rpc::RpcError::Unavailable { .. }) | IndexerError::NodeBehind(_)))
                if !*shutdown.borrow() =>
            {
                tracing::warn!(error = %e, "the indexer lost the node; starting it again in 5 s");
                let mut stop = shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.changed() => return Err(IndexerError::Interrupted),
                }
            }
            other => return other,
        }
    }
}

/// The chain id, waited for while no endpoint answers when the indexer is to keep running (a
/// restart during a node outage must not stop `lcw run`); `--until-head` fails at once.
async fn chain_id_patiently(
    rpc: &rpc::Rpc,
    config: &IndexerConfig,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> IndexerResult<u64> {
    let started = Instant::now();
    let mut warned: Option<Instant> = None;
    let mut pause = Duration::from_millis(500);
    loop {
        match rpc.chain_id().await {
            Ok(id) => return Ok(id),
            Err(e @ rpc::RpcError::Unavailable { .. }) if !config.until_head => {
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(error = %e, waited_s = started.elapsed().as_secs(), "no RPC endpoint answers; waiting");
                    warned = Some(Instant::now());
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return Err(IndexerError::Interrupted),
        }
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

/// Indexes the network: backfill to the finalized block, then follow the head (until the head
/// with `until_head`, otherwise until `shutdown`). `commits` receives every commit.
pub async fn run(
    config: IndexerConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    commits: Option<Commits>,
) -> IndexerResult<Summary> {
    let started = Instant::now();
    let profile = &config.profile;
    // Every endpoint, primary and fallbacks, must serve the profile's chain.
    let rpc = Arc::new(rpc::Rpc::for_profile(profile, config.rpc_timeout)?);
    let chain_id = chain_id_patiently(&rpc, &config, &mut shutdown).await?;
    profile.check_chain_id(chain_id)?;

    let _lock = lock_store(&config.db)?;
    let start = config.from_block.unwrap_or(profile.start_block);
    let identity = Identity { chain_id, contracts: profile.contracts, start_block: start };
    let commits = commits.unwrap_or_else(|| tokio::sync::watch::channel(Committed::default()).0);
    let (writer, cursor) = writer::Writer::start(config.db.clone(), identity, commits.clone())?;
    let reader = Reader::open(&config.db)?;
    let live_stats = Arc::new(live::LiveStats::default());
    let progress_state = Arc::new(backfill::Progress::default());
    let metrics = config
        .metrics
        .map(|addr| metrics::serve(addr, rpc.clone(), live_stats.clone(), progress_state.clone(), config.db.clone()));

    let head = rpc
        .header(BlockNumberOrTag::Latest)
        .await?
        .ok_or_else(|| IndexerError::Internal("the node has no latest block".into()))?;
    let finalized = live::finalized(&rpc, head.number, config.live.finality_depth).await;
    live_stats.head.store(head.number, Ordering::Relaxed);
    live_stats.finalized.store(finalized, Ordering::Relaxed);

    // Resume from the cursor (after checking it is still canonical) or start fresh.
    let mut position = match cursor {
        Some(c) => {
            let p = live::Position { number: c.block_number, hash: c.block_hash };
            live::reconcile_cursor(&rpc, &writer, &reader, p, &live_stats).await?
        }
        None => live::Position { number: start.saturating_sub(1), hash: Default::default() },
    };
    let backfill_to = finalized.min(head.number.saturating_sub(config.live.confirmations));
    let first = if cursor.is_some() { position.number + 1 } else { start };
    let contracts = profile.contracts;
    let mut watched = reader.read(move |conn| watch::Watched::load(conn, contracts)).await?;
    if let Some(from) = reader.read(|conn| lcw_schema::store::sortition::manager_logs_from(conn)).await? {
        tracing::warn!(
            from,
            "this store was indexed before lcw followed SessionManagers: it holds their logs from block {from} on; \
             index into a fresh store (--db) for the earlier ones"
        );
    }
    if first <= backfill_to {
        tracing::info!(from = first, to = backfill_to, head = head.number, "backfilling");
        // Every SessionManager published up to the target, so each range is fetched once.
        watch::discover(&rpc, &mut watched, first, backfill_to, &config.backfill).await?;
        let reporter = progress::spawn(config.progress, progress_state.clone(), started);
        let res = backfill::backfill(
            rpc.clone(),
            &watched,
            &writer,
            first,
            backfill_to,
            config.backfill,
            progress_state.clone(),
            &shutdown,
        )
        .await;
        let flushed = writer.flush().await;
        reporter.finish();
        match res {
            Err(IndexerError::Interrupted) => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        flushed?;
        if let Some(c) = reader.read(|conn| Cursor::get(conn)).await? {
            position = live::Position { number: c.block_number, hash: c.block_hash };
        }
    } else if cursor.is_none() && start > 0 {
        // Nothing final to backfill yet: live indexing starts right after the start block's parent.
        let parent = read::header(&rpc, start - 1).await?;
        position.hash = parent.map(|h| h.hash).unwrap_or_default();
    }

    if !*shutdown.borrow() {
        position = live::follow(
            rpc.clone(),
            profile.contracts,
            &writer,
            &reader,
            position,
            &config.live,
            config.until_head,
            live_stats.clone(),
            shutdown.clone(),
        )
        .await?;
    }
    let _ = shutdown.borrow_and_update();
    let last = writer.flush().await?;
    let _ = last;
    if let Some(m) = metrics {
        m.abort();
    }
    let events = reader
        .read(|conn| {
            use lcw_schema::store::rows::{EventCountRow, ProjectionRow};
            Ok(EventCountRow::all(conn)?.into_iter().map(|r| (r.event, r.count)).collect::<BTreeMap<String, u64>>())
        })
        .await?;
    summary(events, &rpc, &live_stats, &progress_state, chain_id, position.number, started)
}

fn summary(
    events: BTreeMap<String, u64>,
    rpc: &rpc::Rpc,
    live: &live::LiveStats,
    progress: &backfill::Progress,
    chain_id: u64,
    indexed_block: u64,
    started: Instant,
) -> IndexerResult<Summary> {
    let total_events = events.values().sum();
    let undecodable = events.get("(undecodable)").copied().unwrap_or(0);
    let elapsed = started.elapsed().as_secs_f64();
    let indexed_this_run = progress.delivered_logs.load(Ordering::Relaxed) + live.blocks_logs();
    Ok(Summary {
        chain_id,
        head: live.head.load(Ordering::Relaxed),
        indexed_block,
        finalized_block: live.finalized.load(Ordering::Relaxed),
        events,
        total_events,
        undecodable,
        indexed_this_run,
        reorgs: live.reorgs.load(Ordering::Relaxed),
        elapsed_secs: elapsed,
        events_per_sec: indexed_this_run as f64 / elapsed.max(1e-9),
        rpc_requests: rpc.stats.requests.load(Ordering::Relaxed),
        rpc_retries: rpc.stats.retries.load(Ordering::Relaxed),
        range_splits: rpc.stats.range_splits.load(Ordering::Relaxed),
        rpc_bad_answers: rpc.stats.bad_answers.load(Ordering::Relaxed),
        bad_answers: rpc.bad_answers(),
    })
}
