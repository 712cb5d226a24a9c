//! Declared output files: recording them after a run, restoring them on a hit.
//!
//! Owns the walk of `--output` paths into entry nodes, and the restore, which builds each
//! output beside its destination and renames it into place: a reader sees the old output
//! or the new one, never a mix. Restore writes only at the declared paths and below them,
//! and replaces (never follows) a symlink found where an output should be.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::bytes::ByteString;
use crate::digest::{Digest, Hasher, CHUNK};
use crate::fsutil::{file_mode, is_executable};
use crate::index::{Blob, Node, NodeKind, Output, INLINE_MAX};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("declared output '{0}' was not created by the command")]
    Missing(PathBuf),
    #[error("output '{0}' is neither a file, a directory nor a symlink")]
    Unsupported(PathBuf),
    #[error("cannot read output '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores the contents of a file as a blob: inline when small, else as an object.
/// `path` names the file `source` reads, for error messages.
pub fn store_blob(
    mut source: impl Read,
    path: &Path,
    size_hint: u64,
    store: &dyn Store,
) -> Result<Blob, RecordError> {
    let read_error = |e| read_error(path, e);
    if size_hint <= INLINE_MAX {
        let mut bytes = Vec::with_capacity(size_hint as usize);
        source
            .by_ref()
            .take(INLINE_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 <= INLINE_MAX {
            return Ok(Blob {
                digest: Digest::of_bytes(&bytes),
                size: bytes.len() as u64,
                inline: Some(ByteString(bytes)),
            });
        }
        // It grew past the inline limit while being read: store it as an object.
        return store_object(io::Cursor::new(bytes).chain(source), path, store);
    }
    store_object(source, path, store)
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
    declared
        .iter()
        .map(|path| record_output(path, store))
        .collect()
}

fn record_output(path: &Path, store: &dyn Store) -> Result<Output, RecordError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordError::Missing(path.into()))
        }
        Err(e) => return Err(read_error(path, e)),
    };
    let mut nodes = vec![Node {
        path: ByteString::default(),
        kind: record_node(path, &meta, store)?,
    }];
    if meta.is_dir() {
        let walk = walkdir::WalkDir::new(path)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name();
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
                kind: record_node(entry.path(), &meta, store)?,
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

fn record_node(
    path: &Path,
    meta: &fs::Metadata,
    store: &dyn Store,
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
        let blob = store_blob(file, path, meta.len(), store)?;
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A blob's bytes, verified against its digest, ready to read.
pub enum BlobReader {
    Inline(io::Cursor<Vec<u8>>),
    /// A concrete file, so that copying it to stdout can use the kernel's zero-copy paths.
    Object(File),
}

impl BlobReader {
    /// Copies the whole blob to `dest`.
    pub fn copy_to(self, dest: &mut File) -> io::Result<u64> {
        match self {
            BlobReader::Inline(mut bytes) => io::copy(&mut bytes, dest),
            BlobReader::Object(mut file) => io::copy(&mut file, dest),
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlobReader::Inline(bytes) => bytes.read(buf),
            BlobReader::Object(file) => file.read(buf),
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
        None => {
            let file = store.open_object(&blob.digest)?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if size != blob.size {
                return Err(corrupt());
            }
            Ok(BlobReader::Object(file))
        }
    }
}

/// Restores every output at its declared path. The entry was validated on decode, so node
/// paths are relative and free of `..`.
pub fn restore_outputs(outputs: &[Output], store: &dyn Store) -> Result<(), RestoreError> {
    for output in outputs {
        restore_output(output, store)?;
    }
    Ok(())
}

fn restore_output(output: &Output, store: &dyn Store) -> Result<(), RestoreError> {
    let dest = output.path.to_path_buf();
    let write_error = |e: io::Error| RestoreError::Write {
        path: dest.clone(),
        source: e,
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(write_error)?;
    let (root, rest) = output
        .nodes
        .split_first()
        .expect("validated: an output has a root");
    match &root.kind {
        NodeKind::Dir => {
            sweep_dead_staging(&parent);
            let staging = tempfile::Builder::new()
                .prefix(&format!("{RESTORE_PREFIX}{}-", std::process::id()))
                .tempdir_in(&parent)
                .map_err(write_error)?;
            for node in rest {
                let at = staging.path().join(OsStr::from_bytes(node.path.as_bytes()));
                write_node(&at, &node.kind, store)?;
            }
            fs::set_permissions(
                staging.path(),
                fs::Permissions::from_mode(0o777 & file_mode(true)),
            )
            .map_err(write_error)?;
            let built = staging.keep();
            replace(&built, &dest).map_err(|e| {
                let _ = fs::remove_dir_all(&built);
                write_error(e)
            })
        }
        kind => {
            sweep_dead_staging(&parent);
            let staging_name = staging_name(&parent);
            write_node(&staging_name, kind, store)?;
            replace(&staging_name, &dest).map_err(|e| {
                let _ = fs::remove_file(&staging_name);
                write_error(e)
            })
        }
    }
}

/// Restores are built beside their destination under this prefix, then the pid.
const RESTORE_PREFIX: &str = ".memo-restore-";

fn staging_name(parent: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!("{RESTORE_PREFIX}{}-{n}", std::process::id()))
}

/// Removes what a restore killed midway left in `parent` (its pid is gone).
fn sweep_dead_staging(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        if crate::fsutil::left_by_dead_process(name, RESTORE_PREFIX) {
            let path = entry.path();
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => drop(fs::remove_dir_all(&path)),
                Ok(_) => drop(fs::remove_file(&path)),
                Err(_) => {}
            }
        }
    }
}

fn write_node(at: &Path, kind: &NodeKind, store: &dyn Store) -> Result<(), RestoreError> {
    let write_error = |e: io::Error| RestoreError::Write {
        path: at.to_path_buf(),
        source: e,
    };
    match kind {
        NodeKind::Dir => fs::create_dir(at).map_err(write_error),
        NodeKind::Symlink { target } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target.as_bytes()), at)
                .map_err(write_error)
        }
        NodeKind::File { blob, executable } => {
            let source = open_blob(blob, store)?;
            // create_new: the staging tree is fresh, so nothing may already be there.
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .open(at)
                .map_err(write_error)?;
            source.copy_to(&mut file).map_err(write_error)?;
            file.set_permissions(fs::Permissions::from_mode(file_mode(*executable)))
                .map_err(write_error)
        }
    }
}

/// Moves `built` to `dest`, replacing whatever is there: a directory is swapped out
/// atomically where the file system allows and then deleted; a file or symlink is
/// replaced by the rename itself (rename never follows a symlink at its target).
fn replace(built: &Path, dest: &Path) -> io::Result<()> {
    let existing = match fs::symlink_metadata(dest) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let built_is_dir = fs::symlink_metadata(built)?.is_dir();
    match existing {
        Some(meta) if meta.is_dir() => {
            if exchange(built, dest).is_ok() {
                // `built` now holds the old tree.
                return fs::remove_dir_all(built);
            }
            let old = staging_name(dest.parent().unwrap_or(Path::new(".")));
            fs::rename(dest, &old)?;
            fs::rename(built, dest)?;
            fs::remove_dir_all(&old)
        }
        Some(_) if built_is_dir => {
            fs::remove_file(dest)?;
            fs::rename(built, dest)
        }
        _ => fs::rename(built, dest),
    }
}

/// Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both strings are valid, NUL-terminated, and outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
