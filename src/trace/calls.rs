//! Which system calls the filter stops on, and what each one's arguments mean.
//!
//! One table for both: `TRACED` is what the seccomp filter traps, `decode` turns a
//! trapped call's number and arguments into a `Call` the tracer acts on. A number in
//! `TRACED` that `decode` does not know is a bug the tests catch (it would only cost
//! stops). Numbers come from libc's `SYS_*` for the target architecture; the calls that
//! only old architectures have (open, stat, rename, ...) exist on x86_64 alone.

use libc::c_long;

/// `fchmodat2` (Linux 6.6) has the same number on every architecture that has it.
pub(crate) const SYS_FCHMODAT2: c_long = 452;

/// Calls the filter traps whatever their arguments.
pub(crate) const TRACED: &[c_long] = &[
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_mknodat,
    libc::SYS_truncate,
    libc::SYS_fchmodat,
    SYS_FCHMODAT2,
    libc::SYS_fchmod,
    libc::SYS_fchownat,
    libc::SYS_fchown,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_name_to_handle_at,
    libc::SYS_clone3,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_ptrace,
    libc::SYS_seccomp,
    libc::SYS_connect,
    libc::SYS_io_uring_setup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_creat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_renameat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_link,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_symlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mknod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utime,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utimes,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_futimesat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// Calls the filter denies with ENOSYS without a stop: they only work on a ring that
/// `io_uring_setup` (trapped, denied and reported) would have made.
pub(crate) const DENIED: &[c_long] = &[libc::SYS_io_uring_enter, libc::SYS_io_uring_register];

/// How the filter decides on a call from one of its arguments (its low 32 bits).
#[derive(Clone, Copy)]
pub(crate) enum Gate {
    TraceIfAny(u32),
    AllowIfAny(u32),
    TraceIfEqual(u32),
}

/// Calls trapped only for some values of an argument: (number, argument index, gate).
pub(crate) const GATED: &[(c_long, u32, Gate)] = &[
    (
        libc::SYS_clone,
        0,
        Gate::TraceIfAny(CLONE_SUSPICIOUS as u32),
    ),
    (
        libc::SYS_prctl,
        0,
        Gate::TraceIfEqual(libc::PR_SET_SECCOMP as u32),
    ),
    // fstat is fstatat(fd, "", AT_EMPTY_PATH) in glibc and statx(fd, "",
    // AT_EMPTY_PATH) in Rust: a quarter of Python's calls, on files already observed
    // when they were opened. A lookup of a non-empty name with AT_EMPTY_PATH set (the
    // flag is then meaningless) goes unseen: a documented gap.
    (
        libc::SYS_newfstatat,
        3,
        Gate::AllowIfAny(libc::AT_EMPTY_PATH as u32),
    ),
    (
        libc::SYS_statx,
        2,
        Gate::AllowIfAny(libc::AT_EMPTY_PATH as u32),
    ),
];

/// clone() is trapped only when its flags (the first argument on every architecture)
/// ask for an untraced child or new namespaces: every fork and thread would stop
/// otherwise, and fork/vfork/clone events already follow the children.
pub(crate) const CLONE_SUSPICIOUS: u64 = (libc::CLONE_UNTRACED
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32 as u64;

/// A path argument: `path` is a pointer in the tracee (0 for NULL) resolved against
/// `dirfd` (AT_FDCWD for the calls without one). `empty_is_dirfd` is AT_EMPTY_PATH or a
/// NULL path meaning "the descriptor itself".
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub dirfd: i32,
    pub path: u64,
    pub empty_is_dirfd: bool,
}

impl At {
    fn cwd(path: u64) -> At {
        At {
            dirfd: libc::AT_FDCWD,
            path,
            empty_is_dirfd: false,
        }
    }
    fn dir(dirfd: u64, path: u64) -> At {
        At {
            dirfd: dirfd as i32,
            path,
            empty_is_dirfd: false,
        }
    }
    fn dir_flags(dirfd: u64, path: u64, flags: u64) -> At {
        At {
            dirfd: dirfd as i32,
            path,
            empty_is_dirfd: flags & libc::AT_EMPTY_PATH as u64 != 0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Call {
    /// open family; `flags` are the open flags (for openat2, read from `how`).
    Open {
        at: At,
        flags: Flags,
    },
    Exec {
        at: At,
    },
    /// A lookup that succeeds when the path exists (stat, access, getxattr, chdir, ...).
    Lookup {
        at: At,
        follow: bool,
    },
    ReadLink {
        at: At,
    },
    /// getdents on a descriptor.
    List {
        fd: i32,
    },
    /// The attributes of an existing path changed (chmod, chown, utimes, setxattr).
    Change {
        at: At,
    },
    /// An existing file's data was cut or extended (truncate).
    Truncate {
        at: At,
    },
    /// The same through a descriptor.
    ChangeFd {
        fd: i32,
    },
    /// A directory, symlink or special file made at `at`.
    Make {
        at: At,
    },
    Link {
        from: At,
        to: At,
    },
    Remove {
        at: At,
    },
    Rename {
        from: At,
        to: At,
        exchange: bool,
    },
    /// chdir (a lookup of `at`) or fchdir: the tracer's memory of working directories
    /// is forgotten when it returns.
    ChangeDir {
        at: Option<At>,
    },
    /// clone3: the flags are the first field of the struct at `args`.
    Clone3 {
        args: u64,
    },
    /// clone with suspicious flags (the filter let only those through).
    Clone {
        flags: u64,
    },
    Connect,
    Itself,
    Namespaces,
    IoUring,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Flags {
    Value(u64),
    /// The first u64 of `struct open_how` at this address.
    OpenHow(u64),
}

/// What a trapped call is; `None` for a call the tracer has nothing to do with.
pub(crate) fn decode(nr: c_long, a: [u64; 6]) -> Option<Call> {
    use Call::*;
    let nofollow = |flags: u64| flags & libc::AT_SYMLINK_NOFOLLOW as u64 == 0;
    let call = match nr {
        libc::SYS_openat => Open {
            at: At::dir(a[0], a[1]),
            flags: Flags::Value(a[2]),
        },
        libc::SYS_openat2 => Open {
            at: At::dir(a[0], a[1]),
            flags: Flags::OpenHow(a[2]),
        },
        libc::SYS_execve => Exec { at: At::cwd(a[0]) },
        libc::SYS_execveat => Exec {
            at: At::dir_flags(a[0], a[1], a[4]),
        },
        libc::SYS_newfstatat => Lookup {
            at: At::dir_flags(a[0], a[1], a[3]),
            follow: nofollow(a[3]),
        },
        libc::SYS_statx => Lookup {
            at: At::dir_flags(a[0], a[1], a[2]),
            follow: nofollow(a[2]),
        },
        libc::SYS_faccessat => Lookup {
            at: At::dir(a[0], a[1]),
            follow: true,
        },
        libc::SYS_faccessat2 => Lookup {
            at: At::dir_flags(a[0], a[1], a[3]),
            follow: nofollow(a[3]),
        },
        libc::SYS_readlinkat => ReadLink {
            at: At::dir(a[0], a[1]),
        },
        libc::SYS_getdents64 => List { fd: a[0] as i32 },
        libc::SYS_mkdirat => Make {
            at: At::dir(a[0], a[1]),
        },
        libc::SYS_mknodat => Make {
            at: At::dir(a[0], a[1]),
        },
        libc::SYS_symlinkat => Make {
            at: At::dir(a[1], a[2]),
        },
        libc::SYS_unlinkat => Remove {
            at: At::dir(a[0], a[1]),
        },
        libc::SYS_renameat2 => Rename {
            from: At::dir(a[0], a[1]),
            to: At::dir(a[2], a[3]),
            exchange: a[4] & libc::RENAME_EXCHANGE as u64 != 0,
        },
        libc::SYS_linkat => Link {
            from: At::dir_flags(a[0], a[1], a[4]),
            to: At::dir(a[2], a[3]),
        },
        libc::SYS_truncate => Truncate { at: At::cwd(a[0]) },
        libc::SYS_fchmodat => Change {
            at: At::dir(a[0], a[1]),
        },
        SYS_FCHMODAT2 => Change {
            at: At::dir_flags(a[0], a[1], a[3]),
        },
        libc::SYS_fchownat => Change {
            at: At::dir_flags(a[0], a[1], a[4]),
        },
        // utimensat(fd, NULL, ...) is futimens.
        libc::SYS_utimensat => Change {
            at: At {
                dirfd: a[0] as i32,
                path: a[1],
                empty_is_dirfd: a[1] == 0,
            },
        },
        libc::SYS_setxattr
        | libc::SYS_lsetxattr
        | libc::SYS_removexattr
        | libc::SYS_lremovexattr => Change { at: At::cwd(a[0]) },
        libc::SYS_fchmod | libc::SYS_fchown | libc::SYS_fsetxattr | libc::SYS_fremovexattr => {
            ChangeFd { fd: a[0] as i32 }
        }
        libc::SYS_getxattr | libc::SYS_listxattr => Lookup {
            at: At::cwd(a[0]),
            follow: true,
        },
        libc::SYS_lgetxattr | libc::SYS_llistxattr => Lookup {
            at: At::cwd(a[0]),
            follow: false,
        },
        libc::SYS_name_to_handle_at => Lookup {
            at: At::dir_flags(a[0], a[1], a[4]),
            follow: a[4] & libc::AT_SYMLINK_FOLLOW as u64 != 0,
        },
        libc::SYS_chdir => ChangeDir {
            at: Some(At::cwd(a[0])),
        },
        libc::SYS_fchdir => ChangeDir { at: None },
        libc::SYS_clone3 => Clone3 { args: a[0] },
        libc::SYS_clone => Clone { flags: a[0] },
        libc::SYS_unshare
        | libc::SYS_setns
        | libc::SYS_mount
        | libc::SYS_umount2
        | libc::SYS_pivot_root
        | libc::SYS_chroot
        | libc::SYS_fsopen
        | libc::SYS_fsmount
        | libc::SYS_fspick
        | libc::SYS_move_mount
        | libc::SYS_open_tree
        | libc::SYS_mount_setattr => Namespaces,
        libc::SYS_ptrace | libc::SYS_seccomp | libc::SYS_prctl => Itself,
        libc::SYS_connect => Connect,
        libc::SYS_io_uring_setup => IoUring,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open => Open {
            at: At::cwd(a[0]),
            flags: Flags::Value(a[1]),
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_creat => Open {
            at: At::cwd(a[0]),
            flags: Flags::Value((libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64),
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_uselib => Open {
            at: At::cwd(a[0]),
            flags: Flags::Value(libc::O_RDONLY as u64),
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_stat | libc::SYS_access => Lookup {
            at: At::cwd(a[0]),
            follow: true,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lstat => Lookup {
            at: At::cwd(a[0]),
            follow: false,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_readlink => ReadLink { at: At::cwd(a[0]) },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_getdents => List { fd: a[0] as i32 },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mkdir | libc::SYS_mknod => Make { at: At::cwd(a[0]) },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_symlink => Make { at: At::cwd(a[1]) },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rmdir | libc::SYS_unlink => Remove { at: At::cwd(a[0]) },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rename => Rename {
            from: At::cwd(a[0]),
            to: At::cwd(a[1]),
            exchange: false,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_renameat => Rename {
            from: At::dir(a[0], a[1]),
            to: At::dir(a[2], a[3]),
            exchange: false,
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_link => Link {
            from: At::cwd(a[0]),
            to: At::cwd(a[1]),
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chmod
        | libc::SYS_chown
        | libc::SYS_lchown
        | libc::SYS_utime
        | libc::SYS_utimes => Change { at: At::cwd(a[0]) },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_futimesat => Change {
            at: At::dir(a[0], a[1]),
        },
        _ => return None,
    };
    Some(call)
}
