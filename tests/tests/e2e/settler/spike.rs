//! A keeper through a base-fee spike: the moment its first release is in the mempool, the base
//! fee jumps to 20,000 gwei for 18 blocks, far above what a release bounty pays for its gas. The
//! keeper must wait: never pay more gas than it collects, never offer a fee per gas above the cap
//! its bounties allow, and release everything once the spike ends.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use lcw_chain::fees::{GWEI, Wei};
use lcw_tests::events;

use super::*;

/// The spike's base fee.
const SPIKE: u128 = 20_000 * GWEI;
/// How many blocks it lasts.
const SPIKE_BLOCKS: usize = 18;
const JOBS: u64 = 60;
/// The dispute window: long enough for the simulated traffic to finish before the first release
/// falls due (the simulator's own transactions would wait out the spike too).
const SPIKE_WINDOW: u64 = 20;

/// Whether a release is sent and not mined yet.
fn release_pending(db: &Path) -> bool {
    let Ok(store) = Store::open_readonly(db) else { return false };
    store
        .conn()
        .query_row("SELECT count(*) FROM outbox WHERE kind = 'release' AND status = 'sent'", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|n| n > 0)
}

/// The latest block: (number, base fee).
async fn latest(p: &alloy::providers::DynProvider) -> (u64, u128) {
    let b = p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().expect("latest block");
    (b.header.number, u128::from(b.header.base_fee_per_gas.unwrap_or(0)))
}

/// Raises the base fee to [`SPIKE`] from the block after the moment a release is in the mempool,
/// for [`SPIKE_BLOCKS`] blocks, then puts it back. Returns the spike's last block.
async fn spike(p: &alloy::providers::DynProvider, db: &Path) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut seen, quiet) = loop {
        let (number, base) = latest(p).await;
        if release_pending(db) {
            break (number, base);
        }
        assert!(std::time::Instant::now() < deadline, "no release was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    p.anvil_set_next_block_base_fee_per_gas(SPIKE).await.expect("anvil_setNextBlockBaseFeePerGas");
    let mut spiked = Vec::new();
    while spiked.len() < SPIKE_BLOCKS {
        let head = p.get_block_number().await.unwrap();
        if head > seen {
            for n in seen + 1..=head {
                let b = p.get_block_by_number(n.into()).await.unwrap().expect("block");
                // A block mined before the next call lands still carries most of the spike.
                if u128::from(b.header.base_fee_per_gas.unwrap_or(0)) >= SPIKE / 2 {
                    spiked.push(n);
                }
            }
            seen = head;
            if spiked.len() < SPIKE_BLOCKS {
                p.anvil_set_next_block_base_fee_per_gas(SPIKE).await.expect("anvil_setNextBlockBaseFeePerGas");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The spike ends: the next block is back at the base fee from before it.
    p.anvil_set_next_block_base_fee_per_gas(quiet.max(1)).await.expect("anvil_setNextBlockBaseFeePerGas");
    *spiked.last().expect("spiked blocks")
}

/// One of the keeper's transactions as its outbox recorded it.
#[derive(Debug)]
struct Sent {
    id: i64,
    gas_limit: u64,
    status: String,
    mined_tx: Option<B256>,
    /// The bounties its jobs paid (every job is released by the keeper in the end).
    worth: U256,
    /// maxFeePerGas of every signed version.
    max_fees: Vec<u128>,
}

fn keeper_sent(db: &Path, keeper: Address) -> Vec<Sent> {
    let store = Store::open_readonly(db).unwrap();
    let c = store.conn();
    let mut s =
        c.prepare("SELECT id, gas_limit, status, mined_tx FROM outbox WHERE sender = ?1 AND kind = 'release'").unwrap();
    let rows: Vec<(i64, i64, String, Option<Vec<u8>>)> = s
        .query_map([keeper.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.into_iter()
        .map(|(id, gas_limit, status, mined_tx)| {
            let bounties: Vec<Option<String>> = c
                .prepare(
                    "SELECT j.keeper_bounty_wei FROM outbox_jobs oj JOIN jobs j ON j.job_id = oj.job_id
                     WHERE oj.outbox_id = ?1",
                )
                .unwrap()
                .query_map([id], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let worth = bounties
                .into_iter()
                .map(|b| b.expect("every job was released by the keeper").parse::<U256>().unwrap())
                .sum();
            let max_fees = c
                .prepare("SELECT max_fee_per_gas FROM outbox_attempts WHERE outbox_id = ?1 ORDER BY attempt")
                .unwrap()
                .query_map([id], |r| r.get::<_, String>(0))
                .unwrap()
                .map(|f| f.unwrap().parse().unwrap())
                .collect();
            Sent {
                id,
                gas_limit: gas_limit as u64,
                status,
                mined_tx: mined_tx.map(|h| B256::from_slice(&h)),
                worth,
                max_fees,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keeper_waits_out_a_base_fee_spike_and_never_pays_more_gas_than_its_bounties() {
    let _serial = SERIAL.lock().await;
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = SPIKE_WINDOW;
        o.deploy.ack_timeout = 300;
        o.deploy.completion_timeout = 300;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lcw.db");
    let indexer = Follower::start(net.profile(), &db);
    wait_store(&db).await;
    let keeper = settler(&net, &db, Mode::Keeper);
    let me = net.signer(Role::Keeper, 0).address();
    let operator_cap =
        SettleConfig::new(net.profile().clone(), db.clone(), Mode::Keeper, net.signer(Role::Keeper, 0)).fee_cap.per_gas;
    // Completions spread over about ten blocks, so releases fall due over as many.
    let profile = net.profile().clone();
    let report = simulate::run(&profile, &traffic(JOBS, 6, 23), |_| {}).await.expect("simulation");
    assert_eq!(report.completed, JOBS);
    let p = net.provider();
    let last_spiked = spike(&p, &db).await;
    assert!(all_released(&db, JOBS, Duration::from_secs(120)).await, "every job released once the spike ended");
    assert!(
        wait_until(Duration::from_secs(30), || async { mined_releases(&db) >= JOBS as i64 }).await,
        "every release receipt seen"
    );
    let summary = keeper.finish().await;
    indexer.finish().await;
    assert_eq!(summary.jobs_released, JOBS, "{summary:?}");
    assert_eq!(summary.reverted, 0, "{summary:?}");

    // Every figure first, then the verdicts: a failure shows what the keeper paid.
    let (mut paid, mut collected) = (0u128, U256::ZERO);
    let mut over_cap = Vec::new();
    let mut losses = Vec::new();
    let sent = keeper_sent(&db, me);
    for tx in &sent {
        // The most this transaction may pay per gas: the operator's cap, and its bounties over its
        // gas limit.
        let cap = operator_cap.min(u128::try_from(tx.worth / U256::from(tx.gas_limit)).unwrap());
        for (attempt, max_fee) in tx.max_fees.iter().enumerate().filter(|(_, f)| **f > cap) {
            over_cap.push(format!(
                "outbox #{} attempt {attempt} offered {} per gas, above its cap of {} ({} of bounties, {} gas)",
                tx.id,
                Wei(*max_fee),
                Wei(cap),
                Wei(u128::try_from(tx.worth).unwrap()),
                tx.gas_limit
            ));
        }
        let Some(hash) = tx.mined_tx.filter(|_| tx.status == "mined") else { continue };
        let receipt = p.get_transaction_receipt(hash).await.unwrap().expect("receipt of a mined release");
        let gas = u128::from(receipt.gas_used) * receipt.effective_gas_price;
        let bounty: U256 = events::<JobRegistry::KeeperBountyPaid>(&receipt)
            .into_iter()
            .filter(|e| e.keeper == me)
            .map(|e| e.amount)
            .sum();
        if U256::from(gas) > bounty {
            losses.push(format!("outbox #{} paid {gas} wei of gas for {bounty} wei of bounties", tx.id));
        }
        paid += gas;
        collected += bounty;
    }
    let collected = u128::try_from(collected).unwrap();
    eprintln!(
        "keeper through the spike: {} transactions, gas paid {} wei ({:.6} LCAI), bounties {} wei ({:.6} LCAI)",
        sent.len(),
        paid,
        paid as f64 / 1e18,
        collected,
        collected as f64 / 1e18
    );
    assert!(over_cap.is_empty(), "fees above the cap: {over_cap:#?}");
    assert!(losses.is_empty(), "transactions that paid more than they collected: {losses:#?}");
    assert!(paid <= collected, "the keeper paid {paid} wei of gas for {collected} wei of bounties");
    // The spike met releases: some job due before its end was released after it.
    let store = Store::open_readonly(&db).unwrap();
    let spike_end_ts: i64 = store
        .conn()
        .query_row("SELECT timestamp FROM blocks WHERE number = ?1", [last_spiked as i64], |r| r.get(0))
        .unwrap();
    let waited: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM jobs WHERE completed_at + ?1 <= ?2 AND released_block > ?3",
            [SPIKE_WINDOW as i64, spike_end_ts, last_spiked as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert!(waited > 0, "some release due during the spike waited for its end");
}
