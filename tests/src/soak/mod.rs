//! The fault soak's parts (`make soak`, `tests/src/bin/soak.rs`).
//!
//! - [`rig`]: the devnet, the real LLM server behind a gate, the fault-injecting RPC proxies, the
//!   keys and registrations, and the lcw processes (`lcw run --keeper`, `lcw run --work`);
//! - [`procs`]: an lcw child process that can be killed with SIGKILL, restarted, and stopped with
//!   SIGTERM, its output appended to a log file;
//! - [`traffic`]: `lcw simulate` for the whole run, restarted when it stops early;
//! - [`faults`]: the seeded fault schedule and the episodes it injects;
//! - [`scan`]: the chain read back block by block (transactions, receipts, fees);
//! - [`check`]: the invariants about jobs and stores, from the chain, the stores and a fresh index;
//! - [`money`]: the invariants about lcw's transactions (reverts, fees, nonces, outbox size);
//! - [`race`]: whether a revert lost a race lcw could not see when it last sent the transaction;
//! - [`report`]: the figures and the verdict, as text or JSON.

pub(crate) mod check;
pub(crate) mod faults;
pub(crate) mod money;
pub(crate) mod procs;
pub(crate) mod race;
pub(crate) mod report;
pub(crate) mod rig;
pub(crate) mod scan;
pub(crate) mod traffic;

use std::sync::OnceLock;
use std::time::Instant;

/// When the soak started (for the time stamp of every progress line).
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the soak's clock.
pub(crate) fn start_clock() {
    let _ = STARTED.set(Instant::now());
}

/// Seconds since the soak started.
pub(crate) fn elapsed() -> f64 {
    STARTED.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or_default()
}

/// A progress line on stderr, stamped with the soak's clock.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("[{:>7.1}s] {}", $crate::soak::elapsed(), format!($($arg)*))
    };
}
pub(crate) use say;

/// One gwei in wei.
pub(crate) const GWEI: u128 = 1_000_000_000;

/// The soak's knobs, from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The fault schedule's seed.
    pub(crate) seed: u64,
    /// The fee ceiling given to lcw's processes (wei per gas).
    pub(crate) max_fee_per_gas: u128,
    /// Where the devnet, stores and logs go.
    pub(crate) dir: std::path::PathBuf,
    /// The lcw binary.
    pub(crate) lcw: std::path::PathBuf,
    /// Tokens generated per job by lcw's worker.
    pub(crate) num_predict: u32,
    /// Longest drain after the traffic stops, in seconds.
    pub(crate) drain_secs: u64,
}
