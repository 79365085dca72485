//! The LLM server our worker serves jobs with: found at a URL, optionally started (and
//! installed first) by a command the demo runs in the background, and probed until it lists the
//! model and answers a one-token request. Until then our worker stays drained.

use std::time::{Duration, Instant};

use lcw_schema::profile::redact_url;
use lcw_worker::llm::{Api, Llm, LlmConfig, LlmError};
use tokio::task::JoinHandle;

use super::procs::Proc;

/// How often a server that is not ready is probed.
const PROBE_EVERY: Duration = Duration::from_secs(3);

/// Where the LLM server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// Not answering (yet); why.
    Waiting(String),
    /// Answering, but unable to serve the demo (the model missing, a bad URL); why.
    Unusable(String),
    /// Ready, speaking this API.
    Ready(Api),
}

/// The LLM side of the demo.
pub(super) struct LlmServer {
    /// Base URL (may carry credentials: shown only through [`LlmServer::label`]).
    pub(super) url: String,
    /// The API asked for; None: detect it.
    api: Option<Api>,
    model: String,
    /// The command starting the server, while it runs (or has exited).
    pub(super) start: Option<Proc>,
    pub(super) state: State,
    probe: Option<JoinHandle<State>>,
    next_probe: Instant,
    since: Instant,
}

/// Written by hand: the URL may carry an API key.
impl std::fmt::Debug for LlmServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmServer")
            .field("url", &self.label())
            .field("api", &self.api)
            .field("model", &self.model)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl LlmServer {
    /// `api`: `auto`, `openai` or `ollama`.
    pub(super) fn new(url: &str, api: &str, model: &str) -> anyhow::Result<LlmServer> {
        let url = url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            anyhow::bail!("--llm-url `{}` must start with http:// or https://", redact_url(&url));
        }
        let api = match api.trim() {
            "auto" => None,
            other => Some(other.parse::<Api>().map_err(|e| anyhow::anyhow!("--llm-api: {e} (or `auto`)"))?),
        };
        Ok(LlmServer {
            url,
            api,
            model: model.to_owned(),
            start: None,
            state: State::Waiting("not asked yet".into()),
            probe: None,
            next_probe: Instant::now(),
            since: Instant::now(),
        })
    }

    /// The URL with any credentials redacted.
    pub(super) fn label(&self) -> String {
        redact_url(&self.url)
    }

    /// The API to give `lcw run` now: the one found or asked for; while unknown, OpenAI's, which
    /// llama-server, vLLM and Ollama (`/v1`) all speak.
    pub(super) fn api(&self) -> Api {
        match &self.state {
            State::Ready(api) => *api,
            State::Waiting(_) | State::Unusable(_) => self.api.unwrap_or(Api::OpenAi),
        }
    }

    /// Whether it is ready.
    pub(super) fn ready(&self) -> bool {
        matches!(self.state, State::Ready(_))
    }

    /// Time since the demo began waiting for it.
    pub(super) fn waited(&self) -> Duration {
        self.since.elapsed()
    }

    /// Probes once now and waits for the answer.
    pub(super) async fn probe_now(&mut self) {
        let answer = probe(self.url.clone(), self.api, self.model.clone()).await;
        self.take(answer);
    }

    /// Collects a finished probe and starts the next one when due. Returns true when the server
    /// has just become ready.
    pub(super) fn tick(&mut self) -> bool {
        if self.ready() {
            return false;
        }
        if let Some(p) = &self.probe {
            if !p.is_finished() {
                return false;
            }
            if let Some(Ok(answer)) = self.probe.take().and_then(futures::FutureExt::now_or_never) {
                self.take(answer);
                if self.ready() {
                    return true;
                }
            }
        }
        if Instant::now() >= self.next_probe {
            self.next_probe = Instant::now() + PROBE_EVERY;
            self.probe = Some(tokio::spawn(probe(self.url.clone(), self.api, self.model.clone())));
        }
        false
    }

    fn take(&mut self, answer: State) {
        self.state = answer;
    }

    /// What the status line says while it is not ready: the start command's progress (the last
    /// line of its log) or why the server does not answer.
    pub(super) fn waiting_text(&mut self) -> String {
        let waited = super::status::duration(self.waited());
        let why = match &self.state {
            State::Waiting(why) => why.clone(),
            State::Unusable(why) => return why.clone(),
            State::Ready(_) => return String::new(),
        };
        match self.start.as_mut() {
            Some(p) => match p.exited() {
                Some(status) if !status.success() => {
                    format!("its start command failed ({status}), see {}", p.log.display())
                }
                Some(_) => format!("{why}, {waited}"),
                None => match progress(&p.tail(20)) {
                    Some(line) => format!("{line}, {waited}"),
                    None => format!("starting, {waited}"),
                },
            },
            None => format!("{why}, {waited}"),
        }
    }
}

/// The start command's progress in its output: its last `llm: ` line (how
/// tests/scripts/llm-server.sh reports each step), else its last line.
fn progress(tail: &str) -> Option<&str> {
    let lines = || tail.lines().rev().map(str::trim).filter(|l| !l.is_empty());
    lines().find_map(|l| l.strip_prefix("llm: ")).or_else(|| lines().next())
}

/// Lists the models and warms the one served: ready (with the API it speaks) when it can take a
/// job, else why not.
async fn probe(url: String, asked: Option<Api>, model: String) -> State {
    let api = match asked {
        Some(api) => api,
        None => detect(&url).await,
    };
    let config = LlmConfig { url, api, timeout: Duration::from_secs(30), num_predict: 1, ..LlmConfig::default() };
    let state = |e: LlmError| match e {
        LlmError::Unreachable { .. } => State::Waiting("not answering yet".to_owned()),
        LlmError::Status { status: 503, .. } => State::Waiting("loading its model".to_owned()),
        LlmError::Status { status, .. } if status == 429 || status >= 500 => {
            State::Waiting(format!("answering HTTP {status}"))
        }
        LlmError::Timeout(_) => State::Waiting("too slow to answer".to_owned()),
        e if e.is_outage() => State::Waiting(e.to_string()),
        e => State::Unusable(e.to_string()),
    };
    let llm = match Llm::new(config) {
        Ok(l) => l,
        Err(e) => return state(e),
    };
    if let Err(e) = llm.check_models(std::slice::from_ref(&model)).await {
        return state(e);
    }
    match llm.warm(&model).await {
        Ok(()) => State::Ready(api),
        Err(e) => state(e),
    }
}

/// Ollama answers `GET /api/version` with its version; anything else is taken to speak OpenAI's
/// API (llama-server, vLLM).
async fn detect(url: &str) -> Api {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else { return Api::OpenAi };
    let answer = client.get(format!("{url}/api/version")).send().await;
    match answer {
        Ok(r) if r.status().is_success() => match r.json::<serde_json::Value>().await {
            Ok(v) if v.get("version").is_some() => Api::Ollama,
            _ => Api::OpenAi,
        },
        _ => Api::OpenAi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_commands_own_progress_lines_come_first() {
        let tail = "llm: building llama-server: 45% (about 15 min on 2 cores, once)\n[ 45%] Building CXX\n";
        assert_eq!(progress(tail), Some("building llama-server: 45% (about 15 min on 2 cores, once)"));
        let server = "llm: starting llama-server on 127.0.0.1:8181\n0.00.887 I srv load_model: loading\n";
        assert_eq!(progress(server), Some("starting llama-server on 127.0.0.1:8181"));
        assert_eq!(progress("pulling manifest\n\n"), Some("pulling manifest"));
        assert_eq!(progress(""), None);
    }

    #[test]
    fn the_url_is_checked_and_never_shown_with_its_key() {
        let e = LlmServer::new("ftp://x", "auto", "m").unwrap_err().to_string();
        assert!(e.contains("must start with http://"), "{e}");
        let e = LlmServer::new("http://127.0.0.1:1", "grpc", "m").unwrap_err().to_string();
        assert!(e.contains("--llm-api") && e.contains("auto"), "{e}");
        let llm = LlmServer::new("https://user:hunter2@llm.example/v1/", "openai", "m").unwrap();
        assert!(!llm.label().contains("hunter2") && !format!("{llm:?}").contains("hunter2"), "{llm:?}");
        assert_eq!(llm.api(), Api::OpenAi);
    }
}
