//! What changed: the comparison of two key materials (`differences`, pure), in words a
//! user knows, and the search among the usage records for the closest stored entry of
//! the same command (argv and cwd). `memo explain` prints it; `memo run -v` says it in
//! one line on a miss. Names environment variables, never their values.

use std::collections::BTreeMap;

use crate::bytes::ByteString;
use crate::cache::Cache;
use crate::digest::Digest;
use crate::index::Entry;
use crate::key::{self, KeyMaterial, StreamMode};
use crate::store::Store;

/// What differs between a stored material and the current one, one line per change.
pub fn differences(stored: &KeyMaterial, now: &KeyMaterial) -> Vec<String> {
    let mut out = Vec::new();
    if stored.version != now.version {
        out.push(format!(
            "memo's key format changed (version {} -> {})",
            stored.version, now.version
        ));
    }
    if stored.platform != now.platform {
        out.push(format!(
            "platform changed: {} -> {}",
            key::escape_control(&stored.platform),
            key::escape_control(&now.platform)
        ));
    }
    if stored.argv != now.argv {
        out.push("command line changed".into());
    }
    if stored.cwd != now.cwd {
        out.push("working directory changed".into());
    }
    if stored.executable != now.executable {
        out.push(format!(
            "executable changed: {}",
            now.argv.first().map(shown).unwrap_or_default()
        ));
    }
    let files = |m: &KeyMaterial| -> BTreeMap<ByteString, _> {
        m.inputs
            .iter()
            .map(|i| (i.path.clone(), (i.kind, i.executable, i.digest)))
            .collect()
    };
    let (before, after) = (files(stored), files(now));
    for (path, state) in &after {
        match before.get(path) {
            None => out.push(format!("input appeared: {}", shown(path))),
            Some(old) if old.2 != state.2 || old.0 != state.0 => {
                out.push(format!("input changed: {}", shown(path)))
            }
            Some(old) if old.1 != state.1 => {
                out.push(format!("input exec bit changed: {}", shown(path)))
            }
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.push(format!("input vanished: {}", shown(path)));
    }
    let vars = |m: &KeyMaterial| -> BTreeMap<ByteString, Option<Digest>> {
        m.env.iter().map(|v| (v.name.clone(), v.value)).collect()
    };
    let (mut before, mut after) = (vars(stored), vars(now));
    let terminal = |m: &KeyMaterial| matches!(m.streams, StreamMode::Terminal { .. });
    if terminal(stored) != terminal(now) {
        // TERM joins the key with the terminal: the terminal's change says it all.
        let term = ByteString::from(std::ffi::OsStr::new("TERM"));
        before.remove(&term);
        after.remove(&term);
    }
    for (name, value) in &after {
        match before.get(name) {
            None => out.push(format!(
                "environment variable added to the key: {}",
                shown(name)
            )),
            Some(old) if old != value => {
                out.push(format!("environment variable changed: {}", shown(name)))
            }
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        out.push(format!(
            "environment variable no longer in the key: {}",
            shown(name)
        ));
    }
    if stored.outputs != now.outputs {
        out.push("declared outputs changed".into());
    }
    if stored.stdin != now.stdin {
        out.push(match (&stored.stdin, &now.stdin) {
            (Some(_), Some(_)) => "standard input changed".into(),
            _ => "--stdin added or removed".into(),
        });
    }
    if stored.salt != now.salt {
        out.push("salt changed".into());
    }
    match (&stored.key_command, &now.key_command) {
        (Some(a), Some(b)) if a.command == b.command && a.output != b.output => {
            out.push(format!("key command output changed: {}", shown(&b.command)))
        }
        (a, b) if a != b => out.push("key command changed".into()),
        _ => {}
    }
    if stored.streams != now.streams {
        out.push(streams_change(stored.streams, now.streams));
    }
    out
}

/// How the command's stdout and stderr were connected then and now, in words.
fn streams_change(then: StreamMode, now: StreamMode) -> String {
    use StreamMode::*;
    match (then, now) {
        (Terminal { columns: a }, Terminal { columns: b }) => {
            format!("it was recorded on a terminal {a} columns wide, and the terminal is now {b}")
        }
        (Terminal { .. }, _) => {
            "it was recorded on a terminal (--tty) and now writes to pipes or files".into()
        }
        (_, Terminal { .. }) => {
            "it was recorded writing to pipes or files and now runs on a terminal (--tty)".into()
        }
        (_, Merged) => {
            "stdout and stderr were recorded separately and are now the same pipe (as with 2>&1)"
                .into()
        }
        (_, Separate) => {
            "stdout and stderr were recorded as one pipe (as with 2>&1) and are now separate".into()
        }
    }
}

/// A path, name or argument of a key material, shown escaped.
fn shown(bytes: &ByteString) -> String {
    key::escape_control(&bytes.display())
}

/// Among the stored entries of the same command, the one with the fewest differences
/// (the newest on a tie).
pub fn closest_entry(cache: &Cache, now: &KeyMaterial) -> Option<(Digest, Entry, Vec<String>)> {
    let id = key::command_id(now);
    let mut best: Option<(Digest, Entry, Vec<String>)> = None;
    for (candidate, record) in cache.usages() {
        if record.command_id != Some(id) {
            continue;
        }
        // Read quietly: a damaged candidate is simply not a candidate.
        let Some(entry) = cache
            .store
            .get_entry(&candidate)
            .ok()
            .flatten()
            .and_then(|bytes| Entry::decode(&bytes).ok())
        else {
            continue;
        };
        let diffs = differences(&entry.material, now);
        let better = match &best {
            None => true,
            Some((_, b, d)) => {
                (diffs.len(), std::cmp::Reverse(entry.created_unix_ms))
                    < (d.len(), std::cmp::Reverse(b.created_unix_ms))
            }
        };
        if better {
            best = Some((candidate, entry, diffs));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{EnvVar, FileKind, InputFile, KeyCommand, StreamMode, KEY_VERSION};

    fn material() -> KeyMaterial {
        KeyMaterial {
            version: KEY_VERSION,
            platform: "linux-x86_64".into(),
            argv: vec!["./tool".into()],
            cwd: Some("/w".into()),
            env: vec![EnvVar::new(b"MODE", Some(b"fast"))],
            executable: Digest::of_bytes(b"tool"),
            inputs: vec![InputFile {
                path: "a.csv".into(),
                kind: FileKind::File,
                executable: false,
                digest: Digest::of_bytes(b"a"),
            }],
            outputs: vec![],
            stdin: None,
            salt: None,
            key_command: Some(KeyCommand {
                command: "git rev-parse HEAD".into(),
                output: Digest::of_bytes(b"1"),
            }),
            streams: StreamMode::Separate,
            traced: None,
        }
    }

    #[test]
    fn identical_materials_have_no_differences() {
        assert!(differences(&material(), &material()).is_empty());
    }

    #[test]
    fn each_difference_is_named() {
        let stored = material();
        let mut now = material();
        now.inputs[0].digest = Digest::of_bytes(b"b");
        now.inputs.push(InputFile {
            path: "new.csv".into(),
            kind: FileKind::File,
            executable: false,
            digest: Digest::of_bytes(b"n"),
        });
        now.env[0] = EnvVar::new(b"MODE", Some(b"slow"));
        now.executable = Digest::of_bytes(b"tool v2");
        now.salt = Some("2".into());
        now.key_command.as_mut().unwrap().output = Digest::of_bytes(b"2");
        let diffs = differences(&stored, &now);
        for expected in [
            "input changed: a.csv",
            "input appeared: new.csv",
            "environment variable changed: MODE",
            "executable changed: ./tool",
            "salt changed",
            "key command output changed: git rev-parse HEAD",
        ] {
            assert!(
                diffs.iter().any(|d| d == expected),
                "{expected:?} not in {diffs:?}"
            );
        }
        assert_eq!(diffs.len(), 6, "{diffs:?}");
        let vanished = differences(&now, &stored);
        assert!(vanished.iter().any(|d| d == "input vanished: new.csv"));
    }

    #[test]
    fn environment_values_never_appear() {
        let stored = material();
        let mut now = material();
        now.env[0] = EnvVar::new(b"MODE", Some(b"secret-value"));
        let text = differences(&stored, &now).join("\n");
        assert!(!text.contains("secret") && !text.contains("fast"));
    }
}
