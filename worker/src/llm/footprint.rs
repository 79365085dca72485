//! How much memory each served model holds while loaded, as the LLM server tells it:
//!
//! - **Ollama, loaded** (`/api/ps`): `size` is everything the loaded model holds (weights, KV
//!   cache for its `context_length`, compute buffers); `size_vram` is the part in GPU memory.
//! - **Ollama, not loaded**: `/api/tags` `size` (the model file: the weights) plus a KV cache
//!   estimated from `/api/show` `model_info` at [`OLLAMA_CONTEXT`] tokens (or `num_ctx`).
//! - **llama-server** (`/v1/models` `meta`): `size` (the weights' bytes) plus the KV cache for
//!   `n_ctx` tokens, estimated from the header of the model file `/props` names, when that file
//!   is readable here (the server runs on this machine).
//! - **llama-server in router mode** (`--models-preset`, several models, each loaded on demand):
//!   its `/v1/models` gives no `meta` but each model's launch arguments (`status.args`): the size
//!   of the `--model` file plus the KV cache for its `--ctx-size`, from that file's header, when
//!   the server runs on this machine.
//!
//! The KV cache is estimated at f16 for every layer, an upper bound for models with
//! sliding-window layers. Servers that report no size (vLLM's `/v1/models`) leave the model
//! unsized.

use std::path::PathBuf;

use serde::Deserialize;
use tracing::debug;

use super::error::excerpt;
use super::{Api, Llm, LlmError, LlmResult, ollama, openai};
use crate::fit::human_bytes;

mod gguf;

pub use gguf::Shape;

/// The context Ollama loads a model with when the request sets no `num_ctx`.
pub const OLLAMA_CONTEXT: u64 = 4096;

/// Where a footprint came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Ollama's `/api/ps`: the model is loaded and its whole size is measured.
    OllamaLoaded,
    /// Ollama's `/api/tags` file size, plus the KV cache from `/api/show` when it has the shape.
    OllamaFile,
    /// llama-server's `/v1/models` `meta.size`, plus the KV cache from the model file's header
    /// when it is readable.
    LlamaServer,
    /// The size of the model file a llama-server router launches the model with, plus the KV
    /// cache for its `--ctx-size` from the file's header.
    LlamaServerFile,
}

/// One model's memory while loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// The model as the worker names it.
    pub model: String,
    /// Bytes in all: weights, and the KV cache where it is known.
    pub total: u64,
    /// Of `total`, the bytes the server reports in GPU memory.
    pub vram: u64,
    /// The KV cache's share of `total`, where it is estimated separately.
    pub kv_cache: Option<u64>,
    /// The context (tokens) the KV cache is sized for.
    pub context: Option<u64>,
    /// Where the figure came from.
    pub source: Source,
}

impl Footprint {
    /// Bytes of machine memory (RAM): the total less what sits in GPU memory.
    pub fn ram(&self) -> u64 {
        self.total.saturating_sub(self.vram)
    }

    /// What the figure includes, in words.
    pub fn describe(&self) -> String {
        let ctx = self.context.map(|c| format!(" for {c} tokens")).unwrap_or_default();
        let vram =
            if self.vram > 0 { format!("; {} of it in GPU memory", human_bytes(self.vram)) } else { String::new() };
        match (&self.source, self.kv_cache) {
            (Source::OllamaLoaded, _) => format!("loaded: weights, KV cache{ctx} and buffers, Ollama /api/ps{vram}"),
            (Source::OllamaFile, Some(kv)) => format!(
                "not loaded: file {} (Ollama /api/tags) + KV cache {}{ctx} (estimated from /api/show)",
                human_bytes(self.total - kv),
                human_bytes(kv)
            ),
            (Source::OllamaFile, None) => "not loaded: the file (Ollama /api/tags); KV cache not counted".into(),
            (Source::LlamaServer, Some(kv)) => format!(
                "weights {} (llama-server /v1/models) + KV cache {}{ctx} (estimated from the model file)",
                human_bytes(self.total - kv),
                human_bytes(kv)
            ),
            (Source::LlamaServer, None) => {
                "weights (llama-server /v1/models); KV cache not counted: the model file is not readable here".into()
            }
            (Source::LlamaServerFile, Some(kv)) => format!(
                "model file {} + KV cache {}{ctx} (llama-server router: its launch arguments and the file's header)",
                human_bytes(self.total - kv),
                human_bytes(kv)
            ),
            (Source::LlamaServerFile, None) => {
                "model file (llama-server router's launch arguments); KV cache not counted: no --ctx-size or shape"
                    .into()
            }
        }
    }
}

/// The footprints of a set of models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Footprints {
    /// The models the server sized.
    pub sized: Vec<Footprint>,
    /// Models it does not serve, or serves without reporting a size.
    pub unknown: Vec<String>,
}

/// `GET /api/ps`.
#[derive(Debug, Default, Deserialize)]
struct Ps {
    #[serde(default)]
    models: Vec<Running>,
}

#[derive(Debug, Deserialize)]
struct Running {
    name: String,
    size: u64,
    #[serde(default)]
    size_vram: u64,
    context_length: Option<u64>,
}

/// `GET /api/tags` with sizes.
#[derive(Debug, Default, Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<Stored>,
}

#[derive(Debug, Deserialize)]
struct Stored {
    name: String,
    size: u64,
}

/// `POST /api/show`: `model_info` holds the GGUF metadata.
#[derive(Debug, Deserialize)]
struct Show {
    #[serde(default)]
    model_info: serde_json::Map<String, serde_json::Value>,
}

impl Show {
    fn shape(&self) -> Option<Shape> {
        let arch = self.model_info.get("general.architecture")?.as_str()?;
        Shape::from_lookup(arch, |key| self.model_info.get(key)?.as_u64())
    }
}

/// `GET /v1/models` with llama-server's `meta`.
#[derive(Debug, Default, Deserialize)]
struct Models {
    #[serde(default)]
    data: Vec<Listed>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    id: String,
    meta: Option<Meta>,
    /// In router mode: how the model is (or would be) launched.
    status: Option<RouterStatus>,
}

#[derive(Debug, Deserialize)]
struct RouterStatus {
    #[serde(default)]
    args: Vec<String>,
}

/// The model file and context a llama-server router launches `model` with (`--model`/`-m`,
/// `--ctx-size`/`-c`).
fn router_launch(models: &Models, model: &str) -> Option<(PathBuf, Option<u64>)> {
    let listed = models.data.iter().find(|m| openai::serves(std::slice::from_ref(&m.id), model))?;
    let args = &listed.status.as_ref()?.args;
    let value = |names: &[&str]| args.windows(2).find(|w| names.contains(&w[0].as_str())).map(|w| w[1].clone());
    let path = PathBuf::from(value(&["--model", "-m"])?);
    let context = value(&["--ctx-size", "-c"]).and_then(|c| c.parse().ok()).filter(|&c| c > 0);
    Some((path, context))
}

#[derive(Debug, Deserialize)]
struct Meta {
    size: Option<u64>,
    n_ctx: Option<u64>,
}

/// `GET /props`: the model file.
#[derive(Debug, Deserialize)]
struct Props {
    model_path: Option<PathBuf>,
}

fn from_ps(ps: &Ps, model: &str) -> Option<Footprint> {
    let m = ps.models.iter().find(|m| ollama::serves(std::slice::from_ref(&m.name), model))?;
    Some(Footprint {
        model: model.to_owned(),
        total: m.size,
        vram: m.size_vram.min(m.size),
        kv_cache: None,
        context: m.context_length,
        source: Source::OllamaLoaded,
    })
}

fn from_tags(tags: &Tags, model: &str, shape: Option<Shape>, context: u64) -> Option<Footprint> {
    let m = tags.models.iter().find(|m| ollama::serves(std::slice::from_ref(&m.name), model))?;
    let kv = shape.map(|s| s.kv_bytes(context));
    Some(Footprint {
        model: model.to_owned(),
        total: m.size + kv.unwrap_or(0),
        vram: 0,
        kv_cache: kv,
        context: kv.map(|_| context),
        source: Source::OllamaFile,
    })
}

fn from_models(models: &Models, model: &str, shape: Option<Shape>) -> Option<Footprint> {
    let listed = models.data.iter().find(|m| openai::serves(std::slice::from_ref(&m.id), model))?;
    let meta = listed.meta.as_ref()?;
    let kv = shape.zip(meta.n_ctx).map(|(s, n)| s.kv_bytes(n));
    Some(Footprint {
        model: model.to_owned(),
        total: meta.size? + kv.unwrap_or(0),
        vram: 0,
        kv_cache: kv,
        context: kv.and(meta.n_ctx),
        source: Source::LlamaServer,
    })
}

impl Llm {
    /// The memory each of `models` holds while loaded, as the server reports it (see the module
    /// documentation for what each figure includes).
    pub async fn footprints(&self, models: &[String]) -> LlmResult<Footprints> {
        let mut out = Footprints::default();
        match self.config.api {
            Api::Ollama => {
                let ps = match self.get_json::<Ps>("/api/ps").await {
                    Err(LlmError::Status { status: 404, .. }) => Ps::default(),
                    other => other?,
                };
                let mut tags = None;
                let context = self.config.num_ctx.filter(|&n| n > 0).map_or(OLLAMA_CONTEXT, u64::from);
                for model in models {
                    if let Some(f) = from_ps(&ps, model) {
                        out.sized.push(f);
                        continue;
                    }
                    if tags.is_none() {
                        tags = Some(self.get_json::<Tags>("/api/tags").await?);
                    }
                    let shape = self.show(model).await.map(|s| s.shape()).unwrap_or_else(|e| {
                        debug!(model, error = %e, "no model_info from /api/show; the KV cache is not counted");
                        None
                    });
                    match from_tags(tags.as_ref().unwrap_or(&Tags::default()), model, shape, context) {
                        Some(f) => out.sized.push(f),
                        None => out.unknown.push(model.clone()),
                    }
                }
            }
            Api::OpenAi => {
                let listed = self.get_json::<Models>("/v1/models").await?;
                // /props describes the one model a single-model llama-server loads.
                let shape = if listed.data.len() == 1 { self.file_shape().await } else { None };
                for model in models {
                    let sized = match from_models(&listed, model, shape) {
                        Some(f) => Some(f),
                        None => self.router_file(&listed, model).await,
                    };
                    match sized {
                        Some(f) => out.sized.push(f),
                        None => out.unknown.push(model.clone()),
                    }
                }
            }
        }
        Ok(out)
    }

    /// A router's model from its launch arguments ([`router_launch`]), when the server runs on
    /// this machine and the file is readable.
    async fn router_file(&self, listed: &Models, model: &str) -> Option<Footprint> {
        if !crate::fit::is_local(&self.config.url) {
            return None;
        }
        let (path, context) = router_launch(listed, model)?;
        let read = path.clone();
        let file = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::metadata(&read)?.len();
            Ok::<_, std::io::Error>((bytes, gguf::read_shape(&read)?))
        });
        let (bytes, shape) = match file.await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                debug!(model, path = %path.display(), error = %e, "the router's model file is not readable; not sized");
                return None;
            }
            Err(_) => return None,
        };
        let kv = shape.zip(context).map(|(s, n)| s.kv_bytes(n));
        Some(Footprint {
            model: model.to_owned(),
            total: bytes + kv.unwrap_or(0),
            vram: 0,
            kv_cache: kv,
            context: kv.and(context),
            source: Source::LlamaServerFile,
        })
    }

    /// `POST /api/show {model}`.
    async fn show(&self, model: &str) -> LlmResult<Show> {
        let timeout = self.config.timeout.min(super::PROBE_TIMEOUT);
        let request = self.http.post(format!("{}/api/show", self.base)).json(&serde_json::json!({ "model": model }));
        let unreachable =
            |e: reqwest::Error| LlmError::Unreachable { url: self.label.clone(), reason: e.without_url().to_string() };
        let response = request.timeout(timeout).send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let body = excerpt(&String::from_utf8_lossy(&body), 300);
            return Err(LlmError::Status { status: status.as_u16(), body });
        }
        serde_json::from_slice(&body).map_err(|e| LlmError::Protocol(format!("POST /api/show: {e}")))
    }

    /// The KV-cache shape from the header of the model file llama-server's `/props` names, when
    /// the server runs on this machine and that file is readable here (a remote server's path
    /// names a file on its own machine).
    async fn file_shape(&self) -> Option<Shape> {
        if !crate::fit::is_local(&self.config.url) {
            return None;
        }
        let path = self.get_json::<Props>("/props").await.ok()?.model_path?;
        let read = path.clone();
        match tokio::task::spawn_blocking(move || gguf::read_shape(&read)).await {
            Ok(Ok(shape)) => shape,
            Ok(Err(e)) => {
                debug!(path = %path.display(), error = %e, "the model file is not readable; the KV cache is not counted");
                None
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures in `footprint/fixtures/`: `llama-server-*.json` are the answers of llama.cpp's
    //! server b11434 (`tests/scripts/llm-server.sh`) serving Gemma 3 270M Q4_K_M with `-c 2048`
    //! (`/props` cut to the fields read and a few more), and `llama-server-router-v1-models.json`
    //! the same server in router mode (`--models-preset` naming that file as `a` and `b`, nothing
    //! loaded); `ollama-ps.json` is an `/api/ps` answer
    //! recorded in attogram/ollama-bash-lib's `demos/ps.md`; `ollama-tags.json` is the "List
    //! Local Models" example of Ollama's `docs/api.md`; `ollama-show.json` is the `model_info`
    //! of gemma3n:e4b from attogram/ollama-bash-lib's `demos/show.md` (license, modelfile and
    //! template cut).
    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn llama_server_reports_the_weights_and_the_context() {
        let models: Models = fixture(include_str!("footprint/fixtures/llama-server-v1-models.json"));
        let props: Props = fixture(include_str!("footprint/fixtures/llama-server-props.json"));
        assert!(props.model_path.unwrap().ends_with("gemma-3-270m-q4_k_m.gguf"));
        let gemma = Shape { layers: 18, kv_heads: 1, key_length: 256, value_length: 256 };
        let f = from_models(&models, "gemma3-270m", Some(gemma)).unwrap();
        assert_eq!(f.kv_cache, Some(18 * 512 * 2 * 2048));
        assert_eq!(f.total, 246_587_904 + 18 * 512 * 2 * 2048);
        assert_eq!(f.ram(), f.total);
        assert_eq!(
            f.describe(),
            "weights 235.2 MiB (llama-server /v1/models) + KV cache 36.0 MiB for 2048 tokens (estimated from the \
             model file)"
        );
        let bare = from_models(&models, "gemma3-270m", None).unwrap();
        assert_eq!((bare.total, bare.kv_cache), (246_587_904, None));
        assert!(bare.describe().contains("KV cache not counted"));
        assert_eq!(from_models(&models, "gemma3", None), None, "ids match exactly");
    }

    #[test]
    fn a_llama_server_router_names_each_model_file_and_its_context() {
        let models: Models = fixture(include_str!("footprint/fixtures/llama-server-router-v1-models.json"));
        assert_eq!(from_models(&models, "a", None), None, "a router reports no meta");
        let (path, context) = router_launch(&models, "b").unwrap();
        assert!(path.ends_with("gemma-3-270m-q4_k_m.gguf"), "{}", path.display());
        assert_eq!(context, Some(2048));
        assert_eq!(router_launch(&models, "c"), None);
        let single: Models = fixture(include_str!("footprint/fixtures/llama-server-v1-models.json"));
        assert_eq!(router_launch(&single, "gemma3-270m"), None, "a single-model server has no launch arguments");
    }

    #[test]
    fn ollama_loaded_models_count_what_is_not_in_gpu_memory() {
        let ps: Ps = fixture(include_str!("footprint/fixtures/ollama-ps.json"));
        let f = from_ps(&ps, "mistral:7b-instruct").unwrap();
        assert_eq!((f.total, f.vram, f.ram(), f.context), (5_560_649_728, 5_560_649_728, 0, Some(4096)));
        assert!(f.describe().contains("5.2 GiB of it in GPU memory"), "{}", f.describe());
        assert_eq!(from_ps(&ps, "mistral"), None, "a bare name means :latest");
    }

    #[test]
    fn ollama_stored_models_add_an_estimated_kv_cache() {
        let tags: Tags = fixture(include_str!("footprint/fixtures/ollama-tags.json"));
        let show: Show = fixture(include_str!("footprint/fixtures/ollama-show.json"));
        let shape = show.shape().unwrap();
        // gemma3n: 35 layers, 2 KV heads, no key_length, so embedding 2048 / 8 heads = 256.
        assert_eq!(shape, Shape { layers: 35, kv_heads: 2, key_length: 256, value_length: 256 });
        let f = from_tags(&tags, "llama3.2", Some(shape), OLLAMA_CONTEXT).unwrap();
        let kv = 35 * 2 * 512 * 2 * 4096;
        assert_eq!((f.total, f.kv_cache, f.context), (2_019_393_189 + kv, Some(kv), Some(4096)));
        assert!(
            f.describe().starts_with("not loaded: file 1.9 GiB (Ollama /api/tags) + KV cache 280.0 MiB"),
            "{}",
            f.describe()
        );
        let bare = from_tags(&tags, "deepseek-r1:latest", None, OLLAMA_CONTEXT).unwrap();
        assert_eq!((bare.total, bare.kv_cache), (4_683_075_271, None));
        assert_eq!(from_tags(&tags, "qwen3", None, OLLAMA_CONTEXT), None);
    }
}
