//! Telling a hit from a miss when the command's files are replayed too (`--trace`
//! restores a counter file as an output): the command prints the wall clock first, and a
//! stamp older than the call is a replay.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{stderr, stdout, TestEnv};

pub const NOT_CACHED: &str = "memo: not cached (--trace): ";

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Writes `./tool`: a shell script that prints a stamp (the wall clock in nanoseconds)
/// on its first line, then runs `body`.
pub fn stamped_tool(env: &TestEnv, body: &str) {
    env.script("tool", &format!("date +%s%N\n{body}\n"));
}

/// One call of memo on a command that prints a stamp first.
pub struct Call {
    pub out: Output,
    /// When memo was started.
    pub started_ns: u128,
}

impl Call {
    /// Whether the command really ran in this call (a miss): its stamp is newer than the
    /// call. A hit replays the stamp of the run it recorded.
    #[track_caller]
    pub fn ran(&self) -> bool {
        let text = stdout(&self.out);
        let stamp: u128 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no stamp on the first line of stdout; exit status {:?}\nstdout: {text}\nstderr: {}",
                    self.out.status,
                    stderr(&self.out)
                )
            });
        stamp >= self.started_ns
    }

    /// What the command printed after its stamp.
    pub fn printed(&self) -> String {
        let text = stdout(&self.out);
        text.split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_string())
    }

    pub fn stderr(&self) -> String {
        stderr(&self.out)
    }

    /// The reason of the one `memo: not cached (--trace): ` line, if there is one.
    #[track_caller]
    pub fn not_cached_reason(&self) -> Option<String> {
        let err = self.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with(NOT_CACHED)).collect();
        assert!(lines.len() <= 1, "more than one not-cached line: {err}");
        lines.first().map(|l| l[NOT_CACHED.len()..].to_string())
    }
}

/// Runs the prepared memo command (its program may be another one that starts memo).
pub fn call(mut cmd: Command) -> Call {
    let started_ns = now_ns();
    let out = cmd.output().unwrap();
    Call { out, started_ns }
}
