//! `/graphql`: POST runs a query; GET serves GraphiQL, or upgrades to a GraphQL WebSocket.
//!
//! A POST must be `application/json` (multipart uploads and form bodies are refused before any of
//! their bytes are read, so nothing reaches a temporary file), at most `body_bytes` long, and
//! arrive within the header timeout. It then waits for one of `requests` execution slots (within
//! the request time limit, else 503) and runs on that slot's thread ([`crate::runner`], at a lower
//! CPU priority): the document checks ([`crate::guard`]), parsing, validation, execution, its
//! store reads and the response's serialisation never occupy the async runtime's workers, which
//! the indexer, settler and worker share in `lcw run`, nor outrun them for the cores.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::ServerError;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse};
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::guard::{self, Guard};
use crate::runner::Runners;
use crate::socket::{self, SocketLimits};
use crate::{ApiSchema, ApiState, Limits};

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) schema: ApiSchema,
    pub(crate) guard: Guard,
    pub(crate) api: ApiState,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Duration,
    /// Execution slots for POSTed requests.
    pub(crate) running: Arc<Semaphore>,
    /// One thread per slot.
    pub(crate) runners: Arc<Runners>,
    /// Open WebSockets.
    pub(crate) sockets: Arc<Semaphore>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// A refusal as a GraphQL error body (what GraphQL clients and the dashboard read).
fn refused(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message }] });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

pub(crate) async fn post(State(app): State<Endpoint>, req: Request) -> Response {
    let arrived = Instant::now();
    let limit = app.limits.body_bytes;
    let (parts, body) = req.into_parts();
    if !is_json(&parts.headers) {
        return refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as JSON with Content-Type: application/json ({\"query\": ..., \"variables\": ...}); \
             multipart uploads and other bodies are not accepted"
                .into(),
        );
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes; send a smaller query (--api-max-body)"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let read = async {
        let mut data = body.into_data_stream();
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| refused(StatusCode::BAD_REQUEST, format!("reading the body failed: {e}")))?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = match tokio::time::timeout(app.limits.header_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(resp)) => return resp,
        Err(_) => {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} ms", app.limits.header_timeout.as_millis()),
            );
        }
    };
    let mut request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("the body is not one GraphQL request ({{\"query\": ..., \"variables\": ...}}): {e}"),
            );
        }
    };
    let deadline = arrived + app.request_timeout;
    let permit = match tokio::time::timeout_at(deadline, app.running.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            let mut resp = refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the API is busy: {} requests are running and this one waited {} ms; try again shortly",
                    app.limits.requests,
                    app.request_timeout.as_millis()
                ),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return resp;
        }
    };
    let (schema, limits, timeout) = (app.schema.clone(), *app.guard.limits(), app.request_timeout);
    let runtime = tokio::runtime::Handle::current();
    let run = app.runners.run(move || {
        let _permit = permit;
        let response = match guard::prepare(&mut request, &limits) {
            Err(e) => async_graphql::Response::from_errors(vec![e]),
            // Polled by an executor of this thread within the runtime's context (its timers and
            // tasks), not by the runtime's `block_on`: a read on PostgreSQL then runs inline,
            // blocking on its client's own runtime ([`crate::db::Db::read`]).
            Ok(_) => {
                let _context = runtime.enter();
                futures::executor::block_on(async move {
                    match tokio::time::timeout_at(deadline, schema.execute(request)).await {
                        Ok(r) => r,
                        Err(_) => async_graphql::Response::from_errors(vec![ServerError::new(
                            format!(
                                "the request took longer than {} ms and was stopped; ask for less",
                                timeout.as_millis()
                            ),
                            None,
                        )]),
                    }
                })
            }
        };
        GraphQLResponse::from(response).into_response()
    });
    match run.await {
        Ok(resp) => resp,
        Err(e) => refused(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")),
    }
}

/// GET /graphql: a WebSocket upgrade when asked for (graphql-transport-ws or graphql-ws), else
/// GraphiQL.
pub(crate) async fn get(State(app): State<Endpoint>, req: Request) -> Response {
    let (mut parts, _) = req.into_parts();
    if !parts.headers.contains_key(header::UPGRADE) {
        return Html(
            async_graphql::http::GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response();
    }
    let protocol = GraphQLProtocol::from_request_parts(&mut parts, &()).await;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
    let (protocol, ws) = match (protocol, ws) {
        (Ok(p), Ok(ws)) => (p, ws),
        (Err(e), _) => return e.into_response(),
        (_, Err(e)) => return e.into_response(),
    };
    let Ok(permit) = app.sockets.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!(
                "{} WebSockets are open, the most this API allows (--api-max-websockets); close one (another dashboard tab?)\n",
                app.limits.websockets
            ),
        )
            .into_response();
    };
    let limits = SocketLimits {
        operations: app.limits.subscriptions,
        idle: app.limits.idle_timeout,
        request_timeout: app.request_timeout,
    };
    let (schema, guard) = (app.schema.clone(), app.guard.clone());
    ws.max_message_size(app.limits.body_bytes)
        .max_frame_size(app.limits.body_bytes)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| socket::serve(socket, schema, guard, protocol, limits, permit))
        .into_response()
}

pub(crate) async fn readyz(State(app): State<Endpoint>) -> Response {
    let readiness = app.api.readiness.clone();
    match app.api.db.read(move |conn| crate::api::status(conn, &readiness)).await {
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
