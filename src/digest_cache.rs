//! Remembers the SHA-256 of files by their inode and timestamps, so that a hit does not
//! re-hash an unchanged executable, input or already-verified object.
//!
//! Owns the `digests/` directory of the cache. A record is trusted only when the file's
//! device, inode, size, mtime and ctime are all unchanged, and it is written only when the
//! file's ctime is at least `RACY_MARGIN` in the past at the time its hashing finished:
//! any later write to the file moves its ctime past the recorded one (the same "racy
//! timestamp" rule git applies to its index). ctime cannot be set from user space, so a
//! changed byte is always noticed unless the change bypasses the file system (bit rot
//! under an unchanged inode), which `gc`'s full verification is for.
//!
//! Within one process, a file hashed once is also remembered in memory, so verifying
//! an object and then opening it to copy does not hash it twice.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::fsutil;

/// How far in the past a file's ctime must be before its digest is recorded on disk.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

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

    /// One line, ending in a checksum of the rest: a flipped byte anywhere makes the
    /// record unreadable (a re-hash), never a wrong digest.
    fn encode(&self, digest: &Digest) -> String {
        let body = format!(
            "memo-digest 1 {} {} {} {} {} {}",
            self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns, digest
        );
        let check = Digest::of_bytes(body.as_bytes()).short();
        format!("{body} {check}\n")
    }

    fn decode(text: &str) -> Option<(StatSignature, Digest)> {
        let (body, check) = text.strip_suffix('\n')?.rsplit_once(' ')?;
        if Digest::of_bytes(body.as_bytes()).short() != check {
            return None;
        }
        let mut parts = body.split(' ');
        if parts.next()? != "memo-digest" || parts.next()? != "1" {
            return None;
        }
        let sig = StatSignature {
            dev: parts.next()?.parse().ok()?,
            ino: parts.next()?.parse().ok()?,
            size: parts.next()?.parse().ok()?,
            mtime_ns: parts.next()?.parse().ok()?,
            ctime_ns: parts.next()?.parse().ok()?,
        };
        let digest = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((sig, digest))
    }

    fn is_racy(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        now_ns - self.ctime_ns < RACY_MARGIN.as_nanos() as i128
    }
}

/// Decodes the text of a digest record (exposed for the decoder property tests).
pub fn decode_record_text(text: &str) -> Option<(StatSignature, Digest)> {
    StatSignature::decode(text)
}

pub struct DigestCache {
    /// `None` when there is no usable cache directory: every file is then hashed.
    dir: Option<PathBuf>,
    remembered: RefCell<HashMap<StatSignature, Digest>>,
}

impl DigestCache {
    pub fn new(dir: Option<PathBuf>) -> DigestCache {
        DigestCache {
            dir,
            remembered: RefCell::new(HashMap::new()),
        }
    }

    /// The digest and size of an open file's contents. Leaves the file positioned at 0.
    pub fn digest_file(&self, file: &mut File) -> io::Result<(Digest, u64)> {
        let before = StatSignature::of(&file.metadata()?);
        if let Some(digest) = self.lookup(&before) {
            return Ok((digest, before.size));
        }
        file.seek(SeekFrom::Start(0))?;
        let (digest, size) = Digest::of_reader(&mut *file)?;
        file.seek(SeekFrom::Start(0))?;
        let after = StatSignature::of(&file.metadata()?);
        if before == after && size == after.size {
            self.remember(&after, digest);
        }
        Ok((digest, size))
    }

    /// Records the digest of a file memo itself has just written and hashed on the way
    /// (a store object), skipping the racy-timestamp rule: nobody else writes into the
    /// private store between memo's last write and this call, and any later write moves
    /// the file's ctime on. This is what spares a first hit from re-hashing a big object.
    pub fn record_written(&self, file: &File, digest: Digest) {
        let Ok(meta) = file.metadata() else { return };
        self.keep(&StatSignature::of(&meta), digest, true);
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

    fn record_path(&self, sig: &StatSignature) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let id = Digest::of_bytes(format!("{}:{}", sig.dev, sig.ino).as_bytes()).to_hex();
        Some(dir.join(&id[..2]).join(&id[2..]))
    }

    fn lookup(&self, sig: &StatSignature) -> Option<Digest> {
        if let Some(d) = self.remembered.borrow().get(sig) {
            return Some(*d);
        }
        let text = fs::read_to_string(self.record_path(sig)?).ok()?;
        let (recorded, digest) = StatSignature::decode(&text)?;
        (recorded == *sig).then_some(digest)
    }

    /// Remembers a digest for this process, and on disk unless the timestamps are racy.
    fn remember(&self, sig: &StatSignature, digest: Digest) {
        self.keep(sig, digest, !sig.is_racy(SystemTime::now()));
    }

    fn keep(&self, sig: &StatSignature, digest: Digest, on_disk: bool) {
        self.remembered.borrow_mut().insert(*sig, digest);
        if let Some(path) = self.record_path(sig).filter(|_| on_disk) {
            // A lost record only costs a re-hash next time, so failures are ignored.
            let _ = fsutil::write_file_atomic(&path, sig.encode(&digest).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_file(dir: &std::path::Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn signature_round_trips() {
        let sig = StatSignature {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: -4,
            ctime_ns: 5,
        };
        let d = Digest::of_bytes(b"x");
        assert_eq!(StatSignature::decode(&sig.encode(&d)), Some((sig, d)));
        assert_eq!(StatSignature::decode("memo-digest 1 1 2 3\n"), None);
        assert_eq!(StatSignature::decode(""), None);
        let line = sig.encode(&d);
        for i in 0..line.len() - 1 {
            let mut bad = line.clone().into_bytes();
            bad[i] ^= 0x01;
            let bad = String::from_utf8_lossy(&bad).into_owned();
            assert_eq!(
                StatSignature::decode(&bad),
                None,
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn fresh_files_are_not_recorded_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(Some(tmp.path().join("digests")));
        let path = old_file(tmp.path(), "f", b"hello");
        let (d, n) = cache.digest_file(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!((d, n), (Digest::of_bytes(b"hello"), 5));
        assert!(
            !tmp.path().join("digests").exists(),
            "a racy record was written"
        );
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = DigestCache::new(None);
        let path = old_file(tmp.path(), "f", b"hello");
        cache.digest_file(&mut File::open(&path).unwrap()).unwrap();
        fs::write(&path, b"jello").unwrap();
        let (d, _) = cache.digest_file(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(d, Digest::of_bytes(b"jello"));
    }
}
