//! `ByteString`: exact bytes (argv, paths, small outputs) that survive a JSON round trip.
//!
//! Valid UTF-8 is written as a plain JSON string, anything else as `{"hex": "..."}`, so
//! entry files stay readable for the common case and exact for the rest.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{from_hex, to_hex};

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
struct Hex {
    hex: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Hex(Hex),
}

impl Serialize for ByteString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => Hex {
                hex: to_hex(&self.0),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ByteString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(text) => Ok(ByteString(text.into_bytes())),
            Repr::Hex(Hex { hex }) => from_hex(&hex)
                .map(ByteString)
                .ok_or_else(|| serde::de::Error::custom("invalid hex in byte string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_plain_text_and_binary_is_hex() {
        let text = ByteString::from("a b");
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"a b\"");
        let binary = ByteString(vec![0xff, 0x00, b'a']);
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, r#"{"hex":"ff0061"}"#);
        assert_eq!(serde_json::from_str::<ByteString>(&json).unwrap(), binary);
        assert_eq!(serde_json::from_str::<ByteString>("\"a b\"").unwrap(), text);
    }
}
