//! Whether a reverted transaction of lcw lost a race it could not see, judged by what lcw could
//! know when it last sent it: the transaction that ended its jobs first, against the head at
//! which the node last accepted any version of it (the proxies keep every accepted send).
//!
//! A transaction waits in a node's pool for blocks (a fee spike, a full pool, a refusal sent
//! again each block), and lcw simulates it before each send: it cannot see a competitor mined
//! after its last send. A competitor mined before it means lcw sent (or the node took) a
//! transaction whose jobs were already ended: lcw's fault, however close the blocks.

use std::collections::HashMap;

use alloy::primitives::B256;

/// The state-changing events of a job, in the logs' `event` column.
pub(crate) const JOB_EVENTS: [&str; 9] = [
    "JobSubmitted",
    "JobAcknowledged",
    "JobCompleted",
    "DisputeCreated",
    "DisputeResolved",
    "DisputeDefaulted",
    "JobReleased",
    "JobTimedOut",
    "JobSettledNoFault",
];

/// One event of a job, where the chain put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobEvent {
    pub(crate) job: i64,
    pub(crate) event: String,
    pub(crate) block: u64,
    pub(crate) tx_index: u64,
    pub(crate) log_index: u64,
    pub(crate) tx: B256,
}

impl JobEvent {
    fn at(&self) -> (u64, u64, u64) {
        (self.block, self.tx_index, self.log_index)
    }
}

/// Whether `event` ends the state a transaction of outbox kind `kind` needs its job in: an end of
/// the job ends every kind; an acknowledgement ends an ack (and an ack timeout's claim), a
/// completion a completion (and a completion timeout's claim); for a release they are the job's
/// history. A dispute ends nothing: it is raised within the dispute window, before a release can
/// be sent, and the release of a job whose dispute timed out defaults it in the same call.
pub(crate) fn ends(kind: &str, event: &str) -> bool {
    match event {
        "JobReleased" | "JobTimedOut" | "JobSettledNoFault" => true,
        "JobAcknowledged" => matches!(kind, "ack" | "claim_timeout"),
        "JobCompleted" => matches!(kind, "complete" | "claim_timeout"),
        _ => false,
    }
}

/// The transaction that ended the jobs first: of each job's last event before ours (`ours` is
/// its block and index), those that end what `kind` needs, the earliest.
pub(crate) fn competitor<'a>(kind: &str, events: &'a [JobEvent], ours: (u64, u64)) -> Option<&'a JobEvent> {
    let mut last: HashMap<i64, &JobEvent> = HashMap::new();
    for e in events.iter().filter(|e| (e.block, e.tx_index) < ours) {
        let slot = last.entry(e.job).or_insert(e);
        if e.at() > slot.at() {
            *slot = e;
        }
    }
    last.into_values().filter(|e| ends(kind, &e.event)).min_by_key(|e| e.at())
}

/// The head of the last accepted send of any version (`hashes`), from `sends` (per hash, the
/// head at each accepted send; an unread head counts as later than any block).
pub(crate) fn last_send(sends: &HashMap<B256, Vec<Option<u64>>>, hashes: &[B256]) -> Option<u64> {
    hashes.iter().filter_map(|h| sends.get(h)).flatten().map(|head| head.unwrap_or(u64::MAX)).max()
}

fn head(h: u64) -> String {
    if h == u64::MAX { "an unread head".into() } else { format!("head {h}") }
}

/// The verdict on one revert (its reorg aside): whether it lost a race lcw could not see, and
/// the blocks that say so.
pub(crate) fn judge(last_send: Option<u64>, competitor: Option<&JobEvent>) -> (bool, String) {
    match (last_send, competitor) {
        (_, None) => (false, "no other transaction ended one of its jobs before it".into()),
        (None, Some(c)) => {
            (false, format!("job {} {} in block {}, and no accepted send of it recorded", c.job, c.event, c.block))
        }
        (Some(h), Some(c)) if c.block >= h => (
            true,
            format!(
                "lcw's last accepted send at {}, job {} {} in block {} (at or after it)",
                head(h),
                c.job,
                c.event,
                c.block
            ),
        ),
        (Some(h), Some(c)) => (
            false,
            format!(
                "job {} {} in block {}, before lcw's last accepted send at {}: sent when its jobs were already ended",
                c.job,
                c.event,
                c.block,
                head(h)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(job: i64, event: &str, block: u64, tx_index: u64) -> JobEvent {
        JobEvent { job, event: event.into(), block, tx_index, log_index: 0, tx: B256::repeat_byte(block as u8) }
    }

    #[test]
    fn a_release_that_waited_in_the_pool_lost_a_race_when_the_keeper_released_after_its_last_send() {
        // Job 28 completed in block 70; lcw's release refused during a fee spike and a full pool,
        // sent again each block, last accepted at head 105; the keeper released it in 106 and the
        // waiting release was mined in 109.
        let events =
            [event(28, "JobAcknowledged", 40, 0), event(28, "JobCompleted", 70, 1), event(28, "JobReleased", 106, 2)];
        let c = competitor("release", &events, (109, 0));
        assert_eq!(c, Some(&events[2]));
        let sends =
            HashMap::from([(B256::repeat_byte(1), vec![Some(99), Some(104)]), (B256::repeat_byte(2), vec![Some(105)])]);
        let last = last_send(&sends, &[B256::repeat_byte(1), B256::repeat_byte(2)]);
        assert_eq!(last, Some(105));
        let (raced, why) = judge(last, c);
        assert!(raced, "{why}");
        assert_eq!(why, "lcw's last accepted send at head 105, job 28 JobReleased in block 106 (at or after it)");
        // The same block as the last send: mined before lcw's simulation could see it.
        assert!(judge(Some(106), c).0);
    }

    #[test]
    fn a_revert_is_lcws_fault_when_the_competitor_came_before_its_last_send() {
        let events = [event(28, "JobCompleted", 70, 1), event(28, "JobReleased", 106, 2)];
        let c = competitor("release", &events, (109, 0));
        let (raced, why) = judge(Some(107), c);
        assert!(!raced);
        assert_eq!(
            why,
            "job 28 JobReleased in block 106, before lcw's last accepted send at head 107: sent when its jobs were \
             already ended"
        );
        // A send whose head was not read cannot clear it; nor can a transaction never seen sent.
        assert!(!judge(Some(u64::MAX), c).0);
        assert!(!judge(None, c).0);
    }

    #[test]
    fn a_revert_no_other_transaction_explains_is_lcws_fault() {
        // A release of a job that was only completed: its history is no competitor.
        let events = [event(5, "JobAcknowledged", 10, 0), event(5, "JobCompleted", 30, 0)];
        assert_eq!(competitor("release", &events, (60, 0)), None);
        assert!(!judge(Some(59), None).0);
        // A competitor later in the block, or after it, did not make it revert.
        let events = [event(5, "JobCompleted", 30, 0), event(5, "JobReleased", 60, 3), event(5, "JobReleased", 61, 0)];
        assert_eq!(competitor("release", &events, (60, 1)), None);
    }

    #[test]
    fn the_competitor_is_the_earliest_end_among_the_jobs() {
        // A release of jobs 1 and 2: job 2 released in block 50, job 1 in block 58. Job 2 ended
        // first, so a last send at head 55 went out with an ended job.
        let events = [
            event(1, "JobCompleted", 20, 0),
            event(2, "JobCompleted", 21, 0),
            event(2, "JobReleased", 50, 1),
            event(1, "JobReleased", 58, 0),
        ];
        let c = competitor("release", &events, (60, 0));
        assert_eq!(c, Some(&events[2]));
        assert!(!judge(Some(55), c).0);
        assert!(judge(Some(50), c).0);
    }

    #[test]
    fn an_acknowledgement_ends_a_timeout_claim_but_not_a_release() {
        // The keeper's claim of an ack timeout, beaten by the worker's late ack in block 44.
        let events = [event(9, "JobSubmitted", 20, 0), event(9, "JobAcknowledged", 44, 1)];
        let c = competitor("claim_timeout", &events, (45, 0));
        assert_eq!(c, Some(&events[1]));
        assert!(judge(Some(43), c).0);
        assert_eq!(competitor("release", &events, (45, 0)), None);
        // A job disputed and resolved is releasable again, and one whose dispute timed out is
        // released by the call that defaults it: neither a resolution nor a dispute competes.
        let events =
            [event(3, "JobCompleted", 10, 0), event(3, "DisputeCreated", 15, 0), event(3, "DisputeResolved", 25, 0)];
        assert_eq!(competitor("release", &events, (40, 0)), None);
        assert_eq!(competitor("release", &events[..2], (40, 0)), None);
        // The release of jobs 3 (its dispute timed out) and 8, which another keeper released
        // first: job 8's release is the competitor.
        let events =
            [event(3, "DisputeCreated", 43, 0), event(8, "JobCompleted", 45, 0), event(8, "JobReleased", 67, 2)];
        assert_eq!(competitor("release", &events, (67, 4)), Some(&events[2]));
    }
}
