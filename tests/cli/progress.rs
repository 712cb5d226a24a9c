//! Progress bars and Ctrl-C in memo's own long phases (hashing inputs, storing and
//! restoring outputs). `script` gives memo a real pseudo-terminal; the bars are told
//! to show at once (`MEMO_PROGRESS_AFTER_MS=0`) so that a fast machine still draws them.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{stderr, TestEnv, MEMO};

const BIG: &str = "300M";
const BIG_BYTES: u64 = 300 << 20;

/// Creates a sparse file of `size` (as `truncate -s` reads it) in the work dir.
fn sparse(env: &TestEnv, name: &str, size: &str) {
    let status = Command::new("truncate")
        .args(["-s", size, name])
        .current_dir(env.work())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `memo ARGS` on a pseudo-terminal; returns its exit code and everything it wrote.
fn on_terminal(env: &TestEnv, args: &str) -> (i32, String) {
    let out = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("exec {MEMO} {args}"))
        .arg("/dev/null")
        .current_dir(env.work())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", env.root.path().join("home"))
        .env("MEMO_DIR", env.cache())
        .env("MEMO_PROGRESS_AFTER_MS", "0")
        // indicatif draws nothing on a terminal it believes is dumb (TERM unset or "dumb").
        .env("TERM", "xterm")
        .env(
            "MEMO_DEBUG_STORE_RAW",
            if env.raw_objects { "1" } else { "0" },
        )
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[track_caller]
fn assert_bar(output: &str, label: &str) {
    let bar = output
        .split(['\r', '\n'])
        .find(|line| line.contains(&format!("memo: {label} [")))
        .unwrap_or_else(|| panic!("no '{label}' bar in {output:?}"));
    // Bytes done (in B, KiB or MiB: the first frame may come early) out of the total.
    let done_total = bar
        .split_once("B/")
        .is_some_and(|(done, total)| done.ends_with(['i', ' ']) && total.contains("iB"));
    assert!(done_total, "no bytes done/total in {bar:?}");
    assert!(bar.contains("/s"), "no rate in {bar:?}");
}

#[test]
fn hashing_a_large_input_shows_a_bar_in_bytes_on_a_terminal() {
    let env = TestEnv::new();
    env.tool("");
    sparse(&env, "big", BIG);
    let (code, output) = on_terminal(&env, "run -i big -- ./tool");
    assert_eq!(code, 0, "{output}");
    assert_bar(&output, "hashing");
    assert_eq!(env.count(), 1);
}

#[test]
fn storing_and_restoring_a_large_output_show_a_bar_on_a_terminal() {
    let env = TestEnv::new();
    env.tool(&format!("head -c {BIG_BYTES} /dev/zero > out"));
    let (code, output) = on_terminal(&env, "run -o out -- ./tool");
    assert_eq!(code, 0, "{output}");
    assert_bar(&output, "storing");
    fs::remove_file(env.path("out")).unwrap();
    let (code, output) = on_terminal(&env, "run -o out -- ./tool");
    assert_eq!(code, 0, "{output}");
    assert_bar(&output, "restoring");
    assert_eq!(env.count(), 1, "the second run is a hit");
    assert_eq!(fs::metadata(env.path("out")).unwrap().len(), BIG_BYTES);
}

#[test]
fn gc_shows_bars_in_bytes_verified_and_evicted_on_a_terminal() {
    let env = TestEnv::with_raw_objects();
    env.tool(&format!("head -c {BIG_BYTES} /dev/zero > out"));
    let (code, output) = on_terminal(&env, "run -o out -- ./tool");
    assert_eq!(code, 0, "{output}");
    let (code, output) = on_terminal(&env, "gc --verify --max-size 1K");
    assert_eq!(code, 0, "{output}");
    assert_bar(&output, "gc: verifying");
    assert_bar(&output, "gc: evicting");
    assert!(env.objects().is_empty(), "{output}");
}

#[test]
fn nothing_is_drawn_without_a_terminal() {
    let env = TestEnv::new();
    env.tool(&format!("head -c {BIG_BYTES} /dev/zero > out"));
    sparse(&env, "big", BIG);
    let run = || {
        env.memo(["run", "-i", "big", "-o", "out", "--", "./tool"])
            .env("MEMO_PROGRESS_AFTER_MS", "0")
            .output()
            .unwrap()
    };
    let miss = run();
    assert!(miss.status.success(), "{miss:?}");
    assert_eq!(stderr(&miss), "");
    fs::remove_file(env.path("out")).unwrap();
    let hit = run();
    assert!(hit.status.success(), "{hit:?}");
    assert_eq!(stderr(&hit), "", "a hit adds nothing to stderr");
    assert_eq!(env.count(), 1);
}

/// Whether process `pid` has read from its open file `name` (its offset moved on).
fn is_reading(pid: u32, name: &str) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let is_named = fs::read_link(fd.path()).is_ok_and(|target| target.ends_with(name));
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        is_named
            && fs::read_to_string(info).is_ok_and(|info| {
                info.lines()
                    .any(|l| l.starts_with("pos:") && l.trim_end() != "pos:\t0")
            })
    })
}

#[test]
fn ctrl_c_while_hashing_ends_memo_with_130_and_stores_nothing() {
    let env = TestEnv::new();
    env.tool("");
    // Hashing it would take seconds; memo must stop at once.
    sparse(&env, "huge", "64G");
    let memo = env
        .memo(["run", "-i", "huge", "--", "./tool"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_reading(memo.id(), "huge") {
        assert!(Instant::now() < deadline, "memo never started hashing");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: kill has no memory-safety preconditions; the group is memo's own.
    unsafe { libc::kill(-(memo.id() as i32), libc::SIGINT) };
    let out = memo.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_eq!(env.count(), 0, "the command never ran");
    assert!(env.entries().is_empty(), "nothing is stored");
}

/// The file name of the largest object in the cache.
fn largest_object(env: &TestEnv) -> String {
    let object = env
        .objects()
        .into_iter()
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap();
    object.file_name().unwrap().to_string_lossy().into_owned()
}

/// Starts `memo ARGS` in its own process group, waits until it reads from a file named
/// `name`, and sends the group SIGINT, as a Ctrl-C does.
fn interrupt_while_reading(env: &TestEnv, args: &[&str], name: &str) -> std::process::Output {
    let memo = env
        .memo(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_reading(memo.id(), name) {
        assert!(Instant::now() < deadline, "memo never read {name}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill has no memory-safety preconditions; the group is memo's own.
    unsafe { libc::kill(-(memo.id() as i32), libc::SIGINT) };
    memo.wait_with_output().unwrap()
}

#[test]
fn ctrl_c_while_storing_an_output_ends_memo_with_130_and_stores_nothing() {
    let env = TestEnv::new();
    // A sparse 64 GiB output: storing it would take minutes.
    env.tool("truncate -s 64G out");
    let out = interrupt_while_reading(&env, &["run", "-o", "out", "--", "./tool"], "work/out");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_eq!(env.count(), 1);
    assert!(env.entries().is_empty(), "nothing is stored");
    assert!(env.objects().is_empty(), "no object, whole or partial");
    // The user's file is left as the command wrote it.
    assert_eq!(fs::metadata(env.path("out")).unwrap().len(), 64 << 30);
    // The next call runs again: nothing half-stored is taken for a hit.
    env.tool("echo small > out");
    let again = env.run(["run", "-o", "out", "--", "./tool"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(env.count(), 2);
}

#[test]
fn ctrl_c_while_restoring_an_output_ends_memo_with_130_and_leaves_no_partial_file() {
    let env = TestEnv::new();
    env.tool("head -c 1G /dev/zero > out");
    let args = ["run", "-o", "out", "--", "./tool"];
    assert!(env.run(args).status.success());
    let name = largest_object(&env);
    fs::remove_file(env.path("out")).unwrap();
    let out = interrupt_while_reading(&env, &args, &name);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_eq!(env.count(), 1, "the command never ran again");
    assert!(
        !env.path("out").exists(),
        "no partial output where the command's output goes"
    );
    // The next call restores it whole.
    assert!(env.run(args).status.success());
    assert_eq!(env.count(), 1);
    assert_eq!(fs::metadata(env.path("out")).unwrap().len(), 1 << 30);
}

#[test]
fn ctrl_c_while_gc_verifies_ends_memo_with_130_and_loses_nothing() {
    let env = TestEnv::new();
    env.tool("head -c 1G /dev/zero > out");
    let args = ["run", "-o", "out", "--", "./tool"];
    assert!(env.run(args).status.success());
    let name = largest_object(&env);
    let out = interrupt_while_reading(&env, &["gc", "--verify"], &name);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    // The result is whole: a hit restores it without running the command.
    fs::remove_file(env.path("out")).unwrap();
    assert!(env.run(args).status.success());
    assert_eq!(env.count(), 1);
    assert_eq!(fs::metadata(env.path("out")).unwrap().len(), 1 << 30);
}
