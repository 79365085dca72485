//! Pure domain rules shared by the settler, the exit commands and the GraphQL API: no I/O, no
//! clock, every input explicit, so the same store gives the same answer everywhere.

pub mod exit;
pub mod latency;
pub mod schedule;
pub mod sortition;
