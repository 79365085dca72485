//! Consumer traffic for the whole run: `lcw simulate` against the registered workers (the
//! simulated ones ack and complete by themselves; lcw's worker gets a real sealed prompt per
//! job), with timeouts, disputes and jobs on closed sessions among the outcomes. Nobody but lcw
//! releases: the simulator runs without `--auto-release`, so lcw's keeper releases the
//! simulated workers' jobs and lcw's worker its own.
//!
//! A simulator that stops before the traffic period ends (a reorg can leave it waiting for a job
//! that no longer exists) is started again with the jobs of the time that is left.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::procs::{Proc, tail};
use super::rig::Rig;
use super::say;

/// Percentages of the outcomes the simulator plans.
const TIMEOUT_SHARE: &str = "10";
const DISPUTE_SHARE: &str = "15";
const SETTLE_SHARE: &str = "5";

/// One `lcw simulate` run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimRun {
    /// Jobs it was asked for.
    pub(crate) jobs: u64,
    /// Its exit: `ok`, the status, or `stopped` when the soak ended it.
    pub(crate) exit: String,
    /// Its report (`lcw simulate --json`), when it finished.
    pub(crate) report: Option<serde_json::Value>,
}

/// The traffic driver.
#[derive(Debug)]
pub(crate) struct Traffic {
    proc: Proc,
    rate: f64,
    seed: u64,
    profile: String,
    /// Every run so far.
    pub(crate) runs: Vec<SimRun>,
    current_jobs: u64,
}

impl Traffic {
    /// Starts the first run, sized to end its submissions at `until`.
    pub(crate) fn start(rig: &Rig, lcw: &Path, rate: f64, seed: u64, until: Instant) -> anyhow::Result<Traffic> {
        let log = rig.dir.join("logs/simulate.log");
        let mut proc = Proc::new("simulate", lcw, Vec::new(), Vec::new(), log);
        proc.stdout = Some(rig.dir.join("logs/simulate.json"));
        let mut t = Traffic {
            proc,
            rate,
            seed,
            profile: rig.sim_profile.to_string_lossy().into_owned(),
            runs: Vec::new(),
            current_jobs: 0,
        };
        t.launch(until)?;
        Ok(t)
    }

    fn launch(&mut self, until: Instant) -> anyhow::Result<()> {
        let secs = until.saturating_duration_since(Instant::now()).as_secs_f64();
        let jobs = ((secs * self.rate).ceil() as u64).max(4);
        let seed = (self.seed.wrapping_add(self.runs.len() as u64)).to_string();
        let args = [
            "simulate",
            "--network",
            &self.profile,
            "--jobs",
            &jobs.to_string(),
            "--rate",
            &self.rate.to_string(),
            "--workers",
            "0",
            "--auto-complete",
            "--timeout-share",
            TIMEOUT_SHARE,
            "--dispute-share",
            DISPUTE_SHARE,
            "--settle-share",
            SETTLE_SHARE,
            "--seed",
            &seed,
            "--json",
        ];
        self.proc.set_args(args.map(str::to_owned).to_vec());
        self.proc.spawn()?;
        self.current_jobs = jobs;
        say!("traffic: lcw simulate run #{} with {jobs} jobs at {} jobs/s", self.runs.len() + 1, self.rate);
        Ok(())
    }

    /// Notices a finished run; starts another while more than 20 s of traffic are left.
    pub(crate) fn tick(&mut self, until: Instant) -> anyhow::Result<()> {
        let Some(status) = self.proc.finished() else { return Ok(()) };
        self.record(if status.success() { "ok".into() } else { status.to_string() });
        if until.saturating_duration_since(Instant::now()) > Duration::from_secs(20) {
            self.launch(until)?;
        }
        Ok(())
    }

    fn record(&mut self, exit: String) {
        let out = self.proc.stdout.clone().unwrap_or_default();
        let report = std::fs::read_to_string(&out).ok().and_then(|s| serde_json::from_str(s.trim()).ok());
        // A run stopped before its report: its last progress line says how far it got.
        let report = report.or_else(|| {
            let last = tail(&self.proc.log, 40).lines().rev().find(|l| l.starts_with("block ")).map(str::to_owned)?;
            Some(serde_json::json!({ "last_progress": last }))
        });
        if exit != "ok" {
            say!(
                "traffic: run #{} ended early ({exit}); the simulator's log ends with:\n{}",
                self.runs.len() + 1,
                tail(&self.proc.log, 4)
            );
        }
        self.runs.push(SimRun { jobs: self.current_jobs, exit, report });
    }

    /// Waits for the last run to finish its jobs, up to `deadline`; ends it after that.
    pub(crate) async fn finish(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            if let Some(status) = self.proc.finished() {
                self.record(if status.success() { "ok".into() } else { status.to_string() });
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if self.proc.pid().is_some() {
            self.proc.kill9();
            self.record("stopped".into());
        }
    }
}
