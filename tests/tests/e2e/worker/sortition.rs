//! The worker on a sortition devnet: it claims session requests when its turn comes (racing
//! other workers), serves the adopted sessions' jobs with the real model, gets them released,
//! survives a restart between its claim and the session's adoption, and claims nothing new while
//! drained.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider;
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager};
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_schema::store::claims::{self, ClaimState};
use lcw_schema::suite::Suite;
use lcw_settler::settle::{Mode, SettleConfig};
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::{self, Worker, submit_prompt};
use lcw_tests::sortition::{Request, competitor, manager, predicted_delay, provide_key, request};
use lcw_tests::{TestNet, send, wait_until};
use lcw_worker::claim::Rule;
use lcw_worker::pipeline::WorkConfig;

use super::{MODEL, anvil_blob, followed_store, job_row, llm, start_worker_with};

async fn sortition_devnet() -> TestNet {
    TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.sortition = true;
        o.deploy.claim_window_blocks = 4;
        o.deploy.dispute_window = 20;
        o.deploy.ack_timeout = 60;
        o.deploy.completion_timeout = 120;
    })
    .await
}

fn predict(c: &mut WorkConfig) {
    c.claims.rule = Rule::Predict;
}

/// The claimer of `req` once it is claimed (None if it expired first, or on timeout).
async fn winner(net: &TestNet, req: &Request, timeout: Duration) -> Option<Address> {
    let sm = SessionManager::new(manager(net).await, net.provider());
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let r = sm.getRequest(req.id).call().await.expect("getRequest");
        match r.status {
            1 | 2 => return Some(r.worker),
            3 => return None,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}

/// Prepays the session's consumer for a few jobs.
async fn prepay(net: &TestNet, session: &parties::Session) {
    let jr = JobRegistry::new(net.profile().contracts.job_registry, &session.consumer);
    send!(jr.deposit().value(U256::from(10u64).pow(U256::from(18u64))));
}

/// The block of the request's SessionClaimed.
async fn claim_block(net: &TestNet, req: &Request) -> u64 {
    let filter = alloy::rpc::types::Filter::new()
        .address(manager(net).await)
        .event_signature(<SessionManager::SessionClaimed as alloy::sol_types::SolEvent>::SIGNATURE_HASH)
        .topic1(B256::from(req.id))
        .from_block(req.block);
    let logs = net.provider().get_logs(&filter).await.expect("logs");
    logs.first().and_then(|l| l.block_number).expect("SessionClaimed logged")
}

fn keeper(net: &TestNet, db: &Path) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let mut config = SettleConfig::new(net.profile().clone(), db.to_owned(), Mode::Keeper, net.signer(Role::Keeper, 0));
    config.poll_interval = Duration::from_millis(50);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        lcw_settler::settle::run(config, rx).await.expect("keeper ran cleanly");
    });
    (stop, task)
}

fn claim_rows(db: &Path, worker: Address) -> Vec<claims::ClaimRow> {
    let store = Store::open_readonly(db).expect("store");
    claims::recent(store.conn(), worker, 1_000).expect("claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_requests_are_claimed_by_eligible_workers_and_ours_are_served_and_released() {
    let net = sortition_devnet().await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let min =
        AIConfig::new(net.profile().contracts.ai_config, net.provider()).getMinWorkerStake().call().await.unwrap();
    let w0 = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let w1 = parties::register_worker_with_stake(&net, 1, Suite::X25519, min * U256::from(2)).await;
    let rival = parties::register_worker(&net, 2, Suite::P256AesGcm).await;
    // Ours: one predicts its turn from the store, the other asks eligibleNow.
    let r0 = start_worker_with(&net, &db, 0, &w0, llm(&server), predict);
    let r1 = start_worker_with(&net, &db, 1, &w1, llm(&server), |c| c.claims.rule = Rule::Ask);
    let (requests_tx, requests_rx) = tokio::sync::watch::channel(Vec::new());
    let rival_task = competitor(&net, 2, requests_rx);
    let (stop_keeper, keeper_task) = keeper(&net, &db);
    let ours: HashMap<Address, &Worker> = [(w0.address, &w0), (w1.address, &w1), (rival.address, &rival)].into();

    let mut served = Vec::new();
    let mut all = Vec::new();
    for i in 0..6 {
        let req = request(&net, i % 4, 90, U256::ZERO).await;
        requests_tx.send_modify(|v| v.push((req.id, req.block)));
        let who =
            winner(&net, &req, Duration::from_secs(60)).await.expect("every request is claimed before it expires");
        let at = claim_block(&net, &req).await;
        let delay = predicted_delay(&net, &req, who).await;
        assert!(
            at >= req.block + delay,
            "request {} claimed by {who} in block {at}, before its turn ({})",
            req.id,
            req.block + delay
        );
        let session = provide_key(&net, &req, ours[&who]).await;
        if who != rival.address {
            prepay(&net, &session).await;
            served.push((who, submit_prompt(&net, &session, "Name a colour.").await));
        }
        all.push((req, who));
    }
    drop(requests_tx);
    assert!(!served.is_empty(), "our workers won sessions: {:?}", all.iter().map(|(_, w)| w).collect::<Vec<_>>());
    // Every job of ours answered with the model's answer, then released by the keeper.
    let released =
        || async { served.iter().all(|(_, s)| job_row(&db, s.job).is_some_and(|(state, ..)| state == "RELEASED")) };
    assert!(wait_until(Duration::from_secs(240), released).await, "every served job is released");
    let reference = llm(&server);
    for (_, s) in &served {
        let (_, blob, ct, ..) = job_row(&db, s.job).expect("row");
        let ciphertext = anvil_blob(&net, B256::from_slice(&blob.expect("blob"))).await;
        assert_eq!(keccak256(&ciphertext).as_slice(), ct.expect("hash").as_slice());
        let answer = String::from_utf8(s.key.open(&ciphertext).expect("decrypts")).unwrap();
        assert_eq!(answer, reference.generate(MODEL, &s.prompt).await.unwrap().text);
    }
    let s0 = r0.finish().await;
    let s1 = r1.finish().await;
    let _ = stop_keeper.send(true);
    keeper_task.await.unwrap();
    let rival_won = rival_task.await.unwrap();
    indexer.finish().await;
    // What the workers recorded matches who won.
    for (summary, w) in [(&s0, w0.address), (&s1, w1.address)] {
        let won = all.iter().filter(|(_, who)| *who == w).count() as u64;
        let rows = claim_rows(&db, w);
        let won_rows = rows.iter().filter(|r| r.state == ClaimState::Won).count() as u64;
        assert_eq!(won_rows, won, "{w}: {rows:?}");
        assert_eq!(summary.claims.won, won, "{w}: {summary:?}");
        assert!(rows.iter().all(|r| r.state != ClaimState::Sent), "every claim settled: {rows:?}");
        assert_eq!(summary.reverted, 0, "no ack or completion reverted");
        assert!(summary.refused.is_empty(), "{summary:?}");
    }
    assert_eq!(all.iter().filter(|(_, w)| *w == rival.address).count() as u64, rival_won);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stopped_between_its_claim_and_the_adoption_serves_the_session_after_restart() {
    let net = sortition_devnet().await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let w0 = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let running = start_worker_with(&net, &db, 0, &w0, llm(&server), predict);
    let req = request(&net, 0, 120, U256::ZERO).await;
    assert_eq!(winner(&net, &req, Duration::from_secs(30)).await, Some(w0.address), "our only worker claims it");
    let first = running.finish().await;
    assert_eq!(first.claims.sent, 1, "{first:?}");
    // While it is down, the consumer provides the key and submits a job.
    let session = provide_key(&net, &req, &w0).await;
    prepay(&net, &session).await;
    let job = submit_prompt(&net, &session, "Say hello.").await;
    let again = start_worker_with(&net, &db, 0, &w0, llm(&server), predict);
    let done = || async { job_row(&db, job.job).is_some_and(|(state, ..)| state == "COMPLETED") };
    assert!(wait_until(Duration::from_secs(120), done).await, "the restarted worker serves the adopted session");
    let second = again.finish().await;
    indexer.finish().await;
    assert_eq!(second.claims.sent, 0, "nothing claimed twice: {second:?}");
    let rows = claim_rows(&db, w0.address);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, ClaimState::Won, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_worker_claims_nothing_new_and_finishes_what_it_owes() {
    let net = sortition_devnet().await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let w0 = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let running = start_worker_with(&net, &db, 0, &w0, llm(&server), predict);
    let first = request(&net, 0, 120, U256::ZERO).await;
    assert_eq!(winner(&net, &first, Duration::from_secs(30)).await, Some(w0.address));
    let session = provide_key(&net, &first, &w0).await;
    prepay(&net, &session).await;

    // Drained: the job it owes is still served, the next request is not claimed.
    let conn = Store::connect(&db).expect("store");
    lcw_schema::store::operator::set_drained(&conn, w0.address, true).expect("drain");
    let job = submit_prompt(&net, &session, "Name a fruit.").await;
    let second = request(&net, 1, 120, U256::ZERO).await;
    let done = || async { job_row(&db, job.job).is_some_and(|(state, ..)| state == "COMPLETED") };
    assert!(wait_until(Duration::from_secs(120), done).await, "a drained worker finishes its job");
    // Let the window (4 blocks) open to it fully, and then some: still open.
    let sm = SessionManager::new(manager(&net).await, net.provider());
    let opened = || async { net.provider().get_block_number().await.is_ok_and(|h| h >= second.block + 7) };
    assert!(wait_until(Duration::from_secs(30), opened).await, "blocks go on");
    assert_eq!(sm.getRequest(second.id).call().await.unwrap().status, 0, "nothing claimed while drained");

    // Undrained, it claims again.
    lcw_schema::store::operator::set_drained(&conn, w0.address, false).expect("undrain");
    assert_eq!(winner(&net, &second, Duration::from_secs(30)).await, Some(w0.address), "claims again once undrained");
    let summary = running.finish().await;
    indexer.finish().await;
    assert_eq!(summary.claims.sent, 2, "{summary:?}");
    assert_eq!(summary.refused.len(), 0, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_gateway_the_worker_sends_heartbeats_and_signed_answers_and_serves_on_while_it_is_down() {
    let net = sortition_devnet().await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let w0 = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let gateway = lcw_tests::gateway::TestGateway::start(w0.address).await;
    let url = gateway.url();
    let running = start_worker_with(&net, &db, 0, &w0, llm(&server), move |c| {
        predict(c);
        let mut g = lcw_worker::gateway::GatewayConfig::new(url);
        g.heartbeat_interval = Duration::from_secs(1);
        g.timeout = Duration::from_secs(2);
        c.gateway = Some(g);
    });
    let req = request(&net, 0, 120, U256::ZERO).await;
    assert_eq!(winner(&net, &req, Duration::from_secs(30)).await, Some(w0.address));
    let session = provide_key(&net, &req, &w0).await;
    prepay(&net, &session).await;
    let first = submit_prompt(&net, &session, "Name a planet.").await;
    let done = |job: u64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move { job_row(&db, job).is_some_and(|(state, ..)| state == "COMPLETED") }
        }
    };
    assert!(wait_until(Duration::from_secs(120), done(first.job)).await, "served with the gateway up");
    // The answer reached the consumer through the gateway too: the terminal frame carries the
    // very ciphertext of the blob, signed by the worker (the gateway checks the signature).
    let frame_arrived =
        || async { gateway.frames().iter().any(|f| f.job_id == first.job && f.frame_type == "complete") };
    assert!(wait_until(Duration::from_secs(20), frame_arrived).await, "the complete frame arrived");
    let frame = gateway.frames().into_iter().find(|f| f.job_id == first.job && f.frame_type == "complete").unwrap();
    assert_eq!(frame.session_id, session.id.to::<u64>());
    assert_eq!((frame.seq, frame.total_chunks), (1, 1));
    let (_, blob, ..) = job_row(&db, first.job).unwrap();
    assert_eq!(
        frame.payload,
        anvil_blob(&net, B256::from_slice(&blob.unwrap())).await,
        "the frame is the blob's ciphertext"
    );
    let answer = String::from_utf8(first.key.open(&frame.payload).expect("the consumer decrypts the frame")).unwrap();
    assert!(!answer.is_empty());
    // Heartbeats with the documented fields.
    let beats = gateway.heartbeats();
    assert!(beats.len() >= 2, "a heartbeat at start and then every second: {beats:?}");
    let id = format!("{:#x}", lcw_schema::types::ModelId::from_name(MODEL).0);
    assert!(
        beats.iter().all(|b| b.models == vec![id.clone()] && b.max_jobs == 1 && b.protocol_version == 1),
        "{beats:?}"
    );
    assert!(beats.iter().any(|b| b.ollama_status == "ready"), "{beats:?}");
    // The drained flag reaches the gateway.
    let conn = Store::connect(&db).expect("store");
    lcw_schema::store::operator::set_drained(&conn, w0.address, true).expect("drain");
    assert!(wait_until(Duration::from_secs(20), || async { gateway.drained() }).await, "the gateway was told");
    lcw_schema::store::operator::set_drained(&conn, w0.address, false).expect("undrain");
    assert!(wait_until(Duration::from_secs(20), || async { !gateway.drained() }).await, "and told again");

    // A session whose key was wrapped for someone else: the job is refused, and the consumer
    // hears it at once through an error frame instead of waiting for the on-chain timeout.
    let bad = request(&net, 1, 120, U256::ZERO).await;
    assert_eq!(winner(&net, &bad, Duration::from_secs(30)).await, Some(w0.address));
    let sm = SessionManager::new(manager(&net).await, &bad.consumer);
    let receipt = send!(sm.provideSessionKey(bad.id, vec![4u8; 125].into(), vec![4u8; 125].into()));
    let ready = lcw_tests::event::<SessionManager::SessionReady>(&receipt).expect("SessionReady");
    let unreadable = parties::Session {
        id: ready.sessionId,
        consumer: bad.consumer.clone(),
        consumer_address: bad.consumer_address,
        key: lcw_schema::suite::SessionKey::generate(),
        receipt,
    };
    prepay(&net, &unreadable).await;
    let refused = submit_prompt(&net, &unreadable, "Can you read this?").await;
    let error_frame = || async { gateway.frames().iter().any(|f| f.job_id == refused.job && f.frame_type == "error") };
    assert!(wait_until(Duration::from_secs(30), error_frame).await, "an error frame for the refused job");
    assert_eq!(job_row(&db, refused.job).map(|(state, ..)| state).as_deref(), Some("SUBMITTED"), "never acked");

    // The gateway goes down: the on-chain path goes on.
    gateway.set_down(true);
    let second = submit_prompt(&net, &session, "Name a river.").await;
    assert!(wait_until(Duration::from_secs(120), done(second.job)).await, "served with the gateway down");
    let summary = running.finish().await;
    indexer.finish().await;
    assert_eq!(summary.reverted, 0, "{summary:?}");
    assert!(summary.refused.get(&refused.job).is_some_and(|why| why.contains("cannot be decrypted")), "{summary:?}");
    assert!(gateway.violations().is_empty(), "every message followed the protocol: {:?}", gateway.violations());
}
