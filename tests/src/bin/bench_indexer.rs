//! `bench-indexer` (`make bench-indexer`): how fast lcw backfills and replays a large chain, next
//! to how fast anvil can serve the same logs.
//!
//! 1. A chain with at least `--events` logs of the three contracts: a fresh devnet filled by the
//!    simulator (every job submitted, acknowledged, completed and released), or an existing one
//!    given with `--profile` (topped up by the simulator if it is short).
//! 2. Raw rate: concurrent `eth_getLogs` over the whole range with the indexer's own concurrency
//!    and request size, responses read and counted, nothing stored: the ceiling for a backfill.
//! 3. Backfill: `lcw index --until-head` into a new store, as a separate process; wall time, events/s,
//!    peak RSS (VmHWM) and CPU seconds of lcw and of anvil during the run.
//! 4. Replay: `lcw replay` of that store; rebuild events/s and peak RSS.
//! 5. The CPU budget, when anvil is local (started here, or found listening on the profile's
//!    port): anvil's and lcw's CPU per event, and the most lcw may spend per event for a backfill
//!    at half the raw rate on this machine's cores. Both processes share the cores, so that
//!    figure, not the raw rate alone, says what a backfill here can reach.
//!
//! The figures are printed as a table and, with `--json`, as one JSON object. Nothing here
//! asserts a time: the targets, and figures measured with it, are in docs/src/benchmarks.md.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use lcw_contracts::devnet::{Devnet, DevnetOptions};
use lcw_contracts::simulate::{self, SimulateOptions};
use lcw_schema::profile::Profile;
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(name = "bench-indexer", about = "Backfill, replay and raw eth_getLogs rates on a large devnet")]
struct Args {
    /// Logs the chain must hold (the simulator adds jobs until it does).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Use this running chain's profile instead of starting a devnet (it is topped up if short).
    /// Start it with `lcw devnet --block-time 12 --gas-limit 3000000000 --keep-states 1 --ack-timeout 600
    /// --completion-timeout 600`: anvil's memory grows by tens of MB with every block once the
    /// state is large, so a 1M-event chain must come in few, full blocks.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Where the devnet, the store and the reports go.
    #[arg(long, default_value = "target/bench-indexer")]
    dir: PathBuf,
    /// The lcw binary (default: the one next to this binary).
    #[arg(long)]
    lcw: Option<PathBuf>,
    /// eth_getLogs requests in flight, for the raw rate and lcw alike.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Logs per eth_getLogs request the ranges are sized for, for the raw rate and lcw alike.
    #[arg(long, default_value_t = 10_000)]
    target_logs: u64,
    /// Jobs per second the simulator submits (anvil falls behind above roughly 300/s once the
    /// chain is large, and a slow chain makes the simulator's jobs time out).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Submissions per block at most (with 12 s blocks, 4,000 allows 333 jobs/s).
    #[arg(long, default_value_t = 4_000)]
    per_block: usize,
    /// Workers the simulated jobs spread over.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Block interval of the devnet this bench starts, and the one restored on the chain after
    /// measuring (interval mining is paused while measuring: on a chain this large every empty
    /// block costs anvil seconds of CPU, which would land at random in the timings).
    #[arg(long, default_value_t = 12)]
    block_time: u64,
    /// Dispute window of the devnet this bench starts, in seconds: jobs are released after it.
    #[arg(long, default_value_t = 60)]
    dispute_window: u64,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    chain_events: u64,
    chain_blocks: u64,
    simulate_secs: f64,
    raw_logs: u64,
    raw_secs: f64,
    raw_events_per_sec: f64,
    raw_requests: u64,
    raw_range_blocks: u64,
    backfill_events: u64,
    backfill_secs: f64,
    backfill_events_per_sec: f64,
    backfill_share_of_raw: f64,
    backfill_peak_rss_mb: f64,
    backfill_lcw_cpu_secs: f64,
    backfill_anvil_cpu_secs: Option<f64>,
    /// Anvil's CPU seconds during the fastest raw scan.
    raw_anvil_cpu_secs: Option<f64>,
    /// Cores this machine offers.
    cores: usize,
    /// Anvil's CPU per event served: in the raw scan, and during the backfill (µs).
    anvil_us_per_event_raw: Option<f64>,
    anvil_us_per_event_backfill: Option<f64>,
    /// lcw's CPU per event during the backfill (µs).
    lcw_us_per_event: f64,
    /// The fastest backfill the cores allow with both processes' measured CPU, perfectly overlapped.
    backfill_cpu_bound_events_per_sec: Option<f64>,
    /// The most CPU lcw may spend per event for a backfill at half the raw rate, with anvil
    /// serving at its raw-scan cost and perfect overlap (µs; negative: unreachable).
    lcw_us_per_event_for_half_raw: Option<f64>,
    store_mb: f64,
    replay_events: u64,
    replay_secs: f64,
    replay_events_per_sec: f64,
    replay_peak_rss_mb: f64,
}

/// `lcw index --json` summary fields used here.
#[derive(Debug, Deserialize)]
struct IndexSummary {
    indexed_this_run: u64,
    elapsed_secs: f64,
    events_per_sec: f64,
}

/// `lcw replay --json` fields used here.
#[derive(Debug, Deserialize)]
struct ReplaySummary {
    events: u64,
    rebuild_secs: f64,
    events_per_sec: f64,
    differences: Vec<serde_json::Value>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lcw_schema::ensure_tls();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let lcw = match &args.lcw {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("lcw"),
    };
    if !lcw.exists() {
        bail!("{} does not exist; build it first (`cargo build --release -p lcw-cli`) or pass --lcw", lcw.display());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let mut report = Report::default();

    // 1. The chain.
    let devnet;
    let (profile, profile_path, anvil_pid) = match &args.profile {
        Some(path) => {
            let profile = Profile::load(path).with_context(|| format!("reading {}", path.display()))?;
            let pid = local_listener_pid(&profile.rpc_url);
            if pid.is_none() {
                eprintln!("anvil's process was not found (not local?): its CPU is left out of the report");
            }
            (profile, path.clone(), pid)
        }
        None => {
            let mut options = DevnetOptions::new(dir.join("devnet"));
            options.port = 0;
            // Anvil's memory grows with every block it mines (tens of MB per block once the state
            // is large), so the workload goes into few, full blocks.
            options.block_time = args.block_time;
            options.gas_limit = 3_000_000_000;
            options.prune_history = Some(1);
            options.deploy.ack_timeout = 600;
            options.deploy.completion_timeout = 600;
            options.deploy.dispute_window = args.dispute_window;
            eprintln!("starting a devnet in {}", options.data_dir.display());
            devnet = Devnet::start(&options).await?;
            let pid = devnet.anvil.pid();
            (devnet.profile.clone(), devnet.profile_path.clone(), Some(pid))
        }
    };
    let rpc = profile.rpc_url.clone();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let started = Instant::now();
    loop {
        let have = count_logs(&client, &rpc, &profile).await?;
        if have >= args.events {
            report.chain_events = have;
            break;
        }
        // Five logs per job released by the keeper, plus a session every few jobs.
        let jobs = (args.events - have).div_ceil(5) + 100;
        eprintln!("the chain holds {have} logs; simulating {jobs} more jobs at {} jobs/s", args.rate);
        let options = SimulateOptions {
            jobs,
            rate: Some(args.rate),
            max_per_block: args.per_block,
            workers: args.workers,
            auto_complete: true,
            auto_release: true,
            // JobReleased and KeeperBountyPaid per job: five events for three transactions per
            // job, which keeps anvil's memory (about 25 KB per transaction) within the machine.
            keeper_releases: true,
            ..SimulateOptions::default()
        };
        let mut last = Instant::now();
        let r = simulate::run(&profile, &options, |p| {
            if last.elapsed() > Duration::from_secs(30) {
                last = Instant::now();
                eprintln!("  block {}: submitted {}, released {}", p.head, p.report.submitted, p.report.released);
            }
        })
        .await?;
        if r.reverted > 0 {
            eprintln!("warning: {} simulated transactions reverted", r.reverted);
        }
    }
    report.simulate_secs = started.elapsed().as_secs_f64();
    // Move the whole workload below the indexer's finality depth so all of it is backfill.
    let head = rpc_call(&client, &rpc, "eth_blockNumber", serde_json::json!([])).await?;
    let head = parse_quantity(&head)?;
    make_final(&client, &rpc, &profile).await?;
    report.chain_blocks = head;
    rpc_call(&client, &rpc, "evm_setIntervalMining", serde_json::json!([0]))
        .await
        .context("pausing interval mining for the measurement")?;
    let measured =
        measure(&args, &lcw, &dir, &client, &rpc, &profile, &profile_path, anvil_pid, head, &mut report).await;
    rpc_call(&client, &rpc, "evm_setIntervalMining", serde_json::json!([args.block_time])).await.ok();
    measured?;
    print_report(&report, args.json)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}

/// Raw rate, backfill and replay on the prepared chain, into `report`.
#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    lcw: &std::path::Path,
    dir: &std::path::Path,
    client: &reqwest::Client,
    rpc: &str,
    profile: &Profile,
    profile_path: &std::path::Path,
    anvil_pid: Option<u32>,
    head: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    // 2. Raw eth_getLogs rate.
    let range = {
        let per_block = report.chain_events as f64 / (head.saturating_sub(profile.start_block).max(1)) as f64;
        ((args.target_logs as f64 / per_block.max(1e-9)) as u64).clamp(1, 100_000)
    };
    report.raw_range_blocks = range;
    let mut best: Option<(u64, f64, u64, Option<f64>)> = None;
    for _ in 0..2 {
        let before = anvil_pid.and_then(cpu_secs);
        let (logs, secs, requests) = raw_scan(client, rpc, profile, head, range, args.concurrency).await?;
        let anvil_cpu = before.zip(anvil_pid.and_then(cpu_secs)).map(|(a, b)| b - a);
        if best.is_none_or(|(_, s, _, _)| secs < s) {
            best = Some((logs, secs, requests, anvil_cpu));
        }
    }
    let (raw_logs, raw_secs, raw_requests, raw_anvil_cpu) = best.expect("two scans");
    report.raw_logs = raw_logs;
    report.raw_secs = raw_secs;
    report.raw_requests = raw_requests;
    report.raw_anvil_cpu_secs = raw_anvil_cpu;
    report.raw_events_per_sec = raw_logs as f64 / raw_secs;
    eprintln!("raw eth_getLogs: {raw_logs} logs in {raw_secs:.2} s ({:.0}/s)", report.raw_events_per_sec);

    // 3. Backfill by the real binary.
    let db = dir.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let anvil_cpu_before = anvil_pid.and_then(cpu_secs);
    let mut index = Command::new(lcw);
    index
        .arg("--data-dir")
        .arg(dir)
        .args(["index", "--until-head", "--json", "--progress", "off"])
        .arg("--network")
        .arg(profile_path)
        .arg("--db")
        .arg(&db)
        .args(["--concurrency", &args.concurrency.to_string(), "--target-logs", &args.target_logs.to_string()]);
    let (out, peak, lcw_cpu) = run_measured(index)?;
    let summary: IndexSummary = serde_json::from_str(out.trim()).context("parsing `lcw index --json`")?;
    report.backfill_events = summary.indexed_this_run;
    report.backfill_secs = summary.elapsed_secs;
    report.backfill_events_per_sec = summary.events_per_sec;
    report.backfill_share_of_raw = summary.events_per_sec / report.raw_events_per_sec;
    report.backfill_peak_rss_mb = peak;
    report.backfill_lcw_cpu_secs = lcw_cpu;
    report.backfill_anvil_cpu_secs = anvil_cpu_before.zip(anvil_pid.and_then(cpu_secs)).map(|(a, b)| b - a);
    report.store_mb = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len() as f64 / 1e6)
        .sum();
    eprintln!("backfill: {} events in {:.2} s", summary.indexed_this_run, summary.elapsed_secs);
    budget(report);

    // 4. Replay.
    let mut replay = Command::new(lcw);
    replay.arg("--data-dir").arg(dir).args(["replay", "--json", "--db"]).arg(&db);
    let (out, peak, _) = run_measured(replay)?;
    let summary: ReplaySummary = serde_json::from_str(out.trim()).context("parsing `lcw replay --json`")?;
    if !summary.differences.is_empty() {
        bail!("replay differs from the backfilled store: {:?}", summary.differences);
    }
    report.replay_events = summary.events;
    report.replay_secs = summary.rebuild_secs;
    report.replay_events_per_sec = summary.events_per_sec;
    report.replay_peak_rss_mb = peak;
    Ok(())
}

/// The CPU budget of a backfill on this machine, from the measured CPU of both processes.
fn budget(r: &mut Report) {
    let events = r.backfill_events.max(1) as f64;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    r.cores = cores;
    r.lcw_us_per_event = r.backfill_lcw_cpu_secs / events * 1e6;
    r.anvil_us_per_event_raw = r.raw_anvil_cpu_secs.map(|c| c / r.raw_logs.max(1) as f64 * 1e6);
    r.anvil_us_per_event_backfill = r.backfill_anvil_cpu_secs.map(|c| c / events * 1e6);
    r.backfill_cpu_bound_events_per_sec =
        r.backfill_anvil_cpu_secs.map(|anvil| events / ((anvil + r.backfill_lcw_cpu_secs) / cores as f64));
    // At half the raw rate the run lasts 2 / raw per event, and the cores give `cores` times that.
    r.lcw_us_per_event_for_half_raw =
        r.anvil_us_per_event_raw.map(|anvil| cores as f64 * 2.0 / r.raw_events_per_sec.max(1e-9) * 1e6 - anvil);
}

/// The pid of the local process listening on the TCP port of `url` (Linux), if any.
fn local_listener_pid(url: &str) -> Option<u32> {
    let url = reqwest::Url::parse(url).ok()?;
    if !matches!(url.host_str()?, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return None;
    }
    let port = url.port_or_known_default()?;
    // /proc/net/tcp{,6}: `local_address` is HEXIP:HEXPORT, `st` 0A is LISTEN, field 10 the inode.
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A");
            let on_port = f.get(1)?.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port);
            (listening && on_port).then(|| f.get(9).map(|i| format!("socket:[{i}]"))).flatten()
        })
    })?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_str() == Some(inode.as_str())))
            .then_some(pid)
    })
}

fn print_report(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!("chain: {} logs in {} blocks", r.chain_events, r.chain_blocks);
    println!(
        "raw eth_getLogs:  {:>10.0} logs/s   ({} logs, {:.2} s, {} requests of {} blocks)",
        r.raw_events_per_sec, r.raw_logs, r.raw_secs, r.raw_requests, r.raw_range_blocks
    );
    println!(
        "lcw backfill:     {:>10.0} events/s ({:.0} % of raw; {} events, {:.2} s; peak RSS {:.0} MB; CPU lcw {:.1} s{}; store {:.0} MB)",
        r.backfill_events_per_sec,
        r.backfill_share_of_raw * 100.0,
        r.backfill_events,
        r.backfill_secs,
        r.backfill_peak_rss_mb,
        r.backfill_lcw_cpu_secs,
        r.backfill_anvil_cpu_secs.map(|s| format!(", anvil {s:.1} s")).unwrap_or_default(),
        r.store_mb
    );
    println!(
        "lcw replay:       {:>10.0} events/s ({} events, {:.2} s; peak RSS {:.0} MB)",
        r.replay_events_per_sec, r.replay_events, r.replay_secs, r.replay_peak_rss_mb
    );
    if let (Some(raw), Some(during), Some(bound), Some(half)) = (
        r.anvil_us_per_event_raw,
        r.anvil_us_per_event_backfill,
        r.backfill_cpu_bound_events_per_sec,
        r.lcw_us_per_event_for_half_raw,
    ) {
        println!(
            "CPU per event:    anvil {raw:.1} us serving the raw scan ({:.1} of {} cores busy), {during:.1} us during the backfill; lcw {:.1} us",
            r.raw_anvil_cpu_secs.unwrap_or_default() / r.raw_secs.max(1e-9),
            r.cores,
            r.lcw_us_per_event
        );
        println!(
            "on {} cores:      both processes' CPU allows at most {bound:.0} events/s ({:.0} % of raw); half the raw rate needs lcw at {half:.1} us per event or less",
            r.cores,
            bound / r.raw_events_per_sec.max(1e-9) * 100.0
        );
    }
    Ok(())
}

/// Runs `cmd` to completion, sampling its peak RSS; returns (stdout, peak RSS in MB, CPU seconds).
fn run_measured(mut cmd: Command) -> anyhow::Result<(String, f64, f64)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("starting lcw")?;
    let pid = child.id();
    let mut peak_kb = 0u64;
    let mut cpu = 0.0;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // VmHWM only grows, so the last sample before exit is the peak (to within 10 ms).
        if let Some(kb) = status_field(pid, "VmHWM:") {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(c) = cpu_secs(pid) {
            cpu = c;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().expect("reader thread")?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok((out, peak_kb as f64 / 1024.0, cpu))
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process (Linux clock ticks are 100 per second).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Mines empty blocks until no log of the workload lies above the node's finalized block, so the
/// indexer backfills all of it instead of following the last blocks live with undo images (a run
/// with a fifth of the logs above the finalized block measured 52,900 instead of ~65,000
/// events/s). Small steps: on a large state anvil takes seconds per block, past any sensible
/// request timeout.
async fn make_final(client: &reqwest::Client, rpc: &str, profile: &Profile) -> anyhow::Result<()> {
    let finalized = || async {
        let block = rpc_call(client, rpc, "eth_getBlockByNumber", serde_json::json!(["finalized", false]))
            .await
            .context("reading the finalized block")?;
        parse_quantity(&block["number"]).context("the node has no finalized block")
    };
    // The newest block above the finalized one that holds a log of the workload, if any: walked
    // down one block at a time, so no request asks for more than one block's logs.
    let floor = finalized().await?;
    let mut last = parse_quantity(&rpc_call(client, rpc, "eth_blockNumber", serde_json::json!([])).await?)?;
    while last > floor {
        let logs = rpc_call(client, rpc, "eth_getLogs", filter(profile, last, last)).await?;
        if logs.as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        last -= 1;
    }
    if last <= floor {
        return Ok(());
    }
    eprintln!("mining empty blocks until block {last}, the last with logs, is final (finalized: {floor})");
    while finalized().await? < last {
        rpc_call(client, rpc, "anvil_mine", serde_json::json!(["0x8"]))
            .await
            .context("mining empty blocks to finalize the workload")?;
    }
    Ok(())
}

async fn rpc_call(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let v: serde_json::Value = client.post(url).json(&body).send().await?.error_for_status()?.json().await?;
    if let Some(e) = v.get("error") {
        bail!("{method}: {e}");
    }
    Ok(v["result"].clone())
}

fn parse_quantity(v: &serde_json::Value) -> anyhow::Result<u64> {
    let s = v.as_str().context("expected a hex quantity")?;
    Ok(u64::from_str_radix(s.trim_start_matches("0x"), 16)?)
}

fn filter(profile: &Profile, from: u64, to: u64) -> serde_json::Value {
    let c = &profile.contracts;
    serde_json::json!([{
        "fromBlock": format!("{from:#x}"),
        "toBlock": format!("{to:#x}"),
        "address": [c.worker_registry, c.job_registry, c.ai_config],
    }])
}

/// Logs of the three contracts on the chain so far (one scan in large ranges).
async fn count_logs(client: &reqwest::Client, url: &str, profile: &Profile) -> anyhow::Result<u64> {
    let head = parse_quantity(&rpc_call(client, url, "eth_blockNumber", serde_json::json!([])).await?)?;
    // One block per request: a busy block already holds thousands of logs.
    Ok(raw_scan(client, url, profile, head, 1, 4).await?.0)
}

/// One eth_getLogs response, counted without building the logs.
#[derive(Debug, Deserialize)]
struct LogsResponse {
    result: Option<Vec<serde::de::IgnoredAny>>,
    error: Option<serde_json::Value>,
}

/// Fetches every log from the profile's start block to `head` in `range`-block requests,
/// `concurrency` at a time; returns (logs, seconds, requests).
async fn raw_scan(
    client: &reqwest::Client,
    url: &str,
    profile: &Profile,
    head: u64,
    range: u64,
    concurrency: usize,
) -> anyhow::Result<(u64, f64, u64)> {
    use futures::StreamExt;
    let started = Instant::now();
    let ranges: Vec<(u64, u64)> =
        (profile.start_block..=head).step_by(range as usize).map(|from| (from, (from + range - 1).min(head))).collect();
    let requests = ranges.len() as u64;
    let mut stream = futures::stream::iter(ranges)
        .map(|(from, to)| async move {
            let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": filter(profile, from, to)});
            let bytes = client.post(url).json(&body).send().await?.error_for_status()?.bytes().await?;
            let r: LogsResponse = serde_json::from_slice(&bytes)?;
            if let Some(e) = r.error {
                bail!("eth_getLogs {from}..{to}: {e}");
            }
            Ok::<u64, anyhow::Error>(r.result.map(|l| l.len() as u64).unwrap_or(0))
        })
        .buffer_unordered(concurrency.max(1));
    let mut total = 0;
    while let Some(n) = stream.next().await {
        total += n?;
    }
    Ok((total, started.elapsed().as_secs_f64(), requests))
}
