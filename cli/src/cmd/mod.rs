//! One module per command.

pub(crate) mod demo;
pub(crate) mod deploy;
pub(crate) mod devnet;
pub(crate) mod index;
pub(crate) mod keys;
pub(crate) mod operator;
pub(crate) mod preflight;
pub(crate) mod register;
pub(crate) mod replay;
pub(crate) mod replicate;
pub(crate) mod serve;
pub(crate) mod service;
pub(crate) mod settle;
pub(crate) mod simulate;
pub(crate) mod speedtest;
pub(crate) mod sweep;
pub(crate) mod verify;
pub(crate) mod work;
