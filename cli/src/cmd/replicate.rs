//! `lcw replicate`: the store copied into PostgreSQL for many readers. The SQLite store stays
//! the source of truth; the replica is a copy of what readers use, with the analyst views.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use lcw_replica::{CopyReport, Replica, ReplicaUrl};
use lcw_schema::store::Store;

use crate::args::{DataArgs, SecretUrl, StoreArgs};

/// Copy one snapshot of the store into a PostgreSQL replica (tables, analyst views), replacing
/// what it held, and report the rows copied.
#[derive(Debug, Args)]
pub(crate) struct ReplicateArgs {
    /// The replica: postgres://USER:PASSWORD@HOST:PORT/DATABASE (no TLS). The password is never
    /// printed.
    #[arg(long, env = "LCW_REPLICA_URL", value_name = "URL")]
    to: SecretUrl,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ReplicateArgs, data: DataArgs) -> anyhow::Result<()> {
    let db = args.store.path(&data);
    let url = ReplicaUrl::parse(args.to.expose())?;
    // The PostgreSQL client is synchronous (it runs a runtime of its own): off the async threads.
    let (report, url) = tokio::task::spawn_blocking(move || -> anyhow::Result<(CopyReport, ReplicaUrl)> {
        let store = open_store(&db)?;
        let mut replica = connect(&store, &url)?;
        tracing::info!(store = %db.display(), replica = %url, "copying the store");
        let report = replica.copy_from(&store).with_context(|| format!("copying {} into {url}", db.display()))?;
        Ok((report, url))
    })
    .await
    .context("the copy's thread failed")??;
    print_report(&report, &url, args.json)
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
        return Ok(());
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
    Ok(())
}
