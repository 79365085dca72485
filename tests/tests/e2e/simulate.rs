//! The simulator against a real devnet with 1 s blocks, with sessions signed by the dispatcher and
//! by sortition: every outcome occurs, no transaction reverts (but claims that lose a race), and
//! the chain agrees with what the simulator reports.

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
    // Sortition is off: the dispatcher signed every session.
    assert!(!report.sortition && report.sessions_requested == 0 && report.claims_sent == 0, "{report:?}");
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

mod sortition {
    //! The simulator on a devnet with sortition on: sessions by request and claim.

    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use alloy::primitives::{Address, B256, U256};
    use alloy::providers::{DynProvider, Provider};
    use alloy::rpc::types::Filter;
    use alloy::sol_types::SolEvent;
    use lcw_contracts::simulate::{self, SimulateOptions, plan::Shares};
    use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
    use lcw_schema::profile::Role;
    use lcw_schema::rules::sortition::{claim_delay, first_claim_block};
    use lcw_schema::suite::{SessionKey, Suite};
    use lcw_tests::parties::{Worker, register_worker};
    use lcw_tests::{TestNet, send};

    async fn manager(net: &TestNet) -> Address {
        AIConfig::new(net.profile().contracts.ai_config, net.provider())
            .getSessionManagerAddress()
            .call()
            .await
            .unwrap()
    }

    /// Each request's block and each claim (worker, block), read from the chain.
    async fn requests_and_claims(net: &TestNet) -> (HashMap<U256, (u64, B256)>, HashMap<U256, (Address, u64)>) {
        let p = net.provider();
        let logs = p.get_logs(&Filter::new().address(manager(net).await).from_block(0)).await.unwrap();
        let (mut requested, mut claimed) = (HashMap::new(), HashMap::new());
        for log in &logs {
            let block = log.block_number.unwrap();
            if let Ok(ev) = SessionManager::SessionRequested::decode_log(&log.inner) {
                requested.insert(ev.reqId, (block, log.block_hash.unwrap()));
            }
            if let Ok(ev) = SessionManager::SessionClaimed::decode_log(&log.inner) {
                claimed.insert(ev.reqId, (ev.worker, block));
            }
        }
        (requested, claimed)
    }

    /// The first block `worker` could claim `req` in, from the rule with the chain's stake in the
    /// block before the claim.
    async fn first_block(net: &TestNet, req: U256, request: (u64, B256), worker: Address, claim_block: u64) -> u64 {
        let p = net.provider();
        let ai = AIConfig::new(net.profile().contracts.ai_config, &p);
        let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, &p);
        let stake = wr.getWorkerStake(worker).call().block((claim_block - 1).into()).await.unwrap();
        let delay = claim_delay(
            request.1,
            req,
            worker,
            stake,
            ai.getMinWorkerStake().call().await.unwrap(),
            ai.getClaimWindowBlocks().call().await.unwrap(),
        );
        first_claim_block(request.0, delay)
    }

    #[tokio::test]
    async fn simulated_workers_claim_every_request_in_their_first_eligible_block_and_every_outcome_occurs() {
        let net = TestNet::start_with(|o| {
            o.block_time = 1;
            o.deploy.sortition = true;
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
        assert!(report.sortition);
        assert_eq!((report.submitted, report.failed_submissions), (80, 0), "{report:?}");
        assert_eq!(report.reverted, 0, "no revert but lost claims: {report:?}");

        // Every request was claimed and made ready, or expired and was made again.
        let settles = (0..80).filter(|i| simulate::plan::is_settle(7, *i, &options.shares)).count() as u64;
        assert!(settles > 0);
        assert_eq!(report.sessions_requested, 3 + settles + report.requests_expired, "{report:?}");
        assert_eq!(report.sessions_claimed, report.sessions_ready, "{report:?}");
        assert_eq!(report.sessions_requested, report.sessions_ready + report.requests_expired, "{report:?}");
        assert_eq!(report.sessions, report.sessions_ready);
        assert_eq!(report.claims_won_by.values().sum::<u64>(), report.sessions_claimed);
        assert!(report.claims_won_by.keys().all(|w| report.workers.contains(w)), "{report:?}");
        assert!(report.claims_lost < report.claims_sent);
        // Every winner is simulated, and each claim landed in the winner's first eligible block.
        assert_eq!(report.claim_lag_blocks.samples, report.sessions_claimed, "{report:?}");
        assert_eq!(report.claim_lag_blocks.max, 0, "{report:?}");
        assert!(report.claim_latency_blocks.max <= 5, "the window is 5 blocks: {report:?}");

        // The chain agrees: each claim's block is the first the rule allows its winner.
        let (requested, claimed) = requests_and_claims(&net).await;
        assert_eq!(claimed.len() as u64, report.sessions_claimed);
        for (req, (worker, block)) in &claimed {
            let first = first_block(&net, *req, requested[req], *worker, *block).await;
            assert_eq!(*block, first, "request {req} claimed by {worker}");
        }

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
        assert_eq!(report.settled, settles, "every throwaway session's job is settled: {report:?}");
        let wr = WorkerRegistry::new(net.profile().contracts.worker_registry, net.provider());
        for w in &report.workers {
            assert_eq!(wr.getActiveJobCount(*w).call().await.unwrap(), U256::ZERO, "worker {w}");
        }
        let terminal = report.released + report.timed_out + report.settled + report.disputes_guilty;
        assert_eq!(terminal, 80, "every job ends released, timed out, settled or guilty: {report:?}");
    }

    #[tokio::test]
    async fn requests_no_worker_can_claim_expire_and_are_made_again_until_one_can() {
        let net = TestNet::start_with(|o| {
            o.block_time = 1;
            o.deploy.sortition = true;
            // Every worker is at capacity: nobody may claim until governance raises it.
            o.deploy.max_concurrent_jobs = 0;
            o.deploy.ack_timeout = 5;
            o.deploy.completion_timeout = 5;
            o.deploy.dispute_window = 3;
        })
        .await;
        let options = SimulateOptions {
            jobs: 6,
            workers: 3,
            auto_complete: true,
            auto_release: true,
            request_ttl: 6,
            ..SimulateOptions::default()
        };
        // The block that raised the cap: no claim can land before the next one.
        let raised = std::cell::Cell::new(None);
        let governance = async {
            // Not before the first three requests have expired: each is made again once it has,
            // so six requests on chain are three expired. A fixed wait would race the simulator's
            // set-up, which a busy machine slows down.
            let made_again = || async { requests_and_claims(&net).await.0.len() >= 6 };
            assert!(
                lcw_tests::wait_until(Duration::from_secs(120), made_again).await,
                "the first three requests were never made again"
            );
            let ai = AIConfig::new(net.profile().contracts.ai_config, net.wallet(net.signer(Role::Deployer, 0)));
            let receipt = send!(ai.setMaxConcurrentJobs(U256::from(64)));
            raised.set(receipt.block_number);
            std::future::pending::<()>().await
        };
        let report = tokio::select! {
            r = simulate::run(net.profile(), &options, |_| {}) => r.expect("simulation runs"),
            () = governance => unreachable!("governance waits forever"),
        };
        assert!(report.requests_expired >= 3, "the first three requests expired: {report:?}");
        assert!(report.sessions_ready >= 1, "{report:?}");
        assert_eq!(report.sessions_requested, report.sessions_ready + report.requests_expired, "{report:?}");
        assert_eq!(report.sessions_claimed, report.sessions_ready, "{report:?}");
        assert_eq!(report.reverted, 0, "{report:?}");
        assert_eq!((report.submitted, report.completed, report.released), (6, 6, 6), "{report:?}");

        // Each claim landed in its winner's first block by the rule or, for a request already open
        // when the cap was raised, in the block after the raise: no simulated worker lost a block.
        // (The report's lag counts from the rule's block alone, so it counts the wait for the cap.)
        let raised = raised.get().expect("the cap was raised");
        let (requested, claimed) = requests_and_claims(&net).await;
        assert_eq!(claimed.len() as u64, report.sessions_claimed, "{report:?}");
        for (req, (worker, block)) in &claimed {
            let first = first_block(&net, *req, requested[req], *worker, *block).await;
            assert_eq!(
                *block,
                first.max(raised + 1),
                "request {req} claimed by {worker}; the cap was raised in {raised}"
            );
        }
    }

    /// What the real worker saw: the prompt of each of its jobs, and the blobs they came in.
    #[derive(Debug, Default)]
    struct Served {
        prompts: BTreeMap<U256, String>,
        blobs: HashSet<B256>,
        claims: u64,
    }

    /// A worker the simulator holds no key for, as an operator's `lcw work` would behave: it
    /// claims open requests when its turn comes, unwraps the session key from the adopted session,
    /// decrypts each job's prompt from its blob, and acknowledges and completes it.
    async fn real_worker(net: &TestNet, worker: Worker, served: Arc<Mutex<Served>>) {
        let c = net.profile().contracts;
        let p = net.provider();
        let sm_addr = manager(net).await;
        let ai = AIConfig::new(c.ai_config, &p);
        let wr = WorkerRegistry::new(c.worker_registry, &p);
        let (min, window) =
            (ai.getMinWorkerStake().call().await.unwrap(), ai.getClaimWindowBlocks().call().await.unwrap());
        let stake = wr.getWorkerStake(worker.address).call().await.unwrap();
        let sm = SessionManager::new(sm_addr, &worker.provider);
        let jr = JobRegistry::new(c.job_registry, &worker.provider);
        let mut turns: Vec<(U256, u64)> = Vec::new();
        let mut keys: HashMap<U256, SessionKey> = HashMap::new();
        let mut last = p.get_block_number().await.unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let head = p.get_block_number().await.unwrap();
            if head > last {
                let filter = Filter::new().address(vec![sm_addr, c.job_registry]).from_block(last + 1).to_block(head);
                for log in p.get_logs(&filter).await.unwrap() {
                    if let Ok(ev) = SessionManager::SessionRequested::decode_log(&log.inner) {
                        let seed = log.block_hash.unwrap();
                        let delay = claim_delay(seed, ev.reqId, worker.address, stake, min, window);
                        turns.push((ev.reqId, first_claim_block(log.block_number.unwrap(), delay)));
                    } else if let Ok(ev) = SessionManager::SessionClaimed::decode_log(&log.inner) {
                        turns.retain(|(r, _)| *r != ev.reqId);
                    } else if let Ok(ev) = JobRegistry::SessionAdopted::decode_log(&log.inner)
                        && ev.worker == worker.address
                    {
                        let session = jr.getSession(ev.sessionId).call().await.unwrap();
                        keys.insert(ev.sessionId, worker.secret.unwrap_session_key(&session.encWorkerKey).unwrap());
                    } else if let Ok(ev) = JobRegistry::JobSubmitted::decode_log(&log.inner)
                        && ev.worker == worker.address
                    {
                        serve(&p, &jr, &keys[&ev.sessionId], ev.jobId, &served).await;
                    }
                }
                last = head;
            }
            for (req, _) in turns.iter().filter(|(_, first)| head + 1 >= *first) {
                // The loser of a race reverts; that is the race, not a failure.
                let _ = sm.claimSession(*req).gas(150_000).send().await;
                served.lock().unwrap().claims += 1;
            }
            turns.retain(|(_, first)| head + 1 < *first);
        }
    }

    async fn serve(
        p: &DynProvider,
        jr: &JobRegistry::JobRegistryInstance<&DynProvider>,
        key: &SessionKey,
        job: U256,
        served: &Mutex<Served>,
    ) {
        let blob_hash = JobRegistry::new(*jr.address(), p).getJob(job).call().await.unwrap().promptBlobHash;
        let blob: alloy::primitives::Bytes =
            p.raw_request("anvil_getBlobByHash".into(), (blob_hash,)).await.expect("the prompt blob is served");
        let prompt = key.open(&lcw_schema::blob::decode(&blob).unwrap()).expect("the prompt decrypts");
        // Both in the next block, in nonce order; the simulator sees the completion in its logs.
        let _ack = jr.acknowledgeJob(job).gas(150_000).send().await.unwrap();
        let _complete =
            jr.completeJob(job, B256::repeat_byte(1), B256::repeat_byte(0xcc)).gas(200_000).send().await.unwrap();
        let mut s = served.lock().unwrap();
        s.prompts.insert(job, String::from_utf8(prompt).unwrap());
        s.blobs.insert(blob_hash);
    }

    #[tokio::test]
    async fn a_real_worker_wins_sessions_beside_simulated_ones_and_serves_its_jobs_from_per_job_prompts() {
        let net = TestNet::start_with(|o| {
            o.block_time = 1;
            o.deploy.sortition = true;
            o.deploy.ack_timeout = 10;
            o.deploy.completion_timeout = 10;
            o.deploy.dispute_window = 3;
        })
        .await;
        // The last worker account: the simulator takes the first ones for its own workers.
        let real = register_worker(&net, 11, Suite::P256AesGcm).await;
        let real_address = real.address;
        let served = Arc::new(Mutex::new(Served::default()));
        // 18 requests over three workers at the same stake: the real one wins some (each
        // request with a chance of about 1/3) and so do the simulated ones.
        let options = SimulateOptions {
            jobs: 36,
            workers: 2,
            sessions: Some(18),
            auto_complete: true,
            auto_release: true,
            seed: 3,
            ..SimulateOptions::default()
        };
        let report = tokio::select! {
            r = simulate::run(net.profile(), &options, |_| {}) => r.expect("simulation runs"),
            () = real_worker(&net, real, served.clone()) => unreachable!("the real worker serves until stopped"),
        };
        let served = std::mem::take(&mut *served.lock().unwrap());
        assert_eq!((report.submitted, report.reverted, report.failed_submissions), (36, 0, 0), "{report:?}");
        assert_eq!(report.sessions_ready, 18, "{report:?}");
        let real_wins = report.claims_won_by.get(&real_address).copied().unwrap_or_default();
        assert!(real_wins > 0 && real_wins < 18, "both kinds of worker win sessions: {report:?}");
        assert!(served.claims > 0);
        assert!(report.workers.contains(&real_address), "{report:?}");
        // Only the simulated winners' claims are timed by the simulator.
        assert_eq!(report.claim_lag_blocks.samples, 18 - real_wins);

        // The real worker's jobs each came with their own encrypted prompt, and it served them
        // all (the simulated workers never act on them: they could not).
        let p = net.provider();
        let filter = Filter::new().address(net.profile().contracts.job_registry).from_block(0);
        let logs = p.get_logs(&filter).await.unwrap();
        let real_jobs: Vec<U256> = logs
            .iter()
            .filter_map(|l| JobRegistry::JobSubmitted::decode_log(&l.inner).ok())
            .filter(|ev| ev.worker == real_address)
            .map(|ev| ev.jobId)
            .collect();
        assert!(!real_jobs.is_empty());
        assert_eq!(served.prompts.keys().copied().collect::<Vec<_>>(), real_jobs);
        assert_eq!(served.blobs.len(), real_jobs.len(), "one prompt blob per job");
        assert!(served.prompts.values().all(|p| simulate::DEFAULT_PROMPTS.contains(&p.as_str())));
        let completed_by: HashMap<U256, Address> = logs
            .iter()
            .filter_map(|l| JobRegistry::JobCompleted::decode_log(&l.inner).ok())
            .map(|ev| (ev.jobId, ev.worker))
            .collect();
        assert!(real_jobs.iter().all(|j| completed_by.get(j) == Some(&real_address)));
        // Every job was completed and released, the simulated workers' by themselves.
        assert_eq!((report.completed, report.released), (36, 36), "{report:?}");
    }
}
