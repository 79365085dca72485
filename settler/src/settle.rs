//! The settle loop. On every head: track the outbox, read the schedule from the store, and for
//! everything due by the lowest timestamp the next block can have, simulate in that block, sign
//! and broadcast, so that each job lands in the first block whose timestamp reaches its
//! `releasableAt`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use alloy::primitives::{Address, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use lcw_schema::bindings::{JobRegistry, decode_revert};
use lcw_schema::profile::Profile;
use lcw_schema::rules::schedule::{self, Action, ChainClock, Due, Params};
use lcw_schema::store::obligations as view;
use serde::Serialize;

use crate::{SettlerError, SettlerResult};
use lcw_chain::FeeCap;
use lcw_chain::node::{CallSpec, Chain, Fees, Head};
use lcw_chain::outbox::{Intent, Lane, Outbox, REORG_WINDOW, Tracked};

/// Whose jobs the settler ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One worker's jobs: releases, and no-fault settlement of jobs stranded by a closed session.
    Worker(Address),
    /// Every worker's due releases, and claimTimeout for jobs past their deadline, when the
    /// bounty covers the gas.
    Keeper,
}

/// Settler options.
#[derive(Debug, Clone)]
pub struct SettleConfig {
    /// Network.
    pub profile: Profile,
    /// The store.
    pub db: PathBuf,
    /// Whose jobs.
    pub mode: Mode,
    /// Signing key.
    pub signer: PrivateKeySigner,
    /// Largest gas per transaction (batches split below it).
    pub max_batch_gas: u64,
    /// Smallest priority fee offered.
    pub min_tip: u128,
    /// The operator's fee ceiling; each transaction is further bounded by what it collects.
    pub fee_cap: FeeCap,
    /// Head polling interval.
    pub poll_interval: Duration,
    /// Per-request RPC timeout.
    pub rpc_timeout: Duration,
    /// Send what is due now, wait for it to be mined, and stop (`lcw release`).
    pub once: bool,
    /// Only these jobs (`lcw release --jobs`).
    pub only_jobs: Option<HashSet<u64>>,
}

impl SettleConfig {
    /// Defaults for `mode` with `signer`.
    pub fn new(profile: Profile, db: PathBuf, mode: Mode, signer: PrivateKeySigner) -> Self {
        SettleConfig {
            profile,
            db,
            mode,
            signer,
            max_batch_gas: 15_000_000,
            min_tip: 1_000_000,
            fee_cap: FeeCap::default(),
            poll_interval: Duration::from_millis(100),
            rpc_timeout: Duration::from_secs(20),
            once: false,
            only_jobs: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SettleSummary {
    /// Transactions sent (first versions).
    pub sent: u64,
    /// Mined with status 1.
    pub mined: u64,
    /// Mined with status 0.
    pub reverted: u64,
    /// Replaced with higher fees.
    pub bumped: u64,
    /// Lost their nonce, or reorged out and would now revert (nonce taken by a transfer to
    /// self); jobs re-planned.
    pub dropped: u64,
    /// Mined transactions reorged out (re-broadcast, or cancelled when they would now revert).
    pub reorged: u64,
    /// Jobs released by this settler's mined transactions.
    pub jobs_released: u64,
    /// Timeouts claimed.
    pub timeouts_claimed: u64,
    /// Stuck jobs settled without fault.
    pub settled_stuck: u64,
    /// Jobs left out of a batch because their simulation failed.
    pub excluded: u64,
    /// Keeper actions skipped because the bounty did not cover the gas.
    pub unprofitable: u64,
    /// Gas used by mined transactions.
    pub gas_used: u64,
    /// The next job that is not due yet: (job id, releasable at) at the end of a `once` run.
    pub next_due: Option<(u64, u64)>,
}

/// Initial gas per released job until a simulation measures it.
const INITIAL_GAS_PER_JOB: u64 = 80_000;

/// Runs until `shutdown` (or, with `once`, until what was due is mined).
pub async fn run(
    config: SettleConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> SettlerResult<SettleSummary> {
    let chain = Chain::connect(&config.profile.rpc_url, config.rpc_timeout).await?;
    config.profile.check_chain_id(chain.chain_id).map_err(|e| SettlerError::Config(e.to_string()))?;
    let conn = lcw_schema::store::Store::connect(&config.db)?;
    let mut outbox = Outbox::open(&config.db, config.signer.clone(), chain.chain_id, Lane::Settler)?;
    let mut summary = SettleSummary::default();
    let fallback = chain_params(&chain, &config.profile).await?;
    for e in outbox.reconcile(&chain).await? {
        count(&mut summary, &e);
    }
    let me = outbox.sender();
    tracing::info!(sender = %me, mode = ?config.mode, "settler started");
    let mut clock = ChainClock::default();
    let mut gas_per_job = INITIAL_GAS_PER_JOB;
    let mut warned: HashSet<(u64, &'static str)> = HashSet::new();
    let mut waited_for_store = false;
    let mut sent_in_once = 0u64;
    // The last head fully handled; a head whose handling hit an RPC fault is handled again.
    let mut done: Option<(u64, alloy::primitives::B256)> = None;
    macro_rules! rpc {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(SettlerError::Rpc(m)) => {
                    tracing::warn!(error = %m, "RPC failed; retrying");
                    wait(&mut shutdown, Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
    }
    loop {
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            // A dropped sender counts as shutdown: `changed()` would otherwise return at once
            // and spin this loop.
            break;
        }
        let head = match chain.head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading the head failed; retrying");
                wait(&mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        clock.observe(head.number, head.timestamp);
        if done == Some((head.number, head.hash)) {
            wait(&mut shutdown, config.poll_interval).await;
            continue;
        }
        let fees = rpc!(chain.fees(config.min_tip).await);
        for e in rpc!(outbox.track(&chain, &head, Some(fees)).await) {
            count(&mut summary, &e);
        }
        let cursor = view::cursor(&conn)?;
        if cursor + 2 < head.number {
            if !waited_for_store {
                tracing::info!(cursor, head = head.number, "waiting for the store to reach the head");
                waited_for_store = true;
            }
            wait(&mut shutdown, config.poll_interval).await;
            continue;
        }
        let params = view::params(&conn, Some(&fallback))?;
        let worker = match config.mode {
            Mode::Worker(w) => Some(w),
            Mode::Keeper => None,
        };
        let mut exclude = outbox.live_jobs()?;
        // Not `cursor + 1`: after a reorg the store can show a job unreleased (rolled back)
        // before the outbox has seen that its release left the chain.
        exclude.extend(outbox.recently_mined_jobs(head.number.saturating_sub(REORG_WINDOW))?);
        let jobs = view::open_jobs(&conn, worker)?;
        let sched = schedule::schedule(&jobs, &params);
        let next_ts = clock.next_ts();
        let wanted = |d: &Due| config.only_jobs.as_ref().is_none_or(|s| s.contains(&d.job_id));
        let due: Vec<&Due> =
            sched.iter().filter(|d| d.at <= next_ts && !exclude.contains(&d.job_id) && wanted(d)).collect();
        let states: BTreeMap<u64, lcw_schema::types::JobState> = jobs.iter().map(|j| (j.job_id, j.state)).collect();
        let releases: Vec<&Due> = due.iter().copied().filter(|d| d.action == Action::Release).collect();
        let others: Vec<&Due> = due
            .iter()
            .copied()
            .filter(|d| {
                matches!((d.action, config.mode), (Action::ClaimTimeout, Mode::Keeper) | (Action::SettleStuck, _))
            })
            .collect();
        let target = Target { number: head.number + 1, timestamp: next_ts };
        if !releases.is_empty() {
            let sent = rpc!(
                release(
                    &chain,
                    &mut outbox,
                    &config,
                    &params,
                    &releases,
                    target,
                    &head,
                    fees,
                    &mut gas_per_job,
                    &mut summary,
                )
                .await
            );
            sent_in_once += sent;
        }
        for d in others {
            let state = states.get(&d.job_id).copied().unwrap_or(lcw_schema::types::JobState::Submitted);
            let sent =
                single(&chain, &mut outbox, &config, &params, d, state, target, &head, fees, &mut summary, &mut warned)
                    .await?;
            sent_in_once += sent;
        }
        done = Some((head.number, head.hash));
        if config.once {
            let live = outbox.live_jobs()?;
            if live.is_empty() {
                summary.next_due = sched
                    .iter()
                    .find(|d| d.at > next_ts && d.action == Action::Release && wanted(d))
                    .map(|d| (d.job_id, d.at));
                break;
            }
            let _ = sent_in_once;
        }
        wait(&mut shutdown, config.poll_interval).await;
    }
    Ok(summary)
}

/// The block a transaction is planned for.
#[derive(Debug, Clone, Copy)]
struct Target {
    number: u64,
    timestamp: u64,
}

async fn wait(shutdown: &mut tokio::sync::watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

fn count(summary: &mut SettleSummary, e: &Tracked) {
    match e {
        Tracked::Mined { kind, gas_used, jobs, .. } => {
            summary.mined += 1;
            summary.gas_used += gas_used;
            match kind.as_str() {
                "release" => summary.jobs_released += jobs.len() as u64,
                "claim_timeout" => summary.timeouts_claimed += jobs.len() as u64,
                "settle_stuck" => summary.settled_stuck += jobs.len() as u64,
                _ => {}
            }
        }
        Tracked::Reverted { id, kind, block, jobs } => {
            summary.reverted += 1;
            tracing::error!(id, kind, block, ?jobs, "a settler transaction reverted");
        }
        Tracked::Reorged { kind, jobs, was_ok, .. } => {
            summary.reorged += 1;
            // What it did on the abandoned branch no longer counts; a re-mine counts again.
            if *was_ok {
                summary.mined = summary.mined.saturating_sub(1);
                let n = jobs.len() as u64;
                match kind.as_str() {
                    "release" => summary.jobs_released = summary.jobs_released.saturating_sub(n),
                    "claim_timeout" => summary.timeouts_claimed = summary.timeouts_claimed.saturating_sub(n),
                    "settle_stuck" => summary.settled_stuck = summary.settled_stuck.saturating_sub(n),
                    _ => {}
                }
            } else {
                summary.reverted = summary.reverted.saturating_sub(1);
            }
        }
        Tracked::Bumped { .. } => summary.bumped += 1,
        Tracked::Dropped { .. } => summary.dropped += 1,
    }
}

fn release_call(ids: &[u64]) -> Bytes {
    JobRegistry::releaseJobsCall { jobIds: ids.iter().map(|i| U256::from(*i)).collect() }.abi_encode().into()
}

fn single_release_call(id: u64) -> Bytes {
    JobRegistry::releaseJobCall { jobId: U256::from(id) }.abi_encode().into()
}

fn gas_limit(used: u64) -> u64 {
    used + used / 4 + 20_000
}

/// Simulates, splits and sends releases. Returns transactions sent.
#[allow(clippy::too_many_arguments)]
async fn release(
    chain: &Chain,
    outbox: &mut Outbox,
    config: &SettleConfig,
    params: &Params,
    due: &[&Due],
    target: Target,
    head: &Head,
    fees: Fees,
    gas_per_job: &mut u64,
    summary: &mut SettleSummary,
) -> SettlerResult<u64> {
    let me = outbox.sender();
    let to = config.profile.contracts.job_registry;
    // Keepers skip releases whose bounty does not pay for their share of the gas.
    let price = head.base_fee.max(1) + fees.tip;
    let mut ids: Vec<u64> = Vec::with_capacity(due.len());
    // What releasing each job collects for this key: a keeper's bounty, or the worker's own share.
    let mut worth: std::collections::HashMap<u64, u128> = Default::default();
    for d in due {
        let collects = if d.worker == me {
            schedule::worker_share(d.fee, params)
        } else {
            schedule::keeper_bounty(d, lcw_schema::types::JobState::Completed, params)
        };
        if config.mode == Mode::Keeper && d.worker != me && collects < U256::from(*gas_per_job as u128 * price) {
            summary.unprofitable += 1;
            continue;
        }
        worth.insert(d.job_id, collects.try_into().unwrap_or(u128::MAX));
        ids.push(d.job_id);
    }
    let mut sent = 0;
    let per_tx = (config.max_batch_gas / (*gas_per_job).max(1)).max(1) as usize;
    for chunk in ids.chunks(per_tx) {
        let mut batch = chunk.to_vec();
        let mut sim = chain
            .simulate(&[CallSpec { from: me, to, data: release_call(&batch) }], target.number, target.timestamp)
            .await?;
        if !sim[0].ok() {
            // Find the jobs that fail on their own; never let one sink the batch.
            let calls: Vec<CallSpec> =
                batch.iter().map(|id| CallSpec { from: me, to, data: single_release_call(*id) }).collect();
            let each = chain.simulate(&calls, target.number, target.timestamp).await?;
            let mut good = Vec::new();
            for (id, s) in batch.iter().zip(&each) {
                if s.ok() {
                    good.push(*id);
                } else {
                    summary.excluded += 1;
                    let reason = s.revert.as_ref().map(|r| decode_revert(r)).or(s.error.clone()).unwrap_or_default();
                    tracing::debug!(job = id, %reason, "left out of the release batch");
                }
            }
            batch = good;
            if batch.is_empty() {
                continue;
            }
            sim = chain
                .simulate(&[CallSpec { from: me, to, data: release_call(&batch) }], target.number, target.timestamp)
                .await?;
            if !sim[0].ok() {
                tracing::warn!(
                    jobs = batch.len(),
                    "release batch still fails after excluding failing jobs; retrying next block"
                );
                continue;
            }
        }
        let used = match sim[0].gas_used {
            Some(0) | None => *gas_per_job * batch.len() as u64 + 50_000,
            Some(g) => {
                *gas_per_job = (g / batch.len() as u64).max(20_000);
                g
            }
        };
        let collects = batch.iter().fold(0u128, |sum, id| sum.saturating_add(worth[id]));
        let intent = Intent {
            kind: "release",
            to,
            data: release_call(&batch),
            value: U256::ZERO,
            gas_limit: gas_limit(used),
            jobs: batch.clone(),
            target_block: target.number,
            blob: None,
            cap: config.fee_cap.at_most_worth(collects, gas_limit(used), 0),
        };
        match outbox.submit(chain, &intent, fees, head.number).await {
            Ok((id, hash)) => {
                sent += 1;
                summary.sent += 1;
                tracing::info!(id, tx = %hash, jobs = batch.len(), block = target.number, "release sent");
            }
            Err(SettlerError::Rejected(e)) => tracing::error!(error = %e, "the node refused a release"),
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// claimTimeout or settleStuckJob for one job. Returns transactions sent.
#[allow(clippy::too_many_arguments)]
async fn single(
    chain: &Chain,
    outbox: &mut Outbox,
    config: &SettleConfig,
    params: &Params,
    due: &Due,
    state: lcw_schema::types::JobState,
    target: Target,
    head: &Head,
    fees: Fees,
    summary: &mut SettleSummary,
    warned: &mut HashSet<(u64, &'static str)>,
) -> SettlerResult<u64> {
    let me = outbox.sender();
    let to = config.profile.contracts.job_registry;
    let data: Bytes = match due.action {
        Action::ClaimTimeout => JobRegistry::claimTimeoutCall { jobId: U256::from(due.job_id) }.abi_encode().into(),
        Action::SettleStuck => JobRegistry::settleStuckJobCall { jobId: U256::from(due.job_id) }.abi_encode().into(),
        Action::Release => return Ok(0),
    };
    let sim = chain.simulate(&[CallSpec { from: me, to, data: data.clone() }], target.number, target.timestamp).await?;
    let Some(used) = sim[0].gas_used else {
        if warned.insert((due.job_id, due.action.kind())) {
            let reason = sim[0].revert.as_ref().map(|r| decode_revert(r)).or(sim[0].error.clone()).unwrap_or_default();
            tracing::debug!(job = due.job_id, action = due.action.kind(), %reason, "would revert; skipped");
        }
        summary.excluded += 1;
        return Ok(0);
    };
    let used = if used == 0 { 200_000 } else { used };
    let mut cap = config.fee_cap;
    if config.mode == Mode::Keeper && due.action == Action::ClaimTimeout {
        let cost = U256::from(used as u128 * (head.base_fee.max(1) + fees.tip));
        let bounty = schedule::keeper_bounty(due, state, params);
        cap = cap.at_most_worth(bounty.try_into().unwrap_or(u128::MAX), gas_limit(used), 0);
        if bounty < cost {
            if warned.insert((due.job_id, "unprofitable")) {
                summary.unprofitable += 1;
                tracing::info!(job = due.job_id, "timeout bounty does not cover the gas; skipped");
            }
            return Ok(0);
        }
    }
    let intent = Intent {
        kind: due.action.kind(),
        to,
        data,
        value: U256::ZERO,
        gas_limit: gas_limit(used),
        jobs: vec![due.job_id],
        target_block: target.number,
        blob: None,
        cap,
    };
    match outbox.submit(chain, &intent, fees, head.number).await {
        Ok((id, hash)) => {
            summary.sent += 1;
            tracing::info!(id, tx = %hash, job = due.job_id, action = due.action.kind(), "sent");
            Ok(1)
        }
        Err(SettlerError::Rejected(e)) => {
            tracing::error!(error = %e, "the node refused the transaction");
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

/// Governance parameters read from the chain, for stores that began after AIConfig was set up.
pub async fn chain_params(chain: &Chain, profile: &Profile) -> SettlerResult<Params> {
    use lcw_schema::bindings::AIConfig;
    let c = AIConfig::new(profile.contracts.ai_config, chain.provider().clone());
    let e =
        |what: &'static str| move |err: alloy::contract::Error| SettlerError::Rpc(format!("AIConfig.{what}: {err}"));
    let u = |v: U256| u64::try_from(v).unwrap_or(u64::MAX);
    Ok(Params {
        dispute_window: u(c.getDisputeWindow().call().await.map_err(e("getDisputeWindow"))?),
        resolution_timeout: u(c.getResolutionTimeout().call().await.map_err(e("getResolutionTimeout"))?),
        worker_fee_bps: u(c.getWorkerFeeBps().call().await.map_err(e("getWorkerFeeBps"))?),
        release_bounty_bps: u(c.getReleaseBountyBps().call().await.map_err(e("getReleaseBountyBps"))?),
        timeout_bounty_bps: u(c.getTimeoutBountyBps().call().await.map_err(e("getTimeoutBountyBps"))?),
        timeout_slash_bps: u(c.getTimeoutSlashBps().call().await.map_err(e("getTimeoutSlashBps"))?),
        completion_timeout_slash_bps: u(c
            .getCompletionTimeoutSlashBps()
            .call()
            .await
            .map_err(e("getCompletionTimeoutSlashBps"))?),
        min_worker_stake: c.getMinWorkerStake().call().await.map_err(e("getMinWorkerStake"))?,
    })
}
