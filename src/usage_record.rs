//! The usage record of one entry, as the journal carries it and the summary keeps it:
//! plain data, below both the journal (`events`) and the index, which says how it is made
//! from an entry (`index::usage`).

use serde::{Deserialize, Serialize};

use crate::bytes::ByteString;
use crate::digest::Digest;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// The command line, for people (`memo ls`, `memo stats`).
    pub command: String,
    /// Digest of argv and cwd: which entries are "the same command" for `memo explain`.
    pub command_id: Option<Digest>,
    pub created_ms: u64,
    /// How long the command took: the cost of recomputing it.
    pub duration_ms: u64,
    /// The entry file plus every object it refers to (shared ones counted in full).
    pub size: u64,
    pub hits: u64,
    pub saved_ms: u64,
    pub last_access_ms: u64,
    /// gc's clock (its "L") at the last access: the aging term of the priority.
    pub clock: f64,
    /// What `memo ls` shows of the entry; `None` where it is not known (a record from
    /// before it was kept, or one a hit made for an entry fetched from the shared
    /// cache), and `ls` then reads the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    /// What gc needs of the entry file, so that it reads none whose file still has
    /// this size; `None` where not known (gc then reads the entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
}

/// The size of an entry file and the objects it refers to, each once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stored {
    pub bytes: u64,
    pub objects: Vec<Digest>,
}

/// What `memo ls` shows of an entry besides its usage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    /// The working directory it ran in; `None` with `--ignore-cwd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<ByteString>,
    /// Inputs the key names, with the files a traced run read.
    pub inputs: usize,
    pub outputs: usize,
    pub traced: bool,
    pub exit_code: i32,
}
