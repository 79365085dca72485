//! The projector's working set: projection rows loaded on first touch, changed in memory by
//! [`crate::apply`], and written back once per transaction. Writing each row once per batch
//! instead of once per event is what makes backfill and replay fast; remembering each row's
//! image before the transaction is what makes non-final blocks unwindable.

use std::collections::HashMap;
use std::hash::Hash;

use alloy::primitives::{Address, B256, U256};
use lcw_schema::store::StoreResult;
use lcw_schema::store::ledger::{Bounty, ConfigChange, Slash, Withdrawal};
use lcw_schema::store::raw;
use lcw_schema::store::rows::{
    EventCountRow, JobRow, ModelRow, ProjectionRow, RollupRow, SessionRow, WorkerModelRow, WorkerRow,
};
use lcw_schema::store::undo::UndoEntry;
use rusqlite::Connection;

struct Slot<R> {
    /// The row before this transaction (only kept when undo images are needed).
    before: Option<R>,
    current: Option<R>,
    /// The row as loaded, kept for deletes (its key).
    loaded: Option<R>,
    dirty: bool,
}

type Map<K, R> = HashMap<K, Slot<R>>;

fn slot<K: Eq + Hash, R: Clone>(
    map: &mut Map<K, R>,
    key: K,
    track: bool,
    load: impl FnOnce() -> StoreResult<Option<R>>,
) -> StoreResult<&mut Slot<R>> {
    use std::collections::hash_map::Entry;
    Ok(match map.entry(key) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(v) => {
            let row = load()?;
            let before = if track { row.clone() } else { None };
            v.insert(Slot { before, current: row, loaded: None, dirty: false })
        }
    })
}

/// What a flush wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    /// Projection rows written or deleted.
    pub rows: u64,
    /// Undo entries recorded.
    pub undo: u64,
}

/// Rows touched by the current transaction.
pub struct Projector<'c> {
    pub(crate) conn: &'c Connection,
    track_before: bool,
    workers: Map<Address, WorkerRow>,
    worker_models: Map<(Address, B256), WorkerModelRow>,
    models: Map<B256, ModelRow>,
    sessions: Map<u64, SessionRow>,
    jobs: Map<u64, JobRow>,
    rollups: Map<(u64, Address, B256), RollupRow>,
    event_counts: Map<String, EventCountRow>,
    pub(crate) config: Vec<ConfigChange>,
    pub(crate) withdrawals: Vec<Withdrawal>,
    pub(crate) bounties: Vec<Bounty>,
    pub(crate) slashes: Vec<Slash>,
    /// Parameter values in force (loaded at start, updated as changes are applied).
    pub(crate) params: HashMap<String, String>,
    /// The last WorkerSlashed of the current transaction: (tx hash, index in `slashes`), so the
    /// JobTimedOut / DisputeResolved that follows in the same transaction can claim it.
    pub(crate) last_slash: Option<(B256, usize)>,
    /// Events about jobs or sessions the store does not know (indexing started after them).
    pub unattributed: u64,
}

impl std::fmt::Debug for Projector<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("jobs", &self.jobs.len()).field("workers", &self.workers.len()).finish()
    }
}

macro_rules! getter {
    ($get:ident, $map:ident, $key:ty, $row:ty, |$conn:ident, $k:ident| $load:expr) => {
        /// The row, if it exists (without marking it changed).
        pub(crate) fn $get(&mut self, key: $key) -> StoreResult<Option<&$row>> {
            let $conn = self.conn;
            let track = self.track_before;
            let s = slot(&mut self.$map, key.clone(), track, || {
                let $k = &key;
                $load
            })?;
            Ok(s.current.as_ref())
        }
    };
}

macro_rules! getter_mut {
    ($get_mut:ident, $map:ident, $key:ty, $row:ty, |$conn:ident, $k:ident| $load:expr) => {
        /// The row for changing, if it exists.
        pub(crate) fn $get_mut(&mut self, key: $key) -> StoreResult<Option<&mut $row>> {
            let $conn = self.conn;
            let track = self.track_before;
            let s = slot(&mut self.$map, key.clone(), track, || {
                let $k = &key;
                $load
            })?;
            if s.current.is_some() {
                s.dirty = true;
            }
            Ok(s.current.as_mut())
        }
    };
}

impl<'c> Projector<'c> {
    /// A projector over `conn`; `track_before` keeps before-images for the undo journal.
    pub fn new(conn: &'c Connection, track_before: bool) -> StoreResult<Self> {
        let params: HashMap<String, String> = lcw_schema::store::ledger::current_params(conn)?.into_iter().collect();
        Ok(Projector {
            conn,
            track_before,
            workers: HashMap::new(),
            worker_models: HashMap::new(),
            models: HashMap::new(),
            sessions: HashMap::new(),
            jobs: HashMap::new(),
            rollups: HashMap::new(),
            event_counts: HashMap::new(),
            config: Vec::new(),
            withdrawals: Vec::new(),
            bounties: Vec::new(),
            slashes: Vec::new(),
            params,
            last_slash: None,
            unattributed: 0,
        })
    }

    getter_mut!(job_mut, jobs, u64, JobRow, |conn, k| JobRow::get(conn, *k));
    getter!(session, sessions, u64, SessionRow, |conn, k| SessionRow::get(conn, *k));
    getter_mut!(session_mut, sessions, u64, SessionRow, |conn, k| SessionRow::get(conn, *k));
    getter!(model, models, B256, ModelRow, |conn, k| ModelRow::get(conn, k));

    /// Inserts (or replaces) a row.
    pub(crate) fn put_job(&mut self, row: JobRow) -> StoreResult<()> {
        let conn = self.conn;
        let track = self.track_before;
        let id = row.job_id;
        let s = slot(&mut self.jobs, id, track, || JobRow::get(conn, id))?;
        s.current = Some(row);
        s.dirty = true;
        Ok(())
    }

    /// Inserts (or replaces) a session.
    pub(crate) fn put_session(&mut self, row: SessionRow) -> StoreResult<()> {
        let conn = self.conn;
        let track = self.track_before;
        let id = row.session_id;
        let s = slot(&mut self.sessions, id, track, || SessionRow::get(conn, id))?;
        s.current = Some(row);
        s.dirty = true;
        Ok(())
    }

    /// The worker, created if never seen.
    pub(crate) fn worker_mut(&mut self, address: Address, block: u64) -> StoreResult<&mut WorkerRow> {
        let conn = self.conn;
        let track = self.track_before;
        let s = slot(&mut self.workers, address, track, || WorkerRow::get(conn, &address))?;
        s.dirty = true;
        let row = s.current.get_or_insert_with(|| WorkerRow::new(address, block));
        row.updated_block = block;
        Ok(row)
    }

    /// The model, created if never seen.
    pub(crate) fn model_mut(&mut self, id: B256, block: u64) -> StoreResult<&mut ModelRow> {
        let conn = self.conn;
        let track = self.track_before;
        let s = slot(&mut self.models, id, track, || ModelRow::get(conn, &id))?;
        s.dirty = true;
        let row = s.current.get_or_insert_with(|| ModelRow::new(id, block));
        row.updated_block = block;
        Ok(row)
    }

    /// Records that `worker` supports `model`.
    pub(crate) fn add_worker_model(&mut self, worker: Address, model: B256, block: u64) -> StoreResult<()> {
        let conn = self.conn;
        let track = self.track_before;
        let s = slot(&mut self.worker_models, (worker, model), track, || WorkerModelRow::get(conn, &worker, &model))?;
        s.dirty = true;
        s.current = Some(WorkerModelRow { worker, model_id: model, added_block: block });
        Ok(())
    }

    /// Records that `worker` no longer supports `model`.
    pub(crate) fn remove_worker_model(&mut self, worker: Address, model: B256) -> StoreResult<()> {
        let conn = self.conn;
        let track = self.track_before;
        let s = slot(&mut self.worker_models, (worker, model), track, || WorkerModelRow::get(conn, &worker, &model))?;
        if let Some(row) = s.current.take() {
            s.loaded.get_or_insert(row);
            s.dirty = true;
        }
        Ok(())
    }

    /// The hourly rollup of `(worker, model)` for the hour containing `ts`.
    pub(crate) fn rollup(&mut self, ts: u64, worker: Address, model: Option<B256>) -> StoreResult<&mut RollupRow> {
        let hour = ts - ts % 3600;
        let model = model.unwrap_or_default();
        let conn = self.conn;
        let track = self.track_before;
        let s = slot(&mut self.rollups, (hour, worker, model), track, || RollupRow::get(conn, hour, &worker, &model))?;
        s.dirty = true;
        Ok(s.current.get_or_insert_with(|| RollupRow::new(hour, worker, model)))
    }

    /// Counts one more log of `event`.
    pub(crate) fn count_event(&mut self, event: &str) -> StoreResult<()> {
        let conn = self.conn;
        let track = self.track_before;
        let s = if let Some(s) = self.event_counts.get_mut(event) {
            s
        } else {
            slot(&mut self.event_counts, event.to_owned(), track, || EventCountRow::get(conn, event))?
        };
        s.dirty = true;
        s.current.get_or_insert_with(|| EventCountRow { event: event.to_owned(), count: 0 }).count += 1;
        Ok(())
    }

    /// A parameter in force, as a number.
    pub(crate) fn param_u64(&self, name: &str) -> Option<u64> {
        self.params.get(name).and_then(|v| v.parse().ok())
    }

    /// A parameter in force, as an amount.
    pub(crate) fn param_u256(&self, name: &str) -> Option<U256> {
        self.params.get(name).and_then(|v| U256::from_str_radix(v, 10).ok())
    }

    /// The recorded value of a transaction (for events that lack their amount).
    pub(crate) fn tx_value(&self, tx: &B256) -> StoreResult<Option<U256>> {
        raw::tx_value(self.conn, tx)
    }

    /// Writes every changed row and the appended ledger rows; with `undo_block`, also records
    /// the before-image of every changed row under that block.
    pub fn flush(self, undo_block: Option<u64>) -> StoreResult<FlushStats> {
        let conn = self.conn;
        let mut stats = FlushStats::default();
        fn write<K, R: ProjectionRow + PartialEq>(
            conn: &Connection,
            map: Map<K, R>,
            undo_block: Option<u64>,
            stats: &mut FlushStats,
        ) -> StoreResult<()> {
            for (_, s) in map {
                if !s.dirty {
                    continue;
                }
                match (&s.current, &s.loaded, &s.before) {
                    (Some(row), _, _) => row.put(conn)?,
                    (None, Some(gone), _) | (None, None, Some(gone)) => gone.delete(conn)?,
                    (None, None, None) => continue,
                }
                stats.rows += 1;
                if let Some(block) = undo_block {
                    if s.before == s.current {
                        continue;
                    }
                    UndoEntry::of(block, stats.undo, s.before.as_ref(), s.current.as_ref().or(s.loaded.as_ref()))?
                        .insert(conn)?;
                    stats.undo += 1;
                }
            }
            Ok(())
        }
        write(conn, self.workers, undo_block, &mut stats)?;
        write(conn, self.worker_models, undo_block, &mut stats)?;
        write(conn, self.models, undo_block, &mut stats)?;
        write(conn, self.sessions, undo_block, &mut stats)?;
        write(conn, self.jobs, undo_block, &mut stats)?;
        write(conn, self.rollups, undo_block, &mut stats)?;
        write(conn, self.event_counts, undo_block, &mut stats)?;
        for c in &self.config {
            c.insert(conn)?;
        }
        for w in &self.withdrawals {
            w.insert(conn)?;
        }
        for b in &self.bounties {
            b.insert(conn)?;
        }
        for s in &self.slashes {
            s.insert(conn)?;
        }
        Ok(stats)
    }
}
