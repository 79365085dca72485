//! Signing the actions the world decided ([`super::world::World::decide`]): acknowledgements,
//! completions, disputes, rulings, timeouts, no-fault settlements and batched releases.

use std::collections::HashMap;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use lcw_schema::bindings::JobRegistry;

use super::run::{IN_FLIGHT_BLOCKS, Result, Sim, gas};
use super::world::Action;
use crate::txs::Signed;

impl Sim {
    /// Signs `actions` decided at `head` into `out`; their jobs stay in flight until a receipt.
    pub(super) fn sign_actions(&mut self, actions: &[Action], head: u64, out: &mut Vec<Signed>) -> Result<()> {
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
}
