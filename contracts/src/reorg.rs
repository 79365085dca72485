//! A reorg on anvil: the last blocks replaced by new ones, their transactions and the pool's sent
//! again, as a real chain's nodes do after a reorg. The demo and the fault soak use it.
//!
//! Two things anvil needs for this to keep every sender's nonces whole: a block the miner began
//! when mining was paused still lands, so the head is read only once it stops moving; and after a
//! rollback anvil takes its pool as ready in the old order, before the replaced blocks'
//! transactions of the same senders, and drops them as invalid. So the pool is emptied and sent
//! again after the replaced blocks' transactions, each sender's in nonce order.

use std::time::Duration;

use alloy::network::TransactionResponse;
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::BlockNumberOrTag;

/// What a reorg did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replaced {
    /// The first block replaced.
    pub from: u64,
    /// The last block replaced.
    pub head: u64,
    /// Transactions of the replaced blocks sent again.
    pub sent_again: usize,
    /// Transactions of the replaced blocks left out (by `drop`).
    pub dropped: usize,
    /// Pool transactions sent again.
    pub pooled: usize,
    /// The node's refusals of what was sent again.
    pub refused: Vec<String>,
}

impl std::fmt::Display for Replaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blocks {}..={} replaced; {} of their transactions sent again, {} dropped, and the pool's {}",
            self.from, self.head, self.sent_again, self.dropped, self.pooled
        )?;
        if let Some(first) = self.refused.first() {
            write!(f, "; {} refused (the first: {first})", self.refused.len())?;
        }
        Ok(())
    }
}

/// Replaces the last `depth` blocks (at least one) and resumes mining every `block_time`
/// seconds. A transaction of a replaced block whose sender `drop` names is left out, as if no
/// node had kept it.
pub async fn replace_blocks(
    p: &DynProvider,
    depth: u64,
    block_time: u64,
    drop: impl Fn(Address) -> bool,
) -> Result<Replaced, alloy::transports::TransportError> {
    p.anvil_set_interval_mining(0).await?;
    let result = replace(p, depth, &drop).await;
    p.anvil_set_interval_mining(block_time).await?;
    result
}

async fn replace(
    p: &DynProvider,
    depth: u64,
    drop: &impl Fn(Address) -> bool,
) -> Result<Replaced, alloy::transports::TransportError> {
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
    let mut out = Replaced { from, head, ..Replaced::default() };
    let mut hashes = Vec::new();
    for n in from..=head {
        let Some(block) = p.get_block_by_number(BlockNumberOrTag::Number(n)).full().await? else { continue };
        for t in block.transactions.txns() {
            if drop(t.from()) {
                out.dropped += 1;
            } else {
                hashes.push(t.tx_hash());
            }
        }
    }
    out.sent_again = hashes.len();
    let pool = pool(p).await?;
    out.pooled = pool.len();
    hashes.extend(pool);
    let mut raws = Vec::with_capacity(hashes.len());
    for hash in &hashes {
        let raw: Option<Bytes> = p.raw_request("eth_getRawTransactionByHash".into(), (*hash,)).await?;
        raws.extend(raw);
    }
    p.anvil_rollback(Some(head - from + 1)).await?;
    p.anvil_drop_all_transactions().await?;
    for raw in raws {
        if let Err(e) = p.raw_request::<_, B256>("eth_sendRawTransaction".into(), (raw,)).await {
            out.refused.push(e.to_string());
        }
    }
    Ok(out)
}

/// The hashes of the transactions waiting in anvil's pool, each sender's in nonce order.
async fn pool(p: &DynProvider) -> Result<Vec<B256>, alloy::transports::TransportError> {
    let content: serde_json::Value = p.raw_request("txpool_content".into(), ()).await?;
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
