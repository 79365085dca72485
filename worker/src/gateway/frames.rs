//! The wire format, without I/O: response frames, request bodies, the EIP-191 signature, the
//! gateway's URLs, and when a token needs renewing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use base64::Engine;
use lcw_schema::profile::redact_url;
use serde::{Deserialize, Serialize, Serializer};

use super::Heartbeat;
use super::error::{GatewayError, GatewayResult};

/// The worker protocol version sent in every heartbeat.
pub(super) const PROTOCOL_VERSION: u32 = 1;
/// A token is renewed when less than this is left of it.
pub(super) const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The lifetime assumed for a token whose `expiresAt` does not parse.
pub(super) const ASSUMED_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Characters of an error answer kept in [`GatewayError::Status`].
pub(super) const BODY_EXCERPT: usize = 300;

/// What a chunk frame carries (`kind` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// The visible answer; the only kind whose ciphertext is part of the on-chain response.
    Text,
    /// A reasoning model's chain of thought.
    Reasoning,
    /// The model's own timings and token counts.
    Stats,
}

/// Where a frame sits in a response (`type` on the wire). The protocol also has `metadata`
/// frames (search citations), which lcw does not produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum FrameType {
    /// One streamed delta.
    Chunk,
    /// The terminal frame: the full response ciphertext, signed.
    Complete,
    /// The worker gave up on the job.
    Error,
}

/// One frame of the response stream, as sent on the WebSocket.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Frame {
    #[serde(rename = "type")]
    pub(super) frame_type: FrameType,
    /// Omitted for complete and error frames (the protocol reads a missing kind as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) kind: Option<FrameKind>,
    pub(super) job_id: u64,
    pub(super) session_id: u64,
    pub(super) seq: u32,
    pub(super) total_chunks: u32,
    #[serde(serialize_with = "base64_std")]
    pub(super) payload: Vec<u8>,
    pub(super) signature: String,
    pub(super) correlation_id: String,
    pub(super) ts: u64,
}

impl Frame {
    fn new(frame_type: FrameType, job_id: u64, session_id: u64, now: SystemTime) -> Frame {
        Frame {
            frame_type,
            kind: None,
            job_id,
            session_id,
            seq: 0,
            total_chunks: 0,
            payload: Vec::new(),
            signature: String::new(),
            correlation_id: format!("{session_id}-{job_id}"),
            ts: unix(now),
        }
    }

    /// A streamed delta: `seq` counts from 1 per job, `totalChunks` is 0, unsigned.
    pub(super) fn chunk(
        job_id: u64,
        session_id: u64,
        seq: u32,
        kind: FrameKind,
        ciphertext: Vec<u8>,
        now: SystemTime,
    ) -> Frame {
        Frame { kind: Some(kind), seq, payload: ciphertext, ..Frame::new(FrameType::Chunk, job_id, session_id, now) }
    }

    /// The terminal frame: `seq` and `totalChunks` are the job's frame count including this one,
    /// the payload the full response ciphertext, the signature EIP-191 over it.
    pub(super) fn complete(
        job_id: u64,
        session_id: u64,
        total_frames: u32,
        ciphertext: Vec<u8>,
        signature: String,
        now: SystemTime,
    ) -> Frame {
        let total = total_frames.max(1);
        Frame {
            seq: total,
            total_chunks: total,
            payload: ciphertext,
            signature,
            ..Frame::new(FrameType::Complete, job_id, session_id, now)
        }
    }

    /// The worker gave up on the job: no payload, unsigned, seq 0.
    pub(super) fn error(job_id: u64, session_id: u64, now: SystemTime) -> Frame {
        Frame::new(FrameType::Error, job_id, session_id, now)
    }

    /// The body of `POST /api/jobs/{jobId}/response` carrying this frame.
    pub(super) fn response_body(&self) -> ResponseBody<'_> {
        ResponseBody {
            session_id: self.session_id,
            seq: self.seq,
            total_chunks: self.total_chunks,
            payload: &self.payload,
            signature: &self.signature,
            correlation_id: &self.correlation_id,
        }
    }
}

/// The HTTP fallback's body: the terminal frame without `type`, `kind`, `jobId` (in the path)
/// and `ts`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponseBody<'a> {
    session_id: u64,
    seq: u32,
    total_chunks: u32,
    #[serde(serialize_with = "base64_std")]
    payload: &'a [u8],
    signature: &'a str,
    correlation_id: &'a str,
}

/// The body of `POST /api/heartbeat`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HeartbeatBody<'a> {
    active_jobs: u32,
    max_jobs: u32,
    models: Vec<String>,
    capabilities: &'a [String],
    protocol_version: u32,
    ollama_status: &'static str,
    uptime_seconds: u64,
}

impl<'a> HeartbeatBody<'a> {
    pub(super) fn new(hb: &'a Heartbeat) -> HeartbeatBody<'a> {
        HeartbeatBody {
            active_jobs: hb.active_jobs,
            max_jobs: hb.max_jobs,
            models: hb.models.iter().map(|m| alloy::hex::encode_prefixed(m.as_slice())).collect(),
            capabilities: &hb.capabilities,
            protocol_version: PROTOCOL_VERSION,
            ollama_status: if hb.llm_ready { "ready" } else { "unreachable" },
            uptime_seconds: hb.uptime_secs,
        }
    }
}

/// `GET /api/auth/challenge`'s answer.
#[derive(Deserialize)]
pub(super) struct Challenge {
    pub(super) message: String,
}

/// `POST /api/auth/verify`'s body.
#[derive(Serialize)]
pub(super) struct Verify<'a> {
    pub(super) message: &'a str,
    pub(super) signature: &'a str,
}

/// `POST /api/auth/verify`'s answer. No `Debug`: it holds the token.
#[derive(Deserialize)]
pub(super) struct Verified {
    pub(super) token: String,
    #[serde(rename = "expiresAt", default)]
    pub(super) expires_at: String,
}

fn base64_std<S: Serializer, B: AsRef<[u8]>>(bytes: &B, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()))
}

/// EIP-191 `personal_sign` of `message`: 65 bytes r‖s‖v with v 27 or 28, 0x-prefixed hex.
pub(super) fn personal_sign(signer: &PrivateKeySigner, message: &[u8], what: &'static str) -> GatewayResult<String> {
    let signature = signer.sign_message_sync(message).map_err(|source| GatewayError::Sign { what, source })?;
    Ok(alloy::hex::encode_prefixed(signature.as_bytes()))
}

/// The base URL the API paths are appended to: http(s), a host, no query or fragment, no
/// trailing `/` (a path prefix is kept, for a gateway behind a reverse proxy).
pub(super) fn base_url(url: &str) -> GatewayResult<String> {
    let trimmed = url.trim();
    let not_base = |problem| GatewayError::UrlNotBase { url: redact_url(trimmed), problem };
    if trimmed.is_empty() {
        return Err(not_base("is empty"));
    }
    let parsed =
        reqwest::Url::parse(trimmed).map_err(|source| GatewayError::UrlParse { url: redact_url(trimmed), source })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(not_base("is not an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(not_base("has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(not_base("has a query or fragment, which the API paths cannot follow"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// The response stream's URL: http→ws, https→wss, plus the path.
pub(super) fn stream_url(base: &str) -> String {
    let rest = base.strip_prefix("http").unwrap_or(base);
    format!("ws{rest}{}", super::GatewayCall::Stream.path())
}

/// When a token verified at `now` with `expires_at` (RFC 3339) expires; 30 minutes from `now`
/// when the text does not parse.
pub(super) fn token_expiry(expires_at: &str, now: SystemTime) -> SystemTime {
    match parse_rfc3339(expires_at) {
        Some(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        None => now + ASSUMED_LIFETIME,
    }
}

/// Whether a token expiring at `expires_at` must be renewed at `now`: less than five minutes
/// left, or already expired.
pub(super) fn needs_renewal(expires_at: SystemTime, now: SystemTime) -> bool {
    expires_at.duration_since(now).map_or(true, |left| left < RENEW_BEFORE)
}

/// Seconds since the epoch (0 before it).
pub(super) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch of an RFC 3339 timestamp (`2026-11-23T14:02:11Z`,
/// `2026-11-23T16:02:11.5+02:00`); fractions of a second are dropped. None for anything else or a
/// time before 1970.
pub(super) fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.trim().as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second reads as the next second's start.
    if second > 60 {
        return None;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let (h, m) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The first `max` characters of `body`, marked when cut.
pub(super) fn excerpt(body: &str, max: usize) -> String {
    let body = body.trim();
    match body.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{B256, Signature};
    use serde_json::{Value, json};

    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
    const AT: u64 = 1_790_000_000;

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(AT)
    }

    fn to_json<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn chunk_frames_have_the_documented_shape() {
        let frame = Frame::chunk(7, 3, 2, FrameKind::Reasoning, b"hi there".to_vec(), at());
        assert_eq!(
            to_json(&frame),
            json!({ "type": "chunk", "kind": "reasoning", "jobId": 7, "sessionId": 3, "seq": 2, "totalChunks": 0,
                    "payload": "aGkgdGhlcmU=", "signature": "", "correlationId": "3-7", "ts": AT })
        );
        let stats = Frame::chunk(7, 3, 3, FrameKind::Stats, vec![0xff, 0xfe], at());
        assert_eq!(to_json(&stats)["kind"], "stats");
        assert_eq!(to_json(&stats)["payload"], "//4=");
    }

    #[test]
    fn complete_and_error_frames_omit_kind() {
        let frame = Frame::complete(7, 3, 4, vec![1, 2, 3], "0xsig".into(), at());
        assert_eq!(
            to_json(&frame),
            json!({ "type": "complete", "jobId": 7, "sessionId": 3, "seq": 4, "totalChunks": 4, "payload": "AQID",
                    "signature": "0xsig", "correlationId": "3-7", "ts": AT })
        );
        let nothing_streamed = Frame::complete(7, 3, 0, vec![1], String::new(), at());
        assert_eq!((nothing_streamed.seq, nothing_streamed.total_chunks), (1, 1));
        assert_eq!(
            to_json(&Frame::error(7, 3, at())),
            json!({ "type": "error", "jobId": 7, "sessionId": 3, "seq": 0, "totalChunks": 0, "payload": "",
                    "signature": "", "correlationId": "3-7", "ts": AT })
        );
    }

    #[test]
    fn the_response_fallback_body_carries_the_terminal_frame() {
        let frame = Frame::complete(7, 3, 2, vec![1, 2, 3], "0xsig".into(), at());
        assert_eq!(
            to_json(&frame.response_body()),
            json!({ "sessionId": 3, "seq": 2, "totalChunks": 2, "payload": "AQID", "signature": "0xsig",
                    "correlationId": "3-7" })
        );
    }

    #[test]
    fn heartbeats_carry_lowercase_model_ids_and_never_null_capabilities() {
        let hb = Heartbeat {
            active_jobs: 1,
            max_jobs: 4,
            models: vec![B256::repeat_byte(0xAB)],
            capabilities: vec![],
            llm_ready: false,
            uptime_secs: 90,
        };
        assert_eq!(
            to_json(&HeartbeatBody::new(&hb)),
            json!({ "activeJobs": 1, "maxJobs": 4, "models": [format!("0x{}", "ab".repeat(32))], "capabilities": [],
                    "protocolVersion": 1, "ollamaStatus": "unreachable", "uptimeSeconds": 90 })
        );
        let ready = Heartbeat { llm_ready: true, capabilities: vec!["search".into()], ..hb };
        let body = to_json(&HeartbeatBody::new(&ready));
        assert_eq!((&body["ollamaStatus"], &body["capabilities"]), (&json!("ready"), &json!(["search"])));
    }

    #[test]
    fn personal_sign_recovers_to_the_signer() {
        let signer: PrivateKeySigner = KEY.parse().unwrap();
        let message = b"lcw test gateway sign-in nonce 00ff";
        let hex = personal_sign(&signer, message, "challenge").unwrap();
        assert!(hex.starts_with("0x") && hex.len() == 132, "{hex}");
        let bytes = alloy::hex::decode(&hex).unwrap();
        assert!(matches!(bytes[64], 27 | 28), "v is {}", bytes[64]);
        let signature = Signature::from_raw(&bytes).unwrap();
        assert_eq!(signature.recover_address_from_msg(message).unwrap(), signer.address());
        assert_ne!(signature.recover_address_from_msg(b"another message").unwrap(), signer.address());
    }

    #[test]
    fn tokens_are_renewed_with_less_than_five_minutes_left() {
        let now = at();
        assert!(!needs_renewal(now + Duration::from_secs(30 * 60), now));
        assert!(!needs_renewal(now + RENEW_BEFORE, now));
        assert!(needs_renewal(now + RENEW_BEFORE - Duration::from_secs(1), now));
        assert!(needs_renewal(now, now));
        assert!(needs_renewal(now - Duration::from_secs(60), now));
    }

    #[test]
    fn token_expiry_parses_rfc3339_or_assumes_thirty_minutes() {
        let now = at();
        assert_eq!(token_expiry("2026-11-23T14:02:11Z", now), UNIX_EPOCH + Duration::from_secs(1_795_442_531));
        assert_eq!(token_expiry("not a time", now), now + ASSUMED_LIFETIME);
        assert_eq!(token_expiry("", now), now + ASSUMED_LIFETIME);
    }

    #[test]
    fn rfc3339_timestamps_parse_with_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(parse_rfc3339("2026-11-23T14:02:11Z"), Some(1_795_442_531));
        assert_eq!(parse_rfc3339("2026-11-23T16:02:11.123456789+02:00"), Some(1_795_442_531));
        assert_eq!(parse_rfc3339("2026-11-23T09:32:11-04:30"), Some(1_795_442_531));
        for bad in [
            "2026-11-23 14:02:11Z",
            "2026-11-23T14:02:11",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T14:02:11.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-23T14:02:11+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn gateway_urls_are_validated_and_normalised() {
        assert_eq!(
            base_url("https://worker-gateway.testnet.lightchain.ai/").unwrap(),
            "https://worker-gateway.testnet.lightchain.ai"
        );
        assert_eq!(base_url(" http://127.0.0.1:8080 ").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(base_url("https://proxy.example/gw/").unwrap(), "https://proxy.example/gw");
        let err = |url: &str| base_url(url).unwrap_err().to_string();
        assert!(err("worker-gateway.testnet.lightchain.ai").contains("does not parse"));
        assert!(err("ftp://gw.example").contains("is not an http:// or https:// URL"));
        assert!(err("").contains("is empty"));
        assert!(err("https://gw.example/?key=abc").contains("has a query"));
        let text = err("wss://user:s3cret@gw.example/v2/abcdefghijklmnopqrstuvwxyz");
        assert!(text.contains("wss://***@gw.example/…") && !text.contains("s3cret"), "{text}");
        assert!(text.contains("e.g. https://worker-gateway.testnet.lightchain.ai"), "{text}");
    }

    #[test]
    fn stream_urls_switch_to_websocket_schemes() {
        assert_eq!(stream_url("https://gw.example"), "wss://gw.example/api/stream/responses");
        assert_eq!(stream_url("http://127.0.0.1:9000/gw"), "ws://127.0.0.1:9000/gw/api/stream/responses");
    }
}
