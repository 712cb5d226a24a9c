//! Forwarding of SIGINT, SIGTERM, SIGHUP and SIGQUIT to the running command.
//!
//! A signal the terminal sends to the foreground process group (Ctrl-C) reaches the
//! command by itself; forwarding it again would deliver it twice. So only signals sent by
//! a process (`kill`, si_code <= 0) are forwarded. Either way memo notes that it was
//! interrupted, and an interrupted run is never stored.
//!
//! Before the command starts (hashing inputs, restoring a hit) and once it has been
//! reaped (draining the pipes, storing) there is nobody to forward to, and what memo
//! does must not delay a Ctrl-C, a `timeout` or a CI cancellation: a signal then ends
//! memo at once with `_exit(128+N)`. Nothing partial can remain: the store writes every
//! file through a rename, gc sweeps the staging left in `tmp/`, and a restore's
//! temporary file beside an output is removed by the next restore there.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Set while the command runs (from just before its spawn until it is reaped): a signal
/// is then passed on; at any other time it ends memo.
static RUNNING: AtomicBool = AtomicBool::new(false);

const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if !RUNNING.load(Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe; no destructor or buffer needs to run.
        unsafe { libc::_exit(128 + sig) };
    }
    RECEIVED.store(sig, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    let sent_by_process = unsafe { (*info).si_code } <= 0;
    let child = CHILD.load(Ordering::SeqCst);
    if sent_by_process && child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

/// Installs the handlers; until `command_starting`, a signal ends memo. Children get default dispositions back when they exec.
/// A signal ignored when memo started (`nohup`, a script's `cmd &`, a `trap ''`) stays
/// ignored, for memo and so for the command, as it would be for the command run directly:
/// a handler would hand the command the default disposition instead.
pub fn install() {
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only touches
        // atomics and calls kill, both async-signal-safe.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The command is about to be spawned: from now on a signal is recorded and passed on
/// to it rather than ending memo.
pub fn command_starting() {
    RUNNING.store(true, Ordering::SeqCst);
}

/// Records the command's pid; a signal that arrived before it existed is passed on now.
pub fn set_child(pid: u32) {
    CHILD.store(pid as i32, Ordering::SeqCst);
    let pending = RECEIVED.load(Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as i32, pending) };
    }
}

/// The command has been reaped: from now on a signal ends memo at once.
pub fn clear_child() {
    CHILD.store(0, Ordering::SeqCst);
    RUNNING.store(false, Ordering::SeqCst);
}

/// The last forwarded signal memo received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

extern "C" fn wake(_: libc::c_int) {}

/// Sets a handler that does nothing for `sig`, without SA_RESTART, so that its arrival
/// makes a blocked system call of memo's return (EINTR or a short write).
fn set_waking(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction is a valid starting point; the handler does nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// While the tee runs on memo's own thread: the command's exit (SIGCHLD) interrupts a
/// write memo is blocked in, so it notices the exit. (SIGCHLD's default disposition,
/// set at startup, ignores it; a handler does not change how children are reaped.)
pub fn wake_on_child_exit() {
    set_waking(libc::SIGCHLD);
}

/// From now on a blocked system call is interrupted every `every`, until `stop_waking`.
pub fn wake_periodically(every: std::time::Duration) {
    set_waking(libc::SIGALRM);
    let interval = libc::timeval {
        tv_sec: every.as_secs() as _,
        tv_usec: every.subsec_micros() as _,
    };
    let timer = libc::itimerval {
        it_interval: interval,
        it_value: interval,
    };
    // SAFETY: a valid itimerval; the old value is not wanted.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
}

/// Undoes `wake_on_child_exit`, and disarms the timer of `wake_periodically` if it was
/// set. (SIGALRM keeps its handler: one already sent may still be on its way, and its
/// default would end memo.)
pub fn stop_waking(periodic: bool) {
    if periodic {
        // SAFETY: a zeroed itimerval disarms the timer.
        unsafe {
            let off: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut());
        }
    }
    // SAFETY: SIGCHLD back to its default (ignored), as startup set it.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// Called first by a helper thread (a recorder, a stdin feeder): SIGCHLD and SIGALRM are
/// then delivered to memo's main thread, whose blocked write they are meant to interrupt
/// (see `wake_on_child_exit`), never to this one.
pub fn leave_wake_signals_to_the_main_thread() {
    // SAFETY: a sigset_t built with sigemptyset/sigaddset; only this thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
