//! The indexer against a real devnet: thousands of simulated jobs with every outcome, checked
//! against the chain; replay equal to live; reorgs of depth 1 to 10; a deep reorg refused; a
//! flaky RPC behind a fault-injecting proxy, with a dead primary URL; the change log naming every
//! row each commit changed (`changes`).

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::TransactionRequest;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::sol_types::SolCall;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::bindings::{AIConfig, JobRegistry};
use lcw_schema::profile::Role;
use lcw_schema::store::Store;
use lcw_schema::suite::Suite;
use lcw_schema::types::JobState;
use lcw_tests::indexing::{self, Follower};
use lcw_tests::parties::{ack_and_complete, open_session, register_worker, submit};
use lcw_tests::proxy::{Faults, FlakyProxy};
use lcw_tests::{TestNet, b256, send};

mod changes;
mod hostile;
mod sortition;

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let store = Store::open_readonly(db).unwrap();
    store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

pub(crate) async fn head(net: &TestNet) -> (u64, alloy::primitives::B256) {
    let b = net.provider().get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap();
    (b.header.number, b.header.hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_workload_indexed_live_equals_chain_replay_and_fresh_backfill() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        // The simulator acts on 2,000 jobs submitted within seconds: on two busy cores it can fall
        // seconds behind, and an ack, dispute or verdict landing after a 3 s window reverts.
        o.deploy.ack_timeout = 30;
        o.deploy.completion_timeout = 30;
        o.deploy.dispute_window = 10;
        o.deploy.resolution_timeout = 10;
    })
    .await;
    let live_db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &live_db);
    let options = SimulateOptions {
        jobs: 2_000,
        workers: 4,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 10.0, dispute: 20.0, settle: 5.0 },
        suite: Suite::P256AesGcm,
        seed: 11,
        ..SimulateOptions::default()
    };
    let report = simulate::run(net.profile(), &options, |_| {}).await.expect("simulation");
    assert_eq!((report.submitted, report.reverted), (2_000, 0), "{report:?}");
    let (n, h) = head(&net).await;
    assert!(indexing::wait_for(&live_db, n, h, Duration::from_secs(60)).await, "live indexer reached the head");
    let summary = follower.finish().await;
    assert_eq!(summary.undecodable, 0);

    // Every outcome is in the store.
    let db = &live_db;
    assert_eq!(count(db, "SELECT count(*) FROM jobs"), 2_000);
    assert!(
        count(
            db,
            "SELECT count(*) FROM jobs WHERE state = 'RELEASED' AND defaulted_block IS NULL AND disputed_block IS NULL"
        ) > 0
    );
    assert!(count(db, "SELECT count(*) FROM jobs WHERE state = 'TIMED_OUT' AND settled_no_fault = 0") > 0);
    assert!(count(db, "SELECT count(*) FROM jobs WHERE state = 'TIMED_OUT' AND settled_no_fault = 1") > 0);
    assert!(count(db, "SELECT count(*) FROM jobs WHERE state = 'RESOLVED' AND guilty = 1") > 0);
    assert!(count(db, "SELECT count(*) FROM jobs WHERE state = 'RELEASED' AND guilty = 0") > 0);
    assert!(count(db, "SELECT count(*) FROM jobs WHERE state = 'RELEASED' AND defaulted_block IS NOT NULL") > 0);
    assert!(count(db, "SELECT count(*) FROM slashes WHERE reason = 'ack_timeout' AND job_id IS NOT NULL") > 0);
    assert!(count(db, "SELECT count(*) FROM slashes WHERE reason = 'dispute'") > 0);
    assert_eq!(count(db, "SELECT sum(submitted) FROM rollups_hourly"), 2_000);

    // The chain agrees, job by job for a sample, and in aggregate through verify.
    let jr = JobRegistry::new(net.profile().contracts.job_registry, net.provider());
    assert_eq!(jr.jobCount().call().await.unwrap(), U256::from(2_000));
    let store = Store::open_readonly(db).unwrap();
    for id in (1..=2_000u64).step_by(97) {
        let row = lcw_schema::store::rows::JobRow::get(store.conn(), id).unwrap().unwrap();
        let onchain = jr.getJob(U256::from(id)).call().await.unwrap();
        assert_eq!(row.state, JobState::from_u8(onchain.state).unwrap().as_str(), "job {id}");
        assert_eq!(row.worker, onchain.worker, "job {id}");
        assert_eq!(row.submitted_at, onchain.submittedAt.to::<u64>(), "job {id}");
    }
    let verified = lcw_indexer::verify::verify(net.profile(), db, Duration::from_secs(10)).await.unwrap();
    assert!(verified.ok(), "{:#?}", verified.differences);
    assert_eq!(verified.workers, 4);

    // Replay (no RPC) rebuilds exactly what live indexing built.
    let replayed = lcw_indexer::replay::replay(db, false).unwrap();
    assert!(replayed.equal(), "{:?}", replayed.differences);
    assert!(replayed.events > 6_000);

    // A fresh index of the same chain (now mostly backfilled) equals the live one.
    net.provider().anvil_mine(Some(70), None).await.unwrap();
    let fresh = net.dir.path().join("fresh.db");
    indexing::until_head(net.profile(), &fresh).await;
    assert_eq!(indexing::differences(db, &fresh), vec![]);
}

/// Registers two workers and opens a session with each; returns (workers, sessions).
pub(crate) async fn two_workers(net: &TestNet) -> (Vec<lcw_tests::parties::Worker>, Vec<lcw_tests::parties::Session>) {
    let fee = AIConfig::new(net.profile().contracts.ai_config, net.provider())
        .calculateJobFee(lcw_tests::parties::model())
        .call()
        .await
        .unwrap();
    let mut workers = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..2 {
        let w = register_worker(net, i, Suite::P256AesGcm).await;
        sessions.push(open_session(net, i, &w, fee * U256::from(100)).await);
        workers.push(w);
    }
    (workers, sessions)
}

/// Makes the blocks a reorg of `depth` will replace: a job of the first session acked and
/// completed (pushed to `completed`), `depth` submissions to the second session and, from depth
/// 2 on, the release of the oldest completed job past its window. The first job's blob hash is
/// `first_blob + depth`, so that callers keep their jobs apart.
pub(crate) async fn blocks_to_replace(
    net: &TestNet,
    workers: &[lcw_tests::parties::Worker],
    sessions: &[lcw_tests::parties::Session],
    completed: &mut Vec<U256>,
    depth: u64,
    first_blob: u8,
) {
    let job = submit(net, &sessions[0], b256(first_blob + depth as u8)).await;
    ack_and_complete(net, &workers[0], job).await;
    completed.push(job);
    for _ in 0..depth {
        submit(net, &sessions[1], b256(100 + depth as u8)).await;
    }
    if depth > 1 {
        net.advance(61).await;
        let jr = JobRegistry::new(net.profile().contracts.job_registry, &workers[0].provider);
        send!(jr.releaseJobs(vec![completed[0]]));
    }
}

/// Replaces the last `depth` blocks with another branch holding another consumer's job and,
/// from depth 3 on, a keeper timing out job 2; mines one block on it.
pub(crate) async fn reorg_to_other_branch(net: &TestNet, sessions: &[lcw_tests::parties::Session], depth: u64) {
    let jr_addr = net.profile().contracts.job_registry;
    let consumer1 = net.profile().accounts_with(Role::Consumer).nth(1).unwrap().address;
    let keeper = net.profile().account(Role::Keeper).unwrap().address;
    let call = |from, input: Vec<u8>| {
        TransactionData::JSON(TransactionRequest::default().from(from).to(jr_addr).input(input.into()))
    };
    let submit_other = JobRegistry::submitJobCall { sessionId: sessions[1].id, blobHash: b256(200 + depth as u8) };
    let mut txs = vec![(call(consumer1, submit_other.abi_encode()), 0)];
    if depth >= 3 {
        let timeout = JobRegistry::claimTimeoutCall { jobId: U256::from(2) };
        txs.push((call(keeper, timeout.abi_encode()), depth - 1));
    }
    net.provider().anvil_reorg(ReorgOptions { depth, tx_block_pairs: txs }).await.expect("anvil_reorg");
    net.provider().anvil_mine(Some(1), None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorgs_of_depth_1_to_10_leave_the_store_equal_to_a_fresh_index() {
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let mut completed = Vec::new();
    for depth in 1..=10u64 {
        // Blocks that the reorg will replace: submissions, acks, completions, a release.
        blocks_to_replace(&net, &workers, &sessions, &mut completed, depth, 0).await;
        let (n, h) = head(&net).await;
        assert!(indexing::wait_for(&db, n, h, Duration::from_secs(30)).await, "caught up before reorg {depth}");
        // Replace the last `depth` blocks: another consumer's job, and a keeper timing out a job.
        reorg_to_other_branch(&net, &sessions, depth).await;
        let (n, h) = head(&net).await;
        assert!(indexing::wait_for(&db, n, h, Duration::from_secs(30)).await, "followed reorg of depth {depth}");
    }
    let summary = follower.finish().await;
    assert!(summary.reorgs >= 10, "{summary:?}");

    let fresh = net.dir.path().join("fresh.db");
    indexing::until_head(net.profile(), &fresh).await;
    assert_eq!(indexing::differences(&db, &fresh), vec![], "store after reorgs equals a fresh index");
    let verified = lcw_indexer::verify::verify(net.profile(), &db, Duration::from_secs(10)).await.unwrap();
    assert!(verified.ok(), "{:#?}", verified.differences);
    let replayed = lcw_indexer::replay::replay(&db, false).unwrap();
    assert!(replayed.equal(), "{:?}", replayed.differences);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_below_finality_is_refused_not_applied() {
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    let job = submit(&net, &sessions[0], b256(1)).await;
    ack_and_complete(&net, &workers[0], job).await;
    net.provider().anvil_mine(Some(80), None).await.unwrap();
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let (n, h) = head(&net).await;
    assert!(indexing::wait_for(&db, n, h, Duration::from_secs(30)).await);
    let before = indexing::cursor(&db);
    // Anvil finalizes head - 64: this reorg reaches below what the store may unwind.
    net.provider().anvil_reorg(ReorgOptions { depth: 75, tx_block_pairs: vec![] }).await.unwrap();
    net.provider().anvil_mine(Some(1), None).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), follower.task)
        .await
        .expect("indexer stops")
        .unwrap()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("reorganised below block") && msg.contains("re-index"), "{msg}");
    assert_eq!(indexing::cursor(&db), before, "nothing was unwound or applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_rpc_and_dead_primary_still_yield_a_complete_store() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    let options = SimulateOptions {
        jobs: 300,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 10.0, dispute: 20.0, settle: 5.0 },
        ..SimulateOptions::default()
    };
    simulate::run(net.profile(), &options, |_| {}).await.expect("simulation");
    net.provider().anvil_mine(Some(70), None).await.unwrap();

    let proxy = FlakyProxy::start(
        &net.profile().rpc_url,
        Faults {
            hang: 0.03,
            hang_for: Duration::from_millis(1_500),
            garble: 0.05,
            rate_limit: 0.07,
            server_error: 0.05,
            slow: 0.05,
            slow_for: Duration::from_millis(300),
            max_log_blocks: 3,
            seed: 5,
        },
    )
    .await;
    let mut profile = net.profile().clone();
    profile.rpc_url = "http://127.0.0.1:9".into(); // nothing listens: every request fails over
    profile.rpc_fallback_urls = vec![proxy.url.clone()];
    profile.ws_url = None;
    let flaky_db = net.dir.path().join("flaky.db");
    let mut config = indexing::config(&profile, &flaky_db);
    config.until_head = true;
    config.rpc_timeout = Duration::from_secs(1);
    config.backfill.initial_range = 50;
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let summary = lcw_indexer::run(config, rx, None).await.expect("indexing through the flaky proxy");
    assert!(summary.range_splits > 0 && summary.rpc_retries > 0, "{summary:?}");
    assert!(proxy.counts.faults.load(std::sync::atomic::Ordering::Relaxed) > 5);

    let direct_db = net.dir.path().join("direct.db");
    indexing::until_head(net.profile(), &direct_db).await;
    assert_eq!(indexing::differences(&flaky_db, &direct_db), vec![]);
    let verified = lcw_indexer::verify::verify(net.profile(), &flaky_db, Duration::from_secs(10)).await.unwrap();
    assert!(verified.ok(), "{:#?}", verified.differences);

    // Answers larger than the response cap are abandoned while they stream in and their ranges
    // split (a range sized on sparse blocks that reaches dense ones); single blocks are read
    // whole whatever their size. The store is the same.
    let capped_db = net.dir.path().join("capped.db");
    let mut config = indexing::config(net.profile(), &capped_db);
    config.until_head = true;
    config.backfill.initial_range = 200;
    config.backfill.max_response_bytes = 8 * 1024;
    // A buffer this small fills with later ranges while an early split waits to be fetched.
    config.backfill.max_buffered_logs = 40;
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let summary = lcw_indexer::run(config, rx, None).await.expect("indexing with a small response cap");
    assert!(summary.range_splits > 0, "{summary:?}");
    assert_eq!(indexing::differences(&capped_db, &direct_db), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_logs_are_kept_raw_counted_and_indexing_goes_on() {
    use alloy::sol_types::SolEvent;
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    let db = net.dir.path().join("live.db");
    let follower = Follower::start(net.profile(), &db);
    let ai = net.profile().contracts.ai_config;
    let p = net.provider();
    let original = p.get_code_at(ai).await.unwrap();
    // A stub that emits an unknown event, then a JobSubmitted topic with no indexed topics and no
    // data (malformed), from the AIConfig address.
    let unknown = b256(0xee);
    let known = JobRegistry::JobSubmitted::SIGNATURE_HASH;
    let mut code = vec![0x7f];
    code.extend_from_slice(unknown.as_slice());
    code.extend_from_slice(&[0x60, 0x00, 0x60, 0x00, 0xa1, 0x7f]);
    code.extend_from_slice(known.as_slice());
    code.extend_from_slice(&[0x60, 0x00, 0x60, 0x00, 0xa1, 0x00]);
    p.anvil_set_code(ai, code.into()).await.unwrap();
    let caller = net.wallet(net.signer(Role::Keeper, 0));
    let tx = TransactionRequest::default().to(ai).gas_limit(100_000);
    let receipt = caller.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
    assert_eq!(receipt.inner.logs().len(), 2);
    p.anvil_set_code(ai, original).await.unwrap();
    // Indexing goes on: later events are indexed.
    let job = submit(&net, &sessions[0], b256(1)).await;
    ack_and_complete(&net, &workers[0], job).await;
    let (n, h) = head(&net).await;
    assert!(indexing::wait_for(&db, n, h, Duration::from_secs(30)).await);
    let summary = follower.finish().await;
    assert_eq!(summary.undecodable, 2, "{summary:?}");
    assert_eq!(count(&db, "SELECT count FROM event_counts WHERE event = '(undecodable)'"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM logs WHERE event IS NULL AND decode_error LIKE 'AIConfig%'"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM v_undecodable_logs"), 2);
    assert_eq!(count(&db, &format!("SELECT count(*) FROM jobs WHERE job_id = {job} AND state = 'COMPLETED'")), 1);
    let replayed = lcw_indexer::replay::replay(&db, false).unwrap();
    assert!(replayed.equal(), "{:?}", replayed.differences);
}
