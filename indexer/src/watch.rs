//! The addresses the indexer watches: the profile's WorkerRegistry, JobRegistry and AIConfig, and
//! every SessionManager AIConfig has published (`SessionManagerAddressUpdated`). A manager is
//! never a profile field: on every network its address is read from AIConfig, and it can move.
//!
//! This is the factory pattern of EVM indexers (a registry announces contracts whose logs must
//! be indexed from then on), handled as the robust ones handle it: the set of addresses is a
//! pure function of the chain, so a backfill, a live follow and a verify of the same blocks see
//! the same logs.
//!
//! - **The rule.** A manager's logs are indexed from the block of its first publication on
//!   (that block included: a request may share the block of the move), and stay indexed after
//!   AIConfig names another one (its open requests can still be claimed). Its logs from before
//!   its publication are not: a log is kept only when its block is at or after its emitter's
//!   first block ([`Watched::keeps`]).
//! - **Known at start.** The managers the store's `config_history` holds (its indexed AIConfig
//!   logs) are known when indexing resumes ([`Watched::load`]).
//! - **Backfill.** Before a backfill, one `eth_getLogs` over AIConfig with topic0 =
//!   SessionManagerAddressUpdated ([`discover`], the ranges split as backfill splits a refused
//!   range, several in flight) names every manager published up to the target block; every range
//!   is then fetched with all the addresses watched by its end. Knowing the set up front keeps
//!   backfill at one request per range (the alternative, re-fetching each range after finding a
//!   publication in it, costs a round trip per move and serialises the pipeline).
//! - **Live.** A block whose logs carry a SessionManagerAddressUpdated naming a new address is
//!   fetched again for that address before it is applied ([`Watched::published_in`]): its logs
//!   may be in the same block. After a reorg the set is loaded from the store again, which the
//!   unwind left as it was at the fork.
//! - **Stores from before.** A store indexed before lcw followed managers holds none of their
//!   logs up to its cursor then; `meta.session_manager_logs_from` (set by the V8 migration)
//!   moves every manager's first block to that block, so that store stays self-consistent and
//!   `lcw verify` agrees with it.
//!
//! Logs of an address that is none of the three profile contracts are decoded as a
//! SessionManager's (the raw layer holds only watched logs), so `lcw replay` needs no list;
//! `lcw verify` counts logs with the same set, discovered from the chain.

use std::collections::{BTreeMap, VecDeque};

use alloy::primitives::Address;
use alloy::sol_types::SolEvent;
use futures::stream::{FuturesUnordered, StreamExt};
use lcw_schema::bindings::AIConfig;
use lcw_schema::profile::Contracts;
use lcw_schema::store::StoreResult;
use lcw_schema::store::sortition;
use rusqlite::Connection;

use crate::answer::LogsAsked;
use crate::backfill::{BackfillOptions, split_range};
use crate::rpc::{FetchedLog, Rpc, RpcError};

/// The watched addresses and the first block of each SessionManager's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    contracts: Contracts,
    /// Manager → block of its first publication.
    managers: BTreeMap<Address, u64>,
    /// No manager log below this block (a store indexed before managers were followed).
    floor: u64,
}

impl Watched {
    /// The profile's contracts and no manager yet; `floor` from
    /// [`sortition::manager_logs_from`].
    pub fn new(contracts: Contracts, floor: Option<u64>) -> Self {
        Watched { contracts, managers: BTreeMap::new(), floor: floor.unwrap_or(0) }
    }

    /// The set the store at `conn` implies: the managers its `config_history` holds.
    pub fn load(conn: &Connection, contracts: Contracts) -> StoreResult<Self> {
        let mut w = Watched::new(contracts, sortition::manager_logs_from(conn)?);
        for (manager, block) in sortition::managers(conn)? {
            w.add(manager, block);
        }
        Ok(w)
    }

    /// The profile's contracts.
    pub fn contracts(&self) -> &Contracts {
        &self.contracts
    }

    /// Records that AIConfig published `manager` in `block`; returns whether it is new. The
    /// zero address and the profile's contracts are never managers.
    pub fn add(&mut self, manager: Address, block: u64) -> bool {
        if manager.is_zero() || self.contracts.all().contains(&manager) {
            return false;
        }
        match self.managers.get_mut(&manager) {
            Some(first) => {
                *first = (*first).min(block);
                false
            }
            None => {
                self.managers.insert(manager, block);
                true
            }
        }
    }

    /// Every manager with the first block whose logs are indexed.
    pub fn managers(&self) -> impl Iterator<Item = (Address, u64)> + '_ {
        self.managers.iter().map(|(m, b)| (*m, (*b).max(self.floor)))
    }

    /// The addresses to fetch logs of for blocks up to `block`: the profile's contracts and the
    /// managers whose logs are indexed by then.
    pub fn addresses_until(&self, block: u64) -> Vec<Address> {
        let mut out = self.contracts.all().to_vec();
        out.extend(self.managers().filter(|(_, from)| *from <= block).map(|(m, _)| m));
        out
    }

    /// Whether a log of `address` in `block` belongs in the store.
    pub fn keeps(&self, address: &Address, block: u64) -> bool {
        match self.managers.get(address) {
            Some(first) => block >= (*first).max(self.floor),
            None => self.contracts.all().contains(address),
        }
    }

    /// Whether a fetch of `from..=to` may return logs [`Watched::keeps`] drops: a manager's
    /// first block falls inside the range.
    pub fn needs_filter(&self, from: u64, to: u64) -> bool {
        self.managers().any(|(_, first)| first > from && first <= to)
    }

    /// Adds the managers AIConfig publishes in `logs`; returns those it did not watch yet.
    pub fn published_in(&mut self, logs: &[FetchedLog]) -> Vec<Address> {
        let mut new = Vec::new();
        for l in logs {
            if let Some(manager) = published(&self.contracts, l)
                && self.add(manager, l.block_number)
            {
                new.push(manager);
            }
        }
        new
    }
}

/// The manager a SessionManagerAddressUpdated log of AIConfig names.
fn published(contracts: &Contracts, log: &FetchedLog) -> Option<Address> {
    if log.removed || log.log.address != contracts.ai_config {
        return None;
    }
    if log.log.topics().first() != Some(&AIConfig::SessionManagerAddressUpdated::SIGNATURE_HASH) {
        return None;
    }
    AIConfig::SessionManagerAddressUpdated::decode_log_data(&log.log.data).ok().map(|e| e.value)
}

/// Adds to `watched` every SessionManager AIConfig publishes in `from..=to`: one `eth_getLogs`
/// for the event over the whole range, split where the node refuses it (with its suggested
/// range when it gives one), `options.concurrency` requests in flight. Every answer is checked
/// ([`crate::read::logs`]): a wrong one is asked of the next endpoint.
pub async fn discover(
    rpc: &Rpc,
    watched: &mut Watched,
    from: u64,
    to: u64,
    options: &BackfillOptions,
) -> Result<(), RpcError> {
    if from > to {
        return Ok(());
    }
    let ai_config = watched.contracts.ai_config;
    let topic0 = AIConfig::SessionManagerAddressUpdated::SIGNATURE_HASH;
    let mut size = (to - from + 1).min(options.max_range.max(1));
    let mut next = from;
    let mut retry: VecDeque<(u64, u64)> = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut found: Vec<FetchedLog> = Vec::new();
    loop {
        while in_flight.len() < options.concurrency.max(1) && (!retry.is_empty() || next <= to) {
            let (a, b) = match retry.pop_front() {
                Some(r) => r,
                None => {
                    let b = next.saturating_add(size - 1).min(to);
                    let r = (next, b);
                    next = b + 1;
                    r
                }
            };
            let asked = LogsAsked::event(a, b, ai_config, topic0);
            let split_above = (a < b).then_some(options.max_response_bytes);
            in_flight.push(async move {
                (a, b, crate::read::logs(rpc, &asked, split_above, options.max_block_bytes).await)
            });
        }
        let Some((a, b, result)) = in_flight.next().await else { break };
        match result {
            Ok(logs) => found.extend(logs),
            Err(RpcError::RangeTooLarge { suggested_to, answer_bytes, .. }) if a < b => {
                let parts = split_range(a, b, suggested_to, answer_bytes, options.max_response_bytes);
                size = parts.iter().map(|(x, y)| y - x + 1).max().unwrap_or(1).max(1);
                retry.extend(parts);
            }
            Err(e) => return Err(e),
        }
    }
    found.sort_by_key(|l| (l.block_number, l.log_index));
    watched.published_in(&found);
    tracing::debug!(from, to, managers = watched.managers.len(), "SessionManagers discovered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{B256, address};

    fn contracts() -> Contracts {
        Contracts {
            worker_registry: address!("0x00000000000000000000000000000000000000a1"),
            job_registry: address!("0x00000000000000000000000000000000000000a2"),
            ai_config: address!("0x00000000000000000000000000000000000000a3"),
        }
    }

    const M1: Address = Address::repeat_byte(0x51);
    const M2: Address = Address::repeat_byte(0x52);

    fn publication(emitter: Address, block: u64, manager: Address) -> FetchedLog {
        let e = AIConfig::SessionManagerAddressUpdated { value: manager };
        FetchedLog {
            log: alloy::primitives::Log { address: emitter, data: e.encode_log_data() },
            block_number: block,
            block_hash: B256::ZERO,
            block_timestamp: None,
            tx_hash: B256::ZERO,
            tx_index: 0,
            log_index: 0,
            removed: false,
        }
    }

    #[test]
    fn a_manager_is_watched_from_its_first_publication_on() {
        let mut w = Watched::new(contracts(), None);
        let new = w.published_in(&[
            publication(contracts().ai_config, 10, M1),
            publication(contracts().ai_config, 20, M2),
            publication(contracts().ai_config, 30, M1),
            // Not AIConfig's: ignored.
            publication(contracts().job_registry, 5, Address::repeat_byte(0x99)),
            publication(contracts().ai_config, 40, Address::ZERO),
        ]);
        assert_eq!(new, vec![M1, M2]);
        assert_eq!(w.managers().collect::<Vec<_>>(), vec![(M1, 10), (M2, 20)]);
        assert!(!w.keeps(&M1, 9) && w.keeps(&M1, 10) && w.keeps(&M1, 35), "still watched after the move");
        assert!(!w.keeps(&M2, 19) && w.keeps(&M2, 20));
        assert!(w.keeps(&contracts().worker_registry, 1));
        assert!(!w.keeps(&Address::repeat_byte(0x99), 50), "only watched addresses");
        assert_eq!(w.addresses_until(15).len(), 4);
        assert_eq!(w.addresses_until(20).len(), 5);
        assert!(w.needs_filter(5, 10) && w.needs_filter(15, 25) && !w.needs_filter(10, 15) && !w.needs_filter(21, 99));
        assert!(!w.add(contracts().job_registry, 1), "a profile contract is never a manager");
    }

    #[test]
    fn a_store_from_before_holds_manager_logs_only_from_its_floor() {
        let mut w = Watched::new(contracts(), Some(50));
        w.add(M1, 10);
        w.add(M2, 60);
        assert_eq!(w.managers().collect::<Vec<_>>(), vec![(M1, 50), (M2, 60)]);
        assert!(!w.keeps(&M1, 49) && w.keeps(&M1, 50));
        assert_eq!(w.addresses_until(49).len(), 3);
    }
}
