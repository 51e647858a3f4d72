//! The catalog: what the vault knows (items, policies, jobs, recovery points, committed
//! chunks, settings) in one SQLite database per vault.
//!
//! - WAL mode. Transactions that other files depend on (a recovery point's commit record,
//!   the deletion of point rows before their index files go, the deletion of chunk rows
//!   before their files go) are durable when the call returns: the WAL is fsynced after
//!   their commit, as `synchronous = FULL` would, but outside the connection's lock (see
//!   [`WalSync`]), so other threads read and write meanwhile and committers that wait
//!   together share one fsync (group commit).
//!   Job and item bookkeeping runs with `synchronous = NORMAL`: it survives a killed
//!   process in full; a power loss may lose its last moments (a job then reads as
//!   interrupted), never the consistency of the catalog.
//! - Schema migrations by `PRAGMA user_version`; a catalog written by a newer vmvault is
//!   refused instead of being misread.
//! - One transaction per state change. Times are stored as fixed-width RFC 3339 UTC text
//!   (microseconds, `Z`), so text order is time order.
//! - The database files are created owner-only (0600).

use crate::model::*;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// An error of the catalog, with the database it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {}: {source}{}", .path.display(), hint(.source, .path))]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, CatalogError>;

impl CatalogError {
    /// Whether the catalog failed because its file system is full.
    pub fn is_full(&self) -> bool {
        matches!(self, CatalogError::Sqlite { source, path } if is_disk_full(source, path))
    }
}

/// Free space below which an I/O error of SQLite is taken for a full disk: SQLite reports
/// "disk I/O error", not "database or disk is full", when it cannot grow its shared-memory
/// file or create its WAL.
const NEARLY_FULL_BYTES: u64 = 1024 * 1024;

fn is_disk_full(e: &rusqlite::Error, path: &Path) -> bool {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => true,
        Some(rusqlite::ErrorCode::SystemIoFailure) => path
            .parent()
            .and_then(|p| crate::fsx::free_space(p).ok())
            .is_some_and(|(_, free)| free < NEARLY_FULL_BYTES),
        _ => false,
    }
}

/// What to do about the catalog's error, where vmvault knows: where the space ran out, or
/// how to recover a damaged catalog.
fn hint(e: &rusqlite::Error, path: &Path) -> String {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    if matches!(e.sqlite_error_code(), Some(DatabaseCorrupt | NotADatabase)) {
        return format!(". The catalog is damaged. {RESTORE_CATALOG_ADVICE}");
    }
    if !is_disk_full(e, path) {
        return String::new();
    }
    match path.parent().and_then(crate::fsx::space_note) {
        Some(note) => format!(" ({note}: free space there, or move the vault)"),
        None => " (its file system is full: free space there, or move the vault)".into(),
    }
}

/// Schema migrations; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    cloud_service TEXT NOT NULL,
    region TEXT NOT NULL,
    os TEXT NOT NULL,
    size TEXT NOT NULL,
    power_state TEXT NOT NULL,
    disks TEXT NOT NULL,
    registration_state TEXT NOT NULL,
    protection_state TEXT NOT NULL,
    policy TEXT,
    last_backup_time TEXT,
    last_backup_status TEXT,
    not_found INTEGER NOT NULL DEFAULT 0,
    discovered_at TEXT NOT NULL,
    purge_at TEXT,
    last_scheduled_run TEXT,
    last_error TEXT
);
CREATE INDEX items_name ON items(name);
CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    builtin INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    item_id TEXT,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    is_user_triggered INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_start ON jobs(start_time);
CREATE INDEX jobs_item ON jobs(item_id, start_time);
CREATE INDEX jobs_status ON jobs(status);
CREATE TABLE job_tasks (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time TEXT,
    end_time TEXT,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE points (
    id TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    time TEXT NOT NULL,
    scheduled_time TEXT NOT NULL,
    expiry TEXT,
    retain_until TEXT,
    kind TEXT NOT NULL,
    consistency TEXT NOT NULL,
    logical_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    disks TEXT NOT NULL,
    cbt_token TEXT,
    job_id TEXT,
    chunk_size INTEGER NOT NULL,
    damaged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX points_item ON points(item_id, time);
CREATE TABLE chunks (
    digest BLOB PRIMARY KEY,
    stored_len INTEGER NOT NULL,
    raw_len INTEGER NOT NULL,
    added_at TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // 2: indexes are bound to their point (the hash of each index file, recorded at commit),
    // and a point's folder is announced before it is written (so garbage collection can tell a
    // half-written point of ours from data it does not know).
    r#"
ALTER TABLE points ADD COLUMN index_hashes TEXT;
CREATE TABLE point_writes (
    point_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    started TEXT NOT NULL
);
"#,
    // 3: why a point folder was announced (a backup writing it, or a prune removing it) and,
    // for a write, which disks it holds: garbage collection keeps a folder a backup finished
    // writing (it may be a point a newer catalog committed) and removes one it never finished.
    r#"
ALTER TABLE point_writes ADD COLUMN purpose TEXT;
ALTER TABLE point_writes ADD COLUMN disks TEXT;
"#,
];

/// A point folder a backup is about to write ([`Catalog::record_point_writes`]).
#[derive(Debug, Clone, Copy)]
pub struct PointWriteAnnounce<'a> {
    pub point_id: &'a str,
    /// The backup job.
    pub job_id: &'a str,
    /// The disks whose indexes the folder will hold.
    pub disks: &'a [u32],
}

/// A point folder the catalog announced before a job wrote or removed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointWrite {
    pub point_id: String,
    /// The job that announced it.
    pub job_id: String,
    pub purpose: WritePurpose,
}

/// Why a point folder was announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritePurpose {
    /// A backup was about to write the indexes of these disks, then commit the point.
    Write { disks: Vec<u32> },
    /// A prune or delete removed the point's row and was about to remove its folder.
    Remove,
    /// Announced by a vmvault that did not record why (schema 2).
    Unrecorded,
}

/// The catalog file's name in the vault folder.
pub const CATALOG_FILE: &str = "catalog.db";

/// Formats a time the way the catalog stores it (fixed width, sortable). Times past
/// [`crate::fmt::max_time`] are stored as it: later years would not read back.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.min(crate::fmt::max_time())
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn opt_time(s: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    s.as_deref().map(parse_time).transpose()
}

fn conv_err(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("unknown {what} `{value}`").into(),
    )
}

fn json_col<T: serde::de::DeserializeOwned>(s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing plain data of ours to JSON cannot fail (no maps with non-string keys).
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

macro_rules! enum_col {
    ($row:expr, $col:expr, $ty:ty) => {{
        let s: String = $row.get($col)?;
        <$ty>::parse(&s).ok_or_else(|| conv_err(stringify!($ty), &s))?
    }};
}

/// Filter for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub since: Option<DateTime<Utc>>,
    pub statuses: Vec<JobStatus>,
    pub operations: Vec<JobOperation>,
    pub item_id: Option<String>,
    /// Case-insensitive substring of the item's display name.
    pub item_text: Option<String>,
    /// Only these jobs (when not empty).
    pub ids: Vec<String>,
    pub limit: Option<usize>,
}

/// A committed chunk to record with a recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRow {
    pub digest: [u8; 32],
    pub stored_len: u64,
    pub raw_len: u64,
}

/// Recovery point counts of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemPointStats {
    pub item_id: String,
    pub count: u64,
    pub newest: Option<DateTime<Utc>>,
    pub newest_logical_bytes: u64,
}

/// Everything committed with a recovery point, in one transaction.
#[derive(Clone, Copy)]
pub struct PointCommit<'a> {
    pub point: &'a RecoveryPoint,
    /// The retain-until of an on-demand point (kept to restore its expiry on resume).
    pub retain_until: Option<DateTime<Utc>>,
    pub chunk_size: u32,
    /// Disk number → BLAKE3 of its index file, as written.
    pub index_hashes: &'a [(u32, [u8; 32])],
    /// Chunks this point added to the store.
    pub chunks: &'a [ChunkRow],
    pub now: DateTime<Utc>,
    /// The item's new state.
    pub item: &'a Item,
    /// The finished job.
    pub job: &'a Job,
}

/// Totals of the chunk store as the catalog knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkTotals {
    pub chunks: u64,
    pub stored_bytes: u64,
    pub raw_bytes: u64,
}

/// A stored policy: its name and definition (TOML text), as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    pub name: String,
    pub definition: String,
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct Catalog {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Told of changes once they are committed ([`Catalog::set_mirror`]).
    mirror: std::sync::OnceLock<std::sync::Arc<dyn CatalogMirror>>,
    wal: WalSync,
}

/// What keeps a copy of the catalog's items, policies and points in the vault itself (the
/// objects a rebuild reads back). Called after each change is committed, with the ids
/// changed; it reads what it needs from the catalog. It must not fail the change: the
/// catalog is the record, the copy is for a rebuild.
pub trait CatalogMirror: Send + Sync {
    fn items_changed(&self, catalog: &Catalog, ids: &[String]);
    fn policies_changed(&self, catalog: &Catalog, names: &[String]);
    fn points_changed(&self, catalog: &Catalog, ids: &[String]);
}

/// Makes commits durable by fsyncing the WAL after them, outside the connection's lock.
///
/// With `synchronous = NORMAL` SQLite appends a commit to the WAL without syncing it (it
/// syncs the WAL before each checkpoint, and the database file after it); `FULL` adds one
/// fsync of the WAL after each commit, made while the connection is locked, so every
/// other reader and writer of the catalog waited for the disk. Here the commit runs with
/// `NORMAL` and the committer then fsyncs the WAL itself, without the lock: everything
/// appended before that fsync started is durable when it returns, and a checkpoint that
/// moved those frames into the database file synced the WAL before and the database
/// after, so frames cannot be lost in between. Each commit gets a sequence number; a
/// committer waits until an fsync that started after its commit has finished, and starts
/// one itself when none is running: commits that arrive during an fsync share the next one.
struct WalSync {
    /// The WAL file, opened at the first durable commit (SQLite creates it).
    file: Mutex<Option<std::fs::File>>,
    state: Mutex<SyncState>,
    synced: std::sync::Condvar,
    /// The connection is in WAL mode (else durable commits use `synchronous = FULL`).
    enabled: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct SyncState {
    /// Sequence number of the last durable-to-be commit appended to the WAL.
    committed: u64,
    /// Every commit up to this one is durable.
    durable: u64,
    /// An fsync is running.
    syncing: bool,
}

impl WalSync {
    fn new() -> WalSync {
        WalSync {
            file: Mutex::new(None),
            state: Mutex::new(SyncState::default()),
            synced: std::sync::Condvar::new(),
            enabled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a commit just appended to the WAL (call with the connection locked, so
    /// sequence numbers follow the WAL's order).
    fn committed(&self) -> u64 {
        let mut st = self.state();
        st.committed += 1;
        st.committed
    }

    /// Returns once commit `seq` is durable, fsyncing the WAL of `db` when no running
    /// fsync covers it.
    fn wait_durable(&self, db: &Path, seq: u64) -> std::io::Result<()> {
        let mut st = self.state();
        loop {
            if st.durable >= seq {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            let upto = st.committed;
            drop(st);
            let result = self.sync_file(db);
            st = self.state();
            st.syncing = false;
            if result.is_ok() {
                st.durable = st.durable.max(upto);
            }
            self.synced.notify_all();
            result?;
        }
    }

    fn sync_file(&self, db: &Path) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(&wal)?;
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    Path::new(&wal).display()
                )));
            }
            *file = Some(f);
        }
        // fdatasync: the WAL's bytes and its size, all that reading it back needs (its
        // times need not be durable).
        match file.as_ref() {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

/// The longest path SQLite opens a database by (its unix VFS's limit, in bytes, of the
/// absolute path).
pub const MAX_PATH_BYTES: usize = 512;

/// Refuses a catalog path SQLite cannot open, saying what to do.
pub fn check_path_length(path: &Path) -> std::result::Result<(), String> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let len = abs.as_os_str().len();
    if len > MAX_PATH_BYTES {
        return Err(format!(
            "the path of the vault's catalog is {len} bytes long; SQLite opens databases by paths of at most {MAX_PATH_BYTES} bytes: choose a data folder (--data-dir, data_dir) or a vault `storage` with a shorter path"
        ));
    }
    Ok(())
}

impl Catalog {
    /// Creates a new, empty catalog at `path` (an error if anything is there). Only the
    /// vault folder's opening rules decide when this is right ([`crate::vault::folder`]):
    /// never next to stored data. A creation that fails leaves nothing behind: an empty
    /// `catalog.db` would read as a lost catalog.
    pub fn create(dir: &crate::fsx::Dir, name: &str) -> Result<Catalog> {
        let path = dir.path_of(name);
        check_path_length(&path).map_err(|message| CatalogError::Invalid {
            path: path.clone(),
            message,
        })?;
        dir.create_new(name, 0o600)
            .map_err(|e| CatalogError::Invalid {
                path: path.clone(),
                message: format!("cannot create the catalog file: {e}"),
            })?;
        let created = Catalog::connect(&path).and_then(|cat| {
            cat.configure(false)?;
            cat.migrate()?;
            Ok(cat)
        });
        if created.is_err() {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = dir.remove_file(format!("{name}{suffix}"));
            }
        }
        created
    }

    /// Opens the existing catalog at `path` for reading and writing, migrating its schema.
    /// A missing, empty or foreign file is an error: this never creates a catalog.
    pub fn open(path: &Path) -> Result<Catalog> {
        Catalog::check_file(path)?;
        let cat = Catalog::connect(path)?;
        cat.configure(false)?;
        if cat.schema_version()? == 0 {
            return Err(cat.not_a_catalog());
        }
        cat.migrate()?;
        Ok(cat)
    }

    fn connect(path: &Path) -> Result<Catalog> {
        // Without SQLITE_OPEN_CREATE: a catalog that vanished is an error, never a new one.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| CatalogError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Catalog {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            mirror: std::sync::OnceLock::new(),
            wal: WalSync::new(),
        })
    }

    /// Refuses a catalog file that is not there or is empty, with what to do.
    fn check_file(path: &Path) -> Result<()> {
        let invalid = |message: String| CatalogError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Err(invalid(
                "is a symbolic link; vmvault opens only a catalog file in the vault folder".into(),
            )),
            Ok(m) if !m.is_file() => Err(invalid("is not a regular file".into())),
            Ok(m) if m.len() == 0 => Err(invalid(format!(
                "is empty (0 bytes): the catalog was lost or truncated. {}",
                RESTORE_CATALOG_ADVICE
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(invalid(format!("cannot be opened: {e}"))),
        }
    }

    fn not_a_catalog(&self) -> CatalogError {
        self.invalid(format!(
            "is not a vmvault catalog (an SQLite database without vmvault's tables). {RESTORE_CATALOG_ADVICE}"
        ))
    }

    /// Opens an existing catalog for reading only (while another process owns the vault).
    pub fn open_read_only(path: &Path) -> Result<Catalog> {
        Catalog::check_file(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| CatalogError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let cat = Catalog {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            mirror: std::sync::OnceLock::new(),
            wal: WalSync::new(),
        };
        cat.configure(true)?;
        let v = cat.schema_version()?;
        if v == 0 {
            return Err(cat.not_a_catalog());
        }
        if v as usize > MIGRATIONS.len() {
            return Err(cat.invalid(format!(
                "written by a newer vmvault (schema version {v}, this one reads version {}); upgrade vmvault",
                MIGRATIONS.len()
            )));
        }
        // An older schema is read as it is (the owner upgrades it): what readers query
        // exists in every version; the owner alone uses what later migrations added.
        Ok(cat)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn invalid(&self, message: impl Into<String>) -> CatalogError {
        CatalogError::Invalid {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    fn sql(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolls back
        // an unfinished transaction when it is dropped), so poisoning is not fatal.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn configure(&self, read_only: bool) -> Result<()> {
        let conn = self.lock();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.sql(e))?;
        if !read_only {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| self.sql(e))?;
            self.wal.enabled.store(
                mode.eq_ignore_ascii_case("wal"),
                std::sync::atomic::Ordering::SeqCst,
            );
            // Keep catalog.db-wal and -shm when the last connection closes (the WAL file
            // truncated to at most 4 MiB): a reader needs both, and on a file system that
            // filled up meanwhile it could not create them again, so listings would fail
            // with "disk I/O error" exactly when the administrator needs them.
            let mut on: std::os::raw::c_int = 1;
            // SAFETY: the handle is valid while `conn` is locked; PERSIST_WAL reads and
            // writes one int through the pointer, which lives across the call.
            unsafe {
                rusqlite::ffi::sqlite3_file_control(
                    conn.handle(),
                    c"main".as_ptr(),
                    rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
                    (&mut on as *mut std::os::raw::c_int).cast(),
                );
            }
            conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
                .map_err(|e| self.sql(e))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| self.sql(e))?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| self.sql(e))?;
        // Room for every statement a backup, a prune or a listing repeats.
        conn.set_prepared_statement_cache_capacity(64);
        Ok(())
    }

    fn schema_version(&self) -> Result<u32> {
        self.lock()
            .query_row("PRAGMA user_version", [], |r| r.get::<_, u32>(0))
            .map_err(|e| self.sql(e))
    }

    fn migrate(&self) -> Result<()> {
        let current = self.schema_version()? as usize;
        if current > MIGRATIONS.len() {
            return Err(self.invalid(format!(
                "written by a newer vmvault (schema version {current}, this one knows {}); upgrade vmvault",
                MIGRATIONS.len()
            )));
        }
        let mut conn = self.lock();
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let tx = conn.transaction().map_err(|e| self.sql(e))?;
            tx.execute_batch(sql).map_err(|e| self.sql(e))?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)
                .map_err(|e| self.sql(e))?;
            tx.commit().map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// Moves everything in the write-ahead log into the database file (before the file is
    /// moved or copied on its own).
    pub fn checkpoint(&self) -> Result<()> {
        self.read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
    }

    /// Installs the mirror told of every change from now on (once).
    pub fn set_mirror(&self, mirror: std::sync::Arc<dyn CatalogMirror>) {
        let _ = self.mirror.set(mirror);
    }

    /// Tells the mirror that items `ids` changed (for changes made in a caller's own
    /// transaction).
    pub fn notify_items(&self, ids: &[String]) {
        if let Some(m) = self.mirror.get() {
            m.items_changed(self, ids);
        }
    }

    /// Tells the mirror that policies `names` changed.
    pub fn notify_policies(&self, names: &[String]) {
        if let Some(m) = self.mirror.get() {
            m.policies_changed(self, names);
        }
    }

    fn notify_points(&self, ids: &[String]) {
        if let Some(m) = self.mirror.get() {
            m.points_changed(self, ids);
        }
    }

    /// Runs `f` in one transaction (one state change).
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let v = f(&tx).map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(v)
    }

    /// Runs `f` in one transaction that is durable (fsynced) when this returns. The WAL
    /// is fsynced after the connection is unlocked ([`WalSync`]). Should that fsync fail,
    /// the change stays in the catalog, not known to be durable, and this returns the error.
    pub fn transaction_durable<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        if self.wal.enabled.load(std::sync::atomic::Ordering::SeqCst) {
            let (v, seq) = {
                let mut conn = self.lock();
                let tx = conn.transaction().map_err(|e| self.sql(e))?;
                let v = f(&tx).map_err(|e| self.sql(e))?;
                tx.commit().map_err(|e| self.sql(e))?;
                (v, self.wal.committed())
            };
            self.wal.wait_durable(&self.path, seq).map_err(|e| {
                self.sql(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                    Some(format!("syncing the catalog's WAL: {e}")),
                ))
            })?;
            return Ok(v);
        }
        let mut conn = self.lock();
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.sql(e))?;
        let result = (|| {
            let tx = conn.transaction()?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })();
        let reset = conn.pragma_update(None, "synchronous", "NORMAL");
        let v = result.map_err(|e| self.sql(e))?;
        reset.map_err(|e| self.sql(e))?;
        Ok(v)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.lock();
        f(&conn).map_err(|e| self.sql(e))
    }

    // ---- settings ----

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Sets several settings in one transaction.
    pub fn set_settings(&self, pairs: &[(&str, &str)]) -> Result<()> {
        self.transaction(|tx| {
            for (key, value) in pairs {
                tx.execute(
                    "INSERT INTO settings(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            Ok(())
        })
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT INTO settings(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
        })
    }

    // ---- items ----

    const ITEM_COLS: &'static str =
        "id, name, cloud_service, region, os, size, power_state, disks, \
        registration_state, protection_state, policy, last_backup_time, last_backup_status, \
        not_found, discovered_at, purge_at, last_scheduled_run, last_error";

    fn item_from_row(r: &Row<'_>) -> rusqlite::Result<Item> {
        let disks: String = r.get(7)?;
        let last_error: Option<String> = r.get(17)?;
        let last_status: Option<String> = r.get(12)?;
        Ok(Item {
            id: r.get(0)?,
            name: r.get(1)?,
            cloud_service: r.get(2)?,
            region: r.get(3)?,
            os: enum_col!(r, 4, Os),
            size: r.get(5)?,
            power_state: enum_col!(r, 6, PowerState),
            disks: json_col(&disks)?,
            registration_state: enum_col!(r, 8, RegistrationState),
            protection_state: enum_col!(r, 9, ProtectionState),
            policy: r.get(10)?,
            last_backup_time: opt_time(r.get(11)?)?,
            last_backup_status: match last_status {
                Some(s) => Some(JobStatus::parse(&s).ok_or_else(|| conv_err("JobStatus", &s))?),
                None => None,
            },
            not_found: r.get(13)?,
            discovered_at: parse_time(&r.get::<_, String>(14)?)?,
            purge_at: opt_time(r.get(15)?)?,
            last_scheduled_run: opt_time(r.get(16)?)?,
            last_error: match last_error {
                Some(s) => Some(json_col(&s)?),
                None => None,
            },
        })
    }

    pub fn items(&self) -> Result<Vec<Item>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {} FROM items ORDER BY name, cloud_service",
                Self::ITEM_COLS
            ))?;
            let rows = st.query_map([], Self::item_from_row)?;
            rows.collect()
        })
    }

    pub fn item(&self, id: &str) -> Result<Option<Item>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM items WHERE id = ?1",
                Self::ITEM_COLS
            ))?
            .query_row([id], Self::item_from_row)
            .optional()
        })
    }

    /// Items whose name is `name` (case-insensitive).
    pub fn items_named(&self, name: &str) -> Result<Vec<Item>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {} FROM items WHERE name = ?1 COLLATE NOCASE ORDER BY cloud_service",
                Self::ITEM_COLS
            ))?;
            let rows = st.query_map([name], Self::item_from_row)?;
            rows.collect()
        })
    }

    /// Inserts or replaces an item (whole row).
    pub fn put_item(&self, item: &Item) -> Result<()> {
        self.transaction(|tx| Self::put_item_tx(tx, item))?;
        self.notify_items(std::slice::from_ref(&item.id));
        Ok(())
    }

    pub fn put_item_tx(tx: &rusqlite::Transaction<'_>, item: &Item) -> rusqlite::Result<()> {
        tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO items ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            Self::ITEM_COLS
        ))?
        .execute(
            params![
                item.id,
                item.name,
                item.cloud_service,
                item.region,
                item.os.as_str(),
                item.size,
                item.power_state.as_str(),
                to_json(&item.disks),
                item.registration_state.as_str(),
                item.protection_state.as_str(),
                item.policy,
                item.last_backup_time.map(fmt_time),
                item.last_backup_status.map(|s| s.as_str()),
                item.not_found,
                fmt_time(item.discovered_at),
                item.purge_at.map(fmt_time),
                item.last_scheduled_run.map(fmt_time),
                item.last_error.as_ref().map(to_json),
            ],
        )
        .map(|_| ())
    }

    /// The item `id` as the transaction `tx` sees it (an error when there is none).
    fn item_in(&self, tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Item> {
        tx.prepare_cached(&format!(
            "SELECT {} FROM items WHERE id = ?1",
            Self::ITEM_COLS
        ))
        .and_then(|mut st| st.query_row([id], Self::item_from_row).optional())
        .map_err(|e| self.sql(e))?
        .ok_or_else(|| self.invalid(format!("no item with id {id}")))
    }

    /// Applies `f` to each item of `ids` (with its position in `ids`), all in one
    /// transaction; the mirror is told of them together.
    pub fn update_items(&self, ids: &[&str], f: impl Fn(usize, &mut Item)) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        for (i, id) in ids.iter().enumerate() {
            let mut item = self.item_in(&tx, id)?;
            f(i, &mut item);
            Self::put_item_tx(&tx, &item).map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))?;
        drop(conn);
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        self.notify_items(&ids);
        Ok(())
    }

    /// Applies `f` to the item in one transaction and returns the new row.
    pub fn update_item(&self, id: &str, f: impl FnOnce(&mut Item)) -> Result<Item> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let mut item = self.item_in(&tx, id)?;
        f(&mut item);
        Self::put_item_tx(&tx, &item).map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        drop(conn);
        self.notify_items(std::slice::from_ref(&item.id));
        Ok(item)
    }

    // ---- policies ----

    pub fn policies(&self) -> Result<Vec<PolicyRow>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT name, definition, builtin, created_at, updated_at FROM policies ORDER BY builtin DESC, name",
            )?;
            let rows = st.query_map([], Self::policy_from_row)?;
            rows.collect()
        })
    }

    fn policy_from_row(r: &Row<'_>) -> rusqlite::Result<PolicyRow> {
        Ok(PolicyRow {
            name: r.get(0)?,
            definition: r.get(1)?,
            builtin: r.get(2)?,
            created_at: parse_time(&r.get::<_, String>(3)?)?,
            updated_at: parse_time(&r.get::<_, String>(4)?)?,
        })
    }

    pub fn policy(&self, name: &str) -> Result<Option<PolicyRow>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT name, definition, builtin, created_at, updated_at FROM policies WHERE name = ?1 COLLATE NOCASE",
            )?
            .query_row([name], Self::policy_from_row)
            .optional()
        })
    }

    pub fn put_policy(
        &self,
        name: &str,
        definition: &str,
        builtin: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT INTO policies(name, definition, builtin, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(name) DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
                params![name, definition, builtin, fmt_time(now)],
            )
            .map(|_| ())
        })?;
        self.notify_policies(&[name.to_string()]);
        Ok(())
    }

    /// Inserts a policy row as it was (a rebuild), times included.
    pub fn restore_policy(&self, row: &PolicyRow) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO policies(name, definition, builtin, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    row.name,
                    row.definition,
                    row.builtin,
                    fmt_time(row.created_at),
                    fmt_time(row.updated_at)
                ],
            )
            .map(|_| ())
        })
    }

    pub fn delete_policy(&self, name: &str) -> Result<bool> {
        let deleted = self.transaction(|tx| {
            tx.execute("DELETE FROM policies WHERE name = ?1", [name])
                .map(|n| n > 0)
        })?;
        self.notify_policies(&[name.to_string()]);
        Ok(deleted)
    }

    // ---- jobs ----

    const JOB_COLS: &'static str = "id, operation, item_id, item, status, start_time, end_time, \
        bytes_done, bytes_total, is_user_triggered, error, details";

    fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
        let error: Option<String> = r.get(10)?;
        let details: String = r.get(11)?;
        Ok(Job {
            id: r.get(0)?,
            operation: enum_col!(r, 1, JobOperation),
            item_id: r.get(2)?,
            item: r.get(3)?,
            status: enum_col!(r, 4, JobStatus),
            start_time: parse_time(&r.get::<_, String>(5)?)?,
            end_time: opt_time(r.get(6)?)?,
            bytes_done: r.get::<_, i64>(7)? as u64,
            bytes_total: r.get::<_, i64>(8)? as u64,
            is_user_triggered: r.get(9)?,
            tasks: Vec::new(),
            error: match error {
                Some(s) => Some(json_col(&s)?),
                None => None,
            },
            details: json_col(&details)?,
        })
    }

    fn task_from_row(r: &Row<'_>) -> rusqlite::Result<JobTask> {
        Ok(JobTask {
            name: r.get(0)?,
            status: enum_col!(r, 1, TaskStatus),
            start_time: opt_time(r.get(2)?)?,
            end_time: opt_time(r.get(3)?)?,
            bytes_done: r.get::<_, i64>(4)? as u64,
            bytes_total: r.get::<_, i64>(5)? as u64,
        })
    }

    fn load_tasks(c: &Connection, job: &mut Job) -> rusqlite::Result<()> {
        let mut st = c.prepare_cached(
            "SELECT name, status, start_time, end_time, bytes_done, bytes_total FROM job_tasks WHERE job_id = ?1 ORDER BY seq",
        )?;
        job.tasks = st
            .query_map([&job.id], Self::task_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(())
    }

    /// Inserts or replaces a job with its tasks (one transaction).
    pub fn save_job(&self, job: &Job) -> Result<()> {
        self.transaction(|tx| Self::save_job_tx(tx, job))
    }

    pub fn save_job_tx(tx: &rusqlite::Transaction<'_>, job: &Job) -> rusqlite::Result<()> {
        tx.prepare_cached(&format!(
            "INSERT INTO jobs ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(id) DO UPDATE SET status = excluded.status, end_time = excluded.end_time,
               bytes_done = excluded.bytes_done, bytes_total = excluded.bytes_total,
               error = excluded.error, details = excluded.details",
            Self::JOB_COLS
        ))?
        .execute(params![
            job.id,
            job.operation.as_str(),
            job.item_id,
            job.item,
            job.status.as_str(),
            fmt_time(job.start_time),
            job.end_time.map(fmt_time),
            job.bytes_done as i64,
            job.bytes_total as i64,
            job.is_user_triggered,
            job.error.as_ref().map(to_json),
            to_json(&job.details),
        ])?;
        let mut st = tx.prepare_cached(
            "INSERT OR REPLACE INTO job_tasks (job_id, seq, name, status, start_time, end_time, bytes_done, bytes_total)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (i, t) in job.tasks.iter().enumerate() {
            st.execute(params![
                job.id,
                i as i64,
                t.name,
                t.status.as_str(),
                t.start_time.map(fmt_time),
                t.end_time.map(fmt_time),
                t.bytes_done as i64,
                t.bytes_total as i64,
            ])?;
        }
        Ok(())
    }

    /// Records progress of a running job (cheap; no task rows).
    pub fn save_job_progress(&self, id: &str, bytes_done: u64, bytes_total: u64) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE jobs SET bytes_done = ?2, bytes_total = ?3 WHERE id = ?1",
                params![id, bytes_done as i64, bytes_total as i64],
            )
            .map(|_| ())
        })
    }

    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.read(|c| {
            let job = c
                .query_row(
                    &format!("SELECT {} FROM jobs WHERE id = ?1", Self::JOB_COLS),
                    [id],
                    Self::job_from_row,
                )
                .optional()?;
            match job {
                Some(mut j) => {
                    Self::load_tasks(c, &mut j)?;
                    Ok(Some(j))
                }
                None => Ok(None),
            }
        })
    }

    /// Job ids starting with `prefix` (at most `limit`), for short ids on the command line.
    pub fn job_ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        self.read(|c| {
            let mut st = c.prepare("SELECT id FROM jobs WHERE id LIKE ?1 ORDER BY id LIMIT ?2")?;
            let rows = st.query_map(params![pattern, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// The WHERE clause (after `WHERE 1=1`) and its arguments for a job filter.
    fn job_filter_sql(filter: &JobFilter) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
        let mut sql = String::new();
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(since) = filter.since {
            args.push(Box::new(fmt_time(since)));
            sql.push_str(&format!(" AND start_time >= ?{}", args.len()));
        }
        if !filter.statuses.is_empty() {
            let list: Vec<String> = filter
                .statuses
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            sql.push_str(&format!(" AND status IN ({})", list.join(",")));
        }
        if !filter.operations.is_empty() {
            let list: Vec<String> = filter
                .operations
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            sql.push_str(&format!(" AND operation IN ({})", list.join(",")));
        }
        if let Some(item) = &filter.item_id {
            args.push(Box::new(item.clone()));
            sql.push_str(&format!(" AND item_id = ?{}", args.len()));
        }
        if let Some(text) = &filter.item_text {
            args.push(Box::new(format!("%{}%", text.to_lowercase())));
            sql.push_str(&format!(" AND lower(item) LIKE ?{}", args.len()));
        }
        if !filter.ids.is_empty() {
            let mut marks = Vec::with_capacity(filter.ids.len());
            for id in &filter.ids {
                args.push(Box::new(id.clone()));
                marks.push(format!("?{}", args.len()));
            }
            sql.push_str(&format!(" AND id IN ({})", marks.join(",")));
        }
        (sql, args)
    }

    /// Jobs matching `filter`, newest first, with their tasks when `with_tasks`.
    pub fn jobs(&self, filter: &JobFilter, with_tasks: bool) -> Result<Vec<Job>> {
        let (cond, args) = Self::job_filter_sql(filter);
        let mut sql = format!("SELECT {} FROM jobs WHERE 1=1{cond}", Self::JOB_COLS);
        sql.push_str(" ORDER BY start_time DESC, id");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        self.read(|c| {
            let mut st = c.prepare(&sql)?;
            let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref()).collect();
            let mut jobs = st
                .query_map(refs.as_slice(), Self::job_from_row)?
                .collect::<rusqlite::Result<Vec<Job>>>()?;
            if with_tasks {
                for j in &mut jobs {
                    Self::load_tasks(c, j)?;
                }
            }
            Ok(jobs)
        })
    }

    /// How many jobs match `filter` (its `limit` is ignored): the console shows a window
    /// of the newest jobs and the total.
    pub fn count_jobs(&self, filter: &JobFilter) -> Result<u64> {
        let (cond, args) = Self::job_filter_sql(filter);
        let sql = format!("SELECT count(*) FROM jobs WHERE 1=1{cond}");
        self.read(|c| {
            let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|a| a.as_ref()).collect();
            c.query_row(&sql, refs.as_slice(), |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }

    /// Jobs started at or after `since`, counted per UTC hour (`YYYY-MM-DDTHH`, the
    /// prefix of the stored time), for the dashboard's jobs-per-hour chart.
    pub fn job_counts_by_hour(&self, since: DateTime<Utc>) -> Result<Vec<(String, u64)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT substr(start_time, 1, 13), count(*) FROM jobs WHERE start_time >= ?1 GROUP BY 1 ORDER BY 1",
            )?;
            let rows = st.query_map([fmt_time(since)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
    }

    /// Counts of jobs by status started at or after `since`.
    pub fn job_counts_since(&self, since: DateTime<Utc>) -> Result<Vec<(JobStatus, u64)>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT status, count(*) FROM jobs WHERE start_time >= ?1 GROUP BY status",
            )?;
            let rows = st.query_map([fmt_time(since)], |r| {
                Ok((enum_col!(r, 0, JobStatus), r.get::<_, i64>(1)? as u64))
            })?;
            rows.collect()
        })
    }

    /// Asks the process that owns the vault to cancel a job (from another process: opens
    /// a short-lived read-write connection; SQLite serialises it with the owner's writes).
    pub fn request_cancel(path: &Path, id: &str) -> Result<bool> {
        let sql = |source| CatalogError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        let n = conn
            .execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status IN ('InProgress', 'Cancelling')",
                [id],
            )
            .map_err(sql)?;
        Ok(n > 0)
    }

    /// Records that a running job is being cancelled.
    pub fn mark_cancelling(&self, id: &str) -> Result<()> {
        self.transaction(|tx| {
            tx.execute(
                "UPDATE jobs SET status = 'Cancelling' WHERE id = ?1 AND status = 'InProgress'",
                [id],
            )
            .map(|_| ())
        })
    }

    /// Active jobs another process asked to cancel.
    pub fn cancel_requests(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM jobs WHERE cancel_requested = 1 AND status IN ('InProgress', 'Cancelling')",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Settles the jobs a killed process left InProgress/Cancelling, one at a time:
    /// `clean_up` gets the job as it will be recorded (Failed, interrupted) and undoes what
    /// the job left half-done; only then is the job saved so. A process killed in between
    /// leaves the job active, and the next owner cleans up again: the clean-up is never
    /// skipped (`clean_up` must therefore be idempotent). Returns the settled jobs.
    pub fn settle_interrupted_jobs<E: From<CatalogError>>(
        &self,
        now: DateTime<Utc>,
        mut clean_up: impl FnMut(&Job) -> std::result::Result<(), E>,
    ) -> std::result::Result<Vec<Job>, E> {
        let active = self.jobs(
            &JobFilter {
                statuses: vec![JobStatus::InProgress, JobStatus::Cancelling],
                ..Default::default()
            },
            true,
        )?;
        let mut out = Vec::new();
        for mut job in active {
            job.status = JobStatus::Failed;
            job.end_time = Some(now.max(job.start_time));
            for t in &mut job.tasks {
                if matches!(t.status, TaskStatus::InProgress | TaskStatus::NotStarted) {
                    t.status = if t.status == TaskStatus::InProgress {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::Cancelled
                    };
                    t.end_time = job.end_time;
                }
            }
            job.error = Some(interrupted_error());
            clean_up(&job)?;
            self.save_job(&job)?;
            out.push(job);
        }
        Ok(out)
    }

    // ---- recovery points ----

    const POINT_COLS: &'static str =
        "id, item_id, time, scheduled_time, expiry, kind, consistency, \
        logical_bytes, stored_bytes, disks, cbt_token, job_id";

    fn point_from_row(r: &Row<'_>) -> rusqlite::Result<RecoveryPoint> {
        let disks: String = r.get(9)?;
        Ok(RecoveryPoint {
            id: r.get(0)?,
            item_id: r.get(1)?,
            time: parse_time(&r.get::<_, String>(2)?)?,
            scheduled_time: parse_time(&r.get::<_, String>(3)?)?,
            expiry: opt_time(r.get(4)?)?,
            kind: enum_col!(r, 5, PointKind),
            consistency: enum_col!(r, 6, Consistency),
            logical_bytes: r.get::<_, i64>(7)? as u64,
            stored_bytes: r.get::<_, i64>(8)? as u64,
            disks: json_col(&disks)?,
            cbt_token: r.get(10)?,
            job_id: r.get(11)?,
        })
    }

    /// Points of an item, oldest first.
    pub fn points(&self, item_id: &str) -> Result<Vec<RecoveryPoint>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {} FROM points WHERE item_id = ?1 ORDER BY time, id",
                Self::POINT_COLS
            ))?;
            let rows = st.query_map([item_id], Self::point_from_row)?;
            rows.collect()
        })
    }

    /// Records what verification found: `damaged` points need a chunk that is missing or
    /// corrupt; `clean` points were verified whole.
    pub fn set_points_damaged(&self, damaged: &[String], clean: &[String]) -> Result<()> {
        self.transaction(|tx| {
            let mut st = tx.prepare_cached("UPDATE points SET damaged = ?2 WHERE id = ?1")?;
            for id in damaged {
                st.execute(params![id, true])?;
            }
            for id in clean {
                st.execute(params![id, false])?;
            }
            Ok(())
        })
    }

    /// Ids of points the last verification found damaged (of one item, or all).
    pub fn damaged_points(
        &self,
        item_id: Option<&str>,
    ) -> Result<std::collections::HashSet<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM points WHERE damaged = 1 AND (?1 IS NULL OR item_id = ?1)",
            )?;
            let rows = st.query_map([item_id], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// (number of points, their logical bytes added up).
    pub fn point_totals(&self) -> Result<(u64, u64)> {
        self.read(|c| {
            c.query_row(
                "SELECT count(*), coalesce(sum(logical_bytes), 0) FROM points",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
    }

    /// Every point of the vault, oldest first.
    pub fn all_points(&self) -> Result<Vec<RecoveryPoint>> {
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {} FROM points ORDER BY time, id",
                Self::POINT_COLS
            ))?;
            let rows = st.query_map([], Self::point_from_row)?;
            rows.collect()
        })
    }

    pub fn point(&self, id: &str) -> Result<Option<RecoveryPoint>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {} FROM points WHERE id = ?1", Self::POINT_COLS),
                [id],
                Self::point_from_row,
            )
            .optional()
        })
    }

    /// Point ids starting with `prefix`.
    pub fn point_ids_with_prefix(
        &self,
        item_id: &str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        let pattern = format!("{}%", prefix.replace(['%', '_'], ""));
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT id FROM points WHERE item_id = ?1 AND id LIKE ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![item_id, pattern, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Per item: point count, newest point time, logical bytes of the newest point.
    pub fn point_stats(&self) -> Result<Vec<ItemPointStats>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT p.item_id, count(*), max(p.time),
                        (SELECT q.logical_bytes FROM points q WHERE q.item_id = p.item_id ORDER BY q.time DESC LIMIT 1)
                 FROM points p GROUP BY p.item_id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ItemPointStats {
                    item_id: r.get(0)?,
                    count: r.get::<_, i64>(1)? as u64,
                    newest: opt_time(r.get(2)?)?,
                    newest_logical_bytes: r.get::<_, i64>(3)? as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// Commits a recovery point: its row, the chunks it added, the item's new state and
    /// the finished job, in one transaction. Call only after the data is durable.
    pub fn commit_point(&self, c: &PointCommit<'_>) -> Result<()> {
        self.commit_points(&[*c])
    }

    /// Commits several recovery points (of different items) in one transaction: all of
    /// them or none. Call only after their data is durable.
    pub fn commit_points(&self, commits: &[PointCommit<'_>]) -> Result<()> {
        self.transaction_durable(|tx| {
            for c in commits {
                Self::commit_point_tx(tx, c)?;
            }
            Ok(())
        })?;
        let items: Vec<String> = commits.iter().map(|c| c.item.id.clone()).collect();
        self.notify_items(&items);
        Ok(())
    }

    fn commit_point_tx(
        tx: &rusqlite::Transaction<'_>,
        c: &PointCommit<'_>,
    ) -> rusqlite::Result<()> {
        let PointCommit {
            point,
            retain_until,
            chunk_size,
            index_hashes,
            chunks,
            now,
            item,
            job,
        } = *c;
        Self::insert_point_tx(
            tx,
            point,
            retain_until,
            chunk_size,
            index_hashes,
            chunks,
            now,
        )?;
        Self::put_item_tx(tx, item)?;
        Self::save_job_tx(tx, job)
    }

    /// Commits a point found in the vault's own data (a rebuild) or copied from another
    /// vault (an upgrade): its row and the chunks it adds that the catalog does not know,
    /// durably, and forgets its announced write. No job, no change to its item.
    pub fn import_point(
        &self,
        point: &RecoveryPoint,
        retain_until: Option<DateTime<Utc>>,
        chunk_size: u32,
        index_hashes: &[(u32, [u8; 32])],
        chunks: &[ChunkRow],
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.transaction_durable(|tx| {
            Self::insert_point_tx(
                tx,
                point,
                retain_until,
                chunk_size,
                index_hashes,
                chunks,
                now,
            )
        })
    }

    /// Copies every job (with its tasks) of `other` that this catalog does not have.
    pub fn copy_jobs_from(&self, other: &Catalog) -> Result<()> {
        let jobs = other.jobs(&JobFilter::default(), true)?;
        self.transaction(|tx| {
            for job in &jobs {
                Self::save_job_tx(tx, job)?;
            }
            Ok(())
        })
    }

    fn insert_point_tx(
        tx: &rusqlite::Transaction<'_>,
        point: &RecoveryPoint,
        retain_until: Option<DateTime<Utc>>,
        chunk_size: u32,
        index_hashes: &[(u32, [u8; 32])],
        chunks: &[ChunkRow],
        now: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        tx.prepare_cached(&format!(
            "INSERT INTO points ({}, retain_until, chunk_size, index_hashes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            Self::POINT_COLS
        ))?
        .execute(params![
            point.id,
            point.item_id,
            fmt_time(point.time),
            fmt_time(point.scheduled_time),
            point.expiry.map(fmt_time),
            point.kind.as_str(),
            point.consistency.as_str(),
            point.logical_bytes as i64,
            point.stored_bytes as i64,
            to_json(&point.disks),
            point.cbt_token,
            point.job_id,
            retain_until.map(fmt_time),
            chunk_size as i64,
            index_hashes_text(index_hashes),
        ])?;
        tx.prepare_cached("DELETE FROM point_writes WHERE point_id = ?1")?
            .execute([&point.id])?;
        let mut st = tx.prepare_cached(
            "INSERT OR IGNORE INTO chunks (digest, stored_len, raw_len, added_at) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let added = fmt_time(now);
        for c in chunks {
            st.execute(params![
                &c.digest[..],
                c.stored_len as i64,
                c.raw_len as i64,
                added
            ])?;
        }
        Ok(())
    }

    /// The retain-until date given to an on-demand point.
    pub fn point_retain_until(&self, id: &str) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            let s: Option<Option<String>> = c
                .query_row("SELECT retain_until FROM points WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            opt_time(s.flatten())
        })
    }

    /// Sets the expiry of several points in one transaction.
    pub fn set_point_expiries(&self, expiries: &[(String, Option<DateTime<Utc>>)]) -> Result<()> {
        self.transaction(|tx| {
            let mut st = tx.prepare_cached("UPDATE points SET expiry = ?2 WHERE id = ?1")?;
            for (id, e) in expiries {
                st.execute(params![id, e.map(fmt_time)])?;
            }
            Ok(())
        })?;
        let ids: Vec<String> = expiries.iter().map(|(id, _)| id.clone()).collect();
        self.notify_points(&ids);
        Ok(())
    }

    /// Deletes point rows on behalf of job `job_id` and sets the STORED size of the points
    /// that followed them, in one transaction. Their folders are removed afterwards by the
    /// caller, then forgotten with [`Catalog::delete_point_writes`]; until then the catalog
    /// still accounts for them (as point writes), so a crash in between leaves folders
    /// garbage collection may remove, never folders it does not know.
    pub fn delete_points(
        &self,
        ids: &[String],
        restated: &[(String, u64)],
        job_id: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.transaction_durable(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM points WHERE id = ?1")?;
            let mut announce = tx.prepare_cached(
                "INSERT OR REPLACE INTO point_writes (point_id, job_id, started, purpose) VALUES (?1, ?2, ?3, 'remove')",
            )?;
            let now = fmt_time(now);
            for id in ids {
                st.execute([id])?;
                announce.execute(params![id, job_id, now])?;
            }
            let mut st = tx.prepare_cached("UPDATE points SET stored_bytes = ?2 WHERE id = ?1")?;
            for (id, n) in restated {
                st.execute(params![id, *n as i64])?;
            }
            Ok(())
        })?;
        let ids: Vec<String> = restated.iter().map(|(id, _)| id.clone()).collect();
        self.notify_points(&ids);
        Ok(())
    }

    /// Announces, durably, that `job_id` is about to write the folder of point `point_id`
    /// (the indexes of `disks`): garbage collection removes such a folder if the point is
    /// never committed, and refuses to touch a point folder it has no record of.
    pub fn record_point_write(
        &self,
        point_id: &str,
        job_id: &str,
        disks: &[u32],
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.record_point_writes(
            &[PointWriteAnnounce {
                point_id,
                job_id,
                disks,
            }],
            now,
        )
    }

    /// [`Catalog::record_point_write`] of several point folders, in one durable transaction.
    pub fn record_point_writes(
        &self,
        writes: &[PointWriteAnnounce<'_>],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let started = fmt_time(now);
        self.transaction_durable(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO point_writes (point_id, job_id, started, purpose, disks) VALUES (?1, ?2, ?3, 'write', ?4)",
            )?;
            for w in writes {
                let disks: Vec<String> = w.disks.iter().map(u32::to_string).collect();
                st.execute(params![w.point_id, w.job_id, started, disks.join(",")])?;
            }
            Ok(())
        })
    }

    /// Point folders announced (by [`Catalog::record_point_write`] or
    /// [`Catalog::delete_points`]) and not yet forgotten, oldest first.
    pub fn point_writes(&self) -> Result<Vec<PointWrite>> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT point_id, job_id, purpose, disks FROM point_writes ORDER BY started",
            )?;
            let rows = st.query_map([], |r| {
                let purpose: Option<String> = r.get(2)?;
                let disks: Option<String> = r.get(3)?;
                let purpose = match (purpose.as_deref(), disks) {
                    (Some("write"), Some(d)) => {
                        match d
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::parse::<u32>)
                            .collect::<std::result::Result<Vec<u32>, _>>()
                        {
                            Ok(disks) => WritePurpose::Write { disks },
                            Err(_) => WritePurpose::Unrecorded,
                        }
                    }
                    (Some("remove"), _) => WritePurpose::Remove,
                    _ => WritePurpose::Unrecorded,
                };
                Ok(PointWrite {
                    point_id: r.get(0)?,
                    job_id: r.get(1)?,
                    purpose,
                })
            })?;
            rows.collect()
        })
    }

    /// The points of [`Catalog::point_writes`], by id only (readable in every schema that
    /// has the table).
    pub fn announced_point_ids(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT point_id FROM point_writes")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Forgets announced point writes (their folders are gone). Not synced: should a power
    /// loss undo it, the announcements of folders that are gone stay, and garbage
    /// collection forgets them again.
    pub fn delete_point_writes(&self, point_ids: &[String]) -> Result<()> {
        self.transaction(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM point_writes WHERE point_id = ?1")?;
            for id in point_ids {
                st.execute([id])?;
            }
            Ok(())
        })
    }

    /// The recorded hash of each disk index of a point (disk number → BLAKE3 of the index
    /// file); None for a point committed before indexes were bound to their point.
    pub fn point_index_hashes(&self, point_id: &str) -> Result<Option<IndexHashes>> {
        let text: Option<Option<String>> = self.read(|c| {
            c.prepare_cached("SELECT index_hashes FROM points WHERE id = ?1")?
                .query_row([point_id], |r| r.get(0))
                .optional()
        })?;
        let Some(text) = text.flatten() else {
            return Ok(None);
        };
        parse_index_hashes(&text)
            .map(Some)
            .ok_or_else(|| self.invalid(format!("bad index hashes of recovery point {point_id}")))
    }

    /// Records the hashes of a point's indexes (points committed before they were bound).
    pub fn set_point_index_hashes(&self, point_id: &str, hashes: &[(u32, [u8; 32])]) -> Result<()> {
        self.transaction_durable(|tx| {
            tx.execute(
                "UPDATE points SET index_hashes = ?2 WHERE id = ?1",
                params![point_id, index_hashes_text(hashes)],
            )
            .map(|_| ())
        })
    }

    /// Ids of points whose index hashes were never recorded.
    pub fn points_without_index_hashes(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT id FROM points WHERE index_hashes IS NULL")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Whether this catalog has any record of stored data: a recovery point, a committed
    /// chunk, or a backup that ever ran (which may have left chunks behind).
    pub fn knows_stored_data(&self) -> Result<bool> {
        self.read(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM points) OR EXISTS (SELECT 1 FROM chunks)
                     OR EXISTS (SELECT 1 FROM jobs WHERE operation = 'Backup')
                     OR EXISTS (SELECT 1 FROM point_writes)",
                [],
                |r| r.get(0),
            )
        })
    }

    // ---- chunks ----

    pub fn chunk_committed(&self, digest: &[u8; 32]) -> Result<bool> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT 1 FROM chunks WHERE digest = ?1")?;
            st.exists([&digest[..]])
        })
    }

    /// The stored (on-disk) bytes of committed chunks added up; digests the catalog does
    /// not know count 0.
    /// Sets the STORED size of points (one transaction; a rebuild measures them again).
    pub fn set_points_stored(&self, sizes: &[(String, u64)]) -> Result<()> {
        self.transaction(|tx| {
            let mut st = tx.prepare_cached("UPDATE points SET stored_bytes = ?2 WHERE id = ?1")?;
            for (id, n) in sizes {
                st.execute(params![id, *n as i64])?;
            }
            Ok(())
        })
    }

    pub fn chunks_stored_bytes<'d>(
        &self,
        digests: impl IntoIterator<Item = &'d [u8; 32]>,
    ) -> Result<u64> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT stored_len FROM chunks WHERE digest = ?1")?;
            let mut sum = 0u64;
            for d in digests {
                let n: Option<i64> = st.query_row([&d[..]], |r| r.get(0)).optional()?;
                sum += n.unwrap_or(0).max(0) as u64;
            }
            Ok(sum)
        })
    }

    pub fn chunk_totals(&self) -> Result<ChunkTotals> {
        self.read(|c| {
            c.query_row(
                "SELECT count(*), coalesce(sum(stored_len), 0), coalesce(sum(raw_len), 0) FROM chunks",
                [],
                |r| {
                    Ok(ChunkTotals {
                        chunks: r.get::<_, i64>(0)? as u64,
                        stored_bytes: r.get::<_, i64>(1)? as u64,
                        raw_bytes: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
    }

    /// Every committed chunk with the time it was added.
    pub fn chunks_added(&self) -> Result<Vec<([u8; 32], DateTime<Utc>)>> {
        self.read(|c| {
            let mut st = c.prepare("SELECT digest, added_at FROM chunks")?;
            let rows = st.query_map([], |r| {
                let d: Vec<u8> = r.get(0)?;
                let mut digest = [0u8; 32];
                if d.len() == 32 {
                    digest.copy_from_slice(&d);
                }
                Ok((digest, parse_time(&r.get::<_, String>(1)?)?))
            })?;
            rows.collect()
        })
    }

    /// Deletes chunk rows in one durable transaction (before their files go).
    pub fn delete_chunks(&self, digests: &[[u8; 32]]) -> Result<()> {
        self.transaction_durable(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM chunks WHERE digest = ?1")?;
            for d in digests {
                st.execute([&d[..]])?;
            }
            Ok(())
        })
    }
}

/// Disk number → checksum of that disk's index, of one recovery point.
pub type IndexHashes = Vec<(u32, [u8; 32])>;

/// Index hashes as stored: `{"0": "hex", "1": "hex"}`.
fn index_hashes_text(hashes: &[(u32, [u8; 32])]) -> String {
    let map: std::collections::BTreeMap<String, String> = hashes
        .iter()
        .map(|(d, h)| (d.to_string(), crate::vault::store::digest_hex(h)))
        .collect();
    to_json(&map)
}

fn parse_index_hashes(text: &str) -> Option<IndexHashes> {
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text).ok()?;
    map.iter()
        .map(|(d, h)| Some((d.parse().ok()?, crate::vault::store::parse_digest(h)?)))
        .collect()
}

/// What to do when the catalog is lost or damaged (until the vault can rebuild it from the
/// stored data).
pub const RESTORE_CATALOG_ADVICE: &str = "Nothing stored was changed. Restore catalog.db (with its catalog.db-wal, if the copy has one) from a copy (a file-system snapshot or a backup of the vault folder) while vmvault is stopped; do not delete the vault's chunks/ or points/ folders. In a vault of format 2 (see `vmvault vaults`), `vmvault vault rebuild` rebuilds the catalog from the vault's own data instead.";

/// The error of a job whose process stopped before it finished.
pub fn interrupted_error() -> ErrorDetails {
    ErrorDetails::new(
        "JobInterrupted",
        "Interrupted",
        "the job was interrupted: the process that ran it stopped before it finished (killed or crashed)",
    )
    .recommend("Run the operation again; recovery points committed before the interruption are intact.")
}

/// Creates an empty file readable by the owner only.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(|_| ())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let t = tempfile::tempdir().unwrap();
        let dir = crate::fsx::Dir::open_private(&t.path().join("v"), true).unwrap();
        let c = Catalog::create(&dir, CATALOG_FILE).unwrap();
        (t, c)
    }

    fn running_job(id: &str, start: DateTime<Utc>) -> Job {
        Job {
            id: id.into(),
            operation: JobOperation::Restore,
            item_id: None,
            item: "v".into(),
            status: JobStatus::InProgress,
            start_time: start,
            end_time: None,
            bytes_done: 0,
            bytes_total: 0,
            is_user_triggered: true,
            tasks: vec![],
            error: None,
            details: Default::default(),
        }
    }

    fn status(c: &Catalog, id: &str) -> JobStatus {
        c.job(id).unwrap().unwrap().status
    }

    pub(crate) fn protected_item(id: &str) -> Item {
        Item {
            id: id.into(),
            name: id.into(),
            cloud_service: "cs".into(),
            region: "westeurope".into(),
            os: Os::Linux,
            size: "small".into(),
            power_state: PowerState::Running,
            disks: vec![],
            registration_state: RegistrationState::Registered,
            protection_state: ProtectionState::Protected,
            policy: None,
            last_backup_time: None,
            last_backup_status: None,
            not_found: false,
            discovered_at: Utc::now(),
            purge_at: None,
            last_scheduled_run: None,
            last_error: None,
        }
    }

    pub(crate) fn point_of(id: &str, item: &Item) -> RecoveryPoint {
        RecoveryPoint {
            id: id.into(),
            item_id: item.id.clone(),
            time: Utc::now(),
            scheduled_time: Utc::now(),
            expiry: None,
            kind: PointKind::Scheduled,
            consistency: Consistency::CrashConsistent,
            logical_bytes: 1,
            stored_bytes: 1,
            disks: vec![],
            cbt_token: None,
            job_id: None,
        }
    }

    #[test]
    fn points_committed_together_are_all_committed_or_none() {
        let (_t, c) = catalog();
        let (a, b) = (protected_item("a"), protected_item("b"));
        let job = running_job("j", Utc::now());
        let commit = |point: &RecoveryPoint, item: &Item| -> Result<()> {
            c.commit_points(&[PointCommit {
                point,
                retain_until: None,
                chunk_size: 1 << 20,
                index_hashes: &[],
                chunks: &[],
                now: Utc::now(),
                item,
                job: &job,
            }])
        };
        let (pa, pb) = (point_of("pa", &a), point_of("pb", &b));
        let both = |p: &RecoveryPoint, q: &RecoveryPoint| {
            let one = |point, item| PointCommit {
                point,
                retain_until: None,
                chunk_size: 1 << 20,
                index_hashes: &[],
                chunks: &[],
                now: Utc::now(),
                item,
                job: &job,
            };
            c.commit_points(&[one(p, &a), one(q, &b)])
        };
        both(&pa, &pb).unwrap();
        assert_eq!(c.points("a").unwrap().len(), 1);
        assert_eq!(c.points("b").unwrap().len(), 1);
        // The second point cannot be inserted again: the first goes with it.
        let pa2 = point_of("pa2", &a);
        assert!(both(&pa2, &pb).is_err());
        assert_eq!(c.points("a").unwrap().len(), 1);
        commit(&pa2, &a).unwrap();
        assert_eq!(c.points("a").unwrap().len(), 2);
    }

    #[test]
    fn durable_commits_of_several_threads_are_all_synced_and_kept() {
        let (t, c) = catalog();
        assert!(c.wal.enabled.load(std::sync::atomic::Ordering::SeqCst));
        std::thread::scope(|s| {
            for thread in 0..4 {
                let c = &c;
                s.spawn(move || {
                    for i in 0..20 {
                        c.record_point_write(&format!("p{thread}-{i}"), "j", &[0], Utc::now())
                            .unwrap();
                        // Durable when it returns: no commit is left unsynced.
                        let st = c.wal.state();
                        assert!(st.durable >= 1 && st.durable <= st.committed);
                    }
                });
            }
        });
        let st = c.wal.state();
        assert_eq!((st.committed, st.durable), (80, 80));
        drop(st);
        assert_eq!(c.point_writes().unwrap().len(), 80);
        // What was committed is in the files another connection reads.
        drop(c);
        let again = Catalog::open(&t.path().join("v").join(CATALOG_FILE)).unwrap();
        assert_eq!(again.point_writes().unwrap().len(), 80);
    }

    #[test]
    fn an_interrupted_job_stays_active_until_its_clean_up_has_run() {
        let (_t, c) = catalog();
        let t0 = Utc::now();
        c.save_job(&running_job("a", t0)).unwrap();
        c.save_job(&running_job("b", t0 + chrono::Duration::seconds(1)))
            .unwrap();
        // The next owner dies while cleaning up after one of them: that job must stay
        // active (before, every job was recorded Failed first and its clean-up was lost).
        let mut cleaned = Vec::new();
        let died = c.settle_interrupted_jobs(Utc::now(), |job| {
            if job.id == "b" && !cleaned.contains(&job.id) {
                cleaned.push(job.id.clone());
                return Err(CatalogError::Invalid {
                    path: PathBuf::new(),
                    message: "killed".into(),
                });
            }
            assert_eq!(job.status, JobStatus::Failed);
            assert_eq!(job.error.as_ref().unwrap().code, "JobInterrupted");
            cleaned.push(job.id.clone());
            Ok(())
        });
        assert!(died.is_err());
        assert_eq!(status(&c, "b"), JobStatus::InProgress);
        // The owner after it cleans up again, and only then records the end.
        let settled = c
            .settle_interrupted_jobs(Utc::now(), |job| -> Result<()> {
                cleaned.push(job.id.clone());
                Ok(())
            })
            .unwrap();
        let ids: Vec<&str> = settled.iter().map(|j| j.id.as_str()).collect();
        assert!(ids.contains(&"b"), "{ids:?}");
        assert_eq!(cleaned.iter().filter(|id| *id == "b").count(), 2);
        assert_eq!(cleaned.iter().filter(|id| *id == "a").count(), 1);
        for id in ["a", "b"] {
            assert_eq!(status(&c, id), JobStatus::Failed);
        }
    }
}
