//! Small file-system helpers shared by the store, the digest cache and output restore.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
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

/// `access(2)`: whether this process may use `path` in the ways `mode` names.
pub fn check_access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c_path.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the metadata says "executable by its owner".
pub fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Read-modify-write of a small JSON record at `path` under an exclusive `flock`, so
/// concurrent updaters never lose one another's changes. A missing or garbled record
/// reads as `T::default()`.
///
/// The new record overwrites the old one in place with one `pwrite`, padded with spaces
/// to at least the old length, so the file never shrinks: no truncation (truncating to
/// zero makes ext4 flush on close, which cost a hit a third of a millisecond), and a
/// process killed mid-update leaves the old or the new record, never half of one.
pub fn update_json_locked<T, F>(path: &Path, change: F) -> io::Result<T>
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned,
    F: FnOnce(&mut T),
{
    use std::io::Read;
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt};
    let open = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir_all(path.parent().expect("a record path has a parent"))?;
            open()?
        }
        other => other?,
    };
    fs2::FileExt::lock_exclusive(&file)?;
    let mut text = Vec::new();
    let mut record: T = match file.read_to_end(&mut text) {
        Ok(_) => serde_json::from_slice(&text).unwrap_or_default(),
        Err(_) => T::default(),
    };
    change(&mut record);
    let mut bytes = serde_json::to_vec(&record).map_err(io::Error::other)?;
    if bytes.len() < text.len() {
        bytes.resize(text.len(), b' ');
    }
    file.write_all_at(&bytes, 0)?;
    fs2::FileExt::unlock(&file)?;
    Ok(record)
}

/// Reads a JSON record written by `update_json_locked` (under a shared lock).
pub fn read_json_locked<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    use std::io::Read;
    let mut file = fs::File::open(path).ok()?;
    fs2::FileExt::lock_shared(&file).ok()?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).ok()?;
    let _ = fs2::FileExt::unlock(&file);
    serde_json::from_slice(&text).ok()
}
