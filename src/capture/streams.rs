//! memo's own standard streams: they are open, memo's notes on them never fail, and a
//! command's pipe that outlives memo keeps flowing into them.
//!
//! memo forwards the command's output to its fds 1 and 2 by number, so those must be
//! open before the first pipe is made (a pipe landing on fd 2 would receive memo's own
//! messages). A reader that went away or a full disk on stderr must not turn a line
//! memo prints into a panic, since the command's run does not depend on it. And when
//! the command exits leaving a process that still holds its pipe (`daemon &`), memo
//! returns as the direct call would, and a small forwarder (this same executable in a
//! hidden mode) copies what that process writes later to where it would have gone.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::process::{Command, Stdio};

/// The argument that starts this executable as a forwarder. Not a flag: it is never
/// parsed by the command line, and a person typing it gets a `cat`.
const FORWARDER: &str = "__memo-forward-output";

/// The first thing `main` does: makes sure fds 0, 1 and 2 are open and SIGCHLD is not
/// ignored, and if this process was started as a forwarder (see `forward_later`), does
/// that and exits.
pub fn startup() {
    ensure_standard_fds();
    // Inherited as ignored (a parent set SIG_IGN, then exec'd memo), it has the kernel
    // reap memo's children itself: waiting for the command then fails (ECHILD) and its
    // exit code is lost.
    // SAFETY: setting a standard disposition, before any thread exists.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(OsStr::new(FORWARDER)) && args.next().is_none() {
        forward_stdin_to_stdout();
        std::process::exit(0);
    }
}

/// Opens /dev/null on whichever of fds 0, 1 and 2 is closed (`2>&-`), so no pipe or file
/// memo opens later lands there. (Rust's runtime does the same on Linux; memo relies on
/// it, so it says so itself.)
pub fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any number is harmless; it only reports whether it is open.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if closed {
            // SAFETY: open with a valid C string; the lowest free descriptor is `fd`,
            // since the lower ones are open by now. It is meant to stay open for good.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Hands `source`, a pipe a process outside memo still holds open, to a detached
/// forwarder that copies it to `dest` (memo's fd 1 or 2) until that process closes it,
/// so memo can exit now. Best effort: if the forwarder cannot start, the pipe closes
/// with memo and the writer gets a broken pipe, as it would if its reader had gone.
pub fn forward_later(source: io::PipeReader, dest: RawFd) {
    let Ok(exe) = crate::fsutil::own_executable() else {
        return;
    };
    let Ok(out) = with_fd(dest, |out| out.try_clone()) else {
        return;
    };
    // Left in memo's process group: a Ctrl-C reaches it with the process it serves.
    // Not waited for: it ends when the writer does, after memo.
    let _ = Command::new(exe)
        .arg(FORWARDER)
        .stdin(Stdio::from(source))
        .stdout(Stdio::from(out))
        .stderr(Stdio::null())
        .spawn();
}

/// memo's fd 1 or 2 (or any descriptor), written as if it were blocking: when a parent
/// set O_NONBLOCK on it (node does) and it is full, a write waits until it can go on,
/// as it would on a blocking descriptor, instead of failing with EAGAIN and losing the
/// rest of the output.
pub struct Patient(pub RawFd);

/// Whether `fd` has O_NONBLOCK set (by whoever opened it: it belongs to the open file).
/// Asks for a pipe buffer of `bytes` on the pipe `fd` (the default is 64 KiB): fewer
/// trips through it for large output. Best effort: a refusal or a smaller system limit
/// leaves it as it is, and on anything but a pipe it does nothing.
pub fn grow_pipe(fd: RawFd, bytes: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: fcntl on a descriptor the caller holds open; no memory is passed.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes as libc::c_int);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, bytes);
}

pub fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL on any number is harmless; an error reads as "blocking".
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// Sets or clears O_NONBLOCK on `fd`, an open descriptor.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let wanted = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a `File` view of `fd`, a descriptor kept open elsewhere (memo's fd 0, 1
/// or 2, a pipe memo holds): the view is never dropped, so it never closes `fd`.
pub fn with_fd<T>(fd: RawFd, f: impl FnOnce(&mut File) -> T) -> T {
    // SAFETY: the caller keeps `fd` open for the call, and the view is never dropped.
    let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    f(&mut file)
}

impl Write for Patient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: writes from a valid slice to a descriptor the caller keeps open.
            let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    let mut fds = libc::pollfd {
                        fd: self.0,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call. Whatever it
                    // returns, the write is tried again and says what is wrong.
                    unsafe { libc::poll(&mut fds, 1, -1) };
                }
                _ => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The forwarder: copies stdin to stdout as bytes arrive, unbuffered, until end of file
/// or until stdout's reader goes away. When stdout fails otherwise (a full disk), it
/// keeps reading, so the writer is not killed by a broken pipe it would not have met.
fn forward_stdin_to_stdout() {
    // The pipe comes from memo's tee, which read it non-blocking (the flag belongs to
    // the pipe, so it came along): blocking reads here.
    let _ = set_nonblocking(0, false);
    let mut output = Patient(1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut writable = true;
    // fd 0 is open (ensure_standard_fds).
    with_fd(0, |input| loop {
        match input.read(&mut buf) {
            Ok(0) => return,
            Ok(n) if writable => match output.write_all(&buf[..n]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return,
                Err(_) => writable = false,
            },
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    })
}
