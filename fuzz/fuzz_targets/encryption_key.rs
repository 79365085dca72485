//! The worker's encryption key at rest (`worker/src/keys.rs`): `<data-dir>/keys/encryption.json`
//! read by `KeyDir::encryption_public` (the header, no password) and `KeyDir::load_encryption`.
//! Input: the file. Files asking for more scrypt work than `lcw_fuzz::kdf` allows are skipped.
//!
//! Asserts: loading never panics; an error never shows the password; a file that decrypts has a
//! header naming the same suite and public key as the secret, does not decrypt under another
//! password (refused as a wrong password), and its secret unwraps a session key wrapped for that
//! public key.

#![no_main]

use lcw_fuzz::{kdf, scratch};
use lcw_schema::suite::{EncryptionSecret, SessionKey, wrap_session_key_with};
use lcw_worker::keys::{KeyDir, KeyError};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "fuzz-password-7c1e";
const OTHER: &str = "another-password";

fuzz_target!(|input: &[u8]| {
    if !kdf::encryption_file_within_budget(input) {
        return;
    }
    let keys = KeyDir::new(scratch::dir());
    std::fs::create_dir_all(keys.path()).expect("the scratch key dir");
    std::fs::write(keys.encryption_path(), input).expect("the scratch key file");

    let header = keys.encryption_public();
    match keys.load_encryption(PASSWORD) {
        Ok(secret) => {
            let (suite, public) = header.expect("a file that decrypts has a readable header");
            assert_eq!(secret.suite(), suite);
            assert_eq!(secret.public_key(), public, "the header names the secret's public key");
            assert!(matches!(keys.load_encryption(OTHER), Err(KeyError::WrongPassword(_))));
            let session = SessionKey::from_bytes([3; 32]);
            let ephemeral = EncryptionSecret::from_bytes(suite, &[0x42; 32]).expect("a valid scalar");
            let wrapped = wrap_session_key_with(&public, &session, &ephemeral, [9; 12]).expect("a wrap for it");
            let unwrapped = secret.unwrap_session_key(&wrapped).expect("the secret unwraps a wrap for its key");
            assert_eq!(unwrapped.expose(), session.expose());
        }
        Err(e) => {
            let text = e.to_string();
            let echoed = input.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes());
            assert!(echoed || !text.contains(PASSWORD), "an error shows the password: {text}");
        }
    }
});
