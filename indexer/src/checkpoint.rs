//! The WAL checkpointer: copies committed pages from the write-ahead log into the database on
//! its own thread and connection, so the writer never stops to do it.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold, on the
//! writer's thread: during a backfill that was a sixth of the writer's time. Here the writer
//! turns it off and asks this thread for a passive checkpoint after each commit instead; the
//! copy overlaps the next transaction. A passive checkpoint that runs behind a busy writer never
//! lets the WAL start over, so the file would grow with everything written; the writer
//! therefore waits for the checkpointer to catch up before a new transaction once the WAL holds
//! [`WAL_RESTART_FRAMES`] pages, and SQLite then reuses the file from the start.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use lcw_schema::store::{Store, StoreError};

use crate::{IndexerError, IndexerResult};

/// WAL pages (4 KiB each) after which the writer lets the checkpointer catch up so the WAL
/// starts over: about 256 MiB of disk, reached about every 600,000 backfilled logs.
pub const WAL_RESTART_FRAMES: u64 = 65_536;

/// How long the writer waits for a catch-up (a reader holding an old snapshot can keep the
/// checkpoint from finishing; the writer then carries on and tries again later).
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    /// Checkpoints asked for (one per commit).
    requested: u64,
    /// Requests served: every commit up to this one has been looked at by a checkpoint.
    served: u64,
    /// Pages in the WAL at the last checkpoint.
    wal_frames: u64,
    /// Whether that checkpoint copied every page (the WAL can start over).
    complete: bool,
    /// No more requests: the thread ends.
    closed: bool,
}

/// The writer's handle on the checkpointer thread (the thread ends when it is dropped).
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Checkpointer {
    /// Starts the checkpointer thread for the store at `path`.
    pub fn start(path: &Path) -> IndexerResult<Checkpointer> {
        let conn = Store::connect(path)?;
        // A checkpoint copies pages from the WAL file to the database file without the page
        // cache; the default 16 MiB would only add to the process's memory.
        conn.pragma_update(None, "cache_size", -1024).map_err(StoreError::from)?;
        let shared = Arc::new((Mutex::new(State { complete: true, ..State::default() }), Condvar::new()));
        let handle = Checkpointer { shared: shared.clone() };
        let spawned = std::thread::Builder::new().name("lcw-checkpoint".into()).spawn(move || {
            let (lock, cvar) = &*shared;
            loop {
                let target = {
                    let Ok(mut s) = lock.lock() else { return };
                    while s.served == s.requested && !s.closed {
                        s = match cvar.wait(s) {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                    }
                    if s.closed && s.served == s.requested {
                        return;
                    }
                    s.requested
                };
                let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                let Ok(mut s) = lock.lock() else { return };
                s.served = target;
                match result {
                    Ok((busy, log, copied)) => {
                        tracing::debug!(busy, log, copied, "checkpoint");
                        s.wal_frames = log.max(0) as u64;
                        s.complete = busy == 0 && log == copied;
                    }
                    Err(e) => {
                        // The next commit asks again; the writer never waits on a failed one.
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                        s.complete = false;
                    }
                }
                cvar.notify_all();
            }
        });
        spawned.map_err(|e| IndexerError::Internal(format!("cannot start the WAL checkpoint thread: {e}")))?;
        Ok(handle)
    }

    /// Asks for a checkpoint of everything committed so far (after each commit).
    pub fn request(&self) {
        let (lock, cvar) = &*self.shared;
        if let Ok(mut s) = lock.lock() {
            s.requested += 1;
            cvar.notify_all();
        }
    }

    /// At the end of a backfill: lets the checkpointer finish, then copies what is left and
    /// empties the WAL file on `conn` (the writer's) while the checkpointer waits. Best effort,
    /// and never waiting for readers: one that holds an old snapshot (a replica follower copying
    /// the store takes seconds) leaves the WAL for the next checkpoint, where waiting for it would
    /// hold the indexer for as long.
    pub fn truncate(&self, conn: &rusqlite::Connection) {
        let (lock, cvar) = &*self.shared;
        let Ok(s) = lock.lock() else { return };
        let Ok((mut s, _)) = cvar.wait_timeout_while(s, CATCH_UP_WAIT, |s| s.served < s.requested && !s.closed) else {
            return;
        };
        let result = conn
            .busy_timeout(Duration::ZERO)
            .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)));
        let _ = conn.busy_timeout(lcw_schema::store::BUSY_TIMEOUT);
        match result {
            Ok(0) => s.wal_frames = 0,
            Ok(_) => tracing::debug!("WAL still in use by a reader; not truncated"),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy => {
                tracing::debug!("WAL in use by a reader; not truncated")
            }
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }

    /// Before a new transaction: once the WAL is large, waits until every commit has been
    /// checkpointed, so the transaction starts the WAL over.
    pub fn before_transaction(&self) {
        let (lock, cvar) = &*self.shared;
        let Ok(s) = lock.lock() else { return };
        if s.wal_frames < WAL_RESTART_FRAMES {
            return;
        }
        tracing::debug!(wal_frames = s.wal_frames, "waiting for the checkpointer");
        let waited = cvar.wait_timeout_while(s, CATCH_UP_WAIT, |s| s.served < s.requested && !s.closed);
        if let Ok((mut s, timeout)) = waited {
            if timeout.timed_out() || !s.complete {
                tracing::debug!(wal_frames = s.wal_frames, "WAL checkpoint could not catch up; carrying on");
            }
            // Whether or not it started over, wait again only after the next checkpoint says so.
            s.wal_frames = 0;
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The thread finishes the request it is on and exits.
        let (lock, cvar) = &*self.shared;
        if let Ok(mut s) = lock.lock() {
            s.closed = true;
            cvar.notify_all();
        }
    }
}
