//! The shared tier's bookkeeping in the cache directory, under `remote/`:
//! `pending/<key>` marks a result stored here and not yet uploaded (the detached
//! uploader and `memo remote push` work through them), and `corrupt/<digest>` marks an
//! object this machine found damaged on the server, which its next upload sends again
//! whatever HEAD says.
//!
//! Markers are empty files: creating one is atomic and costs no read, and a lost marker
//! only delays an upload.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::fsutil::create_private_dir_all;

fn dir(root: &Path, kind: &str) -> PathBuf {
    root.join("remote").join(kind)
}

fn mark(root: &Path, kind: &str, digest: &Digest) -> io::Result<()> {
    let dir = dir(root, kind);
    create_private_dir_all(&dir)?;
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(digest.to_hex()))
        .map(drop)
}

fn unmark(root: &Path, kind: &str, digest: &Digest) {
    let _ = fs::remove_file(dir(root, kind).join(digest.to_hex()));
}

/// Marks the result stored under `key` for upload.
pub fn add_pending(root: &Path, key: &Digest) -> io::Result<()> {
    mark(root, "pending", key)
}

/// The keys waiting for upload, oldest first. Names that are not digests are ignored.
pub fn pending(root: &Path) -> Vec<Digest> {
    let Ok(read) = fs::read_dir(dir(root, "pending")) else {
        return Vec::new();
    };
    let mut keys: Vec<(std::time::SystemTime, Digest)> = read
        .flatten()
        .filter_map(|e| {
            let key = e.file_name().to_str()?.parse().ok()?;
            let time = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((time, key))
        })
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

pub fn remove_pending(root: &Path, key: &Digest) {
    unmark(root, "pending", key)
}

/// Notes that the server's copy of `digest` is damaged.
pub fn mark_corrupt(root: &Path, digest: &Digest) {
    let _ = mark(root, "corrupt", digest);
}

pub fn is_marked_corrupt(root: &Path, digest: &Digest) -> bool {
    dir(root, "corrupt").join(digest.to_hex()).exists()
}

pub fn unmark_corrupt(root: &Path, digest: &Digest) {
    unmark(root, "corrupt", digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_keys_come_back_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        assert!(pending(dir.path()).is_empty());
        add_pending(dir.path(), &a).unwrap();
        add_pending(dir.path(), &b).unwrap();
        add_pending(dir.path(), &a).unwrap();
        fs::write(dir.path().join("remote/pending/junk"), b"").unwrap();
        let mut found = pending(dir.path());
        found.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(found, want);
        remove_pending(dir.path(), &a);
        assert_eq!(pending(dir.path()), vec![b]);
    }

    #[test]
    fn corrupt_marks() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of_bytes(b"x");
        assert!(!is_marked_corrupt(dir.path(), &d));
        mark_corrupt(dir.path(), &d);
        assert!(is_marked_corrupt(dir.path(), &d));
        unmark_corrupt(dir.path(), &d);
        assert!(!is_marked_corrupt(dir.path(), &d));
    }
}
