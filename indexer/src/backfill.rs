//! Backfill: the final part of the chain, fetched with concurrent `eth_getLogs` over block ranges
//! for all watched contracts at once (the profile's three and the SessionManagers, see
//! [`crate::watch`]) and handed to the writer strictly in block order.
//!
//! The range adapts to the provider: a range the node refuses (too many blocks or results) is
//! split, using the node's suggested range when it gives one; after successes the range grows
//! again, aiming at `target_logs` per request. Memory stays bounded: no new request starts while
//! `max_buffered_logs` logs are fetched but not yet committed.
//!
//! Every answer is checked before it is used ([`crate::read::range`]): its logs against the
//! request and each other, the range's last block against its header. A wrong answer is asked of
//! the next endpoint; nothing of it is stored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::B256;
use alloy::sol_types::SolEvent;
use futures::stream::{FuturesUnordered, StreamExt};
use lcw_schema::bindings::WorkerRegistry;
use lcw_schema::profile::Contracts;

use crate::answer::LogsAsked;
use crate::rpc::{Rpc, RpcError};
use crate::segment::Segment;
use crate::watch::Watched;
use crate::writer::Writer;
use crate::{IndexerError, IndexerResult};

/// How backfill fetches.
#[derive(Debug, Clone, Copy)]
pub struct BackfillOptions {
    /// Requests in flight.
    pub concurrency: usize,
    /// Blocks in the first request.
    pub initial_range: u64,
    /// Largest range ever requested.
    pub max_range: u64,
    /// Logs per request the range adapts to.
    pub target_logs: u64,
    /// No new request while this many logs are fetched but not committed.
    pub max_buffered_logs: u64,
    /// An answer larger than this is abandoned while it streams in and its range split (a range
    /// sized on sparse blocks can reach dense ones). A single block is read up to
    /// `max_block_bytes`.
    pub max_response_bytes: usize,
    /// An answer for one block larger than this is refused as a bad answer and asked of the next
    /// endpoint: a hostile or broken node could otherwise send gigabytes. No real block's logs
    /// come near the default.
    pub max_block_bytes: usize,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            concurrency: 4,
            initial_range: 1,
            max_range: 100_000,
            target_logs: 10_000,
            max_buffered_logs: 10_000,
            // A block of 12,000 logs answers about 11 MB; four answers in flight stay under
            // 64 MB (24 MB cost 12 MB more peak RSS on the 1M-event bench, no speed).
            max_response_bytes: 16 << 20,
            max_block_bytes: crate::rpc::MAX_LOGS_ANSWER_BYTES,
        }
    }
}

/// Shared progress counters (read by the progress reporter and metrics).
#[derive(Debug, Default)]
pub struct Progress {
    /// First block of the backfill.
    pub from: AtomicU64,
    /// Last block of the backfill.
    pub to: AtomicU64,
    /// Highest block handed to the writer.
    pub delivered_block: AtomicU64,
    /// Logs handed to the writer.
    pub delivered_logs: AtomicU64,
    /// Ranges split after a refusal.
    pub splits: AtomicU64,
}

/// Fetches one range and everything its commit needs.
async fn fetch(
    rpc: &Rpc,
    watched: &Watched,
    from: u64,
    to: u64,
    options: &BackfillOptions,
) -> Result<Segment, RpcError> {
    let asked = LogsAsked::range(from, to, watched.addresses_until(to));
    let split_above = (from < to).then_some(options.max_response_bytes);
    let crate::read::RangeLogs { mut logs, to: last, block_times } =
        crate::read::range(rpc, &asked, split_above, options.max_block_bytes).await?;
    if watched.needs_filter(from, to) {
        // A manager published inside the range: its logs from before that block are not indexed.
        logs.retain(|l| watched.keeps(&l.log.address, l.block_number));
    }
    // In block and log index order: the check refuses any other.
    let contracts = watched.contracts();
    let tx_values = registration_values(rpc, contracts, &logs).await?;
    let facts = crate::facts::fetch(rpc, contracts, &logs).await?;
    Ok(Segment {
        from,
        to,
        to_hash: last.hash,
        to_parent: None,
        to_timestamp: last.timestamp,
        logs,
        block_times,
        tx_values,
        facts,
    })
}

/// WorkerRegistered does not carry the stake (it is the transaction's msg.value): fetch it.
pub(crate) async fn registration_values(
    rpc: &Rpc,
    contracts: &Contracts,
    logs: &[crate::rpc::FetchedLog],
) -> Result<Vec<(B256, u64, alloy::primitives::U256)>, RpcError> {
    let mut out = Vec::new();
    for l in logs {
        if l.log.address == contracts.worker_registry
            && l.log.topics().first() == Some(&WorkerRegistry::WorkerRegistered::SIGNATURE_HASH)
        {
            let value = rpc.tx_value(l.tx_hash).await?.unwrap_or_default();
            out.push((l.tx_hash, l.block_number, value));
        }
    }
    Ok(out)
}

/// The ranges to fetch instead of a refused `a..=b` (a < b). A node's suggested last block
/// wins; an answer refused for the response cap says how large it was, so the range is cut into
/// parts of about half the cap each (blocks are uneven) in one step instead of halving it again
/// and again, each refusal costing the node a full answer; otherwise it is halved.
pub(crate) fn split_range(
    a: u64,
    b: u64,
    suggested_to: Option<u64>,
    answer_bytes: Option<u64>,
    cap: usize,
) -> Vec<(u64, u64)> {
    if let Some(mid) = suggested_to.filter(|s| *s >= a && *s < b) {
        return vec![(a, mid), (mid + 1, b)];
    }
    let blocks = b - a + 1;
    let parts = match answer_bytes {
        Some(bytes) => (bytes.saturating_mul(2)).div_ceil((cap as u64).max(1)).clamp(2, blocks),
        None => 2,
    };
    let part = blocks.div_ceil(parts);
    (0..parts).map(|i| a + i * part).take_while(|x| *x <= b).map(|x| (x, (x + part - 1).min(b))).collect()
}

/// Backfills `from..=to` (all final) into the writer, fetching the logs of `watched` (which must
/// know every SessionManager published up to `to`: see [`crate::watch::discover`]). Returns the
/// number of logs delivered.
#[allow(clippy::too_many_arguments)]
pub async fn backfill(
    rpc: Arc<Rpc>,
    watched: &Watched,
    writer: &Writer,
    from: u64,
    to: u64,
    options: BackfillOptions,
    progress: Arc<Progress>,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> IndexerResult<u64> {
    if from > to {
        return Ok(0);
    }
    progress.from.store(from, Ordering::Relaxed);
    progress.to.store(to, Ordering::Relaxed);
    let mut size = options.initial_range.clamp(1, options.max_range.max(1));
    let mut next = from;
    // Ranges to fetch before new ones (splits), in block order.
    let mut retry: VecDeque<(u64, u64)> = VecDeque::new();
    let mut ready: BTreeMap<u64, Segment> = BTreeMap::new();
    let mut deliver_from = from;
    let mut buffered_logs: u64 = 0;
    let mut delivered: u64 = 0;
    let mut in_flight = FuturesUnordered::new();
    // Until the first answer shows how dense the chain is, one request at a time: four blind
    // requests over a dense chain would each return hundreds of thousands of logs.
    let mut calibrated = false;
    loop {
        if *shutdown.borrow() {
            return Err(IndexerError::Interrupted);
        }
        let concurrency = if calibrated { options.concurrency.max(1) } else { 1 };
        // The buffer limit never holds back the split range that delivery waits for: with
        // later ranges filling the buffer, nothing else would ever fetch it.
        while in_flight.len() < concurrency
            && (buffered_logs < options.max_buffered_logs || retry.front().is_some_and(|r| r.0 == deliver_from))
            && (!retry.is_empty() || next <= to)
        {
            let (a, b) = match retry.pop_front() {
                Some(r) => r,
                None => {
                    let b = (next + size - 1).min(to);
                    let r = (next, b);
                    next = b + 1;
                    r
                }
            };
            let rpc = rpc.clone();
            in_flight.push(async move {
                let started = std::time::Instant::now();
                let result = fetch(&rpc, watched, a, b, &options).await;
                (a, b, started.elapsed(), result)
            });
        }
        let Some((a, b, took, result)) = in_flight.next().await else { break };
        match result {
            Ok(segment) => {
                let n = segment.logs.len() as u64;
                tracing::debug!(from = a, to = b, logs = n, ms = took.as_millis() as u64, "range fetched");
                let blocks = b - a + 1;
                calibrated = true;
                if n > options.target_logs {
                    size = (blocks * options.target_logs / n.max(1)).max(1);
                } else if n < options.target_logs / 2 && blocks >= size {
                    // Grow towards the target, at most twofold per answer: the next blocks may be
                    // far denser, and every request in flight is sized alike.
                    let aim = (blocks * options.target_logs).checked_div(n).unwrap_or(size * 2);
                    size = aim.clamp(size + 1, size * 2).min(options.max_range);
                }
                buffered_logs += n;
                ready.insert(a, segment);
            }
            Err(RpcError::RangeTooLarge { message, suggested_to, answer_bytes, .. }) => {
                progress.splits.fetch_add(1, Ordering::Relaxed);
                if a == b {
                    return Err(IndexerError::Rpc(RpcError::RangeTooLarge {
                        method: "eth_getLogs",
                        message: format!(
                            "block {a} alone has more logs than the RPC returns ({message}); use a provider without this limit"
                        ),
                        suggested_to: None,
                        answer_bytes: None,
                    }));
                }
                let parts = split_range(a, b, suggested_to, answer_bytes, options.max_response_bytes);
                tracing::debug!(from = a, to = b, parts = parts.len(), %message, "range refused; splitting");
                // Later ranges: the parts' size when the answer's size showed it fits, else less.
                let largest = parts.iter().map(|(x, y)| y - x + 1).max().unwrap_or(1);
                size = if answer_bytes.is_some() { largest } else { largest.div_ceil(2) }.max(1);
                retry.extend(parts);
                // Keep the retry queue in block order (splits of earlier ranges come first).
                retry.make_contiguous().sort_unstable();
            }
            Err(e) => return Err(IndexerError::Rpc(e)),
        }
        while let Some(segment) = ready.remove(&deliver_from) {
            deliver_from = segment.to + 1;
            let n = segment.logs.len() as u64;
            buffered_logs -= n;
            delivered += n;
            progress.delivered_block.store(segment.to, Ordering::Relaxed);
            progress.delivered_logs.fetch_add(n, Ordering::Relaxed);
            writer.backfill(segment).await?;
        }
    }
    if deliver_from <= to {
        return Err(IndexerError::Internal(format!("backfill stopped at block {deliver_from}, before {to}")));
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::split_range;

    const CAP: usize = 24 << 20;

    #[test]
    fn a_range_over_the_cap_is_cut_to_fit_in_one_step() {
        // 4 blocks answering 50 MB: single blocks of ~12.5 MB each.
        assert_eq!(split_range(22, 25, None, Some(50 << 20), CAP), vec![(22, 22), (23, 23), (24, 24), (25, 25)]);
        // 100 blocks answering 30 MB: parts of about half the cap.
        let parts = split_range(1, 100, None, Some(30 << 20), CAP);
        assert_eq!(parts, vec![(1, 34), (35, 68), (69, 100)]);
    }

    #[test]
    fn without_a_size_the_range_is_halved_or_cut_where_the_node_says() {
        assert_eq!(split_range(10, 19, None, None, CAP), vec![(10, 14), (15, 19)]);
        assert_eq!(split_range(10, 19, Some(12), None, CAP), vec![(10, 12), (13, 19)]);
        // A suggestion outside the range is ignored.
        assert_eq!(split_range(10, 11, Some(40), None, CAP), vec![(10, 10), (11, 11)]);
    }
}
