//! Generic event decoding for job timelines: every event of the watched contracts, decoded from
//! the committed ABI (`contracts/out`) into named fields, so a timeline shows what the chain said
//! without a hand-written case per event.

use std::collections::HashMap;
use std::sync::OnceLock;

use alloy::dyn_abi::{DynSolValue, EventExt};
use alloy::json_abi::{Event, JsonAbi};
use alloy::primitives::B256;
use lcw_schema::bindings::artifacts;

/// One decoded field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Parameter name.
    pub name: String,
    /// Solidity type.
    pub ty: String,
    /// Value as text.
    pub value: String,
}

fn events() -> &'static HashMap<B256, Event> {
    static EVENTS: OnceLock<HashMap<B256, Event>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let mut map = HashMap::new();
        for artifact in
            [artifacts::JOB_REGISTRY, artifacts::WORKER_REGISTRY, artifacts::AI_CONFIG, artifacts::SESSION_MANAGER]
        {
            let abi: Option<JsonAbi> = serde_json::from_str::<serde_json::Value>(artifact)
                .ok()
                .and_then(|v| serde_json::from_value(v.get("abi")?.clone()).ok());
            for event in abi.iter().flat_map(|a| a.events()) {
                map.insert(event.selector(), event.clone());
            }
        }
        map
    })
}

/// Decodes a log's fields; an error text when the ABI does not know it or the data is malformed
/// (the store keeps such logs raw).
pub fn fields(topics: &[B256], data: &[u8]) -> Result<Vec<Field>, String> {
    let topic0 = topics.first().ok_or("the log has no topics")?;
    let event = events().get(topic0).ok_or_else(|| format!("unknown event {topic0:#x}"))?;
    let decoded = event.decode_log_parts(topics.iter().copied(), data).map_err(|e| e.to_string())?;
    let (mut indexed, mut body) = (decoded.indexed.into_iter(), decoded.body.into_iter());
    let mut out = Vec::with_capacity(event.inputs.len());
    for input in &event.inputs {
        let value = if input.indexed { indexed.next() } else { body.next() };
        let value = value.map(|v| text(&v)).unwrap_or_default();
        out.push(Field { name: input.name.clone(), ty: input.ty.clone(), value });
    }
    Ok(out)
}

fn text(v: &DynSolValue) -> String {
    match v {
        DynSolValue::Bool(b) => b.to_string(),
        DynSolValue::Int(i, _) => i.to_string(),
        DynSolValue::Uint(u, _) => u.to_string(),
        DynSolValue::FixedBytes(w, size) => format!("0x{}", alloy::primitives::hex::encode(&w[..*size])),
        DynSolValue::Address(a) => a.to_checksum(None),
        DynSolValue::Function(f) => format!("{f}"),
        DynSolValue::Bytes(b) => format!("0x{}", alloy::primitives::hex::encode(b)),
        DynSolValue::String(s) => s.clone(),
        DynSolValue::Array(items) | DynSolValue::FixedArray(items) | DynSolValue::Tuple(items) => {
            let parts: Vec<String> = items.iter().map(text).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256};
    use alloy::sol_types::SolEvent;
    use lcw_schema::bindings::JobRegistry;

    #[test]
    fn decodes_a_job_event_by_name() {
        let ev = JobRegistry::JobReleased {
            jobId: U256::from(7),
            workerShare: U256::from(900),
            protocolShare: U256::from(50),
            feePoolShare: U256::from(50),
        };
        let data = ev.encode_log_data();
        let f = fields(data.topics(), &data.data).unwrap();
        let get = |n: &str| f.iter().find(|x| x.name == n).map(|x| x.value.clone());
        assert_eq!(get("jobId").as_deref(), Some("7"));
        assert_eq!(get("workerShare").as_deref(), Some("900"));
        let _ = Address::ZERO;
    }

    #[test]
    fn unknown_and_malformed_logs_are_errors() {
        assert!(fields(&[B256::repeat_byte(1)], &[]).unwrap_err().contains("unknown event"));
        let ev = JobRegistry::JobReleased {
            jobId: U256::from(7),
            workerShare: U256::ZERO,
            protocolShare: U256::ZERO,
            feePoolShare: U256::ZERO,
        };
        let data = ev.encode_log_data();
        assert!(fields(data.topics(), &data.data[..10]).is_err());
    }
}
