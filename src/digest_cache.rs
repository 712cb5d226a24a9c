//! Remembers the SHA-256 of files by their inode and timestamps, so that a hit does not
//! re-hash an unchanged executable, input or already-verified object.
//!
//! Owns the `digests/` directory of the cache: a table of fixed-size binary records in
//! 256 shard files (`digests/00` … `digests/ff`, chosen by device and inode), each holding
//! at most `SHARD_CAPACITY` records and updated in place under `flock`. A record is 88
//! bytes with a checksum of its own; a damaged, torn or lost one costs a re-hash, never a
//! wrong digest. When a shard is full, the record written longest ago is replaced.
//!
//! A record is trusted only when the file's device, inode, size, mtime and ctime are all
//! unchanged, and it is written to disk only when the file's ctime is at least
//! `RACY_MARGIN` in the past at the time its hashing finished, whoever wrote the file
//! (memo's own objects too): a later write within the same timestamp tick could leave
//! every timestamp as it was (the "racy timestamp" rule git applies to its index;
//! ccache refuses to trust files modified in the last 2 s). ctime cannot be set from user
//! space, so a changed byte is otherwise always noticed, unless the change bypasses the
//! file system's timestamps: bit rot under an unchanged inode, which `gc --verify` is for,
//! or a write through a shared mmap not yet synced (docs/key.md).
//!
//! Within one process, a file hashed once is also remembered in memory, racy or not, so
//! verifying an object and then opening it to copy does not hash it twice.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::fsutil::{self, Access};

/// How far in the past a file's ctime must be before its digest is recorded on disk.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);
/// Bytes of one record on disk.
pub const RECORD_SIZE: usize = 88;
/// Records one shard file holds at most (256 shards: about 262,000 files, 23 MB).
pub const SHARD_CAPACITY: usize = 1024;
const SHARDS: usize = 256;

/// `RACY_MARGIN`; debug builds (the tests) may shorten it with `MEMO_DEBUG_RACY_MARGIN_MS`
/// so that files they have just created can be recorded.
fn racy_margin() -> Duration {
    static MARGIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *MARGIN.get_or_init(|| {
        let shortened = cfg!(debug_assertions)
            .then(|| {
                std::env::var("MEMO_DEBUG_RACY_MARGIN_MS")
                    .ok()?
                    .parse()
                    .ok()
            })
            .flatten();
        shortened.map_or(RACY_MARGIN, Duration::from_millis)
    })
}

/// What identifies one version of a file's contents without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatSignature {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl StatSignature {
    pub fn of(meta: &Metadata) -> StatSignature {
        StatSignature {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// Whether the file changed less than `RACY_MARGIN` before `now`: within the same
    /// timestamp tick, a later write could leave every timestamp as it is.
    pub fn is_racy(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now_ns - self.ctime_ns < racy_margin().as_nanos() as i128
    }

    /// The first 16 bytes of this file's record (device and inode): which records of a
    /// shard are this file's, read without decoding them.
    fn id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.dev.to_le_bytes());
        id[8..].copy_from_slice(&self.ino.to_le_bytes());
        id
    }

    /// Which shard file holds this file's record: the same for every inode of a group
    /// of 64 consecutive ones. Files created together (a checkout, a directory's
    /// sources, a command's inputs) get nearby inode numbers, so a hit's inputs are
    /// found in a few shards rather than one each (each is a file to open). A record
    /// names its file in full, so the grouping only decides where to look.
    fn shard(&self) -> usize {
        let group = self.ino >> 6;
        let mixed = (group ^ self.dev.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> 56) as usize % SHARDS
    }
}

/// One record of the table: a file's signature, its digest, and when it was written
/// (which record a full shard replaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub sig: StatSignature,
    pub digest: Digest,
    pub written_s: u64,
}

impl Record {
    /// Little-endian dev, ino, size, mtime_ns, ctime_ns, written_s (8 bytes each), the
    /// digest (32), then the first 8 bytes of the SHA-256 of all that. `None` for times
    /// that do not fit 64 bits (such a file is simply not recorded).
    fn encode(&self) -> Option<[u8; RECORD_SIZE]> {
        let mut out = [0u8; RECORD_SIZE];
        let fields = [
            self.sig.dev.to_le_bytes(),
            self.sig.ino.to_le_bytes(),
            self.sig.size.to_le_bytes(),
            i64::try_from(self.sig.mtime_ns).ok()?.to_le_bytes(),
            i64::try_from(self.sig.ctime_ns).ok()?.to_le_bytes(),
            self.written_s.to_le_bytes(),
        ];
        for (i, field) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(field);
        }
        out[48..80].copy_from_slice(&self.digest.0);
        let check = Digest::of_bytes(&out[..80]);
        out[80..].copy_from_slice(&check.0[..8]);
        Some(out)
    }

    /// The record in `bytes` (exactly one), if its checksum holds.
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        if bytes.len() != RECORD_SIZE || Digest::of_bytes(&bytes[..80]).0[..8] != bytes[80..] {
            return None;
        }
        let u = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let i = |n: usize| u(n) as i64 as i128;
        Some(Record {
            sig: StatSignature {
                dev: u(0),
                ino: u(1),
                size: u(2),
                mtime_ns: i(3),
                ctime_ns: i(4),
            },
            written_s: u(5),
            digest: Digest(bytes[48..80].try_into().expect("32 bytes")),
        })
    }
}

/// The records of a shard file's contents, in order, `None` where one is damaged.
pub fn decode_shard(bytes: &[u8]) -> Vec<Option<Record>> {
    bytes
        .chunks_exact(RECORD_SIZE)
        .map(Record::decode)
        .collect()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where shard `n` of the table under `dir` lives.
fn shard_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{n:02x}"))
}

pub struct DigestCache {
    /// `None` when there is no usable cache directory: every file is then hashed.
    dir: Option<PathBuf>,
    remembered: RefCell<HashMap<StatSignature, Digest>>,
    /// Shards this process has read (their bytes), by number: each is read at most once.
    loaded: RefCell<HashMap<usize, Vec<u8>>>,
    /// Bytes the table grew by since `take_growth` was last called (for the counters).
    grown: Cell<u64>,
}

impl DigestCache {
    pub fn new(dir: Option<PathBuf>) -> DigestCache {
        DigestCache {
            dir,
            remembered: RefCell::new(HashMap::new()),
            loaded: RefCell::new(HashMap::new()),
            grown: Cell::new(0),
        }
    }

    /// The digest and size of an open file's contents. Leaves the file positioned at 0.
    pub fn digest_file(&self, file: &mut File) -> io::Result<(Digest, u64)> {
        let before = StatSignature::of(&file.metadata()?);
        if let Some(digest) = self.lookup(&before) {
            return Ok((digest, before.size));
        }
        file.seek(SeekFrom::Start(0))?;
        let mut progress = crate::progress::Progress::new(before.size, "hashing");
        let (digest, size) = Digest::of_reader(progress.reader(&mut *file))?;
        file.seek(SeekFrom::Start(0))?;
        let after = StatSignature::of(&file.metadata()?);
        if before == after && size == after.size {
            self.remember(&after, digest);
        }
        Ok((digest, size))
    }

    /// Remembers the digest of a file memo has just written or verified in full, hashed
    /// on the way. The racy-timestamp rule applies as to any file: an object written
    /// within `RACY_MARGIN` is remembered by this process only, and its first use by a
    /// later process hashes it once.
    pub fn record_written(&self, file: &File, digest: Digest) {
        let Ok(meta) = file.metadata() else { return };
        self.remember(&StatSignature::of(&meta), digest);
    }

    /// What is on record for the open file as it is now, without reading it: the store
    /// records a tag (not a digest) for a compressed object it verified.
    pub fn recorded(&self, file: &File) -> Option<Digest> {
        self.lookup(&StatSignature::of(&file.metadata().ok()?))
    }

    /// The digest of the file at `path` and its signature when hashed. A file whose
    /// digest is on record is not even opened.
    pub fn digest_path(&self, path: &std::path::Path) -> io::Result<(Digest, StatSignature)> {
        let sig = StatSignature::of(&fs::metadata(path)?);
        if let Some(digest) = self.lookup(&sig) {
            return Ok((digest, sig));
        }
        let mut file = File::open(path)?;
        let (digest, _) = self.digest_file(&mut file)?;
        Ok((digest, StatSignature::of(&file.metadata()?)))
    }

    /// The digest on record for a file of this signature, if any.
    pub fn known(&self, sig: &StatSignature) -> Option<Digest> {
        self.lookup(sig)
    }

    /// Remembers the digest of a file the caller hashed in full while its signature held
    /// still (the racy-timestamp rule applies, as to any file).
    pub fn remember_hashed(&self, sig: &StatSignature, digest: Digest) {
        self.remember(sig, digest);
    }

    /// `digest_path` for a file whose metadata (followed) the caller has just read: no
    /// second `statx`.
    pub fn digest_path_with(
        &self,
        path: &std::path::Path,
        meta: &Metadata,
    ) -> io::Result<(Digest, StatSignature)> {
        let sig = StatSignature::of(meta);
        if let Some(digest) = self.lookup(&sig) {
            return Ok((digest, sig));
        }
        let mut file = File::open(path)?;
        let (digest, _) = self.digest_file(&mut file)?;
        Ok((digest, StatSignature::of(&file.metadata()?)))
    }

    /// Bytes the table has grown by in this process since the last call.
    pub fn take_growth(&self) -> u64 {
        self.grown.replace(0)
    }

    fn lookup(&self, sig: &StatSignature) -> Option<Digest> {
        if let Some(d) = self.remembered.borrow().get(sig) {
            return Some(*d);
        }
        let dir = self.dir.as_ref()?;
        let shard = sig.shard();
        let mut loaded = self.loaded.borrow_mut();
        let bytes = loaded.entry(shard).or_insert_with(|| {
            // No lock: each record carries its checksum, so a torn one reads as none.
            let path = shard_path(dir, shard);
            fsutil::read_regular(&path, (SHARD_CAPACITY * RECORD_SIZE) as u64).unwrap_or_default()
        });
        // Only the records of this very file are checked (hashed), not the whole shard.
        let id = sig.id();
        bytes
            .chunks_exact(RECORD_SIZE)
            .filter(|chunk| chunk[..16] == id)
            .filter_map(Record::decode)
            .find(|r| r.sig == *sig)
            .map(|r| r.digest)
    }

    /// Remembers a digest for this process, and on disk unless the timestamps are racy.
    fn remember(&self, sig: &StatSignature, digest: Digest) {
        self.remembered.borrow_mut().insert(*sig, digest);
        if !sig.is_racy(SystemTime::now()) {
            // A lost record only costs a re-hash next time, so failures are ignored.
            let _ = self.write_record(sig, digest);
        }
    }

    /// Writes the record in place, under the shard's lock: over this file's previous
    /// record, else over a damaged one, else at the end, else (the shard is full) over
    /// the one written longest ago.
    fn write_record(&self, sig: &StatSignature, digest: Digest) -> io::Result<()> {
        let Some(dir) = self.dir.as_ref() else {
            return Ok(());
        };
        let record = Record {
            sig: *sig,
            digest,
            written_s: now_s(),
        };
        let Some(bytes) = record.encode() else {
            return Ok(());
        };
        let path = shard_path(dir, sig.shard());
        let mut file = match fsutil::open_cache_file(&path) {
            Err(e) if fsutil::lacks_directory(&e) => {
                fsutil::create_private_dir_all(dir)?;
                fsutil::open_cache_file(&path)?
            }
            other => other?,
        };
        fs2::FileExt::lock_exclusive(&file)?;
        let mut old = Vec::new();
        (&mut file)
            .take((SHARD_CAPACITY * RECORD_SIZE) as u64)
            .read_to_end(&mut old)?;
        // Slots are chosen from the raw bytes, without checking each record's checksum:
        // hashing every record of the shard on every write made recording 50,000 inputs
        // take seconds. A damaged record is only ever overwritten here, never trusted.
        let id = sig.id();
        let mut same = None;
        let mut oldest: Option<(u64, usize)> = None;
        let mut count = 0;
        for (i, chunk) in old.chunks_exact(RECORD_SIZE).enumerate() {
            count = i + 1;
            if chunk[..16] == id {
                same = Some(i);
                break;
            }
            let written = u64::from_le_bytes(chunk[40..48].try_into().expect("8 bytes"));
            if oldest.is_none_or(|(w, _)| written < w) {
                oldest = Some((written, i));
            }
        }
        let slot = same.unwrap_or_else(|| {
            if count < SHARD_CAPACITY {
                count
            } else {
                oldest.map_or(0, |(_, i)| i)
            }
        });
        file.write_all_at(&bytes, (slot * RECORD_SIZE) as u64)?;
        let end = ((slot + 1) * RECORD_SIZE) as u64;
        let grown = end.saturating_sub(old.len() as u64);
        self.grown.set(self.grown.get() + grown);
        fs2::FileExt::unlock(&file)?;
        Ok(())
    }
}

/// What gc did to the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Bytes the table holds after trimming.
    pub kept_bytes: u64,
    /// Bytes it held before.
    pub bytes_before: u64,
}

/// The bytes the table under `dir` takes (its shard files' sizes).
pub fn table_size(dir: &Path) -> u64 {
    if !fsutil::is_real_dir(dir) {
        return 0;
    }
    (0..SHARDS)
        .filter_map(|n| fs::symlink_metadata(shard_path(dir, n)).ok())
        .map(|m| m.len())
        .sum()
}

/// gc's pass over the table under `dir`: drops damaged records and those written longer
/// than `max_age` ago, rewriting each shard densely in place under its lock, and removes
/// whatever else is in `dir` (the older one-file-per-record layout, planted files). With
/// `drop_all`, every shard goes. `dry_run` only measures.
pub fn trim_table(dir: &Path, max_age: Duration, drop_all: bool, dry_run: bool) -> Trimmed {
    let mut trimmed = Trimmed::default();
    let oldest_kept = now_s().saturating_sub(max_age.as_secs());
    let shard_names: std::collections::HashSet<String> =
        (0..SHARDS).map(|n| format!("{n:02x}")).collect();
    if !fsutil::is_real_dir(dir) {
        // A symlink planted as `digests/`: not the table, nothing of it to remove.
        return trimmed;
    }
    for item in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        let Ok(meta) = item.path().symlink_metadata() else {
            continue;
        };
        trimmed.bytes_before += meta.len();
        let is_shard = shard_names.contains(&name);
        if !is_shard && !crate::fsutil::is_memo_cache() {
            // Not a name memo gives, in a directory that may not be memo's: not ours.
            continue;
        }
        if !is_shard || !meta.is_file() || drop_all {
            if !dry_run {
                let _ = fsutil::remove_path(&item.path());
            }
            continue;
        }
        trimmed.kept_bytes +=
            compact_shard(&item.path(), oldest_kept, dry_run).unwrap_or(meta.len());
    }
    trimmed
}

/// Rewrites one shard with only its good, recent records; returns its new size.
fn compact_shard(path: &Path, oldest_kept: u64, dry_run: bool) -> io::Result<u64> {
    let mut file = fsutil::open_regular(
        path,
        if dry_run {
            Access::Read
        } else {
            Access::Update
        },
    )?;
    if !dry_run {
        fs2::FileExt::lock_exclusive(&file)?;
    }
    let mut old = Vec::new();
    (&mut file)
        .take((SHARD_CAPACITY * RECORD_SIZE) as u64 * 2)
        .read_to_end(&mut old)?;
    let kept: Vec<u8> = decode_shard(&old)
        .into_iter()
        .flatten()
        .filter(|r| r.written_s >= oldest_kept)
        .take(SHARD_CAPACITY)
        .filter_map(|r| r.encode())
        .flatten()
        .collect();
    if !dry_run && kept.len() != old.len() {
        file.write_all_at(&kept, 0)?;
        file.set_len(kept.len() as u64)?;
    }
    Ok(kept.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(ino: u64) -> StatSignature {
        StatSignature {
            dev: 7,
            ino,
            size: 3,
            mtime_ns: -4,
            ctime_ns: 5,
        }
    }

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_refused() {
        let record = Record {
            sig: sig(2),
            digest: Digest::of_bytes(b"x"),
            written_s: 9,
        };
        let bytes = record.encode().unwrap();
        assert_eq!(Record::decode(&bytes), Some(record));
        assert_eq!(Record::decode(&bytes[1..]), None);
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes;
            bad[i / 8] ^= 1 << (i % 8);
            assert_eq!(Record::decode(&bad), None, "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn fresh_files_are_not_recorded_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(Some(tmp.path().join("digests")));
        let path = tmp.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let (d, n) = cache.digest_file(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!((d, n), (Digest::of_bytes(b"hello"), 5));
        let file = File::open(&path).unwrap();
        cache.record_written(&file, d);
        assert!(
            !tmp.path().join("digests").exists(),
            "a racy record was written"
        );
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(None);
        let path = tmp.path().join("f");
        fs::write(&path, b"hello").unwrap();
        cache.digest_file(&mut File::open(&path).unwrap()).unwrap();
        fs::write(&path, b"jello").unwrap();
        let (d, _) = cache.digest_file(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(d, Digest::of_bytes(b"jello"));
    }

    /// Signatures whose records all land in shard 0.
    fn same_shard(count: usize) -> Vec<StatSignature> {
        (0..u64::MAX)
            .map(sig)
            .filter(|s| s.shard() == 0)
            .take(count)
            .collect()
    }

    #[test]
    fn a_shard_is_bounded_and_read_back_by_another_process() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("digests");
        let writer = DigestCache::new(Some(dir.clone()));
        let sigs = same_shard(SHARD_CAPACITY + 5);
        for (i, s) in sigs.iter().enumerate() {
            writer
                .write_record(s, Digest::of_bytes(&i.to_le_bytes()))
                .unwrap();
        }
        let size = fs::metadata(shard_path(&dir, 0)).unwrap().len();
        assert_eq!(size, (SHARD_CAPACITY * RECORD_SIZE) as u64);
        assert_eq!(writer.take_growth(), size);
        let reader = DigestCache::new(Some(dir.clone()));
        let last = sigs.len() - 1;
        assert_eq!(
            reader.lookup(&sigs[last]),
            Some(Digest::of_bytes(&last.to_le_bytes()))
        );
        // The same file rewritten: its record is replaced, not added.
        let mut changed = sigs[last];
        changed.size += 1;
        writer
            .write_record(&changed, Digest::of_bytes(b"new"))
            .unwrap();
        let reader = DigestCache::new(Some(dir.clone()));
        assert_eq!(reader.lookup(&sigs[last]), None);
        assert_eq!(reader.lookup(&changed), Some(Digest::of_bytes(b"new")));
    }

    #[test]
    fn trimming_drops_old_and_damaged_records_and_foreign_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("digests");
        let cache = DigestCache::new(Some(dir.clone()));
        for s in same_shard(3) {
            cache.write_record(&s, Digest::of_bytes(b"d")).unwrap();
        }
        let shard = shard_path(&dir, 0);
        let mut bytes = fs::read(&shard).unwrap();
        bytes[RECORD_SIZE + 3] ^= 1;
        fs::write(&shard, &bytes).unwrap();
        fs::create_dir_all(dir.join("ab")).unwrap();
        fs::write(dir.join("ab").join("cdef"), b"memo-digest 1 old layout").unwrap();
        let trimmed = trim_table(&dir, Duration::from_secs(3600), false, false);
        assert_eq!(trimmed.kept_bytes, 2 * RECORD_SIZE as u64);
        assert_eq!(table_size(&dir), 2 * RECORD_SIZE as u64);
        assert!(!dir.join("ab").exists());
        let trimmed = trim_table(&dir, Duration::from_secs(3600), true, false);
        assert_eq!(trimmed.kept_bytes, 0);
        assert_eq!(table_size(&dir), 0);
    }
}
