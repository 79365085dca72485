//! The effectful side of sortition claims: reads the store, asks the chain where it must, sends
//! `claimSession` through the worker's outbox and records every outcome in `worker_claims`. The
//! decisions themselves are [`crate::claim::plan`]'s.
//!
//! Outcomes: a claim sent and then claimed by this worker is **won**; claimed by another, **lost**
//! (recorded, never retried, never an error: racing is how sortition works); a request another
//! worker took at or after the first block this worker was eligible for, without a claim from
//! it, is **missed**, with the reason it held back (drained, busy, at capacity, or late); a
//! request of a served model this worker can never claim (capabilities, not eligible) is
//! **skipped**.

use std::collections::{HashMap, HashSet};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::sol_types::SolCall;
use lcw_chain::FeeCap;
use lcw_chain::outbox::{Intent, Outbox};
use lcw_chain::{CallSpec, Chain, Fees, Head};
use lcw_schema::bindings::SessionManager;
use lcw_schema::rules::schedule::ChainClock;
use lcw_schema::store::claims::{self, ClaimRow, ClaimState};
use lcw_schema::store::rows::{ModelRow, WorkerModelRow};
use lcw_schema::store::sortition::{self, RequestRow, RequestStatus, SortitionState};
use lcw_schema::store::{StoreResult, obligations};
use rusqlite::Connection;

use crate::claim::{Candidate, ChainView, ClaimConfig, Decision, Local, Me, Rule, Skip, plan};

/// Gas limit of `claimSession` (about 60k on the devnet; headroom for cold storage).
pub const CLAIM_GAS: u64 = 200_000;

/// Counters of a run (the whole history is in `worker_claims`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimStats {
    /// Claims sent.
    pub sent: u64,
    /// Requests won.
    pub won: u64,
    /// Claims that lost the race.
    pub lost: u64,
    /// Requests missed, by reason.
    pub missed: HashMap<String, u64>,
    /// Claim blocks minus first eligible blocks of won claims (0: landed in the first block it could).
    pub lateness: Vec<u64>,
}

/// The claiming side of the worker, kept across heads. It has its own store connection: a
/// borrowed one could not be held across the chain calls of a tick by a task that moves between
/// threads.
#[derive(Debug)]
pub struct Claimer {
    conn: Connection,
    me: Address,
    config: ClaimConfig,
    /// The operator's fee ceiling (a claim's worth is not known in wei).
    cap: FeeCap,
    /// Served models (on-chain ids).
    models: HashSet<B256>,
    attempts: HashMap<u64, u32>,
    /// The last reason an open request was held back, for a miss's reason.
    held_back: HashMap<u64, &'static str>,
    /// First eligible block, when predicted.
    first_blocks: HashMap<u64, u64>,
    /// Requests `eligibleNow` said yes to.
    eligible_seen: HashSet<u64>,
    /// Requests already recorded as skipped.
    recorded_skips: HashSet<u64>,
    /// The lowest claim block not yet examined for misses.
    scan_from: u64,
    told: HashSet<&'static str>,
    /// This run's counters.
    pub stats: ClaimStats,
}

/// What a tick did.
#[derive(Debug, Default)]
pub struct Tick {
    /// Claims sent.
    pub sent: usize,
}

impl Claimer {
    /// A claimer for `me` serving `models`, reading and writing the store through `conn`, paying
    /// at most `cap`.
    pub fn new(conn: Connection, me: Address, models: HashSet<B256>, config: ClaimConfig, cap: FeeCap) -> Self {
        Claimer {
            conn,
            me,
            config,
            cap,
            models,
            attempts: HashMap::new(),
            held_back: HashMap::new(),
            first_blocks: HashMap::new(),
            eligible_seen: HashSet::new(),
            recorded_skips: HashSet::new(),
            scan_from: 0,
            told: HashSet::new(),
            stats: ClaimStats::default(),
        }
    }

    /// The models served changed (added or removed on chain, warmed): sessions are claimed for
    /// these from now on.
    pub fn set_models(&mut self, models: HashSet<B256>) {
        self.models = models;
    }

    fn once(&mut self, key: &'static str) -> bool {
        self.told.insert(key)
    }

    /// One head: settle outcomes, plan, ask, claim. `busy` says every local work slot is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn tick(
        &mut self,
        outbox: &mut Outbox,
        chain: &Chain,
        head: &Head,
        clock: &ChainClock,
        fees: Fees,
        busy: bool,
        llm_down: bool,
    ) -> StoreResult<Tick> {
        let state = sortition::sortition_state(&self.conn)?;
        let Some(manager) = state.manager else {
            if state.enabled && self.once("no-manager") {
                tracing::warn!("sortition is on but the store has no SessionManager address yet; claims wait for it");
            }
            return Ok(Tick::default());
        };
        self.settle(manager, &state, head)?;
        let claiming = self.config.enabled.unwrap_or(true) && state.enabled;
        if !claiming {
            if self.config.enabled == Some(false) && state.enabled && self.once("disabled") {
                tracing::warn!(
                    "sortition is on for this network but claiming is switched off (SORTITION_ENABLED=false): this \
                     worker gets no new sessions"
                );
            }
            return Ok(Tick::default());
        }
        let chain_view = ChainView {
            head: head.number,
            next_ts: clock.next_ts(),
            window: state.claim_window_blocks,
            min_stake: state.min_worker_stake,
            max_concurrent_jobs: u64::try_from(state.max_concurrent_jobs).unwrap_or(u64::MAX),
        };
        let me = self.me_view()?;
        let in_flight: HashSet<u64> = outbox
            .live_calls("claim")
            .map_err(|e| lcw_schema::store::StoreError::Corrupt { what: "outbox".into(), value: e.to_string() })?
            .iter()
            .filter_map(|data| request_of(data))
            .collect();
        let local = Local {
            drained: obligations::drained(&self.conn, self.me)?,
            busy,
            llm_down,
            in_flight,
            attempts: self.attempts.clone(),
            retry_limit: self.config.retry_limit,
            confirmations: self.config.confirmations,
        };
        let open = sortition::open_requests(&self.conn, manager)?;
        let candidates: Vec<Candidate> = open
            .iter()
            .map(|r| Candidate {
                req_id: r.req_id,
                model: r.model_id,
                request_block: r.request_block,
                seed: r.seed,
                expiry: r.expiry,
                required_caps: r.required_caps,
            })
            .collect();
        let by_id: HashMap<u64, &RequestRow> = open.iter().map(|r| (r.req_id, r)).collect();
        if self.config.rule == Rule::Predict {
            // Every served request's turn, whatever is decided about it now: a miss is charged
            // against it.
            for c in candidates.iter().filter(|c| me.models.contains(&c.model)) {
                self.first_blocks.insert(c.req_id, crate::claim::first_block(c, &me, &chain_view));
            }
        }
        let mut tick = Tick::default();
        for decision in plan(&chain_view, &me, &local, self.config.rule, &candidates) {
            let req = by_id[&decision.req_id()];
            match decision {
                Decision::Wait { .. } => {}
                Decision::Skip { req_id, reason } => self.skipped(manager, req, req_id, &reason)?,
                Decision::Ask { req_id } => match Self::eligible_next(self.me, chain, manager, req_id, head, clock)
                    .await
                {
                    Ok(true) => {
                        self.eligible_seen.insert(req_id);
                        if self.claim(outbox, chain, manager, req, head, clock, fees, None).await? {
                            tick.sent += 1;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(req = req_id, error = %e, "eligibleNow failed; asking again next block"),
                },
                Decision::Claim { req_id, first_block, .. } => {
                    self.eligible_seen.insert(req_id);
                    if self.claim(outbox, chain, manager, req, head, clock, fees, first_block).await? {
                        tick.sent += 1;
                    }
                }
            }
        }
        Ok(tick)
    }

    fn me_view(&self) -> StoreResult<Me> {
        let conn = &self.conn;
        let view = obligations::worker(conn, self.me)?;
        let supported: HashSet<B256> = WorkerModelRow::of_worker(conn, &self.me)?.into_iter().collect();
        let mut models = HashSet::new();
        for m in self.models.intersection(&supported) {
            // A request for a disabled model can be claimed but never made ready.
            if ModelRow::get(conn, m)?.is_some_and(|row| row.enabled) {
                models.insert(*m);
            }
        }
        Ok(Me {
            address: self.me,
            registered: view.as_ref().is_some_and(|v| v.registered),
            suspended: view.as_ref().is_some_and(|v| v.suspended_until > 0),
            stake: view.as_ref().map(|v| v.stake).unwrap_or_default(),
            active_jobs: view.as_ref().map(|v| v.active_jobs).unwrap_or_default(),
            capabilities: sortition::worker_capabilities(conn, self.me)?,
            models,
        })
    }

    /// Asks `eligibleNow(req, me)` as of the next block.
    async fn eligible_next(
        me: Address,
        chain: &Chain,
        manager: Address,
        req_id: u64,
        head: &Head,
        clock: &ChainClock,
    ) -> Result<bool, String> {
        let data = SessionManager::eligibleNowCall { reqId: U256::from(req_id), worker: me }.abi_encode();
        let call = CallSpec { from: me, to: manager, data: data.into() };
        let out = chain.call_at(&call, head.next_number(), clock.next_ts()).await.map_err(|e| e.to_string())?;
        SessionManager::eligibleNowCall::abi_decode_returns(&out).map_err(|e| format!("eligibleNow answer: {e}"))
    }

    /// Simulates the claim in the next block and sends it; true when it went out.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &mut self,
        outbox: &mut Outbox,
        chain: &Chain,
        manager: Address,
        req: &RequestRow,
        head: &Head,
        clock: &ChainClock,
        fees: Fees,
        first_block: Option<u64>,
    ) -> StoreResult<bool> {
        let data: Bytes = SessionManager::claimSessionCall { reqId: U256::from(req.req_id) }.abi_encode().into();
        let call = CallSpec { from: self.me, to: manager, data: data.clone() };
        match chain.simulate(&[call], head.next_number(), clock.next_ts()).await {
            Ok(sim) if sim.first().is_some_and(|s| s.ok()) => {}
            Ok(sim) => {
                let why = sim
                    .first()
                    .and_then(|s| s.revert.as_ref().map(|r| lcw_schema::bindings::decode_revert(r)).or(s.error.clone()))
                    .unwrap_or_else(|| "no result".into());
                // Another worker's claim in the latest block, not indexed yet, is the usual reason.
                tracing::debug!(req = req.req_id, reason = %why, "the claim would fail in the next block; not sent");
                self.held_back.insert(req.req_id, "late");
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(req = req.req_id, error = %e, "simulating the claim failed; trying again next block");
                return Ok(false);
            }
        }
        let intent = Intent {
            kind: "claim",
            to: manager,
            data,
            value: U256::ZERO,
            gas_limit: CLAIM_GAS,
            jobs: Vec::new(),
            target_block: head.next_number(),
            blob: None,
            cap: self.cap,
        };
        *self.attempts.entry(req.req_id).or_default() += 1;
        match outbox.submit(chain, &intent, fees, head.number).await {
            Ok((id, hash)) => {
                tracing::info!(req = req.req_id, id, tx = %hash, first_block, target = head.next_number(), "claim sent");
                self.stats.sent += 1;
                claims::put(
                    &self.conn,
                    &ClaimRow {
                        worker: self.me,
                        manager,
                        req_id: req.req_id,
                        model_id: req.model_id,
                        request_block: req.request_block,
                        first_block,
                        state: ClaimState::Sent,
                        reason: None,
                        sent_block: Some(head.number),
                        claim_tx: Some(hash),
                        winner: None,
                        claimed_block: None,
                    },
                )?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(req = req.req_id, error = %e, "sending the claim failed; trying again next block");
                Ok(false)
            }
        }
    }

    fn skipped(&mut self, manager: Address, req: &RequestRow, req_id: u64, why: &Skip) -> StoreResult<()> {
        match why {
            // Passing states: the reason a later miss is charged to.
            Skip::Drained | Skip::Busy | Skip::AtCapacity { .. } => {
                self.held_back.insert(req_id, why.as_str());
            }
            // The whole request is out of reach for this worker: recorded once, for models it serves.
            Skip::MissingCapabilities { .. } | Skip::NotEligible(_)
                if self.models.contains(&req.model_id) && self.recorded_skips.insert(req_id) =>
            {
                tracing::info!(req = req_id, reason = %why, "session request not claimable here");
                claims::put(
                    &self.conn,
                    &ClaimRow {
                        worker: self.me,
                        manager,
                        req_id,
                        model_id: req.model_id,
                        request_block: req.request_block,
                        first_block: None,
                        state: ClaimState::Skipped,
                        reason: Some(why.as_str().to_owned()),
                        sent_block: None,
                        claim_tx: None,
                        winner: None,
                        claimed_block: None,
                    },
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Outcomes: sent claims won or lost; requests others took while this worker was eligible.
    fn settle(&mut self, manager: Address, state: &SortitionState, head: &Head) -> StoreResult<()> {
        let conn = &self.conn;
        for mut row in claims::pending(conn, self.me)? {
            let Some(req) = sortition::request(conn, row.manager, row.req_id)? else { continue };
            match req.status {
                RequestStatus::Claimed | RequestStatus::Ready => {
                    row.winner = req.worker;
                    row.claimed_block = req.claimed_block;
                    if req.worker == Some(self.me) {
                        row.state = ClaimState::Won;
                        self.stats.won += 1;
                        if let (Some(first), Some(at)) = (row.first_block, req.claimed_block) {
                            self.stats.lateness.push(at.saturating_sub(first));
                        }
                        tracing::info!(req = row.req_id, block = ?req.claimed_block, "session request won");
                    } else {
                        row.state = ClaimState::Lost;
                        self.stats.lost += 1;
                        tracing::info!(req = row.req_id, winner = ?req.worker, "claim race lost");
                    }
                    claims::put(conn, &row)?;
                }
                RequestStatus::Open if req.expired_at(head.timestamp) => {
                    row.state = ClaimState::Expired;
                    claims::put(conn, &row)?;
                }
                // Still open: the claim is in flight, or it failed without another winner
                // (refused, dropped), and the planner sends it again within the retry limit.
                RequestStatus::Open => {}
            }
        }
        // Misses: requests of served models claimed by others since the last scan.
        let window = u64::try_from(state.claim_window_blocks).unwrap_or(u64::MAX);
        let from = self.scan_from.max(head.number.saturating_sub(window.saturating_add(256)));
        for req in sortition::claimed_since(conn, manager, from)? {
            self.scan_from = self.scan_from.max(req.claimed_block.unwrap_or_default());
            if req.worker == Some(self.me) || !self.models.contains(&req.model_id) {
                continue;
            }
            if claims::get(conn, self.me, manager, req.req_id)?.is_some() {
                continue;
            }
            let at = req.claimed_block.unwrap_or(u64::MAX);
            let eligible = self.eligible_seen.contains(&req.req_id)
                || self.first_blocks.get(&req.req_id).is_some_and(|first| *first <= at);
            if !eligible {
                continue;
            }
            let reason = self.held_back.get(&req.req_id).copied().unwrap_or("late");
            *self.stats.missed.entry(reason.to_owned()).or_default() += 1;
            tracing::info!(req = req.req_id, winner = ?req.worker, reason, "missed a session request this worker was eligible for");
            claims::put(
                conn,
                &ClaimRow {
                    worker: self.me,
                    manager,
                    req_id: req.req_id,
                    model_id: req.model_id,
                    request_block: req.request_block,
                    first_block: self.first_blocks.get(&req.req_id).copied(),
                    state: ClaimState::Missed,
                    reason: Some(reason.to_owned()),
                    sent_block: None,
                    claim_tx: None,
                    winner: req.worker,
                    claimed_block: req.claimed_block,
                },
            )?;
        }
        // Forget what is settled.
        let open: HashSet<u64> = sortition::open_requests(conn, manager)?.into_iter().map(|r| r.req_id).collect();
        self.held_back.retain(|r, _| open.contains(r));
        self.first_blocks.retain(|r, _| open.contains(r));
        self.eligible_seen.retain(|r| open.contains(r));
        self.recorded_skips.retain(|r| open.contains(r));
        Ok(())
    }
}

/// The request id a `claimSession` calldata names.
pub fn request_of(data: &[u8]) -> Option<u64> {
    SessionManager::claimSessionCall::abi_decode(data).ok().and_then(|c| u64::try_from(c.reqId).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_of_a_claim_is_read_back_from_its_calldata() {
        let data = SessionManager::claimSessionCall { reqId: U256::from(77) }.abi_encode();
        assert_eq!(request_of(&data), Some(77));
        assert_eq!(request_of(&[1, 2, 3]), None);
        let huge = SessionManager::claimSessionCall { reqId: U256::MAX }.abi_encode();
        assert_eq!(request_of(&huge), None);
    }
}
