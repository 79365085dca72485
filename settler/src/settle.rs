//! The settle loop: a thin executor around the pure planner ([`crate::plan`]). On every head it
//! tracks the outbox, reads the schedule from the store, asks the planner what the next block
//! should carry, simulates each transaction in that block, sends it through the outbox under the
//! ceiling it may pay, and records what happened. Each job lands in the first block whose
//! timestamp reaches its `releasableAt`.
//!
//! Only the store or the configuration failing stops the loop. An RPC fault handles the head
//! again; a transaction the node refuses stays with the outbox, which sends it again every block;
//! a job the store refuses because another key or lane has a transaction in flight for it is
//! skipped with a log line (the store names one job, so a refused batch is split in halves until
//! the refused jobs stand alone).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use lcw_chain::FeeCap;
use lcw_chain::fees::Wei;
use lcw_chain::node::{CallSpec, Chain, Fees, Head, Simulated};
use lcw_chain::outbox::policy::Refusal;
use lcw_chain::outbox::{Intent, Lane, Outbox, REORG_WINDOW, Tracked};
use lcw_schema::bindings::{JobRegistry, decode_revert};
use lcw_schema::profile::Profile;
use lcw_schema::rules::schedule::{self, Action, ChainClock, Params};
use lcw_schema::store::obligations as view;
use lcw_schema::store::{Identity, Store};
use rusqlite::Connection;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::plan::{self, Batch, Clock, Gas, Inputs, Market, Pricing, Release, Single, Skip, Skipped, Target, Worth};
use crate::{SettlerError, SettlerResult};

pub use crate::plan::Mode;

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
    /// Largest gas limit of one transaction (batches split below it).
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
    /// What the run counts, for the process's `/metrics`.
    pub metrics: Arc<Metrics>,
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
            metrics: Arc::default(),
        }
    }
}

/// What a run did. Skips are counted once per job and spell: a job that waits ten blocks for the
/// price to fall counts once.
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
    /// Jobs left out because their simulation failed.
    pub excluded: u64,
    /// Keeper actions skipped because what they pay did not cover the gas.
    pub unprofitable: u64,
    /// Jobs that waited because the next block's price was above what their transaction may pay.
    pub priced_out: u64,
    /// Jobs skipped because another key or lane had a transaction in flight for them.
    pub live_elsewhere: u64,
    /// Jobs that waited because the wallet could not pay for their gas.
    pub no_funds: u64,
    /// Gas used by mined transactions.
    pub gas_used: u64,
    /// The next job that is not due yet: (job id, releasable at) at the end of a `once` run.
    pub next_due: Option<(u64, u64)>,
}

/// Gas each released job adds to a batch, until a simulation measures it (the devnet's
/// JobRegistry: about 26,000).
const INITIAL_GAS_PER_JOB: u64 = 40_000;
/// Gas of a release batch beyond its jobs': the transaction, the call, the bounty payment (the
/// devnet's JobRegistry: about 69,000).
const BATCH_GAS: u64 = 60_000;
/// Gas of a claimTimeout or settleStuckJob until a simulation measures it.
const SINGLE_GAS: u64 = 200_000;
/// Pause after an RPC fault before the head is handled again.
const RPC_RETRY: Duration = Duration::from_millis(500);

/// Runs until `shutdown` (or, with `once`, until what was due is mined).
pub async fn run(
    config: SettleConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> SettlerResult<SettleSummary> {
    // The node may be down when the settler starts (a restart during an outage): it waits.
    let Some(mut settler) = lcw_chain::patiently("starting the settler", &shutdown, || Settler::start(&config)).await?
    else {
        return Ok(SettleSummary::default());
    };
    loop {
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            // A dropped sender counts as shutdown: `changed()` would otherwise return at once
            // and spin this loop.
            break;
        }
        let pause = match settler.tick().await {
            Ok(Step::Finished) => break,
            Ok(Step::Idle) => config.poll_interval,
            // Nothing was decided on a half-read head: it is handled again.
            Err(e @ (SettlerError::Rpc(_) | SettlerError::WrongChain(_))) => {
                tracing::warn!(error = %e, "RPC failed; retrying");
                RPC_RETRY
            }
            Err(e) => return Err(e),
        };
        wait(&mut shutdown, pause).await;
    }
    Ok(settler.summary)
}

/// What every transaction of one tick shares.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// The head it was planned at.
    head: u64,
    /// The block it is for.
    target: Target,
    /// The price and the operator's ceiling.
    pricing: Pricing,
    /// The market's fees, offered under each transaction's ceiling.
    fees: Fees,
}

/// How a tick ended.
enum Step {
    /// Wait for the next head.
    Idle,
    /// A `once` run has nothing left in flight.
    Finished,
}

/// The executor's state between heads.
struct Settler<'a> {
    config: &'a SettleConfig,
    chain: Chain,
    store: Connection,
    outbox: Outbox,
    /// Governance parameters from the chain, for a store that began after AIConfig was set up.
    fallback: Params,
    clock: ChainClock,
    gas: Gas,
    /// The last head fully handled; a head whose handling hit an RPC fault is handled again.
    done: Option<(u64, B256)>,
    /// Skips logged and counted, kept while they last so each spell is logged once.
    noted: HashSet<(u64, &'static str)>,
    waited_for_store: bool,
    /// What the wallet can pay this head (None: unknown).
    budget: Option<Budget>,
    summary: SettleSummary,
    /// The first block each job planned for release could have carried it (the target block of
    /// the first tick that found it due): its release's lag is counted from there.
    due: HashMap<u64, u64>,
}

impl<'a> Settler<'a> {
    async fn start(config: &'a SettleConfig) -> SettlerResult<Settler<'a>> {
        let chain = Chain::open(&config.profile, config.rpc_timeout).await?;
        let store = Store::connect_as(&config.db, &Identity::of(&config.profile))?;
        let mut outbox = Outbox::open(&config.db, config.signer.clone(), chain.chain_id, Lane::Settler)?
            .with_filler_cap(config.fee_cap);
        let fallback = chain_params(&chain, &config.profile).await?;
        let reconciled = outbox.reconcile(&chain).await?;
        config.metrics.set_fee_cap(config.fee_cap.per_gas);
        tracing::info!(sender = %outbox.sender(), mode = ?config.mode, cap = %config.fee_cap, "settler started");
        let mut settler = Settler {
            config,
            chain,
            store,
            outbox,
            fallback,
            clock: ChainClock::default(),
            gas: Gas {
                per_job: INITIAL_GAS_PER_JOB,
                per_batch: BATCH_GAS,
                single: SINGLE_GAS,
                max_batch: config.max_batch_gas,
            },
            done: None,
            noted: HashSet::new(),
            waited_for_store: false,
            budget: None,
            summary: SettleSummary::default(),
            due: HashMap::new(),
        };
        settler.account(&reconciled).await?;
        Ok(settler)
    }

    /// Reads the head and, when it is new, plans and sends for the block after it.
    async fn tick(&mut self) -> SettlerResult<Step> {
        let head = self.chain.head().await?;
        self.clock.observe(head.number, head.timestamp);
        if self.done == Some((head.number, head.hash)) {
            return Ok(Step::Idle);
        }
        let fees = self.chain.fees(self.config.min_tip).await?;
        let tracked = self.outbox.track(&self.chain, &head, Some(fees)).await?;
        self.account(&tracked).await?;
        let balance = self.chain.balance(self.outbox.sender()).await;
        self.budget = self.budget(balance)?;
        let cursor = view::cursor(&self.store)?;
        if cursor.saturating_add(2) < head.number {
            if !self.waited_for_store {
                tracing::info!(cursor, head = head.number, "waiting for the store to reach the head");
                self.waited_for_store = true;
            }
            return Ok(Step::Idle);
        }
        let pricing = Pricing { market: Market::of(fees), fee_cap: self.config.fee_cap };
        let tick = self.plan(&head, pricing)?;
        self.note_due(&tick);
        let round = Round { head: head.number, target: tick.target, pricing, fees };
        let mut skipped = tick.skipped;
        for batch in &tick.batches {
            self.release(batch, &round, &mut skipped).await?;
        }
        for single in &tick.singles {
            self.single(single, &round, &mut skipped).await?;
        }
        self.note(&skipped);
        self.done = Some((head.number, head.hash));
        if self.config.once {
            self.give_up_refused().await?;
            if self.outbox.live_jobs()?.is_empty() {
                self.summary.next_due = tick.next_due;
                return Ok(Step::Finished);
            }
        }
        Ok(Step::Idle)
    }

    /// Reads the store and the outbox and asks the planner.
    fn plan(&self, head: &Head, pricing: Pricing) -> SettlerResult<plan::TickPlan> {
        let params = view::params(&self.store, Some(&self.fallback))?;
        let worker = match self.config.mode {
            Mode::Worker(w) => Some(w),
            Mode::Keeper => None,
        };
        let jobs = view::open_jobs(&self.store, worker)?;
        let in_flight = self.outbox.live_jobs()?;
        // Not `cursor + 1`: after a reorg the store can show a job unreleased (rolled back)
        // before the outbox has seen that its release left the chain.
        let recently_mined = self.outbox.recently_mined_jobs(head.number.saturating_sub(REORG_WINDOW))?;
        Ok(plan::plan(&Inputs {
            schedule: &schedule::schedule(&jobs, &params),
            in_flight: &in_flight,
            recently_mined: &recently_mined,
            only: self.config.only_jobs.as_ref(),
            mode: self.config.mode,
            me: self.outbox.sender(),
            params: &params,
            clock: Clock { head: head.number, next_ts: self.clock.next_ts() },
            gas: self.gas,
            pricing,
        }))
    }

    /// Simulates, prices and sends one planned release batch. A batch whose measured gas passes
    /// `max_batch_gas`, or that the store refuses (a job of it is in flight elsewhere), is tried
    /// again in halves.
    async fn release(&mut self, batch: &Batch, round: &Round, skipped: &mut Vec<Skipped>) -> SettlerResult<()> {
        let mut queue = vec![batch.jobs.clone()];
        while let Some(jobs) = queue.pop() {
            let Some((jobs, used)) = self.simulate_release(jobs, round.target, skipped).await? else { continue };
            let gas_limit = plan::gas_limit(used);
            if gas_limit > self.config.max_batch_gas && jobs.len() > 1 {
                let (first, second) = jobs.split_at(jobs.len() / 2);
                queue.push(second.to_vec());
                queue.push(first.to_vec());
                continue;
            }
            let mut jobs = jobs;
            // A job the store refuses leaves the batch; the gas measured with it bounds the rest.
            while !jobs.is_empty() {
                // Priced again with the measured gas: its worth per gas may now be below the price.
                let cap = match round.pricing.ceiling(Worth::Wei(Batch::worth(&jobs)), gas_limit) {
                    Ok(cap) => cap,
                    Err(reason) => {
                        skipped.extend(jobs.iter().map(|r| skip(r.job_id, Action::Release, reason.clone())));
                        break;
                    }
                };
                let ids: Vec<u64> = jobs.iter().map(|r| r.job_id).collect();
                let intent = self.intent(Action::Release, release_call(&ids), gas_limit, ids, round.target, cap);
                let refused = match self.submit(&intent, round).await? {
                    Submitted::Sent => break,
                    Submitted::NoFunds(why) => {
                        skipped.extend(jobs.iter().map(|r| skip(r.job_id, Action::Release, why.clone())));
                        break;
                    }
                    Submitted::LiveElsewhere(job) => job.and_then(|j| jobs.iter().position(|r| r.job_id == j)),
                };
                match refused {
                    Some(i) => skipped.push(skip(jobs.remove(i).job_id, Action::Release, Skip::LiveElsewhere)),
                    None if jobs.len() == 1 => {
                        skipped.extend(jobs.first().map(|r| skip(r.job_id, Action::Release, Skip::LiveElsewhere)));
                        break;
                    }
                    // The refusal names no job of the batch: find them by halves.
                    None => {
                        let (first, second) = jobs.split_at(jobs.len() / 2);
                        queue.push(second.to_vec());
                        queue.push(first.to_vec());
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Simulates `jobs` as one `releaseJobs` in the target block, leaving out the jobs that fail
    /// alone. The jobs that remain and the gas they use; None when none remain or the batch still
    /// fails without the failing ones.
    async fn simulate_release(
        &mut self,
        jobs: Vec<Release>,
        target: Target,
        skipped: &mut Vec<Skipped>,
    ) -> SettlerResult<Option<(Vec<Release>, u64)>> {
        let ids: Vec<u64> = jobs.iter().map(|r| r.job_id).collect();
        let mut sim = self.simulate(release_call(&ids), target).await?;
        let mut jobs = jobs;
        if !sim.ok() {
            // Find the jobs that fail on their own; never let one sink the batch.
            let me = self.outbox.sender();
            let to = self.config.profile.contracts.job_registry;
            let calls: Vec<CallSpec> =
                ids.iter().map(|id| CallSpec { from: me, to, data: single_release_call(*id) }).collect();
            let each = self.chain.simulate(&calls, target.number, target.timestamp).await?;
            let (good, bad): (Vec<_>, Vec<_>) = jobs.iter().zip(&each).partition(|(_, s)| s.ok());
            skipped.extend(bad.into_iter().map(|(r, s)| skip(r.job_id, Action::Release, would_revert(s))));
            jobs = good.into_iter().map(|(r, _)| *r).collect();
            if jobs.is_empty() {
                return Ok(None);
            }
            let ids: Vec<u64> = jobs.iter().map(|r| r.job_id).collect();
            sim = self.simulate(release_call(&ids), target).await?;
            if !sim.ok() {
                tracing::warn!(
                    jobs = jobs.len(),
                    "a release batch fails even without its failing jobs; retrying next block"
                );
                return Ok(None);
            }
        }
        let n = jobs.len() as u64;
        let used = match sim.gas_used {
            Some(g) if g > 0 => {
                self.gas = self.gas.learned(n, g);
                g
            }
            // eth_call reports no gas: the model stands in.
            _ => self.gas.batch(n),
        };
        Ok(Some((jobs, used)))
    }

    /// Simulates, prices and sends one claimTimeout or settleStuckJob.
    async fn single(&mut self, s: &Single, round: &Round, skipped: &mut Vec<Skipped>) -> SettlerResult<()> {
        let job = U256::from(s.job_id);
        let data: Bytes = match s.action {
            Action::ClaimTimeout => JobRegistry::claimTimeoutCall { jobId: job }.abi_encode().into(),
            Action::SettleStuck => JobRegistry::settleStuckJobCall { jobId: job }.abi_encode().into(),
            Action::Release => return Ok(()),
        };
        let sim = self.simulate(data.clone(), round.target).await?;
        let used = match sim.gas_used {
            None => {
                skipped.push(skip(s.job_id, s.action, would_revert(&sim)));
                return Ok(());
            }
            Some(0) => SINGLE_GAS,
            Some(g) => g,
        };
        let gas_limit = plan::gas_limit(used);
        let cap = match round.pricing.ceiling(s.worth, gas_limit) {
            Ok(cap) => cap,
            Err(reason) => {
                skipped.push(skip(s.job_id, s.action, reason));
                return Ok(());
            }
        };
        let intent = self.intent(s.action, data, gas_limit, vec![s.job_id], round.target, cap);
        match self.submit(&intent, round).await? {
            Submitted::LiveElsewhere(_) => skipped.push(skip(s.job_id, s.action, Skip::LiveElsewhere)),
            Submitted::NoFunds(why) => skipped.push(skip(s.job_id, s.action, why)),
            Submitted::Sent => {}
        }
        Ok(())
    }

    async fn simulate(&mut self, data: Bytes, target: Target) -> SettlerResult<Simulated> {
        let call = CallSpec { from: self.outbox.sender(), to: self.config.profile.contracts.job_registry, data };
        let sim = self.chain.simulate(&[call], target.number, target.timestamp).await?;
        sim.into_iter().next().ok_or_else(|| SettlerError::Rpc("the simulation answered no call".into()))
    }

    fn intent(
        &self,
        action: Action,
        data: Bytes,
        gas_limit: u64,
        jobs: Vec<u64>,
        target: Target,
        cap: FeeCap,
    ) -> Intent {
        let to = self.config.profile.contracts.job_registry;
        Intent {
            kind: action.kind(),
            to,
            data,
            value: U256::ZERO,
            gas_limit,
            jobs,
            target_block: target.number,
            blob: None,
            cap,
        }
    }

    /// Sends `intent` through the outbox, or learns that the store refused it because one of its
    /// jobs has a live transaction of another key or lane.
    async fn submit(&mut self, intent: &Intent, round: &Round) -> SettlerResult<Submitted> {
        let (kind, jobs, block, cap) = (intent.kind, intent.jobs.len(), intent.target_block, Wei(intent.cap.per_gas));
        // Nothing the wallet cannot pay is signed: the node would refuse it, and its nonce would
        // hold back every later one.
        if let Some(b) = self.budget.as_mut() {
            let cost = u128::from(intent.gas_limit)
                .saturating_mul(intent.cap.per_gas)
                .saturating_add(u128::try_from(intent.value).unwrap_or(u128::MAX));
            if cost > b.left {
                return Ok(Submitted::NoFunds(Skip::NoFunds {
                    balance: b.balance,
                    needs: b.balance.saturating_sub(b.left).saturating_add(cost),
                }));
            }
            b.left = b.left.saturating_sub(cost);
        }
        match self.outbox.submit(&self.chain, intent, round.fees, round.head).await {
            Ok((id, hash)) => {
                self.summary.sent += 1;
                self.config.metrics.sent(kind);
                tracing::info!(id, tx = %hash, kind, jobs, block, %cap, "sent");
                Ok(Submitted::Sent)
            }
            Err(SettlerError::InFlight(why)) => {
                tracing::debug!(kind, jobs, %why, "the store refused the intent");
                Ok(Submitted::LiveElsewhere(refused_job(&why)))
            }
            // The outbox keeps it (its nonce held, its jobs in flight) and sends it again every block.
            Err(SettlerError::Rejected(reason)) => {
                self.summary.sent += 1;
                self.config.metrics.sent(kind);
                tracing::warn!(kind, jobs, block, %reason, "the node refused the transaction; the outbox sends it again");
                Ok(Submitted::Sent)
            }
            Err(e) => Err(e),
        }
    }

    /// Counts what the outbox saw happen, in the summary and the metrics, with the fees paid
    /// and the lag of each release; then the lane's live transactions.
    async fn account(&mut self, events: &[Tracked]) -> SettlerResult<()> {
        let metrics = self.config.metrics.clone();
        for e in events {
            count(&mut self.summary, e);
            match e {
                Tracked::Mined { id, kind, block, jobs, .. } => {
                    metrics.mined(kind, jobs.len());
                    if kind == "release" {
                        for job in jobs {
                            if let Some(due) = self.due.remove(job) {
                                metrics.release_lag(block.saturating_sub(due));
                            }
                        }
                    }
                    let hashes = lcw_schema::store::outbox::attempt_hashes(&self.store, *id)?;
                    paid(&self.chain, &metrics, *id, kind, &hashes).await;
                }
                Tracked::Reverted { id, kind, .. } => {
                    metrics.reverted(kind);
                    let hashes = lcw_schema::store::outbox::attempt_hashes(&self.store, *id)?;
                    paid(&self.chain, &metrics, *id, kind, &hashes).await;
                }
                Tracked::Reorged { kind, .. } => metrics.reorged(kind),
                Tracked::Bumped { .. } | Tracked::Dropped { .. } => {}
            }
        }
        let live =
            self.outbox.counts()?.iter().filter(|(s, _)| matches!(s.as_str(), "intent" | "sent")).map(|(_, n)| n).sum();
        metrics.set_outbox_live(live);
        Ok(())
    }

    /// Remembers the first block each job could have been released in (a planned batch, or a
    /// due job left out for its price, its worth, the wallet or a failing simulation), and
    /// forgets the jobs no longer scheduled.
    fn note_due(&mut self, tick: &plan::TickPlan) {
        let block = tick.target.number;
        let planned = tick.batches.iter().flat_map(|b| b.jobs.iter().map(|r| r.job_id));
        let waiting = tick.skipped.iter().filter(|s| s.action == Action::Release).filter(|s| {
            !matches!(s.reason, Skip::NotDue { .. } | Skip::InFlight | Skip::RecentlyMined | Skip::KeeperOnly)
        });
        for job in planned.chain(waiting.map(|s| s.job_id)) {
            self.due.entry(job).or_insert(block);
        }
        let scheduled: HashSet<u64> = tick
            .batches
            .iter()
            .flat_map(|b| b.jobs.iter().map(|r| r.job_id))
            .chain(tick.singles.iter().map(|s| s.job_id))
            .chain(tick.skipped.iter().map(|s| s.job_id))
            .collect();
        self.due.retain(|job, _| scheduled.contains(job));
    }

    /// What the wallet can still pay this head: its balance less what the key's live
    /// transactions may cost. None when the balance cannot be read (the node refuses what the
    /// wallet cannot pay, and the outbox keeps it).
    fn budget(&self, balance: Result<U256, lcw_chain::ChainError>) -> SettlerResult<Option<Budget>> {
        let balance = match balance {
            Ok(b) => u128::try_from(b).unwrap_or(u128::MAX),
            Err(e) => {
                tracing::debug!(error = %e, "reading the balance failed; sending without a budget this head");
                return Ok(None);
            }
        };
        let left = balance.saturating_sub(self.outbox.live_cost()?);
        Ok(Some(Budget { balance, left }))
    }

    /// `lcw release` does not wait for a transaction the node refuses for a reason fees cannot
    /// fix (funds, gas): it gives it up, and its jobs stay unreleased.
    async fn give_up_refused(&mut self) -> SettlerResult<()> {
        for r in self.outbox.refused()? {
            if Refusal::of(&r.reason) != Refusal::Fee {
                tracing::error!(id = r.id, jobs = ?r.jobs, reason = %r.reason, "the node refuses the transaction; given up");
                self.outbox.cancel(&self.chain, r.id).await?;
            }
        }
        Ok(())
    }

    /// Counts each skip worth telling once, for as long as it lasts, and logs the new ones: one
    /// line per action and reason.
    fn note(&mut self, skipped: &[Skipped]) {
        let mut now = HashSet::new();
        let mut new: BTreeMap<(&'static str, String, bool), Vec<u64>> = BTreeMap::new();
        for s in skipped {
            let key = (s.job_id, s.reason.as_str());
            let counter = match s.reason {
                Skip::Unprofitable { .. } => &mut self.summary.unprofitable,
                Skip::PricedOut { .. } => &mut self.summary.priced_out,
                Skip::LiveElsewhere => &mut self.summary.live_elsewhere,
                Skip::NoFunds { .. } => &mut self.summary.no_funds,
                Skip::WouldRevert(_) => &mut self.summary.excluded,
                Skip::NotDue { .. } | Skip::InFlight | Skip::RecentlyMined | Skip::KeeperOnly => continue,
            };
            if now.insert(key) && !self.noted.contains(&key) {
                *counter += 1;
                let quiet = matches!(s.reason, Skip::WouldRevert(_));
                new.entry((s.action.kind(), s.reason.to_string(), quiet)).or_default().push(s.job_id);
            }
        }
        for ((action, reason, quiet), jobs) in new {
            if quiet {
                tracing::debug!(action, ?jobs, %reason, "skipped");
            } else {
                tracing::info!(action, ?jobs, %reason, "skipped");
            }
        }
        self.noted = now;
    }
}

/// What the wallet can pay this head.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Its balance at the head.
    balance: u128,
    /// The balance less what live transactions and those sent this head may cost.
    left: u128,
}

/// What became of an intent.
enum Submitted {
    /// The wallet cannot pay for it: not signed.
    NoFunds(Skip),
    /// Signed and with the outbox (broadcast, or sent again next block if the node refused it).
    Sent,
    /// The store refused it: a job of it, the one named when the refusal names it, has a live
    /// transaction of another key or lane.
    LiveElsewhere(Option<u64>),
}

/// The job the store named when it refused an intent (`job 7 already has a live outbox
/// transaction ...`); None when the refusal is worded otherwise.
fn refused_job(why: &str) -> Option<u64> {
    why.strip_prefix("job ")?.split_whitespace().next()?.parse().ok()
}

fn skip(job_id: u64, action: Action, reason: Skip) -> Skipped {
    Skipped { job_id, action, reason }
}

fn would_revert(s: &Simulated) -> Skip {
    Skip::WouldRevert(s.revert.as_ref().map(|r| decode_revert(r)).or(s.error.clone()).unwrap_or_default())
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
            summary.gas_used = summary.gas_used.saturating_add(*gas_used);
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

/// Counts the fee transaction `id` paid, from the receipt of whichever of its versions (`hashes`)
/// was mined. A receipt the node does not give now is not counted (logged at debug).
async fn paid(chain: &Chain, metrics: &Metrics, id: i64, kind: &str, hashes: &[B256]) {
    match chain.receipts(hashes).await {
        Ok(receipts) => {
            if let Some(r) = receipts.into_iter().flatten().next() {
                metrics.paid(kind, r.gas_used, r.effective_gas_price);
            }
        }
        Err(e) => tracing::debug!(id, error = %e, "reading the receipt for the fee paid failed; not counted"),
    }
}

fn release_call(ids: &[u64]) -> Bytes {
    JobRegistry::releaseJobsCall { jobIds: ids.iter().map(|i| U256::from(*i)).collect() }.abi_encode().into()
}

fn single_release_call(id: u64) -> Bytes {
    JobRegistry::releaseJobCall { jobId: U256::from(id) }.abi_encode().into()
}

/// Governance parameters read from the chain, for stores that began after AIConfig was set up.
pub async fn chain_params(chain: &Chain, profile: &Profile) -> SettlerResult<Params> {
    use lcw_schema::bindings::AIConfig;
    let c = AIConfig::new(profile.contracts.ai_config, chain.provider().clone());
    let e = |what: &'static str| {
        move |err: alloy::contract::Error| SettlerError::rpc(format_args!("AIConfig.{what}: {err}"))
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use lcw_schema::store::outbox::JobInFlight;

    #[test]
    fn the_job_a_refusal_names_is_read_from_the_stores_own_wording() {
        let named = JobInFlight { job: 7, holder: Some((3, "release".into(), "worker".into())) };
        assert_eq!(refused_job(&named.to_string()), Some(7));
        assert_eq!(refused_job(&JobInFlight { job: 12, holder: None }.to_string()), Some(12));
        assert_eq!(refused_job("job already has a live outbox transaction"), None);
        assert_eq!(refused_job(""), None);
    }
}
