//! Decoding: a log of a watched contract into a typed [`Event`], with the name and job id the raw
//! layer stores. A log that cannot be decoded (unknown event, malformed data, an id out of range)
//! is not an error: it is kept raw with the reason, counted and reported.
//!
//! A log of an address that is none of the profile's three contracts is a SessionManager's: the
//! raw layer only ever holds logs of watched addresses, and the only others watched are the
//! SessionManagers AIConfig publishes (see [`crate::watch`]). So decoding, and replay, need no
//! list of managers.

use alloy::primitives::{Address, B256, Bytes, Log, U256};
use alloy::sol_types::SolEventInterface;
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Contracts;

alloy::sol! {
    /// Legacy names of WorkerSuspended / WorkerReinstated still listed by LightChain's docs.
    #[derive(Debug)]
    interface LegacyWorkerRegistry {
        event WorkerJailed(address indexed worker, uint256 until);
        event WorkerUnjailed(address indexed worker);
    }
}

/// A decoded event, reduced to what the projections need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Event {
    SessionCreated {
        session: u64,
        user: Address,
        model: B256,
        worker: Address,
        enc_worker_key: Bytes,
        enc_disputer_key: Bytes,
    },
    SessionAdopted {
        session: u64,
        user: Address,
        worker: Address,
    },
    SessionClosed {
        session: u64,
    },
    SessionKeyUpdated {
        session: u64,
        enc_worker_key: Bytes,
        enc_disputer_key: Bytes,
    },
    SessionReassigned {
        session: u64,
        worker: Address,
    },
    JobSubmitted {
        job: u64,
        session: u64,
        worker: Address,
    },
    JobAcknowledged {
        job: u64,
    },
    JobCompleted {
        job: u64,
        response_blob: B256,
        ciphertext_hash: B256,
    },
    JobReleased {
        job: u64,
        worker_share: U256,
        protocol_share: U256,
        fee_pool_share: U256,
    },
    JobTimedOut {
        job: u64,
        slash: U256,
    },
    JobSettledNoFault {
        job: u64,
        refund: U256,
    },
    KeeperBountyPaid {
        job: u64,
        keeper: Address,
        amount: U256,
        kind: u8,
    },
    DisputeCreated {
        job: u64,
        disputer: Address,
    },
    DisputeResolved {
        job: u64,
        guilty: bool,
        score: U256,
    },
    DisputeDefaulted {
        job: u64,
    },
    RefundCredited {
        job: u64,
        amount: U256,
    },
    WorkerWithdrawal {
        worker: Address,
        amount: U256,
    },
    Paused(bool),
    WorkerRegistered {
        worker: Address,
        key: Bytes,
    },
    WorkerDeregistered {
        worker: Address,
    },
    WorkerDeactivated {
        worker: Address,
    },
    WorkerSlashed {
        worker: Address,
        amount: U256,
        new_stake: U256,
    },
    WorkerSuspended {
        worker: Address,
        until: u64,
    },
    WorkerReinstated {
        worker: Address,
    },
    OffensesReset {
        worker: Address,
    },
    StakeChanged {
        worker: Address,
        new_stake: U256,
    },
    ModelAdded {
        worker: Address,
        model: B256,
    },
    ModelRemoved {
        worker: Address,
        model: B256,
    },
    ModelWhitelisted {
        model: B256,
        whitelisted: bool,
    },
    ModelRegistered {
        model: B256,
        fee: U256,
        max_output_tokens: U256,
    },
    ModelConfigUpdated {
        model: B256,
        fee: U256,
        max_output_tokens: U256,
    },
    ModelEnabled {
        model: B256,
        enabled: bool,
    },
    WorkerCapabilitiesSet {
        worker: Address,
        mask: U256,
    },
    CapabilityRegistered {
        bit: u8,
        name: String,
    },
    /// SessionManager events carry the manager that emitted them: request ids are per manager.
    SessionRequested {
        manager: Address,
        req: u64,
        user: Address,
        model: B256,
        request_block: u64,
    },
    SessionClaimed {
        manager: Address,
        req: u64,
        worker: Address,
    },
    SessionReady {
        manager: Address,
        req: u64,
        session: u64,
    },
    /// AIConfig parameter changes: (parameter, value).
    Config(Vec<(&'static str, String)>),
    /// `InfraParamsUpdated(name, value)`: a parameter named on chain.
    InfraParam {
        name: String,
        value: U256,
    },
    /// Decoded, but no projection depends on it (consumer balances, administration).
    Other,
}

/// The result of decoding one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Event name; None when undecodable.
    pub name: Option<&'static str>,
    /// The job it is about.
    pub job_id: Option<u64>,
    /// The event, or why it could not be decoded.
    pub event: Result<Event, String>,
}

impl Decoded {
    fn ok(name: &'static str, job_id: Option<u64>, event: Event) -> Self {
        Decoded { name: Some(name), job_id, event: Ok(event) }
    }

    fn fail(reason: String) -> Self {
        Decoded { name: None, job_id: None, event: Err(reason) }
    }
}

fn id(v: U256, what: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what} {v} does not fit 64 bits"))
}

fn secs(v: U256) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Decodes logs of the watched contracts.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    contracts: Contracts,
}

impl Decoder {
    /// A decoder for these contract addresses.
    pub fn new(contracts: Contracts) -> Self {
        Decoder { contracts }
    }

    /// Decodes one log by its address and topic0.
    pub fn decode(&self, log: &Log) -> Decoded {
        let a = log.address;
        let r = if a == self.contracts.job_registry {
            Self::job_registry(log)
        } else if a == self.contracts.worker_registry {
            Self::worker_registry(log)
        } else if a == self.contracts.ai_config {
            Self::ai_config(log)
        } else {
            Self::session_manager(log)
        };
        r.unwrap_or_else(Decoded::fail)
    }

    fn job_registry(log: &Log) -> Result<Decoded, String> {
        use JobRegistry::JobRegistryEvents as E;
        let ev = E::decode_log(log).map_err(|e| format!("JobRegistry: {e}"))?.data;
        Ok(match ev {
            E::SessionCreated(e) => Decoded::ok(
                "SessionCreated",
                None,
                Event::SessionCreated {
                    session: id(e.sessionId, "session id")?,
                    user: e.user,
                    model: e.modelId,
                    worker: e.worker,
                    enc_worker_key: e.encWorkerKey,
                    enc_disputer_key: e.encDisputerKey,
                },
            ),
            E::SessionAdopted(e) => Decoded::ok(
                "SessionAdopted",
                None,
                Event::SessionAdopted { session: id(e.sessionId, "session id")?, user: e.user, worker: e.worker },
            ),
            E::SessionClosed(e) => {
                Decoded::ok("SessionClosed", None, Event::SessionClosed { session: id(e.sessionId, "session id")? })
            }
            E::SessionKeyUpdated(e) => Decoded::ok(
                "SessionKeyUpdated",
                None,
                Event::SessionKeyUpdated {
                    session: id(e.sessionId, "session id")?,
                    enc_worker_key: e.encWorkerKey,
                    enc_disputer_key: e.encDisputerKey,
                },
            ),
            E::SessionReassigned(e) => Decoded::ok(
                "SessionReassigned",
                None,
                Event::SessionReassigned { session: id(e.sessionId, "session id")?, worker: e.newWorker },
            ),
            E::JobSubmitted(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok(
                    "JobSubmitted",
                    Some(job),
                    Event::JobSubmitted { job, session: id(e.sessionId, "session id")?, worker: e.worker },
                )
            }
            E::JobAcknowledged(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok("JobAcknowledged", Some(job), Event::JobAcknowledged { job })
            }
            E::JobCompleted(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok(
                    "JobCompleted",
                    Some(job),
                    Event::JobCompleted {
                        job,
                        response_blob: e.responseBlobHash,
                        ciphertext_hash: e.responseCiphertextHash,
                    },
                )
            }
            E::JobReleased(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok(
                    "JobReleased",
                    Some(job),
                    Event::JobReleased {
                        job,
                        worker_share: e.workerShare,
                        protocol_share: e.protocolShare,
                        fee_pool_share: e.feePoolShare,
                    },
                )
            }
            E::JobTimedOut(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok("JobTimedOut", Some(job), Event::JobTimedOut { job, slash: e.slashAmount })
            }
            E::JobSettledNoFault(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok("JobSettledNoFault", Some(job), Event::JobSettledNoFault { job, refund: e.refundAmount })
            }
            E::KeeperBountyPaid(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok(
                    "KeeperBountyPaid",
                    Some(job),
                    Event::KeeperBountyPaid { job, keeper: e.keeper, amount: e.amount, kind: e.kind },
                )
            }
            E::DisputeCreated(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok("DisputeCreated", Some(job), Event::DisputeCreated { job, disputer: e.disputer })
            }
            E::DisputeResolved(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok(
                    "DisputeResolved",
                    Some(job),
                    Event::DisputeResolved { job, guilty: e.workerGuilty, score: e.similarityScore },
                )
            }
            E::DisputeDefaulted(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok("DisputeDefaulted", Some(job), Event::DisputeDefaulted { job })
            }
            E::RefundCreditedToBalance(e) => {
                let job = id(e.jobId, "job id")?;
                Decoded::ok("RefundCreditedToBalance", Some(job), Event::RefundCredited { job, amount: e.amount })
            }
            E::FeeDistributed(e) => Decoded::ok("FeeDistributed", Some(id(e.jobId, "job id")?), Event::Other),
            E::WorkerWithdrawal(e) => {
                Decoded::ok("WorkerWithdrawal", None, Event::WorkerWithdrawal { worker: e.worker, amount: e.amount })
            }
            E::Paused(_) => Decoded::ok("Paused", None, Event::Paused(true)),
            E::Unpaused(_) => Decoded::ok("Unpaused", None, Event::Paused(false)),
            E::Deposited(_) => Decoded::ok("Deposited", None, Event::Other),
            E::Withdrew(_) => Decoded::ok("Withdrew", None, Event::Other),
            E::RefundClaimed(_) => Decoded::ok("RefundClaimed", None, Event::Other),
            E::RefundEscrowed(_) => Decoded::ok("RefundEscrowed", None, Event::Other),
            E::TransferFailed(_) => Decoded::ok("TransferFailed", None, Event::Other),
            E::DelegateAllowanceSet(_) => Decoded::ok("DelegateAllowanceSet", None, Event::Other),
            E::DelegateAuthorizationSet(_) => Decoded::ok("DelegateAuthorizationSet", None, Event::Other),
            E::ReputationRegistryUpdated(_) => Decoded::ok("ReputationRegistryUpdated", None, Event::Other),
            E::GuardianUpdated(_) => Decoded::ok("GuardianUpdated", None, Event::Other),
            E::Upgraded(_) => Decoded::ok("Upgraded", None, Event::Other),
            E::Initialized(_) => Decoded::ok("Initialized", None, Event::Other),
            E::OwnershipTransferred(_) => Decoded::ok("OwnershipTransferred", None, Event::Other),
        })
    }

    fn worker_registry(log: &Log) -> Result<Decoded, String> {
        use WorkerRegistry::WorkerRegistryEvents as E;
        let ev = match E::decode_log(log) {
            Ok(ev) => ev.data,
            Err(e) => {
                use LegacyWorkerRegistry::LegacyWorkerRegistryEvents as L;
                return match L::decode_log(log).map(|l| l.data) {
                    Ok(L::WorkerJailed(j)) => Ok(Decoded::ok(
                        "WorkerJailed",
                        None,
                        Event::WorkerSuspended { worker: j.worker, until: secs(j.until) },
                    )),
                    Ok(L::WorkerUnjailed(j)) => {
                        Ok(Decoded::ok("WorkerUnjailed", None, Event::WorkerReinstated { worker: j.worker }))
                    }
                    Err(_) => Err(format!("WorkerRegistry: {e}")),
                };
            }
        };
        Ok(match ev {
            E::WorkerRegistered(e) => Decoded::ok(
                "WorkerRegistered",
                None,
                Event::WorkerRegistered { worker: e.worker, key: e.encryptionPubKey },
            ),
            E::WorkerDeregistered(e) => {
                Decoded::ok("WorkerDeregistered", None, Event::WorkerDeregistered { worker: e.worker })
            }
            E::WorkerDeactivated(e) => {
                Decoded::ok("WorkerDeactivated", None, Event::WorkerDeactivated { worker: e.worker })
            }
            E::WorkerSlashed(e) => Decoded::ok(
                "WorkerSlashed",
                None,
                Event::WorkerSlashed { worker: e.worker, amount: e.amount, new_stake: e.newStake },
            ),
            E::WorkerSuspended(e) => {
                Decoded::ok("WorkerSuspended", None, Event::WorkerSuspended { worker: e.worker, until: secs(e.until) })
            }
            E::WorkerReinstated(e) => {
                Decoded::ok("WorkerReinstated", None, Event::WorkerReinstated { worker: e.worker })
            }
            E::OffensesReset(e) => Decoded::ok("OffensesReset", None, Event::OffensesReset { worker: e.worker }),
            E::StakeTopUp(e) => {
                Decoded::ok("StakeTopUp", None, Event::StakeChanged { worker: e.worker, new_stake: e.newStake })
            }
            E::StakeWithdrawn(e) => {
                Decoded::ok("StakeWithdrawn", None, Event::StakeChanged { worker: e.worker, new_stake: e.newStake })
            }
            E::ModelAdded(e) => {
                Decoded::ok("ModelAdded", None, Event::ModelAdded { worker: e.worker, model: e.modelId })
            }
            E::ModelRemoved(e) => {
                Decoded::ok("ModelRemoved", None, Event::ModelRemoved { worker: e.worker, model: e.modelId })
            }
            E::ModelWhitelisted(e) => {
                Decoded::ok("ModelWhitelisted", None, Event::ModelWhitelisted { model: e.modelId, whitelisted: true })
            }
            E::ModelDelisted(e) => {
                Decoded::ok("ModelDelisted", None, Event::ModelWhitelisted { model: e.modelId, whitelisted: false })
            }
            E::SlashedFundsWithdrawn(_) => Decoded::ok("SlashedFundsWithdrawn", None, Event::Other),
            E::WorkerCapabilitiesSet(e) => Decoded::ok(
                "WorkerCapabilitiesSet",
                None,
                Event::WorkerCapabilitiesSet { worker: e.worker, mask: e.mask },
            ),
            E::CapabilityRegistered(e) => {
                Decoded::ok("CapabilityRegistered", None, Event::CapabilityRegistered { bit: e.bit, name: e.name })
            }
            E::GuardianUpdated(_) => Decoded::ok("GuardianUpdated", None, Event::Other),
            E::Paused(_) => Decoded::ok("Paused", None, Event::Other),
            E::Unpaused(_) => Decoded::ok("Unpaused", None, Event::Other),
            E::Upgraded(_) => Decoded::ok("Upgraded", None, Event::Other),
            E::Initialized(_) => Decoded::ok("Initialized", None, Event::Other),
            E::OwnershipTransferred(_) => Decoded::ok("OwnershipTransferred", None, Event::Other),
        })
    }

    fn session_manager(log: &Log) -> Result<Decoded, String> {
        use SessionManager::SessionManagerEvents as E;
        let manager = log.address;
        let ev = E::decode_log(log).map_err(|e| format!("SessionManager {manager}: {e}"))?.data;
        Ok(match ev {
            E::SessionRequested(e) => Decoded::ok(
                "SessionRequested",
                None,
                Event::SessionRequested {
                    manager,
                    req: id(e.reqId, "request id")?,
                    user: e.user,
                    model: e.modelId,
                    request_block: id(e.requestBlock, "request block")?,
                },
            ),
            E::SessionClaimed(e) => Decoded::ok(
                "SessionClaimed",
                None,
                Event::SessionClaimed { manager, req: id(e.reqId, "request id")?, worker: e.worker },
            ),
            E::SessionReady(e) => Decoded::ok(
                "SessionReady",
                None,
                Event::SessionReady {
                    manager,
                    req: id(e.reqId, "request id")?,
                    session: id(e.sessionId, "session id")?,
                },
            ),
            E::Initialized(_) => Decoded::ok("Initialized", None, Event::Other),
            E::Upgraded(_) => Decoded::ok("Upgraded", None, Event::Other),
            E::OwnershipTransferred(_) => Decoded::ok("OwnershipTransferred", None, Event::Other),
        })
    }

    fn ai_config(log: &Log) -> Result<Decoded, String> {
        use AIConfig::AIConfigEvents as E;
        let ev = E::decode_log(log).map_err(|e| format!("AIConfig: {e}"))?.data;
        let n = |v: U256| v.to_string();
        let config =
            |name: &'static str, pairs: Vec<(&'static str, String)>| Decoded::ok(name, None, Event::Config(pairs));
        Ok(match ev {
            E::DisputeParamsUpdated(e) => config(
                "DisputeParamsUpdated",
                vec![
                    ("disputeBondMultiplier", n(e.bondMultiplier)),
                    ("disputeWindow", n(e.window)),
                    ("resolutionTimeout", n(e.resolutionTimeout)),
                ],
            ),
            E::ClaimWindowBlocksUpdated(e) => {
                config("ClaimWindowBlocksUpdated", vec![("claimWindowBlocks", n(e.value))])
            }
            E::DispatcherAddressUpdated(e) => {
                config("DispatcherAddressUpdated", vec![("dispatcher", e.newDispatcher.to_string())])
            }
            E::DisputerAddressUpdated(e) => {
                config("DisputerAddressUpdated", vec![("disputer", e.newDisputer.to_string())])
            }
            E::FeeDistributionUpdated(e) => config(
                "FeeDistributionUpdated",
                vec![
                    ("workerFeeBps", n(e.workerBps)),
                    ("protocolFeeBps", n(e.protocolBps)),
                    ("feePoolBps", n(e.feePoolBps)),
                ],
            ),
            E::KeeperParamsUpdated(e) => config(
                "KeeperParamsUpdated",
                vec![("timeoutBountyBps", n(e.timeoutBountyBps)), ("releaseBountyBps", n(e.releaseBountyBps))],
            ),
            E::MaxConcurrentJobsUpdated(e) => {
                config("MaxConcurrentJobsUpdated", vec![("maxConcurrentJobs", n(e.value))])
            }
            E::MinWorkerStakeUpdated(e) => config("MinWorkerStakeUpdated", vec![("minWorkerStake", n(e.newStake))]),
            E::SessionManagerAddressUpdated(e) => {
                config("SessionManagerAddressUpdated", vec![("sessionManager", e.value.to_string())])
            }
            E::SlashingParamsUpdated(e) => config(
                "SlashingParamsUpdated",
                vec![
                    ("timeoutSlashBps", n(e.timeoutSlashBps)),
                    ("completionTimeoutSlashBps", n(e.completionTimeoutSlashBps)),
                    ("disputeSlashBps", n(e.disputeSlashBps)),
                ],
            ),
            E::SortitionEnabledUpdated(e) => {
                config("SortitionEnabledUpdated", vec![("sortitionEnabled", e.enabled.to_string())])
            }
            E::SuspensionParamsUpdated(e) => config(
                "SuspensionParamsUpdated",
                vec![("suspensionThreshold", n(e.threshold)), ("suspensionCooldown", n(e.cooldown))],
            ),
            E::InfraParamsUpdated(e) => {
                Decoded::ok("InfraParamsUpdated", None, Event::InfraParam { name: e.param, value: e.value })
            }
            E::ModelRegistered(e) => Decoded::ok(
                "ModelRegistered",
                None,
                Event::ModelRegistered { model: e.modelId, fee: e.fee, max_output_tokens: e.maxOutputTokens },
            ),
            E::ModelConfigUpdated(e) => Decoded::ok(
                "ModelConfigUpdated",
                None,
                Event::ModelConfigUpdated { model: e.modelId, fee: e.fee, max_output_tokens: e.maxOutputTokens },
            ),
            E::ModelEnabled(e) => {
                Decoded::ok("ModelEnabled", None, Event::ModelEnabled { model: e.modelId, enabled: true })
            }
            E::ModelDisabled(e) => {
                Decoded::ok("ModelDisabled", None, Event::ModelEnabled { model: e.modelId, enabled: false })
            }
            E::Initialized(_) => Decoded::ok("Initialized", None, Event::Other),
            E::Upgraded(_) => Decoded::ok("Upgraded", None, Event::Other),
            E::OwnershipTransferred(_) => Decoded::ok("OwnershipTransferred", None, Event::Other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{LogData, address};
    use alloy::sol_types::SolEvent;

    fn contracts() -> Contracts {
        Contracts {
            worker_registry: address!("0x00000000000000000000000000000000000000a1"),
            job_registry: address!("0x00000000000000000000000000000000000000a2"),
            ai_config: address!("0x00000000000000000000000000000000000000a3"),
        }
    }

    fn log_of<E: SolEvent>(address: Address, e: &E) -> Log {
        Log { address, data: e.encode_log_data() }
    }

    #[test]
    fn decodes_job_events_with_their_job_id() {
        let d = Decoder::new(contracts());
        let e = JobRegistry::JobSubmitted {
            jobId: U256::from(7),
            sessionId: U256::from(3),
            worker: Address::repeat_byte(9),
        };
        let out = d.decode(&log_of(contracts().job_registry, &e));
        assert_eq!(out.name, Some("JobSubmitted"));
        assert_eq!(out.job_id, Some(7));
        assert_eq!(out.event, Ok(Event::JobSubmitted { job: 7, session: 3, worker: Address::repeat_byte(9) }));
    }

    #[test]
    fn dispute_params_become_three_parameter_changes() {
        let d = Decoder::new(contracts());
        let e = AIConfig::DisputeParamsUpdated {
            bondMultiplier: U256::from(2),
            window: U256::from(600),
            resolutionTimeout: U256::from(60),
        };
        let out = d.decode(&log_of(contracts().ai_config, &e));
        let Ok(Event::Config(pairs)) = out.event else { panic!("{out:?}") };
        assert!(pairs.contains(&("disputeWindow", "600".into())));
    }

    #[test]
    fn legacy_jailed_names_decode_as_suspension() {
        let d = Decoder::new(contracts());
        let e = LegacyWorkerRegistry::WorkerJailed { worker: Address::repeat_byte(1), until: U256::from(99) };
        let out = d.decode(&log_of(contracts().worker_registry, &e));
        assert_eq!(out.event, Ok(Event::WorkerSuspended { worker: Address::repeat_byte(1), until: 99 }));
    }

    #[test]
    fn unknown_and_malformed_logs_are_reported_not_fatal() {
        let d = Decoder::new(contracts());
        let unknown = Log {
            address: contracts().job_registry,
            data: LogData::new_unchecked(vec![B256::repeat_byte(1)], Bytes::new()),
        };
        let out = d.decode(&unknown);
        assert_eq!(out.name, None);
        assert!(out.event.unwrap_err().contains("JobRegistry"));
        // Right topic0, truncated data.
        let mut bad = log_of(
            contracts().job_registry,
            &JobRegistry::JobReleased {
                jobId: U256::from(1),
                workerShare: U256::from(1),
                protocolShare: U256::from(1),
                feePoolShare: U256::from(1),
            },
        );
        bad.data = LogData::new_unchecked(bad.data.topics().to_vec(), Bytes::from(vec![0u8; 5]));
        assert!(d.decode(&bad).event.is_err());
        let huge = JobRegistry::JobAcknowledged { jobId: U256::MAX, worker: Address::ZERO };
        assert!(d.decode(&log_of(contracts().job_registry, &huge)).event.unwrap_err().contains("64 bits"));
        // Any other address is a SessionManager: a JobRegistry event from it is not one of its.
        let other = d.decode(&log_of(Address::repeat_byte(5), &huge));
        let reason = other.event.unwrap_err();
        assert!(reason.contains("SessionManager") && reason.contains(&Address::repeat_byte(5).to_string()), "{reason}");
    }

    #[test]
    fn session_manager_events_decode_with_the_manager_that_emitted_them() {
        let d = Decoder::new(contracts());
        let manager = Address::repeat_byte(0x5e);
        let requested = SessionManager::SessionRequested {
            reqId: U256::from(4),
            user: Address::repeat_byte(0xc1),
            modelId: B256::repeat_byte(7),
            requestBlock: U256::from(120),
        };
        let out = d.decode(&log_of(manager, &requested));
        assert_eq!(out.name, Some("SessionRequested"));
        assert_eq!(out.job_id, None);
        assert_eq!(
            out.event,
            Ok(Event::SessionRequested {
                manager,
                req: 4,
                user: Address::repeat_byte(0xc1),
                model: B256::repeat_byte(7),
                request_block: 120,
            })
        );
        let claimed = SessionManager::SessionClaimed { reqId: U256::from(4), worker: Address::repeat_byte(0xa1) };
        let out = d.decode(&log_of(manager, &claimed));
        assert_eq!(out.name, Some("SessionClaimed"));
        assert_eq!(out.event, Ok(Event::SessionClaimed { manager, req: 4, worker: Address::repeat_byte(0xa1) }));
        let ready = SessionManager::SessionReady { reqId: U256::from(4), sessionId: U256::from(9) };
        let out = d.decode(&log_of(manager, &ready));
        assert_eq!(out.name, Some("SessionReady"));
        assert_eq!(out.event, Ok(Event::SessionReady { manager, req: 4, session: 9 }));
        // Ids out of range are kept raw, not truncated.
        let huge = SessionManager::SessionReady { reqId: U256::MAX, sessionId: U256::from(1) };
        assert!(d.decode(&log_of(manager, &huge)).event.unwrap_err().contains("64 bits"));
        // SessionRequested from a profile contract is not a SessionManager's.
        assert!(d.decode(&log_of(contracts().job_registry, &requested)).event.is_err());
    }

    #[test]
    fn capability_events_decode_with_mask_bit_and_name() {
        let d = Decoder::new(contracts());
        let mask = U256::from(3) | (U256::from(1) << 200);
        let set = WorkerRegistry::WorkerCapabilitiesSet { worker: Address::repeat_byte(0xa1), mask };
        let out = d.decode(&log_of(contracts().worker_registry, &set));
        assert_eq!(out.name, Some("WorkerCapabilitiesSet"));
        assert_eq!(out.event, Ok(Event::WorkerCapabilitiesSet { worker: Address::repeat_byte(0xa1), mask }));
        let registered = WorkerRegistry::CapabilityRegistered { bit: 1, name: "vision".into() };
        let out = d.decode(&log_of(contracts().worker_registry, &registered));
        assert_eq!(out.name, Some("CapabilityRegistered"));
        assert_eq!(out.event, Ok(Event::CapabilityRegistered { bit: 1, name: "vision".into() }));
    }
}
