//! The worker's decisions, as one pure function over plain data: what to do next for each job
//! assigned to this worker (open its prompt, ack, work, complete, refuse), given the store's
//! view, the outbox's, what the worker holds locally, chain time and the wallet.
//!
//! The rules, in the order they protect the stake:
//!
//! - **open before ack**: a job's prompt is fetched and decrypted before it is acknowledged,
//!   so a missing blob, a prompt sealed for another key or a broken payload is refused without
//!   an ack (no slash can follow). Only when the ack deadline leaves no time to open the prompt
//!   first is the job acked at once, and the plan says so;
//! - **an ack is a promise the wallet can keep**: the balance must cover this ack and its
//!   completion on top of every completion already owed, at the fees they would be signed
//!   with; otherwise the job is refused and the reason says how much is missing;
//! - **nothing owed is forgotten**: an ack or completion that left the outbox without being
//!   mined (its nonce taken, a reorg) is sent again, for as long as its deadline allows, and a
//!   finished answer is kept until its completion is mined;
//! - **chain time**: every budget is a deadline minus the chain's clock (the head's timestamp
//!   plus the time since it was seen), never the local clock.
//!
//! Deadlines, timeouts, fees and the balance come from the chain and the store: arithmetic here
//! saturates or is checked, never overflows (a panic in a debug build, a wrapped value in a release
//! one). Clippy holds the module to it (`arithmetic_side_effects`, `cast_possible_truncation`); the
//! lint is per module, for the modules that compute money and time from outside values, because
//! across the workspace it would mostly flag counters and lengths the process made itself.
#![warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use lcw_schema::store::obligations::Assignment;
use lcw_schema::types::JobState;

/// What the worker holds for a job, locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// Fetching and decrypting the prompt.
    Opening,
    /// The prompt is open and waiting for the ack or a work slot.
    Opened,
    /// The model is running.
    Working,
    /// The sealed answer is ready to post.
    Ready,
    /// The last attempt failed.
    Failed {
        /// Why.
        reason: String,
        /// Retrying cannot help (the payload is not for this key, not a payload, ...).
        permanent: bool,
        /// The back-off has passed: it may be tried again now.
        retry_due: bool,
    },
}

/// One assignment with what the outbox and the worker know about it.
#[derive(Debug, Clone)]
pub struct JobView<'a> {
    /// The store's view.
    pub assignment: &'a Assignment,
    /// Its ack was mined (the store may not show it yet).
    pub ack_mined: bool,
    /// Its completion was mined (the store may not show it yet).
    pub complete_mined: bool,
    /// The outbox has a live (unmined) transaction for it.
    pub live: bool,
    /// What the worker holds for it.
    pub local: Option<&'a Local>,
    /// Why it cannot be served at all here (model not served, session key not for this
    /// worker), decided before any of the rest.
    pub blocker: Option<(&'static str, String)>,
    /// Why no new job is taken now (the LLM server is down): not acked, not final.
    pub hold: Option<&'a str>,
}

impl JobView<'_> {
    fn acked(&self) -> bool {
        self.assignment.state == JobState::Acknowledged || self.ack_mined
    }
}

/// Chain time and the worker's pace.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The chain's clock now: the head's timestamp plus the time since it was seen (seconds).
    pub now: f64,
    /// The lowest timestamp the next block can have.
    pub next_ts: u64,
    /// AIConfig's completion timeout: the completion deadline of a job acked now is about
    /// `next_ts + completion_timeout`.
    pub completion_timeout: u64,
    /// Seconds kept free before a deadline for the transaction that meets it to be mined.
    pub margin: u64,
    /// Expected seconds of one job's work (model and sealing).
    pub job_secs: f64,
    /// Expected seconds to fetch and decrypt a prompt.
    pub open_secs: f64,
    /// Jobs worked on at once.
    pub concurrency: usize,
}

/// The wallet, at the fees transactions would be signed with now.
#[derive(Debug, Clone, Copy)]
pub struct Funds {
    /// The worker's native balance.
    pub balance: u128,
    /// The most one ack can cost.
    pub ack_cost: u128,
    /// The most one completion can cost (gas and blob gas).
    pub complete_cost: u128,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch and decrypt the prompt, within `budget` seconds.
    Open {
        /// Job.
        job: u64,
        /// Seconds of chain time it may take.
        budget: u64,
    },
    /// Send the ack.
    Ack {
        /// Job.
        job: u64,
        /// Why it goes out before the prompt was opened, when it does.
        unopened: Option<String>,
    },
    /// Run the model (opening the prompt first if it is not open), within `budget` seconds.
    Work {
        /// Job.
        job: u64,
        /// Seconds of chain time it may take.
        budget: u64,
    },
    /// Send the completion with the ready answer.
    Complete {
        /// Job.
        job: u64,
    },
    /// Give up the job's live transaction: its deadline passed before it was mined, and mined
    /// now it would only revert.
    Cancel {
        /// Job.
        job: u64,
        /// Why, for the operator.
        reason: String,
    },
    /// Leave the job; `last` when nothing can change that (tell the consumer).
    Refuse {
        /// Job.
        job: u64,
        /// The step that refused it (`model`, `key`, `prompt`, `deadline`, `funds`, ...).
        what: &'static str,
        /// The reason, for the operator.
        reason: String,
        /// Final: the job will not be served by this worker.
        last: bool,
    },
}

/// The decisions for one pass over the assignments (oldest first), given `busy` jobs already
/// being opened or worked on.
pub fn plan(jobs: &[JobView<'_>], clock: &Clock, funds: Option<Funds>, busy: usize) -> Vec<Action> {
    let mut out = Vec::new();
    let mut queue = busy;
    // Completions already promised: every acked (or acking) job not completed yet.
    let mut promised: u128 = 0;
    if let Some(f) = funds {
        for j in jobs.iter().filter(|j| !j.complete_mined && (j.acked() || j.live)) {
            promised = promised.saturating_add(f.complete_cost);
            if j.live && !j.acked() {
                promised = promised.saturating_add(f.ack_cost);
            }
        }
    }
    for j in jobs {
        let a = j.assignment;
        let job = a.job_id;
        if j.complete_mined {
            continue;
        }
        let refuse = |what, reason: String, last| Action::Refuse { job, what, reason, last };
        if j.acked() {
            let deadline = a.deadline.unwrap_or(u64::MAX);
            if j.live {
                // Its completion is in flight; past the deadline it can only revert.
                if clock.next_ts > deadline {
                    let reason = format!("its completion was not mined before the completion deadline ({deadline})");
                    out.push(Action::Cancel { job, reason });
                }
                continue;
            }
            match j.local {
                Some(Local::Ready) if clock.next_ts > deadline => out.push(refuse(
                    "deadline",
                    format!("the answer was ready after the completion deadline ({deadline})"),
                    true,
                )),
                Some(Local::Ready) => out.push(Action::Complete { job }),
                Some(Local::Opening | Local::Working) => {}
                Some(Local::Failed { reason, permanent: true, .. }) => out.push(refuse("prompt", reason.clone(), true)),
                Some(Local::Failed { retry_due: false, .. }) => {}
                Some(Local::Opened | Local::Failed { .. }) | None => {
                    let budget = budget(deadline, clock);
                    if budget == 0 {
                        out.push(refuse(
                            "deadline",
                            format!("no time left before the completion deadline ({deadline})"),
                            true,
                        ));
                    } else {
                        queue = queue.saturating_add(1);
                        out.push(Action::Work { job, budget });
                    }
                }
            }
            continue;
        }
        // Not acked yet.
        let ack_deadline = a.deadline.unwrap_or(u64::MAX);
        let completion_deadline = clock.next_ts.saturating_add(clock.completion_timeout);
        if j.live {
            if clock.next_ts > ack_deadline {
                let reason = format!("its ack was not mined before the ack deadline ({ack_deadline})");
                out.push(Action::Cancel { job, reason });
                continue;
            }
            // The ack is in flight: the work may start now.
            match j.local {
                Some(Local::Opened) | None => {
                    queue = queue.saturating_add(1);
                    out.push(Action::Work { job, budget: budget(completion_deadline, clock) });
                }
                _ => {}
            }
            continue;
        }
        if clock.next_ts > ack_deadline {
            out.push(refuse("ack", format!("its ack deadline ({ack_deadline}) has passed"), true));
            continue;
        }
        if let Some((what, why)) = &j.blocker {
            out.push(refuse(what, why.clone(), true));
            continue;
        }
        if let Some(why) = j.hold {
            out.push(refuse("llm", why.to_owned(), false));
            continue;
        }
        match j.local {
            Some(Local::Opening | Local::Working) => continue,
            Some(Local::Failed { reason, permanent: true, .. }) => {
                out.push(refuse("prompt", format!("{reason}; not acked"), true));
                continue;
            }
            Some(Local::Failed { retry_due: false, .. }) => continue,
            _ => {}
        }
        // Deadline guard: the queue in front of it, its own work, and the completing block.
        let finish = clock.next_ts as f64
            + (queue as f64 + 1.0) * clock.job_secs / clock.concurrency.max(1) as f64
            + clock.margin as f64;
        if finish > completion_deadline as f64 {
            out.push(refuse(
                "deadline",
                format!(
                    "cannot finish before its completion deadline ({completion_deadline}): {queue} job(s) ahead, about \
                     {:.1} s each",
                    clock.job_secs
                ),
                false,
            ));
            continue;
        }
        let opened = matches!(j.local, Some(Local::Opened | Local::Ready));
        let ack_budget = budget(ack_deadline, clock);
        if ack_budget == 0 {
            // Less than the margin is left: the ack would likely land after its deadline, and
            // revert, or race the consumer's timeout claim.
            out.push(refuse(
                "ack",
                format!("less than the margin is left before its ack deadline ({ack_deadline})"),
                true,
            ));
            continue;
        }
        if !opened && ack_budget as f64 >= clock.open_secs {
            // Open first; ack once the prompt is known to open.
            out.push(Action::Open { job, budget: ack_budget });
            continue;
        }
        if let Some(Local::Failed { reason, .. }) = j.local {
            // It was tried and did not open: acking it now would promise what may not be kept.
            out.push(refuse("prompt", format!("{reason}; not acked before the ack deadline ({ack_deadline})"), true));
            continue;
        }
        if let Some(f) = funds {
            let needed = f.ack_cost.saturating_add(f.complete_cost);
            if promised.saturating_add(needed) > f.balance {
                out.push(refuse(
                    "funds",
                    format!(
                        "the balance ({} wei) cannot pay this ack and its completion ({needed} wei at today's fees) on \
                         top of the {promised} wei already owed to other jobs; top up the worker's address",
                        f.balance
                    ),
                    false,
                ));
                continue;
            }
            promised = promised.saturating_add(needed);
        }
        let unopened = (!opened).then(|| {
            format!(
                "acked before opening the prompt: {ack_budget} s are left before the ack deadline, opening takes about \
                 {:.0} s",
                clock.open_secs
            )
        });
        out.push(Action::Ack { job, unopened });
        if !matches!(j.local, Some(Local::Ready)) {
            queue = queue.saturating_add(1);
            out.push(Action::Work { job, budget: budget(completion_deadline, clock) });
        }
    }
    out
}

/// Whole seconds of chain time left before `deadline`, less the margin for the transaction.
#[allow(clippy::cast_possible_truncation, reason = "a float cast to an integer saturates (NaN gives 0)")]
pub fn budget(deadline: u64, clock: &Clock) -> u64 {
    let left = deadline as f64 - clock.now - clock.margin as f64;
    if left <= 0.0 { 0 } else { left.floor() as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(job: u64, state: JobState, deadline: u64) -> Assignment {
        Assignment {
            job_id: job,
            session_id: 1,
            state,
            deadline: Some(deadline),
            submitted_block: 10,
            submitted_at: 1_000,
            acknowledged_at: None,
            model_id: None,
            enc_worker_key: None,
            key_updated_block: None,
            session_status: None,
        }
    }

    fn view<'a>(a: &'a Assignment, local: Option<&'a Local>) -> JobView<'a> {
        JobView {
            assignment: a,
            ack_mined: false,
            complete_mined: false,
            live: false,
            local,
            blocker: None,
            hold: None,
        }
    }

    fn clock() -> Clock {
        Clock {
            now: 1_000.0,
            next_ts: 1_001,
            completion_timeout: 300,
            margin: 5,
            job_secs: 10.0,
            open_secs: 2.0,
            concurrency: 1,
        }
    }

    #[test]
    fn a_new_job_is_opened_before_it_is_acked() {
        let a = assignment(1, JobState::Submitted, 1_060);
        let actions = plan(&[view(&a, None)], &clock(), None, 0);
        assert_eq!(actions, vec![Action::Open { job: 1, budget: 55 }]);
        // Opened: ack, and the work starts at once.
        let opened = Local::Opened;
        let actions = plan(&[view(&a, Some(&opened))], &clock(), None, 0);
        assert_eq!(actions, vec![Action::Ack { job: 1, unopened: None }, Action::Work { job: 1, budget: 296 }]);
    }

    #[test]
    fn a_prompt_that_cannot_be_opened_is_refused_without_an_ack() {
        let a = assignment(1, JobState::Submitted, 1_060);
        let failed = Local::Failed { reason: "blob not found".into(), permanent: true, retry_due: true };
        let actions = plan(&[view(&a, Some(&failed))], &clock(), None, 0);
        assert!(
            matches!(&actions[..], [Action::Refuse { job: 1, what: "prompt", last: true, reason }] if reason.contains("not acked"))
        );
        // A transient failure is tried again once its back-off has passed, still before any ack.
        let failed = Local::Failed { reason: "beacon timeout".into(), permanent: false, retry_due: true };
        assert_eq!(plan(&[view(&a, Some(&failed))], &clock(), None, 0), vec![Action::Open { job: 1, budget: 55 }]);
        let waiting = Local::Failed { reason: "beacon timeout".into(), permanent: false, retry_due: false };
        assert!(plan(&[view(&a, Some(&waiting))], &clock(), None, 0).is_empty());
        // Still failing when the ack deadline comes close: refused, never acked unopened.
        let close = assignment(1, JobState::Submitted, 1_006);
        let actions = plan(&[view(&close, Some(&failed))], &clock(), None, 0);
        assert!(matches!(&actions[..], [Action::Refuse { what: "prompt", last: true, .. }]), "{actions:?}");
    }

    #[test]
    fn an_ack_deadline_too_close_to_open_first_acks_at_once_and_says_so() {
        let a = assignment(1, JobState::Submitted, 1_006);
        let actions = plan(&[view(&a, None)], &clock(), None, 0);
        match &actions[..] {
            [Action::Ack { job: 1, unopened: Some(why) }, Action::Work { job: 1, .. }] => {
                assert!(why.contains("before opening the prompt"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_still_in_flight_past_its_deadline_is_given_up() {
        let a = assignment(1, JobState::Submitted, 1_000);
        let mut v = view(&a, None);
        v.live = true;
        assert!(
            matches!(&plan(&[v], &clock(), None, 0)[..], [Action::Cancel { job: 1, reason }] if reason.contains("ack"))
        );
        let a = assignment(2, JobState::Acknowledged, 1_000);
        let ready = Local::Ready;
        let mut v = view(&a, Some(&ready));
        v.live = true;
        assert!(
            matches!(&plan(&[v], &clock(), None, 0)[..], [Action::Cancel { job: 2, reason }] if reason.contains("completion"))
        );
        // Before the deadline: left alone.
        let a = assignment(3, JobState::Acknowledged, 1_300);
        let mut v = view(&a, Some(&ready));
        v.live = true;
        assert!(plan(&[v], &clock(), None, 0).is_empty());
    }

    #[test]
    fn a_passed_ack_deadline_is_final() {
        let a = assignment(1, JobState::Submitted, 1_000);
        let actions = plan(&[view(&a, None)], &clock(), None, 0);
        assert!(matches!(&actions[..], [Action::Refuse { what: "ack", last: true, .. }]));
    }

    #[test]
    fn a_dropped_ack_is_sent_again_even_when_the_answer_is_ready() {
        // The work finished while the ack was in flight; the ack then left the outbox unmined.
        let a = assignment(1, JobState::Submitted, 1_060);
        let ready = Local::Ready;
        let actions = plan(&[view(&a, Some(&ready))], &clock(), None, 0);
        assert_eq!(actions, vec![Action::Ack { job: 1, unopened: None }]);
    }

    #[test]
    fn a_dropped_completion_is_sent_again_from_the_kept_answer() {
        let a = assignment(1, JobState::Acknowledged, 1_300);
        let ready = Local::Ready;
        assert_eq!(plan(&[view(&a, Some(&ready))], &clock(), None, 0), vec![Action::Complete { job: 1 }]);
        // In flight: nothing to do.
        let mut v = view(&a, Some(&ready));
        v.live = true;
        assert!(plan(&[v], &clock(), None, 0).is_empty());
        // Mined (the store may lag): nothing to do.
        let mut v = view(&a, Some(&ready));
        v.complete_mined = true;
        assert!(plan(&[v], &clock(), None, 0).is_empty());
    }

    #[test]
    fn an_answer_after_the_completion_deadline_is_not_sent() {
        let a = assignment(1, JobState::Acknowledged, 1_000);
        let ready = Local::Ready;
        let actions = plan(&[view(&a, Some(&ready))], &clock(), None, 0);
        assert!(matches!(&actions[..], [Action::Refuse { what: "deadline", last: true, .. }]));
    }

    #[test]
    fn acked_work_is_bounded_by_chain_time() {
        // The chain's clock, not the local one: 1_300 - 1_000 - 5.
        let a = assignment(1, JobState::Acknowledged, 1_300);
        assert_eq!(plan(&[view(&a, None)], &clock(), None, 0), vec![Action::Work { job: 1, budget: 295 }]);
        let late = Clock { now: 1_296.0, ..clock() };
        let actions = plan(&[view(&a, None)], &late, None, 0);
        assert!(matches!(&actions[..], [Action::Refuse { what: "deadline", last: true, .. }]));
    }

    #[test]
    fn an_ack_needs_the_money_for_its_completion_on_top_of_what_is_owed() {
        let funds = Funds { balance: 1_000, ack_cost: 100, complete_cost: 300 };
        let opened = Local::Opened;
        let owed = assignment(1, JobState::Acknowledged, 1_300);
        let working = Local::Working;
        let a2 = assignment(2, JobState::Submitted, 1_060);
        let a3 = assignment(3, JobState::Submitted, 1_060);
        let jobs = [view(&owed, Some(&working)), view(&a2, Some(&opened)), view(&a3, Some(&opened))];
        let c = Clock { concurrency: 4, ..clock() };
        let actions = plan(&jobs, &c, Some(funds), 0);
        // 300 owed + 400 for job 2 = 700; job 3 would need 1_100.
        assert!(actions.contains(&Action::Ack { job: 2, unopened: None }));
        assert!(!actions.iter().any(|a| matches!(a, Action::Ack { job: 3, .. })));
        assert!(actions.iter().any(
            |a| matches!(a, Action::Refuse { job: 3, what: "funds", last: false, reason } if reason.contains("top up"))
        ));
    }

    #[test]
    fn the_queue_in_front_refuses_what_cannot_finish_for_now() {
        let opened = Local::Opened;
        let a = assignment(1, JobState::Submitted, 1_060);
        let slow = Clock { job_secs: 100.0, ..clock() };
        let actions = plan(&[view(&a, Some(&opened))], &slow, None, 3);
        assert!(matches!(&actions[..], [Action::Refuse { what: "deadline", last: false, .. }]));
    }

    #[test]
    fn a_blocked_job_is_refused_before_anything_is_fetched() {
        let a = assignment(1, JobState::Submitted, 1_060);
        let mut v = view(&a, None);
        v.blocker = Some(("model", "its model is not served here".into()));
        assert!(matches!(&plan(&[v], &clock(), None, 0)[..], [Action::Refuse { what: "model", last: true, .. }]));
    }

    #[test]
    fn a_deregistered_worker_acks_nothing_new_and_finishes_what_it_acked() {
        let why = "this worker was deregistered in block 40: it acks no new job; not acked".to_owned();
        let opened = Local::Opened;
        let new = assignment(1, JobState::Submitted, 1_060);
        let mut v = view(&new, Some(&opened));
        v.blocker = Some(("deregistered", why.clone()));
        let actions = plan(&[v], &clock(), None, 0);
        assert_eq!(actions, vec![Action::Refuse { job: 1, what: "deregistered", reason: why.clone(), last: true }]);
        // Acked, its work goes on whatever blocks new jobs; an ack already in flight too.
        let acked = assignment(2, JobState::Acknowledged, 1_300);
        let mut v = view(&acked, None);
        v.blocker = Some(("deregistered", why.clone()));
        assert_eq!(plan(&[v], &clock(), None, 0), vec![Action::Work { job: 2, budget: 295 }]);
        let mut v = view(&new, Some(&opened));
        v.blocker = Some(("deregistered", why));
        v.live = true;
        assert!(matches!(&plan(&[v], &clock(), None, 0)[..], [Action::Work { job: 1, .. }]));
    }

    #[test]
    fn while_the_llm_server_is_down_new_jobs_wait_and_acked_ones_keep_trying() {
        let down = "the LLM server is down (connection refused); not acked while it is";
        let new = assignment(1, JobState::Submitted, 1_060);
        let mut v = view(&new, None);
        v.hold = Some(down);
        let actions = plan(&[v], &clock(), None, 0);
        assert!(
            matches!(&actions[..], [Action::Refuse { job: 1, what: "llm", last: false, reason }] if reason == down),
            "{actions:?}"
        );
        // An acked job is owed: its work is retried (and fails fast while the server is down).
        let acked = assignment(2, JobState::Acknowledged, 1_300);
        let mut v = view(&acked, None);
        v.hold = Some(down);
        assert!(matches!(&plan(&[v], &clock(), None, 0)[..], [Action::Work { job: 2, .. }]));
    }

    #[test]
    fn deadlines_clocks_and_funds_at_their_limits_give_decisions_instead_of_panics() {
        let states = [JobState::Submitted, JobState::Acknowledged];
        let clocks = [
            // The end of time, on a chain of zero block times and no timeout.
            Clock {
                now: u64::MAX as f64,
                next_ts: u64::MAX,
                completion_timeout: u64::MAX,
                margin: u64::MAX,
                ..clock()
            },
            // The beginning of time, with a pace nothing could keep.
            Clock {
                now: 0.0,
                next_ts: 0,
                completion_timeout: 0,
                margin: 0,
                job_secs: f64::MAX,
                concurrency: 0,
                ..clock()
            },
            Clock { now: f64::NAN, job_secs: f64::NAN, open_secs: f64::INFINITY, ..clock() },
        ];
        let funds = [None, Some(Funds { balance: u128::MAX, ack_cost: u128::MAX, complete_cost: u128::MAX })];
        let locals = [None, Some(Local::Opened), Some(Local::Ready)];
        for state in states {
            for deadline in [0, 1_001, u64::MAX] {
                let a = assignment(1, state, deadline);
                for c in &clocks {
                    for f in funds {
                        for local in &locals {
                            let mut v = view(&a, local.as_ref());
                            v.live = deadline == u64::MAX;
                            let actions = plan(&[v], c, f, usize::MAX);
                            assert!(actions.len() <= 2, "{state:?} due {deadline} at {c:?}: {actions:?}");
                        }
                    }
                }
            }
        }
        assert_eq!(budget(u64::MAX, &Clock { now: 0.0, margin: 0, ..clock() }), u64::MAX, "saturates");
        assert_eq!(budget(0, &Clock { now: f64::NAN, ..clock() }), 0);
        assert_eq!(budget(u64::MAX, &Clock { now: u64::MAX as f64, margin: u64::MAX, ..clock() }), 0);
    }
}
