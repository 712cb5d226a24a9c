//! The S3 transport: an S3-compatible bucket (`s3://BUCKET/PREFIX`) holding objects at
//! `PREFIX/ac/<hex>` and `PREFIX/cas/<hex>`. Each request is a SigV4 presigned URL
//! (rusty-s3, path-style) sent through the same HTTP client as the HTTP backend, so
//! timeouts, streaming and status mapping are those of `http::Client`.
//!
//! Credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optional)
//! `AWS_SESSION_TOKEN`; the region from `AWS_REGION`, else `AWS_DEFAULT_REGION`, else
//! `us-east-1`; the endpoint from `AWS_ENDPOINT_URL`, else `https://s3.<region>.amazonaws.com`.
//! Only the environment is read: no profiles, no instance metadata.

use std::io::{Read, Write};
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::backend::{Backend, Options, TransportError, UrlError};
use super::http::{request_budget, Client};

/// A presigned URL is valid this long past the request's own budget: the signature must
/// outlive the slowest transfer the budget allows (S3 checks it when the request starts,
/// but a little slack covers clock skew).
const SIGNATURE_SLACK: Duration = Duration::from_secs(300);

/// An S3 bucket (or a prefix in one).
pub struct S3Backend {
    client: Client,
    bucket: Bucket,
    credentials: Credentials,
    /// Object key prefix with its trailing `/`, or empty.
    prefix: String,
    described: String,
}

impl S3Backend {
    /// Opens `s3://BUCKET/PREFIX` with settings from the process environment.
    pub fn open(url: &str, options: &Options) -> Result<S3Backend, UrlError> {
        S3Backend::open_with_env(url, options, &|name| std::env::var(name).ok())
    }

    /// Opens `s3://BUCKET/PREFIX` with the `AWS_*` settings `env` returns (tests pass
    /// their own rather than change the process's environment).
    pub fn open_with_env(
        url: &str,
        options: &Options,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Backend, UrlError> {
        let described = super::backend::mask(url);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| UrlError(format!("{described} is not an s3:// URL")))?;
        let (bucket_name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket_name.is_empty() {
            return Err(UrlError(format!(
                "remote URL {described} names no bucket; use s3://BUCKET or s3://BUCKET/PREFIX"
            )));
        }
        if bucket_name.contains(['@', ':', '?', '#']) || prefix.contains(['?', '#']) {
            return Err(UrlError(format!(
                "remote URL {described} is not of the form s3://BUCKET/PREFIX (credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };

        let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (
            non_empty("AWS_ACCESS_KEY_ID"),
            non_empty("AWS_SECRET_ACCESS_KEY"),
        ) else {
            return Err(UrlError(format!(
                "remote {described} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )));
        };
        let credentials = match non_empty("AWS_SESSION_TOKEN") {
            Some(token) => Credentials::new_with_token(key, secret, token),
            None => Credentials::new(key, secret),
        };
        let region = non_empty("AWS_REGION")
            .or_else(|| non_empty("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let endpoint_text = non_empty("AWS_ENDPOINT_URL")
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = endpoint_text.parse().map_err(|e| {
            UrlError(format!(
                "AWS_ENDPOINT_URL {endpoint_text} is not a URL: {e}"
            ))
        })?;
        let bucket = Bucket::new(endpoint, UrlStyle::Path, bucket_name.to_string(), region)
            .map_err(|e| {
                UrlError(format!(
                    "cannot use bucket {bucket_name} at {endpoint_text}: {e}"
                ))
            })?;
        Ok(S3Backend {
            client: Client::new(options.ca_file.as_deref())?,
            bucket,
            credentials,
            prefix,
            described,
        })
    }

    fn key(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path.trim_start_matches('/'))
    }

    fn validity(len: u64) -> Duration {
        request_budget(len) + SIGNATURE_SLACK
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn head(&self, path: &str) -> Result<Option<u64>, TransportError> {
        let key = self.key(path);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(Self::validity(0));
        self.client.head(url.as_str(), None, path)
    }

    fn get(
        &self,
        path: &str,
        limit: u64,
        sink: &mut dyn Write,
    ) -> Result<Option<u64>, TransportError> {
        let key = self.key(path);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(Self::validity(limit));
        self.client
            .get(url.as_str(), None, path, limit, sink, false)
    }

    fn put(&self, path: &str, body: &mut dyn Read, len: u64) -> Result<(), TransportError> {
        let key = self.key(path);
        let url = self
            .bucket
            .put_object(Some(&self.credentials), &key)
            .sign(Self::validity(len));
        self.client.put(url.as_str(), None, path, body, len, &[])
    }

    fn delete(&self, path: &str) -> Result<bool, TransportError> {
        let key = self.key(path);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(Self::validity(0));
        self.client.delete(url.as_str(), None, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    const KEYS: &[(&str, &str)] = &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")];

    fn open(url: &str, env: &[(&str, &str)]) -> Result<S3Backend, UrlError> {
        S3Backend::open_with_env(url, &Options::default(), &env_with(env))
    }

    #[test]
    fn prefix_is_joined_with_one_slash() {
        assert_eq!(open("s3://b", KEYS).unwrap().key("ac/01"), "ac/01");
        assert_eq!(open("s3://b/", KEYS).unwrap().key("ac/01"), "ac/01");
        assert_eq!(
            open("s3://b/p/q/", KEYS).unwrap().key("cas/01"),
            "p/q/cas/01"
        );
    }

    #[test]
    fn default_endpoint_is_the_regions_path_style() {
        let backend = open("s3://b/p", KEYS).unwrap();
        assert_eq!(
            backend.bucket.base_url().as_str(),
            "https://s3.us-east-1.amazonaws.com/b/"
        );
        let mut env = KEYS.to_vec();
        env.push(("AWS_DEFAULT_REGION", "eu-west-3"));
        let backend = open("s3://b/p", &env).unwrap();
        assert_eq!(backend.bucket.region(), "eu-west-3");
        env.push(("AWS_REGION", "ap-south-1"));
        env.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"));
        let backend = open("s3://b/p", &env).unwrap();
        assert_eq!(backend.bucket.region(), "ap-south-1");
        assert_eq!(
            backend.bucket.base_url().as_str(),
            "http://127.0.0.1:9000/b/"
        );
    }

    #[test]
    fn missing_keys_name_the_variables() {
        let err = open("s3://b/p", &[("AWS_ACCESS_KEY_ID", "a")])
            .err()
            .unwrap();
        assert!(err.0.contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(err.0.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    }

    #[test]
    fn a_url_without_a_bucket_is_refused() {
        let err = open("s3:///p", KEYS).err().unwrap();
        assert!(err.0.contains("s3://BUCKET"), "{err}");
        assert!(open("s3://", KEYS).is_err());
        assert!(open("s3://k:s@b/p", KEYS).is_err());
    }

    #[test]
    fn presigned_urls_carry_a_signature_and_the_token() {
        let mut env = KEYS.to_vec();
        env.push(("AWS_SESSION_TOKEN", "tok"));
        let backend = open("s3://b/p", &env).unwrap();
        let url = backend
            .bucket
            .put_object(Some(&backend.credentials), &backend.key("cas/ab"))
            .sign(Duration::from_secs(60));
        let url = url.as_str();
        assert!(
            url.starts_with("https://s3.us-east-1.amazonaws.com/b/p/cas/ab?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
        assert!(url.contains("X-Amz-Security-Token=tok"), "{url}");
    }
}
