//! How the command is started (without a copy of memo) and how its output is read (on
//! memo's own thread): what the command inherits, and what reaches memo's stdout and
//! stderr and the cache.

use std::os::unix::process::CommandExt;

use crate::support::*;

/// The `Sig*` masks of a shell's /proc status, in hexadecimal.
fn signal_masks(out: &str) -> (u64, u64) {
    let field = |name: &str| {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    (field("SigBlk:"), field("SigIgn:"))
}

#[test]
fn the_command_starts_with_no_signal_blocked_and_sigpipe_at_its_default() {
    let env = TestEnv::new();
    // Read by the process the command execs into: a shell blocks every signal while it
    // forks a child, so a child reading the shell's status could see that instead.
    env.tool("exec grep -E '^Sig(Blk|Ign):' /proc/self/status");
    let mut cmd = env.memo(run_tool(&[]));
    // memo's parent blocked SIGUSR1 and SIGTERM: the command starts with none blocked,
    // as under std's Command.
    // SAFETY: sigprocmask is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_success(&out);
    let (blocked, ignored) = signal_masks(&stdout(&out));
    assert_eq!(blocked, 0, "{}", stdout(&out));
    let bit = |sig: i32| 1u64 << (sig - 1);
    assert_eq!(ignored & bit(libc::SIGPIPE), 0, "SIGPIPE ignored");
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        assert_eq!(ignored & bit(sig), 0, "signal {sig} ignored");
    }
}

#[test]
fn a_script_without_an_interpreter_line_runs_under_the_shell() {
    let env = TestEnv::new();
    // No `#!`: execve says ENOEXEC and the command runs under /bin/sh, as from a shell.
    env.write("plain", "echo run >> count\necho from plain\n");
    std::fs::set_permissions(
        env.path("plain"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for _ in 0..2 {
        let out = env.run(["run", "--", "./plain"]);
        assert_success(&out);
        assert_eq!(stdout(&out), "from plain\n");
    }
    assert_eq!(env.count(), 1);
}

#[test]
fn a_command_that_cannot_start_is_reported_and_nothing_is_stored() {
    let env = TestEnv::new();
    // An interpreter that does not exist: found, executable, and exec fails (ENOENT).
    env.write("broken", "#!/nonexistent/interpreter\necho hi\n");
    std::fs::set_permissions(
        env.path("broken"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = env.run(["run", "--", "./broken"]);
    assert!(!out.status.success());
    assert!(stderr(&out).starts_with("memo: "), "{}", stderr(&out));
    assert!(env.entries().is_empty());
}

#[test]
fn large_output_on_both_streams_at_once_is_forwarded_and_recorded_whole() {
    let env = TestEnv::new();
    // Both streams past the in-memory buffer, written at the same time.
    env.tool(
        "head -c 3000000 /dev/urandom > a.bin; head -c 2500000 /dev/urandom > b.bin; \
         cat a.bin & cat b.bin >&2; wait",
    );
    let first = env.run(run_tool(&[]));
    assert_success(&first);
    let (a, b) = (env.read("a.bin"), env.read("b.bin"));
    assert!(
        first.stdout == a && first.stderr == b,
        "live output differs"
    );
    let second = env.run(run_tool(&[]));
    assert_eq!(env.count(), 1);
    assert!(second.stdout == a && second.stderr == b, "replay differs");
}

#[test]
fn a_command_that_closes_its_stdout_early_is_still_waited_for() {
    let env = TestEnv::new();
    env.tool("echo first; exec >&-; sleep 0.3; echo late >&2; exit 4");
    let out = env.run(run_tool(&["--cache-failures"]));
    assert_code(&out, 4);
    assert_eq!(stdout(&out), "first\n");
    assert_eq!(stderr(&out), "late\n");
    let hit = env.run(run_tool(&["--cache-failures"]));
    assert_code(&hit, 4);
    assert_eq!(stderr(&hit), "late\n");
    assert_eq!(env.count(), 1);
}

#[test]
fn the_command_sees_a_broken_pipe_when_memos_reader_goes_away() {
    let env = TestEnv::new();
    // `memo run -- yes | head -1`: memo's stdout closes; `yes` must then die of
    // SIGPIPE as it would without memo, not run on for ever, and nothing is stored.
    env.tool("exec yes");
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{MEMO} run -- ./tool | head -1"))
        .current_dir(env.work())
        .env("MEMO_DIR", env.cache())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().next(), Some("y"));
    assert!(env.entries().is_empty());
}

#[test]
fn a_signal_ends_memo_stuck_writing_large_output_to_a_reader_that_stopped() {
    use std::io::Read;
    let env = TestEnv::new();
    // Past the in-memory buffer (a recorder thread is writing the rest to staging), then
    // memo's stdout reader stops reading while memo is writing to it.
    env.tool("head -c 3000000 /dev/zero; touch started; exec sleep 10");
    let mut child = env.spawn_piped(run_tool(&[]));
    let mut out = child.stdout.take().unwrap();
    let mut got = vec![0u8; 1_500_000];
    out.read_exact(&mut got).unwrap();
    // memo is then stuck writing to its stdout, or (when the pipes between hold the rest)
    // the command got to write it all. Which one depends on how large the pipes could be
    // made, which a busy machine's pipe quota decides.
    let wchan = format!("/proc/{}/wchan", child.id());
    env.eventually("memo stuck writing, or the command done writing", || {
        env.work().join("started").exists()
            || std::fs::read_to_string(&wchan).is_ok_and(|w| w.contains("pipe_write"))
    });
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut status = None;
    for _ in 0..150 {
        if let Some(done) = child.try_wait().unwrap() {
            status = Some(done);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("memo hung writing to a stdout nobody reads after its command was killed")
    });
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(env.entries().is_empty());
    drop(out);
}

/// A program open for writing cannot be executed (ETXTBSY): memo tries again for a
/// while (someone is writing it this very moment, or a process that forked while it
/// was written has not reached its exec yet), then says so.
#[test]
fn a_program_busy_being_written_is_started_once_it_is_closed_or_refused_after_a_while() {
    for traced in [false, true] {
        if traced && !traceable() {
            continue;
        }
        let trace: &[&str] = if traced { &["--trace"] } else { &[] };
        let env = TestEnv::new();
        env.tool("echo ran");
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(env.path("tool"))
            .unwrap();
        let memo = env
            .memo(["run"].iter().chain(trace).chain(&["--", "./tool"]))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        drop(writer);
        let out = memo.wait_with_output().unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "ran\n", "traced: {traced}");
        assert_eq!(env.count(), 1);

        // Held open for good: the usual error, and the exit code of a program that
        // cannot be executed.
        env.tool("echo other");
        let _writer = std::fs::OpenOptions::new()
            .append(true)
            .open(env.path("tool"))
            .unwrap();
        let out = env.run(["run"].iter().chain(trace).chain(&["--", "./tool"]));
        assert_code(&out, 126);
        let err = stderr(&out);
        assert!(
            err.contains("cannot be executed") && err.contains("busy"),
            "traced: {traced}: {err}"
        );
        assert_eq!(env.count(), 1, "nothing ran");
    }
}
