//! What a traced run (`--trace`) observed, as stored in its entry and checked before a
//! hit, and the manifest that lists a traced call's recorded runs.
//!
//! Like ccache's direct mode: the key of the call (command line, directory, selected
//! environment, executable, declared inputs) names a manifest; the manifest names the
//! entries of the runs recorded for it, newest first; each entry holds its run's
//! observations, and the first run whose observations all still hold is the hit. A file
//! read is checked by content through the digest cache (a `statx` and a lookup when it
//! has not changed), a file only looked at by its kind, mode, size and time, a path
//! looked for by its absence, a listing by its names, a symlink by its target.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::digest_cache::{DigestCache, StatSignature};
use crate::trace::observe::Folded;
use crate::trace::{Meta, Untrusted};

/// Everything a traced run observed and the files it wrote, in path order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub observations: Vec<Observation>,
    /// The outputs the run wrote, as they are recorded in the entry (relative to the
    /// working directory when under it).
    pub written: Vec<ByteString>,
}

/// One thing a traced run found. A path under the working directory is kept relative
/// to it (checked against the working directory of the later call, so that checkouts
/// share results with `--ignore-cwd`); any other is absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Observation {
    /// A file read or executed, by content.
    Read {
        path: ByteString,
        digest: Digest,
        executed: bool,
    },
    /// A path only looked at.
    Stat {
        path: ByteString,
        follow: bool,
        node: Node,
    },
    /// A path looked for and not found.
    Absent { path: ByteString },
    /// A directory listed: its names, less those of the run's own outputs and
    /// temporaries (`ignored`).
    Listed {
        path: ByteString,
        names: Vec<ByteString>,
        /// Each name's type as the listing gives it (`f`ile, `d`irectory, `l`ink, `o`ther),
        /// which programs use without a stat (`os.scandir`, `find -type`).
        #[serde(default)]
        types: String,
        ignored: Vec<ByteString>,
        /// The directory's identity and times when recorded, when they were settled
        /// (older than the racy margin): while they hold, no name can have come or gone,
        /// and the check reads no listing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<DirStamp>,
        /// For a large directory, the digest of its names and types in place of them
        /// (`names` and `types` then empty): it keeps the entry small, at the cost of
        /// saying only that the listing changed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<Digest>,
    },
    /// A symlink whose target was read.
    Link {
        path: ByteString,
        target: ByteString,
    },
}

/// A directory's identity and change times: any name added, removed or renamed in it
/// moves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStamp {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl DirStamp {
    fn of(sig: &StatSignature) -> DirStamp {
        DirStamp {
            dev: sig.dev,
            ino: sig.ino,
            mtime_ns: sig.mtime_ns as i64,
            ctime_ns: sig.ctime_ns as i64,
        }
    }
}

/// What a look at a path found. A directory is recorded by its kind and mode: its time
/// and size change whenever a file in it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    /// Nanoseconds since the epoch (i64 holds them until 2262).
    pub mtime_ns: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Node {
    fn of_mode(mode: u32, size: u64, mtime_ns: i128) -> Node {
        let mtime_ns = mtime_ns as i64;
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => NodeKind::File,
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            _ => NodeKind::Other,
        };
        match kind {
            NodeKind::Dir => Node {
                kind,
                mode: mode & 0o7777,
                size: 0,
                mtime_ns: 0,
            },
            _ => Node {
                kind,
                mode: mode & 0o7777,
                size,
                mtime_ns,
            },
        }
    }

    fn of_meta(meta: &Meta) -> Node {
        Node::of_mode(meta.mode, meta.size, meta.mtime_ns)
    }

    fn of_metadata(meta: &fs::Metadata) -> Node {
        let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        Node::of_mode(meta.mode(), meta.size(), mtime)
    }
}

/// Why a recorded run does not hold now, in words a user knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Changed(PathBuf),
    Appeared(PathBuf),
    Removed(PathBuf),
    Attributes(PathBuf),
    Listing { dir: PathBuf, detail: String },
    Relinked { path: PathBuf, target: PathBuf },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |p: &Path| crate::key::escape_control(&shown_path(p));
        match self {
            Mismatch::Changed(p) => write!(f, "{} changed", shown(p)),
            Mismatch::Appeared(p) => write!(f, "new file {} (absent when recorded)", shown(p)),
            Mismatch::Removed(p) => write!(f, "{} was removed", shown(p)),
            Mismatch::Attributes(p) => {
                write!(f, "{} changed (size, mode or time)", shown(p))
            }
            Mismatch::Listing { dir, detail } => {
                write!(f, "the listing of {} changed: {detail}", shown(dir))
            }
            Mismatch::Relinked { path, target } => write!(
                f,
                "{} now points to {}",
                shown(path),
                crate::key::escape_control(&target.to_string_lossy())
            ),
        }
    }
}

/// A path as a user would write it: relative to the working directory (`./x`) when
/// under it.
pub fn shown_path(path: &Path) -> String {
    if path.is_relative() {
        return format!("./{}", path.display());
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rest) = path.strip_prefix(&cwd) {
            if !rest.as_os_str().is_empty() {
                return format!("./{}", rest.display());
            }
        }
    }
    path.display().to_string()
}

impl Observed {
    /// The digest the entry's key is made of: binds the observations to the result.
    pub fn digest(&self) -> Digest {
        Digest::of_bytes(&serde_json::to_vec(self).expect("observations serialize"))
    }

    /// Records what `folded` found as it is now, just after the run, and checks that it is
    /// what the run saw: a file read, looked at or looked for that changed in between
    /// was changed during the run by someone else, and the run is not to be trusted.
    /// `outputs` are the written files kept as outputs.
    pub fn record(
        folded: &Folded,
        named_relative: &std::collections::HashSet<PathBuf>,
        outputs: Vec<ByteString>,
        digests: &DigestCache,
    ) -> Result<Observed, Untrusted> {
        let changed = |p: &Path| Untrusted::ChangedDuringRun(p.to_path_buf());
        let cwd = std::env::current_dir().ok();
        // Relative to the working directory only where the command named it relatively:
        // a path it named absolutely is that very file from any checkout.
        let stored = |p: &Path| match cwd.as_deref().and_then(|c| p.strip_prefix(c).ok()) {
            Some(rest) if !rest.as_os_str().is_empty() && named_relative.contains(p) => {
                ByteString::from(rest)
            }
            _ => ByteString::from(p),
        };
        let mut observations = Vec::new();
        // Followed through a symlink (`cd current`, a directory opened by a link): where
        // the link points is part of what was found. Noted as each path is looked at.
        let mut links_seen: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut note_link = |path: &Path, now: &fs::Metadata| {
            if now.file_type().is_symlink() && !folded.links.contains_key(path) {
                if let Ok(target) = fs::read_link(path) {
                    links_seen.push((path.to_path_buf(), target));
                }
            }
        };
        // The tracer's `Meta` is what lstat saw then: compared with lstat now. A file
        // whose mode or times the run itself changed is compared on identity and size.
        let unchanged = |path: &Path, now: &fs::Metadata, meta: &Meta| {
            let now = StatSignature::of(now);
            match folded.attributes_changed.contains(path) {
                true => now.dev == meta.dev && now.ino == meta.ino && now.size == meta.size,
                false => same_file(&now, meta),
            }
        };
        for (path, meta) in &folded.read {
            let now = fs::symlink_metadata(path).map_err(|_| changed(path))?;
            if !unchanged(path, &now, meta) {
                return Err(changed(path));
            }
            note_link(path, &now);
            let target = match now.file_type().is_symlink() {
                true => fs::metadata(path).map_err(|_| changed(path))?,
                false => now,
            };
            if target.is_dir() {
                // A symlink to a directory, opened to be listed: a look at its kind.
                observations.push(Observation::Stat {
                    path: stored(path),
                    follow: true,
                    node: Node::of_metadata(&target),
                });
                continue;
            }
            let (digest, _) = digests
                .digest_path_with(path, &target)
                .map_err(|_| changed(path))?;
            observations.push(Observation::Read {
                path: stored(path),
                digest,
                executed: folded.executed.contains(path),
            });
        }
        // A file read through a symlink the run made is read where the link leads.
        for link in &folded.read_through_own_links {
            let Ok(target) = fs::canonicalize(link) else {
                continue;
            };
            if folded.touched.contains(&target) || folded.read.contains_key(&target) {
                continue;
            }
            let Ok(meta) = fs::metadata(&target) else {
                continue;
            };
            if meta.is_file() {
                let (digest, _) = digests.digest_path(&target).map_err(|_| changed(&target))?;
                observations.push(Observation::Read {
                    path: stored(&target),
                    digest,
                    executed: false,
                });
            }
        }
        // A file renamed away (`mv in out`) was read in a way: its contents are at `out`
        // now, unless the run changed them there afterwards.
        for (from, to) in &folded.renamed_inputs {
            match fs::symlink_metadata(to) {
                Ok(meta) if meta.is_file() => {
                    let (digest, _) = digests.digest_path(to).map_err(|_| changed(to))?;
                    observations.push(Observation::Read {
                        path: stored(from),
                        digest,
                        executed: false,
                    });
                }
                _ => observations.push(Observation::Absent { path: stored(from) }),
            }
        }
        for (path, (follow, meta)) in &folded.stat {
            let lstat = fs::symlink_metadata(path).map_err(|_| changed(path))?;
            if Node::of_metadata(&lstat) != Node::of_meta(meta) {
                return Err(changed(path));
            }
            let now = match *follow && lstat.file_type().is_symlink() {
                true => {
                    note_link(path, &lstat);
                    fs::metadata(path).map_err(|_| changed(path))?
                }
                false => lstat,
            };
            observations.push(Observation::Stat {
                path: stored(path),
                follow: *follow,
                node: Node::of_metadata(&now),
            });
        }
        for path in &folded.absent {
            if fs::metadata(path).is_ok() {
                return Err(changed(path));
            }
            observations.push(Observation::Absent { path: stored(path) });
        }
        for dir in &folded.listed {
            let ignored: BTreeSet<ByteString> = folded
                .touched
                .iter()
                .filter(|p| p.parent() == Some(dir.as_path()))
                .filter_map(|p| p.file_name())
                .map(ByteString::from)
                .collect();
            let (names, types) = list(dir, &ignored).map_err(|_| changed(dir))?;
            let stamp = fs::metadata(dir)
                .ok()
                .map(|m| StatSignature::of(&m))
                .filter(|sig| !sig.is_racy(std::time::SystemTime::now()))
                .map(|sig| DirStamp::of(&sig));
            let (names, types, digest) = match names.len() > NAMES_KEPT {
                true => (
                    Vec::new(),
                    String::new(),
                    Some(listing_digest(&names, &types)),
                ),
                false => (names, types, None),
            };
            observations.push(Observation::Listed {
                path: stored(dir),
                names,
                types,
                ignored: ignored.into_iter().collect(),
                stamp,
                digest,
            });
        }
        for (path, target) in &folded.links {
            match fs::read_link(path) {
                Ok(now) if &now == target => {}
                _ => return Err(changed(path)),
            }
            observations.push(Observation::Link {
                path: stored(path),
                target: ByteString::from(target.as_path()),
            });
        }
        for (path, target) in links_seen {
            observations.push(Observation::Link {
                path: stored(&path),
                target: ByteString::from(target.as_path()),
            });
        }
        Ok(Observed {
            observations,
            written: outputs,
        })
    }

    /// The first observation that does not hold now, if any.
    pub fn check(&self, digests: &DigestCache) -> Result<(), Mismatch> {
        // The cheap ones first: a look, a probe or a link costs one system call.
        for obs in &self.observations {
            match obs {
                Observation::Stat { path, follow, node } => {
                    let path = path.to_path_buf();
                    match look(&path, *follow) {
                        Ok(now) if Node::of_metadata(&now) == *node => {}
                        Ok(_) => return Err(Mismatch::Attributes(path)),
                        Err(_) => return Err(Mismatch::Removed(path)),
                    }
                }
                Observation::Absent { path } if fs::metadata(path.to_path_buf()).is_ok() => {
                    return Err(Mismatch::Appeared(path.to_path_buf()));
                }
                Observation::Link { path, target } => {
                    let path = path.to_path_buf();
                    match fs::read_link(&path) {
                        Ok(now) if now == target.to_path_buf() => {}
                        Ok(now) => return Err(Mismatch::Relinked { path, target: now }),
                        Err(_) => return Err(Mismatch::Removed(path)),
                    }
                }
                _ => {}
            }
        }
        for obs in &self.observations {
            match obs {
                Observation::Read { path, digest, .. } => {
                    let path = path.to_path_buf();
                    match digests.digest_path(&path) {
                        Ok((now, _)) if now == *digest => {}
                        Ok(_) => return Err(Mismatch::Changed(path)),
                        Err(_) => return Err(Mismatch::Removed(path)),
                    }
                }
                Observation::Listed {
                    path,
                    names,
                    types,
                    ignored,
                    stamp,
                    digest,
                } => {
                    let dir = path.to_path_buf();
                    let settled = |stamp: &DirStamp| {
                        fs::metadata(&dir)
                            .is_ok_and(|m| DirStamp::of(&StatSignature::of(&m)) == *stamp)
                    };
                    if stamp.as_ref().is_some_and(settled) {
                        continue;
                    }
                    let ignored: BTreeSet<ByteString> = ignored.iter().cloned().collect();
                    let (now, now_types) = match list(&dir, &ignored) {
                        Ok(now) => now,
                        Err(_) => return Err(Mismatch::Removed(dir)),
                    };
                    if let Some(digest) = digest {
                        if listing_digest(&now, &now_types) != *digest {
                            let detail = "names came or went".to_string();
                            return Err(Mismatch::Listing { dir, detail });
                        }
                        continue;
                    }
                    if now != *names {
                        return Err(listing_change(dir, names, &now));
                    }
                    if !types.is_empty() && now_types != *types {
                        let changed = names
                            .iter()
                            .zip(types.chars().zip(now_types.chars()))
                            .find(|(_, (a, b))| a != b)
                            .map(|(name, _)| name.clone());
                        let detail = match changed {
                            Some(name) => format!(
                                "{} changed type",
                                shown_path(&dir.join(name.to_path_buf()))
                            ),
                            None => "its entries' types differ".into(),
                        };
                        return Err(Mismatch::Listing { dir, detail });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How many observations of each kind, for `memo show`.
    pub fn counts(&self) -> [(&'static str, usize); 6] {
        let mut counts = [
            ("read", 0),
            ("executed", 0),
            ("looked at", 0),
            ("absent", 0),
            ("listed", 0),
            ("symlinks", 0),
        ];
        for obs in &self.observations {
            let i = match obs {
                Observation::Read { executed: true, .. } => 1,
                Observation::Read { .. } => 0,
                Observation::Stat { .. } => 2,
                Observation::Absent { .. } => 3,
                Observation::Listed { .. } => 4,
                Observation::Link { .. } => 5,
            };
            counts[i].1 += 1;
        }
        counts
    }
}

impl Observation {
    pub fn path(&self) -> &ByteString {
        match self {
            Observation::Read { path, .. }
            | Observation::Stat { path, .. }
            | Observation::Absent { path }
            | Observation::Listed { path, .. }
            | Observation::Link { path, .. } => path,
        }
    }

    /// The kind of observation, one word.
    pub fn label(&self) -> &'static str {
        match self {
            Observation::Read { executed: true, .. } => "executed",
            Observation::Read { .. } => "read",
            Observation::Stat { .. } => "stat",
            Observation::Absent { .. } => "absent",
            Observation::Listed { .. } => "listed",
            Observation::Link { .. } => "symlink",
        }
    }
}

/// A file read is the same file, unchanged, as when the run read it.
fn same_file(now: &StatSignature, then: &Meta) -> bool {
    now.dev == then.dev
        && now.ino == then.ino
        && now.size == then.size
        && now.mtime_ns == then.mtime_ns
        && now.ctime_ns == then.ctime_ns
}

fn look(path: &Path, follow: bool) -> io::Result<fs::Metadata> {
    if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    }
}

/// How many names a listing keeps; a larger one keeps their digest.
const NAMES_KEPT: usize = 64;

fn listing_digest(names: &[ByteString], types: &str) -> Digest {
    let mut bytes = Vec::new();
    for name in names {
        bytes.extend_from_slice(&(name.as_bytes().len() as u64).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
    }
    bytes.extend_from_slice(types.as_bytes());
    Digest::of_bytes(&bytes)
}

/// The sorted names in `dir`, less `ignored`, and their types, one letter each.
fn list(dir: &Path, ignored: &BTreeSet<ByteString>) -> io::Result<(Vec<ByteString>, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = ByteString::from(entry.file_name().as_os_str());
        if ignored.contains(&name) {
            continue;
        }
        let kind = match entry.file_type() {
            Ok(t) if t.is_file() => 'f',
            Ok(t) if t.is_dir() => 'd',
            Ok(t) if t.is_symlink() => 'l',
            _ => 'o',
        };
        found.push((name, kind));
    }
    found.sort();
    Ok(found.into_iter().unzip())
}

/// Names the first name added to or gone from a listing.
fn listing_change(dir: PathBuf, then: &[ByteString], now: &[ByteString]) -> Mismatch {
    let then_set: BTreeSet<&ByteString> = then.iter().collect();
    let now_set: BTreeSet<&ByteString> = now.iter().collect();
    let detail = if let Some(new) = now_set.difference(&then_set).next() {
        format!(
            "new file {} (it may shadow another)",
            shown_path(&dir.join(new.to_path_buf()))
        )
    } else if let Some(gone) = then_set.difference(&now_set).next() {
        format!("{} is gone", shown_path(&dir.join(gone.to_path_buf())))
    } else {
        "its names differ".into()
    };
    Mismatch::Listing { dir, detail }
}

/// The manifest of a traced call: the keys of its recorded runs, newest first.
pub struct Manifest {
    pub runs: Vec<Digest>,
}

/// How many runs a manifest remembers (as ccache's manifests do, the oldest go first).
pub const MAX_RUNS: usize = 16;

const MANIFEST_MAGIC: &str = "memo-manifest 1";

impl Manifest {
    pub fn path(root: &Path, key: &Digest) -> PathBuf {
        crate::fsutil::sharded_path(&root.join("manifests"), key)
    }

    /// The manifest at `root` for `key`; a missing or damaged one is empty.
    pub fn read(root: &Path, key: &Digest) -> Manifest {
        Manifest::read_checked(root, key).unwrap_or(Manifest { runs: Vec::new() })
    }

    /// The manifest at `root` for `key` (empty when there is none), or `Err` with why
    /// the file there cannot be one.
    pub fn read_checked(root: &Path, key: &Digest) -> Result<Manifest, String> {
        let path = Manifest::path(root, key);
        let bytes = match crate::fsutil::read_regular(&path, 1 << 20) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {} ({e})", path.display())),
        };
        if bytes.is_empty() {
            return Ok(Manifest { runs: Vec::new() });
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines();
        if lines.next() != Some(MANIFEST_MAGIC) {
            return Err(format!("{} is not a manifest", path.display()));
        }
        let mut runs = Vec::new();
        for line in lines {
            match line.parse() {
                Ok(run) => runs.push(run),
                Err(_) => return Err(format!("{} is damaged", path.display())),
            }
        }
        Ok(Manifest { runs })
    }

    /// Puts `run` first and writes the manifest (the caller holds the call's lock).
    pub fn add(root: &Path, key: &Digest, run: Digest) -> io::Result<()> {
        let mut manifest = Manifest::read(root, key);
        manifest.runs.retain(|r| *r != run);
        manifest.runs.insert(0, run);
        manifest.runs.truncate(MAX_RUNS);
        let mut text = format!("{MANIFEST_MAGIC}\n");
        for run in &manifest.runs {
            text.push_str(&run.to_hex());
            text.push('\n');
        }
        crate::fsutil::write_file_atomic(&Manifest::path(root, key), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_keeps_the_newest_runs_first() {
        let dir = tempfile::tempdir().unwrap();
        let key = Digest::of_bytes(b"call");
        assert!(Manifest::read(dir.path(), &key).runs.is_empty());
        let runs: Vec<Digest> = (0..20u8).map(|i| Digest::of_bytes(&[i])).collect();
        for run in &runs {
            Manifest::add(dir.path(), &key, *run).unwrap();
        }
        Manifest::add(dir.path(), &key, runs[19]).unwrap();
        let read = Manifest::read(dir.path(), &key).runs;
        assert_eq!(read.len(), MAX_RUNS);
        assert_eq!(read[0], runs[19]);
        assert_eq!(read[1], runs[18]);
        fs::write(Manifest::path(dir.path(), &key), "garbage\n").unwrap();
        assert!(Manifest::read(dir.path(), &key).runs.is_empty());
    }

    #[test]
    fn observations_hold_until_what_they_saw_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.h"), "x").unwrap();
        fs::write(d.join("b.py"), "y").unwrap();
        let meta = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            Meta {
                dev: m.dev(),
                ino: m.ino(),
                mode: m.mode(),
                size: m.size(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            }
        };
        let mut folded = Folded::default();
        folded.read.insert(d.join("a.h"), meta(&d.join("a.h")));
        folded
            .stat
            .insert(d.join("b.py"), (true, meta(&d.join("b.py"))));
        folded.absent.insert(d.join("c.h"));
        folded.listed.insert(d.to_path_buf());
        folded.touched.insert(d.join("out.o"));
        fs::write(d.join("out.o"), "o").unwrap();
        let digests = DigestCache::new(None);
        let observed = Observed::record(&folded, &Default::default(), vec![], &digests).unwrap();
        assert_eq!(observed.check(&digests), Ok(()));

        // The run's own output comes and goes without changing the listing.
        fs::remove_file(d.join("out.o")).unwrap();
        assert_eq!(observed.check(&digests), Ok(()));

        fs::write(d.join("c.h"), "new").unwrap();
        assert_eq!(
            observed.check(&digests),
            Err(Mismatch::Appeared(d.join("c.h")))
        );
        fs::remove_file(d.join("c.h")).unwrap();
        fs::write(d.join("a.h"), "changed").unwrap();
        assert_eq!(
            observed.check(&digests),
            Err(Mismatch::Changed(d.join("a.h")))
        );
        fs::write(d.join("a.h"), "x").unwrap();
        assert_eq!(observed.check(&digests), Ok(()));
        fs::write(d.join("z.py"), "").unwrap();
        match observed.check(&digests) {
            Err(Mismatch::Listing { detail, .. }) => assert!(detail.contains("z.py"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }
}
