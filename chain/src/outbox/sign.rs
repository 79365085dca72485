//! Signing a version of an outbox transaction, reading a blob back from a stored one, and what a
//! node's answer to a broadcast means.

use alloy::consensus::{SignableTransaction, TxEip1559, TxEip4844, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::eips::eip4844::BlobTransactionSidecar;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use lcw_schema::store::outbox::AttemptFees;

use crate::{ChainError, ChainResult};

/// What a transaction does, to sign a version of it.
#[derive(Debug, Clone)]
pub(super) struct Unsigned<'a> {
    pub(super) nonce: u64,
    pub(super) gas_limit: u64,
    pub(super) to: Address,
    pub(super) data: &'a Bytes,
    pub(super) value: U256,
    /// The sidecar of a type-3 transaction (its blob fee is in the fees).
    pub(super) sidecar: Option<&'a BlobTransactionSidecar>,
}

/// Signs `tx` at `fees`; returns its hash and network encoding (a type-3 transaction travels with
/// its sidecar). A blob transaction without a blob fee, or the other way round, is refused.
pub(super) fn sign(
    signer: &PrivateKeySigner,
    chain_id: u64,
    tx: &Unsigned<'_>,
    fees: AttemptFees,
) -> ChainResult<(B256, Bytes)> {
    let sign_err = |e: alloy::signers::Error| ChainError::Sign(e.to_string());
    let envelope = match (tx.sidecar, fees.blob_fee) {
        (None, None) => {
            let mut t = TxEip1559 {
                chain_id,
                nonce: tx.nonce,
                gas_limit: tx.gas_limit,
                max_fee_per_gas: fees.max_fee,
                max_priority_fee_per_gas: fees.tip,
                to: TxKind::Call(tx.to),
                value: tx.value,
                access_list: Default::default(),
                input: tx.data.clone(),
            };
            let sig = signer.sign_transaction_sync(&mut t).map_err(sign_err)?;
            TxEnvelope::from(t.into_signed(sig))
        }
        (Some(sidecar), Some(blob_fee)) => {
            let t = TxEip4844 {
                chain_id,
                nonce: tx.nonce,
                gas_limit: tx.gas_limit,
                max_fee_per_gas: fees.max_fee,
                max_priority_fee_per_gas: fees.tip,
                to: tx.to,
                value: tx.value,
                access_list: Default::default(),
                blob_versioned_hashes: sidecar.versioned_hashes().collect(),
                max_fee_per_blob_gas: blob_fee,
                input: tx.data.clone(),
            };
            let mut variant =
                TxEip4844Variant::TxEip4844WithSidecar(TxEip4844WithSidecar::from_tx_and_sidecar(t, sidecar.clone()));
            let sig = signer.sign_transaction_sync(&mut variant).map_err(sign_err)?;
            TxEnvelope::from(variant.into_signed(sig))
        }
        (Some(_), None) => return Err(ChainError::Sign("a blob transaction needs a blob fee".into())),
        (None, Some(_)) => return Err(ChainError::Sign("a blob fee without a blob".into())),
    };
    Ok((*envelope.tx_hash(), envelope.encoded_2718().into()))
}

/// The sidecar and blob fee of a signed type-3 transaction (from its stored network encoding), to
/// sign it again. None for other transactions.
pub(super) fn blob_of(raw: &[u8]) -> Option<(BlobTransactionSidecar, u128)> {
    match TxEnvelope::decode_2718(&mut &raw[..]).ok()? {
        TxEnvelope::Eip4844(signed) => match signed.tx() {
            TxEip4844Variant::TxEip4844WithSidecar(t) => {
                Some((t.sidecar.clone().into_eip4844()?, t.tx.max_fee_per_blob_gas))
            }
            TxEip4844Variant::TxEip4844(_) => None,
        },
        _ => None,
    }
}

/// What a node's answer to `eth_sendRawTransaction` means for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    /// Taken into its pool, or already there.
    Accepted,
    /// The nonce is used (mined, or another version is in the pool): tracking decides.
    NonceUsed(String),
    /// The node refused it (funds, fee, gas, ...): the reason, URLs redacted.
    Refused(String),
    /// No answer (transport, timeout, 5xx): tried again on a later block.
    Failed(String),
}

impl Sent {
    /// Reads the result of [`crate::node::Chain::send_raw`].
    pub(super) fn of(r: Result<Option<B256>, String>) -> Sent {
        let m = match r {
            Ok(_) => return Sent::Accepted,
            Err(m) => lcw_schema::profile::redact_urls(&m),
        };
        let l = m.to_lowercase();
        if l.contains("nonce too low")
            || l.contains("nonce has already been used")
            || l.contains("replacement transaction")
            || l.contains("already reserved")
        {
            Sent::NonceUsed(m)
        } else if l.contains("server returned an error response")
            || l.contains("insufficient funds")
            || l.contains("intrinsic gas")
            || l.contains("exceeds block gas limit")
            || l.contains("underpriced")
        {
            Sent::Refused(reason(&m))
        } else {
            Sent::Failed(m)
        }
    }
}

/// The node's own words, without the transport's preamble (`server returned an error response:
/// error code -32003: `), so a refusal reads the same whichever client relayed it.
fn reason(m: &str) -> String {
    let m = m.strip_prefix("server returned an error response: ").unwrap_or(m);
    match m.strip_prefix("error code ").and_then(|rest| rest.split_once(": ")) {
        Some((_, msg)) => msg.to_owned(),
        None => m.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_answers_are_read() {
        assert_eq!(Sent::of(Ok(None)), Sent::Accepted);
        assert_eq!(
            Sent::of(Err(
                "server returned an error response: error code -32003: Insufficient funds for gas * price + \
                          value"
                    .into()
            )),
            Sent::Refused("Insufficient funds for gas * price + value".into())
        );
        assert!(matches!(Sent::of(Err("nonce too low".into())), Sent::NonceUsed(_)));
        assert!(matches!(Sent::of(Err("error sending request for url (http://x/)".into())), Sent::Failed(_)));
    }
}
