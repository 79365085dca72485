//! `lcw verify`: the store checked against the chain, or its PostgreSQL replica against the
//! store.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::args::{DataArgs, NetworkArgs, SecretUrl, StoreArgs};

/// Prove the store equals the chain at its last block (ranges, log counts, worker state, window);
/// with --replica, prove a PostgreSQL replica equals the store.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Compare this PostgreSQL replica (`lcw replicate`) with the store instead of the store with
    /// the chain: rows and a content digest per table, and the cursor. The password is never
    /// printed.
    #[arg(long, env = "LCW_REPLICA_URL", value_name = "URL")]
    replica: Option<SecretUrl>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: VerifyArgs, data: DataArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.replica {
        return replica(url, args.store.path(&data), args.json).await;
    }
    let profile = args.network.profile(&data)?;
    let db = args.store.path(&data);
    let report = lcw_indexer::verify::verify(&profile, &db, Duration::from_secs(30))
        .await
        .with_context(|| format!("verifying {}", db.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "checked at block {}: {} ranges, {} logs, {} workers",
            report.block, report.ranges, report.logs, report.workers
        );
        if report.ok() {
            println!("the store equals the chain");
        }
        for d in &report.differences {
            println!("  {}: {}", d.check, d.detail);
        }
    }
    if !report.ok() {
        anyhow::bail!("{} differences between the store and the chain", report.differences.len());
    }
    Ok(())
}

/// The replica at `url` against the store at `db`: one line per table, and an error naming the
/// tables that differ.
async fn replica(url: &SecretUrl, db: std::path::PathBuf, json: bool) -> anyhow::Result<()> {
    use crate::cmd::replicate::{connect, open_store};
    let url = lcw_replica::ReplicaUrl::parse(url.expose())?;
    let shown = url.to_string();
    // The PostgreSQL client is synchronous (it runs a runtime of its own): off the async threads.
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<lcw_replica::VerifyReport> {
        let store = open_store(&db)?;
        let mut replica = connect(&store, &url)?;
        lcw_replica::verify(&store, &mut replica).with_context(|| format!("comparing {url} with the store"))
    })
    .await
    .context("the check's thread failed")??;
    let differing = report.differing();
    let hex = |d: &[u8]| alloy::hex::encode(d);
    if json {
        let tables: Vec<serde_json::Value> = report
            .tables
            .iter()
            .map(|t| {
                serde_json::json!({
                    "table": t.table, "same": t.same(), "store_rows": t.store_rows, "replica_rows": t.replica_rows,
                    "store_digest": hex(&t.store_digest), "replica_digest": hex(&t.replica_digest),
                })
            })
            .collect();
        let cursor = |c: Option<(u64, Vec<u8>)>| {
            c.map(|(n, h)| serde_json::json!({ "block": n, "hash": format!("0x{}", hex(&h)) }))
        };
        let replica_cursor = report.replica_cursor.as_ref().map(|c| (c.block_number as u64, c.block_hash.clone()));
        let out = serde_json::json!({
            "replica": shown, "same": report.ok(), "differing": differing, "tables": tables,
            "store_cursor": cursor(report.store_cursor.clone()), "replica_cursor": cursor(replica_cursor),
        });
        println!("{out}");
    } else {
        for t in &report.tables {
            let verdict = if t.same() { "same" } else { "DIFFERS" };
            println!("{:<18} {:>10} {:>10}  {verdict}", t.table, t.store_rows, t.replica_rows);
        }
        let block = |c: Option<u64>| c.map_or_else(|| "none".to_owned(), |n| n.to_string());
        let store_block = report.store_cursor.as_ref().map(|c| c.0);
        let replica_block = report.replica_cursor.as_ref().map(|c| c.block_number as u64);
        let verdict = if report.cursor_same() { "same" } else { "DIFFERS" };
        println!("{:<18} {:>10} {:>10}  {verdict}", "cursor (block)", block(store_block), block(replica_block));
        if report.ok() {
            println!("the replica {shown} equals the store");
        }
    }
    if !differing.is_empty() {
        if !report.cursor_same() {
            // A replica behind the store differs from it by construction.
            let at = |c: Option<u64>| c.map_or_else(|| "none".to_owned(), |n| n.to_string());
            anyhow::bail!(
                "the replica {shown} stands at block {} and the store at {}, so they differ in {}: let lcw replicate \
                 catch it up (lcw replicate --to URL --once), then verify again",
                at(report.replica_cursor.as_ref().map(|c| c.block_number as u64)),
                at(report.store_cursor.as_ref().map(|c| c.0)),
                differing.join(", ")
            );
        }
        anyhow::bail!(
            "the replica {shown} differs from the store in {}; both stand at the same block, so the replica was \
             changed by something else than lcw: copy the store again with lcw replicate --to URL --copy",
            differing.join(", ")
        );
    }
    Ok(())
}
