//! Two settlers with different keys on one store, racing for the same due jobs: a keeper, and a
//! worker's own settler. Each sees only its own live transactions, so for every job both plan the
//! release in the same head and the store's one-live-transaction-per-job trigger refuses the
//! slower one. That refusal is a skipped job, never a stopped settler.

use alloy::primitives::Address;

use super::*;

/// The worker with the most jobs in the store, once `n` completions are indexed.
async fn busiest_worker(db: &Path, n: u64) -> Address {
    let completed = || async {
        let Ok(store) = Store::open_readonly(db) else { return false };
        store
            .conn()
            .query_row("SELECT count(*) FROM jobs WHERE completed_at IS NOT NULL", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|c| c as u64 >= n)
    };
    assert!(wait_until(Duration::from_secs(30), completed).await, "{n} completions indexed");
    let store = Store::open_readonly(db).unwrap();
    let worker: Vec<u8> = store
        .conn()
        .query_row("SELECT worker FROM jobs GROUP BY worker ORDER BY count(*) DESC, worker LIMIT 1", [], |r| r.get(0))
        .unwrap();
    Address::from_slice(&worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_settlers_racing_for_the_same_jobs_both_keep_running_and_release_each_once() {
    let _serial = SERIAL.lock().await;
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let profile = net.profile().clone();
    // Every job completes within a few blocks, so both settlers find many due in the same head.
    let report = simulate::run(&profile, &traffic(30, 30, 17), |_| {}).await.expect("simulation");
    assert_eq!(report.completed, 30);
    let worker = busiest_worker(&db, 30).await;
    let keeper = settler(&net, &db, Mode::Keeper);
    let own = settler(&net, &db, Mode::Worker(worker));
    let released = all_released(&db, 30, Duration::from_secs(60)).await
        && wait_until(Duration::from_secs(30), || async { mined_releases(&db) >= 30 }).await;
    // A few more heads: a settler that lost the race would have stopped by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (keeper_running, own_running) = (keeper.running(), own.running());
    let keeper = keeper.finish_or_error().await;
    let own = own.finish_or_error().await;
    indexer.finish().await;
    assert!(keeper_running && own_running, "both settlers kept running: keeper {keeper:?}, worker's own {own:?}");
    assert!(released, "every job released and its receipt seen");
    let (keeper, own) = (keeper.unwrap(), own.unwrap());
    assert_eq!(keeper.reverted + own.reverted, 0, "nothing reverted: {keeper:?} {own:?}");
    assert_eq!(keeper.jobs_released + own.jobs_released, 30, "{keeper:?} {own:?}");
    assert!(keeper.live_elsewhere + own.live_elsewhere >= 1, "the settlers did race for a job: {keeper:?} {own:?}");
    let store = Store::open_readonly(&db).unwrap();
    let released_events: i64 =
        store.conn().query_row("SELECT count(*) FROM logs WHERE event = 'JobReleased'", [], |r| r.get(0)).unwrap();
    assert_eq!(released_events, 30, "each job released exactly once");
    let twice: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM (SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.status IN ('mined', 'reverted') GROUP BY oj.job_id HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(twice, 0, "no job in two mined settler transactions");
}
