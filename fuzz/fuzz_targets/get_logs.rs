//! The `eth_getLogs` answer reader (`chain/src/rpc.rs`): the JSON-RPC envelope whose `result` is
//! read into `FetchedLog`s through the flat `LogWire` struct (or whose `error` is read as an
//! error payload). Input: an answer body as a node sends it.
//!
//! The envelope below is the one `logs_attempt` declares inside itself; it cannot be called
//! without a node, so the target parses the same types the same way.
//!
//! Asserts: reading never panics; every log read writes back to `eth_getLogs` JSON that reads
//! back equal; alloy's own RPC `Log` (the slower `serde(flatten)` parse the wire struct replaces)
//! reads the same answer to the same logs, so the fast path accepts nothing alloy would not and
//! reads nothing differently.

#![no_main]

use alloy::rpc::json_rpc::ErrorPayload;
use lcw_chain::rpc::FetchedLog;
use lcw_fuzz::wire;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The answer, as `logs_attempt` reads it (generic over the log type, so the bound is stated:
/// serde would otherwise ask `L: Default` for the defaulted field).
#[derive(Deserialize)]
#[serde(bound(deserialize = "L: Deserialize<'de>"))]
struct Envelope<L> {
    #[serde(default)]
    result: Option<Vec<L>>,
    #[serde(default)]
    #[allow(dead_code)]
    error: Option<ErrorPayload>,
}

fuzz_target!(|input: &[u8]| {
    let Ok(answer) = serde_json::from_slice::<Envelope<FetchedLog>>(input) else { return };
    let Some(logs) = answer.result else { return };
    for log in &logs {
        let json = wire::to_json(log);
        let back: FetchedLog = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("{log:?} written as {json} does not read back: {e}"));
        assert_eq!(&back, log, "{json} reads back differently");
    }
    let alloy: Envelope<alloy::rpc::types::Log> = serde_json::from_slice(input)
        .unwrap_or_else(|e| panic!("lcw reads {} logs from an answer alloy refuses: {e}", logs.len()));
    let theirs = alloy.result.unwrap_or_default();
    assert_eq!(theirs.len(), logs.len());
    for (ours, theirs) in logs.iter().zip(&theirs) {
        assert_eq!(ours.log, theirs.inner, "address, topics and data");
        assert_eq!(Some(ours.block_number), theirs.block_number);
        assert_eq!(Some(ours.block_hash), theirs.block_hash);
        assert_eq!(ours.block_timestamp, theirs.block_timestamp);
        assert_eq!(ours.tx_hash, theirs.transaction_hash.unwrap_or_default());
        assert_eq!(ours.tx_index, theirs.transaction_index.unwrap_or_default());
        assert_eq!(Some(ours.log_index), theirs.log_index);
        assert_eq!(ours.removed, theirs.removed);
    }
});
