//! The worker's record of the jobs it refused (`worker_refusals`, written by the worker alone),
//! with the step that refused each and why. See `V11__worker_refusals.sql`.

use std::collections::BTreeMap;

use alloy::primitives::Address;
use rusqlite::{Connection, params};

use super::{StoreResult, unix_now};

/// One refused job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// Job id.
    pub job_id: u64,
    /// What refused it (`prompt`, `key`, `model`, `ack`, `deadline`, `funds`, ...).
    pub step: String,
    /// Why, for the operator.
    pub reason: String,
    /// The job will not be served by this worker.
    pub last: bool,
    /// It had been acked (a timeout slash follows).
    pub acked: bool,
    /// Unix seconds of the first and the latest refusal.
    pub first_at: u64,
    /// Unix seconds of the latest refusal.
    pub updated_at: u64,
}

/// Records that `worker` refused `job` at `step` because of `reason`. The row is written when it
/// is new or says something new (the step, the reason, finality); a repeat of the same refusal
/// writes nothing.
pub fn put(
    conn: &Connection,
    worker: Address,
    job: u64,
    step: &str,
    reason: &str,
    last: bool,
    acked: bool,
) -> StoreResult<bool> {
    let now = unix_now() as i64;
    let changed = conn.execute(
        "INSERT INTO worker_refusals (worker, job_id, step, reason, final, acked, first_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT (worker, job_id) DO UPDATE SET step = excluded.step, reason = excluded.reason,
             final = excluded.final, acked = max(acked, excluded.acked), updated_at = excluded.updated_at
         WHERE step <> excluded.step OR reason <> excluded.reason OR final <> excluded.final
            OR acked < excluded.acked",
        params![worker.as_slice(), job as i64, step, reason, last, acked, now],
    )?;
    Ok(changed > 0)
}

impl Refusal {
    /// The step as one of the worker's step names (`other` for one this version does not know).
    pub fn step_name(&self) -> &'static str {
        STEPS.iter().find(|s| **s == self.step).copied().unwrap_or("other")
    }
}

/// The steps the worker refuses at.
pub const STEPS: [&str; 10] = ["model", "key", "prompt", "ack", "deadline", "funds", "llm", "node", "session", "other"];

/// The refusal of `job` by `worker`, if there is one.
pub fn get(conn: &Connection, worker: Address, job: u64) -> StoreResult<Option<Refusal>> {
    use rusqlite::OptionalExtension;
    let mut stmt = conn.prepare_cached(
        "SELECT job_id, step, reason, final, acked, first_at, updated_at FROM worker_refusals
         WHERE worker = ?1 AND job_id = ?2",
    )?;
    Ok(stmt.query_row(params![worker.as_slice(), job as i64], refusal_of).optional()?)
}

fn refusal_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Refusal> {
    Ok(Refusal {
        job_id: r.get::<_, i64>(0)? as u64,
        step: r.get(1)?,
        reason: r.get(2)?,
        last: r.get(3)?,
        acked: r.get(4)?,
        first_at: r.get::<_, i64>(5)? as u64,
        updated_at: r.get::<_, i64>(6)? as u64,
    })
}

/// The latest `limit` refusals of `worker`, newest first.
pub fn recent(conn: &Connection, worker: Address, limit: usize) -> StoreResult<Vec<Refusal>> {
    let mut stmt = conn.prepare_cached(
        "SELECT job_id, step, reason, final, acked, first_at, updated_at FROM worker_refusals
         WHERE worker = ?1 ORDER BY updated_at DESC, job_id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![worker.as_slice(), limit as i64], refusal_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Refused jobs by worker and step (`final` ones only: jobs this worker will not serve), for
/// metrics.
pub fn counts(conn: &Connection) -> StoreResult<BTreeMap<(Address, String), u64>> {
    let mut stmt = conn
        .prepare_cached("SELECT worker, step, count(*) FROM worker_refusals WHERE final = 1 GROUP BY worker, step")?;
    let rows = stmt.query_map([], |r| {
        Ok(((Address::from_slice(&r.get::<_, Vec<u8>>(0)?), r.get::<_, String>(1)?), r.get::<_, i64>(2)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("lcw.db");
        let identity = crate::store::Identity {
            chain_id: 31337,
            contracts: crate::profile::Contracts {
                worker_registry: Address::repeat_byte(1),
                job_registry: Address::repeat_byte(2),
                ai_config: Address::repeat_byte(3),
            },
            start_block: 0,
        };
        drop(crate::store::Store::open(&db, &identity).unwrap());
        let conn = crate::store::Store::connect(&db).unwrap();
        (dir, conn)
    }

    #[test]
    fn a_refusal_is_written_once_and_updated_when_it_changes() {
        let (_dir, conn) = store();
        let w = Address::repeat_byte(7);
        assert!(put(&conn, w, 1, "funds", "top up", false, false).unwrap());
        assert!(!put(&conn, w, 1, "funds", "top up", false, false).unwrap(), "a repeat writes nothing");
        assert!(put(&conn, w, 1, "ack", "its ack deadline has passed", true, false).unwrap());
        assert!(put(&conn, w, 2, "prompt", "blob not found; not acked", true, false).unwrap());
        let r = recent(&conn, w, 10).unwrap();
        assert_eq!(r.len(), 2);
        let one = r.iter().find(|r| r.job_id == 1).unwrap();
        assert_eq!((one.step.as_str(), one.last), ("ack", true));
        assert!(recent(&conn, Address::ZERO, 10).unwrap().is_empty());
        let c = counts(&conn).unwrap();
        assert_eq!(c[&(w, "ack".to_owned())], 1);
        assert_eq!(c[&(w, "prompt".to_owned())], 1);
    }
}
