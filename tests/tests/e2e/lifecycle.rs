//! The job lifecycle walked through the real devnet contracts on a real anvil: every step a
//! worker, consumer, keeper, disputer and governance take, with the reverts that guard them.

use alloy::primitives::U256;
use lcw_schema::bindings::{AIConfig, JobRegistry, WorkerRegistry};
use lcw_schema::profile::Role;
use lcw_schema::suite::Suite;
use lcw_schema::types::JobState;
use lcw_tests::parties::{ack_and_complete, open_session, register_worker, register_worker_with_stake, submit};
use lcw_tests::{TestNet, b256, event, events, revert_of, send};

const WINDOW: u64 = 60;

#[tokio::test]
async fn release_after_window_credits_worker_and_unlocks_deregister() {
    let net = TestNet::start().await;
    let c = net.profile().contracts;
    let worker = register_worker(&net, 0, Suite::P256AesGcm).await;
    let ai = AIConfig::new(c.ai_config, net.provider());
    let fee = ai.calculateJobFee(lcw_tests::parties::model()).call().await.unwrap();
    let stake = ai.getMinWorkerStake().call().await.unwrap();
    let session = open_session(&net, 0, &worker, fee * U256::from(10)).await;
    let job = submit(&net, &session, b256(0xab)).await;

    let wr = WorkerRegistry::new(c.worker_registry, &worker.provider);
    let jr = JobRegistry::new(c.job_registry, &worker.provider);
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::from(1));
    let done = ack_and_complete(&net, &worker, job).await;
    let completed = event::<JobRegistry::JobCompleted>(&done).expect("JobCompleted");
    assert_eq!(completed.worker, worker.address);
    let state = jr.getJob(job).call().await.unwrap();
    assert_eq!(JobState::from_u8(state.state), Some(JobState::Completed));
    let window_end = state.completedAt + U256::from(WINDOW);

    // Before the window ends: release and deregister both refuse, saying why.
    let err = revert_of(jr.releaseJobs(vec![job]).call().await.unwrap_err());
    assert!(err.starts_with("DisputeWindowNotElapsed"), "{err}");
    assert!(err.contains(&format!("windowEnd: {window_end}")), "{err}");
    let err = revert_of(wr.deregisterWorker().call().await.unwrap_err());
    assert!(err.starts_with("ActiveJobsExist") && err.contains("activeJobCount: 1"), "{err}");

    // In the block whose timestamp is exactly the window end, the release succeeds. (Estimating
    // gas would run at the latest block's time, before the window ends: give the gas limit.)
    net.set_next_timestamp(window_end.to::<u64>()).await;
    let released = jr.releaseJobs(vec![job]).gas(300_000).send().await.unwrap().get_receipt().await.unwrap();
    assert!(released.status(), "release in the window-end block succeeds");
    let ev = event::<JobRegistry::JobReleased>(&released).expect("JobReleased");
    let block = net.provider().get_block_by_number(released.block_number.unwrap().into()).await.unwrap().unwrap();
    assert_eq!(U256::from(block.header.timestamp), window_end);
    assert_eq!(ev.workerShare, fee * U256::from(8_000) / U256::from(10_000));
    assert_eq!(ev.workerShare + ev.protocolShare + ev.feePoolShare, fee);
    assert!(event::<JobRegistry::KeeperBountyPaid>(&released).is_none(), "the worker earns no bounty from itself");
    assert_eq!(jr.workerBalance(worker.address).call().await.unwrap(), ev.workerShare);
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::ZERO);

    // Deregistration now succeeds and returns the whole stake.
    let before = net.balance(worker.address).await;
    let receipt = send!(wr.deregisterWorker());
    let gas = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(net.balance(worker.address).await, before + stake - gas);
    assert!(!wr.isWorkerRegistered(worker.address).call().await.unwrap());

    // Earnings are withdrawn separately.
    let receipt = send!(jr.withdraw());
    let w = event::<JobRegistry::WorkerWithdrawal>(&receipt).expect("WorkerWithdrawal");
    assert_eq!(w.amount, ev.workerShare);
    assert_eq!(jr.workerBalance(worker.address).call().await.unwrap(), U256::ZERO);
    let err = revert_of(jr.withdraw().call().await.unwrap_err());
    assert!(err.starts_with("NoBalanceToWithdraw"), "{err}");
}

use alloy::providers::Provider;

#[tokio::test]
async fn claim_timeout_slashes_worker_pays_keeper_and_refunds_consumer() {
    let net = TestNet::start().await;
    let c = net.profile().contracts;
    // 3 LCAI above the minimum: the first slash (2 LCAI) keeps it eligible, the second does not.
    let three = U256::from(3_000_000_000_000_000_000u128);
    let worker = register_worker_with_stake(&net, 0, Suite::P256AesGcm, three).await;
    let ai = AIConfig::new(c.ai_config, net.provider());
    let fee = ai.calculateJobFee(lcw_tests::parties::model()).call().await.unwrap();
    let min_stake = ai.getMinWorkerStake().call().await.unwrap();
    let ack_timeout: u64 = ai.getAckTimeout().call().await.unwrap().to();
    let completion_timeout: u64 = ai.getCompletionTimeout().call().await.unwrap().to();
    let session = open_session(&net, 0, &worker, fee * U256::from(10)).await;
    let keeper_signer = net.signer(Role::Keeper, 0);
    let keeper = keeper_signer.address();
    let jr = JobRegistry::new(c.job_registry, net.wallet(keeper_signer));
    let wr = WorkerRegistry::new(c.worker_registry, net.provider());

    // Not acknowledged: 200 bps of the minimum stake once the ack deadline has passed.
    let job = submit(&net, &session, b256(1)).await;
    let err = revert_of(jr.claimTimeout(job).call().await.unwrap_err());
    assert!(err.starts_with("NotTimedOut"), "{err}");
    let prepaid_before = jr.prepaidBalanceOf(session.consumer_address).call().await.unwrap();
    net.advance(ack_timeout + 1).await;
    let keeper_before = net.balance(keeper).await;
    let receipt = send!(jr.claimTimeout(job));
    let timed_out = event::<JobRegistry::JobTimedOut>(&receipt).expect("JobTimedOut");
    let slash = min_stake * U256::from(200) / U256::from(10_000);
    assert_eq!(timed_out.slashAmount, slash);
    assert_eq!(event::<WorkerRegistry::WorkerSlashed>(&receipt).expect("WorkerSlashed").amount, slash);
    let bounty = event::<JobRegistry::KeeperBountyPaid>(&receipt).expect("KeeperBountyPaid");
    assert_eq!((bounty.keeper, bounty.kind), (keeper, 1));
    assert_eq!(bounty.amount, slash * U256::from(1_000) / U256::from(10_000));
    let gas = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(net.balance(keeper).await, keeper_before + bounty.amount - gas);
    let refund = event::<JobRegistry::RefundCreditedToBalance>(&receipt).expect("refund");
    assert_eq!(refund.amount, fee);
    assert_eq!(jr.prepaidBalanceOf(session.consumer_address).call().await.unwrap(), prepaid_before + fee);
    assert_eq!(JobState::from_u8(jr.getJob(job).call().await.unwrap().state), Some(JobState::TimedOut));
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::ZERO);
    assert_eq!(wr.getWorkerStake(worker.address).call().await.unwrap(), min_stake + three - slash);

    // Acknowledged but not completed: 500 bps once the completion deadline has passed.
    let job = submit(&net, &session, b256(2)).await;
    let as_worker = JobRegistry::new(c.job_registry, &worker.provider);
    send!(as_worker.acknowledgeJob(job));
    net.advance(completion_timeout + 1).await;
    let receipt = send!(jr.claimTimeout(job));
    let timed_out = event::<JobRegistry::JobTimedOut>(&receipt).expect("JobTimedOut");
    assert_eq!(timed_out.slashAmount, min_stake * U256::from(500) / U256::from(10_000));
    // The slash took the stake below the minimum: the worker is deactivated for its model.
    assert!(event::<WorkerRegistry::WorkerDeactivated>(&receipt).is_some());
    assert!(!wr.isEligible(worker.address, lcw_tests::parties::model()).call().await.unwrap());
}

#[tokio::test]
async fn disputes_resolve_guilty_not_guilty_and_default() {
    let net = TestNet::start().await;
    let c = net.profile().contracts;
    let worker = register_worker_with_stake(&net, 0, Suite::X25519, U256::from(10u128.pow(20))).await;
    let ai = AIConfig::new(c.ai_config, net.provider());
    let fee = ai.calculateJobFee(lcw_tests::parties::model()).call().await.unwrap();
    let min_stake = ai.getMinWorkerStake().call().await.unwrap();
    let resolution: u64 = ai.getResolutionTimeout().call().await.unwrap().to();
    let session = open_session(&net, 0, &worker, fee * U256::from(10)).await;
    let consumer = JobRegistry::new(c.job_registry, &session.consumer);
    let disputer = JobRegistry::new(c.job_registry, net.wallet(net.signer(Role::Disputer, 0)));
    let keeper = JobRegistry::new(c.job_registry, net.wallet(net.signer(Role::Keeper, 0)));
    let wr = WorkerRegistry::new(c.worker_registry, net.provider());
    let bond = fee * U256::from(2);

    let mut jobs = Vec::new();
    for i in 0..3u8 {
        let job = submit(&net, &session, b256(10 + i)).await;
        ack_and_complete(&net, &worker, job).await;
        jobs.push(job);
    }
    let err = revert_of(consumer.disputeJob(jobs[0]).value(bond - U256::from(1)).call().await.unwrap_err());
    assert!(err.starts_with("InsufficientDisputeBond"), "{err}");
    let outsider = JobRegistry::new(c.job_registry, net.wallet(net.signer(Role::Keeper, 0)));
    let err = revert_of(outsider.disputeJob(jobs[0]).value(bond).call().await.unwrap_err());
    assert!(err.starts_with("UnauthorizedDisputeCaller"), "{err}");
    for job in &jobs {
        let r = send!(consumer.disputeJob(*job).value(bond));
        assert_eq!(event::<JobRegistry::DisputeCreated>(&r).unwrap().disputer, session.consumer_address);
    }
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::from(3));

    // Guilty: slashed 1500 bps, fee refunded, bond escrowed back to the filer, job terminal.
    let r = send!(disputer.resolveDispute(jobs[0], true, b256(0xee), U256::from(1_000)));
    assert!(event::<JobRegistry::DisputeResolved>(&r).unwrap().workerGuilty);
    assert_eq!(
        event::<WorkerRegistry::WorkerSlashed>(&r).unwrap().amount,
        min_stake * U256::from(1_500) / U256::from(10_000)
    );
    assert_eq!(event::<JobRegistry::RefundCreditedToBalance>(&r).unwrap().amount, fee);
    assert_eq!(event::<JobRegistry::RefundEscrowed>(&r).unwrap().amount, bond);
    assert_eq!(consumer.pendingRefund(session.consumer_address).call().await.unwrap(), bond);
    let err = revert_of(keeper.releaseJobs(vec![jobs[0]]).call().await.unwrap_err());
    assert!(err.starts_with("JobNotInState"), "{err}");
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::from(2));

    // Not guilty: releasable at once, here by a keeper who earns the release bounty.
    send!(disputer.resolveDispute(jobs[1], false, b256(0xee), U256::from(9_500)));
    let r = send!(keeper.releaseJobs(vec![jobs[1]]));
    let released = event::<JobRegistry::JobReleased>(&r).unwrap();
    let bounty = event::<JobRegistry::KeeperBountyPaid>(&r).unwrap();
    assert_eq!(bounty.kind, 0);
    assert_eq!(bounty.amount, fee * U256::from(100) / U256::from(10_000));
    assert_eq!(released.workerShare, fee * U256::from(8_000) / U256::from(10_000) - bounty.amount);

    // Never resolved: after the resolution timeout a release defaults the dispute.
    let err = revert_of(keeper.releaseJobs(vec![jobs[2]]).call().await.unwrap_err());
    assert!(err.starts_with("DisputeResolutionNotTimedOut"), "{err}");
    net.advance(resolution).await;
    let r = send!(keeper.releaseJobs(vec![jobs[2]]));
    assert!(event::<JobRegistry::DisputeDefaulted>(&r).is_some());
    assert!(event::<JobRegistry::JobReleased>(&r).is_some());
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::ZERO);

    // A dispute after the window is refused.
    let job = submit(&net, &session, b256(20)).await;
    ack_and_complete(&net, &worker, job).await;
    net.advance(WINDOW).await;
    let err = revert_of(consumer.disputeJob(job).value(bond).call().await.unwrap_err());
    assert!(err.starts_with("DisputeWindowExpired"), "{err}");
}

#[tokio::test]
async fn dispute_window_change_retimes_pending_releases() {
    let net = TestNet::start().await;
    let c = net.profile().contracts;
    let worker = register_worker(&net, 0, Suite::P256AesGcm).await;
    let fee =
        AIConfig::new(c.ai_config, net.provider()).calculateJobFee(lcw_tests::parties::model()).call().await.unwrap();
    let session = open_session(&net, 0, &worker, fee * U256::from(10)).await;
    let job = submit(&net, &session, b256(1)).await;
    ack_and_complete(&net, &worker, job).await;
    let jr = JobRegistry::new(c.job_registry, &worker.provider);
    let completed_at = jr.getJob(job).call().await.unwrap().completedAt;
    let governance = AIConfig::new(c.ai_config, net.wallet(net.signer(Role::Deployer, 0)));

    // Governance lengthens the window: the job that was due at completedAt + 60 is not.
    let r = send!(governance.setDisputeWindow(U256::from(600)));
    let ev = event::<AIConfig::DisputeParamsUpdated>(&r).expect("DisputeParamsUpdated");
    assert_eq!(ev.window, U256::from(600));
    net.advance(WINDOW + 1).await;
    let err = revert_of(jr.releaseJobs(vec![job]).call().await.unwrap_err());
    assert!(err.contains(&format!("windowEnd: {}", completed_at + U256::from(600))), "{err}");

    // Shortening it makes the job releasable at once.
    send!(governance.setDisputeWindow(U256::from(30)));
    let r = send!(jr.releaseJobs(vec![job]));
    assert!(event::<JobRegistry::JobReleased>(&r).is_some());

    // Only the owner governs, and the window never goes below its minimum.
    let outsider = AIConfig::new(c.ai_config, &worker.provider);
    let err = revert_of(outsider.setDisputeWindow(U256::from(5)).call().await.unwrap_err());
    assert!(err.starts_with("OwnableUnauthorizedAccount"), "{err}");
    let err = revert_of(governance.setDisputeWindow(U256::ZERO).call().await.unwrap_err());
    assert!(err.starts_with("ParameterOutOfBounds"), "{err}");
}

#[tokio::test]
async fn closed_session_jobs_settle_without_fault() {
    let net = TestNet::start().await;
    let c = net.profile().contracts;
    let worker = register_worker(&net, 0, Suite::P256AesGcm).await;
    let ai = AIConfig::new(c.ai_config, net.provider());
    let fee = ai.calculateJobFee(lcw_tests::parties::model()).call().await.unwrap();
    let ack_timeout: u64 = ai.getAckTimeout().call().await.unwrap().to();
    let session = open_session(&net, 0, &worker, fee * U256::from(10)).await;
    let job = submit(&net, &session, b256(1)).await;
    let consumer = JobRegistry::new(c.job_registry, &session.consumer);
    send!(consumer.closeSession(session.id));
    let err = revert_of(consumer.submitJob(session.id, b256(2)).call().await.unwrap_err());
    assert!(err.starts_with("SessionNotActive"), "{err}");
    let keeper = JobRegistry::new(c.job_registry, net.wallet(net.signer(Role::Keeper, 0)));
    let err = revert_of(keeper.settleStuckJob(job).call().await.unwrap_err());
    assert!(err.starts_with("NoFaultWindowNotReached"), "{err}");
    net.advance(ack_timeout + 1).await;
    let err = revert_of(keeper.claimTimeout(job).call().await.unwrap_err());
    assert!(err.starts_with("SessionNotActive"), "the worker is not at fault: {err}");
    let r = send!(keeper.settleStuckJob(job));
    assert_eq!(event::<JobRegistry::JobSettledNoFault>(&r).unwrap().refundAmount, fee);
    assert!(events::<WorkerRegistry::WorkerSlashed>(&r).is_empty());
    let wr = WorkerRegistry::new(c.worker_registry, net.provider());
    assert_eq!(wr.getActiveJobCount(worker.address).call().await.unwrap(), U256::ZERO);
}

#[tokio::test]
async fn registration_and_sessions_reject_bad_input() {
    let net = TestNet::start().await;
    let c = net.profile().contracts;
    let signer = net.signer(Role::Worker, 1);
    let wr = WorkerRegistry::new(c.worker_registry, net.wallet(signer));
    let ai = AIConfig::new(c.ai_config, net.provider());
    let stake = ai.getMinWorkerStake().call().await.unwrap();
    let err = revert_of(wr.registerWorker(vec![4u8; 64].into()).value(stake).call().await.unwrap_err());
    assert!(err.starts_with("InvalidEncryptionKey"), "{err}");
    let key = lcw_schema::suite::EncryptionSecret::generate(Suite::P256AesGcm).public_key();
    let err = revert_of(wr.registerWorker(key.clone().into()).value(stake - U256::from(1)).call().await.unwrap_err());
    assert!(err.starts_with("InsufficientStake"), "{err}");
    let err = revert_of(wr.addSupportedModel(b256(9)).call().await.unwrap_err());
    assert!(err.starts_with("WorkerNotRegistered"), "{err}");
    send!(wr.registerWorker(key.into()).value(stake));
    let err = revert_of(wr.addSupportedModel(b256(9)).call().await.unwrap_err());
    assert!(err.starts_with("ModelNotWhitelisted"), "{err}");

    // A session signed by someone other than the dispatcher is refused.
    let worker = register_worker(&net, 0, Suite::P256AesGcm).await;
    let consumer = net.wallet(net.signer(Role::Consumer, 0));
    let jr = JobRegistry::new(c.job_registry, &consumer);
    let bogus = lcw_contracts::simulate::dispatcher::sign_digest(&net.signer(Role::Keeper, 0), b256(7)).unwrap();
    let enc = vec![0u8; 125];
    let expiry = U256::from(net.now().await + 60);
    let err = revert_of(
        jr.createSession(lcw_tests::parties::model(), worker.address, enc.clone().into(), enc.into(), bogus, expiry)
            .call()
            .await
            .unwrap_err(),
    );
    assert!(err.starts_with("InvalidDispatcherSignature"), "{err}");
}

mod sortition;
