//! The follow loop shared by `lcw replicate` and the follower `lcw index --replica` and `lcw run
//! --replica` keep in-process: connect, copy the store when the replica holds no copy of it (or
//! when asked), then [`Replica::follow_once`] each time the store commits, until stopped.
//!
//! The loop runs on a thread of its own (the PostgreSQL client is synchronous) and never touches
//! the indexer: it reads the store through its own read-only connection, so the indexer's
//! commits never wait for it, and learns of them through [`Signal::wake`], which only sets a
//! flag. While PostgreSQL is down or refuses, the loop warns once, retries with a growing pause
//! (up to [`FollowConfig::max_backoff`]) and keeps [`ReplicaStatus`] current from the store
//! side, so the lag goes on growing where it is shown; back, it catches up from the change log
//! (or copies anew when the entries it needs were pruned meanwhile: `follow_once` decides).
//! Errors that do not pass by themselves (another network, a login refused, a replica edited by
//! hand) end it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lcw_schema::store::changes::{self, Since};
use lcw_schema::store::raw::Cursor;
use lcw_schema::store::{Identity, Store, StoreError, unix_now};

use crate::status::ReplicaStatus;
use crate::{Applied, CopyReport, Replica, ReplicaError, ReplicaResult, ReplicaUrl};

/// What the follower follows, and how.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// The replica.
    pub url: ReplicaUrl,
    /// The store (read-only; it must exist and record its network).
    pub db: PathBuf,
    /// How long to wait for a [`Signal::wake`] before looking at the store anyway.
    pub poll: Duration,
    /// Copy the store whole first, even when the replica could catch up from where it stands.
    pub copy: bool,
    /// Copy or catch up to the store as it is, then return; the first error is returned.
    pub once: bool,
    /// The longest pause between attempts while the replica cannot be reached.
    pub max_backoff: Duration,
}

impl FollowConfig {
    /// Following `db` into `url`: looking every 500 ms, retrying up to every 30 s.
    pub fn new(url: ReplicaUrl, db: PathBuf) -> FollowConfig {
        FollowConfig {
            url,
            db,
            poll: Duration::from_millis(500),
            copy: false,
            once: false,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Tells a running [`Follower`] that the store committed, or to stop.
#[derive(Debug, Default)]
pub struct Signal {
    state: Mutex<Flags>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Flags {
    woken: bool,
    stop: bool,
    finish: bool,
    backfilling: bool,
}

/// While the indexer beside it backfills, the follower is busy at most one part in this many of
/// the time: after a catch-up that took `t`, it rests `(GIVE_WAY - 1) × t`, and at least
/// [`BACKFILL_PAUSE`]. A backfill is the one time the indexer can use the whole machine, and
/// every CPU second the follower and PostgreSQL take is a second of backfill (on two cores a
/// follower that kept pace made a backfill of a million events three times slower: `make
/// bench-replica`). When the backfill ends, the follower catches up at once, and a replica left
/// holding less than it lacks is copied whole, the fast way ([`crate::Recopy::Behind`]).
const GIVE_WAY: u32 = 5;
/// The shortest rest between catch-ups while the indexer backfills.
const BACKFILL_PAUSE: Duration = Duration::from_secs(30);

impl Signal {
    /// The store committed: look now rather than at the next poll. Never blocks for longer than
    /// setting a flag.
    pub fn wake(&self) {
        self.set(|f| f.woken = true);
    }

    /// The store committed, and the indexer is (`true`) or is no longer (`false`) backfilling:
    /// while it is, the follower catches up in fewer, larger steps and rests between them so as
    /// to leave the indexer the machine ([`GIVE_WAY`]).
    pub fn wake_backfilling(&self, backfilling: bool) {
        self.set(|f| {
            f.woken = true;
            f.backfilling = backfilling;
        });
    }

    /// Stop after the current transaction.
    pub fn stop(&self) {
        self.set(|f| f.stop = true);
    }

    /// Catch up to the store as it is now, then stop (an error while doing so is returned rather
    /// than retried).
    pub fn finish(&self) {
        self.set(|f| f.finish = true);
    }

    fn set(&self, f: impl FnOnce(&mut Flags)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).stop
    }

    fn finishing(&self) -> bool {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).finish
    }

    /// While the indexer backfills, waits up to `rest` for the backfill to end, a stop or a
    /// finish; returns whether it was asked to stop.
    fn give_way(&self, rest: Duration) -> bool {
        let flags = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (flags, _) = self
            .changed
            .wait_timeout_while(flags, rest, |f| f.backfilling && !(f.stop || f.finish))
            .unwrap_or_else(PoisonError::into_inner);
        flags.stop
    }

    /// Waits up to `timeout` for a wake or a stop; returns whether it was asked to stop.
    fn wait(&self, timeout: Duration) -> bool {
        let flags = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut flags, _) = self
            .changed
            .wait_timeout_while(flags, timeout, |f| !(f.woken || f.stop || f.finish))
            .unwrap_or_else(PoisonError::into_inner);
        flags.woken = false;
        flags.stop
    }
}

/// What the loop did, for a command to print.
#[derive(Debug)]
pub enum Step<'a> {
    /// The first copy (the replica held none of this store, or a copy was asked for).
    Copied(&'a CopyReport),
    /// One catch-up (it may have copied the store anew: [`Applied::recopied`]).
    Applied(&'a Applied),
}

/// The follow loop: see the module's documentation.
#[derive(Debug)]
pub struct Follower {
    config: FollowConfig,
    status: Arc<ReplicaStatus>,
    signal: Arc<Signal>,
}

impl Follower {
    /// A follower for `config`, not started.
    pub fn new(config: FollowConfig) -> Follower {
        Follower { config, status: Arc::default(), signal: Arc::default() }
    }

    /// Where the replica stands, updated as the loop goes.
    pub fn status(&self) -> Arc<ReplicaStatus> {
        self.status.clone()
    }

    /// Wakes or stops the loop.
    pub fn signal(&self) -> Arc<Signal> {
        self.signal.clone()
    }

    /// Runs the loop on the calling thread until stopped (or, with `once` or
    /// [`Signal::finish`], caught up), calling `report` after each copy and catch-up.
    pub fn run(self, mut report: impl FnMut(Step<'_>)) -> ReplicaResult<()> {
        let store = Store::open_readonly(&self.config.db)?;
        let identity = store.identity()?.ok_or_else(|| StoreError::Missing(self.config.db.clone()))?;
        let mut replica: Option<Replica> = None;
        let mut copy = self.config.copy;
        let mut first = true;
        let mut pause = self.config.poll;
        let mut outage: Option<(Instant, u64)> = None;
        let mut rest_until: Option<Instant> = None;
        loop {
            if self.signal.stopped() {
                return Ok(());
            }
            // While the indexer backfills, wait out the rest after the last catch-up; it ends
            // early when the backfill does (or on a stop or a finish).
            if let Some(until) = rest_until.take()
                && self.signal.give_way(until.saturating_duration_since(Instant::now()))
            {
                return Ok(());
            }
            let finishing = self.config.once || self.signal.finishing();
            let started = Instant::now();
            match self.step(&store, &identity, &mut replica, &mut copy, &mut first, &mut report) {
                Ok(applied) => {
                    if let Some((since, failures)) = outage.take() {
                        tracing::info!(
                            replica = %self.config.url,
                            outage_secs = since.elapsed().as_secs(),
                            failures,
                            block = applied.cursor.map(|c| c.block_number),
                            "the replica is reachable again and caught up"
                        );
                    }
                    pause = self.config.poll;
                    self.refresh(&store);
                    if applied.changed() {
                        rest_until = Some(Instant::now() + (started.elapsed() * (GIVE_WAY - 1)).max(BACKFILL_PAUSE));
                    }
                    if applied.partial {
                        continue;
                    }
                    if finishing {
                        return Ok(());
                    }
                    if self.signal.wait(self.config.poll) {
                        return Ok(());
                    }
                }
                Err(e) if !e.passes() || finishing => {
                    self.failed(&e);
                    return Err(e);
                }
                Err(e) => {
                    // The connection may be half-dead: the next attempt connects anew.
                    replica = None;
                    self.failed(&e);
                    match &mut outage {
                        None => {
                            tracing::warn!(
                                replica = %self.config.url,
                                error = %e,
                                "the replica cannot be brought up to the store; the store goes on, and the replica \
                                 catches up from the change log once it is back (retrying with backoff)"
                            );
                            outage = Some((Instant::now(), 1));
                        }
                        Some((_, failures)) => {
                            *failures += 1;
                            tracing::debug!(error = %e, failures = *failures, "the replica is still unreachable");
                        }
                    }
                    pause = (pause * 2).clamp(Duration::from_millis(500), self.config.max_backoff);
                    if self.pause(&store, pause) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Connects when not connected (copying first when the replica holds no copy, or when asked),
    /// then catches up once.
    fn step(
        &self,
        store: &Store,
        identity: &Identity,
        replica: &mut Option<Replica>,
        copy: &mut bool,
        first: &mut bool,
        report: &mut impl FnMut(Step<'_>),
    ) -> ReplicaResult<Applied> {
        let url = &self.config.url;
        let replica = match replica {
            Some(r) => r,
            None => {
                let mut r = Replica::connect(url, identity)?;
                match r.cursor()? {
                    Some(c) if !*copy => {
                        if *first {
                            tracing::info!(block = c.block_number, seq = c.seq, replica = %url, "resuming");
                        }
                    }
                    _ => {
                        tracing::info!(store = %self.config.db.display(), replica = %url, "copying the store");
                        let copied = r.copy_from(store)?;
                        *copy = false;
                        report(Step::Copied(&copied));
                    }
                }
                *first = false;
                replica.insert(r)
            }
        };
        let applied = replica.follow_once(store)?;
        let block = applied.cursor.map(|c| c.block_number);
        if let Some((why, _)) = &applied.recopied {
            tracing::warn!(replica = %url, "copied the store anew: {why}");
        } else if applied.entries > 0 {
            tracing::info!(
                entries = applied.entries,
                upserted = applied.upserted,
                deleted = applied.deleted,
                block_rows = applied.block_rows,
                block,
                seq = applied.seq,
                lag_blocks = applied.behind_blocks,
                lag_secs = applied.lag_secs,
                "caught up"
            );
        } else {
            tracing::debug!(block, seq = applied.seq, lag_secs = applied.lag_secs, "replica up to date");
        }
        self.status.update(|s| {
            s.block = block;
            s.hash = applied.cursor.map(|c| c.block_hash);
            s.seq = Some(applied.seq);
            s.updated_at = Some(unix_now());
            s.last_error = None;
            s.failing_since = None;
            s.recopies += u64::from(applied.recopied.is_some());
        });
        report(Step::Applied(&applied));
        Ok(applied)
    }

    fn failed(&self, e: &ReplicaError) {
        let now = unix_now();
        self.status.update(|s| {
            s.last_error = Some(e.to_string());
            s.failing_since.get_or_insert(now);
            s.failed_catchups += 1;
        });
    }

    /// Waits `pause` before the next attempt, looking at the store at each poll (or commit) so
    /// that the lag shown keeps growing through an outage. Returns whether it was asked to stop.
    fn pause(&self, store: &Store, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        loop {
            self.refresh(store);
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.signal.finishing() {
                return false;
            }
            if self.signal.wait(left.min(self.config.poll)) {
                return true;
            }
        }
    }

    /// The store's side of the lag: its cursor and the oldest commit the replica has not applied.
    fn refresh(&self, store: &Store) {
        let seq = self.status.get().seq;
        let read = || -> Result<(Option<u64>, Option<u64>), StoreError> {
            let conn = store.conn();
            let block = Cursor::get(conn)?.map(|c| c.block_number);
            let Some(seq) = seq else { return Ok((block, None)) };
            let pending = match changes::since(conn, seq, 1)? {
                Since::Entries(e) => e.first().map(|c| c.committed_at),
                // Pruned past the replica: the oldest entry kept is newer than what it misses.
                Since::TooOld { oldest } => match changes::since(conn, oldest.saturating_sub(1), 1)? {
                    Since::Entries(e) => e.first().map(|c| c.committed_at),
                    Since::TooOld { .. } => None,
                },
            };
            Ok((block, pending))
        };
        match read() {
            Ok((block, pending)) => self.status.update(|s| {
                s.store_block = block;
                s.pending_since = pending;
            }),
            Err(e) => tracing::debug!(error = %e, "reading the store's cursor for the replica's lag"),
        }
    }
}

impl ReplicaError {
    /// Whether the error may pass by itself (PostgreSQL down, restarting or dropping the
    /// connection, the store busy), so that a follower retries; the others (another network, a
    /// login refused, a replica edited by hand) need someone to act.
    pub fn passes(&self) -> bool {
        match self {
            ReplicaError::Connect { source, .. } => !refused(source),
            ReplicaError::Postgres { .. } | ReplicaError::Store(_) => true,
            // Another network, a migration refused, a replica edited by hand, a value the
            // replica cannot hold: retrying changes nothing.
            _ => false,
        }
    }
}

/// The server refused the login (SQLSTATE class 28) or has no such database (3D000).
fn refused(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("28") || code == "3D000"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_or_a_stop_ends_the_wait_and_only_a_stop_says_stop() {
        let signal = Arc::new(Signal::default());
        let started = Instant::now();
        assert!(!signal.wait(Duration::from_millis(20)), "a timeout is not a stop");
        let waker = signal.clone();
        let woken = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        assert!(!signal.wait(Duration::from_secs(30)), "a wake is not a stop");
        woken.join().unwrap();
        // A wake during a catch-up is not lost: the next wait returns at once.
        signal.wake();
        assert!(!signal.wait(Duration::from_secs(30)));
        signal.stop();
        assert!(signal.wait(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn the_follower_rests_only_while_the_indexer_backfills() {
        let signal = Arc::new(Signal::default());
        // Not backfilling: no rest at all.
        let started = Instant::now();
        assert!(!signal.give_way(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Backfilling: the rest lasts its time...
        signal.wake_backfilling(true);
        let started = Instant::now();
        assert!(!signal.give_way(Duration::from_millis(100)));
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
        // ...unless the backfill ends (or a stop comes) first.
        let ender = signal.clone();
        let ended = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ender.wake_backfilling(false);
        });
        let started = Instant::now();
        assert!(!signal.give_way(Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        ended.join().unwrap();
        signal.wake_backfilling(true);
        signal.stop();
        assert!(signal.give_way(Duration::from_secs(30)), "a stop ends the rest and says stop");
    }
}
