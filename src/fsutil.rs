//! Small file-system helpers shared by the store, the digest cache and output restore.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

static CACHE_ROOT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Tells `create_private_dir_all` where the cache starts: below it, no symlink is ever
/// followed (the path to it may hold symlinks, like a `~/.cache` on another disk).
pub fn set_cache_root(root: &Path) {
    let _ = CACHE_ROOT.set(root.to_path_buf());
}

/// The cache directory tag (https://bford.info/cachedir/) memo writes into a cache
/// directory it creates: backup tools skip such a directory, and memo repairs what it
/// finds planted in its places only where this file says the directory is its own.
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

const CACHEDIR_TAG_TEXT: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by memo.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// Creates the cache root if it is missing, and tags it as memo's (see `CACHEDIR_TAG`),
/// as it does an existing directory that is empty (`MEMO_DIR=$(mktemp -d)`). Any other
/// existing directory is left as it is: it may be one a user pointed memo at.
pub fn create_cache_root(root: &Path) -> io::Result<()> {
    // The common case, a cache memo made before: one lookup of its tag, no listing.
    if fs::symlink_metadata(root.join(CACHEDIR_TAG)).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let fresh = match fs::read_dir(root) {
        Ok(mut listing) => listing.next().is_none(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A missing root appears with its tag already in it, so that no other memo
            // (a `memo clear` racing the first run) ever sees it untagged.
            if create_tagged(root).is_ok() {
                return Ok(());
            }
            true
        }
        Err(_) => false,
    };
    create_private_dir_all(root)?;
    if fresh {
        // Best effort: without the tag memo only refuses what is planted, never removes.
        let _ = write_file_atomic(&root.join(CACHEDIR_TAG), CACHEDIR_TAG_TEXT.as_bytes());
    }
    Ok(())
}

/// Creates `root` by renaming into place a private directory that already holds the
/// tag. `Err` when it cannot (then the caller creates it the plain way); a root that
/// another process created meanwhile counts as done.
fn create_tagged(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = root
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    let name = root
        .file_name()
        .ok_or_else(|| io::Error::other("no name"))?;
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{}.new-", name.to_string_lossy()))
        .tempdir_in(parent)?;
    fs::set_permissions(staged.path(), fs::Permissions::from_mode(cache_dir_mode()))?;
    let tag = staged.path().join(CACHEDIR_TAG);
    fs::write(&tag, CACHEDIR_TAG_TEXT)?;
    fs::set_permissions(&tag, fs::Permissions::from_mode(cache_file_mode()))?;
    let staged = staged.keep();
    match fs::rename(&staged, root) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_dir_all(&staged);
            if fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Whether the cache root is memo's own, so that memo may remove what it did not make
/// there: a regular file or directory planted where its own belongs, a stray temporary
/// file, the whole contents on `memo clear`. True when the root carries memo's tag. A
/// root without one (a cache made before the tag) is tagged now if it holds nothing but
/// memo's own names and an entry memo wrote (a file `entries/ab/ab…` that starts with
/// memo's entry header). Anything else (a `MEMO_DIR` pointed at a home directory) may
/// hold someone's data: memo then refuses such places, and touches only files with the
/// names it gives its own.
pub fn is_memo_cache() -> bool {
    static OWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        let Some(root) = CACHE_ROOT.get() else {
            return false;
        };
        let tag = root.join(CACHEDIR_TAG);
        if fs::symlink_metadata(&tag).is_ok_and(|m| m.is_file()) {
            return true;
        }
        let Ok(listing) = fs::read_dir(root) else {
            return false;
        };
        for item in listing.flatten() {
            let name = item.file_name();
            let name = name.to_string_lossy();
            let memo_name = matches!(
                name.as_ref(),
                "entries"
                    | "objects"
                    | "usage"
                    | "digests"
                    | "stats"
                    | "locks"
                    | "tmp"
                    | "log.jsonl"
                    | "log.1.jsonl"
                    | "gc-clock"
                    | "summary"
                    | "summary.tail"
                    | "packs"
            ) || name.starts_with("dead-objects")
                || name.starts_with(".tmp")
                || name.starts_with(".trash-");
            if !memo_name {
                return false;
            }
        }
        // Only an entry file counts: a cache with packs was made by a memo that tags its
        // caches, so packs in an untagged directory are this memo's own stores into a
        // user's directory, not evidence that the directory is memo's.
        holds_a_memo_entry(&root.join("entries"))
            && write_file_atomic(&tag, CACHEDIR_TAG_TEXT.as_bytes()).is_ok()
    })
}

/// Whether `entries` holds a shard `ab/` with a file named by a key that starts with
/// memo's entry header: evidence that memo made this directory.
fn holds_a_memo_entry(entries: &Path) -> bool {
    use std::io::Read;
    files_in_shards(entries)
        .into_iter()
        .take(16)
        .any(|(name, path)| {
            let mut head = [0u8; 11];
            name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
                && open_regular(&path, Access::Read)
                    .and_then(|mut f| f.read_exact(&mut head))
                    .is_ok()
                && &head == b"memo-entry "
        })
}

/// A FIFO, socket or device: nothing anyone keeps data in, so safe to remove wherever
/// memo expected its own file or directory.
fn is_special(meta: &fs::Metadata) -> bool {
    let kind = meta.file_type();
    !(kind.is_file() || kind.is_dir() || kind.is_symlink())
}

/// Creates `dir` and its missing parents with the cache's directory mode (0700 unless a
/// shared umask is configured). Below the cache root, every component must be a real
/// directory: a cache written by someone else must not redirect memo's writes through
/// a planted symlink.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let below_root = CACHE_ROOT.get().and_then(|root| {
        dir.strip_prefix(root)
            .ok()
            .map(|rel| (root.clone(), rel.to_path_buf()))
    });
    let Some((root, rel)) = below_root else {
        return create_dir_checked(dir, true);
    };
    create_dir_checked(&root, true)?;
    let mut at = root;
    for part in rel.components() {
        at.push(part);
        create_dir_checked(&at, false)?;
    }
    Ok(())
}

/// Makes sure `dir` is a real directory, creating it if missing. Below the cache root
/// (`!recursive`) the place is memo's own, so anything else found there (a FIFO, a
/// socket, a regular file, a symlink to any of these) is damage and is removed: refusing
/// would stop caching for good. A symlink to a directory is still refused, not removed:
/// someone may have meant it, and memo must not write through it.
fn create_dir_checked(dir: &Path, recursive: bool) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(meta)
            if meta.file_type().is_symlink() && fs::metadata(dir).is_ok_and(|m| m.is_dir()) =>
        {
            return Err(io::Error::other(format!(
                "{} is a symlink, not a directory; refusing to write through it",
                dir.display()
            )))
        }
        Ok(meta) if !recursive && (is_special(&meta) || is_memo_cache()) => {
            match fs::remove_file(dir) {
                // Another memo repairing the same place at once got there first.
                Err(e) if e.kind() != io::ErrorKind::NotFound && !dir.is_dir() => return Err(e),
                _ => {}
            }
        }
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    match DirBuilder::new()
        .recursive(recursive)
        .mode(cache_dir_mode())
        .create(dir)
    {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return create_dir_checked(dir, false)
        }
        other => other?,
    }
    if shared_umask().is_some() {
        // mkdir applied the process umask; the configured one must win.
        fs::set_permissions(dir, fs::Permissions::from_mode(cache_dir_mode()))?;
    }
    Ok(())
}

static SHARED_UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Sets the umask for cache files, for a cache shared by a team (like ccache's `umask`):
/// `0o002` makes them group-writable. Call once, before the cache is touched.
pub fn set_shared_umask(umask: u32) {
    let _ = SHARED_UMASK.set(umask & 0o777);
}

fn shared_umask() -> Option<u32> {
    SHARED_UMASK.get().copied()
}

/// Mode of directories memo creates in the cache.
pub fn cache_dir_mode() -> u32 {
    shared_umask().map_or(0o700, |u| 0o777 & !u)
}

/// Gives a file in the cache the shared mode, when a shared umask is set (files are
/// created 0600 otherwise, and stay so). A file that has it already is left alone: in a
/// team cache it may belong to someone else, and only its owner may chmod it.
pub fn share(file: &fs::File) -> io::Result<()> {
    if shared_umask().is_some() {
        let mode = cache_file_mode();
        if file.metadata()?.permissions().mode() & 0o777 != mode {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Something other than a regular file (a FIFO, a socket, a device, a directory, a
/// symlink) where the cache expects a regular file: corruption, never something to read
/// from, since reading a FIFO blocks forever and a device may never end.
#[derive(Debug, thiserror::Error)]
#[error("{} is not a regular file", path.display())]
pub struct NotRegular {
    pub path: std::path::PathBuf,
}

/// Whether `e` is a `NotRegular` refusal from `open_regular`.
pub fn is_not_regular(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotRegular>())
}

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        NotRegular {
            path: path.to_path_buf(),
        },
    )
}

/// How `open_regular` opens a cache file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read and write in place, created (with the cache's mode) if missing.
    Update,
    /// Append, created if missing.
    Append,
}

/// Opens a file of the cache, refusing anything but a regular file: the open itself
/// cannot block (O_NONBLOCK: a FIFO without a writer would wait forever), a symlink is
/// not followed (O_NOFOLLOW: nothing memo writes in the cache is one), and what was
/// opened is checked with fstat before a byte is read. Every open of a file inside the cache goes through
/// here; a refusal is an error for which `is_not_regular` holds.
pub fn open_regular(path: &Path, access: Access) -> io::Result<fs::File> {
    open_regular_measured(path, access).map(|(file, _)| file)
}

/// `open_regular`, with the metadata its fstat read, so that a caller need not ask again.
pub fn open_regular_measured(path: &Path, access: Access) -> io::Result<(fs::File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    if access != Access::Read {
        // O_NOFOLLOW guards the last component only: a symlink planted as a directory
        // of the cache (`stats/`, `digests/`) would otherwise take the write elsewhere.
        ensure_real_parent(path)?;
    }
    let mut options = fs::OpenOptions::new();
    match access {
        Access::Read => options.read(true),
        Access::Update => options.read(true).write(true).create(true).truncate(false),
        Access::Append => options.append(true).create(true),
    };
    options
        .mode(cache_file_mode())
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC);
    let file = match options.open(path) {
        // ELOOP: a symlink; ENXIO: a socket, or a FIFO opened for writing without a
        // reader; ENODEV, EOPNOTSUPP: a device or special file that cannot be opened.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ELOOP | libc::ENXIO | libc::ENODEV | libc::EOPNOTSUPP)
            ) =>
        {
            return Err(not_regular(path))
        }
        // A device the cgroup forbids (EPERM) and the like: what matters is what it is.
        Err(_) if fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) => {
            return Err(not_regular(path))
        }
        other => other?,
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    // O_NONBLOCK stays set: on a regular file it changes nothing (reads and writes of a
    // regular file never return EAGAIN, and flock takes its own LOCK_NB), and clearing
    // it would cost two system calls on every open of a hit.
    Ok((file, meta))
}

/// For a file below the cache root: makes sure every directory between the root and it
/// is a real one (`create_private_dir_all`, which also creates missing ones and repairs
/// planted ones). Nothing to check elsewhere.
fn ensure_real_parent(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    match CACHE_ROOT.get() {
        Some(root) if parent.starts_with(root) => create_private_dir_all(parent),
        _ => Ok(()),
    }
}

/// The contents of a regular file in the cache (see `open_regular`), at most `limit`
/// bytes of them.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular_measured(path, Access::Read)?;
    read_measured(file, meta.len().min(limit))
}

/// The first `len` bytes of a file that held at least that many when it was measured:
/// one `read` for a file of the cache, no second one to find its end. Bytes appended
/// since are not read, as if the read had come first; a file cut short since gives
/// what is left.
fn read_measured(file: fs::File, len: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The whole contents of a regular file in the cache (see `open_regular`), or an error
/// of kind `FileTooLarge`, without reading it, when it holds more than `limit` bytes.
pub fn read_regular_whole(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let (file, meta) = open_regular_measured(path, Access::Read)?;
    let len = meta.len();
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{} holds {len} bytes, more than {limit}", path.display()),
        ));
    }
    read_measured(file, len)
}

/// Removes what is at `path` if it is not a regular file (what `open_regular` refused),
/// so memo can put its own file there. A directory goes too, with what it holds: `path`
/// is a place where memo keeps a file, so nothing there is anyone's but memo's.
pub fn remove_planted(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) if !is_special(&meta) && !is_memo_cache() => Err(not_regular(path)),
        _ => remove_path(path),
    }
}

/// Removes whatever is at `path`: a directory with its contents, or anything else (a
/// file, a symlink, a FIFO). Nothing there is fine.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// `open_regular` for a file memo owns and may replace: anything else found at `path` is
/// removed and a fresh file created. Also returns whether that happened, so the caller
/// can say so. (Two memos replacing the same planted file at once may each end up with
/// a file of their own, once; a lock or a record taken that way is lost at worst, which
/// costs an update, never a wrong result.)
pub fn open_or_replace(path: &Path, access: Access) -> io::Result<(fs::File, bool)> {
    match open_regular(path, access) {
        Err(e) if is_not_regular(&e) && access != Access::Read => {
            remove_planted(path)?;
            Ok((open_regular(path, access)?, true))
        }
        other => Ok((other?, false)),
    }
}

/// Opens (creating it if missing) a small file in the cache that many processes read and
/// write in place under `flock`: a lock or a record. It gets the cache's file mode. A
/// FIFO, socket or device planted in its place is replaced.
pub fn open_cache_file(path: &Path) -> io::Result<fs::File> {
    let (file, _) = open_or_replace(path, Access::Update)?;
    share(&file)?;
    Ok(file)
}

/// Replaces the file at `path` with `bytes` through a temp file and a rename, so a
/// reader sees the old contents or the new, never a mix. The directory is created if
/// missing; the file gets the cache's file mode.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().expect("a cache file has a parent directory");
    create_private_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    share(tmp.as_file())?;
    persist_replacing(tmp, path)?;
    Ok(())
}

/// Renames a finished temp file to `dest`, the place of a file of the cache. A
/// directory planted there (a rename cannot replace one) is removed first; anything
/// else the rename replaces by itself.
pub fn persist_replacing(staged: tempfile::NamedTempFile, dest: &Path) -> io::Result<fs::File> {
    match staged.persist(dest) {
        Ok(file) => Ok(file),
        Err(e) if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) => {
            remove_planted(dest)?;
            e.file.persist(dest).map_err(|e| e.error)
        }
        Err(e) => Err(e.error),
    }
}

/// Whether an open of a cache file failed for want of its directory: missing, or
/// something else in its place (ENOTDIR), which `create_private_dir_all` repairs.
pub fn lacks_directory(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Whether process `pid` still exists (staging files carry their creator's pid).
fn is_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The pid in a staging name like `stage-1234-abcd` or `.memo-restore-1234-7`.
fn staging_pid(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// Whether `name` is `prefix` + pid + … and that process is gone: a leftover to remove.
pub fn left_by_dead_process(name: &str, prefix: &str) -> bool {
    staging_pid(name, prefix).is_some_and(|pid| !is_alive(pid))
}

/// When the file's inode last changed (its ctime: a write, a chmod or a rename).
pub fn changed_time(meta: &fs::Metadata) -> std::time::SystemTime {
    use std::os::unix::fs::MetadataExt;
    std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.ctime().max(0) as u64, meta.ctime_nsec().max(0) as u32)
}

/// Mode of files memo creates in the cache.
pub fn cache_file_mode() -> u32 {
    shared_umask().map_or(0o600, |u| 0o666 & !u)
}

/// The permission bits a new file gets from the process umask, plus execute bits where
/// read bits are set when `executable` (what `chmod +x` does under the umask, as git).
pub fn file_mode(executable: bool) -> u32 {
    let base = 0o666 & !current_umask();
    if executable {
        base | ((base & 0o444) >> 2)
    } else {
        base
    }
}

#[cfg(test)]
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn current_umask() -> u32 {
    use std::sync::OnceLock;
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        // Reading the umask means setting it; this runs once, before any thread that
        // creates files is started.
        // SAFETY: umask has no memory-safety preconditions.
        let old = unsafe { libc::umask(0o022) };
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        old as u32
    })
}

/// Where the file for `digest` lives in the sharded layout under `dir`: `dir/ab/abcdef…`.
pub fn sharded_path(dir: &Path, digest: &crate::digest::Digest) -> std::path::PathBuf {
    let hex = digest.to_hex();
    dir.join(&hex[..2]).join(hex)
}

/// Whether `path` is a directory itself, not a symlink to one. gc and clear look into
/// a directory of the cache, and remove from it, only then: a symlink planted as
/// `tmp/` or `digests/` must not make them sweep someone else's files.
pub fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Every file two levels below `dir` (`dir/ab/abcdef…`, the cache's sharded layout),
/// with its name. Unreadable shards, and symlinks in place of `dir` or of a shard, are
/// skipped (see `is_real_dir`).
pub fn files_in_shards(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut found = Vec::new();
    each_shard(dir, |shard| {
        for file in fs::read_dir(shard).into_iter().flatten().flatten() {
            if let Some(name) = file.file_name().to_str() {
                found.push((name.to_string(), file.path()));
            }
        }
    });
    found
}

/// Calls `each` with every shard directory under `dir` (`dir/ab`); nothing when `dir`
/// is not a real directory, and only real directories among its entries.
fn each_shard(dir: &Path, mut each: impl FnMut(&Path)) {
    if !is_real_dir(dir) {
        return;
    }
    for shard in fs::read_dir(dir).into_iter().flatten().flatten() {
        if shard.file_type().is_ok_and(|t| t.is_dir()) {
            each(&shard.path());
        }
    }
}

/// Copies `source` to `dest` in blocks of `block` bytes, each written whole (std's copy
/// would write a pipe 8 KiB at a time); the bytes copied.
pub fn copy_in_blocks(
    source: &mut impl io::Read,
    dest: &mut impl io::Write,
    block: usize,
) -> io::Result<u64> {
    let mut buf = vec![0u8; block];
    let mut copied = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match source.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(copied);
        }
        dest.write_all(&buf[..filled])?;
        copied += filled as u64;
    }
}

/// The file to execute to start another memo of this very version: /proc/self/exe on
/// Linux, which stays this process's executable when the file it was started from has
/// been replaced or removed since (an upgrade while memo runs), where `current_exe`
/// would name a file that is gone or a newer memo.
pub fn own_executable() -> io::Result<PathBuf> {
    let proc = Path::new("/proc/self/exe");
    if proc.exists() {
        return Ok(proc.to_path_buf());
    }
    std::env::current_exe()
}

/// The files in the shard directories under `dir` (`dir/xx/NAME`) whose names are
/// digests, listed with readdir: no `stat`, no allocation per name (a cache of 100,000
/// entries lists in a fraction of the time `files_in_shards` takes).
pub fn digests_in_shards(dir: &Path) -> Vec<crate::digest::Digest> {
    let mut found = Vec::new();
    each_shard(dir, |shard| {
        each_name(shard, |name| {
            if let Some(digest) = std::str::from_utf8(name)
                .ok()
                .and_then(|text| text.parse().ok())
            {
                found.push(digest);
            }
        });
    });
    found
}

/// Calls `each` with the name of every entry of directory `dir` but `.` and `..`.
fn each_name(dir: &Path, mut each: impl FnMut(&[u8])) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; the stream is closed below and not used after.
    let stream = unsafe { libc::opendir(c_dir.as_ptr()) };
    if stream.is_null() {
        return;
    }
    loop {
        // SAFETY: `stream` is an open directory stream; the entry it returns stays valid
        // until the next readdir or closedir on it, and is read before either.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name within the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            each(name);
        }
    }
    // SAFETY: `stream` came from opendir and is closed once.
    unsafe { libc::closedir(stream) };
}

/// `faccessat(2)`: whether this process may use `path` in the ways `mode` names.
pub fn check_access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // With the effective ids, as the kernel decides for `open` and `execve` (`access`
    // would ask with the real ones).
    // SAFETY: a valid NUL-terminated string that outlives the call.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the metadata says "executable by its owner".
pub fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// A JSON record as stored: `<checksum> <json>`, then spaces to pad (see
/// `update_json_locked`). The checksum is the first 12 hex digits of the JSON's SHA-256.
fn encode_record(json: &[u8]) -> Vec<u8> {
    let mut out = crate::digest::Digest::of_bytes(json).short().into_bytes();
    out.push(b' ');
    out.extend_from_slice(json);
    out
}

/// A stored record whose checksum does not match, or that is not a record at all.
#[derive(Debug, PartialEq, Eq)]
pub struct DamagedRecord;

/// The JSON of a stored record; `Err` when it is damaged (bad checksum or not a record),
/// `Ok(None)` when the file is empty (a record being created).
pub fn decode_record(bytes: &[u8]) -> Result<Option<&[u8]>, DamagedRecord> {
    let end = bytes.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    if bytes.is_empty() {
        return Ok(None);
    }
    let space = bytes.iter().position(|&b| b == b' ').ok_or(DamagedRecord)?;
    let (check, json) = (&bytes[..space], &bytes[space + 1..]);
    if crate::digest::Digest::of_bytes(json).short().as_bytes() != check {
        return Err(DamagedRecord);
    }
    Ok(Some(json))
}

/// A record as read: its value, and whether the file held a damaged one (then the
/// value is the default).
pub struct Loaded<T> {
    pub value: T,
    pub was_corrupt: bool,
}

fn parse_record<T: Default + serde::de::DeserializeOwned>(bytes: &[u8]) -> Loaded<T> {
    match decode_record(bytes) {
        Ok(None) => Loaded {
            value: T::default(),
            was_corrupt: false,
        },
        Ok(Some(json)) => match serde_json::from_slice(json) {
            Ok(value) => Loaded {
                value,
                was_corrupt: false,
            },
            Err(_) => Loaded {
                value: T::default(),
                was_corrupt: true,
            },
        },
        Err(DamagedRecord) => Loaded {
            value: T::default(),
            was_corrupt: true,
        },
    }
}

/// Read-modify-write of a small JSON record at `path` under an exclusive `flock`, so
/// concurrent updaters never lose one another's changes. A missing record reads as
/// `T::default()`; so does a damaged one, and `change` is told (second argument).
///
/// The new record overwrites the old one in place with one `pwrite`, padded with spaces
/// to at least the old length, so the file never shrinks: no truncation (truncating to
/// zero makes ext4 flush on close, which cost a hit a third of a millisecond), and a
/// process killed mid-update leaves the old or the new record, never half of one.
pub fn update_json_locked<T, F>(path: &Path, change: F) -> io::Result<T>
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce(&mut T, bool),
{
    use std::io::Read;
    use std::os::unix::fs::FileExt as _;
    let (mut file, replaced) = match open_or_replace(path, Access::Update) {
        Err(e) if lacks_directory(&e) => {
            create_private_dir_all(path.parent().expect("a record path has a parent"))?;
            open_or_replace(path, Access::Update)?
        }
        other => other?,
    };
    share(&file)?;
    fs2::FileExt::lock_exclusive(&file)?;
    let mut text = Vec::new();
    let read = (&mut file)
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut text);
    let oversized = text.len() as u64 > MAX_RECORD_BYTES;
    let loaded = match read {
        Ok(_) if !replaced && !oversized => parse_record(&text),
        _ => Loaded {
            value: T::default(),
            was_corrupt: true,
        },
    };
    let mut record = loaded.value;
    change(&mut record, loaded.was_corrupt);
    let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
    let mut bytes = encode_record(&json);
    if oversized {
        // Damage (a planted or garbled giant): the one case where the file shrinks.
        file.write_all_at(&bytes, 0)?;
        file.set_len(bytes.len() as u64)?;
    } else {
        if bytes.len() < text.len() {
            bytes.resize(text.len(), b' ');
        }
        file.write_all_at(&bytes, 0)?;
    }
    fs2::FileExt::unlock(&file)?;
    Ok(record)
}

/// Reads a record written by `update_json_locked` (under a shared lock). `None` when
/// there is none or it is damaged.
pub fn read_json_locked<T: Default + serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    use std::io::Read;
    // A FIFO or device in its place reads as no record; the next update replaces it.
    let mut file = open_regular(path, Access::Read).ok()?;
    fs2::FileExt::lock_shared(&file).ok()?;
    let mut text = Vec::new();
    (&mut file)
        .take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut text)
        .ok()?;
    let _ = fs2::FileExt::unlock(&file);
    if text.len() as u64 > MAX_RECORD_BYTES {
        return None;
    }
    let loaded = parse_record(&text);
    (!loaded.was_corrupt).then_some(loaded.value)
}

/// A record (counters, a usage record) longer than this is damage, never read in full:
/// a planted giant (a sparse file of many gigabytes) would otherwise take every memo
/// the time to read it, and the memory. An honest one holds one command line.
const MAX_RECORD_BYTES: u64 = 8 * 1024 * 1024;
