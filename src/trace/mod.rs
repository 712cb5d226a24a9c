//! Tracing a command's file accesses: ptrace with a seccomp-bpf filter that stops the
//! command and all its descendants only on file-related system calls.
//!
//! Owns the traced process tree: it forks and starts the command by hand (the child stops
//! itself before installing the filter, so the tracer can set its options first), follows
//! fork, vfork, clone and exec, decodes each stopped call into an `Event`, and reports why
//! a run cannot be trusted. It knows nothing about keys, digests or the store: what the
//! events mean for a cache entry is `observe`'s business.

use std::fmt;
use std::path::PathBuf;

/// Items built only where tracing is (Linux on x86_64 and aarch64); elsewhere `spawn`
/// says `Unsupported`.
macro_rules! where_tracing_works {
    ($($item:item)*) => {
        $(
            #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
            $item
        )*
    };
}

where_tracing_works! {
    mod calls;
    mod filter;
    mod interpreter;
    mod paths;
    mod shepherd;
    mod sys;
    mod tracer;
    #[cfg(test)]
    mod tests;
}
pub mod observe;
mod spawn;

pub use spawn::{is_supported, spawn, Ended, Launch, Tracee};

/// What one system call did to one path (paths absolute, joined lexically against the
/// calling process's working directory or directory descriptor; `.` components and
/// repeated slashes removed, `..` kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub pid: i32,
    pub path: PathBuf,
    pub access: Access,
    /// As `lstat` saw the path while the caller was stopped: for lookups and read-only
    /// opens (decided at the call's entry) what the call found; for writes, creations
    /// and `RenameTo` just after the call; for `Remove` and `RenameFrom` just before.
    /// `None` when it does not exist or cannot be seen. For `Exec` and `Read` of a
    /// symlink it is the symlink's own.
    pub meta: Option<Meta>,
}

/// What a call did to a path. A lookup or read-only open repeated with no write,
/// creation, removal or rename by the run in between is reported once (the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Opened for reading only (open, openat, openat2 without write access, O_CREAT or
    /// O_TRUNC; uselib) and a file or directory was there; or loaded by the kernel for
    /// an exec (the `#!` program, the ELF interpreter). Decided at the call's entry: an
    /// open that then fails for a reason other than absence is reported all the same.
    Read,
    /// Executed (execve/execveat that succeeded; seen at PTRACE_EVENT_EXEC).
    Exec,
    /// Found by a lookup: stat, lstat, fstatat and statx of a name, access, faccessat,
    /// faccessat2, getxattr, listxattr, chdir, name_to_handle_at, an O_PATH open, a
    /// readlink of a non-symlink, an open with O_NOFOLLOW of a symlink, an exec that
    /// failed other than for absence, a create that found the name taken (mkdir,
    /// symlink, mknod, link, O_EXCL: EEXIST), the source of a hard link. `follow` is
    /// whether a final symlink was followed.
    Stat { follow: bool },
    /// A lookup found nothing there (ENOENT or ENOTDIR, a dangling symlink followed),
    /// including the failed execs of a PATH search and the removal, rename or change
    /// of a missing name.
    Absent,
    /// A directory's entries were read (getdents/getdents64 on a descriptor opened on
    /// it; one event per call).
    List,
    /// A symlink's target was read (readlink, readlinkat; the target as read by the
    /// tracer at the call).
    ReadLink { target: PathBuf },
    /// Opened with write access, O_TRUNC or O_CREAT (and a file or directory is
    /// there), or truncate. `created` is whether an O_CREAT open found no name there at
    /// the call's entry.
    Write { created: bool },
    /// Its attributes changed, not its data: chmod, fchmod, fchmodat(2), the chown
    /// family, utime(s), utimensat, futimesat, the setxattr and removexattr families. A
    /// file the run only made executable or touched stays an input, and is no output.
    Attributes,
    /// Created as a directory, symlink, hard link or special file (mkdir(at),
    /// symlink(at), link(at), mknod(at)).
    Create,
    /// Removed (unlink, unlinkat, rmdir).
    Remove,
    /// Renamed away from this path (`to` is where it went): rename, renameat,
    /// renameat2 (RENAME_EXCHANGE reports both directions).
    RenameFrom { to: PathBuf },
    /// Renamed onto this path.
    RenameTo { from: PathBuf },
}

/// The attributes an observation is checked against later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    /// The full st_mode: type and permission bits.
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// Why a traced run's observations cannot be trusted: the run goes on untraced or
/// traced, but its result is not stored. `Display` is one line for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Untrusted {
    /// PTRACE_TRACEME, PTRACE_SETOPTIONS, PR_SET_NO_NEW_PRIVS or seccomp() failed (already
    /// traced, a container policy): which, and the errno text. The command ran untraced.
    Refused(String),
    /// Tracing is not built for this platform.
    Unsupported,
    /// A system call of another ABI: a foreign audit arch (int 0x80 from a 64-bit
    /// process) or an x32 number.
    ForeignAbi,
    /// A clone or clone3 with CLONE_UNTRACED.
    Untraced,
    /// The command called ptrace(), seccomp() or prctl(PR_SET_SECCOMP).
    TracesItself,
    /// The command tried io_uring (io_uring_setup is stopped and made to fail with
    /// ENOSYS; io_uring_enter and io_uring_register fail with ENOSYS in the filter).
    IoUring,
    /// The exec of a setuid, setgid or file-capability program (under tracing it runs
    /// without its privileges).
    Privileged {
        program: PathBuf,
        privilege: Privilege,
    },
    /// unshare, setns, mount, umount2, pivot_root, chroot, the new mount API (fsopen,
    /// fsmount, fspick, move_mount, open_tree, mount_setattr), or a clone or clone3 with
    /// CLONE_NEW*.
    Namespaces,
    /// A process it started was still running when the command's main process exited
    /// (it is left running, traced by a helper process so its calls keep working).
    Outlived,
    /// A connect() that succeeded or returned EINPROGRESS.
    Connected,
    /// Opened, in any mode, a FIFO or socket that has a name in the file system, or a
    /// device other than /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom,
    /// /dev/tty, /dev/ptmx and pseudo-terminals.
    SpecialFile { path: PathBuf, kind: Special },
    /// A path argument (or open_how, clone_args) could not be read from the process's
    /// memory (even when the call then failed with EFAULT: memo cannot vouch for it).
    UnreadablePath,
    /// A file it read was modified in place afterwards (decided by `observe`).
    ModifiedAfterRead(PathBuf),
    /// A file it observed (and did not write itself) changed during the run (decided
    /// after the run).
    ChangedDuringRun(PathBuf),
}

/// What the tracer saw.
#[derive(Debug, Default)]
pub struct Trace {
    /// In the order they were decided: lookups and read-only opens at the call's
    /// entry, everything else at its exit.
    pub events: Vec<Event>,
    /// The first reason found, if any.
    pub untrusted: Option<Untrusted>,
    /// How many times a traced process stopped for the tracer (tests check the filter).
    pub stops: u64,
    /// Paths the command named relative to a directory (its working directory, a
    /// directory descriptor) at least once: only those may be kept relative to memo's
    /// working directory, for checkouts to share results.
    pub named_relative: std::collections::HashSet<PathBuf>,
}

/// What made an executed program privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    Setuid,
    Setgid,
    Capabilities,
}

/// The kind of a special file whose opening makes a run untrusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// A named pipe (FIFO) in the file system.
    Fifo,
    /// A Unix socket in the file system.
    Socket,
    /// A character or block device other than the harmless ones.
    Device,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::Refused(why) => write!(f, "ptrace was refused: {why}"),
            Untrusted::Unsupported => f.write_str("tracing is not supported on this platform"),
            Untrusted::ForeignAbi => f.write_str("it made a 32-bit (or x32) system call"),
            Untrusted::Untraced => {
                f.write_str("it started a process that cannot be traced (CLONE_UNTRACED)")
            }
            Untrusted::TracesItself => f.write_str("it used ptrace or seccomp itself"),
            Untrusted::IoUring => f.write_str("it used io_uring"),
            Untrusted::Privileged { program, privilege } => {
                let what = match privilege {
                    Privilege::Setuid => "a setuid program",
                    Privilege::Setgid => "a setgid program",
                    Privilege::Capabilities => "a program with file capabilities",
                };
                write!(
                    f,
                    "it executed {what} {}, which runs without its privileges when traced",
                    program.display()
                )
            }
            Untrusted::Namespaces => f.write_str("it used namespaces, mount or chroot"),
            Untrusted::Outlived => f.write_str("a process it started outlived it"),
            Untrusted::Connected => f.write_str("it connected to a socket"),
            Untrusted::SpecialFile { path, kind } => {
                let what = match kind {
                    Special::Fifo => "read the named pipe",
                    Special::Socket => "opened the socket",
                    Special::Device => "opened the device",
                };
                write!(f, "it {what} {}", path.display())
            }
            Untrusted::UnreadablePath => {
                f.write_str("a path it passed to the system could not be read")
            }
            Untrusted::ModifiedAfterRead(path) => {
                write!(f, "{} was modified after it was read", path.display())
            }
            Untrusted::ChangedDuringRun(path) => {
                write!(f, "{} changed during the run", path.display())
            }
        }
    }
}
