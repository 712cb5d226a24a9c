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

/// Stops every thread still traced and holds it at that stop (a ptrace stop), and
/// returns their ids, for `adopt` to detach and hand over.
///
/// A vfork's child is the exception until it execs (or dies): its parent waits for that,
/// unstoppable, so the child stopped first would hold them both for good. It is kept
/// running under the tracer, its stops passed over, and stopped at its exec. A child
/// whose first stop comes before its parent's fork event is held at that stop until the
/// event says which it is.
pub(crate) fn stop_all(tracer: &mut Tracer) -> Vec<pid_t> {
    let mut waiting: HashSet<pid_t> = tracer.live.drain().collect();
    let mut vforked: HashSet<pid_t> = tracer
        .vforked
        .drain()
        .filter(|pid| waiting.contains(pid))
        .collect();
    // New children stopped before their parent's event said how they were made.
    let mut held: HashSet<pid_t> = HashSet::new();
    // Children seen before their parent's event (in the tracer's loop, or here), with
    // whether they exec'd since, and those of them already gone.
    let mut early: std::collections::HashMap<pid_t, bool> = tracer.early.drain().collect();
    let mut gone: HashSet<pid_t> = tracer.gone.drain().collect();
    for tid in &waiting {
        if !vforked.contains(tid) {
            stop(*tid);
        }
    }
    // Stopped at their SIGSTOP and held there (a ptrace stop, not yet a group stop);
    // `adopt` detaches them all at once when the helper is ready to take them.
    let mut stopped: Vec<pid_t> = Vec::new();
    let detach = |pid: pid_t, waiting: &mut HashSet<pid_t>, stopped: &mut Vec<pid_t>| {
        waiting.remove(&pid);
        stopped.push(pid);
    };
    while !waiting.is_empty() {
        if waiting.iter().all(|pid| held.contains(pid)) {
            // Their parents are gone without a word: children of a fork, then.
            for pid in held.drain() {
                detach(pid, &mut waiting, &mut stopped);
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
                if held.remove(&pid) | early.remove(&pid).is_some() {
                    gone.insert(pid);
                }
            }
            Status::Signal(libc::SIGSTOP) if vforked.contains(&pid) => sys::resume(pid, 0),
            Status::Signal(libc::SIGSTOP) if !waiting.contains(&pid) => {
                // A child's first stop, before its parent's event: held until it comes.
                waiting.insert(pid);
                held.insert(pid);
            }
            Status::Signal(libc::SIGSTOP) => detach(pid, &mut waiting, &mut stopped),
            // A SIGCONT (a shell's `fg`, a `kill -CONT` of the group) discards a
            // pending SIGSTOP: send it again.
            Status::Signal(libc::SIGCONT) if waiting.contains(&pid) && !vforked.contains(&pid) => {
                stop(pid);
                sys::resume(pid, libc::SIGCONT);
            }
            Status::Signal(signal) => sys::resume(pid, signal),
            Status::Event(
                event @ (libc::PTRACE_EVENT_FORK
                | libc::PTRACE_EVENT_VFORK
                | libc::PTRACE_EVENT_CLONE),
            ) => {
                if let Ok(child) = sys::event_message(pid) {
                    let child = child as pid_t;
                    let of_vfork = event == libc::PTRACE_EVENT_VFORK;
                    // Came and went before this event, or exec'd already: no longer
                    // holds its parent.
                    let execed = early.remove(&child).unwrap_or(false);
                    if gone.remove(&child) {
                        sys::resume(pid, 0);
                        continue;
                    }
                    if of_vfork && !execed {
                        vforked.insert(child);
                    }
                    let ready = stopped.iter().position(|p| *p == child);
                    if held.remove(&child) || ready.is_some() {
                        // Held at its first stop (or at the SIGSTOP sent to it, when the
                        // main loop had seen it before its parent's event): let a vfork's
                        // child run on to its exec; leave any other stopped.
                        if of_vfork && !execed {
                            if let Some(at) = ready {
                                stopped.swap_remove(at);
                            }
                            waiting.insert(child);
                            sys::resume(child, 0);
                        } else if ready.is_none() {
                            detach(child, &mut waiting, &mut stopped);
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
                for exec_d in [pid, former] {
                    if let Some(execed) = early.get_mut(&exec_d) {
                        *execed = true;
                    }
                }
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

/// Hands `held` (stopped by `stop_all`, still traced here) to a helper that traces them
/// until they exit, and continues them. They are detached (left group-stopped) only once
/// the helper waits to take them: while a process of their group is group-stopped, one
/// that exits makes the kernel send the group SIGHUP and SIGCONT if the group is
/// orphaned (a CI job's, often), which kills them or lets them run on untraced (their
/// traced calls then fail with ENOSYS). So that window is kept to the helper's wake-up,
/// and memo does not end before they run again.
pub(crate) fn adopt(held: &[pid_t]) {
    if held.is_empty() {
        return;
    }
    let detach_all = || {
        for pid in held {
            sys::detach(*pid, libc::SIGSTOP);
        }
    };
    let pipes = (std::io::pipe(), std::io::pipe());
    let (Ok(null), (Ok((go_read, go_write)), Ok((ready_read, ready_write)))) = (
        File::options().read(true).write(true).open("/dev/null"),
        pipes,
    ) else {
        detach_all();
        continue_all(held);
        return;
    };
    // SAFETY: the child runs only async-signal-safe calls on `held` and the descriptors.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        detach_all();
        continue_all(held);
        return;
    }
    if pid == 0 {
        // SAFETY: in the child of fork.
        unsafe {
            helper(
                held,
                null.as_raw_fd(),
                go_read.as_raw_fd(),
                ready_write.as_raw_fd(),
            )
        }
    }
    drop((go_read, ready_write));
    let mut status = 0;
    // SAFETY: waiting for the short-lived first child, by its id.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    detach_all();
    // The helper takes them now (or, if it is gone, sees end of file and does the same).
    drop(go_write);
    let mut wait = libc::pollfd {
        fd: ready_read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own; the answer itself is not needed.
    unsafe { libc::poll(&mut wait, 1, HANDOVER_MILLIS) };
}

/// How long memo waits for the helper to have taken its processes over.
const HANDOVER_MILLIS: i32 = 2000;

fn continue_all(stopped: &[pid_t]) {
    for pid in stopped {
        // SAFETY: a plain signal.
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
}

/// The helper: double-forked, in a session of its own, holding none of memo's
/// descriptors (a lock or a pipe it held would outlive memo).
unsafe fn helper(stopped: &[pid_t], null: i32, go: i32, ready: i32) -> ! {
    // SAFETY: plain system calls; no allocation, no locks.
    unsafe {
        if libc::fork() != 0 {
            libc::_exit(0);
        }
        libc::setsid();
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        // The two pipes on 3 and 4, above the standard three, and nothing else of
        // memo's (`null` may have been 3 or 4: it is on 0 to 2 by now).
        let go = libc::fcntl(go, libc::F_DUPFD, 10);
        let ready = libc::fcntl(ready, libc::F_DUPFD, 10);
        libc::dup2(go, 3);
        libc::dup2(ready, 4);
        libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32);
        // memo has detached them when it closes its end.
        let mut byte = 0u8;
        while libc::read(3, (&mut byte as *mut u8).cast(), 1) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        libc::close(3);
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
        libc::write(4, b"1".as_ptr().cast(), 1);
        libc::close(4);
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
