//! The PostgreSQL replica of a store built from a real devnet with simulated traffic, through
//! the real `lcw` binary ([`lcw_tests::binary::locate`]) and a throwaway PostgreSQL cluster
//! ([`lcw_tests::postgres::PgCluster`]): `lcw replicate` copies it, `lcw verify --replica` proves
//! it equal, then names the table of one changed row; every analyst view answers; a replica of
//! another chain is refused; the password of the URL never shows.

use std::path::Path;
use std::process::Output;

use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::store::{Identity, Store};
use lcw_schema::suite::Suite;
use lcw_tests::TestNet;
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
    let out = lcw(&["replicate", "--to", &url, "--db", db_arg]);
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

    // Copying again repairs it.
    assert!(lcw(&["replicate", "--to", &url, "--db", db_arg]).status.success());
    assert!(lcw(&["verify", "--replica", &url, "--db", db_arg]).status.success());

    // A store of another chain is refused, saying what differs and what to do.
    let other = net.dir.path().join("other.db");
    let mut identity = Identity::of(net.profile());
    identity.chain_id = 8200;
    drop(Store::open(&other, &identity).unwrap());
    let out = lcw(&["replicate", "--to", &url, "--db", other.to_str().unwrap()]);
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
