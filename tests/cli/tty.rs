//! `--tty` (issue 10): the command runs on a pseudo-terminal when memo's stdout and
//! stderr are a terminal, its recording is keyed apart from a pipe recording and replayed
//! only to a terminal. memo is given a real pseudo-terminal here, opened by the test
//! (to choose its width) or by `script` (util-linux).

use std::io::Read;
use std::process::{Command, Stdio};

use crate::support::*;

/// Runs `cmd` with stdout and stderr on a terminal `columns` wide; returns its exit code
/// and everything it wrote there.
fn on_terminal(mut cmd: Command, columns: u16) -> (i32, String) {
    let (mut master, slave) = open_pty(columns);
    cmd.stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .env("TERM", "xterm");
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // EIO: no process holds the slave any more.
            Err(_) => break,
        }
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// The setup: a directory `d` with an executable file and a subdirectory, which
/// `ls --color=auto` colours on a terminal only; the tool counts its runs.
fn colour_env() -> TestEnv {
    let env = TestEnv::new();
    env.tool("ls --color=auto d; python3 -c 'import sys; print(\"tty\", sys.stdout.isatty(), sys.stderr.isatty())'; exit 3");
    env.script("d/run.sh", "true");
    std::fs::create_dir(env.path("d/sub")).unwrap();
    env
}

const COLOUR: &str = "\x1b[";

fn tool_args(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "--cache-failures"].map(String::from).to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--", "./tool"].map(String::from));
    args
}

#[test]
fn a_tty_run_sees_a_terminal_and_its_hit_replays_the_colours_without_running() {
    let env = colour_env();
    let (code, first) = on_terminal(env.memo(tool_args(&["--tty"])), 100);
    assert_eq!(code, 3, "{first}");
    assert!(first.contains(COLOUR), "ls coloured its output: {first:?}");
    assert!(first.contains("tty True True"), "{first:?}");
    assert_eq!(env.count(), 1);

    let (code, second) = on_terminal(env.memo(tool_args(&["--tty", "-v"])), 100);
    assert_eq!(code, 3, "{second}");
    assert_eq!(env.count(), 1, "a hit: {second:?}");
    assert!(second.contains("memo: hit"), "{second:?}");
    let replayed = second.split("memo: hit").next().unwrap();
    assert!(replayed.contains(COLOUR), "{replayed:?}");
    assert!(replayed.contains("tty True True"), "{replayed:?}");
    assert!(replayed.contains("run.sh") && replayed.contains("sub"));
}

#[test]
fn a_tty_recording_is_not_replayed_to_pipes_and_a_pipe_recording_not_to_a_terminal() {
    let env = colour_env();
    on_terminal(env.memo(tool_args(&["--tty"])), 100);
    assert_eq!(env.count(), 1);

    // The same call with pipes: --tty is ignored with one note, and the run is an
    // ordinary one (no colours), keyed apart.
    let out = env.run(tool_args(&["--tty"]));
    assert_code(&out, 3);
    assert_eq!(env.count(), 2, "not a hit of the terminal recording");
    assert!(!stdout(&out).contains(COLOUR), "{}", stdout(&out));
    assert!(stdout(&out).contains("tty False False"));
    let err = stderr(&out);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("--tty"))
        .map(|l| l.trim())
        .collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("not both a terminal"), "{}", notes[0]);

    // And the pipe recording is a hit for pipes, with --tty or without.
    let out = env.run(tool_args(&[]));
    assert_code(&out, 3);
    assert_eq!(env.count(), 2);

    // A terminal without --tty: memo's own pipes, as always, keyed apart from --tty.
    let (_, plain) = on_terminal(env.memo(tool_args(&[])), 100);
    assert_eq!(env.count(), 3, "{plain:?}");
    assert!(plain.contains("tty False False"), "{plain:?}");
    // The --tty recording still replays to a terminal.
    on_terminal(env.memo(tool_args(&["--tty"])), 100);
    assert_eq!(env.count(), 3);
}

#[test]
fn the_terminal_width_is_part_of_the_key() {
    let env = TestEnv::new();
    env.tool("python3 -c 'import os; print(\"cols\", os.get_terminal_size().columns)'");
    let args = ["run", "--tty", "--", "./tool"];
    let (_, wide) = on_terminal(env.memo(args), 120);
    assert!(
        wide.contains("cols 120"),
        "the pseudo-terminal has memo's width: {wide:?}"
    );
    on_terminal(env.memo(args), 120);
    assert_eq!(env.count(), 1);
    let (_, narrow) = on_terminal(env.memo(args), 60);
    assert_eq!(env.count(), 2);
    assert!(narrow.contains("cols 60"), "{narrow:?}");

    // explain says why in words.
    let (_, why) = on_terminal(env.memo(["explain", "--tty", "--", "./tool"]), 90);
    assert!(why.contains("columns wide"), "{why:?}");
}

#[test]
fn tty_from_the_config_file_or_the_environment() {
    let env = colour_env();
    let config = env.write("memo.toml", "tty = true\n");
    let mut cmd = env.memo(tool_args(&[]));
    cmd.env("MEMO_CONFIG", &config);
    let (_, out) = on_terminal(cmd, 100);
    assert!(out.contains("tty True True"), "{out:?}");
    assert_eq!(env.count(), 1);

    // The config file's standing preference is quiet where there is no terminal.
    let out = env
        .memo(tool_args(&[]))
        .env("MEMO_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(env.count(), 2);
    assert!(!stderr(&out).contains("--tty"), "{}", stderr(&out));
    assert!(stdout(&out).contains("tty False False"));

    // MEMO_TTY=1 is --tty: a hit of the terminal recording.
    let mut cmd = env.memo(tool_args(&["-v"]));
    cmd.env("MEMO_TTY", "1");
    let (_, out) = on_terminal(cmd, 100);
    assert_eq!(env.count(), 2, "{out:?}");
    assert!(out.contains(COLOUR));

    // memo config shows where the setting comes from.
    let out = env
        .memo(["config"])
        .env("MEMO_CONFIG", &config)
        .output()
        .unwrap();
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("tty") && l.contains("true")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn show_tells_a_terminal_recording() {
    let env = colour_env();
    on_terminal(env.memo(tool_args(&["--tty"])), 100);
    let ls = env.run(["ls", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let key = entries[0]["key"].as_str().unwrap().to_string();
    let out = env.run(["show", &key]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("terminal (--tty, 100 columns)"),
        "{}",
        stdout(&out)
    );
    let out = env.run(["show", &key, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["streams"]["mode"], "terminal", "{shown}");
    assert_eq!(shown["streams"]["columns"], 100);
    // The recording, as the terminal got it.
    let out = env.run(["show", &key, "--stdout"]);
    assert!(stdout(&out).contains(COLOUR));
}

/// The issue's own check: `script` gives memo a terminal, and `ls --color=auto` colours
/// its output on the miss and on the hit.
#[test]
fn under_script_the_colours_survive_the_hit() {
    let env = TestEnv::new();
    env.script("d/run.sh", "true");
    let script = |args: &str| {
        Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!("exec {MEMO} {args}"))
            .arg("/dev/null")
            .current_dir(env.work())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", env.root.path().join("home"))
            .env("MEMO_DIR", env.cache())
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux) runs")
    };
    let first = script("run --tty -- ls --color=auto d");
    assert!(stdout(&first).contains(COLOUR), "{}", stdout(&first));
    let second = script("run --tty -v -- ls --color=auto d");
    let text = stdout(&second);
    assert!(text.contains("memo: hit"), "{text:?}");
    assert!(text.contains(COLOUR), "{text:?}");
    // Without --tty, ls sees a pipe: no colours.
    let plain = script("run -- ls --color=auto d");
    assert!(!stdout(&plain).contains(COLOUR), "{}", stdout(&plain));
}

#[test]
fn a_signal_and_a_failing_command_pass_through_on_a_terminal() {
    let env = TestEnv::new();
    env.tool("echo before; kill -TERM $$");
    let (code, out) = on_terminal(env.memo(["run", "--tty", "--", "./tool"]), 80);
    assert_eq!(code, 128 + 15, "{out:?}");
    assert!(out.contains("before"));
    assert!(env.entries().is_empty(), "a killed run is not stored");
}
