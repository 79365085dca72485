//! The indexer against hostile answers: a relay in front of the devnet (`lcw_tests::hostile`)
//! rewrites chosen `eth_getLogs` and header answers on the backfill and the live path, and an
//! honest relay is the fallback. Each run must reach the head without stopping, count every
//! refused answer against the hostile endpoint by reason (and none against the fallback, which
//! must have answered the retries), and leave a store equal to a fresh honest index of the same
//! chain: nothing of a wrong answer is stored. A store that an earlier version filled from
//! unchecked answers (a log above its cursor) is cleared at start and indexed on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy::providers::ext::AnvilApi;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_indexer::{IndexerConfig, Summary};
use lcw_schema::profile::redact_url;
use lcw_tests::hostile::{Hostile, Lie, Plan};
use lcw_tests::{TestNet, indexing};

/// A devnet with a simulated workload in two parts: the first ends below the finalized block
/// (backfilled), then 70 blocks, then the second above it (followed live).
async fn workload() -> TestNet {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    for (jobs, seed) in [(30, 1), (15, 2)] {
        let options = SimulateOptions {
            jobs,
            workers: 2,
            auto_complete: true,
            auto_release: true,
            shares: Shares { timeout: 10.0, dispute: 20.0, settle: 5.0 },
            seed,
            ..SimulateOptions::default()
        };
        let report = simulate::run(net.profile(), &options, |_| {}).await.expect("simulation");
        assert_eq!((report.submitted, report.reverted), (jobs, 0), "{report:?}");
        if seed == 1 {
            net.provider().anvil_mine(Some(70), None).await.unwrap();
        }
    }
    net
}

/// What one run through the hostile relay left.
struct Run {
    summary: Summary,
    hostile: Hostile,
    fallback: Hostile,
    db: PathBuf,
}

/// Indexes the devnet to its head into `name` through a relay that lies as `plan` says, with an
/// honest relay as the fallback, in small ranges (many answers to lie in).
async fn index_through(net: &TestNet, name: &str, plan: Plan, tune: impl FnOnce(&mut IndexerConfig)) -> Run {
    let hostile = Hostile::start(&net.profile().rpc_url, plan).await;
    let fallback = Hostile::start(&net.profile().rpc_url, Plan::honest()).await;
    let mut profile = net.profile().clone();
    profile.rpc_url = hostile.url.clone();
    profile.rpc_fallback_urls = vec![fallback.url.clone()];
    profile.ws_url = None;
    let db = net.dir.path().join(name);
    let mut config = indexing::config(&profile, &db);
    config.until_head = true;
    config.backfill.target_logs = 40;
    tune(&mut config);
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let summary = lcw_indexer::run(config, rx, None).await.expect("indexing goes on through the hostile relay");
    Run { summary, hostile, fallback, db }
}

/// A fresh index of the devnet straight from the node.
async fn honest_index(net: &TestNet) -> PathBuf {
    let db = net.dir.path().join("honest.db");
    indexing::until_head(net.profile(), &db).await;
    db
}

/// `refused` answers of the hostile endpoint were counted and reported with it, for exactly
/// `reasons`, none of the fallback's, which answered the retries; the store equals `honest`.
fn assert_refused(run: &Run, refused: u64, reasons: &[&str], honest: &Path) {
    assert_eq!(indexing::differences(&run.db, honest), vec![], "nothing of a bad answer was stored");
    let s = &run.summary;
    assert!(refused > 0, "the relay lied: {s:?}");
    assert_eq!(s.rpc_bad_answers, refused, "{s:?}");
    assert_eq!(s.bad_answers.len(), 1, "only the hostile endpoint gave bad answers: {s:?}");
    let bad = &s.bad_answers[0];
    assert_eq!((bad.endpoint.as_str(), bad.count), (redact_url(&run.hostile.url).as_str(), refused), "{bad:?}");
    let found: BTreeSet<&str> = bad.reasons.keys().copied().collect();
    assert_eq!(found, reasons.iter().copied().collect(), "{bad:?}");
    assert_eq!(bad.reasons.values().sum::<u64>(), refused, "{bad:?}");
    assert!(run.fallback.counts.requests.load(Ordering::Relaxed) > 0, "the fallback answered the retries");
}

/// The relay lied on the backfill path (answers over a range) and the live one (blocks by hash).
fn assert_both_paths(run: &Run) {
    let c = &run.hostile.counts;
    let (ranges, blocks) = (c.range_lies.load(Ordering::Relaxed), c.block_lies.load(Ordering::Relaxed));
    assert!(ranges > 0 && blocks > 0, "lies over ranges {ranges}, in blocks by hash {blocks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_outside_the_requested_range_are_refused_and_read_from_the_fallback() {
    let net = workload().await;
    let run = index_through(&net, "hostile.db", Plan::of(Lie::OutOfRange, u64::MAX), |_| {}).await;
    assert_both_paths(&run);
    assert_refused(&run, run.hostile.counts.lies(), &["out_of_range"], &honest_index(&net).await);

    // Replay and verify agree with the store; verify reads through the same relay and refuses
    // its lies as indexing does.
    let replayed = lcw_indexer::replay::replay(&run.db, false).unwrap();
    assert!(replayed.equal(), "{replayed:?}");
    let before = run.hostile.counts.lies();
    let mut profile = net.profile().clone();
    profile.rpc_url = run.hostile.url.clone();
    profile.rpc_fallback_urls = vec![run.fallback.url.clone()];
    let verified = lcw_indexer::verify::verify(&profile, &run.db, Duration::from_secs(10)).await.unwrap();
    assert!(verified.ok(), "{verified:?}");
    assert!(run.hostile.counts.lies() > before, "the relay lied to verify too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_addresses_or_events_not_asked_for_are_refused() {
    let net = workload().await;
    // Every answer with logs: the SessionManager discovery (one answer, filtered by event) too.
    let plan = Plan { lies: vec![Lie::ForeignTopic, Lie::ForeignAddress], every: 1, at_most: u64::MAX };
    let run = index_through(&net, "hostile.db", plan, |_| {}).await;
    let c = &run.hostile.counts;
    assert_eq!(c.event_lies.load(Ordering::Relaxed), 1, "the discovery's answer");
    assert!(c.range_lies.load(Ordering::Relaxed) > 0);
    assert_refused(&run, c.lies(), &["foreign_address", "foreign_topic"], &honest_index(&net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_or_reordered_logs_are_refused_and_the_indexer_never_stops() {
    let net = workload().await;
    let plan = Plan { lies: vec![Lie::Duplicate, Lie::Unordered], every: 2, at_most: u64::MAX };
    let run = index_through(&net, "hostile.db", plan, |_| {}).await;
    assert_both_paths(&run);
    assert_refused(&run, run.hostile.counts.lies(), &["duplicate", "unordered"], &honest_index(&net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_two_hashes_in_one_answer_is_refused() {
    let net = workload().await;
    let run = index_through(&net, "hostile.db", Plan::of(Lie::ConflictingHash, u64::MAX), |_| {}).await;
    assert_both_paths(&run);
    // Read by hash, a log with another hash is not that block's; over a range, it conflicts.
    let reasons = ["conflicting_hash", "wrong_block_hash"];
    assert_refused(&run, run.hostile.counts.lies(), &reasons, &honest_index(&net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_malformed_answers_are_refused() {
    let net = workload().await;
    let plan = Plan { lies: vec![Lie::Truncated, Lie::Pending], every: 2, at_most: u64::MAX };
    let run = index_through(&net, "hostile.db", plan, |_| {}).await;
    assert_both_paths(&run);
    assert_refused(&run, run.hostile.counts.lies(), &["malformed"], &honest_index(&net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_any_block_is_refused_before_it_is_read_whole() {
    let net = workload().await;
    let cap = 256 << 10;
    // A single block's answer padded to 4 MiB; the reader stops at 256 KiB.
    let run = index_through(&net, "hostile.db", Plan::of(Lie::Oversized(4 << 20), u64::MAX), |c| {
        c.backfill.max_block_bytes = cap;
        c.live.max_block_bytes = cap;
        c.backfill.initial_range = 1;
    })
    .await;
    assert!(run.hostile.counts.block_lies.load(Ordering::Relaxed) > 0);
    assert!(run.summary.bad_answers[0].last.contains(&format!("exceeds {cap} bytes")), "{:?}", run.summary);
    assert_refused(&run, run.hostile.counts.lies(), &["too_large"], &honest_index(&net).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_of_another_block_or_with_a_forged_parent_are_refused() {
    let net = workload().await;
    let honest = honest_index(&net).await;

    // The next block's header for the one asked: refused wherever a block is asked by number.
    let run = index_through(&net, "next.db", Plan::of(Lie::NextHeader, u64::MAX), |_| {}).await;
    assert!(run.hostile.counts.header_lies.load(Ordering::Relaxed) > 0);
    assert_refused(&run, run.hostile.counts.lies(), &["wrong_header"], &honest);

    // A forged parent matters only where a header must extend the stored tip (live): there it
    // does not link to the node's own block before it and is refused; elsewhere it is unused.
    let run = index_through(&net, "forged.db", Plan::of(Lie::ForgedParent, u64::MAX), |_| {}).await;
    let (lies, refused) = (run.hostile.counts.lies(), run.summary.rpc_bad_answers);
    assert!(refused > 0 && refused <= lies, "{refused} of {lies} forged headers refused");
    assert_eq!(run.summary.reorgs, 0, "a forged parent is not taken for a reorg");
    assert_refused(&run, refused, &["unlinked_header"], &honest);
}

/// A store an earlier version filled from an unchecked answer: a log moved above its range was
/// committed above the cursor, at the block and index of a real log still to come, where every
/// later run stopped on the primary key. Indexing deletes it at start and goes on to the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_stored_above_the_cursor_by_an_unchecked_answer_no_longer_stops_indexing() {
    use alloy::providers::Provider;
    use alloy::rpc::types::Filter;

    let net = workload().await;
    let db = net.dir.path().join("stale.db");
    indexing::until_head(net.profile(), &db).await;
    let (cursor, _) = indexing::cursor(&db).expect("a cursor");

    // More traffic, then a log of it as the earlier version would have stored it ahead of time:
    // the store's last log moved to that log's block and index.
    let options = SimulateOptions { jobs: 5, workers: 2, auto_complete: true, seed: 3, ..SimulateOptions::default() };
    simulate::run(net.profile(), &options, |_| {}).await.expect("simulation");
    net.provider().anvil_mine(Some(70), None).await.unwrap();
    let filter = Filter::new().address(net.profile().contracts.job_registry).from_block(cursor + 1);
    let future = net.provider().get_logs(&filter).await.unwrap();
    let target = future.first().expect("a log above the cursor");
    let (block, index) = (target.block_number.unwrap(), target.log_index.unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let moved = conn
        .execute(
            "INSERT INTO logs SELECT ?1, ?2, block_hash, block_timestamp, tx_hash, tx_index, address, topic0, \
             topic1, topic2, topic3, data, event, decode_error, job_id FROM logs \
             ORDER BY block_number DESC, log_index DESC LIMIT 1",
            [block as i64, index as i64],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(conn);

    let summary = indexing::until_head(net.profile(), &db).await;
    assert!(summary.indexed_block >= block, "{summary:?}");
    let honest = honest_index(&net).await;
    assert_eq!(indexing::differences(&db, &honest), vec![], "the moved log is gone, the real one stored");
}
