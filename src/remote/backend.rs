//! The transport to a shared cache: one small trait over the kinds of server memo can
//! share results through (an HTTP cache with the Bazel remote-cache layout, S3-compatible
//! object storage), and the parsing of the URL that picks one.
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
}

pub trait Backend: Send + Sync {
    /// The URL with any credentials masked, for messages.
    fn describe(&self) -> String;
    /// The size of the object at `path`, or `None` when the server has none.
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
    /// Removes the object. `Ok(false)` when the server does not allow it (405, 501).
    fn delete(&self, path: &str) -> Result<bool, TransportError>;
}

/// Why a remote URL cannot be used: an invalid invocation (exit 125).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// The forms `open` accepts, for error messages.
const ACCEPTED: &str =
    "use http://HOST[:PORT]/PATH, https://HOST[:PORT]/PATH or s3://BUCKET/PREFIX";

/// Opens the backend a URL names: `http://`, `https://` or `s3://BUCKET/PREFIX`.
pub fn open(url: &str, options: &Options) -> Result<Box<dyn Backend>, UrlError> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(UrlError(format!(
            "remote URL {} has no scheme; {ACCEPTED}",
            mask(url)
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" if scheme.chars().all(|c| c.is_ascii_lowercase()) => {
            Ok(Box::new(super::http::HttpBackend::open(url, options)?))
        }
        "s3" if scheme == "s3" => Ok(Box::new(super::s3::S3Backend::open(url, options)?)),
        _ => Err(UrlError(format!(
            "remote URL {} has an unsupported scheme {scheme}://; {ACCEPTED}",
            mask(url)
        ))),
    }
}

/// `url` with its password (if any) replaced by `***`.
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
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_error(url: &str) -> String {
        match open(url, &Options::default()) {
            Ok(backend) => panic!("{url} opened as {}", backend.describe()),
            Err(e) => e.0,
        }
    }

    #[test]
    fn unsupported_urls_say_what_is_accepted() {
        for url in [
            "ftp://host/cache",
            "/var/cache/memo",
            "host:8080/cache",
            "",
            "HTTP://host/",
            "gs://bucket",
        ] {
            let err = open_error(url);
            assert!(err.contains("s3://BUCKET/PREFIX"), "{url}: {err}");
            assert!(err.contains("http://HOST"), "{url}: {err}");
            assert_eq!(err.lines().count(), 1, "{url}: {err}");
        }
    }

    #[test]
    fn urls_without_a_host_or_bucket_are_refused() {
        assert!(open_error("http:///cache").contains("no host"));
        assert!(open_error("https://").contains("no host"));
        assert!(open_error("s3:///prefix").contains("no bucket"));
    }

    #[test]
    fn open_accepts_http_and_https() {
        let backend = open("http://127.0.0.1:1/c", &Options::default()).unwrap();
        assert_eq!(backend.describe(), "http://127.0.0.1:1/c");
        assert!(open("https://cache.example/", &Options::default()).is_ok());
    }

    #[test]
    fn mask_hides_only_the_password() {
        assert_eq!(mask("https://u:secret@h:9/p"), "https://u:***@h:9/p");
        assert_eq!(mask("https://u@h/p"), "https://u@h/p");
        assert_eq!(mask("https://h/p@x"), "https://h/p@x");
        assert_eq!(mask("http://u:p%40ss@h/"), "http://u:***@h/");
        assert_eq!(mask("http://u:p@ss@h/"), "http://u:***@h/");
        assert_eq!(mask("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(mask("no scheme"), "no scheme");
    }
}
