//! The outbox tables (`outbox`, `outbox_attempts`, `outbox_jobs`): every transaction lcw signs for
//! a key, written by lcw-chain's outbox alone (see `V4__outbox.sql`, `V7__outbox_lanes.sql` and
//! `V10__outbox_policy.sql`). Readers and writers of those tables, with typed rows: statuses,
//! kinds and lanes are enums, amounts exact decimal wei, and a value that does not parse is
//! [`StoreError::Corrupt`] naming the row. Writers are in `write.rs`, readers in `read.rs`.

mod read;
mod write;

pub use read::*;
pub use write::*;

use super::{StoreError, StoreResult};

/// Where an outbox transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Planned, not signed.
    Intent,
    /// Signed, holding its nonce; broadcast, or refused and tried again once per block.
    Sent,
    /// Mined with status 1.
    Mined,
    /// Mined with status 0.
    Reverted,
    /// Never mined: its nonce went to another transaction, it was cancelled, or it was never signed.
    Dropped,
}

impl Status {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Intent => "intent",
            Status::Sent => "sent",
            Status::Mined => "mined",
            Status::Reverted => "reverted",
            Status::Dropped => "dropped",
        }
    }

    /// Parses a column value; an unknown one is corruption.
    pub fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "intent" => Status::Intent,
            "sent" => Status::Sent,
            "mined" => Status::Mined,
            "reverted" => Status::Reverted,
            "dropped" => Status::Dropped,
            other => return Err(corrupt("outbox.status", other)),
        })
    }
}

/// Which task's transactions a row belongs to. One key may send from several tasks at once
/// (`lcw run` settles and serves jobs; an operator verb may run beside `lcw work`): nonces are
/// shared per key, but each lane tracks, bumps, re-broadcasts and cancels only its own rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Releases, timeouts, stuck settlements.
    Settler,
    /// Acks, completions and sortition claims.
    Worker,
    /// One-off operator verbs (register, withdraw, deregister, ...).
    Operator,
}

impl Lane {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Settler => "settler",
            Lane::Worker => "worker",
            Lane::Operator => "operator",
        }
    }

    /// Parses a column value; an unknown one is corruption.
    pub fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "settler" => Lane::Settler,
            "worker" => Lane::Worker,
            "operator" => Lane::Operator,
            other => return Err(corrupt("outbox.lane", other)),
        })
    }
}

/// What an outbox transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `releaseJobs` / `releaseJob`.
    Release,
    /// `claimTimeout`.
    ClaimTimeout,
    /// `settleStuckJob`.
    SettleStuck,
    /// `acknowledgeJob`.
    Ack,
    /// `completeJob` with the response blob.
    Complete,
    /// `claimSession` (sortition).
    Claim,
    /// `registerWorker`.
    Register,
    /// `addModel`.
    AddModel,
    /// `removeModel`.
    RemoveModel,
    /// `topUpStake`.
    TopUpStake,
    /// `reinstate`.
    Reinstate,
    /// `withdraw`.
    Withdraw,
    /// `deregister`.
    Deregister,
    /// A transfer of the wallet's spendable balance to a payout address (`lcw sweep`).
    Sweep,
    /// A zero-value transfer to self that took the nonce of one of lcw's transactions (cancelled,
    /// refused while blocking later nonces, or reorged out and no longer valid).
    Cancel,
    /// A zero-value transfer to self that filled a nonce no row held any more.
    Fill,
}

impl Kind {
    /// Every kind, in column order.
    pub const ALL: [Kind; 16] = [
        Kind::Release,
        Kind::ClaimTimeout,
        Kind::SettleStuck,
        Kind::Ack,
        Kind::Complete,
        Kind::Claim,
        Kind::Register,
        Kind::AddModel,
        Kind::RemoveModel,
        Kind::TopUpStake,
        Kind::Reinstate,
        Kind::Withdraw,
        Kind::Deregister,
        Kind::Sweep,
        Kind::Cancel,
        Kind::Fill,
    ];

    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Release => "release",
            Kind::ClaimTimeout => "claim_timeout",
            Kind::SettleStuck => "settle_stuck",
            Kind::Ack => "ack",
            Kind::Complete => "complete",
            Kind::Claim => "claim",
            Kind::Register => "register",
            Kind::AddModel => "add_model",
            Kind::RemoveModel => "remove_model",
            Kind::TopUpStake => "top_up_stake",
            Kind::Reinstate => "reinstate",
            Kind::Withdraw => "withdraw",
            Kind::Deregister => "deregister",
            Kind::Sweep => "sweep",
            Kind::Cancel => "cancel",
            Kind::Fill => "fill",
        }
    }

    /// Parses a column value; an unknown one is corruption.
    pub fn parse(s: &str) -> StoreResult<Self> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| corrupt("outbox.kind", s))
    }

    /// A transfer to self that only holds a nonce.
    pub fn is_filler(self) -> bool {
        matches!(self, Kind::Cancel | Kind::Fill)
    }
}

/// The most a transaction may offer, in wei per gas and per blob gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceiling {
    /// Ceiling of maxFeePerGas.
    pub per_gas: u128,
    /// Ceiling of maxFeePerBlobGas.
    pub per_blob_gas: u128,
}

/// The fees one signed version offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptFees {
    /// maxFeePerGas.
    pub max_fee: u128,
    /// maxPriorityFeePerGas.
    pub tip: u128,
    /// maxFeePerBlobGas of a type-3 transaction.
    pub blob_fee: Option<u128>,
}

pub(super) fn ceiling(id: i64, per_gas: Option<String>, per_blob_gas: Option<String>) -> StoreResult<Option<Ceiling>> {
    match (per_gas, per_blob_gas) {
        (Some(g), Some(b)) => Ok(Some(Ceiling {
            per_gas: wei(&format!("outbox #{id} cap_per_gas"), &g)?,
            per_blob_gas: wei(&format!("outbox #{id} cap_per_blob_gas"), &b)?,
        })),
        (None, None) => Ok(None),
        (g, b) => Err(corrupt(&format!("outbox #{id} cap"), &format!("{g:?} per gas, {b:?} per blob gas"))),
    }
}

pub(super) fn wei(what: &str, v: &str) -> StoreResult<u128> {
    v.parse().map_err(|_| corrupt(what, v))
}

pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt { what: what.to_owned(), value: value.to_owned() }
}

#[cfg(test)]
mod tests;
