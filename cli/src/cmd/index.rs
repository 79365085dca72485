//! `lcw index`: backfill then follow the head.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lcw_indexer::{IndexerConfig, ProgressMode};

use crate::args::{DataArgs, NetworkArgs, StoreArgs};
use crate::cmd::replicate::{KeepReplicaArgs, LiveReplica};

/// Index WorkerRegistry, JobRegistry and AIConfig events into the store.
#[derive(Debug, Args)]
pub(crate) struct IndexArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Stop once the head is indexed and print a summary.
    #[arg(long)]
    until_head: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// First block of a new store (default: the profile's start_block).
    #[arg(long, env = "LCW_FROM_BLOCK")]
    from_block: Option<u64>,
    /// eth_getLogs requests in flight during backfill.
    #[arg(long, env = "LCW_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// Blocks in the first eth_getLogs request; the range then grows (at most twofold per
    /// answer) or shrinks towards --target-logs logs per request.
    #[arg(long, env = "LCW_RANGE", default_value_t = 1)]
    range: u64,
    /// Largest eth_getLogs range.
    #[arg(long, env = "LCW_MAX_RANGE", default_value_t = 100_000)]
    max_range: u64,
    /// Logs per request the range adapts to.
    #[arg(long, env = "LCW_TARGET_LOGS", default_value_t = 10_000)]
    target_logs: u64,
    /// Blocks to stay behind the head.
    #[arg(long, env = "LCW_CONFIRMATIONS", default_value_t = 0)]
    confirmations: u64,
    /// Blocks below the head considered final when the node has no finalized tag.
    #[arg(long, env = "LCW_FINALITY_DEPTH", default_value_t = 64)]
    finality_depth: u64,
    /// Head polling interval in milliseconds (also the fallback when the WebSocket drops).
    #[arg(long, env = "LCW_POLL_MS", default_value_t = 500)]
    poll_ms: u64,
    /// Per-request RPC timeout in seconds.
    #[arg(long, env = "LCW_RPC_TIMEOUT", default_value_t = 30)]
    rpc_timeout: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (with --replica, the replica's lag too).
    #[arg(long, env = "LCW_METRICS")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    replica: KeepReplicaArgs,
    /// Progress display: auto (a bar on a terminal, logs otherwise), logs, off.
    #[arg(long, env = "LCW_PROGRESS", default_value = "auto")]
    progress: String,
}

pub(crate) async fn run(args: IndexArgs, data: DataArgs) -> anyhow::Result<()> {
    let profile = args.network.profile(&data)?;
    let db = args.store.path(&data);
    let mut config = IndexerConfig::new(profile, db.clone());
    config.from_block = args.from_block;
    config.backfill.concurrency = args.concurrency.max(1);
    config.backfill.initial_range = args.range.max(1);
    config.backfill.max_range = args.max_range.max(1);
    config.backfill.target_logs = args.target_logs.max(1);
    config.live.confirmations = args.confirmations;
    config.live.finality_depth = args.finality_depth;
    config.live.poll_interval = Duration::from_millis(args.poll_ms.max(50));
    config.rpc_timeout = Duration::from_secs(args.rpc_timeout.max(1));
    config.until_head = args.until_head;
    config.metrics = args.metrics;
    config.progress = match args.progress.as_str() {
        "auto" => ProgressMode::Auto,
        "logs" => ProgressMode::Logs,
        "off" => ProgressMode::Off,
        other => anyhow::bail!("--progress must be auto, logs or off, not `{other}`"),
    };
    let replica = args.replica.url()?;
    let rx = crate::stop_on_signal("stopping after the current commit");
    let summary = match replica {
        None => lcw_indexer::run(config, rx, None).await,
        Some(url) => index_with_replica(config, url, db.clone(), rx).await?,
    };
    let summary = summary.with_context(|| format!("indexing into {}", db.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "indexed chain {} to block {} (head {}, finalized {}): {} events in the store, {} this run in {:.1} s \
             ({:.0} events/s), {} undecodable, {} reorgs",
            summary.chain_id,
            summary.indexed_block,
            summary.head,
            summary.finalized_block,
            summary.total_events,
            summary.indexed_this_run,
            summary.elapsed_secs,
            summary.events_per_sec,
            summary.undecodable,
            summary.reorgs
        );
        for (event, n) in &summary.events {
            println!("  {event:<28} {n}");
        }
    }
    Ok(())
}

/// Indexes while a [`LiveReplica`] keeps `url` up to date with the store. The indexer's own
/// result is returned as it is; the follower's errors end the command.
async fn index_with_replica(
    config: IndexerConfig,
    url: lcw_replica::ReplicaUrl,
    db: std::path::PathBuf,
    rx: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Result<lcw_indexer::Summary, lcw_indexer::IndexerError>> {
    // The indexer stops on a signal, or when the replica's follower meets an error
    // that needs someone to act (another network's replica, a login refused).
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut signal = rx;
    let forward = stop_tx.clone();
    tokio::spawn(async move {
        let _ = signal.wait_for(|s| *s).await;
        let _ = forward.send(true);
    });
    let (commits, committed) = tokio::sync::watch::channel(lcw_indexer::Committed::default());
    let mut live = LiveReplica::start(url, db.clone(), committed, stop.clone());
    let indexer = lcw_indexer::run(config, stop, Some(commits));
    tokio::pin!(indexer);
    let mut followed = None;
    let indexed = tokio::select! {
        r = &mut indexer => r,
        r = &mut live.task => match r {
            // Stopped by the signal, as the indexer is.
            Ok(Ok(())) => {
                followed = Some(Ok(()));
                indexer.await
            }
            r => {
                let _ = stop_tx.send(true);
                let _ = indexer.await;
                return Err(match r {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("the replica's follower stopped"),
                    Err(e) => anyhow::anyhow!("the replica's follower failed: {e}"),
                });
            }
        },
    };
    // Indexed to the head: the replica is brought up to the store before the summary.
    // Interrupted or failed: the follower stops after its current transaction.
    let caught_up = indexed.is_ok() && !*stop_tx.borrow();
    if caught_up {
        live.signal.finish();
    } else {
        live.signal.stop();
    }
    let followed = match followed {
        Some(done) => done,
        None => live.task.await.context("the replica's follower failed")?,
    };
    if caught_up {
        followed.context(
            "the store is indexed, but the replica could not be brought up to it; `lcw replicate --once` \
             does it later",
        )?;
    } else if let Err(e) = followed {
        tracing::warn!(error = %format!("{e:#}"), "the replica's follower stopped");
    }
    Ok(indexed)
}
