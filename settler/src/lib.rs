//! # lcw-settler: exact releases and the worker's exit
//!
//! From the store it derives each job's exact `releasableAt` (`completedAt` + the dispute window
//! in force, following `DisputeParamsUpdated`) and lands `releaseJobs` in the first block whose
//! timestamp reaches it, reasoning in chain time (`lcw_schema::rules::schedule`). Its own transactions go through
//! the chain layer's outbox ([`lcw_chain::outbox`]: intent before signing, raw transaction before broadcast, explicit
//! nonces, fee bumping, re-broadcast after restart, re-queue after a reorg), shared with the
//! worker. Keeper mode also claims timeouts for bounties. The operator's exit commands (drain,
//! release, withdraw, deregister, exit) sit on the pure exit plan (`lcw_schema::rules::exit`).
//! Entry point: [`settle::run`].

pub mod ops;
pub mod settle;

/// The settler's errors are those of the chain layer it drives.
pub use lcw_chain::{ChainError as SettlerError, ChainResult as SettlerResult};
