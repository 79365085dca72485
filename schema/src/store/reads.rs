//! Reads for people and dashboards (the GraphQL API): pages of jobs and workers, timelines,
//! models, slashes, rollups over time ranges, status counters.
//!
//! Every read is bounded: pages walk an index in key order (keyset pagination, never OFFSET) and
//! stop after `limit` matches or `budget` scanned rows, whichever comes first; time ranges are
//! turned into key ranges before any scan. `EXPLAIN QUERY PLAN` of each statement is checked by
//! the queries crate's tests.

use alloy::primitives::{Address, B256, U256};
use rusqlite::{Connection, OptionalExtension};

use super::StoreResult;
use super::col;
use super::rows::{JobRow, ModelRow, WorkerRow};
use crate::types::JobState;

/// Which jobs a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Assigned to this worker.
    pub worker: Option<Address>,
    /// In this session.
    pub session: Option<u64>,
    /// Of this model.
    pub model: Option<B256>,
    /// In one of these states; empty: any.
    pub states: Vec<JobState>,
    /// Submitted at or after (unix s).
    pub submitted_from: Option<u64>,
    /// Submitted before (unix s).
    pub submitted_to: Option<u64>,
    /// Keyset cursor: only jobs after this id in the page order.
    pub after: Option<u64>,
    /// Newest first.
    pub descending: bool,
}

/// A page of jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs, in page order.
    pub jobs: Vec<JobRow>,
    /// Cursor for the next page: the last job returned, or the last id scanned when the scan
    /// budget ran out first.
    pub end: Option<u64>,
    /// More may follow.
    pub has_more: bool,
}

/// Which index a job page walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobScan {
    /// `jobs_by_worker (worker, job_id)`.
    Worker,
    /// `jobs_by_session (session_id, job_id)`.
    Session,
    /// `jobs_by_model (model_id, job_id)`.
    Model,
    /// The primary key.
    All,
}

impl JobQuery {
    /// The index the page walks: the most selective filter that has one.
    pub fn scan(&self) -> JobScan {
        if self.session.is_some() {
            JobScan::Session
        } else if self.worker.is_some() {
            JobScan::Worker
        } else if self.model.is_some() {
            JobScan::Model
        } else {
            JobScan::All
        }
    }
}

/// The SQL of a job page walk (exposed for query-plan tests). Parameters: ?1 the scan key (unused
/// for `All`), ?2 lowest id (inclusive), ?3 highest id (inclusive).
pub fn job_scan_sql(scan: JobScan, descending: bool) -> String {
    let cols = JobRow::COLUMNS.join(", ");
    let (index, key) = match scan {
        JobScan::Worker => ("INDEXED BY jobs_by_worker", "worker = ?1 AND "),
        JobScan::Session => ("INDEXED BY jobs_by_session", "session_id = ?1 AND "),
        JobScan::Model => ("INDEXED BY jobs_by_model", "model_id = ?1 AND "),
        JobScan::All => ("", "?1 IS NULL AND "),
    };
    let order = if descending { "DESC" } else { "ASC" };
    format!("SELECT {cols} FROM jobs {index} WHERE {key}job_id BETWEEN ?2 AND ?3 ORDER BY job_id {order}")
}

/// The lowest job id submitted at or after `ts` (ids grow with submission time); `None` when no
/// job was.
pub fn first_job_submitted_at_or_after(conn: &Connection, ts: u64) -> StoreResult<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT job_id FROM jobs WHERE submitted_at >= ?1 ORDER BY submitted_at, job_id LIMIT 1")?
        .query_row([ts.min(i64::MAX as u64) as i64], |r| col::get::<u64>(r, 0))
        .optional()?)
}

/// A page of at most `limit` jobs matching `q`, scanning at most `budget` rows of the index.
pub fn jobs_page(conn: &Connection, q: &JobQuery, limit: usize, budget: usize) -> StoreResult<JobPage> {
    let empty = JobPage { jobs: Vec::new(), end: None, has_more: false };
    // Key range from the time range and the cursor.
    let mut lo: u64 = 0;
    let mut hi: u64 = i64::MAX as u64;
    if let Some(from) = q.submitted_from {
        match first_job_submitted_at_or_after(conn, from)? {
            Some(id) => lo = id,
            None => return Ok(empty),
        }
    }
    if let Some(to) = q.submitted_to {
        match first_job_submitted_at_or_after(conn, to)? {
            Some(0) => return Ok(empty),
            Some(id) => hi = id - 1,
            None => {}
        }
    }
    if let Some(after) = q.after {
        if q.descending {
            if after == 0 {
                return Ok(empty);
            }
            hi = hi.min(after - 1);
        } else {
            lo = lo.max(after.saturating_add(1));
        }
    }
    if lo > hi {
        return Ok(empty);
    }
    let scan = q.scan();
    let sql = job_scan_sql(scan, q.descending);
    let mut stmt = conn.prepare_cached(&sql)?;
    let key: rusqlite::types::Value = match scan {
        JobScan::Worker => q.worker.map(|w| w.to_vec()).into(),
        JobScan::Session => q.session.map(|s| s as i64).into(),
        JobScan::Model => q.model.map(|m| m.to_vec()).into(),
        JobScan::All => rusqlite::types::Value::Null,
    };
    let mut rows = stmt.query(rusqlite::params![key, lo as i64, hi as i64])?;
    let mut jobs = Vec::new();
    let mut scanned = 0usize;
    while let Some(r) = rows.next()? {
        let job = JobRow::from_row(r)?;
        scanned += 1;
        let last_scanned = Some(job.job_id);
        let matches = q.worker.is_none_or(|w| job.worker == w)
            && q.model.is_none_or(|m| job.model_id == Some(m))
            && q.session.is_none_or(|s| job.session_id == s)
            && (q.states.is_empty() || q.states.iter().any(|s| s.as_str() == job.state));
        if matches {
            if jobs.len() == limit {
                // One more match exists: the page is full and another follows.
                return Ok(JobPage { end: jobs.last().map(|j: &JobRow| j.job_id), jobs, has_more: true });
            }
            jobs.push(job);
        }
        if scanned >= budget {
            // Out of budget: hand back what was found and a cursor past what was scanned.
            let more = rows.next()?.is_some();
            return Ok(JobPage { end: last_scanned, jobs, has_more: more });
        }
    }
    Ok(JobPage { end: jobs.last().map(|j| j.job_id), jobs, has_more: false })
}

/// A page of workers in address order, after `after`, at most `limit`.
pub fn workers_page(
    conn: &Connection,
    after: Option<Address>,
    registered_only: bool,
    limit: usize,
) -> StoreResult<(Vec<WorkerRow>, bool)> {
    let cols = WorkerRow::COLUMNS.join(", ");
    let sql = format!(
        "SELECT {cols} FROM workers WHERE address > ?1 AND (?2 = 0 OR registered = 1) ORDER BY address LIMIT ?3"
    );
    let start = after.map(|a| a.to_vec()).unwrap_or_default();
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows: Vec<WorkerRow> = stmt
        .query_map(rusqlite::params![start, registered_only as i64, (limit + 1) as i64], |r| WorkerRow::from_row(r))?
        .collect::<Result<_, _>>()?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, more))
}

/// Models, with how many registered workers serve each.
pub fn models(conn: &Connection) -> StoreResult<Vec<(ModelRow, u64)>> {
    let cols: Vec<String> = ModelRow::COLUMNS.iter().map(|c| format!("m.{c}")).collect();
    let sql = format!(
        "SELECT {}, (SELECT count(*) FROM worker_models wm JOIN workers w ON w.address = wm.worker
                     WHERE wm.model_id = m.model_id AND w.registered = 1)
         FROM models m ORDER BY m.model_id",
        cols.join(", ")
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let n = ModelRow::COLUMNS.len();
    let rows =
        stmt.query_map([], |r| Ok((ModelRow::from_row(r)?, col::get::<u64>(r, n)?)))?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A slash as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashRow {
    /// Block.
    pub block: u64,
    /// Block time.
    pub time: u64,
    /// Amount.
    pub amount: U256,
    /// Stake after it.
    pub new_stake: U256,
    /// The job that caused it.
    pub job_id: Option<u64>,
    /// Why.
    pub reason: String,
    /// Transaction.
    pub tx: B256,
}

/// A worker's most recent slashes, newest first.
pub fn slashes_of(conn: &Connection, worker: &Address, limit: usize) -> StoreResult<Vec<SlashRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT block_number, block_timestamp, amount_wei, new_stake_wei, job_id, reason, tx_hash FROM slashes
         WHERE worker = ?1 ORDER BY block_number DESC, log_index DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![worker.as_slice(), limit as i64], |r| {
            Ok(SlashRow {
                block: col::get(r, 0)?,
                time: col::get(r, 1)?,
                amount: col::get(r, 2)?,
                new_stake: col::get(r, 3)?,
                job_id: col::get(r, 4)?,
                reason: col::get(r, 5)?,
                tx: col::get(r, 6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Hourly rollup rows with `from <= hour < to`, of one worker and/or model or all, in hour order.
/// Each row: (hour, rollup).
pub fn rollups(
    conn: &Connection,
    worker: Option<&Address>,
    model: Option<&B256>,
    from: u64,
    to: u64,
) -> StoreResult<Vec<super::rows::RollupRow>> {
    let cols = super::rows::RollupRow::COLUMNS.join(", ");
    let (sql, key): (String, Option<Vec<u8>>) = match worker {
        Some(w) => (
            format!(
                "SELECT {cols} FROM rollups_hourly INDEXED BY rollups_by_worker
                 WHERE worker = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour"
            ),
            Some(w.to_vec()),
        ),
        None => (
            format!("SELECT {cols} FROM rollups_hourly WHERE ?1 IS NULL AND hour >= ?2 AND hour < ?3 ORDER BY hour"),
            None,
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params![key, from.min(i64::MAX as u64) as i64, to.min(i64::MAX as u64) as i64], |r| {
            super::rows::RollupRow::from_row(r)
        })?
        .filter(|r| match (r, model) {
            (Ok(row), Some(m)) => row.model_id == *m,
            _ => true,
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The store's counters for status: (decoded and undecodable events, jobs, workers).
pub fn counts(conn: &Connection) -> StoreResult<(u64, u64, u64)> {
    let events: i64 =
        conn.prepare_cached("SELECT coalesce(sum(count), 0) FROM event_counts")?.query_row([], |r| r.get(0))?;
    let jobs: i64 = conn.prepare_cached("SELECT coalesce(max(job_id), 0) FROM jobs")?.query_row([], |r| r.get(0))?;
    let workers: i64 = conn.prepare_cached("SELECT count(*) FROM workers")?.query_row([], |r| r.get(0))?;
    Ok((events as u64, jobs as u64, workers as u64))
}

/// Jobs touched by logs in blocks `from < block <= to` (subscriptions), of one worker or all,
/// at most `limit`, in chain order.
pub fn jobs_touched(
    conn: &Connection,
    from: u64,
    to: u64,
    worker: Option<&Address>,
    limit: usize,
) -> StoreResult<Vec<JobRow>> {
    let mut ids_stmt = conn.prepare_cached(
        "SELECT DISTINCT job_id FROM logs WHERE block_number > ?1 AND block_number <= ?2 AND job_id IS NOT NULL
         ORDER BY block_number, log_index",
    )?;
    let ids: Vec<u64> = ids_stmt
        .query_map([from.min(i64::MAX as u64) as i64, to.min(i64::MAX as u64) as i64], |r| col::get::<u64>(r, 0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for id in ids {
        if out.len() == limit {
            break;
        }
        if let Some(j) = JobRow::get(conn, id)?
            && worker.is_none_or(|w| j.worker == *w)
        {
            out.push(j);
        }
    }
    Ok(out)
}

/// Wall-clock time (unix s) of the indexer's last commit; 0 for an empty store.
pub fn cursor_updated_at(conn: &Connection) -> StoreResult<u64> {
    Ok(conn
        .prepare_cached("SELECT updated_at FROM cursor WHERE id = 1")?
        .query_row([], |r| col::get::<u64>(r, 0))
        .optional()?
        // No cursor row: the indexer has not committed yet.
        .unwrap_or(0))
}

/// Wei columns summed by [`earnings`], in this order.
pub const EARNINGS_COLUMNS: [&str; 8] = [
    "fees_wei",
    "worker_share_wei",
    "protocol_share_wei",
    "fee_pool_share_wei",
    "keeper_bounty_wei",
    "slashed_wei",
    "refunded_wei",
    "",
];

/// One bucket of [`earnings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarningsRow {
    /// Bucket start.
    pub start: u64,
    /// Jobs released.
    pub released: u64,
    /// Sums of [`EARNINGS_COLUMNS`] (all but the last, empty, entry).
    pub sums: [U256; 7],
}

/// Earnings per bucket of `step` seconds with `from <= hour < to`, summed exactly inside SQLite:
/// each decimal wei string is split into its digits above and below 10^9, both halves are summed
/// as 64-bit integers (no overflow for any realistic range) and recombined here.
pub fn earnings(
    conn: &Connection,
    worker: Option<&Address>,
    from: u64,
    to: u64,
    step: u64,
) -> StoreResult<Vec<EarningsRow>> {
    let mut cols = String::new();
    for c in EARNINGS_COLUMNS.iter().filter(|c| !c.is_empty()) {
        cols.push_str(&format!(
            ", sum(CAST(substr({c}, 1, length({c}) - 9) AS INTEGER)), sum(CAST(substr({c}, -9) AS INTEGER))"
        ));
    }
    let (index, key) = match worker {
        Some(_) => ("INDEXED BY rollups_by_worker", "worker = ?1"),
        None => ("", "?1 IS NULL"),
    };
    let sql = format!(
        "SELECT (hour / ?4) * ?4 AS bucket, sum(released){cols} FROM rollups_hourly {index}
         WHERE {key} AND hour >= ?2 AND hour < ?3 GROUP BY bucket ORDER BY bucket"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let billion = U256::from(1_000_000_000u64);
    let rows = stmt
        .query_map(
            rusqlite::params![
                worker.map(|w| w.to_vec()),
                from.min(i64::MAX as u64) as i64,
                to.min(i64::MAX as u64) as i64,
                step.max(1) as i64
            ],
            |r| {
                let mut sums = [U256::ZERO; 7];
                for (i, s) in sums.iter_mut().enumerate() {
                    // SUM over a bucket whose column is NULL in every row is NULL: nothing earned.
                    let hi: i64 = r.get::<_, Option<i64>>(2 + 2 * i)?.unwrap_or(0);
                    let lo: i64 = r.get::<_, Option<i64>>(3 + 2 * i)?.unwrap_or(0);
                    *s = U256::from(hi.max(0) as u64) * billion + U256::from(lo.max(0) as u64);
                }
                Ok(EarningsRow { start: col::get(r, 0)?, released: col::get(r, 1)?, sums })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
