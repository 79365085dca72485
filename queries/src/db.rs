//! Read-only access to the store for resolvers: a small pool of read-only connections, each
//! query on a blocking thread, stopped when it outlives the per-query time limit. The store is
//! the SQLite file itself or its PostgreSQL replica (`lcw serve --store postgres://…`): resolvers
//! read through [`lcw_schema::store::sql::Db`], which runs the store's read functions on either.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lcw_replica::ReplicaUrl;
use lcw_replica::reader::Reader;
use lcw_schema::store::sql::Db as Sql;
use lcw_schema::store::{Store, StoreError};
use tokio::sync::Semaphore;

/// Why a read failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store failed or holds something unreadable.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The query ran out of time.
    #[error("the query took longer than {0} ms and was stopped; ask for less (a smaller page or time range)")]
    Timeout(u128),
    /// A blocking thread could not run the query.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Store(StoreError::Sqlite(e))
    }
}

/// Where the API reads: the store file, or a PostgreSQL replica of it.
#[derive(Debug, Clone)]
pub enum Source {
    /// The SQLite store.
    Sqlite(PathBuf),
    /// A replica (`lcw replicate`, `lcw index --replica`), or a streaming standby of one.
    Postgres(Box<ReplicaUrl>),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Sqlite(p) => write!(f, "{}", p.display()),
            // Password redacted.
            Source::Postgres(u) => write!(f, "{u}"),
        }
    }
}

/// One pooled read connection.
enum Conn {
    Sqlite(Store),
    Postgres(Box<Reader>),
}

impl Conn {
    fn sql(&self) -> &dyn Sql {
        match self {
            Conn::Sqlite(s) => s.conn(),
            Conn::Postgres(r) => r.as_ref(),
        }
    }

    fn stopper(&self) -> Stopper {
        match self {
            Conn::Sqlite(s) => Stopper::Sqlite(s.conn().get_interrupt_handle()),
            Conn::Postgres(r) => Stopper::Postgres(r.cancel_token()),
        }
    }

    /// Whether the connection can serve again.
    fn reusable(&self) -> bool {
        match self {
            Conn::Sqlite(_) => true,
            Conn::Postgres(r) => !r.is_closed(),
        }
    }
}

/// Stops the statement a connection runs, from another thread.
enum Stopper {
    Sqlite(rusqlite::InterruptHandle),
    Postgres(postgres::CancelToken),
}

impl Stopper {
    fn stop(self) {
        match self {
            Stopper::Sqlite(h) => h.interrupt(),
            // Cancelling opens a connection to the server: never on the async runtime's threads.
            Stopper::Postgres(t) => {
                let _ = std::thread::Builder::new().name("lcw-pg-cancel".into()).spawn(move || {
                    let _ = t.cancel_query(postgres::NoTls);
                });
            }
        }
    }
}

/// A pool of read-only connections to one store.
pub struct Db {
    source: Source,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    timeout: Duration,
    /// Earnings by their arguments.
    pub(crate) earnings: Memo<Vec<crate::types::EarningsBucket>>,
    /// Exit plans by worker.
    pub(crate) exit_plans: Memo<crate::types::ExitPlan>,
    /// Held while an aggregate is computed: concurrent requests for it wait for the first one's
    /// result instead of all computing it at once.
    pub(crate) aggregate_gate: tokio::sync::Mutex<()>,
    /// A replica's head, as its notifications announce it.
    pub(crate) pushed: Pushed,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("source", &self.source.to_string()).field("timeout", &self.timeout).finish()
    }
}

/// The store's version: the cursor block and its hash (a reorg can bring back a block number
/// with other contents).
pub(crate) type Version = (u64, alloy::primitives::B256);

/// The store's current [`Version`] (None for an empty store).
pub(crate) fn version(conn: &dyn Sql) -> Result<Option<Version>, ReadError> {
    Ok(lcw_schema::store::raw::Cursor::get(conn)?.map(|c| (c.block_number, c.block_hash)))
}

/// The store's head: its [`Version`] and the cursor block's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) version: Version,
    /// 0 while the store holds no block at or below its cursor (a cursor set before any block).
    pub(crate) timestamp: u64,
}

/// The store's head (None for an empty store).
pub(crate) fn read_head(conn: &dyn Sql) -> Result<Option<Head>, ReadError> {
    let Some(c) = lcw_schema::store::raw::Cursor::get(conn)? else { return Ok(None) };
    let timestamp = lcw_schema::store::raw::BlockRow::at_or_below(conn, c.block_number)?.map_or(0, |b| b.timestamp);
    Ok(Some(Head { version: (c.block_number, c.block_hash), timestamp }))
}

/// The head of a PostgreSQL replica as its commit notifications announce it ([`crate::listen`]),
/// so that an answer memoized for the current version is served without a read (each read is a
/// round trip to PostgreSQL). Known only while a LISTEN connection hears the replicating
/// process: the head is then read again at once on each notification, and every half second
/// besides. A streaming standby hears none, and its requests read the cursor themselves.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    listening: std::sync::atomic::AtomicBool,
    head: Mutex<Option<Head>>,
}

impl Pushed {
    /// The head, while notifications are heard.
    pub(crate) fn get(&self) -> Option<Head> {
        *self.head.lock().ok()?
    }

    /// Whether a LISTEN connection hears the notifications; once it does not, the head is
    /// forgotten until one does again and the head has been read after that.
    pub(crate) fn listening(&self, on: bool) {
        self.listening.store(on, std::sync::atomic::Ordering::SeqCst);
        if !on && let Ok(mut head) = self.head.lock() {
            *head = None;
        }
    }

    /// The head just read: kept while notifications are heard (checked under the lock, so a
    /// connection lost meanwhile never leaves a head behind).
    pub(crate) fn offer(&self, head: Option<Head>) {
        if let Ok(mut h) = self.head.lock() {
            *h = if self.listening.load(std::sync::atomic::Ordering::SeqCst) { head } else { None };
        }
    }
}

/// Results of a query by its arguments, for one version of the store. They only change when the
/// indexer commits, while dashboards and exit-plan countdowns ask for the same ones over and over
/// (a network-wide month of daily earnings sums ~100,000 hourly rows: seconds per request under
/// load). Only results of the exact current version are served; storing one of another version
/// drops the rest.
#[derive(Debug)]
pub(crate) struct Memo<T> {
    entries: Mutex<(Option<Version>, Results<T>)>,
}

/// A memo's results of one version, by key.
type Results<T> = std::collections::HashMap<String, Arc<T>>;

/// Distinct argument sets kept per version.
const MEMO_ENTRIES: usize = 256;

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo { entries: Mutex::new((None, std::collections::HashMap::new())) }
    }
}

impl<T> Memo<T> {
    /// The result for `key` at `version`, if there is one.
    pub(crate) fn get(&self, version: Version, key: &str) -> Option<Arc<T>> {
        let entries = self.entries.lock().ok()?;
        if entries.0 != Some(version) {
            return None;
        }
        entries.1.get(key).cloned()
    }

    /// Stores the result for `key` at `version`.
    pub(crate) fn put(&self, version: Version, key: String, value: Arc<T>) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.0 != Some(version) || entries.1.len() >= MEMO_ENTRIES {
            entries.1.clear();
            entries.0 = Some(version);
        }
        entries.1.insert(key, value);
    }
}

impl Db {
    /// Opens `size` read-only connections to the store file lazily (the store must exist:
    /// `Store::open_readonly` fails with a clear error otherwise).
    pub fn open(path: &Path, size: usize, timeout: Duration) -> Result<Arc<Db>, StoreError> {
        Db::connect(Source::Sqlite(path.to_owned()), size, timeout)
    }

    /// Opens `size` read-only connections to `source` lazily; the first one now, so that a
    /// missing store or an unreachable replica is reported at start. Blocks: call it on a
    /// blocking thread (PostgreSQL's client cannot connect on an async runtime's thread).
    pub fn connect(source: Source, size: usize, timeout: Duration) -> Result<Arc<Db>, StoreError> {
        let first = open_conn(&source, timeout)?;
        Ok(Arc::new(Db {
            source,
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size.max(1)),
            timeout,
            earnings: Memo::default(),
            exit_plans: Memo::default(),
            aggregate_gate: tokio::sync::Mutex::new(()),
            pushed: Pushed::default(),
        }))
    }

    /// The store's head: as notifications announced it, or read (None for an empty store).
    pub(crate) async fn head(self: &Arc<Self>) -> Result<Option<Head>, ReadError> {
        match self.pushed.get() {
            Some(head) => Ok(Some(head)),
            None => self.read(read_head).await,
        }
    }

    /// What the API reads.
    pub fn source(&self) -> &Source {
        &self.source
    }

    fn take(&self) -> Result<Conn, StoreError> {
        let pooled = self.idle.lock().map_err(|_| StoreError::Thread("store pool poisoned".into()))?.pop();
        match pooled {
            Some(c) => Ok(c),
            None => open_conn(&self.source, self.timeout),
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.reusable()
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled connection in a blocking thread, within the time limit.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<T, ReadError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|e| ReadError::Internal(e.to_string()))?;
        // A request thread may block: the read runs here. PostgreSQL's client blocks on a runtime
        // of its own, which cannot run inside this one's `block_on`; the request threads poll
        // requests with an executor of their own (`crate::endpoint`), so it can. Elsewhere (the
        // runtime's own threads) reads go to a blocking thread.
        if crate::runner::on_runner() {
            return self.read_here(self.take()?, f);
        }
        // Stops the query if this future is dropped (the request's own time limit, a client
        // that went away) or the time limit passes, so no abandoned query keeps a thread busy.
        let slot = Arc::new(Mutex::new(Slot::default()));
        let mut guard = Interrupt { slot: Some(slot.clone()) };
        let db = self.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let conn = db.take()?;
            if let Ok(mut s) = slot.lock() {
                s.stopper = Some(conn.stopper());
            }
            let out = f(conn.sql());
            // Marked under the lock, so an interrupt can never reach the connection once it is
            // back in the pool serving someone else. SQLite's interrupt acts at once; a
            // PostgreSQL cancel travels over a connection of its own and may land later, on the
            // next statement: a connection that was sent one is closed, never pooled.
            let cancelled = match slot.lock() {
                Ok(mut s) => {
                    s.done = true;
                    s.stopper.is_none()
                }
                Err(_) => true,
            };
            if cancelled && matches!(conn, Conn::Postgres(_)) {
                drop(conn);
            } else {
                db.give_back(conn);
            }
            out
        });
        let started = std::time::Instant::now();
        let out = tokio::select! {
            r = &mut task => match r.map_err(|e| ReadError::Internal(e.to_string()))? {
                // PostgreSQL's own statement_timeout may end the statement a moment before the
                // timer below fires: the same time limit, reported the same way.
                Err(ReadError::Store(_)) if started.elapsed() >= self.timeout => {
                    Err(ReadError::Timeout(self.timeout.as_millis()))
                }
                out => out,
            },
            _ = tokio::time::sleep(self.timeout) => {
                guard.fire();
                let _ = task.await;
                Err(ReadError::Timeout(self.timeout.as_millis()))
            }
        };
        guard.slot = None;
        out
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // A PostgreSQL connection closes by blocking on its client's own runtime, which cannot
        // happen on an async runtime's thread, where the last handle may well be dropped.
        let idle = self.idle.get_mut().map(std::mem::take).unwrap_or_default();
        if idle.iter().any(|c| matches!(c, Conn::Postgres(_))) {
            let _ = std::thread::Builder::new().name("lcw-pg-close".into()).spawn(move || drop(idle));
        }
    }
}

/// A new connection to `source`.
fn open_conn(source: &Source, timeout: Duration) -> Result<Conn, StoreError> {
    match source {
        Source::Sqlite(path) => Store::open_readonly(path).map(Conn::Sqlite),
        // The statement time limit is the request's (PostgreSQL stops it there itself).
        Source::Postgres(url) => Reader::connect(url, timeout)
            .map(|r| Conn::Postgres(Box::new(r)))
            .map_err(|e| StoreError::Postgres(e.to_string())),
    }
}

impl Db {
    /// Runs `f` on this thread (an API request thread, where blocking is the point), with a timer
    /// on the runtime that stops it at the time limit.
    fn read_here<T, F>(&self, conn: Conn, f: F) -> Result<T, ReadError>
    where
        F: FnOnce(&dyn Sql) -> Result<T, ReadError>,
    {
        let slot = Arc::new(Mutex::new(Slot { stopper: Some(conn.stopper()), done: false }));
        let mut alarm = Interrupt { slot: Some(slot.clone()) };
        let limit = self.timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            alarm.fire();
        });
        let started = std::time::Instant::now();
        let out = f(conn.sql());
        // As in `read`: a PostgreSQL connection that was sent a cancel is closed, never pooled.
        let cancelled = match slot.lock() {
            Ok(mut s) => {
                s.done = true;
                s.stopper.is_none()
            }
            Err(_) => true,
        };
        timer.abort();
        if cancelled && matches!(conn, Conn::Postgres(_)) {
            drop(conn);
        } else {
            self.give_back(conn);
        }
        match out {
            Err(ReadError::Store(_)) if started.elapsed() >= limit => Err(ReadError::Timeout(limit.as_millis())),
            out => out,
        }
    }
}

/// What stops a running read: the connection's stopper once it has one, and whether the read
/// is over (then nothing may be stopped: the connection may serve someone else).
#[derive(Default)]
struct Slot {
    stopper: Option<Stopper>,
    done: bool,
}

struct Interrupt {
    slot: Option<Arc<Mutex<Slot>>>,
}

impl Interrupt {
    fn fire(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(mut s) = slot.lock()
            && !s.done
            && let Some(stopper) = s.stopper.take()
        {
            stopper.stop();
        }
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.fire();
    }
}

#[cfg(test)]
mod memo_tests {
    use super::*;
    use alloy::primitives::B256;

    #[test]
    fn a_memo_serves_only_results_of_the_current_store_version() {
        let memo = Memo::<u32>::default();
        let (v10, v11) = ((10, B256::repeat_byte(1)), (11, B256::repeat_byte(2)));
        memo.put(v10, "a".into(), Arc::new(1));
        assert_eq!(memo.get(v10, "a").as_deref(), Some(&1));
        assert!(memo.get(v10, "b").is_none(), "another key");
        assert!(memo.get(v11, "a").is_none(), "a newer block must recompute");
        assert!(memo.get((10, B256::repeat_byte(9)), "a").is_none(), "the same number after a reorg must recompute");
        memo.put(v11, "a".into(), Arc::new(2));
        assert!(memo.get(v10, "a").is_none(), "older versions are dropped");
        assert_eq!(memo.get(v11, "a").as_deref(), Some(&2));
        for i in 0..MEMO_ENTRIES + 5 {
            memo.put(v11, format!("k{i}"), Arc::new(0));
        }
        assert!(memo.entries.lock().unwrap().1.len() <= MEMO_ENTRIES, "bounded");
    }
}
