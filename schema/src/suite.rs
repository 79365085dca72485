//! Encryption suites: how a consumer wraps a session key for a worker, and how prompts and
//! responses are sealed with it. One interface, two suites; the suite follows the worker's
//! registered key (65-byte uncompressed P-256 point, or 32-byte X25519 key).
//!
//! - `p256-aesgcm`, wire-compatible with LightChain (upstream.md §5): ECDH on P-256, the raw
//!   32-byte shared X coordinate used directly as the AES-256-GCM key (no KDF), and the 125-byte
//!   wrap `ephemeralPub(65) ‖ nonce(12) ‖ AES-GCM(sessionKey)(32+16)`.
//! - `x25519` (devnet extension): X25519 ECDH, then HKDF-SHA256 with the suite name, the
//!   ephemeral and the recipient public keys bound into `info`, then AES-256-GCM; the 92-byte
//!   wrap `ephemeralPub(32) ‖ nonce(12) ‖ AES-GCM(sessionKey)(32+16)`.
//!
//! In both suites a prompt or response is `nonce(12) ‖ AES-256-GCM(sessionKey, bytes)` with no AAD,
//! exactly as upstream. Secrets are zeroized on drop and their `Debug` is redacted.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of a session key, a suite secret and an AES-256 key.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Length of an uncompressed SEC1 P-256 public key (0x04 ‖ X ‖ Y).
pub const P256_PUBLIC_LEN: usize = 65;
/// Length of an X25519 public key.
pub const X25519_PUBLIC_LEN: usize = 32;

const X25519_HKDF_INFO: &[u8] = b"lcw/x25519-aesgcm/v1/session-key-wrap";

/// Why an encryption step failed. Messages never contain key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SuiteError {
    /// The public key is neither a 65-byte uncompressed P-256 point nor a 32-byte X25519 key.
    #[error(
        "public key of {len} bytes is neither a 65-byte uncompressed P-256 key (0x04 prefix) nor a 32-byte X25519 key"
    )]
    UnknownKeyType {
        /// Length of the key that was given.
        len: usize,
    },
    /// The bytes have the right length for a suite but are not a valid point on its curve.
    #[error("invalid {suite} public key: not a point on the curve")]
    InvalidPublicKey {
        /// The suite whose key was invalid.
        suite: Suite,
    },
    /// A secret key was not a valid scalar for the suite.
    #[error("invalid {suite} secret key")]
    InvalidSecretKey {
        /// The suite whose key was invalid.
        suite: Suite,
    },
    /// A wrapped session key had the wrong length for the suite.
    #[error("wrapped session key is {got} bytes; the {suite} suite uses {expected}")]
    WrappedKeyLength {
        /// The suite of the unwrapping key.
        suite: Suite,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Authenticated decryption failed: wrong key, or corrupted or truncated ciphertext.
    #[error("decryption failed: the data was not sealed for this key, or it is corrupted")]
    DecryptFailed,
    /// A ciphertext is shorter than a nonce and a tag.
    #[error("ciphertext of {len} bytes is too short (at least 28: a 12-byte nonce and a 16-byte tag)")]
    CiphertextTooShort {
        /// Length of the ciphertext.
        len: usize,
    },
    /// X25519 produced an all-zero shared secret (a low-order public key).
    #[error("x25519 key agreement produced an all-zero secret (low-order public key)")]
    NonContributory,
}

/// An encryption suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Suite {
    /// P-256 ECDH + AES-256-GCM, LightChain's wire format.
    #[serde(rename = "p256-aesgcm")]
    P256AesGcm,
    /// X25519 ECDH + HKDF-SHA256 + AES-256-GCM (devnet extension).
    #[serde(rename = "x25519")]
    X25519,
}

impl Suite {
    /// The suite of a registered public key, from its length and prefix.
    pub fn for_public_key(key: &[u8]) -> Result<Suite, SuiteError> {
        match key.len() {
            P256_PUBLIC_LEN if key[0] == 0x04 => Ok(Suite::P256AesGcm),
            X25519_PUBLIC_LEN => Ok(Suite::X25519),
            len => Err(SuiteError::UnknownKeyType { len }),
        }
    }

    /// Canonical name: `p256-aesgcm` or `x25519`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::P256AesGcm => "p256-aesgcm",
            Suite::X25519 => "x25519",
        }
    }

    /// Length of a wrapped session key: 125 (P-256) or 92 (X25519).
    pub fn wrap_len(self) -> usize {
        self.public_len() + NONCE_LEN + KEY_LEN + TAG_LEN
    }

    /// Length of a public key of this suite.
    pub fn public_len(self) -> usize {
        match self {
            Suite::P256AesGcm => P256_PUBLIC_LEN,
            Suite::X25519 => X25519_PUBLIC_LEN,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "p256" | "p256-aesgcm" | "p-256" => Ok(Suite::P256AesGcm),
            "x25519" => Ok(Suite::X25519),
            other => Err(format!("unknown encryption suite `{other}`; use p256 (p256-aesgcm) or x25519")),
        }
    }
}

/// A 32-byte symmetric session key chosen by the consumer.
#[derive(Clone)]
pub struct SessionKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// A fresh random session key.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        SessionKey(bytes)
    }

    /// A session key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SessionKey(Zeroizing::new(bytes))
    }

    /// The raw key. Handle with care: never log it.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Seals `plaintext` as `nonce ‖ ciphertext ‖ tag` with a random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.seal_with_nonce(plaintext, nonce)
    }

    /// Seals with a given nonce (known-answer tests only: a nonce must never repeat under a key).
    pub fn seal_with_nonce(&self, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        aes_seal(&self.0, nonce, plaintext)
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SuiteError> {
        aes_open(&self.0, sealed)
    }
}

/// A worker's (or disputer's) encryption secret for one suite.
pub enum EncryptionSecret {
    /// A P-256 scalar.
    P256(p256::SecretKey),
    /// An X25519 scalar.
    X25519(x25519_dalek::StaticSecret),
}

impl fmt::Debug for EncryptionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionSecret({}, <redacted>)", self.suite())
    }
}

impl EncryptionSecret {
    /// A fresh random secret for `suite`.
    pub fn generate(suite: Suite) -> Self {
        match suite {
            Suite::P256AesGcm => EncryptionSecret::P256(p256::SecretKey::random(&mut rand::rngs::OsRng)),
            Suite::X25519 => {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                rand::rngs::OsRng.fill_bytes(bytes.as_mut());
                EncryptionSecret::X25519(x25519_dalek::StaticSecret::from(*bytes))
            }
        }
    }

    /// A secret from its 32 raw bytes (big-endian scalar for P-256, clamped on use for X25519).
    pub fn from_bytes(suite: Suite, bytes: &[u8; KEY_LEN]) -> Result<Self, SuiteError> {
        match suite {
            Suite::P256AesGcm => p256::SecretKey::from_slice(bytes)
                .map(EncryptionSecret::P256)
                .map_err(|_| SuiteError::InvalidSecretKey { suite }),
            Suite::X25519 => Ok(EncryptionSecret::X25519(x25519_dalek::StaticSecret::from(*bytes))),
        }
    }

    /// The suite of this secret.
    pub fn suite(&self) -> Suite {
        match self {
            EncryptionSecret::P256(_) => Suite::P256AesGcm,
            EncryptionSecret::X25519(_) => Suite::X25519,
        }
    }

    /// The raw 32 secret bytes, for encrypted storage at rest. Never log them.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        match self {
            EncryptionSecret::P256(k) => {
                let mut out = Zeroizing::new([0u8; KEY_LEN]);
                out.copy_from_slice(&k.to_bytes());
                out
            }
            EncryptionSecret::X25519(k) => Zeroizing::new(k.to_bytes()),
        }
    }

    /// The public key as registered on chain: 65-byte uncompressed P-256, or 32-byte X25519.
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            EncryptionSecret::P256(k) => {
                use p256::elliptic_curve::sec1::ToEncodedPoint;
                k.public_key().to_encoded_point(false).as_bytes().to_vec()
            }
            EncryptionSecret::X25519(k) => x25519_dalek::PublicKey::from(k).as_bytes().to_vec(),
        }
    }

    /// Recovers the session key from a wrap made for this secret's public key.
    pub fn unwrap_session_key(&self, wrapped: &[u8]) -> Result<SessionKey, SuiteError> {
        let suite = self.suite();
        if wrapped.len() != suite.wrap_len() {
            return Err(SuiteError::WrappedKeyLength { suite, expected: suite.wrap_len(), got: wrapped.len() });
        }
        let (ephemeral, sealed) = wrapped.split_at(suite.public_len());
        let kek = match self {
            EncryptionSecret::P256(secret) => p256_shared_x(secret, ephemeral)?,
            EncryptionSecret::X25519(secret) => {
                let eph = x25519_public(ephemeral)?;
                let own = x25519_dalek::PublicKey::from(secret);
                x25519_kek(secret, &eph, own.as_bytes())?
            }
        };
        let key = aes_open(&kek, sealed)?;
        let bytes: [u8; KEY_LEN] = key.as_slice().try_into().map_err(|_| SuiteError::DecryptFailed)?;
        Ok(SessionKey::from_bytes(bytes))
    }
}

/// Wraps `session_key` for the holder of `recipient_public_key`; the suite follows the key.
pub fn wrap_session_key(recipient_public_key: &[u8], session_key: &SessionKey) -> Result<Vec<u8>, SuiteError> {
    let suite = Suite::for_public_key(recipient_public_key)?;
    let ephemeral = EncryptionSecret::generate(suite);
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    wrap_session_key_with(recipient_public_key, session_key, &ephemeral, nonce)
}

/// Deterministic wrap with a given ephemeral secret and nonce (known-answer tests only).
pub fn wrap_session_key_with(
    recipient_public_key: &[u8],
    session_key: &SessionKey,
    ephemeral: &EncryptionSecret,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, SuiteError> {
    let suite = Suite::for_public_key(recipient_public_key)?;
    if ephemeral.suite() != suite {
        return Err(SuiteError::InvalidSecretKey { suite });
    }
    let kek = match ephemeral {
        EncryptionSecret::P256(secret) => p256_shared_x(secret, recipient_public_key)?,
        EncryptionSecret::X25519(secret) => {
            let recipient = x25519_public(recipient_public_key)?;
            x25519_kek(secret, &recipient, recipient_public_key)?
        }
    };
    let mut out = ephemeral.public_key();
    out.extend_from_slice(&aes_seal(&kek, nonce, session_key.expose()));
    debug_assert_eq!(out.len(), suite.wrap_len());
    Ok(out)
}

fn p256_shared_x(secret: &p256::SecretKey, peer: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, SuiteError> {
    let suite = Suite::P256AesGcm;
    if peer.len() != P256_PUBLIC_LEN || peer[0] != 0x04 {
        return Err(SuiteError::InvalidPublicKey { suite });
    }
    let peer = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| SuiteError::InvalidPublicKey { suite })?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(shared.raw_secret_bytes());
    Ok(out)
}

fn x25519_public(bytes: &[u8]) -> Result<x25519_dalek::PublicKey, SuiteError> {
    let arr: [u8; X25519_PUBLIC_LEN] =
        bytes.try_into().map_err(|_| SuiteError::InvalidPublicKey { suite: Suite::X25519 })?;
    Ok(x25519_dalek::PublicKey::from(arr))
}

/// X25519 shared secret → HKDF-SHA256 key-encryption key. `info` binds the suite, the ephemeral
/// public key and the recipient public key, so a wrap cannot be replayed under another context.
fn x25519_kek(
    secret: &x25519_dalek::StaticSecret,
    peer: &x25519_dalek::PublicKey,
    recipient_public: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, SuiteError> {
    let shared = secret.diffie_hellman(peer);
    if !shared.was_contributory() {
        return Err(SuiteError::NonContributory);
    }
    let own_public = x25519_dalek::PublicKey::from(secret);
    // The ephemeral key is whichever side is not the recipient.
    let ephemeral_public: &[u8] =
        if own_public.as_bytes() == recipient_public { peer.as_bytes() } else { own_public.as_bytes() };
    let mut info = Vec::with_capacity(X25519_HKDF_INFO.len() + 2 * X25519_PUBLIC_LEN);
    info.extend_from_slice(X25519_HKDF_INFO);
    info.extend_from_slice(ephemeral_public);
    info.extend_from_slice(recipient_public);
    let hk = hkdf::Hkdf::<Sha256>::new(None, shared.as_bytes());
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    hk.expand(&info, out.as_mut()).map_err(|_| SuiteError::DecryptFailed)?;
    Ok(out)
}

fn aes_seal(key: &[u8; KEY_LEN], nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    // AES-GCM encryption only fails for plaintexts over 64 GiB, far beyond a 128 KiB blob.
    let sealed = cipher.encrypt(Nonce::from_slice(&nonce), plaintext).unwrap_or_default();
    out.extend_from_slice(&sealed);
    out
}

fn aes_open(key: &[u8; KEY_LEN], sealed: &[u8]) -> Result<Vec<u8>, SuiteError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(SuiteError::CiphertextTooShort { len: sealed.len() });
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher.decrypt(Nonce::from_slice(nonce), body).map_err(|_| SuiteError::DecryptFailed)
}

#[cfg(test)]
mod tests;
