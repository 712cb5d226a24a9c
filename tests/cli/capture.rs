//! What a run prints and returns, and that a hit gives back exactly the same.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use crate::support::*;

#[test]
fn binary_output_with_nul_bytes_and_no_trailing_newline_replays_exactly() {
    let env = TestEnv::new();
    env.tool("printf 'a\\000b\\377\\001end'; printf 'e\\000rr' >&2");
    let first = env.run(run_tool(&[]));
    let second = env.run(run_tool(&[]));
    assert_eq!(env.count(), 1);
    assert_eq!(first.stdout, b"a\0b\xff\x01end");
    assert_eq!(first.stderr, b"e\0rr");
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(second.stderr, first.stderr);
}

#[test]
fn large_output_replays_exactly_from_objects() {
    let env = TestEnv::new();
    // 3 MiB of varied bytes: far past the inline limit, several read chunks.
    env.tool("head -c 3145728 /dev/urandom > blob.bin; cat blob.bin; head -c 100000 blob.bin >&2");
    let first = env.run(run_tool(&[]));
    assert_success(&first);
    let blob = env.read("blob.bin");
    assert_eq!(first.stdout, blob);
    let second = env.run(run_tool(&[]));
    assert_eq!(env.count(), 1);
    assert_eq!(second.stdout, blob);
    assert_eq!(second.stderr, &blob[..100000]);
    assert_eq!(env.objects().len(), 2, "stdout and stderr are objects");
}

#[test]
fn empty_output_replays_as_empty() {
    let env = TestEnv::new();
    env.tool("true");
    env.run(run_tool(&[]));
    let out = env.run(run_tool(&[]));
    assert_eq!(env.count(), 1);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn interleaving_under_2_and_1_is_kept_exactly() {
    let env = TestEnv::new();
    env.tool("for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done");
    let expected = "out1\nerr1\nout2\nerr2\nout3\nerr3\nout4\nerr4\nout5\nerr5\n";
    let (code, live) = env.run_merged(run_tool(&[]));
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8(live).unwrap(), expected);
    let (code, replayed) = env.run_merged(run_tool(&[]));
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8(replayed).unwrap(), expected);
    assert_eq!(env.count(), 1);
}

#[test]
fn output_streams_live_while_the_command_runs() {
    let env = TestEnv::new();
    env.tool("echo first; while [ ! -e go ]; do sleep 0.05; done; echo second");
    let mut child = env
        .memo(run_tool(&[]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first line arrives while the command is still blocked waiting for `go`.
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    env.write("go", "");
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
}

#[test]
fn exit_codes_pass_through_and_failures_are_not_stored() {
    let env = TestEnv::new();
    env.tool("echo partial; exit 3");
    let first = env.run(run_tool(&[]));
    assert_code(&first, 3);
    assert_eq!(stdout(&first), "partial\n");
    assert_code(&env.run(run_tool(&[])), 3);
    assert_eq!(env.count(), 2, "a failure is not stored by default");
    assert!(env.entries().is_empty());
}

#[test]
fn cache_failures_stores_and_replays_the_exit_code() {
    let env = TestEnv::new();
    env.tool("echo partial; echo oops >&2; exit 3");
    assert_code(&env.run(run_tool(&["--cache-failures"])), 3);
    let replayed = env.run(run_tool(&["--cache-failures"]));
    assert_code(&replayed, 3);
    assert_eq!(stdout(&replayed), "partial\n");
    assert_eq!(stderr(&replayed), "oops\n");
    assert_eq!(env.count(), 1);
    // Without the flag, a stored failure is not replayed.
    assert_code(&env.run(run_tool(&[])), 3);
    assert_eq!(env.count(), 2);
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_n_and_is_not_stored() {
    let env = TestEnv::new();
    env.tool("echo before; kill -TERM $$");
    assert_code(&env.run(run_tool(&[])), 128 + 15);
    assert_code(&env.run(run_tool(&[])), 128 + 15);
    assert_eq!(env.count(), 2);
    assert!(env.entries().is_empty());
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_to_memo_reaches_the_command_and_nothing_is_stored() {
    let env = TestEnv::new();
    env.tool("touch started; sleep 30; echo done");
    let child = env.spawn_piped(run_tool(&[]));
    env.wait_for_file("started");
    signal(child.id(), "-TERM");
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 128 + 15);
    assert!(env.entries().is_empty());
}

#[test]
fn an_interrupted_command_that_exits_cleanly_is_not_stored() {
    let env = TestEnv::new();
    // The command catches SIGINT and exits 0: its result is still not trustworthy.
    env.tool("trap 'echo caught; exit 0' INT; touch started; while :; do sleep 0.05; done");
    let child = env
        .memo(run_tool(&[]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for_file("started");
    signal(child.id(), "-INT");
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "caught\n");
    assert!(env.entries().is_empty());
}

#[test]
fn the_command_gets_dev_null_as_stdin_by_default() {
    let env = TestEnv::new();
    env.tool("wc -c");
    let out = env.run_with_stdin(run_tool(&[]), b"not for the command\n");
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
fn memo_never_swallows_the_callers_stdin() {
    let env = TestEnv::new();
    env.tool("echo \"got $1\"");
    let script = format!(
        "printf 'a\\nb\\nc\\n' | while read line; do {memo} run -- ./tool \"$line\"; done",
        memo = MEMO
    );
    let result = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .current_dir(env.work())
        .env("MEMO_DIR", env.cache())
        .output()
        .unwrap();
    assert_success(&result);
    assert_eq!(stdout(&result), "got a\ngot b\ngot c\n");
}

#[test]
fn stdin_flag_feeds_the_command_and_replays() {
    let env = TestEnv::new();
    env.tool("sort");
    let feed = || env.run_with_stdin(run_tool(&["--stdin"]), b"b\na\nc\n");
    assert_eq!(stdout(&feed()), "a\nb\nc\n");
    assert_eq!(stdout(&feed()), "a\nb\nc\n");
    assert_eq!(env.count(), 1);
}

#[test]
fn a_closed_reader_cuts_the_command_off_and_nothing_is_stored() {
    let env = TestEnv::new();
    env.tool("i=0; while [ $i -lt 100000 ]; do echo line $i; i=$((i+1)); done");
    let script = format!("{MEMO} run -- ./tool | head -n 1");
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .current_dir(env.work())
        .env("MEMO_DIR", env.cache())
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "line 0\n");
    assert!(env.entries().is_empty(), "a cut-off run is not a result");
}

/// Ctrl-C typed at a terminal: the terminal sends SIGINT to the whole foreground process
/// group, so the command gets it directly; memo must survive it long enough to let the
/// command finish, pass its output on, and store nothing. `script` gives memo a real
/// pseudo-terminal (so stdout and stderr are one stream, as in an interactive shell).
/// The SHELL `script` starts is whatever CI has, so the test holds under dash and bash.
#[test]
fn ctrl_c_at_a_terminal_reaches_the_command_and_nothing_is_stored() {
    let env = TestEnv::new();
    env.tool("trap 'echo caught; exit 0' INT; touch started; while :; do sleep 0.05; done");
    let mut child = std::process::Command::new("script")
        .args(["-q", "-f", "-e", "-c"])
        // `exec`: memo is the terminal's foreground job itself, as under an interactive
        // shell. Without it a non-interactive /bin/sh (dash) waits in between and dies of
        // the same Ctrl-C.
        .arg(format!("exec {MEMO} run -- ./tool"))
        .arg("/dev/null")
        .current_dir(env.work())
        .env("MEMO_DIR", env.cache())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    env.wait_for_file("started");
    let mut keyboard = child.stdin.take().unwrap();
    keyboard.write_all(b"\x03").unwrap();
    keyboard.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(keyboard);
    assert!(stdout(&out).contains("caught"), "{out:?}");
    assert_success(&out);
    assert!(env.entries().is_empty());
}
