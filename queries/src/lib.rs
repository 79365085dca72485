//! # lcw-queries: the GraphQL API and dashboard
//!
//! The read side for people and dashboards: an async-graphql schema on axum over read-only
//! connections to the store: per-job lifecycle and timeline, exact exit timing (the same rules
//! as `lcw exit-plan`, from `lcw_schema::rules`), release queue, earnings and latency analytics,
//! session requests of the SessionManagers (sortition) with their status at the indexed head,
//! subscriptions pushed on indexer commits, depth / complexity / alias / page-size / time limits,
//! and a self-contained dashboard at `/`.
//!
//! Entry points: [`schema`] (the GraphQL schema over a store), [`router`] (axum routes:
//! `/graphql` POST + GraphiQL + WebSocket, `/healthz`, `/readyz`, `/`), [`serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{EmptyMutation, Positioned, ServerError, ServerResult, Variables};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

pub mod api;
pub mod db;
pub mod decode;
pub mod scalars;
pub mod sortition;
pub mod types;

pub use api::{ApiState, Readiness};
pub use db::Db;

/// The schema type.
pub type ApiSchema = async_graphql::Schema<api::Query, EmptyMutation, api::Subscription>;

/// Deepest selection nesting accepted.
pub const MAX_DEPTH: usize = 12;
/// Highest query complexity accepted (fields, times page sizes for lists).
pub const MAX_COMPLEXITY: usize = 30_000;
/// Most aliases in one document.
pub const MAX_ALIASES: usize = 30;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The store.
    pub db: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Read connections.
    pub pool: usize,
    /// Longest a request may run.
    pub request_timeout: Duration,
    /// Readiness rule.
    pub readiness: Readiness,
}

impl ServeConfig {
    /// Defaults for `db`: 127.0.0.1:8080, 4 connections, 2 s per request, ready when the cursor
    /// block is at most 60 s old.
    pub fn new(db: PathBuf) -> Self {
        ServeConfig {
            db,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pool: 4,
            request_timeout: Duration::from_secs(2),
            readiness: Readiness::MaxLag(60),
        }
    }
}

/// The GraphQL schema over `state`.
pub fn schema(state: ApiState) -> ApiSchema {
    async_graphql::Schema::build(api::Query, EmptyMutation, api::Subscription)
        .data(state)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(AliasLimit(MAX_ALIASES))
        .finish()
}

/// The SDL of the schema (`queries/schema.graphql` is a snapshot of it).
pub fn sdl() -> String {
    async_graphql::Schema::build(api::Query, EmptyMutation, api::Subscription).finish().sdl()
}

#[derive(Clone)]
struct AppState {
    schema: ApiSchema,
    api: ApiState,
    timeout: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

const DASHBOARD: &str = include_str!("dashboard/index.html");

/// The routes: `POST /graphql`, `GET /graphql` (GraphiQL, or WebSocket subscriptions with the
/// graphql-transport-ws or graphql-ws protocol), `/healthz`, `/readyz` and the dashboard at `/`.
pub fn router(state: ApiState, request_timeout: Duration) -> axum::Router {
    let app = AppState { schema: schema(state.clone()), api: state, timeout: request_timeout };
    axum::Router::new()
        .route("/graphql", get(graphiql_or_ws).post(graphql))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Html(DASHBOARD) }))
        .with_state(app)
}

async fn graphql(State(app): State<AppState>, req: GraphQLRequest) -> Response {
    let req = req.into_inner();
    match tokio::time::timeout(app.timeout, app.schema.execute(req)).await {
        Ok(resp) => GraphQLResponse::from(resp).into_response(),
        Err(_) => {
            let err = ServerError::new(
                format!("the request took longer than {} ms and was stopped; ask for less", app.timeout.as_millis()),
                None,
            );
            GraphQLResponse::from(async_graphql::Response::from_errors(vec![err])).into_response()
        }
    }
}

async fn graphiql_or_ws(State(app): State<AppState>, req: axum::extract::Request) -> Response {
    use axum::extract::FromRequestParts;
    let (mut parts, _) = req.into_parts();
    let upgrade = parts.headers.contains_key(header::UPGRADE);
    let protocol = if upgrade { GraphQLProtocol::from_request_parts(&mut parts, &()).await.ok() } else { None };
    let ws = if upgrade { WebSocketUpgrade::from_request_parts(&mut parts, &()).await.ok() } else { None };
    match (protocol, ws) {
        (Some(protocol), Some(ws)) => {
            let schema = app.schema.clone();
            ws.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
                .on_upgrade(move |socket| GraphQLWebSocket::new(socket, schema, protocol).serve())
                .into_response()
        }
        _ => Html(
            async_graphql::http::GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response(),
    }
}

async fn readyz(State(app): State<AppState>) -> Response {
    let readiness = app.api.readiness.clone();
    match app.api.db.read(move |conn| api::status(conn, &readiness)).await {
        Ok(s) if s.ready => {
            (StatusCode::OK, format!("ready: block {} ({} s behind)\n", s.block, s.lag_seconds)).into_response()
        }
        Ok(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            format!("not ready: the indexer is at block {} ({} s behind the chain)\n", s.block, s.lag_seconds),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

/// Watches the store's cursor (one poll for every subscriber) and publishes each new block:
/// for a server in another process than the indexer.
pub fn watch_cursor(db: Arc<Db>, every: Duration) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut last = None;
        loop {
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

/// Serves the API until `shutdown`. `commits` carries the indexer's committed blocks when it
/// runs in this process; otherwise the cursor is watched.
pub async fn serve(
    config: ServeConfig,
    commits: Option<tokio::sync::watch::Receiver<u64>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let db = Db::open(&config.db, config.pool, config.request_timeout)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
    let commits = commits.unwrap_or_else(|| watch_cursor(db.clone(), Duration::from_millis(200)));
    let state = ApiState { db, readiness: config.readiness.clone(), commits };
    let app = router(state, config.request_timeout);
    let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e} (is another lcw serve running?)", config.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, db = %config.db.display(), "GraphQL API on http://{addr}/graphql, dashboard on http://{addr}/");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
}

/// Refuses documents with more than N aliases (a cheap way to multiply work past the
/// complexity limit's view of a single field).
#[derive(Debug, Clone, Copy)]
pub struct AliasLimit(pub usize);

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

fn count_aliases(set: &Positioned<SelectionSet>) -> usize {
    set.node
        .items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => usize::from(f.node.alias.is_some()) + count_aliases(&f.node.selection_set),
            Selection::InlineFragment(i) => count_aliases(&i.node.selection_set),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

#[async_graphql::async_trait::async_trait]
impl Extension for AliasLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let ops: usize = doc.operations.iter().map(|(_, op)| count_aliases(&op.node.selection_set)).sum();
        let frags: usize = doc.fragments.values().map(|f| count_aliases(&f.node.selection_set)).sum();
        if ops + frags > self.0 {
            return Err(ServerError::new(
                format!("the query uses {} aliases; at most {} are allowed", ops + frags, self.0),
                None,
            ));
        }
        Ok(doc)
    }
}
