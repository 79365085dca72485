//! Against a real PostgreSQL ([`lcw_tests::postgres::PgCluster`]) and a real SQLite store file.

use alloy::primitives::{Address, B256, U256, address};
use lcw_schema::profile::Contracts;
use lcw_schema::store::raw::Cursor;
use lcw_schema::store::rows::{ProjectionRow, WorkerRow};
use lcw_schema::store::{Identity, Store};
use lcw_tests::postgres::PgCluster;

use crate::tables::{TABLES, VIEWS};
use crate::{Replica, ReplicaError, ReplicaUrl, verify};

pub(crate) fn identity(chain_id: u64) -> Identity {
    Identity {
        chain_id,
        contracts: Contracts {
            worker_registry: address!("0x00000000000000000000000000000000000000a1"),
            job_registry: address!("0x00000000000000000000000000000000000000a2"),
            ai_config: address!("0x00000000000000000000000000000000000000a3"),
        },
        start_block: 0,
    }
}

/// A store with a few rows whose values sit at the edges of their columns.
fn store(dir: &std::path::Path, chain_id: u64) -> Store {
    let mut store = Store::open(&dir.join(format!("lcw-{chain_id}.db")), &identity(chain_id)).unwrap();
    let tx = store.begin().unwrap();
    let mut w = WorkerRow::new(Address::repeat_byte(7), 5);
    w.registered = true;
    w.stake_wei = U256::MAX;
    w.earned_wei = U256::from(10u64).pow(U256::from(18u64));
    w.capabilities = U256::from(5u64);
    w.put(&tx).unwrap();
    WorkerRow::new(Address::repeat_byte(8), 6).put(&tx).unwrap();
    Cursor { block_number: 6, block_hash: B256::repeat_byte(0xab), finalized_number: 0 }.set(&tx).unwrap();
    tx.commit().unwrap();
    store
}

fn connect(url: &str, id: &Identity) -> Result<Replica, ReplicaError> {
    Replica::connect(&ReplicaUrl::parse(url).unwrap(), id)
}

#[test]
fn copies_a_snapshot_verifies_it_and_names_a_changed_table() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), 31337);
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();
    assert_eq!(replica.cursor().unwrap(), None, "nothing copied yet");

    let report = replica.copy_from(&store).unwrap();
    let count = |name: &str| report.tables.iter().find(|(t, _)| *t == name).map(|(_, n)| *n);
    assert_eq!(count("workers"), Some(2));
    assert_eq!(count("cursor"), Some(1));
    assert!(count("meta").unwrap() >= 5);
    assert_eq!(report.tables.len(), TABLES.len());
    let cursor = replica.cursor().unwrap().unwrap();
    assert_eq!((cursor.block_number, cursor.block_hash.as_slice(), cursor.seq), (6, [0xab; 32].as_slice(), 0));

    // Exact wei and booleans on the PostgreSQL side.
    let row = replica
        .client()
        .query_one(
            "SELECT stake_wei::text, registered, earned_wei = 1e18 FROM workers WHERE address = $1",
            &[&Address::repeat_byte(7).as_slice()],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), U256::MAX.to_string());
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));

    let check = verify(&store, &mut replica).unwrap();
    assert!(check.ok(), "differs: {:?}", check.differing());

    // A second copy replaces the first whole.
    let again = replica.copy_from(&store).unwrap();
    assert_eq!(again.rows(), report.rows());
    assert!(verify(&store, &mut replica).unwrap().ok());

    // Every view answers.
    for view in VIEWS {
        replica.client().query(&format!("SELECT * FROM {view}"), &[]).unwrap_or_else(|e| panic!("{view}: {e}"));
    }
    let shown = replica
        .client()
        .query_one("SELECT address, stake_lcai, registered, models FROM v_workers ORDER BY address LIMIT 1", &[])
        .unwrap();
    assert_eq!(shown.get::<_, String>(0), format!("0x{}", "07".repeat(20)));
    assert!(shown.get::<_, f64>(1) > 1e58);

    // One changed value, one changed cursor: each is named.
    replica
        .client()
        .execute(
            "UPDATE workers SET slash_count = slash_count + 1 WHERE address = $1",
            &[&Address::repeat_byte(8).as_slice()],
        )
        .unwrap();
    replica.client().execute("UPDATE replica_cursor SET block_number = 5", &[]).unwrap();
    let check = verify(&store, &mut replica).unwrap();
    assert_eq!(check.differing(), ["workers", "replica_cursor"]);
    let workers = check.tables.iter().find(|t| t.table == "workers").unwrap();
    assert_eq!((workers.store_rows, workers.replica_rows), (2, 2), "same rows, other content");
}

#[test]
fn refuses_a_replica_of_another_network_and_hides_the_password() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();
    replica.copy_from(&store(dir.path(), 31337)).unwrap();
    drop(replica);
    // The same network again is fine (another start block is the same network).
    let mut later = identity(31337);
    later.start_block = 99;
    connect(&pg.url(), &later).unwrap();

    let err = connect(&pg.url(), &identity(8200)).unwrap_err();
    let m = err.to_string();
    assert!(matches!(err, ReplicaError::OtherNetwork { .. }), "{m}");
    assert!(m.contains("chain 31337") && m.contains("chain 8200"), "names both networks: {m}");
    assert!(m.contains("chain id 31337 here, 8200 in the store"), "says what differs: {m}");
    assert!(m.contains("another database") && m.contains("DROP SCHEMA"), "says what to do: {m}");
    assert!(!m.contains(pg.password()) && m.contains(":***@"), "password hidden: {m}");

    let mut moved = identity(31337);
    moved.contracts.job_registry = address!("0x00000000000000000000000000000000000000ff");
    let m = connect(&pg.url(), &moved).unwrap_err().to_string();
    assert!(m.contains("JobRegistry") && !m.contains("chain id"), "{m}");

    // A store of another network cannot be copied into a replica opened for this one.
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();
    let err = replica.copy_from(&store(dir.path(), 8200)).unwrap_err();
    assert!(matches!(err, ReplicaError::StoreMismatch { .. }), "{err}");

    let wrong = pg.url().replace(pg.password(), "wrong-password");
    let m = connect(&wrong, &identity(31337)).unwrap_err().to_string();
    assert!(m.contains("cannot connect") && !m.contains("wrong-password"), "{m}");
}

#[test]
fn migrations_create_every_described_column_with_its_type() {
    let pg = PgCluster::start();
    let mut replica = connect(&pg.url(), &identity(1)).unwrap();
    for table in TABLES {
        let rows = replica
            .client()
            .query(
                "SELECT column_name::text, data_type::text, is_nullable = 'YES', numeric_precision, numeric_scale \
                 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 \
                 ORDER BY ordinal_position",
                &[&table.name],
            )
            .unwrap();
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, table.column_names(), "columns of {}", table.name);
        for (r, c) in rows.iter().zip(table.columns) {
            assert_eq!(r.get::<_, String>(1), c.kind.pg_type(), "{}.{}", table.name, c.name);
            assert_eq!(r.get::<_, bool>(2), c.nullable, "nullability of {}.{}", table.name, c.name);
            if c.kind == crate::tables::Kind::Wei {
                let (p, s): (Option<i32>, Option<i32>) = (r.get(3), r.get(4));
                assert_eq!((p, s), (Some(78), Some(0)), "{}.{} is numeric(78,0)", table.name, c.name);
            }
        }
        let key: Vec<String> = replica
            .client()
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
                &[&table.name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(key, table.key, "primary key of {}", table.name);
    }
    for view in VIEWS {
        replica.client().query(&format!("SELECT * FROM {view}"), &[]).unwrap_or_else(|e| panic!("{view}: {e}"));
    }
}

/// Commits a block on top of the store's cursor: worker `touch` changed, worker `gone` deleted,
/// a parameter change in the ledger, and the change-log entry naming them.
fn commit_block(store: &mut Store, number: u64, touch: u8, gone: Option<u8>) {
    use lcw_schema::store::changes::{self, ChangeKind, KeySet};
    use lcw_schema::store::ledger::{ConfigChange, LogRef};
    use lcw_schema::store::raw::BlockRow;
    let tx = store.begin().unwrap();
    let mut keys = KeySet::default();
    let mut w = WorkerRow::new(Address::repeat_byte(touch), number);
    w.offense_count = number;
    w.put(&tx).unwrap();
    keys.add(&w);
    if let Some(g) = gone {
        let row = WorkerRow::new(Address::repeat_byte(g), number);
        row.delete(&tx).unwrap();
        keys.add(&row);
    }
    let hash = B256::repeat_byte(number as u8);
    BlockRow { number, hash, parent_hash: None, timestamp: 1_700_000_000 + number, log_count: 1 }.put(&tx).unwrap();
    let at = LogRef { block_number: number, log_index: 0, block_timestamp: 1_700_000_000 + number, tx_hash: hash };
    ConfigChange::insert_all(&tx, &[ConfigChange { at, param: "disputeWindow".into(), value: number.to_string() }])
        .unwrap();
    Cursor { block_number: number, block_hash: hash, finalized_number: 0 }.set(&tx).unwrap();
    changes::record(&tx, ChangeKind::Apply, Some(number - 1), number, &hash, &keys).unwrap();
    tx.commit().unwrap();
}

#[test]
fn follows_the_change_log_and_copies_anew_when_it_was_pruned() {
    use crate::Recopy;
    use lcw_schema::store::changes::{self, Retention};
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(dir.path(), 31337);
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();

    // A fresh replica is copied whole.
    let first = replica.follow_once(&store).unwrap();
    assert!(matches!(first.recopied, Some((Recopy::Empty, _))), "{first:?}");
    assert_eq!(replica.cursor().unwrap().unwrap().seq, 0);

    // One entry: one row written, one deleted, the ledger row of its block copied.
    commit_block(&mut store, 7, 7, Some(8));
    let applied = replica.follow_once(&store).unwrap();
    assert!(applied.recopied.is_none(), "{applied:?}");
    assert_eq!((applied.entries, applied.upserted, applied.deleted, applied.seq), (1, 1, 1, 1), "{applied:?}");
    assert_eq!(applied.behind_blocks, 1);
    assert!(applied.lag_secs.is_some_and(|s| s > 0), "{applied:?}");
    assert!(verify(&store, &mut replica).unwrap().ok());
    let cursor = replica.cursor().unwrap().unwrap();
    assert_eq!((cursor.block_number, cursor.seq), (7, 1));

    // Nothing new: nothing written.
    let idle = replica.follow_once(&store).unwrap();
    assert!(!idle.changed() && idle.seq == 1, "{idle:?}");

    // Every entry pruned but the newest, 4: the replica, at 1, is copied anew.
    for n in 8..=10 {
        commit_block(&mut store, n, 9, None);
    }
    let pruned = changes::prune(store.conn(), u64::MAX / 2, Retention { entries: 1, secs: 0 }).unwrap();
    assert_eq!(pruned, 3);
    let recopied = replica.follow_once(&store).unwrap();
    match &recopied.recopied {
        Some((why @ Recopy::Pruned { seq: 1, oldest: 4 }, report)) => {
            assert!(why.to_string().contains("no longer holds"), "{why}");
            assert_eq!(report.cursor.map(|c| c.block_number), Some(10));
        }
        other => panic!("expected a copy for pruned entries, got {other:?}"),
    }
    assert_eq!(replica.cursor().unwrap().unwrap().seq, 4);
    assert!(verify(&store, &mut replica).unwrap().ok());

    // And it follows on from there.
    commit_block(&mut store, 11, 7, Some(9));
    let applied = replica.follow_once(&store).unwrap();
    assert_eq!((applied.entries, applied.upserted, applied.deleted, applied.seq), (1, 1, 1, 5), "{applied:?}");
    assert!(verify(&store, &mut replica).unwrap().ok());
}

#[test]
fn copies_anew_a_store_made_anew_of_the_same_network() {
    use crate::Recopy;
    let pg = PgCluster::start();
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut old = store(old_dir.path(), 31337);
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();
    replica.follow_once(&old).unwrap();
    commit_block(&mut old, 7, 7, None);
    replica.follow_once(&old).unwrap();
    assert_eq!(replica.cursor().unwrap().unwrap().seq, 1);

    // The same network indexed again into a new store, which has passed the replica's position
    // with other blocks: its change 1 is not the replica's.
    let mut new = store(new_dir.path(), 31337);
    for n in 20..=22 {
        commit_block(&mut new, n, 9, None);
    }
    let applied = replica.follow_once(&new).unwrap();
    assert!(matches!(applied.recopied, Some((Recopy::Diverged { seq: 1 }, _))), "{applied:?}");
    assert!(verify(&new, &mut replica).unwrap().ok());
}

#[test]
fn a_catch_up_cut_short_stands_at_its_last_entry_and_the_next_goes_on() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(dir.path(), 31337);
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();
    replica.set_max_entries(2);
    replica.follow_once(&store).unwrap();
    for n in 1..=5 {
        commit_block(&mut store, n, n as u8, None);
    }

    let first = replica.follow_once(&store).unwrap();
    assert!(first.partial && first.entries == 2 && first.seq == 2, "{first:?}");
    // It claims block 2, the last entry it applied, not the store's 5.
    let cursor = replica.cursor().unwrap().unwrap();
    assert_eq!((cursor.block_number, cursor.seq), (2, 2));
    assert_eq!(first.cursor.map(|c| c.block_number), Some(2));
    assert!(!verify(&store, &mut replica).unwrap().ok(), "still behind");

    let second = replica.follow_once(&store).unwrap();
    assert!(second.partial && second.seq == 4, "{second:?}");
    let last = replica.follow_once(&store).unwrap();
    assert!(!last.partial && last.seq == 5 && last.entries == 1, "{last:?}");
    assert_eq!(replica.cursor().unwrap().unwrap().block_number, 5);
    assert!(verify(&store, &mut replica).unwrap().ok());
}

/// Commits block `number` with `logs` raw logs (and its block row, cursor and change entry).
fn commit_logs(store: &mut Store, number: u64, logs: u64) {
    use lcw_schema::store::changes::{self, ChangeKind, KeySet};
    use lcw_schema::store::raw::{BlockRow, RawLog};
    let tx = store.begin().unwrap();
    let hash = B256::repeat_byte(number as u8);
    let timestamp = 1_700_000_000 + number;
    BlockRow { number, hash, parent_hash: None, timestamp, log_count: logs }.put(&tx).unwrap();
    for log_index in 0..logs {
        RawLog {
            block_number: number,
            log_index,
            block_hash: hash,
            block_timestamp: timestamp,
            tx_hash: B256::with_last_byte(log_index as u8),
            tx_index: log_index,
            address: Address::repeat_byte(0xa2),
            topics: vec![B256::repeat_byte(1)],
            data: Default::default(),
            event: (log_index % 2 == 0).then(|| "JobSubmitted".to_owned()),
            decode_error: None,
            job_id: Some(number * 10 + log_index),
        }
        .insert(&tx)
        .unwrap();
    }
    Cursor { block_number: number, block_hash: hash, finalized_number: 0 }.set(&tx).unwrap();
    changes::record(&tx, ChangeKind::Apply, Some(number - 1), number, &hash, &KeySet::default()).unwrap();
    tx.commit().unwrap();
}

/// Every index of the replica's schema, as PostgreSQL would create it.
fn index_definitions(replica: &mut Replica) -> Vec<String> {
    let rows = replica
        .client()
        .query("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname", &[])
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn a_replica_holding_less_than_it_lacks_is_copied_whole_and_its_indexes_built_again() {
    use crate::Recopy;
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(dir.path(), 31337);
    let mut replica = connect(&pg.url(), &identity(31337)).unwrap();
    replica.set_bulk_min_logs(30);
    let indexes = index_definitions(&mut replica);
    assert!(indexes.iter().any(|d| d.contains("logs_by_job")), "{indexes:?}");
    replica.follow_once(&store).unwrap();

    // 40 blocks of 3 logs: 120 the replica lacks, none it holds.
    for n in 7..=46 {
        commit_logs(&mut store, n, 3);
    }
    let applied = replica.follow_once(&store).unwrap();
    match &applied.recopied {
        Some((why @ Recopy::Behind { missing: 120, held: 0 }, report)) => {
            assert!(why.to_string().contains("120 logs the replica lacks"), "{why}");
            assert_eq!(report.tables.iter().find(|(t, _)| *t == "logs").map(|(_, n)| *n), Some(120));
        }
        other => panic!("expected a whole copy of a replica far behind, got {other:?}"),
    }
    assert!(verify(&store, &mut replica).unwrap().ok());
    assert_eq!(index_definitions(&mut replica), indexes, "every index is built again as it was");
    // The rebuilt index serves a job's logs (a table this small would be scanned otherwise).
    replica.client().batch_execute("SET enable_seqscan = off").unwrap();
    let plan: Vec<String> = replica
        .client()
        .query("EXPLAIN SELECT * FROM logs WHERE job_id = 70 ORDER BY block_number, log_index", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.iter().any(|l| l.contains("logs_by_job")), "{plan:?}");
    replica.client().batch_execute("RESET enable_seqscan").unwrap();

    // 40 more blocks of one log: fewer than the replica holds, applied entry by entry.
    for n in 47..=86 {
        commit_logs(&mut store, n, 1);
    }
    let applied = replica.follow_once(&store).unwrap();
    assert!(applied.recopied.is_none() && applied.entries == 40, "{applied:?}");
    assert!(verify(&store, &mut replica).unwrap().ok());
}
