//! Reads for people and dashboards (the GraphQL API): pages of jobs and workers, timelines,
//! models, slashes, rollups over time ranges, status counters.
//!
//! Every read is bounded: pages walk an index in key order (keyset pagination, never OFFSET) and
//! stop after `limit` matches or `budget` scanned rows, whichever comes first; time ranges are
//! turned into key ranges before any scan. `EXPLAIN QUERY PLAN` of each statement is checked by
//! the queries crate's tests.
//!
//! Each read runs on any [`Db`]: the statements are SQLite's and run unchanged on the PostgreSQL
//! replica, except the wei sums of [`earnings`], written per engine.

use alloy::primitives::{Address, B256, U256};

use super::StoreResult;
use super::col;
use super::ledger::config_u64;
use super::raw::{LOG_COLUMNS, RawLog};
use super::rows::{JobRow, ModelRow, RollupRow, WorkerRow};
use super::sql::{Db, Dialect, Query, Shifted};
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

/// The condition a statement without a key puts on its key parameter ?1, always NULL there: it
/// keeps the parameters numbered as in the keyed form, and the cast gives the parameter a type
/// PostgreSQL can plan with (a bare `?1 IS NULL` leaves it unknown there).
const NO_KEY: &str = "CAST(?1 AS INTEGER) IS NULL";

/// The SQL of a job page walk (exposed for query-plan tests). Parameters: ?1 the scan key (NULL
/// for `All`), ?2 lowest id (inclusive), ?3 highest id (inclusive), ?4 the most rows the walk
/// reads (its scan budget and one more): SQLite stops where the reader stops anyway, and
/// PostgreSQL, which sends a statement's whole answer, sends no more than that.
pub fn job_scan_sql(scan: JobScan, descending: bool) -> String {
    let cols = JobRow::COLUMNS.join(", ");
    let (index, key) = match scan {
        JobScan::Worker => ("INDEXED BY jobs_by_worker", "worker = ?1"),
        JobScan::Session => ("INDEXED BY jobs_by_session", "session_id = ?1"),
        JobScan::Model => ("INDEXED BY jobs_by_model", "model_id = ?1"),
        JobScan::All => ("", NO_KEY),
    };
    let order = if descending { "DESC" } else { "ASC" };
    format!("SELECT {cols} FROM jobs {index} WHERE {key} AND job_id BETWEEN ?2 AND ?3 ORDER BY job_id {order} LIMIT ?4")
}

/// The lowest job id submitted at or after `ts` (ids grow with submission time); `None` when no
/// job was.
pub fn first_job_submitted_at_or_after(conn: &dyn Db, ts: u64) -> StoreResult<Option<u64>> {
    conn.one(
        "SELECT job_id FROM jobs WHERE submitted_at >= ?1 ORDER BY submitted_at, job_id LIMIT 1",
        &[&(ts.min(i64::MAX as u64) as i64)],
        |r| Ok(col::get::<u64>(r, 0)?),
    )
}

/// A page of at most `limit` jobs matching `q`, scanning at most `budget` rows of the index.
pub fn jobs_page(conn: &dyn Db, q: &JobQuery, limit: usize, budget: usize) -> StoreResult<JobPage> {
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
    let key: rusqlite::types::Value = match scan {
        JobScan::Worker => q.worker.map(|w| w.to_vec()).into(),
        JobScan::Session => q.session.map(|s| s as i64).into(),
        JobScan::Model => q.model.map(|m| m.to_vec()).into(),
        JobScan::All => rusqlite::types::Value::Null,
    };
    let mut jobs: Vec<JobRow> = Vec::new();
    let mut scanned = 0usize;
    // Set when the scan stops early: (cursor, more follow).
    let mut stopped: Option<(Option<u64>, bool)> = None;
    // The last id scanned once the budget ran out; the row after it, if any, only says more follow.
    let mut out_of_budget: Option<u64> = None;
    // At most `budget` rows are scanned, and one more tells whether more follow. When the index
    // walked is the only filter, every row it yields matches: the page then needs `limit` rows and
    // one more. (PostgreSQL sends every row a statement allows, where SQLite stops when the
    // reader does: a bound above what the page can use makes the replica send thousands of rows
    // per page.)
    let filters = usize::from(q.worker.is_some()) + usize::from(q.model.is_some()) + usize::from(q.session.is_some());
    let every_row_matches = q.states.is_empty() && filters <= 1;
    let rows = if every_row_matches { limit.min(budget) } else { budget };
    let most = rows.saturating_add(1).min(i64::MAX as usize) as i64;
    conn.each(&sql, &[&key, &(lo as i64), &(hi as i64), &most], &mut |r| {
        if let Some(last) = out_of_budget {
            stopped = Some((Some(last), true));
            return Ok(false);
        }
        let job = JobRow::from_row(r)?;
        scanned += 1;
        let id = job.job_id;
        let matches = q.worker.is_none_or(|w| job.worker == w)
            && q.model.is_none_or(|m| job.model_id == Some(m))
            && q.session.is_none_or(|s| job.session_id == s)
            && (q.states.is_empty() || q.states.iter().any(|s| s.as_str() == job.state));
        if matches {
            if jobs.len() == limit {
                // One more match exists: the page is full and another follows.
                stopped = Some((jobs.last().map(|j| j.job_id), true));
                return Ok(false);
            }
            jobs.push(job);
        }
        if scanned >= budget {
            // Out of budget: hand back what was found and a cursor past what was scanned.
            out_of_budget = Some(id);
        }
        Ok(true)
    })?;
    let (end, has_more) = match (stopped, out_of_budget) {
        (Some(stop), _) => stop,
        (None, Some(last)) => (Some(last), false),
        (None, None) => (jobs.last().map(|j| j.job_id), false),
    };
    Ok(JobPage { jobs, end, has_more })
}

/// One job as the API shows it ([`job_view`]).
#[derive(Debug, Clone)]
pub struct JobView {
    /// Its row.
    pub row: JobRow,
    /// The dispute window in force at its release block (None while unreleased, or when no
    /// change of the window is indexed at or before that block).
    pub release_window: Option<u64>,
    /// Its logs in chain order, when asked for.
    pub timeline: Option<Vec<RawLog>>,
}

/// The statement of [`job_view`].
pub fn job_view_sql(timeline: bool) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let [alone, with_logs] = SQL.get_or_init(|| {
        let job: Vec<String> = JobRow::COLUMNS.iter().map(|c| format!("j.{c}")).collect();
        let select = format!(
            "SELECT {}, (SELECT w.value FROM config_history w WHERE w.param = 'disputeWindow' \
             AND w.block_number <= j.released_block ORDER BY w.block_number DESC, w.log_index DESC LIMIT 1)",
            job.join(", ")
        );
        let logs: Vec<String> = LOG_COLUMNS.split(',').map(|c| format!("l.{}", c.trim())).collect();
        // `l.job_id IS NOT NULL` repeats the partial index's condition (as `RawLog::of_job`).
        [
            format!("{select} FROM jobs j WHERE j.job_id = ?1"),
            format!(
                "{select}, {} FROM jobs j LEFT JOIN logs l ON l.job_id = ?1 AND l.job_id IS NOT NULL \
                 WHERE j.job_id = ?1 ORDER BY l.block_number, l.log_index",
                logs.join(", ")
            ),
        ]
    });
    if timeline { with_logs } else { alone }
}

/// The job `id` with the dispute window in force at its release and, when `timeline`, its logs,
/// in one statement: one round trip on PostgreSQL where reading them apart takes three.
pub fn job_view(conn: &dyn Db, id: u64, timeline: bool) -> StoreResult<Option<JobView>> {
    let columns = JobRow::COLUMNS.len();
    let mut view: Option<JobView> = None;
    conn.each(job_view_sql(timeline), &[&(id.min(i64::MAX as u64) as i64)], &mut |r| {
        if view.is_none() {
            let row = JobRow::from_row(r)?;
            let release_window = match (row.released_block, col::get::<Option<String>>(r, columns)?) {
                (Some(block), Some(value)) => Some(config_u64("disputeWindow", block, value)?),
                _ => None,
            };
            view = Some(JobView { row, release_window, timeline: timeline.then(Vec::new) });
        }
        // A job without logs comes back once, with NULL log columns (block_number is NOT NULL).
        if let Some(logs) = view.as_mut().and_then(|v| v.timeline.as_mut())
            && col::get::<Option<u64>>(r, columns + 1)?.is_some()
        {
            logs.push(RawLog::from_row(&Shifted { row: r, by: columns + 1 })?);
        }
        Ok(true)
    })?;
    Ok(view)
}

/// A page of workers in address order, after `after`, at most `limit`.
pub fn workers_page(
    conn: &dyn Db,
    after: Option<Address>,
    registered_only: bool,
    limit: usize,
) -> StoreResult<(Vec<WorkerRow>, bool)> {
    let cols = WorkerRow::COLUMNS.join(", ");
    let sql = format!(
        "SELECT {cols} FROM workers WHERE address > ?1 AND (?2 = 0 OR registered = TRUE) ORDER BY address LIMIT ?3"
    );
    let start = after.map(|a| a.to_vec()).unwrap_or_default();
    let mut rows =
        conn.all(&sql, &[&start, &(registered_only as i64), &((limit + 1) as i64)], |r| Ok(WorkerRow::from_row(r)?))?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, more))
}

/// Models, with how many registered workers serve each.
pub fn models(conn: &dyn Db) -> StoreResult<Vec<(ModelRow, u64)>> {
    let cols: Vec<String> = ModelRow::COLUMNS.iter().map(|c| format!("m.{c}")).collect();
    let sql = format!(
        "SELECT {}, (SELECT count(*) FROM worker_models wm JOIN workers w ON w.address = wm.worker
                     WHERE wm.model_id = m.model_id AND w.registered = TRUE)
         FROM models m ORDER BY m.model_id",
        cols.join(", ")
    );
    let n = ModelRow::COLUMNS.len();
    conn.all(&sql, &[], |r| Ok((ModelRow::from_row(r)?, col::get::<u64>(r, n)?)))
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
pub fn slashes_of(conn: &dyn Db, worker: &Address, limit: usize) -> StoreResult<Vec<SlashRow>> {
    conn.all(
        "SELECT block_number, block_timestamp, amount_wei, new_stake_wei, job_id, reason, tx_hash FROM slashes
         WHERE worker = ?1 ORDER BY block_number DESC, log_index DESC LIMIT ?2",
        &[&worker.as_slice(), &(limit as i64)],
        |r| {
            Ok(SlashRow {
                block: col::get(r, 0)?,
                time: col::get(r, 1)?,
                amount: col::get(r, 2)?,
                new_stake: col::get(r, 3)?,
                job_id: col::get(r, 4)?,
                reason: col::get(r, 5)?,
                tx: col::get(r, 6)?,
            })
        },
    )
}

/// Hourly rollup rows with `from <= hour < to`, of one worker and/or model or all, in hour order.
/// Each row: (hour, rollup).
pub fn rollups(
    conn: &dyn Db,
    worker: Option<&Address>,
    model: Option<&B256>,
    from: u64,
    to: u64,
) -> StoreResult<Vec<RollupRow>> {
    let cols = RollupRow::COLUMNS.join(", ");
    let (sql, key): (String, Option<Vec<u8>>) = match worker {
        Some(w) => (
            format!(
                "SELECT {cols} FROM rollups_hourly INDEXED BY rollups_by_worker
                 WHERE worker = ?1 AND hour >= ?2 AND hour < ?3 ORDER BY hour"
            ),
            Some(w.to_vec()),
        ),
        None => (
            format!("SELECT {cols} FROM rollups_hourly WHERE {NO_KEY} AND hour >= ?2 AND hour < ?3 ORDER BY hour"),
            None,
        ),
    };
    let mut rows = Vec::new();
    conn.each(&sql, &[&key, &(from.min(i64::MAX as u64) as i64), &(to.min(i64::MAX as u64) as i64)], &mut |r| {
        let row = RollupRow::from_row(r)?;
        if model.is_none_or(|m| row.model_id == *m) {
            rows.push(row);
        }
        Ok(true)
    })?;
    Ok(rows)
}

/// The store's counters for status: (decoded and undecodable events, jobs, workers).
pub fn counts(conn: &dyn Db) -> StoreResult<(u64, u64, u64)> {
    // Each statement aggregates, so it answers exactly one row.
    let one = |sql: &str| -> StoreResult<u64> { Ok(conn.one(sql, &[], |r| Ok(col::get::<u64>(r, 0)?))?.unwrap_or(0)) };
    // PostgreSQL sums bigints as numeric: cast back.
    let events = one("SELECT CAST(coalesce(sum(count), 0) AS INTEGER) FROM event_counts")?;
    let jobs = one("SELECT coalesce(max(job_id), 0) FROM jobs")?;
    let workers = one("SELECT count(*) FROM workers")?;
    Ok((events, jobs, workers))
}

/// Jobs touched by logs in blocks `from < block <= to` (subscriptions), of one worker or all,
/// at most `limit`, in chain order.
pub fn jobs_touched(
    conn: &dyn Db,
    from: u64,
    to: u64,
    worker: Option<&Address>,
    limit: usize,
) -> StoreResult<Vec<JobRow>> {
    // Each job once, in the order of its first log in the window. Deduplicated here rather than
    // by DISTINCT: PostgreSQL refuses a DISTINCT ordered by columns it does not select.
    let mut seen = std::collections::HashSet::new();
    let mut ids: Vec<u64> = Vec::new();
    conn.each(
        "SELECT job_id FROM logs WHERE block_number > ?1 AND block_number <= ?2 AND job_id IS NOT NULL
         ORDER BY block_number, log_index",
        &[&(from.min(i64::MAX as u64) as i64), &(to.min(i64::MAX as u64) as i64)],
        &mut |r| {
            let id = col::get::<u64>(r, 0)?;
            if seen.insert(id) {
                ids.push(id);
            }
            Ok(true)
        },
    )?;
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
pub fn cursor_updated_at(conn: &dyn Db) -> StoreResult<u64> {
    Ok(conn
        .one("SELECT updated_at FROM cursor WHERE id = 1", &[], |r| Ok(col::get::<u64>(r, 0)?))?
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

/// Earnings per bucket of `step` seconds with `from <= hour < to`, summed exactly by the engine.
///
/// SQLite holds wei as decimal TEXT: each string is split into its digits above and below 10^9,
/// both halves are summed as 64-bit integers (no overflow for any realistic range) and recombined
/// here. PostgreSQL holds them as numeric, which it sums exactly as they are.
pub fn earnings(
    conn: &dyn Db,
    worker: Option<&Address>,
    from: u64,
    to: u64,
    step: u64,
) -> StoreResult<Vec<EarningsRow>> {
    let dialect = conn.dialect();
    let mut cols = String::new();
    for c in EARNINGS_COLUMNS.iter().filter(|c| !c.is_empty()) {
        match dialect {
            Dialect::Sqlite => cols.push_str(&format!(
                ", sum(CAST(substr({c}, 1, length({c}) - 9) AS INTEGER)), sum(CAST(substr({c}, -9) AS INTEGER))"
            )),
            Dialect::Postgres => cols.push_str(&format!(", sum({c})")),
        }
    }
    let (index, key) = match worker {
        Some(_) => ("INDEXED BY rollups_by_worker", "worker = ?1"),
        None => ("", NO_KEY),
    };
    let sql = format!(
        "SELECT (hour / ?4) * ?4 AS bucket, CAST(sum(released) AS INTEGER){cols} FROM rollups_hourly {index}
         WHERE {key} AND hour >= ?2 AND hour < ?3 GROUP BY bucket ORDER BY bucket"
    );
    let billion = U256::from(1_000_000_000u64);
    conn.all(
        &sql,
        &[
            &worker.map(|w| w.to_vec()),
            &(from.min(i64::MAX as u64) as i64),
            &(to.min(i64::MAX as u64) as i64),
            &(step.max(1) as i64),
        ],
        |r| {
            let mut sums = [U256::ZERO; 7];
            for (i, s) in sums.iter_mut().enumerate() {
                // SUM over a bucket whose column is NULL in every row is NULL: nothing earned.
                *s = match dialect {
                    Dialect::Sqlite => {
                        let hi = col::get::<Option<i64>>(r, 2 + 2 * i)?.unwrap_or(0);
                        let lo = col::get::<Option<i64>>(r, 3 + 2 * i)?.unwrap_or(0);
                        U256::from(hi.max(0) as u64) * billion + U256::from(lo.max(0) as u64)
                    }
                    Dialect::Postgres => col::get::<Option<U256>>(r, 2 + i)?.unwrap_or(U256::ZERO),
                };
            }
            Ok(EarningsRow { start: col::get(r, 0)?, released: col::get(r, 1)?, sums })
        },
    )
}
