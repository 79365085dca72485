//! The view of the node that transactions need: heads, fees, simulation at the next block, raw
//! broadcast, receipts and nonces. Thin JSON-RPC over an alloy provider; every call names what
//! failed.
//!
//! The provider runs on the failover client of [`crate::rpc`] ([`Chain::open`]): the profile's
//! `rpc_url` first, then its `rpc_fallback_urls`, each endpoint's chain id checked against the
//! profile's before its first call and again after every failover to it, an endpoint of another
//! chain never used. Typed contract reads through `chain.provider()` fail over with the rest. A
//! call retries and fails over for at most the request timeout given to [`Chain::open`] (every
//! endpoint is tried at least once), then fails: the settler's and the worker's loops try again at
//! their own pace. A JSON-RPC error answer (a revert, a refused transaction) is returned at once.
//! A broadcast may reach a second endpoint after a transport failure; see [`Chain::send_raw`].
//!
//! What the node says about fees is checked before it is used ([`next_fees`]).

use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::{FeeHistory, TransactionReceipt};
use lcw_schema::profile::{Profile, redact_urls};
use serde::Deserialize;
use serde_json::json;

use crate::fees::{GWEI, Wei};
use crate::rpc::{Rpc, RpcError};
use crate::{ChainError, ChainResult};

/// A block header, reduced to what the settler reasons with. Headers from a node are checked
/// ([`Head::checked`]): number and timestamp are at most [`MAX_BLOCK_VALUE`], so that the next
/// block's ([`Head::next_number`]) never overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Timestamp.
    pub timestamp: u64,
    /// Base fee of this block (0 before London).
    pub base_fee: u128,
}

impl Head {
    /// A head from a node's header, or why the header is not believable.
    pub fn checked(number: u64, hash: B256, timestamp: u64, base_fee: u64) -> ChainResult<Head> {
        if number > MAX_BLOCK_VALUE || timestamp > MAX_BLOCK_VALUE {
            return Err(ChainError::Rpc(format!(
                "the node answered block {number} with timestamp {timestamp}: past {MAX_BLOCK_VALUE}, which no chain \
                 reaches; the node's answer is wrong"
            )));
        }
        Ok(Head { number, hash, timestamp, base_fee: u128::from(base_fee) })
    }

    /// The number of the block after this one (saturating: a checked head is far below the top).
    pub fn next_number(&self) -> u64 {
        self.number.saturating_add(1)
    }
}

/// EIP-1559 fees for a new transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// maxFeePerGas.
    pub max_fee: u128,
    /// maxPriorityFeePerGas.
    pub tip: u128,
}

/// One simulated call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulated {
    /// Gas used, when it succeeded.
    pub gas_used: Option<u64>,
    /// Revert data when it failed.
    pub revert: Option<Bytes>,
    /// The node's message when it failed.
    pub error: Option<String>,
}

impl Simulated {
    /// Whether the call succeeded.
    pub fn ok(&self) -> bool {
        self.gas_used.is_some()
    }
}

/// A call to simulate.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// Sender.
    pub from: Address,
    /// Target.
    pub to: Address,
    /// Calldata.
    pub data: Bytes,
}

/// Connection to the node, over the failover client.
#[derive(Debug, Clone)]
pub struct Chain {
    provider: DynProvider,
    rpc: Rpc,
    /// Chain id.
    pub chain_id: u64,
    simulate_v1: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn rpc_err(what: &str) -> impl Fn(alloy::transports::TransportError) -> ChainError + '_ {
    // reqwest quotes the request URL, API key included.
    move |e| ChainError::rpc(format_args!("{what}: {e}"))
}

/// The gas each simulated call may use (`0x3b9aca00`): a node that reports more used is wrong.
const SIM_GAS: u64 = 1_000_000_000;

/// The largest block number or timestamp believed: the store keeps them as SQLite integers
/// (i64), and no chain comes near it. A larger one is a wrong answer, refused before any
/// arithmetic on it (`number + 1`) can overflow.
pub const MAX_BLOCK_VALUE: u64 = i64::MAX as u64;

impl Chain {
    /// Connects to the profile's endpoints (`rpc_url`, then `rpc_fallback_urls`) with a
    /// per-request `timeout`, which is also how long a call keeps retrying and failing over. Each
    /// endpoint is tried once: it fails when none answers, and with [`ChainError::WrongChain`]
    /// when every one that answers serves another chain than the profile's.
    pub async fn open(profile: &Profile, timeout: Duration) -> ChainResult<Self> {
        let rpc = Rpc::for_profile(profile, timeout).map_err(ChainError::config)?;
        Self::over(rpc.give_up_after(timeout)).await
    }

    /// [`Chain::open`] for a process that keeps running (`lcw run`, `lcw work`, `lcw settle`):
    /// while no endpoint answers (a node restarting, a rate limit, a network outage) it waits and
    /// tries again, backing off to 15 s, with a warning at the first failure and every minute
    /// after, until one answers, or `stop` turns true (`Ok(None)`). A wrong chain or a bad
    /// profile fails at once: waiting cannot fix them.
    pub async fn open_patiently(
        profile: &Profile,
        timeout: Duration,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> ChainResult<Option<Self>> {
        patiently("connecting to the node", stop, || Self::open(profile, timeout)).await
    }

    /// A chain over the profile's endpoints without a round trip now: its chain id is the
    /// profile's, and the failover client checks each endpoint's before first using it. For
    /// what is built before the node is known to answer (the worker's blob source).
    pub fn lazy(profile: &Profile, timeout: Duration) -> ChainResult<Self> {
        let rpc = Rpc::for_profile(profile, timeout).map_err(ChainError::config)?.give_up_after(timeout);
        let client = RpcClient::new(rpc.transport(), rpc.is_local());
        let provider = ProviderBuilder::new().connect_client(client).erased();
        Ok(Chain { provider, rpc, chain_id: profile.chain_id, simulate_v1: std::sync::Arc::new(true.into()) })
    }

    /// Connects to one `url` and takes its chain as the expected one (tests, `--head-rpc`); the
    /// processes of a network use [`Chain::open`].
    pub async fn connect(url: &str, timeout: Duration) -> ChainResult<Self> {
        let rpc = Rpc::new(&[url.to_owned()], timeout).map_err(ChainError::config)?;
        Self::over(rpc.give_up_after(timeout)).await
    }

    /// A chain over `rpc` (sharing its endpoints and what is known about them), after one round
    /// over the endpoints to find one that answers the expected chain id.
    pub async fn over(rpc: Rpc) -> ChainResult<Self> {
        let chain_id = match rpc.give_up_after(Duration::ZERO).chain_id().await {
            Ok(id) => id,
            Err(e @ RpcError::WrongChain { .. }) => return Err(ChainError::WrongChain(e)),
            Err(e) => return Err(ChainError::rpc(e)),
        };
        let client = RpcClient::new(rpc.transport(), rpc.is_local());
        let provider = ProviderBuilder::new().connect_client(client).erased();
        Ok(Chain { provider, rpc, chain_id, simulate_v1: std::sync::Arc::new(true.into()) })
    }

    /// The failover client under the provider (its endpoints, health and chain checks).
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The provider (for typed contract reads).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The latest head.
    pub async fn head(&self) -> ChainResult<Head> {
        self.block(BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| ChainError::Rpc("the node has no latest block".into()))
    }

    /// A block's header. A number or timestamp past [`MAX_BLOCK_VALUE`] is refused as a wrong
    /// answer.
    pub async fn block(&self, tag: BlockNumberOrTag) -> ChainResult<Option<Head>> {
        let b = self.provider.get_block_by_number(tag).await.map_err(rpc_err("eth_getBlockByNumber"))?;
        b.map(|b| {
            Head::checked(b.header.number, b.header.hash, b.header.timestamp, b.header.base_fee_per_gas.unwrap_or(0))
        })
        .transpose()
    }

    /// Fees from the node's fee history: the next block's base fee doubled (room for six full
    /// blocks of increases) plus the median tip of recent blocks, at least `min_tip`. An answer
    /// out of all proportion to the head's base fee is refused ([`next_fees`]).
    pub async fn fees(&self, min_tip: u128) -> ChainResult<Fees> {
        let (history, head) =
            futures::join!(self.provider.get_fee_history(10, BlockNumberOrTag::Latest, &[50.0]), self.head());
        let history = history.map_err(rpc_err("eth_feeHistory"))?;
        next_fees(&history, &head?, min_tip).map_err(ChainError::rpc)
    }

    /// Simulates `calls` one after another in a block on top of the head with the given number
    /// and timestamp (the block the transaction is meant for). Uses eth_simulateV1 (gas used per
    /// call) and falls back to eth_call with block overrides on nodes without it.
    pub async fn simulate(&self, calls: &[CallSpec], number: u64, timestamp: u64) -> ChainResult<Vec<Simulated>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let overrides = json!({ "number": format!("{number:#x}"), "time": format!("{timestamp:#x}") });
        if self.simulate_v1.load(std::sync::atomic::Ordering::Relaxed) {
            let calls_json: Vec<_> = calls
                .iter()
                .map(|c| json!({ "from": c.from, "to": c.to, "input": c.data, "gas": "0x3b9aca00" }))
                .collect();
            let params = json!([{ "blockStateCalls": [{ "blockOverrides": overrides, "calls": calls_json }],
                                  "validation": false }, "latest"]);
            let r: Result<Vec<SimBlock>, _> = self.provider.raw_request("eth_simulateV1".into(), params).await;
            match r {
                Ok(blocks) => {
                    let block =
                        blocks.into_iter().next().ok_or_else(|| ChainError::Rpc("eth_simulateV1: no block".into()))?;
                    return simulated(block, calls.len());
                }
                Err(e) if is_method_missing(&e.to_string()) => {
                    tracing::info!("the node has no eth_simulateV1; simulating with eth_call and block overrides");
                    self.simulate_v1.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(rpc_err("eth_simulateV1")(e)),
            }
        }
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let params = json!([{ "from": c.from, "to": c.to, "input": c.data }, "latest", null, overrides]);
            let r: Result<Bytes, _> = self.provider.raw_request("eth_call".into(), params).await;
            out.push(match r {
                // eth_call reports no gas: the caller's per-job model fills it in.
                Ok(_) => Simulated { gas_used: Some(0), revert: None, error: None },
                Err(e) => {
                    let revert = e.as_error_resp().and_then(|p| p.as_revert_data());
                    if revert.is_none() && e.as_error_resp().is_none() {
                        return Err(rpc_err("eth_call")(e));
                    }
                    Simulated { gas_used: None, revert, error: Some(redact_urls(&e.to_string())) }
                }
            });
        }
        Ok(out)
    }

    /// `eth_call` of `call` in a block on top of the head with the given number and timestamp
    /// (block overrides): what a view answers in the block a transaction is meant for.
    pub async fn call_at(&self, call: &CallSpec, number: u64, timestamp: u64) -> ChainResult<Bytes> {
        let overrides = json!({ "number": format!("{number:#x}"), "time": format!("{timestamp:#x}") });
        let params = json!([{ "from": call.from, "to": call.to, "input": call.data }, "latest", null, overrides]);
        self.provider.raw_request("eth_call".into(), params).await.map_err(rpc_err("eth_call"))
    }

    /// Broadcasts a signed transaction. `Ok(None)` when the node already has it.
    ///
    /// After a transport failure the same bytes go to the next endpoint: the first node may have
    /// taken the transaction before the connection broke, and then the second one answers "already
    /// known" (`Ok(None)`) or, once it is mined, "nonce too low"; either way there is one
    /// transaction. A refusal from a node is its answer and is returned at once.
    pub async fn send_raw(&self, raw: &Bytes) -> Result<Option<B256>, String> {
        let r: Result<B256, _> = self.provider.raw_request("eth_sendRawTransaction".into(), (raw,)).await;
        match r {
            Ok(h) => Ok(Some(h)),
            Err(e) => {
                let m = redact_urls(&e.to_string());
                if m.to_lowercase().contains("already known") || m.to_lowercase().contains("already imported") {
                    Ok(None)
                } else {
                    Err(m)
                }
            }
        }
    }

    /// Receipts of `hashes` (None: not mined) in one JSON-RPC batch.
    pub async fn receipts(&self, hashes: &[B256]) -> ChainResult<Vec<Option<TransactionReceipt>>> {
        let mut out = Vec::with_capacity(hashes.len());
        let futures: Vec<_> = hashes.iter().map(|h| self.provider.get_transaction_receipt(*h)).collect();
        for r in futures::future::join_all(futures).await {
            out.push(r.map_err(rpc_err("eth_getTransactionReceipt"))?);
        }
        Ok(out)
    }

    /// Nonce of `address` at `latest` and at `pending`.
    pub async fn nonces(&self, address: Address) -> ChainResult<(u64, u64)> {
        let latest =
            self.provider.get_transaction_count(address).latest().await.map_err(rpc_err("eth_getTransactionCount"))?;
        let pending =
            self.provider.get_transaction_count(address).pending().await.map_err(rpc_err("eth_getTransactionCount"))?;
        Ok((latest, pending))
    }

    /// Native balance.
    pub async fn balance(&self, address: Address) -> ChainResult<U256> {
        self.provider.get_balance(address).await.map_err(rpc_err("eth_getBalance"))
    }
}

/// Base fees rise at most 12.5 % a block (EIP-1559); a next base fee above twice the head's
/// (plus this, for chains whose base fee sits near zero) is not a fee market but a wrong answer.
const BASE_FEE_SLACK: u128 = GWEI;
/// A median tip above this many times the head's base fee, and above [`TIP_FLOOR`], is refused.
const TIP_TIMES_BASE: u128 = 10;
/// Tips up to this are never refused, however low the base fee.
const TIP_FLOOR: u128 = 100 * GWEI;

/// Why an `eth_feeHistory` answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeHistoryError {
    /// The next base fee is out of all proportion to the head's.
    #[error(
        "eth_feeHistory refused: it gives the next block a base fee of {}, more than twice the {} of the \
         head (block {block}), though base fees rise at most 12.5 % a block; the node's fee data is wrong, \
         nothing was signed with it",
        Wei(*next), Wei(*head)
    )]
    BaseFee {
        /// The next base fee the answer gives.
        next: u128,
        /// The head's base fee.
        head: u128,
        /// The head's number.
        block: u64,
    },
    /// The median tip is out of all proportion to the head's base fee.
    #[error(
        "eth_feeHistory refused: its median tip of {} is more than {TIP_TIMES_BASE} times the base fee of the \
         head ({} in block {block}) and more than {}; the node's fee data is wrong, nothing was signed with it",
        Wei(*tip), Wei(*head), Wei(TIP_FLOOR)
    )]
    Tip {
        /// The median tip of the answer.
        tip: u128,
        /// The head's base fee.
        head: u128,
        /// The head's number.
        block: u64,
    },
}

/// The fees of a new transaction from a fee history and the head, or why the history is not
/// believable: a next base fee above twice the head's (plus a gwei), or a median tip above
/// both ten times the head's base fee and 100 gwei. `min_tip` (the operator's) is applied after
/// the check.
pub fn next_fees(history: &FeeHistory, head: &Head, min_tip: u128) -> Result<Fees, FeeHistoryError> {
    let next_base = history.base_fee_per_gas.last().copied().unwrap_or(0);
    if next_base > head.base_fee.saturating_mul(2).saturating_add(BASE_FEE_SLACK) {
        return Err(FeeHistoryError::BaseFee { next: next_base, head: head.base_fee, block: head.number });
    }
    let mut tips: Vec<u128> = history.reward.iter().flatten().filter_map(|r| r.first().copied()).collect();
    tips.sort_unstable();
    let median = tips.get(tips.len() / 2).copied().unwrap_or(0);
    if median > head.base_fee.saturating_mul(TIP_TIMES_BASE).max(TIP_FLOOR) {
        return Err(FeeHistoryError::Tip { tip: median, head: head.base_fee, block: head.number });
    }
    let tip = median.max(min_tip);
    Ok(Fees { max_fee: next_base.saturating_mul(2).saturating_add(tip), tip })
}

fn is_method_missing(m: &str) -> bool {
    let m = m.to_lowercase();
    m.contains("method not found")
        || m.contains("not supported")
        || m.contains("does not exist")
        || m.contains("-32601")
}

#[derive(Debug, Deserialize)]
struct SimBlock {
    calls: Vec<SimCall>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimCall {
    status: alloy::primitives::U64,
    gas_used: alloy::primitives::U64,
    #[serde(default)]
    return_data: Bytes,
    #[serde(default)]
    error: Option<SimError>,
}

#[derive(Debug, Deserialize)]
struct SimError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Option<Bytes>,
}

impl SimCall {
    fn into_simulated(self) -> ChainResult<Simulated> {
        if self.status.to::<u64>() == 1 {
            let used = self.gas_used.to::<u64>();
            if used > SIM_GAS {
                return Err(ChainError::Rpc(format!(
                    "eth_simulateV1 answered {used} gas used by a call given {SIM_GAS}; the node's answer is wrong"
                )));
            }
            Ok(Simulated { gas_used: Some(used), revert: None, error: None })
        } else {
            let (message, data) = self.error.map(|e| (e.message, e.data)).unwrap_or_default();
            Ok(Simulated {
                gas_used: None,
                revert: data.or(Some(self.return_data)),
                error: Some(redact_urls(&message)),
            })
        }
    }
}

/// The calls of a simulated block: one answer per call asked, else the node's answer is wrong
/// (callers pair answers with calls by position).
fn simulated(block: SimBlock, asked: usize) -> ChainResult<Vec<Simulated>> {
    if block.calls.len() != asked {
        return Err(ChainError::Rpc(format!(
            "eth_simulateV1 answered {} calls for the {asked} simulated; the node's answer is wrong",
            block.calls.len()
        )));
    }
    block.calls.into_iter().map(SimCall::into_simulated).collect()
}

/// Runs `attempt` until it succeeds, fails with an error that waiting cannot fix (one that is
/// not [`Transient`]), or `stop` turns true (`Ok(None)`). Backs off from 0.5 s to 15 s; warns at
/// the first failure and then at most once a minute, saying what it is waiting for.
pub async fn patiently<T, E, F, Fut>(
    what: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    E: crate::Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut stop = stop.clone();
    let mut pause = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let mut warned: Option<std::time::Instant> = None;
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        match attempt().await {
            Ok(v) => {
                if warned.is_some() {
                    tracing::info!(waited_s = started.elapsed().as_secs(), "{what}: succeeded after waiting");
                }
                return Ok(Some(v));
            }
            Err(e) if e.is_transient() => {
                if warned.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(error = %e, waited_s = started.elapsed().as_secs(), "{what} failed; trying again");
                    warned = Some(std::time::Instant::now());
                }
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            r = stop.changed() => if r.is_err() { return Ok(None) },
        }
        pause = (pause * 2).min(Duration::from_secs(15));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(base_fee: u128) -> Head {
        Head { number: 120, hash: B256::ZERO, timestamp: 1_000, base_fee }
    }

    fn history(next_base: u128, tips: &[u128]) -> FeeHistory {
        FeeHistory {
            base_fee_per_gas: vec![next_base; 11],
            reward: Some(tips.iter().map(|t| vec![*t]).collect()),
            ..FeeHistory::default()
        }
    }

    #[test]
    fn an_ordinary_history_gives_twice_the_next_base_fee_plus_the_median_tip() {
        let fees = next_fees(&history(11 * GWEI, &[GWEI, 3 * GWEI, 2 * GWEI]), &head(10 * GWEI), 0).unwrap();
        assert_eq!(fees, Fees { max_fee: 24 * GWEI, tip: 2 * GWEI });
        let floor = next_fees(&history(11 * GWEI, &[GWEI]), &head(10 * GWEI), 5 * GWEI).unwrap();
        assert_eq!(floor.tip, 5 * GWEI, "the operator's minimum tip");
        let empty = next_fees(&FeeHistory::default(), &head(0), 0).unwrap();
        assert_eq!(empty, Fees { max_fee: 0, tip: 0 });
    }

    #[test]
    fn a_next_base_fee_far_above_the_heads_is_refused_and_the_error_says_why() {
        // 1.125x per block for six blocks of lag is about 2x: still believed.
        assert!(next_fees(&history(20 * GWEI, &[]), &head(10 * GWEI), 0).is_ok());
        let e = next_fees(&history(500 * GWEI, &[GWEI]), &head(10 * GWEI), 0).unwrap_err();
        assert_eq!(e, FeeHistoryError::BaseFee { next: 500 * GWEI, head: 10 * GWEI, block: 120 });
        let m = e.to_string();
        assert!(m.contains("500 gwei") && m.contains("10 gwei") && m.contains("block 120"), "{m}");
        assert!(m.contains("12.5 %") && m.contains("nothing was signed"), "{m}");
        // Near zero, a gwei of slack: a devnet's base fee of 7 wei does not refuse 1 gwei.
        assert!(next_fees(&history(GWEI, &[]), &head(7), 0).is_ok());
        assert!(next_fees(&history(2 * GWEI, &[]), &head(7), 0).is_err());
    }

    #[test]
    fn a_median_tip_absurdly_above_the_base_fee_is_refused() {
        // Above 10x the base fee but under 100 gwei: a cheap chain's busy moment, believed.
        assert!(next_fees(&history(GWEI, &[50 * GWEI]), &head(GWEI), 0).is_ok());
        // Above 100 gwei but under 10x the base fee: an expensive chain, believed.
        assert!(next_fees(&history(300 * GWEI, &[150 * GWEI]), &head(200 * GWEI), 0).is_ok());
        let e = next_fees(&history(GWEI, &[GWEI, 5_000 * GWEI, 5_000 * GWEI]), &head(GWEI), 0).unwrap_err();
        assert_eq!(e, FeeHistoryError::Tip { tip: 5_000 * GWEI, head: GWEI, block: 120 });
        let m = e.to_string();
        assert!(m.contains("5000 gwei") && m.contains("10 times") && m.contains("100 gwei"), "{m}");
        // One absurd block among ten does not move the median.
        let mut tips = vec![GWEI; 9];
        tips.push(1_000_000 * GWEI);
        assert_eq!(next_fees(&history(GWEI, &tips), &head(GWEI), 0).unwrap().tip, GWEI);
    }

    #[test]
    fn a_head_beyond_any_chain_is_refused_and_the_next_block_never_overflows() {
        let ok = Head::checked(MAX_BLOCK_VALUE, B256::ZERO, MAX_BLOCK_VALUE, u64::MAX).unwrap();
        assert_eq!((ok.next_number(), ok.base_fee), (MAX_BLOCK_VALUE + 1, u128::from(u64::MAX)));
        for (number, timestamp) in [(u64::MAX, 1), (1, u64::MAX), (MAX_BLOCK_VALUE + 1, 0)] {
            let e = Head::checked(number, B256::ZERO, timestamp, 0).unwrap_err().to_string();
            assert!(e.contains(&number.to_string()) && e.contains("answer is wrong"), "{e}");
        }
        let top = Head { number: u64::MAX, hash: B256::ZERO, timestamp: u64::MAX, base_fee: u128::MAX };
        assert_eq!(top.next_number(), u64::MAX);
    }

    #[test]
    fn a_simulation_answering_other_calls_than_asked_is_an_error_not_a_panic() {
        let call = |gas: &str| serde_json::json!({ "status": "0x1", "gasUsed": gas, "returnData": "0x" });
        let block = |calls: Vec<serde_json::Value>| -> SimBlock {
            serde_json::from_value(serde_json::json!({ "calls": calls })).unwrap()
        };
        let e = simulated(block(vec![]), 1).unwrap_err().to_string();
        assert!(e.contains("answered 0 calls for the 1 simulated"), "{e}");
        assert!(simulated(block(vec![call("0x5208"), call("0x5208")]), 1).is_err());
        let e = simulated(block(vec![call("0xffffffffffffffff")]), 1).unwrap_err().to_string();
        assert!(e.contains("18446744073709551615 gas used"), "{e}");
        let sim = simulated(block(vec![call("0x5208")]), 1).unwrap();
        assert_eq!(sim[0].gas_used, Some(21_000));
        // A node's revert message quoting a URL is redacted like any of its texts.
        let failed = serde_json::json!({ "status": "0x0", "gasUsed": "0x0", "returnData": "0x",
            "error": { "message": "see https://eth.example/v2/SECRETKEY123SECRETKEY" } });
        let sim = simulated(block(vec![failed]), 1).unwrap();
        assert_eq!(sim[0].error.as_deref(), Some("see https://eth.example/…"));
    }

    #[test]
    fn a_huge_answer_does_not_overflow() {
        let e = next_fees(&history(u128::MAX, &[u128::MAX]), &head(GWEI), 0);
        assert!(matches!(e, Err(FeeHistoryError::BaseFee { .. })), "{e:?}");
        let e = next_fees(&history(GWEI, &[u128::MAX]), &head(u128::MAX / 2), 0);
        assert!(matches!(e, Ok(Fees { max_fee: u128::MAX, tip: u128::MAX })), "saturates: {e:?}");
    }
}
