//! The raw layer: logs verbatim, blocks, the cursor, covered ranges, transaction values and the
//! results of view calls made at indexing time (`call_results`).

use alloy::primitives::{Address, B256, Bytes, U256};
use rusqlite::{Connection, OptionalExtension};

use super::col::{self, Col};
use super::sql::{Db, Query, Row};
use super::{StoreResult, unix_now};

/// A log of a watched contract, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLog {
    /// Block number.
    pub block_number: u64,
    /// Index of the log in its block.
    pub log_index: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Block timestamp (unix seconds).
    pub block_timestamp: u64,
    /// Transaction hash.
    pub tx_hash: B256,
    /// Index of the transaction in its block.
    pub tx_index: u64,
    /// Emitting contract.
    pub address: Address,
    /// Topics (0 to 4).
    pub topics: Vec<B256>,
    /// Data.
    pub data: Bytes,
    /// Decoded event name; None when undecodable.
    pub event: Option<String>,
    /// Why decoding failed.
    pub decode_error: Option<String>,
    /// The job the event is about.
    pub job_id: Option<u64>,
}

pub(crate) const LOG_COLUMNS: &str = "block_number, log_index, block_hash, block_timestamp, tx_hash, tx_index, address, \
                           topic0, topic1, topic2, topic3, data, event, decode_error, job_id";

/// Logs per multi-row INSERT: SQLite's per-statement cost dominates a narrow insert, so rows go
/// in groups (15 columns × 32 rows stays under SQLite's 32,766-parameter limit).
const ROWS_PER_INSERT: usize = 32;

fn insert_logs_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO logs (block_number, log_index, block_hash, block_timestamp, tx_hash, tx_index, address, \
         topic0, topic1, topic2, topic3, data, event, decode_error, job_id) VALUES ",
    );
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..15 {
            sql.push_str(if c == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
    }
    sql
}

/// Inserts many logs: buffered and written `ROWS_PER_INSERT` per statement. Call
/// [`LogInserter::finish`] to write the remainder.
pub struct LogInserter<'c> {
    conn: &'c Connection,
    many: rusqlite::CachedStatement<'c>,
    pending: Vec<RawLog>,
}

impl std::fmt::Debug for LogInserter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogInserter").field("pending", &self.pending.len()).finish()
    }
}

fn bind_log<'a>(values: &mut Vec<rusqlite::types::ToSqlOutput<'a>>, log: &'a RawLog) {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    let int = |v: u64| ToSqlOutput::Owned(Value::Integer(v as i64));
    let blob = |b: &'a [u8]| ToSqlOutput::Borrowed(ValueRef::Blob(b));
    let opt_blob = |b: Option<&'a B256>| b.map(|b| blob(b.as_slice())).unwrap_or(ToSqlOutput::Owned(Value::Null));
    let opt_text = |t: Option<&'a str>| {
        t.map(|t| ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes()))).unwrap_or(ToSqlOutput::Owned(Value::Null))
    };
    values.push(int(log.block_number));
    values.push(int(log.log_index));
    values.push(blob(log.block_hash.as_slice()));
    values.push(int(log.block_timestamp));
    values.push(blob(log.tx_hash.as_slice()));
    values.push(int(log.tx_index));
    values.push(blob(log.address.as_slice()));
    for i in 0..4 {
        values.push(opt_blob(log.topics.get(i)));
    }
    values.push(blob(&log.data));
    values.push(opt_text(log.event.as_deref()));
    values.push(opt_text(log.decode_error.as_deref()));
    values.push(log.job_id.map(int).unwrap_or(ToSqlOutput::Owned(Value::Null)));
}

impl<'c> LogInserter<'c> {
    /// Prepares the inserts on `conn`.
    pub fn new(conn: &'c Connection) -> StoreResult<Self> {
        static MANY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let many = conn.prepare_cached(MANY.get_or_init(|| insert_logs_sql(ROWS_PER_INSERT)))?;
        Ok(LogInserter { conn, many, pending: Vec::with_capacity(ROWS_PER_INSERT) })
    }

    /// Queues one log (written when a group is full, or by `finish`).
    pub fn insert(&mut self, log: RawLog) -> StoreResult<()> {
        self.pending.push(log);
        if self.pending.len() == ROWS_PER_INSERT {
            let mut values = Vec::with_capacity(ROWS_PER_INSERT * 15);
            for l in &self.pending {
                bind_log(&mut values, l);
            }
            self.many.execute(rusqlite::params_from_iter(values.iter()))?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes the logs still queued.
    pub fn finish(mut self) -> StoreResult<()> {
        for log in std::mem::take(&mut self.pending) {
            log.insert(self.conn)?;
        }
        Ok(())
    }
}

impl RawLog {
    /// Inserts the log (for many, use [`LogInserter`]).
    pub fn insert(&self, conn: &Connection) -> StoreResult<()> {
        let t = |i: usize| self.topics.get(i).map(|t| t.as_slice());
        let mut stmt = conn.prepare_cached(
            "INSERT INTO logs (block_number, log_index, block_hash, block_timestamp, tx_hash, tx_index, address, \
             topic0, topic1, topic2, topic3, data, event, decode_error, job_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?;
        stmt.execute(rusqlite::params![
            self.block_number as i64,
            self.log_index as i64,
            self.block_hash.as_slice(),
            self.block_timestamp as i64,
            self.tx_hash.as_slice(),
            self.tx_index as i64,
            self.address.as_slice(),
            t(0),
            t(1),
            t(2),
            t(3),
            self.data.as_ref(),
            self.event.as_deref(),
            self.decode_error.as_deref(),
            self.job_id.map(|j| j as i64),
        ])?;
        Ok(())
    }

    pub(crate) fn from_row(r: &dyn Row) -> rusqlite::Result<RawLog> {
        let mut topics = Vec::with_capacity(4);
        for i in 7..11 {
            if let Some(t) = col::get::<Option<B256>>(r, i)? {
                topics.push(t);
            }
        }
        Ok(RawLog {
            block_number: col::get(r, 0)?,
            log_index: col::get(r, 1)?,
            block_hash: col::get(r, 2)?,
            block_timestamp: col::get(r, 3)?,
            tx_hash: col::get(r, 4)?,
            tx_index: col::get(r, 5)?,
            address: col::get(r, 6)?,
            topics,
            data: col::get(r, 11)?,
            event: col::get(r, 12)?,
            decode_error: col::get(r, 13)?,
            job_id: col::get(r, 14)?,
        })
    }

    /// Calls `f` for every log from `from` to `to` (inclusive) in chain order, without loading
    /// them all at once.
    pub fn for_each(
        conn: &dyn Db,
        from: u64,
        to: u64,
        mut f: impl FnMut(RawLog) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM logs WHERE block_number BETWEEN ?1 AND ?2 ORDER BY block_number, log_index"
        );
        conn.each(&sql, &[&(from as i64), &(to.min(i64::MAX as u64) as i64)], &mut |r| {
            f(Self::from_row(r)?)?;
            Ok(true)
        })
    }

    /// Logs of one job in chain order (its timeline).
    pub fn of_job(conn: &dyn Db, job_id: u64) -> StoreResult<Vec<RawLog>> {
        // `job_id IS NOT NULL` repeats the partial index's condition, so the index is usable
        // without looking at the bound value. Connections plan with the stability guarantee
        // (`configure`), which keeps SQLite from re-preparing this statement for every new id.
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM logs WHERE job_id = ?1 AND job_id IS NOT NULL ORDER BY block_number, log_index"
        );
        conn.all(&sql, &[&(job_id as i64)], |r| Ok(Self::from_row(r)?))
    }

    /// How many logs the store holds between `from` and `to` (inclusive).
    pub fn count(conn: &dyn Db, from: u64, to: u64) -> StoreResult<u64> {
        let n = conn.one(
            "SELECT count(*) FROM logs WHERE block_number BETWEEN ?1 AND ?2",
            &[&(from as i64), &(to as i64)],
            |r| Ok(col::get::<u64>(r, 0)?),
        )?;
        // A count answers one row.
        Ok(n.unwrap_or(0))
    }

    /// Logs that could not be decoded, most recent first (at most `limit`).
    pub fn undecodable(conn: &dyn Db, limit: u64) -> StoreResult<Vec<RawLog>> {
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM logs WHERE event IS NULL ORDER BY block_number DESC, log_index DESC LIMIT ?1"
        );
        conn.all(&sql, &[&(limit.min(i64::MAX as u64) as i64)], |r| Ok(Self::from_row(r)?))
    }

    /// Deletes every log above `block`.
    pub fn delete_above(conn: &Connection, block: u64) -> StoreResult<u64> {
        Ok(conn.prepare_cached("DELETE FROM logs WHERE block_number > ?1")?.execute([block as i64])? as u64)
    }
}

/// A block the indexer has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRow {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Parent hash, when the block was followed live.
    pub parent_hash: Option<B256>,
    /// Timestamp.
    pub timestamp: u64,
    /// Logs of the watched contracts in it.
    pub log_count: u64,
}

impl BlockRow {
    /// Inserts or replaces the block.
    pub fn put(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO blocks (number, hash, parent_hash, timestamp, log_count) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(rusqlite::params![
            self.number as i64,
            self.hash.as_slice(),
            self.parent_hash.as_ref().map(|h| h.as_slice()),
            self.timestamp as i64,
            self.log_count as i64
        ])?;
        Ok(())
    }

    /// The block with `number`.
    pub fn get(conn: &dyn Db, number: u64) -> StoreResult<Option<BlockRow>> {
        conn.one(
            "SELECT number, hash, parent_hash, timestamp, log_count FROM blocks WHERE number = ?1",
            &[&(number as i64)],
            |r| Ok(Self::from_row(r)?),
        )
    }

    fn from_row(r: &dyn Row) -> rusqlite::Result<BlockRow> {
        Ok(BlockRow {
            number: col::get(r, 0)?,
            hash: col::get(r, 1)?,
            parent_hash: col::get(r, 2)?,
            timestamp: col::get(r, 3)?,
            log_count: col::get(r, 4)?,
        })
    }

    /// Up to `n` most recent blocks at or below `head`, oldest first (for the chain clock).
    pub fn recent(conn: &dyn Db, head: u64, n: usize) -> StoreResult<Vec<BlockRow>> {
        let mut rows = conn.all(
            "SELECT number, hash, parent_hash, timestamp, log_count FROM blocks WHERE number <= ?1
                 ORDER BY number DESC LIMIT ?2",
            &[&(head.min(i64::MAX as u64) as i64), &(n as i64)],
            |r| Ok(Self::from_row(r)?),
        )?;
        rows.reverse();
        Ok(rows)
    }

    /// The highest stored block at or below `number`.
    pub fn at_or_below(conn: &dyn Db, number: u64) -> StoreResult<Option<BlockRow>> {
        // The aggregate answers one row, NULL without blocks.
        let n = conn
            .one("SELECT max(number) FROM blocks WHERE number <= ?1", &[&(number as i64)], |r| {
                Ok(col::get::<Option<u64>>(r, 0)?)
            })?
            .flatten();
        match n {
            Some(n) => Self::get(conn, n),
            None => Ok(None),
        }
    }

    /// Deletes every block above `number`.
    pub fn delete_above(conn: &Connection, number: u64) -> StoreResult<()> {
        conn.prepare_cached("DELETE FROM blocks WHERE number > ?1")?.execute([number as i64])?;
        Ok(())
    }
}

/// The last applied block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
    /// Highest block known final when the cursor moved.
    pub finalized_number: u64,
}

impl Cursor {
    /// The cursor, or None before the first commit.
    pub fn get(conn: &dyn Db) -> StoreResult<Option<Cursor>> {
        conn.one("SELECT block_number, block_hash, finalized_number FROM cursor WHERE id = 1", &[], |r| {
            Ok(Cursor { block_number: col::get(r, 0)?, block_hash: col::get(r, 1)?, finalized_number: col::get(r, 2)? })
        })
    }

    /// Moves the cursor (call inside the transaction that wrote the data).
    pub fn set(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT INTO cursor (id, block_number, block_hash, finalized_number, updated_at) VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash, \
             finalized_number = excluded.finalized_number, updated_at = excluded.updated_at",
        )?
        .execute(rusqlite::params![
            self.block_number as i64,
            self.block_hash.as_slice(),
            self.finalized_number as i64,
            unix_now() as i64
        ])?;
        Ok(())
    }
}

/// A covered block range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRow {
    /// First block.
    pub from_block: u64,
    /// Last block (inclusive).
    pub to_block: u64,
    /// Logs in it.
    pub log_count: u64,
    /// `backfill` or `live`.
    pub source: String,
}

impl RangeRow {
    /// Records a covered range.
    pub fn insert(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached("INSERT INTO ranges (from_block, to_block, log_count, source) VALUES (?1, ?2, ?3, ?4)")?
            .execute(rusqlite::params![
                self.from_block as i64,
                self.to_block as i64,
                self.log_count as i64,
                self.source
            ])?;
        Ok(())
    }

    /// All ranges in order.
    pub fn all(conn: &dyn Db) -> StoreResult<Vec<RangeRow>> {
        conn.all("SELECT from_block, to_block, log_count, source FROM ranges ORDER BY from_block", &[], |r| {
            Ok(RangeRow {
                from_block: col::get(r, 0)?,
                to_block: col::get(r, 1)?,
                log_count: col::get(r, 2)?,
                source: col::get(r, 3)?,
            })
        })
    }

    /// Records a live block range, extending the previous live range when contiguous.
    pub fn extend_live(conn: &Connection, from: u64, to: u64, log_count: u64) -> StoreResult<()> {
        let merged = conn
            .prepare_cached(
                "UPDATE ranges SET to_block = ?1, log_count = log_count + ?2 WHERE to_block = ?3 AND source = 'live'",
            )?
            .execute(rusqlite::params![to as i64, log_count as i64, from as i64 - 1])?;
        if merged == 0 {
            RangeRow { from_block: from, to_block: to, log_count, source: "live".into() }.insert(conn)?;
        }
        Ok(())
    }

    /// Removes coverage above `block`: ranges starting above it are deleted, a range spanning it
    /// is cut at it (with its log count recomputed).
    pub fn truncate_above(conn: &Connection, block: u64) -> StoreResult<()> {
        conn.prepare_cached("DELETE FROM ranges WHERE from_block > ?1")?.execute([block as i64])?;
        conn.prepare_cached(
            "UPDATE ranges SET log_count = (SELECT count(*) FROM logs WHERE block_number BETWEEN ranges.from_block AND ?1), \
             to_block = ?1 WHERE to_block > ?1",
        )?
        .execute([block as i64])?;
        Ok(())
    }
}

/// Records the value of a transaction whose event lacks its amount.
pub fn put_tx_value(conn: &Connection, tx: &B256, block: u64, value: &U256) -> StoreResult<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO tx_values (tx_hash, block_number, value_wei) VALUES (?1, ?2, ?3)")?
        .execute(rusqlite::params![tx.as_slice(), block as i64, value.out()])?;
    Ok(())
}

/// The recorded value of a transaction.
pub fn tx_value(conn: &Connection, tx: &B256) -> StoreResult<Option<U256>> {
    Ok(conn
        .prepare_cached("SELECT value_wei FROM tx_values WHERE tx_hash = ?1")?
        .query_row([tx.as_slice()], |r| col::get::<U256>(r, 0))
        .optional()?)
}

/// Copies every transaction value of `from` into `to` (replay needs them; no RPC).
pub fn copy_tx_values(from: &Connection, to: &Connection) -> StoreResult<()> {
    to.execute("DELETE FROM tx_values", [])?;
    let mut stmt = from.prepare("SELECT tx_hash, block_number, value_wei FROM tx_values")?;
    let mut rows = stmt.query([])?;
    let mut insert =
        to.prepare_cached("INSERT INTO tx_values (tx_hash, block_number, value_wei) VALUES (?1, ?2, ?3)")?;
    while let Some(r) = rows.next()? {
        insert.execute(rusqlite::params![r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?])?;
    }
    Ok(())
}

/// Deletes transaction values above `block`.
pub fn delete_tx_values_above(conn: &Connection, block: u64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM tx_values WHERE block_number > ?1")?.execute([block as i64])?;
    Ok(())
}

/// The return data of a view call made at indexing time for a fact an event lacks (the expiry
/// of a SessionRequested, the keys of a SessionAdopted), kept verbatim so replay needs no RPC.
///
/// It was read at the log's block, or at the latest block when the node no longer had that
/// block's state: values fixed when the log was emitted (a request's expiry and capabilities, a
/// session's model) read the same either way; values that change later (a request's status, a
/// session's keys after `updateSessionKey`) show the later state in that case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    /// The contract called.
    pub contract: Address,
    /// The function's signature (`getRequest(uint256)`).
    pub method: String,
    /// The id it was called with (request or session id).
    pub id: u64,
    /// The block of the log the call was made for.
    pub block_number: u64,
    /// The ABI-encoded return data.
    pub data: Bytes,
}

impl CallResult {
    /// Records the result (replacing one for the same call).
    pub fn put(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO call_results (contract, method, id, block_number, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(rusqlite::params![
            self.contract.as_slice(),
            self.method,
            self.id as i64,
            self.block_number as i64,
            self.data.as_ref()
        ])?;
        Ok(())
    }

    /// The recorded result of `method(id)` on `contract`.
    pub fn get(conn: &Connection, contract: &Address, method: &str, id: u64) -> StoreResult<Option<CallResult>> {
        Ok(conn
            .prepare_cached(
                "SELECT contract, method, id, block_number, data FROM call_results
                 WHERE contract = ?1 AND method = ?2 AND id = ?3",
            )?
            .query_row(rusqlite::params![contract.as_slice(), method, id as i64], |r| Self::from_row(r))
            .optional()?)
    }

    fn from_row(r: &dyn Row) -> rusqlite::Result<CallResult> {
        Ok(CallResult {
            contract: col::get(r, 0)?,
            method: col::get(r, 1)?,
            id: col::get(r, 2)?,
            block_number: col::get(r, 3)?,
            data: col::get(r, 4)?,
        })
    }

    /// Every recorded result, in key order.
    pub fn all(conn: &dyn Db) -> StoreResult<Vec<CallResult>> {
        conn.all(
            "SELECT contract, method, id, block_number, data FROM call_results ORDER BY contract, method, id",
            &[],
            |r| Ok(Self::from_row(r)?),
        )
    }

    /// Copies every result of `from` into `to` (replay needs them; no RPC).
    pub fn copy_all(from: &Connection, to: &Connection) -> StoreResult<()> {
        to.execute("DELETE FROM call_results", [])?;
        for row in Self::all(from)? {
            row.put(to)?;
        }
        Ok(())
    }

    /// Deletes the results recorded for logs above `block`.
    pub fn delete_above(conn: &Connection, block: u64) -> StoreResult<()> {
        conn.prepare_cached("DELETE FROM call_results WHERE block_number > ?1")?.execute([block as i64])?;
        Ok(())
    }
}
