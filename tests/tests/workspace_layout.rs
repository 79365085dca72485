//! The workspace keeps the layout of ARCHITECTURE.md §3: every crate has a `//!` overview saying
//! what it owns, and nothing unexpected sits at the top level.

use std::path::Path;

const CRATES: [&str; 9] = ["schema", "chain", "indexer", "settler", "worker", "queries", "cli", "contracts", "tests"];

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
        "fuzz",
        "deny",
        "deny.toml",
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

/// Text files the repository tracks (sources, scripts, docs, configuration), skipping build
/// output and generated artifacts.
fn tracked_text_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), ".git" | "target" | "node_modules" | "lcw-data" | "out") {
                    stack.push(path);
                }
                continue;
            }
            let text = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("rs" | "toml" | "md" | "sh" | "js" | "json" | "sql" | "sol" | "graphql" | "html" | "py" | "txt")
            ) || matches!(name.as_str(), "Makefile" | "run");
            if text {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn nothing_refers_to_a_path_outside_the_repository() {
    // A clone of the repository alone must build and pass its tests: no test, script or document
    // may lean on a sibling folder (design notes, references) that a clone does not have.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // Built from parts, so that this file does not name them itself.
    let sibling = ["..", "shared"].join("/");
    let outside = [sibling.clone(), format!("../{sibling}"), ["", "work", "shared"].join("/")];
    let mut found = Vec::new();
    let files = tracked_text_files(root);
    assert!(files.len() > 100, "found only {} files under {}", files.len(), root.display());
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        for (i, line) in text.lines().enumerate() {
            if outside.iter().any(|p| line.contains(p.as_str())) {
                found.push(format!("{}:{}: {}", path.strip_prefix(root).unwrap().display(), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "files refer to paths outside the repository:\n{}", found.join("\n"));
}
