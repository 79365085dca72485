//! Applying one decoded event to the projections: the pure core of the indexer. Given the same
//! events in the same order it always produces the same rows, which is what `lcw replay` checks.
//!
//! Attribution: events that do not name their worker (JobReleased, DisputeResolved, ...) use the
//! job's worker from JobSubmitted. Events about jobs or sessions the store never saw (indexing
//! started after them) cannot be attributed and are counted in `unattributed`.
//!
//! SessionManager events go to `session_requests` through [`crate::sortition`].

use alloy::primitives::{Address, B256, U256};
use lcw_schema::rules::latency::Histogram;
use lcw_schema::store::ledger::{Bounty, ConfigChange, LogRef, Slash, Withdrawal};
use lcw_schema::store::rows::{CapabilityRow, JobRow, SessionRow};
use lcw_schema::store::{StoreError, StoreResult};
use lcw_schema::suite::Suite;
use lcw_schema::types::{JobState, SessionStatus};

use crate::cache::Projector;
use crate::decode::Event;

/// Where an event happened.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// Block number.
    pub block: u64,
    /// Log index.
    pub log_index: u64,
    /// Block timestamp.
    pub timestamp: u64,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Block hash (a session request's draw seed).
    pub block_hash: B256,
    /// The contract that emitted the log.
    pub contract: Address,
}

impl Meta {
    fn at(&self) -> LogRef {
        LogRef {
            block_number: self.block,
            log_index: self.log_index,
            block_timestamp: self.timestamp,
            tx_hash: self.tx_hash,
        }
    }
}

impl Projector<'_> {
    /// Applies one event.
    pub fn apply(&mut self, event: &Event, m: &Meta) -> StoreResult<()> {
        let (block, ts) = (m.block, m.timestamp);
        match event {
            Event::SessionCreated { session, user, model, worker, enc_worker_key, enc_disputer_key } => {
                self.put_session(SessionRow {
                    session_id: *session,
                    user: Some(*user),
                    model_id: Some(*model),
                    worker: Some(*worker),
                    status: SessionStatus::Active.as_str().into(),
                    enc_worker_key: Some(enc_worker_key.clone()),
                    enc_disputer_key: Some(enc_disputer_key.clone()),
                    job_count: 0,
                    created_block: Some(block),
                    created_at: Some(ts),
                    closed_block: None,
                    closed_at: None,
                    key_updated_block: None,
                    updated_block: block,
                })?;
            }
            Event::SessionAdopted { session, user, worker } => {
                let existing = self.session(*session)?.cloned();
                let mut row = existing.unwrap_or(SessionRow {
                    session_id: *session,
                    user: None,
                    model_id: None,
                    worker: None,
                    status: SessionStatus::Active.as_str().into(),
                    enc_worker_key: None,
                    enc_disputer_key: None,
                    job_count: 0,
                    created_block: Some(block),
                    created_at: Some(ts),
                    closed_block: None,
                    closed_at: None,
                    key_updated_block: None,
                    updated_block: block,
                });
                row.user = Some(*user);
                row.worker = Some(*worker);
                // The event carries neither the model nor the wrapped keys: getSession, read when
                // the log was indexed, does (absent for logs indexed before lcw fetched it).
                if let Some(s) = self.adopted_session(m.contract, *session)? {
                    row.model_id = Some(s.modelId);
                    row.enc_worker_key = Some(s.encWorkerKey);
                    row.enc_disputer_key = Some(s.encDisputerKey);
                }
                row.updated_block = block;
                self.put_session(row)?;
            }
            Event::SessionClosed { session } => match self.session_mut(*session)? {
                Some(s) => {
                    s.status = SessionStatus::Closed.as_str().into();
                    s.closed_block = Some(block);
                    s.closed_at = Some(ts);
                    s.updated_block = block;
                }
                None => self.unattributed += 1,
            },
            Event::SessionKeyUpdated { session, enc_worker_key, enc_disputer_key } => {
                match self.session_mut(*session)? {
                    Some(s) => {
                        s.enc_worker_key = Some(enc_worker_key.clone());
                        s.enc_disputer_key = Some(enc_disputer_key.clone());
                        s.key_updated_block = Some(block);
                        s.updated_block = block;
                    }
                    None => self.unattributed += 1,
                }
            }
            Event::SessionReassigned { session, worker } => match self.session_mut(*session)? {
                Some(s) => {
                    s.worker = Some(*worker);
                    s.updated_block = block;
                }
                None => self.unattributed += 1,
            },
            Event::JobSubmitted { job, session, worker } => self.job_submitted(*job, *session, *worker, m)?,
            Event::JobAcknowledged { job } => {
                let completion_timeout = self.param_u64("completionTimeout");
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.state = JobState::Acknowledged.as_str().into();
                j.acknowledged_block = Some(block);
                j.acknowledged_at = Some(ts);
                // A governance parameter: any u64, saturating rather than overflowing.
                j.deadline = completion_timeout.map(|t| ts.saturating_add(t));
                j.updated_block = block;
                let (worker, model, latency) = (j.worker, j.model_id, ts.saturating_sub(j.submitted_at));
                let r = self.rollup(ts, worker, model)?;
                r.acknowledged += 1;
                r.ack_latency_sum = r.ack_latency_sum.saturating_add(latency);
                r.ack_latency_count += 1;
                r.ack_latency_max = r.ack_latency_max.max(latency);
                r.ack_latency_hist = recorded(&r.ack_latency_hist, latency)?;
            }
            Event::JobCompleted { job, response_blob, ciphertext_hash } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.state = JobState::Completed.as_str().into();
                j.completed_block = Some(block);
                j.completed_at = Some(ts);
                j.response_blob_hash = Some(*response_blob);
                j.response_ciphertext_hash = Some(*ciphertext_hash);
                j.deadline = None;
                j.updated_block = block;
                let (worker, model, latency) = (j.worker, j.model_id, ts.saturating_sub(j.submitted_at));
                let r = self.rollup(ts, worker, model)?;
                r.completed += 1;
                r.completion_latency_sum = r.completion_latency_sum.saturating_add(latency);
                r.completion_latency_count += 1;
                r.completion_latency_max = r.completion_latency_max.max(latency);
                r.completion_latency_hist = recorded(&r.completion_latency_hist, latency)?;
            }
            Event::JobReleased { job, worker_share, protocol_share, fee_pool_share } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                let fee = *worker_share + *protocol_share + *fee_pool_share;
                j.state = JobState::Released.as_str().into();
                j.released_block = Some(block);
                j.released_at = Some(ts);
                j.release_tx = Some(m.tx_hash);
                j.worker_share_wei = Some(*worker_share);
                j.protocol_share_wei = Some(*protocol_share);
                j.fee_pool_share_wei = Some(*fee_pool_share);
                // A keeper bounty, if any, follows in the same transaction and is added then.
                j.fee_wei = Some(fee);
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                let w = self.worker_mut(worker, block)?;
                w.balance_wei += *worker_share;
                w.earned_wei += *worker_share;
                w.active_jobs -= 1;
                let r = self.rollup(ts, worker, model)?;
                r.released += 1;
                r.fees_wei += fee;
                r.worker_share_wei += *worker_share;
                r.protocol_share_wei += *protocol_share;
                r.fee_pool_share_wei += *fee_pool_share;
            }
            Event::KeeperBountyPaid { job, keeper, amount, kind } => {
                let worker = match self.job_mut(*job)? {
                    Some(j) => {
                        j.keeper = Some(*keeper);
                        j.keeper_bounty_wei = Some(*amount);
                        j.bounty_kind = Some(u64::from(*kind));
                        if *kind == 0 {
                            j.fee_wei = Some(j.fee_wei.unwrap_or_default() + *amount);
                        }
                        j.updated_block = block;
                        Some((j.worker, j.model_id))
                    }
                    None => {
                        self.unattributed += 1;
                        None
                    }
                };
                self.bounties.push(Bounty {
                    at: m.at(),
                    job_id: *job,
                    keeper: *keeper,
                    worker: worker.map(|w| w.0),
                    amount: *amount,
                    kind: *kind,
                });
                if let Some((w, model)) = worker {
                    let r = self.rollup(ts, w, model)?;
                    r.keeper_bounty_wei += *amount;
                    if *kind == 0 {
                        r.fees_wei += *amount;
                    }
                }
            }
            Event::JobTimedOut { job, slash } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                let reason = if j.state == JobState::Submitted.as_str() { "ack_timeout" } else { "completion_timeout" };
                j.state = JobState::TimedOut.as_str().into();
                j.timed_out_block = Some(block);
                j.timed_out_at = Some(ts);
                j.slash_wei = Some(*slash);
                j.deadline = None;
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                self.claim_slash(m, *job, reason);
                self.worker_mut(worker, block)?.active_jobs -= 1;
                let r = self.rollup(ts, worker, model)?;
                r.timed_out += 1;
                r.slashed_wei += *slash;
            }
            Event::JobSettledNoFault { job, refund } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.state = JobState::TimedOut.as_str().into();
                j.settled_no_fault = true;
                j.timed_out_block = Some(block);
                j.timed_out_at = Some(ts);
                j.refund_wei = Some(*refund);
                j.deadline = None;
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                self.worker_mut(worker, block)?.active_jobs -= 1;
                self.rollup(ts, worker, model)?.settled += 1;
            }
            Event::RefundCredited { job, amount } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.refund_wei = Some(*amount);
                j.fee_wei = Some(*amount);
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                self.rollup(ts, worker, model)?.refunded_wei += *amount;
            }
            Event::DisputeCreated { job, disputer } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.state = JobState::Disputed.as_str().into();
                j.disputed_block = Some(block);
                j.disputed_at = Some(ts);
                j.disputer = Some(*disputer);
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                self.rollup(ts, worker, model)?.disputed += 1;
            }
            Event::DisputeResolved { job, guilty, score } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.state = JobState::Resolved.as_str().into();
                j.resolved_block = Some(block);
                j.resolved_at = Some(ts);
                j.guilty = Some(*guilty);
                j.similarity_score = Some(*score);
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                if *guilty {
                    self.claim_slash(m, *job, "dispute");
                    self.worker_mut(worker, block)?.active_jobs -= 1;
                }
                let r = self.rollup(ts, worker, model)?;
                if *guilty {
                    r.guilty += 1;
                } else {
                    r.not_guilty += 1;
                }
            }
            Event::DisputeDefaulted { job } => {
                let Some(j) = self.job_mut(*job)? else { return self.unknown_job() };
                j.defaulted_block = Some(block);
                j.defaulted_at = Some(ts);
                j.updated_block = block;
                let (worker, model) = (j.worker, j.model_id);
                self.rollup(ts, worker, model)?.defaulted += 1;
            }
            Event::WorkerWithdrawal { worker, amount } => {
                let w = self.worker_mut(*worker, block)?;
                w.balance_wei = w.balance_wei.saturating_sub(*amount);
                w.withdrawn_wei += *amount;
                self.withdrawals.push(Withdrawal { at: m.at(), worker: *worker, amount: *amount });
            }
            Event::Paused(paused) => self.set_param(m, "paused", paused.to_string()),
            Event::WorkerRegistered { worker, key } => {
                let stake = self.tx_value(&m.tx_hash)?.unwrap_or_default();
                let w = self.worker_mut(*worker, block)?;
                w.registered = true;
                w.encryption_key = Some(key.clone());
                w.suite = Suite::for_public_key(key).ok().map(|s| s.name().to_owned());
                w.stake_wei = stake;
                w.registered_block = Some(block);
                w.registered_at = Some(ts);
            }
            Event::WorkerDeregistered { worker } => {
                let w = self.worker_mut(*worker, block)?;
                w.registered = false;
                w.stake_wei = U256::ZERO;
                w.encryption_key = None;
                w.suite = None;
                w.deregistered_block = Some(block);
                w.deregistered_at = Some(ts);
            }
            Event::WorkerDeactivated { worker } => self.worker_mut(*worker, block)?.deactivated = true,
            Event::WorkerSlashed { worker, amount, new_stake } => {
                let min = self.param_u256("minWorkerStake");
                let w = self.worker_mut(*worker, block)?;
                w.stake_wei = *new_stake;
                w.slash_count += 1;
                w.offense_count += 1;
                w.slashed_wei += *amount;
                if let Some(min) = min {
                    w.deactivated = *new_stake < min;
                }
                self.slashes.push(Slash {
                    at: m.at(),
                    worker: *worker,
                    amount: *amount,
                    new_stake: *new_stake,
                    job_id: None,
                    reason: "other".into(),
                });
                self.last_slash = Some((m.tx_hash, self.slashes.len() - 1));
            }
            Event::WorkerSuspended { worker, until } => self.worker_mut(*worker, block)?.suspended_until = *until,
            Event::WorkerReinstated { worker } => self.worker_mut(*worker, block)?.suspended_until = 0,
            Event::OffensesReset { worker } => self.worker_mut(*worker, block)?.offense_count = 0,
            Event::StakeChanged { worker, new_stake } => {
                let min = self.param_u256("minWorkerStake");
                let w = self.worker_mut(*worker, block)?;
                w.stake_wei = *new_stake;
                if let Some(min) = min {
                    w.deactivated = *new_stake < min;
                }
            }
            Event::ModelAdded { worker, model } => self.add_worker_model(*worker, *model, block)?,
            Event::ModelRemoved { worker, model } => self.remove_worker_model(*worker, *model)?,
            Event::ModelWhitelisted { model, whitelisted } => self.model_mut(*model, block)?.whitelisted = *whitelisted,
            Event::ModelRegistered { model, fee, max_output_tokens } => {
                let row = self.model_mut(*model, block)?;
                row.registered = true;
                row.enabled = true;
                row.fee_wei = Some(*fee);
                row.max_output_tokens = u64::try_from(*max_output_tokens).ok();
            }
            Event::ModelConfigUpdated { model, fee, max_output_tokens } => {
                let row = self.model_mut(*model, block)?;
                row.fee_wei = Some(*fee);
                row.max_output_tokens = u64::try_from(*max_output_tokens).ok();
            }
            Event::ModelEnabled { model, enabled } => self.model_mut(*model, block)?.enabled = *enabled,
            Event::WorkerCapabilitiesSet { worker, mask } => self.worker_mut(*worker, block)?.capabilities = *mask,
            Event::CapabilityRegistered { bit, name } => self.put_capability(CapabilityRow {
                bit: u64::from(*bit),
                name: name.clone(),
                registered_block: block,
            })?,
            Event::SessionRequested { manager, req, user, model, request_block } => {
                self.session_requested(*manager, *req, *user, *model, *request_block, m)?
            }
            Event::SessionClaimed { manager, req, worker } => self.session_claimed(*manager, *req, *worker, m)?,
            Event::SessionReady { manager, req, session } => self.session_ready(*manager, *req, *session, m)?,
            Event::Config(pairs) => {
                for (param, value) in pairs {
                    self.set_param(m, param, value.clone());
                }
            }
            Event::InfraParam { name, value } => self.set_param(m, name, value.to_string()),
            Event::Other => {}
        }
        Ok(())
    }

    fn unknown_job(&mut self) -> StoreResult<()> {
        self.unattributed += 1;
        Ok(())
    }

    fn set_param(&mut self, m: &Meta, param: &str, value: String) {
        self.params.insert(param.to_owned(), value.clone());
        self.config.push(ConfigChange { at: m.at(), param: param.to_owned(), value });
    }

    /// Attributes the WorkerSlashed of this transaction to `job`.
    fn claim_slash(&mut self, m: &Meta, job: u64, reason: &str) {
        if let Some((tx, i)) = self.last_slash
            && tx == m.tx_hash
            && let Some(s) = self.slashes.get_mut(i)
        {
            s.job_id = Some(job);
            s.reason = reason.to_owned();
            self.last_slash = None;
        }
    }

    fn job_submitted(
        &mut self,
        job: u64,
        session: u64,
        worker: alloy::primitives::Address,
        m: &Meta,
    ) -> StoreResult<()> {
        let (block, ts) = (m.block, m.timestamp);
        let (consumer, model) = match self.session_mut(session)? {
            Some(s) => {
                s.job_count += 1;
                s.updated_block = block;
                (s.user, s.model_id)
            }
            None => {
                self.unattributed += 1;
                (None, None)
            }
        };
        let fee = match model {
            Some(id) => self.model(id)?.and_then(|r| r.fee_wei),
            None => None,
        };
        let deadline = self.param_u64("ackTimeout").map(|t| ts.saturating_add(t));
        self.put_job(JobRow {
            job_id: job,
            session_id: session,
            worker,
            consumer,
            model_id: model,
            state: JobState::Submitted.as_str().into(),
            fee_wei: fee,
            deadline,
            submitted_block: block,
            submitted_at: ts,
            submit_tx: m.tx_hash,
            acknowledged_block: None,
            acknowledged_at: None,
            completed_block: None,
            completed_at: None,
            response_blob_hash: None,
            response_ciphertext_hash: None,
            disputed_block: None,
            disputed_at: None,
            disputer: None,
            resolved_block: None,
            resolved_at: None,
            guilty: None,
            similarity_score: None,
            defaulted_block: None,
            defaulted_at: None,
            timed_out_block: None,
            timed_out_at: None,
            settled_no_fault: false,
            slash_wei: None,
            refund_wei: None,
            released_block: None,
            released_at: None,
            release_tx: None,
            worker_share_wei: None,
            protocol_share_wei: None,
            fee_pool_share_wei: None,
            keeper: None,
            keeper_bounty_wei: None,
            bounty_kind: None,
            updated_block: block,
        })?;
        self.worker_mut(worker, block)?.active_jobs += 1;
        self.rollup(ts, worker, model)?.submitted += 1;
        Ok(())
    }
}

/// `hist` with one more latency of `secs` (see [`lcw_schema::rules::latency`]).
fn recorded(hist: &str, secs: u64) -> StoreResult<String> {
    Histogram::recorded(hist, secs)
        .map_err(|e| StoreError::Corrupt { what: "rollups_hourly latency histogram".into(), value: e.0 })
}
