//! Setting up a run: the chain's parameters, the roles' accounts, the workers (registered, or
//! found), the setup blobs, and (without sortition) the dispatcher-signed sessions.

use std::collections::{HashMap, VecDeque};

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::providers::ext::AnvilApi;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEventInterface};
use lcw_schema::bindings::{AIConfig, JobRegistry, WorkerRegistry};
use lcw_schema::profile::{Profile, Role};
use lcw_schema::suite::{EncryptionSecret, SessionKey, wrap_session_key};
use lcw_schema::types::ModelId;

use super::dispatcher::{create_session_digest, disputer_secret, sign_digest};
use super::requests::Sortition;
use super::run::{BLOBS_PER_TICK, Result, Session, Sim, gas, read, signer_of, unix_now};
use super::world::{Params, World};
use super::{DEFAULT_PROMPTS, SimulateError, SimulateOptions, SimulateReport};
use crate::txs::{Call, TxBatcher};

impl Sim {
    /// Connects, reads the chain's parameters, adds the roles' accounts and registers (or finds)
    /// the workers.
    pub(super) async fn setup(profile: &Profile, options: &SimulateOptions) -> Result<Sim> {
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
        let sortition = if ai.getSortitionEnabled().call().await.map_err(read("getSortitionEnabled"))? {
            Some(Sortition::read(&ai, options.request_ttl).await?)
        } else {
            None
        };

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
        let mut report = SimulateReport { jobs: options.jobs, sortition: sortition.is_some(), ..Default::default() };
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
            sortition,
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

    /// Dispatcher-signed sessions, one per worker unless `--sessions` says otherwise (workers and
    /// consumers round-robin), each prepaid for its share of the jobs.
    pub(super) async fn open_sessions(&mut self) -> Result<()> {
        let workers = self.report.workers.clone();
        let count = self.options.sessions.unwrap_or(workers.len());
        let per_session = self.options.jobs.div_ceil(count as u64) + 10;
        let deposit = self.fee * U256::from(per_session);
        let mut calls = Vec::new();
        let mut pending = Vec::new();
        for i in 0..count {
            let (consumer, worker) = (self.consumers[i % self.consumers.len()], workers[i % workers.len()]);
            let key = SessionKey::generate();
            let (call, enc) = self.create_session_call(consumer, worker, &key, deposit).await?;
            calls.push(call);
            pending.push((consumer, worker, key, enc));
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
            self.add_session(Session { id, consumer, worker, key, prompt_blob: None, pays: U256::ZERO }, false);
        }
        self.report.sessions += self.sessions.len() as u64;
        // Volume mode: one real prompt blob per session of a simulated worker, reused by all its
        // jobs. Other workers' sessions get a prompt per job.
        let volume: Vec<usize> = (0..self.sessions.len())
            .filter(|i| self.options.auto_complete && self.world.simulated.contains(&self.sessions[*i].worker))
            .collect();
        if !volume.is_empty() {
            let mut signed = Vec::new();
            let poster = self.dispatcher.address();
            for chunk in volume.chunks(BLOBS_PER_TICK) {
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

    /// A dispatcher-signed `createSession` from `consumer` to `worker` prepaying `deposit`, and the
    /// session key wrapped for the worker (SessionCreated carries it back).
    pub(super) async fn create_session_call(
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

    /// The next prompt, cycling through `--prompt`s (or the built-in ones).
    pub(super) fn next_prompt(&mut self) -> String {
        let i = self.prompt_counter;
        self.prompt_counter += 1;
        if self.options.prompts.is_empty() {
            DEFAULT_PROMPTS[i % DEFAULT_PROMPTS.len()].to_owned()
        } else {
            self.options.prompts[i % self.options.prompts.len()].clone()
        }
    }
}
