//! A worker gateway for tests that implements the worker protocol exactly and checks every
//! message it receives: sign-in by EIP-191 challenge (fresh nonces, each verified once, signed by
//! the expected worker), bearer tokens that expire, strictly parsed heartbeats, drain and
//! undrain, the response stream's WebSocket (bearer checked at the upgrade, every frame checked)
//! and the terminal frame's HTTP fallback. Anything wrong is recorded as a violation naming the
//! message and the problem, and answered with an error status; tests assert no violations on the
//! happy path. Controls simulate an outage, a stall, dropped sockets and revoked tokens.
//! Listens on 127.0.0.1 only; stops when dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use alloy::primitives::Address;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::RngCore;
use serde_json::json;
use tokio::sync::watch;

mod check;

use check::{Fields, Incoming, check_frame, rfc3339};
pub use check::{decode_base64, recover};

/// A heartbeat as the gateway received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedHeartbeat {
    /// `activeJobs`.
    pub active_jobs: u64,
    /// `maxJobs`.
    pub max_jobs: u64,
    /// `models`.
    pub models: Vec<String>,
    /// `capabilities`.
    pub capabilities: Vec<String>,
    /// `protocolVersion`.
    pub protocol_version: u64,
    /// `ollamaStatus`.
    pub ollama_status: String,
    /// `uptimeSeconds`.
    pub uptime_seconds: u64,
}

/// How a frame reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A text message on `/api/stream/responses`.
    Socket,
    /// `POST /api/jobs/{jobId}/response`.
    Http,
}

/// A response frame as the gateway received it (the HTTP fallback's as a `complete` frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    /// Socket or HTTP.
    pub via: Via,
    /// `type`.
    pub frame_type: String,
    /// `kind`, when present.
    pub kind: Option<String>,
    /// `jobId` (the path's for the fallback).
    pub job_id: u64,
    /// `sessionId`.
    pub session_id: u64,
    /// `seq`.
    pub seq: u64,
    /// `totalChunks`.
    pub total_chunks: u64,
    /// `payload`, decoded (empty when it does not decode).
    pub payload: Vec<u8>,
    /// `signature`.
    pub signature: String,
    /// `correlationId`.
    pub correlation_id: String,
}

/// What the gateway has seen of one job's frames.
#[derive(Debug, Default)]
struct JobSeen {
    session_id: u64,
    last_seq: u64,
    chunks: u64,
    ended: bool,
}

#[derive(Debug)]
struct Record {
    /// Challenges issued and not yet verified.
    challenges: HashSet<String>,
    /// Live tokens and when they expire.
    tokens: HashMap<String, Instant>,
    /// Tokens the gateway itself revoked (refused without blaming the client).
    revoked: HashSet<String>,
    issued: Vec<String>,
    ttl: Duration,
    sign_ins: usize,
    heartbeats: Vec<RecordedHeartbeat>,
    frames: Vec<RecordedFrame>,
    jobs: HashMap<u64, JobSeen>,
    drained: bool,
    violations: Vec<String>,
    down: bool,
    refuse_streams: bool,
    stall: Duration,
    fail_heartbeats: Option<u16>,
    stream_connections: usize,
    open_streams: usize,
}

impl Record {
    fn new() -> Record {
        Record {
            challenges: HashSet::new(),
            tokens: HashMap::new(),
            revoked: HashSet::new(),
            issued: Vec::new(),
            ttl: Duration::from_secs(3600),
            sign_ins: 0,
            heartbeats: Vec::new(),
            frames: Vec::new(),
            jobs: HashMap::new(),
            drained: false,
            violations: Vec::new(),
            down: false,
            refuse_streams: false,
            stall: Duration::ZERO,
            fail_heartbeats: None,
            stream_connections: 0,
            open_streams: 0,
        }
    }
}

struct Shared {
    expected: Address,
    record: Mutex<Record>,
    /// Bumped to drop every open socket.
    closing: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running test gateway.
pub struct TestGateway {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TestGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGateway").field("url", &self.url).field("expected", &self.shared.expected).finish()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.closing.send_modify(|n| *n += 1);
    }
}

impl TestGateway {
    /// Starts a gateway that signs in only `expected_worker`; tokens live an hour.
    pub async fn start(expected_worker: Address) -> TestGateway {
        let shared = Arc::new(Shared {
            expected: expected_worker,
            record: Mutex::new(Record::new()),
            closing: watch::channel(0).0,
        });
        let app = axum::Router::new()
            .route("/api/auth/challenge", get(challenge))
            .route("/api/auth/verify", post(verify))
            .route("/api/heartbeat", post(heartbeat))
            .route("/api/worker/drain", post(drain))
            .route("/api/worker/undrain", post(undrain))
            .route("/api/jobs/{job_id}/response", post(response))
            .route("/api/stream/responses", get(stream))
            .fallback(unknown)
            .layer(axum::middleware::from_fn_with_state(shared.clone(), outage))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test gateway");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestGateway { url: format!("http://{addr}"), shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Heartbeats accepted, in order.
    pub fn heartbeats(&self) -> Vec<RecordedHeartbeat> {
        self.shared.lock().heartbeats.clone()
    }

    /// Frames received (socket and fallback), in order.
    pub fn frames(&self) -> Vec<RecordedFrame> {
        self.shared.lock().frames.clone()
    }

    /// Whether the worker is drained (the last of drain/undrain was drain).
    pub fn drained(&self) -> bool {
        self.shared.lock().drained
    }

    /// Every protocol violation seen, each naming the message and what was wrong.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
    }

    /// Successful sign-ins (tokens issued).
    pub fn sign_ins(&self) -> usize {
        self.shared.lock().sign_ins
    }

    /// Every token issued so far (to check none leaks into logs or errors).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.clone()
    }

    /// WebSocket upgrades accepted so far.
    pub fn stream_connections(&self) -> usize {
        self.shared.lock().stream_connections
    }

    /// Sockets open now.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().open_streams
    }

    /// Tokens issued from now on expire after `ttl` (and say so in `expiresAt`).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.shared.lock().ttl = ttl;
    }

    /// Forgets every live token, as a restarted gateway would: they are refused with 401 (not a
    /// violation: the client did nothing wrong).
    pub fn revoke_tokens(&self) {
        let mut r = self.shared.lock();
        let live: Vec<String> = r.tokens.drain().map(|(t, _)| t).collect();
        r.revoked.extend(live);
    }

    /// An outage: 503 to every request, WebSocket upgrades refused, open sockets dropped.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
        if down {
            self.close_streams();
        }
    }

    /// Refuses WebSocket upgrades (503) while HTTP keeps working.
    pub fn refuse_streams(&self, refuse: bool) {
        self.shared.lock().refuse_streams = refuse;
    }

    /// Drops every open socket without a closing handshake.
    pub fn close_streams(&self) {
        self.shared.closing.send_modify(|n| *n += 1);
    }

    /// Holds every request for `stall` before answering it (a hung gateway).
    pub fn set_stall(&self, stall: Duration) {
        self.shared.lock().stall = stall;
    }

    /// Answers valid heartbeats with `status` and a body that quotes the bearer token back (as a
    /// careless server might), instead of 204; None restores 204.
    pub fn fail_heartbeats(&self, status: Option<u16>) {
        self.shared.lock().fail_heartbeats = status;
    }
}

/// The outage and stall controls, in front of every route.
async fn outage(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (down, stall) = {
        let r = shared.lock();
        (r.down, r.stall)
    };
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    if down {
        return (StatusCode::SERVICE_UNAVAILABLE, "test gateway is down").into_response();
    }
    next.run(request).await
}

fn refuse(r: &mut Record, status: StatusCode, what: &str, problems: Vec<String>) -> Response {
    let text = problems.join("; ");
    r.violations.extend(problems.into_iter().map(|p| format!("{what}: {p}")));
    (status, text).into_response()
}

/// Checks the bearer token; on failure the response to send.
fn authorize(r: &mut Record, what: &str, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = value.and_then(|v| v.strip_prefix("Bearer ")) else {
        let problem = if value.is_some() { "Authorization is not `Bearer <token>`" } else { "no bearer token" };
        return Err(Box::new(refuse(r, StatusCode::UNAUTHORIZED, what, vec![problem.into()])));
    };
    if r.revoked.contains(token) {
        return Err(Box::new((StatusCode::UNAUTHORIZED, "token revoked").into_response()));
    }
    match r.tokens.get(token) {
        None => Err(Box::new(refuse(r, StatusCode::UNAUTHORIZED, what, vec!["unknown bearer token".into()]))),
        Some(expiry) if Instant::now() >= *expiry => Err(Box::new(refuse(
            r,
            StatusCode::UNAUTHORIZED,
            what,
            vec!["expired bearer token (the client should have renewed it)".into()],
        ))),
        Some(_) => Ok(token.to_owned()),
    }
}

fn json_content_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ok = ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    (!ok).then(|| format!("Content-Type is `{ct}`, not application/json"))
}

async fn challenge(State(shared): State<Arc<Shared>>) -> Response {
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let message = format!("lcw test gateway sign-in nonce {}", alloy::hex::encode(nonce));
    shared.lock().challenges.insert(message.clone());
    axum::Json(json!({ "message": message })).into_response()
}

async fn verify(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    const WHAT: &str = "POST /api/auth/verify";
    let mut r = shared.lock();
    let mut fields = Fields::parse(&body, &["message", "signature"], &[]);
    let (message, signature) = (fields.string("message"), fields.string("signature"));
    fields.problems.extend(json_content_type(&headers));
    if !fields.problems.is_empty() {
        return refuse(&mut r, StatusCode::BAD_REQUEST, WHAT, fields.problems);
    }
    // Each challenge may be verified once, whatever the outcome.
    if !r.challenges.remove(&message) {
        return refuse(
            &mut r,
            StatusCode::UNAUTHORIZED,
            WHAT,
            vec![format!("message `{message}` is not an unused challenge this gateway issued")],
        );
    }
    match recover(&signature, message.as_bytes()) {
        Ok(signer) if signer == shared.expected => {}
        Ok(signer) => {
            let problem = format!("challenge signed by {signer}, not by the expected worker {}", shared.expected);
            return refuse(&mut r, StatusCode::UNAUTHORIZED, WHAT, vec![problem]);
        }
        Err(problem) => return refuse(&mut r, StatusCode::UNAUTHORIZED, WHAT, vec![problem]),
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = alloy::hex::encode(raw);
    let ttl = r.ttl;
    r.tokens.insert(token.clone(), Instant::now() + ttl);
    r.issued.push(token.clone());
    r.sign_ins += 1;
    let expires_at = rfc3339(SystemTime::now() + ttl);
    axum::Json(json!({ "token": token, "expiresAt": expires_at })).into_response()
}

async fn heartbeat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    const WHAT: &str = "POST /api/heartbeat";
    let mut r = shared.lock();
    let token = match authorize(&mut r, WHAT, &headers) {
        Ok(token) => token,
        Err(response) => return *response,
    };
    let required =
        ["activeJobs", "maxJobs", "models", "capabilities", "protocolVersion", "ollamaStatus", "uptimeSeconds"];
    let mut f = Fields::parse(&body, &required, &[]);
    let hb = RecordedHeartbeat {
        active_jobs: f.uint("activeJobs", i64::MAX as u64),
        max_jobs: f.uint("maxJobs", i64::MAX as u64),
        models: f.strings("models"),
        capabilities: f.strings("capabilities"),
        protocol_version: f.uint("protocolVersion", i64::MAX as u64),
        ollama_status: f.string("ollamaStatus"),
        uptime_seconds: f.uint("uptimeSeconds", i64::MAX as u64),
    };
    f.problems.extend(json_content_type(&headers));
    for model in &hb.models {
        let hex = model.strip_prefix("0x").unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            f.problems.push(format!("model `{model}` is not 0x and 64 lowercase hex digits"));
        }
    }
    if f.object.contains_key("protocolVersion") && hb.protocol_version != 1 {
        f.problems.push(format!("protocolVersion is {}, not 1", hb.protocol_version));
    }
    if f.object.contains_key("ollamaStatus") && !matches!(hb.ollama_status.as_str(), "ready" | "unreachable") {
        f.problems.push(format!("ollamaStatus is `{}`, not ready or unreachable", hb.ollama_status));
    }
    if !f.problems.is_empty() {
        return refuse(&mut r, StatusCode::BAD_REQUEST, WHAT, f.problems);
    }
    if let Some(status) = r.fail_heartbeats {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, format!("heartbeat refused for token {token} (Bearer {token})")).into_response();
    }
    r.heartbeats.push(hb);
    StatusCode::NO_CONTENT.into_response()
}

fn set_drained(shared: &Shared, what: &str, headers: &HeaderMap, body: &[u8], drained: bool) -> Response {
    let mut r = shared.lock();
    if let Err(response) = authorize(&mut r, what, headers) {
        return *response;
    }
    let mut problems: Vec<String> = json_content_type(headers).into_iter().collect();
    if !body.is_empty() {
        problems.push(format!("the body should be empty, got {} bytes", body.len()));
    }
    if !problems.is_empty() {
        return refuse(&mut r, StatusCode::BAD_REQUEST, what, problems);
    }
    r.drained = drained;
    StatusCode::NO_CONTENT.into_response()
}

async fn drain(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    set_drained(&shared, "POST /api/worker/drain", &headers, &body, true)
}

async fn undrain(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    set_drained(&shared, "POST /api/worker/undrain", &headers, &body, false)
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let what = format!("POST /api/jobs/{job_id}/response");
    let mut r = shared.lock();
    if let Err(response) = authorize(&mut r, &what, &headers) {
        return *response;
    }
    let required = ["sessionId", "seq", "totalChunks", "payload", "signature", "correlationId"];
    let mut f = Fields::parse(&body, &required, &[]);
    f.problems.extend(json_content_type(&headers));
    let job = job_id.parse::<u64>().unwrap_or_else(|_| {
        f.problems.push(format!("job id `{job_id}` in the path is not an integer"));
        0
    });
    let frame = Incoming {
        frame_type: "complete".into(),
        kind: None,
        job_id: job,
        session_id: f.uint("sessionId", u64::MAX),
        seq: f.uint("seq", u32::MAX.into()),
        total_chunks: f.uint("totalChunks", u32::MAX.into()),
        payload: f.string("payload"),
        signature: f.string("signature"),
        correlation_id: f.string("correlationId"),
        ts: None,
    };
    if !f.problems.is_empty() {
        return refuse(&mut r, StatusCode::BAD_REQUEST, &what, f.problems);
    }
    let problems = check_frame(&mut r, shared.expected, Via::Http, frame);
    if !problems.is_empty() {
        return refuse(&mut r, StatusCode::BAD_REQUEST, &what, problems);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn stream(State(shared): State<Arc<Shared>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    {
        let mut r = shared.lock();
        if r.refuse_streams {
            return (StatusCode::SERVICE_UNAVAILABLE, "streams refused for the test").into_response();
        }
        if let Err(response) = authorize(&mut r, "GET /api/stream/responses (upgrade)", &headers) {
            return *response;
        }
        r.stream_connections += 1;
    }
    let closing = shared.closing.subscribe();
    upgrade.on_upgrade(move |socket| serve_stream(shared, socket, closing))
}

async fn serve_stream(shared: Arc<Shared>, mut socket: WebSocket, mut closing: watch::Receiver<u64>) {
    shared.lock().open_streams += 1;
    loop {
        tokio::select! {
            _ = closing.changed() => break,
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => on_frame(&shared, text.as_str()),
                Some(Ok(Message::Binary(_))) => {
                    shared.lock().violations.push("stream frame: a binary message; frames are JSON text".into());
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.lock().open_streams -= 1;
}

fn on_frame(shared: &Shared, text: &str) {
    const WHAT: &str = "stream frame";
    let required = ["type", "jobId", "sessionId", "seq", "totalChunks", "payload", "signature", "correlationId", "ts"];
    let mut f = Fields::parse(text.as_bytes(), &required, &["kind"]);
    let kind = f.object.contains_key("kind").then(|| f.string("kind"));
    let frame = Incoming {
        frame_type: f.string("type"),
        kind,
        job_id: f.uint("jobId", u64::MAX),
        session_id: f.uint("sessionId", u64::MAX),
        seq: f.uint("seq", u32::MAX.into()),
        total_chunks: f.uint("totalChunks", u32::MAX.into()),
        payload: f.string("payload"),
        signature: f.string("signature"),
        correlation_id: f.string("correlationId"),
        ts: Some(f.uint("ts", i64::MAX as u64)),
    };
    let mut r = shared.lock();
    if !f.problems.is_empty() {
        r.violations.extend(f.problems.into_iter().map(|p| format!("{WHAT} {text}: {p}")));
        return;
    }
    let (job, seq) = (frame.job_id, frame.seq);
    let problems = check_frame(&mut r, shared.expected, Via::Socket, frame);
    r.violations.extend(problems.into_iter().map(|p| format!("{WHAT} (job {job}, seq {seq}): {p}")));
}

async fn unknown(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let what = format!("{} {}", request.method(), request.uri().path());
    refuse(&mut shared.lock(), StatusCode::NOT_FOUND, &what, vec!["no such endpoint in the worker protocol".into()])
}
