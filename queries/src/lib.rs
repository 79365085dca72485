//! # lcw-queries: the GraphQL API and dashboard
//!
//! The read side for people and dashboards: an async-graphql schema on axum over read-only
//! connections to the store: per-job lifecycle and timeline, exact exit timing (the same rules
//! as `lcw exit-plan`, from `lcw_schema::rules`), release queue, earnings and latency analytics,
//! session requests of the SessionManagers (sortition) with their status at the indexed head,
//! subscriptions pushed on indexer commits, and a self-contained dashboard at `/`.
//!
//! It runs beside the worker and settler in `lcw run`, and any web page the operator opens can
//! reach it, so it is bounded in every dimension ([`Limits`]) and isolated from other origins
//! ([`Access`]):
//! - [`server`]: HTTP/1.1 with a header timeout, an idle timeout and a connection cap that sheds
//!   idle connections first;
//! - [`access`]: the `Host` must be this server (DNS rebinding), the `Origin` this server or one
//!   the operator allows (CORS for those);
//! - [`endpoint`]: JSON bodies only, size-capped, executed in a bounded number of slots on blocking
//!   threads, never on the runtime's workers;
//! - [`guard`]: every document measured with fragments expanded (fields, aliases, directives,
//!   depth, nesting) before async-graphql parses the rest or validates it;
//! - [`socket`]: WebSockets capped in number, operations per socket, silence and message size.
//!
//! What the store cannot answer (a wallet's balance, the key sets on disk, a model's footprint
//! on the LLM server) comes from read-only sources the process beside the worker gives it
//! ([`operator`]); without them those fields are null.
//!
//! Entry points: [`schema`] (the GraphQL schema over a store), [`router`] / [`app`] (axum routes:
//! `/graphql` POST + GraphiQL + WebSocket, `/healthz`, `/readyz`, `/`), [`Server`] / [`serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::EmptyMutation;
use axum::response::Html;
use axum::routing::get;
use tokio::sync::Semaphore;

pub mod access;
pub mod api;
pub mod db;
pub mod decode;
mod endpoint;
pub mod guard;
pub mod keysets;
mod listen;
pub mod operator;
mod runner;
pub mod scalars;
mod server;
mod socket;
pub mod sortition;
pub mod types;
pub mod wallet;

pub use access::{Access, AccessError, LocalAddr};
pub use api::{ApiState, Readiness};
pub use db::{Db, Source};
pub use guard::{DocumentLimits, Guard};
pub use operator::{Footprint, KeySetInfo, Operator, WalletSource};

/// The schema type.
pub type ApiSchema = async_graphql::Schema<api::Query, EmptyMutation, api::Subscription>;

/// Every bound of the API. [`Limits::default`] holds the defaults of `lcw serve` and `lcw run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest POST body, and largest WebSocket message, in bytes.
    pub body_bytes: usize,
    /// Largest request head (request line and headers), in bytes.
    pub header_bytes: usize,
    /// Deepest field nesting of a query (introspection is bounded by its type lists instead).
    pub depth: usize,
    /// Highest query complexity (fields, times page sizes for lists).
    pub complexity: usize,
    /// Most aliases in a query, with fragments expanded.
    pub aliases: usize,
    /// Most directives in a query, with fragments expanded.
    pub directives: usize,
    /// Longest a client may take to send a request's head, and then its body.
    pub header_timeout: Duration,
    /// Longest a connection or WebSocket may stay silent.
    pub idle_timeout: Duration,
    /// Most open HTTP connections (idle ones make room for new ones).
    pub connections: usize,
    /// Most POSTed requests executing at once; more wait within the request time limit.
    pub requests: usize,
    /// Most open WebSockets.
    pub websockets: usize,
    /// Most operations (subscriptions, and queries sent over the socket) at once on one WebSocket.
    pub subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 * 1024,
            header_bytes: 16 * 1024,
            depth: 12,
            complexity: 30_000,
            aliases: 30,
            directives: 50,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            connections: 256,
            requests: 16,
            websockets: 32,
            subscriptions: 8,
        }
    }
}

impl Limits {
    /// The bounds on one document.
    pub fn document(&self) -> DocumentLimits {
        DocumentLimits {
            depth: self.depth,
            complexity: self.complexity,
            aliases: self.aliases,
            directives: self.directives,
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store.
    pub db: PathBuf,
    /// Serve this PostgreSQL replica of the store instead of the file `db` (a replica kept by
    /// `lcw replicate` or `lcw index --replica`, or a streaming standby of one).
    pub replica: Option<lcw_replica::ReplicaUrl>,
    /// The replica this process keeps beside the store (`lcw run --replica`), shown by
    /// indexerStatus.
    pub replica_status: Option<Arc<lcw_replica::ReplicaStatus>>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Read connections.
    pub pool: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Readiness rule.
    pub readiness: Readiness,
    /// Size, time and count bounds.
    pub limits: Limits,
    /// Hosts and origins allowed besides this server's own.
    pub access: Access,
    /// Sources of the wallet, key sets and model footprints (none by default: those fields are
    /// null).
    pub operator: Operator,
}

impl ServeConfig {
    /// Defaults for `db`: 127.0.0.1:8080, 4 connections, 2 s per request, ready when the cursor
    /// block is at most 60 s old, [`Limits::default`], only this server's own host and origin.
    pub fn new(db: PathBuf) -> Self {
        ServeConfig {
            db,
            replica: None,
            replica_status: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pool: 4,
            request_timeout: Duration::from_secs(2),
            readiness: Readiness::MaxLag(60),
            limits: Limits::default(),
            access: Access::default(),
            operator: Operator::default(),
        }
    }
}

/// Documents parsed at once on blocking threads (one per core).
fn parallel_parses() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// The GraphQL schema over `state`, with the default [`Limits`].
pub fn schema(state: ApiState) -> ApiSchema {
    schema_with(state, &Guard::new(Limits::default().document(), parallel_parses()))
}

/// The GraphQL schema over `state`; `guard` checks every document first.
pub fn schema_with(state: ApiState, guard: &Guard) -> ApiSchema {
    schema_for(state, Operator::default(), guard)
}

/// The GraphQL schema over `state` with the sources in `operator`; `guard` checks every
/// document first.
pub fn schema_for(state: ApiState, operator: Operator, guard: &Guard) -> ApiSchema {
    let limits = guard.limits();
    async_graphql::Schema::build(api::Query, EmptyMutation, api::Subscription)
        .data(state)
        .data(operator)
        // Depth is the guard's (it exempts introspection, whose own rule bounds it).
        .limit_complexity(limits.complexity)
        .limit_recursive_depth(limits.nesting())
        .limit_directives(limits.directives)
        .extension(guard.clone())
        .finish()
}

/// The SDL of the schema (`queries/schema.graphql` is a snapshot of it).
pub fn sdl() -> String {
    async_graphql::Schema::build(api::Query, EmptyMutation, api::Subscription).finish().sdl()
}

const DASHBOARD: &str = include_str!("dashboard/index.html");

/// The routes with the default [`Limits`] and [`Access`] (see [`app`]).
pub fn router(state: ApiState, request_timeout: Duration) -> axum::Router {
    app(state, request_timeout, Limits::default(), Access::default())
}

/// The routes: `POST /graphql`, `GET /graphql` (GraphiQL, or WebSocket subscriptions with the
/// graphql-transport-ws or graphql-ws protocol), `/healthz`, `/readyz` and the dashboard at `/`;
/// every request first passes the [`Access`] rules.
///
/// # Panics
/// When the system refuses to start the request threads (`limits.requests` of them), at start-up.
pub fn app(state: ApiState, request_timeout: Duration, limits: Limits, access: Access) -> axum::Router {
    app_with(state, Operator::default(), request_timeout, limits, access)
}

/// [`app`] with the sources in `operator`.
///
/// # Panics
/// As [`app`].
pub fn app_with(
    state: ApiState,
    operator: Operator,
    request_timeout: Duration,
    limits: Limits,
    access: Access,
) -> axum::Router {
    let guard = Guard::new(limits.document(), parallel_parses());
    let endpoint = endpoint::Endpoint {
        schema: schema_for(state.clone(), operator, &guard),
        guard,
        api: state,
        limits,
        request_timeout,
        running: Arc::new(Semaphore::new(limits.requests.max(1))),
        runners: Arc::new(runner::Runners::start(limits.requests.max(1)).expect("starting the API's request threads")),
        sockets: Arc::new(Semaphore::new(limits.websockets)),
    };
    axum::Router::new()
        .route("/graphql", get(endpoint::get).post(endpoint::post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(endpoint::readyz))
        .route("/", get(|| async { Html(DASHBOARD) }))
        .with_state(endpoint)
        .layer(axum::middleware::from_fn_with_state(Arc::new(access), access::check))
}

/// Watches the store's cursor (one poll for every subscriber) and publishes each new block:
/// for a server in another process than the indexer.
pub fn watch_cursor(db: Arc<Db>, every: Duration) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            // An empty store is at block 0: its first commit moves the cursor past it.
            let block = db
                .read(|conn| Ok(lcw_schema::store::raw::Cursor::get(conn)?.map(|c| c.block_number).unwrap_or(0)))
                .await;
            if let Ok(b) = block
                && last != Some(b)
            {
                last = Some(b);
                if tx.send(b).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    rx
}

/// Publishes each commit of the PostgreSQL replica at `url` that `db` reads: pushed by the
/// replicating process's notifications, and read every `every` besides (a streaming standby
/// hears no notifications).
pub fn watch_replica(db: Arc<Db>, url: lcw_replica::ReplicaUrl, every: Duration) -> tokio::sync::watch::Receiver<u64> {
    listen::commits(db, url, every)
}

/// The API bound to its address, not serving yet (so a caller can learn the port it got).
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
}

impl Server {
    /// Opens the store and binds `config.listen`. `commits` carries the indexer's committed
    /// blocks when it runs in this process; otherwise the cursor is watched.
    pub async fn bind(
        config: &ServeConfig,
        commits: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> std::io::Result<Server> {
        let source = match &config.replica {
            Some(url) => db::Source::Postgres(Box::new(url.clone())),
            None => db::Source::Sqlite(config.db.clone()),
        };
        // On a blocking thread: a PostgreSQL connection blocks on a runtime of its own.
        let (pool, timeout) = (config.pool, config.request_timeout);
        let db = tokio::task::spawn_blocking(move || Db::connect(source, pool, timeout))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        let commits = match (commits, &config.replica) {
            (Some(c), _) => c,
            (None, Some(url)) => listen::commits(db.clone(), url.clone(), Duration::from_millis(500)),
            (None, None) => watch_cursor(db.clone(), Duration::from_millis(200)),
        };
        let state =
            ApiState { db, readiness: config.readiness.clone(), commits, replica: config.replica_status.clone() };
        let app =
            app_with(state, config.operator.clone(), config.request_timeout, config.limits, config.access.clone());
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e} (is another lcw serve running?)", config.listen),
            )
        })?;
        Ok(Server { listener, app, limits: config.limits })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) -> std::io::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "GraphQL API on http://{addr}/graphql, dashboard on http://{addr}/");
        let limits = server::ConnLimits {
            connections: self.limits.connections,
            header_timeout: self.limits.header_timeout,
            idle_timeout: self.limits.idle_timeout,
            header_bytes: self.limits.header_bytes,
        };
        server::run(self.listener, self.app, limits, shutdown).await
    }
}

/// Serves the API until `shutdown` ([`Server::bind`], then [`Server::run`]).
pub async fn serve(
    config: ServeConfig,
    commits: Option<tokio::sync::watch::Receiver<u64>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    Server::bind(&config, commits).await?.run(shutdown).await
}
