//! # lcw-contracts: the devnet
//!
//! The Solidity contracts live in `contracts/src` and compile (pinned solc, `node build.js`) to
//! the artifacts in `contracts/out` that `lcw-schema` binds. This crate is the Rust side of the
//! devnet:
//!
//! - [`anvil`]: find and run anvil (pinned npm package, `ANVIL_BIN` override), killed on drop.
//! - [`deploy`]: deploy and configure the three contracts against any node (`lcw deploy`).
//! - [`devnet`]: anvil + deployment + roles + the network profile (`lcw devnet`, every e2e test).
//! - [`simulate`]: consumer, dispatcher, disputer, keeper and (optionally) simple workers playing
//!   traffic against a devnet, fast enough for 100,000+ jobs (`lcw simulate`).
//! - [`txs`]: raw transaction signing and JSON-RPC batches with locally owned nonces, the engine
//!   of the simulator's volume.

pub mod anvil;
pub mod deploy;
pub mod devnet;
pub mod reorg;
pub mod simulate;
pub mod txs;
