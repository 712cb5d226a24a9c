//! Running the command: live tee of its output while it is recorded, exit status, signals.
//!
//! Owns the child process. Stdout and stderr are forwarded to memo's own as they arrive
//! and, when recording, kept: in memory while they are small (`MEMORY_MAX`, most
//! commands' output), else written to staging files and hashed on a recorder thread
//! started for it, so memory stays bounded whatever the output size. Knows nothing
//! about keys or entries.

pub mod pty;
pub mod signals;
mod single;
mod spawn;
mod stdin;
pub mod streams;

pub use stdin::{spool_stdin, SpooledStdin};

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;

use crate::digest::{Digest, Hasher};
use crate::exit::{Code, Fatal};
use crate::key::StreamMode;
use crate::trace::{self, Trace};

/// What to run.
pub struct Spec {
    /// The resolved executable.
    pub program: PathBuf,
    /// The command line as the user wrote it; `argv[0]` is passed through unchanged.
    pub argv: Vec<OsString>,
    /// Standard input: `None` is /dev/null.
    pub stdin: Option<File>,
    /// A descriptor of memo's the command inherits (a `lock::Flight`).
    pub inherit: Option<RawFd>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

impl Outcome {
    /// The code memo exits with: the command's own, or 128+N for signal N.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Exited(code) => code,
            Outcome::Signaled(sig) => 128 + sig,
        }
    }
}

/// A stream as it was forwarded, with its digest.
pub struct Recording {
    pub kept: Kept,
    pub digest: Digest,
    pub size: u64,
}

/// Where a recording's bytes are.
pub enum Kept {
    /// At most `MEMORY_MAX` bytes: no file was made for them.
    Memory(Vec<u8>),
    /// Written to a staging file (`stage()`), as large output is.
    Staged(NamedTempFile),
}

/// Output up to this size is kept in memory, not staged: creating and removing a file
/// per stream cost a small command's run more than the command itself.
pub const MEMORY_MAX: usize = 64 * 1024;

impl Recording {
    /// Its last `n` bytes (all of it if shorter).
    pub fn tail(&self, n: u64) -> io::Result<Vec<u8>> {
        let start = self.size.saturating_sub(n);
        match &self.kept {
            Kept::Memory(bytes) => Ok(bytes[start as usize..].to_vec()),
            Kept::Staged(file) => {
                use std::os::unix::fs::FileExt as _;
                let mut bytes = vec![0; (self.size - start) as usize];
                file.as_file().read_exact_at(&mut bytes, start)?;
                Ok(bytes)
            }
        }
    }
}

pub struct Finished {
    pub outcome: Outcome,
    pub duration: Duration,
    /// Recordings in stream order: [stdout, stderr] when separate, [combined] when merged.
    /// An `Err` means the recording failed (the output still reached its destination).
    pub recordings: Vec<io::Result<Recording>>,
    /// The reader of memo's own stdout or stderr went away (a broken pipe), so the
    /// command was cut off as it would have been without memo. Any other failure to
    /// write there (a full disk) leaves the recording whole and the command running.
    pub destination_closed: bool,
    /// memo's stdout or stderr failed otherwise (ENOSPC, EIO): what this says went
    /// nowhere, though it was recorded.
    pub undelivered: Option<String>,
    /// The command exited but a process it left running still held its stdout or
    /// stderr open: memo stopped reading after a short grace, so the recording may lack
    /// what that process writes later (which still reaches memo's stdout or stderr).
    pub output_held_open: bool,
    /// A signal memo received while the command ran (forwarded to it).
    pub interrupted: Option<i32>,
    /// What the tracer saw, when the command ran traced (`--trace`).
    pub trace: Option<Trace>,
}

/// Whether memo's stdout and stderr are the same file, pipe or terminal, in which case the
/// command gets one pipe for both so the recording keeps their exact interleaving.
pub fn stream_mode() -> StreamMode {
    // fd 1 and 2 stay open for the life of the process.
    let id = |fd: RawFd| streams::with_fd(fd, |f| f.metadata().ok().map(|m| (m.dev(), m.ino())));
    match (id(1), id(2)) {
        (Some(out), Some(err)) if out == err => StreamMode::Merged,
        _ => StreamMode::Separate,
    }
}

/// Starts the command of `spec` with these stdout and stderr (`None`: memo's own): its pid.
fn start(spec: &Spec, stdout: Option<RawFd>, stderr: Option<RawFd>) -> io::Result<libc::pid_t> {
    unless_busy(|| {
        spawn::spawn(&spawn::Launch {
            program: &spec.program,
            argv: &spec.argv,
            stdin: spec.stdin.as_ref().map(|f| f.as_raw_fd()),
            stdout,
            stderr,
            inherit: spec.inherit,
        })
    })
}

/// Starts the command with `start`, again after a pause while the exec fails with
/// ETXTBSY: the program is open for writing at that moment, often only by a process
/// that forked while it was being written and has not yet reached its own exec (a
/// build writing a script, then running it, while it starts other jobs). The failed
/// start ran nothing. After about half a second the error stands.
fn unless_busy<T>(mut start: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut pause = Duration::from_millis(5);
    for _ in 0..BUSY_RETRIES {
        match start() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            started => return started,
        }
    }
    start()
}

/// How many times a start that meets ETXTBSY is tried again (5 ms, doubling: 635 ms).
const BUSY_RETRIES: usize = 7;

fn spawn_error(spec_program: &std::path::Path, argv0: &OsString, e: io::Error) -> Fatal {
    let shown = argv0.to_string_lossy();
    match e.kind() {
        io::ErrorKind::NotFound => Fatal::new(
            Code::NotFound,
            format!(
                "memo: command '{shown}' not found ({}); check the path",
                spec_program.display()
            ),
        ),
        io::ErrorKind::PermissionDenied => Fatal::new(
            Code::NotExecutable,
            format!("memo: command '{shown}' cannot be executed (permission denied); chmod +x it"),
        ),
        _ => Fatal::new(
            Code::NotExecutable,
            format!("memo: command '{shown}' cannot be executed: {e}"),
        ),
    }
}

/// The running command: started the ordinary way, or under the tracer.
enum Child {
    Plain(libc::pid_t),
    Traced(Box<trace::Tracee>),
}

impl Child {
    fn id(&self) -> u32 {
        match self {
            Child::Plain(pid) => *pid as u32,
            Child::Traced(tracee) => tracee.pid(),
        }
    }

    /// Waits for the command to exit (for a traced one, following its processes until
    /// then), on the thread that started it.
    fn wait(self) -> (io::Result<Outcome>, Option<Trace>) {
        match self {
            Child::Plain(pid) => (wait(pid), None),
            Child::Traced(tracee) => {
                let (ended, trace) = tracee.run();
                signals::clear_child();
                let outcome = ended.map(|ended| match ended {
                    trace::Ended::Exited(code) => Outcome::Exited(code),
                    trace::Ended::Signaled(sig) => Outcome::Signaled(sig),
                });
                (outcome, Some(trace))
            }
        }
    }
}

fn wait(pid: libc::pid_t) -> io::Result<Outcome> {
    let status = spawn::wait(pid)?;
    signals::clear_child();
    Ok(match status {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signaled(sig),
        (None, None) => Outcome::Exited(1),
    })
}

/// Runs the command with memo's stdout and stderr passed straight through, recording
/// nothing: the path taken when the cache cannot be used.
pub fn run_passthrough(spec: Spec) -> Result<Outcome, Fatal> {
    let argv0 = spec.argv[0].clone();
    let program = spec.program.clone();
    signals::install();
    signals::command_starting();
    let pid = start(&spec, None, None).map_err(|e| spawn_error(&program, &argv0, e))?;
    drop(spec);
    signals::set_child(pid as u32);
    wait(pid).map_err(|e| Fatal::failure(format!("memo: waiting for the command failed: {e}")))
}

/// A staging file for a recording too large to keep in memory; called from the tee
/// threads, when one is needed.
pub type Stage<'a> = &'a (dyn Fn() -> io::Result<NamedTempFile> + Sync);

/// Runs the command, forwarding its output live and recording it (in memory, or in
/// `stage()` files when large).
/// `on_start` is told the command's pid as soon as it runs, and the inode numbers of the
/// pipes its stdout and stderr write into (every process it starts inherits them, unless
/// it redirects them: they tell that run's processes apart from any other's).
pub fn run_recorded(
    spec: Spec,
    mode: StreamMode,
    traced: bool,
    stage: Stage<'_>,
    on_start: &dyn Fn(u32, &[u64]),
) -> Result<Finished, Fatal> {
    let argv0 = spec.argv[0].clone();
    let program = spec.program.clone();
    let pipe_failed = |e: io::Error| Fatal::failure(format!("memo: cannot create a pipe: {e}"));
    // (reader, where its bytes go)
    let mut sources: Vec<(io::PipeReader, RawFd)> = Vec::new();
    // The inode numbers of what the command writes into.
    let mut written: Vec<u64> = Vec::new();
    // The command's stdout and stderr.
    let (out, err): (OwnedFd, OwnedFd) = match mode {
        StreamMode::Terminal { columns } => {
            let pty = pty::open(columns, pty::rows()).map_err(|e| {
                Fatal::failure(format!(
                    "memo: cannot open a pseudo-terminal for --tty: {e}"
                ))
            })?;
            written.extend(inode(pty.slave.as_raw_fd()));
            let slave2 = pty.slave.try_clone().map_err(pipe_failed)?;
            // Read like a pipe; its end (EIO once every slave is closed) is taken as end of file.
            sources.push((io::PipeReader::from(pty.master), 1));
            (pty.slave, slave2)
        }
        StreamMode::Merged => {
            let (reader, writer) = io::pipe().map_err(pipe_failed)?;
            let writer2 = writer.try_clone().map_err(pipe_failed)?;
            sources.push((reader, 1));
            (writer.into(), writer2.into())
        }
        StreamMode::Separate => {
            let (out_r, out_w) = io::pipe().map_err(pipe_failed)?;
            let (err_r, err_w) = io::pipe().map_err(pipe_failed)?;
            sources.push((out_r, 1));
            sources.push((err_r, 2));
            (out_w.into(), err_w.into())
        }
    };
    for (reader, _) in &sources {
        enlarge_pipe(reader);
    }
    signals::install();
    signals::command_starting();
    let started = Instant::now();
    // The write ends go to the command and are closed here as soon as it has them, so
    // that the readers see end of file when it (and what it started) is done.
    let child = if traced {
        let launch = trace::Launch {
            program: &spec.program,
            argv: &spec.argv,
            stdin: spec.stdin.as_ref().map(|f| f.as_raw_fd()),
            stdout: out.as_raw_fd(),
            stderr: err.as_raw_fd(),
            inherit: spec.inherit,
        };
        let tracee =
            unless_busy(|| trace::spawn(&launch)).map_err(|e| spawn_error(&program, &argv0, e))?;
        drop((out, err, spec));
        Child::Traced(Box::new(tracee))
    } else {
        let pid = start(&spec, Some(out.as_raw_fd()), Some(err.as_raw_fd()))
            .map_err(|e| spawn_error(&program, &argv0, e))?;
        drop((out, err, spec));
        Child::Plain(pid)
    };
    let child_id = child.id();
    signals::set_child(child_id);
    if written.is_empty() {
        written = sources
            .iter()
            .filter_map(|(r, _)| inode(r.as_raw_fd()))
            .collect();
    }
    on_start(child_id, &written);
    // A small command's run on memo's thread alone; the pseudo-terminal and the tracer
    // keep a thread per stream.
    let single = match &child {
        Child::Plain(pid) if !matches!(mode, StreamMode::Terminal { .. }) => {
            single::pidfd(*pid).map(|fd| (*pid, fd))
        }
        _ => None,
    };
    let (outcome, tees, trace) = if let Some((pid, pidfd)) = single {
        let (outcome, tees) = single::run(sources, pid, pidfd, stage);
        (outcome, tees, None)
    } else {
        run_threaded(sources, child, stage)
    };
    let duration = started.elapsed();
    let outcome = outcome
        .map_err(|e| Fatal::failure(format!("memo: waiting for the command failed: {e}")))?;
    Ok(Finished {
        outcome,
        duration,
        destination_closed: tees.iter().any(|t| t.destination_closed),
        undelivered: tees.iter().find_map(|t| t.undelivered.clone()),
        output_held_open: tees.iter().any(|t| t.held_open),
        recordings: tees.into_iter().map(|t| t.recording).collect(),
        interrupted: signals::received(),
        trace,
    })
}

/// The tee with a thread per stream, while this thread waits for the command.
fn run_threaded(
    sources: Vec<(io::PipeReader, RawFd)>,
    child: Child,
    stage: Stage<'_>,
) -> (io::Result<Outcome>, Vec<Tee>, Option<Trace>) {
    let stop = AtomicBool::new(false);
    let exited = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (stop, exited) = (&stop, &exited);
        let handles: Vec<_> = sources
            .into_iter()
            .map(|(reader, fd)| {
                let flags = Flags { stop, exited };
                scope.spawn(move || tee(reader, fd, Recorder::new(stage, scope), flags))
            })
            .collect();
        let (outcome, trace) = child.wait();
        exited.store(true, Ordering::SeqCst);
        if let Some(sig) = signals::received() {
            // Nothing will be stored, and a grandchild that outlived the command may hold
            // the pipes open for a long time: stop draining them soon.
            stop.store(true, Ordering::SeqCst);
            // A tee may still be stuck writing to a destination that takes nothing (its
            // reader stopped reading), or be fed for good by such a grandchild: memo was
            // told to stop and its command is gone, so it ends rather than wait for them.
            let deadline = Instant::now() + STOP_GRACE + STUCK_GRACE;
            while handles.iter().any(|tee| !tee.is_finished()) {
                if Instant::now() >= deadline {
                    let code = outcome.as_ref().map_or(128 + sig, |o| o.exit_code());
                    // SAFETY: _exit ends the process at once; the threads' staging files
                    // are left to gc, as after a kill.
                    unsafe { libc::_exit(code) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let tees: Vec<Tee> = handles
            .into_iter()
            .map(|tee| {
                let (end, recording) = tee.join().expect("tee thread panicked");
                Tee {
                    recording: match end.read_error {
                        Some(e) => Err(e),
                        None => recording,
                    },
                    destination_closed: end.destination_closed,
                    undelivered: end.undelivered,
                    held_open: end.held_open,
                }
            })
            .collect();
        (outcome, tees, trace)
    })
}

fn inode(fd: RawFd) -> Option<u64> {
    streams::with_fd(fd, |f| f.metadata().ok().map(|m| m.ino()))
}

/// Asks for a 1 MiB pipe buffer (the default is 64 KiB): fewer context switches between
/// the command and memo when output is large. Best effort; the limit may be lower.
fn enlarge_pipe(reader: &io::PipeReader) {
    streams::grow_pipe(reader.as_raw_fd(), TEE_CHUNK);
}

/// How much the tee reads at a time: the pipe buffer size it asks for.
const TEE_CHUNK: usize = 1024 * 1024;

const POLL_INTERVAL: Duration = Duration::from_millis(50);
const STOP_GRACE: Duration = Duration::from_millis(200);
/// How much longer than `STOP_GRACE` an interrupted memo waits for its tees to finish.
const STUCK_GRACE: Duration = Duration::from_millis(300);
/// How long the pipes stay open for reading once the command has exited and what it
/// left in them has been read: long enough for a descendant that is finishing too
/// (`cmd | tee`, a last flush), short enough to feel like the direct call.
const DRAIN_GRACE: Duration = Duration::from_millis(150);

/// Whether every write end of the pipe `source` is closed (POLLHUP): nothing more can
/// arrive but what is buffered.
fn writers_gone(source: &io::PipeReader) -> bool {
    let mut fds = libc::pollfd {
        fd: source.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; no waiting.
    let ready = unsafe { libc::poll(&mut fds, 1, 0) };
    ready > 0 && fds.revents & libc::POLLHUP != 0
}

/// Waits until `source` has data or end of file, or `timeout` passes (then `false`).
fn wait_readable(source: &io::PipeReader, timeout: Duration) -> bool {
    let mut fds = libc::pollfd {
        fd: source.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) };
    // On an error (EINTR included) report readable: read() then says what is wrong.
    ready != 0
}

struct Tee {
    recording: io::Result<Recording>,
    destination_closed: bool,
    undelivered: Option<String>,
    held_open: bool,
}

/// A buffer and how many of its bytes are filled.
type Chunk = (Vec<u8>, usize);

/// Buffers in flight per stream: bounds memory to `POOL * TEE_CHUNK` whatever the output.
const POOL: usize = 4;

/// What the tee watches besides its pipe.
#[derive(Clone, Copy)]
struct Flags<'a> {
    /// memo was interrupted: nothing will be stored.
    stop: &'a AtomicBool,
    /// The command has exited (and been reaped).
    exited: &'a AtomicBool,
}

/// How a tee ended.
#[derive(Default)]
struct TeeEnd {
    /// memo's destination is a pipe whose reader went away.
    destination_closed: bool,
    /// Why writing to the destination stopped, when it failed otherwise.
    undelivered: Option<String>,
    /// A reading error, or reading stopped before end of file: the recording is spoilt.
    read_error: Option<io::Error>,
    /// The command exited, and after `DRAIN_GRACE` a process it started still held the
    /// pipe open.
    held_open: bool,
}

/// When reading stops after the command has exited, though the pipe may stay open.
struct Drain {
    /// Bytes the command left in the pipe when its exit was noticed: always read.
    leftover: usize,
    read: usize,
    deadline: Instant,
}

impl Drain {
    fn start(source: &io::PipeReader) -> Drain {
        Drain {
            leftover: bytes_in_pipe(source),
            read: 0,
            deadline: Instant::now() + DRAIN_GRACE,
        }
    }

    fn is_over(&self) -> bool {
        self.read >= self.leftover && Instant::now() >= self.deadline
    }
}

/// Copies `source` to file descriptor `dest` as bytes arrive, and keeps them in its
/// buffer; a full buffer goes to the `recorder`, which starts a thread that hashes and
/// writes it on the other core: the terminal sees every read at once, the recorder few
/// large chunks. Output that never fills the buffer is recorded at the end, without a
/// thread (and in memory if small).
///
/// A destination whose reader went away (EPIPE) stops both, and closing `source` then
/// lets the command see a broken pipe, as it would have without memo. Any other failure
/// to write there (ENOSPC, EIO) only stops the writing: the command is not the one
/// that failed, so it goes on, and so does the recording.
///
/// Once the command has exited, reading goes on until end of file, or until what it
/// left in the pipe is read and `DRAIN_GRACE` has passed: a process it left running
/// may hold the pipe open for good (`daemon &`), and the direct call would not wait for
/// it. Once `stop` is set, reading ends after `STOP_GRACE`. Either way a pipe still
/// open is handed to a forwarder process (`streams::forward_later`), so what is
/// written later still reaches `dest` after memo has exited.
fn tee(
    mut source: io::PipeReader,
    dest: RawFd,
    mut recorder: Recorder<'_, '_>,
    flags: Flags,
) -> (TeeEnd, io::Result<Recording>) {
    let mut out = streams::Patient(dest);
    let mut writable = true;
    // Non-blocking, so that poll (needed only to notice the flags) runs only when the
    // pipe is empty, not before every read.
    let nonblocking = streams::set_nonblocking(source.as_raw_fd(), true).is_ok();
    let mut buf = vec![0u8; TEE_CHUNK];
    let mut filled = 0;
    let mut stop_deadline: Option<Instant> = None;
    let mut drain: Option<Drain> = None;
    let mut end = TeeEnd::default();
    let mut still_open = false;
    loop {
        if drain.is_none() && flags.exited.load(Ordering::SeqCst) {
            drain = Some(Drain::start(&source));
        }
        // Past the grace, the pipe is held open only if some process still has its
        // write end: with none left (POLLHUP), what remains is read to end of file, however
        // slowly the destination takes it.
        if drain.as_ref().is_some_and(Drain::is_over) && !writers_gone(&source) {
            end.held_open = true;
            still_open = true;
            break;
        }
        // Blocking fallback: wait first, and treat a wait that timed out as an empty pipe.
        let read = if nonblocking || wait_readable(&source, POLL_INTERVAL) {
            source.read(&mut buf[filled..])
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            // A pseudo-terminal's master says EIO once no process holds its slave: its
            // end of file (a pipe never does).
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let timed_out = !nonblocking || !wait_readable(&source, POLL_INTERVAL);
                if timed_out && stop_now(flags.stop, &mut stop_deadline) {
                    end.read_error =
                        Some(io::Error::other("stopped reading after an interruption"));
                    still_open = true;
                    break;
                }
                continue;
            }
            Err(e) => {
                end.read_error = Some(e);
                break;
            }
        };
        if let Some(drain) = &mut drain {
            drain.read += n;
        }
        if writable {
            if let Err(e) = out.write_all(&buf[filled..filled + n]) {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    end.destination_closed = true;
                    break;
                }
                let name = if dest == 1 { "stdout" } else { "stderr" };
                end.undelivered =
                    Some(format!("cannot write the command's output to {name} ({e})"));
                writable = false;
            }
        }
        filled += n;
        if filled < buf.len() {
            continue;
        }
        recorder.take_full(&mut buf);
        filled = 0;
    }
    let recording = recorder.finish(buf, filled);
    if still_open {
        // Even to a destination that fails: closing the pipe would kill what the
        // command left running with SIGPIPE, which that destination would not.
        streams::forward_later(source, dest);
    }
    (end, recording)
}

/// How many bytes wait in the pipe (0 if that cannot be told).
fn bytes_in_pipe(source: &io::PipeReader) -> usize {
    let mut available: libc::c_int = 0;
    // SAFETY: FIONREAD on a valid descriptor writes one int.
    let status = unsafe { libc::ioctl(source.as_raw_fd(), libc::FIONREAD, &mut available) };
    if status < 0 {
        0
    } else {
        available.max(0) as usize
    }
}

fn stop_now(stop: &AtomicBool, deadline: &mut Option<Instant>) -> bool {
    if !stop.load(Ordering::SeqCst) {
        return false;
    }
    let end = *deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
    Instant::now() >= end
}

/// Where a tee's full buffers go: nowhere until the first one, then to a recorder thread
/// writing a staging file.
enum Recorder<'scope, 'env> {
    /// Nothing was handed over: all the output so far is in the tee's buffer.
    Waiting {
        stage: Stage<'env>,
        scope: &'scope std::thread::Scope<'scope, 'env>,
    },
    Running {
        to_recorder: SyncSender<Chunk>,
        /// Buffers the recorder is done with, for reuse: memory stays bounded.
        returned: Receiver<Vec<u8>>,
        allocated: usize,
        thread: std::thread::ScopedJoinHandle<'scope, io::Result<Recording>>,
    },
    /// The staging file could not be made, or the recorder went away: the output is
    /// still forwarded, not recorded.
    Failed(io::Error),
}

impl<'scope, 'env> Recorder<'scope, 'env> {
    fn new(stage: Stage<'env>, scope: &'scope std::thread::Scope<'scope, 'env>) -> Self {
        Recorder::Waiting { stage, scope }
    }

    /// Hands over `buf`, which is full, and puts an empty buffer in its place.
    fn take_full(&mut self, buf: &mut Vec<u8>) {
        if let Recorder::Waiting { stage, scope } = self {
            *self = match stage() {
                Ok(file) => {
                    let (to_recorder, chunks) = mpsc::sync_channel::<Chunk>(POOL);
                    let (give_back, returned) = mpsc::sync_channel::<Vec<u8>>(POOL + 1);
                    let thread = scope.spawn(move || record(file, chunks, give_back));
                    Recorder::Running {
                        to_recorder,
                        returned,
                        allocated: 1,
                        thread,
                    }
                }
                Err(e) => Recorder::Failed(e),
            };
        }
        let Recorder::Running {
            to_recorder,
            returned,
            allocated,
            ..
        } = self
        else {
            return;
        };
        let next = match returned.try_recv() {
            Ok(spare) => spare,
            Err(_) if *allocated < POOL => {
                *allocated += 1;
                vec![0u8; TEE_CHUNK]
            }
            Err(_) => returned.recv().unwrap_or_else(|_| vec![0u8; TEE_CHUNK]),
        };
        let full = std::mem::replace(buf, next);
        let filled = full.len();
        if to_recorder.send((full, filled)).is_err() {
            *self = Recorder::Failed(io::Error::other("the recorder stopped"));
        }
    }

    /// The recording, once `buf[..filled]`, the rest of the output, is added.
    fn finish(self, mut buf: Vec<u8>, filled: usize) -> io::Result<Recording> {
        match self {
            Recorder::Waiting { .. } if filled <= MEMORY_MAX => {
                buf.truncate(filled);
                buf.shrink_to_fit();
                let mut hasher = Hasher::new();
                hasher.update(&buf);
                let (digest, size) = hasher.finish();
                Ok(Recording {
                    kept: Kept::Memory(buf),
                    digest,
                    size,
                })
            }
            Recorder::Waiting { stage, .. } => {
                let mut file = stage()?;
                file.write_all(&buf[..filled])?;
                let mut hasher = Hasher::new();
                hasher.update(&buf[..filled]);
                let (digest, size) = hasher.finish();
                Ok(Recording {
                    kept: Kept::Staged(file),
                    digest,
                    size,
                })
            }
            Recorder::Running {
                to_recorder,
                thread,
                ..
            } => {
                if filled > 0 {
                    let _ = to_recorder.send((buf, filled));
                }
                drop(to_recorder);
                thread.join().expect("recorder thread panicked")
            }
            Recorder::Failed(e) => Err(e),
        }
    }
}

/// Hashes and writes every chunk it is sent, returning each buffer for reuse. After a
/// write error it keeps draining, so the tee never waits on it.
fn record(
    mut file: NamedTempFile,
    chunks: Receiver<Chunk>,
    returned: SyncSender<Vec<u8>>,
) -> io::Result<Recording> {
    signals::leave_wake_signals_to_the_main_thread();
    let mut hasher = Hasher::new();
    let mut failure = None;
    for (buf, n) in chunks {
        if failure.is_none() {
            match file.write_all(&buf[..n]) {
                Ok(()) => hasher.update(&buf[..n]),
                Err(e) => failure = Some(e),
            }
        }
        let _ = returned.try_send(buf);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let (digest, size) = hasher.finish();
    Ok(Recording {
        kept: Kept::Staged(file),
        digest,
        size,
    })
}
