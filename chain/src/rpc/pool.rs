//! The endpoints of one client: their health, the chain each one serves, and the retry and
//! failover loop that every call goes through, the typed calls of [`super::Rpc`] and the alloy
//! transport ([`super::FailoverTransport`]) alike. The policy is described in the [`super`]
//! module docs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use alloy::primitives::U64;
use alloy::rpc::client::RpcClient;
use futures::future::BoxFuture;
use lcw_schema::profile::redact_url;

use super::{BadAnswer, BadAnswers, Class, Fault, Refused, RpcError, RpcResult, RpcStats, classify, truncate};

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const REST_AFTER_FAILURES: u32 = 3;
const REST_FOR: Duration = Duration::from_secs(30);
/// `active` before any endpoint was checked.
const NONE: usize = usize::MAX;

pub(super) struct Endpoint {
    /// The URL, redacted: the only form that reaches logs and errors.
    pub(super) label: String,
    /// JSON-RPC over this endpoint's HTTP connection pool (typed calls and the chain check).
    pub(super) client: RpcClient,
    /// The same connection pool, for requests sent as they are (the transport, `eth_getLogs`).
    pub(super) http: reqwest::Client,
    pub(super) url: reqwest::Url,
    failures: AtomicU32,
    rest_until: Mutex<Option<Instant>>,
    last_success: Mutex<Option<Instant>>,
    /// The chain id this endpoint answered when it differed from the expected one: set once, and
    /// the endpoint is never used again.
    wrong_chain: OnceLock<u64>,
    /// Answers of this endpoint that a caller's check refused, by reason, and why the last one
    /// was (rare: a lock is cheap enough).
    bad_answers: Mutex<(BTreeMap<&'static str, u64>, String)>,
}

impl Endpoint {
    fn new(url: &str, http: &reqwest::Client) -> RpcResult<Endpoint> {
        let parsed: reqwest::Url = url.parse().map_err(|_| RpcError::BadUrl(redact_url(url)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RpcError::BadUrl(redact_url(url)));
        }
        Ok(Endpoint {
            label: redact_url(url),
            client: RpcClient::new_http_with_client(http.clone(), parsed.clone()),
            http: http.clone(),
            url: parsed,
            failures: AtomicU32::new(0),
            rest_until: Mutex::new(None),
            last_success: Mutex::new(None),
            wrong_chain: OnceLock::new(),
            bad_answers: Mutex::default(),
        })
    }

    fn resting(&self) -> Option<Instant> {
        self.rest_until.lock().ok().and_then(|g| *g).filter(|t| *t > Instant::now())
    }

    fn last_success(&self) -> Option<Instant> {
        self.last_success.lock().ok().and_then(|g| *g)
    }

    fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.last_success.lock() {
            *g = Some(Instant::now());
        }
        if let Ok(mut g) = self.rest_until.lock() {
            *g = None;
        }
    }

    fn failed(&self) {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= REST_AFTER_FAILURES
            && let Ok(mut g) = self.rest_until.lock()
        {
            *g = Some(Instant::now() + REST_FOR);
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(endpoint = %self.label, secs = REST_FOR.as_secs(), "RPC endpoint keeps failing; resting it");
        }
    }
}

/// Why the loop stopped without an answer; the caller turns it into its own error type.
pub(super) enum Failure {
    /// The node refused the block range.
    Range { message: String, suggested_to: Option<u64>, answer_bytes: Option<u64> },
    /// An error that retrying will not fix.
    Rejected { endpoint: String, message: String },
    /// Every usable endpoint kept failing for the whole budget.
    Unavailable { attempts: u32, endpoint: String, message: String },
    /// Every endpoint serves another chain.
    WrongChain,
}

enum Check {
    /// The endpoint serves another chain (now marked so).
    Wrong,
    /// The chain id could not be read: the endpoint failed.
    Failed(String),
}

/// The endpoints of a client and what is known about them, shared by every handle of the client.
pub(super) struct Pool {
    pub(super) endpoints: Vec<Endpoint>,
    /// The chain every endpoint must serve: the profile's, or else the first answer's.
    expected: OnceLock<u64>,
    /// The endpoint whose chain was checked last: a call on another one checks that one first.
    active: AtomicUsize,
    pub(super) stats: Arc<RpcStats>,
}

impl Pool {
    pub(super) fn new(urls: &[String], timeout: Duration, expected: Option<u64>) -> RpcResult<Pool> {
        lcw_schema::ensure_tls();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| RpcError::BadUrl(e.to_string()))?;
        let endpoints = urls.iter().map(|u| Endpoint::new(u, &http)).collect::<RpcResult<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(RpcError::BadUrl("(none)".into()));
        }
        let pinned = OnceLock::new();
        if let Some(id) = expected {
            let _ = pinned.set(id);
        }
        Ok(Pool { endpoints, expected: pinned, active: AtomicUsize::new(NONE), stats: Arc::default() })
    }

    pub(super) fn expected(&self) -> Option<u64> {
        self.expected.get().copied()
    }

    /// The endpoints found serving another chain, in preference order.
    pub(super) fn refused(&self) -> Vec<Refused> {
        self.endpoints
            .iter()
            .filter_map(|e| e.wrong_chain.get().map(|&chain_id| Refused { endpoint: e.label.clone(), chain_id }))
            .collect()
    }

    /// The endpoints that gave answers a check refused, in preference order.
    pub(super) fn bad_answers(&self) -> Vec<BadAnswers> {
        self.endpoints
            .iter()
            .filter_map(|e| {
                let (reasons, last) = e.bad_answers.lock().map(|g| g.clone()).unwrap_or_default();
                let count = reasons.values().sum();
                (count > 0).then(|| BadAnswers { endpoint: e.label.clone(), count, reasons, last })
            })
            .collect()
    }

    pub(super) fn labels(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.label.as_str()).collect()
    }

    /// The best usable endpoint not yet tried in this round: healthy ones in preference order,
    /// then (all resting) the one that succeeded most recently. None when the round is over.
    fn best(&self, tried: &[usize]) -> Option<usize> {
        let candidates =
            (0..self.endpoints.len()).filter(|i| !tried.contains(i) && self.endpoints[*i].wrong_chain.get().is_none());
        let healthy = candidates.clone().find(|i| self.endpoints[*i].resting().is_none());
        healthy.or_else(|| candidates.max_by_key(|i| self.endpoints[*i].last_success()))
    }

    /// Checks the chain of endpoint `i` when it is used for the first time or after the client
    /// used another one (a failover to it, or back to it).
    async fn check_chain(&self, i: usize) -> Result<(), Check> {
        let ep = &self.endpoints[i];
        if ep.wrong_chain.get().is_some() {
            return Err(Check::Wrong);
        }
        if self.active.load(Ordering::Relaxed) == i {
            return Ok(());
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let actual = match ep.client.request_noparams::<U64>("eth_chainId").await {
            Ok(id) => id.to::<u64>(),
            Err(e) => {
                let (Class::Retry(m) | Class::Fatal(m) | Class::Range(m, ..)) = classify(&e);
                return Err(Check::Failed(format!("eth_chainId: {m}")));
            }
        };
        let expected = *self.expected.get_or_init(|| actual);
        if actual != expected {
            let _ = ep.wrong_chain.set(actual);
            tracing::warn!(
                endpoint = %ep.label,
                expected,
                actual,
                "RPC endpoint serves chain {actual}, not {expected}; it is never used"
            );
            return Err(Check::Wrong);
        }
        let before = self.active.swap(i, Ordering::Relaxed);
        if before != NONE && before != i {
            let from = self.endpoints.get(before).map(|e| e.label.as_str()).unwrap_or_default();
            tracing::info!(from, to = %ep.label, chain = actual, "RPC calls move to another endpoint");
        }
        Ok(())
    }

    /// Counts and reports an answer of `ep` that its attempt refused; returns the message the
    /// call fails with if no endpoint gives a better one. The detail is shortened and any URL in
    /// it redacted, as for a node's own messages: it may quote the answer.
    fn bad_answer(&self, method: &str, ep: &Endpoint, bad: BadAnswer) -> String {
        let BadAnswer { reason, detail } = bad;
        let detail = truncate(&detail);
        self.stats.bad_answers.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            method,
            endpoint = %ep.label,
            reason,
            %detail,
            "bad answer refused, none of it used; asking the next endpoint"
        );
        let message = format!("bad answer: {detail}");
        if let Ok(mut g) = ep.bad_answers.lock() {
            *g.0.entry(reason).or_default() += 1;
            g.1 = detail;
        }
        message
    }

    /// One call with retries and failover. A failed attempt moves on to the next usable endpoint
    /// at once; only when every one failed in a round does the call back off (exponentially,
    /// with jitter), and it gives up at the end of the first round that ends past `give_up_after`
    /// (so every endpoint is tried at least once). With `repeat` false the request is sent once:
    /// a failure after it was sent ends the call at once (a failed chain check before it still
    /// moves on, since nothing was sent). An answer the attempt itself refused ([`Fault::Bad`])
    /// is a failure of its endpoint, counted and reported with it.
    pub(super) async fn run<R, E: Into<Fault>>(
        &self,
        method: &str,
        repeat: bool,
        give_up_after: Duration,
        attempt: impl for<'e> Fn(&'e Endpoint) -> BoxFuture<'e, Result<R, E>>,
    ) -> Result<R, Failure> {
        let started = Instant::now();
        let mut delay = BACKOFF_START;
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0u32;
        let mut last: Option<(usize, String)> = None;
        loop {
            let Some(i) = self.best(&tried) else {
                // The round is over: every usable endpoint failed once.
                let Some((at, message)) = &last else { return Err(Failure::WrongChain) };
                if self.best(&[]).is_none() {
                    return Err(Failure::WrongChain);
                }
                if started.elapsed() >= give_up_after {
                    let endpoint = self.endpoints[*at].label.clone();
                    return Err(Failure::Unavailable { attempts, endpoint, message: message.clone() });
                }
                tried.clear();
                let jitter = Duration::from_millis(rand::random::<u64>() % (delay.as_millis() as u64 / 2 + 1));
                tokio::time::sleep(delay + jitter).await;
                delay = (delay * 2).min(BACKOFF_MAX);
                continue;
            };
            let ep = &self.endpoints[i];
            let (outcome, sent) = match self.check_chain(i).await {
                Ok(()) => {
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    (attempt(ep).await.map_err(Into::into), true)
                }
                Err(Check::Wrong) => continue,
                Err(Check::Failed(message)) => (Err(Fault::Node(Class::Retry(message))), false),
            };
            attempts += 1;
            let message = match outcome {
                Ok(r) => {
                    ep.succeeded();
                    return Ok(r);
                }
                Err(Fault::Node(Class::Range(message, suggested_to, answer_bytes))) => {
                    ep.succeeded();
                    self.stats.range_splits.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure::Range { message, suggested_to, answer_bytes });
                }
                Err(Fault::Node(Class::Fatal(message))) => {
                    return Err(Failure::Rejected { endpoint: ep.label.clone(), message });
                }
                Err(Fault::Node(Class::Retry(message))) => message,
                Err(Fault::Bad(bad)) => self.bad_answer(method, ep, bad),
            };
            ep.failed();
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(method, endpoint = %ep.label, attempts, error = %message, "retrying RPC call");
            if sent && !repeat {
                return Err(Failure::Unavailable { attempts, endpoint: ep.label.clone(), message });
            }
            tried.push(i);
            last = Some((i, message));
        }
    }
}
