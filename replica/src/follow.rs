//! Following the store through its change log (`lcw_schema::store::changes`): each call reads
//! the entries after the replica's position from one read snapshot of the store and brings the
//! replica to that snapshot in one PostgreSQL transaction, with `replica_cursor` (block, hash and
//! change-log position). A follower killed at any moment resumes from `replica_cursor`: a
//! transaction that did not commit left nothing, and applying entries again does no harm, since
//! every row is copied as the snapshot holds it rather than replayed.
//!
//! What one call writes:
//! - keyed projections: every row the entries name, read as it is now: upserted when present,
//!   deleted when absent;
//! - tables whose rows belong to blocks (raw layer, ledgers): every row above the lowest block
//!   the entries or the replica's cursor touch, replaced by the snapshot's;
//! - small tables (`meta`, `cursor`, `ranges`): replaced whole.
//!
//! When entries the replica needs were pruned, or one replaced every projection
//! (`lcw replay --write`), the call copies the snapshot whole instead ([`Recopy`]).

use std::collections::HashSet;
use std::time::Instant;

use lcw_schema::store::changes::{self, Change, ChangeKind, RowKey, Since, TableDef};
use lcw_schema::store::raw::{BlockRow, Cursor};
use lcw_schema::store::{Store, export, unix_now};
use rusqlite::types::ValueRef;

use crate::copy::{CopyIn, copy_table, row_values, set_cursor};
use crate::tables::{Column, TABLES, Table};
use crate::value::Value;
use crate::{CopyReport, Replica, ReplicaCursor, ReplicaError, ReplicaResult, pg};

/// Entries read per query.
const PAGE: usize = 500;
/// Entries applied per call at most, so that a replica far behind catches up in bounded
/// transactions; the next call continues from the last one applied.
pub(crate) const MAX_ENTRIES: usize = 10_000;

/// Why a call copied the store whole rather than applying entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recopy {
    /// The replica held no copy yet.
    Empty,
    /// The entries after the replica's position were pruned from the store's change log.
    Pruned {
        /// The replica's position.
        seq: u64,
        /// The oldest entry the store keeps.
        oldest: u64,
    },
    /// An entry replaced every projection (`lcw replay --write`).
    Replaced {
        /// That entry.
        seq: u64,
    },
    /// The store's entry at the replica's position names another block than the replica
    /// stands at: the store was made anew (or restored) and has since passed that position.
    /// (The cursor after each commit is its entry's block: the change-log tests hold it.)
    Diverged {
        /// The replica's position.
        seq: u64,
    },
    /// The replica stands past the store's newest entry: the store was made anew.
    Ahead {
        /// The replica's position.
        seq: u64,
        /// The store's newest entry.
        last: u64,
    },
    /// The store holds more logs the replica lacks than the replica holds (it followed a long
    /// backfill from far behind): copying it whole, indexes built after, is faster than
    /// applying them one entry at a time.
    Behind {
        /// Logs above the replica's block.
        missing: u64,
        /// Logs in the replica (PostgreSQL's estimate).
        held: u64,
    },
}

impl Recopy {
    /// Whether the copy may fill the tables without their indexes, locking readers out until
    /// it commits ([`Replica::copy_snapshot`]): only when the replica holds no copy, or less
    /// than it lacks.
    fn bulk(&self) -> bool {
        matches!(self, Recopy::Empty | Recopy::Behind { .. })
    }
}

/// A catch-up that has at least this many logs to bring, and more than the replica holds,
/// copies the store whole instead ([`Recopy::Behind`]).
pub(crate) const BULK_MIN_LOGS: u64 = 100_000;
/// Blocks behind from which the follower weighs a whole copy (the check costs a count in the
/// store and a query to the replica, too much for every block).
const BULK_MIN_BLOCKS: u64 = 32;

impl std::fmt::Display for Recopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recopy::Empty => write!(f, "the replica holds no copy yet"),
            Recopy::Pruned { seq, oldest } => write!(
                f,
                "the store's change log no longer holds the entries after the replica's position {seq} \
                 (the oldest kept is {oldest}): the replica was stopped longer than the log is kept"
            ),
            Recopy::Replaced { seq } => write!(f, "entry {seq} replaced every projection (lcw replay --write)"),
            Recopy::Diverged { seq } => write!(
                f,
                "the store's change {seq} names another block than the replica stands at: the store was made anew"
            ),
            Recopy::Ahead { seq, last } => {
                write!(f, "the replica stands at change {seq}, past the store's newest {last}: the store was made anew")
            }
            Recopy::Behind { missing, held } => write!(
                f,
                "the store holds {missing} logs the replica lacks, more than the {held} it holds: a whole copy is faster"
            ),
        }
    }
}

/// What one [`Replica::follow_once`] did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Change-log entries applied.
    pub entries: u64,
    /// Projection rows written as the store holds them.
    pub upserted: u64,
    /// Projection rows deleted (absent from the store).
    pub deleted: u64,
    /// Rows of the raw layer and the ledgers copied (by block range, and small tables whole).
    pub block_rows: u64,
    /// Set when the store was copied whole instead, with why.
    pub recopied: Option<(Recopy, CopyReport)>,
    /// More entries wait than one call applies: the replica stands at the last entry applied,
    /// behind the snapshot, and the next call goes on from there.
    pub partial: bool,
    /// The store's cursor the replica now stands at.
    pub cursor: Option<Cursor>,
    /// The replica's change-log position now.
    pub seq: u64,
    /// How many blocks the replica was behind the store before the call.
    pub behind_blocks: u64,
    /// Seconds since the block the replica now stands at was made (chain time against the
    /// clock): how stale its newest data is.
    pub lag_secs: Option<u64>,
}

impl Applied {
    /// Whether the call changed the replica.
    pub fn changed(&self) -> bool {
        self.entries > 0 || self.recopied.is_some()
    }
}

impl Replica {
    /// Brings the replica to one read snapshot of `store`: applies the change-log entries after
    /// its position (up to 10,000 per call), or copies the snapshot whole when it holds no copy
    /// yet, when those entries were pruned or when one replaced every projection. One
    /// PostgreSQL transaction, with `replica_cursor`.
    pub fn follow_once(&mut self, store: &Store) -> ReplicaResult<Applied> {
        let started = Instant::now();
        let snapshot = export::snapshot(store.conn())?;
        self.check_store(store)?;
        let cursor = Cursor::get(&snapshot)?;
        let last = changes::last_seq(&snapshot)?;
        let lag = |cursor: &Option<Cursor>| -> ReplicaResult<Option<u64>> {
            let Some(c) = cursor else { return Ok(None) };
            Ok(BlockRow::get(&snapshot, c.block_number)?.map(|b| unix_now().saturating_sub(b.timestamp)))
        };
        let recopy = |replica: &mut Replica, why: Recopy, behind: u64| -> ReplicaResult<Applied> {
            let report = replica.copy_snapshot(&snapshot, started, why.bulk())?;
            Ok(Applied {
                cursor: report.cursor,
                seq: last,
                behind_blocks: behind,
                lag_secs: lag(&report.cursor)?,
                recopied: Some((why, report)),
                ..Applied::default()
            })
        };

        let Some(mine) = self.cursor()? else {
            if cursor.is_none() {
                // Nothing indexed yet, nothing copied: nothing to do.
                return Ok(Applied::default());
            }
            return recopy(self, Recopy::Empty, 0);
        };
        let behind = cursor.map_or(0, |c| c.block_number.saturating_sub(mine.block_number as u64));
        let seq = mine.seq as u64;
        if seq > last {
            tracing::warn!(seq, last, "copying the store anew: the replica is past the store's change log");
            return recopy(self, Recopy::Ahead { seq, last }, behind);
        }
        if let Since::Entries(at) = changes::since(&snapshot, seq.saturating_sub(1), 1)?
            && let Some(at) = at.first().filter(|e| e.seq == seq)
            && (at.to_block != mine.block_number as u64 || at.block_hash.as_slice() != mine.block_hash.as_slice())
        {
            let why = Recopy::Diverged { seq };
            tracing::warn!(seq, "copying the store anew: {why}");
            return recopy(self, why, behind);
        }
        if behind >= BULK_MIN_BLOCKS {
            let missing = export::count_above(&snapshot, "logs", "block_number", mine.block_number.max(0) as u64)?;
            if missing >= self.bulk_min_logs {
                let held = self.estimated_rows("logs")?;
                if missing > held {
                    let why = Recopy::Behind { missing, held };
                    tracing::info!(missing, held, "copying the store anew: {why}");
                    return recopy(self, why, behind);
                }
            }
        }
        let entries = match read_entries(&snapshot, seq, self.max_entries)? {
            Ok(entries) => entries,
            Err(oldest) => {
                let why = Recopy::Pruned { seq, oldest };
                tracing::warn!(seq, oldest, "copying the store anew: {why}");
                return recopy(self, why, behind);
            }
        };
        if let Some(e) = entries.iter().find(|e| e.kind == ChangeKind::Replace) {
            let why = Recopy::Replaced { seq: e.seq };
            tracing::info!(seq = e.seq, "copying the store anew: {why}");
            return recopy(self, why, behind);
        }
        let Some(newest) = entries.last().map(|e| e.seq) else {
            return Ok(Applied { cursor, seq, lag_secs: lag(&cursor)?, ..Applied::default() });
        };

        // Cut short, the replica claims the block of the last entry it applied, not the
        // snapshot's: the projection rows of the later entries are not in it yet.
        let partial = newest < last;
        let claimed = match entries.last() {
            Some(e) if partial => {
                Some(Cursor { block_number: e.to_block, block_hash: e.block_hash, finalized_number: 0 })
            }
            _ => cursor,
        };
        let mut applied = Applied {
            entries: entries.len() as u64,
            seq: newest,
            behind_blocks: behind,
            cursor: claimed,
            lag_secs: lag(&claimed)?,
            partial,
            ..Applied::default()
        };
        let floor = lowest_block(&mine, &entries);
        let keys = distinct_keys(&entries);
        let rows = changes::current_rows(&snapshot, &keys)?;

        let mut tx = self.client.transaction().map_err(pg("starting to apply changes"))?;
        for table in TABLES {
            if let Some(def) = changes::table(table.name) {
                let (up, del) = apply_keyed(&mut tx, table, &def, &keys, &rows)?;
                applied.upserted += up;
                applied.deleted += del;
            } else if let Some(block) = table.block {
                applied.block_rows += copy_above(&mut tx, &snapshot, table, block, floor)?;
            } else if partial && table.name == "cursor" {
                // The store's cursor row is the snapshot's, past what a partial call applied;
                // it is copied with the call that reaches the snapshot.
            } else {
                tx.batch_execute(&format!("DELETE FROM \"{}\"", table.name))
                    .map_err(pg(format!("emptying {}", table.name)))?;
                applied.block_rows += copy_table(&mut tx, &snapshot, table)?;
            }
        }
        if let Some(c) = &claimed {
            set_cursor(&mut tx, c, newest)?;
        }
        tx.commit().map_err(pg("committing changes"))?;
        drop(snapshot);
        Ok(applied)
    }
}

/// The entries after `seq`, oldest first, at most `max`; `Err(oldest)` when those
/// right after it were pruned.
fn read_entries(snapshot: &rusqlite::Connection, seq: u64, max: usize) -> ReplicaResult<Result<Vec<Change>, u64>> {
    let mut entries: Vec<Change> = Vec::new();
    let mut after = seq;
    while entries.len() < max {
        match changes::since(snapshot, after, PAGE.min(max - entries.len()))? {
            Since::TooOld { oldest } => return Ok(Err(oldest)),
            Since::Entries(page) => {
                let Some(last) = page.last().map(|e| e.seq) else { break };
                after = last;
                entries.extend(page);
            }
        }
    }
    Ok(Ok(entries))
}

/// The block above which rows tied to blocks may differ between the replica and the snapshot:
/// the replica's cursor, or lower where an entry unwound, cleared or applied below it. `-1`:
/// from block 0.
fn lowest_block(mine: &ReplicaCursor, entries: &[Change]) -> i64 {
    entries
        .iter()
        .map(|e| match e.kind {
            ChangeKind::Apply => e.from_block.map_or(-1, |b| b as i64),
            ChangeKind::Unwind | ChangeKind::Clear | ChangeKind::Replace => e.to_block as i64,
        })
        .fold(mine.block_number, i64::min)
}

/// The keys the entries name, each once, in first-named order.
fn distinct_keys(entries: &[Change]) -> Vec<RowKey> {
    let mut seen = HashSet::new();
    entries.iter().flat_map(|e| &e.keys).filter(|k| seen.insert((k.table, key_bytes(k)))).cloned().collect()
}

/// A key's values as bytes that compare equal exactly when the values do (a tag, then the
/// value), for telling keys apart without formatting them.
fn key_bytes(k: &RowKey) -> Vec<u8> {
    use rusqlite::types::Value as V;
    let mut out = Vec::with_capacity(40 * k.key.len());
    for v in &k.key {
        let (tag, bytes): (u8, &[u8]) = match v {
            V::Null => (0, &[]),
            V::Integer(n) => {
                out.push(1);
                out.extend_from_slice(&n.to_le_bytes());
                continue;
            }
            V::Real(r) => {
                out.push(2);
                out.extend_from_slice(&r.to_bits().to_le_bytes());
                continue;
            }
            V::Text(t) => (3, t.as_bytes()),
            V::Blob(b) => (4, b),
        };
        out.push(tag);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// A key as a message shows it: `(column=value, …)`, blobs in hex.
fn shown_key(table: &Table, k: &RowKey) -> String {
    let parts: Vec<String> = table
        .key
        .iter()
        .zip(&k.key)
        .map(|(name, v)| format!("{name}={}", crate::copy::shown_value(ValueRef::from(v))))
        .collect();
    format!("({})", parts.join(", "))
}

/// Deletes the rows of `table` above `floor` and copies the snapshot's, through a staging table
/// and an upsert: a row may have moved to a higher block under the same key (a call result
/// fetched again).
fn copy_above(
    tx: &mut postgres::Transaction<'_>,
    snapshot: &rusqlite::Connection,
    table: &Table,
    block: &str,
    floor: i64,
) -> ReplicaResult<u64> {
    let what = || format!("replacing {} above block {floor}", table.name);
    tx.execute(&format!("DELETE FROM \"{}\" WHERE \"{block}\" > $1", table.name), &[&floor]).map_err(pg(what()))?;
    // Where the key starts with the block, every row above the floor was just deleted: the
    // snapshot's rows go straight in. Elsewhere a row may have moved up under the same key.
    let direct = table.key.first() == Some(&block);
    let stage = if direct { table.name.to_owned() } else { stage_table(tx, table, table.columns)? };
    let names = table.column_names();
    let mut sink = CopyIn::new(tx, &stage, table.name, table.columns)?;
    let mut values = Vec::with_capacity(names.len());
    let above = u64::try_from(floor).ok();
    let mut each = |row: &rusqlite::Row<'_>| {
        row_values(table, row, &mut values)?;
        sink.write(&values)
    };
    let rows = match above {
        Some(b) => export::scan_above(snapshot, table.name, &names, table.key, block, b, &mut each)?,
        None => export::scan(snapshot, table.name, &names, table.key, &mut each)?,
    };
    sink.finish()?;
    if !direct {
        upsert_from(tx, table, &stage)?;
    }
    Ok(rows)
}

/// Writes the named rows of a keyed table as the snapshot holds them (`rows`, in `keys` order):
/// present ones upserted, absent ones deleted. Returns (upserted, deleted).
fn apply_keyed(
    tx: &mut postgres::Transaction<'_>,
    table: &Table,
    def: &TableDef,
    keys: &[RowKey],
    rows: &[Option<Vec<rusqlite::types::Value>>],
) -> ReplicaResult<(u64, u64)> {
    let mine: Vec<(&RowKey, &Option<Vec<rusqlite::types::Value>>)> =
        keys.iter().zip(rows).filter(|(k, _)| k.table == table.name).collect();
    if mine.is_empty() {
        return Ok((0, 0));
    }
    // Where each replica column sits in the change log's column order. Both describe the same
    // store table; `tables::tests` holds every description to the store's schema.
    let missing = |what: String| ReplicaError::Layout { table: table.name, what };
    let positions = table
        .columns
        .iter()
        .map(|c| def.columns.iter().position(|d| *d == c.name).ok_or_else(|| missing(format!("column {}", c.name))))
        .collect::<ReplicaResult<Vec<usize>>>()?;
    let key_columns = table
        .key
        .iter()
        .map(|k| table.column(k).copied().ok_or_else(|| missing(format!("key column {k}"))))
        .collect::<ReplicaResult<Vec<Column>>>()?;
    let key_positions = table
        .key
        .iter()
        .map(|k| def.keys.iter().position(|d| d == k).ok_or_else(|| missing(format!("key {k}"))))
        .collect::<ReplicaResult<Vec<usize>>>()?;
    let shown = |k: &RowKey| shown_key(table, k);

    let gone = stage_table(tx, table, &key_columns)?;
    let mut sink = CopyIn::new(tx, &gone, table.name, &key_columns)?;
    let mut deleted = 0;
    for (k, _) in mine.iter().filter(|(_, row)| row.is_none()) {
        let values = key_columns
            .iter()
            .zip(&key_positions)
            .map(|(c, i)| Value::from_sqlite(table, c, ValueRef::from(&k.key[*i]), || shown(k)))
            .collect::<ReplicaResult<Vec<_>>>()?;
        sink.write(&values)?;
        deleted += 1;
    }
    sink.finish()?;
    let on: Vec<String> = table.key.iter().map(|k| format!("t.\"{k}\" = g.\"{k}\"")).collect();
    tx.batch_execute(&format!("DELETE FROM \"{}\" t USING \"{gone}\" g WHERE {}", table.name, on.join(" AND ")))
        .map_err(pg(format!("deleting rows of {}", table.name)))?;

    let stage = stage_table(tx, table, table.columns)?;
    let mut sink = CopyIn::new(tx, &stage, table.name, table.columns)?;
    let mut upserted = 0;
    for (k, row) in &mine {
        let Some(row) = row else { continue };
        let values = table
            .columns
            .iter()
            .zip(&positions)
            .map(|(c, i)| Value::from_sqlite(table, c, ValueRef::from(&row[*i]), || shown(k)))
            .collect::<ReplicaResult<Vec<_>>>()?;
        sink.write(&values)?;
        upserted += 1;
    }
    sink.finish()?;
    upsert_from(tx, table, &stage)?;
    Ok((upserted, deleted))
}

/// A temporary table with `columns` of `table`, dropped at the commit; returns its name.
fn stage_table(tx: &mut postgres::Transaction<'_>, table: &Table, columns: &[Column]) -> ReplicaResult<String> {
    let stage = format!("stage_{}_{}", table.name, columns.len());
    let quoted: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    tx.batch_execute(&format!(
        "DROP TABLE IF EXISTS \"{stage}\"; \
         CREATE TEMP TABLE \"{stage}\" ON COMMIT DROP AS SELECT {} FROM \"{}\" WITH NO DATA",
        quoted.join(", "),
        table.name
    ))
    .map_err(pg(format!("staging rows of {}", table.name)))?;
    Ok(stage)
}

/// Inserts every row of `stage` (all of `table`'s columns) into `table`, replacing rows of the
/// same key.
fn upsert_from(tx: &mut postgres::Transaction<'_>, table: &Table, stage: &str) -> ReplicaResult<()> {
    let cols: Vec<String> = table.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let keys: Vec<String> = table.key.iter().map(|k| format!("\"{k}\"")).collect();
    let sets: Vec<String> = table
        .columns
        .iter()
        .filter(|c| !table.key.contains(&c.name))
        .map(|c| format!("\"{0}\" = excluded.\"{0}\"", c.name))
        .collect();
    let action = if sets.is_empty() { "NOTHING".to_owned() } else { format!("UPDATE SET {}", sets.join(", ")) };
    tx.batch_execute(&format!(
        "INSERT INTO \"{}\" ({cols}) SELECT {cols} FROM \"{stage}\" ON CONFLICT ({}) DO {action}",
        table.name,
        keys.join(", "),
        cols = cols.join(", ")
    ))
    .map_err(pg(format!("writing rows of {}", table.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;
    use rusqlite::types::Value as V;

    #[test]
    fn keys_are_told_apart_by_value_and_kind_and_named_in_hex() {
        let key = |table, key: Vec<V>| RowKey { table, key };
        let entry = |keys| Change {
            seq: 1,
            kind: ChangeKind::Apply,
            from_block: None,
            to_block: 1,
            block_hash: B256::ZERO,
            committed_at: 0,
            keys,
        };
        let entries = [
            entry(vec![key("workers", vec![V::Blob(vec![1, 2])]), key("models", vec![V::Text("a".into())])]),
            entry(vec![
                key("workers", vec![V::Blob(vec![1, 2])]),
                key("models", vec![V::Blob(b"a".to_vec())]),
                key("jobs", vec![V::Integer(1)]),
                key("jobs", vec![V::Integer(256)]),
            ]),
        ];
        let distinct = distinct_keys(&entries);
        assert_eq!(distinct.len(), 5, "{distinct:?}");
        let workers = TABLES.iter().find(|t| t.name == "workers").unwrap();
        assert_eq!(shown_key(workers, &distinct[0]), "(address=0x0102)");
    }
}
