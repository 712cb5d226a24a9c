//! Exclusive locks in the cache directory: named ones (`locks/NAME`, on `flock`), and one
//! per key (`KeyLock`). The kernel drops a lock when its holder dies, however it dies, so
//! a waiter then takes over.
//!
//! A key's lock is a byte of the one shared file `locks/keys`, at an offset taken from
//! the key, locked with an open-file-description (OFD) lock: no file is created and
//! removed per key, which on ext4 cost a miss more than its command. (Two keys share a
//! byte only if their digests agree in 61 bits.) A transient named lock
//! (`Lock::transient`) is unlinked by its holder just before release. A waiter that then
//! wins the lock on the unlinked inode notices (the path no longer names the file it
//! locked) and tries again on a fresh file, so two processes can never both believe
//! they hold the lock.
//!
//! A key's holder also names the process it runs (`Flight::note_process`): the kernel
//! releases a killed holder's lock before the command it ran has died of its
//! parent-death signal, so the next holder first waits for that process to be gone
//! (`KeyLock::end_earlier_copy`), and two copies of one command never run at once.
//!
//! The command's own children outlive it when it dies that way (a `make` killed leaves
//! its compilers running), and may go on writing its outputs. So the command inherits
//! a descriptor of its `Flight`: a description of `locks/keys` of its own, holding an
//! OFD lock on the key's flight byte (`FLIGHT_BASE` + the key's byte) and on the byte of
//! a note slot, where the holder notes the process it runs and the pipes the command's
//! stdout and stderr write into. OFD locks belong to the open file description, which
//! every process the command starts shares unless it closes its descriptors (Python's
//! `subprocess` does): so the lock outlives a killed memo exactly as long as some of
//! its command's processes live, and their /proc fdinfo names it. The next holder ends
//! what a killed holder's command left running, found by either mark
//! (`end_earlier_copy`, `take_flight`), before it starts the command again: what died
//! with memo must not go on writing beside the new copy. A holder that ends normally
//! clears its note and releases its flight. No file is created or removed per run
//! (on an ext4 without a journal, every file created after many were removed walks
//! past them). The previous version kept the flight in a file of its own,
//! `locks/flight-HEX` (flock): one such file, left by a killed run, is used as before,
//! and so is one made when processes no one may end hold the byte. (Named
//! `flight-HEX`, not `key-HEX` or `key-HEX.run`, the files an older memo still locks and
//! holds open while it runs: a new holder must never take that memo for what a killed
//! run left, and kill it.)

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt as _, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;

use crate::fsutil::{create_private_dir_all, open_cache_file, Access};

/// How long a new holder waits for the process a killed holder noted: it dies of its
/// parent-death signal within milliseconds, unless that could not be set (it became a
/// set-user-ID program, or was started by an older memo).
pub const NOTED_PROCESS_WAIT: Duration = Duration::from_secs(5);

pub struct Lock {
    file: File,
    path: PathBuf,
    transient: bool,
}

impl Lock {
    /// Waits for the lock at `dir/name`, which stays on disk (for long-lived names).
    pub fn wait(dir: &Path, name: &str) -> io::Result<Lock> {
        acquire(dir, name, true, false).map(|l| l.expect("a blocking lock is always acquired"))
    }

    /// Takes the lock at `dir/name` if it is free; `Ok(None)` if someone holds it.
    pub fn try_take(dir: &Path, name: &str, transient: bool) -> io::Result<Option<Lock>> {
        acquire(dir, name, false, transient)
    }

    /// Waits for the lock at `dir/name`, removed from disk when released.
    pub fn wait_transient(dir: &Path, name: &str) -> io::Result<Lock> {
        acquire(dir, name, true, true).map(|l| l.expect("a blocking lock is always acquired"))
    }
}

/// Every other process this user may inspect, by pid (all of them for root).
fn other_processes() -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != me)
        .collect()
}

/// This boot of this machine: the kernel's random boot id, and the pid namespace (a pid
/// means nothing in another); "-" where they cannot be read.
fn boot_id() -> String {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let namespace = fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino());
    match boot.trim() {
        "" => "-".into(),
        boot => format!("{boot}/{namespace}"),
    }
}

/// Whether process `pid` has one of the pipes `pipes` (by inode number) open, or, for
/// a `--tty` run, the pseudo-terminal noted (a /dev/pts link whose inode is noted).
fn writes_into(pid: u32, pipes: &[u64]) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                if target.starts_with("/dev/pts/") {
                    // A terminal: stat'ing it never waits on a network.
                    return fs::metadata(fd.path()).is_ok_and(|m| pipes.contains(&m.ino()));
                }
                target
                    .strip_prefix("pipe:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|ino| ino.parse::<u64>().ok())
                    .is_some_and(|ino| pipes.contains(&ino))
            })
        })
}

/// Whether process `pid` has the file `(dev, ino)` at `path` open.
fn holds_file(pid: u32, path: &Path, dev: u64, ino: u64) -> bool {
    descriptors_of(pid, path, dev, ino).next().is_some()
}

/// The descriptors (their numbers) through which process `pid` has the file
/// `(dev, ino)` at `path` open.
fn descriptors_of(
    pid: u32,
    path: &Path,
    dev: u64,
    ino: u64,
) -> impl Iterator<Item = std::ffi::OsString> + use<'_> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(move |fd| {
            names_it(&fd.path(), path)
                && fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
        .map(|fd| fd.file_name())
}

/// Whether the /proc fd link `fd` may name the file at `path`: its text ends with the
/// file's name in its directory (`locks/keys`), whatever path led there (a bind mount, a
/// symlinked cache shows another). The link's text first: a stat of every open file
/// would block on a hung network mount some unrelated process holds a file on; the
/// caller then compares device and inode.
fn names_it(fd: &Path, path: &Path) -> bool {
    let tail = |p: &Path| {
        let mut names = p.iter().rev();
        (
            names.next().map(|n| n.to_owned()),
            names.next().map(|n| n.to_owned()),
        )
    };
    fs::read_link(fd).is_ok_and(|target| tail(&target) == tail(path))
}

/// Whether process `pid` holds, through a descriptor of the file `(dev, ino)` at
/// `path`, the OFD lock of the byte at `offset` (its fdinfo lists the locks of the open
/// file description behind each descriptor).
fn holds_byte(pid: u32, path: &Path, dev: u64, ino: u64, offset: i64) -> bool {
    descriptors_of(pid, path, dev, ino).any(|fd| {
        fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
            .is_ok_and(|info| info.lines().any(|line| locks_byte(line, offset)))
    })
}

/// Whether a `lock:` line of an fdinfo file is a write lock whose range starts at
/// `offset`: `lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:123 START END`.
fn locks_byte(line: &str, offset: i64) -> bool {
    let Some(rest) = line.strip_prefix("lock:") else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let Some(at) = fields.iter().position(|f| f.matches(':').count() == 2) else {
        return false;
    };
    fields.contains(&"WRITE")
        && fields.get(at + 1).and_then(|s| s.parse::<i64>().ok()) == Some(offset)
}

/// Kills (SIGKILL) every process for which `matches` holds, and waits until none is
/// left, or until `end`: `Err(pid)` names one still there (one this user may not
/// signal). These are what a killed memo's command left running: they were meant to
/// die with it.
fn end_processes(matches: impl Fn(&Process) -> bool, end: Instant) -> Result<(), u32> {
    loop {
        let left: Vec<u32> = other_processes()
            .into_iter()
            .filter(|pid| Process::find(*pid).is_some_and(|p| matches(&p)))
            .collect();
        let Some(&first) = left.first() else {
            return Ok(());
        };
        // One kill pass at least, even when the time is up.
        for pid in left {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if Instant::now() >= end {
            return Err(first);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lock of one key: a byte of `locks/keys` (see the module doc). Released when
/// dropped (the kernel releases it when the descriptor closes, however memo ends).
pub struct KeyLock {
    keys: File,
    dir: PathBuf,
    hex: String,
    /// The key's byte.
    offset: i64,
}

impl KeyLock {
    /// Takes the lock of the key `hex` (64 hex digits) in `dir` if it is free;
    /// `Ok(None)` if someone holds it.
    pub fn try_take(dir: &Path, hex: &str) -> io::Result<Option<KeyLock>> {
        KeyLock::acquire(dir, hex, false).map_err(|e| naming_dir(dir, e))
    }

    /// Waits for the lock of the key `hex` in `dir`.
    pub fn wait(dir: &Path, hex: &str) -> io::Result<KeyLock> {
        KeyLock::acquire(dir, hex, true)
            .map(|l| l.expect("a blocking lock is always acquired"))
            .map_err(|e| naming_dir(dir, e))
    }

    fn acquire(dir: &Path, hex: &str, wait: bool) -> io::Result<Option<KeyLock>> {
        let offset = key_offset(hex)?;
        create_private_dir_all(dir)?;
        let keys = open_cache_file(&dir.join("keys"))?;
        if !lock_byte(&keys, offset, wait)? {
            return Ok(None);
        }
        if !older_memo_done(dir, hex, wait)? {
            return Ok(None);
        }
        Ok(Some(KeyLock {
            keys,
            dir: dir.to_path_buf(),
            hex: hex.to_string(),
            offset,
        }))
    }

    /// `locks/flight-HEX`: the flight of a memo of the previous version, or one taken
    /// instead of the byte while processes no one may end hold that (see `take_flight`).
    fn flight_path(&self) -> PathBuf {
        self.dir.join(format!("flight-{}", self.hex))
    }

    /// Ends what an earlier holder that was killed left running (a holder that ends
    /// normally clears its note; one that was killed leaves it): waits, for at most
    /// `limit`, until the process it noted is gone (it dies of its parent-death
    /// signal), then kills every process that still writes into the noted output pipes
    /// and waits for them too. `Err(pid)` if one still runs after `limit` (it may not
    /// be signalled).
    pub fn end_earlier_copy(&self, limit: Duration) -> Result<(), u32> {
        let end = Instant::now() + limit;
        let left = |end: Instant| end.saturating_duration_since(Instant::now());
        // A flight file (one failed open when there is none).
        if let Ok(file) = crate::fsutil::open_regular(&self.flight_path(), Access::Read) {
            let mut buf = [0u8; SLOT_BYTES as usize];
            let n = file.read_at(&mut buf, 0).unwrap_or(0);
            end_noted_copy(note_line(&buf[..n]), left(end))?;
        }
        // The notes in this key's window of slots (one read).
        let window = read_window(&self.keys, self.offset);
        for slot in window.chunks(SLOT_BYTES as usize) {
            if let Some(note) = note_line(slot).strip_prefix(self.hex.as_str()) {
                end_noted_copy(note, left(end))?;
            }
        }
        Ok(())
    }

    /// Takes this key's flight: the byte at `FLIGHT_BASE` + the key's in `locks/keys`,
    /// through a description of its own that the command inherits, and a slot for the
    /// note. Processes of an earlier, killed holder's command that still hold it (they
    /// share that description) are killed first, and waited for, at most `limit`. The
    /// `bool` says whether they were all gone; if not (processes this user may not
    /// signal), the flight is a fresh `locks/flight-HEX` file, which later holders use
    /// while those processes hold the byte, so that they do not wait for them again.
    pub fn take_flight(&self, limit: Duration) -> io::Result<(Flight, bool)> {
        self.take_flight_here(limit)
            .map_err(|e| naming_dir(&self.dir, e))
    }

    fn take_flight_here(&self, limit: Duration) -> io::Result<(Flight, bool)> {
        let flight_path = self.flight_path();
        if fs::symlink_metadata(&flight_path).is_ok() {
            return self.take_flight_file(limit);
        }
        let keys_path = self.dir.join("keys");
        // A description of its own: the command inherits it, and with it the locks.
        let file = open_cache_file(&keys_path)?;
        let byte = FLIGHT_BASE + self.offset;
        if !lock_byte(&file, byte, false)? {
            let held = file.metadata()?;
            // As /proc shows it: absolute, symlinks resolved.
            let shown = fs::canonicalize(&keys_path)?;
            let end = Instant::now() + limit;
            let holds = |p: &Process| holds_byte(p.pid, &shown, held.dev(), held.ino(), byte);
            let _ = end_processes(holds, end);
            loop {
                if lock_byte(&file, byte, false)? {
                    break;
                }
                if Instant::now() >= end {
                    // Held for good: a flight file, fresh, for this holder and the next.
                    return Ok((self.fresh_flight_file()?, false));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // A slot for the note: the one a killed holder of this key left its note in,
        // else an empty one. A note of another key is never written over: a killed
        // holder left it, and that key's next holder needs it.
        let window = read_window(&file, self.offset);
        let home = window_start(self.offset);
        let note_of = |i: u64| {
            let at = (i * SLOT_BYTES) as usize;
            note_line(window.get(at..at + SLOT_BYTES as usize).unwrap_or(&[]))
        };
        let mut free: Vec<u64> = (0..PROBES)
            .filter(|i| note_of(*i).is_empty() || note_of(*i).starts_with(self.hex.as_str()))
            .collect();
        free.sort_by_key(|i| note_of(*i).is_empty());
        let slot = free
            .into_iter()
            .map(|i| home + i)
            .find(|slot| lock_byte(&file, SLOT_BASE + *slot as i64, false).unwrap_or(false));
        let Some(slot) = slot else {
            // No slot for the note: the flight as a file of its own, note and all.
            drop(file);
            return Ok((self.fresh_flight_file()?, true));
        };
        Ok((
            Flight {
                file,
                kind: FlightKind::Byte {
                    hex: self.hex.clone(),
                    slot,
                    noted: std::cell::Cell::new(false),
                },
            },
            true,
        ))
    }

    /// The flight as a file of its own (`locks/flight-HEX`, flock), as the previous
    /// version kept it: taken when such a file is there.
    fn take_flight_file(&self, limit: Duration) -> io::Result<(Flight, bool)> {
        let path = self.flight_path();
        // Only a holder of this key opens or removes its flight: no race on the path.
        let file = open_cache_file(&path)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => return Ok((self.file_flight(file, path), true)),
            Err(e) if is_contended(&e) => {}
            Err(e) => return Err(e),
        }
        let held = file.metadata()?;
        let shown = fs::canonicalize(&path)?;
        let end = Instant::now() + limit;
        let _ = end_processes(|p| holds_file(p.pid, &shown, held.dev(), held.ino()), end);
        loop {
            match FileExt::try_lock_exclusive(&file) {
                Ok(()) => return Ok((self.file_flight(file, path), true)),
                Err(e) if is_contended(&e) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= end {
                // Held by what could not be ended: a fresh file beside it.
                fs::remove_file(&path)?;
                return Ok((self.fresh_flight_file()?, false));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A flight file made here (none is at the path), taken.
    fn fresh_flight_file(&self) -> io::Result<Flight> {
        let path = self.flight_path();
        let file = open_cache_file(&path)?;
        FileExt::try_lock_exclusive(&file)?;
        Ok(self.file_flight(file, path))
    }

    fn file_flight(&self, file: File, path: PathBuf) -> Flight {
        Flight {
            file,
            kind: FlightKind::File {
                path,
                keys: self.dir.join("keys"),
                byte: FLIGHT_BASE + self.offset,
            },
        }
    }
}

/// A memo of the version before the shared `locks/keys` holds `locks/key-HEX` (flock)
/// while it runs the key: waits until it is done (or says whether it is, without
/// `wait`). One failed open when no such memo ran here. The other way round, an older
/// memo started while a newer one runs the key does not wait for it: it knows nothing
/// of `locks/keys` (and a file per key is what the newer one no longer makes).
fn older_memo_done(dir: &Path, hex: &str, wait: bool) -> io::Result<bool> {
    let Ok(file) = crate::fsutil::open_regular(&dir.join(format!("key-{hex}")), Access::Read)
    else {
        return Ok(true);
    };
    if wait {
        FileExt::lock_exclusive(&file)?;
        return Ok(true);
    }
    match FileExt::try_lock_exclusive(&file) {
        Ok(()) => Ok(true),
        Err(e) if is_contended(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; this says so at once.
        let _ = set_byte_lock(&self.keys, libc::F_UNLCK as libc::c_short, 0, false);
    }
}

/// The byte of `locks/keys` that stands for the key `hex`: its first 61 bits, so that
/// the offset (and the end of its one-byte range) stays far below the largest an
/// `off_t` can say.
fn key_offset(hex: &str) -> io::Result<i64> {
    let first = hex
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a key"))?;
    // Offset 0 is left out: nothing else locks there, but a lock at 0 reads as "the
    // whole file" to a person looking at /proc/locks.
    Ok((first >> 3).max(1) as i64)
}

/// The bytes of `locks/keys` locked by a key's flight: `FLIGHT_BASE` + the key's byte,
/// above every key's byte.
const FLIGHT_BASE: i64 = 1 << 61;
/// The byte locked by the holder of a note slot: `SLOT_BASE` + the slot's number.
const SLOT_BASE: i64 = 1 << 62;
/// The notes are slots of `SLOT_BYTES` at the start of `locks/keys` (data, which no
/// lock covers): `SLOTS` of them, 1 MiB at most, written only where used.
const SLOTS: u64 = 4096;
const SLOT_BYTES: u64 = 256;
/// A key's note goes in the first free slot of a window of `PROBES` from its own.
const PROBES: u64 = 8;

/// The first slot of the window of the key whose byte is `offset`.
fn window_start(offset: i64) -> u64 {
    offset as u64 % (SLOTS - PROBES + 1)
}

/// The window of note slots of the key whose byte is `offset` (short or empty where
/// nothing was ever written).
fn read_window(keys: &File, offset: i64) -> Vec<u8> {
    let mut window = vec![0u8; (PROBES * SLOT_BYTES) as usize];
    let mut got = 0;
    let start = window_start(offset) * SLOT_BYTES;
    while got < window.len() {
        match keys.read_at(&mut window[got..], start + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    window.truncate(got);
    window
}

/// The first line of a note (up to a newline or a NUL).
fn note_line(bytes: &[u8]) -> &str {
    let end = bytes
        .iter()
        .position(|b| matches!(b, b'\n' | 0))
        .unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("")
}

/// Locks (write) the byte at `offset` of `file`: waiting for it when `wait`, else
/// `Ok(false)` if someone holds it.
fn lock_byte(file: &File, offset: i64, wait: bool) -> io::Result<bool> {
    loop {
        match set_byte_lock(file, libc::F_WRLCK as libc::c_short, offset, wait) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if !wait && (is_contended(&e) || e.raw_os_error() == Some(libc::EACCES)) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether someone holds the byte at `offset` of the file at `path`.
fn byte_held(path: &Path, offset: i64) -> bool {
    let Ok(file) = crate::fsutil::open_regular(path, Access::Read) else {
        return false;
    };
    // SAFETY: an all-zero flock is a valid value (plain integers).
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_WRLCK as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    request.l_start = offset as libc::off_t;
    request.l_len = 1;
    #[cfg(target_os = "linux")]
    let command = libc::F_OFD_GETLK;
    #[cfg(not(target_os = "linux"))]
    let command = libc::F_GETLK;
    // SAFETY: fcntl with F_*GETLK reads and writes the one flock struct passed.
    let asked = unsafe { libc::fcntl(file.as_raw_fd(), command, &mut request) };
    asked == 0 && request.l_type != libc::F_UNLCK as libc::c_short
}

/// One `fcntl` byte-range lock request on `file`: an OFD lock on Linux (owned by the
/// open file, like `flock`, so threads and other descriptors of this process do not
/// disturb it), a process-owned POSIX lock elsewhere. `offset` 0 with F_UNLCK unlocks
/// every byte this descriptor holds.
fn set_byte_lock(file: &File, kind: libc::c_short, offset: i64, wait: bool) -> io::Result<()> {
    // SAFETY: an all-zero flock is a valid value (plain integers).
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = kind;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    request.l_start = offset as libc::off_t;
    request.l_len = if offset == 0 { 0 } else { 1 };
    #[cfg(target_os = "linux")]
    let command = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    #[cfg(not(target_os = "linux"))]
    let command = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    // SAFETY: fcntl with a lock command reads the one flock struct passed.
    if unsafe { libc::fcntl(file.as_raw_fd(), command, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A key's flight: what the command's processes hold through an inherited descriptor,
/// and where the holder notes the process it runs (see the module doc). Released, and
/// its note cleared, when dropped, before its key lock is: a process the command left
/// running keeps a descriptor nobody waits on.
pub struct Flight {
    file: File,
    kind: FlightKind,
}

enum FlightKind {
    /// The flight's byte of `locks/keys`, the note's slot, and whether a note was
    /// written there (to be cleared).
    Byte {
        hex: String,
        slot: u64,
        noted: std::cell::Cell<bool>,
    },
    /// A flight file, removed when dropped unless the flight's byte is still held
    /// (processes no one could end hold it: the next holders take this file instead).
    File {
        path: PathBuf,
        keys: PathBuf,
        byte: i64,
    },
}

impl Flight {
    /// The descriptor the command must inherit.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Writes down `pid`, the process run under this flight, with its start time (so a
    /// recycled pid is not mistaken for it) and the inode numbers of its output pipes.
    pub fn note_process(&self, pid: u32, pipes: &[u64]) -> io::Result<()> {
        let Some(process) = Process::find(pid) else {
            return Ok(());
        };
        let mut text = format!(
            "{} {} {} {}",
            process.pid,
            process.started,
            process.session,
            boot_id()
        );
        for pipe in pipes.iter().take(2) {
            text.push_str(&format!(" {pipe}"));
        }
        text.push('\n');
        match &self.kind {
            FlightKind::Byte { hex, slot, noted } => {
                let mut note = format!("{hex} {text}").into_bytes();
                note.resize(SLOT_BYTES as usize, 0);
                noted.set(true);
                self.file.write_all_at(&note, slot * SLOT_BYTES)
            }
            FlightKind::File { .. } => {
                // Written over what a killed run may have left, then cut to length
                // only if that was longer: on ext4, a truncation to zero makes the
                // close write the file's data out (auto_da_alloc).
                self.file.write_all_at(text.as_bytes(), 0)?;
                if self.file.metadata()?.len() > text.len() as u64 {
                    self.file.set_len(text.len() as u64)?;
                }
                Ok(())
            }
        }
    }

    /// Lets go of the flight's locks, as the kernel does when a holder is killed and
    /// nothing else holds its descriptor, and leaves its note where it is.
    #[cfg(test)]
    fn release_as_if_killed(self) {
        let _ = set_byte_lock(&self.file, libc::F_UNLCK as libc::c_short, 0, false);
        let _ = FileExt::unlock(&self.file);
        std::mem::forget(self);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        match &self.kind {
            FlightKind::Byte { slot, noted, .. } => {
                if noted.get() {
                    let _ = self
                        .file
                        .write_all_at(&[0; SLOT_BYTES as usize], slot * SLOT_BYTES);
                }
                let _ = set_byte_lock(&self.file, libc::F_UNLCK as libc::c_short, 0, false);
            }
            FlightKind::File { path, keys, byte } => {
                if !byte_held(keys, *byte) {
                    let _ = fs::remove_file(path);
                } else {
                    let _ = self.file.set_len(0);
                }
                let _ = FileExt::unlock(&self.file);
            }
        }
    }
}

/// `KeyLock::end_earlier_copy`, from a note's text (after its key, in a slot).
fn end_noted_copy(text: &str, limit: Duration) -> Result<(), u32> {
    let mut fields = text.split_whitespace();
    let number = |f: Option<&str>| f.and_then(|f| f.parse::<u64>().ok());
    let (Some(pid), Some(started)) = (number(fields.next()), number(fields.next())) else {
        return Ok(());
    };
    let Ok(pid) = u32::try_from(pid) else {
        return Ok(());
    };
    let (Some(session), Some(boot)) = (number(fields.next()), fields.next()) else {
        return Ok(());
    };
    // Pids, start ticks, sessions and pipe numbers mean nothing on another boot or
    // another machine (a cache on a shared volume): such a note is ignored.
    if boot != boot_id() {
        return Ok(());
    }
    let end = Instant::now() + limit;
    while Process::find(pid).is_some_and(|now| now.started == started) {
        if Instant::now() >= end {
            return Err(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pipes: Vec<u64> = fields.take(2).filter_map(|f| f.parse().ok()).collect();
    if pipes.is_empty() {
        return Ok(());
    }
    // A pipe's inode number may be reused once every end of it is closed: only a
    // process of the killed command's session, started after it, is one of its own.
    let of_that_run = |p: &Process| {
        u64::from(p.session) == session && p.started >= started && writes_into(p.pid, &pipes)
    };
    end_processes(of_that_run, end)
}

/// A live process as /proc/PID/stat shows it, told apart from a later one with the same
/// pid by its start time.
#[derive(Debug, PartialEq, Eq)]
struct Process {
    pid: u32,
    /// Clock ticks after boot (field 22).
    started: u64,
    /// Its session id (field 6).
    session: u32,
}

impl Process {
    /// The live process `pid`, if there is one; a zombie does not count (it has stopped
    /// running; it only waits for its parent to collect it).
    fn find(pid: u32) -> Option<Process> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold anything.
        let rest = &stat[stat.rfind(')')? + 1..];
        // Fields from the state (field 3) on.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if matches!(*fields.first()?, "Z" | "X") {
            return None;
        }
        Some(Process {
            pid,
            started: fields.get(19)?.parse().ok()?,
            session: fields.get(3)?.parse().ok()?,
        })
    }
}

fn acquire(dir: &Path, name: &str, wait: bool, transient: bool) -> io::Result<Option<Lock>> {
    try_acquire(dir, name, wait, transient).map_err(|e| naming_dir(dir, e))
}

/// `e` with the directory of the locks in front: a lock's own name (a key's 64 hex
/// digits) means nothing to a user, the cache directory does.
fn naming_dir(dir: &Path, e: io::Error) -> io::Error {
    let shown = dir.display().to_string();
    if e.to_string().contains(&shown) {
        return e;
    }
    io::Error::new(e.kind(), format!("{shown}: {e}"))
}

fn try_acquire(dir: &Path, name: &str, wait: bool, transient: bool) -> io::Result<Option<Lock>> {
    create_private_dir_all(dir)?;
    let path = dir.join(name);
    loop {
        let file = open_cache_file(&path)?;
        if wait {
            FileExt::lock_exclusive(&file)?;
        } else if let Err(e) = FileExt::try_lock_exclusive(&file) {
            if is_contended(&e) {
                return Ok(None);
            }
            return Err(e);
        }
        // Still the file at `path`? If its holder unlinked it meanwhile, start over.
        let held = file.metadata()?;
        match fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok(Some(Lock {
                    file,
                    path,
                    transient,
                }))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a `try_lock_*` error means "someone else holds it" (not a failure to lock).
pub fn is_contended(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EWOULDBLOCK)
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.transient {
            // While the lock is held, the path names our file: nobody else unlinks it.
            let _ = fs::remove_file(&self.path);
        }
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// 8 threads take a lock with `take`, 20 times each: never two hold it at once.
    fn at_most_one_holder<L>(take: impl Fn() -> L + Sync) {
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _lock = take();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
    }

    #[test]
    fn transient_locks_exclude_each_other_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        at_most_one_holder(|| Lock::wait_transient(dir.path(), "k").unwrap());
        assert!(!dir.path().join("k").exists());
    }

    #[test]
    fn the_session_is_read_from_proc() {
        // SAFETY: getsid(0) has no preconditions.
        let mine = unsafe { libc::getsid(0) } as u32;
        assert_eq!(
            Process::find(std::process::id()).map(|p| p.session),
            Some(mine)
        );
    }

    const KEY: &str = "c27932ecd2ca8de48c6022063949120547aa9cc22546089818b16c0d35b414dc";
    const OTHER: &str = "c27932ecd2ca8df48c6022063949120547aa9cc22546089818b16c0d35b414dc";

    #[test]
    fn key_locks_exclude_each_other_and_make_no_file_per_key() {
        let dir = tempfile::tempdir().unwrap();
        at_most_one_holder(|| KeyLock::wait(dir.path(), KEY).unwrap());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keys"]);
    }

    #[test]
    fn a_key_lock_is_taken_once_and_other_keys_stay_free() {
        let dir = tempfile::tempdir().unwrap();
        let held = KeyLock::try_take(dir.path(), KEY).unwrap().unwrap();
        assert!(KeyLock::try_take(dir.path(), KEY).unwrap().is_none());
        // The two keys differ in the bits the offset is taken from, nowhere else.
        assert_ne!(key_offset(KEY).unwrap(), key_offset(OTHER).unwrap());
        assert!(KeyLock::try_take(dir.path(), OTHER).unwrap().is_some());
        drop(held);
        assert!(KeyLock::try_take(dir.path(), KEY).unwrap().is_some());
    }

    #[test]
    fn a_key_lock_is_released_when_its_holder_dies() {
        let dir = tempfile::tempdir().unwrap();
        // Another process takes the byte (python's lockf is a POSIX lock: it conflicts
        // with OFD locks on the same byte) and is killed while it holds it.
        let offset = key_offset(KEY).unwrap();
        fs::write(dir.path().join("keys"), b"").unwrap();
        let script = format!(
            "import fcntl,os,sys,time\nf=open(sys.argv[1],'r+')\n\
             fcntl.lockf(f,fcntl.LOCK_EX,1,{offset})\nprint('held',flush=True)\ntime.sleep(60)\n"
        );
        let Ok(mut holder) = std::process::Command::new("python3")
            .args(["-c", &script])
            .arg(dir.path().join("keys"))
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "held\n");
        assert!(KeyLock::try_take(dir.path(), KEY).unwrap().is_none());
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(KeyLock::try_take(dir.path(), KEY).unwrap().is_some());
    }

    /// What a holder killed with -9 leaves: its note, and its locks released.
    fn kill_holder(lock: KeyLock, flight: Flight) {
        flight.release_as_if_killed();
        drop(lock);
    }

    #[test]
    fn a_holder_waits_for_the_process_a_killed_holder_noted() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let first = KeyLock::wait(dir.path(), KEY).unwrap();
        let (flight, _) = first.take_flight(Duration::ZERO).unwrap();
        flight.note_process(child.id(), &[]).unwrap();
        kill_holder(first, flight);
        let next = KeyLock::try_take(dir.path(), KEY).unwrap();
        let next = next.expect("the killed holder's lock is free");
        let waited = next.end_earlier_copy(Duration::from_millis(50));
        assert_eq!(waited, Err(child.id()));
        child.kill().unwrap();
        // Killed but not yet collected: a zombie is gone.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(next.end_earlier_copy(Duration::from_secs(5)), Ok(()));
        child.wait().unwrap();
    }

    #[test]
    fn a_holder_that_ends_normally_leaves_no_note() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Reaped::sleeping();
        let first = KeyLock::wait(dir.path(), KEY).unwrap();
        let (flight, _) = first.take_flight(Duration::ZERO).unwrap();
        flight.note_process(child.0.id(), &[]).unwrap();
        drop(flight);
        drop(first);
        assert!(!dir.path().join(format!("flight-{KEY}")).exists());
        let next = KeyLock::wait(dir.path(), KEY).unwrap();
        assert_eq!(next.end_earlier_copy(Duration::ZERO), Ok(()));
        child.0.kill().unwrap();
    }

    /// A child killed and collected when the test ends, however it ends.
    struct Reaped(std::process::Child);

    impl Reaped {
        /// A `sleep 30`.
        fn sleeping() -> Reaped {
            Reaped(
                std::process::Command::new("sleep")
                    .arg("30")
                    .spawn()
                    .unwrap(),
            )
        }
    }

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_flight_held_by_a_left_process_is_waited_for_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = KeyLock::wait(dir.path(), KEY).unwrap();
        let (first, clear) = lock.take_flight(Duration::ZERO).unwrap();
        assert!(clear);
        assert!(matches!(first.kind, FlightKind::Byte { .. }));
        // What a killed holder's command left running: the flight's description, whose
        // locks it keeps (here, in this very process, which may not be ended).
        let left = first.file.try_clone().unwrap();
        std::mem::forget(first);
        let path = dir.path().join(format!("flight-{KEY}"));
        let (second, clear) = lock.take_flight(Duration::from_millis(30)).unwrap();
        assert!(!clear, "still held");
        assert!(matches!(second.kind, FlightKind::File { .. }));
        drop(second);
        assert!(path.exists(), "kept while the byte is held");
        let (third, clear) = lock.take_flight(Duration::ZERO).unwrap();
        assert!(
            clear,
            "the file again: no second wait for the same left process"
        );
        // Once the left process is gone, the file goes, and the byte serves again.
        set_byte_lock(&left, libc::F_UNLCK as libc::c_short, 0, false).unwrap();
        drop(third);
        assert!(!path.exists());
        let (fourth, clear) = lock.take_flight(Duration::ZERO).unwrap();
        assert!(clear && matches!(fourth.kind, FlightKind::Byte { .. }));
    }

    #[test]
    fn a_left_process_holding_the_flight_is_found_by_its_lock_and_ended() {
        let dir = tempfile::tempdir().unwrap();
        let lock = KeyLock::wait(dir.path(), KEY).unwrap();
        let (first, _) = lock.take_flight(Duration::ZERO).unwrap();
        // A child that inherits the flight's descriptor, as the command does.
        let fd = first.fd();
        // SAFETY: clearing close-on-exec on a descriptor this test owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        let mut child = Reaped::sleeping();
        // memo killed: its descriptor closes, the child's keeps the locks.
        drop(first.file.try_clone().unwrap());
        let FlightKind::Byte { slot, .. } = &first.kind else {
            panic!("a byte flight");
        };
        let slot = *slot;
        // SAFETY: closing the descriptor the forgotten flight owned.
        let raw = first.fd();
        std::mem::forget(first);
        unsafe { libc::close(raw) };
        let keys = dir.path().join("keys");
        assert!(byte_held(&keys, FLIGHT_BASE + key_offset(KEY).unwrap()));
        assert!(byte_held(&keys, SLOT_BASE + slot as i64));
        let shown = fs::canonicalize(&keys).unwrap();
        let meta = fs::metadata(&keys).unwrap();
        let byte = FLIGHT_BASE + key_offset(KEY).unwrap();
        assert!(holds_byte(
            child.0.id(),
            &shown,
            meta.dev(),
            meta.ino(),
            byte
        ));
        assert!(!holds_byte(
            child.0.id(),
            &shown,
            meta.dev(),
            meta.ino(),
            byte + 1
        ));
        let (_second, clear) = lock.take_flight(Duration::from_secs(5)).unwrap();
        assert!(clear, "the child was ended and the byte taken");
        assert!(
            child.0.try_wait().unwrap().is_some() || {
                std::thread::sleep(Duration::from_millis(100));
                child.0.try_wait().unwrap().is_some()
            }
        );
    }

    #[test]
    fn notes_of_other_keys_in_the_window_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Reaped::sleeping();
        // Another key with the same window (another byte): its killed holder's note
        // names it.
        let offset = key_offset(KEY).unwrap() + (SLOTS - PROBES + 1) as i64;
        let other = format!("{:016x}{}", (offset as u64) << 3, "f".repeat(48));
        assert_eq!(
            window_start(key_offset(&other).unwrap()),
            window_start(key_offset(KEY).unwrap())
        );
        let lock = KeyLock::wait(dir.path(), &other).unwrap();
        let (flight, _) = lock.take_flight(Duration::ZERO).unwrap();
        flight.note_process(child.0.id(), &[]).unwrap();
        kill_holder(lock, flight);
        let mine = KeyLock::wait(dir.path(), KEY).unwrap();
        assert_eq!(mine.end_earlier_copy(Duration::ZERO), Ok(()));
        let (flight, _) = mine.take_flight(Duration::ZERO).unwrap();
        flight.note_process(std::process::id(), &[]).unwrap();
        drop(flight);
        drop(mine);
        // The other key's note is still there: its next holder waits for the process.
        let next = KeyLock::wait(dir.path(), &other).unwrap();
        assert_eq!(
            next.end_earlier_copy(Duration::from_millis(20)),
            Err(child.0.id())
        );
        child.0.kill().unwrap();
    }

    #[test]
    fn a_recycled_pid_is_not_the_noted_process() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let mine = Process::find(me).unwrap();
        // A complete note, of this boot, for a process with this pid that started later.
        let note = format!(
            "{me} {} {} {} 1\n",
            mine.started + 1,
            mine.session,
            boot_id()
        );
        fs::write(dir.path().join(format!("flight-{KEY}")), note).unwrap();
        let lock = KeyLock::wait(dir.path(), KEY).unwrap();
        assert_eq!(lock.end_earlier_copy(Duration::ZERO), Ok(()));
    }

    #[test]
    fn try_take_fails_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lock::try_take(dir.path(), "g", false).unwrap().unwrap();
        assert!(Lock::try_take(dir.path(), "g", false).unwrap().is_none());
        drop(held);
        assert!(Lock::try_take(dir.path(), "g", false).unwrap().is_some());
    }
}
