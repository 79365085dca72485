//! # lcw-queries: the GraphQL API and dashboard
//!
//! Will own the read side for people and dashboards: an async-graphql schema on axum over a
//! read-only connection to the store (per-job lifecycle and timeline, exact exit timing, release
//! queue, earnings and latency analytics), subscriptions pushed on indexer commits, depth,
//! complexity and page-size limits, and a self-contained dashboard. Entry point:
//! `run(config, shutdown)`.
