//! The simulator's view of its jobs, driven by JobRegistry events, and the pure decision of what
//! each role does next given the head's timestamp.

use std::collections::{BTreeSet, HashMap, HashSet};

use alloy::primitives::Address;
use lcw_schema::types::JobState;

use super::SimulateReport;
use super::plan::{Outcome, Verdict};

/// Chain parameters and switches the decisions depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub ack_timeout: u64,
    pub completion_timeout: u64,
    pub dispute_window: u64,
    pub resolution_timeout: u64,
    pub auto_complete: bool,
    pub auto_release: bool,
    /// The keeper releases every job (JobReleased plus KeeperBountyPaid), not the workers.
    pub keeper_releases: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct SimJob {
    pub session: u64,
    pub worker: Address,
    pub state: JobState,
    pub outcome: Outcome,
    pub deadline: u64,
    pub completed_at: u64,
    pub disputed_at: u64,
    pub guilty: Option<bool>,
    pub disputed: bool,
    /// No new action for this job before this block (a transaction is in flight).
    pub in_flight_until: u64,
}

/// One thing a role does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Ack(u64),
    Complete(u64),
    Dispute(u64),
    Resolve(u64, bool),
    ClaimTimeout(u64),
    Settle(u64),
    /// Release by the worker itself (`Some`) or by the keeper.
    Release(u64, Option<Address>),
}

impl Action {
    pub(crate) fn job(&self) -> u64 {
        match *self {
            Action::Ack(j)
            | Action::Complete(j)
            | Action::Dispute(j)
            | Action::Resolve(j, _)
            | Action::ClaimTimeout(j)
            | Action::Settle(j)
            | Action::Release(j, _) => j,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct World {
    pub jobs: HashMap<u64, SimJob>,
    /// Jobs the simulator may still have to act on.
    pub active: BTreeSet<u64>,
    /// Sessions of this run: id → (worker, closed).
    pub sessions: HashMap<u64, (Address, bool)>,
    /// Workers whose keys the simulator holds.
    pub simulated: HashSet<Address>,
}

impl World {
    pub(crate) fn submitted(&mut self, job: u64, session: u64, worker: Address, ts: u64, outcome: Outcome, p: &Params) {
        self.jobs.insert(
            job,
            SimJob {
                session,
                worker,
                state: JobState::Submitted,
                outcome,
                deadline: ts + p.ack_timeout,
                completed_at: 0,
                disputed_at: 0,
                guilty: None,
                disputed: false,
                in_flight_until: 0,
            },
        );
        self.active.insert(job);
    }

    /// Applies a state change; returns false for jobs that are not this run's.
    pub(crate) fn transition(&mut self, job: u64, state: JobState, ts: u64, p: &Params) -> bool {
        let Some(j) = self.jobs.get_mut(&job) else { return false };
        j.state = state;
        j.in_flight_until = 0;
        match state {
            JobState::Acknowledged => j.deadline = ts + p.completion_timeout,
            JobState::Completed => j.completed_at = ts,
            JobState::Disputed => {
                j.disputed_at = ts;
                j.disputed = true;
            }
            _ => {}
        }
        if Self::is_final(j, p) {
            self.active.remove(&job);
        } else {
            self.active.insert(job);
        }
        true
    }

    pub(crate) fn resolved(&mut self, job: u64, guilty: bool, ts: u64, p: &Params) -> bool {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.guilty = Some(guilty);
        }
        self.transition(job, JobState::Resolved, ts, p)
    }

    /// Whether the simulator has nothing more to do for the job.
    fn is_final(j: &SimJob, p: &Params) -> bool {
        match j.state {
            JobState::TimedOut | JobState::Released => true,
            JobState::Resolved => j.guilty == Some(true) || !p.auto_release,
            JobState::Completed => !p.auto_release && !matches!(j.outcome, Outcome::Dispute(_)),
            JobState::Disputed => !p.auto_release && j.outcome == Outcome::Dispute(Verdict::Default),
            JobState::Submitted | JobState::Acknowledged => false,
        }
    }

    /// The next actions at head `block` with timestamp `now` (the next block's timestamp is
    /// greater, so a deadline `d` can be claimed once `now >= d`).
    pub(crate) fn decide(&mut self, block: u64, now: u64, p: &Params) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut done = Vec::new();
        for id in &self.active {
            let Some(j) = self.jobs.get(id) else { continue };
            if block < j.in_flight_until {
                continue;
            }
            let ours = p.auto_complete && self.simulated.contains(&j.worker);
            let closed = self.sessions.get(&j.session).is_some_and(|(_, closed)| *closed);
            let action = match j.state {
                JobState::Submitted | JobState::Acknowledged if now >= j.deadline => {
                    Some(if closed { Action::Settle(*id) } else { Action::ClaimTimeout(*id) })
                }
                JobState::Submitted
                    if ours && !closed && !matches!(j.outcome, Outcome::AckTimeout | Outcome::Settle) =>
                {
                    Some(Action::Ack(*id))
                }
                JobState::Acknowledged if ours && !closed && j.outcome != Outcome::CompletionTimeout => {
                    Some(Action::Complete(*id))
                }
                JobState::Completed
                    if matches!(j.outcome, Outcome::Dispute(_))
                        && !j.disputed
                        && now + 1 < j.completed_at + p.dispute_window =>
                {
                    Some(Action::Dispute(*id))
                }
                // Every job once its window is over, a job meant to be disputed included: its
                // dispute could not land in the window (the simulator fell behind, or the dispute
                // reverted), and waiting for it would stall the run.
                JobState::Completed if p.auto_release && now >= j.completed_at + p.dispute_window => {
                    Some(self.release(*id, j, p))
                }
                JobState::Completed if !j.disputed && now >= j.completed_at + p.dispute_window => {
                    done.push(*id);
                    None
                }
                JobState::Disputed => match j.outcome {
                    Outcome::Dispute(Verdict::Guilty) => Some(Action::Resolve(*id, true)),
                    Outcome::Dispute(Verdict::NotGuilty) => Some(Action::Resolve(*id, false)),
                    _ if p.auto_release && now >= j.disputed_at + p.resolution_timeout => Some(self.release(*id, j, p)),
                    _ => None,
                },
                JobState::Resolved if p.auto_release && j.guilty == Some(false) => Some(self.release(*id, j, p)),
                _ => None,
            };
            if let Some(a) = action {
                actions.push(a);
            }
        }
        for id in done {
            self.active.remove(&id);
        }
        actions
    }

    fn release(&self, id: u64, j: &SimJob, p: &Params) -> Action {
        let own = self.simulated.contains(&j.worker) && !p.keeper_releases;
        Action::Release(id, own.then_some(j.worker))
    }

    /// Marks jobs with a transaction in flight until `until_block`.
    pub(crate) fn in_flight(&mut self, job: u64, until_block: u64) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.in_flight_until = until_block;
        }
    }

    /// Counts by state, for stall reports.
    pub(crate) fn active_summary(&self) -> String {
        let mut counts: HashMap<JobState, usize> = HashMap::new();
        for id in &self.active {
            if let Some(j) = self.jobs.get(id) {
                *counts.entry(j.state).or_default() += 1;
            }
        }
        let mut parts: Vec<String> = counts.into_iter().map(|(s, n)| format!("{n} {s}")).collect();
        parts.sort();
        parts.join(", ")
    }
}

/// Counts an event into the report.
pub(crate) fn count(report: &mut SimulateReport, state: JobState) {
    match state {
        JobState::Submitted => report.submitted += 1,
        JobState::Acknowledged => report.acknowledged += 1,
        JobState::Completed => report.completed += 1,
        JobState::Released => report.released += 1,
        JobState::TimedOut => report.timed_out += 1,
        JobState::Disputed => report.disputed += 1,
        JobState::Resolved => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Address = Address::repeat_byte(0xaa);

    fn params() -> Params {
        Params {
            ack_timeout: 10,
            completion_timeout: 20,
            dispute_window: 30,
            resolution_timeout: 40,
            auto_complete: true,
            auto_release: true,
            keeper_releases: false,
        }
    }

    fn world_with(outcome: Outcome) -> World {
        let mut w = World::default();
        w.simulated.insert(W);
        w.sessions.insert(1, (W, false));
        w.submitted(7, 1, W, 100, outcome, &params());
        w
    }

    #[test]
    fn normal_job_walks_ack_complete_release_at_window_end() {
        let p = params();
        let mut w = world_with(Outcome::Normal);
        assert_eq!(w.decide(1, 100, &p), vec![Action::Ack(7)]);
        w.transition(7, JobState::Acknowledged, 101, &p);
        assert_eq!(w.decide(2, 101, &p), vec![Action::Complete(7)]);
        w.transition(7, JobState::Completed, 102, &p);
        assert!(w.decide(3, 131, &p).is_empty(), "window ends at 132");
        assert_eq!(w.decide(4, 132, &p), vec![Action::Release(7, Some(W))]);
        w.transition(7, JobState::Released, 133, &p);
        assert!(w.active.is_empty());
    }

    #[test]
    fn timeouts_are_claimed_by_keeper_only_after_deadline() {
        let p = params();
        let mut w = world_with(Outcome::AckTimeout);
        assert!(w.decide(1, 109, &p).is_empty());
        assert_eq!(w.decide(2, 110, &p), vec![Action::ClaimTimeout(7)]);
        let mut w = world_with(Outcome::CompletionTimeout);
        w.transition(7, JobState::Acknowledged, 101, &p);
        assert!(w.decide(2, 120, &p).is_empty());
        assert_eq!(w.decide(3, 121, &p), vec![Action::ClaimTimeout(7)]);
    }

    #[test]
    fn closed_session_jobs_are_settled_not_timed_out() {
        let p = params();
        let mut w = world_with(Outcome::Settle);
        w.sessions.insert(1, (W, true));
        assert!(w.decide(1, 101, &p).is_empty(), "no ack on a closed session");
        assert_eq!(w.decide(2, 110, &p), vec![Action::Settle(7)]);
    }

    #[test]
    fn disputes_follow_their_verdict() {
        let p = params();
        for (verdict, expect) in
            [(Verdict::Guilty, Some(true)), (Verdict::NotGuilty, Some(false)), (Verdict::Default, None)]
        {
            let mut w = world_with(Outcome::Dispute(verdict));
            w.transition(7, JobState::Acknowledged, 101, &p);
            w.transition(7, JobState::Completed, 102, &p);
            assert_eq!(w.decide(3, 103, &p), vec![Action::Dispute(7)]);
            w.transition(7, JobState::Disputed, 104, &p);
            let acts = w.decide(4, 105, &p);
            match expect {
                Some(g) => assert_eq!(acts, vec![Action::Resolve(7, g)]),
                None => {
                    assert!(acts.is_empty());
                    assert_eq!(w.decide(5, 144, &p), vec![Action::Release(7, Some(W))]);
                }
            }
        }
    }

    #[test]
    fn a_dispute_that_can_no_longer_land_in_the_window_does_not_stall_the_job() {
        let p = params();
        let mut w = world_with(Outcome::Dispute(Verdict::Guilty));
        w.transition(7, JobState::Acknowledged, 101, &p);
        w.transition(7, JobState::Completed, 102, &p);
        // One block before the window ends a dispute would land too late: nothing is sent.
        assert!(w.decide(3, 131, &p).is_empty());
        // At the window's end the job is released like any other.
        assert_eq!(w.decide(4, 132, &p), vec![Action::Release(7, Some(W))]);
        // Without auto-release there is nothing left to do for it.
        let p = Params { auto_release: false, ..params() };
        let mut w = world_with(Outcome::Dispute(Verdict::Guilty));
        w.transition(7, JobState::Acknowledged, 101, &p);
        w.transition(7, JobState::Completed, 102, &p);
        assert!(w.decide(4, 132, &p).is_empty());
        assert!(w.active.is_empty(), "the job is final");
    }

    #[test]
    fn in_flight_jobs_are_not_acted_on_twice() {
        let p = params();
        let mut w = world_with(Outcome::Normal);
        w.in_flight(7, 5);
        assert!(w.decide(4, 100, &p).is_empty());
        assert_eq!(w.decide(5, 100, &p), vec![Action::Ack(7)]);
    }

    #[test]
    fn without_auto_release_completed_jobs_are_final() {
        let p = Params { auto_release: false, ..params() };
        let mut w = world_with(Outcome::Normal);
        w.transition(7, JobState::Acknowledged, 101, &p);
        w.transition(7, JobState::Completed, 102, &p);
        assert!(w.active.is_empty());
    }
}
