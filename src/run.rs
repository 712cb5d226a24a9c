//! `memo run`: look the command up, replay it on a hit, run and record it on a miss.
//!
//! Owns the order of things and the fail-open policy: bad input stops memo before the
//! command runs (exit 125, 126, 127); trouble with the cache never does. A cache that
//! cannot be opened, read or written produces one warning, and the command runs with
//! its output and exit code passed through untouched.

use std::cell::Cell;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bytes::ByteString;
use crate::capture::{self, Finished, Outcome, Spec};
use crate::digest::Digest;
use crate::digest_cache::{DigestCache, StatSignature};
use crate::exit::{Code, Fatal};
use crate::index::{Entry, Streams};
use crate::inputs::{self, Gathered};
use crate::key::{self, KeyCommand, KeyMaterial, StreamMode};
use crate::outputs::{self, RecordError};
use crate::store::local::LocalStore;
use crate::store::Store;

/// Where the cache lives, and whether the user named it (then an unusable one is an error).
pub struct CacheDir {
    pub path: PathBuf,
    pub explicit: bool,
}

/// A validated `memo run` request.
pub struct RunRequest {
    pub argv: Vec<OsString>,
    pub inputs: Vec<OsString>,
    pub outputs: Vec<PathBuf>,
    pub env: Vec<String>,
    pub ignore_cwd: bool,
    pub stdin: bool,
    pub salt: Option<OsString>,
    pub key_cmd: Option<OsString>,
    pub cache_failures: bool,
    pub force: bool,
    pub verbose: bool,
    pub cache_dir: CacheDir,
}

/// Prints the first cache warning of this call, and no more: one failure tends to cause
/// a cascade, and the user needs to hear about it once.
#[derive(Default)]
struct Warner {
    warned: Cell<bool>,
}

impl Warner {
    fn warn(&self, message: impl std::fmt::Display) {
        if !self.warned.replace(true) {
            eprintln!("memo: warning: {message}");
        }
    }
}

pub fn is_disabled() -> bool {
    matches!(
        std::env::var("MEMO_DISABLE").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// `MEMO_DISABLE=1`: become the command, as if memo were not there.
pub fn exec_directly(argv: &[OsString]) -> Fatal {
    let err = Command::new(&argv[0]).args(&argv[1..]).exec();
    let shown = argv[0].to_string_lossy();
    match err.kind() {
        io::ErrorKind::NotFound => {
            Fatal::new(Code::NotFound, format!("memo: command '{shown}' not found"))
        }
        _ => Fatal::new(
            Code::NotExecutable,
            format!("memo: command '{shown}' cannot be executed: {err}"),
        ),
    }
}

pub fn run(req: RunRequest) -> Result<i32, Fatal> {
    // Read the umask before any thread exists (see fsutil::file_mode).
    crate::fsutil::file_mode(false);
    let warner = Warner::default();
    let program = inputs::resolve_executable(&req.argv[0], std::env::var_os("PATH").as_deref())?;
    let store = open_store(&req.cache_dir, &warner)?;
    let no_cache = DigestCache::new(None);
    let digests = store.as_ref().map_or(&no_cache, |s| s.digest_cache());

    let gathered = inputs::gather_inputs(&req.inputs, digests)?;
    let (executable, _) = inputs::digest_path(&program, digests).map_err(|e| {
        Fatal::new(
            Code::NotExecutable,
            format!("memo: cannot read command '{}': {e}", program.display()),
        )
    })?;
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let env = inputs::select_env(&req.env, &vars)?;
    let key_command = match &req.key_cmd {
        Some(cmd) => Some(run_key_command(cmd)?),
        None => None,
    };
    let cwd = std::env::current_dir()
        .map_err(|e| Fatal::failure(format!("memo: cannot read the working directory: {e}")))?;
    let stdin = if req.stdin {
        Some(spool_stdin(store.as_ref(), &warner)?)
    } else {
        None
    };
    let mode = capture::stream_mode();
    let mut material = KeyMaterial {
        version: key::KEY_VERSION,
        platform: key::platform(),
        argv: req
            .argv
            .iter()
            .map(|a| ByteString::from(a.as_os_str()))
            .collect(),
        cwd: (!req.ignore_cwd).then(|| ByteString::from(cwd.as_path())),
        env,
        executable,
        inputs: gathered.files.clone(),
        outputs: req
            .outputs
            .iter()
            .map(|p| ByteString::from(p.as_path()))
            .collect(),
        stdin: stdin.as_ref().map(|(_, d)| *d),
        salt: req.salt.as_ref().map(|s| ByteString::from(s.as_os_str())),
        key_command,
        streams: mode,
    };
    material.normalize();
    let key = key::compute_key(&material);
    let spec = Spec {
        program,
        argv: req.argv.clone(),
        stdin: stdin.map(|(file, _)| file),
    };

    let Some(store) = store else {
        let code = capture::run_passthrough(spec)?.exit_code();
        if req.verbose {
            eprintln!("memo: miss {}, not stored: cache unavailable", key.short());
        }
        return Ok(code);
    };
    if !req.force {
        let started = Instant::now();
        if let Some(entry) = lookup(&store, &key, &material, &req, &warner) {
            if let Some(code) = replay(&store, &key, &entry, &warner)? {
                if req.verbose {
                    let saved =
                        Duration::from_millis(entry.duration_ms).saturating_sub(started.elapsed());
                    eprintln!(
                        "memo: hit {}, saved {:.2}s",
                        key.short(),
                        saved.as_secs_f64()
                    );
                }
                return Ok(code);
            }
        }
    }
    let finished = capture::run_recorded(spec, mode, &|| store.stage().map_err(io::Error::other))?;
    let code = finished.outcome.exit_code();
    let verdict = match decide_storable(&finished, &req, &gathered) {
        Ok(()) => match save(&store, key, material, finished) {
            Ok(()) => "stored".to_string(),
            Err(e) => {
                warner.warn(format!("{e}; result not stored"));
                "not stored".to_string()
            }
        },
        Err(why) => {
            if why.warn {
                warner.warn(format!("{}; result not stored", why.reason));
            }
            format!("not stored: {}", why.reason)
        }
    };
    if req.verbose {
        eprintln!("memo: miss {}, {verdict}", key.short());
    }
    Ok(code)
}

fn open_store(dir: &CacheDir, warner: &Warner) -> Result<Option<LocalStore>, Fatal> {
    if dir.explicit {
        if let Ok(meta) = fs::metadata(&dir.path) {
            let shown = dir.path.display();
            if !meta.is_dir() {
                return Err(Fatal::failure(format!(
                    "memo: cache dir '{shown}' is not a directory; point --cache-dir or MEMO_DIR at a directory"
                )));
            }
            if let Err(e) = fs::read_dir(&dir.path) {
                return Err(Fatal::failure(format!(
                    "memo: cache dir '{shown}' is not readable ({e}); fix its permissions or choose another"
                )));
            }
        }
    }
    match LocalStore::open(&dir.path) {
        Ok(store) => Ok(Some(store)),
        Err(e) => {
            warner.warn(format!("cache unavailable ({e}); running without it"));
            Ok(None)
        }
    }
}

fn run_key_command(cmd: &OsString) -> Result<KeyCommand, Fatal> {
    let shown = cmd.to_string_lossy();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Fatal::failure(format!("memo: cannot run --key-cmd '{shown}': {e}")))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let hashed = Digest::of_reader(stdout);
    let status = child
        .wait()
        .map_err(|e| Fatal::failure(format!("memo: cannot run --key-cmd '{shown}': {e}")))?;
    let (output, _) =
        hashed.map_err(|e| Fatal::failure(format!("memo: cannot read --key-cmd output: {e}")))?;
    if !status.success() {
        return Err(Fatal::failure(format!(
            "memo: --key-cmd '{shown}' failed ({status}); fix it or drop --key-cmd"
        )));
    }
    Ok(KeyCommand {
        command: ByteString::from(cmd.as_os_str()),
        output,
    })
}

fn spool_stdin(store: Option<&LocalStore>, warner: &Warner) -> Result<(File, Digest), Fatal> {
    let staged = match store.map(|s| s.stage()) {
        Some(Ok(staged)) => Ok(staged),
        Some(Err(e)) => {
            warner.warn(format!("{e}; spooling stdin to the system temp dir"));
            tempfile::NamedTempFile::new()
        }
        None => tempfile::NamedTempFile::new(),
    };
    staged
        .and_then(capture::spool_stdin)
        .map_err(|e| Fatal::failure(format!("memo: cannot read stdin for --stdin: {e}")))
}

/// The stored entry for `key`, if it is intact, is for this very material, and may be
/// replayed under this request. Anything else is a miss; a damaged entry is removed.
fn lookup(
    store: &LocalStore,
    key: &Digest,
    material: &KeyMaterial,
    req: &RunRequest,
    warner: &Warner,
) -> Option<Entry> {
    let bytes = match store.get_entry(key) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(e) => {
            warner.warn(format!("{e}; running the command"));
            return None;
        }
    };
    let entry = match Entry::decode(&bytes) {
        Ok(entry) => entry,
        Err(e) => {
            warner.warn(format!(
                "cache entry {} is unusable ({e}); running the command",
                key.short()
            ));
            let _ = store.remove_entry(key);
            return None;
        }
    };
    if entry.material != *material {
        warner.warn(format!(
            "cache entry {} was stored for different inputs; running the command",
            key.short()
        ));
        return None;
    }
    if entry.exit_code != 0 && !req.cache_failures {
        return None;
    }
    Some(entry)
}

/// Replays a hit: checks every blob, restores outputs, then writes stdout and stderr.
/// Nothing reaches the terminal or the file system until every blob has been verified,
/// so a damaged entry is a clean miss, never a partial replay.
/// `Ok(None)` means the entry turned out unusable and the command must run instead.
fn replay(
    store: &LocalStore,
    key: &Digest,
    entry: &Entry,
    warner: &Warner,
) -> Result<Option<i32>, Fatal> {
    let damaged = |e: &dyn std::fmt::Display| {
        warner.warn(format!(
            "cache entry {} is damaged ({e}); running the command",
            key.short()
        ));
        let _ = store.remove_entry(key);
        Ok(None)
    };
    let (first, second) = match &entry.streams {
        Streams::Separate { stdout, stderr } => (stdout, Some(stderr)),
        Streams::Merged { combined } => (combined, None),
    };
    let mut streams = Vec::new();
    for (blob, fd) in [(Some(first), 1), (second, 2)] {
        let Some(blob) = blob else { continue };
        match outputs::open_blob(blob, store) {
            Ok(reader) => streams.push((reader, fd)),
            Err(e) => return damaged(&e),
        }
    }
    for blob in entry.blobs().skip(streams.len()) {
        if let Err(e) = outputs::open_blob(blob, store) {
            return damaged(&e);
        }
    }
    if let Err(e) = outputs::restore_outputs(&entry.outputs, store) {
        warner.warn(format!("{e}; running the command"));
        return Ok(None);
    }
    for (reader, fd) in streams {
        // SAFETY: fd 1 and 2 stay open for the life of the process; the File is never dropped.
        let mut dest = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        if let Err(e) = reader.copy_to(&mut dest) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // What the command itself would have met: death by SIGPIPE.
                return Ok(Some(128 + libc::SIGPIPE));
            }
            return Err(Fatal::failure(format!(
                "memo: cannot write the replayed output: {e}"
            )));
        }
    }
    Ok(Some(entry.exit_code))
}

struct NotStored {
    reason: String,
    /// Whether the user should be told without `--verbose`.
    warn: bool,
}

fn decide_storable(
    finished: &Finished,
    req: &RunRequest,
    gathered: &Gathered,
) -> Result<(), NotStored> {
    let quiet = |reason: String| {
        Err(NotStored {
            reason,
            warn: false,
        })
    };
    match finished.outcome {
        Outcome::Signaled(sig) => return quiet(format!("killed by signal {sig}")),
        Outcome::Exited(code) if code != 0 && !req.cache_failures => {
            return quiet(format!("exit code {code}"))
        }
        Outcome::Exited(_) => {}
    }
    if let Some(sig) = finished.interrupted {
        return quiet(format!("interrupted by signal {sig}"));
    }
    if finished.destination_failed {
        return quiet("output could not be written".into());
    }
    for recording in &finished.recordings {
        if let Err(e) = recording {
            return Err(NotStored {
                reason: format!("cannot record the output ({e})"),
                warn: true,
            });
        }
    }
    for (path, before) in &gathered.watched {
        let now = fs::metadata(path).ok().map(|m| StatSignature::of(&m));
        if now.as_ref() != Some(before) {
            return Err(NotStored {
                reason: format!("input '{}' changed while the command ran", path.display()),
                warn: true,
            });
        }
    }
    Ok(())
}

fn save(
    store: &LocalStore,
    key: Digest,
    material: KeyMaterial,
    finished: Finished,
) -> Result<(), RecordError> {
    // In the material's (sorted) order, which is the order decode checks them in.
    let declared: Vec<PathBuf> = material
        .outputs
        .iter()
        .map(ByteString::to_path_buf)
        .collect();
    let outputs = outputs::record_outputs(&declared, store)?;
    let mut blobs = Vec::new();
    for recording in finished.recordings {
        let recording = recording.expect("decide_storable checked the recordings");
        let file = recording.file.reopen().map_err(|e| RecordError::Read {
            path: recording.file.path().to_path_buf(),
            source: e,
        })?;
        let blob = if recording.size <= crate::index::INLINE_MAX {
            outputs::store_blob(file, recording.size, store)?
        } else {
            store.put_object(&recording.digest, recording.file)?;
            crate::index::Blob {
                digest: recording.digest,
                size: recording.size,
                inline: None,
            }
        };
        blobs.push(blob);
    }
    let streams = match material.streams {
        StreamMode::Merged => Streams::Merged {
            combined: blobs.remove(0),
        },
        StreamMode::Separate => Streams::Separate {
            stdout: blobs.remove(0),
            stderr: blobs.remove(0),
        },
    };
    let entry = Entry {
        material,
        created_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        duration_ms: finished.duration.as_millis() as u64,
        exit_code: finished.outcome.exit_code(),
        streams,
        outputs,
    };
    store.put_entry(&key, &entry.encode())?;
    Ok(())
}
