//! Which outcome each simulated job gets: a pure, deterministic function of the run's seed and the
//! job id, so a run is reproducible and the shares hold over many jobs.

/// What the simulator makes happen to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged, completed, (released when auto-release is on).
    Normal,
    /// The simulated worker never acknowledges; the keeper claims the timeout (slash 200 bps).
    AckTimeout,
    /// Acknowledged but never completed; the keeper claims the timeout (slash 500 bps).
    CompletionTimeout,
    /// Completed, then disputed by the consumer; the disputer rules (or lets it default).
    Dispute(Verdict),
    /// Submitted on a session the consumer closes at once; settled without fault after the deadline.
    Settle,
}

/// How a dispute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Worker slashed 1500 bps, consumer refunded.
    Guilty,
    /// Bond to the protocol, job releasable at once.
    NotGuilty,
    /// The disputer never rules; release after the resolution timeout defaults it.
    Default,
}

/// Percentages (0–100) of jobs given each non-normal outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shares {
    /// Jobs the simulated worker lets time out (half before, half after acknowledging).
    pub timeout: f64,
    /// Completed jobs the consumer disputes (a third each guilty, not guilty, defaulted).
    pub dispute: f64,
    /// Jobs submitted on a session that is closed at once (settled without fault).
    pub settle: f64,
}

impl Shares {
    /// Checks each share and their sum are within 0–100.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in
            [("--timeout-share", self.timeout), ("--dispute-share", self.dispute), ("--settle-share", self.settle)]
        {
            if !(0.0..=100.0).contains(&v) || v.is_nan() {
                return Err(format!("{name} must be a percentage between 0 and 100, got {v}"));
            }
        }
        if self.timeout + self.dispute + self.settle > 100.0 {
            return Err(format!(
                "--timeout-share + --dispute-share + --settle-share add up to {}%, more than 100%",
                self.timeout + self.dispute + self.settle
            ));
        }
        Ok(())
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 100) for `(seed, key, stream)`.
fn percent(seed: u64, key: u64, stream: u64) -> (f64, u64) {
    let h = splitmix64(seed ^ splitmix64(key ^ stream.rotate_left(32)));
    ((h % 10_000) as f64 / 100.0, h)
}

/// Whether the `index`-th submission goes on a throwaway session to be settled without fault.
pub fn is_settle(seed: u64, index: u64, shares: &Shares) -> bool {
    percent(seed, index, 1).0 < shares.settle
}

/// The outcome of a job submitted on an ordinary session (the settle draw is made at submission).
/// Shares are of all jobs, so the timeout and dispute draws are rescaled to the non-settled part.
pub fn outcome(seed: u64, job_id: u64, shares: &Shares) -> Outcome {
    let rest = 100.0 - shares.settle;
    if rest <= 0.0 {
        return Outcome::Normal;
    }
    let (p, h) = percent(seed, job_id, 2);
    let p = p * rest / 100.0;
    if p < shares.timeout {
        if h & (1 << 40) == 0 { Outcome::AckTimeout } else { Outcome::CompletionTimeout }
    } else if p < shares.timeout + shares.dispute {
        match (h >> 41) % 3 {
            0 => Outcome::Dispute(Verdict::Guilty),
            1 => Outcome::Dispute(Verdict::NotGuilty),
            _ => Outcome::Dispute(Verdict::Default),
        }
    } else {
        Outcome::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_hold_over_many_jobs() {
        let shares = Shares { timeout: 10.0, dispute: 20.0, settle: 5.0 };
        let n = 20_000u64;
        let (mut timeouts, mut disputes, mut settles) = (0, 0, 0);
        for i in 0..n {
            if is_settle(7, i, &shares) {
                settles += 1;
                continue;
            }
            match outcome(7, i, &shares) {
                Outcome::AckTimeout | Outcome::CompletionTimeout => timeouts += 1,
                Outcome::Dispute(_) => disputes += 1,
                _ => {}
            }
        }
        let pct = |c: u64| c as f64 * 100.0 / n as f64;
        assert!((pct(settles) - 5.0).abs() < 1.0, "settle {}", pct(settles));
        assert!((pct(timeouts) - 10.0).abs() < 1.0, "timeout {}", pct(timeouts));
        assert!((pct(disputes) - 20.0).abs() < 1.0, "dispute {}", pct(disputes));
    }

    #[test]
    fn every_outcome_kind_occurs_and_plan_is_deterministic() {
        let shares = Shares { timeout: 30.0, dispute: 30.0, settle: 0.0 };
        let kinds: std::collections::HashSet<_> = (0..500).map(|i| format!("{:?}", outcome(1, i, &shares))).collect();
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(outcome(1, 42, &shares), outcome(1, 42, &shares));
    }

    #[test]
    fn zero_shares_mean_all_normal() {
        let shares = Shares::default();
        assert!((0..1000).all(|i| outcome(3, i, &shares) == Outcome::Normal && !is_settle(3, i, &shares)));
    }

    #[test]
    fn invalid_shares_are_rejected() {
        assert!(Shares { timeout: 120.0, ..Default::default() }.validate().is_err());
        assert!(Shares { timeout: 60.0, dispute: 50.0, settle: 0.0 }.validate().is_err());
        assert!(Shares { timeout: -1.0, ..Default::default() }.validate().is_err());
        assert!(Shares { timeout: 10.0, dispute: 10.0, settle: 10.0 }.validate().is_ok());
    }
}
