//! The indexer's log decoder (`indexer/src/decode.rs`): raw logs of the watched contracts and
//! SessionManagers into typed events. Input format: `lcw_fuzz::log`.
//!
//! Asserts: decoding never panics and is deterministic; a decoded log has a name and an
//! undecodable one has neither name nor job; the job id reported for the raw layer is the job
//! the event is about; a log and its canonical re-encoding (the event as the contract would emit
//! it) decode to the same thing, and canonical form is a fixed point. The GraphQL API's generic
//! field decoder (`lcw_queries::decode::fields`) gets the same log: it must not panic, and decodes
//! every event the indexer decodes.

#![no_main]

use lcw_fuzz::log::{CONTRACTS, canonical, from_bytes};
use lcw_indexer::decode::{Decoded, Decoder, Event};
use libfuzzer_sys::fuzz_target;

/// The job an event is about, for the events that are about one.
fn job_of(event: &Event) -> Option<u64> {
    match event {
        Event::JobSubmitted { job, .. }
        | Event::JobAcknowledged { job }
        | Event::JobCompleted { job, .. }
        | Event::JobReleased { job, .. }
        | Event::JobTimedOut { job, .. }
        | Event::JobSettledNoFault { job, .. }
        | Event::KeeperBountyPaid { job, .. }
        | Event::DisputeCreated { job, .. }
        | Event::DisputeResolved { job, .. }
        | Event::DisputeDefaulted { job }
        | Event::RefundCredited { job, .. } => Some(*job),
        _ => None,
    }
}

fn check(decoded: &Decoded) {
    match &decoded.event {
        Ok(event) => {
            assert!(decoded.name.is_some(), "a decoded event has a name: {decoded:?}");
            if let Some(job) = job_of(event) {
                assert_eq!(decoded.job_id, Some(job), "the raw layer's job id is the event's job");
            }
        }
        Err(reason) => {
            assert!(decoded.name.is_none() && decoded.job_id.is_none(), "undecodable but named: {decoded:?}");
            assert!(!reason.is_empty(), "an undecodable log says why");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let log = from_bytes(input);
    let decoder = Decoder::new(CONTRACTS);
    let decoded = decoder.decode(&log);
    check(&decoded);
    assert_eq!(decoder.decode(&log), decoded, "decoding is deterministic");

    if let Some(data) = canonical(&log) {
        let again = alloy::primitives::Log { address: log.address, data };
        let redecoded = decoder.decode(&again);
        // What the decoder derives from a log depends only on the event it carries.
        match (&decoded.event, &redecoded.event) {
            (Ok(_), _) => assert_eq!(redecoded, decoded, "the canonical form of {log:?} decodes differently"),
            // An event the ABI accepts that lcw refuses (an id past 64 bits) is refused again.
            (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) => panic!("{log:?} was refused ({e}) but its canonical form {again:?} was not"),
        }
        assert_eq!(canonical(&again).as_ref(), Some(&again.data), "the canonical form is a fixed point");
    }

    // The API's timeline decodes from the same ABI: an event the indexer applied is never shown
    // as undecodable (the legacy names are not in the ABI).
    let fields = lcw_queries::decode::fields(log.data.topics(), &log.data.data);
    if decoded.event.is_ok() && !matches!(decoded.name, Some("WorkerJailed" | "WorkerUnjailed")) {
        assert!(fields.is_ok(), "the indexer decodes {:?} but the timeline cannot: {fields:?}", decoded.name);
    }
});
