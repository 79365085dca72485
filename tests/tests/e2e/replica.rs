//! The PostgreSQL replica of a store built from a real devnet with simulated traffic, through
//! the real `lcw` binary ([`lcw_tests::binary::locate`]) and a throwaway PostgreSQL cluster
//! ([`lcw_tests::postgres::PgCluster`]): `lcw replicate` copies it, `lcw verify --replica` proves
//! it equal, then names the table of one changed row; every analyst view answers; a replica of
//! another chain is refused; the password of the URL never shows. And `lcw replicate` following
//! a store indexed live through reorgs, killed and restarted meanwhile, ends equal to it.

use std::path::Path;
use std::process::{Child, Output};
use std::time::Duration;

use lcw_tests::b256;
use lcw_tests::indexing::Follower;
use lcw_tests::parties::{ack_and_complete, submit};

use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::store::{Identity, Store};
use lcw_schema::suite::Suite;
use lcw_tests::TestNet;

use crate::indexer::{blocks_to_replace, head, reorg_to_other_branch, two_workers};
use lcw_tests::indexing;
use lcw_tests::postgres::PgCluster;

fn lcw(args: &[&str]) -> Output {
    lcw_tests::binary::lcw(lcw_tests::binary::locate()).args(args).output().expect("lcw runs")
}

/// stdout and stderr of `out`, which must not hold `secret`.
fn text(out: &Output, secret: &str) -> (String, String) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains(secret) && !stderr.contains(secret), "the password shows:\n{stdout}\n{stderr}");
    (stdout.into_owned(), stderr.into_owned())
}

/// Runs `sql` statements on the replica from a blocking thread (the synchronous client runs a
/// runtime of its own) and returns the first column of each answer's first row as text.
async fn on_replica(url: &str, sql: Vec<String>) -> Vec<Option<String>> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect to the replica");
        sql.iter()
            .map(|q| {
                let rows = client.query(q.as_str(), &[]).unwrap_or_else(|e| panic!("{q}: {e}"));
                rows.first().and_then(|r| r.get::<_, Option<String>>(0))
            })
            .collect()
    })
    .await
    .unwrap()
}

fn sqlite_count(db: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_copies_the_store_and_verify_names_what_differs() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 30;
        o.deploy.completion_timeout = 30;
        o.deploy.dispute_window = 10;
        o.deploy.resolution_timeout = 10;
    })
    .await;
    let options = SimulateOptions {
        jobs: 200,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 10.0, dispute: 20.0, settle: 5.0 },
        suite: Suite::P256AesGcm,
        seed: 21,
        ..SimulateOptions::default()
    };
    let report = simulate::run(net.profile(), &options, |_| {}).await.expect("simulation");
    assert_eq!(report.reverted, 0, "{report:?}");
    let db = net.dir.path().join("lcw.db");
    indexing::until_head(net.profile(), &db).await;
    let db_arg = db.to_str().unwrap();

    let pg = PgCluster::start();
    let url = pg.create_database("replica");
    let secret = pg.password().to_owned();

    // The copy.
    let out = lcw(&["replicate", "--once", "--to", &url, "--db", db_arg]);
    let (stdout, stderr) = text(&out, &secret);
    assert!(out.status.success(), "lcw replicate failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("copied") && stdout.contains("rows/s"), "{stdout}");
    assert!(stdout.contains(":***@127.0.0.1"), "the URL shows redacted: {stdout}");
    eprintln!("{stdout}");
    let jobs = sqlite_count(&db, "jobs");
    assert!(jobs >= 200, "{jobs} jobs");
    assert!(
        stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["jobs", &jobs.to_string()]),
        "{stdout}"
    );

    // Equal, table by table.
    let out = lcw(&["verify", "--replica", &url, "--db", db_arg]);
    let (stdout, stderr) = text(&out, &secret);
    assert!(out.status.success(), "lcw verify --replica failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("equals the store") && !stdout.contains("DIFFERS"), "{stdout}");

    // Every analyst view answers, over the copied rows.
    let views: Vec<String> = lcw_replica_views().iter().map(|v| format!("SELECT count(*)::text FROM {v}")).collect();
    let counts = on_replica(&url, views).await;
    assert!(counts.iter().all(Option::is_some), "{counts:?}");
    let answers = on_replica(
        &url,
        vec![
            "SELECT count(*)::text FROM v_jobs".into(),
            "SELECT max(fee_lcai)::text FROM v_jobs WHERE fee_wei IS NOT NULL".into(),
            "SELECT min(worker) FROM v_jobs".into(),
            "SELECT sum(released)::text FROM v_rollups_daily".into(),
            "SELECT value FROM v_config_current WHERE param = 'disputeWindow'".into(),
        ],
    )
    .await;
    assert_eq!(answers[0].as_deref(), Some(jobs.to_string().as_str()));
    assert!(answers[1].as_deref().is_some_and(|f| f.parse::<f64>().unwrap() > 0.0), "{answers:?}");
    assert!(answers[2].as_deref().is_some_and(|w| w.starts_with("0x") && w.len() == 42), "{answers:?}");
    assert!(answers[3].as_deref().is_some_and(|n| n.parse::<u64>().unwrap() > 0), "{answers:?}");
    assert_eq!(answers[4].as_deref(), Some("10"));

    // One changed row: verify fails and names its table.
    on_replica(
        &url,
        vec![
            "UPDATE jobs SET fee_wei = fee_wei + 1 WHERE job_id = (SELECT min(job_id) FROM jobs) RETURNING 'x'".into(),
        ],
    )
    .await;
    let out = lcw(&["verify", "--replica", &url, "--db", db_arg]);
    let (stdout, stderr) = text(&out, &secret);
    assert!(!out.status.success(), "verify passed over a changed row:\n{stdout}");
    assert!(stderr.contains("differs from the store in jobs;"), "names the table: {stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("jobs ") && l.ends_with("DIFFERS")), "{stdout}");
    assert_eq!(stdout.matches("DIFFERS").count(), 1, "only jobs differs: {stdout}");

    // Catching up leaves it: no entry names the row. Copying whole repairs it.
    let out = lcw(&["replicate", "--once", "--to", &url, "--db", db_arg]);
    assert!(out.status.success() && out.stdout.is_empty(), "nothing to catch up: {out:?}");
    assert!(!lcw(&["verify", "--replica", &url, "--db", db_arg]).status.success());
    assert!(lcw(&["replicate", "--once", "--copy", "--to", &url, "--db", db_arg]).status.success());
    assert!(lcw(&["verify", "--replica", &url, "--db", db_arg]).status.success());

    // A store of another chain is refused, saying what differs and what to do.
    let other = net.dir.path().join("other.db");
    let mut identity = Identity::of(net.profile());
    identity.chain_id = 8200;
    drop(Store::open(&other, &identity).unwrap());
    let out = lcw(&["replicate", "--once", "--to", &url, "--db", other.to_str().unwrap()]);
    let (stdout, stderr) = text(&out, &secret);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("chain id 31337 here, 8200 in the store"), "{stderr}");
    assert!(stderr.contains("another database"), "{stderr}");
    // And the replica still holds the first store, untouched.
    assert!(lcw(&["verify", "--replica", &url, "--db", db_arg]).status.success());
}

/// The analyst views of the replica (replica/migrations/V1__store.sql).
fn lcw_replica_views() -> [&'static str; 8] {
    [
        "v_jobs",
        "v_workers",
        "v_sessions",
        "v_config_current",
        "v_dispute_window_history",
        "v_rollups_daily",
        "v_undecodable_logs",
        "v_session_requests",
    ]
}

/// `lcw replicate` following `db` into `url` in the background, its output appended to `log`.
fn follow(db: &Path, url: &str, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    lcw_tests::binary::lcw(lcw_tests::binary::locate())
        .args(["replicate", "--to", url, "--db", db.to_str().unwrap(), "--poll-ms", "50"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("lcw replicate starts")
}

/// Whether the replica's cursor reaches the store's within `timeout`.
async fn replica_reaches_store(url: &str, db: &Path, timeout: Duration) -> bool {
    lcw_tests::wait_until(timeout, || async {
        let Some((n, h)) = lcw_tests::indexing::cursor(db) else { return false };
        // Before the first copy has committed there is no replica_cursor to read yet.
        let url = url.to_owned();
        let got = tokio::task::spawn_blocking(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).ok()?;
            let q = "SELECT block_number::text || ':' || encode(block_hash, 'hex') FROM replica_cursor";
            client.query_opt(q, &[]).ok().flatten().and_then(|r| r.get::<_, Option<String>>(0))
        })
        .await
        .unwrap();
        got.as_deref() == Some(format!("{n}:{}", alloy::hex::encode(h)).as_str())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_follows_live_indexing_through_reorgs_and_kills_and_ends_equal() {
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    let first = submit(&net, &sessions[0], b256(1)).await;
    ack_and_complete(&net, &workers[0], first).await;
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let (n, h) = head(&net).await;
    assert!(lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(30)).await, "backfilled");

    let pg = PgCluster::start();
    let url = pg.create_database("follow");
    let log = net.dir.path().join("replicate.log");
    let mut replicate = follow(&db, &url, &log);
    // Kill points vary from run to run; the seed is printed to replay one.
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill seed {seed}");
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };

    let mut completed = vec![first];
    let mut kills = 0;
    for depth in 1..=10u64 {
        blocks_to_replace(&net, &workers, &sessions, &mut completed, depth, 10).await;
        if depth % 2 == 1 {
            // kill -9 while the indexer commits, at a random moment; restarted, it resumes.
            tokio::time::sleep(Duration::from_millis(random(400))).await;
            replicate.kill().unwrap();
            replicate.wait().unwrap();
            kills += 1;
            replicate = follow(&db, &url, &log);
        }
        let (n, h) = head(&net).await;
        assert!(
            lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(30)).await,
            "caught up before reorg {depth}"
        );
        reorg_to_other_branch(&net, &sessions, depth).await;
        let (n, h) = head(&net).await;
        assert!(
            lcw_tests::indexing::wait_for(&db, n, h, Duration::from_secs(30)).await,
            "followed reorg of depth {depth}"
        );
        if depth % 4 == 0 {
            // A kill right after the reorg, while the follower may be applying the unwind.
            tokio::time::sleep(Duration::from_millis(random(200))).await;
            replicate.kill().unwrap();
            replicate.wait().unwrap();
            kills += 1;
            replicate = follow(&db, &url, &log);
        }
        // After each reorg the replica equals the store, row for row.
        assert!(replica_reaches_store(&url, &db, Duration::from_secs(30)).await, "caught up after reorg {depth}");
        let out = lcw(&["verify", "--replica", &url, "--db", db.to_str().unwrap()]);
        let (stdout, stderr) = text(&out, pg.password());
        assert!(out.status.success(), "after the reorg of depth {depth}, verify --replica failed:\n{stdout}\n{stderr}");
    }
    let summary = follower.finish().await;
    assert!(summary.reorgs >= 10, "{summary:?}");

    assert!(replica_reaches_store(&url, &db, Duration::from_secs(30)).await, "the replica caught up");
    // SIGTERM stops it cleanly.
    let term = std::process::Command::new("kill").args(["-TERM", &replicate.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = replicate.wait().unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "lcw replicate stopped with {status}:\n{output}");
    assert_eq!(kills, 7);
    assert!(output.contains("caught up") && output.contains("blocks behind"), "{output}");
    assert!(output.matches("copied ").count() >= 1, "the first run copied: {output}");

    let out = lcw(&["verify", "--replica", &url, "--db", db.to_str().unwrap()]);
    let (stdout, stderr) = text(&out, pg.password());
    assert!(out.status.success(), "lcw verify --replica failed:\n{stdout}\n{stderr}\n{output}");
    assert!(stdout.contains("equals the store") && !stdout.contains("DIFFERS"), "{stdout}");
}
