//! The outbox's transaction policy, as pure functions: given the key's live transactions, the head
//! (number and base fee), the market fees and each transaction's ceiling, what to do with each one
//! this block (wait, re-broadcast, bump to which fees, cancel, drop), and how to fill a nonce no
//! row holds. No node and no store here: [`super::Outbox::track`] reads the rows, calls [`plan`]
//! and [`fill`], and carries out what they say.
//!
//! The rules (module docs of [`super`] explain why):
//! - a bump raises every fee by [`BUMP_PERCENT`] ([`BLOB_BUMP_PERCENT`] for a blob transaction),
//!   or to the market's fees when they are higher, and never above the ceiling; a replacement the
//!   node would refuse under its own rule (+10 %, blob +100 % on every fee) is not signed;
//! - a transaction bumps when it has waited [`STUCK_BLOCKS`] since its last signing (or its last
//!   refused bump), or at once when the base fee has passed its max fee; not when the base fee is
//!   above its ceiling (no fee it may offer gets it in), not at its ceiling, not when the node
//!   refuses it for lack of funds, and never past [`MAX_ATTEMPTS`] versions;
//! - a waiting transaction is re-broadcast at most once per block: every block while the node
//!   refuses it, every [`REBROADCAST_BLOCKS`] once a node has taken it;
//! - a refused transaction that holds back later nonces of the key gives its nonce to a
//!   zero-value transfer to self from the next block on; another lane's does the same once that
//!   lane has stopped re-broadcasting it for [`ORPHAN_BLOCKS`];
//! - a nonce no row holds below a live transaction is signed again by the row that held it when
//!   that row is this lane's and still wanted, or else taken by a transfer to self.
//!
//! Heads, fees and ceilings come from nodes and the store: arithmetic here saturates or is checked,
//! never overflows (a panic in a debug build, a wrapped value in a release one). Clippy holds the
//! module to it (`arithmetic_side_effects`, `cast_possible_truncation`); the lint is per module,
//! for the modules that compute money and time from outside values, because across the workspace it
//! would mostly flag counters and lengths the process made itself.
#![warn(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]

use lcw_schema::store::outbox::{AttemptFees, Ceiling, DroppedTx, Lane, LiveTx};

use crate::fees::FeeCap;
use crate::node::Fees;

/// Blocks a transaction may wait after its last signing before its fees are bumped.
pub const STUCK_BLOCKS: u64 = 3;
/// Fee bump per replacement, in percent (nodes require at least 10; 25 clears every pool's rule).
pub const BUMP_PERCENT: u128 = 25;
/// Fee bump per replacement of a blob transaction (geth's blob pool requires 100 % on every fee).
pub const BLOB_BUMP_PERCENT: u128 = 100;
/// What a node requires of a replacement of a regular transaction, in percent on each fee.
pub const MIN_REPLACEMENT_PERCENT: u128 = 10;
/// Signed versions per transaction at most (the first and 7 bumps); then it waits at its last.
pub const MAX_ATTEMPTS: u32 = 8;
/// Blocks between re-broadcasts of a transaction a node has accepted.
pub const REBROADCAST_BLOCKS: u64 = 3;
/// Blocks after which another lane's refused transaction that nobody re-broadcasts counts as
/// abandoned (its process is gone) and any lane may give its nonce to a transfer to self.
pub const ORPHAN_BLOCKS: u64 = 2;
/// Nonces filled per head at most (a longer run of gaps is filled over the next heads).
pub const MAX_FILLS_PER_HEAD: usize = 16;

/// The chain as the policy needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Market {
    /// Head number.
    pub head: u64,
    /// Base fee of the head.
    pub base_fee: u128,
    /// What a new transaction would offer now (None: unknown, nothing is bumped or filled).
    pub fees: Option<Fees>,
}

/// Why the node refused a transaction, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The wallet cannot pay gas × max fee + value (+ blob gas): more fee cannot help.
    Funds,
    /// The fee is too low for the pool or the block: a bump can help.
    Fee,
    /// Anything else (intrinsic gas, gas limit, ...).
    Other,
}

impl Refusal {
    /// Reads a node's refusal message.
    pub fn of(reason: &str) -> Refusal {
        let m = reason.to_lowercase();
        if m.contains("insufficient funds") || m.contains("insufficient balance") {
            Refusal::Funds
        } else if m.contains("underpriced")
            || m.contains("fee too low")
            || m.contains("less than block base fee")
            || m.contains("max fee per gas less than")
            || m.contains("fee cap less than")
            || m.contains("tip too low")
        {
            Refusal::Fee
        } else {
            Refusal::Other
        }
    }
}

/// Why a transaction is left as it is this block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Not stuck: waiting to be mined.
    Pending,
    /// The node refuses it; fees are not the reason (or a bump would not help).
    Refused,
    /// Its max fee is at its ceiling.
    AtCeiling,
    /// The base fee is above its ceiling: no fee it may offer gets it in.
    PricedOut,
    /// It has [`MAX_ATTEMPTS`] versions.
    AttemptLimit,
    /// A replacement the node would accept would have to exceed the ceiling.
    Unreplaceable,
    /// Its last bump was refused less than [`STUCK_BLOCKS`] ago, or no market fees are known.
    Holding,
}

/// What to do with one live transaction this block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Its nonce is used on chain and no version of it has a receipt: another transaction took it.
    Drop {
        /// Row id.
        id: i64,
        /// Its nonce.
        nonce: u64,
    },
    /// Send its latest version again.
    Rebroadcast {
        /// Row id.
        id: i64,
        /// Why it is not replaced instead.
        why: Why,
    },
    /// Nothing this block.
    Wait {
        /// Row id.
        id: i64,
        /// Why.
        why: Why,
    },
    /// Replace it at its nonce with these fees.
    Bump {
        /// Row id.
        id: i64,
        /// The new version's fees.
        fees: AttemptFees,
    },
    /// Give its nonce to a zero-value transfer to self at these fees; the row is dropped.
    Cancel {
        /// Row id.
        id: i64,
        /// The transfer's fees.
        fees: Fees,
    },
}

/// A [`Ceiling`] as a [`FeeCap`].
pub fn cap_of(c: Option<Ceiling>, default: FeeCap) -> FeeCap {
    c.map(|c| FeeCap { per_gas: c.per_gas, per_blob_gas: c.per_blob_gas }).unwrap_or(default)
}

/// `v` raised by `percent`, rounded up and by at least 1; saturates at `u128::MAX`.
pub fn raise(v: u128, percent: u128) -> u128 {
    let whole = (v / 100).saturating_mul(percent);
    // `(v % 100) · percent / 100` split the same way, so that no product can overflow.
    let rest = v % 100;
    let part = rest.saturating_mul(percent / 100).saturating_add(rest.saturating_mul(percent % 100).div_ceil(100));
    v.saturating_add(whole.saturating_add(part)).max(v.saturating_add(1))
}

/// The least a node takes as a replacement of a fee `v` under a `percent` rule (geth's
/// `old * (100 + percent) / 100`, rounded down); saturates.
pub fn threshold(v: u128, percent: u128) -> u128 {
    let rest = v % 100;
    let part = rest.saturating_mul(percent / 100).saturating_add(rest.saturating_mul(percent % 100) / 100);
    v.saturating_add((v / 100).saturating_mul(percent).saturating_add(part))
}

/// The market's fees under a ceiling: what a first signing offers.
pub fn capped(market: Fees, cap: FeeCap) -> Fees {
    let max_fee = market.max_fee.min(cap.per_gas);
    Fees { max_fee, tip: market.tip.min(max_fee) }
}

/// The fees of a replacement of `last`: every fee raised by the bump rule, or to the market's when
/// that is higher, and never above `cap`. `Err` when the node's replacement rule cannot be met
/// under the ceiling (the transaction then waits at the version it has).
pub fn replacement(last: AttemptFees, market: Fees, cap: FeeCap) -> Result<AttemptFees, Why> {
    let blob = last.blob_fee.is_some();
    let (percent, least) =
        if blob { (BLOB_BUMP_PERCENT, BLOB_BUMP_PERCENT) } else { (BUMP_PERCENT, MIN_REPLACEMENT_PERCENT) };
    let max_fee = raise(last.max_fee, percent).max(market.max_fee).min(cap.per_gas);
    let tip = raise(last.tip, percent).max(market.tip).min(max_fee);
    let blob_fee = last.blob_fee.map(|b| raise(b, percent).min(cap.per_blob_gas));
    let fee_ok = max_fee > last.max_fee && max_fee >= threshold(last.max_fee, least);
    let tip_ok = tip >= threshold(last.tip, least);
    let blob_ok = match (last.blob_fee, blob_fee) {
        (Some(old), Some(new)) => new > old && new >= threshold(old, least),
        _ => true,
    };
    if fee_ok && tip_ok && blob_ok { Ok(AttemptFees { max_fee, tip, blob_fee }) } else { Err(Why::Unreplaceable) }
}

/// The fees of a transfer to self that takes `tx`'s nonce: the market's under the ceiling, and,
/// when a node may still hold `tx`, enough above its last version to replace it.
pub fn cancel_fees(tx: &LiveTx, market: Option<Fees>, cap: FeeCap) -> Fees {
    let last = Fees { max_fee: tx.last.max_fee, tip: tx.last.tip };
    let base = capped(market.unwrap_or(last), cap);
    if tx.accepted_block.is_none() {
        return base;
    }
    let max_fee = base.max_fee.max(raise(last.max_fee, BUMP_PERCENT)).min(cap.per_gas);
    Fees { max_fee, tip: base.tip.max(raise(last.tip, BUMP_PERCENT)).min(max_fee) }
}

/// What to do this block with each live transaction of `lane`, and with other lanes' abandoned
/// refused ones. `live` is every live transaction of the key (all lanes) whose versions have no
/// receipt; `latest_nonce` the key's nonce at the latest block; `default_cap` the ceiling of rows
/// that have none stored.
pub fn plan(lane: Lane, market: &Market, latest_nonce: u64, default_cap: FeeCap, live: &[LiveTx]) -> Vec<Action> {
    let highest = live.iter().map(|t| t.nonce).max();
    let mut out = Vec::new();
    for tx in live {
        let cap = cap_of(tx.cap, default_cap);
        let blocking = highest.is_some_and(|h| h > tx.nonce);
        let refusal = tx.refusal.as_deref().map(Refusal::of);
        // A refused transaction that holds back later nonces, refused since an earlier block and
        // not for its fee (a bump is the cure for that): its nonce goes to a transfer to self.
        let cancel = blocking
            && tx.nonce >= latest_nonce
            && !tx.kind.is_filler()
            && refusal.is_some_and(|r| r != Refusal::Fee)
            && tx.refused_block.is_some_and(|b| b < market.head);
        if tx.lane != lane {
            let abandoned = tx.broadcast_block.is_none_or(|b| b.saturating_add(ORPHAN_BLOCKS) <= market.head);
            if cancel && abandoned {
                out.push(Action::Cancel { id: tx.id, fees: cancel_fees(tx, market.fees, cap) });
            }
            continue;
        }
        if tx.nonce < latest_nonce {
            out.push(Action::Drop { id: tx.id, nonce: tx.nonce });
            continue;
        }
        if cancel {
            out.push(Action::Cancel { id: tx.id, fees: cancel_fees(tx, market.fees, cap) });
            continue;
        }
        let why = match bump(tx, refusal, market, cap) {
            Ok(fees) => {
                out.push(Action::Bump { id: tx.id, fees });
                continue;
            }
            Err(why) => why,
        };
        out.push(if rebroadcast_due(tx, market.head) {
            Action::Rebroadcast { id: tx.id, why }
        } else {
            Action::Wait { id: tx.id, why }
        });
    }
    out
}

/// Whether `tx` is stuck and may be replaced, and at which fees; else why not.
fn bump(tx: &LiveTx, refusal: Option<Refusal>, market: &Market, cap: FeeCap) -> Result<AttemptFees, Why> {
    let head = market.head;
    let tried = tx.bump_tried_block.filter(|b| *b > tx.signed_head);
    let waited = head.saturating_sub(tx.signed_head.max(tried.unwrap_or(0))) >= STUCK_BLOCKS;
    let priced_out = tx.last.max_fee < market.base_fee;
    let retry_ok = tried.is_none_or(|b| head.saturating_sub(b) >= STUCK_BLOCKS);
    let stuck = waited || ((priced_out || refusal == Some(Refusal::Fee)) && retry_ok);
    let quiet = if refusal.is_some() { Why::Refused } else { Why::Pending };
    if tx.broadcast_block.is_some_and(|b| b >= head) {
        // Sent this block already (a caller may track the same head several times).
        return Err(if stuck { Why::Holding } else { quiet });
    }
    if !stuck {
        return Err(if tried.is_some() { Why::Holding } else { quiet });
    }
    if refusal == Some(Refusal::Funds) {
        // More fee only makes a wallet that cannot pay less able to.
        return Err(Why::Refused);
    }
    let Some(fees) = market.fees else { return Err(Why::Holding) };
    if tx.attempts >= MAX_ATTEMPTS {
        return Err(Why::AttemptLimit);
    }
    if market.base_fee > cap.per_gas {
        return Err(Why::PricedOut);
    }
    if tx.last.max_fee >= cap.per_gas {
        return Err(Why::AtCeiling);
    }
    replacement(tx.last, fees, cap)
}

/// Whether `tx`'s latest version goes out again this block.
fn rebroadcast_due(tx: &LiveTx, head: u64) -> bool {
    match tx.broadcast_block {
        None => true,
        Some(b) if b >= head => false,
        Some(b) => tx.refusal.is_some() || tx.accepted_block.is_none() || head.saturating_sub(b) >= REBROADCAST_BLOCKS,
    }
}

/// Nonces below the key's highest live one, at or above `latest_nonce`, that no row holds
/// (`held`: nonces of sent, mined and reverted rows), lowest first, at most [`MAX_FILLS_PER_HEAD`].
pub fn gaps(latest_nonce: u64, held: &[u64], highest_live: Option<u64>) -> Vec<u64> {
    let Some(top) = highest_live else { return Vec::new() };
    let held: std::collections::BTreeSet<u64> = held.iter().copied().collect();
    (latest_nonce..top).filter(|n| !held.contains(n)).take(MAX_FILLS_PER_HEAD).collect()
}

/// How a nonce no row holds is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The row that held it is signed again at these fees (its lane is this lane, it acts on jobs
    /// and none of them went out in another transaction since).
    Resign {
        /// Row id.
        id: i64,
        /// Fees of the new version.
        fees: AttemptFees,
    },
    /// A zero-value transfer to self at these fees, under this ceiling.
    Transfer {
        /// Fees.
        fees: Fees,
        /// Its ceiling.
        cap: FeeCap,
    },
}

/// How this lane fills a nonce no row holds, given the row that held it last, if any.
/// `filler_cap` is the ceiling of a transfer that stands for no row (the lane's operator cap).
pub fn fill(lane: Lane, dropped: Option<&DroppedTx>, market: Fees, filler_cap: FeeCap) -> Fill {
    if let Some(d) = dropped {
        let wanted = d.lane == lane && !d.kind.is_filler() && !d.jobs.is_empty() && d.jobs_free;
        let cap = cap_of(d.cap, filler_cap);
        if wanted && d.attempts < MAX_ATTEMPTS {
            let f = capped(market, cap);
            let blob_fee = d.last.blob_fee.map(|b| b.min(cap.per_blob_gas));
            return Fill::Resign { id: d.id, fees: AttemptFees { max_fee: f.max_fee, tip: f.tip, blob_fee } };
        }
        return Fill::Transfer { fees: capped(market, cap), cap };
    }
    Fill::Transfer { fees: capped(market, filler_cap), cap: filler_cap }
}

#[cfg(test)]
mod tests;
