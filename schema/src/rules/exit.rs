//! The exit plan: everything between a worker and its returned stake, computed purely from the
//! store's view of the worker, its open jobs, the parameters in force and the chain clock.

use crate::types::JobState;
use alloy::primitives::{Address, U256};
use serde::Serialize;

use super::schedule::{self, Action, ChainClock, OpenJob, Params, Reason};
use crate::store::obligations::WorkerView;

/// One open job and how it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Obligation {
    /// Job id.
    pub job_id: u64,
    /// Contract state.
    pub state: JobState,
    /// What ends it.
    pub action: Action,
    /// Why then.
    pub reason: Reason,
    /// First block timestamp at which the action succeeds (releasableAt for releases).
    pub at: u64,
    /// Seconds of chain time from the head until then (0: now).
    pub in_secs: u64,
    /// The slash a timeout would realize (claimTimeout only).
    #[serde(serialize_with = "opt_u256")]
    pub slash: Option<U256>,
}

fn opt_u256<S: serde::Serializer>(v: &Option<U256>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

fn u256<S: serde::Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// What the operator should do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Not registered: nothing to do.
    NotRegistered,
    /// Stop taking new sessions first.
    Drain,
    /// Release the jobs that are releasable now.
    Release {
        /// Jobs.
        jobs: Vec<u64>,
    },
    /// Jobs past their deadline block the exit: claimTimeout (realizes the slash).
    ClearStuck {
        /// Jobs.
        jobs: Vec<u64>,
    },
    /// Wait until the next obligation can be ended.
    Wait {
        /// Chain timestamp.
        until: u64,
        /// Seconds from the head.
        in_secs: u64,
    },
    /// Withdraw the earnings balance.
    Withdraw {
        /// Amount in wei.
        #[serde(serialize_with = "u256")]
        amount: U256,
    },
    /// deregisterWorker can succeed now.
    Deregister,
}

/// A worker's exit plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitPlan {
    /// The worker.
    pub worker: Address,
    /// Registered.
    pub registered: bool,
    /// Drained (lcw's worker takes no new sessions).
    pub drained: bool,
    /// Stake returned by deregisterWorker.
    #[serde(serialize_with = "u256")]
    pub stake: U256,
    /// Withdrawable earnings.
    #[serde(serialize_with = "u256")]
    pub balance: U256,
    /// Active jobs (derived; equals getActiveJobCount when the store is current).
    pub active_jobs: u64,
    /// Head block and timestamp the plan was computed at.
    pub head: u64,
    /// Head timestamp.
    pub head_ts: u64,
    /// Every open job with its exact end.
    pub obligations: Vec<Obligation>,
    /// Jobs that can no longer complete and need claimTimeout, with the total slash.
    pub stuck: Vec<u64>,
    /// Total slash realized by clearing the stuck jobs.
    #[serde(serialize_with = "u256")]
    pub stuck_slash: U256,
    /// The earliest chain timestamp at which deregisterWorker can succeed, if every obligation
    /// is ended at its first possible moment (in-flight jobs: completed now, or timed out at
    /// their deadline, whichever is sooner).
    pub earliest_deregister_at: Option<u64>,
    /// Seconds from the head until then.
    pub earliest_deregister_in: Option<u64>,
    /// Whether deregisterWorker would succeed now.
    pub deregister_ready: bool,
    /// The next step.
    pub next: Step,
}

/// Computes the plan.
pub fn plan(
    worker: Address,
    view: Option<&WorkerView>,
    jobs: &[OpenJob],
    params: &Params,
    clock: &ChainClock,
    drained: bool,
) -> ExitPlan {
    let now = clock.head_ts;
    let next_ts = clock.next_ts();
    let registered = view.is_some_and(|v| v.registered);
    let mut obligations = Vec::new();
    let mut stuck = Vec::new();
    let mut stuck_slash = U256::ZERO;
    let mut earliest: Option<u64> = None;
    for job in jobs.iter().filter(|j| j.worker == worker) {
        let Some(d) = schedule::due(job, params) else { continue };
        let slash = (d.action == Action::ClaimTimeout).then(|| schedule::slash_of(job.state, params));
        // The earliest this job can stop counting: in flight, completing now and waiting out the
        // window, or timing out at the deadline, whichever is sooner.
        let end = match job.state {
            JobState::Submitted | JobState::Acknowledged => d.at.min(now.saturating_add(params.dispute_window)),
            _ => d.at,
        };
        earliest = Some(earliest.map_or(end, |e: u64| e.max(end)));
        if d.action == Action::ClaimTimeout && d.at <= next_ts {
            stuck.push(job.job_id);
            stuck_slash = stuck_slash.saturating_add(slash.unwrap_or_default());
        }
        obligations.push(Obligation {
            job_id: job.job_id,
            state: job.state,
            action: d.action,
            reason: d.reason,
            at: d.at,
            in_secs: d.at.saturating_sub(now),
            slash,
        });
    }
    obligations.sort_by_key(|o| (o.at, o.job_id));
    let active_jobs = view.map(|v| v.active_jobs).unwrap_or(0);
    let balance = view.map(|v| v.balance).unwrap_or_default();
    let deregister_ready = registered && active_jobs == 0;
    let releasable: Vec<u64> =
        obligations.iter().filter(|o| o.action != Action::ClaimTimeout && o.at <= next_ts).map(|o| o.job_id).collect();
    let next = if !registered {
        if balance.is_zero() { Step::NotRegistered } else { Step::Withdraw { amount: balance } }
    } else if !drained {
        Step::Drain
    } else if !releasable.is_empty() {
        Step::Release { jobs: releasable }
    } else if !stuck.is_empty() {
        Step::ClearStuck { jobs: stuck.clone() }
    } else if let Some(o) = obligations.first() {
        Step::Wait { until: o.at.max(now), in_secs: o.at.saturating_sub(now) }
    } else if !balance.is_zero() {
        Step::Withdraw { amount: balance }
    } else {
        Step::Deregister
    };
    let earliest_deregister_at = if registered { Some(earliest.unwrap_or(now).max(now)) } else { None };
    ExitPlan {
        worker,
        registered,
        drained,
        stake: view.map(|v| v.stake).unwrap_or_default(),
        balance,
        active_jobs,
        head: clock.head,
        head_ts: now,
        obligations,
        stuck,
        stuck_slash,
        earliest_deregister_at,
        earliest_deregister_in: earliest_deregister_at.map(|t| t.saturating_sub(now)),
        deregister_ready,
        next,
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
            min_worker_stake: U256::from(10_000u64),
        }
    }

    fn worker() -> Address {
        Address::repeat_byte(7)
    }

    fn view(active: u64, balance: u64) -> WorkerView {
        WorkerView {
            registered: true,
            stake: U256::from(10_000u64),
            active_jobs: active,
            balance: U256::from(balance),
            suspended_until: 0,
        }
    }

    fn job(id: u64, state: JobState, completed_at: Option<u64>, deadline: Option<u64>) -> OpenJob {
        OpenJob {
            job_id: id,
            worker: worker(),
            state,
            fee: U256::from(100u64),
            deadline,
            completed_at,
            disputed_at: None,
            guilty: None,
            session_active: true,
        }
    }

    fn clock(ts: u64) -> ChainClock {
        let mut c = ChainClock::default();
        c.observe(100, ts);
        c
    }

    #[test]
    fn a_busy_worker_drains_first_and_learns_its_exact_exit_moment() {
        let jobs = [
            job(1, JobState::Completed, Some(950), None),   // releasable at 1010
            job(2, JobState::Completed, Some(1_000), None), // releasable at 1060
            job(3, JobState::Acknowledged, None, Some(1_100)),
        ];
        let p = plan(worker(), Some(&view(3, 0)), &jobs, &params(), &clock(1_000), false);
        assert_eq!(p.next, Step::Drain);
        assert_eq!(p.obligations.iter().map(|o| o.job_id).collect::<Vec<_>>(), vec![1, 2, 3]);
        // Job 3 in flight: completing now ends at 1060, timing out at 1101; the exit is bound by 1060.
        assert_eq!(p.earliest_deregister_at, Some(1_060));
        assert_eq!(p.earliest_deregister_in, Some(60));
        assert!(!p.deregister_ready);
        let drained = plan(worker(), Some(&view(3, 0)), &jobs, &params(), &clock(1_000), true);
        assert_eq!(drained.next, Step::Wait { until: 1_010, in_secs: 10 });
        let later = plan(worker(), Some(&view(3, 0)), &jobs, &params(), &clock(1_009), true);
        assert_eq!(later.next, Step::Release { jobs: vec![1] }, "the next block (>= 1010) can carry job 1");
    }

    #[test]
    fn stuck_jobs_show_their_slash_and_the_last_steps_are_withdraw_then_deregister() {
        let jobs = [job(4, JobState::Submitted, None, Some(990))];
        let p = plan(worker(), Some(&view(1, 0)), &jobs, &params(), &clock(1_000), true);
        assert_eq!(p.stuck, vec![4]);
        assert_eq!(p.stuck_slash, U256::from(200u64), "2 % of the 10,000 minimum stake");
        assert_eq!(p.next, Step::ClearStuck { jobs: vec![4] });
        let done = plan(worker(), Some(&view(0, 500)), &[], &params(), &clock(1_000), true);
        assert_eq!(done.next, Step::Withdraw { amount: U256::from(500u64) });
        assert!(done.deregister_ready);
        let empty = plan(worker(), Some(&view(0, 0)), &[], &params(), &clock(1_000), true);
        assert_eq!(empty.next, Step::Deregister);
        assert_eq!(empty.earliest_deregister_in, Some(0));
        let gone = plan(worker(), None, &[], &params(), &clock(1_000), true);
        assert_eq!(gone.next, Step::NotRegistered);
    }
}
