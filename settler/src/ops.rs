//! Operator verbs' shared machinery: the chain's own view of a worker, and one transaction
//! through the outbox, simulated first and waited for.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use lcw_schema::bindings::{JobRegistry, WorkerRegistry, decode_revert};
use lcw_schema::profile::Profile;
use serde::Serialize;

use crate::{SettlerError, SettlerResult};
use lcw_chain::FeeCap;
use lcw_chain::node::{CallSpec, Chain};
use lcw_chain::outbox::{Intent, Lane, Outbox, Tracked};
use lcw_schema::rules::schedule::ChainClock;

/// A worker as the contracts report it.
#[derive(Debug, Clone, Serialize)]
pub struct OnChainWorker {
    /// isWorkerRegistered.
    pub registered: bool,
    /// getWorkerStake.
    pub stake: U256,
    /// getActiveJobCount.
    pub active_jobs: u64,
    /// JobRegistry.workerBalance.
    pub balance: U256,
    /// Native balance of the address (gas money).
    pub native: U256,
}

/// Reads the worker's state from the contracts.
pub async fn on_chain_worker(chain: &Chain, profile: &Profile, worker: Address) -> SettlerResult<OnChainWorker> {
    let wr = WorkerRegistry::new(profile.contracts.worker_registry, chain.provider().clone());
    let jr = JobRegistry::new(profile.contracts.job_registry, chain.provider().clone());
    let e = |what: &'static str| move |err: alloy::contract::Error| SettlerError::rpc(format_args!("{what}: {err}"));
    let registered = wr.isWorkerRegistered(worker).call().await.map_err(e("isWorkerRegistered"))?;
    let stake = wr.getWorkerStake(worker).call().await.map_err(e("getWorkerStake"))?;
    let active = wr.getActiveJobCount(worker).call().await.map_err(e("getActiveJobCount"))?;
    let balance = jr.workerBalance(worker).call().await.map_err(e("workerBalance"))?;
    let native = chain.balance(worker).await?;
    Ok(OnChainWorker { registered, stake, active_jobs: u64::try_from(active).unwrap_or(u64::MAX), balance, native })
}

/// A mined operator transaction.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    /// Transaction hash.
    pub tx: B256,
    /// Block it was mined in.
    pub block: u64,
    /// Gas used.
    pub gas_used: u64,
}

/// The key's outbox and a chain connection, for one-off operator transactions.
#[derive(Debug)]
pub struct Operator {
    /// The chain.
    pub chain: Chain,
    /// The outbox.
    pub outbox: Outbox,
    /// The network.
    pub profile: Profile,
    /// The operator's fee ceiling.
    pub cap: FeeCap,
}

impl Operator {
    /// Connects to the profile's endpoints, checks that the store at `db` belongs to the
    /// profile's network (whoever indexes it), opens the outbox for `signer` there and reconciles
    /// it; every transaction pays at most `cap`.
    pub async fn open(profile: Profile, db: &Path, signer: PrivateKeySigner, cap: FeeCap) -> SettlerResult<Self> {
        let chain = Chain::open(&profile, Duration::from_secs(20)).await?;
        lcw_schema::store::Store::open_as(db, &lcw_schema::store::Identity::of(&profile))?;
        let mut outbox = Outbox::open(db, signer, chain.chain_id, Lane::Operator)?.with_filler_cap(cap);
        outbox.reconcile(&chain).await?;
        Ok(Operator { chain, outbox, profile, cap })
    }

    /// Simulates `data` to `to` in the next block, sends it through the outbox and waits for it to
    /// be mined (at most `timeout`). A simulated revert is returned as an error with the decoded
    /// reason and nothing is sent.
    pub async fn send(
        &mut self,
        kind: &'static str,
        to: Address,
        data: Bytes,
        jobs: Vec<u64>,
        timeout: Duration,
    ) -> SettlerResult<Sent> {
        let head = self.chain.head().await?;
        let mut clock = ChainClock::default();
        clock.observe(head.number, head.timestamp);
        let me = self.outbox.sender();
        let sim = self
            .chain
            .simulate(&[CallSpec { from: me, to, data: data.clone() }], head.next_number(), clock.next_ts())
            .await?;
        let sim = sim.first().ok_or_else(|| SettlerError::Rpc("the simulation answered no call".into()))?;
        let used = match sim {
            s if s.ok() => s.gas_used.unwrap_or(0).max(21_000),
            s => {
                let reason = s.revert.as_ref().map(|r| decode_revert(r)).or(s.error.clone()).unwrap_or_default();
                return Err(SettlerError::Config(format!("{kind} would revert: {reason}")));
            }
        };
        let fees = self.chain.fees(1_000_000).await?;
        let intent = Intent {
            kind,
            to,
            data,
            value: U256::ZERO,
            gas_limit: crate::plan::gas_limit(used),
            jobs,
            target_block: head.next_number(),
            blob: None,
            cap: self.cap,
        };
        let (id, hash) = self.submit(&intent, fees, head.number).await?;
        self.wait(id, hash, timeout).await
    }

    /// Sends `intent` through the outbox. A one-off verb does not wait for a node to change its
    /// mind: when the node refuses the transaction, it is given up at once (its nonce freed, or
    /// taken by a transfer to self) and the refusal is the error.
    pub async fn submit(&mut self, intent: &Intent, fees: lcw_chain::Fees, head: u64) -> SettlerResult<(i64, B256)> {
        match self.outbox.submit(&self.chain, intent, fees, head).await {
            Err(SettlerError::Rejected(reason)) => {
                for refused in self.outbox.refused()? {
                    if refused.kind.as_str() == intent.kind {
                        self.outbox.cancel(&self.chain, refused.id).await?;
                    }
                }
                Err(SettlerError::Rejected(format!("{reason}; nothing was sent")))
            }
            other => other,
        }
    }

    /// Waits for outbox transaction `id` to be mined, bumping fees if it gets stuck.
    pub async fn wait(&mut self, id: i64, hash: B256, timeout: Duration) -> SettlerResult<Sent> {
        let started = Instant::now();
        loop {
            let head = self.chain.head().await?;
            let fees = self.chain.fees(1_000_000).await?;
            for e in self.outbox.track(&self.chain, &head, Some(fees)).await? {
                match e {
                    Tracked::Mined { id: m, block, gas_used, .. } if m == id => {
                        return Ok(Sent { tx: hash, block, gas_used });
                    }
                    Tracked::Reverted { id: m, block, .. } if m == id => {
                        return Err(SettlerError::Rpc(format!("transaction {hash} reverted in block {block}")));
                    }
                    Tracked::Dropped { id: m, note } if m == id => return Err(SettlerError::Rpc(note)),
                    _ => {}
                }
            }
            if started.elapsed() > timeout {
                return Err(SettlerError::Rpc(format!(
                    "transaction {hash} not mined after {} s; it stays in the outbox and the next lcw command re-broadcasts it",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
