//! `lcw replay`: rebuilds every projection from the raw layer alone (logs, transaction values
//! and the facts fetched with the logs; no RPC) into a scratch store next to the real one,
//! compares the two table by table, and with `--write` replaces the projections by the rebuilt
//! ones in one transaction. It needs no list of SessionManagers: a log that is none of the three
//! profile contracts' is a manager's (see [`crate::decode`]).
//!
//! Blocks at or below the undo floor are replayed in large batches; blocks above it one per
//! transaction with undo images, exactly as live indexing applied them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy::primitives::{B256, Log, LogData};
use lcw_schema::store::raw::{Cursor, RawLog};
use lcw_schema::store::{Store, StoreError, StoreResult, changes};
use serde::Serialize;

use crate::apply::Meta;
use crate::cache::{JobCache, Projector};
use crate::decode::{Decoder, Event};
use crate::writer::{UNDO_FLOOR, undo_floor};

use crate::{IndexerError, IndexerResult};

/// Logs per replay transaction below the undo floor. A job touched in two transactions is
/// written twice; 200,000 logs (about 40,000 jobs in memory) keep that rare at ~145 MB RSS.
const REPLAY_BATCH: usize = 200_000;
/// Logs per chunk handed from the reader thread to the applier.
const CHUNK: usize = 4096;
/// Chunks the reader may run ahead (bounds memory).
const READ_AHEAD: usize = 8;

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

/// One decoded log, ready to apply.
struct Item {
    block: u64,
    meta: Meta,
    name: &'static str,
    event: Option<Event>,
}

/// The reader thread and the chunks it sends.
type Reader = (std::thread::JoinHandle<StoreResult<()>>, std::sync::mpsc::Receiver<Vec<Item>>);

/// Reads and decodes the raw logs of `db` up to `to` on its own thread (with its own read-only
/// connection), handing them over in chunks so decoding overlaps with applying.
fn spawn_reader(db: PathBuf, decoder: Decoder, to: u64) -> StoreResult<Reader> {
    let (send, receive) = std::sync::mpsc::sync_channel::<Vec<Item>>(READ_AHEAD);
    let handle = std::thread::Builder::new()
        .name("lcw-replay-read".into())
        .spawn(move || {
            let source = Store::open_readonly(&db)?;
            let mut chunk = Vec::with_capacity(CHUNK);
            RawLog::for_each(source.conn(), 0, to, |raw| {
                let log = Log { address: raw.address, data: LogData::new_unchecked(raw.topics, raw.data) };
                let decoded = decoder.decode(&log);
                let meta = Meta {
                    block: raw.block_number,
                    log_index: raw.log_index,
                    timestamp: raw.block_timestamp,
                    tx_hash: raw.tx_hash,
                    block_hash: raw.block_hash,
                    contract: raw.address,
                };
                let (name, event) = match decoded.event {
                    Ok(event) => (decoded.name.unwrap_or("(unknown)"), Some(event)),
                    Err(_) => ("(undecodable)", None),
                };
                chunk.push(Item { block: raw.block_number, meta, name, event });
                if chunk.len() >= CHUNK {
                    // A closed channel means the applier stopped on an error it reports itself.
                    if send.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })?;
            if !chunk.is_empty() {
                let _ = send.send(chunk);
            }
            Ok(())
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok((handle, receive))
}

/// Rebuilds the projections of `source` into `target` (a store with the same identity and no
/// projections; it may be the source's own file). Returns (logs, last block).
///
/// Reading and decoding run on a second thread, with its own connection to the source; this one
/// applies. Blocks at or below the undo floor go in transactions of [`REPLAY_BATCH`] logs, blocks
/// above it one per transaction with undo images, as live indexing wrote them. The target's
/// secondary indexes are dropped for the rebuild and created again at the end (see
/// [`lcw_schema::store::projections::drop_indexes`]).
///
/// The target is written with its connection's settings as they are: its journal mode is the
/// caller's to choose. Leaving WAL needs the only connection to the file, so a rebuild into the
/// source's file (which the reader holds open) would fail on it, and a store left without a
/// journal is corrupted by a crash. [`replay`] turns the journal off on the scratch store it
/// alone opens.
pub fn rebuild(source: &Store, target: &mut Store) -> StoreResult<(u64, u64)> {
    let identity = source.identity()?.ok_or_else(|| StoreError::Missing(source.path().to_owned()))?;
    let decoder = Decoder::new(identity.contracts);
    let Some(cursor) = Cursor::get(source.conn())? else { return Ok((0, 0)) };
    let floor = undo_floor(source.conn())?;
    {
        let tx = target.begin()?;
        lcw_schema::store::raw::copy_tx_values(source.conn(), &tx)?;
        lcw_schema::store::raw::CallResult::copy_all(source.conn(), &tx)?;
        lcw_schema::store::meta_set(&tx, UNDO_FLOOR, &floor.to_string())?;
        tx.commit()?;
    }
    let indexes = lcw_schema::store::projections::drop_indexes(target.conn())?;
    let (reader, chunks) = spawn_reader(source.path().to_owned(), decoder, cursor.block_number)?;
    let mut count = 0u64;
    let applied = (|| -> StoreResult<()> {
        let mut cache = JobCache::default();
        let mut items = chunks.iter().flatten().peekable();
        while let Some(first) = items.peek() {
            let block = first.block;
            let above = block > floor;
            let tx = target.begin()?;
            let mut projector = Projector::with_cache(&tx, above, &mut cache)?;
            let mut in_tx = 0usize;
            while let Some(item) =
                items.next_if(|i| if above { i.block == block } else { i.block <= floor && in_tx < REPLAY_BATCH })
            {
                projector.count_event(item.name)?;
                if let Some(event) = &item.event {
                    projector.apply(event, &item.meta)?;
                }
                in_tx += 1;
            }
            projector.flush(above.then_some(block))?;
            tx.commit()?;
            count += in_tx as u64;
        }
        Ok(())
    })();
    drop(chunks);
    let read = reader.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    applied?;
    read?;
    // Index builds are sorts; let SQLite's sorter use a second thread.
    target.conn().execute_batch("PRAGMA threads = 2")?;
    lcw_schema::store::projections::create_indexes(target.conn(), &indexes)?;
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
        // The scratch store is thrown away on any failure, so it need not survive a power cut.
        // Nor does it need a journal: without one, pages are written once, into the database,
        // instead of into the WAL and then copied by checkpoints. Only this connection has the
        // file open (it was just created), as leaving WAL requires.
        target.conn().pragma_update(None, "synchronous", "OFF").map_err(StoreError::from)?;
        target.conn().pragma_update(None, "journal_mode", "OFF").map_err(StoreError::from)?;
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
            // In the same transaction: a copy of the store that follows the change log re-reads
            // every projection table at this entry.
            let (block, hash) = Cursor::get(&tx)?.map_or((0, B256::ZERO), |c| (c.block_number, c.block_hash));
            let none = changes::KeySet::default();
            changes::record(&tx, changes::ChangeKind::Replace, Some(block), block, &hash, &none)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, B256, U256};
    use alloy::sol_types::SolEvent;
    use lcw_schema::bindings::AIConfig;
    use lcw_schema::profile::Contracts;
    use lcw_schema::store::Identity;
    use lcw_schema::store::raw::BlockRow;
    use lcw_schema::store::rows::ModelRow;

    fn identity() -> Identity {
        Identity {
            chain_id: 31_337,
            contracts: Contracts {
                worker_registry: Address::repeat_byte(0xa1),
                job_registry: Address::repeat_byte(0xa2),
                ai_config: Address::repeat_byte(0xa3),
            },
            start_block: 1,
        }
    }

    /// A WAL store at `db` whose raw layer holds one ModelRegistered log in block 1, final.
    fn raw_store(db: &Path) -> (Store, B256) {
        let identity = identity();
        let mut store = Store::open(db, &identity).unwrap();
        let model = B256::repeat_byte(7);
        let event =
            AIConfig::ModelRegistered { modelId: model, fee: U256::from(500u64), maxOutputTokens: U256::from(256u64) };
        let log = Log { address: identity.contracts.ai_config, data: event.encode_log_data() };
        let decoded = Decoder::new(identity.contracts).decode(&log);
        let (topics, data) = log.data.split();
        let tx = store.begin().unwrap();
        RawLog {
            block_number: 1,
            log_index: 0,
            block_hash: B256::repeat_byte(1),
            block_timestamp: 1_700_000_000,
            tx_hash: B256::repeat_byte(2),
            tx_index: 0,
            address: identity.contracts.ai_config,
            topics,
            data,
            event: decoded.name.map(str::to_owned),
            decode_error: None,
            job_id: None,
        }
        .insert(&tx)
        .unwrap();
        BlockRow { number: 1, hash: B256::repeat_byte(1), parent_hash: None, timestamp: 1_700_000_000, log_count: 1 }
            .put(&tx)
            .unwrap();
        Cursor { block_number: 1, block_hash: B256::repeat_byte(1), finalized_number: 1 }.set(&tx).unwrap();
        lcw_schema::store::meta_set(&tx, UNDO_FLOOR, "1").unwrap();
        tx.commit().unwrap();
        (store, model)
    }

    fn journal_mode(store: &Store) -> String {
        store.conn().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap()
    }

    /// The source's reader holds the file open while the projections are written: a rebuild
    /// that switched the target out of WAL failed here with "database is locked".
    #[test]
    fn rebuilds_into_the_sources_own_file_while_it_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lcw.db");
        let (writer, model) = raw_store(&db);
        let source = Store::open_readonly(&db).unwrap();
        let mut target = Store::open(&db, &identity()).unwrap();

        let (events, block) = rebuild(&source, &mut target).unwrap();

        assert_eq!((events, block), (1, 1));
        assert_eq!(journal_mode(&target), "wal", "the target keeps the journal mode it was opened with");
        // Another connection that was open throughout reads the rebuilt projection.
        let row = ModelRow::get(writer.conn(), &model).unwrap().expect("the model's row");
        assert!(row.registered && row.enabled);
        assert_eq!(row.fee_wei, Some(U256::from(500u64)));
    }

    #[test]
    fn replay_of_an_open_store_finds_it_equal_and_leaves_it_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lcw.db");
        let (writer, _) = raw_store(&db);
        {
            let source = Store::open_readonly(&db).unwrap();
            let mut target = Store::open(&db, &identity()).unwrap();
            rebuild(&source, &mut target).unwrap();
        }

        let report = replay(&db, true).unwrap();

        assert_eq!(report.events, 1);
        assert!(report.equal(), "{:?}", report.differences);
        assert!(!report.written);
        assert_eq!(journal_mode(&writer), "wal");
        assert!(!scratch_path(&db).exists(), "the scratch store is removed");
    }
}
