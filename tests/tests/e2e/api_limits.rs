//! The GraphQL API bounded in every dimension, each limit crossed over a real socket: body size
//! and type, query depth, complexity, aliases and directives (fragments expanded, cycles and
//! exponential spreads), bracket nesting, header and body timeouts, idle connections, the
//! connection cap, execution slots, WebSockets and operations per socket; the `Host` and `Origin`
//! rules (DNS rebinding, cross-site requests and WebSocket hijacking, CORS for allowed origins);
//! and, as a printed figure, how late a worker-like loop on the same runtime runs while the API is
//! flooded. No chain is needed: the API serves an empty store.

use std::time::{Duration, Instant};

use lcw_queries::{Access, Limits};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod flood;
mod wire;

use wire::{Api, Frame, Ws, empty_store, exchange, post, query_json};

const STATUS: &str = "{ indexerStatus { chainId block } }";

async fn api_with(limits: Limits, access: Access) -> (Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = empty_store(dir.path());
    (Api::start(&db, limits, access, Duration::from_secs(2)).await, dir)
}

async fn api() -> (Api, tempfile::TempDir) {
    api_with(Limits::default(), Access::default()).await
}

/// The first GraphQL error message of an answer.
fn error_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON expected: {body}"));
    v["errors"][0]["message"].as_str().unwrap_or_else(|| panic!("an error expected: {body}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_heads_over_it_431_and_only_json_is_accepted() {
    let (api, _dir) = api().await;
    let host = api.host();
    let ok = post(api.addr, &host, &[], &query_json(STATUS)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.header("content-type"), Some("application/graphql-response+json"));

    // 3 MB declared: refused from the head, without reading the body.
    let big = format!("{{\"query\": \"{{ indexerStatus {{ block }} }}\", \"x\": \"{}\"}}", "a".repeat(3 << 20));
    let started = Instant::now();
    let r = post(api.addr, &host, &[], &big).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(error_of(&r.body).contains("larger than 65536 bytes"), "{}", r.body);
    println!("3 MB body refused in {:?}", started.elapsed());

    // Chunked, without a length: cut when the limit is passed.
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..20 {
        let chunk = "x".repeat(8192);
        if s.write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes()).await.is_err() {
            break;
        }
    }
    assert_eq!(wire::read_answer(&mut s).await.status, 413);

    // Not JSON: multipart (which async-graphql would stream into temporary files), forms, text.
    for ty in
        ["multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "text/plain", "application/graphql"]
    {
        let body = "--x\r\ncontent-disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--\r\n";
        let r = exchange(
            api.addr,
            &format!("POST /graphql HTTP/1.1\r\nhost: {host}\r\ncontent-type: {ty}"),
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 415, "{ty}: {r:?}");
        assert!(error_of(&r.body).contains("application/json"), "{}", r.body);
    }
    // A head over the header limit (16 KiB).
    let r = exchange(api.addr, &format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nx-pad: {}", "p".repeat(20_000)), b"")
        .await;
    assert_eq!(r.status, 431, "{r:?}");
    let r = exchange(api.addr, &format!("POST /graphql HTTP/1.1\r\nhost: {host}"), b"{}").await;
    assert_eq!(r.status, 415, "no content type: {r:?}");
    let r = post(api.addr, &host, &[], "[{\"query\": \"{ __typename }\"}]").await;
    assert_eq!(r.status, 400, "batches are not accepted: {r:?}");
    let r = post(api.addr, &host, &[], "{\"query\": ").await;
    assert_eq!(r.status, 400, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_past_depth_complexity_alias_and_directive_limits_are_refused_quickly() {
    let (api, _dir) = api().await;
    let host = api.host();
    let refused = |q: String| {
        let host = host.clone();
        let addr = api.addr;
        async move {
            let started = Instant::now();
            let r = post(addr, &host, &[], &query_json(&q)).await;
            assert_eq!(r.status, 200, "{r:?}");
            (error_of(&r.body), started.elapsed())
        }
    };
    // Depth: 13 nested fields (the schema's own types, so only the limit refuses it).
    let deep = "{ workers { nodes { jobs { nodes { timeline { fields { name } } } } } } }";
    let ok = post(api.addr, &host, &[], &query_json(deep)).await;
    assert!(!ok.body.contains("errors"), "a reasonable nesting is served: {}", ok.body);
    let (e, _) = refused(format!("{{ {}x{} }}", "a { ".repeat(12), " }".repeat(12))).await;
    assert!(e.contains("nests fields 13 deep; at most 12"), "{e}");

    // Complexity: async-graphql's count, and the field count with fragments expanded.
    let (e, _) = refused("{ workers(first: 500) { nodes { jobs(first: 500) { nodes { id } } } } }".into()).await;
    assert!(e.to_lowercase().contains("complex"), "{e}");
    let mut bomb = String::from("{ ...F0 }");
    for i in 0..8 {
        bomb.push_str(&format!(" fragment F{i} on Query {{ {} }}", format!("...F{} ", i + 1).repeat(30)));
    }
    bomb.push_str(" fragment F8 on Query { __typename }");
    let (e, took) = refused(bomb).await;
    assert!(e.contains("fields with its fragments expanded"), "{e}");
    println!("a fragment bomb of 30^8 selections refused in {took:?}");
    let (e, _) = refused("{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }".into()).await;
    assert!(e.contains("fragment A spreads itself"), "{e}");

    // Aliases, counted once per spread of the fragment that holds them.
    let aliases: String = (0..10).map(|i| format!("a{i}: __typename ")).collect();
    let (e, _) = refused(format!("{{ ...F ...F ...F ...F }} fragment F on Query {{ {aliases} }}")).await;
    assert!(e.contains("40 aliases"), "{e}");

    // Directives: 4,000 of them fit in the body limit (CVE-2024-47614's overload).
    let (e, took) = refused(format!("{{ __typename {} }}", "@skip(if: false)".repeat(4_000))).await;
    assert!(e.contains("4000 directives"), "{e}");
    println!("4,000 directives refused in {took:?}");

    // Brackets nested past what the parser may recurse into.
    let (e, _) = refused(format!("{{ x(a: {}1{}) }}", "[".repeat(20_000), "]".repeat(20_000))).await;
    assert!(e.contains("nests brackets"), "{e}");
    let r = post(api.addr, &host, &[], &query_json(STATUS)).await;
    assert_eq!(r.status, 200, "the server is still up: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_bodies_are_cut_at_the_header_timeout() {
    let limits = Limits { header_timeout: Duration::from_millis(500), ..Limits::default() };
    let (api, _dir) = api_with(limits, Access::default()).await;
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(b"POST /graphql HTTP/1.1\r\nhost: x").await.unwrap();
    let started = Instant::now();
    let r = wire::read_answer(&mut s).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "a half-sent head is dropped at the timeout, took {took:?}");
    assert!(r.status == 408 || r.status == 0, "{r:?}");

    let mut s = TcpStream::connect(api.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{",
        api.host()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let r = wire::read_answer(&mut s).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert!(error_of(&r.body).contains("did not arrive within 500 ms"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_so_healthz_answers_through_a_flood_of_half_sent_ones() {
    let limits = Limits { connections: 64, idle_timeout: Duration::from_secs(2), ..Limits::default() };
    let (api, _dir) = api_with(limits, Access::default()).await;
    // 400 connections that send half a head and stall: six times the cap.
    let mut stalled = Vec::new();
    for _ in 0..400 {
        let mut s = TcpStream::connect(api.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: ").await.unwrap();
        stalled.push(s);
    }
    let started = Instant::now();
    let r = exchange(api.addr, &format!("GET /healthz HTTP/1.1\r\nhost: {}", api.host()), b"").await;
    let took = started.elapsed();
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    println!("/healthz answered in {took:?} with 400 half-sent connections held against a cap of 64");
    // The oldest stalled connections were closed to make room.
    let mut closed = 0;
    for s in stalled.iter_mut().take(100) {
        let mut b = [0u8; 1];
        if matches!(
            tokio::time::timeout(Duration::from_millis(100), tokio::io::AsyncReadExt::read(s, &mut b)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    assert!(closed >= 90, "the longest-idle connections were closed for newcomers: {closed} of the first 100");

    // A kept-alive connection that goes quiet is closed after the idle timeout.
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", api.host()).as_bytes()).await.unwrap();
    let mut first = [0u8; 512];
    let n = tokio::io::AsyncReadExt::read(&mut s, &mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut rest)).await;
    let quiet = started.elapsed();
    assert!(quiet < Duration::from_secs(6), "closed after the idle timeout, open for {quiet:?}");
    println!("an idle kept-alive connection was closed after {quiet:?} (idle timeout 2 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_execution_slots_wait_then_get_503() {
    let limits = Limits { requests: 1, ..Limits::default() };
    let dir = tempfile::tempdir().unwrap();
    let db = empty_store(dir.path());
    let api = Api::start(&db, limits, Access::default(), Duration::from_millis(150)).await;
    // The whole introspection query: the heaviest document of this schema within the limits.
    let q = query_json(INTROSPECTION);
    let host = api.host();
    let answers = futures::future::join_all((0..40).map(|_| post(api.addr, &host, &[], &q))).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    println!("40 concurrent introspections on 1 slot within 150 ms: {ok} served, {} refused", busy.len());
    assert!(ok >= 1 && !busy.is_empty(), "statuses: {:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(busy[0].header("retry-after"), Some("1"));
    assert!(error_of(&busy[0].body).contains("the API is busy"), "{}", busy[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_operations_per_socket_are_capped() {
    let limits = Limits { websockets: 2, subscriptions: 3, ..Limits::default() };
    let (api, _dir) = api_with(limits, Access::default()).await;
    let host = api.host();
    let mut a = Ws::connect(api.addr, &host, None).await.expect("first socket");
    let _b = Ws::connect(api.addr, &host, None).await.expect("second socket");
    let refused = Ws::connect(api.addr, &host, None).await.err().expect("a third socket is refused");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("2 WebSockets are open"), "{}", refused.body);

    a.send_json(json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(a.next_text(Duration::from_secs(5)).await.unwrap()["type"], "connection_ack");
    for id in ["1", "2", "3", "4"] {
        a.send_json(
            json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { head { block } }" } }),
        )
        .await;
    }
    let m = answer_to(&mut a, "4").await;
    assert!(m.to_string().contains("at most 3 operations may run at once on one WebSocket"), "{m}");
    // Completing one makes room; a query over the socket is answered.
    a.send_json(json!({ "id": "1", "type": "complete" })).await;
    a.send_json(json!({ "id": "5", "type": "subscribe", "payload": { "query": STATUS } })).await;
    let m = answer_to(&mut a, "5").await;
    assert_eq!(m["type"], "next", "{m}");
    assert_eq!(m["payload"]["data"]["indexerStatus"]["chainId"], 31337, "{m}");
    // A document over a socket passes the same checks.
    a.send_json(json!({ "id": "6", "type": "subscribe", "payload": { "query": format!("{{ __typename {} }}", "@skip(if: false)".repeat(60)) } })).await;
    let m = answer_to(&mut a, "6").await;
    assert!(m.to_string().contains("60 directives"), "{m}");
    // A message over the body limit closes the socket.
    a.send(&"x".repeat(70_000)).await;
    let mut closed = false;
    for _ in 0..10 {
        match a.next(Duration::from_secs(2)).await {
            None | Some(Frame::Close(..)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a 70 kB message ends the socket");
}

/// The next message for operation `id` (the `head` subscriptions push their first value at once).
async fn answer_to(ws: &mut Ws, id: &str) -> serde_json::Value {
    loop {
        let m = ws.next_text(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("an answer to operation {id}"));
        if m["id"] == id {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_answers_no_ping_is_closed_after_the_idle_timeout() {
    let limits = Limits { idle_timeout: Duration::from_secs(1), ..Limits::default() };
    let (api, _dir) = api_with(limits, Access::default()).await;
    let mut ws = Ws::connect(api.addr, &api.host(), None).await.expect("socket");
    let started = Instant::now();
    let (mut pings, mut close) = (0, None);
    while let Some(f) = ws.next(Duration::from_secs(5)).await {
        match f {
            Frame::Ping => pings += 1,
            Frame::Close(code, reason) => {
                close = Some((code, reason));
                break;
            }
            Frame::Text(_) => {}
        }
    }
    assert!(pings >= 1, "the server pings a quiet client");
    assert_eq!(close.as_ref().map(|c| c.0), Some(1001), "closed as idle: {close:?}");
    println!("a silent WebSocket was closed after {:?} (idle timeout 1 s): {close:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_are_refused_and_allowed_names_served() {
    let (api, _dir) = api().await;
    let port = api.addr.port();
    for host in [api.host(), format!("localhost:{port}")] {
        assert_eq!(post(api.addr, &host, &[], &query_json(STATUS)).await.status, 200, "{host}");
    }
    // A page on evil.example whose name was rebound to 127.0.0.1 sends its own name.
    for host in [format!("evil.example:{port}"), format!("127.0.0.1:{}", port + 1), "localhost".into()] {
        let r = post(api.addr, &host, &[], &query_json(STATUS)).await;
        assert_eq!(r.status, 421, "{host}: {r:?}");
        assert!(r.body.contains("--api-allow-host"), "{}", r.body);
        let r = exchange(api.addr, &format!("GET / HTTP/1.1\r\nhost: {host}"), b"").await;
        assert_eq!(r.status, 421, "the dashboard too, {host}");
    }
    let r = exchange(api.addr, "GET /healthz HTTP/1.0", b"").await;
    assert_eq!(r.status, 400, "no Host: {r:?}");

    let access = Access::new(&["lcw.example.com".into()], &[]).unwrap();
    let (api, _dir) = api_with(Limits::default(), access).await;
    let r = post(api.addr, "lcw.example.com", &["origin: https://lcw.example.com"], &query_json(STATUS)).await;
    assert_eq!(r.status, 200, "an allowed name behind a TLS proxy, its own origin: {r:?}");
    assert_eq!(post(api.addr, "evil.example", &[], &query_json(STATUS)).await.status, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused_and_allowed_ones_get_cors_answers() {
    let allowed = "http://127.0.0.1:9";
    let (api, _dir) = api_with(Limits::default(), Access::new(&[], &[allowed.into()]).unwrap()).await;
    let host = api.host();
    let own = format!("origin: http://{host}");
    let r = post(api.addr, &host, &[&own], &query_json(STATUS)).await;
    assert_eq!(r.status, 200, "the dashboard's own origin: {r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None, "same origin needs no CORS");

    for foreign in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let r = post(api.addr, &host, &[&format!("origin: {foreign}")], &query_json(STATUS)).await;
        assert_eq!(r.status, 403, "{foreign}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), None);
        assert!(r.body.contains("--api-allow-origin"), "{}", r.body);
        let r = exchange(
            api.addr,
            &format!(
                "OPTIONS /graphql HTTP/1.1\r\nhost: {host}\r\norigin: {foreign}\r\naccess-control-request-method: POST"
            ),
            b"",
        )
        .await;
        assert_eq!(r.status, 403, "preflight from {foreign}: {r:?}");
        let ws = Ws::connect(api.addr, &host, Some(foreign)).await.err().expect("refused");
        assert_eq!(ws.status, 403, "WebSocket from {foreign}: {ws:?}");
    }

    let r = exchange(
        api.addr,
        &format!(
            "OPTIONS /graphql HTTP/1.1\r\nhost: {host}\r\norigin: {allowed}\r\naccess-control-request-method: POST\r\n\
             access-control-request-headers: content-type"
        ),
        b"",
    )
    .await;
    assert_eq!(r.status, 204, "preflight from an allowed origin: {r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(allowed));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type"));
    assert!(r.header("access-control-allow-methods").is_some_and(|m| m.contains("post")), "{r:?}");
    let r = post(api.addr, &host, &[&format!("origin: {allowed}")], &query_json(STATUS)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), Some(allowed));
    assert!(r.header("vary").is_some_and(|v| v.contains("origin")), "{r:?}");
    let mut ws = Ws::connect(api.addr, &host, Some(allowed)).await.expect("an allowed origin's WebSocket");
    ws.send_json(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.next_text(Duration::from_secs(5)).await.unwrap()["type"], "connection_ack");
    Ws::connect(api.addr, &host, Some(&format!("http://{host}"))).await.expect("the API's own origin");
}

#[test]
fn a_flood_of_the_api_does_not_hold_up_a_worker_on_the_same_runtime() {
    flood::run();
}

/// graphql-js's introspection query, as GraphiQL sends it.
pub(super) const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name } \
    subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
    fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description args { ...InputValue } \
    type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue } interfaces { ...TypeRef } \
    enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
    fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name \
    ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";
