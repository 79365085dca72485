//! The workspace keeps the layout of ARCHITECTURE.md §3: every crate has a `//!` overview saying
//! what it owns, and nothing unexpected sits at the top level.

use std::path::Path;

const CRATES: [&str; 8] = ["schema", "indexer", "settler", "worker", "queries", "cli", "contracts", "tests"];

#[test]
fn every_crate_opens_with_an_overview() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for krate in CRATES {
        let lib = if krate == "cli" { root.join("cli/src/main.rs") } else { root.join(krate).join("src/lib.rs") };
        let text = std::fs::read_to_string(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
        let overview: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
        assert!(overview.len() >= 3, "{} must open with a //! overview of what the crate owns", lib.display());
    }
}

#[test]
fn top_level_has_only_the_documented_entries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let allowed = [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "Makefile",
        "rustfmt.toml",
        ".ci",
        ".cargo",
        ".gitignore",
        ".git",
        "target",
        "lcw-data",
    ];
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            CRATES.contains(&name.as_str()) || allowed.contains(&name.as_str()),
            "unexpected top-level entry `{name}`; document why it exists in README.md and allow it here"
        );
    }
}
