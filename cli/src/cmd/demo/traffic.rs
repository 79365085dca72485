//! Consumer traffic until the demo stops: `lcw simulate` runs one after the other, each three
//! minutes of jobs at the demo's rate with every outcome among them. Each run requests new
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
/// Submissions per run.
const RUN: Duration = Duration::from_secs(180);
/// How long the last jobs of a run have to reach an outcome before it is ended.
const TAIL: Duration = Duration::from_secs(30);
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
    /// The longest a job's outcome takes once submitted: ack and completion timeouts, dispute
    /// window and resolution timeout.
    pub(super) outcome_within: Duration,
}

impl Plan {
    /// The arguments of run number `n` (from 0): a new seed each run, and four session requests
    /// per worker, ours included, so that each worker wins some of them in most runs.
    pub(super) fn args(&self, n: u64) -> Vec<String> {
        let jobs = ((self.rate * RUN.as_secs_f64()).ceil() as u64).max(10);
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
    /// A run that failed at once is not started again before this.
    next_at: Instant,
    /// Where the current run's output begins in the log.
    log_from: u64,
    /// The current run's last (submitted, planned), and when it last changed.
    progress: Option<((u64, u64), Instant)>,
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
            next_at: Instant::now(),
            log_from: 0,
            progress: None,
        }
    }

    /// Starts the next run when none is running; returns a note when the last one failed or was
    /// ended. A run is ended once its submissions are over and the last ones have had [`TAIL`]
    /// to reach an outcome: the simulator does not follow a reorg back (it reads each block
    /// once), so after one it may wait for jobs it never sees again, and would hold the next
    /// run's traffic back until it gave up.
    pub(super) async fn tick(&mut self) -> anyhow::Result<Option<String>> {
        let mut note = None;
        if let Some(p) = self.current.as_mut() {
            if let Some(now) = last_progress(&self.log, self.log_from)
                && self.progress.is_none_or(|(seen, _)| seen != now)
            {
                self.progress = Some((now, Instant::now()));
            }
            let submitted = self.progress.map(|(p, _)| p);
            let quiet = self.progress.map_or(Duration::ZERO, |(_, at)| at.elapsed());
            let over = over(self.started.elapsed(), submitted, quiet, self.plan.outcome_within);
            match p.exited() {
                None if over => {
                    p.stop(Duration::from_secs(2)).await;
                    if let Some((done, planned)) = submitted.filter(|(d, p)| d < p) {
                        note = Some(format!(
                            "traffic: simulator run {} lost sight of {} of its {planned} jobs in reorgs (it reads \
                             each block once); the next run starts now",
                            self.runs,
                            planned - done
                        ));
                    }
                }
                None => return Ok(None),
                Some(status) if status.success() => {}
                Some(status) => {
                    let last = p.tail(1);
                    let quick = self.started.elapsed() < Duration::from_secs(10);
                    if quick {
                        self.next_at = Instant::now() + Duration::from_secs(10);
                    }
                    note = Some(format!(
                        "traffic: simulator run {} ended early ({status}): {}; the next one starts {}",
                        self.runs,
                        last.trim(),
                        if quick { "in 10 s" } else { "now" }
                    ));
                }
            }
            self.current = None;
        }
        if Instant::now() < self.next_at {
            return Ok(note);
        }
        let log_from = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
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
        self.log_from = log_from;
        self.progress = None;
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

/// Whether a run still going is over: its submissions are over (all made, or none for [`TAIL`]
/// once its time is up) and the last ones have had [`TAIL`]; or it has run far past anything its
/// jobs take.
fn over(run_for: Duration, submitted: Option<(u64, u64)>, quiet_for: Duration, outcome_within: Duration) -> bool {
    if run_for > RUN + outcome_within + TAIL {
        return true;
    }
    submitted.is_some_and(|(done, planned)| (done >= planned || run_for > RUN) && quiet_for > TAIL)
}

/// (submitted, planned) from the last progress line (`block 412: submitted 96/120, ...`) the
/// simulator wrote after byte `from` of its log.
fn last_progress(log: &Path, from: u64) -> Option<(u64, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    text.lines().rev().find_map(submitted)
}

/// (submitted, planned) of one progress line.
fn submitted(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("block ")?.split_once(": submitted ")?.1;
    let (done, rest) = rest.split_once('/')?;
    let planned = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((done.parse().ok()?, planned.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_has_every_outcome_three_minutes_of_jobs_and_a_new_seed() {
        let plan = Plan {
            network: "d/devnet.json".into(),
            rate: 1.5,
            workers: 3,
            model: "gemma3-270m".into(),
            outcome_within: Duration::from_secs(105),
        };
        let a = plan.args(0).join(" ");
        assert!(a.starts_with("simulate --network d/devnet.json --jobs 270 --rate 1.5 --workers 3"), "{a}");
        for part in ["--timeout-share 10", "--dispute-share 15", "--settle-share 5", "--sessions 16", "--seed 42"] {
            assert!(a.contains(part), "{part} in {a}");
        }
        assert!(!a.contains("--auto-release"), "only lcw releases: {a}");
        assert!(plan.args(1).join(" ").contains("--seed 43"));
        let slow = Plan { rate: 0.01, ..plan };
        assert!(slow.args(0).join(" ").contains("--jobs 10 "));
    }

    #[test]
    fn a_run_ends_once_its_submissions_are_over_and_had_their_tail() {
        let within = Duration::from_secs(105);
        let s = Duration::from_secs;
        assert!(!over(s(60), Some((60, 180)), s(0), within), "submitting");
        assert!(!over(s(190), Some((180, 180)), s(10), within), "the last jobs still reach their outcomes");
        assert!(over(s(215), Some((180, 180)), s(31), within), "all made, tail over");
        assert!(over(s(215), Some((173, 180)), s(31), within), "7 reorged away: over all the same");
        assert!(!over(s(120), Some((100, 180)), s(31), within), "a pause before its time is up");
        assert!(over(s(400), None, s(0), within), "no progress at all, far past anything");
    }

    #[test]
    fn progress_lines_are_read_from_the_current_run_on() {
        assert_eq!(
            submitted("block 412: submitted 96/120, completed 53, released 50, timed out 27, disputed 12, txs 425"),
            Some((96, 120))
        );
        assert_eq!(submitted("2026-12-07T07:30:24Z  WARN simulator transaction not mined"), None);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("simulate.log");
        std::fs::write(&log, "block 9: submitted 180/180, completed 1\n").unwrap();
        let from = std::fs::metadata(&log).unwrap().len();
        assert_eq!(last_progress(&log, from), None, "the previous run's lines are not this run's");
        std::fs::write(
            &log,
            "block 9: submitted 180/180, completed 1\nblock 12: submitted 3/180, completed 0\nWARN x\n",
        )
        .unwrap();
        assert_eq!(last_progress(&log, from), Some((3, 180)));
    }
}
