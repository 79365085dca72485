use alloy::primitives::{Address, B256, U256, address};

use super::raw::{BlockRow, Cursor, RawLog};
use super::rows::{JobRow, ProjectionRow, WorkerRow};
use super::undo::{self, UndoEntry};
use super::*;

mod corrupt;
mod sortition;

fn identity(chain_id: u64) -> Identity {
    Identity {
        chain_id,
        contracts: Contracts {
            worker_registry: address!("0x00000000000000000000000000000000000000a1"),
            job_registry: address!("0x00000000000000000000000000000000000000a2"),
            ai_config: address!("0x00000000000000000000000000000000000000a3"),
        },
        start_block: 7,
    }
}

fn job(id: u64, state: &str) -> JobRow {
    JobRow {
        job_id: id,
        session_id: 1,
        worker: Address::repeat_byte(9),
        consumer: None,
        model_id: Some(B256::repeat_byte(1)),
        state: state.into(),
        fee_wei: Some(U256::from(10u64).pow(U256::from(16))),
        deadline: Some(130),
        submitted_block: 5,
        submitted_at: 100,
        submit_tx: B256::repeat_byte(2),
        acknowledged_block: None,
        acknowledged_at: None,
        completed_block: None,
        completed_at: None,
        response_blob_hash: None,
        response_ciphertext_hash: None,
        disputed_block: None,
        disputed_at: None,
        disputer: None,
        resolved_block: None,
        resolved_at: None,
        guilty: None,
        similarity_score: None,
        defaulted_block: None,
        defaulted_at: None,
        timed_out_block: None,
        timed_out_at: None,
        settled_no_fault: false,
        slash_wei: None,
        refund_wei: None,
        released_block: None,
        released_at: None,
        release_tx: None,
        worker_share_wei: Some(U256::MAX),
        protocol_share_wei: None,
        fee_pool_share_wei: None,
        keeper: None,
        keeper_bounty_wei: None,
        bounty_kind: None,
        updated_block: 5,
    }
}

#[test]
fn records_identity_and_refuses_another_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lcw.db");
    let store = Store::open(&path, &identity(31337)).unwrap();
    assert_eq!(store.identity().unwrap(), Some(identity(31337)));
    drop(store);
    assert!(Store::open(&path, &identity(31337)).is_ok(), "reopening for the same network works");
    let err = Store::open(&path, &identity(8200)).unwrap_err().to_string();
    assert!(err.contains("chain 31337") && err.contains("chain 8200") && err.contains("--db"), "{err}");
    let mut other = identity(31337);
    other.contracts.job_registry = address!("0x00000000000000000000000000000000000000ff");
    assert!(matches!(Store::open(&path, &other), Err(StoreError::IdentityMismatch { .. })));
    let ro = Store::open_readonly(&path).unwrap();
    assert_eq!(ro.identity().unwrap().unwrap().chain_id, 31337);
    assert!(matches!(Store::open_readonly(&dir.path().join("none.db")), Err(StoreError::Missing(_))));
}

#[test]
fn rows_round_trip_exact_amounts() {
    let mut store = Store::open_in_memory(&identity(1)).unwrap();
    let tx = store.begin().unwrap();
    let row = job(42, "SUBMITTED");
    row.put(&tx).unwrap();
    assert_eq!(JobRow::get(&tx, 42).unwrap(), Some(row.clone()));
    let w = WorkerRow::new(Address::repeat_byte(9), 3);
    w.put(&tx).unwrap();
    assert_eq!(WorkerRow::get(&tx, &w.address).unwrap(), Some(w));
    tx.commit().unwrap();
    let text: String = store.conn().query_row("SELECT worker_share_wei FROM jobs", [], |r| r.get(0)).unwrap();
    assert_eq!(text, U256::MAX.to_string(), "amounts are exact decimal text");
    let hex: String = store.conn().query_row("SELECT worker FROM v_jobs", [], |r| r.get(0)).unwrap();
    assert_eq!(hex, format!("{:#x}", Address::repeat_byte(9)));
}

#[test]
fn undo_restores_changed_created_and_deleted_rows() {
    let mut store = Store::open_in_memory(&identity(1)).unwrap();
    let tx = store.begin().unwrap();
    let before = job(1, "SUBMITTED");
    before.put(&tx).unwrap();
    // Block 10 changes job 1 and creates job 2.
    let mut after = before.clone();
    after.state = "ACKNOWLEDGED".into();
    after.put(&tx).unwrap();
    UndoEntry::of(10, 0, Some(&before), Some(&after)).unwrap().insert(&tx).unwrap();
    let created = job(2, "SUBMITTED");
    created.put(&tx).unwrap();
    UndoEntry::of::<JobRow>(10, 1, None, Some(&created)).unwrap().insert(&tx).unwrap();
    // Block 11 deletes job 1 (as a projection may delete a row).
    after.delete(&tx).unwrap();
    UndoEntry::of(11, 0, Some(&after), None).unwrap().insert(&tx).unwrap();
    assert_eq!(undo::oldest_block(&tx).unwrap(), Some(10));

    assert_eq!(undo::unwind_above(&tx, 9).unwrap(), 3);
    assert_eq!(JobRow::get(&tx, 1).unwrap(), Some(before));
    assert_eq!(JobRow::get(&tx, 2).unwrap(), None);
    assert_eq!(undo::oldest_block(&tx).unwrap(), None);
}

/// A decoded JobSubmitted log of `job_id` at `(block, index)`, with `index` topics after the first.
fn log(block: u64, index: u64, job_id: u64) -> RawLog {
    RawLog {
        block_number: block,
        log_index: index,
        block_hash: B256::repeat_byte(index as u8),
        block_timestamp: 1000 + index,
        tx_hash: B256::repeat_byte(0xee),
        tx_index: 0,
        address: Address::repeat_byte(1),
        topics: vec![B256::repeat_byte(3); index as usize],
        data: vec![1, 2, 3].into(),
        event: Some("JobSubmitted".into()),
        decode_error: None,
        job_id: Some(job_id),
    }
}

#[test]
fn raw_logs_blocks_and_cursor_are_stored_verbatim() {
    let mut store = Store::open_in_memory(&identity(1)).unwrap();
    let tx = store.begin().unwrap();
    for i in 0..3u64 {
        RawLog {
            event: (i != 1).then(|| "JobSubmitted".into()),
            decode_error: (i == 1).then(|| "unknown event".into()),
            ..log(5 + i, i, i)
        }
        .insert(&tx)
        .unwrap();
    }
    BlockRow { number: 7, hash: B256::repeat_byte(7), parent_hash: None, timestamp: 1002, log_count: 1 }
        .put(&tx)
        .unwrap();
    Cursor { block_number: 7, block_hash: B256::repeat_byte(7), finalized_number: 5 }.set(&tx).unwrap();
    tx.commit().unwrap();
    let mut seen = Vec::new();
    RawLog::for_each(store.conn(), 0, 100, |l| {
        seen.push(l);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].topics.len(), 2);
    assert_eq!(seen[1].event, None);
    assert_eq!(RawLog::undecodable(store.conn(), 10).unwrap().len(), 1);
    assert_eq!(RawLog::of_job(store.conn(), 2).unwrap().len(), 1);
    assert_eq!(Cursor::get(store.conn()).unwrap().unwrap().block_number, 7);
    assert_eq!(BlockRow::at_or_below(store.conn(), 100).unwrap().unwrap().number, 7);
}

/// `reads::job_view` reads in one statement what the row, the window as of its release and its
/// logs read apart: for a released job with logs, one without logs, one released before any
/// window change was indexed, an open one and a missing one.
#[test]
fn a_job_view_in_one_statement_equals_its_reads_apart() {
    use super::ledger::{ConfigChange, config_u64_as_of};
    use super::reads::job_view;
    let mut store = Store::open_in_memory(&identity(1)).unwrap();
    let tx = store.begin().unwrap();
    let change = |block: u64, value: &str| ConfigChange {
        at: super::ledger::LogRef {
            block_number: block,
            log_index: 0,
            block_timestamp: 1000 + block,
            tx_hash: B256::ZERO,
        },
        param: "disputeWindow".into(),
        value: value.into(),
    };
    ConfigChange::insert_all(&tx, &[change(10, "60"), change(20, "90")]).unwrap();
    let released = |id: u64, block: u64| JobRow {
        completed_at: Some(150),
        released_block: Some(block),
        released_at: Some(1000 + block),
        ..job(id, "RELEASED")
    };
    for row in [released(1, 15), released(2, 25), released(3, 5), job(4, "SUBMITTED")] {
        row.put(&tx).unwrap();
    }
    for (i, job_id) in [(0u64, 1u64), (1, 4), (2, 1), (3, 1)] {
        log(30 - i, i, job_id).insert(&tx).unwrap();
    }
    tx.commit().unwrap();
    let conn = store.conn();
    for id in 1..=4u64 {
        let apart = JobRow::get(conn, id).unwrap().unwrap();
        let window = apart.released_block.and_then(|b| config_u64_as_of(conn, "disputeWindow", b).unwrap());
        let view = job_view(conn, id, true).unwrap().unwrap();
        assert_eq!(view.row, apart, "job {id}");
        assert_eq!(view.release_window, window, "job {id}");
        assert_eq!(view.timeline.unwrap(), RawLog::of_job(conn, id).unwrap(), "job {id}");
        let alone = job_view(conn, id, false).unwrap().unwrap();
        assert_eq!((alone.row, alone.release_window, alone.timeline), (apart, window, None), "job {id}");
    }
    let windows: Vec<_> = (1..=4).map(|id| job_view(conn, id, false).unwrap().unwrap().release_window).collect();
    assert_eq!(windows, [Some(60), Some(90), None, None]);
    let logs: Vec<usize> =
        (1..=4).map(|id| job_view(conn, id, true).unwrap().unwrap().timeline.unwrap().len()).collect();
    assert_eq!(logs, [3, 0, 0, 1]);
    let first = job_view(conn, 1, true).unwrap().unwrap().timeline.unwrap();
    assert!(first.windows(2).all(|w| w[0].block_number < w[1].block_number), "chain order");
    assert!(job_view(conn, 5, true).unwrap().is_none());
}

/// The workspace builds SQLite without global memory statistics (`.cargo/config.toml`): a build
/// that lost the flag would be ~10 % slower at backfill and nothing else would say so.
#[test]
fn sqlite_is_built_without_memory_statistics() {
    let conn = Connection::open_in_memory().expect("in-memory database");
    let options: Vec<String> = conn
        .prepare("PRAGMA compile_options")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("compile options");
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "SQLite was built without LIBSQLITE3_FLAGS=-DSQLITE_DEFAULT_MEMSTATUS=0 (run cargo from the workspace root so .cargo/config.toml applies): {options:?}"
    );
}
