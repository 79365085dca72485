//! One module per command.

pub(crate) mod deploy;
pub(crate) mod devnet;
pub(crate) mod simulate;
