//! An API key in a node, beacon, gateway or LLM URL never reaches the worker's errors (those
//! it returns and the failure reasons `lcw work --json` prints) or its log lines: against a
//! server that cannot be reached and against one that fails every request in the ways that
//! quote the request URL.

// The hostile node of the chain layer's tests, shared rather than copied.
#[path = "../../chain/tests/hostile/mod.rs"]
mod hostile;

use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use lcw_chain::node::Chain;
use lcw_schema::suite::SessionKey;
use lcw_worker::blobs::BlobSource;
use lcw_worker::gateway::{Gateway, GatewayConfig};
use lcw_worker::llm::{Api, Llm, LlmConfig};

use hostile::{Answer, HostileNode, assert_no_secret, captured_logs};

const TIMEOUT: Duration = Duration::from_millis(400);

fn shown<T: std::fmt::Debug, E: std::fmt::Display + std::fmt::Debug>(r: Result<T, E>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("{e} / {e:?}"),
    }
}

/// The LLM server at `url`, both APIs: listing, checking and running models.
async fn llm_calls(url: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for api in [Api::Ollama, Api::OpenAi] {
        let config = LlmConfig { url: url.to_owned(), api, timeout: TIMEOUT, ..LlmConfig::default() };
        texts.push(format!("{config:?}"));
        let llm = match Llm::new(config) {
            Ok(llm) => llm,
            Err(e) => {
                texts.push(format!("{e} / {e:?}"));
                continue;
            }
        };
        texts.push(format!("{llm:?}"));
        texts.push(shown(llm.models().await));
        texts.push(shown(llm.check_models(&["gemma3-270m".to_owned()]).await));
        texts.push(shown(llm.warm("gemma3-270m").await));
        texts.push(shown(llm.generate("gemma3-270m", "hi").await));
        texts.push(shown(llm.health().await));
    }
    texts
}

/// The worker gateway at `url`: sign-in and drain.
async fn gateway_calls(url: &str) -> Vec<String> {
    let mut config = GatewayConfig::new(url);
    config.timeout = TIMEOUT;
    match Gateway::new(config, PrivateKeySigner::random()) {
        Ok(g) => vec![format!("{g:?}"), g.url().to_owned(), shown(g.sign_in().await), shown(g.drain().await)],
        Err(e) => vec![format!("{e} / {e:?}")],
    }
}

/// Blobs from anvil at `node` and from a beacon node at `beacon`: the probe, the search, and
/// opening a job's prompt (the failure reason the worker keeps).
async fn blob_calls(node: &str, beacon: &str) -> Vec<String> {
    let chain = match Chain::connect(node, TIMEOUT).await {
        Ok(chain) => chain,
        Err(e) => return vec![format!("{e} / {e:?}")],
    };
    let mut sources = vec![BlobSource::Anvil(chain.provider().clone())];
    match BlobSource::beacon(chain.provider().clone(), beacon, TIMEOUT) {
        Ok(s) => sources.push(s),
        Err(e) => return vec![format!("{e} / {e:?}")],
    }
    let mut texts = Vec::new();
    let key = SessionKey::from_bytes([7; 32]);
    for source in &sources {
        texts.push(format!("{source:?}"));
        texts.push(shown(source.probe().await));
        let deadline = Instant::now() + 2 * TIMEOUT;
        texts.push(shown(source.fetch_until(B256::repeat_byte(1), 100, deadline).await));
        let deadline = Instant::now() + 2 * TIMEOUT;
        let opened = lcw_worker::job::open(source, &key, B256::repeat_byte(1), 100, deadline).await;
        texts.push(opened.map(|_| "opened".to_owned()).unwrap_or_else(|f| f.reason));
    }
    texts
}

/// The LLM server, the gateway, the node and the beacon node all at `url`, at once.
async fn every_call(url: &str) -> Vec<String> {
    let (llm, gateway, blobs) = futures::join!(llm_calls(url), gateway_calls(url), blob_calls(url, url));
    [llm, gateway, blobs].concat()
}

#[tokio::test]
async fn unreachable_servers_are_named_without_their_keys() {
    let logs = captured_logs();
    for url in hostile::secret_urls("127.0.0.1:1") {
        let texts = every_call(&url).await;
        assert!(texts.iter().any(|t| t.contains("127.0.0.1:1")), "the server is named: {texts:#?}");
        assert_no_secret(&texts, logs);
    }
}

#[tokio::test]
async fn servers_failing_in_every_way_that_quotes_their_url_are_reported_without_their_keys() {
    let logs = captured_logs();
    let server = HostileNode::start().await;
    for answer in Answer::ALL {
        server.answer(answer);
        for url in hostile::secret_urls(&server.host) {
            let texts = every_call(&url).await;
            assert_no_secret(&texts, logs);
        }
    }
    assert!(server.served() > 0, "the hostile server was asked");
}
