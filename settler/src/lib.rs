//! # lcw-settler: exact releases and the worker's exit
//!
//! From the store it derives each job's exact `releasableAt` (`completedAt` + the dispute window
//! in force, following `DisputeParamsUpdated`) and lands `releaseJobs` in the first block whose
//! timestamp reaches it, reasoning in chain time (`lcw_schema::rules::schedule`). Its own transactions go through
//! an outbox table ([`outbox`]: intent before signing, raw transaction before broadcast, explicit
//! nonces, fee bumping, re-broadcast after restart, re-queue after a reorg), shared with the
//! worker. Keeper mode also claims timeouts for bounties. The operator's exit commands (drain,
//! release, withdraw, deregister, exit) sit on the pure exit plan (`lcw_schema::rules::exit`).
//! Entry point: [`settle::run`].

pub mod chain;
pub mod keys;
pub mod ops;
pub mod outbox;
pub mod settle;

/// Why settling failed.
#[derive(Debug, thiserror::Error)]
pub enum SettlerError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// The node failed or answered nonsense.
    #[error("RPC: {0}")]
    Rpc(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// A governance parameter is missing from the store and could not be read from the chain.
    #[error("the store has no value for the AIConfig parameter {0}; index from the deployment block")]
    MissingParam(String),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
    /// A key or keystore problem.
    #[error("{0}")]
    Key(String),
    /// The node refused a transaction outright.
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
}

impl From<rusqlite::Error> for SettlerError {
    fn from(e: rusqlite::Error) -> Self {
        SettlerError::Store(e.to_string())
    }
}

impl From<lcw_schema::store::StoreError> for SettlerError {
    fn from(e: lcw_schema::store::StoreError) -> Self {
        match e {
            lcw_schema::store::StoreError::MissingParam(p) => SettlerError::MissingParam(p),
            e => SettlerError::Store(e.to_string()),
        }
    }
}

/// Result alias.
pub type SettlerResult<T> = Result<T, SettlerError>;
