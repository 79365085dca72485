//! Sortition helpers: a consumer requests a session from the SessionManager, a worker claims it,
//! the consumer provides the session key wrapped for the winner and JobRegistry adopts the
//! session, as on today's testnet.

use std::collections::HashSet;
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionReceipt;
use lcw_contracts::simulate::dispatcher::disputer_secret;
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Role;
use lcw_schema::suite::{SessionKey, wrap_session_key};

use crate::parties::{Session, Worker, model};
use crate::{TestNet, event};

/// The devnet's SessionManager, as AIConfig publishes it.
pub async fn manager(net: &TestNet) -> Address {
    AIConfig::new(net.profile().contracts.ai_config, net.provider())
        .getSessionManagerAddress()
        .call()
        .await
        .expect("getSessionManagerAddress")
}

/// A session request made by a consumer.
#[derive(Debug)]
pub struct Request {
    /// Request id.
    pub id: U256,
    /// Block of the request (its hash seeds the draw).
    pub block: u64,
    /// The consumer's signing provider.
    pub consumer: DynProvider,
    /// The consumer's address.
    pub consumer_address: Address,
    /// The receipt of the request.
    pub receipt: TransactionReceipt,
}

/// The `consumer`-th consumer requests a session for the devnet model, open for `ttl` seconds,
/// requiring the capability bits `caps` (0: none).
pub async fn request(net: &TestNet, consumer: usize, ttl: u64, caps: U256) -> Request {
    let signer = net.signer(Role::Consumer, consumer);
    let consumer_address = signer.address();
    let provider = net.wallet(signer);
    let sm = SessionManager::new(manager(net).await, &provider);
    let expiry = U256::from(net.now().await + ttl);
    let receipt = if caps.is_zero() {
        crate::send!(sm.requestSession(model(), expiry))
    } else {
        crate::send!(sm.requestSessionWithCapabilities(model(), expiry, caps))
    };
    let ev = event::<SessionManager::SessionRequested>(&receipt).expect("SessionRequested");
    assert_eq!(ev.requestBlock, U256::from(receipt.block_number.expect("mined")));
    Request { id: ev.reqId, block: ev.requestBlock.to(), consumer: provider, consumer_address, receipt }
}

/// The hash of `block` (the draw's seed for a request made in it).
pub async fn block_hash(net: &TestNet, block: u64) -> B256 {
    net.provider().get_block_by_number(block.into()).await.expect("block").expect("exists").header.hash
}

/// `worker`'s claim delay for `req` from the Rust rule, with the chain's stake and parameters.
pub async fn predicted_delay(net: &TestNet, req: &Request, worker: Address) -> u64 {
    let c = net.profile().contracts;
    let ai = AIConfig::new(c.ai_config, net.provider());
    let wr = WorkerRegistry::new(c.worker_registry, net.provider());
    lcw_schema::rules::sortition::claim_delay(
        block_hash(net, req.block).await,
        req.id,
        worker,
        wr.getWorkerStake(worker).call().await.expect("stake"),
        ai.getMinWorkerStake().call().await.expect("min stake"),
        ai.getClaimWindowBlocks().call().await.expect("claim window"),
    )
}

/// The consumer provides the session key wrapped for the request's claimer; returns the adopted
/// session (id from SessionReady) and the receipt.
pub async fn provide_key(net: &TestNet, req: &Request, worker: &Worker) -> Session {
    let key = SessionKey::generate();
    let enc_worker: Bytes = wrap_session_key(&worker.secret.public_key(), &key).expect("wrap").into();
    let disputer_key = net.profile().account(Role::Disputer).expect("disputer").private_key;
    let enc_disputer: Bytes =
        wrap_session_key(&disputer_secret(&disputer_key).public_key(), &key).expect("wrap").into();
    let sm = SessionManager::new(manager(net).await, &req.consumer);
    let receipt = crate::send!(sm.provideSessionKey(req.id, enc_worker, enc_disputer));
    let ready = event::<SessionManager::SessionReady>(&receipt).expect("SessionReady");
    assert_eq!(ready.reqId, req.id);
    let adopted = event::<JobRegistry::SessionAdopted>(&receipt).expect("SessionAdopted");
    assert_eq!(adopted.sessionId, ready.sessionId);
    Session {
        id: ready.sessionId,
        consumer: req.consumer.clone(),
        consumer_address: req.consumer_address,
        key,
        receipt,
    }
}

/// The claim delay of `me` for request `id` made in `block`, from the chain (seed, stake,
/// minimum stake, window) and the rule.
pub async fn delay_of(
    net_provider: &DynProvider,
    ai_config: Address,
    worker_registry: Address,
    id: U256,
    block: u64,
    me: Address,
) -> u64 {
    let ai = AIConfig::new(ai_config, net_provider);
    let wr = WorkerRegistry::new(worker_registry, net_provider);
    let seed = net_provider.get_block_by_number(block.into()).await.expect("block").expect("exists").header.hash;
    lcw_schema::rules::sortition::claim_delay(
        seed,
        id,
        me,
        wr.getWorkerStake(me).call().await.expect("stake"),
        ai.getMinWorkerStake().call().await.expect("min stake"),
        ai.getClaimWindowBlocks().call().await.expect("claim window"),
    )
}

/// A competing worker that is not lcw: the `index`-th worker account claims every request sent
/// on `requests` (id, block) in the block its turn comes (the claim goes out when the head is
/// the block before). Ends when the sender is dropped; returns how many it won.
pub fn competitor(
    net: &TestNet,
    index: usize,
    requests: tokio::sync::watch::Receiver<Vec<(U256, u64)>>,
) -> tokio::task::JoinHandle<u64> {
    let signer = net.signer(Role::Worker, index);
    let me = signer.address();
    let provider = net.wallet(signer);
    let read = net.provider();
    let contracts = net.profile().contracts;
    tokio::spawn(async move {
        let ai = AIConfig::new(contracts.ai_config, &read);
        let sm = SessionManager::new(ai.getSessionManagerAddress().call().await.expect("manager"), &provider);
        let mut done: HashSet<U256> = HashSet::new();
        let mut won = 0;
        while requests.has_changed().is_ok() {
            let head = read.get_block_number().await.expect("head");
            let open: Vec<(U256, u64)> =
                requests.borrow().iter().copied().filter(|(id, _)| !done.contains(id)).collect();
            for (id, block) in open {
                if sm.getRequest(id).call().await.expect("getRequest").status != 0 {
                    done.insert(id);
                    continue;
                }
                let delay = delay_of(&read, contracts.ai_config, contracts.worker_registry, id, block, me).await;
                if head + 1 >= block + delay {
                    done.insert(id);
                    if let Ok(p) = sm.claimSession(id).gas(200_000).send().await
                        && p.get_receipt().await.is_ok_and(|r| r.status())
                    {
                        won += 1;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        won
    })
}
