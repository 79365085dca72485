//! The root query and subscription types.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alloy::primitives::U256;
use async_graphql::{Context, Error, InputObject, Object, Result, Subscription};
use futures::Stream;
use lcw_schema::rules::latency::Histogram;
use lcw_schema::rules::schedule::{self, Action};
use lcw_schema::store::obligations;
use lcw_schema::store::raw::{BlockRow, Cursor};
use lcw_schema::store::reads::{self, JobQuery};
use lcw_schema::store::rows::{WorkerModelRow, WorkerRow};
use lcw_schema::store::sql::Db as Sql;
use lcw_schema::store::unix_now;
use lcw_schema::types::JobState as StoreState;

use crate::db::{Db, ReadError};
use crate::scalars::{Address, BigInt, Bytes32, Timestamp};
use crate::types::*;

/// Largest page.
pub const MAX_PAGE: i32 = 500;
/// Rows a job page may scan before it returns what it has (with a cursor to continue).
pub const SCAN_BUDGET: usize = 20_000;
/// Most buckets an analytics query returns.
pub const MAX_BUCKETS: u64 = 1_000;
/// Default analytics range: the last 30 days.
const DEFAULT_RANGE: u64 = 30 * 86_400;

/// How the API decides it is ready (the indexer reached the head).
#[derive(Debug, Clone)]
pub enum Readiness {
    /// The chain head as last seen by an indexer or a head watcher in this process; ready when the
    /// cursor is within `confirmations` of it.
    Head {
        /// Node head.
        head: Arc<AtomicU64>,
        /// Blocks the indexer stays behind the head.
        confirmations: u64,
    },
    /// No view of the chain: ready when the cursor block is at most this many seconds old.
    MaxLag(u64),
}

/// What resolvers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store.
    pub db: Arc<Db>,
    /// Readiness rule.
    pub readiness: Readiness,
    /// Commits (cursor block), pushed by the indexer or a cursor watcher.
    pub commits: tokio::sync::watch::Receiver<u64>,
    /// The PostgreSQL replica this process keeps (`lcw run --replica`), for indexerStatus.
    pub replica: Option<Arc<lcw_replica::ReplicaStatus>>,
}

pub(crate) fn state<'a>(ctx: &'a Context<'_>) -> Result<&'a ApiState> {
    ctx.data::<ApiState>()
}

pub(crate) fn db(ctx: &Context<'_>) -> Result<Arc<Db>> {
    Ok(state(ctx)?.db.clone())
}

/// A read error as a GraphQL error.
pub(crate) fn gql(e: ReadError) -> Error {
    Error::new(e.to_string())
}

/// Checks a page size.
pub(crate) fn page_size(first: i32) -> Result<usize> {
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(Error::new(format!("first must be between 1 and {MAX_PAGE} (got {first}); page with `after`")));
    }
    Ok(first as usize)
}

fn parse_cursor(after: Option<String>, what: &str) -> Result<Option<u64>> {
    after
        .map(|a| {
            a.trim().parse::<u64>().map_err(|_| {
                Error::new(format!("bad cursor {a:?} for {what}: pass the endCursor of the previous page"))
            })
        })
        .transpose()
}

/// Which jobs.
#[derive(InputObject, Debug, Clone, Default)]
pub struct JobFilter {
    pub worker: Option<Address>,
    pub session: Option<BigInt>,
    pub model: Option<Bytes32>,
    /// Any of these states.
    pub states: Option<Vec<JobState>>,
    /// Submitted at or after.
    pub submitted_from: Option<Timestamp>,
    /// Submitted before.
    pub submitted_to: Option<Timestamp>,
}

pub(crate) async fn jobs_page(
    ctx: &Context<'_>,
    filter: Option<JobFilter>,
    first: i32,
    after: Option<String>,
    order: JobOrder,
) -> Result<JobConnection> {
    let limit = page_size(first)?;
    let f = filter.unwrap_or_default();
    let q = JobQuery {
        worker: f.worker.map(|a| a.0),
        session: f.session.map(|s| s.as_u64("session")).transpose()?,
        model: f.model.map(|m| m.0),
        states: f.states.unwrap_or_default().into_iter().map(StoreState::from).collect(),
        submitted_from: f.submitted_from.map(|t| t.0),
        submitted_to: f.submitted_to.map(|t| t.0),
        after: parse_cursor(after, "jobs")?,
        descending: order == JobOrder::IdDesc,
    };
    db(ctx)?
        .read(move |conn| {
            let page = reads::jobs_page(conn, &q, limit, SCAN_BUDGET)?;
            let params = obligations::params_if_known(conn)?;
            let nodes = page
                .jobs
                .into_iter()
                .map(|row| Job::build(conn, row, params.as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(JobConnection {
                nodes,
                page_info: PageInfo { end_cursor: page.end.map(|e| e.to_string()), has_next_page: page.has_more },
            })
        })
        .await
        .map_err(gql)
}

pub(crate) async fn exit_plan(ctx: &Context<'_>, worker: Address) -> Result<ExitPlan> {
    let db = db(ctx)?;
    // The plan is a function of the store at its cursor: countdowns polling it reuse it until
    // the next commit.
    let key = worker.0.to_string();
    let pushed = db.pushed.get();
    if let Some(hit) = pushed.and_then(|h| db.exit_plans.get(h.version, &key)) {
        return Ok(hit.as_ref().clone());
    }
    let memo = db.clone();
    db.read(move |conn| {
        let version = match pushed {
            Some(h) => Some(h.version),
            None => crate::db::version(conn)?,
        };
        if let Some(hit) = version.and_then(|v| memo.exit_plans.get(v, &key)) {
            return Ok(hit.as_ref().clone());
        }
        let clock = obligations::store_clock(conn)?;
        let plan = ExitPlan::from(&obligations::exit_plan(conn, worker.0, &clock, None)?);
        if let Some(v) = version {
            memo.exit_plans.put(v, key, Arc::new(plan.clone()));
        }
        Ok(plan)
    })
    .await
    .map_err(gql)
}

fn worker_view(conn: &dyn Sql, row: WorkerRow, head_ts: u64) -> Result<Worker, ReadError> {
    let mut models = Vec::new();
    for id in WorkerModelRow::of_worker(conn, &row.address)? {
        if let Some(m) = lcw_schema::store::rows::ModelRow::get(conn, &id)? {
            models.push(Model::from_row(&m, 0));
        } else {
            models.push(Model {
                id: Bytes32(id),
                name: None,
                whitelisted: false,
                registered: false,
                enabled: false,
                fee: None,
                max_output_tokens: None,
                workers: 0,
            });
        }
    }
    Ok(Worker::from_row(row, models, head_ts))
}

/// The timestamp of the cursor block (0 for an empty store).
pub(crate) fn head_ts(conn: &dyn Sql) -> Result<u64, ReadError> {
    Ok(crate::db::read_head(conn)?.map_or(0, |h| h.timestamp))
}

/// The indexer status as of the store's cursor, with the replica's position: from the follower
/// this process runs, or, for an API that reads a replica, the replica's own cursor.
pub(crate) async fn indexer_status(st: &ApiState) -> Result<IndexerStatus, ReadError> {
    let readiness = st.readiness.clone();
    let mut s = st
        .db
        .read(move |conn| {
            let mut s = status(conn, &readiness)?;
            if conn.dialect() == lcw_schema::store::sql::Dialect::Postgres {
                s.replica = replica_cursor(conn)?;
            }
            Ok(s)
        })
        .await?;
    if let Some(follower) = &st.replica {
        s.replica = Some(ReplicaInfo::of(&follower.get(), unix_now()));
    }
    Ok(s)
}

/// The replica's own cursor, read on the replica (its lag behind the store is not visible there).
fn replica_cursor(conn: &dyn Sql) -> Result<Option<ReplicaInfo>, ReadError> {
    use lcw_schema::store::col;
    use lcw_schema::store::sql::Query;
    Ok(conn.one("SELECT block_number, block_hash, updated_at FROM replica_cursor WHERE id = 1", &[], |r| {
        Ok(ReplicaInfo {
            block: Some(col::get(r, 0)?),
            block_hash: Some(Bytes32(col::get(r, 1)?)),
            updated_at: Some(Timestamp(col::get(r, 2)?)),
            ..ReplicaInfo::default()
        })
    })?)
}

/// The indexer status as of the store's cursor.
pub(crate) fn status(conn: &dyn Sql, readiness: &Readiness) -> Result<IndexerStatus, ReadError> {
    // 0: the store has no identity yet (nothing indexed); chain ids start at 1.
    let identity = lcw_schema::store::chain_id(conn)?.unwrap_or(0);
    let cursor = Cursor::get(conn)?;
    let (events, jobs, workers) = reads::counts(conn)?;
    let (block, hash, finalized, updated_at) = match &cursor {
        Some(c) => (c.block_number, c.block_hash, c.finalized_number, reads::cursor_updated_at(conn)?),
        None => (0, Default::default(), 0, 0),
    };
    let block_time = match &cursor {
        // 0 as in `head_ts`: no block at or below the cursor, or an empty store.
        Some(c) => BlockRow::at_or_below(conn, c.block_number)?.map(|b| b.timestamp).unwrap_or(0),
        None => 0,
    };
    let lag = unix_now().saturating_sub(block_time);
    let ready = cursor.is_some()
        && match readiness {
            Readiness::Head { head, confirmations } => {
                let h = head.load(Ordering::Relaxed);
                h > 0 && block.saturating_add(*confirmations) >= h
            }
            Readiness::MaxLag(max) => lag <= *max,
        };
    Ok(IndexerStatus {
        chain_id: identity,
        block,
        block_hash: Bytes32(hash),
        block_time: Timestamp(block_time),
        finalized_block: finalized,
        updated_at: Timestamp(updated_at),
        lag_seconds: lag,
        ready,
        events,
        jobs,
        workers,
        sortition: crate::sortition::status(conn)?,
        replica: None,
    })
}

/// Validated analytics range: (from, to, bucket seconds), `from` aligned down to the bucket.
fn range(from: Option<Timestamp>, to: Option<Timestamp>, bucket: Bucket, head: u64) -> Result<(u64, u64, u64)> {
    let step = bucket.secs();
    // The head's timestamp is the store's, read from a node: saturating, never overflowing.
    let to = to.map(|t| t.0).unwrap_or_else(|| head.max(unix_now()).saturating_add(1));
    let from = from.map(|t| t.0).unwrap_or_else(|| to.saturating_sub(DEFAULT_RANGE));
    if from >= to {
        return Err(Error::new(format!("from ({from}) must be before to ({to})")));
    }
    let from = from / step * step;
    let buckets = (to - from).div_ceil(step);
    if buckets > MAX_BUCKETS {
        return Err(Error::new(format!(
            "the range covers {buckets} buckets, more than {MAX_BUCKETS}; narrow from/to or use bucket: DAY"
        )));
    }
    Ok((from, to, step))
}

/// The root query.
#[derive(Debug, Default)]
pub struct Query;

#[Object]
impl Query {
    async fn indexer_status(&self, ctx: &Context<'_>) -> Result<IndexerStatus> {
        indexer_status(state(ctx)?).await.map_err(gql)
    }

    async fn job(&self, ctx: &Context<'_>, id: BigInt) -> Result<Option<Job>> {
        let id = id.as_u64("job id")?;
        let with_timeline = ctx.look_ahead().field("timeline").exists();
        db(ctx)?
            .read(move |conn| {
                let Some(view) = reads::job_view(conn, id, with_timeline)? else { return Ok(None) };
                Ok(Some(Job::from_view(conn, view)?))
            })
            .await
            .map_err(gql)
    }

    /// Jobs, newest first by default. `first` is at most 500.
    #[graphql(complexity = "first.clamp(0, 500) as usize * child_complexity")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        filter: Option<JobFilter>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
        #[graphql(default_with = "JobOrder::IdDesc")] order_by: JobOrder,
    ) -> Result<JobConnection> {
        jobs_page(ctx, filter, first, after, order_by).await
    }

    async fn worker(&self, ctx: &Context<'_>, address: Address) -> Result<Option<Worker>> {
        db(ctx)?
            .read(move |conn| {
                let Some(row) = WorkerRow::get(conn, &address.0)? else { return Ok(None) };
                let now = head_ts(conn)?;
                Ok(Some(worker_view(conn, row, now)?))
            })
            .await
            .map_err(gql)
    }

    #[graphql(complexity = "first.clamp(0, 500) as usize * child_complexity")]
    async fn workers(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
        #[graphql(default = false)] registered_only: bool,
    ) -> Result<WorkerConnection> {
        let limit = page_size(first)?;
        let after = after
            .map(|a| {
                a.parse::<alloy::primitives::Address>().map_err(|_| {
                    Error::new(format!("bad cursor {a:?} for workers: pass the endCursor of the previous page"))
                })
            })
            .transpose()?;
        db(ctx)?
            .read(move |conn| {
                let (rows, more) = reads::workers_page(conn, after, registered_only, limit)?;
                let now = head_ts(conn)?;
                let end = rows.last().map(|r| r.address.to_checksum(None));
                let nodes = rows.into_iter().map(|r| worker_view(conn, r, now)).collect::<Result<Vec<_>, _>>()?;
                Ok(WorkerConnection { nodes, page_info: PageInfo { end_cursor: end, has_next_page: more } })
            })
            .await
            .map_err(gql)
    }

    /// The same plan as `lcw exit-plan`, computed from the store at its cursor.
    async fn exit_plan(&self, ctx: &Context<'_>, worker: Address) -> Result<ExitPlan> {
        exit_plan(ctx, worker).await
    }

    /// Open jobs by when they can be released or timed out, soonest first.
    async fn release_queue(
        &self,
        ctx: &Context<'_>,
        worker: Option<Address>,
        #[graphql(default = 50)] first: i32,
    ) -> Result<ReleaseQueue> {
        let limit = page_size(first)?;
        db(ctx)?
            .read(move |conn| {
                let clock = obligations::store_clock(conn)?;
                let params = obligations::params(conn, None)?;
                let jobs = obligations::open_jobs(conn, worker.map(|w| w.0))?;
                let states: BTreeMap<u64, StoreState> = jobs.iter().map(|j| (j.job_id, j.state)).collect();
                let sched = schedule::schedule(&jobs, &params);
                let next_ts = clock.next_ts();
                let due_now = sched.iter().filter(|d| d.at <= next_ts).count() as u64;
                let entries = sched
                    .iter()
                    .take(limit)
                    .map(|d| {
                        // Every entry is one of `jobs`; the fallback only satisfies the type.
                        let state = states.get(&d.job_id).copied().unwrap_or(StoreState::Completed);
                        ReleaseQueueEntry {
                            job_id: BigInt::from_u64(d.job_id),
                            worker: Address(d.worker),
                            action: action_name(d.action).into(),
                            reason: reason_name(d.reason).into(),
                            at: Timestamp(d.at),
                            in_seconds: d.at.saturating_sub(clock.head_ts),
                            fee: BigInt(d.fee),
                            worker_share: BigInt(if d.action == Action::Release {
                                schedule::worker_share(d.fee, &params)
                            } else {
                                U256::ZERO
                            }),
                            keeper_bounty: BigInt(schedule::keeper_bounty(d, state, &params)),
                        }
                    })
                    .collect();
                Ok(ReleaseQueue {
                    head: clock.head,
                    head_time: Timestamp(clock.head_ts),
                    total: sched.len() as u64,
                    due_now,
                    next_at: sched.first().map(|d| Timestamp(d.at)),
                    entries,
                })
            })
            .await
            .map_err(gql)
    }

    async fn dispute_window(&self, ctx: &Context<'_>) -> Result<DisputeWindow> {
        db(ctx)?
            .read(|conn| {
                let history: Vec<DisputeWindowChange> =
                    lcw_schema::store::ledger::config_history_u64(conn, "disputeWindow")?
                        .into_iter()
                        .map(|(block, time, seconds)| DisputeWindowChange { block, time: Timestamp(time), seconds })
                        .collect();
                let last = history.last().cloned();
                Ok(DisputeWindow {
                    // 0 when the store has seen no value (indexing began after AIConfig set it).
                    seconds: last.as_ref().map(|c| c.seconds).unwrap_or(0),
                    since_block: last.as_ref().map(|c| c.block),
                    since: last.as_ref().map(|c| c.time),
                    history,
                })
            })
            .await
            .map_err(gql)
    }

    /// Earnings per hour or UTC day, of one worker or the whole network. Defaults: the last 30
    /// days. At most 1,000 buckets.
    async fn earnings(
        &self,
        ctx: &Context<'_>,
        worker: Option<Address>,
        #[graphql(default_with = "Bucket::Day")] bucket: Bucket,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<EarningsBucket>> {
        let db = db(ctx)?;
        let (version, head) = match db.head().await.map_err(gql)? {
            Some(h) => (Some(h.version), h.timestamp),
            None => (None, 0),
        };
        let (from, to, step) = range(from, to, bucket, head)?;
        // No hourly row lies after the cursor block's time, so an open-ended range (`to`
        // defaults to now) has the same result until the next commit.
        let key = format!("{:?}/{from}/{}/{step}", worker.map(|w| w.0), to.min(head.saturating_add(1)));
        if let Some(hit) = version.and_then(|v| db.earnings.get(v, &key)) {
            return Ok(hit.as_ref().clone());
        }
        let _gate = db.aggregate_gate.lock().await;
        if let Some(hit) = version.and_then(|v| db.earnings.get(v, &key)) {
            return Ok(hit.as_ref().clone());
        }
        let computed = db
            .read(move |conn| {
                let rows = reads::earnings(conn, worker.as_ref().map(|w| &w.0), from, to, step)?;
                Ok(rows
                    .into_iter()
                    .map(|r| EarningsBucket {
                        start: Timestamp(r.start),
                        released: r.released,
                        fees: BigInt(r.sums[0]),
                        worker_share: BigInt(r.sums[1]),
                        protocol_share: BigInt(r.sums[2]),
                        fee_pool_share: BigInt(r.sums[3]),
                        keeper_bounty: BigInt(r.sums[4]),
                        slashed: BigInt(r.sums[5]),
                        refunded: BigInt(r.sums[6]),
                    })
                    .collect::<Vec<_>>())
            })
            .await
            .map_err(gql)?;
        if let Some(v) = version {
            db.earnings.put(v, key, Arc::new(computed.clone()));
        }
        Ok(computed)
    }

    /// Jobs by outcome and latency percentiles per hour or UTC day, of one worker and/or model
    /// or the whole network. Defaults: the last 30 days. At most 1,000 buckets.
    async fn job_stats(
        &self,
        ctx: &Context<'_>,
        worker: Option<Address>,
        model: Option<Bytes32>,
        #[graphql(default_with = "Bucket::Day")] bucket: Bucket,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<JobStatsBucket>> {
        let db = db(ctx)?;
        let head = db.read(head_ts).await.map_err(gql)?;
        let (from, to, step) = range(from, to, bucket, head)?;
        db.read(move |conn| {
            let rows = reads::rollups(conn, worker.as_ref().map(|w| &w.0), model.as_ref().map(|m| &m.0), from, to)?;
            let mut out: BTreeMap<u64, (JobStatsBucket, Histogram, Histogram)> = BTreeMap::new();
            let bad = |e: lcw_schema::rules::latency::BadHistogram| {
                ReadError::Store(lcw_schema::store::StoreError::Corrupt {
                    what: "rollups_hourly latency histogram".into(),
                    value: e.0,
                })
            };
            for r in rows {
                let start = r.hour / step * step;
                let (b, ack, done) = out.entry(start).or_insert_with(|| {
                    (
                        JobStatsBucket { start: Timestamp(start), ..Default::default() },
                        Histogram::default(),
                        Histogram::default(),
                    )
                });
                b.submitted += r.submitted;
                b.acknowledged += r.acknowledged;
                b.completed += r.completed;
                b.released += r.released;
                b.timed_out += r.timed_out;
                b.settled += r.settled;
                b.disputed += r.disputed;
                b.guilty += r.guilty;
                b.not_guilty += r.not_guilty;
                b.defaulted += r.defaulted;
                b.fees.0 += r.fees_wei;
                b.worker_share.0 += r.worker_share_wei;
                if r.ack_latency_count > 0 {
                    b.ack_latency_max = Some(b.ack_latency_max.unwrap_or(0).max(r.ack_latency_max));
                }
                if r.completion_latency_count > 0 {
                    b.completion_latency_max =
                        Some(b.completion_latency_max.unwrap_or(0).max(r.completion_latency_max));
                }
                ack.merge_text(&r.ack_latency_hist).map_err(bad)?;
                done.merge_text(&r.completion_latency_hist).map_err(bad)?;
            }
            Ok(out
                .into_values()
                .map(|(mut b, ack, done)| {
                    b.ack_latency_p50 = ack.quantile(0.5);
                    b.ack_latency_p95 = ack.quantile(0.95);
                    b.completion_latency_p50 = done.quantile(0.5);
                    b.completion_latency_p95 = done.quantile(0.95);
                    b
                })
                .collect())
        })
        .await
        .map_err(gql)
    }

    /// A session request of `manager` (default: the SessionManager AIConfig publishes now; null
    /// when there is none, or no such request). Its status is the one at the indexed head.
    async fn session_request(
        &self,
        ctx: &Context<'_>,
        manager: Option<Address>,
        req_id: u64,
    ) -> Result<Option<crate::sortition::SessionRequest>> {
        crate::sortition::one(ctx, manager, req_id).await
    }

    /// Session requests of every SessionManager AIConfig has published, newest request first,
    /// with their status at the indexed head (EXPIRED derived from its timestamp). `first` is at
    /// most 500.
    #[graphql(complexity = "first.clamp(0, 500) as usize * child_complexity")]
    async fn session_requests(
        &self,
        ctx: &Context<'_>,
        filter: Option<crate::sortition::SessionRequestFilter>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> Result<crate::sortition::SessionRequestConnection> {
        crate::sortition::page(ctx, filter, first, after).await
    }

    /// The key sets in the data directory of this lcw (the active one and every archived one),
    /// public fields only, each with what its address holds at the store's cursor; an archived
    /// set whose address still holds stake is flagged. Null for an API without a data directory
    /// (one reading a PostgreSQL replica). At most 100.
    async fn key_sets(&self, ctx: &Context<'_>) -> Result<Option<Vec<crate::keysets::KeySet>>> {
        crate::keysets::list(ctx).await
    }

    async fn models(&self, ctx: &Context<'_>) -> Result<Vec<Model>> {
        db(ctx)?
            .read(|conn| Ok(reads::models(conn)?.iter().map(|(m, n)| Model::from_row(m, *n)).collect()))
            .await
            .map_err(gql)
    }
}

/// Most jobs one commit pushes to a `jobUpdated` subscriber.
const MAX_PUSH: usize = 1_000;

/// Subscriptions, pushed on indexer commits.
#[derive(Debug, Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// Pushed on every indexer commit.
    async fn head(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Result<IndexerStatus>>> {
        let st = state(ctx)?.clone();
        let mut commits = st.commits.clone();
        commits.borrow_and_update();
        Ok(async_stream(move |tx| async move {
            let mut last = None;
            loop {
                let s = indexer_status(&st).await.map_err(gql);
                // One push per committed block: the first read may already show a block whose
                // notification is still on its way.
                let block = s.as_ref().ok().map(|s| s.block);
                if (block.is_none() || block != last) && tx.send(s).await.is_err() {
                    return;
                }
                last = block;
                if commits.changed().await.is_err() {
                    return;
                }
            }
        }))
    }

    /// Jobs (of one worker, or all) changed by each indexer commit.
    async fn job_updated(&self, ctx: &Context<'_>, worker: Option<Address>) -> Result<impl Stream<Item = Result<Job>>> {
        let st = state(ctx)?.clone();
        let mut commits = st.commits.clone();
        Ok(async_stream(move |tx| async move {
            let mut last = *commits.borrow_and_update();
            while commits.changed().await.is_ok() {
                let now = *commits.borrow_and_update();
                if now <= last {
                    // Unwound by a reorg: the replacement blocks arrive as new commits.
                    last = now;
                    continue;
                }
                let from = last;
                last = now;
                let w = worker.map(|w| w.0);
                let jobs = st
                    .db
                    .read(move |conn| {
                        let rows = reads::jobs_touched(conn, from, now, w.as_ref(), MAX_PUSH)?;
                        let params = obligations::params_if_known(conn)?;
                        rows.into_iter().map(|r| Job::build(conn, r, params.as_ref())).collect::<Result<Vec<_>, _>>()
                    })
                    .await;
                match jobs {
                    Ok(jobs) => {
                        for j in jobs {
                            if tx.send(Ok(j)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if tx.send(Err(gql(e))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }))
    }
}

/// A stream fed by a task: `f` gets the sending half of a small channel.
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(f(tx));
    let guard = AbortOnDrop(task);
    futures::stream::poll_fn(move |cx| {
        let _ = &guard;
        rx.poll_recv(cx)
    })
}

/// Stops a subscription's task when the subscriber goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_at_the_ends_of_time_are_answered_or_refused_never_a_panic() {
        // A store whose head timestamp a node put at the end of time.
        let (from, to, step) = range(None, None, Bucket::Day, u64::MAX).unwrap();
        assert_eq!((to, step), (u64::MAX, 86_400));
        assert!(from < to && to - from <= DEFAULT_RANGE + step);
        assert!(range(Some(Timestamp(u64::MAX)), Some(Timestamp(u64::MAX)), Bucket::Hour, 0).is_err());
        assert!(range(Some(Timestamp(u64::MAX)), None, Bucket::Hour, u64::MAX).is_err());
        let e = range(Some(Timestamp(0)), Some(Timestamp(u64::MAX)), Bucket::Hour, 0).unwrap_err();
        assert!(e.message.contains("more than 1000"), "{}", e.message);
    }
}
