//! Signing keys: geth v3 keystores (scrypt or pbkdf2, AES-128-CTR) with the password from a file
//! or an environment variable. Neither the password nor the key ever reaches a log or an error.

use std::path::Path;

use alloy::signers::local::PrivateKeySigner;

use crate::{SettlerError, SettlerResult};

/// Environment variable holding a keystore password.
pub const PASSWORD_ENV: &str = "LCW_PASSWORD";

/// The keystore password: the first line of `file` when given, else `LCW_PASSWORD`.
pub fn password(file: Option<&Path>) -> SettlerResult<String> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| SettlerError::Key(format!("cannot read the password file {}: {e}", file.display())))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    std::env::var(PASSWORD_ENV).map_err(|_| {
        SettlerError::Key(format!("the keystore needs a password: pass --password-file FILE or set {PASSWORD_ENV}"))
    })
}

/// Decrypts the keystore at `path`.
pub fn load_keystore(path: &Path, password: &str) -> SettlerResult<PrivateKeySigner> {
    if !path.exists() {
        return Err(SettlerError::Key(format!("no keystore at {}", path.display())));
    }
    PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| {
        let m = e.to_string();
        if m.to_lowercase().contains("mac") {
            SettlerError::Key(format!("wrong password for the keystore {}", path.display()))
        } else {
            SettlerError::Key(format!("{} is not a readable keystore (geth v3 JSON expected): {m}", path.display()))
        }
    })
}

/// Writes `signer` as a geth v3 keystore in `dir` (scrypt), returning the file path.
pub fn write_keystore(
    dir: &Path,
    signer: &PrivateKeySigner,
    password: &str,
    name: &str,
) -> SettlerResult<std::path::PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| SettlerError::Key(format!("cannot create {}: {e}", dir.display())))?;
    let mut rng = rand::thread_rng();
    PrivateKeySigner::encrypt_keystore(dir, &mut rng, signer.to_bytes(), password, Some(name))
        .map_err(|e| SettlerError::Key(format!("cannot write a keystore in {}: {e}", dir.display())))?;
    Ok(dir.join(name))
}
