//! `memo explain`: says whether `memo run` would hit, and on a miss exactly what differs
//! from the closest stored entry for the same command (argv and cwd). Runs nothing.
//!
//! Owns the comparison of two key materials (`differences`, pure) and the search for
//! candidates among the usage records. Names environment variables, never their values.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bytes::ByteString;
use crate::cache::{Cache, Warner};
use crate::config::format_duration;
use crate::digest::Digest;
use crate::exit::Fatal;
use crate::index::{usage, Entry};
use crate::key::{self, KeyMaterial, StreamMode};
use crate::run::{self, Freshness, RunRequest};

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
    let (before, after) = (vars(stored), vars(now));
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
        out.push(match now.streams {
            StreamMode::Merged => "stdout and stderr were recorded separately and are now the same pipe (as with 2>&1)",
            StreamMode::Separate => "stdout and stderr were recorded as one pipe (as with 2>&1) and are now separate",
        }.into());
    }
    out
}

/// A path, name or argument of a key material, shown escaped.
fn shown(bytes: &ByteString) -> String {
    key::escape_control(&bytes.display())
}

/// Runs `memo explain`; exits 0 for a hit, 1 for a miss.
pub fn explain(req: RunRequest) -> Result<i32, Fatal> {
    let warner = Warner::default();
    let prepared = run::prepare(&req, &warner)?;
    let key = prepared.key;
    let command = key::escape_control(&key::command_line(&prepared.material));
    let Some(cache) = &prepared.cache else {
        crate::outln!("miss {}: the cache is unavailable", key.short());
        return Ok(1);
    };
    cache.count_digest_growth();
    if let Some(entry) =
        run::read_entry(cache, &key, &warner).filter(|e| e.material == prepared.material)
    {
        let ran = format_duration(Duration::from_millis(entry.duration_ms));
        match run::freshness(&entry, &req) {
            Freshness::Fresh => {}
            Freshness::Stale(late) => {
                crate::outln!(
                    "hit {} (stale): expired {} ago; replayed while it refreshes in the background",
                    key.short(),
                    format_duration(late)
                );
                return Ok(0);
            }
            Freshness::Expired(late) => {
                crate::outln!(
                    "miss {}: the stored result expired {} ago (--ttl {})",
                    key.short(),
                    format_duration(late),
                    format_duration(req.settings.ttl.value.unwrap_or_default())
                );
                return Ok(1);
            }
        }
        if entry.exit_code != 0 && !req.settings.cache_failures.value {
            crate::outln!(
                "miss {}: the stored run exited {}, which is replayed only with --cache-failures",
                key.short(),
                entry.exit_code
            );
            return Ok(1);
        }
        crate::outln!(
            "hit {}: stored {} ago, ran {ran}, exit code {}",
            key.short(),
            format_duration(run::age_of(&entry)),
            entry.exit_code
        );
        return Ok(0);
    }
    let Some((closest_key, closest, diffs)) = closest_entry(cache, &prepared.material) else {
        crate::outln!("miss {}: `{command}` was never stored here", key.short());
        return Ok(1);
    };
    let age = format_duration(run::age_of(&closest));
    crate::outln!(
        "miss {}: differs from entry {} (stored {age} ago) in:",
        key.short(),
        closest_key.short()
    );
    for diff in diffs {
        crate::outln!("  {diff}");
    }
    Ok(1)
}

/// Among the stored entries of the same command, the one with the fewest differences
/// (the newest on a tie).
fn closest_entry(cache: &Cache, now: &KeyMaterial) -> Option<(Digest, Entry, Vec<String>)> {
    let id = key::command_id(now);
    let quiet = Warner::default();
    let mut best: Option<(Digest, Entry, Vec<String>)> = None;
    for (candidate, record) in usage::all(cache.root()) {
        if record.command_id != Some(id) {
            continue;
        }
        let Some(entry) = run::read_entry(cache, &candidate, &quiet) else {
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
