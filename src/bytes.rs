//! `ByteString`: exact bytes (argv, paths, small outputs) that survive a JSON round trip.
//!
//! Valid UTF-8 is written as a plain JSON string, anything else as `{"base64": "..."}`,
//! so entry files stay readable for the common case and exact for the rest. The inline
//! bytes of a blob (file contents, not names) go through [`compact`] instead, which also
//! picks base64 for valid UTF-8 that JSON would blow up (control bytes escape to six).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteString(pub Vec<u8>);

impl ByteString {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_os_string(&self) -> OsString {
        OsString::from_vec(self.0.clone())
    }

    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(self.to_os_string())
    }

    /// A lossy rendering for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<&OsStr> for ByteString {
    fn from(s: &OsStr) -> Self {
        ByteString(s.as_bytes().to_vec())
    }
}

impl From<&Path> for ByteString {
    fn from(p: &Path) -> Self {
        ByteString::from(p.as_os_str())
    }
}

impl From<&str> for ByteString {
    fn from(s: &str) -> Self {
        ByteString(s.as_bytes().to_vec())
    }
}

impl std::fmt::Debug for ByteString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Base64 {
    base64: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Base64(Base64),
}

fn serialize_base64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    Base64 {
        base64: BASE64.encode(bytes),
    }
    .serialize(s)
}

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => serialize_base64(&self.0, s),
        }
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(text) => Ok(ByteString(text.into_bytes())),
            Repr::Base64(Base64 { base64 }) => BASE64
                .decode(base64)
                .map(ByteString)
                .map_err(|_| serde::de::Error::custom("invalid base64 in byte string")),
        }
    }
}

/// Serde for a blob's optional inline bytes: as plain text when that is valid UTF-8 and
/// no longer in JSON than base64 would be, else as `{"base64": "..."}`. Either form reads
/// back, so the choice is only about size.
pub mod compact {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &Option<ByteString>, s: S) -> Result<S::Ok, S::Error> {
        let Some(bytes) = bytes else {
            return s.serialize_none();
        };
        match std::str::from_utf8(&bytes.0) {
            Ok(text) if escaped_len(text) <= bytes.0.len().div_ceil(3) * 4 => s.serialize_str(text),
            _ => serialize_base64(&bytes.0, s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteString>, D::Error> {
        Option::<ByteString>::deserialize(d)
    }

    /// The length of `text` inside a JSON string, as serde_json escapes it.
    fn escaped_len(text: &str) -> usize {
        text.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..=0x1f => 6,
                _ => 1,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_plain_text_and_binary_is_base64() {
        let text = ByteString::from("a b");
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"a b\"");
        let binary = ByteString(vec![0xff, 0x00, b'a']);
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, r#"{"base64":"/wBh"}"#);
        assert_eq!(serde_json::from_str::<ByteString>(&json).unwrap(), binary);
        assert_eq!(serde_json::from_str::<ByteString>("\"a b\"").unwrap(), text);
    }

    #[test]
    fn broken_base64_is_refused() {
        for json in [
            r#"{"base64":"/wB"}"#,
            r#"{"base64":"!!!!"}"#,
            r#"{"hex":"ff"}"#,
            r#"{"base64":"/wBh","x":1}"#,
        ] {
            assert!(serde_json::from_str::<ByteString>(json).is_err(), "{json}");
        }
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Inline {
        #[serde(with = "compact")]
        bytes: Option<ByteString>,
    }

    fn inline_json(bytes: &[u8]) -> String {
        let value = Inline {
            bytes: Some(ByteString(bytes.to_vec())),
        };
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(serde_json::from_str::<Inline>(&json).unwrap(), value);
        json
    }

    #[test]
    fn inline_bytes_take_the_shorter_form() {
        assert_eq!(inline_json(b"line\n"), r#"{"bytes":"line\n"}"#);
        // Valid UTF-8, but six bytes per NUL as text.
        assert_eq!(inline_json(&[0; 6]), r#"{"bytes":{"base64":"AAAAAAAA"}}"#);
        let random: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(inline_json(&random).len() <= 4000 + 30);
    }
}
