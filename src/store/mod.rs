//! Where results live: a small trait over entries (one per key) and content-addressed
//! objects (one per SHA-256), so that a shared remote tier can slot in beside the local
//! directory without reshaping the rest.
//!
//! The store knows bytes and digests, not commands: what an entry means is `index`'s
//! business, what a key is `key`'s.

pub mod compression;
mod in_order;
pub mod local;
pub mod packs;

use std::fs::File;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("object {digest} is corrupt (its contents do not match its digest); it was removed")]
    CorruptObject { digest: String },
    #[error("{} is not a regular file (a FIFO, socket or device in the cache); it was removed", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} is larger than any entry memo writes; it was removed", path.display())]
    OversizedEntry { path: PathBuf },
    #[error("the record of entry {key} in its pack is damaged; it was removed")]
    DamagedEntry { key: String },
    #[error("object {digest} is missing from the store")]
    MissingObject { digest: String },
}

impl StoreError {
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> StoreError {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub trait Store {
    /// The raw bytes of the entry stored under `key`, if any.
    fn get_entry(&self, key: &Digest) -> Result<Option<Vec<u8>>, StoreError>;
    /// Atomically replaces the entry under `key`: a reader sees the old bytes or the new.
    /// Returns the size of the entry it replaced, if any.
    fn put_entry(&self, key: &Digest, bytes: &[u8]) -> Result<Option<u64>, StoreError>;
    fn remove_entry(&self, key: &Digest) -> Result<(), StoreError>;
    /// A temporary file to write an object into before `put_object`.
    fn stage(&self) -> Result<NamedTempFile, StoreError>;
    /// Adds a staged file whose contents hash to `digest`. Returns the bytes the object
    /// takes in the store (compressed, if it was) when it is new there, `None` when the
    /// same bytes were there already.
    fn put_object(&self, digest: &Digest, staged: NamedTempFile)
        -> Result<Option<u64>, StoreError>;
    /// Opens the object named `digest`, positioned at the start of its raw bytes, after
    /// checking that it holds `size` raw bytes and that they hash to `digest`. A corrupt
    /// object is removed and reported as such (one of an impossible size before a byte
    /// of it is read).
    fn open_object(&self, digest: &Digest, size: u64) -> Result<Object, StoreError>;
}

/// A verified object, open for reading its raw bytes.
pub enum Object {
    /// Stored as they are: a concrete file, so that copying it can use the kernel's
    /// zero-copy paths.
    Raw(File),
    /// Stored as zstd frames, decompressed as it is read.
    Compressed(Box<compression::Decoder>),
}

impl std::io::Read for Object {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Object::Raw(file) => file.read(buf),
            Object::Compressed(decoder) => decoder.read(buf),
        }
    }
}

/// Only back to the start, for a compressed object (a body sent again).
impl std::io::Seek for Object {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match self {
            Object::Raw(file) => file.seek(to),
            Object::Compressed(_) if to != std::io::SeekFrom::Start(0) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "seek in a compressed object",
            )),
            Object::Compressed(decoder) => {
                let file = decoder.file().try_clone()?;
                **decoder = compression::decoder(file)?;
                Ok(0)
            }
        }
    }
}
