-- The outbox's fee and nonce policy: every transaction carries its fee ceiling and the chain it
-- was signed for, and the outbox remembers how its broadcasts went, so that a refused transaction
-- keeps its row and nonce and is tried again at most once per block (lcw-chain's outbox module
-- documents the policy).

-- The chain the transaction was signed for. Rows written before this column were signed for the
-- store's own chain.
ALTER TABLE outbox ADD COLUMN chain_id INTEGER;
UPDATE outbox SET chain_id = (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'chain_id');

-- The most this transaction may ever offer (decimal wei per gas and per blob gas): every bump,
-- re-sign and cancel of the row stays at or under it. NULL on rows signed before ceilings were
-- stored: the outbox's default ceiling applies to them.
ALTER TABLE outbox ADD COLUMN cap_per_gas TEXT;
ALTER TABLE outbox ADD COLUMN cap_per_blob_gas TEXT;

-- Broadcasts of the row (any of its signed versions), the head at the last one, and the head at
-- the last one a node accepted.
ALTER TABLE outbox ADD COLUMN broadcasts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN broadcast_block INTEGER;
ALTER TABLE outbox ADD COLUMN accepted_block INTEGER;
-- While the node refuses the row's latest version: its reason (written when it changes, not on
-- every try) and the head at which the refusals began. Both NULL once a node accepts it.
ALTER TABLE outbox ADD COLUMN refusal TEXT;
ALTER TABLE outbox ADD COLUMN refused_block INTEGER;
-- The head at the last fee bump tried (accepted or not): a refused bump is not retried at once.
ALTER TABLE outbox ADD COLUMN bump_tried_block INTEGER;

-- maxFeePerBlobGas of a type-3 version (NULL for other transactions).
ALTER TABLE outbox_attempts ADD COLUMN max_fee_per_blob_gas TEXT;

-- Gap repair looks up the row that last held a nonce.
CREATE INDEX outbox_dropped_nonce ON outbox (sender, nonce) WHERE status = 'dropped';
