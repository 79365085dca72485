//! One job's local work, in two steps the pipeline schedules separately:
//!
//! - [`open`]: fetch the prompt blob and decrypt it with the session key. It runs before the
//!   ack, so a prompt that cannot be opened is refused without one;
//! - [`infer`]: run the model, seal the answer and pack it into a blob sidecar.
//!
//! Both are bounded by a deadline the pipeline derives from chain time. An answer never fails
//! for its size: one that would not fit one blob is cut to fit, at a character boundary, and
//! says so.

use std::time::{Duration, Instant};

use alloy::eips::eip4844::BlobTransactionSidecar;
use alloy::primitives::{B256, keccak256};
use lcw_schema::profile::redact_urls;
use lcw_schema::suite::SessionKey;
use zeroize::Zeroizing;

use crate::blobs::{BlobError, BlobSource};
use crate::llm::{Generation, Llm};

/// The most plaintext bytes an answer may have for its sealed form to fit one blob.
pub fn answer_capacity() -> usize {
    let overhead = SessionKey::from_bytes([0; 32]).seal(b"").len();
    lcw_schema::blob::MAX_PAYLOAD.saturating_sub(overhead)
}

/// Bytes one generated token can take, at most, in the vocabularies of common models (long
/// runs of code indentation and whitespace); used to tell whether `--num-predict` tokens can
/// always fit one blob.
pub const MAX_BYTES_PER_TOKEN: usize = 16;

/// The most tokens a job may generate: `--num-predict`, lowered to the model's on-chain limit
/// (`getModelMaxOutputTokens`, 0 meaning none). Fails when even that many tokens could overflow
/// one blob, with the largest value that always fits.
pub fn token_limit(num_predict: u32, model: &str, on_chain_max: u64) -> Result<u32, String> {
    // The on-chain limit is chain state: any u64, lowered here to a u32 without truncating.
    let limit = match u32::try_from(on_chain_max) {
        Ok(max) if max > 0 => num_predict.min(max),
        _ => num_predict,
    };
    let fits = u32::try_from(answer_capacity() / MAX_BYTES_PER_TOKEN).unwrap_or(u32::MAX);
    if limit > fits {
        return Err(format!(
            "--num-predict {num_predict} cannot fit: an answer of {limit} tokens for {model} can take up to {} bytes \
             sealed, and one blob holds {} (a completion carries exactly one); use --num-predict {fits} or less",
            u64::from(limit).saturating_mul(MAX_BYTES_PER_TOKEN as u64),
            lcw_schema::blob::MAX_PAYLOAD
        ));
    }
    Ok(limit)
}

/// A prompt, opened. Wiped from memory when dropped.
pub struct Prompt {
    text: Zeroizing<String>,
    /// Fetching the blob.
    pub fetch: Duration,
    /// Decrypting it.
    pub decrypt: Duration,
}

impl std::fmt::Debug for Prompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prompt({} bytes)", self.text.len())
    }
}

/// Why a step failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// For the operator: logged, kept in the run's summary and printed by `lcw work --json`.
    /// Built through [`Failure::permanent`] and [`Failure::transient`], which redact its URLs (a
    /// node's or a transport's error may quote one, API key included).
    pub reason: String,
    /// Trying again cannot help.
    pub permanent: bool,
    /// The LLM server itself failed (unreachable, overloaded, timed out): no new job should be
    /// acked until it answers again.
    pub llm_down: bool,
}

impl Failure {
    /// A failure that trying again cannot fix.
    pub fn permanent(reason: impl std::fmt::Display) -> Self {
        Failure { reason: redact_urls(&reason.to_string()), permanent: true, llm_down: false }
    }

    /// A failure that may pass.
    pub fn transient(reason: impl std::fmt::Display) -> Self {
        Failure { reason: redact_urls(&reason.to_string()), permanent: false, llm_down: false }
    }

    /// What the LLM server answered (may pass).
    pub fn llm(e: &crate::llm::LlmError) -> Self {
        Failure { llm_down: e.is_outage(), ..Failure::transient(e) }
    }
}

/// Fetches the prompt blob `hash` (posted in or before `near_block`) and opens it with `key`,
/// all by `deadline`.
pub async fn open(
    blobs: &BlobSource,
    key: &SessionKey,
    hash: B256,
    near_block: u64,
    deadline: Instant,
) -> Result<Prompt, Failure> {
    let t = Instant::now();
    let payload = match blobs.fetch_until(hash, near_block, deadline).await {
        Ok(p) => p,
        // anvil answers from memory: a blob it does not have now, it never will.
        Err(e @ BlobError::NotFound { .. }) if matches!(blobs, BlobSource::Anvil(_)) => {
            return Err(Failure::permanent(e.to_string()));
        }
        Err(e @ BlobError::Decode { .. }) => return Err(Failure::permanent(e.to_string())),
        Err(e) => return Err(Failure::transient(e.to_string())),
    };
    let fetch = t.elapsed();
    let t = Instant::now();
    let text = decrypt(key, &payload).map_err(Failure::permanent)?;
    Ok(Prompt { text, fetch, decrypt: t.elapsed() })
}

fn decrypt(key: &SessionKey, payload: &[u8]) -> Result<Zeroizing<String>, String> {
    let plain = Zeroizing::new(
        key.open(payload).map_err(|e| format!("the prompt does not decrypt with the session key: {e}"))?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| "the decrypted prompt is not UTF-8 text".to_owned())?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// A job's answer, ready to post: what the model said, sealed with the session key and packed
/// into a blob sidecar, with the time each step took.
#[derive(Debug)]
pub struct Answer {
    /// The model's generation (plain text; never logged).
    pub generation: Generation,
    /// The sealed response, as posted in the blob.
    pub ciphertext: Vec<u8>,
    /// The response blob with its KZG commitment and proof.
    pub sidecar: BlobTransactionSidecar,
    /// Its versioned hash (`completeJob`'s responseBlobHash).
    pub versioned_hash: B256,
    /// keccak256 of the ciphertext (`completeJob`'s responseCiphertextHash).
    pub ciphertext_hash: B256,
    /// Prompt decryption.
    pub decrypt: Duration,
    /// Model inference.
    pub inference: Duration,
    /// Response encryption and blob sidecar.
    pub encrypt: Duration,
    /// Bytes cut from the end of the answer so that it fits one blob (0 almost always).
    pub truncated: usize,
}

/// Runs `prompt` on `model` (at most `limit`), seals the answer and packs the blob.
pub async fn infer(
    llm: &Llm,
    model: &str,
    key: &SessionKey,
    prompt: &Prompt,
    limit: Duration,
) -> Result<Answer, Failure> {
    let t = Instant::now();
    let mut generation = tokio::time::timeout(limit, llm.generate(model, &prompt.text))
        .await
        .map_err(|_| {
            Failure::transient(format!(
                "inference did not finish within the {} s left before the deadline",
                limit.as_secs()
            ))
        })?
        .map_err(|e| Failure::llm(&e))?;
    let inference = t.elapsed();
    let t = Instant::now();
    let truncated = fit(&mut generation.text, answer_capacity());
    let ciphertext = key.seal(generation.text.as_bytes());
    let sidecar =
        lcw_schema::blob::sidecar(&[&ciphertext]).map_err(|e| Failure::permanent(format!("response blob: {e}")))?;
    let versioned_hash = lcw_schema::blob::versioned_hashes(&sidecar)
        .first()
        .copied()
        .ok_or_else(|| Failure::permanent("response blob: the sidecar has no blob"))?;
    let encrypt = t.elapsed();
    let ciphertext_hash = keccak256(&ciphertext);
    Ok(Answer {
        generation,
        ciphertext,
        sidecar,
        versioned_hash,
        ciphertext_hash,
        decrypt: prompt.decrypt,
        inference,
        encrypt,
        truncated,
    })
}

/// Cuts `text` to at most `capacity` bytes at a character boundary; returns the bytes cut.
fn fit(text: &mut String, capacity: usize) -> usize {
    if text.len() <= capacity {
        return 0;
    }
    let end = text.floor_char_boundary(capacity);
    let cut = text.len().saturating_sub(end);
    text.truncate(end);
    cut
}

/// The local part of a job in one go, for `lcw speedtest`: opens the prompt `payload` with the
/// session key, runs it on `model` (at most `limit`), seals the answer and packs the blob.
/// Errors say which step failed.
pub async fn answer(
    llm: &Llm,
    model: &str,
    key: &SessionKey,
    payload: &[u8],
    limit: Duration,
) -> Result<Answer, String> {
    let t = Instant::now();
    let text = decrypt(key, payload)?;
    let prompt = Prompt { text, fetch: Duration::ZERO, decrypt: t.elapsed() };
    infer(llm, model, key, &prompt, limit).await.map_err(|f| f.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_cut_to_fit_at_a_character_boundary() {
        let mut s = "héllo".to_owned();
        assert_eq!(fit(&mut s, 10), 0);
        assert_eq!(s, "héllo");
        // "h" + 2-byte "é": a cut at 2 would split it.
        assert_eq!(fit(&mut s, 2), 5);
        assert_eq!(s, "h");
        let mut big = "x".repeat(answer_capacity() + 10);
        assert_eq!(fit(&mut big, answer_capacity()), 10);
        let sealed = SessionKey::generate().seal(big.as_bytes());
        assert_eq!(sealed.len(), lcw_schema::blob::MAX_PAYLOAD, "the largest answer fills one blob exactly");
        assert!(lcw_schema::blob::sidecar(&[&sealed]).is_ok());
    }

    #[test]
    fn the_token_limit_follows_the_chain_and_the_blob() {
        assert_eq!(token_limit(1024, "m", 256), Ok(256), "the model's on-chain limit lowers it");
        assert_eq!(token_limit(1024, "m", 0), Ok(1024), "no on-chain limit");
        assert_eq!(token_limit(100, "m", 256), Ok(100));
        let fits = (answer_capacity() / MAX_BYTES_PER_TOKEN) as u32;
        assert_eq!(token_limit(fits, "m", 0), Ok(fits));
        let err = token_limit(65_536, "m", 0).unwrap_err();
        assert!(
            err.contains("--num-predict 65536 cannot fit") && err.contains(&format!("--num-predict {fits}")),
            "{err}"
        );
        // The chain's limit can make a large --num-predict harmless.
        assert_eq!(token_limit(65_536, "m", 2048), Ok(2048));
        // An on-chain limit past u32 is no lower than --num-predict.
        assert_eq!(token_limit(100, "m", u64::MAX), Ok(100));
    }
}
