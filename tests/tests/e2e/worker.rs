//! The worker against a real anvil (1 s blocks), a real store fed by a live indexer and a real
//! llama-server with a real small model: jobs for both encryption suites are acked, answered
//! and completed; the consumer decrypts each response from its blob and it equals what the
//! model says for that prompt (temperature 0, seed 42); a session whose key cannot be
//! decrypted is refused without an ack; a job that cannot finish before its deadline is refused
//! and later cleared by a keeper's claimTimeout; an LLM server that is down at start stops the
//! worker with what to fix, one that goes down or turns slow mid-run fails the work (reported as
//! such) until it is back, without a duplicate or late transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use lcw_schema::bindings::JobRegistry;
use lcw_schema::store::Store;
use lcw_schema::suite::Suite;
use lcw_tests::indexing::Follower;
use lcw_tests::llm::LlmServer;
use lcw_tests::parties::{self, Worker, submit_prompt};
use lcw_tests::{TestNet, wait_until};
use lcw_worker::blobs::BlobSource;
use lcw_worker::llm::{Api, Llm, LlmConfig};
use lcw_worker::pipeline::{WorkConfig, WorkSummary};

const MODEL: &str = "gemma3-270m";
const NUM_PREDICT: u32 = 24;

async fn devnet() -> TestNet {
    TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 30;
        o.deploy.ack_timeout = 60;
        o.deploy.completion_timeout = 120;
    })
    .await
}

/// A new store in a temporary directory, followed live by an indexer; returns once it exists.
/// Keep the directory until the test ends.
async fn followed_store(net: &TestNet) -> (tempfile::TempDir, std::path::PathBuf, Follower) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    assert!(wait_until(Duration::from_secs(60), || async { Store::open_readonly(&db).is_ok() }).await, "store created");
    (dir, db, indexer)
}

fn llm(server: &LlmServer) -> Llm {
    Llm::new(LlmConfig { url: server.url.clone(), api: Api::OpenAi, num_predict: NUM_PREDICT, ..LlmConfig::default() })
        .expect("llm config")
}

struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<WorkSummary, lcw_worker::pipeline::WorkerError>>,
}

impl Running {
    async fn finish(self) -> WorkSummary {
        let _ = self.stop.send(true);
        self.task.await.expect("worker task").expect("worker ran cleanly")
    }
}

fn start_worker(net: &TestNet, db: &Path, index: usize, worker: &Worker, llm: Llm) -> Running {
    start_worker_with(net, db, index, worker, llm, |_| {})
}

fn start_worker_with(
    net: &TestNet,
    db: &Path,
    index: usize,
    worker: &Worker,
    llm: Llm,
    tune: impl FnOnce(&mut WorkConfig),
) -> Running {
    let signer = net.signer(lcw_schema::profile::Role::Worker, index);
    let secret = lcw_schema::suite::EncryptionSecret::from_bytes(worker.secret.suite(), &worker.secret.to_bytes())
        .expect("secret copy");
    let config = WorkConfig::new(
        net.profile().clone(),
        db.to_owned(),
        signer,
        Arc::new(secret),
        llm,
        vec![MODEL.to_owned()],
        BlobSource::Anvil(net.provider()),
    );
    let mut config = config;
    tune(&mut config);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(lcw_worker::pipeline::run(config, rx));
    Running { stop, task }
}

/// The job's row as the store has it: (state, response blob hash, ciphertext hash, submitted
/// block, acknowledged block).
type JobRow = (String, Option<Vec<u8>>, Option<Vec<u8>>, i64, Option<i64>);

/// Outbox transactions of `kind` whose receipt the outbox has seen.
fn mined(db: &Path, kind: &str) -> i64 {
    let Ok(store) = Store::open_readonly(db) else { return 0 };
    store
        .conn()
        .query_row("SELECT count(*) FROM outbox WHERE kind = ?1 AND status = 'mined'", [kind], |r| r.get(0))
        .unwrap_or(0)
}

fn job_row(db: &Path, job: u64) -> Option<JobRow> {
    let store = Store::open_readonly(db).ok()?;
    store
        .conn()
        .query_row(
            "SELECT state, response_blob_hash, response_ciphertext_hash, submitted_block, acknowledged_block
             FROM jobs WHERE job_id = ?1",
            [job as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .ok()
}

async fn anvil_blob(net: &TestNet, hash: B256) -> Vec<u8> {
    let blob: Bytes =
        net.provider().raw_request("anvil_getBlobByHash".into(), (hash,)).await.expect("anvil_getBlobByHash");
    lcw_schema::blob::decode(&blob).expect("blob payload")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_both_suites_are_acked_answered_and_completed_with_the_models_answer() {
    let net = devnet().await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let p256 = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let x25519 = parties::register_worker(&net, 1, Suite::X25519).await;
    let deposit = U256::from(10u64).pow(U256::from(20u64));
    let s_p256 = parties::open_session(&net, 0, &p256, deposit).await;
    let s_x25519 = parties::open_session(&net, 1, &x25519, deposit).await;
    let w0 = start_worker(&net, &db, 0, &p256, llm(&server));
    let w1 = start_worker(&net, &db, 1, &x25519, llm(&server));

    let prompts = ["Name three colours.", "What is two plus two?", "Write one word."];
    let mut jobs = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        jobs.push(submit_prompt(&net, &s_p256, prompt).await);
        if i < 2 {
            jobs.push(submit_prompt(&net, &s_x25519, prompt).await);
        }
    }
    // Every job completed in the store, and every completion's receipt seen by the outbox (the
    // workers count a completion when its receipt arrives, which can follow the indexer's commit).
    let completed = || async {
        jobs.iter().all(|s| job_row(&db, s.job).is_some_and(|(state, ..)| state == "COMPLETED"))
            && mined(&db, "complete") >= jobs.len() as i64
    };
    assert!(wait_until(Duration::from_secs(180), completed).await, "every job completed");
    let s0 = w0.finish().await;
    let s1 = w1.finish().await;
    indexer.finish().await;
    assert_eq!(s0.reverted + s1.reverted, 0, "no worker transaction reverted: {s0:?} {s1:?}");
    assert!(s0.refused.is_empty() && s1.refused.is_empty(), "nothing refused: {s0:?} {s1:?}");

    let reference = llm(&server);
    let jr = JobRegistry::new(net.profile().contracts.job_registry, net.provider());
    for s in &jobs {
        let (_, blob_hash, ct_hash, submitted, acked) = job_row(&db, s.job).expect("job row");
        let blob_hash = B256::from_slice(&blob_hash.expect("response blob hash"));
        let ciphertext = anvil_blob(&net, blob_hash).await;
        assert_eq!(keccak256(&ciphertext).as_slice(), ct_hash.expect("ciphertext hash").as_slice());
        let on_chain = jr.getJob(U256::from(s.job)).call().await.expect("getJob");
        assert_eq!(on_chain.responseBlobHash, blob_hash, "job {}: the chain has the same blob", s.job);
        assert_eq!(on_chain.responseCiphertextHash, keccak256(&ciphertext));
        // The consumer's side: its session key opens the response.
        let answer = String::from_utf8(s.key.open(&ciphertext).expect("the consumer decrypts")).expect("utf-8");
        let expected = reference.generate(MODEL, &s.prompt).await.expect("reference generation");
        assert_eq!(answer, expected.text, "job {}: the response is the model's answer to the prompt", s.job);
        assert!(!answer.is_empty());
        // Acked in the block after submission (the worker reacts to the indexer's commit).
        let acked = acked.expect("acknowledged block");
        assert!(acked - submitted <= 2, "job {} acked {} blocks after submission", s.job, acked - submitted);
    }
    let acks = jobs.len() as u64;
    assert_eq!(s0.acked + s1.acked, acks);
    assert_eq!(s0.completed + s1.completed, acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_key_that_cannot_be_decrypted_is_refused_without_an_ack() {
    let net = devnet().await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let deposit = U256::from(10u64).pow(U256::from(20u64));
    // A worker process holding a different secret than the registered key's must refuse to
    // start rather than ack jobs it cannot read.
    let impostor = Worker {
        address: worker.address,
        provider: worker.provider.clone(),
        secret: lcw_schema::suite::EncryptionSecret::generate(Suite::P256AesGcm),
    };
    let refused = start_worker(&net, &db, 0, &impostor, llm(&server));
    let err = refused.task.await.expect("task").expect_err("a worker whose key is not the registered one stops");
    assert!(err.to_string().contains("not the local one"), "{err}");

    // A consumer that wrapped the session key for another key: the job is refused, never acked.
    let right = start_worker(&net, &db, 0, &worker, llm(&server));
    let session = parties::open_session(&net, 0, &impostor, deposit).await;
    let submitted = submit_prompt(&net, &session, "Hello?").await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            let s = job_row(&db, submitted.job);
            s.is_some()
        })
        .await,
        "job indexed"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (state, ..) = job_row(&db, submitted.job).unwrap();
    assert_eq!(state, "SUBMITTED", "not acked");
    let summary = right.finish().await;
    indexer.finish().await;
    let why = summary.refused.get(&submitted.job).expect("refused with a reason");
    assert!(why.contains("cannot be decrypted") && why.contains("updateSessionKey"), "{why}");
}

fn state_of(db: &Path, job: u64) -> Option<String> {
    job_row(db, job).map(|(state, ..)| state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_cannot_finish_in_time_is_refused_and_later_cleared_by_claim_timeout() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 30;
        o.deploy.ack_timeout = 6;
        o.deploy.completion_timeout = 20;
    })
    .await;
    let server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::X25519).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;
    // This worker believes a job takes a minute: nothing fits in a 20 s completion window.
    let running = start_worker_with(&net, &db, 0, &worker, llm(&server), |c| c.expected_job_secs = 60.0);
    let keeper = {
        let mut config = lcw_settler::settle::SettleConfig::new(
            net.profile().clone(),
            db.clone(),
            lcw_settler::settle::Mode::Keeper,
            net.signer(lcw_schema::profile::Role::Keeper, 0),
        );
        config.poll_interval = Duration::from_millis(50);
        let (stop, rx) = tokio::sync::watch::channel(false);
        (stop, tokio::spawn(lcw_settler::settle::run(config, rx)))
    };
    let submitted = submit_prompt(&net, &session, "Summarise the history of Rome in detail.").await;
    // Timed out in the store, and the keeper's outbox has seen the receipt (it counts the claim
    // then, which can follow the indexer's commit).
    let timed_out =
        || async { state_of(&db, submitted.job).as_deref() == Some("TIMED_OUT") && mined(&db, "claim_timeout") >= 1 };
    assert!(wait_until(Duration::from_secs(60), timed_out).await, "the keeper claimed the timeout");
    let summary = running.finish().await;
    let _ = keeper.0.send(true);
    let settled = keeper.1.await.expect("keeper task").expect("keeper ran cleanly");
    indexer.finish().await;

    let why = summary.refused.get(&submitted.job).expect("the job was refused with a reason");
    assert!(why.contains("cannot finish before its completion deadline"), "{why}");
    assert_eq!(summary.acked, 0, "never acked: {summary:?}");
    let (_, response, _, _, acked) = job_row(&db, submitted.job).unwrap();
    assert!(acked.is_none() && response.is_none(), "no ack and no response on chain");
    assert_eq!(settled.timeouts_claimed, 1, "{settled:?}");
    // The keeper's bounty came out of the worker's stake (the price of refusing silently would be
    // the same; refusing early at least leaves the LLM free for jobs that fit).
    let stake = lcw_schema::bindings::WorkerRegistry::new(net.profile().contracts.worker_registry, net.provider())
        .getWorkerStake(worker.address)
        .call()
        .await
        .unwrap();
    let min = lcw_schema::bindings::AIConfig::new(net.profile().contracts.ai_config, net.provider())
        .getMinWorkerStake()
        .call()
        .await
        .unwrap();
    assert!(stake < min, "the timeout slashed the stake ({stake} < {min})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_llm_server_that_is_down_or_slow_fails_the_work_until_it_is_back_with_no_duplicate() {
    let net = devnet().await;
    let mut server = LlmServer::start();
    let (_dir, db, indexer) = followed_store(&net).await;
    let worker = parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let session = parties::open_session(&net, 0, &worker, U256::from(10u64).pow(U256::from(20u64))).await;

    // Down at start: the worker starts (transactions in flight may need it) but acks nothing while
    // the server is down: each new job is refused for now at step `llm`, naming the server.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let nowhere = Llm::new(LlmConfig { url: closed.clone(), api: Api::OpenAi, ..LlmConfig::default() }).unwrap();
    let waiting = start_worker(&net, &db, 0, &worker, nowhere);
    let held = submit_prompt(&net, &session, "Name a sea.").await;
    let step = |job: u64| {
        Store::open_readonly(&db).ok().and_then(|s| {
            s.conn()
                .query_row("SELECT step FROM worker_refusals WHERE job_id = ?1", [job as i64], |r| {
                    r.get::<_, String>(0)
                })
                .ok()
        })
    };
    let refused = wait_until(Duration::from_secs(30), || async { step(held.job).as_deref() == Some("llm") }).await;
    assert!(refused, "refused for now at step llm, not {:?}", step(held.job));
    assert!(job_row(&db, held.job).is_some_and(|r| r.4.is_none()), "not acked while the server is down");
    let s0 = waiting.finish().await;
    let why = s0.refused.get(&held.job).expect("reported as refused");
    assert!(why.contains(&closed) && why.contains("cannot reach the LLM server"), "{why}");

    let done = |job: u64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move {
                // Completed in the store, and the worker has read its own receipt.
                state_of(&db, job).as_deref() == Some("COMPLETED")
                    && Store::open_readonly(&db).ok().is_some_and(|s| {
                        s.conn()
                            .query_row(
                                "SELECT count(*) FROM outbox o JOIN outbox_jobs j ON j.outbox_id = o.id
                                 WHERE j.job_id = ?1 AND o.kind = 'complete' AND o.status = 'mined'",
                                [job as i64],
                                |r| r.get::<_, i64>(0),
                            )
                            .is_ok_and(|n| n == 1)
                    })
            }
        }
    };
    let acked = |job: u64| {
        let db = db.clone();
        move || {
            let db = db.clone();
            async move { job_row(&db, job).is_some_and(|r| r.4.is_some()) }
        }
    };

    // Down mid-run: the server dies; a new job is acked, its work fails as unreachable, and it
    // completes once a supervisor brings the server back on its port.
    let direct = start_worker(&net, &db, 0, &worker, llm(&server));
    // A first job shows it is up (past its start-up checks of the server).
    let first = submit_prompt(&net, &session, "Name a number.").await;
    assert!(wait_until(Duration::from_secs(60), done(first.job)).await, "the first job completed");
    server.stop();
    let down = submit_prompt(&net, &session, "Name a colour.").await;
    assert!(wait_until(Duration::from_secs(30), acked(down.job)).await, "acked while the server is down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state_of(&db, down.job).as_deref(), Some("ACKNOWLEDGED"), "not completed while down");
    server.restart();
    assert!(wait_until(Duration::from_secs(60), done(down.job)).await, "completed once the server is back");
    let s1 = direct.finish().await;
    assert!(s1.failed.is_empty(), "completed in the end: {s1:?}");
    let why = s1.retried.get(&down.job).expect("the failed attempts are reported");
    assert!(why.iter().any(|w| w.contains("cannot reach the LLM server")), "reported as unreachable: {why:?}");

    // Slow: behind a gate that holds each request longer than the client's timeout. The timeout
    // leaves room for the worker's start-up warm-up on a loaded machine (2 s failed on CI).
    let gate = lcw_tests::gate::SlowGate::start(&server.url).await;
    let gated = Llm::new(LlmConfig {
        url: gate.url.clone(),
        api: Api::OpenAi,
        num_predict: NUM_PREDICT,
        timeout: Duration::from_secs(8),
        ..LlmConfig::default()
    })
    .unwrap();
    let running = start_worker(&net, &db, 0, &worker, gated);
    // Started once it has listed the models and warmed the one it serves.
    let started =
        wait_until(Duration::from_secs(30), || async { gate.forwarded() >= 2 || running.task.is_finished() }).await;
    if running.task.is_finished() {
        panic!("the worker stopped at start: {:?}", running.task.await);
    }
    assert!(started, "worker started (forwarded {})", gate.forwarded());
    gate.set_delay(Duration::from_secs(10));
    let slow = submit_prompt(&net, &session, "Name a fruit.").await;
    assert!(wait_until(Duration::from_secs(30), acked(slow.job)).await, "acked while the server is slow");
    // The work fails on the timeout and is retried with backoff while the deadline allows.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(state_of(&db, slow.job).as_deref(), Some("ACKNOWLEDGED"), "not completed while too slow");
    gate.set_delay(Duration::ZERO);
    assert!(wait_until(Duration::from_secs(60), done(slow.job)).await, "completed once the server is fast again");
    let s2 = running.finish().await;
    indexer.finish().await;
    assert!(s2.failed.is_empty(), "completed in the end: {s2:?}");
    let why = s2.retried.get(&slow.job).expect("the slow attempts are reported");
    assert!(why.iter().any(|w| w.contains("did not finish within")), "reported as a timeout: {why:?}");
    // The job held back while the server was down is served by the next run, with the other three.
    assert!(done(held.job)().await, "the job held back at start is served once the server is up");
    assert_eq!((s1.acked + s2.acked, s1.completed + s2.completed), (4, 4), "{s1:?} {s2:?}");
    assert_eq!(s1.reverted + s2.reverted, 0);
    // One ack and one completion each: the retries never sent a second transaction.
    let store = Store::open_readonly(&db).unwrap();
    let sent: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM outbox WHERE kind IN ('ack', 'complete') AND status <> 'dropped'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(sent, 8);
    let reference = llm(&server);
    for s in [&first, &slow, &down] {
        let (_, blob_hash, ..) = job_row(&db, s.job).unwrap();
        let ciphertext = anvil_blob(&net, B256::from_slice(&blob_hash.unwrap())).await;
        let answer = String::from_utf8(s.key.open(&ciphertext).unwrap()).unwrap();
        assert_eq!(answer, reference.generate(MODEL, &s.prompt).await.unwrap().text);
    }
}

mod money;
mod sortition;
