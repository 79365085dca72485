//! Where the replica stands against the store, shared between the [`Follower`](crate::Follower)
//! that updates it and whatever shows it (the Prometheus endpoint, the API): a plain value behind
//! a mutex, copied out whole by [`ReplicaStatus::get`], so a reader never sees half an update.

use std::sync::{Mutex, PoisonError};

use alloy::primitives::B256;

/// The follower's view of the replica, as of its last look at both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaState {
    /// The store block the replica holds; None until the follower has reached the replica once
    /// (or while the store has indexed nothing).
    pub block: Option<u64>,
    /// That block's hash.
    pub hash: Option<B256>,
    /// The store's change-log position the replica has applied.
    pub seq: Option<u64>,
    /// The store's cursor block, as last read.
    pub store_block: Option<u64>,
    /// Commit time (unix seconds) of the oldest store commit the replica has not applied; None
    /// when it has applied them all.
    pub pending_since: Option<u64>,
    /// Unix seconds of the follower's last successful catch-up or copy.
    pub updated_at: Option<u64>,
    /// Why the last attempt failed, while the replica cannot be brought up (URL redacted);
    /// cleared by the next success.
    pub last_error: Option<String>,
    /// Unix seconds of the first failure of the current outage.
    pub failing_since: Option<u64>,
    /// Whole copies made because the change log could not bring the replica up (entries
    /// pruned, `lcw replay --write`, a store made anew); the first copy is not one.
    pub recopies: u64,
    /// Catch-ups (connections included) that failed.
    pub failed_catchups: u64,
}

impl ReplicaState {
    /// Blocks the store's cursor stands above the replica's; None until the replica was reached.
    pub fn lag_blocks(&self) -> Option<u64> {
        let block = self.block?;
        Some(self.store_block.unwrap_or(block).saturating_sub(block))
    }

    /// Seconds since the oldest store commit the replica has not applied (0 when it has applied
    /// every one), at `now` (unix seconds); None until the replica was reached.
    pub fn lag_seconds(&self, now: u64) -> Option<u64> {
        self.seq?;
        Some(self.pending_since.map_or(0, |since| now.saturating_sub(since)))
    }
}

/// A [`ReplicaState`] shared between threads.
#[derive(Debug, Default)]
pub struct ReplicaStatus {
    state: Mutex<ReplicaState>,
}

impl ReplicaStatus {
    /// A copy of the state now.
    pub fn get(&self) -> ReplicaState {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records that the follower stopped for good at `now` (unix seconds), with why.
    pub fn fail(&self, why: String, now: u64) {
        self.update(|s| {
            s.last_error = Some(why);
            s.failing_since.get_or_insert(now);
        });
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ReplicaState)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The state as Prometheus text, at `now` (unix seconds). The gauges of the replica's
    /// position appear once the follower has reached it.
    pub fn metrics(&self, now: u64) -> String {
        render(&self.get(), now)
    }
}

fn render(s: &ReplicaState, now: u64) -> String {
    let gauges = [
        ("lcw_replica_block", "Store block the PostgreSQL replica holds", s.block),
        ("lcw_replica_lag_blocks", "Store cursor block minus the replica's", s.lag_blocks()),
        (
            "lcw_replica_lag_seconds",
            "Seconds since the oldest store commit the replica has not applied (0 when caught up)",
            s.lag_seconds(now),
        ),
    ];
    let counters = [
        (
            "lcw_replica_recopies_total",
            "Whole copies made because the change log could not bring the replica up",
            s.recopies,
        ),
        ("lcw_replica_failed_catchups_total", "Catch-ups of the replica that failed", s.failed_catchups),
    ];
    let mut out = String::new();
    for (name, help, value) in gauges {
        if let Some(v) = value {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
        }
    }
    for (name, help, v) in counters {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn lag_counts_from_the_oldest_unapplied_commit_and_is_zero_when_caught_up() {
        let mut s = ReplicaState { failed_catchups: 2, ..ReplicaState::default() };
        let text = render(&s, 1_000);
        assert_eq!(value(&text, "lcw_replica_block"), None, "unknown before the replica was reached: {text}");
        assert_eq!(value(&text, "lcw_replica_failed_catchups_total"), Some(2), "{text}");

        s.block = Some(90);
        s.seq = Some(40);
        s.store_block = Some(100);
        s.pending_since = Some(970);
        let text = render(&s, 1_000);
        assert_eq!(value(&text, "lcw_replica_block"), Some(90));
        assert_eq!(value(&text, "lcw_replica_lag_blocks"), Some(10));
        assert_eq!(value(&text, "lcw_replica_lag_seconds"), Some(30));
        assert!(text.contains("# TYPE lcw_replica_recopies_total counter\n"), "{text}");

        s.block = Some(100);
        s.pending_since = None;
        let text = render(&s, 5_000);
        assert_eq!(value(&text, "lcw_replica_lag_blocks"), Some(0));
        assert_eq!(value(&text, "lcw_replica_lag_seconds"), Some(0));
    }
}
