//! Signing raw transactions with locally owned nonces and sending them in JSON-RPC batches.
//!
//! This is the devnet's volume engine (the simulator sends thousands of transactions per block):
//! fire-and-forget, no durability. It is not the settler's transaction sender, which keeps an
//! outbox in the store and survives restarts.

use std::collections::HashMap;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEip4844, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::eip4844::BlobTransactionSidecar;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::client::RpcClient;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;

/// JSON-RPC requests per batch (anvil accepts large batches; this keeps bodies reasonable).
const BATCH: usize = 500;
/// Batches in flight at once.
const SEND_CONCURRENCY: usize = 4;

/// Why a batch operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Transport or node error.
    #[error("rpc: {0}")]
    Rpc(String),
    /// An account the caller did not register.
    #[error("no signer for {0}")]
    UnknownAccount(Address),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// Result alias.
pub type TxResult<T> = Result<T, TxError>;

fn rpc_err(e: impl std::fmt::Display) -> TxError {
    // reqwest quotes the request URL, API key included.
    TxError::Rpc(lcw_schema::profile::redact_urls(&e.to_string()))
}

/// A contract call (or plain transfer) to sign.
#[derive(Debug, Clone)]
pub struct Call {
    /// Sender; must be a registered account.
    pub from: Address,
    /// Target.
    pub to: Address,
    /// Calldata.
    pub data: Bytes,
    /// Value in wei.
    pub value: U256,
    /// Gas limit (fixed: the simulator knows its calls; no estimate round trip).
    pub gas: u64,
}

/// A signed transaction ready to broadcast.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Transaction hash.
    pub hash: B256,
    /// EIP-2718 network encoding (with the blob sidecar for type-3).
    pub raw: Bytes,
}

/// Fee settings for new transactions.
#[derive(Debug, Clone, Copy)]
pub struct Fees {
    /// EIP-1559 max fee per gas.
    pub max_fee: u128,
    /// EIP-1559 priority fee.
    pub tip: u128,
    /// EIP-4844 max fee per blob gas.
    pub max_blob_fee: u128,
}

struct Account {
    signer: PrivateKeySigner,
    nonce: u64,
}

/// Signs and batches transactions for a set of accounts.
pub struct TxBatcher {
    client: RpcClient,
    provider: DynProvider,
    chain_id: u64,
    accounts: HashMap<Address, Account>,
    fees: Fees,
}

impl std::fmt::Debug for TxBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxBatcher").field("chain_id", &self.chain_id).field("accounts", &self.accounts.len()).finish()
    }
}

impl TxBatcher {
    /// Connects to `rpc_url`.
    pub async fn connect(rpc_url: &str) -> TxResult<Self> {
        lcw_schema::ensure_tls();
        let url: reqwest::Url = rpc_url.parse().map_err(rpc_err)?;
        let client = RpcClient::new_http(url.clone());
        let provider = ProviderBuilder::new().connect_http(url).erased();
        let chain_id = provider.get_chain_id().await.map_err(rpc_err)?;
        let mut batcher = TxBatcher {
            client,
            provider,
            chain_id,
            accounts: HashMap::new(),
            fees: Fees { max_fee: 0, tip: 0, max_blob_fee: 0 },
        };
        batcher.refresh_fees().await?;
        Ok(batcher)
    }

    /// A read-only provider on the same node.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The node's chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Registers a signing account, starting from its pending nonce on chain.
    pub async fn add_account(&mut self, signer: PrivateKeySigner) -> TxResult<Address> {
        let address = signer.address();
        if !self.accounts.contains_key(&address) {
            let nonce = self.provider.get_transaction_count(address).pending().await.map_err(rpc_err)?;
            self.accounts.insert(address, Account { signer, nonce });
        }
        Ok(address)
    }

    /// Re-reads an account's pending nonce (after a failed send left a gap).
    pub async fn resync(&mut self, address: Address) -> TxResult<()> {
        let nonce = self.provider.get_transaction_count(address).pending().await.map_err(rpc_err)?;
        let account = self.accounts.get_mut(&address).ok_or(TxError::UnknownAccount(address))?;
        account.nonce = nonce;
        Ok(())
    }

    /// Re-reads every account's pending nonce.
    pub async fn resync_all(&mut self) -> TxResult<()> {
        let addresses: Vec<Address> = self.accounts.keys().copied().collect();
        for a in addresses {
            self.resync(a).await?;
        }
        Ok(())
    }

    /// Fees from the latest block: max fee = 2 × base fee + tip; blob fee from the node.
    pub async fn refresh_fees(&mut self) -> TxResult<()> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(rpc_err)?
            .ok_or_else(|| TxError::Rpc("node returned no latest block".into()))?;
        let base = u128::from(block.header.base_fee_per_gas.unwrap_or(1_000_000_000));
        let tip = 1_000_000_000u128;
        let blob_base = self.provider.get_blob_base_fee().await.unwrap_or(1);
        self.fees = Fees { max_fee: base * 2 + tip, tip, max_blob_fee: blob_base.max(1) * 2 };
        Ok(())
    }

    /// Current fee settings.
    pub fn fees(&self) -> Fees {
        self.fees
    }

    fn next(&mut self, from: Address) -> TxResult<(&PrivateKeySigner, u64)> {
        let account = self.accounts.get_mut(&from).ok_or(TxError::UnknownAccount(from))?;
        let nonce = account.nonce;
        account.nonce += 1;
        Ok((&account.signer, nonce))
    }

    /// Signs a call with the sender's next nonce.
    pub fn sign(&mut self, call: &Call) -> TxResult<Signed> {
        let (chain_id, fees) = (self.chain_id, self.fees);
        let (signer, nonce) = self.next(call.from)?;
        let mut tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit: call.gas,
            max_fee_per_gas: fees.max_fee,
            max_priority_fee_per_gas: fees.tip,
            to: TxKind::Call(call.to),
            value: call.value,
            access_list: Default::default(),
            input: call.data.clone(),
        };
        let sig = signer.sign_transaction_sync(&mut tx).map_err(|e| TxError::Sign(e.to_string()))?;
        let envelope = TxEnvelope::from(tx.into_signed(sig));
        Ok(Signed { hash: *envelope.tx_hash(), raw: envelope.encoded_2718().into() })
    }

    /// Signs a type-3 blob transaction to the sender itself carrying `sidecar`.
    pub fn sign_blob(&mut self, from: Address, sidecar: BlobTransactionSidecar) -> TxResult<Signed> {
        let (chain_id, fees) = (self.chain_id, self.fees);
        let (signer, nonce) = self.next(from)?;
        let tx = TxEip4844 {
            chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: fees.max_fee,
            max_priority_fee_per_gas: fees.tip,
            to: from,
            value: U256::ZERO,
            access_list: Default::default(),
            blob_versioned_hashes: lcw_schema::blob::versioned_hashes(&sidecar),
            max_fee_per_blob_gas: fees.max_blob_fee,
            input: Bytes::new(),
        };
        let mut variant =
            TxEip4844Variant::TxEip4844WithSidecar(TxEip4844WithSidecar::from_tx_and_sidecar(tx, sidecar));
        let sig = signer.sign_transaction_sync(&mut variant).map_err(|e| TxError::Sign(e.to_string()))?;
        let envelope = TxEnvelope::from(variant.into_signed(sig));
        Ok(Signed { hash: *envelope.tx_hash(), raw: envelope.encoded_2718().into() })
    }

    /// Broadcasts signed transactions in JSON-RPC batches, a few batches in flight at once; one
    /// result per transaction, in order (the node's error text when it refused one). Nonce order
    /// across batches does not matter: the node queues a transaction until its predecessor arrives.
    pub async fn send(&self, txs: &[Signed]) -> TxResult<Vec<Result<B256, String>>> {
        use futures::StreamExt;
        let chunks: Vec<&[Signed]> = txs.chunks(BATCH).collect();
        let results: Vec<TxResult<Vec<Result<B256, String>>>> = futures::stream::iter(chunks)
            .map(|chunk| self.send_chunk(chunk))
            .buffered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::with_capacity(txs.len());
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    async fn send_chunk(&self, chunk: &[Signed]) -> TxResult<Vec<Result<B256, String>>> {
        let mut batch = self.client.new_batch();
        let mut waiters = Vec::with_capacity(chunk.len());
        for tx in chunk {
            waiters.push(batch.add_call::<_, B256>("eth_sendRawTransaction", &(tx.raw.clone(),)).map_err(rpc_err)?);
        }
        batch.send().await.map_err(rpc_err)?;
        let mut out = Vec::with_capacity(chunk.len());
        for w in waiters {
            out.push(w.await.map_err(|e| e.to_string()));
        }
        Ok(out)
    }

    /// Why a mined transaction reverted: replays it with `eth_call` on the state before its block
    /// and decodes the revert (approximate when earlier transactions of the block mattered).
    pub async fn revert_reason(&self, hash: B256) -> String {
        let tx = match self.provider.get_transaction_by_hash(hash).await {
            Ok(Some(tx)) => tx,
            _ => return "transaction not found".into(),
        };
        let block = tx.block_number.unwrap_or_default().saturating_sub(1);
        let request = alloy::rpc::types::TransactionRequest::from_transaction(tx);
        match self.provider.call(request).block(block.into()).await {
            Ok(_) => "succeeds when replayed alone (it depended on another transaction of its block)".into(),
            Err(e) => match e.as_error_resp().and_then(|r| r.as_revert_data()) {
                Some(data) => lcw_schema::bindings::decode_revert(&data),
                None => e.to_string(),
            },
        }
    }

    /// Receipts for `hashes` (None while pending), fetched in batches.
    pub async fn receipts(&self, hashes: &[B256]) -> TxResult<Vec<Option<TransactionReceipt>>> {
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(BATCH) {
            let mut batch = self.client.new_batch();
            let mut waiters = Vec::with_capacity(chunk.len());
            for h in chunk {
                waiters.push(
                    batch
                        .add_call::<_, Option<TransactionReceipt>>("eth_getTransactionReceipt", &(*h,))
                        .map_err(rpc_err)?,
                );
            }
            batch.send().await.map_err(rpc_err)?;
            for w in waiters {
                out.push(w.await.map_err(rpc_err)?);
            }
        }
        Ok(out)
    }
}
