//! `lcw exit` and `lcw deregister` with the real binary against a devnet with 1 s blocks: a busy
//! worker is refused deregistration with its plan, then exits to a returned stake.

use std::time::Duration;

use alloy::primitives::{U256, utils::parse_ether};
use lcw_contracts::simulate::{self, SimulateOptions};
use lcw_schema::bindings::{JobRegistry, WorkerRegistry};
use lcw_tests::TestNet;

use crate::lcw_in;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lcw_exit_takes_a_busy_worker_to_a_returned_stake() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.dispute_window = 4;
        o.deploy.ack_timeout = 300;
        o.deploy.completion_timeout = 300;
    })
    .await;
    let data = net.dir.path();
    let profile = net.profile().clone();
    // Jobs on three simulated workers; the first worker leaves.
    let traffic =
        SimulateOptions { jobs: 30, workers: 3, auto_complete: true, max_per_block: 10, seed: 9, ..Default::default() };
    let report = simulate::run(&profile, &traffic, |_| {}).await.expect("simulation");
    let worker = report.workers[0];
    let wr = WorkerRegistry::new(profile.contracts.worker_registry, net.provider());
    let jr = JobRegistry::new(profile.contracts.job_registry, net.provider());
    let stake = wr.getWorkerStake(worker).call().await.unwrap();
    assert!(wr.getActiveJobCount(worker).call().await.unwrap() > U256::ZERO, "busy");
    let before = net.balance(worker).await;
    // Deregistering now is refused with the plan, and sends nothing.
    let out = lcw_in(data).args(["deregister", "--worker", &worker.to_string()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ActiveJobsExist"), "{err}");
    let started = std::time::Instant::now();
    let out = lcw_in(data).args(["exit", "--worker", &worker.to_string()]).output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(300));
    assert!(
        out.status.success(),
        "lcw exit failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("deregistered"), "{stdout}");
    assert!(!wr.isWorkerRegistered(worker).call().await.unwrap());
    assert_eq!(jr.workerBalance(worker).call().await.unwrap(), U256::ZERO, "earnings withdrawn");
    let after = net.balance(worker).await;
    let earned = after + parse_ether("0.1").unwrap() - before; // generous gas allowance
    assert!(earned >= stake, "stake {stake} returned (balance {before} -> {after})");
    // Resumable: running it again says there is nothing left.
    let again = lcw_in(data).args(["exit", "--worker", &worker.to_string()]).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("not registered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystores_unlock_with_a_password_file_and_bad_input_is_explained() {
    let net = TestNet::start_with(|o| o.block_time = 1).await;
    let data = net.dir.path();
    let worker = net.signer(lcw_schema::profile::Role::Worker, 0);
    let keys = data.join("keys");
    let secret = "correct horse battery staple";
    let ks = lcw_chain::keys::write_keystore(&keys, &worker, secret, "worker.json").unwrap();
    std::fs::write(data.join("pw"), format!("{secret}\n")).unwrap();
    std::fs::write(data.join("bad-pw"), "hunter2-nope\n").unwrap();
    let balance = |pw: &str| {
        lcw_in(data)
            .args(["balance", "--json", "--key"])
            .arg(&ks)
            .arg("--password-file")
            .arg(data.join(pw))
            .output()
            .unwrap()
    };
    let ok = balance("pw");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["worker"].as_str().unwrap().to_lowercase(), worker.address().to_string().to_lowercase());
    let bad = balance("bad-pw");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("wrong password"), "{err}");
    assert!(!err.contains("hunter2-nope") && !err.contains(secret), "the password never appears: {err}");
    // A keystore without any password source says how to give one.
    let none = lcw_in(data).args(["balance", "--key"]).arg(&ks).output().unwrap();
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("--password-file"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    // A malformed address is named with what was expected.
    let bad_addr = lcw_in(data).args(["exit-plan", "--worker", "0x123"]).output().unwrap();
    assert!(!bad_addr.status.success());
    assert!(String::from_utf8_lossy(&bad_addr.stderr).contains("40 hex digits"));
    // Job ids are validated before anything is sent.
    let bad_jobs = lcw_in(data)
        .args(["release", "--key"])
        .arg(&ks)
        .arg("--password-file")
        .arg(data.join("pw"))
        .args(["--jobs", "3,x"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bad_jobs.stderr).contains("`x` is not a job id"),
        "{}",
        String::from_utf8_lossy(&bad_jobs.stderr)
    );
}
