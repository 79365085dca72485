-- Sortition (SessionManager): session requests, worker capabilities, and the contract state the
-- events lack, fetched once at indexing time and kept raw.

-- Return data of view calls made at indexing time for facts an event lacks, verbatim (ABI
-- encoded), so replay needs no RPC: SessionRequested carries neither the expiry nor the required
-- capabilities (SessionManager.getRequest, getRequiredCapabilities, id = reqId), SessionAdopted
-- neither the model nor the wrapped keys (JobRegistry.getSession, id = sessionId). Read at the
-- log's block (the latest block when the node no longer has that block's state); block_number is
-- the log's block, so unwinding a reorg deletes the rows above the fork. Raw, like tx_values.
CREATE TABLE call_results (
    contract     BLOB NOT NULL,
    method       TEXT NOT NULL,
    id           INTEGER NOT NULL,
    block_number INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (contract, method, id)
) WITHOUT ROWID;
CREATE INDEX call_results_by_block ON call_results (block_number);

-- A store indexed before this migration holds no SessionManager logs: it did not watch the
-- managers AIConfig publishes. It holds them from the block after its cursor on (the indexer
-- warns; a fresh store has them all). A new store has no cursor yet, so no entry.
INSERT INTO meta (key, value) SELECT 'session_manager_logs_from', block_number + 1 FROM cursor;

-- One row per request of a SessionManager (every manager AIConfig has published).
-- status is OPEN, CLAIMED or READY as the events say. EXPIRED is not an event: a request that is
-- not READY is expired once chain time passes its expiry (SessionManager.getRequest reports it
-- so), which readers derive from the expiry and the time of the block they read at
-- (`lcw_schema::store::sortition::RequestRow::expired_at`, v_session_requests).
CREATE TABLE session_requests (
    manager            BLOB NOT NULL,
    req_id             INTEGER NOT NULL,
    user               BLOB NOT NULL,
    model_id           BLOB NOT NULL,
    request_block      INTEGER NOT NULL,
    request_block_hash BLOB NOT NULL,    -- the draw's seed
    requested_at       INTEGER NOT NULL,
    expiry             INTEGER NOT NULL, -- unix s (getRequest)
    required_caps      TEXT NOT NULL,    -- capability mask, decimal (getRequiredCapabilities)
    status             TEXT NOT NULL CHECK (status IN ('OPEN', 'CLAIMED', 'READY')),
    worker             BLOB,             -- the claimer
    claimed_block      INTEGER,
    claimed_at         INTEGER,
    claim_tx           BLOB,
    session_id         INTEGER,          -- the session JobRegistry adopted
    ready_block        INTEGER,
    ready_at           INTEGER,
    updated_block      INTEGER NOT NULL,
    PRIMARY KEY (manager, req_id)
) WITHOUT ROWID;
-- Open requests of a manager by model (what a worker may claim).
CREATE INDEX session_requests_open ON session_requests (manager, model_id, req_id) WHERE status = 'OPEN';
-- Requests claimed by a worker, newest request first.
CREATE INDEX session_requests_by_worker ON session_requests (worker, request_block) WHERE worker IS NOT NULL;
-- Requests of a manager by claim block (who claimed what since a block).
CREATE INDEX session_requests_by_claim ON session_requests (manager, claimed_block) WHERE claimed_block IS NOT NULL;
-- Requests of a consumer, and all requests newest first (API pages).
CREATE INDEX session_requests_by_user ON session_requests (user, request_block);
CREATE INDEX session_requests_by_block ON session_requests (request_block);

-- WorkerRegistry capabilities: a worker's mask (WorkerCapabilitiesSet; it survives
-- deregistration, as on chain) and the registered bits (CapabilityRegistered).
ALTER TABLE workers ADD COLUMN capabilities TEXT NOT NULL DEFAULT '0';
CREATE TABLE capabilities (
    bit              INTEGER PRIMARY KEY,
    name             TEXT NOT NULL,
    registered_block INTEGER NOT NULL
);

-- Requests for people: hex, and the status as of the store's cursor: EXPIRED when the request is
-- not READY and the timestamp of the cursor block (the newest block the store has, at or below
-- the cursor) is past its expiry; the stored status otherwise (stored_status keeps the events'
-- view).
CREATE VIEW v_session_requests AS
SELECT
    '0x' || lower(hex(r.manager))            AS manager,
    r.req_id,
    '0x' || lower(hex(r.user))               AS user,
    '0x' || lower(hex(r.model_id))           AS model_id,
    r.request_block,
    '0x' || lower(hex(r.request_block_hash)) AS seed,
    r.requested_at,
    r.expiry,
    r.required_caps,
    CASE
        WHEN r.status <> 'READY' AND r.expiry < (
            SELECT b.timestamp FROM blocks b
            WHERE b.number <= (SELECT c.block_number FROM cursor c WHERE c.id = 1)
            ORDER BY b.number DESC LIMIT 1
        ) THEN 'EXPIRED'
        ELSE r.status
    END                                      AS status,
    r.status                                 AS stored_status,
    nullif('0x' || lower(hex(r.worker)), '0x')   AS worker,
    r.claimed_block, r.claimed_at,
    nullif('0x' || lower(hex(r.claim_tx)), '0x') AS claim_tx,
    r.session_id, r.ready_block, r.ready_at
FROM session_requests r;

-- v_workers with the capability mask.
DROP VIEW v_workers;
CREATE VIEW v_workers AS
SELECT
    '0x' || lower(hex(address)) AS address,
    registered,
    suite,
    stake_wei,
    CAST(stake_wei AS REAL) / 1e18   AS stake_lcai,
    active_jobs,
    balance_wei,
    CAST(balance_wei AS REAL) / 1e18 AS balance_lcai,
    earned_wei,
    withdrawn_wei,
    slash_count,
    slashed_wei,
    offense_count,
    suspended_until,
    deactivated,
    registered_block, registered_at, deregistered_block, deregistered_at,
    (SELECT group_concat('0x' || lower(hex(model_id)), ',') FROM worker_models m WHERE m.worker = w.address) AS models,
    capabilities
FROM workers w;
