//! `lcw settle` (the release loop) and `lcw release` (what is releasable, now).

use std::collections::HashSet;

use anyhow::Context;
use clap::Args;
use lcw_schema::profile::Role;
use lcw_settler::settle::{Mode, SettleConfig, SettleSummary};

use crate::args::{DataArgs, KeyArgs, NetworkArgs, StoreArgs, parse_address, parse_job_ids};

/// Release every job in the first block after its dispute window (and, as a keeper, claim
/// timeouts), from the store's schedule.
#[derive(Debug, Args)]
pub(crate) struct SettleArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Settle this worker's jobs (default: the key's own address).
    #[arg(long, conflicts_with = "keeper")]
    worker: Option<String>,
    /// Keeper: every worker's due releases and timeouts, for the bounties.
    #[arg(long)]
    keeper: bool,
    /// Largest gas per transaction; bigger batches are split.
    #[arg(long, env = "LCW_MAX_BATCH_GAS", default_value_t = 15_000_000)]
    max_batch_gas: u64,
    /// Head polling interval in milliseconds.
    #[arg(long, env = "LCW_SETTLE_POLL_MS", default_value_t = 100)]
    poll_ms: u64,
    /// Do not run an indexer in this process (another `lcw index` keeps the store current).
    #[arg(long)]
    no_index: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: the settler's transactions, release lag,
    /// fees and outbox, and the embedded indexer's.
    #[arg(long, env = "LCW_METRICS")]
    metrics: Option<std::net::SocketAddr>,
    /// Print the summary as JSON when stopped.
    #[arg(long)]
    json: bool,
}

/// Release what is releasable now, wait for it to be mined, and report.
#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// The worker whose jobs to release (default: the key's own address).
    #[arg(long)]
    worker: Option<String>,
    /// Only these jobs (comma-separated ids).
    #[arg(long)]
    jobs: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Starts an indexer following the head into `db` unless another process holds the store.
pub(crate) fn spawn_indexer(
    profile: lcw_schema::profile::Profile,
    db: std::path::PathBuf,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    spawn_indexer_with(profile, db, shutdown, None)
}

/// [`spawn_indexer`], serving the process's metrics at `metrics`: the indexer's endpoint while it
/// runs, or the store's and the registered families' when another process indexes the store.
fn spawn_indexer_with(
    profile: lcw_schema::profile::Profile,
    db: std::path::PathBuf,
    shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: Option<std::net::SocketAddr>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut config = lcw_indexer::IndexerConfig::new(profile, db.clone());
        config.progress = lcw_indexer::ProgressMode::Logs;
        config.live.poll_interval = std::time::Duration::from_millis(100);
        config.metrics = metrics;
        match lcw_indexer::keep_running(config, shutdown, None).await {
            Ok(_) | Err(lcw_indexer::IndexerError::Interrupted) => Ok(()),
            Err(lcw_indexer::IndexerError::Locked(_)) => {
                tracing::info!("another lcw process indexes this store; using it");
                let _metrics = metrics.map(|addr| serve_store_metrics(addr, db));
                std::future::pending::<()>().await;
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("the embedded indexer stopped")),
        }
    })
}

pub(crate) async fn run(args: SettleArgs, data: DataArgs) -> anyhow::Result<()> {
    let worker = args.worker.as_deref().map(parse_address).transpose().context("--worker")?;
    let profile = args.network.profile(&data)?;
    let db = args.store.path(&data);
    let signer = if args.keeper {
        args.key.signer(&profile, None, Some(Role::Keeper))?
    } else {
        args.key.signer(&profile, worker, Some(Role::Worker)).or_else(|e| match worker {
            // Releases are permissionless: any funded key may settle a worker's jobs.
            Some(_) => args.key.signer(&profile, None, Some(Role::Keeper)).map_err(|_| e),
            None => Err(e),
        })?
    };
    let mode = if args.keeper { Mode::Keeper } else { Mode::Worker(worker.unwrap_or(signer.address())) };
    let mut config = SettleConfig::new(profile.clone(), db.clone(), mode, signer);
    config.fee_cap = args.key.fees.cap();
    config.max_batch_gas = args.max_batch_gas.max(100_000);
    config.poll_interval = std::time::Duration::from_millis(args.poll_ms.max(10));
    if args.metrics.is_some() {
        let metrics = config.metrics.clone();
        lcw_indexer::metrics::register(std::sync::Arc::new(move || metrics.render()));
    }
    let summary =
        with_indexer(profile, db, args.no_index, args.metrics, "stopping", |rx| lcw_settler::settle::run(config, rx))
            .await?;
    print_summary(&summary, args.json)
}

/// Runs `service` until Ctrl-C or SIGTERM, with an embedded indexer keeping the store current
/// unless `no_index` (then another `lcw index` must); fails if the indexer stops first. With
/// `metrics`, the process's metrics are served there.
pub(crate) async fn with_indexer<T, E, F>(
    profile: lcw_schema::profile::Profile,
    db: std::path::PathBuf,
    no_index: bool,
    metrics: Option<std::net::SocketAddr>,
    stopping: &'static str,
    service: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let rx = crate::stop_on_signal(stopping);
    let indexer = (!no_index).then(|| spawn_indexer_with(profile, db.clone(), rx.clone(), metrics));
    let _metrics = metrics.filter(|_| no_index).map(|addr| serve_store_metrics(addr, db.clone()));
    // The embedded indexer creates the store once the node answers, however long that takes;
    // another process's store is waited for a minute.
    let patience = if no_index { Some(std::time::Duration::from_secs(60)) } else { None };
    wait_for_store(&db, rx.clone(), patience).await?;
    let run = service(rx);
    match indexer {
        Some(mut indexer) => tokio::select! {
            s = run => s.map_err(Into::into),
            r = &mut indexer => { r??; anyhow::bail!("the embedded indexer stopped") }
        },
        None => run.await.map_err(Into::into),
    }
}

/// Serves, at `addr`, what the store `db` says without its indexer and the families registered in
/// this process, until the returned guard is dropped.
pub(crate) fn serve_store_metrics(addr: std::net::SocketAddr, db: std::path::PathBuf) -> AbortOnDrop {
    AbortOnDrop(lcw_indexer::metrics::serve_text(
        addr,
        std::sync::Arc::new(move || lcw_indexer::metrics::render_store(&db)),
    ))
}

/// A task aborted when this is dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits until the store exists (the embedded indexer creates it on first run), at most `limit`
/// (None: until shutdown).
pub(crate) async fn wait_for_store(
    db: &std::path::Path,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    limit: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        if lcw_schema::store::Store::open_readonly(db).is_ok() {
            return Ok(());
        }
        if let Some(limit) = limit
            && started.elapsed() >= limit
        {
            anyhow::bail!("no store at {} after {} s; run `lcw index` first", db.display(), limit.as_secs());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            _ = shutdown.changed() => anyhow::bail!("interrupted"),
        }
    }
}

fn print_summary(s: &SettleSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "sent {} transactions: {} mined, {} reverted, {} replaced, {} dropped; {} jobs released, {} timeouts \
             claimed, {} settled; gas {}",
            s.sent,
            s.mined,
            s.reverted,
            s.bumped,
            s.dropped,
            s.jobs_released,
            s.timeouts_claimed,
            s.settled_stuck,
            s.gas_used
        );
        let waiting = [
            (s.priced_out, "waiting for the market to come under their fee ceiling"),
            (s.unprofitable, "skipped: their bounty does not pay for the gas"),
            (s.live_elsewhere, "left to another settler that already sent them"),
            (s.excluded, "left out: they would revert"),
        ];
        for (n, why) in waiting.into_iter().filter(|(n, _)| *n > 0) {
            println!("{n} jobs {why}");
        }
        if let Some((job, at)) = s.next_due {
            println!("next: job {job} becomes releasable at chain time {at}");
        }
    }
    Ok(())
}

pub(crate) async fn release(args: ReleaseArgs, data: DataArgs) -> anyhow::Result<()> {
    let worker = args.worker.as_deref().map(parse_address).transpose().context("--worker")?;
    let only_jobs = args.jobs.as_deref().map(parse_job_ids).transpose().context("--jobs")?;
    if only_jobs.as_ref().is_some_and(|ids| ids.is_empty()) {
        anyhow::bail!("--jobs lists no job ids");
    }
    let profile = args.network.profile(&data)?;
    let db = args.store.path(&data);
    let signer = args.key.signer(&profile, worker, Some(Role::Worker))?;
    let mode = Mode::Worker(worker.unwrap_or(signer.address()));
    let mut config = SettleConfig::new(profile.clone(), db.clone(), mode, signer);
    config.fee_cap = args.key.fees.cap();
    config.once = true;
    config.only_jobs = only_jobs.map(|ids| ids.into_iter().collect::<HashSet<u64>>());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let indexer = spawn_indexer(profile, db.clone(), rx.clone());
    wait_for_store(&db, rx.clone(), Some(std::time::Duration::from_secs(60))).await?;
    let summary = tokio::select! {
        s = lcw_settler::settle::run(config, rx) => s?,
        r = indexer => { r??; anyhow::bail!("the embedded indexer stopped") }
    };
    if summary.sent == 0 && !args.json {
        println!("nothing is releasable now");
    }
    print_summary(&summary, args.json)
}
