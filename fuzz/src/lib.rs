//! # lcw-fuzz: what the fuzz targets share
//!
//! The targets in `fuzz_targets/` feed lcw's parsers and codecs the bytes an RPC node, a chain,
//! a key file or a web page could hand them. This library holds what more than one target (or
//! the corpus test) needs:
//!
//! - [`log`]: a compact byte format for one contract log (emitter, topics, data), the table of
//!   event selectors that lets the fuzzer reach every decoder branch, and the canonical
//!   re-encoding of a decoded log;
//! - [`wire`]: a fetched log written back as `eth_getLogs` JSON, for the answer reader's round trip;
//! - [`kdf`]: the cost budget for the KDF parameters of fuzzed key files (scrypt must not eat the
//!   run);
//! - [`scratch`]: a per-process scratch directory for targets that read files;
//! - [`store`]: a small store with a short, complete history (models, workers, sessions, released,
//!   timed-out and disputed jobs, a sortition request), and [`api`]: the real router over it, for
//!   the GraphQL target.

pub mod api;
pub mod kdf;
pub mod log;
pub mod scratch;
pub mod store;
pub mod wire;
