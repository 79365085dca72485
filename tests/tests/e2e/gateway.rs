//! The worker-gateway link against a test gateway that implements the protocol exactly and
//! checks every message: sign-in, token renewal, heartbeats, drain, the response stream and its
//! HTTP fallback, outages. No chain needed.

use std::time::Duration;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use lcw_tests::gateway::{RecordedHeartbeat, TestGateway, Via, recover};
use lcw_tests::{init_tracing, wait_until};
use lcw_worker::gateway::{self, Delivery, FrameKind, Gateway, GatewayCall, GatewayConfig, GatewayError, Heartbeat};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

async fn setup() -> (TestGateway, Gateway) {
    init_tracing();
    let signer = PrivateKeySigner::random();
    let test_gateway = TestGateway::start(signer.address()).await;
    let client = Gateway::new(config(&test_gateway.url()), signer).expect("client");
    (test_gateway, client)
}

fn config(url: &str) -> GatewayConfig {
    GatewayConfig {
        timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(200),
        ..GatewayConfig::new(url)
    }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        active_jobs: 1,
        max_jobs: 4,
        models: vec![B256::repeat_byte(0xAB), B256::repeat_byte(0x01)],
        capabilities: vec!["search".into()],
        llm_ready: true,
        uptime_secs: 42,
    }
}

/// `gateway::run` in the background.
struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(client: &Gateway) -> Running {
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(gateway::run(client.clone(), heartbeat, shutdown));
    Running { stop, task }
}

impl Running {
    async fn finish(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task).await.expect("run stops on shutdown").expect("run did not panic");
    }
}

async fn connected(client: &Gateway) -> bool {
    wait_until(WAIT, || async { client.status().stream_connected }).await
}

#[tokio::test]
async fn sign_in_then_heartbeats_are_accepted_with_the_exact_fields() {
    let (tg, client) = setup().await;
    client.sign_in().await.expect("sign-in");
    assert_eq!(tg.sign_ins(), 1);
    assert!(client.status().signed_in);

    client.heartbeat(&heartbeat()).await.expect("heartbeat");
    let idle = Heartbeat { active_jobs: 0, capabilities: vec![], llm_ready: false, ..heartbeat() };
    client.heartbeat(&idle).await.expect("second heartbeat");

    assert_eq!(tg.violations(), Vec::<String>::new());
    assert_eq!(
        tg.heartbeats(),
        [
            RecordedHeartbeat {
                active_jobs: 1,
                max_jobs: 4,
                models: vec![format!("0x{}", "ab".repeat(32)), format!("0x{}", "01".repeat(32))],
                capabilities: vec!["search".into()],
                protocol_version: 1,
                ollama_status: "ready".into(),
                uptime_seconds: 42,
            },
            RecordedHeartbeat {
                active_jobs: 0,
                max_jobs: 4,
                models: vec![format!("0x{}", "ab".repeat(32)), format!("0x{}", "01".repeat(32))],
                capabilities: vec![],
                protocol_version: 1,
                ollama_status: "unreachable".into(),
                uptime_seconds: 42,
            },
        ]
    );
    assert_eq!(tg.sign_ins(), 1, "a token with an hour left is reused");
    let status = client.status();
    assert_eq!((status.heartbeats_sent, status.heartbeats_failed), (2, 0));
    assert!(status.last_heartbeat_ok.is_some() && status.last_error.is_none(), "{status:?}");
}

#[tokio::test]
async fn the_first_call_signs_in_by_itself() {
    let (tg, client) = setup().await;
    client.heartbeat(&heartbeat()).await.expect("heartbeat without an explicit sign-in");
    assert_eq!((tg.sign_ins(), tg.heartbeats().len()), (1, 1));
    assert_eq!(tg.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_token_with_less_than_five_minutes_left_is_renewed_before_use() {
    let (tg, client) = setup().await;
    tg.set_token_ttl(Duration::from_secs(1));
    client.heartbeat(&heartbeat()).await.expect("first heartbeat");
    // Let the first token expire for real: using it now would be a violation.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    client.heartbeat(&heartbeat()).await.expect("heartbeat after the token expired");
    client.drain().await.expect("drain with a short-lived token");

    assert_eq!(tg.violations(), Vec::<String>::new(), "the client never sent an expired token");
    assert_eq!(tg.heartbeats().len(), 2);
    assert_eq!(tg.sign_ins(), 3, "every call found its token within five minutes of expiry and renewed it");
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_the_request_retried() {
    let (tg, client) = setup().await;
    client.heartbeat(&heartbeat()).await.expect("first heartbeat");
    tg.revoke_tokens();
    client.heartbeat(&heartbeat()).await.expect("heartbeat after the gateway forgot the token");
    tg.revoke_tokens();
    client.drain().await.expect("drain after the gateway forgot the token");

    assert_eq!(tg.heartbeats().len(), 2);
    assert!(tg.drained());
    assert_eq!(tg.sign_ins(), 3, "one new sign-in after each 401");
    assert_eq!(tg.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn drain_then_undrain_change_the_flag_and_repeat_harmlessly() {
    let (tg, client) = setup().await;
    assert!(!tg.drained());
    client.drain().await.expect("drain");
    assert!(tg.drained());
    client.drain().await.expect("drain again");
    assert!(tg.drained());
    client.undrain().await.expect("undrain");
    assert!(!tg.drained());
    client.undrain().await.expect("undrain again");
    assert!(!tg.drained());
    assert_eq!(tg.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_key_the_gateway_does_not_expect_is_refused_at_sign_in() {
    init_tracing();
    let tg = TestGateway::start(PrivateKeySigner::random().address()).await;
    let client = Gateway::new(config(&tg.url()), PrivateKeySigner::random()).expect("client");
    let err = client.sign_in().await.expect_err("another worker's key is refused");
    assert!(matches!(err, GatewayError::Status { call: GatewayCall::Verify, status: 401, .. }), "{err:?}");
    assert!(err.to_string().contains("check that the signing key is the registered worker's key"), "{err}");
    let violations = tg.violations();
    assert!(violations.len() == 1 && violations[0].contains("not by the expected worker"), "{violations:?}");
    assert!(!client.status().signed_in);
}

#[tokio::test]
async fn streamed_chunks_then_the_signed_complete_frame_arrive_in_order() {
    let (tg, client) = setup().await;
    let running = start(&client);
    assert!(connected(&client).await, "the stream connects");

    client.publish_chunk(7, 3, 1, FrameKind::Reasoning, b"thinking".to_vec());
    client.publish_chunk(7, 3, 2, FrameKind::Text, b"hello".to_vec());
    client.publish_chunk(7, 3, 3, FrameKind::Stats, b"{\"tokens\":2}".to_vec());
    let full = b"the full response ciphertext".to_vec();
    assert_eq!(client.publish_complete(7, 3, 4, &full).await, Delivery::Queued);
    // A job that streamed nothing, and one the worker gave up on.
    assert_eq!(client.publish_complete(8, 3, 1, b"short answer").await, Delivery::Queued);
    client.publish_error(9, 3);

    assert!(wait_until(WAIT, || async { tg.frames().len() == 6 }).await, "frames: {:?}", tg.frames());
    assert_eq!(tg.violations(), Vec::<String>::new());
    let frames = tg.frames();
    let summary: Vec<(u64, &str, Option<&str>, u64, u64)> =
        frames.iter().map(|f| (f.job_id, f.frame_type.as_str(), f.kind.as_deref(), f.seq, f.total_chunks)).collect();
    assert_eq!(
        summary,
        [
            (7, "chunk", Some("reasoning"), 1, 0),
            (7, "chunk", Some("text"), 2, 0),
            (7, "chunk", Some("stats"), 3, 0),
            (7, "complete", None, 4, 4),
            (8, "complete", None, 1, 1),
            (9, "error", None, 0, 0),
        ]
    );
    assert!(frames.iter().all(|f| f.via == Via::Socket && f.session_id == 3));
    assert_eq!(frames[1].payload, b"hello");
    assert_eq!(frames[3].payload, full);
    assert_eq!(frames[3].correlation_id, "3-7");
    assert_eq!(recover(&frames[3].signature, &full), Ok(client.address()), "the response is signed by the worker");
    assert!(frames[0].signature.is_empty() && frames[5].payload.is_empty());
    let status = client.status();
    assert_eq!((status.frames_sent, status.frames_dropped, status.responses_posted), (6, 0, 0));
    running.finish().await;
}

#[tokio::test]
async fn with_the_socket_closed_the_complete_frame_goes_by_http_and_the_stream_reconnects() {
    let (tg, client) = setup().await;
    let running = start(&client);
    assert!(connected(&client).await);
    client.publish_chunk(5, 2, 1, FrameKind::Text, b"one".to_vec());
    client.publish_chunk(5, 2, 2, FrameKind::Text, b"two".to_vec());
    assert!(wait_until(WAIT, || async { tg.frames().len() == 2 }).await);

    tg.refuse_streams(true);
    tg.close_streams();
    assert!(wait_until(WAIT, || async { !client.status().stream_connected }).await, "the client sees the drop");
    let full = b"onetwo, sealed".to_vec();
    assert_eq!(client.publish_complete(5, 2, 3, &full).await, Delivery::Posted);

    let frames = tg.frames();
    let last = frames.last().expect("the complete frame");
    assert_eq!((last.via, last.frame_type.as_str(), last.seq, last.total_chunks), (Via::Http, "complete", 3, 3));
    assert_eq!(last.payload, full);
    assert_eq!(recover(&last.signature, &full), Ok(client.address()));
    assert_eq!(client.status().responses_posted, 1);

    tg.refuse_streams(false);
    assert!(wait_until(WAIT, || async { tg.open_streams() == 1 && client.status().stream_connected }).await);
    client.publish_chunk(6, 2, 1, FrameKind::Text, b"again".to_vec());
    assert!(wait_until(WAIT, || async { tg.frames().len() == 4 }).await, "chunks flow on the new socket");
    assert_eq!(tg.frames()[3].via, Via::Socket);
    assert!(tg.stream_connections() >= 2);
    assert_eq!(tg.violations(), Vec::<String>::new());
    running.finish().await;
}

#[tokio::test]
async fn a_stream_refused_at_the_upgrade_signs_in_again_and_reconnects() {
    let (tg, client) = setup().await;
    let running = start(&client);
    assert!(connected(&client).await);
    // A restarted gateway: the old token is unknown, the socket gone.
    tg.revoke_tokens();
    tg.close_streams();
    assert!(
        wait_until(WAIT, || async { tg.stream_connections() >= 2 && client.status().stream_connected }).await,
        "reconnected with a new token"
    );
    assert!(tg.sign_ins() >= 2);
    client.publish_chunk(4, 1, 1, FrameKind::Text, b"after the restart".to_vec());
    assert!(wait_until(WAIT, || async { tg.frames().len() == 1 }).await);
    assert_eq!(tg.violations(), Vec::<String>::new());
    running.finish().await;
}

#[tokio::test]
async fn a_full_queue_drops_frames_without_blocking_and_sends_the_rest() {
    let (tg, client) = setup().await;
    // Nothing pumps the queue yet: 256 frames wait, the rest are dropped.
    for seq in 1..=300 {
        client.publish_chunk(11, 1, seq, FrameKind::Text, vec![seq as u8; 8]);
    }
    assert_eq!(client.status().frames_dropped, 44);
    let running = start(&client);
    assert!(wait_until(WAIT, || async { tg.frames().len() == 256 }).await, "got {}", tg.frames().len());
    assert_eq!(tg.frames().last().map(|f| f.seq), Some(256));
    assert_eq!(tg.violations(), Vec::<String>::new());
    running.finish().await;
}

#[tokio::test]
async fn a_down_gateway_never_stalls_the_worker_and_heartbeats_resume_when_it_returns() {
    let (tg, client) = setup().await;
    let running = start(&client);
    assert!(wait_until(WAIT, || async { !tg.heartbeats().is_empty() }).await, "a heartbeat at start");
    assert!(connected(&client).await);

    tg.set_down(true);
    assert!(wait_until(WAIT, || async { client.status().heartbeats_failed >= 2 }).await);
    assert!(wait_until(WAIT, || async { !client.status().stream_connected }).await);
    // Direct calls fail with the status, well within twice the timeout.
    let bound = 2 * Duration::from_secs(2);
    let err = tokio::time::timeout(bound, client.heartbeat(&heartbeat())).await.expect("prompt").expect_err("down");
    assert!(matches!(err, GatewayError::Status { status: 503, .. }), "{err:?}");
    let delivery = tokio::time::timeout(bound, client.publish_complete(1, 1, 1, b"x")).await.expect("prompt");
    assert_eq!(delivery, Delivery::Failed);
    client.publish_chunk(2, 1, 1, FrameKind::Text, b"queued meanwhile".to_vec());
    assert!(client.status().last_error.is_some_and(|e| e.contains("HTTP 503")));
    assert!(!running.task.is_finished(), "run keeps going through the outage");

    let accepted = tg.heartbeats().len();
    tg.set_down(false);
    assert!(wait_until(WAIT, || async { tg.heartbeats().len() > accepted + 1 }).await, "heartbeats resume");
    assert!(connected(&client).await, "the stream reconnects");
    assert!(wait_until(WAIT, || async { tg.frames().iter().any(|f| f.job_id == 2) }).await, "queued chunk sent");
    assert_eq!(tg.violations(), Vec::<String>::new());
    running.finish().await;
}

#[tokio::test]
async fn a_hung_gateway_costs_each_call_at_most_the_timeout() {
    init_tracing();
    let signer = PrivateKeySigner::random();
    let tg = TestGateway::start(signer.address()).await;
    let quick = GatewayConfig { timeout: Duration::from_secs(1), ..config(&tg.url()) };
    let client = Gateway::new(quick, signer).expect("client");
    tg.set_stall(Duration::from_secs(30));

    let bound = Duration::from_secs(3);
    let err = tokio::time::timeout(bound, client.heartbeat(&heartbeat())).await.expect("bounded").expect_err("hung");
    assert!(matches!(err, GatewayError::Timeout { call: GatewayCall::Heartbeat, .. }), "{err:?}");
    assert!(err.to_string().contains("did not finish the heartbeat (/api/heartbeat) within 1s"), "{err}");
    let err = tokio::time::timeout(bound, client.drain()).await.expect("bounded").expect_err("hung");
    assert!(matches!(err, GatewayError::Timeout { .. }), "{err:?}");
    let delivery = tokio::time::timeout(bound, client.publish_complete(1, 1, 1, b"x")).await.expect("bounded");
    assert_eq!(delivery, Delivery::Failed);
}

#[tokio::test]
async fn an_unreachable_gateway_fails_at_once_without_showing_the_key_in_its_url() {
    init_tracing();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://apikey:s3cret-key@127.0.0.1:{port}/");
    let client = Gateway::new(config(&url), PrivateKeySigner::random()).expect("client");
    let err = tokio::time::timeout(Duration::from_secs(4), client.heartbeat(&heartbeat()))
        .await
        .expect("prompt")
        .expect_err("nothing listens");
    let text = err.to_string();
    assert!(matches!(err, GatewayError::Request { call: GatewayCall::Challenge, .. }), "{err:?}");
    assert!(text.contains(&format!("http://***@127.0.0.1:{port}")), "{text}");
    for shown in [text, format!("{err:?}"), format!("{client:?}"), client.status().last_error.unwrap_or_default()] {
        assert!(!shown.contains("s3cret-key"), "{shown}");
    }
}

#[tokio::test]
async fn the_token_never_appears_in_debug_output_or_errors() {
    let (tg, client) = setup().await;
    client.sign_in().await.expect("sign-in");
    tg.fail_heartbeats(Some(400));
    let err = client.heartbeat(&heartbeat()).await.expect_err("the gateway refuses and quotes the token back");
    assert!(matches!(err, GatewayError::Status { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("heartbeat refused for token ***"), "{err}");

    let tokens = tg.issued_tokens();
    assert_eq!(tokens.len(), 1);
    let shown = [err.to_string(), format!("{err:?}"), format!("{client:?}"), format!("{:?}", client.status())];
    for text in shown {
        assert!(!text.contains(&tokens[0]), "the token leaked: {text}");
    }
}

/// The checks the other tests rely on: malformed messages sent by hand are refused and
/// recorded as violations naming the message and the problem.
#[tokio::test]
async fn the_test_gateway_flags_malformed_messages() {
    use serde_json::{Value, json};

    let (tg, client) = setup().await;
    tg.set_token_ttl(Duration::from_secs(1));
    client.sign_in().await.expect("sign-in");
    let expired = tg.issued_tokens()[0].clone();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    tg.set_token_ttl(Duration::from_secs(3600));
    client.sign_in().await.expect("sign-in");
    let token = tg.issued_tokens()[1].clone();

    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = http.post(format!("{}{path}", tg.url())).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("request").status().as_u16() }
    };
    let good = json!({ "activeJobs": 0, "maxJobs": 1, "models": [], "capabilities": [], "protocolVersion": 1,
                       "ollamaStatus": "ready", "uptimeSeconds": 1 });
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    assert_eq!(post("/api/heartbeat", Some(&token), good.clone()).await, 204);
    assert_eq!(post("/api/heartbeat", None, good.clone()).await, 401);
    assert_eq!(post("/api/heartbeat", Some("0xnot-a-token"), good.clone()).await, 401);
    assert_eq!(post("/api/heartbeat", Some(&expired), good.clone()).await, 401);
    assert_eq!(post("/api/heartbeat", Some(&token), with("extra", json!(1))).await, 400);
    assert_eq!(
        post("/api/heartbeat", Some(&token), with("models", json!([format!("0x{}", "AB".repeat(32))]))).await,
        400
    );
    assert_eq!(post("/api/heartbeat", Some(&token), with("capabilities", Value::Null)).await, 400);
    assert_eq!(post("/api/heartbeat", Some(&token), with("ollamaStatus", json!("busy"))).await, 400);
    assert_eq!(post("/api/heartbeat", Some(&token), with("activeJobs", json!("1"))).await, 400);
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("uptimeSeconds");
    assert_eq!(post("/api/heartbeat", Some(&token), missing).await, 400);
    let response = json!({ "sessionId": 3, "seq": 1, "totalChunks": 1, "payload": "YWJj", "signature": "0x00",
                           "correlationId": "3-8" });
    assert_eq!(post("/api/jobs/7/response", Some(&token), response).await, 400);
    assert_eq!(post("/api/worker/drain", Some(&token), json!({})).await, 400);
    assert_eq!(post("/api/auth/verify", None, json!({ "message": "made up", "signature": "0x00" })).await, 401);
    assert_eq!(post("/api/jobs/poll", Some(&token), Value::Null).await, 404);

    let violations = tg.violations().join("\n");
    for expected in [
        "POST /api/heartbeat: no bearer token",
        "POST /api/heartbeat: unknown bearer token",
        "POST /api/heartbeat: expired bearer token",
        "POST /api/heartbeat: unknown field `extra`",
        "is not 0x and 64 lowercase hex digits",
        "POST /api/heartbeat: field `capabilities` is null, not an array of strings",
        "ollamaStatus is `busy`, not ready or unreachable",
        "POST /api/heartbeat: field `activeJobs` is \"1\", not an integer",
        "POST /api/heartbeat: field `uptimeSeconds` is missing",
        "POST /api/jobs/7/response: correlationId `3-8` is not `<sessionId>-<jobId>`",
        "POST /api/jobs/7/response: signature has 2 hex digits, not 130",
        "POST /api/worker/drain: the body should be empty",
        "POST /api/auth/verify: message `made up` is not an unused challenge this gateway issued",
        "POST /api/jobs/poll: no such endpoint",
    ] {
        assert!(violations.contains(expected), "no violation `{expected}` in:\n{violations}");
    }
    assert_eq!(tg.heartbeats().len(), 1, "only the valid heartbeat is recorded");
}
