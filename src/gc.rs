//! Keeping the cache in bounds: `memo gc`, `memo clear`, and the automatic trim after a
//! store pushes the cache past `MEMO_MAX_SIZE`.
//!
//! Owns the eviction policy, Greedy-Dual-Size-Frequency (see `index::usage::Usage::priority`):
//! each entry's priority is gc's clock at its last access plus hits x run time / size, and
//! the lowest go first; the clock then advances to the last evicted priority, so entries
//! untouched for long age out. An object shared by several entries counts once in the
//! total and is split between them in their sizes. Objects no entry refers to are
//! removed once older than `ORPHAN_GRACE`, so an object whose entry is being written
//! right now is never lost. Runs under the `gc` lock; the automatic trim only tries it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cache::{self, Cache};
use crate::digest::Digest;
use crate::digest_cache;
use crate::events::{now_ms, Event, Kind};
use crate::fsutil::{files_in_shards, open_regular, read_regular, remove_path, Access};
use crate::index::{usage, Entry};
use crate::lock::Lock;
use crate::progress::Progress;
use crate::stats::Counters;
use crate::store::Store;

/// Unreferenced objects younger than this are kept: their entry may be being written.
/// (A store reuses an existing object only if it changed within `REFRESH_AGE`, half of
/// this, so a reused object cannot be collected before its entry is written.)
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10 * 60);
/// A temporary file untouched for this long belongs to no live memo, even where gc
/// cannot tell from its lock.
pub const TEMP_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Digest-cache records older than this are dropped (the next use re-hashes once).
pub const DIGEST_RECORD_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// What `memo clear` moves aside before deleting it; swept by gc if a clear was killed.
const TRASH_PREFIX: &str = ".trash-";
/// The automatic trim brings the cache down to this fraction of its limit.
pub const AUTO_TARGET: f64 = 0.9;

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
    pub dry_run: bool,
    /// Only try the lock, and do nothing if another gc holds it.
    pub only_if_free: bool,
    /// Unreferenced objects younger than this are kept (`ORPHAN_GRACE` by default).
    pub grace: Option<Duration>,
    /// Re-hash every object in full, whatever the digest cache says: the only check
    /// that catches damage below the file system (bit rot under an unchanged inode).
    pub verify: bool,
}

#[derive(Clone, Debug)]
pub struct Removed {
    pub key: Digest,
    pub command: String,
    /// Bytes this removal frees (its entry file and objects no other entry uses).
    pub size: u64,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub entries_before: u64,
    pub bytes_before: u64,
    pub removed: Vec<Removed>,
    pub corrupt: Vec<Digest>,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub temp_files: u64,
    /// Objects whose contents no longer match their name (`--verify`).
    pub damaged_objects: Vec<Digest>,
    pub entries_after: u64,
    pub bytes_after: u64,
}

impl Report {
    pub fn freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

struct Scanned {
    key: Digest,
    entry_bytes: u64,
    /// The objects it refers to, each once (stdout and an output may be one object).
    objects: Vec<Digest>,
    usage: usage::Usage,
    /// Whether the entry file was read; if not, its size and objects are the summary's.
    read: bool,
}

/// When a file last changed: the later of its ctime (a rename counts) and its mtime.
fn changed_at(meta: &fs::Metadata) -> SystemTime {
    let ctime = crate::fsutil::changed_time(meta);
    meta.modified().map_or(ctime, |m| m.max(ctime))
}

fn age_of(meta: &fs::Metadata, now: SystemTime) -> Duration {
    now.duration_since(changed_at(meta)).unwrap_or_default()
}

/// Runs gc. `Ok(None)` when `only_if_free` and another gc holds the lock.
pub fn collect(cache: &Cache, options: &Options) -> std::io::Result<Option<Report>> {
    let lock = if options.only_if_free {
        Lock::try_take(&cache.locks_dir(), "gc", false)?
    } else {
        Some(Lock::wait(&cache.locks_dir(), "gc")?)
    };
    let Some(_lock) = lock else {
        return Ok(None);
    };
    let started = SystemTime::now();
    let root = cache.root();
    let grace = options.grace.unwrap_or(ORPHAN_GRACE);
    let mut report = Report::default();

    // 1. Read every entry; what cannot be decoded is removed as corrupt. Usage comes
    // from the summary and the journal since (a hit since the fold counts from its
    // clock); the summary is written once, at the end.
    let mut usages = crate::index::summary::current(root, &cache.log).usage;
    if options.dry_run {
        // Damage found on the way is reported, and left where it is.
        crate::store::packs::hold_changes();
    } else {
        // An earlier memo's entry files move into the packs (once).
        cache.store.migrate_entry_files();
    }
    // Many lookups: each pack's table is read once (what gc itself changes is read again).
    let _kept = cache.store.packs().keep_tables();
    let stored = cache.store.entry_sizes();
    // An entry read and decoded, with its size; `None` for a damaged record (or, in an
    // earlier memo's file, anything but a regular file of a sane size): corrupt.
    let read_entry = |key: &Digest| {
        let bytes = cache.store.get_entry(key).ok().flatten()?;
        Entry::decode(&bytes).ok().map(|entry| (entry, bytes.len()))
    };
    let mut keys: Vec<Digest> = stored.keys().copied().collect();
    keys.sort_unstable();
    // An entry the summary knows is not read: its size and objects are in the summary.
    // (Those that are kept are looked at below; `--verify` reads all.)
    // The summary's records of entries that were not found: they leave it at the end.
    let mut gone: HashSet<Digest> = HashSet::new();
    let mut scanned = Vec::with_capacity(keys.len());
    // Each object's size, as its entries record it (for `--verify`).
    let mut recorded_size: HashMap<Digest, u64> = HashMap::new();
    for key in keys {
        let known = match usages.remove(&key) {
            Some(mut usage) => match usage.stored.take() {
                Some(stored) if !options.verify => {
                    scanned.push(Scanned {
                        key,
                        entry_bytes: stored.bytes,
                        objects: stored.objects,
                        usage,
                        read: false,
                    });
                    continue;
                }
                _ => Some(usage),
            },
            None => None,
        };
        let Some((entry, entry_bytes)) = read_entry(&key) else {
            gone.insert(key);
            report.corrupt.push(key);
            if !options.dry_run {
                let _ = cache.remove_result(&key);
            }
            continue;
        };
        let usage = known.unwrap_or_else(|| usage::Usage::of_entry(&entry, 0));
        let mut objects: Vec<Digest> = entry
            .blobs()
            .filter(|b| b.inline.is_none())
            .map(|b| {
                recorded_size.insert(b.digest, b.size);
                b.digest
            })
            .collect();
        objects.sort_unstable();
        objects.dedup();
        scanned.push(Scanned {
            key,
            entry_bytes: entry_bytes as u64,
            objects,
            usage,
            read: true,
        });
    }
    gone.extend(usages.into_keys());

    // 2. Objects, their sizes and how many entries use each.
    let mut object_size: HashMap<Digest, (u64, Duration, PathBuf)> = HashMap::new();
    let object_files = files_in_shards(&root.join("objects"));
    let mut bar = Progress::new(
        if options.verify {
            recorded_size.values().sum()
        } else {
            0
        },
        "gc: verifying",
    );
    // Damaged objects removed here were part of the cache's size before gc: counted, so
    // that what gc says it freed includes them.
    let mut damaged_bytes = 0;
    for (name, path) in object_files {
        let (Ok(digest), Ok(meta)) = (name.parse::<Digest>(), fs::symlink_metadata(&path)) else {
            continue;
        };
        if !meta.is_file() {
            // A FIFO, socket or symlink planted as an object: damage, whatever the entry.
            report.damaged_objects.push(digest);
            if !options.dry_run {
                let _ = crate::fsutil::remove_planted(&path);
            }
            continue;
        }
        if options.verify {
            // Raw or compressed: the store reads its own objects.
            let recorded = recorded_size.get(&digest).copied();
            if !cache
                .store
                .verify_object_file(&digest, recorded, &path, &mut bar)
            {
                report.damaged_objects.push(digest);
                damaged_bytes += meta.len();
                if !options.dry_run {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
        }
        object_size.insert(digest, (meta.len(), age_of(&meta, started), path));
    }
    drop(bar);
    let damaged: HashSet<Digest> = report.damaged_objects.iter().copied().collect();
    let mut refs: HashMap<Digest, u32> = HashMap::new();
    for s in &scanned {
        for d in &s.objects {
            *refs.entry(*d).or_default() += 1;
        }
    }
    let size_of = |d: &Digest| object_size.get(d).map_or(0, |o| o.0);
    let mut total: u64 = scanned.iter().map(|s| s.entry_bytes).sum::<u64>()
        + object_size.values().map(|o| o.0).sum::<u64>();
    // Objects of replaced entries (`note_replaced`) that no entry uses: they go now, not
    // after the grace period, and do not count against the results that are kept.
    let dead: HashSet<Digest> = take_dead_list(root, options.dry_run)
        .into_iter()
        .filter(|d| !refs.contains_key(d) && object_size.contains_key(d))
        .collect();
    // The digest table counts in full. It is the cheapest thing in the cache to rebuild
    // (a record spares one re-hash of a file), so past the limit it goes before any result.
    let digests_dir = root.join("digests");
    let table = digest_cache::trim_table(&digests_dir, DIGEST_RECORD_AGE, false, options.dry_run);
    report.entries_before = scanned.len() as u64;
    report.bytes_before = total + table.bytes_before + damaged_bytes;
    total += table.kept_bytes;
    for d in &dead {
        report.orphans += 1;
        report.orphan_bytes += size_of(d);
        total = total.saturating_sub(size_of(d));
    }
    let drop_table = table.kept_bytes > 0 && options.max_size.is_some_and(|max| total > max);
    if drop_table {
        total -= table.kept_bytes;
    }

    // 3. Choose what goes: too old first, then lowest priority until under the limit.
    for s in &mut scanned {
        let shared: f64 = s
            .objects
            .iter()
            .map(|d| size_of(d) as f64 / refs[d].max(1) as f64)
            .sum();
        s.usage.size = s.entry_bytes + shared as u64;
    }
    // Sorted by reference: a record is large to move.
    let mut order: Vec<(f64, usize)> = scanned
        .iter()
        .enumerate()
        .map(|(i, s)| (s.usage.priority(), i))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let now = now_ms();
    let mut clock = cache::read_clock(root);
    let mut keep = Vec::new();
    let mut freed_objects: HashSet<Digest> = HashSet::new();
    let mut evict = |s: &Scanned, reason: &'static str, total: &mut u64, report: &mut Report| {
        let mut size = s.entry_bytes;
        for d in &s.objects {
            let r = refs.get_mut(d).expect("counted above");
            *r -= 1;
            if *r == 0 && freed_objects.insert(*d) {
                size += size_of(d);
            }
        }
        *total = total.saturating_sub(size);
        report.removed.push(Removed {
            key: s.key,
            command: s.usage.command.clone(),
            size,
            reason,
        });
    };
    let too_old = |s: &Scanned| {
        options.max_age.is_some_and(|age| {
            now.saturating_sub(s.usage.last_access_ms.max(s.usage.created_ms))
                > age.as_millis() as u64
        })
    };
    for s in order.iter().map(|&(_, i)| &scanned[i]) {
        if s.objects.iter().any(|d| damaged.contains(d)) {
            evict(s, "refers to a damaged object", &mut total, &mut report);
        } else if too_old(s) {
            evict(s, "older than --max-age", &mut total, &mut report);
        } else {
            keep.push(s);
        }
    }
    let mut kept = Vec::new();
    for s in keep {
        if options.max_size.is_some_and(|max| total > max) {
            clock = clock.max(s.usage.priority());
            evict(s, "over the size limit", &mut total, &mut report);
        } else {
            kept.push(s);
        }
    }

    // An entry kept on the summary's word is looked at now (its size, on two threads;
    // one that goes is removed whatever its state): one whose file no longer has the
    // size it was stored with is read, and removed if it is damaged. A dry run trusts
    // the summary (a damaged entry is found by the next gc, or by a hit).
    let mut referenced: HashSet<Digest> = HashSet::new();
    if !options.dry_run {
        let unread: Vec<Digest> = kept.iter().filter(|s| !s.read).map(|s| s.key).collect();
        let sizes = unread.iter().map(|key| stored.get(key).copied());
        let mut damaged_kept: HashSet<Digest> = HashSet::new();
        for (s, size) in kept.iter().filter(|s| !s.read).zip(sizes) {
            if size == Some(s.entry_bytes) {
                continue;
            }
            match read_entry(&s.key).map(|(entry, _)| entry) {
                // Replaced since the summary was written (its objects are kept).
                Some(entry) => referenced.extend(
                    entry
                        .blobs()
                        .filter(|b| b.inline.is_none())
                        .map(|b| b.digest),
                ),
                None => {
                    damaged_kept.insert(s.key);
                    gone.insert(s.key);
                    report.corrupt.push(s.key);
                    total = total.saturating_sub(s.entry_bytes);
                    let _ = cache.remove_result(&s.key);
                }
            }
        }
        kept.retain(|s| !damaged_kept.contains(&s.key));
    }

    // 4. Orphans: unreferenced objects, once past the grace period (or just freed above,
    // unless rewritten since this gc started).
    referenced.extend(kept.iter().flat_map(|s| s.objects.iter().copied()));
    let mut orphan_paths = Vec::new();
    for (digest, (size, age, path)) in &object_size {
        if referenced.contains(digest) {
            continue;
        }
        if dead.contains(digest) || freed_objects.contains(digest) {
            // A replaced entry's (counted above), or its last entry goes now: kept only
            // if rewritten since gc began, which means a new entry is about to refer to
            // it. (A memo storing these very bytes right now may instead have reused the
            // object as it was: its entry then lacks the object, which is a miss and a
            // rerun, never a wrong replay.)
            if !fs::metadata(path).is_ok_and(|m| changed_at(&m) >= started) {
                orphan_paths.push(path.clone());
            }
        } else if *age >= grace {
            report.orphans += 1;
            report.orphan_bytes += size;
            total = total.saturating_sub(*size);
            orphan_paths.push(path.clone());
        }
    }
    report.entries_after = kept.len() as u64;
    report.bytes_after = total;
    if options.dry_run {
        return Ok(Some(report));
    }

    // 5. Do it.
    let orphan_sizes: Vec<u64> = orphan_paths
        .iter()
        .map(|p| fs::symlink_metadata(p).map_or(0, |m| m.len()))
        .collect();
    // The bytes go with the objects; an entry's own file is small.
    let mut bar = Progress::new(orphan_sizes.iter().sum(), "gc: evicting");
    // Logged all at once, a few lines to a write, and folded at the end.
    let mut evicted = Vec::with_capacity(report.removed.len());
    let keys: Vec<Digest> = report.removed.iter().map(|removed| removed.key).collect();
    cache.store.evict_entries(&keys);
    for removed in &report.removed {
        let mut event = Event::new(Kind::Evict);
        event.key = Some(removed.key.to_hex());
        event.command = Some(removed.command.clone());
        event.size = Some(removed.size);
        event.message = Some(removed.reason.to_string());
        event.counts = Some(Counters::default());
        evicted.push(event);
    }
    if !evicted.is_empty() {
        let _ = cache.log.append_all(&evicted);
    }
    for (path, size) in orphan_paths.iter().zip(orphan_sizes) {
        let _ = fs::remove_file(path);
        bar.advance(size);
    }
    drop(bar);
    // The records of entries that are gone (evicted above, which the journal says, or
    // removed without a record in it, or corrupt) leave the summary; one stored since
    // gc listed the entries stays.
    let still = cache.store.entry_sizes();
    let _ = crate::index::summary::fold_and_bound(root, &cache.log, |summary| {
        for key in &gone {
            if !still.contains_key(key) {
                summary.usage.remove(key);
            }
        }
    });
    report.temp_files = sweep_staging(&root.join("tmp"), grace, started);
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if crate::fsutil::left_by_dead_process(name, TRASH_PREFIX) {
            let _ = remove_path(&entry.path());
        }
        // Left by a write_file_atomic (the clock) that was killed before its rename.
        let stray = name.starts_with(".tmp")
            && crate::fsutil::is_memo_cache()
            && entry
                .metadata()
                .is_ok_and(|m| age_of(&m, started) > TEMP_GRACE);
        if stray {
            let _ = fs::remove_file(entry.path());
        }
    }
    if drop_table {
        digest_cache::trim_table(&digests_dir, DIGEST_RECORD_AGE, true, false);
    }
    let _ = remove_path(&root.join(DEAD_LIST_TAKEN));
    let clock_path = cache::clock_path(root);
    crate::fsutil::write_file_atomic(&clock_path, format!("{clock}\n").as_bytes())
        .map_err(|e| naming(&clock_path, e))?;
    let _ = cache.stats.add(&Counters {
        evictions: report.removed.len() as i64,
        corrupt: (report.corrupt.len() + report.damaged_objects.len()) as i64,
        ..Default::default()
    });
    let _ = cache
        .stats
        .set_content(report.entries_after as i64, report.bytes_after as i64);
    if !options.dry_run {
        sweep_manifests(root);
    }
    Ok(Some(report))
}

/// The list of objects that replaced entries left (see `note_replaced`).
const DEAD_LIST: &str = "dead-objects";
/// The list while gc works on it: appends that come meanwhile go to a new `DEAD_LIST`.
const DEAD_LIST_TAKEN: &str = "dead-objects.gc";

/// Before the entry under `key` is replaced by `new` (`--force`, a refresh, a rerun of
/// an expired result): lists the objects of the old entry that `new` does not use, so
/// that gc deletes them at once instead of keeping them for the grace period while it
/// evicts live results. Best effort: a lost note only delays their removal.
pub fn note_replaced(cache: &Cache, key: &Digest, new: &Entry) {
    let used: HashSet<Digest> = new
        .blobs()
        .filter(|b| b.inline.is_none())
        .map(|b| b.digest)
        .collect();
    note_dead(cache, key, &used);
}

/// Before the entry under `key` is removed (`memo rm`): lists its objects, as
/// `note_replaced` does, so that the next gc deletes them instead of keeping them while
/// it evicts live results. An object another entry still uses is kept by gc all the same.
pub fn note_removed(cache: &Cache, key: &Digest) {
    note_dead(cache, key, &HashSet::new());
}

/// Appends the objects of the entry under `key`, but those in `used`, to the dead list.
fn note_dead(cache: &Cache, key: &Digest, used: &HashSet<Digest>) {
    use std::io::Write;
    let Ok(Some(bytes)) = cache.store.get_entry(key) else {
        return;
    };
    let Ok(old) = Entry::decode(&bytes) else {
        return;
    };
    let mut lines = String::new();
    for blob in old.blobs().filter(|b| b.inline.is_none()) {
        if !used.contains(&blob.digest) {
            lines.push_str(&format!("{}\n", blob.digest));
        }
    }
    if lines.is_empty() {
        return;
    }
    // One write on an O_APPEND file: notes from concurrent memos never interleave.
    let path = cache.root().join(DEAD_LIST);
    if let Ok((mut file, _)) = crate::fsutil::open_or_replace(&path, Access::Append) {
        let _ = crate::fsutil::share(&file);
        let _ = file.write_all(lines.as_bytes());
    }
}

/// The digests on the dead list. Unless `dry_run`, the list is taken (renamed aside, and
/// removed when gc is done), so each note is acted on once.
fn take_dead_list(root: &Path, dry_run: bool) -> Vec<Digest> {
    let taken = root.join(DEAD_LIST_TAKEN);
    let path = if dry_run {
        root.join(DEAD_LIST)
    } else {
        // Anything but a file in its place is damage, which would keep the list from
        // ever being taken again.
        let _ = crate::fsutil::remove_planted(&taken);
        // A list a killed gc had taken is worked on first; newer notes wait their turn.
        if fs::symlink_metadata(&taken).is_err() {
            let _ = fs::rename(root.join(DEAD_LIST), &taken);
        }
        taken
    };
    // A FIFO or device planted as the list reads as an empty list (and is removed).
    let text = read_regular(&path, DEAD_LIST_MAX).unwrap_or_default();
    text.split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok()?.parse().ok())
        .collect()
}

/// A dead list longer than this is read in part (the rest waits for the grace period).
const DEAD_LIST_MAX: u64 = 16 * 1024 * 1024;

/// Whether the writer of the staging file at `path` is gone: its lock can be taken (the
/// store locks each staging file while it writes, and a dead writer's lock is gone), or
/// it is no staging file at all (a FIFO, a socket: nothing memo wrote). `None` when that
/// cannot be told (no locking here, another user's file).
fn writer_gone(path: &Path) -> Option<bool> {
    match open_regular(path, Access::Read).and_then(|f| fs2::FileExt::try_lock_exclusive(&f)) {
        Ok(()) => Some(true),
        Err(e) if crate::lock::is_contended(&e) => Some(false),
        Err(e) if crate::fsutil::is_not_regular(&e) => Some(true),
        Err(_) => None,
    }
}

/// Removes the staging files (`tmp/stage-<pid>-…`) whose writer is gone: its process no
/// longer exists and the file's lock is free. Cheap enough for a call about to download
/// into `tmp/`, so that a download killed with -9 leaves its bytes only until the next.
/// Removes the manifests of traced calls (`--trace`) none of whose runs is stored any
/// more: gc evicts runs as entries, and a manifest is only a list of their keys.
fn sweep_manifests(root: &Path) {
    let stored = crate::store::local::stored_entries(root);
    for (name, path) in files_in_shards(&root.join("manifests")) {
        let Ok(key) = name.parse::<Digest>() else {
            continue;
        };
        let manifest = crate::traced::Manifest::read(root, &key);
        let live = manifest.runs.iter().any(|run| stored.contains_key(run));
        if !live {
            let _ = fs::remove_file(&path);
        }
    }
}

pub fn sweep_dead_staging(root: &Path) {
    let dir = root.join("tmp");
    let Ok(files) = fs::read_dir(&dir) else {
        return;
    };
    for file in files.flatten() {
        let name = file.file_name();
        let Some(name) = name.to_str() else { continue };
        if !crate::fsutil::left_by_dead_process(name, "stage-") {
            continue;
        }
        if writer_gone(&file.path()) == Some(true) {
            let _ = fs::remove_file(file.path());
        }
    }
}

/// Removes the staging files in `dir` that their writer left: untouched for `grace` and
/// not locked (the store locks each while it writes; a dead writer's lock is gone). A
/// file that cannot be checked (no locking, or another user's) goes after `TEMP_GRACE`.
/// Returns how many went.
fn sweep_staging(dir: &Path, grace: Duration, now: SystemTime) -> u64 {
    let mut removed = 0;
    if !crate::fsutil::is_real_dir(dir) {
        return 0;
    }
    let Ok(files) = fs::read_dir(dir) else {
        return 0;
    };
    let own_dir = crate::fsutil::is_memo_cache();
    for file in files.flatten() {
        // The store names its staging files `stage-<pid>-…`; in a cache directory that
        // may not be memo's, nothing else is touched.
        if !own_dir && !file.file_name().to_string_lossy().starts_with("stage-") {
            continue;
        }
        let Ok(meta) = file.metadata() else { continue };
        let age = age_of(&meta, now);
        if age <= grace {
            continue;
        }
        let abandoned = writer_gone(&file.path()).unwrap_or(age > TEMP_GRACE);
        if abandoned && fs::remove_file(file.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// `memo clear`: removes every entry and object; the counters of past activity and the
/// event log stay.
pub fn clear(cache: &Cache) -> std::io::Result<(u64, u64)> {
    let root = cache.root();
    // Nothing stored, nothing to clear, whoever the directory belongs to. This is also
    // a cache another memo is creating right now: its tag is not written yet, and a clear
    // racing its first run must not fail.
    if ["entries", crate::store::packs::DIR, "objects"]
        .iter()
        .all(|sub| !holds_anything(&root.join(sub)))
    {
        return Ok((0, 0));
    }
    if !crate::fsutil::is_memo_cache() {
        return Err(std::io::Error::other(format!(
            "'{}' does not look like memo's cache (no {} and other files in it); nothing was removed: \
             remove what you want by hand",
            cache.root().display(),
            crate::fsutil::CACHEDIR_TAG
        )));
    }
    let _lock = Lock::wait(&cache.locks_dir(), "gc")?;
    let before = cache.counters();
    for sub in [
        "entries",
        crate::store::packs::DIR,
        "manifests",
        "objects",
        "usage",
        "digests",
        "tmp",
    ] {
        // Renamed away first (atomic), so a memo storing right now writes into a fresh
        // empty directory instead of racing the deletion ("directory not empty").
        let dir = root.join(sub);
        let trash = root.join(format!("{TRASH_PREFIX}{}-{sub}", std::process::id()));
        match fs::rename(&dir, &trash) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(naming(&dir, e)),
            _ => {}
        }
        crate::fsutil::create_private_dir_all(&dir).map_err(|e| naming(&dir, e))?;
        let _ = remove_path(&trash);
    }
    let _ = fs::remove_file(cache::clock_path(root));
    let _ = fs::remove_file(root.join(DEAD_LIST));
    let stats_dir = root.join("stats");
    cache
        .stats
        .set_content(0, 0)
        .map_err(|e| naming(&stats_dir, e))?;
    let mut event = Event::new(Kind::Clear);
    event.size = Some(before.bytes.max(0) as u64);
    event.counts = Some(Counters::default());
    cache.append(&event);
    Ok((before.entries.max(0) as u64, before.bytes.max(0) as u64))
}

/// Whether `dir` holds a file, directly or in one of its subdirectories (a shard).
fn holds_anything(dir: &Path) -> bool {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|item| {
            !item.file_type().is_ok_and(|t| t.is_dir())
                || fs::read_dir(item.path()).is_ok_and(|mut inside| inside.next().is_some())
        })
}

/// `e` with the path it is about in front, unless it names it already: "Permission
/// denied" alone does not say which file to fix.
fn naming(path: &Path, e: std::io::Error) -> std::io::Error {
    let shown = path.display().to_string();
    if e.to_string().contains(&shown) {
        return e;
    }
    std::io::Error::new(e.kind(), format!("{shown}: {e}"))
}

/// After a store of `added` bytes under `key`: when the cache has grown past `max_size`,
/// start a background gc that trims it to `AUTO_TARGET` of the limit. The user's command
/// does not wait for it.
///
/// Reading the cache's size opens the sixteen stats shards, the largest cost of a small
/// store after the command itself. So a store that added less than 1/256 of the limit
/// looks only for one key in eight (by the key's first byte): the cache may pass its
/// limit by the small stores in between, on average eight of under 1/256 of it each
/// (about 3 %), until a store that looks starts the trim.
pub fn trim_in_background_if_needed(cache: &Cache, max_size: u64, key: &Digest, added: u64) {
    if added.saturating_mul(256) < max_size && !key.0[0].is_multiple_of(8) {
        return;
    }
    let total = cache.stats.total();
    if total.bytes <= max_size as i64 {
        return;
    }
    let target = (max_size as f64 * AUTO_TARGET) as u64;
    let args: Vec<OsString> = vec![
        "gc".into(),
        "--auto".into(),
        "--max-size".into(),
        target.to_string().into(),
    ];
    let _ = cache.spawn_detached(&args);
}
