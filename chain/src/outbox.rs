//! The outbox: every transaction lcw sends for a key, kept in the store so that nothing is signed
//! twice, nothing signed is lost, nothing pays more than its ceiling, and a restart picks up
//! exactly where the last run stopped.
//!
//! - **intent** first (what, for which jobs, its fee ceiling, its chain), in the same transaction
//!   as the job links; the store's trigger refuses a second live transaction for a job, and
//!   [`Outbox::submit`] answers [`ChainError::InFlight`] (nothing is signed; the caller skips it);
//! - **sign** with an explicitly owned nonce, and store the raw transaction *before* broadcasting;
//! - **lanes**: one key may send from several tasks at once; nonces are taken from the whole
//!   key's outbox under the store's write lock, while each lane ([`Lane`]) tracks and replaces
//!   only its own transactions;
//! - **track** on every head: receipts of live transactions, reorg checks of recently mined ones
//!   (a mined transaction whose block is reorged out goes back to `sent` and out again, or, when
//!   it would now revert, its nonce goes to a zero-value transfer to self and its jobs back to the
//!   schedule), then the [`policy`] decides for each live transaction, and the outbox does it;
//! - **reconcile** at start: the chain id of the key's live rows against the node's, nonces
//!   against the chain, every unmined raw transaction re-broadcast, intents that were never signed
//!   and transactions no node ever took cancelled (the schedule re-plans them from the store).
//!
//! # Fees and nonces
//!
//! - **Ceilings.** Every transaction carries its [`FeeCap`] ([`Intent::cap`]), stored with its
//!   row. The first signing offers the market's fees under it; every bump, re-sign and cancel of
//!   the row stays at or under it. A transfer to self that stands for no row uses the lane's
//!   filler ceiling ([`Outbox::with_filler_cap`], the default [`FeeCap`] otherwise).
//! - **Bumps.** A transaction unmined [`STUCK_BLOCKS`] after its last signing, or whose max fee
//!   the base fee has passed, is replaced at its nonce with every fee raised by [`BUMP_PERCENT`]
//!   ([`BLOB_BUMP_PERCENT`] for a blob transaction, as geth's blob pool requires), or to the
//!   market's fees if higher, capped at its ceiling. It is not replaced when the base fee is above
//!   its ceiling (no fee it may offer gets it in), when it is at its ceiling, when a replacement
//!   the node would accept (+10 %, blob +100 % on every fee) would pass the ceiling, when the
//!   node refuses it for lack of funds, or once it has [`MAX_ATTEMPTS`] versions: it then waits
//!   at the version it has. A bump is recorded only once a node took it: a refused one is not
//!   the base of the next, and is not tried again for [`STUCK_BLOCKS`]. All fee arithmetic
//!   saturates.
//! - **Back-off.** A transaction the node refuses keeps its row and its nonce (status `sent`, the
//!   reason in its `refusal` column, written when it changes) and its jobs stay in flight:
//!   [`Outbox::submit`] answers [`ChainError::Rejected`] for the first refusal, the outbox sends
//!   it again at most once per block until a node takes it, and [`Outbox::refused`] lists what is
//!   refused and why. A caller that no longer wants it calls [`Outbox::cancel`]. Rows therefore
//!   grow with intents, not with time.
//! - **Gaps.** A refused transaction that holds back later nonces of the key gives its nonce to a
//!   zero-value transfer to self from the next block on (another lane's, once that lane has not
//!   re-broadcast it for [`policy::ORPHAN_BLOCKS`] blocks: its process is gone); its jobs return
//!   to the schedule. A nonce no row holds below a live transaction (the chain's `latest` nonce
//!   against every row of the key) is found on the next head and filled under the store's write
//!   lock, so that two lanes never fill the same nonce: the row that held it is signed again if
//!   it is this lane's and its jobs went nowhere else, or else a transfer to self takes it.

pub mod policy;
mod sign;
mod track;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use alloy::eips::eip4844::BlobTransactionSidecar;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::signers::local::PrivateKeySigner;
use lcw_schema::store::outbox::{self as store, AttemptFees, Broadcast, Ceiling, Kind, NewAttempt, NewIntent};
use rusqlite::{Connection, TransactionBehavior};

pub use lcw_schema::store::outbox::{Lane, RefusedTx};
pub use policy::{BLOB_BUMP_PERCENT, BUMP_PERCENT, MAX_ATTEMPTS, STUCK_BLOCKS};

use crate::fees::FeeCap;
use crate::node::{Chain, Fees};
use crate::{ChainError, ChainResult};
use sign::{Sent, Unsigned};

/// Blocks after which a mined transaction is no longer checked for a reorg (and the store, which
/// may lag or sit on another branch for a moment, is not trusted over the outbox's own record).
pub const REORG_WINDOW: u64 = 128;

/// A planned transaction.
#[derive(Debug, Clone)]
pub struct Intent {
    /// Outbox kind (`release`, `claim_timeout`, ...; see [`lcw_schema::store::outbox::Kind`]).
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
    /// The most it may pay per gas and per blob gas, whatever the market does, now and in every
    /// bump, re-sign or cancel of it.
    pub cap: FeeCap,
}

/// The blob of a type-3 transaction.
#[derive(Debug, Clone)]
pub struct BlobPart {
    /// Blobs with their KZG commitments and proofs.
    pub sidecar: BlobTransactionSidecar,
    /// maxFeePerBlobGas, from the chain's blob base fee (never above the intent's ceiling).
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
    /// Will never be mined: its nonce was used by another transaction, or went to a transfer to
    /// self (refused while holding back later nonces, cancelled, reorged out and now invalid).
    /// Its jobs return to the schedule.
    Dropped { id: i64, note: String },
}

/// What [`Outbox::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was never signed: dropped.
    Unsigned,
    /// No node ever took it and no later nonce of the key was signed: dropped, and its nonce is
    /// free for the next transaction.
    Released {
        /// The freed nonce.
        nonce: u64,
    },
    /// A zero-value transfer to self (row `filler`) takes its nonce, under its ceiling.
    Replaced {
        /// The transfer's row.
        filler: i64,
        /// The nonce.
        nonce: u64,
    },
    /// Already mined, reverted or dropped: nothing to do.
    Settled,
}

/// The signing key, its chain and the lane: what signing and new rows need.
#[derive(Debug)]
struct Key {
    signer: PrivateKeySigner,
    sender: Address,
    chain_id: u64,
    lane: Lane,
}

/// The outbox of one signing key, for one lane.
#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    key: Key,
    /// The chain's nonce as last read (`max(latest, pending)`): no nonce below it is taken.
    floor: u64,
    /// The ceiling of a transfer to self that stands for no row.
    filler_cap: FeeCap,
}

fn now() -> u64 {
    lcw_schema::store::unix_now()
}

fn ceiling(cap: FeeCap) -> Ceiling {
    Ceiling { per_gas: cap.per_gas, per_blob_gas: cap.per_blob_gas }
}

impl Outbox {
    /// Opens the `lane` of `signer`'s outbox in the store at `db`, for the node of `chain_id`.
    /// Refused when live transactions of the key were signed for another chain.
    pub fn open(db: &Path, signer: PrivateKeySigner, chain_id: u64, lane: Lane) -> ChainResult<Self> {
        let conn = lcw_schema::store::Store::connect(db)?;
        let sender = signer.address();
        check_chain(&conn, sender, chain_id)?;
        Ok(Outbox { conn, key: Key { signer, sender, chain_id, lane }, floor: 0, filler_cap: FeeCap::default() })
    }

    /// The ceiling of transfers to self that fill a nonce no row held (the operator's cap for
    /// this key). [`FeeCap::default`] unless set.
    pub fn with_filler_cap(mut self, cap: FeeCap) -> Self {
        self.filler_cap = cap;
        self
    }

    /// The sending address.
    pub fn sender(&self) -> Address {
        self.key.sender
    }

    /// The lane.
    pub fn lane(&self) -> Lane {
        self.key.lane
    }

    /// Reconciles with the chain at start: refuses a node of another chain than the key's live
    /// rows, cancels unsigned intents and transactions no node ever took, re-broadcasts the rest,
    /// settles what was mined while lcw was away, fills nonce gaps and sets the nonce floor.
    pub async fn reconcile(&mut self, chain: &Chain) -> ChainResult<Vec<Tracked>> {
        if chain.chain_id != self.key.chain_id {
            return Err(ChainError::Config(format!(
                "the outbox of {} was opened for chain {}, but the node serves chain {}",
                self.key.sender, self.key.chain_id, chain.chain_id
            )));
        }
        check_chain(&self.conn, self.key.sender, chain.chain_id)?;
        let cancelled =
            store::drop_intents(&self.conn, self.key.sender, self.key.lane, "cancelled at restart before signing")?;
        if cancelled > 0 {
            tracing::info!(cancelled, "cancelled unsigned intents of the previous run");
        }
        let (latest, pending) = chain.nonces(self.key.sender).await?;
        self.floor = self.floor.max(latest).max(pending);
        let head = chain.head().await?;
        let market = match chain.fees(0).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "eth_feeHistory failed; nothing is bumped or filled until the next head");
                None
            }
        };
        let mut events = Vec::new();
        // What the previous run signed but no node ever took (the caller was told it was
        // refused): not resumed, as an unsigned intent is not; its jobs return to the schedule.
        for r in store::refused(&self.conn, self.key.sender, self.key.lane)? {
            let row = store::row(&self.conn, r.id)?;
            if row.is_some_and(|row| row.accepted_block.is_none()) {
                let done = self.cancel_at(chain, r.id, head.number, market).await?;
                tracing::info!(id = r.id, reason = %r.reason, ?done, "cancelled a refused transaction of the previous run");
                events
                    .push(Tracked::Dropped { id: r.id, note: format!("refused ({}); cancelled at restart", r.reason) });
            }
        }
        // Everything still live goes out again (the node may have restarted too).
        let lane = self.key.lane;
        for tx in store::live(&self.conn, self.key.sender)?.into_iter().filter(|t| t.lane == lane) {
            if let Some(raw) = store::latest_raw(&self.conn, tx.id)? {
                match self.broadcast(chain, tx.id, &raw, head.number).await? {
                    Sent::Accepted => tracing::info!(id = tx.id, nonce = tx.nonce, "re-broadcast after restart"),
                    other => tracing::debug!(id = tx.id, answer = ?other, "re-broadcast after restart not taken"),
                }
            }
        }
        events.extend(self.track(chain, &head, market).await?);
        tracing::info!(sender = %self.key.sender, latest, pending, floor = self.floor, "nonces reconciled");
        Ok(events)
    }

    /// Jobs that have a live (intent or sent) transaction in this lane, refused ones included.
    pub fn live_jobs(&self) -> ChainResult<HashSet<u64>> {
        Ok(store::live_jobs(&self.conn, self.key.sender, self.key.lane)?)
    }

    /// The live transaction of each job of this lane (refused ones included): its outbox id, for
    /// [`Outbox::cancel`].
    pub fn live_by_job(&self) -> ChainResult<std::collections::HashMap<u64, i64>> {
        Ok(store::live_by_job(&self.conn, self.key.sender, self.key.lane)?)
    }

    /// Jobs released, timed out or settled by any settler transaction in this store mined at or
    /// after `block`. The store may not show them yet, or may show the other side of a reorg the
    /// outbox has not noticed yet; either way they must not be planned again (a reorg the outbox
    /// notices puts them back in flight, or drops the transaction and frees them).
    pub fn recently_mined_jobs(&self, block: u64) -> ChainResult<HashSet<u64>> {
        Ok(store::recently_mined_jobs(&self.conn, block)?)
    }

    /// Jobs acted on by this sender's transactions of `kind` mined at or after `block`.
    pub fn mined_since(&self, kind: &str, block: u64) -> ChainResult<HashSet<u64>> {
        Ok(store::mined_since(&self.conn, self.key.sender, kind, block)?)
    }

    /// Transactions of this lane by status (for summaries).
    pub fn counts(&self) -> ChainResult<BTreeMap<String, u64>> {
        Ok(store::counts(&self.conn, self.key.sender, self.key.lane)?)
    }

    /// Calldata of this lane's live (intent or sent) transactions of `kind`: what is in flight
    /// for transactions that act on no job (a sortition claim names its request in its calldata).
    pub fn live_calls(&self, kind: &str) -> ChainResult<Vec<Bytes>> {
        Ok(store::live_calls(&self.conn, self.key.sender, self.key.lane, kind)?)
    }

    /// Calldata and mined block of this lane's transactions of `kind` mined or reverted at or
    /// after `block`, with whether each succeeded.
    pub fn settled_calls(&self, kind: &str, block: u64) -> ChainResult<Vec<(Bytes, u64, bool)>> {
        Ok(store::settled_calls(&self.conn, self.key.sender, self.key.lane, kind, block)?)
    }

    /// The id of the live transaction of `kind` without jobs (withdraw, deregister), if any.
    pub fn live_of_kind(&self, kind: &str) -> ChainResult<Option<i64>> {
        Ok(store::live_of_kind(&self.conn, self.key.sender, kind)?)
    }

    /// The most this key's live transactions (every lane) can take from its wallet: what a new
    /// transaction must leave room for.
    pub fn live_cost(&self) -> ChainResult<u128> {
        Ok(store::live_cost(&self.conn, self.key.sender)?)
    }

    /// Live transactions of this lane the node refuses, with its reason.
    pub fn refused(&self) -> ChainResult<Vec<RefusedTx>> {
        Ok(store::refused(&self.conn, self.key.sender, self.key.lane)?)
    }

    /// Records an intent, signs it with the next nonce at the market's fees under its ceiling,
    /// stores the raw transaction and broadcasts it. Returns the outbox id and transaction hash.
    ///
    /// - [`ChainError::InFlight`]: one of its jobs already has a live transaction (any lane, any
    ///   key); nothing was written or signed, the caller skips the job.
    /// - [`ChainError::Rejected`]: the node refused the broadcast. The row stays (status `sent`,
    ///   its nonce held, its jobs in flight) and goes out again once per block until a node takes
    ///   it; [`Outbox::refused`] shows it, [`Outbox::cancel`] gives it up.
    pub async fn submit(&mut self, chain: &Chain, intent: &Intent, fees: Fees, head: u64) -> ChainResult<(i64, B256)> {
        let kind = Kind::parse(intent.kind).map_err(|_| {
            ChainError::Config(format!(
                "`{}` is not an outbox transaction kind; add it to store::outbox::Kind",
                intent.kind
            ))
        })?;
        let first = policy::capped(fees, intent.cap);
        let blob_fee = intent.blob.as_ref().map(|b| b.max_fee_per_blob_gas.min(intent.cap.per_blob_gas));
        let fees = AttemptFees { max_fee: first.max_fee, tip: first.tip, blob_fee };
        // 1. The intent and its jobs (the trigger refuses a job that already has a live transaction).
        let id = self.record_intent(kind, intent, head)?;
        // 2. Sign and store the raw bytes before they leave the process.
        let (nonce, hash, raw) = match self.sign_and_record(id, intent, fees, head) {
            Ok(v) => v,
            Err(e) => {
                // Nothing was signed: free the jobs for the next plan.
                let _ = store::mark_dropped(&self.conn, id, &format!("not signed: {e}"));
                return Err(e);
            }
        };
        // 3. Broadcast. No answer leaves it `sent`: the next head sends it again.
        match self.broadcast(chain, id, &raw, head).await? {
            Sent::Accepted => {}
            Sent::NonceUsed(e) => {
                tracing::warn!(id, nonce, error = %e, "nonce already used; re-reading nonces from the chain");
                let (latest, pending) = chain.nonces(self.key.sender).await?;
                self.floor = self.floor.max(latest).max(pending);
            }
            Sent::Refused(reason) => {
                tracing::warn!(id, nonce, %reason, "the node refused the transaction; it keeps its nonce and goes out again next block");
                return Err(ChainError::Rejected(reason));
            }
            Sent::Failed(e) => tracing::warn!(id, error = %e, "broadcast failed; re-broadcasting on the next head"),
        }
        Ok((id, hash))
    }

    fn record_intent(&mut self, kind: Kind, intent: &Intent, head: u64) -> ChainResult<i64> {
        let tx = self.conn.transaction()?;
        let n = NewIntent {
            sender: self.key.sender,
            kind,
            lane: self.key.lane,
            to: intent.to,
            calldata: &intent.data,
            value: intent.value,
            gas_limit: intent.gas_limit,
            jobs: &intent.jobs,
            created_head: head,
            target_block: intent.target_block,
            cap: ceiling(intent.cap),
            chain_id: self.key.chain_id,
            now: now(),
        };
        match store::insert_intent(&tx, &n)? {
            Ok(id) => {
                tx.commit()?;
                Ok(id)
            }
            Err(busy) => Err(ChainError::InFlight(busy.to_string())),
        }
    }

    /// Takes the next nonce (above every nonce this key's outbox holds, so several lcw processes
    /// sharing a key never collide), signs, and stores the raw transaction, atomically.
    fn sign_and_record(
        &mut self,
        id: i64,
        intent: &Intent,
        fees: AttemptFees,
        head: u64,
    ) -> ChainResult<(u64, B256, Bytes)> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held = store::max_held_nonce(&tx, self.key.sender)?;
        let next = match held {
            None => 0,
            Some(n) => n.checked_add(1).ok_or_else(|| {
                ChainError::Store(format!(
                    "the outbox holds nonce {n} for {}, the last a key has; the store is damaged",
                    self.key.sender
                ))
            })?,
        };
        let nonce = self.floor.max(next);
        let unsigned = Unsigned {
            nonce,
            gas_limit: intent.gas_limit,
            to: intent.to,
            data: &intent.data,
            value: intent.value,
            sidecar: intent.blob.as_ref().map(|b| &b.sidecar),
        };
        let (hash, raw) = sign::sign(&self.key.signer, self.key.chain_id, &unsigned, fees)?;
        store::set_signed(&tx, id, nonce, head, now())?;
        store::insert_attempt(&tx, &NewAttempt { outbox_id: id, attempt: 0, hash, raw: &raw, fees, now: now() })?;
        tx.commit()?;
        Ok((nonce, hash, raw))
    }

    /// Sends `raw` (row `id`'s latest version) and records how it went at `head`.
    async fn broadcast(&mut self, chain: &Chain, id: i64, raw: &Bytes, head: u64) -> ChainResult<Sent> {
        let sent = Sent::of(chain.send_raw(raw).await);
        let outcome = match &sent {
            Sent::Accepted => Broadcast::Accepted,
            Sent::Refused(reason) => Broadcast::Refused(reason),
            Sent::NonceUsed(_) | Sent::Failed(_) => Broadcast::Unanswered,
        };
        store::record_broadcast(&self.conn, id, head, outcome)?;
        Ok(sent)
    }

    /// Gives up row `id` of this lane: an unsigned intent is dropped; a signed transaction no node
    /// ever took, with no later nonce of the key signed, is dropped and its nonce freed; any other
    /// unmined one has its nonce taken by a zero-value transfer to self under its ceiling. Its
    /// jobs return to the schedule.
    pub async fn cancel(&mut self, chain: &Chain, id: i64) -> ChainResult<Cancelled> {
        let head = chain.head().await?;
        let market = chain.fees(0).await.ok();
        self.cancel_at(chain, id, head.number, market).await
    }

    async fn cancel_at(&mut self, chain: &Chain, id: i64, head: u64, market: Option<Fees>) -> ChainResult<Cancelled> {
        let live = store::live(&self.conn, self.key.sender)?;
        let (done, send) = {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = store::row(&tx, id)?.ok_or_else(|| ChainError::Config(format!("no outbox transaction #{id}")))?;
            if row.sender != self.key.sender || row.lane != self.key.lane {
                return Err(ChainError::Config(format!(
                    "outbox transaction #{id} belongs to {} ({} lane), not to {} ({} lane)",
                    row.sender,
                    row.lane.as_str(),
                    self.key.sender,
                    self.key.lane.as_str()
                )));
            }
            let nonce = row.nonce.unwrap_or_default();
            let (done, send) = match row.status {
                store::Status::Intent => {
                    store::mark_dropped(&tx, id, "cancelled before signing")?;
                    (Cancelled::Unsigned, None)
                }
                store::Status::Mined | store::Status::Reverted | store::Status::Dropped => (Cancelled::Settled, None),
                store::Status::Sent if row.accepted_block.is_none() && !store::holds_above(&tx, row.sender, nonce)? => {
                    store::mark_dropped(&tx, id, &format!("cancelled; nonce {nonce} released"))?;
                    (Cancelled::Released { nonce }, None)
                }
                store::Status::Sent => {
                    let cap = policy::cap_of(row.cap, self.filler_cap);
                    let fees = match live.iter().find(|t| t.id == id) {
                        Some(t) => policy::cancel_fees(t, market, cap),
                        None => policy::capped(market.unwrap_or(Fees { max_fee: cap.per_gas, tip: 0 }), cap),
                    };
                    let note = format!("cancelled; nonce {nonce} taken by a transfer to self");
                    let (filler, raw) =
                        take_nonce(&tx, &self.key, Some(id), nonce, Kind::Cancel, cap, fees, head, &note)?;
                    (Cancelled::Replaced { filler, nonce }, Some((filler, raw)))
                }
            };
            tx.commit()?;
            (done, send)
        };
        if let Some((filler, raw)) = send {
            let sent = self.broadcast(chain, filler, &raw, head).await?;
            tracing::info!(id, filler, answer = ?sent, "cancelled: a transfer to self takes its nonce");
        }
        Ok(done)
    }
}

/// Refuses a node of another chain than the key's live rows were signed for.
fn check_chain(conn: &Connection, sender: Address, chain_id: u64) -> ChainResult<()> {
    let ids = store::live_chain_ids(conn, sender)?;
    if let Some(other) = ids.into_iter().flatten().find(|c| *c != chain_id) {
        return Err(ChainError::Config(format!(
            "the store's outbox has live transactions of {sender} for chain {other}, but the node serves chain \
             {chain_id}; point the RPC at chain {other} until they are mined, or use another data dir for chain \
             {chain_id}"
        )));
    }
    Ok(())
}

/// Signs a zero-value transfer to self at `nonce` and records it (dropping `victim`, whose nonce
/// it takes, first), in `tx`. Returns the new row and its raw bytes.
#[allow(clippy::too_many_arguments)]
fn take_nonce(
    tx: &Connection,
    key: &Key,
    victim: Option<i64>,
    nonce: u64,
    kind: Kind,
    cap: FeeCap,
    fees: Fees,
    head: u64,
    note: &str,
) -> ChainResult<(i64, Bytes)> {
    let max_fee = fees.max_fee.min(cap.per_gas);
    let fees = AttemptFees { max_fee, tip: fees.tip.min(max_fee), blob_fee: None };
    let empty = Bytes::new();
    let unsigned =
        Unsigned { nonce, gas_limit: 21_000, to: key.sender, data: &empty, value: U256::ZERO, sidecar: None };
    let (hash, raw) = sign::sign(&key.signer, key.chain_id, &unsigned, fees)?;
    if let Some(v) = victim {
        store::mark_dropped(tx, v, note)?;
    }
    let filler_note = match victim {
        Some(v) => format!("fills nonce of #{v}"),
        None => note.to_owned(),
    };
    let id = store::insert_filler(
        tx,
        &store::NewFiller {
            sender: key.sender,
            kind,
            lane: key.lane,
            nonce,
            head,
            note: &filler_note,
            cap: ceiling(cap),
            chain_id: key.chain_id,
            now: now(),
        },
    )?;
    store::insert_attempt(tx, &NewAttempt { outbox_id: id, attempt: 0, hash, raw: &raw, fees, now: now() })?;
    Ok((id, raw))
}
