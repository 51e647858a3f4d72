//! Safe file handling (fsx): how vmvault creates, opens and places files so that no one
//! else can redirect what it writes.
//!
//! vmvault often runs as root, and the folders it writes into (the data folder, a vault,
//! a restore target) may have been prepared by someone else. The rules, enforced here and
//! used everywhere a file is created:
//! - **Folders are checked before they are trusted.** [`Dir::open_private`] opens the data
//!   folder or a vault folder only when it belongs to the user running vmvault and no one
//!   else can write it, and when every folder above it belongs to root or that user and is
//!   not writable by others (a world-writable folder with the sticky bit, like `/tmp`, is
//!   fine: others cannot rename what they do not own there). Otherwise the error says what
//!   is wrong and how to fix it, as ssh does with loose key permissions.
//! - **Files are reached through a directory handle, never followed.** Every create or open
//!   is relative to an open folder (`openat`) with `O_NOFOLLOW`; new files are created with
//!   `O_EXCL`, so a name planted in advance (a symlink, a hard link, a FIFO) is an error,
//!   never a file written through.
//! - **Placing never replaces.** [`Dir::rename_noreplace`] moves a finished file to its
//!   final name with `renameat2(RENAME_NOREPLACE)` (or `link` + `unlink` where the file
//!   system lacks it): if something appeared at the final name meanwhile, the move fails
//!   and what was there stays. The one exception is [`Dir::rename_replace`], for stores
//!   whose objects are meant to be replaced by a newer whole version (the vault backend's
//!   content-addressed chunks and re-written manifests): it replaces what is at the name,
//!   a planted symlink included, and never writes through it.
//! - **User input files are bounded.** [`read_input_file`] reads a config, a policy or an
//!   Azure JSON file only when it is a regular file under a size limit: a FIFO, a device or
//!   `/dev/zero` is refused at once with the reason.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What went wrong, with the path it concerns and, where the user can act, the fix.
#[derive(Debug, thiserror::Error)]
pub enum FsxError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is a symbolic link; vmvault does not follow links there (another user could redirect what it writes). Use the real folder instead", .path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a folder", .path.display())]
    NotDir { path: PathBuf },
    #[error("{} belongs to {owner}, not to {me} who runs vmvault: {owner} could change what vmvault writes there. Use a folder of your own, or if {owner} is trusted and the folder is yours now: chown {me} '{}'", .path.display(), .path.display())]
    Owner {
        path: PathBuf,
        owner: String,
        me: String,
    },
    #[error("{} can be written by other users (mode {mode:04o}), who could change what vmvault writes there. Fix: chmod go-w '{}'", .path.display(), .path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is a symbolic link that {owner} owns: they chose where it leads. vmvault follows only links of root or of the user who runs it. Give the real path instead, or replace the link with one of your own: ln -sfn \"$(readlink -f '{}')\" '{}'", .path.display(), .path.display(), .path.display())]
    LinkOwner { path: PathBuf, owner: String },
    #[error("{} is a symbolic link; vmvault never follows a link in its own folders (it could lead anywhere). See where it leads (ls -l '{}'); if that is the right file, put the file itself in its place", .path.display(), .path.display())]
    LinkedFile { path: PathBuf },
    #[error("{} can be written by other users (mode {mode:04o}): one of them may have changed it. Check it (or restore it from a copy), then: chmod go-w '{}'", .path.display(), .path.display())]
    FileWritable { path: PathBuf, mode: u32 },
    #[error("{} has other names (hard links), so someone may have planted it; vmvault will not trust it. Check it, then replace it with a copy of its own: cp -p '{}' '{}.copy' && mv '{}.copy' '{}'", .path.display(), .path.display(), .path.display(), .path.display(), .path.display())]
    Linked { path: PathBuf },
    #[error("{} is not a regular file ({kind}); give the path of a file", .path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{} is too large ({size} bytes; at most {limit} bytes are read for {what})", .path.display())]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("{} already exists; vmvault never replaces a file: move it away or choose another name", .path.display())]
    Exists { path: PathBuf },
    #[error("{} can be read by other users (mode {mode:04o}), and it holds a secret ({what}); vmvault refuses it, as ssh refuses a private key anyone can read. Fix: chmod 600 '{}'", .path.display(), .path.display())]
    Exposed {
        path: PathBuf,
        what: &'static str,
        mode: u32,
    },
    #[error("{} holds a secret ({what}) but belongs to {owner}, not to {me} who runs vmvault: {owner} could have replaced it. vmvault refuses it, as ssh refuses a key file of another user. Fix: use your own copy, or if the file is yours now: chown {me} '{}'", .path.display(), .path.display())]
    SecretOwner {
        path: PathBuf,
        what: &'static str,
        owner: String,
        me: String,
    },
}

impl FsxError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> FsxError {
        FsxError::Io {
            path: path.into(),
            source,
        }
    }

    /// The I/O error behind this one, if any (to classify "disk full" and the like).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            FsxError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether this error says the file or folder is already there.
    pub fn is_exists(&self) -> bool {
        matches!(self, FsxError::Exists { .. })
            || self
                .io_error()
                .is_some_and(|e| e.kind() == io::ErrorKind::AlreadyExists)
    }
}

pub type Result<T> = std::result::Result<T, FsxError>;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file name contains a NUL byte",
        )
    })
}

/// A plain file name: one component, not `.` or `..`, no `/`.
fn check_name(name: &OsStr) -> io::Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` is not a plain file name", name.to_string_lossy()),
        ));
    }
    cstr(name)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `stat` into the buffer on success.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call above.
    Ok(unsafe { st.assume_init() })
}

fn fstatat_nofollow(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated; fstatat writes a whole `stat` on success.
    cvt(unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: initialised by the successful call above.
    Ok(unsafe { st.assume_init() })
}

/// The user name of `uid` for messages ("uid 1001" when it has none).
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 1024];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into our buffers only, and sets `result` to `pwd` on success.
    let r = unsafe {
        libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if r == 0 && !result.is_null() {
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { CStr::from_ptr((*result).pw_name) };
        if let Ok(s) = name.to_str() {
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    format!("uid {uid}")
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() }
}

fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a folder",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

/// Checks that a folder we are about to trust belongs to us and is not writable by others.
fn check_private(path: &Path, st: &libc::stat) -> Result<()> {
    let me = euid();
    if st.st_uid != me {
        return Err(FsxError::Owner {
            path: path.to_path_buf(),
            owner: user_name(st.st_uid),
            me: user_name(me),
        });
    }
    if st.st_mode & 0o022 != 0 {
        return Err(FsxError::Writable {
            path: path.to_path_buf(),
            mode: st.st_mode & 0o7777,
        });
    }
    Ok(())
}

/// Checks a folder above a private one: it belongs to root or us, and others cannot
/// rename what is in it (not writable by group or others, or sticky like `/tmp`).
fn check_ancestor(path: &Path, md: &std::fs::Metadata) -> Result<()> {
    let me = euid();
    if md.uid() != 0 && md.uid() != me {
        return Err(FsxError::Owner {
            path: path.to_path_buf(),
            owner: user_name(md.uid()),
            me: user_name(me),
        });
    }
    let mode = md.permissions().mode();
    if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(FsxError::Writable {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Resolves `path` one component at a time, checking every folder it passes through
/// with [`check_ancestor`] and every symbolic link it follows: a link must belong to root
/// or us (the folder holding it is checked like any other). Checking only the canonical
/// path would trust a link in a folder another user controls, which that user could point
/// elsewhere at any time.
fn resolve_trusted(path: &Path) -> Result<PathBuf> {
    const MAX_LINKS: u32 = 40;
    let path = absolute(path)?;
    let me = euid();
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    let push = |todo: &mut Vec<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    };
    push(&mut todo, &path);
    let mut cur = PathBuf::from("/");
    let md = std::fs::symlink_metadata(&cur).map_err(|e| FsxError::io(&cur, e))?;
    check_ancestor(&cur, &md)?;
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            // `cur` holds no links, so its parent is the lexical one.
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let md = std::fs::symlink_metadata(&next).map_err(|e| FsxError::io(&next, e))?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(FsxError::io(
                    &path,
                    io::Error::from_raw_os_error(libc::ELOOP),
                ));
            }
            if md.uid() != 0 && md.uid() != me {
                return Err(FsxError::LinkOwner {
                    path: next,
                    owner: user_name(md.uid()),
                });
            }
            let target = std::fs::read_link(&next).map_err(|e| FsxError::io(&next, e))?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            push(&mut todo, &target);
            continue;
        }
        check_ancestor(&next, &md)?;
        cur = next;
    }
    Ok(cur)
}

/// An open folder: every file vmvault creates or opens in it goes through this handle, so
/// a rename or a symlink planted in a path above it cannot redirect the operation.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn open_dir_at(at: RawFd, name: &CStr, nofollow: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: `name` is NUL-terminated; the returned fd is owned by the OwnedFd.
    let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Classifies the error of opening a folder with O_NOFOLLOW|O_DIRECTORY: a symlink reads as
/// ELOOP, a file as ENOTDIR.
fn dir_open_error(dir: RawFd, name: &CStr, path: &Path, e: io::Error) -> FsxError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => FsxError::Symlink {
            path: path.to_path_buf(),
        },
        Some(libc::ENOTDIR) => match fstatat_nofollow(dir, name) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => FsxError::Symlink {
                path: path.to_path_buf(),
            },
            _ => FsxError::NotDir {
                path: path.to_path_buf(),
            },
        },
        _ => FsxError::io(path, e),
    }
}

impl Dir {
    /// Opens (creating with mode 0700 when `create` and missing) a folder that vmvault
    /// keeps private: the data folder or a vault. Refused when the folder or one above it
    /// could be changed by another user, or when the folder itself is a symbolic link.
    pub fn open_private(path: &Path, create: bool) -> Result<Dir> {
        let path = absolute(path)?;
        // Find the deepest existing ancestor; the folders above it must be trustworthy.
        let mut missing: Vec<&OsStr> = Vec::new();
        let mut base = path.as_path();
        loop {
            match std::fs::symlink_metadata(base) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let (Some(parent), Some(name)) = (base.parent(), base.file_name()) else {
                        return Err(FsxError::io(base, e));
                    };
                    if !create {
                        return Err(FsxError::io(&path, e));
                    }
                    missing.push(name);
                    base = parent;
                }
                Err(e) => return Err(FsxError::io(base, e)),
            }
        }
        missing.reverse();
        // The existing part: every folder above the last existing one is checked on its
        // canonical path (symlinks above are resolved, and the folders they lead to are
        // what must be safe).
        let (mut dir, mut shown) = if missing.is_empty() {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let name = path.file_name().unwrap_or(OsStr::new("."));
            let parent_dir = Dir::open_trusted_chain(parent)?;
            let c = cstr(name).map_err(|e| FsxError::io(&path, e))?;
            let fd = open_dir_at(parent_dir.fd.as_raw_fd(), &c, true)
                .map_err(|e| dir_open_error(parent_dir.fd.as_raw_fd(), &c, &path, e))?;
            let d = Dir {
                fd,
                path: path.clone(),
            };
            let st = fstat(d.fd.as_fd()).map_err(|e| FsxError::io(&path, e))?;
            check_private(&path, &st)?;
            return Ok(d);
        } else {
            (Dir::open_trusted_chain(base)?, base.to_path_buf())
        };
        for name in missing {
            shown = shown.join(name);
            dir = dir.subdir(name, true).map_err(|e| match e {
                FsxError::Io { source, .. } => FsxError::io(&shown, source),
                e => e,
            })?;
        }
        Ok(dir)
    }

    /// Opens an existing folder that must be safe to create folders in: it and every folder
    /// above it belong to root or us and cannot be renamed by others, along the path as
    /// given and along every symbolic link it passes through ([`resolve_trusted`]).
    fn open_trusted_chain(path: &Path) -> Result<Dir> {
        let resolved = resolve_trusted(path)?;
        let fd = open_dir_at(
            libc::AT_FDCWD,
            &cstr(resolved.as_os_str()).map_err(|e| FsxError::io(&resolved, e))?,
            true,
        )
        .map_err(|e| FsxError::io(&resolved, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a folder the user named as a destination (a restore target). Symbolic links
    /// in the path are followed (the user chose it); everything done in it afterwards is
    /// relative to this handle.
    pub fn open_user(path: &Path) -> Result<Dir> {
        let c = cstr(path.as_os_str()).map_err(|e| FsxError::io(path, e))?;
        let fd = open_dir_at(libc::AT_FDCWD, &c, false).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                FsxError::NotDir {
                    path: path.to_path_buf(),
                }
            } else {
                FsxError::io(path, e)
            }
        })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The folder's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`, for messages.
    pub fn path_of(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// The open folder's descriptor (for `*at` calls and `/proc/self/fd` paths).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens (creating with mode 0700 when `create` and missing) the private subfolder
    /// `name`: never through a symlink, and only when it belongs to us and no one else can
    /// write it.
    pub fn subdir(&self, name: impl AsRef<OsStr>, create: bool) -> Result<Dir> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        if create {
            // SAFETY: `c` is NUL-terminated.
            let r = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::AlreadyExists {
                    return Err(FsxError::io(&path, e));
                }
            }
        }
        let fd = open_dir_at(self.fd.as_raw_fd(), &c, true)
            .map_err(|e| dir_open_error(self.fd.as_raw_fd(), &c, &path, e))?;
        let st = fstat(fd.as_fd()).map_err(|e| FsxError::io(&path, e))?;
        check_private(&path, &st)?;
        Ok(Dir { fd, path })
    }

    /// Creates a new private folder `name` (mode 0700); an error if the name is taken.
    pub fn create_subdir(&self, name: impl AsRef<OsStr>) -> Result<Dir> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        // SAFETY: `c` is NUL-terminated.
        let r = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(FsxError::Exists { path });
            }
            return Err(FsxError::io(&path, e));
        }
        self.subdir(name, false)
    }

    fn open_at(&self, name: &OsStr, flags: libc::c_int, mode: u32) -> Result<File> {
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        // SAFETY: `c` is NUL-terminated; the fd is owned by the File on success.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ELOOP) => FsxError::Symlink { path },
                Some(libc::EEXIST) => FsxError::Exists { path },
                _ => FsxError::io(&path, e),
            });
        }
        // SAFETY: a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        let st = fstat(file.as_fd()).map_err(|e| FsxError::io(&path, e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsxError::NotAFile {
                path,
                kind: kind_of(st.st_mode),
            });
        }
        // O_NONBLOCK only kept a FIFO from blocking the open; regular files ignore it, but
        // clear it so the descriptor behaves as usual.
        // SAFETY: plain fcntl calls on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
        Ok(file)
    }

    /// Creates the new file `name` (mode `mode`) for writing: an error if anything is
    /// there already, a symlink included.
    pub fn create_new(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        self.open_at(
            name.as_ref(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode,
        )
    }

    /// Like [`Dir::create_new`], but opened for reading and writing.
    pub fn create_new_rw(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        self.open_at(
            name.as_ref(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            mode,
        )
    }

    /// Opens the regular file `name` for reading and writing, creating it (mode `mode`)
    /// when missing; never through a symlink, never a FIFO or device, and only a file of
    /// ours with no other names (hard links).
    pub fn open_or_create(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        let name = name.as_ref();
        let f = self.open_at(name, libc::O_RDWR | libc::O_CREAT, mode)?;
        self.check_own_file(name, &f)?;
        Ok(f)
    }

    /// Opens the regular file `name` for appending, creating it (mode `mode`) when missing;
    /// the same checks as [`Dir::open_or_create`].
    pub fn open_append(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        let name = name.as_ref();
        let f = self.open_at(name, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT, mode)?;
        self.check_own_file(name, &f)?;
        Ok(f)
    }

    /// Opens the existing regular file `name` for reading, never through a symlink.
    pub fn open_read(&self, name: impl AsRef<OsStr>) -> Result<File> {
        self.open_at(name.as_ref(), libc::O_RDONLY, 0)
    }

    fn check_own_file(&self, name: &OsStr, f: &File) -> Result<()> {
        let path = self.path_of(name);
        let st = fstat(f.as_fd()).map_err(|e| FsxError::io(&path, e))?;
        if st.st_uid != euid() {
            return Err(FsxError::Owner {
                path,
                owner: user_name(st.st_uid),
                me: user_name(euid()),
            });
        }
        if st.st_nlink > 1 {
            return Err(FsxError::io(
                &path,
                io::Error::other(
                    "the file has other names (hard links); vmvault will not write to it. Remove it",
                ),
            ));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(FsxError::FileWritable {
                path,
                mode: st.st_mode & 0o7777,
            });
        }
        Ok(())
    }

    /// What is at `name`, without following a symlink (None when nothing is).
    pub fn entry_kind(&self, name: impl AsRef<OsStr>) -> Result<Option<&'static str>> {
        Ok(self.stat_entry(name)?.map(|st| st.kind))
    }

    /// Type, size and modification time of the entry `name`, without following a symlink
    /// (None when nothing is there).
    pub fn stat_entry(&self, name: impl AsRef<OsStr>) -> Result<Option<EntryStat>> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        match fstatat_nofollow(self.fd.as_raw_fd(), &c) {
            Ok(st) => Ok(Some(EntryStat::of(&st))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsxError::io(&path, e)),
        }
    }

    /// Checks that what is at `name`, if anything, is a file vmvault may trust as its own:
    /// a regular file (not a link), ours, with no other names, that others cannot write.
    /// For files opened by path by another library (SQLite), in a folder others cannot
    /// write: what passes here cannot be swapped afterwards.
    pub fn check_own_entry(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        let st = match fstatat_nofollow(self.fd.as_raw_fd(), &c) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(FsxError::io(&path, e)),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFLNK => return Err(FsxError::LinkedFile { path }),
            m => {
                return Err(FsxError::NotAFile {
                    path,
                    kind: kind_of(m),
                })
            }
        }
        if st.st_uid != euid() {
            return Err(FsxError::Owner {
                path,
                owner: user_name(st.st_uid),
                me: user_name(euid()),
            });
        }
        if st.st_nlink > 1 {
            return Err(FsxError::Linked { path });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(FsxError::FileWritable {
                path,
                mode: st.st_mode & 0o7777,
            });
        }
        Ok(())
    }

    /// The names in the folder (`.` and `..` left out), read through a descriptor of its
    /// own: a directory stream moves its descriptor's offset, which a `dup` would share
    /// with this handle and with every other listing running at the same time.
    pub fn entry_names(&self) -> Result<Vec<std::ffi::OsString>> {
        let fd = open_dir_at(self.fd.as_raw_fd(), c".", true)
            .map_err(|e| FsxError::io(&self.path, e))?;
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open folder descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(raw) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so the descriptor is still ours to close.
            unsafe { libc::close(raw) };
            return Err(FsxError::io(&self.path, e));
        }
        let mut names = Vec::new();
        let result = loop {
            // readdir returns NULL both at the end and on error; only errno tells them apart.
            // SAFETY: errno is thread-local; readdir reads the stream we own.
            let ent = unsafe {
                *libc::__errno_location() = 0;
                libc::readdir(stream)
            };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                break match e.raw_os_error() {
                    Some(0) | None => Ok(()),
                    Some(_) => Err(FsxError::io(&self.path, e)),
                };
            }
            // SAFETY: d_name of a returned entry is NUL-terminated and lives until the next
            // readdir on this stream; it is copied out at once.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        };
        // SAFETY: closes the stream (and its descriptor) exactly once.
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }

    /// Whether anything (a dangling symlink included) is at `name`.
    pub fn exists(&self, name: impl AsRef<OsStr>) -> Result<bool> {
        Ok(self.entry_kind(name)?.is_some())
    }

    /// Moves `from` (in this folder) to `to` in `dest`, failing with
    /// [`FsxError::Exists`] if anything is at `to`: what is there is never replaced.
    /// Exchanges the entries `a` and `b` of this folder in one atomic step
    /// (`renameat2(RENAME_EXCHANGE)`): at every moment each name holds one of the two.
    pub fn rename_exchange(&self, a: impl AsRef<OsStr>, b: impl AsRef<OsStr>) -> Result<()> {
        let (a, b) = (a.as_ref(), b.as_ref());
        let ca = check_name(a).map_err(|e| FsxError::io(self.path_of(a), e))?;
        let cb = check_name(b).map_err(|e| FsxError::io(self.path_of(b), e))?;
        // SAFETY: both names are NUL-terminated; the descriptor is an open folder.
        let r = unsafe {
            libc::renameat2(
                self.fd.as_raw_fd(),
                ca.as_ptr(),
                self.fd.as_raw_fd(),
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        Err(FsxError::io(self.path_of(b), io::Error::last_os_error()))
    }

    pub fn rename_noreplace(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let to_path = dest.path_of(to);
        let cf = check_name(from).map_err(|e| FsxError::io(self.path_of(from), e))?;
        let ct = check_name(to).map_err(|e| FsxError::io(&to_path, e))?;
        // SAFETY: both names are NUL-terminated; the descriptors are open folders.
        let r = unsafe {
            libc::renameat2(
                self.fd.as_raw_fd(),
                cf.as_ptr(),
                dest.fd.as_raw_fd(),
                ct.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EEXIST) => Err(FsxError::Exists { path: to_path }),
            // No RENAME_NOREPLACE on this file system: a hard link cannot replace either.
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                // SAFETY: as above.
                let r = unsafe {
                    libc::linkat(
                        self.fd.as_raw_fd(),
                        cf.as_ptr(),
                        dest.fd.as_raw_fd(),
                        ct.as_ptr(),
                        0,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    return Err(if e.raw_os_error() == Some(libc::EEXIST) {
                        FsxError::Exists { path: to_path }
                    } else {
                        FsxError::io(&to_path, e)
                    });
                }
                self.remove_file(from)
            }
            _ => Err(FsxError::io(&to_path, e)),
        }
    }

    /// Moves `from` (in this folder) to `to` in `dest`, replacing what is at `to` (a file,
    /// or a symlink, which is replaced and never followed). Only for stores whose objects
    /// are meant to be replaced by a newer whole version; everything else places with
    /// [`Dir::rename_noreplace`].
    pub fn rename_replace(
        &self,
        from: impl AsRef<OsStr>,
        dest: &Dir,
        to: impl AsRef<OsStr>,
    ) -> Result<()> {
        let (from, to) = (from.as_ref(), to.as_ref());
        let to_path = dest.path_of(to);
        let cf = check_name(from).map_err(|e| FsxError::io(self.path_of(from), e))?;
        let ct = check_name(to).map_err(|e| FsxError::io(&to_path, e))?;
        // SAFETY: both names are NUL-terminated; the descriptors are open folders.
        cvt(unsafe {
            libc::renameat(
                self.fd.as_raw_fd(),
                cf.as_ptr(),
                dest.fd.as_raw_fd(),
                ct.as_ptr(),
            )
        })
        .map(|_| ())
        .map_err(|e| FsxError::io(&to_path, e))
    }

    /// Writes the new file `name` (mode `mode`) durably and whole: into a temp file of this
    /// folder, synced, moved to `name` without replacing anything ([`FsxError::Exists`] if
    /// something is there), and the folder synced. The temp file is removed on failure.
    pub fn write_new(&self, name: impl AsRef<OsStr>, data: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = name.as_ref();
        check_name(name).map_err(|e| FsxError::io(self.path_of(name), e))?;
        let temp = format!(
            ".tmp-{}-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let write = || -> Result<()> {
            let mut f = self.create_new(&temp, mode)?;
            f.write_all(data)
                .and_then(|_| f.sync_all())
                .map_err(|e| FsxError::io(self.path_of(&temp), e))?;
            self.rename_noreplace(&temp, self, name)?;
            self.sync()
        };
        write().inspect_err(|_| {
            let _ = self.remove_file(&temp);
        })
    }

    /// Removes the file (or symlink) `name`; never follows it.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        // SAFETY: `c` is NUL-terminated.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) })
            .map(|_| ())
            .map_err(|e| FsxError::io(&path, e))
    }

    /// Removes the empty folder `name`.
    pub fn remove_dir(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        // SAFETY: `c` is NUL-terminated.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })
            .map(|_| ())
            .map_err(|e| FsxError::io(&path, e))
    }

    /// Makes the folder's entries durable (after creating, renaming or removing files).
    pub fn sync(&self) -> Result<()> {
        // SAFETY: fsync on a descriptor we own.
        cvt(unsafe { libc::fsync(self.fd.as_raw_fd()) })
            .map(|_| ())
            .map_err(|e| FsxError::io(&self.path, e))
    }

    /// Makes everything written on the folder's file system durable: one `syncfs(2)`
    /// instead of an fsync per file.
    pub fn sync_fs(&self) -> Result<()> {
        // SAFETY: syncfs only reads the descriptor, which we own.
        cvt(unsafe { libc::syncfs(self.fd.as_raw_fd()) })
            .map(|_| ())
            .map_err(|e| FsxError::io(&self.path, e))
    }

    /// Another handle on the same open folder (a duplicate descriptor).
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| FsxError::io(&self.path, e))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// A path that names exactly this open folder for a child process that inherits the
    /// descriptor (the child must get it without `O_CLOEXEC`): `/proc/self/fd/N`.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Whether the entry `name` is the file `file` is open on (same device and inode; a
    /// symlink at `name` is not followed): to tell that what a name leads to is ours.
    pub fn holds(&self, name: impl AsRef<OsStr>, file: BorrowedFd<'_>) -> Result<bool> {
        let name = name.as_ref();
        let path = self.path_of(name);
        let c = check_name(name).map_err(|e| FsxError::io(&path, e))?;
        let ours = fstat(file).map_err(|e| FsxError::io(&path, e))?;
        match fstatat_nofollow(self.fd.as_raw_fd(), &c) {
            Ok(st) => Ok(st.st_dev == ours.st_dev && st.st_ino == ours.st_ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(FsxError::io(&path, e)),
        }
    }

    /// Free space and state of the file system that holds this folder.
    pub fn fs_stat(&self) -> Result<FsStat> {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: fstatvfs writes a whole `statvfs` into the buffer on success.
        cvt(unsafe { libc::fstatvfs(self.fd.as_raw_fd(), st.as_mut_ptr()) })
            .map_err(|e| FsxError::io(&self.path, e))?;
        // SAFETY: initialised by the successful call above.
        Ok(space_of(&unsafe { st.assume_init() }))
    }

    /// Whether this process may create files in the folder (the permission bits and ACLs,
    /// checked with the effective user id; not a promise: the file system may still refuse).
    pub fn writable(&self) -> bool {
        // SAFETY: "." is NUL-terminated; faccessat only reads the descriptor.
        unsafe {
            libc::faccessat(
                self.fd.as_raw_fd(),
                c".".as_ptr(),
                libc::W_OK | libc::X_OK,
                libc::AT_EACCESS,
            ) == 0
        }
    }
}

/// What [`Dir::stat_entry`] tells about an entry of a folder (a symlink is described,
/// never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    /// What it is, for messages: "a regular file", "a symbolic link", "a folder", …
    pub kind: &'static str,
    /// Whether it is a regular file.
    pub is_file: bool,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// Permission bits (`0o7777`).
    pub mode: u32,
}

impl EntryStat {
    fn of(st: &libc::stat) -> EntryStat {
        // The fields are narrower or signed on some targets.
        #[allow(clippy::unnecessary_cast)]
        let (secs, nanos) = (st.st_mtime as i64, st.st_mtime_nsec as u32);
        let since_epoch = Duration::new(secs.unsigned_abs(), nanos.min(999_999_999));
        let modified = if secs >= 0 {
            UNIX_EPOCH.checked_add(since_epoch)
        } else {
            UNIX_EPOCH.checked_sub(since_epoch)
        }
        .unwrap_or(UNIX_EPOCH);
        EntryStat {
            kind: kind_of(st.st_mode),
            is_file: st.st_mode & libc::S_IFMT == libc::S_IFREG,
            size: u64::try_from(st.st_size).unwrap_or(0),
            modified,
            mode: st.st_mode & 0o7777,
        }
    }
}

/// What [`Dir::fs_stat`] tells about a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStat {
    /// Bytes this process may still write (`f_bavail`: without the reserve for root).
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What `statvfs` says, in bytes.
fn space_of(st: &libc::statvfs) -> FsStat {
    // The fields are narrower than u64 on some targets.
    #[allow(clippy::unnecessary_cast)]
    let (frsize, bavail, blocks) = (st.f_frsize as u64, st.f_bavail as u64, st.f_blocks as u64);
    FsStat {
        free_bytes: bavail.saturating_mul(frsize),
        total_bytes: blocks.saturating_mul(frsize),
        read_only: st.f_flag & libc::ST_RDONLY != 0,
    }
}

/// The file system of `path`, asked at `path` or the nearest folder above it that exists:
/// that folder and what `statvfs` says of it.
fn nearest_fs_stat(path: &Path) -> Result<(PathBuf, FsStat)> {
    let mut at = path;
    loop {
        match std::fs::metadata(at) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Err(FsxError::io(path, e)),
            },
            Err(e) => return Err(FsxError::io(at, e)),
        }
    }
    let c = cstr(at.as_os_str()).map_err(|e| FsxError::io(at, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated; statvfs writes a whole `statvfs` on success.
    cvt(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) }).map_err(|e| FsxError::io(at, e))?;
    // SAFETY: initialised by the successful call above.
    Ok((at.to_path_buf(), space_of(&unsafe { st.assume_init() })))
}

/// Whether an I/O error means the file system (or the user's quota on it) is full.
pub fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

/// "the file system holding PATH has 0 B free of 40 MiB": for messages about a full disk.
/// Asks the nearest folder of `path` that exists; None if none can be asked.
pub fn space_note(path: &Path) -> Option<String> {
    let (_, st) = nearest_fs_stat(path).ok()?;
    Some(format!(
        "the file system holding {} has {} free of {}",
        path.display(),
        crate::fmt::bytes(st.free_bytes),
        crate::fmt::bytes(st.total_bytes)
    ))
}

/// `path` made absolute against the current folder (without resolving symlinks).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(FsxError::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "an empty path names no folder"),
        ));
    }
    std::path::absolute(path).map_err(|e| FsxError::io(path, e))
}

/// Room for new files at `path` (which need not exist yet): the nearest existing folder at
/// or above it, and the bytes an unprivileged user may still write on that folder's file
/// system (`statvfs`'s available blocks). For showing, before writing: the answer may be
/// stale a moment later.
pub fn free_space(path: &Path) -> Result<(PathBuf, u64)> {
    nearest_fs_stat(path).map(|(at, st)| (at, st.free_bytes))
}

/// Size limits for files the user hands vmvault.
pub mod limits {
    /// A config file.
    pub const CONFIG: u64 = 4 << 20;
    /// A policy file (TOML).
    pub const POLICY: u64 = 1 << 20;
    /// An Azure policy as JSON.
    pub const AZURE_JSON: u64 = 4 << 20;
    /// A simulated subscription (a few hundred bytes per VM; `generate_vms` makes large ones).
    pub const SUBSCRIPTION: u64 = 16 << 20;
    /// A vault's key file (a few hundred bytes of TOML).
    pub const KEY_FILE: u64 = 64 << 10;
    /// A passphrase file (only its first line is used).
    pub const PASSPHRASE_FILE: u64 = 64 << 10;
}

/// Reads a file the user named as input (config, policy, Azure JSON): only a regular file
/// (symlinks to one are fine: the user chose the path), at most `limit` bytes. A FIFO, a
/// socket or a device is refused without blocking, and a larger file is refused with its
/// size and the limit.
pub fn read_input_file(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let (file, st) = open_input(path)?;
    read_bounded(file, &st, path, limit, what)
}

/// Reads a file that holds a secret the user keeps (a key file) like [`read_input_file`],
/// and refuses it, with the command that fixes it, when it belongs to another user
/// ([`FsxError::SecretOwner`]) or its group or other users may read it
/// ([`FsxError::Exposed`]).
pub fn read_secret_file(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>> {
    let (file, st) = open_input(path)?;
    let me = euid();
    if st.st_uid != me {
        return Err(FsxError::SecretOwner {
            path: path.to_path_buf(),
            what,
            owner: user_name(st.st_uid),
            me: user_name(me),
        });
    }
    if st.st_mode & 0o077 != 0 {
        return Err(FsxError::Exposed {
            path: path.to_path_buf(),
            what,
            mode: st.st_mode & 0o7777,
        });
    }
    read_bounded(file, &st, path, limit, what)
}

/// Opens a file the user named for reading: only a regular file, without blocking on a FIFO.
fn open_input(path: &Path) -> Result<(File, libc::stat)> {
    let c = cstr(path.as_os_str()).map_err(|e| FsxError::io(path, e))?;
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
    // SAFETY: `c` is NUL-terminated; the fd is owned by the File on success.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(FsxError::io(path, io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    let file = unsafe { File::from_raw_fd(fd) };
    let st = fstat(file.as_fd()).map_err(|e| FsxError::io(path, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(FsxError::NotAFile {
            path: path.to_path_buf(),
            kind: kind_of(st.st_mode),
        });
    }
    Ok((file, st))
}

/// Reads the whole of `file` (whose `fstat` is `st`), refusing more than `limit` bytes.
fn read_bounded(
    file: File,
    st: &libc::stat,
    path: &Path,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>> {
    let size = st.st_size as u64;
    if size > limit {
        return Err(FsxError::TooLarge {
            path: path.to_path_buf(),
            what,
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    // A file that grows while it is read is cut at the limit and refused.
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FsxError::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(FsxError::TooLarge {
            path: path.to_path_buf(),
            what,
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// Like [`read_input_file`], as UTF-8 text ([`input_text`]).
pub fn read_input_text(path: &Path, limit: u64, what: &'static str) -> Result<String> {
    let bytes = read_input_file(path, limit, what)?;
    input_text(bytes)
        .map_err(|message| FsxError::io(path, io::Error::new(io::ErrorKind::InvalidData, message)))
}

/// The text of a file a user gave: UTF-8, with a leading byte order mark dropped (Windows
/// editors write one); UTF-16 and UTF-32 (a byte order mark, or NUL bytes, which no text
/// holds) are refused with what to do, rather than parsed into nonsense errors.
pub fn input_text(mut bytes: Vec<u8>) -> std::result::Result<String, String> {
    const RESAVE: &str = "save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)";
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        bytes.drain(..3);
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(format!(
            "UTF-16 or UTF-32 text (it starts with a byte order mark); {RESAVE}"
        ));
    }
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(format!(
            "not text: a NUL byte at offset {at} (UTF-16 or UTF-32 text, or a binary file); {RESAVE}"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

#[cfg(test)]
mod free_space_tests {
    use super::*;

    #[test]
    fn input_text_drops_a_bom_and_refuses_utf16() {
        assert_eq!(input_text(b"\xEF\xBB\xBF{}".to_vec()).unwrap(), "{}");
        let utf16: Vec<u8> = "{\"a\": 1}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let e = input_text(utf16.clone()).unwrap_err();
        assert!(e.contains("UTF-16") && e.contains("offset 1"), "{e}");
        let mut bom = vec![0xFF, 0xFE];
        bom.extend(utf16);
        assert!(input_text(bom).unwrap_err().contains("byte order mark"));
        assert!(input_text(vec![b'a', 0xC3])
            .unwrap_err()
            .contains("not UTF-8"));
    }

    #[test]
    fn free_space_is_asked_of_the_nearest_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let want = dir.path().join("not/yet/there");
        let (at, free) = free_space(&want).unwrap();
        assert_eq!(at, dir.path());
        assert!(free > 0);
        assert!(free_space(Path::new("relative/and/missing")).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    fn private_tmp() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        t
    }

    #[test]
    fn open_private_creates_owner_only_folders() {
        let t = private_tmp();
        let p = t.path().join("a/b/c");
        let d = Dir::open_private(&p, true).unwrap();
        assert_eq!(d.path(), p);
        for q in [t.path().join("a"), t.path().join("a/b"), p.clone()] {
            let m = std::fs::metadata(&q).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o700, "{}", q.display());
        }
        // Opening it again works; without `create` a missing one is an error.
        Dir::open_private(&p, false).unwrap();
        assert!(Dir::open_private(&t.path().join("nope"), false).is_err());
    }

    #[test]
    fn open_private_refuses_loose_modes_and_symlinks() {
        let t = private_tmp();
        let p = t.path().join("data");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Dir::open_private(&p, true).unwrap_err();
        assert!(matches!(e, FsxError::Writable { .. }), "{e}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).unwrap();
        Dir::open_private(&p, true).unwrap();

        let link = t.path().join("link");
        symlink(&p, &link).unwrap();
        let e = Dir::open_private(&link, true).unwrap_err();
        assert!(matches!(e, FsxError::Symlink { .. }), "{e}");
        // A subfolder that is a symlink is refused too.
        let d = Dir::open_private(&p, false).unwrap();
        symlink("/etc", p.join("chunks")).unwrap();
        let e = d.subdir("chunks", true).unwrap_err();
        assert!(matches!(e, FsxError::Symlink { .. }), "{e}");
    }

    #[test]
    fn a_folder_of_another_user_is_refused() {
        if euid() != 0 {
            // Only root can hand a folder to another user; CI runs as root.
            crate::testing::skip("chown to another user needs root");
            return;
        }
        let t = private_tmp();
        let theirs = t.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = Dir::open_private(&theirs, true).unwrap_err();
        assert!(matches!(e, FsxError::Owner { .. }), "{e}");
        assert!(e.to_string().contains("chown root"), "{e}");
        // Their folder above ours is refused as well: they could rename ours away.
        let e = Dir::open_private(&theirs.join("vault"), true).unwrap_err();
        assert!(matches!(e, FsxError::Owner { .. }), "{e}");
        // A file of theirs in a folder of ours is not appended to.
        let d = Dir::open_private(t.path(), false).unwrap();
        std::fs::write(t.path().join("log"), b"").unwrap();
        std::os::unix::fs::chown(t.path().join("log"), Some(65534), None).unwrap();
        let e = d.open_append("log", 0o600).unwrap_err();
        assert!(matches!(e, FsxError::Owner { .. }), "{e}");
    }

    #[test]
    fn links_of_another_user_on_the_way_are_refused() {
        if euid() != 0 {
            crate::testing::skip("chown to another user needs root");
            return;
        }
        let t = private_tmp();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        // A link another user owns, in a folder of ours: they made it, they chose where it
        // leads.
        std::os::unix::fs::symlink(&real, t.path().join("their-link")).unwrap();
        std::os::unix::fs::lchown(t.path().join("their-link"), Some(65534), None).unwrap();
        let e = Dir::open_private(&t.path().join("their-link").join("vault"), true).unwrap_err();
        assert!(matches!(e, FsxError::LinkOwner { .. }), "{e}");
        assert!(!e.to_string().contains("chown"), "{e}");
        assert!(e.to_string().contains("their-link"), "{e}");
        // A link of ours in their folder: they can replace it at any time.
        let theirs = t.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        std::os::unix::fs::symlink(&real, theirs.join("link")).unwrap();
        let e = Dir::open_private(&theirs.join("link").join("vault"), true).unwrap_err();
        assert!(matches!(e, FsxError::Owner { .. }), "{e}");
        // Our own link in our own folder (e.g. /var/lib -> /srv/lib) is followed.
        std::os::unix::fs::symlink(&real, t.path().join("our-link")).unwrap();
        Dir::open_private(&t.path().join("our-link").join("vault"), true).unwrap();
        assert!(real.join("vault").is_dir());
    }

    #[test]
    fn a_log_others_can_write_is_not_appended_to() {
        let t = private_tmp();
        let d = Dir::open_private(t.path(), false).unwrap();
        std::fs::write(t.path().join("log"), b"").unwrap();
        std::fs::set_permissions(t.path().join("log"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let e = d.open_append("log", 0o600).unwrap_err();
        assert!(matches!(e, FsxError::FileWritable { .. }), "{e}");
        std::fs::set_permissions(t.path().join("log"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        d.open_append("log", 0o600).unwrap();
    }

    #[test]
    fn planted_files_are_not_trusted() {
        let t = private_tmp();
        let d = Dir::open_private(t.path(), false).unwrap();
        d.check_own_entry("missing").unwrap();
        std::fs::write(t.path().join("mine"), b"x").unwrap();
        std::fs::set_permissions(
            t.path().join("mine"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        d.check_own_entry("mine").unwrap();
        std::os::unix::fs::symlink(t.path().join("mine"), t.path().join("link")).unwrap();
        let e = d.check_own_entry("link").unwrap_err();
        assert!(matches!(e, FsxError::LinkedFile { .. }), "{e}");
        std::fs::hard_link(t.path().join("mine"), t.path().join("hard")).unwrap();
        let e = d.check_own_entry("hard").unwrap_err();
        assert!(matches!(e, FsxError::Linked { .. }), "{e}");
        std::fs::remove_file(t.path().join("hard")).unwrap();
        std::fs::set_permissions(
            t.path().join("mine"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let e = d.check_own_entry("mine").unwrap_err();
        assert!(matches!(e, FsxError::FileWritable { .. }), "{e}");
        assert!(e.to_string().contains("Check it"), "{e}");
        std::fs::create_dir(t.path().join("dir")).unwrap();
        let e = d.check_own_entry("dir").unwrap_err();
        assert!(matches!(e, FsxError::NotAFile { .. }), "{e}");
        if euid() == 0 {
            std::fs::set_permissions(
                t.path().join("mine"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::os::unix::fs::chown(t.path().join("mine"), Some(65534), None).unwrap();
            let e = d.check_own_entry("mine").unwrap_err();
            assert!(matches!(e, FsxError::Owner { .. }), "{e}");
        }
    }

    #[test]
    fn an_ancestor_others_can_write_is_refused() {
        let t = private_tmp();
        let shared = t.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Dir::open_private(&shared.join("data"), true).unwrap_err();
        assert!(matches!(e, FsxError::Writable { .. }), "{e}");
        // Sticky (like /tmp): fine.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        Dir::open_private(&shared.join("data"), true).unwrap();
    }

    #[test]
    fn create_new_never_writes_through_a_planted_name() {
        let t = private_tmp();
        let d = Dir::open_private(t.path(), false).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        symlink(&victim, t.path().join("vault.lock")).unwrap();
        let e = d.create_new("vault.lock", 0o600).unwrap_err();
        assert!(e.is_exists(), "{e}");
        let e = d.open_or_create("vault.lock", 0o600).unwrap_err();
        assert!(matches!(e, FsxError::Symlink { .. }), "{e}");
        let e = d.open_append("vault.lock", 0o600).unwrap_err();
        assert!(matches!(e, FsxError::Symlink { .. }), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A hard link to another file is refused too.
        std::fs::hard_link(&victim, t.path().join("log")).unwrap();
        assert!(d.open_append("log", 0o600).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A FIFO is never opened for writing (and never blocks).
        let fifo = t.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = d.open_or_create("fifo", 0o600).unwrap_err();
        assert!(matches!(e, FsxError::NotAFile { .. }), "{e}");
        // A new file is created with the mode asked for.
        let mut f = d.create_new("new", 0o600).unwrap();
        f.write_all(b"x").unwrap();
        let m = std::fs::metadata(t.path().join("new")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn rename_noreplace_keeps_what_is_there() {
        let t = private_tmp();
        let d = Dir::open_private(t.path(), false).unwrap();
        std::fs::write(t.path().join("a"), b"new").unwrap();
        std::fs::write(t.path().join("b"), b"old").unwrap();
        let e = d.rename_noreplace("a", &d, "b").unwrap_err();
        assert!(e.is_exists(), "{e}");
        assert_eq!(std::fs::read(t.path().join("b")).unwrap(), b"old");
        // A dangling symlink at the target counts as something there.
        symlink("/nonexistent/x", t.path().join("c")).unwrap();
        assert!(d.rename_noreplace("a", &d, "c").unwrap_err().is_exists());
        d.rename_noreplace("a", &d, "d").unwrap();
        assert_eq!(std::fs::read(t.path().join("d")).unwrap(), b"new");
        assert!(!d.exists("a").unwrap());
        assert!(d.exists("c").unwrap());
    }

    #[test]
    fn rename_replace_replaces_a_symlink_without_following_it() {
        let t = private_tmp();
        let d = Dir::open_private(t.path(), false).unwrap();
        std::fs::write(t.path().join("target"), b"theirs").unwrap();
        symlink(t.path().join("target"), t.path().join("obj")).unwrap();
        std::fs::write(t.path().join("new"), b"mine").unwrap();
        d.rename_replace("new", &d, "obj").unwrap();
        assert_eq!(std::fs::read(t.path().join("target")).unwrap(), b"theirs");
        let st = d.stat_entry("obj").unwrap().unwrap();
        assert!(st.is_file);
        assert_eq!(st.size, 4);
    }

    #[test]
    fn entries_are_listed_and_described_without_following_links() {
        let t = private_tmp();
        let d = Dir::open_private(t.path(), false).unwrap();
        std::fs::write(t.path().join("f"), b"12345").unwrap();
        symlink("/nonexistent", t.path().join("l")).unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        std::fs::write(t.path().join(OsStr::from_bytes(b"x\xff")), b"").unwrap();
        // Two listings at once through one handle and its clone do not disturb each other
        // (each reads through a descriptor of its own).
        let clone = d.try_clone().unwrap();
        let (mut a, mut b) = (d.entry_names().unwrap(), clone.entry_names().unwrap());
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let want: Vec<&OsStr> = vec![
            OsStr::new("f"),
            OsStr::new("l"),
            OsStr::new("sub"),
            OsStr::from_bytes(b"x\xff"),
        ];
        assert_eq!(a, want);
        assert_eq!(
            d.entry_names().unwrap().len(),
            4,
            "a second listing sees all"
        );
        let f = d.stat_entry("f").unwrap().unwrap();
        assert!(f.is_file && f.size == 5 && f.kind == "a regular file");
        assert!(f.modified > std::time::UNIX_EPOCH);
        let l = d.stat_entry("l").unwrap().unwrap();
        assert!(!l.is_file && l.kind == "a symbolic link");
        assert_eq!(d.stat_entry("sub").unwrap().unwrap().kind, "a folder");
        assert_eq!(d.stat_entry("missing").unwrap(), None);
        d.sync_fs().unwrap();
    }

    #[test]
    fn input_files_are_bounded_and_regular() {
        let t = private_tmp();
        let p = t.path().join("policy.toml");
        std::fs::write(&p, b"name = \"x\"\n").unwrap();
        assert_eq!(
            read_input_text(&p, 100, "a policy").unwrap(),
            "name = \"x\"\n"
        );
        let e = read_input_file(&p, 4, "a policy").unwrap_err();
        assert!(matches!(e, FsxError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("at most 4 bytes"), "{e}");
        let e = read_input_file(Path::new("/dev/zero"), 100, "a policy").unwrap_err();
        assert!(matches!(e, FsxError::NotAFile { .. }), "{e}");
        assert!(e.to_string().contains("character device"), "{e}");
        let fifo = t.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_input_file(&fifo, 100, "a policy").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_input_file(t.path(), 100, "a policy").unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
    }
}
