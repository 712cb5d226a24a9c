//! The pseudo-terminal of `--tty`: the command's stdout and stderr are its one slave side,
//! so the command sees a terminal (colours, line buffering) while memo reads and records
//! everything it writes from the master side.
//!
//! The command stays in memo's process group and keeps memo's controlling terminal, so a
//! Ctrl-C or Ctrl-Z at the user's terminal reaches it as it would without memo.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Both sides of a new pseudo-terminal, close-on-exec.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

fn check(status: libc::c_int) -> io::Result<libc::c_int> {
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(status)
    }
}

/// Opens a pseudo-terminal `columns` wide and `rows` high.
pub fn open(columns: u16, rows: u16) -> io::Result<Pty> {
    // SAFETY: plain system calls on descriptors owned here; ptsname_r writes at most
    // `name.len()` bytes, NUL included.
    unsafe {
        let master = check(libc::posix_openpt(
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let master = OwnedFd::from_raw_fd(master);
        check(libc::grantpt(master.as_raw_fd()))?;
        check(libc::unlockpt(master.as_raw_fd()))?;
        let mut name = [0 as libc::c_char; 128];
        let status = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if status != 0 {
            return Err(io::Error::from_raw_os_error(status));
        }
        let path = CStr::from_ptr(name.as_ptr());
        let slave = check(libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        ))?;
        let slave = OwnedFd::from_raw_fd(slave);
        let size = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        check(libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size))?;
        // No "\n" to "\r\n" here: memo's own terminal does that when the bytes reach it,
        // on the run and on every replay, so the recording holds what the command wrote.
        let mut modes: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut modes) == 0 {
            modes.c_oflag &= !libc::ONLCR;
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &modes);
        }
        Ok(Pty { master, slave })
    }
}

/// The size (columns, rows) of the terminal on `fd`, if it is one.
fn size_of(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: isatty and TIOCGWINSZ on a descriptor; the ioctl fills one winsize.
    unsafe {
        if libc::isatty(fd) != 1 {
            return None;
        }
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) != 0 {
            return Some((0, 0));
        }
        Some((size.ws_col, size.ws_row))
    }
}

/// The size of memo's terminal when both its stdout and its stderr are a terminal:
/// `--tty` applies only then.
pub fn terminal_size() -> Option<(u16, u16)> {
    let out = size_of(1)?;
    size_of(2)?;
    Some(out)
}

/// How many rows the command's terminal gets: memo's own, else the usual 24. Rows are
/// not part of the key (output rarely depends on them); columns are.
pub fn rows() -> u16 {
    match terminal_size() {
        Some((_, rows)) if rows > 0 => rows,
        _ => 24,
    }
}
