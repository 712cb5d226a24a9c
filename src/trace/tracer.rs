//! The tracer's loop: every stop of every traced thread goes through `Tracer::handle`,
//! which decodes the call at its seccomp stop, takes its result at the syscall-exit
//! stop, and turns the pair into `Event`s (or an `Untrusted` reason).
//!
//! Paths are read from the tracee's memory and resolved against /proc/PID/cwd or
//! /proc/PID/fd/N while the caller is stopped; `meta` is an lstat made then too.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use libc::pid_t;

use super::calls::{self, At, Call, Flags};
use super::filter::NATIVE_ARCH;
use super::sys::{self, Status};
use super::{interpreter, paths, Access, Event, Meta, Privilege, Special, Trace, Untrusted};

/// A decoded call waiting for its result.
enum Pending {
    Open {
        path: PathBuf,
        flags: u64,
        existed: bool,
    },
    Exec {
        path: PathBuf,
    },
    Change {
        path: PathBuf,
        /// truncate: the data changed, not only the attributes.
        data: bool,
    },
    Make {
        path: PathBuf,
    },
    Link {
        from: PathBuf,
        to: PathBuf,
    },
    Remove {
        path: PathBuf,
        before: Option<Meta>,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        from_before: Option<Meta>,
        to_before: Option<Meta>,
        exchange: bool,
    },
    Connect,
    ChangedDir,
    /// A path argument could not be read: untrusted, whatever the call returns.
    Unreadable,
}

/// What became of a path argument.
enum Resolved {
    Path(PathBuf),
    /// An empty path (or NULL) with AT_EMPTY_PATH: the descriptor itself.
    Descriptor(PathBuf),
    /// Nothing worth an event: an empty path, a descriptor that is no file-system path.
    Nothing,
    Unreadable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    /// The main process finished its exec of the command (spawn waits for this) and is
    /// held stopped there: the caller resumes or detaches it.
    MainExecuted,
    /// The main process is gone; the code or signal.
    MainEnded(Status),
}

pub(crate) struct Tracer {
    pub main: pid_t,
    pub trace: Trace,
    /// Threads being traced and not yet reported dead.
    pub live: HashSet<pid_t>,
    /// Threads announced by a fork/clone event whose first stop (SIGSTOP) is still due.
    announced: HashSet<pid_t>,
    /// Children of a vfork (or a clone with CLONE_VFORK) that have not yet exec'd or
    /// died: their parent cannot stop (it waits, unstoppable, for their exec) until
    /// they do.
    pub vforked: HashSet<pid_t>,
    /// Children whose first stop came before their parent's fork event (reports of
    /// different threads come in no set order), and whether they have exec'd since.
    pub early: HashMap<pid_t, bool>,
    /// Such children that are gone already: their parent's event, still to come, must
    /// not bring them back.
    pub gone: HashSet<pid_t>,
    pending: HashMap<pid_t, Pending>,
    /// Each thread's working directory, read from /proc/PID/cwd once; all forgotten
    /// whenever any thread changes directory (threads may share one).
    cwds: HashMap<pid_t, PathBuf>,
    /// The main process's first exec (the command's) was seen.
    main_executed: bool,
    /// Lookups made since the run last changed a name (see `first_look`).
    looked_up: HashSet<(PathBuf, Looking)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Looking {
    Stat { follow: bool },
    Open { follow: bool },
}

impl Tracer {
    pub fn new(main: pid_t) -> Tracer {
        Tracer {
            main,
            trace: Trace::default(),
            live: HashSet::from([main]),
            announced: HashSet::new(),
            vforked: HashSet::new(),
            early: HashMap::new(),
            gone: HashSet::new(),
            pending: HashMap::new(),
            cwds: HashMap::new(),
            main_executed: false,
            looked_up: HashSet::new(),
        }
    }

    fn untrust(&mut self, why: Untrusted) {
        if self.trace.untrusted.is_none() {
            self.trace.untrusted = Some(why);
        }
    }

    fn emit(&mut self, pid: pid_t, path: PathBuf, access: Access, meta: Option<Meta>) {
        if matches!(
            access,
            Access::Write { .. }
                | Access::Create
                | Access::Remove
                | Access::RenameFrom { .. }
                | Access::RenameTo { .. }
        ) {
            self.looked_up.clear();
        }
        self.trace.events.push(Event {
            pid,
            path,
            access,
            meta,
        });
    }

    /// Acts on one wait report and resumes the thread.
    pub fn handle(&mut self, pid: pid_t, status: Status) -> Step {
        match status {
            Status::Exited(_) | Status::Signaled(_) => {
                self.live.remove(&pid);
                self.announced.remove(&pid);
                self.vforked.remove(&pid);
                if self.early.remove(&pid).is_some() {
                    self.gone.insert(pid);
                }
                self.pending.remove(&pid);
                self.cwds.remove(&pid);
                if pid == self.main {
                    return Step::MainEnded(status);
                }
                Step::Continue
            }
            Status::Signal(signal) => {
                self.trace.stops += 1;
                if signal == libc::SIGSTOP && self.live.insert(pid) {
                    // A new child's first stop, before its parent's event.
                    self.early.insert(pid, false);
                    sys::resume(pid, 0);
                } else if signal == libc::SIGSTOP && self.announced.remove(&pid) {
                    sys::resume(pid, 0);
                } else {
                    sys::resume(pid, signal);
                }
                Step::Continue
            }
            Status::SyscallExit => {
                self.trace.stops += 1;
                if let Some(pending) = self.pending.remove(&pid) {
                    if let Some(result) = sys::syscall_result(pid) {
                        self.finish(pid, pending, result);
                    }
                }
                sys::resume(pid, 0);
                Step::Continue
            }
            Status::Event(event) => {
                self.trace.stops += 1;
                self.on_event(pid, event)
            }
        }
    }

    fn on_event(&mut self, pid: pid_t, event: i32) -> Step {
        match event {
            libc::PTRACE_EVENT_SECCOMP => {
                if self.on_seccomp(pid) {
                    sys::resume_to_exit(pid);
                } else {
                    sys::resume(pid, 0);
                }
                Step::Continue
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Ok(child) = sys::event_message(pid) {
                    let child = child as pid_t;
                    let vfork = event == libc::PTRACE_EVENT_VFORK;
                    if self.gone.remove(&child) {
                        // It came and went before this event.
                    } else if let Some(execed) = self.early.remove(&child) {
                        // Seen already (its first stop came first): a vfork's child
                        // that has not exec'd yet still holds its parent.
                        if vfork && !execed {
                            self.vforked.insert(child);
                        }
                    } else {
                        if self.live.insert(child) {
                            self.announced.insert(child);
                        }
                        if vfork {
                            self.vforked.insert(child);
                        }
                    }
                }
                sys::resume(pid, 0);
                Step::Continue
            }
            libc::PTRACE_EVENT_EXEC => {
                // A thread other than the leader that execs takes the leader's id.
                let former = sys::event_message(pid).map(|f| f as pid_t).unwrap_or(pid);
                self.vforked.remove(&pid);
                self.vforked.remove(&former);
                for exec_d in [pid, former] {
                    if let Some(execed) = self.early.get_mut(&exec_d) {
                        *execed = true;
                    }
                }
                if former != pid {
                    self.live.remove(&former);
                }
                let pending = self
                    .pending
                    .remove(&former)
                    .or_else(|| self.pending.remove(&pid));
                if let Some(Pending::Exec { path }) = pending {
                    self.executed(pid, path);
                }
                if pid == self.main && !self.main_executed {
                    // Held at this stop: spawn decides whether to go on tracing it.
                    self.main_executed = true;
                    return Step::MainExecuted;
                }
                sys::resume(pid, 0);
                Step::Continue
            }
            _ => {
                sys::resume(pid, 0);
                Step::Continue
            }
        }
    }

    /// Decodes the call at a seccomp stop; true when its result is wanted.
    fn on_seccomp(&mut self, pid: pid_t) -> bool {
        let Some(call) = sys::seccomp_call(pid) else {
            return false;
        };
        #[cfg(target_arch = "x86_64")]
        let foreign = call.arch != NATIVE_ARCH || call.nr & 0x4000_0000 != 0;
        #[cfg(target_arch = "aarch64")]
        let foreign = call.arch != NATIVE_ARCH;
        if foreign {
            self.untrust(Untrusted::ForeignAbi);
            return false;
        }
        let Some(decoded) = calls::decode(call.nr as libc::c_long, call.args) else {
            return false;
        };
        let pending = match self.entry(pid, decoded) {
            Some(pending) => pending,
            None => return false,
        };
        self.pending.insert(pid, pending);
        true
    }

    fn entry(&mut self, pid: pid_t, call: Call) -> Option<Pending> {
        macro_rules! path {
            ($at:expr) => {
                match resolve_with(pid, $at, &mut self.cwds, &mut self.trace.named_relative) {
                    Resolved::Path(path) | Resolved::Descriptor(path) => path,
                    Resolved::Nothing => return None,
                    Resolved::Unreadable => return Some(Pending::Unreadable),
                }
            };
        }
        Some(match call {
            Call::Open { at, flags } => {
                let flags = match flags {
                    Flags::Value(flags) => flags,
                    Flags::OpenHow(address) => match sys::read_u64(pid, address) {
                        Some(flags) => flags,
                        None => return Some(Pending::Unreadable),
                    },
                };
                if flags & libc::O_TMPFILE as u64 == libc::O_TMPFILE as u64 {
                    return None;
                }
                let path = path!(at);
                if is_read_only(flags) {
                    self.open_read_only(pid, path, flags);
                    return None;
                }
                let existed =
                    flags & libc::O_CREAT as u64 != 0 && fs::symlink_metadata(&path).is_ok();
                Pending::Open {
                    path,
                    flags,
                    existed,
                }
            }
            Call::Exec { at } => Pending::Exec { path: path!(at) },
            Call::Lookup { at, follow } => match resolve_with(pid, at, &mut self.cwds, &mut self.trace.named_relative) {
                Resolved::Path(path) => {
                    self.look_up(pid, path, follow);
                    return None;
                }
                // fstat through fstatat/statx: the file was observed when it was opened.
                Resolved::Descriptor(_) | Resolved::Nothing => return None,
                Resolved::Unreadable => Pending::Unreadable,
            },
            Call::ReadLink { at } => {
                let path = path!(at);
                match fs::read_link(&path) {
                    Ok(target) => {
                        let meta = lstat(&path);
                        self.emit(pid, path, Access::ReadLink { target }, meta);
                    }
                    Err(_) => self.look_up(pid, path, false),
                }
                return None;
            }
            Call::List { fd } => {
                let path = descriptor_path(pid, fd)?;
                let meta = lstat(&path);
                self.emit(pid, path, Access::List, meta);
                return None;
            }
            Call::Change { at } => Pending::Change {
                path: path!(at),
                data: false,
            },
            Call::Truncate { at } => Pending::Change {
                path: path!(at),
                data: true,
            },
            Call::ChangeFd { fd } => Pending::Change {
                path: descriptor_path(pid, fd)?,
                data: false,
            },
            Call::Make { at } => Pending::Make { path: path!(at) },
            Call::Link { from, to } => Pending::Link {
                from: path!(from),
                to: path!(to),
            },
            Call::Remove { at } => {
                let path = path!(at);
                let before = lstat(&path);
                Pending::Remove { path, before }
            }
            Call::Rename { from, to, exchange } => {
                let (from, to) = (path!(from), path!(to));
                let (from_before, to_before) = (lstat(&from), lstat(&to));
                Pending::Rename {
                    from,
                    to,
                    from_before,
                    to_before,
                    exchange,
                }
            }
            Call::Clone { flags } => {
                // The low byte of clone()'s flags is the exit signal, not CLONE_NEWTIME.
                self.check_clone_flags(flags, calls::CLONE_SUSPICIOUS);
                return None;
            }
            Call::Clone3 { args } => {
                match sys::read_u64(pid, args) {
                    Some(flags) => self.check_clone_flags(
                        flags,
                        calls::CLONE_SUSPICIOUS | libc::CLONE_NEWTIME as u64,
                    ),
                    None => self.untrust(Untrusted::UnreadablePath),
                }
                return None;
            }
            Call::ChangeDir { at } => {
                if let Some(at) = at {
                    match resolve_with(pid, at, &mut self.cwds, &mut self.trace.named_relative) {
                        Resolved::Path(path) => self.look_up(pid, path, true),
                        Resolved::Unreadable => return Some(Pending::Unreadable),
                        Resolved::Descriptor(_) | Resolved::Nothing => {}
                    }
                }
                Pending::ChangedDir
            }
            Call::Connect => Pending::Connect,
            Call::Itself => {
                self.untrust(Untrusted::TracesItself);
                return None;
            }
            Call::Namespaces => {
                self.untrust(Untrusted::Namespaces);
                return None;
            }
            Call::IoUring => {
                self.untrust(Untrusted::IoUring);
                if sys::skip_call(pid).is_err() {
                    self.untrust(Untrusted::IoUring);
                }
                return None;
            }
        })
    }

    fn check_clone_flags(&mut self, flags: u64, suspicious: u64) {
        if flags & libc::CLONE_UNTRACED as u64 != 0 {
            self.untrust(Untrusted::Untraced);
        } else if flags & suspicious != 0 {
            self.untrust(Untrusted::Namespaces);
        }
    }

    /// Turns a call and its result into events.
    fn finish(&mut self, pid: pid_t, pending: Pending, result: Result<i64, i32>) {
        // An interrupted call is restarted and stops again: it did nothing yet.
        if matches!(result, Err(errno) if (512..=516).contains(&errno)) {
            return;
        }
        let absent = matches!(result, Err(libc::ENOENT) | Err(libc::ENOTDIR));
        match pending {
            Pending::Open {
                path,
                flags,
                existed,
            } => match result {
                Ok(fd) => self.opened(pid, path, flags, existed, fd as i32),
                Err(_) if absent => self.emit(pid, path, Access::Absent, None),
                Err(_) => {
                    let follow = flags & libc::O_NOFOLLOW as u64 == 0;
                    self.exists(pid, path, follow);
                }
            },
            Pending::Exec { path } => {
                // Success is handled at the exec event; here the exec failed.
                if absent {
                    self.emit(pid, path, Access::Absent, None);
                } else {
                    self.exists(pid, path, true);
                }
            }
            Pending::Change { path, data } => match result {
                Ok(_) => {
                    let meta = lstat(&path);
                    let access = match data {
                        true => Access::Write { created: false },
                        false => Access::Attributes,
                    };
                    self.emit(pid, path, access, meta);
                }
                Err(_) if absent => self.emit(pid, path, Access::Absent, None),
                Err(_) => {}
            },
            Pending::Make { path } => match result {
                Ok(_) => {
                    let meta = lstat(&path);
                    self.emit(pid, path, Access::Create, meta);
                }
                Err(libc::EEXIST) => self.exists(pid, path, false),
                Err(_) if absent => self.emit(pid, path, Access::Absent, None),
                Err(_) => {}
            },
            Pending::Link { from, to } => match result {
                Ok(_) => {
                    // The new name holds the same data: the source is read, by content.
                    let source = lstat(&from);
                    match source.is_some_and(|m| m.mode & libc::S_IFMT == libc::S_IFREG) {
                        true => self.emit(pid, from, Access::Read, source),
                        false => self.exists(pid, from, false),
                    }
                    let meta = lstat(&to);
                    self.emit(pid, to, Access::Create, meta);
                }
                Err(libc::EEXIST) => self.exists(pid, to, false),
                Err(_) if absent => self.emit(pid, from, Access::Absent, None),
                Err(_) => {}
            },
            Pending::Remove { path, before } => match result {
                Ok(_) => self.emit(pid, path, Access::Remove, before),
                Err(_) if absent => self.emit(pid, path, Access::Absent, None),
                Err(_) => {}
            },
            Pending::Rename {
                from,
                to,
                from_before,
                to_before,
                exchange,
            } => match result {
                Ok(_) => {
                    self.emit(
                        pid,
                        from.clone(),
                        Access::RenameFrom { to: to.clone() },
                        from_before,
                    );
                    let after = lstat(&to);
                    self.emit(
                        pid,
                        to.clone(),
                        Access::RenameTo { from: from.clone() },
                        after,
                    );
                    if exchange {
                        self.emit(
                            pid,
                            to.clone(),
                            Access::RenameFrom { to: from.clone() },
                            to_before,
                        );
                        let after = lstat(&from);
                        self.emit(pid, from, Access::RenameTo { from: to }, after);
                    }
                }
                Err(_) if absent => self.emit(pid, from, Access::Absent, None),
                Err(_) => {}
            },
            Pending::ChangedDir => self.cwds.clear(),
            Pending::Connect => {
                if matches!(result, Ok(_) | Err(libc::EINPROGRESS)) {
                    self.untrust(Untrusted::Connected);
                }
            }
            // Even when the kernel could not read it either (EFAULT): a path memo cannot
            // read is a call it cannot vouch for.
            Pending::Unreadable => self.untrust(Untrusted::UnreadablePath),
        }
    }

    /// A call that only looks a path up (stat, access, getxattr, readlink of a
    /// non-symlink) is decided here, at its seccomp stop, by looking the path up the
    /// same way while the caller waits: the syscall-exit stop it saves is half the cost
    /// of tracing a compiler, which stats every directory of every header it finds.
    fn look_up(&mut self, pid: pid_t, path: PathBuf, follow: bool) {
        let Some(path) = self.first_look(path, Looking::Stat { follow }) else {
            return;
        };
        match look(&path, follow) {
            Looked::Found { meta, .. } => self.emit(pid, path, Access::Stat { follow }, Some(meta)),
            Looked::Absent => self.emit(pid, path, Access::Absent, None),
            // Neither found nor absent (a symlink loop, a denied directory): what is
            // there is the observation, so that replacing it is seen.
            Looked::Unknown => match fs::read_link(&path) {
                Ok(target) => {
                    let meta = lstat(&path);
                    self.emit(pid, path, Access::ReadLink { target }, meta);
                }
                Err(_) => self.exists(pid, path, false),
            },
        }
    }

    /// An open for reading only, decided at its seccomp stop like `look_up`: an input
    /// that turns out not to be read (the open failed for a reason other than absence)
    /// is recorded all the same, which can only cost a miss, never a wrong hit.
    fn open_read_only(&mut self, pid: pid_t, path: PathBuf, flags: u64) {
        let follow = flags & libc::O_NOFOLLOW as u64 == 0;
        if flags & libc::O_PATH as u64 != 0 {
            self.look_up(pid, path, follow);
            return;
        }
        let Some(path) = self.first_look(path, Looking::Open { follow }) else {
            return;
        };
        match look(&path, follow) {
            Looked::Found { meta, target_mode } => {
                let kind = target_mode.unwrap_or(meta.mode) & libc::S_IFMT;
                if kind == libc::S_IFREG || kind == libc::S_IFDIR {
                    self.emit(pid, path, Access::Read, Some(meta));
                } else if kind == libc::S_IFLNK {
                    // O_NOFOLLOW on a symlink: ELOOP.
                    self.emit(pid, path, Access::Stat { follow: false }, Some(meta));
                } else {
                    if let Ok(target) = fs::metadata(&path) {
                        self.special(path, None, &target);
                    }
                }
            }
            Looked::Absent => self.emit(pid, path, Access::Absent, None),
            // Neither found nor absent (a symlink loop, a denied directory): what is
            // there is the observation, so that replacing it is seen.
            Looked::Unknown => match fs::read_link(&path) {
                Ok(target) => {
                    let meta = lstat(&path);
                    self.emit(pid, path, Access::ReadLink { target }, meta);
                }
                Err(_) => self.exists(pid, path, false),
            },
        }
    }

    /// The path, unless the same lookup was already made with nothing changed by the
    /// run since: a compiler stats /usr and /usr/include for every header it looks
    /// for, and the first answer is the observation (a change made meanwhile by
    /// someone else is for the check after the run).
    fn first_look(&mut self, path: PathBuf, looking: Looking) -> Option<PathBuf> {
        let key = (path, looking);
        if self.looked_up.contains(&key) {
            return None;
        }
        let path = key.0.clone();
        self.looked_up.insert(key);
        Some(path)
    }

    /// A lookup that did not fail for absence: `Stat` if the path is there.
    fn exists(&mut self, pid: pid_t, path: PathBuf, follow: bool) {
        if let Some(meta) = lstat(&path) {
            self.emit(pid, path, Access::Stat { follow }, Some(meta));
        }
    }

    fn opened(&mut self, pid: pid_t, path: PathBuf, flags: u64, existed: bool, fd: i32) {
        let flag = |f: libc::c_int| flags & f as u64 != 0;
        if flag(libc::O_PATH) {
            self.exists(pid, path, !flag(libc::O_NOFOLLOW));
            return;
        }
        // What was opened, through the new descriptor (the path may be a symlink).
        let link = PathBuf::from(format!("/proc/{pid}/fd/{fd}"));
        let Ok(opened) = fs::metadata(&link) else {
            return;
        };
        let kind = opened.file_type();
        if !(kind.is_file() || kind.is_dir()) {
            self.special(path, Some(&link), &opened);
            return;
        }
        let created = flag(libc::O_CREAT) && !existed;
        let writes = flags & libc::O_ACCMODE as u64 != libc::O_RDONLY as u64
            || flag(libc::O_TRUNC)
            || created;
        let meta = lstat(&path);
        let existed = !flag(libc::O_CREAT) || existed;
        if writes && existed && !flag(libc::O_TRUNC) && kind.is_file() {
            // Written without being emptied first (O_APPEND, O_RDWR, a write in place):
            // what it holds afterwards depends on what it held, which is read as much as
            // written.
            self.emit(pid, path.clone(), Access::Read, meta);
        }
        let access = if writes {
            Access::Write { created }
        } else {
            Access::Read
        };
        self.emit(pid, path, access, meta);
    }

    /// A FIFO, socket or device was opened: fine for pipes between the command's own
    /// processes (no file-system name) and the harmless devices, untrusted otherwise.
    fn special(&mut self, path: PathBuf, link: Option<&Path>, opened: &fs::Metadata) {
        let kind = opened.file_type();
        // Opened through a name in the file system, or through /proc/PID/fd/N onto a
        // pipe or socket that has no name (one of the command's own, or memo's).
        let named = match link {
            None if path.starts_with("/proc") => fs::read_link(&path)
                .map(|target| paths::is_file_system_path(&target))
                .unwrap_or(false),
            None => true,
            Some(link) => fs::read_link(link)
                .map(|target| paths::is_file_system_path(&target))
                .unwrap_or(false),
        };
        if (kind.is_fifo() || kind.is_socket()) && !named {
            return;
        }
        if kind.is_char_device() && is_harmless_device(opened.rdev()) {
            return;
        }
        let kind = if kind.is_fifo() {
            Special::Fifo
        } else if kind.is_socket() {
            Special::Socket
        } else {
            Special::Device
        };
        self.untrust(Untrusted::SpecialFile { path, kind });
    }

    /// A successful exec: the program, the interpreters the kernel loaded, and whether
    /// the program lost privileges by running traced.
    fn executed(&mut self, pid: pid_t, path: PathBuf) {
        if let Some(privilege) = privilege_of(&path) {
            self.untrust(Untrusted::Privileged {
                program: path.clone(),
                privilege,
            });
        }
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_else(|_| PathBuf::from("/"));
        let interpreters = interpreter::interpreters(&path, &cwd);
        let meta = lstat(&path);
        self.emit(pid, path, Access::Exec, meta);
        for interpreter in interpreters {
            let meta = lstat(&interpreter);
            self.emit(pid, interpreter, Access::Read, meta);
        }
    }
}

enum Looked {
    /// `meta` is the lstat; `target_mode` the mode of what a followed symlink led to.
    Found {
        meta: Meta,
        target_mode: Option<u32>,
    },
    /// ENOENT or ENOTDIR (a dangling symlink followed, too).
    Absent,
    /// Another failure (EACCES on a directory on the way, ELOOP): nothing is known.
    Unknown,
}

/// Looks `path` up as the traced call will: one lstat, and a stat only when it is a
/// symlink to follow.
fn look(path: &Path, follow: bool) -> Looked {
    let link = match fs::symlink_metadata(path) {
        Ok(link) => link,
        Err(error) if is_absence(&error) => return Looked::Absent,
        Err(_) => return Looked::Unknown,
    };
    let meta = meta_of(&link);
    if !(follow && link.file_type().is_symlink()) {
        return Looked::Found {
            meta,
            target_mode: None,
        };
    }
    match fs::metadata(path) {
        Ok(target) => Looked::Found {
            meta,
            target_mode: Some(target.mode()),
        },
        Err(error) if is_absence(&error) => Looked::Absent,
        Err(_) => Looked::Unknown,
    }
}

fn is_read_only(flags: u64) -> bool {
    let writes = libc::O_CREAT | libc::O_TRUNC;
    flags & libc::O_ACCMODE as u64 == libc::O_RDONLY as u64 && flags & writes as u64 == 0
}

fn is_absence(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR)
    )
}

/// /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom, /dev/tty, /dev/ptmx and
/// the pseudo-terminals.
fn is_harmless_device(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    matches!(
        (major, minor),
        (1, 3) | (1, 5) | (1, 7) | (1, 8) | (1, 9) | (5, 0) | (5, 2)
    ) || (136..=143).contains(&major)
}

fn privilege_of(program: &Path) -> Option<Privilege> {
    let meta = fs::metadata(program).ok()?;
    let mode = meta.mode();
    if mode & libc::S_ISUID != 0 {
        return Some(Privilege::Setuid);
    }
    // Setgid without group execute is mandatory locking, not a privilege.
    if mode & libc::S_ISGID != 0 && mode & libc::S_IXGRP != 0 {
        return Some(Privilege::Setgid);
    }
    let name = CString::new(program.as_os_str().as_bytes()).ok()?;
    // SAFETY: both strings are NUL-terminated; a NULL buffer of size 0 asks for the size.
    let size = unsafe {
        libc::getxattr(
            name.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    (size > 0).then_some(Privilege::Capabilities)
}

pub(crate) fn lstat(path: &Path) -> Option<Meta> {
    fs::symlink_metadata(path).ok().map(|meta| meta_of(&meta))
}

fn meta_of(meta: &fs::Metadata) -> Meta {
    Meta {
        dev: meta.dev(),
        ino: meta.ino(),
        mode: meta.mode(),
        size: meta.size(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
    }
}

/// The file-system path a descriptor of the thread is open on.
fn descriptor_path(pid: pid_t, fd: i32) -> Option<PathBuf> {
    let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    paths::is_file_system_path(&target).then_some(target)
}

fn resolve_with(
    pid: pid_t,
    at: At,
    cwds: &mut HashMap<pid_t, PathBuf>,
    named_relative: &mut HashSet<PathBuf>,
) -> Resolved {
    if at.path == 0 {
        // A NULL path names nothing and the kernel fails the call with EFAULT: Rust's
        // standard library probes statx that way before its first real statx.
        return match at.empty_is_dirfd {
            true => descriptor_path(pid, at.dirfd).map_or(Resolved::Nothing, Resolved::Descriptor),
            false => Resolved::Nothing,
        };
    }
    let Some(bytes) = sys::read_string(pid, at.path) else {
        return Resolved::Unreadable;
    };
    if bytes.is_empty() {
        return match at.empty_is_dirfd {
            true => descriptor_path(pid, at.dirfd).map_or(Resolved::Nothing, Resolved::Descriptor),
            false => Resolved::Nothing,
        };
    }
    let path = paths::from_bytes(&bytes);
    if path.is_absolute() {
        let path = paths::join_lexically(Path::new("/"), &path);
        return Resolved::Path(paths::as_seen_by(pid, path));
    }
    let base = if at.dirfd == libc::AT_FDCWD {
        match cwds.get(&pid) {
            Some(cwd) => Some(cwd.clone()),
            None => {
                let cwd = fs::read_link(format!("/proc/{pid}/cwd"))
                    .ok()
                    .filter(|cwd| paths::is_file_system_path(cwd));
                if let Some(cwd) = &cwd {
                    cwds.insert(pid, cwd.clone());
                }
                cwd
            }
        }
    } else {
        descriptor_path(pid, at.dirfd)
    };
    match base {
        Some(base) => {
            let joined = paths::join_lexically(&base, &path);
            named_relative.insert(joined.clone());
            Resolved::Path(joined)
        }
        None => Resolved::Nothing,
    }
}
