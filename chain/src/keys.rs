//! Signing keys: geth v3 keystores (scrypt or pbkdf2, AES-128-CTR) with the password from a file
//! or an environment variable. Neither the password nor the key ever reaches a log or an error.

use std::path::Path;

use alloy::signers::local::PrivateKeySigner;

use crate::{ChainError, ChainResult};

/// Environment variable holding a keystore password.
pub const PASSWORD_ENV: &str = "LCW_PASSWORD";

/// The keystore password: the first line of `file` when given, else `LCW_PASSWORD`.
pub fn password(file: Option<&Path>) -> ChainResult<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| ChainError::Key(format!("cannot read the password file {}: {e}", file.display())))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    std::env::var(PASSWORD_ENV).map_err(|_| {
        ChainError::Key(format!("the keystore needs a password: pass --password-file FILE or set {PASSWORD_ENV}"))
    })
}

/// Decrypts the keystore at `path`.
pub fn load_keystore(path: &Path, password: &str) -> ChainResult<PrivateKeySigner> {
    if !path.exists() {
        return Err(ChainError::Key(format!("no keystore at {}", path.display())));
    }
    PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| {
        let m = e.to_string();
        if m.to_lowercase().contains("mac") {
            ChainError::Key(format!("wrong password for the keystore {}", path.display()))
        } else {
            ChainError::Key(format!("{} is not a readable keystore (geth v3 JSON expected): {m}", path.display()))
        }
    })
}

/// Writes `signer` as a geth v3 keystore in `dir` (scrypt), returning the file path.
pub fn write_keystore(
    dir: &Path,
    signer: &PrivateKeySigner,
    password: &str,
    name: &str,
) -> ChainResult<std::path::PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| ChainError::Key(format!("cannot create {}: {e}", dir.display())))?;
    let mut rng = rand::thread_rng();
    PrivateKeySigner::encrypt_keystore(dir, &mut rng, signer.to_bytes(), password, Some(name))
        .map_err(|e| ChainError::Key(format!("cannot write a keystore in {}: {e}", dir.display())))?;
    Ok(dir.join(name))
}

/// Writes `signer` as a geth v3 keystore (scrypt) at exactly `path`, with the `address` field geth
/// writes (so the address is known without the password) and mode 0600. Refuses to overwrite an
/// existing file. The file appears atomically: it is written beside `path` and renamed.
pub fn create_keystore(path: &Path, signer: &PrivateKeySigner, password: &str) -> ChainResult<std::path::PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = |what: &str, p: &Path, e: std::io::Error| ChainError::Key(format!("cannot {what} {}: {e}", p.display()));
    if path.exists() {
        return Err(ChainError::Key(format!("{} already exists; it is never overwritten", path.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    // alloy writes the keystore with the process umask; do it in a private scratch directory.
    let scratch = dir.join(format!(".keystore-{:016x}", rand::random::<u64>()));
    create_private_dir(&scratch).map_err(|e| io("create", &scratch, e))?;
    let written = (|| {
        let mut rng = rand::thread_rng();
        PrivateKeySigner::encrypt_keystore(&scratch, &mut rng, signer.to_bytes(), password, Some("keystore.json"))
            .map_err(|e| ChainError::Key(format!("cannot encrypt a keystore in {}: {e}", scratch.display())))?;
        let file = scratch.join("keystore.json");
        let text = std::fs::read_to_string(&file).map_err(|e| io("read", &file, e))?;
        let mut json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ChainError::Key(format!("the keystore just written is not JSON: {e}")))?;
        if let Some(object) = json.as_object_mut() {
            // geth's form: lowercase hex without 0x.
            object.insert("address".into(), alloy::hex::encode(signer.address()).into());
        }
        let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("keystore")));
        write_private(&tmp, json.to_string().as_bytes()).map_err(|e| io("write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("move into place", path, e))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    written?;
    Ok(path.to_owned())
}

/// Creates a directory only the owner can enter (0700 on unix).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `bytes` to a new file only the owner can read (0600 on unix), synced to disk.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // An existing file keeps its mode on open; tighten it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keystore_loads_names_its_address_and_is_private() {
        let dir = tempfile_dir();
        let path = dir.join("signing.json");
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
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("signing.json")], "no scratch files remain");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lcw-settler-keys-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
