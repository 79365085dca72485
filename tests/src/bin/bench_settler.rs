//! `bench-settler` (`make bench-settler`): release lag of `lcw settle --keeper` on a devnet with
//! 1 s blocks, next to the lag the official worker's scheduler rules would give the same
//! completions.
//!
//! A devnet (1 s blocks, a short dispute window), the indexer following it and the settler in
//! keeper mode, both in this process; the simulator submits `--jobs` jobs a few per block, its
//! workers acknowledge and complete them, and nobody but the settler releases. Once every job is
//! released, from the store: per job the lag in blocks (release block minus the first block whose
//! timestamp reaches releasableAt) and in seconds (release block timestamp minus releasableAt),
//! gas per released job, settler transactions sent and reverted. The official scheduler
//! (upstream.md 3.4: a probe every 5 min, fire when 20 jobs are eligible or 8 h after the last
//! release, at most 50 jobs per releaseJobs, one scheduler per worker, started at the worker's
//! first completion) is replayed on the same completion times.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use lcw_contracts::devnet::{Devnet, DevnetOptions};
use lcw_contracts::simulate::{self, SimulateOptions};
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_settler::settle::{Mode, SettleConfig};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "bench-settler", about = "Release lag of lcw settle vs the official scheduler")]
struct Args {
    /// Jobs to complete and release.
    #[arg(long, default_value_t = 1_000)]
    jobs: u64,
    /// Dispute window in seconds.
    #[arg(long, default_value_t = 10)]
    window: u64,
    /// Submissions per block (spreads completions over blocks).
    #[arg(long, default_value_t = 10)]
    per_block: usize,
    /// Workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Where the devnet and the store go.
    #[arg(long, default_value = "target/bench-settler")]
    dir: std::path::PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Dist {
    min: i64,
    p50: i64,
    p90: i64,
    p99: i64,
    max: i64,
    mean: f64,
}

fn dist(mut v: Vec<i64>) -> Dist {
    if v.is_empty() {
        return Dist::default();
    }
    v.sort_unstable();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Dist {
        min: v[0],
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: v[v.len() - 1],
        mean: v.iter().sum::<i64>() as f64 / v.len() as f64,
    }
}

#[derive(Debug, Default, Serialize)]
struct Report {
    jobs: u64,
    released: u64,
    window_secs: u64,
    lag_blocks: Dist,
    lag_secs: Dist,
    at_lag_zero_pct: f64,
    settler_txs_sent: u64,
    settler_txs_reverted: u64,
    settler_txs_replaced: u64,
    gas_per_released_job: f64,
    jobs_per_release_tx: f64,
    official_lag_secs: Dist,
    official_release_txs: u64,
    wall_secs: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lcw_schema::ensure_tls();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    let mut options = DevnetOptions::new(dir.join("devnet"));
    options.port = 0;
    options.block_time = 1;
    options.prune_history = Some(64);
    options.deploy.dispute_window = args.window;
    options.deploy.ack_timeout = 600;
    options.deploy.completion_timeout = 600;
    let devnet = Devnet::start(&options).await?;
    let profile = devnet.profile.clone();
    let db = dir.join("lcw.db");

    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut index_config = lcw_indexer::IndexerConfig::new(profile.clone(), db.clone());
    index_config.progress = lcw_indexer::ProgressMode::Off;
    index_config.live.poll_interval = Duration::from_millis(50);
    let indexer = tokio::spawn(lcw_indexer::run(index_config, rx.clone(), None));
    for _ in 0..600 {
        if Store::open_readonly(&db).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keeper = profile.account(Role::Keeper)?;
    let signer = alloy::signers::local::PrivateKeySigner::from_bytes(&keeper.private_key)?;
    let mut settle_config = SettleConfig::new(profile.clone(), db.clone(), Mode::Keeper, signer);
    settle_config.poll_interval = Duration::from_millis(50);
    let settler = tokio::spawn(lcw_settler::settle::run(settle_config, rx.clone()));

    eprintln!("simulating {} jobs, {} per block, {} s dispute window", args.jobs, args.per_block, args.window);
    let traffic = SimulateOptions {
        jobs: args.jobs,
        workers: args.workers,
        auto_complete: true,
        auto_release: false,
        max_per_block: args.per_block,
        ..SimulateOptions::default()
    };
    let sim = simulate::run(&profile, &traffic, |_| {}).await?;
    eprintln!("{} jobs completed; waiting for the releases", sim.completed);
    let deadline = Instant::now() + Duration::from_secs(args.window + 120);
    loop {
        let open: i64 = Store::open_readonly(&db)?.conn().query_row(
            "SELECT count(*) FROM jobs WHERE released_block IS NULL",
            [],
            |r| r.get(0),
        )?;
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("warning: {open} jobs not released in time");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    let summary = settler.await?.context("settler")?;
    indexer.await?.context("indexer")?;
    let mut report = measure(&db, args.window)?;
    report.jobs = args.jobs;
    report.settler_txs_replaced = summary.bumped;
    report.wall_secs = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print(&report);
    }
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    drop(devnet);
    Ok(())
}

fn measure(db: &Path, window: u64) -> anyhow::Result<Report> {
    let store = Store::open_readonly(db)?;
    let conn = store.conn();
    let blocks: Vec<(u64, u64)> = conn
        .prepare("SELECT number, timestamp FROM blocks ORDER BY number")?
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    let ts_of: BTreeMap<u64, u64> = blocks.iter().copied().collect();
    let jobs: Vec<(u64, u64, Option<u64>, Vec<u8>)> = conn
        .prepare("SELECT job_id, completed_at, released_block, worker FROM jobs")?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Option<i64>>(2)?.map(|b| b as u64),
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut lag_blocks = Vec::new();
    let mut lag_secs = Vec::new();
    for (_, completed_at, released, _) in &jobs {
        let Some(released) = released else { continue };
        let due = completed_at + window;
        let first = blocks.iter().find(|(_, ts)| *ts >= due).map(|(n, _)| *n).unwrap_or(*released);
        lag_blocks.push(*released as i64 - first as i64);
        lag_secs.push(ts_of.get(released).copied().unwrap_or(due) as i64 - due as i64);
    }
    let released = lag_blocks.len() as u64;
    let zero = lag_blocks.iter().filter(|l| **l == 0).count();
    let (sent, reverted, release_txs, gas): (i64, i64, i64, i64) = conn.query_row(
        "SELECT count(*), sum(status = 'reverted'), sum(kind = 'release' AND status = 'mined'),
                coalesce(sum(CASE WHEN kind = 'release' AND status = 'mined' THEN gas_used END), 0)
         FROM outbox WHERE status != 'dropped' OR nonce IS NOT NULL",
        [],
        |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<i64>>(1)?.unwrap_or(0),
                r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                r.get(3)?,
            ))
        },
    )?;
    // The official scheduler on the same completions, one per worker.
    let mut by_worker: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for (_, completed_at, _, worker) in &jobs {
        by_worker.entry(worker.clone()).or_default().push(*completed_at);
    }
    let mut official = Vec::new();
    let mut official_txs = 0;
    for completions in by_worker.values() {
        let (lags, txs) = official_scheduler(completions, window);
        official.extend(lags);
        official_txs += txs;
    }
    Ok(Report {
        released,
        window_secs: window,
        at_lag_zero_pct: if released == 0 { 0.0 } else { zero as f64 * 100.0 / released as f64 },
        lag_blocks: dist(lag_blocks),
        lag_secs: dist(lag_secs),
        settler_txs_sent: sent as u64,
        settler_txs_reverted: reverted as u64,
        gas_per_released_job: if released == 0 { 0.0 } else { gas as f64 / released as f64 },
        jobs_per_release_tx: if release_txs == 0 { 0.0 } else { released as f64 / release_txs as f64 },
        official_lag_secs: dist(official),
        official_release_txs: official_txs,
        ..Report::default()
    })
}

/// upstream.md 3.4 on chain time: probes every 300 s from the first completion; a probe fires
/// when at least 20 jobs are eligible or 8 h have passed since the last release; a cycle
/// releases at most 50 jobs (sorted by id, here by completion) and lands a second later.
/// Returns each job's lag in seconds after releasableAt, and the releaseJobs transactions.
fn official_scheduler(completions: &[u64], window: u64) -> (Vec<i64>, u64) {
    const PROBE: u64 = 300;
    const THRESHOLD: usize = 20;
    const INTERVAL: u64 = 8 * 3600;
    const MAX_BATCH: usize = 50;
    let mut pending: Vec<u64> = completions.to_vec();
    pending.sort_unstable();
    let Some(&start) = pending.first() else { return (Vec::new(), 0) };
    let mut last_release = start;
    let mut lags = Vec::new();
    let mut txs = 0;
    let mut now = start;
    while !pending.is_empty() {
        now += PROBE;
        let eligible: Vec<usize> = (0..pending.len()).filter(|i| pending[*i] + window <= now).collect();
        if eligible.len() >= THRESHOLD || (now - last_release >= INTERVAL && !eligible.is_empty()) {
            let batch: Vec<usize> = eligible.into_iter().take(MAX_BATCH).collect();
            for i in batch.iter().rev() {
                let c = pending.remove(*i);
                lags.push((now + 1) as i64 - (c + window) as i64);
            }
            txs += 1;
            last_release = now;
        }
    }
    (lags, txs)
}

fn print(r: &Report) {
    let d = |d: &Dist| {
        format!("min {} p50 {} p90 {} p99 {} max {} (mean {:.2})", d.min, d.p50, d.p90, d.p99, d.max, d.mean)
    };
    println!("{} jobs, {} released, {} s dispute window, 1 s blocks", r.jobs, r.released, r.window_secs);
    println!("lcw settle --keeper");
    println!("  lag in blocks:   {}", d(&r.lag_blocks));
    println!("  lag in seconds:  {}", d(&r.lag_secs));
    println!("  at lag 0:        {:.1} %", r.at_lag_zero_pct);
    println!(
        "  transactions:    {} sent, {} reverted, {} replaced; {:.1} jobs per release, {:.0} gas per released job",
        r.settler_txs_sent,
        r.settler_txs_reverted,
        r.settler_txs_replaced,
        r.jobs_per_release_tx,
        r.gas_per_released_job
    );
    println!("official scheduler rules (5 min probe, 20-job threshold, 8 h interval, 50 per batch)");
    println!("  lag in seconds:  {}", d(&r.official_lag_secs));
    println!("  transactions:    {}", r.official_release_txs);
}
