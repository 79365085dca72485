//! The worker's record of the jobs it refused (`worker_refusals`, written by the worker alone),
//! with the step that refused each and why. See `V11__worker_refusals.sql`.

use std::collections::BTreeMap;

use alloy::primitives::Address;
use rusqlite::{Connection, params};

use super::sql::{Db, Query, Row};
use super::{StoreResult, col, unix_now};

/// One refused job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// Job id.
    pub job_id: u64,
    /// What refused it (`prompt`, `key`, `model`, `ack`, `deadline`, `funds`, `deregistered`, ...).
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

/// A job of the worker's that timed out before it was acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    /// Job id.
    pub job_id: u64,
    /// Unix seconds of its submission block.
    pub submitted_at: u64,
    /// Its ack deadline (unix s): the submission plus the ack timeout in force at its block
    /// (the indexer clears the job's deadline column once it times out). None when the store
    /// never saw the ack timeout.
    pub deadline: Option<u64>,
    /// The block of its `JobTimedOut`.
    pub timed_out_block: u64,
}

/// Jobs of `worker` that timed out in a block above `after_block`, never acked, and with no
/// refusal recorded, oldest timeout first: the caller tells whether lcw was not running at the
/// deadline or the store showed the job too late.
pub fn missed(conn: &dyn Db, worker: Address, after_block: u64) -> StoreResult<Vec<Missed>> {
    let rows = conn.all(
        "SELECT j.job_id, j.submitted_block, j.submitted_at, j.timed_out_block FROM jobs j
         WHERE j.worker = ?1 AND j.timed_out_block > ?2 AND j.acknowledged_block IS NULL
           AND NOT EXISTS (SELECT 1 FROM worker_refusals r WHERE r.worker = j.worker AND r.job_id = j.job_id)
         ORDER BY j.timed_out_block, j.job_id",
        &[&worker.as_slice(), &(after_block.min(i64::MAX as u64) as i64)],
        |r| Ok((col::get::<u64>(r, 0)?, col::get::<u64>(r, 1)?, col::get::<u64>(r, 2)?, col::get::<u64>(r, 3)?)),
    )?;
    rows.into_iter()
        .map(|(job_id, block, submitted_at, timed_out_block)| {
            let timeout = super::ledger::config_u64_as_of(conn, "ackTimeout", block)?;
            Ok(Missed {
                job_id,
                submitted_at,
                deadline: timeout.map(|t| submitted_at.saturating_add(t)),
                timed_out_block,
            })
        })
        .collect()
}

impl Refusal {
    /// The step as one of the worker's step names (`other` for one this version does not know).
    pub fn step_name(&self) -> &'static str {
        STEPS.iter().find(|s| **s == self.step).copied().unwrap_or("other")
    }
}

/// The steps the worker refuses at.
pub const STEPS: [&str; 12] = [
    "model",
    "key",
    "prompt",
    "ack",
    "deadline",
    "funds",
    "llm",
    "node",
    "session",
    "offline",
    "deregistered",
    "other",
];

/// The refusal of `job` by `worker`, if there is one.
pub fn get(conn: &dyn Db, worker: Address, job: u64) -> StoreResult<Option<Refusal>> {
    conn.one(
        "SELECT job_id, step, reason, final, acked, first_at, updated_at FROM worker_refusals
         WHERE worker = ?1 AND job_id = ?2",
        &[&worker.as_slice(), &(job as i64)],
        refusal_of,
    )
}

fn refusal_of(r: &dyn Row) -> StoreResult<Refusal> {
    Ok(Refusal {
        job_id: col::get(r, 0)?,
        step: col::get(r, 1)?,
        reason: col::get(r, 2)?,
        last: col::get(r, 3)?,
        acked: col::get(r, 4)?,
        first_at: col::get(r, 5)?,
        updated_at: col::get(r, 6)?,
    })
}

/// The latest `limit` refusals of `worker`, newest first.
pub fn recent(conn: &dyn Db, worker: Address, limit: usize) -> StoreResult<Vec<Refusal>> {
    conn.all(
        "SELECT job_id, step, reason, final, acked, first_at, updated_at FROM worker_refusals
         WHERE worker = ?1 ORDER BY updated_at DESC, job_id DESC LIMIT ?2",
        &[&worker.as_slice(), &(limit.min(i64::MAX as usize) as i64)],
        refusal_of,
    )
}

/// Refused jobs by worker and step (`final` ones only: jobs this worker will not serve), for
/// metrics.
pub fn counts(conn: &dyn Db) -> StoreResult<BTreeMap<(Address, String), u64>> {
    let rows = conn.all(
        "SELECT worker, step, count(*) FROM worker_refusals WHERE final = 1 GROUP BY worker, step",
        &[],
        |r| Ok(((col::get::<Address>(r, 0)?, col::get::<String>(r, 1)?), col::get::<u64>(r, 2)?)),
    )?;
    Ok(rows.into_iter().collect())
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

    #[test]
    fn missed_jobs_are_the_unacked_timeouts_with_no_refusal_and_their_ack_deadline() {
        let (_dir, conn) = store();
        let (w, other) = (Address::repeat_byte(7), Address::repeat_byte(8));
        // The ack timeout as the chain set it: 20 s from block 1, 50 s from block 40.
        for (block, value) in [(1, "20"), (40, "50")] {
            conn.execute(
                "INSERT INTO config_history (block_number, log_index, param, value, block_timestamp)
                 VALUES (?1, 0, 'ackTimeout', ?2, 0)",
                params![block, value],
            )
            .unwrap();
        }
        // As the indexer leaves them: a timed-out job's deadline column is cleared.
        // job, worker, acked, submitted in block, at, timed out in block
        let jobs: [(u64, Address, bool, u64, u64, Option<u64>); 6] = [
            (1, w, false, 10, 980, Some(20)), // missed
            (2, w, true, 10, 980, Some(21)),  // acked: timed out at completion
            (3, w, false, 10, 980, None),     // still open
            (4, other, false, 10, 980, Some(22)),
            (5, w, false, 45, 2_000, Some(60)), // missed, under the later timeout
            (6, w, false, 10, 980, Some(24)),   // refused already
        ];
        for (job, worker, acked, block, at, timed_out) in jobs {
            conn.execute(
                "INSERT INTO jobs (job_id, session_id, worker, state, deadline, submitted_block, submitted_at,
                     submit_tx, acknowledged_block, timed_out_block, updated_block)
                 VALUES (?1, 1, ?2, 'TIMED_OUT', NULL, ?3, ?4, x'00', ?5, ?6, 30)",
                params![
                    job as i64,
                    worker.as_slice(),
                    block as i64,
                    at as i64,
                    acked.then_some(12i64),
                    timed_out.map(|b| b as i64)
                ],
            )
            .unwrap();
        }
        put(&conn, w, 6, "llm", "the LLM server is down", false, false).unwrap();
        let m = missed(&conn, w, 0).unwrap();
        assert_eq!(
            m,
            vec![
                Missed { job_id: 1, submitted_at: 980, deadline: Some(1_000), timed_out_block: 20 },
                Missed { job_id: 5, submitted_at: 2_000, deadline: Some(2_050), timed_out_block: 60 },
            ]
        );
        assert_eq!(missed(&conn, w, 20).unwrap().iter().map(|m| m.job_id).collect::<Vec<_>>(), [5]);
    }
}
