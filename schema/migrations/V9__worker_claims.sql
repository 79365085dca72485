-- Session requests lcw's worker claimed, skipped or missed (sortition). Written by the worker
-- alone, one row per (worker, manager, request), kept beside the outbox: it is the worker's own
-- record, not a projection of the chain, and replay leaves it alone. `lcw status`, the API and
-- the dashboard count outcomes from it.
--   sent:    a claimSession transaction went out (sent_block, claim_tx)
--   won:     the request was claimed by this worker (claimed_block)
--   lost:    a claim was sent, another worker's landed first
--   missed:  another worker took a request this worker was eligible for and did not claim
--            (reason: drained, busy, at_capacity, ... or late)
--   skipped: not claimed for a reason that holds for the whole request (model not served,
--            capabilities missing, not eligible)
--   expired: nobody claimed it before its expiry
CREATE TABLE worker_claims (
    worker        BLOB NOT NULL,
    manager       BLOB NOT NULL,
    req_id        INTEGER NOT NULL,
    model_id      BLOB NOT NULL,
    request_block INTEGER NOT NULL,
    -- First block this worker's claim could succeed, when the rule is known; NULL when the
    -- worker asks the chain (eligibleNow) instead.
    first_block   INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('sent', 'won', 'lost', 'missed', 'skipped', 'expired')),
    reason        TEXT,
    sent_block    INTEGER,
    claim_tx      BLOB,
    winner        BLOB,
    claimed_block INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (worker, manager, req_id)
) WITHOUT ROWID;
CREATE INDEX worker_claims_by_state ON worker_claims (worker, state);
