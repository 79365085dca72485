-- Lanes: several lcw tasks may send with one key at once (`lcw run` settles and serves jobs in one
-- process; an operator verb may run beside `lcw work`). Nonces stay shared per key (taken under
-- the store's write lock), but each lane tracks, bumps, re-broadcasts and cancels only its own
-- transactions, so two trackers never replace the same transaction.
ALTER TABLE outbox ADD COLUMN lane TEXT NOT NULL DEFAULT 'operator';
UPDATE outbox SET lane = 'settler' WHERE kind IN ('release', 'claim_timeout', 'settle_stuck');
UPDATE outbox SET lane = 'worker' WHERE kind IN ('ack', 'complete');
-- A transfer to self that filled a reorged-out transaction's nonce belongs to that lane.
UPDATE outbox SET lane = coalesce(
    (SELECT o.lane FROM outbox o WHERE outbox.note = 'fills nonce of #' || o.id), lane)
WHERE kind = 'cancel';
CREATE INDEX outbox_lane_live ON outbox (sender, lane, nonce) WHERE status IN ('intent', 'sent');
