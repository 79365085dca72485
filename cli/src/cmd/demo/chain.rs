//! What the demo does to the devnet itself, through anvil's RPC: funds the operator's key, sets
//! governance for a long run (every outcome slashes someone: a worker suspended after three
//! offences, or whose stake fell below the minimum, would stop the traffic), and replaces the
//! last blocks now and then (a reorg), as a real chain does.

use alloy::network::EthereumWallet;

use alloy::primitives::{Address, U256};
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
        let replaced = lcw_contracts::reorg::replace_blocks(&self.provider, depth, self.block_time, |_| false)
            .await
            .context("replacing the last blocks")?;
        Ok(replaced.to_string())
    }
}
