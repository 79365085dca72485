-- The replicated store: every table of the SQLite store that readers use, with the same names,
-- column names and meanings (schema/migrations holds the originals and their comments). Types:
-- SQLite INTEGER is bigint; INTEGER holding 0/1 is boolean; addresses, hashes and other BLOBs
-- are bytea; wei amounts and other U256 values (decimal TEXT in SQLite) are numeric(78,0), which
-- holds every U256 exactly; other TEXT is text. The replica is written only by `lcw replicate`
-- (lcw-replica): readers never write here, and the SQLite store stays the source of truth.

-- Raw layer.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE cursor (
    id               bigint PRIMARY KEY CHECK (id = 1),
    block_number     bigint NOT NULL,
    block_hash       bytea NOT NULL,
    finalized_number bigint NOT NULL,
    updated_at       bigint NOT NULL
);

CREATE TABLE blocks (
    number      bigint PRIMARY KEY,
    hash        bytea NOT NULL,
    parent_hash bytea,
    timestamp   bigint NOT NULL,
    log_count   bigint NOT NULL DEFAULT 0
);

CREATE TABLE ranges (
    from_block bigint PRIMARY KEY,
    to_block   bigint NOT NULL,
    log_count  bigint NOT NULL,
    source     text NOT NULL CHECK (source IN ('backfill', 'live'))
);

CREATE TABLE logs (
    block_number    bigint NOT NULL,
    log_index       bigint NOT NULL,
    block_hash      bytea NOT NULL,
    block_timestamp bigint NOT NULL,
    tx_hash         bytea NOT NULL,
    tx_index        bigint NOT NULL,
    address         bytea NOT NULL,
    topic0          bytea,
    topic1          bytea,
    topic2          bytea,
    topic3          bytea,
    data            bytea NOT NULL,
    event           text,
    decode_error    text,
    job_id          bigint,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX logs_by_job ON logs (job_id, block_number, log_index) WHERE job_id IS NOT NULL;
CREATE INDEX logs_undecodable ON logs (block_number) WHERE event IS NULL;
CREATE INDEX logs_by_tx ON logs (tx_hash);

CREATE TABLE tx_values (
    tx_hash      bytea PRIMARY KEY,
    block_number bigint NOT NULL,
    value_wei    numeric(78, 0) NOT NULL
);
CREATE INDEX tx_values_by_block ON tx_values (block_number);

CREATE TABLE call_results (
    contract     bytea NOT NULL,
    method       text NOT NULL,
    id           bigint NOT NULL,
    block_number bigint NOT NULL,
    data         bytea NOT NULL,
    PRIMARY KEY (contract, method, id)
);
CREATE INDEX call_results_by_block ON call_results (block_number);

-- Projections.

CREATE TABLE workers (
    address            bytea PRIMARY KEY,
    registered         boolean NOT NULL,
    encryption_key     bytea,
    suite              text,
    stake_wei          numeric(78, 0) NOT NULL,
    offense_count      bigint NOT NULL,
    slash_count        bigint NOT NULL,
    slashed_wei        numeric(78, 0) NOT NULL,
    suspended_until    bigint NOT NULL,
    deactivated        boolean NOT NULL,
    active_jobs        bigint NOT NULL,
    balance_wei        numeric(78, 0) NOT NULL,
    earned_wei         numeric(78, 0) NOT NULL,
    withdrawn_wei      numeric(78, 0) NOT NULL,
    registered_block   bigint,
    registered_at      bigint,
    deregistered_block bigint,
    deregistered_at    bigint,
    updated_block      bigint NOT NULL,
    capabilities       numeric(78, 0) NOT NULL DEFAULT 0
);

CREATE TABLE worker_models (
    worker      bytea NOT NULL,
    model_id    bytea NOT NULL,
    added_block bigint NOT NULL,
    PRIMARY KEY (worker, model_id)
);

CREATE TABLE models (
    model_id          bytea PRIMARY KEY,
    whitelisted       boolean NOT NULL,
    registered        boolean NOT NULL,
    enabled           boolean NOT NULL,
    fee_wei           numeric(78, 0),
    max_output_tokens bigint,
    updated_block     bigint NOT NULL
);

CREATE TABLE sessions (
    session_id        bigint PRIMARY KEY,
    "user"            bytea,
    model_id          bytea,
    worker            bytea,
    status            text NOT NULL,
    enc_worker_key    bytea,
    enc_disputer_key  bytea,
    job_count         bigint NOT NULL,
    created_block     bigint,
    created_at        bigint,
    closed_block      bigint,
    closed_at         bigint,
    key_updated_block bigint,
    updated_block     bigint NOT NULL
);
CREATE INDEX sessions_by_worker ON sessions (worker, session_id);

CREATE TABLE jobs (
    job_id                   bigint PRIMARY KEY,
    session_id               bigint NOT NULL,
    worker                   bytea NOT NULL,
    consumer                 bytea,
    model_id                 bytea,
    state                    text NOT NULL,
    fee_wei                  numeric(78, 0),
    deadline                 bigint,
    submitted_block          bigint NOT NULL,
    submitted_at             bigint NOT NULL,
    submit_tx                bytea NOT NULL,
    acknowledged_block       bigint,
    acknowledged_at          bigint,
    completed_block          bigint,
    completed_at             bigint,
    response_blob_hash       bytea,
    response_ciphertext_hash bytea,
    disputed_block           bigint,
    disputed_at              bigint,
    disputer                 bytea,
    resolved_block           bigint,
    resolved_at              bigint,
    guilty                   boolean,
    similarity_score         numeric(78, 0),
    defaulted_block          bigint,
    defaulted_at             bigint,
    timed_out_block          bigint,
    timed_out_at             bigint,
    settled_no_fault         boolean NOT NULL DEFAULT false,
    slash_wei                numeric(78, 0),
    refund_wei               numeric(78, 0),
    released_block           bigint,
    released_at              bigint,
    release_tx               bytea,
    worker_share_wei         numeric(78, 0),
    protocol_share_wei       numeric(78, 0),
    fee_pool_share_wei       numeric(78, 0),
    keeper                   bytea,
    keeper_bounty_wei        numeric(78, 0),
    bounty_kind              bigint,
    updated_block            bigint NOT NULL
);
CREATE INDEX jobs_by_worker ON jobs (worker, job_id);
CREATE INDEX jobs_by_session ON jobs (session_id, job_id);
CREATE INDEX jobs_open ON jobs (worker, state) WHERE state NOT IN ('RELEASED', 'TIMED_OUT');
CREATE INDEX jobs_by_model ON jobs (model_id, job_id);
CREATE INDEX jobs_by_submitted ON jobs (submitted_at);
CREATE INDEX jobs_timed_out ON jobs (worker, timed_out_block) WHERE timed_out_block IS NOT NULL;
CREATE INDEX jobs_by_consumer ON jobs (consumer, job_id);

CREATE TABLE session_requests (
    manager            bytea NOT NULL,
    req_id             bigint NOT NULL,
    "user"             bytea NOT NULL,
    model_id           bytea NOT NULL,
    request_block      bigint NOT NULL,
    request_block_hash bytea NOT NULL,
    requested_at       bigint NOT NULL,
    expiry             bigint NOT NULL,
    required_caps      numeric(78, 0) NOT NULL,
    status             text NOT NULL CHECK (status IN ('OPEN', 'CLAIMED', 'READY')),
    worker             bytea,
    claimed_block      bigint,
    claimed_at         bigint,
    claim_tx           bytea,
    session_id         bigint,
    ready_block        bigint,
    ready_at           bigint,
    updated_block      bigint NOT NULL,
    PRIMARY KEY (manager, req_id)
);
CREATE INDEX session_requests_open ON session_requests (manager, model_id, req_id) WHERE status = 'OPEN';
CREATE INDEX session_requests_by_worker ON session_requests (worker, request_block) WHERE worker IS NOT NULL;
CREATE INDEX session_requests_by_claim ON session_requests (manager, claimed_block) WHERE claimed_block IS NOT NULL;
CREATE INDEX session_requests_by_user ON session_requests ("user", request_block);
CREATE INDEX session_requests_by_block ON session_requests (request_block);

CREATE TABLE capabilities (
    bit              bigint PRIMARY KEY,
    name             text NOT NULL,
    registered_block bigint NOT NULL
);

-- Append-only ledger.

CREATE TABLE config_history (
    block_number    bigint NOT NULL,
    log_index       bigint NOT NULL,
    param           text NOT NULL,
    value           text NOT NULL,
    block_timestamp bigint NOT NULL,
    PRIMARY KEY (block_number, log_index, param)
);
CREATE INDEX config_by_param ON config_history (param, block_number, log_index);

CREATE TABLE withdrawals (
    block_number    bigint NOT NULL,
    log_index       bigint NOT NULL,
    worker          bytea NOT NULL,
    amount_wei      numeric(78, 0) NOT NULL,
    tx_hash         bytea NOT NULL,
    block_timestamp bigint NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX withdrawals_by_worker ON withdrawals (worker, block_number);

CREATE TABLE bounties (
    block_number    bigint NOT NULL,
    log_index       bigint NOT NULL,
    job_id          bigint NOT NULL,
    keeper          bytea NOT NULL,
    worker          bytea,
    amount_wei      numeric(78, 0) NOT NULL,
    kind            bigint NOT NULL,
    tx_hash         bytea NOT NULL,
    block_timestamp bigint NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX bounties_by_keeper ON bounties (keeper, block_number);

CREATE TABLE slashes (
    block_number    bigint NOT NULL,
    log_index       bigint NOT NULL,
    worker          bytea NOT NULL,
    amount_wei      numeric(78, 0) NOT NULL,
    new_stake_wei   numeric(78, 0) NOT NULL,
    job_id          bigint,
    reason          text NOT NULL,
    tx_hash         bytea NOT NULL,
    block_timestamp bigint NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE INDEX slashes_by_worker ON slashes (worker, block_number);

-- Rollups.

CREATE TABLE rollups_hourly (
    hour                     bigint NOT NULL,
    worker                   bytea NOT NULL,
    model_id                 bytea NOT NULL,
    submitted                bigint NOT NULL,
    acknowledged             bigint NOT NULL,
    completed                bigint NOT NULL,
    released                 bigint NOT NULL,
    timed_out                bigint NOT NULL,
    settled                  bigint NOT NULL,
    disputed                 bigint NOT NULL,
    guilty                   bigint NOT NULL,
    not_guilty               bigint NOT NULL,
    defaulted                bigint NOT NULL,
    fees_wei                 numeric(78, 0) NOT NULL,
    worker_share_wei         numeric(78, 0) NOT NULL,
    protocol_share_wei       numeric(78, 0) NOT NULL,
    fee_pool_share_wei       numeric(78, 0) NOT NULL,
    keeper_bounty_wei        numeric(78, 0) NOT NULL,
    slashed_wei              numeric(78, 0) NOT NULL,
    refunded_wei             numeric(78, 0) NOT NULL,
    ack_latency_sum          bigint NOT NULL,
    ack_latency_count        bigint NOT NULL,
    ack_latency_max          bigint NOT NULL,
    completion_latency_sum   bigint NOT NULL,
    completion_latency_count bigint NOT NULL,
    completion_latency_max   bigint NOT NULL,
    ack_latency_hist         text NOT NULL DEFAULT '',
    completion_latency_hist  text NOT NULL DEFAULT '',
    PRIMARY KEY (hour, worker, model_id)
);
CREATE INDEX rollups_by_worker ON rollups_hourly (worker, hour);

CREATE TABLE event_counts (
    event text PRIMARY KEY,
    count bigint NOT NULL
);

-- Where the replica stands: the store's cursor (block number and hash) of the snapshot or change
-- it last applied, and the sequence number of the store's change log it has applied up to (0
-- when it holds a snapshot copied whole). One row once the first copy is done.
CREATE TABLE replica_cursor (
    id           smallint PRIMARY KEY CHECK (id = 1),
    block_number bigint NOT NULL,
    block_hash   bytea NOT NULL,
    seq          bigint NOT NULL DEFAULT 0,
    updated_at   bigint NOT NULL
);

-- The analyst views of the SQLite store (V3, V8), in PostgreSQL: 0x hex for addresses and hashes,
-- LCAI as double precision (approximate, for charts; the *_wei columns are exact), sums of counts
-- as bigint.

CREATE VIEW v_jobs AS
SELECT
    job_id,
    session_id,
    '0x' || encode(worker, 'hex')    AS worker,
    '0x' || encode(consumer, 'hex')  AS consumer,
    '0x' || encode(model_id, 'hex')  AS model_id,
    state,
    fee_wei,
    fee_wei::double precision / 1e18 AS fee_lcai,
    deadline,
    submitted_block, submitted_at,
    acknowledged_block, acknowledged_at,
    completed_block, completed_at,
    disputed_block, disputed_at,
    resolved_block, resolved_at, guilty,
    defaulted_block, defaulted_at,
    timed_out_block, timed_out_at, settled_no_fault,
    slash_wei, refund_wei,
    released_block, released_at,
    '0x' || encode(release_tx, 'hex') AS release_tx,
    worker_share_wei,
    worker_share_wei::double precision / 1e18 AS worker_share_lcai,
    protocol_share_wei, fee_pool_share_wei,
    '0x' || encode(keeper, 'hex')     AS keeper,
    keeper_bounty_wei, bounty_kind,
    acknowledged_at - submitted_at    AS ack_latency,
    completed_at - submitted_at       AS completion_latency
FROM jobs;

CREATE VIEW v_workers AS
SELECT
    '0x' || encode(address, 'hex') AS address,
    registered,
    suite,
    stake_wei,
    stake_wei::double precision / 1e18   AS stake_lcai,
    active_jobs,
    balance_wei,
    balance_wei::double precision / 1e18 AS balance_lcai,
    earned_wei,
    withdrawn_wei,
    slash_count,
    slashed_wei,
    offense_count,
    suspended_until,
    deactivated,
    registered_block, registered_at, deregistered_block, deregistered_at,
    (SELECT string_agg('0x' || encode(m.model_id, 'hex'), ',' ORDER BY m.model_id)
     FROM worker_models m WHERE m.worker = w.address) AS models,
    capabilities
FROM workers w;

CREATE VIEW v_sessions AS
SELECT
    session_id,
    '0x' || encode("user", 'hex')   AS "user",
    '0x' || encode(model_id, 'hex') AS model_id,
    '0x' || encode(worker, 'hex')   AS worker,
    status, job_count, created_block, created_at, closed_block, closed_at,
    octet_length(enc_worker_key)    AS enc_worker_key_bytes
FROM sessions;

-- The value of every parameter now (the latest change).
CREATE VIEW v_config_current AS
SELECT param, value, block_number, block_timestamp
FROM config_history c
WHERE NOT EXISTS (
    SELECT 1 FROM config_history n
    WHERE n.param = c.param
      AND (n.block_number > c.block_number OR (n.block_number = c.block_number AND n.log_index > c.log_index))
);

-- Every dispute-window change with the block and time it took effect.
CREATE VIEW v_dispute_window_history AS
SELECT block_number, block_timestamp, CAST(value AS bigint) AS window_seconds
FROM config_history
WHERE param = 'disputeWindow'
ORDER BY block_number, log_index;

-- Daily analytics (counts exact; LCAI sums approximate).
CREATE VIEW v_rollups_daily AS
SELECT
    (hour / 86400) * 86400 AS day,
    '0x' || encode(worker, 'hex')   AS worker,
    '0x' || encode(model_id, 'hex') AS model_id,
    SUM(submitted)::bigint AS submitted, SUM(acknowledged)::bigint AS acknowledged,
    SUM(completed)::bigint AS completed, SUM(released)::bigint AS released,
    SUM(timed_out)::bigint AS timed_out, SUM(settled)::bigint AS settled,
    SUM(disputed)::bigint AS disputed, SUM(guilty)::bigint AS guilty,
    SUM(not_guilty)::bigint AS not_guilty, SUM(defaulted)::bigint AS defaulted,
    SUM(worker_share_wei)::double precision / 1e18 AS worker_share_lcai,
    SUM(fees_wei)::double precision / 1e18         AS fees_lcai,
    SUM(slashed_wei)::double precision / 1e18      AS slashed_lcai,
    SUM(ack_latency_sum)::double precision / NULLIF(SUM(ack_latency_count), 0) AS ack_latency_avg,
    MAX(ack_latency_max) AS ack_latency_max,
    SUM(completion_latency_sum)::double precision / NULLIF(SUM(completion_latency_count), 0) AS completion_latency_avg,
    MAX(completion_latency_max) AS completion_latency_max
FROM rollups_hourly
GROUP BY (hour / 86400) * 86400, rollups_hourly.worker, rollups_hourly.model_id;

-- Logs that could not be decoded (kept raw; indexing never stops for them).
CREATE VIEW v_undecodable_logs AS
SELECT block_number, log_index, '0x' || encode(address, 'hex') AS address,
       '0x' || encode(topic0, 'hex') AS topic0, decode_error,
       '0x' || encode(tx_hash, 'hex') AS tx_hash
FROM logs WHERE event IS NULL;

-- Requests for people: hex, and the status as of the store's cursor (EXPIRED when the request is
-- not READY and the timestamp of the newest block at or below the cursor is past its expiry).
CREATE VIEW v_session_requests AS
SELECT
    '0x' || encode(r.manager, 'hex')            AS manager,
    r.req_id,
    '0x' || encode(r."user", 'hex')             AS "user",
    '0x' || encode(r.model_id, 'hex')           AS model_id,
    r.request_block,
    '0x' || encode(r.request_block_hash, 'hex') AS seed,
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
    END                                         AS status,
    r.status                                    AS stored_status,
    nullif('0x' || encode(r.worker, 'hex'), '0x')   AS worker,
    r.claimed_block, r.claimed_at,
    nullif('0x' || encode(r.claim_tx, 'hex'), '0x') AS claim_tx,
    r.session_id, r.ready_block, r.ready_at
FROM session_requests r;
