//! The files the kernel itself reads when it executes a program, which no traced call
//! names: the program of a `#!` line, and an ELF program's interpreter (PT_INTERP, the
//! dynamic loader). Each is read here, by the tracer, from the executed path.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::paths;

/// The kernel follows at most this many `#!` levels (BINPRM max recursion is 4 + 1).
const MAX_LEVELS: usize = 5;

/// The interpreters the kernel loaded to run `program`, outermost first, as absolute
/// paths joined onto `cwd` when relative.
pub(crate) fn interpreters(program: &Path, cwd: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut current = program.to_path_buf();
    for _ in 0..MAX_LEVELS {
        match interpreter_of(&current) {
            Some(next) => {
                let next = paths::join_lexically(cwd, &next);
                found.push(next.clone());
                current = next;
            }
            None => break,
        }
    }
    found
}

fn interpreter_of(program: &Path) -> Option<PathBuf> {
    let mut file = File::open(program).ok()?;
    let mut head = [0u8; 256];
    let len = read_up_to(&mut file, &mut head)?;
    let head = &head[..len];
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|b| *b == b'\n').next()?;
        let line = line.strip_prefix(b" ").unwrap_or(line);
        let start = line.iter().position(|b| *b != b' ' && *b != b'\t')?;
        let rest = &line[start..];
        let end = rest
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
            .unwrap_or(rest.len());
        return Some(paths::from_bytes(&rest[..end]));
    }
    elf_interpreter(&mut file, head)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> Option<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    Some(len)
}

/// PT_INTERP of a little-endian ELF file, 32 or 64-bit.
fn elf_interpreter(file: &mut File, head: &[u8]) -> Option<PathBuf> {
    if head.len() < 52 || &head[..4] != b"\x7fELF" || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as u64;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as u64;
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let is_64 = match head[4] {
        1 => false,
        2 if head.len() >= 64 => true,
        _ => return None,
    };
    let (phoff, phentsize, phnum) = if is_64 {
        (u64_at(head, 32), u16_at(head, 54), u16_at(head, 56))
    } else {
        (u32_at(head, 28), u16_at(head, 42), u16_at(head, 44))
    };
    if phentsize < if is_64 { 56 } else { 32 } || phnum > 256 {
        return None;
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    file.seek(SeekFrom::Start(phoff)).ok()?;
    file.read_exact(&mut table).ok()?;
    const PT_INTERP: u64 = 3;
    for entry in table.chunks_exact(phentsize as usize) {
        if u32_at(entry, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = if is_64 {
            (u64_at(entry, 8), u64_at(entry, 32))
        } else {
            (u32_at(entry, 4), u32_at(entry, 16))
        };
        if size == 0 || size > 4096 {
            return None;
        }
        let mut name = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut name).ok()?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        return Some(paths::from_bytes(&name[..end]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn a_script_names_its_interpreter_and_the_elf_loader_follows() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#! /bin/sh -e\necho hi\n").unwrap();
        let found = interpreters(&script, dir.path());
        assert_eq!(found.first(), Some(&PathBuf::from("/bin/sh")));
        // /bin/sh is a dynamic ELF program on any system these tests run on.
        assert!(found.len() >= 2, "{found:?}");
        assert!(
            found[1].as_os_str().as_bytes().starts_with(b"/lib"),
            "{found:?}"
        );
    }
}
