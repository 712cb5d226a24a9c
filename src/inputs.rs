//! Gathers the facts the key needs from the world: input files and directories,
//! environment variables, the resolved executable.
//!
//! Owns PATH lookup (as `execvp` does it), expansion of `--input` files, directories and
//! globs, what those listings leave out (`Filter`: the cache directory, `--exclude`
//! patterns, ignore files under `--gitignore`, declared outputs inside an input
//! directory), and selection of `--env` names. It reads; it never decides what the key is
//! (that is `key`), nor whether a result may be stored (that is `guard`, which lists the
//! inputs again through `expand`, with the same `Filter`, after the command ran).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::digest_cache::{DigestCache, StatSignature};
use crate::exit::{Code, Fatal};
use crate::fsutil::is_executable;
use crate::key::{EnvVar, FileKind, InputFile};

/// What execvp runs a script without `#!` with (glibc's `_PATH_BSHELL`).
const SHELL: &str = "/bin/sh";

/// The program `memo run` executes, found as `execvp` finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executable {
    /// The file found: what the key hashes.
    pub path: PathBuf,
    /// A script without `#!`, which the kernel refuses (ENOEXEC) and execvp then hands
    /// to `/bin/sh`.
    pub through_shell: bool,
}

impl Executable {
    /// The program to start and its argv, as execvp starts them: a script without `#!`
    /// becomes `/bin/sh FILE ARGS...`; anything else keeps the user's argv[0].
    pub fn launch(&self, argv: &[OsString]) -> (PathBuf, Vec<OsString>) {
        if !self.through_shell {
            return (self.path.clone(), argv.to_vec());
        }
        let mut shell_argv = vec![OsString::from(SHELL), self.path.clone().into_os_string()];
        shell_argv.extend(argv.iter().skip(1).cloned());
        (PathBuf::from(SHELL), shell_argv)
    }
}

/// Finds the program `memo run` will execute, as `execvp` would: a name with a `/` is
/// taken as is; any other is searched in `path_var`, or in the system's default search
/// path when PATH is unset, skipping files the user may not execute.
pub fn resolve_executable(program: &OsStr, path_var: Option<&OsStr>) -> Result<Executable, Fatal> {
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
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Fatal::new(
                Code::NotFound,
                format!("memo: command '{shown}' not found; check the path"),
            )),
            // execve fails the same way (a directory on the way that may not be
            // searched, a file used as a directory): found, but not executable.
            Err(e) => Err(Fatal::new(
                Code::NotExecutable,
                format!("memo: command '{shown}' cannot be executed ({e}); fix the path or its permissions"),
            )),
            Ok(meta) if meta.is_file() && may_execute(&path) => inspect(path, &shown),
            Ok(_) => Err(not_executable(&shown)),
        };
    }
    let search = match path_var {
        Some(var) => var.to_os_string(),
        None => default_search_path(),
    };
    // execvp tries every entry and, if none runs, reports EACCES when one was refused.
    let mut refused = false;
    let mut tried: Vec<PathBuf> = Vec::new();
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        // A directory listed twice answers the same twice (a PATH that a profile
        // script extended on every sourcing lists many).
        if tried.contains(&dir) {
            continue;
        }
        tried.push(dir.clone());
        let candidate = dir.join(program);
        match fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && may_execute(&candidate) => {
                return inspect(candidate, &shown)
            }
            Ok(_) => refused = true,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => refused = true,
            Err(_) => {}
        }
    }
    if refused {
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

/// Whether this process may execute `path`, as the kernel decides it for `execve`
/// (effective ids, ACLs, root's rules), not as the mode bits suggest.
fn may_execute(path: &Path) -> bool {
    crate::fsutil::check_access(path, libc::X_OK).is_ok()
}

/// What execvp searches when PATH is unset: `confstr(_CS_PATH)`, `/bin:/usr/bin` on glibc.
fn default_search_path() -> OsString {
    // SAFETY: a null buffer of length 0 only asks for the length needed.
    let len = unsafe { libc::confstr(libc::_CS_PATH, std::ptr::null_mut(), 0) };
    if len > 1 {
        let mut buf = vec![0u8; len];
        // SAFETY: buf is writable for len bytes.
        let written = unsafe { libc::confstr(libc::_CS_PATH, buf.as_mut_ptr().cast(), len) };
        if written == len {
            buf.pop(); // the terminating NUL
            return OsString::from_vec(buf);
        }
    }
    OsString::from("/bin:/usr/bin")
}

/// Decides how `path` will start, from its first bytes, as the kernel and execvp would:
/// an ELF or unreadable file directly; a `#!` script through its interpreter, which must
/// exist; other text through `/bin/sh`.
fn inspect(path: PathBuf, shown: &str) -> Result<Executable, Fatal> {
    // The kernel reads at most this much of a `#!` line (BINPRM_BUF_SIZE).
    let mut head = Vec::with_capacity(256);
    let read = fs::File::open(&path).and_then(|f| f.take(256).read_to_end(&mut head));
    let direct = Executable {
        path,
        through_shell: false,
    };
    if read.is_err() || head.starts_with(b"\x7fELF") {
        // Execute-only (mode 0711): memo cannot look, the kernel can run it.
        return Ok(direct);
    }
    if let Some(line) = head.strip_prefix(b"#!") {
        // The kernel ends the interpreter's name at a space, a tab or the end of the
        // line, nothing else: a `\r` of Windows line endings is part of it.
        let interpreter: Vec<u8> = line
            .iter()
            .copied()
            .skip_while(|b| *b == b' ' || *b == b'\t')
            .take_while(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\0'))
            .collect();
        if interpreter.is_empty() {
            // The kernel refuses an empty `#!` (ENOEXEC): execvp runs it with /bin/sh.
            return Ok(Executable {
                through_shell: true,
                ..direct
            });
        }
        let crlf = interpreter.ends_with(b"\r");
        let interpreter = PathBuf::from(OsString::from_vec(interpreter));
        let named = interpreter.display().to_string().escape_debug().to_string();
        let fix = if crlf {
            "the script has Windows (CRLF) line endings; convert them with dos2unix"
        } else {
            "fix the #! line"
        };
        return match fs::metadata(&interpreter) {
            // The command was found; it cannot run (see docs/key.md).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Fatal::new(
                Code::NotExecutable,
                format!(
                    "memo: command '{shown}' cannot run: its interpreter '{named}' was not found; {fix}"
                ),
            )),
            Ok(meta) if meta.is_file() && may_execute(&interpreter) => Ok(direct),
            _ => Err(Fatal::new(
                Code::NotExecutable,
                format!(
                    "memo: command '{shown}' cannot run: its interpreter '{named}' is not an executable file; {fix}"
                ),
            )),
        };
    }
    // A NUL byte means a binary format the kernel may know (binfmt_misc); only text is
    // handed to the shell, as bash refuses to run binary files through it.
    Ok(Executable {
        through_shell: !head.contains(&0),
        ..direct
    })
}

/// The executable as the key sees it: the SHA-256 of its contents, or, for a program
/// this user may run but not read (mode 0711), of its path, size, mtime and inode.
pub fn digest_executable(path: &Path, cache: &DigestCache) -> io::Result<(Digest, StatSignature)> {
    match cache.digest_path(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let meta = fs::metadata(path)?;
            Ok((metadata_digest(path, &meta), StatSignature::of(&meta)))
        }
        other => other,
    }
}

fn metadata_digest(path: &Path, meta: &Metadata) -> Digest {
    let mut text = b"memo-unreadable-executable\0".to_vec();
    text.extend_from_slice(path.as_os_str().as_bytes());
    text.extend_from_slice(
        format!(
            "\0{} {} {} {}",
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        )
        .as_bytes(),
    );
    Digest::of_bytes(&text)
}

/// Everything the key was computed from on disk, and what the race guard needs to tell
/// after the run whether any of it changed.
pub struct Gathered {
    /// Every input file, directory and dangling symlink, sorted by path.
    pub files: Vec<InputFile>,
    /// The digest of the executable (see `digest_executable`).
    pub executable: Digest,
    pub watch: Watch,
}

/// The race guard's notes, taken while gathering.
pub struct Watch {
    /// The `--input` specs, to be expanded again.
    pub specs: Vec<OsString>,
    /// The declared outputs: they may change while the command runs.
    pub outputs: Vec<PathBuf>,
    /// The working directory, to compare relative and absolute paths (None if unknown).
    pub cwd: Option<PathBuf>,
    /// Each regular input file as it was when hashed, and the digest of its contents.
    pub signatures: HashMap<PathBuf, (StatSignature, Digest)>,
    /// The executable's path and its signature when hashed.
    pub executable: (PathBuf, StatSignature),
    /// When gathering began: a file whose ctime is not well before this may have changed
    /// since within the same timestamp tick.
    pub started: SystemTime,
    /// What every listing leaves out, the one after the run as the one before.
    pub filter: Filter,
}

/// A directory's identity (device, inode), whatever path leads to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirId(u64, u64);

impl DirId {
    pub fn of(path: &Path) -> Option<DirId> {
        fs::metadata(path).ok().map(|m| DirId(m.dev(), m.ino()))
    }
}

/// What one `--input` spec names, found without reading any contents.
pub enum Expansion {
    /// Nothing by that name exists, and it is not a glob.
    Missing,
    /// Every file, directory (the named one included) and dangling symlink it names. A
    /// glob may match nothing.
    Listed(Vec<(PathBuf, Found)>),
}

pub enum Found {
    /// A file, and the target of the symlink it was found through, if any.
    File(Metadata, Option<PathBuf>),
    /// A directory, and the target of the symlink it was found through, if any.
    Dir(Option<PathBuf>),
    /// A dangling symlink inside an input directory, with its target.
    DanglingLink(PathBuf),
}

impl Found {
    /// How the key records it, given the digest of a file's contents: a symlink inside
    /// an input is keyed as one (`tar`, `find` and `ls -l` see it), on its target text
    /// as well as on what it leads to.
    pub fn keyed(&self, contents: &Digest) -> (FileKind, Digest) {
        match self {
            Found::File(_, None) => (FileKind::File, *contents),
            Found::File(_, Some(target)) => (FileKind::LinkToFile, link_digest(target, contents)),
            Found::Dir(None) => (FileKind::Dir, Digest::of_bytes(b"")),
            Found::Dir(Some(target)) => (
                FileKind::LinkToDir,
                link_digest(target, &Digest::of_bytes(b"")),
            ),
            Found::DanglingLink(target) => (
                FileKind::Symlink,
                Digest::of_bytes(target.as_os_str().as_bytes()),
            ),
        }
    }
}

fn link_digest(target: &Path, contents: &Digest) -> Digest {
    let mut text = b"memo-link\0".to_vec();
    text.extend_from_slice(target.as_os_str().as_bytes());
    text.push(0);
    text.extend_from_slice(&contents.0);
    Digest::of_bytes(&text)
}

/// The digest and signature of every file in `listed`, in order: from the digest cache
/// where it knows the file, else hashed, on as many threads as there are cores (at most
/// four) when several files need it: reading and hashing big inputs is most of a miss's
/// preparation.
fn hash_files(
    listed: &[(PathBuf, Found)],
    cache: &DigestCache,
) -> Vec<io::Result<(Digest, StatSignature)>> {
    let files: Vec<(&Path, &Metadata)> = listed
        .iter()
        .filter_map(|(path, found)| match found {
            Found::File(meta, _) => Some((path.as_path(), meta)),
            _ => None,
        })
        .collect();
    let mut results: Vec<Option<io::Result<(Digest, StatSignature)>>> = files
        .iter()
        .map(|(_, meta)| {
            let sig = StatSignature::of(meta);
            cache.known(&sig).map(|digest| Ok((digest, sig)))
        })
        .collect();
    let todo: Vec<usize> = (0..files.len()).filter(|&i| results[i].is_none()).collect();
    // Asked only when there is something to share: finding the cores reads cgroup files.
    let threads = match todo.len() {
        0 | 1 => 1,
        n => std::thread::available_parallelism()
            .map_or(1, |c| c.get())
            .min(4)
            .min(n),
    };
    if threads < 2 {
        for i in todo {
            let (path, meta) = files[i];
            results[i] = Some(cache.digest_path_with(path, meta));
        }
    } else {
        let total = todo.iter().map(|&i| files[i].1.len()).sum();
        let progress = std::sync::Mutex::new(crate::progress::Progress::new(total, "hashing"));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: Vec<(usize, io::Result<Hashed>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&i) = todo.get(k) else { break };
                            out.push((i, hash_one(files[i].0, &progress)));
                        }
                        out
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a hashing thread panicked"))
                .collect()
        });
        for (i, result) in done {
            let before = StatSignature::of(files[i].1);
            results[i] = Some(result.map(|(digest, size, after)| {
                // Remembered only if the file held still while it was read.
                if before == after && size == after.size {
                    cache.remember_hashed(&after, digest);
                }
                (digest, after)
            }));
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every file has a result"))
        .collect()
}

/// A file hashed in full: its digest, how many bytes were read, its signature after.
type Hashed = (Digest, u64, StatSignature);

/// Reads and hashes one file in large pieces, counting them on the shared bar.
fn hash_one(
    path: &Path,
    progress: &std::sync::Mutex<crate::progress::Progress>,
) -> io::Result<Hashed> {
    let mut file = fs::File::open(path)?;
    let mut hasher = crate::digest::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        if let Ok(mut bar) = progress.lock() {
            bar.advance(n as u64);
        }
    }
    let (digest, size) = hasher.finish();
    Ok((digest, size, StatSignature::of(&file.metadata()?)))
}

/// Expands every `--input` spec (file, directory or glob), hashes what it names and the
/// executable, and notes what the race guard will compare after the run. `filter` says
/// what the listings leave out (see `Filter`).
pub fn gather_inputs(
    specs: &[OsString],
    outputs: &[PathBuf],
    executable: &Executable,
    cache: &DigestCache,
    filter: Filter,
) -> Result<Gathered, Fatal> {
    let started = SystemTime::now();
    let mut files = Vec::new();
    let mut signatures = HashMap::new();
    let mut all: Vec<(PathBuf, Found)> = Vec::new();
    for spec in specs {
        let listed = match expand(spec, &filter)? {
            Expansion::Missing => {
                return Err(Fatal::failure(format!(
                    "memo: input '{}' does not exist; create it or fix the --input path",
                    clean(Path::new(spec)).display()
                )))
            }
            Expansion::Listed(listed) if listed.is_empty() => {
                return Err(Fatal::failure(format!(
                    "memo: input glob '{}' matches no file; fix the pattern or drop that --input",
                    spec.to_string_lossy()
                )))
            }
            Expansion::Listed(listed) => listed,
        };
        all.extend(listed);
    }
    let mut hashed = hash_files(&all, cache).into_iter();
    for (path, found) in all {
        let (contents, executable) = match &found {
            Found::File(meta, _) => {
                let hashed = hashed.next().expect("one result per file");
                let (digest, sig) = hashed.map_err(|e| {
                        Fatal::failure(format!(
                            "memo: input '{}' cannot be read ({e}); fix its permissions or drop that --input",
                            path.display()
                        ))
                    })?;
                signatures.insert(path.clone(), (sig, digest));
                (digest, is_executable(meta))
            }
            _ => (Digest::of_bytes(b""), false),
        };
        let (kind, digest) = found.keyed(&contents);
        files.push(InputFile {
            path: ByteString::from(path.as_path()),
            kind,
            executable,
            digest,
        });
    }
    files.sort();
    files.dedup();
    let (digest, signature) = digest_executable(&executable.path, cache).map_err(|e| {
        Fatal::new(
            Code::NotExecutable,
            format!(
                "memo: cannot read command '{}': {e}",
                executable.path.display()
            ),
        )
    })?;
    Ok(Gathered {
        files,
        executable: digest,
        watch: Watch {
            specs: specs.to_vec(),
            outputs: outputs.to_vec(),
            cwd: std::env::current_dir().ok(),
            signatures,
            executable: (executable.path.clone(), signature),
            started,
            filter,
        },
    })
}

/// What every listing of the inputs leaves out, for the key and for the race guard alike
/// (a file written into an excluded place while the command runs is then no change).
/// Only what is found inside an input directory, or matched by a glob, is ever left out:
/// a path named by `--input` itself is always listed.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// The cache directory: memo's own files, which change on every call, are nobody's
    /// input.
    skip: Option<DirId>,
    /// `--exclude` patterns, gitignore-style, relative to each input directory.
    excludes: Vec<String>,
    /// Whether `.gitignore` and `.ignore` files under input directories are honoured.
    gitignore: bool,
    /// Each declared output, absolute and lexically clean, and as the file system
    /// resolves it (symlinks followed): one inside an input directory is left out of it.
    outputs: Vec<(PathBuf, PathBuf)>,
}

impl Filter {
    /// Checks every `--exclude` pattern, so that a bad one stops memo before anything runs.
    pub fn new(
        skip: Option<DirId>,
        excludes: &[String],
        gitignore: bool,
        outputs: &[PathBuf],
    ) -> Result<Filter, Fatal> {
        for pattern in excludes {
            if pattern.trim().is_empty() {
                return Err(Fatal::failure(format!(
                    "memo: --exclude '{pattern}' is empty; name a pattern such as '__pycache__' or drop that --exclude"
                )));
            }
            if pattern.starts_with('#') {
                return Err(Fatal::failure(format!(
                    "memo: --exclude '{pattern}' would be a comment in gitignore syntax; write '\\{pattern}' to match a name starting with #"
                )));
            }
            GitignoreBuilder::new(".")
                .add_line(None, pattern)
                .map_err(|e| {
                    Fatal::failure(format!(
                        "memo: --exclude '{pattern}' is not a valid pattern ({e}); fix it"
                    ))
                })?;
        }
        let cwd = std::env::current_dir().ok();
        let outputs = outputs
            .iter()
            .map(|output| {
                let absolute = lexical(&match &cwd {
                    Some(cwd) if output.is_relative() => clean(&cwd.join(output)),
                    _ => clean(output),
                });
                let real = resolved(&absolute);
                (absolute, real)
            })
            .collect();
        Ok(Filter {
            skip,
            excludes: excludes.to_vec(),
            gitignore,
            outputs,
        })
    }

    /// The filter as it applies below `root`, an input directory or the literal start of
    /// an input glob.
    fn below(&self, root: &Path) -> Scope<'_> {
        let excludes = (!self.excludes.is_empty()).then(|| {
            let mut builder = GitignoreBuilder::new(root);
            for pattern in &self.excludes {
                // Checked in `new`.
                let _ = builder.add_line(None, pattern);
            }
            builder.build().unwrap_or_else(|_| Gitignore::empty())
        });
        let mut outputs = Vec::new();
        if !self.outputs.is_empty() {
            let absolute = lexical(&match std::env::current_dir() {
                Ok(cwd) if root.is_relative() => clean(&cwd.join(root)),
                _ => clean(root),
            });
            let real = resolved(&absolute);
            for (output, real_output) in &self.outputs {
                // Strictly inside: an output that is the input directory, or holds it,
                // is an input declared both ways, keyed as it was before the run.
                let inside = output
                    .strip_prefix(&absolute)
                    .ok()
                    .or_else(|| real_output.strip_prefix(&real).ok())
                    .filter(|rel| !rel.as_os_str().is_empty());
                outputs.extend(inside.map(Path::to_path_buf));
            }
        }
        Scope {
            filter: self,
            root: root.to_path_buf(),
            excludes,
            ignore_files: RefCell::new(HashMap::new()),
            outputs,
        }
    }
}

/// A `Filter` below one root: patterns are relative to it.
struct Scope<'f> {
    filter: &'f Filter,
    root: PathBuf,
    /// The `--exclude` patterns, rooted here (None without any).
    excludes: Option<Gitignore>,
    /// The rules of each directory's ignore files, read once, under `--gitignore`.
    ignore_files: RefCell<HashMap<PathBuf, Option<std::rc::Rc<Gitignore>>>>,
    /// The declared outputs inside the root, relative to it.
    outputs: Vec<PathBuf>,
}

impl Scope<'_> {
    /// Whether it leaves out nothing but the cache directory.
    fn is_idle(&self) -> bool {
        self.excludes.is_none() && !self.filter.gitignore && self.outputs.is_empty()
    }

    /// `path` relative to the root, when it lies below it.
    fn relative<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        if self.root == Path::new(".") {
            return Some(path.strip_prefix(".").unwrap_or(path));
        }
        path.strip_prefix(&self.root).ok()
    }

    /// Whether `path`, found below the root, is left out of the listing; `is_dir` as the
    /// listing sees it (symlinks followed). Its parents are not asked: a directory left
    /// out is not entered, so nothing below it can come back (as in git).
    fn leaves_out(&self, path: &Path, is_dir: bool) -> Result<bool, Fatal> {
        if is_dir && self.filter.skip.is_some() && DirId::of(path) == self.filter.skip {
            return Ok(true);
        }
        let Some(relative) = self.relative(path) else {
            return Ok(false);
        };
        if self.outputs.iter().any(|o| relative.starts_with(o)) {
            return Ok(true);
        }
        // `--exclude` has the last word: `--exclude '!keep.log'` brings back a file an
        // ignore file left out.
        if let Some(excludes) = &self.excludes {
            match excludes.matched(path, is_dir) {
                Match::Ignore(_) => return Ok(true),
                Match::Whitelist(_) => return Ok(false),
                Match::None => {}
            }
        }
        if self.filter.gitignore {
            // The nearest directory's rules first, as git reads them, up to the root.
            for dir in relative.ancestors().skip(1) {
                let dir = match dir.as_os_str().is_empty() {
                    true => self.root.clone(),
                    false => self.root.join(dir),
                };
                if let Some(rules) = self.ignore_rules(&dir)? {
                    match rules.matched(path, is_dir) {
                        Match::Ignore(_) => return Ok(true),
                        Match::Whitelist(_) => return Ok(false),
                        Match::None => {}
                    }
                }
            }
        }
        Ok(false)
    }

    /// Whether `path`, a glob's match, or any directory between the root and it is left
    /// out.
    fn leaves_out_match(&self, path: &Path) -> Result<bool, Fatal> {
        let Some(relative) = self.relative(path) else {
            return Ok(false);
        };
        let mut below = self.root.clone();
        let parts: Vec<_> = relative.components().collect();
        for (i, part) in parts.iter().enumerate() {
            below = match below == Path::new(".") {
                true => PathBuf::from(part.as_os_str()),
                false => below.join(part),
            };
            let is_dir = i + 1 < parts.len() || fs::metadata(&below).is_ok_and(|m| m.is_dir());
            if self.leaves_out(&below, is_dir)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The rules of `dir`'s `.gitignore` and `.ignore` (the latter first, as ripgrep
    /// reads them), or None when it has neither. Lines that are no valid pattern are
    /// skipped, as git skips them.
    fn ignore_rules(&self, dir: &Path) -> Result<Option<std::rc::Rc<Gitignore>>, Fatal> {
        if let Some(rules) = self.ignore_files.borrow().get(dir) {
            return Ok(rules.clone());
        }
        let mut builder = GitignoreBuilder::new(dir);
        let mut found = false;
        for name in [".gitignore", ".ignore"] {
            let file = dir.join(name);
            let text = match fs::metadata(&file) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Ok(meta) if meta.is_dir() => Err(io::Error::from(io::ErrorKind::IsADirectory)),
                _ => fs::read(&file),
            }
            .map_err(|e| {
                Fatal::failure(format!(
                    "memo: ignore file '{}' cannot be read ({e}); fix it or drop --gitignore",
                    file.display()
                ))
            })?;
            let text = String::from_utf8_lossy(&text);
            for line in text.trim_start_matches('\u{feff}').lines() {
                let _ = builder.add_line(Some(file.clone()), line);
            }
            found = true;
        }
        let rules = found
            .then(|| builder.build().ok())
            .flatten()
            .map(std::rc::Rc::new);
        self.ignore_files
            .borrow_mut()
            .insert(dir.to_path_buf(), rules.clone());
        Ok(rules)
    }
}

/// The literal directory a glob starts from: its components before the first with `*`,
/// `?` or `[` (`src` for `src/**/*.py`, `.` for `*.c`).
fn glob_root(pattern: &str) -> PathBuf {
    let literal: PathBuf = Path::new(pattern)
        .components()
        .take_while(|c| !is_glob(c.as_os_str()))
        .collect();
    clean(&literal)
}

/// Lists what one `--input` spec names, reading no contents, leaving out what `filter`
/// leaves out below an input directory or a glob's start. Symlinks are followed (inputs
/// are about content); a loop or an unreadable directory is an error.
pub fn expand(spec: &OsStr, filter: &Filter) -> Result<Expansion, Fatal> {
    if spec.is_empty() {
        return Err(Fatal::failure(
            "memo: --input '' is empty; name a file, directory or glob, or drop that --input",
        ));
    }
    let path = clean(Path::new(spec));
    let mut listed = Vec::new();
    if let Ok(found) = fs::symlink_metadata(&path) {
        // Not a symlink: what was found is what following it would find.
        let known = (!found.file_type().is_symlink()).then_some(found);
        list_path(&path, &filter.below(&path), false, known, &mut listed)?;
        return Ok(Expansion::Listed(listed));
    }
    if !is_glob(spec) {
        return Ok(Expansion::Missing);
    }
    let pattern = spec.to_str().ok_or_else(|| {
        Fatal::failure(format!(
            "memo: input glob '{}' is not valid UTF-8; name the files instead",
            spec.to_string_lossy()
        ))
    })?;
    let scope = filter.below(&glob_root(pattern));
    // A trailing `**` means everything below (`src/**`, as Turborepo, Nx and gitignore
    // read it); the glob crate would match only the subdirectories, and a file changed
    // in `src/` itself would replay a stale result.
    // `src/**/` and `src/**/**` too: the glob crate never yields `src` itself for them.
    let pattern = &{
        let mut p = pattern.trim_end_matches('/');
        while let Some(base) = p
            .strip_suffix("/**")
            .filter(|b| *b == "**" || b.ends_with("/**"))
        {
            p = base;
        }
        if p == "**" || p.ends_with("/**") {
            format!("{p}/*")
        } else {
            pattern.to_string()
        }
    };
    let matches = glob::glob(pattern).map_err(|e| {
        Fatal::failure(format!(
            "memo: input glob '{pattern}' is invalid: {}; fix the pattern",
            e.msg
        ))
    })?;
    // Whether each directory a match lies in is the cache directory, asked once per
    // directory: `**/*` also matches memo's own files.
    let skip = filter.skip;
    let mut skipped: HashMap<PathBuf, bool> = HashMap::new();
    for matched in matches {
        let matched = matched.map_err(|e| {
            Fatal::failure(format!(
                "memo: cannot read input '{}': {}",
                e.path().display(),
                e.error()
            ))
        })?;
        let matched = clean(&matched);
        if skip.is_some()
            && matched.ancestors().any(|dir| {
                *skipped
                    .entry(dir.to_path_buf())
                    .or_insert_with(|| DirId::of(dir) == skip)
            })
        {
            continue;
        }
        if !scope.is_idle() && scope.leaves_out_match(&matched)? {
            continue;
        }
        list_path(&matched, &scope, true, None, &mut listed)?;
    }
    Ok(Expansion::Listed(listed))
}

/// Lists `path` and, for a directory, everything below it that `scope` keeps. Symlinks
/// below it are noted (the key records them); so is `path` itself when a glob matched it
/// (`root_link`), not when the user named it.
fn list_path(
    path: &Path,
    scope: &Scope,
    root_link: bool,
    known: Option<Metadata>,
    out: &mut Vec<(PathBuf, Found)>,
) -> Result<(), Fatal> {
    let link_of = |entry: &Path, depth: usize| {
        if depth == 0 && !root_link {
            return None;
        }
        fs::read_link(entry).ok()
    };
    let meta = match known {
        Some(meta) => meta,
        None => fs::metadata(path).map_err(|e| {
            Fatal::failure(format!(
                "memo: input '{}' cannot be read ({e}); fix it or drop that --input",
                path.display()
            ))
        })?,
    };
    if !meta.is_dir() {
        return list_file(path, meta, link_of(path, 0), out);
    }
    // The first error met while filtering (an unreadable ignore file): the walk's filter
    // can only say yes or no.
    let filter_error: RefCell<Option<Fatal>> = RefCell::new(None);
    let left_out = |entry: &walkdir::DirEntry| {
        entry.depth() > 0
            && scope
                .leaves_out(entry.path(), entry.file_type().is_dir())
                .unwrap_or_else(|e| {
                    filter_error.borrow_mut().get_or_insert(e);
                    true
                })
    };
    for entry in walkdir::WalkDir::new(path)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !left_out(e))
    {
        match entry {
            // Every directory, empty or not: `find`, `tar` and `ls -R` see them.
            Ok(entry) if entry.file_type().is_dir() => {
                let link = entry
                    .path_is_symlink()
                    .then(|| link_of(entry.path(), entry.depth()))
                    .flatten();
                out.push((entry.path().to_path_buf(), Found::Dir(link)))
            }
            Ok(entry) => {
                let meta = entry.metadata().map_err(|e| {
                    Fatal::failure(format!(
                        "memo: cannot read input '{}': {e}",
                        entry.path().display()
                    ))
                })?;
                let link = entry
                    .path_is_symlink()
                    .then(|| link_of(entry.path(), entry.depth()))
                    .flatten();
                list_file(entry.path(), meta, link, out)?
            }
            Err(err) => {
                let failed = err
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| path.to_path_buf());
                match fs::read_link(&failed) {
                    // A dangling link: its target text is all there is to key on.
                    Ok(target) if fs::metadata(&failed).is_err() => {
                        if !scope.leaves_out(&failed, false)? {
                            out.push((failed, Found::DanglingLink(target)))
                        }
                    }
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
    match filter_error.into_inner() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn list_file(
    path: &Path,
    meta: Metadata,
    link: Option<PathBuf>,
    out: &mut Vec<(PathBuf, Found)>,
) -> Result<(), Fatal> {
    if !meta.is_file() {
        return Err(Fatal::failure(format!(
            "memo: input '{}' is not a regular file or directory; declare files only",
            path.display()
        )));
    }
    out.push((path.to_path_buf(), Found::File(meta, link)));
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

/// `path` with each `..` taking away the component before it, as if no symlink were on
/// the way.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` as the file system resolves it: its longest existing ancestor canonicalized
/// (symlinks followed), the rest appended with each `..` taking away the component
/// before it.
pub fn resolved(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut existing = path.to_path_buf();
    let base = loop {
        if let Ok(real) = fs::canonicalize(&existing) {
            break real;
        }
        // The last component, `..` included (file_name has none for it).
        match (existing.components().next_back(), existing.parent()) {
            (Some(name @ (Component::Normal(_) | Component::ParentDir)), Some(parent)) => {
                rest.push(name.as_os_str().to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break existing,
        }
    };
    lexical(&rest.iter().rev().fold(base, |p, r| p.join(r)))
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
            resolve_executable(OsStr::new("tool"), Some(path))
                .unwrap()
                .path,
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

    /// Writes an executable `name` with `content` into `dir` and resolves it.
    fn resolve_script(dir: &Path, name: &str, content: &[u8]) -> Result<Executable, Fatal> {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        crate::fsutil::set_mode(&path, 0o755).unwrap();
        resolve_executable(path.as_os_str(), None)
    }

    #[test]
    fn scripts_start_as_execvp_starts_them() {
        let dir = tempfile::tempdir().unwrap();
        let through_shell = |name: &str, content: &[u8]| {
            resolve_script(dir.path(), name, content)
                .unwrap()
                .through_shell
        };
        assert!(!through_shell("shebang", b"#!/bin/sh\necho\n"));
        assert!(!through_shell("spaced", b"#! /bin/sh -e\necho\n"));
        assert!(!through_shell("elf", b"\x7fELF\x02\x01\x01\0"));
        assert!(!through_shell("binary", b"MZ\x90\0\x03"));
        assert!(through_shell("text", b"echo hi\n"));
        assert!(through_shell("empty", b""));
        assert!(through_shell("bare-shebang", b"#!\necho\n"));
        let missing = resolve_script(dir.path(), "missing", b"#!/no/such/sh\n").unwrap_err();
        assert_eq!(missing.code, Code::NotExecutable);
        assert!(missing.message.contains("interpreter '/no/such/sh'"));
    }

    #[test]
    fn a_script_through_the_shell_gets_its_path_then_its_arguments() {
        let exe = Executable {
            path: "/bin/x".into(),
            through_shell: true,
        };
        let argv = ["x".into(), "a b".into(), "c".into()];
        let (program, launched) = exe.launch(&argv);
        assert_eq!(program, PathBuf::from("/bin/sh"));
        assert_eq!(launched, ["/bin/sh", "/bin/x", "a b", "c"]);
        let direct = Executable {
            through_shell: false,
            ..exe
        };
        assert_eq!(direct.launch(&argv), ("/bin/x".into(), argv.to_vec()));
    }

    /// The paths `spec` lists under `filter`, relative to `dir`.
    fn listed(dir: &Path, spec: &str, filter: &Filter) -> Vec<String> {
        let spec = dir.join(spec);
        let Expansion::Listed(listed) = expand(spec.as_os_str(), filter).unwrap() else {
            panic!("missing");
        };
        listed
            .iter()
            .map(|(p, _)| p.strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn the_nearest_ignore_file_decides_and_exclude_patterns_decide_last() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("src/.gitignore", "*.tmp\nlogs/\n");
        write("src/a.tmp", "");
        write("src/logs/x", "");
        write("src/sub/.gitignore", "!keep.tmp\n");
        write("src/sub/.ignore", "keep.tmp\n");
        write("src/sub/keep.tmp", "");
        write("src/sub/deep/b.tmp", "");
        let gitignore = Filter::new(None, &[], true, &[]).unwrap();
        assert_eq!(
            listed(dir.path(), "src", &gitignore),
            [
                "src",
                "src/.gitignore",
                "src/sub",
                "src/sub/.gitignore",
                "src/sub/.ignore",
                "src/sub/deep"
            ],
            ".ignore wins over .gitignore in one directory"
        );
        let both = Filter::new(None, &["!keep.tmp".into(), ".*".into()], true, &[]).unwrap();
        assert_eq!(
            listed(dir.path(), "src", &both),
            ["src", "src/sub", "src/sub/deep", "src/sub/keep.tmp"]
        );
        let none = Filter::default();
        assert_eq!(listed(dir.path(), "src", &none).len(), 11);
        assert_eq!(
            listed(dir.path(), "src/**/*.tmp", &gitignore),
            Vec::<String>::new(),
            "a glob's matches are filtered too"
        );
    }

    #[test]
    fn a_globs_root_is_its_literal_start() {
        assert_eq!(glob_root("src/**/*.py"), PathBuf::from("src"));
        assert_eq!(glob_root("./a/b*/c"), PathBuf::from("a"));
        assert_eq!(glob_root("*.c"), PathBuf::from("."));
        assert_eq!(glob_root("/x/[ab]"), PathBuf::from("/x"));
    }

    #[test]
    fn the_default_search_path_is_the_systems() {
        assert_eq!(default_search_path(), "/bin:/usr/bin");
    }
}
