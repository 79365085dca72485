//! ABI parity with the real LightChain contracts.
//!
//! Reads `../shared/reference/upstream.md` (the upstream reference every developer and CI has
//! beside the project) and checks the committed artifacts in `contracts/out` against it:
//! - every event and custom error listed for JobRegistry, WorkerRegistry and AIConfig exists with
//!   the same parameter types, `indexed` flags and names;
//! - every listed function exists with the same parameter types, except the few the devnet
//!   deliberately leaves out (listed below with the reason);
//! - every topic0 and selector in the reference's table equals the one our ABI produces;
//! - the Job and Session structs returned by getJob / getSession have the upstream field order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use alloy::json_abi::{JsonAbi, Param};

/// Functions of the upstream ABI the devnet does not implement, and why.
const NOT_IMPLEMENTED: &[(&str, &str, &str)] = &[
    ("JobRegistry", "adoptSession", "SessionManager (sortition) path; the devnet dispatcher signs sessions"),
    ("JobRegistry", "reassignSession", "session reassignment is not simulated"),
    ("JobRegistry", "disputeResponseMismatch", "needs the worker's signed stream frames from a gateway"),
    ("JobRegistry", "submitJobOnBehalf", "gateway delegation is not simulated"),
    ("JobRegistry", "depositAndAuthorize", "gateway delegation is not simulated"),
    ("JobRegistry", "setDelegateAllowance", "gateway delegation is not simulated"),
    ("JobRegistry", "delegateAllowance", "gateway delegation is not simulated"),
    ("JobRegistry", "setDelegateAuthorization", "gateway delegation is not simulated"),
    ("JobRegistry", "isDelegateAuthorized", "gateway delegation is not simulated"),
    ("JobRegistry", "reputationRegistry", "no ReputationRegistry on the devnet"),
    ("JobRegistry", "setReputationRegistry", "no ReputationRegistry on the devnet"),
    ("JobRegistry", "guardian", "no guardian: the owner pauses"),
    ("JobRegistry", "sunsetGuardian", "no guardian: the owner pauses"),
    ("JobRegistry", "initialize", "devnet contracts are constructed, not proxies"),
    ("JobRegistry", "upgradeToAndCall", "devnet contracts are not upgradeable"),
    ("JobRegistry", "proxiableUUID", "devnet contracts are not upgradeable"),
    ("JobRegistry", "UPGRADE_INTERFACE_VERSION", "devnet contracts are not upgradeable"),
    ("WorkerRegistry", "registerCapability", "capabilities only gate sortition claims"),
    ("WorkerRegistry", "setCapabilities", "capabilities only gate sortition claims"),
    ("WorkerRegistry", "getCapabilityCount", "capabilities only gate sortition claims"),
    ("WorkerRegistry", "getCapabilityMask", "capabilities only gate sortition claims"),
    ("WorkerRegistry", "getCapabilityName", "capabilities only gate sortition claims"),
    ("WorkerRegistry", "getWorkerCapabilities", "capabilities only gate sortition claims"),
    ("WorkerRegistry", "selectEligibleWorker", "the devnet dispatcher picks workers off-chain"),
    ("WorkerRegistry", "getTotalStaked", "no per-block stake checkpoints on the devnet"),
    ("WorkerRegistry", "initialize", "devnet contracts are constructed, not proxies"),
    ("AIConfig", "initialize", "devnet contracts are constructed, not proxies"),
];

/// Signatures in the reference's hash table that belong to contracts the devnet does not have.
const OTHER_CONTRACTS: &[&str] = &[
    "SessionRequested",
    "SessionClaimed",
    "SessionReady",
    "claimSession",
    "eligibleNow",
    "getRequest",
    "getRequiredCapabilities",
    "ReputationUpdated",
    "ReputationParamsUpdated",
    // Legacy names of WorkerSuspended / WorkerReinstated (upstream.md §1.2).
    "WorkerJailed",
    "WorkerUnjailed",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Function,
    Event,
    Error,
    Struct(&'static str),
}

#[derive(Debug)]
struct Item {
    contract: &'static str,
    kind: Kind,
    name: String,
    params: Vec<(String, bool, Option<String>)>,
    line: usize,
}

fn upstream() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/upstream.md");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the upstream reference must be beside the project at {}: {e}", path.display()))
}

fn abi(name: &str) -> JsonAbi {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("out/{name}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(v["abi"].clone()).unwrap()
}

fn parse_params(s: &str) -> Vec<(String, bool, Option<String>)> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let words: Vec<&str> = p.split_whitespace().collect();
            let indexed = words.contains(&"indexed");
            let rest: Vec<&str> = words[1..].iter().copied().filter(|w| *w != "indexed").collect();
            (words[0].to_owned(), indexed, rest.first().map(|n| (*n).to_owned()))
        })
        .collect()
}

/// Backticked `name(params)` items of §1.1–§1.3, with the contract and section kind they sit in.
fn parse_reference(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut contract: Option<&'static str> = None;
    let mut kind = Kind::Function;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("### 1.1") {
            contract = Some("JobRegistry");
        } else if t.starts_with("### 1.2") {
            contract = Some("WorkerRegistry");
        } else if t.starts_with("### 1.3") {
            contract = Some("AIConfig");
        } else if t.starts_with("### ") || t.starts_with("## ") {
            contract = None;
        }
        let Some(c) = contract else { continue };
        if t.starts_with("**Functions") || t.starts_with("Views") || t.starts_with("Setters") {
            kind = Kind::Function;
        } else if t.starts_with("**Events") || t.starts_with("Events:") {
            kind = Kind::Event;
        } else if t.starts_with("**Custom errors") || t.starts_with("**Errors") {
            kind = Kind::Error;
        } else if t.starts_with("**struct Job**") {
            kind = Kind::Struct("Job");
        } else if t.starts_with("**struct Session**") {
            kind = Kind::Struct("Session");
        } else if t.starts_with("**Enums") || t.starts_with("Documented defaults") || t.starts_with("Notes on") {
            kind = Kind::Struct("none");
        }
        if t.starts_with("Not in this ABI") {
            continue;
        }
        if let Kind::Struct(s) = kind {
            // "1. `uint256 sessionId`"
            if s != "none"
                && let Some(rest) = t.split_once(". `").map(|(_, r)| r.trim_end_matches('`'))
            {
                let words: Vec<&str> = rest.split_whitespace().collect();
                if words.len() == 2 {
                    items.push(Item {
                        contract: c,
                        kind,
                        name: s.to_owned(),
                        params: vec![(words[0].to_owned(), false, Some(words[1].to_owned()))],
                        line: i + 1,
                    });
                }
            }
            continue;
        }
        for (n, chunk) in t.split('`').enumerate() {
            if n % 2 == 0 {
                continue;
            }
            let Some(open) = chunk.find('(') else { continue };
            let name = &chunk[..open];
            if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                continue;
            }
            let Some(close) = chunk[open..].find(')') else { continue };
            let params = parse_params(&chunk[open + 1..open + close]);
            items.push(Item { contract: c, kind, name: name.to_owned(), params, line: i + 1 });
        }
    }
    items
}

fn ours(params: &[Param]) -> Vec<(String, String)> {
    params.iter().map(|p| (p.selector_type().into_owned(), p.name.clone())).collect()
}

fn check_params(item: &Item, ours: &[(String, bool, String)], problems: &mut Vec<String>) {
    let theirs: Vec<(String, bool, Option<String>)> = item.params.clone();
    let types_ok = theirs.len() == ours.len() && theirs.iter().zip(ours).all(|(t, o)| t.0 == o.0);
    if !types_ok {
        problems.push(format!(
            "{}.{} (upstream.md line {}): upstream types {:?}, ours {:?}",
            item.contract,
            item.name,
            item.line,
            theirs.iter().map(|t| &t.0).collect::<Vec<_>>(),
            ours.iter().map(|o| &o.0).collect::<Vec<_>>()
        ));
        return;
    }
    for (t, o) in theirs.iter().zip(ours) {
        if item.kind == Kind::Event && t.1 != o.1 {
            problems.push(format!(
                "{}.{} (line {}): parameter {:?} indexed={} upstream, indexed={} ours",
                item.contract, item.name, item.line, t.2, t.1, o.1
            ));
        }
        if let Some(name) = &t.2
            && name != &o.2
        {
            problems.push(format!(
                "{}.{} (line {}): parameter named `{name}` upstream, `{}` ours",
                item.contract, item.name, item.line, o.2
            ));
        }
    }
}

#[test]
fn events_errors_and_functions_match_upstream_reference() {
    let text = upstream();
    let items = parse_reference(&text);
    assert!(items.len() > 200, "parsed only {} items from upstream.md; has its layout changed?", items.len());
    let abis: BTreeMap<&str, JsonAbi> =
        ["JobRegistry", "WorkerRegistry", "AIConfig"].into_iter().map(|n| (n, abi(n))).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut job_struct = Vec::new();
    let mut session_struct = Vec::new();
    for item in &items {
        let abi = &abis[item.contract];
        if let Kind::Struct(s) = item.kind {
            if s == "Job" {
                job_struct.push(item.params[0].clone());
            } else {
                session_struct.push(item.params[0].clone());
            }
            continue;
        }
        let event = abi.events.get(&item.name).and_then(|v| v.first());
        let error = abi.errors.get(&item.name).and_then(|v| v.first());
        let function = abi.functions.get(&item.name).and_then(|v| v.first());
        // The declared section decides first; a name listed in another section (an error
        // mentioned among functions) falls back to whatever kind our ABI has.
        let pick = match item.kind {
            Kind::Event => event.map(|e| {
                (
                    Kind::Event,
                    e.inputs
                        .iter()
                        .map(|p| (p.selector_type().into_owned(), p.indexed, p.name.clone()))
                        .collect::<Vec<_>>(),
                )
            }),
            Kind::Error => {
                error.map(|e| (Kind::Error, ours(&e.inputs).into_iter().map(|(t, n)| (t, false, n)).collect()))
            }
            _ => None,
        }
        .or_else(|| {
            function.map(|f| (Kind::Function, ours(&f.inputs).into_iter().map(|(t, n)| (t, false, n)).collect()))
        })
        .or_else(|| error.map(|e| (Kind::Error, ours(&e.inputs).into_iter().map(|(t, n)| (t, false, n)).collect())))
        .or_else(|| {
            event.map(|e| {
                (
                    Kind::Event,
                    e.inputs.iter().map(|p| (p.selector_type().into_owned(), p.indexed, p.name.clone())).collect(),
                )
            })
        });
        match pick {
            Some((kind, params)) => {
                let item = Item { kind, params: item.params.clone(), name: item.name.clone(), ..*item };
                check_params(&item, &params, &mut problems);
                checked += 1;
            }
            None => {
                let excused = NOT_IMPLEMENTED.iter().any(|(c, n, _)| *c == item.contract && *n == item.name)
                    || OTHER_CONTRACTS.contains(&item.name.as_str());
                if !excused {
                    problems.push(format!(
                        "{}.{} (upstream.md line {}) is missing from contracts/out/{}.json",
                        item.contract, item.name, item.line, item.contract
                    ));
                }
            }
        }
    }
    let get_job = &abis["JobRegistry"].functions["getJob"][0].outputs[0].components;
    let get_session = &abis["JobRegistry"].functions["getSession"][0].outputs[0].components;
    for (label, upstream, ours) in [("Job", &job_struct, get_job), ("Session", &session_struct, get_session)] {
        assert!(!upstream.is_empty(), "struct {label} not found in upstream.md");
        let theirs: Vec<(String, String)> =
            upstream.iter().map(|(t, _, n)| (t.clone(), n.clone().unwrap_or_default())).collect();
        let mine: Vec<(String, String)> =
            ours.iter().map(|p| (p.selector_type().into_owned(), p.name.clone())).collect();
        if theirs != mine {
            problems.push(format!("struct {label}: upstream {theirs:?}\n  ours {mine:?}"));
        }
    }
    assert!(problems.is_empty(), "ABI drift from upstream ({checked} items matched):\n{}", problems.join("\n"));
}

#[test]
fn topic0_and_selectors_match_upstream_table() {
    let text = upstream();
    let abis = [abi("JobRegistry"), abi("WorkerRegistry"), abi("AIConfig")];
    let mut ours: BTreeMap<String, String> = BTreeMap::new();
    for abi in &abis {
        for e in abi.events() {
            ours.insert(e.signature(), e.selector().to_string());
        }
        for f in abi.functions() {
            ours.insert(f.signature(), f.selector().to_string());
        }
        for e in abi.errors() {
            ours.insert(e.signature(), e.selector().to_string());
        }
    }
    let mut rows = 0;
    let mut problems = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[2].starts_with("`0x") {
            continue;
        }
        let sig = cells[1].trim_matches('`');
        let hash = cells[2].trim_matches('`');
        rows += 1;
        let name = sig.split('(').next().unwrap_or_default();
        match ours.get(sig) {
            Some(h) if h == hash => {}
            Some(h) => problems.push(format!("{sig}: upstream {hash}, ours {h}")),
            None if OTHER_CONTRACTS.contains(&name) || NOT_IMPLEMENTED.iter().any(|(_, n, _)| *n == name) => {}
            None => problems.push(format!("{sig} ({hash}) is not in our ABIs")),
        }
    }
    assert!(rows > 100, "found only {rows} hash rows in upstream.md; has its layout changed?");
    assert!(problems.is_empty(), "topic0/selector drift:\n{}", problems.join("\n"));
}
