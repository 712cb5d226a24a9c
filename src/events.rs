//! The event log: one JSON line per hit, miss, forced run, store, eviction, corrupt entry and error,
//! appended to `log.jsonl` in the cache directory.
//!
//! Owns the line format and the bound on its size: a line is appended with one `write`
//! on a file opened with O_APPEND, so lines from concurrent processes never interleave;
//! past `MAX_LOG_BYTES` the log is rotated to `log.1.jsonl`, and the older one dropped.
//! Environment values never appear here (the key material holds only their digests).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fsutil::Access;

pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hit,
    Miss,
    /// A run with `--force`: the stored result, if any, was not looked at.
    Forced,
    Store,
    Evict,
    Corrupt,
    Error,
    Clear,
    #[serde(rename = "remote-hit")]
    RemoteHit,
    #[serde(rename = "remote-miss")]
    RemoteMiss,
    Upload,
    #[serde(rename = "remote-error")]
    RemoteError,
    Rejected,
    #[serde(rename = "breaker-trip")]
    BreakerTrip,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub event: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// How long the command ran (miss, store) or originally took (hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the event adds to the counters of past activity. Present on every record
    /// of the journal (docs/format.md): the summary folds only such lines, so the lines
    /// of an older memo, which counted elsewhere, are never counted twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<crate::stats::Counters>,
    /// A store's usage record (what `memo ls` shows of the entry), for the summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::usage_record::Usage>,
}

impl Event {
    /// An event about `key`, naming its command.
    pub fn of_command(
        kind: Kind,
        key: &crate::digest::Digest,
        material: &crate::key::KeyMaterial,
    ) -> Event {
        let mut event = Event::new(kind);
        event.key = Some(key.to_hex());
        event.command = Some(crate::key::command_line(material));
        event
    }

    pub fn new(event: Kind) -> Event {
        Event {
            time_ms: now_ms(),
            event,
            key: None,
            command: None,
            duration_ms: None,
            saved_ms: None,
            size: None,
            message: None,
            counts: None,
            usage: None,
        }
    }

    /// The event as `memo log` shows it: without the journal's bookkeeping.
    pub fn for_people(&self) -> Event {
        Event {
            counts: None,
            usage: None,
            ..self.clone()
        }
    }
}

/// A place in the journal: the offset after the last line folded, the inode of the log
/// file it was taken in, and a check of the bytes before it. The inode says which file
/// (the current one or the rotated one) unless it was reused; the check then tells,
/// and tells alone in a copy of the cache (`cp -a`, a backup restored), whose files
/// have new inodes: a copy still knows what it has folded and counts nothing twice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
    pub check: u64,
}

/// How many bytes before a position its check covers: a few records, which carry their
/// time in milliseconds and their key.
const CHECKED_BYTES: u64 = 256;

/// FNV-1a: a check, not a defence (whoever can write the log can write the summary).
fn check_of(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The check of the bytes before `offset` in the file at `path`; `None` if it is
/// shorter (or missing).
fn check_at(path: &Path, offset: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let file = crate::fsutil::open_regular(path, Access::Read).ok()?;
    let start = offset.saturating_sub(CHECKED_BYTES);
    let mut bytes = vec![0; (offset - start) as usize];
    file.read_exact_at(&mut bytes, start).ok()?;
    Some(check_of(&bytes))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    pub fn new(cache_root: &Path) -> EventLog {
        EventLog {
            path: cache_root.join("log.jsonl"),
        }
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_file_name("log.1.jsonl")
    }

    /// Appends `event` as one line, with one `write` on an O_APPEND file, and returns
    /// where the line starts and ends. Bounding the log is the caller's (see
    /// `Cache::append`): it folds the journal before rotating it.
    pub fn append(&self, event: &Event) -> io::Result<(u64, u64)> {
        use std::io::Seek;
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        // A FIFO or device planted as the log is replaced by a fresh log.
        let (mut file, _) = crate::fsutil::open_or_replace(&self.path, Access::Append)?;
        crate::fsutil::share(&file)?;
        let written = file.write(&line)?;
        if written < line.len() {
            // A short write (a full disk): end the torn line so that the next record
            // starts a line of its own, and say so.
            let _ = file.write(b"\n");
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "log line cut short",
            ));
        }
        // With O_APPEND the offset is now the end of this very line.
        let end = file.stream_position()?;
        Ok((end.saturating_sub(line.len() as u64), end))
    }

    /// Appends `events`, several lines to a `write` (whole lines, at most 64 KiB), for
    /// a caller that logs many at once (gc). Returns the end of the last one.
    pub fn append_all(&self, events: &[Event]) -> io::Result<u64> {
        use std::io::Seek;
        const CHUNK: usize = 64 * 1024;
        let (mut file, _) = crate::fsutil::open_or_replace(&self.path, Access::Append)?;
        crate::fsutil::share(&file)?;
        let mut chunk = Vec::with_capacity(CHUNK);
        for (i, event) in events.iter().enumerate() {
            serde_json::to_writer(&mut chunk, event).expect("events serialize");
            chunk.push(b'\n');
            if chunk.len() >= CHUNK - 4096 || i + 1 == events.len() {
                if file.write(&chunk)? < chunk.len() {
                    let _ = file.write(b"\n");
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "log cut short"));
                }
                chunk.clear();
            }
        }
        file.stream_position()
    }

    /// The size of the current log file (not counting the rotated one).
    pub fn current_size(&self) -> u64 {
        fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The journal's records after `from`, oldest first, and the position after the
    /// last whole line read. A record cut short (its writer was killed or the disk was
    /// full) is skipped; so is any line that is not one.
    pub fn read_since(&self, from: Position) -> (Vec<Event>, Position) {
        self.read_since_as(from)
    }

    /// `read_since`, each record read as an `R` (a part of an event is quicker to read).
    pub fn read_since_as<R: Record>(&self, from: Position) -> (Vec<R>, Position) {
        use std::os::unix::fs::MetadataExt;
        let inode_of = |p: &Path| fs::symlink_metadata(p).ok().map(|m| m.ino());
        let holds = |path: &Path| check_at(path, from.offset) == Some(from.check);
        let (rotated, current) = (self.rotated(), self.path.clone());
        let by_inode = [&rotated, &current]
            .into_iter()
            .find(|p| inode_of(p) == Some(from.inode) && holds(p));
        // A copy: the file whose bytes before the offset are the same.
        let taken_in = by_inode.or_else(|| [&rotated, &current].into_iter().find(|p| holds(p)));
        let mut events = Vec::new();
        let mut start = 0;
        if from.offset > 0 {
            if taken_in == Some(&rotated) {
                // Rotated since: the rest of the old file, then the new one from its start.
                let _ = read_records(&rotated, from.offset, &mut events);
            } else if taken_in == Some(&current) {
                start = from.offset;
            }
        }
        let offset = read_records(&current, start, &mut events).unwrap_or(start);
        let position = Position {
            inode: inode_of(&current).unwrap_or_default(),
            offset,
            check: check_at(&current, offset).unwrap_or_default(),
        };
        (events, position)
    }

    /// Whether `at` is a place in the current or the rotated log file (its check holds
    /// there): reading from it counts nothing twice.
    pub fn holds(&self, at: Position) -> bool {
        at.offset == 0
            || [self.path.clone(), self.rotated()]
                .iter()
                .any(|p| check_at(p, at.offset) == Some(at.check))
    }

    /// Moves the log aside (dropping the older one). Concurrent appenders then write to
    /// a fresh file; one racing with the rename lands in the rotated file, never lost.
    pub fn rotate(&self) -> io::Result<()> {
        match fs::rename(&self.path, self.rotated()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The newest `limit` events, oldest first, and how many lines could not be read.
    pub fn latest(&self, limit: usize) -> (Vec<Event>, usize) {
        let mut events = Vec::new();
        let mut unreadable = 0;
        for path in [self.rotated(), self.path.clone()] {
            let bytes = match read_tail(&path, MAX_READ_BYTES) {
                Ok(bytes) => bytes,
                Err(e) => {
                    if crate::fsutil::is_not_regular(&e) {
                        // A FIFO or device planted as a log: not a log, and in the way.
                        let _ = crate::fsutil::remove_planted(&path);
                    }
                    continue;
                }
            };
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match decode_line(line) {
                    Some(event) => events.push(event),
                    None => unreadable += 1,
                }
            }
        }
        let skip = events.len().saturating_sub(limit);
        (events.split_off(skip), unreadable)
    }

    pub fn size(&self) -> u64 {
        [self.path.clone(), self.rotated()]
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// How much of each log file `latest` reads, from its end: rotation keeps a log near
/// `MAX_LOG_BYTES`, and a bigger one (planted, or a giant sparse file) must not cost
/// memo the time and memory to read it whole.
const MAX_READ_BYTES: u64 = 2 * MAX_LOG_BYTES;

/// The last `limit` bytes of the regular file at `path` (see `fsutil::open_regular`),
/// from the start of a line.
fn read_tail(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = crate::fsutil::open_regular(path, Access::Read)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(limit);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    if start > 0 {
        // The first line is cut: it is not a line of the log.
        let first_line = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first_line);
    }
    Ok(bytes)
}

/// Decodes one log line; `None` for anything that is not a whole, valid event.
pub fn decode_line(line: &[u8]) -> Option<Event> {
    serde_json::from_slice(line).ok()
}

/// How much of a journal file one fold reads: a log is rotated near `MAX_LOG_BYTES`.
const MAX_FOLD_BYTES: u64 = 2 * MAX_LOG_BYTES;

/// Appends to `events` the records of the log file at `path` from `offset` on (a
/// record is a line with `counts`), and returns the offset after its last whole line.
/// A line that is not a record may be a record cut short with another appended to it:
/// the last record start in it is tried too.
fn read_records<R: Record>(path: &Path, offset: u64, events: &mut Vec<R>) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = crate::fsutil::open_regular(path, Access::Read)?;
    let len = file.metadata()?.len();
    // A file shorter than the position is not the one the position was taken in.
    let offset = if offset > len { 0 } else { offset };
    let start = offset.max(len.saturating_sub(MAX_FOLD_BYTES));
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(MAX_FOLD_BYTES).read_to_end(&mut bytes)?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in bytes[..whole].split(|&b| b == b'\n') {
        if let Some(event) = decode_record(line) {
            events.push(event);
        }
    }
    Ok(start + whole as u64)
}

/// What a line of the journal is read as: an event, or the part of one a reader needs.
pub trait Record: serde::de::DeserializeOwned {
    /// Whether it is a record of the journal (it carries counts), not an older memo's
    /// line.
    fn counts(&self) -> bool;
}

impl Record for Event {
    fn counts(&self) -> bool {
        self.counts.is_some()
    }
}

/// What `memo stats` reads of a record: its counts and which entry it is about, not the
/// usage record a store carries.
#[derive(Debug, Deserialize)]
pub struct Counted {
    pub event: Kind,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub saved_ms: Option<u64>,
    #[serde(default)]
    pub counts: Option<crate::stats::Counters>,
}

impl Record for Counted {
    fn counts(&self) -> bool {
        self.counts.is_some()
    }
}

/// A journal record, from a whole line or from the end of a line where a torn record
/// was followed by a whole one.
fn decode_record<R: Record>(line: &[u8]) -> Option<R> {
    const RECORD_START: &[u8] = b"{\"time_ms\":";
    let decode = |bytes: &[u8]| serde_json::from_slice::<R>(bytes).ok();
    let record = decode(line).or_else(|| {
        let at = line
            .windows(RECORD_START.len())
            .rposition(|w| w == RECORD_START)?;
        decode(&line[at..])
    })?;
    record.counts().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        for i in 0..5 {
            let mut e = Event::new(Kind::Hit);
            e.saved_ms = Some(i);
            log.append(&e).unwrap();
        }
        let (latest, bad) = log.latest(2);
        assert_eq!(bad, 0);
        assert_eq!(
            latest
                .iter()
                .map(|e| e.saved_ms.unwrap())
                .collect::<Vec<_>>(),
            [3, 4]
        );
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        log.append(&Event::new(Kind::Miss)).unwrap();
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("log.jsonl"))
            .unwrap();
        f.write_all(b"{\"time_ms\": 1, \"event\": \"hi\0t\"}\n\xff\xfe\n{\"trunc")
            .unwrap();
        let (events, bad) = log.latest(10);
        assert_eq!(events.len(), 1);
        assert_eq!(bad, 3);
    }
}
