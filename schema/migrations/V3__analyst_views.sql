-- Views for people querying the file directly: 0x hex for addresses and hashes, LCAI as REAL
-- (approximate, for charts; the *_wei columns are exact).

CREATE VIEW v_jobs AS
SELECT
    job_id,
    session_id,
    '0x' || lower(hex(worker))    AS worker,
    '0x' || lower(hex(consumer))  AS consumer,
    '0x' || lower(hex(model_id))  AS model_id,
    state,
    fee_wei,
    CAST(fee_wei AS REAL) / 1e18  AS fee_lcai,
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
    '0x' || lower(hex(release_tx)) AS release_tx,
    worker_share_wei,
    CAST(worker_share_wei AS REAL) / 1e18 AS worker_share_lcai,
    protocol_share_wei, fee_pool_share_wei,
    '0x' || lower(hex(keeper))     AS keeper,
    keeper_bounty_wei, bounty_kind,
    acknowledged_at - submitted_at AS ack_latency,
    completed_at - submitted_at    AS completion_latency
FROM jobs;

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
    (SELECT group_concat('0x' || lower(hex(model_id)), ',') FROM worker_models m WHERE m.worker = w.address) AS models
FROM workers w;

CREATE VIEW v_sessions AS
SELECT
    session_id,
    '0x' || lower(hex(user))     AS user,
    '0x' || lower(hex(model_id)) AS model_id,
    '0x' || lower(hex(worker))   AS worker,
    status, job_count, created_block, created_at, closed_block, closed_at,
    length(enc_worker_key)       AS enc_worker_key_bytes
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
SELECT block_number, block_timestamp, CAST(value AS INTEGER) AS window_seconds
FROM config_history
WHERE param = 'disputeWindow'
ORDER BY block_number, log_index;

-- Daily analytics (counts exact; LCAI sums approximate).
CREATE VIEW v_rollups_daily AS
SELECT
    (hour / 86400) * 86400 AS day,
    '0x' || lower(hex(worker))   AS worker,
    '0x' || lower(hex(model_id)) AS model_id,
    SUM(submitted) AS submitted, SUM(acknowledged) AS acknowledged, SUM(completed) AS completed,
    SUM(released) AS released, SUM(timed_out) AS timed_out, SUM(settled) AS settled,
    SUM(disputed) AS disputed, SUM(guilty) AS guilty, SUM(not_guilty) AS not_guilty, SUM(defaulted) AS defaulted,
    SUM(CAST(worker_share_wei AS REAL)) / 1e18 AS worker_share_lcai,
    SUM(CAST(fees_wei AS REAL)) / 1e18         AS fees_lcai,
    SUM(CAST(slashed_wei AS REAL)) / 1e18      AS slashed_lcai,
    CAST(SUM(ack_latency_sum) AS REAL) / NULLIF(SUM(ack_latency_count), 0) AS ack_latency_avg,
    MAX(ack_latency_max) AS ack_latency_max,
    CAST(SUM(completion_latency_sum) AS REAL) / NULLIF(SUM(completion_latency_count), 0) AS completion_latency_avg,
    MAX(completion_latency_max) AS completion_latency_max
FROM rollups_hourly
GROUP BY day, worker, model_id;

-- Logs that could not be decoded (kept raw; indexing never stops for them).
CREATE VIEW v_undecodable_logs AS
SELECT block_number, log_index, '0x' || lower(hex(address)) AS address,
       '0x' || lower(hex(topic0)) AS topic0, decode_error,
       '0x' || lower(hex(tx_hash)) AS tx_hash
FROM logs WHERE event IS NULL;
