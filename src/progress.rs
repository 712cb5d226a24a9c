//! Progress bars for memo's own long phases: hashing inputs, storing and restoring
//! outputs, gc. Owns when a bar is drawn and how it looks; it knows nothing of what
//! the bytes are.
//!
//! A phase too small to last a second costs nothing: no system call, no clock, no
//! thread. A large one is measured, and its bar is drawn on stderr only if stderr is a
//! terminal and the phase has already run for `SHOW_AFTER`; it is cleared when done.
//!
//! `MEMO_PROGRESS_AFTER_MS` overrides `SHOW_AFTER`: a hook for the end-to-end tests,
//! whose phases must show a bar however fast the machine hashes.
//!
//! A large phase also makes sure memo's signal handlers are in place, so that Ctrl-C
//! ends it at once with 128+N, as it does after the command (`capture::signals`).
//! A small one keeps the default disposition, which ends memo at once all the same.

use std::io::{self, IsTerminal, Read};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Below this, a phase ends well within a second at disk and hashing speeds.
pub const SMALL: u64 = 32 << 20;

/// How long a phase runs silently before its bar appears.
const SHOW_AFTER: Duration = Duration::from_secs(1);

fn stderr_is_terminal() -> bool {
    static IS_TERMINAL: OnceLock<bool> = OnceLock::new();
    *IS_TERMINAL.get_or_init(|| io::stderr().is_terminal())
}

/// A bar in bytes for one phase; inert for small work or without a terminal.
pub struct Progress {
    bar: Option<Shown>,
}

struct Shown {
    bar: ProgressBar,
    show_after: Duration,
    started: Instant,
    visible: bool,
}

impl Progress {
    /// A bar for `total` bytes of work, labelled `label` (`hashing`, `storing`, ...).
    pub fn new(total: u64, label: &'static str) -> Progress {
        if total < SMALL {
            return Progress { bar: None };
        }
        static SIGNALS: std::sync::Once = std::sync::Once::new();
        SIGNALS.call_once(crate::capture::signals::install);
        if !stderr_is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template(
                "memo: {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(label);
        let show_after = std::env::var("MEMO_PROGRESS_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(SHOW_AFTER, Duration::from_millis);
        Progress {
            bar: Some(Shown {
                bar,
                show_after,
                started: Instant::now(),
                visible: false,
            }),
        }
    }

    /// Whether anything is measured (a large phase on a terminal).
    pub fn is_active(&self) -> bool {
        self.bar.is_some()
    }

    /// Counts `bytes` more done; draws the bar once the phase has run `SHOW_AFTER`.
    pub fn advance(&mut self, bytes: u64) {
        let Some(shown) = &mut self.bar else { return };
        shown.bar.inc(bytes);
        if !shown.visible && shown.started.elapsed() >= shown.show_after {
            shown.visible = true;
            shown.bar.set_draw_target(ProgressDrawTarget::stderr());
            shown.bar.tick();
        }
    }

    /// Wraps `reader` so that every byte read advances this bar.
    pub fn reader<R: Read>(&mut self, reader: R) -> Measured<'_, R> {
        Measured {
            inner: reader,
            progress: self,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(shown) = &self.bar {
            shown.bar.finish_and_clear();
        }
    }
}

/// A reader that advances a `Progress` as it is read.
pub struct Measured<'a, R> {
    inner: R,
    progress: &'a mut Progress,
}

impl<R: Read> Read for Measured<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_work_is_never_measured() {
        let mut progress = Progress::new(SMALL - 1, "hashing");
        assert!(!progress.is_active());
        let mut read = Vec::new();
        progress.reader(&b"abc"[..]).read_to_end(&mut read).unwrap();
        assert_eq!(read, b"abc");
    }
}
