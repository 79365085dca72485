//! The simulator against a real devnet with 1 s blocks: every outcome occurs, no transaction
//! reverts, and the chain agrees with what the simulator reports.

use alloy::primitives::U256;
use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
use lcw_schema::bindings::WorkerRegistry;
use lcw_schema::suite::Suite;
use lcw_tests::TestNet;

#[tokio::test]
async fn produces_every_outcome_without_reverts() {
    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
        o.deploy.completion_timeout = 3;
        o.deploy.dispute_window = 3;
        o.deploy.resolution_timeout = 3;
    })
    .await;
    let options = SimulateOptions {
        jobs: 80,
        workers: 3,
        auto_complete: true,
        auto_release: true,
        shares: Shares { timeout: 20.0, dispute: 30.0, settle: 10.0 },
        suite: Suite::X25519,
        seed: 7,
        ..SimulateOptions::default()
    };
    let report = simulate::run(net.profile(), &options, |_| {}).await.expect("simulation runs");
    assert_eq!(report.submitted, 80);
    assert_eq!(report.reverted, 0, "{report:?}");
    assert_eq!(report.failed_submissions, 0);
    for (what, n) in [
        ("completed", report.completed),
        ("released", report.released),
        ("timed out", report.timed_out),
        ("settled", report.settled),
        ("guilty", report.disputes_guilty),
        ("not guilty", report.disputes_not_guilty),
        ("defaulted", report.disputes_defaulted),
    ] {
        assert!(n > 0, "no job {what}: {report:?}");
    }
    // Every job reached a terminal state: nothing is left active on chain.
    let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, net.provider());
    for w in &report.workers {
        assert_eq!(wr.getActiveJobCount(*w).call().await.unwrap(), U256::ZERO, "worker {w}");
    }
    let terminal = report.released + report.timed_out + report.settled + report.disputes_guilty;
    assert_eq!(terminal, 80, "every job ends released, timed out, settled or guilty: {report:?}");
}
