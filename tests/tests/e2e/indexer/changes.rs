//! The change log is complete: every projection row that differs between two snapshots of a
//! store indexed live (backfill, live blocks, reorgs) or rewritten by `replay --write` is named
//! by the entries committed between them, and every ledger row that differs lies in their block
//! ranges. A watcher thread snapshots the store as fast as it can while the indexer commits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lcw_schema::store::Store;
use lcw_schema::store::changes::{self, Change, ChangeKind, Since};
use lcw_schema::store::ledger::LEDGER_TABLES;
use lcw_schema::store::raw::Cursor;
use lcw_tests::indexing::{self, Follower};
use lcw_tests::parties::{ack_and_complete, submit};
use lcw_tests::{TestNet, b256};
use rusqlite::types::Value;

use super::{blocks_to_replace, head, reorg_to_other_branch, two_workers};

/// A row of a keyed table by (table, key), or of a ledger by (table, whole row).
type RowId = (&'static str, String);

/// The projection tables and the change log's position, from one read snapshot.
struct Snapshot {
    seq: u64,
    cursor: Option<(u64, alloy::primitives::B256)>,
    keyed: BTreeMap<RowId, Vec<Value>>,
    /// Ledger rows by (table, row), with their block.
    ledger: BTreeMap<RowId, u64>,
    /// The entries after the previous snapshot's position, read in this snapshot.
    entries: Vec<Change>,
}

fn key_id(key: &[Value]) -> String {
    format!("{key:?}")
}

fn snapshot(db: &Path, after: u64) -> Snapshot {
    let store = Store::open_readonly(db).unwrap();
    let conn = store.conn();
    conn.execute_batch("BEGIN").unwrap();
    let seq = changes::last_seq(conn).unwrap();
    let entries = match changes::since(conn, after, usize::MAX).unwrap() {
        Since::Entries(e) => e,
        Since::TooOld { oldest } => panic!("entries after {after} pruned (oldest {oldest})"),
    };
    let cursor = Cursor::get(conn).unwrap().map(|c| (c.block_number, c.block_hash));
    let mut keyed = BTreeMap::new();
    for def in changes::keyed_tables() {
        let positions: Vec<usize> = def.keys.iter().map(|k| def.columns.iter().position(|c| c == k).unwrap()).collect();
        let sql = format!("SELECT {} FROM {}", def.columns.join(", "), def.table);
        let mut stmt = conn.prepare(&sql).unwrap();
        let rows = stmt
            .query_map([], |r| (0..def.columns.len()).map(|i| r.get::<_, Value>(i)).collect::<Result<Vec<_>, _>>())
            .unwrap();
        for row in rows {
            let row = row.unwrap();
            let key: Vec<Value> = positions.iter().map(|i| row[*i].clone()).collect();
            keyed.insert((def.table, key_id(&key)), row);
        }
    }
    let mut ledger = BTreeMap::new();
    for t in LEDGER_TABLES {
        let mut stmt = conn.prepare(&format!("SELECT block_number, * FROM {t}")).unwrap();
        let rows = stmt
            .query_map([], |r| {
                let n = r.as_ref().column_count();
                Ok((r.get::<_, i64>(0)? as u64, (1..n).map(|i| r.get::<_, Value>(i)).collect::<Result<Vec<_>, _>>()?))
            })
            .unwrap();
        for row in rows {
            let (block, values) = row.unwrap();
            ledger.insert((t, key_id(&values)), block);
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    Snapshot { seq, cursor, keyed, ledger, entries }
}

/// What the watcher saw.
#[derive(Debug, Default)]
struct Seen {
    /// Pairs of snapshots compared.
    checks: u64,
    /// Pairs exactly one entry apart.
    single: u64,
    /// Entries by kind.
    kinds: BTreeMap<&'static str, u64>,
    /// Projection rows that changed between snapshots.
    changed_rows: u64,
}

/// Checks that `next`'s entries name every difference from `prev`.
fn check(prev: &Snapshot, next: &Snapshot, seen: &mut Seen) {
    let entries = &next.entries;
    assert_eq!(entries.last().map_or(prev.seq, |e| e.seq), next.seq, "entries end at the snapshot's position");
    seen.checks += 1;
    seen.single += u64::from(entries.len() == 1);
    for e in entries {
        *seen.kinds.entry(e.kind.as_str()).or_default() += 1;
    }
    let replaced = entries.iter().any(|e| e.kind == ChangeKind::Replace);
    let named: BTreeSet<RowId> = entries.iter().flat_map(|e| &e.keys).map(|k| (k.table, key_id(&k.key))).collect();
    let differing: BTreeSet<&RowId> = prev
        .keyed
        .iter()
        .filter(|(id, row)| next.keyed.get(*id) != Some(*row))
        .map(|(id, _)| id)
        .chain(next.keyed.keys().filter(|id| !prev.keyed.contains_key(*id)))
        .collect();
    seen.changed_rows += differing.len() as u64;
    if !replaced {
        let missing: Vec<&&RowId> = differing.iter().filter(|id| !named.contains(**id)).collect();
        assert!(missing.is_empty(), "rows changed by entries {:?} but not named by them: {missing:?}", seqs(entries));
    }
    // Ledger rows appear or go only in the entries' block ranges.
    let covered = |block: u64| {
        entries.iter().any(|e| match e.kind {
            ChangeKind::Apply => e.from_block.is_none_or(|f| block > f) && block <= e.to_block,
            ChangeKind::Unwind | ChangeKind::Clear => block > e.to_block,
            ChangeKind::Replace => true,
        })
    };
    for (id, block) in prev.ledger.iter().filter(|(id, _)| !next.ledger.contains_key(*id)) {
        assert!(covered(*block), "ledger row {id:?} of block {block} gone outside entries {:?}", seqs(entries));
    }
    for (id, block) in next.ledger.iter().filter(|(id, _)| !prev.ledger.contains_key(*id)) {
        assert!(covered(*block), "ledger row {id:?} of block {block} added outside entries {:?}", seqs(entries));
    }
    // The newest entry of a commit that moved the cursor carries it.
    if let Some(last) = entries.last().filter(|e| matches!(e.kind, ChangeKind::Apply | ChangeKind::Unwind)) {
        assert_eq!(next.cursor, Some((last.to_block, last.block_hash)), "entry {} names the cursor", last.seq);
    }
}

fn seqs(entries: &[Change]) -> Vec<(u64, &'static str)> {
    entries.iter().map(|e| (e.seq, e.kind.as_str())).collect()
}

/// Snapshots the store and checks every pair until stopped; returns the last snapshot and what
/// it saw.
fn watch(db: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Snapshot, Seen)> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        while Store::open_readonly(&db).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut prev = snapshot(&db, 0);
        check(
            &Snapshot { seq: 0, cursor: None, keyed: BTreeMap::new(), ledger: BTreeMap::new(), entries: vec![] },
            &prev,
            &mut seen,
        );
        loop {
            let done = stop.load(Ordering::Acquire);
            let next = snapshot(&db, prev.seq);
            check(&prev, &next, &mut seen);
            prev = next;
            if done {
                return (prev, seen);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_log_names_every_row_changed_by_backfill_live_blocks_reorgs_and_replay() {
    let net = TestNet::start().await;
    let (workers, sessions) = two_workers(&net).await;
    // Blocks before the follower starts are backfilled in one transaction.
    let first = submit(&net, &sessions[0], b256(1)).await;
    ack_and_complete(&net, &workers[0], first).await;
    let db = net.dir.path().join("live.db");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(db.clone(), stop.clone());
    let follower = Follower::start(net.profile(), &db);
    let mut completed = vec![first];
    for depth in 1..=5u64 {
        blocks_to_replace(&net, &workers, &sessions, &mut completed, depth, 10).await;
        let (n, h) = head(&net).await;
        assert!(indexing::wait_for(&db, n, h, Duration::from_secs(30)).await, "caught up before reorg {depth}");
        reorg_to_other_branch(&net, &sessions, depth).await;
        let (n, h) = head(&net).await;
        assert!(indexing::wait_for(&db, n, h, Duration::from_secs(30)).await, "followed reorg of depth {depth}");
    }
    let summary = follower.finish().await;
    assert!(summary.reorgs >= 5, "{summary:?}");
    stop.store(true, Ordering::Release);
    let (last, seen) = watcher.join().expect("watcher");
    assert!(seen.kinds.get("apply").copied().unwrap_or(0) > 10, "{seen:?}");
    assert!(seen.kinds.get("unwind").copied().unwrap_or(0) >= 5, "{seen:?}");
    // Many snapshots were one commit apart: the check held commit by commit.
    assert!(seen.single > 10, "{seen:?}");
    assert!(seen.changed_rows > 50, "{seen:?}");

    // replay --write: rows changed behind the writer's back (no entry) are put right in one
    // transaction with a `replace` entry.
    {
        let conn = Store::connect(&db).unwrap();
        conn.execute("UPDATE workers SET offense_count = offense_count + 7", []).unwrap();
        conn.execute("DELETE FROM rollups_hourly", []).unwrap();
    }
    let tampered = snapshot(&db, last.seq);
    let report = lcw_indexer::replay::replay(&db, true).unwrap();
    assert!(report.written, "{report:?}");
    let replayed = snapshot(&db, tampered.seq);
    assert_eq!(seqs(&replayed.entries), vec![(tampered.seq + 1, "replace")]);
    let mut seen = Seen::default();
    check(&tampered, &replayed, &mut seen);
    assert!(seen.changed_rows > 0);
    // And the store is back to what the log described before the tampering.
    assert!(last.keyed == replayed.keyed, "replay --write restores the projections");
}
