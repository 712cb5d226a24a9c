//! Starting the command without copying memo: a `vfork`-like child.
//!
//! `std::process::Command` falls back to `fork` as soon as it has a `pre_exec` closure,
//! and memo needs one: the command must die with memo (PR_SET_PDEATHSIG) and inherit the
//! flight's descriptor. A fork copies memo's page tables and then takes a copy-on-write
//! fault for every page either process touches before the exec. So the child is made
//! here with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does: it runs in memo's
//! memory, on a stack of its own, while memo waits for its exec (or exit), and makes only
//! async-signal-safe system calls on data prepared before the clone. Nothing it does
//! allocates or takes a lock.
//!
//! Signals are blocked across the clone, so that no handler of memo's runs in the child
//! (it would run in memo's memory); the child sets the handled ones back to their
//! default before it unblocks them. A failure before or in `exec` is reported through
//! memory the two share (the child exits with 127).

use crate::exec_args::{cstring, CStrings};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{c_char, c_int, c_void, pid_t};

/// What to start.
pub struct Launch<'a> {
    pub program: &'a Path,
    /// The command line; `argv[0]` is passed through unchanged.
    pub argv: &'a [OsString],
    /// Standard input; `None` is /dev/null.
    pub stdin: Option<RawFd>,
    /// Standard output and error; `None` keeps memo's own.
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
    /// A descriptor of memo's the command inherits (close-on-exec is cleared in the child).
    pub inherit: Option<RawFd>,
}

/// Signals whose handler (memo's or the runtime's) the child sets back to the default
/// before it unblocks signals: SIGPIPE too, which Rust ignores, as std's Command does.
const RESET: [c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGPIPE,
];

/// The child's stack: what `execvp` needs (it copies argv there for a script without
/// `#!`) and a margin.
const STACK: usize = 64 * 1024;

struct Plan {
    program: *const c_char,
    argv: *const *const c_char,
    stdio: [Option<RawFd>; 3],
    inherit: Option<RawFd>,
    parent: pid_t,
    /// Written by the child when it fails: the errno.
    error: c_int,
}

/// Starts the command; its pid. The error is the one of the failed exec (ENOENT,
/// EACCES) or of the set-up before it.
pub fn spawn(launch: &Launch) -> io::Result<pid_t> {
    let program = cstring(launch.program.as_os_str().as_bytes())?;
    let argv = CStrings::new(launch.argv.iter().map(|a| a.as_bytes()))?;
    let null_stdin = match launch.stdin {
        Some(_) => None,
        None => Some(File::open("/dev/null")?),
    };
    let stdin = launch
        .stdin
        .or_else(|| null_stdin.as_ref().map(|f| f.as_raw_fd()));
    let mut plan = Plan {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        stdio: [stdin, launch.stdout, launch.stderr],
        inherit: launch.inherit,
        parent: std::process::id() as pid_t,
        error: 0,
    };
    let mut stack: Vec<u8> = Vec::with_capacity(STACK + 8 * argv.pointer_count());
    // The top of the stack, 16-byte aligned (it grows down).
    let top = (stack.as_mut_ptr() as usize + stack.capacity()) & !15;

    // SAFETY: sigset_t is plain data; filled by sigfillset before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the child runs `child` on `stack` with `plan`, both alive until it has
    // exec'd or exited (CLONE_VFORK suspends this thread until then); it makes only
    // async-signal-safe calls. Signals are blocked around the clone and restored after.
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut plan as *mut Plan).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    // SAFETY: the child has exec'd or exited: it no longer touches `plan`.
    let error = unsafe { std::ptr::read_volatile(&plan.error) };
    drop(stack);
    if error != 0 {
        // It exited: reap it.
        let _ = wait(pid);
        return Err(io::Error::from_raw_os_error(error));
    }
    Ok(pid)
}

/// The child, between clone and exec, in memo's memory.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Plan`, alive while this runs (see `spawn`).
    let plan = unsafe { &mut *arg.cast::<Plan>() };
    let fail = |plan: &mut Plan, errno: c_int| -> c_int {
        // SAFETY: a write to memory the suspended parent reads once this has exited,
        // then leaving without running any of memo's exit handlers.
        unsafe {
            std::ptr::write_volatile(&mut plan.error, if errno == 0 { libc::EIO } else { errno });
            libc::_exit(127)
        }
    };
    // SAFETY: plain system calls on descriptors, integers and prepared data.
    unsafe {
        let errno = || *libc::__errno_location();
        for sig in RESET {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                && (current.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                && current.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        for (target, source) in plan.stdio.iter().enumerate() {
            let Some(source) = *source else { continue };
            let target = target as c_int;
            let done = if source == target {
                libc::fcntl(target, libc::F_SETFD, 0)
            } else {
                libc::dup2(source, target)
            };
            if done < 0 {
                return fail(plan, errno());
            }
        }
        if let Some(fd) = plan.inherit {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return fail(plan, errno());
            }
        }
        // The command dies (SIGKILL) when memo does, however memo dies: a command that
        // outlived a `kill -9`ed memo would run on next to the copy a waiting memo
        // starts, and nobody would read its output. Best effort: a sandbox that denies
        // prctl must not stop every command (the next holder then finds the command by
        // its flight instead). The signal follows the thread that spawned: memo spawns
        // from its main thread, which lives as long as memo.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // memo may have died before the prctl: then nobody sends the signal, so do not
        // start.
        if libc::getppid() != plan.parent {
            return fail(plan, libc::ESRCH);
        }
        // As std's Command does: the command starts with no signal blocked, whatever
        // memo's mask was.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execvp(plan.program, plan.argv);
        fail(plan, errno())
    }
}

/// Waits for `pid` to end: its exit code or signal.
pub fn wait(pid: pid_t) -> io::Result<(Option<i32>, Option<i32>)> {
    let mut status: c_int = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok((Some(libc::WEXITSTATUS(status)), None))
    } else if libc::WIFSIGNALED(status) {
        Ok((None, Some(libc::WTERMSIG(status))))
    } else {
        Ok((None, None))
    }
}
