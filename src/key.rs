//! The cache key: a pure function from everything a result depends on to a SHA-256 digest.
//!
//! Owns `KeyMaterial`, its canonical, versioned byte encoding and `compute_key`. It does no
//! I/O: callers gather file digests, environment values and the like, and hand them in.
//! docs/key.md lists every input and every known way a result can still go stale. Change
//! `KEY_VERSION` whenever the encoding or the meaning of a field changes.

use serde::{Deserialize, Serialize};

use crate::bytes::ByteString;
use crate::digest::Digest;

/// Bumped whenever anything that feeds the key changes meaning or encoding.
pub const KEY_VERSION: u32 = 3;

/// Everything a cached result depends on. Stored whole in the entry and compared on
/// lookup, so two different materials can never share a result, even on a collision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMaterial {
    pub version: u32,
    /// `os-arch` of the machine, e.g. `linux-x86_64`.
    pub platform: String,
    /// The command line, exact bytes, one element per argument.
    pub argv: Vec<ByteString>,
    /// The working directory, or `None` with `--ignore-cwd`.
    pub cwd: Option<ByteString>,
    /// Allowlisted environment variables, sorted by name. Values are kept only as
    /// digests so that no secret is written to the cache in plain text.
    pub env: Vec<EnvVar>,
    /// Digest of the resolved executable's contents, or of its path and metadata when
    /// it may be run but not read (see `inputs::digest_executable`).
    pub executable: Digest,
    /// Every declared input file and directory, sorted by path.
    pub inputs: Vec<InputFile>,
    /// The declared output paths, sorted.
    pub outputs: Vec<ByteString>,
    /// Digest of standard input, with `--stdin` only.
    pub stdin: Option<Digest>,
    pub salt: Option<ByteString>,
    pub key_command: Option<KeyCommand>,
    /// Whether stdout and stderr were one stream (merged) or two: a merged recording
    /// cannot be split again, so it is a different result.
    pub streams: StreamMode,
    /// A traced run's (`--trace`): the digest of what it observed and wrote
    /// (`traced::Observed`), which its entry holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traced: Option<Digest>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: ByteString,
    /// `None` when the variable is unset (which differs from set and empty).
    pub value: Option<Digest>,
}

impl EnvVar {
    /// Hashes the value together with its name, so equal values of different variables
    /// do not have equal digests in the entry.
    pub fn new(name: &[u8], value: Option<&[u8]>) -> EnvVar {
        let value = value.map(|v| {
            let mut buf = Encoder::default();
            buf.bytes(name);
            buf.bytes(v);
            Digest::of_bytes(&buf.0)
        });
        EnvVar {
            name: ByteString(name.to_vec()),
            value,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    /// A dangling symlink inside an input directory: its target text is hashed.
    Symlink,
    /// A directory named by an input, or inside one: its path alone is keyed, so an
    /// empty subdirectory added or removed changes the key (version 2 on).
    Dir,
    /// A symlink inside an input directory (or matched by an input glob) that leads to
    /// a file: keyed on its target text and the file's contents (version 3 on), so that
    /// a file replaced by a link to the same bytes, which `tar` and `ls -l` see, is
    /// another input.
    #[serde(rename = "link-file")]
    LinkToFile,
    /// The same for a symlink that leads to a directory.
    #[serde(rename = "link-dir")]
    LinkToDir,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InputFile {
    pub path: ByteString,
    pub kind: FileKind,
    pub executable: bool,
    pub digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCommand {
    pub command: ByteString,
    pub output: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    Separate,
    Merged,
    /// `--tty`: one pseudo-terminal for both, of this many columns (programs lay out to
    /// the width: `ls` columns, progress bars). Recorded as one stream, like `Merged`.
    Terminal {
        columns: u16,
    },
}

pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

impl KeyMaterial {
    /// The canonical encoding that is hashed: every field tagged, every variable-length
    /// value length-prefixed, so no two materials encode to the same bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::default();
        e.bytes(b"memo-key");
        e.u64(self.version as u64);
        e.field(b"platform").bytes(self.platform.as_bytes());
        e.field(b"argv").u64(self.argv.len() as u64);
        for arg in &self.argv {
            e.bytes(arg.as_bytes());
        }
        e.field(b"cwd")
            .optional(self.cwd.as_ref().map(|c| c.as_bytes()));
        e.field(b"env").u64(self.env.len() as u64);
        for var in &self.env {
            e.bytes(var.name.as_bytes());
            e.optional(var.value.as_ref().map(|d| &d.0[..]));
        }
        e.field(b"executable").bytes(&self.executable.0);
        e.field(b"inputs").u64(self.inputs.len() as u64);
        for input in &self.inputs {
            e.bytes(input.path.as_bytes());
            e.bytes(match input.kind {
                FileKind::File => b"file",
                FileKind::Symlink => b"symlink",
                FileKind::Dir => b"dir",
                FileKind::LinkToFile => b"link-file",
                FileKind::LinkToDir => b"link-dir",
            });
            e.u64(input.executable as u64);
            e.bytes(&input.digest.0);
        }
        e.field(b"outputs").u64(self.outputs.len() as u64);
        for output in &self.outputs {
            e.bytes(output.as_bytes());
        }
        e.field(b"stdin")
            .optional(self.stdin.as_ref().map(|d| &d.0[..]));
        e.field(b"salt")
            .optional(self.salt.as_ref().map(|s| s.as_bytes()));
        match &self.key_command {
            Some(kc) => e
                .field(b"key-command")
                .u64(1)
                .bytes(kc.command.as_bytes())
                .bytes(&kc.output.0),
            None => e.field(b"key-command").u64(0),
        };
        match self.streams {
            StreamMode::Separate => e.field(b"streams").bytes(b"separate"),
            StreamMode::Merged => e.field(b"streams").bytes(b"merged"),
            StreamMode::Terminal { columns } => {
                e.field(b"streams").bytes(b"terminal").u64(columns as u64)
            }
        };
        // Only when present, so that the keys of untraced calls stay as they were.
        if let Some(traced) = &self.traced {
            e.field(b"traced").bytes(&traced.0);
        }
        e.0
    }

    /// Sorts the set-like fields so that the order of flags does not change the key.
    pub fn normalize(&mut self) {
        self.env.sort();
        self.env.dedup_by(|a, b| a.name == b.name);
        self.inputs.sort();
        self.inputs.dedup();
        self.outputs.sort();
        self.outputs.dedup();
    }
}

/// Which command this is, regardless of its inputs: argv and cwd (absent with
/// `--ignore-cwd`). `memo explain` compares a miss with the entries of the same command.
pub fn command_id(material: &KeyMaterial) -> Digest {
    let mut e = Encoder::default();
    e.bytes(b"memo-command");
    e.u64(material.argv.len() as u64);
    for arg in &material.argv {
        e.bytes(arg.as_bytes());
    }
    e.optional(material.cwd.as_ref().map(|c| c.as_bytes()));
    Digest::of_bytes(&e.0)
}

/// The command line as one string, for people.
pub fn command_line(material: &KeyMaterial) -> String {
    let words: Vec<String> = material
        .argv
        .iter()
        .map(|a| {
            let text = a.display();
            if text.is_empty()
                || text.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c))
            {
                format!("'{}'", text.replace('\'', "'\\''"))
            } else {
                text
            }
        })
        .collect();
    words.join(" ")
}

/// `text` with every control character written as an escape (`\n`, `\t`, `\r`,
/// `\x1b`, `\u{202e}`), so that a command line holding a newline, a terminal escape or
/// a bidirectional override prints as one honest line in listings and messages.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            // C1 controls, and the format characters that reorder or hide text.
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// The cache key of `material`.
pub fn compute_key(material: &KeyMaterial) -> Digest {
    Digest::of_bytes(&material.canonical_bytes())
}

/// The key of a traced call's manifest (`--trace`): apart from the call's untraced key,
/// so that a traced call never replays an untraced result.
pub fn manifest_key(material: &KeyMaterial) -> Digest {
    let mut bytes = b"memo-manifest\0".to_vec();
    bytes.extend(material.canonical_bytes());
    Digest::of_bytes(&bytes)
}

#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u64(&mut self, n: u64) -> &mut Self {
        self.0.extend_from_slice(&n.to_le_bytes());
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    fn field(&mut self, name: &[u8]) -> &mut Self {
        self.bytes(name)
    }

    fn optional(&mut self, value: Option<&[u8]>) -> &mut Self {
        match value {
            Some(v) => self.u64(1).bytes(v),
            None => self.u64(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyMaterial {
        KeyMaterial {
            version: KEY_VERSION,
            platform: "linux-x86_64".into(),
            argv: vec!["python3".into(), "make_report.py".into(), "data.csv".into()],
            cwd: Some("/home/user/project".into()),
            env: vec![EnvVar::new(b"LANG", Some(b"C.UTF-8"))],
            executable: Digest::of_bytes(b"python3 binary"),
            inputs: vec![InputFile {
                path: "data.csv".into(),
                kind: FileKind::File,
                executable: false,
                digest: Digest::of_bytes(b"a,b\n1,2\n"),
            }],
            outputs: vec!["report.html".into()],
            stdin: None,
            salt: None,
            key_command: None,
            streams: StreamMode::Separate,
            traced: None,
        }
    }

    fn key_after(change: impl FnOnce(&mut KeyMaterial)) -> Digest {
        let mut m = sample();
        change(&mut m);
        m.normalize();
        compute_key(&m)
    }

    /// Fails when the key of a fixed material changes: if that is deliberate, bump
    /// KEY_VERSION (old entries must not be read with a new meaning) and update this.
    #[test]
    fn golden_key() {
        assert_eq!(
            compute_key(&sample()).to_hex(),
            "c48f2d6bc2beff5b21ff84c3f1ef0dcfb09488e1274b97de6d332c38eb92c165"
        );
        let with_dir = key_after(|m| {
            m.inputs.push(InputFile {
                path: "src".into(),
                kind: FileKind::Dir,
                executable: false,
                digest: Digest::of_bytes(b""),
            })
        });
        assert_eq!(
            with_dir.to_hex(),
            "8bc68aec05b911a5c2731a392c701ad27f76d94240d39c0d378c3faf36d40b24"
        );
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = key_after(|_| {});
        type Change = Box<dyn FnOnce(&mut KeyMaterial)>;
        let changes: Vec<(&str, Change)> = vec![
            ("version", Box::new(|m| m.version += 1)),
            (
                "platform",
                Box::new(|m| m.platform = "linux-aarch64".into()),
            ),
            ("argv", Box::new(|m| m.argv.push("x".into()))),
            (
                "argv boundaries",
                Box::new(|m| m.argv = vec!["python3 make_report.py".into(), "data.csv".into()]),
            ),
            ("cwd", Box::new(|m| m.cwd = Some("/elsewhere".into()))),
            ("ignore cwd", Box::new(|m| m.cwd = None)),
            (
                "env value",
                Box::new(|m| m.env[0] = EnvVar::new(b"LANG", Some(b"C"))),
            ),
            (
                "env unset vs empty",
                Box::new(|m| m.env[0] = EnvVar::new(b"LANG", None)),
            ),
            (
                "env empty",
                Box::new(|m| m.env[0] = EnvVar::new(b"LANG", Some(b""))),
            ),
            (
                "env added",
                Box::new(|m| m.env.push(EnvVar::new(b"TZ", None))),
            ),
            (
                "executable",
                Box::new(|m| m.executable = Digest::of_bytes(b"other")),
            ),
            (
                "input content",
                Box::new(|m| m.inputs[0].digest = Digest::of_bytes(b"x")),
            ),
            (
                "input path",
                Box::new(|m| m.inputs[0].path = "other.csv".into()),
            ),
            (
                "input exec bit",
                Box::new(|m| m.inputs[0].executable = true),
            ),
            (
                "input kind",
                Box::new(|m| m.inputs[0].kind = FileKind::Symlink),
            ),
            (
                "input is a directory",
                Box::new(|m| m.inputs[0].kind = FileKind::Dir),
            ),
            (
                "input is a link to a file",
                Box::new(|m| m.inputs[0].kind = FileKind::LinkToFile),
            ),
            (
                "input is a link to a directory",
                Box::new(|m| m.inputs[0].kind = FileKind::LinkToDir),
            ),
            (
                "an empty directory added",
                Box::new(|m| {
                    m.inputs.push(InputFile {
                        path: "empty".into(),
                        kind: FileKind::Dir,
                        executable: false,
                        digest: Digest::of_bytes(b""),
                    })
                }),
            ),
            ("outputs", Box::new(|m| m.outputs.push("b".into()))),
            ("stdin", Box::new(|m| m.stdin = Some(Digest::of_bytes(b"")))),
            ("salt", Box::new(|m| m.salt = Some("1".into()))),
            ("empty salt", Box::new(|m| m.salt = Some("".into()))),
            (
                "key command",
                Box::new(|m| {
                    m.key_command = Some(KeyCommand {
                        command: "git rev-parse HEAD".into(),
                        output: Digest::of_bytes(b"abc\n"),
                    })
                }),
            ),
            ("streams", Box::new(|m| m.streams = StreamMode::Merged)),
            (
                "terminal",
                Box::new(|m| m.streams = StreamMode::Terminal { columns: 80 }),
            ),
            (
                "terminal width",
                Box::new(|m| m.streams = StreamMode::Terminal { columns: 81 }),
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        seen.insert(base);
        for (name, change) in changes {
            let key = key_after(change);
            assert!(seen.insert(key), "changing {name} did not give a new key");
        }
    }

    #[test]
    fn order_of_set_like_flags_does_not_matter() {
        let mut a = sample();
        a.env.push(EnvVar::new(b"TZ", Some(b"UTC")));
        a.outputs.push("a.txt".into());
        let mut b = a.clone();
        a.env.reverse();
        a.outputs.reverse();
        a.normalize();
        b.normalize();
        assert_eq!(compute_key(&a), compute_key(&b));
    }

    #[test]
    fn env_values_are_not_stored_in_plain_text() {
        let var = EnvVar::new(b"TOKEN", Some(b"hunter2-secret"));
        let json = serde_json::to_string(&var).unwrap();
        assert!(!json.contains("hunter2"));
    }

    #[test]
    fn material_round_trips_through_json() {
        let m = sample();
        let back: KeyMaterial = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
