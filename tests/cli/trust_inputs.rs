//! Issue 8, inputs: the race guard watches everything the key was computed from and
//! decides by content; an input directory's structure is keyed; commands are found and
//! started as execvp finds and starts them.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
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
    let out = as_nobody(direct);
    assert_eq!(
        stdout(&out),
        "shared\n",
        "what execvp does: {}",
        stderr(&out)
    );

    let mut cmd = env.memo(["run", "--", "tool"]);
    cmd.env("PATH", &path);
    let out = as_nobody(cmd);
    assert_success(&out);
    assert_eq!(stdout(&out), "shared\n");
}

#[test]
fn a_script_whose_interpreter_cannot_run_names_the_interpreter() {
    let env = TestEnv::new();
    // Windows line endings: the kernel looks for "/bin/sh\r", which does not exist
    // (refused as any missing interpreter, see docs/key.md).
    let crlf = env.write("crlf", "#!/bin/sh\r\necho hi\r\n");
    // An interpreter that exists but is not executable.
    let data = env.write("data.txt", "not a program\n");
    let plain = env.write("plain", format!("#!{}\necho hi\n", data.display()));
    for script in [&crlf, &plain] {
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = env.run(["run", "--", "./crlf"]);
    assert_code(&out, 126);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("interpreter '/bin/sh\\r'"), "{err}");
    assert!(err.contains("CRLF"), "{err}");
    assert!(!err.contains("not found ("), "{err}");

    let out = env.run(["run", "--", "./plain"]);
    assert_code(&out, 126);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("interpreter '{}'", data.display())),
        "{err}"
    );
    assert!(
        !err.contains("chmod +x it"),
        "the script is executable: {err}"
    );
}

#[test]
fn a_command_in_a_directory_the_user_may_not_search_cannot_be_executed() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    let locked = env.root.path().join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("tool"), "#!/bin/sh\necho locked\n").unwrap();
    fs::set_permissions(locked.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let tool = locked.join("tool");

    // execve fails with EACCES: 126, as `env` and the shells report it, not 127.
    let mut direct = Command::new("env");
    direct.arg(&tool).current_dir(env.work());
    assert_code(&as_nobody(direct), 126);
    let out = as_nobody(env.memo([OsStr::new("run"), OsStr::new("--"), tool.as_os_str()]));
    assert_code(&out, 126);
    let err = stderr(&out);
    assert!(err.contains("ermission denied"), "{err}");
    assert!(!err.contains("not found"), "{err}");
}

#[test]
fn a_path_declared_both_ways_in_other_spellings_may_still_change() {
    let env = TestEnv::new();
    env.tool("sort -o f f");
    let work = env.work();
    let name = work.file_name().unwrap().to_str().unwrap().to_string();
    let via_parent = format!("../{name}/f");
    std::os::unix::fs::symlink(".", env.path("here")).unwrap();
    for (input, output) in [
        ("f", via_parent.as_str()),
        (via_parent.as_str(), "f"),
        ("f", "sub/../f"),
        // The same file through a symlink.
        ("f", "here/f"),
        ("here/f", "f"),
    ] {
        let _ = fs::remove_dir_all(env.cache());
        fs::create_dir_all(env.path("sub")).unwrap();
        env.write("f", "b\na\n");
        let out = env.run(run_tool(&["-i", input, "-o", output]));
        assert_success(&out);
        assert_eq!(stderr(&out), "", "-i {input} -o {output}");
        assert_eq!(env.entries().len(), 1, "-i {input} -o {output}: stored");
        assert_eq!(env.read("f"), b"a\nb\n");
    }
}

#[test]
fn a_stale_window_follows_a_ttl_from_any_source() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let out = env
        .memo(run_tool(&["--stale", "5m"]))
        .env("MEMO_TTL", "1m")
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stderr(&out), "");
    assert_eq!(env.count(), 1);

    // A stale window without a TTL means nothing: one line naming the fix, whichever way
    // it was given, and nothing runs.
    for (args, vars) in [
        (run_tool(&["--stale", "5m"]), vec![]),
        (run_tool(&[]), vec![("MEMO_STALE", "5m")]),
    ] {
        let out = env.memo(&args).envs(vars).output().unwrap();
        assert_code(&out, 125);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--ttl"), "{err}");
        assert!(err.contains("stale"), "{err}");
    }
    assert_eq!(env.count(), 1);
}

#[test]
fn the_cache_directory_inside_an_input_directory_is_not_an_input() {
    let env = TestEnv::new();
    env.tool("cat src/a.txt");
    env.write("src/a.txt", "a\n");
    for (cache, input) in [
        ("src/.memo", "src"),
        ("src/deep/cache", "src"),
        ("src/.memo", "src/**/*"),
    ] {
        let _ = fs::remove_file(env.path("count"));
        let _ = fs::remove_dir_all(env.path(cache));
        let call = || {
            let mut cmd = env.memo(run_tool(&["-i", input]));
            cmd.env("MEMO_DIR", env.path(cache));
            let out = cmd.output().unwrap();
            assert_success(&out);
            assert_eq!(stderr(&out), "", "with the cache at {cache}");
        };
        call();
        call();
        assert_eq!(env.count(), 1, "with the cache at {cache}: a hit");
        env.write("src/a.txt", format!("{cache}\n"));
        call();
        assert_eq!(env.count(), 2, "the other files are still inputs");
    }
}

#[test]
fn a_file_replaced_by_a_symlink_to_the_same_bytes_changes_the_key() {
    use std::os::unix::fs::symlink;
    let env = TestEnv::new();
    // What `tar` (or `ls -l`, `find -type l`, `cp -a`) records differs for a link.
    env.tool("find src -type l | sort");
    env.write("src/a.txt", "a\n");
    env.write("src/d/x", "x\n");
    env.write("shared/a.txt", "a\n");
    env.write("shared/d/x", "x\n");
    for input in ["src", "src/*"] {
        let args = ["-i", input];
        let _ = fs::remove_dir_all(env.cache());
        fs::remove_file(env.path("src/a.txt")).unwrap();
        env.write("src/a.txt", "a\n");
        assert!(env.ran_tool(&args));
        assert!(!env.ran_tool(&args));
        // A file, then a directory, replaced by a link to the same contents.
        fs::remove_file(env.path("src/a.txt")).unwrap();
        symlink("../shared/a.txt", env.path("src/a.txt")).unwrap();
        assert!(env.ran_tool(&args), "{input}: a.txt became a link");
        assert_eq!(stdout(&env.run(run_tool(&args))), "src/a.txt\n");
        fs::remove_dir_all(env.path("src/d")).unwrap();
        symlink("../shared/d", env.path("src/d")).unwrap();
        assert!(env.ran_tool(&args), "{input}: d became a link");
        // A link retargeted to other bytes, and back.
        fs::remove_file(env.path("src/a.txt")).unwrap();
        symlink("../shared/d/x", env.path("src/a.txt")).unwrap();
        assert!(env.ran_tool(&args), "{input}: the link was retargeted");
        fs::remove_file(env.path("src/a.txt")).unwrap();
        symlink("../shared/a.txt", env.path("src/a.txt")).unwrap();
        assert!(!env.ran_tool(&args), "{input}: back to the earlier link");
        // Unchanged links do not block storing.
        let out = env.run(run_tool(&["--force", "-i", input]));
        assert_eq!(stderr(&out), "", "{input}");
        // The link also named by itself (followed there), in either order.
        for both in [
            ["-i", "src/a.txt", "-i", input],
            ["-i", input, "-i", "src/a.txt"],
        ] {
            let out = env.run(run_tool(&[&["--force"][..], &both].concat()));
            assert_eq!(stderr(&out), "", "{both:?}");
        }
        // Put the directory back for the next round.
        fs::remove_file(env.path("src/d")).unwrap();
        env.write("src/d/x", "x\n");
    }
}
