//! The transport to a shared cache: one small trait over the kinds of server memo can
//! share results through (an HTTP cache with the Bazel remote-cache layout, S3-compatible
//! object storage), its errors, and the masking of credentials in URLs.
//! (`remote::open_backend` picks the backend a URL names.)
//!
//! Paths are `ac/<hex>` (entries) and `cas/<hex>` (content-addressed objects), relative
//! to the URL's base. A backend moves bytes; it knows nothing of what they mean.

use std::io::{Read, Write};
use std::time::Duration;

/// Credentials for HTTP servers (S3 takes its own from the `AWS_*` variables).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// Basic auth: from the URL's user info, else `MEMO_REMOTE_USER`/`MEMO_REMOTE_PASSWORD`.
    pub basic: Option<(String, String)>,
    /// `Authorization: Bearer ...` from `MEMO_REMOTE_TOKEN`.
    pub bearer: Option<String>,
}

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("the server did not answer in time ({0:?})")]
    Timeout(Duration),
    #[error("the server answered HTTP {status} to {method} {path}")]
    Status {
        status: u16,
        method: &'static str,
        path: String,
    },
    #[error("{path} is larger than the {limit} bytes expected")]
    TooLarge { path: String, limit: u64 },
    #[error("the body of {path} ended early ({got} of {expected} bytes)")]
    Truncated {
        path: String,
        got: u64,
        expected: u64,
    },
    /// Reading the upload's source or writing the download's sink failed: local trouble.
    #[error("{0}")]
    Local(std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// Whether this says the server is unwell or unreachable (counted by the circuit
    /// breaker), as opposed to local trouble.
    pub fn is_server_fault(&self) -> bool {
        !matches!(self, TransportError::Local(_))
    }
}

/// The settings a URL cannot carry.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub auth: Auth,
    /// PEM file of extra trusted certificate authorities (`MEMO_REMOTE_CA`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Whether objects may travel as zstd (`MEMO_REMOTE_COMPRESSION=zstd`).
    pub compression: bool,
}

pub trait Backend: Send + Sync {
    /// The URL with any credentials masked, for messages.
    fn describe(&self) -> String;
    /// The size of the object at `path`, or `None` when the server has none (or answers
    /// without a size, which an uploader treats the same: it sends the object).
    fn head(&self, path: &str) -> Result<Option<u64>, TransportError>;
    /// Streams the object at `path` into `sink`; `None` when absent. More than `limit`
    /// bytes is `TooLarge` (a body that says it is larger fails before a byte is read);
    /// a body shorter than its Content-Length is `Truncated`.
    fn get(
        &self,
        path: &str,
        limit: u64,
        sink: &mut dyn Write,
    ) -> Result<Option<u64>, TransportError>;
    /// Uploads exactly `len` bytes read from `body`, with a Content-Length (never chunked),
    /// streaming with bounded memory.
    fn put(&self, path: &str, body: &mut dyn Read, len: u64) -> Result<(), TransportError>;
    /// Uploads `len` bytes of one zstd frame of an object whose raw bytes are `raw_size`
    /// long, for a server that stores the raw bytes under `path` (bazel-remote: with
    /// `Content-Encoding: zstd` and `X-Digest-SizeBytes`). `Ok(false)`: this backend
    /// sends raw bytes only, and nothing was sent.
    fn put_zstd(
        &self,
        path: &str,
        body: &mut dyn Read,
        len: u64,
        raw_size: u64,
    ) -> Result<bool, TransportError> {
        let _ = (path, body, len, raw_size);
        Ok(false)
    }
    /// Creates the collections (directories) `path` lies in, for a WebDAV server that
    /// answers 409 to a PUT into a missing one. Object stores have none: nothing to do.
    fn make_parents(&self, path: &str) -> Result<(), TransportError> {
        let _ = path;
        Ok(())
    }
    /// Removes the object. `Ok(false)` when the server does not allow it (405, 501).
    fn delete(&self, path: &str) -> Result<bool, TransportError>;
}

/// Why a remote URL cannot be used: an invalid invocation (exit 125).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// The forms `open` accepts, for error messages.
pub const ACCEPTED: &str =
    "use http://HOST[:PORT]/PATH, https://HOST[:PORT]/PATH or s3://BUCKET/PREFIX";

/// `url` with its password, or a user info without one (often a token), replaced by `***`.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        // A lone user info is often a token (`https://TOKEN@host/`): masked whole.
        None => format!("{scheme}://***@{host}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_hides_only_the_password() {
        assert_eq!(mask("https://u:secret@h:9/p"), "https://u:***@h:9/p");
        assert_eq!(mask("https://u@h/p"), "https://***@h/p");
        assert_eq!(mask("https://h/p@x"), "https://h/p@x");
        assert_eq!(mask("http://u:p%40ss@h/"), "http://u:***@h/");
        assert_eq!(mask("http://u:p@ss@h/"), "http://u:***@h/");
        assert_eq!(mask("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(mask("no scheme"), "no scheme");
    }
}
