//! Whole tables read out in key order, for copies of the store kept elsewhere (the PostgreSQL
//! replica, `lcw-replica`). The caller names the table and its columns; this module owns the SQL.
//!
//! A copy must be one consistent state of the store: [`snapshot`] opens a read transaction, and
//! every [`scan`] made through it sees the store as of its first read, whatever the indexer
//! commits meanwhile (WAL readers keep their snapshot until the transaction ends).

use rusqlite::{Connection, Row, Transaction, TransactionBehavior};

use super::{StoreError, StoreResult};

/// A read transaction over `conn`: every read made through it, and through `conn` while it is
/// open, sees one state of the store. It ends (rolled back: it wrote nothing) when dropped.
pub fn snapshot(conn: &Connection) -> StoreResult<Transaction<'_>> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)?;
    // A deferred transaction takes its snapshot at its first read: take it now, so that the
    // snapshot is the state at this call and not at the caller's first scan.
    tx.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    Ok(tx)
}

/// Calls `f` with every row of `table` (columns `columns`, in that order), in the order of `key`;
/// returns how many rows there were. Names are identifiers of the store's schema (lowercase
/// letters, digits and `_`); anything else is refused rather than quoted into SQL.
pub fn scan<E: From<StoreError>>(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    key: &[&str],
    f: impl FnMut(&Row<'_>) -> Result<(), E>,
) -> Result<u64, E> {
    let sql = format!("SELECT {} FROM {} ORDER BY {}", quoted(columns)?, quoted(&[table])?, quoted(key)?);
    each(conn, &sql, None, f)
}

/// As [`scan`], but only the rows whose `block` column is above `above`: what a follower copies
/// of a table whose rows belong to blocks, from the lowest block its changes touched.
pub fn scan_above<E: From<StoreError>>(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    key: &[&str],
    block: &str,
    above: u64,
    f: impl FnMut(&Row<'_>) -> Result<(), E>,
) -> Result<u64, E> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} > ?1 ORDER BY {}",
        quoted(columns)?,
        quoted(&[table])?,
        quoted(&[block])?,
        quoted(key)?
    );
    each(conn, &sql, Some(above as i64), f)
}

/// How many rows of `table` have their `block` column above `above`: what [`scan_above`] would
/// visit, counted through the same index without reading the rows.
pub fn count_above(conn: &Connection, table: &str, block: &str, above: u64) -> StoreResult<u64> {
    let sql = format!("SELECT count(*) FROM {} WHERE {} > ?1", quoted(&[table])?, quoted(&[block])?);
    let n: i64 = conn.prepare_cached(&sql)?.query_row([above.min(i64::MAX as u64) as i64], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

fn each<E: From<StoreError>>(
    conn: &Connection,
    sql: &str,
    above: Option<i64>,
    mut f: impl FnMut(&Row<'_>) -> Result<(), E>,
) -> Result<u64, E> {
    let mut stmt = conn.prepare(sql).map_err(StoreError::from)?;
    let mut rows = match above {
        Some(b) => stmt.query([b]),
        None => stmt.query([]),
    }
    .map_err(StoreError::from)?;
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(StoreError::from)? {
        f(row)?;
        n += 1;
    }
    Ok(n)
}

/// The tables of the store (views, SQLite's own and refinery's history excluded), by name.
pub fn tables(conn: &Connection) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> 'refinery_schema_history' ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// A column of a store table as SQLite declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Its name.
    pub name: String,
    /// The declared type (`INTEGER`, `TEXT`, `BLOB`).
    pub declared: String,
    /// Declared `NOT NULL` (or part of a `WITHOUT ROWID` primary key).
    pub not_null: bool,
    /// Position in the primary key, from 1; 0 when not part of it.
    pub key_position: u32,
}

/// The columns of `table`, in declaration order.
pub fn columns(conn: &Connection, table: &str) -> StoreResult<Vec<ColumnInfo>> {
    let mut stmt = conn.prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let cols = stmt
        .query_map([table], |r| {
            Ok(ColumnInfo { name: r.get(0)?, declared: r.get(1)?, not_null: r.get(2)?, key_position: r.get(3)? })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(cols)
}

fn quoted(names: &[&str]) -> StoreResult<String> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(StoreError::Sqlite(rusqlite::Error::InvalidColumnName((*name).to_owned())));
        }
        // Quoted: `user` is a column name and a keyword of other databases' SQL.
        out.push(format!("\"{name}\""));
    }
    Ok(out.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store() -> Store {
        let id = crate::store::Identity {
            chain_id: 1,
            contracts: crate::profile::Contracts {
                worker_registry: alloy::primitives::Address::ZERO,
                job_registry: alloy::primitives::Address::ZERO,
                ai_config: alloy::primitives::Address::ZERO,
            },
            start_block: 0,
        };
        Store::open_in_memory(&id).unwrap()
    }

    #[test]
    fn scans_rows_in_key_order_and_refuses_odd_names() {
        let store = store();
        let mut keys = Vec::new();
        let n = scan::<StoreError>(store.conn(), "meta", &["key", "value"], &["key"], |r| {
            keys.push(r.get::<_, String>(0)?);
            Ok(())
        })
        .unwrap();
        assert_eq!(n as usize, keys.len());
        assert!(keys.windows(2).all(|w| w[0] < w[1]) && keys.contains(&"chain_id".to_owned()), "{keys:?}");
        let odd = scan::<StoreError>(store.conn(), "meta; DROP TABLE meta", &["key"], &["key"], |_| Ok(()));
        assert!(matches!(odd, Err(StoreError::Sqlite(rusqlite::Error::InvalidColumnName(_)))));
        let odd =
            scan_above::<StoreError>(store.conn(), "logs", &["log_index"], &["log_index"], "1=1 --", 0, |_| Ok(()));
        assert!(matches!(odd, Err(StoreError::Sqlite(rusqlite::Error::InvalidColumnName(_)))));
    }

    #[test]
    fn scans_only_rows_above_a_block() {
        let store = store();
        for (number, hash) in [(4u8, 1u8), (5, 2), (6, 3)] {
            store
                .conn()
                .execute(
                    "INSERT INTO blocks (number, hash, timestamp, log_count) VALUES (?1, ?2, 0, 0)",
                    rusqlite::params![number, vec![hash; 32]],
                )
                .unwrap();
        }
        let mut numbers = Vec::new();
        let n = scan_above::<StoreError>(store.conn(), "blocks", &["number"], &["number"], "number", 4, |r| {
            numbers.push(r.get::<_, i64>(0)?);
            Ok(())
        })
        .unwrap();
        assert_eq!((n, numbers), (2, vec![5, 6]));
    }

    #[test]
    fn lists_tables_and_columns() {
        let store = store();
        let tables = tables(store.conn()).unwrap();
        assert!(tables.contains(&"jobs".to_owned()) && !tables.iter().any(|t| t.starts_with("v_")), "{tables:?}");
        let cols = columns(store.conn(), "worker_models").unwrap();
        assert_eq!(
            cols[0],
            ColumnInfo { name: "worker".into(), declared: "BLOB".into(), not_null: true, key_position: 1 }
        );
    }
}
