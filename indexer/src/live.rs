//! Live indexing: follow the head block by block, check each block's parent hash against the
//! stored chain, and on a mismatch unwind to the common ancestor (raw logs and projections in one
//! transaction) before applying the new chain.
//!
//! Heads come from a WebSocket `newHeads` subscription when the profile has a `ws_url` (with
//! polling as a fallback) or from polling. Blocks are applied `confirmations` behind the head;
//! blocks above the node's finalized block (or head − finality depth when the node has no
//! finalized tag) keep undo images. A reorg below the undo floor is refused with an error that
//! says so: the store is never silently corrupted.
//!
//! Each block is fetched for the watched addresses ([`crate::watch`]); one that publishes a new
//! SessionManager is fetched again, with it, before it is applied.
//!
//! What the node answers is checked before it is used ([`crate::read`]): a header must be the
//! block asked for; one whose parent is not the stored tip must link to the same node's block
//! before it (then it is a reorg, handled as above), else it is refused; a block's logs, read by
//! its hash, must all be that block's and pass [`crate::answer::check_logs`]. A refused answer is
//! asked of the next endpoint and never written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use lcw_schema::profile::Contracts;
use lcw_schema::store::raw::BlockRow;
use tokio::sync::Notify;

use crate::read::Next;
use crate::rpc::{Header, Rpc};
use crate::segment::Segment;
use crate::watch::Watched;
use crate::writer::{Writer, undo_floor};
use crate::{IndexerError, IndexerResult, Reader};

/// How live indexing follows the head.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Blocks to stay behind the head.
    pub confirmations: u64,
    /// Depth considered final when the node has no `finalized` tag.
    pub finality_depth: u64,
    /// How often to poll for a new head (also the fallback when the WebSocket drops).
    pub poll_interval: Duration,
    /// WebSocket URL for `newHeads`.
    pub ws_url: Option<String>,
    /// A block's logs answering more bytes than this are refused as a bad answer (see
    /// [`crate::BackfillOptions::max_block_bytes`]).
    pub max_block_bytes: usize,
}

/// Counters shared with metrics and the summary.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Head block last seen.
    pub head: AtomicU64,
    /// Finalized block last seen.
    pub finalized: AtomicU64,
    /// Reorgs handled.
    pub reorgs: AtomicU64,
    /// Deepest reorg handled (blocks).
    pub max_reorg_depth: AtomicU64,
    /// Blocks applied live.
    pub blocks: AtomicU64,
    /// Logs applied live.
    pub logs: AtomicU64,
}

impl LiveStats {
    /// Logs applied live.
    pub fn blocks_logs(&self) -> u64 {
        self.logs.load(Ordering::Relaxed)
    }
}

/// The finalized block: the node's tag, or head − `depth` when it has none.
pub async fn finalized(rpc: &Rpc, head: u64, depth: u64) -> u64 {
    match rpc.header(BlockNumberOrTag::Finalized).await {
        Ok(Some(h)) => h.number.min(head),
        _ => head.saturating_sub(depth),
    }
}

/// Wakes the follower on each `newHeads` notification; reconnects with backoff.
fn spawn_head_watcher(url: String, notify: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use alloy::providers::{Provider, ProviderBuilder, WsConnect};
        use futures::StreamExt;
        use lcw_schema::profile::redact_urls;
        let mut backoff = Duration::from_secs(1);
        loop {
            match ProviderBuilder::new().connect_ws(WsConnect::new(url.clone())).await {
                Ok(provider) => match provider.subscribe_blocks().await {
                    Ok(sub) => {
                        backoff = Duration::from_secs(1);
                        let mut stream = sub.into_stream();
                        while stream.next().await.is_some() {
                            notify.notify_one();
                        }
                        tracing::debug!("newHeads subscription ended; falling back to polling until it reconnects");
                    }
                    Err(e) => {
                        tracing::debug!(error = %redact_urls(&e.to_string()), "newHeads subscription refused; polling")
                    }
                },
                // A WebSocket error may quote the URL, API key included.
                Err(e) => tracing::debug!(error = %redact_urls(&e.to_string()), "WebSocket unavailable; polling"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    })
}

/// Where the follower stands.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// Last applied block.
    pub number: u64,
    /// Its hash.
    pub hash: B256,
}

/// Follows the head from `position`. With `until_head` it returns once the head (minus
/// confirmations) is applied; otherwise it runs until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    rpc: Arc<Rpc>,
    contracts: Contracts,
    writer: &Writer,
    reader: &Reader,
    mut position: Position,
    options: &LiveOptions,
    until_head: bool,
    stats: Arc<LiveStats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> IndexerResult<Position> {
    let notify = Arc::new(Notify::new());
    let watcher = options.ws_url.clone().map(|url| spawn_head_watcher(url, notify.clone()));
    let load = || reader.read(move |conn| Watched::load(conn, contracts));
    let result = async {
        let mut watched = load().await?;
        // A backfill's commits said the indexer was behind: the first time it stands at the
        // head, its watchers hear that it no longer is.
        let mut behind_announced = true;
        loop {
            if stopping(&shutdown) {
                return Ok(position);
            }
            let head = rpc
                .header(BlockNumberOrTag::Latest)
                .await?
                .ok_or_else(|| IndexerError::Internal("the node has no latest block".into()))?;
            stats.head.store(head.number, Ordering::Relaxed);
            let target = head.number.saturating_sub(options.confirmations);
            if head.number == position.number && head.hash != position.hash && position.hash != B256::ZERO {
                // Reorganised at the same height: the head we applied is no longer the head.
                position = reorg(&rpc, writer, reader, position, &stats).await?;
                watched = load().await?;
                continue;
            }
            if position.number >= target {
                if std::mem::take(&mut behind_announced) {
                    writer.settled().await?;
                }
                if until_head {
                    return Ok(position);
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(options.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let finalized = finalized(&rpc, head.number, options.finality_depth).await;
            stats.finalized.store(finalized, Ordering::Relaxed);
            while position.number < target {
                if stopping(&shutdown) {
                    return Ok(position);
                }
                let n = position.number + 1;
                let header = match crate::read::next(&rpc, n, position.hash).await? {
                    Next::Extends(header) => header,
                    Next::Missing => break,
                    Next::Forked => {
                        position = reorg(&rpc, writer, reader, position, &stats).await?;
                        // The unwind removed the publications above the fork from the store.
                        watched = load().await?;
                        continue;
                    }
                };
                let behind = n < target;
                behind_announced |= behind;
                let (p, logs) =
                    apply_block(&rpc, &mut watched, writer, header, finalized, behind, options.max_block_bytes).await?;
                position = p;
                stats.blocks.fetch_add(1, Ordering::Relaxed);
                stats.logs.fetch_add(logs, Ordering::Relaxed);
            }
        }
    }
    .await;
    if let Some(w) = watcher {
        w.abort();
    }
    result
}

async fn apply_block(
    rpc: &Rpc,
    watched: &mut Watched,
    writer: &Writer,
    header: Header,
    finalized: u64,
    behind: bool,
    max_bytes: usize,
) -> IndexerResult<(Position, u64)> {
    let mut logs = crate::read::block(rpc, &header, watched.addresses_until(header.number), max_bytes).await?;
    // A SessionManager published in this block may have logs in it already: read the block again
    // with it (one answer, checked whole, rather than two to merge).
    let new = watched.published_in(&logs);
    if !new.is_empty() {
        tracing::info!(block = header.number, managers = ?new, "following a newly published SessionManager");
        logs = crate::read::block(rpc, &header, watched.addresses_until(header.number), max_bytes).await?;
    }
    // In log index order: the check refuses any other.
    logs.retain(|l| watched.keeps(&l.log.address, l.block_number));
    let contracts = watched.contracts();
    let tx_values = crate::backfill::registration_values(rpc, contracts, &logs).await?;
    let facts = crate::facts::fetch(rpc, contracts, &logs).await?;
    let segment = Segment {
        from: header.number,
        to: header.number,
        to_hash: header.hash,
        to_parent: Some(header.parent_hash),
        to_timestamp: header.timestamp,
        logs,
        block_times: [(header.number, header.timestamp)].into_iter().collect(),
        tx_values,
        facts,
    };
    let committed = writer.block(segment, finalized, behind).await?;
    Ok((Position { number: header.number, hash: header.hash }, committed.logs))
}

/// Finds the common ancestor of the stored chain and the node's, and unwinds to it.
async fn reorg(
    rpc: &Rpc,
    writer: &Writer,
    reader: &Reader,
    position: Position,
    stats: &LiveStats,
) -> IndexerResult<Position> {
    let floor = reader.read(undo_floor).await?;
    let mut k = position.number;
    let ancestor = loop {
        let Some(stored) = reader.read(move |conn| BlockRow::at_or_below(conn, k)).await? else {
            return Err(IndexerError::DeepReorg { tip: position.number, floor });
        };
        if stored.number < floor {
            return Err(IndexerError::DeepReorg { tip: position.number, floor });
        }
        let canonical = crate::read::header(rpc, stored.number).await?;
        if canonical.map(|h| h.hash) == Some(stored.hash) {
            break stored;
        }
        if stored.number == 0 {
            return Err(IndexerError::DeepReorg { tip: position.number, floor });
        }
        k = stored.number - 1;
    };
    let depth = position.number - ancestor.number;
    tracing::warn!(
        from = position.number,
        to = ancestor.number,
        depth,
        "chain reorganised; unwinding to the common ancestor"
    );
    writer.unwind(ancestor.number).await?;
    stats.reorgs.fetch_add(1, Ordering::Relaxed);
    stats.max_reorg_depth.fetch_max(depth, Ordering::Relaxed);
    Ok(Position { number: ancestor.number, hash: ancestor.hash })
}

/// Checks at start-up that the stored cursor is still on the node's chain (a reorg may have
/// happened while lcw was stopped) and unwinds if not.
pub async fn reconcile_cursor(
    rpc: &Rpc,
    writer: &Writer,
    reader: &Reader,
    position: Position,
    stats: &LiveStats,
) -> IndexerResult<Position> {
    match crate::read::header(rpc, position.number).await? {
        Some(h) if h.hash == position.hash => Ok(position),
        Some(_) => reorg(rpc, writer, reader, position, stats).await,
        None => Err(IndexerError::NodeBehind(position.number)),
    }
}

/// Whether the loop should stop: shutdown was asked for, or whoever could ask has gone away
/// (a dropped sender would otherwise wake every `changed()` at once and spin the loop).
pub fn stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}
