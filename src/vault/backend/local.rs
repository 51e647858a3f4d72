//! The local-folder backend: each object is a file in the vault folder.
//!
//! # Layout
//! One folder per kind — `config/`, `keys/`, `chunks/`, `indexes/`, `manifests/`,
//! `items/`, `policies/`, `locks/` — holding one file per object, named by the object's
//! name. Chunks are fanned out by the first two hex digits of their name
//! (`chunks/ab/abcdef…`, 256 folders made when the backend is opened), so no folder holds
//! more than a few thousand entries even in a vault of millions of chunks; the other kinds
//! stay small enough for one folder each. Indexes are flat (`indexes/<point>.d<disk>`): a
//! folder per point would only add a level to create and remove.
//!
//! # How the promises of [`Backend`] are kept
//! - **No link is followed, nothing foreign is trusted.** The backend opens on a vault
//!   folder already checked by [`Dir::open_private`]; every kind folder and fan-out folder is
//!   opened through a handle, never through a symlink, and only when it belongs to us and no
//!   one else can write it; every file is opened `O_NOFOLLOW` relative to its folder. A
//!   symlink planted at an object name is refused on read and replaced (never written
//!   through) on put; entries that are not our objects (symlinks, foreign names) are not
//!   listed. Files are 0600, folders 0700.
//! - **Atomic put.** The bytes go to `.tmp-<name>-<pid>-<n>` in the object's own folder
//!   (created `O_EXCL`), which is then renamed over the name: a reader sees the old file or
//!   the new one. A crash before the rename leaves only the temp file, which
//!   [`Backend::cleanup_temp`] sweeps once it is old enough that no running
//!   writer can own it.
//! - **Fast, batched durability.** A put is not fsynced: 4 KiB-aligned data is written with
//!   O_DIRECT ([`crate::direct_io`]; the tail and file systems without O_DIRECT go through
//!   the page cache), and [`Backend::sync`] is one `syncfs(2)` for everything before it —
//!   the chunk store's fast path, kept. A crash before that sync can leave a final-named
//!   file with garbage in it (the rename reached the disk, the data did not): the layers
//!   above never trust an object they did not see synced, and chunks are checked by their
//!   name when read.
//! - **Durable create.** `create` fsyncs the temp file, moves it with
//!   `renameat2(RENAME_NOREPLACE)` (link + unlink where unsupported), which fails when the
//!   name is taken — so exactly one of several racing creators wins — and fsyncs the
//!   folder. The folders themselves are made durable when the backend is opened.

use super::{
    check_kind_name, checked_range, Backend, BackendError, Created, ErrorContext, ObjectInfo,
    ObjectKind, ObjectList, ObjectName, Operation,
};
use crate::direct_io::DirectFile;
use crate::fsx::{Dir, FsxError};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Prefix of temp files (written, then renamed into place); object names never start with
/// a dot, so a temp file is never mistaken for an object.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Makes temp file names unique within the process (the pid makes them unique across
/// processes), even with several writers on one folder.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp file name for an object (or chunk file) named `name`.
pub(crate) fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id())
}

/// The folder of each kind, in the vault folder.
fn folder_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "config",
        ObjectKind::Key => "keys",
        ObjectKind::Chunk => "chunks",
        ObjectKind::Index => "indexes",
        ObjectKind::Manifest => "manifests",
        ObjectKind::Item => "items",
        ObjectKind::Policy => "policies",
        ObjectKind::Lock => "locks",
    }
}

/// The fan-out folder of a chunk: its name's first two hex digits.
fn fan_out(name: &ObjectName) -> &str {
    name.as_str().get(..2).unwrap_or("")
}

/// Objects as files in a vault folder. See the module docs.
#[derive(Debug)]
pub struct LocalBackend {
    root: Dir,
    /// The folder of each kind, in the order of [`ObjectKind::ALL`].
    folders: Vec<Dir>,
    location: String,
}

/// The folder an object lives in: a kind folder held open, or a chunk fan-out folder
/// opened for the operation (holding 256 of them open would cost 256 descriptors per
/// backend).
enum Folder<'a> {
    Held(&'a Dir),
    Opened(Dir),
}

impl std::ops::Deref for Folder<'_> {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        match self {
            Folder::Held(d) => d,
            Folder::Opened(d) => d,
        }
    }
}

fn is_not_found(e: &FsxError) -> bool {
    e.io_error()
        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

/// Classifies an error of the file layer: ownership and mode problems are the
/// administrator's to fix like permissions; the rest by its errno.
fn from_fsx(ctx: ErrorContext, e: FsxError) -> BackendError {
    match e {
        FsxError::Io { source, .. } => BackendError::from_io(ctx, source),
        e @ (FsxError::Owner { .. } | FsxError::Writable { .. }) => {
            BackendError::PermissionDenied {
                ctx,
                source: e.into(),
            }
        }
        e => BackendError::Io {
            ctx,
            source: e.into(),
        },
    }
}

/// Something that is not a regular file sits at an object's name (a planted symlink, a
/// folder, a FIFO): refused, never followed or opened.
fn foreign_entry(ctx: ErrorContext, path: &Path, what: &str) -> BackendError {
    BackendError::Io {
        ctx,
        source: format!(
            "{} is {what}, not an object vmvault stored: vmvault never follows a link or \
             reads a special file in a vault. Remove it",
            path.display()
        )
        .into(),
    }
}

impl LocalBackend {
    /// Opens the backend on the vault folder `vault` (opened with [`Dir::open_private`]),
    /// creating the kind folders and the 256 chunk fan-out folders that are missing. A kind
    /// or fan-out folder that is a symlink, or that someone else owns or may write, is
    /// refused.
    pub fn open(vault: &Dir) -> Result<LocalBackend, BackendError> {
        let location = vault.path().display().to_string();
        let ctx = |e: FsxError| {
            from_fsx(
                ErrorContext::new(Operation::Open, None, None, location.clone()),
                e,
            )
        };
        let root = vault.try_clone().map_err(ctx)?;
        let folders = ObjectKind::ALL
            .iter()
            .map(|&k| root.subdir(folder_name(k), true))
            .collect::<Result<Vec<Dir>, FsxError>>()
            .map_err(ctx)?;
        let backend = LocalBackend {
            root,
            folders,
            location: location.clone(),
        };
        let chunks = backend.kind_folder(ObjectKind::Chunk);
        for i in 0..=255u8 {
            chunks.subdir(format!("{i:02x}"), true).map_err(ctx)?;
        }
        // New folders must be on disk before the first object that is durable at once (a
        // key, the config) is created in them.
        chunks.sync().map_err(ctx)?;
        backend.root.sync().map_err(ctx)?;
        Ok(backend)
    }

    fn kind_folder(&self, kind: ObjectKind) -> &Dir {
        // `folders` was built from ObjectKind::ALL, whose order is the declaration order.
        &self.folders[kind as usize]
    }

    /// The folder of an object; a chunk's fan-out folder is made again if someone removed
    /// it (when `create`).
    fn folder(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        create: bool,
    ) -> Result<Folder<'_>, FsxError> {
        let dir = self.kind_folder(kind);
        if kind == ObjectKind::Chunk {
            Ok(Folder::Opened(dir.subdir(fan_out(name), create)?))
        } else {
            Ok(Folder::Held(dir))
        }
    }

    /// Where an object's file is (for messages).
    fn path_of(&self, kind: ObjectKind, name: &ObjectName) -> PathBuf {
        let dir = self.kind_folder(kind).path();
        if kind == ObjectKind::Chunk {
            dir.join(fan_out(name)).join(name.as_str())
        } else {
            dir.join(name.as_str())
        }
    }

    fn ctx(&self, op: Operation, kind: ObjectKind, name: Option<&ObjectName>) -> ErrorContext {
        let at = match name {
            Some(n) => self.path_of(kind, n),
            None => self.kind_folder(kind).path().to_path_buf(),
        };
        ErrorContext::new(op, Some(kind), name, at.display().to_string())
    }

    /// Writes `data` to a new temp file in `dir` (O_DIRECT where aligned; fsynced when
    /// `durable`); returns its name. On failure nothing is left behind.
    fn write_temp(
        dir: &Dir,
        name: &ObjectName,
        data: &[u8],
        durable: bool,
    ) -> Result<String, FsxError> {
        let temp = temp_name(name.as_str());
        let file = DirectFile::new(dir.create_new(&temp, 0o600)?);
        let written = file
            .write_all_at(data, 0)
            .and_then(|()| if durable { file.file.sync_all() } else { Ok(()) });
        match written {
            Ok(()) => Ok(temp),
            Err(e) => {
                let _ = dir.remove_file(&temp);
                Err(FsxError::Io {
                    path: dir.path_of(&temp),
                    source: e,
                })
            }
        }
    }

    /// Opens an object for reading: NotFound when it (or its fan-out folder) is missing,
    /// refused when something other than a regular file is at its name.
    fn open_object(
        &self,
        op: Operation,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<File, BackendError> {
        let ctx = || self.ctx(op, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let opened = self
            .folder(kind, name, false)
            .and_then(|dir| dir.open_read(name.as_str()));
        match opened {
            Ok(f) => Ok(f),
            Err(e) if is_not_found(&e) => Err(BackendError::NotFound { ctx: ctx() }),
            Err(FsxError::Symlink { path }) => Err(foreign_entry(ctx(), &path, "a symbolic link")),
            Err(FsxError::NotAFile { path, kind }) => Err(foreign_entry(ctx(), &path, kind)),
            Err(e) => Err(from_fsx(ctx(), e)),
        }
    }

    /// The objects of one folder (`prefix`: the fan-out folder's name, which every chunk in
    /// it starts with).
    fn list_folder(
        &self,
        kind: ObjectKind,
        dir: &Dir,
        prefix: &str,
    ) -> Vec<Result<ObjectInfo, BackendError>> {
        let names = match dir.entry_names() {
            Ok(n) => n,
            Err(e) => return vec![Err(from_fsx(self.ctx(Operation::List, kind, None), e))],
        };
        names
            .into_iter()
            .filter_map(|n| {
                // Temp files and foreign names (not UTF-8, invalid, a chunk in the wrong
                // fan-out folder) are not objects: `get` could not reach them.
                let name = ObjectName::new(n.to_str()?).ok()?;
                if kind.check_name(&name).is_err() || !name.as_str().starts_with(prefix) {
                    return None;
                }
                match dir.stat_entry(name.as_str()) {
                    Ok(Some(st)) if st.is_file => Some(Ok(ObjectInfo {
                        name,
                        size: st.size,
                        modified: st.modified,
                    })),
                    Ok(Some(st)) => {
                        tracing::warn!(
                            "{} is {}, not an object: left out of the listing",
                            dir.path_of(name.as_str()).display(),
                            st.kind
                        );
                        None
                    }
                    // Deleted since the folder was read.
                    Ok(None) => None,
                    Err(e) => Some(Err(from_fsx(
                        self.ctx(Operation::List, kind, Some(&name)),
                        e,
                    ))),
                }
            })
            .collect()
    }

    /// Every folder that holds objects (and so temp files) of `kind`, opened in turn:
    /// the kind folder, or the 256 chunk fan-out folders (a missing one is skipped).
    fn folders_of(
        &self,
        kind: ObjectKind,
    ) -> Box<dyn Iterator<Item = Result<(Folder<'_>, String), FsxError>> + Send + '_> {
        let dir = self.kind_folder(kind);
        if kind != ObjectKind::Chunk {
            return Box::new(std::iter::once(Ok((Folder::Held(dir), String::new()))));
        }
        Box::new((0..=255u8).filter_map(move |i| {
            let hex = format!("{i:02x}");
            match dir.subdir(&hex, false) {
                Ok(d) => Some(Ok((Folder::Opened(d), hex))),
                Err(e) if is_not_found(&e) => None,
                Err(e) => Some(Err(e)),
            }
        }))
    }

}

impl Backend for LocalBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn put(&self, kind: ObjectKind, name: &ObjectName, data: &[u8]) -> Result<(), BackendError> {
        let ctx = || self.ctx(Operation::Put, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let dir = self.folder(kind, name, true).map_err(|e| from_fsx(ctx(), e))?;
        let temp = Self::write_temp(&dir, name, data, false).map_err(|e| from_fsx(ctx(), e))?;
        #[cfg(test)]
        tests::before_place();
        dir.rename_replace(&temp, &dir, name.as_str())
            .map_err(|e| {
                let _ = dir.remove_file(&temp);
                from_fsx(ctx(), e)
            })
    }

    fn create(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        data: &[u8],
    ) -> Result<Created, BackendError> {
        let ctx = || self.ctx(Operation::Create, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let dir = self.folder(kind, name, true).map_err(|e| from_fsx(ctx(), e))?;
        let temp = Self::write_temp(&dir, name, data, true).map_err(|e| from_fsx(ctx(), e))?;
        match dir.rename_noreplace(&temp, &dir, name.as_str()) {
            Ok(()) => {
                dir.sync().map_err(|e| from_fsx(ctx(), e))?;
                Ok(Created::New)
            }
            Err(e) => {
                let _ = dir.remove_file(&temp);
                if e.is_exists() {
                    Ok(Created::AlreadyExists)
                } else {
                    Err(from_fsx(ctx(), e))
                }
            }
        }
    }

    fn get_into(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        buf: &mut Vec<u8>,
    ) -> Result<(), BackendError> {
        let mut file = self.open_object(Operation::Get, kind, name)?;
        let io_err = |e| BackendError::from_io(self.ctx(Operation::Get, kind, Some(name)), e);
        let size = file.metadata().map_err(io_err)?.len();
        buf.clear();
        // A file of absurd size (planted, or damaged metadata) is an error, not an abort.
        buf.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|e| io_err(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
        file.read_to_end(buf).map_err(io_err)?;
        Ok(())
    }

    fn get_range(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, BackendError> {
        let ctx = || self.ctx(Operation::GetRange, kind, Some(name));
        let file = self.open_object(Operation::GetRange, kind, name)?;
        let io_err = |e| BackendError::from_io(ctx(), e);
        let size = file.metadata().map_err(io_err)?.len();
        checked_range(ctx, size, offset, len)?;
        let mut out = Vec::new();
        out.try_reserve_exact(len)
            .map_err(|e| io_err(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
        out.resize(len, 0);
        file.read_exact_at(&mut out, offset).map_err(io_err)?;
        Ok(out)
    }

    fn stat(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<Option<ObjectInfo>, BackendError> {
        let ctx = || self.ctx(Operation::Stat, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let st = match self
            .folder(kind, name, false)
            .and_then(|dir| dir.stat_entry(name.as_str()))
        {
            Ok(st) => st,
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(from_fsx(ctx(), e)),
        };
        match st {
            None => Ok(None),
            Some(st) if st.is_file => Ok(Some(ObjectInfo {
                name: name.clone(),
                size: st.size,
                modified: st.modified,
            })),
            Some(st) => Err(foreign_entry(ctx(), &self.path_of(kind, name), st.kind)),
        }
    }

    fn list(&self, kind: ObjectKind) -> ObjectList<'_> {
        Box::new(self.folders_of(kind).flat_map(move |folder| match folder {
            Ok((dir, prefix)) => self.list_folder(kind, &dir, &prefix),
            Err(e) => vec![Err(from_fsx(self.ctx(Operation::List, kind, None), e))],
        }))
    }

    fn delete(&self, kind: ObjectKind, name: &ObjectName) -> Result<(), BackendError> {
        let ctx = || self.ctx(Operation::Delete, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        match self
            .folder(kind, name, false)
            .and_then(|dir| dir.remove_file(name.as_str()))
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(from_fsx(ctx(), e)),
        }
    }

    fn sync(&self) -> Result<(), BackendError> {
        self.root.sync_fs().map_err(|e| {
            from_fsx(
                ErrorContext::new(Operation::Sync, None, None, self.location.clone()),
                e,
            )
        })
    }

    fn cleanup_temp(&self, older_than: SystemTime) -> Result<u64, BackendError> {
        let mut removed = 0;
        for kind in ObjectKind::ALL {
            let ctx = |e| from_fsx(self.ctx(Operation::Sweep, kind, None), e);
            for folder in self.folders_of(kind) {
                let (dir, _) = folder.map_err(ctx)?;
                for n in dir.entry_names().map_err(ctx)? {
                    if !n.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                        continue;
                    }
                    // Only files we could have written: a folder or a link with a temp
                    // name is someone else's, and left for the administrator.
                    let stale = dir
                        .stat_entry(&n)
                        .map_err(ctx)?
                        .is_some_and(|st| st.is_file && st.modified < older_than);
                    if stale {
                        match dir.remove_file(&n) {
                            Ok(()) => removed += 1,
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => return Err(ctx(e)),
                        }
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    /// Called by `put` between writing the temp file and renaming it (tests only: the kill
    /// test's child process dies there).
    pub(super) fn before_place() {}
}
