//! The key sets on disk (the active one and every archived one), by their public fields, joined
//! with what the store says each address holds on chain: an archived set whose address still
//! holds stake is the only way back to that stake, so it is flagged with the command that
//! recovers it. Read-only: the API never reads a secret, nor holds a key.

use alloy::primitives::{Address as EthAddress, U256};
use async_graphql::{Context, SimpleObject};
use lcw_schema::store::rows::WorkerRow;

use crate::operator::{KeySetInfo, Operator};
use crate::scalars::{Address, BigInt, Timestamp};

/// Most key sets listed (a directory holds a handful; more is not a key archive).
pub const MAX_KEY_SETS: usize = 100;

/// A key set on disk, with what its address holds on chain at the store's cursor.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    /// The set in keys/ that lcw signs with; else an archived one in keys/archive/.
    pub active: bool,
    /// The archived set's directory under keys/archive/ (what `lcw keys recover` takes);
    /// `keys` for the active set.
    pub name: String,
    /// The signing key's address (from the keystore's public `address` field).
    pub address: Option<Address>,
    /// The encryption suite.
    pub suite: Option<String>,
    /// The first 4 bytes of keccak256 of the encryption public key, hex (as `lcw keys list`).
    pub fingerprint: Option<String>,
    pub archived_at: Option<Timestamp>,
    /// Why it was archived.
    pub reason: Option<String>,
    /// The address is registered, at the store's cursor.
    pub registered: bool,
    /// The address's stake at the store's cursor, wei.
    pub stake: BigInt,
    /// Whether the encryption key registered for the address is this set's (null when either
    /// is unknown).
    pub key_matches: Option<bool>,
    /// An archived set whose address still holds stake: recover it to withdraw the stake.
    pub still_staked: bool,
    /// The command that makes this set active again, for a set still holding stake.
    pub recover_command: Option<String>,
}

/// What the store holds for an address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnChain<'a> {
    pub registered: bool,
    pub stake: U256,
    pub encryption_key: Option<&'a [u8]>,
}

/// Whether `set` is an archived set that still holds stake: its address is registered with
/// stake, under this set's encryption key, or under no other set's address. The rule of
/// `lcw keys list`.
pub fn still_staked(set: &KeySetInfo, chain: &OnChain<'_>, active_address: Option<EthAddress>) -> bool {
    let key_matches = key_matches(set, chain);
    !set.active
        && chain.registered
        && !chain.stake.is_zero()
        && (key_matches == Some(true) || set.address != active_address)
}

fn key_matches(set: &KeySetInfo, chain: &OnChain<'_>) -> Option<bool> {
    Some(set.public_key.as_deref()? == chain.encryption_key?)
}

/// The key sets, or null when this API has no data directory to read (a replica's API).
pub(crate) async fn list(ctx: &Context<'_>) -> async_graphql::Result<Option<Vec<KeySet>>> {
    let Some(source) = ctx.data_opt::<Operator>().and_then(|o| o.key_sets.clone()) else { return Ok(None) };
    let sets = tokio::task::spawn_blocking(move || source())
        .await
        .map_err(|e| async_graphql::Error::new(format!("listing the key sets failed: {e}")))?
        .map_err(|e| async_graphql::Error::new(format!("cannot list the key sets in the data directory: {e}")))?;
    let sets: Vec<KeySetInfo> = sets.into_iter().take(MAX_KEY_SETS).collect();
    let rows = crate::api::db(ctx)?
        .read(move |conn| {
            let mut rows = Vec::with_capacity(sets.len());
            for s in sets {
                let row = match s.address {
                    Some(a) => WorkerRow::get(conn, &a)?,
                    None => None,
                };
                rows.push((s, row));
            }
            Ok(rows)
        })
        .await
        .map_err(crate::api::gql)?;
    let active_address = rows.iter().find(|(s, _)| s.active).and_then(|(s, _)| s.address);
    Ok(Some(rows.iter().map(|(s, row)| view(s, row.as_ref(), active_address)).collect()))
}

fn view(s: &KeySetInfo, row: Option<&WorkerRow>, active_address: Option<EthAddress>) -> KeySet {
    let chain = row
        .map(|r| OnChain {
            registered: r.registered,
            stake: r.stake_wei,
            encryption_key: r.encryption_key.as_ref().map(|k| k.as_ref()),
        })
        .unwrap_or_default();
    let staked = still_staked(s, &chain, active_address);
    KeySet {
        active: s.active,
        name: s.name.clone(),
        address: s.address.map(Address),
        suite: s.suite.clone(),
        fingerprint: s.public_key.as_deref().map(fingerprint),
        archived_at: s.archived_at.map(Timestamp),
        reason: s.reason.clone(),
        registered: chain.registered,
        stake: BigInt(chain.stake),
        key_matches: key_matches(s, &chain),
        still_staked: staked,
        recover_command: staked.then(|| format!("lcw keys recover {}", s.name)),
    }
}

/// As `lcw keys list` shows it: the first 4 bytes of the key's keccak256, hex.
pub fn fingerprint(public_key: &[u8]) -> String {
    alloy::hex::encode(&alloy::primitives::keccak256(public_key)[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(active: bool, address: u8, key: u8) -> KeySetInfo {
        KeySetInfo {
            active,
            name: if active { "keys".into() } else { format!("20261201T000000Z-{key:02x}") },
            address: Some(EthAddress::repeat_byte(address)),
            suite: Some("p256-aesgcm".into()),
            public_key: Some(vec![key; 33]),
            archived_at: (!active).then_some(1_764_547_200),
            reason: None,
        }
    }

    #[test]
    fn an_archived_set_is_flagged_while_its_address_holds_stake() {
        let stake = U256::from(5u64);
        let key = [9u8; 33];
        let staked = OnChain { registered: true, stake, encryption_key: Some(&key) };
        let active = Some(EthAddress::repeat_byte(1));
        // Another address than the active set's, registered with stake: flagged.
        assert!(still_staked(&set(false, 2, 7), &staked, active));
        // Not registered, or no stake left: nothing to recover.
        assert!(!still_staked(&set(false, 2, 7), &OnChain { registered: false, ..staked }, active));
        assert!(!still_staked(&set(false, 2, 7), &OnChain { stake: U256::ZERO, ..staked }, active));
        // The active set is never flagged.
        assert!(!still_staked(&set(true, 2, 7), &staked, Some(EthAddress::repeat_byte(2))));
        // Same address as the active set: only when the stake is registered under this set's key.
        assert!(!still_staked(&set(false, 1, 7), &staked, active));
        assert!(still_staked(&set(false, 1, 9), &staked, active));
    }

    #[test]
    fn a_flagged_set_says_how_to_recover_it() {
        let s = set(false, 2, 7);
        let row = WorkerRow {
            registered: true,
            stake_wei: U256::from(5u64),
            ..WorkerRow::new(EthAddress::repeat_byte(2), 1)
        };
        let v = view(&s, Some(&row), Some(EthAddress::repeat_byte(1)));
        assert!(v.still_staked);
        assert_eq!(v.recover_command.as_deref(), Some("lcw keys recover 20261201T000000Z-07"));
        assert_eq!(v.key_matches, None, "the store knows no registered key");
        let v = view(&s, None, None);
        assert!(!v.still_staked && v.recover_command.is_none() && v.stake == BigInt(U256::ZERO));
    }
}
