//! Append-only projections keyed by the log that produced them: configuration history,
//! withdrawals, keeper bounties and slashes. Unwinding deletes the rows above a block.

use alloy::primitives::{Address, B256, U256};
use rusqlite::Connection;

use super::col::{self, Col};
use super::sql::{Db, Query};
use super::{StoreError, StoreResult};

/// Executes `sql` once per row, in order, with one prepared statement and `bind` binding it.
fn insert_rows<T>(
    conn: &Connection,
    sql: &str,
    rows: &[T],
    bind: impl Fn(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(sql)?;
    for row in rows {
        bind(&mut stmt, row)?;
    }
    Ok(())
}

/// Where a ledger row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LogRef {
    /// Block number.
    pub block_number: u64,
    /// Log index.
    pub log_index: u64,
    /// Block timestamp.
    pub block_timestamp: u64,
    /// Transaction hash.
    pub tx_hash: B256,
}

/// One parameter change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The log.
    pub at: LogRef,
    /// Parameter name (`disputeWindow`, `ackTimeout`, ...).
    pub param: String,
    /// New value (decimal, `0x` address, or `true`/`false`).
    pub value: String,
}

impl ConfigChange {
    /// Records `rows`, in order, with one prepared statement.
    pub fn insert_all(conn: &Connection, rows: &[Self]) -> StoreResult<()> {
        insert_rows(
            conn,
            "INSERT OR REPLACE INTO config_history (block_number, log_index, param, value, block_timestamp) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rows,
            |stmt, row| {
                stmt.execute(rusqlite::params![
                    row.at.block_number as i64,
                    row.at.log_index as i64,
                    row.param,
                    row.value,
                    row.at.block_timestamp as i64
                ])
            },
        )
    }
}

/// A parameter's value in force at the end of `block`.
pub fn config_as_of(conn: &dyn Db, param: &str, block: u64) -> StoreResult<Option<String>> {
    conn.one(
        "SELECT value FROM config_history WHERE param = ?1 AND block_number <= ?2 \
         ORDER BY block_number DESC, log_index DESC LIMIT 1",
        &[&param, &(block.min(i64::MAX as u64) as i64)],
        |r| Ok(col::get::<String>(r, 0)?),
    )
}

/// [`config_as_of`] for a numeric parameter; a value that is not a number is corruption naming
/// the change.
pub fn config_u64_as_of(conn: &dyn Db, param: &str, block: u64) -> StoreResult<Option<u64>> {
    conn.one(
        "SELECT block_number, value FROM config_history WHERE param = ?1 AND block_number <= ?2 \
         ORDER BY block_number DESC, log_index DESC LIMIT 1",
        &[&param, &(block.min(i64::MAX as u64) as i64)],
        |r| Ok((col::get::<u64>(r, 0)?, col::get::<String>(r, 1)?)),
    )?
    .map(|(at, v)| config_u64(param, at, v))
    .transpose()
}

pub(crate) fn config_u64(param: &str, block: u64, value: String) -> StoreResult<u64> {
    value.parse().map_err(|_| StoreError::Corrupt { what: format!("config_history {param} at block {block}"), value })
}

/// The value of every parameter now (its latest change).
pub fn current_params(conn: &dyn Db) -> StoreResult<Vec<(String, String)>> {
    // The body of the view `v_config_current`, which the replica does not have.
    conn.all(
        "SELECT param, value FROM config_history c WHERE NOT EXISTS (
             SELECT 1 FROM config_history n WHERE n.param = c.param
             AND (n.block_number > c.block_number OR (n.block_number = c.block_number AND n.log_index > c.log_index)))",
        &[],
        |r| Ok((col::get::<String>(r, 0)?, col::get::<String>(r, 1)?)),
    )
}

/// Every change of `param`: (block, timestamp, value), oldest first.
pub fn config_history(conn: &dyn Db, param: &str) -> StoreResult<Vec<(u64, u64, String)>> {
    conn.all(
        "SELECT block_number, block_timestamp, value FROM config_history WHERE param = ?1 ORDER BY block_number, log_index",
        &[&param],
        |r| Ok((col::get(r, 0)?, col::get(r, 1)?, col::get(r, 2)?)),
    )
}

/// [`config_history`] of a numeric parameter: (block, timestamp, value); a value that is not a
/// number is corruption naming the change.
pub fn config_history_u64(conn: &dyn Db, param: &str) -> StoreResult<Vec<(u64, u64, u64)>> {
    config_history(conn, param)?.into_iter().map(|(b, t, v)| Ok((b, t, config_u64(param, b, v)?))).collect()
}

/// A worker's withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// The log.
    pub at: LogRef,
    /// Worker.
    pub worker: Address,
    /// Amount.
    pub amount: U256,
}

impl Withdrawal {
    /// Records `rows`, in order, with one prepared statement.
    pub fn insert_all(conn: &Connection, rows: &[Self]) -> StoreResult<()> {
        insert_rows(
            conn,
            "INSERT OR REPLACE INTO withdrawals (block_number, log_index, worker, amount_wei, tx_hash, block_timestamp) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rows,
            |stmt, row| {
                stmt.execute(rusqlite::params![
                    row.at.block_number as i64,
                    row.at.log_index as i64,
                    row.worker.as_slice(),
                    row.amount.out(),
                    row.at.tx_hash.as_slice(),
                    row.at.block_timestamp as i64
                ])
            },
        )
    }
}

/// A keeper bounty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounty {
    /// The log.
    pub at: LogRef,
    /// Job.
    pub job_id: u64,
    /// Keeper.
    pub keeper: Address,
    /// The job's worker, when known.
    pub worker: Option<Address>,
    /// Amount.
    pub amount: U256,
    /// 0 release, 1 timeout.
    pub kind: u8,
}

impl Bounty {
    /// Records `rows`, in order, with one prepared statement.
    pub fn insert_all(conn: &Connection, rows: &[Self]) -> StoreResult<()> {
        insert_rows(
            conn,
            "INSERT OR REPLACE INTO bounties (block_number, log_index, job_id, keeper, worker, amount_wei, kind, tx_hash, \
             block_timestamp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rows,
            |stmt, row| {
                stmt.execute(rusqlite::params![
                    row.at.block_number as i64,
                    row.at.log_index as i64,
                    row.job_id as i64,
                    row.keeper.as_slice(),
                    row.worker.as_ref().map(|w| w.as_slice()),
                    row.amount.out(),
                    row.kind,
                    row.at.tx_hash.as_slice(),
                    row.at.block_timestamp as i64
                ])
            },
        )
    }
}

/// A slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slash {
    /// The log.
    pub at: LogRef,
    /// Worker.
    pub worker: Address,
    /// Amount slashed.
    pub amount: U256,
    /// Stake after it.
    pub new_stake: U256,
    /// The job whose timeout or dispute caused it.
    pub job_id: Option<u64>,
    /// `ack_timeout`, `completion_timeout`, `dispute` or `other`.
    pub reason: String,
}

impl Slash {
    /// Records `rows`, in order, with one prepared statement.
    pub fn insert_all(conn: &Connection, rows: &[Self]) -> StoreResult<()> {
        insert_rows(
            conn,
            "INSERT OR REPLACE INTO slashes (block_number, log_index, worker, amount_wei, new_stake_wei, job_id, reason, \
             tx_hash, block_timestamp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rows,
            |stmt, row| {
                stmt.execute(rusqlite::params![
                    row.at.block_number as i64,
                    row.at.log_index as i64,
                    row.worker.as_slice(),
                    row.amount.out(),
                    row.new_stake.out(),
                    row.job_id.map(|j| j as i64),
                    row.reason,
                    row.at.tx_hash.as_slice(),
                    row.at.block_timestamp as i64
                ])
            },
        )
    }
}

/// Tables cleared above a block on unwind, and emptied by replay.
pub const LEDGER_TABLES: [&str; 4] = ["config_history", "withdrawals", "bounties", "slashes"];

/// Deletes ledger rows above `block`.
pub fn delete_above(conn: &Connection, block: u64) -> StoreResult<()> {
    for t in LEDGER_TABLES {
        conn.prepare_cached(&format!("DELETE FROM {t} WHERE block_number > ?1"))?.execute([block as i64])?;
    }
    Ok(())
}
