//! How an entry has been used: hits, time saved, last access, and what gc's
//! Greedy-Dual-Size-Frequency policy needs to rank it, with what `memo ls` shows of the
//! entry. The records live in the summary (`index::summary`), folded from the journal:
//! a hit appends one line and rewrites nothing. (Before, each entry had a file of its
//! own under `usage/`; the first fold reads those once and removes them.)

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::fsutil::read_json_locked;
pub use crate::usage_record::{Facts, Stored, Usage};

impl Stored {
    pub fn of_entry(entry: &super::Entry, encoded_bytes: u64) -> Stored {
        let mut objects: Vec<Digest> = entry
            .blobs()
            .filter(|b| b.inline.is_none())
            .map(|b| b.digest)
            .collect();
        objects.sort_unstable();
        objects.dedup();
        Stored {
            bytes: encoded_bytes,
            objects,
        }
    }
}

impl Facts {
    pub fn of_entry(entry: &super::Entry) -> Facts {
        let read = entry.observed.as_ref().map_or(0, |o| {
            o.observations
                .iter()
                .filter(|obs| matches!(obs, crate::traced::Observation::Read { .. }))
                .count()
        });
        Facts {
            cwd: entry.material.cwd.clone(),
            inputs: entry.material.inputs.len() + read,
            outputs: entry.outputs.len(),
            traced: entry.observed.is_some(),
            exit_code: entry.exit_code,
        }
    }
}

impl Usage {
    /// The usage record a store of `entry` (`encoded_bytes` in its file) logs: its size
    /// is the entry file's and its objects' raw bytes, and what it stores is known.
    pub fn of_stored(entry: &super::Entry, encoded_bytes: u64) -> Usage {
        let size = encoded_bytes
            + entry
                .blobs()
                .filter(|b| b.inline.is_none())
                .map(|b| b.size)
                .sum::<u64>();
        Usage {
            stored: Some(Stored::of_entry(entry, encoded_bytes)),
            ..Usage::of_entry(entry, size)
        }
    }

    /// A fresh usage record for `entry`, of `size` bytes (0: unknown until gc counts it).
    pub fn of_entry(entry: &super::Entry, size: u64) -> Usage {
        Usage {
            command: crate::key::command_line(&entry.material),
            command_id: Some(crate::key::command_id(&entry.material)),
            created_ms: entry.created_unix_ms,
            duration_ms: entry.duration_ms,
            size,
            last_access_ms: entry.created_unix_ms,
            facts: Some(Facts::of_entry(entry)),
            ..Default::default()
        }
    }
}

impl Usage {
    /// Greedy-Dual-Size-Frequency priority: L + frequency * cost / size. Low goes first.
    /// Expensive, small, often-used results stay; big, cheap ones go, however recent.
    pub fn priority(&self) -> f64 {
        let frequency = self.hits.saturating_add(1) as f64;
        let cost = self.duration_ms.max(1) as f64;
        let size = self.size.max(1) as f64;
        self.clock + frequency * cost / size
    }
}

/// The usage records an older memo kept one file each under `usage/`, with their
/// keys; a missing or garbled one is left out.
pub fn read_legacy(cache_root: &Path) -> Vec<(Digest, Usage)> {
    crate::fsutil::files_in_shards(&cache_root.join("usage"))
        .into_iter()
        .filter_map(|(name, path)| Some((name.parse().ok()?, read_json_locked(&path)?)))
        .collect()
}

/// Where gc keeps its clock between runs.
pub fn clock_path(root: &Path) -> PathBuf {
    root.join("gc-clock")
}

/// gc's clock ("L" of Greedy-Dual-Size-Frequency): 0 until the first eviction.
pub fn read_clock(root: &Path) -> f64 {
    crate::fsutil::read_regular(&clock_path(root), 64)
        .ok()
        .and_then(|t| String::from_utf8(t).ok())
        .and_then(|t| t.trim().parse().ok())
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0)
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
}
