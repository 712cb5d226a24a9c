//! How an entry has been used: hits, time saved, last access, and what gc's
//! Greedy-Dual-Size-Frequency policy needs to rank it. One small file per entry under
//! `usage/`, beside (not inside) the entry, so a hit rewrites a few hundred bytes, never
//! the entry itself. Updated under an exclusive `flock`: concurrent hits are all counted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::create_private_dir_all;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// The command line, for people (`memo ls`, `memo stats`).
    pub command: String,
    /// Digest of argv and cwd: which entries are "the same command" for `memo explain`.
    pub command_id: Option<Digest>,
    pub created_ms: u64,
    /// How long the command took: the cost of recomputing it.
    pub duration_ms: u64,
    /// The entry file plus every object it refers to (shared ones counted in full).
    pub size: u64,
    pub hits: u64,
    pub saved_ms: u64,
    pub last_access_ms: u64,
    /// gc's clock (its "L") at the last access: the aging term of the priority.
    pub clock: f64,
}

impl Usage {
    /// Greedy-Dual-Size-Frequency priority: L + frequency * cost / size. Low goes first.
    /// Expensive, small, often-used results stay; big, cheap ones go, however recent.
    pub fn priority(&self) -> f64 {
        let frequency = (self.hits + 1) as f64;
        let cost = self.duration_ms.max(1) as f64;
        let size = self.size.max(1) as f64;
        self.clock + frequency * cost / size
    }
}

pub fn usage_path(cache_root: &Path, key: &Digest) -> PathBuf {
    let hex = key.to_hex();
    cache_root.join("usage").join(&hex[..2]).join(hex)
}

/// Reads a usage record; a missing or garbled one reads as `None`.
pub fn read(path: &Path) -> Option<Usage> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Applies `change` to the record at `path` (a default one if there is none) under an
/// exclusive lock.
pub fn update(path: &Path, change: impl FnOnce(&mut Usage)) -> io::Result<()> {
    create_private_dir_all(path.parent().expect("usage path has a parent"))?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    FileExt::lock_exclusive(&file)?;
    let mut text = String::new();
    let mut usage: Usage = match file.read_to_string(&mut text) {
        Ok(_) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => Usage::default(),
    };
    change(&mut usage);
    let bytes = serde_json::to_vec(&usage).expect("usage serializes");
    file.seek(SeekFrom::Start(0))?;
    file.set_len(0)?;
    file.write_all(&bytes)?;
    FileExt::unlock(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expensive_small_frequent_outranks_cheap_big_recent() {
        let keep = Usage {
            duration_ms: 60_000,
            size: 1_000,
            hits: 5,
            ..Default::default()
        };
        let evict = Usage {
            duration_ms: 100,
            size: 100_000_000,
            hits: 50,
            clock: 10.0,
            ..Default::default()
        };
        assert!(keep.priority() > evict.priority());
    }

    #[test]
    fn concurrent_hits_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = usage_path(dir.path(), &Digest::of_bytes(b"k"));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        update(&path, |u| u.hits += 1).unwrap();
                    }
                });
            }
        });
        assert_eq!(read(&path).unwrap().hits, 200);
    }
}
