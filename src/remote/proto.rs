//! The `ac` value on the server: a REAPI `ActionResult` protobuf, so that bazel-remote
//! accepts it without `--disable_http_ac_validation`.
//!
//! The ActionResult carries the exit code, the streams (raw bytes or digests) and the
//! output files with their digests and executable bits, for any Bazel-minded reader;
//! memo itself reads only one field of it: the output file named `META_PATH`, whose
//! digest names memo's envelope (see `envelope`) in `cas/`. A server may rewrite the
//! ActionResult (bazel-remote adds a worker field); nothing memo trusts is lost that way.

use crate::digest::Digest;
use crate::index::Entry;

/// The output file of the ActionResult that names memo's envelope.
pub const META_PATH: &str = ".memo/entry";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("not an ActionResult: {0}")]
    Malformed(String),
    #[error("the ActionResult names no memo entry")]
    NoMeta,
}

/// Encodes the ActionResult for `entry`, whose envelope hashes to `meta` (`meta_size`
/// bytes). Inline blobs go in as raw bytes (streams) or inline contents; the others as
/// digests, which must all be in `cas/` before this is uploaded.
pub fn encode(entry: &Entry, meta: &Digest, meta_size: u64) -> Vec<u8> {
    let _ = (entry, meta, meta_size);
    todo!("wire helper")
}

/// The digest and size of the envelope an ActionResult names.
pub fn meta_of(bytes: &[u8]) -> Result<(Digest, u64), ProtoError> {
    let _ = bytes;
    todo!("wire helper")
}
