//! Known-answer tests: the vectors come from `schema/kat/suite_vectors.py`, computed with
//! pyca/cryptography, an implementation independent of the RustCrypto crates used here.

use super::*;
use alloy::hex;

const P256_WORKER_SECRET: &str = "9b0c9216bec03ccc80596c949609a7fb8da9d200e0b7141845951da22d9b8830";
const P256_EPHEMERAL_SECRET: &str = "57a6218f2382c35550191e810a95dda273be8dd1971647f36354c73c506d24c6";
const P256_WORKER_PUBLIC: &str = "04129883d8ca1e9da5ecba14a9a53688df627e2c96ebef94c9ae87c39672f7128b9599f0233354ebb0d717c4dfcd62355e011d0c44d2a8ac5d860cb75415c230aa";
const P256_WRAP: &str = "04d9462829b3c54d0aa10136d4afea02aae9ceb26e45a4d20380c344b2caac5b02f59bad9dfc6e0d45bb061510ef5985c9c7eb0ef63d2f6874cf0828b521a970fa000102030405060708090a0bbf992c3869974fa0e535d058a44b9aea4d9dff0ab1973e30f388948094b8e40cf119582aaa5441abf7da7d4089d233f1";
const X25519_WORKER_SECRET: &str = "cede928457496b6773dd494ebfdfa94ee1a3ab9320696bfbe1b65c91601d3f62";
const X25519_EPHEMERAL_SECRET: &str = "e227033839b171645e6580ea88fcadc2233c44dd25e5d346eedcd4b37f242dec";
const X25519_WORKER_PUBLIC: &str = "79499917646076a5d7200379cdd83d24576ccb7ef803dba1274c4c315c96d73a";
const X25519_WRAP: &str = "aad6c5544f5d8445f82e16e65413272f98a8f13eac95519568f776b6750a5d03000102030405060708090a0be4bee2d61ec597846953daedf4848b1432a2a64fd63c5a2d75e1816b46a268e60d9c63a4dc7ae890e078680fa27a1ead";
const SEALED_PROMPT: &str =
    "0c0d0e0f1011121314151617ac5b2350144968cdbb30c4979db98cb2dce505291363fde1417574c5f5b4ec23f3a767";

fn key32(h: &str) -> [u8; 32] {
    hex::decode(h).unwrap().try_into().unwrap()
}

fn kat_session_key() -> SessionKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = 32 + i as u8;
    }
    SessionKey::from_bytes(k)
}

fn nonce() -> [u8; NONCE_LEN] {
    core::array::from_fn(|i| i as u8)
}

#[test]
fn p256_public_key_matches_reference() {
    let worker = EncryptionSecret::from_bytes(Suite::P256AesGcm, &key32(P256_WORKER_SECRET)).unwrap();
    assert_eq!(hex::encode(worker.public_key()), P256_WORKER_PUBLIC);
}

#[test]
fn p256_wrap_matches_reference_125_bytes() {
    let eph = EncryptionSecret::from_bytes(Suite::P256AesGcm, &key32(P256_EPHEMERAL_SECRET)).unwrap();
    let public = hex::decode(P256_WORKER_PUBLIC).unwrap();
    let wrap = wrap_session_key_with(&public, &kat_session_key(), &eph, nonce()).unwrap();
    assert_eq!(wrap.len(), 125);
    assert_eq!(hex::encode(&wrap), P256_WRAP);
}

#[test]
fn p256_unwraps_reference_wrap() {
    let worker = EncryptionSecret::from_bytes(Suite::P256AesGcm, &key32(P256_WORKER_SECRET)).unwrap();
    let key = worker.unwrap_session_key(&hex::decode(P256_WRAP).unwrap()).unwrap();
    assert_eq!(key.expose(), kat_session_key().expose());
}

#[test]
fn x25519_wrap_matches_reference_92_bytes() {
    let worker = EncryptionSecret::from_bytes(Suite::X25519, &key32(X25519_WORKER_SECRET)).unwrap();
    assert_eq!(hex::encode(worker.public_key()), X25519_WORKER_PUBLIC);
    let eph = EncryptionSecret::from_bytes(Suite::X25519, &key32(X25519_EPHEMERAL_SECRET)).unwrap();
    let wrap = wrap_session_key_with(&worker.public_key(), &kat_session_key(), &eph, nonce()).unwrap();
    assert_eq!(wrap.len(), 92);
    assert_eq!(hex::encode(&wrap), X25519_WRAP);
    let key = worker.unwrap_session_key(&wrap).unwrap();
    assert_eq!(key.expose(), kat_session_key().expose());
}

#[test]
fn content_seal_matches_reference() {
    let n: [u8; NONCE_LEN] = core::array::from_fn(|i| 12 + i as u8);
    let sealed = kat_session_key().seal_with_nonce(b"Name three colours.", n);
    assert_eq!(hex::encode(&sealed), SEALED_PROMPT);
    assert_eq!(kat_session_key().open(&sealed).unwrap(), b"Name three colours.");
}

#[test]
fn random_round_trip_both_suites() {
    for suite in [Suite::P256AesGcm, Suite::X25519] {
        let worker = EncryptionSecret::generate(suite);
        let session = SessionKey::generate();
        let wrap = wrap_session_key(&worker.public_key(), &session).unwrap();
        assert_eq!(wrap.len(), suite.wrap_len());
        assert_eq!(Suite::for_public_key(&worker.public_key()).unwrap(), suite);
        let back = worker.unwrap_session_key(&wrap).unwrap();
        assert_eq!(back.expose(), session.expose());
        let restored = EncryptionSecret::from_bytes(suite, &worker.to_bytes()).unwrap();
        assert_eq!(restored.public_key(), worker.public_key());
    }
}

#[test]
fn wrong_key_or_tampering_fails_to_decrypt() {
    let worker = EncryptionSecret::generate(Suite::P256AesGcm);
    let other = EncryptionSecret::generate(Suite::P256AesGcm);
    let session = SessionKey::generate();
    let mut wrap = wrap_session_key(&worker.public_key(), &session).unwrap();
    assert_eq!(other.unwrap_session_key(&wrap).unwrap_err(), SuiteError::DecryptFailed);
    wrap[100] ^= 1;
    assert_eq!(worker.unwrap_session_key(&wrap).unwrap_err(), SuiteError::DecryptFailed);
    let sealed = session.seal(b"hello");
    assert_eq!(SessionKey::generate().open(&sealed).unwrap_err(), SuiteError::DecryptFailed);
    assert_eq!(session.open(&sealed[..20]).unwrap_err(), SuiteError::CiphertextTooShort { len: 20 });
}

#[test]
fn suite_mismatch_and_bad_keys_are_reported() {
    let x = EncryptionSecret::generate(Suite::X25519);
    let p = EncryptionSecret::generate(Suite::P256AesGcm);
    let wrap = wrap_session_key(&p.public_key(), &SessionKey::generate()).unwrap();
    assert_eq!(
        x.unwrap_session_key(&wrap).unwrap_err(),
        SuiteError::WrappedKeyLength { suite: Suite::X25519, expected: 92, got: 125 }
    );
    assert_eq!(Suite::for_public_key(&[4u8; 33]).unwrap_err(), SuiteError::UnknownKeyType { len: 33 });
    let mut not_on_curve = vec![4u8; 65];
    not_on_curve[1] = 0xff;
    assert_eq!(
        wrap_session_key(&not_on_curve, &SessionKey::generate()).unwrap_err(),
        SuiteError::InvalidPublicKey { suite: Suite::P256AesGcm }
    );
    assert_eq!(wrap_session_key(&[0u8; 32], &SessionKey::generate()).unwrap_err(), SuiteError::NonContributory);
}

#[test]
fn debug_output_never_shows_key_material() {
    let s = SessionKey::from_bytes([0xab; 32]);
    assert_eq!(format!("{s:?}"), "SessionKey(<redacted>)");
    let e = EncryptionSecret::from_bytes(Suite::X25519, &[0xcd; 32]).unwrap();
    assert!(!format!("{e:?}").contains("cd"));
}

#[test]
fn suite_names_parse() {
    assert_eq!("p256".parse::<Suite>().unwrap(), Suite::P256AesGcm);
    assert_eq!("p256-aesgcm".parse::<Suite>().unwrap(), Suite::P256AesGcm);
    assert_eq!("X25519".parse::<Suite>().unwrap(), Suite::X25519);
    assert!("rsa".parse::<Suite>().is_err());
}
