//! Read-only access to the store for resolvers: a small pool of read-only connections, each
//! query on a blocking thread, interrupted when it outlives the per-query time limit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lcw_schema::store::{Store, StoreError};
use rusqlite::Connection;
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

/// A pool of read-only connections to one store file.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
    permits: Semaphore,
    timeout: Duration,
    /// Earnings by their arguments.
    pub(crate) earnings: Memo<Vec<crate::types::EarningsBucket>>,
    /// Exit plans by worker.
    pub(crate) exit_plans: Memo<crate::types::ExitPlan>,
    /// Held while an aggregate is computed: concurrent requests for it wait for the first one's
    /// result instead of all computing it at once.
    pub(crate) aggregate_gate: tokio::sync::Mutex<()>,
}

/// The store's version: the cursor block and its hash (a reorg can bring back a block number
/// with other contents).
pub(crate) type Version = (u64, alloy::primitives::B256);

/// The store's current [`Version`] (None for an empty store).
pub(crate) fn version(conn: &Connection) -> Result<Option<Version>, ReadError> {
    Ok(lcw_schema::store::raw::Cursor::get(conn)?.map(|c| (c.block_number, c.block_hash)))
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
    /// Opens `size` read-only connections lazily (the store must exist: `Store::open_readonly`
    /// fails with a clear error otherwise).
    pub fn open(path: &Path, size: usize, timeout: Duration) -> Result<Arc<Db>, StoreError> {
        let first = Store::open_readonly(path)?;
        Ok(Arc::new(Db {
            path: path.to_owned(),
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(size.max(1)),
            timeout,
            earnings: Memo::default(),
            exit_plans: Memo::default(),
            aggregate_gate: tokio::sync::Mutex::new(()),
        }))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn take(&self) -> Result<Store, StoreError> {
        let pooled = self.idle.lock().map_err(|_| StoreError::Thread("store pool poisoned".into()))?.pop();
        match pooled {
            Some(s) => Ok(s),
            None => Store::open_readonly(&self.path),
        }
    }

    fn give_back(&self, store: Store) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(store);
        }
    }

    /// Runs `f` on a pooled connection in a blocking thread, within the time limit.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|e| ReadError::Internal(e.to_string()))?;
        let store = self.take()?;
        if crate::runner::on_runner() {
            return self.read_here(store, f);
        }
        // Interrupts the query if this future is dropped (the request's own time limit, a client
        // that went away) or the time limit passes, so no abandoned query keeps a thread busy.
        let done = Arc::new(Mutex::new(false));
        let mut guard = Interrupt { handle: Some(store.conn().get_interrupt_handle()), done: done.clone() };
        let db = self.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let out = f(store.conn());
            // Marked under the lock, so an interrupt can never reach the connection once it is
            // back in the pool serving someone else.
            if let Ok(mut d) = done.lock() {
                *d = true;
            }
            db.give_back(store);
            out
        });
        let out = tokio::select! {
            r = &mut task => r.map_err(|e| ReadError::Internal(e.to_string()))?,
            _ = tokio::time::sleep(self.timeout) => {
                guard.fire();
                let _ = task.await;
                Err(ReadError::Timeout(self.timeout.as_millis()))
            }
        };
        guard.handle = None;
        out
    }
}

impl Db {
    /// Runs `f` on this thread (an API request thread, where blocking is the point), with a timer
    /// on the runtime that interrupts it at the time limit.
    fn read_here<T, F>(&self, store: Store, f: F) -> Result<T, ReadError>
    where
        F: FnOnce(&Connection) -> Result<T, ReadError>,
    {
        let done = Arc::new(Mutex::new(false));
        let mut alarm = Interrupt { handle: Some(store.conn().get_interrupt_handle()), done: done.clone() };
        let limit = self.timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            alarm.fire();
        });
        let started = std::time::Instant::now();
        let out = f(store.conn());
        if let Ok(mut d) = done.lock() {
            *d = true;
        }
        timer.abort();
        self.give_back(store);
        match out {
            Err(ReadError::Store(_)) if started.elapsed() >= limit => Err(ReadError::Timeout(limit.as_millis())),
            out => out,
        }
    }
}

struct Interrupt {
    handle: Option<rusqlite::InterruptHandle>,
    done: Arc<Mutex<bool>>,
}

impl Interrupt {
    fn fire(&mut self) {
        if let Some(h) = self.handle.take()
            && let Ok(done) = self.done.lock()
            && !*done
        {
            h.interrupt();
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
