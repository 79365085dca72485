//! The engine under the store's reads. The API's reads are written once, in SQLite's SQL, against
//! [`Db`]: a SQLite connection runs them as they are, and the PostgreSQL replica
//! (`lcw_replica::reader`) runs the same text after a small, fixed translation (`?N` parameters,
//! no `INDEXED BY`). The few statements the engines cannot share branch on [`Db::dialect`] where
//! they are written, beside their SQLite form, so both engines' SQL stays in this crate.
//! Portable habits: 0/1 flags are compared with TRUE and FALSE (1 and 0 to SQLite, booleans to
//! PostgreSQL); a parameter's type must follow from where it stands (`CAST(?1 AS INTEGER) IS
//! NULL`, not `?1 IS NULL`); sums read as integers are cast; `"user"` is quoted.
//!
//! Rows reach the reading code as SQLite values ([`ValueRef`]) whichever engine produced them, so
//! the column codecs of [`super::col`] decode both and a value of the wrong type is the same
//! error on both.

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, ToSql};

use super::StoreResult;

/// The engine a [`Db`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The store itself.
    Sqlite,
    /// A replica of it (`lcw replicate`).
    Postgres,
}

/// One row of an answer: column `i` as a SQLite value.
pub trait Row {
    /// Column `i`.
    fn value(&self, i: usize) -> rusqlite::Result<ValueRef<'_>>;
}

impl Row for rusqlite::Row<'_> {
    fn value(&self, i: usize) -> rusqlite::Result<ValueRef<'_>> {
        self.get_ref(i)
    }
}

/// A row already read out of its engine (PostgreSQL's, converted).
impl Row for Vec<Value> {
    fn value(&self, i: usize) -> rusqlite::Result<ValueRef<'_>> {
        self.get(i).map(ValueRef::from).ok_or(rusqlite::Error::InvalidColumnIndex(i))
    }
}

/// Columns `by..` of a row, numbered from 0: a statement that reads two tables side by side
/// hands each table's decoder its own columns.
pub(crate) struct Shifted<'a> {
    pub(crate) row: &'a dyn Row,
    pub(crate) by: usize,
}

impl Row for Shifted<'_> {
    fn value(&self, i: usize) -> rusqlite::Result<ValueRef<'_>> {
        self.row.value(i + self.by)
    }
}

/// Parameters of a statement, in `?N` order.
pub type Params<'a> = &'a [&'a dyn ToSql];

/// Something that answers the store's reads.
pub trait Db {
    /// The engine, for the statements written per engine.
    fn dialect(&self) -> Dialect;

    /// Runs `sql` (SQLite's SQL, parameters `?1`, `?2`, …) with `params`, handing each row to `f`
    /// until it returns false or the rows run out.
    fn each(&self, sql: &str, params: Params<'_>, f: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>) -> StoreResult<()>;
}

impl Db for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn each(&self, sql: &str, params: Params<'_>, f: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>) -> StoreResult<()> {
        let mut stmt = self.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            if !f(row)? {
                break;
            }
        }
        Ok(())
    }
}

impl Db for rusqlite::Transaction<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn each(&self, sql: &str, params: Params<'_>, f: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>) -> StoreResult<()> {
        (**self).each(sql, params, f)
    }
}

/// The typed forms of [`Db::each`].
pub trait Query: Db {
    /// The first row, through `f`; None when there is none.
    fn one<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        mut f: impl FnMut(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let mut out = None;
        self.each(sql, params, &mut |r| {
            out = Some(f(r)?);
            Ok(false)
        })?;
        Ok(out)
    }

    /// Every row, through `f`.
    fn all<T>(
        &self,
        sql: &str,
        params: Params<'_>,
        mut f: impl FnMut(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(true)
        })?;
        Ok(out)
    }
}

impl<D: Db + ?Sized> Query for D {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::col;

    #[test]
    fn rows_read_the_same_from_a_connection_and_from_values() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (a INTEGER, b BLOB, c TEXT); INSERT INTO t VALUES (7, x'0102', 'x'), (8, NULL, 'y');",
        )
        .unwrap();
        let db: &dyn Db = &conn;
        let read = |r: &dyn Row| -> StoreResult<(u64, Option<Vec<u8>>, String)> {
            Ok((col::get(r, 0)?, col::get(r, 1)?, col::get(r, 2)?))
        };
        let rows = db.all("SELECT a, b, c FROM t WHERE a >= ?1 ORDER BY a", &[&7i64], read).unwrap();
        assert_eq!(rows, vec![(7, Some(vec![1, 2]), "x".into()), (8, None, "y".into())]);
        assert_eq!(db.one("SELECT a, b, c FROM t WHERE a > ?1", &[&7i64], read).unwrap().map(|r| r.0), Some(8));
        assert_eq!(db.one("SELECT a, b, c FROM t WHERE a > ?1", &[&8i64], read).unwrap(), None);

        let values: Vec<Value> = vec![Value::Integer(7), Value::Blob(vec![1, 2]), Value::Text("x".into())];
        assert_eq!(read(&values).unwrap(), rows[0]);
        let short: Vec<Value> = vec![Value::Integer(7)];
        assert!(read(&short).is_err(), "a missing column is an error, not a default");
    }
}
