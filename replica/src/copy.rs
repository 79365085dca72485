//! The bulk copy: one read snapshot of the store into the replica, whole.
//!
//! Every replicated table is emptied and refilled with binary COPY inside one PostgreSQL
//! transaction, with `replica_cursor` moved to the snapshot's cursor in the same transaction:
//! readers see the previous copy until the commit, then the new one, never a mix. The replica's
//! change-log position is the snapshot's, so that following resumes right after it.

use std::time::{Duration, Instant};

use lcw_schema::store::raw::Cursor;
use lcw_schema::store::{Store, StoreError, changes, export, unix_now};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::Row;

use crate::tables::{Column, TABLES, Table};
use crate::value::{Value, pg_type};
use crate::{Replica, ReplicaError, ReplicaResult, pg};

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// Rows copied, per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// The store's cursor at the snapshot (None for a store that has indexed nothing yet).
    pub cursor: Option<Cursor>,
    /// From the start of the snapshot to the commit.
    pub elapsed: Duration,
}

impl CopyReport {
    /// Rows copied in all.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }

    /// Rows per second over the whole copy.
    pub fn rows_per_second(&self) -> f64 {
        self.rows() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Replica {
    /// Replaces the replica's contents with one snapshot of `store` (which must belong to the
    /// network the replica was opened for) and sets `replica_cursor` to its cursor and the
    /// snapshot's change-log position, from which [`Replica::follow_once`] continues.
    pub fn copy_from(&mut self, store: &Store) -> ReplicaResult<CopyReport> {
        let started = Instant::now();
        let snapshot = export::snapshot(store.conn())?;
        self.check_store(store)?;
        // A replica that holds no copy has no readers to keep serving: it is filled the fast way.
        let bulk = self.cursor()?.is_none();
        let report = self.copy_snapshot(&snapshot, started, bulk)?;
        drop(snapshot);
        Ok(report)
    }

    /// Refuses a store of another network than the one the replica was opened for.
    pub(crate) fn check_store(&self, store: &Store) -> ReplicaResult<()> {
        let identity = store.identity()?.ok_or_else(|| StoreError::Missing(store.path().to_owned()))?;
        if !identity.same_network(&self.identity) {
            return Err(ReplicaError::StoreMismatch { store: identity.describe(), replica: self.identity.describe() });
        }
        Ok(())
    }

    /// The whole copy, from a read snapshot the caller holds.
    ///
    /// `bulk` fills the tables without their secondary indexes and builds those afterwards, in
    /// the same transaction: PostgreSQL spends most of a copy keeping the indexes of `logs`
    /// sorted row by row (a million logs: 8.1 s with its indexes, 1.5 s without and 1.9 s to
    /// build them after), but dropping an index locks its table until the commit, so readers of
    /// the previous copy wait instead of reading it. Only a replica that holds no copy, or one
    /// so far behind that it holds less than it lacks, is copied that way.
    pub(crate) fn copy_snapshot(
        &mut self,
        snapshot: &rusqlite::Connection,
        started: Instant,
        bulk: bool,
    ) -> ReplicaResult<CopyReport> {
        let cursor = Cursor::get(snapshot)?;
        let seq = changes::last_seq(snapshot)?;

        let mut tx = self.client.transaction().map_err(pg("starting the copy"))?;
        // DELETE, not TRUNCATE: TRUNCATE would lock readers out for the whole copy, where a
        // delete lets them go on reading the previous copy until the commit.
        let all: String = TABLES.iter().map(|t| format!("DELETE FROM \"{}\"; ", t.name)).collect();
        tx.batch_execute(&format!("{all}DELETE FROM replica_cursor")).map_err(pg("emptying the tables"))?;
        let indexes = if bulk { drop_indexes(&mut tx)? } else { Vec::new() };
        let mut counts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let rows = copy_table(&mut tx, snapshot, table)?;
            tracing::debug!(table = table.name, rows, "copied");
            counts.push((table.name, rows));
        }
        if !indexes.is_empty() {
            let built = Instant::now();
            tx.batch_execute(&format!("SET LOCAL maintenance_work_mem = '256MB'; {};", indexes.join("; ")))
                .map_err(pg("building the indexes after the copy"))?;
            tracing::debug!(indexes = indexes.len(), ms = built.elapsed().as_millis() as u64, "indexes built");
        }
        if let Some(c) = &cursor {
            set_cursor(&mut tx, c, seq)?;
        }
        tx.commit().map_err(pg("committing the copy"))?;
        // A whole copy replaces every row at once, and the planner's statistics would describe
        // the tables as they were (or as empty, on a new replica: then PostgreSQL plans a job's
        // timeline as a parallel scan of every log, 100 times slower than an index lookup) until
        // autovacuum gets to them. Readers get fresh statistics with the copy instead.
        let tables: Vec<String> = TABLES.iter().map(|t| format!("\"{}\"", t.name)).collect();
        self.client.batch_execute(&format!("ANALYZE {}", tables.join(", "))).map_err(pg("analysing the copy"))?;
        Ok(CopyReport { tables: counts, cursor, elapsed: started.elapsed() })
    }
}

/// Drops the secondary indexes of the replicated tables (not their primary keys or unique
/// indexes) and returns the statements that build them again, exactly as they were.
fn drop_indexes(tx: &mut postgres::Transaction<'_>) -> ReplicaResult<Vec<String>> {
    let tables: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    let rows = tx
        .query(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND NOT i.indisprimary AND NOT i.indisunique \
             AND c.relname = ANY($1) ORDER BY 1",
            &[&tables],
        )
        .map_err(pg("reading the replica's indexes"))?;
    let mut build = Vec::with_capacity(rows.len());
    for row in rows {
        let (name, definition): (String, String) = (row.get(0), row.get(1));
        tx.batch_execute(&format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")))
            .map_err(pg(format!("dropping the index {name} for the copy")))?;
        build.push(definition);
    }
    Ok(build)
}

/// Moves `replica_cursor` to the store's cursor `c` and change-log position `seq`.
pub(crate) fn set_cursor(tx: &mut postgres::Transaction<'_>, c: &Cursor, seq: u64) -> ReplicaResult<()> {
    tx.execute(
        "INSERT INTO replica_cursor (id, block_number, block_hash, seq, updated_at) VALUES (1, $1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET block_number = excluded.block_number, block_hash = excluded.block_hash, \
         seq = excluded.seq, updated_at = excluded.updated_at",
        &[&(c.block_number as i64), &c.block_hash.as_slice(), &(seq as i64), &(unix_now() as i64)],
    )
    .map_err(pg("setting replica_cursor"))?;
    // Readers that LISTEN (`lcw serve --store postgres://…`) hear of the commit when it is
    // visible, not before: PostgreSQL delivers a notification when its transaction commits.
    tx.execute("SELECT pg_notify($1, $2)", &[&COMMITS_CHANNEL, &c.block_number.to_string()])
        .map_err(pg("notifying readers"))?;
    Ok(())
}

/// The channel on which each replica commit is announced, with its block number as payload.
pub const COMMITS_CHANNEL: &str = "lcw_commits";

/// Streams `table` from the snapshot into the replica; returns the rows copied.
pub(crate) fn copy_table(
    tx: &mut postgres::Transaction<'_>,
    store: &rusqlite::Connection,
    table: &Table,
) -> ReplicaResult<u64> {
    let names = table.column_names();
    let mut sink = CopyIn::new(tx, table.name, table.name, table.columns)?;
    let mut values: Vec<Value> = Vec::with_capacity(names.len());
    let rows = export::scan(store, table.name, &names, table.key, |row| {
        row_values(table, row, &mut values)?;
        sink.write(&values)
    })?;
    sink.finish()?;
    Ok(rows)
}

/// The values of a store `row` of `table` (every column, in order), into `values`.
pub(crate) fn row_values(table: &Table, row: &Row<'_>, values: &mut Vec<Value>) -> ReplicaResult<()> {
    values.clear();
    for (i, column) in table.columns.iter().enumerate() {
        let raw = row.get_ref(i).map_err(StoreError::from)?;
        values.push(Value::from_sqlite(table, column, raw, || row_key(table, row))?);
    }
    Ok(())
}

/// A binary COPY into one PostgreSQL table (a replicated table or a staging table shaped like
/// one), row by row.
pub(crate) struct CopyIn<'a> {
    writer: BinaryCopyInWriter<'a>,
    what: String,
}

impl<'a> CopyIn<'a> {
    /// Starts copying `columns` of `table` into the table called `into`.
    pub(crate) fn new(
        tx: &'a mut postgres::Transaction<'_>,
        into: &str,
        table: &str,
        columns: &[Column],
    ) -> ReplicaResult<CopyIn<'a>> {
        let quoted: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
        let types: Vec<Type> = columns.iter().map(|c| pg_type(c.kind)).collect();
        let what = format!("copying {table}");
        let sink = tx
            .copy_in(&format!("COPY \"{into}\" ({}) FROM STDIN (FORMAT binary)", quoted.join(", ")))
            .map_err(pg(what.clone()))?;
        Ok(CopyIn { writer: BinaryCopyInWriter::new(sink, &types), what })
    }

    /// Writes one row, its values in the order of the columns.
    pub(crate) fn write(&mut self, values: &[Value]) -> ReplicaResult<()> {
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.writer.write(&refs).map_err(|source| ReplicaError::Postgres { what: self.what.clone(), source })
    }

    /// Ends the COPY.
    pub(crate) fn finish(self) -> ReplicaResult<u64> {
        self.writer.finish().map_err(pg(self.what))
    }
}

/// The primary key of `row` as people read it, for errors: `(block_number=7, log_index=2)`.
/// A store value as a message shows it: numbers and text as they are, blobs in hex.
pub(crate) fn shown_value(v: rusqlite::types::ValueRef<'_>) -> String {
    match v {
        rusqlite::types::ValueRef::Null => "NULL".into(),
        rusqlite::types::ValueRef::Integer(n) => n.to_string(),
        rusqlite::types::ValueRef::Real(r) => r.to_string(),
        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        rusqlite::types::ValueRef::Blob(b) => format!("0x{}", alloy::hex::encode(b)),
    }
}

pub(crate) fn row_key(table: &Table, row: &Row<'_>) -> String {
    let parts: Vec<String> = table
        .key
        .iter()
        .map(|k| {
            let i = table.columns.iter().position(|c| c.name == *k).unwrap_or_default();
            let shown = row.get_ref(i).map_or_else(|_| "?".to_owned(), shown_value);
            format!("{k}={shown}")
        })
        .collect();
    format!("({})", parts.join(", "))
}
