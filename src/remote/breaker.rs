//! The circuit breaker: after `TRIP_AFTER` server failures in a row, no remote calls for
//! `OPEN_FOR`, then one probe. Kept in the cache directory (`remote/breaker-<id>`, one
//! per remote URL), so every memo process on the machine shares it and a dead server
//! costs a fleet seconds, not minutes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{read_json_locked, update_json_locked};

pub const TRIP_AFTER: u32 = 3;
pub const OPEN_FOR: Duration = Duration::from_secs(30);

/// Whether a remote call may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    Closed,
    /// The open period is over and this process is the one probe.
    Probe,
    /// Open for this much longer.
    Open(Duration),
}

pub struct Breaker {
    path: PathBuf,
}

/// What the file holds. A missing or damaged file is the default: closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// Server failures in a row.
    failures: u32,
    /// Until when no calls go out (unix ms); 0 when the breaker never tripped.
    open_until_unix_ms: u64,
    /// A process claimed the probe and has not reported yet.
    #[serde(default)]
    probing: bool,
}

/// What the state says about a call at `now`, before anyone claims the probe.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Closed,
    Open(Duration),
    ProbeDue,
}

impl State {
    fn verdict(&self, now: u64) -> Verdict {
        if self.failures < TRIP_AFTER {
            return Verdict::Closed;
        }
        let remaining = self.open_until_unix_ms.saturating_sub(now);
        // No honest open period ends further away than `OPEN_FOR`: a longer one means
        // the clock went back (or the file was edited), and must not keep the server
        // off for good.
        if remaining == 0 || remaining > OPEN_FOR.as_millis() as u64 {
            Verdict::ProbeDue
        } else {
            Verdict::Open(Duration::from_millis(remaining))
        }
    }
}

impl Breaker {
    /// The breaker of the remote `url`, kept under `cache_root`.
    pub fn new(cache_root: &Path, url: &str) -> Breaker {
        let id = Digest::of_bytes(url.as_bytes()).to_hex();
        Breaker {
            path: cache_root
                .join("remote")
                .join(format!("breaker-{}", &id[..16])),
        }
    }

    pub fn allow(&self) -> Allow {
        self.allow_at(now_unix_ms())
    }

    /// The server answered: closes the breaker.
    pub fn success(&self) {
        // Every answered call lands here: write only when there is something to undo.
        if self.read() != State::default() {
            let _ = update_json_locked(&self.path, |state: &mut State, _| {
                *state = State::default();
            });
        }
    }

    /// A server failure. Returns true when this failure tripped (opened) the breaker.
    pub fn failure(&self) -> bool {
        self.failure_at(now_unix_ms())
    }

    fn allow_at(&self, now: u64) -> Allow {
        // The common case (closed, or open with time to run) reads under a shared lock
        // and writes nothing.
        match self.read().verdict(now) {
            Verdict::Closed => return Allow::Closed,
            Verdict::Open(remaining) => return Allow::Open(remaining),
            Verdict::ProbeDue => {}
        }
        // Decide again under the exclusive lock: of the processes that found the period
        // over, the first claims the probe by opening the breaker for another
        // `OPEN_FOR`, so the others see it open while the probe runs (and a probe that
        // dies unreported costs one more period, not the breaker).
        let mut decided = Allow::Probe;
        let _ = update_json_locked(&self.path, |state: &mut State, _| {
            decided = match state.verdict(now) {
                Verdict::Closed => Allow::Closed,
                Verdict::Open(remaining) => Allow::Open(remaining),
                Verdict::ProbeDue => {
                    state.open_until_unix_ms = now + OPEN_FOR.as_millis() as u64;
                    state.probing = true;
                    Allow::Probe
                }
            };
        });
        // The breaker is advice: when its file cannot be written, the call goes ahead.
        decided
    }

    fn failure_at(&self, now: u64) -> bool {
        let mut tripped = false;
        let _ = update_json_locked(&self.path, |state: &mut State, _| {
            state.failures = state.failures.saturating_add(1);
            // The failure that reaches the limit trips it, and so does a failed probe.
            // A later failure of a call that was already out when it tripped keeps it
            // open without counting as another trip.
            if state.failures >= TRIP_AFTER {
                state.open_until_unix_ms = now + OPEN_FOR.as_millis() as u64;
                tripped = state.failures == TRIP_AFTER || state.probing;
                state.probing = false;
            }
        });
        tripped
    }

    /// The state on disk; a missing, unreadable or damaged file reads as closed.
    fn read(&self) -> State {
        read_json_locked(&self.path).unwrap_or_default()
    }

    /// Writes a state, for tests that need one the clock has not reached yet.
    #[cfg(test)]
    pub(crate) fn write_state(&self, failures: u32, open_until_unix_ms: u64) {
        update_json_locked(&self.path, |state: &mut State, _| {
            *state = State {
                failures,
                open_until_unix_ms,
                probing: false,
            };
        })
        .expect("write the breaker state");
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const URL: &str = "https://cache.example.com/memo";
    const OPEN_MS: u64 = OPEN_FOR.as_millis() as u64;

    fn breaker(dir: &tempfile::TempDir) -> Breaker {
        Breaker::new(dir.path(), URL)
    }

    fn tripped(b: &Breaker) {
        for _ in 1..TRIP_AFTER {
            assert!(!b.failure());
        }
        assert!(b.failure());
    }

    #[test]
    fn a_new_breaker_is_closed_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        assert_eq!(b.allow(), Allow::Closed);
        b.success();
        assert!(!dir.path().join("remote").exists());
    }

    #[test]
    fn its_file_is_per_url_in_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        b.failure();
        let expected = format!(
            "breaker-{}",
            &Digest::of_bytes(URL.as_bytes()).to_hex()[..16]
        );
        assert_eq!(b.path, dir.path().join("remote").join(expected));
        assert!(b.path.is_file());
        let mode = std::fs::metadata(dir.path().join("remote"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, crate::fsutil::cache_dir_mode());
    }

    #[test]
    fn three_failures_in_a_row_trip_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.allow(), Allow::Closed);
        assert!(b.failure());
        match b.allow() {
            Allow::Open(remaining) => assert!(remaining <= OPEN_FOR && !remaining.is_zero()),
            other => panic!("expected open, got {other:?}"),
        }
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.allow(), Allow::Closed);
    }

    #[test]
    fn it_stays_open_for_the_whole_period() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        b.write_state(TRIP_AFTER, 1_000_000 + OPEN_MS);
        assert_eq!(b.allow_at(1_000_000), Allow::Open(OPEN_FOR));
        assert_eq!(
            b.allow_at(1_000_000 + OPEN_MS - 1),
            Allow::Open(Duration::from_millis(1))
        );
    }

    #[test]
    fn after_the_period_one_caller_probes_and_the_others_see_it_open() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        let past = now_unix_ms() - 1;
        b.write_state(TRIP_AFTER, past);
        assert_eq!(b.allow(), Allow::Probe);
        // Another process, same file.
        let other = breaker(&dir);
        assert!(matches!(other.allow(), Allow::Open(_)));
        assert!(matches!(b.allow(), Allow::Open(_)));
    }

    #[test]
    fn concurrent_callers_get_exactly_one_probe() {
        let dir = tempfile::tempdir().unwrap();
        breaker(&dir).write_state(TRIP_AFTER, 1);
        let probes: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| breaker(&dir).allow() == Allow::Probe))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(probes, 1);
    }

    #[test]
    fn a_successful_probe_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        tripped(&b);
        b.write_state(TRIP_AFTER, 1);
        assert_eq!(b.allow(), Allow::Probe);
        b.success();
        assert_eq!(b.allow(), Allow::Closed);
        assert_eq!(b.read(), State::default());
    }

    #[test]
    fn a_call_already_out_when_it_tripped_keeps_it_open_without_another_trip() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        for _ in 1..TRIP_AFTER {
            assert!(!b.failure());
        }
        assert!(b.failure());
        assert!(!b.failure());
        assert!(matches!(b.allow(), Allow::Open(_)));
    }

    #[test]
    fn a_failed_probe_trips_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        b.write_state(TRIP_AFTER, 1);
        assert_eq!(b.allow(), Allow::Probe);
        assert!(b.failure());
        assert!(matches!(b.allow(), Allow::Open(_)));
    }

    #[test]
    fn an_open_period_beyond_reach_is_over() {
        // The clock went back, or the file was edited: the server must not stay off.
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        b.write_state(TRIP_AFTER, u64::MAX);
        assert_eq!(b.allow(), Allow::Probe);
    }

    #[test]
    fn a_garbage_or_unreadable_file_reads_as_closed() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        std::fs::create_dir_all(b.path.parent().unwrap()).unwrap();
        for garbage in [&b"\x00\xffnot a record"[..], b"", b"{\"failures\": 99}"] {
            std::fs::write(&b.path, garbage).unwrap();
            assert_eq!(b.allow(), Allow::Closed, "{garbage:?}");
        }
        // A damaged file is replaced by the next update.
        assert!(!b.failure());
        assert_eq!(b.read().failures, 1);
        std::fs::remove_file(&b.path).unwrap();
        // A directory in its place: nothing can be read or written there.
        std::fs::create_dir(&b.path).unwrap();
        std::fs::write(b.path.join("keep"), b"").unwrap();
        assert_eq!(b.allow(), Allow::Closed);
        for _ in 0..TRIP_AFTER {
            assert!(!b.failure(), "a failure that cannot be written is ignored");
        }
        assert!(b.path.is_dir());
        assert_eq!(b.allow(), Allow::Closed);
        b.success();
    }

    #[test]
    fn separate_urls_have_separate_breakers() {
        let dir = tempfile::tempdir().unwrap();
        let b = breaker(&dir);
        let other = Breaker::new(dir.path(), "s3://bucket/prefix");
        assert_ne!(b.path, other.path);
        tripped(&b);
        assert!(matches!(b.allow(), Allow::Open(_)));
        assert_eq!(other.allow(), Allow::Closed);
    }
}
