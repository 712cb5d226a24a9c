//! memo's own standard output, as the management commands write it (`ls`, `stats`, `log`,
//! `config`, `explain`, `gc`): a reader that went away (`memo ls | head -1`) ends memo
//! quietly with exit 0, as ripgrep does, instead of a panic from `println!`.

use std::fmt;
use std::io::{self, Write};

/// Writes to stdout; on a broken pipe exits 0 at once, on any other failure exits 125
/// with one line on stderr.
pub fn print(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("memo: cannot write to stdout: {e}");
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
