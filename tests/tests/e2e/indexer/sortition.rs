//! Sortition indexed from a real devnet: requests, claims and adoptions of the SessionManager
//! AIConfig publishes, live and by backfill, replayed, verified, unwound by a reorg, and followed
//! when AIConfig moves the SessionManager while the indexer runs.

use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::SolCall;
use lcw_queries::{ApiState, Db, Readiness};
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_schema::store::raw::CallResult;
use lcw_schema::store::rows::{EventCountRow, SessionRow};
use lcw_schema::store::sortition::{self, RequestStatus};
use lcw_schema::suite::Suite;
use lcw_tests::indexing::{self, Follower};
use lcw_tests::parties::{Worker, model, register_worker, submit};
use lcw_tests::sortition::{Request, block_hash, manager, predicted_delay, provide_key, request};
use lcw_tests::{TestNet, b256, event, send};
use serde_json::{Value, json};

use super::head;

async fn sortition_net() -> TestNet {
    TestNet::start_with(|o| o.deploy.sortition = true).await
}

/// `worker` claims `req` in the first block its turn allows (or the next one).
async fn claim(net: &TestNet, req: &Request, worker: &Worker) -> TransactionReceipt {
    let delay = predicted_delay(net, req, worker.address).await;
    let now = net.provider().get_block_number().await.unwrap();
    if now < req.block + delay {
        net.provider().anvil_mine(Some(req.block + delay - now), None).await.unwrap();
    }
    let sm = SessionManager::new(manager(net).await, &worker.provider);
    let receipt = send!(sm.claimSession(req.id));
    assert_eq!(event::<SessionManager::SessionClaimed>(&receipt).unwrap().worker, worker.address);
    receipt
}

/// Waits until the store at `db` is at the chain's head.
async fn caught_up(net: &TestNet, db: &Path) {
    let (n, h) = head(net).await;
    assert!(indexing::wait_for(db, n, h, Duration::from_secs(60)).await, "the indexer reached block {n}");
}

fn events(db: &Path, name: &str) -> u64 {
    let store = Store::open_readonly(db).unwrap();
    EventCountRow::get(store.conn(), name).unwrap().map(|r| r.count).unwrap_or(0)
}

/// Mines past finality, indexes the whole chain into a fresh store (mostly by backfill) and
/// checks it equals `db`, that replay rebuilds `db` exactly, and that verify passes.
async fn backfill_replay_and_verify_agree(net: &TestNet, db: &Path) {
    net.provider().anvil_mine(Some(70), None).await.unwrap();
    let fresh = db.with_file_name("fresh.db");
    indexing::until_head(net.profile(), &fresh).await;
    assert_eq!(indexing::differences(db, &fresh), vec![], "a backfill of the same chain builds the same store");
    let replayed = lcw_indexer::replay::replay(db, false).unwrap();
    assert!(replayed.equal(), "replay rebuilds every table: {:?}", replayed.differences);
    let verified = lcw_indexer::verify::verify(net.profile(), db, Duration::from_secs(10)).await.unwrap();
    assert!(verified.ok(), "{:#?}", verified.differences);
}

/// Runs `query` with `variables` over HTTP against the API on `db`; returns `data`.
async fn graphql(db: &Path, query: &str, variables: Value) -> Value {
    let pool = Db::open(db, 2, Duration::from_secs(5)).expect("store opens read-only");
    let (_commits_tx, commits) = tokio::sync::watch::channel(0u64);
    let state = ApiState { db: pool, readiness: Readiness::MaxLag(u64::MAX), commits, replica: None };
    let app = lcw_queries::router(state, Duration::from_secs(5));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let response: Value = reqwest::Client::new()
        .post(format!("http://{addr}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("POST /graphql")
        .json()
        .await
        .expect("JSON");
    server.abort();
    assert!(response.get("errors").is_none(), "errors: {}", response["errors"]);
    response["data"].clone()
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../queries/examples").join(format!("{name}.graphql"));
    std::fs::read_to_string(path).expect("the example exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_claims_and_adoptions_are_indexed_with_their_facts_live_and_by_backfill() {
    let net = sortition_net().await;
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let c = net.profile().contracts;
    let sm = manager(&net).await;
    let searcher = register_worker(&net, 0, Suite::P256AesGcm).await;
    let plain = register_worker(&net, 1, Suite::X25519).await;
    let search = U256::from(1);
    let registry = WorkerRegistry::new(c.worker_registry, &searcher.provider);
    send!(registry.setCapabilities(search));

    // Three requests: one made ready, one claimed and left waiting, one left to expire.
    let ready = request(&net, 0, 3_600, U256::ZERO).await;
    let waiting = request(&net, 1, 3_600, search).await;
    let lapsing = request(&net, 2, 30, U256::ZERO).await;
    let ready_claim = claim(&net, &ready, &plain).await;
    let session = provide_key(&net, &ready, &plain).await;
    let fee = AIConfig::new(c.ai_config, net.provider()).calculateJobFee(model()).call().await.unwrap();
    let consumer_jr = JobRegistry::new(c.job_registry, &session.consumer);
    send!(consumer_jr.deposit().value(fee));
    let job = submit(&net, &session, b256(1)).await;
    let waiting_claim = claim(&net, &waiting, &searcher).await;
    net.advance(60).await;
    caught_up(&net, &db).await;
    let summary = follower.finish().await;
    assert_eq!(summary.undecodable, 0);

    // Who claimed what and when, with expiry and capabilities as the chain has them.
    let store = Store::open_readonly(&db).unwrap();
    let conn = store.conn();
    let onchain = SessionManager::new(sm, net.provider());
    let r = sortition::request(conn, sm, ready.id.to()).unwrap().expect("request indexed");
    assert_eq!(r.status, RequestStatus::Ready);
    assert_eq!((r.user, r.model_id, r.request_block), (ready.consumer_address, model(), ready.block));
    assert_eq!(r.seed, block_hash(&net, ready.block).await, "the seed is the request block's hash");
    assert_eq!(r.expiry, onchain.getRequest(ready.id).call().await.unwrap().expiry);
    assert_eq!(r.worker, Some(plain.address));
    assert_eq!(r.claimed_block, ready_claim.block_number);
    assert_eq!(r.claim_tx, Some(ready_claim.transaction_hash));
    let claim_block = net.provider().get_block_by_number(r.claimed_block.unwrap().into()).await.unwrap().unwrap();
    assert_eq!(r.claimed_at, Some(claim_block.header.timestamp));
    assert_eq!(r.session_id, Some(session.id.to()));
    assert_eq!(r.ready_block, session.receipt.block_number);

    let w = sortition::request(conn, sm, waiting.id.to()).unwrap().unwrap();
    assert_eq!((w.status, w.worker), (RequestStatus::Claimed, Some(searcher.address)));
    assert_eq!(w.required_caps, search);
    assert_eq!(w.claimed_block, waiting_claim.block_number);
    assert_eq!(w.required_caps, onchain.getRequiredCapabilities(waiting.id).call().await.unwrap());

    let l = sortition::request(conn, sm, lapsing.id.to()).unwrap().unwrap();
    assert_eq!(l.status, RequestStatus::Open, "expiry is no event");
    let now = net.now().await;
    assert!(l.expired_at(now), "expired by chain time: expiry {} now {now}", l.expiry);
    assert_eq!(onchain.getRequest(lapsing.id).call().await.unwrap().status, 3, "the chain agrees: Expired");

    // The typed reads the worker and the CLI use.
    let ids = |rows: Vec<sortition::RequestRow>| rows.iter().map(|r| r.req_id).collect::<Vec<_>>();
    assert_eq!(ids(sortition::open_requests(conn, sm).unwrap()), vec![lapsing.id.to::<u64>()]);
    assert_eq!(ids(sortition::claimed_since(conn, sm, 0).unwrap()), vec![ready.id.to::<u64>(), waiting.id.to()]);
    assert_eq!(ids(sortition::claimed_by(conn, searcher.address, 10).unwrap()), vec![waiting.id.to::<u64>()]);
    assert_eq!(sortition::worker_capabilities(conn, searcher.address).unwrap(), search);
    assert_eq!(sortition::worker_capabilities(conn, plain.address).unwrap(), U256::ZERO);
    assert_eq!(sortition::capability_names(conn).unwrap(), vec![(0, "search".into()), (1, "vision".into())]);
    let state = sortition::sortition_state(conn).unwrap();
    assert!(state.enabled);
    assert_eq!(state.manager, Some(sm));
    assert_eq!(state.claim_window_blocks, U256::from(5));

    // The adopted session has its model and keys: the worker can decrypt.
    let s = SessionRow::get(conn, session.id.to()).unwrap().expect("adopted session");
    let chain = JobRegistry::new(c.job_registry, net.provider()).getSession(session.id).call().await.unwrap();
    assert_eq!((s.user, s.worker, s.model_id), (Some(ready.consumer_address), Some(plain.address), Some(model())));
    assert_eq!(s.enc_worker_key, Some(chain.encWorkerKey.clone()));
    assert_eq!(s.enc_disputer_key, Some(chain.encDisputerKey));
    assert_eq!(s.job_count, 1);
    let key = plain.secret.unwrap_session_key(&chain.encWorkerKey).expect("the worker unwraps the stored key");
    assert_eq!(key.expose(), session.key.expose());
    let stored_job = lcw_schema::store::rows::JobRow::get(conn, job.to()).unwrap().unwrap();
    assert_eq!(stored_job.model_id, Some(model()), "jobs on an adopted session know their model");
    drop(store);

    for (name, n) in [
        ("SessionRequested", 3),
        ("SessionClaimed", 2),
        ("SessionReady", 1),
        ("SessionAdopted", 1),
        ("WorkerCapabilitiesSet", 1),
        ("CapabilityRegistered", 2),
    ] {
        assert_eq!(events(&db, name), n, "{name} counted");
    }

    // The API: sortition status, one request and a page with derived statuses.
    let data = graphql(&db, &example("session_requests"), json!({ "reqId": ready.id.to::<u64>() })).await;
    let status = &data["indexerStatus"]["sortition"];
    assert_eq!(status["enabled"], json!(true));
    assert_eq!(status["sessionManager"], json!(sm.to_checksum(None)));
    assert_eq!(status["claimWindowBlocks"], json!("5"));
    assert_eq!(data["sessionRequest"]["status"], json!("READY"));
    assert_eq!(data["sessionRequest"]["worker"], json!(plain.address.to_checksum(None)));
    let statuses: Vec<&str> =
        data["sessionRequests"]["nodes"].as_array().unwrap().iter().map(|n| n["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["EXPIRED", "CLAIMED", "READY"], "newest first, EXPIRED derived at the head");
    let expired = graphql(&db, &example("session_requests"), json!({ "reqId": 1, "status": "EXPIRED" })).await;
    let nodes = expired["sessionRequests"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["reqId"], json!(lapsing.id.to::<u64>()));
    let mine =
        graphql(&db, &example("session_requests"), json!({ "reqId": 1, "worker": searcher.address, "first": 1 })).await;
    assert_eq!(mine["sessionRequests"]["nodes"][0]["requiredCaps"], json!("1"));
    assert_eq!(mine["sessionRequests"]["pageInfo"]["hasNextPage"], json!(false));

    backfill_replay_and_verify_agree(&net, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_that_removes_a_claim_unwinds_it_and_the_fetched_facts() {
    let net = sortition_net().await;
    let worker = register_worker(&net, 0, Suite::P256AesGcm).await;
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let sm = manager(&net).await;
    let first = request(&net, 0, 3_600, U256::ZERO).await;
    let claimed = claim(&net, &first, &worker).await;
    let second = request(&net, 1, 3_600, U256::ZERO).await;
    assert_eq!(second.block, claimed.block_number.unwrap() + 1);
    caught_up(&net, &db).await;
    {
        let store = Store::open_readonly(&db).unwrap();
        let r = sortition::request(store.conn(), sm, first.id.to()).unwrap().unwrap();
        assert_eq!((r.status, r.worker), (RequestStatus::Claimed, Some(worker.address)));
        assert!(sortition::request(store.conn(), sm, second.id.to()).unwrap().is_some());
    }

    // Replace the claim's block and the second request's by two blocks with another transaction.
    let keeper = net.profile().account(Role::Keeper).unwrap().address;
    let transfer = TransactionRequest::default().from(keeper).to(keeper).value(U256::from(1));
    let txs = vec![(TransactionData::JSON(transfer), 0)];
    net.provider().anvil_reorg(ReorgOptions { depth: 2, tx_block_pairs: txs }).await.expect("anvil_reorg");
    net.provider().anvil_mine(Some(1), None).await.unwrap();
    caught_up(&net, &db).await;
    {
        let store = Store::open_readonly(&db).unwrap();
        let conn = store.conn();
        let r = sortition::request(conn, sm, first.id.to()).unwrap().unwrap();
        assert_eq!(r.status, RequestStatus::Open, "the claim was unwound");
        assert_eq!((r.worker, r.claimed_block, r.claim_tx), (None, None, None));
        assert!(sortition::claimed_by(conn, worker.address, 10).unwrap().is_empty());
        assert_eq!(sortition::request(conn, sm, second.id.to()).unwrap(), None, "the second request is gone");
        let fact = CallResult::get(conn, &sm, SessionManager::getRequestCall::SIGNATURE, second.id.to()).unwrap();
        assert_eq!(fact, None, "so is what was fetched for it");
        assert!(
            CallResult::get(conn, &sm, SessionManager::getRequestCall::SIGNATURE, first.id.to()).unwrap().is_some()
        );
    }
    assert_eq!(events(&db, "SessionClaimed"), 0);
    assert_eq!(events(&db, "SessionRequested"), 1);

    // The id is taken again on the new branch, by another consumer: its facts are fetched anew.
    let again = request(&net, 2, 3_600, U256::ZERO).await;
    assert_eq!(again.id, second.id);
    caught_up(&net, &db).await;
    let summary = follower.finish().await;
    assert!(summary.reorgs >= 1, "{summary:?}");
    let store = Store::open_readonly(&db).unwrap();
    let conn = store.conn();
    let r2 = sortition::request(conn, sm, again.id.to()).unwrap().expect("the new request");
    assert_eq!(r2.user, again.consumer_address);
    let fact = CallResult::get(conn, &sm, SessionManager::getRequestCall::SIGNATURE, again.id.to()).unwrap().unwrap();
    let decoded = SessionManager::getRequestCall::abi_decode_returns(&fact.data).unwrap();
    assert_eq!(fact.block_number, again.block);
    let onchain = SessionManager::new(sm, net.provider()).getRequest(again.id).call().await.unwrap();
    assert_eq!((decoded.user, decoded.expiry), (onchain.user, onchain.expiry));
    assert_eq!(r2.expiry, onchain.expiry);
    drop(store);

    backfill_replay_and_verify_agree(&net, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_session_manager_while_live_indexes_the_new_one_from_the_block_of_the_move() {
    let net = sortition_net().await;
    let worker = register_worker(&net, 0, Suite::P256AesGcm).await;
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let c = net.profile().contracts;
    let old = manager(&net).await;
    let before_move = request(&net, 0, 3_600, U256::ZERO).await;

    // The deployer deploys a second SessionManager; a consumer uses it before AIConfig names it.
    let deployer_signer = net.signer(Role::Deployer, 0);
    let owner = deployer_signer.address();
    let deployer = net.wallet(deployer_signer);
    let new =
        SessionManager::deploy_builder(&deployer, owner, c.job_registry, c.worker_registry, c.ai_config, Address::ZERO)
            .deploy()
            .await
            .expect("deploy a second SessionManager");
    let expiry = U256::from(net.now().await + 3_600);
    let early = SessionManager::new(new, net.wallet(net.signer(Role::Consumer, 1)));
    let unpublished = send!(early.requestSession(model(), expiry));

    // The move, and a request on the new manager in the same block.
    let p = net.provider();
    p.anvil_set_auto_mine(false).await.unwrap();
    let ai = AIConfig::new(c.ai_config, &deployer);
    let moving = ai.setSessionManagerAddress(new).gas(200_000).send().await.expect("setSessionManagerAddress sent");
    let same_block = SessionManager::new(new, net.wallet(net.signer(Role::Consumer, 2)))
        .requestSession(model(), expiry)
        .gas(400_000)
        .send()
        .await
        .expect("requestSession sent");
    p.anvil_mine(Some(1), None).await.unwrap();
    p.anvil_set_auto_mine(true).await.unwrap();
    let moved = moving.get_receipt().await.unwrap();
    let with_move = same_block.get_receipt().await.unwrap();
    assert!(moved.status() && with_move.status());
    assert_eq!(moved.block_number, with_move.block_number, "the move and the request share a block");
    let move_block = moved.block_number.unwrap();
    assert_eq!(manager(&net).await, new);

    // After the move: a request on the new manager goes all the way; the old one is still watched.
    let after_move = request(&net, 3, 3_600, U256::ZERO).await;
    claim(&net, &after_move, &worker).await;
    let session = provide_key(&net, &after_move, &worker).await;
    let old_sm = SessionManager::new(old, net.wallet(net.signer(Role::Consumer, 0)));
    let late_on_old = send!(old_sm.requestSession(model(), U256::from(net.now().await + 3_600)));
    caught_up(&net, &db).await;
    follower.finish().await;

    let store = Store::open_readonly(&db).unwrap();
    let conn = store.conn();
    let unpublished_id = event::<SessionManager::SessionRequested>(&unpublished).unwrap().reqId.to::<u64>();
    assert!(
        sortition::request(conn, new, unpublished_id).unwrap().is_none(),
        "a request made before AIConfig published the manager is not indexed"
    );
    let same_id = event::<SessionManager::SessionRequested>(&with_move).unwrap().reqId.to::<u64>();
    let same = sortition::request(conn, new, same_id).unwrap().expect("the request in the block of the move");
    assert_eq!(same.request_block, move_block);
    let r = sortition::request(conn, new, after_move.id.to()).unwrap().unwrap();
    assert_eq!((r.status, r.worker, r.session_id), (RequestStatus::Ready, Some(worker.address), Some(session.id.to())));
    assert!(sortition::request(conn, old, before_move.id.to()).unwrap().is_some());
    let late_id = event::<SessionManager::SessionRequested>(&late_on_old).unwrap().reqId.to::<u64>();
    assert!(sortition::request(conn, old, late_id).unwrap().is_some(), "the old manager stays watched");
    assert_eq!(sortition::sortition_state(conn).unwrap().manager, Some(new));
    let managers = sortition::managers(conn).unwrap();
    assert_eq!(managers.len(), 2);
    assert_eq!(managers[1], (new, move_block));
    let s = SessionRow::get(conn, session.id.to()).unwrap().unwrap();
    assert_eq!(s.model_id, Some(model()));
    assert!(s.enc_worker_key.is_some());
    drop(store);

    backfill_replay_and_verify_agree(&net, &db).await;
}
