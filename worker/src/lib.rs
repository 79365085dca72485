//! # lcw-worker: serving inference jobs from the store
//!
//! The worker pipeline: jobs assigned to this worker's address are read from the store the
//! moment the indexer commits them, acknowledged within a block, their prompt blob fetched
//! (beacon API, or anvil's blob access on the devnet), decrypted with the session key unwrapped
//! by the worker's encryption secret (`lcw_schema::suite`), run on a local LLM server (Ollama
//! native or OpenAI-compatible), encrypted, posted as a blob and committed with `completeJob`
//! before the deadline.
//!
//! - [`keys`]: the encryption key at rest (password-encrypted, 0600), archived on replacement;
//! - [`llm`]: the LLM backends (Ollama native, OpenAI-compatible);
//! - [`fit`]: whether the served models fit in memory together (their footprints, from the LLM
//!   server, against the machine's memory or `--memory-limit`);
//! - [`blobs`]: prompt blobs from a beacon node or anvil;
//! - [`gateway`]: the worker-gateway link (sign-in, heartbeats, drain, the response stream);
//! - [`metrics`]: what the pipeline counts (jobs by outcome, LLM latency, claims, the wallet's
//!   runway), as Prometheus text;
//! - [`models`]: the live model set (chain, LLM server, `--models`) as a pure function;
//! - [`plan`]: the decisions (open, ack, work, complete, refuse) as a pure function;
//! - [`pipeline`]: the store-driven loop that carries them out, and its entry point `run`.

pub mod blobs;
pub mod claim;
pub mod claimer;
pub mod fit;
pub mod gateway;
pub mod job;
pub mod keys;
mod link;
pub mod llm;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod plan;
