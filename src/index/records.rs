//! The summary's table of usage records, in a compact binary form (summary format 2).
//!
//! Owns the encoding of the records only; the summary (`index::summary`) owns the file,
//! its header line and the fold. A record is about 60 bytes plus its command line:
//! strings (commands, working directories) and command ids are interned in tables at
//! the start, so a command run in many versions is stored once, and numbers are
//! LEB128 varints. The header line carries the table's length and SHA-256, checked
//! before anything is decoded; decoding still refuses any count or index that does not
//! fit, so that no input can make it allocate without bound or panic.
//!
//! ```text
//! strings:  count, then each: length, bytes       (commands and working directories)
//! ids:      count, then each: 32 bytes             (command ids)
//! records:  count, then each:
//!   key (32 bytes), flags (1 byte), command (string index),
//!   [command id index], created_ms, duration_ms, size, hits, saved_ms,
//!   last_access_ms - created_ms (zigzag), [clock (f64, 8 bytes LE)],
//!   [facts: [cwd string index], inputs, outputs, exit code (zigzag)],
//!   [stored: bytes, object count, objects (32 bytes each)]
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bytes::ByteString;
use crate::digest::Digest;
use crate::usage_record::{Facts, Stored, Usage};

const HAS_COMMAND_ID: u8 = 1;
const HAS_CLOCK: u8 = 1 << 1;
const HAS_FACTS: u8 = 1 << 2;
const HAS_CWD: u8 = 1 << 3;
const IS_TRACED: u8 = 1 << 4;
const HAS_STORED: u8 = 1 << 5;
const KNOWN_FLAGS: u8 = (1 << 6) - 1;

/// Records by key. A key is a SHA-256: its first eight bytes are a hash already, and
/// SipHash over all 32 was a tenth of `memo ls` at 100,000 entries.
pub type ByKey<V> = HashMap<Digest, V, BuildHasherDefault<KeyHasher>>;

/// Hashes a key by its first eight bytes (see `ByKey`).
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
    }
}

/// The records, encoded. Records come in no particular order.
pub fn encode<'a>(
    records: impl ExactSizeIterator<Item = (&'a Digest, &'a Usage)> + Clone,
) -> Vec<u8> {
    let mut strings: Interned<&[u8]> = Interned::default();
    let mut ids: Interned<&Digest> = Interned::default();
    for (_, usage) in records.clone() {
        strings.add(usage.command.as_bytes(), usage.command.len());
        if let Some(id) = &usage.command_id {
            ids.add(id, 32);
        }
        if let Some(cwd) = usage.facts.as_ref().and_then(|f| f.cwd.as_ref()) {
            strings.add(cwd.as_bytes(), cwd.0.len());
        }
    }
    let mut out = Vec::with_capacity(records.len() * 64 + strings.bytes);
    put(&mut out, strings.order.len() as u64);
    for s in &strings.order {
        put(&mut out, s.len() as u64);
        out.extend_from_slice(s);
    }
    put(&mut out, ids.order.len() as u64);
    for id in &ids.order {
        out.extend_from_slice(&id.0);
    }
    put(&mut out, records.len() as u64);
    for (key, u) in records {
        out.extend_from_slice(&key.0);
        let facts = u.facts.as_ref();
        let cwd = facts.and_then(|f| f.cwd.as_ref());
        let flags = [
            (u.command_id.is_some(), HAS_COMMAND_ID),
            (u.clock != 0.0, HAS_CLOCK),
            (facts.is_some(), HAS_FACTS),
            (cwd.is_some(), HAS_CWD),
            (facts.is_some_and(|f| f.traced), IS_TRACED),
            (u.stored.is_some(), HAS_STORED),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |flags, (_, bit)| flags | bit);
        out.push(flags);
        put(&mut out, strings.index[u.command.as_bytes()]);
        if let Some(id) = &u.command_id {
            put(&mut out, ids.index[id]);
        }
        for n in [u.created_ms, u.duration_ms, u.size, u.hits, u.saved_ms] {
            put(&mut out, n);
        }
        put(
            &mut out,
            zigzag(u.last_access_ms.wrapping_sub(u.created_ms) as i64),
        );
        if u.clock != 0.0 {
            out.extend_from_slice(&u.clock.to_le_bytes());
        }
        if let Some(f) = facts {
            if let Some(cwd) = cwd {
                put(&mut out, strings.index[cwd.as_bytes()]);
            }
            put(&mut out, f.inputs as u64);
            put(&mut out, f.outputs as u64);
            put(&mut out, zigzag(f.exit_code as i64));
        }
        if let Some(stored) = &u.stored {
            put(&mut out, stored.bytes);
            put(&mut out, stored.objects.len() as u64);
            for object in &stored.objects {
                out.extend_from_slice(&object.0);
            }
        }
    }
    out
}

/// The records in `bytes`, or `None` if they are not a table this version wrote.
pub fn decode(bytes: &[u8]) -> Option<ByKey<Usage>> {
    let mut r = Reader { bytes, at: 0 };
    let count = r.count(1)?;
    let mut strings = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.count(1)?;
        strings.push(r.take(len)?);
    }
    let count = r.count(32)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(r.digest()?);
    }
    let string = |i: u64| strings.get(usize::try_from(i).ok()?).copied();
    // Checked once each, not once per record that names it.
    let texts: Vec<Option<&str>> = strings
        .iter()
        .map(|s| std::str::from_utf8(s).ok())
        .collect();
    let text = |i: u64| *texts.get(usize::try_from(i).ok()?)?;
    let count = r.count(40)?;
    let mut records = ByKey::with_capacity_and_hasher(count, Default::default());
    for _ in 0..count {
        let key = r.digest()?;
        let flags = r.byte()?;
        if flags & !KNOWN_FLAGS != 0 {
            return None;
        }
        let on = |bit: u8| flags & bit != 0;
        let command = text(r.varint()?)?.to_string();
        let command_id = if on(HAS_COMMAND_ID) {
            Some(*ids.get(usize::try_from(r.varint()?).ok()?)?)
        } else {
            None
        };
        let [created_ms, duration_ms, size, hits, saved_ms] = [(); 5].map(|_| r.varint());
        let created_ms = created_ms?;
        let last_access_ms = created_ms.wrapping_add(unzigzag(r.varint()?) as u64);
        let clock = if on(HAS_CLOCK) {
            f64::from_le_bytes(r.take(8)?.try_into().ok()?)
        } else {
            0.0
        };
        let facts = if on(HAS_FACTS) {
            let cwd = if on(HAS_CWD) {
                Some(ByteString(string(r.varint()?)?.to_vec()))
            } else {
                None
            };
            Some(Facts {
                cwd,
                inputs: usize::try_from(r.varint()?).ok()?,
                outputs: usize::try_from(r.varint()?).ok()?,
                traced: on(IS_TRACED),
                exit_code: i32::try_from(unzigzag(r.varint()?)).ok()?,
            })
        } else {
            None
        };
        let stored = if on(HAS_STORED) {
            let bytes = r.varint()?;
            let count = r.count(32)?;
            let objects = (0..count).map(|_| r.digest()).collect::<Option<Vec<_>>>()?;
            Some(Stored { bytes, objects })
        } else {
            None
        };
        let usage = Usage {
            command,
            command_id,
            created_ms,
            duration_ms: duration_ms?,
            size: size?,
            hits: hits?,
            saved_ms: saved_ms?,
            last_access_ms,
            clock,
            facts,
            stored,
        };
        records.insert(key, usage);
    }
    (r.at == bytes.len()).then_some(records)
}

/// Values in the order first added, each with its index.
struct Interned<T> {
    order: Vec<T>,
    index: HashMap<T, u64>,
    bytes: usize,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            order: Vec::new(),
            index: HashMap::new(),
            bytes: 0,
        }
    }
}

impl<T: std::hash::Hash + Eq + Copy> Interned<T> {
    fn add(&mut self, value: T, len: usize) {
        if !self.index.contains_key(&value) {
            self.index.insert(value, self.order.len() as u64);
            self.bytes += len + 2;
            self.order.push(value);
        }
    }
}

fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let taken = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn digest(&mut self) -> Option<Digest> {
        Some(Digest(self.take(32)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    /// A count of items of at least `min_bytes` each: never more than the bytes left
    /// could hold, so that a damaged count cannot make the reader allocate without end.
    fn count(&mut self, min_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        (n <= (self.bytes.len() - self.at) / min_bytes).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> ByKey<Usage> {
        let full = Usage {
            command: "make -j2 all".into(),
            command_id: Some(Digest::of_bytes(b"id")),
            created_ms: 1_700_000_000_000,
            duration_ms: 12_345,
            size: 4_096,
            hits: 7,
            saved_ms: 86_415,
            last_access_ms: 1_700_000_100_000,
            clock: 0.25,
            facts: Some(Facts {
                cwd: Some(ByteString(b"/src/\xffproject".to_vec())),
                inputs: 3,
                outputs: 1,
                traced: true,
                exit_code: -2,
            }),
            stored: Some(Stored {
                bytes: 700,
                objects: vec![Digest::of_bytes(b"a"), Digest::of_bytes(b"b")],
            }),
        };
        let bare = Usage {
            command: "make -j2 all".into(),
            // A last access before creation (a clock set back) survives as it was.
            last_access_ms: 5,
            created_ms: 9,
            ..Usage::default()
        };
        let no_cwd = Usage {
            facts: Some(Facts::default()),
            stored: Some(Stored::default()),
            ..bare.clone()
        };
        [(b"full", full), (b"bare", bare), (b"nocw", no_cwd)]
            .into_iter()
            .map(|(k, u)| (Digest::of_bytes(k), u))
            .collect()
    }

    #[test]
    fn round_trips() {
        let records = records();
        let encoded = encode(records.iter());
        assert_eq!(decode(&encoded).unwrap(), records);
        assert_eq!(
            decode(&encode(ByKey::default().iter())).unwrap(),
            ByKey::default()
        );
    }

    #[test]
    fn shared_commands_are_stored_once() {
        let records = records();
        let encoded = encode(records.iter());
        let command = b"make -j2 all";
        let found = encoded
            .windows(command.len())
            .filter(|w| w == command)
            .count();
        assert_eq!(found, 1);
    }

    #[test]
    fn every_truncation_and_most_flips_are_refused_without_panicking() {
        let encoded = encode(records().iter());
        for len in 0..encoded.len() {
            assert!(decode(&encoded[..len]).is_none(), "truncated to {len}");
        }
        // A flipped byte may still decode (a number changed): the header's checksum is
        // what catches it. Decoding must not panic nor allocate without bound.
        for i in 0..encoded.len() {
            for bit in 0..8 {
                let mut bad = encoded.clone();
                bad[i] ^= 1 << bit;
                let _ = decode(&bad);
            }
        }
        let mut huge = Vec::new();
        put(&mut huge, u64::MAX);
        assert!(decode(&huge).is_none());
    }
}
