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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        }
    }
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

    pub fn append(&self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        // A FIFO or device planted as the log is replaced by a fresh log.
        let (mut file, _) = crate::fsutil::open_or_replace(&self.path, Access::Append)?;
        crate::fsutil::share(&file)?;
        file.write_all(&line)?;
        if file.metadata()?.len() > MAX_LOG_BYTES {
            self.rotate()?;
        }
        Ok(())
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

    #[test]
    fn the_log_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path());
        let mut e = Event::new(Kind::Error);
        e.message = Some("x".repeat(10_000));
        for _ in 0..1000 {
            log.append(&e).unwrap();
        }
        assert!(log.size() <= 2 * MAX_LOG_BYTES + 20_000, "{}", log.size());
    }
}
