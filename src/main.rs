//! memo: run a command once, replay it afterwards. See README.md.

fn main() -> std::process::ExitCode {
    memo_cli::cli::main()
}
