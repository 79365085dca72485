//! `lcw verify`: proves the store equals the chain at the store's last block: no gap in the
//! covered ranges, the number of logs of every range equals what `eth_getLogs` returns for the
//! watched addresses (the profile's contracts and the SessionManagers AIConfig published,
//! discovered from the chain by the rule indexing follows, see [`crate::watch`]; the store must
//! know the same managers), every worker's derived active-job count, balance and stake equal
//! `getActiveJobCount`, `workerBalance` and `getWorkerStake`, the dispute window equals
//! `getDisputeWindow`, and the current SessionManager equals `getSessionManagerAddress`.

use std::path::Path;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use futures::stream::{self, StreamExt};
use lcw_schema::bindings::{AIConfig, JobRegistry, WorkerRegistry};
use lcw_schema::profile::Profile;
use lcw_schema::store::raw::{Cursor, RangeRow, RawLog};
use lcw_schema::store::{Store, StoreError, ledger, sortition};
use serde::Serialize;

use crate::answer::LogsAsked;
use crate::backfill::BackfillOptions;
use crate::rpc::{Rpc, RpcError};
use crate::watch::{self, Watched};
use crate::{IndexerError, IndexerResult};

/// One failed comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// Which check.
    pub check: String,
    /// What differs, with both values.
    pub detail: String,
}

/// The verification result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The block everything was compared at (the store's cursor).
    pub block: u64,
    /// Ranges checked.
    pub ranges: u64,
    /// Logs compared.
    pub logs: u64,
    /// Workers compared.
    pub workers: u64,
    /// Everything that differs (empty: the store equals the chain).
    pub differences: Vec<Difference>,
}

impl VerifyReport {
    /// True when nothing differs.
    pub fn ok(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Counts the logs of the watched contracts in `from..=to`, splitting refused ranges. Each
/// answer is checked as indexing checks it ([`crate::read::logs`]): a wrong one is asked of the
/// next endpoint rather than reported as a difference.
async fn chain_count(rpc: &Rpc, watched: &Watched, from: u64, to: u64) -> Result<u64, RpcError> {
    let options = BackfillOptions::default();
    let mut todo = vec![(from, to)];
    let mut total = 0;
    while let Some((a, b)) = todo.pop() {
        let asked = LogsAsked::range(a, b, watched.addresses_until(b));
        let split_above = (a < b).then_some(options.max_response_bytes);
        match crate::read::logs(rpc, &asked, split_above, options.max_block_bytes).await {
            Ok(logs) => total += logs.iter().filter(|l| watched.keeps(&l.log.address, l.block_number)).count() as u64,
            Err(RpcError::RangeTooLarge { .. }) if a < b => {
                let mid = a + (b - a) / 2;
                todo.push((mid + 1, b));
                todo.push((a, mid));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Verifies the store at `db` against the node of `profile`.
pub async fn verify(profile: &Profile, db: &Path, rpc_timeout: Duration) -> IndexerResult<VerifyReport> {
    let store = Store::open_readonly(db)?;
    let identity = store.identity()?.ok_or_else(|| StoreError::Missing(db.to_owned()))?;
    if identity.contracts != profile.contracts || identity.chain_id != profile.chain_id {
        return Err(IndexerError::Internal(format!(
            "store {} belongs to chain {} (JobRegistry {}), not to the `{}` profile (chain {}, JobRegistry {})",
            db.display(),
            identity.chain_id,
            identity.contracts.job_registry,
            profile.name,
            profile.chain_id,
            profile.contracts.job_registry
        )));
    }
    let rpc = Rpc::for_profile(profile, rpc_timeout)?;
    profile.check_chain_id(rpc.chain_id().await?)?;
    let cursor = Cursor::get(store.conn())?.ok_or_else(|| StoreError::Missing(db.to_owned()))?;
    let block = cursor.block_number;
    let mut differences = Vec::new();
    let mut diff = |check: &str, detail: String| differences.push(Difference { check: check.into(), detail });

    match crate::read::header(&rpc, block).await? {
        Some(h) if h.hash == cursor.block_hash => {}
        Some(h) => diff("cursor", format!("block {block}: store has hash {}, the node {}", cursor.block_hash, h.hash)),
        None => diff("cursor", format!("the node has no block {block}")),
    }

    // 1. The covered ranges are contiguous from the start block to the cursor.
    let ranges = RangeRow::all(store.conn())?;
    let mut expected = identity.start_block;
    for r in &ranges {
        if r.from_block != expected {
            diff(
                "ranges",
                format!(
                    "gap or overlap: expected a range from block {expected}, found {}..{}",
                    r.from_block, r.to_block
                ),
            );
        }
        expected = r.to_block + 1;
    }
    if expected != block + 1 && !ranges.is_empty() {
        diff("ranges", format!("ranges end at block {}, the cursor is at {block}", expected - 1));
    }

    // 2. The SessionManagers the chain published are those the store follows, and log counts
    //    per range (grouped up to ~10k logs per request) equal eth_getLogs for them.
    let mut watched = Watched::new(profile.contracts, sortition::manager_logs_from(store.conn())?);
    watch::discover(&rpc, &mut watched, identity.start_block, block, &BackfillOptions::default()).await?;
    let stored = Watched::load(store.conn(), profile.contracts)?;
    let (chain_managers, store_managers): (Vec<_>, Vec<_>) =
        (watched.managers().collect(), stored.managers().collect());
    if chain_managers != store_managers {
        diff(
            "sessionManagers",
            format!("store follows {store_managers:?} (address, first block), AIConfig published {chain_managers:?}"),
        );
    }
    let mut groups: Vec<(u64, u64, u64)> = Vec::new();
    for r in &ranges {
        match groups.last_mut() {
            Some(g) if g.2 + r.log_count <= 10_000 && g.1 + 1 == r.from_block => {
                g.1 = r.to_block;
                g.2 += r.log_count;
            }
            _ => groups.push((r.from_block, r.to_block, r.log_count)),
        }
    }
    let results: Vec<(u64, u64, u64, Result<u64, RpcError>)> = stream::iter(groups.iter().copied())
        .map(|(a, b, _)| {
            let rpc = &rpc;
            let watched = &watched;
            async move { (a, b, 0, chain_count(rpc, watched, a, b).await) }
        })
        .buffered(4)
        .collect()
        .await;
    let mut logs = 0;
    for (a, b, _, result) in results {
        let stored = RawLog::count(store.conn(), a, b)?;
        logs += stored;
        let chain = result?;
        if stored != chain {
            diff("logs", format!("blocks {a}..{b}: store has {stored} logs, eth_getLogs returns {chain}"));
        }
    }

    // 3. Every worker's derived state equals the contracts' at the cursor block.
    use lcw_schema::store::rows::{ProjectionRow, WorkerRow};
    let workers: Vec<(Address, i64, U256, U256)> = WorkerRow::all(store.conn())?
        .into_iter()
        .map(|w| (w.address, w.active_jobs, w.balance_wei, w.stake_wei))
        .collect();
    let c = profile.contracts;
    let checks: Vec<_> = stream::iter(workers.iter().copied())
        .map(|(w, active, balance, stake)| {
            let rpc = &rpc;
            async move {
                let count = rpc.call_at(
                    c.worker_registry,
                    WorkerRegistry::getActiveJobCountCall { worker: w }.abi_encode().into(),
                    block,
                );
                let bal = rpc.call_at(
                    c.job_registry,
                    JobRegistry::workerBalanceCall { worker: w }.abi_encode().into(),
                    block,
                );
                let stk = rpc.call_at(
                    c.worker_registry,
                    WorkerRegistry::getWorkerStakeCall { worker: w }.abi_encode().into(),
                    block,
                );
                let (count, bal, stk) = futures::join!(count, bal, stk);
                (w, active, balance, stake, count, bal, stk)
            }
        })
        .buffered(8)
        .collect()
        .await;
    for (w, active, balance, stake, count, bal, stk) in checks {
        let word = |r: Result<alloy::primitives::Bytes, RpcError>| -> IndexerResult<U256> {
            let b = r?;
            Ok(U256::try_from_be_slice(&b[..b.len().min(32)]).unwrap_or_default())
        };
        let (count, bal, stk) = (word(count)?, word(bal)?, word(stk)?);
        if U256::from(active.max(0) as u64) != count || active < 0 {
            diff(
                "activeJobs",
                format!("worker {w}: store derives {active} active jobs, getActiveJobCount says {count}"),
            );
        }
        if balance != bal {
            diff("balance", format!("worker {w}: store derives a balance of {balance} wei, workerBalance says {bal}"));
        }
        if stake != stk {
            diff("stake", format!("worker {w}: store derives a stake of {stake} wei, getWorkerStake says {stk}"));
        }
    }

    // 4. The dispute window in force.
    let stored = ledger::config_as_of(store.conn(), "disputeWindow", block)?;
    let onchain = rpc.call_at(c.ai_config, AIConfig::getDisputeWindowCall {}.abi_encode().into(), block).await?;
    let onchain = U256::try_from_be_slice(&onchain[..onchain.len().min(32)]).unwrap_or_default();
    match stored {
        Some(v) if v == onchain.to_string() => {}
        Some(v) => diff("disputeWindow", format!("store has {v} s, getDisputeWindow says {onchain} s")),
        None => diff(
            "disputeWindow",
            format!("store has no dispute window (no DisputeParamsUpdated indexed); chain says {onchain} s"),
        ),
    }
    // 5. The SessionManager in force (one AIConfig set without an event, or before the start
    //    block, would be missing from the watched addresses). Skipped for an AIConfig without
    //    sortition (the call reverts).
    let call = AIConfig::getSessionManagerAddressCall {}.abi_encode().into();
    match rpc.call_at(c.ai_config, call, block).await {
        Ok(data) => match AIConfig::getSessionManagerAddressCall::abi_decode_returns(&data) {
            Ok(onchain) => {
                let stored = sortition::current_manager(store.conn())?;
                if stored != Some(onchain).filter(|a| !a.is_zero()) {
                    diff(
                        "sessionManager",
                        format!(
                            "store follows {stored:?} as the current SessionManager, getSessionManagerAddress says {onchain}"
                        ),
                    );
                }
            }
            Err(e) => diff("sessionManager", format!("getSessionManagerAddress answered {data}: {e}")),
        },
        Err(RpcError::Rejected { message, .. }) => {
            tracing::debug!(%message, "getSessionManagerAddress not answered; SessionManager not checked")
        }
        Err(e) => return Err(e.into()),
    }
    Ok(VerifyReport { block, ranges: ranges.len() as u64, logs, workers: workers.len() as u64, differences })
}
