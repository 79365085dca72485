//! Signing keys: geth v3 keystores (scrypt or pbkdf2, AES-128-CTR, keccak MAC) with the password
//! from a file or an environment variable. Neither the password nor the key ever reaches a log or
//! an error.
//!
//! The format is read and written here, not by alloy's `signer-keystore` (the archived
//! `eth-keystore` crate), because a key file chooses its own key-derivation cost: that crate runs
//! scrypt with whatever `n` the file names, so a hostile file with n = 2^30 asks for 128 GiB and
//! aborts the process. Here every cost parameter is checked against the bounds below
//! ([`scrypt_params`], [`pbkdf2_rounds`]) before anything is derived; the worker's
//! `encryption.json` uses the same bounds.

use std::io::Read;
use std::path::{Path, PathBuf};

use aes::cipher::{KeyIvInit, StreamCipher};
use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::local::PrivateKeySigner;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{ChainError, ChainResult};

/// Environment variable holding a keystore password.
pub const PASSWORD_ENV: &str = "LCW_PASSWORD";

/// The largest scrypt `n` a key file may ask for: geth's standard cost, 2^18.
pub const MAX_SCRYPT_N: u64 = 1 << 18;
/// The largest scrypt `r` a key file may ask for (geth writes 8).
pub const MAX_SCRYPT_R: u64 = 32;
/// The largest scrypt `p` a key file may ask for (geth writes 1, or 6 for its light cost).
pub const MAX_SCRYPT_P: u64 = 16;
/// The most memory scrypt may take for one key file, 128·n·r bytes: 256 MiB, geth's standard.
pub const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
/// The most mixing scrypt may do for one key file, 128·n·r·p bytes: 1 GiB, four times geth's
/// standard (about a second each on a current core).
pub const MAX_SCRYPT_WORK: u64 = 1 << 30;
/// The most pbkdf2 rounds a key file may ask for: 2^22, sixteen times the wiki vector's 2^18.
pub const MAX_PBKDF2_ROUNDS: u64 = 1 << 22;

/// scrypt cost of the keystores lcw writes: n = 2^15, r = 8, p = 1 (32 MiB), the cost of the
/// worker's `encryption.json`, which shares the password (a cheaper file would be the one to
/// attack).
const WRITE_SCRYPT: (u64, u64, u64) = (1 << 15, 8, 1);
/// Every key a keystore protects here is 32 bytes, so is every derived key.
const DKLEN: u64 = 32;
/// A keystore is about 500 bytes; a larger file is not one (and is not read whole).
const MAX_FILE_LEN: u64 = 64 << 10;

/// Why a key-derivation setting read from a file is refused. Checked before anything is derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KdfError {
    /// scrypt parameters past the bounds (or not a power-of-two `n`).
    #[error(
        "scrypt parameters out of range (n = {n}, r = {r}, p = {p}): lcw derives with n a power of two \
         from 2 to 2^18, r up to 32, p up to 16, at most 256 MiB of memory (128·n·r) and 1 GiB of work \
         (128·n·r·p); geth's standard is n = 2^18, r = 8, p = 1"
    )]
    ScryptBounds {
        /// The file's `n`.
        n: u64,
        /// The file's `r`.
        r: u64,
        /// The file's `p`.
        p: u64,
    },
    /// scrypt parameters within the bounds that scrypt itself refuses (RFC 7914: n < 2^(16·r)).
    #[error("scrypt parameters n = {n}, r = {r}, p = {p} are not valid scrypt (RFC 7914 requires n < 2^(16·r))")]
    ScryptInvalid {
        /// The file's `n`.
        n: u64,
        /// The file's `r`.
        r: u64,
        /// The file's `p`.
        p: u64,
    },
    /// pbkdf2 rounds past the bound, or zero.
    #[error("pbkdf2 rounds out of range (c = {0}): lcw derives with 1 to 2^22 rounds")]
    Pbkdf2Rounds(u64),
    /// A derived-key length other than 32.
    #[error("kdfparams.dklen is {0}; the key files lcw reads derive 32 bytes")]
    DkLen(u64),
}

/// Checks scrypt parameters read from a key file against the bounds above and returns them ready
/// to derive with. Nothing is allocated before this has passed.
pub fn scrypt_params(n: u64, r: u64, p: u64) -> Result<scrypt::Params, KdfError> {
    let bounds = KdfError::ScryptBounds { n, r, p };
    if !n.is_power_of_two() || !(2..=MAX_SCRYPT_N).contains(&n) {
        return Err(bounds);
    }
    if !(1..=MAX_SCRYPT_R).contains(&r) || !(1..=MAX_SCRYPT_P).contains(&p) {
        return Err(bounds);
    }
    // n ≤ 2^18, r ≤ 32 and p ≤ 16 keep these products far from overflowing.
    if 128 * n * r > MAX_SCRYPT_MEMORY || 128 * n * r * p > MAX_SCRYPT_WORK {
        return Err(bounds);
    }
    scrypt::Params::new(n.trailing_zeros() as u8, r as u32, p as u32).map_err(|_| KdfError::ScryptInvalid { n, r, p })
}

/// Checks pbkdf2 rounds read from a key file against [`MAX_PBKDF2_ROUNDS`].
pub fn pbkdf2_rounds(c: u64) -> Result<u32, KdfError> {
    if !(1..=MAX_PBKDF2_ROUNDS).contains(&c) {
        return Err(KdfError::Pbkdf2Rounds(c));
    }
    Ok(c as u32)
}

/// Why a keystore could not be decrypted or encrypted. Messages name the field at fault, never the
/// password or the key.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Not the JSON of a geth v3 keystore.
    #[error("not a geth v3 keystore: {0}")]
    Json(#[source] serde_json::Error),
    /// A version other than 3.
    #[error("keystore version {0}; lcw reads version 3")]
    Version(u64),
    /// A cipher other than AES-128-CTR.
    #[error("cipher {0:?} is not supported; geth v3 keystores use aes-128-ctr")]
    Cipher(String),
    /// A key derivation other than scrypt or pbkdf2 with HMAC-SHA256.
    #[error("key derivation {0:?} is not supported; lcw reads scrypt and pbkdf2 (hmac-sha256)")]
    Kdf(String),
    /// The key derivation asks for more than the bounds allow; nothing was derived.
    #[error(transparent)]
    Bounds(#[from] KdfError),
    /// A hex field that does not decode, or decodes to the wrong length.
    #[error("{0} is not hex of the expected length")]
    Field(&'static str),
    /// scrypt refused the output length (never for the 32 bytes derived here; the crate's error
    /// type, built without `std`, is no `std::error::Error` to carry).
    #[error("scrypt refused the derived-key length")]
    Derive,
    /// The MAC does not match: the password is wrong or the file was altered.
    #[error("wrong password (the keystore's MAC does not match)")]
    WrongPassword,
    /// The decrypted bytes are not a secp256k1 private key.
    #[error("the decrypted key is not a valid secp256k1 private key")]
    InvalidKey,
    /// The `address` field names another key than the one inside.
    #[error("the keystore's address field says {stated} but it holds the key of {actual}")]
    AddressMismatch {
        /// The `address` field.
        stated: Address,
        /// The address of the decrypted key.
        actual: Address,
    },
}

/// A geth v3 keystore, field for field (geth's order when written).
#[derive(Serialize, Deserialize)]
struct KeystoreJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    // Go's JSON decoding ignores case, so geth also reads the `Crypto` some wallets write.
    #[serde(alias = "Crypto")]
    crypto: CryptoJson,
    // geth requires a UUID; a reader has no use for it.
    #[serde(default)]
    id: Option<String>,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct CryptoJson {
    cipher: String,
    ciphertext: String,
    cipherparams: CipherParams,
    kdf: String,
    kdfparams: serde_json::Value,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    iv: String,
}

#[derive(Deserialize)]
struct ScryptJson {
    dklen: u64,
    n: u64,
    r: u64,
    p: u64,
    salt: String,
}

#[derive(Deserialize)]
struct Pbkdf2Json {
    c: u64,
    dklen: u64,
    prf: String,
    salt: String,
}

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// Decrypts a geth v3 keystore. The key-derivation parameters are checked against the bounds
/// before anything is derived; a key shorter than 32 bytes (geth writes what `big.Int` gives) is
/// left-padded; an `address` field, when present, must be the key's.
pub fn decrypt_keystore(json: &[u8], password: &str) -> Result<PrivateKeySigner, KeystoreError> {
    let file: KeystoreJson = serde_json::from_slice(json).map_err(KeystoreError::Json)?;
    if file.version != 3 {
        return Err(KeystoreError::Version(file.version));
    }
    let crypto = &file.crypto;
    if crypto.cipher != "aes-128-ctr" {
        return Err(KeystoreError::Cipher(crypto.cipher.clone()));
    }
    let iv: [u8; 16] = hex_field(&crypto.cipherparams.iv, "cipherparams.iv")?;
    let mac: [u8; 32] = hex_field(&crypto.mac, "mac")?;
    let ciphertext = alloy::hex::decode(&crypto.ciphertext).map_err(|_| KeystoreError::Field("ciphertext"))?;
    if ciphertext.is_empty() || ciphertext.len() > 32 {
        return Err(KeystoreError::Field("ciphertext"));
    }
    let derived = derive_key(&crypto.kdf, &crypto.kdfparams, password)?;
    if !constant_time_eq(&keccak256([&derived[16..], &ciphertext[..]].concat())[..], &mac) {
        return Err(KeystoreError::WrongPassword);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    let start = 32 - ciphertext.len();
    key[start..].copy_from_slice(&ciphertext);
    Aes128Ctr::new(derived[..16].into(), &iv.into()).apply_keystream(&mut key[start..]);
    let signer = PrivateKeySigner::from_bytes(&B256::from(*key)).map_err(|_| KeystoreError::InvalidKey)?;
    if let Some(stated) = &file.address {
        let stated: Address = stated.parse().map_err(|_| KeystoreError::Field("address"))?;
        if stated != signer.address() {
            return Err(KeystoreError::AddressMismatch { stated, actual: signer.address() });
        }
    }
    Ok(signer)
}

/// Encrypts `signer` as a geth v3 keystore (scrypt n = 2^15, r = 8, p = 1; AES-128-CTR; a random
/// salt, IV and UUID), with geth's `address` field so the address is known without the password.
pub fn encrypt_keystore(signer: &PrivateKeySigner, password: &str) -> Result<Vec<u8>, KeystoreError> {
    let (n, r, p) = WRITE_SCRYPT;
    let params = scrypt_params(n, r, p)?;
    let (mut salt, mut iv) = ([0u8; 32], [0u8; 16]);
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let mut derived = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password.as_bytes(), &salt, &params, derived.as_mut()).map_err(|_| KeystoreError::Derive)?;
    let mut ciphertext = signer.to_bytes().0;
    Aes128Ctr::new(derived[..16].into(), &iv.into()).apply_keystream(&mut ciphertext);
    let mac = keccak256([&derived[16..], &ciphertext[..]].concat());
    let file = KeystoreJson {
        // geth's form: lowercase hex without 0x.
        address: Some(alloy::hex::encode(signer.address())),
        crypto: CryptoJson {
            cipher: "aes-128-ctr".into(),
            ciphertext: alloy::hex::encode(ciphertext),
            cipherparams: CipherParams { iv: alloy::hex::encode(iv) },
            kdf: "scrypt".into(),
            // serde_json's map is sorted: dklen, n, p, r, salt, as geth writes them.
            kdfparams: serde_json::json!({
                "dklen": DKLEN, "n": n, "p": p, "r": r, "salt": alloy::hex::encode(salt),
            }),
            mac: alloy::hex::encode(mac),
        },
        id: Some(uuid_v4()),
        version: 3,
    };
    serde_json::to_vec(&file).map_err(KeystoreError::Json)
}

/// The derived key of a keystore's `kdf` and `kdfparams`, within the bounds.
fn derive_key(kdf: &str, params: &serde_json::Value, password: &str) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let mut derived = Zeroizing::new([0u8; 32]);
    match kdf {
        "scrypt" => {
            let k: ScryptJson = serde_json::from_value(params.clone()).map_err(KeystoreError::Json)?;
            check_dklen(k.dklen)?;
            let params = scrypt_params(k.n, k.r, k.p)?;
            let salt = alloy::hex::decode(&k.salt).map_err(|_| KeystoreError::Field("kdfparams.salt"))?;
            scrypt::scrypt(password.as_bytes(), &salt, &params, derived.as_mut()).map_err(|_| KeystoreError::Derive)?;
        }
        "pbkdf2" => {
            let k: Pbkdf2Json = serde_json::from_value(params.clone()).map_err(KeystoreError::Json)?;
            if k.prf != "hmac-sha256" {
                return Err(KeystoreError::Kdf(format!("pbkdf2 with {}", k.prf)));
            }
            check_dklen(k.dklen)?;
            let rounds = pbkdf2_rounds(k.c)?;
            let salt = alloy::hex::decode(&k.salt).map_err(|_| KeystoreError::Field("kdfparams.salt"))?;
            pbkdf2::pbkdf2::<hmac::Hmac<sha2::Sha256>>(password.as_bytes(), &salt, rounds, derived.as_mut());
        }
        other => return Err(KeystoreError::Kdf(other.to_owned())),
    }
    Ok(derived)
}

fn check_dklen(dklen: u64) -> Result<(), KdfError> {
    if dklen == DKLEN { Ok(()) } else { Err(KdfError::DkLen(dklen)) }
}

fn hex_field<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], KeystoreError> {
    let bytes = alloy::hex::decode(text).map_err(|_| KeystoreError::Field(field))?;
    bytes.try_into().map_err(|_| KeystoreError::Field(field))
}

/// Compares without an early exit, so the time taken says nothing about where a MAC differs.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random (version 4) UUID, the `id` geth requires.
fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = alloy::hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The systemd credential holding the keystore password: a unit's `LoadCredential=lcw-password:FILE`
/// puts the file's content at `$CREDENTIALS_DIRECTORY/lcw-password`, readable by the service
/// only, and never in its environment (where `systemctl show` and `/proc/PID/environ` reveal it).
pub const PASSWORD_CREDENTIAL: &str = "lcw-password";

/// The keystore password: the first line of `file` when given, else `LCW_PASSWORD`, else the
/// first line of the systemd credential [`PASSWORD_CREDENTIAL`] when the process runs with one.
pub fn password(file: Option<&Path>) -> ChainResult<String> {
    let first_line = |file: &Path| -> ChainResult<String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ChainError::Key(format!("cannot read the password file {}: {e}", file.display())))?;
        Ok(text.lines().next().unwrap_or_default().to_owned())
    };
    if let Some(file) = file {
        return first_line(file);
    }
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join(PASSWORD_CREDENTIAL);
        if credential.exists() {
            return first_line(&credential);
        }
    }
    Err(ChainError::Key(format!(
        "the keystore needs a password: pass --password-file FILE or set {PASSWORD_ENV} (as a systemd \
         service: LoadCredential={PASSWORD_CREDENTIAL}:FILE, which `lcw service install --password-file FILE` writes)"
    )))
}

/// Decrypts the keystore at `path`. A file asking for more key derivation than the bounds allow
/// is refused before anything is derived.
pub fn load_keystore(path: &Path, password: &str) -> ChainResult<PrivateKeySigner> {
    let json = read_bounded(path)?;
    decrypt_keystore(&json, password).map_err(|e| match e {
        KeystoreError::WrongPassword => ChainError::Key(format!("wrong password for the keystore {}", path.display())),
        KeystoreError::Bounds(e) => {
            ChainError::Key(format!("the keystore {} is refused before any key derivation: {e}", path.display()))
        }
        e => ChainError::Key(format!("{} is not a readable keystore (geth v3 JSON expected): {e}", path.display())),
    })
}

/// The file at `path`, refused past [`MAX_FILE_LEN`] without reading it whole.
fn read_bounded(path: &Path) -> ChainResult<Vec<u8>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ChainError::Key(format!("no keystore at {}", path.display())));
        }
        Err(e) => return Err(ChainError::Key(format!("cannot read the keystore {}: {e}", path.display()))),
    };
    let mut json = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut json)
        .map_err(|e| ChainError::Key(format!("cannot read the keystore {}: {e}", path.display())))?;
    if json.len() as u64 > MAX_FILE_LEN {
        return Err(ChainError::Key(format!(
            "{} is not a keystore: it is larger than {} KiB",
            path.display(),
            MAX_FILE_LEN >> 10
        )));
    }
    Ok(json)
}

/// Writes `signer` as a geth v3 keystore named `name` in `dir` (created if missing), returning the
/// file path; as [`create_keystore`], it never overwrites a file.
pub fn write_keystore(dir: &Path, signer: &PrivateKeySigner, password: &str, name: &str) -> ChainResult<PathBuf> {
    create_private_dir(dir).map_err(|e| ChainError::Key(format!("cannot create {}: {e}", dir.display())))?;
    create_keystore(&dir.join(name), signer, password)
}

/// Writes `signer` as a geth v3 keystore at exactly `path`, with the `address` field geth writes
/// (so the address is known without the password) and mode 0600. Refuses to overwrite an existing
/// file, even one that appears while this runs. As geth does, the keystore is decrypted again
/// before it is put in place.
pub fn create_keystore(path: &Path, signer: &PrivateKeySigner, password: &str) -> ChainResult<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |what: &str, p: &Path, e: std::io::Error| ChainError::Key(format!("cannot {what} {}: {e}", p.display()));
    let exists = || ChainError::Key(format!("{} already exists; it is never overwritten", path.display()));
    if path.exists() {
        return Err(exists());
    }
    create_private_dir(dir).map_err(|e| io("create", dir, e))?;
    let json = encrypt_keystore(signer, password)
        .map_err(|e| ChainError::Key(format!("cannot encrypt a keystore for {}: {e}", path.display())))?;
    match decrypt_keystore(&json, password) {
        Ok(back) if back.address() == signer.address() => {}
        _ => return Err(ChainError::Key(format!("the keystore for {} did not decrypt again", path.display()))),
    }
    let tmp = scratch_path(path);
    write_private(&tmp, &json).map_err(|e| io("write", &tmp, e))?;
    match place_new(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(e) => Err(io("move into place", path, e)),
        Ok(()) => Ok(path.to_owned()),
    }
}

/// Creates a directory, and any missing parent, that only the owner can enter (0700 on unix,
/// from creation). A directory that exists keeps its mode: see [`tighten_dir`] for lcw's own.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Takes group and other access away from `dir`, a directory lcw owns (`keys/`, its archive):
/// one made by hand, or by an older lcw, may be 0755. Returns whether it was wider.
pub fn tighten_dir(dir: &Path) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
            return Ok(true);
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(false)
}

/// Writes `bytes` to a new file only the owner can read, synced to disk. The file is created
/// with mode 0600 (on unix; never widened, then narrowed) and only if nothing is at `path`: an
/// existing file, or a symbolic link planted there, fails with `AlreadyExists` instead of being
/// written through.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A scratch name beside `path` that no other writer picks: `.<name>.<random>.tmp`.
pub fn scratch_path(path: &Path) -> PathBuf {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()))
}

/// Puts the finished file `tmp` at `path` unless something is there already: a hard link fails
/// when `path` exists, where a rename would replace it (two keygens racing). `tmp` is removed
/// either way.
pub fn place_new(tmp: &Path, path: &Path) -> std::io::Result<()> {
    let placed = match std::fs::hard_link(tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        // A filesystem without hard links: check again and rename.
        Err(_) if std::fs::symlink_metadata(path).is_ok() => {
            Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the file exists"))
        }
        Err(_) => std::fs::rename(tmp, path),
        Ok(()) => Ok(()),
    };
    let _ = std::fs::remove_file(tmp);
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// go-ethereum's `accounts/keystore/testdata` (see `chain/testdata/geth/README.md`).
    const GETH_V3_VECTORS: &str = include_str!("../testdata/geth/v3_test_vector.json");
    const GETH_VERY_LIGHT: &str = include_str!("../testdata/geth/very-light-scrypt.json");
    const GETH_AAA: &str = include_str!("../testdata/geth/aaa.json");

    fn vector(name: &str) -> (Vec<u8>, String, B256) {
        let all: serde_json::Value = serde_json::from_str(GETH_V3_VECTORS).unwrap();
        let v = &all[name];
        let key = alloy::hex::decode(v["priv"].as_str().unwrap()).unwrap();
        let mut padded = [0u8; 32];
        padded[32 - key.len()..].copy_from_slice(&key);
        (serde_json::to_vec(&v["json"]).unwrap(), v["password"].as_str().unwrap().to_owned(), B256::from(padded))
    }

    /// One keystore (of a fixed key, password `pw`), encrypted once for all the tests that alter it.
    static BASE: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        serde_json::from_slice(&encrypt_keystore(&signer, "pw").unwrap()).unwrap()
    });

    /// [`BASE`] with its kdfparams altered.
    fn with_kdfparams(f: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let mut json = BASE.clone();
        f(&mut json["crypto"]["kdfparams"]);
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn geth_vectors_decrypt_to_their_keys() {
        for name in ["wikipage_test_vector_pbkdf2", "31_byte_key", "30_byte_key"] {
            let (json, password, key) = vector(name);
            let signer = decrypt_keystore(&json, &password).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(signer.to_bytes(), key, "{name}");
            if name != "wikipage_test_vector_pbkdf2" {
                // (2^18 pbkdf2 rounds take seconds in a debug build; once is enough.)
                let e = decrypt_keystore(&json, "not the password").unwrap_err();
                assert!(matches!(e, KeystoreError::WrongPassword), "{name}: {e}");
            }
        }
    }

    #[test]
    fn geth_key_files_decrypt_to_their_addresses() {
        let cases = [
            (GETH_VERY_LIGHT, "", "45dea0fb0bba44f4fcf290bba71fd57d7117cbb8"),
            (GETH_AAA, "foobar", "f466859ead1932d743d622cb74fc058882e8648a"),
        ];
        for (json, password, address) in cases {
            let signer = decrypt_keystore(json.as_bytes(), password).unwrap();
            assert_eq!(signer.address(), address.parse::<Address>().unwrap());
            assert!(matches!(decrypt_keystore(json.as_bytes(), "bad"), Err(KeystoreError::WrongPassword)));
        }
    }

    #[test]
    fn the_wiki_scrypt_vector_with_r_1_is_refused_as_invalid_scrypt() {
        // n = 2^18 with r = 1 breaks RFC 7914's n < 2^(16·r); RustCrypto's scrypt will not run it.
        let (json, password, _) = vector("wikipage_test_vector_scrypt");
        let e = decrypt_keystore(&json, &password).unwrap_err();
        assert!(matches!(e, KeystoreError::Bounds(KdfError::ScryptInvalid { n: 262_144, r: 1, p: 8 })), "{e}");
        assert!(e.to_string().contains("RFC 7914"), "{e}");
    }

    #[test]
    fn written_keystores_have_geths_shape_and_round_trip() {
        let signer = PrivateKeySigner::random();
        let json = encrypt_keystore(&signer, "pw").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["address"], alloy::hex::encode(signer.address()));
        assert_eq!(v["crypto"]["cipher"], "aes-128-ctr");
        assert_eq!(v["crypto"]["kdf"], "scrypt");
        let k = &v["crypto"]["kdfparams"];
        assert_eq!(
            (k["n"].as_u64(), k["r"].as_u64(), k["p"].as_u64(), k["dklen"].as_u64()),
            (Some(32768), Some(8), Some(1), Some(32))
        );
        assert_eq!(k["salt"].as_str().unwrap().len(), 64);
        assert_eq!(v["crypto"]["cipherparams"]["iv"].as_str().unwrap().len(), 32);
        assert_eq!(v["crypto"]["ciphertext"].as_str().unwrap().len(), 64);
        assert_eq!(v["crypto"]["mac"].as_str().unwrap().len(), 64);
        let id = v["id"].as_str().unwrap();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(&id[14..15], "4", "version 4 UUID: {id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "RFC 4122 variant: {id}");
        assert_eq!(decrypt_keystore(&json, "pw").unwrap().to_bytes(), signer.to_bytes());
        assert!(matches!(decrypt_keystore(&json, "pW"), Err(KeystoreError::WrongPassword)));
        let again = encrypt_keystore(&signer, "pw").unwrap();
        assert_ne!(json, again, "fresh salt, IV and id each time");
        // A capitalised `Crypto` (some wallets) and a 0x-prefixed address read as geth reads them.
        let text = String::from_utf8(json).unwrap().replace("\"crypto\"", "\"Crypto\"");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["address"] = signer.address().to_string().into();
        assert_eq!(decrypt_keystore(&serde_json::to_vec(&v).unwrap(), "pw").unwrap().address(), signer.address());
    }

    #[test]
    fn a_hostile_scrypt_cost_is_refused_before_any_derivation() {
        std::sync::LazyLock::force(&BASE);
        let started = std::time::Instant::now();
        for (n, r, p) in [
            (1u64 << 30, 8u64, 1u64),
            (1 << 19, 8, 1),
            (1 << 18, 16, 1),
            (1 << 18, 8, 5),
            (3000, 8, 1),
            (0, 8, 1),
            (1 << 10, 0, 1),
            (1 << 10, 8, 0),
            (1 << 10, 8, 1 << 40),
            (1 << 10, u64::MAX, 1),
        ] {
            let json = with_kdfparams(|k| {
                k["n"] = n.into();
                k["r"] = r.into();
                k["p"] = p.into();
            });
            let e = decrypt_keystore(&json, "pw").unwrap_err();
            assert!(matches!(e, KeystoreError::Bounds(KdfError::ScryptBounds { .. })), "n={n} r={r} p={p}: {e}");
            assert!(e.to_string().contains("scrypt parameters out of range"), "{e}");
        }
        for dklen in [0u64, 16, 64, 1 << 40] {
            let e = decrypt_keystore(&with_kdfparams(|k| k["dklen"] = dklen.into()), "pw").unwrap_err();
            assert!(matches!(e, KeystoreError::Bounds(KdfError::DkLen(d)) if d == dklen), "{e}");
        }
        // A number past u64 is not a keystore at all.
        let e = decrypt_keystore(&with_kdfparams(|k| k["n"] = serde_json::json!(1e30)), "pw").unwrap_err();
        assert!(matches!(e, KeystoreError::Json(_)), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused without deriving");
    }

    #[test]
    fn the_bounds_accept_geths_costs_and_stop_past_them() {
        assert!(scrypt_params(1 << 18, 8, 1).is_ok(), "geth standard");
        assert!(scrypt_params(1 << 12, 8, 6).is_ok(), "geth light");
        assert!(scrypt_params(1 << 18, 8, 4).is_ok(), "1 GiB of work");
        assert!(scrypt_params(1 << 16, 32, 1).is_ok(), "256 MiB with r = 32");
        assert!(scrypt_params(8, 8, 16).is_ok(), "geth's test key files");
        assert!(scrypt_params(1 << 17, 32, 1).is_err(), "512 MiB");
        assert!(scrypt_params(1 << 18, 8, 5).is_err(), "past 1 GiB of work");
        assert_eq!(pbkdf2_rounds(262_144), Ok(262_144));
        assert_eq!(pbkdf2_rounds(0), Err(KdfError::Pbkdf2Rounds(0)));
        assert_eq!(pbkdf2_rounds(1 << 31), Err(KdfError::Pbkdf2Rounds(1 << 31)));
    }

    #[test]
    fn pbkdf2_rounds_and_unknown_algorithms_are_refused() {
        let (json, password, _) = vector("wikipage_test_vector_pbkdf2");
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let refuse = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = v.clone();
            f(&mut v);
            decrypt_keystore(&serde_json::to_vec(&v).unwrap(), &password).unwrap_err()
        };
        let e = refuse(&|v| v["crypto"]["kdfparams"]["c"] = (1u64 << 32).into());
        assert!(matches!(e, KeystoreError::Bounds(KdfError::Pbkdf2Rounds(_))), "{e}");
        let e = refuse(&|v| v["crypto"]["kdfparams"]["prf"] = "hmac-sha512".into());
        assert!(matches!(e, KeystoreError::Kdf(_)), "{e}");
        let e = refuse(&|v| v["crypto"]["kdf"] = "argon2id".into());
        assert!(matches!(e, KeystoreError::Kdf(_)), "{e}");
        let e = refuse(&|v| v["crypto"]["cipher"] = "aes-128-cbc".into());
        assert!(matches!(e, KeystoreError::Cipher(_)), "{e}");
        let e = refuse(&|v| v["version"] = 1.into());
        assert!(matches!(e, KeystoreError::Version(1)), "{e}");
        let e = refuse(&|v| v["crypto"]["cipherparams"]["iv"] = "00".into());
        assert!(matches!(e, KeystoreError::Field("cipherparams.iv")), "{e}");
        let e = refuse(&|v| v["crypto"]["ciphertext"] = "00".repeat(33).into());
        assert!(matches!(e, KeystoreError::Field("ciphertext")), "{e}");
        v["crypto"]["mac"] = "zz".into();
        assert!(matches!(
            decrypt_keystore(&serde_json::to_vec(&v).unwrap(), &password),
            Err(KeystoreError::Field("mac"))
        ));
    }

    #[test]
    fn an_address_field_naming_another_key_is_refused() {
        let signer = PrivateKeySigner::random();
        let mut v: serde_json::Value = serde_json::from_slice(&encrypt_keystore(&signer, "pw").unwrap()).unwrap();
        v["address"] = alloy::hex::encode(Address::repeat_byte(1)).into();
        let e = decrypt_keystore(&serde_json::to_vec(&v).unwrap(), "pw").unwrap_err();
        assert!(matches!(e, KeystoreError::AddressMismatch { .. }), "{e}");
        // A tampered ciphertext fails the MAC.
        let mut v: serde_json::Value = serde_json::from_slice(&encrypt_keystore(&signer, "pw").unwrap()).unwrap();
        let mut ct = alloy::hex::decode(v["crypto"]["ciphertext"].as_str().unwrap()).unwrap();
        ct[31] ^= 1;
        v["crypto"]["ciphertext"] = alloy::hex::encode(ct).into();
        assert!(matches!(decrypt_keystore(&serde_json::to_vec(&v).unwrap(), "pw"), Err(KeystoreError::WrongPassword)));
    }

    #[test]
    fn load_keystore_refuses_a_hostile_file_fast_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.json");
        let hostile = with_kdfparams(|k| k["n"] = (1u64 << 30).into());
        std::fs::write(&path, hostile).unwrap();
        let started = std::time::Instant::now();
        let e = load_keystore(&path, "pw").unwrap_err().to_string();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(e.contains("refused before any key derivation") && e.contains("n = 1073741824"), "{e}");
        assert!(e.contains("signing.json"), "{e}");
        std::fs::write(&path, vec![b' '; (MAX_FILE_LEN + 1) as usize]).unwrap();
        assert!(load_keystore(&path, "pw").unwrap_err().to_string().contains("larger than 64 KiB"));
        std::fs::write(&path, b"{}").unwrap();
        assert!(load_keystore(&path, "pw").unwrap_err().to_string().contains("not a readable keystore"));
        let e = load_keystore(&dir.path().join("none.json"), "pw").unwrap_err().to_string();
        assert!(e.starts_with("no keystore at"), "{e}");
        std::fs::write(&path, GETH_AAA).unwrap();
        assert_eq!(
            load_keystore(&path, "foobar").unwrap().address(),
            "f466859ead1932d743d622cb74fc058882e8648a".parse::<Address>().unwrap()
        );
    }

    #[test]
    fn created_keystore_loads_names_its_address_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.json");
        let signer = PrivateKeySigner::random();
        create_keystore(&path, &signer, "pw").unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["address"].as_str().unwrap(), alloy::hex::encode(signer.address()));
        assert_eq!(load_keystore(&path, "pw").unwrap().address(), signer.address());
        assert!(load_keystore(&path, "nope").unwrap_err().to_string().contains("wrong password"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = create_keystore(&path, &PrivateKeySigner::random(), "pw").unwrap_err().to_string();
        assert!(again.contains("never overwritten"), "{again}");
        assert_eq!(load_keystore(&path, "pw").unwrap().address(), signer.address(), "unchanged");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("signing.json")], "no scratch files remain");
        let written = write_keystore(&dir.path().join("more"), &signer, "pw", "worker.json").unwrap();
        assert_eq!(load_keystore(&written, "pw").unwrap().address(), signer.address());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_created_0600_and_never_written_through_what_is_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        write_private(&path, b"first").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let e = write_private(&path, b"second").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first", "an existing file is never overwritten");
        // A link planted where a key file will go is not followed.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"theirs").unwrap();
        let planted = dir.path().join("planted.json");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        assert!(write_private(&planted, b"key material").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(write_private(&dangling, b"key material").is_err());
        assert!(!dir.path().join("nothing").exists(), "nothing created through a dangling link");
        let e = create_keystore(&dangling, &PrivateKeySigner::random(), "pw").unwrap_err().to_string();
        assert!(e.contains("never overwritten"), "{e}");
        // Directories made for keys are 0700 from creation; an existing wide one is tightened only
        // when asked.
        let keys = dir.path().join("a/b/keys");
        create_private_dir(&keys).unwrap();
        assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&keys).unwrap();
        assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(tighten_dir(&keys).unwrap());
        assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(!tighten_dir(&keys).unwrap());
    }

    #[test]
    fn racing_creates_leave_exactly_one_keystore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.json");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let signer = PrivateKeySigner::random();
                        create_keystore(&path, &signer, "pw").map(|_| signer.address())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        assert_eq!(load_keystore(&path, "pw").unwrap().address(), *won[0]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no scratch files remain");
    }
}
