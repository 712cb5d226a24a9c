//! The tracer against real programs. Each test skips (with a message) where the kernel
//! refuses ptrace or seccomp.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{spawn, Access, Ended, Event, Launch, Privilege, Special, Trace, Untrusted};

struct Run {
    ended: Ended,
    trace: Trace,
    stdout: String,
}

fn which(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
        let candidate = Path::new(dir).join(program);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("{program} is not installed");
}

/// Runs `argv` (argv[0] looked up in the usual directories) traced.
fn traced(argv: &[&str]) -> Run {
    let program = which(argv[0]);
    let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
    // The command's stdout is a pipe read by another thread while `run` waits, as memo
    // reads it.
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just made both; each is owned once.
    let (mut read_end, write_end) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        read_end.read_to_string(&mut text).unwrap();
        text
    });
    let launch = Launch {
        program: &program,
        argv: &argv,
        stdin: None,
        stdout: write_end.as_raw_fd(),
        stderr: 2,
        inherit: None,
    };
    let tracee = spawn(&launch).expect("spawn");
    drop(write_end);
    let (ended, trace) = tracee.run();
    Run {
        ended: ended.expect("wait"),
        trace,
        stdout: reader.join().unwrap(),
    }
}

fn sh(script: &str) -> Run {
    traced(&["sh", "-c", script])
}

/// Whether tracing works here; says why not on stderr.
fn can_trace() -> bool {
    let run = traced(&["true"]);
    match run.trace.untrusted {
        Some(Untrusted::Refused(why)) => {
            eprintln!("skipped: ptrace was refused here: {why}");
            false
        }
        _ => true,
    }
}

macro_rules! require_tracing {
    () => {
        if !can_trace() {
            return;
        }
    };
}

fn events_at<'a>(trace: &'a Trace, path: &Path) -> Vec<&'a Access> {
    trace
        .events
        .iter()
        .filter(|e| e.path == path)
        .map(|e| &e.access)
        .collect()
}

#[track_caller]
fn assert_event(trace: &Trace, path: &Path, wanted: impl Fn(&Access) -> bool, what: &str) {
    let found = events_at(trace, path);
    assert!(
        found.iter().any(|a| wanted(a)),
        "no {what} of {} among {found:?}\nall events:\n{}",
        path.display(),
        dump(&trace.events)
    );
}

fn dump(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("  {:?} {}\n", e.access, e.path.display()))
        .collect()
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// A directory whose path has no symlink in it, so that lexical paths match.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let real = fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        real,
        dir.path(),
        "the temporary directory is behind a symlink"
    );
    dir
}

#[test]
fn cat_reads_its_file_and_the_output_reaches_the_given_descriptor() {
    require_tracing!();
    let dir = workdir();
    let file = dir.path().join("input.txt");
    fs::write(&file, "hello from the file\n").unwrap();
    let run = traced(&["cat", file.to_str().unwrap()]);
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(run.stdout, "hello from the file\n");
    assert_eq!(run.trace.untrusted, None);
    assert_event(&run.trace, &file, |a| *a == Access::Read, "read");
    let read = run.trace.events.iter().find(|e| e.path == file).unwrap();
    assert_eq!(read.meta.map(|m| m.size), Some(20));
    assert_event(&run.trace, &which("cat"), |a| *a == Access::Exec, "exec");
}

#[test]
fn a_shell_finds_cat_through_path_and_reads_a_relative_config() {
    require_tracing!();
    let dir = workdir();
    fs::write(dir.path().join("cfg"), "setting=1\n").unwrap();
    let missing = dir.path().join("nothing-here");
    let run = sh(&format!(
        "PATH={}:/usr/bin:/bin; cd {} && cat cfg",
        missing.display(),
        shell_quote(dir.path())
    ));
    assert_eq!(run.stdout, "setting=1\n");
    assert_event(
        &run.trace,
        &missing.join("cat"),
        |a| *a == Access::Absent,
        "absent probe",
    );
    assert_event(
        &run.trace,
        &dir.path().join("cfg"),
        |a| *a == Access::Read,
        "read",
    );
    assert!(
        run.trace
            .events
            .iter()
            .any(|e| e.access == Access::Exec && e.path.ends_with("cat")),
        "{}",
        dump(&run.trace.events)
    );
}

#[test]
fn a_script_executed_reads_its_interpreter_and_the_loader() {
    require_tracing!();
    let dir = workdir();
    let script = dir.path().join("script");
    fs::write(&script, "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let run = traced(&["sh", "-c", script.to_str().unwrap()]);
    assert_eq!(run.stdout, "run\n");
    assert_event(&run.trace, &script, |a| *a == Access::Exec, "exec");
    assert_event(
        &run.trace,
        Path::new("/bin/sh"),
        |a| *a == Access::Read,
        "read of the #! interpreter",
    );
    assert!(
        run.trace
            .events
            .iter()
            .any(|e| e.access == Access::Read && e.path.to_string_lossy().contains("ld-linux")),
        "no read of the ELF loader:\n{}",
        dump(&run.trace.events)
    );
}

#[test]
fn gcc_reads_a_local_header_probes_the_include_path_and_creates_the_object() {
    require_tracing!();
    if !Path::new("/usr/bin/gcc").exists() {
        eprintln!("skipped: no gcc");
        return;
    }
    let dir = workdir();
    let (first, second) = (dir.path().join("inc1"), dir.path().join("inc2"));
    fs::create_dir(&first).unwrap();
    fs::create_dir(&second).unwrap();
    fs::write(second.join("local.h"), "#define ANSWER 42\n").unwrap();
    fs::write(
        dir.path().join("main.c"),
        "#include \"local.h\"\nint answer(void) { return ANSWER; }\n",
    )
    .unwrap();
    let run = sh(&format!(
        "cd {} && gcc -c -Iinc1 -Iinc2 main.c -o main.o",
        shell_quote(dir.path())
    ));
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(run.trace.untrusted, None);
    assert_event(
        &run.trace,
        &dir.path().join("main.c"),
        |a| *a == Access::Read,
        "read",
    );
    assert_event(
        &run.trace,
        &second.join("local.h"),
        |a| *a == Access::Read,
        "read",
    );
    assert_event(
        &run.trace,
        &first.join("local.h"),
        |a| *a == Access::Absent,
        "absent probe",
    );
    assert_event(
        &run.trace,
        &dir.path().join("main.o"),
        |a| *a == Access::Write { created: true },
        "creating write",
    );
}

#[test]
fn python_reads_a_local_module_it_imports() {
    require_tracing!();
    let dir = workdir();
    fs::write(dir.path().join("helper_mod.py"), "VALUE = 7\n").unwrap();
    fs::write(
        dir.path().join("main.py"),
        "import helper_mod\nprint(helper_mod.VALUE)\n",
    )
    .unwrap();
    let run = sh(&format!(
        "cd {} && python3 -B main.py",
        shell_quote(dir.path())
    ));
    assert_eq!(run.stdout, "7\n");
    assert_eq!(run.trace.untrusted, None);
    assert_event(
        &run.trace,
        &dir.path().join("helper_mod.py"),
        |a| *a == Access::Read,
        "read",
    );
    assert_event(
        &run.trace,
        &dir.path().join("main.py"),
        |a| *a == Access::Read,
        "read",
    );
}

fn build_c(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Option<PathBuf> {
    let c = dir.join(format!("{name}.c"));
    fs::write(&c, source).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(extra)
        .arg(&c)
        .arg("-o")
        .arg(&out)
        .output()
        .ok()?;
    if !status.status.success() {
        eprintln!(
            "skipped: gcc {extra:?} failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        return None;
    }
    Some(out)
}

const READ_FILE_C: &str = r#"
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char buf[64];
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) return 2;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) write(1, buf, n);
    return 0;
}
"#;

#[test]
fn a_static_binary_is_traced_like_any_other() {
    require_tracing!();
    let dir = workdir();
    let Some(program) = build_c(dir.path(), "reader", READ_FILE_C, &["-static", "-O1"]) else {
        return;
    };
    let data = dir.path().join("data");
    fs::write(&data, "static\n").unwrap();
    let program_text = program.to_str().unwrap();
    let run = traced(&[
        "sh",
        "-c",
        &format!("{program_text} {}", shell_quote(&data)),
    ]);
    assert_eq!(run.stdout, "static\n");
    assert_event(&run.trace, &program, |a| *a == Access::Exec, "exec");
    assert_event(&run.trace, &data, |a| *a == Access::Read, "read");
}

#[test]
fn ls_lists_the_directory() {
    require_tracing!();
    let dir = workdir();
    fs::write(dir.path().join("a"), "").unwrap();
    let run = traced(&["ls", dir.path().to_str().unwrap()]);
    assert_eq!(run.stdout, "a\n");
    assert_event(&run.trace, dir.path(), |a| *a == Access::List, "listing");
}

#[test]
fn readlink_records_the_target() {
    require_tracing!();
    let dir = workdir();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("somewhere/else", &link).unwrap();
    let run = traced(&["readlink", link.to_str().unwrap()]);
    assert_eq!(run.stdout, "somewhere/else\n");
    assert_event(
        &run.trace,
        &link,
        |a| {
            *a == Access::ReadLink {
                target: PathBuf::from("somewhere/else"),
            }
        },
        "readlink",
    );
}

#[test]
fn a_temporary_renamed_onto_the_output_is_seen_on_both_sides() {
    require_tracing!();
    let dir = workdir();
    let run = sh(&format!(
        "cd {} && echo x > out.tmp && mv out.tmp out && rm -f gone",
        shell_quote(dir.path())
    ));
    assert_eq!(run.ended, Ended::Exited(0));
    let (tmp, out) = (dir.path().join("out.tmp"), dir.path().join("out"));
    assert_event(
        &run.trace,
        &tmp,
        |a| *a == Access::Write { created: true },
        "creating write",
    );
    assert_event(
        &run.trace,
        &tmp,
        |a| *a == Access::RenameFrom { to: out.clone() },
        "rename from",
    );
    assert_event(
        &run.trace,
        &out,
        |a| *a == Access::RenameTo { from: tmp.clone() },
        "rename to",
    );
    assert_event(
        &run.trace,
        &dir.path().join("gone"),
        |a| *a == Access::Absent,
        "absent removal",
    );
    let renamed = run.trace.events.iter().find(|e| e.path == out).unwrap();
    assert_eq!(renamed.meta.map(|m| m.size), Some(2));
}

#[test]
fn removing_and_making_directories_are_seen() {
    require_tracing!();
    let dir = workdir();
    let run = sh(&format!(
        "cd {} && mkdir d && touch d/f && rm d/f && rmdir d",
        shell_quote(dir.path())
    ));
    assert_eq!(run.ended, Ended::Exited(0));
    let d = dir.path().join("d");
    assert_event(&run.trace, &d, |a| *a == Access::Create, "mkdir");
    assert_event(
        &run.trace,
        &d.join("f"),
        |a| *a == Access::Write { created: true },
        "touch",
    );
    assert_event(&run.trace, &d.join("f"), |a| *a == Access::Remove, "rm");
    assert_event(&run.trace, &d, |a| *a == Access::Remove, "rmdir");
}

#[test]
fn a_daemon_outlives_the_command_returns_quickly_and_keeps_working() {
    require_tracing!();
    let dir = workdir();
    let late = dir.path().join("late");
    let started = Instant::now();
    // The background job's calls after the command ended are trapped by the filter it
    // inherited: they must still work (the helper process traces it on).
    let run = sh(&format!(
        "(sleep 1; cat /etc/hostname > {}) >/dev/null 2>&1 </dev/null &",
        shell_quote(&late)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(run.trace.untrusted, Some(Untrusted::Outlived));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if fs::read_to_string(&late).is_ok_and(|text| !text.is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the daemon did not write {}", late.display());
}

#[test]
fn a_connect_to_a_listener_is_untrusted() {
    require_tracing!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let run = traced(&[
        "python3",
        "-c",
        &format!("import socket; s = socket.create_connection(('127.0.0.1', {port})); print('ok')"),
    ]);
    assert_eq!(run.stdout, "ok\n");
    assert_eq!(run.trace.untrusted, Some(Untrusted::Connected));
}

#[test]
fn a_setuid_program_is_untrusted() {
    require_tracing!();
    let dir = workdir();
    let copy = dir.path().join("setuid-true");
    fs::copy(which("true"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o4755)).unwrap();
    if fs::metadata(&copy).unwrap().permissions().mode() & 0o4000 == 0 {
        eprintln!("skipped: cannot make a setuid file here");
        return;
    }
    let run = traced(&["sh", "-c", copy.to_str().unwrap()]);
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(
        run.trace.untrusted,
        Some(Untrusted::Privileged {
            program: copy,
            privilege: Privilege::Setuid
        })
    );
}

#[test]
fn io_uring_fails_with_enosys_and_is_untrusted() {
    require_tracing!();
    let run = traced(&[
        "python3",
        "-c",
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); \
         r = libc.syscall(425, 1, ctypes.create_string_buffer(120)); print(r, ctypes.get_errno())",
    ]);
    assert_eq!(run.stdout, format!("-1 {}\n", libc::ENOSYS));
    assert_eq!(run.trace.untrusted, Some(Untrusted::IoUring));
}

#[test]
fn ptrace_by_the_command_is_untrusted() {
    require_tracing!();
    let run = traced(&[
        "python3",
        "-c",
        "import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0)",
    ]);
    assert_eq!(run.trace.untrusted, Some(Untrusted::TracesItself));
}

#[test]
fn unshare_is_untrusted() {
    require_tracing!();
    let run = traced(&[
        "python3",
        "-c",
        "import ctypes; ctypes.CDLL(None).unshare(0x04000000)",
    ]);
    assert_eq!(run.trace.untrusted, Some(Untrusted::Namespaces));
}

#[test]
fn a_named_fifo_is_untrusted_and_pipes_and_dev_null_are_fine() {
    require_tracing!();
    let dir = workdir();
    let fifo = dir.path().join("fifo");
    let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let run = traced(&[
        "python3",
        "-c",
        &format!(
            "import os; os.open({:?}, os.O_RDONLY | os.O_NONBLOCK)",
            fifo.to_str().unwrap()
        ),
    ]);
    assert_eq!(
        run.trace.untrusted,
        Some(Untrusted::SpecialFile {
            path: fifo,
            kind: Special::Fifo
        })
    );

    let run = sh("echo hi | cat > /dev/null; cat /dev/null; head -c1 /dev/urandom > /dev/null");
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(run.trace.untrusted, None);
}

#[test]
fn an_unusual_device_is_untrusted() {
    require_tracing!();
    let Some(device) = ["/dev/kmsg", "/dev/mem", "/dev/tty0", "/dev/port"]
        .into_iter()
        .find(|d| File::open(d).is_ok())
    else {
        eprintln!("skipped: no readable device here");
        return;
    };
    let run = traced(&[
        "python3",
        "-c",
        &format!("import os; os.open({device:?}, os.O_RDONLY | os.O_NONBLOCK)"),
    ]);
    assert_eq!(
        run.trace.untrusted,
        Some(Untrusted::SpecialFile {
            path: PathBuf::from(device),
            kind: Special::Device
        })
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_system_call_is_untrusted() {
    require_tracing!();
    let dir = workdir();
    let source = "int main(void) { long r; __asm__ volatile (\"int $0x80\" : \"=a\"(r) : \"a\"(20L)); return 0; }\n";
    let Some(program) = build_c(dir.path(), "int80", source, &[]) else {
        return;
    };
    let run = traced(&["sh", "-c", program.to_str().unwrap()]);
    assert_eq!(run.trace.untrusted, Some(Untrusted::ForeignAbi));
}

#[test]
fn a_million_untraced_calls_stop_no_more_than_none() {
    require_tracing!();
    let dir = workdir();
    let source = "#include <stdlib.h>\n#include <unistd.h>\n#include <sys/syscall.h>\n\
        int main(int argc, char **argv) { long n = atol(argv[1]);\n\
        for (long i = 0; i < n; i++) syscall(SYS_getpid); return 0; }\n";
    let Some(program) = build_c(dir.path(), "getpids", source, &["-O1"]) else {
        return;
    };
    let stops = |calls: &str| {
        let run = traced(&[program.to_str().unwrap(), calls]);
        assert_eq!(run.ended, Ended::Exited(0));
        run.trace.stops
    };
    let (none, million) = (stops("0"), stops("1000000"));
    assert!(none > 3, "{none} stops: the filter traps nothing");
    assert!(
        million <= none + 2,
        "{million} stops for a million getpid calls, {none} for none"
    );
}

#[test]
fn the_main_process_exit_code_and_signal_come_back() {
    require_tracing!();
    assert_eq!(sh("exit 3").ended, Ended::Exited(3));
    assert_eq!(sh("kill -TERM $$").ended, Ended::Signaled(libc::SIGTERM));
    // A signal the command handles is delivered to it, not swallowed by the tracer.
    let run = sh("trap 'echo caught' USR1; kill -USR1 $$; exit 4");
    assert_eq!(
        (run.ended, run.stdout.as_str()),
        (Ended::Exited(4), "caught\n")
    );
}

fn spawn_error(program: &Path) -> io::Error {
    let argv = [OsString::from("x")];
    let launch = Launch {
        program,
        argv: &argv,
        stdin: None,
        stdout: 1,
        stderr: 2,
        inherit: None,
    };
    match spawn(&launch) {
        Ok(tracee) => panic!("spawned {}: {:?}", program.display(), tracee.run().0),
        Err(error) => error,
    }
}

#[test]
fn a_missing_or_unexecutable_program_is_an_error_with_the_childs_errno() {
    require_tracing!();
    let dir = workdir();
    assert_eq!(
        spawn_error(&dir.path().join("missing")).kind(),
        io::ErrorKind::NotFound
    );
    let plain = dir.path().join("plain");
    fs::write(&plain, "not a program").unwrap();
    assert_eq!(spawn_error(&plain).kind(), io::ErrorKind::PermissionDenied);
}

#[test]
#[ignore]
fn show_events_of_a_command() {
    // SAFETY: this ignored test runs alone.
    unsafe { std::env::remove_var("LD_LIBRARY_PATH") };
    let argv: Vec<String> = std::env::var("TRACE_ARGV")
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run = traced(&argv);
    eprintln!(
        "{}stops {} events {} untrusted {:?}",
        dump(&run.trace.events),
        run.trace.stops,
        run.trace.events.len(),
        run.trace.untrusted
    );
}

/// Traced against plain wall time (interleaved runs, medians). Run with
/// `cargo test --release --lib trace::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_overhead() {
    // cargo's LD_LIBRARY_PATH makes every dynamic program probe a dozen directories.
    // SAFETY: this ignored test runs alone.
    unsafe { std::env::remove_var("LD_LIBRARY_PATH") };
    let dir = workdir();
    fs::write(
        dir.path().join("small.h"),
        "#include <stdio.h>\n#define N 3\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("small.c"),
        "#include \"small.h\"\nint main(void) { printf(\"%d\\n\", N); return 0; }\n",
    )
    .unwrap();
    let gcc = format!(
        "cd {} && gcc -c small.c -o small.o",
        shell_quote(dir.path())
    );
    for name in ["a", "b", "c"] {
        let source = format!("#include \"small.h\"\nint {name}(void) {{ return N; }}\n");
        fs::write(dir.path().join(format!("{name}.c")), source).unwrap();
    }
    fs::write(
        dir.path().join("Makefile"),
        "lib.a: a.o b.o c.o\n\tar rcs $@ $^\n%.o: %.c small.h\n\tgcc -c $< -o $@\n",
    )
    .unwrap();
    let make = format!("cd {} && make -s -B", shell_quote(dir.path()));
    let cases: [(&str, Vec<&str>); 4] = [
        ("gcc -c", vec!["sh", "-c", &gcc]),
        ("make (3 files)", vec!["sh", "-c", &make]),
        (
            "python3 imports",
            vec!["python3", "-c", "import json, csv, email"],
        ),
        ("sh true", vec!["sh", "-c", "true"]),
    ];
    for (name, argv) in cases {
        let (mut plain, mut with_trace, mut stops) = (Vec::new(), Vec::new(), 0);
        for _ in 0..21 {
            let started = Instant::now();
            let status = Command::new(which(argv[0]))
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(tempfile::tempfile().unwrap())
                .status()
                .unwrap();
            assert!(status.success());
            plain.push(started.elapsed());
            let started = Instant::now();
            let run = traced(&argv);
            with_trace.push(started.elapsed());
            stops = run.trace.stops;
        }
        plain.sort();
        with_trace.sort();
        let (p, t) = (plain[plain.len() / 2], with_trace[with_trace.len() / 2]);
        eprintln!(
            "{name}: plain {:.1} ms, traced {:.1} ms, ratio {:.2}, {stops} stops",
            p.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / p.as_secs_f64()
        );
    }
}

#[test]
fn reading_its_own_stdin_through_dev_stdin_is_fine_and_not_memos() {
    require_tracing!();
    // The tracer's own stdin is whatever the test harness has; the command's is /dev/null.
    let run = sh("cat /dev/stdin /proc/self/fd/0; test -p /dev/stdin || echo not-a-pipe");
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(run.trace.untrusted, None);
    assert_eq!(run.stdout, "not-a-pipe\n");
}

#[test]
fn stat_and_statx_of_names_are_seen_and_fstat_is_not_a_stop() {
    require_tracing!();
    let dir = workdir();
    let (file, missing) = (dir.path().join("f"), dir.path().join("missing"));
    fs::write(&file, "x").unwrap();
    let script = format!(
        "import os\nos.stat({f:?})\nos.lstat({f:?})\ntry: os.stat({m:?})\nexcept OSError: pass\n\
         fd = os.open({f:?}, os.O_RDONLY)\nfor _ in range(1000): os.fstat(fd)\n",
        f = file.to_str().unwrap(),
        m = missing.to_str().unwrap()
    );
    let run = traced(&["python3", "-c", &script]);
    assert_eq!(run.ended, Ended::Exited(0));
    assert_event(
        &run.trace,
        &file,
        |a| *a == Access::Stat { follow: true },
        "stat",
    );
    assert_event(
        &run.trace,
        &file,
        |a| *a == Access::Stat { follow: false },
        "lstat",
    );
    assert_event(
        &run.trace,
        &missing,
        |a| *a == Access::Absent,
        "absent stat",
    );
    assert!(
        run.trace.stops < 1000,
        "{} stops: fstat stops",
        run.trace.stops
    );
    // stat(1) uses statx on a name.
    let run = traced(&["stat", "-c", "%s", file.to_str().unwrap()]);
    assert_eq!(run.stdout, "1\n");
    assert_event(
        &run.trace,
        &file,
        |a| matches!(a, Access::Stat { .. }),
        "statx",
    );
}

#[test]
fn a_clone_untraced_child_is_untrusted() {
    require_tracing!();
    let dir = workdir();
    let source =
        "#define _GNU_SOURCE\n#include <sched.h>\n#include <signal.h>\n#include <unistd.h>\n\
        #include <sys/syscall.h>\n#include <sys/wait.h>\n\
        int main(void) { long pid = syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0);\n\
        if (pid == 0) _exit(0); waitpid(pid, 0, 0); return 0; }\n";
    let Some(program) = build_c(dir.path(), "untraced", source, &[]) else {
        return;
    };
    let run = traced(&[program.to_str().unwrap()]);
    assert_eq!(run.ended, Ended::Exited(0));
    assert_eq!(run.trace.untrusted, Some(Untrusted::Untraced));
}

/// Run by `a_refused_trace_still_runs_the_command`, inside a process strace traces.
#[test]
#[ignore]
fn refused_inside_strace() {
    let run = sh("echo still ran; exit 3");
    assert_eq!(
        (run.ended, run.stdout.as_str()),
        (Ended::Exited(3), "still ran\n")
    );
    assert!(
        matches!(&run.trace.untrusted, Some(Untrusted::Refused(why)) if why.contains("PTRACE_TRACEME")),
        "{:?}",
        run.trace.untrusted
    );
    let shown = run.trace.untrusted.unwrap().to_string();
    assert!(shown.starts_with("ptrace was refused: "), "{shown}");
}

#[test]
fn a_refused_trace_still_runs_the_command() {
    let Ok(strace) = Command::new("strace").arg("-V").output() else {
        eprintln!("skipped: no strace to make ptrace refuse");
        return;
    };
    assert!(strace.status.success());
    // Under strace -f the command's process is already traced: PTRACE_TRACEME fails.
    let test_binary = std::env::current_exe().unwrap();
    let output = Command::new("strace")
        .args(["-f", "-o", "/dev/null"])
        .arg(&test_binary)
        .args([
            "--ignored",
            "--exact",
            "trace::tests::refused_inside_strace",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_lookup_repeated_after_the_run_changed_the_name_is_seen_again() {
    require_tracing!();
    let dir = workdir();
    let file = dir.path().join("f");
    let run = sh(&format!(
        "cd {} && test -e f; test -e f; touch f; test -e f",
        shell_quote(dir.path())
    ));
    let found: Vec<&Access> = events_at(&run.trace, &file);
    assert_eq!(
        found.iter().filter(|a| ***a == Access::Absent).count(),
        1,
        "a repeated lookup is recorded once: {found:?}"
    );
    let created = found
        .iter()
        .position(|a| **a == Access::Write { created: true });
    let stat = found.iter().rposition(|a| matches!(a, Access::Stat { .. }));
    assert!(
        matches!((created, stat), (Some(c), Some(s)) if c < s),
        "{found:?}"
    );
}

/// Run by `a_refused_filter_still_runs_the_command`, under a filter that denies seccomp().
#[test]
#[ignore]
fn refused_filter_inside() {
    let run = sh("echo still ran; exit 3");
    assert_eq!(
        (run.ended, run.stdout.as_str()),
        (Ended::Exited(3), "still ran\n")
    );
    assert!(
        matches!(&run.trace.untrusted, Some(Untrusted::Refused(why)) if why.contains("seccomp")),
        "{:?}",
        run.trace.untrusted
    );
    // Detached: its children are not stopped forever by a tracer that no longer looks.
    let run = sh("sh -c 'echo child'; exit 0");
    assert_eq!(
        (run.ended, run.stdout.as_str()),
        (Ended::Exited(0), "child\n")
    );
}

#[test]
fn a_refused_filter_still_runs_the_command() {
    require_tracing!();
    let test_binary = std::env::current_exe().unwrap();
    // A filter that fails seccomp() with EPERM, installed by python before it becomes
    // the test binary again.
    let script = format!(
        "import ctypes, os, struct\n\
         insns = struct.pack('HBBI', 0x20, 0, 0, 0) + struct.pack('HBBI', 0x15, 0, 1, {nr}) \
           + struct.pack('HBBI', 0x06, 0, 0, 0x00050000 | 1) + struct.pack('HBBI', 0x06, 0, 0, 0x7fff0000)\n\
         buf = ctypes.create_string_buffer(insns)\n\
         class Prog(ctypes.Structure): _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]\n\
         prog = Prog(4, ctypes.addressof(buf))\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         assert libc.prctl(38, 1, 0, 0, 0) == 0\n\
         assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0, ctypes.get_errno()\n\
         os.execv({bin:?}, [{bin:?}, '--ignored', '--exact', 'trace::tests::refused_filter_inside'])\n",
        nr = libc::SYS_seccomp,
        bin = test_binary.to_str().unwrap()
    );
    let output = Command::new(which("python3"))
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn each_untrusted_reason_reads_as_one_plain_line() {
    let shown = |why: Untrusted| why.to_string();
    assert_eq!(shown(Untrusted::Connected), "it connected to a socket");
    assert_eq!(shown(Untrusted::Outlived), "a process it started outlived it");
    assert_eq!(shown(Untrusted::IoUring), "it used io_uring");
    assert_eq!(
        shown(Untrusted::Refused("PTRACE_TRACEME: Operation not permitted".into())),
        "ptrace was refused: PTRACE_TRACEME: Operation not permitted"
    );
    assert_eq!(
        shown(Untrusted::Privileged {
            program: PathBuf::from("/usr/bin/passwd"),
            privilege: Privilege::Setuid
        }),
        "it executed a setuid program /usr/bin/passwd, which runs without its privileges when traced"
    );
    assert_eq!(
        shown(Untrusted::SpecialFile {
            path: PathBuf::from("/dev/tty0"),
            kind: Special::Device
        }),
        "it opened the device /dev/tty0"
    );
    assert_eq!(
        shown(Untrusted::SpecialFile {
            path: PathBuf::from("/tmp/p"),
            kind: Special::Fifo
        }),
        "it read the named pipe /tmp/p"
    );
    assert_eq!(
        shown(Untrusted::ModifiedAfterRead(PathBuf::from("/w/a"))),
        "/w/a was modified after it was read"
    );
    assert_eq!(
        shown(Untrusted::ChangedDuringRun(PathBuf::from("/w/a"))),
        "/w/a changed during the run"
    );
    for why in [
        Untrusted::Unsupported,
        Untrusted::ForeignAbi,
        Untrusted::Untraced,
        Untrusted::TracesItself,
        Untrusted::Namespaces,
        Untrusted::UnreadablePath,
    ] {
        let line = shown(why);
        let starts_lowercase = line.chars().next().is_some_and(char::is_lowercase);
        assert!(starts_lowercase && !line.contains('\n'), "{line}");
    }
}
