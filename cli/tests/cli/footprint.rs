//! `lcw run --work` with its API, the real binary, a devnet and the real LLM server: the GraphQL
//! `Model.footprint` of the served model is the memory the LLM server reports for it (what
//! `Llm::footprints` measures), and only that model has one.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{operator, registered_worker};
use lcw_tests::llm::LlmServer;
use lcw_tests::{TestNet, wait_until};
use serde_json::Value;

const MODEL: &str = "gemma3-270m";

/// The root `models` with their footprints, if the API answers.
async fn models(url: &str) -> Option<Vec<Value>> {
    let query = serde_json::json!({ "query": "{ models { name footprint { bytes detail } } }" });
    let body: Value = reqwest::Client::new().post(url).json(&query).send().await.ok()?.json().await.ok()?;
    body.pointer("/data/models")?.as_array().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_beside_the_worker_shows_the_served_models_footprint_from_the_llm_server() {
    let net = TestNet::start_with(|o| o.block_time = 1).await;
    let server = LlmServer::start();
    let data = net.dir.path();
    let log = data.join("lcw-run.log");
    registered_worker(&net, data, MODEL);

    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("its address").to_string()
    };
    let file = std::fs::File::create(&log).expect("log file");
    let mut run = operator(data)
        .args(["run", "--work", "--listen", &listen])
        .args(["--llm-api", "openai", "--llm-url", &server.url, "--models", MODEL])
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn lcw run");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();

    let url = format!("http://{listen}/graphql");
    let served = |m: &Value| m["name"] == MODEL && m["footprint"].is_object();
    let measured =
        wait_until(Duration::from_secs(120), || async { models(&url).await.is_some_and(|ms| ms.iter().any(served)) })
            .await;
    let answer = models(&url).await;
    let _ = Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let status = run.wait().expect("wait");
    assert!(measured, "the served model's footprint in GraphQL: {answer:?}\n{}", text());
    assert!(status.success(), "stopped cleanly on SIGINT ({status}):\n{}", text());

    // What the LLM server reports for the model, measured here the way the worker measures it.
    let llm = lcw_worker::llm::Llm::new(server.config()).expect("an LLM client");
    let expected = llm.footprints(&[MODEL.to_owned()]).await.expect("the LLM server's footprints");
    let expected = expected.sized.iter().find(|f| f.model == MODEL).expect("the model is sized");
    let models = answer.expect("the models");
    let model = models.iter().find(|m| served(m)).expect("the served model");
    let bytes = model["footprint"]["bytes"].as_u64().expect("bytes is a number");
    // At least the weights: about the size of the model file the server loaded.
    let file = std::fs::metadata(lcw_tests::llm::installed().model).expect("the model file").len();
    assert!(bytes as f64 >= file as f64 * 0.9, "{bytes} B loaded, the model file is {file} B: {model}");
    let off = bytes.abs_diff(expected.total) as f64 / expected.total as f64;
    assert!(off < 0.01, "GraphQL says {bytes} B, the LLM server {} B ({})", expected.total, expected.describe());
    let detail = model["footprint"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("llama-server"), "the detail says where the figure comes from: {detail}");
    // Models this worker does not serve have no footprint.
    for other in models.iter().filter(|m| m["name"] != MODEL) {
        assert!(other["footprint"].is_null(), "only the served model is measured: {other}");
    }
}
