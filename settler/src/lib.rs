//! # lcw-settler: exact releases and the worker's exit
//!
//! From the store it derives each job's exact `releasableAt` (`completedAt` + the dispute window
//! in force, following `DisputeParamsUpdated`) and lands `releaseJobs` in the first block whose
//! timestamp reaches it, reasoning in chain time (`lcw_schema::rules::schedule`). Keeper mode
//! also releases other workers' jobs and claims timeouts, for bounties.
//!
//! - [`plan`]: the decisions, pure: what is due in the next block, what is in flight, what a
//!   keeper finds profitable, how releases batch, and the fee ceiling of each transaction (the
//!   operator's cap lowered to what the transaction collects);
//! - [`settle`]: the executor, [`settle::run`]: reads the store and the chain, calls the planner,
//!   simulates and sends through the chain layer's outbox ([`lcw_chain::outbox`]: intent before
//!   signing, raw transaction before broadcast, explicit nonces, fee bumps under each ceiling,
//!   re-broadcast after restart, re-queue after a reorg), shared with the worker, and records;
//! - [`metrics`]: what the executor counts (transactions by kind and outcome, release lag, fees,
//!   outbox depth), as Prometheus text;
//! - [`ops`]: the operator's exit commands (drain, release, withdraw, deregister, exit), on the
//!   pure exit plan (`lcw_schema::rules::exit`).

pub mod metrics;
pub mod ops;
pub mod plan;
pub mod settle;

/// The settler's errors are those of the chain layer it drives.
pub use lcw_chain::{ChainError as SettlerError, ChainResult as SettlerResult};
