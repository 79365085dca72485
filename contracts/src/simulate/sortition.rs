//! Sessions by sortition, the pure part: the run's session requests from `requestSession` to
//! `SessionReady` (or expiry), the simulated workers' turns in the claim window, and what the
//! request loop does at each head. The effectful shell is `requests.rs`.
//!
//! A request made in block `r` may first be claimed by a worker in block `r + delay`
//! ([`claim_delay`]); a simulated worker's claim is therefore sent when the head is
//! `r + delay - 1`, so that it lands in the first block in which it can succeed. Several
//! simulated workers may share that block: the first claim mined wins and the others revert
//! `AlreadyClaimed`, which the book counts as lost, not as a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use alloy::primitives::{Address, B256, U256};
use lcw_schema::rules::sortition::{claim_delay, first_claim_block};

use super::{BlockStats, SimulateReport};

/// Blocks `blockhash` reaches back; beyond them the seed is zero and every eligible worker may
/// claim at once (SessionManager's rule).
const BLOCKHASH_REACH: u64 = 256;

/// What a session request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A session that jobs go to, round-robin.
    Ordinary,
    /// A throwaway session: one job, closed at once, settled without fault.
    Settle,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `requestSession` sent; `SessionRequested` not seen yet.
    Sent,
    /// Requested; no claim yet.
    Open,
    /// Claimed; the session key is still to be provided (or is on its way).
    Claimed,
    /// `SessionReady` seen: the session is open.
    Ready,
    /// Not ready by its expiry.
    Expired,
    /// The request transaction reverted or was never mined.
    Failed,
}

#[derive(Debug, Clone)]
struct Request {
    consumer: Address,
    purpose: Purpose,
    /// Unix time after which it can no longer be claimed or made ready.
    expiry: u64,
    /// 0 for the requests made before the first job; re-requests are round 1 on.
    round: u32,
    id: u64,
    /// Block of `SessionRequested`; its hash is the draw's seed.
    block: u64,
    seed: B256,
    status: Status,
    /// The winning claim: worker and block.
    claimed: Option<(Address, u64)>,
    /// Simulated workers that sent a claim.
    claimers: BTreeSet<Address>,
    /// First claim block of each simulated worker, as last computed.
    turns: BTreeMap<Address, u64>,
    /// `provideSessionKey` sent.
    provided: bool,
}

/// A simulated worker as the claim decision sees it (read from the chain at the head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub worker: Address,
    /// `WorkerRegistry.getWorkerStake`.
    pub stake: U256,
    /// `WorkerRegistry.isEligible` for the run's model.
    pub eligible: bool,
    /// `WorkerRegistry.getActiveJobCount`.
    pub active_jobs: u64,
}

/// The chain's claim-window parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ClaimRule {
    /// `AIConfig.getMinWorkerStake`.
    pub min_stake: U256,
    /// `AIConfig.getClaimWindowBlocks`.
    pub window: U256,
    /// `AIConfig.getMaxConcurrentJobs`: a worker with this many active jobs cannot claim.
    pub max_jobs: u64,
}

/// The head a decision is made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub block: u64,
    /// Its timestamp.
    pub time: u64,
    /// The smallest block interval seen (s): the next block's timestamp is at least `time + interval`.
    pub interval: u64,
}

/// One thing the request loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Simulated `worker` claims request `req`; `first_block` is the first block it can succeed in.
    Claim { req: u64, worker: Address, first_block: u64 },
    /// The requester provides the session key wrapped for the winner `worker`.
    Provide { req: u64, consumer: Address, worker: Address, purpose: Purpose },
    /// The request expired unready; `again`: request a new one for the same consumer and purpose.
    Expire { consumer: Address, purpose: Purpose, again: bool },
}

/// A request that became ready: the session joins the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    pub consumer: Address,
    pub worker: Address,
    pub purpose: Purpose,
}

/// How a reverted claim is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimRevert {
    /// Another worker's claim was mined first (`AlreadyClaimed`): expected, counted as lost.
    Lost,
    /// Anything else: a real failure.
    Unexpected,
}

/// The run's session requests and the counters the report shows.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    list: Vec<Request>,
    by_tx: HashMap<B256, usize>,
    by_id: HashMap<u64, usize>,
    requested: u64,
    claimed: u64,
    ready: u64,
    expired: u64,
    claims_sent: u64,
    claims_lost: u64,
    won_by: BTreeMap<Address, u64>,
    /// Blocks from each request to its claim.
    latency: Vec<u64>,
    /// Blocks from a simulated winner's first claim block to its claim.
    lag: Vec<u64>,
}

impl Requests {
    /// A `requestSession` transaction `tx` was sent.
    pub(crate) fn sent(&mut self, tx: B256, consumer: Address, purpose: Purpose, expiry: u64, round: u32) {
        self.by_tx.insert(tx, self.list.len());
        self.list.push(Request {
            consumer,
            purpose,
            expiry,
            round,
            id: 0,
            block: 0,
            seed: B256::ZERO,
            status: Status::Sent,
            claimed: None,
            claimers: BTreeSet::new(),
            turns: BTreeMap::new(),
            provided: false,
        });
        self.requested += 1;
    }

    /// `SessionRequested(id)` emitted by transaction `tx` in `block` (hash `seed`); false when the
    /// request is not this run's.
    pub(crate) fn on_requested(&mut self, tx: B256, id: u64, block: u64, seed: B256) -> bool {
        let Some(&i) = self.by_tx.get(&tx) else { return false };
        let r = &mut self.list[i];
        if r.status != Status::Sent {
            return false;
        }
        (r.id, r.block, r.seed, r.status) = (id, block, seed, Status::Open);
        self.by_id.insert(id, i);
        true
    }

    /// `SessionClaimed(id, worker)` in `block`; false when the request is not this run's.
    pub(crate) fn on_claimed(&mut self, id: u64, worker: Address, block: u64) -> bool {
        let Some(&i) = self.by_id.get(&id) else { return false };
        let r = &mut self.list[i];
        if r.status != Status::Open {
            return false;
        }
        r.status = Status::Claimed;
        r.claimed = Some((worker, block));
        self.claimed += 1;
        *self.won_by.entry(worker).or_default() += 1;
        self.latency.push(block.saturating_sub(r.block));
        if r.claimers.contains(&worker)
            && let Some(first) = r.turns.get(&worker)
        {
            self.lag.push(block.saturating_sub(*first));
        }
        true
    }

    /// `SessionReady(id, session)`: the session joins the run.
    pub(crate) fn on_ready(&mut self, id: u64) -> Option<Ready> {
        let &i = self.by_id.get(&id)?;
        let r = &mut self.list[i];
        let (worker, _) = r.claimed?;
        if r.status != Status::Claimed {
            return None;
        }
        r.status = Status::Ready;
        self.ready += 1;
        Some(Ready { consumer: r.consumer, worker, purpose: r.purpose })
    }

    /// `worker`'s claim of `id`, mined in `block`, reverted.
    pub(crate) fn on_claim_reverted(&mut self, id: u64, worker: Address, block: u64) -> ClaimRevert {
        let claimed = self.by_id.get(&id).and_then(|i| self.list[*i].claimed);
        match claimed {
            Some((winner, at)) if winner != worker && at <= block => {
                self.claims_lost += 1;
                ClaimRevert::Lost
            }
            _ => ClaimRevert::Unexpected,
        }
    }

    /// The request transaction `tx` reverted or was given up on: the request is dropped and, if it
    /// was still waiting for its log, another one is due (consumer and purpose returned).
    pub(crate) fn on_request_lost(&mut self, tx: B256) -> Option<(Address, Purpose)> {
        let &i = self.by_tx.get(&tx)?;
        let r = &mut self.list[i];
        if r.status != Status::Sent {
            return None;
        }
        r.status = Status::Failed;
        Some((r.consumer, r.purpose))
    }

    /// Whether a request is open to claims, so the candidates' chain state is worth reading.
    pub(crate) fn any_open(&self) -> bool {
        self.list.iter().any(|r| r.status == Status::Open)
    }

    /// Whether a request made before the first job is still on its way to ready or expiry: jobs
    /// wait for them, as they wait for the dispatcher's sessions, so they spread over all sessions.
    pub(crate) fn warming_up(&self) -> bool {
        self.list.iter().any(|r| r.round == 0 && matches!(r.status, Status::Sent | Status::Open | Status::Claimed))
    }

    /// Requests still on their way to ready or expiry.
    pub(crate) fn unsettled(&self) -> usize {
        self.list.iter().filter(|r| matches!(r.status, Status::Sent | Status::Open | Status::Claimed)).count()
    }

    /// The next steps at `head`. `candidates` are the simulated workers; `more_ordinary`: jobs
    /// are still to be submitted, so an expired ordinary request is worth making again.
    ///
    /// - A request not ready when the head's timestamp reaches its expiry is expired: every later
    ///   block's timestamp is greater, so neither a claim nor the key can land any more.
    /// - A claimed request gets its key once, and a simulated worker claims an open request, only
    ///   while the next block lands by its expiry with a block to spare (`time + 2 × interval`):
    ///   a block mined late must not turn a claim or a key into a `RequestExpired` revert. A
    ///   request too close to its expiry is left to expire and made again.
    /// - Each simulated worker that is eligible, below capacity and has not claimed an open
    ///   request yet claims it when the next block is its first claim block (or later, if the
    ///   simulator fell behind).
    pub(crate) fn decide(
        &mut self,
        head: Head,
        candidates: &[Candidate],
        rule: &ClaimRule,
        more_ordinary: bool,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        let next_block = head.block + 1;
        let in_time = |expiry: u64| head.time + 2 * head.interval.max(1) <= expiry;
        for r in &mut self.list {
            let live = matches!(r.status, Status::Sent | Status::Open | Status::Claimed);
            if live && head.time >= r.expiry {
                r.status = Status::Expired;
                self.expired += 1;
                let again = r.purpose == Purpose::Settle || more_ordinary;
                steps.push(Step::Expire { consumer: r.consumer, purpose: r.purpose, again });
                continue;
            }
            match r.status {
                Status::Claimed if !r.provided && in_time(r.expiry) => {
                    let Some((worker, _)) = r.claimed else { continue };
                    r.provided = true;
                    steps.push(Step::Provide { req: r.id, consumer: r.consumer, worker, purpose: r.purpose });
                }
                Status::Open if in_time(r.expiry) => {
                    let seed = if next_block > r.block + BLOCKHASH_REACH { B256::ZERO } else { r.seed };
                    for c in candidates {
                        if !c.eligible || c.active_jobs >= rule.max_jobs || r.claimers.contains(&c.worker) {
                            continue;
                        }
                        let delay = claim_delay(seed, U256::from(r.id), c.worker, c.stake, rule.min_stake, rule.window);
                        let first = first_claim_block(r.block, delay);
                        r.turns.insert(c.worker, first);
                        if next_block >= first {
                            r.claimers.insert(c.worker);
                            self.claims_sent += 1;
                            steps.push(Step::Claim { req: r.id, worker: c.worker, first_block: first });
                        }
                    }
                }
                _ => {}
            }
        }
        steps
    }

    /// Copies the counters into the report.
    pub(crate) fn fill(&self, report: &mut SimulateReport) {
        report.sessions_requested = self.requested;
        report.sessions_claimed = self.claimed;
        report.sessions_ready = self.ready;
        report.requests_expired = self.expired;
        report.claims_sent = self.claims_sent;
        report.claims_lost = self.claims_lost;
        report.claims_won_by = self.won_by.clone();
        report.claim_latency_blocks = BlockStats::of(&self.latency);
        report.claim_lag_blocks = BlockStats::of(&self.lag);
    }

    /// Counts by status, for stall reports.
    pub(crate) fn summary(&self) -> String {
        let count = |s: Status| self.list.iter().filter(|r| r.status == s).count();
        format!(
            "session requests: {} sent, {} open, {} claimed, {} ready, {} expired, {} failed",
            count(Status::Sent),
            count(Status::Open),
            count(Status::Claimed),
            count(Status::Ready),
            count(Status::Expired),
            count(Status::Failed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Address = Address::repeat_byte(0xc0);
    const A: Address = Address::repeat_byte(0xa1);
    const B: Address = Address::repeat_byte(0xb2);
    const REAL: Address = Address::repeat_byte(0xee);

    fn lcai(n: u64) -> U256 {
        U256::from(n) * U256::from(10u64.pow(18))
    }

    fn rule() -> ClaimRule {
        ClaimRule { min_stake: lcai(100), window: U256::from(5), max_jobs: 64 }
    }

    fn candidate(worker: Address) -> Candidate {
        Candidate { worker, stake: lcai(100), eligible: true, active_jobs: 0 }
    }

    fn at(block: u64) -> Head {
        Head { block, time: 1_000 + block, interval: 1 }
    }

    fn tx(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    /// One ordinary request (id 1) made in block 10, expiring at time 1_100.
    fn book() -> Requests {
        let mut b = Requests::default();
        b.sent(tx(1), C, Purpose::Ordinary, 1_100, 0);
        assert!(b.on_requested(tx(1), 1, 10, B256::repeat_byte(0x5e)));
        b
    }

    fn first_block(worker: Address) -> u64 {
        first_claim_block(
            10,
            claim_delay(B256::repeat_byte(0x5e), U256::from(1), worker, lcai(100), lcai(100), U256::from(5)),
        )
    }

    #[test]
    fn a_simulated_worker_claims_when_the_head_is_one_block_before_its_turn() {
        let mut b = book();
        let first = first_block(A);
        for head in 10..first - 1 {
            assert!(b.decide(at(head), &[candidate(A)], &rule(), true).is_empty(), "head {head}");
        }
        let steps = b.decide(at(first - 1), &[candidate(A)], &rule(), true);
        assert_eq!(steps, vec![Step::Claim { req: 1, worker: A, first_block: first }]);
        assert!(b.decide(at(first), &[candidate(A)], &rule(), true).is_empty(), "claims once");
        b.on_claimed(1, A, first);
        let mut r = SimulateReport::default();
        b.fill(&mut r);
        assert_eq!((r.claims_sent, r.sessions_claimed, r.claim_lag_blocks.max), (1, 1, 0));
        assert_eq!(r.claim_latency_blocks.max, first - 10);
    }

    #[test]
    fn more_stake_brings_the_turn_forward_as_the_contract_computes_it() {
        let (mut low, mut high) = (book(), book());
        let rich = Candidate { stake: lcai(400), ..candidate(A) };
        let claim_head = |b: &mut Requests, c: Candidate| {
            (10..20).find(|h| !b.decide(at(*h), &[c], &rule(), true).is_empty()).expect("claims within the window")
        };
        let h_low = claim_head(&mut low, candidate(A));
        let h_high = claim_head(&mut high, rich);
        assert!(h_high <= h_low);
        let delay = claim_delay(B256::repeat_byte(0x5e), U256::from(1), A, lcai(400), lcai(100), U256::from(5));
        assert_eq!(h_high, 10 + delay - 1);
    }

    #[test]
    fn workers_at_capacity_or_ineligible_do_not_claim() {
        let mut b = book();
        let full = Candidate { active_jobs: 64, ..candidate(A) };
        let slashed = Candidate { eligible: false, ..candidate(B) };
        for head in 10..20 {
            assert!(b.decide(at(head), &[full, slashed], &rule(), true).is_empty());
        }
    }

    #[test]
    fn simulated_workers_race_and_the_loser_is_counted_lost() {
        let mut b = book();
        let steps: Vec<Step> =
            (10..16).flat_map(|h| b.decide(at(h), &[candidate(A), candidate(B)], &rule(), true)).collect();
        assert_eq!(steps.len(), 2, "both claim when their turn comes: {steps:?}");
        b.on_claimed(1, B, 15);
        assert_eq!(b.on_claim_reverted(1, A, 15), ClaimRevert::Lost);
        assert_eq!(b.on_claim_reverted(1, B, 15), ClaimRevert::Unexpected, "the winner's own revert is no loss");
        let mut r = SimulateReport::default();
        b.fill(&mut r);
        assert_eq!((r.claims_sent, r.claims_lost), (2, 1));
        assert_eq!(r.claims_won_by.get(&B), Some(&1));
    }

    #[test]
    fn a_claim_reverting_before_anyone_claimed_is_unexpected() {
        let mut b = book();
        assert_eq!(b.on_claim_reverted(1, A, 12), ClaimRevert::Unexpected);
        b.on_claimed(1, B, 14);
        assert_eq!(b.on_claim_reverted(1, A, 13), ClaimRevert::Unexpected, "reverted before the winner's block");
    }

    #[test]
    fn a_claim_by_a_worker_we_do_not_hold_gets_its_key_and_becomes_ready() {
        let mut b = book();
        assert!(b.on_claimed(1, REAL, 12));
        let steps = b.decide(at(12), &[candidate(A)], &rule(), true);
        assert_eq!(steps, vec![Step::Provide { req: 1, consumer: C, worker: REAL, purpose: Purpose::Ordinary }]);
        assert!(b.decide(at(13), &[candidate(A)], &rule(), true).is_empty(), "the key is provided once");
        assert_eq!(b.on_ready(1), Some(Ready { consumer: C, worker: REAL, purpose: Purpose::Ordinary }));
        assert_eq!(b.on_ready(1), None);
        let mut r = SimulateReport::default();
        b.fill(&mut r);
        assert_eq!((r.sessions_requested, r.sessions_claimed, r.sessions_ready), (1, 1, 1));
        assert_eq!(r.claim_lag_blocks.samples, 0, "no lag for a worker the simulator does not hold");
        assert!(!b.warming_up());
        assert_eq!(b.unsettled(), 0);
    }

    #[test]
    fn a_request_unready_at_its_expiry_is_expired_and_requested_again_while_needed() {
        for (purpose, more, again) in
            [(Purpose::Ordinary, true, true), (Purpose::Ordinary, false, false), (Purpose::Settle, false, true)]
        {
            let mut b = Requests::default();
            b.sent(tx(1), C, purpose, 1_100, 0);
            b.on_requested(tx(1), 1, 10, B256::repeat_byte(0x5e));
            b.on_claimed(1, REAL, 12);
            assert!(b.warming_up());
            let in_time = Head { block: 98, time: 1_098, interval: 1 };
            let provide = Step::Provide { req: 1, consumer: C, worker: REAL, purpose };
            let mut early = Requests::default();
            early.sent(tx(1), C, purpose, 1_100, 0);
            early.on_requested(tx(1), 1, 10, B256::repeat_byte(0x5e));
            early.on_claimed(1, REAL, 12);
            assert_eq!(early.decide(in_time, &[], &rule(), more), vec![provide], "the next block is 1_099 or 1_100");
            // Too close to the expiry: a late block would make the key revert.
            let late = Head { block: 99, time: 1_099, interval: 1 };
            assert!(b.decide(late, &[], &rule(), more).is_empty());
            let expired = Head { block: 100, time: 1_100, interval: 1 };
            assert_eq!(b.decide(expired, &[], &rule(), more), vec![Step::Expire { consumer: C, purpose, again }]);
            assert!(b.decide(Head { block: 101, ..expired }, &[], &rule(), more).is_empty(), "expires once");
            assert!(!b.warming_up());
            assert_eq!(b.on_ready(1), None, "too late");
            let mut r = SimulateReport::default();
            b.fill(&mut r);
            assert_eq!(r.requests_expired, 1);
        }
    }

    #[test]
    fn no_claim_is_sent_that_would_land_after_the_expiry() {
        let mut b = Requests::default();
        b.sent(tx(1), C, Purpose::Ordinary, 1_020, 0);
        b.on_requested(tx(1), 1, 10, B256::repeat_byte(0x5e));
        let head = Head { block: 30, time: 1_019, interval: 1 };
        assert!(b.decide(head, &[candidate(A)], &rule(), true).is_empty());
        let head = Head { block: 30, time: 1_018, interval: 1 };
        assert_eq!(b.decide(head, &[candidate(A)], &rule(), true).len(), 1, "a block to spare");
    }

    #[test]
    fn beyond_the_blockhash_reach_everyone_claims_at_once() {
        let mut b = Requests::default();
        b.sent(tx(1), C, Purpose::Ordinary, 100_000, 0);
        b.on_requested(tx(1), 1, 10, B256::repeat_byte(0x5e));
        let rule = ClaimRule { window: U256::from(1_000), ..rule() };
        // A worker joining late (just registered) finds the seed out of reach: delay 1.
        let steps = b.decide(at(10 + 256), &[candidate(A)], &rule, true);
        assert_eq!(steps, vec![Step::Claim { req: 1, worker: A, first_block: 11 }]);
    }

    #[test]
    fn logs_of_other_requests_are_ignored_and_lost_requests_are_made_again() {
        let mut b = book();
        assert!(!b.on_requested(tx(9), 2, 10, B256::ZERO), "not this run's transaction");
        assert!(!b.on_claimed(2, A, 12));
        assert_eq!(b.on_ready(2), None);
        b.sent(tx(2), C, Purpose::Settle, 1_100, 0);
        assert_eq!(b.on_request_lost(tx(2)), Some((C, Purpose::Settle)));
        assert_eq!(b.on_request_lost(tx(2)), None);
        assert_eq!(b.on_request_lost(tx(1)), None, "already requested");
        assert!(b.summary().contains("1 failed"), "{}", b.summary());
    }

    #[test]
    fn block_stats_take_the_lower_median_and_the_max() {
        assert_eq!(BlockStats::of(&[]), BlockStats::default());
        assert_eq!(BlockStats::of(&[3, 1, 2, 9]), BlockStats { samples: 4, p50: 2, max: 9 });
        assert_eq!(BlockStats::of(&[5]), BlockStats { samples: 1, p50: 5, max: 5 });
    }
}
