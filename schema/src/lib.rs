//! # lcw-schema: the data contract of lcw
//!
//! Everything more than one lcw service must agree on lives here, and nothing else:
//!
//! - [`bindings`]: typed contract bindings (alloy `sol!` over `contracts/out`), shared by every crate.
//! - [`types`]: domain types: [`types::JobState`], [`types::ModelId`], exact LCAI amounts.
//! - [`suite`]: the encryption suites (`p256-aesgcm`, wire-compatible with LightChain, and
//!   `x25519`), used by the simulator to encrypt prompts and by the worker to decrypt them.
//! - [`blob`]: the EIP-4844 blob payload codec (4-byte length prefix, 31 data bytes per field
//!   element) shared by whoever posts or reads a blob.
//! - [`profile`]: network profiles (chain id, RPC and beacon URLs, contract addresses, devnet keys).
//!
//! - [`store`]: the SQLite store: refinery migrations, the raw layer, projection rows, the undo
//!   journal; all SQL of lcw lives here.
//!
//! - [`rules`]: the pure domain rules more than one service needs: the release schedule (when each
//!   job can be released or timed out, bounties, slashes) and the exit plan.
//!
//! Data flow: the indexer writes the store; the settler, worker and GraphQL API read it. Services
//! meet here, never in each other's code.

pub mod bindings;
pub mod blob;
pub mod profile;
pub mod rules;
pub mod store;
pub mod suite;
pub mod types;

/// Installs the process-wide TLS crypto provider (rustls with ring) once. HTTP and WebSocket
/// clients for `https://`/`wss://` RPC URLs need it; every entry point that connects calls this,
/// so it is idempotent and cheap.
pub fn ensure_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
