//! The change log (`changes`, `V13__change_log.sql`): which projection rows each commit changed,
//! recorded in that commit, so that a copy of the store elsewhere can follow it.
//!
//! The writer collects the key of every projection row it writes into a [`KeySet`] and
//! [`record`]s one [`Change`] per commit. A follower reads [`since`] its position from one read
//! snapshot, reads the rows those keys name as they are now with [`current_rows`] (absent: the
//! row was deleted), and copies raw and ledger rows by the entry's block range. Entries older
//! than the [`Retention`] are [`prune`]d; a follower below the oldest entry is told so
//! ([`Since::TooOld`]) and must copy the store anew, from [`last_seq`] in the same snapshot.
//!
//! # Key encoding (version 1)
//!
//! ```text
//! keys  := 0x01 run*
//! run   := table:str arity:u8 count:varint key{count}
//! key   := value{arity}                      (the primary key columns, in their order)
//! value := 0x00                              NULL
//!        | 0x01 zigzag:varint                INTEGER
//!        | 0x02 f64 (8 bytes, little endian) REAL
//!        | 0x03 len:varint utf8              TEXT
//!        | 0x04 len:varint bytes             BLOB
//! str   := len:varint utf8
//! varint: unsigned LEB128
//! ```
//!
//! Values are the stored column values, so a key binds straight into a `WHERE` on the primary
//! key. A job id costs 3 to 4 bytes, an address 22, a rollup key about 58.

use alloy::primitives::B256;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};

use super::rows::{
    CapabilityRow, EventCountRow, JobRow, ModelRow, ProjectionRow, RollupRow, SessionRequestRow, SessionRow,
    WorkerModelRow, WorkerRow,
};
use super::{StoreError, StoreResult, meta_get};

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Blocks `(from_block, to_block]` applied; the keys name every projection row written.
    Apply,
    /// A reorg unwound everything above `to_block`; the keys name every projection row restored.
    Unwind,
    /// Raw and ledger rows above the cursor (`to_block`) deleted; no projection row changed.
    Clear,
    /// Every projection table replaced (`lcw replay --write`): read them whole.
    Replace,
}

impl ChangeKind {
    /// The `kind` column's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Apply => "apply",
            ChangeKind::Unwind => "unwind",
            ChangeKind::Clear => "clear",
            ChangeKind::Replace => "replace",
        }
    }

    /// Parses the `kind` column.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "apply" => ChangeKind::Apply,
            "unwind" => ChangeKind::Unwind,
            "clear" => ChangeKind::Clear,
            "replace" => ChangeKind::Replace,
            _ => return None,
        })
    }
}

/// A projection row named by its table and primary key values (as stored).
#[derive(Debug, Clone, PartialEq)]
pub struct RowKey {
    /// The table.
    pub table: &'static str,
    /// The primary key values, in the order of [`TableDef::keys`].
    pub key: Vec<Value>,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Position in the log (increasing; never reused).
    pub seq: u64,
    /// What the commit did.
    pub kind: ChangeKind,
    /// For an apply, the block below the range it covers (None: the range starts at block 0);
    /// for an unwind, the cursor before it; otherwise the cursor.
    pub from_block: Option<u64>,
    /// The cursor after the commit.
    pub to_block: u64,
    /// The hash of `to_block`.
    pub block_hash: B256,
    /// Unix seconds (wall clock).
    pub committed_at: u64,
    /// The projection rows the commit changed (a key may repeat).
    pub keys: Vec<RowKey>,
}

/// A table the change log names rows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// Table name.
    pub table: &'static str,
    /// Every column, in the order [`current_rows`] returns values.
    pub columns: &'static [&'static str],
    /// The primary key columns.
    pub keys: &'static [&'static str],
}

fn def<R: ProjectionRow>() -> TableDef {
    TableDef { table: R::TABLE, columns: R::columns(), keys: R::key_columns() }
}

/// The projection tables whose rows the change log names by key. The other four projection
/// tables (`config_history`, `withdrawals`, `bounties`, `slashes`) are append-only ledgers keyed
/// by block: a follower copies them by the entries' block ranges.
pub fn keyed_tables() -> [TableDef; 9] {
    [
        def::<WorkerRow>(),
        def::<WorkerModelRow>(),
        def::<ModelRow>(),
        def::<SessionRow>(),
        def::<JobRow>(),
        def::<RollupRow>(),
        def::<EventCountRow>(),
        def::<SessionRequestRow>(),
        def::<CapabilityRow>(),
    ]
}

/// The definition of keyed table `name`.
pub fn table(name: &str) -> Option<TableDef> {
    keyed_tables().into_iter().find(|t| t.table == name)
}

const VERSION: u8 = 1;

/// The keys of the rows one commit changed, encoded as they are added (a few bytes per row;
/// no allocation per row).
#[derive(Debug, Default)]
pub struct KeySet {
    runs: Vec<Run>,
    /// Index in `runs` of the table last added to (rows come table by table).
    last: usize,
}

#[derive(Debug)]
struct Run {
    table: &'static str,
    arity: u8,
    count: u64,
    bytes: Vec<u8>,
}

impl KeySet {
    /// Adds the key of `row`.
    pub fn add<R: ProjectionRow>(&mut self, row: &R) {
        let run = self.run(R::TABLE, R::key_columns().len());
        run.count += 1;
        row.each_key_value(&mut |v| put_value(&mut run.bytes, v));
    }

    /// Adds a key read back (tests, tools).
    pub fn add_key(&mut self, key: &RowKey) {
        let run = self.run(key.table, key.key.len());
        run.count += 1;
        for v in &key.key {
            put_value(&mut run.bytes, v.into());
        }
    }

    fn run(&mut self, table: &'static str, arity: usize) -> &mut Run {
        if self.runs.get(self.last).is_none_or(|r| r.table != table) {
            self.last = match self.runs.iter().position(|r| r.table == table) {
                Some(i) => i,
                None => {
                    // Primary keys have one to three columns.
                    let arity = u8::try_from(arity).unwrap_or(u8::MAX);
                    self.runs.push(Run { table, arity, count: 0, bytes: Vec::new() });
                    self.runs.len() - 1
                }
            };
        }
        &mut self.runs[self.last]
    }

    /// Keys added.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|r| r.count).sum()
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `keys` column.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.runs.iter().map(|r| r.bytes.len() + r.table.len() + 12).sum();
        let mut out = Vec::with_capacity(1 + size);
        out.push(VERSION);
        for r in self.runs.iter().filter(|r| r.count > 0) {
            put_varint(&mut out, r.table.len() as u64);
            out.extend_from_slice(r.table.as_bytes());
            out.push(r.arity);
            put_varint(&mut out, r.count);
            out.extend_from_slice(&r.bytes);
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(0),
        ValueRef::Integer(i) => {
            out.push(1);
            put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
        }
        ValueRef::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_le_bytes());
        }
        ValueRef::Text(b) => {
            out.push(3);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        ValueRef::Blob(b) => {
            out.push(4);
            put_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

/// Reads an encoded `keys` column.
struct Reader<'a> {
    bytes: &'a [u8],
    seq: u64,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt { what: format!("changes.keys of entry {}", self.seq), value: why.to_owned() }
    }

    fn take(&mut self, n: usize) -> StoreResult<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self) -> StoreResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> StoreResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint longer than 64 bits"))
    }

    fn len(&mut self) -> StoreResult<usize> {
        let n = self.varint()?;
        usize::try_from(n).ok().filter(|n| *n <= self.bytes.len()).ok_or_else(|| self.corrupt("length past the end"))
    }

    fn value(&mut self) -> StoreResult<Value> {
        Ok(match self.byte()? {
            0 => Value::Null,
            1 => {
                let z = self.varint()?;
                Value::Integer(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            2 => {
                let b = self.take(8)?;
                Value::Real(f64::from_le_bytes(b.try_into().map_err(|_| self.corrupt("real"))?))
            }
            3 => {
                let n = self.len()?;
                let b = self.take(n)?;
                Value::Text(String::from_utf8(b.to_vec()).map_err(|_| self.corrupt("text is not UTF-8"))?)
            }
            4 => {
                let n = self.len()?;
                Value::Blob(self.take(n)?.to_vec())
            }
            tag => return Err(self.corrupt(&format!("unknown value tag {tag}"))),
        })
    }
}

/// Decodes a `keys` column (of entry `seq`, for the error).
pub fn decode_keys(bytes: &[u8], seq: u64) -> StoreResult<Vec<RowKey>> {
    let mut r = Reader { bytes, seq };
    let version = r.byte()?;
    if version != VERSION {
        return Err(r.corrupt(&format!("encoding version {version}; this lcw reads version {VERSION}")));
    }
    let mut keys = Vec::new();
    while !r.bytes.is_empty() {
        let n = r.len()?;
        let name = r.take(n)?;
        let name = std::str::from_utf8(name).map_err(|_| r.corrupt("table name is not UTF-8"))?;
        let def = table(name).ok_or_else(|| r.corrupt(&format!("unknown table {name}")))?;
        let arity = usize::from(r.byte()?);
        if arity != def.keys.len() {
            return Err(r.corrupt(&format!("{arity} key columns for {name}, which has {}", def.keys.len())));
        }
        let count = r.varint()?;
        for _ in 0..count {
            let key = (0..arity).map(|_| r.value()).collect::<StoreResult<Vec<_>>>()?;
            keys.push(RowKey { table: def.table, key });
        }
    }
    Ok(keys)
}

/// Records an entry for the commit of the caller's transaction; returns its `seq`.
pub fn record(
    conn: &Connection,
    kind: ChangeKind,
    from_block: Option<u64>,
    to_block: u64,
    block_hash: &B256,
    keys: &KeySet,
) -> StoreResult<u64> {
    conn.prepare_cached(
        "INSERT INTO changes (kind, from_block, to_block, block_hash, committed_at, keys) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(rusqlite::params![
        kind.as_str(),
        from_block.map(|b| b as i64),
        to_block as i64,
        block_hash.as_slice(),
        super::unix_now() as i64,
        keys.encode(),
    ])?;
    Ok(conn.last_insert_rowid() as u64)
}

/// What [`since`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// The entries after the position, oldest first (empty: nothing new).
    Entries(Vec<Change>),
    /// Entries right after the position were pruned: the oldest kept is `oldest`. The follower
    /// must copy the store anew and continue from [`last_seq`] of that copy's snapshot.
    TooOld {
        /// The oldest entry kept.
        oldest: u64,
    },
}

/// Up to `limit` entries after `seq` (the follower's position: the last entry it applied, 0 for
/// none), oldest first. Call it inside the read transaction the follower reads rows in, so that
/// the entries and the rows are of the same commit.
pub fn since(conn: &Connection, seq: u64, limit: usize) -> StoreResult<Since> {
    let oldest: Option<i64> = conn.prepare_cached("SELECT min(seq) FROM changes")?.query_row([], |r| r.get(0))?;
    if let Some(oldest) = oldest.map(|o| o as u64)
        && oldest > seq.saturating_add(1)
    {
        return Ok(Since::TooOld { oldest });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, from_block, to_block, block_hash, committed_at, keys FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![seq as i64, limit.min(i64::MAX as usize) as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)? as u64,
                r.get::<_, Vec<u8>>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut entries = Vec::with_capacity(rows.len());
    for (seq, kind, from_block, to_block, hash, committed_at, keys) in rows {
        let kind = ChangeKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt { what: format!("changes.kind of entry {seq}"), value: kind.clone() })?;
        if hash.len() != 32 {
            return Err(StoreError::Corrupt {
                what: format!("changes.block_hash of entry {seq}"),
                value: format!("{} bytes", hash.len()),
            });
        }
        entries.push(Change {
            seq,
            kind,
            from_block: from_block.map(|b| b as u64),
            to_block,
            block_hash: B256::from_slice(&hash),
            committed_at,
            keys: decode_keys(&keys, seq)?,
        });
    }
    Ok(Since::Entries(entries))
}

/// The newest entry's `seq` (0 when none was ever recorded): the position of a copy made from
/// the same read snapshot.
pub fn last_seq(conn: &Connection) -> StoreResult<u64> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// The current image of each keyed row, in `keys` order: its values in [`TableDef::columns`]
/// order, or None when the row no longer exists.
pub fn current_rows(conn: &Connection, keys: &[RowKey]) -> StoreResult<Vec<Option<Vec<Value>>>> {
    // One statement per table, prepared once per call (an entry may name 100,000 rows).
    let mut stmts: Vec<(&'static str, usize, rusqlite::Statement<'_>)> = Vec::new();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let i = match stmts.iter().position(|(t, ..)| *t == k.table) {
            Some(i) => i,
            None => {
                let def = table(k.table)
                    .ok_or_else(|| StoreError::Corrupt { what: "row key".into(), value: format!("{k:?}") })?;
                let wheres: Vec<String> =
                    def.keys.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 1)).collect();
                let sql =
                    format!("SELECT {} FROM {} WHERE {}", def.columns.join(", "), def.table, wheres.join(" AND "));
                stmts.push((def.table, def.columns.len(), conn.prepare(&sql)?));
                stmts.len() - 1
            }
        };
        let (_, width, stmt) = &mut stmts[i];
        let width = *width;
        if stmt.parameter_count() != k.key.len() {
            return Err(StoreError::Corrupt { what: "row key".into(), value: format!("{k:?}") });
        }
        let row = stmt
            .query_row(rusqlite::params_from_iter(k.key.iter()), |r| {
                (0..width).map(|i| r.get::<_, Value>(i)).collect::<Result<Vec<_>, _>>()
            })
            .optional()?;
        out.push(row);
    }
    Ok(out)
}

/// How long entries are kept: the newest `entries` always, and any entry younger than `secs`.
/// A follower that stays down longer copies the store anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries always kept (at least 1).
    pub entries: u64,
    /// Entries younger than this many seconds are kept.
    pub secs: u64,
}

/// The default retention: a day, which covers a follower restarted or upgraded, and at least
/// 10,000 entries (a live chain of 1 s blocks writes 86,400 a day, some 10 MB; a backfill writes
/// one per 200,000 logs).
pub const RETENTION: Retention = Retention { entries: 10_000, secs: 24 * 3600 };

/// `meta` key overriding [`Retention::entries`].
pub const KEEP_ENTRIES: &str = "changes_keep_entries";
/// `meta` key overriding [`Retention::secs`], in hours.
pub const KEEP_HOURS: &str = "changes_keep_hours";

impl Retention {
    /// [`RETENTION`] with the `meta` overrides of this store.
    pub fn of(conn: &Connection) -> StoreResult<Retention> {
        let num = |key: &str| -> StoreResult<Option<u64>> {
            meta_get(conn, key)?
                .map(|v| v.parse::<u64>().map_err(|_| StoreError::Corrupt { what: format!("meta.{key}"), value: v }))
                .transpose()
        };
        Ok(Retention {
            entries: num(KEEP_ENTRIES)?.unwrap_or(RETENTION.entries).max(1),
            secs: num(KEEP_HOURS)?.map_or(RETENTION.secs, |h| h.saturating_mul(3600)),
        })
    }
}

/// Deletes the entries `retention` no longer keeps at time `now`; returns how many.
///
/// Cheap enough for every commit: it reads only entries older than the bound, which are all
/// deleted but those the newest-N rule keeps.
pub fn prune(conn: &Connection, now: u64, retention: Retention) -> StoreResult<u64> {
    let Some(last) =
        conn.prepare_cached("SELECT max(seq) FROM changes")?.query_row([], |r| r.get::<_, Option<i64>>(0))?
    else {
        return Ok(0);
    };
    let keep_from = (last as u64).saturating_sub(retention.entries) + 1;
    if keep_from <= 1 {
        return Ok(0);
    }
    let cutoff = now.saturating_sub(retention.secs);
    // The first entry young enough bounds the deletion too (entries come in time order; one
    // written under a clock set back is kept, with everything after it).
    let deleted = conn
        .prepare_cached(
            "DELETE FROM changes WHERE seq < ?1 AND seq < coalesce((SELECT seq FROM changes WHERE committed_at >= ?2 ORDER BY seq LIMIT 1), ?1)",
        )?
        .execute(rusqlite::params![keep_from as i64, cutoff as i64])?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests;
