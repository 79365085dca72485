//! The workspace keeps the layout of ARCHITECTURE.md §3: every crate has a `//!` overview saying
//! what it owns, and nothing unexpected sits at the top level.

use std::path::Path;

const CRATES: [&str; 10] =
    ["schema", "chain", "indexer", "settler", "worker", "queries", "cli", "contracts", "tests", "replica"];

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
        ".config",
        ".gitignore",
        ".git",
        "fuzz",
        "deny",
        "deny.toml",
        "docs",
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

/// The README and every chapter of the book (`docs/src`), as (path, text).
fn documents(root: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut paths = vec![root.join("README.md")];
    let mut stack = vec![root.join("docs/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// The lines of a Markdown text outside fenced code blocks, numbered from 1, with inline code
/// spans blanked (a `[a](b)` or `# x` inside code is not a link or a heading).
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
        if marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap()) {
            match &fence {
                None => fence = Some(marker),
                Some(open) if marker.starts_with(open.as_str()) && trimmed.trim_end() == marker => fence = None,
                Some(_) => {}
            }
            continue;
        }
        if fence.is_some() {
            continue;
        }
        let mut prose = String::with_capacity(line.len());
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
                prose.push(' ');
            } else {
                prose.push(if in_code { ' ' } else { c });
            }
        }
        out.push((i + 1, prose));
    }
    out
}

/// The anchor mdBook and GitHub give a heading: lowercase, whitespace to `-`, letters, digits,
/// `_` and `-` kept, every other character (punctuation, backticks, emphasis) dropped.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The anchors of a Markdown text's ATX headings (`#` to `######`); a repeated heading gets
/// `-1`, `-2`, ... as both renderers number them.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    // Headings are read with their code spans kept: `lcw run` in a heading is part of its anchor.
    let mut fence = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = !fence;
            continue;
        }
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if fence || hashes == 0 || hashes > 6 || !t[hashes..].starts_with(' ') {
            continue;
        }
        let title = t[hashes..].trim().trim_end_matches('#').trim();
        // Link text stays, its target does not: `[a](b)` reads as `a`.
        let mut plain = String::new();
        let mut rest = title;
        while let Some(open) = rest.find("](") {
            plain.push_str(&rest[..open]);
            rest = rest[open..].find(')').map_or("", |close| &rest[open + close + 1..]);
        }
        plain.push_str(rest);
        let base = slug(&plain);
        let n = seen.iter().filter(|s| **s == base).count();
        out.push(if n == 0 { base.clone() } else { format!("{base}-{n}") });
        seen.push(base);
    }
    out
}

/// The link targets of a Markdown text outside code: inline links and images `[text](target)`
/// and reference definitions `[label]: target`, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose_lines(text) {
        let t = line.trim_start();
        if t.starts_with('[')
            && let Some(close) = t.find("]:")
            && !t[..close].contains("](")
        {
            if let Some(target) = t[close + 2..].split_whitespace().next() {
                out.push((n, target.trim_matches(|c| c == '<' || c == '>').to_owned()));
            }
            continue;
        }
        let mut rest = line.as_str();
        while let Some(open) = rest.find("](") {
            let after = &rest[open + 2..];
            let Some(close) = after.find(')') else { break };
            let inner = after[..close].trim();
            let target = inner.split_whitespace().next().unwrap_or("");
            out.push((n, target.trim_matches(|c| c == '<' || c == '>').to_owned()));
            rest = &after[close + 1..];
        }
    }
    out
}

#[test]
fn every_link_of_the_readme_and_the_book_resolves() {
    // A relative link must name a file of the repository and an `#anchor` a heading of that file;
    // a chapter's links stay inside the book (mdBook copies only docs/src into the site), so the
    // book names other files of the repository as code, not as links.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let book = root.join("docs/src");
    let docs = documents(root);
    assert!(docs.len() > 10, "found only {} documents (README.md and docs/src)", docs.len());
    let mut broken = Vec::new();
    for (path, text) in &docs {
        let shown = path.strip_prefix(root).unwrap().display().to_string();
        for (line, target) in links(text) {
            let at = format!("{shown}:{line}: `{target}`");
            if target.is_empty() {
                broken.push(format!("{at}: an empty link"));
                continue;
            }
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() { path.clone() } else { path.parent().unwrap().join(file) };
            let Ok(resolved) = resolved.canonicalize() else {
                broken.push(format!("{at}: no such file"));
                continue;
            };
            if !resolved.starts_with(root.canonicalize().unwrap()) {
                broken.push(format!("{at}: outside the repository"));
                continue;
            }
            if path.starts_with(&book) && !resolved.starts_with(book.canonicalize().unwrap()) {
                broken.push(format!("{at}: outside the book; name the file as code instead"));
                continue;
            }
            if let Some(anchor) = anchor {
                if resolved.extension().is_none_or(|e| e != "md") {
                    broken.push(format!("{at}: an anchor into a file that is not Markdown"));
                    continue;
                }
                let headings = anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !headings.iter().any(|h| h == anchor) {
                    broken.push(format!("{at}: no heading `#{anchor}` (it has: {})", headings.join(", ")));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_chapter_of_the_book_is_in_its_summary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let book = root.join("docs/src");
    let summary = std::fs::read_to_string(book.join("SUMMARY.md")).expect("docs/src/SUMMARY.md");
    let listed: Vec<std::path::PathBuf> = links(&summary)
        .into_iter()
        .filter(|(_, t)| !t.is_empty() && !t.contains("://"))
        .map(|(_, t)| book.join(t.split('#').next().unwrap()))
        .collect();
    let missing: Vec<String> = documents(root)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(&book) && p.file_name().is_some_and(|n| n != "SUMMARY.md"))
        .filter(|p| !listed.contains(p))
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "chapters missing from docs/src/SUMMARY.md (mdBook would not build them):\n{}",
        missing.join("\n")
    );
}

#[test]
fn anchors_follow_the_renderers_rules() {
    assert_eq!(slug("Drain and exit: the runbook"), "drain-and-exit-the-runbook");
    assert_eq!(slug("How fast is this machine: `lcw speedtest`"), "how-fast-is-this-machine-lcw-speedtest");
    assert_eq!(anchors("# A\n```sh\n# not a heading\n```\n## A\n### B (c, d)"), ["a", "a-1", "b-c-d"]);
    assert_eq!(
        links("[a](x.md#y) `[b](z.md)` ![i](p.png \"t\")\n```\n[c](w.md)\n```\n[r]: <q.md>"),
        [(1, "x.md#y".to_owned()), (1, "p.png".to_owned()), (5, "q.md".to_owned())]
    );
}
