//! Messages a newcomer meets (issue 10): errors that name the setting, the key, the file
//! or the directory to fix; `explain` in plain words; `--force` counted as forced; a
//! failed background refresh kept in the log.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use crate::support::*;

/// `memo ARGS` with the config file `text`, written to `rel` in the work dir.
fn with_config<S: AsRef<std::ffi::OsStr>>(
    env: &TestEnv,
    rel: &str,
    text: &str,
    args: &[S],
) -> Output {
    let config = env.write(rel, text);
    env.memo(args).env("MEMO_CONFIG", config).output().unwrap()
}

/// The value `memo config` shows for `name`.
fn config_value(out: &Output, name: &str) -> String {
    assert_success(out);
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn a_negative_ttl_is_refused_from_the_flag_the_environment_and_the_config_file() {
    let env = TestEnv::new();
    env.tool("echo hi");
    for args in [run_tool(&["--ttl", "-5m"]), run_tool(&["--ttl=-5m"])] {
        let out = env.run(&args);
        assert_one_line_error(&out, 125, "durations cannot be negative");
        assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
    }
    let out = env
        .memo(run_tool(&[]))
        .env("MEMO_TTL", "-5m")
        .output()
        .unwrap();
    assert_one_line_error(&out, 125, "durations cannot be negative");
    assert!(stderr(&out).contains("MEMO_TTL"), "{}", stderr(&out));
    let out = with_config(&env, "memo.toml", "ttl = \"-5m\"\n", &run_tool(&[]));
    assert_one_line_error(&out, 125, "durations cannot be negative");
    assert!(stderr(&out).contains("ttl"), "{}", stderr(&out));
    assert!(stderr(&out).contains("memo.toml"), "{}", stderr(&out));
    assert_eq!(env.count(), 0, "nothing ran");
}

#[test]
fn stale_without_a_ttl_names_ttl_whichever_way_it_was_given() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let run = run_tool(&[]);
    let flag = env.run(run_tool(&["--stale", "5m"]));
    let from_env = env.memo(&run).env("MEMO_STALE", "5m").output().unwrap();
    let from_file = with_config(&env, "memo.toml", "stale = \"5m\"\n", &run);
    for out in [flag, from_env, from_file] {
        assert_one_line_error(&out, 125, "--ttl");
        assert!(stderr(&out).contains("stale"), "{}", stderr(&out));
    }
    assert_eq!(env.count(), 0, "nothing ran");
}

#[test]
fn a_config_cache_dir_expands_the_tilde() {
    let env = TestEnv::new();
    let home = env.root.path().join("home");
    for (text, expected) in [
        ("cache_dir = \"~/memo-cache\"\n", home.join("memo-cache")),
        ("cache_dir = \"~\"\n", home.clone()),
    ] {
        let config = env.write("memo.toml", text);
        let out = env
            .memo(["config"])
            .env_remove("MEMO_DIR")
            .env("MEMO_CONFIG", &config)
            .output()
            .unwrap();
        assert_eq!(
            config_value(&out, "cache_dir"),
            expected.display().to_string()
        );
    }
    // And the cache is really there.
    env.tool("echo hi");
    let config = env.write("memo.toml", "cache_dir = \"~/memo-cache\"\n");
    let out = env
        .memo(run_tool(&[]))
        .env_remove("MEMO_DIR")
        .env("MEMO_CONFIG", &config)
        .output()
        .unwrap();
    assert_success(&out);
    assert!(!stored_entries(&home.join("memo-cache")).is_empty());
    assert!(!env.work().join("~").exists(), "no directory named ~");
}

#[test]
fn a_relative_config_cache_dir_is_relative_to_the_config_file() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let config = env.write("conf/memo.toml", "cache_dir = \"cache-here\"\n");
    fs::create_dir(env.path("elsewhere")).unwrap();
    for rel_config in [config.clone(), "../conf/memo.toml".into()] {
        let out = env
            .memo(["run", "--", "../tool"])
            .current_dir(env.path("elsewhere"))
            .env_remove("MEMO_DIR")
            .env("MEMO_CONFIG", &rel_config)
            .output()
            .unwrap();
        assert_success(&out);
    }
    assert_eq!(
        stored_entries(&env.path("conf/cache-here")).len(),
        1,
        "one entry, stored beside the config file both times"
    );
    assert!(!env.path("elsewhere/cache-here").exists());
    assert_eq!(env.count(), 1, "the second run was a hit in the same cache");
}

#[test]
fn an_unknown_config_key_is_named_with_the_near_miss_suggested() {
    let env = TestEnv::new();
    env.tool("echo hi");
    for (text, typo, suggestion) in [
        ("maxsize = \"1G\"\n", "maxsize", "did you mean max_size?"),
        (
            "cache-dir = \"/tmp\"\n",
            "cache-dir",
            "did you mean cache_dir?",
        ),
        ("tll = \"5m\"\n", "tll", "did you mean ttl?"),
    ] {
        let out = with_config(&env, "memo.toml", text, &["stats"]);
        assert_one_line_error(&out, 125, suggestion);
        let err = stderr(&out);
        assert!(err.contains(&format!("unknown key {typo}")), "{err}");
        assert!(err.contains("memo.toml"), "{err}");
    }
    // Nothing near: the keys are listed instead.
    let out = with_config(&env, "memo.toml", "colour = true\n", &["stats"]);
    assert_one_line_error(&out, 125, "unknown key colour");
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_size"), "{}", stderr(&out));
    assert_eq!(env.count(), 0);
}

#[test]
fn a_config_value_of_the_wrong_type_names_the_key_the_form_and_the_file() {
    let env = TestEnv::new();
    for (text, key, form) in [
        ("max_size = 5\n", "max_size", "a size in quotes"),
        ("verbose = \"yes\"\n", "verbose", "true or false"),
        ("ttl = 60\n", "ttl", "a duration in quotes"),
        (
            "[remote]\nurl = \"http://x\"\n",
            "remote",
            "a URL in quotes",
        ),
    ] {
        let out = with_config(&env, "memo.toml", text, &["stats"]);
        assert_one_line_error(&out, 125, &format!("{key} must be {form}"));
        assert!(stderr(&out).contains("memo.toml"), "{}", stderr(&out));
    }
}

#[test]
fn a_bad_config_value_names_the_key_the_form_and_the_file() {
    let env = TestEnv::new();
    for (text, key, form) in [
        ("max_size = \"lots\"\n", "max_size", "a size like 500M"),
        ("ttl = \"soon\"\n", "ttl", "a duration like 90s"),
        (
            "remote_mode = \"sometimes\"\n",
            "remote_mode",
            "read-write or read-only",
        ),
    ] {
        let out = with_config(&env, "memo.toml", text, &["stats"]);
        assert_one_line_error(&out, 125, form);
        let err = stderr(&out);
        assert!(err.contains(key), "{err}");
        assert!(err.contains("memo.toml"), "{err}");
    }
}

/// A cache whose lock directory user `nobody` may not write in, the rest being theirs;
/// `None` where the test cannot run as another user.
fn cache_with_a_locked_lock_directory(env: &TestEnv) -> Option<()> {
    if !nobody_can_run_in(env) {
        return None;
    }
    env.tool("echo hi");
    let out = as_nobody(env.memo(run_tool(&[])));
    assert_success(&out);
    let locks = env.cache().join("locks");
    fs::create_dir_all(&locks).unwrap();
    std::os::unix::fs::chown(&locks, Some(0), Some(0)).unwrap();
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o755)).unwrap();
    // And what is in it (the keys' shared lock file): root's, read-only to others.
    for file in fs::read_dir(&locks).unwrap() {
        let path = file.unwrap().path();
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }
    Some(())
}

fn has_a_key_in_hex(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .any(|word| word.len() >= 64)
}

#[test]
fn a_gc_that_fails_names_the_path() {
    let env = TestEnv::new();
    if cache_with_a_locked_lock_directory(&env).is_none() {
        return;
    }
    let out = as_nobody(env.memo(["gc"]));
    let locks = env.cache().join("locks");
    assert_one_line_error(&out, 125, &locks.display().to_string());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let out = as_nobody(env.memo(["clear"]));
    assert_one_line_error(&out, 125, &locks.display().to_string());
}

#[test]
fn a_lock_that_cannot_be_taken_names_the_cache_directory_not_the_lock() {
    let env = TestEnv::new();
    if cache_with_a_locked_lock_directory(&env).is_none() {
        return;
    }
    // A command not stored yet, so that it needs its lock.
    let out = as_nobody(env.memo(["run", "--", "./tool", "again"]));
    assert_success(&out);
    assert_eq!(stdout(&out), "hi\n");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("lock"), "{err}");
    assert!(
        err.contains(&env.cache().display().to_string()),
        "names the cache directory: {err}"
    );
    assert!(!has_a_key_in_hex(&err), "no 64-hex lock name: {err}");
}

#[test]
fn explain_says_in_words_that_the_streams_are_now_one_pipe() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert_success(&env.run(run_tool(&[])));
    let (code, text) = env.run_merged(["explain", "--", "./tool"]);
    let text = String::from_utf8_lossy(&text);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("stdout and stderr were recorded separately and are now the same pipe"),
        "{text}"
    );
    for internal in ["Merged", "Separate", "StreamMode", "Some(", "None"] {
        assert!(!text.contains(internal), "{internal} in {text}");
    }
    // And the other way round.
    let env = TestEnv::new();
    env.tool("echo hi");
    env.run_merged(run_tool(&[]));
    let out = env.run(["explain", "--", "./tool"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("recorded as one pipe (as with 2>&1) and are now separate"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn explain_escapes_control_characters_in_commands_and_paths() {
    let env = TestEnv::new();
    env.tool("echo \"$1\"");
    let name = "in\nput\x1b[31m.txt";
    env.write(name, "1");
    // explain never creates the (named) cache: it must exist.
    fs::create_dir_all(env.cache()).unwrap();
    let out = env.run(["explain", "--", "./tool", name]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.contains("in\\nput\\x1b[31m.txt"), "{text:?}");
    assert!(!text.contains('\x1b'), "{text:?}");

    assert_success(&env.run(["run", "-i", name, "--", "./tool", "x"]));
    env.write(name, "2");
    let out = env.run(["explain", "-i", name, "--", "./tool", "x"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains("input changed: in\\nput\\x1b[31m.txt"),
        "{text:?}"
    );
    assert!(!text.contains('\x1b'), "{text:?}");
}

/// The sum of counter `name` over the stats shards (each `CHECKSUM JSON`).
fn counter(env: &TestEnv, name: &str) -> i64 {
    env.stats()[name].as_i64().unwrap_or(0)
}

#[test]
fn force_is_counted_and_logged_as_forced_not_as_a_miss() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert!(env.ran_tool(&[]));
    assert!(env.ran_tool(&["--force"]));
    assert!(env.ran_tool(&["--force"]));
    assert!(!env.ran_tool(&[]));
    let verbose = env.run(run_tool(&["-v", "--force"]));
    assert_success(&verbose);
    assert!(
        stderr(&verbose).starts_with("memo: forced "),
        "{}",
        stderr(&verbose)
    );
    assert_eq!(counter(&env, "forced"), 3);
    assert_eq!(counter(&env, "misses"), 1);
    let stats = env.stats();
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["hits"], 1, "{stats}");
    assert_eq!(stats["forced"], 3, "{stats}");
    let shown = env.run(["stats"]);
    assert!(stdout(&shown).contains("forced       3"), "{shown:?}");
    let kinds: Vec<String> = env
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "forced").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "miss").count(),
        1,
        "{kinds:?}"
    );
    let log = env.run(["log"]);
    assert_success(&log);
    assert_eq!(
        stdout(&log)
            .lines()
            .filter(|l| l.contains(" forced "))
            .count(),
        3,
        "{}",
        stdout(&log)
    );
}

#[test]
fn a_failing_background_refresh_leaves_its_exit_code_and_stderr_in_the_log() {
    let env = TestEnv::new();
    env.tool(
        "if [ -e fail ]; then printf 'first line\\n%s\\nnot \\033[31mfound\\n' \"$(head -c 3000 /dev/zero | tr '\\0' x)\" >&2; exit 3; fi\necho ok",
    );
    let args = ["--ttl", "1s", "--stale", "1h"];
    assert!(env.ran_tool(&args));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.write("fail", "");
    let stale = env.run(run_tool(&args));
    assert_success(&stale);
    assert_eq!(stdout(&stale), "ok\n", "the stale result, at once");
    let failed = || env.events().into_iter().find(|e| e["event"] == "error");
    env.eventually("the failed refresh is logged", || failed().is_some());
    let event = failed().unwrap();
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        message.ends_with("xxx\\nnot \\x1b[31mfound"),
        "the end of stderr, escaped: {message}"
    );
    assert!(
        !message.contains('\x1b') && !message.contains('\n'),
        "{message}"
    );
    assert!(message.len() < 2300, "only the tail: {}", message.len());
    assert!(
        !message.contains("first line"),
        "cut to its tail: {message}"
    );
    assert_eq!(event["command"], "./tool");
    let log = env.run(["log"]);
    let text = stdout(&log);
    let line = text
        .lines()
        .find(|l| l.contains("background refresh failed"))
        .unwrap_or_else(|| panic!("not in memo log: {text}"));
    assert!(
        line.contains("exit code 3") && line.contains("found"),
        "{line}"
    );
    assert_eq!(
        stdout(&env.run(run_tool(&args))),
        "ok\n",
        "the stale result stays"
    );
}

#[test]
fn a_short_refresh_failure_is_logged_whole() {
    let env = TestEnv::new();
    env.tool("if [ -e fail ]; then echo 'no network' >&2; exit 7; fi\necho ok");
    let args = ["--ttl", "1s", "--stale", "1h"];
    assert!(env.ran_tool(&args));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.write("fail", "");
    assert_success(&env.run(run_tool(&args)));
    let failed = || env.events().into_iter().find(|e| e["event"] == "error");
    env.eventually("the failed refresh is logged", || failed().is_some());
    let message = failed().unwrap()["message"].as_str().unwrap().to_string();
    assert_eq!(
        message,
        "background refresh failed: exit code 7; its stderr: no network"
    );
}

/// `reliability::runs_with_rm_and_clear_at_once_never_replay_anything_wrong` failed about
/// one time in seven: a `memo clear` that met a cache another memo was creating (its
/// tag not written yet) refused it as someone else's directory. With nothing stored there
/// is nothing to clear, whoever owns the directory, and nothing is touched.
#[test]
fn clear_with_nothing_stored_succeeds_and_touches_nothing() {
    let env = TestEnv::new();
    let dir = env.root.path().join("someones");
    fs::create_dir_all(dir.join("entries")).unwrap();
    fs::create_dir_all(dir.join("packs")).unwrap();
    fs::write(dir.join("notes.txt"), "mine").unwrap();
    let out = env.memo(["clear"]).env("MEMO_DIR", &dir).output().unwrap();
    assert_success(&out);
    assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
    assert!(!dir.join("CACHEDIR.TAG").exists());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["entries", "notes.txt", "packs"],
        "nothing made or removed"
    );
}

/// `-v` on a miss says in one line what changed against the closest entry: the finding
/// of `memo explain`, without a second command.
#[test]
fn verbose_says_why_a_run_missed() {
    let env = TestEnv::new();
    env.tool("cat data.txt");
    env.write("data.txt", "one");
    let first = env.run(run_tool(&["-v", "-i", "data.txt"]));
    assert_success(&first);
    assert!(
        stderr(&first).contains("was never stored here"),
        "{}",
        stderr(&first)
    );
    env.write("data.txt", "two");
    let second = env.run(run_tool(&["-v", "-i", "data.txt"]));
    assert_success(&second);
    let err = stderr(&second);
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("differs from entry"))
        .collect();
    assert_eq!(said.len(), 1, "{}", stderr(&second));
    assert!(said[0].contains("input changed: data.txt"), "{}", said[0]);
    // Merging the streams (what `2>&1 | grep` does to memo) is named in words.
    let merged = env.run(run_tool(&[
        "-v",
        "-i",
        "data.txt",
        "--stream-mode",
        "merged",
    ]));
    assert!(
        stderr(&merged).contains("are now the same pipe"),
        "{}",
        stderr(&merged)
    );
    // A hit says nothing of the kind.
    let hit = env.run(run_tool(&["-v", "-i", "data.txt"]));
    assert!(!stderr(&hit).contains("differs"), "{}", stderr(&hit));
}
