//! memo's own record of a result on the server: the entry (in `index`'s format), the
//! namespace and key it was written under, and an optional HMAC-SHA256 signature. It is
//! stored in `cas/` under its own SHA-256 and named by the ActionResult.
//!
//! Also owns the name of an entry on the server: `ac/<sha256(namespace, key)>`, so that a
//! writer in one namespace can never write where a reader of another looks.
//!
//! A traced call's manifest (the keys of the runs recorded for it) has an envelope of its
//! own, bound the same way to its namespace and call key, under names and signatures
//! with their own domain tags: a manifest can never be taken for an entry, nor one
//! call's manifest for another's.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::{self, Digest};

/// The envelope format; a reader refuses any other.
const VERSION: u32 = 1;
/// Domain tags: a name on the server and a signature can never be taken for each other,
/// nor for a hash of anything else.
const AC_TAG: &[u8] = b"memo-remote-ac-v1\0";
const SIG_TAG: &[u8] = b"memo-remote-sig-v1\0";
const MANIFEST_TAG: &[u8] = b"memo-remote-manifest-v1\0";
const MANIFEST_SIG_TAG: &[u8] = b"memo-remote-manifest-sig-v1\0";
/// The `kind` of a manifest's envelope.
const MANIFEST_KIND: &str = "manifest";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the envelope is unreadable: {0}")]
    Malformed(String),
    #[error("the envelope was written for another key or namespace")]
    WrongKey,
    #[error("the entry is not signed")]
    Unsigned,
    #[error("the entry's signature is wrong")]
    BadSignature,
}

/// The name of `key`'s entry in `namespace`: the hex of this digest, under `ac/`.
///
/// The key is its 32 raw bytes at the very end, so the namespace (whatever bytes it
/// holds) is everything between the tag and them: no two pairs hash the same input.
pub fn ac_name(namespace: &str, key: &Digest) -> Digest {
    name_of(AC_TAG, namespace, key)
}

/// The name of the manifest of the traced call `call` in `namespace`, under `ac/`: like
/// an entry's, under another tag.
pub fn manifest_name(namespace: &str, call: &Digest) -> Digest {
    name_of(MANIFEST_TAG, namespace, call)
}

fn name_of(tag: &[u8], namespace: &str, key: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(tag);
    hasher.update(namespace.as_bytes());
    hasher.update(b"\0");
    hasher.update(key.0);
    Digest(hasher.finalize().into())
}

/// The envelope as JSON.
#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    namespace: String,
    /// The memo key, hex.
    key: String,
    /// The encoded entry, base64.
    entry: String,
    /// HMAC-SHA256 of `signed_message`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// The envelope for `entry` (an encoded `index::Entry`) stored under `key` in `namespace`,
/// signed when `signing_key` is given.
pub fn seal(namespace: &str, key: &Digest, entry: &[u8], signing_key: Option<&[u8]>) -> Vec<u8> {
    let sig = signing_key.map(|secret| {
        let mac = mac_of(secret, namespace, key, entry).finalize();
        digest::to_hex(&mac.into_bytes())
    });
    serde_json::to_vec(&Envelope {
        version: VERSION,
        namespace: namespace.to_string(),
        key: key.to_hex(),
        entry: BASE64.encode(entry),
        sig,
    })
    .expect("envelopes always serialize")
}

/// The entry bytes inside `bytes`, if the envelope was written for `key` in `namespace`
/// and, when `signing_key` is given, carries a valid signature.
pub fn open(
    bytes: &[u8],
    namespace: &str,
    key: &Digest,
    signing_key: Option<&[u8]>,
) -> Result<Vec<u8>, EnvelopeError> {
    let envelope: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| EnvelopeError::Malformed(format!("not an envelope: {e}")))?;
    if envelope.version != VERSION {
        return Err(EnvelopeError::Malformed(format!(
            "unknown envelope version {}",
            envelope.version
        )));
    }
    let entry = BASE64
        .decode(&envelope.entry)
        .map_err(|e| EnvelopeError::Malformed(format!("the entry is not base64: {e}")))?;
    if envelope.namespace != namespace || envelope.key != key.to_hex() {
        return Err(EnvelopeError::WrongKey);
    }
    let Some(secret) = signing_key else {
        // A reader without the key cannot check a signature; the entry is still
        // verified against its key material and every object against its digest.
        return Ok(entry);
    };
    let sig = envelope.sig.ok_or(EnvelopeError::Unsigned)?;
    let sig = digest::from_hex(&sig).ok_or(EnvelopeError::BadSignature)?;
    // `verify_slice` compares in constant time.
    mac_of(secret, namespace, key, &entry)
        .verify_slice(&sig)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok(entry)
}

/// A manifest's envelope as JSON.
#[derive(Serialize, Deserialize)]
struct ManifestEnvelope {
    version: u32,
    /// Always `MANIFEST_KIND`.
    kind: String,
    namespace: String,
    /// The call key, hex.
    call: String,
    /// The run keys, hex, newest first.
    runs: Vec<String>,
    /// HMAC-SHA256 of `manifest_mac`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// The envelope of the manifest of `call` in `namespace`, naming `runs`, signed when
/// `signing_key` is given.
pub fn seal_manifest(
    namespace: &str,
    call: &Digest,
    runs: &[Digest],
    signing_key: Option<&[u8]>,
) -> Vec<u8> {
    let sig = signing_key.map(|secret| {
        let mac = manifest_mac(secret, namespace, call, runs).finalize();
        digest::to_hex(&mac.into_bytes())
    });
    serde_json::to_vec(&ManifestEnvelope {
        version: VERSION,
        kind: MANIFEST_KIND.to_string(),
        namespace: namespace.to_string(),
        call: call.to_hex(),
        runs: runs.iter().map(|r| r.to_hex()).collect(),
        sig,
    })
    .expect("envelopes always serialize")
}

/// The run keys inside `bytes`, if the envelope is a manifest written for `call` in
/// `namespace` and, when `signing_key` is given, carries a valid signature. At most
/// `max_runs` of them: a longer list is refused, not cut.
pub fn open_manifest(
    bytes: &[u8],
    namespace: &str,
    call: &Digest,
    signing_key: Option<&[u8]>,
    max_runs: usize,
) -> Result<Vec<Digest>, EnvelopeError> {
    let envelope: ManifestEnvelope = serde_json::from_slice(bytes)
        .map_err(|e| EnvelopeError::Malformed(format!("not a manifest: {e}")))?;
    if envelope.version != VERSION || envelope.kind != MANIFEST_KIND {
        return Err(EnvelopeError::Malformed(format!(
            "unknown manifest version {} or kind {:?}",
            envelope.version,
            envelope.kind.chars().take(40).collect::<String>()
        )));
    }
    if envelope.runs.len() > max_runs {
        return Err(EnvelopeError::Malformed(format!(
            "{} runs, more than the {max_runs} memo keeps",
            envelope.runs.len()
        )));
    }
    let runs = envelope
        .runs
        .iter()
        .map(|r| r.parse::<Digest>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| EnvelopeError::Malformed("a run key is not 64 hex digits".into()))?;
    if envelope.namespace != namespace || envelope.call != call.to_hex() {
        return Err(EnvelopeError::WrongKey);
    }
    let Some(secret) = signing_key else {
        // Each run it names is fetched and verified as an entry of its own.
        return Ok(runs);
    };
    let sig = envelope.sig.ok_or(EnvelopeError::Unsigned)?;
    let sig = digest::from_hex(&sig).ok_or(EnvelopeError::BadSignature)?;
    manifest_mac(secret, namespace, call, &runs)
        .verify_slice(&sig)
        .map_err(|_| EnvelopeError::BadSignature)?;
    Ok(runs)
}

/// The HMAC over what a manifest's signature vouches for: the namespace, the call key
/// and the SHA-256 of the run keys (each in hex, followed by a newline), in order.
fn manifest_mac(secret: &[u8], namespace: &str, call: &Digest, runs: &[Digest]) -> Hmac<Sha256> {
    let listed: String = runs.iter().map(|r| format!("{}\n", r.to_hex())).collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(MANIFEST_SIG_TAG);
    mac.update(namespace.as_bytes());
    mac.update(b"\0");
    mac.update(call.to_hex().as_bytes());
    mac.update(b"\0");
    mac.update(Digest::of_bytes(listed.as_bytes()).to_hex().as_bytes());
    mac
}

/// The HMAC over what a signature vouches for: the namespace, the key and the entry's
/// SHA-256. The two hex strings have a fixed length at the end, so the namespace is
/// whatever precedes them: no two triples sign the same message.
fn mac_of(secret: &[u8], namespace: &str, key: &Digest, entry: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(SIG_TAG);
    mac.update(namespace.as_bytes());
    mac.update(b"\0");
    mac.update(key.to_hex().as_bytes());
    mac.update(b"\0");
    mac.update(Digest::of_bytes(entry).to_hex().as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "team";
    const SECRET: &[u8] = b"s3cret";

    fn key() -> Digest {
        Digest::of_bytes(b"a memo key")
    }

    fn entry() -> Vec<u8> {
        b"memo-entry 2 0000\n{\"any\":\"bytes\"}\xff".to_vec()
    }

    fn edited(bytes: &[u8], change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        change(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    #[test]
    fn ac_name_is_pinned() {
        // Changing it orphans every entry on every server: do it on purpose only.
        let mut input = b"memo-remote-ac-v1\0team\0".to_vec();
        input.extend_from_slice(&key().0);
        assert_eq!(ac_name(NS, &key()), Digest::of_bytes(&input));
    }

    #[test]
    fn ac_name_differs_across_namespaces_and_keys() {
        let other_key = Digest::of_bytes(b"another key");
        let names = [
            ac_name(NS, &key()),
            ac_name("other", &key()),
            ac_name("", &key()),
            ac_name(NS, &other_key),
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(ac_name(NS, &key()), key(), "never the bare key");
    }

    #[test]
    fn unsigned_round_trip() {
        let sealed = seal(NS, &key(), &entry(), None);
        let value: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(value["version"], 1);
        assert_eq!(value["key"], key().to_hex());
        assert!(value.get("sig").is_none());
        assert_eq!(open(&sealed, NS, &key(), None), Ok(entry()));
    }

    #[test]
    fn signature_is_pinned() {
        // The message other writers (and the docs) sign: change it on purpose only.
        let message = format!(
            "memo-remote-sig-v1\0team\0{}\0{}",
            key().to_hex(),
            Digest::of_bytes(&entry()).to_hex()
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(message.as_bytes());
        let expected = digest::to_hex(&mac.finalize().into_bytes());
        let sealed = seal(NS, &key(), &entry(), Some(SECRET));
        let value: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(value["sig"], expected);
    }

    #[test]
    fn signed_round_trip() {
        let sealed = seal(NS, &key(), &entry(), Some(SECRET));
        assert_eq!(open(&sealed, NS, &key(), Some(SECRET)), Ok(entry()));
    }

    #[test]
    fn a_reader_without_a_signing_key_accepts_a_signed_envelope() {
        let sealed = seal(NS, &key(), &entry(), Some(SECRET));
        assert_eq!(open(&sealed, NS, &key(), None), Ok(entry()));
    }

    #[test]
    fn a_reader_with_a_signing_key_refuses_an_unsigned_envelope() {
        let sealed = seal(NS, &key(), &entry(), None);
        assert_eq!(
            open(&sealed, NS, &key(), Some(SECRET)),
            Err(EnvelopeError::Unsigned)
        );
    }

    #[test]
    fn an_envelope_signed_with_another_key_is_refused() {
        let sealed = seal(NS, &key(), &entry(), Some(b"not the secret"));
        assert_eq!(
            open(&sealed, NS, &key(), Some(SECRET)),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn a_signature_over_another_namespace_is_refused() {
        let sealed = seal("other", &key(), &entry(), Some(SECRET));
        let moved = edited(&sealed, |v| v["namespace"] = NS.into());
        assert_eq!(
            open(&moved, NS, &key(), Some(SECRET)),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn a_signature_over_other_entry_bytes_is_refused() {
        let sealed = seal(NS, &key(), &entry(), Some(SECRET));
        let swapped = edited(&sealed, |v| v["entry"] = BASE64.encode(b"forged").into());
        assert_eq!(
            open(&swapped, NS, &key(), Some(SECRET)),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn a_garbled_signature_is_refused() {
        let sealed = seal(NS, &key(), &entry(), Some(SECRET));
        for sig in ["", "zz", "abc", &"0".repeat(64)] {
            let garbled = edited(&sealed, |v| v["sig"] = sig.into());
            assert_eq!(
                open(&garbled, NS, &key(), Some(SECRET)),
                Err(EnvelopeError::BadSignature),
                "{sig:?}"
            );
        }
    }

    #[test]
    fn an_envelope_for_another_namespace_or_key_is_refused() {
        let sealed = seal(NS, &key(), &entry(), Some(SECRET));
        let other_key = Digest::of_bytes(b"another key");
        for signing_key in [None, Some(SECRET)] {
            assert_eq!(
                open(&sealed, "other", &key(), signing_key),
                Err(EnvelopeError::WrongKey)
            );
            assert_eq!(
                open(&sealed, NS, &other_key, signing_key),
                Err(EnvelopeError::WrongKey)
            );
        }
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let sealed = seal(NS, &key(), &entry(), None);
        let cases = [
            b"".to_vec(),
            b"<html>404</html>".to_vec(),
            b"{}".to_vec(),
            sealed[..sealed.len() - 1].to_vec(),
            edited(&sealed, |v| v["version"] = 2.into()),
            edited(&sealed, |v| v["version"] = "1".into()),
            edited(&sealed, |v| v["entry"] = "not base64!".into()),
            edited(&sealed, |v| v["key"] = 7.into()),
        ];
        for bytes in cases {
            assert!(
                matches!(
                    open(&bytes, NS, &key(), None),
                    Err(EnvelopeError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    fn runs() -> Vec<Digest> {
        vec![Digest::of_bytes(b"run 2"), Digest::of_bytes(b"run 1")]
    }

    #[test]
    fn manifest_name_is_pinned_and_apart_from_entry_names() {
        let mut input = b"memo-remote-manifest-v1\0team\0".to_vec();
        input.extend_from_slice(&key().0);
        assert_eq!(manifest_name(NS, &key()), Digest::of_bytes(&input));
        assert_ne!(manifest_name(NS, &key()), ac_name(NS, &key()));
        assert_ne!(manifest_name(NS, &key()), manifest_name("other", &key()));
    }

    #[test]
    fn manifest_signature_is_pinned() {
        let listed = format!("{}\n{}\n", runs()[0].to_hex(), runs()[1].to_hex());
        let message = format!(
            "memo-remote-manifest-sig-v1\0team\0{}\0{}",
            key().to_hex(),
            Digest::of_bytes(listed.as_bytes()).to_hex()
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(message.as_bytes());
        let expected = digest::to_hex(&mac.finalize().into_bytes());
        let sealed = seal_manifest(NS, &key(), &runs(), Some(SECRET));
        let value: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        assert_eq!(value["sig"], expected);
        assert_eq!(value["kind"], "manifest");
    }

    #[test]
    fn manifest_round_trips_signed_and_unsigned() {
        for signing_key in [None, Some(SECRET)] {
            let sealed = seal_manifest(NS, &key(), &runs(), signing_key);
            assert_eq!(
                open_manifest(&sealed, NS, &key(), signing_key, 16),
                Ok(runs())
            );
            assert_eq!(open_manifest(&sealed, NS, &key(), None, 16), Ok(runs()));
        }
    }

    #[test]
    fn a_manifest_for_another_call_or_namespace_is_refused() {
        let sealed = seal_manifest(NS, &key(), &runs(), Some(SECRET));
        let other = Digest::of_bytes(b"another call");
        for signing_key in [None, Some(SECRET)] {
            assert_eq!(
                open_manifest(&sealed, NS, &other, signing_key, 16),
                Err(EnvelopeError::WrongKey)
            );
            assert_eq!(
                open_manifest(&sealed, "other", &key(), signing_key, 16),
                Err(EnvelopeError::WrongKey)
            );
        }
    }

    #[test]
    fn an_unsigned_or_wrongly_signed_or_edited_manifest_is_refused() {
        let unsigned = seal_manifest(NS, &key(), &runs(), None);
        assert_eq!(
            open_manifest(&unsigned, NS, &key(), Some(SECRET), 16),
            Err(EnvelopeError::Unsigned)
        );
        let other = seal_manifest(NS, &key(), &runs(), Some(b"other"));
        assert_eq!(
            open_manifest(&other, NS, &key(), Some(SECRET), 16),
            Err(EnvelopeError::BadSignature)
        );
        let signed = seal_manifest(NS, &key(), &runs(), Some(SECRET));
        let reordered = edited(&signed, |v| {
            v["runs"].as_array_mut().unwrap().reverse();
        });
        assert_eq!(
            open_manifest(&reordered, NS, &key(), Some(SECRET), 16),
            Err(EnvelopeError::BadSignature)
        );
    }

    #[test]
    fn entries_and_manifests_cannot_stand_in_for_each_other() {
        let entry_envelope = seal(NS, &key(), &entry(), None);
        assert!(matches!(
            open_manifest(&entry_envelope, NS, &key(), None, 16),
            Err(EnvelopeError::Malformed(_))
        ));
        let manifest = seal_manifest(NS, &key(), &runs(), None);
        assert!(matches!(
            open(&manifest, NS, &key(), None),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn a_manifest_naming_too_many_runs_or_bad_keys_is_malformed() {
        let many: Vec<Digest> = (0..17u8).map(|i| Digest::of_bytes(&[i])).collect();
        let sealed = seal_manifest(NS, &key(), &many, None);
        assert!(matches!(
            open_manifest(&sealed, NS, &key(), None, 16),
            Err(EnvelopeError::Malformed(_))
        ));
        let bad = edited(&seal_manifest(NS, &key(), &runs(), None), |v| {
            v["runs"][0] = "xyz".into();
        });
        assert!(matches!(
            open_manifest(&bad, NS, &key(), None, 16),
            Err(EnvelopeError::Malformed(_))
        ));
    }
}
