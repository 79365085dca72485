//! The threads that run POSTed GraphQL requests: one per execution slot, outside the async
//! runtime, and on Linux at a lower CPU priority (nice 10) than everything else in the process.
//!
//! In `lcw run` the API shares the process, the runtime and two cores with the worker and the
//! settler. Running requests on blocking threads keeps them off the runtime's workers, but does
//! not keep them from taking the cores: a dozen CPU-bound requests would leave the runtime a
//! dozenth of the CPU. At nice 10 the kernel gives a runnable thread of the worker about nine
//! times the share of one of these, so the API takes what the rest of the process leaves.
//!
//! A request's store reads run here too, inline ([`crate::db::Db::read`] knows it is on one of
//! these threads): handing them to the runtime's blocking pool would run them at normal priority,
//! and a pool thread spawned from here would inherit nice 10 and later serve the worker.

use std::cell::Cell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The nice value of the threads.
#[cfg(target_os = "linux")]
const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static RUNNER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is a runner (a blocking call is fine here).
pub(crate) fn on_runner() -> bool {
    RUNNER.with(Cell::get)
}

/// The runner threads; they stop when this is dropped.
#[derive(Debug)]
pub(crate) struct Runners {
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// A runner thread could not run the job (it panicked, or the runners are stopping).
#[derive(Debug, thiserror::Error)]
#[error("the request's thread stopped before it answered")]
pub(crate) struct RunnerGone;

impl Runners {
    /// Starts `n` threads.
    pub(crate) fn start(n: usize) -> std::io::Result<Runners> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("lcw-api-{i}")).spawn(move || {
                RUNNER.with(|r| r.set(true));
                #[cfg(target_os = "linux")]
                if let Err(e) = rustix::process::setpriority_process(None, NICE) {
                    tracing::debug!(error = %e, "lowering an API thread's priority failed");
                }
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        // A panicking request must not take its thread (and slot) with it.
                        Ok(job) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Runners { jobs: Mutex::new(tx) })
    }

    /// Runs `f` on a runner thread. The caller holds one of as many slots as there are threads,
    /// so `f` starts at once.
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, RunnerGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.lock().map_err(|_| RunnerGone)?.send(job).map_err(|_| RunnerGone)?;
        rx.await.map_err(|_| RunnerGone)
    }
}
