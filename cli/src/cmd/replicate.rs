//! `lcw replicate`: the store copied into PostgreSQL for many readers, then followed through its
//! change log. The SQLite store stays the source of truth; the replica is a copy of what readers
//! use, with the analyst views.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use lcw_replica::{Applied, CopyReport, Replica, ReplicaUrl};
use lcw_schema::store::Store;

use crate::args::{DataArgs, SecretUrl, StoreArgs};

/// Copy the store into a PostgreSQL replica (tables, analyst views), then follow it: every
/// commit of the indexer reaches the replica through the store's change log, until Ctrl-C. A
/// replica that already holds a copy of this store resumes where it stopped.
#[derive(Debug, Args)]
pub(crate) struct ReplicateArgs {
    /// The replica: postgres://USER:PASSWORD@HOST:PORT/DATABASE (no TLS). The password is never
    /// printed.
    #[arg(long, env = "LCW_REPLICA_URL", value_name = "URL")]
    to: SecretUrl,
    #[command(flatten)]
    store: StoreArgs,
    /// Copy or catch up once, then exit.
    #[arg(long, env = "LCW_REPLICATE_ONCE")]
    once: bool,
    /// Copy the store whole first, even when the replica could catch up from where it stands
    /// (repairs a replica edited by hand).
    #[arg(long, env = "LCW_REPLICATE_COPY")]
    copy: bool,
    /// How often to look for new commits in the store, in milliseconds.
    #[arg(long, env = "LCW_REPLICATE_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    poll_ms: u64,
    /// Print the copy report and each catch-up as JSON, one object a line.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ReplicateArgs, data: DataArgs) -> anyhow::Result<()> {
    let db = args.store.path(&data);
    let url = ReplicaUrl::parse(args.to.expose())?;
    let stop = crate::stop_on_signal(if args.once { "" } else { "stopping the replica at the next commit" });
    // The PostgreSQL client is synchronous (it runs a runtime of its own): off the async threads.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let store = open_store(&db)?;
        let mut replica = connect(&store, &url)?;
        let copying = |replica: &mut Replica| -> anyhow::Result<()> {
            tracing::info!(store = %db.display(), replica = %url, "copying the store");
            let report = replica.copy_from(&store).with_context(|| format!("copying {} into {url}", db.display()))?;
            print_report(&report, &url, args.json)
        };
        match replica.cursor()? {
            _ if args.copy => copying(&mut replica)?,
            None => copying(&mut replica)?,
            Some(c) => tracing::info!(block = c.block_number, seq = c.seq, replica = %url, "resuming"),
        }
        let poll = Duration::from_millis(args.poll_ms);
        loop {
            let applied =
                replica.follow_once(&store).with_context(|| format!("bringing {url} up to {}", db.display()))?;
            report_applied(&applied, &url, args.json)?;
            if *stop.borrow() || (args.once && !applied.partial) {
                return Ok(());
            }
            if applied.partial {
                continue;
            }
            // Sleep in slices so that a signal stops the follower within a slice.
            let until = Instant::now() + poll;
            while Instant::now() < until {
                if *stop.borrow() {
                    return Ok(());
                }
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
        }
    })
    .await
    .context("the replica's thread failed")?
}

/// One line per catch-up that changed the replica; the lag as log fields every time.
fn report_applied(applied: &Applied, url: &ReplicaUrl, json: bool) -> anyhow::Result<()> {
    let block = applied.cursor.map(|c| c.block_number);
    tracing::debug!(
        block,
        seq = applied.seq,
        lag_blocks = applied.behind_blocks,
        lag_secs = applied.lag_secs,
        "replica up to date"
    );
    if let Some((why, report)) = &applied.recopied {
        tracing::warn!(replica = %url, "copied the store anew: {why}");
        return print_report(report, url, json);
    }
    if applied.entries == 0 {
        return Ok(());
    }
    tracing::info!(
        entries = applied.entries,
        upserted = applied.upserted,
        deleted = applied.deleted,
        block_rows = applied.block_rows,
        block,
        seq = applied.seq,
        lag_blocks = applied.behind_blocks,
        lag_secs = applied.lag_secs,
        "caught up"
    );
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
