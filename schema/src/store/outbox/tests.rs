use alloy::primitives::{Address, B256, Bytes, U256};
use rusqlite::Connection;

use super::*;
use crate::profile::Contracts;
use crate::store::StoreError;
use crate::store::{Identity, Store};

fn store() -> Store {
    let identity = Identity {
        chain_id: 31337,
        contracts: Contracts {
            worker_registry: Address::repeat_byte(0xa1),
            job_registry: Address::repeat_byte(0xa2),
            ai_config: Address::repeat_byte(0xa3),
        },
        start_block: 0,
    };
    Store::open_in_memory(&identity).unwrap()
}

const ME: Address = Address::repeat_byte(7);
const CAP: Ceiling = Ceiling { per_gas: 100, per_blob_gas: 50 };

fn intent(store: &mut Store, kind: Kind, lane: Lane, jobs: &[u64]) -> Result<i64, JobInFlight> {
    let tx = store.begin().unwrap();
    let n = NewIntent {
        sender: ME,
        kind,
        lane,
        to: Address::repeat_byte(2),
        calldata: &[1, 2, 3],
        value: U256::ZERO,
        gas_limit: 100_000,
        jobs,
        created_head: 10,
        target_block: 11,
        cap: CAP,
        chain_id: 31337,
        now: 1,
    };
    let r = insert_intent(&tx, &n).unwrap();
    if r.is_ok() {
        tx.commit().unwrap();
    }
    r
}

fn sign(store: &Store, id: i64, nonce: u64, fees: AttemptFees) {
    set_signed(store.conn(), id, nonce, 10, 1).unwrap();
    let a = NewAttempt { outbox_id: id, attempt: 0, hash: B256::repeat_byte(id as u8), raw: &[0xee], fees, now: 1 };
    insert_attempt(store.conn(), &a).unwrap();
}

#[test]
fn kinds_statuses_and_lanes_round_trip_and_unknown_values_are_corrupt() {
    for k in Kind::ALL {
        assert_eq!(Kind::parse(k.as_str()).unwrap(), k);
    }
    for s in [Status::Intent, Status::Sent, Status::Mined, Status::Reverted, Status::Dropped] {
        assert_eq!(Status::parse(s.as_str()).unwrap(), s);
    }
    for l in [Lane::Settler, Lane::Worker, Lane::Operator] {
        assert_eq!(Lane::parse(l.as_str()).unwrap(), l);
    }
    assert!(matches!(Kind::parse("teleport"), Err(StoreError::Corrupt { .. })));
    assert!(matches!(Lane::parse("keeper"), Err(StoreError::Corrupt { .. })));
    assert!(matches!(Status::parse("waiting"), Err(StoreError::Corrupt { .. })));
}

#[test]
fn a_second_live_transaction_for_a_job_is_refused_with_its_holder() {
    let mut s = store();
    let first = intent(&mut s, Kind::Release, Lane::Settler, &[4, 5]).unwrap();
    let refused = intent(&mut s, Kind::ClaimTimeout, Lane::Operator, &[5]).unwrap_err();
    assert_eq!(refused.job, 5);
    assert_eq!(refused.holder, Some((first, "release".into(), "settler".into())));
    assert_eq!(
        refused.to_string(),
        format!("job 5 already has a live outbox transaction (#{first}, release, settler lane)")
    );
    // Nothing of the refused intent was written.
    let rows: i64 = s.conn().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn live_rows_carry_their_ceiling_latest_fees_and_broadcast_state() {
    let mut s = store();
    let id = intent(&mut s, Kind::Complete, Lane::Worker, &[1]).unwrap();
    sign(&s, id, 3, AttemptFees { max_fee: 10, tip: 1, blob_fee: Some(4) });
    let a = NewAttempt {
        outbox_id: id,
        attempt: 1,
        hash: B256::repeat_byte(0x51),
        raw: &[0xef],
        fees: AttemptFees { max_fee: 20, tip: 2, blob_fee: Some(8) },
        now: 2,
    };
    let tx = s.begin().unwrap();
    record_bump(&tx, &a, 12).unwrap();
    tx.commit().unwrap();
    record_broadcast(s.conn(), id, 13, Broadcast::Refused("insufficient funds")).unwrap();
    record_broadcast(s.conn(), id, 14, Broadcast::Refused("insufficient funds")).unwrap();
    let live = live(s.conn(), ME).unwrap();
    assert_eq!(live.len(), 1);
    let l = &live[0];
    assert_eq!((l.nonce, l.attempts, l.signed_head), (3, 2, 12));
    assert_eq!(l.last, AttemptFees { max_fee: 20, tip: 2, blob_fee: Some(8) });
    assert_eq!(l.cap, Some(CAP));
    assert_eq!((l.broadcasts, l.broadcast_block, l.accepted_block), (3, Some(14), Some(12)));
    assert_eq!((l.refusal.as_deref(), l.refused_block), (Some("insufficient funds"), Some(13)));
    assert_eq!(latest_raw(s.conn(), id).unwrap(), Some(Bytes::from(vec![0xef])));
    assert_eq!(attempt_hashes(s.conn(), id).unwrap().len(), 2);
    let r = refused(s.conn(), ME, Lane::Worker).unwrap();
    assert_eq!((r[0].id, r[0].jobs.clone(), r[0].since_block), (id, vec![1], 13));
    record_broadcast(s.conn(), id, 15, Broadcast::Accepted).unwrap();
    assert!(refused(s.conn(), ME, Lane::Worker).unwrap().is_empty());
}

#[test]
fn a_fee_that_does_not_parse_is_corrupt_naming_the_row() {
    let mut s = store();
    let id = intent(&mut s, Kind::Ack, Lane::Worker, &[1]).unwrap();
    sign(&s, id, 0, AttemptFees { max_fee: 10, tip: 1, blob_fee: None });
    s.conn().execute("UPDATE outbox_attempts SET max_fee_per_gas = 'lots'", []).unwrap();
    match live(s.conn(), ME) {
        Err(StoreError::Corrupt { what, value }) => {
            assert_eq!(what, format!("outbox #{id} max_fee_per_gas"));
            assert_eq!(value, "lots");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_dropped_row_knows_whether_its_jobs_went_elsewhere() {
    let mut s = store();
    let a = intent(&mut s, Kind::Release, Lane::Settler, &[1, 2]).unwrap();
    sign(&s, a, 5, AttemptFees { max_fee: 10, tip: 1, blob_fee: None });
    mark_dropped(s.conn(), a, "refused").unwrap();
    let d = dropped_at(s.conn(), ME, 5).unwrap().unwrap();
    assert_eq!((d.id, d.lane, d.attempts, d.jobs_free), (a, Lane::Settler, 1, true));
    assert_eq!(held_nonces(s.conn(), ME, 0).unwrap(), Vec::<u64>::new());
    // Job 2 goes out in another transaction: the dropped one is no longer wanted.
    let b = intent(&mut s, Kind::Release, Lane::Settler, &[2]).unwrap();
    sign(&s, b, 6, AttemptFees { max_fee: 10, tip: 1, blob_fee: None });
    assert!(!dropped_at(s.conn(), ME, 5).unwrap().unwrap().jobs_free);
    assert_eq!(held_nonces(s.conn(), ME, 0).unwrap(), vec![6]);
    assert!(holds_above(s.conn(), ME, 5).unwrap());
    assert!(!holds_above(s.conn(), ME, 6).unwrap());
    assert_eq!(max_held_nonce(s.conn(), ME).unwrap(), Some(6));
}

#[test]
fn rows_written_before_the_policy_migration_take_the_store_chain() {
    let mut conn = Connection::open_in_memory().unwrap();
    let runner = || crate::store::embedded::migrations::runner();
    runner().set_target(refinery::Target::Version(9)).run(&mut conn).unwrap();
    conn.execute("INSERT INTO meta (key, value) VALUES ('chain_id', '31337')", []).unwrap();
    conn.execute(
        "INSERT INTO outbox (sender, kind, to_address, calldata, value_wei, gas_limit, status, created_at,
                             created_head)
         VALUES (?1, 'ack', ?1, x'', '0', 1, 'intent', 0, 0)",
        [ME.as_slice()],
    )
    .unwrap();
    runner().run(&mut conn).unwrap();
    assert_eq!(live_chain_ids(&conn, ME).unwrap(), vec![Some(31337)]);
    let row = row(&conn, 1).unwrap().unwrap();
    assert_eq!((row.cap, row.status, row.kind), (None, Status::Intent, Kind::Ack));
}
