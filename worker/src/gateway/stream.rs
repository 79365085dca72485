//! The response stream: a bounded queue of frames that never blocks the caller, and the loop
//! that dials `/api/stream/responses`, pumps the queue into the socket and re-dials with backoff.
//! The stream is best effort (the on-chain blob is the authoritative answer): a frame whose
//! write fails is lost, and the terminal frame goes by HTTP when the socket is down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use lcw_schema::profile::redact_urls;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{info, warn};

use super::frames::{self, Frame, FrameKind};
use super::{Gateway, GatewayCall, GatewayError, GatewayResult, bump, stop_requested};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The first wait before re-dialling; it doubles after each failure.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest wait before re-dialling.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff; one that closed sooner counts as a
/// failed dial (a gateway that accepts and drops at once is not dialled in a tight loop).
const STABLE: Duration = Duration::from_secs(10);

/// How a terminal frame left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued behind the job's chunks on the open socket.
    Queued,
    /// Accepted by the HTTP fallback (`204`).
    Posted,
    /// Lost: signing or the fallback failed (logged; the on-chain blob still answers the job).
    Failed,
}

impl Gateway {
    /// Queues one streamed delta of `job_id`: `seq` counts from 1 per job, `ciphertext` is the
    /// delta encrypted on its own with the session key. Never blocks; when the queue is full the
    /// frame is dropped and counted.
    pub fn publish_chunk(&self, job_id: u64, session_id: u64, seq: u32, kind: FrameKind, ciphertext: Vec<u8>) {
        self.enqueue(Frame::chunk(job_id, session_id, seq, kind, ciphertext, SystemTime::now()));
    }

    /// Queues an `error` frame: the worker gave up on `job_id`. Never blocks.
    pub fn publish_error(&self, job_id: u64, session_id: u64) {
        self.enqueue(Frame::error(job_id, session_id, SystemTime::now()));
    }

    /// Signs the full response `ciphertext` (the bytes posted in the blob) and sends the
    /// terminal frame: on the socket, behind the job's chunks, while it is connected; by HTTP
    /// otherwise (or when the queue is full). `total_frames` is the job's frame count including
    /// this one: the last chunk's `seq` + 1, or 1 when nothing was streamed (0 is read as 1).
    /// Failures are logged and counted; the result is for callers that care.
    pub async fn publish_complete(
        &self,
        job_id: u64,
        session_id: u64,
        total_frames: u32,
        ciphertext: &[u8],
    ) -> Delivery {
        let signature = match frames::personal_sign(&self.inner.signer, ciphertext, "response") {
            Ok(signature) => signature,
            Err(e) => {
                self.record(&e);
                bump(&self.inner.counters.frames_dropped);
                warn!(gateway = %self.url(), job = job_id, error = %e, "cannot sign the response for the worker gateway");
                return Delivery::Failed;
            }
        };
        let mut frame =
            Frame::complete(job_id, session_id, total_frames, ciphertext.to_vec(), signature, SystemTime::now());
        if self.inner.connected.load(Ordering::Relaxed) {
            match self.inner.queue.try_send(frame) {
                Ok(()) => return Delivery::Queued,
                Err(TrySendError::Full(back) | TrySendError::Closed(back)) => frame = back,
            }
        }
        let c = &self.inner.counters;
        match self.post_response(&frame).await {
            Ok(()) => {
                bump(&c.frames_sent);
                bump(&c.responses_posted);
                Delivery::Posted
            }
            Err(e) => {
                self.record(&e);
                bump(&c.frames_dropped);
                if let Some(repeats) = self.throttled("response") {
                    warn!(gateway = %self.url(), job = job_id, repeats, error = %e, "worker gateway response fallback failed; the on-chain blob still answers the job");
                }
                Delivery::Failed
            }
        }
    }

    fn enqueue(&self, frame: Frame) {
        if let Err(TrySendError::Full(frame) | TrySendError::Closed(frame)) = self.inner.queue.try_send(frame) {
            bump(&self.inner.counters.frames_dropped);
            if let Some(repeats) = self.throttled("queue full") {
                warn!(gateway = %self.url(), job = frame.job_id, seq = frame.seq, repeats, "worker gateway stream queue full; frame dropped");
            }
        }
    }

    /// Opens the socket with the bearer token on the upgrade request.
    async fn dial(&self) -> GatewayResult<Socket> {
        let call = GatewayCall::Stream;
        let ws_error =
            |e: tungstenite::Error| GatewayError::WebSocket { url: self.inner.label.clone(), source: Box::new(e) };
        self.bounded(call, async {
            let token = self.token().await?;
            let mut request = frames::stream_url(&self.inner.base).into_client_request().map_err(ws_error)?;
            request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, token.clone());
            match tokio_tungstenite::connect_async(request).await {
                Ok((socket, _)) => Ok(socket),
                Err(tungstenite::Error::Http(response)) => {
                    if response.status() == tungstenite::http::StatusCode::UNAUTHORIZED {
                        self.forget_token(&token);
                    }
                    let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    Err(GatewayError::Status {
                        call,
                        url: self.inner.label.clone(),
                        status: response.status().as_u16(),
                        body: frames::excerpt(&redact_urls(&body), frames::BODY_EXCERPT),
                    })
                }
                Err(e) => Err(ws_error(e)),
            }
        })
        .await
    }

    /// Writes queued frames until the socket breaks or a stop is asked for.
    async fn pump(
        &self,
        socket: &mut Socket,
        queue: &mut mpsc::Receiver<Frame>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        loop {
            tokio::select! {
                () = stop_requested(shutdown) => {
                    // Frames already queued (a just-finished job's terminal frame) still go, all
                    // within one timeout.
                    let flush = async {
                        while let Ok(frame) = queue.try_recv() {
                            if self.write(socket, frame).await.is_err() {
                                return;
                            }
                        }
                        let _ = socket.close(None).await;
                    };
                    let _ = tokio::time::timeout(self.inner.config.timeout, flush).await;
                    return Ended::Shutdown;
                }
                incoming = socket.next() => match incoming {
                    // Pings are answered by tungstenite as they are read; nothing else is expected.
                    Some(Ok(Message::Close(_))) | None => return Ended::Closed("the gateway closed it".into()),
                    Some(Err(e)) => return Ended::Closed(format!("reading failed: {e}")),
                    Some(Ok(_)) => {}
                },
                frame = queue.recv() => {
                    // The sender lives as long as the gateway, so the queue cannot close here.
                    let Some(frame) = frame else { return Ended::Shutdown };
                    if let Err(why) = self.write(socket, frame).await {
                        return Ended::Closed(why);
                    }
                }
            }
        }
    }

    /// Writes one frame; on failure the frame is lost (counted) and the socket given up.
    async fn write(&self, socket: &mut Socket, frame: Frame) -> Result<(), String> {
        let c = &self.inner.counters;
        let text = match serde_json::to_string(&frame) {
            Ok(text) => text,
            Err(e) => {
                bump(&c.frames_dropped);
                warn!(job = frame.job_id, error = %e, "cannot encode a worker gateway frame; dropped");
                return Ok(());
            }
        };
        match tokio::time::timeout(self.inner.config.timeout, socket.send(Message::text(text))).await {
            Ok(Ok(())) => {
                bump(&c.frames_sent);
                Ok(())
            }
            Ok(Err(e)) => {
                bump(&c.frames_dropped);
                Err(format!("writing a frame failed: {e}"))
            }
            Err(_) => {
                bump(&c.frames_dropped);
                Err(format!("writing a frame took more than {:?}", self.inner.config.timeout))
            }
        }
    }
}

/// Why a connection ended.
enum Ended {
    /// A stop was asked for.
    Shutdown,
    /// The gateway closed it, or a read or write failed: why.
    Closed(String),
}

/// The dial-pump-redial loop, until a stop is asked for.
pub(super) async fn connection_loop(
    gateway: &Gateway,
    queue: &mut mpsc::Receiver<Frame>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    let mut was_connected = false;
    loop {
        let dialled = tokio::select! {
            dialled = gateway.dial() => dialled,
            () = stop_requested(&mut shutdown) => return,
        };
        match dialled {
            Ok(mut socket) => {
                let opened = Instant::now();
                gateway.inner.connected.store(true, Ordering::Relaxed);
                info!(gateway = %gateway.url(), reconnected = was_connected, "worker gateway response stream connected");
                was_connected = true;
                let ended = gateway.pump(&mut socket, queue, &mut shutdown).await;
                gateway.inner.connected.store(false, Ordering::Relaxed);
                let Ended::Closed(reason) = ended else { return };
                if let Some(repeats) = gateway.throttled("stream closed") {
                    warn!(gateway = %gateway.url(), repeats, reason = %redact_urls(&reason), "worker gateway response stream closed; reconnecting");
                }
                if opened.elapsed() >= STABLE {
                    // A connection that lived: re-dial at once, with a fresh backoff.
                    backoff = Backoff::default();
                    continue;
                }
            }
            Err(e) => {
                gateway.record(&e);
                if let Some(repeats) = gateway.throttled("stream dial") {
                    warn!(gateway = %gateway.url(), repeats, retry_in_s = backoff.peek().as_secs(), error = %e, "cannot open the worker gateway response stream");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = stop_requested(&mut shutdown) => return,
        }
    }
}

/// Waits between dials: 1 s, doubling to 30 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_START }
    }
}

impl Backoff {
    /// The wait to use now; the next one doubles (up to the maximum).
    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    /// The wait [`Backoff::next_wait`] will return.
    fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::PrivateKeySigner;

    use super::super::{GatewayConfig, QUEUE_CAPACITY};
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let signer = PrivateKeySigner::random();
        let gateway = Gateway::new(GatewayConfig::new("http://127.0.0.1:9"), signer).unwrap();
        for seq in 1..=(QUEUE_CAPACITY as u32 + 5) {
            gateway.publish_chunk(1, 2, seq, FrameKind::Text, vec![0; 16]);
        }
        gateway.publish_error(1, 2);
        let status = gateway.status();
        assert_eq!((status.frames_dropped, status.frames_sent), (6, 0));
    }
}
