//! # lcw-worker: serving inference jobs from the store
//!
//! Will own the worker pipeline: jobs assigned to this worker's address are read from the store
//! the moment the indexer commits them, acknowledged within a block, their prompt blob fetched
//! (beacon API, or anvil's blob routes on the devnet), decrypted with the session key unwrapped by
//! the worker's encryption secret (`lcw_schema::suite`), run on a local LLM server (Ollama native
//! or OpenAI-compatible), encrypted, posted as a blob and committed with `completeJob` before the
//! deadline. Entry point: `run(config, shutdown)`.
