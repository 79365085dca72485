use alloy::primitives::{Address, B256, U256};
use rusqlite::types::Value;

use super::*;
use crate::profile::Contracts;
use crate::store::rows::{EventCountRow, RollupRow, WorkerModelRow};
use crate::store::undo::{self, UndoEntry};
use crate::store::{Identity, Store, meta_set};

fn store() -> Store {
    let contracts = Contracts {
        worker_registry: Address::repeat_byte(1),
        job_registry: Address::repeat_byte(2),
        ai_config: Address::repeat_byte(3),
    };
    Store::open_in_memory(&Identity { chain_id: 31337, contracts, start_block: 0 }).unwrap()
}

fn entries(conn: &Connection, seq: u64) -> Vec<Change> {
    match since(conn, seq, 1000).unwrap() {
        Since::Entries(e) => e,
        other => panic!("{other:?}"),
    }
}

fn capability(bit: u64, name: &str) -> CapabilityRow {
    CapabilityRow { bit, name: name.into(), registered_block: 3 }
}

fn rollup(hour: u64) -> RollupRow {
    RollupRow::new(hour, Address::repeat_byte(7), B256::repeat_byte(8))
}

#[test]
fn keys_round_trip_through_the_encoding_in_table_runs() {
    let mut keys = KeySet::default();
    keys.add(&capability(5, "gpu"));
    keys.add(&rollup(3600));
    keys.add(&capability(u64::MAX >> 1, "x"));
    keys.add(&EventCountRow { event: "JobSubmitted".into(), count: 9 });
    keys.add(&WorkerModelRow { worker: Address::repeat_byte(4), model_id: B256::repeat_byte(5), added_block: 1 });
    assert_eq!(keys.len(), 5);
    let decoded = decode_keys(&keys.encode(), 1).unwrap();
    let cap = |bit: u64| RowKey { table: "capabilities", key: vec![Value::Integer(bit as i64)] };
    assert_eq!(
        decoded,
        vec![
            cap(5),
            cap(u64::MAX >> 1),
            RowKey {
                table: "rollups_hourly",
                key: vec![Value::Integer(3600), Value::Blob(vec![7; 20]), Value::Blob(vec![8; 32])]
            },
            RowKey { table: "event_counts", key: vec![Value::Text("JobSubmitted".into())] },
            RowKey { table: "worker_models", key: vec![Value::Blob(vec![4; 20]), Value::Blob(vec![5; 32])] },
        ]
    );
    // Re-encoding what was read gives the same bytes.
    let mut again = KeySet::default();
    decoded.iter().for_each(|k| again.add_key(k));
    assert_eq!(again.encode(), keys.encode());
    // A capability key is a handful of bytes.
    let mut one = KeySet::default();
    one.add(&capability(5, "gpu"));
    assert_eq!(one.encode().len(), 1 + 1 + "capabilities".len() + 1 + 1 + 2);
}

#[test]
fn corrupt_keys_are_an_error_naming_the_entry() {
    for bad in [&[][..], &[2][..], &[1, 3, b'f', b'o', b'o', 1, 1][..], &[1, 12][..]] {
        let e = decode_keys(bad, 42).unwrap_err().to_string();
        assert!(e.contains("entry 42"), "{e}");
    }
    let mut keys = KeySet::default();
    keys.add(&capability(5, "gpu"));
    let mut bytes = keys.encode();
    bytes.pop();
    assert!(decode_keys(&bytes, 1).is_err());
}

#[test]
fn since_returns_entries_after_the_position_in_order() {
    let mut s = store();
    assert_eq!(entries(s.conn(), 0), vec![]);
    assert_eq!(last_seq(s.conn()).unwrap(), 0);
    let tx = s.begin().unwrap();
    let mut keys = KeySet::default();
    keys.add(&capability(1, "a"));
    assert_eq!(record(&tx, ChangeKind::Apply, None, 10, &B256::repeat_byte(10), &keys).unwrap(), 1);
    assert_eq!(record(&tx, ChangeKind::Unwind, Some(10), 8, &B256::repeat_byte(8), &keys).unwrap(), 2);
    let empty = KeySet::default();
    assert_eq!(record(&tx, ChangeKind::Clear, Some(8), 8, &B256::repeat_byte(8), &empty).unwrap(), 3);
    assert_eq!(record(&tx, ChangeKind::Replace, Some(8), 8, &B256::repeat_byte(8), &empty).unwrap(), 4);
    tx.commit().unwrap();

    let all = entries(s.conn(), 0);
    assert_eq!(all.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(
        all.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [ChangeKind::Apply, ChangeKind::Unwind, ChangeKind::Clear, ChangeKind::Replace]
    );
    assert_eq!((all[0].from_block, all[0].to_block, all[0].block_hash), (None, 10, B256::repeat_byte(10)));
    assert_eq!((all[1].from_block, all[1].to_block), (Some(10), 8));
    assert_eq!(all[1].keys, vec![RowKey { table: "capabilities", key: vec![Value::Integer(1)] }]);
    assert!(all[2].keys.is_empty());
    assert!(all[0].committed_at > 1_700_000_000);
    assert_eq!(entries(s.conn(), 2).iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(entries(s.conn(), 4), vec![]);
    match since(s.conn(), 0, 2).unwrap() {
        Since::Entries(e) => assert_eq!(e.len(), 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(last_seq(s.conn()).unwrap(), 4);
}

#[test]
fn a_rolled_back_commit_leaves_no_entry_and_no_gap() {
    let mut s = store();
    let tx = s.begin().unwrap();
    record(&tx, ChangeKind::Apply, None, 1, &B256::ZERO, &KeySet::default()).unwrap();
    drop(tx);
    let tx = s.begin().unwrap();
    assert_eq!(record(&tx, ChangeKind::Apply, None, 1, &B256::ZERO, &KeySet::default()).unwrap(), 1);
    tx.commit().unwrap();
}

fn fill(s: &mut Store, n: u64) {
    let tx = s.begin().unwrap();
    for b in 1..=n {
        record(&tx, ChangeKind::Apply, Some(b - 1), b, &B256::ZERO, &KeySet::default()).unwrap();
    }
    tx.commit().unwrap();
}

fn age_all(s: &Store, secs: u64) {
    s.conn().execute("UPDATE changes SET committed_at = committed_at - ?1", [secs as i64]).unwrap();
}

#[test]
fn prune_keeps_the_newest_entries_and_every_young_one() {
    let mut s = store();
    fill(&mut s, 30);
    let now = crate::store::unix_now();
    let keep = Retention { entries: 10, secs: 3600 };
    // All young: nothing goes.
    assert_eq!(prune(s.conn(), now, keep).unwrap(), 0);
    // All old: all but the newest 10 go.
    age_all(&s, 7200);
    assert_eq!(prune(s.conn(), now, keep).unwrap(), 20);
    assert_eq!(entries(s.conn(), 20).first().map(|c| c.seq), Some(21));
    // Ten more, young: the old ten go too, even though 20 entries remain.
    fill(&mut s, 10);
    assert_eq!(prune(s.conn(), now, Retention { entries: 5, secs: 3600 }).unwrap(), 10);
    assert_eq!(entries(s.conn(), 30).iter().map(|c| c.seq).collect::<Vec<_>>(), (31..=40).collect::<Vec<_>>());
    // The sequence goes on after pruning; numbers are never reused.
    fill(&mut s, 1);
    assert_eq!(last_seq(s.conn()).unwrap(), 41);
}

#[test]
fn a_position_below_the_oldest_entry_must_copy_anew() {
    let mut s = store();
    fill(&mut s, 30);
    age_all(&s, 7200);
    prune(s.conn(), crate::store::unix_now(), Retention { entries: 10, secs: 3600 }).unwrap();
    assert_eq!(since(s.conn(), 0, 100).unwrap(), Since::TooOld { oldest: 21 });
    assert_eq!(since(s.conn(), 19, 100).unwrap(), Since::TooOld { oldest: 21 });
    assert_eq!(entries(s.conn(), 20).len(), 10);
    assert_eq!(entries(s.conn(), 30), vec![]);
}

#[test]
fn retention_defaults_and_meta_overrides() {
    let s = store();
    assert_eq!(Retention::of(s.conn()).unwrap(), RETENTION);
    meta_set(s.conn(), KEEP_ENTRIES, "0").unwrap();
    meta_set(s.conn(), KEEP_HOURS, "2").unwrap();
    assert_eq!(Retention::of(s.conn()).unwrap(), Retention { entries: 1, secs: 7200 });
    meta_set(s.conn(), KEEP_HOURS, "soon").unwrap();
    assert!(Retention::of(s.conn()).unwrap_err().to_string().contains(KEEP_HOURS));
}

#[test]
fn current_rows_reads_present_rows_and_reports_absent_ones() {
    let s = store();
    let c = capability(3, "tee");
    c.put(s.conn()).unwrap();
    let r = RollupRow { submitted: 4, fees_wei: U256::from(17u64), ..rollup(7200) };
    r.put(s.conn()).unwrap();
    let mut keys = KeySet::default();
    keys.add(&c);
    keys.add(&capability(4, "gone"));
    keys.add(&r);
    let keys = decode_keys(&keys.encode(), 1).unwrap();
    let rows = current_rows(s.conn(), &keys).unwrap();
    assert_eq!(rows[0], Some(vec![Value::Integer(3), Value::Text("tee".into()), Value::Integer(3)]));
    assert_eq!(rows[1], None);
    let rollup_row = rows[2].as_ref().unwrap();
    let def = table("rollups_hourly").unwrap();
    assert_eq!(rollup_row.len(), def.columns.len());
    let at = |c: &str| &rollup_row[def.columns.iter().position(|x| *x == c).unwrap()];
    assert_eq!(at("submitted"), &Value::Integer(4));
    assert_eq!(at("fees_wei"), &Value::Text("17".into()));
}

#[test]
fn keyed_tables_list_every_column_and_the_primary_key_of_their_table() {
    let s = store();
    for def in keyed_tables() {
        let mut stmt =
            s.conn().prepare(&format!("SELECT name, pk FROM pragma_table_info('{}') ORDER BY cid", def.table)).unwrap();
        let cols: Vec<(String, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
        let mut names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        let mut expected = def.columns.to_vec();
        names.sort_unstable();
        expected.sort_unstable();
        assert_eq!(names, expected, "{}", def.table);
        let mut pk: Vec<(i64, &str)> = cols.iter().filter(|c| c.1 > 0).map(|c| (c.1, c.0.as_str())).collect();
        pk.sort_unstable();
        assert_eq!(pk.into_iter().map(|p| p.1).collect::<Vec<_>>(), def.keys, "{}", def.table);
    }
    // With the four ledgers, every projection table.
    let mut all: Vec<&str> = keyed_tables().iter().map(|t| t.table).collect();
    all.extend(["config_history", "withdrawals", "bounties", "slashes"]);
    all.sort_unstable();
    let mut projections = crate::store::projections::PROJECTION_TABLES.to_vec();
    projections.sort_unstable();
    assert_eq!(all, projections);
}

#[test]
fn unwinding_names_every_restored_row() {
    let mut s = store();
    let tx = s.begin().unwrap();
    let before = capability(1, "old");
    before.put(&tx).unwrap();
    let after = capability(1, "new");
    after.put(&tx).unwrap();
    UndoEntry::of(11, 0, Some(&before), Some(&after)).unwrap().insert(&tx).unwrap();
    let created = rollup(3600);
    created.put(&tx).unwrap();
    UndoEntry::of(12, 0, None, Some(&created)).unwrap().insert(&tx).unwrap();
    let mut keys = KeySet::default();
    assert_eq!(undo::restore_above(&tx, 10, &mut keys).unwrap(), 2);
    let keys = decode_keys(&keys.encode(), 1).unwrap();
    assert_eq!(
        current_rows(&tx, &keys).unwrap(),
        vec![None, Some(vec![Value::Integer(1), Value::Text("old".into()), Value::Integer(3)])]
    );
    assert_eq!(keys.iter().map(|k| k.table).collect::<Vec<_>>(), ["rollups_hourly", "capabilities"]);
}
