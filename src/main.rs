//! memo: run a command once, replay it afterwards. See README.md.

mod bytes;
mod capture;
mod cli;
mod digest;
mod digest_cache;
mod exit;
mod fsutil;
mod index;
mod inputs;
mod key;
mod outputs;
mod run;
mod store;

fn main() -> std::process::ExitCode {
    cli::main()
}
