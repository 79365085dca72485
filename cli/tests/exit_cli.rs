//! `lcw exit` and `lcw deregister` with the real binary against a devnet with 1 s blocks: a busy
//! worker is refused deregistration with its plan, then exits to a returned stake.

use std::time::Duration;

use alloy::primitives::{U256, utils::parse_ether};
use lcw_contracts::simulate::{self, SimulateOptions};
use lcw_schema::bindings::{JobRegistry, WorkerRegistry};
use lcw_tests::TestNet;

fn lcw() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_lcw"))
}

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
    let out = lcw().arg("--data-dir").arg(data).args(["deregister", "--worker", &worker.to_string()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ActiveJobsExist"), "{err}");
    let started = std::time::Instant::now();
    let out = lcw().arg("--data-dir").arg(data).args(["exit", "--worker", &worker.to_string()]).output().unwrap();
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
    let again = lcw().arg("--data-dir").arg(data).args(["exit", "--worker", &worker.to_string()]).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("not registered"));
}
