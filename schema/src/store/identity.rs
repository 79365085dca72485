//! Which network a store belongs to, checked by every process that uses it.
//!
//! The indexer records the network (chain id and the three contracts) when it creates a store and
//! checks it whenever it opens one ([`Store::open`]). A process that uses a store it does not
//! index (the settler, the worker, the operator verbs) checks it as well, whoever indexes the
//! store: one started with another `--network` on the same data dir would otherwise plan from
//! another chain's jobs and take its nonces from transactions signed for another chain.

use std::path::Path;

use rusqlite::Connection;

use super::{Identity, Store, StoreError, StoreResult};
use crate::profile::Profile;

impl Identity {
    /// The network of `profile`, starting at its start block.
    pub fn of(profile: &Profile) -> Identity {
        Identity { chain_id: profile.chain_id, contracts: profile.contracts, start_block: profile.start_block }
    }

    /// Whether `other` is the same network: the same chain and contracts. The start block is not
    /// part of it: an indexer started with `--from-block` fills a store of the same network from
    /// another block.
    pub fn same_network(&self, other: &Identity) -> bool {
        self.chain_id == other.chain_id && self.contracts == other.contracts
    }

    /// Ok when the store at `path`, which records `stored`, belongs to this network.
    pub(super) fn check(&self, stored: &Identity, path: &Path) -> StoreResult<()> {
        if self.same_network(stored) {
            return Ok(());
        }
        Err(StoreError::IdentityMismatch {
            path: path.to_owned(),
            stored: stored.describe(),
            requested: self.describe(),
        })
    }
}

impl Store {
    /// Opens an existing store for writing as a process that does not index it (the settler's
    /// outbox, the worker, the operator verbs): [`Store::open_existing`], then the store must
    /// belong to `network` ([`StoreError::IdentityMismatch`] names both networks and what to do).
    pub fn open_as(path: &Path, network: &Identity) -> StoreResult<Store> {
        let store = Self::open_existing(path)?;
        store.check_network(network)?;
        Ok(store)
    }

    /// [`Store::open_as`], keeping only the connection.
    pub fn connect_as(path: &Path, network: &Identity) -> StoreResult<Connection> {
        Ok(Self::open_as(path, network)?.conn)
    }

    /// Opens an existing store read-only ([`Store::open_readonly`]) that must belong to
    /// `network`.
    pub fn open_readonly_as(path: &Path, network: &Identity) -> StoreResult<Store> {
        let store = Self::open_readonly(path)?;
        store.check_network(network)?;
        Ok(store)
    }

    /// Ok when this store belongs to `network`; a store without an identity yet is missing.
    pub fn check_network(&self, network: &Identity) -> StoreResult<()> {
        let stored = self.identity()?.ok_or_else(|| StoreError::Missing(self.path.clone()))?;
        network.check(&stored, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::address;

    use super::*;
    use crate::profile::Contracts;

    fn network(chain_id: u64) -> Identity {
        Identity {
            chain_id,
            contracts: Contracts {
                worker_registry: address!("0x00000000000000000000000000000000000000a1"),
                job_registry: address!("0x00000000000000000000000000000000000000a2"),
                ai_config: address!("0x00000000000000000000000000000000000000a3"),
            },
            start_block: 7,
        }
    }

    #[test]
    fn a_process_that_does_not_index_refuses_a_store_of_another_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lcw.db");
        drop(Store::open(&path, &network(31337)).unwrap());

        let mut later = network(31337);
        later.start_block = 900;
        assert!(Store::open_as(&path, &later).is_ok(), "another start block is the same network");
        assert!(Store::connect_as(&path, &network(31337)).is_ok());
        assert!(Store::open_readonly_as(&path, &network(31337)).is_ok());

        let err = Store::open_as(&path, &network(8200)).unwrap_err();
        assert!(matches!(err, StoreError::IdentityMismatch { .. }), "{err}");
        let m = err.to_string();
        assert!(m.contains(&path.display().to_string()), "names the store: {m}");
        assert!(m.contains("belongs to chain 31337") && m.contains("chain 8200"), "names both networks: {m}");
        assert!(m.contains("--data-dir") && m.contains("--db"), "says what to do: {m}");
        assert!(matches!(Store::open_readonly_as(&path, &network(8200)), Err(StoreError::IdentityMismatch { .. })));
        assert!(matches!(Store::connect_as(&path, &network(8200)), Err(StoreError::IdentityMismatch { .. })));

        let mut other = network(31337);
        other.contracts.job_registry = address!("0x00000000000000000000000000000000000000ff");
        let m = Store::open_readonly_as(&path, &other).unwrap_err().to_string();
        assert!(m.contains("0x00000000000000000000000000000000000000A2") || m.contains("00a2"), "{m}");
    }

    #[test]
    fn a_missing_store_is_missing_not_another_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.db");
        assert!(matches!(Store::open_as(&path, &network(1)), Err(StoreError::Missing(_))));
        assert!(matches!(Store::open_readonly_as(&path, &network(1)), Err(StoreError::Missing(_))));
    }
}
