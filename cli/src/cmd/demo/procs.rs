//! The demo's child processes. Each runs in a process group of its own, so that a terminal's
//! Ctrl-C reaches only `lcw demo`, which then stops them in order (traffic first, anvil last),
//! and a stop reaches everything a child started (llama-server under its start script, the
//! compilers of an install). Each group also holds a watcher reading a pipe from this process:
//! should `lcw demo` die without stopping them (SIGKILL), the pipe closes and the watcher ends
//! the group, so nothing of the demo outlives it.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// `sh -c WATCH prog args…`: runs the program in the background (stdin /dev/null), a watcher
/// that ends the whole group once our pipe on fd 3 closes, and waits for the program. Background
/// commands of a non-interactive shell ignore SIGINT, so the group is stopped with SIGTERM.
const WATCH: &str = r#"exec 3<&0
"$0" "$@" </dev/null &
child=$!
(read -r _ <&3; kill -TERM 0) >/dev/null 2>&1 &
exec 3<&-
wait "$child"
"#;

/// Variables that would point a child at another network, store, key or LLM than the demo's.
const FOREIGN_VARS: [&str; 17] = [
    "LCW_NETWORK",
    "LCW_DATA_DIR",
    "LCW_DB",
    "RPC_URL",
    "CHAIN_ID",
    "JOB_REGISTRY_ADDRESS",
    "WORKER_REGISTRY_ADDRESS",
    "AI_CONFIG_ADDRESS",
    "BEACON_API_URL",
    "WORKER_GATEWAY_URL",
    "SESSION_MANAGER_ADDRESS",
    "WORKER_KEYSTORE_PATH",
    "LCW_PASSWORD",
    "LCW_PASSWORD_FILE",
    "LCW_LLM_URL",
    "LCW_MODELS",
    "LCW_LISTEN",
];

/// One running child.
#[derive(Debug)]
pub(super) struct Proc {
    /// Short name for messages (`devnet`, `lcw run`).
    pub(super) name: String,
    /// Where its stdout and stderr go.
    pub(super) log: PathBuf,
    child: Option<Child>,
    /// Its exit, once seen.
    status: Option<ExitStatus>,
}

/// What to start.
pub(super) struct Spec<'a> {
    pub(super) name: &'a str,
    pub(super) program: &'a Path,
    pub(super) args: Vec<String>,
    /// Added to the environment (after the foreign variables are removed).
    pub(super) env: Vec<(&'static str, String)>,
    pub(super) log: PathBuf,
}

/// Written by hand: the environment it adds may hold a credentialed URL; only its names show.
impl std::fmt::Debug for Spec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env.iter().map(|(k, _)| *k).collect::<Vec<_>>())
            .field("log", &self.log)
            .finish()
    }
}

impl Proc {
    /// Starts `spec` in its own process group, its output appended to its log.
    pub(super) fn spawn(spec: Spec<'_>) -> anyhow::Result<Proc> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(WATCH).arg(spec.program).args(&spec.args);
        for var in FOREIGN_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd.env("NO_COLOR", "1").stdin(Stdio::piped()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        Ok(Proc { name: spec.name.to_owned(), log: spec.log, child: Some(child), status: None })
    }

    /// Its exit status once it has exited (and is reaped); None while it runs.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.status = Some(status);
            // Closing the pipe ends the watcher and anything the child left in its group.
            self.child = None;
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub(super) async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to its group, SIGKILL after `grace`; waits for its exit. Returns whether it
    /// stopped within the grace period.
    pub(super) async fn stop(&mut self, grace: Duration) -> bool {
        let Some(pgid) = self.child.as_ref().map(Child::id) else { return true };
        signal_group(pgid, "TERM");
        let stopped = self.wait(grace).await.is_some();
        // The group may hold more than the leader (a script's server, a watcher): all go.
        signal_group(pgid, "KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.status = Some(status);
            }
        }
        stopped
    }

    /// The last `lines` lines of its log.
    pub(super) fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(child.id(), "KILL");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kill -SIG -- -PGID`.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or_default();
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
