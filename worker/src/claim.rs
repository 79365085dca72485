//! Claiming sessions by sortition: which open session requests this worker claims, and when.
//!
//! On today's testnet a consumer requests a session (`SessionManager.requestSession`), eligible
//! workers race to `claimSession` once the claim window has widened to them, and only the winner
//! gets the session's jobs. The indexer keeps every request in the store (`session_requests`), so
//! a restart forgets none; this module decides, on every head, for each open request:
//!
//! - **skip** it, and why: sortition off, drained (a drained worker claims nothing new and
//!   finishes what it owes), model not served here, a required capability missing, at the
//!   on-chain capacity (`getActiveJobCount` ≥ `getMaxConcurrentJobs`, the contract's own check),
//!   every local work slot busy, not eligible at all (not registered, suspended, stake below the
//!   minimum), expired, too recent for the configured confirmations, or out of attempts;
//! - **wait** for its turn: with the rule known ([`Rule::Predict`], the devnet's SessionManager,
//!   `lcw_schema::rules::sortition`) the first block the claim can succeed is computed exactly, and
//!   the claim is sent when the head is the block before it, so it lands in that very block;
//! - **ask** the chain: where the rule is not published ([`Rule::Ask`], the real network) the
//!   executor asks `eligibleNow` for the next block and claims as soon as it says yes, so the
//!   claim lands in the first eligible block or the next;
//! - **claim** it now, for the next block.
//!
//! Everything here is pure (plain data in, decisions out); `pipeline` reads the store and the
//! chain, and sends the claims through the outbox.

use std::collections::{HashMap, HashSet};

use alloy::primitives::{Address, B256, U256};
use lcw_schema::rules::sortition::{claim_delay, first_claim_block};

/// How the worker claims.
#[derive(Debug, Clone)]
pub struct ClaimConfig {
    /// Claim at all: `None` follows the chain (AIConfig.getSortitionEnabled), `Some(false)` never
    /// claims (upstream SORTITION_ENABLED=false), `Some(true)` claims whenever the chain allows.
    pub enabled: Option<bool>,
    /// How the worker learns its turn.
    pub rule: Rule,
    /// Most claims per request (SORTITION_SESSION_RETRY_LIMIT).
    pub retry_limit: u32,
    /// Requests are considered once this many blocks deep (SORTITION_CONFIRMATIONS).
    pub confirmations: u64,
}

impl Default for ClaimConfig {
    fn default() -> Self {
        ClaimConfig { enabled: None, rule: Rule::Ask, retry_limit: 10, confirmations: 0 }
    }
}

/// How the worker learns when its turn comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Compute it from the store with the devnet SessionManager's rule (exact, no RPC).
    Predict,
    /// Ask `SessionManager.eligibleNow` for the next block (any network).
    Ask,
}

impl Rule {
    /// The name shown in logs and `lcw status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Predict => "predicted from the store",
            Rule::Ask => "asked of eligibleNow",
        }
    }
}

/// An open request, as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Request id.
    pub req_id: u64,
    /// The model requested.
    pub model: B256,
    /// Block of the request.
    pub request_block: u64,
    /// Hash of that block (the draw's seed).
    pub seed: B256,
    /// Unix time after which it can no longer be claimed.
    pub expiry: u64,
    /// Capability bits the claimer must have.
    pub required_caps: U256,
}

/// The chain's side of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainView {
    /// Latest block.
    pub head: u64,
    /// The earliest timestamp the next block can have.
    pub next_ts: u64,
    /// AIConfig claim window, in blocks.
    pub window: U256,
    /// AIConfig minimum worker stake.
    pub min_stake: U256,
    /// AIConfig maxConcurrentJobs.
    pub max_concurrent_jobs: u64,
}

/// This worker, as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    /// Address.
    pub address: Address,
    /// Registered and not deregistered.
    pub registered: bool,
    /// Suspended (until reinstated).
    pub suspended: bool,
    /// Stake.
    pub stake: U256,
    /// Active jobs (derived; the contract's capacity count).
    pub active_jobs: u64,
    /// Capability bits set on chain.
    pub capabilities: U256,
    /// Models it can take sessions for: served by the LLM server here, supported on chain.
    pub models: HashSet<B256>,
}

/// The worker process's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// `lcw drain` was run: claim nothing new.
    pub drained: bool,
    /// Every local work slot is taken (upstream's MAX_CONCURRENT_JOBS check).
    pub busy: bool,
    /// The LLM server is down: a session claimed now would bring jobs that cannot be served.
    pub llm_down: bool,
    /// Requests with a claim transaction in flight.
    pub in_flight: HashSet<u64>,
    /// Claims sent per request so far (a refused or dropped one may be sent again).
    pub attempts: HashMap<u64, u32>,
    /// Most claims per request (upstream SORTITION_SESSION_RETRY_LIMIT).
    pub retry_limit: u32,
    /// Requests are considered once this many blocks deep (upstream SORTITION_CONFIRMATIONS).
    pub confirmations: u64,
}

/// Why a request is not claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Drained: no new sessions.
    Drained,
    /// Its model is not served here.
    ModelNotServed,
    /// A capability bit it requires is not set for this worker.
    MissingCapabilities {
        /// The required bits this worker lacks.
        missing: U256,
    },
    /// The contract would refuse: active jobs at the maximum.
    AtCapacity {
        /// Active jobs.
        active: u64,
        /// AIConfig maxConcurrentJobs.
        max: u64,
    },
    /// Every local work slot is busy.
    Busy,
    /// The LLM server does not answer.
    LlmDown,
    /// Not registered, suspended, or stake below the minimum.
    NotEligible(&'static str),
    /// Its expiry has passed.
    Expired,
    /// Newer than the configured confirmations.
    TooRecent,
    /// A claim is already in flight.
    InFlight,
    /// The retry limit was reached.
    RetriesExhausted,
}

impl Skip {
    /// A short stable name (metrics labels, the claims table).
    pub fn as_str(&self) -> &'static str {
        match self {
            Skip::Drained => "drained",
            Skip::ModelNotServed => "model_not_served",
            Skip::MissingCapabilities { .. } => "missing_capabilities",
            Skip::AtCapacity { .. } => "at_capacity",
            Skip::Busy => "busy",
            Skip::LlmDown => "llm_down",
            Skip::NotEligible(_) => "not_eligible",
            Skip::Expired => "expired",
            Skip::TooRecent => "too_recent",
            Skip::InFlight => "in_flight",
            Skip::RetriesExhausted => "retries_exhausted",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Drained => f.write_str("the worker is drained"),
            Skip::ModelNotServed => f.write_str("its model is not served here"),
            Skip::MissingCapabilities { missing } => write!(f, "capability bits {missing:#x} are not set"),
            Skip::AtCapacity { active, max } => write!(f, "{active} active jobs, at most {max} (AIConfig)"),
            Skip::Busy => f.write_str("every local work slot is busy"),
            Skip::LlmDown => f.write_str("the LLM server does not answer"),
            Skip::NotEligible(why) => write!(f, "the worker is not eligible: {why}"),
            Skip::Expired => f.write_str("the request has expired"),
            Skip::TooRecent => f.write_str("not confirmed yet"),
            Skip::InFlight => f.write_str("a claim is in flight"),
            Skip::RetriesExhausted => f.write_str("the claim was tried as often as allowed"),
        }
    }
}

/// What to do about one request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send `claimSession` now, for `target_block`.
    Claim {
        /// Request id.
        req_id: u64,
        /// The block it is meant to land in (the head + 1).
        target_block: u64,
        /// The first block a claim can succeed, when known.
        first_block: Option<u64>,
    },
    /// Ask `eligibleNow` whether the claim succeeds in the next block; claim if so.
    Ask {
        /// Request id.
        req_id: u64,
    },
    /// Not this worker's turn before `first_block`.
    Wait {
        /// Request id.
        req_id: u64,
        /// The first block a claim can succeed.
        first_block: u64,
    },
    /// Not claimed, and why.
    Skip {
        /// Request id.
        req_id: u64,
        /// Why.
        reason: Skip,
    },
}

impl Decision {
    /// The request it is about.
    pub fn req_id(&self) -> u64 {
        match self {
            Decision::Claim { req_id, .. }
            | Decision::Ask { req_id }
            | Decision::Wait { req_id, .. }
            | Decision::Skip { req_id, .. } => *req_id,
        }
    }
}

/// The first block in which `me` can claim `c` under the devnet rule.
pub fn first_block(c: &Candidate, me: &Me, chain: &ChainView) -> u64 {
    let delay = claim_delay(c.seed, U256::from(c.req_id), me.address, me.stake, chain.min_stake, chain.window);
    first_claim_block(c.request_block, delay)
}

/// Decides, for every open request, whether to claim it now, wait, ask or skip it. At most one
/// claim is planned per free unit of on-chain capacity.
pub fn plan(chain: &ChainView, me: &Me, local: &Local, rule: Rule, requests: &[Candidate]) -> Vec<Decision> {
    let mut out = Vec::with_capacity(requests.len());
    // Claims in flight will each become a session; keep room for them under the contract's cap.
    let mut committed = me.active_jobs.saturating_add(local.in_flight.len() as u64);
    let not_eligible = if !me.registered {
        Some("not registered")
    } else if me.suspended {
        Some("suspended")
    } else if me.stake < chain.min_stake {
        Some("stake below the minimum")
    } else {
        None
    };
    for c in requests {
        let skip = |reason| Decision::Skip { req_id: c.req_id, reason };
        if chain.next_ts > c.expiry {
            out.push(skip(Skip::Expired));
            continue;
        }
        if local.in_flight.contains(&c.req_id) {
            out.push(skip(Skip::InFlight));
            continue;
        }
        if local.drained {
            out.push(skip(Skip::Drained));
            continue;
        }
        if !me.models.contains(&c.model) {
            out.push(skip(Skip::ModelNotServed));
            continue;
        }
        if let Some(why) = not_eligible {
            out.push(skip(Skip::NotEligible(why)));
            continue;
        }
        let missing = c.required_caps & !me.capabilities;
        if !missing.is_zero() {
            out.push(skip(Skip::MissingCapabilities { missing }));
            continue;
        }
        if chain.head < c.request_block.saturating_add(local.confirmations) {
            out.push(skip(Skip::TooRecent));
            continue;
        }
        if local.attempts.get(&c.req_id).copied().unwrap_or(0) >= local.retry_limit.max(1) {
            out.push(skip(Skip::RetriesExhausted));
            continue;
        }
        let target_block = chain.head.saturating_add(1);
        let first = match rule {
            Rule::Predict => Some(first_block(c, me, chain)),
            Rule::Ask => None,
        };
        if let Some(first) = first
            && target_block < first
        {
            out.push(Decision::Wait { req_id: c.req_id, first_block: first });
            continue;
        }
        // Capacity and slots are checked only when a claim would go out now: waiting costs nothing.
        if committed >= chain.max_concurrent_jobs {
            out.push(skip(Skip::AtCapacity { active: me.active_jobs, max: chain.max_concurrent_jobs }));
            continue;
        }
        if local.busy {
            out.push(skip(Skip::Busy));
            continue;
        }
        if local.llm_down {
            out.push(skip(Skip::LlmDown));
            continue;
        }
        committed += 1;
        out.push(match rule {
            Rule::Predict => Decision::Claim { req_id: c.req_id, target_block, first_block: first },
            Rule::Ask => Decision::Ask { req_id: c.req_id },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: B256 = B256::repeat_byte(0x42);

    fn lcai(n: u64) -> U256 {
        U256::from(n) * U256::from(1_000_000_000_000_000_000u64)
    }

    fn chain(head: u64) -> ChainView {
        ChainView { head, next_ts: 1_000, window: U256::from(8), min_stake: lcai(100), max_concurrent_jobs: 4 }
    }

    fn me() -> Me {
        Me {
            address: Address::repeat_byte(7),
            registered: true,
            suspended: false,
            stake: lcai(100),
            active_jobs: 0,
            capabilities: U256::from(1),
            models: [MODEL].into_iter().collect(),
        }
    }

    fn local() -> Local {
        Local { retry_limit: 3, ..Local::default() }
    }

    fn request(id: u64, block: u64) -> Candidate {
        Candidate {
            req_id: id,
            model: MODEL,
            request_block: block,
            seed: B256::repeat_byte(id as u8),
            expiry: 2_000,
            required_caps: U256::ZERO,
        }
    }

    #[test]
    fn a_predicted_claim_goes_out_the_block_before_its_turn_so_it_lands_in_it() {
        let r = request(1, 100);
        let first = first_block(&r, &me(), &chain(100));
        assert!((101..=108).contains(&first), "{first}");
        // Two blocks early: wait. One block early: claim, for exactly the first block.
        if first >= 102 {
            let early = plan(&chain(first - 2), &me(), &local(), Rule::Predict, std::slice::from_ref(&r));
            assert_eq!(early, vec![Decision::Wait { req_id: 1, first_block: first }]);
        }
        let now = plan(&chain(first - 1), &me(), &local(), Rule::Predict, std::slice::from_ref(&r));
        assert_eq!(now, vec![Decision::Claim { req_id: 1, target_block: first, first_block: Some(first) }]);
        // Late (a restart, a busy spell): claim at once, the window only widens.
        let late = plan(&chain(first + 5), &me(), &local(), Rule::Predict, std::slice::from_ref(&r));
        assert!(matches!(late[0], Decision::Claim { target_block, .. } if target_block == first + 6));
    }

    #[test]
    fn where_the_rule_is_unknown_the_chain_is_asked_once_the_seed_exists() {
        let r = request(1, 100);
        assert_eq!(
            plan(&chain(100), &me(), &local(), Rule::Ask, std::slice::from_ref(&r)),
            vec![Decision::Ask { req_id: 1 }]
        );
    }

    #[test]
    fn a_drained_worker_claims_nothing_new() {
        let l = Local { drained: true, ..local() };
        let d = plan(&chain(120), &me(), &l, Rule::Predict, &[request(1, 100), request(2, 101)]);
        assert!(d.iter().all(|d| matches!(d, Decision::Skip { reason: Skip::Drained, .. })), "{d:?}");
    }

    #[test]
    fn requests_this_worker_cannot_serve_are_skipped_with_the_reason() {
        let mut other_model = request(1, 100);
        other_model.model = B256::repeat_byte(1);
        let mut vision = request(2, 100);
        vision.required_caps = U256::from(3);
        let mut expired = request(3, 100);
        expired.expiry = 999;
        let d = plan(&chain(120), &me(), &local(), Rule::Predict, &[other_model, vision, expired]);
        assert_eq!(d[0], Decision::Skip { req_id: 1, reason: Skip::ModelNotServed });
        assert_eq!(d[1], Decision::Skip { req_id: 2, reason: Skip::MissingCapabilities { missing: U256::from(2) } });
        assert_eq!(d[2], Decision::Skip { req_id: 3, reason: Skip::Expired });
        let mut suspended = me();
        suspended.suspended = true;
        let d = plan(&chain(120), &suspended, &local(), Rule::Predict, &[request(4, 100)]);
        assert_eq!(d[0], Decision::Skip { req_id: 4, reason: Skip::NotEligible("suspended") });
        let mut poor = me();
        poor.stake = lcai(99);
        let d = plan(&chain(120), &poor, &local(), Rule::Predict, &[request(5, 100)]);
        assert_eq!(d[0], Decision::Skip { req_id: 5, reason: Skip::NotEligible("stake below the minimum") });
    }

    #[test]
    fn capacity_counts_claims_in_flight_and_planned_ones() {
        let mut m = me();
        m.active_jobs = 2;
        let mut l = local();
        l.in_flight.insert(9);
        // Window fully open: every request is claimable now; room for one more (2 + 1 in flight + 1 = 4).
        let reqs = [request(1, 100), request(2, 100), request(9, 100)];
        let d = plan(&chain(120), &m, &l, Rule::Predict, &reqs);
        assert!(matches!(d[0], Decision::Claim { req_id: 1, .. }), "{d:?}");
        assert_eq!(d[1], Decision::Skip { req_id: 2, reason: Skip::AtCapacity { active: 2, max: 4 } });
        assert_eq!(d[2], Decision::Skip { req_id: 9, reason: Skip::InFlight });
    }

    #[test]
    fn busy_slots_an_llm_server_down_confirmations_and_retries_hold_claims_back() {
        let busy = Local { busy: true, ..local() };
        assert_eq!(
            plan(&chain(120), &me(), &busy, Rule::Predict, &[request(1, 100)]),
            vec![Decision::Skip { req_id: 1, reason: Skip::Busy }]
        );
        let down = Local { llm_down: true, ..local() };
        assert_eq!(
            plan(&chain(120), &me(), &down, Rule::Predict, &[request(1, 100)]),
            vec![Decision::Skip { req_id: 1, reason: Skip::LlmDown }]
        );
        let confirmations = Local { confirmations: 3, ..local() };
        assert_eq!(
            plan(&chain(101), &me(), &confirmations, Rule::Ask, &[request(1, 100)]),
            vec![Decision::Skip { req_id: 1, reason: Skip::TooRecent }]
        );
        let mut tried = local();
        tried.attempts.insert(1, 3);
        assert_eq!(
            plan(&chain(120), &me(), &tried, Rule::Predict, &[request(1, 100)]),
            vec![Decision::Skip { req_id: 1, reason: Skip::RetriesExhausted }]
        );
    }
}
