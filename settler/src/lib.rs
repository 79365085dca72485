//! # lcw-settler: exact releases and the worker's exit
//!
//! Will own the release loop: from the store it derives each job's exact `releasableAt`
//! (`completedAt` + the dispute window in force, following `DisputeParamsUpdated`) and lands
//! `releaseJobs` in the first block whose timestamp reaches it, reasoning in chain time. Its own
//! transactions go through an outbox table (intent before signing, raw transaction before
//! broadcast, explicit nonces, fee bumping, re-broadcast after restart), shared with the worker.
//! Keeper mode also claims timeouts for bounties. The operator's exit commands (drain, release,
//! withdraw, deregister, exit) sit on its pure exit plan. Entry point: `run(config, shutdown)`.
