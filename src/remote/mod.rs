//! The shared tier: a cache on a storage server a team already runs, behind the local
//! one. Owns the remote client as the rest of memo sees it: fetching a result into the
//! local store (every byte verified before it is kept), uploading one from it, the
//! pending uploads, the probe of `memo remote check`, and the tally of what happened,
//! which the caller turns into counters, log events and warnings.
//!
//! Nothing here may break the user's command: every failure is a tally entry and a miss.

pub mod backend;
pub mod breaker;
mod check;
pub mod envelope;
mod fetch;
pub mod http;
mod manifest;
pub mod proto;
pub mod queue;
pub mod s3;
mod upload;

pub use check::{CheckReport, CheckStep};
pub use fetch::Fetched;
pub use manifest::Listed;
pub use upload::{PushReport, Uploader};

use std::path::{Path, PathBuf};

use crate::config::{RemoteMode, RemoteSettings};
use crate::digest::Digest;
use crate::events::{Event, Kind};
use crate::stats::Counters;
use crate::store::local::MAX_ENTRY_BYTES;
use backend::{Auth, Backend, Options, TransportError, UrlError};
use breaker::Breaker;

/// No envelope memo writes comes near this: an entry is at most `MAX_ENTRY_BYTES`, and
/// the envelope holds it in base64. (Its download's time budget follows the size the
/// ActionResult gives it, not this.)
const MAX_RECORD_BYTES: u64 = MAX_ENTRY_BYTES * 2;

/// The largest ActionResult memo reads or writes. Its size is unknown before it
/// arrives, so its download's time budget follows this limit: kept small, a server
/// that trickles one costs seconds. An ActionResult that would be larger (a result of
/// tens of thousands of files) goes up without its list of output files: memo reads
/// only the envelope it names.
const MAX_AC_BYTES: u64 = 4 << 20;

/// The shared cache as configured for this call.
pub struct Remote {
    backend: Box<dyn Backend>,
    breaker: Breaker,
    root: PathBuf,
    mode: RemoteMode,
    namespace: String,
    read: Vec<String>,
    signing_key: Option<Vec<u8>>,
}

/// What a remote operation did, for the caller to count, log and say.
#[derive(Default)]
pub struct Tally {
    pub counters: Counters,
    pub events: Vec<Event>,
    pub warnings: Vec<String>,
}

impl Tally {
    fn event(&mut self, kind: Kind, key: Option<&Digest>, message: Option<String>) {
        let mut event = Event::new(kind);
        event.key = key.map(|k| k.to_hex());
        event.message = message;
        self.events.push(event);
    }

    /// A wrong answer or a failed call: counted, logged and said.
    fn error(&mut self, key: Option<&Digest>, message: String) {
        self.counters.remote_errors += 1;
        self.event(Kind::RemoteError, key, Some(message.clone()));
        self.warnings.push(message);
    }
}

/// Opens the backend a URL names: `http://`, `https://` or `s3://BUCKET/PREFIX`.
pub fn open_backend(url: &str, options: &Options) -> Result<Box<dyn Backend>, UrlError> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(UrlError(format!(
            "remote URL {} has no scheme; {}",
            backend::mask(url),
            backend::ACCEPTED
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" if scheme.chars().all(|c| c.is_ascii_lowercase()) => {
            Ok(Box::new(http::HttpBackend::open(url, options)?))
        }
        "s3" if scheme == "s3" => Ok(Box::new(s3::S3Backend::open(url, options)?)),
        _ => Err(UrlError(format!(
            "remote URL {} has an unsupported scheme {scheme}://; {}",
            backend::mask(url),
            backend::ACCEPTED
        ))),
    }
}

/// The warning for a result from the shared cache that could not be kept locally.
pub fn cannot_keep(e: impl std::fmt::Display) -> String {
    format!("cannot keep a result from the shared cache ({e})")
}

/// The backend options a settings block names.
pub fn options(settings: &RemoteSettings) -> Options {
    let basic = settings
        .user
        .clone()
        .map(|user| (user, settings.password.clone().unwrap_or_default()));
    Options {
        auth: Auth {
            basic,
            bearer: settings.token.clone(),
        },
        ca_file: settings.ca_file.clone(),
        compression: settings.compression.value,
    }
}

/// Checks the configured URL and settings as written, without a network call or the
/// environment they will meet: a malformed URL, or basic auth and a token together, is
/// an invalid invocation. What depends on the machine (S3 credentials, a readable CA
/// file) is checked when the remote is opened, where a problem is a warning.
pub fn validate(settings: &RemoteSettings) -> Result<(), UrlError> {
    let Some(url) = &settings.url.value else {
        return Ok(());
    };
    let options = Options {
        ca_file: None,
        ..options(settings)
    };
    if url.starts_with("s3://") {
        // Stand-in credentials: only the URL's form is checked here.
        let env = |name: &str| {
            name.starts_with("AWS_ACCESS_KEY_ID") || name.starts_with("AWS_SECRET_ACCESS_KEY")
        };
        return s3::S3Backend::open_with_env(url, &options, &|name| {
            if env(name) {
                Some("checked-later".into())
            } else {
                std::env::var(name).ok()
            }
        })
        .map(drop);
    }
    open_backend(url, &options).map(drop)
}

/// Checks everything `Remote::open` will: the URL and the machine's side (credentials,
/// the CA file). For `memo config`, which shows what would go wrong.
pub fn check_settings(settings: &RemoteSettings) -> Result<(), UrlError> {
    match &settings.url.value {
        Some(url) => open_backend(url, &options(settings)).map(drop),
        None => Ok(()),
    }
}

impl Remote {
    /// The configured remote, if any, keeping its breaker and markers under `root`.
    pub fn open(settings: &RemoteSettings, root: &Path) -> Result<Option<Remote>, UrlError> {
        let Some(url) = &settings.url.value else {
            return Ok(None);
        };
        Ok(Some(Remote {
            backend: open_backend(url, &options(settings))?,
            breaker: Breaker::new(root, url),
            root: root.to_path_buf(),
            mode: settings.mode.value,
            namespace: settings.namespace.value.clone(),
            read: settings.read.value.clone(),
            signing_key: settings.signing_key.clone(),
        }))
    }

    /// The URL with credentials masked.
    pub fn shown(&self) -> String {
        self.backend.describe()
    }

    pub fn writes(&self) -> bool {
        self.mode == RemoteMode::ReadWrite
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A failed call: counted, said, and fed to the breaker. Local trouble (writing the
    /// download into the store) is said but does not count against the server.
    fn fault(&self, e: &TransportError, key: Option<&Digest>, tally: &mut Tally) {
        if !e.is_server_fault() {
            tally
                .warnings
                .push(format!("cannot use the shared cache ({e})"));
            return;
        }
        tally.error(key, format!("remote {} failed: {e}", self.shown()));
        if self.breaker.failure() {
            tally.counters.breaker_trips += 1;
            let message = format!(
                "remote {}: {} failures in a row; no remote calls for {}s",
                self.shown(),
                breaker::TRIP_AFTER,
                breaker::OPEN_FOR.as_secs()
            );
            tally.event(Kind::BreakerTrip, key, Some(message.clone()));
            tally.warnings.push(message);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod url_tests {
    use super::*;

    fn open_error(url: &str) -> String {
        match open_backend(url, &Options::default()) {
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
        let backend = open_backend("http://127.0.0.1:1/c", &Options::default()).unwrap();
        assert_eq!(backend.describe(), "http://127.0.0.1:1/c");
        assert!(open_backend("https://cache.example/", &Options::default()).is_ok());
    }
}
