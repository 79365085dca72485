//! A small store with a short but complete history, built the way the indexer builds one: raw
//! logs (named by the indexer's decoder) with their blocks, ranges and cursor, then the
//! projections rebuilt from them by `lcw_indexer::replay::rebuild`. The GraphQL target runs its
//! requests over it, so resolvers find rows to walk: two models, two workers (P-256 and X25519
//! keys), two sessions (one from a sortition request), a released job, a timed-out job with its
//! slash and bounty, a disputed job found guilty, governance parameters.

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256, Bytes, Log, LogData, U256, keccak256};
use alloy::sol_types::{SolCall, SolEvent};
use lcw_indexer::decode::{Decoder, Event};
use lcw_schema::bindings::{AIConfig, JobRegistry, SessionManager, WorkerRegistry};
use lcw_schema::store::raw::{BlockRow, CallResult, Cursor, RangeRow, RawLog};
use lcw_schema::store::{Identity, Store, StoreError, meta_set};
use lcw_schema::suite::{EncryptionSecret, SessionKey, Suite, wrap_session_key_with};

use crate::log::{CONTRACTS, MANAGER};

/// Seconds between blocks.
const BLOCK_SECS: u64 = 2;

fn word(tag: u8, i: u64) -> B256 {
    keccak256([&[tag][..], &i.to_be_bytes()].concat())
}

fn actor(i: u64) -> Address {
    Address::from_slice(&word(b'a', i)[12..])
}

fn log<E: SolEvent>(address: Address, event: E) -> (Address, LogData) {
    (address, event.encode_log_data())
}

fn wrapped(recipient: &EncryptionSecret, ephemeral: u8) -> Bytes {
    let key = SessionKey::from_bytes([0x5a; 32]);
    // Small non-zero bytes are a valid scalar in both suites.
    EncryptionSecret::from_bytes(recipient.suite(), &[ephemeral; 32])
        .and_then(|e| wrap_session_key_with(&recipient.public_key(), &key, &e, [ephemeral; 12]))
        .map(Bytes::from)
        .unwrap_or_default()
}

/// The history, block by block.
fn history() -> Vec<Vec<(Address, LogData)>> {
    let n = U256::from;
    let (jr, wr, ai) = (CONTRACTS.job_registry, CONTRACTS.worker_registry, CONTRACTS.ai_config);
    let (user, keeper, disputer) = (actor(1), actor(2), actor(3));
    let (w1, w2) = (actor(10), actor(11));
    let (m1, m2) = (keccak256("gemma3-270m"), keccak256("llama3-8b"));
    let p256 = EncryptionSecret::from_bytes(Suite::P256AesGcm, &[7; 32]).ok();
    let x25519 = EncryptionSecret::from_bytes(Suite::X25519, &[9; 32]).ok();
    let key = |s: &Option<EncryptionSecret>| Bytes::from(s.as_ref().map(|s| s.public_key()).unwrap_or_default());
    let wrap = |s: &Option<EncryptionSecret>, e| s.as_ref().map(|s| wrapped(s, e)).unwrap_or_default();
    let ether = |e: u64| n(e) * n(10).pow(n(18));
    vec![
        vec![
            log(ai, AIConfig::DisputeParamsUpdated { bondMultiplier: n(2), window: n(60), resolutionTimeout: n(120) }),
            log(
                ai,
                AIConfig::FeeDistributionUpdated { workerBps: n(8_000), protocolBps: n(1_500), feePoolBps: n(500) },
            ),
            log(ai, AIConfig::KeeperParamsUpdated { timeoutBountyBps: n(100), releaseBountyBps: n(50) }),
            log(
                ai,
                AIConfig::SlashingParamsUpdated {
                    timeoutSlashBps: n(500),
                    completionTimeoutSlashBps: n(1_000),
                    disputeSlashBps: n(2_000),
                },
            ),
            log(ai, AIConfig::SuspensionParamsUpdated { threshold: n(3), cooldown: n(3_600) }),
            log(ai, AIConfig::MinWorkerStakeUpdated { newStake: ether(100) }),
            log(ai, AIConfig::MaxConcurrentJobsUpdated { value: n(8) }),
            log(ai, AIConfig::InfraParamsUpdated { param: "ackTimeout".into(), value: n(30) }),
            log(ai, AIConfig::InfraParamsUpdated { param: "completionTimeout".into(), value: n(60) }),
            log(ai, AIConfig::SessionManagerAddressUpdated { value: MANAGER }),
            log(ai, AIConfig::ModelRegistered { modelId: m1, fee: n(1_000), maxOutputTokens: n(4_096) }),
            log(ai, AIConfig::ModelRegistered { modelId: m2, fee: n(5_000), maxOutputTokens: n(8_192) }),
            log(wr, WorkerRegistry::ModelWhitelisted { modelId: m1 }),
            log(wr, WorkerRegistry::ModelWhitelisted { modelId: m2 }),
            log(wr, WorkerRegistry::CapabilityRegistered { bit: 1, name: "vision".into() }),
        ],
        vec![
            log(wr, WorkerRegistry::WorkerRegistered { worker: w1, encryptionPubKey: key(&p256) }),
            log(wr, WorkerRegistry::StakeTopUp { worker: w1, amount: ether(150), newStake: ether(150) }),
            log(wr, WorkerRegistry::ModelAdded { worker: w1, modelId: m1 }),
            log(wr, WorkerRegistry::WorkerCapabilitiesSet { worker: w1, mask: n(2) }),
            log(wr, WorkerRegistry::WorkerRegistered { worker: w2, encryptionPubKey: key(&x25519) }),
            log(wr, WorkerRegistry::StakeTopUp { worker: w2, amount: ether(120), newStake: ether(120) }),
            log(wr, WorkerRegistry::ModelAdded { worker: w2, modelId: m2 }),
        ],
        vec![
            log(jr, JobRegistry::Deposited { user, amount: n(1_000_000), newBalance: n(1_000_000) }),
            log(
                jr,
                JobRegistry::SessionCreated {
                    sessionId: n(1),
                    user,
                    modelId: m1,
                    worker: w1,
                    encWorkerKey: wrap(&p256, 3),
                    encDisputerKey: wrap(&p256, 4),
                },
            ),
        ],
        vec![
            log(jr, JobRegistry::JobSubmitted { jobId: n(1), sessionId: n(1), worker: w1 }),
            log(jr, JobRegistry::JobAcknowledged { jobId: n(1), worker: w1 }),
            log(jr, JobRegistry::JobSubmitted { jobId: n(2), sessionId: n(1), worker: w1 }),
        ],
        vec![log(
            jr,
            JobRegistry::JobCompleted {
                jobId: n(1),
                worker: w1,
                responseBlobHash: word(b'b', 1),
                responseCiphertextHash: word(b'c', 1),
            },
        )],
        vec![
            log(jr, JobRegistry::RefundCreditedToBalance { user, jobId: n(2), amount: n(1_000) }),
            log(jr, JobRegistry::JobTimedOut { jobId: n(2), worker: w1, slashAmount: ether(5) }),
            log(jr, JobRegistry::KeeperBountyPaid { jobId: n(2), keeper, amount: n(10), kind: 1 }),
            log(wr, WorkerRegistry::WorkerSlashed { worker: w1, amount: ether(5), newStake: ether(145) }),
        ],
        vec![
            log(
                jr,
                JobRegistry::JobReleased {
                    jobId: n(1),
                    workerShare: n(800),
                    protocolShare: n(150),
                    feePoolShare: n(50),
                },
            ),
            log(jr, JobRegistry::KeeperBountyPaid { jobId: n(1), keeper, amount: n(5), kind: 0 }),
            log(jr, JobRegistry::JobSubmitted { jobId: n(3), sessionId: n(1), worker: w1 }),
            log(jr, JobRegistry::JobAcknowledged { jobId: n(3), worker: w1 }),
        ],
        vec![
            log(
                jr,
                JobRegistry::JobCompleted {
                    jobId: n(3),
                    worker: w1,
                    responseBlobHash: word(b'b', 3),
                    responseCiphertextHash: word(b'c', 3),
                },
            ),
            log(jr, JobRegistry::DisputeCreated { jobId: n(3), disputer }),
        ],
        vec![log(jr, JobRegistry::DisputeResolved { jobId: n(3), workerGuilty: true, similarityScore: n(1_200) })],
        vec![
            log(MANAGER, SessionManager::SessionRequested { reqId: n(1), user, modelId: m2, requestBlock: n(10) }),
            log(MANAGER, SessionManager::SessionClaimed { reqId: n(1), worker: w2 }),
        ],
        vec![
            log(
                jr,
                JobRegistry::SessionCreated {
                    sessionId: n(2),
                    user,
                    modelId: m2,
                    worker: w2,
                    encWorkerKey: wrap(&x25519, 5),
                    encDisputerKey: wrap(&x25519, 6),
                },
            ),
            log(MANAGER, SessionManager::SessionReady { reqId: n(1), sessionId: n(2) }),
            log(jr, JobRegistry::JobSubmitted { jobId: n(4), sessionId: n(2), worker: w2 }),
        ],
    ]
}

/// A view call's answer as the indexer records it (`indexer/src/facts.rs`).
fn fact<C: SolCall>(contract: Address, id: u64, block: u64, ret: &C::Return) -> CallResult {
    CallResult {
        contract,
        method: C::SIGNATURE.into(),
        id,
        block_number: block,
        data: Bytes::from(C::abi_encode_returns(ret)),
    }
}

/// What the indexer fetches with a SessionRequested (the projector refuses the event without
/// them): the request, open until 100 blocks after it was made, and its required capabilities.
fn request_facts(event: &Event, block: u64) -> Vec<CallResult> {
    let Event::SessionRequested { manager, req, user, model, request_block } = *event else { return Vec::new() };
    let request = SessionManager::Request {
        user,
        modelId: model,
        requestBlock: request_block,
        expiry: request_block + 100,
        worker: Address::ZERO,
        status: 0,
    };
    vec![
        fact::<SessionManager::getRequestCall>(manager, req, block, &request),
        fact::<SessionManager::getRequiredCapabilitiesCall>(manager, req, block, &U256::from(2)),
    ]
}

/// Builds the store at `dir/lcw.db` and returns its path.
///
/// The raw layer is written to `dir/raw.db` and copied to `lcw.db` (`VACUUM INTO`); the
/// projections are then rebuilt from `raw.db` into `lcw.db`. `rebuild` writes its target without a journal, which SQLite
/// refuses on a file that another connection (the source) has open in WAL mode, so source and
/// target are two files, as in `lcw replay`.
pub fn build(dir: &Path) -> Result<PathBuf, StoreError> {
    let raw = dir.join("raw.db");
    let db = dir.join("lcw.db");
    let identity = Identity { chain_id: 31_337, contracts: CONTRACTS, start_block: 1 };
    let decoder = Decoder::new(CONTRACTS);
    let blocks = history();
    let head = blocks.len() as u64;
    let now = lcw_schema::store::unix_now();
    let time = |block: u64| now - (head - block) * BLOCK_SECS;
    let hash = |block: u64| word(b'h', block);
    {
        let mut store = Store::open(&raw, &identity)?;
        let tx = store.begin()?;
        let mut total = 0;
        for (i, logs) in blocks.into_iter().enumerate() {
            let number = i as u64 + 1;
            let count = logs.len() as u64;
            for (index, (address, data)) in logs.into_iter().enumerate() {
                let decoded = decoder.decode(&Log { address, data: data.clone() });
                if let Ok(event) = &decoded.event {
                    for fact in request_facts(event, number) {
                        fact.put(&tx)?;
                    }
                }
                let (topics, data) = data.split();
                RawLog {
                    block_number: number,
                    log_index: index as u64,
                    block_hash: hash(number),
                    block_timestamp: time(number),
                    tx_hash: word(b't', number * 100 + index as u64),
                    tx_index: index as u64,
                    address,
                    topics,
                    data,
                    event: decoded.name.map(str::to_owned),
                    decode_error: decoded.event.err(),
                    job_id: decoded.job_id,
                }
                .insert(&tx)?;
            }
            let parent_hash = Some(hash(number - 1));
            BlockRow { number, hash: hash(number), parent_hash, timestamp: time(number), log_count: count }.put(&tx)?;
            total += count;
        }
        RangeRow { from_block: 1, to_block: head, log_count: total, source: "backfill".into() }.insert(&tx)?;
        Cursor { block_number: head, block_hash: hash(head), finalized_number: head }.set(&tx)?;
        meta_set(&tx, lcw_indexer::writer::UNDO_FLOOR, &head.to_string())?;
        tx.commit()?;
        store.conn().execute("VACUUM INTO ?1", [db.to_string_lossy()])?;
    }
    let source = Store::open_readonly(&raw)?;
    let mut target = Store::open(&db, &identity)?;
    lcw_indexer::replay::rebuild(&source, &mut target)?;
    Ok(db)
}
