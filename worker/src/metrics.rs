//! The worker's Prometheus families (`lcw_worker_*`), counted by the pipeline and written as text
//! at each scrape ([`Metrics::render`]); the command that runs the worker adds them to the
//! process's `/metrics`.
//!
//! - jobs acked and completed (mined), jobs refused for good by the step that refused them, and
//!   worker transactions reverted;
//! - the LLM's inference time per job (histogram, seconds);
//! - sortition claims won, lost, and requests missed by reason;
//! - the wallet's balance and its runway: how many jobs (one ack and one completion each) it pays
//!   for at the fees the next ones would be signed with;
//! - the live transactions of the worker's outbox lane.
//!
//! The indexer's `lcw_worker_session_requests`, `lcw_worker_missed_claims` and
//! `lcw_worker_refused_jobs` are gauges read from the store (every run, restarts included); these
//! are this process's counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::claimer::ClaimStats;

/// Upper bounds of the LLM latency's buckets, in seconds.
const LLM_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

/// What the worker has done since the process started. Shared (`Arc`) between the worker and the
/// metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    acked: u64,
    completed: u64,
    reverted: u64,
    refused: BTreeMap<String, u64>,
    /// LLM latency: count per bucket of [`LLM_BUCKETS`] (not cumulative), then above the last.
    llm: [u64; LLM_BUCKETS.len() + 1],
    llm_sum: f64,
    won: u64,
    lost: u64,
    missed: BTreeMap<String, u64>,
    balance: Option<u128>,
    /// Wei one job (its ack and its completion) costs at the current fees.
    job_cost: Option<u128>,
    outbox_live: u64,
}

impl Metrics {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Acks of `n` jobs were mined.
    pub fn acked(&self, n: usize) {
        self.state().acked += n as u64;
    }

    /// Completions of `n` jobs were mined.
    pub fn completed(&self, n: usize) {
        self.state().completed += n as u64;
    }

    /// A worker transaction (not a claim) reverted.
    pub fn reverted(&self) {
        self.state().reverted += 1;
    }

    /// A job was refused for good at `step` (counted once per job).
    pub fn refused(&self, step: &str) {
        *self.state().refused.entry(step.to_owned()).or_default() += 1;
    }

    /// The model answered one job in `secs` seconds.
    pub fn llm(&self, secs: f64) {
        let mut s = self.state();
        let bucket = LLM_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LLM_BUCKETS.len());
        s.llm[bucket] += 1;
        s.llm_sum += secs;
    }

    /// The claimer's outcomes so far (they only grow within a process).
    pub fn claims(&self, stats: &ClaimStats) {
        let mut s = self.state();
        s.won = stats.won;
        s.lost = stats.lost;
        s.missed = stats.missed.iter().map(|(k, v)| (k.clone(), *v)).collect();
    }

    /// The wallet's balance, and what one job costs at the current fees when they are known.
    pub fn wallet(&self, balance: u128, job_cost: Option<u128>) {
        let mut s = self.state();
        s.balance = Some(balance);
        if job_cost.is_some() {
            s.job_cost = job_cost;
        }
    }

    /// Live (intent or sent) transactions of the worker's lane.
    pub fn set_outbox_live(&self, n: u64) {
        self.state().outbox_live = n;
    }

    /// The families as Prometheus text.
    pub fn render(&self) -> String {
        let s = self.state();
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: String| vec![(String::new(), v)];
        put("lcw_worker_jobs_acked_total", "counter", "Jobs whose ack this process mined", &plain(s.acked.to_string()));
        put(
            "lcw_worker_jobs_completed_total",
            "counter",
            "Jobs whose completion this process mined",
            &plain(s.completed.to_string()),
        );
        let mut refused = s.refused.clone();
        for step in lcw_schema::store::refusals::STEPS {
            refused.entry(step.to_owned()).or_default();
        }
        let by_step: Vec<_> =
            refused.iter().map(|(step, n)| (format!("{{step=\"{}\"}}", escape(step)), n.to_string())).collect();
        put(
            "lcw_worker_jobs_refused_total",
            "counter",
            "Jobs this process refused for good, by the step that refused them",
            &by_step,
        );
        put(
            "lcw_worker_reverted_total",
            "counter",
            "Worker transactions (acks, completions) that reverted",
            &plain(s.reverted.to_string()),
        );
        put(
            "lcw_worker_claims_won_total",
            "counter",
            "Session requests this process claimed and won",
            &plain(s.won.to_string()),
        );
        put(
            "lcw_worker_claims_lost_total",
            "counter",
            "Claims this process sent that another worker won",
            &plain(s.lost.to_string()),
        );
        let missed: Vec<_> =
            s.missed.iter().map(|(r, n)| (format!("{{reason=\"{}\"}}", escape(r)), n.to_string())).collect();
        put(
            "lcw_worker_claims_missed_total",
            "counter",
            "Session requests this worker was eligible for and did not claim, by reason",
            &missed,
        );
        if let Some(b) = s.balance {
            put("lcw_worker_balance_wei", "gauge", "The worker wallet's balance", &plain((b as f64).to_string()));
        }
        if let (Some(b), Some(cost)) = (s.balance, s.job_cost) {
            let runway = b as f64 / cost.max(1) as f64;
            put(
                "lcw_worker_runway_jobs",
                "gauge",
                "Jobs (one ack and one completion each) the balance pays for at the current fees",
                &plain(runway.to_string()),
            );
        }
        put(
            "lcw_worker_outbox_live_transactions",
            "gauge",
            "Live (intent or sent) outbox transactions, by lane",
            &[("{lane=\"worker\"}".to_owned(), s.outbox_live.to_string())],
        );
        let name = "lcw_worker_llm_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time the LLM took to answer one job (inference only)\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in LLM_BUCKETS.iter().zip(s.llm) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = cumulative + s.llm[LLM_BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}", s.llm_sum);
        out
    }
}

/// A label value as the exposition format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_step_is_shown_from_the_start_and_the_runway_needs_the_fees() {
        let m = Metrics::default();
        let out = m.render();
        for step in lcw_schema::store::refusals::STEPS {
            assert!(out.contains(&format!("lcw_worker_jobs_refused_total{{step=\"{step}\"}} 0\n")), "{out}");
        }
        assert!(!out.contains("lcw_worker_balance_wei"), "no balance before it is read: {out}");
        m.wallet(10_000, None);
        let out = m.render();
        assert!(out.contains("lcw_worker_balance_wei 10000\n"), "{out}");
        assert!(!out.contains("lcw_worker_runway_jobs"), "no runway before the fees are known: {out}");
        m.wallet(10_000, Some(400));
        assert!(m.render().contains("lcw_worker_runway_jobs 25\n"));
    }

    #[test]
    fn outcomes_are_counted_and_latency_buckets_are_cumulative() {
        let m = Metrics::default();
        m.acked(2);
        m.completed(1);
        m.refused("prompt");
        m.refused("prompt");
        m.llm(0.3);
        m.llm(4.0);
        m.llm(500.0);
        let stats = ClaimStats { won: 3, lost: 1, missed: [("busy".to_owned(), 2)].into(), ..ClaimStats::default() };
        m.claims(&stats);
        let out = m.render();
        for line in [
            "lcw_worker_jobs_acked_total 2\n",
            "lcw_worker_jobs_completed_total 1\n",
            "lcw_worker_jobs_refused_total{step=\"prompt\"} 2\n",
            "lcw_worker_claims_won_total 3\n",
            "lcw_worker_claims_lost_total 1\n",
            "lcw_worker_claims_missed_total{reason=\"busy\"} 2\n",
            "lcw_worker_llm_seconds_bucket{le=\"0.25\"} 0\n",
            "lcw_worker_llm_seconds_bucket{le=\"0.5\"} 1\n",
            "lcw_worker_llm_seconds_bucket{le=\"5\"} 2\n",
            "lcw_worker_llm_seconds_bucket{le=\"120\"} 2\n",
            "lcw_worker_llm_seconds_bucket{le=\"+Inf\"} 3\n",
            "lcw_worker_llm_seconds_count 3\n",
            "# TYPE lcw_worker_llm_seconds histogram\n",
        ] {
            assert!(out.contains(line), "{line:?} in:\n{out}");
        }
    }
}
