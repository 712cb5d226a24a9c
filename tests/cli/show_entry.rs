//! Seeing what is cached: `memo show KEY`, what `memo ls` tells apart, commands with
//! control characters shown escaped, and the commands that look never creating a cache.

use std::fs;
use std::path::PathBuf;

use crate::support::*;

/// The key of the only cached result.
#[track_caller]
fn only_key(env: &TestEnv) -> String {
    let listing = env.listing();
    assert_eq!(listing.len(), 1, "{listing:?}");
    listing[0]["key"].as_str().unwrap().to_string()
}

#[track_caller]
fn show_json(env: &TestEnv, key: &str) -> serde_json::Value {
    let out = env.run(["show", key, "--json"]);
    assert_success(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn show_prints_what_ran_what_the_key_holds_and_what_it_left() {
    let env = TestEnv::new();
    env.write("data.csv", "a,b\n1,2\n");
    env.tool("sleep 0.1; echo out; echo err >&2; printf 12345 > report.txt");
    let out = env
        .memo(run_tool(&[
            "-i",
            "data.csv",
            "-o",
            "report.txt",
            "-e",
            "SECRET_TOKEN",
            "--salt",
            "v2",
            "--key-cmd",
            "echo rev1",
        ]))
        .env("SECRET_TOKEN", "hunter2-value")
        .output()
        .unwrap();
    assert_success(&out);
    let key = only_key(&env);
    let out = env.run(["show", &key[..6]]);
    assert_success(&out);
    let text = stdout(&out);
    let line = |name: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in {text}"))
            .to_string()
    };
    assert!(line("key").contains(&key), "{text}");
    assert!(line("command").ends_with("./tool"), "{text}");
    assert!(
        line("directory").contains(env.work().to_str().unwrap()),
        "{text}"
    );
    assert!(line("stored").contains("UTC"), "{text}");
    assert!(line("exit code").ends_with(" 0"), "{text}");
    assert!(line("freshness").contains("never expires"), "{text}");
    assert!(line("salt").ends_with("yes"), "{text}");
    assert!(line("key command").ends_with("yes"), "{text}");
    assert!(line("stdin").contains("not keyed"), "{text}");
    assert!(line("streams").contains("separate"), "{text}");
    assert!(line("environment").ends_with("SECRET_TOKEN"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "an environment value shown: {text}"
    );
    let digest = sha256_hex(b"a,b\n1,2\n");
    let input = line("  file");
    assert!(
        input.contains(&digest[..12]) && input.ends_with("data.csv"),
        "{text}"
    );
    let output = text.lines().find(|l| l.ends_with("report.txt")).unwrap();
    assert!(output.contains("5 B"), "{text}");

    let json = show_json(&env, &key[..8]);
    assert_eq!(json["key"], key);
    assert_eq!(json["command"], "./tool");
    assert_eq!(json["argv"], serde_json::json!(["./tool"]));
    assert_eq!(json["cwd"], env.work().to_str().unwrap());
    assert_eq!(json["exit_code"], 0);
    assert!(json["duration_seconds"].as_f64().unwrap() >= 0.1, "{json}");
    assert!(json["size"].as_u64().unwrap() > 0, "{json}");
    assert!(json["created_ms"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(json["freshness"], "fresh");
    assert_eq!(json["ttl_seconds"], serde_json::Value::Null);
    assert_eq!(json["env"], serde_json::json!(["SECRET_TOKEN"]));
    assert!(!json.to_string().contains("hunter2"), "{json}");
    assert_eq!(json["salt"], true);
    assert_eq!(json["key_command"], true);
    assert_eq!(json["stdin_keyed"], false);
    assert_eq!(
        json["inputs"],
        serde_json::json!([{"path": "data.csv", "kind": "file", "executable": false, "digest": digest}])
    );
    assert_eq!(
        json["outputs"],
        serde_json::json!([{"path": "report.txt", "kind": "file", "files": 1, "size": 5}])
    );
    assert_eq!(
        json["streams"],
        serde_json::json!({"mode": "separate", "stdout_size": 4, "stderr_size": 4})
    );
}

#[test]
fn show_without_salt_key_command_or_env_says_so_and_counts_hits() {
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run_with_stdin(["run", "--stdin", "--", "./tool"], b"input");
    env.run_with_stdin(["run", "--stdin", "--", "./tool"], b"input");
    assert_eq!(env.count(), 1);
    let key = only_key(&env);
    let text = stdout(&env.run(["show", &key]));
    assert!(text.contains("\nsalt         no\n"), "{text}");
    assert!(text.contains("\nkey command  no\n"), "{text}");
    assert!(text.contains("\nenvironment  none\n"), "{text}");
    assert!(text.contains("\nstdin        keyed"), "{text}");
    assert!(text.contains("\nhits         1 "), "{text}");
    let json = show_json(&env, &key);
    assert_eq!(json["salt"], false);
    assert_eq!(json["key_command"], false);
    assert_eq!(json["stdin_keyed"], true);
    assert_eq!(json["hits"], 1);
    assert_eq!(json["inputs"], serde_json::json!([]));
}

#[test]
fn show_stdout_and_stderr_print_the_recorded_bytes_exactly() {
    let env = TestEnv::with_raw_objects();
    // Big enough to be stored as an object rather than inside the entry, with bytes
    // that are not text and no final newline.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    env.write("big.bin", &big);
    env.tool("cat big.bin; printf 'warn\\000ing' >&2");
    assert_success(&env.run(run_tool(&[])));
    let key = only_key(&env);
    let out = env.run(["show", &key[..5], "--stdout"]);
    assert_success(&out);
    assert_eq!(out.stdout, big);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let out = env.run(["show", &key[..5], "--stderr"]);
    assert_success(&out);
    assert_eq!(out.stdout, b"warn\0ing");
    assert_eq!(env.count(), 1, "show ran the command");

    // A damaged object is an error, not damaged bytes.
    let object = env
        .objects()
        .into_iter()
        .find(|p| fs::metadata(p).unwrap().len() == big.len() as u64)
        .expect("stdout stored as an object");
    let mut bytes = fs::read(&object).unwrap();
    bytes[50_000] ^= 1;
    fs::write(&object, bytes).unwrap();
    let out = env.run(["show", &key[..5], "--stdout"]);
    assert_one_line_error(&out, 125, "cannot read the recorded stdout");
    assert!(out.stdout.is_empty(), "damaged bytes were printed");
}

#[test]
fn a_merged_recording_shows_its_one_stream_as_stdout() {
    let env = TestEnv::new();
    env.tool("echo one; echo two >&2; echo three");
    let (code, _) = env.run_merged(run_tool(&[]));
    assert_eq!(code, 0);
    let key = only_key(&env);
    let out = env.run(["show", &key, "--stdout"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "one\ntwo\nthree\n");
    let out = env.run(["show", &key, "--stderr"]);
    assert_success(&out);
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    let json = show_json(&env, &key);
    assert_eq!(
        json["streams"],
        serde_json::json!({"mode": "merged", "combined_size": 14})
    );
    assert!(stdout(&env.run(["show", &key])).contains("\nstreams      merged"));
}

#[test]
fn show_tells_fresh_stale_and_expired_under_the_current_ttl() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    let key = only_key(&env);
    let with = |vars: &[(&str, &str)], json: bool| {
        let mut cmd = env.memo(["show", &key]);
        if json {
            cmd.arg("--json");
        }
        for (name, value) in vars {
            cmd.env(name, value);
        }
        let out = cmd.output().unwrap();
        assert_success(&out);
        stdout(&out)
    };
    let fresh = with(&[("MEMO_TTL", "1h")], false);
    assert!(fresh.contains("\nfreshness    fresh for "), "{fresh}");
    assert!(fresh.contains("env MEMO_TTL"), "{fresh}");
    let json: serde_json::Value = serde_json::from_str(&with(&[("MEMO_TTL", "1h")], true)).unwrap();
    assert_eq!(json["freshness"], "fresh");
    assert_eq!(json["ttl_seconds"], 3600.0);
    let left = json["expires_in_seconds"].as_f64().unwrap();
    assert!(left > 3500.0 && left <= 3600.0, "{json}");

    // Stored two hours ago.
    let entry = env.entries().pop().unwrap();
    rewrite_entry(&entry, |body| {
        let created = body["created_unix_ms"].as_u64().unwrap();
        body["created_unix_ms"] = (created - 2 * 3600 * 1000).into();
    });
    let expired = with(&[("MEMO_TTL", "1h")], false);
    assert!(
        expired.contains("\nfreshness    expired 1h00m ago"),
        "{expired}"
    );
    let json: serde_json::Value = serde_json::from_str(&with(&[("MEMO_TTL", "1h")], true)).unwrap();
    assert_eq!(json["freshness"], "expired");
    let stale = with(&[("MEMO_TTL", "1h"), ("MEMO_STALE", "2h")], false);
    assert!(
        stale.contains("\nfreshness    stale: expired 1h00m ago"),
        "{stale}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&with(&[("MEMO_TTL", "1h"), ("MEMO_STALE", "2h")], true)).unwrap();
    assert_eq!(json["freshness"], "stale");
    assert!(with(&[], false).contains("never expires"));
}

#[test]
fn show_needs_a_unique_prefix_of_at_least_four_hex_digits() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    let key = only_key(&env);
    for bad in ["abc", "xyzw", "12 4"] {
        let out = env.run(["show", bad]);
        assert_one_line_error(&out, 125, "at least 4 hex digits");
        assert!(stderr(&out).contains(bad), "{}", stderr(&out));
    }
    let unknown = if key.starts_with("0000") {
        "ffff"
    } else {
        "0000"
    };
    let out = env.run(["show", unknown]);
    assert_one_line_error(
        &out,
        125,
        &format!("no cached result has a key starting with '{unknown}'"),
    );
    assert!(stderr(&out).contains("memo ls"), "{}", stderr(&out));
    // Upper case is the same key.
    assert_success(&env.run(["show", &key[..6].to_ascii_uppercase()]));

    // A second entry under a key with the same first digits.
    let entry = env.entries().pop().unwrap();
    let last = key.chars().last().unwrap();
    let twin_name = format!("{}{}", &key[..63], if last == '0' { '1' } else { '0' });
    write_entry(&env.cache(), &twin_name, &entry.bytes());
    let out = env.run(["show", &key[..4]]);
    assert_one_line_error(
        &out,
        125,
        &format!("key prefix '{}' matches 2 cached results", &key[..4]),
    );
    assert!(stderr(&out).contains("more digits"), "{}", stderr(&out));
    // The full key is unique again.
    assert_success(&env.run(["show", &key]));
}

#[test]
fn ls_tells_apart_the_same_command_run_in_two_directories() {
    let env = TestEnv::new();
    env.tool("sleep 0.1; echo hi > out.txt");
    env.write("a.txt", "a");
    env.write("b.txt", "b");
    fs::create_dir(env.path("sub")).unwrap();
    fs::copy(env.path("tool"), env.path("sub/tool")).unwrap();
    assert_success(&env.run(run_tool(&["-i", "a.txt", "-i", "b.txt", "-o", "out.txt"])));
    assert_success(&env.run(run_tool(&["-i", "a.txt", "-i", "b.txt", "-o", "out.txt"])));
    let out = env
        .memo(["run", "--", "./tool"])
        .current_dir(env.path("sub"))
        .output()
        .unwrap();
    assert_success(&out);
    let listing = env.listing();
    assert_eq!(listing.len(), 2);
    let in_work = listing
        .iter()
        .find(|e| e["cwd"] == env.work().to_str().unwrap())
        .expect("the entry run in the work dir");
    let in_sub = listing
        .iter()
        .find(|e| e["cwd"] == env.path("sub").to_str().unwrap())
        .expect("the entry run in sub");
    assert_eq!(
        (in_work["inputs"].as_u64(), in_work["outputs"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (in_sub["inputs"].as_u64(), in_sub["outputs"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(in_work["hits"], 1);
    assert_eq!(in_work["exit_code"], 0);
    // The fields that were there before stay.
    for field in [
        "command",
        "created_ms",
        "last_access_ms",
        "age_seconds",
        "size",
        "duration_seconds",
        "time_saved_seconds",
    ] {
        assert!(in_work.get(field).is_some(), "{field} missing: {in_work}");
    }

    let text = stdout(&env.run(["ls"]));
    let header = text.lines().next().unwrap();
    for column in [
        "KEY",
        "AGE",
        "SIZE",
        "HITS",
        "IN",
        "OUT",
        "DIRECTORY",
        "COMMAND",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = |key: &serde_json::Value| {
        let short = &key.as_str().unwrap()[..12];
        text.lines()
            .find(|l| l.starts_with(short))
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let work_row = row(&in_work["key"]);
    assert!(
        work_row.contains(&env.work().to_str().unwrap().to_string()),
        "{text}"
    );
    // KEY AGE SIZE (two words) HITS SAVED IN OUT DIRECTORY COMMAND
    let counts = |row: &[String]| [row[4].clone(), row[6].clone(), row[7].clone()];
    assert_eq!(counts(&work_row), ["1", "2", "1"], "{text}");
    let sub_row = row(&in_sub["key"]);
    assert!(
        sub_row.contains(&env.path("sub").to_str().unwrap().to_string()),
        "{text}"
    );
    assert_eq!(counts(&sub_row), ["0", "0", "0"], "{text}");
}

#[test]
fn commands_with_control_characters_are_shown_escaped() {
    let env = TestEnv::new();
    env.tool("sleep 0.1; echo hi");
    let arg = "two\nlines\tand \x1b[31mred";
    let escaped = "two\\nlines\\tand \\x1b[31mred";
    assert_success(&env.run(["run", "--", "./tool", arg]));
    assert_success(&env.run(["run", "--", "./tool", arg]));
    assert_eq!(env.count(), 1);
    let key = only_key(&env);
    let clean = |args: &[&str], lines: usize| {
        let out = env.run(args);
        assert_success(&out);
        let text = stdout(&out);
        assert!(text.contains(escaped), "{args:?} shows {text:?}");
        assert!(
            !text.contains('\x1b') && !text.contains('\t'),
            "{args:?}: {text:?}"
        );
        assert_eq!(text.lines().count(), lines, "{args:?}: {text:?}");
    };
    clean(&["ls"], 2);
    clean(&["log"], 3); // miss, store, hit
    clean(&["show", &key], 18);
    let out = env.run(["stats"]);
    let text = stdout(&out);
    let top = text
        .split("commands that saved the most time:\n")
        .nth(1)
        .unwrap();
    assert!(
        top.contains(escaped) && top.lines().count() == 1,
        "{text:?}"
    );
    assert!(!text.contains('\x1b'), "{text:?}");
    clean(&["gc", "--dry-run", "--max-size", "1"], 2);
    // The JSON forms keep the exact command.
    assert_eq!(env.listing()[0]["command"], format!("./tool '{arg}'"));
    assert_eq!(show_json(&env, &key)["argv"][1], arg);
}

/// Runs `args` with the cache named in one of three ways, at a path that does not exist.
fn named_missing_cache(env: &TestEnv, way: usize, args: &[&str]) -> std::process::Output {
    let missing = env.root.path().join("no-such-cache");
    let mut cmd = match way {
        0 => {
            let mut c = env.memo(["--cache-dir", missing.to_str().unwrap()]);
            c.args(args).env_remove("MEMO_DIR");
            c
        }
        1 => {
            let mut c = env.memo(args);
            c.env("MEMO_DIR", &missing);
            c
        }
        _ => {
            let config = env.write("memo.toml", format!("cache_dir = {:?}\n", missing));
            let mut c = env.memo(args);
            c.env_remove("MEMO_DIR").env("MEMO_CONFIG", config);
            c
        }
    };
    cmd.output().unwrap()
}

fn looking_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["show", "abcd"],
        vec!["log"],
        vec!["explain", "--", "echo", "hi"],
    ]
}

/// `clear`, `rm` and `gc` on a cache that does not exist have nothing to remove, wherever
/// it was named (a script's `memo clear` before any run), and do not create it.
#[test]
fn removing_from_a_cache_that_does_not_exist_removes_nothing_and_creates_nothing() {
    let env = TestEnv::new();
    let missing = env.root.path().join("no-such-cache");
    for way in 0..3 {
        for (args, code) in [
            (vec!["clear"], 0),
            (vec!["gc"], 0),
            (vec!["gc", "--dry-run"], 0),
            (vec!["rm", "abcd"], 1),
        ] {
            let out = named_missing_cache(&env, way, &args);
            assert_eq!(out.status.code(), Some(code), "{args:?} way {way}: {out:?}");
            assert!(!missing.exists(), "{args:?} way {way} created the cache");
        }
    }
}

#[test]
fn a_named_cache_that_does_not_exist_is_an_error_and_is_not_created() {
    let env = TestEnv::new();
    let missing = env.root.path().join("no-such-cache");
    for way in 0..3 {
        for args in looking_commands() {
            let out = named_missing_cache(&env, way, &args);
            assert_one_line_error(&out, 125, &format!("'{}'", missing.display()));
            let err = stderr(&out);
            assert!(err.contains("does not exist"), "{args:?}: {err}");
            let source = ["--cache-dir", "MEMO_DIR", "memo.toml"][way];
            assert!(err.contains(source), "{args:?} way {way}: {err}");
            assert!(!missing.exists(), "{args:?} way {way} created the cache");
        }
    }
}

#[test]
fn the_default_cache_that_does_not_exist_reads_as_empty_and_is_not_created() {
    let env = TestEnv::new();
    let home = env.root.path().join("home");
    let default: PathBuf = home.join(".cache/memo");
    let memo = |args: &[&str]| {
        env.memo(args)
            .env_remove("MEMO_DIR")
            .env("HOME", &home)
            .output()
            .unwrap()
    };
    let out = memo(&["stats", "--json"]);
    assert_success(&out);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (stats["entries"].as_i64(), stats["hits"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(stats["cache_dir"], default.to_str().unwrap());
    let out = memo(&["stats"]);
    assert_success(&out);
    assert!(stdout(&out).contains("entries      0"), "{}", stdout(&out));
    let out = memo(&["ls", "--json"]);
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "[]");
    let out = memo(&["ls"]);
    assert_success(&out);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let out = memo(&["log"]);
    assert_success(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let out = memo(&["show", "abcd"]);
    assert_one_line_error(&out, 125, "no cached result has a key starting with 'abcd'");
    let out = memo(&["rm", "abcd"]);
    assert_code(&out, 1);
    let out = memo(&["gc", "--dry-run"]);
    assert_success(&out);
    let out = memo(&["explain", "--", "echo", "hi"]);
    assert_code(&out, 1);
    assert!(stdout(&out).contains("nothing is cached"), "{out:?}");
    assert!(
        !home.join(".cache").exists(),
        "a looking command created the cache"
    );
    // A run creates it, and then it is read.
    env.tool("echo hi");
    let out = env
        .memo(run_tool(&[]))
        .env_remove("MEMO_DIR")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_success(&out);
    assert!(default.is_dir());
    let out = memo(&["ls", "--json"]);
    let listing: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing.len(), 1);
}
