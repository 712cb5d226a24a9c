//! Arguments and environments as execve(2) takes them, made before a fork: the child of
//! a fork (or a vfork) may not allocate, so everything it passes is built here first.

use std::ffi::CString;
use std::io;
use std::os::raw::c_char;

/// `bytes` as a C string; a NUL byte inside is an error (no command line or environment
/// can carry one).
pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument contains a NUL byte",
        )
    })
}

/// C strings and the null-terminated array of pointers to them (an `argv` or `envp`).
pub struct CStrings {
    /// Owns what `pointers` points into (a CString's bytes do not move with it).
    _strings: Vec<CString>,
    pointers: Vec<*const c_char>,
}

impl CStrings {
    pub fn new<I>(items: I) -> io::Result<CStrings>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let strings = items
            .into_iter()
            .map(|item| cstring(item.as_ref()))
            .collect::<io::Result<Vec<_>>>()?;
        let pointers = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Ok(CStrings {
            _strings: strings,
            pointers,
        })
    }

    /// The array, ending with a null pointer.
    pub fn as_ptr(&self) -> *const *const c_char {
        self.pointers.as_ptr()
    }

    /// How many pointers the array holds, its null one included.
    pub fn pointer_count(&self) -> usize {
        self.pointers.len()
    }
}
