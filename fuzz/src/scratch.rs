//! A scratch directory per fuzzing process, for targets whose code under test reads files.
//!
//! libFuzzer ends a process with `exit`, so nothing is cleaned up on the way out; instead each
//! process removes the directories of processes that are gone when it makes its own. `fuzz/run.sh`
//! points `TMPDIR` into `fuzz/target` so that they never pile up in the system's temp dir.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PREFIX: &str = "lcw-fuzz-";

/// `$TMPDIR/lcw-fuzz-<pid>`, created on first use.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir();
        remove_stale(&base);
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A start-up invariant of the target: without a scratch dir it cannot run at all.
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
}

/// Removes the scratch dirs of processes that no longer run (Linux: no `/proc/<pid>`).
fn remove_stale(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
