//! The worker never gets itself slashed: against the real devnet, a prompt that cannot be
//! opened is refused without an ack, an ack dropped from the node after the work was done is
//! sent again, a wallet that cannot pay for every completion acks only what it can finish, a
//! chain whose clock is far behind this machine's is served on chain time, and a
//! `--num-predict` whose answers cannot fit one blob stops the worker at start.

use std::time::Duration;

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use lcw_schema::store::Store;
use lcw_schema::suite::{SessionKey, Suite};
use lcw_tests::parties::{self, post_blob, submit, submit_prompt};
use lcw_tests::{TestNet, wait_until};

use super::{MODEL, devnet, followed_store, job_row, llm, mined, start_worker, state_of};

/// Rows of the outbox for `job` of `kind`: their status, with the note when there is one.
fn outbox_rows(db: &std::path::Path, job: u64, kind: &str) -> Vec<String> {
    let Ok(store) = Store::open_readonly(db) else { return Vec::new() };
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT o.status, o.note FROM outbox o JOIN outbox_jobs oj ON oj.outbox_id = o.id
             WHERE oj.job_id = ?1 AND o.kind = ?2 ORDER BY o.id",
        )
        .unwrap();
    stmt.query_map(rusqlite::params![job as i64, kind], |r| {
        let status: String = r.get(0)?;
        let note: Option<String> = r.get(1)?;
        Ok(match note {
            Some(n) => format!("{status}: {n}"),
            None => status,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// The refusal the worker recorded in the store for `job`: (step, reason, final).
fn refusal(db: &std::path::Path, job: u64) -> Option<(String, String, bool)> {
    let store = Store::open_readonly(db).ok()?;
    store
        .conn()
        .query_row("SELECT step, reason, final FROM worker_refusals WHERE job_id = ?1", [job as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prompt_that_cannot_be_opened_is_refused_without_an_ack() {
    // A short ack window, watched to its end: a job refused for good must not be acked
    // "unopened" once too little time is left to open it again.
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 30;
        o.deploy.ack_timeout = 15;
        o.deploy.completion_timeout = 120;
    })
    .await;
    let server = lcw_tests::llm::LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::X25519).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;
    let running = start_worker(&net, &db, 0, &worker, llm(&server));

    // A blob hash nothing was ever posted under.
    let missing = submit(&net, &session, B256::repeat_byte(0x42)).await.to::<u64>();
    // A prompt sealed with a key that is not the session's.
    let sealed = SessionKey::generate().seal(b"What is the capital of France?");
    let foreign_blob = post_blob(&session.consumer, session.consumer_address, &sealed).await;
    let foreign = submit(&net, &session, foreign_blob).await.to::<u64>();
    // And a good one, to show the worker is serving.
    let good = submit_prompt(&net, &session, "Write one word.").await;

    let served = || async { state_of(&db, good.job).as_deref() == Some("COMPLETED") && mined(&db, "complete") >= 1 };
    assert!(wait_until(Duration::from_secs(120), served).await, "the good job was served");
    let reported = || async { refusal(&db, missing).is_some() && refusal(&db, foreign).is_some() };
    assert!(wait_until(Duration::from_secs(30), reported).await, "both bad jobs were reported in the store");
    // Until both ack deadlines are 3 blocks behind the head.
    let deadline = [missing, foreign].iter().map(|&j| ack_deadline(&db, j)).max().unwrap();
    let past = || async {
        net.provider()
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .ok()
            .flatten()
            .is_some_and(|b| b.header.timestamp > deadline + 3)
    };
    // (An ack would move the deadline to the completion's: the checks below say so.)
    wait_until(Duration::from_secs(40), past).await;
    let summary = running.finish().await;
    indexer.finish().await;

    for job in [missing, foreign] {
        assert_eq!(state_of(&db, job).as_deref(), Some("SUBMITTED"), "job {job} never acked");
        assert!(outbox_rows(&db, job, "ack").is_empty(), "job {job}: no ack was ever signed");
    }
    let (step, why, last) = refusal(&db, missing).unwrap();
    assert!(step == "prompt" && last && why.contains("not found") && why.contains("not acked"), "{step}: {why}");
    let (step, why, last) = refusal(&db, foreign).unwrap();
    assert!(step == "prompt" && last && why.contains("does not decrypt") && why.contains("not acked"), "{step}: {why}");
    assert!(summary.refused[&missing].contains("not found"), "{summary:?}");
    assert!(summary.refused[&foreign].contains("does not decrypt"), "{summary:?}");
    assert_eq!(summary.acked, 1, "only the good job was acked: {summary:?}");
    assert_eq!(summary.reverted, 0);
}

/// The ack deadline of a job not acked (unix s), from the store.
fn ack_deadline(db: &std::path::Path, job: u64) -> u64 {
    let store = Store::open_readonly(db).expect("store");
    let d: i64 = store
        .conn()
        .query_row("SELECT deadline FROM jobs WHERE job_id = ?1", [job as i64], |r| r.get(0))
        .expect("deadline");
    d as u64
}

/// Pauses block production; the test mines by hand until `resume`.
async fn pause_mining(net: &TestNet) {
    net.provider().anvil_set_interval_mining(0).await.expect("evm_setIntervalMining 0");
}

async fn resume_mining(net: &TestNet) {
    net.provider().anvil_set_interval_mining(1).await.expect("evm_setIntervalMining 1");
}

/// Mines a block every 300 ms until `done` holds (at most `limit`).
async fn mine_until<F, Fut>(net: &TestNet, limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return true;
        }
        net.provider().anvil_mine(Some(1), None).await.expect("anvil_mine");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    done().await
}

/// The raw hash of the latest attempt of the live ack of `job`, with its nonce.
fn live_ack(db: &std::path::Path, job: u64) -> Option<(B256, u64)> {
    let store = Store::open_readonly(db).ok()?;
    store
        .conn()
        .query_row(
            "SELECT a.tx_hash, o.nonce FROM outbox o JOIN outbox_jobs oj ON oj.outbox_id = o.id
             JOIN outbox_attempts a ON a.outbox_id = o.id
             WHERE oj.job_id = ?1 AND o.kind = 'ack' AND o.status = 'sent' ORDER BY a.attempt DESC LIMIT 1",
            [job as i64],
            |r| Ok((B256::from_slice(&r.get::<_, Vec<u8>>(0)?), r.get::<_, i64>(1)? as u64)),
        )
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ack_whose_nonce_was_taken_after_the_work_was_done_is_sent_again() {
    let net = devnet().await;
    let server = lcw_tests::llm::LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;
    let running = start_worker(&net, &db, 0, &worker, llm(&server));

    pause_mining(&net).await;
    let submitting = {
        let prompt_session = &session;
        let net = &net;
        async move { submit_prompt(net, prompt_session, "Name three colours.").await }
    };
    // Mine by hand while the job goes in; the worker's ack then waits in the pool.
    let (submitted, mined_in) = tokio::join!(submitting, async {
        mine_until(&net, Duration::from_secs(60), || async {
            Store::open_readonly(&db).is_ok_and(|s| {
                s.conn().query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0)).unwrap_or(0) > 0
            })
        })
        .await
    });
    assert!(mined_in, "the job was indexed");
    let job = submitted.job;
    assert!(wait_until(Duration::from_secs(30), || async { live_ack(&db, job).is_some() }).await, "ack sent");
    // Let the model answer while the ack waits (the answer is then ready before the ack is gone).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (hash, nonce) = live_ack(&db, job).unwrap();
    // The node forgets the ack, and another transaction of the worker's key takes its nonce.
    let p = net.provider();
    let _: Option<B256> = p.raw_request("anvil_dropTransaction".into(), (hash,)).await.expect("anvil_dropTransaction");
    let wallet = net.wallet(net.signer(lcw_schema::profile::Role::Worker, 0));
    let tx = alloy::rpc::types::TransactionRequest::default()
        .from(worker.address)
        .to(worker.address)
        .nonce(nonce)
        .value(U256::ZERO);
    let pending = wallet.send_transaction(tx).await.expect("the other transaction");
    p.anvil_mine(Some(1), None).await.expect("anvil_mine");
    let receipt = pending.get_receipt().await.expect("receipt");
    assert!(receipt.status(), "the nonce went to the other transaction");
    resume_mining(&net).await;

    let completed = || async { state_of(&db, job).as_deref() == Some("COMPLETED") && mined(&db, "complete") >= 1 };
    assert!(wait_until(Duration::from_secs(90), completed).await, "the job was acked again and completed");
    let summary = running.finish().await;
    indexer.finish().await;
    let acks = outbox_rows(&db, job, "ack");
    assert_eq!(acks.len(), 2, "the lost ack, then a new one: {acks:?}");
    assert!(acks[0].starts_with("dropped: nonce") && acks[1] == "mined", "{acks:?}");
    assert_eq!(summary.reverted, 0);
    assert_eq!(summary.completed, 1, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ack_evicted_from_the_pool_is_broadcast_again() {
    let net = devnet().await;
    let server = lcw_tests::llm::LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::X25519).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;
    let running = start_worker(&net, &db, 0, &worker, llm(&server));
    pause_mining(&net).await;
    let submitting = {
        let (net, session) = (&net, &session);
        async move { submit_prompt(net, session, "Name a fruit.").await }
    };
    let (submitted, indexed) = tokio::join!(submitting, async {
        mine_until(&net, Duration::from_secs(60), || async {
            Store::open_readonly(&db).is_ok_and(|s| {
                s.conn().query_row("SELECT count(*) FROM jobs", [], |r| r.get::<_, i64>(0)).unwrap_or(0) > 0
            })
        })
        .await
    });
    assert!(indexed, "the job was indexed");
    let job = submitted.job;
    assert!(wait_until(Duration::from_secs(30), || async { live_ack(&db, job).is_some() }).await, "ack sent");
    // The node evicts the ack; nothing else happens to its nonce.
    let (hash, _) = live_ack(&db, job).unwrap();
    let p = net.provider();
    let _: Option<B256> = p.raw_request("anvil_dropTransaction".into(), (hash,)).await.expect("anvil_dropTransaction");
    let pool: serde_json::Value = p.raw_request("txpool_content".into(), ()).await.expect("txpool_content");
    assert!(!pool.to_string().contains(&format!("{hash:#x}")), "the ack left the pool");
    resume_mining(&net).await;
    let completed = || async { state_of(&db, job).as_deref() == Some("COMPLETED") && mined(&db, "complete") >= 1 };
    assert!(wait_until(Duration::from_secs(90), completed).await, "the ack went out again and the job completed");
    let summary = running.finish().await;
    indexer.finish().await;
    assert_eq!(outbox_rows(&db, job, "ack"), ["mined"], "the same ack, broadcast again");
    assert_eq!((summary.acked, summary.completed, summary.reverted), (1, 1, 0), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_short_of_one_completion_acks_only_what_it_can_finish() {
    let net = devnet().await;
    let server = lcw_tests::llm::LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::X25519).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;
    let running = start_worker(&net, &db, 0, &worker, llm(&server));
    let mut jobs = Vec::new();
    for prompt in ["Name three colours.", "What is two plus two?"] {
        jobs.push(submit_prompt(&net, &session, prompt).await.job);
    }
    let served = || async { jobs.iter().all(|j| state_of(&db, *j).as_deref() == Some("COMPLETED")) };
    assert!(wait_until(Duration::from_secs(120), served).await, "two jobs served");

    // The wallet now pays for one ack and half a completion, at the prices the worker's outbox
    // would sign with (the node refuses a transaction whose most it can cost exceeds the balance).
    let chain = lcw_chain::Chain::connect(&net.profile().rpc_url, Duration::from_secs(10)).await.unwrap();
    let fees = chain.fees(1_000_000_000).await.unwrap();
    let blob_fee = net.provider().get_blob_base_fee().await.unwrap().max(1) * 2;
    let ack = u128::from(lcw_worker::pipeline::ACK_GAS) * fees.max_fee;
    let complete = u128::from(lcw_worker::pipeline::COMPLETE_GAS) * fees.max_fee + 131_072 * blob_fee;
    net.provider().anvil_set_balance(worker.address, U256::from(ack + complete / 2)).await.expect("anvil_setBalance");
    let third = submit_prompt(&net, &session, "Write one word.").await.job;
    jobs.push(third);
    let reported = || async { refusal(&db, third).is_some() };
    assert!(wait_until(Duration::from_secs(30), reported).await, "the third job was reported");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        state_of(&db, third).as_deref(),
        Some("SUBMITTED"),
        "an ack the wallet could not follow up was never sent"
    );
    assert!(outbox_rows(&db, third, "ack").is_empty(), "no ack signed");
    let (step, why, last) = refusal(&db, third).unwrap();
    assert!(step == "funds" && !last && why.contains("top up"), "{step}: {why}");

    // Topped up: the third job is served too.
    net.provider().anvil_set_balance(worker.address, U256::from(10u64).pow(U256::from(19u64))).await.unwrap();
    let all_done = || async { jobs.iter().all(|j| state_of(&db, *j).as_deref() == Some("COMPLETED")) };
    assert!(wait_until(Duration::from_secs(90), all_done).await, "the third job was served once the wallet allowed");
    let summary = running.finish().await;
    indexer.finish().await;
    assert_eq!(summary.reverted, 0, "{summary:?}");
    assert!(summary.refused[&third].contains("top up"), "{summary:?}");
    for job in &jobs {
        let (_, response, ..) = job_row(&db, *job).unwrap();
        assert!(response.is_some(), "job {job} answered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_whose_clock_is_ten_minutes_behind_is_served_on_chain_time() {
    let behind = lcw_schema::store::unix_now() - 600;
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.genesis_timestamp = Some(behind);
        o.deploy.dispute_window = 30;
        o.deploy.ack_timeout = 60;
        o.deploy.completion_timeout = 120;
    })
    .await;
    assert!(net.now().await + 300 < lcw_schema::store::unix_now(), "the chain's clock is behind this machine's");
    let server = lcw_tests::llm::LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::X25519).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;
    let running = start_worker(&net, &db, 0, &worker, llm(&server));
    let submitted = submit_prompt(&net, &session, "What is two plus two?").await;
    let completed = || async { state_of(&db, submitted.job).as_deref() == Some("COMPLETED") };
    assert!(wait_until(Duration::from_secs(90), completed).await, "served although the local clock is 10 min ahead");
    let summary = running.finish().await;
    indexer.finish().await;
    assert!(summary.refused.is_empty() && summary.failed.is_empty(), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_num_predict_whose_answers_cannot_fit_one_blob_stops_the_worker_at_start() {
    let net = devnet().await;
    let server = lcw_tests::llm::LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::X25519).await;
    // The devnet model allows 256 output tokens: a large --num-predict is lowered to it and runs.
    let mut big = llm(&server).config().clone();
    big.num_predict = 65_536;
    let fine = start_worker(&net, &db, 0, &worker, lcw_worker::llm::Llm::new(big.clone()).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!fine.task.is_finished(), "the on-chain limit makes it fit");
    let _ = fine.finish().await;
    // A model without an on-chain limit: 65,536 tokens could not fit one blob.
    let owner = net.wallet(net.signer(lcw_schema::profile::Role::Deployer, 0));
    let ai = lcw_schema::bindings::AIConfig::new(net.profile().contracts.ai_config, &owner);
    let id = lcw_schema::types::ModelId::from_name(MODEL).0;
    lcw_tests::send!(ai.setModelMaxOutputTokens(id, U256::ZERO));
    let refused = start_worker(&net, &db, 0, &worker, lcw_worker::llm::Llm::new(big).unwrap());
    let err = refused.task.await.expect("task").expect_err("the worker refuses to start");
    indexer.finish().await;
    let msg = err.to_string();
    assert!(msg.contains("--num-predict 65536 cannot fit") && msg.contains("one blob"), "{msg}");
}
