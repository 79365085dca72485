//! `lcw simulate`: devnet traffic. The simulator plays the consumer (sessions, prompt blobs, jobs,
//! disputes), the dispatcher (signs session assignments), the disputer (rules on disputes), the
//! keeper (claims timeouts, settles stuck jobs) and, with `--auto-complete`, simple workers that
//! acknowledge and complete without an LLM, for volume.
//!
//! Sessions open one of two ways, as AIConfig says. Without sortition the dispatcher signs each
//! `createSession`. With sortition (`getSortitionEnabled`) the consumer calls
//! `SessionManager.requestSession`, eligible workers race to `claimSession` as the claim window
//! widens to them (the simulated workers exactly when their turn comes, see [`sortition`]), the
//! consumer provides the session key wrapped for the winner, and `SessionReady` adds the session
//! to those jobs go to.
//!
//! It is event-driven: each new block's JobRegistry (and SessionManager) logs update a table of
//! the run's jobs ([`world`]) and requests ([`sortition`]); from those tables and the head it
//! decides every role's next actions, signs them with locally owned nonces and sends them in one
//! JSON-RPC batch ([`crate::txs`]). Outcomes are planned per job by [`plan`], deterministically
//! from the seed.

mod actions;
pub mod dispatcher;
pub mod plan;
mod requests;
mod run;
mod setup;
mod sortition;
mod submit;
mod world;

use std::collections::BTreeMap;

use alloy::primitives::Address;
use lcw_schema::suite::Suite;
use lcw_schema::types::Lcai;
use serde::Serialize;

pub use run::run;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Jobs to submit.
    pub jobs: u64,
    /// Jobs per second (None: as fast as the chain takes them).
    pub rate: Option<f64>,
    /// Workers to register and use; 0 uses the workers already registered for the model.
    pub workers: usize,
    /// Simulated workers acknowledge and complete (no LLM), for volume.
    pub auto_complete: bool,
    /// Release completed jobs once their dispute window has passed (workers release their own,
    /// the keeper the others).
    pub auto_release: bool,
    /// With `auto_release`, the keeper releases every job (JobReleased and KeeperBountyPaid).
    pub keeper_releases: bool,
    /// Percentages of special outcomes.
    pub shares: plan::Shares,
    /// Encryption suite of the simulated workers' keys.
    pub suite: Suite,
    /// Model name.
    pub model: String,
    /// Stake per registered worker (None: the on-chain minimum).
    pub stake: Option<Lcai>,
    /// Prompts to send (cycled); empty: built-in representative prompts.
    pub prompts: Vec<String>,
    /// Seed of the outcome plan.
    pub seed: u64,
    /// At most this many submissions per block.
    pub max_per_block: usize,
    /// Ordinary sessions to open (None: one per worker).
    pub sessions: Option<usize>,
    /// With sortition, seconds a session request stays open; one not ready by then is counted as
    /// expired and made again.
    pub request_ttl: u64,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            jobs: 10,
            rate: None,
            workers: 1,
            auto_complete: false,
            auto_release: false,
            keeper_releases: false,
            shares: plan::Shares::default(),
            suite: Suite::P256AesGcm,
            model: crate::deploy::DEFAULT_MODEL.into(),
            stake: None,
            prompts: Vec::new(),
            seed: 42,
            max_per_block: 2000,
            sessions: None,
            request_ttl: 120,
        }
    }
}

/// Built-in prompts (short and varied; the real model is tiny).
pub const DEFAULT_PROMPTS: [&str; 8] = [
    "Name three colours.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Translate 'good morning' into Spanish.",
    "List the first five prime numbers.",
    "Give a synonym for 'happy'.",
    "What does a blockchain store?",
];

/// What happened, printed by `lcw simulate` (JSON with `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimulateReport {
    /// Jobs requested.
    pub jobs: u64,
    /// JobSubmitted seen for this run.
    pub submitted: u64,
    /// JobAcknowledged seen.
    pub acknowledged: u64,
    /// JobCompleted seen.
    pub completed: u64,
    /// JobReleased seen.
    pub released: u64,
    /// JobTimedOut seen.
    pub timed_out: u64,
    /// JobSettledNoFault seen.
    pub settled: u64,
    /// DisputeCreated seen.
    pub disputed: u64,
    /// DisputeResolved with workerGuilty.
    pub disputes_guilty: u64,
    /// DisputeResolved not guilty.
    pub disputes_not_guilty: u64,
    /// DisputeDefaulted seen.
    pub disputes_defaulted: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions were opened by sortition (SessionManager requests), not by the dispatcher.
    pub sortition: bool,
    /// Session requests made (re-requests after an expiry included).
    pub sessions_requested: u64,
    /// SessionClaimed seen for this run's requests.
    pub sessions_claimed: u64,
    /// SessionReady seen for this run's requests.
    pub sessions_ready: u64,
    /// Requests not ready by their expiry.
    pub requests_expired: u64,
    /// Claims sent by the simulated workers.
    pub claims_sent: u64,
    /// Claims of simulated workers that lost the race (AlreadyClaimed); not in `reverted`.
    pub claims_lost: u64,
    /// Winner of each claimed request: worker → requests won.
    pub claims_won_by: BTreeMap<Address, u64>,
    /// Blocks from each request to its claim.
    pub claim_latency_blocks: BlockStats,
    /// For simulated winners: blocks from their first eligible block to the claim (0: the claim
    /// landed in the first block it could succeed in).
    pub claim_lag_blocks: BlockStats,
    /// Workers the traffic went to.
    pub workers: Vec<Address>,
    /// Transactions sent.
    pub transactions: u64,
    /// Transactions mined with status 0.
    pub reverted: u64,
    /// Transactions the node refused (not broadcast).
    pub refused: u64,
    /// Submissions that reverted (e.g. the worker was suspended mid-run).
    pub failed_submissions: u64,
    /// Blob transactions sent.
    pub blob_transactions: u64,
    /// First block of the run.
    pub first_block: u64,
    /// Last block the run looked at.
    pub last_block: u64,
    /// JobRegistry events observed during the run.
    pub job_registry_events: u64,
    /// Wall time of the whole run.
    pub elapsed_secs: f64,
    /// Wall time from the first submission to the last JobSubmitted.
    pub submit_secs: f64,
    /// Jobs submitted per second over `submit_secs`.
    pub jobs_per_sec: f64,
}

/// A distribution of block counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlockStats {
    /// Samples.
    pub samples: u64,
    /// Median (the lower one for an even count).
    pub p50: u64,
    /// Maximum.
    pub max: u64,
}

impl BlockStats {
    /// The stats of `samples`.
    pub fn of(samples: &[u64]) -> BlockStats {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        match sorted.last() {
            None => BlockStats::default(),
            Some(max) => BlockStats { samples: sorted.len() as u64, p50: sorted[(sorted.len() - 1) / 2], max: *max },
        }
    }
}

/// Progress, reported every couple of seconds.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Counters so far.
    pub report: &'a SimulateReport,
    /// Head block.
    pub head: u64,
}

/// Why the simulation failed.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The profile lacks something the run needs.
    #[error(transparent)]
    Profile(#[from] lcw_schema::profile::ProfileError),
    /// Transport or node errors.
    #[error(transparent)]
    Tx(#[from] crate::txs::TxError),
    /// A contract read failed.
    #[error("reading {what}: {message}")]
    Read {
        /// What was read.
        what: String,
        /// The error.
        message: String,
    },
    /// Setup transactions reverted.
    #[error("{0}")]
    Setup(String),
    /// The run stopped making progress.
    #[error("simulation stalled: {0}")]
    Stalled(String),
    /// Encoding a blob or encrypting failed.
    #[error("{0}")]
    Payload(String),
}
