//! Whether the replica equals the store: per table, the row count and a SHA-256 digest of every
//! row in primary-key order, each value in the canonical encoding of [`crate::value`], computed
//! from one read snapshot of each side; and the cursors.

use lcw_schema::store::raw::Cursor;
use lcw_schema::store::{Store, StoreError, export};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use sha2::{Digest, Sha256};

use crate::copy::row_key;
use crate::tables::{Kind, TABLES, Table};
use crate::value::{Value, select_expr};
use crate::{Replica, ReplicaCursor, ReplicaResult, pg};

/// One table on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// The table.
    pub table: &'static str,
    /// Rows in the store.
    pub store_rows: u64,
    /// Rows in the replica.
    pub replica_rows: u64,
    /// Digest of the store's rows.
    pub store_digest: [u8; 32],
    /// Digest of the replica's rows.
    pub replica_digest: [u8; 32],
}

impl TableCheck {
    /// Whether both sides hold the same rows.
    pub fn same(&self) -> bool {
        self.store_rows == self.replica_rows && self.store_digest == self.replica_digest
    }
}

/// The comparison of a store with its replica.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Every replicated table, in copy order.
    pub tables: Vec<TableCheck>,
    /// The store's cursor (block number and hash).
    pub store_cursor: Option<(u64, Vec<u8>)>,
    /// The replica's `replica_cursor`.
    pub replica_cursor: Option<ReplicaCursor>,
}

impl VerifyReport {
    /// Whether the replica's cursor is the store's.
    pub fn cursor_same(&self) -> bool {
        let replica = self.replica_cursor.as_ref().map(|c| (c.block_number as u64, c.block_hash.clone()));
        replica == self.store_cursor
    }

    /// The tables that differ, with `replica_cursor` when the cursors do.
    pub fn differing(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = self.tables.iter().filter(|t| !t.same()).map(|t| t.table).collect();
        if !self.cursor_same() {
            out.push("replica_cursor");
        }
        out
    }

    /// Whether the replica equals the store.
    pub fn ok(&self) -> bool {
        self.differing().is_empty()
    }
}

/// Compares `store` with `replica`, each read in one snapshot (a read transaction in SQLite, a
/// read-only repeatable-read transaction in PostgreSQL).
pub fn verify(store: &Store, replica: &mut Replica) -> ReplicaResult<VerifyReport> {
    let snapshot = export::snapshot(store.conn())?;
    let store_cursor = Cursor::get(&snapshot)?.map(|c| (c.block_number, c.block_hash.to_vec()));
    let mut tx = replica
        .client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg("starting the check"))?;
    let replica_cursor = crate::read_cursor(&mut tx)?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let (store_rows, store_digest) = store_digest(&snapshot, table)?;
        let (replica_rows, replica_digest) = replica_digest(&mut tx, table)?;
        let check = TableCheck { table: table.name, store_rows, replica_rows, store_digest, replica_digest };
        tracing::debug!(table = table.name, same = check.same(), store_rows, replica_rows, "compared");
        tables.push(check);
    }
    tx.commit().map_err(pg("ending the check"))?;
    Ok(VerifyReport { tables, store_cursor, replica_cursor })
}

fn store_digest(store: &rusqlite::Connection, table: &Table) -> ReplicaResult<(u64, [u8; 32])> {
    let mut hash = Sha256::new();
    let rows = export::scan(store, table.name, &table.column_names(), table.key, |row| {
        for (i, column) in table.columns.iter().enumerate() {
            let raw = row.get_ref(i).map_err(StoreError::from)?;
            Value::from_sqlite(table, column, raw, || row_key(table, row))?.digest_into(&mut hash);
        }
        Ok::<_, crate::ReplicaError>(())
    })?;
    Ok((rows, hash.finalize().into()))
}

fn replica_digest(tx: &mut postgres::Transaction<'_>, table: &Table) -> ReplicaResult<(u64, [u8; 32])> {
    let select: Vec<String> = table.columns.iter().map(select_expr).collect();
    // Text keys in byte order, as SQLite orders them (BINARY collation), not the database's locale.
    let order: Vec<String> = table
        .key
        .iter()
        .map(|k| match table.column(k).map(|c| c.kind) {
            Some(Kind::Text) => format!("\"{k}\" COLLATE \"C\""),
            _ => format!("\"{k}\""),
        })
        .collect();
    let sql = format!("SELECT {} FROM \"{}\" ORDER BY {}", select.join(", "), table.name, order.join(", "));
    let what = || format!("reading {}", table.name);
    let none: [&(dyn ToSql + Sync); 0] = [];
    let mut rows = tx.query_raw(&sql, none).map_err(pg(what()))?;
    let mut hash = Sha256::new();
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(pg(what()))? {
        for (i, column) in table.columns.iter().enumerate() {
            Value::from_postgres(table, column, &row, i)?.digest_into(&mut hash);
        }
        n += 1;
    }
    Ok((n, hash.finalize().into()))
}
