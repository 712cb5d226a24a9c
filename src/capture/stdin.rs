//! `--stdin`: standard input read to its end into a staging file and hashed, so it can
//! be part of the key, then given to the command from that file.
//!
//! Spooling must never cost the command its input. If the staging file cannot take it
//! all (a full disk), the command still gets every byte, in order: what reached the
//! file, then the rest of the chunk in hand, then the rest of stdin, through a pipe fed
//! by a thread. Such a run cannot be keyed, so it is not cached.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use tempfile::NamedTempFile;

use crate::digest::{Digest, Hasher, CHUNK};

/// What `--stdin` gives the command.
pub enum SpooledStdin {
    /// All of stdin, in a file, and its digest.
    Whole { file: File, digest: Digest },
    /// Writing the staging file failed (`error`): `reader` delivers all of stdin
    /// anyway, but there is no digest to key the run on.
    Streamed { reader: File, error: io::Error },
}

/// Reads standard input to its end into `staged`, hashing it on the way. `Err` only
/// when stdin itself cannot be read (or the fallback cannot be set up).
pub fn spool_stdin(staged: NamedTempFile) -> io::Result<SpooledStdin> {
    spool(io::stdin(), staged)
}

fn spool<R: Read + Send + 'static>(
    mut input: R,
    mut staged: NamedTempFile,
) -> io::Result<SpooledStdin> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut spooled: u64 = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        let mut written = 0;
        while written < n {
            let error = match staged.write(&buf[written..n]) {
                Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(w) => {
                    written += w;
                    spooled += w as u64;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => error,
            };
            return stream(staged, spooled, buf[written..n].to_vec(), input, error);
        }
    }
    let (digest, _) = hasher.finish();
    // Reopen for reading; the staging name is removed when `staged` is dropped, the open
    // file stays readable.
    let file = staged.reopen()?;
    Ok(SpooledStdin::Whole { file, digest })
}

/// The fallback: a pipe fed with the first `spooled` bytes of `staged`, then `pending`,
/// then the rest of `input`. The thread ends when all is written or the command stops
/// reading (a broken pipe).
fn stream<R: Read + Send + 'static>(
    staged: NamedTempFile,
    spooled: u64,
    pending: Vec<u8>,
    mut input: R,
    error: io::Error,
) -> io::Result<SpooledStdin> {
    let written = staged.reopen()?;
    // Removed now, read through `written`: nothing is left in tmp/ however memo ends.
    drop(staged);
    let (reader, mut writer) = io::pipe()?;
    std::thread::spawn(move || {
        super::signals::leave_wake_signals_to_the_main_thread();
        let _ = io::copy(&mut written.take(spooled), &mut writer)
            .and_then(|_| writer.write_all(&pending))
            .and_then(|_| io::copy(&mut input, &mut writer));
    });
    Ok(SpooledStdin::Streamed {
        reader: File::from(OwnedFd::from(reader)),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_spool_has_the_digest_of_the_input() {
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let SpooledStdin::Whole { mut file, digest } = spool(
            io::Cursor::new(input.clone()),
            NamedTempFile::new().unwrap(),
        )
        .unwrap() else {
            panic!("spooling to a temp file failed");
        };
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, input);
        assert_eq!(digest, Digest::of_reader(&input[..]).unwrap().0);
    }
}
