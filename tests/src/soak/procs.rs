//! An lcw child process of the soak: started with its arguments and environment, its stdout and
//! stderr appended to one log file, killed with SIGKILL and started again, or stopped with
//! SIGTERM. An exit nobody asked for is remembered with the tail of its log.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One managed process.
#[derive(Debug)]
pub(crate) struct Proc {
    /// Short name for progress lines (`keeper`, `worker`).
    pub(crate) name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where its output goes.
    pub(crate) log: PathBuf,
    /// Where its stdout goes instead, rewritten at each start (a command's result).
    pub(crate) stdout: Option<PathBuf>,
    child: Option<Child>,
    /// Times it was killed with SIGKILL by the soak.
    pub(crate) kills: u64,
    /// Times it exited without being asked to, with the error it printed each time.
    pub(crate) crashes: Vec<String>,
    /// Times it was started.
    pub(crate) starts: u64,
}

impl Proc {
    /// A process not started yet.
    pub(crate) fn new(
        name: &'static str,
        bin: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Proc {
        Proc {
            name,
            bin: bin.to_owned(),
            args,
            env,
            log,
            stdout: None,
            child: None,
            kills: 0,
            crashes: Vec::new(),
            starts: 0,
        }
    }

    /// Starts it (its output is appended to the log).
    pub(crate) fn spawn(&mut self) -> anyhow::Result<()> {
        let out = OpenOptions::new().create(true).append(true).open(&self.log)?;
        let err = out.try_clone()?;
        let out = match &self.stdout {
            Some(path) => std::fs::File::create(path)?,
            None => out,
        };
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?);
        self.starts += 1;
        Ok(())
    }

    /// Where the output of its next start begins in its log: the log's length now.
    pub(crate) fn log_end(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or_default()
    }

    /// Its OS process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Replaces its arguments (for the next start).
    pub(crate) fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    /// Whether it exited (any way) since the last look, without calling it a crash.
    pub(crate) fn finished(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }

    /// Whether it exited on its own since the last look: the error it printed (its last
    /// `error:` line and the causes after it), recorded as a crash (the caller restarts it).
    pub(crate) fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        self.child = None;
        let log = tail(&self.log, 40);
        let lines: Vec<&str> = log.lines().collect();
        let cause = match lines.iter().rposition(|l| l.starts_with("error:")) {
            Some(i) => lines[i..].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "),
            None => format!("{status}, no error printed"),
        };
        self.crashes.push(cause.clone());
        Some(cause)
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that). Returns the exit
    /// status, or None when it had to be killed or was not running.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or_default();
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = String::new();
    let _ = f.read_to_string(&mut buf);
    let all: Vec<&str> = buf.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether the log at `path`, past byte `from`, has a line whose message is `message`: tracing's
/// `<time> <level> <target>: <message> <key>=<value>...`, so that another message that only
/// begins with the words does not count.
pub(crate) fn logged_since(path: &Path, from: u64, message: &str) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    if f.seek(SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return false;
    }
    let needle = format!(": {message}");
    String::from_utf8_lossy(&buf).lines().any(|line| {
        line.match_indices(&needle).any(|(i, _)| {
            let rest = &line[i + needle.len()..];
            rest.is_empty()
                || rest.strip_prefix(' ').is_some_and(|f| f.split(' ').next().is_some_and(|w| w.contains('=')))
        })
    })
}

/// A free port on 127.0.0.1 (bound and released; good enough for a child that binds it next).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_message_counts_only_past_the_offset_and_as_a_whole_message() {
        let path = std::env::temp_dir().join(format!("lcw-soak-logged-since-{}.log", std::process::id()));
        let before = "2026-12-07T12:48:16Z  INFO lcw_worker::pipeline::executor: worker started worker=0x1\n";
        std::fs::write(&path, before).unwrap();
        let from = before.len() as u64;
        assert!(logged_since(&path, 0, "worker started"));
        assert!(!logged_since(&path, from, "worker started"), "only the previous start's line");
        let after = "2026-12-07T12:50:01Z  INFO lcw_settler::settle: settler started sender=0x1 mode=Worker\n\
                     2026-12-07T12:50:02Z DEBUG lcw_worker::pipeline: worker started late=true\n";
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(after.as_bytes()).unwrap();
        assert!(logged_since(&path, from, "settler started"));
        assert!(logged_since(&path, from, "worker started"));
        assert!(!logged_since(&path, from, "worker"), "a message is matched whole");
        assert!(!logged_since(&path, from, "started"), "nor a part of one");
        assert!(!logged_since(&path.with_extension("missing"), 0, "worker started"));
        std::fs::remove_file(&path).unwrap();
    }
}
