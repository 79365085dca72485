//! The writer on its own, without a chain: segments of synthetic job lifecycles go in, and the
//! store must not depend on how they were grouped into transactions, must never hold part of a
//! failed transaction, and must not keep a large WAL behind after a backfill.

use std::collections::HashMap;
use std::path::Path;

use alloy::primitives::{Address, B256, Log, U256, address};
use alloy::sol_types::SolEvent;
use lcw_indexer::rpc::FetchedLog;
use lcw_indexer::segment::Segment;
use lcw_indexer::writer::Writer;
use lcw_indexer::{Committed, IndexerError};
use lcw_schema::bindings::JobRegistry;
use lcw_schema::profile::Contracts;
use lcw_schema::store::raw::{Cursor, RawLog};
use lcw_schema::store::rows::{JobRow, ProjectionRow};
use lcw_schema::store::{Identity, Store};

const JOB_REGISTRY: Address = address!("0x00000000000000000000000000000000000000a2");
const WORKER: Address = address!("0x00000000000000000000000000000000000000b1");

fn identity() -> Identity {
    Identity {
        chain_id: 31337,
        contracts: Contracts {
            worker_registry: address!("0x00000000000000000000000000000000000000a1"),
            job_registry: JOB_REGISTRY,
            ai_config: address!("0x00000000000000000000000000000000000000a3"),
        },
        start_block: 1,
    }
}

fn block_hash(n: u64) -> B256 {
    B256::left_padding_from(&n.to_be_bytes())
}

/// Blocks `1..=blocks`; in block `b`, job `b` is submitted, job `b - 1` acknowledged, job `b - 2`
/// completed and job `b - 3` released: every job's events span four blocks, as on a real chain.
fn blocks(count: u64) -> Vec<Segment> {
    (1..=count)
        .map(|b| {
            let mut events: Vec<alloy::primitives::LogData> = Vec::new();
            let job = |k: u64| U256::from(b - k);
            events.push(
                JobRegistry::JobSubmitted { jobId: job(0), sessionId: U256::from(1), worker: WORKER }.encode_log_data(),
            );
            if b > 1 {
                events.push(JobRegistry::JobAcknowledged { jobId: job(1), worker: WORKER }.encode_log_data());
            }
            if b > 2 {
                events.push(
                    JobRegistry::JobCompleted {
                        jobId: job(2),
                        worker: WORKER,
                        responseBlobHash: B256::repeat_byte(1),
                        responseCiphertextHash: B256::repeat_byte(2),
                    }
                    .encode_log_data(),
                );
            }
            if b > 3 {
                events.push(
                    JobRegistry::JobReleased {
                        jobId: job(3),
                        workerShare: U256::from(90),
                        protocolShare: U256::from(5),
                        feePoolShare: U256::from(5),
                    }
                    .encode_log_data(),
                );
            }
            let logs = events
                .into_iter()
                .enumerate()
                .map(|(i, data)| FetchedLog {
                    log: Log { address: JOB_REGISTRY, data },
                    block_number: b,
                    block_hash: block_hash(b),
                    block_timestamp: Some(1_700_000_000 + 12 * b),
                    tx_hash: B256::left_padding_from(&(b * 100 + i as u64).to_be_bytes()),
                    tx_index: i as u64,
                    log_index: i as u64,
                    removed: false,
                })
                .collect();
            Segment {
                from: b,
                to: b,
                to_hash: block_hash(b),
                to_parent: None,
                to_timestamp: 1_700_000_000 + 12 * b,
                logs,
                block_times: HashMap::new(),
                tx_values: Vec::new(),
                facts: Vec::new(),
            }
        })
        .collect()
}

fn start(path: &Path) -> Writer {
    let (commits, _) = tokio::sync::watch::channel(Committed::default());
    let (writer, cursor) = Writer::start(path.to_owned(), identity(), commits).expect("writer starts");
    assert!(cursor.is_none(), "a new store has no cursor");
    writer
}

fn jobs(path: &Path) -> Vec<JobRow> {
    let store = Store::open_readonly(path).expect("store opens");
    JobRow::all(store.conn()).expect("jobs read")
}

#[tokio::test]
async fn the_store_does_not_depend_on_how_segments_are_grouped_into_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (one_by_one, queued) = (dir.path().join("one.db"), dir.path().join("queued.db"));
    let segments = blocks(40);

    // One transaction per block: each segment is flushed before the next is sent.
    let writer = start(&one_by_one);
    for s in segments.clone() {
        writer.backfill(s).await.expect("queued");
        writer.flush().await.expect("committed");
    }
    drop(writer);
    // Everything queued at once: the writer groups as it likes.
    let writer = start(&queued);
    for s in segments {
        writer.backfill(s).await.expect("queued");
    }
    let last = writer.flush().await.expect("committed");
    drop(writer);
    assert_eq!(last.block, 40);

    let diffs = lcw_indexer::replay::compare(&one_by_one, &queued).expect("compared");
    assert!(diffs.is_empty(), "projections differ: {diffs:?}");
    let rows = jobs(&queued);
    assert_eq!(rows.len(), 40);
    let released: Vec<u64> = rows.iter().filter(|j| j.state == "RELEASED").map(|j| j.job_id).collect();
    assert_eq!(released, (1..=37).collect::<Vec<_>>(), "jobs 1..=37 were released in blocks 4..=40");
    let open: Vec<(u64, &str)> =
        rows.iter().filter(|j| j.state != "RELEASED").map(|j| (j.job_id, j.state.as_str())).collect();
    assert_eq!(open, vec![(38, "COMPLETED"), (39, "ACKNOWLEDGED"), (40, "SUBMITTED")]);
    let job_1 = &rows[0];
    assert_eq!((job_1.submitted_block, job_1.acknowledged_block), (1, Some(2)));
    assert_eq!((job_1.completed_block, job_1.released_block), (Some(3), Some(4)));
    assert_eq!(job_1.worker_share_wei, Some(U256::from(90)));
}

#[tokio::test]
async fn a_failed_transaction_leaves_no_part_of_itself_and_stops_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let mut segments = blocks(12);
    // Block 12 repeats a log index: its insert fails inside whatever transaction holds it.
    let dup = segments[11].logs[0].clone();
    segments[11].logs.push(dup);

    let writer = start(&path);
    for s in segments.drain(..6) {
        writer.backfill(s).await.expect("queued");
    }
    assert_eq!(writer.flush().await.expect("committed").block, 6);
    for s in segments {
        // Once the failure is seen, later segments are refused; either way none is stored.
        if writer.backfill(s).await.is_err() {
            break;
        }
    }
    let err = writer.flush().await.expect_err("the duplicate log fails its transaction");
    assert!(err.to_string().contains("UNIQUE"), "the error names the cause: {err}");
    assert!(matches!(writer.backfill(blocks(1).remove(0)).await, Err(IndexerError::Commit(_))));
    drop(writer);

    let store = Store::open_readonly(&path).expect("store opens");
    let cursor = Cursor::get(store.conn()).expect("cursor read").expect("cursor set");
    assert!((6..12).contains(&cursor.block_number), "cursor at {}", cursor.block_number);
    // Everything up to the cursor, nothing after it.
    let logs = RawLog::count(store.conn(), 0, i64::MAX as u64).expect("logs counted");
    let expected: u64 = (1..=cursor.block_number).map(|b| b.min(4)).sum();
    assert_eq!(logs, expected, "logs of blocks 1..={} only", cursor.block_number);
    assert_eq!(RawLog::count(store.conn(), cursor.block_number + 1, i64::MAX as u64).expect("counted"), 0);
    let job_rows = JobRow::all(store.conn()).expect("jobs read");
    assert_eq!(job_rows.len() as u64, cursor.block_number, "one job per committed block");
}

#[tokio::test]
async fn a_backfill_leaves_no_large_wal_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let writer = start(&path);
    for s in blocks(300) {
        writer.backfill(s).await.expect("queued");
    }
    writer.flush().await.expect("committed");
    let wal = dir.path().join("store.db-wal");
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(size, 0, "the WAL is emptied into the database when a backfill ends");
    // The pages were copied into the database file itself.
    let bytes = std::fs::metadata(&path).expect("database file").len();
    assert!(bytes > 100 * 1024, "the database file holds the logs ({bytes} bytes)");
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_backfill_does_not_wait_for_a_reader_holding_an_old_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let writer = start(&path);
    let mut segments = blocks(300).into_iter();
    for s in segments.by_ref().take(100) {
        writer.backfill(s).await.expect("queued");
    }
    writer.flush().await.expect("committed");
    // A reader (a replica follower copying the store) holds a snapshot from now on...
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, reading) = std::sync::mpsc::channel::<()>();
    let reader_path = path.clone();
    let reader = std::thread::spawn(move || {
        let store = Store::open_readonly(&reader_path).expect("store opens");
        let snapshot = lcw_schema::store::export::snapshot(store.conn()).expect("snapshot");
        let _ = JobRow::all(&snapshot).expect("read in the snapshot");
        started.send(()).expect("reader started");
        // Held for as long as the store's busy timeout, unless released first.
        let released = held.recv_timeout(lcw_schema::store::BUSY_TIMEOUT).is_ok();
        drop(snapshot);
        released
    });
    reading.recv().expect("the reader holds its snapshot");
    // ...while the backfill goes on and ends: the WAL cannot be emptied, and is left for later.
    for s in segments {
        writer.backfill(s).await.expect("queued");
    }
    let last = writer.flush().await.expect("committed");
    assert_eq!(last.block, 300);
    let _ = release.send(());
    assert!(reader.join().expect("reader"), "the end of the backfill waited for the reader to let go");
}

#[tokio::test]
async fn every_commit_logs_the_rows_it_wrote_and_a_clear_at_start_is_logged_too() {
    use lcw_schema::store::changes::{self, ChangeKind, Since};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log.db");
    // Queued at once: transactions of several blocks, with finished jobs written mid-batch.
    let writer = start(&path);
    for s in blocks(40) {
        writer.backfill(s).await.expect("queued");
    }
    writer.flush().await.expect("committed");
    drop(writer);

    let entries = |path: &Path| {
        let store = Store::open_readonly(path).expect("store opens");
        match changes::since(store.conn(), 0, 1_000).expect("log read") {
            Since::Entries(e) => e,
            other => panic!("{other:?}"),
        }
    };
    let log = entries(&path);
    assert!(log.iter().all(|e| e.kind == ChangeKind::Apply), "{log:?}");
    // The ranges are contiguous from the first block to the cursor.
    assert_eq!(log[0].from_block, Some(0));
    for pair in log.windows(2) {
        assert_eq!(pair[1].from_block, Some(pair[0].to_block));
    }
    let last = log.last().expect("an entry");
    assert_eq!((last.to_block, last.block_hash), (40, block_hash(40)));
    // The store started empty: every row it holds was named by some entry.
    let named: std::collections::BTreeSet<String> =
        log.iter().flat_map(|e| &e.keys).map(|k| format!("{}{:?}", k.table, k.key)).collect();
    let store = Store::open_readonly(&path).expect("store opens");
    let mut rows = 0;
    for def in changes::keyed_tables() {
        let sql = format!("SELECT {} FROM {}", def.keys.join(", "), def.table);
        let mut stmt = store.conn().prepare(&sql).expect("prepared");
        let keys = stmt
            .query_map([], |r| {
                (0..def.keys.len()).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect::<Result<Vec<_>, _>>()
            })
            .expect("read");
        for key in keys {
            let id = format!("{}{:?}", def.table, key.expect("row"));
            assert!(named.contains(&id), "{id} is not named by the change log");
            rows += 1;
        }
    }
    assert!(rows > 40, "{rows} rows");
    drop(store);

    // A block left above the cursor is deleted at the next start, and logged.
    {
        let conn = Store::connect(&path).expect("store opens");
        lcw_schema::store::raw::BlockRow {
            number: 41,
            hash: block_hash(41),
            parent_hash: None,
            timestamp: 1,
            log_count: 0,
        }
        .put(&conn)
        .expect("stray block");
    }
    let (commits, _) = tokio::sync::watch::channel(Committed::default());
    let (writer, _) = Writer::start(path.clone(), identity(), commits).expect("writer starts");
    drop(writer);
    let log = entries(&path);
    let clear = log.last().expect("an entry");
    assert_eq!((clear.kind, clear.from_block, clear.to_block), (ChangeKind::Clear, Some(40), 40));
    assert!(clear.keys.is_empty());
}

#[tokio::test]
async fn watchers_learn_while_the_indexer_is_behind_and_when_it_reaches_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (commits, mut watched) = tokio::sync::watch::channel(Committed::default());
    let (writer, _) = Writer::start(dir.path().join("lcw.db"), identity(), commits).expect("writer starts");
    let mut segments = blocks(4).into_iter();

    writer.backfill(segments.next().expect("segment")).await.expect("queued");
    watched.changed().await.expect("a backfill commit is announced");
    let c = *watched.borrow_and_update();
    assert!(c.backfill && c.block == 1, "{c:?}");
    // The end of the backfill is not the head: live blocks may follow.
    writer.flush().await.expect("flushed");
    assert!(!watched.has_changed().expect("open"), "a flush announces nothing");

    // A live block with more known blocks after it is still catching up.
    writer.block(segments.next().expect("segment"), 0, true).await.expect("live block");
    let c = *watched.borrow_and_update();
    assert!(c.backfill && c.block == 2, "{c:?}");
    // At the head: announced at once, without waiting for another block.
    writer.settled().await.expect("sent");
    watched.changed().await.expect("reaching the head is announced");
    let c = *watched.borrow_and_update();
    assert!(!c.backfill && c.block == 2, "{c:?}");

    writer.block(segments.next().expect("segment"), 0, false).await.expect("live block");
    let c = *watched.borrow_and_update();
    assert!(!c.backfill && c.block == 3, "a block at the head is not catching up: {c:?}");
    writer.settled().await.expect("sent");
    writer.flush().await.expect("flushed");
    assert!(!watched.has_changed().expect("open"), "nothing new to announce");
}
