//! The test gateway's checks, without I/O: JSON bodies read field by field with their types,
//! response frames against the protocol and the job's earlier frames, EIP-191 signatures, and
//! strict base64 (written here, apart from the client's encoder, to check it).

use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, Signature};
use serde_json::{Map, Value};

use super::{JobSeen, Record, RecordedFrame, Via};

/// A JSON object's fields read with their types checked; every problem is collected.
pub(super) struct Fields {
    pub(super) object: Map<String, Value>,
    pub(super) problems: Vec<String>,
}

impl Fields {
    /// Parses `body` as an object with exactly the `required` keys and any of the `optional`.
    pub(super) fn parse(body: &[u8], required: &[&str], optional: &[&str]) -> Fields {
        let mut problems = Vec::new();
        let object = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o,
            Ok(other) => {
                problems.push(format!("body is not a JSON object: {other}"));
                Map::new()
            }
            Err(e) => {
                problems.push(format!("body is not JSON: {e}"));
                Map::new()
            }
        };
        if problems.is_empty() {
            for key in object.keys() {
                if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
                    problems.push(format!("unknown field `{key}`"));
                }
            }
            for key in required {
                if !object.contains_key(*key) {
                    problems.push(format!("field `{key}` is missing"));
                }
            }
        }
        Fields { object, problems }
    }

    pub(super) fn uint(&mut self, key: &str, max: u64) -> u64 {
        match self.object.get(key) {
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => n,
                _ => {
                    self.problems.push(format!("field `{key}` is {v}, not an integer in 0..={max}"));
                    0
                }
            },
            None => 0,
        }
    }

    pub(super) fn string(&mut self, key: &str) -> String {
        match self.object.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                self.problems.push(format!("field `{key}` is {v}, not a string"));
                String::new()
            }
            None => String::new(),
        }
    }

    pub(super) fn strings(&mut self, key: &str) -> Vec<String> {
        match self.object.get(key) {
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            }
            Some(v) => {
                self.problems.push(format!("field `{key}` is {v}, not an array of strings"));
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}

/// A frame's fields, types already checked.
pub(super) struct Incoming {
    pub(super) frame_type: String,
    pub(super) kind: Option<String>,
    pub(super) job_id: u64,
    pub(super) session_id: u64,
    pub(super) seq: u64,
    pub(super) total_chunks: u64,
    pub(super) payload: String,
    pub(super) signature: String,
    pub(super) correlation_id: String,
    /// None for the HTTP fallback, which has no `ts`.
    pub(super) ts: Option<u64>,
}

/// Checks a frame against the protocol and the job's earlier frames, records it, and returns
/// the problems.
pub(super) fn check_frame(r: &mut Record, expected: Address, via: Via, f: Incoming) -> Vec<String> {
    let mut problems = Vec::new();
    let payload = decode_base64(&f.payload).unwrap_or_else(|problem| {
        problems.push(format!("payload is not standard padded base64: {problem}"));
        Vec::new()
    });
    if let Some(kind) = &f.kind
        && !matches!(kind.as_str(), "text" | "reasoning" | "artifact" | "audio" | "stats")
    {
        problems.push(format!("kind `{kind}` is not one the protocol knows (and an empty kind is omitted)"));
    }
    if f.correlation_id != format!("{}-{}", f.session_id, f.job_id) {
        problems.push(format!("correlationId `{}` is not `<sessionId>-<jobId>`", f.correlation_id));
    }
    if let Some(ts) = f.ts {
        let now = UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs());
        if ts.abs_diff(now) > 300 {
            problems.push(format!("ts {ts} is not the time now ({now}) in unix seconds"));
        }
    }
    let job = r.jobs.entry(f.job_id).or_insert_with(|| JobSeen { session_id: f.session_id, ..JobSeen::default() });
    if job.session_id != f.session_id {
        problems.push(format!("session {} differs from the job's earlier frames' {}", f.session_id, job.session_id));
    }
    if job.ended {
        problems.push(format!("a {} frame after the job's terminal frame", f.frame_type));
    }
    match f.frame_type.as_str() {
        "chunk" => {
            if f.total_chunks != 0 {
                problems.push(format!("totalChunks is {} on a chunk, not 0", f.total_chunks));
            }
            if f.seq != job.last_seq + 1 {
                problems.push(format!("seq {} does not follow {} (chunks count from 1)", f.seq, job.last_seq));
            }
            if !f.signature.is_empty() {
                problems.push("a chunk is signed; only the complete frame is".into());
            }
            job.last_seq = f.seq;
            job.chunks += 1;
        }
        "complete" => {
            if f.seq != f.total_chunks || f.seq != job.chunks + 1 {
                problems.push(format!(
                    "seq {} and totalChunks {} should both be {} (the {} chunks seen plus this frame)",
                    f.seq,
                    f.total_chunks,
                    job.chunks + 1,
                    job.chunks
                ));
            }
            if payload.is_empty() {
                problems.push("the complete frame carries no ciphertext".into());
            }
            match recover(&f.signature, &payload) {
                Ok(signer) if signer == expected => {}
                Ok(signer) => problems.push(format!("signed by {signer}, not by the expected worker {expected}")),
                Err(problem) => problems.push(problem),
            }
            job.ended = true;
        }
        "error" => {
            if !payload.is_empty() || !f.signature.is_empty() {
                problems.push("an error frame carries a payload or a signature".into());
            }
            job.ended = true;
        }
        "metadata" => {
            if !f.signature.is_empty() {
                problems.push("a metadata frame is signed".into());
            }
        }
        other => problems.push(format!("type `{other}` is not chunk, complete, error or metadata")),
    }
    r.frames.push(RecordedFrame {
        via,
        frame_type: f.frame_type,
        kind: f.kind,
        job_id: f.job_id,
        session_id: f.session_id,
        seq: f.seq,
        total_chunks: f.total_chunks,
        payload,
        signature: f.signature,
        correlation_id: f.correlation_id,
    });
    problems
}

/// The signer of an EIP-191 `personal_sign` signature (0x, 65 bytes, v 27 or 28) over `message`.
pub fn recover(signature: &str, message: &[u8]) -> Result<Address, String> {
    let Some(hex) = signature.strip_prefix("0x") else {
        return Err(format!("signature `{signature}` lacks the 0x prefix"));
    };
    if hex.len() != 130 {
        return Err(format!("signature has {} hex digits, not 130 (65 bytes)", hex.len()));
    }
    let bytes = alloy::hex::decode(hex).map_err(|e| format!("signature is not hex: {e}"))?;
    if !matches!(bytes[64], 27 | 28) {
        return Err(format!("signature's v is {}, not 27 or 28", bytes[64]));
    }
    let parsed = Signature::from_raw(&bytes).map_err(|e| format!("signature does not parse: {e}"))?;
    parsed.recover_address_from_msg(message).map_err(|e| format!("no signer recovers from the signature: {e}"))
}

/// Standard-alphabet base64 with padding, strictly: the length a multiple of 4, `=` only at the
/// end, unused bits zero.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!("length {} is not a multiple of 4", bytes.len()));
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, quad) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(format!("misplaced padding in quad {i}"));
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | value(c).ok_or_else(|| format!("`{}` is not in the standard alphabet", c as char))?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        if decoded[3 - pad..].iter().any(|&b| b != 0) {
            return Err(format!("non-zero unused bits in quad {i}"));
        }
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

/// RFC 3339 in UTC, seconds precision (Go's `time.RFC3339`).
pub(super) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn base64_decoding_is_strict() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("aGkgdGhlcmU=").unwrap(), b"hi there");
        assert_eq!(decode_base64("//4=").unwrap(), [0xff, 0xfe]);
        assert_eq!(decode_base64("AQID").unwrap(), [1, 2, 3]);
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        for bad in ["YQ", "YR==", "Y===", "YQ==YQ==", "a-b_", "aGk!"] {
            assert!(decode_base64(bad).is_err(), "{bad}");
        }
    }

    fn chunk(job: u64, seq: u64) -> Incoming {
        Incoming {
            frame_type: "chunk".into(),
            kind: Some("text".into()),
            job_id: job,
            session_id: 3,
            seq,
            total_chunks: 0,
            payload: "AQID".into(),
            signature: String::new(),
            correlation_id: format!("3-{job}"),
            ts: Some(UNIX_EPOCH.elapsed().unwrap().as_secs()),
        }
    }

    /// A complete frame over the payload `abc`, signed by `signer`.
    fn complete(signer: &alloy::signers::local::PrivateKeySigner, job: u64, seq: u64) -> Incoming {
        use alloy::signers::SignerSync;
        let signature = signer.sign_message_sync(b"abc").unwrap();
        Incoming {
            frame_type: "complete".into(),
            kind: None,
            seq,
            total_chunks: seq,
            payload: "YWJj".into(),
            signature: alloy::hex::encode_prefixed(signature.as_bytes()),
            ..chunk(job, seq)
        }
    }

    #[test]
    fn frames_are_checked_against_the_jobs_earlier_frames() {
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let me = signer.address();
        let mut r = Record::new();
        assert_eq!(check_frame(&mut r, me, Via::Socket, chunk(1, 1)), Vec::<String>::new());
        assert_eq!(check_frame(&mut r, me, Via::Socket, chunk(1, 2)), Vec::<String>::new());
        assert_eq!(check_frame(&mut r, me, Via::Socket, complete(&signer, 1, 3)), Vec::<String>::new());

        let problems = |r: &mut Record, f| check_frame(r, me, Via::Socket, f).join("; ");
        assert!(problems(&mut r, chunk(1, 4)).contains("after the job's terminal frame"));
        assert!(problems(&mut r, chunk(2, 2)).contains("seq 2 does not follow 0"));
        let p = problems(&mut r, Incoming { total_chunks: 5, signature: "0x00".into(), ..chunk(3, 1) });
        assert!(p.contains("totalChunks is 5 on a chunk") && p.contains("a chunk is signed"), "{p}");
        let p = problems(&mut r, Incoming { correlation_id: "4-3".into(), payload: "AQI".into(), ..chunk(4, 1) });
        assert!(p.contains("correlationId `4-3`") && p.contains("not standard padded base64"), "{p}");
        let p = problems(&mut r, Incoming { kind: Some("video".into()), ts: Some(5), ..chunk(5, 1) });
        assert!(p.contains("kind `video`") && p.contains("ts 5 is not the time now"), "{p}");
        assert!(problems(&mut r, complete(&signer, 6, 2)).contains("should both be 1"));
        let stranger = alloy::signers::local::PrivateKeySigner::random();
        assert!(problems(&mut r, complete(&stranger, 7, 1)).contains("not by the expected worker"));
        let mut v0 = complete(&signer, 8, 1);
        v0.signature.replace_range(130.., "00");
        assert!(problems(&mut r, v0).contains("v is 0, not 27 or 28"));
        assert!(problems(&mut r, Incoming { frame_type: "done".into(), ..chunk(9, 1) }).contains("type `done`"));
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_442_531)), "2026-11-23T14:02:11Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_208_000)), "2024-02-29T12:00:00Z");
    }
}
