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

/// Whether the metadata says "executable by its owner".
pub fn is_executable(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}
