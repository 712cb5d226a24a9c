//! Issue 8, the running side: memo returns when its command does, stops when it is told
//! to, dies with its command, and never lets its own stdout or stderr break the command.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Waits for `child` to exit, for at most `limit`; `None` if it is still running.
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Kills every pid listed (one a line) in the work dir file `rel`.
fn kill_listed(env: &TestEnv, rel: &str) {
    for pid in fs::read_to_string(env.path(rel))
        .unwrap_or_default()
        .lines()
    {
        if let Ok(pid) = pid.trim().parse() {
            kill(pid, "-KILL");
        }
    }
}

/// Runs `memo ARGS` with stdout and stderr into files of the work dir's parent; returns
/// the child and the two paths.
fn spawn_to_files(
    env: &TestEnv,
    args: &[String],
) -> (Child, std::path::PathBuf, std::path::PathBuf) {
    let out = env.root.path().join("memo.out");
    let err = env.root.path().join("memo.err");
    let child = env
        .memo(args)
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    (child, out, err)
}

#[test]
fn a_background_process_holding_the_output_does_not_hold_memo_and_is_not_stored() {
    let env = TestEnv::new();
    env.tool("sleep 5 & echo $! >> bg.pid; echo ok");
    for round in 1..=2 {
        let (mut child, out, err) = spawn_to_files(&env, &run_tool(&[]));
        let status = wait_at_most(&mut child, Duration::from_secs(4));
        kill_listed(&env, "bg.pid");
        let status = status.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("memo waited for the background process, not for its command")
        });
        assert_eq!(status.code(), Some(0));
        assert_eq!(fs::read_to_string(&out).unwrap(), "ok\n");
        let err = fs::read_to_string(&err).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("memo: warning: ") && err.contains("still holds"),
            "{err}"
        );
        assert_eq!(env.count(), round, "not stored, so it runs again");
    }
    assert!(env.entries().is_empty());
}

#[test]
fn what_a_background_process_writes_later_still_reaches_memos_stdout() {
    let env = TestEnv::new();
    env.tool("(while [ ! -e go ]; do sleep 0.02; done; echo later) & echo ok");
    let (mut child, out, _) = spawn_to_files(&env, &run_tool(&[]));
    let status = wait_at_most(&mut child, Duration::from_secs(4));
    env.write("go", "");
    let status = status.expect("memo waited for the background process");
    assert!(status.success());
    env.eventually("the background output arrives", || {
        fs::read_to_string(&out).unwrap() == "ok\nlater\n"
    });
}

/// Holds an exclusive `flock` on `path` (created if missing) until dropped.
struct HeldLock {
    _file: File,
}

impl HeldLock {
    fn take(path: &std::path::Path) -> HeldLock {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap();
        // SAFETY: flock on a descriptor this File owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        HeldLock { _file: file }
    }
}

#[test]
fn a_signal_after_the_command_exited_stops_memo_at_once_with_128_plus_n() {
    for (sig, number) in [("-TERM", 15), ("-INT", 2)] {
        let env = TestEnv::new();
        env.tool("touch started; while [ ! -e go ]; do sleep 0.02; done; echo done");
        // Separate files for stdout and stderr, as in the `env.run` that replays it.
        let (mut child, _, _) = spawn_to_files(&env, &run_tool(&[]));
        env.wait_for_file("started");
        // memo counts the stored entry in the counter file its pid picks, under a lock:
        // holding that lock keeps memo storing, deterministically, after its command has
        // exited. (The miss itself only appended to the journal: no shard yet.)
        let shard = env
            .cache()
            .join("stats")
            .join(format!("{:02}", child.id() % 16));
        fs::create_dir_all(shard.parent().unwrap()).unwrap();
        let held = HeldLock::take(&shard);
        env.write("go", "");
        env.eventually("the entry is written", || !env.entries().is_empty());
        kill(child.id(), sig);
        let status = wait_at_most(&mut child, Duration::from_secs(3));
        drop(held);
        let status = status.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("memo did not stop on {sig} while it stored")
        });
        assert_eq!(status.code(), Some(128 + number), "{sig}");
        // What was stored before the signal is whole: it replays.
        let out = env.run(run_tool(&[]));
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n");
        assert_eq!(env.count(), 1);
    }
}

#[test]
fn a_follower_never_runs_while_a_killed_holders_command_still_runs() {
    let env = TestEnv::new();
    env.tool(
        ": > out.txt; echo \"start $$\" >> log; echo \"$$ begin\" >> out.txt; sleep 1; \
         echo \"$$ end\" >> out.txt; echo \"end $$\" >> log; echo done",
    );
    let args = run_tool(&["-o", "out.txt"]);
    // Pipes, as the follower has: the same stream mode, so the same key.
    let mut holder = env.spawn_piped(&args);
    env.wait_for_file("log");
    // The follower waits on the key's lock; then only memo itself is killed, not its
    // process group.
    let follower = env.spawn_piped(&args);
    std::thread::sleep(Duration::from_millis(200));
    kill(holder.id(), "-KILL");
    holder.wait().unwrap();
    let out = follower.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "done\n");
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = lines[0].strip_prefix("start ").unwrap();
    let second_start = lines.iter().rposition(|l| l.starts_with("start ")).unwrap();
    assert!(second_start > 0, "{log}");
    let second = lines[second_start].strip_prefix("start ").unwrap();
    assert!(
        !lines[second_start..].contains(&format!("end {first}").as_str()),
        "the first copy still ran after the follower started it again:\n{log}"
    );
    assert_eq!(env.count(), 2);
    // The stored result is one copy's output, whole.
    assert_a_hit_restores_only(&env, &args, second);
}

/// With the command's output removed, the next call is a hit that restores the output
/// of copy `second` alone, whole.
fn assert_a_hit_restores_only(env: &TestEnv, args: &[String], second: &str) {
    fs::remove_file(env.path("out.txt")).unwrap();
    let hit = env.run(args);
    assert_success(&hit);
    assert_eq!(env.count(), 2, "a hit");
    assert_eq!(
        fs::read_to_string(env.path("out.txt")).unwrap(),
        format!("{second} begin\n{second} end\n")
    );
}

/// `memo ARGS` with stderr on a pipe whose reader is gone.
fn with_stderr_reader_gone(mut cmd: Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(Stdio::piped()).stderr(writer).output().unwrap()
}

#[test]
fn memo_runs_the_command_when_its_stderr_reader_went_away_or_is_closed() {
    let env = TestEnv::new();
    env.tool("echo ok");
    // memo's own line after the run (--verbose) has nowhere to go.
    let mut verbose = env.memo(run_tool(&[]));
    verbose.env("MEMO_VERBOSE", "1");
    let out = with_stderr_reader_gone(verbose);
    assert_success(&out);
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(env.count(), 1);
    // Nor has its warning before the run (the default cache cannot be used).
    let blocker = env.root.path().join("not-a-dir");
    fs::write(&blocker, "").unwrap();
    let mut warned = env.memo(run_tool(&[]));
    warned
        .env_remove("MEMO_DIR")
        .env("XDG_CACHE_HOME", &blocker);
    let out = with_stderr_reader_gone(warned);
    assert_success(&out);
    assert_eq!(stdout(&out), "ok\n");
    assert_eq!(env.count(), 2);
    // A closed stderr or stdout.
    for redirect in ["2>&-", ">&- 2>&-"] {
        let script = format!("exec {MEMO} run -- ./tool arg {redirect}");
        let out = Command::new("/bin/sh")
            .args(["-c", &script])
            .current_dir(env.work())
            .env("MEMO_DIR", env.cache())
            .output()
            .unwrap();
        assert_success(&out);
    }
    assert_eq!(env.count(), 4);
}

#[test]
fn a_full_destination_does_not_kill_the_command_and_the_recording_is_stored() {
    // 3 MB: more than the pipe holds, so the command is still writing when memo's first
    // write to the full destination fails.
    for (stream, redirect) in [("stdout", ""), ("stderr", " >&2")] {
        let env = TestEnv::new();
        env.tool(&format!(
            "echo before >&2; echo before; exec head -c 3000000 /dev/zero{redirect}"
        ));
        let full = || File::options().write(true).open("/dev/full").unwrap();
        let mut cmd = env.memo(run_tool(&[]));
        if stream == "stdout" {
            cmd.stdout(full()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped()).stderr(full());
        }
        let out = cmd.output().unwrap();
        assert_success(&out);
        if stream == "stdout" {
            let err = stderr(&out);
            assert!(err.starts_with("before\n"), "{err}");
            assert_eq!(err.matches("memo: warning").count(), 1, "{err}");
            assert!(err.contains("No space left on device"), "{err}");
        }
        // The recording is whole: a hit replays every byte.
        let hit = env.run(run_tool(&[]));
        assert_success(&hit);
        assert_eq!(env.count(), 1, "{stream}: stored");
        let replayed = if stream == "stdout" {
            &hit.stdout
        } else {
            &hit.stderr
        };
        assert_eq!(replayed.len(), "before\n".len() + 3_000_000, "{stream}");
    }
}

#[test]
fn stdin_on_a_full_disk_still_reaches_the_command_whole() {
    let env = TestEnv::new();
    env.tool("cat > copy.bin; echo fed");
    // 2 MB of varied bytes into a 512 KiB cache: spooling fails part-way.
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let input_file = env.root.path().join("input.bin");
    fs::write(&input_file, &input).unwrap();
    let mount_point = env.root.path().join("small");
    let mut cmd = tmpfs_command(&env, &mount_point, "size=512k", "exec \"$@\"");
    cmd.args(run_tool(&["--stdin"]))
        .env("MEMO_DIR", mount_point.join("cache"))
        .stdin(File::open(&input_file).unwrap());
    let Some(out) = mounted(cmd) else {
        return;
    };
    assert_success(&out);
    assert_eq!(stdout(&out), "fed\n");
    assert!(
        env.read("copy.bin") == input,
        "the command got its whole input"
    );
    let err = stderr(&out);
    assert_eq!(err.matches("memo: warning").count(), 1, "{err}");
}

#[test]
fn a_follower_waits_for_what_a_killed_holders_command_left_running() {
    let env = TestEnv::new();
    // The work is done by a child of the tool's shell: it outlives the shell, which dies
    // with memo, and goes on writing the declared output.
    env.tool(
        ": > out.txt; sh -c 'echo \"start $$\" >> log; echo \"$$ begin\" >> out.txt; \
         sleep 1; echo \"$$ end\" >> out.txt; echo \"end $$\" >> log'; echo done",
    );
    let args = run_tool(&["-o", "out.txt"]);
    // Pipes, as the followers have: the same stream mode, so the same key.
    let mut holder = env.spawn_piped(&args);
    env.wait_for_file("log");
    let followers: Vec<Child> = (0..3).map(|_| env.spawn_piped(&args)).collect();
    std::thread::sleep(Duration::from_millis(200));
    kill(holder.id(), "-KILL");
    holder.wait().unwrap();
    for follower in followers {
        let out = follower.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n");
    }
    // What the killed copy left running died before the follower started: it never
    // wrote its end, and nothing of it came after the second start.
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let first = lines[0].strip_prefix("start ").unwrap();
    assert_eq!(lines.len(), 3, "{log}");
    let second = lines[1].strip_prefix("start ").unwrap();
    assert_eq!(
        lines[2],
        format!("end {second}"),
        "the first copy went on beside the follower:\n{log}"
    );
    assert_ne!(first, second);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        fs::read_to_string(env.path("log")).unwrap(),
        log,
        "{first} lived on"
    );
    assert_eq!(env.count(), 2);
    assert_a_hit_restores_only(&env, &args, second);
}

#[test]
fn stdin_reaches_the_command_when_no_staging_file_can_be_made() {
    let env = TestEnv::new();
    env.tool("cat; echo fed");
    // The cache's tmp/ is a symlink (which memo refuses to write through, and does not
    // repair), and the system temp dir is a regular file: --stdin has nowhere to spool
    // its input.
    assert_success(&env.run(run_tool(&[])));
    let tmp = env.cache().join("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let elsewhere = env.root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
    let not_a_dir = env.root.path().join("not-a-dir");
    fs::write(&not_a_dir, "").unwrap();
    let mut cmd = env.memo(run_tool(&["--stdin"]));
    cmd.env("TMPDIR", &not_a_dir);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(b"line one\nline two\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "line one\nline two\nfed\n");
    let err = stderr(&out);
    assert_eq!(err.matches("memo: warning").count(), 1, "{err}");
    assert_eq!(env.count(), 2);
}

#[test]
fn a_signal_ends_memo_even_when_its_stdout_reader_stopped_reading() {
    let env = TestEnv::new();
    // More than a pipe holds: memo is stuck writing to its stdout, which nobody reads,
    // when the signal comes (as with `timeout` and a stalled log reader).
    env.tool("head -c 300000 /dev/zero; touch started; exec sleep 10");
    let mut child = env.spawn_piped(run_tool(&[]));
    env.wait_for_file("started");
    kill(child.id(), "-TERM");
    let status = wait_at_most(&mut child, Duration::from_secs(3));
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("memo hung writing to a stdout nobody reads after its command was killed")
    });
    assert_eq!(status.code(), Some(128 + 15));
    assert!(env.entries().is_empty());
}

#[test]
fn a_full_destination_does_not_kill_what_the_command_left_running() {
    // Whether or not the command itself wrote to the full stderr first.
    for first in ["", "echo before >&2; "] {
        let env = TestEnv::new();
        env.tool(&format!(
            "{first}(while [ ! -e go ]; do sleep 0.02; done; echo late >&2; sleep 0.05; \
             echo again >&2; touch survived) & echo ok"
        ));
        let mut child = env
            .memo(run_tool(&[]))
            .stdout(Stdio::piped())
            .stderr(File::options().write(true).open("/dev/full").unwrap())
            .spawn()
            .unwrap();
        let status = wait_at_most(&mut child, Duration::from_secs(4));
        env.write("go", "");
        assert!(status.expect("memo returns with its command").success());
        env.eventually("the background process writes on, as without memo", || {
            env.path("survived").exists()
        });
    }
}

#[test]
fn a_signal_ignored_when_memo_starts_stays_ignored_for_the_command() {
    use std::os::unix::process::CommandExt;
    // `nohup memo run ...`, or `memo run ... &` in a script (SIGINT and SIGQUIT ignored):
    // a hangup or a Ctrl-C does not end the command, as it would not end it directly.
    for (name, sig) in [("HUP", libc::SIGHUP), ("INT", libc::SIGINT)] {
        let env = TestEnv::new();
        env.tool("touch started; while [ ! -e go ]; do sleep 0.02; done; echo done");
        let script = format!("trap '' {name}; exec {MEMO} run -- ./tool");
        let child = Command::new("/bin/sh")
            .args(["-c", &script])
            .current_dir(env.work())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("MEMO_DIR", env.cache())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        env.wait_for_file("started");
        // To the whole group, as a terminal's hangup or Ctrl-C reaches it.
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(-(child.id() as i32), sig) }, 0);
        std::thread::sleep(Duration::from_millis(100));
        env.write("go", "");
        let out = child.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "done\n", "{name}");
        let hit = env.run(run_tool(&[]));
        assert_success(&hit);
        assert_eq!(
            env.count(),
            1,
            "{name}: stored, not taken for an interruption"
        );
    }
}

#[test]
fn memo_started_with_sigchld_ignored_still_passes_the_exit_code_through() {
    use std::os::unix::process::CommandExt;
    let env = TestEnv::new();
    env.tool("echo hi; exit 3");
    for round in 1..=2 {
        let mut cmd = env.memo(run_tool(&["--cache-failures", "--key-cmd", "echo k"]));
        // SAFETY: signal is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert_code(&out, 3);
        assert_eq!(stdout(&out), "hi\n");
        assert_eq!(stderr(&out), "", "round {round}");
        assert_eq!(env.count(), 1, "round {round}: stored, then replayed");
    }
}

#[test]
fn a_non_blocking_stdout_gets_every_byte_on_a_miss_and_a_hit() {
    // A parent that set O_NONBLOCK on the pipe (node does): a full pipe is a pause,
    // not a failure.
    let env = TestEnv::new();
    env.tool("head -c 1000000 /dev/zero");
    for round in 1..=2 {
        let (mut reader, writer) = std::io::pipe().unwrap();
        // SAFETY: fcntl on a descriptor this pipe owns.
        unsafe {
            let fd = writer.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
        }
        let child = env
            .memo(run_tool(&[]))
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The pipe fills up before anyone reads.
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut got).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(got.len(), 1_000_000, "round {round}");
        assert_eq!(stderr(&out), "", "round {round}");
    }
    assert_eq!(env.count(), 1);
}

/// A descendant that closed every inherited descriptor (Python's `subprocess` does by
/// default) is still found, by the tag in its environment, and ended before a follower
/// runs the command again: the stored result is one copy's alone.
#[test]
fn a_follower_ends_what_a_killed_holder_left_even_with_its_descriptors_closed() {
    let env = TestEnv::new();
    env.write(
        "build.py",
        "import subprocess\n\
         print('build', flush=True)\n\
         subprocess.run(['sh', '-c', 'echo \"start $$\" >> log; sleep 1; \\\n\
             echo \"part $PPID\" >> out.txt; echo \"end $$\" >> log'])\n\
         print('done', flush=True)\n",
    );
    let args = ["run", "-o", "out.txt", "--", "python3", "build.py"];
    let spawn = || env.spawn_piped(args);
    let mut holder = spawn();
    env.wait_for_file("log");
    kill(holder.id(), "-KILL");
    holder.wait().unwrap();
    let out = spawn().wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "build\ndone\n");
    std::thread::sleep(Duration::from_millis(300));
    let log = fs::read_to_string(env.path("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "the killed copy's child lived on:\n{log}");
    let parts = fs::read_to_string(env.path("out.txt")).unwrap();
    assert_eq!(
        parts.lines().count(),
        1,
        "two copies wrote the output:\n{parts}"
    );
    fs::remove_file(env.path("out.txt")).unwrap();
    let hit = env.run(args);
    assert_success(&hit);
    assert_eq!(fs::read_to_string(env.path("out.txt")).unwrap(), parts);
}

/// A large output into a slow reader (`| less`, a rate-limited log shipper) takes
/// longer to deliver than the drain grace after the command exits. That is not a
/// process holding the pipe: the result is stored, with no warning.
#[test]
fn a_large_output_into_a_slow_reader_is_stored_without_a_warning() {
    let env = TestEnv::new();
    env.tool("head -c 3000000 /dev/zero");
    let script = format!(
        "{MEMO:?} run -- ./tool | python3 -c '{}'",
        "import sys,time\nr=sys.stdin.buffer\nn=0\nwhile True:\n    b=r.read(262144)\n    if not b: break\n    n+=len(b); time.sleep(0.05)\nprint(n)"
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(env.work())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("MEMO_DIR", env.cache())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "3000000\n");
    assert_eq!(stderr(&out), "", "a false warning");
    assert!(!env.ran_tool(&[]), "the result was not stored");
}
