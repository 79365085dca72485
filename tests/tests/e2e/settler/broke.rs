//! A keeper whose wallet cannot pay for gas: it signs nothing while its balance is short (no
//! transaction the node would refuse, no nonce spent on it, no outbox row per head), says why,
//! and releases every job once the wallet is topped up.

use alloy::primitives::U256;
use alloy::providers::ext::AnvilApi;

use super::*;

const JOBS: u64 = 24;

fn outbox_rows(db: &Path) -> i64 {
    let Ok(store) = Store::open_readonly(db) else { return 0 };
    store.conn().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keeper_with_an_empty_wallet_signs_nothing_until_it_is_topped_up() {
    let _serial = SERIAL.lock().await;
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let me = net.signer(Role::Keeper, 0).address();
    let p = net.provider();
    p.anvil_set_balance(me, U256::from(1_000u64)).await.expect("anvil_setBalance");
    let keeper = settler(&net, &db, Mode::Keeper);

    let profile = net.profile().clone();
    let report = simulate::run(&profile, &traffic(JOBS, 4, 41), |_| {}).await.expect("simulation");
    assert_eq!(report.completed, JOBS);
    // Every job due, and a dozen heads more for the keeper to act on them if it would.
    let due = || async {
        let r = releases(&db);
        r.len() as u64 == JOBS && r.values().all(|(completed, _)| completed.is_some())
    };
    assert!(wait_until(Duration::from_secs(60), due).await, "every completion indexed");
    tokio::time::sleep(Duration::from_secs(WINDOW + 12)).await;
    let while_broke = outbox_rows(&db);
    let released_while_broke = releases(&db).values().filter(|(_, b)| b.is_some()).count();

    p.anvil_set_balance(me, U256::from(10u64).pow(U256::from(20u64))).await.expect("anvil_setBalance");
    let released = all_released(&db, JOBS, Duration::from_secs(60)).await;
    wait_until(Duration::from_secs(30), || async { mined_releases(&db) >= JOBS as i64 }).await;
    let summary = keeper.finish().await;
    indexer.finish().await;

    assert_eq!(released_while_broke, 0, "nothing released with 1,000 wei");
    assert_eq!(
        while_broke, 0,
        "no transaction signed while the wallet could not pay for it: {while_broke} outbox rows"
    );
    assert!(summary.no_funds > 0, "the keeper said why it waited: {summary:?}");
    assert!(released, "every job released once the wallet was topped up: {summary:?}");
    assert_eq!(summary.reverted, 0, "{summary:?}");
    assert_eq!(summary.jobs_released, JOBS, "{summary:?}");
}
