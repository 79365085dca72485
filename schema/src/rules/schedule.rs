//! The schedule: for every open job, the action that ends the worker's obligation and the first
//! chain timestamp at which that action succeeds. Pure functions of store rows and governance
//! parameters; no clock, no RPC.
//!
//! The devnet JobRegistry (and, as far as upstream shows, the real one) reads the dispute window
//! live at release time, so `releasableAt = completedAt + window in force`: a
//! `DisputeParamsUpdated` re-times every pending job the moment the indexer stores it.
//!
//! Every number here comes from outside the process (timestamps and numbers of heads a node
//! answered, deadlines and fees from events, governance parameters): arithmetic saturates rather
//! than overflowing, which would panic in a debug build and wrap in a release one. Clippy holds
//! this module to it; the rest of the crate is not linted so, where most arithmetic is on counts
//! and lengths the process made itself.
#![warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use crate::types::JobState;
use alloy::primitives::{Address, U256};
use serde::Serialize;

/// Basis points denominator.
pub const BPS: u64 = 10_000;

/// What ends an open job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `releaseJobs`: pays the worker, frees the active-job slot.
    Release,
    /// `claimTimeout`: the job missed its deadline; slashes the worker, refunds the consumer.
    ClaimTimeout,
    /// `settleStuckJob`: the job's session closed under it; refund without a slash.
    SettleStuck,
}

impl Action {
    /// The outbox kind of the transaction.
    pub fn kind(self) -> &'static str {
        match self {
            Action::Release => "release",
            Action::ClaimTimeout => "claim_timeout",
            Action::SettleStuck => "settle_stuck",
        }
    }
}

/// Why the action becomes possible when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Completed: the dispute window ends.
    DisputeWindow,
    /// Resolved not guilty with escrow left: releasable at once.
    ResolvedNotGuilty,
    /// Disputed and unresolved: releasable (the dispute defaults) once the resolution timeout ends.
    DisputeDefault,
    /// Submitted and not acknowledged by the deadline.
    AckTimeout,
    /// Acknowledged and not completed by the deadline.
    CompletionTimeout,
    /// The session is closed; the job can never complete.
    SessionClosed,
}

/// An open job as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenJob {
    /// Job id.
    pub job_id: u64,
    /// Its worker.
    pub worker: Address,
    /// Contract state.
    pub state: JobState,
    /// Escrowed fee (zero once released, refunded, or resolved guilty).
    pub fee: U256,
    /// Ack deadline while Submitted, completion deadline while Acknowledged.
    pub deadline: Option<u64>,
    /// Block timestamp of JobCompleted.
    pub completed_at: Option<u64>,
    /// Block timestamp of DisputeCreated.
    pub disputed_at: Option<u64>,
    /// Verdict once Resolved.
    pub guilty: Option<bool>,
    /// Whether the job's session is active (claimTimeout needs it; settleStuckJob needs it not).
    pub session_active: bool,
}

/// Governance parameters in force (AIConfig), as the store has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Params {
    /// Dispute window in seconds.
    pub dispute_window: u64,
    /// Seconds the disputer has to resolve.
    pub resolution_timeout: u64,
    /// Worker share of a fee.
    pub worker_fee_bps: u64,
    /// Keeper bounty on a release, of the fee (capped at the worker share).
    pub release_bounty_bps: u64,
    /// Keeper bounty on a timeout, of the slash.
    pub timeout_bounty_bps: u64,
    /// Slash for an ack timeout, of the minimum stake.
    pub timeout_slash_bps: u64,
    /// Slash for a completion timeout, of the minimum stake.
    pub completion_timeout_slash_bps: u64,
    /// Minimum worker stake (slashes are a share of it).
    pub min_worker_stake: U256,
}

/// One scheduled action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Due {
    /// Job id.
    pub job_id: u64,
    /// The job's worker.
    pub worker: Address,
    /// What to send.
    pub action: Action,
    /// Why, and hence when.
    pub reason: Reason,
    /// The first block timestamp at which the action succeeds.
    pub at: u64,
    /// Escrowed fee.
    pub fee: U256,
}

/// The action that ends `job` and when it becomes possible; None when the job holds no obligation
/// the schedule can end (resolved guilty, or a state with nothing left to do).
pub fn due(job: &OpenJob, params: &Params) -> Option<Due> {
    let make =
        |action, reason, at| Some(Due { job_id: job.job_id, worker: job.worker, action, reason, at, fee: job.fee });
    match job.state {
        JobState::Completed => {
            let completed = job.completed_at?;
            make(Action::Release, Reason::DisputeWindow, completed.saturating_add(params.dispute_window))
        }
        JobState::Resolved if job.guilty == Some(false) && !job.fee.is_zero() => {
            make(Action::Release, Reason::ResolvedNotGuilty, 0)
        }
        JobState::Disputed => {
            let disputed = job.disputed_at?;
            make(Action::Release, Reason::DisputeDefault, disputed.saturating_add(params.resolution_timeout))
        }
        JobState::Submitted | JobState::Acknowledged => {
            // Both claimTimeout and settleStuckJob need block.timestamp > deadline.
            let at = job.deadline?.saturating_add(1);
            if !job.session_active {
                make(Action::SettleStuck, Reason::SessionClosed, at)
            } else if job.state == JobState::Submitted {
                make(Action::ClaimTimeout, Reason::AckTimeout, at)
            } else {
                make(Action::ClaimTimeout, Reason::CompletionTimeout, at)
            }
        }
        _ => None,
    }
}

/// The schedule of `jobs`, soonest first (ties by job id).
pub fn schedule(jobs: &[OpenJob], params: &Params) -> Vec<Due> {
    let mut out: Vec<Due> = jobs.iter().filter_map(|j| due(j, params)).collect();
    out.sort_by_key(|d| (d.at, d.job_id));
    out
}

/// The worker's share of a release (before a keeper bounty), as the contract computes it.
pub fn worker_share(fee: U256, params: &Params) -> U256 {
    bps_of(fee, params.worker_fee_bps)
}

/// `bps` basis points of `v`, saturating: a fee and a parameter near `U256::MAX` would otherwise
/// wrap (ruint's operators wrap silently) and give a tiny share.
fn bps_of(v: U256, bps: u64) -> U256 {
    v.saturating_mul(U256::from(bps)).checked_div(U256::from(BPS)).unwrap_or_default()
}

/// What a keeper (a caller other than the worker) earns for `due`.
pub fn keeper_bounty(due: &Due, state: JobState, params: &Params) -> U256 {
    match due.action {
        Action::Release => {
            let bounty = bps_of(due.fee, params.release_bounty_bps);
            bounty.min(worker_share(due.fee, params))
        }
        Action::ClaimTimeout => bps_of(slash_of(state, params), params.timeout_bounty_bps),
        Action::SettleStuck => U256::ZERO,
    }
}

/// The slash a timeout realizes for a job in `state` (before capping at the worker's stake).
pub fn slash_of(state: JobState, params: &Params) -> U256 {
    let bps = match state {
        JobState::Submitted => params.timeout_slash_bps,
        JobState::Acknowledged => params.completion_timeout_slash_bps,
        _ => 0,
    };
    bps_of(params.min_worker_stake, bps)
}

/// Chain time: what the settler knows about block timestamps, from the heads it has seen.
#[derive(Debug, Clone, Default)]
pub struct ChainClock {
    /// Head block number.
    pub head: u64,
    /// Head block timestamp.
    pub head_ts: u64,
    /// Recent timestamp gaps between consecutive heads (zero when two blocks share a second).
    gaps: std::collections::VecDeque<u64>,
}

/// Gaps remembered for the interval estimate.
const GAPS: usize = 32;

impl ChainClock {
    /// Records a new head. Returns false when it is not newer than the current one.
    pub fn observe(&mut self, number: u64, timestamp: u64) -> bool {
        if self.head_ts != 0 && number <= self.head {
            if number < self.head {
                // A reorg to a shorter chain: take it, keep the gaps.
                self.head = number;
                self.head_ts = timestamp;
            }
            return false;
        }
        if self.head_ts != 0
            && Some(number) == self.head.checked_add(1)
            && let Some(gap) = timestamp.checked_sub(self.head_ts)
        {
            if self.gaps.len() == GAPS {
                self.gaps.pop_front();
            }
            self.gaps.push_back(gap);
        }
        self.head = number;
        self.head_ts = timestamp;
        true
    }

    /// The smallest gap seen between recent consecutive blocks (1 s until one has been seen): the
    /// next block's timestamp is at least `head_ts + min_interval`, so an action due by then
    /// cannot revert for being early. Zero once two recent blocks shared a second (a loaded node,
    /// sub-second blocks): then the next block may too, and an action waits for a head that has
    /// reached its time rather than revert in a block that has not.
    pub fn min_interval(&self) -> u64 {
        self.gaps.iter().copied().min().unwrap_or(1)
    }

    /// The typical gap (median of the positive ones), for countdowns.
    pub fn typical_interval(&self) -> u64 {
        let mut g: Vec<u64> = self.gaps.iter().copied().filter(|g| *g > 0).collect();
        if g.is_empty() {
            return 1;
        }
        g.sort_unstable();
        g.get(g.len() / 2).copied().unwrap_or(1).max(1)
    }

    /// The lowest timestamp the next block can have (`u64::MAX` at most: a head at the end of
    /// time has no later block to wait for).
    pub fn next_ts(&self) -> u64 {
        self.head_ts.saturating_add(self.min_interval())
    }

    /// Seconds of chain time until `at`, and the block that should carry an action due at `at`
    /// (estimated with the typical interval).
    pub fn eta(&self, at: u64) -> (u64, u64) {
        let secs = at.saturating_sub(self.head_ts);
        if at <= self.next_ts() {
            return (secs, self.head.saturating_add(1));
        }
        (secs, self.head.saturating_add(secs.div_ceil(self.typical_interval())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params {
            dispute_window: 60,
            resolution_timeout: 30,
            worker_fee_bps: 8_000,
            release_bounty_bps: 100,
            timeout_bounty_bps: 1_000,
            timeout_slash_bps: 200,
            completion_timeout_slash_bps: 500,
            min_worker_stake: U256::from(100_000_000_000_000_000_000u128),
        }
    }

    fn job(id: u64, state: JobState) -> OpenJob {
        OpenJob {
            job_id: id,
            worker: Address::repeat_byte(1),
            state,
            fee: U256::from(1_000_000u64),
            deadline: Some(500),
            completed_at: Some(1_000),
            disputed_at: Some(1_010),
            guilty: None,
            session_active: true,
        }
    }

    #[test]
    fn completed_jobs_are_due_when_the_window_in_force_ends() {
        let p = params();
        let d = due(&job(1, JobState::Completed), &p).unwrap();
        assert_eq!((d.action, d.reason, d.at), (Action::Release, Reason::DisputeWindow, 1_060));
        // A governance change re-times the job at once.
        let shorter = Params { dispute_window: 5, ..p };
        assert_eq!(due(&job(1, JobState::Completed), &shorter).unwrap().at, 1_005);
    }

    #[test]
    fn disputes_default_after_the_resolution_timeout_and_not_guilty_is_due_at_once() {
        let p = params();
        let d = due(&job(2, JobState::Disputed), &p).unwrap();
        assert_eq!((d.reason, d.at), (Reason::DisputeDefault, 1_040));
        let mut resolved = job(3, JobState::Resolved);
        resolved.guilty = Some(false);
        assert_eq!(due(&resolved, &p).unwrap().at, 0);
        resolved.guilty = Some(true);
        assert_eq!(due(&resolved, &p), None, "guilty: no escrow left, nothing to release");
        let mut drained = job(4, JobState::Resolved);
        drained.guilty = Some(false);
        drained.fee = U256::ZERO;
        assert_eq!(due(&drained, &p), None);
    }

    #[test]
    fn late_jobs_time_out_one_second_after_the_deadline_or_settle_when_the_session_closed() {
        let p = params();
        let d = due(&job(5, JobState::Submitted), &p).unwrap();
        assert_eq!((d.action, d.reason, d.at), (Action::ClaimTimeout, Reason::AckTimeout, 501));
        let d = due(&job(6, JobState::Acknowledged), &p).unwrap();
        assert_eq!(d.reason, Reason::CompletionTimeout);
        let mut closed = job(7, JobState::Acknowledged);
        closed.session_active = false;
        assert_eq!(due(&closed, &p).unwrap().action, Action::SettleStuck);
        assert_eq!(due(&job(8, JobState::Released), &p), None);
        assert_eq!(due(&job(9, JobState::TimedOut), &p), None);
    }

    #[test]
    fn schedule_is_sorted_by_time_then_id() {
        let p = params();
        let mut a = job(10, JobState::Completed);
        a.completed_at = Some(2_000);
        let b = job(11, JobState::Completed);
        let c = job(3, JobState::Completed);
        let s = schedule(&[a, b, c], &p);
        assert_eq!(s.iter().map(|d| d.job_id).collect::<Vec<_>>(), vec![3, 11, 10]);
    }

    #[test]
    fn bounties_follow_the_contract() {
        let p = params();
        let release = due(&job(1, JobState::Completed), &p).unwrap();
        assert_eq!(keeper_bounty(&release, JobState::Completed, &p), U256::from(10_000u64));
        let timeout = due(&job(2, JobState::Submitted), &p).unwrap();
        // 2 % of 100 LCAI slashed, 10 % of that to the keeper: 0.2 LCAI.
        assert_eq!(keeper_bounty(&timeout, JobState::Submitted, &p), U256::from(200_000_000_000_000_000u64));
        let capped = Params { release_bounty_bps: 9_000, ..p };
        assert_eq!(keeper_bounty(&release, JobState::Completed, &capped), U256::from(800_000u64));
    }

    #[test]
    fn the_clock_bounds_the_next_timestamp_by_the_smallest_gap() {
        let mut c = ChainClock::default();
        assert!(c.observe(10, 100));
        assert_eq!(c.next_ts(), 101, "1 s until a gap is seen");
        assert!(c.observe(11, 102));
        assert!(c.observe(12, 104));
        assert_eq!(c.min_interval(), 2);
        assert_eq!(c.next_ts(), 106);
        assert!(!c.observe(12, 104), "the same head twice is not news");
        assert_eq!(c.eta(106), (2, 13));
        assert_eq!(c.eta(110), (6, 15));
        assert!(c.observe(14, 112), "a skipped head is taken but its gap is not measured");
        assert_eq!(c.min_interval(), 2);
    }

    #[test]
    fn the_clock_saturates_at_the_end_of_time_instead_of_panicking() {
        let mut c = ChainClock::default();
        assert!(c.observe(u64::MAX - 1, u64::MAX - 1));
        assert!(c.observe(u64::MAX, u64::MAX), "the gap is measured without overflow");
        assert_eq!(c.min_interval(), 1);
        assert_eq!(c.next_ts(), u64::MAX);
        assert_eq!(c.eta(u64::MAX), (0, u64::MAX));
        assert_eq!(c.eta(0), (0, u64::MAX));
        // A head of a far-off chain, then one of an ordinary chain: no gap of the wrapped kind.
        let mut c = ChainClock::default();
        assert!(c.observe(u64::MAX, 5));
        assert!(!c.observe(0, 10), "a lower number is a reorg, taken");
        assert_eq!((c.head, c.head_ts), (0, 10));
        assert!(c.observe(1, 9), "a timestamp going back measures no gap");
        assert_eq!(c.min_interval(), 1);
        // Several blocks in one second: the next block may share the head's second too.
        let mut c = ChainClock::default();
        for n in 1..5 {
            assert!(c.observe(n, 100));
        }
        assert_eq!((c.min_interval(), c.typical_interval(), c.next_ts()), (0, 1, 100));
        assert_eq!(c.eta(200), (100, 104));
        // Once the zero gap has left the recent ones, the next block is a second later again.
        for n in 5..5 + GAPS as u64 {
            assert!(c.observe(n, 100 + n));
        }
        assert_eq!(c.next_ts(), c.head_ts + 1);
    }

    #[test]
    fn fees_and_stakes_at_the_top_of_u256_saturate_instead_of_wrapping() {
        let p = Params {
            worker_fee_bps: u64::MAX,
            release_bounty_bps: u64::MAX,
            timeout_bounty_bps: u64::MAX,
            timeout_slash_bps: u64::MAX,
            min_worker_stake: U256::MAX,
            ..params()
        };
        let top = U256::MAX / U256::from(BPS);
        assert_eq!(worker_share(U256::MAX, &p), top, "not the wrapped remainder");
        assert_eq!(slash_of(JobState::Submitted, &p), top);
        let mut j = job(1, JobState::Completed);
        j.fee = U256::MAX;
        j.completed_at = Some(u64::MAX);
        let d = due(&j, &p).unwrap();
        assert_eq!(d.at, u64::MAX, "completed at the end of time plus a window saturates");
        assert_eq!(keeper_bounty(&d, JobState::Completed, &p), top);
        let t = due(&job(2, JobState::Submitted), &p).unwrap();
        assert_eq!(keeper_bounty(&t, JobState::Submitted, &p), top);
        let mut late = job(3, JobState::Acknowledged);
        late.deadline = Some(u64::MAX);
        assert_eq!(due(&late, &p).unwrap().at, u64::MAX);
    }
}
