//! `lcw replay`: rebuilds every projection from the raw logs alone (no RPC) into a scratch store
//! next to the real one, compares the two table by table, and with `--write` replaces the
//! projections by the rebuilt ones in one transaction.
//!
//! Blocks at or below the undo floor are replayed in large batches; blocks above it one per
//! transaction with undo images, exactly as live indexing applied them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy::primitives::{Log, LogData};
use lcw_schema::store::raw::{Cursor, RawLog};
use lcw_schema::store::{Store, StoreError, StoreResult};
use serde::Serialize;

use crate::apply::Meta;
use crate::cache::Projector;
use crate::decode::Decoder;
use crate::writer::{UNDO_FLOOR, undo_floor};

use crate::{IndexerError, IndexerResult};

/// Logs per replay transaction below the undo floor.
const REPLAY_BATCH: usize = 100_000;

pub use lcw_schema::store::projections::TableDiff;

/// What replay found.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// Logs replayed.
    pub events: u64,
    /// Last block replayed.
    pub block: u64,
    /// Seconds spent rebuilding (comparison excluded).
    pub rebuild_secs: f64,
    /// Logs per second while rebuilding.
    pub events_per_sec: f64,
    /// Tables that differ (empty: the store equals its replay).
    pub differences: Vec<TableDiff>,
    /// Whether the projections were replaced by the rebuilt ones.
    pub written: bool,
}

impl ReplayReport {
    /// True when every projection equals its replay.
    pub fn equal(&self) -> bool {
        self.differences.is_empty()
    }
}

fn scratch_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".replay");
    db.with_file_name(name)
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Rebuilds the projections of `source` into `target` (a store with the same identity and no
/// projections). Returns (logs, last block).
pub fn rebuild(source: &Store, target: &mut Store) -> StoreResult<(u64, u64)> {
    let identity = source.identity()?.ok_or_else(|| StoreError::Missing(source.path().to_owned()))?;
    let decoder = Decoder::new(identity.contracts);
    let Some(cursor) = Cursor::get(source.conn())? else { return Ok((0, 0)) };
    let floor = undo_floor(source.conn())?;
    {
        let tx = target.begin()?;
        lcw_schema::store::raw::copy_tx_values(source.conn(), &tx)?;
        lcw_schema::store::meta_set(&tx, UNDO_FLOOR, &floor.to_string())?;
        tx.commit()?;
    }
    let mut batch: Vec<RawLog> = Vec::with_capacity(REPLAY_BATCH);
    let mut count = 0u64;
    let apply_batch = |target: &mut Store, batch: &mut Vec<RawLog>, undo_block: Option<u64>| -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = target.begin()?;
        let mut projector = Projector::new(&tx, undo_block.is_some())?;
        for raw in batch.iter() {
            let log = Log { address: raw.address, data: LogData::new_unchecked(raw.topics.clone(), raw.data.clone()) };
            let decoded = decoder.decode(&log);
            match &decoded.event {
                Ok(event) => {
                    projector.count_event(decoded.name.unwrap_or("(unknown)"))?;
                    let meta = Meta {
                        block: raw.block_number,
                        log_index: raw.log_index,
                        timestamp: raw.block_timestamp,
                        tx_hash: raw.tx_hash,
                    };
                    projector.apply(event, &meta)?;
                }
                Err(_) => projector.count_event("(undecodable)")?,
            }
        }
        projector.flush(undo_block)?;
        tx.commit()?;
        batch.clear();
        Ok(())
    };
    let mut current_block: Option<u64> = None;
    RawLog::for_each(source.conn(), 0, cursor.block_number, |raw| {
        count += 1;
        let block = raw.block_number;
        if block > floor {
            // Above the floor: one transaction per block, with undo images, as live indexing did.
            if current_block != Some(block) {
                apply_batch(target, &mut batch, current_block.filter(|b| *b > floor))?;
            }
        } else if batch.len() >= REPLAY_BATCH {
            apply_batch(target, &mut batch, None)?;
        }
        current_block = Some(block);
        batch.push(raw);
        Ok(())
    })?;
    apply_batch(target, &mut batch, current_block.filter(|b| *b > floor))?;
    Ok((count, cursor.block_number))
}

/// Compares the projections of the store at `db` (first) with the store at `other` (second).
pub fn compare(db: &Path, other: &Path) -> StoreResult<Vec<TableDiff>> {
    let store = Store::open_readonly(db)?;
    lcw_schema::store::projections::compare(store.conn(), other)
}

/// Replays the store at `db`; with `write`, replaces its projections by the rebuilt ones.
pub fn replay(db: &Path, write: bool) -> IndexerResult<ReplayReport> {
    let mut source = Store::open_readonly(db)?;
    let identity = source.identity()?.ok_or_else(|| StoreError::Missing(db.to_owned()))?;
    let scratch = scratch_path(db);
    remove_db(&scratch);
    let result = (|| -> IndexerResult<ReplayReport> {
        let mut target = Store::open(&scratch, &identity)?;
        let started = Instant::now();
        let (events, block) = rebuild(&source, &mut target)?;
        let rebuild_secs = started.elapsed().as_secs_f64();
        drop(target);
        let differences = compare(db, &scratch)?;
        let mut written = false;
        if write && !differences.is_empty() {
            drop(source);
            let mut store = Store::open(db, &identity)?;
            let tx = store.begin()?;
            lcw_schema::store::projections::replace_from(&tx, &scratch)?;
            tx.commit().map_err(StoreError::from)?;
            lcw_schema::store::projections::detach(store.conn())?;
            written = true;
            source = Store::open_readonly(db)?;
        }
        let _ = &source;
        Ok(ReplayReport {
            events,
            block,
            rebuild_secs,
            events_per_sec: events as f64 / rebuild_secs.max(1e-9),
            differences,
            written,
        })
    })();
    remove_db(&scratch);
    result.map_err(|e| match e {
        IndexerError::Store(StoreError::Sqlite(s)) => IndexerError::Internal(format!("replay: {s}")),
        other => other,
    })
}
