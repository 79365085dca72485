//! The `lcw` binary itself, as an operator runs it, in one test binary (each module one area):
//! `devnet`, `deploy` and `simulate`; keys and the worker verbs; `exit`; `sweep`; `preflight`;
//! `speedtest`; `run --work` killed mid-job; `run --keeper` through node outages; `index` killed
//! at random points; the network checks; help texts and every command's output holding no
//! secret; `make demo` from start to Ctrl-C.
//!
//! Every `lcw` runs in a clean environment ([`lcw_tests::binary`]): a variable set in the
//! developer's shell (`RPC_URL`, `WORKER_KEYSTORE_PATH`, `LCW_LLM_URL`, ...) never reaches it, and
//! a test that means a variable sets it on the command (`environment` checks both).

use std::path::Path;
use std::process::Command;

mod chain;
mod demo;
mod deregistered;
mod devnet;
mod environment;
mod exit;
mod fit;
mod footprint;
mod help;
mod index_crash;
mod keys;
mod metrics;
mod models_live;
mod outage;
mod preflight;
mod secrets;
mod service;
mod speedtest;
mod support;
mod sweep;
mod work;

/// `lcw` in a clean environment, logging at `warn`.
fn lcw() -> Command {
    lcw_tests::binary::lcw(env!("CARGO_BIN_EXE_lcw"))
}

/// `lcw --data-dir DATA` in a clean environment, logging at `warn`.
fn lcw_in(data: &Path) -> Command {
    let mut cmd = lcw();
    cmd.arg("--data-dir").arg(data);
    cmd
}
