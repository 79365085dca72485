//! The sortition reads over an in-memory store with every migration applied.

use alloy::primitives::{Address, B256, Bytes, U256};

use super::super::ledger::{ConfigChange, LogRef};
use super::super::raw::{BlockRow, CallResult, Cursor};
use super::super::rows::{CapabilityRow, ProjectionRow, SessionRequestRow, WorkerRow};
use super::super::sortition::*;
use super::super::{Store, StoreError, embedded};
use super::identity;

const M1: Address = Address::repeat_byte(0x51);
const M2: Address = Address::repeat_byte(0x52);
const W1: Address = Address::repeat_byte(0xa1);
const W2: Address = Address::repeat_byte(0xa2);

fn store() -> Store {
    Store::open_in_memory(&identity(1)).unwrap()
}

/// A request made in block `block` (timestamp `block * 10`), expiring at `expiry`.
fn open(manager: Address, req_id: u64, block: u64, expiry: u64) -> SessionRequestRow {
    SessionRequestRow {
        manager,
        req_id,
        user: Address::repeat_byte(0xc0 + req_id as u8),
        model_id: B256::repeat_byte(1),
        request_block: block,
        request_block_hash: B256::repeat_byte(block as u8),
        requested_at: block * 10,
        expiry,
        required_caps: U256::ZERO,
        status: RequestStatus::Open.as_str().into(),
        worker: None,
        claimed_block: None,
        claimed_at: None,
        claim_tx: None,
        session_id: None,
        ready_block: None,
        ready_at: None,
        updated_block: block,
    }
}

fn claimed(mut r: SessionRequestRow, worker: Address, block: u64) -> SessionRequestRow {
    r.status = RequestStatus::Claimed.as_str().into();
    r.worker = Some(worker);
    r.claimed_block = Some(block);
    r.claimed_at = Some(block * 10);
    r.claim_tx = Some(B256::repeat_byte(0xee));
    r.updated_block = block;
    r
}

fn ready(mut r: SessionRequestRow, session: u64, block: u64) -> SessionRequestRow {
    r.status = RequestStatus::Ready.as_str().into();
    r.session_id = Some(session);
    r.ready_block = Some(block);
    r.ready_at = Some(block * 10);
    r.updated_block = block;
    r
}

/// Requests of two managers: M1 #1 ready (claimed by W1 in block 12), #2 claimed by W2 (block
/// 14), #3 open for model 2, #4 open and expiring at 100; M2 #1 claimed by W1 (block 13).
fn fixture(store: &mut Store) {
    let tx = store.begin().unwrap();
    ready(claimed(open(M1, 1, 10, 1_000), W1, 12), 7, 15).put(&tx).unwrap();
    claimed(open(M1, 2, 11, 1_000), W2, 14).put(&tx).unwrap();
    let mut other_model = open(M1, 3, 12, 1_000);
    other_model.model_id = B256::repeat_byte(2);
    other_model.put(&tx).unwrap();
    open(M1, 4, 13, 100).put(&tx).unwrap();
    claimed(open(M2, 1, 11, 1_000), W1, 13).put(&tx).unwrap();
    tx.commit().unwrap();
}

fn ids(rows: &[RequestRow]) -> Vec<(Address, u64)> {
    rows.iter().map(|r| (r.manager, r.req_id)).collect()
}

fn param(tx: &rusqlite::Connection, block: u64, param: &str, value: &str) {
    let at = LogRef { block_number: block, log_index: 0, block_timestamp: block * 10, tx_hash: B256::ZERO };
    ConfigChange::insert_all(tx, &[ConfigChange { at, param: param.into(), value: value.into() }]).unwrap();
}

#[test]
fn statuses_round_trip_and_expiry_is_derived_from_chain_time() {
    for s in [RequestStatus::Open, RequestStatus::Claimed, RequestStatus::Ready] {
        assert_eq!(RequestStatus::parse(s.as_str()), Some(s));
    }
    assert_eq!(RequestStatus::parse("EXPIRED"), None, "expiry is never stored");
    let mut store = store();
    fixture(&mut store);
    let open = request(store.conn(), M1, 4).unwrap().unwrap();
    assert!(!open.expired_at(100), "expired only once chain time passes the expiry");
    assert!(open.expired_at(101));
    assert_eq!(open.state_at(101), RequestState::Expired);
    let done = request(store.conn(), M1, 1).unwrap().unwrap();
    assert!(!done.expired_at(u64::MAX), "a ready request never expires");
    assert_eq!(done.state_at(5_000), RequestState::Ready);
}

#[test]
fn request_reads_every_column_and_reports_an_unknown_status_by_row() {
    let mut store = store();
    fixture(&mut store);
    let r = request(store.conn(), M1, 1).unwrap().expect("request 1");
    assert_eq!(r.status, RequestStatus::Ready);
    assert_eq!((r.worker, r.claimed_block, r.claimed_at), (Some(W1), Some(12), Some(120)));
    assert_eq!((r.session_id, r.ready_block), (Some(7), Some(15)));
    assert_eq!(r.seed, B256::repeat_byte(10), "the seed is the request block's hash");
    assert_eq!((r.request_block, r.requested_at, r.expiry), (10, 100, 1_000));
    assert_eq!(request(store.conn(), M2, 9).unwrap(), None);

    store.conn().pragma_update(None, "ignore_check_constraints", true).unwrap();
    store.conn().execute("UPDATE session_requests SET status = 'LOST' WHERE req_id = 2", []).unwrap();
    let err = request(store.conn(), M1, 2).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("request 2") && msg.contains(&M1.to_string()) && msg.contains("LOST"), "{msg}");
}

#[test]
fn open_requests_are_listed_oldest_first_per_manager_and_model() {
    let mut store = store();
    fixture(&mut store);
    assert_eq!(ids(&open_requests(store.conn(), M1).unwrap()), vec![(M1, 3), (M1, 4)]);
    assert_eq!(open_requests(store.conn(), M2).unwrap(), vec![]);
    let model1 = open_requests_for_model(store.conn(), M1, B256::repeat_byte(1)).unwrap();
    assert_eq!(ids(&model1), vec![(M1, 4)]);
}

#[test]
fn claimed_since_lists_claimed_and_ready_requests_in_claim_order() {
    let mut store = store();
    fixture(&mut store);
    assert_eq!(ids(&claimed_since(store.conn(), M1, 0).unwrap()), vec![(M1, 1), (M1, 2)]);
    assert_eq!(ids(&claimed_since(store.conn(), M1, 13).unwrap()), vec![(M1, 2)]);
    assert_eq!(ids(&claimed_since(store.conn(), M2, 13).unwrap()), vec![(M2, 1)]);
    assert_eq!(claimed_since(store.conn(), M2, 14).unwrap(), vec![]);
}

#[test]
fn claimed_by_lists_a_workers_requests_of_every_manager_newest_first() {
    let mut store = store();
    fixture(&mut store);
    assert_eq!(ids(&claimed_by(store.conn(), W1, 10).unwrap()), vec![(M2, 1), (M1, 1)]);
    assert_eq!(ids(&claimed_by(store.conn(), W1, 1).unwrap()), vec![(M2, 1)]);
    assert_eq!(ids(&claimed_by(store.conn(), W2, 10).unwrap()), vec![(M1, 2)]);
    assert_eq!(claimed_by(store.conn(), Address::ZERO, 10).unwrap(), vec![]);
}

#[test]
fn worker_capabilities_are_the_stored_mask_or_none_for_an_unknown_worker() {
    let mut store = store();
    let tx = store.begin().unwrap();
    let mask = U256::from(0b101u64) | (U256::from(1u64) << 255);
    let mut w = WorkerRow::new(W1, 3);
    w.capabilities = mask;
    w.put(&tx).unwrap();
    tx.commit().unwrap();
    assert_eq!(worker_capabilities(store.conn(), W1).unwrap(), mask);
    assert_eq!(worker_capabilities(store.conn(), W2).unwrap(), U256::ZERO);
    let text: String = store.conn().query_row("SELECT capabilities FROM v_workers", [], |r| r.get(0)).unwrap();
    assert_eq!(text, mask.to_string(), "exact decimal");
}

#[test]
fn capability_names_are_listed_by_bit() {
    let mut store = store();
    let tx = store.begin().unwrap();
    CapabilityRow { bit: 1, name: "vision".into(), registered_block: 4 }.put(&tx).unwrap();
    CapabilityRow { bit: 0, name: "search".into(), registered_block: 4 }.put(&tx).unwrap();
    tx.commit().unwrap();
    assert_eq!(capability_names(store.conn()).unwrap(), vec![(0, "search".into()), (1, "vision".into())]);
    store.conn().execute("INSERT INTO capabilities VALUES (300, 'bogus', 5)", []).unwrap();
    assert!(matches!(capability_names(store.conn()), Err(StoreError::Corrupt { .. })));
}

#[test]
fn sortition_state_is_the_latest_value_of_each_parameter() {
    let mut store = store();
    let tx = store.begin().unwrap();
    param(&tx, 1, "sortitionEnabled", "false");
    param(&tx, 1, "claimWindowBlocks", "5");
    param(&tx, 1, "maxConcurrentJobs", "64");
    tx.commit().unwrap();
    let err = sortition_state(store.conn()).unwrap_err();
    assert!(matches!(&err, StoreError::MissingParam(p) if p == "minWorkerStake"), "{err}");
    let tx = store.begin().unwrap();
    param(&tx, 1, "minWorkerStake", "100000000000000000000");
    param(&tx, 2, "sessionManager", &Address::ZERO.to_string());
    tx.commit().unwrap();
    let s = sortition_state(store.conn()).unwrap();
    assert_eq!((s.enabled, s.manager), (false, None), "the zero address is no manager");
    assert_eq!(s.min_worker_stake, U256::from(10u64).pow(U256::from(20)));
    let tx = store.begin().unwrap();
    param(&tx, 3, "sortitionEnabled", "true");
    param(&tx, 3, "sessionManager", &M2.to_string());
    param(&tx, 4, "claimWindowBlocks", "8");
    tx.commit().unwrap();
    let s = sortition_state(store.conn()).unwrap();
    assert!(s.enabled);
    assert_eq!(s.manager, Some(M2));
    assert_eq!((s.claim_window_blocks, s.max_concurrent_jobs), (U256::from(8), U256::from(64)));
    let tx = store.begin().unwrap();
    param(&tx, 5, "sortitionEnabled", "maybe");
    tx.commit().unwrap();
    assert!(matches!(sortition_state(store.conn()), Err(StoreError::Corrupt { .. })));
}

#[test]
fn managers_are_every_published_address_with_its_first_block() {
    let mut store = store();
    assert_eq!(current_manager(store.conn()).unwrap(), None);
    let tx = store.begin().unwrap();
    param(&tx, 2, "sessionManager", &Address::ZERO.to_string());
    param(&tx, 3, "sessionManager", &M1.to_string());
    param(&tx, 9, "sessionManager", &M2.to_string());
    param(&tx, 12, "sessionManager", &M1.to_string());
    tx.commit().unwrap();
    assert_eq!(managers(store.conn()).unwrap(), vec![(M1, 3), (M2, 9)]);
    assert_eq!(current_manager(store.conn()).unwrap(), Some(M1), "moved back to M1 in block 12");
    assert_eq!(manager_logs_from(store.conn()).unwrap(), None, "a new store holds every manager log");
}

#[test]
fn a_store_indexed_before_sortition_records_where_its_manager_logs_begin() {
    use refinery::Target;
    let mut conn = rusqlite::Connection::open_in_memory().unwrap();
    embedded::migrations::runner().set_target(Target::Version(7)).run(&mut conn).unwrap();
    Cursor { block_number: 41, block_hash: B256::repeat_byte(4), finalized_number: 41 }.set(&conn).unwrap();
    embedded::migrations::runner().run(&mut conn).unwrap();
    assert_eq!(manager_logs_from(&conn).unwrap(), Some(42));
}

#[test]
fn request_pages_walk_newest_first_with_filters_cursors_and_a_budget() {
    let mut store = store();
    fixture(&mut store);
    let conn = store.conn();
    let all = RequestQuery { chain_time: 500, ..Default::default() };
    let page = requests_page(conn, &all, 2, 1_000).unwrap();
    assert_eq!(ids(&page.requests), vec![(M1, 4), (M1, 3)]);
    assert!(page.has_more);
    let next = RequestQuery { after: page.end, ..all.clone() };
    let page = requests_page(conn, &next, 10, 1_000).unwrap();
    assert_eq!(ids(&page.requests), vec![(M2, 1), (M1, 2), (M1, 1)], "same block: manager descending");
    assert!(!page.has_more);

    let by_worker = RequestQuery { worker: Some(W1), ..all.clone() };
    assert_eq!(ids(&requests_page(conn, &by_worker, 10, 1_000).unwrap().requests), vec![(M2, 1), (M1, 1)]);
    let user = Address::repeat_byte(0xc3);
    let by_user = RequestQuery { user: Some(user), ..all.clone() };
    assert_eq!(ids(&requests_page(conn, &by_user, 10, 1_000).unwrap().requests), vec![(M1, 3)]);
    let expired = RequestQuery { state: Some(RequestState::Expired), ..all.clone() };
    assert_eq!(ids(&requests_page(conn, &expired, 10, 1_000).unwrap().requests), vec![(M1, 4)]);
    let open_m1 = RequestQuery { state: Some(RequestState::Open), manager: Some(M1), ..all.clone() };
    assert_eq!(ids(&requests_page(conn, &open_m1, 10, 1_000).unwrap().requests), vec![(M1, 3)]);
    let model2 = RequestQuery { model: Some(B256::repeat_byte(2)), ..all.clone() };
    assert_eq!(ids(&requests_page(conn, &model2, 10, 1_000).unwrap().requests), vec![(M1, 3)]);

    // Out of budget: what was found, and a cursor past what was scanned.
    let page = requests_page(conn, &expired, 10, 1).unwrap();
    assert_eq!(ids(&page.requests), vec![(M1, 4)]);
    let page = requests_page(conn, &RequestQuery { after: page.end, ..expired.clone() }, 10, 1).unwrap();
    assert_eq!((page.requests.len(), page.has_more), (0, true));
    assert_eq!(page.end.map(|k| k.req_id), Some(3));
    // A budget that ends with the rows: nothing more, and the cursor past the last one scanned.
    let page = requests_page(conn, &expired, 10, 5).unwrap();
    assert_eq!((ids(&page.requests), page.has_more), (vec![(M1, 4)], false));
    assert_eq!(page.end.map(|k| (k.manager, k.req_id)), Some((M1, 1)));
    let page = requests_page(conn, &expired, 10, 4).unwrap();
    assert_eq!((page.has_more, page.end.map(|k| (k.manager, k.req_id))), (true, Some((M1, 2))));
    // A keyed walk continued after a cursor.
    let page = requests_page(conn, &by_worker, 1, 1_000).unwrap();
    assert_eq!((ids(&page.requests), page.has_more), (vec![(M2, 1)], true));
    let page = requests_page(conn, &RequestQuery { after: page.end, ..by_worker.clone() }, 1, 1_000).unwrap();
    assert_eq!((ids(&page.requests), page.has_more), (vec![(M1, 1)], false));

    let key = RequestKey { request_block: 12, manager: M1, req_id: 3 };
    assert_eq!(RequestKey::parse(&key.cursor()), Some(key));
    assert_eq!(RequestKey::parse("12:0x12"), None);
}

#[test]
fn request_pages_walk_their_index() {
    let store = store();
    for scan in [RequestScan::Worker, RequestScan::User, RequestScan::All] {
        for after in [false, true] {
            let sql = format!("EXPLAIN QUERY PLAN {}", request_scan_sql(scan, after));
            let mut stmt = store.conn().prepare(&sql).unwrap();
            let nulls = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX session_requests_by"), "{scan:?}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{scan:?} needs no sort: {plan}");
        }
    }
}

#[test]
fn call_results_are_kept_verbatim_unwound_and_copied() {
    let mut store = store();
    let tx = store.begin().unwrap();
    for (id, block) in [(1u64, 10u64), (2, 11)] {
        CallResult {
            contract: M1,
            method: "getRequest(uint256)".into(),
            id,
            block_number: block,
            data: Bytes::from(vec![id as u8; 64]),
        }
        .put(&tx)
        .unwrap();
    }
    BlockRow { number: 11, hash: B256::repeat_byte(11), parent_hash: None, timestamp: 110, log_count: 1 }
        .put(&tx)
        .unwrap();
    tx.commit().unwrap();
    let got = CallResult::get(store.conn(), &M1, "getRequest(uint256)", 2).unwrap().unwrap();
    assert_eq!((got.block_number, got.data.len()), (11, 64));
    assert_eq!(CallResult::get(store.conn(), &M2, "getRequest(uint256)", 2).unwrap(), None);

    let mut copy = Store::open_in_memory(&identity(1)).unwrap();
    CallResult::copy_all(store.conn(), copy.conn()).unwrap();
    assert_eq!(CallResult::all(copy.conn()).unwrap(), CallResult::all(store.conn()).unwrap());

    let tx = copy.begin().unwrap();
    CallResult::delete_above(&tx, 10).unwrap();
    tx.commit().unwrap();
    assert_eq!(CallResult::all(copy.conn()).unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn v_session_requests_derives_expiry_from_the_cursor_blocks_time() {
    let mut store = store();
    fixture(&mut store);
    let query = |store: &Store| -> Vec<(i64, String, Option<String>)> {
        store
            .conn()
            .prepare("SELECT req_id, status, worker FROM v_session_requests WHERE manager = ?1 ORDER BY req_id")
            .unwrap()
            .query_map([format!("{M1:#x}")], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let tx = store.begin().unwrap();
    BlockRow { number: 20, hash: B256::repeat_byte(20), parent_hash: None, timestamp: 100, log_count: 0 }
        .put(&tx)
        .unwrap();
    Cursor { block_number: 20, block_hash: B256::repeat_byte(20), finalized_number: 20 }.set(&tx).unwrap();
    tx.commit().unwrap();
    let rows = query(&store);
    assert_eq!(rows[3].1, "OPEN", "at the expiry itself the request is still open");
    assert_eq!(rows[1].2, Some(format!("{W2:#x}")));
    assert_eq!(rows[3].2, None, "no claimer renders as NULL");
    let tx = store.begin().unwrap();
    BlockRow { number: 21, hash: B256::repeat_byte(21), parent_hash: None, timestamp: 101, log_count: 0 }
        .put(&tx)
        .unwrap();
    Cursor { block_number: 21, block_hash: B256::repeat_byte(21), finalized_number: 21 }.set(&tx).unwrap();
    tx.commit().unwrap();
    let statuses: Vec<String> = query(&store).into_iter().map(|r| r.1).collect();
    assert_eq!(statuses, ["READY", "CLAIMED", "OPEN", "EXPIRED"]);
}
