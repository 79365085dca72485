//! The dashboard that `lcw serve` serves at GET /, loaded in headless Chromium against a real
//! devnet, indexer and store: every chart draws real data, the numbers on the page are the
//! store's (the four places a worker's money can be, each labelled, the wallet and its runway
//! from the node at the store's block), the key sets on disk with an archived one still holding
//! stake flagged, the served models, the page talks to nothing but its own API (over HTTP and the WebSocket
//! subscription), and a screenshot is left at `target/artifacts/dashboard.png`. Pages on other
//! origins cannot read the API (fetch or WebSocket) unless the operator allows their origin, and
//! the dashboard does not load under a rebound DNS name.
//!
//! The API runs as the real `lcw` binary ([`lcw_tests::binary::locate`]: `target/<profile>/lcw`,
//! built by `cargo test --workspace` for the CLI's own tests, or by `cargo build -p lcw-cli`;
//! `LCW_BIN` overrides), in a clean environment.
//! Chromium is the Debian package `chromium`, installed by the project's setup (`.ci/run`);
//! `CHROMIUM_BIN` overrides.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::bindings::{AIConfig, JobRegistry};
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_tests::indexing::{Follower, cursor};
use lcw_tests::{TestNet, wait_until};

/// The page as the binary should serve it (a mismatch means a stale binary).
const DASHBOARD: &str = include_str!("../../../queries/src/dashboard/index.html");
/// Every chart the page draws, by its `data-chart` name.
const CHARTS: [&str; 6] = ["exit-plan", "earnings", "jobs-by-state", "jobs-by-model", "latency", "release-queue"];
/// The dispute window while the last jobs complete: they wait an hour in the release queue.
const LONG_WINDOW: u64 = 3600;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_draws_every_chart_from_the_store_in_headless_chromium() {
    // The tools first: a missing one is a set-up error, reported before minutes of traffic.
    let chromium = chromium();
    let lcw = lcw_tests::binary::locate();

    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    assert!(wait_until(Duration::from_secs(60), || async { Store::open_readonly(&db).is_ok() }).await, "store created");

    // Two rounds of releases, timeouts and disputes (each verdict), in two hours of chain time when possible, so the
    // hourly charts have more than one bucket; then the window grows to an hour and a last round
    // completes without release: those jobs fill the release queue and the exit plans.
    let profile = net.profile().clone();
    for seed in [1, 2] {
        let report = simulate::run(&profile, &traffic(seed), |_| {}).await.expect("simulation");
        assert_eq!(report.reverted, 0, "{report:?}");
        if seed == 1 {
            // The first round's earnings are withdrawn: lifetime earned, released but not
            // withdrawn, and the wallet then differ.
            withdraw_all(&net).await;
        }
        // The simulator signs sessions that expire an hour after the wall clock, so the chain
        // may not run that far ahead: jump into the next hour only when it is near enough.
        let to_next_hour = 3600 - net.now().await % 3600 + 30;
        if seed == 1 && to_next_hour < 3000 {
            net.advance(to_next_hour).await;
        }
    }
    let owner = net.wallet(net.signer(Role::Deployer, 0));
    let ai = AIConfig::new(profile.contracts.ai_config, &owner);
    ai.setDisputeWindow(U256::from(LONG_WINDOW)).send().await.unwrap().get_receipt().await.unwrap();
    let pending = SimulateOptions {
        jobs: 12,
        workers: 3,
        auto_complete: true,
        auto_release: false,
        max_per_block: 4,
        seed: 4,
        ..SimulateOptions::default()
    };
    let report = simulate::run(&profile, &pending, |_| {}).await.expect("simulation");
    assert_eq!(report.completed, 12, "{report:?}");
    let head = alloy::providers::Provider::get_block_number(&net.provider()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || async { cursor(&db).is_some_and(|(b, _)| b >= head) }).await,
        "the indexer reaches block {head}"
    );
    let truth = Truth::read(&db);
    assert!(truth.active_jobs > 0 && truth.released > 0, "the busiest worker has open and released jobs: {truth:?}");
    let funds = Funds::read(&db, truth.worker);
    assert!(
        funds.withdrawn > U256::ZERO && funds.balance > U256::ZERO && funds.stake > U256::ZERO,
        "the worker withdrew, earned since, and is staked: {funds:?}"
    );
    // The data directory: the worker's key archived (its address still staked), a fresh set active.
    let data = dir.path().join("data");
    let archived = key_sets(&lcw, &net, truth.worker, &data);

    let rpc = profile.rpc_url.as_str();
    let data_flag = data.to_str().unwrap();
    let api = Api::start_with(&lcw, &db, &["--head-rpc", rpc, "--data-dir", data_flag], dir.path()).await;
    let served = reqwest::get(format!("{}/", api.origin)).await.unwrap().text().await.unwrap();
    assert!(
        served == DASHBOARD,
        "GET / does not serve queries/src/dashboard/index.html: {} is stale; run `cargo build -p lcw-cli`",
        lcw.display()
    );
    assert_self_contained(DASHBOARD);

    let artifacts = target_dir().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let url = format!("{}/?worker={}", api.origin, truth.worker);
    let page = load_until_drawn(&chromium, &url, &screenshot, &dir.path().join("worker")).await;
    println!("dashboard screenshot: {}", screenshot.display());

    let dom = &page.dom;
    let errors = between(dom, "<ul id=\"errors\">", "</ul>").unwrap_or_default();
    assert!(errors.is_empty(), "the page shows API errors: {errors}");
    assert_eq!(
        number(dom, "data-field=\"active-jobs\""),
        truth.active_jobs,
        "exit plan: active jobs of {}",
        truth.worker
    );
    assert_eq!(
        number(dom, "data-total=\"released\""),
        truth.released,
        "jobs by state: released jobs of {}",
        truth.worker
    );
    assert_eq!(number(dom, "data-field=\"jobs\""), truth.jobs, "header: jobs in the store");
    assert_eq!(number(dom, "data-field=\"queue-total\""), truth.open, "release queue: open jobs of every worker");
    let earned = tag_with(dom, "data-field=\"earned\"").and_then(|t| attr(t, "data-wei")).map(str::to_owned);
    assert_eq!(earned.as_deref(), Some(truth.earned_wei.as_str()), "earnings: the worker's released shares, exact wei");
    let countdown = text_after(dom, "data-field=\"countdown\"").unwrap_or_default();
    assert!(
        countdown.starts_with("in ") && countdown.contains('m'),
        "the exit plan counts down to deregistration about an hour away, shows {countdown:?}"
    );
    let deadline = tag_with(dom, "data-field=\"countdown\"").and_then(|t| attr(t, "data-deadline"));
    assert_eq!(
        deadline.and_then(|d| d.parse().ok()),
        Some(truth.last_releasable),
        "the countdown ends when the worker's last job becomes releasable"
    );
    assert_funds(dom, &funds, &net).await;
    assert_key_sets(dom, &archived);
    assert_served_models(dom, &funds.models);
    let kind = text_after(dom, "data-field=\"next-kind\"").unwrap_or_default();
    assert!(
        ["NOT_REGISTERED", "WITHDRAW", "DRAIN", "RELEASE", "CLEAR_STUCK", "WAIT", "DEREGISTER"].contains(&kind),
        "the exit plan names its next step, shows {kind:?}"
    );

    // The example asks the API the same.
    let example = &lcw_tests::query_examples()["operator_funds"];
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/graphql", api.origin))
        .json(&serde_json::json!({ "query": example, "variables": { "worker": truth.worker.to_string() } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("errors").is_none(), "operator_funds: {answer}");
    let w = &answer["data"]["worker"];
    assert_eq!(
        w["balance"].as_str(),
        Some(funds.balance.to_string().as_str()),
        "operator_funds: released, not withdrawn"
    );
    assert!(w["wallet"]["balance"].is_string() && w["wallet"]["runwayJobs"].is_u64(), "operator_funds: wallet {w}");
    let flagged: Vec<&str> = answer["data"]["keySets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["stillStaked"] == serde_json::json!(true))
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(flagged, [archived.as_str()], "operator_funds: the archived set still holding stake");

    // Over the network: nothing but this origin, and the head subscription was used.
    let requests = page_requests(&page.netlog, "127.0.0.1");
    let http = format!("{}/", api.origin);
    let ws = http.replacen("http", "ws", 1);
    let foreign: Vec<&String> = requests.iter().filter(|u| !u.starts_with(&http) && !u.starts_with(&ws)).collect();
    assert!(foreign.is_empty(), "the page fetched from elsewhere: {foreign:?}");
    assert!(requests.contains(&format!("{http}graphql")), "the page queried the API over HTTP: {requests:?}");
    assert!(requests.contains(&format!("{ws}graphql")), "the page opened the subscription socket: {requests:?}");

    // The same page for the whole network: the charts switch to the network's numbers.
    let screenshot = artifacts.join("dashboard-network.png");
    let page =
        load_until_drawn(&chromium, &format!("{url}&scope=network"), &screenshot, &dir.path().join("network")).await;
    println!("dashboard screenshot (network): {}", screenshot.display());
    let dom = &page.dom;
    assert_eq!(
        number(dom, "data-total=\"released\""),
        truth.network_released,
        "jobs by state: released jobs of all workers"
    );
    let earned = tag_with(dom, "data-field=\"earned\"").and_then(|t| attr(t, "data-wei")).map(str::to_owned);
    assert_eq!(earned, Some(truth.network_earned.to_string()), "earnings: released shares of all workers, exact wei");
    assert_eq!(
        number(dom, "data-field=\"active-jobs\""),
        truth.active_jobs,
        "the exit plan stays the selected worker's"
    );
    drop(api);

    // `lcw serve` without a node, over a data directory without keys: the store's figures as
    // before, the wallet unknown with how to see it, and no key sets.
    let empty = dir.path().join("empty-data");
    let api = Api::start_with(&lcw, &db, &["--data-dir", empty.to_str().unwrap()], dir.path()).await;
    let url = format!("{}/?worker={}", api.origin, truth.worker);
    let screenshot = artifacts.join("dashboard-no-node.png");
    let page = load_until_drawn(&chromium, &url, &screenshot, &dir.path().join("no-node")).await;
    let dom = &page.dom;
    let shown = tag_with(dom, "data-field=\"funds-stake\"").and_then(|t| attr(t, "data-wei")).map(str::to_owned);
    assert_eq!(shown, Some(funds.stake.to_string()), "the stake is the store's without a node too");
    assert_eq!(text_after(dom, "data-field=\"funds-wallet\""), Some("unknown"), "no node: the wallet is unknown");
    assert!(dom.contains("lcw serve --head-rpc URL"), "the page says how to see the wallet");
    let card = between(dom, "<div class=\"funds\" id=\"funds\">", "</section>").unwrap_or_default();
    assert!(!card.contains("gas runway"), "no runway without a wallet: {card}");
    let keys = between(dom, "<div class=\"scroll\" id=\"keysets\">", "</div>").unwrap_or_default();
    assert!(keys.contains("no keys in the data directory"), "no key sets in an empty data directory: {keys}");
    println!("dashboard screenshot (no node): {}", screenshot.display());

    drop(api);
    indexer.finish().await;
}

/// A page on another origin (another local port) tries to read the API over fetch and over the
/// subscription WebSocket, in headless Chromium: refused, unless the API allows that origin, which
/// then gets CORS answers. And the dashboard under a name rebound to 127.0.0.1 (DNS rebinding)
/// does not load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_on_other_origins_read_the_api_only_when_allowed_in_headless_chromium() {
    lcw_tests::init_tracing();
    let chromium = chromium();
    let lcw = lcw_tests::binary::locate();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let identity = lcw_schema::store::Identity {
        chain_id: 31_337,
        contracts: lcw_schema::profile::Contracts {
            worker_registry: Address::repeat_byte(1),
            job_registry: Address::repeat_byte(2),
            ai_config: Address::repeat_byte(3),
        },
        start_block: 0,
    };
    Store::open(&db, &identity).unwrap();
    let allowed = ProbePage::start().await;
    let foreign = ProbePage::start().await;
    let api = Api::start_with(&lcw, &db, &["--api-allow-origin", &allowed.origin], dir.path()).await;

    let page = dump_dom_with(
        &chromium,
        &format!("{}/?api={}", foreign.origin, api.origin),
        &[],
        &dir.path().join("foreign"),
        false,
    )
    .await;
    let (fetch, ws) = (probe_result(&page, "fetch"), probe_result(&page, "ws"));
    assert!(fetch.starts_with("refused"), "a foreign page read the API over fetch: {fetch}");
    assert!(ws.starts_with("refused"), "a foreign page read the API over a WebSocket: {ws}");
    println!("page on {} (not allowed): fetch {fetch}, WebSocket {ws}", foreign.origin);

    let page = dump_dom_with(
        &chromium,
        &format!("{}/?api={}", allowed.origin, api.origin),
        &[],
        &dir.path().join("allowed"),
        false,
    )
    .await;
    let (fetch, ws) = (probe_result(&page, "fetch"), probe_result(&page, "ws"));
    assert_eq!(fetch, "ok:31337", "an allowed origin reads the API over fetch (CORS)");
    assert_eq!(ws, "ok:31337", "an allowed origin reads the API over a WebSocket: {page}");
    println!("page on {} (--api-allow-origin): fetch {fetch}, WebSocket {ws}", allowed.origin);

    // DNS rebinding: a name the attacker controls, now resolving to 127.0.0.1.
    let port = api.origin.rsplit(':').next().unwrap();
    let rules = "--host-resolver-rules=MAP rebound.test 127.0.0.1";
    let page =
        dump_dom(&chromium, &format!("http://rebound.test:{port}/"), &[rules], &dir.path().join("rebound")).await;
    assert!(page.contains("is not this server's address"), "the dashboard under a rebound name: {page}");
    assert!(!page.contains("data-chart"), "the dashboard must not load under a rebound name");
    drop(api);
}

/// A page server on its own local port: `/` is the probe, whose load event waits on `/wait`
/// until the probe has read (or failed to read) the API both ways.
struct ProbePage {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl ProbePage {
    async fn start() -> ProbePage {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        // `/wait` (a script that holds the page's load event) is answered once the probe has both
        // results (`/done`), or after 30 s.
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        let (wait, finished) = (done.clone(), done);
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { axum::response::Html(PROBE) }))
            .route(
                "/wait",
                axum::routing::get(move || async move {
                    let _ = tokio::time::timeout(Duration::from_secs(30), wait.notified()).await;
                    ([(axum::http::header::CONTENT_TYPE, "text/javascript")], "")
                }),
            )
            .route(
                "/done",
                axum::routing::get(move || async move {
                    finished.notify_one();
                    "ok"
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ProbePage { origin, task }
    }
}

impl Drop for ProbePage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads `?api=` over fetch and over graphql-transport-ws; writes `data-fetch` and `data-ws`
/// (`ok:<chainId>` or `refused:<why>`) on the body.
const PROBE: &str = r#"<!doctype html><html><body data-fetch="pending" data-ws="pending"><script>
const API = new URLSearchParams(location.search).get('api');
const Q = '{ indexerStatus { chainId } }';
const set = (k, v) => {
  const b = document.body;
  b.setAttribute('data-' + k, v);
  if (b.getAttribute('data-fetch') !== 'pending' && b.getAttribute('data-ws') !== 'pending') fetch('/done').catch(() => {});
};
fetch(API + '/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: Q }) })
  .then(r => r.json()).then(j => set('fetch', 'ok:' + j.data.indexerStatus.chainId))
  .catch(e => set('fetch', 'refused:' + e.name));
let ws;
try { ws = new WebSocket(API.replace('http', 'ws') + '/graphql', 'graphql-transport-ws'); } catch (e) { set('ws', 'refused:' + e.name); }
if (ws) {
  ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  ws.onmessage = ev => {
    const m = JSON.parse(ev.data);
    if (m.type === 'connection_ack') ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: Q } }));
    else if (m.type === 'next') set('ws', 'ok:' + m.payload.data.indexerStatus.chainId);
  };
  ws.onclose = ev => { if (document.body.getAttribute('data-ws') === 'pending') set('ws', 'refused:close ' + ev.code); };
}
</script><script src="/wait"></script></body></html>"#;

/// What the probe page wrote for `what`.
fn probe_result(dom: &str, what: &str) -> String {
    tag_with(dom, "<body").and_then(|t| attr(t, &format!("data-{what}"))).unwrap_or("missing").to_owned()
}

/// Loads `url` in headless Chromium and returns its DOM.
async fn dump_dom(chromium: &Path, url: &str, flags: &[&str], dir: &Path) -> String {
    dump_dom_with(chromium, url, flags, dir, true).await
}

/// Loads `url` and returns its DOM once the page has loaded; with `virtual_time`, after 5 s of
/// Chromium's virtual time as well (timers run at once, but a pending request freezes it, and
/// with it the page's sockets: a page that waits on its own sockets must load in real time).
async fn dump_dom_with(chromium: &Path, url: &str, flags: &[&str], dir: &Path, virtual_time: bool) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let run = tokio::process::Command::new(chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(virtual_time.then_some("--virtual-time-budget=5000"))
        .args(flags)
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("chromium did not finish loading {url} within 120 s"))
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Traffic with releases, timeouts (before and after the ack) and disputes (each verdict).
fn traffic(seed: u64) -> SimulateOptions {
    SimulateOptions {
        jobs: 24,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 15.0, dispute: 25.0, settle: 0.0 },
        seed,
        ..SimulateOptions::default()
    }
}

/// Every simulated worker withdraws what it has earned so far.
async fn withdraw_all(net: &TestNet) {
    let registry = net.profile().contracts.job_registry;
    for i in 0..3 {
        let signer = net.signer(Role::Worker, i);
        let me = signer.address();
        let jr = JobRegistry::new(registry, net.wallet(signer));
        if jr.workerBalance(me).call().await.unwrap() > U256::ZERO {
            jr.withdraw().send().await.unwrap().get_receipt().await.unwrap();
        }
    }
}

/// With the real binary: the key of `worker` imported and archived, then a fresh set made
/// active. Returns the archived set's name.
fn key_sets(lcw: &Path, net: &TestNet, worker: Address, data: &Path) -> String {
    let signer = (0..3).map(|i| net.signer(Role::Worker, i)).find(|s| s.address() == worker).expect("a dev worker key");
    let key = alloy::hex::encode(signer.to_bytes());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = lcw_tests::binary::lcw(lcw)
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("LCW_PASSWORD", "dashboard test password")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "lcw {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["keygen"], &[("LCW_IMPORT_KEY", &key)]);
    let archived: serde_json::Value =
        serde_json::from_str(&run(&["keys", "archive", "--reason", "moved to a new machine", "--json"], &[])).unwrap();
    run(&["keygen"], &[]);
    archived["name"].as_str().expect("the archive's name").to_owned()
}

/// The selected worker's money, from the store.
#[derive(Debug)]
struct Funds {
    worker: Address,
    earned: U256,
    balance: U256,
    withdrawn: U256,
    stake: U256,
    /// Its models' ids, 0x hex.
    models: Vec<String>,
}

impl Funds {
    fn read(db: &Path, worker: Address) -> Funds {
        let store = Store::open_readonly(db).unwrap();
        let c = store.conn();
        let wei = |s: String| s.parse::<U256>().expect("wei as a decimal string");
        let (earned, balance, withdrawn, stake) = c
            .query_row(
                "SELECT earned_wei, balance_wei, withdrawn_wei, stake_wei FROM workers WHERE address = ?1",
                [worker.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        let mut q = c.prepare("SELECT model_id FROM worker_models WHERE worker = ?1 ORDER BY model_id").unwrap();
        let models = q
            .query_map([worker.as_slice()], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|m| format!("0x{}", alloy::hex::encode(m.unwrap())))
            .collect();
        Funds {
            worker,
            earned: wei(earned),
            balance: wei(balance),
            withdrawn: wei(withdrawn),
            stake: wei(stake),
            models,
        }
    }
}

/// The four figures, each under its plain label, equal to the store's (the wallet to the node's
/// balance at the block the page names), and the runway the wallet pays for.
async fn assert_funds(dom: &str, funds: &Funds, net: &TestNet) {
    let shown = |field: &str| -> Option<U256> {
        tag_with(dom, &format!("data-field=\"{field}\"")).and_then(|t| attr(t, "data-wei")).and_then(|w| w.parse().ok())
    };
    for (label, field, want) in [
        ("earned, lifetime", "funds-earned", funds.earned),
        ("released, not withdrawn", "funds-released", funds.balance),
        ("staked", "funds-stake", funds.stake),
    ] {
        assert!(dom.contains(&format!("<small>{label}</small>")), "the page labels {label:?}");
        assert_eq!(shown(field), Some(want), "{label} of {}, exact wei", funds.worker);
    }
    assert!(dom.contains("<small>in the wallet</small>"), "the page labels the wallet");
    let wallet = shown("funds-wallet").expect("the wallet's balance is shown");
    let block: u64 = tag_with(dom, "data-field=\"funds-wallet\"")
        .and_then(|t| attr(t, "data-block"))
        .and_then(|b| b.parse().ok())
        .expect("the wallet names its block");
    let at_block = alloy::providers::Provider::get_balance(&net.provider(), funds.worker).number(block).await.unwrap();
    assert_eq!(wallet, at_block, "the wallet is the node's balance at block {block}");
    let cost: U256 = tag_with(dom, "data-field=\"runway\"")
        .and_then(|t| attr(t, "data-job-cost"))
        .and_then(|c| c.parse().ok())
        .expect("the runway names a job's cost");
    let runway = number(dom, "data-field=\"runway\"");
    assert!(cost > U256::ZERO && runway > 0, "a job costs gas and the wallet pays for some: {cost} wei, {runway} jobs");
    assert_eq!(U256::from(runway as u64), wallet / cost, "the runway is whole jobs of the wallet");
}

/// The archived set whose address is staked is flagged with its recover command; the fresh
/// active set is not.
fn assert_key_sets(dom: &str, archived: &str) {
    let row = tag_with(dom, &format!("data-keyset=\"{archived}\"")).expect("the archived key set is listed");
    assert_eq!(attr(row, "data-still-staked"), Some("true"), "the archived set still holds stake: {row}");
    assert!(dom.contains(&format!("lcw keys recover {archived}")), "the page says how to recover it");
    let active = tag_with(dom, "data-keyset=\"keys\"").expect("the active key set is listed");
    assert_eq!(attr(active, "data-still-staked"), Some("false"), "the fresh active set holds nothing: {active}");
}

/// The worker's models as the store has them, each with its footprint (unknown: no LLM server
/// beside this API).
fn assert_served_models(dom: &str, models: &[String]) {
    assert!(!models.is_empty(), "the worker serves models");
    let table = between(dom, "<div class=\"scroll\" id=\"served\">", "</table>").expect("the served models' table");
    let rows: Vec<&str> = table.split("<tr data-model=\"").skip(1).collect();
    let mut shown: Vec<&str> = rows.iter().map(|r| &r[..r.find('"').unwrap()]).collect();
    shown.sort();
    assert_eq!(shown, models, "the served models are the store's");
    for row in rows {
        let cell = between(row, "data-field=\"footprint\">", "</td>").expect("a footprint cell");
        assert!(
            cell.ends_with(">unknown</span>"),
            "no LLM server beside this API: the footprint is unknown, shows {cell}"
        );
    }
}

/// What the page must show, read from the store.
#[derive(Debug)]
struct Truth {
    /// The worker with the most active jobs among those with released jobs.
    worker: Address,
    active_jobs: i64,
    earned_wei: String,
    /// Its released jobs.
    released: i64,
    /// When its last completed job becomes releasable (completion plus the long window).
    last_releasable: i64,
    /// All jobs.
    jobs: i64,
    /// Active jobs of every worker: each has a scheduled release or timeout.
    open: i64,
    /// Released jobs of every worker.
    network_released: i64,
    /// Worker shares of every worker, wei.
    network_earned: U256,
}

impl Truth {
    fn read(db: &Path) -> Truth {
        let store = Store::open_readonly(db).unwrap();
        let c = store.conn();
        let (address, active_jobs, earned_wei) = c
            .query_row(
                "SELECT address, active_jobs, earned_wei FROM workers w
                 WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.worker = w.address AND j.state = 'RELEASED')
                 ORDER BY active_jobs DESC, address LIMIT 1",
                [],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let released = c
            .query_row("SELECT count(*) FROM jobs WHERE worker = ?1 AND state = 'RELEASED'", [&address], |r| r.get(0))
            .unwrap();
        let last_completed: i64 = c
            .query_row(
                "SELECT max(completed_at) FROM jobs WHERE worker = ?1 AND state = 'COMPLETED'",
                [&address],
                |r| r.get(0),
            )
            .unwrap();
        let last_releasable = last_completed + LONG_WINDOW as i64;
        let jobs = c.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).unwrap();
        let open = c.query_row("SELECT coalesce(sum(active_jobs), 0) FROM workers", [], |r| r.get(0)).unwrap();
        let network_released =
            c.query_row("SELECT count(*) FROM jobs WHERE state = 'RELEASED'", [], |r| r.get(0)).unwrap();
        let mut earned = c.prepare("SELECT earned_wei FROM workers").unwrap();
        let network_earned = earned
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|w| w.unwrap().parse::<U256>().expect("wei as a decimal string"))
            .fold(U256::ZERO, |a, b| a + b);
        Truth {
            worker: Address::from_slice(&address),
            active_jobs,
            earned_wei,
            released,
            last_releasable,
            jobs,
            open,
            network_released,
            network_earned,
        }
    }
}

fn target_dir() -> PathBuf {
    let profile = lcw_tests::binary::profile_dir();
    profile.parent().map(Path::to_owned).unwrap_or(profile)
}

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM_BIN") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "chromium is not installed: the dashboard test needs headless Chromium (Debian package `chromium`); \
             the project's setup installs it (.ci/run), or run `apt-get install -y chromium`"
        )
    })
}

/// `lcw serve` on a free port; killed when dropped.
struct Api {
    child: tokio::process::Child,
    origin: String,
}

impl Api {
    /// `lcw serve` with extra flags.
    async fn start_with(lcw: &Path, db: &Path, flags: &[&str], dir: &Path) -> Api {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log_path = dir.join("serve.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = tokio::process::Command::from(lcw_tests::binary::lcw(lcw))
            .arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(flags)
            .env("LCW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("lcw serve starts");
        let origin = format!("http://127.0.0.1:{port}");
        let health = format!("{origin}/healthz");
        let up = wait_until(Duration::from_secs(30), || async {
            reqwest::get(&health).await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        if !up {
            let _ = child.start_kill();
            panic!("lcw serve did not answer on {health}:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
        Api { child, origin }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The page must not reach outside its origin: no absolute URLs, no external scripts, styles,
/// fonts or images.
fn assert_self_contained(html: &str) {
    for needle in ["://", " src=", "@import", "url(", "@font-face"] {
        assert!(!html.contains(needle), "the dashboard HTML contains {needle:?}: it must be self-contained");
    }
    for link in html.match_indices("href=\"").map(|(i, _)| &html[i + 6..]) {
        assert!(link.starts_with("data:"), "the dashboard links to {:?}", &link[..link.len().min(40)]);
    }
}

/// What headless Chromium saw of the page.
struct Page {
    dom: String,
    netlog: PathBuf,
}

/// Loads `url` until every chart reports data-ready, saving a screenshot each time. Chromium's
/// virtual time runs the page's clock fast while the API answers in real time; a longer budget
/// is tried when the charts were not all drawn yet.
async fn load_until_drawn(chromium: &Path, url: &str, screenshot: &Path, dir: &Path) -> Page {
    std::fs::create_dir_all(dir).unwrap();
    let mut last = String::new();
    for (attempt, budget_ms) in [8_000u64, 20_000, 40_000].into_iter().enumerate() {
        let profile = dir.join(format!("chromium-{attempt}"));
        let netlog = dir.join(format!("netlog-{attempt}.json"));
        let run = tokio::process::Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--window-size=1400,2100",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--log-net-log={}", netlog.display()))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg("--dump-dom")
            .arg(url)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(out) => out.expect("chromium runs"),
            Err(_) => panic!("chromium did not finish loading {url} within 120 s"),
        };
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let states: Vec<(&str, Option<&str>)> = CHARTS
            .iter()
            .map(|c| (*c, tag_with(&dom, &format!("data-chart=\"{c}\"")).and_then(|t| attr(t, "data-ready"))))
            .collect();
        if states.iter().all(|(_, ready)| *ready == Some("true")) {
            assert!(screenshot.is_file(), "chromium saved no screenshot at {}", screenshot.display());
            return Page { dom, netlog };
        }
        last = format!(
            "charts (name, data-ready): {states:?}; banner: {:?}; chromium exit: {}",
            between(&dom, "<ul id=\"errors\">", "</ul>"),
            out.status
        );
    }
    panic!("the dashboard at {url} did not draw every chart with data: {last}");
}

/// The first opening tag containing `needle`.
fn tag_with<'a>(dom: &'a str, needle: &str) -> Option<&'a str> {
    let i = dom.find(needle)?;
    let start = dom[..i].rfind('<')?;
    let end = i + dom[i..].find('>')?;
    Some(&dom[start..=end])
}

/// An attribute's value in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    Some(&tag[i..i + tag[i..].find('"')?])
}

/// The text right inside the element carrying `needle`, up to its first child or end.
fn text_after<'a>(dom: &'a str, needle: &str) -> Option<&'a str> {
    let i = dom.find(needle)?;
    let open = i + dom[i..].find('>')? + 1;
    let close = open + dom[open..].find('<')?;
    Some(dom[open..close].trim())
}

fn between<'a>(dom: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = dom.find(start)? + start.len();
    Some(dom[i..i + dom[i..].find(end)?].trim())
}

/// The number shown by the element carrying `needle` (thousands separators allowed).
fn number(dom: &str, needle: &str) -> i64 {
    let text = text_after(dom, needle).unwrap_or_else(|| panic!("the page has no element with {needle}"));
    text.replace(',', "").parse().unwrap_or_else(|_| panic!("{needle} shows {text:?}, not a number"))
}

/// URLs the page itself requested (its main frame and everything it loaded), from Chromium's
/// NetLog: requests whose network isolation key is the page's site. Chromium's own background
/// requests carry another key.
fn page_requests(netlog: &Path, host: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(netlog).unwrap_or_else(|e| panic!("chromium's NetLog {}: {e}", netlog.display()));
    let log: serde_json::Value = serde_json::from_str(&text).expect("NetLog is JSON");
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64().expect("NetLog event types");
    let site = format!("http://{host} ");
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .expect("NetLog events")
        .iter()
        .filter(|e| e["type"].as_u64() == Some(start))
        .filter(|e| e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.starts_with(&site)))
        .filter_map(|e| e["params"]["url"].as_str().map(str::to_owned))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}
