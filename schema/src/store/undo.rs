//! The undo journal: before-images of projection rows changed by blocks that are not final.
//!
//! Applying a non-final block records, for every projection row it changed, the row as it was
//! before the block (or that it did not exist). Unwinding to block `n` restores those images for
//! every block above `n`, newest first, so projections return exactly to their state at `n`.
//! Entries at or below the finalized block are pruned: a reorg can never reach them.

use rusqlite::Connection;

use super::changes::KeySet;
use super::rows::{
    CapabilityRow, EventCountRow, JobRow, ModelRow, ProjectionRow, RollupRow, SessionRequestRow, SessionRow,
    WorkerModelRow, WorkerRow,
};
use super::{StoreError, StoreResult};

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoEntry {
    /// The block that changed the row.
    pub block_number: u64,
    /// Order within the block.
    pub seq: u64,
    /// Table.
    pub tbl: String,
    /// The row's key, as a JSON image of the row (any version of it carries the key).
    pub key: String,
    /// The row before the block (JSON), or None if the block created it.
    pub before: Option<String>,
}

impl UndoEntry {
    /// An entry for `row` changed by `block`: `before` is its image before the block, `after` its
    /// image after (None when the block deleted it).
    pub fn of<R: ProjectionRow>(block: u64, seq: u64, before: Option<&R>, after: Option<&R>) -> StoreResult<Self> {
        let json = |r: &R| {
            serde_json::to_string(r)
                .map_err(|e| StoreError::Corrupt { what: format!("undo image of {}", R::TABLE), value: e.to_string() })
        };
        let key_row = after.or(before).ok_or_else(|| StoreError::Corrupt {
            what: "undo entry".into(),
            value: format!("{} row with neither before nor after image", R::TABLE),
        })?;
        Ok(UndoEntry {
            block_number: block,
            seq,
            tbl: R::TABLE.to_owned(),
            key: json(key_row)?,
            before: before.map(json).transpose()?,
        })
    }

    /// Records the entry.
    pub fn insert(&self, conn: &Connection) -> StoreResult<()> {
        conn.prepare_cached("INSERT INTO undo (block_number, seq, tbl, key, before) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(rusqlite::params![
                self.block_number as i64,
                self.seq as i64,
                self.tbl,
                self.key.as_bytes(),
                self.before
            ])?;
        Ok(())
    }

    fn restore_as<R: ProjectionRow>(&self, conn: &Connection, keys: &mut KeySet) -> StoreResult<()> {
        let parse = |s: &str| {
            serde_json::from_str::<R>(s)
                .map_err(|e| StoreError::Corrupt { what: format!("undo image of {}", self.tbl), value: e.to_string() })
        };
        let row = match &self.before {
            Some(before) => {
                let row = parse(before)?;
                row.put(conn)?;
                row
            }
            None => {
                let row = parse(&self.key)?;
                row.delete(conn)?;
                row
            }
        };
        keys.add(&row);
        Ok(())
    }

    /// Puts the row back as it was before the block and adds its key to `keys`.
    pub fn restore(&self, conn: &Connection, keys: &mut KeySet) -> StoreResult<()> {
        match self.tbl.as_str() {
            WorkerRow::TABLE => self.restore_as::<WorkerRow>(conn, keys),
            WorkerModelRow::TABLE => self.restore_as::<WorkerModelRow>(conn, keys),
            ModelRow::TABLE => self.restore_as::<ModelRow>(conn, keys),
            SessionRow::TABLE => self.restore_as::<SessionRow>(conn, keys),
            JobRow::TABLE => self.restore_as::<JobRow>(conn, keys),
            RollupRow::TABLE => self.restore_as::<RollupRow>(conn, keys),
            EventCountRow::TABLE => self.restore_as::<EventCountRow>(conn, keys),
            SessionRequestRow::TABLE => self.restore_as::<SessionRequestRow>(conn, keys),
            CapabilityRow::TABLE => self.restore_as::<CapabilityRow>(conn, keys),
            other => Err(StoreError::Corrupt { what: "undo table".into(), value: other.to_owned() }),
        }
    }
}

/// Restores every row changed above `block`, newest first, and drops those entries.
pub fn unwind_above(conn: &Connection, block: u64) -> StoreResult<u64> {
    restore_above(conn, block, &mut KeySet::default())
}

/// [`unwind_above`], adding the key of every restored row to `keys` (for the change log).
pub fn restore_above(conn: &Connection, block: u64, keys: &mut KeySet) -> StoreResult<u64> {
    let mut stmt = conn.prepare_cached(
        "SELECT block_number, seq, tbl, key, before FROM undo WHERE block_number > ?1 ORDER BY block_number DESC, seq DESC",
    )?;
    let entries = stmt
        .query_map([block as i64], |r| {
            let key: Vec<u8> = r.get(3)?;
            Ok(UndoEntry {
                block_number: r.get::<_, i64>(0)? as u64,
                seq: r.get::<_, i64>(1)? as u64,
                tbl: r.get(2)?,
                key: String::from_utf8_lossy(&key).into_owned(),
                before: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for e in &entries {
        e.restore(conn, keys)?;
    }
    conn.prepare_cached("DELETE FROM undo WHERE block_number > ?1")?.execute([block as i64])?;
    Ok(entries.len() as u64)
}

/// Drops entries of blocks at or below `finalized`.
pub fn prune(conn: &Connection, finalized: u64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM undo WHERE block_number <= ?1")?.execute([finalized as i64])?;
    Ok(())
}

/// The lowest block the journal can unwind to (one below its oldest entry), if it has entries.
pub fn oldest_block(conn: &Connection) -> StoreResult<Option<u64>> {
    let n: Option<i64> = conn.prepare_cached("SELECT min(block_number) FROM undo")?.query_row([], |r| r.get(0))?;
    Ok(n.map(|n| n as u64))
}
