//! Sortition in the API: session requests of the SessionManagers (one, or a page), with their
//! status derived at the indexed head's time, and the sortition parameters for `indexerStatus`.

use async_graphql::{Context, Enum, Error, InputObject, Result, SimpleObject};
use lcw_schema::store::StoreError;
use lcw_schema::store::sortition::{self, RequestKey, RequestQuery, RequestRow, RequestState};
use lcw_schema::store::sql::Db as Sql;

use crate::api::{SCAN_BUDGET, db, gql, head_ts, page_size};
use crate::db::ReadError;
use crate::scalars::{Address, BigInt, Bytes32, Timestamp, ts};
use crate::types::PageInfo;

/// A session request's status at the indexed head.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRequestStatus {
    /// Waiting for a claim.
    Open,
    /// Claimed; waiting for the consumer's key.
    Claimed,
    /// Adopted as a session.
    Ready,
    /// Not ready by its expiry (the head's timestamp is past it): it can no longer be claimed or
    /// made ready. No event marks it.
    Expired,
}

impl From<RequestState> for SessionRequestStatus {
    fn from(s: RequestState) -> Self {
        match s {
            RequestState::Open => SessionRequestStatus::Open,
            RequestState::Claimed => SessionRequestStatus::Claimed,
            RequestState::Ready => SessionRequestStatus::Ready,
            RequestState::Expired => SessionRequestStatus::Expired,
        }
    }
}

impl From<SessionRequestStatus> for RequestState {
    fn from(s: SessionRequestStatus) -> Self {
        match s {
            SessionRequestStatus::Open => RequestState::Open,
            SessionRequestStatus::Claimed => RequestState::Claimed,
            SessionRequestStatus::Ready => RequestState::Ready,
            SessionRequestStatus::Expired => RequestState::Expired,
        }
    }
}

/// A session request of a SessionManager.
#[derive(SimpleObject, Debug, Clone)]
pub struct SessionRequest {
    /// The SessionManager.
    pub manager: Address,
    /// Request id (per manager).
    pub req_id: u64,
    /// The consumer.
    pub user: Address,
    pub model_id: Bytes32,
    pub request_block: u64,
    /// The hash of the request's block: the seed of the claim draw.
    pub seed: Bytes32,
    pub requested_at: Timestamp,
    /// After this time it can no longer be claimed or made ready.
    pub expiry: Timestamp,
    /// Capability bits the claimer must have (0: none).
    pub required_caps: BigInt,
    /// At the indexed head (EXPIRED is derived from its timestamp).
    pub status: SessionRequestStatus,
    /// The worker that claimed it.
    pub worker: Option<Address>,
    pub claimed_block: Option<u64>,
    pub claimed_at: Option<Timestamp>,
    pub claim_tx: Option<Bytes32>,
    /// The session JobRegistry adopted for it.
    pub session_id: Option<BigInt>,
    pub ready_block: Option<u64>,
}

impl SessionRequest {
    /// The API view of `row` at `chain_time`.
    pub fn from_row(row: RequestRow, chain_time: u64) -> Self {
        SessionRequest {
            manager: Address(row.manager),
            req_id: row.req_id,
            user: Address(row.user),
            model_id: Bytes32(row.model_id),
            request_block: row.request_block,
            seed: Bytes32(row.seed),
            requested_at: Timestamp(row.requested_at),
            expiry: Timestamp(row.expiry),
            required_caps: BigInt(row.required_caps),
            status: row.state_at(chain_time).into(),
            worker: row.worker.map(Address),
            claimed_block: row.claimed_block,
            claimed_at: ts(row.claimed_at),
            claim_tx: row.claim_tx.map(Bytes32),
            session_id: row.session_id.map(BigInt::from_u64),
            ready_block: row.ready_block,
        }
    }
}

/// A page of session requests.
#[derive(SimpleObject, Debug, Clone)]
pub struct SessionRequestConnection {
    pub nodes: Vec<SessionRequest>,
    pub page_info: PageInfo,
}

/// Which session requests.
#[derive(InputObject, Debug, Clone, Default)]
pub struct SessionRequestFilter {
    /// Of this SessionManager (default: every one AIConfig has published).
    pub manager: Option<Address>,
    /// Claimed by this worker.
    pub worker: Option<Address>,
    /// Made by this consumer.
    pub user: Option<Address>,
    pub model: Option<Bytes32>,
    /// In this status at the indexed head.
    pub status: Option<SessionRequestStatus>,
}

/// Sortition as AIConfig has it at the indexed head.
#[derive(SimpleObject, Debug, Clone)]
pub struct SortitionStatus {
    /// Sessions are assigned by SessionManager's sortition.
    pub enabled: bool,
    /// The SessionManager AIConfig publishes (null: none).
    pub session_manager: Option<Address>,
    /// Blocks over which the claim window widens to every eligible worker.
    pub claim_window_blocks: BigInt,
    /// Active jobs a worker may hold and still claim.
    pub max_concurrent_jobs: BigInt,
}

/// The sortition parameters in force; None when the store has not seen them all (indexing
/// started after AIConfig was configured).
pub(crate) fn status(conn: &dyn Sql) -> Result<Option<SortitionStatus>, ReadError> {
    match sortition::sortition_state(conn) {
        Ok(s) => Ok(Some(SortitionStatus {
            enabled: s.enabled,
            session_manager: s.manager.map(Address),
            claim_window_blocks: BigInt(s.claim_window_blocks),
            max_concurrent_jobs: BigInt(s.max_concurrent_jobs),
        })),
        Err(StoreError::MissingParam(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `sessionRequest`: one request, of `manager` or of the SessionManager AIConfig publishes now.
pub(crate) async fn one(ctx: &Context<'_>, manager: Option<Address>, req_id: u64) -> Result<Option<SessionRequest>> {
    db(ctx)?
        .read(move |conn| {
            let manager = match manager {
                Some(m) => m.0,
                None => match sortition::current_manager(conn)? {
                    Some(m) => m,
                    None => return Ok(None),
                },
            };
            let now = head_ts(conn)?;
            Ok(sortition::request(conn, manager, req_id)?.map(|r| SessionRequest::from_row(r, now)))
        })
        .await
        .map_err(gql)
}

/// `sessionRequests`: a page, newest request first.
pub(crate) async fn page(
    ctx: &Context<'_>,
    filter: Option<SessionRequestFilter>,
    first: i32,
    after: Option<String>,
) -> Result<SessionRequestConnection> {
    let limit = page_size(first)?;
    let f = filter.unwrap_or_default();
    let after = after
        .map(|a| {
            RequestKey::parse(&a).ok_or_else(|| {
                Error::new(format!("bad cursor {a:?} for sessionRequests: pass the endCursor of the previous page"))
            })
        })
        .transpose()?;
    db(ctx)?
        .read(move |conn| {
            let q = RequestQuery {
                manager: f.manager.map(|m| m.0),
                worker: f.worker.map(|w| w.0),
                user: f.user.map(|u| u.0),
                model: f.model.map(|m| m.0),
                state: f.status.map(RequestState::from),
                chain_time: head_ts(conn)?,
                after,
            };
            let page = sortition::requests_page(conn, &q, limit, SCAN_BUDGET)?;
            Ok(SessionRequestConnection {
                nodes: page.requests.into_iter().map(|r| SessionRequest::from_row(r, q.chain_time)).collect(),
                page_info: PageInfo { end_cursor: page.end.map(|k| k.cursor()), has_next_page: page.has_more },
            })
        })
        .await
        .map_err(gql)
}
