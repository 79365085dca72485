//! The end-to-end scenarios, in one test binary: each module is one part of lcw against the real
//! parts it meets (a devnet on anvil, a SQLite store, llama-server, headless Chromium) and the
//! fault-injecting gates of `lcw_tests`. `cargo test -p lcw-tests --test e2e settler::` runs one
//! module.
//!
//! - `chain`: the chain layer's failover between endpoints, and endpoints of another chain.
//! - `outbox`: fee ceilings, refused and dropped transactions, nonces between lanes.
//! - `lifecycle`: every step of a job through the contracts, with the reverts that guard them.
//! - `simulate`: the simulator's traffic, by the dispatcher and by sortition.
//! - `indexer`: simulated workloads, reorgs, flaky and hostile RPC answers.
//! - `settler`: releases in the first possible block, restarts, reorgs, races, fee spikes.
//! - `blobs`: the prompt-blob lookup through a beacon node.
//! - `llm`: the OpenAI-compatible backend against llama-server.
//! - `gateway`: the worker-gateway link against a strict test gateway.
//! - `worker`: jobs served end to end with the real model, and what goes wrong on the way.
//! - `queries`: every GraphQL example checked against the chain, and subscriptions.
//! - `replica`: the PostgreSQL replica copied, verified and refused for another chain.
//! - `api_limits`: the GraphQL API's bounds, each crossed over a real socket.
//! - `dashboard`: the dashboard in headless Chromium, served by the real `lcw` binary.
//! - `benches`: every bench binary at a tiny size.

mod api_limits;
mod benches;
mod blobs;
mod chain;
mod dashboard;
mod gateway;
mod indexer;
mod lifecycle;
mod llm;
mod outbox;
mod queries;
mod replica;
mod replica_live;
mod replica_serve;
mod settler;
mod simulate;
mod worker;
