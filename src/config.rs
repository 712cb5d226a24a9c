//! Settings: command-line flags win over environment variables, which win over the
//! config file, which wins over the defaults. `memo config` shows each with its source.
//!
//! Owns the names of the environment variables and config keys, the config file's
//! location, and the parsing of sizes (`500M`, `2GiB`) and durations (`90s`, `7d`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exit::Fatal;

pub const DEFAULT_MAX_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path) => write!(f, "config file {}", path.display()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// The keys of the config file (TOML); every one is optional.
#[derive(Debug, Default)]
struct FileConfig {
    cache_dir: Option<PathBuf>,
    max_size: Option<String>,
    ttl: Option<String>,
    stale: Option<String>,
    verbose: Option<bool>,
    cache_failures: Option<bool>,
    tty: Option<bool>,
    trace: Option<bool>,
    umask: Option<String>,
    remote: Option<String>,
    remote_mode: Option<String>,
    remote_compression: Option<String>,
    remote_namespace: Option<String>,
    remote_read: Option<String>,
}

/// Every key of the config file with the form its value takes, as errors show it.
const FILE_KEYS: [(&str, &str); 14] = [
    ("cache_dir", "a directory in quotes, like \"~/.cache/memo\""),
    ("max_size", "a size in quotes, like \"500M\" or \"2GiB\""),
    (
        "ttl",
        "a duration in quotes, like \"90s\", \"15m\" or \"7d\"",
    ),
    (
        "stale",
        "a duration in quotes, like \"90s\", \"15m\" or \"7d\"",
    ),
    ("verbose", "true or false (without quotes)"),
    ("cache_failures", "true or false (without quotes)"),
    ("tty", "true or false (without quotes)"),
    ("trace", "true or false (without quotes)"),
    ("umask", "an octal umask in quotes, like \"002\""),
    (
        "remote",
        "a URL in quotes, like \"https://cache.example.com/memo\"",
    ),
    ("remote_mode", "\"read-write\" or \"read-only\""),
    ("remote_compression", "\"zstd\" or \"off\""),
    ("remote_namespace", "a name in quotes, like \"ci\""),
    (
        "remote_read",
        "names in quotes, separated by commas, like \"ci,default\"",
    ),
];

impl FileConfig {
    /// Takes the file's keys one by one, so that an unknown key or a value of the wrong
    /// type is reported by name, with the form expected and a near-miss key suggested.
    fn from_table(table: toml::Table, path: &Path) -> Result<FileConfig, Fatal> {
        let mut config = FileConfig::default();
        for (key, value) in table {
            let Some(&(_, expected)) = FILE_KEYS.iter().find(|(name, _)| *name == key) else {
                return Err(unknown_key(&key, path));
            };
            let wrong_type = |value: &toml::Value| {
                Fatal::failure(format!(
                    "memo: config file '{}': {key} must be {expected}, not {} {}; fix it or set MEMO_CONFIG",
                    path.display(),
                    an(value.type_str()),
                    shorten(&crate::key::escape_control(&value.to_string())),
                ))
            };
            let text = |value: toml::Value| match value {
                toml::Value::String(text) => Ok(text),
                other => Err(wrong_type(&other)),
            };
            let flag = |value: toml::Value| match value {
                toml::Value::Boolean(flag) => Ok(flag),
                other => Err(wrong_type(&other)),
            };
            match key.as_str() {
                "cache_dir" => {
                    let dir = text(value)?;
                    config.cache_dir = Some(file_cache_dir(&dir, path)?);
                }
                "max_size" => config.max_size = Some(text(value)?),
                "ttl" => config.ttl = Some(text(value)?),
                "stale" => config.stale = Some(text(value)?),
                "verbose" => config.verbose = Some(flag(value)?),
                "cache_failures" => config.cache_failures = Some(flag(value)?),
                "tty" => config.tty = Some(flag(value)?),
                "trace" => config.trace = Some(flag(value)?),
                "umask" => config.umask = Some(text(value)?),
                "remote" => config.remote = Some(text(value)?),
                "remote_mode" => config.remote_mode = Some(text(value)?),
                "remote_compression" => config.remote_compression = Some(text(value)?),
                "remote_namespace" => config.remote_namespace = Some(text(value)?),
                "remote_read" => config.remote_read = Some(text(value)?),
                _ => unreachable!("every key of FILE_KEYS is taken above"),
            }
        }
        Ok(config)
    }
}

/// "an integer", "a string": the article for a TOML type's name.
fn an(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

/// At most 40 characters of `text`: enough to recognise a value, not to flood a line.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

fn unknown_key(key: &str, path: &Path) -> Fatal {
    let hint = match closest_key(key) {
        Some(near) => format!("did you mean {near}?"),
        None => format!(
            "the keys are {}",
            FILE_KEYS.map(|(name, _)| name).join(", ")
        ),
    };
    Fatal::failure(format!(
        "memo: config file '{}': unknown key {}; {hint}",
        path.display(),
        crate::key::escape_control(key)
    ))
}

/// The known key nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest_key(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase().replace('-', "_");
    FILE_KEYS
        .iter()
        .map(|(name, _)| (edit_distance(&key, name), *name))
        .filter(|(distance, name)| *distance <= (name.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `cache_dir` as the config file gives it: `~` and `~/...` are below HOME, and a
/// relative path is relative to the directory the config file is in (not to wherever
/// memo happens to run).
fn file_cache_dir(text: &str, config: &Path) -> Result<PathBuf, Fatal> {
    let home = || {
        env_var("HOME").map(PathBuf::from).ok_or_else(|| {
            Fatal::failure(format!(
                "memo: config file '{}': cache_dir = {text:?} starts with ~ but HOME is not set; write the whole path",
                config.display()
            ))
        })
    };
    if text == "~" {
        return home();
    }
    if let Some(rest) = text.strip_prefix("~/") {
        return Ok(home()?.join(rest));
    }
    let dir = Path::new(text);
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    let base = config.parent().unwrap_or(Path::new(""));
    let base = if base.is_absolute() {
        base.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(base))
            .unwrap_or_else(|_| base.to_path_buf())
    };
    Ok(base.join(dir))
}

/// The effective settings of one memo call.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config_file: PathBuf,
    pub config_file_found: bool,
    pub cache_dir: Setting<PathBuf>,
    pub max_size: Setting<u64>,
    pub ttl: Setting<Option<Duration>>,
    pub stale: Setting<Option<Duration>>,
    pub verbose: Setting<bool>,
    pub cache_failures: Setting<bool>,
    /// Run the command on a pseudo-terminal when memo's stdout and stderr are a terminal.
    pub tty: Setting<bool>,
    /// Discover the command's inputs by tracing it.
    pub trace: Setting<bool>,
    /// For a cache shared by a team: the umask of the cache's files and directories
    /// (`002`: group-writable). `None`: private (0700 directories, 0600 files).
    pub umask: Setting<Option<u32>>,
    pub remote: RemoteSettings,
}

/// Whether this machine writes to the shared cache or only reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteMode {
    ReadWrite,
    ReadOnly,
}

impl fmt::Display for RemoteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoteMode::ReadWrite => "read-write",
            RemoteMode::ReadOnly => "read-only",
        })
    }
}

/// The shared cache: where it is, how this machine uses it, and the secrets that come
/// only from the environment (`MEMO_REMOTE_SIGNING_KEY`, `MEMO_REMOTE_USER`,
/// `MEMO_REMOTE_PASSWORD`, `MEMO_REMOTE_TOKEN`; `MEMO_REMOTE_CA` names a file).
#[derive(Clone, Debug)]
pub struct RemoteSettings {
    /// `None`: no shared cache (unset, empty or `off`).
    pub url: Setting<Option<String>>,
    pub mode: Setting<RemoteMode>,
    /// Whether objects travel as zstd (`Content-Encoding: zstd`), for a server that
    /// takes it (bazel-remote); off, the raw bytes.
    pub compression: Setting<bool>,
    /// Where this machine writes.
    pub namespace: Setting<String>,
    /// Where this machine reads, in order.
    pub read: Setting<Vec<String>>,
    pub signing_key: Option<Vec<u8>>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
}

pub const DEFAULT_NAMESPACE: &str = "default";

fn parse_remote_url(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    Ok(Some(text.to_string()))
}

fn parse_remote_compression(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "zstd" => Ok(true),
        "off" | "none" | "" => Ok(false),
        _ => Err("expected zstd or off".into()),
    }
}

fn parse_remote_mode(text: &str) -> Result<RemoteMode, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "read-write" | "readwrite" | "rw" => Ok(RemoteMode::ReadWrite),
        "read-only" | "readonly" | "ro" => Ok(RemoteMode::ReadOnly),
        _ => Err("expected read-write or read-only".into()),
    }
}

/// A namespace: 1 to 200 printable characters, no comma (it separates the read list).
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("a namespace cannot be empty".into());
    }
    if name.len() > 200 {
        return Err("a namespace is at most 200 characters".into());
    }
    if name.chars().any(|c| c == ',' || c.is_control()) {
        return Err("a namespace cannot contain a comma or control characters".into());
    }
    Ok(name.to_string())
}

fn parse_namespaces(text: &str) -> Result<Vec<String>, String> {
    text.split(',').map(parse_namespace).collect()
}

/// Values given on the command line, which win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub cache_dir: Option<PathBuf>,
    pub max_size: Option<u64>,
    pub ttl: Option<Duration>,
    pub stale: Option<Duration>,
    pub verbose: bool,
    pub cache_failures: bool,
    pub tty: bool,
    pub trace: bool,
    pub remote: Option<String>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$MEMO_CONFIG`, else `$XDG_CONFIG_HOME/memo/config.toml`, else `~/.config/memo/config.toml`.
pub fn config_file_path() -> PathBuf {
    if let Some(path) = env_var("MEMO_CONFIG") {
        return PathBuf::from(path);
    }
    let base = env_var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| env_var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    base.join("memo").join("config.toml")
}

fn is_dev_null(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    meta.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev())
}

fn read_file(path: &Path) -> Result<Option<FileConfig>, Fatal> {
    let cannot_read = |e: std::io::Error| {
        Fatal::failure(format!(
            "memo: cannot read config file '{}': {e}; fix it or set MEMO_CONFIG",
            path.display()
        ))
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // The default location below a HOME that is a file or cannot be searched: there
        // is no config file to read (the cache location then warns on its own).
        Err(e)
            if env_var("MEMO_CONFIG").is_none()
                && matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::EACCES)) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(cannot_read(e)),
        // `MEMO_CONFIG=/dev/null`, the usual way to say "no config file".
        Ok(meta) if is_dev_null(&meta) => return Ok(None),
        // A FIFO or another device would block or never end: refuse it before opening.
        Ok(meta) if !meta.is_file() => {
            return Err(cannot_read(std::io::Error::other("not a regular file")))
        }
        Ok(_) => {}
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cannot_read(e)),
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        Fatal::failure(format!(
            "memo: config file '{}' is invalid: {}; fix it or set MEMO_CONFIG",
            path.display(),
            toml_problem(&e, &text)
        ))
    })?;
    FileConfig::from_table(table, path).map(Some)
}

/// A TOML error in one line: where, the key, and what is wrong (toml's own message
/// spreads over several lines around a picture of the source).
fn toml_problem(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !message.contains(key.trim()) => {
            format!("line {line_no}, key {}: {message}", key.trim())
        }
        _ => format!("line {line_no}: {message}"),
    }
}

/// Picks flag, then env, then file, then default, parsing text with `parse`.
fn resolve<T>(
    flag: Option<T>,
    flag_name: &'static str,
    env: &'static str,
    file: Option<&str>,
    file_path: &Path,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Setting<T>, Fatal> {
    if let Some(value) = flag {
        return Ok(Setting {
            value,
            source: Source::Flag(flag_name),
        });
    }
    if let Some(text) = env_var(env) {
        let value = parse(&text)
            .map_err(|e| Fatal::failure(format!("memo: {env}={text:?} is invalid: {e}")))?;
        return Ok(Setting {
            value,
            source: Source::Env(env),
        });
    }
    if let Some(text) = file {
        let value = parse(text).map_err(|e| {
            // The file's keys are the variables' names without MEMO_, in lower case.
            let key = env.trim_start_matches("MEMO_").to_ascii_lowercase();
            Fatal::failure(format!(
                "memo: config file '{}': {key} = {text:?} is invalid: {e}",
                file_path.display()
            ))
        })?;
        return Ok(Setting {
            value,
            source: Source::File(file_path.to_path_buf()),
        });
    }
    Ok(Setting {
        value: default,
        source: Source::Default,
    })
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1/0, true/false, yes/no or on/off".into()),
    }
}

impl Settings {
    pub fn load(flags: &Flags) -> Result<Settings, Fatal> {
        let path = config_file_path();
        let file = read_file(&path)?;
        let found = file.is_some();
        let file = file.unwrap_or_default();
        let cache_dir = match (&flags.cache_dir, env_var("MEMO_DIR"), &file.cache_dir) {
            (Some(dir), _, _) => Setting {
                value: dir.clone(),
                source: Source::Flag("--cache-dir"),
            },
            (None, Some(dir), _) => Setting {
                value: PathBuf::from(dir),
                source: Source::Env("MEMO_DIR"),
            },
            (None, None, Some(dir)) => Setting {
                value: dir.clone(),
                source: Source::File(path.clone()),
            },
            (None, None, None) => Setting {
                value: default_cache_dir(),
                source: Source::Default,
            },
        };
        let duration = |t: &str| parse_duration(t).map(Some);
        let bool_file = |b: Option<bool>| b.map(|b| if b { "true" } else { "false" });
        Ok(Settings {
            cache_dir,
            max_size: resolve(
                flags.max_size,
                "--max-size",
                "MEMO_MAX_SIZE",
                file.max_size.as_deref(),
                &path,
                DEFAULT_MAX_SIZE,
                parse_size,
            )?,
            ttl: resolve(
                flags.ttl.map(Some),
                "--ttl",
                "MEMO_TTL",
                file.ttl.as_deref(),
                &path,
                None,
                duration,
            )?,
            stale: resolve(
                flags.stale.map(Some),
                "--stale",
                "MEMO_STALE",
                file.stale.as_deref(),
                &path,
                None,
                duration,
            )?,
            verbose: resolve(
                flags.verbose.then_some(true),
                "--verbose",
                "MEMO_VERBOSE",
                bool_file(file.verbose),
                &path,
                false,
                parse_bool,
            )?,
            cache_failures: resolve(
                flags.cache_failures.then_some(true),
                "--cache-failures",
                "MEMO_CACHE_FAILURES",
                bool_file(file.cache_failures),
                &path,
                false,
                parse_bool,
            )?,
            tty: resolve(
                flags.tty.then_some(true),
                "--tty",
                "MEMO_TTY",
                bool_file(file.tty),
                &path,
                false,
                parse_bool,
            )?,
            trace: resolve(
                flags.trace.then_some(true),
                "--trace",
                "MEMO_TRACE",
                bool_file(file.trace),
                &path,
                false,
                parse_bool,
            )?,
            umask: resolve(
                None,
                "",
                "MEMO_UMASK",
                file.umask.as_deref(),
                &path,
                None,
                |t| parse_umask(t).map(Some),
            )?,
            remote: remote_settings(flags, &file, &path)?,
            config_file: path,
            config_file_found: found,
        })
    }
}

fn remote_settings(flags: &Flags, file: &FileConfig, path: &Path) -> Result<RemoteSettings, Fatal> {
    let url = resolve(
        flags
            .remote
            .as_deref()
            .map(parse_remote_url)
            .transpose()
            .map_err(Fatal::failure)?,
        "--remote",
        "MEMO_REMOTE",
        file.remote.as_deref(),
        path,
        None,
        parse_remote_url,
    )?;
    let mode = resolve(
        None,
        "",
        "MEMO_REMOTE_MODE",
        file.remote_mode.as_deref(),
        path,
        RemoteMode::ReadWrite,
        parse_remote_mode,
    )?;
    let compression = resolve(
        None,
        "",
        "MEMO_REMOTE_COMPRESSION",
        file.remote_compression.as_deref(),
        path,
        false,
        parse_remote_compression,
    )?;
    let namespace = resolve(
        None,
        "",
        "MEMO_REMOTE_NAMESPACE",
        file.remote_namespace.as_deref(),
        path,
        DEFAULT_NAMESPACE.to_string(),
        parse_namespace,
    )?;
    let read = resolve(
        None,
        "",
        "MEMO_REMOTE_READ",
        file.remote_read.as_deref(),
        path,
        vec![namespace.value.clone()],
        parse_namespaces,
    )?;
    Ok(RemoteSettings {
        url,
        mode,
        compression,
        namespace,
        read,
        signing_key: std::env::var_os("MEMO_REMOTE_SIGNING_KEY")
            .filter(|k| !k.is_empty())
            .map(std::os::unix::ffi::OsStringExt::into_vec),
        user: env_var("MEMO_REMOTE_USER"),
        password: env_var("MEMO_REMOTE_PASSWORD"),
        token: env_var("MEMO_REMOTE_TOKEN"),
        ca_file: env_var("MEMO_REMOTE_CA").map(PathBuf::from),
    })
}

/// `$XDG_CACHE_HOME/memo`, else `~/.cache/memo`; empty when neither variable is set
/// (`memo run` then warns and runs without a cache).
fn default_cache_dir() -> PathBuf {
    env_var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env_var("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("memo"))
        .unwrap_or_default()
}

/// An octal umask such as `002` or `0027`.
pub fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{text}' is not an octal umask like 002"))
}

/// Splits `1.5G` into `1.5` and `G`; `what` names the expected form in the error.
fn split_number<'a>(text: &'a str, what: &str) -> Result<(f64, &'a str), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number
        .parse()
        .map_err(|_| format!("'{text}' is not {what}"))?;
    Ok((number, unit))
}

/// `500M`, `2GiB`, `1.5G`, `1024`: decimal and binary suffixes both mean powers of 1024,
/// as in ccache and du.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text, "a size like 500M or 2GiB")?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("unknown size unit '{unit}' (use K, M, G or T)")),
    };
    Ok((number * multiplier as f64) as u64)
}

/// The longest duration memo accepts: far beyond any sensible TTL or age, and far
/// inside what the clock can add to the current time.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// `90s`, `15m`, `12h`, `7d`, `2w`, or a plain number of seconds; at most 100 years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "'{}' is negative; durations cannot be negative",
            text.trim()
        ));
    }
    let (number, unit) = split_number(text, "a duration like 90s, 15m or 7d")?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        "w" => 7.0 * 86400.0,
        _ => {
            return Err(format!(
                "unknown duration unit '{unit}' (use s, m, h, d or w)"
            ))
        }
    };
    match Duration::try_from_secs_f64(number * seconds) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "'{}' is too long; at most 36500d (100 years)",
            text.trim()
        )),
    }
}

/// A size for people: `1.5 GiB`, `12.0 KiB`, `300 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `350ms`, `2.5s`, `3m20s`, `4h05m`, `2d03h`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{:.1}s", d.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("10 kb").unwrap(), 10240);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn a_near_miss_key_is_suggested_and_a_far_one_is_not() {
        assert_eq!(closest_key("maxsize"), Some("max_size"));
        assert_eq!(closest_key("Cache-Dir"), Some("cache_dir"));
        assert_eq!(closest_key("remote_mod"), Some("remote_mode"));
        assert_eq!(closest_key("tll"), Some("ttl"));
        assert_eq!(closest_key("colour"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("999999999999d")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("1e300").is_err());
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
    }

    #[test]
    fn sizes_and_durations_format() {
        assert_eq!(format_size(300), "300 B");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(format_duration(Duration::from_secs(200)), "3m20s");
        assert_eq!(
            format_duration(Duration::from_secs(2 * 86400 + 3 * 3600)),
            "2d03h"
        );
    }
}
