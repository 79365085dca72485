//! The cost budget of a fuzzed key file. A key file names its own KDF cost; a fuzzer that
//! writes `"n": 262144` would spend every run in scrypt (and a few GiB on it). Inputs over the
//! budget are skipped before they reach lcw: every branch of the loaders is reachable with
//! cheap parameters, and what an expensive file does (refused past lcw's own bounds, in
//! `lcw_chain::keys`) is a question for a test, not a fuzzer.

use serde_json::Value;

/// Largest scrypt N a fuzzed file may ask for.
pub const MAX_SCRYPT_N: u64 = 1 << 8;
/// Largest scrypt r.
pub const MAX_SCRYPT_R: u64 = 4;
/// Largest scrypt p.
pub const MAX_SCRYPT_P: u64 = 2;
/// Most pbkdf2 rounds.
pub const MAX_PBKDF2_ROUNDS: u64 = 1 << 8;

fn over(params: &Value, key: &str, max: u64) -> bool {
    params.get(key).and_then(Value::as_u64).is_some_and(|v| v > max)
}

fn within_budget(params: Option<&Value>) -> bool {
    let Some(p) = params else { return true };
    !(over(p, "n", MAX_SCRYPT_N)
        || over(p, "r", MAX_SCRYPT_R)
        || over(p, "p", MAX_SCRYPT_P)
        || over(p, "c", MAX_PBKDF2_ROUNDS))
}

/// Whether a geth v3 keystore (`crypto.kdfparams`: pbkdf2 `c`, or scrypt `n`, `r`, `p`) is cheap
/// enough to decrypt. Input that is not JSON never reaches a KDF, so it is cheap. Parameters that
/// are not unsigned integers fail the loader's own parse, so only integers are bounded.
pub fn keystore_within_budget(file: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<Value>(file) else { return true };
    // geth (Go's case-blind JSON) and lcw also read `Crypto`.
    let crypto = json.get("crypto").or_else(|| json.get("Crypto"));
    within_budget(crypto.and_then(|c| c.get("kdfparams")))
}

/// Whether lcw's encryption key file (`kdfparams`: scrypt `n`, `r`, `p`) is cheap enough.
pub fn encryption_file_within_budget(file: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<Value>(file) else { return true };
    within_budget(json.get("kdfparams"))
}
