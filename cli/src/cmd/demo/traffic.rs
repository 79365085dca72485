//! Consumer traffic until the demo stops: `lcw simulate` runs one after the other, each about 90 s
//! of jobs at the demo's rate with every outcome among them. Each run requests new
//! sessions by sortition, so a worker that joins late (ours, once its LLM server answers) wins
//! some of the next run's. Nobody but lcw releases: the simulator runs without `--auto-release`,
//! so every release is lcw's keeper's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::procs::{Proc, Spec};

/// Percentages of the outcomes the simulator plans; the rest are released.
pub(super) const TIMEOUT_SHARE: u32 = 10;
/// Disputed (guilty, not guilty and defaulted in thirds).
pub(super) const DISPUTE_SHARE: u32 = 15;
/// On sessions closed at once (settled without fault).
pub(super) const SETTLE_SHARE: u32 = 5;
/// Seconds of submissions per run.
const RUN_SECS: f64 = 90.0;
/// How long a run takes to request, claim and open its sessions.
const SETTLE_IN: Duration = Duration::from_secs(30);
/// Stake of each simulated worker, as ours.
pub(super) const STAKE_LCAI: &str = "1000";

/// What every run is asked for.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) network: PathBuf,
    pub(super) rate: f64,
    pub(super) workers: usize,
    pub(super) model: String,
}

impl Plan {
    /// The arguments of run number `n` (from 0): a new seed each run, and four session requests
    /// per worker, ours included, so that each worker wins some of them in most runs.
    pub(super) fn args(&self, n: u64) -> Vec<String> {
        let jobs = ((self.rate * RUN_SECS).ceil() as u64).max(10);
        let sessions = 4 * (self.workers + 1);
        [
            "simulate",
            "--network",
            &self.network.to_string_lossy(),
            "--jobs",
            &jobs.to_string(),
            "--rate",
            &self.rate.to_string(),
            "--workers",
            &self.workers.to_string(),
            "--stake",
            STAKE_LCAI,
            "--auto-complete",
            "--timeout-share",
            &TIMEOUT_SHARE.to_string(),
            "--dispute-share",
            &DISPUTE_SHARE.to_string(),
            "--settle-share",
            &SETTLE_SHARE.to_string(),
            "--model",
            &self.model,
            "--sessions",
            &sessions.to_string(),
            "--request-ttl",
            "30",
            "--seed",
            &(42 + n).to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// The traffic: the current run, and how the earlier ones ended.
#[derive(Debug)]
pub(super) struct Traffic {
    plan: Plan,
    lcw: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    current: Option<Proc>,
    /// When the current run started.
    started: Instant,
    /// Runs started so far.
    runs: u64,
}

impl Traffic {
    pub(super) fn new(plan: Plan, lcw: &Path, data_dir: &Path, log: PathBuf) -> Traffic {
        Traffic {
            plan,
            lcw: lcw.to_owned(),
            data_dir: data_dir.to_owned(),
            log,
            current: None,
            started: Instant::now(),
            runs: 0,
        }
    }

    /// Starts the next run when none is running; returns a note when the last one failed.
    pub(super) fn tick(&mut self) -> anyhow::Result<Option<String>> {
        let mut note = None;
        if let Some(p) = self.current.as_mut() {
            match p.exited() {
                None => return Ok(None),
                Some(status) if status.success() => {}
                Some(status) => {
                    let last = p.tail(1);
                    note = Some(format!(
                        "traffic: simulator run {} ended early ({status}): {}; the next one starts now",
                        self.runs,
                        last.trim()
                    ));
                }
            }
        }
        let mut args = vec!["--data-dir".to_owned(), self.data_dir.to_string_lossy().into_owned()];
        args.extend(self.plan.args(self.runs));
        self.current = Some(Proc::spawn(Spec {
            name: "lcw simulate",
            program: &self.lcw,
            args,
            env: Vec::new(),
            log: self.log.clone(),
        })?);
        self.started = Instant::now();
        self.runs += 1;
        Ok(note)
    }

    /// Whether the current run is past its session requests. The simulator does not follow a
    /// reorg back (it reads each block once), so a request reorged out while it waits for the
    /// first sessions holds its jobs back until the request expires.
    pub(super) fn settled_in(&self) -> bool {
        self.started.elapsed() >= SETTLE_IN
    }

    /// The run in progress, to stop it.
    pub(super) fn current(&mut self) -> Option<&mut Proc> {
        self.current.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_has_every_outcome_90_s_of_jobs_and_a_new_seed() {
        let plan = Plan { network: "d/devnet.json".into(), rate: 1.5, workers: 3, model: "gemma3-270m".into() };
        let a = plan.args(0).join(" ");
        assert!(a.starts_with("simulate --network d/devnet.json --jobs 135 --rate 1.5 --workers 3"), "{a}");
        for part in ["--timeout-share 10", "--dispute-share 15", "--settle-share 5", "--sessions 16", "--seed 42"] {
            assert!(a.contains(part), "{part} in {a}");
        }
        assert!(!a.contains("--auto-release"), "only lcw releases: {a}");
        assert!(plan.args(1).join(" ").contains("--seed 43"));
        let slow = Plan { rate: 0.01, ..plan };
        assert!(slow.args(0).join(" ").contains("--jobs 10 "));
    }
}
