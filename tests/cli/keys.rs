//! One test per input of the key (changing it reruns the command) and per non-input
//! (changing it does not).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn the_same_call_runs_once() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert!(env.ran_tool(&[]));
    assert!(!env.ran_tool(&[]));
    assert!(!env.ran_tool(&[]));
    assert_eq!(env.count(), 1);
}

#[test]
fn arguments_invalidate() {
    let env = TestEnv::new();
    env.tool("echo \"$@\"");
    assert!(env.ran(env.memo(["run", "--", "./tool", "a"])));
    assert!(env.ran(env.memo(["run", "--", "./tool", "b"])));
    assert!(!env.ran(env.memo(["run", "--", "./tool", "a"])));
}

#[test]
fn argument_boundaries_invalidate() {
    let env = TestEnv::new();
    env.tool("echo \"$#\"");
    assert!(env.ran(env.memo(["run", "--", "./tool", "a b"])));
    assert!(env.ran(env.memo(["run", "--", "./tool", "a", "b"])));
    let out = env.run(["run", "--", "./tool", "a b"]);
    assert_eq!(stdout(&out), "1\n");
}

#[test]
fn working_directory_invalidates_unless_ignored() {
    let env = TestEnv::new();
    env.tool("echo hi");
    fs::create_dir(env.path("sub")).unwrap();
    let in_sub = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.current_dir(env.path("sub"));
        cmd
    };
    assert!(env.ran(env.memo(["run", "--", "./tool"])));
    assert!(env.ran(in_sub(&["run", "--", "../tool"])));
    assert!(!env.ran(in_sub(&["run", "--", "../tool"])));
    // With --ignore-cwd the same command line in another directory is a hit.
    assert!(env.ran(env.memo(["run", "--ignore-cwd", "--", "./tool"])));
    fs::copy(env.path("tool"), env.path("sub/tool")).unwrap();
    assert!(!env.ran(in_sub(&["run", "--ignore-cwd", "--", "./tool"])));
}

#[test]
fn declared_environment_invalidates() {
    let env = TestEnv::new();
    env.tool("echo \"$MODE\"");
    let with_mode = |value: Option<&str>| {
        let mut cmd = env.memo(run_tool(&["-e", "MODE"]));
        if let Some(v) = value {
            cmd.env("MODE", v);
        }
        cmd
    };
    assert!(env.ran(with_mode(Some("fast"))));
    assert!(!env.ran(with_mode(Some("fast"))));
    assert!(env.ran(with_mode(Some("slow"))));
    // Unset differs from set-and-empty.
    assert!(env.ran(with_mode(None)));
    assert!(env.ran(with_mode(Some(""))));
    assert!(!env.ran(with_mode(None)));
}

#[test]
fn environment_globs_invalidate() {
    let env = TestEnv::new();
    env.tool("env | grep AWS_ | sort");
    let with = |vars: &[(&str, &str)]| {
        let mut cmd = env.memo(run_tool(&["-e", "AWS_*"]));
        cmd.envs(vars.iter().copied());
        cmd
    };
    assert!(env.ran(with(&[("AWS_REGION", "eu")])));
    assert!(!env.ran(with(&[("AWS_REGION", "eu"), ("OTHER", "x")])));
    assert!(env.ran(with(&[("AWS_REGION", "us")])));
    assert!(env.ran(with(&[("AWS_REGION", "us"), ("AWS_PROFILE", "p")])));
}

#[test]
fn undeclared_environment_does_not_invalidate() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let mut first = env.memo(run_tool(&[]));
    first.env("NOISE", "1");
    assert!(env.ran(first));
    let mut second = env.memo(run_tool(&[]));
    second.env("NOISE", "2");
    assert!(!env.ran(second));
}

#[test]
fn editing_the_executable_invalidates() {
    let env = TestEnv::new();
    env.tool("echo v1");
    assert!(env.ran_tool(&[]));
    env.tool("echo v2");
    assert!(env.ran_tool(&[]));
    assert_eq!(stdout(&env.run(run_tool(&[]))), "v2\n");
}

#[test]
fn executables_are_found_on_path() {
    let env = TestEnv::new();
    env.tool("echo from-path");
    let bin = env.path("bin");
    fs::create_dir(&bin).unwrap();
    fs::rename(env.path("tool"), bin.join("tool")).unwrap();
    let path_cmd = || {
        let mut cmd = env.memo(["run", "--", "tool"]);
        cmd.env("PATH", format!("{}:/usr/bin:/bin", bin.display()));
        cmd
    };
    assert!(env.ran(path_cmd()));
    assert!(!env.ran(path_cmd()));
    // An upgraded tool at the same place on PATH invalidates.
    fs::write(
        bin.join("tool"),
        format!(
            "#!/bin/sh\necho run >> {}\necho new\n",
            env.path("count").display()
        ),
    )
    .unwrap();
    assert!(env.ran(path_cmd()));
}

#[test]
fn input_contents_invalidate_but_touch_does_not() {
    let env = TestEnv::new();
    env.tool("cat data.csv");
    env.write("data.csv", "a,b\n");
    assert!(env.ran_tool(&["-i", "data.csv"]));
    assert!(!env.ran_tool(&["-i", "data.csv"]));
    let touched = std::process::Command::new("touch")
        .args(["-d", "2001-01-01", "data.csv"])
        .current_dir(env.work())
        .status()
        .unwrap();
    assert!(touched.success());
    assert!(
        !env.ran_tool(&["-i", "data.csv"]),
        "touch alone must still hit"
    );
    env.write("data.csv", "a,c\n");
    assert!(env.ran_tool(&["-i", "data.csv"]));
    assert_eq!(stdout(&env.run(run_tool(&["-i", "data.csv"]))), "a,c\n");
}

#[test]
fn same_size_same_second_edits_invalidate() {
    // The digest cache must not trust a stat signature for a file changed just now.
    let env = TestEnv::new();
    env.tool("cat data");
    env.write("data", "aaaa");
    assert!(env.ran_tool(&["-i", "data"]));
    env.write("data", "bbbb");
    assert!(env.ran_tool(&["-i", "data"]));
    env.write("data", "aaaa");
    assert!(!env.ran_tool(&["-i", "data"]));
}

#[test]
fn input_directories_invalidate_on_any_file() {
    let env = TestEnv::new();
    env.tool("ls -R src");
    env.write("src/a.txt", "a");
    env.write("src/deep/b.txt", "b");
    assert!(env.ran_tool(&["-i", "src"]));
    assert!(!env.ran_tool(&["-i", "src"]));
    env.write("src/deep/b.txt", "B");
    assert!(env.ran_tool(&["-i", "src"]));
    env.write("src/deep/c.txt", "c");
    assert!(env.ran_tool(&["-i", "src"]));
    fs::remove_file(env.path("src/a.txt")).unwrap();
    assert!(env.ran_tool(&["-i", "src"]));
    fs::rename(env.path("src/deep/c.txt"), env.path("src/deep/d.txt")).unwrap();
    assert!(env.ran_tool(&["-i", "src"]));
    assert!(
        !env.ran_tool(&["-i", "./src/"]),
        "./src/ and src are the same input"
    );
}

#[test]
fn input_exec_bit_invalidates() {
    let env = TestEnv::new();
    env.tool("true");
    let script = env.write("helper.sh", "echo");
    assert!(env.ran_tool(&["-i", "helper.sh"]));
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(env.ran_tool(&["-i", "helper.sh"]));
}

#[test]
fn input_globs_invalidate_on_new_matches() {
    let env = TestEnv::new();
    env.tool("cat data/*.csv");
    env.write("data/a.csv", "1\n");
    env.write("data/notes.txt", "x\n");
    assert!(env.ran_tool(&["-i", "data/*.csv"]));
    env.write("data/notes.txt", "changed\n");
    assert!(
        !env.ran_tool(&["-i", "data/*.csv"]),
        "a file outside the glob changed"
    );
    env.write("data/b.csv", "2\n");
    assert!(env.ran_tool(&["-i", "data/*.csv"]));
}

#[test]
fn order_of_inputs_does_not_matter() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("a", "1");
    env.write("b", "2");
    assert!(env.ran_tool(&["-i", "a", "-i", "b"]));
    assert!(!env.ran_tool(&["-i", "b", "-i", "a"]));
}

#[test]
fn declared_outputs_invalidate() {
    let env = TestEnv::new();
    env.tool("echo x > out1; echo y > out2");
    assert!(env.ran_tool(&["-o", "out1"]));
    assert!(env.ran_tool(&["-o", "out1", "-o", "out2"]));
    assert!(!env.ran_tool(&["-o", "out2", "-o", "out1"]));
}

#[test]
fn salt_invalidates() {
    let env = TestEnv::new();
    env.tool("true");
    assert!(env.ran_tool(&[]));
    assert!(env.ran_tool(&["--salt", "v2"]));
    assert!(!env.ran_tool(&["--salt", "v2"]));
    assert!(env.ran_tool(&["--salt", "v3"]));
}

#[test]
fn key_command_output_invalidates() {
    let env = TestEnv::new();
    env.tool("true");
    env.write("rev", "abc\n");
    assert!(env.ran_tool(&["--key-cmd", "cat rev"]));
    assert!(!env.ran_tool(&["--key-cmd", "cat rev"]));
    env.write("rev", "def\n");
    assert!(env.ran_tool(&["--key-cmd", "cat rev"]));
}

#[test]
fn stdin_invalidates_with_the_stdin_flag() {
    let env = TestEnv::new();
    env.tool("tr a-z A-Z");
    let feed = |input: &str| {
        let before = env.count();
        let out = env.run_with_stdin(run_tool(&["--stdin"]), input.as_bytes());
        assert_success(&out);
        (env.count() > before, stdout(&out))
    };
    assert_eq!(feed("abc\n"), (true, "ABC\n".to_string()));
    assert_eq!(feed("abc\n"), (false, "ABC\n".to_string()));
    assert_eq!(feed("xyz\n"), (true, "XYZ\n".to_string()));
}

#[test]
fn merged_and_separate_streams_are_different_results() {
    let env = TestEnv::new();
    env.tool("echo out; echo err >&2");
    assert!(env.ran_tool(&[]));
    let before = env.count();
    let (code, both) = env.run_merged(run_tool(&[]));
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8(both).unwrap(), "out\nerr\n");
    assert_eq!(
        env.count(),
        before + 1,
        "a separate recording cannot replay merged"
    );
    let (_, again) = env.run_merged(run_tool(&[]));
    assert_eq!(String::from_utf8(again).unwrap(), "out\nerr\n");
    assert_eq!(env.count(), before + 1);
}
