//! Whole-projection operations: comparing the projections of two stores and replacing one's by
//! the other's (`lcw replay`), and clearing them.

use std::path::Path;

use rusqlite::Connection;

use super::StoreResult;

/// Every projection table (derived from the raw layer).
pub const PROJECTION_TABLES: [&str; 13] = [
    "workers",
    "worker_models",
    "models",
    "sessions",
    "jobs",
    "rollups_hourly",
    "event_counts",
    "config_history",
    "withdrawals",
    "bounties",
    "slashes",
    "session_requests",
    "capabilities",
];

/// A table whose rows differ between two stores.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableDiff {
    /// Table.
    pub table: String,
    /// Rows only in the first store.
    pub only_in_first: u64,
    /// Rows only in the second store.
    pub only_in_second: u64,
}

/// Raw tables that two stores of the same chain hold identically (`call_results` as long as the
/// node had the state of every block each store read it at; see [`super::raw::CallResult`]).
pub const RAW_TABLES: [&str; 3] = ["logs", "tx_values", "call_results"];

/// Compares every projection table of `conn`'s store with the store file `other`.
pub fn compare(conn: &Connection, other: &Path) -> StoreResult<Vec<TableDiff>> {
    compare_tables(conn, other, &PROJECTION_TABLES)
}

/// Compares `tables` of `conn`'s store with the store file `other`, row by row.
pub fn compare_tables(conn: &Connection, other: &Path, tables: &[&str]) -> StoreResult<Vec<TableDiff>> {
    conn.execute("ATTACH DATABASE ?1 AS other", [other.to_string_lossy()])?;
    let result = (|| {
        let mut diffs = Vec::new();
        for t in tables {
            let count = |a: &str, b: &str| -> StoreResult<u64> {
                let sql = format!("SELECT count(*) FROM (SELECT * FROM {a}.{t} EXCEPT SELECT * FROM {b}.{t})");
                Ok(conn.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64)
            };
            let (first, second) = (count("main", "other")?, count("other", "main")?);
            if first + second > 0 {
                diffs.push(TableDiff { table: (*t).to_owned(), only_in_first: first, only_in_second: second });
            }
        }
        Ok(diffs)
    })();
    conn.execute("DETACH DATABASE other", [])?;
    result
}

/// Replaces every projection table (and the undo journal) of `conn`'s store by those of the
/// store file `other`, in the caller's transaction.
pub fn replace_from(conn: &Connection, other: &Path) -> StoreResult<()> {
    conn.execute("ATTACH DATABASE ?1 AS other", [other.to_string_lossy()])?;
    let result = (|| {
        for t in PROJECTION_TABLES.iter().chain(["undo"].iter()) {
            conn.execute(&format!("DELETE FROM main.{t}"), [])?;
            conn.execute(&format!("INSERT INTO main.{t} SELECT * FROM other.{t}"), [])?;
        }
        Ok(())
    })();
    // DETACH is not allowed inside a transaction; the caller's commit releases it.
    result
}

/// Detaches `other` after [`replace_from`]'s transaction committed.
pub fn detach(conn: &Connection) -> StoreResult<()> {
    conn.execute("DETACH DATABASE other", [])?;
    Ok(())
}

/// A secondary index of a projection table, as dropped by [`drop_indexes`].
#[derive(Debug, Clone)]
pub struct IndexDef {
    name: String,
    sql: String,
}

/// Drops the secondary indexes of every projection table and returns them for
/// [`create_indexes`]. A rebuild from nothing (replay's scratch store) then maintains only the
/// primary keys it reads by, and builds each index once at the end with a sort, which costs a
/// fraction of keeping it up to date row by row. Nothing that applies events reads through a
/// secondary index.
pub fn drop_indexes(conn: &Connection) -> StoreResult<Vec<IndexDef>> {
    let tables = PROJECTION_TABLES.map(|t| format!("'{t}'")).join(", ");
    let sql = format!(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({tables}) ORDER BY name"
    );
    let defs = conn
        .prepare(&sql)?
        .query_map([], |r| Ok(IndexDef { name: r.get(0)?, sql: r.get(1)? }))?
        .collect::<Result<Vec<_>, _>>()?;
    for d in &defs {
        conn.execute_batch(&format!("DROP INDEX \"{}\"", d.name))?;
    }
    Ok(defs)
}

/// Creates the indexes [`drop_indexes`] dropped.
pub fn create_indexes(conn: &Connection, defs: &[IndexDef]) -> StoreResult<()> {
    for d in defs {
        conn.execute_batch(&d.sql)?;
    }
    Ok(())
}
