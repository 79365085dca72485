//! `lcw verify`: the store checked against the chain.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::args::{DataArgs, NetworkArgs, StoreArgs};

/// Prove the store equals the chain at its last block (ranges, log counts, worker state, window).
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: VerifyArgs, data: DataArgs) -> anyhow::Result<()> {
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
