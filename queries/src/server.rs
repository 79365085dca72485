//! The HTTP/1.1 server under the routes: hyper with a timer, so a request's head must arrive
//! within the header timeout; at most `connections` open connections; a connection that moved no
//! byte for the idle timeout (and has no request in flight) is closed.
//!
//! At the cap, a new connection takes the place of the longest-idle one (idle connections cost
//! a file descriptor and nothing else, and a client that wants one back reconnects). Only when
//! every connection has a request in flight is the newcomer answered 503 and closed. So a flood
//! of half-sent or idle connections cannot keep anyone else out, while descriptors stay bounded.
//! A WebSocket leaves this table when it is upgraded (the handler counts those).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::access::LocalAddr;

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) header_bytes: usize,
}

/// Longest a connection being closed (idle, evicted, shutdown) may take to finish what it is
/// writing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One open connection, as the table sees it.
#[derive(Debug)]
struct Conn {
    /// Milliseconds since the server started, at its last byte read or written.
    last_io: AtomicU64,
    /// Requests in flight.
    busy: AtomicUsize,
    close: Notify,
}

/// The open connections.
#[derive(Debug)]
struct Table {
    started: Instant,
    max: usize,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Woken when the table empties (for shutdown).
    emptied: Notify,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A slot for a new connection: a free one, or the longest-idle connection's (closed now).
    /// None when every connection has a request in flight.
    fn admit(self: &Arc<Self>) -> Option<(u64, Arc<Conn>)> {
        let mut open = self.open.lock().ok()?;
        if open.len() >= self.max {
            let victim = open
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, c)| c.last_io.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            if let Some(c) = open.remove(&victim) {
                c.close.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn =
            Arc::new(Conn { last_io: AtomicU64::new(self.now_ms()), busy: AtomicUsize::new(0), close: Notify::new() });
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn leave(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
            if open.is_empty() {
                self.emptied.notify_waiters();
            }
        }
    }

    fn close_all(&self) {
        if let Ok(open) = self.open.lock() {
            for c in open.values() {
                c.close.notify_one();
            }
        }
    }

    fn len(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }
}

/// Accepts on `listener` and serves `app` until `shutdown`; then closes every connection
/// (requests in flight get [`CLOSE_GRACE`] to finish).
pub(crate) async fn run(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    let table = Arc::new(Table {
        started: Instant::now(),
        max: limits.connections.max(1),
        next: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
        emptied: Notify::new(),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.header_bytes)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut shutdown) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: wait a
                // little instead of spinning.
                tracing::warn!(error = %e, open = table.len(), "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, conn)) = table.admit() else {
            refuse(stream, table.max);
            continue;
        };
        let local = stream.local_addr().ok();
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_conn(
            stream,
            local,
            id,
            conn,
            table.clone(),
            app.clone(),
            http.clone(),
            limits.idle_timeout,
        ));
    }
    table.close_all();
    let emptied = table.emptied.notified();
    if table.len() > 0 {
        let _ = tokio::time::timeout(CLOSE_GRACE * 2, emptied).await;
    }
    Ok(())
}

async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Every connection has a request in flight: a short answer, without waiting for the client.
fn refuse(stream: TcpStream, max: usize) {
    let body = format!("the API has {max} connections with requests in flight; try again shortly\n");
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(resp.as_bytes());
    tracing::debug!(max, "refused a connection: every connection is busy");
}

#[allow(clippy::too_many_arguments)]
async fn serve_conn(
    stream: TcpStream,
    local: Option<std::net::SocketAddr>,
    id: u64,
    conn: Arc<Conn>,
    table: Arc<Table>,
    app: axum::Router,
    http: hyper::server::conn::http1::Builder,
    idle: Duration,
) {
    let io = TokioIo::new(Tracked { inner: stream, conn: conn.clone(), table: table.clone() });
    let counter = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(local) = local {
            req.extensions_mut().insert(LocalAddr(local));
        }
        let busy = Busy::new(counter.clone());
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(axum::body::Body::new)).await;
            drop(busy);
            resp
        }
    });
    let served = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(served);
    let check_every = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = served.as_mut() => break,
            _ = conn.close.notified() => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, served.as_mut()).await;
                break;
            }
            _ = tokio::time::sleep(check_every) => {
                let quiet = Duration::from_millis(table.now_ms().saturating_sub(conn.last_io.load(Ordering::Relaxed)));
                if quiet >= idle && conn.busy.load(Ordering::Relaxed) == 0 {
                    served.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, served.as_mut()).await;
                    break;
                }
            }
        }
    }
    table.leave(id);
}

/// Counts a request in flight on its connection while alive.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::Relaxed);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, stamping the connection's last byte moved.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl Tracked {
    fn stamp(&self) {
        self.conn.last_io.store(self.table.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.stamp();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
