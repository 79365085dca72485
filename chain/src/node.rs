//! The settler's view of the node: heads, fees, simulation at the next block, raw broadcast,
//! receipts and nonces. Thin JSON-RPC over alloy's provider; every call names what failed.

use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use serde::Deserialize;
use serde_json::json;

use crate::{ChainError, ChainResult};

/// A block header, reduced to what the settler reasons with.
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

/// Connection to the node.
#[derive(Debug, Clone)]
pub struct Chain {
    provider: DynProvider,
    /// Chain id.
    pub chain_id: u64,
    simulate_v1: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn rpc_err(what: &str) -> impl Fn(alloy::transports::TransportError) -> ChainError + '_ {
    // reqwest quotes the request URL, API key included.
    move |e| ChainError::Rpc(lcw_schema::profile::redact_urls(&format!("{what}: {e}")))
}

impl Chain {
    /// Connects over HTTP and reads the chain id.
    pub async fn connect(url: &str, timeout: Duration) -> ChainResult<Self> {
        let parsed: reqwest::Url = url
            .parse()
            .map_err(|e| ChainError::Config(format!("RPC URL `{}`: {e}", lcw_schema::profile::redact_url(url))))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ChainError::Config(format!("HTTP client: {e}")))?;
        let provider = ProviderBuilder::new().connect_reqwest(client, parsed).erased();
        let chain_id = provider.get_chain_id().await.map_err(rpc_err("eth_chainId"))?;
        Ok(Chain { provider, chain_id, simulate_v1: std::sync::Arc::new(true.into()) })
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

    /// A block's header.
    pub async fn block(&self, tag: BlockNumberOrTag) -> ChainResult<Option<Head>> {
        let b = self.provider.get_block_by_number(tag).await.map_err(rpc_err("eth_getBlockByNumber"))?;
        Ok(b.map(|b| Head {
            number: b.header.number,
            hash: b.header.hash,
            timestamp: b.header.timestamp,
            base_fee: b.header.base_fee_per_gas.unwrap_or(0) as u128,
        }))
    }

    /// Fees from the node's fee history: the next block's base fee doubled (room for six full
    /// blocks of increases) plus the median tip of recent blocks.
    pub async fn fees(&self, min_tip: u128) -> ChainResult<Fees> {
        let h = self
            .provider
            .get_fee_history(10, BlockNumberOrTag::Latest, &[50.0])
            .await
            .map_err(rpc_err("eth_feeHistory"))?;
        let next_base = h.base_fee_per_gas.last().copied().unwrap_or(0);
        let mut tips: Vec<u128> = h.reward.unwrap_or_default().iter().filter_map(|r| r.first().copied()).collect();
        tips.sort_unstable();
        let tip = tips.get(tips.len() / 2).copied().unwrap_or(0).max(min_tip);
        Ok(Fees { max_fee: next_base.saturating_mul(2).saturating_add(tip), tip })
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
                    return Ok(block.calls.into_iter().map(SimCall::into_simulated).collect());
                }
                Err(e) if is_method_missing(&e.to_string()) => {
                    tracing::info!("the node has no eth_simulateV1; simulating with eth_call and block overrides");
                    self.simulate_v1.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => return Err(ChainError::Rpc(format!("eth_simulateV1: {e}"))),
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
                        return Err(ChainError::Rpc(format!("eth_call: {e}")));
                    }
                    Simulated { gas_used: None, revert, error: Some(e.to_string()) }
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
    pub async fn send_raw(&self, raw: &Bytes) -> Result<Option<B256>, String> {
        let r: Result<B256, _> = self.provider.raw_request("eth_sendRawTransaction".into(), (raw,)).await;
        match r {
            Ok(h) => Ok(Some(h)),
            Err(e) => {
                let m = e.to_string();
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
    fn into_simulated(self) -> Simulated {
        if self.status.to::<u64>() == 1 {
            Simulated { gas_used: Some(self.gas_used.to::<u64>()), revert: None, error: None }
        } else {
            let (message, data) = self.error.map(|e| (e.message, e.data)).unwrap_or_default();
            Simulated { gas_used: None, revert: data.or(Some(self.return_data)), error: Some(message) }
        }
    }
}
