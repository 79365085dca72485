-- The outbox: lcw's own transactions (settler releases and timeouts, operator verbs, later the
-- worker's acks and completions), one writer per signing key. The intent is written before
-- signing, every signed version before it is broadcast, so a restart re-broadcasts exactly what
-- may already be in a mempool and never signs a second transaction for the same job.

CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    sender        BLOB NOT NULL,
    kind          TEXT NOT NULL,    -- release | claim_timeout | settle_stuck | withdraw | deregister | ...
    to_address    BLOB NOT NULL,
    calldata      BLOB NOT NULL,
    value_wei     TEXT NOT NULL,
    gas_limit     INTEGER NOT NULL,
    nonce         INTEGER,          -- NULL while only an intent
    -- intent: planned, not signed | sent: signed and broadcast (or about to be) | mined: receipt
    -- status 1 | reverted: receipt status 0 | dropped: never mined and the nonce went to another
    -- transaction, or cancelled before signing (jobs return to the schedule)
    status        TEXT NOT NULL CHECK (status IN ('intent', 'sent', 'mined', 'reverted', 'dropped')),
    created_at    INTEGER NOT NULL, -- unix s (wall clock)
    created_head  INTEGER NOT NULL, -- head block when planned
    target_block  INTEGER,          -- the block it was meant to land in
    sent_at       INTEGER,
    mined_block   INTEGER,
    mined_hash    BLOB,             -- block hash, to notice a reorg that removes it
    mined_tx      BLOB,             -- the attempt that was mined
    gas_used      INTEGER,
    note          TEXT              -- why it was dropped or reverted
);
CREATE INDEX outbox_live ON outbox (sender, nonce) WHERE status IN ('intent', 'sent');
CREATE UNIQUE INDEX outbox_nonce ON outbox (sender, nonce) WHERE status IN ('sent', 'mined', 'reverted');

-- Every signed version of an outbox transaction (the first, then fee bumps at the same nonce).
CREATE TABLE outbox_attempts (
    outbox_id                INTEGER NOT NULL REFERENCES outbox (id),
    attempt                  INTEGER NOT NULL,
    tx_hash                  BLOB NOT NULL,
    raw_tx                   BLOB NOT NULL,
    max_fee_per_gas          TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    signed_at                INTEGER NOT NULL,
    PRIMARY KEY (outbox_id, attempt)
) WITHOUT ROWID;
CREATE INDEX outbox_attempts_by_hash ON outbox_attempts (tx_hash);

-- Jobs an outbox transaction acts on.
CREATE TABLE outbox_jobs (
    job_id    INTEGER NOT NULL,
    outbox_id INTEGER NOT NULL REFERENCES outbox (id),
    PRIMARY KEY (job_id, outbox_id)
) WITHOUT ROWID;

-- At most one live transaction per job, enforced by the store itself.
CREATE TRIGGER outbox_one_live_per_job BEFORE INSERT ON outbox_jobs
WHEN EXISTS (
    SELECT 1 FROM outbox_jobs oj JOIN outbox o ON o.id = oj.outbox_id
    WHERE oj.job_id = NEW.job_id AND o.status IN ('intent', 'sent')
)
BEGIN
    SELECT RAISE(ABORT, 'job already has a live outbox transaction');
END;

-- Operator state that must survive restarts (drained flag, exit progress).
CREATE TABLE operator_state (
    worker     BLOB NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (worker, key)
) WITHOUT ROWID;
