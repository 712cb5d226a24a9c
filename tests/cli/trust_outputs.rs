//! Trust in restored outputs (issue 8): a declared output behind a symlink, a hit that
//! never deletes a user's file, a restore that fails or is killed, and entries that stay
//! small however many small outputs a command writes.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Every `.memo-restore-*` name under `dir`, at any depth.
fn restore_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(read) = fs::read_dir(&at) else {
            continue;
        };
        for entry in read.flatten() {
            let path = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".memo-restore-")
            {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

#[track_caller]
fn assert_no_restore_leftovers(env: &TestEnv) {
    let left = restore_leftovers(env.root.path());
    assert!(left.is_empty(), "restore files left behind: {left:?}");
}

// --- A declared output that is a symlink -------------------------------------------

#[test]
fn a_directory_output_behind_a_symlink_is_restored_through_it() {
    let env = TestEnv::new();
    fs::create_dir(env.path("real")).unwrap();
    symlink("real", env.path("build")).unwrap();
    env.tool("echo built > build/out.txt");
    assert!(env.ran_tool(&["-o", "build"]));

    // Clean the outputs but keep the link: the hit writes into the link's target.
    fs::remove_file(env.path("real/out.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "build"]));
    assert!(is_symlink(&env.path("build")), "the link is kept");
    assert_eq!(env.read("real/out.txt"), b"built\n");

    // Clean the link's target too: the content is restored at the declared path.
    fs::remove_dir_all(env.path("real")).unwrap();
    assert!(!env.ran_tool(&["-o", "build"]));
    assert_eq!(env.read("build/out.txt"), b"built\n");
    assert_eq!(env.count(), 1);
    assert_no_restore_leftovers(&env);
}

#[test]
fn a_file_output_behind_a_symlink_is_restored_through_it() {
    let env = TestEnv::new();
    fs::create_dir(env.path("data")).unwrap();
    symlink("data/out.txt", env.path("out.txt")).unwrap();
    env.tool("echo content > out.txt");
    assert!(env.ran_tool(&["-o", "out.txt"]));
    assert_eq!(env.read("data/out.txt"), b"content\n");

    env.write("data/out.txt", "stale");
    assert!(!env.ran_tool(&["-o", "out.txt"]));
    assert!(is_symlink(&env.path("out.txt")), "the link is kept");
    assert_eq!(env.read("data/out.txt"), b"content\n");

    // The link's target is gone: a hit never succeeds with the content missing.
    fs::remove_file(env.path("data/out.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "out.txt"]));
    assert_eq!(env.read("out.txt"), b"content\n");
    assert_eq!(env.count(), 1);
    assert_no_restore_leftovers(&env);
}

#[test]
fn a_symlink_inside_an_output_directory_is_recorded_as_a_link() {
    let env = TestEnv::new();
    env.tool("mkdir -p out real; echo x > real/f; ln -sfn ../real out/inner");
    assert!(env.ran_tool(&["-o", "out"]));
    fs::remove_dir_all(env.path("out")).unwrap();
    assert!(!env.ran_tool(&["-o", "out"]));
    assert_eq!(
        fs::read_link(env.path("out/inner")).unwrap(),
        PathBuf::from("../real")
    );
}

// --- A hit never deletes a user's file ---------------------------------------------

#[test]
fn two_steps_sharing_an_output_directory_keep_each_others_files() {
    let env = TestEnv::new();
    env.tool("mkdir -p out; echo \"$1\" > \"out/$1.txt\"");
    let step = |name: &str| {
        let mut cmd = env.memo(["run", "-o", "out", "--", "./tool", name]);
        cmd.stderr(std::process::Stdio::piped());
        env.ran(cmd)
    };
    assert!(step("a"));
    assert!(step("b"));
    fs::remove_dir_all(env.path("out")).unwrap();
    assert!(!step("b"));
    assert!(!step("a"));
    assert_eq!(env.read("out/a.txt"), b"a\n");
    assert_eq!(env.read("out/b.txt"), b"b\n", "a's hit deleted b's file");
    assert_eq!(env.count(), 2);
}

#[test]
fn a_hit_replaces_a_file_where_a_directory_was_recorded_and_back() {
    let env = TestEnv::new();
    env.tool("mkdir -p out/d; echo f > out/f; echo g > out/d/g");
    assert!(env.ran_tool(&["-o", "out"]));
    fs::remove_dir_all(env.path("out/d")).unwrap();
    env.write("out/d", "a file where a directory was");
    fs::remove_file(env.path("out/f")).unwrap();
    fs::create_dir(env.path("out/f")).unwrap();
    assert!(!env.ran_tool(&["-o", "out"]));
    assert_eq!(env.read("out/f"), b"f\n");
    assert_eq!(env.read("out/d/g"), b"g\n");
    assert_no_restore_leftovers(&env);
}

#[test]
fn a_hit_never_deletes_a_non_empty_directory_where_a_file_was_recorded() {
    let env = TestEnv::new();
    env.tool("mkdir -p out; { echo f > out/f; } 2>/dev/null; exit 0");
    assert!(env.ran_tool(&["-o", "out"]));
    fs::remove_file(env.path("out/f")).unwrap();
    env.write("out/f/keep.txt", "precious");
    let out = env.run(run_tool(&["-o", "out"]));
    assert_success(&out);
    assert_eq!(env.count(), 2, "no hit: the command ran instead");
    assert!(stderr(&out).contains("out/f"), "{}", stderr(&out));
    assert_eq!(env.read("out/f/keep.txt"), b"precious");
    assert_no_restore_leftovers(&env);
}

#[test]
fn a_symlink_planted_inside_an_output_directory_is_replaced_not_followed() {
    let env = TestEnv::new();
    env.tool("mkdir -p dist/sub; echo b > dist/sub/b.txt; echo c > dist/c.txt");
    assert!(env.ran_tool(&["-o", "dist"]));
    env.write("victim/keep.txt", "precious");
    env.write("victim.txt", "precious");
    fs::remove_dir_all(env.path("dist/sub")).unwrap();
    fs::remove_file(env.path("dist/c.txt")).unwrap();
    symlink(env.path("victim"), env.path("dist/sub")).unwrap();
    symlink(env.path("victim.txt"), env.path("dist/c.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "dist"]));
    assert!(!is_symlink(&env.path("dist/sub")));
    assert!(!is_symlink(&env.path("dist/c.txt")));
    assert_eq!(env.read("dist/sub/b.txt"), b"b\n");
    assert_eq!(env.read("dist/c.txt"), b"c\n");
    assert!(!env.path("victim/b.txt").exists());
    assert_eq!(env.read("victim.txt"), b"precious");
}

#[test]
fn a_restore_killed_midway_leaves_whole_files_and_the_next_call_completes_it() {
    let env = TestEnv::new();
    env.tool("mkdir -p out && cd out && head -c 80000 /dev/urandom | split -b 200 -a 4 - part.");
    assert!(env.ran_tool(&["-o", "out"]));
    let names: Vec<String> = fs::read_dir(env.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 400);
    let recorded: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (n.clone(), env.read(&format!("out/{n}"))))
        .collect();
    for (name, _) in &recorded {
        fs::write(env.path(&format!("out/{name}")), "old").unwrap();
    }
    // A restore left behind by a memo that died earlier.
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    env.write(&format!("out/.memo-restore-{dead_pid}-abc123"), "half");

    let first = env.path("out/part.aaaa");
    let old_inode = fs::metadata(&first).unwrap().ino();
    // Separate pipes, as `env.run` uses: the stream mode is part of the key.
    let mut hit = env
        .memo(run_tool(&["-o", "out"]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it as soon as the restore has started replacing files.
    loop {
        if fs::metadata(&first).is_ok_and(|m| m.ino() != old_inode) {
            break;
        }
        if hit.try_wait().unwrap().is_some() {
            break;
        }
    }
    let _ = hit.kill();
    let status = hit.wait().unwrap();
    if status.success() {
        eprintln!("note: the restore finished before it could be killed");
    }
    let mut new_files = 0;
    for (name, bytes) in &recorded {
        let now = env.read(&format!("out/{name}"));
        assert!(
            now == b"old" || now == *bytes,
            "out/{name} is neither the old nor the new file"
        );
        new_files += (now == *bytes) as usize;
    }
    assert!(new_files > 0);
    let out = env.run(run_tool(&["-o", "out"]));
    assert_success(&out);
    assert_eq!(env.count(), 1, "the next call is a hit");
    for (name, bytes) in &recorded {
        assert_eq!(&env.read(&format!("out/{name}")), bytes, "out/{name}");
    }
    assert_no_restore_leftovers(&env);
}

// --- A restore that fails runs the command instead ---------------------------------

/// Runs `script` in a new mount namespace where `$0` is the work dir's `small/`, a
/// tmpfs of 512 KiB, and `$1` is memo. `None` (with a note) where namespaces are not
/// allowed.
fn in_small_work_dir(env: &TestEnv, script: &str) -> Option<std::process::Output> {
    mounted(tmpfs_command(env, &env.path("small"), "size=512k", script))
}

#[test]
fn a_restore_that_fills_the_disk_cleans_up_and_runs_the_command() {
    let env = TestEnv::new();
    // The old output takes most of the disk: a copy beside it cannot fit, but the
    // command, which truncates the file in place, can.
    env.tool("head -c 300000 /dev/zero > small/out.bin");
    let Some(out) = in_small_work_dir(
        &env,
        "\"$1\" run -o small/out.bin -- ./tool || exit 10\n\
         echo second >&2\n\
         \"$1\" run -o small/out.bin -- ./tool || exit 11\n\
         ls -A small; wc -c < small/out.bin",
    ) else {
        return;
    };
    assert_success(&out);
    let err = stderr(&out);
    assert_eq!(
        env.count(),
        2,
        "the failed restore fell back to a run: {err}"
    );
    let second = err.split("second\n").nth(1).unwrap_or_default();
    assert!(second.contains("memo: warning"), "{err}");
    assert_eq!(stdout(&out), "out.bin\n300000\n", "{err}");
    assert_no_restore_leftovers(&env);
}

#[test]
fn a_restore_into_a_read_only_subdirectory_cleans_up_and_runs_the_command() {
    let env = TestEnv::new();
    if !nobody_can_run_in(&env) {
        return;
    }
    std::os::unix::fs::chown(env.root.path().join("home"), Some(NOBODY), Some(NOBODY)).unwrap();
    // Writing into an existing file needs no write permission on its directory; the
    // restore's temporary file beside it does.
    env.tool("mkdir -p out/sub; echo top > out/top; echo deep > out/sub/f");
    let as_nobody = || as_nobody(env.memo(run_tool(&["-o", "out"])));
    assert_success(&as_nobody());
    assert_eq!(env.count(), 1);
    fs::set_permissions(env.path("out/sub"), fs::Permissions::from_mode(0o555)).unwrap();
    let out = as_nobody();
    assert_success(&out);
    assert_eq!(env.count(), 2, "the failed restore fell back to a run");
    assert!(stderr(&out).contains("memo: warning"), "{}", stderr(&out));
    assert_eq!(env.read("out/sub/f"), b"deep\n");
    assert_eq!(env.read("out/top"), b"top\n");
    assert_no_restore_leftovers(&env);
}

// --- Entries stay small ------------------------------------------------------------

#[test]
fn small_binary_outputs_are_stored_compactly() {
    let env = TestEnv::new();
    env.tool("head -c 12000 /dev/urandom > out.bin");
    assert!(env.ran_tool(&["-o", "out.bin"]));
    let entry = env.entries()[0].len;
    assert!(
        entry < 18_000,
        "a 12 kB binary output made a {entry}-byte entry"
    );
    fs::remove_file(env.path("out.bin")).unwrap();
    let recorded_len = 12_000;
    assert!(!env.ran_tool(&["-o", "out.bin"]));
    assert_eq!(env.read("out.bin").len(), recorded_len);
}

/// Each file is small enough to inline, but not all of them together: past the entry's
/// budget they go to objects, so the entry grows by a node's metadata per file, not by
/// the file. (Before, 4,500 such files made an entry too big to read back.)
#[test]
fn many_small_binary_outputs_make_a_small_entry_that_hits() {
    let env = TestEnv::new();
    env.tool("mkdir -p dir && head -c 600000 /dev/urandom | split -b 2000 -a 4 - dir/f.");
    assert!(env.ran_tool(&["-o", "dir"]));
    assert_eq!(fs::read_dir(env.path("dir")).unwrap().count(), 300);
    let entry = env.entries()[0].len;
    // 300 x 2,000 bytes: 800 kB even as base64 if every file were inline.
    assert!(entry < 200_000, "300 small files made a {entry}-byte entry");
    let sample = env.read("dir/f.aaaa");
    fs::remove_dir_all(env.path("dir")).unwrap();
    let out = env.run(run_tool(&["-o", "dir"]));
    assert_success(&out);
    assert_eq!(stderr(&out), "", "no warning");
    assert_eq!(env.count(), 1, "a hit");
    assert_eq!(fs::read_dir(env.path("dir")).unwrap().count(), 300);
    assert_eq!(env.read("dir/f.aaaa"), sample);
}

/// However the entry's bytes are spent (here: long escaped names and link targets, a few
/// thousand of them), an entry memo could not read back is not written: the call warns
/// once, and no later call finds an entry it must call corrupt (as happened before).
#[test]
fn an_entry_too_big_to_read_back_is_not_stored() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::new();
    // A control byte is six characters in JSON: about 45 kB of entry per link.
    let name = vec![1u8; 240];
    let mut dir = env.path("out");
    for _ in 0..15 {
        dir.push(std::ffi::OsStr::from_bytes(&name));
    }
    fs::create_dir_all(&dir).unwrap();
    let target = std::ffi::OsStr::from_bytes(&[1u8; 4000]).to_os_string();
    for i in 0..1600 {
        let mut link = name.clone();
        link.extend_from_slice(i.to_string().as_bytes());
        symlink(&target, dir.join(std::ffi::OsStr::from_bytes(&link))).unwrap();
    }
    env.tool("true");
    let out = env.run(run_tool(&["-o", "out"]));
    assert_success(&out);
    assert!(stderr(&out).contains("not stored"), "{}", stderr(&out));
    // So the next call cannot find an entry it would call corrupt.
    assert!(env.entries().is_empty(), "an unreadable entry was written");
}

// --- More symlinked outputs ---------------------------------------------------------

/// `out.txt -> data/out.txt` with data/out.txt cleaned away: the command would write
/// through the link again, so the hit does too, and the user's link stays.
#[test]
fn a_file_output_behind_a_dangling_symlink_is_restored_through_it() {
    let env = TestEnv::new();
    fs::create_dir(env.path("data")).unwrap();
    symlink("data/out.txt", env.path("out.txt")).unwrap();
    env.tool("echo content > out.txt");
    assert!(env.ran_tool(&["-o", "out.txt"]));
    fs::remove_file(env.path("data/out.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "out.txt"]));
    assert!(is_symlink(&env.path("out.txt")), "the link is kept");
    assert_eq!(env.read("data/out.txt"), b"content\n");
    assert_eq!(env.count(), 1);
    assert_no_restore_leftovers(&env);
}

/// `build -> /abs/real` with real/ removed: the hit recreates real/ and fills it, and the
/// link stays, as `mkdir -p real` before the build would.
#[test]
fn a_directory_output_behind_a_dangling_absolute_symlink_is_restored_through_it() {
    let env = TestEnv::new();
    fs::create_dir(env.path("real")).unwrap();
    symlink(env.path("real"), env.path("build")).unwrap();
    env.tool("mkdir -p build/sub && echo built > build/sub/out.txt");
    assert!(env.ran_tool(&["-o", "build"]));
    fs::remove_dir_all(env.path("real")).unwrap();
    assert!(!env.ran_tool(&["-o", "build"]));
    assert!(is_symlink(&env.path("build")), "the link is kept");
    assert_eq!(env.read("real/sub/out.txt"), b"built\n");
    assert_eq!(env.count(), 1);
}

// --- Leftovers of a killed restore ------------------------------------------------

/// A restore killed with SIGKILL leaves its temporary file; the next call that is not a
/// hit (here --force) runs the command and still clears it from the output's directory.
#[test]
fn what_a_killed_restore_left_is_removed_by_the_next_run_too() {
    let env = TestEnv::new();
    env.tool("mkdir -p out/sub; echo a > out/sub/a; echo b > top.txt");
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    env.write(&format!("out/sub/.memo-restore-{dead_pid}-abc123"), "half");
    env.write(&format!(".memo-restore-{dead_pid}-def456"), "half");
    assert!(env.ran_tool(&["-o", "out", "-o", "top.txt"]));
    assert_no_restore_leftovers(&env);
    env.write(&format!("out/sub/.memo-restore-{dead_pid}-abc124"), "half");
    assert!(env.ran_tool(&["--force", "-o", "out", "-o", "top.txt"]));
    assert_no_restore_leftovers(&env);
}

// --- Declarations that make no sense -----------------------------------------------

/// An output inside the cache directory: a hit would write memo's own files back over
/// the cache. Refused like one that contains the cache, however it is spelled.
#[test]
fn an_output_inside_the_cache_directory_is_refused() {
    let env = TestEnv::new();
    env.tool("mkdir -p \"$MEMO_DIR/mine\"; echo x > \"$MEMO_DIR/mine/f\"");
    fs::create_dir_all(env.cache().join("packs")).unwrap();
    symlink(env.cache(), env.path("cachelink")).unwrap();
    let cache = env.cache().display().to_string();
    for declared in [
        format!("{cache}/packs"),
        format!("{cache}/mine"),
        format!("{cache}/mine/f"),
        "cachelink/packs".to_string(),
        "cachelink/./new/..//mine".to_string(),
        "cachelink/packs/../mine".to_string(),
    ] {
        let out = env.run(run_tool(&["-o", &declared]));
        assert_code(&out, 125);
        assert!(
            stderr(&out).contains("cache directory"),
            "{declared}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert_eq!(env.count(), 0);
    // A sibling whose name merely starts like the cache's is fine.
    env.tool("echo x > \"$MEMO_DIR-sibling\"");
    assert!(env.ran_tool(&["-o", &format!("{cache}-sibling")]));
}
