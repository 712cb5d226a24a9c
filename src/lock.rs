//! Named exclusive locks in the cache directory (`locks/NAME`), on `flock`: the kernel
//! drops a lock when its holder dies, however it dies, so a waiter then takes over.
//!
//! Per-key locks would pile up as files, so a `Lock::transient` is unlinked by its holder
//! just before release. A waiter that then wins the lock on the unlinked inode notices
//! (the path no longer names the file it locked) and tries again on a fresh file, so two
//! processes can never both believe they hold the lock.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::fsutil::{create_private_dir_all, open_cache_file};

pub struct Lock {
    file: File,
    path: PathBuf,
    transient: bool,
}

impl Lock {
    /// Waits for the lock at `dir/name`, which stays on disk (for long-lived names).
    pub fn wait(dir: &Path, name: &str) -> io::Result<Lock> {
        acquire(dir, name, true, false).map(|l| l.expect("a blocking lock is always acquired"))
    }

    /// Takes the lock at `dir/name` if it is free; `Ok(None)` if someone holds it.
    pub fn try_take(dir: &Path, name: &str, transient: bool) -> io::Result<Option<Lock>> {
        acquire(dir, name, false, transient)
    }

    /// Waits for the lock at `dir/name`, removed from disk when released.
    pub fn wait_transient(dir: &Path, name: &str) -> io::Result<Lock> {
        acquire(dir, name, true, true).map(|l| l.expect("a blocking lock is always acquired"))
    }
}

fn acquire(dir: &Path, name: &str, wait: bool, transient: bool) -> io::Result<Option<Lock>> {
    create_private_dir_all(dir)?;
    let path = dir.join(name);
    loop {
        let file = open_cache_file(&path)?;
        if wait {
            FileExt::lock_exclusive(&file)?;
        } else if let Err(e) = FileExt::try_lock_exclusive(&file) {
            if is_contended(&e) {
                return Ok(None);
            }
            return Err(e);
        }
        // Still the file at `path`? If its holder unlinked it meanwhile, start over.
        let held = file.metadata()?;
        match fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok(Some(Lock {
                    file,
                    path,
                    transient,
                }))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a `try_lock_*` error means "someone else holds it" (not a failure to lock).
pub fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.transient {
            // While the lock is held, the path names our file: nobody else unlinks it.
            let _ = fs::remove_file(&self.path);
        }
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn transient_locks_exclude_each_other_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _lock = Lock::wait_transient(dir.path(), "k").unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
        assert!(!dir.path().join("k").exists());
    }

    #[test]
    fn try_take_fails_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lock::try_take(dir.path(), "g", false).unwrap().unwrap();
        assert!(Lock::try_take(dir.path(), "g", false).unwrap().is_none());
        drop(held);
        assert!(Lock::try_take(dir.path(), "g", false).unwrap().is_some());
    }
}
