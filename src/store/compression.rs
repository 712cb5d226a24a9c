//! How an object's bytes sit in its file: as they are, or as one zstd frame of them.
//!
//! Owns the choice, made per object as ccache and bazel-remote make it (the first block
//! is compressed as a trial: one that does not shrink leaves the object raw), the writing
//! of a compressed copy, and telling the two kinds apart on read. It knows nothing of
//! where objects live (`local`) or what names them: an object is named by the SHA-256 of
//! its raw bytes whichever way it is stored, and is verified against that.
//!
//! The two kinds need no marker: a compressed object is kept only when its file is
//! smaller than the raw bytes, so a file of exactly the recorded size is raw, and a
//! smaller one that starts with zstd's magic number is compressed. Anything else is
//! damage (docs/format.md, "Compressed objects").

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use crate::digest::Digest;

/// The first four bytes of every zstd frame (RFC 8878).
pub const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The block tried before compressing a whole object.
const TRIAL_BLOCK: usize = 128 * 1024;
/// zstd's level 1, as ccache's default: a miss pays little for it, and decompression
/// runs at the same speed whatever the level.
const LEVEL: i32 = 1;
/// The buffers a whole object is compressed and decompressed through.
pub const BUFFER: usize = 1 << 20;

/// Debug builds (the tests of damage to raw bytes) may store every object raw with
/// `MEMO_DEBUG_STORE_RAW=1`.
fn is_disabled() -> bool {
    cfg!(debug_assertions) && std::env::var_os("MEMO_DEBUG_STORE_RAW").is_some_and(|v| v == "1")
}

/// Whether the raw object in `file` is worth compressing: its first block shrinks to at
/// most nine tenths. Objects smaller than one file system block gain nothing.
pub fn is_worth_compressing(file: &File, size: u64) -> io::Result<bool> {
    if size < 4096 || is_disabled() {
        return Ok(false);
    }
    let mut block = vec![0u8; TRIAL_BLOCK.min(size as usize)];
    let mut filled = 0;
    while filled < block.len() {
        match file.read_at(&mut block[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    block.truncate(filled);
    let compressed = zstd::bulk::compress(&block, LEVEL)?;
    Ok(compressed.len() * 10 <= block.len() * 9)
}

/// Writes one zstd frame of the `size` raw bytes of `source` (read from its start) to
/// `dest`. Returns the frame's length, or `None` as soon as it would not be smaller than
/// the raw bytes (then the object stays raw, and `dest` holds nothing of use).
pub fn compress(source: &File, size: u64, dest: &mut File) -> io::Result<Option<u64>> {
    let mut reader = source;
    reader.seek(SeekFrom::Start(0))?;
    let mut encoder = zstd::stream::write::Encoder::new(Counted::new(dest, size), LEVEL)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(size))?;
    let mut buf = vec![0u8; BUFFER];
    let mut read = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        read += n as u64;
        match encoder.write_all(&buf[..n]) {
            Err(e) if e.kind() == io::ErrorKind::FileTooLarge => return Ok(None),
            other => other?,
        }
    }
    if read != size {
        return Err(io::Error::other(format!(
            "the object changed while it was compressed ({read} bytes, not {size})"
        )));
    }
    match encoder.finish() {
        Ok(counted) => Ok(Some(counted.written)),
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => Ok(None),
        Err(e) => Err(e),
    }
}

/// A writer that refuses (with `FileTooLarge`) to grow to the raw size or past it.
struct Counted<'a> {
    inner: &'a mut File,
    written: u64,
    limit: u64,
}

impl<'a> Counted<'a> {
    fn new(inner: &'a mut File, raw_size: u64) -> Counted<'a> {
        Counted {
            inner,
            written: 0,
            limit: raw_size,
        }
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 >= self.limit {
            return Err(io::ErrorKind::FileTooLarge.into());
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How an object's file holds its `size` raw bytes, told from its length and first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Raw,
    Compressed,
    /// Neither: a truncated or overwritten file.
    Damaged,
}

/// The layout of the object file `file`, `len` bytes long, that should hold `size` raw
/// bytes. Reads its first four bytes at most.
pub fn layout_of(file: &File, len: u64, size: u64) -> io::Result<Layout> {
    if len == size {
        return Ok(Layout::Raw);
    }
    if len > size || len < MAGIC.len() as u64 {
        return Ok(Layout::Damaged);
    }
    let mut head = [0u8; 4];
    file.read_exact_at(&mut head, 0)?;
    Ok(if head == MAGIC {
        Layout::Compressed
    } else {
        Layout::Damaged
    })
}

/// A stream of an object's raw bytes out of its compressed file, positioned at its start.
pub type Decoder = zstd::stream::read::Decoder<'static, BufReader<File>>;

/// A decoder of the compressed object `file` from its start. Exactly one frame is read:
/// anything after it is damage, reported as an error by the reads.
pub fn decoder(mut file: File) -> io::Result<Decoder> {
    file.seek(SeekFrom::Start(0))?;
    let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        zstd::zstd_safe::DCtx::in_size().max(128 * 1024),
        file,
    ))?;
    Ok(decoder.single_frame())
}

/// Decompresses the compressed object `file` in full, advancing `progress`, and returns
/// the digest and length of its raw bytes, or the error met (a damaged frame, a failed
/// checksum). Bytes after the frame count as damage.
pub fn digest_compressed(
    file: &File,
    progress: &mut crate::progress::Progress,
) -> io::Result<(Digest, u64)> {
    let mut decoder = decoder(file.try_clone()?)?;
    let found = Digest::of_reader(progress.reader(&mut decoder))?;
    // The frame ended: nothing may follow it in the file.
    let mut rest = decoder.finish();
    let mut byte = [0u8; 1];
    if rest.read(&mut byte)? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after the compressed frame",
        ));
    }
    Ok(found)
}

/// What the digest cache remembers for a compressed object file that was verified to
/// hold the raw bytes named `raw`: not `raw` itself, which a lookup of the file as an
/// input would take for the SHA-256 of the file's own bytes.
pub fn verified_tag(raw: &Digest) -> Digest {
    let mut tagged = b"memo: zstd object holding ".to_vec();
    tagged.extend_from_slice(&raw.0);
    Digest::of_bytes(&tagged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    fn unmeasured() -> crate::progress::Progress {
        crate::progress::Progress::new(0, "hashing")
    }

    #[test]
    fn compressible_bytes_round_trip_through_one_frame() {
        let raw = b"memo\n".repeat(100_000);
        let source = file_with(&raw);
        assert!(is_worth_compressing(&source, raw.len() as u64).unwrap());
        let mut dest = tempfile::tempfile().unwrap();
        let len = compress(&source, raw.len() as u64, &mut dest)
            .unwrap()
            .unwrap();
        assert!(len < raw.len() as u64 / 100);
        assert_eq!(
            layout_of(&dest, len, raw.len() as u64).unwrap(),
            Layout::Compressed
        );
        let (digest, size) = digest_compressed(&dest, &mut unmeasured()).unwrap();
        assert_eq!((digest, size), (Digest::of_bytes(&raw), raw.len() as u64));
        let mut back = Vec::new();
        decoder(dest).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn random_bytes_are_not_worth_compressing_and_never_grow() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let raw: Vec<u8> = (0..300_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let source = file_with(&raw);
        assert!(!is_worth_compressing(&source, raw.len() as u64).unwrap());
        let mut dest = tempfile::tempfile().unwrap();
        assert_eq!(
            compress(&source, raw.len() as u64, &mut dest).unwrap(),
            None
        );
    }

    #[test]
    fn a_truncated_or_extended_frame_is_an_error() {
        let raw = b"abc".repeat(50_000);
        let source = file_with(&raw);
        let mut dest = tempfile::tempfile().unwrap();
        let len = compress(&source, raw.len() as u64, &mut dest)
            .unwrap()
            .unwrap();
        let mut frame = vec![0u8; len as usize];
        dest.read_exact_at(&mut frame, 0).unwrap();
        let truncated = file_with(&frame[..frame.len() - 3]);
        assert!(digest_compressed(&truncated, &mut unmeasured()).is_err());
        let mut longer = frame.clone();
        longer.extend_from_slice(b"x");
        assert!(digest_compressed(&file_with(&longer), &mut unmeasured()).is_err());
    }

    #[test]
    fn layout_is_told_by_length_and_magic() {
        let raw = file_with(b"\x28\xB5\x2F\xFDxxxx");
        assert_eq!(layout_of(&raw, 8, 8).unwrap(), Layout::Raw);
        assert_eq!(layout_of(&raw, 8, 100).unwrap(), Layout::Compressed);
        let other = file_with(b"plain text");
        assert_eq!(layout_of(&other, 10, 100).unwrap(), Layout::Damaged);
        assert_eq!(layout_of(&other, 10, 5).unwrap(), Layout::Damaged);
    }
}
