//! Named exclusive locks in the cache directory (`locks/NAME`), on `flock`: the kernel
//! drops a lock when its holder dies, however it dies, so a waiter then takes over.
//!
//! Per-key locks would pile up as files, so a `Lock::transient` is unlinked by its holder
//! just before release. A waiter that then wins the lock on the unlinked inode notices
//! (the path no longer names the file it locked) and tries again on a fresh file, so two
//! processes can never both believe they hold the lock.
//!
//! A per-key lock also names the process its holder runs (`note_process`): the kernel
//! releases a killed holder's lock before the command it ran has died of its
//! parent-death signal, so the next holder first waits for that process to be gone
//! (`end_earlier_copy`), and two copies of one command never run at once.
//!
//! The command's own children outlive it when it dies that way (a `make` killed leaves
//! its compilers running), and may go on writing its outputs. So the command also
//! inherits the descriptor of a second lock, its `Flight` (`NAME.run`), and the holder
//! notes the pipes the command's stdout and stderr write into: every process the command
//! starts holds the flight unless it closes its descriptors (Python's `subprocess` does),
//! and those pipes unless it redirects its output. The next holder ends what a killed
//! holder's command left running, found by either mark (`end_earlier_copy`,
//! `take_flight`), before it starts the command again: what died with memo must not go
//! on writing beside the new copy.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt as _, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;

use crate::fsutil::{create_private_dir_all, open_cache_file};

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

impl Lock {
    /// Writes down `pid`, the process run under this lock, with its start time (so a
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
        self.file.set_len(0)?;
        self.file.write_all_at(text.as_bytes(), 0)
    }

    /// Ends what an earlier holder that was killed left running (a holder that ends
    /// normally removes its note with the file; one that was killed leaves it): waits, for
    /// at most `limit`, until the process it noted is gone (it dies of its parent-death
    /// signal), then kills every process that still writes into the noted output pipes
    /// and waits for them too. `Err(pid)` if one still runs after `limit` (it may not be
    /// signalled).
    pub fn end_earlier_copy(&self, limit: Duration) -> Result<(), u32> {
        // A note is a few numbers on one line.
        let mut buf = [0u8; 128];
        let Ok(n) = self.file.read_at(&mut buf, 0) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&buf[..n]);
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

/// Whether process `pid` has one of the pipes `pipes` (by inode number) open.
fn writes_into(pid: u32, pipes: &[u64]) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target
                    .strip_prefix("pipe:[")
                    .and_then(|rest| rest.strip_suffix(']'))
                    .and_then(|ino| ino.parse::<u64>().ok())
                    .is_some_and(|ino| pipes.contains(&ino))
            })
        })
}

/// Whether process `pid` has the file `(dev, ino)` open.
fn holds_file(pid: u32, path: &Path, dev: u64, ino: u64) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            // The link's text first: a stat of every open file would block on a hung
            // network mount some unrelated process holds a file on.
            fs::read_link(fd.path()).is_ok_and(|target| target == path)
                && fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
        })
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

/// The lock the command's processes hold through an inherited descriptor (see the
/// module doc). Released and removed when dropped, before its key lock is: a process
/// the command left running keeps a descriptor of a file nobody waits on.
pub struct Flight {
    file: File,
    path: PathBuf,
}

impl Flight {
    fn new(file: File, path: PathBuf) -> Flight {
        Flight { file, path }
    }

    /// The descriptor the command must inherit.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        let _ = FileExt::unlock(&self.file);
    }
}

impl Lock {
    /// Takes this lock's flight. Processes of an earlier, killed holder's command that
    /// still hold it are killed first, and waited for, at most `limit`. The `bool` says
    /// whether they were all gone; if not (processes this user may not signal), the
    /// flight is a fresh file, so that later holders do not wait for them again.
    pub fn take_flight(&self, limit: Duration) -> io::Result<(Flight, bool)> {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        self.take_flight_here(limit).map_err(|e| naming_dir(dir, e))
    }

    fn take_flight_here(&self, limit: Duration) -> io::Result<(Flight, bool)> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".run");
        let path = PathBuf::from(name);
        // Only a holder of this lock opens or removes the flight: no race on the path.
        let file = open_cache_file(&path)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(()) => return Ok((Flight::new(file, path), true)),
            Err(e) if is_contended(&e) => {}
            Err(e) => return Err(e),
        }
        let held = file.metadata()?;
        // As /proc shows it: absolute, symlinks resolved.
        let shown = fs::canonicalize(&path)?;
        let end = Instant::now() + limit;
        let _ = end_processes(|p| holds_file(p.pid, &shown, held.dev(), held.ino()), end);
        loop {
            match FileExt::try_lock_exclusive(&file) {
                Ok(()) => return Ok((Flight::new(file, path), true)),
                Err(e) if is_contended(&e) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= end {
                fs::remove_file(&path)?;
                let file = open_cache_file(&path)?;
                FileExt::try_lock_exclusive(&file)?;
                return Ok((Flight::new(file, path), false));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
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

    #[test]
    fn transient_locks_exclude_each_other_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _lock = Lock::wait_transient(dir.path(), "k").unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
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

    #[test]
    fn a_holder_waits_for_the_process_a_killed_holder_noted() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let first = Lock::wait_transient(dir.path(), "k").unwrap();
        first.note_process(child.id(), &[]).unwrap();
        // A killed holder: its lock goes, its file stays.
        FileExt::unlock(&first.file).unwrap();
        std::mem::forget(first);
        let next = Lock::try_take(dir.path(), "k", true).unwrap();
        let next = next.expect("flock is per open file: this one is free");
        let waited = next.end_earlier_copy(Duration::from_millis(50));
        assert_eq!(waited, Err(child.id()));
        child.kill().unwrap();
        // Killed but not yet collected: a zombie is gone.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(next.end_earlier_copy(Duration::from_secs(5)), Ok(()));
        child.wait().unwrap();
    }

    #[test]
    fn a_flight_held_by_a_left_process_is_waited_for_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock::wait_transient(dir.path(), "k").unwrap();
        let (first, clear) = lock.take_flight(Duration::ZERO).unwrap();
        assert!(clear);
        // What a killed holder's command left running: another description of the file.
        let left = File::open(dir.path().join("k.run")).unwrap();
        FileExt::unlock(&first.file).unwrap();
        std::mem::forget(first);
        FileExt::lock_exclusive(&left).unwrap();
        let (second, clear) = lock.take_flight(Duration::from_millis(30)).unwrap();
        assert!(!clear, "still held");
        drop(second);
        assert!(!dir.path().join("k.run").exists());
        let (_third, clear) = lock.take_flight(Duration::ZERO).unwrap();
        assert!(
            clear,
            "a fresh file: no second wait for the same left process"
        );
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
        fs::write(dir.path().join("k"), note).unwrap();
        let lock = Lock::wait_transient(dir.path(), "k").unwrap();
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
