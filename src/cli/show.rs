//! What the management subcommands print: for people by default, JSON with `--json`.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::cache::{self, Cache};
use crate::config::{format_duration, format_size, Settings};
use crate::digest::Digest;
use crate::events::{now_ms, Event, Kind};
use crate::exit::Fatal;
use crate::gc;
use crate::index::usage::{self, Usage};
use crate::stats::Counters;

fn open(settings: &Settings) -> Result<Cache, Fatal> {
    cache::try_open(&settings.cache_dir.value).map_err(|why| {
        Fatal::failure(format!(
            "memo: cannot use the cache: {why}; check the path and its permissions"
        ))
    })
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Fatal + '_ {
    move |e| Fatal::failure(format!("memo: {what}: {e}"))
}

/// Every usage record, with the key it belongs to, for entries that exist.
fn usages(cache: &Cache) -> Vec<(Digest, Usage)> {
    let mut found = usage::all(cache.root());
    found.retain(|(key, _)| cache.store.entry_path(key).exists());
    found
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
        cache
            .stats
            .zero_activity()
            .map_err(io_error("cannot reset the counters"))?;
        if !json {
            crate::outln!("counters reset");
            return Ok(0);
        }
    }
    let c: Counters = cache.stats.total();
    let lookups = c.hits + c.misses;
    let hit_rate = if lookups > 0 {
        c.hits as f64 / lookups as f64
    } else {
        0.0
    };
    let mut top = usages(&cache);
    top.retain(|(_, u)| u.saved_ms > 0);
    top.sort_by_key(|(_, u)| std::cmp::Reverse(u.saved_ms));
    top.truncate(5);
    if json {
        let out = StatsJson {
            cache_dir: cache.root().display().to_string(),
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
                .map(|(k, u)| TopCommand {
                    key: k.to_hex(),
                    command: u.command.clone(),
                    hits: u.hits,
                    time_saved_seconds: u.saved_ms as f64 / 1000.0,
                })
                .collect(),
        };
        crate::outln!("{}", serde_json::to_string(&out).expect("stats serialize"));
        return Ok(0);
    }
    let saved = Duration::from_millis(c.time_saved_ms.max(0) as u64);
    crate::outln!("cache dir    {}", cache.root().display());
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
        for (_, u) in &top {
            crate::outln!(
                "  {:>8}  {:>4} hits  {}",
                format_duration(Duration::from_millis(u.saved_ms)),
                u.hits,
                u.command
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
    let cache = open(settings)?;
    let options = gc::Options {
        // Without --max-size, the configured limit applies.
        max_size: Some(settings.max_size.value),
        max_age,
        dry_run,
        only_if_free: auto,
        grace: Some(grace),
        verify,
    };
    let Some(report) = gc::collect(&cache, &options).context("gc failed")? else {
        return Ok(0);
    };
    if auto {
        return Ok(0);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for removed in &report.removed {
        crate::outln!(
            "{verb} {} {:>10}  {} ({})",
            removed.key.short(),
            format_size(removed.size),
            removed.command,
            removed.reason
        );
    }
    for key in &report.corrupt {
        crate::outln!("{verb} {} (corrupt entry)", key.short());
    }
    for digest in &report.damaged_objects {
        crate::outln!(
            "{verb} object {} (its contents do not match its digest)",
            digest.short()
        );
    }
    crate::outln!(
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
    let cache = open(settings)?;
    let (entries, bytes) = gc::clear(&cache).context("cannot clear the cache")?;
    crate::outln!("cleared {entries} entries ({})", format_size(bytes));
    Ok(0)
}

#[derive(Serialize)]
struct Listed<'a> {
    key: String,
    command: &'a str,
    created_ms: u64,
    last_access_ms: u64,
    age_seconds: f64,
    size: u64,
    hits: u64,
    duration_seconds: f64,
    time_saved_seconds: f64,
}

pub fn ls(settings: &Settings, json: bool) -> anyhow::Result<i32> {
    let cache = open(settings)?;
    let mut all = usages(&cache);
    all.sort_by_key(|(_, u)| std::cmp::Reverse(u.last_access_ms));
    let now = now_ms();
    if json {
        let listed: Vec<Listed> = all
            .iter()
            .map(|(k, u)| Listed {
                key: k.to_hex(),
                command: &u.command,
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
    crate::outln!(
        "{:<12}  {:>7}  {:>10}  {:>5}  {:>8}  COMMAND",
        "KEY",
        "AGE",
        "SIZE",
        "HITS",
        "SAVED"
    );
    for (key, u) in &all {
        crate::outln!(
            "{:<12}  {:>7}  {:>10}  {:>5}  {:>8}  {}",
            key.short(),
            format_duration(Duration::from_millis(now.saturating_sub(u.created_ms))),
            format_size(u.size),
            u.hits,
            format_duration(Duration::from_millis(u.saved_ms)),
            u.command
        );
    }
    Ok(0)
}

pub fn rm(settings: &Settings, prefixes: &[String], pattern: Option<&str>) -> anyhow::Result<i32> {
    for prefix in prefixes {
        if prefix.len() < 4 || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Fatal::failure(format!(
                "memo: '{prefix}' is not a key prefix; give at least 4 hex digits as shown by memo ls"
            ))
            .into());
        }
    }
    let pattern = pattern.map(glob::Pattern::new).transpose().map_err(|e| {
        Fatal::failure(format!(
            "memo: --command pattern is invalid: {}; fix it",
            e.msg
        ))
    })?;
    let cache = open(settings)?;
    let mut removed = 0;
    let mut bytes = 0i64;
    for (key, u) in usages(&cache) {
        let hex = key.to_hex();
        let by_key = prefixes
            .iter()
            .any(|p| hex.starts_with(&p.to_ascii_lowercase()));
        let by_command = pattern.as_ref().is_some_and(|p| p.matches(&u.command));
        if !(by_key || by_command) {
            continue;
        }
        let entry_bytes =
            std::fs::metadata(cache.store.entry_path(&key)).map_or(0, |m| m.len() as i64);
        gc::note_removed(&cache, &key);
        if cache.remove_result(&key).is_ok() {
            removed += 1;
            bytes += entry_bytes;
            let mut event = Event::new(Kind::Evict);
            event.key = Some(hex);
            event.command = Some(u.command.clone());
            event.message = Some("memo rm".into());
            let _ = cache.log.append(&event);
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
    let cache = open(settings)?;
    let (events, unreadable) = cache.log.latest(count);
    for event in &events {
        if json {
            crate::outln!(
                "{}",
                serde_json::to_string(event).expect("events serialize")
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
    line
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_000_000_000), "2026-11-18 11:06:40");
    }
}

/// `memo show KEY`.
pub fn show(settings: &Settings, args: &super::ShowArgs) -> anyhow::Result<i32> {
    let _ = (settings, args);
    Err(Fatal::failure("memo: show is being built").into())
}
