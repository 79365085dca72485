-- Projections: derived from the raw layer, updated in the same transaction as the cursor.
-- Amounts are exact wei as decimal TEXT; addresses and hashes are BLOBs (the v_* views render them
-- as 0x hex); times are unix seconds of block timestamps.

CREATE TABLE workers (
    address            BLOB PRIMARY KEY,
    registered         INTEGER NOT NULL,
    encryption_key     BLOB,
    suite              TEXT,             -- 'p256-aesgcm' | 'x25519', from the key's length
    stake_wei          TEXT NOT NULL,
    offense_count      INTEGER NOT NULL, -- slashes since the last reset or reinstatement
    slash_count        INTEGER NOT NULL, -- all slashes ever
    slashed_wei        TEXT NOT NULL,
    suspended_until    INTEGER NOT NULL, -- 0: not suspended
    deactivated        INTEGER NOT NULL, -- WorkerDeactivated seen and stake not topped up since
    active_jobs        INTEGER NOT NULL, -- derived: +1 submitted, -1 released/timed out/settled/guilty
    balance_wei        TEXT NOT NULL,    -- derived: released worker shares - withdrawals
    earned_wei         TEXT NOT NULL,    -- all released worker shares
    withdrawn_wei      TEXT NOT NULL,
    registered_block   INTEGER,
    registered_at      INTEGER,
    deregistered_block INTEGER,
    deregistered_at    INTEGER,
    updated_block      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE worker_models (
    worker      BLOB NOT NULL,
    model_id    BLOB NOT NULL,
    added_block INTEGER NOT NULL,
    PRIMARY KEY (worker, model_id)
) WITHOUT ROWID;

CREATE TABLE models (
    model_id          BLOB PRIMARY KEY,
    whitelisted       INTEGER NOT NULL, -- WorkerRegistry whitelist
    registered        INTEGER NOT NULL, -- AIConfig registerModel
    enabled           INTEGER NOT NULL,
    fee_wei           TEXT,
    max_output_tokens INTEGER,
    updated_block     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    session_id        INTEGER PRIMARY KEY,
    user              BLOB,
    model_id          BLOB,
    worker            BLOB,
    status            TEXT NOT NULL,    -- ACTIVE | REASSIGNING | CLOSED
    enc_worker_key    BLOB,
    enc_disputer_key  BLOB,
    job_count         INTEGER NOT NULL,
    created_block     INTEGER,
    created_at        INTEGER,
    closed_block      INTEGER,
    closed_at         INTEGER,
    key_updated_block INTEGER,
    updated_block     INTEGER NOT NULL
);
CREATE INDEX sessions_by_worker ON sessions (worker, session_id);

CREATE TABLE jobs (
    job_id                   INTEGER PRIMARY KEY,
    session_id               INTEGER NOT NULL,
    worker                   BLOB NOT NULL,    -- from JobSubmitted; attributes events without it
    consumer                 BLOB,             -- the session's user
    model_id                 BLOB,             -- the session's model
    state                    TEXT NOT NULL,    -- SUBMITTED .. RELEASED (contract JobState)
    fee_wei                  TEXT,             -- escrowed fee: model fee at submission, exact at release/refund
    deadline                 INTEGER,          -- ack deadline, then completion deadline
    submitted_block          INTEGER NOT NULL,
    submitted_at             INTEGER NOT NULL,
    submit_tx                BLOB NOT NULL,
    acknowledged_block       INTEGER,
    acknowledged_at          INTEGER,
    completed_block          INTEGER,
    completed_at             INTEGER,
    response_blob_hash       BLOB,
    response_ciphertext_hash BLOB,
    disputed_block           INTEGER,
    disputed_at              INTEGER,
    disputer                 BLOB,
    resolved_block           INTEGER,
    resolved_at              INTEGER,
    guilty                   INTEGER,
    similarity_score         TEXT,
    defaulted_block          INTEGER,
    defaulted_at             INTEGER,
    timed_out_block          INTEGER,
    timed_out_at             INTEGER,
    settled_no_fault         INTEGER NOT NULL DEFAULT 0,
    slash_wei                TEXT,
    refund_wei               TEXT,
    released_block           INTEGER,
    released_at              INTEGER,
    release_tx               BLOB,
    worker_share_wei         TEXT,
    protocol_share_wei       TEXT,
    fee_pool_share_wei       TEXT,
    keeper                   BLOB,
    keeper_bounty_wei        TEXT,
    bounty_kind              INTEGER,          -- 0 release, 1 timeout
    updated_block            INTEGER NOT NULL
);
CREATE INDEX jobs_by_worker ON jobs (worker, job_id);
CREATE INDEX jobs_by_session ON jobs (session_id, job_id);
-- Jobs that still hold a worker's obligations (settler schedule, exit plan).
CREATE INDEX jobs_open ON jobs (worker, state) WHERE state NOT IN ('RELEASED', 'TIMED_OUT');

-- AIConfig (and JobRegistry pause) parameters as of any block: one row per change.
-- Parameters: disputeWindow, resolutionTimeout, disputeBondMultiplier, ackTimeout, completionTimeout,
-- workerFeeBps, protocolFeeBps, feePoolBps, releaseBountyBps, timeoutBountyBps, timeoutSlashBps,
-- completionTimeoutSlashBps, disputeSlashBps, suspensionThreshold, suspensionCooldown,
-- minWorkerStake, maxConcurrentJobs, claimWindowBlocks, dispatcher, disputer, sessionManager,
-- sortitionEnabled, paused, and every InfraParamsUpdated name.
CREATE TABLE config_history (
    block_number INTEGER NOT NULL,
    log_index    INTEGER NOT NULL,
    param        TEXT NOT NULL,
    value        TEXT NOT NULL,
    block_timestamp INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index, param)
) WITHOUT ROWID;
CREATE INDEX config_by_param ON config_history (param, block_number, log_index);

CREATE TABLE withdrawals (
    block_number    INTEGER NOT NULL,
    log_index       INTEGER NOT NULL,
    worker          BLOB NOT NULL,
    amount_wei      TEXT NOT NULL,
    tx_hash         BLOB NOT NULL,
    block_timestamp INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index)
) WITHOUT ROWID;
CREATE INDEX withdrawals_by_worker ON withdrawals (worker, block_number);

CREATE TABLE bounties (
    block_number    INTEGER NOT NULL,
    log_index       INTEGER NOT NULL,
    job_id          INTEGER NOT NULL,
    keeper          BLOB NOT NULL,
    worker          BLOB,
    amount_wei      TEXT NOT NULL,
    kind            INTEGER NOT NULL, -- 0 release, 1 timeout
    tx_hash         BLOB NOT NULL,
    block_timestamp INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index)
) WITHOUT ROWID;
CREATE INDEX bounties_by_keeper ON bounties (keeper, block_number);

CREATE TABLE slashes (
    block_number    INTEGER NOT NULL,
    log_index       INTEGER NOT NULL,
    worker          BLOB NOT NULL,
    amount_wei      TEXT NOT NULL,
    new_stake_wei   TEXT NOT NULL,
    job_id          INTEGER,          -- the job whose timeout or dispute caused it (same transaction)
    reason          TEXT NOT NULL,    -- ack_timeout | completion_timeout | dispute | other
    tx_hash         BLOB NOT NULL,
    block_timestamp INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index)
) WITHOUT ROWID;
CREATE INDEX slashes_by_worker ON slashes (worker, block_number);

-- Hourly analytics per worker and model. An event counts in the hour of its block; latencies are
-- counted when the acknowledgement (ack latency = ack - submit) or completion (completion latency
-- = complete - submit) happens. model_id is 32 zero bytes when the session was not indexed.
CREATE TABLE rollups_hourly (
    hour                     INTEGER NOT NULL, -- unix seconds, multiple of 3600
    worker                   BLOB NOT NULL,
    model_id                 BLOB NOT NULL,
    submitted                INTEGER NOT NULL,
    acknowledged             INTEGER NOT NULL,
    completed                INTEGER NOT NULL,
    released                 INTEGER NOT NULL,
    timed_out                INTEGER NOT NULL,
    settled                  INTEGER NOT NULL,
    disputed                 INTEGER NOT NULL,
    guilty                   INTEGER NOT NULL,
    not_guilty               INTEGER NOT NULL,
    defaulted                INTEGER NOT NULL,
    fees_wei                 TEXT NOT NULL,    -- fees of jobs released in the hour
    worker_share_wei         TEXT NOT NULL,
    protocol_share_wei       TEXT NOT NULL,
    fee_pool_share_wei       TEXT NOT NULL,
    keeper_bounty_wei        TEXT NOT NULL,
    slashed_wei              TEXT NOT NULL,
    refunded_wei             TEXT NOT NULL,
    ack_latency_sum          INTEGER NOT NULL,
    ack_latency_count        INTEGER NOT NULL,
    ack_latency_max          INTEGER NOT NULL,
    completion_latency_sum   INTEGER NOT NULL,
    completion_latency_count INTEGER NOT NULL,
    completion_latency_max   INTEGER NOT NULL,
    PRIMARY KEY (hour, worker, model_id)
) WITHOUT ROWID;
CREATE INDEX rollups_by_worker ON rollups_hourly (worker, hour);

-- Events per name, for summaries (undecodable logs count under '(undecodable)').
CREATE TABLE event_counts (
    event TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
