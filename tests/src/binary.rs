//! The real `lcw` binary as tests run it: in a clean environment. Every flag of lcw has an
//! environment fallback (`RPC_URL`, `LCW_NETWORK`, `WORKER_KEYSTORE_PATH`, `LCW_LLM_URL`,
//! `LCW_PASSWORD`, `LCW_LOG_FORMAT`, ...), so one variable left in a developer's shell changes
//! what a test's command does. A command made here starts from an empty environment and gets back
//! only [`KEPT`]; a test that means a variable sets it on the command.
//!
//! The tests of lcw-cli name the binary with `env!("CARGO_BIN_EXE_lcw")`; tests elsewhere find it
//! with [`locate`].

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The variables a command keeps from the test's environment: where programs are found (`PATH`;
/// `ANVIL_BIN` and `LLM_CACHE` point lcw at the same anvil and LLM server as the test's own
/// [`crate::TestNet`] and [`crate::llm`]), the home and temp directories, the locale, and
/// `RUST_BACKTRACE` for a panic's trace. None of them is a setting of lcw.
pub const KEPT: [&str; 8] = ["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "ANVIL_BIN", "LLM_CACHE", "RUST_BACKTRACE"];

/// The log filter of every `lcw` a test runs, unless the test sets `LCW_LOG` itself.
pub const LOG: &str = "warn";

/// `program` in a clean environment: only [`KEPT`], taken from this process's environment.
pub fn clean(program: impl AsRef<OsStr>) -> Command {
    clean_from(program, std::env::vars_os())
}

/// `program` in a clean environment: only the [`KEPT`] variables of `env`.
pub fn clean_from(program: impl AsRef<OsStr>, env: impl IntoIterator<Item = (OsString, OsString)>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    cmd.envs(env.into_iter().filter(|(name, _)| KEPT.iter().any(|kept| name == kept)));
    cmd
}

/// The `lcw` binary at `bin` in a clean environment ([`clean`]), logging at [`LOG`].
pub fn lcw(bin: impl AsRef<OsStr>) -> Command {
    let mut cmd = clean(bin);
    cmd.env("LCW_LOG", LOG);
    cmd
}

/// The `lcw` binary beside the running test (`target/<profile>/lcw`, built by `cargo test
/// --workspace` for the CLI's own tests, or by `cargo build -p lcw-cli`); `LCW_BIN` overrides.
/// Panics with what to run when it is missing.
pub fn locate() -> PathBuf {
    let path = std::env::var_os("LCW_BIN").map(PathBuf::from).unwrap_or_else(|| profile_dir().join("lcw"));
    assert!(
        path.is_file(),
        "the lcw binary is missing at {}: build it with `cargo build -p lcw-cli` (`cargo test --workspace` does)",
        path.display()
    );
    path
}

/// `target/<profile>`: test executables run from `target/<profile>/deps`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent().and_then(Path::parent).expect("the test runs from target/<profile>/deps").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(name: &str, value: &str) -> (OsString, OsString) {
        (name.into(), value.into())
    }

    #[test]
    fn only_the_kept_variables_reach_the_command() {
        let env = [os("PATH", "/bin:/usr/bin"), os("RPC_URL", "http://leaked"), os("HOME", "/home/dev")];
        let env = [env.as_slice(), &[os("WORKER_KEYSTORE_PATH", "/leaked"), os("LCW_LOG", "trace")]].concat();
        let cmd = clean_from("lcw", env);
        let mut set: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        set.sort();
        assert_eq!(set, [("HOME".into(), Some("/home/dev".into())), ("PATH".into(), Some("/bin:/usr/bin".into()))]);
    }

    #[test]
    fn the_child_sees_nothing_but_the_kept_variables() {
        let env = [os("PATH", &std::env::var("PATH").unwrap_or_default()), os("LCW_NETWORK", "/leaked.json")];
        let out = clean_from("env", env).output().expect("run env");
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(name, _)| name.to_owned()))
            .collect();
        assert_eq!(names, ["PATH"], "env printed {}", String::from_utf8_lossy(&out.stdout));
    }
}
