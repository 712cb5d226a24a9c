//! The shared tier's bookkeeping in the cache directory, under `remote/`:
//! `pending/<key>.<target>` marks a result stored here and not yet uploaded to that
//! remote and namespace (the detached uploader and `memo remote push` work through
//! them), `pending/<call>.<target>.manifest` the manifest of a traced call that has a
//! new run, and `corrupt/<digest>` marks an
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

/// Where a pending result is to go: the remote (its URL without credentials) and the
/// namespace it was computed under. A marker is uploaded only by an uploader with the
/// same target, so a result computed by an untrusted job in one namespace is never
/// pushed into another by a later, trusted one.
pub fn target(shown_url: &str, namespace: &str) -> String {
    let mut material = b"memo-remote-target\0".to_vec();
    material.extend_from_slice(shown_url.as_bytes());
    material.push(0);
    material.extend_from_slice(namespace.as_bytes());
    Digest::of_bytes(&material).to_hex()[..16].to_string()
}

/// A pending result as found on disk: its key, and the SHA-256 of the entry that was
/// stored (an entry replaced since, by `--force` in another namespace say, is not the
/// result this marker is for, and is not uploaded). The marker's inode tells a marker
/// written again (a newer result of the same key, stored while an upload ran) from the
/// one that was uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pending {
    pub key: Digest,
    pub entry: Option<Digest>,
    ino: u64,
}

fn pending_path(root: &Path, key: &Digest, target: &str) -> PathBuf {
    dir(root, "pending").join(format!("{}.{target}", key.to_hex()))
}

/// Marks the result stored under `key` (its encoded entry hashing to `entry`) for
/// upload to `target`. Always a new file (renamed into place), so that an uploader busy
/// with an older result of the key leaves this marker in place.
pub fn add_pending(root: &Path, key: &Digest, target: &str, entry: &Digest) -> io::Result<()> {
    let dir = dir(root, "pending");
    create_private_dir_all(&dir)?;
    let mut staged = tempfile::Builder::new().prefix(".new-").tempfile_in(&dir)?;
    std::io::Write::write_all(&mut staged, entry.to_hex().as_bytes())?;
    staged
        .persist(pending_path(root, key, target))
        .map(drop)
        .map_err(|e| e.error)
}

/// The results waiting for upload to `target`, oldest first. Other names are ignored.
pub fn pending(root: &Path, target: &str) -> Vec<Pending> {
    use std::os::unix::fs::MetadataExt;
    let Ok(read) = fs::read_dir(dir(root, "pending")) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, Pending)> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (key, suffix) = name.to_str()?.split_once('.')?;
            if suffix != target {
                return None;
            }
            let key = key.parse().ok()?;
            let meta = e.metadata().ok()?;
            // A regular file of a few bytes, never a FIFO or a device planted here.
            let entry = crate::fsutil::read_regular(&e.path(), 128)
                .ok()
                .and_then(|t| String::from_utf8(t).ok())
                .and_then(|t| t.trim().parse().ok());
            Some((
                meta.modified().ok()?,
                Pending {
                    key,
                    entry,
                    ino: meta.ino(),
                },
            ))
        })
        .collect();
    found.sort_by_key(|(time, p)| (*time, p.key));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Removes the marker of `pending`, unless it was written again since it was listed.
pub fn remove_pending(root: &Path, pending: &Pending, target: &str) {
    use std::os::unix::fs::MetadataExt;
    let path = pending_path(root, &pending.key, target);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == pending.ino) {
        let _ = fs::remove_file(path);
    }
}

/// A traced call whose manifest waits for upload, as found on disk (the inode as for
/// `Pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingManifest {
    pub call: Digest,
    ino: u64,
}

const MANIFEST_SUFFIX: &str = ".manifest";

fn pending_manifest_path(root: &Path, call: &Digest, target: &str) -> PathBuf {
    dir(root, "pending").join(format!("{}.{target}{MANIFEST_SUFFIX}", call.to_hex()))
}

/// Marks the manifest of the traced call `call` for upload to `target`. Always a new
/// file, as for `add_pending`.
pub fn add_pending_manifest(root: &Path, call: &Digest, target: &str) -> io::Result<()> {
    let dir = dir(root, "pending");
    create_private_dir_all(&dir)?;
    let staged = tempfile::Builder::new().prefix(".new-").tempfile_in(&dir)?;
    staged
        .persist(pending_manifest_path(root, call, target))
        .map(drop)
        .map_err(|e| e.error)
}

/// The manifests waiting for upload to `target`, oldest first.
pub fn pending_manifests(root: &Path, target: &str) -> Vec<PendingManifest> {
    use std::os::unix::fs::MetadataExt;
    let Ok(read) = fs::read_dir(dir(root, "pending")) else {
        return Vec::new();
    };
    let wanted = format!(".{target}{MANIFEST_SUFFIX}");
    let mut found: Vec<(std::time::SystemTime, PendingManifest)> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let call = name.to_str()?.strip_suffix(&wanted)?.parse().ok()?;
            let meta = e.metadata().ok()?;
            Some((
                meta.modified().ok()?,
                PendingManifest {
                    call,
                    ino: meta.ino(),
                },
            ))
        })
        .collect();
    found.sort_by_key(|(time, p)| (*time, p.call));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Removes the marker of `pending`, unless it was written again since it was listed.
pub fn remove_pending_manifest(root: &Path, pending: &PendingManifest, target: &str) {
    use std::os::unix::fs::MetadataExt;
    let path = pending_manifest_path(root, &pending.call, target);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.ino() == pending.ino) {
        let _ = fs::remove_file(path);
    }
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
    fn pending_keys_come_back_until_removed_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let (main, pr) = (target("http://h/", "main"), target("http://h/", "pr"));
        assert_ne!(main, pr);
        assert!(pending(root, &main).is_empty());
        add_pending(root, &a, &main, &a).unwrap();
        add_pending(root, &b, &pr, &b).unwrap();
        fs::write(root.join("remote/pending/junk"), b"").unwrap();
        let found = pending(root, &main);
        assert_eq!(found.iter().map(|p| p.key).collect::<Vec<_>>(), vec![a]);
        assert_eq!(pending(root, &pr).len(), 1);
        remove_pending(root, &found[0], &main);
        assert!(pending(root, &main).is_empty());
        assert_eq!(pending(root, &pr).len(), 1);
    }

    #[test]
    fn a_marker_written_again_after_listing_stays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let key = Digest::of_bytes(b"k");
        let t = target("s3://b/p", "default");
        add_pending(root, &key, &t, &key).unwrap();
        let listed = pending(root, &t);
        // A newer result of the key is stored while the older one uploads.
        add_pending(root, &key, &t, &key).unwrap();
        remove_pending(root, &listed[0], &t);
        assert_eq!(pending(root, &t).len(), 1);
        let again = pending(root, &t);
        remove_pending(root, &again[0], &t);
        assert!(pending(root, &t).is_empty());
    }

    #[test]
    fn pending_manifests_are_apart_from_pending_results() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let call = Digest::of_bytes(b"call");
        let (main, pr) = (target("http://h/", "main"), target("http://h/", "pr"));
        add_pending(root, &call, &main, &call).unwrap();
        add_pending_manifest(root, &call, &main).unwrap();
        add_pending_manifest(root, &call, &pr).unwrap();
        assert_eq!(pending(root, &main).len(), 1, "a manifest is no result");
        let found = pending_manifests(root, &main);
        assert_eq!(found.iter().map(|p| p.call).collect::<Vec<_>>(), vec![call]);
        // Written again after listing: it stays.
        add_pending_manifest(root, &call, &main).unwrap();
        remove_pending_manifest(root, &found[0], &main);
        assert_eq!(pending_manifests(root, &main).len(), 1);
        let again = pending_manifests(root, &main);
        remove_pending_manifest(root, &again[0], &main);
        assert!(pending_manifests(root, &main).is_empty());
        assert_eq!(pending_manifests(root, &pr).len(), 1);
        assert_eq!(pending(root, &main).len(), 1);
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
