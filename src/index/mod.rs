//! Entries: what one cached run produced, stored one file per key.
//!
//! Owns the entry format (docs/format.md): a header line with a format version and the
//! SHA-256 of the JSON body that follows, so a flipped or truncated byte is detected
//! before anything is trusted. Decoding also refuses contents no honest memo writes
//! (absolute or `..` paths, inline bytes that disagree with their size), since a shared
//! cache directory may have been written by someone else.

pub mod records;
pub mod summary;
pub mod usage;

use serde::{Deserialize, Serialize};

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::key::KeyMaterial;

/// 2: inline and non-UTF-8 bytes as base64 (was hex); inline bytes capped per entry.
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &str = "memo-entry";

/// Outputs up to this size are kept inside the entry instead of as objects.
pub const INLINE_MAX: u64 = 16 * 1024;

/// At most this many inline bytes in one entry, all blobs together: a command that
/// writes thousands of small files must not make an entry too big to read back
/// (store::local::MAX_ENTRY_BYTES). The two streams may take `INLINE_MAX` each; the
/// declared outputs share the rest, and what does not fit goes to objects.
pub const INLINE_TOTAL_MAX: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Everything the key was computed from; compared on lookup.
    pub material: KeyMaterial,
    pub created_unix_ms: u64,
    /// How long the command took when it ran: the time a hit saves.
    pub duration_ms: u64,
    pub exit_code: i32,
    pub streams: Streams,
    pub outputs: Vec<Output>,
    /// A traced run's observations and outputs (`--trace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<crate::traced::Observed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Streams {
    Separate {
        stdout: Blob,
        stderr: Blob,
    },
    /// stdout and stderr went to one pipe, in the order the command wrote them.
    Merged {
        combined: Blob,
    },
}

/// A run of bytes: its digest and size, and the bytes themselves when small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::bytes::compact"
    )]
    pub inline: Option<ByteString>,
}

/// One declared output and the tree recorded under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The path as declared with `--output`.
    pub path: ByteString,
    /// The root first (path ""), then its contents, parents before children.
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Relative to the declared output; "" for the output itself.
    pub path: ByteString,
    #[serde(flatten)]
    pub kind: NodeKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NodeKind {
    Dir,
    File { blob: Blob, executable: bool },
    Symlink { target: ByteString },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a memo entry")]
    NotAnEntry,
    #[error("written by an unknown entry format version {0}")]
    UnknownVersion(String),
    #[error("checksum mismatch (the file is corrupt or truncated)")]
    Checksum,
    #[error("unreadable body: {0}")]
    Body(String),
    #[error("refused: {0}")]
    Hostile(String),
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_within(u64::MAX).expect("no limit")
    }

    /// The encoded entry if it takes at most `limit` bytes, else `Err` with its size.
    /// Checked before the checksum is computed: an entry too big to store costs no hash.
    pub fn encode_within(&self, limit: u64) -> Result<Vec<u8>, u64> {
        let body = serde_json::to_vec(self).expect("entries always serialize");
        // The header: magic, version, 64 hex digits, three separators.
        let size = (MAGIC.len() + FORMAT_VERSION.to_string().len() + 64 + 3 + body.len()) as u64;
        if size > limit {
            return Err(size);
        }
        let mut out =
            format!("{MAGIC} {FORMAT_VERSION} {}\n", Digest::of_bytes(&body)).into_bytes();
        out.extend_from_slice(&body);
        debug_assert_eq!(out.len() as u64, size);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(DecodeError::NotAnEntry)?;
        let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| DecodeError::NotAnEntry)?;
        let body = &bytes[newline + 1..];
        let mut parts = header.split(' ');
        if parts.next() != Some(MAGIC) {
            return Err(DecodeError::NotAnEntry);
        }
        let version = parts.next().ok_or(DecodeError::NotAnEntry)?;
        if version != FORMAT_VERSION.to_string() {
            return Err(DecodeError::UnknownVersion(
                version.chars().take(20).collect(),
            ));
        }
        let checksum: Digest = parts
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or(DecodeError::NotAnEntry)?;
        if parts.next().is_some() {
            return Err(DecodeError::NotAnEntry);
        }
        if Digest::of_bytes(body) != checksum {
            return Err(DecodeError::Checksum);
        }
        let entry: Entry =
            serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))?;
        entry.validate()?;
        Ok(entry)
    }

    /// Every blob the entry refers to, streams first.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        let streams: Vec<&Blob> = match &self.streams {
            Streams::Separate { stdout, stderr } => vec![stdout, stderr],
            Streams::Merged { combined } => vec![combined],
        };
        let files = self
            .outputs
            .iter()
            .flat_map(|o| &o.nodes)
            .filter_map(|n| match &n.kind {
                NodeKind::File { blob, .. } => Some(blob),
                _ => None,
            });
        streams.into_iter().chain(files)
    }

    fn validate(&self) -> Result<(), DecodeError> {
        let mut inline_total = 0;
        for blob in self.blobs() {
            if let Some(inline) = &blob.inline {
                if inline.0.len() as u64 != blob.size || blob.size > INLINE_MAX {
                    return Err(DecodeError::Hostile(
                        "inline bytes disagree with their size".into(),
                    ));
                }
                inline_total += blob.size;
            }
        }
        if inline_total > INLINE_TOTAL_MAX {
            return Err(DecodeError::Hostile(
                "more inline bytes than an entry may hold".into(),
            ));
        }
        let recorded: Vec<&ByteString> = self.outputs.iter().map(|o| &o.path).collect();
        if recorded != self.material.outputs.iter().collect::<Vec<_>>() {
            return Err(DecodeError::Hostile(
                "recorded outputs differ from the declared ones".into(),
            ));
        }
        for output in &self.outputs {
            validate_output(output).map_err(DecodeError::Hostile)?;
        }
        let bound = match &self.observed {
            Some(observed) => {
                self.material.traced == Some(observed.digest())
                    && observed
                        .written
                        .iter()
                        .all(|w| self.material.outputs.contains(w))
            }
            None => self.material.traced.is_none(),
        };
        if !bound {
            return Err(DecodeError::Hostile(
                "the observations of a traced run differ from its key".into(),
            ));
        }
        Ok(())
    }
}

fn validate_output(output: &Output) -> Result<(), String> {
    let shown = output.path.display();
    let Some((root, rest)) = output.nodes.split_first() else {
        return Err(format!("output '{shown}' has no recorded contents"));
    };
    if !root.path.0.is_empty() {
        return Err(format!("output '{shown}' does not start at its root"));
    }
    if !rest.is_empty() && root.kind != NodeKind::Dir {
        return Err(format!(
            "output '{shown}' has contents under a non-directory"
        ));
    }
    let mut dirs: std::collections::HashSet<&[u8]> = [&b""[..]].into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    for node in rest {
        let path = node.path.as_bytes();
        if !is_safe_relative(path) {
            return Err(format!(
                "output '{shown}' holds an unsafe path '{}'",
                node.path.display()
            ));
        }
        if !seen.insert(path) {
            return Err(format!(
                "output '{shown}' holds '{}' twice",
                node.path.display()
            ));
        }
        let parent = path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(&b""[..], |i| &path[..i]);
        if !dirs.contains(parent) {
            return Err(format!(
                "output '{shown}' holds '{}' before its directory",
                node.path.display()
            ));
        }
        if node.kind == NodeKind::Dir {
            dirs.insert(path);
        }
    }
    Ok(())
}

/// A non-empty relative path with no `.`, `..` or empty components and no NUL.
pub fn is_safe_relative(path: &[u8]) -> bool {
    !path.is_empty()
        && !path.contains(&0)
        && path
            .split(|&b| b == b'/')
            .all(|part| !part.is_empty() && part != b"." && part != b"..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyMaterial, StreamMode, KEY_VERSION};

    fn blob(bytes: &[u8]) -> Blob {
        Blob {
            digest: Digest::of_bytes(bytes),
            size: bytes.len() as u64,
            inline: Some(ByteString(bytes.to_vec())),
        }
    }

    fn entry() -> Entry {
        Entry {
            observed: None,
            material: KeyMaterial {
                version: KEY_VERSION,
                platform: "linux-x86_64".into(),
                argv: vec!["echo".into()],
                cwd: None,
                env: vec![],
                executable: Digest::of_bytes(b"echo"),
                inputs: vec![],
                outputs: vec!["out".into()],
                stdin: None,
                salt: None,
                key_command: None,
                streams: StreamMode::Separate,
                traced: None,
            },
            created_unix_ms: 1,
            duration_ms: 2,
            exit_code: 0,
            streams: Streams::Separate {
                stdout: blob(b"hi\n"),
                stderr: blob(b""),
            },
            outputs: vec![Output {
                path: "out".into(),
                nodes: vec![
                    Node {
                        path: "".into(),
                        kind: NodeKind::Dir,
                    },
                    Node {
                        path: "sub".into(),
                        kind: NodeKind::Dir,
                    },
                    Node {
                        path: "sub/f".into(),
                        kind: NodeKind::File {
                            blob: blob(b"x"),
                            executable: true,
                        },
                    },
                ],
            }],
        }
    }

    #[test]
    fn round_trips() {
        let e = entry();
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = entry().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                Entry::decode(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = entry().encode();
        for len in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes[..len]).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
    }

    fn with_node(path: &str) -> Result<Entry, DecodeError> {
        let mut e = entry();
        e.outputs[0].nodes.push(Node {
            path: path.into(),
            kind: NodeKind::Symlink {
                target: "/etc/passwd".into(),
            },
        });
        Entry::decode(&e.encode())
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for path in [
            "/etc/passwd",
            "../x",
            "sub/../../x",
            "a//b",
            "./a",
            "",
            "sub/f",
        ] {
            assert!(
                matches!(with_node(path), Err(DecodeError::Hostile(_))),
                "{path:?} accepted"
            );
        }
        assert!(with_node("sub/link").is_ok());
        assert!(matches!(with_node("nodir/x"), Err(DecodeError::Hostile(_))));
    }

    #[test]
    fn lying_inline_sizes_are_refused() {
        let mut e = entry();
        if let Streams::Separate { stdout, .. } = &mut e.streams {
            stdout.size = 1;
        }
        assert!(matches!(
            Entry::decode(&e.encode()),
            Err(DecodeError::Hostile(_))
        ));
    }

    #[test]
    fn more_inline_bytes_than_an_entry_may_hold_are_refused() {
        let mut e = entry();
        let big = vec![b'x'; INLINE_MAX as usize];
        let nodes = &mut e.outputs[0].nodes;
        for i in 0..(INLINE_TOTAL_MAX / INLINE_MAX) {
            nodes.push(Node {
                path: format!("f{i}").as_str().into(),
                kind: NodeKind::File {
                    blob: blob(&big),
                    executable: false,
                },
            });
        }
        assert!(matches!(
            Entry::decode(&e.encode()),
            Err(DecodeError::Hostile(_))
        ));
        e.outputs[0].nodes.pop();
        assert!(Entry::decode(&e.encode()).is_ok());
    }

    #[test]
    fn outputs_other_than_the_declared_ones_are_refused() {
        let mut e = entry();
        e.outputs[0].path = "/etc".into();
        assert!(matches!(
            Entry::decode(&e.encode()),
            Err(DecodeError::Hostile(_))
        ));
    }

    #[test]
    fn other_versions_are_not_read() {
        let bytes = entry().encode();
        let text = String::from_utf8(bytes).unwrap().replacen(
            &format!("memo-entry {FORMAT_VERSION} "),
            "memo-entry 9 ",
            1,
        );
        assert!(matches!(
            Entry::decode(text.as_bytes()),
            Err(DecodeError::UnknownVersion(_))
        ));
    }
}
