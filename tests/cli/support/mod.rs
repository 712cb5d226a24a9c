//! The test environment: a temp dir with a work dir, a private cache, and a `tool` script
//! that counts its own invocations.

#![allow(dead_code)]

pub mod servers;
pub mod stamped;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const MEMO: &str = env!("CARGO_BIN_EXE_memo");

pub struct TestEnv {
    pub root: tempfile::TempDir,
    /// Whether memo stores every object raw (`MEMO_DEBUG_STORE_RAW`), for the tests that
    /// damage an object's raw bytes in place.
    pub raw_objects: bool,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let env = TestEnv {
            root: tempfile::tempdir().unwrap(),
            raw_objects: false,
        };
        fs::create_dir(env.work()).unwrap();
        fs::create_dir(env.root.path().join("home")).unwrap();
        env
    }

    /// A test environment whose memo never compresses an object.
    pub fn with_raw_objects() -> TestEnv {
        TestEnv {
            raw_objects: true,
            ..TestEnv::new()
        }
    }

    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    pub fn cache(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, content).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// Writes an executable script into the work dir.
    pub fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.write(rel, format!("#!/bin/sh\n{body}"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `./tool`: counts its invocations in `count`, then runs `body`.
    pub fn tool(&self, body: &str) {
        self.script(
            "tool",
            &format!("echo run >> \"{}\"\n{body}", self.path("count").display()),
        );
    }

    /// How many times `./tool` has run.
    pub fn count(&self) -> usize {
        fs::read_to_string(self.path("count"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// A `memo` command in the work dir with a minimal, fixed environment.
    pub fn memo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(MEMO);
        cmd.args(args)
            .current_dir(self.work())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.root.path().join("home"))
            .env("MEMO_DIR", self.cache())
            .stdin(Stdio::null());
        if self.raw_objects {
            cmd.env("MEMO_DEBUG_STORE_RAW", "1");
        }
        cmd
    }

    /// Starts memo with separate stdout and stderr pipes, without waiting for it.
    pub fn spawn_piped<I, S>(&self, args: I) -> std::process::Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.memo(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs memo with separate stdout and stderr pipes.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.memo(args).output().unwrap()
    }

    /// Runs memo with `input` on its stdin (separate stdout and stderr pipes).
    pub fn run_with_stdin<I, S>(&self, args: I, input: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::io::Write;
        let mut child = self
            .memo(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // memo may not read it all (without --stdin it reads none): ignore a broken pipe.
        let _ = child.stdin.take().unwrap().write_all(input);
        child.wait_with_output().unwrap()
    }

    /// Runs memo with stdout and stderr on one file, as `2>&1` does; returns what it wrote.
    pub fn run_merged<I, S>(&self, args: I) -> (i32, Vec<u8>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = tempfile::NamedTempFile::new().unwrap();
        let file = log.reopen().unwrap();
        let status = self
            .memo(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        (status.code().unwrap_or(-1), fs::read(log.path()).unwrap())
    }

    /// Every live entry in the cache's packs (see `StoredEntry`), by key.
    pub fn entries(&self) -> Vec<StoredEntry> {
        stored_entries(&self.cache())
    }

    /// The key (64 hex digits) of the one entry in the cache.
    #[track_caller]
    pub fn only_key(&self) -> String {
        let entries = self.entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries[0].key.clone()
    }

    /// Where an earlier memo kept the entry of `key` as a file of its own
    /// (`entries/ab/<key>`): memo still reads those.
    pub fn legacy_entry_path(&self, key: &str) -> PathBuf {
        self.cache().join("entries").join(&key[..2]).join(key)
    }

    /// Every object file in the cache.
    pub fn objects(&self) -> Vec<PathBuf> {
        files_under(&self.cache().join("objects"))
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(read) = fs::read_dir(dir) {
        for entry in read.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[track_caller]
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert_code(out, 0);
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestEnv {
    /// Runs the prepared memo command, checks it succeeded, and says whether the command
    /// under it really ran (a miss) or not (a hit).
    #[track_caller]
    pub fn ran(&self, mut cmd: Command) -> bool {
        let before = self.count();
        let out = cmd.output().unwrap();
        assert_success(&out);
        self.count() > before
    }

    /// `ran` for `memo run ARGS -- ./tool`.
    #[track_caller]
    pub fn ran_tool(&self, args: &[&str]) -> bool {
        self.ran(self.memo(run_tool(args)))
    }
}

/// `run ARGS -- ./tool`.
pub fn run_tool(args: &[&str]) -> Vec<String> {
    let mut all = vec!["run".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--".to_string(), "./tool".to_string()]);
    all
}

impl TestEnv {
    /// `memo stats --json`, parsed.
    #[track_caller]
    pub fn stats(&self) -> serde_json::Value {
        let out = self.run(["stats", "--json"]);
        assert_success(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `memo ls --json`, parsed.
    #[track_caller]
    pub fn listing(&self) -> Vec<serde_json::Value> {
        let out = self.run(["ls", "--json"]);
        assert_success(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `memo log --json -n 1000`, parsed.
    #[track_caller]
    pub fn events(&self) -> Vec<serde_json::Value> {
        let out = self.run(["log", "--json", "-n", "1000"]);
        assert_success(&out);
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Fails if a restore left its staging (`.memo-*`) in the work dir.
    #[track_caller]
    pub fn assert_no_staging(&self) {
        let leftovers: Vec<_> = fs::read_dir(self.work())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".memo"))
            .collect();
        assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    }

    /// Waits (up to 15 s) until the file `rel` exists in the work dir.
    #[track_caller]
    pub fn wait_for_file(&self, rel: &str) {
        self.eventually(&format!("{rel} appears"), || self.path(rel).exists());
    }

    /// Waits (up to 15 s) until the file `rel` holds something: a file that a process
    /// creates, then writes (`echo done > f`) can be seen empty in between.
    pub fn wait_until_written(&self, rel: &str) {
        self.eventually(&format!("{rel} is written"), || {
            fs::read(self.path(rel)).is_ok_and(|bytes| !bytes.is_empty())
        });
    }

    /// Waits (up to 15 s) until `check` holds.
    #[track_caller]
    pub fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..300 {
            if check() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("timed out waiting for: {what}");
    }
}

/// memo failed before running anything, with exit `code` and one line that starts with
/// `memo: `, mentions `mentions`, and is no panic.
#[track_caller]
pub fn assert_one_line_error(out: &Output, code: i32, mentions: &str) {
    assert_code(out, code);
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("memo: "), "{err:?}");
    assert!(
        err.contains(mentions),
        "{err:?} does not mention {mentions:?}"
    );
    assert!(!err.contains("panicked"), "{err:?}");
}

// The pack format memo stores entries in (src/store/packs.rs): the
// entries of keys whose first byte is `ab` are records appended to `packs/ab`, each a
// 48-byte header (magic, the key's 32 bytes, the body length u32 LE, a check) and the
// entry's bytes; `packs/ab.idx` is a table of 48-byte slots (key, the offset of the
// record's header u64 LE or u64::MAX for a removal, body length, check). The last slot
// of a key wins; a slot failing its check is ignored. A check is FNV-1a-32 of bytes
// 0..44, u32 LE.

const PACK_MAGIC: &[u8; 8] = b"\xffmemopk1";
const PACK_HEADER: u64 = 48;
const PACK_SLOT: usize = 48;

/// Bytes 0..44 of a header or slot, followed by their FNV-1a-32 check.
fn checked(first: &[u8]) -> Vec<u8> {
    assert_eq!(first.len(), 44);
    let sum = first.iter().fold(0x811c_9dc5u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut out = first.to_vec();
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The 32 bytes of a key given as 64 hex digits.
fn key_bytes(key_hex: &str) -> Vec<u8> {
    assert_eq!(key_hex.len(), 64, "not a key: {key_hex}");
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A slot of a table (key, offset, length) that passes its check (`offset` u64::MAX:
/// a removal).
pub fn pack_slot(key_hex: &str, offset: u64, len: u32) -> Vec<u8> {
    let mut slot = key_bytes(key_hex);
    slot.extend_from_slice(&offset.to_le_bytes());
    slot.extend_from_slice(&len.to_le_bytes());
    checked(&slot)
}

/// A record's header (magic, key, length) that passes its check.
pub fn pack_header(key_hex: &str, len: u32) -> Vec<u8> {
    let mut header = PACK_MAGIC.to_vec();
    header.extend_from_slice(&key_bytes(key_hex));
    header.extend_from_slice(&len.to_le_bytes());
    checked(&header)
}

/// Appends a slot for `key_hex` (`offset` u64::MAX: a removal) to the table of `pack`.
fn append_slot(pack: &Path, key_hex: &str, offset: u64, len: u32) {
    use std::io::Write;
    let mut table = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(table_of(pack))
        .unwrap();
    table.write_all(&pack_slot(key_hex, offset, len)).unwrap();
}

/// `packs/ab.idx` for `packs/ab`.
pub fn table_of(pack: &Path) -> PathBuf {
    pack.with_extension("idx")
}

/// One live entry: the record of `key` in `pack`, whose entry bytes (the header line and
/// the JSON, as an entry file held them) are `len` bytes at offset `at`.
#[derive(Clone, Debug)]
pub struct StoredEntry {
    pub key: String,
    pub pack: PathBuf,
    pub at: u64,
    pub len: usize,
}

impl StoredEntry {
    /// The entry's bytes, as memo stored them.
    pub fn bytes(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0; self.len];
        fs::File::open(&self.pack)
            .unwrap()
            .read_exact_at(&mut bytes, self.at)
            .unwrap();
        bytes
    }

    /// Damage in place: writes `bytes` (at most `len` of them) over the entry's bytes.
    pub fn overwrite(&self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&self.pack).unwrap();
        file.write_all_at(&bytes[..bytes.len().min(self.len)], self.at)
            .unwrap();
    }

    /// The record's header: the `PACK_HEADER` bytes before the entry's.
    pub fn header(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut header = vec![0; PACK_HEADER as usize];
        fs::File::open(&self.pack)
            .unwrap()
            .read_exact_at(&mut header, self.at - PACK_HEADER)
            .unwrap();
        header
    }

    /// Damage in place: writes `bytes` (at most `PACK_HEADER` of them) over the record's
    /// header, which then no longer matches its slot.
    pub fn overwrite_header(&self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new().write(true).open(&self.pack).unwrap();
        let len = bytes.len().min(PACK_HEADER as usize);
        file.write_all_at(&bytes[..len], self.at - PACK_HEADER)
            .unwrap();
    }

    /// Stores `bytes` as the entry of this key, as memo would: a new record and slot.
    pub fn replace(&self, bytes: &[u8]) {
        write_entry(
            self.pack.parent().unwrap().parent().unwrap(),
            &self.key,
            bytes,
        );
    }

    /// Removes the entry by hand: a tombstone slot, as `memo rm` writes.
    pub fn remove(&self) {
        append_slot(&self.pack, &self.key, u64::MAX, 0);
    }
}

/// Stores `bytes` as the entry of `key_hex` in the cache at `cache`: appends a record to
/// its pack and a slot to its table, as memo does.
pub fn write_entry(cache: &Path, key_hex: &str, bytes: &[u8]) {
    use std::io::Write;
    let dir = cache.join("packs");
    fs::create_dir_all(&dir).unwrap();
    let pack = dir.join(&key_hex[..2]);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&pack)
        .unwrap();
    let offset = file.metadata().unwrap().len();
    let len = u32::try_from(bytes.len()).unwrap();
    file.write_all(&pack_header(key_hex, len)).unwrap();
    file.write_all(bytes).unwrap();
    append_slot(&pack, key_hex, offset, len);
}

/// The live entries in the cache at `cache`, sorted by key: the last good slot of each
/// key in each table under `packs/`, but for removals.
pub fn stored_entries(cache: &Path) -> Vec<StoredEntry> {
    let mut found = std::collections::BTreeMap::new();
    for table in files_under(&cache.join("packs")) {
        let Some(pack) = table.to_str().and_then(|t| t.strip_suffix(".idx")) else {
            continue;
        };
        // (What is planted in place of a table is not read: a FIFO would block.)
        if !fs::symlink_metadata(&table).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let bytes = fs::read(&table).unwrap_or_default();
        for slot in bytes.chunks_exact(PACK_SLOT) {
            if checked(&slot[..44]) != slot {
                continue;
            }
            let key = hex(&slot[..32]);
            let offset = u64::from_le_bytes(slot[32..40].try_into().unwrap());
            let len = u32::from_le_bytes(slot[40..44].try_into().unwrap()) as usize;
            let entry = (offset != u64::MAX).then(|| StoredEntry {
                key: key.clone(),
                pack: PathBuf::from(pack),
                at: offset + PACK_HEADER,
                len,
            });
            found.insert(key, entry);
        }
    }
    found.into_values().flatten().collect()
}

/// Rewrites `entry` through `edit` on its JSON body, keeping its header line with a valid
/// checksum, and stores it as a new record of the same key: what someone with write
/// access to a shared cache could do.
pub fn rewrite_entry(entry: &StoredEntry, edit: impl FnOnce(&mut serde_json::Value)) {
    entry.replace(&edited_entry(&entry.bytes(), edit));
}

/// An entry's bytes with its JSON body edited by `edit` and its checksum recomputed.
pub fn edited_entry(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    use sha2::Digest;
    let newline = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8(bytes[..newline].to_vec()).unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&bytes[newline + 1..]).unwrap();
    edit(&mut body);
    let body = serde_json::to_vec(&body).unwrap();
    let checksum = hex(&sha2::Sha256::digest(&body));
    let (prefix, _) = header.rsplit_once(' ').unwrap();
    let mut out = format!("{prefix} {checksum}\n").into_bytes();
    out.extend(body);
    out
}

/// The uid and gid of user `nobody`, whom tests that need a user without root's powers
/// run memo as.
pub const NOBODY: u32 = 65534;

/// Prepares `env` so that user `nobody` can run memo in it (work dir and cache its own),
/// or says why not on stderr. Needs root, which the suite runs as in CI.
pub fn nobody_can_run_in(env: &TestEnv) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running memo as another user needs root");
        return false;
    }
    let others_can_enter = |dir: &Path| {
        dir.ancestors()
            .skip(1)
            .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    };
    if !others_can_enter(Path::new(MEMO)) {
        eprintln!("skipped: user nobody cannot reach {MEMO}");
        return false;
    }
    fs::set_permissions(env.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(env.cache()).unwrap();
    for dir in [env.work(), env.cache()] {
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    true
}

/// Runs `cmd` as user `nobody` (see `nobody_can_run_in`).
pub fn as_nobody(mut cmd: Command) -> Output {
    use std::os::unix::process::CommandExt;
    cmd.uid(NOBODY).gid(NOBODY);
    cmd.output().unwrap()
}

/// `sh -c SCRIPT` in a new user and mount namespace in which a fresh tmpfs mounted with
/// `options` (`size=512k`) sits at `mount_point`: the script sees the mount point as
/// `$0` and memo as `$1`, then whatever args the caller adds. Runs in the work dir with
/// the same environment as `TestEnv::memo`. Run it through `mounted`.
pub fn tmpfs_command(env: &TestEnv, mount_point: &Path, options: &str, script: &str) -> Command {
    fs::create_dir_all(mount_point).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o {options} tmpfs \"$0\" || exit 99\n{script}"
        ))
        .arg(mount_point)
        .arg(MEMO)
        .current_dir(env.work())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", env.root.path().join("home"))
        .env("MEMO_DIR", env.cache());
    cmd
}

/// The output of a `tmpfs_command`, or `None` (saying why on stderr) where this machine
/// does not let a test mount a tmpfs: the caller then skips.
pub fn mounted(mut cmd: Command) -> Option<Output> {
    let out = cmd.output().ok()?;
    if out.status.code() == Some(99)
        || (out.status.code() == Some(1) && stderr(&out).contains("unshare"))
    {
        eprintln!(
            "skipped: cannot mount a tmpfs in a user namespace here ({})",
            stderr(&out).trim()
        );
        return None;
    }
    Some(out)
}

/// Runs `cmd`, killing it (and failing) if it is not done within `deadline`: a hang guard.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(deadline) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = finished.recv().unwrap().unwrap();
            panic!(
                "memo still ran after {deadline:?} (a hang); stdout {:?} stderr {:?}",
                stdout(&out),
                stderr(&out)
            );
        }
    }
}

/// Every stderr line of `out` that mentions a warning.
pub fn warning_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("warning"))
        .map(str::to_string)
        .collect()
}

/// Whether this machine lets memo trace (`memo run --trace`); says why not on stderr, once
/// per test, so that the caller can skip.
pub fn traceable() -> bool {
    static REFUSED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let refused = REFUSED.get_or_init(|| {
        let env = TestEnv::new();
        let out = env.run(["run", "--trace", "--", "true"]);
        stderr(&out)
            .lines()
            .find(|l| l.contains("ptrace was refused"))
            .map(str::to_string)
    });
    match refused {
        Some(line) => {
            eprintln!("skipped: the kernel refuses ptrace here ({line})");
            false
        }
        None => true,
    }
}

/// Opens a pseudo-terminal `columns` wide and 30 rows high: (master, slave).
pub fn open_pty(columns: u16) -> (fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls on descriptors owned here.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "open the slave");
        set_size(slave, columns);
        (
            fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

/// Sets the size of the terminal on `fd` to `columns` by 30 rows.
pub fn set_size(fd: i32, columns: u16) {
    let size = libc::winsize {
        ws_row: 30,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }, 0);
}
