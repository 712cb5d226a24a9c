//! memo's own lines on its standard output and error. On stdout, as the management
//! commands write it (`ls`, `stats`, `log`, `config`, `explain`, `gc`), a reader that
//! went away (`memo ls | head -1`) ends memo quietly with exit 0, as ripgrep does,
//! instead of a panic from `println!`. On stderr, a failure is ignored: memo's messages
//! must never stop the command or change its exit code.

use std::fmt::{self, Display};
use std::io::{self, Write};

/// Writes to stdout; on a broken pipe exits 0 at once, on any other failure exits 125
/// with one line on stderr.
pub fn print(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        note(format_args!("memo: cannot write to stdout: {e}"));
        std::process::exit(crate::exit::Code::Failure as i32);
    }
}

/// `println!` for memo's own output (see `console::print`).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::console::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes one line of memo's own to stderr, ignoring a failure (the reader went away, a
/// full disk).
pub fn note(line: impl Display) {
    let _ = writeln!(io::stderr(), "{line}");
}

static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a cache warning unless one was printed already by this process: one failure
/// tends to cause a cascade, and the user needs to hear about it once.
pub fn warn_once(message: impl Display) {
    if !WARNED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        note(format_args!("memo: warning: {message}"));
    }
}
