//! Where prompt blobs come from. Contracts only carry a blob's versioned hash; the bytes live
//! beside the chain:
//!
//! - **beacon** (real networks): the execution block's `parentBeaconBlockRoot` names the parent
//!   beacon block; its header gives the slot, and the block's blobs are the sidecars of the next
//!   slot. A sidecar matches when `0x01 ‖ sha256(kzg_commitment)[1..]` equals the versioned hash.
//!   The blob is searched from the submission block backwards (it is posted before or with the
//!   job), as the official worker does.
//! - **anvil** (devnet): `anvil_getBlobByHash`, which anvil answers from memory.
//!
//! Either way the blob is decoded with the shared codec (`lcw_schema::blob`).

use std::time::Duration;

use alloy::primitives::{B256, Bytes};
use alloy::providers::{DynProvider, Provider};
use lcw_schema::profile::redact_urls;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How far back from the submission block a prompt blob is searched (as upstream).
pub const SEARCH_BLOCKS: u64 = 100;

/// Why a blob could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No source has a blob with this versioned hash.
    #[error("blob {hash} not found ({where_})")]
    NotFound {
        /// The versioned hash.
        hash: B256,
        /// Where it was looked for.
        where_: String,
    },
    /// The source failed (transport, HTTP status, shape); worth retrying.
    #[error("blob source failed: {0}")]
    Source(String),
    /// The blob's bytes are not a payload of the codec.
    #[error("blob {hash} is not a valid payload: {reason}")]
    Decode {
        /// The versioned hash.
        hash: B256,
        /// The codec's reason.
        reason: String,
    },
}

/// A source of blobs.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// anvil's in-memory blobs over JSON-RPC.
    Anvil(DynProvider),
    /// A beacon node's blob sidecars, found through the execution chain's beacon roots.
    Beacon {
        /// Execution-layer provider (block headers).
        el: DynProvider,
        /// Beacon API base URL.
        url: String,
        /// HTTP client.
        http: reqwest::Client,
    },
}

impl BlobSource {
    /// A beacon source.
    pub fn beacon(el: DynProvider, url: &str, timeout: Duration) -> Result<BlobSource, BlobError> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| BlobError::Source(e.to_string()))?;
        Ok(BlobSource::Beacon { el, url: url.trim_end_matches('/').to_owned(), http })
    }

    /// The payload of the blob with `hash`, posted in or before block `near_block`.
    pub async fn fetch(&self, hash: B256, near_block: u64) -> Result<Vec<u8>, BlobError> {
        let blob = match self {
            BlobSource::Anvil(p) => anvil_blob(p, hash).await?,
            BlobSource::Beacon { el, url, http } => beacon_blob(el, url, http, hash, near_block).await?,
        };
        lcw_schema::blob::decode(&blob).map_err(|e| BlobError::Decode { hash, reason: e.to_string() })
    }

    /// Whether the source answers, without fetching a blob (`lcw preflight`). anvil must know
    /// `anvil_getBlobByHash`: any answer about the zero hash (null, or an error other than
    /// "method not found") proves it. A beacon node must answer `/eth/v1/node/version`. Returns
    /// what answered: the method, or the beacon node's version string.
    pub async fn probe(&self) -> Result<String, BlobError> {
        match self {
            BlobSource::Anvil(p) => {
                let r: Result<Option<Bytes>, _> = p.raw_request("anvil_getBlobByHash".into(), (B256::ZERO,)).await;
                match r {
                    Ok(_) => Ok("anvil_getBlobByHash".into()),
                    Err(e) if e.as_error_resp().is_some_and(|p| p.code != -32601) => Ok("anvil_getBlobByHash".into()),
                    Err(e) => Err(BlobError::Source(format!("anvil_getBlobByHash: {e}"))),
                }
            }
            BlobSource::Beacon { url, http, .. } => {
                let endpoint = format!("{url}/eth/v1/node/version");
                let answer = beacon_get::<VersionResponse>(http, &endpoint).await?;
                let version = answer.ok_or_else(|| {
                    BlobError::Source(format!("GET {endpoint}: HTTP 404; is {url} a beacon API URL?"))
                })?;
                Ok(version.data.version)
            }
        }
    }
}

async fn anvil_blob(p: &DynProvider, hash: B256) -> Result<Vec<u8>, BlobError> {
    let r: Result<Option<Bytes>, _> = p.raw_request("anvil_getBlobByHash".into(), (hash,)).await;
    match r {
        Ok(Some(b)) => Ok(b.to_vec()),
        Ok(None) => Err(BlobError::NotFound { hash, where_: "anvil has no blob with this hash".into() }),
        Err(e) => Err(BlobError::Source(format!("anvil_getBlobByHash: {e}"))),
    }
}

/// The versioned hash of a KZG commitment (EIP-4844: version byte 0x01, then sha256[1..]).
pub fn versioned_hash(commitment: &[u8]) -> B256 {
    let mut h: [u8; 32] = Sha256::digest(commitment).into();
    h[0] = 0x01;
    B256::from(h)
}

#[derive(Debug, Deserialize)]
struct HeaderResponse {
    data: HeaderData,
}
#[derive(Debug, Deserialize)]
struct HeaderData {
    header: SignedHeader,
}
#[derive(Debug, Deserialize)]
struct SignedHeader {
    message: HeaderMessage,
}
#[derive(Debug, Deserialize)]
struct HeaderMessage {
    slot: String,
}
#[derive(Debug, Deserialize)]
struct VersionResponse {
    data: VersionData,
}
#[derive(Debug, Deserialize)]
struct VersionData {
    version: String,
}
#[derive(Debug, Deserialize)]
struct SidecarsResponse {
    data: Vec<Sidecar>,
}
#[derive(Debug, Deserialize)]
struct Sidecar {
    blob: Bytes,
    kzg_commitment: Bytes,
}

async fn beacon_get<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<Option<T>, BlobError> {
    let r = http.get(url).send().await.map_err(|e| BlobError::Source(redact_urls(&format!("GET {url}: {e}"))))?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !r.status().is_success() {
        return Err(BlobError::Source(redact_urls(&format!("GET {url}: HTTP {}", r.status()))));
    }
    r.json().await.map(Some).map_err(|e| BlobError::Source(redact_urls(&format!("GET {url}: {e}"))))
}

async fn beacon_blob(
    el: &DynProvider,
    url: &str,
    http: &reqwest::Client,
    hash: B256,
    near_block: u64,
) -> Result<Vec<u8>, BlobError> {
    let lowest = near_block.saturating_sub(SEARCH_BLOCKS);
    for number in (lowest..=near_block).rev() {
        let block = el
            .get_block_by_number(number.into())
            .await
            .map_err(|e| BlobError::Source(format!("eth_getBlockByNumber({number}): {e}")))?
            .ok_or_else(|| BlobError::Source(format!("the node has no block {number}")))?;
        if block.header.blob_gas_used.unwrap_or(0) == 0 {
            continue;
        }
        let Some(root) = block.header.parent_beacon_block_root else {
            return Err(BlobError::NotFound { hash, where_: format!("block {number} has no parent beacon root") });
        };
        let Some(header) = beacon_get::<HeaderResponse>(http, &format!("{url}/eth/v1/beacon/headers/{root}")).await?
        else {
            continue;
        };
        let slot: u64 = header
            .data
            .header
            .message
            .slot
            .parse()
            .map_err(|_| BlobError::Source(format!("beacon header {root}: slot is not a number")))?;
        let sidecars_url = format!("{url}/eth/v1/beacon/blob_sidecars/{}", slot + 1);
        let Some(sidecars) = beacon_get::<SidecarsResponse>(http, &sidecars_url).await? else {
            continue;
        };
        if let Some(s) = sidecars.data.into_iter().find(|s| versioned_hash(&s.kzg_commitment) == hash) {
            return Ok(s.blob.to_vec());
        }
    }
    Err(BlobError::NotFound { hash, where_: format!("beacon sidecars of blocks {lowest}..={near_block} at {url}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_hashes_match_the_shared_codec() {
        let sc = lcw_schema::blob::sidecar(&[b"a prompt".as_slice()]).unwrap();
        let expected = lcw_schema::blob::versioned_hashes(&sc)[0];
        assert_eq!(versioned_hash(sc.commitments[0].as_slice()), expected);
    }
}
