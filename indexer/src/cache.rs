//! The projector's working set: projection rows loaded on first touch, changed in memory by
//! [`crate::apply`], and written back once per transaction. Writing each row once per batch
//! instead of once per event is what makes backfill and replay fast; remembering each row's
//! image before the transaction is what makes non-final blocks unwindable.

use std::collections::HashMap;
use std::hash::Hash;

use alloy::primitives::{Address, B256, U256};
use lcw_schema::store::StoreResult;
use lcw_schema::store::changes::KeySet;
use lcw_schema::store::ledger::{Bounty, ConfigChange, Slash, Withdrawal};
use lcw_schema::store::raw;
use lcw_schema::store::rows::{
    CapabilityRow, EventCountRow, JobRow, ModelRow, ProjectionRow, RollupRow, SessionRequestRow, SessionRow,
    TableWriter, WorkerModelRow, WorkerRow,
};
use lcw_schema::store::undo::UndoEntry;
use lcw_schema::types::JobState;
use rusqlite::Connection;

/// Rows are boxed: a job row is ~900 bytes, and an inline table of tens of thousands of
/// double-image slots costs tens of MB, doubled while the table grows (measured with heaptrack).
struct Slot<R> {
    /// The row as stored before this transaction (None: absent, or not kept: see `existed`).
    /// Flush diffs against it, and it is the undo before-image.
    stored: Option<Box<R>>,
    current: Option<Box<R>>,
    dirty: bool,
    /// The row was stored before this transaction. Set without `stored` for jobs when no undo
    /// images are kept: a second copy of every job in flight would be the largest part of a
    /// backfill's memory, and flush then overwrites the row's changeable columns instead.
    existed: bool,
}

impl<R: ProjectionRow> Slot<R> {
    /// Writes the row if it changed; returns whether it did, after adding its key to `keys`.
    fn write(&self, w: &mut TableWriter<'_, R>, keys: Option<&mut KeySet>) -> StoreResult<bool> {
        let written = self.write_row(w)?;
        if written
            && let Some(keys) = keys
            && let Some(row) = self.current.as_deref().or(self.stored.as_deref())
        {
            keys.add(row);
        }
        Ok(written)
    }

    fn write_row(&self, w: &mut TableWriter<'_, R>) -> StoreResult<bool> {
        if !self.dirty || self.stored == self.current {
            return Ok(false);
        }
        match (&self.current, &self.stored) {
            (Some(row), Some(stored)) => row.write(w, Some(stored))?,
            (Some(row), None) if self.existed => row.overwrite(w)?,
            (Some(row), None) => row.write(w, None)?,
            (None, Some(gone)) => gone.delete(w.conn())?,
            (None, None) => return Ok(false),
        }
        Ok(true)
    }
}

type Map<K, R> = HashMap<K, Slot<R>>;

fn slot<K: Eq + Hash, R: Clone>(
    map: &mut Map<K, R>,
    key: K,
    load: impl FnOnce() -> StoreResult<Option<R>>,
) -> StoreResult<&mut Slot<R>> {
    use std::collections::hash_map::Entry;
    Ok(match map.entry(key) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(v) => {
            let row = load()?.map(Box::new);
            v.insert(Slot { stored: row.clone(), existed: row.is_some(), current: row, dirty: false })
        }
    })
}

/// Clean job rows kept across commits: a job's events usually span a few commits, and reading
/// back and decoding a 41-column row costs more than keeping it. Two generations bound the
/// size; it must be cleared whenever the store changes behind it (failed commit, unwind).
#[derive(Debug, Default)]
pub struct JobCache {
    young: HashMap<u64, Box<JobRow>>,
    old: HashMap<u64, Box<JobRow>>,
}

/// Jobs per cache generation (two generations are kept).
const JOB_CACHE_GENERATION: usize = 5_000;

impl JobCache {
    fn take(&mut self, id: u64) -> Option<Box<JobRow>> {
        self.young.remove(&id).or_else(|| self.old.remove(&id))
    }

    fn keep(&mut self, row: Box<JobRow>) {
        if self.young.len() >= JOB_CACHE_GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(row.job_id, row);
    }

    /// Forgets everything (the store changed behind the cache).
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
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
    job_cache: Option<&'c mut JobCache>,
    workers: Map<Address, WorkerRow>,
    worker_models: Map<(Address, B256), WorkerModelRow>,
    models: Map<B256, ModelRow>,
    sessions: Map<u64, SessionRow>,
    jobs: Map<u64, JobRow>,
    rollups: Map<(u64, Address, B256), RollupRow>,
    event_counts: Map<String, EventCountRow>,
    requests: Map<(Address, u64), SessionRequestRow>,
    capabilities: Map<u64, CapabilityRow>,
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
    /// The keys of the rows written so far, for the change log (None: not recorded).
    changed: Option<KeySet>,
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
            let s = slot(&mut self.$map, key.clone(), || {
                let $k = &key;
                $load
            })?;
            Ok(s.current.as_deref())
        }
    };
}

macro_rules! getter_mut {
    ($get_mut:ident, $map:ident, $key:ty, $row:ty, |$conn:ident, $k:ident| $load:expr) => {
        /// The row for changing, if it exists.
        pub(crate) fn $get_mut(&mut self, key: $key) -> StoreResult<Option<&mut $row>> {
            let $conn = self.conn;
            let s = slot(&mut self.$map, key.clone(), || {
                let $k = &key;
                $load
            })?;
            if s.current.is_some() {
                s.dirty = true;
            }
            Ok(s.current.as_deref_mut())
        }
    };
}

impl<'c> Projector<'c> {
    /// A projector over `conn` that reads jobs through `cache` and hands the rows back to it on
    /// flush.
    pub fn with_cache(conn: &'c Connection, track_before: bool, cache: &'c mut JobCache) -> StoreResult<Self> {
        let mut p = Self::new(conn, track_before)?;
        p.job_cache = Some(cache);
        Ok(p)
    }

    /// A projector over `conn`; `track_before` keeps before-images for the undo journal.
    pub fn new(conn: &'c Connection, track_before: bool) -> StoreResult<Self> {
        let params: HashMap<String, String> = lcw_schema::store::ledger::current_params(conn)?.into_iter().collect();
        Ok(Projector {
            conn,
            track_before,
            job_cache: None,
            workers: HashMap::new(),
            worker_models: HashMap::new(),
            models: HashMap::new(),
            sessions: HashMap::new(),
            jobs: HashMap::new(),
            rollups: HashMap::new(),
            event_counts: HashMap::new(),
            requests: HashMap::new(),
            capabilities: HashMap::new(),
            config: Vec::new(),
            withdrawals: Vec::new(),
            bounties: Vec::new(),
            slashes: Vec::new(),
            params,
            last_slash: None,
            unattributed: 0,
            changed: None,
        })
    }

    /// The job for changing, if it exists (from the cross-commit cache when it holds it).
    pub(crate) fn job_mut(&mut self, id: u64) -> StoreResult<Option<&mut JobRow>> {
        let conn = self.conn;
        let s = match self.jobs.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let row = match self.job_cache.as_mut().and_then(|c| c.take(id)) {
                    Some(row) => Some(row),
                    None => JobRow::get(conn, id)?.map(Box::new),
                };
                let stored = if self.track_before { row.clone() } else { None };
                v.insert(Slot { stored, existed: row.is_some(), current: row, dirty: false })
            }
        };
        if s.current.is_some() {
            s.dirty = true;
        }
        Ok(s.current.as_deref_mut())
    }
    /// Collects the key of every row written from now on, for the change log (see
    /// [`flush_keys`](Self::flush_keys)).
    pub fn record_keys(&mut self) {
        self.changed.get_or_insert_with(KeySet::default);
    }

    /// Job rows held (changed or read) by this transaction.
    pub fn jobs_in_memory(&self) -> usize {
        self.jobs.len()
    }

    /// Writes the jobs that reached an end (released or timed out) and lets them go: nothing
    /// but a late keeper bounty or refund touches them again, and those read them back. Keeps
    /// a long backfill transaction's memory to the jobs still in flight. Not for transactions
    /// that record undo images.
    pub fn write_finished_jobs(&mut self) -> StoreResult<u64> {
        debug_assert!(!self.track_before, "undo images are recorded at flush");
        let finished =
            |row: &JobRow| row.state == JobState::Released.as_str() || row.state == JobState::TimedOut.as_str();
        let mut done: Vec<u64> =
            self.jobs.iter().filter(|(_, s)| s.current.as_deref().is_some_and(finished)).map(|(id, _)| *id).collect();
        // In key order, as in `flush`.
        done.sort_unstable();
        let mut written = 0;
        let mut w = JobRow::writer(self.conn)?;
        for id in done {
            let Some(s) = self.jobs.remove(&id) else { continue };
            if s.write(&mut w, self.changed.as_mut())? {
                written += 1;
            }
        }
        Ok(written)
    }
    getter!(session, sessions, u64, SessionRow, |conn, k| SessionRow::get(conn, *k));
    getter_mut!(session_mut, sessions, u64, SessionRow, |conn, k| SessionRow::get(conn, *k));
    getter!(model, models, B256, ModelRow, |conn, k| ModelRow::get(conn, k));
    getter_mut!(request_mut, requests, (Address, u64), SessionRequestRow, |conn, k| SessionRequestRow::get(
        conn, &k.0, k.1
    ));

    /// Inserts (or replaces) a session request.
    pub(crate) fn put_request(&mut self, row: SessionRequestRow) -> StoreResult<()> {
        let conn = self.conn;
        let key = (row.manager, row.req_id);
        let s = slot(&mut self.requests, key, || SessionRequestRow::get(conn, &key.0, key.1))?;
        s.current = Some(Box::new(row));
        s.dirty = true;
        Ok(())
    }

    /// Inserts (or replaces) a registered capability.
    pub(crate) fn put_capability(&mut self, row: CapabilityRow) -> StoreResult<()> {
        let conn = self.conn;
        let bit = row.bit;
        let s = slot(&mut self.capabilities, bit, || CapabilityRow::get(conn, bit))?;
        s.current = Some(Box::new(row));
        s.dirty = true;
        Ok(())
    }

    /// Inserts a job (a new id; its previous image is only read when undo images are kept).
    pub(crate) fn put_job(&mut self, row: JobRow) -> StoreResult<()> {
        let conn = self.conn;
        let track = self.track_before;
        let id = row.job_id;
        let s = slot(&mut self.jobs, id, || if track { JobRow::get(conn, id) } else { Ok(None) })?;
        s.current = Some(Box::new(row));
        s.dirty = true;
        Ok(())
    }

    /// Inserts (or replaces) a session.
    pub(crate) fn put_session(&mut self, row: SessionRow) -> StoreResult<()> {
        let conn = self.conn;
        let id = row.session_id;
        let s = slot(&mut self.sessions, id, || SessionRow::get(conn, id))?;
        s.current = Some(Box::new(row));
        s.dirty = true;
        Ok(())
    }

    /// The worker, created if never seen.
    pub(crate) fn worker_mut(&mut self, address: Address, block: u64) -> StoreResult<&mut WorkerRow> {
        let conn = self.conn;
        let s = slot(&mut self.workers, address, || WorkerRow::get(conn, &address))?;
        s.dirty = true;
        let row = s.current.get_or_insert_with(|| Box::new(WorkerRow::new(address, block)));
        row.updated_block = block;
        Ok(row)
    }

    /// The model, created if never seen.
    pub(crate) fn model_mut(&mut self, id: B256, block: u64) -> StoreResult<&mut ModelRow> {
        let conn = self.conn;
        let s = slot(&mut self.models, id, || ModelRow::get(conn, &id))?;
        s.dirty = true;
        let row = s.current.get_or_insert_with(|| Box::new(ModelRow::new(id, block)));
        row.updated_block = block;
        Ok(row)
    }

    /// Records that `worker` supports `model`.
    pub(crate) fn add_worker_model(&mut self, worker: Address, model: B256, block: u64) -> StoreResult<()> {
        let conn = self.conn;
        let s = slot(&mut self.worker_models, (worker, model), || WorkerModelRow::get(conn, &worker, &model))?;
        s.dirty = true;
        s.current = Some(Box::new(WorkerModelRow { worker, model_id: model, added_block: block }));
        Ok(())
    }

    /// Records that `worker` no longer supports `model`.
    pub(crate) fn remove_worker_model(&mut self, worker: Address, model: B256) -> StoreResult<()> {
        let conn = self.conn;
        let s = slot(&mut self.worker_models, (worker, model), || WorkerModelRow::get(conn, &worker, &model))?;
        if s.current.take().is_some() {
            s.dirty = true;
        }
        Ok(())
    }

    /// The hourly rollup of `(worker, model)` for the hour containing `ts`.
    pub(crate) fn rollup(&mut self, ts: u64, worker: Address, model: Option<B256>) -> StoreResult<&mut RollupRow> {
        let hour = ts - ts % 3600;
        let model = model.unwrap_or_default();
        let conn = self.conn;
        let s = slot(&mut self.rollups, (hour, worker, model), || RollupRow::get(conn, hour, &worker, &model))?;
        s.dirty = true;
        Ok(s.current.get_or_insert_with(|| Box::new(RollupRow::new(hour, worker, model))))
    }

    /// Counts one more log of `event`.
    pub(crate) fn count_event(&mut self, event: &str) -> StoreResult<()> {
        let conn = self.conn;
        let s = if let Some(s) = self.event_counts.get_mut(event) {
            s
        } else {
            slot(&mut self.event_counts, event.to_owned(), || EventCountRow::get(conn, event))?
        };
        s.dirty = true;
        s.current.get_or_insert_with(|| Box::new(EventCountRow { event: event.to_owned(), count: 0 })).count += 1;
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
        Ok(self.flush_keys(undo_block)?.0)
    }

    /// [`flush`](Self::flush), returning also the keys of every row written since
    /// [`record_keys`](Self::record_keys) (empty when it was not called).
    pub fn flush_keys(mut self, undo_block: Option<u64>) -> StoreResult<(FlushStats, KeySet)> {
        let conn = self.conn;
        let mut changed = self.changed.take();
        // Rows are handed to the job cache only after they are written; the writer clears the
        // cache if the transaction does not commit.
        let jobs = std::mem::take(&mut self.jobs);
        let mut kept: Vec<Box<JobRow>> = Vec::new();
        let keep = self.job_cache.is_some();
        let mut stats = FlushStats::default();
        // Rows go out in key order: SQLite appends to (or walks) its B-trees in order instead of
        // splitting pages at random places, and the undo journal comes out deterministic.
        fn write<K: Ord, R: ProjectionRow>(
            conn: &Connection,
            map: Map<K, R>,
            undo_block: Option<u64>,
            stats: &mut FlushStats,
            mut changed: Option<&mut KeySet>,
            mut keep: impl FnMut(Box<R>),
        ) -> StoreResult<()> {
            let mut slots: Vec<(K, Slot<R>)> = map.into_iter().collect();
            slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut w = R::writer(conn)?;
            for (_, s) in slots {
                if !s.write(&mut w, changed.as_deref_mut())? {
                    if let Some(row) = s.current {
                        keep(row);
                    }
                    continue;
                }
                stats.rows += 1;
                if let Some(block) = undo_block {
                    UndoEntry::of(block, stats.undo, s.stored.as_deref(), s.current.as_deref())?.insert(conn)?;
                    stats.undo += 1;
                }
                if let Some(row) = s.current {
                    keep(row);
                }
            }
            Ok(())
        }
        write(conn, std::mem::take(&mut self.workers), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, std::mem::take(&mut self.worker_models), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, std::mem::take(&mut self.models), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, std::mem::take(&mut self.sessions), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, jobs, undo_block, &mut stats, changed.as_mut(), |row| {
            if keep {
                kept.push(row);
            }
        })?;
        write(conn, std::mem::take(&mut self.rollups), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, std::mem::take(&mut self.event_counts), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, std::mem::take(&mut self.requests), undo_block, &mut stats, changed.as_mut(), drop)?;
        write(conn, std::mem::take(&mut self.capabilities), undo_block, &mut stats, changed.as_mut(), drop)?;
        if let Some(cache) = self.job_cache.as_mut() {
            for row in kept {
                cache.keep(row);
            }
        }
        ConfigChange::insert_all(conn, &self.config)?;
        Withdrawal::insert_all(conn, &self.withdrawals)?;
        Bounty::insert_all(conn, &self.bounties)?;
        Slash::insert_all(conn, &self.slashes)?;
        Ok((stats, changed.unwrap_or_default()))
    }
}
