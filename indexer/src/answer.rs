//! A node's answers checked before anything of them is stored: the pure half of the indexer's
//! reads. [`crate::read`] runs these checks inside each attempt on one endpoint, so that an
//! answer refused here is counted, reported with its endpoint and asked of the next one
//! (see `lcw_chain::rpc::Rpc::checked`).
//!
//! An `eth_getLogs` answer is refused ([`check_logs`]) when one of its logs
//! - lies outside the requested blocks, or, asked by block hash, carries another block hash;
//! - comes from an address that was not asked for, or lacks the requested topic;
//! - has no block hash or transaction hash (zero: a pending log), more than four topics, or is
//!   marked removed (only subscriptions report removed logs);
//! - repeats the (block number, log index) of the log before it, or comes before it: every node
//!   answers in block order, then log index order, so any other order is a stitched answer;
//! - disagrees with the log before it in its block on their transactions (log order is
//!   transaction order, and one transaction has one index and one hash); or
//! - carries another block hash or timestamp than another log of its block, the hash of another
//!   block, or a timestamp earlier than an earlier block's.
//!
//! The blocks it names ([`Blocks`]) must then agree with the headers read beside it
//! ([`Blocks::check_header`]): hash, timestamp, and timestamp order. A header is refused when it
//! is not the block asked for or has no hash of its own ([`check_header`]), or when its parent
//! is not the block before it as the same node reports that block, or is later
//! ([`check_link`]).
//!
//! What is not checked, and why: the size of a log's data is bounded by gas alone (a user can
//! emit a large `SessionKeyUpdated`), so a fixed limit below the answer's could refuse a real
//! block on every endpoint and stop indexing; the answer's size is bounded instead (by the
//! reader). A block hash that every log of a block inside a range agrees on cannot be told from
//! the real one without that block's header; the last block's is checked against its header,
//! and live blocks are read by hash. A header's hash is not recomputed from its fields (chains
//! add fields of their own, and a wrong recomputation would refuse every header).

use alloy::primitives::map::B256Set;
use alloy::primitives::{Address, B256};
use alloy::rpc::types::Filter;

use crate::rpc::{FetchedLog, Header};

mod bad;
#[cfg(test)]
mod tests;

pub use bad::BadAnswer;

/// The most topics a log can have (LOG0 to LOG4).
const MAX_TOPICS: usize = 4;

/// What an `eth_getLogs` request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsAsked {
    /// First block.
    pub from: u64,
    /// Last block (inclusive).
    pub to: u64,
    /// The addresses.
    pub addresses: Vec<Address>,
    /// The event, when only one was asked for.
    pub topic0: Option<B256>,
    /// The block, when it was asked for by hash (then `from == to` is its number).
    pub block_hash: Option<B256>,
}

impl LogsAsked {
    /// Logs of `addresses` in `from..=to`.
    pub fn range(from: u64, to: u64, addresses: Vec<Address>) -> Self {
        LogsAsked { from, to, addresses, topic0: None, block_hash: None }
    }

    /// Logs of `addresses` in the block `header` (asked by its hash).
    pub fn block(header: &Header, addresses: Vec<Address>) -> Self {
        LogsAsked { from: header.number, to: header.number, addresses, topic0: None, block_hash: Some(header.hash) }
    }

    /// Logs of the event `topic0` of `address` in `from..=to`.
    pub fn event(from: u64, to: u64, address: Address, topic0: B256) -> Self {
        LogsAsked { from, to, addresses: vec![address], topic0: Some(topic0), block_hash: None }
    }

    /// The filter that asks for it.
    pub fn filter(&self) -> Filter {
        let filter = Filter::new().address(self.addresses.clone());
        let filter = match self.block_hash {
            Some(hash) => filter.at_block_hash(hash),
            None => filter.from_block(self.from).to_block(self.to),
        };
        match self.topic0 {
            Some(topic) => filter.event_signature(topic),
            None => filter,
        }
    }
}

/// A block an answer's logs name: its number, the hash they agree on, and the timestamp when
/// they carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Named {
    number: u64,
    hash: B256,
    timestamp: Option<u64>,
}

/// The blocks an answer's logs name, in block order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocks(Vec<Named>);

impl Blocks {
    /// The hash the logs of block `number` carry, if any log is in it.
    pub fn hash_of(&self, number: u64) -> Option<B256> {
        self.0.binary_search_by_key(&number, |b| b.number).ok().map(|i| self.0[i].hash)
    }

    /// The blocks whose logs carry no timestamp (older nodes).
    pub fn without_timestamp(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().filter(|b| b.timestamp.is_none()).map(|b| b.number)
    }

    /// Whether the logs agree with `header`: those of its block (if any) on its hash and
    /// timestamp, those of the blocks around it on the order of their timestamps.
    pub fn check_header(&self, header: &Header) -> Result<(), BadAnswer> {
        let at = self.0.partition_point(|b| b.number < header.number);
        if let Some(&Named { number: block, hash: found, timestamp }) =
            self.0.get(at).filter(|b| b.number == header.number)
        {
            if found != header.hash {
                return Err(BadAnswer::WrongBlockHash { block, expected: header.hash, found });
            }
            if let Some(found) = timestamp.filter(|t| *t != header.timestamp) {
                return Err(BadAnswer::WrongTimestamp { block, expected: header.timestamp, found });
            }
        }
        let known = |b: &&Named| b.number != header.number && b.timestamp.is_some();
        let (before, after) = (self.0[..at].iter().rev().find(known), self.0[at..].iter().find(known));
        let (earlier, later) = match (before, after) {
            (Some(b), _) if b.timestamp > Some(header.timestamp) => (b.number, header.number),
            (_, Some(a)) if a.timestamp < Some(header.timestamp) => (header.number, a.number),
            _ => return Ok(()),
        };
        let of = |n: u64| if n == header.number { Some(header.timestamp) } else { self.timestamp_of(n) };
        Err(BadAnswer::TimestampOrder {
            earlier,
            earlier_timestamp: of(earlier).unwrap_or_default(),
            later,
            later_timestamp: of(later).unwrap_or_default(),
        })
    }

    fn timestamp_of(&self, number: u64) -> Option<u64> {
        self.0.binary_search_by_key(&number, |b| b.number).ok().and_then(|i| self.0[i].timestamp)
    }

    /// Adds a log's block, or checks it against the block's earlier logs (`log` is never before
    /// the last one noted). `hashes` holds the hashes of the blocks noted.
    fn note(&mut self, log: &FetchedLog, hashes: &mut B256Set) -> Result<(), BadAnswer> {
        let block = log.block_number;
        let earlier = match self.0.last_mut() {
            Some(last) if last.number == block => {
                if last.hash != log.block_hash {
                    return Err(BadAnswer::ConflictingHash { block, first: last.hash, second: log.block_hash });
                }
                match (last.timestamp, log.block_timestamp) {
                    (Some(first), Some(second)) if first != second => {
                        return Err(BadAnswer::ConflictingTimestamp { block, first, second });
                    }
                    (None, Some(t)) => last.timestamp = Some(t),
                    _ => return Ok(()),
                }
                self.0.len() - 1
            }
            _ => {
                if !hashes.insert(log.block_hash) {
                    let other = self.0.iter().find(|b| b.hash == log.block_hash).map(|b| b.number).unwrap_or_default();
                    return Err(BadAnswer::SharedHash { block, other, hash: log.block_hash });
                }
                self.0.push(Named { number: block, hash: log.block_hash, timestamp: log.block_timestamp });
                self.0.len() - 1
            }
        };
        // The timestamp is new to its block: no earlier block may be later.
        let Some(timestamp) = self.0[earlier].timestamp else { return Ok(()) };
        match self.0[..earlier].iter().rev().find_map(|b| Some((b.number, b.timestamp?))) {
            Some((number, t)) if t > timestamp => Err(BadAnswer::TimestampOrder {
                earlier: number,
                earlier_timestamp: t,
                later: block,
                later_timestamp: timestamp,
            }),
            _ => Ok(()),
        }
    }
}

/// Checks one log against the request (everything but its relation to the other logs).
fn check_log(asked: &LogsAsked, log: &FetchedLog) -> Result<(), BadAnswer> {
    let (block, index) = (log.block_number, log.log_index);
    if block < asked.from || block > asked.to {
        return Err(BadAnswer::OutOfRange { block, index, from: asked.from, to: asked.to });
    }
    if let Some(expected) = asked.block_hash
        && log.block_hash != expected
    {
        return Err(BadAnswer::WrongBlockHash { block, expected, found: log.block_hash });
    }
    if log.block_hash.is_zero() || log.tx_hash.is_zero() {
        return Err(BadAnswer::MissingHash { block, index });
    }
    if log.removed {
        return Err(BadAnswer::Removed { block, index });
    }
    if !asked.addresses.contains(&log.log.address) {
        return Err(BadAnswer::ForeignAddress { block, index, address: log.log.address });
    }
    let topics = log.log.topics();
    if topics.len() > MAX_TOPICS {
        return Err(BadAnswer::TooManyTopics { block, index, topics: topics.len() });
    }
    if let Some(topic0) = asked.topic0
        && topics.first() != Some(&topic0)
    {
        return Err(BadAnswer::ForeignTopic { block, index, topic0 });
    }
    Ok(())
}

/// Checks that `log` may follow `previous` in an answer: a later (block, log index), and in the
/// same block, a transaction that is `previous`'s or a later one. `earlier_txs` holds the hashes
/// of the transactions before `previous`'s in its block.
fn check_order(previous: &FetchedLog, log: &FetchedLog, earlier_txs: &mut B256Set) -> Result<(), BadAnswer> {
    let (block, index) = (log.block_number, log.log_index);
    match (previous.block_number, previous.log_index).cmp(&(block, index)) {
        std::cmp::Ordering::Equal => return Err(BadAnswer::Duplicate { block, index }),
        std::cmp::Ordering::Greater => {
            return Err(BadAnswer::Unordered {
                block,
                index,
                after_block: previous.block_number,
                after_index: previous.log_index,
            });
        }
        std::cmp::Ordering::Less if previous.block_number != block => {
            earlier_txs.clear();
            return Ok(());
        }
        std::cmp::Ordering::Less => {}
    }
    let same_tx = previous.tx_hash == log.tx_hash;
    let consistent = match log.tx_index.cmp(&previous.tx_index) {
        std::cmp::Ordering::Equal => same_tx,
        std::cmp::Ordering::Greater => {
            !same_tx && {
                earlier_txs.insert(previous.tx_hash);
                !earlier_txs.contains(&log.tx_hash)
            }
        }
        std::cmp::Ordering::Less => false,
    };
    if consistent {
        Ok(())
    } else {
        Err(BadAnswer::ConflictingTransaction {
            block,
            index,
            tx_index: log.tx_index,
            previous: previous.log_index,
            previous_tx_index: previous.tx_index,
        })
    }
}

/// Checks an `eth_getLogs` answer against what was `asked` (see the module docs) and returns the
/// blocks its logs name. Linear in the answer.
pub fn check_logs(asked: &LogsAsked, logs: &[FetchedLog]) -> Result<Blocks, BadAnswer> {
    let mut blocks = Blocks::default();
    let mut hashes = B256Set::default();
    let mut earlier_txs = B256Set::default();
    let mut previous: Option<&FetchedLog> = None;
    for log in logs {
        check_log(asked, log)?;
        if let Some(previous) = previous {
            check_order(previous, log, &mut earlier_txs)?;
        }
        blocks.note(log, &mut hashes)?;
        previous = Some(log);
    }
    Ok(blocks)
}

/// Checks that `header` is block `asked`, with a hash of its own.
pub fn check_header(asked: u64, header: &Header) -> Result<(), BadAnswer> {
    if header.number != asked {
        return Err(BadAnswer::WrongHeader { asked, got: header.number, hash: header.hash });
    }
    if header.hash.is_zero() || header.hash == header.parent_hash {
        return Err(BadAnswer::HeaderHash { number: header.number, hash: header.hash });
    }
    Ok(())
}

/// Checks that `child` is the block right after `parent`, names it as its parent, and is not
/// earlier than it.
pub fn check_link(child: &Header, parent: &Header) -> Result<(), BadAnswer> {
    check_header(child.number.saturating_sub(1), parent)?;
    if child.number == 0 || child.parent_hash != parent.hash {
        return Err(BadAnswer::Unlinked {
            number: child.number.max(1),
            parent: child.parent_hash,
            previous: parent.hash,
        });
    }
    if child.timestamp < parent.timestamp {
        return Err(BadAnswer::TimestampOrder {
            earlier: parent.number,
            earlier_timestamp: parent.timestamp,
            later: child.number,
            later_timestamp: child.timestamp,
        });
    }
    Ok(())
}
