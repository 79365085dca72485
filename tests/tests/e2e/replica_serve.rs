//! The GraphQL API served from a PostgreSQL replica answers as it does from the SQLite store:
//! every operation in `queries/examples/*.graphql`, with variables for every worker, a spread of
//! jobs and every page, returns the same JSON from both; the replica's own commits push
//! subscriptions; a streaming standby made with `pg_basebackup` serves the same answers through
//! `lcw serve --store postgres://…`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_queries::{ApiState, Db, Readiness, Source};
use lcw_replica::{Replica, ReplicaUrl};
use lcw_schema::store::Store;
use lcw_schema::suite::Suite;
use lcw_tests::indexing::{self, Follower};
use lcw_tests::postgres::PgCluster;
use lcw_tests::{TestNet, wait_until};
use serde_json::{Value, json};

/// An API over `source`, in this process.
struct Api {
    url: String,
    http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Api {
    async fn start(source: Source, commits: Option<tokio::sync::watch::Receiver<u64>>) -> Api {
        let pool = tokio::task::spawn_blocking(move || Db::connect(source, 4, Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the store or replica opens for reading");
        let commits = commits.unwrap_or_else(|| lcw_queries::watch_cursor(pool.clone(), Duration::from_millis(50)));
        let state = ApiState { db: pool, readiness: Readiness::MaxLag(3_600), commits, replica: None };
        Api::serve(lcw_queries::router(state, Duration::from_secs(10))).await
    }

    async fn serve(app: axum::Router) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await
                .unwrap();
        });
        Api { url: format!("http://{addr}"), http: reqwest::Client::new(), stop }
    }

    fn at(url: String) -> Api {
        let (stop, _) = tokio::sync::watch::channel(false);
        Api { url, http: reqwest::Client::new(), stop }
    }

    /// The whole response (data and errors).
    async fn raw(&self, query: &str, variables: &Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("POST /graphql");
        assert!(resp.status().is_success(), "HTTP {}", resp.status());
        resp.json().await.expect("JSON response")
    }
}

/// The answer without what depends on the moment it was asked (seconds behind the wall clock),
/// nor indexerStatus.replica, which an API reading the replica shows and one reading the store
/// (with no follower in its process) does not.
fn steady(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for key in ["lagSeconds", "lag", "replica"] {
                    m.remove(key);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// The operations and variables asked of both APIs: every example, for every worker, a spread of
/// jobs and requests, every page of each paged example (pages followed on the first API).
async fn ask_all(reference: &Api, others: &[&Api], head_ts: u64) -> usize {
    let ex = lcw_tests::query_examples();
    let mut asked = 0;
    let same = |name: &str, vars: &Value, a: &Value, b: &Value| {
        assert_eq!(steady(a.clone()), steady(b.clone()), "{name} with {vars}: the replica answers otherwise");
    };
    let mut ask = async |name: &str, query: &str, vars: Value| -> Value {
        let a = reference.raw(query, &vars).await;
        assert!(a.get("errors").is_none(), "{name} with {vars} fails on the store: {a}");
        for other in others {
            let b = other.raw(query, &vars).await;
            same(name, &vars, &a, &b);
        }
        asked += 1;
        a
    };

    ask("indexer_status", &ex["indexer_status"], json!({})).await;
    let workers = ask("workers", "{ workers(first: 100) { nodes { address stake balance } } }", json!({})).await;
    let workers: Vec<String> = workers["data"]["workers"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_owned())
        .collect();
    assert!(workers.len() >= 3, "the simulation registered workers: {workers:?}");
    let jobs = ask("jobs", "{ indexerStatus { jobs } }", json!({})).await;
    let job_count: u64 = jobs["data"]["indexerStatus"]["jobs"]
        .as_str()
        .map_or_else(|| jobs["data"]["indexerStatus"]["jobs"].as_u64().unwrap(), |s| s.parse().unwrap());
    assert!(job_count > 50, "{job_count} jobs");
    for id in (1..=job_count).step_by(5).chain([job_count, 999_999]) {
        ask("job_lifecycle", &ex["job_lifecycle"], json!({ "id": id.to_string() })).await;
    }
    for w in &workers {
        ask("exit_plan", &ex["exit_plan"], json!({ "worker": w })).await;
        ask("daily_earnings", &ex["daily_earnings"], json!({ "worker": w })).await;
        ask("slashes", &ex["slashes"], json!({ "worker": w })).await;
        // Neither API has a node, a data directory or a worker beside it: the same nulls, with
        // the same reasons, and the same money and models from the store.
        let funds = ask("operator_funds", &ex["operator_funds"], json!({ "worker": w })).await;
        let worker = &funds["data"]["worker"];
        assert!(worker["address"].as_str().is_some_and(|a| a.eq_ignore_ascii_case(w)), "{funds}");
        assert_eq!(funds["data"]["keySets"], Value::Null, "no data directory: {funds}");
        assert!(worker["wallet"]["balance"].is_null() && worker["wallet"]["unavailable"].is_string(), "{funds}");
        let models = worker["models"].as_array().expect("the worker's models");
        assert!(!models.is_empty() && models.iter().all(|m| m["footprint"].is_null()), "no LLM server: {funds}");
        for states in [json!(null), json!(["TIMED_OUT"]), json!(["RELEASED", "COMPLETED"])] {
            let mut after: Option<String> = None;
            loop {
                let vars = json!({ "worker": w, "first": 9, "after": after, "states": states });
                let page = ask("worker_jobs", &ex["worker_jobs"], vars).await;
                let info = &page["data"]["jobs"]["pageInfo"];
                if info["hasNextPage"] != json!(true) {
                    break;
                }
                after = info["endCursor"].as_str().map(str::to_owned);
            }
        }
    }
    let mut after: Option<String> = None;
    loop {
        let page = ask("release_queue", &ex["release_queue"], json!({ "first": 5, "after": after })).await;
        let q = &page["data"]["releaseQueue"];
        match q["pageInfo"]["endCursor"].as_str() {
            Some(c) if q["pageInfo"]["hasNextPage"] == json!(true) => after = Some(c.to_owned()),
            _ => break,
        }
    }
    let gemma = format!("{:#x}", alloy::primitives::keccak256("gemma3-270m"));
    let day_ago = head_ts - 86_400;
    ask("jobs_by_model_and_outcome", &ex["jobs_by_model_and_outcome"], json!({ "model": gemma, "from": day_ago }))
        .await;
    ask("latency_percentiles", &ex["latency_percentiles"], json!({ "from": day_ago })).await;
    for req in [1u64, 2, 5, 9] {
        let mut after: Option<String> = None;
        loop {
            let vars = json!({ "reqId": req, "first": 4, "after": after });
            let page = ask("session_requests", &ex["session_requests"], vars).await;
            let info = &page["data"]["sessionRequests"]["pageInfo"];
            if req != 1 || info["hasNextPage"] != json!(true) {
                break;
            }
            after = info["endCursor"].as_str().map(str::to_owned);
        }
    }
    for status in ["OPEN", "READY", "EXPIRED", "CLAIMED"] {
        ask("session_requests", &ex["session_requests"], json!({ "reqId": 1, "status": status })).await;
    }
    // Bad input is refused the same way.
    let bad = reference.raw(&ex["exit_plan"], &json!({ "worker": "0x1234" })).await;
    for other in others {
        same(
            "exit_plan",
            &json!("bad address"),
            &bad,
            &other.raw(&ex["exit_plan"], &json!({ "worker": "0x1234" })).await,
        );
    }
    asked
}

/// A devnet with sortition, every outcome of a job, and a burst left open; indexed to its head.
async fn busy_store() -> (TestNet, PathBuf, Follower, u64) {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.sortition = true;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    let db = net.dir.path().join("lcw.db");
    let follower = Follower::start(net.profile(), &db);
    let settled = SimulateOptions {
        jobs: 120,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 15.0, dispute: 20.0, settle: 5.0 },
        suite: Suite::P256AesGcm,
        seed: 21,
        ..SimulateOptions::default()
    };
    let report = simulate::run(net.profile(), &settled, |_| {}).await.expect("simulation");
    assert_eq!(report.reverted, 0, "{report:?}");
    let open = SimulateOptions { jobs: 10, workers: 1, auto_release: false, seed: 22, ..settled.clone() };
    simulate::run(net.profile(), &open, |_| {}).await.expect("second simulation");
    let p = net.provider();
    let head = alloy::providers::Provider::get_block(&p, alloy::eips::BlockId::latest()).await.unwrap().unwrap();
    assert!(
        indexing::wait_for(&db, head.header.number, head.header.hash, Duration::from_secs(60)).await,
        "the indexer reached the head"
    );
    (net, db, follower, head.header.timestamp)
}

/// Copies the store into the replica at `url` (as `lcw replicate` does first).
async fn copy(db: &Path, url: &str) {
    let (db, url) = (db.to_owned(), url.to_owned());
    tokio::task::spawn_blocking(move || {
        let store = Store::open_readonly(&db).unwrap();
        let identity = store.identity().unwrap().expect("the store records its network");
        let mut replica = Replica::connect(&ReplicaUrl::parse(&url).unwrap(), &identity).expect("replica");
        replica.copy_from(&store).expect("copy");
    })
    .await
    .unwrap();
}

/// Brings the replica up to the store's newest commit.
async fn catch_up(db: &Path, url: &str) {
    let (db, url) = (db.to_owned(), url.to_owned());
    tokio::task::spawn_blocking(move || {
        let store = Store::open_readonly(&db).unwrap();
        let identity = store.identity().unwrap().unwrap();
        let mut replica = Replica::connect(&ReplicaUrl::parse(&url).unwrap(), &identity).unwrap();
        while replica.follow_once(&store).expect("catch-up").partial {}
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_answers_the_same_from_the_replica_as_from_the_store() {
    let (net, db, follower, head_ts) = busy_store().await;
    // The devnet mines a block a second: the indexer stops, so that both sides hold one head.
    follower.finish().await;
    let pg = PgCluster::start();
    let url = pg.create_database("lcw");
    copy(&db, &url).await;

    let sqlite = Api::start(Source::Sqlite(db.clone()), None).await;
    let replica = Api::start(Source::Postgres(Box::new(ReplicaUrl::parse(&url).unwrap())), None).await;
    let asked = ask_all(&sqlite, &[&replica], head_ts).await;
    eprintln!("{asked} operations answered the same by the store and the replica");
    // The API on the replica says where the replica stands; the one on the store has none.
    let q = "{ indexerStatus { block replica { block blockHash lagBlocks updatedAt } } }";
    let on_replica = replica.raw(q, &json!({})).await["data"]["indexerStatus"].clone();
    assert_eq!(on_replica["replica"]["block"], on_replica["block"], "{on_replica}");
    assert!(on_replica["replica"]["updatedAt"].as_u64().is_some_and(|t| t > 0), "{on_replica}");
    assert_eq!(on_replica["replica"]["lagBlocks"], Value::Null, "the store is not visible from the replica");
    assert_eq!(sqlite.raw(q, &json!({})).await["data"]["indexerStatus"]["replica"], Value::Null);

    // A subscription on the replica is pushed by the replica's own commits (LISTEN/NOTIFY).
    let source = Source::Postgres(Box::new(ReplicaUrl::parse(&url).unwrap()));
    let pool =
        tokio::task::spawn_blocking(move || Db::connect(source, 2, Duration::from_secs(10))).await.unwrap().unwrap();
    let commits = lcw_queries::watch_replica(pool.clone(), ReplicaUrl::parse(&url).unwrap(), Duration::from_secs(30));
    let schema =
        lcw_queries::schema(ApiState { db: pool, readiness: Readiness::MaxLag(3_600), commits, replica: None });
    let mut heads = schema.execute_stream("subscription { head { block } }");
    let first = tokio::time::timeout(Duration::from_secs(20), heads.next()).await.expect("the current head").unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    // Earnings are memoized per version of the replica, which its notifications announce: asked
    // before the catch-up, then after, the second answer is the new commit's.
    let earnings = "{ earnings(bucket: DAY) { start released fees workerShare } }";
    let ask = |schema: &lcw_queries::ApiSchema| {
        let schema = schema.clone();
        async move {
            let r = schema.execute(earnings).await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            r.data.into_json().unwrap()
        }
    };
    let before = ask(&schema).await;
    assert_eq!(before, sqlite.raw(earnings, &json!({})).await["data"]);
    let follower = Follower::start(net.profile(), &db);
    let more = SimulateOptions {
        jobs: 4,
        workers: 1,
        auto_complete: true,
        auto_release: true,
        seed: 23,
        ..SimulateOptions::default()
    };
    simulate::run(net.profile(), &more, |_| {}).await.expect("more traffic");
    let p = net.provider();
    let head = alloy::providers::Provider::get_block(&p, alloy::eips::BlockId::latest()).await.unwrap().unwrap();
    assert!(indexing::wait_for(&db, head.header.number, head.header.hash, Duration::from_secs(60)).await);
    follower.finish().await;
    let head = Store::open_readonly(&db).unwrap();
    let head = lcw_schema::store::raw::Cursor::get(head.conn()).unwrap().unwrap();
    let asked_at = std::time::Instant::now();
    catch_up(&db, &url).await;
    // The poll's period is 30 s here: a push sooner than that came from the notification.
    let mut pushed = Vec::new();
    while pushed.last() != Some(&head.block_number) {
        let r = tokio::time::timeout(Duration::from_secs(20), heads.next())
            .await
            .unwrap_or_else(|_| panic!("no push of block {} from the replica; got {pushed:?}", head.block_number))
            .unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        pushed.push(r.data.into_json().unwrap()["head"]["block"].as_u64().unwrap());
    }
    assert!(asked_at.elapsed() < Duration::from_secs(25), "pushed on the replica's commit, not by the 30 s poll");
    let after = ask(&schema).await;
    assert_ne!(after, before, "the new commit's releases are counted");
    assert_eq!(after, sqlite.raw(earnings, &json!({})).await["data"], "the memo follows the pushed head");
    // And after the catch-up the two still agree.
    ask_all(&sqlite, &[&replica], head_ts).await;

    let _ = sqlite.stop.send(true);
    let _ = replica.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lcw_serve_on_a_streaming_standby_answers_as_the_store() {
    let (_net, db, follower, head_ts) = busy_store().await;
    follower.finish().await;
    let primary = PgCluster::start();
    let url = primary.create_database("lcw");
    copy(&db, &url).await;
    let standby = primary.standby();
    let standby_url = standby.url_of("lcw");
    // The standby replays the primary's WAL: wait until it holds the copy.
    let store = Store::open_readonly(&db).unwrap();
    let cursor_block = lcw_schema::store::raw::Cursor::get(store.conn()).unwrap().unwrap().block_number;
    drop(store);
    let probe = standby_url.clone();
    assert!(
        wait_until(Duration::from_secs(60), || {
            let probe = probe.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut c = postgres::Client::connect(&probe, postgres::NoTls).ok()?;
                    let row = c.query_one("SELECT block_number FROM replica_cursor", &[]).ok()?;
                    Some(row.get::<_, i64>(0) as u64)
                })
                .await
                .unwrap()
                    == Some(cursor_block)
            }
        })
        .await,
        "the standby replayed the copy"
    );

    let port = lcw_tests::postgres::free_port();
    let mut serve = lcw_tests::binary::lcw(lcw_tests::binary::locate())
        .args(["serve", "--store", &standby_url, "--listen", &format!("127.0.0.1:{port}"), "--max-lag", "100000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lcw serve");
    let served = Api::at(format!("http://127.0.0.1:{port}"));
    let up = wait_until(Duration::from_secs(30), || {
        let url = format!("{}/healthz", served.url);
        async move { reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    if !up {
        let _ = serve.kill();
        let out = serve.wait_with_output().unwrap();
        panic!("lcw serve on the standby did not come up: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sqlite = Api::start(Source::Sqlite(db.clone()), None).await;
    let asked = ask_all(&sqlite, &[&served], head_ts).await;
    eprintln!("{asked} operations answered the same by the store and lcw serve on a streaming standby");

    // SIGTERM stops it cleanly; the password never shows.
    let term = std::process::Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap();
    assert!(term.success());
    let out = serve.wait_with_output().unwrap();
    assert!(out.status.success(), "lcw serve stops on SIGTERM: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(primary.password()), "the password never shows: {text}");
    let _ = sqlite.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_the_replica_stops_at_the_request_time_limit() {
    let pg = PgCluster::start();
    let url = pg.create_database("slow");
    let fresh = url.clone();
    tokio::task::spawn_blocking(move || {
        let identity = lcw_schema::store::Identity {
            chain_id: 31_337,
            contracts: lcw_schema::profile::Contracts {
                worker_registry: alloy::primitives::Address::repeat_byte(1),
                job_registry: alloy::primitives::Address::repeat_byte(2),
                ai_config: alloy::primitives::Address::repeat_byte(3),
            },
            start_block: 0,
        };
        Replica::connect(&ReplicaUrl::parse(&fresh).unwrap(), &identity).expect("an empty replica");
    })
    .await
    .unwrap();
    let source = Source::Postgres(Box::new(ReplicaUrl::parse(&url).unwrap()));
    let db = tokio::task::spawn_blocking(move || Db::connect(source, 1, Duration::from_millis(300)))
        .await
        .unwrap()
        .expect("the replica opens for reading");
    let started = std::time::Instant::now();
    let slow = db
        .read(|conn| {
            conn.each("SELECT pg_sleep(5)", &[], &mut |_| Ok(true))?;
            Ok(())
        })
        .await;
    assert!(matches!(slow, Err(lcw_queries::db::ReadError::Timeout(300))), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped at the limit, not after the statement: {:?}",
        started.elapsed()
    );
    // The next request is served, and no cancel meant for the abandoned one reaches it: run
    // several at once after another abandoned read.
    for _ in 0..3 {
        let again = db
            .read(|conn| {
                conn.each("SELECT pg_sleep(5)", &[], &mut |_| Ok(true))?;
                Ok(())
            })
            .await;
        assert!(matches!(again, Err(lcw_queries::db::ReadError::Timeout(300))), "{again:?}");
        for _ in 0..5 {
            let chain = db.read(|conn| Ok(lcw_schema::store::chain_id(conn)?)).await;
            assert!(matches!(chain, Ok(Some(31_337))), "a read after a timeout: {chain:?}");
        }
    }
    // The connection serves the next request.
    let chain = db.read(|conn| Ok(lcw_schema::store::chain_id(conn)?)).await.expect("a read after the timeout");
    assert_eq!(chain, Some(31_337));
    // The reader never writes: the session is read-only.
    let write = db
        .read(|conn| {
            conn.each("DELETE FROM meta", &[], &mut |_| Ok(true))?;
            Ok(())
        })
        .await;
    assert!(format!("{write:?}").contains("read-only"), "{write:?}");
}
