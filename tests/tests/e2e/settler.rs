//! The settler against a real anvil with 1 s blocks: every job released in the first block whose
//! timestamp reaches its releasableAt (or, after two blocks shared a second, the first one the
//! settler can target without risking a revert), through a dispute-window change, a competing keeper, a
//! restart with transactions in the mempool, a reorg that removes a mined release (sent again, or
//! cancelled at its nonce when a competitor released the jobs on the new branch), and a stuck
//! transaction replaced; two settlers racing for the same jobs on one store (`race`); a keeper
//! through a base-fee spike (`spike`); a keeper with an empty wallet (`broke`). (`lcw exit` is
//! tested with the binary in cli/tests/cli/exit.rs; the settler's decisions have unit tests in
//! settler/src/plan.rs.)

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::anvil::ReorgOptions;
use lcw_contracts::simulate::{self, SimulateOptions};
use lcw_schema::bindings::{AIConfig, JobRegistry};
use lcw_schema::profile::Role;
use lcw_schema::rules::schedule::ChainClock;
use lcw_schema::store::Store;
use lcw_settler::settle::{Mode, SettleConfig, SettleSummary};
use lcw_tests::indexing::Follower;
use lcw_tests::{TestNet, wait_until};

mod broke;
mod race;
mod spike;

const WINDOW: u64 = 4;

/// The scenarios run one at a time: each measures block-exact timing on a 1 s chain, and two
/// devnets with simulators and settlers on two cores would measure the machine instead.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn devnet() -> TestNet {
    TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = WINDOW;
        o.deploy.ack_timeout = 300;
        o.deploy.completion_timeout = 300;
    })
    .await
}

struct Settler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<lcw_settler::SettlerResult<SettleSummary>>,
}

fn settler(net: &TestNet, db: &Path, mode: Mode) -> Settler {
    settler_with(net, db, mode, |_| {})
}

fn settler_with(net: &TestNet, db: &Path, mode: Mode, f: impl FnOnce(&mut SettleConfig)) -> Settler {
    let signer = match mode {
        Mode::Keeper => net.signer(Role::Keeper, 0),
        Mode::Worker(w) => {
            let a = net.profile().accounts.iter().find(|a| a.address == w).expect("worker dev key");
            alloy::signers::local::PrivateKeySigner::from_bytes(&a.private_key).unwrap()
        }
    };
    let mut config = SettleConfig::new(net.profile().clone(), db.to_owned(), mode, signer);
    config.poll_interval = Duration::from_millis(50);
    f(&mut config);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(lcw_settler::settle::run(config, rx));
    Settler { stop, task }
}

impl Settler {
    /// Whether `run` is still going (it has not returned, with an error or otherwise).
    fn running(&self) -> bool {
        !self.task.is_finished()
    }

    async fn finish(self) -> SettleSummary {
        self.finish_or_error().await.expect("settler ran cleanly")
    }

    /// Stops it and returns what `run` returned (an error if it had stopped on one).
    async fn finish_or_error(self) -> lcw_settler::SettlerResult<SettleSummary> {
        let _ = self.stop.send(true);
        self.task.await.expect("settler task")
    }
}

async fn wait_store(db: &Path) {
    assert!(wait_until(Duration::from_secs(60), || async { Store::open_readonly(db).is_ok() }).await, "store created");
}

/// Simulated traffic: `jobs` jobs over 3 workers, a few submissions per block so completions
/// spread over many blocks; no releases (that is the settler's job).
fn traffic(jobs: u64, per_block: usize, seed: u64) -> SimulateOptions {
    SimulateOptions {
        jobs,
        workers: 3,
        auto_complete: true,
        auto_release: false,
        max_per_block: per_block,
        seed,
        ..SimulateOptions::default()
    }
}

/// Per job: (completed_at, released_block); the completion may not be indexed yet.
fn releases(db: &Path) -> HashMap<u64, (Option<u64>, Option<u64>)> {
    let store = Store::open_readonly(db).unwrap();
    let mut stmt = store.conn().prepare("SELECT job_id, completed_at, released_block FROM jobs").unwrap();
    stmt.query_map([], |r| {
        let completed = r.get::<_, Option<i64>>(1)?.map(|t| t as u64);
        Ok((r.get::<_, i64>(0)? as u64, (completed, r.get::<_, Option<i64>>(2)?.map(|b| b as u64))))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Where each release landed against the two blocks that bound it.
struct Landing {
    job: u64,
    released: u64,
    /// The first block whose timestamp reaches the job's releasableAt, with the window in force
    /// before it (a DisputeParamsUpdated in block C applies from block C + 1 on for the
    /// settler): nothing can land earlier without reverting.
    first: u64,
    /// The first block a settler could target without risking a revert: the block after the
    /// first head H whose [`ChainClock`] guarantees the next block a timestamp reaching
    /// releasableAt. It is `first` on a chain whose blocks are at least a second apart; after
    /// two blocks shared a second (a loaded anvil does that), the next block may too, and a
    /// release waits for a head that has reached its time (`ChainClock::min_interval`).
    safe: u64,
}

/// The landing of every released job, for a settler that started at head `from`, and the blocks
/// after it that shared a second with their parent.
fn landings(db: &Path, from: u64) -> (Vec<Landing>, Vec<u64>) {
    let store = Store::open_readonly(db).unwrap();
    let blocks: Vec<(u64, u64)> = {
        let mut s =
            store.conn().prepare("SELECT number, timestamp FROM blocks WHERE number >= ?1 ORDER BY number").unwrap();
        s.query_map([from as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let same_second: Vec<u64> =
        blocks.windows(2).filter(|w| w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1).map(|w| w[1].0).collect();
    // For each head, the lowest timestamp the settler's clock promised the block after it.
    let mut clock = ChainClock::default();
    let promised: Vec<(u64, u64)> = blocks
        .iter()
        .map(|(n, ts)| {
            clock.observe(*n, *ts);
            (*n + 1, clock.next_ts())
        })
        .collect();
    let windows = lcw_schema::store::ledger::config_history(store.conn(), "disputeWindow").unwrap();
    let window_before = |b: u64| -> u64 {
        windows.iter().rfind(|(block, _, _)| *block < b).map(|(_, _, v)| v.parse().unwrap()).unwrap_or(WINDOW)
    };
    let mut out = Vec::new();
    for (job, (completed_at, released)) in releases(db) {
        let Some(released) = released else { continue };
        let completed_at = completed_at.expect("a released job has a completion");
        let first = blocks
            .iter()
            .find(|(n, ts)| *ts >= completed_at + window_before(*n))
            .map(|(n, _)| *n)
            .expect("a block after the window");
        let safe = promised
            .iter()
            .find(|(target, ts)| *target >= first && *ts >= completed_at + window_before(*target))
            .map(|(target, _)| *target)
            .expect("a head whose next block reaches the window");
        out.push(Landing { job, released, first, safe });
    }
    (out, same_second)
}

fn outbox_counts(db: &Path) -> HashMap<String, u64> {
    let store = Store::open_readonly(db).unwrap();
    let mut s = store.conn().prepare("SELECT status, count(*) FROM outbox GROUP BY status").unwrap();
    s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Jobs in release transactions whose receipt the outbox has seen (the settler counts a release
/// then, which can be a head after the indexer committed it).
fn mined_releases(db: &Path) -> i64 {
    let Ok(store) = Store::open_readonly(db) else { return 0 };
    store
        .conn()
        .query_row(
            "SELECT count(*) FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.kind = 'release' AND o.status = 'mined'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
}

async fn all_released(db: &Path, n: u64, timeout: Duration) -> bool {
    wait_until(timeout, || async {
        let r = releases(db);
        r.len() as u64 == n && r.values().all(|(_, b)| b.is_some())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_job_lands_in_the_first_block_after_its_window_through_a_window_change() {
    let _serial = SERIAL.lock().await;
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let started = net.provider().get_block_number().await.unwrap();
    let keeper = settler(&net, &db, Mode::Keeper);
    let profile = net.profile().clone();
    let options = traffic(240, 8, 7);
    let sim = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(simulate::run(&profile, &options, |_| {}))
    });
    // Mid-run, governance lengthens the window: every pending job is re-timed at once.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let owner = net.wallet(net.signer(Role::Deployer, 0));
    let ai = AIConfig::new(net.profile().contracts.ai_config, &owner);
    ai.setDisputeWindow(U256::from(WINDOW + 3)).send().await.unwrap().get_receipt().await.unwrap();
    let report = sim.await.unwrap().expect("simulation");
    assert_eq!(report.completed, 240);
    assert!(all_released(&db, 240, Duration::from_secs(90)).await, "every job released");
    wait_until(Duration::from_secs(30), || async { mined_releases(&db) >= 240 }).await;
    let summary = keeper.finish().await;
    indexer.finish().await;
    let (landings, same_second) = landings(&db, started);
    assert_eq!(landings.len(), 240);
    let late: Vec<_> = landings
        .iter()
        .filter(|l| l.released < l.first || l.released > l.safe)
        .map(|l| (l.job, l.released as i64 - l.first as i64, l.safe - l.first))
        .collect();
    assert!(
        late.is_empty(),
        "jobs not released in the first block they could safely land in (job, blocks after the first \
         possible one, blocks of those a settler must wait): {late:?}; blocks that shared a second \
         with their parent: {same_second:?}"
    );
    assert_eq!(summary.reverted, 0, "no settler transaction reverted: {summary:?}");
    assert_eq!(outbox_counts(&db).get("reverted"), None);
    assert_eq!(summary.jobs_released, 240);
    let store = Store::open_readonly(&db).unwrap();
    let windows = lcw_schema::store::ledger::config_history(store.conn(), "disputeWindow").unwrap();
    assert!(windows.iter().any(|(_, _, v)| v == &(WINDOW + 3).to_string()), "the window change was indexed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_with_transactions_in_flight_and_a_competing_keeper_release_each_job_once() {
    let _serial = SERIAL.lock().await;
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let profile = net.profile().clone();
    let report = simulate::run(&profile, &traffic(60, 6, 11), |_| {}).await.expect("simulation");
    assert_eq!(report.completed, 60);
    // The settler starts, and is killed as soon as it has a transaction in the mempool.
    let first = settler(&net, &db, Mode::Keeper);
    assert!(
        wait_until(Duration::from_secs(30), || async { outbox_counts(&db).get("sent").copied().unwrap_or(0) > 0 })
            .await,
        "the settler sent a release"
    );
    first.task.abort();
    let _ = first.task.await;
    // While it is down, another keeper releases every due job it can find that the settler has
    // not already sent.
    let in_flight: Vec<u64> = {
        let store = Store::open_readonly(&db).unwrap();
        let mut s = store.conn().prepare("SELECT job_id FROM outbox_jobs").unwrap();
        s.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(|r| r.unwrap() as u64).collect()
    };
    let competitor = net.wallet(net.signer(Role::Consumer, 0));
    let jr = JobRegistry::new(net.profile().contracts.job_registry, &competitor);
    tokio::time::sleep(Duration::from_secs(WINDOW + 2)).await;
    let mut theirs = Vec::new();
    for job in 1..=60u64 {
        if theirs.len() == 10 {
            break;
        }
        if in_flight.contains(&job) {
            continue;
        }
        if let Ok(pending) = jr.releaseJob(U256::from(job)).send().await
            && pending.get_receipt().await.map(|r| r.status()).unwrap_or(false)
        {
            theirs.push(job);
        }
    }
    // Restarted, it re-broadcasts what it had signed, skips what the competitor released, and
    // releases the rest.
    let second = settler(&net, &db, Mode::Keeper);
    assert!(all_released(&db, 60, Duration::from_secs(60)).await, "every job released");
    let summary = second.finish().await;
    indexer.finish().await;
    assert_eq!(summary.reverted, 0, "{summary:?}");
    let store = Store::open_readonly(&db).unwrap();
    let released_events: i64 =
        store.conn().query_row("SELECT count(*) FROM logs WHERE event = 'JobReleased'", [], |r| r.get(0)).unwrap();
    assert_eq!(released_events, 60, "each job released exactly once");
    let twice: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM (SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.status = 'mined' GROUP BY oj.job_id HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "no job in two mined settler transactions");
    let by_competitor: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.status = 'mined' AND oj.job_id IN (SELECT value FROM json_each(?1))",
            [serde_json::to_string(&theirs).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(by_competitor, 0, "the settler never released the competitor's jobs");
    assert!(!theirs.is_empty(), "the competitor released some jobs first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reorged_release_is_sent_again_and_a_stuck_one_is_replaced() {
    let _serial = SERIAL.lock().await;
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let profile = net.profile().clone();
    simulate::run(&profile, &traffic(20, 20, 3), |_| {}).await.expect("simulation");
    let keeper = settler(&net, &db, Mode::Keeper);
    // Reorg: wait for the release to be mined, then drop its block.
    let mined_block = || async {
        let store = Store::open_readonly(&db).ok()?;
        store
            .conn()
            .query_row(
                "SELECT id, mined_block, mined_hash FROM outbox WHERE status = 'mined' ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, Vec<u8>>(2)?)),
            )
            .ok()
    };
    assert!(wait_until(Duration::from_secs(30), || async { mined_block().await.is_some() }).await, "release mined");
    let (first, block, first_hash) = mined_block().await.unwrap();
    let p = net.provider();
    let head = p.get_block_number().await.unwrap();
    p.anvil_reorg(ReorgOptions { depth: head - block + 1, tx_block_pairs: vec![] }).await.expect("anvil_reorg");
    assert!(all_released(&db, 20, Duration::from_secs(60)).await, "released again after the reorg");
    // The reorged-out release either goes out again (its call still succeeds on the new branch)
    // or, when it would now revert (anvil re-mines the branch from the ancestor's timestamp, so
    // the windows have not elapsed yet), its nonce goes to a transfer to self and the jobs are
    // released by a later transaction. Either way nothing reverts and each job is released once.
    // The indexer can see the outcome a head before the settler reads its receipt.
    let outcome = || async {
        let store = Store::open_readonly(&db).ok()?;
        let (status, mined, hash, note): (String, Option<i64>, Option<Vec<u8>>, Option<String>) = store
            .conn()
            .query_row("SELECT status, mined_block, mined_hash, note FROM outbox WHERE id = ?1", [first], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .ok()?;
        let cancel_mined: bool = store
            .conn()
            .query_row(
                "SELECT count(*) > 0 FROM outbox WHERE kind = 'cancel' AND status = 'mined'
                 AND nonce = (SELECT nonce FROM outbox WHERE id = ?1)",
                [first],
                |r| r.get(0),
            )
            .ok()?;
        match status.as_str() {
            // Still the abandoned block: the settler has not seen the reorg yet.
            "mined" if hash.as_deref() == Some(first_hash.as_slice()) => None,
            "mined" => Some(format!("re-mined at {}", mined? as u64 >= block)),
            "reverted" => Some(format!("re-sent and reverted in block {mined:?}")),
            "dropped" if cancel_mined => Some(format!("cancelled: {}", note.unwrap_or_default())),
            _ => None,
        }
    };
    assert!(
        wait_until(Duration::from_secs(30), || async { outcome().await.is_some() }).await,
        "the reorged-out release is mined again, or cancelled at its nonce"
    );
    let outcome = outcome().await.unwrap();
    // A node may also put the reorged-out transaction back in a new-branch block whose clock is
    // still before the window (anvil re-mines from the ancestor's timestamp): it reverts, and the
    // jobs are released by a later transaction, once.
    let node_reincluded = outcome.starts_with("re-sent and reverted");
    assert!(outcome == "re-mined at true" || outcome.contains("reorged out of block") || node_reincluded, "{outcome}");

    // Stuck: more jobs, and as soon as the settler's release is in the mempool the base fee
    // jumps far above its fee cap.
    simulate::run(&profile, &traffic(10, 10, 5), |_| {}).await.expect("simulation");
    let live = || async {
        let store = Store::open_readonly(&db).ok()?;
        store
            .conn()
            .query_row("SELECT id FROM outbox WHERE status = 'sent' AND kind = 'release' LIMIT 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .ok()
    };
    assert!(wait_until(Duration::from_secs(30), || async { live().await.is_some() }).await, "a release was sent");
    let id = live().await.unwrap();
    p.anvil_set_next_block_base_fee_per_gas(500_000_000_000u128).await.expect("base fee");
    assert!(all_released(&db, 30, Duration::from_secs(60)).await, "released after the replacement");
    let settled = || async {
        let store = Store::open_readonly(&db).ok()?;
        store
            .conn()
            .query_row("SELECT 1 FROM outbox WHERE id = ?1 AND status <> 'sent'", [id], |r| r.get::<_, i64>(0))
            .ok()
    };
    // As above, the settler may read the receipt a head after the indexer saw the release.
    wait_until(Duration::from_secs(30), || async { settled().await.is_some() && mined_releases(&db) >= 30 }).await;
    let summary = keeper.finish().await;
    indexer.finish().await;
    let store = Store::open_readonly(&db).unwrap();
    let attempts: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM outbox_attempts WHERE outbox_id = ?1", [id], |r| r.get(0))
        .unwrap();
    let status: String = store.conn().query_row("SELECT status FROM outbox WHERE id = ?1", [id], |r| r.get(0)).unwrap();
    assert!(attempts >= 2, "the stuck transaction was replaced with higher fees ({attempts} attempts)");
    let note: Option<String> =
        store.conn().query_row("SELECT note FROM outbox WHERE id = ?1", [id], |r| r.get(0)).unwrap();
    assert_eq!(status, "mined", "the replaced release ({note:?})");
    assert_eq!(summary.reverted, u64::from(node_reincluded), "{summary:?}");
    assert!(summary.reorged >= 1 && summary.bumped >= 1, "{summary:?}");
    assert_eq!(summary.jobs_released, 30, "each job counted once across the reorg: {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reorged_release_that_would_now_revert_gives_its_nonce_to_a_transfer_to_self() {
    let _serial = SERIAL.lock().await;
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let profile = net.profile().clone();
    simulate::run(&profile, &traffic(12, 12, 13), |_| {}).await.expect("simulation");
    let p = net.provider();
    let snapshot = p.anvil_snapshot().await.expect("evm_snapshot");
    let keeper = settler(&net, &db, Mode::Keeper);
    let mined = || async {
        let store = Store::open_readonly(&db).ok()?;
        store
            .conn()
            .query_row(
                "SELECT id, nonce, mined_block FROM outbox WHERE status = 'mined' AND kind = 'release' ORDER BY id
                 LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)? as u64)),
            )
            .ok()
    };
    assert!(wait_until(Duration::from_secs(30), || async { mined().await.is_some() }).await, "release mined");
    let (first, nonce, block) = mined().await.unwrap();
    let released_at = p.get_block_by_number(block.into()).await.unwrap().expect("the release block").header.timestamp;
    // A new branch from before the release, on which another keeper releases those jobs first:
    // the settler's transaction would now revert, so it must not go out again.
    assert!(p.anvil_revert(snapshot).await.expect("evm_revert"), "reverted to the snapshot");
    p.anvil_set_next_block_timestamp(released_at).await.expect("next timestamp");
    let ids: Vec<U256> = (1..=12u64).map(U256::from).collect();
    let competitor = net.wallet(net.signer(Role::Consumer, 0));
    let jr = JobRegistry::new(net.profile().contracts.job_registry, &competitor);
    let receipt = jr.releaseJobs(ids).send().await.unwrap().get_receipt().await.unwrap();
    assert!(receipt.status(), "the competitor released on the new branch");
    let cancelled = || async {
        let store = Store::open_readonly(&db).ok()?;
        let note: String = store
            .conn()
            .query_row("SELECT note FROM outbox WHERE id = ?1 AND status = 'dropped'", [first], |r| r.get(0))
            .ok()?;
        let cancel: i64 = store
            .conn()
            .query_row(
                "SELECT id FROM outbox WHERE kind = 'cancel' AND nonce = ?1 AND status = 'mined'",
                [nonce],
                |r| r.get(0),
            )
            .ok()?;
        Some((note, cancel))
    };
    assert!(
        wait_until(Duration::from_secs(30), || async { cancelled().await.is_some() }).await,
        "the reorged-out release is dropped and its nonce mined as a transfer to self"
    );
    let (note, _) = cancelled().await.unwrap();
    assert!(note.contains(&format!("reorged out of block {block}")) && note.contains("would now revert"), "{note}");
    let summary = keeper.finish().await;
    indexer.finish().await;
    assert_eq!(summary.reverted, 0, "nothing reverted: {summary:?}");
    assert_eq!(summary.jobs_released, 0, "the competitor released them all on the canonical branch: {summary:?}");
    assert!(summary.reorged >= 1 && summary.dropped >= 1, "{summary:?}");
    let store = Store::open_readonly(&db).unwrap();
    let released: i64 =
        store.conn().query_row("SELECT count(*) FROM jobs WHERE state = 'RELEASED'", [], |r| r.get(0)).unwrap();
    assert_eq!(released, 12, "the store follows the new branch");
}
