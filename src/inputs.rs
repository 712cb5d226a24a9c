//! Gathers the facts the key needs from the world: input files, environment variables,
//! the resolved executable.
//!
//! Owns PATH lookup, expansion of `--input` files, directories and globs, and selection
//! of `--env` names. It reads; it never decides what the key is (that is `key`).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::digest_cache::{DigestCache, StatSignature};
use crate::exit::{Code, Fatal};
use crate::fsutil::is_executable;
use crate::key::{EnvVar, FileKind, InputFile};

/// Finds the program `memo run` will execute, as `execvp` would.
pub fn resolve_executable(program: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, Fatal> {
    let shown = program.to_string_lossy();
    if program.is_empty() {
        return Err(Fatal::new(
            Code::NotFound,
            "memo: the command is an empty string",
        ));
    }
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return match fs::metadata(&path) {
            Err(_) => Err(Fatal::new(
                Code::NotFound,
                format!("memo: command '{shown}' not found; check the path"),
            )),
            Ok(meta) if meta.is_file() && is_executable(&meta) => Ok(path),
            Ok(_) => Err(not_executable(&shown)),
        };
    }
    let mut found_unexecutable = false;
    for dir in std::env::split_paths(path_var.unwrap_or_default()) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() && is_executable(&meta) {
                return Ok(candidate);
            }
            found_unexecutable |= meta.is_file();
        }
    }
    if found_unexecutable {
        return Err(not_executable(&shown));
    }
    Err(Fatal::new(
        Code::NotFound,
        format!("memo: command '{shown}' not found in PATH; check its spelling or install it"),
    ))
}

fn not_executable(shown: &str) -> Fatal {
    Fatal::new(
        Code::NotExecutable,
        format!("memo: command '{shown}' is not an executable file; chmod +x it or fix the path"),
    )
}

/// One input file as the key sees it, plus what the race guard needs to notice a change.
pub struct Gathered {
    pub files: Vec<InputFile>,
    /// Where each regular input file is on disk and what it looked like when hashed.
    pub watched: Vec<(PathBuf, StatSignature)>,
}

/// Expands every `--input` spec (file, directory or glob) into the sorted list of files.
pub fn gather_inputs(specs: &[OsString], cache: &DigestCache) -> Result<Gathered, Fatal> {
    let mut gathered = Gathered {
        files: Vec::new(),
        watched: Vec::new(),
    };
    for spec in specs {
        let path = clean(Path::new(spec));
        if fs::symlink_metadata(&path).is_ok() {
            add_path(&path, cache, &mut gathered)?;
        } else if is_glob(spec) {
            let pattern = spec.to_str().ok_or_else(|| {
                Fatal::failure(format!(
                    "memo: input glob '{}' is not valid UTF-8; name the files instead",
                    spec.to_string_lossy()
                ))
            })?;
            let matches = glob::glob(pattern).map_err(|e| {
                Fatal::failure(format!(
                    "memo: input glob '{pattern}' is invalid: {}; fix the pattern",
                    e.msg
                ))
            })?;
            let mut any = false;
            for matched in matches {
                let matched = matched.map_err(|e| {
                    Fatal::failure(format!(
                        "memo: cannot read input '{}': {}",
                        e.path().display(),
                        e.error()
                    ))
                })?;
                any = true;
                add_path(&clean(&matched), cache, &mut gathered)?;
            }
            if !any {
                return Err(Fatal::failure(format!(
                    "memo: input glob '{pattern}' matches no file; fix the pattern or drop that --input"
                )));
            }
        } else {
            return Err(Fatal::failure(format!(
                "memo: input '{}' does not exist; create it or fix the --input path",
                path.display()
            )));
        }
    }
    gathered.files.sort();
    gathered.files.dedup();
    Ok(gathered)
}

fn add_path(path: &Path, cache: &DigestCache, out: &mut Gathered) -> Result<(), Fatal> {
    let meta = fs::metadata(path).map_err(|e| {
        Fatal::failure(format!(
            "memo: input '{}' cannot be read ({e}); fix it or drop that --input",
            path.display()
        ))
    })?;
    if !meta.is_dir() {
        return add_file(path, cache, out);
    }
    // Symlinks are followed (inputs are about content); walkdir reports loops.
    for entry in walkdir::WalkDir::new(path)
        .follow_links(true)
        .sort_by_file_name()
    {
        match entry {
            Ok(entry) if entry.file_type().is_dir() => {}
            Ok(entry) => add_file(entry.path(), cache, out)?,
            Err(err) => {
                let failed = err
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| path.to_path_buf());
                match fs::read_link(&failed) {
                    // A dangling link: its target text is all there is to key on.
                    Ok(target) if fs::metadata(&failed).is_err() => out.files.push(InputFile {
                        path: ByteString::from(failed.as_path()),
                        kind: FileKind::Symlink,
                        executable: false,
                        digest: Digest::of_bytes(target.as_os_str().as_bytes()),
                    }),
                    _ => {
                        return Err(Fatal::failure(format!(
                            "memo: cannot read input '{}': {err}",
                            failed.display()
                        )))
                    }
                }
            }
        }
    }
    Ok(())
}

fn add_file(path: &Path, cache: &DigestCache, out: &mut Gathered) -> Result<(), Fatal> {
    let unreadable = |e: std::io::Error| {
        Fatal::failure(format!(
            "memo: input '{}' cannot be read ({e}); fix its permissions or drop that --input",
            path.display()
        ))
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Fatal::failure(format!(
            "memo: input '{}' is not a regular file or directory; declare files only",
            path.display()
        )));
    }
    let (digest, sig) = cache.digest_path(path).map_err(unreadable)?;
    out.files.push(InputFile {
        path: ByteString::from(path),
        kind: FileKind::File,
        executable: is_executable(&meta),
        digest,
    });
    out.watched.push((path.to_path_buf(), sig));
    Ok(())
}

fn is_glob(spec: &OsStr) -> bool {
    spec.as_bytes()
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Drops `.` components so that `./a` and `a` name the same input.
pub fn clean(path: &Path) -> PathBuf {
    let cleaned: PathBuf = path
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    if cleaned.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        cleaned
    }
}

/// Picks the allowlisted variables out of `vars`: each pattern is a name, or a glob
/// over names (`AWS_*`). A plain name that is unset is keyed as unset.
pub fn select_env(
    patterns: &[String],
    vars: &[(OsString, OsString)],
) -> Result<Vec<EnvVar>, Fatal> {
    let mut selected = Vec::new();
    for pattern in patterns {
        if pattern.is_empty() || pattern.contains('=') {
            return Err(Fatal::failure(format!(
                "memo: --env '{pattern}' is not a variable name; pass the name only, e.g. -e HOME"
            )));
        }
        if is_glob(OsStr::new(pattern)) {
            let glob = glob::Pattern::new(pattern).map_err(|e| {
                Fatal::failure(format!(
                    "memo: --env pattern '{pattern}' is invalid: {}; fix it",
                    e.msg
                ))
            })?;
            for (name, value) in vars {
                if name.to_str().is_some_and(|n| glob.matches(n)) {
                    selected.push(EnvVar::new(name.as_bytes(), Some(value.as_bytes())));
                }
            }
        } else {
            let value = vars
                .iter()
                .find(|(n, _)| n == OsStr::new(pattern))
                .map(|(_, v)| v.as_bytes());
            selected.push(EnvVar::new(pattern.as_bytes(), value));
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn env_globs_select_matching_names() {
        let env = vars(&[("AWS_A", "1"), ("AWS_B", "2"), ("HOME", "/h")]);
        let got = select_env(&["AWS_*".into()], &env).unwrap();
        let names: Vec<_> = got.iter().map(|v| v.name.display()).collect();
        assert_eq!(names, ["AWS_A", "AWS_B"]);
    }

    #[test]
    fn unset_and_empty_differ() {
        let unset = select_env(&["X".into()], &vars(&[])).unwrap();
        let empty = select_env(&["X".into()], &vars(&[("X", "")])).unwrap();
        assert_ne!(unset, empty);
        assert_eq!(unset[0].value, None);
    }

    #[test]
    fn bad_env_names_are_refused() {
        assert!(select_env(&["A=B".into()], &[]).is_err());
        assert!(select_env(&["".into()], &[]).is_err());
    }

    #[test]
    fn clean_drops_dot_components() {
        assert_eq!(clean(Path::new("./a/./b")), PathBuf::from("a/b"));
        assert_eq!(clean(Path::new(".")), PathBuf::from("."));
    }

    #[test]
    fn path_lookup_finds_executables_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        crate::fsutil::set_mode(&exe, 0o755).unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "").unwrap();
        let path = dir.path().as_os_str();
        assert_eq!(
            resolve_executable(OsStr::new("tool"), Some(path)).unwrap(),
            exe
        );
        assert_eq!(
            resolve_executable(OsStr::new("plain"), Some(path))
                .unwrap_err()
                .code,
            Code::NotExecutable
        );
        assert_eq!(
            resolve_executable(OsStr::new("nope"), Some(path))
                .unwrap_err()
                .code,
            Code::NotFound
        );
    }
}
