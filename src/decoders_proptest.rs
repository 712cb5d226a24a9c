//! Property tests for every decoder of cache contents: entries, digest records, JSON
//! records (counter shards, usage), log lines. Whatever bytes a cache holds, decoding
//! never panics; what memo wrote reads back equal; and a damaged copy is refused rather
//! than read as something else.

use proptest::collection::vec;
use proptest::prelude::*;

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::events::{self, Event, Kind};
use crate::fsutil::decode_record;
use crate::index::{Blob, Entry, Node, NodeKind, Output, Streams, FORMAT_VERSION, INLINE_MAX};
use crate::key::{EnvVar, FileKind, InputFile, KeyCommand, KeyMaterial, StreamMode, KEY_VERSION};

fn bytes(max: usize) -> impl Strategy<Value = ByteString> {
    vec(any::<u8>(), 0..max).prop_map(ByteString)
}

fn name() -> impl Strategy<Value = ByteString> {
    // A file name as a directory walk yields it: never "." or "..".
    "[a-z0-9_][a-z0-9_.]{0,7}".prop_map(|s| ByteString::from(s.as_str()))
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn blob() -> impl Strategy<Value = Blob> {
    prop_oneof![
        bytes(64).prop_map(|b| Blob {
            digest: Digest::of_bytes(b.as_bytes()),
            size: b.0.len() as u64,
            inline: Some(b),
        }),
        (digest(), INLINE_MAX + 1..u64::MAX / 2).prop_map(|(digest, size)| Blob {
            digest,
            size,
            inline: None
        }),
    ]
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        (blob(), any::<bool>()).prop_map(|(blob, executable)| NodeKind::File { blob, executable }),
        bytes(20).prop_map(|target| NodeKind::Symlink { target }),
    ]
}

/// A valid output: a directory root with files and symlinks in sub-directories, or a
/// single file or symlink.
fn output(path: ByteString) -> impl Strategy<Value = Output> {
    prop_oneof![
        node_kind().prop_map({
            let path = path.clone();
            move |kind| Output {
                path: path.clone(),
                nodes: vec![Node {
                    path: ByteString::default(),
                    kind,
                }],
            }
        }),
        vec((name(), node_kind()), 0..6).prop_map(move |children| {
            let mut nodes = vec![
                Node {
                    path: ByteString::default(),
                    kind: NodeKind::Dir,
                },
                Node {
                    path: "sub".into(),
                    kind: NodeKind::Dir,
                },
            ];
            let mut seen = std::collections::HashSet::new();
            for (i, (name, kind)) in children.into_iter().enumerate() {
                let dir = if i % 2 == 0 { "" } else { "sub/" };
                let full = format!("{dir}{}", name.display());
                if full != "sub" && seen.insert(full.clone()) {
                    nodes.push(Node {
                        path: full.as_str().into(),
                        kind,
                    });
                }
            }
            Output {
                path: path.clone(),
                nodes,
            }
        }),
    ]
}

fn material() -> impl Strategy<Value = KeyMaterial> {
    (
        vec(bytes(12), 1..4),
        proptest::option::of(bytes(20)),
        vec((name(), proptest::option::of(bytes(8))), 0..3),
        digest(),
        vec((name(), any::<bool>(), digest()), 0..3),
        proptest::option::of(digest()),
        proptest::option::of(bytes(8)),
        proptest::option::of((bytes(10), digest())),
        any::<bool>(),
    )
        .prop_map(
            |(argv, cwd, env, executable, inputs, stdin, salt, key_command, merged)| {
                let mut m = KeyMaterial {
                    version: KEY_VERSION,
                    platform: "linux-x86_64".into(),
                    argv,
                    cwd,
                    env: env
                        .iter()
                        .map(|(n, v)| EnvVar::new(n.as_bytes(), v.as_ref().map(|v| v.as_bytes())))
                        .collect(),
                    executable,
                    inputs: inputs
                        .into_iter()
                        .map(|(path, executable, digest)| InputFile {
                            path,
                            kind: FileKind::File,
                            executable,
                            digest,
                        })
                        .collect(),
                    outputs: vec![],
                    stdin,
                    salt,
                    key_command: key_command
                        .map(|(command, output)| KeyCommand { command, output }),
                    streams: if merged {
                        StreamMode::Merged
                    } else {
                        StreamMode::Separate
                    },
                    traced: None,
                };
                m.normalize();
                m
            },
        )
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        material(),
        vec(name(), 0..3),
        blob(),
        blob(),
        any::<i32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_flat_map(
            |(mut material, out_paths, a, b, exit_code, created, duration)| {
                let mut paths: Vec<ByteString> = out_paths;
                paths.sort();
                paths.dedup();
                material.outputs = paths.clone();
                let streams = match material.streams {
                    StreamMode::Merged | StreamMode::Terminal { .. } => {
                        Streams::Merged { combined: a }
                    }
                    StreamMode::Separate => Streams::Separate {
                        stdout: a,
                        stderr: b,
                    },
                };
                let outputs: Vec<_> = paths.into_iter().map(output).collect();
                (
                    Just(material),
                    Just(streams),
                    outputs,
                    Just((exit_code, created, duration)),
                )
            },
        )
        .prop_map(
            |(material, streams, outputs, (exit_code, created_unix_ms, duration_ms))| Entry {
                observed: None,
                material,
                created_unix_ms,
                duration_ms,
                exit_code,
                streams,
                outputs,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn entries_round_trip(e in entry()) {
        prop_assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn a_damaged_entry_is_always_refused(e in entry(), at in any::<prop::sample::Index>(), mask in 1u8..) {
        let mut bytes = e.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(Entry::decode(&bytes).is_err());
    }

    #[test]
    fn a_truncated_entry_is_always_refused(e in entry(), at in any::<prop::sample::Index>()) {
        let bytes = e.encode();
        let len = at.index(bytes.len());
        prop_assert!(Entry::decode(&bytes[..len]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(junk in vec(any::<u8>(), 0..512)) {
        let _ = Entry::decode(&junk);
        let _ = decode_record(&junk);
        let _ = events::decode_line(&junk);
        let _ = crate::digest_cache::decode_shard(&junk);
        let mut with_header = format!("memo-entry {FORMAT_VERSION} ").into_bytes();
        with_header.extend_from_slice(Digest::of_bytes(&junk).to_hex().as_bytes());
        with_header.push(b'\n');
        with_header.extend_from_slice(&junk);
        let _ = Entry::decode(&with_header);
    }

    #[test]
    fn any_json_body_with_a_valid_checksum_never_panics(body in "\\PC{0,300}") {
        let mut bytes = format!("memo-entry {FORMAT_VERSION} {}\n", Digest::of_bytes(body.as_bytes())).into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        let _ = Entry::decode(&bytes);
    }

    #[test]
    fn json_records_round_trip_and_refuse_damage(json in "\\{\"[a-z]{1,5}\":[0-9]{1,6}\\}", pad in 0usize..20, at in any::<prop::sample::Index>(), mask in 1u8..) {
        let mut stored = Digest::of_bytes(json.as_bytes()).short().into_bytes();
        stored.push(b' ');
        stored.extend_from_slice(json.as_bytes());
        stored.extend(std::iter::repeat_n(b' ', pad));
        prop_assert_eq!(decode_record(&stored).unwrap(), Some(json.as_bytes()));
        let content = stored.len() - pad;
        let i = at.index(content);
        stored[i] ^= mask;
        // Even a flip that turns the JSON's last byte into padding is refused: the
        // checksum covers the JSON exactly.
        prop_assert!(decode_record(&stored).is_err());
    }

    #[test]
    fn log_lines_round_trip(saved in any::<Option<u64>>(), key in proptest::option::of("[0-9a-f]{64}"), message in proptest::option::of("\\PC{0,40}")) {
        let mut event = Event::new(Kind::Hit);
        event.saved_ms = saved;
        event.key = key;
        event.message = message;
        let line = serde_json::to_vec(&event).unwrap();
        prop_assert_eq!(events::decode_line(&line), Some(event));
    }
}
