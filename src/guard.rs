//! The race guard: after the command ran, decides whether everything the key was
//! computed from is still what it was, so that a result is never stored under a key that
//! describes other inputs than the ones the command saw.
//!
//! Owns that comparison. It lists every `--input` again (a file added, removed or renamed
//! in an input directory or under a glob is a change), re-checks the executable, and
//! decides by content: a file whose timestamps moved is hashed again, and only other
//! bytes (or another exec bit) count. Declared outputs, and whatever lies under one, are
//! left out: the key holds their contents before the run, the entry after it. It reads;
//! it never stores anything nor warns (the caller does).

use std::cell::OnceCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::digest_cache::{DigestCache, StatSignature};
use crate::fsutil::is_executable;
use crate::inputs::{self, clean, lexical, resolved, Expansion, Found, Gathered, Watch};
use crate::key::InputFile;

/// The first difference found between the inputs as keyed and as they are now.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Appeared(PathBuf),
    Disappeared(PathBuf),
    Changed(PathBuf),
    Executable(PathBuf),
    /// The inputs could not be listed again (the message says why).
    Unlisted(String),
}

impl Change {
    fn path(&self) -> &Path {
        match self {
            Change::Appeared(p)
            | Change::Disappeared(p)
            | Change::Changed(p)
            | Change::Executable(p) => p,
            Change::Unlisted(_) => Path::new(""),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Appeared(p) => {
                write!(f, "input '{}' appeared while the command ran", p.display())
            }
            Change::Disappeared(p) => {
                write!(
                    f,
                    "input '{}' disappeared while the command ran",
                    p.display()
                )
            }
            Change::Changed(p) => {
                write!(f, "input '{}' changed while the command ran", p.display())
            }
            Change::Executable(p) => {
                write!(f, "the command '{}' changed while it ran", p.display())
            }
            Change::Unlisted(why) => {
                write!(
                    f,
                    "the inputs could not be listed again after the run ({why})"
                )
            }
        }
    }
}

/// `Ok` when every input, and the executable, is as it was keyed.
pub fn check(gathered: &Gathered) -> Result<(), Change> {
    let watch = &gathered.watch;
    // Hash again without the digest cache: its records are what is being questioned.
    let uncached = DigestCache::new(None);
    check_executable(gathered, &uncached)?;
    let outputs = Outputs::of(watch);
    let before: BTreeSet<&InputFile> = gathered
        .files
        .iter()
        .filter(|f| !outputs.cover(&f.path.to_path_buf()))
        .collect();
    // The inputs listed and keyed again, as gathering would key them now: the same set
    // or a change. A path may be there twice (named itself, and found through a link
    // inside a directory), keyed differently each time.
    let mut after = BTreeSet::new();
    let mut hashed = HashMap::new();
    for spec in &watch.specs {
        let listed = match inputs::expand(spec, &watch.filter) {
            Ok(Expansion::Listed(listed)) => listed,
            // Its files are reported as disappeared below, unless they are outputs.
            Ok(Expansion::Missing) => Vec::new(),
            Err(e) => {
                let why = e.message.strip_prefix("memo: ").unwrap_or(&e.message);
                return Err(Change::Unlisted(why.to_string()));
            }
        };
        for (path, found) in listed {
            if outputs.cover(&path) {
                continue;
            }
            match keyed_now(&path, &found, watch, &uncached, &mut hashed) {
                Some(now) => after.insert(now),
                None if outputs.cover_really(&path) => continue,
                None => return Err(Change::Changed(path)),
            };
        }
    }
    let paths = |set: &BTreeSet<_>| -> BTreeSet<ByteString> {
        set.iter().map(|f: &&InputFile| f.path.clone()).collect()
    };
    let after: BTreeSet<&InputFile> = after.iter().collect();
    let (paths_before, paths_after) = (paths(&before), paths(&after));
    let new = after.difference(&before).map(|f| {
        let path = f.path.to_path_buf();
        match paths_before.contains(&f.path) {
            true => Change::Changed(path),
            false => Change::Appeared(path),
        }
    });
    let gone = before.difference(&after).map(|f| {
        let path = f.path.to_path_buf();
        match paths_after.contains(&f.path) {
            true => Change::Changed(path),
            false => Change::Disappeared(path),
        }
    });
    match new.chain(gone).find(|c| !outputs.cover_really(c.path())) {
        Some(change) => Err(change),
        None => Ok(()),
    }
}

fn check_executable(gathered: &Gathered, uncached: &DigestCache) -> Result<(), Change> {
    let (path, before) = &gathered.watch.executable;
    let changed = || Change::Executable(path.clone());
    let now = std::fs::metadata(path).map_err(|_| changed())?;
    if StatSignature::of(&now) == *before && !before.is_racy(gathered.watch.started) {
        return Ok(());
    }
    match inputs::digest_executable(path, uncached) {
        Ok((digest, _)) if digest == gathered.executable => Ok(()),
        _ => Err(changed()),
    }
}

/// `path`, found as `found` now, keyed as gathering keys it; `None` when its contents
/// cannot be read. A file whose signature has not moved since it was hashed is not
/// hashed again; the others are, once.
fn keyed_now(
    path: &Path,
    found: &Found,
    watch: &Watch,
    uncached: &DigestCache,
    hashed: &mut HashMap<PathBuf, Option<Digest>>,
) -> Option<InputFile> {
    let (contents, executable) = match found {
        Found::File(meta, _) => {
            let unmoved = watch.signatures.get(path).filter(|(before, _)| {
                *before == StatSignature::of(meta) && !before.is_racy(watch.started)
            });
            let contents = match unmoved {
                Some((_, contents)) => *contents,
                None => {
                    (*hashed
                        .entry(path.to_path_buf())
                        .or_insert_with(|| uncached.digest_path(path).ok().map(|(d, _)| d)))?
                }
            };
            (contents, is_executable(meta))
        }
        _ => (Digest::of_bytes(b""), false),
    };
    let (kind, digest) = found.keyed(&contents);
    Some(InputFile {
        path: ByteString::from(path),
        kind,
        executable,
        digest,
    })
}

/// The declared outputs, each as an absolute, clean path where the working directory is
/// known, so that `src/gen.txt`, `./src/gen.txt`, `sub/../src/gen.txt` and
/// `/work/src/gen.txt` are one path.
struct Outputs {
    paths: Vec<PathBuf>,
    /// Each output as the file system resolves it (symlinks followed), computed only
    /// when a path differs, to tell an output spelled another way from a real change.
    real: OnceCell<Vec<PathBuf>>,
    cwd: Option<PathBuf>,
}

impl Outputs {
    fn of(watch: &Watch) -> Outputs {
        let mut outputs = Outputs {
            paths: Vec::new(),
            real: OnceCell::new(),
            cwd: watch.cwd.clone(),
        };
        outputs.paths = watch
            .outputs
            .iter()
            .map(|p| lexical(&outputs.absolute(p)))
            .collect();
        outputs
    }

    fn absolute(&self, path: &Path) -> PathBuf {
        match &self.cwd {
            Some(cwd) if path.is_relative() => clean(&cwd.join(path)),
            _ => clean(path),
        }
    }

    /// Whether `path` is a declared output or lies under one, by its spelling.
    fn cover(&self, path: &Path) -> bool {
        let path = lexical(&self.absolute(path));
        self.paths.iter().any(|output| path.starts_with(output))
    }

    /// `cover`, or the same through symlinks (`-i link/f -o real/f`): slower, for the
    /// few paths that differ.
    fn cover_really(&self, path: &Path) -> bool {
        if self.cover(path) {
            return true;
        }
        let outputs = self
            .real
            .get_or_init(|| self.paths.iter().map(|p| resolved(p)).collect::<Vec<_>>());
        let path = resolved(&self.absolute(path));
        outputs.iter().any(|output| path.starts_with(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Duration, SystemTime};

    /// Gathers `specs` with the given outputs as `memo run` does, for `/bin/sh`.
    fn gather(specs: &[&Path], outputs: &[&Path]) -> Gathered {
        let specs: Vec<_> = specs.iter().map(|p| p.as_os_str().to_owned()).collect();
        let outputs: Vec<_> = outputs.iter().map(|p| p.to_path_buf()).collect();
        let exe = inputs::resolve_executable("/bin/sh".as_ref(), None).unwrap();
        let filter = inputs::Filter::new(None, &[], false, &outputs).unwrap();
        inputs::gather_inputs(&specs, &outputs, &exe, &DigestCache::new(None), filter).unwrap()
    }

    #[test]
    fn an_old_unmoved_file_is_not_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "a").unwrap();
        let mut gathered = gather(&[&file], &[]);
        assert_eq!(check(&gathered), Ok(()));
        // Pretend it was keyed with other bytes: an unmoved, old signature is trusted...
        gathered.files[0].digest = Digest::of_bytes(b"other");
        gathered.watch.signatures.get_mut(&file).unwrap().1 = Digest::of_bytes(b"other");
        gathered.watch.started = SystemTime::now() + Duration::from_secs(10);
        assert_eq!(check(&gathered), Ok(()));
        // ...a racy one is not.
        gathered.watch.started = SystemTime::now();
        assert_eq!(check(&gathered), Err(Change::Changed(file)));
    }

    #[test]
    fn outputs_are_matched_by_path_components() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("gen"), "a").unwrap();
        let gathered = gather(&[&src], &[&src.join("gen")]);
        fs::write(src.join("gen"), "b").unwrap();
        fs::write(src.join("gen.txt"), "new").unwrap();
        assert_eq!(
            check(&gathered),
            Err(Change::Appeared(src.join("gen.txt"))),
            "gen.txt is not under the output gen"
        );
    }
}
