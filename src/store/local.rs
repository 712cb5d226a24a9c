//! The local store: a private directory on this machine.
//!
//! Layout (docs/format.md): `entries/ab/<key>` and `objects/ab/<digest>`, sharded by the
//! first two hex digits (an object raw or zstd-compressed, as `compression` decides); `tmp/` for files being written, always renamed into place so a
//! crash never leaves a half-written file visible; `digests/` for the digest cache.
//!
//! Nothing is fsynced: a process crash cannot tear a renamed file, and what a power loss
//! might tear is caught on read (entries carry a checksum, objects are checked against
//! their digest) and treated as a miss.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::compression::{self, Layout};
use super::packs::{self, Got, Packs};
use super::{Object, Store, StoreError};
use crate::digest::Digest;
use crate::digest_cache::DigestCache;
use crate::fsutil::{
    create_private_dir_all, is_not_regular, open_regular, read_regular_whole, remove_planted,
    share, Access,
};

/// An existing object changed more recently than this is reused as it is; an older one
/// is rewritten. Must stay well below gc's `ORPHAN_GRACE`.
pub const REFRESH_AGE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn changed_within(meta: &fs::Metadata, age: std::time::Duration) -> bool {
    std::time::SystemTime::now()
        .duration_since(crate::fsutil::changed_time(meta))
        .is_ok_and(|d| d < age)
}

pub use super::packs::MAX_ENTRY_BYTES;

pub struct LocalStore {
    root: PathBuf,
    digests: DigestCache,
    packs: Packs,
    /// Whether `entries/` (an earlier memo's entry files) exists, once asked.
    legacy: std::sync::OnceLock<bool>,
}

impl LocalStore {
    /// Opens the store at `root`, creating it (0700) if needed. Its subdirectories are
    /// created when first written to, which keeps a hit's system calls few.
    pub fn open(root: &Path) -> Result<LocalStore, StoreError> {
        crate::fsutil::create_cache_root(root)
            .map_err(|e| StoreError::io("cannot create", root, e))?;
        crate::fsutil::set_cache_root(root);
        Ok(LocalStore {
            root: root.to_path_buf(),
            digests: DigestCache::new(Some(root.join("digests"))),
            packs: Packs::new(root),
            legacy: std::sync::OnceLock::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn digest_cache(&self) -> &DigestCache {
        &self.digests
    }

    fn sharded(&self, kind: &str, digest: &Digest) -> PathBuf {
        crate::fsutil::sharded_path(&self.root.join(kind), digest)
    }

    /// Where an earlier memo kept the entry of `key`, as a file of its own: still read
    /// (after the packs), moved into the packs by gc.
    pub fn entry_path(&self, key: &Digest) -> PathBuf {
        self.sharded("entries", key)
    }

    pub fn packs(&self) -> &Packs {
        &self.packs
    }

    fn packs_dir(&self) -> PathBuf {
        self.root.join(packs::DIR)
    }

    /// The size of the entry stored under `key`, and whether it is an earlier memo's
    /// entry file; `None` when there is none. Its bytes are not read.
    pub fn entry_size(&self, key: &Digest) -> Option<(u64, bool)> {
        match self.packs.slot(key) {
            Ok(Some(slot)) if slot.removed() => None,
            Ok(Some(slot)) => Some((u64::from(slot.len), false)),
            _ if !self.has_entry_files() => None,
            _ => fs::symlink_metadata(self.entry_path(key))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| (m.len(), true)),
        }
    }

    /// Whether the cache has an earlier memo's `entries/` (looked at once per process:
    /// a miss in a cache without it asks for no entry file).
    fn has_entry_files(&self) -> bool {
        *self
            .legacy
            .get_or_init(|| fs::symlink_metadata(self.root.join("entries")).is_ok())
    }

    /// Removes the entry stored under `key`: a tombstone in its pack, or an earlier
    /// memo's file removed. Whether there was one to remove.
    pub fn remove_stored(&self, key: &Digest) -> Result<bool, StoreError> {
        let Some((_, legacy)) = self.entry_size(key) else {
            return Ok(false);
        };
        if legacy {
            let path = self.entry_path(key);
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(StoreError::io("cannot remove", path, e))
                }
                _ => Ok(true),
            };
        }
        self.packs
            .append(key, None)
            .map(|_| true)
            .map_err(|e| StoreError::io("cannot write", self.packs_dir(), e))
    }

    /// Whether an entry is stored under `key` (its bytes are not read).
    pub fn has_entry(&self, key: &Digest) -> bool {
        self.entry_size(key).is_some()
    }

    /// Removes the entries of `keys` (gc's evictions): each pack that holds one is
    /// rewritten once, without them; so is a pack that is more than half superseded or
    /// removed records (past `REWRITE_WASTE`), and one that holds no live record. An
    /// earlier memo's entry files of `keys` are removed.
    pub fn evict_entries(&self, keys: &[Digest]) {
        let mut by_shard: HashMap<u8, HashSet<Digest>> = HashMap::new();
        for key in keys {
            by_shard.entry(key.0[0]).or_default().insert(*key);
        }
        let stage = || stage_in(&self.root).map_err(io::Error::other);
        let mut existing = HashSet::new();
        for (shard, on_disk, live) in self.packs.usage() {
            existing.insert(shard);
            let wasted = on_disk.saturating_sub(live);
            if live == 0 || (wasted > live && wasted > packs::REWRITE_WASTE) {
                by_shard.entry(shard).or_default();
            }
        }
        for (shard, evict) in by_shard.iter().filter(|(s, _)| existing.contains(*s)) {
            if self.packs.rewrite(*shard, evict, &stage).is_err() {
                // No room to stage the rewrite, or its lock held for good: the evicted
                // keys get tombstones instead (their records go at a later rewrite).
                for key in evict {
                    let _ = self.packs.append(key, None);
                }
            }
        }
        if crate::fsutil::is_real_dir(&self.root.join("entries")) {
            for key in keys {
                let _ = fs::remove_file(self.entry_path(key));
            }
        }
    }

    /// Moves an earlier memo's entry files (`entries/ab/<key>` that start with memo's
    /// entry header) into the packs, as they are (a damaged one is found when it is
    /// read); one a pack already names is removed. The emptied directories go. Only in a
    /// directory that is memo's cache: a user's files are never moved.
    pub fn migrate_entry_files(&self) {
        let dir = self.root.join("entries");
        if !crate::fsutil::is_real_dir(&dir) || !crate::fsutil::is_memo_cache() {
            return;
        }
        for key in crate::fsutil::digests_in_shards(&dir) {
            let path = self.entry_path(&key);
            let moved = match self.packs.slot(&key) {
                Ok(Some(_)) => true,
                Ok(None) => match read_regular_whole(&path, MAX_ENTRY_BYTES) {
                    Ok(bytes) if !bytes.starts_with(b"memo-entry ") => false,
                    // A slot made since (a store of this key) wins: then the file just goes.
                    Ok(bytes) => self.packs.append_if_absent(&key, &bytes).is_ok(),
                    // Damage (a FIFO, a giant file) stays for gc's reading of the
                    // entries, which reports it as corrupt and removes it.
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if moved {
                let _ = fs::remove_file(&path);
            }
        }
        for shard in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = fs::remove_dir(shard.path());
        }
        let _ = fs::remove_dir(&dir);
    }

    /// Every stored entry's key and size (`stored_entries`).
    pub fn entry_sizes(&self) -> HashMap<Digest, u64> {
        stored_entries(&self.root)
    }

    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        self.sharded("objects", digest)
    }

    /// Whether an object of this size is stored under `digest` (by its length and, for
    /// a compressed one, its first bytes: its contents are checked when it is opened).
    pub fn has_object(&self, digest: &Digest, size: u64) -> bool {
        let path = self.object_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == size => true,
            Ok(m) if m.is_file() && m.len() < size => open_regular(&path, Access::Read)
                .and_then(|f| compression::layout_of(&f, m.len(), size))
                .is_ok_and(|layout| layout == Layout::Compressed),
            _ => false,
        }
    }

    /// Remembers what `verify_object_file` found the object `file` to hold; a dry run
    /// (`gc --dry-run --verify`) records nothing.
    fn record_verified(&self, file: &File, recorded: Digest) {
        if packs::may_change() {
            self.digests.record_written(file, recorded);
        }
    }

    /// Whether the object file at `path` holds the raw bytes named `digest` (and
    /// `recorded_size` of them, when an entry records it), raw or compressed, read in
    /// full through `progress`: for `gc --verify`, which distrusts the digest cache.
    pub fn verify_object_file(
        &self,
        digest: &Digest,
        recorded_size: Option<u64>,
        path: &Path,
        progress: &mut crate::progress::Progress,
    ) -> bool {
        let Ok(file) = open_regular(path, Access::Read) else {
            return false;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return false;
        };
        let compressed = match recorded_size {
            Some(size) => match compression::layout_of(&file, len, size) {
                Ok(Layout::Raw) => false,
                Ok(Layout::Compressed) => true,
                _ => return false,
            },
            // An orphan: raw if its bytes hash to its name, else perhaps compressed.
            None => match Digest::of_reader(progress.reader(&file)) {
                Ok((actual, _)) if actual == *digest => {
                    self.record_verified(&file, actual);
                    return true;
                }
                _ => compression::layout_of(&file, len, u64::MAX)
                    .is_ok_and(|l| l == Layout::Compressed),
            },
        };
        let found = if compressed {
            compression::digest_compressed(&file, progress)
        } else {
            Digest::of_reader(progress.reader(&file))
        };
        match found {
            Ok((actual, size)) if actual == *digest && recorded_size.is_none_or(|s| s == size) => {
                let recorded = if compressed {
                    compression::verified_tag(digest)
                } else {
                    actual
                };
                self.record_verified(&file, recorded);
                true
            }
            _ => false,
        }
    }

    /// The staged raw object, or a compressed copy of it when that is worth keeping
    /// instead (then `true`). Compressing is best effort: where it fails (a full disk),
    /// the raw bytes are stored.
    fn compressed(&self, staged: NamedTempFile) -> (NamedTempFile, bool) {
        let Ok(size) = staged.as_file().metadata().map(|m| m.len()) else {
            return (staged, false);
        };
        if !compression::is_worth_compressing(staged.as_file(), size).unwrap_or(false) {
            return (staged, false);
        }
        let Ok(mut copy) = self.stage() else {
            return (staged, false);
        };
        match compression::compress(staged.as_file(), size, copy.as_file_mut()) {
            Ok(Some(_)) => (copy, true),
            _ => (staged, false),
        }
    }

    fn persist(&self, staged: NamedTempFile, dest: &Path) -> Result<File, StoreError> {
        let dir = dest.parent().expect("sharded path has a parent");
        create_private_dir_all(dir).map_err(|e| StoreError::io("cannot create", dir, e))?;
        share(staged.as_file())
            .map_err(|e| StoreError::io("cannot set the mode of", staged.path(), e))?;
        crate::fsutil::persist_replacing(staged, dest)
            .map_err(|e| StoreError::io("cannot write", dest, e))
    }
}

impl Store for LocalStore {
    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        match self.packs.get(key) {
            Ok(Got::Record(bytes)) => return Ok(Some(bytes)),
            Ok(Got::Removed) => return Ok(None),
            Ok(Got::Absent) => {}
            Ok(Got::Damaged) => {
                if packs::may_change() {
                    let _ = self.packs.remove_if_damaged(key);
                }
                return Err(StoreError::DamagedEntry { key: key.short() });
            }
            Err(e) => return Err(StoreError::io("cannot read", self.packs_dir(), e)),
        }
        // An entry file of an earlier memo (gc moves them into the packs).
        if !self.has_entry_files() {
            return Ok(None);
        }
        let path = self.entry_path(key);
        match read_regular_whole(&path, MAX_ENTRY_BYTES) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                // No entry memo writes comes near the limit: damage (or a giant sparse
                // file planted here), which is not worth reading.
                if packs::may_change() {
                    let _ = fs::remove_file(&path);
                }
                Err(StoreError::OversizedEntry { path })
            }
            Err(e) if is_not_regular(&e) => {
                // A FIFO or device where the entry should be: it is damage, and in the
                // way of the next store, so it goes now.
                if packs::may_change() {
                    let _ = remove_planted(&path);
                }
                Err(StoreError::NotRegular { path })
            }
            Err(e) => Err(StoreError::io("cannot read", path, e)),
        }
    }

    fn put_entry(&self, key: &Digest, bytes: &[u8]) -> Result<Option<u64>, StoreError> {
        let previous = self.entry_size(key);
        self.packs
            .append(key, Some(bytes))
            .map_err(|e| StoreError::io("cannot write", self.packs_dir(), e))?;
        if previous.is_some_and(|(_, legacy)| legacy) {
            let _ = fs::remove_file(self.entry_path(key));
        }
        Ok(previous.map(|(size, _)| size))
    }

    fn remove_entry(&self, key: &Digest) -> Result<(), StoreError> {
        self.remove_stored(key).map(|_| ())
    }

    fn stage(&self) -> Result<NamedTempFile, StoreError> {
        stage_in(&self.root)
    }

    fn put_object(
        &self,
        digest: &Digest,
        staged: NamedTempFile,
    ) -> Result<Option<u64>, StoreError> {
        let path = self.object_path(digest);
        // Content-addressed: an object already there holds these very bytes. If it
        // changed recently, gc's grace period protects it until the entry that refers
        // to it is written, and the copy is dropped before it ever reaches the disk.
        // An older one is replaced by the fresh copy, whose new ctime restarts that
        // grace period (and which repairs a copy damaged unnoticed).
        let existing = fs::symlink_metadata(&path).ok();
        if existing
            .as_ref()
            .is_some_and(|m| m.is_file() && changed_within(m, REFRESH_AGE))
        {
            return Ok(None);
        }
        let (staged, compressed) = self.compressed(staged);
        let file = self.persist(staged, &path)?;
        let recorded = if compressed {
            compression::verified_tag(digest)
        } else {
            *digest
        };
        self.digests.record_written(&file, recorded);
        if existing.is_some_and(|m| m.is_file()) {
            return Ok(None);
        }
        Ok(Some(file.metadata().map_or(0, |m| m.len())))
    }

    fn open_object(&self, digest: &Digest, size: u64) -> Result<Object, StoreError> {
        let path = self.object_path(digest);
        let mut file = match open_regular(&path, Access::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingObject {
                    digest: digest.to_hex(),
                })
            }
            Err(e) if is_not_regular(&e) => {
                let _ = remove_planted(&path);
                return Err(StoreError::CorruptObject {
                    digest: digest.to_hex(),
                });
            }
            Err(e) => return Err(StoreError::io("cannot read", path, e)),
        };
        let corrupt = |file: &File| {
            remove_if_same(&path, file);
            Err(StoreError::CorruptObject {
                digest: digest.to_hex(),
            })
        };
        // Checked before hashing: a giant planted here (a sparse file of many gigabytes)
        // would otherwise be read in full on every call.
        let found = file
            .metadata()
            .map_err(|e| StoreError::io("cannot read", &path, e))?
            .len();
        match compression::layout_of(&file, found, size)
            .map_err(|e| StoreError::io("cannot read", &path, e))?
        {
            Layout::Raw => {}
            Layout::Damaged => return corrupt(&file),
            Layout::Compressed => {
                // Verified once (the digest cache then vouches for this very file), by
                // decompressing it in full: nothing is replayed before that.
                let tag = compression::verified_tag(digest);
                if self.digests.recorded(&file) != Some(tag) {
                    let mut progress = crate::progress::Progress::new(size, "verifying");
                    match compression::digest_compressed(&file, &mut progress) {
                        Ok(found) if found == (*digest, size) => {
                            self.digests.record_written(&file, tag)
                        }
                        _ => return corrupt(&file),
                    }
                }
                let decoder = compression::decoder(file)
                    .map_err(|e| StoreError::io("cannot read", &path, e))?;
                return Ok(Object::Compressed(Box::new(decoder)));
            }
        }
        let (actual, _) = self
            .digests
            .digest_file(&mut file)
            .map_err(|e| StoreError::io("cannot read", &path, e))?;
        if actual != *digest {
            return corrupt(&file);
        }
        Ok(Object::Raw(file))
    }
}

/// Every entry stored in the cache at `root`, with its size: the packs' and the entry
/// files of an earlier memo that no slot of a pack hides. Reads the packs' tables, not
/// the records, and creates nothing.
pub fn stored_entries(root: &Path) -> HashMap<Digest, u64> {
    let mut found = HashMap::new();
    // Keys with a slot, tombstones included: a slot hides an earlier memo's file.
    let mut slotted = HashSet::new();
    for (slot, live) in Packs::new(root).slots() {
        slotted.insert(slot.key);
        if live {
            found.insert(slot.key, u64::from(slot.len));
        }
    }
    for key in crate::fsutil::digests_in_shards(&root.join("entries")) {
        if slotted.contains(&key) {
            continue;
        }
        let path = crate::fsutil::sharded_path(&root.join("entries"), &key);
        if let Some(meta) = fs::symlink_metadata(path).ok().filter(|m| m.is_file()) {
            found.insert(key, meta.len());
        }
    }
    found
}

/// A staging file in the store at `root` (`tmp/`), as `Store::stage` makes it: a free
/// function, for the threads that stage a command's output while it runs.
pub fn stage_in(root: &Path) -> Result<NamedTempFile, StoreError> {
    let dir = root.join("tmp");
    // The pid in the name says, to a person, who is writing it.
    let prefix = format!("stage-{}-", std::process::id());
    // Checked every time: a symlink planted as tmp/ must not receive the bytes.
    let staged = create_private_dir_all(&dir)
        .and_then(|_| tempfile::Builder::new().prefix(&prefix).tempfile_in(&dir))
        .map_err(|e| StoreError::io("cannot create a file in", dir.clone(), e))?;
    // Held until the file is renamed into the store or dropped: gc sweeps a staging
    // file only when it can take this lock, that is once its writer is gone (the
    // kernel drops the lock however the writer dies). Best effort: where locking
    // fails, gc falls back to the file's age.
    let _ = fs2::FileExt::try_lock_exclusive(staged.as_file());
    Ok(staged)
}

/// Removes the damaged object at `path` if `path` still names the file that was found
/// damaged: a good copy renamed into place meanwhile by another memo must stay.
fn remove_if_same(path: &Path, opened: &File) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(now), Ok(seen)) = (fs::symlink_metadata(path), opened.metadata()) else {
        return;
    };
    if now.dev() == seen.dev() && now.ino() == seen.ino() {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("cache")).unwrap();
        (dir, store)
    }

    fn put(store: &LocalStore, bytes: &[u8]) -> Digest {
        let mut staged = store.stage().unwrap();
        staged.write_all(bytes).unwrap();
        let digest = Digest::of_bytes(bytes);
        store.put_object(&digest, staged).unwrap();
        digest
    }

    #[test]
    fn objects_round_trip_and_are_stored_once() {
        let (_dir, store) = store();
        let a = put(&store, b"same");
        let b = put(&store, b"same");
        assert_eq!(a, b);
        let mut text = String::new();
        store
            .open_object(&a, 4)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "same");
        let shard = store.object_path(&a).parent().unwrap().to_path_buf();
        assert_eq!(fs::read_dir(shard).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_object_is_refused_and_removed() {
        let (_dir, store) = store();
        let d = put(&store, b"payload");
        fs::write(store.object_path(&d), b"paYload").unwrap();
        assert!(matches!(
            store.open_object(&d, 7),
            Err(StoreError::CorruptObject { .. })
        ));
        assert!(!store.object_path(&d).exists());
    }

    #[test]
    fn entries_are_replaced_whole() {
        let (_dir, store) = store();
        let key = Digest::of_bytes(b"k");
        assert_eq!(store.get_entry(&key).unwrap(), None);
        store.put_entry(&key, b"one").unwrap();
        store.put_entry(&key, b"two").unwrap();
        assert_eq!(store.get_entry(&key).unwrap().unwrap(), b"two");
        store.remove_entry(&key).unwrap();
        assert_eq!(store.get_entry(&key).unwrap(), None);
    }

    #[test]
    fn directories_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = store();
        let d = put(&store, b"secret");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.root()), 0o700);
        assert_eq!(mode(&store.root().join("objects")), 0o700);
        assert_eq!(mode(&store.object_path(&d)) & 0o077, 0);
    }
}
