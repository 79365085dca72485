//! Operator state that must survive restarts (`operator_state`, written by the operator verbs):
//! the drained flag. A drained worker claims no new sessions and finishes what it owes.

use alloy::primitives::Address;
use rusqlite::{Connection, params};

use super::sql::{Db, Dialect, Query};
use super::{StoreError, StoreResult, col, unix_now};

/// Sets or clears the drained flag of `worker` (`lcw drain`, `lcw undrain`, `lcw exit`).
pub fn set_drained(conn: &Connection, worker: Address, drained: bool) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO operator_state (worker, key, value, updated_at) VALUES (?1, 'drained', ?2, ?3)
         ON CONFLICT (worker, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![worker.as_slice(), if drained { "1" } else { "0" }, unix_now() as i64])?;
    Ok(())
}

/// Whether `worker` is drained, and since when (unix s). The PostgreSQL replica does not hold
/// `operator_state` (local to the machine lcw runs on): there, no worker is drained as far as
/// it knows.
pub fn drained_since(conn: &dyn Db, worker: Address) -> StoreResult<Option<u64>> {
    if conn.dialect() == Dialect::Postgres {
        return Ok(None);
    }
    let row: Option<(String, i64)> = conn.one(
        "SELECT value, updated_at FROM operator_state WHERE worker = ?1 AND key = 'drained'",
        &[&worker.as_slice()],
        |r| Ok((col::get(r, 0)?, col::get(r, 1)?)),
    )?;
    match row {
        None => Ok(None),
        Some((v, _)) if v == "0" => Ok(None),
        Some((v, at)) if v == "1" => Ok(Some(at as u64)),
        Some((v, _)) => Err(StoreError::Corrupt { what: "operator_state drained".into(), value: v }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drained_flag_survives_and_an_odd_value_is_reported() {
        let contracts = crate::profile::Contracts {
            worker_registry: Address::repeat_byte(0xa1),
            job_registry: Address::repeat_byte(0xa2),
            ai_config: Address::repeat_byte(0xa3),
        };
        let store =
            crate::store::Store::open_in_memory(&crate::store::Identity { chain_id: 1, contracts, start_block: 0 })
                .unwrap();
        let w = Address::repeat_byte(1);
        assert_eq!(drained_since(store.conn(), w).unwrap(), None);
        set_drained(store.conn(), w, true).unwrap();
        assert!(drained_since(store.conn(), w).unwrap().is_some());
        assert!(crate::store::obligations::drained(store.conn(), w).unwrap());
        set_drained(store.conn(), w, false).unwrap();
        assert_eq!(drained_since(store.conn(), w).unwrap(), None);
        store.conn().execute("UPDATE operator_state SET value = 'yes'", []).unwrap();
        assert!(drained_since(store.conn(), w).unwrap_err().to_string().contains("drained"));
    }
}
