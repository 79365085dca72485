//! The settler's Prometheus families (`lcw_settler_*`), counted by the executor and written as
//! text at each scrape ([`Metrics::render`]); the command that runs the settler adds them to the
//! process's `/metrics`.
//!
//! - transactions sent, mined, reverted and reorged out, and the jobs their mined ones acted on,
//!   by kind (`release`, `claim_timeout`, `settle_stuck`);
//! - the release lag: blocks between the first block this settler found a job releasable in and
//!   the block its release was mined in (0: it landed in the first block it could);
//! - the fees paid (gas used times the effective gas price, from the receipts) by kind, the
//!   highest effective gas price paid and the operator's fee ceiling;
//! - the live transactions of the settler's outbox lane.
//!
//! Counters never go down: a mined transaction reorged out stays counted as mined and is counted
//! again, as reorged; a re-mine counts again as mined.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The kinds every family shows from the start, at zero: a rate over a series that appears only
/// at its first event misses that event.
const KINDS: [&str; 3] = ["release", "claim_timeout", "settle_stuck"];

/// Upper bounds of the release lag's buckets, in blocks.
const LAG_BUCKETS: [u64; 9] = [0, 1, 2, 3, 5, 10, 20, 50, 100];

/// What the settler has done since the process started. Shared (`Arc`) between the settler and
/// the metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    kinds: BTreeMap<String, PerKind>,
    /// Release lag: count per bucket of [`LAG_BUCKETS`] (not cumulative), then above the last.
    lag: [u64; LAG_BUCKETS.len() + 1],
    lag_sum: u64,
    fee_cap: u128,
    outbox_live: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct PerKind {
    sent: u64,
    mined: u64,
    reverted: u64,
    reorged: u64,
    jobs: u64,
    fees_wei: u128,
    max_price: u128,
}

impl Metrics {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kind(&self, kind: &str, f: impl FnOnce(&mut PerKind)) {
        f(self.state().kinds.entry(kind.to_owned()).or_default());
    }

    /// A transaction of `kind` was signed and handed to the outbox (first versions only).
    pub fn sent(&self, kind: &str) {
        self.kind(kind, |k| k.sent += 1);
    }

    /// A transaction of `kind` acting on `jobs` jobs was mined with status 1.
    pub fn mined(&self, kind: &str, jobs: usize) {
        self.kind(kind, |k| {
            k.mined += 1;
            k.jobs += jobs as u64;
        });
    }

    /// A transaction of `kind` was mined with status 0.
    pub fn reverted(&self, kind: &str) {
        self.kind(kind, |k| k.reverted += 1);
    }

    /// A mined transaction of `kind` left the chain with its block.
    pub fn reorged(&self, kind: &str) {
        self.kind(kind, |k| k.reorged += 1);
    }

    /// A mined or reverted transaction of `kind` used `gas_used` gas at `price` wei per gas.
    pub fn paid(&self, kind: &str, gas_used: u64, price: u128) {
        self.kind(kind, |k| {
            k.fees_wei = k.fees_wei.saturating_add(price.saturating_mul(u128::from(gas_used)));
            k.max_price = k.max_price.max(price);
        });
    }

    /// A release was mined `blocks` blocks after the first block the job was found releasable in.
    pub fn release_lag(&self, blocks: u64) {
        let mut s = self.state();
        let bucket = LAG_BUCKETS.iter().position(|b| blocks <= *b).unwrap_or(LAG_BUCKETS.len());
        s.lag[bucket] += 1;
        s.lag_sum = s.lag_sum.saturating_add(blocks);
    }

    /// The operator's fee ceiling, wei per gas.
    pub fn set_fee_cap(&self, per_gas: u128) {
        self.state().fee_cap = per_gas;
    }

    /// Live (intent or sent) transactions of the settler's lane.
    pub fn set_outbox_live(&self, n: u64) {
        self.state().outbox_live = n;
    }

    /// The families as Prometheus text.
    pub fn render(&self) -> String {
        let s = self.state();
        let mut kinds = s.kinds.clone();
        for k in KINDS {
            kinds.entry(k.to_owned()).or_default();
        }
        let mut out = String::new();
        let families: [Family; 7] = [
            ("lcw_settler_sent_total", "counter", "Settler transactions sent (first versions), by kind", |k| {
                k.sent as f64
            }),
            ("lcw_settler_mined_total", "counter", "Settler transactions mined with status 1, by kind", |k| {
                k.mined as f64
            }),
            ("lcw_settler_reverted_total", "counter", "Settler transactions mined with status 0, by kind", |k| {
                k.reverted as f64
            }),
            (
                "lcw_settler_reorged_total",
                "counter",
                "Mined settler transactions whose block was reorged out, by kind",
                |k| k.reorged as f64,
            ),
            (
                "lcw_settler_jobs_total",
                "counter",
                "Jobs released, timed out or settled by mined settler transactions, by kind",
                |k| k.jobs as f64,
            ),
            (
                "lcw_settler_fees_paid_wei_total",
                "counter",
                "Fees paid by mined and reverted settler transactions (gas used times effective gas price), by kind",
                |k| k.fees_wei as f64,
            ),
            (
                "lcw_settler_gas_price_max_wei",
                "gauge",
                "Highest effective gas price a settler transaction paid, by kind",
                |k| k.max_price as f64,
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (k, v) in &kinds {
                let _ = writeln!(out, "{name}{{kind=\"{}\"}} {}", escape(k), value(v));
            }
        }
        let _ = writeln!(
            out,
            "# HELP lcw_settler_fee_cap_wei The operator's fee ceiling per gas (transactions are further bounded by \
             what they collect)\n# TYPE lcw_settler_fee_cap_wei gauge\nlcw_settler_fee_cap_wei {}",
            s.fee_cap as f64
        );
        let _ = writeln!(
            out,
            "# HELP lcw_settler_outbox_live_transactions Live (intent or sent) outbox transactions, by lane\n\
             # TYPE lcw_settler_outbox_live_transactions gauge\n\
             lcw_settler_outbox_live_transactions{{lane=\"settler\"}} {}",
            s.outbox_live
        );
        let name = "lcw_settler_release_lag_blocks";
        let _ = writeln!(
            out,
            "# HELP {name} Blocks between the first block a job was found releasable in and its release's block\n\
             # TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in LAG_BUCKETS.iter().zip(s.lag) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = cumulative + s.lag[LAG_BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {}\n{name}_count {count}", s.lag_sum);
        out
    }
}

/// A family by kind: name, type, help, and its value from a kind's counts.
type Family = (&'static str, &'static str, &'static str, fn(&PerKind) -> f64);

/// A label value as the exposition format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_shown_from_the_start_and_counts_add_up_by_kind() {
        let m = Metrics::default();
        let out = m.render();
        for k in KINDS {
            assert!(out.contains(&format!("lcw_settler_mined_total{{kind=\"{k}\"}} 0\n")), "{out}");
        }
        m.sent("release");
        m.mined("release", 3);
        m.mined("claim_timeout", 1);
        m.reverted("release");
        m.paid("release", 100_000, 2_000_000_000);
        m.paid("release", 50_000, 1_000_000_000);
        m.set_fee_cap(50_000_000_000);
        m.set_outbox_live(2);
        let out = m.render();
        assert!(out.contains("lcw_settler_sent_total{kind=\"release\"} 1\n"), "{out}");
        assert!(out.contains("lcw_settler_jobs_total{kind=\"release\"} 3\n"), "{out}");
        assert!(out.contains("lcw_settler_jobs_total{kind=\"claim_timeout\"} 1\n"), "{out}");
        assert!(out.contains("lcw_settler_reverted_total{kind=\"release\"} 1\n"), "{out}");
        assert!(out.contains("lcw_settler_fees_paid_wei_total{kind=\"release\"} 250000000000000\n"), "{out}");
        assert!(out.contains("lcw_settler_gas_price_max_wei{kind=\"release\"} 2000000000\n"), "{out}");
        assert!(out.contains("lcw_settler_fee_cap_wei 50000000000\n"), "{out}");
        assert!(out.contains("lcw_settler_outbox_live_transactions{lane=\"settler\"} 2\n"), "{out}");
        assert!(out.contains("# TYPE lcw_settler_mined_total counter\n"), "{out}");
    }

    #[test]
    fn release_lag_buckets_are_cumulative_and_count_every_release() {
        let m = Metrics::default();
        for blocks in [0, 0, 1, 4, 500] {
            m.release_lag(blocks);
        }
        let out = m.render();
        let b = |le: &str, n: u64| format!("lcw_settler_release_lag_blocks_bucket{{le=\"{le}\"}} {n}\n");
        assert!(out.contains(&b("0", 2)), "{out}");
        assert!(out.contains(&b("1", 3)), "{out}");
        assert!(out.contains(&b("3", 3)), "{out}");
        assert!(out.contains(&b("5", 4)), "{out}");
        assert!(out.contains(&b("100", 4)), "{out}");
        assert!(out.contains(&b("+Inf", 5)), "{out}");
        assert!(
            out.contains("lcw_settler_release_lag_blocks_sum 505\nlcw_settler_release_lag_blocks_count 5\n"),
            "{out}"
        );
    }
}
