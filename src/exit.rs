//! Exit codes and the error type that carries one to `main`.
//!
//! Follows `env` and `timeout`: memo's own failures exit 125, a command that was found
//! but cannot be executed 126, a command that was not found 127. Anything else is the
//! wrapped command's own code.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// memo itself failed: bad arguments, missing inputs, an unusable explicit cache dir.
    Failure = 125,
    /// The command exists but could not be executed.
    NotExecutable = 126,
    /// The command was not found.
    NotFound = 127,
}

/// An error that ends memo with a particular exit code. Its message is one line.
#[derive(Debug)]
pub struct Fatal {
    pub code: Code,
    pub message: String,
}

impl Fatal {
    pub fn new(code: Code, message: impl Into<String>) -> Fatal {
        Fatal {
            code,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> Fatal {
        Fatal::new(Code::Failure, message)
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}
