//! Issue 8, inputs: the race guard watches everything the key was computed from and
//! decides by content; an input directory's structure is keyed; commands are found and
//! started as execvp finds and starts them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::support::*;

/// Runs `memo run -i SPEC -- ./tool` once; the tool does `during` while it runs.
/// Returns memo's stderr after checking the command itself succeeded.
#[track_caller]
fn run_once_while(env: &TestEnv, inputs: &[&str], during: &str) -> String {
    env.tool(during);
    let mut args = Vec::new();
    for input in inputs {
        args.extend(["-i", input]);
    }
    let out = env.run(run_tool(&args));
    assert_success(&out);
    stderr(&out)
}

#[track_caller]
fn assert_not_stored_because(env: &TestEnv, err: &str, mentions: &str) {
    assert!(
        env.entries().is_empty(),
        "stored although {mentions}: {err}"
    );
    assert_eq!(err.matches("memo: warning").count(), 1, "{err}");
    assert!(
        err.contains(mentions),
        "{err:?} does not mention {mentions:?}"
    );
    assert!(err.contains("result not stored"), "{err}");
}

#[test]
fn the_race_guard_notices_files_added_removed_or_renamed_in_an_input_directory() {
    let cases = [
        ("touch src/new.txt", "input 'src/new.txt' appeared"),
        ("rm src/deep/b.txt", "input 'src/deep/b.txt' disappeared"),
        ("mv src/a.txt src/c.txt", "src/"),
        (
            "mv outside.txt src/deep/",
            "input 'src/deep/outside.txt' appeared",
        ),
        ("mkdir src/empty", "input 'src/empty' appeared"),
    ];
    for (during, mentions) in cases {
        let env = TestEnv::new();
        env.write("src/a.txt", "a");
        env.write("src/deep/b.txt", "b");
        env.write("outside.txt", "o");
        let err = run_once_while(&env, &["src"], &format!("ls -R src; {during}"));
        assert_not_stored_because(&env, &err, mentions);
    }
}

#[test]
fn the_race_guard_notices_a_new_match_of_an_input_glob() {
    let env = TestEnv::new();
    env.write("data/a.csv", "1\n");
    let err = run_once_while(&env, &["data/*.csv"], "cat data/*.csv; echo 2 > data/b.csv");
    assert_not_stored_because(&env, &err, "input 'data/b.csv' appeared");

    // A file outside the glob is not an input.
    let env = TestEnv::new();
    env.write("data/a.csv", "1\n");
    let err = run_once_while(&env, &["data/*.csv"], "echo x > data/notes.txt");
    assert_eq!(err, "");
    assert_eq!(env.entries().len(), 1);
}

#[test]
fn the_race_guard_notices_the_executable_replaced_while_it_runs() {
    let env = TestEnv::new();
    env.script("tool.v2", "echo v2\n");
    // A rename over the running script: sh keeps reading the old one, but the key was
    // computed from contents that are no longer the command's.
    let err = run_once_while(
        &env,
        &[],
        "cp tool.v2 tool.tmp && mv tool.tmp tool; echo v1",
    );
    assert_not_stored_because(&env, &err, "the command './tool' changed while it ran");
}

#[test]
fn an_input_touched_or_rewritten_with_the_same_bytes_is_still_stored() {
    let env = TestEnv::new();
    env.write("data", "v1\n");
    env.write("src/mod.py", "x = 1\n");
    // What `touch` and `python3 -m py_compile` do: new timestamps, a new inode (write
    // to a temporary file, rename it into place), the same bytes.
    let during = "cat data; touch data; cp src/mod.py mod.tmp && mv mod.tmp src/mod.py";
    let err = run_once_while(&env, &["data", "src"], during);
    assert_eq!(err, "", "nothing changed by content");
    assert_eq!(env.entries().len(), 1, "stored");
    assert!(!env.ran_tool(&["-i", "data", "-i", "src"]), "a hit");

    // The same bytes with another exec bit are another input.
    let env = TestEnv::new();
    env.write("data", "v1\n");
    let err = run_once_while(&env, &["data"], "chmod +x data");
    assert_not_stored_because(&env, &err, "input 'data' changed");
}

#[test]
fn a_path_that_is_both_input_and_output_is_keyed_before_and_recorded_after() {
    let env = TestEnv::new();
    env.tool("sort -o f f");
    env.write("f", "b\na\n");
    let args = ["-i", "f", "-o", "f"];
    let out = env.run(run_tool(&args));
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(env.entries().len(), 1, "stored");
    env.write("f", "b\na\n");
    assert!(!env.ran_tool(&args), "a hit: the key is f before the run");
    assert_eq!(env.read("f"), b"a\nb\n", "the output is f after the run");
}

#[test]
fn a_declared_output_inside_an_input_directory_may_change() {
    let env = TestEnv::new();
    env.write("src/a.txt", "a");
    env.write("src/gen/out.txt", "old");
    env.write("src/gen.txt", "old");
    env.tool("cat src/a.txt > src/gen.txt; rm -r src/gen; mkdir -p src/gen/sub; echo new > src/gen/sub/x");
    let out = env.run(run_tool(&[
        "-i",
        "src",
        "-o",
        "src/gen.txt",
        "-o",
        "./src/gen",
    ]));
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(env.entries().len(), 1, "stored");
}

#[test]
fn an_empty_subdirectory_of_an_input_directory_changes_the_key() {
    let env = TestEnv::new();
    env.tool("find src | sort");
    env.write("src/a.txt", "a");
    assert!(env.ran_tool(&["-i", "src"]));
    assert!(!env.ran_tool(&["-i", "src"]));
    fs::create_dir(env.path("src/empty")).unwrap();
    assert!(env.ran_tool(&["-i", "src"]), "an empty directory was added");
    assert_eq!(
        stdout(&env.run(run_tool(&["-i", "src"]))),
        "src\nsrc/a.txt\nsrc/empty\n"
    );
    fs::remove_dir(env.path("src/empty")).unwrap();
    assert!(!env.ran_tool(&["-i", "src"]), "back to the first result");
    assert_eq!(
        stdout(&env.run(run_tool(&["-i", "src"]))),
        "src\nsrc/a.txt\n"
    );
}

#[test]
fn an_empty_input_path_is_an_error() {
    let env = TestEnv::new();
    env.tool("true");
    let out = env.run(run_tool(&["-i", ""]));
    assert_code(&out, 125);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--input ''"), "{err}");
    assert!(err.contains("is empty"), "{err}");
    assert_eq!(env.count(), 0);
}

#[test]
fn with_path_unset_the_default_search_path_is_used() {
    let env = TestEnv::new();
    env.script("probe", "echo from the work dir\n");
    let unset = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env_remove("PATH");
        cmd.output().unwrap()
    };
    let out = unset(&["run", "--", "echo", "hi"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "hi\n");
    // execvp searches /bin:/usr/bin then, not the working directory.
    assert_code(&unset(&["run", "--", "probe"]), 127);
}

#[test]
fn a_script_without_a_shebang_runs_through_sh() {
    let env = TestEnv::new();
    let count = env.path("count").display().to_string();
    let script = env.write(
        "x",
        format!("echo run >> '{count}'\necho \"$# args: $*\"\n"),
    );
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(["run", "--", "./x", "a b", "c"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "2 args: a b c\n");
    assert!(
        !env.ran(env.memo(["run", "--", "./x", "a b", "c"])),
        "a hit"
    );
    // The key still hashes the script itself.
    fs::write(&script, format!("echo run >> '{count}'\necho edited\n")).unwrap();
    let out = env.run(["run", "--", "./x", "a b", "c"]);
    assert_eq!(stdout(&out), "edited\n");
    assert_eq!(env.count(), 2);
}

#[test]
fn a_script_whose_interpreter_is_missing_is_named() {
    let env = TestEnv::new();
    let script = env.write("x", "#!/no/such/sh -e\necho hi\n");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let out = env.run(["run", "--", "./x"]);
    assert_code(&out, 126);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("interpreter '/no/such/sh'"), "{err}");
    assert!(err.contains("#!"), "{err}");
    assert!(!err.contains("not found ("), "{err}");
}

/// Prepares `env` so that user `nobody` can run memo in it (work dir and cache its own),
/// or says why not. Needs root, which the suite runs as.
fn nobody_can_run_in(env: &TestEnv) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: running memo as another user needs root");
        return false;
    }
    let others_can_enter = |dir: &std::path::Path| {
        dir.ancestors()
            .skip(1)
            .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    };
    if !others_can_enter(std::path::Path::new(MEMO)) {
        eprintln!("skipped: user nobody cannot reach {MEMO}");
        return false;
    }
    fs::set_permissions(env.root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(env.cache()).unwrap();
    for dir in [env.work(), env.cache()] {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    true
}

fn as_nobody(mut cmd: Command) -> std::process::Output {
    cmd.uid(65534).gid(65534);
    cmd.output().unwrap()
}

#[test]
fn an_execute_only_binary_runs_and_is_keyed_on_its_metadata() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    let binary = env.path("echo-xo");
    fs::copy("/bin/echo", &binary).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o711)).unwrap();
    let call = || as_nobody(env.memo(["run", "--verbose", "--", "./echo-xo", "hi"]));
    let first = call();
    assert_success(&first);
    assert_eq!(stdout(&first), "hi\n");
    assert!(stderr(&first).contains("memo: miss"), "{}", stderr(&first));
    let second = call();
    assert_eq!(stdout(&second), "hi\n");
    assert!(stderr(&second).contains("memo: hit"), "{}", stderr(&second));
    // Another mtime is another binary, as far as memo can tell.
    let touched = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(&binary)
        .status()
        .unwrap();
    assert!(touched.success());
    let third = call();
    assert_eq!(stdout(&third), "hi\n");
    assert!(stderr(&third).contains("memo: miss"), "{}", stderr(&third));
}

#[test]
fn a_path_entry_the_user_may_not_execute_is_skipped() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    // Root's own tool: readable by all, executable only by root.
    let mine = env.root.path().join("root-bin");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("tool"), "#!/bin/sh\necho root-only\n").unwrap();
    fs::set_permissions(mine.join("tool"), fs::Permissions::from_mode(0o744)).unwrap();
    let shared = env.root.path().join("shared-bin");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("tool"), "#!/bin/sh\necho shared\n").unwrap();
    fs::set_permissions(shared.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", mine.display(), shared.display());

    let mut direct = Command::new("sh");
    direct
        .args(["-c", "tool"])
        .env("PATH", &path)
        .current_dir(env.work());
    assert_eq!(stdout(&as_nobody(direct)), "shared\n", "what execvp does");

    let mut cmd = env.memo(["run", "--", "tool"]);
    cmd.env("PATH", &path);
    let out = as_nobody(cmd);
    assert_success(&out);
    assert_eq!(stdout(&out), "shared\n");
}
