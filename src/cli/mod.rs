//! The command line: turns arguments into validated requests and hands them on.
//!
//! Owns the clap definition (also the source of the completions and the man page) and
//! how each subcommand's result is shown (`show`). It does no caching work itself.

mod path_lists;
mod remote;
mod show;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{self, Flags, Settings};
use crate::exit::{Code, Fatal};
use crate::key::StreamMode;
use crate::run::{self, RunRequest};

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
                  cannot be executed; 127 when it is not found.\n\
                  Environment: MEMO_DIR, MEMO_MAX_SIZE, MEMO_TTL, MEMO_STALE, MEMO_VERBOSE, \
                  MEMO_CACHE_FAILURES, MEMO_UMASK, MEMO_CONFIG, MEMO_DISABLE=1 (bypass memo entirely); \
                  for the shared cache MEMO_REMOTE, MEMO_REMOTE_MODE, MEMO_REMOTE_COMPRESSION, MEMO_REMOTE_NAMESPACE, \
                  MEMO_REMOTE_READ, MEMO_REMOTE_SIGNING_KEY, MEMO_REMOTE_USER, MEMO_REMOTE_PASSWORD, \
                  MEMO_REMOTE_TOKEN, MEMO_REMOTE_CA (docs/remote.md)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// The options every subcommand takes.
#[derive(Debug, Clone, Default, Args)]
pub struct Global {
    /// Cache directory [default: $MEMO_DIR, else $XDG_CACHE_HOME/memo, else ~/.cache/memo]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Shared cache behind the local one: http(s)://HOST/PATH (Bazel remote-cache layout)
    /// or s3://BUCKET/PREFIX; 'off' for none [env: MEMO_REMOTE]
    #[arg(long, global = true, value_name = "URL")]
    pub remote: Option<String>,
}

/// `memo run` alone: the same global options and [`RunArgs`] without the other
/// subcommands, whose definitions cost a small hit a third of its start-up. Only a
/// command line it accepts is taken from it; anything else (help, errors) goes through
/// [`Cli`], so what the user sees comes from one definition.
#[derive(Debug, Parser)]
#[command(name = "memo")]
struct RunOnly {
    #[command(flatten)]
    global: Global,

    #[command(subcommand)]
    command: RunOnlyCommand,
}

#[derive(Debug, Subcommand)]
enum RunOnlyCommand {
    Run(RunArgs),
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command, or replay its recorded result
    Run(RunArgs),
    /// Say whether `memo run` would hit, and on a miss what changed; runs nothing
    Explain(RunArgs),
    /// Show hits, misses, size and time saved
    Stats(StatsArgs),
    /// Trim the cache: evict by cost-aware priority or age, drop unreferenced objects
    Gc(GcArgs),
    /// Remove every cached result
    Clear,
    /// List cached results
    Ls(LsArgs),
    /// Remove cached results by key prefix or by a pattern on the command
    Rm(RmArgs),
    /// Show the latest cache events (hits, misses, stores, evictions, errors)
    Log(LogArgs),
    /// Print the effective settings and where each comes from
    Config,
    /// Show one cached result: its command, inputs, outputs and streams
    Show(ShowArgs),
    /// Work with the shared cache: check that it answers, upload what is pending
    Remote(RemoteArgs),
    /// (internal) the cached keys, one short key a line, for shell completion
    #[command(name = "__keys", hide = true)]
    Keys,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The result's key, or a unique prefix of it (as shown by `memo ls`)
    #[arg(value_name = "KEY")]
    pub key: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    /// Print the recorded stdout (for a merged recording: the one stream)
    #[arg(long, conflicts_with_all = ["stderr", "json"])]
    pub stdout: bool,
    /// Print the recorded stderr (nothing for a merged recording)
    #[arg(long, conflicts_with_all = ["stdout", "json"])]
    pub stderr: bool,
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    #[command(subcommand)]
    pub action: RemoteAction,
}

#[derive(Debug, Subcommand)]
pub enum RemoteAction {
    /// Write, read and delete a probe object; report each step's latency and what failed
    Check,
    /// Upload every result stored here and not yet sent, and wait for it (for the end of
    /// a CI job)
    Push,
    /// (internal) the detached uploader a miss starts
    #[command(hide = true)]
    Upload,
}

fn duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text)
}

/// Paths as given, the empty one included, so that `-o ""` gets memo's own error.
fn path_allowing_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

fn size(text: &str) -> Result<u64, String> {
    config::parse_size(text)
}

/// `--stream-mode`: `separate`, `merged` or `terminal=COLUMNS`.
fn stream_mode_arg(text: &str) -> Result<StreamMode, String> {
    match text {
        "separate" => Ok(StreamMode::Separate),
        "merged" => Ok(StreamMode::Merged),
        _ => text
            .strip_prefix("terminal=")
            .and_then(|columns| columns.parse().ok())
            .map(|columns| StreamMode::Terminal { columns })
            .ok_or_else(|| "expected separate, merged or terminal=COLUMNS".to_string()),
    }
}

/// Where the command starts, for `memo run --help` and the man pages.
pub const RUN_ARGS_HELP: &str = "Where the command starts: with '--', everything before it \
    is memo's: -i and -o take every path up to the next option or '--' (memo run -i a.c b.h \
    -o app -- cc -o app a.c), and any other word there is an error. Without '--', -i and -o \
    take one path each and the first word that is not an option starts the command (memo run \
    -i a.c ls -l runs 'ls -l').";

#[derive(Debug, Default, Args)]
#[command(arg_required_else_help = true, after_help = RUN_ARGS_HELP)]
pub struct RunArgs {
    /// A file, directory or glob whose contents the result depends on; before '--',
    /// several paths (-i a.c b.h); repeatable
    #[arg(short, long = "input", value_name = "PATH")]
    pub inputs: Vec<OsString>,

    /// A file or directory the command writes, restored on a hit; before '--', several
    /// paths; repeatable
    #[arg(short, long = "output", value_name = "PATH", value_parser = path_allowing_empty())]
    pub outputs: Vec<PathBuf>,

    /// An environment variable the result depends on; globs allowed, e.g. 'AWS_*' (repeatable)
    #[arg(short, long = "env", value_name = "NAME")]
    pub env: Vec<String>,

    /// Leave the working directory out of the key, to share results between checkouts
    #[arg(long)]
    pub ignore_cwd: bool,

    /// Leave matching paths under input directories out of the key, gitignore-style,
    /// e.g. '__pycache__' or '*.log' (repeatable)
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,

    /// Honour .gitignore and .ignore files under input directories
    #[arg(long)]
    pub gitignore: bool,

    /// Read standard input, key on it and feed it to the command (default: /dev/null)
    #[arg(long)]
    pub stdin: bool,

    /// Extra text to mix into the key, e.g. a version you bump by hand
    #[arg(long, value_name = "TEXT")]
    pub salt: Option<OsString>,

    /// A shell command whose stdout joins the key, e.g. 'git rev-parse HEAD'
    #[arg(long, value_name = "CMD")]
    pub key_cmd: Option<OsString>,

    /// Treat results older than this as misses, e.g. 10m, 12h, 7d [env: MEMO_TTL]
    #[arg(long, value_name = "DURATION", value_parser = duration, allow_hyphen_values = true)]
    pub ttl: Option<Duration>,

    /// After --ttl expires, keep replaying the old result this much longer while it is
    /// refreshed in the background; with --output, no background refresh runs (it would
    /// rewrite the outputs being read): the result is rerun once the window ends
    /// [env: MEMO_STALE]
    #[arg(long, value_name = "DURATION", value_parser = duration, allow_hyphen_values = true)]
    pub stale: Option<Duration>,

    /// Also store and replay non-zero exit codes [env: MEMO_CACHE_FAILURES]
    #[arg(long)]
    pub cache_failures: bool,

    /// Run the command even on a hit, and replace the stored result
    #[arg(long)]
    pub force: bool,

    /// When stdout and stderr are a terminal, run the command on a pseudo-terminal (colours,
    /// line buffering) and replay its recording only to a terminal [env: MEMO_TTY]
    #[arg(long)]
    pub tty: bool,

    /// Discover the files the command reads by tracing it (Linux): later calls are keyed
    /// on exactly those, and the files it writes are restored on a hit [env: MEMO_TRACE]
    #[arg(long)]
    pub trace: bool,

    /// Print one line to stderr per call: hit or miss, short key, time saved [env: MEMO_VERBOSE]
    #[arg(short, long)]
    pub verbose: bool,

    /// (internal) this run refreshes a stale result in the background
    #[arg(long, hide = true)]
    pub refresh: bool,

    /// (internal) record as if stdout and stderr were connected this way
    #[arg(long, hide = true, value_parser = stream_mode_arg)]
    pub stream_mode: Option<StreamMode>,

    /// The command and its arguments, best written after `--`
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    /// Reset the counters (hits, misses, time saved...), keeping the cached results
    #[arg(long)]
    pub zero: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Evict until the cache is at most this big, e.g. 500M, 2GiB [env: MEMO_MAX_SIZE]
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_size: Option<u64>,
    /// Evict results not used for this long, e.g. 7d
    #[arg(long, value_name = "DURATION", value_parser = duration, allow_hyphen_values = true)]
    pub max_age: Option<Duration>,
    /// Print what would be removed and how much it frees; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep unreferenced objects and staging files younger than this: their entry may be
    /// being written
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10m", allow_hyphen_values = true)]
    pub grace: Duration,
    /// Also re-hash every stored object in full (slow) and drop damaged ones, with the
    /// results that use them
    #[arg(long)]
    pub verify: bool,
    /// (internal) the automatic trim: give up at once if another gc runs
    #[arg(long, hide = true)]
    pub auto: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub struct RmArgs {
    /// Key prefixes (as shown by `memo ls`, at least 4 hex digits)
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,
    /// Remove every result whose command line matches this glob, e.g. 'make *'
    #[arg(long, value_name = "PATTERN")]
    pub command: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// How many events to show
    #[arg(short = 'n', long, default_value_t = 20)]
    pub count: usize,
    /// Print the events as JSON lines
    #[arg(long)]
    pub json: bool,
}

const NO_COMMAND: &str =
    "memo: no command given; write it after '--', e.g. memo run -- make report";

fn run_request(args: RunArgs, global: Global) -> Result<RunRequest, Fatal> {
    if args.command.is_empty() {
        return Err(Fatal::failure(NO_COMMAND));
    }
    let settings = load(&Flags {
        cache_dir: global.cache_dir,
        remote: global.remote,
        ttl: args.ttl,
        stale: args.stale,
        verbose: args.verbose,
        cache_failures: args.cache_failures,
        tty: args.tty,
        trace: args.trace,
        ..Flags::default()
    })?;
    // Checked here, not by clap: the TTL may come from MEMO_TTL or the config file.
    if settings.stale.value.is_some() && settings.ttl.value.is_none() {
        return Err(Fatal::failure(format!(
            "memo: a stale window ({}) needs a TTL to follow; set --ttl or MEMO_TTL, or drop the stale window",
            settings.stale.source
        )));
    }
    if args.stdin && settings.stale.value.is_some() {
        return Err(Fatal::failure(
            "memo: --stale cannot refresh a command that reads --stdin; drop one of them",
        ));
    }
    let outputs: Vec<PathBuf> = args
        .outputs
        .iter()
        .map(|p| crate::inputs::clean(p))
        .collect();
    check_outputs(&args.outputs, &settings.cache_dir.value)?;
    check_remote(&settings)?;
    Ok(RunRequest {
        argv: args.command,
        inputs: args.inputs,
        outputs,
        env: args.env,
        ignore_cwd: args.ignore_cwd,
        excludes: args.excludes,
        gitignore: args.gitignore,
        stdin: args.stdin,
        salt: args.salt,
        key_cmd: args.key_cmd,
        force: args.force,
        settings,
        stream_mode: args.stream_mode,
        refresh: args.refresh,
    })
}

/// `memo run -- 'echo hi | wc -c'`: a shell command line passed as one word names no
/// program. Said here, before the executable is looked up, so that the "not found" says
/// how to run it (`sh -c`). A program by that name, however odd, is run as asked.
fn check_not_a_shell_line(argv: &[OsString], subcommand: &str) -> Result<(), Fatal> {
    use std::os::unix::ffi::OsStrExt;
    let Some(program) = argv.first() else {
        return Ok(());
    };
    let bytes = program.as_bytes();
    let is_shell_line = bytes
        .iter()
        .any(|b| b.is_ascii_whitespace() || b"|&;<>()$`".contains(b));
    if !is_shell_line || program_exists(program) {
        return Ok(());
    }
    let line = program.to_string_lossy();
    let quoted = format!("'{}'", line.replace('\'', "'\\''"));
    // Control characters escaped, so that the error stays one line.
    let shown = |text: &str| -> String {
        text.chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect()
    };
    Err(Fatal::new(
        Code::NotFound,
        format!(
            "memo: command '{}' not found: it is a shell command line, not a program; run it through a shell: memo {subcommand} -- sh -c {}",
            shown(&line),
            shown(&quoted)
        ),
    ))
}

/// Whether `program` names a file: by its path when it has a slash, else on `PATH`.
fn program_exists(program: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if program.as_bytes().contains(&b'/') {
        return std::path::Path::new(program).symlink_metadata().is_ok();
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join(program).symlink_metadata().is_ok())
    })
}

/// Whether memo's stdin holds input the command will not see: a pipe, unless its writer
/// is gone and nothing is left in it (as in CI jobs that start every step on an empty
/// pipe), or a regular file with bytes left to read. Not a terminal or /dev/null.
fn stdin_has_input() -> bool {
    use std::io::Seek;
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileTypeExt;
    // SAFETY: fd 0 stays open for the whole process (std checked it at start-up, and
    // memo never closes it); ManuallyDrop keeps this File from closing it. Borrowing it
    // so spares a dup and a close on every call.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let kind = meta.file_type();
    if kind.is_fifo() {
        return !is_drained_pipe(&file);
    }
    kind.is_file() && file.stream_position().is_ok_and(|at| at < meta.len())
}

/// A pipe whose writers have all closed it, with nothing left to read.
fn is_drained_pipe(pipe: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let mut poll = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut unread: libc::c_int = 0;
    // SAFETY: `poll` points to one valid pollfd, and `unread` to a c_int that FIONREAD
    // fills; the descriptor stays open for the duration of both calls.
    let (ready, asked) = unsafe {
        (
            libc::poll(&mut poll, 1, 0),
            libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut unread),
        )
    };
    ready == 1 && poll.revents & libc::POLLHUP != 0 && asked == 0 && unread == 0
}

/// `memo __keys`: the short key of every cached result, for the shell completions of
/// `show` and `rm`. Reads the index only; creates nothing, and prints nothing at all
/// when there is no cache.
fn list_keys(settings: &Settings) {
    let root = &settings.cache_dir.value;
    if !root.is_dir() {
        return;
    }
    let log = crate::events::EventLog::new(root);
    let stored = crate::store::local::stored_entries(root);
    let mut usages: Vec<_> = crate::index::summary::current(root, &log)
        .usage
        .into_iter()
        .filter(|(key, _)| stored.contains_key(key))
        .collect();
    usages.sort_by_key(|(_, usage)| std::cmp::Reverse(usage.last_access_ms));
    for (key, _) in usages {
        crate::outln!("{}", key.short());
    }
}

/// Refuses declared outputs that no command could mean: an empty path, the root
/// directory, a directory that holds the cache, or a path inside the cache (either way
/// a hit would restore over the cache's own files).
fn check_outputs(outputs: &[PathBuf], cache_dir: &std::path::Path) -> Result<(), Fatal> {
    if outputs.is_empty() {
        // No working directory or cache path to resolve: a call without `-o` (most
        // hits) pays nothing here.
        return Ok(());
    }
    let cwd = std::env::current_dir().ok();
    let cache = cwd
        .as_deref()
        .map(|cwd| crate::inputs::resolved(&cwd.join(cache_dir)))
        .filter(|_| !cache_dir.as_os_str().is_empty());
    for output in outputs {
        let shown = output.display();
        if output.as_os_str().is_empty() {
            return Err(Fatal::failure(
                "memo: --output '' is empty; name the file or directory the command writes",
            ));
        }
        if output
            .components()
            .all(|c| c == std::path::Component::RootDir)
        {
            return Err(Fatal::failure(format!(
                "memo: --output '{shown}' is the root directory; name the file or directory the command writes"
            )));
        }
        if let (Some(cwd), Some(cache)) = (&cwd, &cache) {
            let resolved = crate::inputs::resolved(&cwd.join(output));
            if cache.starts_with(&resolved) {
                return Err(Fatal::failure(format!(
                    "memo: --output '{shown}' contains the cache directory '{}'; declare a narrower output or move the cache (MEMO_DIR)",
                    cache_dir.display()
                )));
            }
            if resolved.starts_with(cache) {
                return Err(Fatal::failure(format!(
                    "memo: --output '{shown}' is inside the cache directory '{}'; write the output elsewhere or move the cache (MEMO_DIR)",
                    cache_dir.display()
                )));
            }
        }
    }
    Ok(())
}

fn settings(global: Global, max_size: Option<u64>) -> Result<Settings, Fatal> {
    load(&Flags {
        cache_dir: global.cache_dir,
        remote: global.remote,
        max_size,
        ..Flags::default()
    })
}

/// A malformed shared-cache URL is an invalid invocation of the commands that use it
/// (`run`, `explain`, `remote`); the others never look at it.
fn check_remote(settings: &Settings) -> Result<(), Fatal> {
    crate::remote::validate(&settings.remote)
        .map_err(|e| Fatal::failure(format!("memo: {e} ({})", settings.remote.url.source)))
}

/// Loads the settings and applies those that are process-wide.
fn load(flags: &Flags) -> Result<Settings, Fatal> {
    let settings = Settings::load(flags)?;
    if let Some(umask) = settings.umask.value {
        crate::fsutil::set_shared_umask(umask);
    }
    Ok(settings)
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let global = cli.global;
    let plain = || settings(global.clone(), None);
    match cli.command {
        Command::Run(args) => {
            if args.command.is_empty() {
                return Err(Fatal::failure(NO_COMMAND).into());
            }
            check_not_a_shell_line(&args.command, "run")?;
            if run::is_disabled() {
                return Err(run::exec_directly(&args.command).into());
            }
            let request = run_request(args, global)?;
            if !request.stdin && !request.refresh && stdin_has_input() {
                crate::console::note(
                    "memo: note: the command reads /dev/null, not memo's stdin; add --stdin to pass it on (and key on it)",
                );
            }
            Ok(run::run(request)?)
        }
        Command::Explain(args) => {
            if let Some(program) = args.command.first() {
                check_not_a_shell_line(std::slice::from_ref(program), "explain")?;
            }
            Ok(crate::explain::explain(run_request(args, global)?)?)
        }
        Command::Keys => {
            list_keys(&plain()?);
            Ok(0)
        }
        Command::Stats(args) => show::stats(&plain()?, args.json, args.zero),
        Command::Gc(args) => show::gc(
            &settings(global, args.max_size)?,
            args.max_age,
            args.grace,
            args.verify,
            args.dry_run,
            args.auto,
        ),
        Command::Clear => show::clear(&plain()?),
        Command::Ls(args) => show::ls(&plain()?, args.json),
        Command::Rm(args) => show::rm(&plain()?, &args.keys, args.command.as_deref()),
        Command::Log(args) => show::log(&plain()?, args.count, args.json),
        // Shows the settings even when the remote's cannot be used, and says why.
        Command::Show(args) => show::show(&plain()?, &args),
        Command::Config => show::config(&Settings::load(&Flags {
            cache_dir: global.cache_dir,
            remote: global.remote,
            ..Flags::default()
        })?),
        Command::Remote(args) => {
            let settings = plain()?;
            if !matches!(args.action, RemoteAction::Upload) {
                check_remote(&settings)?;
            }
            match args.action {
                RemoteAction::Check => remote::check(&settings),
                RemoteAction::Push => remote::push(&settings),
                RemoteAction::Upload => remote::upload(&settings),
            }
        }
    }
}

/// Parses the command line and runs it; every error becomes one line on stderr.
pub fn main() -> ExitCode {
    crate::capture::streams::startup();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = match parse_run_only(&argv) {
        Some(cli) => cli,
        None => match parse(argv) {
            Ok(cli) => cli,
            Err(code) => return code,
        },
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(err) => match err.downcast_ref::<Fatal>() {
            Some(fatal) => {
                crate::console::note(format_args!("{}", fatal.message));
                ExitCode::from(fatal.code as u8)
            }
            None => {
                crate::console::note(format_args!("memo: {err:#}"));
                ExitCode::from(Code::Failure as u8)
            }
        },
    }
}

/// Why a command line was refused: by the pass over path lists, or by clap.
enum Refusal {
    PathList(Fatal),
    Clap(clap::Error),
}

/// `argv` through the definition of `T` (path lists spread first).
fn parse_as<T: CommandFactory + clap::FromArgMatches>(argv: Vec<OsString>) -> Result<T, Refusal> {
    let mut definition = T::command();
    definition.build();
    let argv = path_lists::spread(&definition, argv).map_err(Refusal::PathList)?;
    definition
        .try_get_matches_from_mut(argv)
        .and_then(|matches| T::from_arg_matches(&matches))
        .map_err(Refusal::Clap)
}

/// The whole command line through the whole definition; a refusal is said on stderr.
fn parse(argv: Vec<OsString>) -> Result<Cli, ExitCode> {
    parse_as::<Cli>(argv).map_err(|refusal| match refusal {
        Refusal::PathList(fatal) => {
            crate::console::note(&fatal.message);
            ExitCode::from(fatal.code as u8)
        }
        Refusal::Clap(err) => usage_error(err),
    })
}

/// `memo run ...` through [`RunOnly`]; `None` for any other command line, and for one
/// it does not accept as it stands.
fn parse_run_only(argv: &[OsString]) -> Option<Cli> {
    if argv.get(1).map(OsString::as_os_str) != Some("run".as_ref()) {
        return None;
    }
    // `memo run -- CMD ARGS...`: no option of memo's, nothing for clap to do (every
    // field of RunArgs defaults to empty, as clap leaves it).
    if argv.len() > 3 && argv[2] == "--" {
        return Some(Cli {
            global: Global::default(),
            command: Command::Run(RunArgs {
                command: argv[3..].to_vec(),
                ..RunArgs::default()
            }),
        });
    }
    if let Some(cli) = parse_plain_run(argv) {
        return Some(cli);
    }
    let RunOnly { global, command } = parse_as::<RunOnly>(argv.to_vec()).ok()?;
    let RunOnlyCommand::Run(args) = command;
    Some(Cli {
        global,
        command: Command::Run(args),
    })
}

/// `memo run [--cache-dir DIR] [-i PATH...]... -- CMD ARGS...`, the lines scripts and
/// Makefiles write most, read without clap (whose definition costs a small hit a tenth
/// of its time). Any other word before `--`, a value that is empty or starts with `-`, a
/// second `--cache-dir`: `None`, and clap reads the line. A unit test holds the two
/// readings equal.
fn parse_plain_run(argv: &[OsString]) -> Option<Cli> {
    use std::os::unix::ffi::OsStrExt;
    let double_dash = 2 + argv.get(2..)?.iter().position(|a| a == "--")?;
    if double_dash + 1 >= argv.len() {
        return None;
    }
    let plain = |word: &OsString| !word.is_empty() && !word.as_bytes().starts_with(b"-");
    let mut global = Global::default();
    let mut args = RunArgs::default();
    let mut inputs = false;
    let mut i = 2;
    while i < double_dash {
        let word = &argv[i];
        let value = argv.get(i + 1).filter(|v| i + 1 < double_dash && plain(v));
        match word.as_bytes() {
            b"--cache-dir" if global.cache_dir.is_none() => {
                global.cache_dir = Some(value?.into());
                inputs = false;
                i += 2;
            }
            b"-i" | b"--input" => {
                args.inputs.push(value?.clone());
                inputs = true;
                i += 2;
            }
            bytes if global.cache_dir.is_none() && bytes.starts_with(b"--cache-dir=") => {
                let dir = &bytes[b"--cache-dir=".len()..];
                if dir.is_empty() {
                    return None;
                }
                global.cache_dir = Some(std::ffi::OsStr::from_bytes(dir).into());
                inputs = false;
                i += 1;
            }
            _ if inputs && plain(word) => {
                args.inputs.push(word.clone());
                i += 1;
            }
            _ => return None,
        }
    }
    args.command = argv[double_dash + 1..].to_vec();
    Some(Cli {
        global,
        command: Command::Run(args),
    })
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
            match suggestion(&err) {
                Some(similar) => crate::console::note(format_args!(
                    "memo: {first}; did you mean '{similar}'? see 'memo --help'"
                )),
                None => crate::console::note(format_args!("memo: {first}; see 'memo --help'")),
            }
            ExitCode::from(Code::Failure as u8)
        }
    }
}

/// clap's "a similar subcommand exists" (`memo rum` -> `run`), which its rendering puts
/// on a later line than the one kept.
fn suggestion(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ]
    .into_iter()
    .find_map(|kind| match err.get(kind)? {
        ContextValue::String(one) => Some(one.clone()),
        ContextValue::Strings(many) => many.first().cloned(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        RunOnly::command().debug_assert();
    }

    /// The short definition for `memo run` takes a command line exactly as the whole one
    /// does, or leaves it to the whole one.
    #[test]
    fn run_only_parses_as_the_whole_definition_or_not_at_all() {
        // (command line, whether the short definition takes it)
        let lines: &[(&[&str], bool)] = &[
            (&["memo", "run", "--", "cat", "f"], true),
            (&["memo", "run", "cat", "f"], true),
            (
                &[
                    "memo", "run", "-i", "a", "b", "-o", "c", "--", "cc", "-o", "c", "a",
                ],
                true,
            ),
            (&["memo", "run", "-i", "a", "ls", "-l"], true),
            (
                &[
                    "memo",
                    "run",
                    "--cache-dir",
                    "/c",
                    "--remote",
                    "off",
                    "--",
                    "x",
                ],
                true,
            ),
            (
                &[
                    "memo", "run", "--ttl", "5m", "--stale", "1h", "-v", "--", "x",
                ],
                true,
            ),
            (
                &[
                    "memo",
                    "run",
                    "--env",
                    "A",
                    "--stdin",
                    "--gitignore",
                    "--ignore-cwd",
                    "--",
                    "x",
                ],
                true,
            ),
            (
                &["memo", "run", "--trace", "--tty", "--refresh", "--", "x"],
                true,
            ),
            (&["memo", "run", "--cache-dir", "/c", "--", "x", "y"], true),
            (&["memo", "run", "--cache-dir=/c", "--", "x"], true),
            (
                &[
                    "memo",
                    "run",
                    "--cache-dir",
                    "/c",
                    "-i",
                    "a",
                    "b",
                    "--input",
                    "c",
                    "-i",
                    "d",
                    "e",
                    "--",
                    "cat",
                    "f",
                ],
                true,
            ),
            (
                &["memo", "run", "-i", "a", "--cache-dir", "/c", "--", "x"],
                true,
            ),
            (&["memo", "run", "-i", "a", "b", "--", "x"], true),
            (
                &[
                    "memo",
                    "run",
                    "--cache-dir",
                    "/c",
                    "--cache-dir",
                    "/d",
                    "--",
                    "x",
                ],
                false,
            ),
            (&["memo", "run", "--cache-dir", "", "--", "x"], false),
            (&["memo", "run", "--cache-dir=", "--", "x"], false),
            (&["memo", "run", "--cache-dir", "--", "x"], false),
            (&["memo", "run", "--cache-dir", "/c", "--"], true),
            (&["memo", "run", "-i", "--", "x"], false),
            (
                &["memo", "run", "--cache-dir", "/c", "stray", "--", "x"],
                false,
            ),
            (&["memo", "run", "--", "--help"], true),
            (&["memo", "run", "--", "--", "x"], true),
            (&["memo", "run", "--", "-i", "x", "--"], true),
            (&["memo", "run", "--"], false),
            (&["memo", "run", "--ttl", "forever", "--", "x"], false),
            (&["memo", "run", "--bogus", "--", "x"], false),
            (&["memo", "run", "a", "b", "--", "x"], false),
            (&["memo", "run", "--help"], false),
            (&["memo", "run", "-h"], false),
            (&["memo", "run"], false),
            (&["memo", "--cache-dir", "/c", "run", "--", "x"], false),
            (&["memo", "explain", "--", "x"], false),
            (&["memo", "runx", "--", "x"], false),
        ];
        for (line, fast) in lines {
            let argv: Vec<OsString> = line.iter().map(OsString::from).collect();
            let whole = parse_as::<Cli>(argv.clone()).ok();
            let short = parse_run_only(&argv);
            assert_eq!(short.is_some(), *fast, "{line:?}");
            if let Some(short) = short {
                let whole = whole.expect("the whole definition takes it too");
                assert_eq!(format!("{short:?}"), format!("{whole:?}"), "{line:?}");
            }
        }
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = Cli::try_parse_from(["memo", "run", "-i", "a", "--", "ls", "-l", "-i"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.inputs, ["a"]);
        assert_eq!(args.command, ["ls", "-l", "-i"]);
    }

    #[test]
    fn command_without_double_dash_stops_option_parsing() {
        let cli = Cli::try_parse_from(["memo", "run", "-v", "ls", "-l"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert!(args.verbose);
        assert_eq!(args.command, ["ls", "-l"]);
    }
}
