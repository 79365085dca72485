//! Sortition as the store has it: the session requests of every SessionManager AIConfig has
//! published (`session_requests`, written by the indexer from SessionRequested, SessionClaimed
//! and SessionReady), worker capabilities, the sortition parameters in force, and the managers
//! the indexer follows. Read by the worker (what to claim), the CLI and the GraphQL API.
//!
//! A request's stored status is what the events say (OPEN, CLAIMED, READY). Expiry is not an
//! event: [`RequestRow::expired_at`] derives it from the expiry and a chain time, as
//! `SessionManager.getRequest` does.

use std::collections::HashMap;

use alloy::primitives::{Address, B256, U256};
use rusqlite::ToSql;

use super::col;
use super::ledger::current_params;
use super::sql::{Db, Query, Row};
use super::{StoreError, StoreResult};

/// A request's status as the events leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Requested, not claimed yet.
    Open,
    /// Claimed by a worker; the consumer has not provided the key yet.
    Claimed,
    /// The session was adopted by JobRegistry.
    Ready,
}

impl RequestStatus {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Open => "OPEN",
            RequestStatus::Claimed => "CLAIMED",
            RequestStatus::Ready => "READY",
        }
    }

    /// From the column value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OPEN" => Some(RequestStatus::Open),
            "CLAIMED" => Some(RequestStatus::Claimed),
            "READY" => Some(RequestStatus::Ready),
            _ => None,
        }
    }
}

/// A request's status at a given chain time: the stored status, or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Open and unexpired: claimable.
    Open,
    /// Claimed and unexpired: waiting for the consumer's key.
    Claimed,
    /// Adopted as a session.
    Ready,
    /// Not ready by its expiry: it can no longer be claimed or made ready.
    Expired,
}

/// A session request, as the store has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    /// The SessionManager.
    pub manager: Address,
    /// Request id (per manager).
    pub req_id: u64,
    /// The consumer.
    pub user: Address,
    /// The model requested.
    pub model_id: B256,
    /// Block of the request.
    pub request_block: u64,
    /// Hash of that block: the draw's seed.
    pub seed: B256,
    /// Timestamp of that block.
    pub requested_at: u64,
    /// Unix time after which it can no longer be claimed or made ready.
    pub expiry: u64,
    /// Capability bits the claimer must have (0: none).
    pub required_caps: U256,
    /// Status as the events leave it.
    pub status: RequestStatus,
    /// The claimer.
    pub worker: Option<Address>,
    /// Block of the claim.
    pub claimed_block: Option<u64>,
    /// Timestamp of that block.
    pub claimed_at: Option<u64>,
    /// The claim transaction.
    pub claim_tx: Option<B256>,
    /// The session JobRegistry adopted.
    pub session_id: Option<u64>,
    /// Block of SessionReady.
    pub ready_block: Option<u64>,
}

impl RequestRow {
    /// Whether the request is expired at `chain_time`: not ready, and past its expiry (the
    /// contract refuses claims and keys once `block.timestamp > expiry`).
    pub fn expired_at(&self, chain_time: u64) -> bool {
        self.status != RequestStatus::Ready && chain_time > self.expiry
    }

    /// The status at `chain_time`.
    pub fn state_at(&self, chain_time: u64) -> RequestState {
        if self.expired_at(chain_time) {
            return RequestState::Expired;
        }
        match self.status {
            RequestStatus::Open => RequestState::Open,
            RequestStatus::Claimed => RequestState::Claimed,
            RequestStatus::Ready => RequestState::Ready,
        }
    }
}

// `user` is quoted: a reserved word in PostgreSQL.
const COLUMNS: &str = "manager, req_id, \"user\", model_id, request_block, request_block_hash, requested_at, expiry, \
                       required_caps, status, worker, claimed_block, claimed_at, claim_tx, session_id, ready_block";

/// One row; an unknown status is corruption naming the request.
fn read_row(r: &dyn Row) -> StoreResult<RequestRow> {
    let manager: Address = col::get(r, 0)?;
    let req_id: u64 = col::get(r, 1)?;
    let status: String = col::get(r, 9)?;
    let Some(status) = RequestStatus::parse(&status) else {
        return Err(StoreError::Corrupt {
            what: format!("session_requests status of request {req_id} of {manager}"),
            value: status,
        });
    };
    Ok(RequestRow {
        manager,
        req_id,
        user: col::get(r, 2)?,
        model_id: col::get(r, 3)?,
        request_block: col::get(r, 4)?,
        seed: col::get(r, 5)?,
        requested_at: col::get(r, 6)?,
        expiry: col::get(r, 7)?,
        required_caps: col::get(r, 8)?,
        status,
        worker: col::get(r, 10)?,
        claimed_block: col::get(r, 11)?,
        claimed_at: col::get(r, 12)?,
        claim_tx: col::get(r, 13)?,
        session_id: col::get(r, 14)?,
        ready_block: col::get(r, 15)?,
    })
}

/// The sortition parameters in force (their latest AIConfig change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortitionState {
    /// AIConfig.getSortitionEnabled.
    pub enabled: bool,
    /// The SessionManager AIConfig publishes (None: none, or the zero address).
    pub manager: Option<Address>,
    /// Blocks over which the claim window widens.
    pub claim_window_blocks: U256,
    /// Active jobs a worker may hold and still claim.
    pub max_concurrent_jobs: U256,
    /// The stake the draw is weighted against.
    pub min_worker_stake: U256,
}

/// The sortition parameters in force. AIConfig emits every parameter at construction, so a store
/// indexed from the deployment block has them all; one it has never seen is
/// [`StoreError::MissingParam`] (a missing manager is `None`: none was published).
pub fn sortition_state(conn: &dyn Db) -> StoreResult<SortitionState> {
    let params: HashMap<String, String> = current_params(conn)?.into_iter().collect();
    let get = |name: &str| params.get(name).ok_or_else(|| StoreError::MissingParam(name.to_owned()));
    let corrupt = |name: &str, v: &str| StoreError::Corrupt { what: format!("config_history {name}"), value: v.into() };
    let amount = |name: &str| -> StoreResult<U256> {
        let v = get(name)?;
        U256::from_str_radix(v, 10).map_err(|_| corrupt(name, v))
    };
    let enabled = match get("sortitionEnabled")?.as_str() {
        "true" => true,
        "false" => false,
        other => return Err(corrupt("sortitionEnabled", other)),
    };
    let manager = match params.get("sessionManager") {
        Some(v) => Some(v.parse::<Address>().map_err(|_| corrupt("sessionManager", v))?).filter(|a| !a.is_zero()),
        None => None,
    };
    Ok(SortitionState {
        enabled,
        manager,
        claim_window_blocks: amount("claimWindowBlocks")?,
        max_concurrent_jobs: amount("maxConcurrentJobs")?,
        min_worker_stake: amount("minWorkerStake")?,
    })
}

/// The SessionManager AIConfig publishes now (None: none, or the zero address).
pub fn current_manager(conn: &dyn Db) -> StoreResult<Option<Address>> {
    let value: Option<String> = conn.one(
        "SELECT value FROM config_history WHERE param = 'sessionManager' ORDER BY block_number DESC, log_index DESC LIMIT 1",
        &[],
        |r| Ok(col::get(r, 0)?),
    )?;
    match value {
        Some(v) => Ok(Some(
            v.parse::<Address>()
                .map_err(|_| StoreError::Corrupt { what: "config_history sessionManager".into(), value: v })?,
        )
        .filter(|a| !a.is_zero())),
        None => Ok(None),
    }
}

/// Open requests of `manager`, oldest first (expired ones included: see
/// [`RequestRow::expired_at`]).
pub fn open_requests(conn: &dyn Db, manager: Address) -> StoreResult<Vec<RequestRow>> {
    let sql = format!("SELECT {COLUMNS} FROM session_requests WHERE manager = ?1 AND status = 'OPEN' ORDER BY req_id");
    conn.all(&sql, &[&manager.as_slice()], read_row)
}

/// Open requests of `manager` for `model`, oldest first.
pub fn open_requests_for_model(conn: &dyn Db, manager: Address, model: B256) -> StoreResult<Vec<RequestRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM session_requests WHERE manager = ?1 AND model_id = ?2 AND status = 'OPEN' ORDER BY req_id"
    );
    conn.all(&sql, &[&manager.as_slice(), &model.as_slice()], read_row)
}

/// The request `req_id` of `manager`.
pub fn request(conn: &dyn Db, manager: Address, req_id: u64) -> StoreResult<Option<RequestRow>> {
    let sql = format!("SELECT {COLUMNS} FROM session_requests WHERE manager = ?1 AND req_id = ?2");
    conn.one(&sql, &[&manager.as_slice(), &(req_id as i64)], read_row)
}

/// Requests of `manager` claimed (and possibly ready since) in `from_block` or later, in claim
/// order.
pub fn claimed_since(conn: &dyn Db, manager: Address, from_block: u64) -> StoreResult<Vec<RequestRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM session_requests
         WHERE manager = ?1 AND claimed_block >= ?2 AND claimed_block IS NOT NULL ORDER BY claimed_block, req_id"
    );
    conn.all(&sql, &[&manager.as_slice(), &(from_block.min(i64::MAX as u64) as i64)], read_row)
}

/// The `limit` most recent requests `worker` claimed (of any manager), newest request first.
pub fn claimed_by(conn: &dyn Db, worker: Address, limit: usize) -> StoreResult<Vec<RequestRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM session_requests
         WHERE worker = ?1 AND worker IS NOT NULL ORDER BY request_block DESC, manager DESC, req_id DESC LIMIT ?2"
    );
    conn.all(&sql, &[&worker.as_slice(), &(limit.min(i64::MAX as usize) as i64)], read_row)
}

/// A worker's capability bits (0 for a worker the store never saw, as the contract answers).
pub fn worker_capabilities(conn: &dyn Db, worker: Address) -> StoreResult<U256> {
    let mask = conn.one("SELECT capabilities FROM workers WHERE address = ?1", &[&worker.as_slice()], |r| {
        Ok(col::get::<U256>(r, 0)?)
    })?;
    Ok(mask.unwrap_or(U256::ZERO))
}

/// The registered capabilities: (bit, name), by bit.
pub fn capability_names(conn: &dyn Db) -> StoreResult<Vec<(u8, String)>> {
    conn.all("SELECT bit, name FROM capabilities ORDER BY bit", &[], |r| {
        let (bit, name) = (col::get::<u64>(r, 0)?, col::get::<String>(r, 1)?);
        let bit = u8::try_from(bit).map_err(|_| StoreError::Corrupt {
            what: format!("capabilities bit of {name:?}"),
            value: bit.to_string(),
        })?;
        Ok((bit, name))
    })
}

/// `meta` key: the first block whose SessionManager logs the store holds, for a store indexed
/// before it followed SessionManagers (absent: every block from the start block).
pub const MANAGER_LOGS_FROM: &str = "session_manager_logs_from";

/// Every SessionManager AIConfig has published (the zero address excluded), with the block of
/// its first publication, in that order.
pub fn managers(conn: &dyn Db) -> StoreResult<Vec<(Address, u64)>> {
    let rows = conn.all(
        "SELECT value, min(block_number) AS first FROM config_history WHERE param = 'sessionManager'
         GROUP BY value ORDER BY first, value",
        &[],
        |r| Ok((col::get::<String>(r, 0)?, col::get::<u64>(r, 1)?)),
    )?;
    let mut out = Vec::new();
    for (value, block) in rows {
        let address: Address = value
            .parse()
            .map_err(|_| StoreError::Corrupt { what: "config_history sessionManager".into(), value: value.clone() })?;
        if !address.is_zero() {
            out.push((address, block));
        }
    }
    Ok(out)
}

/// The first block whose SessionManager logs the store holds, when it was indexed before it
/// followed SessionManagers (see [`MANAGER_LOGS_FROM`]).
pub fn manager_logs_from(conn: &dyn Db) -> StoreResult<Option<u64>> {
    super::meta_get(conn, MANAGER_LOGS_FROM)?
        .map(|v| v.parse().map_err(|_| StoreError::Corrupt { what: format!("meta.{MANAGER_LOGS_FROM}"), value: v }))
        .transpose()
}

/// A request's place in the page order: newest request first (request block, then manager and
/// request id, all descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey {
    /// Block of the request.
    pub request_block: u64,
    /// The manager.
    pub manager: Address,
    /// Request id.
    pub req_id: u64,
}

impl RequestKey {
    /// The key of `row`.
    pub fn of(row: &RequestRow) -> Self {
        RequestKey { request_block: row.request_block, manager: row.manager, req_id: row.req_id }
    }

    /// As a page cursor: `block:manager:id`.
    pub fn cursor(&self) -> String {
        format!("{}:{:#x}:{}", self.request_block, self.manager, self.req_id)
    }

    /// From a page cursor.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split(':');
        let key = RequestKey {
            request_block: parts.next()?.parse().ok()?,
            manager: parts.next()?.parse().ok()?,
            req_id: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(key)
    }
}

/// Which requests a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestQuery {
    /// Of this manager.
    pub manager: Option<Address>,
    /// Claimed by this worker.
    pub worker: Option<Address>,
    /// Made by this consumer.
    pub user: Option<Address>,
    /// For this model.
    pub model: Option<B256>,
    /// In this state at `chain_time`.
    pub state: Option<RequestState>,
    /// The chain time states are derived at.
    pub chain_time: u64,
    /// Keyset cursor: only requests after this one in page order.
    pub after: Option<RequestKey>,
}

/// A page of requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPage {
    /// The requests, newest first.
    pub requests: Vec<RequestRow>,
    /// Cursor for the next page: the last request returned, or the last scanned when the scan
    /// budget ran out first.
    pub end: Option<RequestKey>,
    /// More may follow.
    pub has_more: bool,
}

/// Which index a request page walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestScan {
    /// `session_requests_by_worker`.
    Worker,
    /// `session_requests_by_user`.
    User,
    /// `session_requests_by_block`.
    All,
}

impl RequestQuery {
    /// The index the page walks: the most selective filter that has one.
    pub fn scan(&self) -> RequestScan {
        if self.worker.is_some() {
            RequestScan::Worker
        } else if self.user.is_some() {
            RequestScan::User
        } else {
            RequestScan::All
        }
    }

    fn matches(&self, r: &RequestRow) -> bool {
        self.manager.is_none_or(|m| r.manager == m)
            && self.worker.is_none_or(|w| r.worker == Some(w))
            && self.user.is_none_or(|u| r.user == u)
            && self.model.is_none_or(|m| r.model_id == m)
            && self.state.is_none_or(|s| r.state_at(self.chain_time) == s)
    }
}

/// The SQL of a request page walk (exposed for query-plan tests). Parameters, numbered in this
/// order: the scan key (none for `All`); with `after`, the key to continue after (request block,
/// manager, request id); the number of rows to read at most.
pub fn request_scan_sql(scan: RequestScan, after: bool) -> String {
    // `All` binds no key: PostgreSQL cannot type a parameter that is only tested for NULL.
    let (index, key) = match scan {
        RequestScan::Worker => ("session_requests_by_worker", Some("worker = ?1 AND worker IS NOT NULL")),
        RequestScan::User => ("session_requests_by_user", Some("\"user\" = ?1")),
        RequestScan::All => ("session_requests_by_block", None),
    };
    let mut n = usize::from(key.is_some());
    let mut terms: Vec<String> = key.into_iter().map(str::to_owned).collect();
    if after {
        terms.push(format!("(request_block, manager, req_id) < (?{}, ?{}, ?{})", n + 1, n + 2, n + 3));
        n += 3;
    }
    let filter = if terms.is_empty() { String::new() } else { format!(" WHERE {}", terms.join(" AND ")) };
    format!(
        "SELECT {COLUMNS} FROM session_requests INDEXED BY {index}{filter}
         ORDER BY request_block DESC, manager DESC, req_id DESC LIMIT ?{}",
        n + 1
    )
}

/// A page of at most `limit` requests matching `q`, newest first, scanning at most `budget` rows.
pub fn requests_page(conn: &dyn Db, q: &RequestQuery, limit: usize, budget: usize) -> StoreResult<RequestPage> {
    let scan = q.scan();
    let key = match scan {
        RequestScan::Worker => q.worker,
        RequestScan::User => q.user,
        RequestScan::All => None,
    };
    let key = key.as_ref().map(|k| k.as_slice());
    let after = q.after.as_ref().map(|a| {
        (a.request_block.min(i64::MAX as u64) as i64, a.manager.as_slice(), a.req_id.min(i64::MAX as u64) as i64)
    });
    // The budget (at least one row) and one row past it, which tells whether more follow.
    let rows = budget.max(1).saturating_add(1).min(i64::MAX as usize) as i64;
    let mut params: Vec<&dyn ToSql> = Vec::with_capacity(5);
    if let Some(k) = &key {
        params.push(k);
    }
    if let Some((block, manager, req_id)) = &after {
        params.extend([block as &dyn ToSql, manager, req_id]);
    }
    params.push(&rows);

    let mut requests = Vec::new();
    let mut scanned = 0usize;
    // Set once the budget is spent: the last request scanned.
    let mut spent: Option<RequestKey> = None;
    // Set when the page ends before the rows do: its cursor.
    let mut cut: Option<Option<RequestKey>> = None;
    conn.each(&request_scan_sql(scan, after.is_some()), &params, &mut |r| {
        if spent.is_some() {
            cut = Some(spent);
            return Ok(false);
        }
        let row = read_row(r)?;
        scanned += 1;
        let last_scanned = RequestKey::of(&row);
        if q.matches(&row) {
            if requests.len() == limit {
                cut = Some(requests.last().map(RequestKey::of));
                return Ok(false);
            }
            requests.push(row);
        }
        if scanned >= budget {
            spent = Some(last_scanned);
        }
        Ok(true)
    })?;
    Ok(match (cut, spent) {
        (Some(end), _) => RequestPage { end, requests, has_more: true },
        (None, Some(last)) => RequestPage { end: Some(last), requests, has_more: false },
        (None, None) => RequestPage { end: requests.last().map(RequestKey::of), requests, has_more: false },
    })
}
