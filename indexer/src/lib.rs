//! # lcw-indexer: chain events into the store
//!
//! Will own the one writer of the store: it streams the WorkerRegistry, JobRegistry and AIConfig
//! logs of a network into SQLite (raw logs first, verbatim with block number, hash and timestamp),
//! derives the projections (workers, sessions, jobs, dispute-window history, balances, rollups)
//! from them in the same transaction as the cursor, and keeps both reorg-safe.
//!
//! Planned modules, one noun each: `fetch` (concurrent adaptive `eth_getLogs` backfill, head
//! following), `decode` (log → typed event, undecodable logs kept raw), `apply` / `unwind` (the
//! reorg-symmetric pair), `replay` (projections rebuilt from raw logs, no RPC) and `verify` (store
//! vs chain). Entry point: `run(config, shutdown)`.
