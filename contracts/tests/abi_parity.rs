//! ABI parity with the real LightChain contracts.
//!
//! Reads `tests/fixtures/upstream-abi.txt` (the upstream ABI facts, each section with its source)
//! and checks the committed artifacts in `contracts/out` against it:
//! - every event and custom error listed for JobRegistry, WorkerRegistry, AIConfig, SessionManager
//!   and ReputationRegistry exists with the same parameter types, `indexed` flags and names;
//! - every listed function exists with the same parameter types, except the few the devnet
//!   deliberately leaves out (listed below with the reason);
//! - every topic0 and selector in the fixture's hash list equals the one our ABI produces;
//! - the Job, Session and Request structs returned by getJob / getSession / getRequest have the
//!   upstream field order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use alloy::json_abi::{JsonAbi, Param};

const CONTRACTS: [&str; 5] = ["JobRegistry", "WorkerRegistry", "AIConfig", "SessionManager", "ReputationRegistry"];

/// Functions of the upstream ABI the devnet does not implement, and why.
const NOT_IMPLEMENTED: &[(&str, &str, &str)] = &[
    ("JobRegistry", "reassignSession", "session reassignment is not simulated"),
    ("JobRegistry", "disputeResponseMismatch", "needs the worker's signed stream frames from a gateway"),
    ("JobRegistry", "submitJobOnBehalf", "gateway delegation of job fees is not simulated"),
    ("JobRegistry", "depositAndAuthorize", "gateway delegation of job fees is not simulated"),
    ("JobRegistry", "setDelegateAllowance", "gateway delegation of job fees is not simulated"),
    ("JobRegistry", "delegateAllowance", "gateway delegation of job fees is not simulated"),
    ("JobRegistry", "reputationRegistry", "no ReputationRegistry on the devnet"),
    ("JobRegistry", "setReputationRegistry", "no ReputationRegistry on the devnet"),
    ("JobRegistry", "guardian", "no guardian: the owner pauses"),
    ("JobRegistry", "sunsetGuardian", "no guardian: the owner pauses"),
    ("JobRegistry", "initialize", "devnet contracts are constructed, not proxies"),
    ("JobRegistry", "upgradeToAndCall", "devnet contracts are not upgradeable"),
    ("JobRegistry", "proxiableUUID", "devnet contracts are not upgradeable"),
    ("JobRegistry", "UPGRADE_INTERFACE_VERSION", "devnet contracts are not upgradeable"),
    ("WorkerRegistry", "selectEligibleWorker", "sessions are assigned by SessionManager's sortition or the dispatcher"),
    ("WorkerRegistry", "getTotalStaked", "no per-block stake checkpoints on the devnet"),
    ("WorkerRegistry", "initialize", "devnet contracts are constructed, not proxies"),
    ("AIConfig", "initialize", "devnet contracts are constructed, not proxies"),
    ("SessionManager", "initialize", "devnet contracts are constructed (with the same arguments), not proxies"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Function,
    Event,
    Error,
}

#[derive(Debug)]
struct Item {
    contract: String,
    kind: Kind,
    name: String,
    params: Vec<(String, bool, Option<String>)>,
    line: usize,
}

#[derive(Debug, Default)]
struct Fixture {
    items: Vec<Item>,
    /// (contract, struct) → fields in order: (type, name).
    structs: BTreeMap<(String, String), Vec<(String, String)>>,
    /// canonical signature → hash, with the fixture line.
    hashes: Vec<(String, String, usize)>,
    /// Names the docs list that are not in any ABI.
    legacy: Vec<String>,
}

fn fixture() -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream-abi.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut f = Fixture::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        let [first, second, rest] = words[..] else { panic!("fixture line {}: `{line}` is not a fact", i + 1) };
        if first == "hash" {
            let (sig, hash) = (second, rest);
            f.hashes.push((sig.to_owned(), hash.to_owned(), i + 1));
            continue;
        }
        let contract = first.to_owned();
        let kind = match second {
            "function" => Kind::Function,
            "event" => Kind::Event,
            "error" => Kind::Error,
            "legacy-event" => {
                f.legacy.push(rest.split('(').next().unwrap_or_default().to_owned());
                continue;
            }
            "struct" => {
                // "<Struct> <index> <type> <name>"
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let [name, index, ty, field] = parts[..] else { panic!("fixture line {}: bad struct line", i + 1) };
                let fields = f.structs.entry((contract, name.to_owned())).or_default();
                assert_eq!(index.parse::<usize>().ok(), Some(fields.len() + 1), "fixture line {}: field order", i + 1);
                fields.push((ty.to_owned(), field.to_owned()));
                continue;
            }
            other => panic!("fixture line {}: unknown kind `{other}`", i + 1),
        };
        let open = rest.find('(').unwrap_or_else(|| panic!("fixture line {}: no parameter list", i + 1));
        let close = rest.rfind(')').unwrap_or_else(|| panic!("fixture line {}: no parameter list", i + 1));
        f.items.push(Item {
            contract,
            kind,
            name: rest[..open].to_owned(),
            params: parse_params(&rest[open + 1..close]),
            line: i + 1,
        });
    }
    f
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

fn ours(params: &[Param]) -> Vec<(String, bool, String)> {
    params.iter().map(|p| (p.selector_type().into_owned(), false, p.name.clone())).collect()
}

fn check_params(item: &Item, ours: &[(String, bool, String)], problems: &mut Vec<String>) {
    let theirs = &item.params;
    let types_ok = theirs.len() == ours.len() && theirs.iter().zip(ours).all(|(t, o)| t.0 == o.0);
    if !types_ok {
        problems.push(format!(
            "{}.{} (fixture line {}): upstream types {:?}, ours {:?}",
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
                "{}.{} (fixture line {}): parameter {:?} indexed={} upstream, indexed={} ours",
                item.contract, item.name, item.line, t.2, t.1, o.1
            ));
        }
        if let Some(name) = &t.2
            && name != &o.2
        {
            problems.push(format!(
                "{}.{} (fixture line {}): parameter named `{name}` upstream, `{}` ours",
                item.contract, item.name, item.line, o.2
            ));
        }
    }
}

#[test]
fn events_errors_and_functions_match_upstream() {
    let fixture = fixture();
    assert!(fixture.items.len() > 300, "parsed only {} items from the fixture", fixture.items.len());
    let abis: BTreeMap<&str, JsonAbi> = CONTRACTS.into_iter().map(|n| (n, abi(n))).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for item in &fixture.items {
        let abi = abis.get(item.contract.as_str()).unwrap_or_else(|| panic!("no artifact for {}", item.contract));
        let found = match item.kind {
            Kind::Event => abi.events.get(&item.name).and_then(|v| v.first()).map(|e| {
                e.inputs.iter().map(|p| (p.selector_type().into_owned(), p.indexed, p.name.clone())).collect()
            }),
            Kind::Error => abi.errors.get(&item.name).and_then(|v| v.first()).map(|e| ours(&e.inputs)),
            Kind::Function => abi.functions.get(&item.name).and_then(|v| v.first()).map(|f| ours(&f.inputs)),
        };
        match found {
            Some(params) => {
                check_params(item, &params, &mut problems);
                checked += 1;
            }
            None if item.kind == Kind::Function
                && NOT_IMPLEMENTED.iter().any(|(c, n, _)| *c == item.contract && *n == item.name) => {}
            None => problems.push(format!(
                "{} {:?} {} (fixture line {}) is missing from contracts/out/{}.json",
                item.contract, item.kind, item.name, item.line, item.contract
            )),
        }
    }
    let outputs = [
        ("JobRegistry", "Job", "getJob"),
        ("JobRegistry", "Session", "getSession"),
        ("SessionManager", "Request", "getRequest"),
    ];
    for (contract, name, getter) in outputs {
        let upstream = fixture
            .structs
            .get(&(contract.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("struct {contract}.{name} is not in the fixture"));
        let mine: Vec<(String, String)> = abis[contract].functions[getter][0].outputs[0]
            .components
            .iter()
            .map(|p| (p.selector_type().into_owned(), p.name.clone()))
            .collect();
        if upstream != &mine {
            problems.push(format!("struct {contract}.{name}: upstream {upstream:?}\n  ours {mine:?}"));
        }
    }
    assert!(problems.is_empty(), "ABI drift from upstream ({checked} items matched):\n{}", problems.join("\n"));
}

#[test]
fn topic0_and_selectors_match_upstream() {
    let fixture = fixture();
    let mut ours: BTreeMap<String, String> = BTreeMap::new();
    for name in CONTRACTS {
        let abi = abi(name);
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
    let mut problems = Vec::new();
    for (sig, hash, line) in &fixture.hashes {
        let name = sig.split('(').next().unwrap_or_default();
        match ours.get(sig) {
            Some(h) if h == hash => {}
            Some(h) => problems.push(format!("{sig} (fixture line {line}): upstream {hash}, ours {h}")),
            None if fixture.legacy.iter().any(|l| l == name) || NOT_IMPLEMENTED.iter().any(|(_, n, _)| *n == name) => {}
            None => problems.push(format!("{sig} ({hash}, fixture line {line}) is not in our ABIs")),
        }
    }
    assert!(fixture.hashes.len() > 150, "found only {} hashes in the fixture", fixture.hashes.len());
    assert!(problems.is_empty(), "topic0/selector drift:\n{}", problems.join("\n"));
}

#[test]
fn every_session_manager_error_upstream_lists_is_declared_with_its_selector() {
    // Section 12.1's SessionManager errors are what a claiming worker meets on the real network;
    // each must decode by name (the selector list above covers them, this names the set).
    let fixture = fixture();
    let listed: Vec<&Item> =
        fixture.items.iter().filter(|i| i.contract == "SessionManager" && i.kind == Kind::Error).collect();
    assert!(listed.len() >= 14, "SessionManager errors in the fixture: {}", listed.len());
    let abi = abi("SessionManager");
    for item in listed {
        assert!(abi.errors.contains_key(&item.name), "SessionManager lacks error {}", item.name);
    }
}
