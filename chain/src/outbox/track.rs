//! The outbox on every head: receipts, reorgs, then the policy's actions, then nonce gaps. Thin:
//! it reads rows, asks [`super::policy`], and does what it says.

use std::collections::{HashMap, HashSet};

use alloy::primitives::{Address, B256, Bytes};
use alloy::rpc::types::TransactionReceipt;
use lcw_schema::store::outbox::{self as store, AttemptFees, Kind, LiveTx, NewAttempt, Receipt};
use rusqlite::TransactionBehavior;

use super::policy::{self, Action, Fill, Market};
use super::sign::{self, Sent, Unsigned};
use super::{Outbox, REORG_WINDOW, Tracked, now, take_nonce};
use crate::ChainResult;
use crate::node::{CallSpec, Chain, Fees, Head};

/// Blocks a job transaction waits in a pool before each head checks that it would still succeed.
const WAITED_BLOCKS: u64 = 2;

impl Outbox {
    /// On a new head: reorg checks of recently mined transactions, receipts of live ones, then per
    /// live transaction what the [`policy`] says (wait, re-broadcast at most once per block, bump
    /// under its ceiling, cancel, drop), then nonce gaps below live transactions filled. `fees`
    /// (the market now) enables bumps and fills; None only observes and re-broadcasts.
    pub async fn track(&mut self, chain: &Chain, head: &Head, fees: Option<Fees>) -> ChainResult<Vec<Tracked>> {
        self.track_until(chain, head, fees, None).await
    }

    /// [`Outbox::track`] that starts no new step after `until` (a step already started runs to
    /// its end): on a slow node the caller gets back to its jobs, and the steps left are done on
    /// a later head. Nothing is lost by stopping between steps: each head starts them all over.
    pub async fn track_until(
        &mut self,
        chain: &Chain,
        head: &Head,
        fees: Option<Fees>,
        until: Option<std::time::Instant>,
    ) -> ChainResult<Vec<Tracked>> {
        let late = || until.is_some_and(|t| std::time::Instant::now() >= t);
        let mut events = Vec::new();
        // Reorgs: a mined transaction whose block is no longer canonical goes back to `sent`.
        let above = head.number.saturating_sub(REORG_WINDOW);
        let recent = store::recent_mined(&self.conn, self.key.sender, self.key.lane, above)?;
        let mut canonical: HashMap<u64, Option<B256>> = HashMap::new();
        for (id, block, hash) in recent {
            if late() {
                return Ok(events);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = canonical.entry(block) {
                e.insert(chain.block(block.into()).await?.map(|b| b.hash));
            }
            if canonical[&block] != Some(hash) {
                events.extend(self.reorged_out(chain, head, id, block, fees).await?);
            }
        }
        let live = store::live(&self.conn, self.key.sender)?;
        if live.is_empty() || late() {
            return Ok(events);
        }
        // The nonce is read before the receipts: a block landing between the two reads must not
        // make a just-mined transaction look like it lost its nonce.
        let (latest, _) = chain.nonces(self.key.sender).await?;
        // No nonce below the chain's is ever taken again (a dropped row no longer holds its nonce,
        // but the chain may have used it).
        self.floor = self.floor.max(latest);
        // Receipts of this lane's live transactions: every version's hash (at most MAX_ATTEMPTS).
        let mut hashes: Vec<(i64, B256)> = Vec::new();
        for tx in live.iter().filter(|t| t.lane == self.key.lane) {
            hashes.extend(store::attempt_hashes(&self.conn, tx.id)?.into_iter().map(|h| (tx.id, h)));
        }
        let all: Vec<B256> = hashes.iter().map(|(_, h)| *h).collect();
        let receipts = chain.receipts(&all).await?;
        let mut mined: HashSet<i64> = HashSet::new();
        for ((id, _), r) in hashes.into_iter().zip(receipts) {
            if let Some(r) = r
                && mined.insert(id)
            {
                events.push(self.mined(id, &r)?);
            }
        }
        let rest: Vec<LiveTx> = live.into_iter().filter(|t| !mined.contains(&t.id)).collect();
        let market = Market { head: head.number, base_fee: head.base_fee, fees };
        for action in policy::plan(self.key.lane, &market, latest, self.filler_cap, &rest) {
            if late() {
                return Ok(events);
            }
            let Some(tx) = rest.iter().find(|t| t.id == action_id(&action)) else { continue };
            events.extend(self.act(chain, head.number, &market, tx, action).await?);
        }
        if let Some(fees) = fees
            && !late()
        {
            self.fill_gaps(chain, head.number, latest, fees).await?;
        }
        Ok(events)
    }

    fn mined(&mut self, id: i64, r: &TransactionReceipt) -> ChainResult<Tracked> {
        let receipt = Receipt {
            ok: r.status(),
            block: r.block_number.unwrap_or_default(),
            block_hash: r.block_hash.unwrap_or_default(),
            tx_hash: r.transaction_hash,
            gas_used: r.gas_used,
        };
        store::mark_mined(&self.conn, id, &receipt)?;
        let row = store::row(&self.conn, id)?;
        let (kind, jobs) = row.map(|r| (r.kind.as_str().to_owned(), r.jobs)).unwrap_or_default();
        Ok(if receipt.ok {
            Tracked::Mined { id, kind, block: receipt.block, gas_used: receipt.gas_used, jobs }
        } else {
            Tracked::Reverted { id, kind, block: receipt.block, jobs }
        })
    }

    /// Does one action of the policy for `tx`.
    async fn act(
        &mut self,
        chain: &Chain,
        head: u64,
        market: &Market,
        tx: &LiveTx,
        action: Action,
    ) -> ChainResult<Vec<Tracked>> {
        match action {
            Action::Drop { id, nonce } => {
                // The nonce is used and none of our versions has a receipt: another transaction took it.
                let note = format!("nonce {nonce} was used by another transaction");
                store::mark_dropped(&self.conn, id, &note)?;
                Ok(vec![Tracked::Dropped { id, note }])
            }
            Action::Wait { id, why } => {
                // One in a node's pool past its first blocks (priced out by a spike, behind a
                // gap) may be overtaken by events: mined later, it would revert.
                if head >= tx.signed_head.saturating_add(WAITED_BLOCKS)
                    && let Some(events) = self.drop_if_it_would_revert(chain, head, market, tx).await?
                {
                    return Ok(events);
                }
                tracing::trace!(id, ?why, "waiting");
                Ok(Vec::new())
            }
            Action::Rebroadcast { id, why } => {
                if let Some(events) = self.drop_if_it_would_revert(chain, head, market, tx).await? {
                    return Ok(events);
                }
                let Some(raw) = store::latest_raw(&self.conn, id)? else { return Ok(Vec::new()) };
                match self.broadcast(chain, id, &raw, head).await? {
                    Sent::Refused(reason) if tx.refusal.as_deref() != Some(reason.as_str()) => {
                        tracing::warn!(id, nonce = tx.nonce, %reason, ?why, "the node refuses the transaction; sending it again next block")
                    }
                    answer => tracing::debug!(id, ?why, ?answer, "re-broadcast"),
                }
                Ok(Vec::new())
            }
            Action::Bump { fees, .. } => {
                if let Some(events) = self.drop_if_it_would_revert(chain, head, market, tx).await? {
                    return Ok(events);
                }
                self.bump(chain, head, market, tx, fees).await
            }
            Action::Cancel { id, fees } => {
                let cap = policy::cap_of(tx.cap, self.filler_cap);
                let reason = tx.refusal.clone().unwrap_or_default();
                let note = format!(
                    "refused by the node ({reason}) while later nonces waited behind it; nonce {} taken by a transfer \
                     to self, jobs back to the schedule",
                    tx.nonce
                );
                let raw = {
                    let db = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    // Another lane may have acted on it since it was read.
                    let row = store::row(&db, id)?;
                    if !row.is_some_and(|r| r.status == store::Status::Sent && r.refusal.is_some()) {
                        return Ok(Vec::new());
                    }
                    let (filler, raw) =
                        take_nonce(&db, &self.key, Some(id), tx.nonce, Kind::Cancel, cap, fees, head, &note)?;
                    db.commit()?;
                    (filler, raw)
                };
                let answer = self.broadcast(chain, raw.0, &raw.1, head).await?;
                tracing::warn!(id, filler = raw.0, nonce = tx.nonce, lane = tx.lane.as_str(), %reason, ?answer,
                    "a refused transaction held back later nonces; a transfer to self takes its nonce");
                Ok(if tx.lane == self.key.lane { vec![Tracked::Dropped { id, note }] } else { Vec::new() })
            }
        }
    }

    /// Replaces `tx` at its nonce with `fees`; recorded only once a node took it (or the answer
    /// was lost: then it may be in a pool and its hash must be watched).
    async fn bump(
        &mut self,
        chain: &Chain,
        head: u64,
        market: &Market,
        tx: &LiveTx,
        mut fees: AttemptFees,
    ) -> ChainResult<Vec<Tracked>> {
        let body = store::body(&self.conn, tx.id)?;
        let blob = store::latest_raw(&self.conn, tx.id)?.and_then(|raw| sign::blob_of(&raw));
        if let Some((_, old)) = &blob
            && fees.blob_fee.is_none()
        {
            // A blob transaction recorded before blob fees were stored: price it as one.
            let last = AttemptFees { blob_fee: Some(*old), ..tx.last };
            let cap = policy::cap_of(tx.cap, self.filler_cap);
            match market.fees.map(|m| policy::replacement(last, m, cap)) {
                Some(Ok(f)) => fees = f,
                _ => return Ok(Vec::new()),
            }
        }
        let unsigned = Unsigned {
            nonce: tx.nonce,
            gas_limit: body.gas_limit,
            to: body.to,
            data: &body.calldata,
            value: body.value,
            sidecar: blob.as_ref().map(|(s, _)| s),
        };
        let (hash, raw) = sign::sign(&self.key.signer, self.key.chain_id, &unsigned, fees)?;
        let attempt = tx.attempts;
        let sent = Sent::of(chain.send_raw(&raw).await);
        let record = |s: &mut Self| -> ChainResult<()> {
            let db = s.conn.transaction()?;
            let a = NewAttempt { outbox_id: tx.id, attempt, hash, raw: &raw, fees, now: now() };
            store::record_bump(&db, &a, head)?;
            db.commit()?;
            Ok(())
        };
        match sent {
            Sent::Accepted => {
                record(self)?;
                tracing::info!(
                    id = tx.id,
                    nonce = tx.nonce,
                    attempt,
                    max_fee = fees.max_fee,
                    tip = fees.tip,
                    blob_fee = fees.blob_fee,
                    "replaced a stuck transaction with higher fees"
                );
                Ok(vec![Tracked::Bumped { id: tx.id, attempt }])
            }
            Sent::Failed(e) => {
                record(self)?;
                tracing::warn!(id = tx.id, error = %e, "fee bump sent without an answer; watching it");
                Ok(Vec::new())
            }
            Sent::Refused(e) | Sent::NonceUsed(e) => {
                store::record_bump_refused(&self.conn, tx.id, head)?;
                tracing::warn!(id = tx.id, error = %e, "fee bump refused; not recorded, tried again later");
                Ok(Vec::new())
            }
        }
    }

    /// Fills nonces no row holds below the key's live transactions, under the store's write lock
    /// (two lanes never fill the same one).
    async fn fill_gaps(&mut self, chain: &Chain, head: u64, latest: u64, market: Fees) -> ChainResult<()> {
        let sender: Address = self.key.sender;
        // A plain read first: the write lock is taken only when there is a gap to fill (the
        // indexer's long write transactions must not stall this lane on every head).
        let top = store::max_live_nonce(&self.conn, sender)?;
        if policy::gaps(latest, &store::held_nonces(&self.conn, sender, latest)?, top).is_empty() {
            return Ok(());
        }
        let mut sends: Vec<(i64, Bytes)> = Vec::new();
        {
            let db = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let top = store::max_live_nonce(&db, sender)?;
            let held = store::held_nonces(&db, sender, latest)?;
            let gaps = policy::gaps(latest, &held, top);
            if gaps.is_empty() {
                return Ok(());
            }
            for nonce in gaps {
                let dropped = store::dropped_at(&db, sender, nonce)?;
                match policy::fill(self.key.lane, dropped.as_ref(), market, self.filler_cap) {
                    Fill::Resign { id, mut fees } => {
                        let body = store::body(&db, id)?;
                        let blob = store::latest_raw(&db, id)?.and_then(|raw| sign::blob_of(&raw));
                        let cap = policy::cap_of(dropped.as_ref().and_then(|d| d.cap), self.filler_cap);
                        fees.blob_fee =
                            blob.as_ref().map(|(_, old)| fees.blob_fee.unwrap_or(*old).min(cap.per_blob_gas));
                        let unsigned = Unsigned {
                            nonce,
                            gas_limit: body.gas_limit,
                            to: body.to,
                            data: &body.calldata,
                            value: body.value,
                            sidecar: blob.as_ref().map(|(s, _)| s),
                        };
                        let (hash, raw) = sign::sign(&self.key.signer, self.key.chain_id, &unsigned, fees)?;
                        let attempt = dropped.as_ref().map_or(0, |d| d.attempts);
                        let a = NewAttempt { outbox_id: id, attempt, hash, raw: &raw, fees, now: now() };
                        store::resign(&db, &a, head, &format!("signed again to fill its nonce {nonce}"))?;
                        tracing::warn!(id, nonce, "a nonce no row held; the transaction that held it is signed again");
                        sends.push((id, raw));
                    }
                    Fill::Transfer { fees, cap } => {
                        let note = format!("fills nonce {nonce}, which no transaction held");
                        let (id, raw) = take_nonce(&db, &self.key, None, nonce, Kind::Fill, cap, fees, head, &note)?;
                        tracing::warn!(id, nonce, "a nonce no row held; a transfer to self takes it");
                        sends.push((id, raw));
                    }
                }
            }
            db.commit()?;
        }
        for (id, raw) in sends {
            self.broadcast(chain, id, &raw, head).await?;
        }
        Ok(())
    }

    /// A mined transaction whose block left the canonical chain. Its nonce is free again. If its
    /// call still succeeds on the new branch, the same raw bytes go out again; if it would now
    /// revert (another keeper released the jobs on the new branch, or the new branch's clock is
    /// behind the window), broadcasting it would only burn gas, so the nonce is taken by a
    /// zero-value transfer to self under its ceiling and the jobs return to the schedule.
    async fn reorged_out(
        &mut self,
        chain: &Chain,
        head: &Head,
        id: i64,
        block: u64,
        market: Option<Fees>,
    ) -> ChainResult<Vec<Tracked>> {
        let Some(row) = store::row(&self.conn, id)? else { return Ok(Vec::new()) };
        let body = store::body(&self.conn, id)?;
        let was_ok = row.status == store::Status::Mined;
        let reorged =
            Tracked::Reorged { id, block, kind: row.kind.as_str().to_owned(), jobs: row.jobs.clone(), was_ok };
        // A transaction that moves value (a stake) is not judged by a value-less simulation: it
        // goes out again as it was.
        let carries_value = !body.value.is_zero();
        // Judge it against the new branch: `head` was read before the reorg was seen and may
        // still be the abandoned branch's tip, whose clock can be ahead of the new one.
        let sim = if carries_value {
            Vec::new()
        } else {
            let tip = chain.head().await?;
            let call = CallSpec { from: self.key.sender, to: body.to, data: body.calldata };
            chain.simulate(&[call], tip.number.saturating_add(1), tip.timestamp.saturating_add(1)).await?
        };
        if carries_value || sim.first().is_some_and(|s| s.ok()) {
            store::back_to_sent(&self.conn, id, "reorged out; re-broadcast")?;
            tracing::warn!(id, block, "a mined outbox transaction was reorged out; re-broadcasting it");
            return Ok(vec![reorged]);
        }
        let why = sim.first().and_then(|s| s.error.clone()).unwrap_or_else(|| "no result".into());
        let nonce = row.nonce.unwrap_or_default();
        let note = format!(
            "reorged out of block {block} and would now revert ({why}); nonce {nonce} taken by a transfer to self, \
             jobs back to the schedule"
        );
        let cancel = self.take_its_nonce(chain, head.number, &row, market, &note).await?;
        tracing::warn!(id, block, cancel, nonce, reason = %why, "a reorged-out transaction would now revert; cancelled it");
        Ok(vec![reorged, Tracked::Dropped { id, note }])
    }

    /// Before a stuck job transaction goes out again, and while one waits in a pool: if its call
    /// would now revert (another
    /// settler or keeper ended its jobs first, its deadline passed while it was refused or
    /// evicted), sending it would only burn gas, so its nonce is taken by a transfer to self under
    /// its ceiling and its jobs return to their planners. Blob transactions (the simulation
    /// cannot carry their blobs) and operator verbs go out as they are.
    async fn drop_if_it_would_revert(
        &mut self,
        chain: &Chain,
        head: u64,
        market: &Market,
        tx: &LiveTx,
    ) -> ChainResult<Option<Vec<Tracked>>> {
        if !matches!(tx.kind, Kind::Release | Kind::ClaimTimeout | Kind::SettleStuck | Kind::Ack | Kind::Claim) {
            return Ok(None);
        }
        let Some(row) = store::row(&self.conn, tx.id)? else { return Ok(None) };
        let body = store::body(&self.conn, tx.id)?;
        if !body.value.is_zero() {
            return Ok(None);
        }
        let tip = chain.head().await?;
        let call = CallSpec { from: self.key.sender, to: body.to, data: body.calldata };
        let sim = chain.simulate(&[call], tip.number.saturating_add(1), tip.timestamp.saturating_add(1)).await?;
        let Some(why) = sim.first().filter(|s| !s.ok()).map(|s| s.error.clone().unwrap_or_else(|| "no result".into()))
        else {
            return Ok(None);
        };
        let note = format!(
            "not mined yet and would now revert ({why}); nonce {} taken by a transfer to self, jobs back to the \
             schedule",
            tx.nonce
        );
        let cancel = self.take_its_nonce(chain, head, &row, market.fees, &note).await?;
        tracing::warn!(id = tx.id, cancel, nonce = tx.nonce, kind = tx.kind.as_str(), reason = %why,
            "a transaction waiting to be mined would now revert; cancelled it");
        Ok(Some(if tx.lane == self.key.lane { vec![Tracked::Dropped { id: tx.id, note }] } else { Vec::new() }))
    }

    /// Takes the nonce of `row` by a zero-value transfer to self, priced above its last version
    /// (a node replaces only for a bump) under its ceiling; returns the transfer's row id.
    async fn take_its_nonce(
        &mut self,
        chain: &Chain,
        head: u64,
        row: &store::OutboxRow,
        market: Option<Fees>,
        note: &str,
    ) -> ChainResult<i64> {
        let id = row.id;
        let last = store::last_attempt(&self.conn, id)?.map(|(_, f)| f).unwrap_or_default();
        let cap = policy::cap_of(row.cap, self.filler_cap);
        let last_fees = Fees { max_fee: last.max_fee, tip: last.tip };
        let base = policy::capped(market.unwrap_or(last_fees), cap);
        let max_fee = base.max_fee.max(policy::raise(last.max_fee, policy::BUMP_PERCENT)).min(cap.per_gas);
        let fees = Fees { max_fee, tip: base.tip.max(policy::raise(last.tip, policy::BUMP_PERCENT)).min(max_fee) };
        let nonce = row.nonce.unwrap_or_default();
        let (cancel, raw) = {
            let db = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = take_nonce(&db, &self.key, Some(id), nonce, Kind::Cancel, cap, fees, head, note)?;
            db.commit()?;
            r
        };
        if let Sent::Failed(e) = self.broadcast(chain, cancel, &raw, head).await? {
            tracing::warn!(id = cancel, error = %e, "broadcast failed; re-broadcasting on the next head");
        }
        Ok(cancel)
    }
}

fn action_id(a: &Action) -> i64 {
    match *a {
        Action::Drop { id, .. }
        | Action::Rebroadcast { id, .. }
        | Action::Wait { id, .. }
        | Action::Bump { id, .. }
        | Action::Cancel { id, .. } => id,
    }
}
