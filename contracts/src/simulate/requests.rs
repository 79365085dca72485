//! Sessions by sortition, the effectful part: the consumers' requests, the simulated workers'
//! claims and the session keys, around the pure decisions of [`super::sortition`].
//!
//! Throwaway sessions (the settle share) are requested with the ordinary ones before the first
//! job, so that they are claimed while workers are below capacity; a settle draw then takes the
//! next ready one (or waits for it).

use std::collections::{HashMap, VecDeque};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Log;
use alloy::sol_types::{SolCall, SolEventInterface};
use lcw_schema::bindings::{AIConfig, SessionManager, WorkerRegistry};
use lcw_schema::suite::{SessionKey, wrap_session_key};

use super::SimulateError;
use super::plan;
use super::run::{BLOBS_PER_TICK, QueuedJob, Result, Session, Sim, gas, read};
use super::sortition::{Candidate, ClaimRevert, ClaimRule, Head, Purpose, Requests, Step};
use crate::txs::Signed;

/// The run's sortition state: the SessionManager, the requests and what they wait for.
#[derive(Debug)]
pub(super) struct Sortition {
    pub(super) manager: Address,
    ttl: u64,
    pub(super) book: Requests,
    /// Registered encryption keys of claimers, read once each.
    worker_keys: HashMap<Address, Bytes>,
    /// Session keys provided, by request id, until the session is ready.
    keys: HashMap<u64, SessionKey>,
    /// Volume prompt blobs by request id (ordinary sessions of simulated winners).
    prompt_blobs: HashMap<u64, B256>,
    /// Claim transactions in flight: hash → (request id, worker).
    claims: HashMap<B256, (u64, Address)>,
    /// Requests to make again because their transaction failed.
    again: Vec<(Address, Purpose)>,
    /// Smallest block interval seen, and the last head (number, timestamp).
    interval: Option<u64>,
    last_head: Option<(u64, u64)>,
    /// Settle draws waiting for a ready throwaway session.
    settle_owed: u64,
    /// Ready throwaway sessions (indices into `Sim::sessions`) no draw has taken yet.
    spare_settle: VecDeque<usize>,
}

impl Sortition {
    /// The SessionManager AIConfig publishes.
    pub(super) async fn read(ai: &AIConfig::AIConfigInstance<&DynProvider>, ttl: u64) -> Result<Self> {
        let manager = ai.getSessionManagerAddress().call().await.map_err(read("getSessionManagerAddress"))?;
        if manager == Address::ZERO {
            return Err(SimulateError::Options(
                "sortition is on but AIConfig publishes no SessionManager (getSessionManagerAddress is zero)".into(),
            ));
        }
        Ok(Sortition {
            manager,
            ttl,
            book: Requests::default(),
            worker_keys: HashMap::new(),
            keys: HashMap::new(),
            prompt_blobs: HashMap::new(),
            claims: HashMap::new(),
            again: Vec::new(),
            interval: None,
            last_head: None,
            settle_owed: 0,
            spare_settle: VecDeque::new(),
        })
    }

    /// No request is on its way and no settle draw waits for a session.
    pub(super) fn settled(&self) -> bool {
        self.book.unsettled() == 0 && self.settle_owed == 0 && self.again.is_empty()
    }

    fn head(&mut self, block: u64, time: u64) -> Head {
        if let Some((b, t)) = self.last_head
            && block == b + 1
            && time > t
        {
            self.interval = Some(self.interval.map_or(time - t, |i| i.min(time - t)));
        }
        self.last_head = Some((block, time));
        Head { block, time, interval: self.interval.unwrap_or(1) }
    }
}

impl Sim {
    /// The first requests, sent in one batch: `--sessions` ordinary ones (default one per
    /// worker), consumers round-robin, and one throwaway per settle draw of the plan.
    pub(super) async fn open_requests(&mut self, head: u64) -> Result<()> {
        let Some(mut s) = self.sortition.take() else { return Ok(()) };
        let block =
            self.tx.provider().get_block_by_number(head.into()).await.map_err(read("block header"))?.ok_or_else(
                || SimulateError::Read { what: "block header".into(), message: format!("block {head} missing") },
            )?;
        self.chain_time = block.header.timestamp;
        let ordinary = self.options.sessions.unwrap_or(self.report.workers.len());
        let settles = (0..self.options.jobs).filter(|i| plan::is_settle(self.options.seed, *i, &self.options.shares));
        let purposes: Vec<Purpose> =
            std::iter::repeat_n(Purpose::Ordinary, ordinary).chain(settles.map(|_| Purpose::Settle)).collect();
        let mut out = Vec::new();
        for (i, purpose) in purposes.into_iter().enumerate() {
            let consumer = self.consumers[i % self.consumers.len()];
            self.sign_request(&mut s, consumer, purpose, 0, head, &mut out)?;
        }
        s.book.fill(&mut self.report);
        self.sortition = Some(s);
        for (signed, r) in out.iter().zip(self.tx.send(&out).await?) {
            if let Err(e) = r {
                return Err(SimulateError::Setup(format!("request sessions: the node refused {}: {e}", signed.hash)));
            }
        }
        self.report.transactions += out.len() as u64;
        Ok(())
    }

    fn sign_request(
        &mut self,
        s: &mut Sortition,
        consumer: Address,
        purpose: Purpose,
        round: u32,
        head: u64,
        out: &mut Vec<Signed>,
    ) -> Result<()> {
        let expiry = self.chain_time + s.ttl;
        let data = SessionManager::requestSessionCall { modelId: self.model, expiry: U256::from(expiry) }.abi_encode();
        let signed = self.tx.sign(&self.call(consumer, s.manager, data, U256::ZERO, gas::REQUEST_SESSION))?;
        self.sent.insert(signed.hash, (head, "requestSession"));
        s.book.sent(signed.hash, consumer, purpose, expiry, round);
        out.push(signed);
        Ok(())
    }

    /// The request loop's work at `head` (timestamp `time`): claims of the simulated workers whose
    /// turn comes with the next block, session keys for new claims, and new requests for expired
    /// (or failed) ones; signed into `out`.
    pub(super) async fn sortition_tick(&mut self, head: u64, time: u64, out: &mut Vec<Signed>) -> Result<()> {
        let Some(mut s) = self.sortition.take() else { return Ok(()) };
        let result = self.sortition_steps(&mut s, head, time, out).await;
        s.book.fill(&mut self.report);
        self.sortition = Some(s);
        result
    }

    async fn sortition_steps(&mut self, s: &mut Sortition, head: u64, time: u64, out: &mut Vec<Signed>) -> Result<()> {
        let at = s.head(head, time);
        for (consumer, purpose) in std::mem::take(&mut s.again) {
            self.sign_request(s, consumer, purpose, 1, head, out)?;
        }
        let (rule, candidates) = if s.book.any_open() && !self.world.simulated.is_empty() {
            self.claim_inputs().await?
        } else {
            (ClaimRule::default(), Vec::new())
        };
        let more_ordinary = self.planned < self.options.jobs;
        let steps = s.book.decide(at, &candidates, &rule, more_ordinary);
        let mut volume_prompts: Vec<(u64, Vec<u8>)> = Vec::new();
        for step in steps {
            match step {
                Step::Claim { req, worker, first_block } => {
                    let data = SessionManager::claimSessionCall { reqId: U256::from(req) }.abi_encode();
                    let signed = self.tx.sign(&self.call(worker, s.manager, data, U256::ZERO, gas::CLAIM_SESSION))?;
                    tracing::debug!(req, %worker, first_block, head, "claiming");
                    self.sent.insert(signed.hash, (head, "claimSession"));
                    s.claims.insert(signed.hash, (req, worker));
                    out.push(signed);
                }
                Step::Provide { req, consumer, worker, purpose } => {
                    let volume = purpose == Purpose::Ordinary
                        && self.options.auto_complete
                        && self.world.simulated.contains(&worker);
                    if let Some(key) = self.provide(s, req, consumer, worker, head, out).await?
                        && volume
                    {
                        let prompt = self.next_prompt();
                        volume_prompts.push((req, key.seal(prompt.as_bytes())));
                    }
                }
                Step::Expire { consumer, purpose, again } => {
                    tracing::info!(%consumer, ?purpose, again, "session request expired unready");
                    if again {
                        self.sign_request(s, consumer, purpose, 1, head, out)?;
                    }
                }
            }
        }
        // Volume mode: one prompt blob per session of a simulated worker, reused by all its jobs;
        // posted with the key, so it is mined by the time the session is ready.
        for chunk in volume_prompts.chunks(BLOBS_PER_TICK) {
            let refs: Vec<&[u8]> = chunk.iter().map(|(_, p)| p.as_slice()).collect();
            let sc = lcw_schema::blob::sidecar(&refs).map_err(|e| SimulateError::Payload(e.to_string()))?;
            let hashes = lcw_schema::blob::versioned_hashes(&sc);
            let signed = self.tx.sign_blob(self.dispatcher.address(), sc)?;
            for ((req, _), hash) in chunk.iter().zip(hashes) {
                s.prompt_blobs.insert(*req, hash);
            }
            self.report.blob_transactions += 1;
            self.sent.insert(signed.hash, (head, "prompt blob"));
            out.push(signed);
        }
        Ok(())
    }

    /// The claim window's parameters and the simulated workers' stake, eligibility and active
    /// jobs, read at the head: SessionManager reads them live, so a change mid-run counts at once.
    async fn claim_inputs(&self) -> Result<(ClaimRule, Vec<Candidate>)> {
        let ai = AIConfig::new(self.contracts.ai_config, self.tx.provider());
        let rule = ClaimRule {
            min_stake: ai.getMinWorkerStake().call().await.map_err(read("getMinWorkerStake"))?,
            window: ai.getClaimWindowBlocks().call().await.map_err(read("getClaimWindowBlocks"))?,
            max_jobs: ai.getMaxConcurrentJobs().call().await.map_err(read("getMaxConcurrentJobs"))?.saturating_to(),
        };
        let wr = WorkerRegistry::new(self.contracts.worker_registry, self.tx.provider());
        let mut workers: Vec<Address> = self.world.simulated.iter().copied().collect();
        workers.sort();
        let model = self.model;
        let reads = workers.into_iter().map(|worker| {
            let wr = &wr;
            async move {
                let stake = wr.getWorkerStake(worker).call().await.map_err(read("getWorkerStake"))?;
                let eligible = wr.isEligible(worker, model).call().await.map_err(read("isEligible"))?;
                let active = wr.getActiveJobCount(worker).call().await.map_err(read("getActiveJobCount"))?;
                Ok::<_, SimulateError>(Candidate { worker, stake, eligible, active_jobs: active.saturating_to() })
            }
        });
        Ok((rule, futures::future::try_join_all(reads).await?))
    }

    /// Signs `provideSessionKey` for request `req` with a new session key wrapped for `worker`'s
    /// registered key and the disputer's; returns the key (None when the worker's key cannot
    /// take a wrap: the request then expires and is made again).
    async fn provide(
        &mut self,
        s: &mut Sortition,
        req: u64,
        consumer: Address,
        worker: Address,
        head: u64,
        out: &mut Vec<Signed>,
    ) -> Result<Option<SessionKey>> {
        let worker_key = match s.worker_keys.get(&worker) {
            Some(k) => k.clone(),
            None => {
                let wr = WorkerRegistry::new(self.contracts.worker_registry, self.tx.provider());
                let k = wr.getWorkerEncryptionKey(worker).call().await.map_err(read("getWorkerEncryptionKey"))?;
                s.worker_keys.insert(worker, k.clone());
                k
            }
        };
        let key = SessionKey::generate();
        let enc_worker: Bytes = match wrap_session_key(&worker_key, &key) {
            Ok(w) => w.into(),
            Err(e) => {
                tracing::warn!(req, %worker, error = %e, "cannot wrap the session key for the claimer's registered key");
                return Ok(None);
            }
        };
        let enc_disputer: Bytes =
            wrap_session_key(&self.disputer_public, &key).map_err(|e| SimulateError::Payload(e.to_string()))?.into();
        let data = SessionManager::provideSessionKeyCall {
            reqId: U256::from(req),
            encWorkerKey: enc_worker,
            encDisputerKey: enc_disputer,
        }
        .abi_encode();
        let signed = self.tx.sign(&self.call(consumer, s.manager, data, U256::ZERO, gas::PROVIDE_KEY))?;
        self.sent.insert(signed.hash, (head, "provideSessionKey"));
        out.push(signed);
        s.keys.insert(req, SessionKey::from_bytes(*key.expose()));
        Ok(Some(key))
    }

    /// Applies a SessionManager log; true when one of the run's requests moved on.
    pub(super) fn apply_session_manager(&mut self, log: &Log) -> bool {
        use SessionManager::SessionManagerEvents as E;
        let Ok(decoded) = E::decode_log(&log.inner) else { return false };
        let Some(s) = self.sortition.as_mut() else { return false };
        let block = log.block_number.unwrap_or_default();
        let changed = match decoded.data {
            E::SessionRequested(ev) => {
                let (Some(tx), Some(seed)) = (log.transaction_hash, log.block_hash) else { return false };
                s.book.on_requested(tx, ev.reqId.saturating_to(), block, seed)
            }
            E::SessionClaimed(ev) => {
                if let Some(tx) = log.transaction_hash {
                    s.claims.remove(&tx);
                }
                s.book.on_claimed(ev.reqId.saturating_to(), ev.worker, block)
            }
            E::SessionReady(ev) => {
                let req = ev.reqId.saturating_to::<u64>();
                let Some(ready) = s.book.on_ready(req) else { return false };
                let session = Session {
                    id: ev.sessionId.saturating_to(),
                    consumer: ready.consumer,
                    worker: ready.worker,
                    key: s.keys.remove(&req).unwrap_or_else(SessionKey::generate),
                    prompt_blob: s.prompt_blobs.remove(&req),
                    pays: self.fee,
                };
                let settle = ready.purpose == Purpose::Settle;
                let index = self.sessions.len();
                if settle {
                    if s.settle_owed > 0 {
                        s.settle_owed -= 1;
                        self.queued.push_front(QueuedJob {
                            session: index,
                            blob: self.filler_blob,
                            blob_tx: B256::ZERO,
                        });
                    } else {
                        s.spare_settle.push_back(index);
                    }
                }
                self.add_session(session, settle);
                self.report.sessions += 1;
                if !self.report.workers.contains(&ready.worker) {
                    self.report.workers.push(ready.worker);
                }
                true
            }
            _ => false,
        };
        if let Some(s) = &self.sortition {
            s.book.fill(&mut self.report);
        }
        changed
    }

    /// A settle draw: its job goes on the next ready throwaway session (submitted and closed in
    /// one batch), or waits for one.
    pub(super) fn settle_on_spare_session(&mut self) {
        let Some(s) = self.sortition.as_mut() else { return };
        match s.spare_settle.pop_front() {
            Some(session) => self.queued.push_front(QueuedJob { session, blob: self.filler_blob, blob_tx: B256::ZERO }),
            None => s.settle_owed += 1,
        }
    }

    /// A claim transaction reverted in `block`; true when it lost the race (counted apart).
    pub(super) fn claim_lost(&mut self, hash: B256, block: u64) -> bool {
        let Some(s) = self.sortition.as_mut() else { return false };
        let Some((req, worker)) = s.claims.remove(&hash) else { return false };
        let lost = s.book.on_claim_reverted(req, worker, block) == ClaimRevert::Lost;
        s.book.fill(&mut self.report);
        if lost {
            tracing::debug!(req, %worker, block, "claim lost the race");
        }
        lost
    }

    /// A request transaction reverted or was given up on: make the request again next block.
    pub(super) fn request_lost(&mut self, hash: B256) {
        if let Some(s) = self.sortition.as_mut()
            && let Some(again) = s.book.on_request_lost(hash)
        {
            s.again.push(again);
        }
    }
}
