//! The LLM backends against recorded wire fixtures (tests/fixtures/{ollama,openai}), served by an
//! in-process HTTP server on 127.0.0.1: request bodies, stream decoding across arbitrary chunk
//! boundaries, and every error path. The live test against llama-server is tests/tests/e2e/llm.rs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use lcw_worker::llm::{Api, Generation, Llm, LlmConfig, LlmError, Message};
use serde_json::{Value, json};

/// How the fixture server answers one path.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 with a fixture file, in one piece.
    File(&'static str),
    /// 200 with a fixture file cut into chunks of this many bytes, each flushed separately.
    Chunked(&'static str, usize),
    /// 200 with the first bytes of a fixture file, then nothing (the connection stays open).
    StallAfter(&'static str, usize),
    /// This status and body.
    Status(u16, &'static str),
    /// Waits this long before answering 200 `{}`.
    Sleep(Duration),
}

#[derive(Debug, Default)]
struct Recorded {
    requests: Vec<(Method, String, Value)>,
}

#[derive(Clone)]
struct Fixtures {
    replies: Arc<HashMap<&'static str, Reply>>,
    recorded: Arc<Mutex<Recorded>>,
}

/// A fixture server; stops with the test's runtime.
struct Server {
    url: String,
    recorded: Arc<Mutex<Recorded>>,
}

impl Server {
    async fn start(replies: &[(&'static str, Reply)]) -> Server {
        let fixtures = Fixtures {
            replies: Arc::new(replies.iter().cloned().collect()),
            recorded: Arc::new(Mutex::new(Recorded::default())),
        };
        let recorded = fixtures.recorded.clone();
        let app = axum::Router::new().fallback(answer).with_state(fixtures);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { url, recorded }
    }

    fn llm(&self, api: Api) -> Llm {
        self.llm_with(LlmConfig { api, ..LlmConfig::default() })
    }

    fn llm_with(&self, config: LlmConfig) -> Llm {
        Llm::new(LlmConfig { url: self.url.clone(), ..config }).unwrap()
    }

    /// The JSON bodies posted to `path`.
    fn bodies(&self, path: &str) -> Vec<Value> {
        let recorded = self.recorded.lock().unwrap();
        recorded.requests.iter().filter(|(m, p, _)| m == Method::POST && p == path).map(|(_, _, b)| b.clone()).collect()
    }

    fn paths(&self) -> Vec<String> {
        self.recorded.lock().unwrap().requests.iter().map(|(_, p, _)| p.clone()).collect()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("sse") => "text/event-stream",
        Some("ndjson") => "application/x-ndjson",
        _ => "application/json",
    }
}

async fn answer(State(f): State<Fixtures>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    f.recorded.lock().unwrap().requests.push((method, path.clone(), json));
    let Some(reply) = f.replies.get(path.as_str()).cloned() else {
        return (StatusCode::NOT_FOUND, "404 page not found").into_response();
    };
    match reply {
        Reply::File(name) => ([(header::CONTENT_TYPE, content_type(name))], fixture(name)).into_response(),
        Reply::Chunked(name, size) => {
            let chunks: Vec<Vec<u8>> = fixture(name).chunks(size).map(<[u8]>::to_vec).collect();
            let stream = futures::stream::unfold(chunks.into_iter(), |mut chunks| async move {
                let chunk = chunks.next()?;
                // a pause so each chunk is its own read on the client
                tokio::time::sleep(Duration::from_millis(1)).await;
                Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), chunks))
            });
            ([(header::CONTENT_TYPE, content_type(name))], Body::from_stream(stream)).into_response()
        }
        Reply::StallAfter(name, n) => {
            let head = Bytes::from(fixture(name)[..n].to_vec());
            let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(head) })
                .chain(futures::stream::pending());
            ([(header::CONTENT_TYPE, content_type(name))], Body::from_stream(stream)).into_response()
        }
        Reply::Status(status, body) => (StatusCode::from_u16(status).unwrap(), body).into_response(),
        Reply::Sleep(d) => {
            tokio::time::sleep(d).await;
            "{}".into_response()
        }
    }
}

fn user(content: &str) -> Message {
    Message { role: "user".into(), content: content.into() }
}

// ---------------------------------------------------------------- Ollama

#[tokio::test]
async fn ollama_generate_streams_text_counts_and_load_time() {
    let server = Server::start(&[("/api/generate", Reply::File("ollama/generate_stream.ndjson"))]).await;
    let llm = server.llm_with(LlmConfig { api: Api::Ollama, num_predict: 256, ..LlmConfig::default() });
    let g = llm.generate("llama3-8b", "Why is the sky blue?").await.unwrap();
    assert_eq!(g.text, "The sky looks blue because of Rayleigh scattering — café ☕.");
    assert_eq!((g.prompt_tokens, g.completion_tokens), (Some(26), Some(11)));
    assert_eq!(g.load, Some(Duration::from_nanos(6_338_219_291)));
    assert_eq!(g.finish_reason.as_deref(), Some("stop"));
    assert!(g.first_token.is_some_and(|t| t <= g.total));

    let bodies = server.bodies("/api/generate");
    assert_eq!(
        bodies,
        [json!({
            "model": "llama3-8b",
            "prompt": "Why is the sky blue?",
            "stream": true,
            "keep_alive": -1,
            "options": {"temperature": 0.0, "seed": 42, "num_predict": 256}
        })]
    );
    assert!(bodies[0]["keep_alive"].is_i64(), "keep_alive is a JSON number");
}

#[tokio::test]
async fn ollama_chat_survives_chunks_cut_mid_line_and_mid_character() {
    for size in [3, 7, 64] {
        let server = Server::start(&[("/api/chat", Reply::Chunked("ollama/chat_stream.ndjson", size))]).await;
        let llm = server.llm(Api::Ollama);
        let messages = [Message { role: "system".into(), content: "be kind".into() }, user("hi")];
        let g = llm.chat("llama3-8b", &messages).await.unwrap();
        assert_eq!(g.text, "Hello! How can I help you today?", "chunks of {size}");
        assert_eq!((g.prompt_tokens, g.completion_tokens), (Some(31), Some(9)));
        assert_eq!(g.finish_reason.as_deref(), Some("length"));
        let body = &server.bodies("/api/chat")[0];
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}])
        );
        assert_eq!(body["keep_alive"], json!(-1));
        assert_eq!(body["options"], json!({"temperature": 0.0, "seed": 42, "num_predict": 1024}));
    }
}

#[tokio::test]
async fn ollama_tags_list_models_and_a_bare_name_matches_latest() {
    let server = Server::start(&[("/api/tags", Reply::File("ollama/tags.json"))]).await;
    let llm = server.llm(Api::Ollama);
    assert_eq!(llm.models().await.unwrap(), ["llama3-8b:latest", "qwen2.5:7b-instruct"]);
    llm.check_models(&["llama3-8b".into(), "qwen2.5:7b-instruct".into()]).await.unwrap();
    let err = llm.check_models(&["llama3-8b".into(), "mistral-7b".into()]).await.unwrap_err();
    match &err {
        LlmError::MissingModels { missing, available } => {
            assert_eq!(missing, &["mistral-7b"]);
            assert_eq!(available, &["llama3-8b:latest", "qwen2.5:7b-instruct"]);
        }
        other => panic!("expected MissingModels, got {other:?}"),
    }
    assert!(err.to_string().contains("ollama pull mistral-7b"), "{err}");
}

#[tokio::test]
async fn ollama_warm_posts_no_prompt_and_a_numeric_keep_alive() {
    let server = Server::start(&[("/api/generate", Reply::File("ollama/warm.json"))]).await;
    server.llm(Api::Ollama).warm("llama3-8b").await.unwrap();
    assert_eq!(server.bodies("/api/generate"), [json!({"model": "llama3-8b", "stream": false, "keep_alive": -1})]);
}

#[tokio::test]
async fn ollama_health_uses_version_then_tags() {
    let server = Server::start(&[("/api/version", Reply::File("ollama/version.json"))]).await;
    server.llm(Api::Ollama).health().await.unwrap();
    let server = Server::start(&[("/api/tags", Reply::File("ollama/tags.json"))]).await;
    server.llm(Api::Ollama).health().await.unwrap();
    assert_eq!(server.paths(), ["/api/version", "/api/tags"]);
}

#[tokio::test]
async fn ollama_error_line_is_a_server_error() {
    let server = Server::start(&[("/api/generate", Reply::File("ollama/error_line.ndjson"))]).await;
    let err = server.llm(Api::Ollama).generate("llama3-8b", "p").await.unwrap_err();
    assert!(
        matches!(&err, LlmError::ServerError(m) if m == "an error was encountered while running the model: unexpected EOF"),
        "{err:?}"
    );
}

#[tokio::test]
async fn ollama_empty_generation_is_refused() {
    let server = Server::start(&[("/api/generate", Reply::File("ollama/empty_generation.ndjson"))]).await;
    let err = server.llm(Api::Ollama).generate("llama3-8b", "p").await.unwrap_err();
    assert!(matches!(&err, LlmError::EmptyGeneration { model } if model == "llama3-8b"), "{err:?}");
}

#[tokio::test]
async fn ollama_malformed_line_is_a_protocol_error() {
    let server = Server::start(&[("/api/generate", Reply::File("ollama/malformed.ndjson"))]).await;
    let err = server.llm(Api::Ollama).generate("llama3-8b", "p").await.unwrap_err();
    assert!(matches!(&err, LlmError::Protocol(m) if m.contains("line 2 of the /api/generate stream")), "{err:?}");
    assert!(!err.to_string().contains("sky"), "no response text in errors: {err}");
}

#[tokio::test]
async fn ollama_stream_cut_before_done_is_a_protocol_error() {
    let server = Server::start(&[("/api/generate", Reply::File("ollama/truncated.ndjson"))]).await;
    let err = server.llm(Api::Ollama).generate("llama3-8b", "p").await.unwrap_err();
    assert!(matches!(&err, LlmError::Protocol(m) if m.contains("without its final message")), "{err:?}");
}

#[tokio::test]
async fn ollama_missing_model_404_keeps_the_body() {
    let body = r#"{"error":"model 'nope' not found, try pulling it first"}"#;
    let server = Server::start(&[("/api/chat", Reply::Status(404, body))]).await;
    let err = server.llm(Api::Ollama).chat("nope", &[user("p")]).await.unwrap_err();
    assert!(matches!(&err, LlmError::Status { status: 404, body: b } if b == body), "{err:?}");
    assert!(err.to_string().contains("/api/*"), "{err}");
}

#[tokio::test]
async fn server_error_status_is_reported_with_a_truncated_body() {
    let long: &'static str = "x".repeat(5000).leak();
    let server = Server::start(&[("/api/generate", Reply::Status(500, long))]).await;
    let err = server.llm(Api::Ollama).generate("m", "p").await.unwrap_err();
    match err {
        LlmError::Status { status: 500, body } => assert!(body.chars().count() <= 301, "{}", body.len()),
        other => panic!("expected Status 500, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    let server = Server::start(&[("/api/generate", Reply::Sleep(Duration::from_secs(30)))]).await;
    let llm = server.llm_with(LlmConfig { timeout: Duration::from_millis(300), ..LlmConfig::default() });
    let started = std::time::Instant::now();
    let err = llm.generate("m", "p").await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout(d) if d == Duration::from_millis(300)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_stream_that_stalls_midway_is_a_timeout() {
    let server = Server::start(&[("/api/generate", Reply::StallAfter("ollama/generate_stream.ndjson", 200))]).await;
    let llm = server.llm(Api::Ollama).with_timeout(Duration::from_millis(400));
    let err = llm.generate("m", "p").await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    for api in [Api::Ollama, Api::OpenAi] {
        let llm = Llm::new(LlmConfig { url: url.clone(), api, ..LlmConfig::default() }).unwrap();
        let err = llm.generate("m", "p").await.unwrap_err();
        match &err {
            LlmError::Unreachable { url: u, reason } => {
                assert_eq!(u, &url);
                assert!(reason.to_lowercase().contains("refused"), "{reason}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(matches!(llm.health().await, Err(LlmError::Unreachable { .. })));
    }
}

#[test]
fn urls_and_api_names_are_validated() {
    let err = Llm::new(LlmConfig { url: "localhost:11434".into(), ..LlmConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("`localhost:11434` is not an http(s) URL"), "{err}");
    assert_eq!("openai".parse::<Api>().unwrap(), Api::OpenAi);
    assert_eq!("Ollama".parse::<Api>().unwrap(), Api::Ollama);
    assert_eq!(Api::OpenAi.to_string(), "openai");
    let err = "vllm".parse::<Api>().unwrap_err();
    assert!(err.to_string().contains("use `ollama`"), "{err}");
}

// ---------------------------------------------------------------- OpenAI-compatible

fn check_openai_stream(g: &Generation) {
    assert_eq!(g.text, "Blue light scatters more — naïve ✓");
    assert_eq!((g.prompt_tokens, g.completion_tokens), (Some(14), Some(6)));
    assert_eq!(g.finish_reason.as_deref(), Some("length"));
    assert_eq!(g.load, None);
    assert!(g.first_token.is_some_and(|t| t <= g.total));
}

#[tokio::test]
async fn openai_stream_survives_chunks_cut_mid_line() {
    for size in [5, 13, 100, 4096] {
        let server = Server::start(&[("/v1/chat/completions", Reply::Chunked("openai/chat_stream.sse", size))]).await;
        let g = server.llm(Api::OpenAi).chat("gemma3-270m", &[user("Why is the sky blue?")]).await.unwrap();
        check_openai_stream(&g);
    }
}

#[tokio::test]
async fn openai_decodes_a_stream_recorded_from_llama_server() {
    // recorded from llama-server b11434 with Gemma 3 270M (max_tokens 6); the text is nonsense
    let server = Server::start(&[("/v1/chat/completions", Reply::Chunked("openai/llama_server_b11434.sse", 37))]).await;
    let g = server.llm(Api::OpenAi).generate("gemma3-270m", "Name three colours.").await.unwrap();
    assert_eq!(g.text, "Name three colours. wn\u{119}tr\n");
    assert_eq!((g.prompt_tokens, g.completion_tokens), (Some(13), Some(6)));
    assert_eq!(g.finish_reason.as_deref(), Some("length"));
}

#[tokio::test]
async fn openai_generate_sends_one_user_message_without_prompt_cache() {
    let server = Server::start(&[("/v1/chat/completions", Reply::File("openai/chat_stream.sse"))]).await;
    // a base URL with /v1/ is accepted
    let config =
        LlmConfig { url: format!("{}/v1/", server.url), api: Api::OpenAi, num_predict: 16, ..Default::default() };
    let g = Llm::new(config).unwrap().generate("gemma3-270m", "Why is the sky blue?").await.unwrap();
    check_openai_stream(&g);
    assert_eq!(
        server.bodies("/v1/chat/completions"),
        [json!({
            "model": "gemma3-270m",
            "messages": [{"role": "user", "content": "Why is the sky blue?"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.0,
            "seed": 42,
            "max_tokens": 16,
            "cache_prompt": false
        })]
    );
}

#[tokio::test]
async fn openai_models_are_matched_exactly() {
    let server = Server::start(&[("/v1/models", Reply::File("openai/models.json"))]).await;
    let llm = server.llm(Api::OpenAi);
    assert_eq!(llm.models().await.unwrap(), ["gemma3-270m"]);
    llm.check_models(&["gemma3-270m".into()]).await.unwrap();
    let err = llm.check_models(&["gemma3".into()]).await.unwrap_err();
    assert!(matches!(&err, LlmError::MissingModels { missing, .. } if missing == &["gemma3"]), "{err:?}");
    assert!(err.to_string().contains("--alias gemma3"), "{err}");
}

#[tokio::test]
async fn openai_warm_is_a_one_token_completion() {
    let server = Server::start(&[("/v1/chat/completions", Reply::File("openai/completion.json"))]).await;
    server.llm(Api::OpenAi).warm("gemma3-270m").await.unwrap();
    let body = &server.bodies("/v1/chat/completions")[0];
    assert_eq!(
        (&body["max_tokens"], &body["stream"], &body["model"]),
        (&json!(1), &json!(false), &json!("gemma3-270m"))
    );
}

#[tokio::test]
async fn openai_empty_generation_is_refused() {
    let server = Server::start(&[("/v1/chat/completions", Reply::File("openai/empty.sse"))]).await;
    let err = server.llm(Api::OpenAi).generate("gemma3-270m", "p").await.unwrap_err();
    assert!(matches!(&err, LlmError::EmptyGeneration { model } if model == "gemma3-270m"), "{err:?}");
}

#[tokio::test]
async fn openai_error_event_is_a_server_error() {
    let server = Server::start(&[("/v1/chat/completions", Reply::Chunked("openai/error.sse", 9))]).await;
    let err = server.llm(Api::OpenAi).generate("gemma3-270m", "p").await.unwrap_err();
    assert!(
        matches!(&err, LlmError::ServerError(m) if m.starts_with("the request exceeds the available context")),
        "{err:?}"
    );
}

#[tokio::test]
async fn openai_health_reports_loading_and_falls_back_to_models() {
    let loading = r#"{"error":{"message":"Loading model","type":"unavailable_error","code":503}}"#;
    let server = Server::start(&[("/health", Reply::Status(503, loading))]).await;
    let err = server.llm(Api::OpenAi).health().await.unwrap_err();
    assert!(matches!(&err, LlmError::Status { status: 503, body } if body.contains("Loading model")), "{err:?}");
    assert!(err.to_string().contains("still loading"), "{err}");

    let server = Server::start(&[("/v1/models", Reply::File("openai/models.json"))]).await;
    server.llm(Api::OpenAi).health().await.unwrap();
    assert_eq!(server.paths(), ["/health", "/v1/models"]);
}

#[tokio::test]
async fn openai_bad_request_keeps_the_servers_reason() {
    let body =
        r#"{"error":{"code":400,"message":"Expected 'messages' to be an array","type":"invalid_request_error"}}"#;
    let server = Server::start(&[("/v1/chat/completions", Reply::Status(400, body))]).await;
    let err = server.llm(Api::OpenAi).chat("m", &[]).await.unwrap_err();
    assert!(matches!(&err, LlmError::Status { status: 400, body: b } if b == body), "{err:?}");
}

#[tokio::test]
async fn the_wrong_api_for_the_server_says_so() {
    // an OpenAI-compatible server has no /api/*: 404 with a hint about the API setting
    let server = Server::start(&[("/v1/models", Reply::File("openai/models.json"))]).await;
    let err = server.llm(Api::Ollama).models().await.unwrap_err();
    assert!(matches!(err, LlmError::Status { status: 404, .. }), "{err:?}");
    assert!(err.to_string().contains("API setting"), "{err}");
}
