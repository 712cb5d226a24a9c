//! The `ac` value on the server: a REAPI `ActionResult` protobuf, so that bazel-remote
//! accepts it without `--disable_http_ac_validation`.
//!
//! The ActionResult carries the exit code, the streams (raw bytes or digests) and the
//! output files with their digests and executable bits, for any Bazel-minded reader;
//! memo itself reads only one field of it: the output file named `META_PATH`, whose
//! digest names memo's envelope (see `envelope`) in `cas/`. A server may rewrite the
//! ActionResult (bazel-remote adds a worker field); nothing memo trusts is lost that way.

use prost::Message as _;

use crate::digest::Digest;
use crate::index::{Blob, Entry, NodeKind, Streams};

/// The output file of the ActionResult that names memo's envelope.
pub const META_PATH: &str = ".memo/entry";

/// The output file of a traced call's manifest record that names its envelope: the
/// record is an ActionResult with that one file, so bazel-remote takes it in `ac/` and
/// serves it only while the envelope is in `cas/`.
pub const MANIFEST_PATH: &str = ".memo/manifest";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("not an ActionResult: {0}")]
    Malformed(String),
    #[error("the ActionResult names no memo record")]
    NoMeta,
}

/// Encodes the ActionResult for `entry`, whose envelope hashes to `meta` (`meta_size`
/// bytes). Inline blobs go in as raw bytes (streams) or inline contents; the others as
/// digests, which must all be in `cas/` before this is uploaded.
///
/// Shaped for bazel-remote's checks (utils/validate/action_result.go and
/// cache/disk/disk.go `GetValidatedActionResult`): every path relative and non-empty,
/// every digest 64 lowercase hex digits with a size >= 0, no empty symlink target, and
/// every digest it must find in `cas/` (an output file without contents, a stream
/// digest) listed, so that the entry reads as absent until all of them are there.
pub fn encode(entry: &Entry, meta: &Digest, meta_size: u64) -> Vec<u8> {
    // The envelope first: `meta_of` takes the first file at `META_PATH`, so a declared
    // output that happens to be called `.memo/entry` cannot stand in for it.
    let mut output_files = vec![OutputFile {
        path: META_PATH.to_string(),
        digest: Some(wire_digest(meta, meta_size)),
        is_executable: false,
        contents: Vec::new(),
    }];
    let mut output_symlinks = Vec::new();
    for output in &entry.outputs {
        for node in &output.nodes {
            let path = wire_path(output.path.as_bytes(), node.path.as_bytes());
            match &node.kind {
                // A directory has no place of its own without a Tree object in `cas/`;
                // its files are listed with their full paths.
                NodeKind::Dir => {}
                NodeKind::File { blob, executable } => output_files.push(OutputFile {
                    path,
                    digest: Some(wire_digest(&blob.digest, blob.size)),
                    is_executable: *executable,
                    contents: blob
                        .inline
                        .as_ref()
                        .map(|b| b.0.clone())
                        .unwrap_or_default(),
                }),
                // bazel-remote refuses an empty target; no real symlink has one.
                NodeKind::Symlink { target } if target.as_bytes().is_empty() => {}
                NodeKind::Symlink { target } => output_symlinks.push(OutputSymlink {
                    path,
                    target: String::from_utf8_lossy(target.as_bytes()).into_owned(),
                }),
            }
        }
    }
    let (stdout, stderr) = match &entry.streams {
        Streams::Separate { stdout, stderr } => (wire_stream(stdout), wire_stream(stderr)),
        Streams::Merged { combined } => (wire_stream(combined), (Vec::new(), None)),
    };
    ActionResult {
        output_files,
        exit_code: entry.exit_code,
        stdout_raw: stdout.0,
        stdout_digest: stdout.1,
        stderr_raw: stderr.0,
        stderr_digest: stderr.1,
        execution_metadata: None,
        output_symlinks,
    }
    .encode_to_vec()
}

/// The ActionResult of a traced call's manifest: exit code 0 and one output file,
/// `MANIFEST_PATH`, whose digest names the manifest's envelope (`meta_size` bytes).
pub fn encode_manifest(meta: &Digest, meta_size: u64) -> Vec<u8> {
    ActionResult {
        output_files: vec![OutputFile {
            path: MANIFEST_PATH.to_string(),
            digest: Some(wire_digest(meta, meta_size)),
            is_executable: false,
            contents: Vec::new(),
        }],
        exit_code: 0,
        stdout_raw: Vec::new(),
        stdout_digest: None,
        stderr_raw: Vec::new(),
        stderr_digest: None,
        execution_metadata: None,
        output_symlinks: Vec::new(),
    }
    .encode_to_vec()
}

/// The digest and size of the envelope an ActionResult names.
pub fn meta_of(bytes: &[u8]) -> Result<(Digest, u64), ProtoError> {
    named_by(bytes, META_PATH)
}

/// The digest and size of the envelope a manifest's ActionResult names.
pub fn manifest_meta_of(bytes: &[u8]) -> Result<(Digest, u64), ProtoError> {
    named_by(bytes, MANIFEST_PATH)
}

/// The digest and size of the first output file at `path`.
fn named_by(bytes: &[u8], path: &str) -> Result<(Digest, u64), ProtoError> {
    let result = ActionResult::decode(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let file = result
        .output_files
        .iter()
        .find(|f| f.path == path)
        .ok_or(ProtoError::NoMeta)?;
    let digest = file
        .digest
        .as_ref()
        .ok_or_else(|| ProtoError::Malformed(format!("{path} has no digest")))?;
    // `Digest::from_str` takes exactly 64 lowercase hex digits, as bazel-remote does.
    let hash: Digest = digest.hash.parse().map_err(|_| {
        ProtoError::Malformed(format!(
            "{path} has a bad hash {:?}",
            digest.hash.chars().take(80).collect::<String>()
        ))
    })?;
    let size = u64::try_from(digest.size_bytes).map_err(|_| {
        ProtoError::Malformed(format!("{path} has a negative size {}", digest.size_bytes))
    })?;
    Ok((hash, size))
}

/// A stream as raw bytes when the entry holds it inline, else as a digest.
fn wire_stream(blob: &Blob) -> (Vec<u8>, Option<WireDigest>) {
    match &blob.inline {
        Some(bytes) => (bytes.0.clone(), None),
        None => (Vec::new(), Some(wire_digest(&blob.digest, blob.size))),
    }
}

fn wire_digest(digest: &Digest, size: u64) -> WireDigest {
    WireDigest {
        hash: digest.to_hex(),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
    }
}

/// The path of a node on the wire: the declared output joined with the node's path by
/// '/'. Relative (bazel-remote refuses a leading '/', and a declared output may be
/// absolute), never empty, and valid UTF-8 (protobuf strings must be; Go's decoder
/// refuses others), so a non-UTF-8 name is shown lossily: only memo's envelope must be
/// exact, and it is.
fn wire_path(output: &[u8], node: &[u8]) -> String {
    let mut joined = output.to_vec();
    if !node.is_empty() {
        while joined.last() == Some(&b'/') {
            joined.pop();
        }
        joined.push(b'/');
        joined.extend_from_slice(node);
    }
    let text = String::from_utf8_lossy(&joined);
    let relative = text.trim_start_matches('/');
    if relative.is_empty() {
        ".".to_string()
    } else {
        relative.to_string()
    }
}

// The parts of REAPI v2 (build/bazel/remote/execution/v2/remote_execution.proto) memo
// writes, with their field numbers. Fields memo does not know (output directories, the
// timestamps bazel-remote or a worker adds) are skipped when decoding.

#[derive(Clone, PartialEq, prost::Message)]
struct ActionResult {
    #[prost(message, repeated, tag = "2")]
    output_files: Vec<OutputFile>,
    #[prost(int32, tag = "4")]
    exit_code: i32,
    #[prost(bytes = "vec", tag = "5")]
    stdout_raw: Vec<u8>,
    #[prost(message, optional, tag = "6")]
    stdout_digest: Option<WireDigest>,
    #[prost(bytes = "vec", tag = "7")]
    stderr_raw: Vec<u8>,
    #[prost(message, optional, tag = "8")]
    stderr_digest: Option<WireDigest>,
    #[prost(message, optional, tag = "9")]
    execution_metadata: Option<ExecutedActionMetadata>,
    #[prost(message, repeated, tag = "12")]
    output_symlinks: Vec<OutputSymlink>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OutputFile {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(message, optional, tag = "2")]
    digest: Option<WireDigest>,
    #[prost(bool, tag = "4")]
    is_executable: bool,
    #[prost(bytes = "vec", tag = "5")]
    contents: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OutputSymlink {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    target: String,
}

/// REAPI's `Digest`: lowercase hex and a signed size.
#[derive(Clone, PartialEq, prost::Message)]
struct WireDigest {
    #[prost(string, tag = "1")]
    hash: String,
    #[prost(int64, tag = "2")]
    size_bytes: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExecutedActionMetadata {
    #[prost(string, tag = "1")]
    worker: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::ByteString;
    use crate::index::{Node, Output};
    use crate::key::{KeyMaterial, StreamMode};
    use proptest::prelude::*;

    fn blob(bytes: &[u8], inline: bool) -> Blob {
        Blob {
            digest: Digest::of_bytes(bytes),
            size: bytes.len() as u64,
            inline: inline.then(|| ByteString(bytes.to_vec())),
        }
    }

    fn node(path: &str, kind: NodeKind) -> Node {
        Node {
            path: path.into(),
            kind,
        }
    }

    fn entry(streams: Streams) -> Entry {
        Entry {
            observed: None,
            material: KeyMaterial {
                version: crate::key::KEY_VERSION,
                platform: "linux-x86_64".into(),
                argv: vec!["make".into()],
                cwd: None,
                env: vec![],
                executable: Digest::of_bytes(b"make"),
                inputs: vec![],
                outputs: vec!["/abs/out".into(), "build/".into()],
                stdin: None,
                salt: None,
                key_command: None,
                streams: StreamMode::Separate,
                traced: None,
            },
            created_unix_ms: 1,
            duration_ms: 2,
            exit_code: 3,
            streams,
            outputs: vec![
                Output {
                    path: "/abs/out".into(),
                    nodes: vec![node(
                        "",
                        NodeKind::File {
                            blob: blob(b"small", true),
                            executable: true,
                        },
                    )],
                },
                Output {
                    path: "build/".into(),
                    nodes: vec![
                        node("", NodeKind::Dir),
                        node(
                            "big.bin",
                            NodeKind::File {
                                blob: blob(&[7; 100], false),
                                executable: false,
                            },
                        ),
                        node(
                            "empty",
                            NodeKind::File {
                                blob: blob(b"", true),
                                executable: false,
                            },
                        ),
                        node(
                            "link",
                            NodeKind::Symlink {
                                target: "big.bin".into(),
                            },
                        ),
                        node(
                            "odd\u{1}",
                            NodeKind::Symlink {
                                target: ByteString(b"\xff".to_vec()),
                            },
                        ),
                    ],
                },
            ],
        }
    }

    fn separate() -> Streams {
        Streams::Separate {
            stdout: blob(b"out", true),
            stderr: blob(&[1; 40], false),
        }
    }

    fn meta() -> (Digest, u64) {
        (Digest::of_bytes(b"the envelope"), 12)
    }

    fn decoded(bytes: &[u8]) -> ActionResult {
        ActionResult::decode(bytes).unwrap()
    }

    fn hex_of(b: &Blob) -> Option<WireDigest> {
        Some(wire_digest(&b.digest, b.size))
    }

    #[test]
    fn round_trip_yields_the_meta() {
        let (digest, size) = meta();
        let bytes = encode(&entry(separate()), &digest, size);
        assert_eq!(meta_of(&bytes), Ok((digest, size)));
    }

    #[test]
    fn separate_streams_are_raw_when_inline_and_digests_otherwise() {
        let (digest, size) = meta();
        let result = decoded(&encode(&entry(separate()), &digest, size));
        assert_eq!(result.exit_code, 3);
        assert_eq!(result.stdout_raw, b"out");
        assert_eq!(result.stdout_digest, None);
        assert!(result.stderr_raw.is_empty());
        assert_eq!(result.stderr_digest, hex_of(&blob(&[1; 40], false)));
    }

    #[test]
    fn merged_streams_go_out_as_stdout() {
        let (digest, size) = meta();
        let combined = blob(&[2; 50], false);
        let streams = Streams::Merged {
            combined: combined.clone(),
        };
        let result = decoded(&encode(&entry(streams), &digest, size));
        assert_eq!(result.stdout_digest, hex_of(&combined));
        assert!(result.stdout_raw.is_empty());
        assert_eq!(result.stderr_digest, None);
        assert!(result.stderr_raw.is_empty());
    }

    #[test]
    fn outputs_are_relative_paths_with_digests_and_inline_contents() {
        let (digest, size) = meta();
        let result = decoded(&encode(&entry(separate()), &digest, size));
        let files: Vec<(&str, bool, &[u8])> = result
            .output_files
            .iter()
            .map(|f| (f.path.as_str(), f.is_executable, &f.contents[..]))
            .collect();
        assert_eq!(
            files,
            [
                (META_PATH, false, &b""[..]),
                ("abs/out", true, b"small"),
                ("build/big.bin", false, b""),
                ("build/empty", false, b""),
            ]
        );
        // Every file has its digest, inline or not: bazel-remote wants one for each.
        assert_eq!(
            result.output_files[2].digest,
            hex_of(&blob(&[7; 100], false))
        );
        assert_eq!(result.output_files[1].digest, hex_of(&blob(b"small", true)));
        assert_eq!(
            result.output_files[0].digest,
            Some(wire_digest(&digest, size))
        );
        let links: Vec<(&str, &str)> = result
            .output_symlinks
            .iter()
            .map(|l| (l.path.as_str(), l.target.as_str()))
            .collect();
        assert_eq!(
            links,
            [("build/link", "big.bin"), ("build/odd\u{1}", "\u{fffd}")]
        );
    }

    #[test]
    fn every_path_is_relative_and_non_empty() {
        assert_eq!(wire_path(b"/", b""), ".");
        assert_eq!(wire_path(b"//a", b"b"), "a/b");
        assert_eq!(wire_path(b"a//", b"b/c"), "a/b/c");
        assert_eq!(wire_path(b".", b""), ".");
    }

    #[test]
    fn a_declared_output_named_like_the_meta_cannot_replace_it() {
        let (digest, size) = meta();
        let mut e = entry(separate());
        e.outputs[0].path = META_PATH.into();
        let bytes = encode(&e, &digest, size);
        assert_eq!(meta_of(&bytes), Ok((digest, size)));
    }

    /// bazel-remote decodes the ActionResult, adds `execution_metadata.worker` and
    /// stores it re-serialized; a server may add fields memo does not know.
    #[test]
    fn a_result_rewritten_with_a_worker_still_yields_the_meta() {
        let (digest, size) = meta();
        let mut result = decoded(&encode(&entry(separate()), &digest, size));
        result.execution_metadata = Some(ExecutedActionMetadata {
            worker: "127.0.0.1".into(),
        });
        let mut bytes = result.encode_to_vec();
        assert_eq!(meta_of(&bytes), Ok((digest, size)));
        // Fields memo does not declare: an output directory (3) and a queued timestamp
        // (execution_metadata 2), as a Go server would write them.
        bytes.extend_from_slice(&[0x1a, 0x03, 0x0a, 0x01, b'd']);
        bytes.extend_from_slice(&[0x4a, 0x04, 0x12, 0x02, 0x08, 0x01]);
        assert_eq!(meta_of(&bytes), Ok((digest, size)));
    }

    /// bazel-remote's `validate.ActionResult` (utils/validate/action_result.go), restated.
    fn bazel_remote_refusal(result: &ActionResult) -> Option<String> {
        let bad_digest = |d: &WireDigest| {
            d.size_bytes < 0
                || d.hash.len() != 64
                || !d
                    .hash
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        };
        for f in &result.output_files {
            if f.path.is_empty() || f.path.starts_with('/') {
                return Some(format!("bad path {:?}", f.path));
            }
            if f.digest.as_ref().is_none_or(bad_digest) {
                return Some(format!("bad digest for {:?}", f.path));
            }
        }
        for l in &result.output_symlinks {
            if l.path.is_empty() || l.path.starts_with('/') || l.target.is_empty() {
                return Some(format!("bad symlink {l:?}"));
            }
        }
        [&result.stdout_digest, &result.stderr_digest]
            .into_iter()
            .flatten()
            .find(|d| bad_digest(d))
            .map(|d| format!("bad stream digest {d:?}"))
    }

    #[test]
    fn what_memo_writes_passes_bazel_remote_validation() {
        let (digest, size) = meta();
        let mut e = entry(separate());
        // Whatever a symlink holds, even nothing, the result stays acceptable.
        e.outputs[1].nodes.push(node(
            "nothing",
            NodeKind::Symlink {
                target: ByteString::default(),
            },
        ));
        e.outputs[0].path = "/".into();
        for streams in [
            separate(),
            Streams::Merged {
                combined: blob(&[2; 50], false),
            },
        ] {
            e.streams = streams;
            let result = decoded(&encode(&e, &digest, size));
            assert_eq!(bazel_remote_refusal(&result), None);
        }
    }

    #[test]
    fn a_manifest_record_passes_bazel_remote_validation_and_is_no_entry() {
        let (digest, size) = meta();
        let bytes = encode_manifest(&digest, size);
        assert_eq!(bazel_remote_refusal(&decoded(&bytes)), None);
        assert_eq!(manifest_meta_of(&bytes), Ok((digest, size)));
        // Neither record can stand in for the other.
        assert_eq!(meta_of(&bytes), Err(ProtoError::NoMeta));
        let entry_record = encode(&entry(separate()), &digest, size);
        assert_eq!(manifest_meta_of(&entry_record), Err(ProtoError::NoMeta));
    }

    fn with_meta_digest(hash: &str, size_bytes: i64) -> Vec<u8> {
        ActionResult {
            output_files: vec![OutputFile {
                path: META_PATH.into(),
                digest: Some(WireDigest {
                    hash: hash.into(),
                    size_bytes,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_negative_size_is_malformed() {
        let hex = Digest::of_bytes(b"x").to_hex();
        assert!(matches!(
            meta_of(&with_meta_digest(&hex, -1)),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn a_bad_hash_is_malformed() {
        let hex = Digest::of_bytes(b"x").to_hex();
        for bad in [
            hex.to_uppercase(),
            hex[..63].to_string(),
            format!("{hex}0"),
            String::new(),
            format!("{}g", &hex[..63]),
        ] {
            assert!(
                matches!(
                    meta_of(&with_meta_digest(&bad, 1)),
                    Err(ProtoError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_meta_without_digest_is_malformed() {
        let bytes = ActionResult {
            output_files: vec![OutputFile {
                path: META_PATH.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(meta_of(&bytes), Err(ProtoError::Malformed(_))));
    }

    #[test]
    fn empty_bytes_and_results_without_meta_name_no_entry() {
        assert_eq!(meta_of(b""), Err(ProtoError::NoMeta));
        let other = ActionResult {
            exit_code: 1,
            output_files: vec![OutputFile {
                path: "out".into(),
                digest: Some(wire_digest(&Digest::of_bytes(b""), 0)),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(meta_of(&other.encode_to_vec()), Err(ProtoError::NoMeta));
    }

    #[test]
    fn garbage_is_malformed() {
        for garbage in [
            &b"\xff\xff\xff\xff"[..],
            b"<html>502 Bad Gateway</html>",
            b"\x12\x10short",
        ] {
            assert!(
                matches!(meta_of(garbage), Err(ProtoError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = meta_of(&bytes);
        }

        #[test]
        fn a_truncated_result_never_panics(cut in 0usize..400) {
            let (digest, size) = meta();
            let bytes = encode(&entry(separate()), &digest, size);
            let _ = meta_of(&bytes[..cut.min(bytes.len())]);
        }
    }
}
