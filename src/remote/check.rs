//! `memo remote check`: a probe object written, read and deleted, each step timed, so
//! that a silent 100 % miss rate is found in one command.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use super::backend::TransportError;
use super::Remote;
use crate::digest::Digest;

/// What `memo remote check` found: each step, and what to do about a failure.
pub struct CheckReport {
    pub steps: Vec<CheckStep>,
    /// The likely fix, from the first failure.
    pub hint: Option<String>,
}

/// The likely fix for a failed step.
fn hint_for(e: &TransportError) -> Option<String> {
    Some(match e {
        TransportError::Status { status: 401 | 403, .. } => "the server refused these credentials: set MEMO_REMOTE_USER and MEMO_REMOTE_PASSWORD, or MEMO_REMOTE_TOKEN (the AWS_* variables for s3://); a machine that may only read sets MEMO_REMOTE_MODE=read-only".into(),
        TransportError::Status { status: 404, method: "PUT", .. } => "the server has no place at this URL: check its path (for s3://, that the bucket exists)".into(),
        TransportError::Status { status: 405 | 501, method: "PUT", .. } => "the server does not take PUT here: enable it (nginx: dav_methods PUT; create_full_put_path on)".into(),
        TransportError::Status { status: 413, .. } => "the server refuses bodies this large: raise its limit (nginx: client_max_body_size 0)".into(),
        TransportError::Connect(_) | TransportError::Timeout(_) => "is the server running, and are the URL's host and port right?".into(),
        _ => return None,
    })
}

/// One step of `memo remote check`.
pub struct CheckStep {
    pub name: &'static str,
    pub result: Result<Duration, String>,
    /// Said beside a success (a server that refuses DELETE).
    pub note: Option<&'static str>,
}

impl Remote {
    /// `memo remote check`: writes, reads and deletes a probe object (in read-only
    /// mode, only reads), timing each step. Ignores the breaker, and closes it when the
    /// server answers, even with an error status.
    pub fn check(&self) -> CheckReport {
        let probe = format!(
            "memo remote check {} {}",
            std::process::id(),
            crate::events::now_ms()
        )
        .into_bytes();
        let len = probe.len() as u64;
        let path = format!("cas/{}", Digest::of_bytes(&probe).to_hex());
        let answered = Cell::new(false);
        let hint = std::cell::RefCell::new(None);
        // Notes whether the server answered and the fix for the first failure, and
        // words the failure.
        let heard = |e: TransportError| {
            if matches!(e, TransportError::Status { .. }) {
                answered.set(true);
            }
            if hint.borrow().is_none() {
                *hint.borrow_mut() = hint_for(&e);
            }
            e.to_string()
        };
        let ok = || answered.set(true);
        let timed = |name: &'static str, f: &mut dyn FnMut() -> Result<(), String>| {
            let started = Instant::now();
            CheckStep {
                name,
                result: f().map(|()| started.elapsed()),
                note: None,
            }
        };
        let mut steps = Vec::new();
        if !self.writes() {
            steps.push(timed(
                "get (a missing object)",
                &mut || match self.backend.get(&path, 1024, &mut io::sink()) {
                    Ok(None) => {
                        ok();
                        Ok(())
                    }
                    Ok(Some(_)) => {
                        ok();
                        Err("the server returned bytes for an object nobody wrote".into())
                    }
                    Err(e) => Err(heard(e)),
                },
            ));
        } else {
            steps.push(timed("put", &mut || {
                self.backend
                    .put(&path, &mut probe.as_slice(), len)
                    .map(|()| ok())
                    .map_err(heard)
            }));
            if steps[0].result.is_err() {
                // Nothing was written: the reads would only fail after it.
                return self.report(steps, answered.get(), hint.into_inner());
            }
            steps.push(timed("head", &mut || {
                let found = self.backend.head(&path).map_err(heard)?;
                ok();
                match found {
                    Some(size) if size == len => Ok(()),
                    Some(size) => Err(format!("size {size}, expected {len}")),
                    None => {
                        Err("the object just written is not there, or HEAD gives no size".into())
                    }
                }
            }));
            steps.push(timed("get", &mut || {
                let mut got = Vec::new();
                let found = self.backend.get(&path, len, &mut got).map_err(heard)?;
                ok();
                match found {
                    Some(_) if got == probe => Ok(()),
                    Some(_) => Err("the bytes read back differ from the ones written".into()),
                    None => Err("the object just written is not there".into()),
                }
            }));
            let mut refused = false;
            let mut step = timed("delete", &mut || match self.backend.delete(&path) {
                Ok(deleted) => {
                    ok();
                    refused = !deleted;
                    Ok(())
                }
                // Credentials that may not delete (S3 without DeleteObject): memo never
                // deletes from the server, so this is no failure.
                Err(TransportError::Status { status: 403, .. }) => {
                    ok();
                    refused = true;
                    Ok(())
                }
                Err(e) => Err(heard(e)),
            });
            if refused {
                // bazel-remote refuses DELETE (405), and least-privilege S3 credentials
                // may not delete (403): such servers evict on their own.
                step.note =
                    Some("deleting is not allowed here: fine, memo never deletes from the server");
            }
            steps.push(step);
        }
        self.report(steps, answered.get(), hint.into_inner())
    }

    fn report(&self, steps: Vec<CheckStep>, answered: bool, hint: Option<String>) -> CheckReport {
        if answered {
            self.breaker.success();
        }
        CheckReport { steps, hint }
    }
}
