//! The pipeline, driven by the store.
//!
//! On every indexer commit (or store poll) the worker reads its assignments from the store
//! (`obligations::assignments`): jobs submitted to it and not yet completed, with the session's
//! wrapped key. For each:
//!
//! 1. **ack** at once through the outbox (the same sender the settler uses: intent before
//!    signing, raw transaction before broadcast, one live transaction per job), after checking
//!    the session key unwraps, the model is served here and the job can finish before its
//!    completion deadline given the queue in front of it (else it is refused, and says why);
//! 2. **work**, started as soon as the ack is sent (not mined): the prompt blob is fetched,
//!    decrypted, run on the model, and the answer encrypted and packed into a blob sidecar; at
//!    most `concurrency` jobs at once;
//! 3. **complete** once the ack is mined: one type-3 transaction carries the response blob and
//!    calls `completeJob(jobId, versionedHash, keccak256(ciphertext))`, with the blob fee from the
//!    chain.
//!
//! A restart loses nothing and repeats nothing on chain: the store says which jobs are acked and
//! completed, the outbox which transactions are in flight (re-broadcast by `reconcile`), and
//! work whose result was not yet sent is done again (the model is deterministic: temperature 0,
//! fixed seed). A drained worker still finishes every job assigned to it.
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

use alloy::primitives::{B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use lcw_chain::outbox::{BlobPart, Intent, Lane, Outbox, REORG_WINDOW, Tracked};
use lcw_chain::{Chain, Fees, Head};
use lcw_chain::{ChainError, FeeCap};
use lcw_schema::bindings::{AIConfig, JobRegistry};
use lcw_schema::profile::Profile;
use lcw_schema::rules::schedule::ChainClock;
use lcw_schema::store::obligations::{self, Assignment};
use lcw_schema::suite::{EncryptionSecret, SessionKey};
use lcw_schema::types::{JobState, ModelId};
use tokio::sync::{mpsc, watch};

use crate::blobs::{BlobError, BlobSource};
use crate::claim::ClaimConfig;
use crate::claimer::{ClaimStats, Claimer};
use crate::gateway::{Gateway, GatewayConfig, Heartbeat};
use crate::llm::Llm;

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
    /// Model names served (their bytes32 ids are keccak256 of the names).
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
        }
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// The transaction sender failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] lcw_schema::store::StoreError),
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
    /// Jobs refused (deadline, model, key), with the reason.
    pub refused: BTreeMap<u64, String>,
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
}

/// A finished piece of work, waiting for its ack to be mined.
#[derive(Debug)]
struct Ready {
    job_id: u64,
    blob: BlobPart,
    versioned_hash: B256,
    ciphertext_hash: B256,
    timing: JobTiming,
    ready_at: Instant,
}

#[derive(Debug)]
struct Job {
    job_id: u64,
    session_id: u64,
    submitted_block: u64,
    prompt_hash: Option<B256>,
    model: String,
    key: Arc<SessionKey>,
    deadline: u64,
}

/// Runs the worker until `shutdown` (or `stop_after` completions).
pub async fn run(config: WorkConfig, mut shutdown: watch::Receiver<bool>) -> Result<WorkSummary, WorkerError> {
    if config.models.is_empty() {
        return Err(WorkerError::Config("no model to serve: pass --models NAME[,NAME...]".into()));
    }
    let chain = Chain::connect(&config.profile.rpc_url, config.rpc_timeout).await?;
    config.profile.check_chain_id(chain.chain_id).map_err(|e| WorkerError::Config(e.to_string()))?;
    let me = config.signer.address();
    let models: HashMap<B256, String> = config.models.iter().map(|m| (ModelId::from_name(m).0, m.clone())).collect();
    // The model set must be there, and warm, before any job is acked.
    config.llm.check_models(&config.models).await.map_err(|e| WorkerError::Config(e.to_string()))?;
    for m in &config.models {
        config.llm.warm(m).await.map_err(|e| WorkerError::Config(format!("warming {m}: {e}")))?;
    }
    // The KZG trusted setup loads on first use (seconds): paid here, not by the first job.
    let kzg = Instant::now();
    tokio::task::spawn_blocking(|| lcw_schema::blob::sidecar(&[b"lcw".as_slice()]))
        .await
        .map_err(|e| WorkerError::Config(format!("loading the KZG setup: {e}")))?
        .map_err(|e| WorkerError::Config(format!("loading the KZG setup: {e}")))?;
    tracing::debug!(ms = kzg.elapsed().as_millis() as u64, "KZG setup loaded");
    let registered =
        lcw_schema::bindings::WorkerRegistry::new(config.profile.contracts.worker_registry, chain.provider())
            .getWorkerEncryptionKey(me)
            .call()
            .await
            .map_err(|e| WorkerError::Config(format!("getWorkerEncryptionKey: {e}")))?;
    if registered.as_ref() != config.secret.public_key().as_slice() {
        return Err(WorkerError::Config(format!(
            "the encryption key registered for {me} is not the local one: sessions for this worker cannot be \
             decrypted here (run `lcw status`; `lcw keys recover` restores an archived key)"
        )));
    }
    let completion_timeout: u64 = AIConfig::new(config.profile.contracts.ai_config, chain.provider())
        .getCompletionTimeout()
        .call()
        .await
        .map_err(|e| WorkerError::Config(format!("getCompletionTimeout: {e}")))?
        .to();
    let ai = AIConfig::new(config.profile.contracts.ai_config, chain.provider());
    let manager = ai
        .getSessionManagerAddress()
        .call()
        .await
        .map_err(|e| WorkerError::Config(format!("AIConfig.getSessionManagerAddress: {e}")))?;
    if let Some(expected) = config.session_manager
        && expected != manager
    {
        return Err(WorkerError::Config(format!(
            "SESSION_MANAGER_ADDRESS is {expected} but AIConfig {} names {manager} as the SessionManager; lcw reads \
             it from AIConfig: unset the variable (or correct it)",
            config.profile.contracts.ai_config
        )));
    }
    let sortition = ai
        .getSortitionEnabled()
        .call()
        .await
        .map_err(|e| WorkerError::Config(format!("AIConfig.getSortitionEnabled: {e}")))?;
    let conn = lcw_schema::store::Store::connect(&config.db)?;
    let mut outbox = Outbox::open(&config.db, config.signer.clone(), chain.chain_id, Lane::Worker)?;
    let mut claimer = Claimer::new(
        lcw_schema::store::Store::connect(&config.db)?,
        me,
        models.keys().copied().collect(),
        config.claims.clone(),
        config.fee_cap,
    );
    let link = match &config.gateway {
        Some(g) => Some(Link::start(g.clone(), &config, &shutdown)?),
        None => None,
    };
    let mut summary = WorkSummary::default();
    for e in outbox.reconcile(&chain).await? {
        note(&mut summary, &e, &mut HashMap::new(), &mut HashMap::new());
    }
    tracing::info!(
        worker = %me,
        models = ?config.models,
        concurrency = config.concurrency,
        sortition,
        session_manager = %manager,
        claims = if config.claims.enabled == Some(false) { "off" } else { config.claims.rule.as_str() },
        gateway = link.as_ref().map(|l| l.gateway.url().to_owned()),
        "worker started"
    );

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Ready, (u64, String)>>();
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let mut clock = ChainClock::default();
    let mut last_head: Option<Head> = None;
    let mut fees: Option<Fees> = None;
    // Jobs whose work is running, results waiting for their ack, timings by job.
    let mut working: HashSet<u64> = HashSet::new();
    let mut ready: HashMap<u64, Ready> = HashMap::new();
    let mut timings: HashMap<u64, JobTiming> = HashMap::new();
    let mut ack_blocks: HashMap<u64, u64> = HashMap::new();
    let mut keys: KeyCache = HashMap::new();
    let mut told: HashSet<(u64, &'static str)> = HashSet::new();
    let mut job_secs = config.expected_job_secs;
    let mut retry_at: HashMap<u64, (Instant, u32)> = HashMap::new();
    // Claims are planned once per (head, indexed block): a request the indexer stores a moment
    // after the head arrived is planned at once, not a block later.
    let mut claims_planned_at: Option<(u64, u64)> = None;
    // Jobs the consumer was told (through the gateway) that this worker gave up on.
    let mut gave_up: HashSet<u64> = HashSet::new();
    loop {
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            break;
        }
        if config.stop_after.is_some_and(|n| summary.completed >= n) {
            break;
        }
        // Results of finished work.
        while let Ok(r) = done_rx.try_recv() {
            match r {
                Ok(ready_job) => {
                    working.remove(&ready_job.job_id);
                    let secs = (ready_job.timing.fetch
                        + ready_job.timing.decrypt
                        + ready_job.timing.inference
                        + ready_job.timing.encrypt)
                        .as_secs_f64();
                    job_secs = 0.8 * job_secs + 0.2 * secs;
                    ready.insert(ready_job.job_id, ready_job);
                }
                Err((job, why)) => {
                    working.remove(&job);
                    let tries = retry_at.get(&job).map(|(_, n)| n + 1).unwrap_or(0);
                    let backoff = Duration::from_millis(250u64 << tries.min(5));
                    retry_at.insert(job, (Instant::now() + backoff, tries));
                    tracing::warn!(job, reason = %why, "job work failed; retrying while the deadline allows");
                    let reasons = summary.retried.entry(job).or_default();
                    if !reasons.contains(&why) && reasons.len() < 8 {
                        reasons.push(why.clone());
                    }
                    summary.failed.insert(job, why);
                }
            }
        }
        // The chain: new head → receipts, bumps.
        let head = match chain.head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "reading the head failed; retrying");
                wait(&mut shutdown, Duration::from_millis(500)).await;
                continue;
            }
        };
        if last_head.map(|h| (h.number, h.hash)) != Some((head.number, head.hash)) {
            clock.observe(head.number, head.timestamp);
            match chain.fees(config.min_tip).await {
                Ok(f) => fees = Some(f),
                Err(e) => tracing::warn!(error = %e, "eth_feeHistory failed; keeping the last fees"),
            }
            match outbox.track(&chain, &head, fees).await {
                Ok(events) => {
                    for e in events {
                        note(&mut summary, &e, &mut ack_blocks, &mut timings);
                    }
                }
                Err(ChainError::Rpc(m)) => tracing::warn!(error = %m, "tracking transactions failed; retrying"),
                Err(e) => return Err(e.into()),
            }
            last_head = Some(head);
        }
        let Some(fees_now) = fees else {
            wait(&mut shutdown, config.poll_interval).await;
            continue;
        };
        let mut sent_any = false;
        {
            let live = outbox.live_jobs()?;
            // The outbox's own record of recent mined acks and completions wins over the store,
            // which may lag, or show the other side of a reorg the outbox has not noticed yet.
            let recent = head.number.saturating_sub(REORG_WINDOW);
            let acked_unindexed = outbox.mined_since("ack", recent)?;
            let completed_unindexed = outbox.mined_since("complete", recent)?;
            let assignments = obligations::assignments(&conn, me)?;
            let mut queue = working.len() + ready.len();
            for a in &assignments {
                let acked = a.state == JobState::Acknowledged || acked_unindexed.contains(&a.job_id);
                if live.contains(&a.job_id) && !acked {
                    continue; // the ack is in flight
                }
                if completed_unindexed.contains(&a.job_id) || (acked && live.contains(&a.job_id)) {
                    continue; // completed, or its completion is in flight
                }
                // Ready work: complete as soon as the ack is mined.
                if acked && let Some(r) = ready.remove(&a.job_id) {
                    let deadline = a.deadline.unwrap_or(u64::MAX);
                    if clock.next_ts() > deadline {
                        tracing::warn!(job = a.job_id, deadline, "finished after its completion deadline; not sent");
                        summary.refused.insert(a.job_id, "finished after the completion deadline".into());
                        give_up(link.as_ref(), &mut gave_up, a);
                        continue;
                    }
                    let blob_base = chain.provider().get_blob_base_fee().await.unwrap_or(1).max(1);
                    let blob = BlobPart { max_fee_per_blob_gas: blob_base * 2, sidecar: r.blob.sidecar.clone() };
                    let data = JobRegistry::completeJobCall {
                        jobId: U256::from(a.job_id),
                        responseBlobHash: r.versioned_hash,
                        responseCiphertextHash: r.ciphertext_hash,
                    }
                    .abi_encode();
                    let intent = Intent {
                        kind: "complete",
                        to: config.profile.contracts.job_registry,
                        data: Bytes::from(data),
                        value: U256::ZERO,
                        gas_limit: COMPLETE_GAS,
                        jobs: vec![a.job_id],
                        target_block: head.number + 1,
                        blob: Some(blob),
                        cap: config.fee_cap,
                    };
                    let mut timing = r.timing;
                    timing.post = r.ready_at.elapsed();
                    timing.complete_sent_block = Some(head.number);
                    match outbox.submit(&chain, &intent, fees_now, head.number).await {
                        Ok((id, hash)) => {
                            tracing::info!(job = a.job_id, id, tx = %hash, "completion sent with the response blob");
                            timings.insert(a.job_id, timing);
                            sent_any = true;
                        }
                        Err(e) => {
                            tracing::warn!(job = a.job_id, error = %e, "sending the completion failed; will retry");
                            ready.insert(a.job_id, Ready { timing, ..r });
                        }
                    }
                    continue;
                }
                if working.contains(&a.job_id) || ready.contains_key(&a.job_id) {
                    continue;
                }
                if retry_at.get(&a.job_id).is_some_and(|(at, _)| Instant::now() < *at) {
                    continue;
                }
                // The job needs work (and an ack first if it has none).
                let model = match a.model_id.and_then(|m| models.get(&m)) {
                    Some(m) => m.clone(),
                    None => {
                        refuse(&mut summary, &mut told, a.job_id, "model", "its model is not served here");
                        give_up(link.as_ref(), &mut gave_up, a);
                        continue;
                    }
                };
                let key = match session_key(&mut keys, &config.secret, a) {
                    Ok(k) => k,
                    Err(why) => {
                        refuse(&mut summary, &mut told, a.job_id, "key", &why);
                        give_up(link.as_ref(), &mut gave_up, a);
                        continue;
                    }
                };
                let next_ts = clock.next_ts();
                let completion_deadline = if acked {
                    a.deadline.unwrap_or(u64::MAX)
                } else {
                    if a.deadline.is_some_and(|d| next_ts > d) {
                        refuse(&mut summary, &mut told, a.job_id, "ack", "its ack deadline has passed");
                        give_up(link.as_ref(), &mut gave_up, a);
                        continue;
                    }
                    next_ts + completion_timeout
                };
                // Deadline guard: the queue in front of it, its own work, and the completing block.
                let finish = next_ts as f64
                    + (queue as f64 + 1.0) * job_secs / config.concurrency.max(1) as f64
                    + config.deadline_margin as f64;
                if finish > completion_deadline as f64 {
                    let why = format!(
                        "cannot finish before its completion deadline ({completion_deadline}): {queue} job(s) ahead, \
                         about {job_secs:.1} s each"
                    );
                    // Not final: with a shorter queue it may still be served.
                    refuse(&mut summary, &mut told, a.job_id, "deadline", &why);
                    continue;
                }
                if !acked {
                    let intent = Intent {
                        kind: "ack",
                        to: config.profile.contracts.job_registry,
                        data: Bytes::from(JobRegistry::acknowledgeJobCall { jobId: U256::from(a.job_id) }.abi_encode()),
                        value: U256::ZERO,
                        gas_limit: ACK_GAS,
                        jobs: vec![a.job_id],
                        target_block: head.number + 1,
                        blob: None,
                        cap: config.fee_cap,
                    };
                    match outbox.submit(&chain, &intent, fees_now, head.number).await {
                        Ok((id, hash)) => {
                            tracing::info!(job = a.job_id, id, tx = %hash, "ack sent");
                            sent_any = true;
                        }
                        Err(e) => {
                            tracing::warn!(job = a.job_id, error = %e, "sending the ack failed; will retry");
                            continue;
                        }
                    }
                }
                // Work starts now, in parallel with the ack being mined.
                queue += 1;
                working.insert(a.job_id);
                let job = Job {
                    job_id: a.job_id,
                    session_id: a.session_id,
                    submitted_block: a.submitted_block,
                    prompt_hash: None,
                    model,
                    key,
                    deadline: completion_deadline,
                };
                let gateway = link.as_ref().map(|l| l.gateway.clone());
                let ctx = (config.clone(), chain.clone(), permits.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let (config, chain, permits, done) = ctx;
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    let job_id = job.job_id;
                    let r = work(&config, &chain, gateway.as_ref(), job).await.map_err(|e| (job_id, e));
                    let _ = done.send(r);
                });
            }
        }
        // Sortition: once per head, after the jobs owed have been looked after.
        let indexed = obligations::cursor(&conn).unwrap_or_default();
        if claims_planned_at != Some((head.number, indexed)) {
            claims_planned_at = Some((head.number, indexed));
            let busy = working.len() + ready.len() >= config.concurrency.max(1);
            match claimer.tick(&mut outbox, &chain, &head, &clock, fees_now, busy).await {
                Ok(t) => sent_any |= t.sent > 0,
                Err(e) => tracing::warn!(error = %e, "planning claims failed; retrying on the next head"),
            }
            if let Some(link) = &link {
                link.update(&conn, me, working.len() + ready.len());
            }
        }
        if !sent_any {
            wait(&mut shutdown, config.poll_interval).await;
        }
    }
    summary.claims = claimer.stats.clone();
    let mut rest: Vec<JobTiming> = timings.into_values().filter(|t| t.complete_block.is_some()).collect();
    summary.timings.append(&mut rest);
    summary.timings.sort_by_key(|t| t.job_id);
    Ok(summary)
}

/// Accounts for an outbox event.
fn note(
    summary: &mut WorkSummary,
    e: &Tracked,
    ack_blocks: &mut HashMap<u64, u64>,
    timings: &mut HashMap<u64, JobTiming>,
) {
    match e {
        Tracked::Mined { kind, block, jobs, .. } if kind == "ack" => {
            summary.acked += jobs.len() as u64;
            for j in jobs {
                ack_blocks.insert(*j, *block);
            }
        }
        Tracked::Mined { kind, block, jobs, .. } if kind == "complete" => {
            summary.completed += jobs.len() as u64;
            for j in jobs {
                tracing::info!(job = j, block, "completed");
                summary.failed.remove(j);
                // Both maps forget the job once it is completed (a long run keeps neither growing).
                let ack_block = ack_blocks.remove(j);
                if let Some(mut t) = timings.remove(j) {
                    t.complete_block = Some(*block);
                    t.ack_block = ack_block;
                    summary.timings.push(t);
                }
            }
        }
        // A claim that reverts lost the race (or came too late): the claimer records it.
        Tracked::Reverted { id, kind, block, .. } if kind == "claim" => {
            tracing::debug!(id, block, "a claim reverted");
        }
        Tracked::Reverted { id, kind, block, jobs } => {
            summary.reverted += 1;
            tracing::error!(id, kind, block, ?jobs, "a worker transaction reverted");
        }
        _ => {}
    }
}

/// Tells the consumer, through the gateway's response stream, that this worker will not answer
/// `a` (an unsigned error frame, once per job), so it stops waiting for the on-chain timeout.
fn give_up(link: Option<&Link>, told: &mut HashSet<u64>, a: &Assignment) {
    if let Some(link) = link
        && told.insert(a.job_id)
    {
        link.gateway.publish_error(a.job_id, a.session_id);
    }
}

fn refuse(summary: &mut WorkSummary, told: &mut HashSet<(u64, &'static str)>, job: u64, what: &'static str, why: &str) {
    if told.insert((job, what)) {
        tracing::warn!(job, reason = %why, "job refused");
    }
    // The first reason is the one that decided it (a later "ack deadline passed" follows from it).
    summary.refused.entry(job).or_insert_with(|| why.to_owned());
}

/// Session keys by (session, block of its last key update): unwrapped, or why not.
type KeyCache = HashMap<(u64, Option<u64>), Result<Arc<SessionKey>, String>>;

/// The session key of an assignment, unwrapped once per session key version.
fn session_key(cache: &mut KeyCache, secret: &EncryptionSecret, a: &Assignment) -> Result<Arc<SessionKey>, String> {
    cache
        .entry((a.session_id, a.key_updated_block))
        .or_insert_with(|| {
            let wrapped = a.enc_worker_key.as_deref().ok_or("the store has no session key for its session")?;
            secret.unwrap_session_key(wrapped).map(Arc::new).map_err(|e| {
                format!(
                    "the session key of session {} cannot be decrypted with this worker's key ({e}); the consumer \
                     must call updateSessionKey",
                    a.session_id
                )
            })
        })
        .clone()
}

/// One job's work: blob, decrypt, model, encrypt, sidecar.
async fn work(config: &WorkConfig, chain: &Chain, gateway: Option<&Gateway>, mut job: Job) -> Result<Ready, String> {
    let jr = JobRegistry::new(config.profile.contracts.job_registry, chain.provider());
    let prompt_hash = match job.prompt_hash {
        Some(h) => h,
        None => {
            let j = jr.getJob(U256::from(job.job_id)).call().await.map_err(|e| format!("getJob: {e}"))?;
            job.prompt_hash = Some(j.promptBlobHash);
            j.promptBlobHash
        }
    };
    let mut timing = JobTiming { job_id: job.job_id, submitted_block: job.submitted_block, ..JobTiming::default() };
    let t = Instant::now();
    let mut attempt = 0u32;
    let payload = loop {
        match config.blobs.fetch(prompt_hash, job.submitted_block).await {
            Ok(p) => break p,
            Err(e @ BlobError::Decode { .. }) => return Err(e.to_string()),
            Err(e) if attempt >= 3 => return Err(e.to_string()),
            Err(e) => {
                tracing::debug!(job = job.job_id, error = %e, "blob fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                attempt += 1;
            }
        }
    };
    timing.fetch = t.elapsed();
    let now = lcw_schema::store::unix_now();
    let left = job.deadline.saturating_sub(now + config.deadline_margin);
    if left == 0 {
        return Err(format!("no time left before the completion deadline ({})", job.deadline));
    }
    let a = answer(&config.llm, &job.model, &job.key, &payload, Duration::from_secs(left)).await?;
    if let Some(gateway) = gateway {
        // The consumer hears the answer now; the blob settles it on chain right after.
        gateway.publish_complete(job.job_id, job.session_id, 1, &a.ciphertext).await;
    }
    timing.decrypt = a.decrypt;
    timing.inference = a.inference;
    timing.encrypt = a.encrypt;
    timing.completion_tokens = a.generation.completion_tokens;
    Ok(Ready {
        job_id: job.job_id,
        blob: BlobPart { sidecar: a.sidecar, max_fee_per_blob_gas: 0 },
        versioned_hash: a.versioned_hash,
        ciphertext_hash: a.ciphertext_hash,
        timing,
        ready_at: Instant::now(),
    })
}

/// A job's answer, ready to post: what the model said, sealed with the session key and packed
/// into a blob sidecar, with the time each step took.
#[derive(Debug)]
pub struct Answer {
    /// The model's generation (plain text; never logged).
    pub generation: crate::llm::Generation,
    /// The sealed response, as posted in the blob.
    pub ciphertext: Vec<u8>,
    /// The response blob with its KZG commitment and proof.
    pub sidecar: alloy::eips::eip4844::BlobTransactionSidecar,
    /// Its versioned hash (`completeJob`'s responseBlobHash).
    pub versioned_hash: B256,
    /// keccak256 of the ciphertext (`completeJob`'s responseCiphertextHash).
    pub ciphertext_hash: B256,
    /// Prompt decryption.
    pub decrypt: Duration,
    /// Model inference.
    pub inference: Duration,
    /// Response encryption and blob sidecar.
    pub encrypt: Duration,
}

/// The local part of a job, shared by the pipeline and `lcw speedtest`: opens the prompt
/// `payload` with the session key, runs it on `model` (at most `limit`), seals the answer and
/// packs the blob. Errors say which step failed.
pub async fn answer(
    llm: &Llm,
    model: &str,
    key: &SessionKey,
    payload: &[u8],
    limit: Duration,
) -> Result<Answer, String> {
    let t = Instant::now();
    let prompt = key.open(payload).map_err(|e| format!("the prompt does not decrypt with the session key: {e}"))?;
    let prompt = String::from_utf8(prompt).map_err(|_| "the decrypted prompt is not UTF-8 text".to_owned())?;
    let decrypt = t.elapsed();
    let t = Instant::now();
    let generation = tokio::time::timeout(limit, llm.generate(model, &prompt))
        .await
        .map_err(|_| format!("inference did not finish within the {} s left before the deadline", limit.as_secs()))?
        .map_err(|e| e.to_string())?;
    let inference = t.elapsed();
    let t = Instant::now();
    let ciphertext = key.seal(generation.text.as_bytes());
    let sidecar = lcw_schema::blob::sidecar(&[&ciphertext]).map_err(|e| format!("response blob: {e}"))?;
    let versioned_hash = lcw_schema::blob::versioned_hashes(&sidecar)[0];
    let encrypt = t.elapsed();
    let ciphertext_hash = keccak256(&ciphertext);
    Ok(Answer { generation, ciphertext, sidecar, versioned_hash, ciphertext_hash, decrypt, inference, encrypt })
}

/// The worker-gateway link of a running worker: the client, the heartbeat it reports (updated
/// every head), and the drained flag it last told the gateway.
struct Link {
    gateway: Gateway,
    heartbeat: Arc<std::sync::Mutex<Heartbeat>>,
    llm_ready: Arc<std::sync::atomic::AtomicBool>,
    drained: std::sync::Mutex<Option<bool>>,
    started: Instant,
}

impl Link {
    /// Signs in lazily, sends heartbeats in the background and probes the LLM server for them.
    fn start(config: GatewayConfig, work: &WorkConfig, shutdown: &watch::Receiver<bool>) -> Result<Link, WorkerError> {
        let gateway = Gateway::new(config, work.signer.clone())
            .map_err(|e| WorkerError::Config(format!("the worker gateway: {e}")))?;
        let heartbeat = Arc::new(std::sync::Mutex::new(Heartbeat {
            max_jobs: work.concurrency.max(1) as u32,
            models: work.models.iter().map(|m| ModelId::from_name(m).0).collect(),
            llm_ready: true,
            ..Heartbeat::default()
        }));
        let llm_ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (probe, llm, mut stop) = (llm_ready.clone(), work.llm.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let ok = tokio::time::timeout(Duration::from_secs(2), llm.health()).await.is_ok_and(|r| r.is_ok());
                probe.store(ok, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
        let state = heartbeat.clone();
        let ready = llm_ready.clone();
        let started = Instant::now();
        tokio::spawn(crate::gateway::run(
            gateway.clone(),
            move || {
                let mut hb = state.lock().map(|h| h.clone()).unwrap_or_default();
                hb.llm_ready = ready.load(std::sync::atomic::Ordering::Relaxed);
                hb.uptime_secs = started.elapsed().as_secs();
                hb
            },
            shutdown.clone(),
        ));
        Ok(Link { gateway, heartbeat, llm_ready, drained: std::sync::Mutex::new(None), started })
    }

    /// The heartbeat's view of this head; the drained flag mirrored to the gateway when it changed.
    fn update(&self, conn: &rusqlite::Connection, me: alloy::primitives::Address, in_progress: usize) {
        let capabilities = lcw_schema::store::sortition::worker_capabilities(conn, me).ok();
        let names = lcw_schema::store::sortition::capability_names(conn).unwrap_or_default();
        if let Ok(mut hb) = self.heartbeat.lock() {
            hb.active_jobs = in_progress as u32;
            hb.llm_ready = self.llm_ready.load(std::sync::atomic::Ordering::Relaxed);
            hb.uptime_secs = self.started.elapsed().as_secs();
            if let Some(mask) = capabilities {
                hb.capabilities =
                    names.into_iter().filter(|(bit, _)| mask.bit(usize::from(*bit))).map(|(_, n)| n).collect();
            }
        }
        let Ok(drained) = obligations::drained(conn, me) else { return };
        let Ok(mut told) = self.drained.lock() else { return };
        if *told != Some(drained) {
            *told = Some(drained);
            let gateway = self.gateway.clone();
            tokio::spawn(async move {
                let r = if drained { gateway.drain().await } else { gateway.undrain().await };
                match r {
                    Ok(()) => tracing::info!(drained, "the worker gateway was told"),
                    Err(e) => {
                        tracing::warn!(drained, error = %e, "telling the worker gateway failed; the flag holds locally")
                    }
                }
            });
        }
    }
}

async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}
