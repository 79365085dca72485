//! A fetched log written back as the JSON object `eth_getLogs` answers with (camelCase keys,
//! quantities as `0x` hex), so the answer reader can be checked on a round trip.

use lcw_chain::rpc::FetchedLog;
use serde_json::{Value, json};

/// The `eth_getLogs` JSON of `log`, every field present.
pub fn to_json(log: &FetchedLog) -> Value {
    let quantity = |n: u64| format!("{n:#x}");
    let mut object = json!({
        "address": log.log.address,
        "topics": log.log.data.topics(),
        "data": log.log.data.data,
        "blockNumber": quantity(log.block_number),
        "blockHash": log.block_hash,
        "transactionHash": log.tx_hash,
        "transactionIndex": quantity(log.tx_index),
        "logIndex": quantity(log.log_index),
        "removed": log.removed,
    });
    if let Some(t) = log.block_timestamp {
        object["blockTimestamp"] = quantity(t).into();
    }
    object
}
