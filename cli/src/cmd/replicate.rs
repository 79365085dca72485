//! `lcw replicate`: the store copied into PostgreSQL for many readers, then followed through its
//! change log. The SQLite store stays the source of truth; the replica is a copy of what readers
//! use, with the analyst views.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lcw_replica::{Applied, CopyReport, FollowConfig, Follower, Replica, ReplicaStatus, ReplicaUrl, Signal, Step};
use lcw_schema::store::{Store, unix_now};

use crate::args::{DataArgs, SecretUrl, StoreArgs};

/// Copy the store into a PostgreSQL replica (tables, analyst views), then follow it: every
/// commit of the indexer reaches the replica through the store's change log, until Ctrl-C. A
/// replica that already holds a copy of this store resumes where it stopped; while PostgreSQL is
/// unreachable it retries with backoff, then catches up.
#[derive(Debug, Args)]
pub(crate) struct ReplicateArgs {
    /// The replica: postgres://USER:PASSWORD@HOST:PORT/DATABASE (no TLS). The password is never
    /// printed.
    #[arg(long, env = "LCW_REPLICA_URL", value_name = "URL")]
    to: SecretUrl,
    #[command(flatten)]
    store: StoreArgs,
    /// Copy or catch up once, then exit (an unreachable replica is an error, not retried).
    #[arg(long, env = "LCW_REPLICATE_ONCE")]
    once: bool,
    /// Copy the store whole first, even when the replica could catch up from where it stands
    /// (repairs a replica edited by hand).
    #[arg(long, env = "LCW_REPLICATE_COPY")]
    copy: bool,
    /// How often to look for new commits in the store, in milliseconds.
    #[arg(long, env = "LCW_REPLICATE_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    poll_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics: the replica's block and lag (blocks,
    /// seconds), whole copies and failed catch-ups.
    #[arg(long, env = "LCW_REPLICATE_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Print the copy report and each catch-up as JSON, one object a line.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ReplicateArgs, data: DataArgs) -> anyhow::Result<()> {
    let db = args.store.path(&data);
    let url = ReplicaUrl::parse(args.to.expose())?;
    let mut config = FollowConfig::new(url.clone(), db.clone());
    config.poll = Duration::from_millis(args.poll_ms);
    config.copy = args.copy;
    config.once = args.once;
    let follower = Follower::new(config);
    let metrics = args.metrics.map(|addr| serve_metrics(addr, follower.status()));
    let stop = crate::stop_on_signal(if args.once { "" } else { "stopping the replica after the current transaction" });
    stop_with(stop, follower.signal());
    let json = args.json;
    let shown = url.clone();
    // The PostgreSQL client is synchronous (it runs a runtime of its own): off the async threads.
    let result = tokio::task::spawn_blocking(move || {
        follower.run(|step| {
            let printed = match step {
                Step::Copied(report) => print_report(report, &shown, json),
                Step::Applied(applied) => report_applied(applied, &shown, json),
            };
            if let Err(e) = printed {
                tracing::warn!(error = %e, "cannot print the replica's progress");
            }
        })
    })
    .await
    .context("the replica's thread failed")?;
    if let Some(m) = metrics {
        m.abort();
    }
    result.with_context(|| format!("following {} into {url}", db.display()))
}

/// `--replica` of `lcw index` and `lcw run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeepReplicaArgs {
    /// Keep a PostgreSQL replica of the store (postgres://USER:PASSWORD@HOST:PORT/DATABASE, no
    /// TLS; the password is never printed) equal to it from this process, as `lcw replicate`
    /// would: copied when it holds no copy of this store, then brought up after each commit.
    /// Indexing never waits for PostgreSQL: while it is down the replica falls behind and catches
    /// up once it is back. A replica of another network is refused.
    #[arg(long = "replica", env = "LCW_REPLICA_URL", value_name = "URL")]
    replica: Option<SecretUrl>,
}

impl KeepReplicaArgs {
    /// The replica's URL, parsed (an error names it redacted), or None without the flag.
    pub(crate) fn url(&self) -> anyhow::Result<Option<ReplicaUrl>> {
        Ok(self.replica.as_ref().map(|u| ReplicaUrl::parse(u.expose())).transpose()?)
    }
}

/// A [`Follower`] running beside the indexer in this process.
pub(crate) struct LiveReplica {
    /// Finishes or stops it.
    pub(crate) signal: Arc<Signal>,
    /// Where the replica stands, for the API.
    pub(crate) status: Arc<ReplicaStatus>,
    /// Ends when it is stopped (`Ok`) or meets an error that needs someone to act.
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl LiveReplica {
    /// Follows `db` into `url` once the indexer has created the store: woken by each of
    /// `commits`, stopped by `stop`; its lag joins the indexer's `/metrics`.
    pub(crate) fn start(
        url: ReplicaUrl,
        db: PathBuf,
        mut commits: tokio::sync::watch::Receiver<lcw_indexer::Committed>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> LiveReplica {
        let mut config = FollowConfig::new(url.clone(), db.clone());
        // The follower looks at the store after each commit: the indexer's notification is a
        // watch channel, which only replaces a value, so a commit never waits for the follower,
        // and commits made while a catch-up runs fold into one wake, applied in one transaction.
        // The poll is a backstop (and keeps the lag in seconds current while nothing commits).
        // While the indexer backfills, the follower gives way to it (`Signal::wake_backfilling`).
        config.poll = Duration::from_secs(1);
        let follower = Follower::new(config);
        let status = follower.status();
        let shown = status.clone();
        lcw_indexer::metrics::register(Arc::new(move || shown.metrics(unix_now())));
        let signal = follower.signal();
        let woken = signal.clone();
        tokio::spawn(async move {
            while commits.changed().await.is_ok() {
                let backfill = commits.borrow_and_update().backfill;
                woken.wake_backfilling(backfill);
            }
        });
        stop_with(stop.clone(), signal.clone());
        let task = tokio::spawn(async move {
            if crate::cmd::settle::wait_for_store(&db, stop, None).await.is_err() {
                // Stopped before the indexer created the store.
                return Ok(());
            }
            tracing::info!(replica = %url, "keeping the replica up to date");
            tokio::task::spawn_blocking(move || follower.run(|_| {}))
                .await
                .context("the replica's thread failed")?
                .with_context(|| format!("keeping the replica {url} up to date with {}", db.display()))
        });
        LiveReplica { signal, status, task }
    }
}

/// Stops `signal`'s follower when `stop` turns true.
fn stop_with(mut stop: tokio::sync::watch::Receiver<bool>, signal: Arc<Signal>) {
    tokio::spawn(async move {
        let _ = stop.wait_for(|s| *s).await;
        signal.stop();
    });
}

fn serve_metrics(addr: SocketAddr, status: Arc<ReplicaStatus>) -> tokio::task::JoinHandle<()> {
    lcw_indexer::metrics::serve_text(addr, Arc::new(move || status.metrics(unix_now())))
}

/// One line per catch-up that changed the replica (the follower logs each one).
fn report_applied(applied: &Applied, url: &ReplicaUrl, json: bool) -> anyhow::Result<()> {
    let block = applied.cursor.map(|c| c.block_number);
    if let Some((_, report)) = &applied.recopied {
        return print_report(report, url, json);
    }
    if applied.entries == 0 {
        return Ok(());
    }
    if json {
        let out = serde_json::json!({
            "entries": applied.entries,
            "upserted": applied.upserted,
            "deleted": applied.deleted,
            "block_rows": applied.block_rows,
            "block": block,
            "seq": applied.seq,
            "lag_blocks": applied.behind_blocks,
            "lag_seconds": applied.lag_secs,
        });
        println!("{out}");
    } else {
        let at = block.map_or_else(|| "no block".to_owned(), |b| format!("block {b}"));
        let age = applied.lag_secs.map_or_else(String::new, |s| format!(", {s} s old"));
        println!(
            "caught up {} entries to {at} (seq {}): {} rows written, {} deleted, {} raw and ledger rows; \
             was {} blocks behind{age}",
            applied.entries, applied.seq, applied.upserted, applied.deleted, applied.block_rows, applied.behind_blocks
        );
    }
    std::io::stdout().flush().context("writing to stdout")
}

/// The store, read-only: the replica never writes it.
pub(crate) fn open_store(db: &Path) -> anyhow::Result<Store> {
    Store::open_readonly(db).with_context(|| format!("opening the store {}", db.display()))
}

/// The replica at `url`, migrated and checked to hold `store`'s network.
pub(crate) fn connect(store: &Store, url: &ReplicaUrl) -> anyhow::Result<Replica> {
    let identity = store
        .identity()?
        .with_context(|| format!("the store {} records no network yet; run lcw index first", store.path().display()))?;
    Ok(Replica::connect(url, &identity)?)
}

fn print_report(report: &CopyReport, url: &ReplicaUrl, json: bool) -> anyhow::Result<()> {
    let seconds = report.elapsed.as_secs_f64();
    let block = report.cursor.map(|c| c.block_number);
    if json {
        let tables: serde_json::Map<String, serde_json::Value> =
            report.tables.iter().map(|(t, n)| ((*t).to_owned(), (*n).into())).collect();
        let out = serde_json::json!({
            "replica": url.to_string(),
            "block": block,
            "rows": report.rows(),
            "seconds": seconds,
            "rows_per_second": report.rows_per_second().round(),
            "tables": tables,
        });
        println!("{out}");
        return std::io::stdout().flush().context("writing to stdout");
    }
    for (table, rows) in &report.tables {
        println!("{table:<18} {rows:>10}");
    }
    let at = block.map_or_else(|| "an empty store".to_owned(), |b| format!("block {b}"));
    println!(
        "copied {} rows at {at} into {url} in {seconds:.2} s ({:.0} rows/s)",
        report.rows(),
        report.rows_per_second()
    );
    std::io::stdout().flush().context("writing to stdout")
}
