//! memo: run a command once, replay it afterwards. The binary (`src/main.rs`) is a thin
//! wrapper over `cli::main`; the modules below each own one concept.

pub mod bytes;
pub mod cache;
pub mod capture;
pub mod changes;
pub mod cli;
pub mod config;
pub mod console;
pub mod digest;
pub mod digest_cache;
pub mod events;
pub mod exec_args;
pub mod exit;
pub mod explain;
pub mod fsutil;
pub mod gc;
pub mod guard;
pub mod index;
pub mod inputs;
pub mod key;
pub mod lock;
pub mod outputs;
pub mod progress;
pub mod remote;
pub mod run;
pub mod stats;
pub mod store;
pub mod tiers;
pub mod trace;
pub mod traced;
pub mod usage_record;

#[cfg(test)]
mod decoders_proptest;
