//! The cache's own files under hostile or careless hands: anything planted where memo
//! expects a regular file (a FIFO, a socket) never blocks memo; the digest cache never
//! keeps a racy record on disk, is compact, counted and trimmed; `--force` leaves no old
//! object behind that gc would keep while it evicts live results.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

/// How long any memo call here may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs the prepared memo command in a process group of its own; kills the group and
/// fails the test if it has not finished within `DEADLINE`.
#[track_caller]
fn output_within_deadline(mut cmd: Command, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match receive.recv_timeout(DEADLINE) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("memo hung: {what}");
        }
    }
}

#[track_caller]
fn memo_within_deadline(env: &TestEnv, args: &[&str]) -> Output {
    let out = output_within_deadline(env.memo(args), &args.join(" "));
    assert_success(&out);
    out
}

/// Removes whatever is at `path` (a directory of an older layout too) and makes sure its
/// parent exists.
fn clear_place(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
}

fn c_path(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Replaces `path` (if any) with a FIFO.
fn plant_fifo(path: &Path) {
    clear_place(path);
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path(path).as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Replaces `path` (if any) with a character device that reads as endless zeros (like
/// /dev/zero); false where devices cannot be made (not root).
fn plant_zero_device(path: &Path) -> bool {
    clear_place(path);
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe {
        libc::mknod(
            c_path(path).as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(1, 5),
        )
    };
    rc == 0
}

/// Replaces each of `paths` (if any) with a unix socket; false if python3 is missing.
fn plant_sockets(paths: &[PathBuf]) -> bool {
    for path in paths {
        clear_place(path);
    }
    Command::new("python3")
        .args([
            "-c",
            "import socket, sys\nfor p in sys.argv[1:]: socket.socket(socket.AF_UNIX).bind(p)",
        ])
        .args(paths)
        .status()
        .is_ok_and(|s| s.success())
}

fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// A result whose stdout (20 kB) is stored as an object, not inline.
fn store_big_stdout(env: &TestEnv) -> (StoredEntry, PathBuf) {
    env.tool("head -c 20000 /dev/zero | tr '\\0' x");
    assert!(env.ran_tool(&[]));
    let entries = env.entries();
    let objects = env.objects();
    assert_eq!((entries.len(), objects.len()), (1, 1), "{objects:?}");
    (entries[0].clone(), objects[0].clone())
}

/// The places of the stored `entry` where something can be planted: its pack, its
/// pack's table, and the directory of the packs.
fn pack_places(entry: &StoredEntry) -> [PathBuf; 3] {
    [
        entry.pack.clone(),
        table_of(&entry.pack),
        entry.pack.parent().unwrap().to_path_buf(),
    ]
}

/// Makes `entry` a file of its own, as an earlier memo kept it (`entries/ab/<key>`),
/// with no pack left: returns its path.
fn make_legacy(env: &TestEnv, entry: &StoredEntry) -> PathBuf {
    let legacy = env.legacy_entry_path(&entry.key);
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(&legacy, entry.bytes()).unwrap();
    fs::remove_dir_all(env.cache().join("packs")).unwrap();
    legacy
}

/// Nothing but a regular file or a real directory (or nothing) is at `path`.
fn nothing_planted_at(path: &Path) -> bool {
    fs::symlink_metadata(path).map_or(true, |m| m.is_file() || m.is_dir())
}

/// Stores a result, plants what `plant` makes at `place` (given the stored entry), and
/// runs the command: a miss, never a hang, with the command's output; then what was
/// planted is gone and the result is stored again and replayed.
fn planted_where_entries_live_is_no_hang(
    place: impl Fn(&TestEnv, &StoredEntry) -> PathBuf,
    plant: fn(&Path) -> bool,
) {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    let path = place(&env, &entry);
    let what = path
        .strip_prefix(env.cache())
        .unwrap()
        .display()
        .to_string();
    if !plant(&path) {
        eprintln!("skipped: cannot plant special files in the cache");
        return;
    }
    let tool = run_tool(&[]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    let out = output_within_deadline(env.memo(&tool), &what);
    assert_success(&out);
    assert_eq!(out.stdout.len(), 20000, "{what}");
    assert_eq!(env.count(), 2, "{what}: the command ran again");
    assert!(nothing_planted_at(&path), "{what}: not replaced");
    let before = env.count();
    let out = output_within_deadline(env.memo(&tool), &what);
    assert_success(&out);
    assert_eq!(out.stdout.len(), 20000, "{what}");
    assert_eq!(
        env.count(),
        before,
        "{what}: the result was not stored again"
    );
}

/// A FIFO planted at `place` (given the cache, the stored entry and its object): the
/// next run does not hang and runs the command again, whole; `repaired` holds of the
/// place then, and the result was stored again.
fn a_fifo_planted_at(
    place: impl Fn(&TestEnv, &StoredEntry, &Path) -> PathBuf,
    repaired: impl Fn(&Path) -> bool,
    what: &str,
) {
    let env = TestEnv::new();
    let (entry, object) = store_big_stdout(&env);
    let path = place(&env, &entry, &object);
    plant_fifo(&path);
    let out = memo_within_deadline(
        &env,
        &run_tool(&[]).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.stdout.len(), 20000, "{what}");
    assert_eq!(env.count(), 2, "{what}: the command ran again");
    assert!(repaired(&path), "{what}: the FIFO was not replaced");
    assert!(!env.ran_tool(&[]), "{what}: the result was stored again");
}

#[test]
fn a_fifo_planted_as_an_object_is_a_miss_not_a_hang() {
    a_fifo_planted_at(|_, _, object| object.to_path_buf(), is_regular, "object");
}

/// A FIFO planted as the pack that holds the entry.
#[test]
fn a_fifo_planted_as_an_entry_is_a_miss_not_a_hang() {
    a_fifo_planted_at(|_, entry, _| entry.pack.clone(), is_regular, "pack");
}

#[test]
fn a_fifo_planted_as_a_packs_table_is_a_miss_not_a_hang() {
    a_fifo_planted_at(|_, entry, _| table_of(&entry.pack), is_regular, "table");
}

#[test]
fn a_fifo_planted_as_an_earlier_memos_entry_file_is_a_miss_not_a_hang() {
    a_fifo_planted_at(
        |env, entry, _| make_legacy(env, entry),
        nothing_planted_at,
        "an earlier memo's entry file",
    );
}

#[test]
fn a_fifo_planted_as_the_packs_directory_is_a_miss_not_a_hang() {
    a_fifo_planted_at(
        |_, entry, _| entry.pack.parent().unwrap().to_path_buf(),
        |dir| dir.is_dir(),
        "packs/",
    );
}

/// A socket, then a device that reads as endless zeros, planted at `place`.
fn sockets_and_devices_planted_at(place: impl Fn(&TestEnv, &StoredEntry) -> PathBuf + Copy) {
    planted_where_entries_live_is_no_hang(place, |p| plant_sockets(&[p.to_path_buf()]));
    planted_where_entries_live_is_no_hang(place, plant_zero_device);
}

#[test]
fn sockets_and_devices_planted_as_a_pack_never_block_memo() {
    sockets_and_devices_planted_at(|_, e| pack_places(e)[0].clone());
}

#[test]
fn sockets_and_devices_planted_as_a_packs_table_never_block_memo() {
    sockets_and_devices_planted_at(|_, e| pack_places(e)[1].clone());
}

#[test]
fn sockets_and_devices_planted_as_the_packs_directory_never_block_memo() {
    sockets_and_devices_planted_at(|_, e| pack_places(e)[2].clone());
}

#[test]
fn sockets_and_devices_planted_as_an_earlier_memos_entry_file_never_block_memo() {
    sockets_and_devices_planted_at(make_legacy);
}

/// Every record memo keeps beside entries and objects, as paths that exist now.
fn record_files(env: &TestEnv) -> Vec<PathBuf> {
    let cache = env.cache();
    let mut paths = vec![
        cache.join("log.jsonl"),
        cache.join("log.1.jsonl"),
        cache.join("gc-clock"),
        cache.join("dead-objects"),
        cache.join("locks").join("gc"),
        cache.join("tmp").join("stage-1-planted"),
    ];
    for dir in ["stats", "usage"] {
        paths.extend(files_under(&cache.join(dir)));
    }
    for shard in 0..16 {
        paths.push(cache.join("stats").join(format!("{shard:02}")));
    }
    for shard in 0..256 {
        paths.push(cache.join("digests").join(format!("{shard:02x}")));
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Stores a result, plants `plant` at every record's place, then runs every command
/// that reads them: none may hang or fail.
fn no_command_blocks_on(plant: fn(&[PathBuf]) -> bool) {
    let env = TestEnv::new();
    let (_, _) = store_big_stdout(&env);
    // A gc writes the clock; another result gives an input and its digest record.
    memo_within_deadline(&env, &["gc", "--max-size", "1"]);
    env.write("in.txt", "input");
    // (Its digest is recorded although the file is new: see MEMO_DEBUG_RACY_MARGIN_MS.)
    let mut cmd = env.memo(run_tool(&["-i", "in.txt"]));
    cmd.env("MEMO_DEBUG_RACY_MARGIN_MS", "0");
    assert!(env.ran(cmd));
    assert!(!files_under(&env.cache().join("digests")).is_empty());
    let planted = record_files(&env);
    if !plant(&planted) {
        eprintln!("skipped: cannot plant special files in the cache");
        return;
    }
    let tool = run_tool(&["-i", "in.txt"]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    memo_within_deadline(&env, &tool);
    memo_within_deadline(&env, &["stats"]);
    memo_within_deadline(&env, &["ls"]);
    memo_within_deadline(&env, &["log"]);
    memo_within_deadline(&env, &["gc", "--grace", "0s"]);
    memo_within_deadline(&env, &tool);
    memo_within_deadline(&env, &["log"]);
    memo_within_deadline(&env, &["stats"]);
    let before = env.count();
    memo_within_deadline(&env, &tool);
    assert_eq!(env.count(), before, "the result was not stored again");
    let left: Vec<_> = planted
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| !m.is_file()))
        .collect();
    assert!(left.is_empty(), "left in place: {left:?}");
}

#[test]
fn fifos_planted_as_records_locks_and_staging_never_block_memo() {
    no_command_blocks_on(|paths| {
        paths.iter().for_each(|p| plant_fifo(p));
        true
    });
}

#[test]
fn sockets_planted_as_records_locks_and_staging_never_break_memo() {
    no_command_blocks_on(plant_sockets);
}

#[test]
fn devices_planted_as_records_locks_and_staging_never_block_memo() {
    // /dev/zero: a read never ends. Needs root (CI runs as root).
    no_command_blocks_on(|paths| paths.iter().all(|p| plant_zero_device(p)));
}

/// Whether any file under the cache's `digests/` holds a record of the file at `path`:
/// its device and inode, as text or as little-endian integers.
fn has_digest_record(env: &TestEnv, path: &Path) -> bool {
    let meta = fs::metadata(path).unwrap();
    let text = format!(" {} {} ", meta.dev(), meta.ino());
    let mut binary = meta.dev().to_le_bytes().to_vec();
    binary.extend_from_slice(&meta.ino().to_le_bytes());
    files_under(&env.cache().join("digests")).iter().any(|f| {
        let bytes = fs::read(f).unwrap_or_default();
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        has(text.as_bytes()) || has(&binary)
    })
}

#[test]
fn no_digest_record_of_a_file_changed_within_two_seconds_reaches_the_disk() {
    let env = TestEnv::new();
    env.write("in.txt", "fresh input");
    let out = env.run([
        "run",
        "-i",
        "in.txt",
        "-o",
        "out.bin",
        "--",
        "sh",
        "-c",
        "head -c 100000 /dev/urandom > out.bin",
    ]);
    assert_success(&out);
    let objects = env.objects();
    assert_eq!(objects.len(), 1);
    assert!(
        !has_digest_record(&env, &env.path("in.txt")),
        "a racy input was recorded"
    );
    assert!(
        !has_digest_record(&env, &objects[0]),
        "the object memo has just written was recorded on disk"
    );
}

/// Bytes the files under `dir` take on disk (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| fs::symlink_metadata(f).map_or(0, |m| m.blocks() * 512))
        .sum()
}

#[test]
fn digest_records_are_compact_counted_and_trimmed_by_gc() {
    const INPUTS: usize = 1000;
    let env = TestEnv::new();
    for i in 0..INPUTS {
        env.write(&format!("in/{i:04}"), format!("{i}"));
    }
    env.tool("echo done");
    // Records of files changed within the racy margin are never written; this debug-only
    // knob lets the test's fresh files count as old.
    let with_records = |args: &[&str]| {
        let mut cmd = env.memo(run_tool(args));
        cmd.env("MEMO_DEBUG_RACY_MARGIN_MS", "0");
        cmd
    };
    assert!(env.ran(with_records(&["-i", "in"])));
    let digests = env.cache().join("digests");
    let on_disk = disk_usage(&digests);
    let written: u64 = files_under(&digests)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert!(
        written >= (INPUTS * 40) as u64,
        "too few records: {written} bytes"
    );
    // 88 bytes a record, plus at most one partly filled block in each of 256 shards
    // (1 MiB in all); one file per record took a 4 KiB block each.
    assert!(
        on_disk <= 256 * 4096 + (INPUTS * 100) as u64,
        "{on_disk} bytes on disk for {INPUTS} inputs"
    );
    assert!(!env.ran(with_records(&["-i", "in"])), "not a hit");
    let counted = env.stats()["bytes"].as_u64().unwrap();
    assert!(
        counted >= written,
        "stats counts {counted} of {written} bytes"
    );
    let out = env.run(["gc", "--dry-run"]);
    assert_success(&out);
    let out = env.run(["gc", "--max-size", "1K"]);
    assert_success(&out);
    let left = disk_usage(&digests);
    assert!(left <= 4096, "{left} bytes of digest records kept");
    let counted = env.stats()["bytes"].as_u64().unwrap();
    assert!(counted <= 1024, "stats still counts {counted} bytes");
}

#[test]
fn force_leaves_no_old_object_for_gc_to_keep_over_live_results() {
    let env = TestEnv::new();
    env.tool("head -c 1000000 /dev/urandom > big.bin");
    assert!(env.ran_tool(&["-o", "big.bin"]));
    let old_objects = env.objects();
    assert_eq!(old_objects.len(), 1);
    assert!(env.ran_tool(&["--force", "-o", "big.bin"]));
    let live = env.read("big.bin");
    assert_eq!(env.objects().len(), 2);
    // Room for one result (a 1 MB object and its entry), not two objects.
    let out = env.run(["gc", "--max-size", "1200K"]);
    assert_success(&out);
    assert!(!old_objects[0].exists(), "the replaced object was kept");
    fs::remove_file(env.path("big.bin")).unwrap();
    assert!(
        !env.ran_tool(&["-o", "big.bin"]),
        "the live result was evicted"
    );
    assert_eq!(env.read("big.bin"), live);
}

#[test]
fn a_stale_refresh_leaves_no_old_object_for_gc_to_keep() {
    let env = TestEnv::new();
    env.tool("head -c 1000000 /dev/urandom");
    let stale = ["--ttl", "100ms", "--stale", "1h"];
    let first = env.run(run_tool(&stale));
    assert_success(&first);
    let old_objects = env.objects();
    assert_eq!(old_objects.len(), 1);
    std::thread::sleep(Duration::from_millis(150));
    // Compared by content: the background refresh may run the tool before this call
    // returns, so counting invocations here would race with it.
    let replayed = env.run(run_tool(&stale));
    assert_success(&replayed);
    assert!(
        replayed.stdout == first.stdout,
        "a stale result is replayed"
    );
    env.eventually("the background refresh stores its result", || {
        env.events()
            .iter()
            .filter(|e| e["event"] == "store")
            .count()
            == 2
    });
    assert_eq!(env.count(), 2);
    let out = env.run(["gc", "--max-size", "1200K"]);
    assert_success(&out);
    assert!(!old_objects[0].exists(), "the replaced object was kept");
    let out = env.run(run_tool(&["--ttl", "1h"]));
    assert_success(&out);
    assert_eq!(out.stdout.len(), 1_000_000);
    assert_eq!(env.count(), 2, "the refreshed result was evicted");
}

/// Replaces whatever is at `path` with a directory holding a file.
fn plant_dir(path: &Path) {
    clear_place(path);
    fs::create_dir_all(path.join("planted")).unwrap();
    fs::write(path.join("planted").join("f"), "x").unwrap();
}

/// Replaces whatever is at `path` with a regular file.
fn plant_file(path: &Path) {
    clear_place(path);
    fs::write(path, "planted").unwrap();
}

/// Directories and files of a cache, where something can be planted.
type Places = (Vec<PathBuf>, Vec<PathBuf>);

/// Where memo keeps a directory and where it keeps a file, for a cache holding one result
/// (`object`) and a digest record; the files of the packs are `pack_files`.
fn cache_places(env: &TestEnv, _: &StoredEntry, object: &Path) -> Places {
    let cache = env.cache();
    let shard_of = |p: &Path| p.parent().unwrap().to_path_buf();
    assert!(cache.join("summary").is_file(), "gc folded the journal");
    let mut dirs: Vec<PathBuf> = ["packs", "objects", "tmp", "locks", "stats", "digests"]
        .iter()
        .map(|d| cache.join(d))
        .collect();
    dirs.extend([shard_of(object)]);
    let mut files = vec![
        object.to_path_buf(),
        cache.join("summary"),
        cache.join("locks").join("summary"),
        cache.join("locks").join("gc"),
        cache.join("gc-clock"),
        cache.join("log.jsonl"),
        cache.join("dead-objects"),
        cache.join("dead-objects.gc"),
    ];
    files.extend(files_under(&cache.join("stats")).into_iter().take(2));
    files.extend(files_under(&cache.join("digests")).into_iter().take(1));
    (dirs, files)
}

/// Plants one thing at a time (a FIFO or a file where a directory belongs, a directory
/// where a file belongs) at each of the `places` of a cache, in a cache of its own: memo
/// neither hangs nor fails, and repairs it.
fn anything_planted_is_repaired(places: fn(&TestEnv, &StoredEntry, &Path) -> Places) {
    let with_records = |env: &TestEnv, args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_DEBUG_RACY_MARGIN_MS", "0");
        output_within_deadline(cmd, &args.join(" "))
    };
    let prepare = |env: &TestEnv| {
        let (entry, object) = store_big_stdout(env);
        assert_success(&with_records(env, &["gc", "--max-size", "1G"]));
        // A hit records the object's digest.
        assert_success(&with_records(env, &["run", "--", "./tool"]));
        assert!(!files_under(&env.cache().join("digests")).is_empty());
        places(env, &entry, &object)
    };
    // Plants one thing (`is_dir`: a file where a directory belongs, else a directory
    // where a file belongs) at place `i` of its list, in a cache of its own.
    let check = |is_dir: bool, i: usize| {
        let env = TestEnv::new();
        let (dirs, files) = prepare(&env);
        let (path, plant): (PathBuf, fn(&Path)) = match (is_dir, i % 2) {
            (true, 0) => (dirs[i].clone(), plant_fifo),
            (true, _) => (dirs[i].clone(), plant_file),
            (false, _) => (files[i].clone(), plant_dir),
        };
        let place = path.strip_prefix(env.cache()).unwrap().to_path_buf();
        plant(&path);
        let what = format!(
            "{} planted at {}",
            if is_dir { "a file" } else { "a directory" },
            place.display()
        );
        // Whatever the first calls make of it, none hangs or fails, and the third call
        // of the command is a hit again.
        for args in [
            &["run", "--", "./tool"][..],
            &["stats"],
            &["gc", "--grace", "0s"],
            &["run", "--", "./tool"],
        ] {
            let out = with_records(&env, args);
            assert!(
                out.status.success(),
                "{what}: memo {args:?} failed: {}",
                stderr(&out)
            );
        }
        let before = env.count();
        let out = with_records(&env, &["run", "--", "./tool"]);
        assert_success(&out);
        assert_eq!(
            env.count(),
            before,
            "{what}: the result is not cached again"
        );
        // A new result is stored (into every directory) and replayed.
        assert!(env.ran_tool(&["--salt", "new"]), "{what}");
        assert!(!env.ran_tool(&["--salt", "new"]), "{what}: not stored");
        let meta = fs::symlink_metadata(&path);
        if is_dir {
            assert!(meta.is_ok_and(|m| m.is_dir()), "{what}: not repaired");
        } else {
            assert!(!meta.is_ok_and(|m| m.is_dir()), "{what}: left in place");
        }
        plant(&path);
        let out = with_records(&env, &["clear"]);
        assert!(
            out.status.success(),
            "{what}: memo clear failed: {}",
            stderr(&out)
        );
    };
    // The paths differ between caches (the key holds the working directory): a case is
    // an index into the lists of a first cache.
    let (dirs, files) = prepare(&TestEnv::new());
    let cases: Vec<(bool, usize)> = (0..dirs.len())
        .map(|i| (true, i))
        .chain((0..files.len()).map(|i| (false, i)))
        .collect();
    std::thread::scope(|scope| {
        for batch in cases.chunks(cases.len().div_ceil(4)) {
            scope.spawn(|| batch.iter().for_each(|&(is_dir, i)| check(is_dir, i)));
        }
    });
}

/// The files that hold the entry: its pack and the pack's table.
fn pack_files(_: &TestEnv, entry: &StoredEntry, _: &Path) -> Places {
    (Vec::new(), vec![entry.pack.clone(), table_of(&entry.pack)])
}

#[test]
fn anything_planted_in_place_of_a_cache_directory_or_file_is_repaired() {
    anything_planted_is_repaired(cache_places);
}

#[test]
fn a_directory_planted_in_place_of_a_pack_or_its_table_is_repaired() {
    anything_planted_is_repaired(pack_files);
}

#[test]
fn rm_leaves_no_object_for_gc_to_keep_over_live_results() {
    let env = TestEnv::new();
    env.tool("head -c 1000000 /dev/urandom");
    assert!(env.ran_tool(&["--salt", "removed"]));
    let removed_objects = env.objects();
    assert_eq!(removed_objects.len(), 1);
    let removed_key = env.listing()[0]["key"].as_str().unwrap().to_string();
    assert!(env.ran_tool(&["--salt", "live"]));
    assert_success(&env.run(["rm", &removed_key[..12]]));
    // Room for one result (a 1 MB object and its entry), not two objects.
    assert_success(&env.run(["gc", "--max-size", "1200K"]));
    assert!(
        !removed_objects[0].exists(),
        "the removed result's object was kept"
    );
    assert!(
        !env.ran_tool(&["--salt", "live"]),
        "the live result was evicted"
    );
}

/// Bytes of the entries (as memo counts them: their own bytes, not the framing of their
/// records in the packs) and of the files under the cache's `objects/` and `digests/`.
fn stored_bytes(env: &TestEnv) -> u64 {
    let entries: u64 = env.entries().iter().map(|e| e.len as u64).sum();
    let files: u64 = ["objects", "digests"]
        .iter()
        .flat_map(|d| files_under(&env.cache().join(d)))
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    entries + files
}

#[test]
fn stats_count_the_digest_records_every_command_writes() {
    let env = TestEnv::new();
    for i in 0..200 {
        env.write(&format!("a/{i:03}"), format!("{i}"));
        env.write(&format!("b/{i:03}"), format!("{i}"));
    }
    env.tool("echo done");
    let with_records = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_DEBUG_RACY_MARGIN_MS", "0");
        cmd.output().unwrap()
    };
    assert_success(&with_records(
        &run_tool(&["-i", "a"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    let counted = || env.stats()["bytes"].as_u64().unwrap();
    assert_eq!(counted(), stored_bytes(&env));
    // `explain` hashes the inputs of b/ and records their digests too.
    let out = with_records(&["explain", "-i", "b", "--", "./tool"]);
    assert_code(&out, 1);
    assert_eq!(
        counted(),
        stored_bytes(&env),
        "explain's records are not counted"
    );
}

#[test]
fn giant_sparse_records_and_logs_never_block_memo() {
    let env = TestEnv::with_raw_objects();
    store_big_stdout(&env);
    memo_within_deadline(&env, &["gc", "--max-size", "1G"]);
    let cache = env.cache();
    let mut giants = files_under(&cache.join("stats"));
    giants.extend(files_under(&cache.join("usage")));
    giants.extend([cache.join("log.jsonl"), cache.join("log.1.jsonl")]);
    for path in &giants {
        // 64 GiB of zeros that take no disk: reading one in full takes minutes.
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        if file.set_len(64 << 30).is_err() {
            eprintln!("skipped: no sparse files here");
            return;
        }
    }
    let tool = run_tool(&[]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    memo_within_deadline(&env, &tool);
    memo_within_deadline(&env, &["stats"]);
    memo_within_deadline(&env, &["ls"]);
    memo_within_deadline(&env, &["log"]);
    memo_within_deadline(&env, &["gc"]);
    memo_within_deadline(&env, &tool);
    assert_eq!(env.count(), 1, "the result was not replayed");
    let counted = env.stats()["bytes"].as_u64().unwrap();
    assert!(
        counted > 20_000,
        "the counters were not repaired: {counted}"
    );
}

#[test]
fn a_giant_sparse_file_planted_as_an_object_is_a_miss_not_a_hang() {
    let env = TestEnv::with_raw_objects();
    let (_, object) = store_big_stdout(&env);
    let file = fs::OpenOptions::new().append(true).open(&object).unwrap();
    if file.set_len(64 << 30).is_err() {
        eprintln!("skipped: no sparse files here");
        return;
    }
    drop(file);
    let tool = run_tool(&[]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    let out = memo_within_deadline(&env, &tool);
    assert_eq!(out.stdout.len(), 20000);
    assert_eq!(env.count(), 2, "the command ran again");
    assert_eq!(fs::metadata(&object).unwrap().len(), 20000, "not repaired");
    // gc --verify knows each object's size from its entries, and needs no hashing to
    // tell a giant is damaged.
    fs::OpenOptions::new()
        .append(true)
        .open(&object)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    memo_within_deadline(&env, &["gc", "--verify"]);
    assert!(!object.exists(), "the damaged object was kept");
}

/// Grows the file at `path` to 64 GiB of zeros that take no disk (reading one in full
/// takes minutes); false where there are no sparse files.
fn grow(path: &Path) -> bool {
    let file = fs::OpenOptions::new().append(true).open(path).unwrap();
    file.set_len(64 << 30).is_ok()
}

/// An earlier memo's entry file (`entries/ab/<key>`), the one place where an entry is a
/// file of its own.
#[test]
fn a_giant_sparse_file_planted_as_an_entry_is_not_read() {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    let legacy = make_legacy(&env, &entry);
    if !grow(&legacy) {
        eprintln!("skipped: no sparse files here");
        return;
    }
    let tool = run_tool(&[]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    let out = memo_within_deadline(&env, &tool);
    assert_eq!(out.stdout.len(), 20000);
    assert!(
        stderr(&out).contains("larger than any entry"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.count(), 2, "the command ran again");
    assert!(
        fs::metadata(&legacy).map_or(0, |m| m.len()) < 100_000,
        "not repaired"
    );
    assert!(!env.ran_tool(&[]), "the result was stored again");
}

/// gc meets the giant as it moves an earlier memo's entry files into the packs.
#[test]
fn gc_removes_a_giant_sparse_file_planted_as_an_entry_as_corrupt() {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    let legacy = make_legacy(&env, &entry);
    if !grow(&legacy) {
        eprintln!("skipped: no sparse files here");
        return;
    }
    let out = memo_within_deadline(&env, &["gc"]);
    assert!(stdout(&out).contains("corrupt entry"), "{}", stdout(&out));
    assert!(!legacy.exists(), "the giant was kept");
}

/// A pack grown giant past its records: its records are read, not the pack.
#[test]
fn a_giant_sparse_file_planted_as_a_pack_is_not_read() {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    if !grow(&entry.pack) {
        eprintln!("skipped: no sparse files here");
        return;
    }
    let tool = run_tool(&[]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    let out = memo_within_deadline(&env, &tool);
    assert_eq!(out.stdout.len(), 20000);
    assert_eq!(env.count(), 1, "its record is intact: a hit");
    memo_within_deadline(&env, &["gc"]);
    assert!(
        fs::metadata(&entry.pack).map_or(0, |m| m.len()) < 100_000,
        "gc kept the giant"
    );
    let out = memo_within_deadline(&env, &tool);
    assert_eq!(out.stdout.len(), 20000);
    assert_eq!(env.count(), 1, "gc lost the result");
}

#[test]
fn a_giant_sparse_file_planted_as_a_packs_table_is_not_read() {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    let table = table_of(&entry.pack);
    if !grow(&table) {
        eprintln!("skipped: no sparse files here");
        return;
    }
    let tool = run_tool(&[]);
    let tool: Vec<&str> = tool.iter().map(String::as_str).collect();
    let out = memo_within_deadline(&env, &tool);
    assert_eq!(out.stdout.len(), 20000);
    assert_eq!(env.count(), 2, "the command ran again");
    assert!(
        fs::metadata(&table).map_or(0, |m| m.len()) < 100_000,
        "not repaired"
    );
    assert!(!env.ran_tool(&[]), "the result was stored again");
    assert!(grow(&table));
    memo_within_deadline(&env, &["gc"]);
    assert!(
        fs::metadata(&table).map_or(0, |m| m.len()) < 100_000,
        "the giant was kept"
    );
}

#[test]
fn memo_never_writes_through_a_symlink_planted_as_a_cache_directory() {
    let env = TestEnv::new();
    store_big_stdout(&env);
    let outside = env.path("outside");
    let mut planted = Vec::new();
    // (Not locks/: gc needs it, and refuses a symlink there.)
    for dir in [
        "stats", "digests", "usage", "packs", "entries", "objects", "tmp",
    ] {
        let target = outside.join(dir);
        fs::create_dir_all(&target).unwrap();
        // Someone's file, old enough for any sweep.
        let theirs = target.join("theirs");
        fs::write(&theirs, "keep me").unwrap();
        Command::new("touch")
            .args(["-d", "2000-01-01"])
            .arg(&theirs)
            .status()
            .unwrap();
        let place = env.cache().join(dir);
        clear_place(&place);
        std::os::unix::fs::symlink(&target, &place).unwrap();
        planted.push(target);
    }
    let with_records = |args: &[&str]| {
        let mut cmd = env.memo(args);
        cmd.env("MEMO_DEBUG_RACY_MARGIN_MS", "0");
        output_within_deadline(cmd, &args.join(" "))
    };
    for args in [
        &["run", "--", "./tool"][..],
        &["run", "--", "./tool"],
        &["run", "--salt", "x", "--", "./tool"],
        &["stats", "--zero"],
        &["gc", "--grace", "0s"],
        &["gc", "--max-size", "1"],
        &["rm", "--command", "*"],
        &["clear"],
    ] {
        let out = with_records(args);
        assert!(out.status.code().is_some(), "memo {args:?} was killed");
    }
    for target in planted {
        assert_eq!(
            files_under(&target),
            [target.join("theirs")],
            "memo wrote or removed through the symlink"
        );
    }
}

/// Replaces the pack of `entry` and its table with symlinks to files of someone else's
/// outside the cache; returns those files.
fn plant_pack_symlinks(env: &TestEnv, entry: &StoredEntry) -> Vec<PathBuf> {
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let mut theirs = Vec::new();
    for (i, place) in [entry.pack.clone(), table_of(&entry.pack)]
        .iter()
        .enumerate()
    {
        let target = outside.join(format!("theirs-{i}"));
        fs::write(&target, "keep me").unwrap();
        clear_place(place);
        std::os::unix::fs::symlink(&target, place).unwrap();
        theirs.push(target);
    }
    theirs
}

#[test]
fn memo_never_writes_through_a_symlink_planted_as_a_pack_or_its_table() {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    let theirs = plant_pack_symlinks(&env, &entry);
    for args in [
        &["run", "--", "./tool"][..],
        &["run", "--", "./tool"],
        &["stats"],
        &["ls"],
        &["gc", "--grace", "0s"],
        &["gc", "--max-size", "1"],
        &["run", "--", "./tool"],
        &["rm", "--command", "*"],
        &["clear"],
    ] {
        let out = output_within_deadline(env.memo(args), &args.join(" "));
        assert!(out.status.code().is_some(), "memo {args:?} was killed");
        if args[0] == "run" {
            assert_success(&out);
            assert_eq!(out.stdout.len(), 20000);
        }
        for file in &theirs {
            assert_eq!(
                fs::read_to_string(file).unwrap(),
                "keep me",
                "memo {args:?} wrote through the symlink"
            );
        }
    }
}

#[test]
fn a_symlink_planted_as_a_pack_or_its_table_is_replaced() {
    let env = TestEnv::new();
    let (entry, _) = store_big_stdout(&env);
    let theirs = plant_pack_symlinks(&env, &entry);
    let out = memo_within_deadline(&env, &["run", "--", "./tool"]);
    assert_eq!(out.stdout.len(), 20000);
    assert_eq!(env.count(), 2, "the command ran again");
    let out = memo_within_deadline(&env, &["run", "--", "./tool"]);
    assert_eq!(out.stdout.len(), 20000);
    assert_eq!(env.count(), 2, "the result was not stored again");
    assert!(is_regular(&entry.pack) && is_regular(&table_of(&entry.pack)));
    for file in &theirs {
        assert_eq!(fs::read_to_string(file).unwrap(), "keep me");
    }
}

#[test]
fn a_log_line_with_a_garbled_key_is_shown_not_a_panic() {
    let env = TestEnv::new();
    store_big_stdout(&env);
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(env.cache().join("log.jsonl"))
        .unwrap();
    use std::io::Write;
    // Valid JSON, so a valid event, whose key is not hex: byte 12 falls inside a 'é'.
    writeln!(log, r#"{{"time_ms":1,"event":"hit","key":"aéééééé"}}"#).unwrap();
    let out = env.run(["log"]);
    assert_success(&out);
    assert!(stdout(&out).contains("aéééééé"), "{}", stdout(&out));
}

/// A counter record as memo stores it: the first 12 hex digits of the JSON's SHA-256,
/// a space, the JSON.
fn counter_record(json: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{} {json}", &String::from_utf8(out.stdout).unwrap()[..12])
}

#[test]
fn forged_counters_that_overflow_are_no_panic() {
    let env = TestEnv::new();
    store_big_stdout(&env);
    let record = counter_record(&format!(
        r#"{{"hits":{max},"time_saved_ms":{max},"bytes":{max},"entries":{max}}}"#,
        max = i64::MAX
    ));
    for shard in 0..16 {
        fs::write(
            env.cache().join("stats").join(format!("{shard:02}")),
            &record,
        )
        .unwrap();
    }
    let out = env.run(["stats", "--json"]);
    assert_success(&out);
    assert_eq!(env.stats()["hits"].as_i64(), Some(i64::MAX));
    assert!(env.ran_tool(&["--salt", "after"]));
}

/// memo removes what is planted in its places only in a directory it created and
/// tagged as its cache: a `MEMO_DIR` pointed at a directory of the user's (a home) has
/// its files left alone, and memo runs the command uncached there instead.
#[test]
fn memo_tags_its_cache_and_never_removes_a_users_file_from_an_untagged_one() {
    let env = TestEnv::new();
    env.tool("echo hi");
    assert!(env.ran_tool(&[]));
    let tag = fs::read_to_string(env.cache().join("CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));

    // A user's directory with a file named like one of memo's directories.
    let home = env.root.path().join("user-home");
    fs::create_dir(&home).unwrap();
    fs::write(home.join("tmp"), "the user's notes").unwrap();
    fs::create_dir_all(home.join("stats")).unwrap();
    let out = env
        .memo(run_tool(&["--salt", "1"]))
        .env("MEMO_DIR", &home)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "hi\n");
    assert_eq!(
        fs::read_to_string(home.join("tmp")).unwrap(),
        "the user's notes"
    );
    assert!(
        !home.join("CACHEDIR.TAG").exists(),
        "memo tagged a directory it did not create"
    );
}

/// A `MEMO_DIR` pointed at a directory of the user's: memo caches there, but gc, the
/// automatic trim and `clear` touch only the files memo made, never the user's own,
/// even where they sit under names memo uses (`tmp/`, `digests/`, `usage/`).
#[test]
fn gc_and_clear_never_remove_a_users_files_from_a_directory_that_is_not_memos() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let home = env.root.path().join("user-home");
    let mine = [
        "notes.txt",
        ".tmpnotes",
        "digests/notes.txt",
        "digests/photos/a.jpg",
        "tmp/draft.txt",
        "usage/2024/report.pdf",
        "objects/old/a.bin",
        "entries/ab/letter.txt",
        "summary",
    ];
    for rel in mine {
        let path = home.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, rel).unwrap();
    }
    let old = std::time::SystemTime::now() - Duration::from_secs(3 * 86400);
    for rel in mine {
        let file = fs::File::options()
            .write(true)
            .open(home.join(rel))
            .unwrap();
        file.set_modified(old).unwrap();
    }
    let memo = |args: Vec<String>| env.memo(args).env("MEMO_DIR", &home).output().unwrap();
    assert_success(&memo(run_tool(&[])));
    assert_success(&memo(run_tool(&[])));
    for args in [
        vec!["gc", "--grace", "0s"],
        vec!["gc", "--max-size", "0", "--grace", "0s"],
        vec!["gc", "--verify", "--grace", "0s"],
    ] {
        let out = memo(args.iter().map(|a| a.to_string()).collect());
        assert_success(&out);
    }
    let out = memo(vec!["clear".into()]);
    assert_code(&out, 125);
    assert!(
        stderr(&out).contains("nothing was removed"),
        "{}",
        stderr(&out)
    );
    for rel in mine {
        assert_eq!(
            fs::read_to_string(home.join(rel)).unwrap_or_default(),
            rel,
            "memo removed the user's {rel}"
        );
    }
}

/// A user's directory that happens to hold `entries/` and `objects/` is not taken for a
/// cache of memo's: nothing in it is tagged, cleared or replaced, symlinks included.
#[test]
fn a_users_directory_with_memo_like_names_is_never_taken_for_memos_cache() {
    let env = TestEnv::new();
    env.tool("echo hi");
    let journal = env.root.path().join("journal");
    fs::create_dir_all(journal.join("entries/2024")).unwrap();
    fs::create_dir_all(journal.join("objects")).unwrap();
    fs::write(journal.join("entries/2024/today.md"), "diary").unwrap();
    fs::write(journal.join("objects/model.obj"), "x").unwrap();
    std::os::unix::fs::symlink("/nonexistent/scratch", journal.join("tmp")).unwrap();
    std::os::unix::fs::symlink("entries", journal.join("locks")).unwrap();
    let memo = |args: Vec<String>| env.memo(args).env("MEMO_DIR", &journal).output().unwrap();
    let out = memo(run_tool(&[]));
    assert_success(&out);
    assert_eq!(stdout(&out), "hi\n");
    let out = memo(vec!["clear".into()]);
    assert_code(&out, 125);
    assert_eq!(
        fs::read_to_string(journal.join("entries/2024/today.md")).unwrap(),
        "diary"
    );
    assert_eq!(
        fs::read_to_string(journal.join("objects/model.obj")).unwrap(),
        "x"
    );
    assert!(fs::symlink_metadata(journal.join("tmp"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(journal.join("locks"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!journal.join("CACHEDIR.TAG").exists());
}

/// A cache made in an empty directory (`MEMO_DIR=$(mktemp -d)`) is memo's own, and
/// `memo clear` works there even before anything was stored.
#[test]
fn a_cache_made_in_an_empty_directory_is_memos_own() {
    let env = TestEnv::new();
    env.tool("exit 3");
    let dir = env.root.path().join("empty");
    fs::create_dir(&dir).unwrap();
    let out = env
        .memo(run_tool(&[]))
        .env("MEMO_DIR", &dir)
        .output()
        .unwrap();
    assert_code(&out, 3);
    assert!(dir.join("CACHEDIR.TAG").is_file());
    let out = env.memo(["clear"]).env("MEMO_DIR", &dir).output().unwrap();
    assert_success(&out);
}
