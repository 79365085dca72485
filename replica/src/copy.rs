//! The bulk copy: one read snapshot of the store into the replica, whole.
//!
//! Every replicated table is emptied and refilled with binary COPY inside one PostgreSQL
//! transaction, with `replica_cursor` moved to the snapshot's cursor in the same transaction:
//! readers see the previous copy until the commit, then the new one, never a mix.

use std::time::{Duration, Instant};

use lcw_schema::store::raw::Cursor;
use lcw_schema::store::{Store, StoreError, export, unix_now};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::Row;

use crate::tables::{TABLES, Table};
use crate::value::{Value, pg_type};
use crate::{Replica, ReplicaError, ReplicaResult, describe, pg};

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
    /// network the replica was opened for) and sets `replica_cursor` to its cursor, change-log
    /// sequence 0.
    pub fn copy_from(&mut self, store: &Store) -> ReplicaResult<CopyReport> {
        let started = Instant::now();
        let snapshot = export::snapshot(store.conn())?;
        let identity = store.identity()?.ok_or_else(|| StoreError::Missing(store.path().to_owned()))?;
        if !identity.same_network(&self.identity) {
            return Err(ReplicaError::StoreMismatch { store: describe(&identity), replica: describe(&self.identity) });
        }
        let cursor = Cursor::get(&snapshot)?;

        let mut tx = self.client.transaction().map_err(pg("starting the copy"))?;
        let all: Vec<String> = TABLES.iter().map(|t| format!("\"{}\"", t.name)).collect();
        tx.batch_execute(&format!("TRUNCATE {}, replica_cursor", all.join(", "))).map_err(pg("emptying the tables"))?;
        let mut counts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let rows = copy_table(&mut tx, &snapshot, table)?;
            tracing::debug!(table = table.name, rows, "copied");
            counts.push((table.name, rows));
        }
        if let Some(c) = &cursor {
            tx.execute(
                "INSERT INTO replica_cursor (id, block_number, block_hash, seq, updated_at) VALUES (1, $1, $2, 0, $3)",
                &[&(c.block_number as i64), &c.block_hash.as_slice(), &(unix_now() as i64)],
            )
            .map_err(pg("setting replica_cursor"))?;
        }
        tx.commit().map_err(pg("committing the copy"))?;
        drop(snapshot);
        Ok(CopyReport { tables: counts, cursor, elapsed: started.elapsed() })
    }
}

/// Streams `table` from the snapshot into the replica; returns the rows copied.
fn copy_table(tx: &mut postgres::Transaction<'_>, store: &rusqlite::Connection, table: &Table) -> ReplicaResult<u64> {
    let names = table.column_names();
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let types: Vec<Type> = table.columns.iter().map(|c| pg_type(c.kind)).collect();
    let what = || format!("copying {}", table.name);
    let sink = tx
        .copy_in(&format!("COPY \"{}\" ({}) FROM STDIN (FORMAT binary)", table.name, quoted.join(", ")))
        .map_err(pg(what()))?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut values: Vec<Value> = Vec::with_capacity(names.len());
    let rows = export::scan(store, table.name, &names, table.key, |row| {
        values.clear();
        for (i, column) in table.columns.iter().enumerate() {
            let raw = row.get_ref(i).map_err(StoreError::from)?;
            values.push(Value::from_sqlite(table, column, raw, || row_key(table, row))?);
        }
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        writer.write(&refs).map_err(pg(what()))
    })?;
    writer.finish().map_err(pg(what()))?;
    Ok(rows)
}

/// The primary key of `row` as people read it, for errors: `(block_number=7, log_index=2)`.
pub(crate) fn row_key(table: &Table, row: &Row<'_>) -> String {
    let parts: Vec<String> = table
        .key
        .iter()
        .map(|k| {
            let i = table.columns.iter().position(|c| c.name == *k).unwrap_or_default();
            let shown = match row.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Integer(n)) => n.to_string(),
                Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                Ok(rusqlite::types::ValueRef::Blob(b)) => format!("0x{}", alloy::hex::encode(b)),
                _ => "?".into(),
            };
            format!("{k}={shown}")
        })
        .collect();
    format!("({})", parts.join(", "))
}
