//! Each lie a node can tell in an `eth_getLogs` answer or a header, refused with the values;
//! honest answers pass.

use super::*;
use alloy::primitives::{LogData, address};

const A: Address = address!("0x00000000000000000000000000000000000000a1");
const B: Address = address!("0x00000000000000000000000000000000000000a2");
const FOREIGN: Address = address!("0x00000000000000000000000000000000000000ff");

fn hash(block: u64) -> B256 {
    let mut b = [0xb0; 32];
    b[..8].copy_from_slice(&block.to_be_bytes());
    B256::from(b)
}

fn tx(block: u64, index: u64) -> B256 {
    let mut b = [0x22; 32];
    b[..8].copy_from_slice(&block.to_be_bytes());
    b[8..16].copy_from_slice(&index.to_be_bytes());
    B256::from(b)
}

/// Log `index` of `block`, alone in its transaction (index `index`).
fn log(block: u64, index: u64) -> FetchedLog {
    FetchedLog {
        log: alloy::primitives::Log {
            address: A,
            data: LogData::new_unchecked(vec![B256::repeat_byte(0x11)], vec![0u8; 32].into()),
        },
        block_number: block,
        block_hash: hash(block),
        block_timestamp: Some(1_000 + block),
        tx_hash: tx(block, index),
        tx_index: index,
        log_index: index,
        removed: false,
    }
}

/// Log `index` of `block` in transaction `tx_index`.
fn log_in(block: u64, index: u64, tx_index: u64) -> FetchedLog {
    FetchedLog { tx_hash: tx(block, tx_index), tx_index, ..log(block, index) }
}

fn header(number: u64) -> Header {
    Header { number, hash: hash(number), parent_hash: hash(number - 1), timestamp: 1_000 + number }
}

fn asked() -> LogsAsked {
    LogsAsked::range(10, 20, vec![A, B])
}

/// Blocks 10 (two logs of one transaction, one of another), 12 and 20.
fn honest() -> Vec<FetchedLog> {
    vec![log_in(10, 0, 0), log_in(10, 1, 0), log_in(10, 2, 3), log(12, 0), log(20, 3), log(20, 4)]
}

#[test]
fn an_honest_answer_passes_and_names_its_blocks() {
    let blocks = check_logs(&asked(), &honest()).unwrap();
    assert_eq!(blocks.hash_of(10), Some(hash(10)));
    assert_eq!(blocks.hash_of(11), None);
    assert_eq!(blocks.hash_of(20), Some(hash(20)));
    assert_eq!(blocks.without_timestamp().count(), 0);
    assert_eq!(blocks.check_header(&header(20)), Ok(()));
    assert_eq!(blocks.check_header(&header(15)), Ok(()), "a block without logs says nothing of its hash");
    assert!(check_logs(&asked(), &[]).unwrap().0.is_empty());
}

#[test]
fn a_log_outside_the_range_is_refused() {
    let mut logs = honest();
    logs.push(log(25, 0));
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::OutOfRange { block: 25, index: 0, from: 10, to: 20 }));
    let logs = vec![log(9, 7), log(10, 0)];
    assert!(matches!(check_logs(&asked(), &logs), Err(BadAnswer::OutOfRange { block: 9, .. })));
}

#[test]
fn a_log_of_an_address_not_asked_for_is_refused() {
    let mut logs = honest();
    logs[3].log.address = FOREIGN;
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::ForeignAddress { block: 12, index: 0, address: FOREIGN }));
    logs[3].log.address = B;
    assert!(check_logs(&asked(), &logs).is_ok(), "every address asked for is fine");
}

#[test]
fn a_log_of_another_event_is_refused_when_one_event_was_asked_for() {
    let topic = B256::repeat_byte(0x11);
    let asked = LogsAsked::event(10, 20, A, topic);
    assert!(check_logs(&asked, &honest()).is_ok());
    let mut logs = honest();
    logs[1].log.data = LogData::new_unchecked(vec![B256::repeat_byte(0x12)], Default::default());
    assert_eq!(check_logs(&asked, &logs), Err(BadAnswer::ForeignTopic { block: 10, index: 1, topic0: topic }));
    logs[1].log.data = LogData::new_unchecked(vec![], Default::default());
    assert!(matches!(check_logs(&asked, &logs), Err(BadAnswer::ForeignTopic { .. })), "no topic at all");
}

#[test]
fn a_duplicate_log_is_refused_next_to_its_copy_or_anywhere_else() {
    let mut logs = honest();
    logs.insert(2, log_in(10, 1, 0));
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::Duplicate { block: 10, index: 1 }));
    // Further on, the copy comes after a later log.
    let mut logs = honest();
    logs.push(log(10, 0));
    assert_eq!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::Unordered { block: 10, index: 0, after_block: 20, after_index: 4 })
    );
}

#[test]
fn logs_out_of_block_or_log_index_order_are_refused() {
    let mut logs = honest();
    logs.swap(0, 1);
    assert_eq!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::Unordered { block: 10, index: 0, after_block: 10, after_index: 1 })
    );
    let mut logs = honest();
    logs.swap(3, 4);
    assert_eq!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::Unordered { block: 12, index: 0, after_block: 20, after_index: 3 })
    );
}

#[test]
fn logs_whose_transactions_disagree_with_their_order_are_refused() {
    let refused = |logs: &[FetchedLog], index, tx_index, previous, previous_tx_index| {
        assert_eq!(
            check_logs(&asked(), logs),
            Err(BadAnswer::ConflictingTransaction { block: 10, index, tx_index, previous, previous_tx_index })
        );
    };
    // A later log in an earlier transaction.
    refused(&[log_in(10, 0, 2), log_in(10, 1, 1)], 1, 1, 0, 2);
    // One transaction index, two hashes.
    let mut other = log_in(10, 1, 0);
    other.tx_hash = B256::repeat_byte(0x33);
    refused(&[log_in(10, 0, 0), other], 1, 0, 0, 0);
    // One hash, two transaction indexes: next to each other, or with another transaction between.
    let mut again = log_in(10, 1, 1);
    again.tx_hash = tx(10, 0);
    refused(&[log_in(10, 0, 0), again.clone()], 1, 1, 0, 0);
    again.log_index = 2;
    again.tx_index = 2;
    refused(&[log_in(10, 0, 0), log_in(10, 1, 1), again], 2, 2, 1, 1);
    // Transactions start again in every block.
    assert!(check_logs(&asked(), &[log_in(10, 5, 4), log_in(11, 0, 0)]).is_ok());
}

#[test]
fn two_hashes_or_timestamps_for_one_block_are_refused() {
    let mut logs = honest();
    logs[5].block_hash = B256::repeat_byte(0x66);
    assert_eq!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::ConflictingHash { block: 20, first: hash(20), second: B256::repeat_byte(0x66) })
    );
    let mut logs = honest();
    logs[1].block_timestamp = Some(5);
    assert_eq!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::ConflictingTimestamp { block: 10, first: 1_010, second: 5 })
    );
    logs[1].block_timestamp = None;
    assert!(check_logs(&asked(), &logs).is_ok(), "a log without a timestamp disagrees with nothing");
}

#[test]
fn two_blocks_with_one_hash_are_refused() {
    let mut logs = honest();
    logs[4].block_hash = hash(12);
    logs[5].block_hash = hash(12);
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::SharedHash { block: 20, other: 12, hash: hash(12) }));
}

#[test]
fn a_block_earlier_than_a_block_before_it_is_refused() {
    let mut logs = honest();
    logs[3].block_timestamp = Some(900);
    assert_eq!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::TimestampOrder { earlier: 10, earlier_timestamp: 1_010, later: 12, later_timestamp: 900 })
    );
    // Found past blocks without timestamps, and when a block's first log had none.
    let mut logs = honest();
    logs[3].block_timestamp = None;
    logs[4].block_timestamp = None;
    logs[5].block_timestamp = Some(1_001);
    assert!(matches!(
        check_logs(&asked(), &logs),
        Err(BadAnswer::TimestampOrder { earlier: 10, later: 20, later_timestamp: 1_001, .. })
    ));
    // Equal timestamps are fine (some chains make several blocks a second).
    let mut logs = honest();
    logs[3].block_timestamp = Some(1_010);
    assert!(check_logs(&asked(), &logs).is_ok());
}

#[test]
fn logs_that_disagree_with_their_header_are_refused() {
    let blocks = check_logs(&asked(), &honest()).unwrap();
    let mut other = header(20);
    other.hash = B256::repeat_byte(0x77);
    assert_eq!(
        blocks.check_header(&other),
        Err(BadAnswer::WrongBlockHash { block: 20, expected: other.hash, found: hash(20) })
    );
    let mut later = header(20);
    later.timestamp += 1;
    assert_eq!(
        blocks.check_header(&later),
        Err(BadAnswer::WrongTimestamp { block: 20, expected: 1_021, found: 1_020 })
    );
}

#[test]
fn a_header_out_of_time_with_the_logs_around_it_is_refused() {
    let blocks = check_logs(&asked(), &honest()).unwrap();
    let mut early = header(15);
    early.timestamp = 1_011;
    assert_eq!(
        blocks.check_header(&early),
        Err(BadAnswer::TimestampOrder { earlier: 12, earlier_timestamp: 1_012, later: 15, later_timestamp: 1_011 })
    );
    let mut late = header(15);
    late.timestamp = 1_030;
    assert_eq!(
        blocks.check_header(&late),
        Err(BadAnswer::TimestampOrder { earlier: 15, earlier_timestamp: 1_030, later: 20, later_timestamp: 1_020 })
    );
    assert_eq!(blocks.check_header(&header(25)), Ok(()), "after every block of the answer");
}

#[test]
fn logs_asked_by_block_hash_must_carry_it() {
    let asked = LogsAsked::block(&header(12), vec![A]);
    assert!(check_logs(&asked, &[log(12, 0), log(12, 1)]).is_ok());
    let mut stale = log(12, 2);
    stale.block_hash = B256::repeat_byte(0x55);
    assert_eq!(
        check_logs(&asked, &[log(12, 0), stale]),
        Err(BadAnswer::WrongBlockHash { block: 12, expected: hash(12), found: B256::repeat_byte(0x55) })
    );
    assert!(matches!(check_logs(&asked, &[log(13, 0)]), Err(BadAnswer::OutOfRange { block: 13, .. })));
}

#[test]
fn pending_removed_and_impossible_logs_are_refused() {
    let mut logs = honest();
    logs[0].tx_hash = B256::ZERO;
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::MissingHash { block: 10, index: 0 }));
    let mut logs = honest();
    logs[4].block_hash = B256::ZERO;
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::MissingHash { block: 20, index: 3 }));
    let mut logs = honest();
    logs[2].removed = true;
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::Removed { block: 10, index: 2 }));
    let mut logs = honest();
    logs[0].log.data = LogData::new_unchecked(vec![B256::ZERO; 5], Default::default());
    assert_eq!(check_logs(&asked(), &logs), Err(BadAnswer::TooManyTopics { block: 10, index: 0, topics: 5 }));
}

#[test]
fn a_header_of_another_block_or_without_a_hash_of_its_own_is_refused() {
    assert_eq!(check_header(7, &header(7)), Ok(()));
    assert_eq!(check_header(7, &header(8)), Err(BadAnswer::WrongHeader { asked: 7, got: 8, hash: hash(8) }));
    let mut zero = header(7);
    zero.hash = B256::ZERO;
    assert_eq!(check_header(7, &zero), Err(BadAnswer::HeaderHash { number: 7, hash: B256::ZERO }));
    let mut own_parent = header(7);
    own_parent.hash = own_parent.parent_hash;
    assert_eq!(check_header(7, &own_parent), Err(BadAnswer::HeaderHash { number: 7, hash: hash(6) }));
}

#[test]
fn a_header_must_link_to_the_block_before_it_and_not_be_earlier() {
    assert_eq!(check_link(&header(8), &header(7)), Ok(()));
    let mut forged = header(8);
    forged.parent_hash = B256::repeat_byte(0x99);
    assert_eq!(
        check_link(&forged, &header(7)),
        Err(BadAnswer::Unlinked { number: 8, parent: forged.parent_hash, previous: hash(7) })
    );
    assert!(matches!(check_link(&header(8), &header(6)), Err(BadAnswer::WrongHeader { asked: 7, got: 6, .. })));
    let mut early = header(8);
    early.timestamp = 900;
    assert_eq!(
        check_link(&early, &header(7)),
        Err(BadAnswer::TimestampOrder { earlier: 7, earlier_timestamp: 1_007, later: 8, later_timestamp: 900 })
    );
    assert!(
        BadAnswer::Unlinked { number: 8, parent: B256::ZERO, previous: hash(7) }
            .to_string()
            .contains("node's block 7 is")
    );
}

#[test]
fn every_kind_of_lie_has_its_own_metric_label() {
    let lies = [
        BadAnswer::OutOfRange { block: 0, index: 0, from: 0, to: 0 },
        BadAnswer::ForeignAddress { block: 0, index: 0, address: FOREIGN },
        BadAnswer::ForeignTopic { block: 0, index: 0, topic0: B256::ZERO },
        BadAnswer::MissingHash { block: 0, index: 0 },
        BadAnswer::Removed { block: 0, index: 0 },
        BadAnswer::TooManyTopics { block: 0, index: 0, topics: 5 },
        BadAnswer::Duplicate { block: 0, index: 0 },
        BadAnswer::Unordered { block: 0, index: 0, after_block: 0, after_index: 0 },
        BadAnswer::ConflictingTransaction { block: 0, index: 0, tx_index: 0, previous: 0, previous_tx_index: 0 },
        BadAnswer::ConflictingHash { block: 0, first: B256::ZERO, second: B256::ZERO },
        BadAnswer::SharedHash { block: 0, other: 0, hash: B256::ZERO },
        BadAnswer::ConflictingTimestamp { block: 0, first: 0, second: 0 },
        BadAnswer::TimestampOrder { earlier: 0, earlier_timestamp: 0, later: 0, later_timestamp: 0 },
        BadAnswer::WrongBlockHash { block: 0, expected: B256::ZERO, found: B256::ZERO },
        BadAnswer::WrongTimestamp { block: 0, expected: 0, found: 0 },
        BadAnswer::WrongHeader { asked: 0, got: 0, hash: B256::ZERO },
        BadAnswer::HeaderHash { number: 0, hash: B256::ZERO },
        BadAnswer::Unlinked { number: 1, parent: B256::ZERO, previous: B256::ZERO },
    ];
    let labels: std::collections::BTreeSet<&str> = lies.iter().map(BadAnswer::reason).collect();
    assert_eq!(labels.len(), lies.len());
    assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')), "{labels:?}");
}

#[test]
fn the_filter_asks_what_the_check_expects() {
    let f = serde_json::to_value(LogsAsked::event(10, 20, A, B256::repeat_byte(0x11)).filter()).unwrap();
    assert_eq!(f["fromBlock"], "0xa");
    assert_eq!(f["toBlock"], "0x14");
    assert_eq!(f["topics"][0], format!("{}", B256::repeat_byte(0x11)));
    let f = serde_json::to_value(LogsAsked::block(&header(12), vec![A, B]).filter()).unwrap();
    assert_eq!(f["blockHash"], format!("{}", hash(12)));
    assert!(f.get("fromBlock").is_none());
}
