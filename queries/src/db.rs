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
