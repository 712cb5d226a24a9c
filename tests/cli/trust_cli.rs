//! Issue 8, the invocation side: one rule for exit 125, cache locations that only warn,
//! readers that go away, a deleted working directory, durations and clocks that lie, and
//! declarations that make no sense.

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use crate::support::*;

/// The command ran once with its output and exit code passed through, after exactly one
/// warning that names the cache.
#[track_caller]
fn assert_plain_run_with_one_warning(env: &TestEnv, out: &std::process::Output) {
    assert_code(out, 3);
    assert_eq!(stdout(out), "out\n");
    let err = stderr(out);
    let warnings = err.matches("memo: warning:").count();
    assert_eq!(warnings, 1, "expected one warning: {err:?}");
    assert!(
        err.contains("err\n"),
        "the command's stderr is lost: {err:?}"
    );
    assert_eq!(env.count(), 1);
}

fn failing_tool(env: &TestEnv) {
    env.tool("echo out; echo err >&2; exit 3");
}

#[test]
fn a_cache_dir_that_is_a_regular_file_only_warns_whichever_way_it_is_named() {
    let env = TestEnv::new();
    failing_tool(&env);
    let file = env.write("not-a-dir", "x");
    // --cache-dir, MEMO_DIR, the config file, and a default below a file (HOME is a file).
    let config = env.write("memo.toml", format!("cache_dir = {:?}\n", file));
    let ways: Vec<Box<dyn Fn() -> std::process::Command>> = vec![
        Box::new(|| {
            let mut c = env.memo(["--cache-dir"]);
            c.arg(&file).args(run_tool(&[]));
            c
        }),
        Box::new(|| {
            let mut c = env.memo(run_tool(&[]));
            c.env("MEMO_DIR", &file);
            c
        }),
        Box::new(|| {
            let mut c = env.memo(run_tool(&[]));
            c.env_remove("MEMO_DIR").env("MEMO_CONFIG", &config);
            c
        }),
        Box::new(|| {
            let mut c = env.memo(run_tool(&[]));
            c.env_remove("MEMO_DIR").env("HOME", &file);
            c
        }),
        Box::new(|| {
            let mut c = env.memo(run_tool(&[]));
            c.env("MEMO_DIR", file.join("below"));
            c
        }),
    ];
    for (i, way) in ways.iter().enumerate() {
        let before = env.count();
        let out = way().output().unwrap();
        assert_code(&out, 3);
        assert_eq!(stdout(&out), "out\n", "way {i}");
        let err = stderr(&out);
        assert_eq!(err.matches("memo: warning:").count(), 1, "way {i}: {err:?}");
        assert_eq!(env.count(), before + 1, "way {i}");
    }
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "x",
        "the file was touched"
    );
}

#[test]
fn an_unreadable_cache_dir_only_warns() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    failing_tool(&env);
    let cache = env.root.path().join("locked");
    fs::create_dir(&cache).unwrap();
    set_mode(&cache, 0o000);
    let mut cmd = env.memo(["--cache-dir"]);
    cmd.arg(&cache).args(run_tool(&[]));
    let out = as_nobody(cmd);
    assert_plain_run_with_one_warning(&env, &out);
}

#[test]
fn no_home_and_no_cache_dir_only_warns() {
    let env = TestEnv::new();
    failing_tool(&env);
    let out = env
        .memo(run_tool(&[]))
        .env_remove("MEMO_DIR")
        .env_remove("HOME")
        .output()
        .unwrap();
    assert_plain_run_with_one_warning(&env, &out);
    assert!(stderr(&out).contains("MEMO_DIR"), "{}", stderr(&out));
}

#[test]
fn a_home_that_cannot_be_searched_only_warns() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    failing_tool(&env);
    let home = env.root.path().join("home");
    set_mode(&home, 0o000);
    let mut cmd = env.memo(run_tool(&[]));
    cmd.env_remove("MEMO_DIR");
    let out = as_nobody(cmd);
    set_mode(&home, 0o755);
    assert_plain_run_with_one_warning(&env, &out);
}

#[test]
fn invalid_values_from_flags_env_and_config_exit_125_and_run_nothing() {
    let env = TestEnv::new();
    env.tool("true");
    let config = env.write("memo.toml", "ttl = \"soon\"\n");
    let cases: Vec<(std::process::Command, &str)> = vec![
        (env.memo(run_tool(&["--ttl", "soon"])), "soon"),
        (
            {
                let mut c = env.memo(run_tool(&[]));
                c.env("MEMO_TTL", "soon");
                c
            },
            "MEMO_TTL",
        ),
        (
            {
                let mut c = env.memo(run_tool(&[]));
                c.env("MEMO_CONFIG", &config);
                c
            },
            "memo.toml",
        ),
        (env.memo(run_tool(&["-i", "missing.csv"])), "missing.csv"),
    ];
    for (mut cmd, mentions) in cases {
        let out = cmd.output().unwrap();
        assert_one_line_error(&out, 125, mentions);
    }
    assert_eq!(env.count(), 0);
}

#[test]
fn management_commands_exit_quietly_when_the_reader_goes_away() {
    let env = TestEnv::new();
    // Enough entries and events that every listing outgrows a pipe buffer.
    for i in 0..60 {
        env.tool("echo hi");
        assert_success(&env.run(run_tool(&["--salt", &format!("{i:0>200}")])));
    }
    for args in [
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["log", "-n", "1000"],
        vec!["log", "--json", "-n", "1000"],
        vec!["config"],
        vec!["gc", "--dry-run", "--max-size", "1"],
        vec!["explain", "--", "./tool"],
    ] {
        let mut child = env.spawn_piped(&args);
        // Read one byte, then go away, as `| head -c1` does.
        let mut stdout = child.stdout.take().unwrap();
        let mut one = [0u8; 1];
        let _ = stdout.read(&mut one);
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said: {err}");
        // explain's own code says hit (0) or miss (1), unless the pipe broke first.
        let allowed: &[i32] = if args[0] == "explain" { &[0, 1] } else { &[0] };
        let code = out.status.code().unwrap_or(-1);
        assert!(allowed.contains(&code), "{args:?} exited {code}");
    }
}

#[test]
fn a_deleted_working_directory_runs_uncached_with_a_warning() {
    let env = TestEnv::new();
    let gone = env.path("gone");
    fs::create_dir(&gone).unwrap();
    let script = format!(
        "cd {gone:?} && rmdir {gone:?} && exec {MEMO:?} run -- sh -c 'echo ran; exit 4'",
        gone = gone.display().to_string(),
    );
    let out = env.memo(["--version"]).output().unwrap();
    assert_success(&out);
    let run = |extra: &str| {
        fs::create_dir_all(&gone).unwrap();
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script.replace(" run -- ", &format!(" run {extra} -- ")))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("MEMO_DIR", env.cache())
            .output()
            .unwrap()
    };
    let out = run("");
    assert_code(&out, 4);
    assert_eq!(stdout(&out), "ran\n");
    let err = stderr(&out);
    assert_eq!(err.matches("memo: warning:").count(), 1, "{err:?}");
    assert!(err.contains("working directory"), "{err:?}");
    assert!(
        env.entries().is_empty(),
        "stored without a working directory"
    );

    // With --ignore-cwd the working directory is not needed: it is cached.
    let out = run("--ignore-cwd --cache-failures");
    assert_code(&out, 4);
    assert!(!stderr(&out).contains("memo:"), "{}", stderr(&out));
    let out = run("--ignore-cwd --cache-failures -v");
    assert_code(&out, 4);
    assert!(stderr(&out).contains("memo: hit"), "{}", stderr(&out));
}

#[test]
fn durations_too_large_for_the_clock_are_a_clear_error() {
    let env = TestEnv::new();
    env.tool("true");
    let huge = "999999999999d";
    for (args, vars) in [
        (run_tool(&["--ttl", huge]), vec![]),
        (run_tool(&["--ttl", "1s", "--stale", huge]), vec![]),
        (run_tool(&[]), vec![("MEMO_TTL", huge)]),
        (
            run_tool(&[]),
            vec![("MEMO_TTL", "1s"), ("MEMO_STALE", huge)],
        ),
        (vec!["gc".into(), "--max-age".into(), huge.into()], vec![]),
        (vec!["gc".into(), "--grace".into(), huge.into()], vec![]),
    ] {
        let out = env.memo(&args).envs(vars.clone()).output().unwrap();
        assert_one_line_error(&out, 125, "too long");
        let _ = vars;
    }
    assert_eq!(env.count(), 0);
}

#[test]
fn negative_durations_are_refused_by_name() {
    let env = TestEnv::new();
    env.tool("true");
    for args in [
        run_tool(&["--ttl", "-5m"]),
        run_tool(&["--ttl=-5m"]),
        run_tool(&["--ttl", "5m", "--stale", "-1s"]),
    ] {
        let out = env.run(&args);
        assert_one_line_error(&out, 125, "cannot be negative");
    }
    let out = env
        .memo(run_tool(&[]))
        .env("MEMO_TTL", "-5m")
        .output()
        .unwrap();
    assert_one_line_error(&out, 125, "cannot be negative");
    assert_eq!(env.count(), 0);
}

/// Moves the stored time of every entry `by_ms` into the future, as a clock that was
/// moved back after the store makes it look.
fn shift_created(env: &TestEnv, by_ms: i64) {
    for entry in env.entries() {
        rewrite_entry(&entry, |body| {
            let created = body["created_unix_ms"].as_i64().unwrap();
            body["created_unix_ms"] = (created + by_ms).into();
        });
    }
}

#[test]
fn an_entry_stored_in_the_future_is_not_fresh_for_the_size_of_the_jump() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert!(env.ran_tool(&["--ttl", "1h"]));
    // The clock was a day ahead when this was stored, and has since been set right.
    shift_created(&env, 24 * 3600 * 1000);
    assert!(
        env.ran_tool(&["--ttl", "1h"]),
        "a result from the future outlived its TTL"
    );
    // Without a TTL a result never expires, wherever the clock stood.
    shift_created(&env, 24 * 3600 * 1000);
    assert!(!env.ran_tool(&[]));
}

#[test]
fn a_stale_replay_with_declared_outputs_is_never_disturbed_by_a_refresh() {
    let env = TestEnv::new();
    // A slow writer: a refresh running in the background would truncate the output,
    // then fill it over a second.
    env.tool("echo v$(wc -l < count) > out.txt; echo made");
    let args = ["--ttl", "1s", "--stale", "1h", "-o", "out.txt"];
    assert!(env.ran_tool(&args));
    std::thread::sleep(Duration::from_millis(1100));
    let out = env.run(run_tool(&args));
    assert_success(&out);
    assert_eq!(stdout(&out), "made\n");
    assert_eq!(env.read("out.txt"), b"v1\n");
    // No refresh runs behind the caller's back while it reads its outputs.
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        assert_eq!(env.read("out.txt"), b"v1\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(env.count(), 1, "a background refresh ran the command");
    // Past the stale window it is a plain miss that runs in the foreground.
    let out = env.run(run_tool(&[
        "--ttl", "1s", "--stale", "1ms", "-o", "out.txt",
    ]));
    assert_success(&out);
    assert_eq!(env.count(), 2);
    assert_eq!(env.read("out.txt"), b"v2\n");
}

#[test]
fn declarations_that_make_no_sense_are_errors_naming_the_fix() {
    let env = TestEnv::new();
    env.tool("true");
    let cache = env.cache();
    for (args, mentions) in [
        (run_tool(&["-o", ""]), "empty"),
        (run_tool(&["-i", ""]), "empty"),
        (run_tool(&["-o", "/"]), "'/'"),
        (run_tool(&["-o", "//"]), "'//'"),
    ] {
        let out = env.run(&args);
        assert_one_line_error(&out, 125, mentions);
    }
    // An output that contains the cache directory: restoring it would replace the cache.
    let inside = env.path("build");
    fs::create_dir(&inside).unwrap();
    for (dir, declared) in [
        (inside.join("cache"), "build".to_string()),
        (inside.join("cache"), inside.display().to_string()),
        (env.path("c"), ".".to_string()),
    ] {
        let out = env
            .memo(run_tool(&["-o", &declared]))
            .env("MEMO_DIR", &dir)
            .output()
            .unwrap();
        assert_one_line_error(&out, 125, "cache");
    }
    assert_eq!(env.count(), 0);
    let _ = cache;
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_hit_replayed_into_a_full_destination_still_passes_the_exit_code_and_other_stream() {
    let env = TestEnv::new();
    env.tool("echo out; echo err >&2; exit 3");
    assert_code(&env.run(run_tool(&["--cache-failures"])), 3);
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = env
        .memo(run_tool(&["--cache-failures"]))
        .stderr(full)
        .output()
        .unwrap();
    assert_code(&out, 3);
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(env.count(), 1, "replayed, not run");
}

/// `MEMO_CONFIG=/dev/null` (the usual way to say "no config file", and what test
/// harnesses set) reads as an empty config; a FIFO or another device is an error.
#[test]
fn a_config_file_of_dev_null_is_no_config_and_a_fifo_is_an_error() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let out = env
        .memo(run_tool(&[]))
        .env("MEMO_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "hi\n");
    assert_eq!(stderr(&out), "");
    let fifo = env.root.path().join("fifo.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = env
        .memo(run_tool(&[]))
        .env("MEMO_CONFIG", &fifo)
        .output()
        .unwrap();
    assert_one_line_error(&out, 125, "not a regular file");
}

/// The command sees exactly the environment it would see without memo: memo adds and
/// removes nothing (a variable of memo's own would show in `env` and in what it prints).
#[test]
fn the_command_gets_memos_environment_unchanged() {
    let env = TestEnv::new();
    let memo = env.run(["run", "--", "env"]);
    assert_success(&memo);
    let direct = std::process::Command::new("env")
        .current_dir(env.work())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", env.root.path().join("home"))
        .env("MEMO_DIR", env.cache())
        .output()
        .unwrap();
    let sorted = |out: &std::process::Output| {
        let mut lines: Vec<String> = stdout(out).lines().map(String::from).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&memo), sorted(&direct));
}
