//! The transactions a job needs (ack, completion) under their fee ceilings, and how a job the
//! worker cannot serve is reported.

use super::*;

/// A job seen with less than the deadline margin and this much more left before its ack deadline
/// was seen too late to ack: about two blocks, for the pass that sees it and the ack to land.
const SEEN_SLACK_SECS: f64 = 2.0;

impl Worker {
    /// The wallet at the fees the next acks and completions would be signed with.
    pub(super) fn funds(&self) -> Option<plan::Funds> {
        let (balance, fees) = (self.balance?, self.fees?);
        let cap = self.config.fee_cap;
        let per_gas = fees.max_fee.min(cap.per_gas);
        let per_blob_gas = self.blob_fee.min(cap.per_blob_gas);
        Some(plan::Funds {
            balance,
            ack_cost: per_gas.saturating_mul(u128::from(ACK_GAS)),
            complete_cost: per_gas
                .saturating_mul(u128::from(COMPLETE_GAS))
                .saturating_add(per_blob_gas.saturating_mul(u128::from(DATA_GAS_PER_BLOB))),
        })
    }

    /// The most a transaction for `a` may pay: the operator's ceiling, lowered to what the job's
    /// ack and completion protect.
    pub(super) fn cap_for(&self, a: &Assignment, gas: u64, blob_gas: u64) -> FeeCap {
        let protects = a.model_id.and_then(|m| self.models.served(&m)).map(|s| s.protects).unwrap_or(0);
        self.config.fee_cap.at_most_worth(protects, gas, blob_gas)
    }

    /// Sends the ack of `a`. Returns whether it went out.
    pub(super) async fn ack(&mut self, a: &Assignment, head: &Head, unopened: Option<String>) -> bool {
        let Some(fees) = self.fees else { return false };
        let intent = Intent {
            kind: "ack",
            to: self.config.profile.contracts.job_registry,
            data: Bytes::from(JobRegistry::acknowledgeJobCall { jobId: U256::from(a.job_id) }.abi_encode()),
            value: U256::ZERO,
            gas_limit: ACK_GAS,
            jobs: vec![a.job_id],
            target_block: head.next_number(),
            blob: None,
            cap: self.cap_for(a, ACK_GAS, 0),
        };
        match self.outbox.submit(&self.chain, &intent, fees, head.number).await {
            Ok((id, hash)) => {
                if let Some(why) = unopened {
                    tracing::warn!(job = a.job_id, id, tx = %hash, reason = %why, "ack sent before the prompt was opened");
                    self.summary.acked_unopened.insert(a.job_id, why);
                } else {
                    tracing::info!(job = a.job_id, id, tx = %hash, "ack sent");
                }
                true
            }
            Err(e) => {
                self.not_sent(a, "ack", e);
                false
            }
        }
    }

    /// Sends the completion of `a` with its ready answer. Returns whether it went out.
    pub(super) async fn complete(&mut self, a: &Assignment, head: &Head) -> bool {
        let Some(fees) = self.fees else { return false };
        let Some(r) = self.held.get(&a.job_id).and_then(|h| h.ready.as_ref()) else { return false };
        let blob = BlobPart { max_fee_per_blob_gas: self.blob_fee, sidecar: r.sidecar.clone() };
        let data = JobRegistry::completeJobCall {
            jobId: U256::from(a.job_id),
            responseBlobHash: r.versioned_hash,
            responseCiphertextHash: r.ciphertext_hash,
        }
        .abi_encode();
        let mut timing = r.timing.clone();
        timing.post = r.ready_at.elapsed();
        timing.complete_sent_block = Some(head.number);
        let intent = Intent {
            kind: "complete",
            to: self.config.profile.contracts.job_registry,
            data: Bytes::from(data),
            value: U256::ZERO,
            gas_limit: COMPLETE_GAS,
            jobs: vec![a.job_id],
            target_block: head.next_number(),
            blob: Some(blob),
            cap: self.cap_for(a, COMPLETE_GAS, DATA_GAS_PER_BLOB),
        };
        match self.outbox.submit(&self.chain, &intent, fees, head.number).await {
            Ok((id, hash)) => {
                tracing::info!(job = a.job_id, id, tx = %hash, "completion sent with the response blob");
                self.timings.insert(a.job_id, timing);
                true
            }
            Err(e) => {
                self.not_sent(a, "completion", e);
                false
            }
        }
    }

    /// A transaction for `a` that did not go out: a refusal by the node is reported as the
    /// job's reason (and planned again on a later pass), the rest is logged.
    pub(super) fn not_sent(&mut self, a: &Assignment, what: &'static str, e: ChainError) {
        match e {
            ChainError::InFlight(m) => tracing::debug!(job = a.job_id, what, reason = %m, "already in flight; skipped"),
            ChainError::Rejected(m) => {
                let why = format!("the node refused the {what}: {m}");
                self.refuse(a, "node", &why, false);
            }
            e => tracing::warn!(job = a.job_id, what, error = %e, "sending failed; will retry"),
        }
    }

    /// Reports a refused job: logged once per step, kept in the summary and the store; a final
    /// refusal is told to the consumer and frees what the worker held for it.
    pub(super) fn refuse(&mut self, a: &Assignment, what: &'static str, why: &str, last: bool) {
        let job = a.job_id;
        // A job held back for a while (the LLM server down, the wallet short, the queue full)
        // and then given up when its ack deadline passes is recorded under what held it back:
        // that, not the deadline, is what the operator has to fix. The store remembers it across
        // restarts.
        let earlier = if last && what == "ack" {
            refusals::get(&self.conn, self.me, job).ok().flatten().filter(|r| r.step != "ack")
        } else {
            None
        };
        // Its prompt still being fetched when the deadline passed: the node was too slow.
        let fetching = last && what == "ack" && self.held.get(&job).is_some_and(|h| matches!(h.stage, Local::Opening));
        let unseen = if last && what == "ack" { self.seen_too_late(a) } else { None };
        let (what, why) = match earlier {
            Some(r) if r.last => (r.step_name(), r.reason),
            Some(r) => (r.step_name(), format!("{}; then its ack deadline passed", r.reason)),
            None if fetching => ("node", format!("its prompt was still being fetched when {why}")),
            None => match unseen {
                Some((step, late)) => (step, format!("{why}: {late}")),
                None => (what, why.to_owned()),
            },
        };
        let why = why.as_str();
        if self.told.insert((job, what)) {
            tracing::warn!(job, step = what, reason = %why, last, "job refused");
        }
        // The first reason is the one that decided it (a later "ack deadline passed" follows from it).
        self.summary.refused.entry(job).or_insert_with(|| why.to_owned());
        let acked = a.state == JobState::Acknowledged;
        if let Err(e) = refusals::put(&self.conn, self.me, job, what, why, last, acked) {
            tracing::warn!(job, error = %e, "recording the refusal failed");
        }
        if last {
            if self.refusals_counted.insert(job) {
                self.config.metrics.refused(what);
            }
            if a.state == JobState::Submitted {
                self.refused.insert(job, (what, why.to_owned()));
            }
            self.held.remove(&job);
            if let Some(link) = &self.link
                && self.gave_up.insert(job)
            {
                link.gateway.publish_error(job, a.session_id);
            }
        }
    }

    /// Why a job given up at its ack deadline, with nothing recorded against it, was never
    /// acked (see [`seen_too_late`]).
    fn seen_too_late(&self, a: &Assignment) -> Option<(&'static str, String)> {
        let head = self.last_head?;
        let now = head.timestamp as f64 + self.head_seen.elapsed().as_secs_f64();
        let seen = self.first_seen.get(&a.job_id).copied().unwrap_or(now);
        let sighting = Sighting {
            submitted: a.submitted_at as f64,
            deadline: a.deadline? as f64,
            seen,
            started: self.started.unwrap_or(now),
        };
        seen_too_late(&sighting, self.config.deadline_margin)
    }

    /// Gives up the live transaction `id` of `a` (its deadline passed unmined): its nonce is
    /// freed or taken by a transfer to self, so it cannot be mined to revert.
    pub(super) async fn cancel(&mut self, a: &Assignment, id: i64, reason: &str) {
        match self.outbox.cancel(&self.chain, id).await {
            Ok(outcome) => {
                tracing::warn!(job = a.job_id, id, ?outcome, %reason, "gave up a transaction past its deadline");
                self.refuse(a, "deadline", &format!("{reason}; given up"), true);
            }
            Err(e) => tracing::warn!(job = a.job_id, id, error = %e, "giving up the transaction failed; trying again"),
        }
    }
}

/// When a job not acked yet was seen by this process, in chain seconds.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    /// Its submission block's timestamp.
    submitted: f64,
    /// Its ack deadline.
    deadline: f64,
    /// When this process first saw it in the store.
    seen: f64,
    /// When this process made its first pass.
    started: f64,
}

/// Whether a job was seen too late to ack safely (less than the margin and about two blocks
/// left), and what kept it out of sight: lcw was not running when it arrived (`offline`), or the
/// store showed it late (`node`: the node, or the indexer reading it, was behind). None when it
/// was seen in time: then the worker itself failed to ack it.
fn seen_too_late(s: &Sighting, margin: u64) -> Option<(&'static str, String)> {
    if s.seen + margin as f64 + SEEN_SLACK_SECS < s.deadline {
        return None;
    }
    let left = (s.deadline - s.seen).max(0.0);
    Some(if s.started > s.submitted {
        let down = s.started - s.submitted;
        (
            "offline",
            format!(
                "lcw was not running when it arrived (started {down:.0} s after its submission), and saw it with {left:.0} s left"
            ),
        )
    } else {
        let late = s.seen - s.submitted;
        (
            "node",
            format!(
                "the store showed it {late:.0} s after its submission, with {left:.0} s left: the node or the indexer \
                 reading it was behind"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: u64 = 5;

    #[test]
    fn a_job_seen_in_time_and_not_acked_is_the_workers_own_failure() {
        let s = Sighting { submitted: 100.0, deadline: 120.0, seen: 101.0, started: 50.0 };
        assert_eq!(seen_too_late(&s, MARGIN), None);
        // Still in time with the margin and two blocks left.
        assert_eq!(seen_too_late(&Sighting { seen: 112.9, ..s }, MARGIN), None);
    }

    #[test]
    fn a_job_that_arrived_while_lcw_was_not_running_is_put_down_to_that() {
        let s = Sighting { submitted: 100.0, deadline: 120.0, seen: 117.0, started: 116.0 };
        let (step, why) = seen_too_late(&s, MARGIN).expect("seen too late");
        assert_eq!(step, "offline");
        assert!(why.contains("started 16 s after its submission") && why.contains("3 s left"), "{why}");
        // Seen after its deadline: nothing left.
        let (_, why) = seen_too_late(&Sighting { seen: 125.0, started: 124.0, ..s }, MARGIN).unwrap();
        assert!(why.contains("0 s left"), "{why}");
    }

    #[test]
    fn a_job_the_store_showed_late_to_a_running_worker_is_put_down_to_the_node() {
        let s = Sighting { submitted: 100.0, deadline: 120.0, seen: 115.0, started: 50.0 };
        let (step, why) = seen_too_late(&s, MARGIN).expect("seen too late");
        assert_eq!(step, "node");
        assert!(why.contains("15 s after its submission, with 5 s left"), "{why}");
    }
}
