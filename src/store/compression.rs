//! How an object's bytes sit in its file: as they are, or as a sequence of zstd frames
//! of them, one for each MiB.
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
//!
//! Independent frames of 1 MiB are compressed and decompressed on both cores, each
//! written in turn (`in_order`), and any zstd decoder reads the sequence as one stream.
//! An object written as one frame (by memo before frames) is still read, as a stream.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use zstd::zstd_safe;

use super::in_order;
use crate::digest::Digest;

/// The first four bytes of every zstd frame (RFC 8878).
pub const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// The block tried before compressing a whole object.
const TRIAL_BLOCK: usize = 128 * 1024;
/// zstd's level 1, as ccache's default: a miss pays little for it, and decompression
/// runs at about the same speed whatever the level.
const LEVEL: i32 = 1;
/// The raw bytes in each frame but the last: a frame is decompressed whole into a
/// buffer of this size, which a pipe then takes in one write.
pub const FRAME: usize = 1 << 20;
/// The buffers an object in one frame (written before frames) is decompressed through.
pub const BUFFER: usize = 1 << 20;
/// The longest frame header (zstd's `ZSTD_FRAMEHEADERSIZE_MAX`).
const FRAME_HEADER_MAX: usize = 18;

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

/// Writes the `size` raw bytes of `source` to `dest` as zstd frames of `FRAME` raw bytes
/// each (the last shorter), each with its content size and checksum. Returns the
/// length written, or `None` as soon as it would not be smaller than the raw bytes
/// (then the object stays raw, and `dest` holds nothing of use).
pub fn compress(source: &File, size: u64, dest: &mut File) -> io::Result<Option<u64>> {
    let threads = if size > FRAME as u64 {
        in_order::thread_count()
    } else {
        1
    };
    struct Worker {
        context: zstd::bulk::Compressor<'static>,
        offset: u64,
        raw: Vec<u8>,
        frame: Vec<u8>,
    }
    let mut written = 0u64;
    let result = in_order::run(
        threads,
        0u64,
        (&mut *dest, &mut written),
        || {
            let mut context = zstd::bulk::Compressor::new(LEVEL)?;
            context.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
            context.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
            Ok(Worker {
                context,
                offset: 0,
                raw: vec![0; FRAME],
                frame: Vec::with_capacity(zstd_safe::compress_bound(FRAME)),
            })
        },
        |next, worker| {
            if *next >= size {
                return Ok(false);
            }
            worker.offset = *next;
            let len = (size - *next).min(FRAME as u64) as usize;
            worker.raw.resize(len, 0);
            *next += len as u64;
            Ok(true)
        },
        |worker| {
            source
                .read_exact_at(&mut worker.raw, worker.offset)
                .map_err(|e| changed_while_compressed(e, size))?;
            worker
                .context
                .compress_to_buffer(&worker.raw[..], &mut worker.frame)?;
            Ok(())
        },
        |(dest, written), worker| {
            if **written + worker.frame.len() as u64 >= size {
                return Err(io::ErrorKind::FileTooLarge.into());
            }
            dest.write_all(&worker.frame)?;
            **written += worker.frame.len() as u64;
            Ok(())
        },
    );
    match result {
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => return Ok(None),
        other => other?,
    }
    // Nothing may follow the bytes compressed.
    if source.read_at(&mut [0u8; 1], size)? != 0 {
        return Err(changed_while_compressed(
            io::ErrorKind::InvalidData.into(),
            size,
        ));
    }
    Ok(Some(written))
}

fn changed_while_compressed(error: io::Error, size: u64) -> io::Error {
    match error.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => io::Error::other(format!(
            "the object changed while it was compressed (not {size} bytes)"
        )),
        _ => error,
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

fn damaged(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("damaged compressed object: {why}"),
    )
}

/// A stream of an object's raw bytes out of its compressed file, from its start.
pub struct Decoder {
    file: File,
    inner: Inner,
}

enum Inner {
    /// Frames of at most `FRAME` raw bytes, each decompressed whole.
    Frames {
        frames: FrameReader,
        /// Whether the first frame is a whole `FRAME`: then more may follow, worth a
        /// second thread.
        is_long: bool,
        worker: FrameWorker,
        /// How much of `worker.raw` was read already.
        read: usize,
    },
    /// One frame of the whole object, as memo wrote before frames.
    Single(Box<zstd::stream::read::Decoder<'static, BufReader<File>>>),
}

/// A decoder of the compressed object `file` from its start.
pub fn decoder(file: File) -> io::Result<Decoder> {
    let mut head = [0u8; FRAME_HEADER_MAX];
    let mut filled = 0;
    while filled < head.len() {
        match file.read_at(&mut head[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let inner = match zstd_safe::get_frame_content_size(&head[..filled]) {
        Ok(Some(first)) if first <= FRAME as u64 => Inner::Frames {
            frames: FrameReader::new(file.try_clone()?)?,
            is_long: first == FRAME as u64,
            worker: FrameWorker::new()?,
            read: 0,
        },
        // Anything else is read as one frame, which reports damage as it finds it.
        _ => {
            let mut file = file.try_clone()?;
            file.seek(SeekFrom::Start(0))?;
            let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                zstd::zstd_safe::DCtx::in_size().max(128 * 1024),
                file,
            ))?;
            Inner::Single(Box::new(decoder.single_frame()))
        }
    };
    Ok(Decoder { file, inner })
}

impl Decoder {
    /// The compressed file, as it is stored.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Writes the rest of the raw bytes to `dest`, each frame in one write, decompressing
    /// the next frame on a second thread meanwhile. Returns how many bytes were written.
    pub fn copy_to(&mut self, dest: &mut File) -> io::Result<u64> {
        let Inner::Frames {
            frames,
            is_long,
            worker,
            read,
        } = &mut self.inner
        else {
            return crate::fsutil::copy_in_blocks(self, dest, BUFFER);
        };
        let mut copied = (worker.raw.len() - *read) as u64;
        dest.write_all(&worker.raw[*read..])?;
        *read = worker.raw.len();
        let threads = if *is_long {
            in_order::thread_count()
        } else {
            1
        };
        in_order::run(
            threads,
            frames,
            (dest, &mut copied),
            FrameWorker::new,
            |frames, worker| frames.next_frame(&mut worker.frame),
            FrameWorker::decompress,
            |(dest, copied), worker| {
                dest.write_all(&worker.raw)?;
                **copied += worker.raw.len() as u64;
                Ok(())
            },
        )?;
        Ok(copied)
    }

    /// Whether the stream ended at the end of the file: bytes after the frame of an
    /// object in one frame are damage (a sequence of frames has no such rest).
    fn check_rest(self) -> io::Result<()> {
        let Inner::Single(decoder) = self.inner else {
            return Ok(());
        };
        let mut rest = decoder.finish();
        if rest.read(&mut [0u8; 1])? != 0 {
            return Err(damaged("bytes after the compressed frame"));
        }
        Ok(())
    }
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Single(decoder) => decoder.read(buf),
            Inner::Frames {
                frames,
                worker,
                read,
                ..
            } => {
                if *read == worker.raw.len() {
                    if !frames.next_frame(&mut worker.frame)? {
                        return Ok(0);
                    }
                    worker.decompress()?;
                    *read = 0;
                }
                let n = buf.len().min(worker.raw.len() - *read);
                buf[..n].copy_from_slice(&worker.raw[*read..*read + n]);
                *read += n;
                Ok(n)
            }
        }
    }
}

/// One thread's context and buffers for decompressing a frame.
struct FrameWorker {
    context: zstd::bulk::Decompressor<'static>,
    /// A whole frame, as stored.
    frame: Vec<u8>,
    /// Its raw bytes.
    raw: Vec<u8>,
}

impl FrameWorker {
    fn new() -> io::Result<FrameWorker> {
        Ok(FrameWorker {
            context: zstd::bulk::Decompressor::new()?,
            frame: Vec::new(),
            raw: Vec::with_capacity(FRAME),
        })
    }

    /// Decompresses `frame` into `raw`, which must then hold the content size its header
    /// records (at most `FRAME`; zstd checks the frame's checksum).
    fn decompress(&mut self) -> io::Result<()> {
        let size = match zstd_safe::get_frame_content_size(&self.frame) {
            Ok(Some(size)) if (1..=FRAME as u64).contains(&size) => size,
            _ => return Err(damaged("a frame without a content size of 1 B to 1 MiB")),
        };
        self.raw.clear();
        let n = self
            .context
            .decompress_to_buffer(&self.frame[..], &mut self.raw)
            .map_err(|e| damaged(&e.to_string()))?;
        if n as u64 != size {
            return Err(damaged("a frame shorter than its content size"));
        }
        Ok(())
    }
}

/// Splits a compressed object file into its frames, reading it in large blocks from its
/// start (with its offset, which shows how far it got in /proc).
struct FrameReader {
    file: File,
    buf: Vec<u8>,
    /// The bytes of `buf` read and not yet handed out.
    start: usize,
    end: usize,
    is_at_end: bool,
}

/// The most a frame of `FRAME` raw bytes takes.
fn frame_bound() -> usize {
    zstd_safe::compress_bound(FRAME) + 64
}

impl FrameReader {
    fn new(mut file: File) -> io::Result<FrameReader> {
        file.seek(SeekFrom::Start(0))?;
        Ok(FrameReader {
            file,
            buf: Vec::new(),
            start: 0,
            end: 0,
            is_at_end: false,
        })
    }

    /// Moves the next whole frame into `frame`. False at the end of the file; an error
    /// for bytes that are not a zstd frame or a frame cut short.
    fn next_frame(&mut self, frame: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let pending = &self.buf[self.start..self.end];
            if pending.len() >= MAGIC.len() && pending[..MAGIC.len()] != MAGIC {
                return Err(damaged("bytes that are not a zstd frame"));
            }
            if let Ok(n) = zstd_safe::find_frame_compressed_size(pending) {
                if n <= pending.len() {
                    frame.clear();
                    frame.extend_from_slice(&pending[..n]);
                    self.start += n;
                    return Ok(true);
                }
            }
            if self.is_at_end {
                return match pending.len() {
                    0 => Ok(false),
                    _ => Err(damaged("a frame cut short")),
                };
            }
            if pending.len() > frame_bound() {
                return Err(damaged("a frame longer than 1 MiB of raw bytes"));
            }
            self.fill()?;
        }
    }

    /// Reads the next block of the file after the bytes pending.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let want = self.end + frame_bound();
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        loop {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.is_at_end = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }
}

/// Decompresses the compressed object `file` in full, advancing `progress`, and returns
/// the digest and length of its raw bytes, or the error met (a damaged frame, a failed
/// checksum, bytes that are not a frame).
pub fn digest_compressed(
    file: &File,
    progress: &mut crate::progress::Progress,
) -> io::Result<(Digest, u64)> {
    let mut decoder = decoder(file.try_clone()?)?;
    let found = Digest::of_reader(progress.reader(&mut decoder))?;
    decoder.check_rest()?;
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
    fn compressible_bytes_under_a_mib_round_trip_through_one_frame() {
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
        assert_eq!(frame_sizes(&stored(&dest)), [raw.len()]);
        let mut back = Vec::new();
        decoder(dest).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, raw);
    }

    /// The whole of `file`.
    fn stored(file: &File) -> Vec<u8> {
        let mut bytes = vec![0u8; file.metadata().unwrap().len() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        bytes
    }

    /// The raw sizes the frames of `stored` declare, in order.
    fn frame_sizes(mut stored: &[u8]) -> Vec<usize> {
        let mut sizes = Vec::new();
        while !stored.is_empty() {
            let len = zstd_safe::find_frame_compressed_size(stored).unwrap();
            let size = zstd_safe::get_frame_content_size(stored).unwrap().unwrap();
            sizes.push(size as usize);
            stored = &stored[len..];
        }
        sizes
    }

    /// 3.5 MiB of a log with varying numbers.
    fn log_lines() -> Vec<u8> {
        let mut raw = Vec::new();
        let mut n = 0u64;
        while raw.len() < 7 * FRAME / 2 {
            raw.extend_from_slice(format!("{n:09} compiling src/m_{}.rs: ok\n", n % 97).as_bytes());
            n += 1;
        }
        raw.truncate(7 * FRAME / 2);
        raw
    }

    fn compressed(raw: &[u8]) -> File {
        let mut dest = tempfile::tempfile().unwrap();
        compress(&file_with(raw), raw.len() as u64, &mut dest)
            .unwrap()
            .unwrap();
        dest
    }

    /// What `copy_to` writes into a fresh file, or its error.
    fn copied(decoder: &mut Decoder) -> (io::Result<u64>, Vec<u8>) {
        let mut out = tempfile::tempfile().unwrap();
        let result = decoder.copy_to(&mut out);
        (result, stored(&out))
    }

    #[test]
    fn a_large_object_is_a_frame_per_mib_and_reads_back_every_way() {
        let raw = log_lines();
        let dest = compressed(&raw);
        assert_eq!(
            frame_sizes(&stored(&dest)),
            [FRAME, FRAME, FRAME, FRAME / 2]
        );
        // Any zstd decoder reads the frames as one stream.
        assert_eq!(zstd::stream::decode_all(&stored(&dest)[..]).unwrap(), raw);
        let (digest, size) = digest_compressed(&dest, &mut unmeasured()).unwrap();
        assert_eq!((digest, size), (Digest::of_bytes(&raw), raw.len() as u64));
        let (result, out) = copied(&mut decoder(dest.try_clone().unwrap()).unwrap());
        assert_eq!(result.unwrap(), raw.len() as u64);
        assert_eq!(out, raw);
        // Read in part, then copied: the rest follows.
        let mut partly = decoder(dest).unwrap();
        let mut head = vec![0u8; 1000];
        partly.read_exact(&mut head).unwrap();
        let (result, out) = copied(&mut partly);
        assert_eq!(result.unwrap(), (raw.len() - 1000) as u64);
        assert_eq!([head, out].concat(), raw);
    }

    #[test]
    fn gigabytes_of_one_line_store_in_a_few_bytes_a_frame() {
        let raw = b"memo\n".repeat(16 * FRAME / 5);
        let dest = compressed(&raw);
        let len = dest.metadata().unwrap().len();
        assert_eq!(frame_sizes(&stored(&dest)).len(), 16);
        assert!(len < 16 * 200, "{len} bytes for 16 frames");
        let (result, out) = copied(&mut decoder(dest).unwrap());
        assert_eq!(result.unwrap(), raw.len() as u64);
        assert!(out == raw);
    }

    /// Writes `raw` as one frame, as memo did before frames.
    fn one_frame(raw: &[u8]) -> File {
        let mut dest = tempfile::tempfile().unwrap();
        let mut encoder = zstd::stream::write::Encoder::new(&mut dest, LEVEL).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.include_contentsize(true).unwrap();
        encoder
            .set_pledged_src_size(Some(raw.len() as u64))
            .unwrap();
        encoder.write_all(raw).unwrap();
        encoder.finish().unwrap();
        dest
    }

    #[test]
    fn an_object_in_one_frame_as_written_before_frames_still_reads() {
        for raw in [log_lines(), log_lines()[..5000].to_vec()] {
            let dest = one_frame(&raw);
            assert_eq!(frame_sizes(&stored(&dest)), [raw.len()]);
            let found = digest_compressed(&dest, &mut unmeasured()).unwrap();
            assert_eq!(found, (Digest::of_bytes(&raw), raw.len() as u64));
            let (result, out) = copied(&mut decoder(dest.try_clone().unwrap()).unwrap());
            assert_eq!(result.unwrap(), raw.len() as u64);
            assert_eq!(out, raw);
            let mut longer = stored(&dest);
            longer.extend_from_slice(&MAGIC);
            assert!(digest_compressed(&file_with(&longer), &mut unmeasured()).is_err());
        }
    }

    #[test]
    fn damage_in_a_middle_frame_stops_before_its_bytes() {
        let raw = log_lines();
        let mut bytes = stored(&compressed(&raw));
        let first = zstd_safe::find_frame_compressed_size(&bytes).unwrap();
        let second = zstd_safe::find_frame_compressed_size(&bytes[first..]).unwrap();
        // A byte in the middle of the second frame, then of its checksum, then of the
        // content size in its header (magic, descriptor, window, then the size).
        for at in [first + second / 2, first + second - 1, first + 8] {
            bytes[at] ^= 0x10;
            let damaged = file_with(&bytes);
            assert!(
                digest_compressed(&damaged, &mut unmeasured()).is_err(),
                "damage at {at} went unseen"
            );
            let (result, out) = copied(&mut decoder(damaged).unwrap());
            assert!(result.is_err(), "damage at {at} went unseen");
            assert!(
                out.len() <= FRAME && raw.starts_with(&out),
                "{} bytes",
                out.len()
            );
            bytes[at] ^= 0x10;
        }
        // Not a frame where one should start, or a frame cut short.
        for damaged in [
            [&bytes[..first], b"plain text after a frame"].concat(),
            bytes[..bytes.len() - 2].to_vec(),
            [&bytes[..], &MAGIC[..]].concat(),
        ] {
            let damaged = file_with(&damaged);
            assert!(digest_compressed(&damaged, &mut unmeasured()).is_err());
            assert!(copied(&mut decoder(damaged).unwrap()).0.is_err());
        }
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
