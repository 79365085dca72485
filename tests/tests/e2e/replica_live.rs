//! The replica kept in-process by `lcw index --replica` and `lcw run --replica`, through the real
//! `lcw` binary, a devnet and a throwaway PostgreSQL cluster: after simulated traffic the replica
//! verifies equal and `/metrics` shows no lag; PostgreSQL stopped mid-run does not stop the
//! indexer, the follower warns once, and the replica catches up once PostgreSQL is back on the
//! same port; `lcw run --replica` replicates and stops cleanly on SIGTERM; a replica of another
//! network stops `lcw index --replica` with what differs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::providers::ext::AnvilApi;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::suite::Suite;
use lcw_tests::parties::{ack_and_complete, submit};
use lcw_tests::postgres::PgCluster;
use lcw_tests::{TestNet, b256, wait_until};

use crate::indexer::{head, two_workers};

/// The warning the follower logs once per outage.
const OUTAGE_WARNING: &str = "the replica cannot be brought up to the store";

/// `lcw --data-dir DIR ARGS…` in the background, logging at `info` into `log`.
fn spawn(dir: &Path, args: &[&str], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    lcw_tests::binary::lcw(lcw_tests::binary::locate())
        .env("LCW_LOG", "info")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("lcw starts")
}

/// Sends SIGTERM and returns whether the process exited with 0, within 30 s.
fn terminate(child: &mut Child) -> bool {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    false
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The samples of `/metrics` at `addr` named `lcw_replica_*`, or none while it does not answer.
async fn replica_metrics(addr: &str) -> Vec<(String, f64)> {
    let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else { return Vec::new() };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("lcw_replica_"))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metric(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// Whether `/metrics` shows the replica at the store's cursor, with no lag in blocks or seconds.
async fn shows_no_lag(addr: &str, db: &Path) -> bool {
    let Some((block, _)) = lcw_tests::indexing::cursor(db) else { return false };
    let m = replica_metrics(addr).await;
    metric(&m, "lcw_replica_block") == Some(block as f64)
        && metric(&m, "lcw_replica_lag_blocks") == Some(0.0)
        && metric(&m, "lcw_replica_lag_seconds") == Some(0.0)
}

/// The replica's cursor as `block:hash`, read with the PostgreSQL client.
async fn replica_cursor(url: &str) -> Option<String> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).ok()?;
        let row = client
            .query_opt("SELECT block_number::text || ':' || encode(block_hash, 'hex') FROM replica_cursor", &[])
            .ok()??;
        row.get::<_, Option<String>>(0)
    })
    .await
    .unwrap()
}

fn store_cursor(db: &Path) -> Option<String> {
    lcw_tests::indexing::cursor(db).map(|(n, h)| format!("{n}:{}", alloy::hex::encode(h)))
}

/// `lcw verify --replica URL --db DB` succeeds, and the password shows nowhere.
fn verifies_equal(url: &str, db: &Path, secret: &str) {
    let out = lcw_tests::binary::lcw(lcw_tests::binary::locate())
        .args(["verify", "--replica", url, "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "lcw verify --replica failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("equals the store") && !stdout.contains("DIFFERS"), "{stdout}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "the password shows");
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_with_replica_keeps_it_equal_through_traffic_and_shows_no_lag() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 30;
        o.deploy.completion_timeout = 30;
    })
    .await;
    let pg = PgCluster::start();
    let url = pg.create_database("live");
    let dir = net.dir.path();
    let db = dir.join("lcw.db");
    let log = dir.join("index.log");
    let metrics = free_addr();
    let mut index =
        spawn(dir, &["index", "--replica", &url, "--metrics", &metrics, "--progress", "off", "--poll-ms", "100"], &log);

    let traffic = SimulateOptions {
        jobs: 40,
        workers: 2,
        auto_complete: true,
        auto_release: false,
        shares: Shares { timeout: 0.0, dispute: 0.0, settle: 0.0 },
        suite: Suite::P256AesGcm,
        seed: 31,
        ..SimulateOptions::default()
    };
    let report = simulate::run(net.profile(), &traffic, |_| {}).await.expect("simulation");
    assert_eq!(report.reverted, 0, "{report:?}");
    // The traffic has stopped: no more blocks, so that the store holds still for the comparison.
    net.provider().anvil_set_auto_mine(true).await.expect("evm_setAutomine");
    let (n, h) = head(&net).await;
    assert!(
        lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(60)).await,
        "the indexer reaches the head:\n{}",
        read(&log)
    );
    let indexed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || shows_no_lag(&metrics, &db)).await,
        "the metrics show the replica at the store with no lag: {:?}\n{}",
        replica_metrics(&metrics).await,
        read(&log)
    );
    eprintln!("replica at the store's head {:?} after the indexer reached it", indexed.elapsed());
    let m = replica_metrics(&metrics).await;
    assert_eq!(metric(&m, "lcw_replica_failed_catchups_total"), Some(0.0), "{m:?}\n{}", read(&log));
    assert_eq!(metric(&m, "lcw_replica_recopies_total"), Some(0.0), "{m:?}\n{}", read(&log));
    verifies_equal(&url, &db, pg.password());

    assert!(terminate(&mut index), "lcw index stopped on SIGTERM with an error:\n{}", read(&log));
    let output = read(&log);
    assert!(!output.contains(pg.password()), "the password shows in the log:\n{output}");
    assert!(!output.contains(OUTAGE_WARNING) && !output.contains("ERROR"), "{output}");
}

/// A cluster's server process, found by its port: stopped and started again on the same port,
/// data directory and options, as an operator restarting PostgreSQL would.
struct Server {
    /// `postgres` and `pg_ctl`'s directory.
    bin: PathBuf,
    data: PathBuf,
    /// The server's options after `-D DATA`.
    options: Vec<String>,
    pid: u32,
}

impl Server {
    fn of(url: &str) -> Server {
        let port = url.rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()).unwrap().to_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let argv: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into())
                .collect();
            let is_server = argv.first().is_some_and(|a| a.ends_with("/postgres"));
            let on_port = argv.windows(2).any(|w| w[0] == "-p" && w[1] == port);
            let Some(d) = argv.iter().position(|a| a == "-D") else { continue };
            if is_server && on_port {
                return Server {
                    bin: Path::new(&argv[0]).parent().unwrap().to_owned(),
                    data: PathBuf::from(&argv[d + 1]),
                    options: argv[d + 2..].to_vec(),
                    pid,
                };
            }
        }
        panic!("no PostgreSQL server listens on port {port}");
    }

    /// Fast shutdown: sessions are ended, and the server is gone when this returns.
    fn stop(&self) {
        assert!(Command::new("kill").args(["-INT", &self.pid.to_string()]).status().unwrap().success());
        let proc = PathBuf::from(format!("/proc/{}", self.pid));
        let deadline = Instant::now() + Duration::from_secs(30);
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!proc.exists(), "PostgreSQL did not stop");
    }

    /// Starts it again (as the data directory's owner), waiting until it accepts connections.
    fn start(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let pg_ctl = self.bin.join("pg_ctl");
        let owner = std::fs::metadata(&self.data).unwrap().uid();
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        let mut cmd = if owner != me {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let log = self.data.parent().unwrap().join("restart.log");
        let status = cmd
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &self.options.join(" "), "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "PostgreSQL did not start again:\n{}", read(&log));
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap();
        self.pid = pid.lines().next().unwrap().trim().parse().unwrap();
    }
}

/// `n` jobs submitted, acknowledged and completed, alternating between the two workers.
async fn jobs(
    net: &TestNet,
    workers: &[lcw_tests::parties::Worker],
    sessions: &[lcw_tests::parties::Session],
    blob: &mut u8,
    n: usize,
) {
    for i in 0..n {
        *blob += 1;
        let job = submit(net, &sessions[i % 2], b256(*blob)).await;
        ack_and_complete(net, &workers[i % 2], job).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_goes_on_while_postgres_is_down_and_the_replica_catches_up_after() {
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    let pg = PgCluster::start();
    let url = pg.create_database("outage");
    let dir = net.dir.path();
    let db = dir.join("lcw.db");
    let log = dir.join("index.log");
    let metrics = free_addr();
    let mut index =
        spawn(dir, &["index", "--replica", &url, "--metrics", &metrics, "--progress", "off", "--poll-ms", "100"], &log);
    let mut blob = 0;
    jobs(&net, &workers, &sessions, &mut blob, 3).await;
    let (n, h) = head(&net).await;
    assert!(lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(60)).await, "indexed:\n{}", read(&log));
    assert!(
        wait_until(Duration::from_secs(30), || shows_no_lag(&metrics, &db)).await,
        "the replica caught up before the outage: {:?}\n{}",
        replica_metrics(&metrics).await,
        read(&log)
    );

    // PostgreSQL goes away; traffic goes on.
    let mut server = Server::of(&url);
    server.stop();
    let before = lcw_tests::indexing::cursor(&db).unwrap().0;
    let down = Instant::now();
    for _ in 0..3 {
        jobs(&net, &workers, &sessions, &mut blob, 2).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (n, h) = head(&net).await;
    assert!(
        lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(30)).await,
        "the indexer goes on while PostgreSQL is down:\n{}",
        read(&log)
    );
    assert!(n > before, "the store's cursor moved from {before} to {n}");
    let m = replica_metrics(&metrics).await;
    let behind = metric(&m, "lcw_replica_lag_blocks").unwrap_or_default();
    assert!(behind >= (n - before) as f64, "the lag counts the blocks indexed since: {m:?}");
    assert!(metric(&m, "lcw_replica_lag_seconds").unwrap_or_default() >= 1.0, "{m:?}");
    assert!(metric(&m, "lcw_replica_failed_catchups_total").unwrap_or_default() >= 2.0, "{m:?}");
    let output = read(&log);
    assert_eq!(output.matches(OUTAGE_WARNING).count(), 1, "one warning for the outage:\n{output}");
    eprintln!("PostgreSQL down for {:?}, replica {behind} blocks behind: {m:?}", down.elapsed());

    // Back on the same port: the replica catches up from the change log and equals the store.
    server.start();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || shows_no_lag(&metrics, &db)).await,
        "the replica caught up after PostgreSQL came back: {:?}\n{}",
        replica_metrics(&metrics).await,
        read(&log)
    );
    eprintln!("caught up {:?} after PostgreSQL came back", back.elapsed());
    assert_eq!(replica_cursor(&url).await, store_cursor(&db));
    verifies_equal(&url, &db, pg.password());
    let m = replica_metrics(&metrics).await;
    assert_eq!(metric(&m, "lcw_replica_recopies_total"), Some(0.0), "caught up from the change log: {m:?}");

    assert!(terminate(&mut index), "lcw index stopped on SIGTERM with an error:\n{}", read(&log));
    let output = read(&log);
    assert!(!output.contains(pg.password()), "the password shows in the log:\n{output}");
    assert!(output.contains("reachable again"), "{output}");
    assert_eq!(output.matches(OUTAGE_WARNING).count(), 1, "one warning for the outage:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_replica_replicates_and_stops_on_sigterm() {
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    let job = submit(&net, &sessions[0], b256(1)).await;
    ack_and_complete(&net, &workers[0], job).await;
    let pg = PgCluster::start();
    let url = pg.create_database("run");
    let dir = net.dir.path();
    let db = dir.join("lcw.db");
    let log = dir.join("run.log");
    let mut run = spawn(dir, &["run", "--no-api", "--replica", &url], &log);

    let (n, h) = head(&net).await;
    assert!(lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(60)).await, "indexed:\n{}", read(&log));
    assert!(
        wait_until(Duration::from_secs(30), || async { replica_cursor(&url).await == store_cursor(&db) }).await,
        "lcw run replicated the store:\n{}",
        read(&log)
    );
    assert!(terminate(&mut run), "lcw run stopped on SIGTERM with an error:\n{}", read(&log));
    verifies_equal(&url, &db, pg.password());
    let output = read(&log);
    assert!(!output.contains(pg.password()), "the password shows in the log:\n{output}");
    assert!(!output.contains("ERROR"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_refuses_a_replica_of_another_network() {
    let net = TestNet::start().await;
    let pg = PgCluster::start();
    let url = pg.create_database("other");
    let dir = net.dir.path();
    // The replica first holds a store of another chain.
    let other = dir.join("other.db");
    let mut identity = lcw_schema::store::Identity::of(net.profile());
    identity.chain_id = 8200;
    drop(lcw_schema::store::Store::open(&other, &identity).unwrap());
    let out = lcw_tests::binary::lcw(lcw_tests::binary::locate())
        .args(["replicate", "--once", "--to", &url, "--db", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let out = lcw_tests::binary::lcw(lcw_tests::binary::locate())
        .arg("--data-dir")
        .arg(dir)
        .args(["index", "--replica", &url, "--progress", "off"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lcw index kept a replica of another network:\n{stderr}");
    assert!(stderr.contains("chain id 8200 here, 31337 in the store"), "{stderr}");
    assert!(stderr.contains("another database"), "says what to do: {stderr}");
    assert!(!stderr.contains(pg.password()), "the password shows: {stderr}");
}
