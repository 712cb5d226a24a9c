//! Thin, safe wrappers over the raw ptrace, wait and memory-reading calls the tracer
//! makes, with the kernel's status words decoded. libc rather than a wrapper crate:
//! real-time signals (glibc's SIGSETXID, SIGCANCEL) must decode like any other, and a
//! wrapper that rejects an unknown signal number would lose a stop and hang the tracee.

use std::io;

use libc::{c_int, c_long, c_void, pid_t};

pub(crate) const OPTIONS: c_int = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_EXITKILL;

/// What `waitpid` reported for one traced thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Exited(i32),
    Signaled(i32),
    /// A signal-delivery stop (or a new child's first stop, or a group stop).
    Signal(i32),
    /// A syscall-exit stop (PTRACE_SYSCALL with TRACESYSGOOD).
    SyscallExit,
    /// A PTRACE_EVENT_* stop.
    Event(i32),
}

pub(crate) fn decode_status(status: c_int) -> Status {
    if libc::WIFEXITED(status) {
        Status::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Status::Signaled(libc::WTERMSIG(status))
    } else {
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        if signal == libc::SIGTRAP | 0x80 {
            Status::SyscallExit
        } else if event != 0 {
            Status::Event(event)
        } else {
            Status::Signal(signal)
        }
    }
}

/// `waitpid(pid, __WALL | __WNOTHREAD | extra)`: __WNOTHREAD so that the tracer never
/// reaps a child another of memo's threads started and waits for. `Ok(None)` with
/// WNOHANG when nothing is ready.
pub(crate) fn wait(pid: pid_t, extra: c_int) -> io::Result<Option<(pid_t, Status)>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let got =
            unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::__WNOTHREAD | extra) };
        if got > 0 {
            return Ok(Some((got, decode_status(status))));
        }
        if got == 0 {
            return Ok(None);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// A ptrace request, as the C library declares it: unsigned in glibc, signed in musl.
#[cfg(target_env = "musl")]
type Request = libc::c_int;
#[cfg(not(target_env = "musl"))]
type Request = libc::c_uint;

fn ptrace(request: Request, pid: pid_t, addr: usize, data: usize) -> io::Result<c_long> {
    // SAFETY: every request made through here passes either plain integers or, for the
    // requests that write, a pointer to a live buffer of the size the request expects.
    let result = unsafe { libc::ptrace(request, pid, addr as *mut c_void, data as *mut c_void) };
    if result == -1 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(0) {
            return Err(error);
        }
    }
    Ok(result)
}

pub(crate) fn set_options(pid: pid_t) -> io::Result<()> {
    ptrace(libc::PTRACE_SETOPTIONS, pid, 0, OPTIONS as usize).map(drop)
}

/// Resume; the error (the thread died meanwhile: ESRCH) is of no use to the caller,
/// whose next wait reports the death.
pub(crate) fn resume(pid: pid_t, signal: i32) {
    let _ = ptrace(libc::PTRACE_CONT, pid, 0, signal as usize);
}

/// Resume until the current call's exit.
pub(crate) fn resume_to_exit(pid: pid_t) {
    let _ = ptrace(libc::PTRACE_SYSCALL, pid, 0, 0);
}

pub(crate) fn detach(pid: pid_t, signal: i32) {
    let _ = ptrace(libc::PTRACE_DETACH, pid, 0, signal as usize);
}

pub(crate) fn event_message(pid: pid_t) -> io::Result<u64> {
    let mut message: libc::c_ulong = 0;
    ptrace(
        libc::PTRACE_GETEVENTMSG,
        pid,
        0,
        &mut message as *mut _ as usize,
    )?;
    Ok(message as u64)
}

/// struct ptrace_syscall_info, with the entry/seccomp/exit union laid out flat.
#[repr(C)]
#[derive(Default)]
struct RawSyscallInfo {
    op: u8,
    pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    /// seccomp and entry: nr, args[6]; exit: rval, is_error (u8).
    data: [u64; 7],
    ret_data: u32,
    pad2: u32,
}

/// Linux 5.3; libc defines it for glibc targets only.
const PTRACE_GET_SYSCALL_INFO: Request = 0x420e;

const OP_EXIT: u8 = 2;
const OP_SECCOMP: u8 = 3;

pub(crate) struct SeccompCall {
    pub arch: u32,
    pub nr: u64,
    pub args: [u64; 6],
}

fn syscall_info(pid: pid_t) -> io::Result<RawSyscallInfo> {
    let mut info = RawSyscallInfo::default();
    ptrace(
        PTRACE_GET_SYSCALL_INFO,
        pid,
        std::mem::size_of::<RawSyscallInfo>(),
        &mut info as *mut _ as usize,
    )?;
    Ok(info)
}

/// The call a seccomp stop is for.
pub(crate) fn seccomp_call(pid: pid_t) -> Option<SeccompCall> {
    let info = syscall_info(pid).ok()?;
    if info.op != OP_SECCOMP {
        return None;
    }
    let mut args = [0; 6];
    args.copy_from_slice(&info.data[1..7]);
    Some(SeccompCall {
        arch: info.arch,
        nr: info.data[0],
        args,
    })
}

/// The result of the call a syscall-exit stop is for: `Ok(value)` or `Err(errno)`.
pub(crate) fn syscall_result(pid: pid_t) -> Option<Result<i64, i32>> {
    let info = syscall_info(pid).ok()?;
    if info.op != OP_EXIT {
        return None;
    }
    let value = info.data[0] as i64;
    let is_error = info.data[1] as u8 != 0;
    Some(if is_error {
        Err((-value) as i32)
    } else {
        Ok(value)
    })
}

/// Makes the call the thread is stopped at (a seccomp stop) fail with ENOSYS without
/// running: the call number becomes -1 (on x86_64 the return register already holds
/// -ENOSYS at entry; on aarch64 it is set here). Only x86_64 is tested.
pub(crate) fn skip_call(pid: pid_t) -> io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        let orig_rax = std::mem::offset_of!(libc::user_regs_struct, orig_rax);
        ptrace(libc::PTRACE_POKEUSER, pid, orig_rax, usize::MAX).map(drop)
    }
    #[cfg(target_arch = "aarch64")]
    {
        // arm64 keeps x0 (the first argument) on a skipped call: set it to -ENOSYS
        // first (see el0_svc_common in arch/arm64/kernel/syscall.c).
        const NT_PRSTATUS: usize = 1;
        const NT_ARM_SYSTEM_CALL: usize = 0x404;
        // SAFETY: a plain-integer struct, all zeros is a valid value.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: &mut regs as *mut _ as *mut c_void,
            iov_len: std::mem::size_of::<libc::user_regs_struct>(),
        };
        ptrace(libc::PTRACE_GETREGSET, pid, NT_PRSTATUS, &mut iov as *mut _ as usize)?;
        regs.regs[0] = (-(libc::ENOSYS as i64)) as u64;
        ptrace(libc::PTRACE_SETREGSET, pid, NT_PRSTATUS, &mut iov as *mut _ as usize)?;
        let mut nr: c_int = -1;
        let mut iov = libc::iovec {
            iov_base: &mut nr as *mut _ as *mut c_void,
            iov_len: std::mem::size_of::<c_int>(),
        };
        ptrace(libc::PTRACE_SETREGSET, pid, NT_ARM_SYSTEM_CALL, &mut iov as *mut _ as usize).map(drop)
    }
}

const PATH_MAX: usize = 4096;
const PAGE: usize = 4096;

/// The NUL-terminated string at `address` in the thread's memory (without the NUL), or
/// `None` when it cannot be read or is longer than PATH_MAX.
pub(crate) fn read_string(pid: pid_t, address: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = address as usize;
    while out.len() <= PATH_MAX {
        // Never cross a page in one read: the next page may be unmapped.
        let chunk = PAGE - at % PAGE;
        let mut buf = vec![0u8; chunk];
        let got = read_memory(pid, at, &mut buf)?;
        let buf = &buf[..got];
        if let Some(end) = buf.iter().position(|b| *b == 0) {
            out.extend_from_slice(&buf[..end]);
            return Some(out);
        }
        out.extend_from_slice(buf);
        at += got;
    }
    None
}

/// Reads `buf.len()` bytes (or fewer at the end of a mapping); process_vm_readv, with
/// PTRACE_PEEKDATA where that is refused (some sandboxes deny it).
pub(crate) fn read_memory(pid: pid_t, address: usize, buf: &mut [u8]) -> Option<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`, which outlives the call.
    let got = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if got > 0 {
        return Some(got as usize);
    }
    let word = std::mem::size_of::<c_long>();
    let mut done = 0;
    while done < buf.len() {
        let value = ptrace(libc::PTRACE_PEEKDATA, pid, address + done, 0).ok()?;
        let bytes = value.to_ne_bytes();
        let take = word.min(buf.len() - done);
        buf[done..done + take].copy_from_slice(&bytes[..take]);
        done += take;
    }
    Some(done)
}

pub(crate) fn read_u64(pid: pid_t, address: u64) -> Option<u64> {
    let mut buf = [0u8; 8];
    (read_memory(pid, address as usize, &mut buf)? == 8).then(|| u64::from_ne_bytes(buf))
}
