//! Declared output files: recording them after a run, restoring them on a hit.
//!
//! Owns the walk of `--output` paths into entry nodes, and the restore. A declared path
//! that is a symlink to an existing file or directory stands for what the command wrote
//! through it: its target's contents are recorded, and a hit writes through the link
//! again while it leads to the recorded kind, or dangles where the target could be
//! created (its directory exists). Below that root, symlinks are
//! recorded and restored as links, never followed.
//!
//! A restore writes each recorded file atomically (a temporary file beside it, renamed
//! into place), creates recorded directories and links, and leaves every file it did not
//! record where it is: several steps may share an output directory. It never deletes a
//! non-empty directory; it fails instead, and the caller runs the command. Temporary
//! files are removed on every error path; those of a memo killed midway carry its pid and
//! are swept by the next restore in that directory. docs/format.md has the rules.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::bytes::ByteString;
use crate::digest::{Digest, Hasher, CHUNK};
use crate::fsutil::{file_mode, is_executable};
use crate::index::{Blob, Node, NodeKind, Output, INLINE_MAX, INLINE_TOTAL_MAX};
use crate::store::{Object, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("declared output '{0}' was not created by the command")]
    Missing(PathBuf),
    #[error("output '{0}' is neither a file, a directory nor a symlink")]
    Unsupported(PathBuf),
    #[error("cannot read output '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the result would make a {size}-byte entry, more than memo reads back \
         ({limit} bytes): too many output files, or too long names"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the declared outputs of one entry may keep inline, all files together: the
/// entry's cap less the two streams' share.
const INLINE_OUTPUTS_MAX: u64 = INLINE_TOTAL_MAX - 2 * INLINE_MAX;

/// How many more bytes may be kept inline in the entry being recorded.
struct InlineBudget(Cell<u64>);

impl InlineBudget {
    fn new(bytes: u64) -> InlineBudget {
        InlineBudget(Cell::new(bytes))
    }

    fn left(&self) -> u64 {
        self.0.get()
    }

    fn spend(&self, bytes: u64) {
        self.0.set(self.0.get().saturating_sub(bytes));
    }
}

/// Stores the contents of a file as a blob: inline when small, else as an object.
/// `path` names the file `source` reads, for error messages.
pub fn store_blob(
    source: impl Read,
    path: &Path,
    size_hint: u64,
    store: &dyn Store,
) -> Result<Blob, RecordError> {
    store_blob_within(
        source,
        path,
        size_hint,
        store,
        &InlineBudget::new(INLINE_MAX),
    )
}

/// `store_blob`, keeping the blob inline only if it fits what `budget` has left.
fn store_blob_within(
    mut source: impl Read,
    path: &Path,
    size_hint: u64,
    store: &dyn Store,
    budget: &InlineBudget,
) -> Result<Blob, RecordError> {
    let read_error = |e| read_error(path, e);
    let limit = INLINE_MAX.min(budget.left());
    if size_hint <= limit {
        let mut bytes = Vec::with_capacity(size_hint as usize);
        source
            .by_ref()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 <= limit {
            budget.spend(bytes.len() as u64);
            return Ok(Blob {
                digest: Digest::of_bytes(&bytes),
                size: bytes.len() as u64,
                inline: Some(ByteString(bytes)),
            });
        }
        // It grew past the inline limit while being read: store it as an object.
        return store_object(io::Cursor::new(bytes).chain(source), path, store);
    }
    let mut progress = crate::progress::Progress::new(size_hint, "storing");
    store_object(progress.reader(source), path, store)
}
fn store_object(
    mut source: impl Read,
    path: &Path,
    store: &dyn Store,
) -> Result<Blob, RecordError> {
    let mut staged = store.stage()?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(path, e)),
        };
        staged
            .write_all(&buf[..n])
            .map_err(|e| StoreError::io("cannot write", staged.path(), e))?;
        hasher.update(&buf[..n]);
    }
    let (digest, size) = hasher.finish();
    store.put_object(&digest, staged)?;
    Ok(Blob {
        digest,
        size,
        inline: None,
    })
}

/// Records every declared output. Fails if one is missing: such a result is not stored.
pub fn record_outputs(declared: &[PathBuf], store: &dyn Store) -> Result<Vec<Output>, RecordError> {
    let budget = InlineBudget::new(INLINE_OUTPUTS_MAX);
    // What a killed restore left beside an output goes now, even if no later call is a
    // hit that would sweep it; once per directory, however many outputs share it.
    let mut swept = Swept::default();
    for path in declared {
        swept.sweep(parent_or_dot(path));
    }
    declared
        .iter()
        .map(|path| record_output(path, store, &budget))
        .collect()
}

fn record_output(
    path: &Path,
    store: &dyn Store,
    budget: &InlineBudget,
) -> Result<Output, RecordError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordError::Missing(path.into()))
        }
        Err(e) => return Err(read_error(path, e)),
    };
    // `-o build` where build -> real/: the command wrote through the link, so its
    // target's contents are the output. A dangling link is recorded as a link.
    let meta = match fs::metadata(path) {
        Ok(target) if meta.is_symlink() && (target.is_dir() || target.is_file()) => target,
        _ => meta,
    };
    let mut nodes = vec![Node {
        path: ByteString::default(),
        kind: record_node(path, &meta, store, budget)?,
    }];
    if meta.is_dir() {
        let walk = walkdir::WalkDir::new(path)
            .min_depth(1)
            .follow_root_links(true)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            // What a killed restore left behind is memo's, never the command's output;
            // it goes now, even if no later call is a hit that would sweep it.
            .filter_entry(|e| {
                let ours = e
                    .file_name()
                    .as_bytes()
                    .starts_with(RESTORE_PREFIX.as_bytes());
                if ours {
                    remove_if_left_by_dead_restore(e.path());
                }
                !ours
            });
        for entry in walk {
            let entry = entry.map_err(|e| {
                let at = e.path().unwrap_or(path).to_path_buf();
                read_error(&at, e.into())
            })?;
            let meta = entry
                .metadata()
                .map_err(|e| read_error(entry.path(), e.into()))?;
            let relative = entry
                .path()
                .strip_prefix(path)
                .expect("walk stays under its root");
            nodes.push(Node {
                path: ByteString::from(relative),
                kind: record_node(entry.path(), &meta, store, budget)?,
            });
        }
    }
    Ok(Output {
        path: ByteString::from(path),
        nodes,
    })
}

fn read_error(path: &Path, source: io::Error) -> RecordError {
    RecordError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The node for `path`, whose metadata (followed or not, as the caller decided) is `meta`.
fn record_node(
    path: &Path,
    meta: &fs::Metadata,
    store: &dyn Store,
    budget: &InlineBudget,
) -> Result<NodeKind, RecordError> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(|e| read_error(path, e))?;
        Ok(NodeKind::Symlink {
            target: ByteString::from(target.as_path()),
        })
    } else if kind.is_dir() {
        Ok(NodeKind::Dir)
    } else if kind.is_file() {
        let file = File::open(path).map_err(|e| read_error(path, e))?;
        let blob = store_blob_within(file, path, meta.len(), store, budget)?;
        Ok(NodeKind::File {
            blob,
            executable: is_executable(meta),
        })
    } else {
        Err(RecordError::Unsupported(path.to_path_buf()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot restore output '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "cannot restore output '{0}': a non-empty directory is where the command wrote \
         a file, and memo deletes no directory"
    )]
    Occupied(PathBuf),
    #[error("cannot restore output '{0}': it is not in place after the restore")]
    NotInPlace(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A blob's bytes, verified against its digest, ready to read.
pub enum BlobReader {
    Inline(io::Cursor<Vec<u8>>),
    /// A concrete file, so that copying it to stdout can use the kernel's zero-copy paths.
    Object(File),
    /// A compressed object, decompressed as it is read.
    Compressed(Box<crate::store::compression::Decoder>),
}

impl BlobReader {
    /// Copies the whole blob to `dest` (a blocking descriptor).
    pub fn copy_to(self, dest: &mut File) -> io::Result<u64> {
        match self {
            BlobReader::Inline(mut bytes) => io::copy(&mut bytes, dest),
            BlobReader::Object(mut file) => {
                if is_pipe(dest) {
                    return copy_to_pipe(&mut file, dest);
                }
                // To a file: copy_file_range, which std uses here.
                io::copy(&mut file, dest)
            }
            BlobReader::Compressed(mut decoder) => {
                if is_pipe(dest) {
                    grow_pipe(dest);
                }
                decoder.copy_to(dest)
            }
        }
    }
}

/// Copies `source` to `dest` in blocks of `PIPE_CHUNK`, each written whole: std's copy
/// would write a pipe 8 KiB at a time.
fn copy_in_large_blocks(source: &mut impl Read, dest: &mut File) -> io::Result<u64> {
    crate::fsutil::copy_in_blocks(source, dest, PIPE_CHUNK)
}

/// Asks for a pipe buffer of `PIPE_CHUNK` (best effort; it helps the reader too).
fn grow_pipe(dest: &File) {
    use std::os::fd::AsRawFd;
    crate::capture::streams::grow_pipe(dest.as_raw_fd(), PIPE_CHUNK);
}

fn is_pipe(file: &File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    file.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

/// How much one call moves into a pipe at most, and the pipe buffer asked for.
const PIPE_CHUNK: usize = 1 << 20;

/// Copies `file` from its current position into the pipe `dest`. std's copy falls back
/// to 8 KiB reads and writes for a pipe: 25,000 writes for 200 MB against `cat`'s
/// 1,600. Here splice(2) moves the pages without a copy through memory, after asking
/// for a 1 MiB pipe buffer (best effort; it helps the reader too); where splice is not
/// supported, 1 MiB reads and writes.
fn copy_to_pipe(file: &mut File, dest: &mut File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut copied = 0u64;
    #[cfg(target_os = "linux")]
    {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size >= PIPE_CHUNK as u64 {
            grow_pipe(dest);
        }
        loop {
            // SAFETY: both descriptors are valid; offsets are the files' own (null).
            let moved = unsafe {
                libc::splice(
                    file.as_raw_fd(),
                    std::ptr::null_mut(),
                    dest.as_raw_fd(),
                    std::ptr::null_mut(),
                    PIPE_CHUNK,
                    libc::SPLICE_F_MORE,
                )
            };
            match moved {
                0 => return Ok(copied),
                n if n > 0 => copied += n as u64,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        // Not for this file system or pipe: copy what is left below.
                        Some(libc::EINVAL) | Some(libc::ENOSYS) => break,
                        _ => return Err(e),
                    }
                }
            }
        }
    }
    Ok(copied + copy_in_large_blocks(file, dest)?)
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlobReader::Inline(bytes) => bytes.read(buf),
            BlobReader::Object(file) => file.read(buf),
            BlobReader::Compressed(decoder) => decoder.read(buf),
        }
    }
}

/// Opens a blob's bytes for reading, verified against its digest and size.
pub fn open_blob(blob: &Blob, store: &dyn Store) -> Result<BlobReader, StoreError> {
    let corrupt = || StoreError::CorruptObject {
        digest: blob.digest.to_hex(),
    };
    match &blob.inline {
        Some(bytes) if Digest::of_bytes(bytes.as_bytes()) == blob.digest => {
            Ok(BlobReader::Inline(io::Cursor::new(bytes.0.clone())))
        }
        Some(_) => Err(corrupt()),
        None => match store.open_object(&blob.digest, blob.size)? {
            Object::Raw(file) => {
                let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                if size != blob.size {
                    return Err(corrupt());
                }
                Ok(BlobReader::Object(file))
            }
            // open_object checked the raw size while it verified the bytes.
            Object::Compressed(decoder) => Ok(BlobReader::Compressed(decoder)),
        },
    }
}

/// Restores every output at its declared path. The entry was validated on decode, so node
/// paths are relative and free of `..`.
pub fn restore_outputs(outputs: &[Output], store: &dyn Store) -> Result<(), RestoreError> {
    let mut restore = Restore {
        store,
        swept: Swept::default(),
    };
    for output in outputs {
        restore.output(output)?;
    }
    Ok(())
}

/// Restores are written beside their destination under this prefix, then the pid.
const RESTORE_PREFIX: &str = ".memo-restore-";

struct Restore<'a> {
    store: &'a dyn Store,
    swept: Swept,
}

impl Restore<'_> {
    fn output(&mut self, output: &Output) -> Result<(), RestoreError> {
        let dest = output.path.to_path_buf();
        let (root, rest) = output
            .nodes
            .split_first()
            .expect("validated: an output has a root");
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        match &root.kind {
            NodeKind::Dir => {
                // Through a link to a directory, as the command wrote; else a directory.
                if let Some(target) = dangling_target(&dest) {
                    fs::create_dir(&target).map_err(|e| write_error(&target, e))?;
                } else if !fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
                    self.node(&dest, &NodeKind::Dir)?;
                }
                for node in rest {
                    let at = dest.join(OsStr::from_bytes(node.path.as_bytes()));
                    self.node(&at, &node.kind)?;
                }
            }
            NodeKind::File { .. } => {
                let through_link = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_symlink())
                    && fs::metadata(&dest).is_ok_and(|m| m.is_file());
                let at = if through_link {
                    fs::canonicalize(&dest).map_err(|e| write_error(&dest, e))?
                } else {
                    dangling_target(&dest).unwrap_or_else(|| dest.clone())
                };
                self.node(&at, &root.kind)?;
            }
            NodeKind::Symlink { .. } => self.node(&dest, &root.kind)?,
        }
        // A hit never reports success while a declared output's content is missing.
        let in_place = match &root.kind {
            NodeKind::Dir => fs::metadata(&dest).is_ok_and(|m| m.is_dir()),
            NodeKind::File { blob, .. } => {
                fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == blob.size)
            }
            NodeKind::Symlink { .. } => fs::symlink_metadata(&dest).is_ok_and(|m| m.is_symlink()),
        };
        if !in_place {
            return Err(RestoreError::NotInPlace(dest));
        }
        Ok(())
    }

    /// Puts one recorded node at `at`, never following a symlink found there.
    fn node(&mut self, at: &Path, kind: &NodeKind) -> Result<(), RestoreError> {
        let existing = match fs::symlink_metadata(at) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(write_error(at, e)),
        };
        let is_dir = existing.as_ref().is_some_and(|m| m.is_dir());
        match kind {
            NodeKind::Dir if is_dir => Ok(()),
            NodeKind::Dir => {
                if existing.is_some() {
                    // A file or a link where the command made a directory.
                    fs::remove_file(at).map_err(|e| write_error(at, e))?;
                }
                match fs::create_dir(at) {
                    Err(e) if !(e.kind() == io::ErrorKind::AlreadyExists && at.is_dir()) => {
                        Err(write_error(at, e))
                    }
                    _ => Ok(()),
                }
            }
            NodeKind::File { .. } | NodeKind::Symlink { .. } => {
                if is_dir {
                    // Only an empty directory goes: rename cannot replace it, and a
                    // non-empty one holds files memo did not write.
                    fs::remove_dir(at).map_err(|e| match e.kind() {
                        io::ErrorKind::DirectoryNotEmpty => RestoreError::Occupied(at.into()),
                        _ => write_error(at, e),
                    })?;
                }
                let dir = parent_or_dot(at);
                self.swept.sweep(dir);
                match kind {
                    NodeKind::File { blob, executable } => {
                        self.write_file(dir, at, blob, *executable)
                    }
                    NodeKind::Symlink { target } => write_symlink(dir, at, target),
                    NodeKind::Dir => unreachable!("handled above"),
                }
            }
        }
    }

    /// Writes a file's bytes to a temporary file in `dir`, then renames it to `at`.
    /// The temporary file is removed on every error path (NamedTempFile's drop).
    fn write_file(
        &self,
        dir: &Path,
        at: &Path,
        blob: &Blob,
        executable: bool,
    ) -> Result<(), RestoreError> {
        let source = open_blob(blob, self.store)?;
        let mut staged = tempfile::Builder::new()
            .prefix(&format!("{RESTORE_PREFIX}{}-", std::process::id()))
            .tempfile_in(dir)
            .map_err(|e| write_error(at, e))?;
        let progress = crate::progress::Progress::new(blob.size, "restoring");
        if progress.is_active() {
            // Chunk by chunk, to advance the bar; each chunk still copies in the kernel.
            copy_measured(source, staged.as_file_mut(), progress)
        } else {
            source.copy_to(staged.as_file_mut())
        }
        .map_err(|e| write_error(at, e))?;
        staged
            .as_file()
            .set_permissions(fs::Permissions::from_mode(file_mode(executable)))
            .map_err(|e| write_error(at, e))?;
        // rename replaces a file or a symlink at `at`, never following it.
        staged.persist(at).map_err(|e| write_error(at, e.error))?;
        Ok(())
    }
}

/// Copies `source` to `dest` in chunks, advancing `progress` after each.
fn copy_measured(
    mut source: BlobReader,
    dest: &mut File,
    mut progress: crate::progress::Progress,
) -> io::Result<u64> {
    const STEP: u64 = 8 << 20;
    let mut total = 0;
    loop {
        let n = match &mut source {
            BlobReader::Inline(bytes) => io::copy(&mut bytes.take(STEP), dest)?,
            BlobReader::Object(file) => io::copy(&mut file.take(STEP), dest)?,
            BlobReader::Compressed(decoder) => {
                copy_in_large_blocks(&mut decoder.as_mut().take(STEP), dest)?
            }
        };
        if n == 0 {
            return Ok(total);
        }
        total += n;
        progress.advance(n);
    }
}

/// Directories already cleared of what killed restores left there.
#[derive(Default)]
struct Swept(HashSet<PathBuf>);

impl Swept {
    /// Removes, once per directory, what restores killed midway left in `dir`.
    fn sweep(&mut self, dir: &Path) {
        if self.0.insert(dir.to_path_buf()) {
            sweep_dir(dir);
        }
    }
}

/// Where the dangling symlink at `dest` leads, when a command writing through it would
/// create its target there: the target's directory exists and nothing is at the target
/// itself. A chain of links (`out.txt -> l2 -> data/out.txt`) is followed to its end, as
/// the kernel follows it when the command writes. `None` for anything else.
fn dangling_target(dest: &Path) -> Option<PathBuf> {
    let mut link = dest.to_path_buf();
    // The kernel's limit on links followed in one path (ELOOP past it).
    for _ in 0..40 {
        if !fs::symlink_metadata(&link).is_ok_and(|m| m.is_symlink()) {
            return None;
        }
        match fs::metadata(&link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            _ => return None,
        }
        // An absolute target replaces the base in `join`.
        let target = parent_or_dot(&link).join(fs::read_link(&link).ok()?);
        if !fs::metadata(parent_or_dot(&target)).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(target),
            Ok(m) if m.is_symlink() => link = target,
            _ => return None,
        }
    }
    None
}

/// The directory `path` is in, `.` for a bare name.
fn parent_or_dot(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes what restores killed midway left in `dir`.
fn sweep_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        remove_if_left_by_dead_restore(&entry.path());
    }
}

/// Removes `path` if it is a restore's temporary file whose memo is dead.
fn remove_if_left_by_dead_restore(path: &Path) {
    let name = path.file_name().unwrap_or_default();
    if !crate::fsutil::left_by_dead_process(name.to_str().unwrap_or_default(), RESTORE_PREFIX) {
        return;
    }
    // Directories too: what a memo before per-file restores staged.
    let _ = crate::fsutil::remove_path(path);
}

fn write_error(path: &Path, source: io::Error) -> RestoreError {
    RestoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a symlink under a temporary name in `dir`, then renames it to `at`.
fn write_symlink(dir: &Path, at: &Path, target: &ByteString) -> Result<(), RestoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let staged = dir.join(format!("{RESTORE_PREFIX}{}-link{n}", std::process::id()));
    std::os::unix::fs::symlink(OsStr::from_bytes(target.as_bytes()), &staged)
        .map_err(|e| write_error(at, e))?;
    fs::rename(&staged, at).map_err(|e| {
        let _ = fs::remove_file(&staged);
        write_error(at, e)
    })
}
