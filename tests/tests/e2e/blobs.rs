//! The worker's prompt-blob lookup through a beacon node, against a real anvil with real blob
//! transactions and a test beacon node ([`lcw_tests::beacon`]) that lays the beacon chain out
//! around them: the execution header's `parentBeaconBlockRoot` is anvil's, the beacon chain maps
//! it to a parent block, and the block carrying the blob's execution block comes after one or
//! more missed slots.
//!
//! anvil gives every block the same `parentBeaconBlockRoot` (zero): each test posts one blob
//! transaction, so that root names exactly one parent beacon block.

use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use lcw_schema::profile::Role;
use lcw_tests::beacon::{BeaconBlock, ParentRootFilter, TestBeacon};
use lcw_tests::{TestNet, b256, parties};
use lcw_worker::blobs::{BlobError, BlobSource, SEARCH_BLOCKS};

/// The slot of the parent beacon block (any: slot times are not assumed).
const PARENT_SLOT: u64 = 4_000;

/// A devnet with one blob transaction.
struct Posted {
    net: TestNet,
    /// The blob's payload.
    payload: Vec<u8>,
    /// Its versioned hash.
    hash: B256,
    /// The execution block that carries it.
    block: u64,
    /// That block's `parentBeaconBlockRoot`, as anvil made it.
    parent_root: B256,
    /// The head: the job naming the blob came `after` blocks later.
    head: u64,
}

/// Posts a blob as the first consumer, then mines `after` empty blocks.
async fn posted(after: u64) -> Posted {
    let net = TestNet::start().await;
    let signer = net.signer(Role::Consumer, 0);
    let from = signer.address();
    let payload = b"a prompt whose beacon block follows a missed slot".to_vec();
    let hash = parties::post_blob(&net.wallet(signer), from, &payload).await;
    let p = net.provider();
    // One block per transaction: the blob transaction's block is the head.
    let block = p.get_block_number().await.expect("eth_blockNumber");
    let header = p.get_block_by_number(block.into()).await.expect("block").expect("the head").header;
    assert!(header.blob_gas_used.unwrap_or(0) > 0, "block {block} carries the blob");
    let parent_root = header.parent_beacon_block_root.expect("a prague header has a parentBeaconBlockRoot");
    if after > 0 {
        p.anvil_mine(Some(after), None).await.expect("anvil_mine");
    }
    Posted { net, payload, hash, block, parent_root, head: block + after }
}

/// The beacon chain around the blob's block: the parent (its root from the execution header) at
/// [`PARENT_SLOT`] carrying the previous execution block, no block in the slots up to
/// `child_slot`, the block carrying the blob's execution block at `child_slot`, one more after.
async fn beacon_for(posted: &Posted, child_slot: u64) -> TestBeacon {
    let beacon = TestBeacon::start(posted.net.provider()).await;
    let child_root = b256(0xc1);
    for block in [
        BeaconBlock {
            slot: PARENT_SLOT - 1,
            root: b256(0xa0),
            parent_root: b256(0x9f),
            execution_block: Some(posted.block - 2),
        },
        BeaconBlock {
            slot: PARENT_SLOT,
            root: posted.parent_root,
            parent_root: b256(0xa0),
            execution_block: Some(posted.block - 1),
        },
        BeaconBlock {
            slot: child_slot,
            root: child_root,
            parent_root: posted.parent_root,
            execution_block: Some(posted.block),
        },
        BeaconBlock {
            slot: child_slot + 1,
            root: b256(0xc2),
            parent_root: child_root,
            execution_block: Some(posted.block + 1),
        },
    ] {
        beacon.add_block(block);
    }
    beacon
}

fn source(posted: &Posted, beacon: &TestBeacon) -> BlobSource {
    BlobSource::beacon(posted.net.provider(), &beacon.url, Duration::from_secs(10)).expect("beacon source")
}

fn no_protocol_errors(beacon: &TestBeacon) {
    assert_eq!(beacon.protocol_errors(), vec![], "requests that break the beacon API");
}

/// Regression: the lookup took the slot after the parent's (`slot(parent) + 1`), which has no
/// block when that slot was missed, so the blob was never found.
#[tokio::test]
async fn blob_behind_a_missed_slot_is_found_with_the_parent_root_filter() {
    let posted = posted(2).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 2).await;
    let payload = source(&posted, &beacon).fetch(posted.hash, posted.head).await.expect("blob found");
    assert_eq!(payload, posted.payload);
    assert_eq!(
        beacon.targets(),
        vec![
            format!("/eth/v1/beacon/headers?parent_root={}", posted.parent_root),
            format!("/eth/v1/beacon/blob_sidecars/{}", PARENT_SLOT + 2),
        ]
    );
    no_protocol_errors(&beacon);
}

#[tokio::test]
async fn blob_behind_missed_slots_is_found_by_walking_when_the_filter_is_refused() {
    let posted = posted(2).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 3).await;
    beacon.set_parent_root_filter(ParentRootFilter::Rejected);
    let payload = source(&posted, &beacon).fetch(posted.hash, posted.head).await.expect("blob found");
    assert_eq!(payload, posted.payload);
    assert_eq!(
        beacon.targets(),
        vec![
            format!("/eth/v1/beacon/headers?parent_root={}", posted.parent_root),
            format!("/eth/v1/beacon/headers/{}", posted.parent_root),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 1),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 2),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 3),
            format!("/eth/v1/beacon/blob_sidecars/{}", PARENT_SLOT + 3),
        ]
    );
    let statuses: Vec<Option<u16>> = beacon.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(400), Some(200), Some(404), Some(404), Some(200), Some(200)]);
    no_protocol_errors(&beacon);
}

#[tokio::test]
async fn a_node_that_ignores_the_parent_root_filter_is_walked() {
    let posted = posted(2).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 2).await;
    beacon.set_parent_root_filter(ParentRootFilter::Ignored);
    let payload = source(&posted, &beacon).fetch(posted.hash, posted.head).await.expect("blob found");
    assert_eq!(payload, posted.payload);
    // It answered the head's header (whose parent is the child), which is not taken for the child.
    assert_eq!(beacon.requests()[0].status, Some(200));
    assert_eq!(
        beacon.targets()[1..],
        [
            format!("/eth/v1/beacon/headers/{}", posted.parent_root),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 1),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 2),
            format!("/eth/v1/beacon/blob_sidecars/{}", PARENT_SLOT + 2),
        ]
    );
    no_protocol_errors(&beacon);
}

#[tokio::test]
async fn an_empty_filter_answer_falls_back_to_the_walk() {
    let posted = posted(2).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 2).await;
    beacon.set_parent_root_filter(ParentRootFilter::Empty);
    let payload = source(&posted, &beacon).fetch(posted.hash, posted.head).await.expect("blob found");
    assert_eq!(payload, posted.payload);
    assert_eq!(
        beacon.targets(),
        vec![
            format!("/eth/v1/beacon/headers?parent_root={}", posted.parent_root),
            format!("/eth/v1/beacon/headers/{}", posted.parent_root),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 1),
            format!("/eth/v1/beacon/headers/{}", PARENT_SLOT + 2),
            format!("/eth/v1/beacon/blob_sidecars/{}", PARENT_SLOT + 2),
        ]
    );
    assert_eq!(beacon.requests()[0].status, Some(200), "an answer, empty");
    no_protocol_errors(&beacon);
}

#[tokio::test]
async fn blob_whose_beacon_block_is_more_than_32_slots_after_its_parent_is_not_found_by_the_walk() {
    let posted = posted(2).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 33).await;
    beacon.set_parent_root_filter(ParentRootFilter::Rejected);
    let source = source(&posted, &beacon);
    let err = source.fetch(posted.hash, posted.head).await.expect_err("not within 32 slots");
    assert!(matches!(err, BlobError::NotFound { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("slots {}..={}", PARENT_SLOT + 1, PARENT_SLOT + 32)), "{message}");
    assert!(message.contains(&format!("execution block {}", posted.block)), "{message}");
    let walked: Vec<String> =
        (PARENT_SLOT + 1..=PARENT_SLOT + 32).map(|s| format!("/eth/v1/beacon/headers/{s}")).collect();
    assert_eq!(beacon.targets()[2..], walked[..], "32 slots walked, no more, no sidecars asked for");
    no_protocol_errors(&beacon);

    // The filter is not bounded by the walk: a node that has it names the child at any distance.
    beacon.set_parent_root_filter(ParentRootFilter::Supported);
    let payload = source.fetch(posted.hash, posted.head).await.expect("found through the filter");
    assert_eq!(payload, posted.payload);
    no_protocol_errors(&beacon);
}

#[tokio::test]
async fn fetch_stops_at_its_deadline_and_says_how_far_it_got() {
    let posted = posted(2).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 33).await;
    beacon.set_parent_root_filter(ParentRootFilter::Rejected);
    beacon.set_delay(Duration::from_millis(250));
    let budget = Duration::from_millis(1_500);
    let started = Instant::now();
    let err = source(&posted, &beacon)
        .fetch_until(posted.hash, posted.head, started + budget)
        .await
        .expect_err("the deadline passes first");
    let took = started.elapsed();
    assert!(took >= budget && took < budget + Duration::from_millis(500), "returned after {took:?}");
    let BlobError::Deadline { hash, searched, ref progress } = err else { panic!("not a deadline error: {err}") };
    assert_eq!(hash, posted.hash);
    // It counts from its own start, a moment after the caller took the deadline.
    assert!(searched > budget - Duration::from_millis(300) && searched <= took, "searched {searched:?}");
    assert_eq!(progress.from_block, posted.head);
    assert_eq!(progress.carrier, Some(posted.block));
    assert_eq!(progress.parent_slot, Some(PARENT_SLOT));
    let last = progress.last_request.clone().expect("a beacon request was sent");
    assert_eq!(beacon.targets().last(), Some(&last), "the last request it sent is the one reported");
    let slot: Option<u64> = last.strip_prefix("/eth/v1/beacon/headers/").and_then(|s| s.parse().ok());
    assert!(slot.is_some_and(|s| (PARENT_SLOT + 1..=PARENT_SLOT + 32).contains(&s)), "walking, at {last}");
    let message = err.to_string();
    assert!(message.contains(&format!("gave up after {searched:.1?} at the deadline")), "{message}");
    assert!(
        message.contains(&format!("execution block {} (parent beacon block at slot {PARENT_SLOT})", posted.block)),
        "{message}"
    );
    no_protocol_errors(&beacon);
}

#[tokio::test]
async fn blob_posted_before_the_search_window_is_not_found_without_asking_the_beacon() {
    let posted = posted(SEARCH_BLOCKS + 1).await;
    let beacon = beacon_for(&posted, PARENT_SLOT + 1).await;
    let err = source(&posted, &beacon).fetch(posted.hash, posted.head).await.expect_err("outside the window");
    let message = err.to_string();
    assert!(matches!(err, BlobError::NotFound { .. }), "{message}");
    assert!(
        message.contains(&format!("execution blocks {}..={}", posted.head - SEARCH_BLOCKS, posted.head)),
        "{message}"
    );
    assert_eq!(beacon.requests(), vec![], "the execution chain alone rules it out");
}
