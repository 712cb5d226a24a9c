//! The shared tier: a cache on a storage server a team already runs, behind the local
//! one. Owns the remote settings (URL, mode, namespaces, signing key), fetching a result
//! into the local store, uploading one from it, and the queue of pending uploads.

pub mod backend;
pub mod breaker;
pub mod envelope;
pub mod http;
pub mod proto;
pub mod s3;
