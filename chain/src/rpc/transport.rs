//! The failover client as an alloy transport, so that a provider built on it (typed contract
//! reads through `sol!` bindings, `raw_request`, receipts, ...) shares the endpoints, their
//! health, their chain checks and the retry classes of [`Rpc`].

use std::borrow::Cow;
use std::task::{Context, Poll};

use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::http::Http;
use alloy::transports::{RpcError, TransportError, TransportErrorKind, TransportFut, TransportResult};
use futures::future::BoxFuture;
use lcw_schema::profile::redact_urls;
use tower::Service;

use super::{Class, Rpc, classify, classify_payload};

/// Methods whose request must not be sent twice: they change a development node's state (mine,
/// move time, set balances, impersonate) or have the node sign for an account. One attempt on
/// the best endpoint, never a retry or a failover after it was sent.
///
/// `eth_sendRawTransaction` is not among them: the same signed bytes may reach a node twice (the
/// second answer is "already known", or "nonce too low" once mined), which is why a broadcast
/// moves on to the next endpoint after a transport failure.
fn repeatable(method: &str) -> bool {
    let dev_state = ["evm_", "anvil_", "hardhat_", "personal_"].iter().any(|p| method.starts_with(p))
        && !method.starts_with("anvil_get")
        && method != "anvil_nodeInfo"
        && method != "anvil_metadata";
    let node_signs =
        matches!(method, "eth_sendTransaction" | "eth_sendTransactionSync" | "eth_sign" | "eth_signTransaction");
    !(dev_state || node_signs)
}

/// The method a packet is reported under.
fn label(packet: &RequestPacket) -> &'static str {
    match packet {
        RequestPacket::Single(r) => match r.method_clone() {
            Cow::Borrowed(m) => m,
            Cow::Owned(_) => "JSON-RPC request",
        },
        RequestPacket::Batch(_) => "JSON-RPC batch",
    }
}

/// `e` with any URL in its text redacted, its kind kept (callers tell HTTP statuses apart): an
/// error page of a provider or proxy may quote the request URL, API key included, and a
/// transport's own error does.
fn scrubbed(e: TransportError) -> TransportError {
    match e {
        RpcError::Transport(TransportErrorKind::HttpError(h)) => {
            TransportErrorKind::http_error(h.status, redact_urls(&h.body))
        }
        RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter { error, retry_after }) => {
            TransportErrorKind::http_error_with_retry_after(error.status, redact_urls(&error.body), Some(retry_after))
        }
        RpcError::Transport(TransportErrorKind::NonRetryable(inner)) => {
            TransportErrorKind::non_retryable_str(&redact_urls(&inner.to_string()))
        }
        RpcError::Transport(TransportErrorKind::Custom(inner)) => {
            TransportErrorKind::custom_str(&redact_urls(&inner.to_string()))
        }
        other => other,
    }
}

/// An alloy transport over the endpoints of an [`Rpc`] (see [`Rpc::transport`]).
///
/// A request goes to the best endpoint (its chain checked first when the client used another one
/// before) and moves on to the next on a transport failure, HTTP 429/5xx, a garbled answer, or a
/// JSON-RPC error that says "try again" (rate limits, a lagging node). Any other JSON-RPC error
/// (a revert, a refused transaction, an invalid argument) is the node's answer and is returned at
/// once, from the endpoint that gave it.
#[derive(Clone)]
pub struct FailoverTransport {
    rpc: Rpc,
}

impl std::fmt::Debug for FailoverTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverTransport").field("rpc", &self.rpc).finish()
    }
}

impl FailoverTransport {
    pub(super) fn new(rpc: Rpc) -> Self {
        FailoverTransport { rpc }
    }

    async fn send(self, packet: RequestPacket) -> TransportResult<ResponsePacket> {
        let method = label(&packet);
        let repeat = packet.method_names().all(repeatable);
        let attempt =
            |ep: &super::pool::Endpoint| -> BoxFuture<'static, Result<TransportResult<ResponsePacket>, Class>> {
                let mut http = Http::with_client(ep.http.clone(), ep.url.clone());
                let packet = packet.clone();
                Box::pin(async move {
                    match http.call(packet).await {
                        Ok(answer) => {
                            // A "try again" error answer is an endpoint failure; any other is the answer.
                            let again = answer.iter_errors().find_map(|p| match classify_payload(p.code, &p.message) {
                                Class::Retry(m) => Some(m),
                                _ => None,
                            });
                            match again {
                                Some(m) => Err(Class::Retry(m)),
                                None => Ok(Ok(answer)),
                            }
                        }
                        Err(e) => match classify(&e) {
                            Class::Retry(m) => Err(Class::Retry(m)),
                            // HTTP 413, 401, ...: returned as alloy reported it, URLs redacted.
                            Class::Fatal(_) | Class::Range(..) => Ok(Err(scrubbed(e))),
                        },
                    }
                })
            };
        let rpc = &self.rpc;
        match rpc.pool.run(method, repeat, rpc.give_up_after, |ep| attempt(ep)).await {
            Ok(answer) => answer,
            Err(failure) => Err(TransportErrorKind::custom(rpc.error(method, failure))),
        }
    }
}

impl Service<RequestPacket> for FailoverTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, packet: RequestPacket) -> Self::Future {
        Box::pin(self.clone().send(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_returned_as_alloy_reported_them_quote_no_key() {
        let page = "401: no access to https://eth.example/v2/SECRETKEY123SECRETKEY123 for you";
        let e = scrubbed(TransportErrorKind::http_error(401, page.into()));
        let h = e.as_transport_err().and_then(TransportErrorKind::as_http_error).expect("still an HTTP error");
        assert_eq!(h.status, 401);
        assert_eq!(h.body, "401: no access to https://eth.example/… for you");
        let e = scrubbed(TransportErrorKind::non_retryable_str("refused http://u:pw@127.0.0.1:1/x"));
        assert!(!e.to_string().contains("pw") && e.to_string().contains("***@127.0.0.1:1"), "{e}");
    }

    #[test]
    fn only_requests_that_change_a_dev_node_or_sign_on_it_are_sent_once() {
        for m in ["eth_call", "eth_sendRawTransaction", "eth_getLogs", "anvil_getBlobByHash", "eth_chainId"] {
            assert!(repeatable(m), "{m}");
        }
        for m in ["evm_mine", "anvil_mine", "evm_increaseTime", "anvil_setBalance", "eth_sendTransaction"] {
            assert!(!repeatable(m), "{m}");
        }
    }
}
