//! One GraphQL WebSocket (graphql-transport-ws or graphql-ws): at most `operations` operations
//! at once on it, each document checked on a blocking thread before the schema sees it, queries
//! held to the request time limit; a WebSocket ping every third of the idle timeout, and the
//! socket closed when the client sent nothing (not even the pong) for the idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_graphql::parser::types::OperationType;
use async_graphql::{Data, Executor, Request, Response, ServerError};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{self, BoxStream, Stream};
use futures::{SinkExt, StreamExt};

use crate::ApiSchema;
use crate::guard::{Guard, prepare_off_runtime};

/// The bounds of one socket.
#[derive(Debug, Clone)]
pub(crate) struct SocketLimits {
    /// Operations running at once.
    pub(crate) operations: usize,
    /// Longest the client may stay silent.
    pub(crate) idle: Duration,
    /// Longest a query (not a subscription) may take.
    pub(crate) request_timeout: Duration,
}

/// Serves one upgraded socket until either side closes it; `permit` is its place among the
/// WebSockets the server allows.
pub(crate) async fn serve(
    socket: WebSocket,
    schema: ApiSchema,
    guard: Guard,
    protocol: GraphQLProtocol,
    limits: SocketLimits,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let heard = Arc::new(AtomicU64::new(0));
    let (mut sink, incoming) = socket.split();
    let seen = heard.clone();
    let incoming = incoming.inspect(move |_| seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed));
    // The GraphQL session writes into a channel; this task forwards it and interleaves pings.
    let (tx, mut rx) = futures::channel::mpsc::channel::<Message>(16);
    let executor = Capped { schema, guard, open: Arc::new(AtomicUsize::new(0)), limits: limits.clone() };
    let session = GraphQLWebSocket::new_with_pair(tx, incoming, executor, protocol).serve();
    let forward = async {
        let mut ping = tokio::time::interval((limits.idle / 3).max(Duration::from_millis(100)));
        ping.tick().await;
        loop {
            tokio::select! {
                m = rx.next() => match m {
                    Some(m) => if sink.send(m).await.is_err() { return },
                    None => return,
                },
                _ = ping.tick() => {
                    let silent = started.elapsed().saturating_sub(Duration::from_millis(heard.load(Ordering::Relaxed)));
                    if silent >= limits.idle {
                        let reason = format!("idle for {} s", limits.idle.as_secs());
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1001, reason: reason.into() }))).await;
                        return;
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = session => {}
        _ = forward => {}
    }
    drop(permit);
}

/// The schema as this socket's executor: counts its operations and checks each document off the
/// runtime before the schema runs it.
#[derive(Clone)]
struct Capped {
    schema: ApiSchema,
    guard: Guard,
    open: Arc<AtomicUsize>,
    limits: SocketLimits,
}

impl Executor for Capped {
    fn execute(&self, request: Request) -> impl Future<Output = Response> + Send {
        let schema = self.schema.clone();
        async move { schema.execute(request).await }
    }

    fn execute_stream(&self, request: Request, session: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        let Some(slot) = Slot::take(&self.open, self.limits.operations) else {
            let message = format!(
                "at most {} operations may run at once on one WebSocket; complete one first (or open another socket)",
                self.limits.operations
            );
            return stream::once(async move { Response::from_errors(vec![ServerError::new(message, None)]) }).boxed();
        };
        let this = self.clone();
        let responses = stream::once(async move {
            match prepare_off_runtime(request, *this.guard.limits(), this.guard.gate()).await {
                Err(e) => stream::once(async move { Response::from_errors(vec![e]) }).boxed(),
                Ok((request, ty)) => {
                    let inner = this.schema.execute_stream_with_session_data(request, session.unwrap_or_default());
                    match ty {
                        Some(OperationType::Subscription) => inner,
                        _ => within(inner, this.limits.request_timeout),
                    }
                }
            }
        })
        .flatten();
        Counted { inner: responses.boxed(), _slot: slot }.boxed()
    }
}

/// A query's single response, or a timeout error.
fn within(mut inner: BoxStream<'static, Response>, limit: Duration) -> BoxStream<'static, Response> {
    stream::once(async move {
        match tokio::time::timeout(limit, inner.next()).await {
            Ok(r) => r,
            Err(_) => Some(Response::from_errors(vec![ServerError::new(
                format!("the request took longer than {} ms and was stopped; ask for less", limit.as_millis()),
                None,
            )])),
        }
    })
    .filter_map(futures::future::ready)
    .boxed()
}

/// One running operation of a socket.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that holds its operation's [`Slot`] until it ends or is dropped (completed by the
/// client, replaced under the same id, or the socket closed).
struct Counted {
    inner: BoxStream<'static, Response>,
    _slot: Slot,
}

impl Stream for Counted {
    type Item = Response;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        self.inner.poll_next_unpin(cx)
    }
}
