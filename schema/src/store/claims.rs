//! The worker's record of its sortition claims (`worker_claims`, written by the worker alone):
//! what it sent, won, lost, missed or skipped, and why. See `V9__worker_claims.sql`.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256};
use rusqlite::{Connection, params};

use super::sql::{Db, Dialect, Query, Row};
use super::{StoreError, StoreResult, col, unix_now};

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    /// A claim transaction went out.
    Sent,
    /// This worker claimed it.
    Won,
    /// A claim was sent; another worker's landed first.
    Lost,
    /// Another worker took a request this worker was eligible for and did not claim.
    Missed,
    /// Not claimable by this worker at all (model, capabilities, eligibility).
    Skipped,
    /// Nobody claimed it before its expiry.
    Expired,
}

impl ClaimState {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Sent => "sent",
            ClaimState::Won => "won",
            ClaimState::Lost => "lost",
            ClaimState::Missed => "missed",
            ClaimState::Skipped => "skipped",
            ClaimState::Expired => "expired",
        }
    }

    /// Every state.
    pub const ALL: [ClaimState; 6] = [
        ClaimState::Sent,
        ClaimState::Won,
        ClaimState::Lost,
        ClaimState::Missed,
        ClaimState::Skipped,
        ClaimState::Expired,
    ];

    /// Parses a column value; `row` names the row for the corruption an unknown one is.
    pub fn parse(s: &str, row: impl FnOnce() -> String) -> StoreResult<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt { what: format!("worker_claims.state of {}", row()), value: s.into() })
    }

    /// Whether the outcome is settled (nothing more happens to the request).
    pub fn is_final(self) -> bool {
        !matches!(self, ClaimState::Sent)
    }
}

/// One row of `worker_claims`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    /// The claiming worker.
    pub worker: Address,
    /// The SessionManager.
    pub manager: Address,
    /// Request id.
    pub req_id: u64,
    /// Requested model.
    pub model_id: B256,
    /// Block of the request.
    pub request_block: u64,
    /// First block the claim could succeed, when known.
    pub first_block: Option<u64>,
    /// Where it stands.
    pub state: ClaimState,
    /// Why it was skipped or missed.
    pub reason: Option<String>,
    /// Head when the claim went out.
    pub sent_block: Option<u64>,
    /// The claim transaction.
    pub claim_tx: Option<B256>,
    /// Who claimed it.
    pub winner: Option<Address>,
    /// Block of the SessionClaimed.
    pub claimed_block: Option<u64>,
}

/// Inserts or replaces the row of (worker, manager, req_id).
pub fn put(conn: &Connection, row: &ClaimRow) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO worker_claims (worker, manager, req_id, model_id, request_block, first_block, state, reason,
                                    sent_block, claim_tx, winner, claimed_block, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (worker, manager, req_id) DO UPDATE SET
            first_block = excluded.first_block, state = excluded.state, reason = excluded.reason,
            sent_block = excluded.sent_block, claim_tx = excluded.claim_tx, winner = excluded.winner,
            claimed_block = excluded.claimed_block, updated_at = excluded.updated_at",
    )?
    .execute(params![
        row.worker.as_slice(),
        row.manager.as_slice(),
        row.req_id as i64,
        row.model_id.as_slice(),
        row.request_block as i64,
        row.first_block.map(|b| b as i64),
        row.state.as_str(),
        row.reason,
        row.sent_block.map(|b| b as i64),
        row.claim_tx.as_ref().map(|h| h.as_slice().to_vec()),
        row.winner.as_ref().map(|a| a.as_slice().to_vec()),
        row.claimed_block.map(|b| b as i64),
        unix_now() as i64,
    ])?;
    Ok(())
}

/// One row; an unknown state is corruption naming the row.
fn row(r: &dyn Row) -> StoreResult<ClaimRow> {
    let mut row = ClaimRow {
        worker: col::get(r, 0)?,
        manager: col::get(r, 1)?,
        req_id: col::get(r, 2)?,
        model_id: col::get(r, 3)?,
        request_block: col::get(r, 4)?,
        first_block: col::get(r, 5)?,
        state: ClaimState::Sent,
        reason: col::get(r, 7)?,
        sent_block: col::get(r, 8)?,
        claim_tx: col::get(r, 9)?,
        winner: col::get(r, 10)?,
        claimed_block: col::get(r, 11)?,
    };
    let state: String = col::get(r, 6)?;
    row.state = ClaimState::parse(&state, || format!("{} request {} of {}", row.worker, row.req_id, row.manager))?;
    Ok(row)
}

const COLUMNS: &str = "worker, manager, req_id, model_id, request_block, first_block, state, reason, sent_block,
                       claim_tx, winner, claimed_block";

/// The row of one request, if the worker recorded one.
pub fn get(conn: &dyn Db, worker: Address, manager: Address, req_id: u64) -> StoreResult<Option<ClaimRow>> {
    conn.one(
        &format!("SELECT {COLUMNS} FROM worker_claims WHERE worker = ?1 AND manager = ?2 AND req_id = ?3"),
        &[&worker.as_slice(), &manager.as_slice(), &(req_id as i64)],
        row,
    )
}

/// Claims still waiting for their outcome (state `sent`).
pub fn pending(conn: &dyn Db, worker: Address) -> StoreResult<Vec<ClaimRow>> {
    conn.all(
        &format!("SELECT {COLUMNS} FROM worker_claims WHERE worker = ?1 AND state = 'sent' ORDER BY req_id"),
        &[&worker.as_slice()],
        row,
    )
}

/// The newest rows of a worker, newest request first.
pub fn recent(conn: &dyn Db, worker: Address, limit: usize) -> StoreResult<Vec<ClaimRow>> {
    conn.all(
        &format!(
            "SELECT {COLUMNS} FROM worker_claims WHERE worker = ?1 ORDER BY request_block DESC, req_id DESC LIMIT ?2"
        ),
        &[&worker.as_slice(), &(limit.min(i64::MAX as usize) as i64)],
        row,
    )
}

/// Whether `conn` holds `worker_claims`. The PostgreSQL replica does not: the table is local to
/// the machine lcw's worker runs on, so as far as the replica knows no worker of lcw runs, and
/// such a worker has no claims.
fn holds_claims(conn: &dyn Db) -> bool {
    match conn.dialect() {
        Dialect::Sqlite => true,
        Dialect::Postgres => false,
    }
}

/// How many requests of the worker ended in each state (none on the replica, which holds no claims).
pub fn counts(conn: &dyn Db, worker: Address) -> StoreResult<BTreeMap<ClaimState, u64>> {
    if !holds_claims(conn) {
        return Ok(BTreeMap::new());
    }
    let rows = conn.all(
        "SELECT state, count(*) FROM worker_claims WHERE worker = ?1 GROUP BY state",
        &[&worker.as_slice()],
        |r| Ok((ClaimState::parse(&col::get::<String>(r, 0)?, || worker.to_string())?, col::get::<u64>(r, 1)?)),
    )?;
    Ok(rows.into_iter().collect())
}

/// Missed requests by reason (drained, busy, late, ...); none on the replica, which holds no claims.
pub fn missed_by_reason(conn: &dyn Db, worker: Address) -> StoreResult<BTreeMap<String, u64>> {
    if !holds_claims(conn) {
        return Ok(BTreeMap::new());
    }
    let rows = conn.all(
        "SELECT coalesce(reason, 'late'), count(*) FROM worker_claims WHERE worker = ?1 AND state = 'missed'
         GROUP BY 1",
        &[&worker.as_slice()],
        |r| Ok((col::get::<String>(r, 0)?, col::get::<u64>(r, 1)?)),
    )?;
    Ok(rows.into_iter().collect())
}

/// Every worker's outcomes: (worker, state, count), for metrics.
pub fn counts_all(conn: &dyn Db) -> StoreResult<Vec<(Address, ClaimState, u64)>> {
    conn.all("SELECT worker, state, count(*) FROM worker_claims GROUP BY worker, state ORDER BY 1, 2", &[], |r| {
        let worker = col::get::<Address>(r, 0)?;
        let state = ClaimState::parse(&col::get::<String>(r, 1)?, || worker.to_string())?;
        Ok((worker, state, col::get::<u64>(r, 2)?))
    })
}

/// Every worker's missed requests by reason: (worker, reason, count), for metrics.
pub fn missed_all(conn: &dyn Db) -> StoreResult<Vec<(Address, String, u64)>> {
    conn.all(
        "SELECT worker, coalesce(reason, 'late'), count(*) FROM worker_claims WHERE state = 'missed'
         GROUP BY 1, 2 ORDER BY 1, 2",
        &[],
        |r| Ok((col::get::<Address>(r, 0)?, col::get::<String>(r, 1)?, col::get::<u64>(r, 2)?)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> crate::store::Store {
        let contracts = crate::profile::Contracts {
            worker_registry: Address::repeat_byte(0xa1),
            job_registry: Address::repeat_byte(0xa2),
            ai_config: Address::repeat_byte(0xa3),
        };
        crate::store::Store::open_in_memory(&crate::store::Identity { chain_id: 1, contracts, start_block: 0 })
            .expect("in-memory store")
    }

    fn claim(req: u64, state: ClaimState) -> ClaimRow {
        ClaimRow {
            worker: Address::repeat_byte(1),
            manager: Address::repeat_byte(2),
            req_id: req,
            model_id: B256::repeat_byte(3),
            request_block: 10 + req,
            first_block: Some(12 + req),
            state,
            reason: None,
            sent_block: None,
            claim_tx: None,
            winner: None,
            claimed_block: None,
        }
    }

    #[test]
    fn a_claim_moves_from_sent_to_its_outcome_and_is_counted() {
        let store = store();
        let conn = store.conn();
        let w = Address::repeat_byte(1);
        let m = Address::repeat_byte(2);
        let mut sent = claim(1, ClaimState::Sent);
        sent.sent_block = Some(12);
        sent.claim_tx = Some(B256::repeat_byte(9));
        put(conn, &sent).unwrap();
        put(conn, &ClaimRow { reason: Some("busy".into()), ..claim(2, ClaimState::Missed) }).unwrap();
        put(conn, &claim(3, ClaimState::Missed)).unwrap();
        assert_eq!(pending(conn, w).unwrap(), vec![sent.clone()]);
        let won = ClaimRow { state: ClaimState::Won, winner: Some(w), claimed_block: Some(13), ..sent };
        put(conn, &won).unwrap();
        assert!(pending(conn, w).unwrap().is_empty());
        assert_eq!(get(conn, w, m, 1).unwrap(), Some(won));
        let counts = counts(conn, w).unwrap();
        assert_eq!(counts.get(&ClaimState::Won), Some(&1));
        assert_eq!(counts.get(&ClaimState::Missed), Some(&2));
        let missed = missed_by_reason(conn, w).unwrap();
        assert_eq!(missed.get("busy"), Some(&1));
        assert_eq!(missed.get("late"), Some(&1));
        assert_eq!(recent(conn, w, 2).unwrap().iter().map(|r| r.req_id).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(counts_all(conn).unwrap(), vec![(w, ClaimState::Missed, 2), (w, ClaimState::Won, 1)]);
        assert_eq!(missed_all(conn).unwrap(), vec![(w, "busy".to_owned(), 1), (w, "late".to_owned(), 1)]);
    }

    #[test]
    fn the_replica_holds_no_claims_and_no_drained_flag_and_is_not_asked_for_them() {
        struct Replica;
        impl Db for Replica {
            fn dialect(&self) -> Dialect {
                Dialect::Postgres
            }
            fn each(
                &self,
                sql: &str,
                _: crate::store::sql::Params<'_>,
                _: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>,
            ) -> StoreResult<()> {
                panic!("the replica has no such table: {sql}")
            }
        }
        let w = Address::repeat_byte(1);
        assert!(counts(&Replica, w).unwrap().is_empty());
        assert!(missed_by_reason(&Replica, w).unwrap().is_empty());
        assert_eq!(crate::store::operator::drained_since(&Replica, w).unwrap(), None);
    }

    #[test]
    fn an_unknown_state_is_corruption_naming_the_row_and_the_value() {
        let store = store();
        let conn = store.conn();
        put(conn, &claim(1, ClaimState::Sent)).unwrap();
        // A state the enum does not know, written around the CHECK (an older or foreign writer).
        conn.execute_batch("PRAGMA ignore_check_constraints = ON; UPDATE worker_claims SET state = 'weird'").unwrap();
        let (w, m) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let err = counts(conn, w).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(&format!("worker_claims.state of {w}")) && err.contains("weird"), "{err}");
        let err = recent(conn, w, 5).unwrap_err().to_string();
        assert!(err.contains(&format!("worker_claims.state of {w} request 1 of {m}")), "{err}");
        assert!(err.contains("weird"), "{err}");
        assert!(matches!(counts_all(conn), Err(StoreError::Corrupt { .. })));
    }
}
