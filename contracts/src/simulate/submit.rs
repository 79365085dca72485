//! New submissions: within the rate and the per-block budget, round-robin over the open sessions,
//! with a reused prompt blob on sessions of simulated workers in volume mode and a fresh encrypted
//! prompt per job everywhere else (a real worker serves those).

use std::time::Instant;

use alloy::primitives::{B256, U256};
use alloy::sol_types::SolCall;
use lcw_schema::bindings::JobRegistry;
use lcw_schema::suite::SessionKey;

use super::SimulateError;
use super::plan;
use super::run::{BLOBS_PER_TICK, PendingSettle, QueuedJob, Result, Sim, gas};
use crate::txs::Signed;

impl Sim {
    /// Queued jobs whose prompt blob is mined, then new submissions, signed into `out`.
    pub(super) async fn submissions(&mut self, started: Instant, head: u64, out: &mut Vec<Signed>) -> Result<()> {
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
            self.sign_submit(q.session, q.blob, head, out)?;
        }
        // Jobs wait for the first session requests, as they wait for the dispatcher's sessions in
        // setup, so that they spread over all the sessions.
        if self.sortition.as_ref().is_some_and(|s| s.book.warming_up()) {
            return Ok(());
        }

        let remaining = self.options.jobs.saturating_sub(self.planned);
        let by_rate = match self.options.rate {
            Some(rate) => ((started.elapsed().as_secs_f64() * rate) as u64).saturating_sub(self.planned),
            None => u64::MAX,
        };
        let budget = remaining.min(by_rate).min(self.options.max_per_block as u64);
        let mut blob_payloads: Vec<(usize, Vec<u8>)> = Vec::new();
        let ordinary: Vec<usize> = (0..self.sessions.len())
            .filter(|i| !self.world.sessions.get(&self.sessions[*i].id).is_some_and(|(_, c)| *c))
            .collect();
        for _ in 0..budget {
            let settle = plan::is_settle(self.options.seed, self.planned, &self.options.shares);
            if settle && self.sortition.is_some() {
                // Its throwaway session was requested up front.
                self.planned += 1;
                self.settle_on_spare_session();
                continue;
            }
            if ordinary.is_empty() {
                break;
            }
            let session = ordinary[self.next_session % ordinary.len()];
            if !settle && self.sessions[session].prompt_blob.is_none() && blob_payloads.len() >= BLOBS_PER_TICK {
                // This block's blobs are spoken for; the round-robin resumes here next block.
                break;
            }
            self.planned += 1;
            self.next_session += 1;
            if settle {
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
                Some(blob) => self.sign_submit(session, blob, head, out)?,
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

    /// Signs `submitJob` on the `session`-th session, and `closeSession` after it when the session
    /// is a throwaway one.
    fn sign_submit(&mut self, session: usize, blob: B256, head: u64, out: &mut Vec<Signed>) -> Result<()> {
        let jr = self.contracts.job_registry;
        let s = &self.sessions[session];
        let (consumer, id, pays) = (s.consumer, U256::from(s.id), s.pays);
        let closed = self.world.sessions.get(&s.id).is_some_and(|(_, c)| *c);
        let data = JobRegistry::submitJobCall { sessionId: id, blobHash: blob }.abi_encode();
        let signed = self.tx.sign(&self.call(consumer, jr, data, pays, gas::SUBMIT))?;
        self.sent.insert(signed.hash, (head, "submitJob"));
        out.push(signed);
        if closed {
            let data = JobRegistry::closeSessionCall { sessionId: id }.abi_encode();
            let signed = self.tx.sign(&self.call(consumer, jr, data, U256::ZERO, gas::CLOSE_SESSION))?;
            self.sent.insert(signed.hash, (head, "closeSession"));
            out.push(signed);
        }
        Ok(())
    }
}
