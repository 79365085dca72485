//! The API on an empty store, and a client that speaks HTTP/1.1 and WebSocket frames by hand,
//! so a test can send what no well-behaved client library would: half a head, a body slower than
//! the timeout, any `Host`, any `Origin`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use lcw_queries::{Access, Limits, Readiness, ServeConfig, Server};
use lcw_schema::store::{Identity, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A store with its identity and no events (the API answers status queries over it).
pub(crate) fn empty_store(dir: &Path) -> PathBuf {
    let path = dir.join("lcw.db");
    let identity = Identity {
        chain_id: 31_337,
        contracts: lcw_schema::profile::Contracts {
            worker_registry: Address::repeat_byte(1),
            job_registry: Address::repeat_byte(2),
            ai_config: Address::repeat_byte(3),
        },
        start_block: 0,
    };
    Store::open(&path, &identity).expect("a new store");
    path
}

/// `lcw_queries::serve` on a free loopback port of the current runtime; stopped when dropped.
pub(crate) struct Api {
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Api {
    pub(crate) async fn start(db: &Path, limits: Limits, access: Access, request_timeout: Duration) -> Api {
        let mut config = ServeConfig::new(db.to_owned());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.readiness = Readiness::MaxLag(u64::MAX);
        config.limits = limits;
        config.access = access;
        config.request_timeout = request_timeout;
        let server = Server::bind(&config, None).await.expect("the API binds");
        let addr = server.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(server.run(rx));
        Api { addr, stop }
    }

    /// The `Host` a browser would send for this server.
    pub(crate) fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The head's header lines, lowercased.
    pub(crate) headers: String,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let key = format!("{}:", name.to_ascii_lowercase());
        self.headers.lines().find_map(|l| l.strip_prefix(&key)).map(str::trim)
    }
}

/// Sends `head` (without the final blank line) and `body` with `Connection: close`; reads the
/// whole answer.
pub(crate) async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{head}\r\nconnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer and close before taking the whole body (413): that is fine.
    let _ = s.write_all(body).await;
    read_answer(&mut s).await
}

/// Reads an answer until the server closes the connection.
pub(crate) async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await;
    parse_answer(&raw)
}

pub(crate) fn parse_answer(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head.lines().skip(1).map(|l| l.to_ascii_lowercase()).collect::<Vec<_>>().join("\n");
    let body = if headers.contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Answer { status, headers, body }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// POSTs `json` to /graphql with `Host: host` and the given extra header lines.
pub(crate) async fn post(addr: SocketAddr, host: &str, extra: &[&str], json: &str) -> Answer {
    let mut head = format!("POST /graphql HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json");
    for h in extra {
        head.push_str("\r\n");
        head.push_str(h);
    }
    exchange(addr, &head, json.as_bytes()).await
}

/// `{"query": q}` as JSON.
pub(crate) fn query_json(q: &str) -> String {
    serde_json::json!({ "query": q }).to_string()
}

/// A WebSocket client (graphql-transport-ws), frames built by hand.
pub(crate) struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    Text(String),
    Ping,
    Close(u16, String),
}

impl Ws {
    /// Opens `/graphql` with `Host: host` and, when given, `Origin`; the refusal's answer when
    /// the server does not switch protocols.
    pub(crate) async fn connect(addr: SocketAddr, host: &str, origin: Option<&str>) -> Result<Ws, Answer> {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let origin = origin.map(|o| format!("origin: {o}\r\n")).unwrap_or_default();
        let req = format!(
            "GET /graphql HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
             sec-websocket-protocol: graphql-transport-ws\r\n{origin}\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
                Ok(Ok(1)) => head.push(byte[0]),
                _ => break,
            }
        }
        let answer = parse_answer(&head);
        if answer.status != 101 {
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
            head.extend(rest);
            return Err(parse_answer(&head));
        }
        Ok(Ws { stream: s, buf: Vec::new() })
    }

    /// Sends a text frame (masked, as a client must).
    pub(crate) async fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        frame.extend(mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a graphql-transport-ws message.
    pub(crate) async fn send_json(&mut self, v: serde_json::Value) {
        self.send(&v.to_string()).await;
    }

    /// The next frame within `wait` (None: nothing came, or the connection ended).
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The next text message, skipping pings (unanswered).
    pub(crate) async fn next_text(&mut self, wait: Duration) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Frame::Text(t) => return serde_json::from_str(&t).ok(),
                Frame::Ping => continue,
                Frame::Close(..) => return None,
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, start) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < start + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[start..start + len].to_vec();
        self.buf.drain(..start + len);
        Some(match opcode {
            0x9 => Frame::Ping,
            0x8 => {
                let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 0 };
                Frame::Close(code, String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned())
            }
            _ => Frame::Text(String::from_utf8_lossy(&payload).into_owned()),
        })
    }
}
