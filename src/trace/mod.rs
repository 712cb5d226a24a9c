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
    /// What the path was just after the call (or just before, for `Remove` and
    /// `RenameFrom`), as `lstat` saw it while the caller was stopped; `None` when it
    /// does not exist or cannot be seen.
    pub meta: Option<Meta>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Opened for reading only (a file or a directory), and it existed.
    Read,
    /// Executed (execve/execveat that succeeded): the program, and the interpreter the
    /// kernel loaded for it (a `#!` line's program, the ELF interpreter) as `Read`.
    Exec,
    /// Its attributes were looked up (stat family, access, statx) and it existed.
    /// `follow` is whether a final symlink was followed.
    Stat { follow: bool },
    /// A lookup (open, stat, access, exec, readlink, ...) found nothing there (ENOENT or
    /// ENOTDIR).
    Absent,
    /// A directory's entries were read (getdents on a descriptor opened on it).
    List,
    /// A symlink's target was read.
    ReadLink { target: PathBuf },
    /// Opened for writing, truncated, or its data or attributes changed (chmod, utimes,
    /// chown, setxattr). `created` is whether the call created it (it did not exist
    /// before the call).
    Write { created: bool },
    /// Created as a directory, symlink, hard link or special file.
    Create,
    /// Removed (unlink, rmdir).
    Remove,
    /// Renamed away from this path (`to` is where it went).
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
    /// ptrace or seccomp was refused (already traced, a container policy): the errno text.
    Refused(String),
    /// Tracing is not built for this platform.
    Unsupported,
    /// A 32-bit (or x32) system call.
    ForeignAbi,
    /// A clone with CLONE_UNTRACED.
    Untraced,
    /// The command used ptrace or seccomp itself.
    TracesItself,
    /// The command tried io_uring (denied with ENOSYS).
    IoUring,
    /// The exec of a setuid, setgid or file-capability program (under tracing it runs
    /// without its privileges).
    Privileged {
        program: PathBuf,
        privilege: Privilege,
    },
    /// unshare, setns, mount, umount, pivot_root, chroot, or a clone into new namespaces.
    Namespaces,
    /// A process it started was still running when the command exited.
    Outlived,
    /// A successful connect().
    Connected,
    /// Opened a named FIFO, a socket or a device other than /dev/null, /dev/zero,
    /// /dev/random, /dev/urandom, /dev/full, /dev/tty and terminals.
    SpecialFile { path: PathBuf, kind: Special },
    /// A path argument could not be read from the process's memory.
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
    /// In the order the calls completed.
    pub events: Vec<Event>,
    /// The first reason found, if any.
    pub untrusted: Option<Untrusted>,
    /// How many times a traced process stopped for the tracer (tests check the filter).
    pub stops: u64,
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
                write!(f, "it executed {what} {}", program.display())
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
