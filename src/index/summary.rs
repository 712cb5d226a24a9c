//! The summary: every entry's usage record and the counters of past activity, folded
//! from the journal (the event log), as ccache folds its per-process stats files.
//!
//! Owns `summary` in the cache directory and the fold. A hit, a miss or a store appends
//! one record to the journal (`events`) and rewrites nothing; the fold adds the records
//! after its last position to the summary and writes it whole, through a temp file and
//! a rename, under the `summary` lock. It runs when the journal has grown by
//! `FOLD_EVERY`, or by an eighth of the summary's size if that is more (so that its cost
//! per record of the journal does not grow with the cache), before the journal is
//! rotated, and at the end of gc. Readers add the records the fold has not reached yet
//! (a bounded tail) in memory.
//!
//! The file is a JSON header line (format version, journal position, counters, the
//! entries that saved the most time, for `memo stats` to read alone, and the length and
//! SHA-256 of what follows), then the table of usage records in binary
//! (`index::records`). Format 1 (JSON lines, one `[key, usage]` line per entry) is read
//! and rewritten as format 2 by the next fold. It is a cache of facts whose truth is
//! elsewhere: a damaged summary reads as empty, and listing falls back to the entries
//! themselves.

use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::events::{Event, EventLog, Kind, Position, MAX_LOG_BYTES};
use crate::index::usage::{self, Usage};
use crate::lock::Lock;
use crate::stats::Counters;

/// 2: the records in binary after the header line (1: a JSON line each).
pub const SUMMARY_VERSION: u32 = 2;
/// The format before: read, and rewritten as `SUMMARY_VERSION` by the next fold.
const JSON_LINES_VERSION: u32 = 1;
/// How many of the entries that saved the most time the header names.
const TOP: usize = 32;
/// The journal is folded each time it grows past a multiple of this many bytes: a
/// reader's unfolded tail stays about this small.
pub const FOLD_EVERY: u64 = 256 * 1024;
/// A fold rewrites the whole summary: it waits until the journal has grown by at least
/// this fraction of the summary's size, so that a fold costs at most this many bytes
/// written per byte of journal, however large the cache.
const FOLD_RATIO: u64 = 8;
/// A summary larger than this is damage (a million entries take about 300 MB).
const MAX_SUMMARY_BYTES: u64 = 4 << 30;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    pub version: u32,
    /// How far the journal has been folded.
    pub position: Position,
    /// The counters of past activity (what is stored, `entries` and `bytes`, is
    /// counted in the stats shards instead).
    pub counters: Counters,
    /// The entries that saved the most time, most first.
    pub top: Vec<Top>,
    /// Whether `top` names every entry that saved any time.
    pub top_complete: bool,
    /// The table of records after the header line (format 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
}

/// The length and checksum of the records' table, checked before it is decoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub bytes: u64,
    pub sha256: Digest,
}

/// How the summary on disk was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Written by this format, and whole.
    Current,
    /// Written by an older memo (format 1): read, and rewritten by the next fold.
    Older,
    /// No summary yet (a cache too young to have folded, or an older memo's).
    Missing,
    /// Damaged or of an unknown format: read as empty.
    Damaged,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Top {
    pub key: Digest,
    pub command: String,
    pub hits: u64,
    pub saved_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub header: Header,
    pub usage: super::records::ByKey<Usage>,
}

pub fn summary_path(cache_root: &Path) -> PathBuf {
    cache_root.join("summary")
}

/// The header alone: what `memo stats` needs, read without the entries' lines.
pub fn read_header(cache_root: &Path) -> Header {
    let Ok(file) =
        crate::fsutil::open_regular(&summary_path(cache_root), crate::fsutil::Access::Read)
    else {
        return Header::default();
    };
    let mut line = Vec::new();
    let _ = io::BufReader::new(file.take(16 << 20)).read_until(b'\n', &mut line);
    decode_header(&line).unwrap_or_default()
}

/// The header of either format (their headers hold the same counters).
fn decode_header(line: &[u8]) -> Option<Header> {
    serde_json::from_slice::<Header>(line)
        .ok()
        .filter(|h| h.version == SUMMARY_VERSION || h.version == JSON_LINES_VERSION)
}

/// The summary as last written (with the records of an older memo's `usage/` files
/// when there is none yet); an unreadable one reads as empty.
pub fn read(cache_root: &Path) -> Summary {
    read_found(cache_root).0
}

/// `read`, and how the summary was found.
pub fn read_found(cache_root: &Path) -> (Summary, Found) {
    let path = summary_path(cache_root);
    let bytes = match crate::fsutil::read_regular_whole(&path, MAX_SUMMARY_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let summary = Summary {
                header: Header {
                    version: SUMMARY_VERSION,
                    ..Header::default()
                },
                usage: usage::read_legacy(cache_root).into_iter().collect(),
            };
            return (summary, Found::Missing);
        }
        Err(_) => return (Summary::default(), Found::Damaged),
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let (line, rest) = (
        &bytes[..newline],
        bytes.get(newline + 1..).unwrap_or_default(),
    );
    let decoded = decode_header(line).and_then(|mut header| {
        let found = if header.version == SUMMARY_VERSION {
            Found::Current
        } else {
            Found::Older
        };
        let usage = match header.table.take() {
            Some(table) if found == Found::Current => {
                let whole =
                    rest.len() as u64 == table.bytes && Digest::of_bytes(rest) == table.sha256;
                super::records::decode(rest).filter(|_| whole)?
            }
            None if found == Found::Older => rest
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .filter_map(|l| serde_json::from_slice::<(Digest, Usage)>(l).ok())
                .collect(),
            _ => return None,
        };
        header.version = SUMMARY_VERSION;
        Some((Summary { header, usage }, found))
    });
    decoded.unwrap_or_else(|| {
        crate::console::warn_once(format!(
            "summary {} was damaged; its counts restart from zero",
            path.display()
        ));
        (Summary::default(), Found::Damaged)
    })
}

impl Summary {
    /// Adds the journal's records to the summary. `clock` is gc's clock now, the
    /// aging term of every entry used since the last fold.
    pub fn apply(&mut self, events: &[Event], clock: f64) {
        for event in events {
            let key = event.key.as_deref().and_then(|k| k.parse::<Digest>().ok());
            if let (Kind::RemoteHit, Some(key)) = (event.event, key) {
                // An entry fetched from the shared cache is kept without a store record:
                // a record without facts says it may be there (`listing` reads it).
                self.usage.entry(key).or_insert_with(|| Usage {
                    created_ms: event.time_ms,
                    last_access_ms: event.time_ms,
                    clock,
                    ..Usage::default()
                });
            }
            let Some(counts) = &event.counts else {
                continue;
            };
            self.header.counters.add(&counts.split_content().1);
            match (event.event, key) {
                (Kind::Hit, Some(key)) => {
                    let usage = self.usage.entry(key).or_insert_with(|| Usage {
                        command: event.command.clone().unwrap_or_default(),
                        created_ms: event.time_ms,
                        duration_ms: event.duration_ms.unwrap_or(0),
                        ..Usage::default()
                    });
                    usage.hits = usage.hits.saturating_add(1);
                    usage.saved_ms = usage.saved_ms.saturating_add(event.saved_ms.unwrap_or(0));
                    usage.last_access_ms = usage.last_access_ms.max(event.time_ms);
                    usage.clock = clock;
                }
                (Kind::Store, Some(key)) => {
                    if let Some(fresh) = &event.usage {
                        let usage = self.usage.entry(key).or_default();
                        // A replaced entry keeps the hits of the one it replaces.
                        *usage = Usage {
                            hits: usage.hits,
                            saved_ms: usage.saved_ms,
                            clock,
                            ..fresh.clone()
                        };
                    }
                }
                (Kind::Evict | Kind::Corrupt, Some(key)) => {
                    self.usage.remove(&key);
                }
                (Kind::Clear, _) => self.usage.clear(),
                _ => {}
            }
        }
    }

    fn update_top(&mut self) {
        let mut saved: Vec<(&Digest, &Usage)> =
            self.usage.iter().filter(|(_, u)| u.saved_ms > 0).collect();
        self.header.top_complete = saved.len() <= TOP;
        saved.sort_by_key(|(_, u)| std::cmp::Reverse(u.saved_ms));
        self.header.top = saved
            .into_iter()
            .take(TOP)
            .map(|(key, u)| Top {
                key: *key,
                command: u.command.clone(),
                hits: u.hits,
                saved_ms: u.saved_ms,
            })
            .collect();
    }

    fn encode(&mut self) -> Vec<u8> {
        self.header.version = SUMMARY_VERSION;
        self.update_top();
        let table = super::records::encode(self.usage.iter());
        self.header.table = Some(Table {
            bytes: table.len() as u64,
            sha256: Digest::of_bytes(&table),
        });
        let mut out = serde_json::to_vec(&self.header).expect("the header serializes");
        self.header.table = None;
        out.push(b'\n');
        out.extend_from_slice(&table);
        out
    }
}

/// The summary with the records the fold has not reached yet, as of now.
pub fn current(cache_root: &Path, log: &EventLog) -> Summary {
    let mut summary = read(cache_root);
    let (events, _) = log.read_since(summary.header.position);
    summary.apply(&events, super::usage::read_clock(cache_root));
    summary
}

/// Every entry's usage record, with its key, as of now: one for each entry file under
/// `entries/` (listed by name), from the summary and the journal since its position. An
/// entry they do not know, or whose record does not say what `memo ls` shows (one
/// fetched from the shared cache), is read with `read_entry`, and left out if it cannot
/// be. An older summary is rewritten once.
pub fn listing(
    cache_root: &Path,
    log: &EventLog,
    read_entry: impl Fn(&Digest) -> Option<(super::Entry, u64)>,
) -> Vec<(Digest, Usage)> {
    let (mut summary, found) = read_found(cache_root);
    if found == Found::Older {
        let _ = fold(cache_root, log, false, |_| {});
    }
    let (events, _) = log.read_since(summary.header.position);
    summary.apply(&events, usage::read_clock(cache_root));
    let from_entry = |key: &Digest, known: Option<Usage>| {
        let (entry, encoded_bytes) = read_entry(key)?;
        let made = Usage::of_stored(&entry, encoded_bytes);
        Some(match known {
            Some(u) => Usage {
                facts: made.facts,
                command: made.command,
                command_id: made.command_id,
                duration_ms: made.duration_ms,
                created_ms: made.created_ms,
                size: if u.size == 0 { made.size } else { u.size },
                stored: u.stored.or(made.stored),
                ..u
            },
            None => made,
        })
    };
    // What is there comes from the packs' tables (and an earlier memo's entry files):
    // the summary and the journal know every change memo logged, but not an entry whose
    // journal line was lost (a kill between the store and the append), one stored while
    // a `clear` or a rewrite of a damaged summary ran, or one removed by hand.
    let mut known = summary.usage;
    crate::store::local::stored_entries(cache_root)
        .into_keys()
        .filter_map(|key| match known.remove(&key) {
            Some(usage) if usage.facts.is_some() => Some((key, usage)),
            known => from_entry(&key, known).map(|u| (key, u)),
        })
        .collect()
}

/// The counters of past activity and the entries that saved the most time (most first,
/// at most `TAIL_TOP`), as of now, without reading every entry's record: the summary's
/// header, then the journal since it. What a `memo stats` read of the journal is kept
/// in `summary.tail` (see `Tail`), so that the next one starts where it stopped.
pub fn current_top(cache_root: &Path, log: &EventLog) -> (Counters, Vec<Top>) {
    let header = read_header(cache_root);
    let base = header.position;
    let base_counters = header.counters;
    let tail = read_tail(cache_root).filter(|t| t.extends(&header) && log.holds(t.position));
    let (from, mut counters, top) = match tail {
        Some(tail) => (tail.position, tail.counters, tail.top),
        None => (base, header.counters, header.top),
    };
    let (events, position) = log.read_since_as::<crate::events::Counted>(from);
    let mut top: HashMap<Digest, Top> = top.into_iter().map(|t| (t.key, t)).collect();
    for event in &events {
        let Some(counts) = &event.counts else {
            continue;
        };
        counters.add(&counts.split_content().1);
        if !matches!(
            event.event,
            Kind::Hit | Kind::Evict | Kind::Corrupt | Kind::Clear
        ) {
            continue;
        }
        let key = event.key.as_deref().and_then(|k| k.parse::<Digest>().ok());
        match (event.event, key) {
            // An entry not in the header's list, when the list is not complete, shows
            // what it saved since the fold: a lower bound, until the next fold.
            (Kind::Hit, Some(key)) => {
                let t = top.entry(key).or_insert_with(|| Top {
                    key,
                    command: event.command.clone().unwrap_or_default(),
                    hits: 0,
                    saved_ms: 0,
                });
                // Saturating: a tail or a header may have been planted.
                t.hits = t.hits.saturating_add(1);
                t.saved_ms = t.saved_ms.saturating_add(event.saved_ms.unwrap_or(0));
            }
            (Kind::Evict | Kind::Corrupt, Some(key)) => {
                top.remove(&key);
            }
            (Kind::Clear, _) => top.clear(),
            _ => {}
        }
    }
    let mut top: Vec<Top> = top.into_values().collect();
    top.sort_by(|a, b| b.saved_ms.cmp(&a.saved_ms).then(a.key.cmp(&b.key)));
    // The same list whether or not a tail was read.
    top.truncate(TAIL_TOP);
    if events.len() >= TAIL_AFTER {
        let kept = top.clone();
        write_tail(
            cache_root,
            &Tail {
                base,
                base_counters,
                position,
                counters,
                top: kept,
            },
        );
    }
    top.retain(|t| t.saved_ms > 0);
    (counters, top)
}

/// Where `memo stats` left off in the journal past the summary's position: the
/// counters and the list of entries that saved the most time as of `position`. Valid
/// while the summary's header is the one it was made from (`base`): any fold, `memo
/// stats --zero` included, moves the header and so sets it aside. Only a cache: lost or
/// damaged, the journal is read from the summary's position again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tail {
    base: Position,
    base_counters: Counters,
    position: Position,
    counters: Counters,
    top: Vec<Top>,
}

impl Tail {
    fn extends(&self, header: &Header) -> bool {
        self.base == header.position && self.base_counters == header.counters
    }
}

/// `memo stats` keeps where it left off once it has read this many journal records.
const TAIL_AFTER: usize = 64;
/// How many of the entries that saved the most time the tail keeps: more than the
/// header's `TOP`, so that one just below the cut is still counted whole.
const TAIL_TOP: usize = 2 * TOP;

fn tail_path(cache_root: &Path) -> PathBuf {
    cache_root.join("summary.tail")
}

fn read_tail(cache_root: &Path) -> Option<Tail> {
    let bytes = crate::fsutil::read_regular(&tail_path(cache_root), 1 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Best effort: a cache directory that cannot be written to is read again next time.
fn write_tail(cache_root: &Path, tail: &Tail) {
    let path = tail_path(cache_root);
    if may_replace(&path, b"{\"base\":") {
        let bytes = serde_json::to_vec(tail).expect("a tail serializes");
        let _ = crate::fsutil::write_file_atomic(&path, &bytes);
    }
}

/// Folds the journal into the summary. With `wait` false, does nothing when another
/// process holds the lock (it is folding already). `prune` keeps only the records of
/// entries for which it returns true (gc, which has listed them).
pub fn fold(
    cache_root: &Path,
    log: &EventLog,
    wait: bool,
    change: impl FnOnce(&mut Summary),
) -> io::Result<()> {
    let locks = cache_root.join("locks");
    let _lock = if wait {
        Lock::wait(&locks, "summary")?
    } else {
        match Lock::try_take(&locks, "summary", false)? {
            Some(lock) => lock,
            None => return Ok(()),
        }
    };
    fold_locked(cache_root, log, change).map(drop)
}

/// `fold` that waits for the lock and returns the summary it wrote (gc, which reads it
/// next).
pub fn fold_and_read(cache_root: &Path, log: &EventLog) -> io::Result<Summary> {
    let _lock = Lock::wait(&cache_root.join("locks"), "summary")?;
    fold_locked(cache_root, log, |_| {})
}

/// Folds the journal under the lock, applies `change`, and rotates the journal if it
/// has grown past `MAX_LOG_BYTES` (gc, after logging its evictions all at once).
pub fn fold_and_bound(
    cache_root: &Path,
    log: &EventLog,
    change: impl FnOnce(&mut Summary),
) -> io::Result<()> {
    let _lock = Lock::wait(&cache_root.join("locks"), "summary")?;
    fold_locked(cache_root, log, change)?;
    if log.current_size() > MAX_LOG_BYTES {
        log.rotate()?;
    }
    Ok(())
}

/// `fold` for a caller that holds the `summary` lock.
pub fn fold_locked(
    cache_root: &Path,
    log: &EventLog,
    change: impl FnOnce(&mut Summary),
) -> io::Result<Summary> {
    let mut summary = read(cache_root);
    let (events, position) = log.read_since(summary.header.position);
    summary.apply(&events, super::usage::read_clock(cache_root));
    summary.header.position = position;
    change(&mut summary);
    let path = summary_path(cache_root);
    if !may_replace(&path, b"{\"version\":") {
        // A file of the user's named `summary` in a directory that is not memo's own
        // (`MEMO_DIR=$HOME`): never replaced. The counts stay in the journal.
        return Err(io::Error::other(format!(
            "{} is not memo's summary; left alone",
            path.display()
        )));
    }
    crate::fsutil::write_file_atomic(&path, &summary.encode())?;
    // An older memo's records are in the summary now. Only the files memo named go
    // (a `usage/` of the user's, in a directory that is not memo's, stays).
    let legacy = cache_root.join("usage");
    if crate::fsutil::is_real_dir(&legacy) {
        for (name, path) in crate::fsutil::files_in_shards(&legacy) {
            if name.parse::<Digest>().is_ok() {
                let _ = std::fs::remove_file(&path);
                if let Some(shard) = path.parent() {
                    let _ = std::fs::remove_dir(shard);
                }
            }
        }
        let _ = std::fs::remove_dir(&legacy);
    }
    Ok(summary)
}

/// Whether memo may write its file at `path`: the cache is memo's, or the file is
/// missing or starts with `start`, as what memo writes there does. (A file of the user's
/// by that name, in a directory that is not memo's, is never replaced.)
fn may_replace(path: &Path, start: &[u8]) -> bool {
    crate::fsutil::is_memo_cache()
        || match crate::fsutil::read_regular(path, 16) {
            Ok(bytes) => bytes.starts_with(start),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
}

/// Appends `event` to the journal, folds the journal into the summary when it has
/// grown past a multiple of `FOLD_EVERY`, and rotates it once past `MAX_LOG_BYTES`,
/// folding it first under the lock, so that no record is dropped unfolded. Failures
/// are ignored: bookkeeping never fails the user's command.
pub fn append(cache_root: &Path, log: &EventLog, event: &Event) {
    let Ok((start, end)) = log.append(event) else {
        return;
    };
    if end > MAX_LOG_BYTES {
        let Ok(_lock) = Lock::wait(&cache_root.join("locks"), "summary") else {
            return;
        };
        // Another process may have rotated it while this one waited.
        if log.current_size() > MAX_LOG_BYTES && fold_locked(cache_root, log, |_| {}).is_ok() {
            let _ = log.rotate();
        }
    } else if start / FOLD_EVERY != end / FOLD_EVERY && is_fold_due(cache_root, end) {
        let _ = fold(cache_root, log, false, |_| {});
    }
}

/// Whether the journal, now `log_end` bytes long, has grown since the last fold by
/// `FOLD_EVERY`, or by `1 / FOLD_RATIO` of the summary's size if that is more. Reads the
/// summary's header line alone.
fn is_fold_due(cache_root: &Path, log_end: u64) -> bool {
    let Ok(file) =
        crate::fsutil::open_regular(&summary_path(cache_root), crate::fsutil::Access::Read)
    else {
        return true;
    };
    let size = file.metadata().map_or(0, |m| m.len());
    let mut line = Vec::new();
    let _ = io::BufReader::new(file.take(16 << 20)).read_until(b'\n', &mut line);
    let Some(header) = decode_header(&line) else {
        return true;
    };
    // A position in the rotated file reads as the start of this one: the rotation
    // folded, so at most a journal's worth is late.
    let grown = log_end
        .checked_sub(header.position.offset)
        .unwrap_or(log_end);
    grown >= FOLD_EVERY.max(size / FOLD_RATIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(key: &Digest, saved_ms: u64) -> Event {
        let mut event = Event::new(Kind::Hit);
        event.key = Some(key.to_hex());
        event.command = Some("echo".into());
        event.saved_ms = Some(saved_ms);
        event.counts = Some(Counters {
            hits: 1,
            time_saved_ms: saved_ms as i64,
            ..Counters::default()
        });
        event
    }

    #[test]
    fn folds_hits_into_counters_and_usage_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let key = Digest::of_bytes(b"k");
        for saved in [5, 7] {
            log.append(&hit(&key, saved)).unwrap();
        }
        // A line of an older memo (no counts) is not folded.
        let mut old = hit(&key, 100);
        old.counts = None;
        log.append(&old).unwrap();
        let (counters, top) = current_top(dir.path(), &log);
        assert_eq!((counters.hits, counters.time_saved_ms), (2, 12));
        assert_eq!(top[0].saved_ms, 12);
        fold(dir.path(), &log, true, |_| {}).unwrap();
        log.append(&hit(&key, 1)).unwrap();
        let summary = current(dir.path(), &log);
        assert_eq!(summary.usage[&key].hits, 3);
        assert_eq!(summary.header.counters.hits, 3);
        let (counters, top) = current_top(dir.path(), &log);
        assert_eq!((counters.hits, top[0].saved_ms, top[0].hits), (3, 13, 3));
    }

    #[test]
    fn stats_starts_where_the_last_one_stopped_and_counts_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let keys: Vec<Digest> = (0..100u32)
            .map(|i| Digest::of_bytes(&i.to_le_bytes()))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            log.append(&hit(key, i as u64 + 1)).unwrap();
        }
        let first = current_top(dir.path(), &log);
        assert_eq!(first.0.hits, 100);
        assert!(dir.path().join("summary.tail").exists());
        assert_eq!(current_top(dir.path(), &log), first);
        // Hits after the tail add to it, whether their entry is in its list or new.
        // (An entry ranked below the list's `TAIL_TOP` counts again from what it saves
        // since, a lower bound, as one below the summary's `TOP` does until a fold.)
        log.append(&hit(&keys[99], 1000)).unwrap();
        log.append(&hit(&Digest::of_bytes(b"new"), 500)).unwrap();
        let (counters, top) = current_top(dir.path(), &log);
        assert_eq!(
            (counters.hits, top[0].saved_ms, top[0].hits),
            (102, 1100, 2)
        );
        assert_eq!(top[1].saved_ms, 500);
        let without_tail = |dir: &Path| {
            let saved = std::fs::read(dir.join("summary.tail")).unwrap();
            std::fs::remove_file(dir.join("summary.tail")).unwrap();
            let read = current_top(dir, &log);
            std::fs::write(dir.join("summary.tail"), saved).unwrap();
            read
        };
        for _ in 0..TAIL_AFTER {
            log.append(&hit(&keys[95], 1)).unwrap();
        }
        let with = current_top(dir.path(), &log);
        assert_eq!(with, without_tail(dir.path()));
        // A fold moves the summary's header: the tail is set aside, nothing is counted twice.
        fold(dir.path(), &log, true, |_| {}).unwrap();
        assert_eq!(current_top(dir.path(), &log).0, with.0);
        // `memo stats --zero` folds too.
        log.append(&hit(&keys[1], 1)).unwrap();
        fold(dir.path(), &log, true, |s| {
            s.header.counters = Counters::default()
        })
        .unwrap();
        assert_eq!(current_top(dir.path(), &log).0.hits, 0);
        // A damaged tail is read past.
        for _ in 0..TAIL_AFTER {
            log.append(&hit(&keys[2], 1)).unwrap();
        }
        let read = current_top(dir.path(), &log);
        assert_eq!(read.0.hits, TAIL_AFTER as i64);
        std::fs::write(dir.path().join("summary.tail"), b"{\"base\": garbage").unwrap();
        assert_eq!(current_top(dir.path(), &log), read);
        // So is one whose place in the journal is gone (a journal replaced under it).
        std::fs::write(dir.path().join("log.jsonl"), b"").unwrap();
        assert_eq!(current_top(dir.path(), &log).0.hits, 0);
    }

    #[test]
    fn a_torn_record_is_skipped_and_the_next_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let key = Digest::of_bytes(b"k");
        log.append(&hit(&key, 1)).unwrap();
        let line = serde_json::to_vec(&hit(&key, 2)).unwrap();
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("log.jsonl"))
            .unwrap();
        file.write_all(&line[..line.len() / 2]).unwrap();
        let (counters, _) = current_top(dir.path(), &log);
        assert_eq!(counters.hits, 1, "a record without its newline waits");
        log.append(&hit(&key, 4)).unwrap();
        let (counters, _) = current_top(dir.path(), &log);
        assert_eq!((counters.hits, counters.time_saved_ms), (2, 5));
    }

    #[test]
    fn the_journal_is_bounded_and_every_record_folded() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let mut event = Event::new(Kind::Error);
        event.message = Some("x".repeat(10_000));
        event.counts = Some(Counters {
            errors: 1,
            ..Counters::default()
        });
        for _ in 0..1000 {
            append(dir.path(), &log, &event);
        }
        assert!(log.size() <= 2 * MAX_LOG_BYTES + 20_000, "{}", log.size());
        assert_eq!(current_top(dir.path(), &log).0.errors, 1000);
        assert!(
            read_header(dir.path()).counters.errors > 500,
            "folded on the way"
        );
    }

    #[test]
    fn concurrent_appends_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let key = Digest::of_bytes(b"k");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        append(dir.path(), &log, &hit(&key, 1));
                    }
                });
            }
        });
        let summary = current(dir.path(), &log);
        assert_eq!(summary.usage[&key].hits, 8000);
        assert_eq!(summary.header.counters.hits, 8000);
        assert!(
            read_header(dir.path()).counters.hits > 0,
            "folded on the way"
        );
    }

    #[test]
    fn a_large_summary_is_folded_less_often() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        // About 3 MB of records: folded each time the journal grows by a eighth of it.
        fold(dir.path(), &log, true, |summary| {
            for i in 0..40_000u32 {
                let usage = Usage {
                    command: format!("echo {i}"),
                    command_id: Some(Digest::of_bytes(&i.to_le_bytes())),
                    ..Usage::default()
                };
                summary
                    .usage
                    .insert(Digest::of_bytes(i.to_string().as_bytes()), usage);
            }
        })
        .unwrap();
        let size = std::fs::metadata(summary_path(dir.path())).unwrap().len();
        assert!(size / FOLD_RATIO > FOLD_EVERY + 64 * 1024, "{size}");
        let mut event = Event::new(Kind::Error);
        event.message = Some("x".repeat(1000));
        event.counts = Some(Counters {
            errors: 1,
            ..Counters::default()
        });
        let folded = || read_header(dir.path()).counters.errors;
        while log.current_size() < FOLD_EVERY + 16 * 1024 {
            append(dir.path(), &log, &event);
        }
        assert_eq!(folded(), 0, "not folded at FOLD_EVERY");
        // Checked where the journal crosses a multiple of FOLD_EVERY: the next one.
        assert!(size / FOLD_RATIO < 2 * FOLD_EVERY);
        while log.current_size() < 2 * FOLD_EVERY + 16 * 1024 {
            append(dir.path(), &log, &event);
        }
        assert!(folded() > 0, "folded past an eighth of the summary");
        assert_eq!(read(dir.path()).usage.len(), 40_000);
    }

    #[test]
    fn a_damaged_summary_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(summary_path(dir.path()), b"{\"version\": nonsense\n").unwrap();
        assert!(read(dir.path()).usage.is_empty());
        assert_eq!(read_header(dir.path()), Header::default());
    }
}
