//! One write transaction of the writer thread: a backfill batch or a live block (see
//! [`crate::writer`]), and the unwinding of a reorg.

use std::collections::BTreeMap;

use alloy::primitives::B256;
use lcw_schema::store::changes::{self, ChangeKind, KeySet, Retention};
use lcw_schema::store::raw::{BlockRow, CallResult, Cursor, LogInserter, RangeRow, RawLog};
use lcw_schema::store::{StoreResult, ledger, raw, undo};
use rusqlite::Connection;

use crate::apply::Meta;
use crate::cache::{JobCache, Projector};
use crate::decode::Decoder;
use crate::rpc::FetchedLog;
use crate::segment::Segment;
use crate::writer::{Committed, UNDO_FLOOR, undo_floor};

/// The last block of a batch (its cursor).
#[derive(Debug, Clone, Copy)]
struct Tail {
    to: u64,
    hash: B256,
    parent: Option<B256>,
    timestamp: u64,
}

/// An open write transaction that segments are applied into: raw logs inserted as they come,
/// projection rows changed in memory and written on commit, with the blocks, the range and the
/// cursor. Dropping it without committing rolls everything back.
pub(crate) struct Batch<'c> {
    tx: rusqlite::Transaction<'c>,
    projector: Projector<'c>,
    inserter: LogInserter<'c>,
    blocks: BTreeMap<u64, (B256, u64, u64)>,
    stats: Committed,
    from: u64,
    tail: Tail,
    /// Some for a block followed live: the finalized block then.
    live_finalized: Option<u64>,
    /// The block undo images are recorded under (a live block above the finalized one).
    undo_block: Option<u64>,
}

impl<'c> Batch<'c> {
    /// Opens a transaction for `first` and what may follow it. `live_finalized` is Some for a
    /// block followed live: it then records undo images unless the block is already final,
    /// merges live ranges, and prunes undo entries at or below the finalized block.
    pub(crate) fn begin(
        conn: &'c Connection,
        cache: &'c mut JobCache,
        live_finalized: Option<u64>,
        first: &Segment,
    ) -> StoreResult<Batch<'c>> {
        let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let undo_block = live_finalized.filter(|f| first.to > *f).map(|_| first.to);
        // The projector and inserter borrow the connection, not the transaction: both live
        // exactly as long as it does, and everything they write is inside it.
        let mut projector = Projector::with_cache(conn, undo_block.is_some(), cache)?;
        projector.record_keys();
        let inserter = LogInserter::new(conn)?;
        Ok(Batch {
            tx,
            projector,
            inserter,
            blocks: BTreeMap::new(),
            stats: Committed::default(),
            from: first.from,
            tail: Tail { to: first.to, hash: first.to_hash, parent: first.to_parent, timestamp: first.to_timestamp },
            live_finalized,
            undo_block,
        })
    }

    /// Applies a segment (the next blocks after what the batch holds). The logs are consumed:
    /// their topics and data move into the rows instead of being copied.
    pub(crate) fn add(&mut self, decoder: &Decoder, s: Segment) -> StoreResult<()> {
        for (hash, block, value) in &s.tx_values {
            raw::put_tx_value(&self.tx, hash, *block, value)?;
        }
        for fact in &s.facts {
            fact.put(&self.tx)?;
        }
        let (block_times, last_timestamp) = (&s.block_times, s.to_timestamp);
        for log in s.logs {
            let timestamp =
                log.block_timestamp.or_else(|| block_times.get(&log.block_number).copied()).unwrap_or(last_timestamp);
            let FetchedLog { log, block_number, block_hash, log_index, tx_hash, tx_index, .. } = log;
            let decoded = decoder.decode(&log);
            self.blocks.entry(block_number).or_insert((block_hash, timestamp, 0)).2 += 1;
            self.stats.logs += 1;
            match &decoded.event {
                Ok(event) => {
                    self.projector.count_event(decoded.name.unwrap_or("(unknown)"))?;
                    let meta =
                        Meta { block: block_number, log_index, timestamp, tx_hash, block_hash, contract: log.address };
                    self.projector.apply(event, &meta)?;
                }
                Err(reason) => {
                    self.stats.undecodable += 1;
                    self.projector.count_event("(undecodable)")?;
                    tracing::warn!(block = block_number, log_index, %reason, "undecodable log kept raw");
                }
            }
            let (topics, data) = log.data.split();
            self.inserter.insert(RawLog {
                block_number,
                log_index,
                block_hash,
                block_timestamp: timestamp,
                tx_hash,
                tx_index,
                address: log.address,
                topics,
                data,
                event: decoded.name.map(str::to_owned),
                decode_error: decoded.event.err(),
                job_id: decoded.job_id,
            })?;
        }
        self.tail = Tail { to: s.to, hash: s.to_hash, parent: s.to_parent, timestamp: s.to_timestamp };
        if self.undo_block.is_none() {
            // Jobs that reached an end leave memory now; the events of one block arrive in one
            // segment, so whatever follows a release or time-out in its transaction is in.
            self.projector.write_finished_jobs()?;
        }
        Ok(())
    }

    /// Logs applied and job rows held in memory so far.
    pub(crate) fn size(&self) -> (u64, usize) {
        (self.stats.logs, self.projector.jobs_in_memory())
    }

    /// Writes the projection rows, blocks, range and cursor, and commits.
    pub(crate) fn commit(mut self) -> StoreResult<Committed> {
        let tx = &self.tx;
        let tail = self.tail;
        self.inserter.finish()?;
        self.stats.unattributed = self.projector.unattributed;
        self.stats.block = tail.to;
        let (_, keys) = self.projector.flush_keys(self.undo_block)?;
        for (number, (hash, timestamp, count)) in &self.blocks {
            let parent = if *number == tail.to { tail.parent } else { None };
            BlockRow { number: *number, hash: *hash, parent_hash: parent, timestamp: *timestamp, log_count: *count }
                .put(tx)?;
        }
        if !self.blocks.contains_key(&tail.to) {
            BlockRow {
                number: tail.to,
                hash: tail.hash,
                parent_hash: tail.parent,
                timestamp: tail.timestamp,
                log_count: 0,
            }
            .put(tx)?;
        }
        let log_count = self.stats.logs;
        match self.live_finalized {
            Some(_) => RangeRow::extend_live(tx, self.from, tail.to, log_count)?,
            None => RangeRow { from_block: self.from, to_block: tail.to, log_count, source: "backfill".into() }
                .insert(tx)?,
        }
        let finalized = self.live_finalized.unwrap_or(tail.to);
        Cursor { block_number: tail.to, block_hash: tail.hash, finalized_number: finalized }.set(tx)?;
        // The undo floor: blocks at or below it have no before-images and cannot be unwound.
        let floor = undo_floor(tx)?;
        let new_floor = if self.undo_block.is_some() { floor.max(finalized.min(tail.to)) } else { tail.to };
        if new_floor != floor {
            lcw_schema::store::meta_set(tx, UNDO_FLOOR, &new_floor.to_string())?;
        }
        undo::prune(tx, new_floor)?;
        log_change(tx, ChangeKind::Apply, self.from.checked_sub(1), tail.to, &tail.hash, &keys)?;
        let stats = self.stats;
        self.tx.commit()?;
        Ok(stats)
    }
}

/// Unwinds everything above `to` in one transaction; returns the number of rows restored.
pub(crate) fn unwind(conn: &Connection, to: u64) -> StoreResult<u64> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let floor = undo_floor(&tx)?;
    if to < floor {
        return Err(lcw_schema::store::StoreError::Corrupt {
            what: "unwind target".into(),
            value: format!("block {to} is below the undo floor {floor}"),
        });
    }
    let hash = BlockRow::get(&tx, to)?.map(|b| b.hash).ok_or_else(|| lcw_schema::store::StoreError::Corrupt {
        what: "unwind target".into(),
        value: format!("block {to} is not in the store"),
    })?;
    let before = Cursor::get(&tx)?;
    let finalized = before.as_ref().map(|c| c.finalized_number.min(to)).unwrap_or(to);
    let mut keys = KeySet::default();
    let restored = undo::restore_above(&tx, to, &mut keys)?;
    RawLog::delete_above(&tx, to)?;
    BlockRow::delete_above(&tx, to)?;
    RangeRow::truncate_above(&tx, to)?;
    ledger::delete_above(&tx, to)?;
    raw::delete_tx_values_above(&tx, to)?;
    CallResult::delete_above(&tx, to)?;
    Cursor { block_number: to, block_hash: hash, finalized_number: finalized }.set(&tx)?;
    log_change(&tx, ChangeKind::Unwind, before.map(|c| c.block_number), to, &hash, &keys)?;
    tx.commit()?;
    Ok(restored)
}

/// Deletes the raw rows above the cursor; returns the number of logs among them. This version
/// writes none (rows are written with their cursor, in one transaction, and every answer is
/// checked first), but an earlier one stored `eth_getLogs` answers unchecked: a log above the
/// requested range was committed above the cursor, where the real log of its block would later
/// collide with it and stop indexing at every start.
pub(crate) fn clear_above_cursor(conn: &Connection) -> StoreResult<u64> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let Some(cursor) = Cursor::get(&tx)? else { return Ok(0) };
    let to = cursor.block_number;
    // Both by primary key, cheap at every start; the tables without a block index only when
    // logs were found.
    let logs = RawLog::delete_above(&tx, to)?;
    BlockRow::delete_above(&tx, to)?;
    let blocks = tx.changes();
    if logs > 0 {
        ledger::delete_above(&tx, to)?;
        raw::delete_tx_values_above(&tx, to)?;
        CallResult::delete_above(&tx, to)?;
    }
    if logs > 0 || blocks > 0 {
        log_change(&tx, ChangeKind::Clear, Some(to), to, &cursor.block_hash, &KeySet::default())?;
    }
    tx.commit()?;
    Ok(logs)
}

/// Records the change-log entry of the caller's transaction and prunes the entries past
/// retention (a read of the oldest entries only; nothing to do while the log is short).
fn log_change(
    tx: &Connection,
    kind: ChangeKind,
    from: Option<u64>,
    to: u64,
    hash: &B256,
    keys: &KeySet,
) -> StoreResult<()> {
    changes::record(tx, kind, from, to, hash, keys)?;
    changes::prune(tx, lcw_schema::store::unix_now(), Retention::of(tx)?)?;
    Ok(())
}
