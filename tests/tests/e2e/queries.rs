//! The GraphQL API over a store built from a real devnet: every operation in
//! `queries/examples/*.graphql` runs over HTTP and its answers are checked against the chain
//! (getJob, getActiveJobCount, workerBalance, getWorkerStake, jobCount); pagination, limits and
//! errors; subscriptions pushed by indexer commits.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use futures::StreamExt;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_queries::{ApiState, Db, Readiness};
use lcw_schema::bindings::{JobRegistry, WorkerRegistry};
use lcw_schema::store::Store;
use lcw_schema::suite::Suite;
use lcw_schema::types::JobState;
use lcw_tests::indexing::{self, Follower};
use lcw_tests::{TestNet, wait_until};
use serde_json::{Value, json};

struct Api {
    url: String,
    http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Api {
    async fn start(db: &Path) -> Api {
        let pool = Db::open(db, 4, Duration::from_secs(5)).expect("store opens read-only");
        let commits = lcw_queries::watch_cursor(pool.clone(), Duration::from_millis(50));
        let state = ApiState { db: pool, readiness: Readiness::MaxLag(3_600), commits, replica: None };
        let app = lcw_queries::router(state, Duration::from_secs(5));
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

    /// The whole response (data and errors).
    async fn raw(&self, query: &str, variables: Value) -> Value {
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

    /// `data`, failing the test on any error.
    async fn data(&self, query: &str, variables: Value) -> Value {
        let v = self.raw(query, variables).await;
        assert!(v.get("errors").is_none(), "errors: {}", v["errors"]);
        v["data"].clone()
    }

    /// The first error message.
    async fn error(&self, query: &str, variables: Value) -> String {
        let v = self.raw(query, variables).await;
        v["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("an error was expected, got {v}")).to_owned()
    }
}

fn u(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("number, got {s}")),
        Value::Number(n) => n.as_u64().unwrap(),
        other => panic!("number expected, got {other}"),
    }
}

fn big(v: &Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("BigInt string expected, got {v}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn examples_answer_what_the_chain_says() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    let db = net.dir.path().join("lcw.db");
    let follower = Follower::start(net.profile(), &db);
    // Every outcome: released, timed out (slashed), disputed (guilty, not guilty, defaulted),
    // settled; then a burst left unreleased so the release queue and exit plans have obligations.
    let settled = SimulateOptions {
        jobs: 240,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 15.0, dispute: 20.0, settle: 5.0 },
        suite: Suite::P256AesGcm,
        seed: 5,
        ..SimulateOptions::default()
    };
    let report = simulate::run(net.profile(), &settled, |_| {}).await.expect("simulation");
    assert_eq!(report.reverted, 0, "{report:?}");
    // A fresh worker (the first three may be suspended by their slashes) takes this burst.
    let open = SimulateOptions { jobs: 12, workers: 1, auto_release: false, seed: 6, ..settled.clone() };
    simulate::run(net.profile(), &open, |_| {}).await.expect("second simulation");
    let p = net.provider();
    let head = alloy::providers::Provider::get_block(&p, alloy::eips::BlockId::latest()).await.unwrap().unwrap();
    assert!(
        indexing::wait_for(&db, head.header.number, head.header.hash, Duration::from_secs(60)).await,
        "the indexer reached the head"
    );
    let api = Api::start(&db).await;
    let day_ago = head.header.timestamp - 86_400;
    let ex = lcw_tests::query_examples();
    assert!(ex.len() >= 7, "the examples exist: {:?}", ex.keys());
    let jr = JobRegistry::new(net.profile().contracts.job_registry, p.clone());
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, p.clone());
    let job_count: u64 = jr.jobCount().call().await.unwrap().to();

    // Status and dispute window.
    let status = api.data(&ex["indexer_status"], json!({})).await;
    assert_eq!(u(&status["indexerStatus"]["chainId"]), 31_337);
    assert_eq!(u(&status["indexerStatus"]["block"]), head.header.number);
    assert_eq!(u(&status["indexerStatus"]["jobs"]), job_count);
    assert_eq!(status["indexerStatus"]["ready"], json!(true));
    assert_eq!(u(&status["disputeWindow"]["seconds"]), 3);

    // Job lifecycles, against getJob.
    let mut seen_states = HashSet::new();
    for id in (1..=job_count).step_by(7) {
        let d = api.data(&ex["job_lifecycle"], json!({ "id": id.to_string() })).await;
        let job = &d["job"];
        let onchain = jr.getJob(U256::from(id)).call().await.unwrap();
        let state = JobState::from_u8(onchain.state).unwrap().as_str();
        assert_eq!(job["state"], json!(state), "job {id}");
        seen_states.insert(state);
        assert_eq!(job["worker"].as_str().unwrap(), onchain.worker.to_checksum(None), "EIP-55 out, job {id}");
        assert_eq!(u(&job["submittedAt"]), onchain.submittedAt.to::<u64>(), "job {id}");
        let timeline = job["timeline"].as_array().unwrap();
        assert_eq!(timeline[0]["name"], json!("JobSubmitted"), "job {id} starts with its submission");
        let id_field = timeline[0]["fields"].as_array().unwrap().iter().find(|f| f["name"] == json!("jobId")).cloned();
        assert_eq!(id_field.map(|f| f["value"].clone()), Some(json!(id.to_string())), "decoded fields, job {id}");
        if state == "RELEASED" && job["disputedAt"].is_null() {
            assert_eq!(u(&job["releasableAt"]), u(&job["completedAt"]) + 3, "releasableAt = completion + window");
            assert!(job["releaseTx"].as_str().unwrap().starts_with("0x"));
            assert!(timeline.iter().any(|e| e["name"] == json!("JobReleased")));
            let shares = big(&job["workerShare"]) + big(&job["protocolShare"]) + big(&job["feePoolShare"]);
            assert_eq!(shares, big(&job["fee"]), "the fee splits exactly, job {id}");
        }
    }
    assert!(seen_states.contains("RELEASED") && seen_states.contains("TIMED_OUT"), "{seen_states:?}");
    assert_eq!(api.data("{ job(id: \"999999\") { id } }", json!({})).await["job"], Value::Null, "unknown job is null");

    // Workers: exit plans, balances, stakes, slashes, against the contracts.
    let workers = api.data("{ workers(first: 100) { nodes { address } } }", json!({})).await;
    let addrs: Vec<String> = workers["workers"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(addrs.len(), 4);
    let mut obligations_total = 0;
    for a in &addrs {
        let w: Address = a.parse().unwrap();
        let plan = api.data(&ex["exit_plan"], json!({ "worker": a.to_lowercase() })).await["exitPlan"].clone();
        let active: u64 = wr.getActiveJobCount(w).call().await.unwrap().to();
        assert_eq!(u(&plan["activeJobs"]), active, "exit plan active jobs = getActiveJobCount, {a}");
        assert_eq!(plan["obligations"].as_array().unwrap().len() as u64, active, "one obligation per active job");
        assert_eq!(big(&plan["balance"]), jr.workerBalance(w).call().await.unwrap(), "balance = workerBalance, {a}");
        assert_eq!(big(&plan["stake"]), wr.getWorkerStake(w).call().await.unwrap(), "stake, {a}");
        assert_eq!(plan["deregisterReady"], json!(active == 0));
        assert_eq!(plan["next"]["kind"], json!("DRAIN"), "an undrained worker drains first");
        assert!(plan["next"]["command"].as_str().unwrap().starts_with("lcw drain"));
        obligations_total += active;

        // Daily earnings add up to what the contract holds for the worker (no withdrawals here).
        let days = api.data(&ex["daily_earnings"], json!({ "worker": a })).await;
        let earned: U256 = days["earnings"].as_array().unwrap().iter().map(|d| big(&d["workerShare"])).sum();
        assert_eq!(earned, jr.workerBalance(w).call().await.unwrap(), "earnings = workerBalance, {a}");

        let s = api.data(&ex["slashes"], json!({ "worker": a })).await["worker"].clone();
        let list = s["slashes"].as_array().unwrap();
        assert_eq!(list.len() as u64, u(&s["slashCount"]), "every slash listed, {a}");
        let total: U256 = list.iter().map(|x| big(&x["amount"])).sum();
        assert_eq!(total, big(&s["slashed"]));
        assert_eq!(big(&s["stake"]), wr.getWorkerStake(w).call().await.unwrap());

        // Paging through the worker's jobs visits each exactly once, newest first.
        let mut after: Option<String> = None;
        let mut ids = Vec::new();
        loop {
            let page = api.data(&ex["worker_jobs"], json!({ "worker": a, "first": 7, "after": after })).await;
            let conn = &page["jobs"];
            ids.extend(conn["nodes"].as_array().unwrap().iter().map(|j| u(&j["id"])));
            if conn["pageInfo"]["hasNextPage"] != json!(true) {
                break;
            }
            after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        }
        let store = Store::open_readonly(&db).unwrap();
        let expected: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM jobs WHERE worker = ?1", [w.as_slice()], |r| r.get(0))
            .unwrap();
        assert_eq!(ids.len() as i64, expected, "pagination visits every job of {a}");
        assert!(ids.windows(2).all(|p| p[0] > p[1]), "newest first, no repeats");
        let timed_out =
            api.data(&ex["worker_jobs"], json!({ "worker": a, "states": ["TIMED_OUT"], "first": 500 })).await;
        assert!(timed_out["jobs"]["nodes"].as_array().unwrap().iter().all(|j| j["state"] == json!("TIMED_OUT")));
    }
    assert!(obligations_total > 0, "the unreleased burst left obligations");

    // Release queue: every open obligation, soonest first.
    let q = api.data(&ex["release_queue"], json!({ "first": 500 })).await["releaseQueue"].clone();
    assert_eq!(u(&q["total"]), obligations_total, "the queue holds every worker's obligations");
    let ats: Vec<u64> = q["entries"].as_array().unwrap().iter().map(|e| u(&e["at"])).collect();
    assert!(ats.windows(2).all(|p| p[0] <= p[1]), "soonest first");

    // Jobs by model and outcome: the network's totals match the chain.
    let gemma = format!("{:#x}", alloy::primitives::keccak256("gemma3-270m"));
    let m = api.data(&ex["jobs_by_model_and_outcome"], json!({ "model": gemma, "from": day_ago })).await;
    let model = m["models"].as_array().unwrap().iter().find(|x| x["id"] == json!(gemma)).expect("gemma3-270m listed");
    assert_eq!(model["name"], json!("gemma3-270m"));
    assert_eq!(u(&model["workers"]), 4);
    let submitted: u64 = m["jobStats"].as_array().unwrap().iter().map(|b| u(&b["submitted"])).sum();
    assert_eq!(submitted, job_count, "every job is counted once under its model");
    let released: u64 = m["jobStats"].as_array().unwrap().iter().map(|b| u(&b["released"])).sum();
    let store = Store::open_readonly(&db).unwrap();
    let released_rows: i64 =
        store.conn().query_row("SELECT count(*) FROM jobs WHERE state = 'RELEASED'", [], |r| r.get(0)).unwrap();
    assert_eq!(released as i64, released_rows);

    // Latency percentiles are ordered and bounded by the maximum.
    let lat = api.data(&ex["latency_percentiles"], json!({ "from": day_ago })).await;
    let buckets = lat["jobStats"].as_array().unwrap();
    assert!(buckets.iter().any(|b| !b["ackLatencyP50"].is_null()));
    for b in buckets.iter().filter(|b| !b["ackLatencyP50"].is_null()) {
        assert!(u(&b["ackLatencyP50"]) <= u(&b["ackLatencyP95"]) && u(&b["ackLatencyP95"]) <= u(&b["ackLatencyMax"]));
    }
    for b in buckets.iter().filter(|b| !b["completionLatencyP50"].is_null()) {
        assert!(u(&b["completionLatencyP50"]) <= u(&b["completionLatencyP95"]));
        assert!(u(&b["completionLatencyP95"]) <= u(&b["completionLatencyMax"]));
    }

    // Bad input and limits: clear errors, nothing served.
    assert!(api.error(&ex["exit_plan"], json!({ "worker": "0x1234" })).await.contains("bad address"));
    assert!(
        api.error("{ jobs(first: 501) { nodes { id } } }", json!({})).await.contains("first must be between 1 and 500")
    );
    assert!(api.error("{ jobs(after: \"x\") { nodes { id } } }", json!({})).await.contains("bad cursor"));
    assert!(api.error("{ job(id: \"-1\") { id } }", json!({})).await.contains("bad integer"));
    let deep = "{ workers { nodes { jobs { nodes { timeline { fields { name } } } } } } }";
    assert!(!api.raw(deep, json!({})).await["data"].is_null(), "a reasonable nesting is served");
    let costly = "{ workers(first: 500) { nodes { jobs(first: 500) { nodes { id timeline { name } } } } } }";
    assert!(api.error(costly, json!({})).await.to_lowercase().contains("complex"));
    let aliases: String = (0..31).map(|i| format!("a{i}: indexerStatus {{ block }} ")).collect();
    assert!(api.error(&format!("{{ {aliases} }}"), json!({})).await.contains("aliases"));
    assert!(!api.error("mutation { x }", json!({})).await.is_empty(), "no mutations");
    let r = api.http.get(format!("{}/readyz", api.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = api.http.get(format!("{}/graphql", api.url)).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("graphiql"), "GraphiQL on GET /graphql");

    let _ = api.stop.send(true);
    follower.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_push_on_indexer_commits() {
    // A short dispute window: the listener waits for a release, and the devnet's minute would be
    // most of the test.
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 3;
    })
    .await;
    let db = net.dir.path().join("lcw.db");
    let follower = Follower::start(net.profile(), &db);
    assert!(wait_until(Duration::from_secs(60), || async { Store::open_readonly(&db).is_ok() }).await);
    let pool = Db::open(&db, 2, Duration::from_secs(5)).unwrap();
    let commits = lcw_queries::watch_cursor(pool.clone(), Duration::from_millis(50));
    let schema =
        lcw_queries::schema(ApiState { db: pool, readiness: Readiness::MaxLag(3_600), commits, replica: None });

    let mut heads = schema.execute_stream("subscription { head { block } }");
    let mut blocks = Vec::new();
    while blocks.len() < 3 {
        let r = tokio::time::timeout(Duration::from_secs(20), heads.next()).await.expect("a head within 20 s").unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let v = r.data.into_json().unwrap();
        blocks.push(u(&v["head"]["block"]));
    }
    assert!(blocks.windows(2).all(|p| p[0] < p[1]), "each commit pushes a newer head: {blocks:?}");

    // Jobs of one worker are pushed as their events are indexed. A first run registers the
    // workers; the second sends jobs to them while we listen.
    let first =
        SimulateOptions { jobs: 2, workers: 2, auto_complete: true, auto_release: true, seed: 9, ..Default::default() };
    simulate::run(net.profile(), &first, |_| {}).await.expect("simulation");
    let registered = || {
        Store::open_readonly(&db).ok().and_then(|s| {
            s.conn()
                .query_row("SELECT address FROM workers ORDER BY address LIMIT 1", [], |r| r.get::<_, Vec<u8>>(0))
                .ok()
        })
    };
    assert!(wait_until(Duration::from_secs(60), || async { registered().is_some() }).await, "a worker indexed");
    let w = Address::from_slice(&registered().unwrap());
    let mut updates =
        schema.execute_stream(format!("subscription {{ jobUpdated(worker: \"{w}\") {{ id worker state }} }}"));
    let second = SimulateOptions { jobs: 6, workers: 0, seed: 10, ..first };
    let listen = async {
        let mut states = Vec::new();
        while !states.iter().any(|s: &String| s == "RELEASED") {
            let r = tokio::time::timeout(Duration::from_secs(90), updates.next()).await.expect("an update").unwrap();
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            let v = r.data.into_json().unwrap();
            assert_eq!(v["jobUpdated"]["worker"].as_str().unwrap(), w.to_checksum(None), "only this worker's jobs");
            states.push(v["jobUpdated"]["state"].as_str().unwrap().to_owned());
        }
        states
    };
    let (sim, states) = tokio::join!(simulate::run(net.profile(), &second, |_| {}), listen);
    sim.expect("simulation");
    assert!(!states.is_empty());
    follower.finish().await;
}

#[test]
fn every_job_page_and_rollup_read_uses_an_index() {
    use lcw_schema::store::reads::{JobScan, job_scan_sql};
    let dir = tempfile::tempdir().unwrap();
    let identity = lcw_schema::store::Identity {
        chain_id: 31_337,
        contracts: lcw_schema::profile::Contracts {
            worker_registry: Address::repeat_byte(1),
            job_registry: Address::repeat_byte(2),
            ai_config: Address::repeat_byte(3),
        },
        start_block: 0,
    };
    let store = Store::open(&dir.path().join("plan.db"), &identity).unwrap();
    let plan = |sql: &str, params: usize| -> String {
        let marks: Vec<rusqlite::types::Value> = (0..params).map(|_| rusqlite::types::Value::Null).collect();
        let mut stmt = store.conn().prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(marks.iter()), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.join(" | ")
    };
    for scan in [JobScan::Worker, JobScan::Session, JobScan::Model, JobScan::All] {
        for desc in [false, true] {
            let p = plan(&job_scan_sql(scan, desc), 4);
            assert!(
                p.contains("USING INDEX")
                    || p.contains("USING INTEGER PRIMARY KEY")
                    || p.contains("USING COVERING INDEX"),
                "{scan:?} desc={desc} walks an index: {p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "{scan:?} desc={desc} needs no sort: {p}");
        }
    }
    for (what, sql, n) in [
        (
            "time range → id",
            "SELECT job_id FROM jobs WHERE submitted_at >= ?1 ORDER BY submitted_at, job_id LIMIT 1",
            1,
        ),
        (
            "rollups of a worker",
            "SELECT hour FROM rollups_hourly INDEXED BY rollups_by_worker WHERE worker = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour",
            3,
        ),
        (
            "network rollups",
            "SELECT hour FROM rollups_hourly WHERE ?1 IS NULL AND hour >= ?2 AND hour < ?3 ORDER BY hour",
            3,
        ),
        ("timeline", "SELECT block_number FROM logs WHERE job_id = ?1 ORDER BY block_number, log_index", 1),
        (
            "subscription window",
            "SELECT DISTINCT job_id FROM logs WHERE block_number > ?1 AND block_number <= ?2 AND job_id IS NOT NULL",
            2,
        ),
        (
            "slashes of a worker",
            "SELECT block_number FROM slashes WHERE worker = ?1 ORDER BY block_number DESC, log_index DESC LIMIT ?2",
            2,
        ),
        (
            "open jobs of a worker",
            "SELECT job_id FROM jobs WHERE state NOT IN ('RELEASED', 'TIMED_OUT') AND worker = ?1",
            1,
        ),
        ("workers page", "SELECT address FROM workers WHERE address > ?1 ORDER BY address LIMIT ?2", 2),
    ] {
        let p = plan(sql, n);
        assert!(p.contains("USING") && !p.starts_with("SCAN "), "{what} uses an index: {p}");
    }
    // One job's view: its row by key, the window as of its release and its logs by index, in
    // chain order without a sort.
    for timeline in [false, true] {
        let p = plan(lcw_schema::store::reads::job_view_sql(timeline), 1);
        assert!(!p.contains("SCAN") && !p.contains("TEMP B-TREE"), "job view (timeline {timeline}): {p}");
        assert!(p.contains("config_by_param"), "job view (timeline {timeline}): {p}");
        assert_eq!(p.contains("logs_by_job"), timeline, "job view (timeline {timeline}): {p}");
    }
}
