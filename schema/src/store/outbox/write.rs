//! Writers of the outbox tables.

use alloy::primitives::{Address, B256, U256};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{AttemptFees, Ceiling, Kind, Lane, Status};
use crate::store::StoreResult;

/// A planned transaction, written before it is signed.
#[derive(Debug, Clone)]
pub struct NewIntent<'a> {
    /// Signing key.
    pub sender: Address,
    /// What it does.
    pub kind: Kind,
    /// Its lane.
    pub lane: Lane,
    /// Target.
    pub to: Address,
    /// Calldata.
    pub calldata: &'a [u8],
    /// Value.
    pub value: U256,
    /// Gas limit.
    pub gas_limit: u64,
    /// Jobs it acts on.
    pub jobs: &'a [u64],
    /// Head when planned.
    pub created_head: u64,
    /// The block it is meant for.
    pub target_block: u64,
    /// Its fee ceiling.
    pub cap: Ceiling,
    /// The chain it is signed for.
    pub chain_id: u64,
    /// Unix seconds.
    pub now: u64,
}

/// The store refused an intent: one of its jobs already has a live transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInFlight {
    /// The job.
    pub job: u64,
    /// The live transaction that holds it, when it could be read: (id, kind, lane).
    pub holder: Option<(i64, String, String)>,
}

impl std::fmt::Display for JobInFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job {} already has a live outbox transaction", self.job)?;
        if let Some((id, kind, lane)) = &self.holder {
            write!(f, " (#{id}, {kind}, {lane} lane)")?;
        }
        Ok(())
    }
}

/// Records an intent and its jobs. `Ok(Err(..))` when the store's trigger refuses a job that
/// already has a live transaction; the caller then drops `tx` (nothing was written).
pub fn insert_intent(tx: &Transaction<'_>, n: &NewIntent<'_>) -> StoreResult<Result<i64, JobInFlight>> {
    tx.prepare_cached(
        "INSERT INTO outbox (sender, kind, to_address, calldata, value_wei, gas_limit, status, created_at,
                             created_head, target_block, lane, cap_per_gas, cap_per_blob_gas, chain_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'intent', ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        n.sender.as_slice(),
        n.kind.as_str(),
        n.to.as_slice(),
        n.calldata,
        n.value.to_string(),
        n.gas_limit as i64,
        n.now as i64,
        n.created_head as i64,
        n.target_block as i64,
        n.lane.as_str(),
        n.cap.per_gas.to_string(),
        n.cap.per_blob_gas.to_string(),
        n.chain_id as i64,
    ])?;
    let id = tx.last_insert_rowid();
    let mut stmt = tx.prepare_cached("INSERT INTO outbox_jobs (job_id, outbox_id) VALUES (?1, ?2)")?;
    for job in n.jobs {
        match stmt.execute(params![*job as i64, id]) {
            Ok(_) => {}
            Err(e) if is_job_in_flight(&e) => {
                let holder = tx
                    .query_row(
                        "SELECT o.id, o.kind, o.lane FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
                         WHERE oj.job_id = ?1 AND o.status IN ('intent', 'sent') AND o.id <> ?2 LIMIT 1",
                        params![*job as i64, id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                return Ok(Err(JobInFlight { job: *job, holder }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Ok(id))
}

/// The `outbox_one_live_per_job` trigger's refusal.
fn is_job_in_flight(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, Some(m))
        if f.code == rusqlite::ErrorCode::ConstraintViolation && m.contains("job already has a live outbox transaction"))
}

/// The intent `id` is signed at `nonce`: it holds the nonce from now on.
pub fn set_signed(conn: &Connection, id: i64, nonce: u64, head: u64, now: u64) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE outbox SET nonce = ?2, status = 'sent', sent_at = ?3, created_head = ?4 WHERE id = ?1",
    )?
    .execute(params![id, nonce as i64, now as i64, head as i64])?;
    Ok(())
}

/// One signed version of a transaction.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    /// The outbox row.
    pub outbox_id: i64,
    /// 0 for the first signing, then one more per replacement.
    pub attempt: u32,
    /// Transaction hash.
    pub hash: B256,
    /// Network encoding (with the sidecar of a type-3 transaction).
    pub raw: &'a [u8],
    /// Its fees.
    pub fees: AttemptFees,
    /// Unix seconds.
    pub now: u64,
}

/// Stores a signed version.
pub fn insert_attempt(conn: &Connection, a: &NewAttempt<'_>) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO outbox_attempts (outbox_id, attempt, tx_hash, raw_tx, max_fee_per_gas, max_priority_fee_per_gas,
                                      max_fee_per_blob_gas, signed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        a.outbox_id,
        a.attempt,
        a.hash.as_slice(),
        a.raw,
        a.fees.max_fee.to_string(),
        a.fees.tip.to_string(),
        a.fees.blob_fee.map(|f| f.to_string()),
        a.now as i64,
    ])?;
    Ok(())
}

/// How a broadcast went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast<'a> {
    /// A node took it (or already had it).
    Accepted,
    /// The node refused it, with its reason.
    Refused(&'a str),
    /// No usable answer (transport failure, or its nonce is taken): it counts as this block's try.
    Unanswered,
}

/// Records a broadcast of row `id`'s latest version at head `head`. A refusal's reason is written
/// only when it differs from the one stored; the head the refusals began at is kept.
pub fn record_broadcast(conn: &Connection, id: i64, head: u64, outcome: Broadcast<'_>) -> StoreResult<()> {
    match outcome {
        Broadcast::Accepted => {
            conn.prepare_cached(
                "UPDATE outbox SET broadcasts = broadcasts + 1, broadcast_block = ?2, accepted_block = ?2
                 WHERE id = ?1",
            )?
            .execute(params![id, head as i64])?;
            conn.prepare_cached(
                "UPDATE outbox SET refusal = NULL, refused_block = NULL WHERE id = ?1 AND refusal IS NOT NULL",
            )?
            .execute([id])?;
        }
        Broadcast::Unanswered => {
            conn.prepare_cached("UPDATE outbox SET broadcasts = broadcasts + 1, broadcast_block = ?2 WHERE id = ?1")?
                .execute(params![id, head as i64])?;
        }
        Broadcast::Refused(reason) => {
            conn.prepare_cached("UPDATE outbox SET broadcasts = broadcasts + 1, broadcast_block = ?2 WHERE id = ?1")?
                .execute(params![id, head as i64])?;
            conn.prepare_cached(
                "UPDATE outbox SET refusal = ?2, refused_block = coalesce(refused_block, ?3)
                 WHERE id = ?1 AND refusal IS NOT ?2",
            )?
            .execute(params![id, reason, head as i64])?;
        }
    }
    Ok(())
}

/// A fee bump of row `id` was tried at `head` and the node did not take it.
pub fn record_bump_refused(conn: &Connection, id: i64, head: u64) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE outbox SET bump_tried_block = ?2, broadcasts = broadcasts + 1, broadcast_block = ?2 WHERE id = ?1",
    )?
    .execute(params![id, head as i64])?;
    Ok(())
}

/// A replacement of row `id` (its version `a.attempt`) that a node accepted at `head`.
pub fn record_bump(tx: &Transaction<'_>, a: &NewAttempt<'_>, head: u64) -> StoreResult<()> {
    insert_attempt(tx, a)?;
    tx.prepare_cached(
        "UPDATE outbox SET created_head = ?2, bump_tried_block = ?2, broadcasts = broadcasts + 1,
                broadcast_block = ?2, accepted_block = ?2, refusal = NULL, refused_block = NULL
         WHERE id = ?1",
    )?
    .execute(params![a.outbox_id, head as i64])?;
    Ok(())
}

/// What a receipt said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Status 1.
    pub ok: bool,
    /// Block number.
    pub block: u64,
    /// Block hash.
    pub block_hash: B256,
    /// The version that was mined.
    pub tx_hash: B256,
    /// Gas used.
    pub gas_used: u64,
}

/// Row `id` was mined (or reverted).
pub fn mark_mined(conn: &Connection, id: i64, r: &Receipt) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE outbox SET status = ?2, mined_block = ?3, mined_hash = ?4, mined_tx = ?5, gas_used = ?6, note = NULL,
                refusal = NULL, refused_block = NULL
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        if r.ok { Status::Mined } else { Status::Reverted }.as_str(),
        r.block as i64,
        r.block_hash.as_slice(),
        r.tx_hash.as_slice(),
        r.gas_used as i64
    ])?;
    Ok(())
}

/// Row `id` will never be mined (its jobs return to the schedule); `note` says why. A mined row
/// dropped after a reorg loses its receipt fields.
pub fn mark_dropped(conn: &Connection, id: i64, note: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE outbox SET status = 'dropped', note = ?2, mined_block = NULL, mined_hash = NULL, mined_tx = NULL,
                gas_used = NULL
         WHERE id = ?1",
    )?
    .execute(params![id, note])?;
    Ok(())
}

/// Drops the unsigned intents of `sender`'s `lane`; returns how many.
pub fn drop_intents(conn: &Connection, sender: Address, lane: Lane, note: &str) -> StoreResult<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE outbox SET status = 'dropped', note = ?3 WHERE sender = ?1 AND lane = ?2 AND status = 'intent'",
        )?
        .execute(params![sender.as_slice(), lane.as_str(), note])?)
}

/// A mined row whose block left the canonical chain goes back to `sent`.
pub fn back_to_sent(conn: &Connection, id: i64, note: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE outbox SET status = 'sent', mined_block = NULL, mined_hash = NULL, mined_tx = NULL, gas_used = NULL,
                note = ?2, broadcast_block = NULL
         WHERE id = ?1",
    )?
    .execute(params![id, note])?;
    Ok(())
}

/// A transfer to self that takes a nonce.
#[derive(Debug, Clone)]
pub struct NewFiller<'a> {
    /// Signing key (also the target).
    pub sender: Address,
    /// `Cancel` (takes a row's nonce) or `Fill` (a nonce no row held).
    pub kind: Kind,
    /// The lane that tracks it.
    pub lane: Lane,
    /// Nonce.
    pub nonce: u64,
    /// Head.
    pub head: u64,
    /// Why.
    pub note: &'a str,
    /// Its ceiling.
    pub cap: Ceiling,
    /// Chain.
    pub chain_id: u64,
    /// Unix seconds.
    pub now: u64,
}

/// Inserts a signed transfer to self (status `sent`); returns its id. The caller stores its
/// attempt in the same transaction.
pub fn insert_filler(conn: &Connection, f: &NewFiller<'_>) -> StoreResult<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (sender, kind, to_address, calldata, value_wei, gas_limit, nonce, status, created_at,
                             created_head, sent_at, note, lane, cap_per_gas, cap_per_blob_gas, chain_id)
         VALUES (?1, ?2, ?1, x'', '0', 21000, ?3, 'sent', ?4, ?5, ?4, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        f.sender.as_slice(),
        f.kind.as_str(),
        f.nonce as i64,
        f.now as i64,
        f.head as i64,
        f.note,
        f.lane.as_str(),
        f.cap.per_gas.to_string(),
        f.cap.per_blob_gas.to_string(),
        f.chain_id as i64,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// A dropped row signed again at its own nonce (a gap repair): it is live again.
pub fn resign(tx: &Transaction<'_>, a: &NewAttempt<'_>, head: u64, note: &str) -> StoreResult<()> {
    insert_attempt(tx, a)?;
    tx.prepare_cached(
        "UPDATE outbox SET status = 'sent', created_head = ?2, sent_at = ?3, note = ?4, broadcast_block = NULL,
                refusal = NULL, refused_block = NULL, bump_tried_block = NULL
         WHERE id = ?1",
    )?
    .execute(params![a.outbox_id, head as i64, a.now as i64, note])?;
    Ok(())
}
