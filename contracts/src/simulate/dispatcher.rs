//! The dispatcher's and disputer's parts of session creation: the signed assignment the
//! JobRegistry checks (see contracts/README.md for the digest) and the disputer's encryption key.

use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use lcw_schema::suite::{EncryptionSecret, Suite};

/// Digest the dispatcher signs for `createSession`.
#[allow(clippy::too_many_arguments)]
pub fn create_session_digest(
    chain_id: u64,
    job_registry: Address,
    user: Address,
    model_id: B256,
    worker: Address,
    enc_worker_key: &[u8],
    enc_disputer_key: &[u8],
    nonce: U256,
    expiry: U256,
) -> B256 {
    keccak256(
        (
            keccak256("lcw.createSession"),
            U256::from(chain_id),
            job_registry,
            user,
            model_id,
            worker,
            keccak256(enc_worker_key),
            keccak256(enc_disputer_key),
            nonce,
            expiry,
        )
            .abi_encode(),
    )
}

/// Digest the dispatcher signs for `updateSessionKey`.
#[allow(clippy::too_many_arguments)]
pub fn update_session_key_digest(
    chain_id: u64,
    job_registry: Address,
    user: Address,
    session_id: U256,
    enc_worker_key: &[u8],
    enc_disputer_key: &[u8],
    nonce: U256,
    expiry: U256,
) -> B256 {
    keccak256(
        (
            keccak256("lcw.updateSessionKey"),
            U256::from(chain_id),
            job_registry,
            user,
            session_id,
            keccak256(enc_worker_key),
            keccak256(enc_disputer_key),
            nonce,
            expiry,
        )
            .abi_encode(),
    )
}

/// EIP-191 signature (`r ‖ s ‖ v`, v = 27/28) of a 32-byte digest.
pub fn sign_digest(dispatcher: &PrivateKeySigner, digest: B256) -> Result<Bytes, alloy::signers::Error> {
    let sig = dispatcher.sign_message_sync(digest.as_slice())?;
    Ok(Bytes::copy_from_slice(&sig.as_bytes()))
}

/// The devnet disputer's P-256 encryption secret, derived from its account key so that every run
/// (and a future disputer process) wraps and unwraps with the same key.
pub fn disputer_secret(disputer_private_key: &B256) -> EncryptionSecret {
    let mut seed = keccak256([b"lcw-devnet-disputer-encryption".as_slice(), disputer_private_key.as_slice()].concat());
    loop {
        if let Ok(secret) = EncryptionSecret::from_bytes(Suite::P256AesGcm, &seed.0) {
            return secret;
        }
        seed = keccak256(seed);
    }
}
