-- Transaction values by block: a reorg's unwind deletes those above the fork, and the replica's
-- follower reads those above its cursor at every catch-up; without it both read the whole table,
-- which grows by one row per paying transaction.
CREATE INDEX tx_values_by_block ON tx_values (block_number);
