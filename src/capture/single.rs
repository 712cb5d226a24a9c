//! The tee without threads: memo's own thread waits in one poll(2) for the command's
//! pipes and its exit (a pidfd), and copies each pipe to memo's stdout or stderr as
//! bytes arrive, keeping them as `tee` does. Starting the two tee threads cost a small
//! command's run more than anything else memo did for it.
//!
//! It behaves as the threaded tee: the same drain after the command's exit, the same
//! stop after an interruption, the same hand-over of a pipe still held open to a
//! forwarder, a recorder thread only for output larger than the buffer. What a thread
//! per stream gave for free, a write to memo's stdout that blocks while the command
//! exits or memo is interrupted, comes from signals that interrupt that write: the
//! command's exit (SIGCHLD), and after an interruption a 50 ms timer, so memo still
//! ends after `STOP_GRACE + STUCK_GRACE` when its destination takes nothing.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::{
    signals, streams, wait, writers_gone, Drain, Outcome, Recorder, Stage, Tee, TeeEnd,
    POLL_INTERVAL, STOP_GRACE, STUCK_GRACE, TEE_CHUNK,
};

/// A pidfd for `pid` (Linux 5.3), to wait for its exit in poll; `None` where the kernel
/// has none (the caller then uses the threaded tee).
pub fn pidfd(pid: libc::pid_t) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just made and is owned here alone. pidfd_open
        // sets close-on-exec.
        Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// One pipe of the command's and where it goes.
struct Stream<'scope, 'env> {
    /// Closed (`None`) as soon as reading ends, unless it is handed to a forwarder.
    source: Option<io::PipeReader>,
    dest: RawFd,
    writable: bool,
    buf: Vec<u8>,
    filled: usize,
    /// `buf[sent..filled]` is still to be written to `dest`.
    sent: usize,
    recorder: Recorder<'scope, 'env>,
    drain: Option<Drain>,
    stop_deadline: Option<Instant>,
    end: TeeEnd,
    /// Still read.
    open: bool,
    /// Closed for reading while some process still holds it open.
    still_open: bool,
}

/// A stream's buffer starts this small and grows (four times at a time) to `TEE_CHUNK`
/// as output comes: most commands write a few lines, and a buffer of a whole chunk would
/// be a mapping of its own, whose unmapping at the end costs the other CPU an
/// interrupt (the command ran there, in memo's address space, until its exec).
const FIRST_CHUNK: usize = 4096;

/// Runs the tee of every source on this thread until the command `pid` has exited and
/// every source is done with; the command's outcome and each source's tee, in order.
pub fn run(
    sources: Vec<(io::PipeReader, RawFd)>,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    stage: Stage<'_>,
) -> (io::Result<Outcome>, Vec<Tee>) {
    signals::wake_on_child_exit();
    let mut periodic = false;
    let result = std::thread::scope(|scope| {
        let mut streams: Vec<Stream> = sources
            .into_iter()
            .map(|(source, dest)| {
                let _ = streams::set_nonblocking(source.as_raw_fd(), true);
                Stream {
                    source: Some(source),
                    dest,
                    writable: true,
                    buf: vec![0u8; FIRST_CHUNK],
                    filled: 0,
                    sent: 0,
                    recorder: Recorder::new(stage, scope),
                    drain: None,
                    stop_deadline: None,
                    end: TeeEnd::default(),
                    open: true,
                    still_open: false,
                }
            })
            .collect();
        let mut outcome: Option<io::Result<Outcome>> = None;
        let mut stop = false;
        let mut exit_deadline: Option<Instant> = None;
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        loop {
            if outcome.is_some() && streams.iter().all(|s| !s.open) {
                break;
            }
            fds.clear();
            if outcome.is_none() {
                fds.push(pollfd(pidfd.as_raw_fd()));
            }
            let mut busy = false;
            for s in streams.iter().filter(|s| s.open) {
                if s.sent < s.filled {
                    busy = true;
                } else {
                    fds.push(pollfd(s.fd()));
                }
            }
            let timeout = if busy {
                0
            } else if outcome.is_some() {
                POLL_INTERVAL.as_millis() as libc::c_int
            } else {
                -1
            };
            // SAFETY: valid pollfds for the duration of the call. An error (EINTR) leaves
            // every revents at 0: the loop looks again.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                for fd in &mut fds {
                    fd.revents = 0;
                }
            }
            let revents = |fd: RawFd| fds.iter().find(|p| p.fd == fd).map_or(0, |p| p.revents);
            if outcome.is_none() && revents(pidfd.as_raw_fd()) != 0 {
                outcome = Some(wait(pid));
                for s in streams.iter_mut().filter(|s| s.open) {
                    s.drain = s.source.as_ref().map(Drain::start);
                }
                if signals::received().is_some() {
                    // Nothing will be stored, and a grandchild that outlived the command
                    // may hold the pipes open for a long time: stop draining them soon.
                    stop = true;
                    exit_deadline = Some(Instant::now() + STOP_GRACE + STUCK_GRACE);
                    // A write to a destination that takes nothing must not hold memo.
                    signals::wake_periodically(POLL_INTERVAL);
                    periodic = true;
                }
            }
            for s in streams.iter_mut().filter(|s| s.open) {
                if s.sent < s.filled {
                    s.write_some();
                } else {
                    let events = revents(s.fd());
                    if events != 0 {
                        s.read_some();
                    } else if stop
                        && Instant::now()
                            >= *s
                                .stop_deadline
                                .get_or_insert_with(|| Instant::now() + STOP_GRACE)
                    {
                        s.end.read_error =
                            Some(io::Error::other("stopped reading after an interruption"));
                        s.still_open = true;
                        s.close();
                    }
                }
                // Past the grace, the pipe is held open only if some process still has
                // its write end: with none left (POLLHUP), what remains is read to end of
                // file, however slowly the destination takes it. (Not before what was
                // read is forwarded.)
                if s.open
                    && s.sent == s.filled
                    && s.drain.as_ref().is_some_and(Drain::is_over)
                    && s.source
                        .as_ref()
                        .is_some_and(|source| !writers_gone(source))
                {
                    s.end.held_open = true;
                    s.still_open = true;
                    s.close();
                }
                if !s.open && !s.still_open {
                    s.source = None;
                }
            }
            if let Some(deadline) = exit_deadline {
                if streams.iter().any(|s| s.open) && Instant::now() >= deadline {
                    // memo was told to stop and its command is gone: it ends rather than
                    // wait for a destination that takes nothing or a grandchild that
                    // feeds the pipe for good.
                    let sig = signals::received().unwrap_or(libc::SIGTERM);
                    let code = match &outcome {
                        Some(Ok(o)) => o.exit_code(),
                        _ => 128 + sig,
                    };
                    // SAFETY: _exit ends the process at once; staging files are left to
                    // gc, as after a kill.
                    unsafe { libc::_exit(code) };
                }
            }
        }
        let tees: Vec<Tee> = streams.into_iter().map(Stream::finish).collect();
        (
            outcome.expect("the loop ends once the command has exited"),
            tees,
        )
    });
    signals::stop_waking(periodic);
    result
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

impl Stream<'_, '_> {
    fn fd(&self) -> RawFd {
        self.source.as_ref().map_or(-1, |source| source.as_raw_fd())
    }

    /// Reading ends; the pipe is closed unless `still_open` (then it is forwarded).
    fn close(&mut self) {
        self.open = false;
        if !self.still_open {
            self.source = None;
        }
    }

    /// One read of what the pipe holds (it is non-blocking), then forwarded by
    /// `write_some`.
    fn read_some(&mut self) {
        let Some(source) = &mut self.source else {
            return self.close();
        };
        match source.read(&mut self.buf[self.filled..]) {
            Ok(0) => self.close(),
            Ok(n) => {
                if let Some(drain) = &mut self.drain {
                    drain.read += n;
                }
                if self.writable {
                    self.sent = self.filled;
                    self.filled += n;
                    self.write_some();
                } else {
                    self.filled += n;
                    self.sent = self.filled;
                    self.hand_over_if_full();
                }
            }
            // A pseudo-terminal's master says EIO once no process holds its slave: its
            // end of file (a pipe never does).
            Err(e) if e.raw_os_error() == Some(libc::EIO) => self.close(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => {
                self.end.read_error = Some(e);
                self.close();
            }
        }
    }

    /// Writes what is pending to `dest`, as much as one write takes. A write blocked on
    /// a full destination returns when a signal comes (see the module's note).
    fn write_some(&mut self) {
        let pending = &self.buf[self.sent..self.filled];
        // SAFETY: writes from a valid slice to a descriptor memo keeps open (fd 1 or 2).
        let n = unsafe { libc::write(self.dest, pending.as_ptr().cast(), pending.len()) };
        if n >= 0 {
            self.sent += n as usize;
        } else {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    // A destination some parent made non-blocking (node does): wait until
                    // it takes more, as a blocking one would.
                    let mut fds = libc::pollfd {
                        fd: self.dest,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    unsafe { libc::poll(&mut fds, 1, -1) };
                }
                io::ErrorKind::BrokenPipe => {
                    // A destination whose reader went away: closing the source then lets
                    // the command see a broken pipe, as it would have without memo.
                    self.end.destination_closed = true;
                    self.close();
                    self.sent = self.filled;
                }
                _ => {
                    let name = if self.dest == 1 { "stdout" } else { "stderr" };
                    self.end.undelivered =
                        Some(format!("cannot write the command's output to {name} ({e})"));
                    self.writable = false;
                    self.sent = self.filled;
                }
            }
        }
        if self.sent == self.filled {
            self.hand_over_if_full();
        }
    }

    fn hand_over_if_full(&mut self) {
        if self.filled < self.buf.len() {
            return;
        }
        if self.buf.len() < TEE_CHUNK {
            // Grown, not handed over, until it is a whole chunk (see `FIRST_CHUNK`).
            self.buf.resize((self.buf.len() * 4).min(TEE_CHUNK), 0);
            return;
        }
        self.recorder.take_full(&mut self.buf);
        self.filled = 0;
        self.sent = 0;
    }

    fn finish(self) -> Tee {
        let recording = self.recorder.finish(self.buf, self.filled);
        if let (true, Some(source)) = (self.still_open, self.source) {
            // Even to a destination that fails: closing the pipe would kill what the
            // command left running with SIGPIPE, which that destination would not.
            streams::forward_later(source, self.dest);
        }
        Tee {
            recording: match self.end.read_error {
                Some(e) => Err(e),
                None => recording,
            },
            destination_closed: self.end.destination_closed,
            undelivered: self.end.undelivered,
            held_open: self.end.held_open,
        }
    }
}
