//! Starting the command under the tracer, and waiting for it.
//!
//! `std::process::Command` cannot start a tracee: the child must stop itself after
//! PTRACE_TRACEME and before it installs the seccomp filter, so that the tracer sets
//! PTRACE_O_TRACESECCOMP first (a RET_TRACE with no tracer option set fails the call with
//! ENOSYS). So the child is forked here by hand; everything it needs is prepared before
//! the fork, and it makes only async-signal-safe calls.
//!
//! The child reports over a close-on-exec pipe: first whether PTRACE_TRACEME worked, then
//! any refusal of the filter, then the errno of a failed exec. When tracing is refused
//! the command still runs, untraced, and the `Trace` says why (`Untrusted::Refused`).

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub use linux::{spawn, Tracee};

/// What to start.
pub struct Launch<'a> {
    /// The resolved executable.
    pub program: &'a Path,
    /// The command line; `argv[0]` is passed through unchanged.
    pub argv: &'a [OsString],
    /// Standard input; `None` is /dev/null.
    pub stdin: Option<RawFd>,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// A descriptor of memo's the command inherits (close-on-exec is cleared in the child).
    pub inherit: Option<RawFd>,
}

/// How the main process of the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// Whether this platform can trace at all (the kernel may still refuse: see `spawn`).
pub fn is_supported() -> bool {
    cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub use unsupported::{spawn, Tracee};

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod unsupported {
    use super::*;
    use crate::trace::Trace;

    /// Never built: `spawn` fails with `ErrorKind::Unsupported` here, and the caller
    /// runs the command the ordinary way, reporting `Untrusted::Unsupported`.
    pub struct Tracee(());

    impl Tracee {
        pub fn pid(&self) -> u32 {
            0
        }
        pub fn run(self) -> (io::Result<Ended>, Trace) {
            (Err(io::ErrorKind::Unsupported.into()), Trace::default())
        }
    }

    pub fn spawn(_launch: &Launch) -> io::Result<Tracee> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "tracing is not supported on this platform",
        ))
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod linux {
    use crate::exec_args::{cstring, CStrings};
    use std::fs::File;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    use libc::{c_char, c_int, pid_t};

    use super::*;
    use crate::trace::sys::{self, Status};
    use crate::trace::tracer::{Step, Tracer};
    use crate::trace::{filter, shepherd, Trace, Untrusted};

    // Messages on the report pipe: [tag, errno] as two native i32s.
    const TRACEME_OK: i32 = 1;
    const TRACEME_REFUSED: i32 = 2;
    const NO_NEW_PRIVS_REFUSED: i32 = 3;
    const FILTER_REFUSED: i32 = 4;
    const EXEC_FAILED: i32 = 5;
    const START_FAILED: i32 = 6;

    /// The started command. `run` must be called on the thread that called `spawn`:
    /// ptrace ties a tracee to the thread that traces it.
    pub struct Tracee {
        pid: pid_t,
        /// `None` when the command runs untraced (tracing was refused).
        tracer: Option<Tracer>,
        refused: Option<Untrusted>,
    }

    impl Tracee {
        pub fn pid(&self) -> u32 {
            self.pid as u32
        }

        /// Follows the command and all its descendants until the main process ends,
        /// and returns how it ended with what was seen. A process still running then is
        /// left running (`Untrusted::Outlived`), traced by a small helper process so its
        /// file calls keep working.
        pub fn run(self) -> (io::Result<Ended>, Trace) {
            let Some(mut tracer) = self.tracer else {
                let trace = Trace {
                    untrusted: self.refused,
                    ..Trace::default()
                };
                return (wait_untraced(self.pid), trace);
            };
            let ended = loop {
                match wait_briefly_spinning() {
                    Ok(Some((pid, status))) => {
                        if let Step::MainEnded(status) = tracer.handle(pid, status) {
                            break Ok(ended_of(status));
                        }
                    }
                    Ok(None) => continue,
                    Err(error) => break Err(error),
                }
            };
            // Reports already due (a child that exited just before the command did).
            while let Ok(Some((pid, status))) = sys::wait(-1, libc::WNOHANG) {
                tracer.handle(pid, status);
            }
            if !tracer.live.is_empty() {
                if tracer.trace.untrusted.is_none() {
                    tracer.trace.untrusted = Some(Untrusted::Outlived);
                }
                let held = shepherd::stop_all(&mut tracer);
                shepherd::adopt(&held);
            }
            (ended, tracer.trace)
        }
    }

    fn ended_of(status: Status) -> Ended {
        match status {
            Status::Signaled(signal) => Ended::Signaled(signal),
            Status::Exited(code) => Ended::Exited(code),
            _ => Ended::Exited(0),
        }
    }

    fn wait_untraced(pid: pid_t) -> io::Result<Ended> {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
                return Ok(ended_of(sys::decode_status(status)));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    fn check(result: c_int) -> io::Result<c_int> {
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(result)
        }
    }

    /// Waits for the next stop, polling for a few microseconds first: the command
    /// usually stops again soon after it was resumed (a compiler's run of lookups), and a
    /// tracer that is still running takes that stop without the cost of being woken on
    /// another, idle CPU, which on a virtual machine is most of a stop's price.
    /// On a single CPU (or when memo is pinned to one) it never polls: it would only
    /// keep the command from running.
    fn wait_briefly_spinning() -> io::Result<Option<(pid_t, Status)>> {
        static SEVERAL_CPUS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let several = *SEVERAL_CPUS.get_or_init(|| {
            // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
                    && libc::CPU_COUNT(&set) > 1
            }
        });
        if !several {
            return sys::wait(-1, 0);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_micros(SPIN_MICROS) {
            if let Some(found) = sys::wait(-1, libc::WNOHANG)? {
                return Ok(Some(found));
            }
            std::hint::spin_loop();
        }
        sys::wait(-1, 0)
    }

    /// How long the tracer polls before it sleeps in waitpid.
    const SPIN_MICROS: u64 = 50;

    pub fn spawn(launch: &Launch) -> io::Result<Tracee> {
        // Everything the child touches is made here, before fork.
        let program = cstring(launch.program.as_os_str().as_bytes())?;
        let argv = CStrings::new(launch.argv.iter().map(|a| a.as_bytes()))?;
        let filter = filter::program();
        let filter_program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        let null_stdin = match launch.stdin {
            Some(_) => None,
            None => Some(File::open("/dev/null")?),
        };
        let stdin = launch
            .stdin
            .unwrap_or_else(|| null_stdin.as_ref().map_or(0, |f| f.as_raw_fd()));
        let mut fds = [0; 2];
        // SAFETY: fds is a valid out-array of two descriptors.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 just made both; each is owned once.
        let (report_read, report_write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let parent = std::process::id() as pid_t;

        // SAFETY: the child runs only async-signal-safe calls on data prepared above.
        let pid = check(unsafe { libc::fork() })?;
        if pid == 0 {
            // SAFETY: in the child of fork; see `child`.
            unsafe {
                child(ChildPlan {
                    program: program.as_ptr(),
                    argv: argv.as_ptr(),
                    stdio: [stdin, launch.stdout, launch.stderr],
                    inherit: launch.inherit,
                    report: report_write.as_raw_fd(),
                    parent,
                    filter: &filter_program,
                })
            }
        }
        drop(report_write);
        let mut report = File::from(report_read);
        let tracee = start(pid, &mut report);
        if tracee.is_err() {
            let _ = wait_untraced(pid);
        }
        tracee
    }

    /// The parent's side of the start: stop at the child's SIGSTOP, set the options,
    /// follow it through the exec of the command.
    fn start(pid: pid_t, report: &mut File) -> io::Result<Tracee> {
        let first = read_message(report)?;
        let untraced = |refused: Option<Untrusted>, report: &mut File| -> io::Result<Tracee> {
            // After an untraced start only an exec failure can follow (EOF on success).
            match read_message(report)? {
                Some((EXEC_FAILED | START_FAILED, errno)) => {
                    Err(io::Error::from_raw_os_error(errno))
                }
                _ => Ok(Tracee {
                    pid,
                    tracer: None,
                    refused,
                }),
            }
        };
        match first {
            Some((TRACEME_OK, _)) => {}
            Some((TRACEME_REFUSED, errno)) => {
                let why = format!("PTRACE_TRACEME: {}", io::Error::from_raw_os_error(errno));
                return untraced(Some(Untrusted::Refused(why)), report);
            }
            Some((_, errno)) => return Err(io::Error::from_raw_os_error(errno)),
            None => return Err(io::Error::other("the traced child died before it started")),
        }
        match sys::wait(pid, 0)? {
            Some((_, Status::Signal(libc::SIGSTOP))) => {}
            Some((_, status)) => {
                return Err(io::Error::other(format!(
                    "the traced child stopped oddly: {status:?}"
                )))
            }
            None => return Err(io::Error::other("the traced child did not stop")),
        }
        if let Err(error) = sys::set_options(pid) {
            sys::detach(pid, 0);
            let why = format!("PTRACE_SETOPTIONS: {error}");
            return untraced(Some(Untrusted::Refused(why)), report);
        }
        let mut tracer = Tracer::new(pid);
        sys::resume(pid, 0);
        // Until the exec, only the child itself runs: wait for it alone.
        loop {
            let Some((got, status)) = sys::wait(pid, 0)? else {
                continue;
            };
            match tracer.handle(got, status) {
                Step::Continue => {}
                Step::MainExecuted => break,
                Step::MainEnded(_) => {
                    while let Some((tag, errno)) = read_message(report)? {
                        if matches!(tag, EXEC_FAILED | START_FAILED) {
                            return Err(io::Error::from_raw_os_error(errno));
                        }
                    }
                    return Err(io::Error::other(
                        "the traced child exited before it started",
                    ));
                }
            }
        }
        // The exec closed the pipe: what is in it was said before.
        if let Some((tag, errno)) = read_message(report)? {
            let step = if tag == NO_NEW_PRIVS_REFUSED {
                "PR_SET_NO_NEW_PRIVS"
            } else {
                "the seccomp filter"
            };
            let why = format!("{step}: {}", io::Error::from_raw_os_error(errno));
            // Without the filter nothing would be seen: let it run on untraced.
            sys::detach(pid, 0);
            return Ok(Tracee {
                pid,
                tracer: None,
                refused: Some(Untrusted::Refused(why)),
            });
        }
        sys::resume(pid, 0);
        Ok(Tracee {
            pid,
            tracer: Some(tracer),
            refused: None,
        })
    }

    fn read_message(report: &mut File) -> io::Result<Option<(i32, i32)>> {
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < buf.len() {
            match report.read(&mut buf[got..]) {
                Ok(0) => return Ok(None),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let tag = i32::from_ne_bytes(buf[..4].try_into().unwrap());
        let errno = i32::from_ne_bytes(buf[4..].try_into().unwrap());
        Ok(Some((tag, errno)))
    }

    struct ChildPlan<'a> {
        program: *const c_char,
        argv: *const *const c_char,
        stdio: [RawFd; 3],
        inherit: Option<RawFd>,
        report: RawFd,
        parent: pid_t,
        filter: &'a libc::sock_fprog,
    }

    unsafe extern "C" {
        static environ: *const *const c_char;
    }

    /// The child between fork and exec. Only async-signal-safe calls: memo has other
    /// threads, whose locks may be held forever in this copy of it.
    unsafe fn child(plan: ChildPlan) -> ! {
        let say = |tag: i32, errno: i32| {
            let mut message = [0u8; 8];
            message[..4].copy_from_slice(&tag.to_ne_bytes());
            message[4..].copy_from_slice(&errno.to_ne_bytes());
            // SAFETY: writing a stack buffer to our pipe.
            unsafe { libc::write(plan.report, message.as_ptr().cast(), 8) };
        };
        let errno = || {
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        };
        let fail = |tag: i32, errno: i32| -> ! {
            say(tag, errno);
            // SAFETY: leaving the child without running memo's atexit handlers.
            unsafe { libc::_exit(127) }
        };
        // SAFETY: plain system calls on descriptors and integers.
        unsafe {
            // As std's Command does: the command starts with SIGPIPE at its default (memo,
            // like every Rust program, ignores it) and no signal blocked.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            for (target, source) in plan.stdio.iter().enumerate() {
                let target = target as c_int;
                let done = if *source == target {
                    libc::fcntl(target, libc::F_SETFD, 0)
                } else {
                    libc::dup2(*source, target)
                };
                if done < 0 {
                    fail(START_FAILED, errno());
                }
            }
            if let Some(fd) = plan.inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    fail(START_FAILED, errno());
                }
            }
            // As capture's die_with_memo: the command dies with memo (best effort), and
            // does not start if memo is already gone.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != plan.parent {
                fail(START_FAILED, libc::ESRCH);
            }
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                say(TRACEME_REFUSED, errno());
            } else {
                say(TRACEME_OK, 0);
                libc::raise(libc::SIGSTOP);
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    say(NO_NEW_PRIVS_REFUSED, errno());
                } else if libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    plan.filter as *const libc::sock_fprog,
                ) != 0
                {
                    say(FILTER_REFUSED, errno());
                }
            }
            libc::execve(plan.program, plan.argv, environ);
            fail(EXEC_FAILED, errno())
        }
    }
}
