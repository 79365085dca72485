//! The LLM backends: one client, [`Llm`], for two wire protocols ([`Api`]):
//!
//! - **Ollama native** (`/api/generate`, `/api/chat`, `/api/tags`), as the upstream worker
//!   speaks it: NDJSON streams, `keep_alive` pinned, `temperature` and `seed` always sent so a
//!   disputer's re-execution reproduces the output (upstream.md §6);
//! - **OpenAI-compatible** (`/v1/chat/completions`, `/v1/models`), which llama.cpp's
//!   llama-server, vLLM and Ollama's `/v1` speak: server-sent events, usage in the last chunk,
//!   `cache_prompt: false` for llama.cpp's determinism (llm-runtime.md §6).
//!
//! Both stream. Bytes are cut into lines by [`lines`], decoded by the protocol's module into a
//! draft, and finished into a [`Generation`] with client-side timings; `http` is the thin shell
//! doing the I/O. Prompt and response text are never logged, only lengths and token counts.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::debug;

mod error;
mod footprint;
mod http;
mod lines;
mod ollama;
mod openai;
mod stream;

pub use error::{LlmError, LlmResult};
pub use footprint::{Footprint, Footprints, OLLAMA_CONTEXT, Shape, Source as FootprintSource};

/// Longest stream line accepted (upstream's scanner maximum).
const MAX_LINE: usize = 1 << 20;
/// Cap on the timeout of listing and health probes, which answer at once on a live server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which wire protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI-compatible `/v1/*` (llama-server, vLLM, Ollama's `/v1`).
    OpenAi,
    /// Ollama's native `/api/*`.
    Ollama,
}

impl FromStr for Api {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Api::OpenAi),
            "ollama" => Ok(Api::Ollama),
            _ => Err(LlmError::Config(format!(
                "unknown LLM API `{s}`; use `ollama` (Ollama's native /api/*) or `openai` (OpenAI-compatible \
                 /v1/*: llama-server, vLLM)"
            ))),
        }
    }
}

impl Api {
    /// Whether a server speaking this protocol and listing `available` serves `wanted`:
    /// Ollama's bare name matches `name:latest`; OpenAI ids match exactly.
    pub fn serves(self, available: &[String], wanted: &str) -> bool {
        match self {
            Api::Ollama => ollama::serves(available, wanted),
            Api::OpenAi => openai::serves(available, wanted),
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::OpenAi => "openai",
            Api::Ollama => "ollama",
        })
    }
}

/// How to reach the LLM server and how to sample.
#[derive(Clone)]
pub struct LlmConfig {
    /// Base URL, e.g. `http://127.0.0.1:11434` (Ollama) or `http://127.0.0.1:8080` (llama-server);
    /// a trailing `/`, and `/v1` for OpenAI, are accepted.
    pub url: String,
    /// The wire protocol.
    pub api: Api,
    /// Whole-request timeout: connecting, generating, last byte (upstream OLLAMA_TIMEOUT).
    pub timeout: Duration,
    /// Most tokens to generate (`num_predict`, `max_tokens`).
    pub num_predict: u32,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f64,
    /// Sampling seed, fixed so a disputer's re-execution reproduces the output.
    pub seed: u64,
    /// Ollama's `keep_alive` in seconds, sent as a JSON number; -1 keeps the model loaded.
    pub keep_alive: i64,
    /// Ollama's context window (`num_ctx`); `None` or 0 leaves the model's default. OpenAI-compatible
    /// servers fix it at start (llama-server `-c`), so it is not sent there.
    pub num_ctx: Option<u32>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            url: "http://127.0.0.1:11434".to_owned(),
            api: Api::Ollama,
            timeout: Duration::from_secs(120),
            num_predict: 1024,
            temperature: 0.0,
            seed: 42,
            keep_alive: -1,
            num_ctx: None,
        }
    }
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("url", &http::redact(&self.url))
            .field("api", &self.api)
            .field("timeout", &self.timeout)
            .field("num_predict", &self.num_predict)
            .field("temperature", &self.temperature)
            .field("seed", &self.seed)
            .field("keep_alive", &self.keep_alive)
            .field("num_ctx", &self.num_ctx)
            .finish()
    }
}

/// One chat message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text (reasoning output excluded).
    pub text: String,
    /// Prompt tokens, as the server counts them.
    pub prompt_tokens: Option<u64>,
    /// Generated tokens, as the server counts them.
    pub completion_tokens: Option<u64>,
    /// Client-side time from sending the request to the first streamed content.
    pub first_token: Option<Duration>,
    /// Client-side time from sending the request to the end of the stream.
    pub total: Duration,
    /// Ollama's `load_duration`: the model was cold when it is more than a few milliseconds.
    pub load: Option<Duration>,
    /// Why generation stopped: `stop`, `length`, ...
    pub finish_reason: Option<String>,
}

/// What [`Llm::unload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unloaded {
    /// The server freed the model.
    Done,
    /// The server has no way to unload (a single-model llama-server): nothing to do.
    NoUnload,
    /// The server did not hold the model (its answer quoted).
    NotLoaded(String),
}

/// A client for one LLM server; cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Llm {
    config: LlmConfig,
    /// Base URL without trailing `/` (and without `/v1`).
    base: String,
    /// `base` with credentials redacted, for messages and logs.
    label: String,
    http: reqwest::Client,
}

impl fmt::Debug for Llm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Llm").field("url", &self.label).field("config", &self.config).finish()
    }
}

impl Llm {
    /// A client for `config.url`, which must be an http(s) URL.
    pub fn new(config: LlmConfig) -> LlmResult<Self> {
        let base = http::base_url(&config.url, config.api)?;
        let label = http::redact(&base);
        lcw_schema::ensure_tls();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Llm { config, base, label, http })
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The same client with another whole-request timeout (for a job's deadline).
    pub fn with_timeout(&self, timeout: Duration) -> Llm {
        let mut llm = self.clone();
        llm.config.timeout = timeout;
        llm
    }

    /// The same client generating at most `tokens` tokens per answer.
    pub fn with_num_predict(&self, tokens: u32) -> Llm {
        let mut llm = self.clone();
        llm.config.num_predict = tokens.max(1);
        llm
    }

    /// The models the server lists: Ollama's `/api/tags` names (with tags, `llama3:latest`),
    /// or the OpenAI `/v1/models` ids (llama-server lists its `--alias`).
    pub async fn models(&self) -> LlmResult<Vec<String>> {
        match self.config.api {
            Api::Ollama => Ok(self.get_json::<ollama::Tags>("/api/tags").await?.names()),
            Api::OpenAi => Ok(self.get_json::<openai::Models>("/v1/models").await?.ids()),
        }
    }

    /// Fails with [`LlmError::MissingModels`] unless the server lists every `wanted` model.
    /// Ollama: a bare name matches `name:latest`, as upstream's start-up check. OpenAI: exact ids,
    /// because llama-server in single-model mode answers to any model name, so only the listed
    /// id (lcw starts it with `--alias <model>`) proves the right model is served.
    pub async fn check_models(&self, wanted: &[String]) -> LlmResult<()> {
        let available = self.models().await?;
        let api = self.config.api;
        let missing: Vec<String> = wanted.iter().filter(|w| !api.serves(&available, w)).cloned().collect();
        if missing.is_empty() { Ok(()) } else { Err(LlmError::MissingModels { missing, available }) }
    }

    /// Loads `model` and keeps it loaded: Ollama `/api/generate` without a prompt (pinned for
    /// `keep_alive`); OpenAI a one-token completion, after `POST /models/load` on a llama-server
    /// in router mode that lists the model unloaded (with `--no-models-autoload` it would refuse
    /// the completion).
    pub async fn warm(&self, model: &str) -> LlmResult<()> {
        let started = Instant::now();
        match self.config.api {
            Api::Ollama => self.post_and_read("/api/generate", &ollama::WarmRequest::new(&self.config, model)).await?,
            Api::OpenAi => {
                self.router_load(model).await?;
                self.post_and_read("/v1/chat/completions", &openai::ChatRequest::warm(&self.config, model)).await?
            }
        }
        debug!(api = %self.config.api, model, ms = started.elapsed().as_millis() as u64, "model warm");
        Ok(())
    }

    /// Which listed models are loaded now, on servers that say: llama-server in router mode
    /// (`/v1/models` entries carry a `status`); `None` elsewhere (a single-model llama-server,
    /// vLLM; Ollama, whose `/api/ps` lcw does not need).
    pub async fn loaded(&self) -> LlmResult<Option<Vec<(String, bool)>>> {
        match self.config.api {
            Api::Ollama => Ok(None),
            Api::OpenAi => Ok(self.get_json::<openai::Models>("/v1/models").await?.statuses()),
        }
    }

    /// Frees `model`'s memory: Ollama `keep_alive: 0`; llama-server in router mode
    /// `POST /models/unload`. A server that cannot unload (a single-model llama-server has no
    /// such endpoint) or does not hold the model has nothing to unload.
    pub async fn unload(&self, model: &str) -> LlmResult<Unloaded> {
        match self.config.api {
            Api::Ollama => {
                self.post_and_read("/api/generate", &ollama::WarmRequest::unload(model)).await?;
                Ok(Unloaded::Done)
            }
            Api::OpenAi => match self.post_and_read("/models/unload", &openai::ModelRequest { model }).await {
                Ok(()) => Ok(Unloaded::Done),
                Err(LlmError::Status { status: 404 | 405, .. }) => Ok(Unloaded::NoUnload),
                Err(LlmError::Status { status: 400, body }) => Ok(Unloaded::NotLoaded(body)),
                Err(e) => Err(e),
            },
        }
    }

    /// On a llama-server in router mode: loads `model` if it is listed and not loaded, and waits
    /// (within the request timeout) until it is.
    async fn router_load(&self, model: &str) -> LlmResult<()> {
        // A server whose listing fails or says nothing of loading is not a router: the completion
        // that follows loads the model, or says what is wrong.
        let Ok(Some(statuses)) = self.loaded().await else { return Ok(()) };
        if statuses.iter().any(|(id, loaded)| id == model && *loaded) || !statuses.iter().any(|(id, _)| id == model) {
            return Ok(());
        }
        match self.post_and_read("/models/load", &openai::ModelRequest { model }).await {
            // Already loading or loaded since the listing.
            Ok(()) | Err(LlmError::Status { status: 400, .. }) => {}
            Err(e) => return Err(e),
        }
        let until = Instant::now() + self.config.timeout;
        loop {
            let now = self.loaded().await?.unwrap_or_default();
            if now.iter().any(|(id, loaded)| id == model && *loaded) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(LlmError::Timeout(self.config.timeout));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Generates from one user prompt (Ollama `/api/generate`; OpenAI one user message).
    pub async fn generate(&self, model: &str, prompt: &str) -> LlmResult<Generation> {
        let generation = match self.config.api {
            Api::Ollama => {
                let body = ollama::GenerateRequest::new(&self.config, model, prompt);
                self.stream("/api/generate", &body, model, ollama::OllamaStream::new("/api/generate")).await
            }
            Api::OpenAi => {
                let body = openai::ChatRequest::new(&self.config, model, vec![openai::MessageRef::user(prompt)]);
                self.stream("/v1/chat/completions", &body, model, openai::OpenAiStream::default()).await
            }
        }?;
        self.log(model, 1, prompt.len(), &generation);
        Ok(generation)
    }

    /// Generates the assistant's reply to `messages`.
    pub async fn chat(&self, model: &str, messages: &[Message]) -> LlmResult<Generation> {
        let generation = match self.config.api {
            Api::Ollama => {
                let body = ollama::ChatRequest::new(&self.config, model, messages);
                self.stream("/api/chat", &body, model, ollama::OllamaStream::new("/api/chat")).await
            }
            Api::OpenAi => {
                let body = openai::ChatRequest::new(&self.config, model, openai::MessageRef::all(messages));
                self.stream("/v1/chat/completions", &body, model, openai::OpenAiStream::default()).await
            }
        }?;
        let chars = messages.iter().map(|m| m.content.len()).sum();
        self.log(model, messages.len(), chars, &generation);
        Ok(generation)
    }

    /// Whether the server answers: Ollama `/api/version` (else `/api/tags`); OpenAI `/health`
    /// (503 while llama-server loads the model), else `/v1/models` where there is no `/health`.
    pub async fn health(&self) -> LlmResult<()> {
        let (probe, fallback) = match self.config.api {
            Api::Ollama => ("/api/version", "/api/tags"),
            Api::OpenAi => ("/health", "/v1/models"),
        };
        match self.get_ok(probe).await {
            Err(LlmError::Status { status: 404, .. }) => self.get_ok(fallback).await,
            other => other,
        }
    }

    /// Per-request figures; never the text.
    fn log(&self, model: &str, messages: usize, prompt_chars: usize, g: &Generation) {
        debug!(
            api = %self.config.api,
            model,
            messages,
            prompt_chars,
            response_chars = g.text.len(),
            prompt_tokens = g.prompt_tokens,
            completion_tokens = g.completion_tokens,
            first_token_ms = g.first_token.map(|d| d.as_millis() as u64),
            total_ms = g.total.as_millis() as u64,
            load_ms = g.load.map(|d| d.as_millis() as u64),
            finish_reason = g.finish_reason.as_deref(),
            "generation finished"
        );
    }
}
