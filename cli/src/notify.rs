//! `lcw run` under a service manager: the systemd notification protocol (`sd_notify`), spoken
//! directly (one datagram per message to the unix socket named by `$NOTIFY_SOCKET`, a path or,
//! starting with `@`, an abstract name).
//!
//! [`Supervision::start`] does nothing unless `$NOTIFY_SOCKET` is set. Otherwise it watches the
//! store's cursor, the node's head and the worker loop, and sends:
//! - `READY=1` once, when the indexer has reached the head and the settler and worker have started;
//!   before that, `EXTEND_TIMEOUT_USEC=` while the indexer advances, so a long first sync is not
//!   taken for a hung start;
//! - `STATUS=` when the line changes: the indexed block, the head, and with a worker its open
//!   jobs and the jobs it completed since it started;
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, but only while [`Progress::healthy`]: the cursor
//!   moved within the watchdog window, or the head, read within it, has not moved since; and the
//!   worker loop was polled within it. A stalled indexer, a node that stopped answering or a hung
//!   worker loop stop the keep-alives, and systemd restarts the process;
//! - `STOPPING=1` once, when the stop begins (or when `lcw run` returns).
//!
//! While the worker has jobs it has not completed, a `systemd-inhibit --what=sleep` child holds
//! off suspend (when the command exists and logind answers; otherwise nothing).

use std::future::Future;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use lcw_schema::profile::Profile;

/// The watchdog window when the service manager sets none (used for the stall checks only).
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The longest pause between two looks at the store and the head.
const LOOK_EVERY: Duration = Duration::from_secs(2);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket named by `$NOTIFY_SOCKET`; `None` when it is unset or unusable (said once).
    pub(crate) fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let connect = || -> io::Result<Notifier> {
            let socket = UnixDatagram::unbound()?;
            socket.set_nonblocking(true)?;
            Ok(Notifier { socket, addr: address(name.as_encoded_bytes())? })
        };
        connect().inspect_err(|e| tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable; not notifying")).ok()
    }

    /// Sends one message (`READY=1`, `STATUS=...`, newline-separated assignments).
    pub(crate) fn send(&self, message: &str) -> io::Result<()> {
        self.socket.send_to_addr(message.as_bytes(), &self.addr).map(|_| ())
    }
}

/// The socket address of a `$NOTIFY_SOCKET` value: an absolute path, or `@name` for the abstract
/// name `name` (Linux).
fn address(name: &[u8]) -> io::Result<SocketAddr> {
    match name.first() {
        #[cfg(target_os = "linux")]
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&name[1..])
        }
        Some(b'/') => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(name)))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is neither a path nor an @abstract name")),
    }
}

/// `$WATCHDOG_USEC` when it is meant for this process (`$WATCHDOG_PID` unset or ours).
fn watchdog_window() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What the supervisor last saw, as offsets from its start (pure, so the rule is testable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The store's cursor and when it last changed.
    pub cursor: u64,
    pub cursor_at: Duration,
    /// The node's head, when it was last read and when it last changed.
    pub head: Option<u64>,
    pub head_read_at: Duration,
    pub head_moved_at: Duration,
    /// With a worker: when its loop was last polled.
    pub worker_at: Option<Duration>,
}

impl Progress {
    /// A cursor read from the store at `now`.
    pub(crate) fn cursor_seen(&mut self, cursor: u64, now: Duration) {
        if cursor != self.cursor {
            self.cursor = cursor;
            self.cursor_at = now;
        }
    }

    /// A head read from the node at `now`.
    pub(crate) fn head_seen(&mut self, head: u64, now: Duration) {
        if self.head != Some(head) {
            self.head = Some(head);
            self.head_moved_at = now;
        }
        self.head_read_at = now;
    }

    /// The indexer is at the head (read within `window`).
    pub(crate) fn synced(&self, now: Duration, window: Duration) -> bool {
        self.head.is_some_and(|h| self.cursor >= h) && now.saturating_sub(self.head_read_at) < window
    }

    /// Whether a keep-alive is deserved at `now`: the cursor moved within `window`, or the head
    /// (read within it) has not moved since the cursor last did; and the worker, if any, was
    /// polled within it. A head that cannot be read for a whole window counts as a stall: lcw
    /// cannot tell an idle chain from one it no longer follows.
    pub(crate) fn healthy(&self, now: Duration, window: Duration) -> bool {
        let within = |t: Duration| now.saturating_sub(t) < window;
        let indexer = within(self.cursor_at)
            || (within(self.head_read_at) && (self.head_moved_at <= self.cursor_at || self.synced(now, window)));
        indexer && self.worker_at.is_none_or(within)
    }
}

/// The `STATUS=` line.
fn status_line(progress: &Progress, jobs: Option<Jobs>, healthy: bool) -> String {
    let head = progress.head.map_or_else(|| "unknown".to_owned(), |h| h.to_string());
    let mut line = format!("indexed block {} of head {head}", progress.cursor);
    if let Some(j) = jobs {
        line.push_str(&format!("; {} open jobs, {} served since start", j.open, j.served));
    }
    if !healthy {
        line.push_str("; stalled, no keep-alive");
    }
    line
}

/// The worker's jobs as the store has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Jobs {
    /// Assigned and not completed.
    open: usize,
    /// Completed since lcw started (jobs completed before are not counted).
    served: usize,
}

/// Supervision of one `lcw run`; inert without `$NOTIFY_SOCKET`.
pub(crate) struct Supervision {
    shared: Option<Arc<Shared>>,
}

struct Shared {
    notifier: Notifier,
    epoch: Instant,
    started: AtomicBool,
    stopping: AtomicBool,
    /// Milliseconds since `epoch` of the worker loop's last poll (0: no worker).
    worker_polled: AtomicU64,
}

impl Shared {
    fn stopping(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            let _ = self.notifier.send("STOPPING=1");
        }
    }
}

impl Supervision {
    /// Starts supervising when `$NOTIFY_SOCKET` is set: `db` is the store, `worker` the address
    /// whose jobs the status counts, `stop` the process's stop flag.
    pub(crate) fn start(
        profile: &Profile,
        db: PathBuf,
        worker: Option<Address>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Supervision {
        let Some(notifier) = Notifier::from_env() else { return Supervision { shared: None } };
        let chain = match lcw_chain::Chain::lazy(profile, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "no node client for the service manager's checks; not notifying");
                return Supervision { shared: None };
            }
        };
        let shared = Arc::new(Shared {
            notifier,
            epoch: Instant::now(),
            started: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            worker_polled: AtomicU64::new(0),
        });
        tokio::spawn(supervise(shared.clone(), chain, db, worker, stop));
        Supervision { shared: Some(shared) }
    }

    /// The settler and the worker have been started: `READY=1` may follow.
    pub(crate) fn started(&self) {
        if let Some(s) = &self.shared {
            s.started.store(true, Ordering::SeqCst);
        }
    }

    /// `fut` (the worker loop), each poll recorded: a loop that is never woken again is hung.
    pub(crate) fn worker<F: Future + Send>(&self, fut: F) -> impl Future<Output = F::Output> + Send + use<F> {
        let shared = self.shared.clone();
        let mut fut = Box::pin(fut);
        std::future::poll_fn(move |cx| {
            if let Some(s) = &shared {
                let ms = s.epoch.elapsed().as_millis().max(1) as u64;
                s.worker_polled.store(ms, Ordering::Relaxed);
            }
            fut.as_mut().poll(cx)
        })
    }
}

impl Drop for Supervision {
    fn drop(&mut self) {
        if let Some(s) = &self.shared {
            s.stopping();
        }
    }
}

async fn supervise(
    shared: Arc<Shared>,
    chain: lcw_chain::Chain,
    db: PathBuf,
    worker: Option<Address>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let window = watchdog_window();
    let stall_window = window.unwrap_or(DEFAULT_WINDOW);
    let mut keep_alive = tokio::time::interval(window.map_or(Duration::from_secs(3600), |w| w / 2));
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let now = || shared.epoch.elapsed();
    // The head is read beside the checks, so a node that hangs delays no keep-alive.
    let (head_tx, mut last_head) = tokio::sync::watch::channel(None);
    let epoch = shared.epoch;
    let period = window.map_or(LOOK_EVERY, |w| (w / 2).min(LOOK_EVERY));
    let mut look = tokio::time::interval(period);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        loop {
            if let Ok(Ok(h)) = tokio::time::timeout(period * 4, chain.head()).await
                && head_tx.send(Some((h.number, epoch.elapsed()))).is_err()
            {
                return;
            }
            if head_tx.is_closed() {
                return;
            }
            tokio::time::sleep(period).await;
        }
    });
    let mut progress = Progress::default();
    let mut jobs = JobCounter::default();
    let mut inhibitor = Inhibitor::default();
    let (mut ready, mut status) = (false, String::new());
    while !*stop.borrow() {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            _ = look.tick() => {
                if let Some((head, at)) = *last_head.borrow_and_update() {
                    progress.head_seen(head, at);
                }
                let (cursor, open) = read_store(&db, worker).await;
                if let Some(cursor) = cursor {
                    progress.cursor_seen(cursor, now());
                }
                let counted = worker.map(|_| jobs.count(open.as_deref().unwrap_or_default()));
                inhibitor.hold(counted.is_some_and(|j| j.open > 0));
                let polled = shared.worker_polled.load(Ordering::Relaxed);
                // 0: the worker has not been started yet (the store is still being created).
                progress.worker_at = worker.filter(|_| polled > 0).map(|_| Duration::from_millis(polled));
                let healthy = progress.healthy(now(), stall_window);
                let line = status_line(&progress, counted, healthy);
                if line != status {
                    let _ = shared.notifier.send(&format!("STATUS={line}"));
                    status = line;
                }
                if !ready && shared.started.load(Ordering::SeqCst) && progress.synced(now(), stall_window) {
                    ready = true;
                    tracing::info!(block = progress.cursor, "ready: the indexer is at the head");
                    let _ = shared.notifier.send("READY=1");
                } else if !ready && healthy {
                    let extend = stall_window.as_micros() * 2;
                    let _ = shared.notifier.send(&format!("EXTEND_TIMEOUT_USEC={extend}"));
                }
            }
            _ = keep_alive.tick(), if window.is_some() => {
                if progress.healthy(now(), stall_window) {
                    let _ = shared.notifier.send("WATCHDOG=1");
                } else {
                    tracing::warn!(
                        cursor = progress.cursor,
                        head = ?progress.head,
                        "no progress within the watchdog window: keep-alives stop, the service manager restarts lcw"
                    );
                }
            }
        }
    }
    shared.stopping();
}

/// The store's cursor and the worker's open jobs (job id, completed) as the store has them;
/// `None` for what could not be read (no store yet).
async fn read_store(db: &std::path::Path, worker: Option<Address>) -> (Option<u64>, Option<Vec<(u64, bool)>>) {
    let db = db.to_owned();
    tokio::task::spawn_blocking(move || {
        let Ok(store) = lcw_schema::store::Store::open_readonly(&db) else { return (None, None) };
        let conn = store.conn();
        let cursor = lcw_schema::store::obligations::cursor(conn).ok();
        let open = worker.and_then(|w| {
            let jobs = lcw_schema::store::obligations::open_jobs(conn, Some(w)).ok()?;
            Some(jobs.into_iter().map(|j| (j.job_id, j.completed_at.is_some())).collect())
        });
        (cursor, open)
    })
    .await
    .unwrap_or((None, None))
}

/// Counts the jobs completed since the first look (a released job leaves the open list, so the
/// ids seen completed are kept).
#[derive(Debug, Default)]
struct JobCounter {
    baseline: Option<std::collections::HashSet<u64>>,
    served: std::collections::HashSet<u64>,
}

impl JobCounter {
    fn count(&mut self, open: &[(u64, bool)]) -> Jobs {
        let done = open.iter().filter(|(_, c)| *c).map(|(id, _)| *id);
        match &self.baseline {
            None => self.baseline = Some(done.collect()),
            Some(before) => self.served.extend(done.filter(|id| !before.contains(id))),
        }
        Jobs { open: open.iter().filter(|(_, c)| !c).count(), served: self.served.len() }
    }
}

/// A `systemd-inhibit --what=sleep` child held while jobs are open; given up for good when the
/// command is missing or exits by itself (no logind, refused).
#[derive(Default)]
struct Inhibitor {
    child: Option<tokio::process::Child>,
    unavailable: bool,
}

impl Inhibitor {
    fn hold(&mut self, wanted: bool) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            tracing::debug!(%status, "systemd-inhibit exited; sleep is not held off");
            self.child = None;
            self.unavailable = true;
        }
        match (wanted, self.child.is_some()) {
            (true, false) if !self.unavailable => {
                let spawned = tokio::process::Command::new("systemd-inhibit")
                    .args(["--what=sleep", "--who=lcw", "--why=worker jobs in progress", "--mode=block"])
                    .args(["sleep", "infinity"])
                    .env_remove("NOTIFY_SOCKET")
                    .env_remove("WATCHDOG_USEC")
                    .env_remove("WATCHDOG_PID")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn();
                match spawned {
                    Ok(child) => self.child = Some(child),
                    Err(e) => {
                        tracing::debug!(error = %e, "no systemd-inhibit; sleep is not held off");
                        self.unavailable = true;
                    }
                }
            }
            (false, true) => self.child = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_advancing_cursor_is_healthy_even_without_a_head() {
        let mut p = Progress::default();
        p.cursor_seen(10, s(100));
        assert!(p.healthy(s(130), W));
        assert!(!p.healthy(s(161), W), "no move and no head for a window");
    }

    #[test]
    fn an_idle_chain_with_the_cursor_at_its_head_stays_healthy() {
        let mut p = Progress::default();
        p.cursor_seen(50, s(1));
        p.head_seen(50, s(1));
        p.head_seen(50, s(500));
        assert!(p.healthy(s(510), W));
        assert!(p.synced(s(510), W));
    }

    #[test]
    fn a_head_that_moves_past_a_still_cursor_is_a_stall() {
        let mut p = Progress::default();
        p.cursor_seen(50, s(1));
        p.head_seen(50, s(1));
        p.head_seen(51, s(30));
        assert!(p.healthy(s(40), W), "within the window of the cursor's last move");
        p.head_seen(52, s(70));
        assert!(!p.healthy(s(70), W));
    }

    #[test]
    fn a_head_unread_for_a_window_is_a_stall() {
        let mut p = Progress::default();
        p.cursor_seen(50, s(1));
        p.head_seen(50, s(1));
        assert!(p.healthy(s(60), W));
        assert!(!p.healthy(s(62), W));
    }

    #[test]
    fn a_worker_loop_not_polled_for_a_window_is_hung() {
        let mut p = Progress::default();
        p.cursor_seen(50, s(100));
        p.head_seen(50, s(100));
        p.worker_at = Some(s(30));
        assert!(!p.healthy(s(100), W));
        p.worker_at = Some(s(99));
        assert!(p.healthy(s(100), W));
    }

    #[test]
    fn jobs_completed_before_the_start_are_not_counted_as_served() {
        let mut c = JobCounter::default();
        assert_eq!(c.count(&[(1, true), (2, false)]), Jobs { open: 1, served: 0 });
        assert_eq!(c.count(&[(1, true), (2, true), (3, false)]), Jobs { open: 1, served: 1 });
        // Job 2 released: it leaves the open list but stays served.
        assert_eq!(c.count(&[(3, false)]), Jobs { open: 1, served: 1 });
    }

    #[test]
    fn socket_names_are_paths_or_abstract() {
        assert!(address(b"/run/systemd/notify").is_ok());
        assert!(address(b"@lcw-test").is_ok());
        assert!(address(b"relative").is_err());
        assert!(address(b"").is_err());
    }

    #[test]
    fn status_names_the_stall() {
        let mut p = Progress::default();
        p.cursor_seen(7, s(0));
        assert_eq!(status_line(&p, None, true), "indexed block 7 of head unknown");
        p.head_seen(9, s(0));
        let jobs = Some(Jobs { open: 2, served: 3 });
        assert_eq!(
            status_line(&p, jobs, false),
            "indexed block 7 of head 9; 2 open jobs, 3 served since start; stalled, no keep-alive"
        );
    }
}
