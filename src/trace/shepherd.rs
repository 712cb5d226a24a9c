//! What becomes of the processes still running when the command's main process ends
//! (a daemon it started): they must run on, but they carry the seccomp filter, and a
//! RET_TRACE call with no tracer fails with ENOSYS. So the tracer stops them, detaches
//! them stopped, and a small helper process (forked here, double-forked so memo never
//! waits for it) attaches to them with PTRACE_SEIZE and lets every stopped call through
//! until they have all exited. memo itself returns at once.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsRawFd;

use libc::pid_t;

use super::sys::{self, Status};
use super::tracer::Tracer;

/// Stops every thread still traced, detaches it left stopped (a group stop), and
/// returns their ids.
///
/// A vfork's child is the exception until it execs (or dies): its parent waits for that,
/// unstoppable, so the child stopped first would hold them both for good. It is kept
/// running under the tracer, its stops passed over, and stopped at its exec. A child
/// whose first stop comes before its parent's fork event is held at that stop until the
/// event says which it is.
pub(crate) fn stop_and_detach(tracer: &mut Tracer) -> Vec<pid_t> {
    let mut waiting: HashSet<pid_t> = tracer.live.drain().collect();
    let mut vforked: HashSet<pid_t> = tracer
        .vforked
        .drain()
        .filter(|pid| waiting.contains(pid))
        .collect();
    // New children stopped before their parent's event said how they were made.
    let mut held: HashSet<pid_t> = HashSet::new();
    for tid in &waiting {
        if !vforked.contains(tid) {
            stop(*tid);
        }
    }
    let mut stopped = Vec::new();
    let mut detach = |pid: pid_t, waiting: &mut HashSet<pid_t>| {
        sys::detach(pid, libc::SIGSTOP);
        waiting.remove(&pid);
        stopped.push(pid);
    };
    while !waiting.is_empty() {
        if waiting.iter().all(|pid| held.contains(pid)) {
            // Their parents are gone without a word: children of a fork, then.
            for pid in held.drain() {
                detach(pid, &mut waiting);
            }
            break;
        }
        let Ok(Some((pid, status))) = sys::wait(-1, 0) else {
            break;
        };
        match status {
            Status::Exited(_) | Status::Signaled(_) => {
                waiting.remove(&pid);
                vforked.remove(&pid);
                held.remove(&pid);
            }
            Status::Signal(libc::SIGSTOP) if vforked.contains(&pid) => sys::resume(pid, 0),
            Status::Signal(libc::SIGSTOP) if !waiting.contains(&pid) => {
                // A child's first stop, before its parent's event: held until it comes.
                waiting.insert(pid);
                held.insert(pid);
            }
            Status::Signal(libc::SIGSTOP) => detach(pid, &mut waiting),
            Status::Signal(signal) => sys::resume(pid, signal),
            Status::Event(
                event @ (libc::PTRACE_EVENT_FORK
                | libc::PTRACE_EVENT_VFORK
                | libc::PTRACE_EVENT_CLONE),
            ) => {
                if let Ok(child) = sys::event_message(pid) {
                    let child = child as pid_t;
                    let of_vfork = event == libc::PTRACE_EVENT_VFORK;
                    if of_vfork {
                        vforked.insert(child);
                    }
                    if held.remove(&child) {
                        // Held at its first stop: let a vfork's child run on to its
                        // exec; leave any other stopped.
                        if of_vfork {
                            sys::resume(child, 0);
                        } else {
                            detach(child, &mut waiting);
                        }
                    } else {
                        // Born now: it starts with a SIGSTOP of its own.
                        waiting.insert(child);
                    }
                }
                sys::resume(pid, 0);
            }
            Status::Event(libc::PTRACE_EVENT_EXEC) => {
                // A vfork's child has exec'd: its parent runs on, and it can be stopped.
                let former = sys::event_message(pid).map_or(pid, |f| f as pid_t);
                if vforked.remove(&pid) | vforked.remove(&former) {
                    stop(pid);
                }
                sys::resume(pid, 0);
            }
            Status::Event(_) | Status::SyscallExit => sys::resume(pid, 0),
        }
    }
    stopped
}

fn stop(tid: pid_t) {
    // SAFETY: a plain signal to a thread we trace.
    unsafe { libc::syscall(libc::SYS_tkill, tid, libc::SIGSTOP) };
}

/// Starts the helper that traces `stopped` until they exit, and continues them.
pub(crate) fn adopt(stopped: &[pid_t]) {
    if stopped.is_empty() {
        return;
    }
    let Ok(null) = File::options().read(true).write(true).open("/dev/null") else {
        continue_all(stopped);
        return;
    };
    // SAFETY: the child runs only async-signal-safe calls on `stopped` and `null`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        continue_all(stopped);
        return;
    }
    if pid == 0 {
        // SAFETY: in the child of fork.
        unsafe { helper(stopped, null.as_raw_fd()) }
    }
    let mut status = 0;
    // SAFETY: waiting for the short-lived first child, by its id.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
}

fn continue_all(stopped: &[pid_t]) {
    for pid in stopped {
        // SAFETY: a plain signal.
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
}

/// The helper: double-forked, in a session of its own, holding none of memo's
/// descriptors (a lock or a pipe it held would outlive memo).
unsafe fn helper(stopped: &[pid_t], null: i32) -> ! {
    // SAFETY: plain system calls; no allocation, no locks.
    unsafe {
        if libc::fork() != 0 {
            libc::_exit(0);
        }
        libc::setsid();
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let options = (libc::PTRACE_O_TRACESECCOMP
            | libc::PTRACE_O_TRACEFORK
            | libc::PTRACE_O_TRACEVFORK
            | libc::PTRACE_O_TRACECLONE) as usize;
        for pid in stopped {
            libc::ptrace(libc::PTRACE_SEIZE, *pid, 0, options);
        }
        for pid in stopped {
            libc::kill(*pid, libc::SIGCONT);
        }
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, libc::__WALL);
            if pid < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(0);
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let signal = libc::WSTOPSIG(status);
            let event = status >> 16;
            let resume_with = if event == libc::PTRACE_EVENT_STOP {
                if matches!(
                    signal,
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
                ) {
                    // A group stop: stay stopped until a SIGCONT.
                    libc::ptrace(libc::PTRACE_LISTEN, pid, 0, 0);
                    continue;
                }
                0
            } else if event != 0 || signal == libc::SIGTRAP | 0x80 {
                0
            } else {
                signal
            };
            libc::ptrace(libc::PTRACE_CONT, pid, 0, resume_with as usize);
        }
    }
}
