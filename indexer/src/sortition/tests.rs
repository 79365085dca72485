//! The projector on an in-memory store: a request claimed and made ready, the adopted session
//! carrying its model and keys from the fetched facts, capabilities, and the undo of it all.

use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::sol_types::SolCall;
use lcw_schema::bindings::{JobRegistry, SessionManager};
use lcw_schema::profile::Contracts;
use lcw_schema::store::raw::CallResult;
use lcw_schema::store::rows::{CapabilityRow, ProjectionRow, SessionRow, WorkerRow};
use lcw_schema::store::sortition::{self, RequestState, RequestStatus};
use lcw_schema::store::{Identity, Store, StoreError, undo};

use crate::apply::Meta;
use crate::cache::Projector;
use crate::decode::Event;

const MANAGER: Address = Address::repeat_byte(0x5e);
const USER: Address = Address::repeat_byte(0xc1);
const WORKER: Address = Address::repeat_byte(0xa1);
const MODEL: B256 = B256::repeat_byte(0x77);

fn contracts() -> Contracts {
    Contracts {
        worker_registry: address!("0x00000000000000000000000000000000000000a1"),
        job_registry: address!("0x00000000000000000000000000000000000000a2"),
        ai_config: address!("0x00000000000000000000000000000000000000a3"),
    }
}

fn store() -> Store {
    Store::open_in_memory(&Identity { chain_id: 1, contracts: contracts(), start_block: 1 }).unwrap()
}

/// Where an event of `contract` in `block` happened (timestamp `block * 12`).
fn at(contract: Address, block: u64, log_index: u64) -> Meta {
    Meta {
        block,
        log_index,
        timestamp: block * 12,
        tx_hash: B256::repeat_byte(block as u8),
        block_hash: B256::with_last_byte(block as u8),
        contract,
    }
}

fn fact<C: SolCall>(contract: Address, id: u64, block: u64, ret: &C::Return) -> CallResult {
    CallResult {
        contract,
        method: C::SIGNATURE.into(),
        id,
        block_number: block,
        data: Bytes::from(C::abi_encode_returns(ret)),
    }
}

/// The facts fetched with request `req` made in `block`.
fn request_facts(req: u64, block: u64, expiry: u64, caps: U256) -> Vec<CallResult> {
    let request = SessionManager::Request {
        user: USER,
        modelId: MODEL,
        requestBlock: block,
        expiry,
        worker: Address::ZERO,
        status: 0,
    };
    vec![
        fact::<SessionManager::getRequestCall>(MANAGER, req, block, &request),
        fact::<SessionManager::getRequiredCapabilitiesCall>(MANAGER, req, block, &caps),
    ]
}

fn session_fact(session: u64, block: u64) -> CallResult {
    let s = JobRegistry::Session {
        user: USER,
        modelId: MODEL,
        worker: WORKER,
        status: 0,
        encWorkerKey: Bytes::from(vec![0xaa; 125]),
        encDisputerKey: Bytes::from(vec![0xdd; 125]),
        jobCount: U256::ZERO,
        lastActivityAt: U256::from(block * 12),
        reassignCount: U256::ZERO,
        deposit: U256::ZERO,
        excludedWorkers: vec![],
    };
    fact::<JobRegistry::getSessionCall>(contracts().job_registry, session, block, &s)
}

/// Applies `events` of one block in one transaction (with undo images when `undo` is set).
fn apply_block(store: &mut Store, facts: &[CallResult], events: &[(Event, Meta)], undo: bool) {
    let tx = store.begin().unwrap();
    for f in facts {
        f.put(&tx).unwrap();
    }
    let mut p = Projector::new(&tx, undo).unwrap();
    for (e, m) in events {
        p.apply(e, m).unwrap();
    }
    let block = events.first().map(|(_, m)| m.block);
    p.flush(if undo { block } else { None }).unwrap();
    tx.commit().unwrap();
}

fn requested(req: u64, block: u64) -> (Event, Meta) {
    (
        Event::SessionRequested { manager: MANAGER, req, user: USER, model: MODEL, request_block: block },
        at(MANAGER, block, 0),
    )
}

#[test]
fn a_request_is_claimed_then_ready_and_its_session_carries_model_and_keys() {
    let mut store = store();
    let jr = contracts().job_registry;
    apply_block(&mut store, &request_facts(1, 10, 5_000, U256::from(2)), &[requested(1, 10)], false);
    let r = sortition::request(store.conn(), MANAGER, 1).unwrap().expect("request indexed");
    assert_eq!(r.status, RequestStatus::Open);
    assert_eq!((r.user, r.model_id, r.request_block), (USER, MODEL, 10));
    assert_eq!(r.seed, B256::with_last_byte(10), "the seed is the hash of the request's block");
    assert_eq!((r.requested_at, r.expiry, r.required_caps), (120, 5_000, U256::from(2)));
    assert_eq!(sortition::open_requests(store.conn(), MANAGER).unwrap().len(), 1);

    let claim = (Event::SessionClaimed { manager: MANAGER, req: 1, worker: WORKER }, at(MANAGER, 12, 3));
    apply_block(&mut store, &[], &[claim], false);
    let r = sortition::request(store.conn(), MANAGER, 1).unwrap().unwrap();
    assert_eq!(r.status, RequestStatus::Claimed);
    assert_eq!((r.worker, r.claimed_block, r.claimed_at), (Some(WORKER), Some(12), Some(144)));
    assert_eq!(r.claim_tx, Some(B256::repeat_byte(12)));
    assert!(sortition::open_requests(store.conn(), MANAGER).unwrap().is_empty());

    // provideSessionKey: JobRegistry adopts the session, then the request is ready (one tx).
    let adopted = (Event::SessionAdopted { session: 7, user: USER, worker: WORKER }, at(jr, 15, 0));
    let ready = (Event::SessionReady { manager: MANAGER, req: 1, session: 7 }, at(MANAGER, 15, 1));
    apply_block(&mut store, &[session_fact(7, 15)], &[adopted, ready], false);
    let r = sortition::request(store.conn(), MANAGER, 1).unwrap().unwrap();
    assert_eq!((r.status, r.session_id, r.ready_block), (RequestStatus::Ready, Some(7), Some(15)));
    assert_eq!(r.state_at(u64::MAX), RequestState::Ready, "a ready request never expires");
    let s = SessionRow::get(store.conn(), 7).unwrap().expect("adopted session");
    assert_eq!((s.user, s.worker, s.model_id), (Some(USER), Some(WORKER), Some(MODEL)));
    assert_eq!(s.enc_worker_key, Some(Bytes::from(vec![0xaa; 125])), "the worker can decrypt");
    assert_eq!(s.enc_disputer_key, Some(Bytes::from(vec![0xdd; 125])));
    assert_eq!(s.status, "ACTIVE");
    assert_eq!(sortition::claimed_by(store.conn(), WORKER, 10).unwrap().len(), 1);
}

#[test]
fn an_adoption_indexed_without_facts_keeps_its_session_without_model_or_keys() {
    let mut store = store();
    let adopted =
        (Event::SessionAdopted { session: 3, user: USER, worker: WORKER }, at(contracts().job_registry, 9, 0));
    apply_block(&mut store, &[], &[adopted], false);
    let s = SessionRow::get(store.conn(), 3).unwrap().unwrap();
    assert_eq!((s.model_id, s.enc_worker_key), (None, None));
}

#[test]
fn a_request_without_its_fetched_facts_is_refused_as_corrupt() {
    let mut store = store();
    let tx = store.begin().unwrap();
    let mut p = Projector::new(&tx, false).unwrap();
    let (e, m) = requested(4, 10);
    let err = p.apply(&e, &m).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("getRequest(uint256)"), "{err}");
}

#[test]
fn claims_of_unknown_requests_are_unattributed() {
    let mut store = store();
    let tx = store.begin().unwrap();
    let mut p = Projector::new(&tx, false).unwrap();
    p.apply(&Event::SessionClaimed { manager: MANAGER, req: 9, worker: WORKER }, &at(MANAGER, 5, 0)).unwrap();
    p.apply(&Event::SessionReady { manager: MANAGER, req: 9, session: 1 }, &at(MANAGER, 6, 0)).unwrap();
    assert_eq!(p.unattributed, 2);
}

#[test]
fn capabilities_are_projected_onto_workers_and_the_capability_table() {
    let mut store = store();
    let wr = contracts().worker_registry;
    let mask = U256::from(3);
    apply_block(
        &mut store,
        &[],
        &[
            (Event::CapabilityRegistered { bit: 0, name: "search".into() }, at(wr, 4, 0)),
            (Event::CapabilityRegistered { bit: 1, name: "vision".into() }, at(wr, 4, 1)),
            (Event::WorkerCapabilitiesSet { worker: WORKER, mask }, at(wr, 4, 2)),
        ],
        false,
    );
    assert_eq!(sortition::worker_capabilities(store.conn(), WORKER).unwrap(), mask);
    assert_eq!(sortition::capability_names(store.conn()).unwrap(), vec![(0, "search".into()), (1, "vision".into())]);
    // Deregistration keeps the mask, as the contract does.
    apply_block(&mut store, &[], &[(Event::WorkerDeregistered { worker: WORKER }, at(wr, 5, 0))], false);
    assert_eq!(WorkerRow::get(store.conn(), &WORKER).unwrap().unwrap().capabilities, mask);
}

#[test]
fn unwinding_a_claim_and_a_request_restores_the_rows_before_them() {
    let mut store = store();
    let wr = contracts().worker_registry;
    apply_block(&mut store, &request_facts(1, 10, 5_000, U256::ZERO), &[requested(1, 10)], true);
    apply_block(
        &mut store,
        &[],
        &[(Event::SessionClaimed { manager: MANAGER, req: 1, worker: WORKER }, at(MANAGER, 11, 0))],
        true,
    );
    apply_block(
        &mut store,
        &request_facts(2, 12, 5_000, U256::ZERO),
        &[
            requested(2, 12),
            (Event::CapabilityRegistered { bit: 0, name: "search".into() }, at(wr, 12, 1)),
            (Event::WorkerCapabilitiesSet { worker: WORKER, mask: U256::from(1) }, at(wr, 12, 2)),
        ],
        true,
    );
    let tx = store.begin().unwrap();
    undo::unwind_above(&tx, 10).unwrap();
    CallResult::delete_above(&tx, 10).unwrap();
    tx.commit().unwrap();
    let r = sortition::request(store.conn(), MANAGER, 1).unwrap().unwrap();
    assert_eq!((r.status, r.worker, r.claimed_block), (RequestStatus::Open, None, None), "the claim is gone");
    assert_eq!(sortition::request(store.conn(), MANAGER, 2).unwrap(), None, "the later request is gone");
    assert!(CapabilityRow::all(store.conn()).unwrap().is_empty());
    assert_eq!(sortition::worker_capabilities(store.conn(), WORKER).unwrap(), U256::ZERO);
    let facts: Vec<u64> = CallResult::all(store.conn()).unwrap().iter().map(|c| c.id).collect();
    assert_eq!(facts, vec![1, 1], "request 1's two facts stay, request 2's are unwound");
}
