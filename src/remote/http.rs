//! The HTTP transport: an HTTP cache with the Bazel remote-cache layout (bazel-remote,
//! nginx WebDAV, anything that stores a PUT and serves it back on GET), and the one HTTP
//! client every backend sends its requests through (`Client`: the agent's settings, the
//! timeouts, status mapping and bounded-memory streaming; S3 reuses it with presigned URLs).
//!
//! It moves bytes and maps answers to `TransportError`; it never retries, never follows
//! a redirect (a cache server has no reason to send one: a 3xx is a `Status` error) and
//! knows nothing of what the bytes mean.
//!
//! Trust: without `Options::ca_file` the platform's verifier (on Linux, the system roots;
//! `SSL_CERT_FILE` is honoured). With it, **only** the certificates in that PEM file are
//! trusted: ureq 3 takes either the platform verifier or a list of roots, not both.
//!
//! Auth: basic from the URL's user info (percent-decoded), else `Options::auth.basic`; a
//! bearer token from `Options::auth.bearer`. Basic auth and a token together are refused
//! (one `Authorization` header, and silently dropping one of them would hide a mistake).

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::Agent;

use super::backend::{Backend, Options, TransportError, UrlError};

/// Connecting (TCP plus TLS) may take this long; so may resolving the name before it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The response's headers must arrive this long after the request (and its body) went out.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A transfer that makes no progress (no byte read or written) for this long has stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Every request may take this long, plus the time its body needs at `MIN_RATE`.
pub const BASE_BUDGET: Duration = Duration::from_secs(10);
/// The slowest transfer rate a request's budget allows for: 1 MiB/s.
pub const MIN_RATE: u64 = 1 << 20;
/// The largest budget any request gets, however large its body (one day).
const MAX_BUDGET: Duration = Duration::from_secs(24 * 3600);
/// Bodies are streamed through a buffer of this size, never held whole.
const BUFFER_SIZE: usize = 64 * 1024;

/// How long a request moving `len` body bytes may take in all: `BASE_BUDGET` plus `len`
/// at `MIN_RATE`.
pub fn request_budget(len: u64) -> Duration {
    BASE_BUDGET
        .saturating_add(Duration::from_secs(len / MIN_RATE))
        .min(MAX_BUDGET)
}

/// A 404: the object is absent, unless the body says the whole bucket is (S3's
/// `NoSuchBucket`): that is a misconfigured remote, which must not pass for a miss.
fn missing(response: ureq::http::Response<ureq::Body>) -> Result<Option<u64>, TransportError> {
    let mut head = Vec::new();
    let _ = response
        .into_body()
        .into_reader()
        .take(4096)
        .read_to_end(&mut head);
    if head.windows(12).any(|w| w == b"NoSuchBucket") {
        return Err(TransportError::Other(
            "the bucket does not exist (create it, or fix the bucket in the URL)".into(),
        ));
    }
    Ok(None)
}

/// The HTTP client all backends share: one ureq agent (connection pool) with memo's
/// timeouts, trust and status handling. Requests are addressed by full URL; `what`
/// names the object in errors (a path, never a URL that may carry a signature).
pub(crate) struct Client {
    agent: Agent,
}

impl Client {
    /// An agent trusting the platform's roots, or only those in `ca_file`.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Client, UrlError> {
        let root_certs = match ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => load_ca_file(path)?,
        };
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(STALL_TIMEOUT))
            .timeout_per_write(Some(STALL_TIMEOUT))
            .user_agent(concat!("memo/", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(root_certs).build())
            .build();
        Ok(Client {
            agent: config.into(),
        })
    }

    /// Sends a request without a body (HEAD, GET, DELETE, MKCOL) within `budget`.
    fn send_empty(
        &self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
        what: &str,
        budget: Duration,
        headers: &[(&str, &str)],
    ) -> Result<ureq::http::Response<ureq::Body>, TransportError> {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(())
            .map_err(|e| TransportError::Other(format!("{method} {what}: {e}")))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(budget))
            .allow_non_standard_methods(true)
            .build();
        self.agent
            .run(request)
            .map_err(|e| map_error(e, url, budget))
    }

    /// The size of the object at `url`, `None` on 404.
    pub(crate) fn head(
        &self,
        url: &str,
        authorization: Option<&str>,
        what: &str,
    ) -> Result<Option<u64>, TransportError> {
        let response = self.send_empty("HEAD", url, authorization, what, request_budget(0), &[])?;
        match response.status().as_u16() {
            // Without a Content-Length the size is unknown: as good as absent to an
            // uploader, which then sends the object rather than trust it.
            200 | 204 => Ok(content_length(response.headers())),
            404 => Ok(None),
            status => Err(status_error(status, "HEAD", what)),
        }
    }

    /// Streams the object at `url` into `sink` (see `Backend::get`). With `accept_zstd`,
    /// asks for `Accept-Encoding: zstd`, and a body sent with `Content-Encoding: zstd`
    /// (zstd frames, skippable ones among them, as bazel-remote sends) is decompressed
    /// on its way to `sink`; `limit` then bounds the decompressed bytes.
    pub(crate) fn get(
        &self,
        url: &str,
        authorization: Option<&str>,
        what: &str,
        limit: u64,
        sink: &mut dyn Write,
        accept_zstd: bool,
    ) -> Result<Option<u64>, TransportError> {
        let started = Instant::now();
        let headers: &[(&str, &str)] = if accept_zstd {
            &[("Accept-Encoding", "zstd")]
        } else {
            &[]
        };
        let response = self.send_empty(
            "GET",
            url,
            authorization,
            what,
            request_budget(limit),
            headers,
        )?;
        match response.status().as_u16() {
            200 => {}
            404 => return missing(response),
            status => return Err(status_error(status, "GET", what)),
        }
        let is_zstd = accept_zstd
            && response
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("zstd"));
        let mut decoding = None;
        let sink: &mut dyn Write = if is_zstd {
            decoding.insert(ZstdSink::new(sink, limit))
        } else {
            sink
        };
        let expected = content_length(response.headers());
        if let Some(expected) = expected {
            if expected > limit {
                return Err(TransportError::TooLarge {
                    path: what.to_string(),
                    limit,
                });
            }
        }
        // The agent's budget was sized for `limit`; a body that announces its size gets
        // the (shorter) budget that size deserves.
        let budget = request_budget(expected.unwrap_or(limit));
        let mut body = response.into_body().into_reader();
        let mut buffer = vec![0u8; BUFFER_SIZE];
        let mut got: u64 = 0;
        loop {
            let n = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && expected.is_some() => {
                    return Err(truncated(what, got, expected));
                }
                Err(e) => return Err(map_error(ureq::Error::from(e), url, budget)),
            };
            got += n as u64;
            if got > limit {
                return Err(TransportError::TooLarge {
                    path: what.to_string(),
                    limit,
                });
            }
            sink.write_all(&buffer[..n])
                .map_err(|e| ZstdSink::error(e, what, limit))?;
            if started.elapsed() > budget {
                return Err(TransportError::Timeout(budget));
            }
        }
        if expected.is_some_and(|expected| got < expected) {
            return Err(truncated(what, got, expected));
        }
        sink.flush().map_err(TransportError::Local)?;
        match decoding {
            Some(decoding) => decoding.finish(what).map(Some),
            None => Ok(Some(got)),
        }
    }

    /// Uploads exactly `len` bytes from `body` with a Content-Length (see `Backend::put`),
    /// and `headers` besides.
    pub(crate) fn put(
        &self,
        url: &str,
        authorization: Option<&str>,
        what: &str,
        body: &mut dyn Read,
        len: u64,
        headers: &[(&str, String)],
    ) -> Result<(), TransportError> {
        let mut source = Source {
            inner: body,
            len,
            remaining: len,
            error: None,
        };
        // An explicit Content-Length makes ureq send the reader's bytes as they are
        // (`BodyMode::LengthDelimited`); without it a reader body goes chunked, which
        // bazel-remote refuses.
        let mut request = self
            .agent
            .put(url)
            .config()
            .timeout_global(Some(request_budget(len)))
            // The body may still sit in socket buffers when ureq starts waiting for the
            // answer: the wait grows with the size too.
            .timeout_recv_response(Some(RESPONSE_TIMEOUT + request_budget(len) - BASE_BUDGET))
            .build()
            .header("Content-Length", len.to_string())
            .header("Content-Type", "application/octet-stream");
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let result = request.send(ureq::SendBody::from_reader(&mut source));
        if let Some(error) = source.error.take() {
            return Err(TransportError::Local(error));
        }
        let response = result.map_err(|e| map_error(e, url, request_budget(len)))?;
        match response.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            status => Err(status_error(status, "PUT", what)),
        }
    }

    /// Creates the WebDAV collection at `url` (ending in `/`). One that exists already
    /// (405, or 301 to itself with a slash) is fine.
    pub(crate) fn mkcol(
        &self,
        url: &str,
        authorization: Option<&str>,
        what: &str,
    ) -> Result<(), TransportError> {
        let response =
            self.send_empty("MKCOL", url, authorization, what, request_budget(0), &[])?;
        match response.status().as_u16() {
            200 | 201 | 204 | 301 | 405 => Ok(()),
            status => Err(status_error(status, "MKCOL", what)),
        }
    }

    /// Removes the object at `url`: `Ok(false)` when the server does not allow it.
    /// An absent object counts as removed (404 here, as S3 answers 204 for one).
    pub(crate) fn delete(
        &self,
        url: &str,
        authorization: Option<&str>,
        what: &str,
    ) -> Result<bool, TransportError> {
        let response =
            self.send_empty("DELETE", url, authorization, what, request_budget(0), &[])?;
        match response.status().as_u16() {
            200 | 202 | 204 | 404 => Ok(true),
            405 | 501 => Ok(false),
            status => Err(status_error(status, "DELETE", what)),
        }
    }
}

/// A sink that decompresses a zstd body (any number of frames, skippable ones skipped)
/// into the download's sink, refusing more than `limit` decompressed bytes.
struct ZstdSink<'a> {
    inner: &'a mut dyn Write,
    decoder: zstd::stream::raw::Decoder<'static>,
    out: Vec<u8>,
    decoded: u64,
    limit: u64,
    /// What zstd said last: 0 once a frame is complete.
    hint: usize,
}

/// The error a sink's own failure carries, told apart from the decoder's.
#[derive(Debug)]
enum ZstdFault {
    TooLarge,
    Damaged(String),
}

impl std::fmt::Display for ZstdFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZstdFault::TooLarge => f.write_str("too large"),
            ZstdFault::Damaged(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ZstdFault {}

impl<'a> ZstdSink<'a> {
    fn new(inner: &'a mut dyn Write, limit: u64) -> ZstdSink<'a> {
        ZstdSink {
            inner,
            decoder: zstd::stream::raw::Decoder::new().expect("a zstd decoder"),
            out: vec![0u8; BUFFER_SIZE],
            decoded: 0,
            limit,
            hint: 1,
        }
    }

    /// The transport error for a failed write into the sink.
    fn error(e: io::Error, what: &str, limit: u64) -> TransportError {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ZstdFault>())
        {
            Some(ZstdFault::TooLarge) => TransportError::TooLarge {
                path: what.to_string(),
                limit,
            },
            Some(ZstdFault::Damaged(why)) => {
                TransportError::Other(format!("the zstd body of {what} is damaged ({why})"))
            }
            None => TransportError::Local(e),
        }
    }

    /// The decompressed length, once the body ended on a complete frame.
    fn finish(self, what: &str) -> Result<u64, TransportError> {
        if self.hint != 0 {
            return Err(TransportError::Other(format!(
                "the zstd body of {what} ends inside a frame"
            )));
        }
        Ok(self.decoded)
    }
}

impl Write for ZstdSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let mut input = InBuffer::around(buf);
        loop {
            let mut output = OutBuffer::around(&mut self.out[..]);
            self.hint = self
                .decoder
                .run(&mut input, &mut output)
                .map_err(|e| io::Error::other(ZstdFault::Damaged(e.to_string())))?;
            let n = output.pos();
            self.decoded += n as u64;
            if self.decoded > self.limit {
                return Err(io::Error::other(ZstdFault::TooLarge));
            }
            self.inner.write_all(&self.out[..n])?;
            if input.pos() == buf.len() && n < self.out.len() {
                return Ok(buf.len());
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The upload's source, cut at `len` bytes, remembering its own failures so they are
/// told apart from the socket's (local trouble, not the server's).
struct Source<'a> {
    inner: &'a mut dyn Read,
    len: u64,
    remaining: u64,
    error: Option<io::Error>,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let result = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(0) => {
                let message = format!(
                    "the upload's source ended after {} of {} bytes",
                    self.len - self.remaining,
                    self.len
                );
                self.error = Some(io::Error::new(io::ErrorKind::UnexpectedEof, message));
                Err(io::Error::other("upload source failed"))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                self.error = Some(e);
                Err(io::Error::other("upload source failed"))
            }
        }
    }
}

fn truncated(what: &str, got: u64, expected: Option<u64>) -> TransportError {
    TransportError::Truncated {
        path: what.to_string(),
        got,
        expected: expected.unwrap_or(got),
    }
}

fn status_error(status: u16, method: &'static str, what: &str) -> TransportError {
    TransportError::Status {
        status,
        method,
        path: what.to_string(),
    }
}

fn content_length(headers: &ureq::http::HeaderMap) -> Option<u64> {
    headers
        .get("content-length")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `host[:port]` of `url`, for messages (never its query, which may carry a signature).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Maps a ureq failure: unreachable hosts are `Connect`, expired timers `Timeout` (with
/// the limit that expired; `budget` is the request's whole budget).
fn map_error(error: ureq::Error, url: &str, budget: Duration) -> TransportError {
    use ureq::Timeout as Phase;
    match error {
        ureq::Error::Timeout(phase) => TransportError::Timeout(match phase {
            Phase::Resolve | Phase::Connect => CONNECT_TIMEOUT,
            Phase::RecvResponse => RESPONSE_TIMEOUT,
            Phase::PerRead | Phase::PerWrite => STALL_TIMEOUT,
            _ => budget,
        }),
        ureq::Error::HostNotFound => {
            TransportError::Connect(format!("{}: host not found", authority(url)))
        }
        ureq::Error::ConnectionFailed => TransportError::Connect(authority(url).to_string()),
        ureq::Error::Io(e) => match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable => {
                TransportError::Connect(format!("{}: {e}", authority(url)))
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                TransportError::Timeout(STALL_TIMEOUT)
            }
            // rustls reports a refused certificate (or any broken TLS record) as invalid
            // data wrapped in an io::Error; rustls is not a direct dependency to downcast to.
            io::ErrorKind::InvalidData if url.starts_with("https://") => {
                TransportError::Connect(format!("{}: tls: {e}", authority(url)))
            }
            _ => TransportError::Other(format!("talking to {}: {e}", authority(url))),
        },
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => {
            TransportError::Connect(format!("{}: tls: {error}", authority(url)))
        }
        other => TransportError::Other(format!("talking to {}: {other}", authority(url))),
    }
}

fn load_ca_file(path: &Path) -> Result<RootCerts, UrlError> {
    let pem = std::fs::read(path)
        .map_err(|e| UrlError(format!("cannot read the CA file {}: {e}", path.display())))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(_) => {}
            Err(e) => {
                return Err(UrlError(format!(
                    "the CA file {} is not valid PEM: {e}",
                    path.display()
                )))
            }
        }
    }
    if certificates.is_empty() {
        return Err(UrlError(format!(
            "the CA file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(RootCerts::new_with_certs(&certificates))
}

/// An HTTP cache at a base URL: objects at `{base}ac/<hex>` and `{base}cas/<hex>`.
pub struct HttpBackend {
    client: Client,
    /// Scheme, host, port and path prefix ending in `/`, without user info.
    base: String,
    /// The URL as given, its password masked.
    described: String,
    authorization: Option<String>,
    /// `MEMO_REMOTE_COMPRESSION=zstd`: objects may travel as zstd.
    compression: bool,
}

impl HttpBackend {
    /// Opens `url` (`http://` or `https://`), taking credentials and trust from `options`.
    pub fn open(url: &str, options: &Options) -> Result<HttpBackend, UrlError> {
        let described = super::backend::mask(url);
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .ok_or_else(|| UrlError(format!("{described} is not an http:// or https:// URL")))?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if path.contains(['?', '#']) {
            return Err(UrlError(format!(
                "remote URL {described} has a query or fragment; use http(s)://HOST[:PORT]/PATH"
            )));
        }
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        if host.is_empty() || host.starts_with(':') {
            return Err(UrlError(format!(
                "remote URL {described} has no host; use http(s)://HOST[:PORT]/PATH"
            )));
        }
        // The port, after an IPv6 literal's closing bracket if there is one.
        let after_ip = host.rfind(']').map_or(host, |i| &host[i..]);
        if let Some((_, port)) = after_ip.rsplit_once(':') {
            if !port.is_empty() && port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(UrlError(format!(
                    "remote URL {described} has port {port}, which is not a port (1 to 65535)"
                )));
            }
        }
        let basic = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Some((
                    percent_decode(user, &described)?,
                    percent_decode(password, &described)?,
                ))
            }
            None => options.auth.basic.clone(),
        };
        let authorization = match (basic, &options.auth.bearer) {
            (Some(_), Some(_)) => {
                return Err(UrlError(format!(
                    "remote {described} has both basic auth (user info or MEMO_REMOTE_USER) and a bearer token (MEMO_REMOTE_TOKEN); set only one"
                )))
            }
            (Some((user, password)), None) => Some(basic_authorization(&user, &password)),
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        let mut base = format!("{scheme}://{host}{path}");
        if !base.ends_with('/') {
            base.push('/');
        }
        if base.parse::<ureq::http::Uri>().is_err() {
            return Err(UrlError(format!(
                "remote URL {described} holds characters an HTTP request cannot carry (a space?); percent-encode them"
            )));
        }
        Ok(HttpBackend {
            client: Client::new(options.ca_file.as_deref())?,
            base,
            described,
            authorization,
            compression: options.compression,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path.trim_start_matches('/'))
    }
}

fn basic_authorization(user: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Decodes `%XX` escapes in a URL's user or password.
fn percent_decode(text: &str, described: &str) -> Result<String, UrlError> {
    let bad = || {
        UrlError(format!(
            "remote URL {described} has a bad %-escape in its user info"
        ))
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

impl Backend for HttpBackend {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn head(&self, path: &str) -> Result<Option<u64>, TransportError> {
        self.client
            .head(&self.url(path), self.authorization.as_deref(), path)
    }

    fn get(
        &self,
        path: &str,
        limit: u64,
        sink: &mut dyn Write,
    ) -> Result<Option<u64>, TransportError> {
        // Only objects: bazel-remote compresses `cas/`, never `ac/`.
        let accept_zstd = self.compression && path.starts_with("cas/");
        self.client.get(
            &self.url(path),
            self.authorization.as_deref(),
            path,
            limit,
            sink,
            accept_zstd,
        )
    }

    fn put(&self, path: &str, body: &mut dyn Read, len: u64) -> Result<(), TransportError> {
        self.client.put(
            &self.url(path),
            self.authorization.as_deref(),
            path,
            body,
            len,
            &[],
        )
    }

    fn put_zstd(
        &self,
        path: &str,
        body: &mut dyn Read,
        len: u64,
        raw_size: u64,
    ) -> Result<bool, TransportError> {
        if !self.compression {
            return Ok(false);
        }
        self.client
            .put(
                &self.url(path),
                self.authorization.as_deref(),
                path,
                body,
                len,
                &[
                    ("Content-Encoding", "zstd".to_string()),
                    ("X-Digest-SizeBytes", raw_size.to_string()),
                ],
            )
            .map(|()| true)
    }

    fn delete(&self, path: &str) -> Result<bool, TransportError> {
        self.client
            .delete(&self.url(path), self.authorization.as_deref(), path)
    }

    /// MKCOL of every collection from the base's first path segment down to the one
    /// `path` lies in (`ac/` or `cas/`); those that exist answer 405.
    fn make_parents(&self, path: &str) -> Result<(), TransportError> {
        let full = self.url(path);
        let Some(after_scheme) = full.find("://").map(|i| i + 3) else {
            return Ok(());
        };
        let Some(path_start) = full[after_scheme..].find('/').map(|i| i + after_scheme) else {
            return Ok(());
        };
        let mut collection = full[..path_start + 1].to_string();
        let dirs: Vec<&str> = full[path_start + 1..].split('/').collect();
        // Every segment but the last (the object's own name).
        for dir in &dirs[..dirs.len().saturating_sub(1)] {
            if dir.is_empty() {
                continue;
            }
            collection.push_str(dir);
            collection.push('/');
            self.client
                .mkcol(&collection, self.authorization.as_deref(), &collection)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::backend::Auth;

    /// bazel-remote's zstd download: a skippable frame, then one frame per MiB.
    fn bazel_remote_body(raw: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        body.extend_from_slice(&8u32.to_le_bytes());
        body.extend_from_slice(&[7u8; 8]);
        for chunk in raw.chunks(1 << 20) {
            body.extend(zstd::bulk::compress(chunk, 1).unwrap());
        }
        body
    }

    fn decode(body: &[u8], limit: u64, piece: usize) -> Result<Vec<u8>, TransportError> {
        let mut out = Vec::new();
        let mut sink = ZstdSink::new(&mut out, limit);
        for part in body.chunks(piece) {
            sink.write_all(part)
                .map_err(|e| ZstdSink::error(e, "cas/x", limit))?;
        }
        sink.finish("cas/x")?;
        Ok(out)
    }

    #[test]
    fn a_zstd_download_in_bazel_remotes_form_is_decompressed_whole() {
        let raw: Vec<u8> = (0..3 * (1 << 20) + 12345u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let body = bazel_remote_body(&raw);
        // Whatever pieces the body arrives in.
        for piece in [1 << 16, 7, body.len()] {
            assert_eq!(decode(&body, raw.len() as u64, piece).unwrap(), raw);
        }
    }

    #[test]
    fn a_zstd_download_cut_short_damaged_or_too_large_fails() {
        let raw = vec![b'x'; 2 << 20];
        let body = bazel_remote_body(&raw);
        let cut = decode(&body[..body.len() - 3], raw.len() as u64, 4096);
        assert!(
            matches!(cut, Err(TransportError::Other(ref m)) if m.contains("ends inside a frame")),
            "{cut:?}"
        );
        let mut damaged = body.clone();
        let last = damaged.len() - 10;
        damaged[last] ^= 0xff;
        assert!(decode(&damaged, raw.len() as u64, 4096).is_err());
        let big = decode(&body, raw.len() as u64 - 1, 4096);
        assert!(
            matches!(big, Err(TransportError::TooLarge { .. })),
            "{big:?}"
        );
    }

    fn open(url: &str) -> Result<HttpBackend, UrlError> {
        HttpBackend::open(url, &Options::default())
    }

    #[test]
    fn base_keeps_the_path_prefix_and_ends_in_a_slash() {
        assert_eq!(open("http://h:8080").unwrap().base, "http://h:8080/");
        assert_eq!(open("http://h/cache").unwrap().base, "http://h/cache/");
        assert_eq!(open("https://h/a/b/").unwrap().base, "https://h/a/b/");
        assert_eq!(
            open("http://h/cache").unwrap().url("ac/00ff"),
            "http://h/cache/ac/00ff"
        );
    }

    #[test]
    fn user_info_becomes_basic_auth_and_leaves_the_base() {
        let backend = open("http://us%40er:p%3Ass@h/c").unwrap();
        assert_eq!(backend.base, "http://h/c/");
        assert_eq!(
            backend.authorization.as_deref(),
            Some(basic_authorization("us@er", "p:ss").as_str())
        );
        assert_eq!(backend.describe(), "http://us%40er:***@h/c");
    }

    #[test]
    fn user_info_wins_over_the_options_basic_auth() {
        let options = Options {
            auth: Auth {
                basic: Some(("other".into(), "x".into())),
                bearer: None,
            },
            ca_file: None,
            compression: false,
        };
        let backend = HttpBackend::open("http://u:p@h/", &options).unwrap();
        assert_eq!(
            backend.authorization.as_deref(),
            Some(basic_authorization("u", "p").as_str())
        );
    }

    #[test]
    fn basic_auth_and_a_token_together_are_refused() {
        let options = Options {
            auth: Auth {
                basic: None,
                bearer: Some("t".into()),
            },
            ca_file: None,
            compression: false,
        };
        let err = HttpBackend::open("http://u:p@h/", &options).err().unwrap();
        assert!(err.0.contains("MEMO_REMOTE_TOKEN"), "{err}");
        assert!(!err.0.contains(":p@"), "password leaked: {err}");
    }

    #[test]
    fn basic_auth_header_is_rfc7617() {
        assert_eq!(
            basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn urls_without_a_host_or_with_a_query_are_refused() {
        assert!(open("http:///cache").is_err());
        assert!(open("http://:80/cache").is_err());
        assert!(open("http://h/cache?x=1").is_err());
        assert!(open("http://h%zz:p@h/").is_err());
    }

    #[test]
    fn budget_grows_with_size_at_one_mebibyte_a_second() {
        assert_eq!(request_budget(0), Duration::from_secs(10));
        assert_eq!(request_budget(64 << 20), Duration::from_secs(74));
        assert_eq!(request_budget(u64::MAX), MAX_BUDGET);
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let err = Client::new(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .unwrap();
        assert!(err.0.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn authority_never_shows_user_info_or_query() {
        assert_eq!(authority("https://u:p@h:9/x?X-Amz-Signature=1"), "h:9");
        assert_eq!(authority("http://h"), "h");
    }
}
