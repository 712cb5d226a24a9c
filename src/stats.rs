//! Cache counters: hits, misses, forced runs, time saved, evictions, corruption, and the size of
//! what is stored.
//!
//! Owns `stats/`: sixteen small shard files, each updated under an exclusive `flock`, so
//! many memo processes at once lose no update, and an update costs one lock, one read
//! and one write whatever the size of the cache. A process picks its shard by pid, which
//! keeps contention low; `memo stats` adds the shards up. `entries` and `bytes` move by
//! deltas and may be negative in one shard; gc, which scans everything, resets them to
//! the truth.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{read_json_locked, update_json_locked};

const SHARDS: u32 = 16;

/// Every counter is left out of its JSON when zero: a journal record carries one or two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    #[serde(skip_serializing_if = "is_zero")]
    pub hits: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub misses: i64,
    /// Runs made with `--force`: the result was not looked up, so neither hit nor miss.
    #[serde(skip_serializing_if = "is_zero")]
    pub forced: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub stores: i64,
    /// Original run time of every replayed result minus the time replaying took.
    #[serde(skip_serializing_if = "is_zero")]
    pub time_saved_ms: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub evictions: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub corrupt: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub errors: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub entries: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes: i64,
    /// The shared tier: entries found there (each also counts as a hit when replayed),
    /// lookups that found none, results uploaded, bytes moved each way, failed calls,
    /// entries refused for a missing or wrong signature, and circuit-breaker trips.
    #[serde(skip_serializing_if = "is_zero")]
    pub remote_hits: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub remote_misses: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub uploads: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub remote_bytes_down: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub remote_bytes_up: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub remote_errors: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub remote_rejected: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub breaker_trips: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Counters {
    /// The counters that describe what is stored (`entries`, `bytes`), kept in the
    /// shards, and the rest, the counts of past activity, which go to the journal.
    pub fn split_content(self) -> (Counters, Counters) {
        let content = Counters {
            entries: self.entries,
            bytes: self.bytes,
            ..Counters::default()
        };
        let activity = Counters {
            entries: 0,
            bytes: 0,
            ..self
        };
        (content, activity)
    }

    /// Saturating: a damaged or forged shard may hold any number, and the sum must
    /// never overflow.
    pub fn add(&mut self, other: &Counters) {
        let fields = [
            (&mut self.hits, other.hits),
            (&mut self.misses, other.misses),
            (&mut self.forced, other.forced),
            (&mut self.stores, other.stores),
            (&mut self.time_saved_ms, other.time_saved_ms),
            (&mut self.evictions, other.evictions),
            (&mut self.corrupt, other.corrupt),
            (&mut self.errors, other.errors),
            (&mut self.entries, other.entries),
            (&mut self.bytes, other.bytes),
            (&mut self.remote_hits, other.remote_hits),
            (&mut self.remote_misses, other.remote_misses),
            (&mut self.uploads, other.uploads),
            (&mut self.remote_bytes_down, other.remote_bytes_down),
            (&mut self.remote_bytes_up, other.remote_bytes_up),
            (&mut self.remote_errors, other.remote_errors),
            (&mut self.remote_rejected, other.remote_rejected),
            (&mut self.breaker_trips, other.breaker_trips),
        ];
        for (field, delta) in fields {
            *field = field.saturating_add(delta);
        }
    }
}

pub struct Stats {
    dir: PathBuf,
}

impl Stats {
    pub fn new(cache_root: &Path) -> Stats {
        Stats {
            dir: cache_root.join("stats"),
        }
    }

    fn shard_path(&self, shard: u32) -> PathBuf {
        self.dir.join(format!("{shard:02}"))
    }

    /// Adds `delta` to this process's shard.
    pub fn add(&self, delta: &Counters) -> io::Result<()> {
        self.update(std::process::id() % SHARDS, |c| c.add(delta))
    }

    fn update(&self, shard: u32, change: impl FnOnce(&mut Counters)) -> io::Result<()> {
        update_json_locked(
            &self.shard_path(shard),
            |counters: &mut Counters, was_corrupt| {
                if was_corrupt {
                    crate::console::warn_once(format!(
                        "counter file {} was damaged; its counts restart from zero",
                        self.shard_path(shard).display()
                    ));
                    counters.corrupt += 1;
                }
                change(counters)
            },
        )
        .map(drop)
    }

    /// The sum over all shards.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for shard in 0..SHARDS {
            if let Some(counters) = read_json_locked::<Counters>(&self.shard_path(shard)) {
                total.add(&counters);
            }
        }
        total
    }

    /// `memo stats --zero`: resets the activity counters, keeps what describes the content.
    pub fn zero_activity(&self) -> io::Result<()> {
        for shard in 0..SHARDS {
            self.update(shard, |c| {
                *c = Counters {
                    entries: c.entries,
                    bytes: c.bytes,
                    ..Counters::default()
                }
            })?;
        }
        Ok(())
    }

    /// Sets `entries` and `bytes` to values gc counted.
    pub fn set_content(&self, entries: i64, bytes: i64) -> io::Result<()> {
        for shard in 0..SHARDS {
            self.update(shard, |c| {
                (c.entries, c.bytes) = if shard == 0 { (entries, bytes) } else { (0, 0) };
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::new(dir.path());
        std::thread::scope(|s| {
            for t in 0..8 {
                let stats = &stats;
                s.spawn(move || {
                    for _ in 0..50 {
                        // All threads share one pid, hence one shard: the worst case.
                        stats
                            .add(&Counters {
                                hits: 1,
                                bytes: t,
                                ..Default::default()
                            })
                            .unwrap();
                    }
                });
            }
        });
        let total = stats.total();
        assert_eq!(total.hits, 400);
        assert_eq!(total.bytes, 50 * (0..8).sum::<i64>());
    }

    #[test]
    fn zero_keeps_content_and_set_content_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::new(dir.path());
        stats
            .add(&Counters {
                hits: 3,
                entries: 2,
                bytes: 10,
                ..Default::default()
            })
            .unwrap();
        stats.zero_activity().unwrap();
        assert_eq!(
            stats.total(),
            Counters {
                entries: 2,
                bytes: 10,
                ..Default::default()
            }
        );
        stats.set_content(5, 50).unwrap();
        assert_eq!(
            stats.total(),
            Counters {
                entries: 5,
                bytes: 50,
                ..Default::default()
            }
        );
    }

    #[test]
    fn huge_counts_saturate() {
        let mut total = Counters {
            hits: i64::MAX,
            bytes: i64::MIN,
            ..Default::default()
        };
        total.add(&total.clone());
        assert_eq!((total.hits, total.bytes), (i64::MAX, i64::MIN));
    }

    #[test]
    fn a_garbled_shard_counts_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::new(dir.path());
        stats
            .add(&Counters {
                hits: 1,
                ..Default::default()
            })
            .unwrap();
        let shard = stats.shard_path(std::process::id() % SHARDS);
        fs::write(&shard, b"{\"hits\": nonsense").unwrap();
        assert_eq!(stats.total().hits, 0);
        stats
            .add(&Counters {
                hits: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(stats.total().hits, 1);
    }
}
