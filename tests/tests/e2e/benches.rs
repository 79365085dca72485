//! Every bench binary (`make bench-*`) runs to the end at a tiny size and prints its figures, so
//! none rots between the runs that measure. Each test runs the built binary as `make` does, with
//! a size flag that keeps it to seconds, and reads numbers out of the lines a user reads: the
//! workload the bench reports done, and figures that can only be there if it measured something.
//! No timing is asserted; the figures themselves are documented in docs/src/benchmarks.md.
//!
//! bench-indexer and bench-queries run the real `lcw` binary ([`lcw_tests::binary::locate`]:
//! `target/<profile>/lcw`, built by `cargo test --workspace` for the CLI's own tests, or by
//! `cargo build -p lcw-cli`; `LCW_BIN` overrides). bench-queries needs `wrk`, bench-worker and
//! bench-sortition the real LLM server (`make llm`).

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Longest a bench may take here before it is stopped (each takes well under a minute).
const DEADLINE: Duration = Duration::from_secs(600);

/// Runs a bench binary in `dir` with `args`, in a clean environment (the `lcw` it starts sees no
/// variable of the developer's shell either), and returns its stdout, failing with its output when
/// it does not exit 0.
fn run(bin: &str, dir: &Path, args: &[&str]) -> String {
    let mut child = lcw_tests::binary::clean(bin)
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the bench") {
            break Some(status);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.join().expect("stdout reader").expect("reading stdout");
    let err = err.join().expect("stderr reader").expect("reading stderr");
    let name = Path::new(bin).file_name().unwrap_or_default().to_string_lossy().into_owned();
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("{name} {} exited with {s}\n--- stdout\n{out}\n--- stderr\n{err}", args.join(" ")),
        None => panic!("{name} did not finish within {DEADLINE:?}\n--- stdout\n{out}\n--- stderr\n{err}"),
    }
}

/// The numbers of the first line of `out` that starts with `prefix` (after indentation), read
/// from the rest of the line: `12`, `3.5`, `1,234` and `-2` count; `%`, `)`, `,` and `;` around
/// them are ignored.
fn numbers(out: &str, prefix: &str) -> Vec<f64> {
    let line = out
        .lines()
        .map(str::trim_start)
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with `{prefix}` in the bench's output:\n{out}"));
    line.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ';' | '%'))
        .map(|w| w.trim_end_matches([',', ':']))
        .filter_map(|w| w.parse::<f64>().ok())
        .collect()
}

#[test]
fn bench_queries_loads_every_query_and_reports_its_rate_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let lcw = lcw_tests::binary::locate();
    let out = run(
        env!("CARGO_BIN_EXE_bench-queries"),
        dir.path(),
        &[
            "--jobs",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--db",
            db.to_str().unwrap(),
            "--lcw",
            lcw.to_str().unwrap(),
        ],
    );
    // `store <path> (50 jobs, N MiB)`: the generated store holds what was asked.
    let store = numbers(&out, "store ");
    assert_eq!(store.first(), Some(&50.0), "{out}");
    // The server ran with a connection cap above wrk's 16 connections.
    let flags: Vec<&str> =
        out.lines().find(|l| l.starts_with("lcw serve --")).expect("the serve flags line").split(' ').collect();
    let cap = flags.iter().position(|f| *f == "--api-max-connections").map(|i| flags[i + 1].parse::<u64>().unwrap());
    assert!(cap.is_some_and(|c| c > 16), "{out}");
    for query in ["job(id)", "jobs(worker, first: 50)", "exitPlan(worker)", "earnings(DAY, 30 days)"] {
        // requests/s, p50, p90, p99 (ms), errors
        let figures = numbers(&out, query);
        let [rate, p50, p90, p99, errors, ..] = figures[..] else { panic!("{query}: figures missing in\n{out}") };
        assert!(rate > 0.0, "{query} served no requests:\n{out}");
        assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99, "{query}: latencies out of order:\n{out}");
        assert_eq!(errors, 0.0, "{query} answered errors under load:\n{out}");
    }
    let rss = numbers(&out, "lcw serve peak RSS:");
    assert!(rss.first().is_some_and(|m| *m > 0.0), "{out}");
}

#[test]
fn bench_indexer_backfills_and_replays_every_event_of_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let lcw = lcw_tests::binary::locate();
    let out = run(
        env!("CARGO_BIN_EXE_bench-indexer"),
        dir.path(),
        &[
            "--events",
            "2000",
            "--block-time",
            "1",
            "--dispute-window",
            "2",
            "--dir",
            dir.path().to_str().unwrap(),
            "--lcw",
            lcw.to_str().unwrap(),
        ],
    );
    let chain = numbers(&out, "chain:")[0];
    assert!(chain >= 2000.0, "{out}");
    // `raw eth_getLogs: R logs/s (N logs, ...)`
    let raw = numbers(&out, "raw eth_getLogs:");
    assert!(raw[0] > 0.0 && raw[1] == chain, "{out}");
    // `lcw backfill: R events/s (S % of raw; N events, T s; peak RSS M MB; ...)`
    let backfill = numbers(&out, "lcw backfill:");
    assert!(backfill[0] > 0.0 && backfill[2] == chain, "the backfill indexed every log of the chain:\n{out}");
    let replay = numbers(&out, "lcw replay:");
    assert!(replay[0] > 0.0 && replay[1] == chain, "the replay rebuilt every log:\n{out}");
    // The devnet is local, so the CPU budget is there: `... ; lcw C us` last.
    let cpu = numbers(&out, "CPU per event:");
    assert!(cpu.last().is_some_and(|lcw| *lcw > 0.0), "{out}");
}

#[test]
fn bench_settler_releases_every_job_and_reports_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        env!("CARGO_BIN_EXE_bench-settler"),
        dir.path(),
        &["--jobs", "10", "--window", "2", "--per-block", "5", "--dir", dir.path().to_str().unwrap()],
    );
    // `10 jobs, 10 released, 2 s dispute window, 1 s blocks`
    assert_eq!(numbers(&out, "10 jobs,")[0], 10.0, "every job is released:\n{out}");
    // `lag in blocks: min a p50 b p90 c p99 d max e (mean f)`
    let lag = numbers(&out, "lag in blocks:");
    assert!(lag.len() == 6 && lag[0] <= lag[4], "{out}");
    let sent = numbers(&out, "transactions:");
    assert!(sent[0] >= 1.0, "the keeper sent releases:\n{out}");
}

#[test]
fn bench_worker_serves_every_job_and_reports_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(env!("CARGO_BIN_EXE_bench-worker"), dir.path(), &["--jobs", "3", "--sessions", "2", "--num-predict", "4"]);
    // `bench-worker: 3 of 3 jobs completed in T s (...)`
    let done = numbers(&out, "bench-worker:");
    assert_eq!(done[..2], [3.0, 3.0], "every job is completed:\n{out}");
    for step in ["ack latency", "inference", "encrypt + sidecar", "completion inclusion"] {
        // p50, p90, p99, max, mean
        let d = numbers(&out, step);
        assert!(d.len() == 5 && d[0] > 0.0 && d[0] <= d[3], "{step}:\n{out}");
    }
    assert_eq!(numbers(&out, "completion tokens")[0], 4.0, "{out}");
    assert_eq!(numbers(&out, "refused"), [0.0, 0.0], "nothing refused or reverted:\n{out}");
}

#[test]
fn bench_sortition_sees_every_request_claimed_and_reports_the_race() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        env!("CARGO_BIN_EXE_bench-sortition"),
        dir.path(),
        &["--requests", "4", "--competitors", "1", "--num-predict", "4"],
    );
    // `claimed c, expired e`: a competitor claims whatever lcw's worker does not.
    assert_eq!(numbers(&out, "claimed"), [4.0, 0.0], "{out}");
    // `claim lateness, every winner n N p50 ...`
    assert_eq!(numbers(&out, "claim lateness, every winner")[0], 4.0, "{out}");
    // `lcw first eligible on F requests, won W of them (P %); won A in all`
    let race = numbers(&out, "lcw first eligible on");
    let won = race[3];
    // Every session lcw's worker won got its answer.
    assert_eq!(numbers(&out, "requestSession to first answer")[0], won, "{out}");
    let sent = numbers(&out, "lcw claims sent")[0];
    assert!(sent >= won, "{out}");
}

#[test]
fn bench_replica_backfills_with_and_without_the_replica_and_serves_from_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let lcw = lcw_tests::binary::locate();
    let out = run(
        env!("CARGO_BIN_EXE_bench-replica"),
        dir.path(),
        &[
            "--events",
            "2000",
            "--block-time",
            "1",
            "--dispute-window",
            "2",
            "--jobs",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--dir",
            dir.path().to_str().unwrap(),
            "--lcw",
            lcw.to_str().unwrap(),
            "--bench-queries",
            env!("CARGO_BIN_EXE_bench-queries"),
        ],
    );
    // The figures come with the command that produced them.
    assert!(
        out.lines().next().is_some_and(|l| l.starts_with("bench-replica: ") && l.contains("--events 2000")),
        "{out}"
    );
    let chain = numbers(&out, "chain:")[0];
    assert!(chain >= 2000.0, "{out}");
    // `backfill ...: R events/s (median of 1: R; N events, T s, wall W s; peak RSS M MB; CPU C s)`
    for mode in ["backfill without replica:", "backfill with replica:"] {
        let b = numbers(&out, mode);
        assert!(b[0] > 0.0 && b[3] == chain, "{mode} indexed every log of the chain:\n{out}");
        assert!(b[6] > 0.0, "{mode} peak RSS measured:\n{out}");
    }
    // `replica at backfill end: B blocks behind, S s; caught up C s after the end (...)`
    let lag = numbers(&out, "replica at backfill end:");
    assert!(lag.len() >= 3 && lag[1] >= 0.0 && lag[2] >= 0.0, "{out}");
    // `new replica, --once: R rows/s (N rows, ...)`: the copy holds at least every log.
    let copy = numbers(&out, "new replica, --once:");
    assert!(copy[0] > 0.0 && copy[1] >= chain, "{out}");
    assert_eq!(numbers(&out, "GraphQL:")[0], 50.0, "{out}");
    assert!(numbers(&out, "its replica, --once:")[0] > 0.0, "{out}");
    for query in ["job(id)", "jobs(worker, first: 50)", "exitPlan(worker)", "earnings(DAY, 30 days)"] {
        for engine in ["sqlite", "postgres", "postgres+analyze"] {
            let line = format!("{query} on {engine}");
            // requests/s, p50, p90, p99 (ms), errors
            let [rate, p50, p90, p99, errors, ..] = numbers(&out, &line)[..] else {
                panic!("{line}: figures missing in\n{out}")
            };
            assert!(rate > 0.0, "{line} served no requests:\n{out}");
            assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99, "{line}: latencies out of order:\n{out}");
            assert_eq!(errors, 0.0, "{line} answered errors under load:\n{out}");
        }
    }
    let rss = numbers(&out, "lcw serve peak RSS:");
    assert!(rss.len() == 3 && rss.iter().all(|m| *m > 0.0), "{out}");
}
