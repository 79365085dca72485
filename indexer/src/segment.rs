//! A segment: a contiguous run of whole blocks with the logs of the watched contracts in them,
//! fetched and checked, ready to commit. Backfill produces many (coalesced into transactions);
//! live indexing produces one per block.

use std::collections::HashMap;

use alloy::primitives::{B256, U256};
use lcw_schema::store::raw::CallResult;

use crate::rpc::FetchedLog;

/// Blocks `from..=to` and their logs.
#[derive(Debug, Clone)]
pub struct Segment {
    /// First block.
    pub from: u64,
    /// Last block (inclusive).
    pub to: u64,
    /// Hash of the last block.
    pub to_hash: B256,
    /// Parent hash of the last block (known when followed live).
    pub to_parent: Option<B256>,
    /// Timestamp of the last block.
    pub to_timestamp: u64,
    /// The logs, in chain order, each with block number, hash and index.
    pub logs: Vec<FetchedLog>,
    /// Timestamps of blocks whose logs did not carry `blockTimestamp` (a log missing from here
    /// too is given `to_timestamp`).
    pub block_times: HashMap<u64, u64>,
    /// Values of WorkerRegistered transactions (the stake is their msg.value): (tx, block, value).
    pub tx_values: Vec<(B256, u64, U256)>,
    /// Facts the logs' events lack, read from the chain (see [`crate::facts`]).
    pub facts: Vec<CallResult>,
}
