//! Signing keystores (geth v3 JSON) as lcw loads them: `lcw_chain::keys::load_keystore` (every
//! command that signs) and the worker's `KeyDir::load_signer` / `signing_address` over
//! `<data-dir>/keys/signing.json`. Input: the file.
//!
//! Files asking for more KDF work than `lcw_fuzz::kdf` allows are skipped (the fuzzer would
//! otherwise live in scrypt).
//!
//! Asserts: loading never panics; an error never shows the password; a keystore that opens does
//! not open under another password (that is refused as a wrong password), and the worker's
//! loader opens it to the same key.

#![no_main]

use lcw_fuzz::{kdf, scratch};
use lcw_worker::keys::{KeyDir, KeyError};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "fuzz-password-7c1e";
const OTHER: &str = "another-password";

fuzz_target!(|input: &[u8]| {
    if !kdf::keystore_within_budget(input) {
        return;
    }
    let keys = KeyDir::new(scratch::dir());
    let path = keys.signing_path();
    std::fs::create_dir_all(keys.path()).expect("the scratch key dir");
    std::fs::write(&path, input).expect("the scratch keystore");
    // The password never reaches the file, so the only way an error can show it is by leaking it.
    let shown = |e: &dyn std::fmt::Display| {
        let text = e.to_string();
        let echoed = input.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes());
        assert!(echoed || !text.contains(PASSWORD), "an error shows the password: {text}");
    };

    let _ = keys.signing_address();
    match lcw_chain::keys::load_keystore(&path, PASSWORD) {
        Ok(signer) => {
            let wrong = lcw_chain::keys::load_keystore(&path, OTHER).expect_err("another password opens it");
            assert!(wrong.to_string().contains("wrong password"), "{wrong}");
            let again = keys.load_signer(PASSWORD).expect("the worker's loader opens what the chain's opens");
            assert_eq!(again.address(), signer.address());
            assert!(matches!(keys.load_signer(OTHER), Err(KeyError::WrongPassword(_))));
        }
        Err(e) => {
            shown(&e);
            match keys.load_signer(PASSWORD) {
                Ok(_) => panic!("the worker's loader opens what the chain's refuses ({e})"),
                Err(e) => shown(&e),
            }
        }
    }
});
