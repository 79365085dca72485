//! A worker's obligations as the store has them: open jobs, governance parameters in force, the
//! worker's row. Read by the settler, the exit commands and the GraphQL API, which feed them to
//! the pure rules in [`crate::rules`].

use alloy::primitives::{Address, B256, U256};
use rusqlite::{Connection, OptionalExtension};

use super::ledger::current_params;
use super::{StoreError, StoreResult};
use crate::rules::exit::ExitPlan;
use crate::rules::schedule::{ChainClock, OpenJob, Params};
use crate::types::JobState;

const OPEN_JOBS: &str = "SELECT j.job_id, j.worker, j.state, j.fee_wei, j.deadline, j.completed_at, j.disputed_at,
        j.guilty, coalesce(s.status, 'ACTIVE')
    FROM jobs j LEFT JOIN sessions s ON s.session_id = j.session_id
    WHERE j.state NOT IN ('RELEASED', 'TIMED_OUT')";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<OpenJob> {
    let state: String = r.get(2)?;
    let fee: Option<String> = r.get(3)?;
    let status: String = r.get(8)?;
    Ok(OpenJob {
        job_id: r.get::<_, i64>(0)? as u64,
        worker: Address::from_slice(&r.get::<_, Vec<u8>>(1)?),
        state: JobState::parse(&state).unwrap_or(JobState::Submitted),
        fee: fee.and_then(|f| f.parse().ok()).unwrap_or(U256::ZERO),
        deadline: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        completed_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        disputed_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        guilty: r.get::<_, Option<i64>>(7)?.map(|v| v != 0),
        session_active: status == "ACTIVE",
    })
}

/// Open jobs (not released, not timed out), of one worker or of all.
pub fn open_jobs(conn: &Connection, worker: Option<Address>) -> StoreResult<Vec<OpenJob>> {
    let rows = match worker {
        Some(w) => {
            let mut stmt = conn.prepare_cached(&format!("{OPEN_JOBS} AND j.worker = ?1"))?;
            stmt.query_map([w.as_slice()], row_to_job)?.collect::<Result<Vec<_>, _>>()?
        }
        None => {
            let mut stmt = conn.prepare_cached(OPEN_JOBS)?;
            stmt.query_map([], row_to_job)?.collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

/// Governance parameters in force as the store has them. Fails when the store has not seen the
/// dispute window (indexing started after AIConfig was configured): pass `fallback` read from
/// the chain for what is missing.
pub fn params(conn: &Connection, fallback: Option<&Params>) -> StoreResult<Params> {
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
pub fn worker(conn: &Connection, address: Address) -> StoreResult<Option<WorkerView>> {
    Ok(conn
        .query_row(
            "SELECT registered, stake_wei, active_jobs, balance_wei, suspended_until FROM workers WHERE address = ?1",
            [address.as_slice()],
            |r| {
                let stake: String = r.get(1)?;
                let balance: String = r.get(3)?;
                Ok(WorkerView {
                    registered: r.get::<_, i64>(0)? != 0,
                    stake: stake.parse().unwrap_or_default(),
                    active_jobs: r.get::<_, i64>(2)? as u64,
                    balance: balance.parse().unwrap_or_default(),
                    suspended_until: r.get::<_, i64>(4)? as u64,
                })
            },
        )
        .optional()?)
}

/// The store's cursor block (0 when empty).
pub fn cursor(conn: &Connection) -> StoreResult<u64> {
    Ok(super::raw::Cursor::get(conn)?.map(|c| c.block_number).unwrap_or(0))
}

/// Whether the operator drained `worker` (`lcw drain`; the flag lives in `operator_state`).
pub fn drained(conn: &Connection, worker: Address) -> StoreResult<bool> {
    Ok(super::operator::drained_since(conn, worker)?.is_some())
}

/// The chain clock as the store knows it: the cursor block and the gaps between the most
/// recent consecutive blocks before it.
pub fn store_clock(conn: &Connection) -> StoreResult<ChainClock> {
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
    conn: &Connection,
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
    /// The session's status (`ACTIVE`, `REASSIGNING`, `CLOSED`).
    pub session_status: Option<String>,
}

/// Jobs of `worker` in state `Submitted` or `Acknowledged`, oldest first (served by `jobs_open`).
pub fn assignments(conn: &Connection, worker: Address) -> StoreResult<Vec<Assignment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT j.job_id, j.session_id, j.state, j.deadline, j.submitted_block, j.submitted_at, j.acknowledged_at,
                s.model_id, s.enc_worker_key, s.key_updated_block, s.status
         FROM jobs j LEFT JOIN sessions s ON s.session_id = j.session_id
         WHERE j.worker = ?1 AND j.state IN ('SUBMITTED', 'ACKNOWLEDGED')
         ORDER BY j.job_id",
    )?;
    let rows = stmt.query_map([worker.as_slice()], |r| {
        let state: String = r.get(2)?;
        Ok(Assignment {
            job_id: r.get::<_, i64>(0)? as u64,
            session_id: r.get::<_, i64>(1)? as u64,
            state: JobState::parse(&state).unwrap_or(JobState::Submitted),
            deadline: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
            submitted_block: r.get::<_, i64>(4)? as u64,
            submitted_at: r.get::<_, i64>(5)? as u64,
            acknowledged_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            model_id: r.get::<_, Option<Vec<u8>>>(7)?.filter(|b| b.len() == 32).map(|b| B256::from_slice(&b)),
            enc_worker_key: r.get(8)?,
            key_updated_block: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
            session_status: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
