-- The change log: one entry per committed transaction that changed replicated tables, written in
-- that same transaction by the indexer's writer (and by `lcw replay --write`). A copy of the
-- store elsewhere (PostgreSQL) follows it: it reads the entries after its own position from one
-- read snapshot, loads the current rows of the keys they name (present: upsert; absent: delete)
-- and the raw and ledger rows of their block ranges, and moves its position with the data.
-- Entries name rows, never carry them: the writer pays a few bytes per changed row, and the copy
-- always reads rows as they are now, which is also what makes applying an entry twice harmless.
--   seq:          position in the log; AUTOINCREMENT so that a pruned number is never reused
--   kind:         apply   blocks (from_block, to_block] were applied (a backfill batch or one
--                         live block); keys names every projection row written
--                 unwind  a reorg: everything above to_block was removed (from_block is the
--                         cursor before it); keys names every projection row restored
--                 clear   raw and ledger rows above the cursor (to_block) left by an earlier
--                         version were deleted; no projection row changed
--                 replace every projection table was replaced (replay --write); keys is empty
--                         and a copy re-reads the projection tables whole
--   from_block:   the block below the range an apply covers, the cursor before an unwind; NULL
--                 when the range starts at block 0
--   to_block:     the cursor after the commit, and block_hash its hash
--   committed_at: unix seconds (wall clock), for retention only
--   keys:         the changed projection rows as (table, primary key values), in the compact
--                 encoding of `lcw_schema::store::changes` (version byte first); a key may repeat
-- Entries are pruned by the writer (the newest ones are always kept, see
-- `lcw_schema::store::changes::Retention`); a copy whose position fell below the oldest entry
-- must copy the store anew. keys is the last column: reading the others never walks its
-- overflow pages.
CREATE TABLE changes (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL CHECK (kind IN ('apply', 'unwind', 'clear', 'replace')),
    from_block   INTEGER,
    to_block     INTEGER NOT NULL,
    block_hash   BLOB NOT NULL,
    committed_at INTEGER NOT NULL,
    keys         BLOB NOT NULL
);
