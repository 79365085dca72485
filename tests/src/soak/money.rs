//! The invariants about lcw's transactions: none reverted, none paid above the ceiling or far
//! above the market, no nonce left stuck, and what the outbox stored per job.

use std::collections::HashMap;
use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use lcw_schema::store::Store;
use rusqlite::OptionalExtension;
use serde::Serialize;

use super::GWEI;
use super::faults::Record;
use super::race::{self, JOB_EVENTS, JobEvent};
use super::rig::Rig;
use super::scan::Scan;

/// One reverted transaction of an lcw key, explained.
#[derive(Debug, Serialize)]
pub(crate) struct Reverted {
    pub(crate) key: String,
    pub(crate) tx: String,
    pub(crate) block: u64,
    pub(crate) explanation: String,
    /// Another transaction ended one of its jobs in a block at or after the head at which the
    /// node last accepted it (see [`race`]), or a reorg put its block on a new branch: a race
    /// lcw could not see when it sent it (a transaction valid on the branch it was sent for).
    pub(crate) lost_race: bool,
    /// The head of the node at lcw's last accepted send of any of its versions.
    pub(crate) last_send_head: Option<u64>,
    /// The block of the transaction that ended its jobs first.
    pub(crate) competitor_block: Option<u64>,
    /// Why it lost a race or is lcw's fault, with those blocks.
    pub(crate) judgement: String,
}

/// Per transaction hash, the node's head at each accepted send of lcw's processes (from their
/// proxies; None when the head could not be read).
pub(crate) type Sends = HashMap<B256, Vec<Option<u64>>>;

/// The accepted sends the proxies of lcw's processes kept.
pub(crate) fn sends(rig: &Rig) -> Sends {
    let mut out = Sends::new();
    for a in rig.keeper_rpc.accepted().into_iter().chain(rig.worker_rpc.accepted()) {
        out.entry(a.hash).or_default().push(a.head);
    }
    out
}

/// Fees paid.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Fees {
    pub(crate) ceiling_gwei: f64,
    /// Highest effective gas price of a mined lcw transaction.
    pub(crate) max_paid_gwei: f64,
    /// Highest effective gas price over its block's base fee + median tip.
    pub(crate) max_over_market: f64,
    /// The transaction behind `max_over_market`.
    pub(crate) worst: String,
    /// Highest maxFeePerGas of any signed version in the outboxes.
    pub(crate) max_signed_gwei: f64,
    /// Signed versions whose maxFeePerGas is above the ceiling.
    pub(crate) signed_over_ceiling: u64,
    /// Mined lcw transactions whose maxFeePerGas is above the ceiling.
    pub(crate) mined_over_ceiling: u64,
    /// Highest maxFeePerBlobGas signed (completions).
    pub(crate) max_blob_fee_gwei: f64,
}

/// Nonces of one key.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Nonces {
    pub(crate) key: String,
    pub(crate) chain_nonce: u64,
    pub(crate) pending_nonce: u64,
    /// Mined transactions of the key the outbox signed.
    pub(crate) known: u64,
    /// Mined transactions of the key the outbox does not know (registration before the store, ...).
    pub(crate) foreign: u64,
    /// Problems: live rows left, rows whose nonce holds another transaction, pool gaps.
    pub(crate) problems: Vec<String>,
}

/// Outbox size of one store.
#[derive(Debug, Default, Serialize)]
pub(crate) struct OutboxSize {
    pub(crate) store: String,
    pub(crate) rows: u64,
    pub(crate) signed_versions: u64,
    pub(crate) raw_bytes: u64,
    /// Jobs this store's transactions acted on (mined).
    pub(crate) jobs_acted_on: u64,
    pub(crate) rows_per_job: f64,
    pub(crate) bytes_per_job: f64,
}

fn wei(v: &str) -> u128 {
    v.parse().unwrap_or(u128::MAX)
}

/// The outbox row that signed a transaction.
struct Row {
    /// `kind #id [jobs] (status; note)`.
    text: String,
    kind: String,
    jobs: Vec<i64>,
    /// The hashes of all its signed versions.
    versions: Vec<B256>,
}

/// Which outbox row signed `hash` in `db`.
fn outbox_row(db: &Path, hash: B256) -> Option<Row> {
    let store = Store::open_readonly(db).ok()?;
    let jobs: Vec<i64> = store
        .conn()
        .prepare(
            "SELECT j.job_id FROM outbox_attempts a JOIN outbox_jobs j ON j.outbox_id = a.outbox_id WHERE a.tx_hash = ?1",
        )
        .ok()?
        .query_map([hash.as_slice()], |r| r.get(0))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    let versions: Vec<B256> = store
        .conn()
        .prepare(
            "SELECT tx_hash FROM outbox_attempts WHERE outbox_id IN
               (SELECT outbox_id FROM outbox_attempts WHERE tx_hash = ?1)",
        )
        .ok()?
        .query_map([hash.as_slice()], |r| r.get::<_, Vec<u8>>(0))
        .ok()?
        .filter_map(|h| h.ok().filter(|h| h.len() == 32).map(|h| B256::from_slice(&h)))
        .collect();
    let (text, kind) = store
        .conn()
        .query_row(
            "SELECT o.id, o.kind, o.status, coalesce(o.note, ''),
                    (SELECT group_concat(job_id) FROM outbox_jobs j WHERE j.outbox_id = o.id)
             FROM outbox_attempts a JOIN outbox o ON o.id = a.outbox_id WHERE a.tx_hash = ?1",
            [hash.as_slice()],
            |r| {
                let text = format!(
                    "{} #{} jobs [{}] (outbox status {}{})",
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                    r.get::<_, String>(2)?,
                    Some(r.get::<_, String>(3)?)
                        .filter(|n| !n.is_empty())
                        .map(|n| format!("; {n}"))
                        .unwrap_or_default()
                );
                Ok((text, r.get::<_, String>(1)?))
            },
        )
        .optional()
        .ok()
        .flatten()?;
    Some(Row { text, kind, jobs, versions })
}

/// The state changes of `jobs` up to `block`, from the fresh index.
fn job_events(fresh: &Path, jobs: &[i64], block: u64) -> Vec<JobEvent> {
    let Ok(store) = Store::open_readonly(fresh) else { return Vec::new() };
    let events = JOB_EVENTS.map(|e| format!("'{e}'")).join(", ");
    let sql = format!(
        "SELECT job_id, event, block_number, tx_index, log_index, tx_hash FROM logs
         WHERE job_id = ?1 AND block_number <= ?2 AND event IN ({events})"
    );
    let Ok(mut stmt) = store.conn().prepare(&sql) else { return Vec::new() };
    let mut out = Vec::new();
    for &job in jobs {
        let rows = stmt.query_map(rusqlite::params![job, block as i64], |r| {
            Ok(JobEvent {
                job: r.get(0)?,
                event: r.get(1)?,
                block: r.get::<_, i64>(2)? as u64,
                tx_index: r.get::<_, i64>(3)? as u64,
                log_index: r.get::<_, i64>(4)? as u64,
                tx: B256::try_from(r.get::<_, Vec<u8>>(5)?.as_slice()).unwrap_or_default(),
            })
        });
        out.extend(rows.into_iter().flatten().flatten());
    }
    out
}

/// Every reverted transaction of lcw's keys, with its outbox row, its revert reason (replayed on
/// the state after its block), who else ended its jobs and where, and the verdict of [`race`]
/// against the head of lcw's last accepted send (`sends`).
pub(crate) async fn reverted(rig: &Rig, scan: &Scan, fresh: &Path, faults: &[Record], sends: &Sends) -> Vec<Reverted> {
    let mut out = Vec::new();
    for tx in scan.txs.iter().filter(|t| !t.ok) {
        let (key, db) =
            if tx.from == rig.keeper_addr { ("keeper", &rig.keeper_db) } else { ("worker", &rig.worker_db) };
        let row = outbox_row(db, tx.hash).unwrap_or_else(|| Row {
            text: "not in the outbox".into(),
            kind: String::new(),
            jobs: Vec::new(),
            versions: vec![tx.hash],
        });
        let (reason, index) = match rig.anvil.get_transaction_by_hash(tx.hash).await {
            Ok(Some(full)) => {
                let index = full.transaction_index.unwrap_or_default();
                let from = alloy::network::TransactionResponse::from(&full);
                let request = alloy::rpc::types::TransactionRequest::from_transaction(full).from(from);
                // Replayed on the state after its block: a job someone else ended earlier in the
                // block shows as such (the parent's state would show the parent's clock instead).
                let reason = match rig.anvil.call(request).block(tx.block.into()).await {
                    Ok(_) => "nothing when replayed after its block".into(),
                    Err(e) => match e.as_error_resp().and_then(|r| r.as_revert_data()) {
                        Some(data) => lcw_schema::bindings::decode_revert(&data),
                        None => e.to_string(),
                    },
                };
                (reason, index)
            }
            _ => ("transaction not found".into(), 0),
        };
        let events = job_events(fresh, &row.jobs, tx.block);
        let before = |e: &&JobEvent| (e.block, e.tx_index) < (tx.block, index) && e.tx != tx.hash;
        let mut others = Vec::new();
        for e in events.iter().filter(before).filter(|e| race::ends(&row.kind, &e.event)) {
            let from = match rig.anvil.get_transaction_by_hash(e.tx).await {
                Ok(Some(t)) => alloy::network::TransactionResponse::from(&t).to_string(),
                _ => "?".into(),
            };
            others.push(format!("job {} {} in block {} (tx index {}) by {from}", e.job, e.event, e.block, e.tx_index));
        }
        let competitor = race::competitor(&row.kind, &events, (tx.block, index));
        let last_send = race::last_send(sends, &row.versions);
        let (mut lost_race, mut judgement) = race::judge(last_send, competitor);
        // lcw saw before it was mined that it would revert and gave its nonce to a transfer to
        // self, but the original was mined first (the replacement refused or not yet in a block).
        if row.text.contains("would now revert") {
            others.push("lcw's cancel at its nonce was not mined before it".to_owned());
        }
        // Sent for one branch, mined on the branch a reorg put in its place.
        if let Some(r) = reorged_into(faults, tx.block) {
            lost_race = true;
            judgement = format!("reorg #{} put its block {} on a new branch; {judgement}", r.n, tx.block);
            others.push(format!("reorg #{} ({}) replaced the blocks up to {}", r.n, r.detail, r.start_block));
        }
        out.push(Reverted {
            key: key.into(),
            tx: tx.hash.to_string(),
            block: tx.block,
            explanation: format!(
                "{}; reverted with {reason}{}",
                row.text,
                if others.is_empty() { String::new() } else { format!("; meanwhile: {}", others.join(", ")) }
            ),
            lost_race,
            last_send_head: last_send,
            competitor_block: competitor.map(|c| c.block),
            judgement,
        });
    }
    out
}

/// The reorg whose new branch holds `block` (its replaced blocks, and the 2 after).
fn reorged_into(faults: &[Record], block: u64) -> Option<&Record> {
    faults.iter().filter(|f| f.kind == "reorg").find(|f| {
        let depth: u64 = f
            .detail
            .strip_prefix("depth ")
            .and_then(|d| d.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        f.start_block.saturating_sub(depth) <= block && block <= f.start_block + 2
    })
}

/// Fees against the ceiling and the market.
pub(crate) fn fees(rig: &Rig, scan: &Scan) -> anyhow::Result<Fees> {
    let ceiling = rig.max_fee_per_gas;
    let mut out = Fees { ceiling_gwei: ceiling as f64 / GWEI as f64, ..Fees::default() };
    for tx in &scan.txs {
        out.max_paid_gwei = out.max_paid_gwei.max(tx.effective_gas_price as f64 / GWEI as f64);
        if tx.max_fee > ceiling {
            out.mined_over_ceiling += 1;
        }
        if let Some(b) = scan.block(tx.block) {
            let market = b.base_fee.max(1) + b.median_tip;
            let ratio = tx.effective_gas_price as f64 / market as f64;
            if ratio > out.max_over_market {
                out.max_over_market = ratio;
                let row = outbox_row(if tx.from == rig.keeper_addr { &rig.keeper_db } else { &rig.worker_db }, tx.hash)
                    .map(|r| r.text)
                    .unwrap_or_else(|| "not in the outbox".into());
                out.worst = format!(
                    "{row}, {} in block {}: paid {:.3} gwei, market {:.3} gwei (base fee {} wei + median tip {:.3} gwei)",
                    tx.hash,
                    tx.block,
                    tx.effective_gas_price as f64 / GWEI as f64,
                    market as f64 / GWEI as f64,
                    b.base_fee,
                    b.median_tip as f64 / GWEI as f64
                );
            }
        }
    }
    for db in [&rig.keeper_db, &rig.worker_db] {
        let store = Store::open_readonly(db)?;
        let mut stmt = store.conn().prepare("SELECT max_fee_per_gas, max_fee_per_blob_gas FROM outbox_attempts")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))? {
            let (fee, blob) = row?;
            let fee = wei(&fee);
            out.max_signed_gwei = out.max_signed_gwei.max(fee as f64 / GWEI as f64);
            if fee > ceiling {
                out.signed_over_ceiling += 1;
            }
            if let Some(blob) = blob {
                out.max_blob_fee_gwei = out.max_blob_fee_gwei.max(wei(&blob) as f64 / GWEI as f64);
            }
        }
    }
    Ok(out)
}

/// Nonces of `key` (whose outbox is `db`): every mined transaction known or foreign, no live row
/// left, no row whose nonce another transaction took, nothing waiting in the pool.
pub(crate) async fn nonces(rig: &Rig, scan: &Scan, name: &str, key: Address, db: &Path) -> anyhow::Result<Nonces> {
    let chain_nonce = rig.anvil.get_transaction_count(key).await?;
    let pending_nonce = rig.anvil.get_transaction_count(key).pending().await?;
    let mut out = Nonces { key: format!("{name} {key}"), chain_nonce, pending_nonce, ..Nonces::default() };
    if pending_nonce > chain_nonce {
        out.problems.push(format!(
            "{} transaction(s) waiting in the pool at nonces {chain_nonce}..{pending_nonce}",
            pending_nonce - chain_nonce
        ));
    }
    let store = Store::open_readonly(db)?;
    let c = store.conn();
    let signed = |hash: B256| -> anyhow::Result<Option<i64>> {
        Ok(c.query_row("SELECT outbox_id FROM outbox_attempts WHERE tx_hash = ?1", [hash.as_slice()], |r| r.get(0))
            .optional()?)
    };
    let mut on_chain = std::collections::HashMap::new();
    for tx in scan.txs.iter().filter(|t| t.from == key) {
        on_chain.insert(tx.nonce, tx.hash);
        if signed(tx.hash)?.is_some() {
            out.known += 1;
        } else {
            out.foreign += 1;
        }
    }
    let mut stmt = c.prepare(
        "SELECT id, kind, nonce, status FROM outbox WHERE sender = ?1 AND nonce IS NOT NULL ORDER BY nonce, id",
    )?;
    let rows: Vec<(i64, String, i64, String)> = stmt
        .query_map([key.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (id, kind, nonce, status) in rows {
        let nonce = nonce as u64;
        let holder = on_chain.get(&nonce).copied();
        // Two rows may hold byte-identical versions (a cancel signed again at the same nonce
        // and fee): the row is mined if any version of its own is the chain's.
        let ours = match holder {
            Some(h) => c
                .query_row(
                    "SELECT count(*) FROM outbox_attempts WHERE tx_hash = ?1 AND outbox_id = ?2",
                    rusqlite::params![h.as_slice(), id],
                    |r| r.get::<_, i64>(0),
                )
                .is_ok_and(|n| n > 0),
            None => false,
        };
        match status.as_str() {
            "intent" | "sent" => out.problems.push(format!(
                "{kind} #{id} at nonce {nonce} is still `{status}`{}",
                if ours { " though one of its versions is mined" } else { "" }
            )),
            "mined" | "reverted" if !ours => out.problems.push(format!(
                "{kind} #{id} is `{status}` at nonce {nonce}, but the chain holds {} there",
                holder.map(|h| h.to_string()).unwrap_or_else(|| "nothing".into())
            )),
            _ => {}
        }
    }
    Ok(out)
}

/// Rows and bytes of an outbox, per job its mined transactions acted on.
pub(crate) fn outbox_size(name: &str, db: &Path) -> anyhow::Result<OutboxSize> {
    let store = Store::open_readonly(db)?;
    let c = store.conn();
    let rows: i64 = c.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
    let (versions, bytes): (i64, i64) =
        c.query_row("SELECT count(*), coalesce(sum(length(raw_tx)), 0) FROM outbox_attempts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let jobs: i64 = c.query_row(
        "SELECT count(DISTINCT j.job_id) FROM outbox_jobs j JOIN outbox o ON o.id = j.outbox_id WHERE o.status = 'mined'",
        [],
        |r| r.get(0),
    )?;
    let per = |v: i64| if jobs == 0 { 0.0 } else { v as f64 / jobs as f64 };
    Ok(OutboxSize {
        store: name.into(),
        rows: rows as u64,
        signed_versions: versions as u64,
        raw_bytes: bytes as u64,
        jobs_acted_on: jobs as u64,
        rows_per_job: per(rows),
        bytes_per_job: per(bytes),
    })
}
