//! Folding a traced run's events into what the run found and what it made.
//!
//! Observations describe what the run found before it touched a path: once the run has
//! created, written, renamed or removed a path, later looks at it see the run's own doing
//! and are not observations, and earlier looks at it (`as` probing `main.o`, Python
//! stating a `.pyc` before writing it, `make` comparing a target's time) are dropped: the
//! path is an output or a temporary. A file the run read and then changed is another
//! matter: the run consumed its own input, and is not to be cached.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::{Access, Event, Meta, Untrusted};

/// What a traced run found and made, by path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Regular files read or executed, with their attributes when first read.
    pub read: BTreeMap<PathBuf, Meta>,
    /// The subset of `read` that was executed.
    pub executed: BTreeSet<PathBuf>,
    /// Paths only looked at (stat, access): whether the final symlink was followed, and
    /// what the look found.
    pub stat: BTreeMap<PathBuf, (bool, Meta)>,
    /// Paths looked for and not found.
    pub absent: BTreeSet<PathBuf>,
    /// Directories whose entries were read.
    pub listed: BTreeSet<PathBuf>,
    /// Symlinks whose targets were read.
    pub links: BTreeMap<PathBuf, PathBuf>,
    /// Paths the run wrote, created or renamed onto, and did not remove or rename away
    /// afterwards: its outputs, if they exist at the end.
    pub written: BTreeSet<PathBuf>,
    /// Every path the run created, wrote, renamed or removed (outputs and temporaries):
    /// a listing leaves their names out.
    pub touched: BTreeSet<PathBuf>,
    /// Paths whose attributes (mode, times, owner) the run changed without writing
    /// them: still inputs by content, but no look at their attributes is an observation.
    pub attributes_changed: BTreeSet<PathBuf>,
    /// Symlinks the run made and then read through: what they lead to is read.
    pub read_through_own_links: BTreeSet<PathBuf>,
    /// Files the run renamed away before touching them otherwise (`mv in out`): their
    /// contents, now at the new name, are an input.
    pub renamed_inputs: BTreeMap<PathBuf, PathBuf>,
}

/// `path` with `..` taken lexically (`/proc/../x` is `/x`), for deciding where a path is.
pub fn without_dot_dot(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Folds `events`, in the order the calls completed, leaving out paths `excluded` says
/// are none of the key's business (/proc, /sys, /dev, memo's own cache).
pub fn fold(events: &[Event], excluded: &dyn Fn(&Path) -> bool) -> Result<Folded, Untrusted> {
    let mut f = Folded::default();
    for event in events {
        let path = &event.path;
        if excluded(path) {
            continue;
        }
        match &event.access {
            Access::Write { .. } | Access::Create | Access::RenameTo { .. } => {
                f.changed_by_run(path)?;
                f.written.insert(path.clone());
            }
            Access::RenameFrom { to }
                if !f.touched.contains(path) && !f.read.contains_key(path) =>
            {
                f.changed_by_run(path)?;
                f.renamed_inputs.insert(path.clone(), to.clone());
            }
            Access::Remove | Access::RenameFrom { .. } => {
                f.changed_by_run(path)?;
                f.written.remove(path);
                // What was under a removed or renamed directory went with it.
                f.written.retain(|w| !w.starts_with(path));
            }
            Access::Attributes => {
                if !f.touched.contains(path) {
                    f.stat.remove(path);
                    f.attributes_changed.insert(path.clone());
                }
            }
            Access::Read | Access::Exec
                if f.touched.contains(path)
                    && event
                        .meta
                        .is_some_and(|m| m.mode & libc::S_IFMT == libc::S_IFLNK) =>
            {
                f.read_through_own_links.insert(path.clone());
            }
            _ if f.touched.contains(path) => {}
            Access::Read | Access::Exec => f.found_read(event)?,
            Access::Stat { follow } => {
                if f.read.contains_key(path)
                    || f.stat.contains_key(path)
                    || f.attributes_changed.contains(path)
                {
                    continue;
                }
                if f.absent.contains(path) {
                    // Absent, then there, and not by the run's hand.
                    return Err(Untrusted::ChangedDuringRun(path.clone()));
                }
                if let Some(meta) = event.meta {
                    f.stat.insert(path.clone(), (*follow, meta));
                }
            }
            Access::Absent => {
                if f.read.contains_key(path) || f.stat.contains_key(path) {
                    return Err(Untrusted::ChangedDuringRun(path.clone()));
                }
                f.absent.insert(path.clone());
            }
            Access::List => {
                f.listed.insert(path.clone());
            }
            Access::ReadLink { target } => {
                f.links
                    .entry(path.clone())
                    .or_insert_with(|| target.clone());
            }
        }
    }
    // A file executed or read is checked by content; a look at it adds nothing.
    for path in f.read.keys() {
        f.stat.remove(path);
    }
    Ok(f)
}

impl Folded {
    /// The run is about to change `path`: what it learnt of the path before is no
    /// observation, unless it read its contents (then the run changed its own input).
    fn changed_by_run(&mut self, path: &Path) -> Result<(), Untrusted> {
        if self.read.contains_key(path) {
            return Err(Untrusted::ModifiedAfterRead(path.to_path_buf()));
        }
        self.stat.remove(path);
        self.absent.remove(path);
        self.listed.remove(path);
        self.links.remove(path);
        self.touched.insert(path.to_path_buf());
        Ok(())
    }

    fn found_read(&mut self, event: &Event) -> Result<(), Untrusted> {
        let path = &event.path;
        if self.absent.contains(path) {
            return Err(Untrusted::ChangedDuringRun(path.clone()));
        }
        let Some(meta) = event.meta else {
            return Ok(());
        };
        // `meta` is what lstat saw: a symlink read is its target's contents, told apart
        // from a directory's when they are recorded.
        let kind = meta.mode & libc::S_IFMT;
        if kind != libc::S_IFREG && kind != libc::S_IFLNK {
            // Opening a directory to list it: its listing is the observation, its
            // kind the look.
            if !self.stat.contains_key(path) {
                self.stat.insert(path.clone(), (true, meta));
            }
            return Ok(());
        }
        if event.access == Access::Exec {
            self.executed.insert(path.clone());
        }
        self.read.entry(path.clone()).or_insert(meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> Meta {
        Meta {
            dev: 1,
            ino: 2,
            mode,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        }
    }

    fn ev(path: &str, access: Access) -> Event {
        let exists = !matches!(access, Access::Absent | Access::Remove);
        Event {
            pid: 1,
            path: PathBuf::from(path),
            access,
            meta: exists.then(|| meta(libc::S_IFREG | 0o644)),
        }
    }

    fn fold_all(events: &[Event]) -> Result<Folded, Untrusted> {
        fold(events, &|p| p.starts_with("/proc"))
    }

    #[test]
    fn reads_stats_probes_and_listings_are_observations() {
        let f = fold_all(&[
            ev("/src/a.h", Access::Read),
            ev("/usr/bin/cc", Access::Exec),
            ev("/src/b.py", Access::Stat { follow: true }),
            ev("/inc/a.h", Access::Absent),
            ev("/src", Access::List),
            ev("/lnk", Access::ReadLink { target: "t".into() }),
            ev("/proc/self/status", Access::Read),
        ])
        .unwrap();
        assert_eq!(
            f.read.keys().collect::<Vec<_>>(),
            [Path::new("/src/a.h"), Path::new("/usr/bin/cc")]
        );
        assert!(f.executed.contains(Path::new("/usr/bin/cc")));
        assert!(f.stat.contains_key(Path::new("/src/b.py")));
        assert!(f.absent.contains(Path::new("/inc/a.h")));
        assert!(f.listed.contains(Path::new("/src")));
        assert_eq!(f.links[Path::new("/lnk")], PathBuf::from("t"));
        assert!(f.written.is_empty());
    }

    #[test]
    fn a_path_the_run_makes_is_an_output_not_a_probe_or_a_look() {
        // `as` probes main.o, then creates it; make stats its target, then rewrites it.
        let f = fold_all(&[
            ev("/w/main.o", Access::Absent),
            ev("/w/main.o", Access::Write { created: true }),
            ev("/w/main.o", Access::Stat { follow: true }),
            ev("/w/app", Access::Stat { follow: true }),
            ev("/w/app", Access::Write { created: false }),
        ])
        .unwrap();
        assert!(f.absent.is_empty() && f.stat.is_empty(), "{f:?}");
        assert_eq!(f.written.len(), 2);
    }

    #[test]
    fn temporaries_and_renames() {
        let f = fold_all(&[
            ev("/tmp/cc1.s", Access::Write { created: true }),
            ev("/tmp/cc1.s", Access::Read),
            ev("/tmp/cc1.s", Access::Remove),
            ev("/w/.out.tmp", Access::Write { created: true }),
            ev(
                "/w/.out.tmp",
                Access::RenameFrom {
                    to: "/w/out".into(),
                },
            ),
            ev(
                "/w/out",
                Access::RenameTo {
                    from: "/w/.out.tmp".into(),
                },
            ),
        ])
        .unwrap();
        assert_eq!(f.written.iter().collect::<Vec<_>>(), [Path::new("/w/out")]);
        assert!(f.read.is_empty(), "reading its own temporary is no input");
        assert_eq!(f.touched.len(), 3);
    }

    #[test]
    fn a_file_read_then_changed_is_untrusted() {
        for change in [
            Access::Write { created: false },
            Access::Remove,
            Access::RenameTo {
                from: "/w/x.tmp".into(),
            },
        ] {
            let got = fold_all(&[ev("/w/data", Access::Read), ev("/w/data", change)]);
            assert_eq!(got, Err(Untrusted::ModifiedAfterRead("/w/data".into())));
        }
    }

    #[test]
    fn a_path_that_appears_or_vanishes_by_another_hand_is_untrusted() {
        let got = fold_all(&[ev("/w/x", Access::Absent), ev("/w/x", Access::Read)]);
        assert_eq!(got, Err(Untrusted::ChangedDuringRun("/w/x".into())));
        let got = fold_all(&[ev("/w/x", Access::Read), ev("/w/x", Access::Absent)]);
        assert_eq!(got, Err(Untrusted::ChangedDuringRun("/w/x".into())));
    }

    #[test]
    fn a_read_supersedes_a_look_and_a_directory_opened_is_a_look() {
        let mut dir = ev("/w/d", Access::Read);
        dir.meta = Some(meta(libc::S_IFDIR | 0o755));
        let f = fold_all(&[
            ev("/w/a.h", Access::Stat { follow: true }),
            ev("/w/a.h", Access::Read),
            dir,
            ev("/w/d", Access::List),
        ])
        .unwrap();
        assert!(!f.stat.contains_key(Path::new("/w/a.h")));
        assert!(f.read.contains_key(Path::new("/w/a.h")));
        assert!(f.stat.contains_key(Path::new("/w/d")));
        assert!(!f.read.contains_key(Path::new("/w/d")));
        assert!(f.listed.contains(Path::new("/w/d")));
    }
}
