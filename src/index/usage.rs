//! How an entry has been used: hits, time saved, last access, and what gc's
//! Greedy-Dual-Size-Frequency policy needs to rank it. One small file per entry under
//! `usage/`, beside (not inside) the entry, so a hit rewrites a few hundred bytes, never
//! the entry itself. Updated under an exclusive `flock`: concurrent hits are all counted.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{read_json_locked, update_json_locked};

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
    /// A fresh usage record for `entry`, of `size` bytes (0: unknown until gc counts it).
    pub fn of_entry(entry: &super::Entry, size: u64) -> Usage {
        Usage {
            command: crate::key::command_line(&entry.material),
            command_id: Some(crate::key::command_id(&entry.material)),
            created_ms: entry.created_unix_ms,
            duration_ms: entry.duration_ms,
            size,
            last_access_ms: entry.created_unix_ms,
            ..Default::default()
        }
    }
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
    crate::fsutil::sharded_path(&cache_root.join("usage"), key)
}

/// Every readable usage record in the cache at `cache_root`, with its key.
pub fn all(cache_root: &Path) -> Vec<(Digest, Usage)> {
    crate::fsutil::files_in_shards(&cache_root.join("usage"))
        .into_iter()
        .filter_map(|(name, path)| Some((name.parse().ok()?, read(&path)?)))
        .collect()
}

/// Reads a usage record; a missing or garbled one reads as `None`.
pub fn read(path: &Path) -> Option<Usage> {
    read_json_locked(path)
}

/// Applies `change` to the record at `path` (a default one if there is none) under an
/// exclusive lock.
pub fn update(path: &Path, change: impl FnOnce(&mut Usage)) -> io::Result<()> {
    update_json_locked(path, |usage: &mut Usage, was_corrupt| {
        if was_corrupt {
            crate::console::warn_once(format!(
                "usage record {} was damaged; its counts restart from zero",
                path.display()
            ));
        }
        change(usage)
    })
    .map(drop)
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
