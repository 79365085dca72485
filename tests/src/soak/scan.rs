//! The chain read back after the run, block by block, straight from anvil: every block's
//! timestamp, base fee and median tip, and every transaction of lcw's keys with its receipt.

use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::TransactionResponse;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider};
use anyhow::Context;

/// One block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    /// Number.
    pub(crate) number: u64,
    /// Timestamp.
    pub(crate) timestamp: u64,
    /// Base fee (wei per gas).
    pub(crate) base_fee: u128,
    /// Median priority fee paid in it (effective gas price minus base fee; 0 when empty).
    pub(crate) median_tip: u128,
}

/// One mined transaction of an lcw key.
#[derive(Debug, Clone)]
pub(crate) struct Tx {
    /// Hash.
    pub(crate) hash: B256,
    /// Sender.
    pub(crate) from: Address,
    /// Nonce.
    pub(crate) nonce: u64,
    /// Block.
    pub(crate) block: u64,
    /// Receipt status.
    pub(crate) ok: bool,
    /// What one gas cost it.
    pub(crate) effective_gas_price: u128,
    /// Its maxFeePerGas.
    pub(crate) max_fee: u128,
}

/// The chain from block 1 to the head.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Every block, by number from 1.
    pub(crate) blocks: Vec<Block>,
    /// Transactions sent by `senders`, in chain order.
    pub(crate) txs: Vec<Tx>,
}

impl Scan {
    /// Reads blocks 1..=head and the transactions of `senders`.
    pub(crate) async fn read(p: &DynProvider, senders: &[Address]) -> anyhow::Result<Scan> {
        let head = p.get_block_number().await?;
        let mut scan = Scan::default();
        for n in 1..=head {
            let block = p.get_block_by_number(BlockNumberOrTag::Number(n)).full().await?.context("block")?;
            let base_fee = block.header.base_fee_per_gas.unwrap_or_default() as u128;
            let receipts = p.get_block_receipts(BlockId::number(n)).await?.unwrap_or_default();
            let mut tips: Vec<u128> = receipts.iter().map(|r| r.effective_gas_price.saturating_sub(base_fee)).collect();
            tips.sort_unstable();
            let median_tip = tips.get(tips.len() / 2).copied().unwrap_or_default();
            scan.blocks.push(Block { number: n, timestamp: block.header.timestamp, base_fee, median_tip });
            for tx in block.transactions.txns() {
                if !senders.contains(&tx.from()) {
                    continue;
                }
                let r = receipts.iter().find(|r| r.transaction_hash == tx.tx_hash()).context("receipt")?;
                scan.txs.push(Tx {
                    hash: tx.tx_hash(),
                    from: tx.from(),
                    nonce: alloy::consensus::Transaction::nonce(tx),
                    block: n,
                    ok: r.status(),
                    effective_gas_price: r.effective_gas_price,
                    max_fee: alloy::consensus::Transaction::max_fee_per_gas(tx),
                });
            }
        }
        Ok(scan)
    }

    /// The block numbered `n`.
    pub(crate) fn block(&self, n: u64) -> Option<&Block> {
        self.blocks.get((n as usize).checked_sub(1)?)
    }

    /// The first block whose timestamp reaches `ts`.
    pub(crate) fn first_at(&self, ts: u64) -> Option<u64> {
        let i = self.blocks.partition_point(|b| b.timestamp < ts);
        self.blocks.get(i).map(|b| b.number)
    }
}
