//! A row holding a value its type does not know (a state, status or amount written by hand, by
//! a foreign writer or by a newer lcw) fails the read that meets it, naming the row and the
//! value, instead of being read as some default.

use alloy::primitives::{Address, B256};
use rusqlite::params;

use super::super::obligations::{self, assignments, open_jobs};
use super::super::rows::{JobRow, ProjectionRow, SessionRow, WorkerRow};
use super::super::{Store, StoreError};
use super::{identity, job};

const WORKER: Address = Address::repeat_byte(9);

/// Job 7 of session 1, assigned to [`WORKER`], in state `state`, with its session active.
fn store_with_job(state: &str) -> Store {
    let store = Store::open_in_memory(&identity(1)).unwrap();
    let conn = store.conn();
    job(7, state).put(conn).unwrap();
    session(1).put(conn).unwrap();
    store
}

fn session(id: u64) -> SessionRow {
    SessionRow {
        session_id: id,
        user: Some(Address::repeat_byte(3)),
        model_id: Some(B256::repeat_byte(1)),
        worker: Some(WORKER),
        status: "ACTIVE".into(),
        enc_worker_key: None,
        enc_disputer_key: None,
        job_count: 1,
        created_block: Some(4),
        created_at: Some(90),
        closed_block: None,
        closed_at: None,
        key_updated_block: None,
        updated_block: 4,
    }
}

/// The error of a failed read, which must be corruption naming `row` and `value`.
fn corrupt<T: std::fmt::Debug>(read: Result<T, StoreError>, row: &str, value: &str) {
    let err = read.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "not corruption: {msg}");
    assert!(msg.contains(row) && msg.contains(value), "{msg} does not name {row} and {value}");
}

#[test]
fn an_open_job_in_an_unknown_state_is_corruption_naming_the_job() {
    let store = store_with_job("SUBMITTED");
    store.conn().execute("UPDATE jobs SET state = 'PAID' WHERE job_id = 7", []).unwrap();
    corrupt(open_jobs(store.conn(), None), "jobs.state of job 7", "PAID");
    corrupt(open_jobs(store.conn(), Some(WORKER)), "job 7", "PAID");
}

#[test]
fn an_open_job_with_an_unreadable_fee_is_corruption_naming_the_job() {
    let store = store_with_job("COMPLETED");
    store.conn().execute("UPDATE jobs SET fee_wei = '1e18' WHERE job_id = 7", []).unwrap();
    corrupt(open_jobs(store.conn(), None), "jobs.fee_wei of job 7", "1e18");
}

#[test]
fn a_session_in_an_unknown_status_is_corruption_naming_the_session() {
    let store = store_with_job("ACKNOWLEDGED");
    store.conn().execute("UPDATE sessions SET status = 'PAUSED' WHERE session_id = 1", []).unwrap();
    corrupt(open_jobs(store.conn(), None), "sessions.status of session 1", "PAUSED");
    corrupt(assignments(store.conn(), WORKER), "sessions.status of session 1", "PAUSED");
}

#[test]
fn an_assignment_reads_its_session_status() {
    let store = store_with_job("SUBMITTED");
    store.conn().execute("UPDATE sessions SET status = 'CLOSED' WHERE session_id = 1", []).unwrap();
    let a = assignments(store.conn(), WORKER).unwrap();
    assert_eq!(a[0].session_status, Some(crate::types::SessionStatus::Closed));
    let open = open_jobs(store.conn(), None).unwrap();
    assert!(!open[0].session_active);
}

#[test]
fn a_job_without_its_session_counts_as_in_an_active_session() {
    let store = store_with_job("SUBMITTED");
    store.conn().execute("DELETE FROM sessions", []).unwrap();
    assert!(open_jobs(store.conn(), None).unwrap()[0].session_active);
    assert_eq!(assignments(store.conn(), WORKER).unwrap()[0].session_status, None);
}

#[test]
fn a_job_row_in_an_unknown_state_is_corruption_naming_the_job() {
    let store = store_with_job("RELEASED");
    let row = JobRow::get(store.conn(), 7).unwrap().unwrap();
    assert_eq!(row.job_state().unwrap(), crate::types::JobState::Released);
    store.conn().execute("UPDATE jobs SET state = 'released' WHERE job_id = 7", []).unwrap();
    let row = JobRow::get(store.conn(), 7).unwrap().unwrap();
    corrupt(row.job_state(), "jobs.state of job 7", "released");
    let session = SessionRow::get(store.conn(), 1).unwrap().unwrap();
    assert_eq!(session.session_status().unwrap(), crate::types::SessionStatus::Active);
    store.conn().execute("UPDATE sessions SET status = '' WHERE session_id = 1", []).unwrap();
    let session = SessionRow::get(store.conn(), 1).unwrap().unwrap();
    corrupt(session.session_status(), "sessions.status of session 1", "\"\"");
}

#[test]
fn a_worker_with_an_unreadable_stake_or_balance_is_corruption_naming_the_worker() {
    let store = Store::open_in_memory(&identity(1)).unwrap();
    WorkerRow::new(WORKER, 3).put(store.conn()).unwrap();
    assert!(obligations::worker(store.conn(), WORKER).unwrap().is_some());
    store.conn().execute("UPDATE workers SET stake_wei = '-5'", []).unwrap();
    corrupt(obligations::worker(store.conn(), WORKER), &format!("workers.stake_wei of {WORKER}"), "-5");
    store.conn().execute("UPDATE workers SET stake_wei = '5', balance_wei = 'lots'", []).unwrap();
    corrupt(obligations::worker(store.conn(), WORKER), &format!("workers.balance_wei of {WORKER}"), "lots");
}

#[test]
fn a_parameter_that_is_not_a_number_is_corruption_naming_the_change() {
    let store = Store::open_in_memory(&identity(1)).unwrap();
    let conn = store.conn();
    for (block, value) in [(5i64, "60"), (8, "soon")] {
        conn.execute(
            "INSERT INTO config_history (block_number, log_index, block_timestamp, param, value)
             VALUES (?1, 0, ?1 * 10, 'disputeWindow', ?2)",
            params![block, value],
        )
        .unwrap();
    }
    use super::super::ledger::{config_history_u64, config_u64_as_of};
    assert_eq!(config_u64_as_of(conn, "disputeWindow", 6).unwrap(), Some(60));
    assert_eq!(config_u64_as_of(conn, "disputeWindow", 4).unwrap(), None);
    corrupt(config_u64_as_of(conn, "disputeWindow", 9), "config_history disputeWindow at block 8", "soon");
    corrupt(config_history_u64(conn, "disputeWindow"), "config_history disputeWindow at block 8", "soon");
    corrupt(obligations::params_if_known(conn), "config_history disputeWindow", "soon");
}

#[test]
fn parameters_the_store_has_not_seen_are_none_not_an_error() {
    let store = Store::open_in_memory(&identity(1)).unwrap();
    assert_eq!(obligations::params_if_known(store.conn()).unwrap(), None);
}

#[test]
fn a_read_only_open_of_a_store_with_a_corrupt_identity_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lcw.db");
    drop(Store::open(&path, &identity(1)).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE meta SET value = 'one' WHERE key = 'chain_id'", []).unwrap();
    drop(conn);
    corrupt(Store::open_readonly(&path), "meta.chain_id", "one");
}
