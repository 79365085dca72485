//! The `eth_getLogs` answer reader (`chain/src/rpc.rs`): the body as UTF-8 text, then the JSON-RPC
//! envelope whose `result` is read into `FetchedLog`s through the flat `LogWire` struct (or whose
//! `error` is read as an error payload). Input: an answer body as a node sends it.
//!
//! The envelope below is the one `logs_attempt` declares inside itself; it cannot be called
//! without a node, so the target parses the same types the same way.
//!
//! Asserts: reading never panics; every log read writes back to `eth_getLogs` JSON that reads
//! back equal; on an answer that is valid JSON, alloy's own RPC `Log` (the slower
//! `serde(flatten)` parse the wire struct replaces) reads it to the same logs, so the fast path
//! accepts nothing alloy would not and reads nothing differently.
//!
//! Only valid JSON is compared: serde_json skips the value of a field lcw ignores without
//! decoding its strings (a lone surrogate escape such as `"\udaa6"` passes there), while alloy's
//! buffered parse decodes every field. Nothing of such a field reaches lcw; refusing it would take
//! a second, validating parse of every answer (`corpus/get_logs/invalid-escape-in-ignored-field`).

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
    let Ok(text) = std::str::from_utf8(input) else { return };
    let Ok(answer) = serde_json::from_str::<Envelope<FetchedLog>>(text) else { return };
    let Some(logs) = answer.result else { return };
    for log in &logs {
        let json = wire::to_json(log);
        let back: FetchedLog = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("{log:?} written as {json} does not read back: {e}"));
        assert_eq!(&back, log, "{json} reads back differently");
    }
    if serde_json::from_str::<serde_json::Value>(text).is_err() {
        return;
    }
    let alloy: Envelope<alloy::rpc::types::Log> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("lcw reads {} logs from an answer alloy refuses: {e}", logs.len()));
    let theirs = alloy.result.unwrap_or_default();
    assert_eq!(theirs.len(), logs.len());
    for (ours, theirs) in logs.iter().zip(&theirs) {
        assert_eq!(ours.log, theirs.inner, "address, topics and data");
        assert_eq!(Some(ours.block_number), theirs.block_number);
        assert_eq!(Some(ours.block_hash), theirs.block_hash);
        assert_eq!(ours.block_timestamp, theirs.block_timestamp);
        assert_eq!(Some(ours.tx_hash), theirs.transaction_hash);
        assert_eq!(Some(ours.tx_index), theirs.transaction_index);
        assert_eq!(Some(ours.log_index), theirs.log_index);
        assert_eq!(ours.removed, theirs.removed);
    }
});
