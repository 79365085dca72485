//! How late a worker-like loop runs on the API's runtime while the API is flooded: the figure
//! behind "the API can share `lcw run`'s runtime with the worker and settler". Printed, never
//! asserted (the machine is shared).
//!
//! The API runs on a runtime of two worker threads (the target machine has two cores), as in
//! `lcw run`. Beside it, a loop shaped like the worker's and the settler's: sleep 50 ms (their
//! poll interval), then one SQLite write on a blocking thread (their outbox and store writes).
//! Its lateness (how far past 50 ms it woke) and write time are sampled first with the API idle,
//! then while clients on another runtime send what a hostile page or peer could: heavy valid
//! queries (full introspection), directive and fragment bombs, oversized bodies, half-sent heads
//! held open, WebSocket and subscription floods, and foreign origins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lcw_queries::{Access, Limits};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{Api, Ws, empty_store, post, query_json};

const IDLE_PHASE: Duration = Duration::from_secs(4);
const FLOOD_PHASE: Duration = Duration::from_secs(8);

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("a runtime")
}

pub(crate) fn run() {
    let dir = tempfile::tempdir().unwrap();
    let db = empty_store(dir.path());
    let outbox = dir.path().join("outbox.db");
    let server = runtime(2);
    let api = server.block_on(Api::start(&db, Limits::default(), Access::default(), Duration::from_secs(2)));
    let idle = server.block_on(server.spawn(worker_like(outbox.clone(), IDLE_PHASE))).unwrap();

    let clients = runtime(2);
    let ticks = server.spawn(worker_like(outbox, FLOOD_PHASE));
    let outcomes = clients.block_on(flood(api.addr, FLOOD_PHASE));
    let flooded = server.block_on(ticks).unwrap();

    println!(
        "worker-like loop on the API's 2-thread runtime (sleep 50 ms, then one SQLite write on a blocking thread):"
    );
    println!("  API idle:    {}", idle.summary());
    println!("  API flooded: {}", flooded.summary());
    let total: usize = outcomes.values().sum();
    println!("  the flood, over {} s: {total} answers {outcomes:?}", FLOOD_PHASE.as_secs());
    assert!(total > 100 && !flooded.late.is_empty(), "the flood ran and the loop kept ticking");
    drop(api);
}

#[derive(Debug, Default)]
struct Samples {
    /// How far past its 50 ms sleep the loop woke.
    late: Vec<Duration>,
    /// One write on a blocking thread, there and back.
    write: Vec<Duration>,
}

impl Samples {
    fn summary(&self) -> String {
        format!(
            "{} ticks; wake-up lateness {}; write {}",
            self.late.len(),
            quantiles(&self.late),
            quantiles(&self.write)
        )
    }
}

fn quantiles(v: &[Duration]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms(at(0.5)), ms(at(0.99)), ms(at(1.0)))
}

async fn worker_like(path: std::path::PathBuf, run_for: Duration) -> Samples {
    let conn = Arc::new(Mutex::new(rusqlite::Connection::open(&path).unwrap()));
    conn.lock().unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t (x INTEGER)").unwrap();
    let mut samples = Samples::default();
    let end = Instant::now() + run_for;
    while Instant::now() < end {
        let slept = Instant::now();
        tokio::time::sleep(Duration::from_millis(50)).await;
        samples.late.push(slept.elapsed().saturating_sub(Duration::from_millis(50)));
        let c = conn.clone();
        let wrote = Instant::now();
        tokio::task::spawn_blocking(move || c.lock().unwrap().execute("INSERT INTO t VALUES (1)", []).unwrap())
            .await
            .unwrap();
        samples.write.push(wrote.elapsed());
    }
    samples
}

/// Every kind of hostile traffic at once until `run_for` passes; answers counted by kind.
async fn flood(addr: SocketAddr, run_for: Duration) -> BTreeMap<String, usize> {
    let host = addr.to_string();
    let end = Instant::now() + run_for;
    let counts = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let count = {
        let counts = counts.clone();
        move |kind: &str, status: u16| *counts.lock().unwrap().entry(format!("{kind} {status}")).or_default() += 1
    };
    let mut tasks = Vec::new();
    let bodies: Vec<(&str, String, Option<&str>)> = vec![
        ("introspection", query_json(super::INTROSPECTION), None),
        ("directives", query_json(&format!("{{ __typename {} }}", "@skip(if: false)".repeat(3_900))), None),
        ("fragment-bomb", query_json(&fragment_bomb()), None),
        ("3MB-body", "x".repeat(3 << 20), None),
        ("foreign-origin", query_json("{ indexerStatus { block } }"), Some("origin: https://evil.example")),
    ];
    for (kind, body, header) in bodies {
        let clients = if kind == "introspection" { 48 } else { 8 };
        for _ in 0..clients {
            let (host, body, count) = (host.clone(), body.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let extra: Vec<&str> = header.into_iter().collect();
                    let r = post(addr, &host, &extra, &body).await;
                    count(kind, r.status);
                }
            }));
        }
    }
    // Half-sent heads, held open and renewed when the server drops them.
    for _ in 0..8 {
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while Instant::now() < end {
                if let Ok(mut s) = TcpStream::connect(addr).await {
                    let _ = s.write_all(b"POST /graphql HTTP/1.1\r\nhost: ").await;
                    held.push(s);
                    count("half-sent-head", 0);
                }
                if held.len() >= 60 {
                    held.remove(0);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    // WebSockets: more than the cap, each asking for more subscriptions than a socket may hold.
    for _ in 0..48 {
        let (host, count) = (host.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match Ws::connect(addr, &host, None).await {
                    Err(a) => {
                        count("websocket", a.status);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(mut ws) => {
                        count("websocket", 101);
                        ws.send_json(json!({ "type": "connection_init" })).await;
                        for id in 0..20 {
                            let q = "subscription { head { block } }";
                            ws.send_json(
                                json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": q } }),
                            )
                            .await;
                        }
                        while Instant::now() < end {
                            if ws.next(Duration::from_millis(200)).await.is_some() {
                                count("websocket-message", 0);
                            }
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    counts.lock().unwrap().clone()
}

/// 30^8 selections in a few hundred bytes.
fn fragment_bomb() -> String {
    let mut q = String::from("{ ...F0 }");
    for i in 0..8 {
        q.push_str(&format!(" fragment F{i} on Query {{ {} }}", format!("...F{} ", i + 1).repeat(30)));
    }
    q + " fragment F8 on Query { __typename }"
}
