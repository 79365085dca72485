//! The encryption suites' open path (`lcw_schema::suite`): what a worker does with a session's
//! wrapped key and a prompt, both read from the chain or a blob, so attacker-shaped. The first
//! input byte picks the mode:
//!
//! - 0 `key(32) sealed..`: `SessionKey::open` never panics; what it opens, sealing again with the
//!   same nonce gives back byte for byte (AES-GCM under one key and nonce is a bijection);
//! - 1 `key(32) nonce(12) flip(2) plaintext..`: seal then open is the identity; the sealed bytes
//!   with one bit flipped, or one byte short, never open;
//! - 2 / 3 `secret(32) wrapped..`: `unwrap_session_key` of a P-256 / X25519 secret never panics,
//!   and refuses any wrap of the wrong length by its length;
//! - 4 `suite(1) recipient(32) ephemeral(32) nonce(12) key(32) flip(2)`: a wrap made for the
//!   recipient unwraps to the session key; with one bit flipped anywhere it does not unwrap, and
//!   another secret (with another public key) does not unwrap it either;
//! - 5 `suite(1) public..`: wrapping for any registered public key never panics (invalid points
//!   and low-order X25519 keys are refused).

#![no_main]

use lcw_schema::suite::{EncryptionSecret, KEY_LEN, NONCE_LEN, SessionKey, Suite, SuiteError, wrap_session_key_with};
use libfuzzer_sys::fuzz_target;

/// Splits `n` bytes off the front, or None when there are not that many.
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Some(head)
}

fn array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    take(input, N).and_then(|b| b.try_into().ok())
}

fn suite(b: u8) -> Suite {
    if b & 1 == 0 { Suite::P256AesGcm } else { Suite::X25519 }
}

/// `bytes` with bit `flip` (a position over all bits) inverted.
fn flipped(bytes: &[u8], flip: [u8; 2]) -> Vec<u8> {
    let bit = usize::from(u16::from_be_bytes(flip)) % (bytes.len() * 8);
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

fn open_any(mut input: &[u8]) -> Option<()> {
    let key = SessionKey::from_bytes(array(&mut input)?);
    let sealed = input;
    if let Ok(plain) = key.open(sealed) {
        let nonce: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
        assert_eq!(key.seal_with_nonce(&plain, nonce), sealed, "open then seal is the identity");
    }
    Some(())
}

fn seal_then_open(mut input: &[u8]) -> Option<()> {
    let key = SessionKey::from_bytes(array(&mut input)?);
    let nonce = array(&mut input)?;
    let flip = array(&mut input)?;
    let plain = input;
    let sealed = key.seal_with_nonce(plain, nonce);
    assert_eq!(key.open(&sealed).as_deref(), Ok(plain), "open(seal(p)) == p");
    assert!(key.open(&flipped(&sealed, flip)).is_err(), "a flipped bit is detected");
    assert!(key.open(&sealed[..sealed.len() - 1]).is_err(), "a truncated ciphertext is detected");
    Some(())
}

fn unwrap_any(suite: Suite, mut input: &[u8]) -> Option<()> {
    let secret = EncryptionSecret::from_bytes(suite, &array(&mut input)?).ok()?;
    let wrapped = input;
    let result = secret.unwrap_session_key(wrapped);
    if wrapped.len() != suite.wrap_len() {
        assert!(matches!(result, Err(SuiteError::WrappedKeyLength { .. })), "{result:?}");
    }
    Some(())
}

fn wrap_then_unwrap(mut input: &[u8]) -> Option<()> {
    let suite = suite(array::<1>(&mut input)?[0]);
    let recipient = EncryptionSecret::from_bytes(suite, &array(&mut input)?).ok()?;
    let ephemeral = EncryptionSecret::from_bytes(suite, &array(&mut input)?).ok()?;
    let nonce = array(&mut input)?;
    let key = SessionKey::from_bytes(array::<KEY_LEN>(&mut input)?);
    let flip = array(&mut input)?;
    let public = recipient.public_key();
    let wrapped = match wrap_session_key_with(&public, &key, &ephemeral, nonce) {
        Ok(w) => w,
        // The one refusal of a valid pair: X25519 with an all-zero shared secret.
        Err(SuiteError::NonContributory) => return None,
        Err(e) => panic!("wrapping for a valid {suite} key: {e}"),
    };
    assert_eq!(wrapped.len(), suite.wrap_len());
    let unwrapped = recipient.unwrap_session_key(&wrapped).expect("the recipient unwraps its own wrap");
    assert_eq!(unwrapped.expose(), key.expose(), "unwrap(wrap(k)) == k");
    assert!(recipient.unwrap_session_key(&flipped(&wrapped, flip)).is_err(), "a flipped bit is detected");
    if ephemeral.public_key() != public {
        assert!(ephemeral.unwrap_session_key(&wrapped).is_err(), "another secret does not unwrap it");
    }
    Some(())
}

fn wrap_for_any(mut input: &[u8]) -> Option<()> {
    let ephemeral = EncryptionSecret::from_bytes(suite(array::<1>(&mut input)?[0]), &[0x42; KEY_LEN]).ok()?;
    let public = input;
    let key = SessionKey::from_bytes([7; KEY_LEN]);
    if let Ok(wrapped) = wrap_session_key_with(public, &key, &ephemeral, [1; NONCE_LEN]) {
        assert_eq!(Suite::for_public_key(public), Ok(ephemeral.suite()));
        assert_eq!(wrapped.len(), ephemeral.suite().wrap_len());
    }
    Some(())
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let _ = match mode {
        0 => open_any(rest),
        1 => seal_then_open(rest),
        2 => unwrap_any(Suite::P256AesGcm, rest),
        3 => unwrap_any(Suite::X25519, rest),
        4 => wrap_then_unwrap(rest),
        _ => wrap_for_any(rest),
    };
});
