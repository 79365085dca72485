//! A node that answers its chain id and fails every other call in a way that quotes the request
//! URL back (as providers' error pages and proxies do), and a log capture, for the tests that
//! check that an API key in a node URL never reaches an error or a log line.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The API key every test URL carries.
pub const SECRET: &str = "SECRETKEY123";

/// URLs of `host` with [`SECRET`] in the path, the query and the user info.
pub fn secret_urls(host: &str) -> Vec<String> {
    vec![
        format!("http://{host}/v2/{SECRET}"),
        format!("http://{host}/rpc?apikey={SECRET}"),
        format!("http://operator:{SECRET}@{host}/"),
    ]
}

/// How the node fails every call but `eth_chainId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 401 with a page quoting the URL.
    Unauthorized,
    /// HTTP 502 with a page quoting the URL.
    BadGateway,
    /// HTTP 200 with a body that is not JSON-RPC and quotes the URL.
    Garbage,
    /// A JSON-RPC error whose message quotes the URL.
    RpcError,
    /// The connection closes without an answer.
    Hangup,
}

impl Answer {
    /// Every way of failing.
    pub const ALL: [Answer; 5] =
        [Answer::Unauthorized, Answer::BadGateway, Answer::Garbage, Answer::RpcError, Answer::Hangup];
}

/// The node (serving until the test's runtime ends).
#[derive(Debug, Clone)]
pub struct HostileNode {
    /// `127.0.0.1:<port>`.
    pub host: String,
    answer: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl HostileNode {
    pub async fn start() -> HostileNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let host = listener.local_addr().expect("address").to_string();
        let node = HostileNode { host, answer: Arc::new(AtomicUsize::new(0)), served: Arc::default() };
        let n = node.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(n.clone().serve(socket));
            }
        });
        node
    }

    /// Fails from now on as `answer` says.
    pub fn answer(&self, answer: Answer) {
        let i = Answer::ALL.iter().position(|a| *a == answer).unwrap_or(0);
        self.answer.store(i, Ordering::SeqCst);
    }

    /// Requests answered other than `eth_chainId`.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    async fn serve(self, mut socket: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_end, length) = loop {
            let Ok(n) = socket.read(&mut chunk).await else { return };
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while buf.len() < head_end + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let quoted = format!("http://{}{path}", self.host);
        let request: serde_json::Value = serde_json::from_slice(&buf[head_end..]).unwrap_or_default();
        // A batch is answered as its first request.
        let first = request.as_array().and_then(|a| a.first().cloned()).unwrap_or(request);
        let id = first.get("id").cloned().unwrap_or(serde_json::Value::from(1));
        let method = first.get("method").and_then(|m| m.as_str()).unwrap_or_default();
        let (status, body) = if method == "eth_chainId" {
            (200, serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": "0x7a69" }).to_string())
        } else {
            self.served.fetch_add(1, Ordering::SeqCst);
            match Answer::ALL[self.answer.load(Ordering::SeqCst)] {
                Answer::Unauthorized => (401, format!("invalid API key for {quoted}")),
                Answer::BadGateway => (502, format!("<html><h1>502</h1>upstream {quoted} failed</html>")),
                Answer::Garbage => (200, format!("<html>moved to {quoted}</html>")),
                Answer::RpcError => (
                    200,
                    serde_json::json!({ "jsonrpc": "2.0", "id": id,
                        "error": { "code": -32000, "message": format!("not allowed for {quoted}") } })
                    .to_string(),
                ),
                Answer::Hangup => return,
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
        let _ = socket.shutdown().await;
    }
}

/// Every log line of this test binary, at every level, from the first call on (one subscriber
/// for the process; tests only ever assert that something is absent, so they may share it).
pub fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(FILTER)
            .with_writer(move || Capture(logs))
            .with_ansi(false)
            .try_init();
        logs
    })
}

/// What the tests log: everything, except alloy's HTTP transport, which `lcw` turns off as well
/// (`cli/src/main.rs`): it records the request URL, key included, as a field of its debug span.
const FILTER: &str = "trace,alloy_transport_http=off";

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// No text and no log line holds [`SECRET`].
#[track_caller]
pub fn assert_no_secret(texts: &[String], logs: &Mutex<Vec<u8>>) {
    for text in texts {
        assert!(!text.contains(SECRET), "the key reached an error: {text}");
    }
    let logs = logs.lock().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default();
    assert!(!logs.is_empty(), "something was logged");
    if let Some(line) = logs.lines().find(|l| l.contains(SECRET)) {
        panic!("the key reached a log line: {line}");
    }
}
