//! The chain layer's failover against real anvils: calls and typed contract reads move to a
//! fallback when the primary is down and back to the primary once it answers, each endpoint's
//! chain id checked on first use and after every switch; an endpoint of another chain is never
//! used (and named, redacted, in the error), by the indexer's client either, even when it
//! carries the same contract addresses; a JSON-RPC error answer is returned at once, never
//! sent elsewhere; a fee history out of proportion to the head is refused; a store of another
//! network is refused by a process that does not index it, even while an indexer holds it.
//!
//! Endpoints sit behind a [`Relay`]: a pass-through to a node that records the methods it
//! forwards and can be switched off (it then answers HTTP 503, as a load balancer in front of a
//! dead node does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, Bytes};
use alloy::providers::Provider;
use axum::body::Bytes as Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lcw_chain::rpc::{Rpc, RpcError};
use lcw_chain::{CallSpec, Chain, ChainError};
use lcw_contracts::anvil::{AnvilConfig, AnvilProcess};
use lcw_schema::bindings::AIConfig;
use lcw_schema::profile::{Profile, Role};
use lcw_schema::store::StoreError;
use lcw_tests::TestNet;
use lcw_tests::indexing::{self, Follower};
use serde_json::Value;

/// A marker API key: it must never appear in an error.
const KEY: &str = "K3yOfTheOperator";
const TIMEOUT: Duration = Duration::from_secs(2);

type Rewrite = fn(&str, &mut Value);

struct RelayState {
    upstream: String,
    up: AtomicBool,
    seen: Mutex<Vec<String>>,
    http: reqwest::Client,
    rewrite: Option<Rewrite>,
}

/// A pass-through to a node that records what it forwards; stops when dropped.
struct Relay {
    /// `http://127.0.0.1:<port>/?apikey=<KEY>`: an URL that must be redacted.
    url: String,
    state: Arc<RelayState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn methods(body: &Value) -> Vec<String> {
    let one = |v: &Value| v.get("method").and_then(Value::as_str).unwrap_or("?").to_owned();
    match body {
        Value::Array(batch) => batch.iter().map(one).collect(),
        v => vec![one(v)],
    }
}

async fn relay(State(state): State<Arc<RelayState>>, body: Body) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if !state.up.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream").into_response();
    }
    let methods = methods(&request);
    state.seen.lock().unwrap().extend(methods.iter().cloned());
    let sent = state.http.post(&state.upstream).header("content-type", "application/json").body(body).send().await;
    let Ok(answer) = sent else { return StatusCode::BAD_GATEWAY.into_response() };
    let Ok(mut answer) = answer.json::<Value>().await else { return StatusCode::BAD_GATEWAY.into_response() };
    if let (Some(rewrite), [method]) = (state.rewrite, methods.as_slice()) {
        rewrite(method, &mut answer);
    }
    ([("content-type", "application/json")], answer.to_string()).into_response()
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        Self::start_with(upstream, None).await
    }

    async fn start_with(upstream: &str, rewrite: Option<Rewrite>) -> Relay {
        let state = Arc::new(RelayState {
            upstream: upstream.to_owned(),
            up: AtomicBool::new(true),
            seen: Mutex::default(),
            http: reqwest::Client::new(),
            rewrite,
        });
        let app = axum::Router::new().route("/", axum::routing::post(relay)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Relay { url: format!("http://127.0.0.1:{port}/?apikey={KEY}"), state, task }
    }

    /// How the URL appears in logs and errors.
    fn redacted(&self) -> String {
        lcw_schema::profile::redact_url(&self.url)
    }

    fn set_up(&self, up: bool) {
        self.state.up.store(up, Ordering::SeqCst);
    }

    /// The methods forwarded since the last call, and forgets them.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.state.seen.lock().unwrap())
    }
}

/// A bare anvil of another chain; stops when dropped.
fn other_chain(dir: &std::path::Path, chain_id: u64) -> AnvilProcess {
    AnvilProcess::spawn(&AnvilConfig {
        port: 0,
        block_time: None,
        accounts: 1,
        gas_limit: 30_000_000,
        chain_id,
        config_out: dir.join(format!("anvil-{chain_id}.json")),
        log_file: None,
        prune_history: None,
        genesis_timestamp: None,
    })
    .expect("anvil starts")
}

fn with_endpoints(profile: &Profile, primary: &str, fallbacks: &[&str]) -> Profile {
    let mut p = profile.clone();
    p.rpc_url = primary.to_owned();
    p.rpc_fallback_urls = fallbacks.iter().map(|u| (*u).to_owned()).collect();
    p
}

/// An URL nothing listens on.
fn closed_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/?apikey={KEY}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_down_calls_and_typed_contract_reads_go_to_the_fallback() {
    let net = TestNet::start().await;
    let primary = Relay::start(&net.profile().rpc_url).await;
    let fallback = Relay::start(&net.profile().rpc_url).await;
    let profile = with_endpoints(net.profile(), &primary.url, &[&fallback.url]);
    let chain = Chain::open(&profile, TIMEOUT).await.expect("opens on the primary");
    assert_eq!(chain.chain_id, 31_337);
    assert!(fallback.take().is_empty(), "a healthy primary serves everything");
    primary.take();

    primary.set_up(false);
    let head = chain.head().await.expect("head from the fallback");
    let ai = AIConfig::new(profile.contracts.ai_config, chain.provider());
    let ack = ai.getAckTimeout().call().await.expect("a typed read through the fallback");
    assert!(ack > alloy::primitives::U256::ZERO);
    chain.fees(0).await.expect("fees from the fallback");
    let me = net.signer(Role::Keeper, 0).address();
    chain.nonces(me).await.expect("nonces from the fallback");
    let seen = fallback.take();
    assert_eq!(seen.first().map(String::as_str), Some("eth_chainId"), "its chain is checked first: {seen:?}");
    assert_eq!(seen.iter().filter(|m| *m == "eth_chainId").count(), 1, "once, then cached: {seen:?}");
    assert!(seen.iter().any(|m| m == "eth_call") && seen.iter().any(|m| m == "eth_feeHistory"), "{seen:?}");
    assert!(primary.take().is_empty(), "nothing reached the primary while it was down");

    // With the primary down from the start, and on a closed port: it opens on the fallback.
    let dead = with_endpoints(net.profile(), &closed_port(), &[&fallback.url]);
    let chain = Chain::open(&dead, TIMEOUT).await.expect("opens on the fallback");
    assert_eq!(chain.head().await.expect("head").number, head.number);
    assert!(AIConfig::new(profile.contracts.ai_config, chain.provider()).getAckTimeout().call().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_back_to_the_primary_once_it_answers_and_its_chain_is_checked_again() {
    let net = TestNet::start().await;
    let primary = Relay::start(&net.profile().rpc_url).await;
    let fallback = Relay::start(&net.profile().rpc_url).await;
    let profile = with_endpoints(net.profile(), &primary.url, &[&fallback.url]);
    let chain = Chain::open(&profile, TIMEOUT).await.expect("opens");
    chain.head().await.expect("head");
    assert_eq!(primary.take(), ["eth_chainId", "eth_chainId", "eth_getBlockByNumber"], "checked, then used");

    // Two calls while it is down (fewer failures than would rest it).
    primary.set_up(false);
    chain.head().await.expect("head from the fallback");
    chain.balance(Address::ZERO).await.expect("balance from the fallback");
    assert_eq!(fallback.take(), ["eth_chainId", "eth_getBlockByNumber", "eth_getBalance"]);

    primary.set_up(true);
    chain.head().await.expect("head from the primary again");
    chain.head().await.expect("and again");
    assert_eq!(primary.take(), ["eth_chainId", "eth_getBlockByNumber", "eth_getBlockByNumber"]);
    assert!(fallback.take().is_empty(), "the primary is preferred as soon as it answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_of_another_chain_is_never_used_and_named_redacted() {
    let net = TestNet::start().await;
    let testnet = other_chain(net.dir.path(), 8200);
    let primary = Relay::start(&net.profile().rpc_url).await;
    let stranger = Relay::start(&testnet.http_url()).await;
    let profile = with_endpoints(net.profile(), &primary.url, &[&stranger.url]);
    let chain = Chain::open(&profile, TIMEOUT).await.expect("opens on the primary");

    // The primary goes down: the fallback answers another chain id, so nothing but that is
    // asked of it, and the calls fail (after their budget) naming it.
    primary.set_up(false);
    let started = Instant::now();
    let e = chain.head().await.expect_err("no endpoint of chain 31337 answers").to_string();
    assert!(started.elapsed() < TIMEOUT * 4, "gives up after its budget: {:?}", started.elapsed());
    let note = format!("not used, another chain: {} answers chain 8200", stranger.redacted());
    assert!(e.contains(&note), "{e}");
    assert!(!e.contains(KEY), "the API key never reaches an error: {e}");
    let ai = AIConfig::new(profile.contracts.ai_config, chain.provider());
    assert!(ai.getAckTimeout().call().await.is_err(), "typed reads are not answered by the other chain");
    assert!(chain.send_raw(&Bytes::from_static(&[0x02, 0x01])).await.is_err());
    assert_eq!(stranger.take(), ["eth_chainId"], "checked once, then never used again");

    // Back up: the primary serves again.
    primary.set_up(true);
    chain.head().await.expect("the primary answers again");

    // Every endpoint of another chain: opening fails and names each one (redacted).
    let only_strangers = with_endpoints(net.profile(), &stranger.url, &[&testnet.http_url()]);
    let e = Chain::open(&only_strangers, TIMEOUT).await.expect_err("no endpoint of the profile's chain");
    assert!(matches!(e, ChainError::WrongChain(RpcError::WrongChain { expected: 31_337, .. })), "{e:?}");
    let m = e.to_string();
    assert!(m.contains(&format!("{} answers chain 8200", stranger.redacted())), "{m}");
    assert!(m.contains(&format!("{} answers chain 8200", testnet.http_url())), "{m}");
    assert!(m.contains("no RPC endpoint serves chain 31337") && !m.contains(KEY), "{m}");

    // A primary of another chain is passed over for a fallback of the right one.
    let wrong_first = with_endpoints(net.profile(), &stranger.url, &[&primary.url]);
    let chain = Chain::open(&wrong_first, TIMEOUT).await.expect("opens on the fallback");
    assert_eq!(chain.chain_id, 31_337);
    chain.head().await.expect("head");
    let refused = chain.rpc().refused();
    assert_eq!((refused.len(), refused[0].chain_id), (1, 8200));

    // The indexer's client shares the policy.
    let rpc = Rpc::for_profile(&wrong_first, TIMEOUT).expect("client");
    assert_eq!(rpc.chain_id().await.expect("chain id of the right endpoint"), 31_337);
    let logs = rpc.logs(&profile.contracts.all(), 0, 5).await.expect("logs from the right endpoint");
    assert!(!logs.is_empty(), "the deployment logged events");
    stranger.take();
    assert!(rpc.header(alloy::eips::BlockNumberOrTag::Latest).await.is_ok());
    assert!(stranger.take().is_empty(), "the indexer never asks it either");
}

/// M5: a fallback of another chain with the same contract addresses (a second devnet, as a
/// testnet URL listed as a mainnet fallback would be) is never read by the indexer, which waits for
/// the primary instead and goes on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_never_reads_from_a_fallback_of_another_chain() {
    let net = TestNet::start().await;
    let twin = TestNet::start_with(|o| o.chain_id = 31_338).await;
    assert_eq!(twin.profile().contracts, net.profile().contracts, "the same addresses on both chains");
    let primary = Relay::start(&net.profile().rpc_url).await;
    let stranger = Relay::start(&twin.profile().rpc_url).await;
    let profile = with_endpoints(net.profile(), &primary.url, &[&stranger.url]);
    let db = net.dir.path().join("lcw.db");
    let follower = Follower::start(&profile, &db);
    let head = net.provider().get_block_number().await.unwrap();
    assert!(
        lcw_tests::wait_until(Duration::from_secs(60), || async { indexing::cursor(&db).is_some_and(|c| c.0 >= head) })
            .await,
        "indexed to the head"
    );
    let indexed = indexing::cursor(&db);

    primary.set_up(false);
    twin.advance(1).await;
    twin.advance(1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stranger.take(), ["eth_chainId"], "its chain id is asked once, nothing else ever");
    assert_eq!(indexing::cursor(&db), indexed, "nothing from the other chain reached the store");

    primary.set_up(true);
    net.advance(1).await;
    let head = net.provider().get_block_number().await.unwrap();
    assert!(
        lcw_tests::wait_until(Duration::from_secs(60), || async { indexing::cursor(&db).is_some_and(|c| c.0 >= head) })
            .await,
        "goes on from the primary"
    );
    follower.finish().await;
    assert!(stranger.take().is_empty(), "never used again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rpc_error_answer_is_returned_at_once_and_not_sent_elsewhere() {
    let net = TestNet::start().await;
    let primary = Relay::start(&net.profile().rpc_url).await;
    let fallback = Relay::start(&net.profile().rpc_url).await;
    let profile = with_endpoints(net.profile(), &primary.url, &[&fallback.url]);
    let chain = Chain::open(&profile, Duration::from_secs(10)).await.expect("opens");
    primary.take();
    let head = chain.head().await.expect("head");
    primary.take();

    // A revert: an unknown selector on the JobRegistry.
    let started = Instant::now();
    let call = CallSpec {
        from: Address::ZERO,
        to: profile.contracts.job_registry,
        data: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
    };
    chain.call_at(&call, head.number + 1, head.timestamp + 1).await.expect_err("reverts");
    // A refused transaction: bytes that are no transaction.
    let refused = chain.send_raw(&Bytes::from_static(&[0x02, 0x01])).await.expect_err("refused");
    assert!(!refused.is_empty());
    // A typed read that reverts.
    let ai = AIConfig::new(profile.contracts.job_registry, chain.provider());
    ai.getAckTimeout().call().await.expect_err("no such function on the JobRegistry");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once: {:?}", started.elapsed());
    assert_eq!(primary.take(), ["eth_call", "eth_sendRawTransaction", "eth_call"], "each sent once");
    assert!(fallback.take().is_empty(), "an answer is not asked again elsewhere");
}

/// An `eth_feeHistory` answer whose tips are a thousand times any sane one.
fn absurd_tips(method: &str, answer: &mut Value) {
    if method == "eth_feeHistory"
        && let Some(reward) = answer.pointer_mut("/result/reward").and_then(Value::as_array_mut)
    {
        for r in reward {
            *r = serde_json::json!(["0x3635c9adc5dea00000"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_history_out_of_proportion_to_the_head_is_refused() {
    let net = TestNet::start().await;
    // A few blocks, so that the history has rewards.
    net.advance(1).await;
    net.advance(1).await;
    let liar = Relay::start_with(&net.profile().rpc_url, Some(absurd_tips)).await;
    let chain = Chain::open(&with_endpoints(net.profile(), &liar.url, &[]), TIMEOUT).await.expect("opens");
    let e = chain.fees(0).await.expect_err("refused").to_string();
    assert!(e.contains("eth_feeHistory refused") && e.contains("median tip of 1000000000000 gwei"), "{e}");
    let honest = Chain::open(net.profile(), TIMEOUT).await.expect("opens");
    let fees = honest.fees(0).await.expect("an honest history is used");
    assert!(fees.max_fee >= fees.tip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_another_network_is_refused_by_a_process_that_does_not_index_it() {
    let devnet = TestNet::start().await;
    let other = TestNet::start_with(|o| o.chain_id = 31_338).await;
    let db = devnet.dir.path().join("lcw.db");
    indexing::until_head(devnet.profile(), &db).await;
    // An indexer holds the store, as `lcw index` in another terminal would.
    let follower = Follower::start(devnet.profile(), &db);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signer = other.signer(Role::Keeper, 0);
    let e = lcw_settler::ops::Operator::open(other.profile().clone(), &db, signer, lcw_chain::FeeCap::default())
        .await
        .expect_err("the operator refuses a devnet store for another chain");
    let m = e.to_string();
    assert!(m.contains(&format!("store {} belongs to chain 31337", db.display())), "{m}");
    assert!(m.contains("not to chain 31338") && m.contains("--data-dir") && m.contains("--db"), "{m}");

    let network = lcw_schema::store::Identity::of(other.profile());
    let e = lcw_schema::store::Store::connect_as(&db, &network).expect_err("refused");
    assert!(matches!(e, StoreError::IdentityMismatch { .. }), "{e}");
    let own = lcw_schema::store::Identity::of(devnet.profile());
    assert!(lcw_schema::store::Store::connect_as(&db, &own).is_ok(), "its own network uses it");
    follower.finish().await;
}
