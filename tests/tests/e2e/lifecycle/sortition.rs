//! SessionManager on a real anvil: requests, the widening stake-weighted claim window, claims and
//! their refusals, the claim race, expiry, and the adoption of the session by JobRegistry.

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Role;
use lcw_schema::suite::Suite;
use lcw_tests::parties::{Worker, ack_and_complete, register_worker_with_stake, submit};
use lcw_tests::sortition::{manager, predicted_delay, provide_key, request};
use lcw_tests::{TestNet, b256, event, revert_of, send};

async fn sortition_net() -> TestNet {
    TestNet::start_with(|o| o.deploy.sortition = true).await
}

async fn governance(net: &TestNet) -> AIConfig::AIConfigInstance<alloy::providers::DynProvider> {
    AIConfig::new(net.profile().contracts.ai_config, net.wallet(net.signer(Role::Deployer, 0)))
}

async fn min_stake(net: &TestNet) -> U256 {
    AIConfig::new(net.profile().contracts.ai_config, net.provider()).getMinWorkerStake().call().await.unwrap()
}

/// Workers 0..n with stakes of `multiples[i]` times the minimum.
async fn workers(net: &TestNet, multiples: &[u64]) -> Vec<Worker> {
    let min = min_stake(net).await;
    let mut out = Vec::new();
    for (i, m) in multiples.iter().enumerate() {
        out.push(register_worker_with_stake(net, i, Suite::P256AesGcm, min * U256::from(m - 1)).await);
    }
    out
}

#[tokio::test]
async fn the_claim_window_widens_over_blocks_weighted_by_stake_as_the_rule_predicts() {
    let net = sortition_net().await;
    let gov = governance(&net).await;
    send!(gov.setClaimWindowBlocks(U256::from(8)));
    let ws = workers(&net, &[1, 1, 2, 4]).await;
    let sm = SessionManager::new(manager(&net).await, net.provider());

    // In the request's own block nobody is eligible: the seed (its hash) does not exist yet.
    let first = request(&net, 0, 3600, U256::ZERO).await;
    for w in &ws {
        assert!(!sm.eligibleNow(first.id, w.address).call().await.unwrap(), "eligible in the request's block");
        let sm_w = SessionManager::new(manager(&net).await, &w.provider);
        let err = revert_of(sm_w.claimSession(first.id).call().await.unwrap_err());
        assert!(err.starts_with("SeedNotReady"), "{err}");
    }

    // 24 more requests, one block each; then the chain at one head holds requests of every age.
    let mut reqs = vec![first];
    for i in 1..25 {
        reqs.push(request(&net, i % 4, 3600, U256::ZERO).await);
    }
    let latest = net.provider().get_block_number().await.unwrap();
    let mut delays: Vec<Vec<u64>> = Vec::new();
    let mut checked = 0;
    for r in &reqs {
        let elapsed = latest - r.block;
        let mut row = Vec::new();
        for w in &ws {
            let delay = predicted_delay(&net, r, w.address).await;
            assert!((1..=8).contains(&delay), "delay {delay} outside the window");
            let eligible = sm.eligibleNow(r.id, w.address).call().await.unwrap();
            assert_eq!(
                eligible,
                elapsed >= delay,
                "request {} worker {} elapsed {elapsed} delay {delay}",
                r.id,
                w.address
            );
            row.push(delay);
            checked += 1;
        }
        // Once the window has fully opened, every eligible worker qualifies.
        if elapsed >= 8 {
            assert!(row.iter().all(|d| *d <= elapsed));
        }
        delays.push(row);
    }
    assert_eq!(checked, 100);
    // Stake shortens the wait: the 4x worker's turns come before the 1x workers' on average.
    let mean = |i: usize| delays.iter().map(|r| r[i]).sum::<u64>() as f64 / delays.len() as f64;
    assert!(mean(3) < mean(0) && mean(3) < mean(1), "4x {} vs 1x {} / {}", mean(3), mean(0), mean(1));
    assert!(delays.iter().all(|r| r[3] <= 3), "a 4x stake is eligible within a quarter of the window");
}

#[tokio::test]
async fn claims_are_refused_with_the_reason_upstream_names() {
    let net = sortition_net().await;
    let c = net.profile().contracts;
    let gov = governance(&net).await;
    send!(gov.setClaimWindowBlocks(U256::from(1)));
    let ws = workers(&net, &[1]).await;
    let a = &ws[0];
    let sm_addr = manager(&net).await;
    let a_sm = SessionManager::new(sm_addr, &a.provider);
    let wr_a = WorkerRegistry::new(c.worker_registry, &a.provider);

    // Capabilities: only registered bits, on requests and on workers.
    let wr = WorkerRegistry::new(c.worker_registry, net.provider());
    let vision = wr.getCapabilityMask("vision".into()).call().await.unwrap();
    assert_eq!(vision, U256::from(2), "vision is bit 1 on the devnet");
    assert_eq!(wr.getCapabilityName(1).call().await.unwrap(), "vision");
    let err = revert_of(wr_a.setCapabilities(U256::from(1u64 << 5)).call().await.unwrap_err());
    assert!(err.starts_with("UnknownCapabilityBits"), "{err}");
    let consumer_sm = SessionManager::new(sm_addr, net.wallet(net.signer(Role::Consumer, 0)));
    let expiry = U256::from(net.now().await + 600);
    let err = revert_of(
        consumer_sm
            .requestSessionWithCapabilities(lcw_tests::parties::model(), expiry, U256::from(1u64 << 7))
            .call()
            .await
            .unwrap_err(),
    );
    assert!(err.starts_with("UnknownCapabilityBits"), "{err}");

    let req = request(&net, 0, 600, vision).await;
    net.provider().anvil_mine(Some(1), None).await.unwrap();
    // An unregistered account is not eligible; a worker without the capability is refused.
    let outsider = SessionManager::new(sm_addr, net.wallet(net.signer(Role::Worker, 5)));
    let err = revert_of(outsider.claimSession(req.id).call().await.unwrap_err());
    assert!(err.starts_with("WorkerNotEligibleForClaim"), "{err}");
    let err = revert_of(a_sm.claimSession(req.id).call().await.unwrap_err());
    assert!(err.starts_with("MissingCapabilities") && err.contains("requiredMask: 2"), "{err}");
    let caps = send!(wr_a.setCapabilities(U256::from(3)));
    assert_eq!(event::<WorkerRegistry::WorkerCapabilitiesSet>(&caps).unwrap().mask, U256::from(3));

    // Providing the key before a claim, or by someone else, is refused.
    let other = SessionManager::new(sm_addr, net.wallet(net.signer(Role::Consumer, 1)));
    let enc = vec![0u8; 125];
    let err = revert_of(req_provide(&other, req.id, &enc).await);
    assert!(err.starts_with("NotRequestOwner"), "{err}");
    let owner = SessionManager::new(sm_addr, req.consumer.clone());
    let err = revert_of(req_provide(&owner, req.id, &enc).await);
    assert!(err.starts_with("RequestNotClaimed"), "{err}");

    let claimed = send!(a_sm.claimSession(req.id));
    let ev = event::<SessionManager::SessionClaimed>(&claimed).unwrap();
    assert_eq!((ev.reqId, ev.worker), (req.id, a.address));
    let r = a_sm.getRequest(req.id).call().await.unwrap();
    assert_eq!((r.worker, r.status), (a.address, 1), "Claimed");
    let session = provide_key(&net, &req, a).await;
    let err = revert_of(a_sm.claimSession(req.id).call().await.unwrap_err());
    assert!(err.starts_with("RequestNotOpen"), "{err}");
    assert_eq!(a_sm.getRequest(req.id).call().await.unwrap().status, 2, "Ready");

    // The adopted session is a session like any other: jobs flow through it.
    let jr = JobRegistry::new(c.job_registry, net.provider());
    let s = jr.getSession(session.id).call().await.unwrap();
    assert_eq!(
        (s.user, s.worker, s.status, s.modelId),
        (req.consumer_address, a.address, 0, lcw_tests::parties::model())
    );
    assert_eq!(s.encWorkerKey.len(), 125);
    let consumer_jr = JobRegistry::new(c.job_registry, &req.consumer);
    let fee =
        AIConfig::new(c.ai_config, net.provider()).calculateJobFee(lcw_tests::parties::model()).call().await.unwrap();
    send!(consumer_jr.deposit().value(fee * U256::from(3)));
    let job = submit(&net, &session, b256(0x11)).await;
    let done = ack_and_complete(&net, a, job).await;
    assert!(event::<JobRegistry::JobCompleted>(&done).is_some());

    // At capacity (one active job, at most one): refused.
    send!(gov.setMaxConcurrentJobs(U256::from(1)));
    let second = request(&net, 1, 600, U256::ZERO).await;
    net.provider().anvil_mine(Some(1), None).await.unwrap();
    let err = revert_of(a_sm.claimSession(second.id).call().await.unwrap_err());
    assert!(err.starts_with("WorkerAtCapacity"), "{err}");
    send!(gov.setMaxConcurrentJobs(U256::from(64)));

    // Expiry: no claim, no key after it; getRequest says Expired.
    net.advance(601).await;
    let err = revert_of(a_sm.claimSession(second.id).call().await.unwrap_err());
    assert!(err.starts_with("RequestExpired"), "{err}");
    assert_eq!(a_sm.getRequest(second.id).call().await.unwrap().status, 3, "Expired");
    let err = revert_of(
        consumer_sm.requestSession(lcw_tests::parties::model(), U256::from(net.now().await)).call().await.unwrap_err(),
    );
    assert!(err.starts_with("RequestExpired"), "an expiry in the past: {err}");

    // Only the SessionManager adopts sessions.
    let err = revert_of(
        consumer_jr
            .adoptSession(
                req.consumer_address,
                lcw_tests::parties::model(),
                a.address,
                enc.clone().into(),
                enc.clone().into(),
            )
            .call()
            .await
            .unwrap_err(),
    );
    assert!(err.starts_with("NotSessionManager"), "{err}");

    // Delegates act for a user only once authorized.
    let keeper = net.signer(Role::Keeper, 0);
    let keeper_sm = SessionManager::new(sm_addr, net.wallet(keeper.clone()));
    let expiry = U256::from(net.now().await + 600);
    let err = revert_of(
        keeper_sm
            .requestSessionFor(req.consumer_address, lcw_tests::parties::model(), expiry)
            .call()
            .await
            .unwrap_err(),
    );
    assert!(err.starts_with("NotAuthorizedDelegate"), "{err}");
    send!(consumer_jr.setDelegateAuthorization(keeper.address(), true));
    let r = send!(keeper_sm.requestSessionFor(req.consumer_address, lcw_tests::parties::model(), expiry));
    assert_eq!(event::<SessionManager::SessionRequested>(&r).unwrap().user, req.consumer_address);

    // With sortition off, nothing is requested or claimed.
    send!(gov.setSortitionEnabled(false));
    let err = revert_of(consumer_sm.requestSession(lcw_tests::parties::model(), expiry).call().await.unwrap_err());
    assert!(err.starts_with("SortitionDisabled"), "{err}");
}

async fn req_provide(
    sm: &SessionManager::SessionManagerInstance<alloy::providers::DynProvider>,
    id: U256,
    enc: &[u8],
) -> alloy::contract::Error {
    sm.provideSessionKey(id, enc.to_vec().into(), enc.to_vec().into()).call().await.unwrap_err()
}

#[tokio::test]
async fn a_worker_claiming_before_its_turn_is_refused_and_the_race_loser_gets_already_claimed() {
    let net = sortition_net().await;
    let gov = governance(&net).await;
    send!(gov.setClaimWindowBlocks(U256::from(8)));
    let ws = workers(&net, &[1, 1, 1]).await;
    let sm_addr = manager(&net).await;

    // Find a request where some worker's turn comes after the next block.
    let (req, late) = loop {
        let req = request(&net, 0, 3600, U256::ZERO).await;
        let mut late = None;
        for w in &ws {
            if predicted_delay(&net, &req, w.address).await > 1 {
                late = Some(w);
            }
        }
        if let Some(w) = late {
            break (req, w);
        }
    };
    net.provider().anvil_mine(Some(1), None).await.unwrap();
    let err = revert_of(SessionManager::new(sm_addr, &late.provider).claimSession(req.id).call().await.unwrap_err());
    assert!(err.starts_with("NotSortitionEligible"), "{err}");

    // Once the window has opened to all, two claims land in one block: the first wins.
    net.provider().anvil_mine(Some(8), None).await.unwrap();
    let p = net.provider();
    p.anvil_set_auto_mine(false).await.unwrap();
    let mut pending = Vec::new();
    for w in &ws[..2] {
        let sm_w = SessionManager::new(sm_addr, &w.provider);
        pending.push(sm_w.claimSession(req.id).gas(200_000).send().await.unwrap());
    }
    p.anvil_mine(Some(1), None).await.unwrap();
    p.anvil_set_auto_mine(true).await.unwrap();
    let mut receipts = Vec::new();
    for tx in pending {
        receipts.push(tx.get_receipt().await.unwrap());
    }
    assert_eq!(receipts[0].block_number, receipts[1].block_number, "both claims in one block");
    assert!(receipts[0].status(), "the first claim wins");
    assert!(!receipts[1].status(), "the second reverts");
    let block = receipts[1].block_number.unwrap();
    // Replayed after the winner's claim, the loser's claim says why.
    let err = revert_of(
        SessionManager::new(sm_addr, &ws[1].provider)
            .claimSession(req.id)
            .call()
            .block(block.into())
            .await
            .unwrap_err(),
    );
    assert!(err.starts_with("AlreadyClaimed"), "{err}");
    let winner = event::<SessionManager::SessionClaimed>(&receipts[0]).unwrap().worker;
    assert_eq!(winner, ws[0].address);
}
