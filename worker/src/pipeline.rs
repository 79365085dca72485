//! The pipeline, driven by the store.
//!
//! On every indexer commit (or store poll) the worker reads its assignments from the store
//! (`obligations::assignments`): jobs submitted to it and not yet completed, with the session's
//! wrapped key. What to do with each is decided by [`crate::plan`], a pure function; this module
//! carries the decisions out:
//!
//! 1. **open**: the prompt blob is fetched and decrypted *before* the ack, so a prompt that
//!    cannot be opened (a missing blob, a prompt sealed for another key, a broken payload) is
//!    refused without an ack and no slash can follow; only an ack deadline too close to open
//!    first makes the worker ack at once, and it says so;
//! 2. **ack** through the outbox (the chain layer's sender: intent before signing, raw
//!    transaction before broadcast, one live transaction per job), once the model is served
//!    here, the session key unwraps, the job can finish before its completion deadline given
//!    the queue in front of it, and the balance covers this ack and its completion on top of
//!    every completion already owed;
//! 3. **work**, started as soon as the ack is sent (not mined): the model runs on the opened
//!    prompt and the answer is sealed and packed into a blob sidecar (cut to fit one blob at a
//!    character boundary in the rare case it would not); at most `concurrency` jobs at once;
//! 4. **complete** once the ack is mined: one type-3 transaction carries the response blob and
//!    calls `completeJob(jobId, versionedHash, keccak256(ciphertext))`.
//!
//! Every budget is chain time: a deadline minus the head's timestamp and the time since the
//! head was seen; the blob fetch and the model are both bounded by it. Fees are bounded by the
//! operator's ceiling, lowered for each job to what its ack and completion protect (the
//! completion-timeout slash plus the worker's share of the fee). An ack or completion that
//! leaves the outbox unmined (its nonce taken, a reorg) is sent again while its deadline allows,
//! from the kept answer. Every refused job is logged with its reason and recorded in the store
//! (`worker_refusals`, shown by `lcw status`).
//!
//! A restart loses nothing and repeats nothing on chain: the store says which jobs are acked and
//! completed, the outbox which transactions are in flight (re-broadcast by `reconcile`), and
//! work whose result was not yet sent is done again (the model is deterministic: temperature 0,
//! fixed seed). A drained worker still finishes every job assigned to it. A deregistered one
//! (`WorkerDeregistered` in the store) acks and claims nothing new, finishes the jobs it acked,
//! waits for its completed jobs to be released, and then returns ([`Ended::Deregistered`]).
//!
//! With sortition on (AIConfig), jobs come only with sessions the worker has claimed: on every
//! new head the [`crate::claimer::Claimer`] goes through the open session requests in the store
//! and sends `claimSession` through the same outbox at the first block the worker is eligible
//! (a drained worker claims nothing new). The dispatcher path needs no claim.
//!
//! With a worker-gateway (the profile's `gateway_url`), the worker signs in, sends heartbeats
//! (jobs in progress, slots, models, capabilities, LLM status, uptime), mirrors the drained flag
//! and publishes each answer's signed terminal frame ([`crate::gateway`]); the gateway being down
//! never holds up the on-chain path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::eips::eip4844::DATA_GAS_PER_BLOB;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use lcw_chain::outbox::{BlobPart, Intent, Lane, Outbox, REORG_WINDOW, Tracked};
use lcw_chain::{Chain, ChainError, FeeCap, Fees, Head};
use lcw_schema::bindings::{AIConfig, JobRegistry};
use lcw_schema::profile::Profile;
use lcw_schema::rules::schedule::ChainClock;
use lcw_schema::store::obligations::{self, Assignment};
use lcw_schema::store::{Identity, Store, refusals};
use lcw_schema::suite::{EncryptionSecret, SessionKey};
use lcw_schema::types::{JobState, ModelId};
use tokio::sync::{mpsc, watch};

use crate::blobs::BlobSource;
use crate::claim::ClaimConfig;
use crate::claimer::{ClaimStats, Claimer};
use crate::gateway::{Gateway, GatewayConfig};
use crate::job::{self, Failure, Prompt};
pub use crate::job::{Answer, answer};
use crate::link::Link;
use crate::llm::{Api, Llm};
use crate::plan::{self, Action, JobView, Local};

/// Gas limit of `acknowledgeJob` (about 35k on the devnet; headroom for storage-cold paths).
pub const ACK_GAS: u64 = 120_000;
/// Gas limit of `completeJob` carried by a type-3 transaction.
pub const COMPLETE_GAS: u64 = 200_000;

/// What the worker needs.
#[derive(Debug, Clone)]
pub struct WorkConfig {
    /// Network profile (RPC, contracts, beacon).
    pub profile: Profile,
    /// The store (indexed by a live indexer: `lcw run`, or `lcw index` beside `lcw work`).
    pub db: PathBuf,
    /// The worker's signing key.
    pub signer: PrivateKeySigner,
    /// The worker's encryption secret (its public key is the registered one).
    pub secret: Arc<EncryptionSecret>,
    /// The LLM server.
    pub llm: Llm,
    /// `--models`: the names the operator means to serve (their bytes32 ids are keccak256 of the
    /// names). What is served comes from the chain (the models added to this worker) and the LLM
    /// server ([`crate::models`]); these name models and are checked against both.
    pub models: Vec<String>,
    /// Where prompt blobs come from.
    pub blobs: BlobSource,
    /// Jobs worked on at once (the LLM server's parallel slots).
    pub concurrency: usize,
    /// Expected seconds for one job's work before any has been measured (deadline guard).
    pub expected_job_secs: f64,
    /// Seconds kept free before a completion deadline for the completing transaction.
    pub deadline_margin: u64,
    /// Store poll interval when no commit channel is given.
    pub poll_interval: Duration,
    /// RPC timeout.
    pub rpc_timeout: Duration,
    /// Minimum priority fee.
    pub min_tip: u128,
    /// The operator's fee ceiling per gas and per blob gas.
    pub fee_cap: FeeCap,
    /// Stop after this many completions (benchmarks, tests); None runs until shutdown.
    pub stop_after: Option<u64>,
    /// Sortition claims.
    pub claims: ClaimConfig,
    /// The SessionManager the operator expects (upstream SESSION_MANAGER_ADDRESS): checked against
    /// AIConfig's at start, never used instead of it.
    pub session_manager: Option<alloy::primitives::Address>,
    /// The worker-gateway link, when the network has one.
    pub gateway: Option<GatewayConfig>,
    /// What the run counts, for the process's `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The models served now, kept by the running worker (clone it before [`run`] to follow it).
    pub live_models: crate::models::LiveModels,
    /// What the `lcw` commands of the fixes the worker prints add for this network (` --network
    /// testnet`; empty on the devnet).
    pub network_flag: String,
    /// The memory the served models must fit in together (`--memory-limit`); None: the
    /// machine's, when the LLM server runs on it ([`crate::fit::assess`]).
    pub memory_limit: Option<u64>,
}

impl WorkConfig {
    /// Defaults for everything but the parts that must be given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        profile: Profile,
        db: PathBuf,
        signer: PrivateKeySigner,
        secret: Arc<EncryptionSecret>,
        llm: Llm,
        models: Vec<String>,
        blobs: BlobSource,
    ) -> WorkConfig {
        WorkConfig {
            profile,
            db,
            signer,
            secret,
            llm,
            models,
            blobs,
            concurrency: 1,
            expected_job_secs: 10.0,
            deadline_margin: 5,
            poll_interval: Duration::from_millis(50),
            rpc_timeout: Duration::from_secs(10),
            min_tip: 1_000_000_000,
            fee_cap: FeeCap::default(),
            stop_after: None,
            claims: ClaimConfig::default(),
            session_manager: None,
            gateway: None,
            metrics: Arc::default(),
            live_models: crate::models::LiveModels::default(),
            network_flag: String::new(),
            memory_limit: None,
        }
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad configuration, or what the chain or the LLM server said about it (URLs redacted when
    /// shown: a transport's error quotes the node's URL, API key included).
    #[error("{}", lcw_schema::profile::redact_urls(.0))]
    Config(String),
    /// The node did not answer a read the worker needs to start (a restart during an outage);
    /// the worker waits and tries again.
    #[error("{}", lcw_schema::profile::redact_urls(.0))]
    Unavailable(String),
    /// The transaction sender failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] lcw_schema::store::StoreError),
}

impl WorkerError {
    /// [`WorkerError::Config`] with `text`'s URLs redacted (`format_args!("getJob: {e}")`).
    pub fn config(text: impl std::fmt::Display) -> Self {
        WorkerError::Config(lcw_schema::profile::redact_urls(&text.to_string()))
    }
}

impl lcw_chain::Transient for WorkerError {
    fn is_transient(&self) -> bool {
        match self {
            WorkerError::Unavailable(_) => true,
            WorkerError::Chain(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A failed contract read: the node's failure may pass (`Unavailable`); a revert or a wrong
/// answer is what the chain says (`Config`).
pub(crate) fn read_failed(what: impl std::fmt::Display, err: alloy::contract::Error) -> WorkerError {
    let text = lcw_schema::profile::redact_urls(&format!("{what}: {err}"));
    match err {
        alloy::contract::Error::TransportError(t) if t.as_error_resp().is_none() => WorkerError::Unavailable(text),
        _ => WorkerError::Config(text),
    }
}

/// Times of one job, for the turnaround benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobTiming {
    /// Job id.
    pub job_id: u64,
    /// Block of `JobSubmitted`.
    pub submitted_block: u64,
    /// Block the ack was mined in.
    pub ack_block: Option<u64>,
    /// Block the completion was mined in.
    pub complete_block: Option<u64>,
    /// Blob fetch.
    pub fetch: Duration,
    /// Session-key unwrap and prompt decryption.
    pub decrypt: Duration,
    /// Model inference.
    pub inference: Duration,
    /// Response encryption and blob sidecar (KZG commitment and proof).
    pub encrypt: Duration,
    /// From the result being ready to the completing transaction being sent (waiting for the
    /// ack to be mined).
    pub post: Duration,
    /// The head when the completing transaction was sent.
    pub complete_sent_block: Option<u64>,
    /// Tokens generated.
    pub completion_tokens: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct WorkSummary {
    /// Acks mined.
    pub acked: u64,
    /// Completions mined.
    pub completed: u64,
    /// Jobs refused (prompt, deadline, model, key, funds, ...), with the first reason.
    pub refused: BTreeMap<u64, String>,
    /// Jobs acked before their prompt was opened (an ack deadline too close), with why.
    pub acked_unopened: BTreeMap<u64, String>,
    /// Jobs whose work failed (blob, LLM) and that were not completed, with the last reason.
    pub failed: BTreeMap<u64, String>,
    /// Every distinct reason a job's work failed and was retried (completed jobs included).
    pub retried: BTreeMap<u64, Vec<String>>,
    /// Worker transactions that reverted.
    pub reverted: u64,
    /// Per-job times of completed jobs.
    pub timings: Vec<JobTiming>,
    /// Sortition claims of the run.
    pub claims: ClaimStats,
    /// Why the run ended.
    pub ended: Ended,
}

mod executor;
mod health;
mod models;
mod registration;
mod rules;
mod send;
mod steps;

pub use registration::Ended;

use executor::Worker;
use health::LlmHealth;
use models::{Models, Tick, Verdict};
use rules::{ChainRules, check_encryption_key};
use steps::{Held, KeyCache, Outcome, Served};

/// Runs the worker until `shutdown` (or `stop_after` completions).
pub async fn run(config: WorkConfig, mut shutdown: watch::Receiver<bool>) -> Result<WorkSummary, WorkerError> {
    // The node may be down when the worker starts (a restart during an outage): it waits; the
    // LLM server's health is watched while it runs (see `executor::LlmHealth`).
    let started = lcw_chain::patiently("starting the worker", &shutdown, || Worker::start(config.clone(), &shutdown));
    let Some(mut w) = started.await? else {
        return Ok(WorkSummary::default());
    };
    loop {
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            break;
        }
        if w.config.stop_after.is_some_and(|n| w.summary.completed >= n) {
            w.summary.ended = Ended::StopAfter;
            break;
        }
        w.collect();
        let began = Instant::now();
        let head = match w.chain.head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading the head failed; retrying");
                wait(&mut shutdown, Duration::from_millis(500)).await;
                continue;
            }
        };
        let read = began.elapsed();
        let mut sent_any = false;
        if w.observe(head) {
            // The jobs first, on the fees and receipts of the last head: a new job is acked
            // without waiting for this head's reads, which take seconds on a slow node.
            if w.fees.is_some() {
                sent_any |= w.pass(&head).await?;
            }
            w.on_head(head).await?;
        }
        let tracked = began.elapsed();
        if w.fees.is_none() {
            wait(&mut shutdown, w.config.poll_interval).await;
            continue;
        }
        sent_any |= w.pass(&head).await?;
        sent_any |= w.claims(&head).await;
        if let Some(block) = w.owes_nothing(&head)? {
            w.summary.ended = Ended::Deregistered { block };
            tracing::warn!(block, "{}; stopping", w.summary.ended);
            break;
        }
        if began.elapsed() >= SLOW_PASS {
            tracing::warn!(
                head_s = read.as_secs_f64(),
                fees_and_receipts_s = (tracked - read).as_secs_f64(),
                jobs_s = (began.elapsed() - tracked).as_secs_f64(),
                "a pass over the jobs took {:.1} s: the node answers slowly, and new jobs wait for it",
                began.elapsed().as_secs_f64()
            );
        }
        if !sent_any {
            wait(&mut shutdown, w.config.poll_interval).await;
        }
    }
    Ok(w.finish())
}

/// How long a new head's fee and balance reads may take before the last values are kept.
const HEAD_READ_BUDGET: Duration = Duration::from_secs(3);

/// How long the outbox's tracking of a head may go on starting new steps.
const TRACK_BUDGET: Duration = Duration::from_secs(3);

/// A pass slower than this is reported: new jobs wait that long to be seen.
const SLOW_PASS: Duration = Duration::from_secs(5);

async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}
