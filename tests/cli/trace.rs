//! `memo run --trace`: the inputs a command really read are found by tracing it, so that
//! nobody has to declare them. Real programs (gcc, python3, make, a static binary, sh)
//! run under the tracer; each test proves a hit or a miss by a stamp the command prints
//! (the wall clock in nanoseconds, on its first line): a miss prints a stamp newer than
//! the call, a hit replays an older one. A file counter would not do: a traced command's
//! writes are its outputs, restored on a hit.
//!
//! Every test first checks, once for the whole suite, that the kernel lets memo trace; where
//! it refuses (`memo: not cached (--trace): ptrace was refused: ...`) each test says so on
//! stderr and checks nothing.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::support::stamped::*;
use crate::support::*;

/// Whether `program` runs here (`program args` exits 0); says on stderr when not, so
/// that the caller can skip.
fn available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `{program} {}` does not work here", args.join(" "));
    }
    ok
}

/// `run --trace ARGS -- ./tool`.
fn trace_args(args: &[&str]) -> Vec<String> {
    let mut all = vec!["run".to_string(), "--trace".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--".to_string(), "./tool".to_string()]);
    all
}

/// `memo run --trace ARGS -- ./tool`.
fn traced(env: &TestEnv, args: &[&str]) -> Call {
    call(env.memo(trace_args(args)))
}

/// `memo run --trace ARGS -- ./tool`, which must succeed and be trusted: whether the
/// tool ran (a miss) or not (a hit).
#[track_caller]
fn ran(env: &TestEnv, args: &[&str]) -> bool {
    let call = traced(env, args);
    assert_success(&call.out);
    assert_eq!(call.not_cached_reason(), None, "{}", call.stderr());
    call.ran()
}

/// The same environment as `TestEnv::memo`, for a program that starts memo itself.
fn command_in(env: &TestEnv, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(env.work())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", env.root.path().join("home"))
        .env("MEMO_DIR", env.cache())
        .stdin(std::process::Stdio::null());
    cmd
}

/// Why the next traced call misses, as `memo explain --trace ARGS -- ./tool` says it (which
/// must not run the tool, and exits 1), and as `memo run --trace -v` says it on stderr
/// (which then runs the tool). Returns both texts.
#[track_caller]
fn why_it_misses(env: &TestEnv, args: &[&str]) -> (String, String) {
    let mut explain = vec!["explain".to_string(), "--trace".to_string()];
    explain.extend(args.iter().map(|a| a.to_string()));
    explain.extend(["--".to_string(), "./tool".to_string()]);
    let out = env.run(&explain);
    assert_code(&out, 1);
    let explained = stdout(&out);
    let mut verbose = vec!["-v"];
    verbose.extend_from_slice(args);
    let run = traced(env, &verbose);
    assert_success(&run.out);
    assert!(run.ran(), "a miss, so the tool ran: {}", run.stderr());
    (explained, run.stderr())
}

/// Both `memo explain --trace` and `-v` name the failed observation with `words`.
#[track_caller]
fn assert_miss_named(env: &TestEnv, args: &[&str], words: &[&str]) {
    let (explained, verbose) = why_it_misses(env, args);
    for (what, text) in [("explain", &explained), ("-v", &verbose)] {
        assert!(
            text.lines().any(|l| words.iter().all(|w| l.contains(w))),
            "{what} does not say {words:?} on one line:\n{text}"
        );
    }
}

/// Runs the tool traced twice. Each time it runs (nothing was stored), exits with `code`,
/// and memo says on one stderr line why it did not store it; nothing is in the cache
/// afterwards. Returns the first call's reason and what the tool printed.
#[track_caller]
fn assert_not_cached(env: &TestEnv, args: &[&str], code: i32) -> (String, String) {
    let first = traced(env, args);
    assert_code(&first.out, code);
    assert!(first.ran());
    let reason = first
        .not_cached_reason()
        .unwrap_or_else(|| panic!("no `{NOT_CACHED}` line in: {}", first.stderr()));
    assert!(!reason.trim().is_empty(), "an empty reason");
    let second = traced(env, args);
    assert_code(&second.out, code);
    assert!(second.ran(), "the untrusted run was stored and replayed");
    assert!(second.not_cached_reason().is_some(), "{}", second.stderr());
    assert!(env.listing().is_empty(), "{:?}", env.listing());
    (reason, first.printed())
}

#[track_caller]
fn assert_mentions(reason: &str, words: &[&str]) {
    for word in words {
        assert!(
            reason.contains(word),
            "the reason {reason:?} does not mention {word:?}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode()
}

/// Sets `path`'s mtime `seconds` into the future, as `touch -d` would, content untouched.
fn touch_later(path: &Path, seconds: u64) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(seconds))
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Real programs: what they read decides hit or miss.

const MAIN_C: &str = "#include <stdio.h>\n#include \"config.h\"\nint main(void) { printf(\"value %d\\n\", VALUE); return 0; }\n";

#[test]
fn a_c_program_misses_when_its_header_changes_or_is_shadowed_on_the_include_path() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("src/main.c", MAIN_C);
    env.write("inc/b/config.h", "#define VALUE 1\n");
    fs::create_dir_all(env.path("inc/a")).unwrap();
    // `as` probes main.o before writing it, gcc makes and removes temporaries in /tmp:
    // none of that may turn the next call into a miss.
    stamped_tool(
        &env,
        "gcc -I inc/a -I inc/b -c src/main.c -o main.o && gcc -o prog main.o && ./prog",
    );
    let first = traced(&env, &[]);
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.printed(), "value 1\n");
    assert!(!ran(&env, &[]), "nothing changed");
    let out = env.run(["explain", "--trace", "--", "./tool"]);
    assert_code(&out, 0);
    assert!(stdout(&out).starts_with("hit "), "{}", stdout(&out));

    // A new mtime with the same content is no change.
    touch_later(&env.path("inc/b/config.h"), 5);
    assert!(!ran(&env, &[]), "touching the header keeps the hit");

    env.write("inc/b/config.h", "#define VALUE 2\n");
    assert_miss_named(&env, &[], &["inc/b/config.h changed"]);
    let again = traced(&env, &[]);
    assert!(!again.ran());
    assert_eq!(again.printed(), "value 2\n");

    // A header earlier on the include path shadows it.
    env.write("inc/a/config.h", "#define VALUE 3\n");
    assert_miss_named(
        &env,
        &[],
        &["new file", "inc/a/config.h", "(absent when recorded)"],
    );
    assert_eq!(traced(&env, &[]).printed(), "value 3\n");

    // Back to the state of the second recorded run: a hit on it, its outputs restored.
    fs::remove_file(env.path("inc/a/config.h")).unwrap();
    fs::remove_file(env.path("prog")).unwrap();
    let back = traced(&env, &[]);
    assert!(!back.ran(), "the second recorded run holds again");
    assert_eq!(back.printed(), "value 2\n");
    let prog = Command::new(env.path("prog")).output().unwrap();
    assert_eq!(stdout(&prog), "value 2\n", "prog restored from that run");
}

#[test]
fn gcc_run_directly_is_a_hit_the_second_time_and_its_object_is_restored() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write(
        "hello.c",
        "#include \"hello.h\"\nint hello(void) { return ANSWER; }\n",
    );
    env.write("hello.h", "#define ANSWER 42\n");
    let args = [
        "run", "--trace", "--", "gcc", "-c", "hello.c", "-o", "hello.o",
    ];
    assert_success(&env.run(args));
    let object = env.read("hello.o");
    fs::remove_file(env.path("hello.o")).unwrap();
    assert_success(&env.run(args));
    assert_eq!(env.stats()["hits"], 1, "{}", env.stats());
    assert_eq!(env.read("hello.o"), object, "restored byte for byte");
    env.write("hello.h", "#define ANSWER 43\n");
    assert_success(&env.run(args));
    assert_eq!(env.stats()["hits"], 1, "the header changed: a miss");
    assert_ne!(env.read("hello.o"), object);
}

const MAIN_PY: &str = "import os, sys
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import helper
import json
print('helper', helper.VALUE, 'json', getattr(json, 'SHADOW', 'stdlib'))
";

#[test]
fn a_python_script_misses_when_a_module_changes_or_is_shadowed_and_hits_despite_pycache() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("main.py", MAIN_PY);
    env.write("lib/helper.py", "VALUE = 1\n");
    stamped_tool(&env, "python3 main.py");
    let first = traced(&env, &[]);
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.printed(), "helper 1 json stdlib\n");
    let pycache: Vec<_> = files_under(&env.path("lib/__pycache__"));
    assert_eq!(
        pycache.len(),
        1,
        "python wrote helper's bytecode: {pycache:?}"
    );

    // Python probed, then wrote lib/__pycache__: that is an output, not an input.
    assert!(
        !ran(&env, &[]),
        "unchanged: a hit although __pycache__ is new"
    );
    let bytecode = fs::read(&pycache[0]).unwrap();
    fs::remove_dir_all(env.path("lib/__pycache__")).unwrap();
    assert!(!ran(&env, &[]));
    assert_eq!(
        fs::read(&pycache[0]).unwrap(),
        bytecode,
        "restored as an output"
    );

    // Another size, so that python itself cannot take the old bytecode for current.
    env.write("lib/helper.py", "VALUE = 22\n");
    assert_miss_named(&env, &[], &["lib/helper.py changed"]);
    assert_eq!(traced(&env, &[]).printed(), "helper 22 json stdlib\n");

    // The script's own directory comes first on sys.path: a helper.py there shadows lib's.
    env.write("helper.py", "VALUE = 'shadow'\n");
    let shadowed = traced(&env, &[]);
    assert!(shadowed.ran(), "a shadowing module appeared: a miss");
    assert_eq!(shadowed.printed(), "helper shadow json stdlib\n");
    assert!(!ran(&env, &[]));

    // So does a json.py there, shadowing the standard library's.
    env.write("json.py", "SHADOW = 'local'\n");
    let (explained, verbose) = why_it_misses(&env, &[]);
    // Python finds modules by listing each directory on sys.path once, so the change
    // may be named as the new file or as the listing of the script's directory.
    for text in [&explained, &verbose] {
        assert!(
            text.contains("json.py") || text.contains("the listing of"),
            "{text}"
        );
    }
    assert_eq!(traced(&env, &[]).printed(), "helper shadow json local\n");
}

#[test]
fn a_shell_script_misses_when_the_config_file_it_cats_changes() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("settings.conf", "colour = blue\n");
    stamped_tool(&env, "cat settings.conf");
    assert!(ran(&env, &[]));
    assert!(!ran(&env, &[]));
    env.write("settings.conf", "colour = red\n");
    assert_miss_named(&env, &[], &["settings.conf changed"]);
    let hit = traced(&env, &[]);
    assert!(!hit.ran());
    assert_eq!(hit.printed(), "colour = red\n");
    // Back to the first content: the first recorded run holds again.
    env.write("settings.conf", "colour = blue\n");
    let back = traced(&env, &[]);
    assert!(!back.ran());
    assert_eq!(back.printed(), "colour = blue\n");
}

const READER_C: &str = r#"#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("%lld%09ld\n", (long long)now.tv_sec, now.tv_nsec);
    FILE *f = fopen("input.txt", "r");
    if (!f) return 2;
    int c;
    while ((c = fgetc(f)) != EOF) putchar(c);
    return 0;
}
"#;

/// Tracers that preload a library (fsatrace, LD_PRELOAD) miss what a static binary does.
#[test]
fn a_statically_linked_program_is_traced_too() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("reader.c", READER_C);
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o", "reader", "reader.c"])
        .current_dir(env.work())
        .output();
    if !built.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: gcc -static does not work here ({built:?})");
        return;
    }
    env.write("input.txt", "first\n");
    let reader = || call(env.memo(["run", "--trace", "--", "./reader"]));
    let first = reader();
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.printed(), "first\n");
    assert!(!reader().ran());
    env.write("input.txt", "second\n");
    let out = env.run(["explain", "--trace", "--", "./reader"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("input.txt changed"),
        "{}",
        stdout(&out)
    );
    let changed = reader();
    assert!(changed.ran(), "the static binary's read was seen");
    assert_eq!(changed.printed(), "second\n");
}

#[test]
fn make_of_a_small_project_hits_when_nothing_changed_and_misses_after_an_edit() {
    if !traceable() || !available("make", &["--version"]) {
        return;
    }
    let env = TestEnv::new();
    env.write(
        "Makefile",
        "prog: main.o util.o\n\tcc -o prog main.o util.o\n\n%.o: %.c util.h\n\tcc -c -o $@ $<\n",
    );
    env.write("util.h", "int util(void);\n");
    env.write(
        "main.c",
        "#include <stdio.h>\n#include \"util.h\"\nint main(void) { printf(\"util %d\\n\", util()); return 0; }\n",
    );
    env.write(
        "util.c",
        "#include \"util.h\"\nint util(void) { return 1; }\n",
    );
    stamped_tool(&env, "make -s && ./prog");
    let first = traced(&env, &[]);
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.printed(), "util 1\n");
    assert!(!ran(&env, &[]), "nothing changed");

    let edited_source = env.write(
        "util.c",
        "#include \"util.h\"\nint util(void) { return 2; }\n",
    );
    // make compares timestamps: the edit must be newer than the util.o the hit just
    // restored, even when both fall in one tick of the file system's clock.
    fs::File::options()
        .write(true)
        .open(&edited_source)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(2))
        .unwrap();
    let edited = traced(&env, &[]);
    assert!(edited.ran(), "util.c changed");
    assert_eq!(edited.printed(), "util 2\n");
    let hit = traced(&env, &[]);
    assert!(!hit.ran(), "nothing changed since: {}", hit.stderr());
    assert_eq!(hit.printed(), "util 2\n");
    // What make built is restored on a hit.
    fs::remove_file(env.path("prog")).unwrap();
    assert!(!ran(&env, &[]));
    let prog = Command::new(env.path("prog")).output().unwrap();
    assert_eq!(stdout(&prog), "util 2\n");
}

// ---------------------------------------------------------------------------------------
// Outputs nobody declared.

#[test]
fn files_the_command_wrote_are_restored_byte_for_byte_with_their_exec_bits() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "mkdir -p out bin
printf 'report\\000\\377' > out/report.bin
printf '#!/bin/sh\\necho built\\n' > bin/run.sh
chmod 755 bin/run.sh
echo plain > plain.txt
echo data > .final.tmp && mv .final.tmp final.txt",
    );
    assert!(ran(&env, &[]));
    let report = env.read("out/report.bin");
    assert_eq!(report, b"report\0\xff");
    assert_ne!(mode(&env.path("bin/run.sh")) & 0o100, 0);
    for gone in ["out", "bin"] {
        fs::remove_dir_all(env.path(gone)).unwrap();
    }
    fs::remove_file(env.path("final.txt")).unwrap();
    fs::write(env.path("plain.txt"), "clobbered").unwrap();

    assert!(!ran(&env, &[]), "outputs are not inputs");
    assert_eq!(env.read("out/report.bin"), report);
    assert_eq!(env.read("bin/run.sh"), b"#!/bin/sh\necho built\n");
    assert_ne!(
        mode(&env.path("bin/run.sh")) & 0o100,
        0,
        "exec bit restored"
    );
    assert_eq!(mode(&env.path("plain.txt")) & 0o111, 0);
    assert_eq!(env.read("plain.txt"), b"plain\n");
    assert_eq!(
        env.read("final.txt"),
        b"data\n",
        "renamed into place: an output"
    );
    assert!(
        !env.path(".final.tmp").exists(),
        "renamed away: not an output"
    );
    env.assert_no_staging();
}

#[test]
fn temporaries_the_command_created_and_removed_are_not_restored() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "echo scratch > scratch.tmp; cat scratch.tmp; rm scratch.tmp
mkdir work.d; echo x > work.d/part; rm -r work.d
t=$(mktemp); echo x > \"$t\"; rm \"$t\"; echo made > kept.txt",
    );
    assert!(ran(&env, &[]));
    fs::remove_file(env.path("kept.txt")).unwrap();
    // A temporary's name is free again: the next call neither misses over it nor
    // restores it.
    let hit = traced(&env, &[]);
    assert!(!hit.ran(), "{}", hit.stderr());
    assert_eq!(hit.printed(), "scratch\n");
    assert_eq!(env.read("kept.txt"), b"made\n");
    assert!(!env.path("scratch.tmp").exists());
    assert!(!env.path("work.d").exists());
}

#[test]
fn a_file_the_command_wrote_and_then_read_is_an_output_not_an_input() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "echo generated > gen.txt; cat gen.txt");
    assert!(ran(&env, &[]));
    fs::remove_file(env.path("gen.txt")).unwrap();
    let hit = traced(&env, &[]);
    assert!(!hit.ran(), "gen.txt is not an input: {}", hit.stderr());
    assert_eq!(env.read("gen.txt"), b"generated\n");
}

#[test]
fn declared_outputs_still_work_under_trace() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "mkdir -p dist; echo a > dist/a.txt");
    assert!(ran(&env, &["-o", "dist"]));
    fs::remove_dir_all(env.path("dist")).unwrap();
    assert!(!ran(&env, &["-o", "dist"]));
    assert_eq!(env.read("dist/a.txt"), b"a\n");
}

// ---------------------------------------------------------------------------------------
// What each kind of observation records, and how a miss names it.

#[test]
fn a_file_read_and_later_removed_is_named() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("settings.conf", "x\n");
    stamped_tool(&env, "cat settings.conf 2>/dev/null || echo none");
    assert!(ran(&env, &[]));
    fs::remove_file(env.path("settings.conf")).unwrap();
    assert_miss_named(&env, &[], &["settings.conf was removed"]);
}

#[test]
fn a_file_probed_and_absent_then_created_is_named() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "if [ -e optional.conf ]; then cat optional.conf; fi");
    assert!(ran(&env, &[]));
    assert!(!ran(&env, &[]));
    env.write("optional.conf", "x\n");
    assert_miss_named(
        &env,
        &[],
        &["new file", "optional.conf", "(absent when recorded)"],
    );
}

#[test]
fn a_directory_listed_then_added_to_is_named() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("data/a.csv", "1\n");
    stamped_tool(&env, "ls data");
    assert!(ran(&env, &[]));
    // Content of a file listed but never read is no observation.
    env.write("data/a.csv", "2\n");
    assert!(!ran(&env, &[]), "a.csv was listed, not read");
    env.write("data/b.csv", "3\n");
    assert_miss_named(&env, &[], &["the listing of", "data changed"]);
}

#[test]
fn a_program_it_executed_that_changed_is_named() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.script("helper.sh", "echo helper 1\n");
    stamped_tool(&env, "./helper.sh");
    assert!(ran(&env, &[]));
    assert!(!ran(&env, &[]));
    // The key hashes ./tool only; the program it runs is found by the trace.
    env.script("helper.sh", "echo helper 2\n");
    assert_miss_named(&env, &[], &["helper.sh changed"]);
    assert_eq!(traced(&env, &[]).printed(), "helper 2\n");
}

/// A shell looks a command up in each PATH entry in turn: the entries before the one it
/// found are probes, and a program appearing in one of them is a miss.
#[test]
fn a_program_appearing_earlier_on_path_is_a_miss() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.script("bin2/greet", "echo from bin2\n");
    fs::create_dir_all(env.path("bin1")).unwrap();
    stamped_tool(&env, "greet");
    let path = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        env.path("bin1").display(),
        env.path("bin2").display()
    );
    let run = || {
        let mut cmd = env.memo(trace_args(&[]));
        cmd.env("PATH", &path);
        call(cmd)
    };
    let first = run();
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.printed(), "from bin2\n");
    assert!(!run().ran());
    env.script("bin1/greet", "echo from bin1\n");
    let shadowed = run();
    assert!(shadowed.ran(), "bin1/greet was absent when recorded");
    assert_eq!(shadowed.printed(), "from bin1\n");
}

#[test]
fn declared_inputs_still_count_under_trace() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("declared.txt", "1");
    stamped_tool(&env, "echo does not read it");
    assert!(ran(&env, &["-i", "declared.txt"]));
    assert!(!ran(&env, &["-i", "declared.txt"]));
    env.write("declared.txt", "2");
    assert!(ran(&env, &["-i", "declared.txt"]), "declared, so keyed");
}

#[test]
fn a_symlink_pointed_elsewhere_is_named() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("a.txt", "same\n");
    env.write("b.txt", "same\n");
    symlink("a.txt", env.path("current")).unwrap();
    stamped_tool(&env, "readlink current; cat current");
    assert!(ran(&env, &[]));
    assert!(!ran(&env, &[]));
    // Same content behind it, another target.
    fs::remove_file(env.path("current")).unwrap();
    symlink("b.txt", env.path("current")).unwrap();
    assert_miss_named(&env, &[], &["current now points to", "b.txt"]);
}

#[test]
fn a_file_only_stated_is_checked_on_its_size_mode_and_time() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("sized.bin", "12345");
    stamped_tool(&env, "stat -c %s sized.bin");
    assert!(ran(&env, &[]));
    assert!(!ran(&env, &[]));
    fs::set_permissions(env.path("sized.bin"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_miss_named(&env, &[], &["sized.bin changed (size, mode or time)"]);
    assert!(!ran(&env, &[]));
    touch_later(&env.path("sized.bin"), 5);
    assert_miss_named(&env, &[], &["sized.bin changed (size, mode or time)"]);
}

#[test]
fn a_directory_stat_records_its_type_only() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    fs::create_dir(env.path("data")).unwrap();
    stamped_tool(
        &env,
        "if [ -d data ]; then echo a directory; else echo something else; fi",
    );
    assert!(ran(&env, &[]));
    // A new file moves the directory's mtime; it was not listed.
    env.write("data/new.txt", "x");
    assert!(!ran(&env, &[]), "only the type of data was observed");
    fs::remove_dir_all(env.path("data")).unwrap();
    env.write("data", "now a file");
    assert!(ran(&env, &[]), "the type changed");
}

#[test]
fn show_lists_what_a_traced_run_observed() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("cfg.txt", "x\n");
    env.write("dir1/f", "x\n");
    env.write("sized.bin", "12345");
    symlink("cfg.txt", env.path("link1")).unwrap();
    stamped_tool(
        &env,
        "cat cfg.txt
ls dir1 > /dev/null
[ -e missing.txt ] || true
readlink link1 > /dev/null
stat -c %s sized.bin > /dev/null
echo w > made.txt",
    );
    assert!(ran(&env, &[]));
    let listing = env.listing();
    assert_eq!(listing.len(), 1, "{listing:?}");
    let key = listing[0]["key"].as_str().unwrap().to_string();
    let out = env.run(["show", &key]);
    assert_success(&out);
    let text = stdout(&out);
    let (_, observed) = text
        .split_once("observed:")
        .unwrap_or_else(|| panic!("no observed: section in\n{text}"));
    for (path, kind) in [
        ("cfg.txt", "read"),
        ("/cat", "executed"),
        ("dir1", "listed"),
        ("missing.txt", "absent"),
        ("link1", "symlink"),
        ("sized.bin", "stat"),
        ("made.txt", "written"),
    ] {
        assert!(
            observed
                .lines()
                .any(|l| l.contains(path) && l.contains(kind)),
            "no line with {path} and {kind} in\n{observed}"
        );
    }
}

#[test]
fn proc_sys_and_the_cache_directory_are_never_observed() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    // /proc/self/status and /proc/uptime differ on every run; the cache directory gains
    // an entry after the first.
    stamped_tool(
        &env,
        "cat /proc/self/status > /dev/null
cat /proc/uptime
ls /sys/class > /dev/null 2>&1
ls -R \"$MEMO_DIR\" > /dev/null 2>&1 || true",
    );
    assert!(ran(&env, &[]));
    let hit = traced(&env, &[]);
    assert!(!hit.ran(), "{}", hit.stderr());
    let key = env.listing()[0]["key"].as_str().unwrap().to_string();
    let text = stdout(&env.run(["show", &key]));
    let cache = env.cache().display().to_string();
    for never in ["/proc", "/sys", cache.as_str()] {
        assert!(!text.contains(never), "{never} observed:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------
// Exit codes, streams and the ways of turning tracing on.

#[test]
fn output_and_exit_codes_pass_through_and_a_failure_is_stored_only_with_cache_failures() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "printf 'out\\000\\377\\n'; echo err >&2; exit 3");
    let first = traced(&env, &[]);
    assert_code(&first.out, 3);
    assert!(first.ran());
    assert_eq!(first.printed().as_bytes(), "out\0\u{fffd}\n".as_bytes());
    assert!(first.out.stdout.ends_with(b"out\0\xff\n"), "bytes kept");
    assert_eq!(first.stderr(), "err\n");
    let second = traced(&env, &[]);
    assert_code(&second.out, 3);
    assert!(second.ran(), "a failure is not stored by default");

    let stored = traced(&env, &["--cache-failures"]);
    assert_code(&stored.out, 3);
    assert!(stored.ran());
    let replayed = traced(&env, &["--cache-failures"]);
    assert_code(&replayed.out, 3);
    assert!(!replayed.ran());
    assert_eq!(replayed.out.stdout, stored.out.stdout);
    assert_eq!(replayed.stderr(), "err\n");
}

#[test]
fn a_command_killed_by_a_signal_exits_as_it_would_untraced() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "kill -TERM $$");
    let plain = env.run(["run", "--", "./tool"]);
    let traced = traced(&env, &[]);
    assert_eq!(traced.out.status.code(), plain.status.code());
    assert!(traced.ran());
}

/// The exec failure comes back from the traced child as it does from an untraced one:
/// the same exit code and the same message.
#[test]
fn a_command_that_cannot_be_executed_fails_as_it_does_untraced() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("not-executable", "#!/bin/sh\necho never\n");
    env.script("bad-interpreter", "echo never\n");
    env.write("bad-interpreter", "#!/no/such/interpreter\necho never\n");
    // No #! line and not ELF: run by /bin/sh, as execvp does.
    env.script("no-shebang", "");
    env.write("no-shebang", "echo via sh\n");
    for (program, code) in [
        ("./no-such-program", 127),
        ("./not-executable", 126),
        ("./bad-interpreter", 126),
        ("./no-shebang", 0),
    ] {
        let traced = env.run(["run", "--trace", "--", program]);
        assert_code(&traced, code);
        let plain = env.run(["run", "--", program]);
        assert_code(&plain, code);
        assert_eq!(stdout(&traced), stdout(&plain), "{program}");
        assert_eq!(stderr(&traced), stderr(&plain), "{program}");
    }
}

#[test]
fn trace_true_in_the_config_file_traces_every_run() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let config = env.write("memo.toml", "trace = true\n");
    env.write("settings.conf", "a\n");
    stamped_tool(&env, "cat settings.conf");
    let plain_run = || {
        let mut cmd = env.memo(["run", "--", "./tool"]);
        cmd.env("MEMO_CONFIG", &config);
        call(cmd)
    };
    assert!(plain_run().ran());
    assert!(!plain_run().ran());
    env.write("settings.conf", "b\n");
    let edited = plain_run();
    assert!(edited.ran(), "the config file turned tracing on");
    assert_eq!(edited.printed(), "b\n");

    let out = env
        .memo(["config"])
        .env("MEMO_CONFIG", &config)
        .output()
        .unwrap();
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("trace"))
        .unwrap_or_else(|| panic!("no trace line in\n{text}"));
    assert!(
        line.contains("true") && line.contains("config file"),
        "{line}"
    );
}

#[test]
fn memo_trace_0_in_the_environment_wins_over_the_config_file() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let config = env.write("memo.toml", "trace = true\n");
    env.write("settings.conf", "a\n");
    stamped_tool(&env, "cat settings.conf");
    let untraced = || {
        let mut cmd = env.memo(["run", "--", "./tool"]);
        cmd.env("MEMO_CONFIG", &config).env("MEMO_TRACE", "0");
        call(cmd)
    };
    assert!(untraced().ran());
    // Untraced, the undeclared file is no input: the documented stale hit.
    env.write("settings.conf", "b\n");
    let stale = untraced();
    assert!(!stale.ran(), "MEMO_TRACE=0 turned tracing off");
    assert_eq!(stale.printed(), "a\n");
}

#[test]
fn memo_trace_1_in_the_environment_traces_every_run() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("settings.conf", "a\n");
    stamped_tool(&env, "cat settings.conf");
    let run = || {
        let mut cmd = env.memo(["run", "--", "./tool"]);
        cmd.env("MEMO_TRACE", "1");
        call(cmd)
    };
    assert!(run().ran());
    assert!(!run().ran());
    env.write("settings.conf", "b\n");
    assert!(run().ran(), "MEMO_TRACE=1 turned tracing on");
}

// ---------------------------------------------------------------------------------------
// Runs that cannot be trusted: run as usual, not stored, one line on stderr saying why.

#[test]
fn a_command_that_starts_a_daemon_is_not_cached_and_memo_does_not_wait_for_it() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "( sleep 5; echo done > daemon.out ) > /dev/null 2>&1 < /dev/null &
echo started",
    );
    let started = std::time::Instant::now();
    let out = run_with_deadline(env.memo(trace_args(&[])), Duration::from_secs(20));
    assert_success(&out);
    assert_eq!(stdout(&out).lines().nth(1), Some("started"));
    assert!(
        !env.path("daemon.out").exists() && started.elapsed() < Duration::from_secs(5),
        "memo waited for the daemon"
    );
    let err = stderr(&out);
    let reason = err
        .lines()
        .find_map(|l| l.strip_prefix(NOT_CACHED))
        .unwrap_or_else(|| panic!("no `{NOT_CACHED}` line in: {err}"));
    assert_mentions(reason, &["outlived"]);
    // It was left to run on, not killed.
    env.wait_until_written("daemon.out");
    assert_eq!(env.read("daemon.out"), b"done\n");
    assert!(env.listing().is_empty());
}

/// A background process that starts programs one after another (each a vfork then an
/// exec, as dash and posix_spawn start them) is most likely inside a vfork when the
/// command's main process ends: its child must not be stopped before it execs, or the
/// parent, which waits for that exec and cannot be stopped meanwhile, would hold memo.
#[test]
fn a_daemon_caught_inside_a_vfork_does_not_hold_memo() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "( while [ ! -e stop ]; do /bin/true; done; echo done > daemon.out ) > /dev/null 2>&1 < /dev/null &
sleep 0.05
echo started",
    );
    for round in 0..5 {
        let out = run_with_deadline(env.memo(trace_args(&[])), Duration::from_secs(20));
        // Stop this round's loop before anything can fail.
        fs::write(env.path("stop"), b"").unwrap();
        assert_success(&out);
        assert_eq!(
            stdout(&out).lines().nth(1),
            Some("started"),
            "round {round}"
        );
        assert_mentions(
            stderr(&out)
                .lines()
                .find_map(|l| l.strip_prefix(NOT_CACHED))
                .unwrap_or_default(),
            &["outlived"],
        );
        // The loop was left to run on, traced by the helper, and ended when told.
        env.wait_for_file("daemon.out");
        fs::remove_file(env.path("daemon.out")).unwrap();
        fs::remove_file(env.path("stop")).unwrap();
    }
    assert!(env.listing().is_empty());
}

#[test]
fn a_command_that_connects_to_a_socket_is_not_cached() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    stamped_tool(
        &env,
        &format!(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port})).close(); print(\"connected\")'"
        ),
    );
    let (reason, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, "connected\n");
    assert_mentions(&reason, &["connect"]);
    drop(listener);
}

#[test]
fn a_command_that_reads_a_named_fifo_is_not_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let fifo = std::ffi::CString::new(env.path("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Both ends opened by the command's own processes: still a named FIFO on disk.
    stamped_tool(&env, "echo through > fifo & cat fifo; wait");
    let (reason, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, "through\n");
    assert_mentions(&reason, &["named pipe", "fifo"]);
}

#[test]
fn pipes_between_the_commands_own_processes_are_fine() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("words.txt", "b\na\n");
    stamped_tool(&env, "cat words.txt | sort | tr a-z A-Z");
    assert!(ran(&env, &[]));
    let hit = traced(&env, &[]);
    assert!(!hit.ran());
    assert_eq!(hit.printed(), "A\nB\n");
}

#[test]
fn a_command_that_opens_a_device_is_not_cached() {
    if !traceable() {
        return;
    }
    use std::os::unix::fs::OpenOptionsExt;
    // /dev/tty0 last: a tracer may count a virtual console among the terminals.
    let device = ["/dev/kmsg", "/dev/mem", "/dev/port", "/dev/tty0"]
        .into_iter()
        .find(|d| {
            fs::File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(d)
                .is_ok()
        });
    let Some(device) = device else {
        eprintln!("skipped: no device here that this user may open");
        return;
    };
    let env = TestEnv::new();
    // Opened, not read: the open alone makes the run depend on a device.
    stamped_tool(&env, &format!(": < {device}; echo opened"));
    let (reason, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, "opened\n");
    assert_mentions(&reason, &["device", device]);
}

#[test]
fn the_usual_devices_are_fine() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "head -c 4 /dev/zero | od -An -tx1; head -c 4 /dev/urandom > /dev/null; echo x > /dev/null",
    );
    assert!(ran(&env, &[]));
    assert!(!ran(&env, &[]));
}

const IO_URING_PY: &str = "import ctypes
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
r = libc.syscall(425, 4, params)
print('io_uring_setup', 'ok' if r >= 0 else 'failed', ctypes.get_errno() if r < 0 else '')
";

#[test]
fn a_command_that_tries_io_uring_gets_enosys_and_is_not_cached() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("uring.py", IO_URING_PY);
    stamped_tool(&env, "python3 uring.py");
    let (reason, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, format!("io_uring_setup failed {}\n", libc::ENOSYS));
    assert_mentions(&reason, &["io_uring"]);
}

#[test]
fn a_command_that_modifies_a_file_it_read_is_not_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("data.txt", "one\n");
    stamped_tool(&env, "cat data.txt; echo more >> data.txt");
    let (reason, _) = assert_not_cached(&env, &[], 0);
    assert_mentions(&reason, &["data.txt was modified after it was read"]);
}

#[test]
fn a_command_that_appends_to_a_file_it_did_not_create_is_not_cached() {
    if !traceable() {
        return;
    }
    // `>>` keeps what the file held: the result depends on it, though nothing read it.
    let env = TestEnv::new();
    env.write("log.txt", "earlier\n");
    stamped_tool(&env, "echo more >> log.txt");
    let (reason, _) = assert_not_cached(&env, &[], 0);
    assert_mentions(&reason, &["log.txt was modified after it was read"]);
    // One it creates itself first is an output like any other.
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "rm -f new.txt; echo one > new.txt; echo two >> new.txt",
    );
    assert!(ran(&env, &[]));
    std::fs::remove_file(env.path("new.txt")).unwrap();
    let hit = traced(&env, &[]);
    assert!(!hit.ran(), "{}", hit.stderr());
    assert_eq!(env.read("new.txt"), b"one\ntwo\n");
}

#[test]
fn an_input_changed_by_someone_else_during_the_run_is_not_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("input.txt", "before\n");
    stamped_tool(&env, "cat input.txt; : > started; sleep 2");
    let child = env.spawn_piped(trace_args(&[]));
    env.wait_for_file("started");
    env.write("input.txt", "during, and longer\n");
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out).lines().nth(1), Some("before"));
    let err = stderr(&out);
    let reason = err
        .lines()
        .find_map(|l| l.strip_prefix(NOT_CACHED))
        .unwrap_or_else(|| panic!("no `{NOT_CACHED}` line in: {err}"));
    assert_mentions(reason, &["input.txt changed during the run"]);
    assert!(env.listing().is_empty());
    fs::remove_file(env.path("started")).unwrap();
    assert!(ran(&env, &[]), "nothing was stored");
}

/// A copy of `true` with `bits` (0o4000 setuid, 0o2000 setgid) set: its owner may set
/// them. Where the file system is mounted nosuid the kernel ignores them, but memo still
/// sees them.
fn privileged_copy(env: &TestEnv, name: &str, bits: u32) -> bool {
    let Some(truth) = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("skipped: no /usr/bin/true");
        return false;
    };
    let copy = env.path(name);
    fs::copy(truth, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755 | bits)).unwrap();
    if mode(&copy) & bits == 0 {
        eprintln!("skipped: cannot set mode {bits:o} on {}", copy.display());
        return false;
    }
    true
}

#[test]
fn a_command_that_executes_a_setuid_program_is_not_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    if !privileged_copy(&env, "suid-true", 0o4000) {
        return;
    }
    stamped_tool(&env, "./suid-true; echo after");
    let (reason, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, "after\n");
    assert_mentions(&reason, &["setuid", "suid-true"]);
}

#[test]
fn a_command_that_executes_a_setgid_program_is_not_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    if !privileged_copy(&env, "sgid-true", 0o2000) {
        return;
    }
    stamped_tool(&env, "./sgid-true; echo after");
    let (reason, _) = assert_not_cached(&env, &[], 0);
    assert_mentions(&reason, &["sgid-true"]);
}

#[test]
fn memo_traced_by_another_tracer_says_ptrace_was_refused_and_runs_the_command() {
    if !traceable() || !available("strace", &["-o", "/dev/null", "true"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("settings.conf", "a\n");
    stamped_tool(&env, "cat settings.conf");
    // strace -f follows memo's child, which then cannot be traced by memo.
    let under_strace = || {
        let mut cmd = command_in(&env, "strace");
        cmd.args(["-f", "-o", "/dev/null", MEMO])
            .args(trace_args(&[]));
        call(cmd)
    };
    let first = under_strace();
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.printed(), "a\n");
    let reason = first
        .not_cached_reason()
        .unwrap_or_else(|| panic!("no `{NOT_CACHED}` line in: {}", first.stderr()));
    assert_mentions(&reason, &["ptrace was refused"]);
    assert!(under_strace().ran());
    assert!(env.listing().is_empty());
}

const PTRACE_PY: &str = "import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print('traceme', libc.ptrace(0, 0, 0, 0))
";

#[test]
fn a_command_that_uses_ptrace_itself_is_not_cached() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("traceme.py", PTRACE_PY);
    stamped_tool(&env, "python3 traceme.py");
    let (reason, _) = assert_not_cached(&env, &[], 0);
    assert_mentions(&reason, &["ptrace"]);
}

const SECCOMP_PY: &str = "import ctypes, platform
libc = ctypes.CDLL(None, use_errno=True)
class Insn(ctypes.Structure):
    _fields_ = [('code', ctypes.c_ushort), ('jt', ctypes.c_ubyte), ('jf', ctypes.c_ubyte), ('k', ctypes.c_uint)]
class Prog(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.POINTER(Insn))]
allow_all = (Insn * 1)(Insn(0x06, 0, 0, 0x7fff0000))
prog = Prog(1, allow_all)
libc.prctl(38, 1, 0, 0, 0)
SYS_seccomp = {'x86_64': 317, 'aarch64': 277}[platform.machine()]
print('seccomp', libc.syscall(SYS_seccomp, 1, 0, ctypes.byref(prog)))
";

#[test]
fn a_command_that_installs_a_seccomp_filter_is_not_cached() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("filter.py", SECCOMP_PY);
    stamped_tool(&env, "python3 filter.py");
    let (reason, _) = assert_not_cached(&env, &[], 0);
    assert_mentions(&reason, &["seccomp"]);
}

const UNTRACED_PY: &str = "import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
SYS_clone = {'x86_64': 56, 'aarch64': 220}[platform.machine()]
CLONE_UNTRACED, SIGCHLD = 0x00800000, 17
pid = libc.syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0)
if pid == 0:
    os._exit(7)
print('child exited', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
";

#[test]
fn a_command_that_clones_an_untraced_child_is_not_cached() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("untraced.py", UNTRACED_PY);
    stamped_tool(&env, "python3 untraced.py");
    let (_, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, "child exited 7\n");
}

#[test]
fn a_command_that_enters_a_new_namespace_is_not_cached() {
    if !traceable() || !available("unshare", &["--user", "true"]) {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "unshare --user true && echo unshared");
    let (_, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, "unshared\n");
}

const BAD_PATH_PY: &str = "import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r = libc.open(ctypes.c_void_p(16), 0)
print('open', r, ctypes.get_errno())
";

#[test]
fn a_path_argument_that_cannot_be_read_is_not_cached() {
    if !traceable() || !available("python3", &["-c", "pass"]) {
        return;
    }
    let env = TestEnv::new();
    env.write("badpath.py", BAD_PATH_PY);
    stamped_tool(&env, "python3 badpath.py");
    let (_, printed) = assert_not_cached(&env, &[], 0);
    assert_eq!(printed, format!("open -1 {}\n", libc::EFAULT));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_system_call_is_not_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write(
        "i386.c",
        "#include <stdio.h>\nint main(void) {\n    long r;\n    __asm__ volatile(\"int $0x80\" : \"=a\"(r) : \"a\"(20L) : \"memory\");\n    printf(\"int 0x80 %s\\n\", r > 0 ? \"ok\" : \"failed\");\n    return 0;\n}\n",
    );
    let built = Command::new("gcc")
        .args(["-o", "i386", "i386.c"])
        .current_dir(env.work())
        .output();
    if !built.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: gcc cannot build the int 0x80 program ({built:?})");
        return;
    }
    let plain = Command::new(env.path("i386")).output().unwrap();
    if stdout(&plain) != "int 0x80 ok\n" {
        eprintln!(
            "skipped: this kernel has no 32-bit system calls ({})",
            stdout(&plain)
        );
        return;
    }
    stamped_tool(&env, "./i386");
    let (_, printed) = assert_not_cached(&env, &[], 0);
    // Whatever the tracer does with the call, the run is not stored.
    assert!(printed.starts_with("int 0x80 "), "{printed}");
}

#[test]
fn a_damaged_manifest_is_one_warning_and_the_next_run_writes_it_anew() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("cfg", "x\n");
    stamped_tool(&env, "cat cfg");
    assert!(ran(&env, &[]));
    let manifests = files_under(&env.cache().join("manifests"));
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    fs::write(&manifests[0], "garbage\nnot a key\n").unwrap();
    let damaged = traced(&env, &[]);
    assert_success(&damaged.out);
    assert!(damaged.ran());
    assert_eq!(damaged.printed(), "x\n");
    let warnings: Vec<String> = damaged
        .stderr()
        .lines()
        .filter(|l| l.contains("warning"))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", damaged.stderr());
    assert!(warnings[0].contains("is not a manifest"), "{}", warnings[0]);
    // Written anew: the next call is a hit, without a warning.
    let hit = traced(&env, &[]);
    assert!(!hit.ran(), "{}", hit.stderr());
    assert!(!hit.stderr().contains("warning"), "{}", hit.stderr());
}
