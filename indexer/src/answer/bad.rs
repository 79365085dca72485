//! What is wrong with an answer ([`BadAnswer`]), with the values, and the kind of wrong it is
//! ([`BadAnswer::reason`], the label of the per-endpoint metric).

use alloy::primitives::{Address, B256};

use super::MAX_TOPICS;

/// What is wrong with an answer; the message carries the values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// A log outside the requested blocks.
    #[error("log {index} of block {block} lies outside the requested blocks {from}..={to}")]
    OutOfRange {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
        /// First block asked.
        from: u64,
        /// Last block asked.
        to: u64,
    },
    /// A log of an address that was not asked for.
    #[error("log {index} of block {block} comes from {address}, which was not asked for")]
    ForeignAddress {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
        /// Its address.
        address: Address,
    },
    /// A log without the requested event topic.
    #[error("log {index} of block {block} is not the requested event {topic0}")]
    ForeignTopic {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
        /// The event asked for.
        topic0: B256,
    },
    /// A log without a block hash or transaction hash (a pending log).
    #[error("log {index} of block {block} has no block hash or no transaction hash (a pending log)")]
    MissingHash {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
    },
    /// A log marked removed: only subscriptions report those, never `eth_getLogs`.
    #[error("log {index} of block {block} is marked removed, which eth_getLogs never answers")]
    Removed {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
    },
    /// A log with more topics than the EVM can emit.
    #[error("log {index} of block {block} has {topics} topics; a log has at most {MAX_TOPICS}")]
    TooManyTopics {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
        /// Its topic count.
        topics: usize,
    },
    /// Two logs with the same block number and log index.
    #[error("log {index} of block {block} appears twice")]
    Duplicate {
        /// The block.
        block: u64,
        /// The index.
        index: u64,
    },
    /// A log that comes after a later one (nodes answer in block, then log index order).
    #[error("log {index} of block {block} comes after log {after_index} of block {after_block}")]
    Unordered {
        /// Its block.
        block: u64,
        /// Its index.
        index: u64,
        /// The block of the log it follows.
        after_block: u64,
        /// The index of the log it follows.
        after_index: u64,
    },
    /// Two consecutive logs of one block whose transactions disagree with their order: an
    /// earlier transaction index, or one transaction with two indexes or hashes.
    #[error(
        "log {index} of block {block} is in transaction {tx_index}, which disagrees with log {previous} in \
         transaction {previous_tx_index} (order, index or hash)"
    )]
    ConflictingTransaction {
        /// The block.
        block: u64,
        /// The log.
        index: u64,
        /// Its transaction index.
        tx_index: u64,
        /// The log before it.
        previous: u64,
        /// That log's transaction index.
        previous_tx_index: u64,
    },
    /// Two logs of one block that disagree on its hash.
    #[error("block {block} has two hashes in one answer: {first} and {second}")]
    ConflictingHash {
        /// The block.
        block: u64,
        /// The hash of its first log.
        first: B256,
        /// The other hash.
        second: B256,
    },
    /// Two blocks of one answer with the same hash.
    #[error("blocks {other} and {block} have the same hash {hash}")]
    SharedHash {
        /// The later block.
        block: u64,
        /// The earlier block.
        other: u64,
        /// The hash.
        hash: B256,
    },
    /// Two logs of one block that disagree on its timestamp.
    #[error("block {block} has two timestamps in one answer: {first} and {second}")]
    ConflictingTimestamp {
        /// The block.
        block: u64,
        /// The timestamp of its first log.
        first: u64,
        /// The other timestamp.
        second: u64,
    },
    /// A block with an earlier timestamp than a block before it.
    #[error("block {later} has timestamp {later_timestamp}, before block {earlier}'s {earlier_timestamp}")]
    TimestampOrder {
        /// The earlier block.
        earlier: u64,
        /// Its timestamp.
        earlier_timestamp: u64,
        /// The later block.
        later: u64,
        /// Its timestamp.
        later_timestamp: u64,
    },
    /// A log whose block hash is not the one of the block it claims (its header, or the hash
    /// the request named).
    #[error("logs of block {block} carry block hash {found}, but block {block} is {expected}")]
    WrongBlockHash {
        /// The block.
        block: u64,
        /// Its hash.
        expected: B256,
        /// The hash the logs carry.
        found: B256,
    },
    /// Logs whose block timestamp is not their header's.
    #[error("logs of block {block} carry timestamp {found}, but block {block} has {expected}")]
    WrongTimestamp {
        /// The block.
        block: u64,
        /// Its header's timestamp.
        expected: u64,
        /// The timestamp the logs carry.
        found: u64,
    },
    /// A header of another block than the one asked for.
    #[error("asked for block {asked}, the node answered with block {got} ({hash})")]
    WrongHeader {
        /// The block asked for.
        asked: u64,
        /// The block answered.
        got: u64,
        /// Its hash.
        hash: B256,
    },
    /// A header whose hash is zero or its parent's.
    #[error("block {number}'s header has hash {hash}, zero or its parent's")]
    HeaderHash {
        /// The block.
        number: u64,
        /// The hash.
        hash: B256,
    },
    /// A header whose parent is not the node's own block before it.
    #[error("block {number}'s parent hash is {parent}, but the node's block {} is {previous}", number - 1)]
    Unlinked {
        /// The block.
        number: u64,
        /// Its parent hash.
        parent: B256,
        /// The hash of the block before it, as the node reports it.
        previous: B256,
    },
}

impl BadAnswer {
    /// The kind of wrong, a short label from a fixed set (the `reason` of
    /// `lcw_indexer_rpc_endpoint_bad_answers_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            BadAnswer::OutOfRange { .. } => "out_of_range",
            BadAnswer::ForeignAddress { .. } => "foreign_address",
            BadAnswer::ForeignTopic { .. } => "foreign_topic",
            BadAnswer::MissingHash { .. } => "pending_log",
            BadAnswer::Removed { .. } => "removed_log",
            BadAnswer::TooManyTopics { .. } => "too_many_topics",
            BadAnswer::Duplicate { .. } => "duplicate",
            BadAnswer::Unordered { .. } => "unordered",
            BadAnswer::ConflictingTransaction { .. } => "conflicting_transaction",
            BadAnswer::ConflictingHash { .. } => "conflicting_hash",
            BadAnswer::SharedHash { .. } => "shared_hash",
            BadAnswer::ConflictingTimestamp { .. } => "conflicting_timestamp",
            BadAnswer::TimestampOrder { .. } => "timestamp_order",
            BadAnswer::WrongBlockHash { .. } => "wrong_block_hash",
            BadAnswer::WrongTimestamp { .. } => "wrong_timestamp",
            BadAnswer::WrongHeader { .. } => "wrong_header",
            BadAnswer::HeaderHash { .. } => "header_hash",
            BadAnswer::Unlinked { .. } => "unlinked_header",
        }
    }
}
