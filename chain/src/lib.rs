//! # lcw-chain: the one chain layer every lcw process uses
//!
//! Everything that talks to a node or signs for a key lives here, so the indexer, the settler,
//! the worker and the operator verbs share one client and one sender:
//!
//! - [`rpc`]: JSON-RPC with retries, backoff and failover over the profile's endpoints, range
//!   refusals recognised (the indexer's log client);
//! - [`node`]: the view of the node that transactions need (heads, fees, simulation at the next
//!   block, raw broadcast, receipts, nonces) over the same failover endpoints;
//! - [`fees`]: fee ceilings per gas and per blob gas, and how fees are written;
//! - [`keys`]: geth v3 keystores and their passwords;
//! - [`outbox`]: every transaction of a key, kept in the store so that nothing is signed twice,
//!   nothing signed is lost, and a restart picks up where the last run stopped.

pub mod fees;
pub mod keys;
pub mod node;
pub mod outbox;
pub mod rpc;

pub use fees::FeeCap;
pub use node::{CallSpec, Chain, Fees, Head, Simulated, patiently};

use lcw_schema::profile::redact_urls;

/// Why a chain operation failed.
///
/// The texts come from nodes and transports, and a transport's error quotes the request URL,
/// API key included: they are redacted when the error is built ([`ChainError::rpc`]) and again
/// whenever it is shown, so that no path into a variant can print a key.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Bad configuration.
    #[error("{}", redact_urls(.0))]
    Config(String),
    /// The node failed or answered nonsense.
    #[error("RPC: {}", redact_urls(.0))]
    Rpc(String),
    /// No RPC endpoint serves the profile's chain (each one that answered serves another).
    #[error(transparent)]
    WrongChain(rpc::RpcError),
    /// The store failed.
    #[error("store: {}", redact_urls(.0))]
    Store(String),
    /// A governance parameter is missing from the store and could not be read from the chain.
    #[error("the store has no value for the AIConfig parameter {0}; index from the deployment block")]
    MissingParam(String),
    /// Signing failed.
    #[error("signing: {}", redact_urls(.0))]
    Sign(String),
    /// A key or keystore problem.
    #[error("{}", redact_urls(.0))]
    Key(String),
    /// The node refused a transaction outright.
    #[error("the node refused the transaction: {}", redact_urls(.0))]
    Rejected(String),
    /// The store refused the intent: one of its jobs already has a live transaction (sent by
    /// another lane or another key). The job is skipped; nothing was signed.
    #[error("not sent: {}", redact_urls(.0))]
    InFlight(String),
}

impl ChainError {
    /// [`ChainError::Rpc`] with `text`'s URLs redacted: for a node's or a transport's error
    /// (`format!("getJob: {e}")`), whose text may quote the endpoint.
    pub fn rpc(text: impl std::fmt::Display) -> Self {
        ChainError::Rpc(redact_urls(&text.to_string()))
    }

    /// [`ChainError::Config`] with `text`'s URLs redacted.
    pub fn config(text: impl std::fmt::Display) -> Self {
        ChainError::Config(redact_urls(&text.to_string()))
    }
}

impl From<rusqlite::Error> for ChainError {
    fn from(e: rusqlite::Error) -> Self {
        ChainError::Store(e.to_string())
    }
}

impl From<lcw_schema::store::StoreError> for ChainError {
    fn from(e: lcw_schema::store::StoreError) -> Self {
        match e {
            lcw_schema::store::StoreError::MissingParam(p) => ChainError::MissingParam(p),
            e => ChainError::Store(e.to_string()),
        }
    }
}

/// An error that may pass if the same thing is tried again later.
pub trait Transient {
    /// Trying again later may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for ChainError {
    /// The node failed (no endpoint answered, a timeout, a rate limit). A wrong chain, a refused
    /// transaction or a bad configuration will not pass.
    fn is_transient(&self) -> bool {
        matches!(self, ChainError::Rpc(_))
    }
}

/// Result alias.
pub type ChainResult<T> = Result<T, ChainError>;
