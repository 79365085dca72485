//! The outbox's money path against a real anvil: fee ceilings through a base fee spike, one row
//! and one broadcast per block for a transaction the node refuses, a refused nonce between two
//! lanes repaired within two blocks, a gap left by a dropped row filled, the store's one-live-
//! transaction-per-job rule answered as `InFlight`, and a store of another chain refused.
//!
//! Blocks are mined by hand (automine off) so that every scenario counts blocks exactly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use lcw_chain::fees::GWEI;
use lcw_chain::outbox::{Intent, Lane, MAX_ATTEMPTS, Outbox};
use lcw_chain::{Chain, ChainError, FeeCap, Fees};
use lcw_schema::store::{Identity, Store};
use lcw_tests::TestNet;

const CAP: FeeCap = FeeCap { per_gas: 100 * GWEI, per_blob_gas: 100 * GWEI };
/// Where the test transactions go: a plain account, so every one of them succeeds.
const SINK: Address = Address::repeat_byte(0x5e);

struct Setup {
    net: TestNet,
    chain: Chain,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

/// A devnet with automine off, a store for it, and a chain client.
async fn setup() -> Setup {
    let net = TestNet::start().await;
    let p = net.provider();
    p.anvil_set_auto_mine(false).await.expect("automine off");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let identity = Identity { chain_id: net.profile().chain_id, contracts: net.profile().contracts, start_block: 0 };
    Store::open(&db, &identity).expect("store");
    let chain = Chain::connect(&net.profile().rpc_url, Duration::from_secs(10)).await.expect("chain");
    Setup { net, chain, db, _dir: dir }
}

/// A key with `balance` wei and nothing else.
async fn key(s: &Setup, balance: U256) -> PrivateKeySigner {
    let k = PrivateKeySigner::random();
    s.net.provider().anvil_set_balance(k.address(), balance).await.expect("anvil_setBalance");
    k
}

async fn lane(s: &Setup, k: &PrivateKeySigner, lane: Lane) -> Outbox {
    let mut o = Outbox::open(&s.db, k.clone(), s.chain.chain_id, lane).expect("outbox");
    o.reconcile(&s.chain).await.expect("reconcile");
    o
}

/// A transfer of nothing to [`SINK`] for `job`, with `gas` gas (a high limit makes it costly to
/// the balance check without costing anything when mined).
fn intent(kind: &'static str, job: u64, gas: u64) -> Intent {
    Intent {
        kind,
        to: SINK,
        data: Bytes::new(),
        value: U256::ZERO,
        gas_limit: gas,
        jobs: vec![job],
        target_block: 0,
        blob: None,
        cap: CAP,
    }
}

/// Mines one block (at `base_fee` when given) and lets every lane track it; returns the head.
async fn block(s: &Setup, lanes: &mut [&mut Outbox], base_fee: Option<u128>) -> u64 {
    let p = s.net.provider();
    if let Some(b) = base_fee {
        p.anvil_set_next_block_base_fee_per_gas(b).await.expect("base fee");
    }
    p.anvil_mine(Some(1), None).await.expect("anvil_mine");
    let head = s.chain.head().await.expect("head");
    let fees = s.chain.fees(GWEI).await.expect("fees");
    for l in lanes.iter_mut() {
        l.track(&s.chain, &head, Some(fees)).await.expect("track");
    }
    head.number
}

fn conn(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(db).expect("open store")
}

fn count(db: &Path, sql: &str) -> i64 {
    conn(db).query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// Nonce of `a` at the latest block.
async fn nonce(s: &Setup, a: Address) -> u64 {
    s.net.provider().get_transaction_count(a).await.expect("nonce")
}

async fn fees(s: &Setup) -> Fees {
    s.chain.fees(GWEI).await.expect("fees")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_transaction_for_a_job_comes_back_in_flight() {
    let s = setup().await;
    let k = key(&s, U256::from(10u128.pow(18))).await;
    let mut settler = lane(&s, &k, Lane::Settler).await;
    let mut operator = lane(&s, &k, Lane::Operator).await;
    let head = s.chain.head().await.unwrap().number;
    settler.submit(&s.chain, &intent("claim_timeout", 7, 21_000), fees(&s).await, head).await.expect("first");
    match operator.submit(&s.chain, &intent("claim_timeout", 7, 21_000), fees(&s).await, head).await {
        Err(ChainError::InFlight(m)) => assert!(m.contains("job 7"), "{m}"),
        other => panic!("expected InFlight, got {other:?}"),
    }
    assert_eq!(count(&s.db, "SELECT count(*) FROM outbox"), 1, "nothing of the refused intent is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_of_another_chain_is_refused_with_both_chain_ids() {
    let s = setup().await;
    let k = key(&s, U256::from(10u128.pow(18))).await;
    let mut worker = lane(&s, &k, Lane::Worker).await;
    let head = s.chain.head().await.unwrap().number;
    worker.submit(&s.chain, &intent("ack", 1, 21_000), fees(&s).await, head).await.expect("sent");
    let id = s.chain.chain_id;
    let e = Outbox::open(&s.db, k.clone(), 1, Lane::Worker).expect_err("a node of chain 1 is refused");
    let m = e.to_string();
    assert!(m.contains(&format!("chain {id}")) && m.contains("chain 1"), "{m}");
    let mut other = s.chain.clone();
    other.chain_id = 1;
    let m = worker.reconcile(&other).await.expect_err("reconcile against chain 1 is refused").to_string();
    assert!(m.contains(&format!("chain {id}")) && m.contains("chain 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_fee_spike_never_pays_above_the_ceiling_and_everything_lands_after_it() {
    let s = setup().await;
    let k = key(&s, U256::from(10u128.pow(20))).await;
    let mut worker = lane(&s, &k, Lane::Worker).await;
    let mut settler = lane(&s, &k, Lane::Settler).await;
    let head = s.chain.head().await.unwrap().number;
    for job in 1..=3 {
        worker.submit(&s.chain, &intent("ack", job, 21_000), fees(&s).await, head).await.expect("ack sent");
    }
    for job in 4..=5 {
        settler.submit(&s.chain, &intent("release", job, 21_000), fees(&s).await, head).await.expect("release sent");
    }
    // 20 blocks at 20,000 gwei: nothing can land, and nothing may offer more than 100 gwei.
    for i in 0..20 {
        block(&s, &mut [&mut worker, &mut settler], Some(20_000 * GWEI)).await;
        if i == 5 {
            // Sent during the spike: the node may refuse it for its fee; it keeps its row.
            let head = s.chain.head().await.unwrap().number;
            let _ = worker.submit(&s.chain, &intent("ack", 6, 21_000), fees(&s).await, head).await;
        }
    }
    assert_eq!(count(&s.db, "SELECT count(*) FROM outbox WHERE status = 'mined'"), 0, "nothing landed in the spike");
    // The spike ends.
    block(&s, &mut [&mut worker, &mut settler], Some(GWEI)).await;
    let mut blocks = 1;
    while count(&s.db, "SELECT count(*) FROM outbox WHERE status = 'sent'") > 0 && blocks < 30 {
        block(&s, &mut [&mut worker, &mut settler], None).await;
        blocks += 1;
    }
    let rows = count(&s.db, "SELECT count(*) FROM outbox WHERE kind IN ('ack', 'release')");
    let mined = count(&s.db, "SELECT count(*) FROM outbox WHERE kind IN ('ack', 'release') AND status = 'mined'");
    assert_eq!((rows, mined), (6, 6), "every transaction landed once the spike ended ({blocks} blocks)");
    let above = count(
        &s.db,
        &format!("SELECT count(*) FROM outbox_attempts WHERE CAST(max_fee_per_gas AS REAL) > {}", CAP.per_gas),
    );
    assert_eq!(above, 0, "no attempt offered more than the ceiling");
    let most =
        count(&s.db, "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM outbox_attempts GROUP BY outbox_id)");
    assert!(most <= i64::from(MAX_ATTEMPTS), "attempts per transaction: {most}");
    let mined_txs: Vec<Vec<u8>> = {
        let c = conn(&s.db);
        let mut st = c.prepare("SELECT mined_tx FROM outbox WHERE status = 'mined'").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let p = s.net.provider();
    for h in mined_txs {
        let hash = B256::from_slice(&h);
        let r = p.get_transaction_receipt(hash).await.unwrap().expect("receipt");
        assert!(r.effective_gas_price <= CAP.per_gas, "{hash} paid {} per gas", r.effective_gas_price);
        let t = p.get_transaction_by_hash(hash).await.unwrap().expect("transaction");
        use alloy::consensus::Transaction as _;
        assert!(t.max_fee_per_gas() <= CAP.per_gas, "{hash} offered {}", t.max_fee_per_gas());
    }
    eprintln!("spike: landed {blocks} block(s) after it ended; at most {most} attempts per transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_keeps_one_row_and_is_sent_at_most_once_per_block_until_it_can_pay() {
    let s = setup().await;
    let k = key(&s, U256::from(1_000u64)).await;
    let mut worker = lane(&s, &k, Lane::Worker).await;
    // Count every write of the refusal reason.
    conn(&s.db)
        .execute_batch(
            "CREATE TABLE test_refusal_writes (id INTEGER, refusal TEXT);
             CREATE TRIGGER test_refusal_writes AFTER UPDATE OF refusal ON outbox
             BEGIN INSERT INTO test_refusal_writes VALUES (NEW.id, NEW.refusal); END;",
        )
        .expect("trigger");
    let first = s.chain.head().await.unwrap().number;
    let mut refused_answers = 0;
    // The worker's loop, 10 times per block: an ack for job 1 unless one is in flight.
    for _ in 0..20 {
        for _ in 0..10 {
            if worker.live_jobs().unwrap().contains(&1) {
                continue;
            }
            let head = s.chain.head().await.unwrap().number;
            match worker.submit(&s.chain, &intent("ack", 1, 21_000), fees(&s).await, head).await {
                Err(ChainError::Rejected(_)) => refused_answers += 1,
                other => panic!("a wallet of 1000 wei cannot pay: {other:?}"),
            }
        }
        block(&s, &mut [&mut worker], None).await;
    }
    let last = s.chain.head().await.unwrap().number;
    let rows = count(&s.db, "SELECT count(*) FROM outbox");
    let attempts = count(&s.db, "SELECT count(*) FROM outbox_attempts");
    let broadcasts = count(&s.db, "SELECT coalesce(sum(broadcasts), 0) FROM outbox");
    let writes = count(&s.db, "SELECT count(*) FROM test_refusal_writes WHERE refusal IS NOT NULL");
    eprintln!(
        "refused for {} blocks: {rows} row(s), {attempts} attempt(s), {broadcasts} broadcast(s), {writes} reason \
         write(s), {refused_answers} refusal(s) returned",
        last - first
    );
    assert_eq!(rows, 1, "one row for one intent");
    assert_eq!(attempts, 1, "never re-signed: more fee cannot help a wallet that cannot pay");
    assert!(broadcasts as u64 <= last - first + 1, "{broadcasts} broadcasts in {} blocks", last - first);
    assert_eq!(writes, 1, "the reason is written once");
    assert_eq!(refused_answers, 1, "the caller hears of the refusal once");
    let reason: String = conn(&s.db).query_row("SELECT refusal FROM outbox", [], |r| r.get(0)).unwrap();
    assert!(reason.to_lowercase().contains("insufficient funds"), "{reason}");
    // Topped up: the next block's broadcast is taken and it is mined.
    s.net.provider().anvil_set_balance(k.address(), U256::from(10u128.pow(18))).await.unwrap();
    for _ in 0..3 {
        block(&s, &mut [&mut worker], None).await;
    }
    assert_eq!(count(&s.db, "SELECT count(*) FROM outbox WHERE status = 'mined' AND refusal IS NULL"), 1);
    assert_eq!(nonce(&s, k.address()).await, 1);
}

/// The balance covers the second lane's small transaction and a transfer to self, not the first
/// lane's large one: nonce N is refused, N+1 waits behind it in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_nonce_between_two_lanes_is_filled_within_two_blocks() {
    let s = setup().await;
    let k = key(&s, U256::from(GWEI * 1_000_000)).await; // 0.001
    let mut settler = lane(&s, &k, Lane::Settler).await;
    let mut worker = lane(&s, &k, Lane::Worker).await;
    let head = s.chain.head().await.unwrap().number;
    let f = Fees { max_fee: 10 * GWEI, tip: GWEI };
    // 1,000,000 gas at 10 gwei: 0.01, more than the wallet holds.
    let big = settler.submit(&s.chain, &intent("release", 1, 1_000_000), f, head).await;
    assert!(matches!(big, Err(ChainError::Rejected(_))), "{big:?}");
    let (ack, _) = worker.submit(&s.chain, &intent("ack", 2, 21_000), f, head).await.expect("ack accepted");
    let refused_at = head;
    let mut filled_at = None;
    for _ in 0..4 {
        let n = block(&s, &mut [&mut settler, &mut worker], None).await;
        if filled_at.is_none() && nonce(&s, k.address()).await >= 2 {
            filled_at = Some(n);
        }
    }
    let filled_at = filled_at.expect("nonce 0 filled and the ack behind it mined");
    eprintln!("two lanes: nonce 0 refused at head {refused_at}, filled and mined with nonce 1 in block {filled_at}");
    assert!(filled_at <= refused_at + 2, "filled in block {filled_at}, refused at head {refused_at}");
    let ack_status: String =
        conn(&s.db).query_row("SELECT status FROM outbox WHERE id = ?1", [ack], |r| r.get(0)).unwrap();
    assert_eq!(ack_status, "mined");
    // Both lanes go on: their next transactions are mined, and no nonce is left unused.
    let head = s.chain.head().await.unwrap().number;
    settler.submit(&s.chain, &intent("release", 3, 21_000), fees(&s).await, head).await.expect("release");
    worker.submit(&s.chain, &intent("ack", 4, 21_000), fees(&s).await, head).await.expect("ack");
    for _ in 0..2 {
        block(&s, &mut [&mut settler, &mut worker], None).await;
    }
    assert_eq!(count(&s.db, "SELECT count(*) FROM outbox WHERE status = 'sent'"), 0, "nothing left in flight");
    let held = count(&s.db, "SELECT count(DISTINCT nonce) FROM outbox WHERE status = 'mined'");
    assert_eq!(nonce(&s, k.address()).await, held as u64, "every nonce up to the chain's is a mined row");
    assert_eq!(nonce(&s, k.address()).await, 4);
}

/// A store written by an older lcw: a refused transaction was marked dropped while a later nonce
/// of the key was already signed. The nonce no row holds is found on the next head and its own
/// lane signs the dropped transaction again (its job went nowhere else); the lane behind it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_no_row_holds_is_signed_again_by_the_lane_that_dropped_it() {
    let s = setup().await;
    let k = key(&s, U256::from(GWEI * 1_000_000)).await;
    let mut worker = lane(&s, &k, Lane::Worker).await;
    let mut settler = lane(&s, &k, Lane::Settler).await;
    let head = s.chain.head().await.unwrap().number;
    let f = Fees { max_fee: 10 * GWEI, tip: GWEI };
    let refused = worker.submit(&s.chain, &intent("ack", 1, 1_000_000), f, head).await;
    assert!(matches!(refused, Err(ChainError::Rejected(_))), "{refused:?}");
    settler.submit(&s.chain, &intent("release", 2, 21_000), f, head).await.expect("release accepted");
    conn(&s.db).execute("UPDATE outbox SET status = 'dropped', note = 'refused by the node' WHERE id = 1", []).unwrap();
    s.net.provider().anvil_set_balance(k.address(), U256::from(10u128.pow(18))).await.unwrap();
    for _ in 0..3 {
        block(&s, &mut [&mut worker, &mut settler], None).await;
    }
    let (status, nonce_of_ack, note): (String, i64, Option<String>) = conn(&s.db)
        .query_row("SELECT status, nonce, note FROM outbox WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    assert_eq!((status.as_str(), nonce_of_ack), ("mined", 0), "{note:?}");
    assert_eq!(
        count(&s.db, "SELECT count(*) FROM outbox WHERE kind IN ('fill', 'cancel')"),
        0,
        "filled once, by the ack"
    );
    assert_eq!(count(&s.db, "SELECT count(*) FROM outbox WHERE status = 'mined'"), 2);
    assert_eq!(nonce(&s, k.address()).await, 2);
}

/// A release stuck behind a refusal (the wallet cannot pay) whose job is no longer releasable
/// when it could go out (here: a job that never was, so `releaseJobs` reverts): instead of
/// being broadcast to revert and burn gas, its nonce is taken by a transfer to self.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_release_that_would_now_revert_is_cancelled_instead_of_sent() {
    use alloy::sol_types::SolCall;
    let s = setup().await;
    let k = key(&s, U256::from(1_000u64)).await;
    let mut settler = lane(&s, &k, Lane::Settler).await;
    let release = lcw_schema::bindings::JobRegistry::releaseJobsCall { jobIds: vec![U256::from(999u64)] };
    let intent = Intent {
        to: s.net.profile().contracts.job_registry,
        data: release.abi_encode().into(),
        ..intent("release", 999, 200_000)
    };
    let head = s.chain.head().await.unwrap().number;
    match settler.submit(&s.chain, &intent, fees(&s).await, head).await {
        Err(ChainError::Rejected(_)) => {}
        other => panic!("a wallet of 1000 wei cannot pay: {other:?}"),
    }
    block(&s, &mut [&mut settler], None).await;
    // It can pay now; on its next broadcast it would be mined, and revert.
    s.net.provider().anvil_set_balance(k.address(), U256::from(10u128.pow(18))).await.unwrap();
    for _ in 0..3 {
        block(&s, &mut [&mut settler], None).await;
    }
    let statuses: Vec<(String, String)> = conn(&s.db)
        .prepare("SELECT kind, status FROM outbox ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        statuses,
        vec![("release".to_owned(), "dropped".to_owned()), ("cancel".to_owned(), "mined".to_owned())],
        "the release is given up and a transfer to self takes its nonce"
    );
    assert_eq!(nonce(&s, k.address()).await, 1, "its nonce is used once, by the transfer");
    let reverted = count(&s.db, "SELECT count(*) FROM outbox WHERE status = 'reverted'");
    assert_eq!(reverted, 0, "nothing was mined to revert");
}
