//! What the demo does to the devnet itself, through anvil's RPC: funds the operator's key, sets
//! governance for a long run (every outcome slashes someone: a worker suspended after three
//! offences, or whose stake fell below the minimum, would stop the traffic), and replaces the
//! last blocks now and then (a reorg), as a real chain does.

use alloy::eips::BlockNumberOrTag;
use alloy::network::{EthereumWallet, TransactionResponse};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;
use lcw_schema::bindings::AIConfig;
use lcw_schema::profile::{Profile, Role};

/// The devnet, as the demo drives it.
#[derive(Debug)]
pub(super) struct Devnet {
    provider: DynProvider,
    block_time: u64,
}

impl Devnet {
    pub(super) fn connect(profile: &Profile, block_time: u64) -> anyhow::Result<Devnet> {
        let url = profile.rpc_url.parse().with_context(|| format!("the devnet's RPC URL `{}`", profile.rpc_url))?;
        Ok(Devnet { provider: ProviderBuilder::new().connect_http(url).erased(), block_time })
    }

    /// Gives `who` `lcai` LCAI of gas money (anvil_setBalance).
    pub(super) async fn fund(&self, who: Address, lcai: u64) -> anyhow::Result<()> {
        let wei = U256::from(lcai) * U256::from(10u64).pow(U256::from(18u64));
        self.provider.anvil_set_balance(who, wei).await.context("anvil_setBalance")?;
        Ok(())
    }

    /// Governance for a demo that runs for hours: no suspensions, and slashes of 0.1 % (timeout),
    /// 0.2 % (completion timeout) and 0.5 % (guilty) of the minimum stake instead of 2, 5 and
    /// 15 %, so that stakes stay above the minimum. Signed by the deployer.
    pub(super) async fn demo_governance(&self, profile: &Profile) -> anyhow::Result<()> {
        let deployer = PrivateKeySigner::from_bytes(&profile.account(Role::Deployer)?.private_key)?;
        let from = deployer.address();
        let url = profile.rpc_url.parse().with_context(|| format!("the devnet's RPC URL `{}`", profile.rpc_url))?;
        let provider = ProviderBuilder::new().wallet(EthereumWallet::from(deployer)).connect_http(url);
        let ai = AIConfig::new(profile.contracts.ai_config, &provider);
        let nonce = provider.get_transaction_count(from).pending().await.context("the deployer's nonce")?;
        let calls = [
            ("setSuspensionThreshold", ai.setSuspensionThreshold(U256::from(1u64 << 40)).into_transaction_request()),
            ("setTimeoutSlashBps", ai.setTimeoutSlashBps(U256::from(10u64)).into_transaction_request()),
            (
                "setCompletionTimeoutSlashBps",
                ai.setCompletionTimeoutSlashBps(U256::from(20u64)).into_transaction_request(),
            ),
            ("setDisputeSlashBps", ai.setDisputeSlashBps(U256::from(50u64)).into_transaction_request()),
        ];
        let mut pending = Vec::new();
        for (i, (name, tx)) in calls.into_iter().enumerate() {
            let tx = tx.nonce(nonce + i as u64).gas_limit(200_000);
            let sent = provider.send_transaction(tx).await.with_context(|| format!("sending AIConfig.{name}"))?;
            pending.push((name, sent));
        }
        for (name, sent) in pending {
            let receipt = sent.get_receipt().await.with_context(|| format!("waiting for AIConfig.{name}"))?;
            anyhow::ensure!(receipt.status(), "AIConfig.{name} reverted (tx {})", receipt.transaction_hash);
        }
        Ok(())
    }

    /// Replaces the last `depth` blocks: mining paused, the blocks' transactions and the pool's
    /// read (raw, blob sidecars included), the chain rolled back, the pool emptied, the blocks'
    /// transactions sent again and then the pool's, mining resumed. The new blocks have new
    /// hashes and timestamps, as after a real reorg. Returns what happened.
    pub(super) async fn reorg(&self, depth: u64) -> anyhow::Result<String> {
        let p = &self.provider;
        p.anvil_set_interval_mining(0).await.context("pausing mining")?;
        let result = async {
            // A block the miner had begun when mining was paused still lands: the head is read
            // once it has, or that block would be the one rolled back, its transactions lost.
            let mut head = p.get_block_number().await?;
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let now = p.get_block_number().await?;
                if now == head {
                    break;
                }
                head = now;
            }
            let from = head.saturating_sub(depth.max(1) - 1).max(1);
            let mut hashes = Vec::new();
            for n in from..=head {
                let block = p
                    .get_block_by_number(BlockNumberOrTag::Number(n))
                    .full()
                    .await?
                    .with_context(|| format!("block {n} is missing"))?;
                hashes.extend(block.transactions.txns().map(|t| t.tx_hash()));
            }
            let replaced = hashes.len();
            // The pool survives a rollback, but anvil then takes its transactions for ready in
            // the old order, before the replaced blocks' ones of the same sender, and drops them
            // as invalid: they go back in after those, in nonce order.
            hashes.extend(pool(p).await?);
            let mut raws = Vec::with_capacity(hashes.len());
            for hash in &hashes {
                let raw: Option<Bytes> = p.raw_request("eth_getRawTransactionByHash".into(), (*hash,)).await?;
                raws.extend(raw);
            }
            anyhow::ensure!(p.get_block_number().await? == head, "a block was mined while mining was paused");
            p.anvil_rollback(Some(head - from + 1)).await?;
            p.anvil_drop_all_transactions().await?;
            let mut refused = Vec::new();
            for raw in raws {
                if let Err(e) = p.raw_request::<_, B256>("eth_sendRawTransaction".into(), (raw,)).await {
                    refused.push(e.to_string());
                }
            }
            let refused = match refused.first() {
                Some(first) => format!("; {} refused (the first: {first})", refused.len()),
                None => String::new(),
            };
            anyhow::Ok(format!(
                "blocks {from}..={head} replaced; their {replaced} transactions and the pool's {} sent again{refused}",
                hashes.len() - replaced
            ))
        }
        .await;
        p.anvil_set_interval_mining(self.block_time).await.context("resuming mining")?;
        result
    }
}

/// The hashes of the transactions waiting in anvil's pool, each sender's in nonce order.
async fn pool(p: &DynProvider) -> anyhow::Result<Vec<B256>> {
    let content: serde_json::Value = p.raw_request("txpool_content".into(), ()).await.context("txpool_content")?;
    let mut waiting: Vec<(String, u64, B256)> = Vec::new();
    for part in ["pending", "queued"] {
        let Some(senders) = content.get(part).and_then(|v| v.as_object()) else { continue };
        for (sender, txs) in senders {
            let Some(txs) = txs.as_object() else { continue };
            for (nonce, tx) in txs {
                let hash = tx.get("hash").and_then(|h| h.as_str()).and_then(|h| h.parse::<B256>().ok());
                if let (Ok(nonce), Some(hash)) = (nonce.parse::<u64>(), hash) {
                    waiting.push((sender.to_ascii_lowercase(), nonce, hash));
                }
            }
        }
    }
    waiting.sort();
    Ok(waiting.into_iter().map(|(_, _, hash)| hash).collect())
}
