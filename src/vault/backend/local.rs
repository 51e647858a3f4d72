//! The local-folder backend: each object is a file in the vault folder.
//!
//! # Layout
//! One folder per kind — `config/`, `keys/`, `chunks/`, `items/`, `policies/`, `locks/` —
//! holding one file per object, named by the object's name. Chunks are fanned out by the
//! first two hex digits of their name (`chunks/ab/abcdef…`, 256 folders made when the
//! backend is opened), so no folder holds more than a few thousand entries even in a vault
//! of millions of chunks; the other kinds stay small enough for one folder each.
//!
//! A recovery point's objects live together in its own folder under `points/`: index
//! `<point>.d<N>` is `points/<point>/disk<N>.idx` and manifest `<point>` is
//! `points/<point>/manifest` — the layout vaults have had since format 1, so no vault is
//! converted, and an administrator sees one folder per point. A point folder is made by the
//! first put into it and removed with its last object.
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
//! - **Fast, batched durability.** A put of a new name is not fsynced: 4 KiB-aligned data
//!   is written with O_DIRECT ([`crate::direct_io`]; the tail and file systems without
//!   O_DIRECT go through the page cache), and [`Backend::sync`] is one `syncfs(2)` for
//!   everything before it — the chunk store's fast path, kept. A crash before that sync can
//!   leave a final-named file with garbage in it (the rename reached the disk, the data did
//!   not): the layers above never trust an object they did not see synced, and chunks are
//!   checked by their name when read. A put over an existing object (rare: a rewritten
//!   manifest, a chunk two writers raced for) fsyncs its temp file before the rename, so a
//!   crash never turns an object that was durable into garbage.
//! - **Durable create.** `create` fsyncs the temp file, moves it with
//!   `renameat2(RENAME_NOREPLACE)` (link + unlink where unsupported), which fails when the
//!   name is taken — so exactly one of several racing creators wins — and fsyncs the
//!   folder. The folders themselves are made durable when the backend is opened.

use super::{
    check_kind_name, checked_range, Backend, BackendError, Created, ErrorContext, ObjectInfo,
    ObjectKind, ObjectList, ObjectName, Operation, Stray,
};
use crate::direct_io::DirectFile;
use crate::fsx::{Dir, FsxError};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Prefix of temp files (written, then renamed into place); object names never start with
/// a dot, so a temp file is never mistaken for an object.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Makes temp file names unique within the process (the pid makes them unique across
/// processes), even with several writers on one folder.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp file name for an object (or chunk file) named `name`.
fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id())
}

/// The folder of each kind, in the vault folder.
pub fn folder_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Config => "config",
        ObjectKind::Key => "keys",
        ObjectKind::Chunk => "chunks",
        ObjectKind::Index | ObjectKind::Manifest => POINTS_FOLDER,
        ObjectKind::Item => "items",
        ObjectKind::Policy => "policies",
        ObjectKind::Lock => "locks",
    }
}

/// What [`Backend::set_aside`] appends to the name of an object it keeps for inspection.
pub const SET_ASIDE_SUFFIX: &str = ".damaged";

/// The device of the file system a folder is on (None when it cannot be told).
fn device_of(dir: &Dir) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.proc_path()).ok().map(|m| m.dev())
}

/// The folder of the point folders (indexes and manifests).
pub const POINTS_FOLDER: &str = "points";
/// The file name of a point's manifest in its folder.
pub const MANIFEST_FILE: &str = "manifest";

/// Where an object's file is below its kind folder.
#[derive(Debug)]
enum Place<'n> {
    /// Directly in the kind folder, under the object's name.
    Flat(&'n str),
    /// In a subfolder of the kind folder: a chunk's fan-out folder, a point's folder.
    Sub { folder: &'n str, file: String },
}

impl<'n> Place<'n> {
    /// The place of a valid object (its name passed [`ObjectKind::check_name`]).
    fn of(kind: ObjectKind, name: &'n ObjectName) -> Place<'n> {
        let s = name.as_str();
        match kind {
            ObjectKind::Chunk => Place::Sub {
                folder: s.get(..2).unwrap_or(""),
                file: s.to_string(),
            },
            ObjectKind::Index => match super::index_parts(s) {
                Some((point, disk)) => Place::Sub {
                    folder: point,
                    file: format!("disk{disk}.idx"),
                },
                None => Place::Flat(s),
            },
            ObjectKind::Manifest => Place::Sub {
                folder: s,
                file: MANIFEST_FILE.to_string(),
            },
            _ => Place::Flat(s),
        }
    }

    fn file(&self) -> &str {
        match self {
            Place::Flat(f) => f,
            Place::Sub { file, .. } => file,
        }
    }
}

/// The object a file in a point folder stands for, if any: `disk<N>.idx` is index
/// `<point>.d<N>`, `manifest` is manifest `<point>`.
fn point_object(kind: ObjectKind, point: &str, file: &str) -> Option<String> {
    match kind {
        ObjectKind::Index => {
            let disk = file.strip_prefix("disk")?.strip_suffix(".idx")?;
            let name = format!("{point}.d{disk}");
            // Only the canonical spelling (`disk01.idx` is not an object).
            super::index_parts(&name)?;
            Some(name)
        }
        ObjectKind::Manifest => (file == MANIFEST_FILE).then(|| point.to_string()),
        _ => None,
    }
}

/// Kinds kept in point folders.
fn in_point_folders(kind: ObjectKind) -> bool {
    matches!(kind, ObjectKind::Index | ObjectKind::Manifest)
}

/// Objects as files in a vault folder. See the module docs.
#[derive(Debug)]
pub struct LocalBackend {
    root: Dir,
    /// The folder of each kind, in the order of [`ObjectKind::ALL`] (None: a kind this
    /// backend was not opened for, see [`LocalBackend::open_kinds`]).
    folders: Vec<Option<Dir>>,
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
        FsxError::Io { ref source, .. } => {
            // A copy to classify by; the whole error (with its path) stays the cause.
            let cause = match source.raw_os_error() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::from(source.kind()),
            };
            BackendError::caused_by(ctx, &cause, e.into())
        }
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
fn foreign_entry(ctx: ErrorContext, what: &str) -> BackendError {
    BackendError::NotAnObject {
        ctx,
        what: what.to_string(),
    }
}

impl LocalBackend {
    /// Opens the backend on the vault folder `vault` (opened with [`Dir::open_private`]),
    /// creating the kind folders and the 256 chunk fan-out folders that are missing. A kind
    /// or fan-out folder that is a symlink, or that someone else owns or may write, is
    /// refused.
    pub fn open(vault: &Dir) -> Result<LocalBackend, BackendError> {
        LocalBackend::open_kinds(vault, &ObjectKind::ALL)
    }

    /// Like [`LocalBackend::open`], for the objects of `kinds` only: the folders of the
    /// other kinds are neither made nor opened, and their objects are out of reach (an
    /// error) and never listed. For a vault whose other objects are kept elsewhere.
    pub fn open_kinds(vault: &Dir, kinds: &[ObjectKind]) -> Result<LocalBackend, BackendError> {
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
            .map(|&k| {
                kinds
                    .contains(&k)
                    .then(|| root.subdir(folder_name(k), true))
                    .transpose()
            })
            .collect::<Result<Vec<Option<Dir>>, FsxError>>()
            .map_err(ctx)?;
        let backend = LocalBackend {
            root,
            folders,
            location: location.clone(),
        };
        if let Some(chunks) = backend.kind_folder(ObjectKind::Chunk) {
            for i in 0..=255u8 {
                chunks.subdir(format!("{i:02x}"), true).map_err(ctx)?;
            }
            // New folders must be on disk before the first object that is durable at once
            // (a key, the config) is created in them.
            chunks.sync().map_err(ctx)?;
        }
        backend.root.sync().map_err(ctx)?;
        Ok(backend)
    }

    /// The folder of a kind, when the backend was opened for it.
    fn kind_folder(&self, kind: ObjectKind) -> Option<&Dir> {
        // `folders` was built from ObjectKind::ALL, whose order is the declaration order.
        self.folders.get(kind as usize).and_then(Option::as_ref)
    }

    /// Where the objects of a kind are (for messages, also for a kind not opened).
    fn kind_path(&self, kind: ObjectKind) -> PathBuf {
        match self.kind_folder(kind) {
            Some(d) => d.path().to_path_buf(),
            None => self.root.path().join(folder_name(kind)),
        }
    }

    /// The folder of an object. A missing subfolder (a chunk fan-out folder someone
    /// removed, a point's folder not made yet) is made when `make` says so.
    fn folder(
        &self,
        kind: ObjectKind,
        place: &Place<'_>,
        make: Make,
    ) -> Result<Folder<'_>, FsxError> {
        let Some(dir) = self.kind_folder(kind) else {
            return Err(FsxError::Io {
                path: self.kind_path(kind),
                source: io::Error::other(format!(
                    "this vault keeps no {kind} objects in its folder"
                )),
            });
        };
        let Place::Sub { folder, .. } = place else {
            return Ok(Folder::Held(dir));
        };
        // Made only when missing: a mkdir per chunk would cost a syscall each.
        match dir.subdir(folder, false) {
            Err(e) if make != Make::No && is_not_found(&e) => {
                let sub = dir.subdir(folder, true)?;
                // A chunk fan-out folder is made again only when someone removed it (rare):
                // durably, as a create in it is durable at once. A point's folder is made
                // with its first object: durable with it, at the next sync, unless the
                // object is created (durable at once).
                if make == Make::Durably || kind == ObjectKind::Chunk {
                    dir.sync()?;
                }
                Ok(Folder::Opened(sub))
            }
            opened => opened.map(Folder::Opened),
        }
    }

    /// Where an object's file is (for messages).
    fn path_of(&self, kind: ObjectKind, name: &ObjectName) -> PathBuf {
        let dir = self.kind_path(kind);
        match Place::of(kind, name) {
            Place::Flat(file) => dir.join(file),
            Place::Sub { folder, file } => dir.join(folder).join(file),
        }
    }

    /// Removes the point folder `sub` when it is empty and was last changed before
    /// `older_than` (what a write cut short by a crash leaves once its temp files are
    /// swept; a folder a running backup just made is younger). True when it went.
    fn remove_stale_empty_folder(
        &self,
        kind: ObjectKind,
        dir: &Dir,
        sub: &str,
        older_than: SystemTime,
    ) -> bool {
        let Some(parent) = self.kind_folder(kind) else {
            return false;
        };
        let empty = dir.entry_names().is_ok_and(|n| n.is_empty());
        let stale = parent
            .stat_entry(sub)
            .is_ok_and(|st| st.is_some_and(|st| st.modified < older_than));
        empty && stale && parent.remove_dir(sub).is_ok()
    }

    /// After the last object of a point folder was deleted: the folder goes too (a folder
    /// that still holds anything stays, and so does one someone else removed first).
    fn remove_point_folder_if_empty(&self, kind: ObjectKind, place: &Place<'_>) {
        if let (Some(dir), Place::Sub { folder, .. }) = (self.kind_folder(kind), place) {
            if let Err(e) = dir.remove_dir(folder) {
                let benign = e
                    .io_error()
                    .and_then(io::Error::raw_os_error)
                    .is_some_and(|n| {
                        matches!(
                            n,
                            libc::ENOTEMPTY | libc::EEXIST | libc::ENOENT | libc::ENOTDIR
                        )
                    });
                if !benign {
                    tracing::debug!("removing the empty point folder {folder}: {e}");
                }
            }
        }
    }

    fn ctx(&self, op: Operation, kind: ObjectKind, name: Option<&ObjectName>) -> ErrorContext {
        let at = match name {
            Some(n) => self.path_of(kind, n),
            None => self.kind_path(kind),
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
        let written = file.write_all_at(data, 0).and_then(|()| {
            if durable {
                file.file.sync_all()
            } else {
                Ok(())
            }
        });
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
        let place = Place::of(kind, name);
        let opened = self
            .folder(kind, &place, Make::No)
            .and_then(|dir| dir.open_read(place.file()));
        match opened {
            Ok(f) => Ok(f),
            Err(e) if is_not_found(&e) => Err(BackendError::NotFound { ctx: ctx() }),
            Err(e) => Err(foreign_or(ctx(), e)),
        }
    }

    /// The objects of one folder: `sub` is the name of the subfolder it is (a chunk
    /// fan-out folder, which every chunk in it starts with; a point's folder, whose
    /// objects are named after it), empty for a kind folder.
    fn list_folder(
        &self,
        kind: ObjectKind,
        dir: &Dir,
        sub: &str,
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
                let file = n.to_str()?;
                let name = if in_point_folders(kind) {
                    ObjectName::new(point_object(kind, sub, file)?).ok()?
                } else {
                    ObjectName::new(file).ok()?
                };
                if kind.check_name(&name).is_err() || !name.as_str().starts_with(sub) {
                    return None;
                }
                match dir.stat_entry(file) {
                    Ok(Some(st)) if st.is_file => Some(Ok(ObjectInfo {
                        name,
                        size: st.size,
                        modified: st.modified,
                    })),
                    Ok(Some(st)) => {
                        tracing::warn!(
                            "{} is {}, not an object: left out of the listing",
                            dir.path_of(file).display(),
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

    /// Every folder that holds objects (and so temp files) of `kind`, opened in turn, with
    /// its name below the kind folder: the kind folder itself (""), the 256 chunk fan-out
    /// folders (a missing one is skipped), or the point folders (an entry there that is
    /// not a folder of ours, e.g. a symlink, is left out with a warning: never followed).
    fn folders_of(
        &self,
        kind: ObjectKind,
    ) -> Box<dyn Iterator<Item = Result<(Folder<'_>, String), FsxError>> + Send + '_> {
        let Some(dir) = self.kind_folder(kind) else {
            return Box::new(std::iter::empty());
        };
        if in_point_folders(kind) {
            let names = match dir.entry_names() {
                Ok(n) => n,
                Err(e) => return Box::new(std::iter::once(Err(e))),
            };
            return Box::new(names.into_iter().filter_map(move |n| {
                // Not UTF-8, a temp file, an invalid name: not a point folder of ours.
                let point = ObjectName::new(n.to_str()?).ok()?;
                match dir.subdir(point.as_str(), false) {
                    Ok(d) => Some(Ok((Folder::Opened(d), point.as_str().to_string()))),
                    Err(e) if is_not_found(&e) => None,
                    Err(e @ (FsxError::Symlink { .. } | FsxError::NotDir { .. })) => {
                        tracing::warn!("{e}: not a recovery point folder, left out");
                        None
                    }
                    Err(e) => Some(Err(e)),
                }
            }));
        }
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

/// How [`LocalBackend::folder`] treats a missing subfolder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Make {
    /// Not at all: the object is not there.
    No,
    /// Made; durable at the next sync.
    Lazily,
    /// Made, and durable at once.
    Durably,
}

/// An error of reaching an object, where something that is not ours (a symlink, a folder
/// or device at a file's name, a file at a folder's name) is refused as foreign, named by
/// where it is: a link planted as a point's folder is that folder, not the object's file
/// "in" it (removing that would reach through the link).
fn foreign_or(mut ctx: ErrorContext, e: FsxError) -> BackendError {
    let mut at = |path: &std::path::Path| ctx.location = path.display().to_string();
    match e {
        FsxError::Symlink { ref path } => {
            at(path);
            foreign_entry(ctx, "a symbolic link")
        }
        FsxError::NotAFile { ref path, kind } => {
            at(path);
            foreign_entry(ctx, kind)
        }
        FsxError::NotDir { ref path } => {
            at(path);
            foreign_entry(ctx, "something other than a folder")
        }
        e => from_fsx(ctx, e),
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn locate(&self, kind: ObjectKind, name: &ObjectName) -> String {
        self.path_of(kind, name).display().to_string()
    }

    fn put(&self, kind: ObjectKind, name: &ObjectName, data: &[u8]) -> Result<(), BackendError> {
        let ctx = || self.ctx(Operation::Put, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let place = Place::of(kind, name);
        let dir = self
            .folder(kind, &place, Make::Lazily)
            .map_err(|e| foreign_or(ctx(), e))?;
        // Replacing an object that may be durable: its successor must be on disk before the
        // rename, or a crash before the next sync could leave garbage where a good object
        // was. A new name (the usual case: chunks, new points) waits for the sync.
        let replacing = !matches!(dir.stat_entry(place.file()), Ok(None));
        let temp = Self::write_temp(&dir, name, data, replacing).map_err(|e| from_fsx(ctx(), e))?;
        #[cfg(test)]
        tests::before_place();
        dir.rename_replace(&temp, &dir, place.file()).map_err(|e| {
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
        let place = Place::of(kind, name);
        let dir = self
            .folder(kind, &place, Make::Durably)
            .map_err(|e| foreign_or(ctx(), e))?;
        let temp = Self::write_temp(&dir, name, data, true).map_err(|e| from_fsx(ctx(), e))?;
        match dir.rename_noreplace(&temp, &dir, place.file()) {
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
        max: u64,
    ) -> Result<(), BackendError> {
        let mut file = self.open_object(Operation::Get, kind, name)?;
        let io_err = |e| BackendError::from_io(self.ctx(Operation::Get, kind, Some(name)), e);
        let size = file.metadata().map_err(io_err)?.len();
        if size > max {
            return Err(BackendError::TooLarge {
                ctx: self.ctx(Operation::Get, kind, Some(name)),
                size,
                max,
            });
        }
        buf.clear();
        // A file of absurd size (planted, or damaged metadata) is an error, not an abort.
        buf.try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|e| io_err(io::Error::new(io::ErrorKind::OutOfMemory, e)))?;
        // A file that grows while it is read is read up to `max` only.
        (&mut file)
            .take(max.saturating_add(1))
            .read_to_end(buf)
            .map_err(io_err)?;
        if buf.len() as u64 > max {
            return Err(BackendError::TooLarge {
                ctx: self.ctx(Operation::Get, kind, Some(name)),
                size: buf.len() as u64,
                max,
            });
        }
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
        let place = Place::of(kind, name);
        let st = match self
            .folder(kind, &place, Make::No)
            .and_then(|dir| dir.stat_entry(place.file()))
        {
            Ok(st) => st,
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(foreign_or(ctx(), e)),
        };
        match st {
            None => Ok(None),
            Some(st) if st.is_file => Ok(Some(ObjectInfo {
                name: name.clone(),
                size: st.size,
                modified: st.modified,
            })),
            Some(st) => Err(foreign_entry(ctx(), st.kind)),
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
        let place = Place::of(kind, name);
        match self
            .folder(kind, &place, Make::No)
            .and_then(|dir| dir.remove_file(place.file()))
        {
            Ok(()) => {
                if in_point_folders(kind) {
                    self.remove_point_folder_if_empty(kind, &place);
                }
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e @ (FsxError::Symlink { .. } | FsxError::NotDir { .. }))
                if in_point_folders(kind) =>
            {
                // Planted where the point's folder should be, never written by vmvault: the
                // entry goes with the point, and nothing it names is touched.
                let (Some(dir), Place::Sub { folder, .. }) = (self.kind_folder(kind), &place)
                else {
                    return Err(foreign_or(ctx(), e));
                };
                tracing::warn!("{e}: not a recovery point folder; the entry is removed, nothing it names is touched");
                match dir.remove_file(folder) {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(from_fsx(ctx(), e)),
                }
            }
            Err(e) => Err(foreign_or(ctx(), e)),
        }
    }

    fn sync(&self) -> Result<(), BackendError> {
        let ctx = || ErrorContext::new(Operation::Sync, None, None, self.location.clone());
        self.root.sync_fs().map_err(|e| from_fsx(ctx(), e))?;
        // A kind folder mounted from another file system (an administrator's choice, e.g.
        // chunks on a larger disk) is synced too: one syncfs per file system.
        let root_dev = device_of(&self.root);
        let mut done = vec![root_dev];
        for dir in self.folders.iter().flatten() {
            let dev = device_of(dir);
            if dev.is_none() || !done.contains(&dev) {
                dir.sync_fs().map_err(|e| from_fsx(ctx(), e))?;
                done.push(dev);
            }
        }
        Ok(())
    }

    fn set_aside(&self, kind: ObjectKind, name: &ObjectName) -> Result<bool, BackendError> {
        let ctx = || self.ctx(Operation::Delete, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let place = Place::of(kind, name);
        let dir = match self.folder(kind, &place, Make::No) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(foreign_or(ctx(), e)),
        };
        let aside = format!("{}{SET_ASIDE_SUFFIX}", place.file());
        // Never over an earlier one (that is evidence too): this one is then deleted.
        match dir.rename_noreplace(place.file(), &dir, &aside) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) if e.is_exists() => self.delete(kind, name).map(|()| false),
            Err(e) => Err(from_fsx(ctx(), e)),
        }
    }

    fn strays(&self, kind: ObjectKind) -> Result<Vec<Stray>, BackendError> {
        // Indexes and manifests share their folders: reported once, with the indexes.
        let Some(dir) = self
            .kind_folder(kind)
            .filter(|_| kind != ObjectKind::Manifest)
        else {
            return Ok(Vec::new());
        };
        let err = |e| from_fsx(self.ctx(Operation::List, kind, None), e);
        let mut out = Vec::new();
        // The entries of `dir` that `is_ours(name, is_file, is_dir)` does not accept.
        let scan = |dir: &Dir,
                    out: &mut Vec<Stray>,
                    is_ours: &dyn Fn(&str, bool, bool) -> bool|
         -> Result<Vec<String>, BackendError> {
            let mut subfolders = Vec::new();
            for n in dir.entry_names().map_err(err)? {
                // Temp files of writers, and what verify set aside itself.
                if n.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
                    || n.as_encoded_bytes().ends_with(SET_ASIDE_SUFFIX.as_bytes())
                {
                    continue;
                }
                let Some(st) = dir.stat_entry(&n).map_err(err)? else {
                    continue;
                };
                let is_dir = st.kind == "a folder";
                match n.to_str() {
                    Some(s) if is_ours(s, st.is_file, is_dir) => {
                        if is_dir {
                            subfolders.push(s.to_string());
                        }
                    }
                    name => out.push(Stray {
                        at: crate::fmt::echo(&dir.path_of(&n).display().to_string()),
                        // A name no object has (control characters, …) says more than
                        // what the entry is.
                        what: match name.map(ObjectName::new) {
                            Some(Ok(_)) => format!("{}, not an object vmvault stored", st.kind),
                            _ => "an entry whose name vmvault never gives an object".into(),
                        },
                    }),
                }
            }
            Ok(subfolders)
        };
        match kind {
            ObjectKind::Chunk => {
                let fans = scan(dir, &mut out, &|s, _, is_dir| {
                    is_dir
                        && s.len() == 2
                        && s.bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                })?;
                for fan in fans {
                    let sub = dir.subdir(&fan, false).map_err(err)?;
                    scan(&sub, &mut out, &|s, is_file, _| {
                        is_file
                            && s.starts_with(fan.as_str())
                            && ObjectName::new(s).is_ok_and(|n| kind.check_name(&n).is_ok())
                    })?;
                }
            }
            ObjectKind::Index => {
                let points = scan(dir, &mut out, &|s, _, is_dir| {
                    is_dir && ObjectName::new(s).is_ok()
                })?;
                for point in points {
                    let sub = match dir.subdir(&point, false) {
                        Ok(d) => d,
                        Err(e) if is_not_found(&e) => continue,
                        Err(e) => return Err(err(e)),
                    };
                    scan(&sub, &mut out, &|s, is_file, _| {
                        is_file
                            && (point_object(ObjectKind::Index, &point, s).is_some()
                                || point_object(ObjectKind::Manifest, &point, s).is_some())
                    })?;
                }
            }
            _ => {
                scan(dir, &mut out, &|s, is_file, _| {
                    is_file && ObjectName::new(s).is_ok_and(|n| kind.check_name(&n).is_ok())
                })?;
            }
        }
        out.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(out)
    }

    fn cleanup_temp(&self, older_than: SystemTime) -> Result<u64, BackendError> {
        let mut removed = 0;
        // Indexes and manifests share their folders: each folder is swept once.
        for kind in ObjectKind::ALL
            .into_iter()
            .filter(|k| *k != ObjectKind::Manifest)
        {
            let ctx = |e| from_fsx(self.ctx(Operation::Sweep, kind, None), e);
            for folder in self.folders_of(kind) {
                let (dir, sub) = folder.map_err(ctx)?;
                if in_point_folders(kind)
                    && self.remove_stale_empty_folder(kind, &dir, &sub, older_than)
                {
                    continue;
                }
                let mut removed_here = 0;
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
                            Ok(()) => removed_here += 1,
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => return Err(ctx(e)),
                        }
                    }
                }
                removed += removed_here;
                // A point folder that held only what a crashed write left: no writer of that
                // point is alive (its temp files were stale), so the folder goes too.
                if in_point_folders(kind)
                    && removed_here > 0
                    && dir.entry_names().is_ok_and(|n| n.is_empty())
                {
                    if let Some(parent) = self.kind_folder(kind) {
                        let _ = parent.remove_dir(&sub);
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct_io::{AlignedBuf, IO_ALIGN};
    use crate::vault::store::testutil::{random, Tmpfs};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::time::Duration;

    /// Set in the child process of the crash test: `put` kills it before placing.
    const DIE_BEFORE_PLACE: &str = "VMVAULT_TEST_DIE_BEFORE_PLACE";

    /// Called by `put` between writing the temp file and renaming it into place.
    pub(super) fn before_place() {
        if std::env::var_os(DIE_BEFORE_PLACE).is_some() {
            // SAFETY: signals our own process; SIGKILL cannot be caught, as a crash.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }

    fn name(s: &str) -> ObjectName {
        ObjectName::new(s).unwrap()
    }

    fn chunk(data: &[u8]) -> ObjectName {
        name(&blake3::hash(data).to_hex())
    }

    /// A backend in a fresh private folder (`<temp>/vault`).
    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let t = tempfile::tempdir().unwrap();
        fs_mode(t.path(), 0o700);
        let b = open(&t.path().join("vault"));
        (t, b)
    }

    fn open(vault: &Path) -> LocalBackend {
        LocalBackend::open(&Dir::open_private(vault, true).unwrap()).unwrap()
    }

    fn fs_mode(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn folder(b: &LocalBackend, kind: ObjectKind) -> PathBuf {
        b.kind_path(kind)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn listed(b: &LocalBackend, kind: ObjectKind) -> Vec<String> {
        let mut v: Vec<String> = b.list(kind).map(|o| o.unwrap().name.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn file_layer_errors_are_classified() {
        let ctx = || ErrorContext::new(Operation::Put, Some(ObjectKind::Key), None, "/v");
        let path = PathBuf::from("/v/keys/k");
        let io = |errno| FsxError::Io {
            path: path.clone(),
            source: io::Error::from_raw_os_error(errno),
        };
        let owner = FsxError::Owner {
            path: path.clone(),
            owner: "nobody".into(),
            me: "root".into(),
        };
        let writable = FsxError::Writable {
            path: path.clone(),
            mode: 0o777,
        };
        let symlink = FsxError::Symlink { path: path.clone() };
        let cases = [
            (io(libc::ENOSPC), "VaultStorageFull"),
            (io(libc::EDQUOT), "VaultStorageFull"),
            (io(libc::EROFS), "VaultStorageReadOnly"),
            (io(libc::EACCES), "VaultStorageAccessDenied"),
            (owner, "VaultStorageAccessDenied"),
            (writable, "VaultStorageAccessDenied"),
            (symlink, "VaultStorageError"),
            (io(libc::EIO), "VaultStorageError"),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let e = from_fsx(ctx(), e);
            assert_eq!(e.details().code, code, "{e}");
            assert!(e.to_string().contains(&shown), "{e}");
        }
    }

    #[test]
    fn a_removed_fan_out_folder_is_made_again() {
        let (_t, b) = backend();
        let data = random(6, 10);
        let c = chunk(&data);
        let fan = folder(&b, ObjectKind::Chunk).join(&c.as_str()[..2]);
        std::fs::remove_dir(&fan).unwrap();
        assert!(b.get(ObjectKind::Chunk, &c).unwrap_err().is_not_found());
        assert_eq!(b.stat(ObjectKind::Chunk, &c).unwrap(), None);
        b.delete(ObjectKind::Chunk, &c).unwrap();
        assert!(!fan.exists(), "reads and deletes make no folder");
        b.put(ObjectKind::Chunk, &c, &data).unwrap();
        assert_eq!(b.get(ObjectKind::Chunk, &c).unwrap(), data);
        assert_eq!(
            std::fs::symlink_metadata(&fan).unwrap().mode() & 0o7777,
            0o700
        );
    }

    #[test]
    fn objects_are_0600_files_in_0700_folders_laid_out_by_kind() {
        let (t, b) = backend();
        let data = random(1, 5000);
        let c = chunk(&data);
        b.put(ObjectKind::Chunk, &c, &data).unwrap();
        b.put(ObjectKind::Index, &name("p1.d0"), b"i").unwrap();
        assert_eq!(
            b.create(ObjectKind::Config, &name("config"), b"c").unwrap(),
            Created::New
        );
        let v = t.path().join("vault");
        let hex = c.as_str();
        for (file, len) in [
            (format!("chunks/{}/{hex}", &hex[..2]), 5000),
            ("points/p1/disk0.idx".to_string(), 1),
            ("config/config".to_string(), 1),
        ] {
            let md = std::fs::symlink_metadata(v.join(&file)).unwrap();
            assert!(md.is_file(), "{file}");
            assert_eq!((md.mode() & 0o7777, md.len()), (0o600, len), "{file}");
        }
        let mut folders: Vec<String> = ObjectKind::ALL
            .iter()
            .map(|&k| folder_name(k).to_string())
            .collect();
        folders.extend((0..=255).map(|i| format!("chunks/{i:02x}")));
        for f in folders {
            let md = std::fs::symlink_metadata(v.join(&f)).unwrap();
            assert!(md.is_dir(), "{f}");
            assert_eq!(md.mode() & 0o7777, 0o700, "{f}");
        }
        assert_eq!(names_in(&v.join("chunks")).len(), 256);
    }

    #[test]
    fn aligned_and_unaligned_data_round_trip() {
        let (_t, b) = backend();
        let want = random(2, 3 * IO_ALIGN + 100);
        let mut buf = AlignedBuf::default();
        let aligned = buf.get(want.len());
        aligned.copy_from_slice(&want);
        let c = chunk(&want);
        b.put(ObjectKind::Chunk, &c, aligned).unwrap();
        assert!(b.get(ObjectKind::Chunk, &c).unwrap() == want);
        // The same bytes from an odd address go through the page cache.
        let mut odd = vec![0u8; want.len() + 1];
        odd[1..].copy_from_slice(&want);
        b.put(ObjectKind::Chunk, &c, &odd[1..]).unwrap();
        assert!(b.get(ObjectKind::Chunk, &c).unwrap() == want);
        let exact = &buf.get(2 * IO_ALIGN)[..];
        let c2 = chunk(exact);
        b.put(ObjectKind::Chunk, &c2, exact).unwrap();
        assert!(b.get(ObjectKind::Chunk, &c2).unwrap() == exact);
        b.sync().unwrap();
    }

    #[test]
    fn a_symlink_at_an_object_name_is_never_followed() {
        let (t, b) = backend();
        let secret = t.path().join("secret");
        std::fs::write(&secret, "root:x:0:0").unwrap();
        let m = ObjectKind::Item;
        let link = folder(&b, m).join("m");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        for e in [
            b.get(m, &name("m")).unwrap_err(),
            b.get_range(m, &name("m"), 0, 1).unwrap_err(),
            b.stat(m, &name("m")).unwrap_err(),
        ] {
            assert!(matches!(e, BackendError::NotAnObject { .. }), "{e}");
            assert!(e.to_string().contains("a symbolic link"), "{e}");
            assert!(e.to_string().contains(&link.display().to_string()), "{e}");
        }
        assert!(listed(&b, m).is_empty());
        // Taken for a create (nothing is written through it) ...
        assert_eq!(
            b.create(m, &name("m"), b"created").unwrap(),
            Created::AlreadyExists
        );
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:x:0:0");
        // ... replaced, not written through, by a put ...
        b.put(m, &name("m"), b"mine").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:x:0:0");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
        assert_eq!(b.get(m, &name("m")).unwrap(), b"mine");
        // ... and a delete removes the link, never its target.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        b.delete(m, &name("m")).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:x:0:0");
    }

    #[test]
    fn a_symlinked_fan_out_folder_is_refused() {
        let (t, b) = backend();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let data = random(3, 100);
        let c = chunk(&data);
        let fan = folder(&b, ObjectKind::Chunk).join(&c.as_str()[..2]);
        std::fs::remove_dir(&fan).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &fan).unwrap();
        for e in [
            b.put(ObjectKind::Chunk, &c, &data).unwrap_err(),
            b.create(ObjectKind::Chunk, &c, &data).unwrap_err(),
            b.get(ObjectKind::Chunk, &c).unwrap_err(),
        ] {
            assert!(!e.is_not_found(), "{e}");
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        assert!(names_in(&elsewhere).is_empty());
        // A chunk of another fan-out folder is still stored and listed; the listing says
        // what is in the way instead of leaving chunks out silently.
        let other = (0u64..)
            .map(|i| random(i, 10))
            .find(|d| chunk(d).as_str()[..2] != c.as_str()[..2])
            .unwrap();
        b.put(ObjectKind::Chunk, &chunk(&other), &other).unwrap();
        let (ok, errors): (Vec<_>, Vec<_>) = b.list(ObjectKind::Chunk).partition(|r| r.is_ok());
        assert_eq!(ok.len(), 1);
        assert_eq!(errors.len(), 1);
        let e = errors.into_iter().next().unwrap().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // Opening the backend again refuses it too.
        let e = LocalBackend::open(&Dir::open_private(&t.path().join("vault"), false).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn listings_show_only_objects() {
        let (_t, b) = backend();
        let m = ObjectKind::Item;
        b.put(m, &name("real"), b"r").unwrap();
        let dir = folder(&b, m);
        std::fs::write(dir.join(".tmp-real-1-1"), "half").unwrap();
        std::fs::write(dir.join("UPPER"), "x").unwrap();
        std::fs::write(dir.join("a b"), "x").unwrap();
        std::fs::write(
            dir.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bad\xff")),
            "x",
        )
        .unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        let fifo =
            std::ffi::CString::new(dir.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(listed(&b, m), ["real"]);
        // A FIFO at an object name is refused at once (never blocks a reader).
        let e = b.get(m, &name("fifo")).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = b.get(m, &name("sub")).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
        // Chunks: a name that is not hex, or in the wrong fan-out folder, is not a chunk.
        let data = random(4, 10);
        let c = chunk(&data);
        b.put(ObjectKind::Chunk, &c, &data).unwrap();
        let fans = folder(&b, ObjectKind::Chunk);
        let wrong = if c.as_str().starts_with("00") {
            "01"
        } else {
            "00"
        };
        std::fs::write(fans.join(wrong).join(c.as_str()), "x").unwrap();
        std::fs::write(fans.join(&c.as_str()[..2]).join("zz"), "x").unwrap();
        std::fs::write(fans.join("stray"), "x").unwrap();
        assert_eq!(listed(&b, ObjectKind::Chunk), [c.to_string()]);
    }

    #[test]
    fn a_crash_mid_put_leaves_the_old_object_and_a_temp_file_that_cleanup_removes() {
        let m = ObjectKind::Item;
        if let Some(vault) = std::env::var_os(DIE_BEFORE_PLACE) {
            // The child: killed inside this put, after the temp file is written.
            let b = open(Path::new(&vault));
            let _ = b.put(m, &name("m"), &random(5, 100_000));
            panic!("put returned although the process was to be killed in it");
        }
        let (t, b) = backend();
        b.put(m, &name("m"), b"old").unwrap();
        b.sync().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "vault::backend::local::tests::a_crash_mid_put_leaves_the_old_object_and_a_temp_file_that_cleanup_removes",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIE_BEFORE_PLACE, t.path().join("vault"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{status}"
        );
        let b = open(&t.path().join("vault"));
        assert_eq!(b.get(m, &name("m")).unwrap(), b"old");
        assert_eq!(listed(&b, m), ["m"]);
        let left = names_in(&folder(&b, m));
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left[0].starts_with(".tmp-m-"), "{left:?}");
        assert_eq!(
            std::fs::metadata(folder(&b, m).join(&left[0]))
                .unwrap()
                .len(),
            100_000
        );
        // Not yet stale: a writer may still own it.
        let hour = Duration::from_secs(3600);
        assert_eq!(b.cleanup_temp(SystemTime::now() - hour).unwrap(), 0);
        assert_eq!(b.cleanup_temp(SystemTime::now() + hour).unwrap(), 1);
        assert_eq!(names_in(&folder(&b, m)), ["m"]);
    }

    #[test]
    fn cleanup_removes_only_stale_temp_files() {
        let (_t, b) = backend();
        let m = folder(&b, ObjectKind::Item);
        let fan = folder(&b, ObjectKind::Chunk).join("ab");
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let plant = |p: PathBuf, age: Duration| {
            let f = std::fs::File::create(&p).unwrap();
            f.set_modified(now - age).unwrap();
        };
        plant(m.join(".tmp-old-1-1"), 2 * day);
        plant(fan.join(".tmp-abcd-1-2"), 2 * day);
        plant(m.join(".tmp-new-1-3"), Duration::ZERO);
        plant(m.join("old-object"), 2 * day);
        std::fs::create_dir(m.join(".tmp-folder")).unwrap();
        std::os::unix::fs::symlink(m.join("old-object"), m.join(".tmp-link")).unwrap();
        assert_eq!(b.cleanup_temp(now - day).unwrap(), 2);
        assert_eq!(
            names_in(&m),
            [".tmp-folder", ".tmp-link", ".tmp-new-1-3", "old-object"]
        );
        assert!(names_in(&fan).is_empty());
    }

    #[test]
    fn a_point_keeps_its_objects_in_its_folder() {
        let (t, b) = backend();
        let points = t.path().join("vault").join("points");
        let (i, k) = (ObjectKind::Index, ObjectKind::Manifest);
        b.put(i, &name("p1.d0"), b"i0").unwrap();
        b.put(i, &name("p1.d12"), b"i12").unwrap();
        b.put(k, &name("p1"), b"m").unwrap();
        b.put(i, &name("p2.d0"), b"x").unwrap();
        assert_eq!(
            names_in(&points.join("p1")),
            ["disk0.idx", "disk12.idx", "manifest"]
        );
        assert_eq!(listed(&b, i), ["p1.d0", "p1.d12", "p2.d0"]);
        assert_eq!(listed(&b, k), ["p1"]);
        assert_eq!(
            b.locate(i, &name("p1.d12")),
            points.join("p1").join("disk12.idx")
        );
        // Files that are no object of the point are left out: a non-canonical disk
        // number, a foreign name, a temp file.
        for f in ["disk01.idx", "diskx.idx", "notes", ".tmp-p1.d0-1-1"] {
            std::fs::write(points.join("p1").join(f), "x").unwrap();
        }
        assert_eq!(listed(&b, i), ["p1.d0", "p1.d12", "p2.d0"]);
        for f in ["disk01.idx", "diskx.idx", "notes", ".tmp-p1.d0-1-1"] {
            std::fs::remove_file(points.join("p1").join(f)).unwrap();
        }
        // The folder goes with its last object, not before.
        b.delete(k, &name("p1")).unwrap();
        b.delete(i, &name("p1.d0")).unwrap();
        assert!(points.join("p1").is_dir());
        b.delete(i, &name("p1.d12")).unwrap();
        assert!(!points.join("p1").exists());
        b.delete(i, &name("p1.d12")).unwrap();
        // A point folder that is a link is never read or written through, and is left
        // out of listings; deleting the point's objects removes the link, not its target.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("disk0.idx"), "planted").unwrap();
        std::fs::write(elsewhere.join("manifest"), "planted").unwrap();
        std::os::unix::fs::symlink(&elsewhere, points.join("p3")).unwrap();
        for e in [
            b.get(i, &name("p3.d0")).unwrap_err(),
            b.get(k, &name("p3")).unwrap_err(),
            b.stat(k, &name("p3")).unwrap_err(),
            b.put(i, &name("p3.d1"), b"x").unwrap_err(),
        ] {
            assert!(!e.is_not_found(), "{e}");
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        assert_eq!(listed(&b, i), ["p2.d0"]);
        assert!(listed(&b, k).is_empty());
        b.delete(k, &name("p3")).unwrap();
        assert!(std::fs::symlink_metadata(points.join("p3")).is_err());
        assert_eq!(names_in(&elsewhere), ["disk0.idx", "manifest"]);
        // An empty point folder left by a crash goes once it is stale.
        std::fs::create_dir(points.join("p4")).unwrap();
        let hour = Duration::from_secs(3600);
        b.cleanup_temp(SystemTime::now() - hour).unwrap();
        assert!(points.join("p4").is_dir());
        b.cleanup_temp(SystemTime::now() + hour).unwrap();
        assert!(!points.join("p4").exists());
        assert!(points.join("p2").is_dir());
        // So does one that held only a crashed write's temp file, once that is swept.
        std::fs::create_dir(points.join("p5")).unwrap();
        std::fs::write(points.join("p5").join(".tmp-p5.d0-1-1"), "half").unwrap();
        std::fs::write(points.join("p2").join(".tmp-p2.d1-1-1"), "half").unwrap();
        assert_eq!(b.cleanup_temp(SystemTime::now() + hour).unwrap(), 2);
        assert!(!points.join("p5").exists());
        assert_eq!(names_in(&points.join("p2")), ["disk0.idx"]);
    }

    #[test]
    fn a_read_only_vault_opens_and_reads() {
        let Some(fs) = Tmpfs::mount("size=1m,mode=0700") else {
            return;
        };
        let vault = fs.path().join("vault");
        let b = open(&vault);
        b.put(ObjectKind::Manifest, &name("m"), b"m").unwrap();
        b.sync().unwrap();
        drop(b);
        fs.remount("ro");
        let b = open(&vault);
        assert_eq!(b.get(ObjectKind::Manifest, &name("m")).unwrap(), b"m");
        assert_eq!(b.cleanup_temp(SystemTime::now()).unwrap(), 0);
        let e = b.put(ObjectKind::Manifest, &name("m"), b"x").unwrap_err();
        assert!(matches!(e, BackendError::ReadOnly { .. }), "{e}");
        drop(b);
        fs.remount("rw");
    }

    #[test]
    fn folders_others_own_or_may_write_are_refused_as_access_problems() {
        let (t, b) = backend();
        drop(b);
        let keys = t.path().join("vault").join("keys");
        fs_mode(&keys, 0o770);
        let e = LocalBackend::open(&Dir::open_private(&t.path().join("vault"), false).unwrap())
            .unwrap_err();
        assert!(matches!(e, BackendError::PermissionDenied { .. }), "{e}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
        assert_eq!(e.details().code, "VaultStorageAccessDenied");
        fs_mode(&keys, 0o700);
        if crate::fsx::euid() != 0 {
            crate::testing::skip("giving a folder to another user needs root");
            return;
        }
        std::os::unix::fs::lchown(&keys, Some(65534), Some(65534)).unwrap();
        let e = LocalBackend::open(&Dir::open_private(&t.path().join("vault"), false).unwrap())
            .unwrap_err();
        assert!(matches!(e, BackendError::PermissionDenied { .. }), "{e}");
        assert!(e.to_string().contains("belongs to"), "{e}");
    }
}
