//! The outbox: every transaction lcw sends for a key, kept in the store so that nothing is signed
//! twice, nothing signed is lost, and a restart picks up exactly where the last run stopped.
//!
//! - **intent** first (what, for which jobs), in the same transaction as the job links; the store's
//!   trigger refuses a second live transaction for a job;
//! - **sign** with an explicitly owned nonce, and store the raw transaction *before* broadcasting;
//! - **track** receipts on every head; a mined transaction whose block is reorged out goes back to
//!   `sent` and its raw bytes are broadcast again (or, when it would now revert, its nonce goes to a
//!   zero-value transfer to self and its jobs back to the schedule); one that stays unmined while the base fee has
//!   passed its cap, or for too many blocks, is replaced at the same nonce with bumped fees;
//! - **lanes**: one key may send from several tasks at once; nonces are taken from the whole
//!   key's outbox under the store's write lock, while each lane ([`Lane`]) tracks and replaces only
//!   its own transactions;
//! - **reconcile** at start: nonces against the chain, every unmined raw transaction re-broadcast,
//!   intents that were never signed cancelled (the schedule re-plans them from the store).

use std::collections::HashSet;
use std::path::Path;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEip4844, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::eips::eip4844::BlobTransactionSidecar;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use rusqlite::{Connection, OptionalExtension, params};

use crate::fees::FeeCap;
use crate::node::{Chain, Fees, Head};
use crate::{ChainError, ChainResult};

/// Blocks a sent transaction may stay unmined before its fees are bumped.
pub const STUCK_BLOCKS: u64 = 3;
/// Blocks after which a mined transaction is no longer checked for a reorg (and the store, which
/// may lag or sit on another branch for a moment, is not trusted over the outbox's own record).
pub const REORG_WINDOW: u64 = 128;
/// Fee bump per replacement, in percent (nodes require at least 10; 25 clears every pool's rule).
pub const BUMP_PERCENT: u128 = 25;
/// Fee bump per replacement of a blob transaction (geth's blob pool requires 100 %).
pub const BLOB_BUMP_PERCENT: u128 = 100;

/// A planned transaction.
#[derive(Debug, Clone)]
pub struct Intent {
    /// Outbox kind (`release`, `claim_timeout`, ...).
    pub kind: &'static str,
    /// Target contract.
    pub to: Address,
    /// Calldata.
    pub data: Bytes,
    /// Value.
    pub value: U256,
    /// Gas limit.
    pub gas_limit: u64,
    /// Jobs it acts on.
    pub jobs: Vec<u64>,
    /// The block it is meant for.
    pub target_block: u64,
    /// A blob to carry (an EIP-4844 type-3 transaction), with its blob fee cap.
    pub blob: Option<BlobPart>,
    /// The most it may pay per gas and per blob gas, whatever the market does.
    pub cap: FeeCap,
}

/// The blob of a type-3 transaction.
#[derive(Debug, Clone)]
pub struct BlobPart {
    /// Blobs with their KZG commitments and proofs.
    pub sidecar: BlobTransactionSidecar,
    /// maxFeePerBlobGas, from the chain's blob base fee (never a hard-coded cap).
    pub max_fee_per_blob_gas: u128,
}

/// What happened to an outbox transaction during `track`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// Mined with status 1.
    Mined { id: i64, kind: String, block: u64, gas_used: u64, jobs: Vec<u64> },
    /// Mined with status 0.
    Reverted { id: i64, kind: String, block: u64, jobs: Vec<u64> },
    /// Its block was reorged out (what it did on the old branch no longer counts): re-broadcast,
    /// or cancelled when it would now revert (then a `Dropped` follows).
    Reorged { id: i64, block: u64, kind: String, jobs: Vec<u64>, was_ok: bool },
    /// Replaced with higher fees at the same nonce.
    Bumped { id: i64, attempt: u32 },
    /// Never mined and its nonce was used by another transaction; its jobs return to the schedule.
    Dropped { id: i64, note: String },
}

/// One live (sent, unmined) transaction.
#[derive(Debug, Clone)]
struct Live {
    id: i64,
    nonce: u64,
    sent_head: u64,
    gas_limit: u64,
    to: Address,
    data: Bytes,
    value: U256,
    attempts: Vec<(B256, Bytes, u128, u128)>,
}

/// Which task's transactions an [`Outbox`] looks after. One key may send from several tasks at
/// once (`lcw run` settles and serves jobs; an operator verb may run beside `lcw work`): nonces
/// are shared per key, but each lane tracks, bumps, re-broadcasts and cancels only its own rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Releases, timeouts, stuck settlements.
    Settler,
    /// Acks and completions.
    Worker,
    /// One-off operator verbs (register, withdraw, deregister, ...).
    Operator,
}

impl Lane {
    /// The store's name for the lane.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Settler => "settler",
            Lane::Worker => "worker",
            Lane::Operator => "operator",
        }
    }
}

/// The outbox of one signing key, for one lane.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    lane: &'static str,
    signer: PrivateKeySigner,
    sender: Address,
    chain_id: u64,
    next_nonce: u64,
}

fn now() -> i64 {
    lcw_schema::store::unix_now() as i64
}

impl Outbox {
    /// Opens the `lane` of `signer`'s outbox in the store at `db`.
    pub fn open(db: &Path, signer: PrivateKeySigner, chain_id: u64, lane: Lane) -> ChainResult<Self> {
        let conn = lcw_schema::store::Store::connect(db)?;
        let sender = signer.address();
        Ok(Outbox { conn, lane: lane.as_str(), signer, sender, chain_id, next_nonce: 0 })
    }

    /// The sending address.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// Reconciles with the chain at start: settles what was mined while lcw was away, drops what
    /// lost its nonce, cancels unsigned intents, re-broadcasts the rest and sets the next nonce.
    pub async fn reconcile(&mut self, chain: &Chain) -> ChainResult<Vec<Tracked>> {
        let cancelled = self.conn.execute(
            "UPDATE outbox SET status = 'dropped', note = 'cancelled at restart before signing'
             WHERE sender = ?1 AND lane = ?2 AND status = 'intent'",
            params![self.sender.as_slice(), self.lane],
        )?;
        if cancelled > 0 {
            tracing::info!(cancelled, "cancelled unsigned intents of the previous run");
        }
        let (latest, pending) = chain.nonces(self.sender).await?;
        let head = chain.head().await?;
        let mut events = self.track(chain, &head, None).await?;
        // What is still live after tracking: re-broadcast (the node may have restarted too).
        for live in self.live()? {
            if let Some((_, raw, _, _)) = live.attempts.last() {
                match chain.send_raw(raw).await {
                    Ok(_) => tracing::info!(id = live.id, nonce = live.nonce, "re-broadcast after restart"),
                    Err(e) if is_nonce_used(&e) => {
                        // Mined by a version we cannot see yet, or the nonce went elsewhere: track decides.
                        tracing::debug!(id = live.id, error = %e, "re-broadcast refused");
                    }
                    Err(e) => {
                        tracing::warn!(id = live.id, error = %e, "re-broadcast failed; retrying on the next head")
                    }
                }
            }
        }
        events.extend(self.track(chain, &head, None).await?);
        let max_live: Option<i64> = self.conn.query_row(
            "SELECT max(nonce) FROM outbox WHERE sender = ?1 AND status = 'sent'",
            [self.sender.as_slice()],
            |r| r.get(0),
        )?;
        self.next_nonce = latest.max(pending).max(max_live.map(|n| n as u64 + 1).unwrap_or(0));
        tracing::info!(sender = %self.sender, latest, pending, next = self.next_nonce, "nonces reconciled");
        Ok(events)
    }

    /// Jobs that have a live (intent or sent) transaction.
    pub fn live_jobs(&self) -> ChainResult<HashSet<u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.status IN ('intent', 'sent') AND o.sender = ?1 AND o.lane = ?2",
        )?;
        let rows = stmt.query_map(params![self.sender.as_slice(), self.lane], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
    }

    /// Jobs released, timed out or settled by any settler transaction in this store mined at or
    /// after `block`. The store may not show them yet, or may show the other side of a reorg the
    /// outbox has not noticed yet; either way they must not be planned again (a reorg the outbox
    /// notices puts them back in flight, or drops the transaction and frees them).
    pub fn recently_mined_jobs(&self, block: u64) -> ChainResult<HashSet<u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.status = 'mined' AND o.lane = 'settler' AND o.mined_block >= ?1",
        )?;
        let rows = stmt.query_map([block as i64], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
    }

    /// Jobs acted on by this sender's transactions of `kind` mined at or after `block`.
    pub fn mined_since(&self, kind: &str, block: u64) -> ChainResult<HashSet<u64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT oj.job_id FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
             WHERE o.sender = ?1 AND o.kind = ?2 AND o.status = 'mined' AND o.mined_block >= ?3",
        )?;
        let rows = stmt.query_map(params![self.sender.as_slice(), kind, block as i64], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
    }

    /// Records an intent, signs it with the next nonce, stores the raw transaction and broadcasts
    /// it. Returns the outbox id and transaction hash.
    pub async fn submit(&mut self, chain: &Chain, intent: &Intent, fees: Fees, head: u64) -> ChainResult<(i64, B256)> {
        // Never above the intent's ceiling, whatever the market asks.
        let max_fee = fees.max_fee.min(intent.cap.per_gas);
        let fees = Fees { max_fee, tip: fees.tip.min(max_fee) };
        let capped;
        let intent = match &intent.blob {
            Some(b) if b.max_fee_per_blob_gas > intent.cap.per_blob_gas => {
                let blob = BlobPart { max_fee_per_blob_gas: intent.cap.per_blob_gas, ..b.clone() };
                capped = Intent { blob: Some(blob), ..intent.clone() };
                &capped
            }
            _ => intent,
        };
        // 1. The intent and its jobs (the trigger refuses a job that already has a live transaction).
        let id = self.record_intent(intent, head)?;
        // 2. Sign and store the raw bytes before they leave the process.
        let (nonce, hash, raw) = match self.sign_and_record(id, intent, fees, head) {
            Ok(v) => v,
            Err(e) => {
                // Nothing was signed: free the jobs for the next plan.
                let _ = self.conn.execute(
                    "UPDATE outbox SET status = 'dropped', note = ?2 WHERE id = ?1",
                    params![id, format!("not signed: {e}")],
                );
                return Err(e);
            }
        };
        self.next_nonce += 1;
        // 3. Broadcast. A transport error leaves it `sent`: the next head re-broadcasts it.
        match chain.send_raw(&raw).await {
            Ok(_) => {}
            Err(e) if is_nonce_used(&e) => {
                tracing::warn!(id, nonce, error = %e, "nonce already used; re-reading nonces from the chain");
                let (latest, pending) = chain.nonces(self.sender).await?;
                self.next_nonce = self.next_nonce.max(latest).max(pending);
            }
            Err(e) if is_rejected(&e) => {
                // The node refused it outright: nothing is in any pool; release the nonce.
                self.conn.execute(
                    "UPDATE outbox SET status = 'dropped', note = ?2 WHERE id = ?1",
                    params![id, format!("refused by the node: {e}")],
                )?;
                if self.next_nonce == nonce + 1 {
                    self.next_nonce = nonce;
                }
                return Err(ChainError::Rejected(e));
            }
            Err(e) => tracing::warn!(id, error = %e, "broadcast failed; re-broadcasting on the next head"),
        }
        Ok((id, hash))
    }

    fn record_intent(&mut self, intent: &Intent, head: u64) -> ChainResult<i64> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO outbox (sender, kind, to_address, calldata, value_wei, gas_limit, status, created_at,
                                 created_head, target_block, lane)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'intent', ?7, ?8, ?9, ?10)",
            params![
                self.sender.as_slice(),
                intent.kind,
                intent.to.as_slice(),
                intent.data.as_ref(),
                intent.value.to_string(),
                intent.gas_limit as i64,
                now(),
                head as i64,
                intent.target_block as i64,
                self.lane
            ],
        )?;
        let id = tx.last_insert_rowid();
        for job in &intent.jobs {
            tx.execute("INSERT INTO outbox_jobs (job_id, outbox_id) VALUES (?1, ?2)", params![*job as i64, id])?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Takes the next nonce (above every nonce this key's outbox has used, so several lcw
    /// processes sharing a key never collide), signs, and stores the raw transaction, atomically.
    fn sign_and_record(&mut self, id: i64, intent: &Intent, fees: Fees, head: u64) -> ChainResult<(u64, B256, Bytes)> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let used: Option<i64> = tx.query_row(
            "SELECT max(nonce) FROM outbox WHERE sender = ?1 AND status IN ('sent', 'mined', 'reverted')",
            [self.sender.as_slice()],
            |r| r.get(0),
        )?;
        let nonce = self.next_nonce.max(used.map(|n| n as u64 + 1).unwrap_or(0));
        let (hash, raw) = sign_with(
            &self.signer,
            self.chain_id,
            nonce,
            intent.gas_limit,
            intent.to,
            &intent.data,
            intent.value,
            fees,
            intent.blob.as_ref(),
        )?;
        tx.execute(
            "UPDATE outbox SET nonce = ?2, status = 'sent', sent_at = ?3, created_head = ?4 WHERE id = ?1",
            params![id, nonce as i64, now(), head as i64],
        )?;
        insert_attempt(&tx, id, 0, hash, &raw, fees)?;
        tx.commit()?;
        self.next_nonce = nonce;
        Ok((nonce, hash, raw))
    }

    fn record_bump(
        &mut self,
        id: i64,
        attempt: u32,
        hash: B256,
        raw: &Bytes,
        fees: Fees,
        head: u64,
    ) -> ChainResult<()> {
        let tx = self.conn.transaction()?;
        insert_attempt(&tx, id, attempt, hash, raw, fees)?;
        tx.execute("UPDATE outbox SET created_head = ?2 WHERE id = ?1", params![id, head as i64])?;
        tx.commit()?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        nonce: u64,
        gas_limit: u64,
        to: Address,
        data: &Bytes,
        value: U256,
        fees: Fees,
        blob: Option<&BlobPart>,
    ) -> ChainResult<(B256, Bytes)> {
        sign_with(&self.signer, self.chain_id, nonce, gas_limit, to, data, value, fees, blob)
    }
}

#[allow(clippy::too_many_arguments)]
fn sign_with(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    gas_limit: u64,
    to: Address,
    data: &Bytes,
    value: U256,
    fees: Fees,
    blob: Option<&BlobPart>,
) -> ChainResult<(B256, Bytes)> {
    let sign_err = |e: alloy::signers::Error| ChainError::Sign(e.to_string());
    let envelope = match blob {
        None => {
            let mut tx = TxEip1559 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: fees.max_fee,
                max_priority_fee_per_gas: fees.tip,
                to: TxKind::Call(to),
                value,
                access_list: Default::default(),
                input: data.clone(),
            };
            let sig = signer.sign_transaction_sync(&mut tx).map_err(sign_err)?;
            TxEnvelope::from(tx.into_signed(sig))
        }
        Some(blob) => {
            let tx = TxEip4844 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: fees.max_fee,
                max_priority_fee_per_gas: fees.tip,
                to,
                value,
                access_list: Default::default(),
                blob_versioned_hashes: blob.sidecar.versioned_hashes().collect(),
                max_fee_per_blob_gas: blob.max_fee_per_blob_gas,
                input: data.clone(),
            };
            let mut variant = TxEip4844Variant::TxEip4844WithSidecar(TxEip4844WithSidecar::from_tx_and_sidecar(
                tx,
                blob.sidecar.clone(),
            ));
            let sig = signer.sign_transaction_sync(&mut variant).map_err(sign_err)?;
            TxEnvelope::from(variant.into_signed(sig))
        }
    };
    // Network encoding: a type-3 transaction travels with its sidecar.
    Ok((*envelope.tx_hash(), envelope.encoded_2718().into()))
}

/// The blob of a signed type-3 transaction (from its stored network encoding), to re-sign it at
/// higher fees. None for other transactions.
fn blob_of(raw: &Bytes) -> Option<BlobPart> {
    match TxEnvelope::decode_2718(&mut raw.as_ref()).ok()? {
        TxEnvelope::Eip4844(signed) => match signed.tx() {
            TxEip4844Variant::TxEip4844WithSidecar(t) => {
                let sidecar = t.sidecar.clone().into_eip4844()?;
                Some(BlobPart { sidecar, max_fee_per_blob_gas: t.tx.max_fee_per_blob_gas })
            }
            TxEip4844Variant::TxEip4844(_) => None,
        },
        _ => None,
    }
}

impl Outbox {
    fn live(&self) -> ChainResult<Vec<Live>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, nonce, created_head, gas_limit, to_address, calldata, value_wei FROM outbox
             WHERE sender = ?1 AND lane = ?2 AND status = 'sent' ORDER BY nonce",
        )?;
        let mut out: Vec<Live> = stmt
            .query_map(params![self.sender.as_slice(), self.lane], |r| {
                let value: String = r.get(6)?;
                Ok(Live {
                    id: r.get(0)?,
                    nonce: r.get::<_, i64>(1)? as u64,
                    sent_head: r.get::<_, i64>(2)? as u64,
                    gas_limit: r.get::<_, i64>(3)? as u64,
                    to: Address::from_slice(&r.get::<_, Vec<u8>>(4)?),
                    data: Bytes::from(r.get::<_, Vec<u8>>(5)?),
                    value: value.parse().unwrap_or_default(),
                    attempts: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT tx_hash, raw_tx, max_fee_per_gas, max_priority_fee_per_gas FROM outbox_attempts
             WHERE outbox_id = ?1 ORDER BY attempt",
        )?;
        for live in &mut out {
            live.attempts = stmt
                .query_map([live.id], |r| {
                    let max_fee: String = r.get(2)?;
                    let tip: String = r.get(3)?;
                    Ok((
                        B256::from_slice(&r.get::<_, Vec<u8>>(0)?),
                        Bytes::from(r.get::<_, Vec<u8>>(1)?),
                        max_fee.parse().unwrap_or(0),
                        tip.parse().unwrap_or(0),
                    ))
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(out)
    }

    fn jobs_of(&self, id: i64) -> ChainResult<Vec<u64>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT job_id FROM outbox_jobs WHERE outbox_id = ?1 ORDER BY job_id")?;
        let rows = stmt.query_map([id], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(|j| j as u64).collect())
    }

    fn kind_of(&self, id: i64) -> ChainResult<String> {
        Ok(self.conn.query_row("SELECT kind FROM outbox WHERE id = ?1", [id], |r| r.get(0))?)
    }

    /// On a new head: receipts of live transactions, reorg checks of recently mined ones, fee
    /// bumps of stuck ones. `fees` (the market now) enables bumping; None only observes.
    pub async fn track(&mut self, chain: &Chain, head: &Head, fees: Option<Fees>) -> ChainResult<Vec<Tracked>> {
        let mut events = Vec::new();
        // Reorgs: a mined transaction whose block is no longer canonical goes back to `sent`.
        let recent: Vec<(i64, u64, B256)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, mined_block, mined_hash FROM outbox
                 WHERE sender = ?1 AND lane = ?2 AND status IN ('mined', 'reverted') AND mined_block > ?3",
            )?;
            stmt.query_map(
                params![self.sender.as_slice(), self.lane, head.number.saturating_sub(REORG_WINDOW) as i64],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, B256::from_slice(&r.get::<_, Vec<u8>>(2)?))),
            )?
            .collect::<Result<_, _>>()?
        };
        let mut canonical: std::collections::HashMap<u64, Option<B256>> = Default::default();
        for (id, block, hash) in recent {
            if let std::collections::hash_map::Entry::Vacant(e) = canonical.entry(block) {
                e.insert(chain.block(block.into()).await?.map(|b| b.hash));
            }
            if canonical[&block] != Some(hash) {
                events.extend(self.reorged_out(chain, head, id, block, fees).await?);
            }
        }
        // Receipts of everything live. The nonce is read first: a block landing between the two
        // reads must not make a just-mined transaction look like it lost its nonce.
        let live = self.live()?;
        let (latest_nonce, _) = if live.is_empty() { (0, 0) } else { chain.nonces(self.sender).await? };
        let hashes: Vec<B256> = live.iter().flat_map(|l| l.attempts.iter().map(|a| a.0)).collect();
        let receipts = chain.receipts(&hashes).await?;
        let by_hash: std::collections::HashMap<B256, alloy::rpc::types::TransactionReceipt> =
            hashes.iter().copied().zip(receipts).filter_map(|(h, r)| r.map(|r| (h, r))).collect();
        for l in live {
            if let Some(r) = l.attempts.iter().find_map(|a| by_hash.get(&a.0)) {
                let block = r.block_number.unwrap_or_default();
                let ok = r.status();
                self.conn.execute(
                    "UPDATE outbox SET status = ?2, mined_block = ?3, mined_hash = ?4, mined_tx = ?5, gas_used = ?6,
                            note = NULL WHERE id = ?1",
                    params![
                        l.id,
                        if ok { "mined" } else { "reverted" },
                        block as i64,
                        r.block_hash.unwrap_or_default().as_slice(),
                        r.transaction_hash.as_slice(),
                        r.gas_used as i64
                    ],
                )?;
                let jobs = self.jobs_of(l.id)?;
                let kind = self.kind_of(l.id)?;
                events.push(if ok {
                    Tracked::Mined { id: l.id, kind, block, gas_used: r.gas_used, jobs }
                } else {
                    Tracked::Reverted { id: l.id, kind, block, jobs }
                });
                continue;
            }
            if l.nonce < latest_nonce {
                // The nonce is used and none of our versions has a receipt: another transaction took it.
                let note = format!("nonce {} was used by another transaction", l.nonce);
                self.conn
                    .execute("UPDATE outbox SET status = 'dropped', note = ?2 WHERE id = ?1", params![l.id, note])?;
                events.push(Tracked::Dropped { id: l.id, note });
                continue;
            }
            let Some(market) = fees else {
                continue;
            };
            let (_, last_raw, max_fee, tip) = l.attempts.last().cloned().unwrap_or_default();
            let priced_out = max_fee < head.base_fee;
            let waited = head.number.saturating_sub(l.sent_head) >= STUCK_BLOCKS;
            if !(priced_out || waited) {
                // Make sure the node still has it (it may have restarted or dropped it).
                let _ = chain.send_raw(&last_raw).await;
                continue;
            }
            // Blob pools want every fee doubled for a replacement; others take 25 %.
            let blob = blob_of(&last_raw).map(|b| BlobPart { max_fee_per_blob_gas: b.max_fee_per_blob_gas * 2, ..b });
            let percent = if blob.is_some() { BLOB_BUMP_PERCENT } else { BUMP_PERCENT };
            let bump = |v: u128| v.saturating_mul(100 + percent).div_ceil(100).max(v + 1);
            let new = Fees { max_fee: bump(max_fee).max(market.max_fee), tip: bump(tip).max(market.tip) };
            let new = Fees { max_fee: new.max_fee.max(new.tip), ..new };
            let attempt = l.attempts.len() as u32;
            let (hash, raw) = self.sign(l.nonce, l.gas_limit, l.to, &l.data, l.value, new, blob.as_ref())?;
            self.record_bump(l.id, attempt, hash, &raw, new, head.number)?;
            match chain.send_raw(&raw).await {
                Ok(_) => {
                    tracing::info!(
                        id = l.id,
                        nonce = l.nonce,
                        attempt,
                        max_fee = new.max_fee,
                        tip = new.tip,
                        priced_out,
                        "replaced a stuck transaction with higher fees"
                    );
                    events.push(Tracked::Bumped { id: l.id, attempt });
                }
                Err(e) => tracing::warn!(id = l.id, error = %e, "fee bump refused; retrying on the next head"),
            }
        }
        Ok(events)
    }

    /// A mined transaction whose block left the canonical chain. Its nonce is free again. If its
    /// call still succeeds on the new branch, the same raw bytes go out again; if it would now
    /// revert (another keeper released the jobs on the new branch, or the new branch's clock is
    /// behind the window), broadcasting it would only burn gas, so the nonce is taken by a
    /// zero-value transfer to self at higher fees and the jobs return to the schedule.
    async fn reorged_out(
        &mut self,
        chain: &Chain,
        head: &Head,
        id: i64,
        block: u64,
        market: Option<Fees>,
    ) -> ChainResult<Vec<Tracked>> {
        let (nonce, to, data, kind, was_ok, value): (i64, Vec<u8>, Vec<u8>, String, bool, String) =
            self.conn.query_row(
                "SELECT nonce, to_address, calldata, kind, status = 'mined', value_wei FROM outbox WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )?;
        let reorged = Tracked::Reorged { id, block, kind, jobs: self.jobs_of(id)?, was_ok };
        let call = crate::node::CallSpec { from: self.sender, to: Address::from_slice(&to), data: Bytes::from(data) };
        // A transaction that moves value (a stake) is not judged by a value-less simulation: it
        // goes out again as it was.
        let carries_value = value != "0";
        // Judge it against the new branch: `head` was read before the reorg was seen and may
        // still be the abandoned branch's tip, whose clock can be ahead of the new one.
        let sim = if carries_value {
            Vec::new()
        } else {
            let tip = chain.head().await?;
            chain.simulate(&[call], tip.number + 1, tip.timestamp + 1).await?
        };
        let still_ok = carries_value || sim.first().is_some_and(|s| s.ok());
        if still_ok {
            self.conn.execute(
                "UPDATE outbox SET status = 'sent', mined_block = NULL, mined_hash = NULL, mined_tx = NULL,
                        gas_used = NULL, note = 'reorged out; re-broadcast' WHERE id = ?1",
                [id],
            )?;
            tracing::warn!(id, block, "a mined outbox transaction was reorged out; re-broadcasting it");
            return Ok(vec![reorged]);
        }
        let why = sim.first().and_then(|s| s.error.clone()).unwrap_or_else(|| "no result".into());
        let (last_fee, last_tip): (String, String) = self.conn.query_row(
            "SELECT max_fee_per_gas, max_priority_fee_per_gas FROM outbox_attempts WHERE outbox_id = ?1
             ORDER BY attempt DESC LIMIT 1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let bump = |v: u128| v.saturating_mul(100 + BUMP_PERCENT).div_ceil(100).max(v + 1);
        let mut fees = Fees { max_fee: bump(last_fee.parse().unwrap_or(0)), tip: bump(last_tip.parse().unwrap_or(0)) };
        if let Some(m) = market {
            fees = Fees { max_fee: fees.max_fee.max(m.max_fee), tip: fees.tip.max(m.tip) };
        }
        fees.max_fee = fees.max_fee.max(fees.tip);
        let nonce = nonce as u64;
        let (hash, raw) = self.sign(nonce, 21_000, self.sender, &Bytes::new(), U256::ZERO, fees, None)?;
        let note = format!(
            "reorged out of block {block} and would now revert ({why}); nonce {nonce} taken by a transfer to self, \
             jobs back to the schedule"
        );
        let cancel = {
            let tx = self.conn.transaction()?;
            tx.execute(
                "UPDATE outbox SET status = 'dropped', mined_block = NULL, mined_hash = NULL, mined_tx = NULL,
                        gas_used = NULL, note = ?2 WHERE id = ?1",
                params![id, note],
            )?;
            tx.execute(
                "INSERT INTO outbox (sender, kind, to_address, calldata, value_wei, gas_limit, nonce, status, created_at,
                                     created_head, sent_at, note, lane)
                 VALUES (?1, 'cancel', ?1, x'', '0', 21000, ?2, 'sent', ?3, ?4, ?3, ?5, ?6)",
                params![
                    self.sender.as_slice(),
                    nonce as i64,
                    now(),
                    head.number as i64,
                    format!("fills nonce of #{id}"),
                    self.lane
                ],
            )?;
            let cancel = tx.last_insert_rowid();
            insert_attempt(&tx, cancel, 0, hash, &raw, fees)?;
            tx.commit()?;
            cancel
        };
        tracing::warn!(id, block, cancel, nonce, reason = %why, "a reorged-out transaction would now revert; cancelled it");
        if let Err(e) = chain.send_raw(&raw).await {
            tracing::warn!(id = cancel, error = %e, "broadcast failed; re-broadcasting on the next head");
        }
        Ok(vec![reorged, Tracked::Dropped { id, note }])
    }

    /// Transactions of this sender by status (for summaries).
    pub fn counts(&self) -> ChainResult<std::collections::BTreeMap<String, u64>> {
        let mut stmt =
            self.conn.prepare("SELECT status, count(*) FROM outbox WHERE sender = ?1 AND lane = ?2 GROUP BY status")?;
        let rows = stmt.query_map(params![self.sender.as_slice(), self.lane], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calldata of this lane's live (intent or sent) transactions of `kind`: what is in flight
    /// for transactions that act on no job (a sortition claim names its request in its calldata).
    pub fn live_calls(&self, kind: &str) -> ChainResult<Vec<Bytes>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT calldata FROM outbox WHERE sender = ?1 AND lane = ?2 AND kind = ?3 AND status IN ('intent', 'sent')",
        )?;
        let rows = stmt.query_map(params![self.sender.as_slice(), self.lane, kind], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.into_iter().map(Bytes::from).collect())
    }

    /// Calldata and mined block of this lane's transactions of `kind` mined or reverted at or
    /// after `block`, with whether each succeeded.
    pub fn settled_calls(&self, kind: &str, block: u64) -> ChainResult<Vec<(Bytes, u64, bool)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT calldata, mined_block, status = 'mined' FROM outbox
             WHERE sender = ?1 AND lane = ?2 AND kind = ?3 AND status IN ('mined', 'reverted') AND mined_block >= ?4",
        )?;
        let rows = stmt.query_map(params![self.sender.as_slice(), self.lane, kind, block as i64], |r| {
            Ok((Bytes::from(r.get::<_, Vec<u8>>(0)?), r.get::<_, i64>(1)? as u64, r.get::<_, bool>(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id of the live transaction of `kind` without jobs (withdraw, deregister), if any.
    pub fn live_of_kind(&self, kind: &str) -> ChainResult<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM outbox WHERE sender = ?1 AND kind = ?2 AND status IN ('intent', 'sent') LIMIT 1",
                params![self.sender.as_slice(), kind],
                |r| r.get(0),
            )
            .optional()?)
    }
}

fn insert_attempt(conn: &Connection, id: i64, attempt: u32, hash: B256, raw: &Bytes, fees: Fees) -> ChainResult<()> {
    conn.execute(
        "INSERT INTO outbox_attempts (outbox_id, attempt, tx_hash, raw_tx, max_fee_per_gas, max_priority_fee_per_gas,
                                      signed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, attempt, hash.as_slice(), raw.as_ref(), fees.max_fee.to_string(), fees.tip.to_string(), now()],
    )?;
    Ok(())
}

fn is_nonce_used(m: &str) -> bool {
    let m = m.to_lowercase();
    m.contains("nonce too low") || m.contains("nonce has already been used") || m.contains("replacement transaction")
}

fn is_rejected(m: &str) -> bool {
    let m = m.to_lowercase();
    m.contains("insufficient funds") || m.contains("intrinsic gas") || m.contains("exceeds block gas limit")
}
