//! The settler's decisions, as pure functions of plain data: no store, no node, no clock.
//!
//! On every head [`plan`] takes the schedule (`lcw_schema::rules::schedule`), the jobs already in
//! flight, the mode, the chain clock, the gas model, the market price and the operator's fee
//! ceiling, and returns a [`TickPlan`] for the next block: release batches, single actions
//! (claimTimeout, settleStuckJob), and every other job skipped with its reason. It decides:
//!
//! - **in flight**: a job this settler already has a live transaction for, or that a settler
//!   transaction of any key released within the reorg window (the store may not show it yet), is
//!   left alone;
//! - **due**: a job is acted on in the target block, the first block whose timestamp reaches its
//!   `at` (chain time: the lowest timestamp the next block can have, [`Clock`]); never a
//!   block early, since that would revert;
//! - **whose**: a worker's settler ends its own worker's jobs; only a keeper claims timeouts;
//! - **worth**: what each job pays this key, which is also the most its transaction may spend. A
//!   keeper collects the release bounty or the timeout bounty; a worker releasing its own job
//!   collects its share of the fee; settling one's own stuck job frees a slot and is worth no
//!   measured amount (only the operator's ceiling bounds it); settling another worker's stuck job
//!   pays nothing;
//! - **profitability**: a keeper takes another worker's job only when its bounty covers the gas
//!   the job adds to a batch at the target block's price; a worker's own jobs skip this test.
//!   The batch as a whole must then also pay for its fixed gas, through its ceiling (below);
//! - **batching**: due releases in schedule order, as many per transaction as fit under the
//!   operator's `max_batch_gas` gas limit with the gas model ([`Gas`]: a fixed part per batch and
//!   a part per job learned from simulations).
//!
//! ## The ceiling per transaction
//!
//! Every transaction gets a [`FeeCap`]: the operator's cap lowered by
//! [`FeeCap::at_most_worth`] to the transaction's worth (the sum over its jobs) divided by its
//! gas limit. Its `maxFeePerGas` never exceeds that, so whatever the market does, gas limit ×
//! max fee, the most it can cost, stays within what it collects; the outbox stores the ceiling
//! with the transaction, so no fee bump, re-sign or cancel of it offers more
//! (`lcw_chain::outbox`). When that ceiling is below the target block's price (base fee plus
//! tip) the transaction could not be included at its ceiling, so it is not sent at all: its jobs
//! wait, [`Skip::PricedOut`], until the price falls. A keeper facing a base-fee spike therefore
//! waits instead of paying. The planner reckons with the gas model's estimate; once a simulation
//! has measured the gas, the executor asks [`Pricing`] again with the measured limit.
//!
//! ## Arithmetic
//! Fees, bounties, gas and timestamps come from nodes, events and governance: arithmetic here
//! saturates or is checked, never overflows (a panic in a debug build, a wrapped value in a release
//! one). Clippy holds the module to it (`arithmetic_side_effects`, `cast_possible_truncation`); the
//! lint is per module, for the modules that compute money and time from outside values, because
//! across the workspace it would mostly flag counters and lengths the process made itself.
#![warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use std::collections::HashSet;
use std::fmt;

use alloy::primitives::{Address, U256};
use lcw_chain::FeeCap;
use lcw_chain::fees::Wei;
use lcw_chain::node::Fees;
use lcw_schema::rules::schedule::{self, Action, Due, Params, Reason};
use lcw_schema::types::JobState;

/// Whose jobs the settler ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One worker's jobs: releases, and no-fault settlement of jobs stranded by a closed session.
    Worker(Address),
    /// Every worker's due releases, and claimTimeout for jobs past their deadline, when the
    /// bounty covers the gas.
    Keeper,
}

/// Chain time as the settler has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The head's number.
    pub head: u64,
    /// The lowest timestamp the next block can have
    /// (`lcw_schema::rules::schedule::ChainClock::next_ts`).
    pub next_ts: u64,
}

impl Clock {
    /// The block the plan is for: the one after the head.
    pub fn target(self) -> Target {
        Target { number: self.head.saturating_add(1), timestamp: self.next_ts }
    }
}

/// The block a transaction is planned for (simulated in, and meant to land in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Its number.
    pub number: u64,
    /// Its lowest possible timestamp.
    pub timestamp: u64,
}

/// The price of gas in the target block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Market {
    /// The target block's base fee.
    pub base_fee: u128,
    /// The priority fee offered.
    pub tip: u128,
}

impl Market {
    /// The market of the block after the head, from the fees a new transaction offers
    /// (`lcw_chain::node::Chain::fees`: twice the next block's base fee, from the node's fee
    /// history, plus the tip).
    pub fn of(fees: Fees) -> Market {
        Market { base_fee: fees.max_fee.saturating_sub(fees.tip) / 2, tip: fees.tip }
    }

    /// What one gas costs in the target block: base fee (at least 1 wei) plus tip.
    pub fn price(self) -> u128 {
        self.base_fee.max(1).saturating_add(self.tip)
    }
}

/// What a transaction's jobs are worth to this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worth {
    /// Wei collected (bounties, or a worker's share): it also bounds what the transaction pays.
    Wei(u128),
    /// Not measured in wei (settling one's own stuck job frees a slot): only the operator's cap
    /// bounds it.
    Unmeasured,
}

/// The market and the operator's ceiling: what any transaction may pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// The target block's price.
    pub market: Market,
    /// The operator's ceiling (`--max-fee-per-gas`).
    pub fee_cap: FeeCap,
}

impl Pricing {
    /// The ceiling of a transaction worth `worth` with `gas_limit` gas: the operator's cap lowered
    /// to its worth per gas. [`Skip::PricedOut`] when that is below the target block's price (it
    /// could not be included at its ceiling, and sending it would only hold a nonce).
    pub fn ceiling(self, worth: Worth, gas_limit: u64) -> Result<FeeCap, Skip> {
        let cap = match worth {
            Worth::Wei(w) => self.fee_cap.at_most_worth(w, gas_limit, 0),
            Worth::Unmeasured => self.fee_cap,
        };
        let price = self.market.price();
        if cap.per_gas < price {
            return Err(Skip::PricedOut { cap: cap.per_gas, price });
        }
        Ok(cap)
    }
}

/// The gas limit of a transaction whose simulation used `used`: a quarter more plus 20,000, so
/// that state changed by transactions ahead of it in the block cannot run it out of gas.
pub fn gas_limit(used: u64) -> u64 {
    used.saturating_add(used / 4).saturating_add(20_000)
}

/// The gas the plan reckons with before a simulation measures it: a batch of `n` releases uses
/// `per_batch + n × per_job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gas {
    /// Gas each released job adds to a batch (learned from simulated batches, [`Gas::learned`]).
    pub per_job: u64,
    /// Gas of a batch beyond its jobs' (the transaction, the call, the bounty payment).
    pub per_batch: u64,
    /// Gas of a claimTimeout or settleStuckJob.
    pub single: u64,
    /// The largest gas limit of one transaction (`max_batch_gas`): batches split below it.
    pub max_batch: u64,
}

impl Gas {
    /// The gas a batch of `n` releases is expected to use.
    pub fn batch(self, n: u64) -> u64 {
        self.per_batch.saturating_add(self.per_job.saturating_mul(n))
    }

    /// The model after a simulated batch of `n` releases used `used` gas: what it used beyond
    /// `per_batch`, per job (at least [`MIN_GAS_PER_JOB`]).
    pub fn learned(self, n: u64, used: u64) -> Gas {
        let extra = used.saturating_sub(self.per_batch);
        let per_job = extra.checked_div(n).unwrap_or(extra).max(MIN_GAS_PER_JOB);
        Gas { per_job, ..self }
    }
}

/// The least gas a released job is taken to add to a batch.
pub const MIN_GAS_PER_JOB: u64 = 5_000;

/// Everything one tick's decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The schedule of the open jobs, soonest first.
    pub schedule: &'a [Due],
    /// Jobs this settler has a live transaction for.
    pub in_flight: &'a HashSet<u64>,
    /// Jobs a settler transaction of any key released or settled within the reorg window.
    pub recently_mined: &'a HashSet<u64>,
    /// Only these jobs (`lcw release --jobs`); the rest are not considered at all.
    pub only: Option<&'a HashSet<u64>>,
    /// Whose jobs.
    pub mode: Mode,
    /// The signing key's address (a keeper that is also a worker collects its own share).
    pub me: Address,
    /// Governance parameters in force (shares and bounties).
    pub params: &'a Params,
    /// Chain time.
    pub clock: Clock,
    /// The gas model.
    pub gas: Gas,
    /// The price and the operator's ceiling.
    pub pricing: Pricing,
}

/// One job of a release batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Job id.
    pub job_id: u64,
    /// What releasing it pays this key (bounty, or the worker's own share).
    pub worth: u128,
}

/// One `releaseJobs` transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its jobs, in schedule order.
    pub jobs: Vec<Release>,
    /// Its estimated gas limit (at most `max_batch_gas` unless one job alone exceeds it).
    pub gas_limit: u64,
    /// The most it may pay: the operator's cap and its jobs' worth over its gas limit.
    pub cap: FeeCap,
}

impl Batch {
    /// The job ids.
    pub fn ids(&self) -> Vec<u64> {
        self.jobs.iter().map(|r| r.job_id).collect()
    }

    /// What the batch is worth (the sum over its jobs).
    pub fn worth(jobs: &[Release]) -> u128 {
        jobs.iter().fold(0u128, |sum, r| sum.saturating_add(r.worth))
    }
}

/// One claimTimeout or settleStuckJob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Single {
    /// Job id.
    pub job_id: u64,
    /// claimTimeout or settleStuckJob.
    pub action: Action,
    /// What it pays this key.
    pub worth: Worth,
    /// Its estimated gas limit.
    pub gas_limit: u64,
    /// The most it may pay per gas.
    pub cap: FeeCap,
}

/// Why a job is not acted on in this block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its action succeeds only from chain time `at`, after the target block's timestamp.
    NotDue {
        /// The first timestamp at which it succeeds.
        at: u64,
    },
    /// This settler already has a live transaction for it.
    InFlight,
    /// A settler transaction released or settled it within the reorg window.
    RecentlyMined,
    /// A timeout, and this settler is not a keeper: a worker's settler never claims against its
    /// own worker.
    KeeperOnly,
    /// What it pays this key does not cover the gas it needs at the target block's price.
    Unprofitable {
        /// Wei it pays.
        worth: u128,
        /// Wei its gas would cost.
        cost: u128,
    },
    /// The most its transaction may pay per gas is below the target block's price: it waits for
    /// the price to fall.
    PricedOut {
        /// The transaction's ceiling per gas.
        cap: u128,
        /// The target block's price per gas.
        price: u128,
    },
    /// The store refused it: another key or lane has a live transaction for it (found by the
    /// executor when it records the intent).
    LiveElsewhere,
    /// Its simulation in the target block fails (found by the executor).
    WouldRevert(String),
    /// The wallet cannot pay for its gas at its ceiling beside what is already in flight (found
    /// by the executor): nothing is signed until it is topped up.
    NoFunds {
        /// The wallet's balance.
        balance: u128,
        /// What the transaction and those in flight may cost at most.
        needs: u128,
    },
}

impl Skip {
    /// A short stable name (log fields, summaries).
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::NotDue { .. } => "not_due",
            Skip::InFlight => "in_flight",
            Skip::RecentlyMined => "recently_mined",
            Skip::KeeperOnly => "keeper_only",
            Skip::Unprofitable { .. } => "unprofitable",
            Skip::PricedOut { .. } => "priced_out",
            Skip::LiveElsewhere => "live_elsewhere",
            Skip::WouldRevert(_) => "would_revert",
            Skip::NoFunds { .. } => "no_funds",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotDue { at } => write!(f, "not due before chain time {at}"),
            Skip::InFlight => f.write_str("a transaction of this settler is in flight"),
            Skip::RecentlyMined => f.write_str("a settler transaction ended it a few blocks ago"),
            Skip::KeeperOnly => f.write_str("only a keeper claims timeouts"),
            Skip::Unprofitable { worth, cost } => {
                write!(f, "unprofitable: pays {worth} wei, its gas costs {cost} wei at the current price")
            }
            Skip::PricedOut { cap, price } => write!(
                f,
                "priced out: it may pay at most {} per gas, the next block costs {}; waiting for the price to fall",
                Wei(*cap),
                Wei(*price)
            ),
            Skip::LiveElsewhere => {
                f.write_str("live elsewhere: another key or lane has a transaction in flight for it")
            }
            Skip::WouldRevert(reason) => write!(f, "would revert: {reason}"),
            Skip::NoFunds { balance, needs } => write!(
                f,
                "the wallet cannot pay for its gas: it holds {}, and this transaction with those in flight may \
                 cost {}; nothing is signed until the key is topped up",
                Wei(*balance),
                Wei(*needs)
            ),
        }
    }
}

/// A job left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Job id.
    pub job_id: u64,
    /// The action it is scheduled for.
    pub action: Action,
    /// Why not now.
    pub reason: Skip,
}

/// What to send for the target block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickPlan {
    /// The block it is for.
    pub target: Target,
    /// `releaseJobs` transactions.
    pub batches: Vec<Batch>,
    /// claimTimeout and settleStuckJob transactions.
    pub singles: Vec<Single>,
    /// Everything else, with its reason.
    pub skipped: Vec<Skipped>,
    /// The first release not due yet: (job id, releasable at).
    pub next_due: Option<(u64, u64)>,
}

/// Plans the target block (the head's next): see the module docs for what is decided.
pub fn plan(input: &Inputs<'_>) -> TickPlan {
    let target = input.clock.target();
    let price = input.pricing.market.price();
    let mut out = TickPlan { target, batches: Vec::new(), singles: Vec::new(), skipped: Vec::new(), next_due: None };
    let mut releases: Vec<Release> = Vec::new();
    for d in input.schedule {
        if input.only.is_some_and(|only| !only.contains(&d.job_id)) {
            continue;
        }
        let skip = match reason_to_wait(input, d, target) {
            Some(reason) => Some(reason),
            None => match d.action {
                Action::Release => {
                    let (worth, own) = release_worth(input, d);
                    // Each job pays for the gas it adds; the batch's ceiling then covers the rest.
                    let cost = price.saturating_mul(u128::from(input.gas.per_job));
                    if !own && worth < cost {
                        Some(Skip::Unprofitable { worth, cost })
                    } else {
                        releases.push(Release { job_id: d.job_id, worth });
                        None
                    }
                }
                Action::ClaimTimeout | Action::SettleStuck => match single(input, d) {
                    Ok(s) => {
                        out.singles.push(s);
                        None
                    }
                    Err(reason) => Some(reason),
                },
            },
        };
        if let Some(reason) = skip {
            if let (Skip::NotDue { at }, Action::Release, None) = (&reason, d.action, out.next_due) {
                out.next_due = Some((d.job_id, *at));
            }
            out.skipped.push(Skipped { job_id: d.job_id, action: d.action, reason });
        }
    }
    for chunk in releases.chunks(jobs_per_batch(input.gas)) {
        let gas_limit = gas_limit(input.gas.batch(chunk.len() as u64));
        match input.pricing.ceiling(Worth::Wei(Batch::worth(chunk)), gas_limit) {
            Ok(cap) => out.batches.push(Batch { jobs: chunk.to_vec(), gas_limit, cap }),
            Err(reason) => out.skipped.extend(chunk.iter().map(|r| Skipped {
                job_id: r.job_id,
                action: Action::Release,
                reason: reason.clone(),
            })),
        }
    }
    out
}

/// Why `d` is not for the target block at all, whatever it is worth.
fn reason_to_wait(input: &Inputs<'_>, d: &Due, target: Target) -> Option<Skip> {
    if input.in_flight.contains(&d.job_id) {
        Some(Skip::InFlight)
    } else if input.recently_mined.contains(&d.job_id) {
        Some(Skip::RecentlyMined)
    } else if d.at > target.timestamp {
        Some(Skip::NotDue { at: d.at })
    } else if d.action == Action::ClaimTimeout && input.mode != Mode::Keeper {
        Some(Skip::KeeperOnly)
    } else {
        None
    }
}

/// Whether `d`'s worker is the one this settler works for (or the signing key itself).
fn is_own(input: &Inputs<'_>, d: &Due) -> bool {
    d.worker == input.me || input.mode == Mode::Worker(d.worker)
}

/// What releasing `d` pays this key, and whether it is the worker's own job (no profitability
/// test then: releasing is how the worker gets paid).
fn release_worth(input: &Inputs<'_>, d: &Due) -> (u128, bool) {
    if is_own(input, d) {
        (wei(schedule::worker_share(d.fee, input.params)), true)
    } else {
        (wei(schedule::keeper_bounty(d, JobState::Completed, input.params)), false)
    }
}

/// claimTimeout or settleStuckJob for `d`, or why not.
fn single(input: &Inputs<'_>, d: &Due) -> Result<Single, Skip> {
    let gas_limit = gas_limit(input.gas.single);
    let worth = match (d.action, is_own(input, d)) {
        (Action::SettleStuck, true) => Worth::Unmeasured,
        // The slash the bounty is a share of depends on the state the job timed out in.
        (Action::ClaimTimeout, _) => {
            let state = if d.reason == Reason::AckTimeout { JobState::Submitted } else { JobState::Acknowledged };
            Worth::Wei(wei(schedule::keeper_bounty(d, state, input.params)))
        }
        // Settling another worker's stuck job pays no bounty.
        _ => Worth::Wei(0),
    };
    if let Worth::Wei(w) = worth {
        let cost = input.pricing.market.price().saturating_mul(u128::from(gas_limit));
        if w < cost {
            return Err(Skip::Unprofitable { worth: w, cost });
        }
    }
    let cap = input.pricing.ceiling(worth, gas_limit)?;
    Ok(Single { job_id: d.job_id, action: d.action, worth, gas_limit, cap })
}

/// How many releases fit in one transaction whose gas limit stays under `max_batch` (at least
/// one).
fn jobs_per_batch(gas: Gas) -> usize {
    // gas_limit(u) <= max_batch whenever u <= (max_batch - 20,000) * 4/5.
    let room = gas.max_batch.saturating_sub(gas_limit(0)).saturating_mul(4) / 5;
    let room = room.saturating_sub(gas.per_batch);
    let mut n = room.checked_div(gas.per_job).unwrap_or(room).max(1);
    while n > 1 && gas_limit(gas.batch(n)) > gas.max_batch {
        n = n.saturating_sub(1);
    }
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn wei(v: U256) -> u128 {
    v.try_into().unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lcw_chain::fees::GWEI;

    /// 0.01 LCAI, the devnet model's fee: a 1 % release bounty of 0.0001 LCAI, an 80 % share.
    const FEE: u128 = 10_000_000_000_000_000;
    const BOUNTY: u128 = FEE / 100;
    const SHARE: u128 = FEE * 8 / 10;
    const NEXT_TS: u64 = 1_000;

    fn me() -> Address {
        Address::repeat_byte(0xee)
    }
    fn worker() -> Address {
        Address::repeat_byte(1)
    }
    fn other() -> Address {
        Address::repeat_byte(2)
    }

    fn due(job_id: u64, worker: Address, action: Action, reason: Reason, at: u64) -> Due {
        Due { job_id, worker, action, reason, at, fee: U256::from(FEE) }
    }
    fn release(job_id: u64, worker: Address, at: u64) -> Due {
        due(job_id, worker, Action::Release, Reason::DisputeWindow, at)
    }

    /// A tick's inputs, owned; `plan()` borrows them.
    struct World {
        schedule: Vec<Due>,
        in_flight: HashSet<u64>,
        recently_mined: HashSet<u64>,
        only: Option<HashSet<u64>>,
        mode: Mode,
        params: Params,
        gas: Gas,
        pricing: Pricing,
    }

    impl World {
        fn new(mode: Mode, schedule: Vec<Due>) -> World {
            World {
                schedule,
                in_flight: HashSet::new(),
                recently_mined: HashSet::new(),
                only: None,
                mode,
                params: Params {
                    dispute_window: 4,
                    resolution_timeout: 30,
                    worker_fee_bps: 8_000,
                    release_bounty_bps: 100,
                    timeout_bounty_bps: 1_000,
                    timeout_slash_bps: 200,
                    completion_timeout_slash_bps: 500,
                    min_worker_stake: U256::from(100_000_000_000_000_000_000u128),
                },
                gas: Gas { per_job: 40_000, per_batch: 60_000, single: 100_000, max_batch: 15_000_000 },
                // A quiet devnet: a tenth of a gwei.
                pricing: Pricing {
                    market: Market { base_fee: GWEI / 10, tip: GWEI / 1000 },
                    fee_cap: FeeCap::default(),
                },
            }
        }

        fn keeper(schedule: Vec<Due>) -> World {
            World::new(Mode::Keeper, schedule)
        }

        fn at_base_fee(mut self, base_fee: u128) -> World {
            self.pricing.market.base_fee = base_fee;
            self
        }

        fn plan(&self) -> TickPlan {
            plan(&Inputs {
                schedule: &self.schedule,
                in_flight: &self.in_flight,
                recently_mined: &self.recently_mined,
                only: self.only.as_ref(),
                mode: self.mode,
                me: me(),
                params: &self.params,
                clock: Clock { head: 99, next_ts: NEXT_TS },
                gas: self.gas,
                pricing: self.pricing,
            })
        }
    }

    impl TickPlan {
        fn released(&self) -> Vec<u64> {
            self.batches.iter().flat_map(Batch::ids).collect()
        }
        fn skip_of(&self, job_id: u64) -> Option<&Skip> {
            self.skipped.iter().find(|s| s.job_id == job_id).map(|s| &s.reason)
        }
    }

    #[test]
    fn a_release_is_planned_for_the_first_block_whose_timestamp_reaches_it() {
        // (releasable at, planned for the target block)
        let table = [(0, true), (NEXT_TS - 1, true), (NEXT_TS, true), (NEXT_TS + 1, false), (NEXT_TS + 60, false)];
        for (at, planned) in table {
            let p = World::keeper(vec![release(7, other(), at)]).plan();
            assert_eq!(p.target, Target { number: 100, timestamp: NEXT_TS });
            assert_eq!(p.released() == vec![7], planned, "releasable at {at}: {p:?}");
            if !planned {
                assert_eq!(p.skip_of(7), Some(&Skip::NotDue { at }));
                assert_eq!(p.next_due, Some((7, at)));
            }
        }
        // The first release not due yet is reported, not a later one.
        let p =
            World::keeper(vec![release(1, other(), NEXT_TS), release(3, other(), 1_005), release(2, other(), 1_009)])
                .plan();
        assert_eq!((p.released(), p.next_due), (vec![1], Some((3, 1_005))));
    }

    #[test]
    fn a_batch_splits_at_max_batch_gas() {
        // (max batch gas, gas per batch, gas per job, jobs due, expected batch sizes)
        let table: [(u64, u64, u64, u64, &[usize]); 6] = [
            // A 125,000 gas limit per job and 20,000 per transaction: 7 jobs fit in 1 M.
            (1_000_000, 0, 100_000, 20, &[7, 7, 6]),
            (1_000_000, 0, 100_000, 7, &[7]),
            // With 100,000 of fixed gas, 6.
            (1_000_000, 100_000, 100_000, 20, &[6, 6, 6, 2]),
            (15_000_000, 60_000, 40_000, 600, &[298, 298, 4]),
            // A job larger than the limit still goes, alone.
            (100_000, 60_000, 200_000, 3, &[1, 1, 1]),
            (145_000, 0, 100_000, 2, &[1, 1]),
        ];
        for (max_batch, per_batch, per_job, n, sizes) in table {
            let mut w = World::keeper((1..=n).map(|id| release(id, other(), NEXT_TS)).collect());
            w.gas = Gas { per_job, per_batch, single: 100_000, max_batch };
            w.pricing.market = Market { base_fee: 1, tip: 1 };
            let p = w.plan();
            let got: Vec<usize> = p.batches.iter().map(|b| b.jobs.len()).collect();
            assert_eq!(got, sizes, "max batch gas {max_batch}, {per_job} gas per job, {n} jobs");
            assert_eq!(p.released(), (1..=n).collect::<Vec<_>>(), "every job once, in schedule order");
            for b in p.batches.iter().filter(|b| b.jobs.len() > 1) {
                assert!(b.gas_limit <= max_batch, "{} > {max_batch}", b.gas_limit);
            }
        }
    }

    #[test]
    fn a_keeper_skips_an_unprofitable_job_and_takes_it_once_the_price_falls() {
        let schedule = vec![release(1, other(), NEXT_TS), release(2, other(), NEXT_TS)];
        let tip = GWEI / 1000;
        // Each 0.0001 LCAI bounty pays for its 40,000 gas up to 2.5 gwei; the two together pay for
        // the batch's 195,000 gas limit up to 1.0256 gwei.
        let cap = 2 * BOUNTY / 195_000;
        // (base fee, expected: None when both are released)
        let table = [
            (20_000 * GWEI, Some(Skip::Unprofitable { worth: BOUNTY, cost: (20_000 * GWEI + tip) * 40_000 })),
            (100 * GWEI, Some(Skip::Unprofitable { worth: BOUNTY, cost: (100 * GWEI + tip) * 40_000 })),
            (3 * GWEI, Some(Skip::Unprofitable { worth: BOUNTY, cost: (3 * GWEI + tip) * 40_000 })),
            (2 * GWEI, Some(Skip::PricedOut { cap, price: 2 * GWEI + tip })),
            (GWEI, None),
            (7, None),
        ];
        for (base_fee, expected) in table {
            let p = World::keeper(schedule.clone()).at_base_fee(base_fee).plan();
            match expected {
                None => assert_eq!(p.released(), vec![1, 2], "at {}: {p:?}", Wei(base_fee)),
                Some(skip) => {
                    assert!(p.batches.is_empty(), "at {}: {p:?}", Wei(base_fee));
                    assert_eq!((p.skip_of(1), p.skip_of(2)), (Some(&skip), Some(&skip)), "at {}", Wei(base_fee));
                }
            }
        }
    }

    #[test]
    fn the_cap_per_batch_never_lets_max_cost_exceed_the_batch_worth() {
        let prices = [1, 1_000, GWEI / 10, GWEI, 2 * GWEI, 50 * GWEI, 99 * GWEI, 100 * GWEI, 20_000 * GWEI];
        for base_fee in prices {
            for per_job in [20_000, 40_000, 80_000, 300_000] {
                for n in [1u64, 2, 5, 100, 400] {
                    // Half the jobs the keeper's own (a share), half others' (a bounty).
                    let schedule =
                        (1..=n).map(|id| release(id, if id % 2 == 0 { me() } else { other() }, NEXT_TS)).collect();
                    let mut w = World::keeper(schedule).at_base_fee(base_fee);
                    w.gas.per_job = per_job;
                    let price = w.pricing.market.price();
                    for b in w.plan().batches {
                        let worth = Batch::worth(&b.jobs);
                        assert!(b.cap.max_cost(b.gas_limit, 0) <= worth, "{b:?} costs more than {worth}");
                        assert!(b.cap.per_gas <= FeeCap::default().per_gas, "above the operator's cap: {b:?}");
                        assert!(b.cap.per_gas >= price, "a batch is only sent when it can be included: {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_workers_own_jobs_are_released_when_a_keeper_would_find_them_unprofitable_but_under_the_operator_cap() {
        let schedule = vec![release(1, worker(), NEXT_TS)];
        let tip = GWEI / 1000;
        // At 5 gwei the bounty does not pay for the gas; the worker's share does.
        let keeper = World::keeper(schedule.clone()).at_base_fee(5 * GWEI).plan();
        assert!(matches!(keeper.skip_of(1), Some(Skip::Unprofitable { .. })), "{keeper:?}");
        let own = World::new(Mode::Worker(worker()), schedule.clone()).at_base_fee(5 * GWEI).plan();
        assert_eq!(own.released(), vec![1]);
        assert_eq!(own.batches[0].jobs[0].worth, SHARE);
        // 0.008 LCAI over a 145,000 gas limit: 55 gwei per gas at most, under the operator's 100.
        let share_cap = SHARE / 145_000;
        assert_eq!(own.batches[0].cap.per_gas, share_cap);
        let above = World::new(Mode::Worker(worker()), schedule.clone()).at_base_fee(60 * GWEI).plan();
        assert_eq!(above.skip_of(1), Some(&Skip::PricedOut { cap: share_cap, price: 60 * GWEI + tip }));
        // An operator's cap below that binds, and above it the job waits too.
        let mut w = World::new(Mode::Worker(worker()), schedule.clone()).at_base_fee(5 * GWEI);
        w.pricing.fee_cap = FeeCap::new(10 * GWEI, 10 * GWEI);
        assert_eq!(w.plan().batches[0].cap.per_gas, 10 * GWEI);
        let spike = w.at_base_fee(20 * GWEI).plan();
        assert!(spike.batches.is_empty());
        assert_eq!(spike.skip_of(1), Some(&Skip::PricedOut { cap: 10 * GWEI, price: 20 * GWEI + tip }));
        // A keeper key that is the job's worker collects the share as well.
        let mine = World::keeper(vec![release(1, me(), NEXT_TS)]).at_base_fee(5 * GWEI).plan();
        assert_eq!(mine.released(), vec![1]);
    }

    #[test]
    fn jobs_in_flight_or_recently_mined_are_left_alone_and_only_listed_jobs_considered() {
        let schedule: Vec<Due> = (1..=4).map(|id| release(id, other(), NEXT_TS)).collect();
        let mut w = World::keeper(schedule);
        w.in_flight.insert(1);
        w.recently_mined.insert(2);
        let p = w.plan();
        assert_eq!(p.released(), vec![3, 4]);
        assert_eq!((p.skip_of(1), p.skip_of(2)), (Some(&Skip::InFlight), Some(&Skip::RecentlyMined)));
        w.only = Some([4, 9].into());
        let p = w.plan();
        assert_eq!(p.released(), vec![4]);
        assert_eq!(p.skip_of(3), None, "not listed: not considered at all");
    }

    #[test]
    fn timeouts_are_claimed_by_keepers_for_bounties_and_stuck_jobs_settled_by_their_worker() {
        let operator = FeeCap::default();
        // 100 LCAI stake, 2 % slashed for a missed ack, 10 % of that to the keeper.
        let ack_bounty = 200_000_000_000_000_000u128;
        let ack = due(5, other(), Action::ClaimTimeout, Reason::AckTimeout, NEXT_TS);
        let completion = due(6, worker(), Action::ClaimTimeout, Reason::CompletionTimeout, NEXT_TS);
        let stuck = due(7, worker(), Action::SettleStuck, Reason::SessionClosed, NEXT_TS);
        let keeper = Mode::Keeper;
        let own = Mode::Worker(worker());
        // (mode, due, base fee, expected)
        // A single's worth and ceiling per gas, or why it is skipped.
        type Decided = Result<(Worth, u128), Skip>;
        let table: Vec<(Mode, &Due, u128, Decided)> = vec![
            (keeper, &ack, GWEI, Ok((Worth::Wei(ack_bounty), operator.per_gas))),
            // 5 % of the stake for a missed completion.
            (keeper, &completion, GWEI, Ok((Worth::Wei(ack_bounty * 5 / 2), operator.per_gas))),
            (
                keeper,
                &ack,
                20_000 * GWEI,
                Err(Skip::Unprofitable { worth: ack_bounty, cost: (20_000 * GWEI + GWEI / 1000) * 145_000 }),
            ),
            (own, &completion, GWEI, Err(Skip::KeeperOnly)),
            (own, &stuck, GWEI, Ok((Worth::Unmeasured, operator.per_gas))),
            (own, &stuck, 150 * GWEI, Err(Skip::PricedOut { cap: operator.per_gas, price: 150 * GWEI + GWEI / 1000 })),
            // Another worker's stuck job pays a keeper nothing.
            (keeper, &stuck, GWEI, Err(Skip::Unprofitable { worth: 0, cost: (GWEI + GWEI / 1000) * 145_000 })),
        ];
        for (mode, d, base_fee, expected) in table {
            let p = World::new(mode, vec![d.clone()]).at_base_fee(base_fee).plan();
            let got = match (p.singles.first(), p.skip_of(d.job_id)) {
                (Some(s), None) => {
                    assert_eq!((s.job_id, s.action, s.gas_limit), (d.job_id, d.action, 145_000));
                    Ok((s.worth, s.cap.per_gas))
                }
                (None, Some(skip)) => Err(skip.clone()),
                other => panic!("one decision per job: {other:?}"),
            };
            assert_eq!(got, expected, "{mode:?} {:?} at {}", d.action, Wei(base_fee));
        }
    }

    #[test]
    fn the_ceiling_is_the_lower_of_the_operator_cap_and_the_worth_per_gas() {
        let pricing = Pricing { market: Market { base_fee: GWEI, tip: 0 }, fee_cap: FeeCap::default() };
        // (worth, gas limit, ceiling per gas or the price it is below)
        let table = [
            (Worth::Wei(BOUNTY), 50_000, Ok(2 * GWEI)),
            (Worth::Wei(BOUNTY), 100_000, Ok(GWEI)),
            (Worth::Wei(BOUNTY), 100_001, Err(Skip::PricedOut { cap: BOUNTY / 100_001, price: GWEI })),
            (Worth::Wei(SHARE), 50_000, Ok(100 * GWEI)),
            (Worth::Wei(0), 21_000, Err(Skip::PricedOut { cap: 0, price: GWEI })),
            (Worth::Unmeasured, 10_000_000, Ok(100 * GWEI)),
        ];
        for (worth, gas_limit, expected) in table {
            let got = pricing.ceiling(worth, gas_limit).map(|c| c.per_gas);
            assert_eq!(got, expected, "{worth:?} over {gas_limit} gas");
            if let (Ok(cap), Worth::Wei(w)) = (got, worth) {
                assert!(cap * u128::from(gas_limit) <= w);
            }
        }
        assert_eq!(gas_limit(100_000), 145_000);
        // The target block's base fee, from what a new transaction offers.
        assert_eq!(Market::of(Fees { max_fee: 16 * GWEI + 7, tip: 7 }), Market { base_fee: 8 * GWEI, tip: 7 });
    }

    #[test]
    fn the_gas_per_job_is_learned_beyond_the_fixed_part_of_a_batch() {
        let gas = Gas { per_job: 40_000, per_batch: 60_000, single: 100_000, max_batch: 15_000_000 };
        // (jobs, gas used, learned gas per job)
        let table = [(20, 585_687, 26_284), (1, 95_000, 35_000), (10, 60_000, MIN_GAS_PER_JOB), (0, 100_000, 40_000)];
        for (n, used, per_job) in table {
            assert_eq!(gas.learned(n, used).per_job, per_job, "{n} jobs used {used}");
            assert_eq!(gas.learned(n, used).per_batch, 60_000);
        }
        assert_eq!(gas.batch(3), 180_000);
    }

    #[test]
    fn extreme_chain_values_give_a_plan_instead_of_a_panic() {
        // Every value the chain hands the planner at its limit: the head and timestamps at
        // u64::MAX, fees, stakes and shares at U256::MAX, prices at u128::MAX, gas at both ends.
        let huge = |mut d: Due| {
            d.fee = U256::MAX;
            d
        };
        let schedule = vec![
            huge(release(1, other(), u64::MAX)),
            huge(release(2, other(), 0)),
            huge(due(3, other(), Action::ClaimTimeout, Reason::AckTimeout, u64::MAX)),
            huge(due(4, me(), Action::SettleStuck, Reason::SessionClosed, 0)),
        ];
        let params = Params {
            dispute_window: u64::MAX,
            resolution_timeout: u64::MAX,
            worker_fee_bps: u64::MAX,
            release_bounty_bps: u64::MAX,
            timeout_bounty_bps: u64::MAX,
            timeout_slash_bps: u64::MAX,
            completion_timeout_slash_bps: u64::MAX,
            min_worker_stake: U256::MAX,
        };
        let none = HashSet::new();
        let gases = [
            Gas { per_job: u64::MAX, per_batch: u64::MAX, single: u64::MAX, max_batch: u64::MAX },
            Gas { per_job: 0, per_batch: 0, single: 0, max_batch: 0 },
        ];
        let markets = [Market { base_fee: u128::MAX, tip: u128::MAX }, Market { base_fee: 0, tip: 0 }];
        for (gas, market, mode) in every_case(gases, markets) {
            let p = plan(&Inputs {
                schedule: &schedule,
                in_flight: &none,
                recently_mined: &none,
                only: None,
                mode,
                me: me(),
                params: &params,
                clock: Clock { head: u64::MAX, next_ts: u64::MAX },
                gas,
                pricing: Pricing { market, fee_cap: FeeCap::new(u128::MAX, u128::MAX) },
            });
            assert_eq!(p.target, Target { number: u64::MAX, timestamp: u64::MAX }, "saturates at the top");
            let decided = p.released().len() + p.singles.len() + p.skipped.len();
            assert_eq!(decided, 4, "one decision per job: {p:?}");
            for b in &p.batches {
                // Whatever it is worth, a transaction never offers more than it collects.
                let worth = Batch::worth(&b.jobs);
                assert!(b.cap.per_gas.saturating_mul(u128::from(b.gas_limit)) <= worth, "{b:?}");
            }
        }
        assert_eq!(gas_limit(u64::MAX), u64::MAX);
        let gas = Gas { per_job: 0, per_batch: 0, single: 0, max_batch: 0 };
        assert_eq!(gas.learned(0, u64::MAX).per_job, u64::MAX);
        assert_eq!(gas.batch(u64::MAX), 0);
        assert_eq!(jobs_per_batch(gas), 1, "at least one job per batch");
        assert!(jobs_per_batch(Gas { per_job: 0, per_batch: 0, single: 0, max_batch: u64::MAX }) > 1);
        let top = Market::of(Fees { max_fee: u128::MAX, tip: u128::MAX });
        assert_eq!((top.base_fee, top.price()), (0, u128::MAX));
    }

    /// Every (gas, market, mode) of the given gases and markets, both modes.
    fn every_case(gases: [Gas; 2], markets: [Market; 2]) -> Vec<(Gas, Market, Mode)> {
        let mut out = Vec::new();
        for gas in gases {
            for market in markets {
                for mode in [Mode::Keeper, Mode::Worker(other())] {
                    out.push((gas, market, mode));
                }
            }
        }
        out
    }
}
