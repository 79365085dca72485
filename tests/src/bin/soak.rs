//! `soak` (`make soak`): lcw's money path under everything a real network does.
//!
//! A devnet with 1 s blocks and short windows, lcw's own worker (`lcw run --work` on the real LLM
//! server behind a gate) beside workers the simulator drives, lcw's keeper (`lcw run --keeper`,
//! its own key), and `lcw simulate` sending consumer traffic with every outcome for the whole
//! run. Each lcw process talks to the chain through its own fault-injecting proxy. At random
//! moments drawn from a seeded RNG (`--seed` replays a run): reorgs of depth 1–10, kill -9 and
//! restart of each lcw process, RPC storms (drops, garbled answers, 429s, 5xx, slow answers),
//! refused and evicted transactions, base fee spikes far above the fee ceiling, low-balance
//! episodes of lcw's keys, LLM outages and slow answers.
//!
//! Then the traffic stops, everything drains, the lcw processes are stopped with SIGTERM, and
//! the soak checks and prints: jobs submitted, served, released and timed out, the timeouts that
//! were lcw's fault (0), reverted transactions of lcw's keys (0, but races lost after lcw's last
//! accepted send of them or to a reorg), fees against the ceiling and the market, nonce gaps (0),
//! outbox rows and bytes per job, every job released at most once, release lag, each lcw store
//! against a fresh index, its replay and the chain, and how long each restart after a kill took
//! to be back at work (within 90 s). It exits 1 when an invariant fails, after printing
//! everything (`--json` prints the report as JSON).

#[path = "../soak/mod.rs"]
mod soak;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use clap::Parser;
use lcw_schema::store::Store;
use soak::faults::Injector;
use soak::report::Report;
use soak::rig::Rig;
use soak::scan::Scan;
use soak::traffic::Traffic;
use soak::{Config, say};

#[derive(Debug, Parser)]
#[command(name = "soak", about = "lcw's money path under reorgs, kills, RPC faults, fee spikes and LLM outages")]
struct Args {
    /// Minutes of traffic and faults (setup and drain come on top).
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// Seed of the fault schedule (default: random; printed, to replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// Jobs per second the consumers submit (a quarter go to lcw's worker).
    #[arg(long, default_value_t = 0.6)]
    rate: f64,
    /// lcw's fee ceiling (--max-fee-per-gas), in gwei.
    #[arg(long, default_value_t = 100)]
    max_fee_gwei: u64,
    /// Tokens lcw's worker generates per job.
    #[arg(long, default_value_t = 24)]
    num_predict: u32,
    /// Longest drain after the traffic stops, in seconds.
    #[arg(long, default_value_t = 240)]
    drain_secs: u64,
    /// Where the devnet, the stores and the logs go (emptied first).
    #[arg(long, default_value = "target/soak")]
    dir: std::path::PathBuf,
    /// The lcw binary (default: the one next to this binary).
    #[arg(long)]
    lcw: Option<std::path::PathBuf>,
    /// No faults: the same traffic on a quiet network (a baseline for the figures).
    #[arg(long)]
    no_faults: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    lcw_schema::ensure_tls();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    soak::start_clock();
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(rand::random);
    let lcw = match &args.lcw {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("lcw"),
    };
    anyhow::ensure!(lcw.exists(), "{} does not exist; build it (`make soak` does) or pass --lcw", lcw.display());
    std::fs::create_dir_all(&args.dir)?;
    let config = Config {
        seed,
        max_fee_per_gas: args.max_fee_gwei as u128 * soak::GWEI,
        dir: args.dir.canonicalize()?,
        lcw: lcw.clone(),
        num_predict: args.num_predict,
        drain_secs: args.drain_secs,
    };
    say!(
        "soak: seed {seed} (replay with --seed {seed}), {} min, {} jobs/s, ceiling {} gwei",
        args.minutes,
        args.rate,
        args.max_fee_gwei
    );
    let rig = Arc::new(Rig::start(&config).await?);
    let mut report = Report { seed, minutes: args.minutes, rate: args.rate, ..Report::default() };
    report.setup_secs = started.elapsed().as_secs_f64();
    let first_block = rig.head().await;

    // Traffic and faults.
    let until = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut traffic = Traffic::start(&rig, &lcw, args.rate, seed, until)?;
    let mut injector = Injector::new(rig.clone(), seed);
    let fault_log = injector.log.clone();
    let restart_log = injector.restarts.clone();
    let no_faults = args.no_faults;
    let faults = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        if !no_faults {
            injector.run(until).await;
        }
    });
    let mut next_status = Instant::now() + Duration::from_secs(60);
    let mut exits = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        traffic.tick(until)?;
        watchdog(&rig, &mut exits).await;
        if Instant::now() >= next_status {
            next_status += Duration::from_secs(60);
            let injected = fault_log.lock().expect("fault log").len();
            status(&rig, injected).await;
        }
    }
    say!("traffic period over; waiting for the running fault episodes to end");
    while !faults.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        watchdog(&rig, &mut exits).await;
    }
    say!("every fault is over; draining (at most {} s)", config.drain_secs);

    // Drain: no new submissions; the simulated workers finish theirs, lcw settles everything it
    // owes. The simulator is stopped once nothing is owed (after a fee spike it can wait forever
    // for a submission it gave up on).
    let drain_started = Instant::now();
    let drain_deadline = drain_started + Duration::from_secs(config.drain_secs);
    // A simulated worker's job that the keeper leaves unreleased (its bounty below the gas, at
    // the 1 gwei minimum tip, until other jobs join it) does not hold the drain up once nothing
    // has changed for a while.
    let mut quiet = 0;
    let mut still: (Owed, Instant) = (Owed::default(), Instant::now());
    let mut next_note = Instant::now();
    while Instant::now() < drain_deadline && quiet < 3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        traffic.tick(until)?;
        watchdog(&rig, &mut exits).await;
        let owed = owed(&rig).unwrap_or(Owed { lcw: u64::MAX, others: u64::MAX });
        if owed != still.0 {
            still = (owed, Instant::now());
        }
        let settled = owed.others == 0 || still.1.elapsed() >= UNCHANGED_FOR;
        quiet = if owed.lcw == 0 && settled { quiet + 1 } else { 0 };
        if Instant::now() >= next_note {
            next_note += Duration::from_secs(30);
            say!(
                "draining: lcw still owes {} job(s) and live transactions; {} job(s) of the simulated workers unreleased",
                owed.lcw,
                owed.others
            );
        }
    }
    traffic.finish(Instant::now() + Duration::from_secs(5)).await;
    // Freeze the chain, let both stores reach its head, and stop the processes cleanly.
    rig.anvil.anvil_set_interval_mining(0).await?;
    let head = rig.head().await;
    let cursor = |db: &std::path::Path| lcw_tests::indexing::cursor(db).map(|c| c.0).unwrap_or_default();
    lcw_tests::wait_until(Duration::from_secs(60), || async {
        cursor(&rig.keeper_db) >= head && cursor(&rig.worker_db) >= head
    })
    .await;
    report.drain_secs = drain_started.elapsed().as_secs_f64();
    for name in ["keeper", "worker"] {
        let mut p = rig.proc(name).lock().expect("proc");
        let stop = p.stop(Duration::from_secs(30));
        report
            .stops
            .push(format!("{name}: {}", stop.map(|s| s.to_string()).unwrap_or_else(|| "killed after 30 s".into())));
        report.kills.insert(p.name, p.kills);
    }
    report.crashes = exits.iter().map(|e| format!("{} at block {}: {}", e.kind, e.start_block, e.detail)).collect();
    say!("lcw stopped at block {head}; checking");

    // Checks.
    let checks_started = Instant::now();
    report.blocks = (first_block, head);
    report.faults = fault_log.lock().expect("fault log").clone();
    report.restarts = restart_log.lock().expect("restarts").clone();
    report.restarts.sort_by_key(|r| r.n);
    for f in &report.faults {
        *report.faults_by_kind.entry(f.kind).or_default() += 1;
    }
    report.traffic = traffic.runs.clone();
    for (name, proxy) in [("keeper", &rig.keeper_rpc), ("worker", &rig.worker_rpc), ("simulator", &rig.sim_rpc)] {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &proxy.counts;
        report.proxy.insert(
            name,
            [
                c.requests.load(Relaxed),
                c.faults.load(Relaxed),
                c.refused_txs.load(Relaxed),
                c.evicted_txs.load(Relaxed),
                c.held_txs.load(Relaxed),
            ],
        );
    }
    let fresh = config.dir.join("fresh.db");
    lcw_tests::indexing::until_head(rig.net.profile(), &fresh).await;
    let scan = Scan::read(&rig.anvil, &[rig.keeper_addr, rig.worker_addr]).await?;
    // What a late or missed job is blamed on: the faults and the exits nobody asked for.
    let mut faults = report.faults.clone();
    faults.extend(exits.iter().cloned());
    report.jobs = soak::check::jobs(&fresh)?;
    report.lcw_worker = soak::check::worker_jobs(&fresh, &rig.worker_db, rig.worker_addr, &faults)?;
    report.lcw_txs_mined = scan.txs.len() as u64;
    let sends = soak::money::sends(&rig);
    report.reverted = soak::money::reverted(&rig, &scan, &fresh, &report.faults, &sends).await;
    report.fees = soak::money::fees(&rig, &scan)?;
    report.nonces.push(soak::money::nonces(&rig, &scan, "keeper", rig.keeper_addr, &rig.keeper_db).await?);
    report.nonces.push(soak::money::nonces(&rig, &scan, "worker", rig.worker_addr, &rig.worker_db).await?);
    report.outbox.push(soak::money::outbox_size("keeper", &rig.keeper_db)?);
    report.outbox.push(soak::money::outbox_size("worker", &rig.worker_db)?);
    let stores = [("keeper", rig.keeper_db.as_path()), ("worker", rig.worker_db.as_path())];
    report.releases = soak::check::releases(&fresh, &stores, &scan, &faults)?;
    for (name, db) in stores {
        report.stores.push(soak::check::store(&rig, name, db, &fresh).await);
    }
    report.check_secs = checks_started.elapsed().as_secs_f64();
    report.wall_secs = started.elapsed().as_secs_f64();
    report.judge();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    std::fs::write(config.dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(if report.passed() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}

/// Restarts an lcw process that exited without being asked to; the exit goes on the timeline
/// (what the checks blame a late job on) as a record of kind `lcw exit`.
async fn watchdog(rig: &Rig, exits: &mut Vec<soak::faults::Record>) {
    for name in ["keeper", "worker"] {
        let cause = rig.proc(name).lock().expect("proc").exited();
        let Some(cause) = cause else { continue };
        let head = rig.head().await;
        say!("lcw {name} exited by itself at block {head}: {cause}; restarting it");
        let now = soak::elapsed();
        exits.push(soak::faults::Record {
            n: 0,
            kind: if name == "keeper" { "keeper exit" } else { "worker exit" },
            detail: cause,
            start_s: now,
            end_s: now,
            start_block: head,
            end_block: head,
        });
        if let Err(e) = rig.proc(name).lock().expect("proc").spawn() {
            say!("cannot restart the {name}: {e:#}");
        }
    }
}

/// What lcw still owes once the traffic has stopped: jobs it must release, time out or settle,
/// and live outbox rows. Jobs of simulated workers stranded on closed sessions are left out
/// (only the simulator's keeper settles those; a keeper is not paid to).
/// What is still owed at the drain: by lcw (its worker's jobs, its live transactions, the timeouts
/// its keeper claims), and the simulated workers' completed jobs that only its keeper releases,
/// when their bounty pays for the gas.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Owed {
    lcw: u64,
    others: u64,
}

/// How long the simulated workers' unreleased jobs may stay unchanged before the drain stops
/// waiting for them.
const UNCHANGED_FOR: Duration = Duration::from_secs(40);

fn owed(rig: &Rig) -> anyhow::Result<Owed> {
    let store = Store::open_readonly(&rig.keeper_db)?;
    let (mine, others): (i64, i64) = store.conn().query_row(
        "SELECT count(CASE WHEN j.worker = ?1 OR j.state != 'COMPLETED' THEN 1 END),
                count(CASE WHEN j.worker != ?1 AND j.state = 'COMPLETED' THEN 1 END)
         FROM jobs j LEFT JOIN sessions s ON s.session_id = j.session_id
         WHERE j.released_block IS NULL AND j.timed_out_block IS NULL AND j.settled_no_fault = 0
           AND coalesce(j.guilty, 0) = 0
           AND NOT (j.state IN ('SUBMITTED', 'ACKNOWLEDGED') AND s.status = 'CLOSED' AND j.worker != ?1)",
        [rig.worker_addr.as_slice()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut live = 0i64;
    for db in [&rig.keeper_db, &rig.worker_db] {
        live += Store::open_readonly(db)?.conn().query_row(
            "SELECT count(*) FROM outbox WHERE status IN ('intent', 'sent')",
            [],
            |r| r.get::<_, i64>(0),
        )?;
    }
    Ok(Owed { lcw: (mine + live) as u64, others: others as u64 })
}

/// The once-a-minute status line.
async fn status(rig: &Rig, faults: usize) {
    let head = rig.anvil.get_block_number().await.unwrap_or_default();
    let figures = Store::open_readonly(&rig.keeper_db).ok().and_then(|s| {
        s.conn()
            .query_row(
                "SELECT count(*), count(completed_block), count(released_block),
                        count(CASE WHEN timed_out_block IS NOT NULL AND settled_no_fault = 0 THEN 1 END),
                        count(CASE WHEN worker = ?1 THEN 1 END), count(CASE WHEN worker = ?1 THEN completed_block END)
                 FROM jobs",
                [rig.worker_addr.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .ok()
    });
    let (kills_k, kills_w) = (rig.keeper.lock().expect("proc").kills, rig.worker.lock().expect("proc").kills);
    match figures {
        Some((jobs, done, released, timed_out, ours, ours_done)) => say!(
            "status: block {head}; jobs {jobs} submitted, {done} served, {released} released, {timed_out} timed out; lcw's worker {ours_done}/{ours} completed; {faults} faults, kills keeper {kills_k} worker {kills_w}"
        ),
        None => say!("status: block {head}; the keeper's store is not readable now; {faults} faults"),
    }
}
