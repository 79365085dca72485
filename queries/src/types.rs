//! The API's object types, built from store rows inside one blocking read so that field
//! resolution needs no further I/O (except `timeline`, `jobs`, `exitPlan` and `slashes`, which
//! read on demand).

use alloy::primitives::U256;
use async_graphql::{ComplexObject, Context, Enum, Object, Result, SimpleObject};
use lcw_schema::rules::exit::{ExitPlan as Plan, Obligation as PlanObligation, Step};
use lcw_schema::rules::schedule::{self, Action, OpenJob, Params, Reason};
use lcw_schema::store::ledger::config_u64_as_of;
use lcw_schema::store::reads::JobView;
use lcw_schema::store::rows::{JobRow, ModelRow, WorkerRow};
use lcw_schema::store::sql::Db as Sql;
use lcw_schema::types::JobState as StoreState;

use crate::db::ReadError;
use crate::scalars::{Address, BigInt, Bytes32, Timestamp, big, ts};

/// Contract job states, in the contract's order.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for the worker's acknowledgement.
    Submitted,
    /// Waiting for completion.
    Acknowledged,
    /// Completed; the dispute window runs.
    Completed,
    /// Timed out (refunded, worker slashed).
    TimedOut,
    /// Disputed.
    Disputed,
    /// Dispute resolved.
    Resolved,
    /// Released: the worker was paid.
    Released,
}

impl From<StoreState> for JobState {
    fn from(s: StoreState) -> Self {
        match s {
            StoreState::Submitted => JobState::Submitted,
            StoreState::Acknowledged => JobState::Acknowledged,
            StoreState::Completed => JobState::Completed,
            StoreState::TimedOut => JobState::TimedOut,
            StoreState::Disputed => JobState::Disputed,
            StoreState::Resolved => JobState::Resolved,
            StoreState::Released => JobState::Released,
        }
    }
}

impl From<JobState> for StoreState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Submitted => StoreState::Submitted,
            JobState::Acknowledged => StoreState::Acknowledged,
            JobState::Completed => StoreState::Completed,
            JobState::TimedOut => StoreState::TimedOut,
            JobState::Disputed => StoreState::Disputed,
            JobState::Resolved => StoreState::Resolved,
            JobState::Released => StoreState::Released,
        }
    }
}

/// Hour or UTC day.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// 3,600 s.
    Hour,
    /// 86,400 s, aligned to UTC midnight.
    Day,
}

impl Bucket {
    /// Seconds.
    pub fn secs(self) -> u64 {
        match self {
            Bucket::Hour => 3_600,
            Bucket::Day => 86_400,
        }
    }
}

/// Page order.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOrder {
    /// Oldest first.
    IdAsc,
    /// Newest first.
    IdDesc,
}

/// A job.
#[derive(Debug, Clone)]
pub struct Job {
    pub(crate) row: JobRow,
    /// The row's state, read once when the job is built (an unknown one fails the build).
    pub(crate) state: StoreState,
    pub(crate) releasable_at: Option<u64>,
    /// The job's logs, when the query asked for its timeline and they were read in the same
    /// statement as the row ([`lcw_schema::store::reads::job_view`]).
    pub(crate) timeline: Option<Vec<lcw_schema::store::raw::RawLog>>,
}

/// When `row` can (or could) be released: completion plus the window in force at release (or
/// now, for open jobs); resolution for not-guilty disputes; the default for unresolved ones.
pub fn releasable_at(conn: &dyn Sql, row: &JobRow, params: Option<&Params>) -> Result<Option<u64>, ReadError> {
    let release_window = || match row.released_block {
        Some(b) => Ok(config_u64_as_of(conn, "disputeWindow", b)?),
        None => Ok(None),
    };
    releasable_at_from(row, release_window, || Ok(params.copied()))
}

/// As [`releasable_at`], with the window in force at the job's release given by
/// `release_window` and the governance parameters by `params`, each asked for only when the
/// answer needs it (a released job's window is the one in force at its release).
fn releasable_at_from(
    row: &JobRow,
    release_window: impl FnOnce() -> Result<Option<u64>, ReadError>,
    params: impl FnOnce() -> Result<Option<Params>, ReadError>,
) -> Result<Option<u64>, ReadError> {
    let state = row.job_state()?;
    if state == StoreState::Released {
        if row.disputed_at.is_some() {
            return Ok(row.resolved_at.or(row.defaulted_at));
        }
        let Some(completed) = row.completed_at else { return Ok(None) };
        let window = match release_window()? {
            Some(w) => Some(w),
            None => params()?.map(|p| p.dispute_window),
        };
        return Ok(window.map(|w| completed.saturating_add(w)));
    }
    let Some(params) = params()? else { return Ok(None) };
    let params = &params;
    let open = OpenJob {
        job_id: row.job_id,
        worker: row.worker,
        state,
        // JobSubmitted sets the fee; a job without one has no escrow to release.
        fee: row.fee_wei.unwrap_or_default(),
        deadline: row.deadline,
        completed_at: row.completed_at,
        disputed_at: row.disputed_at,
        guilty: row.guilty,
        session_active: true,
    };
    Ok(schedule::due(&open, params).filter(|d| d.action == Action::Release).map(|d| match d.reason {
        Reason::ResolvedNotGuilty => row.resolved_at.unwrap_or(d.at),
        _ => d.at,
    }))
}

impl Job {
    /// Builds the API view of `row`.
    pub fn build(conn: &dyn Sql, row: JobRow, params: Option<&Params>) -> Result<Job, ReadError> {
        let state = row.job_state()?;
        let releasable_at = releasable_at(conn, &row, params)?;
        Ok(Job { row, state, releasable_at, timeline: None })
    }

    /// Builds the API view of one job read with [`lcw_schema::store::reads::job_view`], reading
    /// the governance parameters only if its release time needs them.
    pub fn from_view(conn: &dyn Sql, view: JobView) -> Result<Job, ReadError> {
        let JobView { row, release_window, timeline } = view;
        let state = row.job_state()?;
        let releasable_at = releasable_at_from(
            &row,
            || Ok(release_window),
            || Ok(lcw_schema::store::obligations::params_if_known(conn)?),
        )?;
        Ok(Job { row, state, releasable_at, timeline })
    }
}

#[Object]
impl Job {
    async fn id(&self) -> BigInt {
        BigInt::from_u64(self.row.job_id)
    }
    async fn session_id(&self) -> BigInt {
        BigInt::from_u64(self.row.session_id)
    }
    async fn worker(&self) -> Address {
        Address(self.row.worker)
    }
    async fn consumer(&self) -> Option<Address> {
        self.row.consumer.map(Address)
    }
    async fn model_id(&self) -> Option<Bytes32> {
        self.row.model_id.map(Bytes32)
    }
    async fn state(&self) -> JobState {
        self.state.into()
    }
    /// Escrowed fee (exact once released or refunded).
    async fn fee(&self) -> Option<BigInt> {
        big(self.row.fee_wei)
    }
    /// Ack deadline while SUBMITTED, completion deadline while ACKNOWLEDGED.
    async fn deadline(&self) -> Option<Timestamp> {
        ts(self.row.deadline)
    }
    async fn submitted_block(&self) -> u64 {
        self.row.submitted_block
    }
    async fn submitted_at(&self) -> Timestamp {
        Timestamp(self.row.submitted_at)
    }
    async fn submit_tx(&self) -> Bytes32 {
        Bytes32(self.row.submit_tx)
    }
    async fn acknowledged_block(&self) -> Option<u64> {
        self.row.acknowledged_block
    }
    async fn acknowledged_at(&self) -> Option<Timestamp> {
        ts(self.row.acknowledged_at)
    }
    async fn completed_block(&self) -> Option<u64> {
        self.row.completed_block
    }
    async fn completed_at(&self) -> Option<Timestamp> {
        ts(self.row.completed_at)
    }
    async fn response_blob_hash(&self) -> Option<Bytes32> {
        self.row.response_blob_hash.map(Bytes32)
    }
    async fn response_ciphertext_hash(&self) -> Option<Bytes32> {
        self.row.response_ciphertext_hash.map(Bytes32)
    }
    async fn disputed_block(&self) -> Option<u64> {
        self.row.disputed_block
    }
    async fn disputed_at(&self) -> Option<Timestamp> {
        ts(self.row.disputed_at)
    }
    async fn disputer(&self) -> Option<Address> {
        self.row.disputer.map(Address)
    }
    async fn resolved_block(&self) -> Option<u64> {
        self.row.resolved_block
    }
    async fn resolved_at(&self) -> Option<Timestamp> {
        ts(self.row.resolved_at)
    }
    async fn guilty(&self) -> Option<bool> {
        self.row.guilty
    }
    async fn defaulted_block(&self) -> Option<u64> {
        self.row.defaulted_block
    }
    async fn defaulted_at(&self) -> Option<Timestamp> {
        ts(self.row.defaulted_at)
    }
    async fn timed_out_block(&self) -> Option<u64> {
        self.row.timed_out_block
    }
    async fn timed_out_at(&self) -> Option<Timestamp> {
        ts(self.row.timed_out_at)
    }
    /// The first second releaseJobs can succeed: completion (or dispute resolution) plus the
    /// dispute window in force. Null while not completed, and for timed-out or guilty jobs.
    async fn releasable_at(&self) -> Option<Timestamp> {
        ts(self.releasable_at)
    }
    async fn released_block(&self) -> Option<u64> {
        self.row.released_block
    }
    async fn released_at(&self) -> Option<Timestamp> {
        ts(self.row.released_at)
    }
    async fn release_tx(&self) -> Option<Bytes32> {
        self.row.release_tx.map(Bytes32)
    }
    /// Seconds between releasableAt and releasedAt.
    async fn release_lag(&self) -> Option<u64> {
        Some(self.row.released_at?.saturating_sub(self.releasable_at?))
    }
    async fn worker_share(&self) -> Option<BigInt> {
        big(self.row.worker_share_wei)
    }
    async fn protocol_share(&self) -> Option<BigInt> {
        big(self.row.protocol_share_wei)
    }
    async fn fee_pool_share(&self) -> Option<BigInt> {
        big(self.row.fee_pool_share_wei)
    }
    async fn keeper(&self) -> Option<Address> {
        self.row.keeper.map(Address)
    }
    async fn keeper_bounty(&self) -> Option<BigInt> {
        big(self.row.keeper_bounty_wei)
    }
    async fn slash(&self) -> Option<BigInt> {
        big(self.row.slash_wei)
    }
    async fn refund(&self) -> Option<BigInt> {
        big(self.row.refund_wei)
    }
    /// acknowledgedAt - submittedAt.
    async fn ack_latency(&self) -> Option<u64> {
        Some(self.row.acknowledged_at?.saturating_sub(self.row.submitted_at))
    }
    /// completedAt - submittedAt.
    async fn completion_latency(&self) -> Option<u64> {
        Some(self.row.completed_at?.saturating_sub(self.row.submitted_at))
    }
    /// Every event of the job, in chain order.
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<JobEvent>> {
        let id = self.row.job_id;
        let fetched;
        let logs = match &self.timeline {
            Some(logs) => logs,
            None => {
                fetched = crate::api::db(ctx)?
                    .read(move |conn| Ok(lcw_schema::store::raw::RawLog::of_job(conn, id)?))
                    .await
                    .map_err(crate::api::gql)?;
                &fetched
            }
        };
        Ok(logs
            .iter()
            .map(|l| {
                let fields = crate::decode::fields(&l.topics, &l.data).unwrap_or_else(|e| {
                    vec![crate::decode::Field { name: "decodeError".into(), ty: "string".into(), value: e }]
                });
                JobEvent {
                    name: l.event.clone().unwrap_or_else(|| "(undecodable)".into()),
                    block: l.block_number,
                    log_index: l.log_index,
                    time: Timestamp(l.block_timestamp),
                    tx: Bytes32(l.tx_hash),
                    fields: fields.into_iter().map(EventField::from).collect(),
                }
            })
            .collect())
    }
}

/// One event of a job.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobEvent {
    name: String,
    block: u64,
    log_index: u64,
    time: Timestamp,
    tx: Bytes32,
    fields: Vec<EventField>,
}

/// A decoded event field.
#[derive(SimpleObject, Debug, Clone)]
pub struct EventField {
    name: String,
    /// Solidity type.
    #[graphql(name = "type")]
    ty: String,
    /// The value as text: decimal for integers, 0x hex for addresses and bytes.
    value: String,
}

impl From<crate::decode::Field> for EventField {
    fn from(f: crate::decode::Field) -> Self {
        EventField { name: f.name, ty: f.ty, value: f.value }
    }
}

/// Keyset pagination.
#[derive(SimpleObject, Debug, Clone)]
pub struct PageInfo {
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

/// A page of jobs.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobConnection {
    pub nodes: Vec<Job>,
    pub page_info: PageInfo,
}

/// A page of workers.
#[derive(SimpleObject, Debug, Clone)]
pub struct WorkerConnection {
    pub nodes: Vec<Worker>,
    pub page_info: PageInfo,
}

/// A model.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Model {
    pub id: Bytes32,
    /// The name, when it is one lcw knows (keccak256 of the name is the id).
    pub name: Option<String>,
    pub whitelisted: bool,
    pub registered: bool,
    pub enabled: bool,
    pub fee: Option<BigInt>,
    pub max_output_tokens: Option<u64>,
    /// Registered workers serving it.
    pub workers: u64,
}

/// What a model takes on this lcw's LLM server.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct ModelFootprint {
    /// Memory the loaded model takes, bytes.
    pub bytes: u64,
    /// What else the LLM server says about it (quantisation, context size).
    pub detail: Option<String>,
}

#[ComplexObject]
impl Model {
    /// What the model takes on the LLM server of the worker this lcw runs (`lcw run --work`),
    /// once it has measured it; null otherwise (another worker's model, an API without a
    /// worker, or not measured yet).
    async fn footprint(&self, ctx: &Context<'_>) -> Option<ModelFootprint> {
        let source = ctx.data_opt::<crate::operator::Operator>()?.footprints.clone()?;
        source(self.id.0).map(|f| ModelFootprint { bytes: f.bytes, detail: f.detail })
    }
}

/// Model names lcw knows: the devnet's and the real network's test model.
const KNOWN_MODELS: [&str; 4] = ["gemma3-270m", "gemma3:270m", "llama3.2:1b", "qwen2.5:0.5b"];

impl Model {
    /// From a store row and its worker count.
    pub fn from_row(row: &ModelRow, workers: u64) -> Model {
        let name = KNOWN_MODELS
            .iter()
            .find(|n| alloy::primitives::keccak256(n.as_bytes()) == row.model_id)
            .map(|n| (*n).to_owned());
        Model {
            id: Bytes32(row.model_id),
            name,
            whitelisted: row.whitelisted,
            registered: row.registered,
            enabled: row.enabled,
            fee: big(row.fee_wei),
            max_output_tokens: row.max_output_tokens,
            workers,
        }
    }
}

/// A worker.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Worker {
    pub address: Address,
    pub registered: bool,
    /// p256-aesgcm or x25519, from the registered key.
    pub suite: Option<String>,
    /// The registered encryption public key, 0x hex.
    pub encryption_key: Option<String>,
    /// Staked, wei: locked in the WorkerRegistry while registered (slashes come out of it);
    /// deregistering returns it (`lcw exit`).
    pub stake: BigInt,
    /// The models the worker registered to serve.
    pub models: Vec<Model>,
    pub suspended_until: Option<Timestamp>,
    pub suspended: bool,
    pub offense_count: u64,
    pub slash_count: u64,
    pub slashed: BigInt,
    pub deactivated: bool,
    /// Jobs that still count for getActiveJobCount.
    pub active_jobs: i64,
    /// Released but not withdrawn, wei: the worker's shares of released jobs, held by the
    /// JobRegistry until `lcw withdraw` moves them to the wallet (earned - withdrawn).
    pub balance: BigInt,
    /// Earned over the worker's lifetime, wei: its shares of every released job, withdrawn or
    /// not. Only grows.
    pub earned: BigInt,
    /// Withdrawn to the wallet so far, wei.
    pub withdrawn: BigInt,
    pub registered_block: Option<u64>,
    pub registered_at: Option<Timestamp>,
    pub deregistered_block: Option<u64>,
    pub deregistered_at: Option<Timestamp>,
}

impl Worker {
    /// From a store row, its models and the store's head time.
    pub fn from_row(row: WorkerRow, models: Vec<Model>, head_ts: u64) -> Worker {
        Worker {
            address: Address(row.address),
            registered: row.registered,
            suite: row.suite,
            encryption_key: row.encryption_key.map(|k| format!("0x{}", alloy::primitives::hex::encode(&k))),
            stake: BigInt(row.stake_wei),
            models,
            suspended_until: (row.suspended_until > 0).then_some(Timestamp(row.suspended_until)),
            suspended: row.suspended_until > head_ts,
            offense_count: row.offense_count,
            slash_count: row.slash_count,
            slashed: BigInt(row.slashed_wei),
            deactivated: row.deactivated,
            active_jobs: row.active_jobs,
            balance: BigInt(row.balance_wei),
            earned: BigInt(row.earned_wei),
            withdrawn: BigInt(row.withdrawn_wei),
            registered_block: row.registered_block,
            registered_at: ts(row.registered_at),
            deregistered_block: row.deregistered_block,
            deregistered_at: ts(row.deregistered_at),
        }
    }
}

#[ComplexObject]
impl Worker {
    #[graphql(complexity = "first.clamp(0, 500) as usize * child_complexity")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        states: Option<Vec<JobState>>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> Result<JobConnection> {
        let filter = crate::api::JobFilter { worker: Some(self.address), states, ..Default::default() };
        crate::api::jobs_page(ctx, Some(filter), first, after, JobOrder::IdDesc).await
    }

    async fn exit_plan(&self, ctx: &Context<'_>) -> Result<ExitPlan> {
        crate::api::exit_plan(ctx, self.address).await
    }

    /// The worker's wallet (the gas money, apart from stake and earnings) at the store's cursor
    /// block, and the jobs its balance pays the gas of. Read from the node by `lcw run` and by
    /// `lcw serve --head-rpc`; otherwise unknown, with `unavailable` saying so.
    #[graphql(complexity = 100)]
    async fn wallet(&self, ctx: &Context<'_>) -> Result<crate::wallet::Wallet> {
        crate::wallet::of(ctx, self.address.0).await
    }

    /// Session requests lcw's worker (running with this key beside this store) claimed, won,
    /// lost, missed or skipped under sortition. Zero everywhere for a worker lcw does not run.
    async fn session_claims(&self, ctx: &Context<'_>) -> Result<SessionClaims> {
        use lcw_schema::store::claims::{self, ClaimState};
        let w = self.address.0;
        let (counts, missed) = crate::api::db(ctx)?
            .read(move |conn| Ok((claims::counts(conn, w)?, claims::missed_by_reason(conn, w)?)))
            .await
            .map_err(crate::api::gql)?;
        let n = |s: ClaimState| counts.get(&s).copied().unwrap_or(0);
        Ok(SessionClaims {
            in_flight: n(ClaimState::Sent),
            won: n(ClaimState::Won),
            lost: n(ClaimState::Lost),
            missed: n(ClaimState::Missed),
            skipped: n(ClaimState::Skipped),
            expired: n(ClaimState::Expired),
            missed_by_reason: missed.into_iter().map(|(reason, count)| ReasonCount { reason, count }).collect(),
        })
    }

    #[graphql(complexity = "first.clamp(0, 500) as usize * child_complexity")]
    async fn slashes(&self, ctx: &Context<'_>, #[graphql(default = 50)] first: i32) -> Result<Vec<Slash>> {
        let n = crate::api::page_size(first)?;
        let w = self.address.0;
        let rows = crate::api::db(ctx)?
            .read(move |conn| Ok(lcw_schema::store::reads::slashes_of(conn, &w, n)?))
            .await
            .map_err(crate::api::gql)?;
        Ok(rows
            .into_iter()
            .map(|s| Slash {
                block: s.block,
                time: Timestamp(s.time),
                amount: BigInt(s.amount),
                new_stake: BigInt(s.new_stake),
                job_id: s.job_id.map(BigInt::from_u64),
                reason: s.reason,
                tx: Bytes32(s.tx),
            })
            .collect())
    }
}

/// A worker's sortition claims, from lcw's own record.
#[derive(SimpleObject, Debug, Clone)]
pub struct SessionClaims {
    /// Claims sent whose outcome is not known yet.
    pub in_flight: u64,
    /// Requests this worker claimed.
    pub won: u64,
    /// Claims sent that another worker's claim beat.
    pub lost: u64,
    /// Requests another worker took while this one was eligible and did not claim.
    pub missed: u64,
    /// Requests of a served model this worker cannot claim (capabilities, eligibility).
    pub skipped: u64,
    /// Claims whose request expired first.
    pub expired: u64,
    /// Missed requests by reason: busy, llm_down, at_capacity, drained, late.
    pub missed_by_reason: Vec<ReasonCount>,
}

/// A count with its reason.
#[derive(SimpleObject, Debug, Clone)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

/// A slash.
#[derive(SimpleObject, Debug, Clone)]
pub struct Slash {
    pub block: u64,
    pub time: Timestamp,
    pub amount: BigInt,
    pub new_stake: BigInt,
    pub job_id: Option<BigInt>,
    /// ack_timeout, completion_timeout, dispute or other.
    pub reason: String,
    pub tx: Bytes32,
}

/// One open job and how it ends.
#[derive(SimpleObject, Debug, Clone)]
pub struct Obligation {
    pub job_id: BigInt,
    pub state: JobState,
    /// RELEASE, CLAIM_TIMEOUT or SETTLE_STUCK.
    pub action: String,
    /// Why: DISPUTE_WINDOW_ENDS, NOT_GUILTY, DISPUTE_DEFAULTED, ACK_DEADLINE, COMPLETION_DEADLINE,
    /// SESSION_CLOSED.
    pub reason: String,
    pub at: Timestamp,
    pub in_seconds: u64,
    /// Stake slashed if it ends by timeout.
    pub slash: Option<BigInt>,
}

/// The API spelling of an action.
pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::Release => "RELEASE",
        Action::ClaimTimeout => "CLAIM_TIMEOUT",
        Action::SettleStuck => "SETTLE_STUCK",
    }
}

/// The API spelling of a reason.
pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::DisputeWindow => "DISPUTE_WINDOW_ENDS",
        Reason::ResolvedNotGuilty => "NOT_GUILTY",
        Reason::DisputeDefault => "DISPUTE_DEFAULTED",
        Reason::AckTimeout => "ACK_DEADLINE",
        Reason::CompletionTimeout => "COMPLETION_DEADLINE",
        Reason::SessionClosed => "SESSION_CLOSED",
    }
}

impl From<&PlanObligation> for Obligation {
    fn from(o: &PlanObligation) -> Self {
        Obligation {
            job_id: BigInt::from_u64(o.job_id),
            state: o.state.into(),
            action: action_name(o.action).into(),
            reason: reason_name(o.reason).into(),
            at: Timestamp(o.at),
            in_seconds: o.in_secs,
            slash: big(o.slash),
        }
    }
}

/// What the operator should do next.
#[derive(SimpleObject, Debug, Clone)]
pub struct ExitStep {
    /// NOT_REGISTERED, WITHDRAW, DRAIN, RELEASE, CLEAR_STUCK, WAIT or DEREGISTER.
    pub kind: String,
    /// What to do, in words.
    pub description: String,
    /// The lcw command that takes this step.
    pub command: Option<String>,
    pub jobs: Vec<BigInt>,
    pub amount: Option<BigInt>,
    /// For WAIT: when the next obligation ends.
    pub until: Option<Timestamp>,
}

fn lcai(wei: U256) -> String {
    lcw_schema::types::Lcai(wei).to_string()
}

impl ExitStep {
    fn from_step(step: &Step, worker: &str) -> ExitStep {
        let ids = |jobs: &[u64]| jobs.iter().map(|j| BigInt::from_u64(*j)).collect::<Vec<_>>();
        let list = |jobs: &[u64]| jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>().join(",");
        let (kind, description, command, jobs, amount, until) = match step {
            Step::NotRegistered => (
                "NOT_REGISTERED",
                "The worker is not registered and has no balance: nothing to do.".into(),
                None,
                vec![],
                None,
                None,
            ),
            Step::Drain => (
                "DRAIN",
                "Stop taking new sessions, so that no new job can start.".into(),
                Some(format!("lcw drain --worker {worker}")),
                vec![],
                None,
                None,
            ),
            Step::Release { jobs } => (
                "RELEASE",
                format!("{} job(s) can be released now.", jobs.len()),
                Some(format!("lcw release --worker {worker} --jobs {}", list(jobs))),
                ids(jobs),
                None,
                None,
            ),
            Step::ClearStuck { jobs } => (
                "CLEAR_STUCK",
                format!(
                    "{} job(s) are past their deadline; claimTimeout clears them and slashes the stake.",
                    jobs.len()
                ),
                Some(format!("lcw clear-stuck --worker {worker}")),
                ids(jobs),
                None,
                None,
            ),
            Step::Wait { until, in_secs } => (
                "WAIT",
                format!("Wait {in_secs} s for the next obligation to end."),
                Some(format!("lcw exit --worker {worker}")),
                vec![],
                None,
                Some(Timestamp(*until)),
            ),
            Step::Withdraw { amount } => (
                "WITHDRAW",
                format!("Withdraw the earnings balance of {} LCAI.", lcai(*amount)),
                Some(format!("lcw withdraw --worker {worker}")),
                vec![],
                Some(BigInt(*amount)),
                None,
            ),
            Step::Deregister => (
                "DEREGISTER",
                "No obligations remain: deregisterWorker succeeds now and returns the stake.".into(),
                Some(format!("lcw deregister --worker {worker}")),
                vec![],
                None,
                None,
            ),
        };
        ExitStep { kind: kind.into(), description, command, jobs, amount, until }
    }
}

/// A worker's exit plan.
#[derive(SimpleObject, Debug, Clone)]
pub struct ExitPlan {
    pub worker: Address,
    pub registered: bool,
    /// The operator drained the worker (lcw drain): it accepts no new sessions.
    pub drained: bool,
    pub stake: BigInt,
    pub balance: BigInt,
    pub active_jobs: u64,
    /// The block the plan was computed at (the store's cursor).
    pub head: u64,
    pub head_time: Timestamp,
    /// Every open job with what ends it and when, soonest first.
    pub obligations: Vec<Obligation>,
    /// Jobs past their deadline that only claimTimeout / settleStuckJob can clear.
    pub stuck: Vec<BigInt>,
    /// The stake clearing the stuck jobs would slash.
    pub stuck_slash: BigInt,
    /// The earliest time deregisterWorker can succeed (null when not registered).
    pub earliest_deregister_at: Option<Timestamp>,
    /// Seconds from headTime to earliestDeregisterAt.
    pub earliest_deregister_in: Option<u64>,
    /// deregisterWorker would succeed now.
    pub deregister_ready: bool,
    pub next: ExitStep,
}

impl From<&Plan> for ExitPlan {
    fn from(p: &Plan) -> Self {
        let worker = p.worker.to_checksum(None);
        ExitPlan {
            worker: Address(p.worker),
            registered: p.registered,
            drained: p.drained,
            stake: BigInt(p.stake),
            balance: BigInt(p.balance),
            active_jobs: p.active_jobs,
            head: p.head,
            head_time: Timestamp(p.head_ts),
            obligations: p.obligations.iter().map(Obligation::from).collect(),
            stuck: p.stuck.iter().map(|j| BigInt::from_u64(*j)).collect(),
            stuck_slash: BigInt(p.stuck_slash),
            earliest_deregister_at: ts(p.earliest_deregister_at),
            earliest_deregister_in: p.earliest_deregister_in,
            deregister_ready: p.deregister_ready,
            next: ExitStep::from_step(&p.next, &worker),
        }
    }
}

/// Open jobs by when they can be ended.
#[derive(SimpleObject, Debug, Clone)]
pub struct ReleaseQueue {
    pub head: u64,
    pub head_time: Timestamp,
    /// Open jobs with a scheduled action (all of them, not only the first).
    pub total: u64,
    /// Of those, due in the next block.
    pub due_now: u64,
    pub next_at: Option<Timestamp>,
    pub entries: Vec<ReleaseQueueEntry>,
}

/// One scheduled action.
#[derive(SimpleObject, Debug, Clone)]
pub struct ReleaseQueueEntry {
    pub job_id: BigInt,
    pub worker: Address,
    pub action: String,
    pub reason: String,
    pub at: Timestamp,
    pub in_seconds: u64,
    pub fee: BigInt,
    /// What the worker receives when it is released.
    pub worker_share: BigInt,
    /// What a keeper earns for it.
    pub keeper_bounty: BigInt,
}

/// The dispute window.
#[derive(SimpleObject, Debug, Clone)]
pub struct DisputeWindow {
    /// The window in force now, in seconds.
    pub seconds: u64,
    /// Block at which the current value took effect (null when it predates the store).
    pub since_block: Option<u64>,
    /// Time at which the current value took effect.
    pub since: Option<Timestamp>,
    /// Every change, oldest first.
    pub history: Vec<DisputeWindowChange>,
}

/// One change of the dispute window.
#[derive(SimpleObject, Debug, Clone)]
pub struct DisputeWindowChange {
    pub block: u64,
    pub time: Timestamp,
    pub seconds: u64,
}

/// Earnings in one bucket.
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct EarningsBucket {
    /// Start of the bucket (hour or UTC day).
    pub start: Timestamp,
    /// Jobs released in the bucket.
    pub released: u64,
    /// Fees of the jobs released in the bucket.
    pub fees: BigInt,
    pub worker_share: BigInt,
    pub protocol_share: BigInt,
    pub fee_pool_share: BigInt,
    pub keeper_bounty: BigInt,
    pub slashed: BigInt,
    pub refunded: BigInt,
}

impl Default for BigInt {
    fn default() -> Self {
        BigInt(U256::ZERO)
    }
}

/// Job outcomes and latencies in one bucket.
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct JobStatsBucket {
    pub start: Timestamp,
    pub submitted: u64,
    pub acknowledged: u64,
    pub completed: u64,
    pub released: u64,
    pub timed_out: u64,
    pub settled: u64,
    pub disputed: u64,
    pub guilty: u64,
    pub not_guilty: u64,
    pub defaulted: u64,
    pub fees: BigInt,
    pub worker_share: BigInt,
    /// Acknowledgement latency (seconds from submission) of the jobs acknowledged in the bucket.
    pub ack_latency_p50: Option<u64>,
    pub ack_latency_p95: Option<u64>,
    pub ack_latency_max: Option<u64>,
    /// Completion latency (seconds from submission) of the jobs completed in the bucket.
    pub completion_latency_p50: Option<u64>,
    pub completion_latency_p95: Option<u64>,
    pub completion_latency_max: Option<u64>,
}

/// What the indexer has committed.
#[derive(SimpleObject, Debug, Clone)]
pub struct IndexerStatus {
    pub chain_id: u64,
    /// The last block the indexer committed.
    pub block: u64,
    pub block_hash: Bytes32,
    pub block_time: Timestamp,
    /// The highest block the node reported final at that commit.
    pub finalized_block: u64,
    /// Wall-clock time of that commit.
    pub updated_at: Timestamp,
    /// Seconds between blockTime and now.
    pub lag_seconds: u64,
    /// The indexer has reached the chain head (see /readyz).
    pub ready: bool,
    pub events: u64,
    pub jobs: u64,
    pub workers: u64,
    /// Sortition as AIConfig has it (null when the store has not seen its parameters).
    pub sortition: Option<crate::sortition::SortitionStatus>,
    /// The PostgreSQL replica of the store: kept by this process (`lcw run --replica`), or the
    /// one this API reads (`lcw serve --store postgres://…`); null otherwise.
    pub replica: Option<ReplicaInfo>,
}

/// Where a PostgreSQL replica of the store stands. An API that reads the replica itself sees its
/// position but not the store's, so the lag and the follower's counters are null there.
#[derive(SimpleObject, Debug, Clone, Default)]
pub struct ReplicaInfo {
    /// The store block the replica holds (null before its first copy).
    pub block: Option<u64>,
    pub block_hash: Option<Bytes32>,
    /// Blocks the store's cursor stands above the replica's.
    pub lag_blocks: Option<u64>,
    /// Seconds since the oldest store commit the replica has not applied (0 when caught up).
    pub lag_seconds: Option<u64>,
    /// When the replica last applied the store's commits.
    pub updated_at: Option<Timestamp>,
    /// Why the replica cannot be brought up now (null while it can); the follower retries.
    pub error: Option<String>,
    /// Since when it cannot.
    pub failing_since: Option<Timestamp>,
    /// Whole copies made because the store's change log could not bring the replica up.
    pub recopies: Option<u64>,
    /// Catch-ups that failed.
    pub failed_catchups: Option<u64>,
}

impl ReplicaInfo {
    /// The follower's view at `now` (unix seconds).
    pub fn of(s: &lcw_replica::ReplicaState, now: u64) -> ReplicaInfo {
        ReplicaInfo {
            block: s.block,
            block_hash: s.hash.map(Bytes32),
            lag_blocks: s.lag_blocks(),
            lag_seconds: s.lag_seconds(now),
            updated_at: s.updated_at.map(Timestamp),
            error: s.last_error.clone(),
            failing_since: s.failing_since.map(Timestamp),
            recopies: Some(s.recopies),
            failed_catchups: Some(s.failed_catchups),
        }
    }
}
