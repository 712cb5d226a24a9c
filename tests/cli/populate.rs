//! A miss as cheap as the layout allows (issue 12, the populate rate): no file made and
//! removed per key for its lock, the command's output kept in memory while small and
//! staged only when large, with every guarantee kept (single flight, an earlier copy
//! killed with memo waited for, exact replay).

use std::fs;

use crate::support::*;

/// The names in the cache's `dir`, sorted (none if it does not exist).
fn names_in(env: &TestEnv, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.cache().join(dir))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn misses_of_many_keys_leave_one_lock_file_and_no_staging() {
    let env = TestEnv::new();
    env.tool("echo \"$1\"; echo \"err $1\" >&2");
    for i in 0..5 {
        let out = env.run(["run", "--", "./tool", &i.to_string()]);
        assert_success(&out);
        assert_eq!(stdout(&out), format!("{i}\n"));
    }
    assert_eq!(names_in(&env, "locks"), ["keys"]);
    assert_eq!(names_in(&env, "tmp"), Vec::<String>::new());
    assert_eq!(env.count(), 5);
}

/// Output of `size` bytes, not all alike, from `seq`.
fn emit(size: usize, stream: &str) -> String {
    format!("seq 1 2000000 | head -c {size} {stream}")
}

#[test]
fn output_of_every_size_replays_byte_for_byte() {
    // Around the inline limit (16 KiB), the in-memory limit (64 KiB) and the tee's
    // buffer (1 MiB), on stdout and stderr at once, in different sizes.
    let sizes = [
        (0, 16 * 1024),
        (16 * 1024 + 1, 64 * 1024),
        (64 * 1024 + 1, 1),
        (1024 * 1024 + 3, 64 * 1024 - 1),
        (3 * 1024 * 1024, 1024 * 1024),
    ];
    for (out_size, err_size) in sizes {
        let env = TestEnv::new();
        env.tool(&format!(
            "{}; {}",
            emit(out_size, ""),
            emit(err_size, ">&2")
        ));
        let first = env.run(run_tool(&[]));
        assert_success(&first);
        assert_eq!(first.stdout.len(), out_size);
        assert_eq!(first.stderr.len(), err_size);
        let again = env.run(run_tool(&[]));
        assert_eq!(env.count(), 1, "{out_size}/{err_size}: a hit");
        assert_eq!(again.stdout, first.stdout, "{out_size}: stdout");
        assert_eq!(again.stderr, first.stderr, "{err_size}: stderr");
        assert_eq!(names_in(&env, "tmp"), Vec::<String>::new());
    }
}

#[test]
fn merged_output_of_every_size_replays_byte_for_byte() {
    for size in [10, 40 * 1024, 200 * 1024] {
        let env = TestEnv::new();
        env.tool(&format!("{}; echo end >&2", emit(size, "")));
        let (code, first) = env.run_merged(run_tool(&[]));
        assert_eq!(code, 0);
        assert_eq!(first.len(), size + 4);
        let (_, again) = env.run_merged(run_tool(&[]));
        assert_eq!(env.count(), 1, "{size}: a hit");
        assert_eq!(again, first, "{size}");
    }
}

#[test]
fn a_note_left_by_a_killed_holder_makes_the_next_one_wait_for_its_command() {
    let env = TestEnv::new();
    env.tool("echo done");
    // A first run, for the key's hex (the entry's name).
    assert_success(&env.run(["run", "--force", "--", "./tool"]));
    let key = env.only_key();
    // A live process, noted as a killed holder of this key notes its command (pid,
    // start ticks, session, boot): the next holder must wait for it before it runs.
    let mut left = std::process::Command::new("sleep")
        .arg("1")
        .spawn()
        .unwrap();
    let stat = fs::read_to_string(format!("/proc/{}/stat", left.id())).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    use std::os::unix::fs::MetadataExt;
    let namespace = fs::metadata("/proc/self/ns/pid").unwrap().ino();
    let note = format!(
        "{} {} {} {}/{namespace}\n",
        left.id(),
        fields[19],
        fields[3],
        boot.trim()
    );
    fs::write(
        env.cache().join("locks").join(format!("flight-{key}")),
        note,
    )
    .unwrap();
    let out = env.run(["run", "--force", "--", "./tool"]);
    assert_success(&out);
    // It waited: the noted process had ended by the time the command ran again.
    let status = left.try_wait().unwrap();
    assert!(status.is_some(), "ran beside the noted process");
    assert_eq!(names_in(&env, "locks"), ["keys"]);
}

#[test]
fn an_older_memo_holding_its_per_key_lock_files_is_left_alone() {
    let env = TestEnv::new();
    env.tool("echo done");
    assert_success(&env.run(["run", "--force", "--", "./tool"]));
    let key = env.only_key();
    // What a memo of the previous version holds while it runs this key: `key-HEX`
    // locked, and `key-HEX.run` locked by its command. The new memo waits for it (see
    // hostile12.rs) and never kills it.
    let locks = env.cache().join("locks");
    let hold = |name: String| {
        std::process::Command::new("flock")
            .arg(locks.join(name))
            .args(["sleep", "2"])
            .spawn()
            .ok()
    };
    let (Some(older), Some(its_command)) =
        (hold(format!("key-{key}")), hold(format!("key-{key}.run")))
    else {
        return;
    };
    let mut holders = [older, its_command];
    env.wait_for_file(&format!(
        "{}",
        locks.join(format!("key-{key}.run")).display()
    ));
    let out = env.run(["run", "--force", "--", "./tool"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "done\n");
    for holder in &mut holders {
        assert!(holder.wait().unwrap().success(), "killed an older memo");
    }
}
