//! Entry packs: where entries live. The entries of the keys that start with byte `ab` are
//! records appended one after another to `packs/ab`, and each record is named by a slot
//! appended to `packs/ab.idx`, a table of fixed 48-byte slots (key, offset, length,
//! check). A lookup reads the table and one record; a store appends one record and one
//! slot; a removal appends a slot that names no record (a tombstone). The last slot of a
//! key wins. gc rewrites a pack without what it evicts, what was superseded and what is
//! damaged (`rewrite`).
//!
//! A small entry so costs its bytes and 96 bytes of framing, not an inode and a 4 KiB
//! block; storing one creates no file once its shard's pack exists.
//!
//! Writers (a store, a removal, gc's rewrite) hold an exclusive `flock` on the pack file
//! and check, once they hold it, that its path still names that file (a rewrite replaces
//! both files whole, by rename). Readers take no lock: a record is written before its
//! slot, and a slot that does not match the record it points at (a rewrite renamed the
//! new pack in, locked, and not yet the table) sends the reader round again under a
//! shared lock. What still does not match is damage: `Got::Damaged`, a miss for the
//! caller. The new pack holds one record per key, the current one, so an old slot can
//! only find that record or a mismatch in it: never a superseded or removed version.
//!
//! Nothing is fsynced, as elsewhere in the store: a record torn by a power loss fails its
//! entry's checksum and is a miss; a slot torn in half is not read (tables are read in
//! whole slots, and the next writer cuts a torn end off before it appends).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::digest::Digest;
use crate::fsutil::{open_regular, Access};

/// Entries larger than this are not read (nor stored): no honest entry comes near it.
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;
/// The directory of the packs, under the cache root.
pub const DIR: &str = "packs";
/// A record starts with this: `\xff` never appears in an entry, which is text.
const MAGIC: &[u8; 8] = b"\xffmemopk1";
/// Magic, key, body length, check.
const HEADER: usize = 48;
/// Key, offset, body length, check.
pub const SLOT: usize = 48;
/// The offset of a tombstone's slot.
const REMOVED: u64 = u64::MAX;
/// gc rewrites a pack whose superseded and removed records take more than this and more
/// than its live ones.
pub const REWRITE_WASTE: u64 = 64 * 1024;
/// A table larger than this is damage (and removed): a million entries make about
/// 190 KB per table.
const MAX_TABLE: u64 = 64 << 20;
/// The bytes of a table a lookup reads at a time, from its end: 680 slots.
const SCAN_BLOCK: usize = 680 * SLOT;

/// FNV-1a over `bytes`: a check of a header or a slot against a torn or stray write
/// (what a record holds is checked by its entry's own SHA-256).
fn check(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// One slot of a table: where the record of `key` is, or that `key` was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub key: Digest,
    pub offset: u64,
    pub len: u32,
}

impl Slot {
    fn encode(&self) -> [u8; SLOT] {
        let mut out = [0u8; SLOT];
        out[..32].copy_from_slice(&self.key.0);
        out[32..40].copy_from_slice(&self.offset.to_le_bytes());
        out[40..44].copy_from_slice(&self.len.to_le_bytes());
        let sum = check(&out[..44]);
        out[44..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// `None` for a slot that fails its check.
    fn decode(bytes: &[u8]) -> Option<Slot> {
        let sum = u32::from_le_bytes(bytes[44..48].try_into().ok()?);
        (check(&bytes[..44]) == sum).then(|| Slot {
            key: Digest(bytes[..32].try_into().expect("32 bytes")),
            offset: u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")),
            len: u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes")),
        })
    }

    pub fn removed(&self) -> bool {
        self.offset == REMOVED
    }

    /// Whether this slot may name a record of `shard` in a pack of `pack_len` bytes: not
    /// a tombstone, a key of the shard, a record that ends within the pack. (What the
    /// record holds is not read.)
    fn names_a_record_in(&self, shard: u8, pack_len: u64) -> bool {
        !self.removed()
            && self.key.0[0] == shard
            && self
                .offset
                .checked_add((HEADER as u64) + u64::from(self.len))
                .is_some_and(|end| end <= pack_len)
    }
}

fn header(key: &Digest, len: u32) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[..8].copy_from_slice(MAGIC);
    out[8..40].copy_from_slice(&key.0);
    out[40..44].copy_from_slice(&len.to_le_bytes());
    let sum = check(&out[..44]);
    out[44..].copy_from_slice(&sum.to_le_bytes());
    out
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// The entry's bytes, from a record whose header names the key.
    Record(Vec<u8>),
    /// The key's last slot is a tombstone.
    Removed,
    /// No slot names the key.
    Absent,
    /// The key's last slot points at something that is not its record.
    Damaged,
}

/// While it lives, `Packs::get` reads each table once (`Packs::keep_tables`).
#[must_use = "tables are kept only while the guard lives"]
pub struct KeptTables<'a>(&'a Packs);

impl Drop for KeptTables<'_> {
    fn drop(&mut self) {
        *self.0.kept.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

pub struct Packs {
    dir: PathBuf,
    /// Tables read once and kept, by shard, when `keep_tables` asked for it (gc and the
    /// listings, which look up many keys); `None`: every lookup reads its table.
    kept: std::sync::Mutex<Option<HashMap<u8, std::sync::Arc<Vec<u8>>>>>,
}

/// Whether reading may change the cache: remove the damage it finds (a planted pack or
/// table, a damaged record's slot) and record what it verified. For the whole process;
/// off in `gc --dry-run`, which changes nothing.
static MAY_CHANGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// From now on, reading leaves the damage it finds where it is (still reported as
/// damage: a miss, a corrupt entry) and records nothing; for `gc --dry-run`.
pub fn hold_changes() {
    MAY_CHANGE.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Whether reading may change the cache (`hold_changes`).
pub fn may_change() -> bool {
    MAY_CHANGE.load(std::sync::atomic::Ordering::Relaxed)
}

fn shard_name(shard: u8) -> String {
    format!("{shard:02x}")
}

/// The last slot of each key in `table`, in the order of the slots (a key moves to
/// where its last slot is); slots that fail their check are left out.
fn last_slots(table: &[u8]) -> Vec<Slot> {
    let mut at: HashMap<Digest, usize> = HashMap::new();
    let mut slots: Vec<Option<Slot>> = Vec::new();
    for bytes in table.chunks_exact(SLOT) {
        let Some(slot) = Slot::decode(bytes) else {
            continue;
        };
        if let Some(before) = at.insert(slot.key, slots.len()) {
            slots[before] = None;
        }
        slots.push(Some(slot));
    }
    slots.into_iter().flatten().collect()
}

/// The last good slot of `key` in `table`.
fn find(table: &[u8], key: &Digest) -> Option<Slot> {
    table
        .chunks_exact(SLOT)
        .rev()
        .filter(|bytes| bytes[..32] == key.0)
        .find_map(Slot::decode)
}

/// Whether `file` is the file at `path` now (not one a rewrite replaced).
fn still_named(file: &File, path: &Path) -> io::Result<bool> {
    let (held, now) = match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(held), Ok(now)) => (held, now),
        (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(held.dev() == now.dev() && held.ino() == now.ino())
}

/// How long a pack's lock is waited for: an append or a rewrite holds it for a moment,
/// so a lock held longer belongs to a stopped or stuck process, and the store (or the
/// read, or gc's rewrite of that pack) gives up with an error rather than hang memo.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes `flock` on `file`, waiting for it at most `LOCK_WAIT`.
fn lock(file: &File, exclusive: bool, path: &Path) -> io::Result<()> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        let taken = if exclusive {
            fs2::FileExt::try_lock_exclusive(file)
        } else {
            fs2::FileExt::try_lock_shared(file)
        };
        match taken {
            Err(e) if crate::lock::is_contended(&e) => {}
            other => return other,
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} stayed locked by another process for {} s",
                    path.display(),
                    LOCK_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}

/// The record of `slot` in `whole` (a pack read whole), if the header there names the
/// slot's key and length.
fn record_in<'a>(whole: &'a [u8], slot: &Slot) -> Option<&'a [u8]> {
    let start = usize::try_from(slot.offset).ok()?;
    let end = start.checked_add(HEADER + slot.len as usize)?;
    let record = whole.get(start..end)?;
    (record[..HEADER] == header(&slot.key, slot.len)).then(|| &record[HEADER..])
}

/// A pack no larger than this is read whole by a rewrite, not one record at a time.
const READ_WHOLE: u64 = 64 << 20;

/// The record of `slot` in `pack`, if the header there names the slot's key and length.
fn read_record(pack: &File, slot: &Slot) -> io::Result<Option<Vec<u8>>> {
    if u64::from(slot.len) > MAX_ENTRY_BYTES {
        return Ok(None);
    }
    let len = slot.len as usize;
    let mut bytes = vec![0u8; HEADER + len];
    match pack.read_exact_at(&mut bytes, slot.offset) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    if bytes[..HEADER] != header(&slot.key, slot.len) {
        return Ok(None);
    }
    bytes.drain(..HEADER);
    Ok(Some(bytes))
}

impl Packs {
    pub fn new(root: &Path) -> Packs {
        Packs {
            dir: root.join(DIR),
            kept: std::sync::Mutex::new(None),
        }
    }

    /// Until the guard goes, each table is read once by `get` (for the lookups of a
    /// listing or of gc; what this process appends or rewrites is read again). A slot
    /// made by another process since is not seen: a miss; a record moved by another
    /// gc since is read again under the lock, as always. `slot` always reads afresh.
    pub fn keep_tables(&self) -> KeptTables<'_> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get_or_insert_with(HashMap::new);
        KeptTables(self)
    }

    /// A table read by this process goes stale when it appends to or rewrites it.
    fn forget_table(&self, shard: u8) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kept) = kept.as_mut() {
            kept.remove(&shard);
        }
    }

    /// The last slot of `key`: while tables are kept, from its shard's table read once
    /// (`keep_tables`); else read from the table's end (`scan_table`).
    fn last_slot(&self, key: &Digest) -> io::Result<Option<Slot>> {
        let shard = key.0[0];
        let table = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let Some(kept) = kept.as_mut() else {
                drop(kept);
                return self.scan_table(key);
            };
            match kept.get(&shard) {
                Some(table) => table.clone(),
                None => {
                    let table = std::sync::Arc::new(self.read_table(shard)?);
                    kept.insert(shard, table.clone());
                    table
                }
            }
        };
        Ok(find(&table, key))
    }

    fn pack_path(&self, shard: u8) -> PathBuf {
        self.dir.join(shard_name(shard))
    }

    fn table_path(&self, shard: u8) -> PathBuf {
        self.dir.join(format!("{}.idx", shard_name(shard)))
    }

    /// The whole slots of a shard's table; empty when there is none (or damage in its
    /// place: `open_table`).
    fn read_table(&self, shard: u8) -> io::Result<Vec<u8>> {
        let Some((file, len)) = self.open_table(shard)? else {
            return Ok(Vec::new());
        };
        let mut table = Vec::with_capacity(len as usize);
        io::Read::read_to_end(&mut io::Read::take(file, len), &mut table)?;
        table.truncate(table.len() / SLOT * SLOT);
        Ok(table)
    }

    /// The shard's table, opened, and the length of its whole slots; `None` when there
    /// is none. Anything but a regular file of a sane size in its place is damage,
    /// removed (its records are then unreachable: misses, and gone at the next gc).
    fn open_table(&self, shard: u8) -> io::Result<Option<(File, u64)>> {
        let path = self.table_path(shard);
        let (file, meta) = match crate::fsutil::open_regular_measured(&path, Access::Read) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if crate::fsutil::is_not_regular(&e) => {
                if may_change() {
                    let _ = crate::fsutil::remove_planted(&path);
                }
                return Ok(None);
            }
            other => other?,
        };
        if meta.len() > MAX_TABLE {
            if may_change() {
                let _ = fs::remove_file(&path);
            }
            return Ok(None);
        }
        Ok(Some((file, meta.len() / SLOT as u64 * SLOT as u64)))
    }

    /// The last slot of `key`, read from the end of its table a block at a time: a
    /// recent store is in the first block read, and a miss in a table of any length
    /// costs one small buffer (a table holds about 190 KB in a cache of a million
    /// entries). A table cut short meanwhile is read again whole.
    fn scan_table(&self, key: &Digest) -> io::Result<Option<Slot>> {
        let Some((file, len)) = self.open_table(key.0[0])? else {
            return Ok(None);
        };
        let mut block = vec![0u8; SCAN_BLOCK.min(len as usize)];
        let mut end = len;
        while end > 0 {
            let start = end.saturating_sub(SCAN_BLOCK as u64);
            let chunk = &mut block[..(end - start) as usize];
            match file.read_exact_at(chunk, start) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(find(&self.read_table(key.0[0])?, key));
                }
                Err(e) => return Err(e),
            }
            if let Some(slot) = find(chunk, key) {
                return Ok(Some(slot));
            }
            end = start;
        }
        Ok(None)
    }

    /// The last slot of `key`, if any.
    pub fn slot(&self, key: &Digest) -> io::Result<Option<Slot>> {
        self.scan_table(key)
    }

    /// The entry stored under `key`: read without a lock, then, if the slot and the
    /// record disagree, once more under a shared lock on the pack.
    pub fn get(&self, key: &Digest) -> io::Result<Got> {
        let shard = key.0[0];
        let Some(slot) = self.last_slot(key)? else {
            return Ok(Got::Absent);
        };
        if slot.removed() {
            return Ok(Got::Removed);
        }
        let path = self.pack_path(shard);
        match open_regular(&path, Access::Read) {
            Ok(pack) => {
                if let Some(bytes) = read_record(&pack, &slot)? {
                    return Ok(Got::Record(bytes));
                }
            }
            // Gone since the table was read (`memo clear`, a gc that emptied the
            // shard): asked again below.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // A FIFO, device or socket in its place: damage, removed (then asked again).
            Err(e) if crate::fsutil::is_not_regular(&e) => {
                if may_change() {
                    let _ = crate::fsutil::remove_planted(&path);
                }
            }
            Err(e) => return Err(e),
        }
        // Again, under a shared lock: a rewrite that was renaming its files in is done.
        let pack = self.open_locked(shard, false, Access::Read)?;
        Ok(match (self.scan_table(key)?, pack) {
            (None, _) => Got::Absent,
            (Some(slot), _) if slot.removed() => Got::Removed,
            (Some(_), None) => Got::Damaged,
            (Some(slot), Some(pack)) => {
                read_record(&pack, &slot)?.map_or(Got::Damaged, Got::Record)
            }
        })
    }

    /// The shard's pack, opened with `access` and locked, once its path names the file
    /// locked. `None` when there is no pack (for `Access::Read`).
    fn open_locked(&self, shard: u8, exclusive: bool, access: Access) -> io::Result<Option<File>> {
        let path = self.pack_path(shard);
        for _ in 0..16 {
            let pack = match open_regular(&path, access) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && access == Access::Read => {
                    return Ok(None)
                }
                Err(e) if crate::fsutil::lacks_directory(&e) => {
                    crate::fsutil::create_private_dir_all(&self.dir)?;
                    continue;
                }
                // A FIFO, device or socket in its place: damage, removed.
                Err(e) if crate::fsutil::is_not_regular(&e) => {
                    if access == Access::Read && !may_change() {
                        return Ok(None);
                    }
                    crate::fsutil::remove_planted(&path)?;
                    if access == Access::Read {
                        return Ok(None);
                    }
                    continue;
                }
                other => other?,
            };
            lock(&pack, exclusive, &path)?;
            if still_named(&pack, &path)? {
                return Ok(Some(pack));
            }
        }
        Err(io::Error::other(format!(
            "{} keeps being replaced",
            path.display()
        )))
    }

    /// Appends `body` as the record of `key`, or, with `None`, a tombstone. A write that
    /// fails is cut off again: the pack and the table stay as they were.
    pub fn append(&self, key: &Digest, body: Option<&[u8]>) -> io::Result<()> {
        self.append_unless(key, body, false).map(|_| ())
    }

    /// `append`, but only when no slot names `key` (looked at under the pack's lock, so
    /// that a store made meanwhile is never put behind this one). Whether it appended.
    pub fn append_if_absent(&self, key: &Digest, body: &[u8]) -> io::Result<bool> {
        self.append_unless(key, Some(body), true)
    }

    fn append_unless(
        &self,
        key: &Digest,
        body: Option<&[u8]>,
        if_absent: bool,
    ) -> io::Result<bool> {
        let len = match body {
            Some(body) if body.len() as u64 > MAX_ENTRY_BYTES => {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    "an entry larger than memo reads",
                ))
            }
            Some(body) => body.len() as u32,
            None => 0,
        };
        let pack_path = self.pack_path(key.0[0]);
        for _ in 0..8 {
            let pack = self
                .open_locked(key.0[0], true, Access::Append)?
                .expect("created");
            if if_absent && self.scan_table(key)?.is_some() {
                return Ok(false);
            }
            let appended = self.append_locked(&pack, key, body, len);
            // `memo clear` may have moved the directory away meanwhile: the record went
            // with it, and the slot perhaps into the new table (or nowhere). Stored again
            // there (the later slot wins over a stray one).
            if still_named(&pack, &pack_path)? {
                return appended.map(|_| true);
            }
        }
        Err(io::Error::other(format!(
            "{} keeps being replaced",
            pack_path.display()
        )))
    }

    /// The record (if any) and then the slot, into `pack`, locked, and its table.
    fn append_locked(
        &self,
        pack: &File,
        key: &Digest,
        body: Option<&[u8]>,
        len: u32,
    ) -> io::Result<()> {
        self.forget_table(key.0[0]);
        crate::fsutil::share(pack)?;
        let offset = pack.metadata()?.len();
        let slot = match body {
            Some(body) => {
                let mut record = Vec::with_capacity(HEADER + body.len());
                record.extend_from_slice(&header(key, len));
                record.extend_from_slice(body);
                if let Err(e) = (&*pack).write_all(&record) {
                    let _ = pack.set_len(offset);
                    return Err(e);
                }
                Slot {
                    key: *key,
                    offset,
                    len,
                }
            }
            None => Slot {
                key: *key,
                offset: REMOVED,
                len: 0,
            },
        };
        let table_path = self.table_path(key.0[0]);
        // A FIFO, device or socket in the table's place is damage, replaced.
        let written =
            crate::fsutil::open_or_replace(&table_path, Access::Append).and_then(|(table, _)| {
                crate::fsutil::share(&table)?;
                let len = table.metadata()?.len();
                let whole = len / SLOT as u64 * SLOT as u64;
                if whole != len {
                    table.set_len(whole)?;
                }
                if let Err(e) = (&table).write_all(&slot.encode()) {
                    let _ = table.set_len(whole);
                    return Err(e);
                }
                Ok(())
            });
        if written.is_err() && body.is_some() {
            let _ = pack.set_len(offset);
        }
        written
    }

    /// Removes `key` (a tombstone) if its last slot still names a record that does not
    /// match it, as looked at under the pack's lock: a store made since stays.
    pub fn remove_if_damaged(&self, key: &Digest) -> io::Result<()> {
        let Some(pack) = self.open_locked(key.0[0], true, Access::Update)? else {
            return Ok(());
        };
        match self.scan_table(key)? {
            Some(slot) if !slot.removed() && read_record(&pack, &slot)?.is_none() => {
                self.append_locked(&pack, key, None, 0)
            }
            _ => Ok(()),
        }
    }

    /// The shards that have a table or a pack.
    fn shards(&self) -> Vec<u8> {
        let mut found: Vec<u8> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|item| {
                let name = item.file_name();
                let name = name.to_str()?;
                let stem = name.strip_suffix(".idx").unwrap_or(name);
                (stem.len() == 2)
                    .then(|| u8::from_str_radix(stem, 16).ok())
                    .flatten()
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// A shard as the listings see it: the length of its pack (0 for anything but a
    /// regular file), the length of its table, and the last slot of each key in it.
    /// The records are not read.
    fn view(&self, shard: u8) -> (u64, u64, Vec<Slot>) {
        let len = |path: PathBuf| {
            fs::symlink_metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .map_or(0, |m| m.len())
        };
        let table = self.read_table(shard).unwrap_or_default();
        (
            len(self.pack_path(shard)),
            len(self.table_path(shard)),
            last_slots(&table),
        )
    }

    /// The last slot of every key in the packs, each with whether it names a record:
    /// not a tombstone, a key of its shard, a record that would end within the pack
    /// (one cut off by a crash or by hand does not). The records are not read.
    pub fn slots(&self) -> Vec<(Slot, bool)> {
        if !crate::fsutil::is_real_dir(&self.dir) {
            return Vec::new();
        }
        let mut found = Vec::new();
        for shard in self.shards() {
            let (pack_len, _, slots) = self.view(shard);
            found.extend(
                slots
                    .into_iter()
                    .map(|s| (s, s.names_a_record_in(shard, pack_len))),
            );
        }
        found
    }

    /// Every key with a record (`slots`), and the length of its entry.
    pub fn live(&self) -> Vec<(Digest, u64)> {
        self.slots()
            .into_iter()
            .filter(|(_, live)| *live)
            .map(|(s, _)| (s.key, u64::from(s.len)))
            .collect()
    }

    /// Per shard with a pack: the bytes of its pack and table, and the bytes its live
    /// records and their slots would take in a rewrite.
    pub fn usage(&self) -> Vec<(u8, u64, u64)> {
        self.shards()
            .into_iter()
            .map(|shard| {
                let (pack_len, table_len, slots) = self.view(shard);
                let live = slots
                    .iter()
                    .filter(|s| s.names_a_record_in(shard, pack_len))
                    .map(|s| (HEADER + SLOT) as u64 + u64::from(s.len))
                    .sum();
                (shard, pack_len + table_len, live)
            })
            .collect()
    }

    /// Rewrites a shard's pack and table with the last record of each key, but for the
    /// keys in `evict`, tombstones, and records that do not match their slot. `stage`
    /// makes the new files (in the cache's `tmp/`). Returns the bytes it freed.
    pub fn rewrite(
        &self,
        shard: u8,
        evict: &HashSet<Digest>,
        stage: &dyn Fn() -> io::Result<NamedTempFile>,
    ) -> io::Result<u64> {
        // Under the pack's lock even where there is no pack yet (a table without one names
        // nothing): a first store into the shard waits, and is not removed with it.
        let pack = self
            .open_locked(shard, true, Access::Update)?
            .expect("created");
        let table_path = self.table_path(shard);
        let before =
            pack.metadata()?.len() + fs::symlink_metadata(&table_path).map_or(0, |m| m.len());
        self.forget_table(shard);
        let table = self.read_table(shard)?;
        let pack_len = pack.metadata()?.len();
        let whole = if pack_len <= READ_WHOLE {
            let mut bytes = vec![0u8; pack_len as usize];
            pack.read_exact_at(&mut bytes, 0)?;
            Some(bytes)
        } else {
            None
        };
        let mut new_pack = stage()?;
        let mut new_table = stage()?;
        let mut offset = 0u64;
        {
            let mut records = io::BufWriter::with_capacity(1 << 16, new_pack.as_file_mut());
            let mut slots = io::BufWriter::with_capacity(1 << 16, new_table.as_file_mut());
            for slot in last_slots(&table) {
                if slot.removed() || slot.key.0[0] != shard || evict.contains(&slot.key) {
                    continue;
                }
                let read;
                let body = match &whole {
                    Some(whole) => record_in(whole, &slot),
                    None => {
                        read = read_record(&pack, &slot)?;
                        read.as_deref()
                    }
                };
                let Some(body) = body else {
                    continue;
                };
                records.write_all(&header(&slot.key, slot.len))?;
                records.write_all(body)?;
                slots.write_all(&Slot { offset, ..slot }.encode())?;
                offset += (HEADER + body.len()) as u64;
            }
            records.flush()?;
            slots.flush()?;
        }
        let pack_path = self.pack_path(shard);
        if offset == 0 {
            // Nothing is left: the table goes first, so that no reader finds a slot
            // without its pack.
            match fs::remove_file(&table_path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            fs::remove_file(&pack_path)?;
            return Ok(before);
        }
        let after = offset + new_table.as_file().metadata()?.len();
        crate::fsutil::share(new_pack.as_file())?;
        crate::fsutil::share(new_table.as_file())?;
        // The pack first, locked until the table follows: a reader with the old table
        // finds in the new pack either the current record of its key (the new pack
        // holds no other) or a mismatch, and then goes round again under a shared lock,
        // which it gets once both are in place. The old pack keeps a second name until
        // the table is in: if the table cannot be replaced (an immutable file), the old
        // pack goes back and the shard stays as it was.
        lock(new_pack.as_file(), true, &pack_path)?;
        let backup = new_pack.path().with_extension("old");
        fs::hard_link(&pack_path, &backup)?;
        let new_pack = match new_pack.persist(&pack_path) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&backup);
                return Err(e.error);
            }
        };
        if let Err(e) = new_table.persist(&table_path) {
            let _ = fs::rename(&backup, &pack_path);
            return Err(e.error);
        }
        let _ = fs::remove_file(&backup);
        drop(new_pack);
        // The lock on the old pack goes with `pack`, once both are in place.
        Ok(before.saturating_sub(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(first: u8, n: u8) -> Digest {
        let mut bytes = [n; 32];
        bytes[0] = first;
        Digest(bytes)
    }

    fn packs() -> (tempfile::TempDir, Packs) {
        let dir = tempfile::tempdir().unwrap();
        let packs = Packs::new(dir.path());
        (dir, packs)
    }

    fn stage_in(dir: &Path) -> impl Fn() -> io::Result<NamedTempFile> + '_ {
        move || NamedTempFile::new_in(dir)
    }

    #[test]
    fn the_last_record_of_a_key_wins_and_a_tombstone_removes_it() {
        let (_dir, packs) = packs();
        let (a, b) = (key(7, 1), key(7, 2));
        assert_eq!(packs.get(&a).unwrap(), Got::Absent);
        packs.append(&a, Some(b"one")).unwrap();
        packs.append(&b, Some(b"bee")).unwrap();
        packs.append(&a, Some(b"two")).unwrap();
        assert_eq!(packs.get(&a).unwrap(), Got::Record(b"two".to_vec()));
        assert_eq!(packs.get(&b).unwrap(), Got::Record(b"bee".to_vec()));
        packs.append(&a, None).unwrap();
        assert_eq!(packs.get(&a).unwrap(), Got::Removed);
        assert_eq!(packs.live(), vec![(b, 3)]);
    }

    /// A table of several `SCAN_BLOCK`s, read from its end a block at a time: a key
    /// whose slots sit in different blocks (and across a block's edge) gives its last.
    #[test]
    fn a_lookup_in_a_table_of_many_blocks_finds_each_keys_last_slot() {
        let (_dir, packs) = packs();
        let per_block = SCAN_BLOCK / SLOT;
        let many = |from: usize, to: usize| {
            for n in from..to {
                let mut bytes = [0u8; 32];
                bytes[0] = 9;
                bytes[1..9].copy_from_slice(&(n as u64).to_le_bytes());
                packs.append(&Digest(bytes), Some(b"filler")).unwrap();
            }
        };
        let (early, twice, gone, edge) = (key(9, 200), key(9, 201), key(9, 202), key(9, 203));
        packs.append(&early, Some(b"early")).unwrap();
        packs.append(&twice, Some(b"first")).unwrap();
        packs.append(&gone, Some(b"gone")).unwrap();
        many(0, 2 * per_block);
        packs.append(&twice, Some(b"second")).unwrap();
        many(2 * per_block, 3 * per_block - 10);
        // `edge` is followed by a block less one slot: it is the lowest slot of the first
        // block read.
        packs.append(&edge, Some(b"edge")).unwrap();
        let edge_at = fs::metadata(packs.table_path(9)).unwrap().len() - SLOT as u64;
        many(3 * per_block, 4 * per_block - 2);
        packs.append(&gone, None).unwrap();
        let table_len = fs::metadata(packs.table_path(9)).unwrap().len();
        assert_eq!(table_len - edge_at, SCAN_BLOCK as u64);
        assert!(table_len > 3 * SCAN_BLOCK as u64, "{table_len}");
        assert_eq!(packs.get(&early).unwrap(), Got::Record(b"early".to_vec()));
        assert_eq!(packs.get(&twice).unwrap(), Got::Record(b"second".to_vec()));
        assert_eq!(packs.get(&edge).unwrap(), Got::Record(b"edge".to_vec()));
        assert_eq!(packs.get(&gone).unwrap(), Got::Removed);
        assert_eq!(packs.get(&key(9, 250)).unwrap(), Got::Absent);
        assert_eq!(packs.slot(&early).unwrap().map(|s| s.len), Some(5));
        // A torn slot at the end (a store cut off by a crash) is not read as one.
        let mut table = fs::OpenOptions::new()
            .append(true)
            .open(packs.table_path(9))
            .unwrap();
        table.write_all(&early.0[..20]).unwrap();
        assert_eq!(packs.get(&early).unwrap(), Got::Record(b"early".to_vec()));
    }

    #[test]
    fn a_rewrite_keeps_the_live_records_and_frees_the_rest() {
        let (dir, packs) = packs();
        let keys: Vec<Digest> = (0..20).map(|n| key(3, n)).collect();
        for (n, k) in keys.iter().enumerate() {
            packs.append(k, Some(&vec![b'x'; 100 + n])).unwrap();
            packs.append(k, Some(&vec![b'y'; 100 + n])).unwrap();
        }
        packs.append(&keys[0], None).unwrap();
        let drop: HashSet<Digest> = keys[1..5].iter().copied().collect();
        let freed = packs.rewrite(3, &drop, &stage_in(dir.path())).unwrap();
        assert!(freed > 2000, "{freed}");
        for (n, k) in keys.iter().enumerate() {
            let want = if n < 5 {
                if n == 0 {
                    Got::Removed
                } else {
                    Got::Absent
                }
            } else {
                Got::Record(vec![b'y'; 100 + n])
            };
            // The rewrite drops tombstones: a removed key is then absent.
            let got = packs.get(k).unwrap();
            assert!(
                got == want || (n == 0 && got == Got::Absent),
                "{n}: {got:?}"
            );
        }
        let (_, on_disk, live) = packs.usage()[0];
        assert_eq!(on_disk, live);
        // Dropping the rest removes both files.
        let all: HashSet<Digest> = keys.iter().copied().collect();
        packs.rewrite(3, &all, &stage_in(dir.path())).unwrap();
        assert!(packs.shards().is_empty());
    }

    #[test]
    fn damage_is_found_and_torn_ends_are_cut_off() {
        let (dir, packs) = packs();
        let (a, b) = (key(9, 1), key(9, 2));
        packs.append(&a, Some(b"alpha")).unwrap();
        // A torn slot at the end of the table: not read, and cut off by the next append.
        let table = dir.path().join("packs/09.idx");
        let mut file = fs::OpenOptions::new().append(true).open(&table).unwrap();
        file.write_all(&[1u8; 20]).unwrap();
        assert_eq!(packs.get(&a).unwrap(), Got::Record(b"alpha".to_vec()));
        packs.append(&b, Some(b"beta")).unwrap();
        assert_eq!(fs::metadata(&table).unwrap().len(), 2 * SLOT as u64);
        assert_eq!(packs.get(&b).unwrap(), Got::Record(b"beta".to_vec()));
        // A record overwritten by something else: damaged, not someone else's bytes.
        let pack = dir.path().join("packs/09");
        let mut bytes = fs::read(&pack).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&pack, &bytes).unwrap();
        assert_eq!(packs.get(&a).unwrap(), Got::Damaged);
        assert_eq!(packs.get(&b).unwrap(), Got::Record(b"beta".to_vec()));
        // A slot that points past the end of the pack.
        fs::write(&pack, b"").unwrap();
        assert_eq!(packs.get(&b).unwrap(), Got::Damaged);
    }

    #[test]
    fn a_slot_never_yields_another_keys_record() {
        let (dir, packs) = packs();
        let (a, b) = (key(5, 1), key(5, 2));
        packs.append(&a, Some(b"aaaa")).unwrap();
        packs.append(&b, Some(b"bbbb")).unwrap();
        // b's slot rewritten to point at a's record (a valid slot, by its check).
        let table = dir.path().join("packs/05.idx");
        let mut bytes = fs::read(&table).unwrap();
        let moved = Slot {
            key: b,
            offset: 0,
            len: 4,
        };
        bytes[SLOT..].copy_from_slice(&moved.encode());
        fs::write(&table, &bytes).unwrap();
        assert_eq!(packs.get(&b).unwrap(), Got::Damaged);
    }

    /// A gc killed between its two renames leaves the new pack beside the old table:
    /// a key whose records moved is damaged (a miss), never its superseded version.
    #[test]
    fn a_crash_between_the_renames_never_yields_a_superseded_record() {
        let (dir, packs) = packs();
        let (a, b) = (key(4, 1), key(4, 2));
        packs.append(&a, Some(b"old-a")).unwrap();
        packs.append(&b, Some(b"bbbbb")).unwrap();
        packs.append(&a, Some(b"new-a")).unwrap();
        let table = dir.path().join("packs/04.idx");
        let old_table = fs::read(&table).unwrap();
        packs
            .rewrite(4, &HashSet::new(), &stage_in(dir.path()))
            .unwrap();
        fs::write(&table, &old_table).unwrap();
        for (k, want) in [(a, b"new-a"), (b, b"bbbbb")] {
            match packs.get(&k).unwrap() {
                Got::Record(bytes) => assert_eq!(bytes, want.to_vec()),
                Got::Damaged => {}
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn writers_in_parallel_lose_nothing() {
        let (_dir, packs) = packs();
        let packs = std::sync::Arc::new(packs);
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let packs = packs.clone();
                std::thread::spawn(move || {
                    for n in 0..50u8 {
                        let body = vec![t ^ n; 10 + n as usize];
                        packs.append(&key(1, t * 50 + n), Some(&body)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for t in 0..4u8 {
            for n in 0..50u8 {
                assert_eq!(
                    packs.get(&key(1, t * 50 + n)).unwrap(),
                    Got::Record(vec![t ^ n; 10 + n as usize])
                );
            }
        }
    }
}
