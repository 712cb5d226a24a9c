//! Turning the path a traced call named into the absolute path an `Event` carries:
//! joined lexically against the caller's working directory or directory descriptor,
//! `.` components and repeated slashes removed, `..` kept (a lexical `..` would be wrong
//! across a symlink).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// `path` joined onto the absolute directory `base` (unless it is absolute itself), with
/// `.` and repeated or trailing slashes removed.
pub(crate) fn join_lexically(base: &Path, path: &Path) -> PathBuf {
    let mut joined = if path.is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => joined.push(".."),
            Component::Normal(name) => joined.push(name),
        }
    }
    joined
}

/// Whether a `/proc/PID/fd/N` or `/proc/PID/cwd` link named a file-system path (rather
/// than `pipe:[...]`, `socket:[...]`, `anon_inode:...`) that still exists.
pub(crate) fn is_file_system_path(target: &Path) -> bool {
    let bytes = target.as_os_str().as_bytes();
    bytes.first() == Some(&b'/') && !bytes.ends_with(b" (deleted)")
}

/// The path that names, for the tracer, what `path` names for process `pid`: its
/// /proc/self, /proc/thread-self, /dev/fd and /dev/std* lead to the tracer's own
/// otherwise.
pub(crate) fn as_seen_by(pid: i32, path: PathBuf) -> PathBuf {
    let own = [
        ("/proc/self", format!("/proc/{pid}")),
        ("/proc/thread-self", format!("/proc/{pid}/task/{pid}")),
        ("/dev/fd", format!("/proc/{pid}/fd")),
        ("/dev/stdin", format!("/proc/{pid}/fd/0")),
        ("/dev/stdout", format!("/proc/{pid}/fd/1")),
        ("/dev/stderr", format!("/proc/{pid}/fd/2")),
    ];
    for (prefix, replacement) in own {
        if let Ok(rest) = path.strip_prefix(prefix) {
            let mut seen = PathBuf::from(replacement);
            if !rest.as_os_str().is_empty() {
                seen.push(rest);
            }
            return through_proc_links(seen);
        }
    }
    through_proc_links(path)
}

/// `/proc/PID/cwd/x`, `/proc/PID/root/x` and `/proc/PID/fd/N/x` lead into the file
/// system: the path they stand for, read from the link now (the process is stopped), so
/// that what is read through them is observed like any file. Links to pipes and sockets,
/// and every other /proc path, stay as they are.
fn through_proc_links(path: PathBuf) -> PathBuf {
    let parts: Vec<&OsStr> = path.iter().collect();
    let numeric = |s: &OsStr| !s.is_empty() && s.as_bytes().iter().all(u8::is_ascii_digit);
    let link_len = match parts.as_slice() {
        [_, proc, pid, what, ..] if *proc == "proc" && numeric(pid) && (*what == "cwd" || *what == "root") => 4,
        [_, proc, pid, fd, n, ..] if *proc == "proc" && numeric(pid) && *fd == "fd" && numeric(n) => 5,
        _ => return path,
    };
    let link: PathBuf = parts[..link_len].iter().collect();
    let Ok(target) = std::fs::read_link(&link) else {
        return path;
    };
    if !is_file_system_path(&target) {
        return path;
    }
    let rest: PathBuf = parts[link_len..].iter().collect();
    if rest.as_os_str().is_empty() {
        return target;
    }
    join_lexically(&target, &rest)
}

pub(crate) fn from_bytes(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_base_and_lose_dots_and_repeated_slashes() {
        let base = Path::new("/work/dir");
        assert_eq!(
            join_lexically(base, Path::new("a//./b/")),
            PathBuf::from("/work/dir/a/b")
        );
        assert_eq!(
            join_lexically(base, Path::new("../x")),
            PathBuf::from("/work/dir/../x")
        );
        assert_eq!(
            join_lexically(base, Path::new("/etc/./passwd")),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(
            join_lexically(base, Path::new(".")),
            PathBuf::from("/work/dir")
        );
    }

    #[test]
    fn the_processs_own_links_name_its_own_files() {
        assert_eq!(
            as_seen_by(7, PathBuf::from("/proc/self/fd/3")),
            PathBuf::from("/proc/7/fd/3")
        );
        assert_eq!(
            as_seen_by(7, PathBuf::from("/dev/stdin")),
            PathBuf::from("/proc/7/fd/0")
        );
        assert_eq!(
            as_seen_by(7, PathBuf::from("/dev/fd")),
            PathBuf::from("/proc/7/fd")
        );
        assert_eq!(
            as_seen_by(7, PathBuf::from("/dev/stdinx")),
            PathBuf::from("/dev/stdinx")
        );
        assert_eq!(
            as_seen_by(7, PathBuf::from("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }

    #[test]
    fn only_existing_file_system_links_are_paths() {
        assert!(is_file_system_path(Path::new("/tmp/x")));
        assert!(!is_file_system_path(Path::new("pipe:[1234]")));
        assert!(!is_file_system_path(Path::new("/tmp/x (deleted)")));
    }
}
