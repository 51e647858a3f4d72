//! The vault folder: what makes a folder a vault, and the rules for opening one.
//!
//! A vault folder holds the catalog (`catalog.db`), the chunk store (`chunks/`), one
//! folder of disk indexes per recovery point (`points/`), the lock (`vault.lock`) and a
//! marker (`vault.toml`) with the vault's id. The catalog stores the same id.
//!
//! # Never a new catalog next to stored data
//! A catalog that is missing, empty, foreign or of another vault must never be replaced by
//! a fresh one: a fresh catalog knows no recovery points, so garbage collection would then
//! delete every chunk and index as unreferenced. [`open_catalog`] therefore creates a
//! catalog only in a folder that holds no vault data at all (no marker, no chunk file, no
//! point folder); otherwise it opens the existing catalog, checks that it belongs to this
//! folder (the ids agree), and refuses with what happened and how to recover. Garbage
//! collection has its own interlock on top ([`crate::engine`]'s maintenance): it refuses to
//! delete anything while the store holds data the catalog has no record of.
//!
//! Vaults written before the marker existed are adopted once: their catalog gets an id and
//! the marker is written, unless the catalog knows no stored data while the folder holds
//! some (the aftermath of a lost catalog), which is refused like a missing catalog.

use super::backend::{Backend, BackendError, Created, ObjectKind, ObjectName};
use super::catalog::{Catalog, CatalogError, CATALOG_FILE, RESTORE_CATALOG_ADVICE};
use crate::fsx::{Dir, FsxError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The marker file's name.
pub const MARKER_FILE: &str = "vault.toml";
/// The chunk store's folder.
pub const CHUNKS_DIR: &str = "chunks";
/// The folder of point folders (disk indexes).
pub const POINTS_DIR: &str = "points";
/// The files of a vault folder that are trusted as they are found: SQLite opens the
/// catalog's by name, and the marker says whose the folder is. (The lock has its own
/// checks when it is taken.)
const OWN_FILES: [&str; 5] = [
    CATALOG_FILE,
    "catalog.db-wal",
    "catalog.db-shm",
    "catalog.db-journal",
    MARKER_FILE,
];
/// Catalog setting: the vault's id.
pub const SETTING_VAULT_ID: &str = "vault_id";
/// Largest marker file read.
const MARKER_LIMIT: u64 = 64 * 1024;

/// Why a vault folder cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("vault folder: {0}")]
    Unsafe(#[from] FsxError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The catalog is missing (or empty of records) but the folder holds vault data.
    #[error("vault {}: {what}, but the folder holds the vault's data ({data}). vmvault will not start a new catalog here: it would hide every recovery point, and garbage collection would delete them. {advice}", .path.display(), advice = RESTORE_CATALOG_ADVICE)]
    CatalogLost {
        path: PathBuf,
        what: String,
        data: StoredData,
    },
    /// The catalog and the folder's marker name different vaults.
    #[error("vault {}: catalog.db belongs to vault {catalog_id}, but this folder is vault {folder_id} (vault.toml): a catalog from another vault was put here. Nothing was changed. Put this vault's own catalog.db back (from a copy), or move the folder away", .path.display())]
    ForeignCatalog {
        path: PathBuf,
        catalog_id: String,
        folder_id: String,
    },
    /// The marker names another vault than the config does.
    #[error("vault {}: this folder is vault \"{folder_name}\" (its vault.toml), but the config calls it \"{config_name}\": two configurations must not share one vault folder. If you renamed the vault in the config, set name = \"{config_name}\" in {}/vault.toml; otherwise give this vault its own storage folder", .path.display(), .path.display())]
    OtherName {
        path: PathBuf,
        folder_name: String,
        config_name: String,
    },
    #[error("vault {}: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
    /// The catalog of a vault in object storage is missing here, and the bucket holds data.
    #[error("vault {location} holds data ({data}), and this machine has no catalog of it ({} is missing). Nothing was changed. Run `vmvault vault rebuild` to make the catalog from what the vault holds (it needs the vault's key)", .cache.display())]
    NoCache {
        cache: PathBuf,
        location: String,
        data: StoredData,
    },
    /// The catalog of a vault in object storage is not the one that last wrote to it.
    #[error("vault {location}: {why}, so the catalog {} may not know all its recovery points and chunks; vmvault will not write to the vault with it (a backup could count on chunks that are gone, garbage collection could delete chunks in use). Nothing was changed. Move {} (with its -wal and -shm files) away and run `vmvault vault rebuild`", .cache.display(), .cache.display())]
    StaleCache {
        cache: PathBuf,
        location: String,
        why: String,
    },
}

/// What vault data a folder holds (counted up to a small limit: enough to say so).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredData {
    pub marker: bool,
    pub chunk_files: u64,
    pub point_folders: u64,
    /// Counted in object storage (objects, not files and folders).
    pub objects: bool,
}

/// How far [`StoredData`] counts before it stops looking.
const COUNT_LIMIT: u64 = 1000;

impl StoredData {
    pub fn any(&self) -> bool {
        self.marker || self.any_data()
    }

    /// Chunks or points (the marker aside).
    pub fn any_data(&self) -> bool {
        self.chunk_files > 0 || self.point_folders > 0
    }
}

impl std::fmt::Display for StoredData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |n: u64| {
            if n >= COUNT_LIMIT {
                format!("{COUNT_LIMIT} or more")
            } else {
                n.to_string()
            }
        };
        let mut parts = Vec::new();
        let (chunks, points, marker) = if self.objects {
            ("chunk(s)", "recovery point(s)", "its marker")
        } else {
            (
                "chunk file(s)",
                "recovery point folder(s)",
                "its vault.toml",
            )
        };
        if self.chunk_files > 0 {
            parts.push(format!("{} {chunks}", count(self.chunk_files)));
        }
        if self.point_folders > 0 {
            parts.push(format!("{} {points}", count(self.point_folders)));
        }
        if self.marker {
            parts.push(marker.into());
        }
        write!(f, "{}", parts.join(", "))
    }
}

/// A vault folder opened through a checked handle; for a vault in object storage, the
/// local folder of its catalog (a cache) and the backend that holds everything else.
#[derive(Debug)]
pub struct VaultFolder {
    dir: Dir,
    /// Where the vault's data is when it is not in `dir` (object storage): its marker
    /// (a [`ObjectKind::Config`] object), key slots, chunks, indexes, manifests and lock.
    remote: Option<Arc<dyn Backend>>,
    /// The folder is the catalog's cache of a vault in object storage (whether or not the
    /// bucket was opened): it holds no marker or data of its own.
    cache: bool,
}

/// The name of the marker's object in object storage.
pub const MARKER_OBJECT: &str = "vault";

/// The marker's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub id: String,
    pub name: String,
    pub layout: Layout,
}

/// How a vault stores its data: the format of its chunk and index files, and whether they
/// are encrypted ([`crate::vault::store::DataFormat`] once the keys are known). Written in
/// the marker (so the folder says what it is) and in the catalog (the copy that is
/// checked against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Format 1: plain chunk files, never encrypted.
    V1,
    /// Format 2: codec blobs, encrypted unless made with `encryption = "none"`.
    V2 { encrypted: bool },
}

impl Layout {
    /// The format version (1 or 2).
    pub fn version(self) -> u32 {
        match self {
            Layout::V1 => 1,
            Layout::V2 { .. } => 2,
        }
    }

    /// Whether the vault's data is encrypted.
    pub fn is_encrypted(self) -> bool {
        matches!(self, Layout::V2 { encrypted: true })
    }

    /// The encryption's name, as in the config and the marker.
    pub fn encryption(self) -> &'static str {
        if self.is_encrypted() {
            ENCRYPTION_AES
        } else {
            ENCRYPTION_NONE
        }
    }

    /// The layout a marker's `format` and `encryption` describe (None: unknown).
    fn parse(format: Option<i64>, encryption: Option<&str>) -> Option<Layout> {
        match (format.unwrap_or(1), encryption) {
            (1, None | Some(ENCRYPTION_NONE)) => Some(Layout::V1),
            (2, Some(ENCRYPTION_AES)) => Some(Layout::V2 { encrypted: true }),
            (2, Some(ENCRYPTION_NONE)) => Some(Layout::V2 { encrypted: false }),
            _ => None,
        }
    }

    /// The layout the catalog records (format 1 when it records none: every vault made
    /// before format 2).
    pub fn of_catalog(catalog: &Catalog) -> Result<Option<Layout>, FolderError> {
        let format = catalog.setting(SETTING_FORMAT)?;
        let encryption = catalog.setting(SETTING_ENCRYPTION)?;
        let format = match format {
            None => None,
            Some(f) => match f.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => return Ok(None),
            },
        };
        Ok(Layout::parse(format, encryption.as_deref()))
    }

    /// The layout the catalog records, None when it records none (rather than format 1).
    fn of_catalog_recorded(catalog: &Catalog) -> Result<Option<Layout>, FolderError> {
        if catalog.setting(SETTING_FORMAT)?.is_none() {
            return Ok(None);
        }
        Layout::of_catalog(catalog)
    }

    /// Records the layout in the catalog.
    pub(crate) fn record(self, catalog: &Catalog) -> Result<(), FolderError> {
        catalog.set_setting(SETTING_FORMAT, &self.version().to_string())?;
        catalog.set_setting(SETTING_ENCRYPTION, self.encryption())?;
        Ok(())
    }
}

/// The marker's and the catalog's word for AES-256-GCM encryption.
pub const ENCRYPTION_AES: &str = "aes-256-gcm";
/// The marker's and the catalog's word for no encryption.
pub const ENCRYPTION_NONE: &str = "none";
/// Catalog setting: the data format version.
const SETTING_FORMAT: &str = "data_format";
/// Catalog setting: the encryption.
const SETTING_ENCRYPTION: &str = "encryption";

impl VaultFolder {
    /// Opens the folder of a vault (creating it, owner-only, when `create`), refusing a
    /// folder that another user owns or can write.
    /// Its own files (the catalog and SQLite's files beside it, the marker, the lock) must
    /// be files of ours that no one else can write or has another name for: a folder made
    /// private only after another user could write it may hold files that user planted.
    pub fn open(path: &Path, create: bool) -> Result<VaultFolder, FolderError> {
        let dir = Dir::open_private(path, create)?;
        for name in OWN_FILES {
            dir.check_own_entry(name)?;
        }
        Ok(VaultFolder {
            dir,
            remote: None,
            cache: false,
        })
    }

    /// The folder as the catalog's cache of a vault whose data lives in `remote`.
    pub fn with_remote(self, remote: Arc<dyn Backend>) -> VaultFolder {
        VaultFolder {
            dir: self.dir,
            remote: Some(remote),
            cache: true,
        }
    }

    /// The folder as the catalog's cache of a vault in object storage, without opening
    /// the bucket: only the catalog can be read ([`open_catalog_read_only`]).
    pub fn as_cache(self) -> VaultFolder {
        VaultFolder {
            dir: self.dir,
            remote: None,
            cache: true,
        }
    }

    /// The vault's data in `format`: the folder's own, or the object storage's.
    pub fn vault(
        &self,
        format: crate::vault::store::DataFormat,
    ) -> Result<crate::vault::Vault, FolderError> {
        let invalid = |e: String| self.invalid(format!("cannot open the vault's data: {e}"));
        match &self.remote {
            Some(r) => Ok(crate::vault::Vault::on(
                r.clone(),
                PathBuf::from(format!("{}/{}", r.location(), ObjectKind::Chunk)),
                format,
            )),
            None if self.cache => Err(invalid("the object storage is not open".into())),
            None => crate::vault::Vault::open_local(&self.dir, format)
                .map_err(|e| invalid(e.to_string())),
        }
    }

    /// Makes this catalog the one that writes to the vault in `remote` (the caller holds
    /// the vault's lock): refuses when another catalog (another machine, or this one's
    /// before it was rebuilt) has written to the vault since this one last did, because
    /// this one may then not know points and chunks the vault holds, and garbage
    /// collection or a backup's deduplication would go wrong on it. See [`WRITER_OBJECT`].
    pub fn claim_cache(&self, catalog: &Catalog, remote: &dyn Backend) -> Result<(), FolderError> {
        let cache_id = match catalog.setting(SETTING_CACHE_ID)? {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                catalog.set_setting(SETTING_CACHE_ID, &id)?;
                id
            }
        };
        let name = writer_object();
        let mut buf = Vec::new();
        let found = match remote.get_into(ObjectKind::Config, &name, &mut buf, MARKER_LIMIT) {
            Ok(()) => Some(parse_writer(&String::from_utf8_lossy(&buf))),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                return Err(
                    self.remote_error("cannot read which catalog last wrote to the vault", e)
                )
            }
        };
        let stale = |why: String| FolderError::StaleCache {
            cache: self.catalog_path(),
            location: remote.location().to_string(),
            why,
        };
        match found {
            Some(w) if w.cache == cache_id => return Ok(()),
            Some(w) => {
                return Err(stale(format!(
                    "another catalog (on host {}, at {}) has written to it since this one last did",
                    w.host, w.at
                )))
            }
            None => {
                // Nothing says who wrote last: a vault with data whose note was removed.
                if catalog.knows_stored_data()? || self.stored_data()?.any_data() {
                    return Err(stale(format!(
                        "its note of the catalog that last wrote to it ({}) is missing",
                        remote.locate(ObjectKind::Config, &name)
                    )));
                }
            }
        }
        self.write_writer(remote, &cache_id)
    }

    /// Records the catalog `cache_id` (of this host) as the one that writes to the vault.
    pub fn write_writer(&self, remote: &dyn Backend, cache_id: &str) -> Result<(), FolderError> {
        let text = format!(
            "# The catalog that writes to this vault. Do not edit or delete this object.\ncache = \"{cache_id}\"\nhost = {}\nat = \"{}\"\n",
            toml::Value::String(super::lease::hostname()),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        remote
            .put(ObjectKind::Config, &writer_object(), text.as_bytes())
            .and_then(|()| remote.sync())
            .map_err(|e| self.remote_error("cannot record this catalog as the vault's writer", e))
    }

    /// The object storage that holds the vault's data (None: this folder holds it).
    pub fn remote(&self) -> Option<&Arc<dyn Backend>> {
        self.remote.as_ref()
    }

    /// Where the vault's data is, for messages: the folder, or the bucket's URL.
    pub fn location(&self) -> String {
        match &self.remote {
            Some(r) => r.location().to_string(),
            None => self.dir.path().display().to_string(),
        }
    }

    /// The store of the vault's objects of `kinds`: the folder's own (its sub-folders made
    /// when missing), or the object storage.
    pub fn objects(&self, kinds: &[ObjectKind]) -> Result<Arc<dyn Backend>, BackendError> {
        match &self.remote {
            Some(r) => Ok(r.clone()),
            None => Ok(Arc::new(super::backend::LocalBackend::open_kinds(
                &self.dir, kinds,
            )?)),
        }
    }

    /// The vault's objects of `kind` when it has any place for them yet (a local folder
    /// without the kind's sub-folder has none; object storage always has one).
    pub fn existing_objects(
        &self,
        kind: ObjectKind,
    ) -> Result<Option<Arc<dyn Backend>>, BackendError> {
        match &self.remote {
            Some(r) => Ok(Some(r.clone())),
            None => {
                let sub = super::backend::local::folder_name(kind);
                let there = self.dir.exists(sub).map_err(|e| {
                    BackendError::from_io(
                        super::backend::ErrorContext::new(
                            super::backend::Operation::Open,
                            Some(kind),
                            None,
                            self.dir.path_of(sub).display().to_string(),
                        ),
                        std::io::Error::other(e.to_string()),
                    )
                })?;
                if !there {
                    return Ok(None);
                }
                self.objects(&[kind]).map(Some)
            }
        }
    }

    fn remote_error(&self, what: &str, e: BackendError) -> FolderError {
        self.invalid(format!("{what}: {e}"))
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.dir.path_of(CATALOG_FILE)
    }

    /// The marker, if the folder has one.
    pub fn marker(&self) -> Result<Option<Marker>, FolderError> {
        if let Some(r) = &self.remote {
            let mut buf = Vec::new();
            match r.get_into(ObjectKind::Config, &marker_object(), &mut buf, MARKER_LIMIT) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(self.remote_error("cannot read the vault's marker", e)),
            }
            let text = String::from_utf8_lossy(&buf);
            return parse_marker(&text).map(Some).map_err(|why| {
                self.invalid(format!(
                    "its marker {} is damaged ({why}); put it back from a copy",
                    r.locate(ObjectKind::Config, &marker_object())
                ))
            });
        }
        let mut f = match self.dir.open_read(MARKER_FILE) {
            Ok(f) => f,
            Err(FsxError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let mut text = String::new();
        Read::by_ref(&mut f)
            .take(MARKER_LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| self.invalid(format!("cannot read {MARKER_FILE}: {e}")))?;
        parse_marker(&text).map(Some).map_err(|why| {
            self.invalid(format!(
                "{MARKER_FILE} is damaged ({why}); restore it from a copy, or remove it if catalog.db is intact"
            ))
        })
    }

    /// Writes the marker durably; never replaces one that is there.
    pub fn write_marker(&self, m: &Marker) -> Result<(), FolderError> {
        let text = format!(
            "# This {} is a vmvault vault. Do not edit or delete {}.\nformat = {}\nencryption = \"{}\"\nid = \"{}\"\nname = {}\n",
            if self.remote.is_some() { "prefix" } else { "folder" },
            if self.remote.is_some() { "this object" } else { "this file" },
            m.layout.version(),
            m.layout.encryption(),
            m.id,
            toml::Value::String(m.name.clone())
        );
        if let Some(r) = &self.remote {
            return match r.create(ObjectKind::Config, &marker_object(), text.as_bytes()) {
                Ok(Created::New) => Ok(()),
                // Ours from an earlier try, or another vault's: reading it tells.
                Ok(Created::AlreadyExists) => match self.marker()? {
                    Some(there) if there.id == m.id => Ok(()),
                    _ => Err(self.invalid(format!(
                        "{} holds another vault's marker: vmvault will not put a second vault in one place. Give this vault a prefix of its own",
                        r.locate(ObjectKind::Config, &marker_object())
                    ))),
                },
                Err(e) => Err(self.remote_error("cannot write the vault's marker", e)),
            };
        }
        let temp = format!(".tmp-{MARKER_FILE}-{}", std::process::id());
        let _ = self.dir.remove_file(&temp);
        let write = || -> Result<(), FsxError> {
            let mut f = self.dir.create_new(&temp, 0o600)?;
            f.write_all(text.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| FsxError::Io {
                    path: self.dir.path_of(&temp),
                    source: e,
                })?;
            self.dir.rename_noreplace(&temp, &self.dir, MARKER_FILE)?;
            self.dir.sync()
        };
        write().map_err(|e| {
            let _ = self.dir.remove_file(&temp);
            FolderError::from(e)
        })
    }

    /// What vault data the folder holds (stops counting at a small limit).
    pub fn stored_data(&self) -> Result<StoredData, FolderError> {
        if let Some(r) = &self.remote {
            let listing = |e| self.remote_error("cannot list what the vault holds", e);
            let marker = r
                .stat(ObjectKind::Config, &marker_object())
                .map_err(listing)?
                .is_some();
            let mut chunk_files = 0;
            for o in r.list(ObjectKind::Chunk) {
                o.map_err(listing)?;
                chunk_files += 1;
                if chunk_files >= COUNT_LIMIT {
                    break;
                }
            }
            let point_folders = (self.point_ids()?.len() as u64).min(COUNT_LIMIT);
            return Ok(StoredData {
                marker,
                chunk_files,
                point_folders,
                objects: true,
            });
        }
        let marker = self.dir.exists(MARKER_FILE)?;
        let chunk_files = count_entries(&self.dir.path_of(CHUNKS_DIR), 2)?;
        let point_folders = count_entries(&self.dir.path_of(POINTS_DIR), 1)?;
        Ok(StoredData {
            marker,
            chunk_files,
            point_folders,
            objects: false,
        })
    }

    /// The recovery points the vault holds objects of (a folder under `points/`; in object
    /// storage, an index or a manifest).
    fn point_ids(&self) -> Result<std::collections::HashSet<String>, FolderError> {
        let mut ids = std::collections::HashSet::new();
        if let Some(r) = &self.remote {
            for kind in [ObjectKind::Index, ObjectKind::Manifest] {
                for o in r.list(kind) {
                    let o =
                        o.map_err(|e| self.remote_error("cannot list what the vault holds", e))?;
                    let name = o.name.as_str();
                    let id = match kind {
                        ObjectKind::Index => match super::backend::index_parts(name) {
                            Some((p, _)) => p,
                            None => continue,
                        },
                        _ => name,
                    };
                    ids.insert(id.to_string());
                }
            }
            return Ok(ids);
        }
        let points = self.dir.path_of(POINTS_DIR);
        match std::fs::read_dir(&points) {
            Ok(rd) => {
                for e in rd {
                    let e =
                        e.map_err(|e| self.invalid(format!("cannot list {POINTS_DIR}/: {e}")))?;
                    ids.insert(e.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.invalid(format!("cannot list {POINTS_DIR}/: {e}"))),
        }
        Ok(ids)
    }

    fn invalid(&self, message: String) -> FolderError {
        FolderError::Invalid {
            path: PathBuf::from(self.location()),
            message,
        }
    }
}

/// The marker's object name.
fn marker_object() -> ObjectName {
    ObjectName::new(MARKER_OBJECT).expect("a valid object name")
}

/// The [`ObjectKind::Config`] object of a vault in object storage that names the catalog
/// that last wrote to it (its cache id, host and time). The catalog of a vault in object
/// storage is a cache on one machine; a process writes to the vault only under the vault's
/// lock and only after it has made its own catalog the writer here. A catalog that finds
/// another one named is stale (another machine, or a rebuild, wrote since), and is
/// refused: `vault rebuild` makes a current one.
pub const WRITER_OBJECT: &str = "writer";
/// Catalog setting: the id of this catalog as a cache of a vault in object storage.
pub const SETTING_CACHE_ID: &str = "cache_id";

fn writer_object() -> ObjectName {
    ObjectName::new(WRITER_OBJECT).expect("a valid object name")
}

/// What the writer object says (unreadable parts read as "unknown").
struct Writer {
    cache: String,
    host: String,
    at: String,
}

fn parse_writer(text: &str) -> Writer {
    let v: toml::Table = toml::from_str(text).unwrap_or_default();
    let get = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(crate::fmt::echo)
            .unwrap_or_else(|| "unknown".into())
    };
    Writer {
        cache: v
            .get("cache")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string(),
        host: get("host"),
        at: get("at"),
    }
}

/// Counts entries `depth` levels down under `root` (chunks live at depth 2: `ab/abcd…`),
/// ignoring vmvault's temporary files; stops at [`COUNT_LIMIT`].
fn count_entries(root: &Path, depth: u32) -> Result<u64, FolderError> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(FolderError::Invalid {
                path: root.to_path_buf(),
                message: format!("cannot list it: {e}"),
            })
        }
    };
    let mut n = 0;
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            continue;
        }
        n += if depth > 1 {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_entries(&e.path(), depth - 1)?
            } else {
                0
            }
        } else {
            1
        };
        if n >= COUNT_LIMIT {
            return Ok(COUNT_LIMIT);
        }
    }
    Ok(n)
}

/// The marker in `text`, or what is wrong with it.
fn parse_marker(text: &str) -> Result<Marker, String> {
    let v: toml::Table = toml::from_str(text).map_err(|_| "it is not TOML".to_string())?;
    let id = v
        .get("id")
        .and_then(|i| i.as_str())
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .ok_or("no vault id in it")?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_string();
    let format = match v.get("format") {
        None => None,
        Some(f) => Some(f.as_integer().ok_or("its format is not a number")?),
    };
    let encryption = match v.get("encryption") {
        None => None,
        Some(e) => Some(e.as_str().ok_or("its encryption is not a string")?),
    };
    let layout = Layout::parse(format, encryption).ok_or_else(|| {
        format!(
            "format {} with encryption {:?} is not a vault this vmvault knows (format 1, or 2 with \"aes-256-gcm\" or \"none\"); a newer vmvault may have made it",
            format.unwrap_or(1),
            encryption.unwrap_or("none")
        )
    })?;
    Ok(Marker { id, name, layout })
}

/// The layout the marker of the vault folder at `path` states, without creating or
/// changing anything (None: no vault there yet, or it cannot be read).
pub fn layout_of(path: &Path) -> Option<Layout> {
    VaultFolder::open(path, false)
        .ok()?
        .marker()
        .ok()?
        .map(|m| m.layout)
}

/// The layout the catalog in the cache folder `path` of a vault in object storage records
/// (None: no catalog there yet, or it cannot be read).
pub fn cached_layout(path: &Path) -> Option<Layout> {
    let folder = VaultFolder::open(path, false).ok()?.as_cache();
    open_catalog_read_only(&folder).ok().map(|(_, l)| l)
}

/// How [`open_catalog`] opened the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogOpened {
    /// A new vault: the folder held no data, and a new catalog was created.
    Created,
    /// The vault's own catalog.
    Existing,
    /// A catalog written before vault ids existed, now given one (and the marker).
    Adopted,
}

/// Opens the catalog of the vault in `folder` for its owner, following the rules in the
/// module docs: creates one only where no vault data is; never pairs a catalog with the
/// wrong folder.
#[cfg(test)]
pub(crate) fn open_catalog(
    folder: &VaultFolder,
    vault_name: &str,
) -> Result<(Catalog, CatalogOpened), FolderError> {
    open_catalog_as(folder, vault_name, Layout::V1).map(|(c, how, _)| (c, how))
}

/// [`open_catalog`], making a new vault with `new_layout`; returns the vault's layout
/// (checked to be the same in the marker and the catalog) too.
pub fn open_catalog_as(
    folder: &VaultFolder,
    vault_name: &str,
    new_layout: Layout,
) -> Result<(Catalog, CatalogOpened, Layout), FolderError> {
    let marker = folder.marker()?;
    let mut present = folder.dir.exists(CATALOG_FILE)?;
    if present && marker.is_none() && catalog_is_empty_file(folder) && !folder.stored_data()?.any()
    {
        // A creation killed before the catalog got its tables: nothing is lost by
        // starting again.
        folder.dir.remove_file(CATALOG_FILE)?;
        present = false;
    }
    if !present {
        let data = folder.stored_data()?;
        if data.any() && folder.cache {
            return Err(FolderError::NoCache {
                cache: folder.catalog_path(),
                location: folder.location(),
                data,
            });
        }
        if data.any() {
            return Err(FolderError::CatalogLost {
                path: folder.path().to_path_buf(),
                what: "catalog.db is missing".into(),
                data,
            });
        }
        let catalog = Catalog::create(&folder.dir, CATALOG_FILE)?;
        give_identity(folder, &catalog, vault_name, new_layout)?;
        return Ok((catalog, CatalogOpened::Created, new_layout));
    }
    let catalog = Catalog::open(&folder.catalog_path())?;
    let catalog_id = catalog.setting(SETTING_VAULT_ID)?;
    match (catalog_id, marker) {
        (Some(c), Some(m)) if c == m.id => {
            if !m.name.is_empty() && m.name != vault_name {
                return Err(FolderError::OtherName {
                    path: folder.path().to_path_buf(),
                    folder_name: m.name,
                    config_name: vault_name.to_string(),
                });
            }
            let layout = agreed_layout(folder, &catalog, m.layout)?;
            Ok((catalog, CatalogOpened::Existing, layout))
        }
        (Some(c), Some(m)) => Err(FolderError::ForeignCatalog {
            path: folder.path().to_path_buf(),
            catalog_id: c,
            folder_id: m.id,
        }),
        // A crash between creating the catalog and writing the marker: the catalog is
        // the vault's own (it was created here because the folder held nothing). With data
        // in the folder, the marker was removed: the catalog must describe that data, or it
        // may be another vault's.
        (Some(c), None) => {
            if let Some(mismatch) = catalog_disagrees_with_store(folder, &catalog)? {
                return Err(no_marker_foreign(folder, &c, &mismatch));
            }
            let layout = catalog_layout(folder, &catalog)?;
            folder.write_marker(&Marker {
                id: c,
                name: vault_name.to_string(),
                layout,
            })?;
            Ok((catalog, CatalogOpened::Existing, layout))
        }
        (None, Some(m)) => Err(FolderError::ForeignCatalog {
            path: folder.path().to_path_buf(),
            catalog_id: NO_ID.into(),
            folder_id: m.id,
        }),
        (None, None) => {
            let data = folder.stored_data()?;
            if data.any() && !catalog.knows_stored_data()? {
                return Err(FolderError::CatalogLost {
                    path: folder.path().to_path_buf(),
                    what: "catalog.db has no record of any backup".into(),
                    data,
                });
            }
            // With data: a vault made before ids existed (format 1). Without: a creation
            // stopped before the id was written, which goes on as it began.
            let layout = if data.any() {
                Layout::V1
            } else {
                Layout::of_catalog_recorded(&catalog)?.unwrap_or(new_layout)
            };
            give_identity(folder, &catalog, vault_name, layout)?;
            Ok((catalog, CatalogOpened::Adopted, layout))
        }
    }
}

/// The layout the catalog records, or an error when it records one this vmvault does not
/// know.
fn catalog_layout(folder: &VaultFolder, catalog: &Catalog) -> Result<Layout, FolderError> {
    Layout::of_catalog(catalog)?.ok_or_else(|| FolderError::Invalid {
        path: folder.path().to_path_buf(),
        message: "catalog.db records a data format or encryption this vmvault does not know: use the vmvault that made the vault, or a newer one".into(),
    })
}

/// The layout of a vault whose marker says `marked`: the catalog must say the same (one of
/// them was changed otherwise, and reading the data as the wrong format, or unencrypted,
/// must not follow).
fn agreed_layout(
    folder: &VaultFolder,
    catalog: &Catalog,
    marked: Layout,
) -> Result<Layout, FolderError> {
    let recorded = catalog_layout(folder, catalog)?;
    if recorded != marked {
        return Err(FolderError::Invalid {
            path: folder.path().to_path_buf(),
            message: format!(
                "{MARKER_FILE} says data format {} ({} encryption) but catalog.db says format {} ({}): one of them was changed. Nothing was read. Put back the vault's own {MARKER_FILE} or catalog.db from a copy",
                marked.version(),
                marked.encryption(),
                recorded.version(),
                recorded.encryption()
            ),
        });
    }
    Ok(recorded)
}

/// The error for a folder without its marker whose catalog does not describe its data.
fn no_marker_foreign(folder: &VaultFolder, catalog_id: &str, mismatch: &str) -> FolderError {
    FolderError::Invalid {
        path: folder.path().to_path_buf(),
        message: format!(
            "{MARKER_FILE} is missing, and catalog.db (vault {catalog_id}) does not describe the data in this folder ({mismatch}): it may be another vault's catalog. Nothing was changed. Put this vault's own catalog.db back, or {MARKER_FILE} from a copy"
        ),
    }
}

/// Whether a catalog fails to describe the point folders of `folder`: a folder it has no
/// record of, or a committed point without its folder. None when it describes them all.
fn catalog_disagrees_with_store(
    folder: &VaultFolder,
    catalog: &Catalog,
) -> Result<Option<String>, FolderError> {
    let mut known: std::collections::HashSet<String> =
        catalog.all_points()?.into_iter().map(|p| p.id).collect();
    let committed = known.clone();
    known.extend(catalog.announced_point_ids()?);
    let folders = folder.point_ids()?;
    let unknown = folders.iter().filter(|f| !known.contains(*f)).count();
    let missing = committed.iter().filter(|p| !folders.contains(*p)).count();
    let chunks_without_backups =
        folder.stored_data()?.chunk_files > 0 && !catalog.knows_stored_data()?;
    Ok(match (unknown, missing, chunks_without_backups) {
        (0, 0, false) => None,
        (0, 0, true) => Some("chunk files, but no record of any backup".into()),
        _ => Some(format!(
            "{unknown} point folder(s) it does not know, {missing} of its points without a folder"
        )),
    })
}

/// Gives a vault a new id: in its catalog first, then in the marker (a crash in between
/// leaves a catalog with an id and no marker, which the next open completes).
fn give_identity(
    folder: &VaultFolder,
    catalog: &Catalog,
    vault_name: &str,
    layout: Layout,
) -> Result<(), FolderError> {
    let id = uuid::Uuid::new_v4().to_string();
    // One transaction: a catalog has an id only together with its layout.
    let version = layout.version().to_string();
    catalog.set_settings(&[
        (SETTING_FORMAT, &version),
        (SETTING_ENCRYPTION, layout.encryption()),
        (SETTING_VAULT_ID, &id),
    ])?;
    folder.write_marker(&Marker {
        id,
        name: vault_name.to_string(),
        layout,
    })
}

fn catalog_is_empty_file(folder: &VaultFolder) -> bool {
    std::fs::symlink_metadata(folder.catalog_path()).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Opens the catalog of the vault in `folder` for reading (another process may own the
/// vault). A missing catalog is an error that says what happened.
pub fn open_catalog_read_only(folder: &VaultFolder) -> Result<(Catalog, Layout), FolderError> {
    if folder.cache && folder.remote.is_none() {
        // The cache of a vault in object storage: the catalog is all there is here.
        if !folder.dir.exists(CATALOG_FILE)? {
            return Err(FolderError::Invalid {
                path: folder.path().to_path_buf(),
                message: "this machine has no catalog of the vault yet: run `vmvault vault rebuild`, or any command that writes to the vault".into(),
            });
        }
        let catalog = Catalog::open_read_only(&folder.catalog_path())?;
        let layout = catalog_layout(folder, &catalog)?;
        return Ok((catalog, layout));
    }
    if !folder.dir.exists(CATALOG_FILE)? {
        let data = folder.stored_data()?;
        if folder.cache {
            return Err(FolderError::NoCache {
                cache: folder.catalog_path(),
                location: folder.location(),
                data,
            });
        }
        return Err(FolderError::CatalogLost {
            path: folder.path().to_path_buf(),
            what: "catalog.db is missing".into(),
            data,
        });
    }
    let catalog = Catalog::open_read_only(&folder.catalog_path())?;
    let marker = folder.marker()?;
    if marker.is_none() {
        if let Some(c) = catalog.setting(SETTING_VAULT_ID)? {
            if let Some(mismatch) = catalog_disagrees_with_store(folder, &catalog)? {
                return Err(no_marker_foreign(folder, &c, &mismatch));
            }
        }
    }
    let layout = match marker {
        Some(m) => {
            let id = catalog.setting(SETTING_VAULT_ID)?;
            if id.as_deref() != Some(m.id.as_str()) {
                return Err(FolderError::ForeignCatalog {
                    path: folder.path().to_path_buf(),
                    catalog_id: id.unwrap_or_else(|| NO_ID.into()),
                    folder_id: m.id,
                });
            }
            agreed_layout(folder, &catalog, m.layout)?
        }
        None => catalog_layout(folder, &catalog)?,
    };
    Ok((catalog, layout))
}

/// How a catalog without a vault id is named in messages.
const NO_ID: &str = "(none: a catalog made elsewhere or before this vault)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_or_unknown_marker_says_what_is_wrong_with_it() {
        let ok = parse_marker("id = \"v1\"\nformat = 2\nencryption = \"aes-256-gcm\"\n").unwrap();
        assert_eq!(ok.layout, Layout::V2 { encrypted: true });
        assert_eq!(parse_marker("id = \"v1\"\n").unwrap().layout, Layout::V1);
        for (text, says) in [
            ("name = \"x\"\n", "no vault id"),
            ("id = \"\"\n", "no vault id"),
            ("{{{", "not TOML"),
            ("id = \"v\"\nformat = \"two\"\n", "format is not a number"),
            (
                "id = \"v\"\nformat = 3\nencryption = \"aes-256-gcm\"\n",
                "format 3",
            ),
            (
                "id = \"v\"\nformat = 2\nencryption = \"rot13\"\n",
                "\"rot13\"",
            ),
        ] {
            let why = parse_marker(text).unwrap_err();
            assert!(why.contains(says), "{text:?}: {why}");
        }
    }
    use std::os::unix::fs::PermissionsExt;

    fn folder() -> (tempfile::TempDir, VaultFolder) {
        let t = tempfile::tempdir().unwrap();
        let f = VaultFolder::open(&t.path().join("v"), true).unwrap();
        (t, f)
    }

    fn plant_chunk(f: &VaultFolder) {
        let d = f.path().join("chunks/ab");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("ab{}", "0".repeat(62))), b"x").unwrap();
    }

    #[test]
    fn a_new_folder_gets_a_catalog_and_a_marker_with_one_id() {
        let (_t, f) = folder();
        let (c, how) = open_catalog(&f, "v1").unwrap();
        assert_eq!(how, CatalogOpened::Created);
        let m = f.marker().unwrap().unwrap();
        assert_eq!(c.setting(SETTING_VAULT_ID).unwrap(), Some(m.id.clone()));
        assert_eq!(m.name, "v1");
        drop(c);
        let (_, how) = open_catalog(&f, "v1").unwrap();
        assert_eq!(how, CatalogOpened::Existing);
    }

    #[test]
    fn planted_files_in_the_folder_are_refused() {
        let (t, f) = folder();
        drop(open_catalog(&f, "v1").unwrap());
        drop(f);
        let v = t.path().join("v");
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"").unwrap();
        // (The catalog keeps its -wal file when closed.)
        let _ = std::fs::remove_file(v.join("catalog.db-wal"));
        std::os::unix::fs::symlink(&victim, v.join("catalog.db-wal")).unwrap();
        let e = VaultFolder::open(&v, false).unwrap_err();
        assert!(
            e.to_string().contains("catalog.db-wal is a symbolic link"),
            "{e}"
        );
        std::fs::remove_file(v.join("catalog.db-wal")).unwrap();
        std::fs::set_permissions(v.join(MARKER_FILE), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let e = VaultFolder::open(&v, false).unwrap_err();
        assert!(
            e.to_string()
                .contains("vault.toml can be written by other users"),
            "{e}"
        );
        std::fs::set_permissions(v.join(MARKER_FILE), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::hard_link(v.join(CATALOG_FILE), t.path().join("other-name")).unwrap();
        let e = VaultFolder::open(&v, false).unwrap_err();
        assert!(e.to_string().contains("hard links"), "{e}");
        std::fs::remove_file(t.path().join("other-name")).unwrap();
        VaultFolder::open(&v, false).unwrap();
    }

    #[test]
    fn a_folder_named_for_another_vault_is_refused() {
        let (_t, f) = folder();
        drop(open_catalog(&f, "v1").unwrap());
        let e = open_catalog(&f, "v2").unwrap_err();
        assert!(matches!(e, FolderError::OtherName { .. }), "{e}");
        assert!(e.to_string().contains("set name = \"v2\""), "{e}");
        open_catalog(&f, "v1").unwrap();
    }

    #[test]
    fn without_its_marker_a_catalog_must_describe_the_store() {
        let (t, f) = folder();
        let (c, _) = open_catalog(&f, "v1").unwrap();
        drop(c);
        // Another vault's catalog (it knows no points) over this one's data, marker gone.
        let other = VaultFolder::open(&t.path().join("other"), true).unwrap();
        drop(open_catalog(&other, "v2").unwrap());
        std::fs::create_dir_all(f.path().join("points/p1")).unwrap();
        std::fs::remove_file(f.catalog_path()).unwrap();
        std::fs::copy(other.catalog_path(), f.catalog_path()).unwrap();
        std::fs::remove_file(f.path().join(MARKER_FILE)).unwrap();
        let e = open_catalog(&f, "v1").unwrap_err();
        assert!(
            e.to_string().contains("may be another vault's catalog"),
            "{e}"
        );
        assert!(
            e.to_string().contains("1 point folder(s) it does not know"),
            "{e}"
        );
        assert!(!f.path().join(MARKER_FILE).exists());
        // Listings (read-only) refuse it the same way rather than show another vault.
        let e = open_catalog_read_only(&f).unwrap_err();
        assert!(
            e.to_string().contains("may be another vault's catalog"),
            "{e}"
        );
        // With no data, the catalog is taken as this folder's (a crash before the marker).
        std::fs::remove_dir_all(f.path().join("points")).unwrap();
        let (_, how) = open_catalog(&f, "v1").unwrap();
        assert_eq!(how, CatalogOpened::Existing);
    }

    #[test]
    fn a_lost_catalog_is_never_replaced() {
        let (_t, f) = folder();
        drop(open_catalog(&f, "v1").unwrap());
        plant_chunk(&f);
        std::fs::remove_file(f.catalog_path()).unwrap();
        let e = open_catalog(&f, "v1").unwrap_err();
        assert!(matches!(e, FolderError::CatalogLost { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("catalog.db is missing"), "{msg}");
        assert!(msg.contains("1 chunk file(s)"), "{msg}");
        assert!(
            msg.contains("Restore catalog.db (with its catalog.db-wal"),
            "{msg}"
        );
        assert!(!f.catalog_path().exists(), "no new catalog was created");
        // Even with the marker gone too, the chunks alone refuse a new catalog.
        std::fs::remove_file(f.path().join(MARKER_FILE)).unwrap();
        assert!(open_catalog(&f, "v1").is_err());
        assert!(!f.catalog_path().exists());
        // And a read-only open says the same.
        let e = open_catalog_read_only(&f).unwrap_err();
        assert!(matches!(e, FolderError::CatalogLost { .. }), "{e}");
    }

    #[test]
    fn an_empty_or_foreign_catalog_is_refused() {
        let (_t, f) = folder();
        drop(open_catalog(&f, "v1").unwrap());
        // Zero bytes (SQLite would take it for a new database).
        std::fs::write(f.catalog_path(), b"").unwrap();
        let e = open_catalog(&f, "v1").unwrap_err().to_string();
        assert!(e.contains("is empty (0 bytes)"), "{e}");
        assert!(!e.contains("discover"), "{e}");
        assert_eq!(std::fs::metadata(f.catalog_path()).unwrap().len(), 0);
        // Another vault's catalog.
        let (_t2, other) = folder();
        drop(open_catalog(&other, "v2").unwrap());
        std::fs::copy(other.catalog_path(), f.catalog_path()).unwrap();
        let e = open_catalog(&f, "v1").unwrap_err();
        assert!(matches!(e, FolderError::ForeignCatalog { .. }), "{e}");
        let e = open_catalog_read_only(&f).unwrap_err();
        assert!(matches!(e, FolderError::ForeignCatalog { .. }), "{e}");
        // Garbage.
        std::fs::write(
            f.catalog_path(),
            b"not a database at all, just some text....",
        )
        .unwrap();
        assert!(open_catalog(&f, "v1").is_err());
    }

    #[test]
    fn a_creation_killed_early_starts_again() {
        let (_t, f) = folder();
        std::fs::write(f.catalog_path(), b"").unwrap();
        let (_, how) = open_catalog(&f, "v1").unwrap();
        assert_eq!(how, CatalogOpened::Created);
    }

    #[test]
    fn legacy_vaults_are_adopted_unless_their_catalog_knows_nothing() {
        let (_t, f) = folder();
        let (c, _) = open_catalog(&f, "v1").unwrap();
        // Make it look like a vault from before ids: no id, no marker.
        c.transaction(|tx| tx.execute("DELETE FROM settings", []).map(|_| ()))
            .unwrap();
        drop(c);
        std::fs::remove_file(f.path().join(MARKER_FILE)).unwrap();
        // An empty catalog next to stored data: the old bug's aftermath.
        plant_chunk(&f);
        let e = open_catalog(&f, "v1").unwrap_err();
        assert!(matches!(e, FolderError::CatalogLost { .. }), "{e}");
        assert!(e.to_string().contains("no record of any backup"), "{e}");
        // Without data it is adopted.
        std::fs::remove_dir_all(f.path().join(CHUNKS_DIR)).unwrap();
        let (_, how) = open_catalog(&f, "v1").unwrap();
        assert_eq!(how, CatalogOpened::Adopted);
        assert!(f.marker().unwrap().is_some());
    }
}
