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
    fn only_existing_file_system_links_are_paths() {
        assert!(is_file_system_path(Path::new("/tmp/x")));
        assert!(!is_file_system_path(Path::new("pipe:[1234]")));
        assert!(!is_file_system_path(Path::new("/tmp/x (deleted)")));
    }
}
