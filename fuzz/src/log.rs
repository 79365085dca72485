//! One contract log as fuzz input, and its canonical form.
//!
//! The byte format, chosen so that small mutations stay meaningful:
//!
//! ```text
//! emitter(1) shape(1) [selector(1)] topic(32)* data(..)
//! ```
//!
//! - `emitter % 4`: JobRegistry, WorkerRegistry, AIConfig, or a SessionManager (any other address
//!   is one, to the decoder);
//! - `shape & 0x07`: the number of topics (at most 4); with `shape & 0x08` the first topic is
//!   `SELECTORS[selector % len]`, a real event selector (a fuzzer does not guess a keccak hash),
//!   and only the remaining topics follow as 32-byte words (a short input is zero-padded);
//! - everything left is the log's data.
//!
//! The contract addresses are those of `lcw devnet` (anvil's deterministic deployments), so logs
//! taken from a real devnet answer keep their emitter.

use std::sync::OnceLock;

use alloy::primitives::{Address, B256, Bytes, IntoLogData, Log, LogData, address, keccak256};
use alloy::sol_types::SolEventInterface;
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::profile::Contracts;

/// The watched contracts, at `lcw devnet`'s addresses.
pub const CONTRACTS: Contracts = Contracts {
    worker_registry: address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
    job_registry: address!("0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"),
    ai_config: address!("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
};

/// The SessionManager `lcw devnet` deploys.
pub const MANAGER: Address = address!("0xCf7Ed3AccA5a467e9e704C703E8D87F634fB0Fc9");

/// The emitters, by the first input byte (modulo 4).
pub const EMITTERS: [Address; 4] = [CONTRACTS.job_registry, CONTRACTS.worker_registry, CONTRACTS.ai_config, MANAGER];

alloy::sol! {
    /// The legacy names of WorkerSuspended / WorkerReinstated the indexer also accepts (its own
    /// declaration is private to `indexer/src/decode.rs`; these must stay the same events).
    #[derive(Debug)]
    interface LegacyWorkerRegistry {
        event WorkerJailed(address indexed worker, uint256 until);
        event WorkerUnjailed(address indexed worker);
    }
}

/// Every event selector of the watched interfaces, in a fixed order: the bindings' tables, then
/// the two legacy names.
pub fn selectors() -> &'static [B256] {
    static TABLE: OnceLock<Vec<B256>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<B256> = Vec::new();
        for group in [
            JobRegistry::JobRegistryEvents::SELECTORS,
            WorkerRegistry::WorkerRegistryEvents::SELECTORS,
            AIConfig::AIConfigEvents::SELECTORS,
            SessionManager::SessionManagerEvents::SELECTORS,
        ] {
            table.extend(group.iter().map(|s| B256::from(*s)));
        }
        table.push(keccak256("WorkerJailed(address,uint256)"));
        table.push(keccak256("WorkerUnjailed(address)"));
        table
    })
}

/// Reads a log from fuzz input (any input is a log).
pub fn from_bytes(input: &[u8]) -> Log {
    let mut rest = input;
    let mut byte = || match rest.split_first() {
        Some((b, tail)) => {
            rest = tail;
            *b
        }
        None => 0,
    };
    let address = EMITTERS[usize::from(byte() % 4)];
    let shape = byte();
    let count = usize::from(shape & 0x07).min(4);
    let mut topics = Vec::with_capacity(count);
    if count > 0 && shape & 0x08 != 0 {
        let table = selectors();
        topics.push(table[usize::from(byte()) % table.len()]);
    }
    while topics.len() < count {
        let mut word = [0u8; 32];
        let n = rest.len().min(32);
        word[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        topics.push(B256::from(word));
    }
    Log { address, data: LogData::new_unchecked(topics, Bytes::copy_from_slice(rest)) }
}

/// Writes `log` in the input format ([`from_bytes`] reads it back), or None when its emitter is
/// not one of [`EMITTERS`] or it has more than 4 topics.
pub fn to_bytes(log: &Log) -> Option<Vec<u8>> {
    let emitter = EMITTERS.iter().position(|a| *a == log.address)?;
    let topics = log.data.topics();
    if topics.len() > 4 {
        return None;
    }
    let mut out = vec![emitter as u8, topics.len() as u8];
    let mut rest = topics;
    if let Some(i) = topics.first().and_then(|t0| selectors().iter().position(|s| s == t0))
        && let Ok(i) = u8::try_from(i)
    {
        out[1] |= 0x08;
        out.push(i);
        rest = &topics[1..];
    }
    for t in rest {
        out.extend_from_slice(t.as_slice());
    }
    out.extend_from_slice(&log.data.data);
    Some(out)
}

/// The log as the contract would have emitted the event it decodes to (the interface chosen by
/// emitter, as the indexer's decoder chooses it), or None when it decodes to no event. Decoding
/// ignores what the ABI does not read (trailing data, dirty padding), so this is where two logs
/// that mean the same event meet.
pub fn canonical(log: &Log) -> Option<LogData> {
    let a = log.address;
    if a == CONTRACTS.job_registry {
        JobRegistry::JobRegistryEvents::decode_log(log).ok().map(|l| l.data.into_log_data())
    } else if a == CONTRACTS.worker_registry {
        match WorkerRegistry::WorkerRegistryEvents::decode_log(log) {
            Ok(l) => Some(l.data.into_log_data()),
            Err(_) => {
                LegacyWorkerRegistry::LegacyWorkerRegistryEvents::decode_log(log).ok().map(|l| l.data.into_log_data())
            }
        }
    } else if a == CONTRACTS.ai_config {
        AIConfig::AIConfigEvents::decode_log(log).ok().map(|l| l.data.into_log_data())
    } else {
        SessionManager::SessionManagerEvents::decode_log(log).ok().map(|l| l.data.into_log_data())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_survives_the_input_format() {
        let log = Log {
            address: CONTRACTS.job_registry,
            data: LogData::new_unchecked(vec![selectors()[3], B256::repeat_byte(7)], Bytes::from_static(b"some data")),
        };
        assert_eq!(from_bytes(&to_bytes(&log).unwrap()), log);
        assert!(selectors().len() <= 256, "one byte picks a selector");
    }
}
