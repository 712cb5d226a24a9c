//! The command line: turns arguments into a validated request and hands it on.
//!
//! Owns the clap definition (also the source of completions and the man page) and the
//! choice of the cache directory. It does no caching work itself.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::exit::{Code, Fatal};
use crate::run::{self, CacheDir, RunRequest};

#[derive(Debug, Parser)]
#[command(
    name = "memo",
    version,
    about = "Run a command once, replay its output, exit code and files afterwards",
    long_about = "memo memoizes shell commands. `memo run -- CMD ARGS...` runs CMD once; the next \
                  call with the same command line, working directory, executable, declared inputs \
                  and environment replays its stdout, stderr, exit code and declared output files \
                  from a content-addressed store, without running anything.",
    after_help = "Exit codes: the command's own; 125 when memo itself fails; 126 when the command \
                  cannot be executed; 127 when it is not found."
)]
pub struct Cli {
    /// Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command, or replay its recorded result
    Run(RunArgs),
}

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub struct RunArgs {
    /// A file, directory or glob whose contents the result depends on (repeatable)
    #[arg(short, long = "input", value_name = "PATH")]
    pub inputs: Vec<OsString>,

    /// A file or directory the command writes, restored on a hit (repeatable)
    #[arg(short, long = "output", value_name = "PATH")]
    pub outputs: Vec<PathBuf>,

    /// An environment variable the result depends on; globs allowed, e.g. 'AWS_*' (repeatable)
    #[arg(short, long = "env", value_name = "NAME")]
    pub env: Vec<String>,

    /// Leave the working directory out of the key, to share results between checkouts
    #[arg(long)]
    pub ignore_cwd: bool,

    /// Read standard input, key on it and feed it to the command (default: /dev/null)
    #[arg(long)]
    pub stdin: bool,

    /// Extra text to mix into the key, e.g. a version you bump by hand
    #[arg(long, value_name = "TEXT")]
    pub salt: Option<OsString>,

    /// A shell command whose stdout joins the key, e.g. 'git rev-parse HEAD'
    #[arg(long, value_name = "CMD")]
    pub key_cmd: Option<OsString>,

    /// Also store and replay non-zero exit codes
    #[arg(long)]
    pub cache_failures: bool,

    /// Run the command even on a hit, and replace the stored result
    #[arg(long)]
    pub force: bool,

    /// Print one line to stderr per call: hit or miss, short key, time saved
    #[arg(short, long)]
    pub verbose: bool,

    /// The command and its arguments, best written after `--`
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Where the cache lives: `--cache-dir`, else `MEMO_DIR`, else the XDG cache directory.
pub fn cache_dir(flag: Option<PathBuf>) -> Result<CacheDir, Fatal> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = flag.or_else(|| non_empty("MEMO_DIR").map(PathBuf::from)) {
        return Ok(CacheDir {
            path,
            explicit: true,
        });
    }
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .ok_or_else(|| {
            Fatal::failure("memo: cannot find a cache directory: set MEMO_DIR or HOME")
        })?;
    Ok(CacheDir {
        path: base.join("memo"),
        explicit: false,
    })
}

fn run_request(args: RunArgs, cache_dir: Option<PathBuf>) -> Result<RunRequest, Fatal> {
    if args.command.is_empty() {
        return Err(Fatal::failure(
            "memo: no command given; write it after '--', e.g. memo run -- make report",
        ));
    }
    Ok(RunRequest {
        argv: args.command,
        inputs: args.inputs,
        outputs: args
            .outputs
            .iter()
            .map(|p| crate::inputs::clean(p))
            .collect(),
        env: args.env,
        ignore_cwd: args.ignore_cwd,
        stdin: args.stdin,
        salt: args.salt,
        key_cmd: args.key_cmd,
        cache_failures: args.cache_failures,
        force: args.force,
        verbose: args.verbose,
        cache_dir: self::cache_dir(cache_dir)?,
    })
}

fn dispatch(cli: Cli) -> Result<i32, Fatal> {
    match cli.command {
        Command::Run(args) => {
            if args.command.is_empty() {
                return Err(Fatal::failure(
                    "memo: no command given; write it after '--', e.g. memo run -- make report",
                ));
            }
            if run::is_disabled() {
                return Err(run::exec_directly(&args.command));
            }
            run::run(run_request(args, cli.cache_dir)?)
        }
    }
}

/// Parses the command line and runs it; every error becomes one line on stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(fatal) => {
            eprintln!("{}", fatal.message);
            ExitCode::from(fatal.code as u8)
        }
    }
}

fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(Code::Failure as u8)
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("memo: {first}; see 'memo --help'");
            ExitCode::from(Code::Failure as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = Cli::try_parse_from(["memo", "run", "-i", "a", "--", "ls", "-l", "-i"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.inputs, ["a"]);
        assert_eq!(args.command, ["ls", "-l", "-i"]);
    }

    #[test]
    fn command_without_double_dash_stops_option_parsing() {
        let cli = Cli::try_parse_from(["memo", "run", "-v", "ls", "-l"]).unwrap();
        let Command::Run(args) = cli.command;
        assert!(args.verbose);
        assert_eq!(args.command, ["ls", "-l"]);
    }
}
