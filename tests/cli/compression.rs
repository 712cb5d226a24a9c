//! Compressed objects: which are compressed, that a hit replays them exactly, and that
//! damage to one (a changed byte, a truncated frame) is a miss, never bytes replayed.
//! An object is a zstd frame for each MiB of its raw bytes; one written as a single
//! frame (by memo before frames) is still replayed.

use std::fs;
use std::process::Stdio;

use crate::support::*;

/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// 3 MB of text: about 80 distinct lines, repeated.
const TEXT: &str =
    "for i in $(seq 1 40000); do echo \"line $((i % 80)) of a repetitive log\"; done";

fn text_bytes() -> Vec<u8> {
    (1..=40000)
        .flat_map(|i| format!("line {} of a repetitive log\n", i % 80).into_bytes())
        .collect()
}

fn only_object(env: &TestEnv) -> std::path::PathBuf {
    let objects = env.objects();
    assert_eq!(objects.len(), 1, "{objects:?}");
    objects[0].clone()
}

#[test]
fn compressible_stdout_is_stored_compressed_and_replayed_exactly() {
    let env = TestEnv::new();
    env.tool(TEXT);
    let expected = text_bytes();
    let miss = env.run(run_tool(&[]));
    assert_success(&miss);
    assert_eq!(miss.stdout, expected);
    let object = only_object(&env);
    let stored = fs::read(&object).unwrap();
    assert_eq!(stored[..4], ZSTD_MAGIC);
    assert!(
        stored.len() * 20 < expected.len(),
        "{} bytes stored for {}",
        stored.len(),
        expected.len()
    );
    // Named by the raw bytes' digest, whatever is stored.
    let name = object.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(name, sha256_hex(&expected));
    for _ in 0..2 {
        let hit = env.run(run_tool(&[]));
        assert_success(&hit);
        assert_eq!(hit.stdout, expected);
        assert!(hit.stderr.is_empty(), "{}", stderr(&hit));
    }
    assert_eq!(env.count(), 1);
    // `memo show --stdout` reads it the same way.
    let key = env.listing()[0]["key"].as_str().unwrap().to_string();
    let shown = env.run(["show", &key[..8], "--stdout"]);
    assert_success(&shown);
    assert_eq!(shown.stdout, expected);
}

#[test]
fn a_compressed_hit_into_a_pipe_and_into_a_file_is_exact() {
    let env = TestEnv::new();
    env.tool(TEXT);
    let expected = text_bytes();
    assert!(env.ran_tool(&[]));
    // Through a shell pipe, as `memo run ... | consumer` runs.
    let script = format!(
        "{} run -- ./tool | wc -c > piped.count",
        crate::support::MEMO
    );
    let out = env
        .memo(["run", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(
        String::from_utf8(env.read("piped.count")).unwrap().trim(),
        expected.len().to_string()
    );
    let file = fs::File::create(env.path("replayed")).unwrap();
    let status = env
        .memo(run_tool(&[]))
        .stdout(Stdio::from(file))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(env.read("replayed"), expected);
    assert_eq!(env.count(), 1);
}

#[test]
fn a_compressible_output_file_is_restored_exactly() {
    let env = TestEnv::new();
    env.tool(&format!("{{ {TEXT}; }} > out.txt"));
    assert!(env.ran_tool(&["-o", "out.txt"]));
    assert_eq!(fs::read(only_object(&env)).unwrap()[..4], ZSTD_MAGIC);
    fs::remove_file(env.path("out.txt")).unwrap();
    assert!(!env.ran_tool(&["-o", "out.txt"]));
    assert_eq!(env.read("out.txt"), text_bytes());
}

#[test]
fn incompressible_stdout_is_stored_raw() {
    let env = TestEnv::new();
    env.tool("head -c 300000 /dev/urandom > random.bin; cat random.bin");
    let miss = env.run(run_tool(&[]));
    assert_success(&miss);
    let object = only_object(&env);
    assert_eq!(fs::read(&object).unwrap(), miss.stdout, "stored as it is");
    let hit = env.run(run_tool(&[]));
    assert_eq!(hit.stdout, miss.stdout);
    assert_eq!(env.count(), 1);
}

/// Stores the compressible text, damages its object with `damage`, and checks that the
/// next call is a miss that replays the right bytes and repairs the object.
fn damaged_object_is_a_miss(damage: impl FnOnce(&mut Vec<u8>)) {
    let env = TestEnv::new();
    env.tool(TEXT);
    let expected = text_bytes();
    assert!(env.ran_tool(&[]));
    let object = only_object(&env);
    let mut stored = fs::read(&object).unwrap();
    assert_eq!(stored[..4], ZSTD_MAGIC);
    damage(&mut stored);
    fs::write(&object, &stored).unwrap();
    let out = env.run(run_tool(&[]));
    assert_success(&out);
    assert_eq!(out.stdout, expected, "damaged bytes reached stdout");
    assert_eq!(env.count(), 2, "the command ran again");
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    let hit = env.run(run_tool(&[]));
    assert_eq!(hit.stdout, expected);
    assert_eq!(env.count(), 2, "the object was repaired");
}

#[test]
fn a_changed_byte_in_a_compressed_object_is_a_miss() {
    damaged_object_is_a_miss(|bytes| {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
    });
}

#[test]
fn a_truncated_compressed_frame_is_a_miss() {
    damaged_object_is_a_miss(|bytes| bytes.truncate(bytes.len() - 5));
}

#[test]
fn bytes_after_the_compressed_frame_are_a_miss() {
    damaged_object_is_a_miss(|bytes| bytes.extend_from_slice(b"trailing"));
}

#[test]
fn a_cache_of_raw_objects_is_still_read() {
    // Every object written before compression was raw: what MEMO_DEBUG_STORE_RAW writes.
    let old = TestEnv::with_raw_objects();
    old.tool(TEXT);
    assert!(old.ran_tool(&[]));
    let object = only_object(&old);
    assert_eq!(fs::read(&object).unwrap(), text_bytes(), "stored raw");
    let new = TestEnv {
        raw_objects: false,
        ..old
    };
    let hit = new.run(run_tool(&[]));
    assert_success(&hit);
    assert_eq!(hit.stdout, text_bytes());
    assert_eq!(new.count(), 1);
    assert!(hit.stderr.is_empty(), "{}", stderr(&hit));
    // Kept as it is: a raw object stays valid.
    assert_eq!(fs::read(&object).unwrap(), text_bytes());
}

#[test]
fn gc_verify_keeps_good_compressed_objects_and_drops_damaged_ones() {
    let env = TestEnv::new();
    env.tool(TEXT);
    assert!(env.ran_tool(&[]));
    let healthy = env.run(["gc", "--verify"]);
    assert_success(&healthy);
    assert!(
        stdout(&healthy).contains("removed 0 entries"),
        "{}",
        stdout(&healthy)
    );
    let object = only_object(&env);
    let mut stored = fs::read(&object).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 1;
    fs::write(&object, &stored).unwrap();
    let out = env.run(["gc", "--verify"]);
    assert_success(&out);
    assert!(env.objects().is_empty(), "{}", stdout(&out));
    assert!(env.listing().is_empty(), "{}", stdout(&out));
}

/// About 5 MB of a build log with varying numbers: five frames.
const LOG: &str = "seq 1 180000 | sed 's/.*/& compiling src\\/module.rs: ok/'";

fn log_bytes() -> Vec<u8> {
    (1..=180000)
        .flat_map(|i| format!("{i} compiling src/module.rs: ok\n").into_bytes())
        .collect()
}

/// The raw sizes the frames of an object file declare, in order.
fn frame_sizes(mut stored: &[u8]) -> Vec<u64> {
    let mut sizes = Vec::new();
    while !stored.is_empty() {
        let len = zstd::zstd_safe::find_frame_compressed_size(stored).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(stored).unwrap();
        sizes.push(size.unwrap());
        stored = &stored[len..];
    }
    sizes
}

#[test]
fn a_large_output_is_stored_as_a_frame_per_mib_and_replayed_exactly_into_a_pipe() {
    let env = TestEnv::new();
    env.tool(LOG);
    let expected = log_bytes();
    assert!(env.ran_tool(&[]));
    let stored = fs::read(only_object(&env)).unwrap();
    let sizes = frame_sizes(&stored);
    assert_eq!(sizes.len(), expected.len().div_ceil(1 << 20), "{sizes:?}");
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 1 << 20));
    assert_eq!(sizes.iter().sum::<u64>(), expected.len() as u64);
    // Into a pipe (the frames are decompressed on two threads and written in order).
    let script = format!("{} run -- ./tool | cat > piped.out", crate::support::MEMO);
    let out = env
        .memo(["run", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(
        env.read("piped.out") == expected,
        "the pipe got other bytes"
    );
    let hit = env.run(run_tool(&[]));
    assert!(hit.stdout == expected, "the replay differs");
    assert_eq!(env.count(), 1);
}

#[test]
fn a_changed_byte_in_the_last_frame_is_a_miss() {
    let env = TestEnv::new();
    env.tool(LOG);
    let expected = log_bytes();
    assert!(env.ran_tool(&[]));
    let object = only_object(&env);
    let mut stored = fs::read(&object).unwrap();
    assert!(frame_sizes(&stored).len() > 1);
    let last = stored.len() - 20;
    stored[last] ^= 0x08;
    fs::write(&object, &stored).unwrap();
    let out = env.run(run_tool(&[]));
    assert_success(&out);
    assert!(out.stdout == expected, "damaged bytes reached stdout");
    assert_eq!(env.count(), 2, "the command ran again");
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
}

#[test]
fn an_object_in_one_frame_as_memo_wrote_before_frames_is_still_replayed() {
    let env = TestEnv::new();
    env.tool(LOG);
    let expected = log_bytes();
    assert!(env.ran_tool(&[]));
    let object = only_object(&env);
    let mut one_frame = Vec::new();
    let mut encoder = zstd::stream::write::Encoder::new(&mut one_frame, 1).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.include_contentsize(true).unwrap();
    encoder
        .set_pledged_src_size(Some(expected.len() as u64))
        .unwrap();
    std::io::Write::write_all(&mut encoder, &expected).unwrap();
    encoder.finish().unwrap();
    assert_eq!(frame_sizes(&one_frame), [expected.len() as u64]);
    fs::write(&object, &one_frame).unwrap();
    for _ in 0..2 {
        let hit = env.run(run_tool(&[]));
        assert_success(&hit);
        assert!(hit.stdout == expected, "the replay differs");
        assert!(hit.stderr.is_empty(), "{}", stderr(&hit));
    }
    assert_eq!(env.count(), 1);
    assert_eq!(fs::read(&object).unwrap(), one_frame, "kept as it is");
}

#[test]
fn many_megabytes_of_one_line_are_stored_in_a_few_bytes_a_frame() {
    let env = TestEnv::new();
    env.tool("yes memo | head -c 50000000");
    assert!(env.ran_tool(&[]));
    let stored = fs::read(only_object(&env)).unwrap();
    assert_eq!(frame_sizes(&stored).len(), 48);
    assert!(stored.len() < 48 * 200, "{} bytes stored", stored.len());
    let hit = env.run(run_tool(&[]));
    assert_eq!(hit.stdout.len(), 50_000_000);
    assert!(hit.stdout.chunks(5).all(|line| line == b"memo\n"));
    assert_eq!(env.count(), 1);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache's size in `memo stats` is what the objects take on disk: compressed, not
/// the raw bytes they hold.
#[test]
fn stats_counts_a_compressed_object_at_its_stored_size() {
    let env = TestEnv::new();
    env.tool(TEXT);
    assert_success(&env.run(run_tool(&[])));
    let stored = fs::metadata(only_object(&env)).unwrap().len();
    let bytes = env.stats()["bytes"].as_u64().unwrap();
    let raw = text_bytes().len() as u64;
    assert!(
        bytes >= stored,
        "{bytes} counted, the object alone takes {stored}"
    );
    assert!(
        bytes < stored + 64 * 1024 && bytes * 10 < raw,
        "{bytes} counted for an object of {stored} bytes holding {raw}"
    );
}
