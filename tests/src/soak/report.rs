//! The soak's figures and verdict: every invariant with whether it held and, when not, why.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::{Jobs, Releases, StoreCheck, WorkerJobs, restart_figures, slow_restarts};
use super::faults::{Record, Restart};
use super::money::{Fees, Nonces, OutboxSize, Reverted};
use super::traffic::SimRun;

/// One invariant.
#[derive(Debug, Serialize)]
pub(crate) struct Invariant {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// Everything the soak prints.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub(crate) seed: u64,
    pub(crate) minutes: f64,
    pub(crate) rate: f64,
    pub(crate) wall_secs: f64,
    pub(crate) setup_secs: f64,
    pub(crate) drain_secs: f64,
    pub(crate) check_secs: f64,
    pub(crate) blocks: (u64, u64),
    pub(crate) faults: Vec<Record>,
    pub(crate) faults_by_kind: BTreeMap<&'static str, u64>,
    /// Kills by the soak, and exits nobody asked for, per process.
    pub(crate) kills: BTreeMap<&'static str, u64>,
    pub(crate) crashes: Vec<String>,
    /// Restarts after the soak's kills, with how long each took to be back at work.
    pub(crate) restarts: Vec<Restart>,
    /// Exit statuses at the final SIGTERM.
    pub(crate) stops: Vec<String>,
    pub(crate) jobs: Jobs,
    pub(crate) lcw_worker: WorkerJobs,
    pub(crate) reverted: Vec<Reverted>,
    pub(crate) lcw_txs_mined: u64,
    pub(crate) fees: Fees,
    pub(crate) nonces: Vec<Nonces>,
    pub(crate) outbox: Vec<OutboxSize>,
    pub(crate) releases: Releases,
    pub(crate) stores: Vec<StoreCheck>,
    pub(crate) traffic: Vec<SimRun>,
    pub(crate) proxy: BTreeMap<&'static str, [u64; 5]>,
    pub(crate) invariants: Vec<Invariant>,
}

impl Report {
    /// Evaluates the invariants from the figures.
    pub(crate) fn judge(&mut self) {
        let mut inv = Vec::new();
        let mut add = |name, ok, detail: String| inv.push(Invariant { name, ok, detail });
        let w = &self.lcw_worker;
        add(
            "lcw's worker served jobs",
            w.completed > 0,
            format!("{} of {} assigned jobs completed", w.completed, w.assigned),
        );
        add(
            "timeouts that were lcw's fault",
            w.lcw_fault_timeouts.is_empty(),
            format!("{} of lcw's {} timeouts", w.lcw_fault_timeouts.len(), w.timed_out),
        );
        let raced = self.reverted.iter().filter(|r| r.lost_race).count();
        add(
            "reverted transactions of lcw's keys (but races lost after lcw's last send or to a reorg)",
            raced == self.reverted.len(),
            format!(
                "{} of {} mined, {raced} of them lost a race after lcw's last accepted send or to a reorg",
                self.reverted.len(),
                self.lcw_txs_mined
            ),
        );
        let f = &self.fees;
        add(
            "fees within the ceiling",
            f.signed_over_ceiling == 0 && f.mined_over_ceiling == 0,
            format!(
                "{} signed and {} mined versions above {:.0} gwei; highest signed {:.3} gwei",
                f.signed_over_ceiling, f.mined_over_ceiling, f.ceiling_gwei, f.max_signed_gwei
            ),
        );
        let gaps: usize = self.nonces.iter().map(|n| n.problems.len()).sum();
        add("nonce gaps and stuck transactions", gaps == 0, format!("{gaps} problem(s)"));
        add(
            "every job released at most once",
            self.releases.more_than_once.is_empty(),
            format!("{} job(s) with more than one JobReleased", self.releases.more_than_once.len()),
        );
        let unequal: Vec<&str> = self
            .stores
            .iter()
            .filter(|s| !(s.equal_to_fresh_index && s.replay_equal && s.verify_ok))
            .map(|s| s.store.as_str())
            .collect();
        add(
            "stores equal a fresh index, their replay and the chain",
            unequal.is_empty(),
            format!("differing: {unequal:?}"),
        );
        add(
            "lcw processes: no exit but the soak's, clean stops",
            self.crashes.is_empty() && self.stops.iter().all(|s| s.ends_with("exit status: 0")),
            format!("{} unexpected exit(s); stops: {}", self.crashes.len(), self.stops.join(", ")),
        );
        let slow = slow_restarts(&self.restarts).len();
        add(
            "restarts after a kill back at work in time",
            slow == 0,
            format!("{slow} of {} too slow: {}", self.restarts.len(), restart_figures(&self.restarts)),
        );
        self.invariants = inv;
    }

    /// Whether every invariant held.
    pub(crate) fn passed(&self) -> bool {
        self.invariants.iter().all(|i| i.ok)
    }

    /// The report as text on stdout.
    pub(crate) fn print(&self) {
        let j = &self.jobs;
        let w = &self.lcw_worker;
        println!(
            "soak: seed {} ({:.1} min of traffic at {} jobs/s), blocks {}..{}, {:.0} s wall ({:.0} s setup, {:.0} s drain, {:.0} s checks)",
            self.seed,
            self.minutes,
            self.rate,
            self.blocks.0,
            self.blocks.1,
            self.wall_secs,
            self.setup_secs,
            self.drain_secs,
            self.check_secs
        );
        let kinds: Vec<String> = self.faults_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("faults: {} injected ({})", self.faults.len(), kinds.join(", "));
        println!(
            "jobs: {} submitted, {} served, {} released, {} timed out, {} settled without fault, {} disputed ({} guilty), {} open at the end",
            j.submitted, j.served, j.released, j.timed_out, j.settled_no_fault, j.disputed, j.guilty, j.open
        );
        let refusals: Vec<String> = w.refusals.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!(
            "lcw's worker: {} assigned, {} acked, {} completed, {} released, {} timed out ({} lcw's fault), {} settled without fault; refusals: {}",
            w.assigned,
            w.acked,
            w.completed,
            w.released,
            w.timed_out,
            w.lcw_fault_timeouts.len(),
            w.settled_no_fault,
            if refusals.is_empty() { "none".into() } else { refusals.join(", ") }
        );
        for t in &w.lcw_fault_timeouts {
            println!("  lcw's fault: {t}");
        }
        for t in &w.outage_timeouts {
            println!("  not lcw's fault (outage): {t}");
        }
        println!("transactions of lcw's keys: {} mined, {} reverted", self.lcw_txs_mined, self.reverted.len());
        for r in &self.reverted {
            let raced = if r.lost_race { " [lost race]" } else { "" };
            println!("  reverted ({}) {} in block {}{raced}: {}", r.key, r.tx, r.block, r.explanation);
            println!("    {}: {}", if r.lost_race { "lost race" } else { "lcw's fault" }, r.judgement);
        }
        let f = &self.fees;
        println!(
            "fees: most paid {:.3} gwei ({:.2}x the market at most: {}); ceiling {:.0} gwei: highest signed {:.3} gwei, {} signed / {} mined above it; highest blob fee signed {:.3} gwei",
            f.max_paid_gwei,
            f.max_over_market,
            f.worst,
            f.ceiling_gwei,
            f.max_signed_gwei,
            f.signed_over_ceiling,
            f.mined_over_ceiling,
            f.max_blob_fee_gwei
        );
        for n in &self.nonces {
            println!(
                "nonces of the {}: chain {}, pending {}, {} known to the outbox, {} foreign, {} problem(s)",
                n.key,
                n.chain_nonce,
                n.pending_nonce,
                n.known,
                n.foreign,
                n.problems.len()
            );
            for p in &n.problems {
                println!("  {p}");
            }
        }
        for o in &self.outbox {
            println!(
                "outbox of the {}: {} rows, {} signed versions, {} bytes of raw transactions; {} jobs acted on: {:.2} rows and {:.0} bytes per job",
                o.store, o.rows, o.signed_versions, o.raw_bytes, o.jobs_acted_on, o.rows_per_job, o.bytes_per_job
            );
        }
        let r = &self.releases;
        println!(
            "releases: {} jobs, {} released more than once; lag p50 {} / p99 {} / max {} blocks after the first block at releasableAt",
            r.released,
            r.more_than_once.len(),
            r.lag_blocks.p50,
            r.lag_blocks.p99,
            r.lag_blocks.max
        );
        for x in r.more_than_once.iter().chain(&r.worst) {
            println!("  {x}");
        }
        for s in &self.stores {
            println!(
                "store of the {}: equal to a fresh index {}, replay equal {}, verify ok {}",
                s.store, s.equal_to_fresh_index, s.replay_equal, s.verify_ok
            );
            for d in &s.detail {
                println!("  {d}");
            }
        }
        for (name, [requests, faults, refused, evicted, held]) in &self.proxy {
            println!(
                "rpc proxy of the {name}: {requests} requests, {faults} faults ({refused} transactions refused, {evicted} evicted, {held} held)"
            );
        }
        println!(
            "processes: kills {:?}, {} exit(s) nobody asked for, stops: {}",
            self.kills,
            self.crashes.len(),
            self.stops.join(", ")
        );
        println!("restarts after a kill, until back at work: {}", restart_figures(&self.restarts));
        // Exits grouped by process and cause, with the blocks they happened at.
        let mut by_cause: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &self.crashes {
            let (at, cause) = c.split_once(": ").unwrap_or((c.as_str(), ""));
            let (who, block) = at.split_once(" at block ").unwrap_or((at, "?"));
            by_cause.entry(format!("{who}: {cause}")).or_default().push(block.to_owned());
        }
        for (cause, blocks) in by_cause {
            println!("  {}x {cause} (blocks {})", blocks.len(), blocks.join(", "));
        }
        for (i, run) in self.traffic.iter().enumerate() {
            let r = run.report.as_ref();
            let get = |k: &str| r.and_then(|r| r.get(k)).and_then(|v| v.as_u64()).unwrap_or_default();
            match r.and_then(|r| r.get("last_progress")).and_then(|v| v.as_str()) {
                Some(last) => {
                    println!("simulate run #{}: {} jobs asked, exit {}, last seen at {last}", i + 1, run.jobs, run.exit)
                }
                None => println!(
                    "simulate run #{}: {} jobs asked, exit {}, {} submitted, {} transactions ({} reverted, {} refused)",
                    i + 1,
                    run.jobs,
                    run.exit,
                    get("submitted"),
                    get("transactions"),
                    get("reverted"),
                    get("refused")
                ),
            }
        }
        println!("invariants:");
        for i in &self.invariants {
            println!("  {} {:<58} {}", if i.ok { "ok  " } else { "FAIL" }, i.name, i.detail);
        }
        println!("{}", if self.passed() { "soak passed" } else { "soak FAILED" });
    }
}
