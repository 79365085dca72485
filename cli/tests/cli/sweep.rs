//! `lcw sweep` and `lcw withdraw --then-sweep` with the real binary against a devnet with 1 s
//! blocks: the wallet keeps exactly the reserve, a sweep that cannot keep it sends nothing, the
//! default reserve grows with the open jobs, and the earnings reach the payout address.

use std::path::Path;
use std::process::Output;

use alloy::primitives::{Address, U256, utils::parse_ether};
use lcw_contracts::simulate::{self, SimulateOptions};
use lcw_schema::bindings::JobRegistry;
use lcw_schema::profile::Role;
use lcw_tests::TestNet;

use crate::lcw_in;

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn wei(v: &serde_json::Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("a wei string: {v}")).parse().unwrap()
}

/// The store's outbox rows of `sender`: (kind, status).
fn outbox(data: &Path, sender: Address) -> Vec<(String, String)> {
    let db = data.join("lcw.db");
    if !db.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT kind, status, sender FROM outbox ORDER BY id").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?)))
        .unwrap()
        .map(Result::unwrap);
    rows.filter(|(_, _, s)| s.as_slice() == sender.as_slice()).map(|(k, st, _)| (k, st)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_keeps_exactly_the_reserve_and_refuses_what_it_cannot_keep() {
    let net = TestNet::start_with(|o| o.block_time = 1).await;
    let data = net.dir.path();
    // An idle worker account (simulate below registers the first one only).
    let worker = net.signer(Role::Worker, 1).address();
    let payout = Address::repeat_byte(0x5e);
    let sweep =
        |extra: &[&str]| lcw_in(data).args(["sweep", "--worker", &worker.to_string()]).args(extra).output().unwrap();
    let to = payout.to_string(); // EIP-55 mixed case

    // Bad payout addresses are refused before anything is started.
    let mut flipped: Vec<char> = to.chars().collect();
    let i = flipped.iter().rposition(|c| c.is_ascii_alphabetic() && *c != 'x').unwrap();
    flipped[i] =
        if flipped[i].is_ascii_uppercase() { flipped[i].to_ascii_lowercase() } else { flipped[i].to_ascii_uppercase() };
    let flipped: String = flipped.into_iter().collect();
    for (bad, says) in [
        (flipped.as_str(), "EIP-55"),
        ("0x0000000000000000000000000000000000000000", "zero address"),
        (&worker.to_string(), "worker's own address"),
    ] {
        let out = sweep(&["--to", bad]);
        assert!(!out.status.success(), "{bad}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{bad}: {}", text(&out));
    }

    // A dry run prints the figures (the default reserve: no open jobs, one release) and sends
    // nothing.
    let before = net.balance(worker).await;
    let out = sweep(&["--to", &to, "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["reserve"]["from"], "open_jobs", "{v}");
    assert_eq!(v["reserve"]["jobs"], 0, "{v}");
    assert_eq!(v["reserve"]["floor_one_release"], true, "{v}");
    assert_eq!(wei(&v["balance_wei"]), before);
    assert!(wei(&v["send_wei"]) > U256::ZERO, "{v}");
    assert!(v["sent"].is_null(), "{v}");
    assert_eq!(net.balance(payout).await, U256::ZERO, "a dry run sends nothing");
    assert_eq!(net.balance(worker).await, before);
    assert!(outbox(data, worker).is_empty(), "a dry run signs nothing");
    let human = sweep(&["--to", &to, "--dry-run"]);
    let stdout = String::from_utf8_lossy(&human.stdout);
    assert!(stdout.contains("reserve") && stdout.contains("never less than one release"), "{}", text(&human));
    assert!(stdout.contains("dry run: nothing was sent"), "{}", text(&human));

    // A reserve above the balance is refused with the figures; nothing is signed.
    let out = sweep(&["--to", &to, "--keep", "100000000"]);
    assert!(!out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("balance") && stdout.contains("100000000 LCAI (given with --keep)"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was sent"), "{}", text(&out));
    assert_eq!(net.balance(payout).await, U256::ZERO);
    assert!(outbox(data, worker).is_empty(), "a refused sweep signs nothing");

    // The sweep: the wallet keeps exactly --keep, the gas came out of what was sent.
    let keep = parse_ether("5").unwrap();
    let out = sweep(&["--to", &to, "--keep", "5", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    let sent = wei(&v["send_wei"]);
    assert_eq!(net.balance(worker).await, keep, "the wallet keeps exactly the reserve: {v}");
    assert_eq!(wei(&v["wallet_after_wei"]), keep, "{v}");
    assert_eq!(net.balance(payout).await, sent, "{v}");
    assert_eq!(sent + keep + wei(&v["gas_cost_wei"]), before, "{v}");
    assert_eq!(outbox(data, worker), vec![("sweep".to_owned(), "mined".to_owned())]);
    // Nothing is left above the reserve: a second sweep is refused and signs nothing.
    let again = sweep(&["--to", &to, "--keep", "5"]);
    assert!(!again.status.success(), "{}", text(&again));
    assert_eq!(outbox(data, worker).len(), 1);

    // The default reserve grows with the open jobs: completed jobs each owe a release.
    let traffic = SimulateOptions { jobs: 6, workers: 1, auto_complete: true, seed: 3, ..Default::default() };
    let report = simulate::run(net.profile(), &traffic, |_| {}).await.expect("simulation");
    let busy = report.workers[0];
    let jr = JobRegistry::new(net.profile().contracts.job_registry, net.provider());
    assert_eq!(jr.workerBalance(busy).call().await.unwrap(), U256::ZERO, "nothing released yet");
    let out = lcw_in(data)
        .args(["sweep", "--worker", &busy.to_string(), "--to", &to, "--dry-run", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    let r = &v["reserve"];
    assert_eq!(r["jobs"], 6, "{v}");
    assert_eq!((r["acks"].clone(), r["completions"].clone(), r["releases"].clone()), (0.into(), 0.into(), 6.into()));
    assert_eq!(r["gas"], 600_000, "{v}");
    assert_eq!(r["floor_one_release"], false, "{v}");
    let cost = U256::from(600_000u64) * wei(&r["gas_price_wei"]);
    assert_eq!(wei(&r["wei"]), cost + cost * U256::from(25) / U256::from(100), "{v}");
    // --keep below what the jobs need is allowed, and says so.
    let out = lcw_in(data)
        .args(["sweep", "--worker", &busy.to_string(), "--to", &to, "--dry-run", "--keep", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the open jobs would need"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdraw_then_sweep_moves_the_earnings_to_the_payout_address() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 3;
    })
    .await;
    let data = net.dir.path();
    let traffic = SimulateOptions {
        jobs: 6,
        workers: 1,
        auto_complete: true,
        auto_release: true,
        seed: 11,
        ..Default::default()
    };
    let report = simulate::run(net.profile(), &traffic, |_| {}).await.expect("simulation");
    let worker = report.workers[0];
    let jr = JobRegistry::new(net.profile().contracts.job_registry, net.provider());
    let earned = jr.workerBalance(worker).call().await.unwrap();
    assert!(earned > U256::ZERO, "released jobs credited the worker");
    let payout = Address::repeat_byte(0x7a);
    let out = lcw_in(data)
        .args(["withdraw", "--worker", &worker.to_string(), "--then-sweep", &payout.to_string(), "--keep", "1"])
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v = json(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("withdrew"), "{}", text(&out));
    assert_eq!(jr.workerBalance(worker).call().await.unwrap(), U256::ZERO, "withdrawn");
    assert_eq!(net.balance(worker).await, parse_ether("1").unwrap(), "the wallet keeps exactly --keep: {v}");
    let paid = net.balance(payout).await;
    assert_eq!(paid, wei(&v["send_wei"]), "{v}");
    assert!(paid > earned, "the earnings (and the wallet above the reserve) reached the payout address: {v}");
    // A typo in the payout address is refused before the withdrawal is sent.
    let out =
        lcw_in(data).args(["withdraw", "--worker", &worker.to_string(), "--then-sweep", "0x7a7a"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("40 hex digits"), "{}", text(&out));
}
