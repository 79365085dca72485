//! The worker's keys on disk, in `<data-dir>/keys/`:
//!
//! - `signing.json`: the signing key, a geth v3 keystore (scrypt), as the official worker's
//!   `WORKER_KEYSTORE_PATH`, with geth's `address` field so the address is known without the
//!   password;
//! - `encryption.json`: the encryption secret at rest (upstream.md §5, plus the suite): AES-256-GCM
//!   under `scrypt(password, salt, N=32768, r=8, p=1)`, the suite name and public key bound in as
//!   associated data so that a swapped header fails to decrypt; mode 0600;
//! - `archive/<UTC time>-<fingerprint>/`: a replaced set, moved there (never deleted) with an
//!   `archive.json` saying whose it was and why. A key that still holds stake on chain is only
//!   reachable through its files, so nothing here ever removes one.
//!
//! One password protects both files. Neither secrets nor the password reach an error, a log or a
//! `Debug` output.
//!
//! On disk: every file holding key material is created with mode 0600 and only where nothing is
//! (never through a link planted in its place, never over another file); `keys/` and its archive
//! are 0700 (tightened when found wider). Recovering takes only a real directory directly under
//! `archive/` whose key files are regular files: a symbolic link, or a path outside the archive,
//! is refused before anything moves.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use alloy::primitives::{Address, B256, Bytes, keccak256};
use alloy::signers::local::PrivateKeySigner;
use lcw_chain::keys::{create_private_dir, place_new, scratch_path, tighten_dir, write_private};
use lcw_schema::suite::{EncryptionSecret, KEY_LEN, NONCE_LEN, Suite, TAG_LEN};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The signing keystore's file name.
pub const SIGNING_FILE: &str = "signing.json";
/// The encryption key file's name.
pub const ENCRYPTION_FILE: &str = "encryption.json";
/// What an archived set says about itself.
pub const ARCHIVE_FILE: &str = "archive.json";

/// scrypt cost of the encryption key file, as upstream's local key file: N = 2^15, r = 8, p = 1.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
const SALT_LEN: usize = 16;

/// Why a key operation failed. Messages name files and the next step, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read, written or moved.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted (`read`, `write`, `move`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// There is no encryption key file.
    #[error("no encryption key at {0}: run `lcw keygen`")]
    NoEncryptionKey(PathBuf),
    /// There is no signing keystore.
    #[error("no signing key at {0}: run `lcw keygen` (or `lcw keygen --import-key HEX` to keep an existing key)")]
    NoSigningKey(PathBuf),
    /// Authenticated decryption failed: the password is wrong or the file was altered.
    #[error("could not decrypt {0}: wrong password or corrupted file")]
    WrongPassword(PathBuf),
    /// A file is not in the expected format.
    #[error("{path} is not a usable key file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Keys already exist where new ones would be created.
    #[error("keys already exist in {0}; nothing was overwritten: run `lcw keys archive` first to set them aside")]
    Exists(PathBuf),
    /// The password is empty.
    #[error("an empty password is refused: put one in --password-file FILE or LCW_PASSWORD")]
    EmptyPassword,
    /// The key given to import is not a secp256k1 private key.
    #[error("the key to import is not a valid secp256k1 private key")]
    InvalidImportKey,
    /// There is nothing to archive.
    #[error("no active keys in {0}: nothing to archive")]
    NoActiveKeys(PathBuf),
    /// The directory given to recover is not an archived key set.
    #[error("{path} is not an archived key set in {archive}: run `lcw keys list` to see them")]
    NotArchived {
        /// What was given.
        path: PathBuf,
        /// The archive directory.
        archive: PathBuf,
    },
    /// A key set to recover is, or holds, a symbolic link or another file that is not a regular
    /// one: recovering it would make keys/ point wherever the link does.
    #[error(
        "{path} is a symbolic link or not a regular {kind}; `lcw keys recover` takes only the archived files \
         themselves: nothing was moved"
    )]
    NotPlain {
        /// The link or odd file.
        path: PathBuf,
        /// `directory` or `file`.
        kind: &'static str,
    },
}

/// Result alias.
pub type KeyResult<T> = Result<T, KeyError>;

/// The key directory `<data-dir>/keys`. Holds only its path.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

/// A freshly created key set.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// The signing key's address.
    pub address: Address,
    /// The encryption suite.
    pub suite: Suite,
    /// The encryption public key, as registered on chain.
    pub public_key: Bytes,
    /// Whether the signing key was imported (else generated).
    pub imported: bool,
    /// The signing keystore.
    pub signing_path: PathBuf,
    /// The encryption key file.
    pub encryption_path: PathBuf,
}

/// A key set on disk, active or archived. Fields are `None` when a file is missing or unreadable.
#[derive(Debug, Clone, Serialize)]
pub struct KeyEntry {
    /// The signing key's address.
    pub address: Option<Address>,
    /// The encryption suite.
    pub suite: Option<Suite>,
    /// The encryption public key.
    pub public_key: Option<Bytes>,
    /// The directory holding the set (`keys/` for the active one).
    pub path: PathBuf,
    /// Unix time it was archived; `None` for the active set.
    pub archived_at: Option<u64>,
    /// Why it was archived.
    pub reason: Option<String>,
}

impl KeyEntry {
    /// Whether this is the active set.
    pub fn is_active(&self) -> bool {
        self.archived_at.is_none()
    }
}

/// `encryption.json`.
#[derive(Serialize, Deserialize)]
struct EncryptionFile {
    version: u32,
    suite: Suite,
    public_key: Bytes,
    kdf: String,
    kdfparams: KdfParams,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    n: u32,
    r: u32,
    p: u32,
    dklen: u32,
    salt: String,
}

/// `archive/<name>/archive.json`.
#[derive(Serialize, Deserialize)]
struct ArchiveRecord {
    address: Option<Address>,
    suite: Option<Suite>,
    public_key: Option<Bytes>,
    archived_at: u64,
    archived_at_utc: String,
    reason: String,
}

/// A short, stable name for an encryption public key: the first 4 bytes of its keccak256, in hex.
pub fn fingerprint(public_key: &[u8]) -> String {
    alloy::hex::encode(&keccak256(public_key)[..4])
}

impl KeyDir {
    /// The key directory of `data_dir`: `<data_dir>/keys`.
    pub fn new(data_dir: &Path) -> KeyDir {
        KeyDir { dir: data_dir.join("keys") }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Where replaced sets go.
    pub fn archive_dir(&self) -> PathBuf {
        self.dir.join("archive")
    }

    /// The signing keystore.
    pub fn signing_path(&self) -> PathBuf {
        self.dir.join(SIGNING_FILE)
    }

    /// The encryption key file.
    pub fn encryption_path(&self) -> PathBuf {
        self.dir.join(ENCRYPTION_FILE)
    }

    /// Decrypts the encryption secret.
    pub fn load_encryption(&self, password: &str) -> KeyResult<EncryptionSecret> {
        decrypt_encryption(&self.encryption_path(), password)
    }

    /// The encryption suite and public key, read from the header (no password needed).
    pub fn encryption_public(&self) -> KeyResult<(Suite, Vec<u8>)> {
        let file = read_encryption(&self.encryption_path())?;
        Ok((file.suite, file.public_key.to_vec()))
    }

    /// Decrypts the signing key.
    pub fn load_signer(&self, password: &str) -> KeyResult<PrivateKeySigner> {
        let path = self.signing_path();
        if !path.exists() {
            return Err(KeyError::NoSigningKey(path));
        }
        lcw_chain::keys::load_keystore(&path, password).map_err(|e| {
            let reason = e.to_string();
            if reason.contains("wrong password") {
                KeyError::WrongPassword(path.clone())
            } else {
                KeyError::Malformed { path: path.clone(), reason }
            }
        })
    }

    /// The signing key's address, from the keystore's `address` field (no password needed).
    pub fn signing_address(&self) -> Option<Address> {
        keystore_address(&self.signing_path())
    }

    /// Creates a key set: the signing key (imported, or generated) and an encryption secret of
    /// `suite`, both under `password`. Refuses when either file exists.
    pub fn create(&self, suite: Suite, password: &str, import_signing_key: Option<B256>) -> KeyResult<Created> {
        if password.is_empty() {
            return Err(KeyError::EmptyPassword);
        }
        let (signing_path, encryption_path) = (self.signing_path(), self.encryption_path());
        if signing_path.exists() || encryption_path.exists() {
            return Err(KeyError::Exists(self.dir.clone()));
        }
        let signer = match import_signing_key {
            Some(key) => PrivateKeySigner::from_bytes(&key).map_err(|_| KeyError::InvalidImportKey)?,
            None => PrivateKeySigner::random(),
        };
        self.make_private(&self.dir)?;
        let secret = EncryptionSecret::generate(suite);
        let public_key = Bytes::from(secret.public_key());
        write_encryption(&encryption_path, &secret, password)?;
        if let Err(e) = lcw_chain::keys::create_keystore(&signing_path, &signer, password) {
            // Leave no half-made set behind: the encryption key was never registered anywhere.
            let _ = std::fs::remove_file(&encryption_path);
            return Err(KeyError::Malformed { path: signing_path, reason: e.to_string() });
        }
        tracing::info!(address = %signer.address(), suite = %suite, dir = %self.dir.display(), "created keys");
        Ok(Created {
            address: signer.address(),
            suite,
            public_key,
            imported: import_signing_key.is_some(),
            signing_path,
            encryption_path,
        })
    }

    /// Moves the active set into `archive/<UTC time>-<fingerprint>/` with an `archive.json`
    /// (address, suite, public key, time, `reason`). Returns the archive directory.
    pub fn archive(&self, reason: &str) -> KeyResult<PathBuf> {
        let active = self.active()?.ok_or_else(|| KeyError::NoActiveKeys(self.dir.clone()))?;
        let now = unix_now();
        let tag = match (&active.public_key, active.address) {
            (Some(pk), _) => fingerprint(pk),
            (None, Some(a)) => alloy::hex::encode(&a[..4]),
            (None, None) => "unknown".to_owned(),
        };
        let base = format!("{}-{tag}", compact_utc(now));
        let archive = self.archive_dir();
        self.make_private(&archive)?;
        let mut target = archive.join(&base);
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = archive.join(format!("{base}-{n}"));
        }
        create_private_dir(&target).map_err(io("create", &target))?;
        let record = ArchiveRecord {
            address: active.address,
            suite: active.suite,
            public_key: active.public_key.clone(),
            archived_at: now,
            archived_at_utc: utc(now),
            reason: reason.to_owned(),
        };
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        let record_path = target.join(ARCHIVE_FILE);
        write_private(&record_path, &json).map_err(io("write", &record_path))?;
        for name in [ENCRYPTION_FILE, SIGNING_FILE] {
            move_if_present(&self.dir.join(name), &target.join(name))?;
        }
        tracing::info!(archive = %target.display(), reason, "archived keys");
        Ok(target)
    }

    /// The active set (if any), then every archived set, oldest first.
    pub fn list(&self) -> KeyResult<Vec<KeyEntry>> {
        let mut out: Vec<KeyEntry> = self.active()?.into_iter().collect();
        let archive = self.archive_dir();
        let mut dirs = Vec::new();
        match std::fs::read_dir(&archive) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io("read", &archive))?;
                    // A link is not an archived set (recover refuses it too).
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(entry.path());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::Io { action: "read", path: archive, source: e }),
        }
        dirs.sort();
        out.extend(dirs.iter().map(|d| archived_entry(d)));
        Ok(out)
    }

    /// Makes an archived set active again, archiving the current active set first. `archived` is
    /// a directory under `archive/`: its name (as `lcw keys list` shows it), or a path to it. A
    /// path outside the archive, a symbolic link, or a set holding one is refused before
    /// anything moves.
    pub fn recover(&self, archived: &Path) -> KeyResult<()> {
        let archive = self.archive_dir();
        let not_archived = || KeyError::NotArchived { path: archived.to_owned(), archive: archive.clone() };
        // A bare name is the archive's, whatever the working directory holds.
        let bare = archived.components().count() == 1
            && matches!(archived.components().next(), Some(std::path::Component::Normal(_)));
        let candidate = if bare { archive.join(archived) } else { archived.to_owned() };
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(KeyError::NotPlain { path: candidate, kind: "directory" });
            }
            Ok(_) => {}
            Err(_) => return Err(not_archived()),
        }
        let source = candidate.canonicalize().map_err(|_| not_archived())?;
        let root = archive.canonicalize().map_err(|_| not_archived())?;
        if source.parent() != Some(root.as_path()) {
            return Err(not_archived());
        }
        let mut has_keys = false;
        for name in [ENCRYPTION_FILE, SIGNING_FILE] {
            match std::fs::symlink_metadata(source.join(name)) {
                Ok(m) if m.file_type().is_file() => has_keys = true,
                Ok(_) => return Err(KeyError::NotPlain { path: source.join(name), kind: "file" }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(KeyError::Io { action: "read", path: source.join(name), source: e }),
            }
        }
        if !has_keys {
            return Err(not_archived());
        }
        if self.active()?.is_some() {
            let name = source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            self.archive(&format!("replaced by `lcw keys recover {name}`"))?;
        }
        self.make_private(&self.dir)?;
        for name in [ENCRYPTION_FILE, SIGNING_FILE] {
            let from = source.join(name);
            // A file copied into the archive by hand may be readable by others: it is made
            // private before it enters keys/, inside the 0700 archive.
            if from.exists() {
                restrict(&from)?;
            }
            move_if_present(&from, &self.dir.join(name))?;
        }
        // The set lives in keys/ again; only its record remains to tidy.
        let _ = std::fs::remove_file(source.join(ARCHIVE_FILE));
        let _ = std::fs::remove_dir(&source);
        tracing::info!(from = %source.display(), "recovered keys");
        Ok(())
    }

    /// Creates `dir` (0700) or, when it exists wider, takes group and other access away.
    fn make_private(&self, dir: &Path) -> KeyResult<()> {
        create_private_dir(dir).map_err(io("create", dir))?;
        if tighten_dir(dir).map_err(io("restrict", dir))? {
            tracing::warn!(dir = %dir.display(), "the key directory was readable by others; it is now 0700");
        }
        Ok(())
    }

    /// The active set, when either file exists.
    fn active(&self) -> KeyResult<Option<KeyEntry>> {
        let (signing, encryption) = (self.signing_path(), self.encryption_path());
        if !signing.exists() && !encryption.exists() {
            return Ok(None);
        }
        let header = read_encryption(&encryption).ok();
        Ok(Some(KeyEntry {
            address: keystore_address(&signing),
            suite: header.as_ref().map(|h| h.suite),
            public_key: header.map(|h| h.public_key),
            path: self.dir.clone(),
            archived_at: None,
            reason: None,
        }))
    }
}

/// An archived set: its record, completed from the files when the record is missing.
fn archived_entry(dir: &Path) -> KeyEntry {
    let record: Option<ArchiveRecord> =
        std::fs::read(dir.join(ARCHIVE_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let header = read_encryption(&dir.join(ENCRYPTION_FILE)).ok();
    let archived_at = record.as_ref().map(|r| r.archived_at).or_else(|| {
        let modified = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
        Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
    });
    KeyEntry {
        address: keystore_address(&dir.join(SIGNING_FILE)).or(record.as_ref().and_then(|r| r.address)),
        suite: header.as_ref().map(|h| h.suite).or(record.as_ref().and_then(|r| r.suite)),
        public_key: header.map(|h| h.public_key).or(record.as_ref().and_then(|r| r.public_key.clone())),
        path: dir.to_owned(),
        archived_at: Some(archived_at.unwrap_or(0)),
        reason: record.map(|r| r.reason),
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_owned();
    move |source| KeyError::Io { action, path, source }
}

/// Mode 0600 for a key file lcw did not write (on unix).
fn restrict(path: &Path) -> KeyResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io("restrict", path))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn move_if_present(from: &Path, to: &Path) -> KeyResult<()> {
    if from.exists() {
        std::fs::rename(from, to).map_err(io("move", from))?;
    }
    Ok(())
}

/// geth's `address` field of a keystore (lowercase hex, with or without 0x).
fn keystore_address(path: &Path) -> Option<Address> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let hex = json.get("address")?.as_str()?;
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    hex.parse().ok()
}

fn read_encryption(path: &Path) -> KeyResult<EncryptionFile> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::NoEncryptionKey(path.to_owned())),
        Err(e) => return Err(KeyError::Io { action: "read", path: path.to_owned(), source: e }),
    };
    let malformed = |reason: String| KeyError::Malformed { path: path.to_owned(), reason };
    let file: EncryptionFile =
        serde_json::from_slice(&bytes).map_err(|e| malformed(format!("not the lcw format: {e}")))?;
    if file.version != 1 {
        return Err(malformed(format!("version {} (this lcw reads version 1)", file.version)));
    }
    match Suite::for_public_key(&file.public_key) {
        Ok(s) if s == file.suite => Ok(file),
        _ => Err(malformed(format!("the public key is not a {} key", file.suite))),
    }
}

fn decrypt_encryption(path: &Path, password: &str) -> KeyResult<EncryptionSecret> {
    let file = read_encryption(path)?;
    let malformed = |reason: &str| KeyError::Malformed { path: path.to_owned(), reason: reason.to_owned() };
    let k = &file.kdfparams;
    if file.kdf != "scrypt" {
        return Err(malformed("kdf must be scrypt"));
    }
    // The keystore's bounds (at most 256 MiB and 1 GiB of scrypt work), checked before deriving.
    let params = lcw_chain::keys::scrypt_params(k.n.into(), k.r.into(), k.p.into())
        .map_err(|e| KeyError::Malformed { path: path.to_owned(), reason: e.to_string() })?;
    if k.dklen != KEY_LEN as u32 {
        return Err(malformed("kdfparams.dklen must be 32"));
    }
    let hex = |s: &str, what: &str| alloy::hex::decode(s).map_err(|_| malformed(&format!("{what} is not hex")));
    let salt = hex(&k.salt, "kdfparams.salt")?;
    let nonce = hex(&file.nonce, "nonce")?;
    let ciphertext = hex(&file.ciphertext, "ciphertext")?;
    if salt.len() < SALT_LEN || nonce.len() != NONCE_LEN || ciphertext.len() != KEY_LEN + TAG_LEN {
        return Err(malformed("salt, nonce or ciphertext has the wrong length"));
    }
    let key = derive(password, &salt, params.log_n(), params.r(), params.p(), path)?;
    let plain = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_ref()))
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: &aad(file.suite, &file.public_key) })
        .map(Zeroizing::new)
        .map_err(|_| KeyError::WrongPassword(path.to_owned()))?;
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    bytes.copy_from_slice(&plain);
    let secret = EncryptionSecret::from_bytes(file.suite, &bytes)
        .map_err(|_| malformed("the secret is not valid for its suite"))?;
    if secret.public_key() != file.public_key.as_ref() {
        return Err(malformed("the public key in the header does not belong to the secret"));
    }
    Ok(secret)
}

fn write_encryption(path: &Path, secret: &EncryptionSecret, password: &str) -> KeyResult<()> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, path)?;
    let suite = secret.suite();
    let public_key = Bytes::from(secret.public_key());
    let plain = secret.to_bytes();
    let ciphertext = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_ref()))
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_ref(), aad: &aad(suite, &public_key) })
        .map_err(|_| KeyError::Malformed { path: path.to_owned(), reason: "encryption failed".into() })?;
    let file = EncryptionFile {
        version: 1,
        suite,
        kdf: "scrypt".into(),
        kdfparams: KdfParams {
            n: 1 << SCRYPT_LOG_N,
            r: SCRYPT_R,
            p: SCRYPT_P,
            dklen: KEY_LEN as u32,
            salt: alloy::hex::encode(salt),
        },
        public_key,
        nonce: alloy::hex::encode(nonce),
        ciphertext: alloy::hex::encode(ciphertext),
    };
    let json = serde_json::to_vec_pretty(&file).unwrap_or_default();
    let tmp = scratch_path(path);
    write_private(&tmp, &json).map_err(io("write", &tmp))?;
    place_new(&tmp, path).map_err(|e| match e.kind() {
        // Another keygen got there first: its file stays, this one is dropped.
        std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.parent().unwrap_or(path).to_owned()),
        _ => KeyError::Io { action: "move", path: path.to_owned(), source: e },
    })
}

/// The associated data: the header fields an attacker might swap.
fn aad(suite: Suite, public_key: &[u8]) -> Vec<u8> {
    [suite.name().as_bytes(), public_key].concat()
}

fn derive(password: &str, salt: &[u8], log_n: u8, r: u32, p: u32, path: &Path) -> KeyResult<Zeroizing<[u8; 32]>> {
    let malformed = || KeyError::Malformed { path: path.to_owned(), reason: "invalid scrypt parameters".into() };
    let params = scrypt::Params::new(log_n, r, p).map_err(|_| malformed())?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    scrypt::scrypt(password.as_bytes(), salt, &params, key.as_mut()).map_err(|_| malformed())?;
    Ok(key)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `(year, month, day, hour, minute, second)` of a unix time, UTC (proleptic Gregorian).
fn civil(ts: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (days, secs) = ((ts / 86_400) as i64, ts % 86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// `2026-05-01 12:00:00 UTC`.
pub fn utc(ts: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ts);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// `20260501T120000Z`, for directory names.
fn compact_utc(ts: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ts);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

impl fmt::Display for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = self.address.map(|a| a.to_string()).unwrap_or_else(|| "(no signing key)".into());
        let suite = self.suite.map(Suite::name).unwrap_or("(no encryption key)");
        let key = self.public_key.as_ref().map(|k| fingerprint(k)).unwrap_or_else(|| "-".into());
        match self.archived_at {
            None => write!(f, "active    {address} {suite} key {key} in {}", self.path.display()),
            Some(at) => write!(f, "archived  {address} {suite} key {key} at {} in {}", utc(at), self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "correct horse battery staple";

    fn dir() -> (tempfile::TempDir, KeyDir) {
        let tmp = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(tmp.path());
        (tmp, keys)
    }

    #[test]
    fn both_suites_round_trip_and_the_header_needs_no_password() {
        for suite in [Suite::P256AesGcm, Suite::X25519] {
            let (_tmp, keys) = dir();
            let created = keys.create(suite, PW, None).unwrap();
            assert_eq!(created.suite, suite);
            assert_eq!(created.public_key.len(), suite.public_len());
            let secret = keys.load_encryption(PW).unwrap();
            assert_eq!(secret.suite(), suite);
            assert_eq!(secret.public_key(), created.public_key.to_vec());
            assert_eq!(keys.encryption_public().unwrap(), (suite, created.public_key.to_vec()));
            assert_eq!(keys.load_signer(PW).unwrap().address(), created.address);
            assert_eq!(keys.signing_address(), Some(created.address));
            let text = std::fs::read_to_string(keys.encryption_path()).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(json["suite"], suite.name());
            assert_eq!(json["kdfparams"]["n"], 32768);
            assert_eq!(json["kdfparams"]["r"], 8);
            assert_eq!(json["kdfparams"]["p"], 1);
        }
    }

    #[test]
    fn an_imported_signing_key_keeps_its_address() {
        let (_tmp, keys) = dir();
        let signer = PrivateKeySigner::random();
        let created = keys.create(Suite::X25519, PW, Some(signer.to_bytes())).unwrap();
        assert!(created.imported);
        assert_eq!(created.address, signer.address());
        assert_eq!(keys.load_signer(PW).unwrap().address(), signer.address());
        let (_tmp2, other) = dir();
        assert!(matches!(other.create(Suite::X25519, PW, Some(B256::ZERO)), Err(KeyError::InvalidImportKey)));
        assert!(!other.encryption_path().exists(), "nothing written for a bad import");
    }

    #[test]
    fn a_wrong_password_is_named_without_the_secret() {
        let (_tmp, keys) = dir();
        keys.create(Suite::P256AesGcm, PW, None).unwrap();
        let e = keys.load_encryption("hunter2").unwrap_err();
        assert!(matches!(e, KeyError::WrongPassword(_)));
        let m = e.to_string();
        assert!(
            m.contains("could not decrypt") && m.contains("encryption.json") && m.contains("wrong password"),
            "{m}"
        );
        assert!(!m.contains("hunter2") && !m.contains(PW));
        let e = keys.load_signer("hunter2").unwrap_err();
        assert!(matches!(e, KeyError::WrongPassword(_)), "{e}");
        assert!(e.to_string().contains("signing.json"));
    }

    #[test]
    fn missing_files_say_to_run_keygen() {
        let (_tmp, keys) = dir();
        let e = keys.load_encryption(PW).unwrap_err().to_string();
        assert!(e.starts_with("no encryption key at") && e.contains("lcw keygen"), "{e}");
        assert!(keys.encryption_public().unwrap_err().to_string().contains("lcw keygen"));
        assert!(keys.load_signer(PW).unwrap_err().to_string().contains("lcw keygen"));
        assert!(matches!(keys.create(Suite::X25519, "", None), Err(KeyError::EmptyPassword)));
    }

    #[test]
    fn a_tampered_file_fails_to_decrypt() {
        let (_tmp, keys) = dir();
        keys.create(Suite::P256AesGcm, PW, None).unwrap();
        let path = keys.encryption_path();
        let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let tamper = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = original.clone();
            f(&mut v);
            std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
            keys.load_encryption(PW).unwrap_err()
        };
        // A flipped ciphertext byte.
        let e = tamper(&|v| {
            let mut ct = alloy::hex::decode(v["ciphertext"].as_str().unwrap()).unwrap();
            ct[0] ^= 1;
            v["ciphertext"] = alloy::hex::encode(ct).into();
        });
        assert!(matches!(e, KeyError::WrongPassword(_)), "{e}");
        // Another valid P-256 public key in the header: the AAD no longer matches.
        let other = EncryptionSecret::generate(Suite::P256AesGcm).public_key();
        let e = tamper(&|v| v["public_key"] = format!("0x{}", alloy::hex::encode(&other)).into());
        assert!(matches!(e, KeyError::WrongPassword(_)), "{e}");
        // A suite that does not fit the key.
        let e = tamper(&|v| v["suite"] = "x25519".into());
        assert!(matches!(e, KeyError::Malformed { .. }), "{e}");
        // Absurd scrypt cost.
        let e = tamper(&|v| v["kdfparams"]["n"] = (1u64 << 30).into());
        assert!(e.to_string().contains("scrypt parameters"), "{e}");
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(keys.load_encryption(PW), Err(KeyError::Malformed { .. })));
    }

    #[test]
    fn scrypt_costs_past_the_keystore_bounds_are_refused_before_deriving() {
        let (_tmp, keys) = dir();
        keys.create(Suite::X25519, PW, None).unwrap();
        let path = keys.encryption_path();
        let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // 4 GiB (n = 2^20, r = 32) and 16 GiB of work (p = 16) were accepted before; 2^30 never was.
        for (n, r, p) in [(1u64 << 20, 32u64, 16u64), (1 << 19, 8, 1), (1 << 18, 8, 8), (1 << 30, 8, 1)] {
            let mut v = original.clone();
            v["kdfparams"]["n"] = n.into();
            v["kdfparams"]["r"] = r.into();
            v["kdfparams"]["p"] = p.into();
            std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
            let started = std::time::Instant::now();
            let e = keys.load_encryption(PW).unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(1), "n={n} r={r} p={p}");
            assert!(matches!(e, KeyError::Malformed { .. }), "{e}");
            assert!(e.to_string().contains("scrypt parameters out of range"), "{e}");
        }
        // The signing keystore is held to the same bounds.
        let signing = keys.signing_path();
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&signing).unwrap()).unwrap();
        v["crypto"]["kdfparams"]["n"] = (1u64 << 30).into();
        std::fs::write(&signing, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = keys.load_signer(PW).unwrap_err();
        assert!(matches!(e, KeyError::Malformed { .. }) && e.to_string().contains("before any key derivation"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, keys) = dir();
        keys.create(Suite::X25519, PW, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys.encryption_path()), 0o600);
        assert_eq!(mode(&keys.signing_path()), 0o600);
        assert_eq!(mode(keys.path()), 0o700);
        let names: Vec<_> = std::fs::read_dir(keys.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary files remain: {names:?}");
    }

    #[test]
    fn create_refuses_to_overwrite() {
        let (_tmp, keys) = dir();
        let first = keys.create(Suite::X25519, PW, None).unwrap();
        let e = keys.create(Suite::P256AesGcm, PW, None).unwrap_err();
        assert!(matches!(e, KeyError::Exists(_)));
        assert!(e.to_string().contains("lcw keys archive"), "{e}");
        assert_eq!(keys.encryption_public().unwrap().1, first.public_key.to_vec(), "unchanged");
    }

    #[test]
    fn archive_list_and_recover_move_sets_and_never_delete_one() {
        let (_tmp, keys) = dir();
        assert!(keys.list().unwrap().is_empty());
        assert!(matches!(keys.archive("nothing"), Err(KeyError::NoActiveKeys(_))));
        let a = keys.create(Suite::P256AesGcm, PW, None).unwrap();
        let archived_a = keys.archive("rotating").unwrap();
        assert!(archived_a.starts_with(keys.archive_dir()));
        assert!(archived_a.file_name().unwrap().to_string_lossy().ends_with(&fingerprint(&a.public_key)));
        assert!(!keys.encryption_path().exists() && !keys.signing_path().exists());
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(archived_a.join(ARCHIVE_FILE)).unwrap()).unwrap();
        assert_eq!(record["reason"], "rotating");
        assert_eq!(record["suite"], "p256-aesgcm");
        let b = keys.create(Suite::X25519, PW, None).unwrap();
        let list = keys.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].is_active());
        assert_eq!(list[0].address, Some(b.address));
        assert_eq!(list[0].public_key.as_ref(), Some(&b.public_key));
        assert!(!list[1].is_active());
        assert_eq!(list[1].address, Some(a.address));
        assert_eq!(list[1].suite, Some(Suite::P256AesGcm));
        assert_eq!(list[1].reason.as_deref(), Some("rotating"));
        assert!(list[1].to_string().starts_with("archived"), "{}", list[1]);
        // Recover by name: b is archived first, a becomes active and still decrypts.
        keys.recover(Path::new(archived_a.file_name().unwrap())).unwrap();
        assert_eq!(keys.load_signer(PW).unwrap().address(), a.address);
        assert_eq!(keys.load_encryption(PW).unwrap().public_key(), a.public_key.to_vec());
        assert!(!archived_a.exists(), "the recovered set left the archive");
        let list = keys.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].address, Some(a.address));
        assert_eq!(list[1].address, Some(b.address));
        assert!(list[1].reason.as_deref().unwrap().contains("lcw keys recover"));
        // Only archived sets can be recovered.
        let e = keys.recover(keys.path()).unwrap_err();
        assert!(matches!(e, KeyError::NotArchived { .. }), "{e}");
        assert!(matches!(keys.recover(Path::new("no-such-set")), Err(KeyError::NotArchived { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn a_wide_key_directory_is_tightened_and_recovered_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let (_tmp, keys) = dir();
        std::fs::create_dir_all(keys.path()).unwrap();
        std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        keys.create(Suite::X25519, PW, None).unwrap();
        assert_eq!(mode(keys.path()), 0o700, "keygen into a 0755 keys/ leaves it 0700");
        std::fs::create_dir_all(keys.archive_dir()).unwrap();
        std::fs::set_permissions(keys.archive_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let archived = keys.archive("rotating").unwrap();
        assert_eq!((mode(&keys.archive_dir()), mode(&archived)), (0o700, 0o700));
        assert_eq!(mode(&archived.join(ARCHIVE_FILE)), 0o600);
        // A file made readable in the archive by hand is private again once recovered.
        std::fs::set_permissions(archived.join(SIGNING_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        keys.recover(&archived).unwrap();
        assert_eq!((mode(&keys.signing_path()), mode(&keys.encryption_path())), (0o600, 0o600));
    }

    #[cfg(unix)]
    #[test]
    fn recover_refuses_links_and_directories_outside_the_archive_before_moving_anything() {
        use std::os::unix::fs::symlink;
        let (tmp, keys) = dir();
        let a = keys.create(Suite::X25519, PW, None).unwrap();
        let archived_a = keys.archive("a").unwrap();
        let b = keys.create(Suite::P256AesGcm, PW, None).unwrap();
        // A copy of a set outside the archive, by absolute path and by a path that climbs out.
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        for name in [SIGNING_FILE, ENCRYPTION_FILE] {
            std::fs::copy(archived_a.join(name), outside.join(name)).unwrap();
        }
        let climbs = keys.archive_dir().join("..").join("..").join("outside");
        for path in [outside.clone(), climbs, keys.archive_dir().join(".."), keys.path().to_owned()] {
            let e = keys.recover(&path).unwrap_err();
            assert!(matches!(e, KeyError::NotArchived { .. }), "{}: {e}", path.display());
            assert!(e.to_string().contains("lcw keys list"), "{e}");
        }
        // A link in the archive, to a set outside it or to one inside it.
        symlink(&outside, keys.archive_dir().join("planted")).unwrap();
        symlink(&archived_a, keys.archive_dir().join("alias")).unwrap();
        for name in ["planted", "alias"] {
            for given in [PathBuf::from(name), keys.archive_dir().join(name)] {
                let e = keys.recover(&given).unwrap_err();
                assert!(matches!(e, KeyError::NotPlain { kind: "directory", .. }), "{}: {e}", given.display());
                assert!(e.to_string().contains("symbolic link") && e.to_string().contains("nothing was moved"));
            }
        }
        // A key file in an archived set that is a link to a file elsewhere.
        let linked = keys.archive_dir().join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::fs::copy(archived_a.join(ENCRYPTION_FILE), linked.join(ENCRYPTION_FILE)).unwrap();
        symlink(outside.join(SIGNING_FILE), linked.join(SIGNING_FILE)).unwrap();
        let e = keys.recover(Path::new("linked")).unwrap_err();
        assert!(matches!(e, KeyError::NotPlain { kind: "file", .. }), "{e}");
        assert!(e.to_string().contains("signing.json"), "{e}");
        // Nothing moved: b is still active, a still archived, the link's target untouched.
        assert_eq!(keys.load_signer(PW).unwrap().address(), b.address);
        assert_eq!(keys.encryption_public().unwrap().1, b.public_key.to_vec());
        assert!(archived_a.join(SIGNING_FILE).exists() && outside.join(SIGNING_FILE).exists());
        assert!(linked.join(ENCRYPTION_FILE).exists());
        // The archived set itself, by name, still recovers.
        keys.recover(Path::new(archived_a.file_name().unwrap())).unwrap();
        assert_eq!(keys.load_signer(PW).unwrap().address(), a.address);
    }

    #[test]
    fn racing_keygens_leave_exactly_one_set_whose_keys_belong_together() {
        let (_tmp, keys) = dir();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(|| keys.create(Suite::X25519, PW, None))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "{results:?}");
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, KeyError::Exists(_))));
        assert_eq!(keys.load_signer(PW).unwrap().address(), won[0].address);
        assert_eq!(keys.load_encryption(PW).unwrap().public_key(), won[0].public_key.to_vec());
        let names: Vec<_> = std::fs::read_dir(keys.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no scratch files remain: {names:?}");
    }

    #[test]
    fn unrelated_files_in_the_key_dir_are_ignored() {
        let (_tmp, keys) = dir();
        std::fs::create_dir_all(keys.path()).unwrap();
        std::fs::write(keys.path().join("worker.json"), b"{}").unwrap();
        assert!(keys.list().unwrap().is_empty());
        keys.create(Suite::X25519, PW, None).unwrap();
        assert_eq!(keys.list().unwrap().len(), 1);
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
        assert_eq!(compact_utc(1_767_225_600), "20260101T000000Z");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let (_tmp, keys) = dir();
        keys.create(Suite::P256AesGcm, PW, None).unwrap();
        let secret = keys.load_encryption(PW).unwrap();
        let raw = alloy::hex::encode(secret.to_bytes().as_ref());
        for text in [format!("{keys:?}"), format!("{secret:?}"), format!("{:?}", keys.list().unwrap())] {
            assert!(!text.contains(&raw) && !text.contains(PW), "{text}");
        }
    }
}
