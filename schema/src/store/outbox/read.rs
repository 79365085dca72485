//! Readers of the outbox tables.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy::primitives::{Address, B256, Bytes, U256};
use rusqlite::{Connection, OptionalExtension, params};

use super::{AttemptFees, Ceiling, Kind, Lane, Status, ceiling, corrupt, wei};
use crate::store::StoreResult;

/// The highest nonce a row of `sender` holds (sent, mined or reverted), any lane.
pub fn max_held_nonce(conn: &Connection, sender: Address) -> StoreResult<Option<u64>> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT max(nonce) FROM outbox WHERE sender = ?1 AND status IN ('sent', 'mined', 'reverted')")?
        .query_row([sender.as_slice()], |r| r.get(0))?;
    Ok(n.map(|n| n as u64))
}

/// Nonces at or above `from` that rows of `sender` hold (sent, mined or reverted), ascending.
pub fn held_nonces(conn: &Connection, sender: Address, from: u64) -> StoreResult<Vec<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT nonce FROM outbox WHERE sender = ?1 AND status IN ('sent', 'mined', 'reverted') AND nonce >= ?2
         ORDER BY nonce",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), from as i64], |r| r.get::<_, i64>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|n| n as u64).collect())
}

/// A live (sent) transaction, as the fee and nonce policy sees it: no calldata, no raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTx {
    /// Row id.
    pub id: i64,
    /// Lane.
    pub lane: Lane,
    /// Kind.
    pub kind: Kind,
    /// Nonce.
    pub nonce: u64,
    /// Fee ceiling (None: signed before ceilings were stored).
    pub cap: Option<Ceiling>,
    /// Signed versions so far.
    pub attempts: u32,
    /// Fees of the latest version.
    pub last: AttemptFees,
    /// Head when the latest version was signed.
    pub signed_head: u64,
    /// Broadcasts so far.
    pub broadcasts: u64,
    /// Head at the last broadcast.
    pub broadcast_block: Option<u64>,
    /// Head at the last broadcast a node accepted.
    pub accepted_block: Option<u64>,
    /// The node's reason while it refuses the latest version.
    pub refusal: Option<String>,
    /// Head at which the current refusals began.
    pub refused_block: Option<u64>,
    /// Head of the last bump tried.
    pub bump_tried_block: Option<u64>,
}

/// Every live transaction of `sender`, all lanes, by nonce.
pub fn live(conn: &Connection, sender: Address) -> StoreResult<Vec<LiveTx>> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.lane, o.kind, o.nonce, o.cap_per_gas, o.cap_per_blob_gas, o.created_head, o.broadcasts,
                o.broadcast_block, o.accepted_block, o.refusal, o.refused_block, o.bump_tried_block,
                a.attempt, a.max_fee_per_gas, a.max_priority_fee_per_gas, a.max_fee_per_blob_gas
         FROM outbox o JOIN outbox_attempts a ON a.outbox_id = o.id
         WHERE o.sender = ?1 AND o.status = 'sent'
           AND a.attempt = (SELECT max(attempt) FROM outbox_attempts WHERE outbox_id = o.id)
         ORDER BY o.nonce",
    )?;
    type Raw = (i64, String, String, i64, Option<String>, Option<String>, i64, i64);
    type Raw2 =
        (Option<i64>, Option<i64>, Option<String>, Option<i64>, Option<i64>, u32, String, String, Option<String>);
    let rows = stmt.query_map([sender.as_slice()], |r| {
        let a: Raw = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
        let b: Raw2 =
            (r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?, r.get(16)?);
        Ok((a, b))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let ((id, lane, kind, nonce, cap_gas, cap_blob, signed, broadcasts), b) = row?;
        let (broadcast_block, accepted_block, refusal, refused_block, bump_tried, attempt, fee, tip, blob) = b;
        let what = |col: &str| format!("outbox #{id} {col}");
        out.push(LiveTx {
            id,
            lane: Lane::parse(&lane)?,
            kind: Kind::parse(&kind)?,
            nonce: nonce as u64,
            cap: ceiling(id, cap_gas, cap_blob)?,
            attempts: attempt + 1,
            last: AttemptFees {
                max_fee: wei(&what("max_fee_per_gas"), &fee)?,
                tip: wei(&what("max_priority_fee_per_gas"), &tip)?,
                blob_fee: blob.map(|b| wei(&what("max_fee_per_blob_gas"), &b)).transpose()?,
            },
            signed_head: signed as u64,
            broadcasts: broadcasts as u64,
            broadcast_block: broadcast_block.map(|b| b as u64),
            accepted_block: accepted_block.map(|b| b as u64),
            refusal,
            refused_block: refused_block.map(|b| b as u64),
            bump_tried_block: bump_tried.map(|b| b as u64),
        });
    }
    Ok(out)
}

/// Hashes of every signed version of row `id` (at most the attempt bound), for receipt lookups.
pub fn attempt_hashes(conn: &Connection, id: i64) -> StoreResult<Vec<B256>> {
    let mut stmt = conn.prepare_cached("SELECT tx_hash FROM outbox_attempts WHERE outbox_id = ?1 ORDER BY attempt")?;
    let rows = stmt.query_map([id], |r| r.get::<_, Vec<u8>>(0))?;
    let mut out = Vec::new();
    for h in rows {
        let h = h?;
        if h.len() != 32 {
            return Err(corrupt(&format!("outbox #{id} attempt hash"), &format!("{} bytes", h.len())));
        }
        out.push(B256::from_slice(&h));
    }
    Ok(out)
}

/// The raw bytes of row `id`'s latest version.
pub fn latest_raw(conn: &Connection, id: i64) -> StoreResult<Option<Bytes>> {
    Ok(conn
        .prepare_cached("SELECT raw_tx FROM outbox_attempts WHERE outbox_id = ?1 ORDER BY attempt DESC LIMIT 1")?
        .query_row([id], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
        .map(Bytes::from))
}

/// What a transaction does on chain, to sign it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBody {
    /// Target.
    pub to: Address,
    /// Calldata.
    pub calldata: Bytes,
    /// Value.
    pub value: U256,
    /// Gas limit.
    pub gas_limit: u64,
}

/// One outbox row, without its calldata and attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Signing key.
    pub sender: Address,
    /// What it does.
    pub kind: Kind,
    /// Lane.
    pub lane: Lane,
    /// Status.
    pub status: Status,
    /// Nonce, once signed.
    pub nonce: Option<u64>,
    /// Fee ceiling.
    pub cap: Option<Ceiling>,
    /// The chain it was signed for.
    pub chain_id: Option<u64>,
    /// Head at the last broadcast a node accepted.
    pub accepted_block: Option<u64>,
    /// The node's reason while it refuses the row.
    pub refusal: Option<String>,
    /// Mined block (mined or reverted rows).
    pub mined_block: Option<u64>,
    /// Jobs it acts on.
    pub jobs: Vec<u64>,
}

/// Row `id`, if it exists.
pub fn row(conn: &Connection, id: i64) -> StoreResult<Option<OutboxRow>> {
    type Raw = (Vec<u8>, String, String, String, Option<i64>, Option<String>, Option<String>, Option<i64>);
    type Rest = (Option<i64>, Option<String>, Option<i64>);
    let raw: Option<(Raw, Rest)> = conn
        .prepare_cached(
            "SELECT sender, kind, lane, status, nonce, cap_per_gas, cap_per_blob_gas, chain_id, accepted_block,
                    refusal, mined_block
             FROM outbox WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?),
                (r.get(8)?, r.get(9)?, r.get(10)?),
            ))
        })
        .optional()?;
    let Some(((sender, kind, lane, status, nonce, cap_gas, cap_blob, chain_id), (accepted, refusal, mined))) = raw
    else {
        return Ok(None);
    };
    if sender.len() != 20 {
        return Err(corrupt(&format!("outbox #{id} sender"), &format!("{} bytes", sender.len())));
    }
    Ok(Some(OutboxRow {
        id,
        sender: Address::from_slice(&sender),
        kind: Kind::parse(&kind)?,
        lane: Lane::parse(&lane)?,
        status: Status::parse(&status)?,
        nonce: nonce.map(|n| n as u64),
        cap: ceiling(id, cap_gas, cap_blob)?,
        chain_id: chain_id.map(|c| c as u64),
        accepted_block: accepted.map(|b| b as u64),
        refusal,
        mined_block: mined.map(|b| b as u64),
        jobs: jobs_of(conn, id)?,
    }))
}

/// Target, calldata, value and gas limit of row `id`.
pub fn body(conn: &Connection, id: i64) -> StoreResult<TxBody> {
    let (to, calldata, value, gas_limit): (Vec<u8>, Vec<u8>, String, i64) = conn
        .prepare_cached("SELECT to_address, calldata, value_wei, gas_limit FROM outbox WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    if to.len() != 20 {
        return Err(corrupt(&format!("outbox #{id} to_address"), &format!("{} bytes", to.len())));
    }
    let value = U256::from_str_radix(&value, 10).map_err(|_| corrupt(&format!("outbox #{id} value_wei"), &value))?;
    Ok(TxBody { to: Address::from_slice(&to), calldata: Bytes::from(calldata), value, gas_limit: gas_limit as u64 })
}

/// Jobs row `id` acts on, ascending.
pub fn jobs_of(conn: &Connection, id: i64) -> StoreResult<Vec<u64>> {
    let mut stmt = conn.prepare_cached("SELECT job_id FROM outbox_jobs WHERE outbox_id = ?1 ORDER BY job_id")?;
    let rows = stmt.query_map([id], |r| r.get::<_, i64>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
}

/// Mined or reverted rows of `sender`'s `lane` in blocks above `above`: (id, block, block hash).
pub fn recent_mined(conn: &Connection, sender: Address, lane: Lane, above: u64) -> StoreResult<Vec<(i64, u64, B256)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, mined_block, mined_hash FROM outbox
         WHERE sender = ?1 AND lane = ?2 AND status IN ('mined', 'reverted') AND mined_block > ?3",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str(), above as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, block, hash) = row?;
        if hash.len() != 32 {
            return Err(corrupt(&format!("outbox #{id} mined_hash"), &format!("{} bytes", hash.len())));
        }
        out.push((id, block as u64, B256::from_slice(&hash)));
    }
    Ok(out)
}

/// The row that last held a nonce no row holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTx {
    /// Row id.
    pub id: i64,
    /// Lane.
    pub lane: Lane,
    /// Kind.
    pub kind: Kind,
    /// Fee ceiling.
    pub cap: Option<Ceiling>,
    /// Signed versions.
    pub attempts: u32,
    /// Fees of its latest version.
    pub last: AttemptFees,
    /// Jobs it acts on.
    pub jobs: Vec<u64>,
    /// None of its jobs is in another live transaction, or in a mined one written after it.
    pub jobs_free: bool,
}

/// The latest dropped row of `sender` at `nonce`, if any.
pub fn dropped_at(conn: &Connection, sender: Address, nonce: u64) -> StoreResult<Option<DroppedTx>> {
    type Raw = (i64, String, String, Option<String>, Option<String>);
    let raw: Option<Raw> = conn
        .prepare_cached(
            "SELECT id, lane, kind, cap_per_gas, cap_per_blob_gas FROM outbox
             WHERE sender = ?1 AND nonce = ?2 AND status = 'dropped' ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![sender.as_slice(), nonce as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((id, lane, kind, cap_gas, cap_blob)) = raw else { return Ok(None) };
    let (attempts, last) = last_attempt(conn, id)?.map(|(a, f)| (a + 1, f)).unwrap_or_default();
    let busy: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox_jobs mine JOIN outbox_jobs other ON other.job_id = mine.job_id
                            JOIN outbox o ON o.id = other.outbox_id
                            WHERE mine.outbox_id = ?1 AND o.id <> ?1
                              AND (o.status IN ('intent', 'sent') OR (o.status IN ('mined', 'reverted') AND o.id > ?1)))",
        )?
        .query_row([id], |r| r.get(0))?;
    Ok(Some(DroppedTx {
        id,
        lane: Lane::parse(&lane)?,
        kind: Kind::parse(&kind)?,
        cap: ceiling(id, cap_gas, cap_blob)?,
        attempts,
        last,
        jobs: jobs_of(conn, id)?,
        jobs_free: !busy,
    }))
}

/// The index and fees of row `id`'s latest version, if it was ever signed.
pub fn last_attempt(conn: &Connection, id: i64) -> StoreResult<Option<(u32, AttemptFees)>> {
    let last: Option<(u32, String, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT attempt, max_fee_per_gas, max_priority_fee_per_gas, max_fee_per_blob_gas FROM outbox_attempts
             WHERE outbox_id = ?1 ORDER BY attempt DESC LIMIT 1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let what = |col: &str| format!("outbox #{id} {col}");
    let Some((attempt, fee, tip, blob)) = last else { return Ok(None) };
    Ok(Some((
        attempt,
        AttemptFees {
            max_fee: wei(&what("max_fee_per_gas"), &fee)?,
            tip: wei(&what("max_priority_fee_per_gas"), &tip)?,
            blob_fee: blob.map(|b| wei(&what("max_fee_per_blob_gas"), &b)).transpose()?,
        },
    )))
}

/// The highest nonce of `sender`'s live (sent) rows, any lane.
pub fn max_live_nonce(conn: &Connection, sender: Address) -> StoreResult<Option<u64>> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT max(nonce) FROM outbox WHERE sender = ?1 AND status = 'sent'")?
        .query_row([sender.as_slice()], |r| r.get(0))?;
    Ok(n.map(|n| n as u64))
}

/// Whether a row of `sender` holds a nonce above `nonce`.
pub fn holds_above(conn: &Connection, sender: Address, nonce: u64) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE sender = ?1 AND nonce > ?2
                            AND status IN ('sent', 'mined', 'reverted'))",
        )?
        .query_row(params![sender.as_slice(), nonce as i64], |r| r.get(0))?)
}

/// Chain ids of `sender`'s live (intent or sent) rows, ascending (None: a row with no chain id).
pub fn live_chain_ids(conn: &Connection, sender: Address) -> StoreResult<Vec<Option<u64>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT chain_id FROM outbox WHERE sender = ?1 AND status IN ('intent', 'sent') ORDER BY chain_id",
    )?;
    let rows = stmt.query_map([sender.as_slice()], |r| r.get::<_, Option<i64>>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|c| c.map(|c| c as u64)).collect())
}

/// A live transaction the node refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedTx {
    /// Row id.
    pub id: i64,
    /// Kind.
    pub kind: Kind,
    /// Nonce.
    pub nonce: u64,
    /// Jobs it acts on.
    pub jobs: Vec<u64>,
    /// The node's reason.
    pub reason: String,
    /// Head at which the refusals began.
    pub since_block: u64,
}

/// Live transactions of `sender`'s `lane` that the node refuses, by nonce.
pub fn refused(conn: &Connection, sender: Address, lane: Lane) -> StoreResult<Vec<RefusedTx>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, nonce, refusal, refused_block FROM outbox
         WHERE sender = ?1 AND lane = ?2 AND status = 'sent' AND refusal IS NOT NULL ORDER BY nonce",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str()], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?, r.get(4)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, nonce, reason, since): (i64, String, i64, String, Option<i64>) = row?;
        out.push(RefusedTx {
            id,
            kind: Kind::parse(&kind)?,
            nonce: nonce as u64,
            jobs: jobs_of(conn, id)?,
            reason,
            since_block: since.unwrap_or_default() as u64,
        });
    }
    Ok(out)
}

/// Blob gas of one blob (EIP-4844).
const BLOB_GAS: u64 = 131_072;

/// The most the live transactions of `sender` (every lane) can take from its wallet if they are
/// all mined at their latest fees: gas limit × max fee per gas, the blob gas of a blob
/// transaction at its max fee per blob gas, and the value. Saturates.
pub fn live_cost(conn: &Connection, sender: Address) -> StoreResult<u128> {
    let mut stmt = conn.prepare_cached(
        "SELECT o.id, o.gas_limit, o.value_wei, a.max_fee_per_gas, a.max_fee_per_blob_gas
         FROM outbox o JOIN outbox_attempts a ON a.outbox_id = o.id
         WHERE o.sender = ?1 AND o.status = 'sent'
           AND a.attempt = (SELECT max(attempt) FROM outbox_attempts WHERE outbox_id = o.id)",
    )?;
    let rows = stmt.query_map([sender.as_slice()], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut total: u128 = 0;
    for row in rows {
        let (id, gas, value, fee, blob_fee) = row?;
        let what = |col: &str| format!("outbox #{id} {col}");
        let gas = u128::try_from(gas).unwrap_or_default().saturating_mul(wei(&what("max_fee_per_gas"), &fee)?);
        let blob = match blob_fee {
            Some(f) => wei(&what("max_fee_per_blob_gas"), &f)?.saturating_mul(u128::from(BLOB_GAS)),
            None => 0,
        };
        total = total.saturating_add(gas).saturating_add(blob).saturating_add(wei(&what("value_wei"), &value)?);
    }
    Ok(total)
}

/// Jobs with a live (intent or sent) transaction of `sender`'s `lane`.
pub fn live_jobs(conn: &Connection, sender: Address, lane: Lane) -> StoreResult<HashSet<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
         WHERE o.status IN ('intent', 'sent') AND o.sender = ?1 AND o.lane = ?2",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str()], |r| r.get::<_, i64>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
}

/// The live (intent or sent) transaction of each job of `sender`'s `lane`: its outbox id.
pub fn live_by_job(conn: &Connection, sender: Address, lane: Lane) -> StoreResult<HashMap<u64, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT oj.job_id, o.id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
         WHERE o.status IN ('intent', 'sent') AND o.sender = ?1 AND o.lane = ?2",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str()], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Jobs of settler-lane transactions of any key mined at or after `block`.
pub fn recently_mined_jobs(conn: &Connection, block: u64) -> StoreResult<HashSet<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
         WHERE o.status = 'mined' AND o.lane = 'settler' AND o.mined_block >= ?1",
    )?;
    let rows = stmt.query_map([block as i64], |r| r.get::<_, i64>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
}

/// Jobs of `sender`'s transactions of `kind` mined at or after `block`.
pub fn mined_since(conn: &Connection, sender: Address, kind: &str, block: u64) -> StoreResult<HashSet<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
         WHERE o.sender = ?1 AND o.kind = ?2 AND o.status = 'mined' AND o.mined_block >= ?3",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), kind, block as i64], |r| r.get::<_, i64>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
}

/// Rows of `sender`'s `lane` by status.
pub fn counts(conn: &Connection, sender: Address, lane: Lane) -> StoreResult<BTreeMap<String, u64>> {
    let mut stmt =
        conn.prepare_cached("SELECT status, count(*) FROM outbox WHERE sender = ?1 AND lane = ?2 GROUP BY status")?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (status, n) = row?;
        out.insert(Status::parse(&status)?.as_str().to_owned(), n);
    }
    Ok(out)
}

/// Calldata of the live (intent or sent) transactions of `kind` in `sender`'s `lane`.
pub fn live_calls(conn: &Connection, sender: Address, lane: Lane, kind: &str) -> StoreResult<Vec<Bytes>> {
    let mut stmt = conn.prepare_cached(
        "SELECT calldata FROM outbox WHERE sender = ?1 AND lane = ?2 AND kind = ?3 AND status IN ('intent', 'sent')",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str(), kind], |r| r.get::<_, Vec<u8>>(0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(Bytes::from).collect())
}

/// Calldata, mined block and success of the transactions of `kind` in `sender`'s `lane` mined or
/// reverted at or after `block`.
pub fn settled_calls(
    conn: &Connection,
    sender: Address,
    lane: Lane,
    kind: &str,
    block: u64,
) -> StoreResult<Vec<(Bytes, u64, bool)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT calldata, mined_block, status = 'mined' FROM outbox
         WHERE sender = ?1 AND lane = ?2 AND kind = ?3 AND status IN ('mined', 'reverted') AND mined_block >= ?4",
    )?;
    let rows = stmt.query_map(params![sender.as_slice(), lane.as_str(), kind, block as i64], |r| {
        Ok((Bytes::from(r.get::<_, Vec<u8>>(0)?), r.get::<_, i64>(1)? as u64, r.get::<_, bool>(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The id of a live (intent or sent) transaction of `sender` of `kind`, any lane.
pub fn live_of_kind(conn: &Connection, sender: Address, kind: &str) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM outbox WHERE sender = ?1 AND kind = ?2 AND status IN ('intent', 'sent') LIMIT 1",
        )?
        .query_row(params![sender.as_slice(), kind], |r| r.get(0))
        .optional()?)
}
