//! The effectful shell of the simulator: setup transactions, then the block-driven loop.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::{Filter, Log};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEventInterface};
use lcw_schema::bindings::{AIConfig, JobRegistry, WorkerRegistry};
use lcw_schema::profile::{Contracts, Profile, Role};
use lcw_schema::suite::{EncryptionSecret, SessionKey, wrap_session_key};
use lcw_schema::types::{JobState, ModelId};

use super::dispatcher::{create_session_digest, disputer_secret, sign_digest};
use super::plan::{self, Outcome};
use super::world::{Action, Params, World, count};
use super::{DEFAULT_PROMPTS, Progress, SimulateError, SimulateOptions, SimulateReport};
use crate::txs::{Call, Signed, TxBatcher};

/// Blocks a job stays "in flight" after its transaction is sent (a receipt ends the wait earlier).
const IN_FLIGHT_BLOCKS: u64 = 4;
/// Blocks the simulator waits for a receipt before giving up on a transaction.
const GIVE_UP_BLOCKS: u64 = 30;

type Result<T> = std::result::Result<T, SimulateError>;

/// Blobs per block the simulator uses (Prague targets 6 per block).
const BLOBS_PER_TICK: usize = 6;
/// Fixed gas limits per call, about 1.3–1.5× what the devnet contracts use (measured: submit
/// 183–254k, ack 50k, complete 106k, createSession 464–481k). Blocks fill by gas limit, so tight
/// limits mean more transactions per block.
mod gas {
    pub(super) const REGISTER: u64 = 400_000;
    pub(super) const ADD_MODEL: u64 = 200_000;
    pub(super) const CREATE_SESSION: u64 = 700_000;
    pub(super) const CLOSE_SESSION: u64 = 80_000;
    pub(super) const SUBMIT: u64 = 330_000;
    pub(super) const ACK: u64 = 70_000;
    pub(super) const COMPLETE: u64 = 140_000;
    pub(super) const DISPUTE: u64 = 160_000;
    pub(super) const RESOLVE: u64 = 250_000;
    pub(super) const TIMEOUT: u64 = 300_000;
    pub(super) const SETTLE: u64 = 200_000;
    pub(super) const RELEASE_BASE: u64 = 80_000;
    pub(super) const RELEASE_PER_JOB: u64 = 70_000;
}

struct Session {
    id: u64,
    consumer: Address,
    worker: Address,
    key: SessionKey,
    /// Prompt blob reused by every job (volume mode).
    prompt_blob: Option<B256>,
}

struct PendingSettle {
    consumer: Address,
    worker: Address,
    enc_worker_key: Bytes,
    tx: B256,
}

struct QueuedJob {
    session: usize,
    blob: B256,
    blob_tx: B256,
}

struct Sim {
    tx: TxBatcher,
    contracts: Contracts,
    model: B256,
    options: SimulateOptions,
    params: Params,
    fee: U256,
    bond: U256,
    dispatcher: PrivateKeySigner,
    disputer: Address,
    disputer_public: Vec<u8>,
    keeper: Address,
    consumers: Vec<Address>,
    consumer_nonce: HashMap<Address, U256>,
    sessions: Vec<Session>,
    session_index: HashMap<u64, usize>,
    response_blob: HashMap<Address, (B256, B256)>,
    filler_blob: B256,
    world: World,
    report: SimulateReport,
    pending_settles: Vec<PendingSettle>,
    queued: VecDeque<QueuedJob>,
    /// Submissions decided (including those not yet seen on chain).
    planned: u64,
    next_session: usize,
    prompt_counter: usize,
    /// Transactions sent and not yet seen: hash → (block sent at, kind). Job transactions are
    /// confirmed by their JobRegistry log; receipts are read only for the rest.
    sent: HashMap<B256, (u64, &'static str)>,
    /// Jobs each sent job transaction acts on: they stay in flight until its receipt.
    tx_jobs: HashMap<B256, Vec<u64>>,
    reverts_logged: usize,
    chain_time: u64,
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
    if let Some(rate) = options.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err(SimulateError::Options(format!("--rate must be a positive number of jobs per second, got {rate}")));
    }
    let started = Instant::now();
    let mut sim = Sim::setup(profile, options).await?;
    sim.open_sessions().await?;
    sim.report.first_block = sim.tx.provider().get_block_number().await.map_err(read("block number"))?;
    sim.main_loop(started, &mut progress).await?;
    sim.report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(sim.report)
}

fn read<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SimulateError + '_ {
    move |e| SimulateError::Read { what: what.into(), message: e.to_string() }
}

fn signer_of(key: &B256) -> Result<PrivateKeySigner> {
    PrivateKeySigner::from_bytes(key).map_err(|e| SimulateError::Options(format!("bad dev key: {e}")))
}

impl Sim {
    async fn setup(profile: &Profile, options: &SimulateOptions) -> Result<Sim> {
        let mut tx = TxBatcher::connect(&profile.rpc_url).await?;
        profile.check_chain_id(tx.chain_id())?;
        let provider = tx.provider().clone();
        let contracts = profile.contracts;
        let model = ModelId::parse(&options.model).map_err(|e| SimulateError::Options(e.to_string()))?.0;
        let ai = AIConfig::new(contracts.ai_config, &provider);
        let wr = WorkerRegistry::new(contracts.worker_registry, &provider);
        if !ai.isModelEnabled(model).call().await.map_err(read("isModelEnabled"))? {
            return Err(SimulateError::Options(format!(
                "model `{}` is not registered and enabled in AIConfig {}; `lcw devnet` registers gemma3-270m",
                options.model, contracts.ai_config
            )));
        }
        let params = Params {
            ack_timeout: ai.getAckTimeout().call().await.map_err(read("getAckTimeout"))?.to(),
            completion_timeout: ai.getCompletionTimeout().call().await.map_err(read("getCompletionTimeout"))?.to(),
            dispute_window: ai.getDisputeWindow().call().await.map_err(read("getDisputeWindow"))?.to(),
            resolution_timeout: ai.getResolutionTimeout().call().await.map_err(read("getResolutionTimeout"))?.to(),
            auto_complete: options.auto_complete,
            auto_release: options.auto_release,
            keeper_releases: options.keeper_releases,
        };
        let fee = ai.calculateJobFee(model).call().await.map_err(read("calculateJobFee"))?;
        let bond = fee * ai.getDisputeBondMultiplier().call().await.map_err(read("getDisputeBondMultiplier"))?;
        let min_stake = ai.getMinWorkerStake().call().await.map_err(read("getMinWorkerStake"))?;

        let dispatcher = signer_of(&profile.account(Role::Dispatcher)?.private_key)?;
        let disputer_account = profile.account(Role::Disputer)?;
        let disputer = tx.add_account(signer_of(&disputer_account.private_key)?).await?;
        let disputer_public = disputer_secret(&disputer_account.private_key).public_key();
        let keeper = tx.add_account(signer_of(&profile.account(Role::Keeper)?.private_key)?).await?;
        tx.add_account(dispatcher.clone()).await?;
        let mut consumers = Vec::new();
        for account in profile.accounts_with(Role::Consumer) {
            consumers.push(tx.add_account(signer_of(&account.private_key)?).await?);
        }
        if consumers.is_empty() {
            return Err(profile
                .account(Role::Consumer)
                .err()
                .map(SimulateError::from)
                .unwrap_or_else(|| SimulateError::Options("the profile has no consumer account".into())));
        }
        let jr = JobRegistry::new(contracts.job_registry, &provider);
        let mut consumer_nonce = HashMap::new();
        for c in &consumers {
            consumer_nonce.insert(*c, jr.nonce(*c).call().await.map_err(read("JobRegistry.nonce"))?);
        }

        let mut world = World::default();
        let mut report = SimulateReport { jobs: options.jobs, ..Default::default() };
        let mut sim = Sim {
            tx,
            contracts,
            model,
            options: options.clone(),
            params,
            fee,
            bond,
            dispatcher,
            disputer,
            disputer_public,
            keeper,
            consumers,
            consumer_nonce,
            sessions: Vec::new(),
            session_index: HashMap::new(),
            response_blob: HashMap::new(),
            filler_blob: B256::ZERO,
            world: World::default(),
            report: SimulateReport::default(),
            pending_settles: Vec::new(),
            queued: VecDeque::new(),
            planned: 0,
            next_session: 0,
            prompt_counter: 0,
            sent: HashMap::new(),
            tx_jobs: HashMap::new(),
            reverts_logged: 0,
            chain_time: 0,
        };

        // Workers: register K of them, or use those already registered for the model.
        let workers: Vec<Address> = if options.workers > 0 {
            let stake = options.stake.map(|s| s.wei()).unwrap_or(min_stake).max(min_stake);
            let mut calls = Vec::new();
            let mut addrs = Vec::new();
            let mut suspended = 0usize;
            let mut i = 0usize;
            while addrs.len() < options.workers {
                if i >= options.workers + 64 {
                    return Err(SimulateError::Options(format!(
                        "found only {} usable workers ({suspended} are suspended); pass --workers {} or start a fresh devnet",
                        addrs.len(),
                        addrs.len()
                    )));
                }
                let key = sim.worker_key(profile, i).await?;
                i += 1;
                let addr = key.address();
                if wr.isWorkerRegistered(addr).call().await.map_err(read("isWorkerRegistered"))? {
                    if wr.isWorkerSuspended(addr).call().await.map_err(read("isWorkerSuspended"))? {
                        suspended += 1;
                        continue;
                    }
                    sim.tx.add_account(key).await?;
                    let current = wr.getWorkerStake(addr).call().await.map_err(read("getWorkerStake"))?;
                    if current < min_stake {
                        let data = WorkerRegistry::topUpStakeCall {}.abi_encode();
                        calls.push(sim.call(
                            addr,
                            contracts.worker_registry,
                            data,
                            min_stake - current,
                            gas::ADD_MODEL,
                        ));
                    }
                } else {
                    sim.tx.add_account(key).await?;
                    let secret = EncryptionSecret::generate(options.suite);
                    let data = WorkerRegistry::registerWorkerCall { encryptionPubKey: secret.public_key().into() }
                        .abi_encode();
                    calls.push(sim.call(addr, contracts.worker_registry, data, stake, gas::REGISTER));
                }
                if !wr.workerSupportsModel(addr, model).call().await.map_err(read("workerSupportsModel"))? {
                    let data = WorkerRegistry::addSupportedModelCall { modelId: model }.abi_encode();
                    calls.push(sim.call(addr, contracts.worker_registry, data, U256::ZERO, gas::ADD_MODEL));
                }
                world.simulated.insert(addr);
                addrs.push(addr);
            }
            sim.send_and_confirm(calls, "register workers").await?;
            addrs
        } else {
            let eligible = wr.getEligibleWorkers(model).call().await.map_err(read("getEligibleWorkers"))?;
            if eligible.is_empty() {
                return Err(SimulateError::Options(format!(
                    "no eligible worker for model `{}`; register one (`lcw register`) or pass --workers K",
                    options.model
                )));
            }
            for account in profile.accounts_with(Role::Worker) {
                if eligible.contains(&account.address) && options.auto_complete {
                    let addr = sim.tx.add_account(signer_of(&account.private_key)?).await?;
                    world.simulated.insert(addr);
                }
            }
            eligible
        };
        if options.auto_complete && world.simulated.is_empty() {
            return Err(SimulateError::Options(
                "--auto-complete needs workers whose keys the profile holds; pass --workers K".into(),
            ));
        }
        report.workers = workers;
        sim.world = world;
        sim.report = report;
        sim.post_setup_blobs().await?;
        Ok(sim)
    }

    /// The `i`-th candidate worker key: the profile's worker accounts first, then derived keys
    /// funded with anvil_setBalance (devnet only).
    async fn worker_key(&self, profile: &Profile, i: usize) -> Result<PrivateKeySigner> {
        if let Some(account) = profile.accounts_with(Role::Worker).nth(i) {
            return signer_of(&account.private_key);
        }
        let key = keccak256([b"lcw-sim-worker".as_slice(), &(i as u64).to_be_bytes()].concat());
        let signer = signer_of(&key)?;
        let available = profile.accounts_with(Role::Worker).count();
        self.tx.provider().anvil_set_balance(signer.address(), U256::from(10u128.pow(22))).await.map_err(|e| {
            SimulateError::Options(format!(
                "the profile has {available} worker accounts and funding more needs anvil ({e}); pass --workers {available} or fewer"
            ))
        })?;
        Ok(signer)
    }

    fn call(&self, from: Address, to: Address, data: Vec<u8>, value: U256, gas: u64) -> Call {
        Call { from, to, data: data.into(), value, gas }
    }

    /// Sends `calls` and waits until all are mined, failing on any revert.
    async fn send_and_confirm(
        &mut self,
        calls: Vec<Call>,
        what: &str,
    ) -> Result<Vec<alloy::rpc::types::TransactionReceipt>> {
        let signed = calls.iter().map(|c| self.tx.sign(c)).collect::<std::result::Result<Vec<_>, _>>()?;
        self.broadcast_and_confirm(signed, what).await
    }

    async fn broadcast_and_confirm(
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

    /// Response blobs for simulated workers and a filler prompt blob (volume mode), posted once.
    async fn post_setup_blobs(&mut self) -> Result<()> {
        let mut signed = Vec::new();
        let filler_key = SessionKey::generate();
        let filler = filler_key.seal(b"lcw simulated prompt");
        let sc = lcw_schema::blob::sidecar(&[&filler]).map_err(|e| SimulateError::Payload(e.to_string()))?;
        self.filler_blob = lcw_schema::blob::versioned_hashes(&sc)[0];
        let poster = self.dispatcher.address();
        signed.push(self.tx.sign_blob(poster, sc)?);
        if self.options.auto_complete {
            let mut workers: Vec<Address> = self.world.simulated.iter().copied().collect();
            workers.sort();
            for w in workers {
                let ciphertext = SessionKey::generate().seal(b"lcw simulated response");
                let sc =
                    lcw_schema::blob::sidecar(&[&ciphertext]).map_err(|e| SimulateError::Payload(e.to_string()))?;
                let hash = lcw_schema::blob::versioned_hashes(&sc)[0];
                self.response_blob.insert(w, (hash, keccak256(&ciphertext)));
                signed.push(self.tx.sign_blob(w, sc)?);
            }
        }
        self.report.blob_transactions += signed.len() as u64;
        self.broadcast_and_confirm(signed, "post setup blobs").await?;
        Ok(())
    }

    /// One session per worker (consumers round-robin), each prepaid for its share of the jobs.
    async fn open_sessions(&mut self) -> Result<()> {
        let workers = self.report.workers.clone();
        let per_session = self.options.jobs.div_ceil(workers.len() as u64) + 10;
        let deposit = self.fee * U256::from(per_session);
        let mut calls = Vec::new();
        let mut pending = Vec::new();
        for (i, worker) in workers.iter().enumerate() {
            let consumer = self.consumers[i % self.consumers.len()];
            let key = SessionKey::generate();
            let (call, enc) = self.create_session_call(consumer, *worker, &key, deposit).await?;
            calls.push(call);
            pending.push((consumer, *worker, key, enc));
        }
        let receipts = self.send_and_confirm(calls, "open sessions").await?;
        let mut created = HashMap::new();
        for r in &receipts {
            for log in r.inner.logs() {
                if let Ok(JobRegistry::JobRegistryEvents::SessionCreated(ev)) =
                    JobRegistry::JobRegistryEvents::decode_log(&log.inner).map(|l| l.data)
                {
                    created.insert(ev.encWorkerKey.clone(), ev.sessionId.to::<u64>());
                }
            }
        }
        for (consumer, worker, key, enc) in pending {
            let id = *created
                .get(&enc)
                .ok_or_else(|| SimulateError::Setup("a created session was not found in its receipt".into()))?;
            self.add_session(Session { id, consumer, worker, key, prompt_blob: None }, false);
        }
        self.report.sessions += self.sessions.len() as u64;
        if self.options.auto_complete {
            // Volume mode: one real prompt blob per session, reused by all its jobs.
            let mut signed = Vec::new();
            let poster = self.dispatcher.address();
            for chunk in (0..self.sessions.len()).collect::<Vec<_>>().chunks(BLOBS_PER_TICK) {
                let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(chunk.len());
                for i in chunk {
                    let prompt = self.next_prompt();
                    payloads.push(self.sessions[*i].key.seal(prompt.as_bytes()));
                }
                let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                let sc = lcw_schema::blob::sidecar(&refs).map_err(|e| SimulateError::Payload(e.to_string()))?;
                for (i, h) in chunk.iter().zip(lcw_schema::blob::versioned_hashes(&sc)) {
                    self.sessions[*i].prompt_blob = Some(h);
                }
                signed.push(self.tx.sign_blob(poster, sc)?);
            }
            self.report.blob_transactions += signed.len() as u64;
            self.broadcast_and_confirm(signed, "post prompt blobs").await?;
        }
        Ok(())
    }

    fn add_session(&mut self, session: Session, closed: bool) {
        self.world.sessions.insert(session.id, (session.worker, closed));
        self.session_index.insert(session.id, self.sessions.len());
        self.sessions.push(session);
    }

    async fn create_session_call(
        &mut self,
        consumer: Address,
        worker: Address,
        key: &SessionKey,
        deposit: U256,
    ) -> Result<(Call, Bytes)> {
        let wr = WorkerRegistry::new(self.contracts.worker_registry, self.tx.provider());
        let worker_key = wr.getWorkerEncryptionKey(worker).call().await.map_err(read("getWorkerEncryptionKey"))?;
        let enc_worker: Bytes =
            wrap_session_key(&worker_key, key).map_err(|e| SimulateError::Payload(e.to_string()))?.into();
        let enc_disputer: Bytes =
            wrap_session_key(&self.disputer_public, key).map_err(|e| SimulateError::Payload(e.to_string()))?.into();
        let nonce = self.consumer_nonce.entry(consumer).or_default();
        let this_nonce = *nonce;
        *nonce += U256::from(1);
        let expiry = U256::from(self.chain_time.max(unix_now()) + 3600);
        let digest = create_session_digest(
            self.tx.chain_id(),
            self.contracts.job_registry,
            consumer,
            self.model,
            worker,
            &enc_worker,
            &enc_disputer,
            this_nonce,
            expiry,
        );
        let signature = sign_digest(&self.dispatcher, digest).map_err(|e| SimulateError::Payload(e.to_string()))?;
        let data = JobRegistry::createSessionCall {
            modelId: self.model,
            worker,
            encWorkerKey: enc_worker.clone(),
            encDisputerKey: enc_disputer,
            dispatcherSignature: signature,
            expiry,
        }
        .abi_encode();
        Ok((self.call(consumer, self.contracts.job_registry, data, deposit, gas::CREATE_SESSION), enc_worker))
    }

    fn next_prompt(&mut self) -> String {
        let i = self.prompt_counter;
        self.prompt_counter += 1;
        if self.options.prompts.is_empty() {
            DEFAULT_PROMPTS[i % DEFAULT_PROMPTS.len()].to_owned()
        } else {
            self.options.prompts[i % self.options.prompts.len()].clone()
        }
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
                return Err(SimulateError::Stalled(format!(
                    "no job changed state for {} s; {} of {} jobs submitted, {} still open ({}), {} submissions failed",
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
            if all_planned && accounted && self.world.active.is_empty() && self.sent.is_empty() {
                return Ok(());
            }
        }
    }

    /// Reads JobRegistry logs of `from..=to` into the world; true if any job of the run changed.
    async fn ingest(&mut self, from: u64, to: u64) -> Result<bool> {
        let provider = self.tx.provider().clone();
        let filter = Filter::new().address(self.contracts.job_registry).from_block(from).to_block(to);
        let logs = provider.get_logs(&filter).await.map_err(read("eth_getLogs"))?;
        let mut times: HashMap<u64, u64> = HashMap::new();
        let mut changed = false;
        for log in logs {
            if let Some(hash) = log.transaction_hash {
                self.sent.remove(&hash);
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

    fn sign_actions(&mut self, actions: &[Action], head: u64, out: &mut Vec<Signed>) -> Result<()> {
        let jr = self.contracts.job_registry;
        let mut releases: HashMap<Address, Vec<U256>> = HashMap::new();
        for action in actions {
            let job = action.job();
            let id = U256::from(job);
            let worker = self.world.jobs.get(&job).map(|j| j.worker).unwrap_or_default();
            let (call, kind) = match *action {
                Action::Ack(_) => (
                    self.call(
                        worker,
                        jr,
                        JobRegistry::acknowledgeJobCall { jobId: id }.abi_encode(),
                        U256::ZERO,
                        gas::ACK,
                    ),
                    "ack",
                ),
                Action::Complete(_) => {
                    let (blob, hash) = self.response_blob.get(&worker).copied().unwrap_or_default();
                    let data = JobRegistry::completeJobCall {
                        jobId: id,
                        responseBlobHash: blob,
                        responseCiphertextHash: hash,
                    }
                    .abi_encode();
                    (self.call(worker, jr, data, U256::ZERO, gas::COMPLETE), "complete")
                }
                Action::Dispute(_) => {
                    let session = self.world.jobs.get(&job).map(|j| j.session).unwrap_or_default();
                    let consumer =
                        self.session_index.get(&session).map(|i| self.sessions[*i].consumer).unwrap_or_default();
                    (
                        self.call(
                            consumer,
                            jr,
                            JobRegistry::disputeJobCall { jobId: id }.abi_encode(),
                            self.bond,
                            gas::DISPUTE,
                        ),
                        "dispute",
                    )
                }
                Action::Resolve(_, guilty) => {
                    let data = JobRegistry::resolveDisputeCall {
                        jobId: id,
                        workerGuilty: guilty,
                        reExecutionBlobHash: self.filler_blob,
                        _similarityScore: U256::from(if guilty { 2_000 } else { 9_500 }),
                    }
                    .abi_encode();
                    (self.call(self.disputer, jr, data, U256::ZERO, gas::RESOLVE), "resolve")
                }
                Action::ClaimTimeout(_) => (
                    self.call(
                        self.keeper,
                        jr,
                        JobRegistry::claimTimeoutCall { jobId: id }.abi_encode(),
                        U256::ZERO,
                        gas::TIMEOUT,
                    ),
                    "claimTimeout",
                ),
                Action::Settle(_) => (
                    self.call(
                        self.keeper,
                        jr,
                        JobRegistry::settleStuckJobCall { jobId: id }.abi_encode(),
                        U256::ZERO,
                        gas::SETTLE,
                    ),
                    "settleStuckJob",
                ),
                Action::Release(_, by) => {
                    releases.entry(by.unwrap_or(self.keeper)).or_default().push(id);
                    self.world.in_flight(job, head + IN_FLIGHT_BLOCKS);
                    continue;
                }
            };
            let signed = self.tx.sign(&call)?;
            self.sent.insert(signed.hash, (head, kind));
            self.tx_jobs.insert(signed.hash, vec![job]);
            out.push(signed);
            self.world.in_flight(job, head + IN_FLIGHT_BLOCKS);
        }
        let mut releasers: Vec<_> = releases.into_iter().collect();
        releasers.sort();
        for (from, ids) in releasers {
            for chunk in ids.chunks(100) {
                let gas = gas::RELEASE_BASE + gas::RELEASE_PER_JOB * chunk.len() as u64;
                let call = self.call(
                    from,
                    jr,
                    JobRegistry::releaseJobsCall { jobIds: chunk.to_vec() }.abi_encode(),
                    U256::ZERO,
                    gas,
                );
                let signed = self.tx.sign(&call)?;
                self.sent.insert(signed.hash, (head, "releaseJobs"));
                self.tx_jobs.insert(signed.hash, chunk.iter().map(|id| id.to::<u64>()).collect());
                out.push(signed);
            }
        }
        Ok(())
    }

    /// New submissions within the rate and per-block budget.
    async fn submissions(&mut self, started: Instant, head: u64, out: &mut Vec<Signed>) -> Result<()> {
        let jr = self.contracts.job_registry;
        // Jobs whose prompt blob is mined (or that need none) go first.
        let mut ready = Vec::new();
        while let Some(q) = self.queued.front() {
            if q.blob_tx != B256::ZERO {
                let r = self.tx.receipts(&[q.blob_tx]).await?;
                if r.first().and_then(|r| r.as_ref()).is_none() {
                    break;
                }
            }
            ready.extend(self.queued.pop_front());
        }
        for q in ready {
            let s = &self.sessions[q.session];
            let (consumer, id) = (s.consumer, U256::from(s.id));
            let data = JobRegistry::submitJobCall { sessionId: id, blobHash: q.blob }.abi_encode();
            let signed = self.tx.sign(&self.call(consumer, jr, data, U256::ZERO, gas::SUBMIT))?;
            self.sent.insert(signed.hash, (head, "submitJob"));
            out.push(signed);
            let closed = self.world.sessions.get(&s.id).is_some_and(|(_, c)| *c);
            if closed {
                let data = JobRegistry::closeSessionCall { sessionId: id }.abi_encode();
                let signed = self.tx.sign(&self.call(consumer, jr, data, U256::ZERO, gas::CLOSE_SESSION))?;
                self.sent.insert(signed.hash, (head, "closeSession"));
                out.push(signed);
            }
        }

        let remaining = self.options.jobs.saturating_sub(self.planned);
        let by_rate = match self.options.rate {
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as u64).saturating_sub(self.planned),
            None => u64::MAX,
        };
        let per_tick =
            if self.options.auto_complete { self.options.max_per_block as u64 } else { BLOBS_PER_TICK as u64 };
        let budget = remaining.min(by_rate).min(per_tick);
        let mut blob_payloads: Vec<(usize, Vec<u8>)> = Vec::new();
        let ordinary: Vec<usize> = (0..self.sessions.len())
            .filter(|i| !self.world.sessions.get(&self.sessions[*i].id).is_some_and(|(_, c)| *c))
            .collect();
        for _ in 0..budget {
            let index = self.planned;
            self.planned += 1;
            let session = ordinary[self.next_session % ordinary.len()];
            self.next_session += 1;
            if plan::is_settle(self.options.seed, index, &self.options.shares) {
                let (consumer, worker) = (self.sessions[session].consumer, self.sessions[session].worker);
                let key = SessionKey::generate();
                let (call, enc) = self.create_session_call(consumer, worker, &key, self.fee).await?;
                let signed = self.tx.sign(&call)?;
                self.sent.insert(signed.hash, (head, "createSession"));
                self.pending_settles.push(PendingSettle { consumer, worker, enc_worker_key: enc, tx: signed.hash });
                out.push(signed);
                continue;
            }
            match self.sessions[session].prompt_blob {
                Some(blob) => {
                    let s = &self.sessions[session];
                    let data = JobRegistry::submitJobCall { sessionId: U256::from(s.id), blobHash: blob }.abi_encode();
                    let signed = self.tx.sign(&self.call(s.consumer, jr, data, U256::ZERO, gas::SUBMIT))?;
                    self.sent.insert(signed.hash, (head, "submitJob"));
                    out.push(signed);
                }
                None => {
                    let prompt = self.next_prompt();
                    blob_payloads.push((session, self.sessions[session].key.seal(prompt.as_bytes())));
                }
            }
        }
        if !blob_payloads.is_empty() {
            let refs: Vec<&[u8]> = blob_payloads.iter().map(|(_, p)| p.as_slice()).collect();
            let sc = lcw_schema::blob::sidecar(&refs).map_err(|e| SimulateError::Payload(e.to_string()))?;
            let hashes = lcw_schema::blob::versioned_hashes(&sc);
            let signed = self.tx.sign_blob(self.dispatcher.address(), sc)?;
            for ((session, _), blob) in blob_payloads.iter().zip(hashes) {
                self.queued.push_back(QueuedJob { session: *session, blob, blob_tx: signed.hash });
            }
            self.report.blob_transactions += 1;
            self.sent.insert(signed.hash, (head, "prompt blob"));
            out.push(signed);
        }
        Ok(())
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
                    self.report.reverted += 1;
                    match kind {
                        "submitJob" => self.report.failed_submissions += 1,
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
                    tracing::warn!(tx = %hash, kind, "simulator transaction not mined after 30 blocks; giving up on it");
                }
                None => {}
            }
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
