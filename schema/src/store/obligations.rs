//! A worker's obligations as the store has them: open jobs, governance parameters in force, the
//! worker's row. Read by the settler, the exit commands and the GraphQL API, which feed them to
//! the pure rules in [`crate::rules`].

use alloy::primitives::{Address, B256, U256};
use rusqlite::types::ValueRef;

use super::ledger::current_params;
use super::sql::{Db, Query, Row};
use super::{StoreError, StoreResult, col, states};
use crate::rules::exit::ExitPlan;
use crate::rules::schedule::{ChainClock, OpenJob, Params};
use crate::types::{JobState, SessionStatus};

// The state literals match the partial index `jobs_open` (SQLite uses a partial index only when
// the query repeats its WHERE terms literally); they are `JobState::as_str` spellings.
const OPEN_JOBS: &str = "SELECT j.job_id, j.worker, j.state, j.fee_wei, j.deadline, j.completed_at, j.disputed_at,
        j.guilty, j.session_id, s.status
    FROM jobs j LEFT JOIN sessions s ON s.session_id = j.session_id
    WHERE j.state NOT IN ('RELEASED', 'TIMED_OUT')";

/// The amount of wei in column `i`: decimal TEXT in SQLite, numeric in the replica (an integer
/// when it fits i64); an unreadable one is corruption named by `what`.
fn wei(r: &dyn Row, i: usize, what: impl FnOnce() -> String) -> StoreResult<U256> {
    match r.value(i)? {
        ValueRef::Integer(n) => states::wei(what, &n.to_string()),
        _ => states::wei(what, &col::get::<String>(r, i)?),
    }
}

/// One open job; an unknown state or status or an unreadable fee is corruption naming the row.
fn open_job(r: &dyn Row) -> StoreResult<OpenJob> {
    let job_id: u64 = col::get(r, 0)?;
    let session_id: u64 = col::get(r, 8)?;
    Ok(OpenJob {
        job_id,
        worker: col::get(r, 1)?,
        state: states::job_state(job_id, &col::get::<String>(r, 2)?)?,
        // JobSubmitted sets the fee; a job without one has no escrow to release.
        fee: match r.value(3)? {
            ValueRef::Null => U256::ZERO,
            _ => wei(r, 3, || format!("jobs.fee_wei of job {job_id}"))?,
        },
        deadline: col::get(r, 4)?,
        completed_at: col::get(r, 5)?,
        disputed_at: col::get(r, 6)?,
        guilty: col::get(r, 7)?,
        // A job whose session the store has not seen (indexing began after the session was
        // created) is not in a closed session as far as the store knows.
        session_active: match col::get::<Option<String>>(r, 9)? {
            Some(s) => states::session_status(session_id, &s)? == SessionStatus::Active,
            None => true,
        },
    })
}

/// Open jobs (not released, not timed out), of one worker or of all.
pub fn open_jobs(conn: &dyn Db, worker: Option<Address>) -> StoreResult<Vec<OpenJob>> {
    match worker {
        Some(w) => conn.all(&format!("{OPEN_JOBS} AND j.worker = ?1"), &[&w.as_slice()], open_job),
        None => conn.all(OPEN_JOBS, &[], open_job),
    }
}

/// Governance parameters in force as the store has them. Fails when the store has not seen the
/// dispute window (indexing started after AIConfig was configured): pass `fallback` read from
/// the chain for what is missing.
pub fn params(conn: &dyn Db, fallback: Option<&Params>) -> StoreResult<Params> {
    let map: std::collections::HashMap<String, String> = current_params(conn)?.into_iter().collect();
    let num = |name: &str, fb: Option<u64>| -> StoreResult<u64> {
        match map.get(name) {
            Some(v) => {
                v.parse().map_err(|_| StoreError::Corrupt { what: format!("config_history {name}"), value: v.clone() })
            }
            None => fb.ok_or_else(|| StoreError::MissingParam(name.to_owned())),
        }
    };
    Ok(Params {
        dispute_window: num("disputeWindow", fallback.map(|p| p.dispute_window))?,
        resolution_timeout: num("resolutionTimeout", fallback.map(|p| p.resolution_timeout))?,
        worker_fee_bps: num("workerFeeBps", fallback.map(|p| p.worker_fee_bps))?,
        release_bounty_bps: num("releaseBountyBps", fallback.map(|p| p.release_bounty_bps))?,
        timeout_bounty_bps: num("timeoutBountyBps", fallback.map(|p| p.timeout_bounty_bps))?,
        timeout_slash_bps: num("timeoutSlashBps", fallback.map(|p| p.timeout_slash_bps))?,
        completion_timeout_slash_bps: num(
            "completionTimeoutSlashBps",
            fallback.map(|p| p.completion_timeout_slash_bps),
        )?,
        min_worker_stake: match map.get("minWorkerStake") {
            Some(v) => v
                .parse()
                .map_err(|_| StoreError::Corrupt { what: "config_history minWorkerStake".into(), value: v.clone() })?,
            None => {
                fallback.map(|p| p.min_worker_stake).ok_or_else(|| StoreError::MissingParam("minWorkerStake".into()))?
            }
        },
    })
}

/// [`params`] without a fallback: `None` when the store has not seen one of them (readers that
/// can do without, such as the API's release times); corruption is still an error.
pub fn params_if_known(conn: &dyn Db) -> StoreResult<Option<Params>> {
    match params(conn, None) {
        Ok(p) => Ok(Some(p)),
        Err(StoreError::MissingParam(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A worker as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    /// Registered and not deregistered.
    pub registered: bool,
    /// Stake.
    pub stake: U256,
    /// Derived active jobs.
    pub active_jobs: u64,
    /// Derived withdrawable balance.
    pub balance: U256,
    /// Suspended until (0: not).
    pub suspended_until: u64,
}

/// The worker's row, if the store has one.
pub fn worker(conn: &dyn Db, address: Address) -> StoreResult<Option<WorkerView>> {
    conn.one(
        "SELECT registered, stake_wei, active_jobs, balance_wei, suspended_until FROM workers WHERE address = ?1",
        &[&address.as_slice()],
        |r| {
            Ok(WorkerView {
                registered: col::get(r, 0)?,
                stake: wei(r, 1, || format!("workers.stake_wei of {address}"))?,
                active_jobs: col::get(r, 2)?,
                balance: wei(r, 3, || format!("workers.balance_wei of {address}"))?,
                suspended_until: col::get(r, 4)?,
            })
        },
    )
}

/// The store's cursor block (0 when empty).
pub fn cursor(conn: &dyn Db) -> StoreResult<u64> {
    // An empty store has indexed nothing: as far as it knows, the chain is at block 0.
    Ok(super::raw::Cursor::get(conn)?.map(|c| c.block_number).unwrap_or(0))
}

/// Whether the operator drained `worker` (`lcw drain`; the flag lives in `operator_state`).
pub fn drained(conn: &dyn Db, worker: Address) -> StoreResult<bool> {
    Ok(super::operator::drained_since(conn, worker)?.is_some())
}

/// The chain clock as the store knows it: the cursor block and the gaps between the most
/// recent consecutive blocks before it.
pub fn store_clock(conn: &dyn Db) -> StoreResult<ChainClock> {
    let mut clock = ChainClock::default();
    let Some(cursor) = super::raw::Cursor::get(conn)? else { return Ok(clock) };
    for b in super::raw::BlockRow::recent(conn, cursor.block_number, 33)? {
        clock.observe(b.number, b.timestamp);
    }
    if clock.head != cursor.block_number
        && let Some(b) = super::raw::BlockRow::at_or_below(conn, cursor.block_number)?
    {
        clock.observe(cursor.block_number, b.timestamp);
    }
    Ok(clock)
}

/// `worker`'s exit plan from the store (the same rules as `lcw exit-plan`); `clock` is the
/// store's ([`store_clock`]) or the chain's.
pub fn exit_plan(
    conn: &dyn Db,
    worker: Address,
    clock: &ChainClock,
    fallback: Option<&Params>,
) -> StoreResult<ExitPlan> {
    let params = params(conn, fallback)?;
    let jobs = open_jobs(conn, Some(worker))?;
    let view = self::worker(conn, worker)?;
    let drained = drained(conn, worker)?;
    Ok(crate::rules::exit::plan(worker, view.as_ref(), &jobs, &params, clock, drained))
}

/// A job assigned to a worker that still needs the worker: acknowledged or not yet, not
/// completed. What the worker pipeline works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Job id.
    pub job_id: u64,
    /// Session id.
    pub session_id: u64,
    /// `Submitted` (needs an ack) or `Acknowledged` (needs a completion).
    pub state: JobState,
    /// The ack deadline while submitted, the completion deadline once acknowledged (unix s).
    pub deadline: Option<u64>,
    /// Block and time of `JobSubmitted`.
    pub submitted_block: u64,
    /// Unix seconds of the submission block.
    pub submitted_at: u64,
    /// Unix seconds of the acknowledgement block.
    pub acknowledged_at: Option<u64>,
    /// The session's model (bytes32).
    pub model_id: Option<B256>,
    /// The session's session key wrapped for the worker (latest `SessionKeyUpdated` applied).
    pub enc_worker_key: Option<Vec<u8>>,
    /// Block of the last session key update, if any (a key that failed may work after one).
    pub key_updated_block: Option<u64>,
    /// The session's status (`None`: the store has not seen the session).
    pub session_status: Option<SessionStatus>,
}

/// Jobs of `worker` in state `Submitted` or `Acknowledged`, oldest first (served by `jobs_open`).
pub fn assignments(conn: &dyn Db, worker: Address) -> StoreResult<Vec<Assignment>> {
    let sql = "SELECT j.job_id, j.session_id, j.state, j.deadline, j.submitted_block, j.submitted_at,
                      j.acknowledged_at, s.model_id, s.enc_worker_key, s.key_updated_block, s.status
               FROM jobs j LEFT JOIN sessions s ON s.session_id = j.session_id
               WHERE j.worker = ?1 AND j.state IN ('SUBMITTED', 'ACKNOWLEDGED')
               ORDER BY j.job_id";
    conn.all(sql, &[&worker.as_slice()], |r| {
        let job_id: u64 = col::get(r, 0)?;
        let session_id: u64 = col::get(r, 1)?;
        Ok(Assignment {
            job_id,
            session_id,
            state: states::job_state(job_id, &col::get::<String>(r, 2)?)?,
            deadline: col::get(r, 3)?,
            submitted_block: col::get(r, 4)?,
            submitted_at: col::get(r, 5)?,
            acknowledged_at: col::get(r, 6)?,
            model_id: col::get(r, 7)?,
            enc_worker_key: col::get(r, 8)?,
            key_updated_block: col::get(r, 9)?,
            session_status: col::get::<Option<String>>(r, 10)?
                .map(|s| states::session_status(session_id, &s))
                .transpose()?,
        })
    })
}
