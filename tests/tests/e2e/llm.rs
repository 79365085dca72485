//! The worker's OpenAI-compatible backend against the real llama-server with Gemma 3 270M.
//! Asserts protocol, token counts and determinism, never what the text means. One server at a
//! time: two cores, and concurrent requests change the numerics.

use std::time::Duration;

use lcw_tests::llm::{LlmServer, MODEL};
use lcw_worker::llm::{Llm, LlmConfig, LlmError, Message};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROMPT: &str = "Name three colours.";

#[tokio::test]
async fn llama_server_lists_its_alias_answers_health_and_warms() {
    let _serial = SERIAL.lock().await;
    let server = LlmServer::start();
    let llm = Llm::new(server.config()).unwrap();

    llm.health().await.unwrap();
    assert_eq!(llm.models().await.unwrap(), [MODEL]);
    llm.check_models(std::slice::from_ref(&server.model)).await.unwrap();
    // the server would answer to any model name; the check does not
    match llm.check_models(&["nope".to_owned()]).await {
        Err(LlmError::MissingModels { missing, available }) => {
            assert_eq!(missing, ["nope"]);
            assert_eq!(available, [MODEL]);
        }
        other => panic!("expected MissingModels, got {other:?}"),
    }
    llm.warm(&server.model).await.unwrap();

    let err = llm.with_timeout(Duration::from_millis(1)).generate(&server.model, PROMPT).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn greedy_generation_is_reproducible_and_bounded() {
    let _serial = SERIAL.lock().await;
    let server = LlmServer::start();
    let llm = Llm::new(LlmConfig { num_predict: 16, ..server.config() }).unwrap();

    let first = llm.generate(&server.model, PROMPT).await.unwrap();
    // another request in between must not change the next result (no prompt cache, one slot)
    let other = llm.generate(&server.model, "Count from one to ten.").await.unwrap();
    let second = llm.generate(&server.model, PROMPT).await.unwrap();
    assert_eq!(first.text, second.text, "temperature 0 and seed 42 reproduce the output");
    assert_eq!(first.completion_tokens, second.completion_tokens);

    for g in [&first, &other, &second] {
        let tokens = g.completion_tokens.expect("usage reports completion tokens");
        assert!((1..=16).contains(&tokens), "{tokens} completion tokens with num_predict 16");
        assert!(g.prompt_tokens.is_some_and(|n| n > 0), "{:?}", g.prompt_tokens);
        assert!(matches!(g.finish_reason.as_deref(), Some("stop" | "length")), "{:?}", g.finish_reason);
        assert!(g.first_token.is_some_and(|t| t <= g.total), "{:?} {:?}", g.first_token, g.total);
        assert!(!g.text.is_empty());
        assert_eq!(g.load, None);
    }

    // generate is one user message
    let chat = llm.chat(&server.model, &[Message { role: "user".into(), content: PROMPT.into() }]).await.unwrap();
    assert_eq!(chat.text, first.text);
}

#[tokio::test]
async fn a_stopped_server_is_unreachable() {
    let _serial = SERIAL.lock().await;
    let mut server = LlmServer::start();
    let llm = Llm::new(LlmConfig { num_predict: 4, ..server.config() }).unwrap();
    llm.generate(&server.model, PROMPT).await.unwrap();

    server.stop();
    let err = llm.generate(&server.model, PROMPT).await.unwrap_err();
    match &err {
        LlmError::Unreachable { url, .. } => assert_eq!(url, &server.url),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(matches!(llm.health().await, Err(LlmError::Unreachable { .. })));
}
