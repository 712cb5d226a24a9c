//! A hostile pass over `memo run --trace` (issue 11) and `memo run --tty` (issue 10).
//!
//! Each test that fails today pins one defect and says, in a `DEFECT:` comment above it,
//! what is wrong and what the right behaviour is. The tests that pass pin what held and
//! was not tested elsewhere. Hits and misses are told apart by a stamp the command prints
//! (the wall clock in nanoseconds, on its first line), as in tests/cli/trace.rs: a traced
//! command's writes are outputs, restored on a hit, so a file counter would not do.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::stamped::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Helpers.

/// `memo run --trace ARGS -- ./tool`.
fn traced(env: &TestEnv, args: &[&str]) -> Call {
    let mut all = vec!["run".to_string(), "--trace".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["--".to_string(), "./tool".to_string()]);
    call(env.memo(all))
}

/// `memo run --trace -- ./tool`, which must succeed and be trusted: whether it ran.
#[track_caller]
fn ran(env: &TestEnv) -> bool {
    let call = traced(env, &[]);
    assert_success(&call.out);
    assert_eq!(call.not_cached_reason(), None, "{}", call.stderr());
    call.ran()
}

/// The first run of `./tool`: a trusted miss that is stored; returns what it printed.
#[track_caller]
fn record(env: &TestEnv) -> String {
    let first = traced(env, &[]);
    assert_success(&first.out);
    assert!(first.ran());
    assert_eq!(first.not_cached_reason(), None, "{}", first.stderr());
    first.printed()
}

/// After `record`, a call whose observations changed in a way the command sees: it must
/// run, and print `expected` (what the command prints when run by hand now).
#[track_caller]
fn assert_reruns_and_prints(env: &TestEnv, expected: &str) {
    let second = traced(env, &["-v"]);
    assert_success(&second.out);
    assert!(
        second.ran(),
        "a wrong hit: memo replayed {:?} where the command now prints {expected:?}\n{}",
        second.printed(),
        second.stderr()
    );
    assert_eq!(second.printed(), expected);
}

fn python_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "pass"])
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: python3 does not run here");
    }
    ok
}

// ---------------------------------------------------------------------------------------
// Wrong hits.

// DEFECT (wrong hit, high): a process that changes directory through a symlink
// (`cd link`) has its working directory recorded as the link's target at that moment
// (`real/`), and only the link's own type is checked. Pointing the link at another
// directory keeps every observation true, so the next call replays the old directory's
// file. Right: paths are joined lexically (docs/trace.md: "without resolving symlinks on
// the way"), so the read is `./link/f` and follows the link when checked; or the link is a
// `symlink` observation (its target), as readlink would record it. `cd current && make`
// with `current` a symlink to a release directory is common.
#[test]
fn a_chdir_through_a_symlinked_directory_misses_when_the_link_is_pointed_elsewhere() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("real/f", "real\n");
    env.write("other/f", "other\n");
    symlink("real", env.path("link")).unwrap();
    stamped_tool(&env, "cd link && cat f");
    assert_eq!(record(&env), "real\n");
    assert!(!ran(&env), "nothing changed");
    fs::remove_file(env.path("link")).unwrap();
    symlink("other", env.path("link")).unwrap();
    assert_reruns_and_prints(&env, "other\n");
}

// DEFECT (wrong hit, high): the same, through a directory descriptor. A file opened with
// `openat(dirfd, "f")` where `dirfd` was opened on the symlink `link` is recorded under
// the link's target of the time, so re-pointing the link is a wrong hit. Right: the
// descriptor's path is the one the process opened (`./link`), or the link is observed.
#[test]
fn a_file_opened_under_a_directory_descriptor_opened_through_a_symlink_misses_when_the_link_moves()
{
    if !traceable() || !python_available() {
        return;
    }
    let env = TestEnv::new();
    env.write("real/f", "real\n");
    env.write("other/f", "other\n");
    symlink("real", env.path("link")).unwrap();
    env.write(
        "openat.py",
        "import os\nd = os.open('link', os.O_RDONLY | os.O_DIRECTORY)\n\
         print(os.read(os.open('f', os.O_RDONLY, dir_fd=d), 100).decode(), end='')\n",
    );
    stamped_tool(&env, "python3 openat.py");
    assert_eq!(record(&env), "real\n");
    fs::remove_file(env.path("link")).unwrap();
    symlink("other", env.path("link")).unwrap();
    assert_reruns_and_prints(&env, "other\n");
}

// DEFECT (wrong hit, medium): /proc is never observed, but `/proc/self/cwd/...`,
// `/proc/self/root/...` and `/proc/self/fd/N` are not descriptions of the system: they are
// magic links to real files. A file read through one is not observed at all, so changing
// it is a wrong hit. Right: a path under /proc/<pid or self>/{cwd,root,fd} is resolved to
// the file it leads to and observed there (or the run is untrusted).
#[test]
fn a_file_read_through_proc_self_cwd_is_observed() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("f", "one\n");
    stamped_tool(&env, "cat /proc/self/cwd/f");
    assert_eq!(record(&env), "one\n");
    env.write("f", "two, longer\n");
    assert_reruns_and_prints(&env, "two, longer\n");
}

// DEFECT (wrong hit, high): a file the command renamed away (`mv in moved`) is left out of
// the observations entirely, because the run "renamed" it; yet its content before the run
// is what the command's output is made of. A later call with a different `in` hits and
// restores `moved` with the old content (and leaves the new `in` in place). Right: the
// source of a rename that existed before the run is a read (content) observation, as a
// copy would be; or such a run is untrusted.
#[test]
fn a_renamed_input_is_observed_by_its_content() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("in", "old\n");
    stamped_tool(&env, "mv in moved");
    record(&env);
    assert_eq!(env.read("moved"), b"old\n");
    env.write("in", "new\n");
    let second = traced(&env, &["-v"]);
    assert_success(&second.out);
    assert!(
        second.ran(),
        "a wrong hit: `moved` restored with the old content: {}",
        second.stderr()
    );
    assert_eq!(env.read("moved"), b"new\n");
    assert!(!env.path("in").exists(), "the real command moved `in` away");
}

// DEFECT (wrong hit, medium): `ln in out` makes `out` the content of `in`, but `in` is
// observed only as a stat (size, mode, mtime). A change of content that keeps the size and
// the mtime (`touch -r`, a restore from an archive, a checkout that sets times) is a hit
// that restores the old content into `out`. Right: the source of a hard link made by the
// run is observed by its content, like a file read.
#[test]
fn a_hard_linked_input_is_observed_by_its_content() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("in", "AAAA\n");
    stamped_tool(&env, "ln in out");
    record(&env);
    fs::remove_file(env.path("out")).unwrap();
    let before = fs::metadata(env.path("in")).unwrap().modified().unwrap();
    env.write("in", "BBBB\n");
    File::options()
        .write(true)
        .open(env.path("in"))
        .unwrap()
        .set_modified(before)
        .unwrap();
    let second = traced(&env, &["-v"]);
    assert_success(&second.out);
    assert!(second.ran(), "a wrong hit: {}", second.stderr());
    assert_eq!(env.read("out"), b"BBBB\n");
}

// DEFECT (wrong hit, medium; a documented gap, docs/trace.md "The environment"): PATH is
// not keyed, and the absent probes recorded are those of the first run's PATH. With a
// directory put in front of PATH that holds another `foo`, every observation still holds
// and the old `foo`'s output is replayed. ccache keys the compiler it finds; a traced call
// could key PATH (and LD_LIBRARY_PATH, PYTHONPATH...) or at least the program each exec
// resolved to by name. Right: the call that would run another program misses.
#[test]
fn a_different_path_that_finds_another_program_is_a_miss() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.script("bin1/foo", "echo one");
    env.script("bin2/foo", "echo two");
    stamped_tool(&env, "foo");
    let with_path = |dir: &str| {
        let mut cmd = env.memo(["run", "--trace", "-v", "--", "./tool"]);
        cmd.env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                env.path(dir).to_str().unwrap()
            ),
        );
        call(cmd)
    };
    let first = with_path("bin1");
    assert_success(&first.out);
    assert_eq!(first.printed(), "one\n");
    let second = with_path("bin2");
    assert_success(&second.out);
    assert!(second.ran(), "a wrong hit: {}", second.stderr());
    assert_eq!(second.printed(), "two\n");
}

// DEFECT (critical: a wrong hit that also reverts the user's edit): a file the command
// only changed the attributes of (`chmod +x build.sh`, `chown`, `utime`, a `truncate` to
// its own size) is taken as written by the run, so it becomes an output and is no longer
// observed. `chmod +x build.sh && ./build.sh`, common in CI scripts, then hits after
// build.sh was edited, replays the old script's output, and restores the old build.sh
// over the edited one. Right: a change of mode, owner or times is not a write of content;
// the file is still an input (executed, read) and, if it was not written, not an output.
#[test]
fn a_script_the_command_makes_executable_is_still_an_input_and_is_not_reverted() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("build.sh", "echo one\n");
    stamped_tool(&env, "chmod +x build.sh && ./build.sh");
    assert_eq!(record(&env), "one\n");
    env.write("build.sh", "echo two\n");
    fs::set_permissions(
        env.path("build.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let second = traced(&env, &["-v"]);
    assert_success(&second.out);
    assert_eq!(
        env.read("build.sh"),
        b"echo two\n",
        "the hit put the old script back over the edited one"
    );
    assert!(second.ran(), "a wrong hit: {}", second.stderr());
    assert_eq!(second.printed(), "two\n");
}

// DEFECT (critical, as above, through utime(2) and chown(2)): a file whose times or
// owner the command set and then read is an output, not an input: an edit of it is a
// wrong hit that restores the old content over the edit.
#[test]
fn a_file_whose_times_or_owner_the_command_set_is_still_an_input() {
    if !traceable() || !python_available() {
        return;
    }
    for change in ["os.utime('f')", "os.chown('f', os.getuid(), os.getgid())"] {
        let env = TestEnv::new();
        env.write("f", "one\n");
        env.write(
            "change.py",
            format!("import os\n{change}\nprint(open('f').read(), end='')\n"),
        );
        stamped_tool(&env, "python3 change.py");
        assert_eq!(record(&env), "one\n");
        env.write("f", "two, longer\n");
        let second = traced(&env, &["-v"]);
        assert_success(&second.out);
        assert_eq!(
            env.read("f"),
            b"two, longer\n",
            "{change}: the edit was reverted"
        );
        assert!(second.ran(), "{change}: a wrong hit: {}", second.stderr());
    }
}

// DEFECT (wrong hit, medium): "/dev: devices are never observations" is applied to every
// path under /dev, so a regular file there (`/dev/shm/...`, where Python's multiprocessing,
// browsers and CI jobs keep data) is neither observed nor makes the run untrusted: an edit
// of it is a wrong hit. Right: a regular file is observed wherever it is; only device
// nodes are left out (or make the run untrusted).
#[test]
fn a_regular_file_under_dev_shm_is_observed() {
    if !traceable() {
        return;
    }
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: no /dev/shm here");
        return;
    }
    let env = TestEnv::new();
    let name = env
        .root
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let file = shm.join(format!("memo-hostile-{name}"));
    fs::write(&file, "one\n").unwrap();
    stamped_tool(&env, &format!("cat {}", file.display()));
    let first = record(&env);
    fs::write(&file, "two, longer\n").unwrap();
    let second = traced(&env, &["-v"]);
    fs::remove_file(&file).unwrap();
    assert_eq!(first, "one\n");
    assert!(second.ran(), "a wrong hit: {}", second.stderr());
    assert_eq!(second.printed(), "two, longer\n");
}

// DEFECT (wrong hit, medium): the paths left out of the observations (/proc, /sys, /dev
// and memo's cache directory) are told by a lexical prefix, before `..` is resolved, so a
// file named as `/proc/../<path>` or `<cache>/../<path>` is not observed at all and an edit
// of it is a wrong hit. Right: a path is left out by where it leads (`..` resolved as the
// kernel resolves it), not by how it is spelt.
#[test]
fn a_path_that_climbs_out_of_an_excluded_directory_is_observed() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    fs::create_dir_all(env.cache()).unwrap();
    let target = env.path("f");
    let spellings = [
        format!("/proc/../{}", target.strip_prefix("/").unwrap().display()),
        format!("/sys/../{}", target.strip_prefix("/").unwrap().display()),
        format!("/dev/../{}", target.strip_prefix("/").unwrap().display()),
        format!("{}/../work/f", env.cache().display()),
    ];
    for spelling in spellings {
        let _ = fs::remove_dir_all(env.cache().join("manifests"));
        env.write("f", "one\n");
        stamped_tool(&env, &format!("cat {spelling}"));
        assert_eq!(record(&env), "one\n", "{spelling}");
        env.write("f", "two, longer\n");
        let second = traced(&env, &["-v"]);
        assert!(second.ran(), "{spelling}: a wrong hit: {}", second.stderr());
    }
}

// DEFECT (wrong hit, low): the issue says a directory's own stat records only its type
// "not its mtime" (which moves whenever a file inside is added); the implementation leaves
// out its mode too, which does not move that way. A command that looks at a directory's
// permissions (`stat -c %a`, `ls -ld`, `test -w` for a user other than root, `find -perm`)
// replays the old answer after a chmod. Right: a directory's stat records its type and
// mode (not its mtime or size).
#[test]
fn a_directory_whose_mode_changed_is_a_miss() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    fs::create_dir(env.path("d")).unwrap();
    let set_mode = |mode| {
        fs::set_permissions(
            env.path("d"),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap()
    };
    set_mode(0o755);
    stamped_tool(&env, "stat -c %a d");
    assert_eq!(record(&env), "755\n");
    set_mode(0o700);
    assert_reruns_and_prints(&env, "700\n");
}

// DEFECT (wrong hit, medium): a listing is recorded as its entry names only, but getdents
// also tells each entry's type (d_type), which programs use without a stat: Python's
// `os.scandir`/`os.walk`, `glob('*/')`, Rust's `DirEntry::file_type`, `find -type` and
// ripgrep/fd. A file replaced by a directory of the same name (or a symlink by a file)
// keeps the names and is a wrong hit. Right: a listing records each name with its type.
#[test]
fn a_listed_entry_that_changed_type_is_a_miss() {
    if !traceable() || !python_available() {
        return;
    }
    let env = TestEnv::new();
    env.write("d/x", "");
    env.write("d/y", "");
    env.write(
        "scan.py",
        "import os\nfor e in sorted(os.scandir('d'), key=lambda e: e.name):\n    print(e.name, e.is_dir())\n",
    );
    stamped_tool(&env, "python3 scan.py");
    assert_eq!(record(&env), "x False\ny False\n");
    fs::remove_file(env.path("d/x")).unwrap();
    fs::create_dir(env.path("d/x")).unwrap();
    assert_reruns_and_prints(&env, "x True\ny False\n");
}

// DEFECT (wrong hit, medium, with --ignore-cwd): a file the command names by an absolute
// path that happens to lie under memo's working directory is recorded relative to it, so
// a call from another checkout with --ignore-cwd checks that checkout's file while the
// command still reads the absolute one. (Running memo from $HOME makes every
// `~/.config/...` such a path.) Right: only a path the command named relative to a working
// directory under memo's is recorded relative; one it named absolutely stays absolute.
#[test]
fn an_absolute_path_under_the_first_checkout_is_not_checked_in_another_checkout() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let first = env.root.path().join("first");
    let second = env.root.path().join("second");
    for dir in [&first, &second] {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("f"), "same\n").unwrap();
        let tool = dir.join("tool");
        fs::write(
            &tool,
            format!("#!/bin/sh\ndate +%s%N\ncat {}/f\n", first.display()),
        )
        .unwrap();
        fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let in_dir = |dir: &Path| {
        let mut cmd = env.memo(["run", "--trace", "-v", "--ignore-cwd", "--", "./tool"]);
        cmd.current_dir(dir);
        call(cmd)
    };
    let recorded = in_dir(&first);
    assert_success(&recorded.out);
    assert_eq!(recorded.printed(), "same\n");
    fs::write(first.join("f"), "changed\n").unwrap();
    let other = in_dir(&second);
    assert_success(&other.out);
    assert!(other.ran(), "a wrong hit: {}", other.stderr());
    assert_eq!(other.printed(), "changed\n");
}

// DEFECT (wrong hit, high): a file read through a symlink the run itself made (`ln -sf
// in link; cat link`) is taken as a read of the run's own output `link`, so the file it
// leads to, which the run never wrote, is not observed: an edit of `in` is a wrong hit.
// Symlink forests are common (a `current.conf` pointing at the chosen config, a venv's
// links, Bazel-style trees). Right: a read through a link is a read of where it leads; a
// target the run did not write is observed by its content.
#[test]
fn a_file_read_through_a_symlink_the_run_made_is_observed() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("in", "one\n");
    stamped_tool(&env, "ln -sf in link; cat link");
    assert_eq!(record(&env), "one\n");
    env.write("in", "two, longer\n");
    assert_reruns_and_prints(&env, "two, longer\n");
}

// DEFECT (wrong hit, low): an open that fails with ELOOP (a symlink that leads to itself)
// records nothing, so when the loop is replaced by a real file the call still hits and
// replays "none". ENOENT and ENOTDIR are recorded (as absent) and miss as they should.
// Right: every failed lookup is an observation of what was there (the link, recorded with
// its target, or the path's type), or the run is untrusted.
#[test]
fn a_symlink_loop_replaced_by_a_file_is_a_miss() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    symlink("loop", env.path("loop")).unwrap();
    stamped_tool(&env, "cat loop 2>/dev/null || echo none");
    assert_eq!(record(&env), "none\n");
    fs::remove_file(env.path("loop")).unwrap();
    env.write("loop", "a file now\n");
    assert_reruns_and_prints(&env, "a file now\n");
}

// Held: a header found through a symlinked include directory (`-I inc`, `inc -> incA`)
// is observed through the link: pointing the link at another directory is a miss.
#[test]
fn a_header_found_through_a_symlinked_include_directory_misses_when_the_link_moves() {
    if !traceable() {
        return;
    }
    let gcc = Command::new("gcc")
        .arg("--version")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output();
    if !gcc.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no gcc here");
        return;
    }
    let env = TestEnv::new();
    env.write("incA/c.h", "#define V 1\n");
    env.write("incB/c.h", "#define V 2\n");
    symlink("incA", env.path("inc")).unwrap();
    env.write(
        "m.c",
        "#include <stdio.h>\n#include \"c.h\"\nint main(void) { printf(\"%d\\n\", V); return 0; }\n",
    );
    stamped_tool(&env, "gcc -I inc m.c -o prog && ./prog");
    assert_eq!(record(&env), "1\n");
    assert!(!ran(&env));
    fs::remove_file(env.path("inc")).unwrap();
    symlink("incB", env.path("inc")).unwrap();
    assert_reruns_and_prints(&env, "2\n");
}

// Held: a thread that changes directory changes it for the whole process (CLONE_FS), and
// a later relative open by another thread is observed where it really went.
#[test]
fn a_chdir_by_one_thread_is_seen_by_the_others() {
    if !traceable() || !python_available() {
        return;
    }
    let env = TestEnv::new();
    env.write("f", "top\n");
    env.write("sub/f", "one\n");
    env.write(
        "thread.py",
        "import os, threading\nt = threading.Thread(target=lambda: os.chdir('sub'))\n\
         t.start(); t.join()\nprint(open('f').read(), end='')\n",
    );
    stamped_tool(&env, "python3 thread.py");
    assert_eq!(record(&env), "one\n");
    assert!(!ran(&env));
    env.write("sub/f", "two\n");
    assert_reruns_and_prints(&env, "two\n");
}

// ---------------------------------------------------------------------------------------
// Outputs.

// DEFECT (high: a hit writes outside the work dir, into a file the command never wrote):
// the command removes a symlink and writes a regular file in its place (`rm -f link; echo
// new > link`). On a hit where `link` is again a symlink (to a file outside the work
// dir), memo restores the output *through* the link and overwrites its target, which the
// real command would have left alone. Right: a traced output that the run created after
// removing what was there is restored as the run left it: a regular file replaces the
// symlink; the target is untouched.
#[test]
#[ignore = "known gap, left for the next session: a traced output is restored through a symlink planted at its path since the run"]
fn a_hit_does_not_write_through_a_symlink_the_command_replaced_with_a_file() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    let outside = env.root.path().join("precious");
    fs::write(&outside, "precious\n").unwrap();
    symlink(&outside, env.path("link")).unwrap();
    stamped_tool(&env, "rm -f link; echo new > link");
    record(&env);
    assert_eq!(fs::read(&outside).unwrap(), b"precious\n");
    fs::remove_file(env.path("link")).unwrap();
    symlink(&outside, env.path("link")).unwrap();
    let second = traced(&env, &[]);
    assert_success(&second.out);
    assert_eq!(
        fs::read(&outside).unwrap(),
        b"precious\n",
        "the hit wrote through the symlink into a file outside the work dir"
    );
    assert!(!fs::symlink_metadata(env.path("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(env.read("link"), b"new\n");
}

// DEFECT (medium: never a hit): memo's own cache directory is excluded from the
// observations only when named by an absolute path. With `--cache-dir ./cache` (a cache
// inside the work dir, named relatively) a command that lists the work dir recursively
// observes the cache's listings, which memo itself changes when it stores; every call
// misses ("the listing of ./cache changed") and the manifest fills with runs. Right: the
// cache is excluded however it was named (docs/trace.md "What is never observed").
#[test]
fn a_cache_dir_inside_the_work_dir_named_relatively_is_not_observed() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("data/f", "x\n");
    stamped_tool(&env, "find . -name f");
    let run = |verbose: bool| {
        let mut args = vec!["run", "--trace", "--cache-dir", "./cache"];
        if verbose {
            args.push("-v");
        }
        args.extend(["--", "./tool"]);
        call(env.memo(args))
    };
    let first = run(false);
    assert_success(&first.out);
    assert!(first.ran());
    let second = run(true);
    assert_success(&second.out);
    assert!(
        !second.ran(),
        "the cache observed itself: {}",
        second.stderr()
    );
}

// DEFECT (medium): a hit does not restore a directory the run created and left empty
// (nor a FIFO it made with mkfifo): `mkdir -p dist logs` as a setup step replays as a hit
// that leaves no `logs`, and the next step of the script fails writing into it. Right:
// every directory the run created and left in place is an output, restored on a hit even
// when empty (and a FIFO is restored, or the run is not stored).
#[test]
fn a_hit_restores_an_empty_directory_the_run_created() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "mkdir -p logs");
    record(&env);
    assert!(env.path("logs").is_dir());
    fs::remove_dir(env.path("logs")).unwrap();
    let second = traced(&env, &[]);
    assert_success(&second.out);
    assert!(!second.ran());
    assert!(env.path("logs").is_dir(), "the hit left no logs/");
}

// Held: identical traced calls at once run the command once; the others wait and
// replay its result (the stamp is the same in every call's output).
#[test]
fn identical_traced_calls_at_once_run_the_command_once() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("f", "x\n");
    stamped_tool(&env, "sleep 1; cat f");
    let children: Vec<Child> = (0..4)
        .map(|_| env.spawn_piped(["run", "--trace", "--", "./tool"]))
        .collect();
    let stamps: Vec<String> = children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert_success(&out);
            assert!(stdout(&out).ends_with("x\n"), "{}", stdout(&out));
            stdout(&out).lines().next().unwrap().to_string()
        })
        .collect();
    assert!(stamps.iter().all(|s| *s == stamps[0]), "{stamps:?}");
}

// Held: a manifest under cache/manifests that is a FIFO or a symlink to /dev/zero does not
// hang memo: the call runs the command and stores a fresh result.
#[test]
fn a_manifest_that_is_a_fifo_or_endless_does_not_hang_the_call() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write("f", "x\n");
    stamped_tool(&env, "cat f");
    record(&env);
    let manifests = files_under(&env.cache().join("manifests"));
    assert_eq!(manifests.len(), 1, "{manifests:?}");
    let manifest = &manifests[0];
    for plant in ["fifo", "zero"] {
        fs::remove_file(manifest).unwrap();
        if plant == "fifo" {
            let path = std::ffi::CString::new(manifest.to_str().unwrap()).unwrap();
            // SAFETY: a plain system call on a valid C string.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        } else {
            symlink("/dev/zero", manifest).unwrap();
        }
        let out = run_with_deadline(
            env.memo(["run", "--trace", "--", "./tool"]),
            Duration::from_secs(20),
        );
        assert_success(&out);
        assert_eq!(stdout(&out).lines().nth(1), Some("x"), "{plant}");
    }
}

// ---------------------------------------------------------------------------------------
// Faults and signals.

// Held: kill -9 of memo during a traced run kills the command too (it does not run on,
// untraced), stores nothing, and the next call runs and stores.
#[test]
fn kill_9_of_memo_during_a_traced_run_kills_the_command_and_the_next_call_works() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(&env, "echo started > started; sleep 2; echo late > late");
    let mut child = env
        .memo(["run", "--trace", "--", "./tool"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for_file("started");
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !env.path("late").exists(),
        "the command ran on after memo was killed"
    );
    assert!(env.listing().is_empty());
    fs::remove_file(env.path("started")).unwrap();
    let next = run_with_deadline(
        env.memo(["run", "--trace", "--", "./tool"]),
        Duration::from_secs(20),
    );
    assert_success(&next);
    assert!(env.path("late").exists());
    assert_eq!(env.listing().len(), 1);
}

// DEFECT (medium): the traced command starts with SIGPIPE ignored (memo's own disposition,
// which Rust sets, leaks through the hand-made fork; std's Command resets it, so an
// untraced run has it at its default). A pipeline inside the command whose reader exits
// early then fails differently: `seq ... | head -1` makes `seq` print "write error: Broken
// pipe" and exit 1 instead of dying quietly of SIGPIPE, and that stderr is recorded; `memo
// run --trace -- seq ... | head -1` exits 1, not 141. docs/trace.md: "standard input,
// output, error and exit code pass through exactly as without --trace". Right: the
// command's signal dispositions are reset to their defaults, as for an untraced run.
#[test]
fn the_traced_command_gets_sigpipe_at_its_default_as_without_trace() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "seq 1 1000000 | head -1; grep SigIgn /proc/self/status",
    );
    let untraced = env.run(["run", "--", "./tool"]);
    let traced = traced(&env, &[]);
    assert_success(&traced.out);
    assert_eq!(stderr(&untraced), "", "untraced, nothing on stderr");
    assert_eq!(
        traced.stderr().trim(),
        "",
        "under --trace the command's SIGPIPE is ignored: {}",
        traced.printed()
    );
    let ignored = traced
        .printed()
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .expect("the SigIgn line");
    assert_eq!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE is ignored in the traced command"
    );
}

/// The state letter of process `pid` (R, S, T, t, Z...), from /proc.
fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The pid of the first child of `parent`.
fn first_child(parent: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

// DEFECT (medium): job control does not work on a traced command: SIGSTOP sent to it (as
// `kill -STOP`, or a shell's Ctrl-Z which sends SIGTSTP) does not stop it: the tracer
// resumes the group-stop it reports (it re-injects the signal with PTRACE_CONT, which
// restarts the process). The command runs on to its end while the user believes it
// suspended. Right: a traced command stops and continues as an untraced one does
// (PTRACE_SEIZE and PTRACE_LISTEN for group-stops).
#[test]
#[ignore = "known gap (docs/trace.md): job control of a traced command needs PTRACE_SEIZE; the tracer attaches with PTRACE_TRACEME"]
fn sigstop_stops_the_traced_command_and_sigcont_resumes_it() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2; done; echo end",
    );
    let child = env
        .memo(["run", "--trace", "--", "./tool"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let tool = loop {
        if let Some(pid) = first_child(child.id()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the tool never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on a pid we just read.
    unsafe { libc::kill(tool as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(500));
    let stopped = process_state(tool);
    std::thread::sleep(Duration::from_secs(3));
    let still_there = process_state(tool);
    // SAFETY: as above.
    unsafe { libc::kill(tool as i32, libc::SIGCONT) };
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    assert!(
        matches!(stopped, Some('T') | Some('t')),
        "not stopped after SIGSTOP: state {stopped:?}"
    );
    assert!(
        still_there.is_some(),
        "the command ran to its end while it should have been stopped"
    );
}

// DEFECT (high: a whole class of programs is never cached): Rust's standard library, the
// first time a `statx` fails (a `Path::exists()` on a missing path, which cargo, rustc,
// ripgrep do at once), probes whether statx is usable with `statx(0, NULL, 0, STATX_ALL,
// NULL)`, which fails with EFAULT. memo takes that NULL for "a path it passed to the
// system could not be read" and stores nothing, every time. The same makes `memo run
// --trace -- memo run ...` say that instead of naming ptrace. Right: a NULL path names no
// file and reads none (nothing can be mapped at address 0); it is no observation and does
// not make the run untrusted.
#[test]
fn a_rust_program_whose_first_stat_fails_is_cached() {
    if !traceable() {
        return;
    }
    let env = TestEnv::new();
    env.write(
        "probe.rs",
        "fn main() { println!(\"{}\", std::path::Path::new(\"missing\").exists()); }\n",
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let built = Command::new(&rustc)
        .args(["-O", "probe.rs", "-o", "probe"])
        .current_dir(env.work())
        .output();
    if !built.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `{rustc}` cannot build a program here");
        return;
    }
    stamped_tool(&env, "./probe");
    let first = traced(&env, &[]);
    assert_success(&first.out);
    assert_eq!(first.printed(), "false\n");
    assert_eq!(first.not_cached_reason(), None, "{}", first.stderr());
    assert!(!ran(&env), "stored and replayed");
}

// ---------------------------------------------------------------------------------------
// --tty.

/// memo started with stdin, stdout and stderr on a fresh terminal 80 columns wide which
/// is its controlling terminal (as in an interactive shell): the master, and memo.
fn start_on_terminal(mut cmd: Command) -> (File, Child) {
    let (master, slave) = open_pty(80);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .env("TERM", "xterm");
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(cmd);
    (master, child)
}

/// Reads everything memo writes to the terminal until it is done; returns its exit code
/// and the bytes.
fn finish_on_terminal(mut master: File, mut child: Child) -> (i32, Vec<u8>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, out)
}

/// Runs `cmd` on a terminal and returns its exit code and what it wrote there.
fn on_terminal(cmd: Command) -> (i32, String) {
    let (master, child) = start_on_terminal(cmd);
    let (code, out) = finish_on_terminal(master, child);
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// The stamp on the first line written to the terminal.
fn stamp_of(text: &str) -> u128 {
    text.lines()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stamp in {text:?}"))
}

// DEFECT (medium: a wrong hit of an interactive answer): under --tty memo forwards what is
// typed on the terminal to the command's pseudo-terminal, so a command that asks a
// question on /dev/tty (`Continue? [y/N]`, a passphrase prompt) gets the answer, and the
// run is then stored: the next call replays the first answer's result without asking.
// Right: a --tty run to which memo forwarded any input is not stored (one line saying
// why), as --trace does for what it cannot key.
#[test]
#[ignore = "known gap (docs/trace.md, README): a command that asks on the terminal is not for memo; --tty keeps the user's terminal as the command's controlling terminal"]
fn a_tty_run_that_read_what_was_typed_is_not_stored() {
    let env = TestEnv::new();
    stamped_tool(
        &env,
        "echo question; read answer < /dev/tty; echo \"answer $answer\"",
    );
    let ask = |typed: &'static [u8]| {
        let (mut master, child) = start_on_terminal(env.memo(["run", "--tty", "--", "./tool"]));
        std::thread::sleep(Duration::from_millis(700));
        master.write_all(typed).unwrap();
        let (code, out) = finish_on_terminal(master, child);
        (code, String::from_utf8_lossy(&out).into_owned())
    };
    let (code, first) = ask(b"yes\n");
    assert_eq!(code, 0, "{first}");
    assert!(first.contains("answer yes"), "{first:?}");
    let (code, second) = ask(b"no\n");
    assert_eq!(code, 0, "{second}");
    assert!(
        second.contains("answer no"),
        "the first run's answer was replayed: {second:?}"
    );
}

// DEFECT (low): under --tty the command's output goes through two terminals' output
// processing: the inner pseudo-terminal turns "\n" into "\r\n", and memo writes that to
// its own terminal, which turns it into "\r\r\n". A terminal shows the same picture, but
// `script`, asciinema, tmux logs and anything that reads the terminal get bytes the
// command never wrote, on the miss and on every hit. Right: the terminal receives what it
// would receive from the command run directly on it ("a\r\n"), e.g. by recording with the
// inner terminal's ONLCR off or writing the recording with the outer one's output
// processing accounted for.
#[test]
fn a_tty_run_sends_the_terminal_the_bytes_the_command_would() {
    let env = TestEnv::new();
    env.script("tool", "printf 'a\\n\\033[31mred\\033[0m\\n'");
    let mut direct = Command::new(env.path("tool"));
    direct.current_dir(env.work());
    let (_, expected) = on_terminal(direct);
    assert_eq!(expected, "a\r\n\x1b[31mred\x1b[0m\r\n");
    for what in ["miss", "hit"] {
        let (code, got) = on_terminal(env.memo(["run", "--tty", "--", "./tool"]));
        assert_eq!(code, 0);
        assert_eq!(got, expected, "the {what}");
    }
}

// DEFECT (low): a --tty recording is keyed on the terminal's width when the command
// started, but a resize during the run is passed on (rightly) and the run is still stored
// under the first width: a later call on an 80-column terminal replays output laid out
// for 120 columns. Right: a run whose terminal changed size is not stored (or is keyed on
// the width it ended with).
#[test]
fn a_tty_run_whose_terminal_was_resized_is_not_stored_under_the_first_width() {
    let env = TestEnv::new();
    stamped_tool(&env, "sleep 1; stty size < /dev/tty");
    let (master, child) = start_on_terminal(env.memo(["run", "--tty", "--", "./tool"]));
    std::thread::sleep(Duration::from_millis(400));
    set_size(master.as_raw_fd(), 120);
    let (code, out) = finish_on_terminal(master, child);
    let first = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(code, 0, "{first}");
    assert!(
        first.contains("30 120"),
        "the resize reached the command: {first:?}"
    );
    let started = now_ns();
    let (code, second) = on_terminal(env.memo(["run", "--tty", "--", "./tool"]));
    assert_eq!(code, 0, "{second}");
    assert!(
        stamp_of(&second) >= started,
        "an 80-column terminal got the 120-column run: {second:?}"
    );
    assert!(second.contains("30 80"), "{second:?}");
}

// Held: with --ttl and --stale on a terminal, the background refresh records on a
// terminal too: the refreshed result still replays as a terminal recording.
#[test]
fn a_stale_refresh_of_a_tty_recording_records_on_a_terminal() {
    let env = TestEnv::new();
    stamped_tool(&env, "if [ -t 1 ]; then echo terminal; else echo pipe; fi");
    let args = [
        "run", "--tty", "--ttl", "1s", "--stale", "1h", "--", "./tool",
    ];
    let (_, first) = on_terminal(env.memo(args));
    assert!(first.contains("terminal"), "{first:?}");
    std::thread::sleep(Duration::from_millis(1300));
    let (_, stale) = on_terminal(env.memo(args));
    assert_eq!(
        stamp_of(&stale),
        stamp_of(&first),
        "the stale result at once"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, now) = on_terminal(env.memo(args));
        if stamp_of(&now) != stamp_of(&first) {
            assert!(now.contains("terminal"), "a pipe recording: {now:?}");
            assert!(!now.contains("pipe"), "{now:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        std::thread::sleep(Duration::from_millis(300));
    }
}
