//! What the management subcommands print: for people by default, JSON with `--json`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::bytes::ByteString;
use crate::cache::{self, Cache};
use crate::config::{format_duration, format_size, Settings};
use crate::digest::Digest;
use crate::events::{now_ms, Event, Kind};
use crate::exit::Fatal;
use crate::gc;
use crate::index::summary::Top;
use crate::index::usage::{Facts, Usage};
use crate::index::{Entry, NodeKind, Output, Streams};
use crate::key::StreamMode;
use crate::key::{escape_control, FileKind};
use crate::run::Freshness;
use crate::stats::Counters;
use crate::store::Store;

/// The cache these commands look at, never created by them: `None` is an empty cache
/// (nothing yet at the default location; see `cache::open_existing`).
fn open(settings: &Settings) -> Result<Option<Cache>, Fatal> {
    cache::open_existing(&settings.cache_dir).map_err(|why| Fatal::failure(format!("memo: {why}")))
}

/// The cache that `clear`, `rm` and `gc` remove from: a missing one, wherever it was
/// named, has nothing to remove (a script's `memo clear` before any run is no error).
fn open_to_remove(settings: &Settings) -> Result<Option<Cache>, Fatal> {
    let path = &settings.cache_dir.value;
    if !path.as_os_str().is_empty()
        && std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        return Ok(None);
    }
    open(settings)
}

/// Where the cache is (or would be), for people.
fn cache_root(cache: Option<&Cache>, settings: &Settings) -> PathBuf {
    cache.map_or_else(
        || settings.cache_dir.value.clone(),
        |c| c.root().to_path_buf(),
    )
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Fatal + '_ {
    move |e| Fatal::failure(format!("memo: {what}: {e}"))
}

/// `text` with its control characters escaped; printable ASCII as it is, without a copy.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(escape_control(text))
    }
}

/// Lines of output written a block at a time (and the rest when dropped): for a long
/// list, a `write` per line is most of its time.
#[derive(Default)]
struct Lines(String);

impl Lines {
    const BLOCK: usize = 64 * 1024;

    fn push(&mut self, args: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
        if self.0.len() >= Self::BLOCK {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.0.is_empty() {
            crate::console::print(format_args!("{}", self.0));
            self.0.clear();
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `outln!` into `Lines`.
macro_rules! outln_to {
    ($lines:expr, $($arg:tt)*) => {
        $lines.push(format_args!($($arg)*))
    };
}

/// Every usage record, with the key it belongs to, for entries that exist.
fn usages(cache: &Cache) -> Vec<(Digest, Usage)> {
    cache.usages()
}

#[derive(Serialize)]
struct TopCommand {
    key: String,
    command: String,
    hits: u64,
    time_saved_seconds: f64,
}

#[derive(Serialize)]
struct StatsJson {
    cache_dir: String,
    hits: i64,
    misses: i64,
    hit_rate: f64,
    stores: i64,
    entries: i64,
    bytes: i64,
    max_size: u64,
    time_saved_seconds: f64,
    evictions: i64,
    corrupt: i64,
    errors: i64,
    /// Runs with --force: not misses (nothing was looked up).
    forced: i64,
    remote_hits: i64,
    remote_misses: i64,
    uploads: i64,
    remote_bytes_down: i64,
    remote_bytes_up: i64,
    remote_errors: i64,
    remote_rejected: i64,
    breaker_trips: i64,
    top: Vec<TopCommand>,
}

pub fn stats(settings: &Settings, json: bool, zero: bool) -> anyhow::Result<i32> {
    let cache = open(settings)?;
    if zero {
        if let Some(cache) = &cache {
            cache
                .zero_activity()
                .map_err(io_error("cannot reset the counters"))?;
        }
        if !json {
            crate::outln!("counters reset");
            return Ok(0);
        }
    }
    // The folded counters and the summary's list of the entries that saved the most
    // time: nothing here reads a file per entry.
    let (c, mut top): (Counters, Vec<Top>) = cache
        .as_ref()
        .map(|c| c.counters_and_top())
        .unwrap_or_default();
    let root = cache_root(cache.as_ref(), settings);
    let lookups = c.hits.saturating_add(c.misses);
    let hit_rate = if lookups > 0 {
        c.hits as f64 / lookups as f64
    } else {
        0.0
    };
    if let Some(cache) = &cache {
        // The first five that are still stored (each looked up in its pack's table).
        let mut kept = 0;
        top.retain(|t| {
            kept < 5 && cache.store.has_entry(&t.key) && {
                kept += 1;
                true
            }
        });
    }
    top.truncate(5);
    if json {
        let out = StatsJson {
            cache_dir: root.display().to_string(),
            hits: c.hits,
            misses: c.misses,
            hit_rate,
            stores: c.stores,
            entries: c.entries.max(0),
            bytes: c.bytes.max(0),
            max_size: settings.max_size.value,
            time_saved_seconds: c.time_saved_ms as f64 / 1000.0,
            evictions: c.evictions,
            corrupt: c.corrupt,
            errors: c.errors,
            forced: c.forced,
            remote_hits: c.remote_hits,
            remote_misses: c.remote_misses,
            uploads: c.uploads,
            remote_bytes_down: c.remote_bytes_down,
            remote_bytes_up: c.remote_bytes_up,
            remote_errors: c.remote_errors,
            remote_rejected: c.remote_rejected,
            breaker_trips: c.breaker_trips,
            top: top
                .iter()
                .map(|t| TopCommand {
                    key: t.key.to_hex(),
                    command: t.command.clone(),
                    hits: t.hits,
                    time_saved_seconds: t.saved_ms as f64 / 1000.0,
                })
                .collect(),
        };
        crate::outln!("{}", serde_json::to_string(&out).expect("stats serialize"));
        return Ok(0);
    }
    let saved = Duration::from_millis(c.time_saved_ms.max(0) as u64);
    crate::outln!(
        "cache dir    {}",
        escape_control(&root.display().to_string())
    );
    crate::outln!("entries      {}", c.entries.max(0));
    crate::outln!(
        "size         {} (limit {})",
        format_size(c.bytes.max(0) as u64),
        format_size(settings.max_size.value)
    );
    crate::outln!("hits         {}", c.hits);
    crate::outln!("misses       {}", c.misses);
    crate::outln!("hit rate     {:.1}%", hit_rate * 100.0);
    crate::outln!("time saved   {}", format_duration(saved));
    crate::outln!("evictions    {}", c.evictions);
    crate::outln!("corrupt      {}", c.corrupt);
    crate::outln!("errors       {}", c.errors);
    if c.forced != 0 {
        crate::outln!("forced       {}", c.forced);
    }
    let remote_used = [
        c.remote_hits,
        c.remote_misses,
        c.uploads,
        c.remote_errors,
        c.remote_rejected,
        c.breaker_trips,
    ]
    .iter()
    .any(|&n| n != 0);
    if remote_used || settings.remote.url.value.is_some() {
        let size = |n: i64| format_size(n.max(0) as u64);
        crate::outln!();
        crate::outln!("shared cache");
        crate::outln!("  remote hits    {}", c.remote_hits);
        crate::outln!("  remote misses  {}", c.remote_misses);
        crate::outln!("  uploads        {}", c.uploads);
        crate::outln!("  bytes down     {}", size(c.remote_bytes_down));
        crate::outln!("  bytes up       {}", size(c.remote_bytes_up));
        crate::outln!("  remote errors  {}", c.remote_errors);
        crate::outln!("  rejected       {}", c.remote_rejected);
        crate::outln!("  breaker trips  {}", c.breaker_trips);
    }
    if !top.is_empty() {
        crate::outln!();
        crate::outln!("commands that saved the most time:");
        for t in &top {
            crate::outln!(
                "  {:>8}  {:>4} hits  {}",
                format_duration(Duration::from_millis(t.saved_ms)),
                t.hits,
                escape_control(&t.command)
            );
        }
    }
    Ok(0)
}

pub fn gc(
    settings: &Settings,
    max_age: Option<Duration>,
    grace: Duration,
    verify: bool,
    dry_run: bool,
    auto: bool,
) -> anyhow::Result<i32> {
    let Some(cache) = open_to_remove(settings)? else {
        if !auto {
            let verb = if dry_run { "would remove" } else { "removed" };
            crate::outln!("{verb} 0 entries: there is no cache yet");
        }
        return Ok(0);
    };
    let options = gc::Options {
        // Without --max-size, the configured limit applies.
        max_size: Some(settings.max_size.value),
        max_age,
        dry_run,
        only_if_free: auto,
        grace: Some(grace),
        verify,
    };
    if auto {
        // A store made while this trim ran, whose own trim gave up because this one
        // held the lock, may leave the cache past its limit: trim again (a few times at
        // most; another trim that takes the lock meanwhile carries on instead).
        let limit = (settings.max_size.value as f64 / gc::AUTO_TARGET) as i64;
        for _ in 0..4 {
            if gc::collect(&cache, &options)
                .context("gc failed")?
                .is_none()
                || cache.stats.total().bytes <= limit
            {
                break;
            }
        }
        return Ok(0);
    }
    let Some(report) = gc::collect(&cache, &options).context("gc failed")? else {
        return Ok(0);
    };
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = Lines::default();
    for removed in &report.removed {
        outln_to!(
            out,
            "{verb} {} {:>10}  {} ({})",
            removed.key.short(),
            format_size(removed.size),
            escape_control(&removed.command),
            removed.reason
        );
    }
    for key in &report.corrupt {
        outln_to!(out, "{verb} {} (corrupt entry)", key.short());
    }
    for digest in &report.damaged_objects {
        outln_to!(
            out,
            "{verb} object {} (its contents do not match its digest)",
            digest.short()
        );
    }
    outln_to!(
        out,
        "{verb} {} entries, {} unreferenced objects ({}); freed {}; cache {} in {} entries",
        report.removed.len() + report.corrupt.len(),
        report.orphans,
        format_size(report.orphan_bytes),
        format_size(report.freed()),
        format_size(report.bytes_after),
        report.entries_after
    );
    Ok(0)
}

pub fn clear(settings: &Settings) -> anyhow::Result<i32> {
    let Some(cache) = open_to_remove(settings)? else {
        crate::outln!("cleared 0 entries: there is no cache yet");
        return Ok(0);
    };
    let (entries, bytes) = gc::clear(&cache).context("cannot clear the cache")?;
    crate::outln!("cleared {entries} entries ({})", format_size(bytes));
    Ok(0)
}

#[derive(Serialize)]
struct Listed<'a> {
    key: String,
    command: &'a str,
    /// The working directory it ran in; `null` for a result stored with `--ignore-cwd`
    /// or whose entry cannot be read.
    cwd: Option<&'a ByteString>,
    /// How many inputs and outputs the key names (for a traced run, with the files it
    /// read and wrote); `null` when the entry cannot be read.
    inputs: Option<usize>,
    outputs: Option<usize>,
    /// Whether it is a traced run (`--trace`).
    traced: bool,
    exit_code: Option<i32>,
    created_ms: u64,
    last_access_ms: u64,
    age_seconds: f64,
    size: u64,
    hits: u64,
    duration_seconds: f64,
    time_saved_seconds: f64,
}

/// The entry stored under `key`, if it can be read and is intact.
fn read_entry(cache: &Cache, key: &Digest) -> Option<Entry> {
    let bytes = cache.store.get_entry(key).ok()??;
    Entry::decode(&bytes).ok()
}

pub fn ls(settings: &Settings, json: bool) -> anyhow::Result<i32> {
    let cache = open(settings)?;
    // What the summary keeps of each entry; only an entry it does not know is read.
    let mut records: Vec<(Digest, Usage)> = cache.as_ref().map(usages).unwrap_or_default();
    if let Some(cache) = &cache {
        for (key, u) in records.iter_mut().filter(|(_, u)| u.facts.is_none()) {
            u.facts = read_entry(cache, key).map(|e| Facts::of_entry(&e));
        }
    }
    // Sorted by reference: a record is large to move.
    let mut order: Vec<(std::cmp::Reverse<u64>, usize)> = records
        .iter()
        .enumerate()
        .map(|(i, (_, u))| (std::cmp::Reverse(u.last_access_ms), i))
        .collect();
    order.sort_unstable();
    let all: Vec<(&Digest, &Usage, &Option<Facts>)> = order
        .iter()
        .map(|&(_, i)| (&records[i].0, &records[i].1, &records[i].1.facts))
        .collect();
    let now = now_ms();
    if json {
        let listed: Vec<Listed> = all
            .iter()
            .map(|(k, u, entry)| Listed {
                key: k.to_hex(),
                command: &u.command,
                cwd: entry.as_ref().and_then(|e| e.cwd.as_ref()),
                inputs: entry.as_ref().map(|e| e.inputs),
                traced: entry.as_ref().is_some_and(|e| e.traced),
                outputs: entry.as_ref().map(|e| e.outputs),
                exit_code: entry.as_ref().map(|e| e.exit_code),
                created_ms: u.created_ms,
                last_access_ms: u.last_access_ms,
                age_seconds: now.saturating_sub(u.created_ms) as f64 / 1000.0,
                size: u.size,
                hits: u.hits,
                duration_seconds: u.duration_ms as f64 / 1000.0,
                time_saved_seconds: u.saved_ms as f64 / 1000.0,
            })
            .collect();
        crate::outln!(
            "{}",
            serde_json::to_string(&listed).expect("listing serializes")
        );
        return Ok(0);
    }
    let directory = |entry: &Option<Facts>| match entry {
        Some(e) => e
            .cwd
            .as_ref()
            .map_or("(any)".to_string(), |c| escape_control(&c.display())),
        None => "?".to_string(),
    };
    let count = |n: Option<usize>| n.map_or("?".to_string(), |n| n.to_string());
    // Escaped once per directory: many entries share one, often in a row.
    // None: unknown (the entry cannot be read); Some(None): any directory.
    type Cwd<'a> = Option<Option<&'a [u8]>>;
    let mut escaped: std::collections::HashMap<Cwd, std::rc::Rc<str>> =
        std::collections::HashMap::new();
    let mut last: Option<(Cwd, std::rc::Rc<str>)> = None;
    let directories: Vec<std::rc::Rc<str>> = all
        .iter()
        .map(|(_, _, e)| {
            let cwd = e.as_ref().map(|f| f.cwd.as_ref().map(|c| c.as_bytes()));
            if let Some((previous, shown)) = &last {
                if *previous == cwd {
                    return shown.clone();
                }
            }
            let shown = escaped
                .entry(cwd)
                .or_insert_with(|| directory(e).into())
                .clone();
            last = Some((cwd, shown.clone()));
            shown
        })
        .collect();
    let width = directories
        .iter()
        .map(|d| d.chars().count())
        .max()
        .unwrap_or(0)
        .max("DIRECTORY".len());
    crate::outln!(
        "{:<12}  {:>7}  {:>10}  {:>5}  {:>8}  {:>4}  {:>4}  {:<width$}  COMMAND",
        "KEY",
        "AGE",
        "SIZE",
        "HITS",
        "SAVED",
        "IN",
        "OUT",
        "DIRECTORY",
    );
    let mut out = Lines::default();
    for ((key, u, entry), directory) in all.iter().zip(&directories) {
        outln_to!(
            out,
            "{:<12}  {:>7}  {:>10}  {:>5}  {:>8}  {:>4}  {:>4}  {:<width$}  {}",
            key.short(),
            format_duration(Duration::from_millis(now.saturating_sub(u.created_ms))),
            format_size(u.size),
            u.hits,
            format_duration(Duration::from_millis(u.saved_ms)),
            count(entry.as_ref().map(|e| e.inputs)),
            count(entry.as_ref().map(|e| e.outputs)),
            directory,
            shown(&u.command)
        );
    }
    Ok(0)
}

/// A key prefix as `memo ls` shows them, in lower case; at least 4 hex digits.
fn key_prefix(text: &str) -> Result<String, Fatal> {
    if text.len() < 4 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Fatal::failure(format!(
            "memo: '{}' is not a key prefix; give at least 4 hex digits as shown by memo ls",
            escape_control(text)
        )));
    }
    Ok(text.to_ascii_lowercase())
}

pub fn rm(settings: &Settings, prefixes: &[String], pattern: Option<&str>) -> anyhow::Result<i32> {
    let prefixes = prefixes
        .iter()
        .map(|p| key_prefix(p))
        .collect::<Result<Vec<_>, _>>()?;
    let pattern = pattern.map(glob::Pattern::new).transpose().map_err(|e| {
        Fatal::failure(format!(
            "memo: --command pattern is invalid: {}; fix it",
            e.msg
        ))
    })?;
    let Some(cache) = open_to_remove(settings)? else {
        crate::console::note(format_args!("memo: no cached result matches"));
        return Ok(1);
    };
    let mut removed = 0;
    let mut bytes = 0i64;
    for (key, u) in usages(&cache) {
        let hex = key.to_hex();
        let by_key = prefixes.iter().any(|p| hex.starts_with(p.as_str()));
        let by_command = pattern.as_ref().is_some_and(|p| p.matches(&u.command));
        if !(by_key || by_command) {
            continue;
        }
        let entry_bytes = cache
            .store
            .entry_size(&key)
            .map_or(0, |(size, _)| size as i64);
        gc::note_removed(&cache, &key);
        if cache.remove_result(&key).is_ok() {
            removed += 1;
            bytes += entry_bytes;
            let mut event = Event::new(Kind::Evict);
            event.key = Some(hex);
            event.command = Some(u.command.clone());
            event.message = Some("memo rm".into());
            event.counts = Some(Counters::default());
            cache.append(&event);
        }
    }
    let _ = cache.stats.add(&Counters {
        entries: -removed,
        bytes: -bytes,
        ..Default::default()
    });
    if removed == 0 {
        crate::console::note(format_args!("memo: no cached result matches"));
        return Ok(1);
    }
    crate::outln!("removed {removed} entries (their objects go at the next gc)");
    Ok(0)
}

pub fn log(settings: &Settings, count: usize, json: bool) -> anyhow::Result<i32> {
    let Some(cache) = open(settings)? else {
        return Ok(0);
    };
    let (events, unreadable) = cache.log.latest(count);
    for event in &events {
        if json {
            crate::outln!(
                "{}",
                serde_json::to_string(&event.for_people()).expect("events serialize")
            );
        } else {
            crate::outln!("{}", describe(event));
        }
    }
    if unreadable > 0 {
        crate::console::note(format_args!(
            "memo: warning: skipped {unreadable} unreadable log lines"
        ));
    }
    Ok(0)
}

fn describe(event: &Event) -> String {
    let kind = match event.event {
        Kind::Hit => "hit",
        Kind::Miss => "miss",
        Kind::Forced => "forced",
        Kind::Store => "store",
        Kind::Evict => "evict",
        Kind::Corrupt => "corrupt",
        Kind::Error => "error",
        Kind::Clear => "clear",
        Kind::RemoteHit => "remote-hit",
        Kind::RemoteMiss => "remote-miss",
        Kind::Upload => "upload",
        Kind::RemoteError => "remote-error",
        Kind::Rejected => "rejected",
        Kind::BreakerTrip => "breaker-trip",
    };
    let mut line = format!("{}  {kind:<12}", format_utc(event.time_ms));
    if let Some(key) = &event.key {
        // By characters: a damaged log may hold any text as a key.
        let short: String = key.chars().take(12).collect();
        line.push_str(&format!("  {short}"));
    }
    let ms = |v: u64| format_duration(Duration::from_millis(v));
    if let Some(saved) = event.saved_ms {
        line.push_str(&format!("  saved {}", ms(saved)));
    } else if let Some(d) = event.duration_ms {
        line.push_str(&format!("  ran {}", ms(d)));
    }
    if let Some(size) = event.size {
        line.push_str(&format!("  {}", format_size(size)));
    }
    if let Some(command) = &event.command {
        line.push_str(&format!("  {command}"));
    }
    if let Some(message) = &event.message {
        line.push_str(&format!("  ({message})"));
    }
    // Commands, messages and (in a damaged log) keys may hold any text: one event, one line.
    escape_control(&line)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, from Unix milliseconds (Howard Hinnant's civil-from-days).
fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn config(settings: &Settings) -> anyhow::Result<i32> {
    let file_state = if settings.config_file_found {
        ""
    } else {
        " (not found)"
    };
    crate::outln!(
        "config file     {}{file_state}",
        settings.config_file.display()
    );
    let row = |name: &str, value: String, source: &crate::config::Source| {
        crate::outln!("{name:<15} {value:<30} ({source})");
    };
    let cache_dir = &settings.cache_dir.value;
    row(
        "cache_dir",
        if cache_dir.as_os_str().is_empty() {
            "none (set MEMO_DIR or HOME)".to_string()
        } else {
            cache_dir.display().to_string()
        },
        &settings.cache_dir.source,
    );
    row(
        "max_size",
        format_size(settings.max_size.value),
        &settings.max_size.source,
    );
    let opt = |d: Option<Duration>| d.map_or("none".to_string(), format_duration);
    row("ttl", opt(settings.ttl.value), &settings.ttl.source);
    row("stale", opt(settings.stale.value), &settings.stale.source);
    row(
        "verbose",
        settings.verbose.value.to_string(),
        &settings.verbose.source,
    );
    row(
        "cache_failures",
        settings.cache_failures.value.to_string(),
        &settings.cache_failures.source,
    );
    row("tty", settings.tty.value.to_string(), &settings.tty.source);
    row(
        "trace",
        settings.trace.value.to_string(),
        &settings.trace.source,
    );
    row(
        "umask",
        settings
            .umask
            .value
            .map_or("none (private)".to_string(), |u| format!("{u:03o}")),
        &settings.umask.source,
    );
    let remote = &settings.remote;
    row(
        "remote",
        remote
            .url
            .value
            .as_deref()
            .map_or("none".to_string(), crate::remote::backend::mask),
        &remote.url.source,
    );
    if remote.url.value.is_some() {
        row(
            "remote_mode",
            remote.mode.value.to_string(),
            &remote.mode.source,
        );
        row(
            "remote_namespace",
            remote.namespace.value.clone(),
            &remote.namespace.source,
        );
        row(
            "remote_read",
            remote.read.value.join(","),
            &remote.read.source,
        );
        row(
            "remote_compression",
            if remote.compression.value {
                "zstd"
            } else {
                "off"
            }
            .to_string(),
            &remote.compression.source,
        );
        let set = |present: bool, env: &str| {
            crate::outln!(
                "{:<15} {:<30} (env {env})",
                env.trim_start_matches("MEMO_").to_ascii_lowercase(),
                if present { "set (hidden)" } else { "not set" }
            );
        };
        set(remote.signing_key.is_some(), "MEMO_REMOTE_SIGNING_KEY");
        set(remote.token.is_some(), "MEMO_REMOTE_TOKEN");
        set(remote.password.is_some(), "MEMO_REMOTE_PASSWORD");
        if let Some(user) = &remote.user {
            crate::outln!("{:<15} {user:<30} (env MEMO_REMOTE_USER)", "remote_user");
        }
        if let Err(e) = crate::remote::check_settings(remote) {
            crate::outln!("{:<15} {e}", "remote_problem");
        }
        if let Some(ca) = &remote.ca_file {
            crate::outln!(
                "{:<15} {:<30} (env MEMO_REMOTE_CA)",
                "remote_ca",
                ca.display()
            );
        }
    }
    Ok(0)
}

/// `memo show KEY`: one result, whole: what it ran, what its key holds, what it left.
pub fn show(settings: &Settings, args: &super::ShowArgs) -> anyhow::Result<i32> {
    let prefix = key_prefix(&args.key)?;
    let no_match = || {
        Fatal::failure(format!(
            "memo: no cached result has a key starting with '{prefix}'; see memo ls for the keys"
        ))
    };
    let cache = open(settings)?.ok_or_else(no_match)?;
    let key = find_key(&cache, &prefix)?.ok_or_else(no_match)?;
    let entry = match cache.store.get_entry(&key) {
        Ok(Some(bytes)) => Entry::decode(&bytes).map_err(|e| {
            Fatal::failure(format!(
                "memo: cache entry {} is unusable ({e}); memo gc removes it",
                key.short()
            ))
        })?,
        Ok(None) => return Err(no_match().into()),
        Err(e) => {
            return Err(Fatal::failure(format!(
                "memo: cannot read cache entry {}: {e}",
                key.short()
            ))
            .into())
        }
    };
    if args.stdout || args.stderr {
        return print_stream(&cache, &key, &entry, args.stderr);
    }
    let usage = crate::index::summary::current(cache.root(), &cache.log)
        .usage
        .remove(&key)
        .unwrap_or_default();
    let size = if usage.size > 0 {
        usage.size
    } else {
        recorded_size(&cache, &key, &entry)
    };
    let now = now_ms();
    let freshness = freshness_of(&entry, settings, now);
    let m = &entry.material;
    let command = crate::key::command_line(m);
    let env: Vec<String> = m.env.iter().map(|v| v.name.display()).collect();
    if args.json {
        let inputs: Vec<_> = m
            .inputs
            .iter()
            .map(|i| {
                serde_json::json!({
                    "path": i.path,
                    "kind": i.kind,
                    "executable": i.executable,
                    "digest": i.digest.to_hex(),
                })
            })
            .collect();
        let outputs: Vec<_> = entry
            .outputs
            .iter()
            .map(|o| {
                let (kind, files, bytes) = output_summary(o);
                serde_json::json!({ "path": o.path, "kind": kind, "files": files, "size": bytes })
            })
            .collect();
        let streams = match &entry.streams {
            Streams::Separate { stdout, stderr } => {
                serde_json::json!({ "mode": "separate", "stdout_size": stdout.size, "stderr_size": stderr.size })
            }
            Streams::Merged { combined } => match entry.material.streams {
                StreamMode::Terminal { columns } => serde_json::json!({
                    "mode": "terminal", "columns": columns, "combined_size": combined.size
                }),
                _ => serde_json::json!({ "mode": "merged", "combined_size": combined.size }),
            },
        };
        let seconds = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let shown = serde_json::json!({
            "key": key.to_hex(),
            "command": command,
            "argv": m.argv,
            "cwd": m.cwd,
            "created_ms": entry.created_unix_ms,
            "age_seconds": now.saturating_sub(entry.created_unix_ms) as f64 / 1000.0,
            "duration_seconds": entry.duration_ms as f64 / 1000.0,
            "size": size,
            "exit_code": entry.exit_code,
            "hits": usage.hits,
            "time_saved_seconds": usage.saved_ms as f64 / 1000.0,
            "last_access_ms": usage.last_access_ms.max(entry.created_unix_ms),
            "freshness": freshness.state,
            "ttl_seconds": seconds(settings.ttl.value),
            "stale_seconds": seconds(settings.stale.value),
            "expires_in_seconds": seconds(freshness.expires_in),
            "platform": m.platform,
            "executable": m.executable.to_hex(),
            "inputs": inputs,
            "env": env,
            "salt": m.salt.is_some(),
            "key_command": m.key_command.is_some(),
            "stdin_keyed": m.stdin.is_some(),
            "streams": streams,
            "outputs": outputs,
            "traced": entry.observed.is_some(),
            "observed": entry.observed.as_ref().map(|o| {
                o.observations
                    .iter()
                    .map(|obs| serde_json::json!({ "kind": obs.label(), "path": obs.path() }))
                    .collect::<Vec<_>>()
            }),
            "written": entry.observed.as_ref().map(|o| &o.written),
        });
        crate::outln!("{shown}");
        return Ok(0);
    }
    let row = |name: &str, value: &str| crate::outln!("{name:<12} {}", escape_control(value));
    row("key", &key.to_hex());
    row("command", &command);
    row(
        "directory",
        &m.cwd
            .as_ref()
            .map_or("any (stored with --ignore-cwd)".into(), |c| c.display()),
    );
    row(
        "stored",
        &format!(
            "{} UTC, {} ago",
            format_utc(entry.created_unix_ms),
            format_duration(Duration::from_millis(
                now.saturating_sub(entry.created_unix_ms)
            ))
        ),
    );
    row(
        "duration",
        &format_duration(Duration::from_millis(entry.duration_ms)),
    );
    row("size", &format_size(size));
    row("exit code", &entry.exit_code.to_string());
    row("freshness", &freshness.text);
    row(
        "hits",
        &format!(
            "{} (saved {})",
            usage.hits,
            format_duration(Duration::from_millis(usage.saved_ms))
        ),
    );
    row("platform", &m.platform);
    row("executable", &format!("sha256 {}", m.executable.short()));
    row(
        "streams",
        &match &entry.streams {
            Streams::Separate { stdout, stderr } => format!(
                "separate: stdout {}, stderr {}",
                format_size(stdout.size),
                format_size(stderr.size)
            ),
            Streams::Merged { combined } => match m.streams {
                StreamMode::Terminal { columns } => format!(
                    "terminal (--tty, {columns} columns): stdout and stderr in one stream of {}",
                    format_size(combined.size)
                ),
                _ => format!(
                    "merged: stdout and stderr in one stream of {}",
                    format_size(combined.size)
                ),
            },
        },
    );
    row(
        "stdin",
        if m.stdin.is_some() {
            "keyed (read with --stdin)"
        } else {
            "not keyed (the command read nothing)"
        },
    );
    let presence = |used: bool| if used { "yes" } else { "no" };
    row("salt", presence(m.salt.is_some()));
    row("key command", presence(m.key_command.is_some()));
    row(
        "environment",
        &if env.is_empty() {
            "none".to_string()
        } else {
            env.join(", ")
        },
    );
    row("inputs", &m.inputs.len().to_string());
    for input in &m.inputs {
        let kind = match input.kind {
            FileKind::File if input.executable => "executable",
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::LinkToFile => "link to file",
            FileKind::LinkToDir => "link to dir",
        };
        crate::outln!(
            "  {kind:<12}  {}  {}",
            input.digest.short(),
            escape_control(&input.path.display())
        );
    }
    row("outputs", &entry.outputs.len().to_string());
    for output in &entry.outputs {
        let (kind, files, bytes) = output_summary(output);
        let what = match kind {
            "dir" => format!("dir, {files} files"),
            other => other.to_string(),
        };
        crate::outln!(
            "  {what:<12}  {:>10}  {}",
            format_size(bytes),
            escape_control(&output.path.display())
        );
    }
    if let Some(observed) = &entry.observed {
        let counts: Vec<String> = observed
            .counts()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        row(
            "observed:",
            &format!("traced (--trace): {}", counts.join(", ")),
        );
        for obs in &observed.observations {
            crate::outln!(
                "  {:<12}  {}",
                obs.label(),
                escape_control(&obs.path().display())
            );
        }
        for path in &observed.written {
            crate::outln!("  {:<12}  {}", "written", escape_control(&path.display()));
        }
    }
    Ok(0)
}

/// The one stored key that starts with `prefix`; `None` when none does, an error naming
/// the prefix when several do.
fn find_key(cache: &Cache, prefix: &str) -> Result<Option<Digest>, Fatal> {
    let mut found: Vec<Digest> = cache
        .store
        .entry_sizes()
        .into_keys()
        .filter(|key| key.to_hex().starts_with(prefix))
        .collect();
    found.sort();
    found.dedup();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Fatal::failure(format!(
            "memo: key prefix '{prefix}' matches {n} cached results; give more digits (see memo ls)"
        ))),
    }
}

/// Writes the recorded stdout (or stderr) of `entry` to stdout, exactly, once its bytes
/// have been checked against their digest as a replay checks them.
fn print_stream(cache: &Cache, key: &Digest, entry: &Entry, stderr: bool) -> anyhow::Result<i32> {
    let name = if stderr { "stderr" } else { "stdout" };
    let blob = match (&entry.streams, stderr) {
        (Streams::Separate { stdout, .. }, false) => stdout,
        (Streams::Separate { stderr, .. }, true) => stderr,
        (Streams::Merged { combined }, false) => combined,
        // A merged recording has one stream, shown as stdout.
        (Streams::Merged { .. }, true) => return Ok(0),
    };
    let mut reader = crate::outputs::open_blob(blob, &cache.store).map_err(|e| {
        Fatal::failure(format!(
            "memo: cannot read the recorded {name} of {}: {e}",
            key.short()
        ))
    })?;
    let mut out = io::stdout().lock();
    match io::copy(&mut reader, &mut out).and_then(|_| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Fatal::failure(format!("memo: cannot write to stdout: {e}")).into()),
    }
}

/// An entry's bytes: its file and every object it names (shared ones in full), as a
/// store counts them.
fn recorded_size(cache: &Cache, key: &Digest, entry: &Entry) -> u64 {
    let file = cache.store.entry_size(key).map_or(0, |(size, _)| size);
    file + entry
        .blobs()
        .filter(|b| b.inline.is_none())
        .map(|b| b.size)
        .sum::<u64>()
}

/// What a declared output holds: its kind, how many files, how many bytes.
fn output_summary(output: &Output) -> (&'static str, usize, u64) {
    let kind = match output.nodes.first().map(|n| &n.kind) {
        Some(NodeKind::Dir) => "dir",
        Some(NodeKind::Symlink { .. }) => "symlink",
        _ => "file",
    };
    let files = output.nodes.iter().filter_map(|n| match &n.kind {
        NodeKind::File { blob, .. } => Some(blob.size),
        _ => None,
    });
    let (count, bytes) = files.fold((0, 0), |(c, b), size| (c + 1, b + size));
    (kind, count, bytes)
}

/// Whether a result would be replayed under the current settings, in words.
struct Shown {
    state: &'static str,
    text: String,
    /// How long it stays fresh, under a TTL.
    expires_in: Option<Duration>,
}

fn freshness_of(entry: &Entry, settings: &Settings, now: u64) -> Shown {
    let Some(ttl) = settings.ttl.value else {
        return Shown {
            state: "fresh",
            text: "fresh: no TTL is set, so it never expires".into(),
            expires_in: None,
        };
    };
    let stale = settings.stale.value;
    let age = Duration::from_millis(now.saturating_sub(entry.created_unix_ms));
    let ttl_text = format!("ttl {}, {}", format_duration(ttl), settings.ttl.source);
    match Freshness::at(entry.created_unix_ms, now, Some(ttl), stale) {
        Freshness::Fresh => {
            let left = ttl.saturating_sub(age);
            Shown {
                state: "fresh",
                text: format!("fresh for {} more ({ttl_text})", format_duration(left)),
                expires_in: Some(left),
            }
        }
        Freshness::Stale(late) => Shown {
            state: "stale",
            text: format!(
                "stale: expired {} ago; replayed and refreshed for {} more ({ttl_text}, stale window {})",
                format_duration(late),
                format_duration(stale.unwrap_or_default().saturating_sub(late)),
                format_duration(stale.unwrap_or_default())
            ),
            expires_in: Some(Duration::ZERO),
        },
        Freshness::Expired(late) => Shown {
            state: "expired",
            text: format!(
                "expired {} ago: the next run recomputes it ({ttl_text})",
                format_duration(late)
            ),
            expires_in: Some(Duration::ZERO),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_control("echo 'a b'"), "echo 'a b'");
        assert_eq!(escape_control("a\nb\tc\rd"), "a\\nb\\tc\\rd");
        assert_eq!(escape_control("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
        assert_eq!(escape_control("\u{202e}é\u{85}"), "\\u{202e}é\\u{85}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_000_000_000), "2026-11-18 11:06:40");
    }
}
