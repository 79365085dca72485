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

/// The simulator's prompts are what a worker can read from the chain: the session key wrapped in
/// `SessionCreated` for the worker's registered key, the prompt in a blob posted before the job,
/// sealed in LightChain's p256-aesgcm wire format.
#[tokio::test]
async fn prompts_decrypt_from_chain_for_the_registered_worker() {
    use alloy::providers::Provider;
    use alloy::rpc::types::Filter;
    use alloy::sol_types::SolEvent;
    use lcw_schema::bindings::JobRegistry;

    let net = TestNet::start_with(|o| {
        o.block_time = 1;
        o.deploy.ack_timeout = 3;
    })
    .await;
    let worker = lcw_tests::parties::register_worker(&net, 0, Suite::P256AesGcm).await;
    let prompts = vec!["What is the capital of France?".to_owned(), "Name three colours.".to_owned()];
    let options = SimulateOptions { jobs: 2, workers: 0, prompts: prompts.clone(), ..SimulateOptions::default() };
    // No worker serves these jobs: they time out after the ack timeout; the keeper claims them.
    let report = simulate::run(net.profile(), &options, |_| {}).await.expect("simulation runs");
    assert_eq!((report.submitted, report.timed_out, report.reverted), (2, 2, 0), "{report:?}");

    let p = net.provider();
    let jr = JobRegistry::new(net.profile().contracts.job_registry, &p);
    let filter = Filter::new().address(net.profile().contracts.job_registry).from_block(0);
    let logs = p.get_logs(&filter).await.unwrap();
    let created = logs.iter().find_map(|l| JobRegistry::SessionCreated::decode_log(&l.inner).ok()).unwrap();
    assert_eq!(created.worker, worker.address);
    assert_eq!(created.encWorkerKey.len(), 125, "p256 wrap");
    let session_key = worker.secret.unwrap_session_key(&created.encWorkerKey).expect("the worker unwraps its key");

    let mut seen = Vec::new();
    for log in logs.iter().filter_map(|l| JobRegistry::JobSubmitted::decode_log(&l.inner).ok()) {
        assert_eq!(log.worker, worker.address);
        let job = jr.getJob(log.jobId).call().await.unwrap();
        let blob: alloy::primitives::Bytes =
            p.raw_request("anvil_getBlobByHash".into(), (job.promptBlobHash,)).await.expect("blob served");
        let sealed = lcw_schema::blob::decode(&blob).expect("lcw blob encoding");
        let prompt = String::from_utf8(session_key.open(&sealed).expect("decrypts")).unwrap();
        seen.push(prompt);
    }
    seen.sort();
    let mut expected = prompts;
    expected.sort();
    assert_eq!(seen, expected);
}
