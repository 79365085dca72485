-- The raw layer: the source of truth. Everything in the projection tables is a pure function of
-- these rows (plus tx_values), and `lcw replay` rebuilds them from here without RPC.

-- Identity and settings: chain_id, the three contract addresses, start_block, created_at.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The last applied block, moved in the same transaction as the data it covers.
CREATE TABLE cursor (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    block_number     INTEGER NOT NULL,
    block_hash       BLOB NOT NULL,
    -- Highest block the node reported final (finalized tag, or head - finality depth) at commit.
    finalized_number INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

-- Blocks the indexer has seen: every block with logs, every range end, every block followed live.
-- Hashes detect reorgs; parent_hash is known for blocks followed live.
CREATE TABLE blocks (
    number      INTEGER PRIMARY KEY,
    hash        BLOB NOT NULL,
    parent_hash BLOB,
    timestamp   INTEGER NOT NULL,
    log_count   INTEGER NOT NULL DEFAULT 0
);

-- Covered block ranges, contiguous from the start block to the cursor (lcw verify checks it).
CREATE TABLE ranges (
    from_block INTEGER PRIMARY KEY,
    to_block   INTEGER NOT NULL,
    log_count  INTEGER NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('backfill', 'live'))
);

-- Every log of the three watched contracts, verbatim.
CREATE TABLE logs (
    block_number    INTEGER NOT NULL,
    log_index       INTEGER NOT NULL,
    block_hash      BLOB NOT NULL,
    block_timestamp INTEGER NOT NULL,
    tx_hash         BLOB NOT NULL,
    tx_index        INTEGER NOT NULL,
    address         BLOB NOT NULL,
    topic0          BLOB,
    topic1          BLOB,
    topic2          BLOB,
    topic3          BLOB,
    data            BLOB NOT NULL,
    -- Decoded event name (`JobSubmitted`, ...); NULL when the log could not be decoded.
    event           TEXT,
    -- Why decoding failed (unknown event, malformed data); NULL when decoded.
    decode_error    TEXT,
    -- The job the event is about, for per-job timelines.
    job_id          INTEGER,
    PRIMARY KEY (block_number, log_index)
) WITHOUT ROWID;

CREATE INDEX logs_by_job ON logs (job_id, block_number, log_index) WHERE job_id IS NOT NULL;
CREATE INDEX logs_undecodable ON logs (block_number) WHERE event IS NULL;

-- Values of transactions whose event lacks the amount: WorkerRegistered carries no stake (it is
-- the transaction's msg.value). Fetched once at indexing time, so replay needs no RPC.
CREATE TABLE tx_values (
    tx_hash      BLOB PRIMARY KEY,
    block_number INTEGER NOT NULL,
    value_wei    TEXT NOT NULL
) WITHOUT ROWID;

-- Before-images of projection rows changed by blocks that are not final yet, newest last.
-- Unwinding a reorg restores them in reverse order; rows at or below the finalized block are pruned.
CREATE TABLE undo (
    block_number INTEGER NOT NULL,
    seq          INTEGER NOT NULL,
    tbl          TEXT NOT NULL,
    key          BLOB NOT NULL,
    -- The row before the block changed it (JSON); NULL when the row did not exist.
    before       TEXT,
    PRIMARY KEY (block_number, seq)
) WITHOUT ROWID;
