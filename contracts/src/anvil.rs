//! Finding and running anvil, the local chain of the devnet.
//!
//! The binary comes from the pinned npm package `@foundry-rs/anvil-linux-amd64`, installed by
//! `make setup` into `contracts/node_modules` (the project-local tools folder); `ANVIL_BIN`
//! overrides it. Anvil runs with `--hardfork prague` so that EIP-4844 blob transactions work and
//! it serves blobs on its beacon endpoint. The child is killed when [`AnvilProcess`] is dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256};
use serde::Deserialize;

/// Environment variable naming the anvil binary.
pub const ANVIL_BIN_ENV: &str = "ANVIL_BIN";
/// Where `make setup` installs anvil, relative to the project root.
pub const ANVIL_PROJECT_PATH: &str = "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// Why anvil could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    /// No anvil binary was found.
    #[error(
        "anvil not found (looked at {searched}); install it with `make setup` (npm package \
         @foundry-rs/anvil-linux-amd64, pinned in contracts/package.json) or set ANVIL_BIN=/path/to/anvil"
    )]
    NotFound {
        /// The places that were tried.
        searched: String,
    },
    /// `ANVIL_BIN` points at something that is not an executable file.
    #[error("ANVIL_BIN={0} is not an executable file; point it at the anvil binary or unset it")]
    BadOverride(PathBuf),
    /// The requested port is taken.
    #[error(
        "port {port} on 127.0.0.1 is already in use (another devnet or node?); stop it or pass --port with a free port (0 picks one)"
    )]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// Spawning the process failed.
    #[error("cannot start anvil at {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Anvil exited before it was ready.
    #[error("anvil exited before it was ready ({status}); its last output:\n{output}")]
    Exited {
        /// Exit status.
        status: String,
        /// The tail of its output.
        output: String,
    },
    /// Anvil did not report readiness in time.
    #[error("anvil did not start listening within {0:?}")]
    Timeout(Duration),
    /// The account list anvil wrote could not be read.
    #[error("cannot read anvil's account list {path}: {reason}")]
    Accounts {
        /// The `--config-out` file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// How to run anvil.
#[derive(Debug, Clone)]
pub struct AnvilConfig {
    /// Port on 127.0.0.1; 0 lets the OS pick a free one.
    pub port: u16,
    /// Seconds between blocks; `None` mines one block per transaction.
    pub block_time: Option<u64>,
    /// Number of funded dev accounts.
    pub accounts: u32,
    /// Block gas limit (the simulator packs thousands of transactions per block).
    pub gas_limit: u64,
    /// Chain id.
    pub chain_id: u64,
    /// Where anvil writes its account list (`--config-out`).
    pub config_out: PathBuf,
    /// Where anvil's stdout/stderr go (None: discarded after start-up).
    pub log_file: Option<PathBuf>,
    /// Keep at most this many historical states in memory (`--prune-history N`); None keeps them
    /// all, which costs tens of MB per busy block.
    pub prune_history: Option<u64>,
    /// Timestamp of the genesis block (`--timestamp`); later blocks keep that offset from the
    /// local clock (a chain whose clock differs from this machine's). None: the local clock.
    pub genesis_timestamp: Option<u64>,
}

/// A dev account anvil funded.
#[derive(Debug, Clone)]
pub struct FundedAccount {
    /// Address.
    pub address: Address,
    /// Private key (well-known dev key).
    pub private_key: B256,
}

/// A running anvil; killed on drop, and also when this process dies without dropping it.
///
/// Anvil runs under a small `sh` supervisor whose watcher blocks reading our stdin pipe: when this
/// process exits for any reason (even SIGKILL) the pipe closes and the watcher kills anvil, so no
/// devnet outlives its owner.
#[derive(Debug)]
pub struct AnvilProcess {
    child: Child,
    anvil_pid: u32,
    port: u16,
    /// The funded dev accounts, in anvil's order.
    pub accounts: Vec<FundedAccount>,
}

impl AnvilProcess {
    /// Finds the binary, checks the port, starts anvil and waits until it listens.
    pub fn spawn(config: &AnvilConfig) -> Result<Self, AnvilError> {
        let bin = locate()?;
        if config.port != 0 && TcpListener::bind(("127.0.0.1", config.port)).is_err() {
            return Err(AnvilError::PortInUse { port: config.port });
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(SUPERVISOR).arg(&bin);
        cmd.arg("--port")
            .arg(config.port.to_string())
            .args(["--host", "127.0.0.1", "--hardfork", "prague"])
            .arg("--accounts")
            .arg(config.accounts.to_string())
            .arg("--gas-limit")
            .arg(config.gas_limit.to_string())
            .arg("--chain-id")
            .arg(config.chain_id.to_string())
            .arg("--config-out")
            .arg(&config.config_out)
            .args(["--no-request-size-limit", "--color", "never"]);
        if let Some(states) = config.prune_history {
            cmd.arg("--prune-history").arg(states.to_string());
        }
        if let Some(ts) = config.genesis_timestamp {
            cmd.arg("--timestamp").arg(ts.to_string());
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(secs) = config.block_time {
            cmd.arg("--block-time").arg(secs.to_string());
        }
        let mut child = cmd.spawn().map_err(|source| AnvilError::Spawn { path: bin.clone(), source })?;
        let (anvil_pid, port) = match wait_listening(&mut child, config) {
            Ok(ready) => ready,
            Err(e) => {
                drop(child.stdin.take());
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let mut process = AnvilProcess { child, anvil_pid, port, accounts: Vec::new() };
        process.accounts = read_accounts(&config.config_out)?;
        Ok(process)
    }

    /// The port anvil listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The OS process id of anvil itself.
    pub fn pid(&self) -> u32 {
        self.anvil_pid
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops anvil and waits for it to exit: closing the supervisor's stdin makes its watcher
    /// kill anvil; the supervisor exits once anvil has.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for AnvilProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds the anvil binary: `ANVIL_BIN`, then the project's tools folder (searched upwards from the
/// current directory, then from this crate's source directory), then `anvil` on `PATH`.
pub fn locate() -> Result<PathBuf, AnvilError> {
    if let Some(path) = std::env::var_os(ANVIL_BIN_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) { Ok(path) } else { Err(AnvilError::BadOverride(path)) };
    }
    let mut searched = Vec::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Some(root) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        roots.push(root.to_path_buf());
    }
    for root in roots {
        let candidate = root.join(ANVIL_PROJECT_PATH);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(candidate.display().to_string());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("anvil");
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        searched.push("anvil on PATH".into());
    }
    searched.dedup();
    Err(AnvilError::NotFound { searched: searched.join(", ") })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `sh -c SUPERVISOR anvil args…`: runs anvil, reports its pid, and kills it when stdin closes.
/// Background jobs of a non-interactive shell get /dev/null as stdin, so the watcher reads a
/// duplicate (fd 3) of the real one; its stdout is /dev/null so that anvil's exit closes ours.
const SUPERVISOR: &str = r#"exec 3<&0
"$0" "$@" </dev/null &
child=$!
echo "lcw-anvil-pid $child"
(read -r _ <&3; kill "$child" 2>/dev/null) >/dev/null 2>&1 &
exec 3<&-
wait "$child"
"#;

/// Reads anvil's stdout until "Listening on 127.0.0.1:PORT", then forwards the rest of its
/// output to the log file (or discards it) on background threads.
fn wait_listening(child: &mut Child, config: &AnvilConfig) -> Result<(u32, u16), AnvilError> {
    let stdout = child.stdout.take().ok_or(AnvilError::Timeout(START_TIMEOUT))?;
    let stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel::<Result<(u32, u16), String>>();
    let log_path = config.log_file.clone();
    std::thread::Builder::new()
        .name("anvil-stdout".into())
        .spawn(move || {
            let mut log = log_path.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
            let mut tail: Vec<String> = Vec::new();
            let mut reported = false;
            let mut pid = 0u32;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("lcw-anvil-pid ") {
                    pid = p.trim().parse().unwrap_or_default();
                    continue;
                }
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if !reported {
                    if let Some(port) = line.strip_prefix("Listening on ").and_then(|a| a.rsplit(':').next()) {
                        let _ = tx.send(port.trim().parse::<u16>().map(|port| (pid, port)).map_err(|e| e.to_string()));
                        reported = true;
                    } else {
                        tail.push(line);
                        if tail.len() > 20 {
                            tail.remove(0);
                        }
                    }
                }
            }
            if !reported {
                let _ = tx.send(Err(tail.join("\n")));
            }
        })
        .map_err(|source| AnvilError::Spawn { path: PathBuf::from("anvil"), source })?;
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    if let Some(stderr) = stderr {
        let _ = std::thread::Builder::new().name("anvil-stderr".into()).spawn(move || {
            let mut buf = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if buf.len() < 8192 {
                    buf.push_str(&line);
                    buf.push('\n');
                }
            }
            let _ = err_tx.send(buf);
        });
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(ready)) => return Ok(ready),
            Ok(Err(stdout_tail)) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let stderr = err_rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                return Err(exited(status, &stdout_tail, &stderr, config.port));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    return Err(AnvilError::Timeout(START_TIMEOUT));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(exited(status, "", "", config.port));
            }
        }
    }
}

fn exited(status: String, stdout: &str, stderr: &str, port: u16) -> AnvilError {
    let output = format!("{stdout}\n{stderr}").trim().to_owned();
    if output.contains("Address already in use") {
        return AnvilError::PortInUse { port };
    }
    AnvilError::Exited { status, output }
}

#[derive(Deserialize)]
struct ConfigOut {
    available_accounts: Vec<Address>,
    private_keys: Vec<B256>,
}

fn read_accounts(path: &Path) -> Result<Vec<FundedAccount>, AnvilError> {
    let fail = |reason: String| AnvilError::Accounts { path: path.to_owned(), reason };
    // Anvil writes the file right after it starts listening; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => break t,
            Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => return Err(fail("file is empty".into())),
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let out: ConfigOut = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    Ok(out
        .available_accounts
        .into_iter()
        .zip(out.private_keys)
        .map(|(address, private_key)| FundedAccount { address, private_key })
        .collect())
}
