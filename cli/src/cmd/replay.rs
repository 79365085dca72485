//! `lcw replay`: rebuild the projections from the raw logs (no RPC) and compare.

use anyhow::Context;
use clap::Args;

use crate::args::{DataArgs, StoreArgs};

/// Rebuild every projection from the raw logs alone and check it equals the store.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Replace the projections by the rebuilt ones when they differ (stop `lcw index` first).
    #[arg(long)]
    write: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: ReplayArgs, data: DataArgs) -> anyhow::Result<()> {
    let db = args.store.path(&data);
    let report = tokio::task::spawn_blocking({
        let db = db.clone();
        move || lcw_indexer::replay::replay(&db, args.write)
    })
    .await?
    .with_context(|| format!("replaying {}", db.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "replayed {} events up to block {} in {:.2} s ({:.0} events/s)",
            report.events, report.block, report.rebuild_secs, report.events_per_sec
        );
        if report.equal() {
            println!("projections equal their replay");
        } else {
            for d in &report.differences {
                println!(
                    "  {}: {} rows only in the store, {} only in the replay",
                    d.table, d.only_in_first, d.only_in_second
                );
            }
            if report.written {
                println!("projections replaced by the replay");
            }
        }
    }
    if !report.equal() && !report.written {
        anyhow::bail!("projections differ from their replay; run `lcw replay --write` to rebuild them");
    }
    Ok(())
}
