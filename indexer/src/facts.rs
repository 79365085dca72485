//! Facts the events lack, fetched once at indexing time and kept raw.
//!
//! SessionRequested carries neither the request's expiry nor its required capabilities, and
//! SessionAdopted neither the model nor the wrapped session keys: for each such log the indexer
//! calls `SessionManager.getRequest` and `getRequiredCapabilities`, or `JobRegistry.getSession`,
//! at the log's block and stores the return data verbatim in `call_results` beside the log (as
//! `tx_values` holds WorkerRegistered's msg.value), in the same transaction. Projections read it
//! from there (see [`crate::sortition`]), so replay needs no RPC and a reorg that unwinds the log
//! deletes the facts with it.
//!
//! A node that no longer has the state of the log's block (it prunes history) is asked at the
//! latest block instead. Expiry, capabilities and model are fixed when the log is emitted, so
//! they read the same; the session keys may have been replaced since by `updateSessionKey`
//! (whose SessionKeyUpdated the projection applies after anyway), and the request's status and
//! worker in the stored answer are the later ones (the projection takes those from events).
//!
//! The calls of a range go out concurrently, at most [`CONCURRENCY`] at a time, inside the
//! range's fetch (backfill runs several ranges at once). Logs of the profile contracts other
//! than SessionAdopted cost nothing here.

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::{SolCall, SolEvent};
use futures::stream::{self, StreamExt, TryStreamExt};
use lcw_schema::bindings::{JobRegistry, SessionManager};
use lcw_schema::profile::Contracts;
use lcw_schema::store::raw::CallResult;

use crate::rpc::{FetchedLog, Rpc, RpcError};

/// Calls in flight per fetched range.
pub const CONCURRENCY: usize = 8;

/// One call to make: contract, signature, id, the log's block, calldata.
struct Call {
    contract: Address,
    method: &'static str,
    id: u64,
    block: u64,
    data: Bytes,
}

/// The id in topic 1 of `log`, when it fits 64 bits (a larger one is kept raw by the decoder,
/// and nothing is fetched for it).
fn id_topic(log: &FetchedLog) -> Option<u64> {
    let t = log.log.topics().get(1)?;
    u64::try_from(U256::from_be_bytes(t.0)).ok()
}

/// The calls `logs` need.
fn calls(contracts: &Contracts, logs: &[FetchedLog]) -> Vec<Call> {
    let profile = contracts.all();
    let mut out = Vec::new();
    for l in logs {
        let Some(topic0) = l.log.topics().first() else { continue };
        let contract = l.log.address;
        if *topic0 == SessionManager::SessionRequested::SIGNATURE_HASH && !profile.contains(&contract) {
            let Some(id) = id_topic(l) else { continue };
            let req = U256::from(id);
            out.push(Call {
                contract,
                method: SessionManager::getRequestCall::SIGNATURE,
                id,
                block: l.block_number,
                data: SessionManager::getRequestCall { reqId: req }.abi_encode().into(),
            });
            out.push(Call {
                contract,
                method: SessionManager::getRequiredCapabilitiesCall::SIGNATURE,
                id,
                block: l.block_number,
                data: SessionManager::getRequiredCapabilitiesCall { reqId: req }.abi_encode().into(),
            });
        } else if *topic0 == JobRegistry::SessionAdopted::SIGNATURE_HASH && contract == contracts.job_registry {
            let Some(id) = id_topic(l) else { continue };
            out.push(Call {
                contract,
                method: JobRegistry::getSessionCall::SIGNATURE,
                id,
                block: l.block_number,
                data: JobRegistry::getSessionCall { sessionId: U256::from(id) }.abi_encode().into(),
            });
        }
    }
    out
}

/// Calls `to` at `block`, or at the latest block when the node refuses that block (no state).
async fn read(rpc: &Rpc, to: Address, data: Bytes, block: u64) -> Result<Bytes, RpcError> {
    match rpc.call_at(to, data.clone(), block).await {
        Err(RpcError::Rejected { message, .. }) => {
            tracing::debug!(block, %to, %message, "no state at the log's block; reading the latest");
            rpc.call_at_tag(to, data, BlockNumberOrTag::Latest).await
        }
        other => other,
    }
}

/// Fetches the facts `logs` lack (see the module doc).
pub async fn fetch(rpc: &Rpc, contracts: &Contracts, logs: &[FetchedLog]) -> Result<Vec<CallResult>, RpcError> {
    let calls = calls(contracts, logs);
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    stream::iter(calls)
        .map(|c| async move {
            let data = read(rpc, c.contract, c.data, c.block).await?;
            Ok::<_, RpcError>(CallResult {
                contract: c.contract,
                method: c.method.to_owned(),
                id: c.id,
                block_number: c.block,
                data,
            })
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{B256, LogData, address};

    fn contracts() -> Contracts {
        Contracts {
            worker_registry: address!("0x00000000000000000000000000000000000000a1"),
            job_registry: address!("0x00000000000000000000000000000000000000a2"),
            ai_config: address!("0x00000000000000000000000000000000000000a3"),
        }
    }

    fn fetched<E: SolEvent>(address: Address, block: u64, e: &E) -> FetchedLog {
        let data: LogData = e.encode_log_data();
        FetchedLog {
            log: alloy::primitives::Log { address, data },
            block_number: block,
            block_hash: B256::ZERO,
            block_timestamp: None,
            tx_hash: B256::ZERO,
            tx_index: 0,
            log_index: 0,
            removed: false,
        }
    }

    #[test]
    fn requests_and_adoptions_need_calls_at_their_block_and_nothing_else_does() {
        let manager = Address::repeat_byte(0x5e);
        let requested = SessionManager::SessionRequested {
            reqId: U256::from(3),
            user: Address::ZERO,
            modelId: B256::ZERO,
            requestBlock: U256::from(9),
        };
        let adopted =
            JobRegistry::SessionAdopted { sessionId: U256::from(11), user: Address::ZERO, worker: Address::ZERO };
        let claimed = SessionManager::SessionClaimed { reqId: U256::from(3), worker: Address::ZERO };
        let logs = vec![
            fetched(manager, 9, &requested),
            fetched(manager, 10, &claimed),
            fetched(contracts().job_registry, 12, &adopted),
            // Not a manager's: the JobRegistry cannot emit SessionRequested.
            fetched(contracts().job_registry, 12, &requested),
            // Not JobRegistry's.
            fetched(manager, 12, &adopted),
        ];
        let calls = calls(&contracts(), &logs);
        let seen: Vec<(Address, &str, u64, u64)> =
            calls.iter().map(|c| (c.contract, c.method, c.id, c.block)).collect();
        assert_eq!(
            seen,
            vec![
                (manager, "getRequest(uint256)", 3, 9),
                (manager, "getRequiredCapabilities(uint256)", 3, 9),
                (contracts().job_registry, "getSession(uint256)", 11, 12),
            ]
        );
        assert_eq!(calls[0].data, Bytes::from(SessionManager::getRequestCall { reqId: U256::from(3) }.abi_encode()));
    }
}
