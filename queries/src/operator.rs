//! What only the process beside the worker knows, given to the API as read-only sources: the
//! wallet's balance and the cost of a job's gas (read from the node), the key sets on disk
//! (public fields only) and the footprint of each model on the LLM server.
//!
//! The chain's logs hold none of these, and the queries crate talks to no node, reads no key
//! directory and calls no LLM server itself: `lcw run` and `lcw serve` set the sources they can
//! answer ([`crate::ServeConfig::operator`]). A field whose source is absent (an API reading a
//! PostgreSQL replica, `lcw serve` without `--head-rpc`) is null, with the reason where the
//! type has room for one; it is never a guess.

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, B256, U256};
use futures::future::BoxFuture;

/// Why a source could not answer (logged; the API shows a reason of its own, never this error,
/// which may name a node).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a wallet from the node the store indexes.
pub trait WalletSource: Send + Sync {
    /// The balance of `address` at block `block` (eth_getBalance at that block), wei.
    fn balance(&self, address: Address, block: u64) -> BoxFuture<'static, Result<U256, SourceError>>;
    /// The gas cost of one job, wei: one ack and one completion with its blob, at the fees the
    /// worker would sign its next transactions with (the rule of `lcw_worker_runway_jobs`).
    fn job_cost(&self) -> BoxFuture<'static, Result<u128, SourceError>>;
}

/// A key set on disk, by its public fields only: the signing keystore's `address`, the
/// encryption file's suite and public key, and an archived set's `archive.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetInfo {
    /// The active set (`keys/`), or an archived one.
    pub active: bool,
    /// The archived set's directory name under `keys/archive/` (what `lcw keys recover` takes);
    /// `keys` for the active set.
    pub name: String,
    /// The signing key's address.
    pub address: Option<Address>,
    /// The encryption suite's name.
    pub suite: Option<String>,
    /// The encryption public key.
    pub public_key: Option<Vec<u8>>,
    /// Unix time it was archived.
    pub archived_at: Option<u64>,
    /// Why it was archived.
    pub reason: Option<String>,
}

/// Lists the key sets of the data directory: cheap (a few small files), read-only, never a
/// secret.
pub type KeySetsSource = Arc<dyn Fn() -> Result<Vec<KeySetInfo>, SourceError> + Send + Sync>;

/// What one model takes on the LLM server this worker serves it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Memory the loaded model takes, bytes.
    pub bytes: u64,
    /// What else the server says about it (quantisation, context size), for people.
    pub detail: Option<String>,
}

/// The footprint of a model by its id, when the worker has measured it. Called while a request
/// is answered: it must answer from memory.
pub type FootprintSource = Arc<dyn Fn(B256) -> Option<Footprint> + Send + Sync>;

/// Longest a wallet read may take: well inside the API's request time limit, so that a slow node
/// leaves the wallet unknown instead of failing the dashboard's whole request.
pub const WALLET_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The sources of what the store cannot answer. [`Operator::default`] has none.
#[derive(Clone, Default)]
pub struct Operator {
    pub(crate) wallet: Option<Arc<crate::wallet::Wallets>>,
    pub(crate) key_sets: Option<KeySetsSource>,
    pub(crate) footprints: Option<FootprintSource>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("wallet", &self.wallet.is_some())
            .field("key_sets", &self.key_sets.is_some())
            .field("footprints", &self.footprints.is_some())
            .finish()
    }
}

impl Operator {
    /// Wallets read through `source`, each at most once per store block, [`WALLET_TIMEOUT`] each.
    pub fn with_wallet(mut self, source: Arc<dyn WalletSource>) -> Self {
        self.wallet = Some(Arc::new(crate::wallet::Wallets::new(source, WALLET_TIMEOUT)));
        self
    }

    /// Key sets listed by `source`.
    pub fn with_key_sets(mut self, source: KeySetsSource) -> Self {
        self.key_sets = Some(source);
        self
    }

    /// Model footprints given by `source`.
    pub fn with_footprints(mut self, source: FootprintSource) -> Self {
        self.footprints = Some(source);
        self
    }
}
