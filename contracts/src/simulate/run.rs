//! The effectful shell of the simulator: the run's state and the block-driven loop. Setup lives in
//! `setup.rs`, session requests in `requests.rs`, the signing of decided actions in `actions.rs`
//! and new submissions in `submit.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEventInterface;
use lcw_schema::bindings::JobRegistry;
use lcw_schema::profile::{Contracts, Profile};
use lcw_schema::suite::SessionKey;
use lcw_schema::types::JobState;

use super::plan::{self, Outcome};
use super::requests::Sortition;
use super::world::{Params, World, count};
use super::{Progress, SimulateError, SimulateOptions, SimulateReport};
use crate::txs::{Call, Signed, TxBatcher};

/// Blocks a job stays "in flight" after its transaction is sent (a receipt ends the wait earlier).
pub(super) const IN_FLIGHT_BLOCKS: u64 = 4;
/// Blocks the simulator waits for a receipt before giving up on a transaction.
const GIVE_UP_BLOCKS: u64 = 30;

pub(super) type Result<T> = std::result::Result<T, SimulateError>;

/// Blobs per block the simulator uses (Prague targets 6 per block).
pub(super) const BLOBS_PER_TICK: usize = 6;
/// Fixed gas limits per call, about 1.3–1.5× what the devnet contracts use (measured: submit
/// 183–254k, ack 50k, complete 106k, createSession 464–481k, requestSession 113–130k,
/// claimSession 96k, provideSessionKey 378–395k with x25519 keys, more with p256). Blocks fill by
/// gas limit, so tight limits mean more transactions per block.
pub(super) mod gas {
    pub(in super::super) const REGISTER: u64 = 400_000;
    pub(in super::super) const ADD_MODEL: u64 = 200_000;
    pub(in super::super) const CREATE_SESSION: u64 = 700_000;
    pub(in super::super) const REQUEST_SESSION: u64 = 180_000;
    pub(in super::super) const CLAIM_SESSION: u64 = 140_000;
    pub(in super::super) const PROVIDE_KEY: u64 = 600_000;
    pub(in super::super) const CLOSE_SESSION: u64 = 80_000;
    pub(in super::super) const SUBMIT: u64 = 330_000;
    pub(in super::super) const ACK: u64 = 70_000;
    pub(in super::super) const COMPLETE: u64 = 140_000;
    pub(in super::super) const DISPUTE: u64 = 160_000;
    pub(in super::super) const RESOLVE: u64 = 250_000;
    pub(in super::super) const TIMEOUT: u64 = 300_000;
    pub(in super::super) const SETTLE: u64 = 200_000;
    pub(in super::super) const RELEASE_BASE: u64 = 80_000;
    pub(in super::super) const RELEASE_PER_JOB: u64 = 70_000;
}

/// An open session of the run.
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) consumer: Address,
    pub(super) worker: Address,
    pub(super) key: SessionKey,
    /// Prompt blob reused by every job (volume mode, simulated workers only); None: every job
    /// gets its own encrypted prompt, for a real worker to serve.
    pub(super) prompt_blob: Option<B256>,
    /// Value sent with each submission: 0 when the session's deposit prepaid the fees
    /// (createSession), the fee for sessions opened by sortition (requests carry no deposit).
    pub(super) pays: U256,
}

/// A throwaway session the dispatcher path created, waiting for its SessionCreated.
pub(super) struct PendingSettle {
    pub(super) consumer: Address,
    pub(super) worker: Address,
    pub(super) enc_worker_key: Bytes,
    pub(super) tx: B256,
}

/// A submission waiting for its prompt blob to be mined (or for its turn).
pub(super) struct QueuedJob {
    pub(super) session: usize,
    pub(super) blob: B256,
    pub(super) blob_tx: B256,
}

pub(super) struct Sim {
    pub(super) tx: TxBatcher,
    pub(super) contracts: Contracts,
    pub(super) model: B256,
    pub(super) options: SimulateOptions,
    pub(super) params: Params,
    pub(super) fee: U256,
    pub(super) bond: U256,
    pub(super) dispatcher: PrivateKeySigner,
    pub(super) disputer: Address,
    pub(super) disputer_public: Vec<u8>,
    pub(super) keeper: Address,
    pub(super) consumers: Vec<Address>,
    pub(super) consumer_nonce: HashMap<Address, U256>,
    pub(super) sessions: Vec<Session>,
    pub(super) session_index: HashMap<u64, usize>,
    pub(super) response_blob: HashMap<Address, (B256, B256)>,
    pub(super) filler_blob: B256,
    pub(super) world: World,
    pub(super) report: SimulateReport,
    pub(super) pending_settles: Vec<PendingSettle>,
    pub(super) queued: VecDeque<QueuedJob>,
    /// Sessions by sortition (None: the dispatcher signs createSession).
    pub(super) sortition: Option<Sortition>,
    /// Submissions decided (including those not yet seen on chain).
    pub(super) planned: u64,
    pub(super) next_session: usize,
    pub(super) prompt_counter: usize,
    /// Transactions sent and not yet seen: hash → (block sent at, kind). Job transactions are
    /// confirmed by their JobRegistry log; receipts are read only for the rest.
    pub(super) sent: HashMap<B256, (u64, &'static str)>,
    /// Jobs each sent job transaction acts on: they stay in flight until its receipt.
    pub(super) tx_jobs: HashMap<B256, Vec<u64>>,
    pub(super) reverts_logged: usize,
    pub(super) chain_time: u64,
}

/// Runs the simulation described by `options` against the network in `profile`.
pub async fn run(
    profile: &Profile,
    options: &SimulateOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<SimulateReport> {
    options.shares.validate().map_err(SimulateError::Options)?;
    if options.jobs == 0 {
        return Err(SimulateError::Options("--jobs must be at least 1".into()));
    }
    if options.sessions == Some(0) {
        return Err(SimulateError::Options("--sessions must be at least 1".into()));
    }
    if options.request_ttl == 0 {
        return Err(SimulateError::Options("--request-ttl must be at least 1 second".into()));
    }
    if let Some(rate) = options.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err(SimulateError::Options(format!("--rate must be a positive number of jobs per second, got {rate}")));
    }
    let started = Instant::now();
    let mut sim = Sim::setup(profile, options).await?;
    if sim.sortition.is_none() {
        sim.open_sessions().await?;
    }
    sim.report.first_block = sim.tx.provider().get_block_number().await.map_err(read("block number"))?;
    if sim.sortition.is_some() {
        // After reading the first block: the requests land after it, where the loop reads logs.
        sim.open_requests(sim.report.first_block).await?;
    }
    sim.main_loop(started, &mut progress).await?;
    sim.report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(sim.report)
}

pub(super) fn read<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SimulateError + '_ {
    move |e| SimulateError::Read { what: what.into(), message: e.to_string() }
}

pub(super) fn signer_of(key: &B256) -> Result<PrivateKeySigner> {
    PrivateKeySigner::from_bytes(key).map_err(|e| SimulateError::Options(format!("bad dev key: {e}")))
}

impl Sim {
    pub(super) fn call(&self, from: Address, to: Address, data: Vec<u8>, value: U256, gas: u64) -> Call {
        Call { from, to, data: data.into(), value, gas }
    }

    /// Sends `calls` and waits until all are mined, failing on any revert.
    pub(super) async fn send_and_confirm(
        &mut self,
        calls: Vec<Call>,
        what: &str,
    ) -> Result<Vec<alloy::rpc::types::TransactionReceipt>> {
        let signed = calls.iter().map(|c| self.tx.sign(c)).collect::<std::result::Result<Vec<_>, _>>()?;
        self.broadcast_and_confirm(signed, what).await
    }

    pub(super) async fn broadcast_and_confirm(
        &mut self,
        signed: Vec<Signed>,
        what: &str,
    ) -> Result<Vec<alloy::rpc::types::TransactionReceipt>> {
        if signed.is_empty() {
            return Ok(Vec::new());
        }
        for r in self.tx.send(&signed).await? {
            if let Err(e) = r {
                return Err(SimulateError::Setup(format!("{what}: the node refused a transaction: {e}")));
            }
        }
        self.report.transactions += signed.len() as u64;
        let hashes: Vec<B256> = signed.iter().map(|s| s.hash).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let receipts = self.tx.receipts(&hashes).await?;
            if receipts.iter().all(Option::is_some) {
                let receipts: Vec<_> = receipts.into_iter().flatten().collect();
                if let Some(bad) = receipts.iter().find(|r| !r.status()) {
                    let reason = self.tx.revert_reason(bad.transaction_hash).await;
                    return Err(SimulateError::Setup(format!(
                        "{what}: transaction {} reverted: {reason}",
                        bad.transaction_hash
                    )));
                }
                return Ok(receipts);
            }
            if Instant::now() > deadline {
                return Err(SimulateError::Setup(format!("{what}: transactions not mined within 60 s")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds an open session; `closed`: a throwaway one, closed right after its only job.
    pub(super) fn add_session(&mut self, session: Session, closed: bool) {
        self.world.sessions.insert(session.id, (session.worker, closed));
        self.session_index.insert(session.id, self.sessions.len());
        self.sessions.push(session);
    }

    async fn main_loop(&mut self, started: Instant, progress: &mut impl FnMut(Progress<'_>)) -> Result<()> {
        let provider = self.tx.provider().clone();
        let mut last_block = self.report.first_block;
        let mut submit_started: Option<Instant> = None;
        let mut last_progress = Instant::now();
        let mut last_change = Instant::now();
        let stall_after = Duration::from_secs(
            self.params.ack_timeout
                + self.params.completion_timeout
                + self.params.dispute_window
                + self.params.resolution_timeout
                + 120,
        );
        loop {
            if last_change.elapsed() > stall_after {
                let requests = match &self.sortition {
                    Some(s) => format!("; {} (is a worker eligible and below capacity?)", s.book.summary()),
                    None => String::new(),
                };
                return Err(SimulateError::Stalled(format!(
                    "no job changed state for {} s; {} of {} jobs submitted, {} still open ({}), {} submissions failed{requests}",
                    stall_after.as_secs(),
                    self.report.submitted,
                    self.options.jobs,
                    self.world.active.len(),
                    self.world.active_summary(),
                    self.report.failed_submissions
                )));
            }
            let head = provider.get_block_number().await.map_err(read("block number"))?;
            if head <= last_block {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let tick = Instant::now();
            let changed = self.ingest(last_block + 1, head).await?;
            let t_ingest = tick.elapsed();
            last_block = head;
            self.report.last_block = head;
            if changed {
                last_change = Instant::now();
            }
            let header = provider
                .get_block_by_number(BlockNumberOrTag::Number(head))
                .await
                .map_err(read("block header"))?
                .ok_or_else(|| SimulateError::Read {
                    what: "block header".into(),
                    message: format!("block {head} missing"),
                })?;
            self.chain_time = header.header.timestamp;
            if head % 20 == 0 {
                self.tx.refresh_fees().await?;
            }

            let mut signed = Vec::new();
            let actions = self.world.decide(head, self.chain_time, &self.params);
            self.sign_actions(&actions, head, &mut signed)?;
            if self.sortition.is_some() {
                self.sortition_tick(head, self.chain_time, &mut signed).await?;
            }
            let before = self.planned;
            self.submissions(started, head, &mut signed).await?;
            if self.planned > before && submit_started.is_none() {
                submit_started = Some(Instant::now());
            }
            if !signed.is_empty() {
                let results = self.tx.send(&signed).await?;
                let mut refused = 0;
                for (s, r) in signed.iter().zip(results) {
                    if let Err(e) = r {
                        refused += 1;
                        if refused <= 3 {
                            tracing::warn!(tx = %s.hash, error = %e, "node refused a transaction");
                        }
                    }
                }
                if refused > 0 {
                    // A refused transaction left a nonce gap; take nonces from the chain again.
                    self.tx.resync_all().await?;
                    self.report.refused += refused;
                }
                self.report.transactions += signed.len() as u64 - refused;
            }
            let t_act = tick.elapsed();
            self.check_receipts(head).await?;
            tracing::debug!(
                head,
                ingest_ms = t_ingest.as_millis() as u64,
                act_ms = (t_act - t_ingest).as_millis() as u64,
                total_ms = tick.elapsed().as_millis() as u64,
                "simulator tick"
            );

            if self.report.submitted == self.options.jobs
                && let Some(t) = submit_started.take()
            {
                self.report.submit_secs = t.elapsed().as_secs_f64();
                self.report.jobs_per_sec = self.options.jobs as f64 / self.report.submit_secs.max(1e-9);
            }
            if last_progress.elapsed() > Duration::from_secs(2) {
                progress(Progress { report: &self.report, head });
                last_progress = Instant::now();
            }
            let all_planned =
                self.planned >= self.options.jobs && self.queued.is_empty() && self.pending_settles.is_empty();
            let accounted = self.report.submitted + self.report.failed_submissions >= self.options.jobs;
            let requests_done = self.sortition.as_ref().is_none_or(|s| s.settled());
            if all_planned && accounted && requests_done && self.world.active.is_empty() && self.sent.is_empty() {
                return Ok(());
            }
        }
    }

    /// Reads JobRegistry (and SessionManager) logs of `from..=to` into the world; true if any job
    /// or session request of the run moved on.
    async fn ingest(&mut self, from: u64, to: u64) -> Result<bool> {
        let provider = self.tx.provider().clone();
        let mut addresses = vec![self.contracts.job_registry];
        addresses.extend(self.sortition.as_ref().map(|s| s.manager));
        let filter = Filter::new().address(addresses).from_block(from).to_block(to);
        let logs = provider.get_logs(&filter).await.map_err(read("eth_getLogs"))?;
        let mut times: HashMap<u64, u64> = HashMap::new();
        let mut changed = false;
        for log in logs {
            if let Some(hash) = log.transaction_hash {
                self.sent.remove(&hash);
            }
            if log.address() != self.contracts.job_registry {
                changed |= self.apply_session_manager(&log);
                continue;
            }
            let ts = self.log_time(&log, &mut times).await?;
            self.report.job_registry_events += 1;
            changed |= self.apply(&log, ts);
        }
        Ok(changed)
    }

    async fn log_time(&self, log: &Log, cache: &mut HashMap<u64, u64>) -> Result<u64> {
        if let Some(ts) = log.block_timestamp {
            return Ok(ts);
        }
        let n = log.block_number.unwrap_or_default();
        if let Some(ts) = cache.get(&n) {
            return Ok(*ts);
        }
        let block = self
            .tx
            .provider()
            .get_block_by_number(BlockNumberOrTag::Number(n))
            .await
            .map_err(read("block header"))?
            .ok_or_else(|| SimulateError::Read {
                what: "block header".into(),
                message: format!("block {n} missing"),
            })?;
        cache.insert(n, block.header.timestamp);
        Ok(block.header.timestamp)
    }

    fn apply(&mut self, log: &Log, ts: u64) -> bool {
        use JobRegistry::JobRegistryEvents as E;
        let Ok(decoded) = E::decode_log(&log.inner) else { return false };
        let p = self.params;
        let transition = |world: &mut World, report: &mut SimulateReport, job: U256, state: JobState| {
            let hit = world.transition(job.to(), state, ts, &p);
            if hit {
                count(report, state);
            }
            hit
        };
        match decoded.data {
            E::SessionCreated(ev) => {
                if let Some(pos) = self.pending_settles.iter().position(|s| s.enc_worker_key == ev.encWorkerKey) {
                    let pending = self.pending_settles.swap_remove(pos);
                    let id = ev.sessionId.to::<u64>();
                    self.add_session(
                        Session {
                            id,
                            consumer: pending.consumer,
                            worker: pending.worker,
                            key: SessionKey::generate(),
                            prompt_blob: None,
                            pays: U256::ZERO,
                        },
                        true,
                    );
                    self.report.sessions += 1;
                    // Submit on it and close it in the same batch (consumer nonces keep the order).
                    self.queued.push_front(QueuedJob {
                        session: self.sessions.len() - 1,
                        blob: self.filler_blob,
                        blob_tx: B256::ZERO,
                    });
                }
                false
            }
            E::JobSubmitted(ev) => {
                let session = ev.sessionId.to::<u64>();
                let Some(&idx) = self.session_index.get(&session) else { return false };
                let job = ev.jobId.to::<u64>();
                let closed = self.world.sessions.get(&session).is_some_and(|(_, c)| *c);
                let outcome =
                    if closed { Outcome::Settle } else { plan::outcome(self.options.seed, job, &self.options.shares) };
                self.world.submitted(job, session, self.sessions[idx].worker, ts, outcome, &p);
                self.report.submitted += 1;
                true
            }
            E::JobAcknowledged(ev) => transition(&mut self.world, &mut self.report, ev.jobId, JobState::Acknowledged),
            E::JobCompleted(ev) => transition(&mut self.world, &mut self.report, ev.jobId, JobState::Completed),
            E::JobReleased(ev) => transition(&mut self.world, &mut self.report, ev.jobId, JobState::Released),
            E::JobTimedOut(ev) => transition(&mut self.world, &mut self.report, ev.jobId, JobState::TimedOut),
            E::DisputeCreated(ev) => transition(&mut self.world, &mut self.report, ev.jobId, JobState::Disputed),
            E::JobSettledNoFault(ev) => {
                let hit = self.world.transition(ev.jobId.to(), JobState::TimedOut, ts, &p);
                if hit {
                    self.report.settled += 1;
                }
                hit
            }
            E::DisputeResolved(ev) => {
                let hit = self.world.resolved(ev.jobId.to(), ev.workerGuilty, ts, &p);
                if hit {
                    if ev.workerGuilty {
                        self.report.disputes_guilty += 1;
                    } else {
                        self.report.disputes_not_guilty += 1;
                    }
                }
                hit
            }
            E::DisputeDefaulted(ev) => {
                if self.world.jobs.contains_key(&ev.jobId.to::<u64>()) {
                    self.report.disputes_defaulted += 1;
                }
                false
            }
            _ => false,
        }
    }

    /// Reads receipts of transactions sent at least two blocks ago whose log has not been seen
    /// (blob transactions, and reverted ones), counting reverts.
    async fn check_receipts(&mut self, head: u64) -> Result<()> {
        let due: Vec<(B256, u64, &'static str)> =
            self.sent.iter().filter(|(_, (block, _))| block + 2 <= head).map(|(h, (b, k))| (*h, *b, *k)).collect();
        if due.is_empty() {
            return Ok(());
        }
        let hashes: Vec<B256> = due.iter().map(|(h, _, _)| *h).collect();
        let receipts = self.tx.receipts(&hashes).await?;
        for ((hash, block, kind), receipt) in due.into_iter().zip(receipts) {
            // A receipt (or giving up) ends the jobs' in-flight wait: a success has already moved
            // them on through its events; after a revert they may be acted on again.
            if receipt.is_some() || block + GIVE_UP_BLOCKS <= head {
                for job in self.tx_jobs.remove(&hash).unwrap_or_default() {
                    self.world.in_flight(job, 0);
                }
            }
            match receipt {
                Some(r) if !r.status() => {
                    self.sent.remove(&hash);
                    if kind == "claimSession" && self.claim_lost(hash, r.block_number.unwrap_or(head)) {
                        continue;
                    }
                    self.report.reverted += 1;
                    match kind {
                        "submitJob" => self.report.failed_submissions += 1,
                        "requestSession" => self.request_lost(hash),
                        "createSession" => {
                            if let Some(pos) = self.pending_settles.iter().position(|p| p.tx == hash) {
                                self.pending_settles.swap_remove(pos);
                                self.report.failed_submissions += 1;
                            }
                        }
                        _ => {}
                    }
                    if self.reverts_logged < 5 {
                        self.reverts_logged += 1;
                        let reason = self.tx.revert_reason(hash).await;
                        tracing::warn!(tx = %hash, kind, %reason, "simulator transaction reverted");
                    }
                }
                Some(_) => {
                    self.sent.remove(&hash);
                }
                None if block + GIVE_UP_BLOCKS <= head => {
                    self.sent.remove(&hash);
                    if kind == "requestSession" {
                        self.request_lost(hash);
                    }
                    tracing::warn!(tx = %hash, kind, "simulator transaction not mined after 30 blocks; giving up on it");
                }
                None => {}
            }
        }
        Ok(())
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
