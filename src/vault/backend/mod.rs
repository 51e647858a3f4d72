//! The storage seam of vault format v2: named objects by kind, in a local folder today and
//! in object storage later. The vault above it (codec, keys, manifests, GC, verify) asks a
//! [`Backend`] for objects and never learns where or how they are kept; a backend never
//! interprets the bytes it stores (with encryption on, it never sees plaintext).
//!
//! # What lives where
//! - this file: the [`Backend`] trait, [`ObjectKind`], validated [`ObjectName`]s,
//!   [`ObjectInfo`], [`Created`] and the typed [`BackendError`];
//! - [`local`]: [`LocalBackend`], objects as files in the vault folder (the fast path);
//! - [`memory`]: [`MemoryBackend`], a map in memory with fault injection, for tests;
//! - [`object`]: [`ObjectStoreBackend`], objects in an S3-compatible bucket or an Azure Blob
//!   container (through the `object_store` crate), one object per vault object;
//! - `conformance` (tests only): the one suite every backend passes; a new backend joins it
//!   with a `Harness` (how to get a fresh store, and a small one that fills up and can be
//!   made read-only) and one `conformance!` line.
//!
//! # What every backend promises
//! - **Objects are addressed by (kind, name)**, and each kind is its own namespace. Names
//!   are 1–128 characters of `[a-z0-9._-]`, never starting with a dot (the local backend's
//!   temp files start with one), so a name is a safe file name and a safe object key on
//!   every store, and never contains `/`. Chunk names are lower-case hex digests (at least
//!   two digits), so every store can fan them out by their first two characters. A name is
//!   checked once, when it is made ([`ObjectName::new`]); the chunk rule when it is used.
//! - **`put` is atomic and replaces**: a reader sees the old object or the whole new one,
//!   never a mix or a torn write; a put that fails leaves the old object (or none). It is
//!   durable only after [`Backend::sync`] returns: chunks are many and written in bursts, and
//!   one sync per burst (local: one `syncfs`) is what makes backups fast.
//! - **`create` is a conditional create, durable when it returns**: exactly one of several
//!   concurrent creators of a name gets [`Created::New`]; the others get
//!   [`Created::AlreadyExists`] and the object keeps the winner's bytes. For locks, keys and
//!   the config, which must never be silently replaced and must survive a crash at once.
//! - **`get_range` reads exactly what it is asked**: a range that runs past the end of the
//!   object is an error ([`BackendError::OutOfRange`]), never a short read the caller could
//!   mistake for data.
//! - **`list` is consistent with what returned before it**: every put, create and delete
//!   that returned before `list` was called is reflected; objects changed during a listing
//!   may or may not appear. A listing shows only objects: temp files and foreign entries
//!   (a file with an invalid name, a symlink) are left out.
//! - **A crash leaves no half object**: what an interrupted put or create leaves behind is
//!   never listed or read as an object, and [`Backend::cleanup_temp`] removes it.
//! - **`delete` of a missing object is `Ok`**: garbage collection may race with itself or
//!   be re-run after a crash; like `put`, a delete is durable after `sync`.
//! - **Errors keep what was done to which object, where, and why**, and say who must act
//!   ([`BackendError::actor`]): the caller, for an answer about its request (not there,
//!   out of range, an invalid name); the administrator of the storage, for space,
//!   permissions, a read-only mount or a failing device.
//!
//! # Why this shape
//! - Two lessons of the field (see `STYLE.md`). rustic_core keeps storage as small traits
//!   keyed by object kind, and puts caching, retries and decryption in decorators that wrap
//!   a backend, so its core never names S3 or Azure; PBS 4 added S3 as an enum matched at
//!   every call site (GC, verify, index upload). Here the seam comes before the second
//!   backend, and callers never match on a backend's kind.
//! - The operations are the ones object stores offer cheaply and atomically (whole-object
//!   put, conditional create, ranged get, prefix list, delete), so S3 and Azure Blob fit
//!   without emulating a file system; the local folder keeps its fast path (O_DIRECT writes
//!   of aligned buffers, no fsync per chunk, one `syncfs` per batch).
//! - The operations block and take `&self`: the data path runs on worker threads (as the
//!   backup pipeline does today), and a backend is shared by all of them.

pub mod local;
pub mod memory;
pub mod object;

#[cfg(test)]
mod conformance;

pub use local::LocalBackend;
pub use memory::MemoryBackend;
pub use object::{ObjectStorage, ObjectStoreBackend};

use crate::model::ErrorDetails;
use std::fmt;
use std::io;
use std::time::SystemTime;

/// What an object is; each kind is a namespace of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// The vault's own description (id, format version, encryption).
    Config,
    /// A key slot: the master key wrapped by a passphrase or a key file.
    Key,
    /// A stored blob of disk bytes, named by its (keyed) hash.
    Chunk,
    /// The chunk list of one disk of one recovery point (`<point>.d<disk>`).
    Index,
    /// What a committed recovery point is (item, disks, time, expiry, index checksums).
    Manifest,
    /// A protected item's identity and settings.
    Item,
    /// A backup policy.
    Policy,
    /// A lock held by a process that works on the vault.
    Lock,
}

impl ObjectKind {
    /// Every kind.
    pub const ALL: [ObjectKind; 8] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Chunk,
        ObjectKind::Index,
        ObjectKind::Manifest,
        ObjectKind::Item,
        ObjectKind::Policy,
        ObjectKind::Lock,
    ];

    /// The kind's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Config => "config",
            ObjectKind::Key => "key",
            ObjectKind::Chunk => "chunk",
            ObjectKind::Index => "index",
            ObjectKind::Manifest => "manifest",
            ObjectKind::Item => "item",
            ObjectKind::Policy => "policy",
            ObjectKind::Lock => "lock",
        }
    }

    /// Checks the rules a kind adds to those of every name: chunk names are lower-case hex
    /// digests, so every store can fan them out by their first two characters; index names
    /// are `<point>.d<disk>` ([`index_name`]), so a store can keep a point's objects
    /// together.
    pub fn check_name(self, name: &ObjectName) -> Result<(), InvalidName> {
        let s = name.as_str();
        if self == ObjectKind::Chunk
            && (s.len() < 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(InvalidName::new(
                s,
                "a chunk name is a lower-case hex digest of at least two digits",
            ));
        }
        if self == ObjectKind::Index && index_parts(s).is_none() {
            return Err(InvalidName::new(
                s,
                "an index name is <point>.d<disk> (a disk number without leading zeros)",
            ));
        }
        Ok(())
    }
}

/// The object name of the index of disk `disk` of point `point` (`<point>.d<disk>`), and
/// the manifest's name is the point's id itself. An error for a point id that is not a
/// valid object name.
pub fn index_name(point: &str, disk: u32) -> Result<ObjectName, InvalidName> {
    ObjectName::new(format!("{point}.d{disk}"))
}

/// The point and disk an index name stands for: `<point>.d<disk>`, the point a valid name
/// itself, the disk a `u32` written without leading zeros (one name per index).
pub fn index_parts(name: &str) -> Option<(&str, u32)> {
    let (point, disk) = name.rsplit_once(".d")?;
    if point.is_empty() || disk.is_empty() || (disk.len() > 1 && disk.starts_with('0')) {
        return None;
    }
    if !disk.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((point, disk.parse().ok()?))
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked object name: 1–[`ObjectName::MAX_LEN`] characters of `[a-z0-9._-]`, not
/// starting with a dot. Safe as a file name and as an object key on every store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// The longest name.
    pub const MAX_LEN: usize = 128;

    /// Checks `name`.
    pub fn new(name: impl Into<String>) -> Result<ObjectName, InvalidName> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > Self::MAX_LEN {
            Some("it is longer than 128 characters")
        } else if name.starts_with('.') {
            Some("it starts with a dot (reserved for the backend's temp files)")
        } else if !name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        {
            Some("only a-z, 0-9, '.', '_' and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidName::new(&name, reason)),
            None => Ok(ObjectName(name)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ObjectName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<ObjectName, InvalidName> {
        ObjectName::new(s)
    }
}

/// A name that is not a valid object name, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid object name: {reason}")]
pub struct InvalidName {
    /// The name as given (cut to 160 characters for messages).
    pub name: String,
    pub reason: &'static str,
}

impl InvalidName {
    fn new(name: &str, reason: &'static str) -> InvalidName {
        InvalidName {
            name: name.chars().take(160).collect(),
            reason,
        }
    }
}

/// What a listing or a lookup tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: ObjectName,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written (GC's grace period counts from here).
    pub modified: SystemTime,
}

/// An entry in a store that is no object ([`Backend::strays`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stray {
    /// Where it is (a path), its name escaped for a terminal.
    pub at: String,
    /// What it is and why it is no object: "a symbolic link, not an object vmvault
    /// stored", "an entry whose name vmvault never gives an object", …
    pub what: String,
}

impl fmt::Display for Stray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {}", self.at, self.what)
    }
}

/// The outcome of a conditional create.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object did not exist; it now holds the bytes given, durably.
    New,
    /// Something was there already and is unchanged.
    AlreadyExists,
}

/// The objects of one kind, as a backend lists them (errors as items: a listing of a large
/// store may fail half way).
pub type ObjectList<'a> = Box<dyn Iterator<Item = Result<ObjectInfo, BackendError>> + Send + 'a>;

/// Objects by kind and name, in some store. See the module docs for what each operation
/// promises; every backend passes the same conformance suite.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the objects live, for messages (a folder, a bucket URL).
    fn location(&self) -> &str;

    /// Where the object `(kind, name)` is kept, for messages (a file's path, an object's
    /// URL).
    fn locate(&self, kind: ObjectKind, name: &ObjectName) -> String {
        format!("{}/{kind}/{name}", self.location())
    }

    /// Stores `data` as `(kind, name)`, replacing what was there, atomically. Durable only
    /// after [`Backend::sync`]. A 4 KiB-aligned `data` (from an
    /// [`AlignedBuf`](crate::direct_io::AlignedBuf)) takes the local fast path (O_DIRECT).
    fn put(&self, kind: ObjectKind, name: &ObjectName, data: &[u8]) -> Result<(), BackendError>;

    /// Stores `data` as `(kind, name)` only if nothing is there; durable when it returns.
    fn create(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        data: &[u8],
    ) -> Result<Created, BackendError>;

    /// The whole object, into `buf` (cleared first; its allocation is reused). An object
    /// of more than `max` bytes is [`BackendError::TooLarge`] and is not read: a caller
    /// that knows how large its objects can be never reads a planted giant.
    fn get_into(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        buf: &mut Vec<u8>,
        max: u64,
    ) -> Result<(), BackendError>;

    /// The whole object.
    fn get(&self, kind: ObjectKind, name: &ObjectName) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        self.get_into(kind, name, &mut buf, u64::MAX)?;
        Ok(buf)
    }

    /// Exactly `len` bytes from `offset`; a range past the end is
    /// [`BackendError::OutOfRange`].
    fn get_range(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, BackendError>;

    /// Size and time of the object, or None when it does not exist.
    fn stat(&self, kind: ObjectKind, name: &ObjectName)
        -> Result<Option<ObjectInfo>, BackendError>;

    /// Every object of `kind`, in no particular order.
    fn list(&self, kind: ObjectKind) -> ObjectList<'_>;

    /// Deletes the object; a missing one is `Ok`. Durable after [`Backend::sync`].
    fn delete(&self, kind: ObjectKind, name: &ObjectName) -> Result<(), BackendError>;

    /// Makes every put and delete that returned before it durable.
    fn sync(&self) -> Result<(), BackendError>;

    /// Takes a damaged object out of its kind's namespace, keeping its bytes for
    /// inspection where the store can (local: renamed to `<file>.damaged` beside it, never
    /// over an earlier one); as for `delete`, a missing object is not an error. True when
    /// it was kept aside, false when there was nothing to keep or it could only be
    /// deleted. The default deletes it.
    fn set_aside(&self, kind: ObjectKind, name: &ObjectName) -> Result<bool, BackendError> {
        self.delete(kind, name).map(|()| false)
    }

    /// Entries where the objects of `kind` are kept that are no objects (a symbolic link,
    /// a file whose name no object has, a folder where a file belongs): never read,
    /// followed or listed, and named here so that verify and rebuild can tell the
    /// administrator what to remove. Temp files of writers are not strays. A store that
    /// cannot hold such entries has none (the default).
    fn strays(&self, kind: ObjectKind) -> Result<Vec<Stray>, BackendError> {
        let _ = kind;
        Ok(Vec::new())
    }

    /// Removes what writes cut short by a crash left behind (local: `.tmp-*` files) and
    /// last touched before `older_than`; returns how many were removed. Objects are never
    /// touched. Choose `older_than` well before the start of any writer that may still be
    /// running (GC passes the start of its grace period).
    fn cleanup_temp(&self, older_than: SystemTime) -> Result<u64, BackendError>;
}

/// What a backend was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Open,
    Put,
    Create,
    Get,
    GetRange,
    Stat,
    List,
    Delete,
    Sync,
    /// Removing stale temp files.
    Sweep,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::Open => "opening",
            Operation::Put => "storing",
            Operation::Create => "creating",
            Operation::Get => "reading",
            Operation::GetRange => "reading part of",
            Operation::Stat => "looking up",
            Operation::List => "listing",
            Operation::Delete => "deleting",
            Operation::Sync => "syncing",
            Operation::Sweep => "sweeping temp files of",
        }
    }
}

/// What was done to which object, and where: the context every [`BackendError`] keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorContext {
    pub op: Operation,
    /// The kind concerned (None for the whole store: open, sync).
    pub kind: Option<ObjectKind>,
    /// The object concerned (None for a whole kind: list).
    pub name: Option<ObjectName>,
    /// Where, in the backend's own words (a path, a URL).
    pub location: String,
}

impl ErrorContext {
    pub fn new(
        op: Operation,
        kind: Option<ObjectKind>,
        name: Option<&ObjectName>,
        location: impl Into<String>,
    ) -> ErrorContext {
        ErrorContext {
            op,
            kind,
            name: name.cloned(),
            location: location.into(),
        }
    }
}

impl ErrorContext {
    /// The storage is a service reached by URL (an object store), not a folder.
    fn is_remote(&self) -> bool {
        self.location.contains("://")
    }
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.verb())?;
        // A location comes from the config file or the file system (a bucket name, a
        // folder): escaped, so that it cannot write control sequences to a terminal.
        let location = crate::fmt::escape(&self.location);
        match (self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " {k} {n} ({location})"),
            (Some(k), None) => write!(f, " the {k} objects ({location})"),
            // Nothing but the store: named as what was done to it.
            _ => write!(f, " the vault's storage at {location}"),
        }
    }
}

/// The cause of an error, as the store reported it.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Who must act on a [`BackendError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The code that asked: the answer is about its request. What it means is the
    /// caller's to say: a missing chunk is damage (verify), a missing lock is normal.
    Caller,
    /// Whoever runs the storage: free space, permissions, a read-only mount, a failing
    /// device.
    Administrator,
}

/// A failed backend operation, classified by what happened (and so by who must act), with
/// the [`ErrorContext`] and the store's own error as the source.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist. Who acts: the caller.
    #[error("{ctx}: no such object")]
    NotFound { ctx: ErrorContext },
    /// The range asked for runs past the end of the object. Who acts: the caller (an
    /// object shorter than what refers to it is damaged: verify).
    #[error(
        "{ctx}: bytes {offset}..{offset}+{len} were asked for, but the object holds {size} bytes"
    )]
    OutOfRange {
        ctx: ErrorContext,
        offset: u64,
        len: usize,
        size: u64,
    },
    /// The object is larger than the caller said any of its objects can be. Who acts: the
    /// caller (such an object is damaged, or not ours: verify).
    #[error("{ctx}: the object holds {size} bytes, more than the {max} it can be")]
    TooLarge {
        ctx: ErrorContext,
        size: u64,
        max: u64,
    },
    /// The name breaks a rule of its kind. Who acts: the caller (a bug).
    #[error("{ctx}: {source}")]
    InvalidName {
        ctx: ErrorContext,
        #[source]
        source: InvalidName,
    },
    /// No space left (or the quota is used up). Who acts: the administrator.
    #[error("{ctx}: the storage is full: {source}")]
    Full {
        ctx: ErrorContext,
        #[source]
        source: Source,
    },
    /// The storage accepts no writes. Who acts: the administrator.
    #[error("{ctx}: the storage is read-only: {source}")]
    ReadOnly {
        ctx: ErrorContext,
        #[source]
        source: Source,
    },
    /// The store refuses this user (permissions, ownership, credentials). Who acts: the
    /// administrator.
    #[error("{ctx}: access denied: {source}")]
    PermissionDenied {
        ctx: ErrorContext,
        #[source]
        source: Source,
    },
    /// Something that is not an object sits at the object's name (a planted symbolic
    /// link, a folder, a FIFO): never followed or opened. Who acts: the administrator.
    #[error("{ctx}: {what} is there, not an object vmvault stored: vmvault never follows a link or reads a special file in a vault. Remove it")]
    NotAnObject {
        ctx: ErrorContext,
        /// What is there ("a symbolic link", "a folder", …).
        what: String,
    },
    /// Any other failure of the storage (a device error). Who acts: the administrator.
    #[error("{ctx}: {source}")]
    Io {
        ctx: ErrorContext,
        #[source]
        source: Source,
    },
    /// The storage's settings cannot work (an object store's endpoint with plain http to
    /// another machine, credentials written into it, an invalid prefix). Who acts: the
    /// administrator.
    #[error("{ctx}: the storage settings cannot be used: {message}")]
    Misconfigured { ctx: ErrorContext, message: String },
    /// An object storage service did not answer: no connection, a timeout, a dropped
    /// connection, even after retries with backoff. Who acts: the administrator.
    #[error("{ctx}: the storage service did not answer: {message}")]
    Unreachable { ctx: ErrorContext, message: String },
    /// An object storage service refused or failed a request: a missing bucket, a request
    /// it does not support, server errors and throttling that outlasted the retries. The
    /// message is the service's own error code and text (never a signature or a
    /// credential). Who acts: the administrator.
    #[error("{ctx}: the storage service answered HTTP {status}: {message}")]
    Remote {
        ctx: ErrorContext,
        status: u16,
        message: String,
    },
    /// This process no longer holds the lock of the vault (its lease in object storage ran
    /// out or was taken over), so it writes and deletes nothing more. Who acts: the
    /// administrator (another process may be working on the vault).
    #[error("{ctx}: refused: {why}")]
    LockLost { ctx: ErrorContext, why: String },
}

impl BackendError {
    /// Classifies an I/O error by its cause: space, read-only, permissions, or other.
    /// (Never NotFound: whether "no such file" means "no such object" depends on which file
    /// was asked for, so callers decide that themselves.)
    pub fn from_io(ctx: ErrorContext, e: io::Error) -> BackendError {
        let cause = Cause::of(&e);
        cause.error(ctx, e.into())
    }

    /// Classifies by the I/O error `e`, keeping `source` (an error that wraps `e` with more
    /// context, such as the path of a temp file) as the cause.
    pub fn caused_by(ctx: ErrorContext, e: &io::Error, source: Source) -> BackendError {
        Cause::of(e).error(ctx, source)
    }

    /// What was done to which object, and where.
    pub fn context(&self) -> &ErrorContext {
        match self {
            BackendError::NotFound { ctx }
            | BackendError::OutOfRange { ctx, .. }
            | BackendError::TooLarge { ctx, .. }
            | BackendError::InvalidName { ctx, .. }
            | BackendError::Full { ctx, .. }
            | BackendError::ReadOnly { ctx, .. }
            | BackendError::PermissionDenied { ctx, .. }
            | BackendError::NotAnObject { ctx, .. }
            | BackendError::Io { ctx, .. }
            | BackendError::Misconfigured { ctx, .. }
            | BackendError::Unreachable { ctx, .. }
            | BackendError::Remote { ctx, .. }
            | BackendError::LockLost { ctx, .. } => ctx,
        }
    }

    /// Who must act.
    pub fn actor(&self) -> Actor {
        match self {
            BackendError::NotFound { .. }
            | BackendError::OutOfRange { .. }
            | BackendError::TooLarge { .. }
            | BackendError::InvalidName { .. } => Actor::Caller,
            BackendError::Full { .. }
            | BackendError::ReadOnly { .. }
            | BackendError::PermissionDenied { .. }
            | BackendError::NotAnObject { .. }
            | BackendError::Io { .. }
            | BackendError::Misconfigured { .. }
            | BackendError::Unreachable { .. }
            | BackendError::Remote { .. }
            | BackendError::LockLost { .. } => Actor::Administrator,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// The storage is full.
    pub fn is_full(&self) -> bool {
        matches!(self, BackendError::Full { .. })
    }

    /// The details to record on a job: a stable code, what happened and what to do.
    pub fn details(&self) -> ErrorDetails {
        let msg = self.to_string();
        match self {
            BackendError::NotFound { .. } => ErrorDetails::new(
                "VaultObjectMissing",
                "An object of the vault is missing",
                msg,
            )
            .recommend("Run `vmvault verify` to list every recovery point that needs it."),
            BackendError::TooLarge { .. } => ErrorDetails::new(
                "VaultObjectTooLarge",
                "An object of the vault is larger than it can be",
                msg,
            )
            .recommend("Run `vmvault verify` to list every recovery point that needs it."),
            BackendError::OutOfRange { .. } => ErrorDetails::new(
                "VaultObjectTooShort",
                "An object of the vault is shorter than expected",
                msg,
            )
            .recommend("Run `vmvault verify` to list every recovery point that needs it."),
            BackendError::InvalidName { .. } => {
                ErrorDetails::new("InvalidObjectName", "Invalid object name", msg)
                    .recommend("This is a defect of vmvault: please report it with this message.")
            }
            BackendError::Full { .. } => crate::vault::store::storage_full(msg),
            BackendError::ReadOnly { .. } => ErrorDetails::new(
                "VaultStorageReadOnly",
                "The vault's storage is read-only",
                msg,
            )
            .recommend("Make the vault's storage writable again (e.g. remount it read-write), then run the job again."),
            BackendError::PermissionDenied { ctx, .. } if ctx.is_remote() => ErrorDetails::new(
                "VaultStorageAccessDenied",
                "The vault's storage refuses access",
                msg,
            )
            .recommend(CHECK_CREDENTIALS),
            BackendError::PermissionDenied { .. } => ErrorDetails::new(
                "VaultStorageAccessDenied",
                "The vault's storage refuses access",
                msg,
            )
            .recommend("Give the user running vmvault ownership of the vault's folder and everything in it (only that user may write there), or fix the storage credentials."),
            BackendError::NotAnObject { .. } => ErrorDetails::new(
                "VaultForeignEntry",
                "Something foreign is in the vault",
                msg,
            )
            .recommend("Remove what is named there (vmvault never stores links or special files), then run `vmvault verify`."),
            BackendError::Io { .. } => ErrorDetails::new(
                "VaultStorageError",
                "The vault's storage failed",
                msg,
            )
            .recommend("Check the health of the vault's storage (`dmesg`, the disk's SMART status) and what else is in its folder."),
            BackendError::Misconfigured { .. } => ErrorDetails::new(
                "VaultStorageMisconfigured",
                "The vault's storage settings cannot be used",
                msg,
            )
            .recommend("Correct `storage` of the vault in the config file as the message says; credentials never go there, only in the environment."),
            BackendError::Unreachable { .. } => ErrorDetails::new(
                "VaultStorageUnreachable",
                "The vault's storage service does not answer",
                msg,
            )
            .recommend("Check the endpoint in `storage` of the vault, the network and any proxy between this machine and the service (vmvault retried with backoff before giving up).")
            .recommend("With no AWS credentials in its environment, vmvault asks the EC2 instance metadata service (169.254.169.254) for a role's: outside EC2, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."),
            BackendError::Remote { .. } => ErrorDetails::new(
                "VaultStorageServiceError",
                "The vault's storage service refused a request",
                msg,
            )
            .recommend("Check that the bucket or container in `storage` of the vault exists and that the service is healthy (server errors and throttling were retried with backoff before giving up).")
            .recommend(CHECK_CREDENTIALS),
            BackendError::LockLost { .. } => ErrorDetails::new(
                "VaultLockLost",
                "This process lost the vault's lock",
                msg,
            )
            .recommend("Another vmvault may be working on the vault now (`vmvault status` names it); when it is done, run the job again. If this machine was suspended or cut off from the storage for long, that is why: its lock expired."),
        }
    }
}

/// What an administrator checks when an object storage service refuses vmvault.
const CHECK_CREDENTIALS: &str = "Check the credentials in vmvault's environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SESSION_TOKEN, AWS_WEB_IDENTITY_TOKEN_FILE, an instance role) for S3; AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or AZURE_STORAGE_CLIENT_ID/_SECRET/TENANT_ID (or a managed identity) for Azure Blob; they must be allowed to read, write, list and delete in the bucket or container.";

/// What an I/O error says about the storage.
enum Cause {
    Full,
    ReadOnly,
    Denied,
    Other,
}

impl Cause {
    fn of(e: &io::Error) -> Cause {
        match e.raw_os_error() {
            _ if crate::fsx::is_full(e) => Cause::Full,
            Some(libc::EROFS) => Cause::ReadOnly,
            Some(libc::EACCES) | Some(libc::EPERM) => Cause::Denied,
            _ => Cause::Other,
        }
    }

    fn error(self, ctx: ErrorContext, source: Source) -> BackendError {
        match self {
            Cause::Full => BackendError::Full { ctx, source },
            Cause::ReadOnly => BackendError::ReadOnly { ctx, source },
            Cause::Denied => BackendError::PermissionDenied { ctx, source },
            Cause::Other => BackendError::Io { ctx, source },
        }
    }
}

/// `offset..offset + len` if it lies within an object of `size` bytes, for `get_range`.
fn checked_range(
    ctx: impl FnOnce() -> ErrorContext,
    size: u64,
    offset: u64,
    len: usize,
) -> Result<std::ops::Range<u64>, BackendError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(offset..end),
        _ => Err(BackendError::OutOfRange {
            ctx: ctx(),
            offset,
            len,
            size,
        }),
    }
}

/// Checks the kind's own rule for `name` (see [`ObjectKind::check_name`]).
fn check_kind_name(
    ctx: impl FnOnce() -> ErrorContext,
    kind: ObjectKind,
    name: &ObjectName,
) -> Result<(), BackendError> {
    kind.check_name(name)
        .map_err(|source| BackendError::InvalidName { ctx: ctx(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for ok in ["a", "config", "p-1.d0", "ab_c.d-e", &"a".repeat(128)] {
            assert_eq!(ObjectName::new(ok).unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", "empty"),
            ("..", "dot"),
            (".", "dot"),
            (".tmp-x", "dot"),
            ("a/b", "only a-z"),
            ("/", "only a-z"),
            ("Abc", "only a-z"),
            ("a b", "only a-z"),
            ("a\0b", "only a-z"),
            ("é", "only a-z"),
        ] {
            let e = ObjectName::new(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        let e = ObjectName::new("a".repeat(129)).unwrap_err();
        assert!(e.to_string().contains("longer than 128"), "{e}");
        // A huge name is cut in messages.
        let e = ObjectName::new("A".repeat(100_000)).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }

    #[test]
    fn chunk_names_are_hex_digests() {
        let n = |s: &str| ObjectName::new(s).unwrap();
        assert!(ObjectKind::Chunk.check_name(&n("ab")).is_ok());
        assert!(ObjectKind::Chunk.check_name(&n(&"0f".repeat(32))).is_ok());
        for bad in ["a", "zz", "ab.c", "ab-c"] {
            assert!(ObjectKind::Chunk.check_name(&n(bad)).is_err(), "{bad}");
            assert!(ObjectKind::Manifest.check_name(&n(bad)).is_ok(), "{bad}");
        }
    }

    #[test]
    fn index_names_are_point_and_disk() {
        let n = |s: &str| ObjectName::new(s).unwrap();
        assert_eq!(index_parts("p-1.d0"), Some(("p-1", 0)));
        assert_eq!(index_parts("a.d1.d12"), Some(("a.d1", 12)));
        assert_eq!(index_name("p", 7).unwrap().as_str(), "p.d7");
        for bad in ["p", ".d0", "p.d", "p.d01", "p.dx", "p.d-1", "p.d4294967296"] {
            assert_eq!(index_parts(bad), None, "{bad}");
            if let Ok(name) = ObjectName::new(bad) {
                assert!(ObjectKind::Index.check_name(&name).is_err(), "{bad}");
            }
        }
        assert!(ObjectKind::Index.check_name(&n("p.d4294967295")).is_ok());
        assert!(index_name("Bad Id", 0).is_err());
    }

    #[test]
    fn a_location_with_control_characters_is_escaped_in_messages() {
        let ctx = ErrorContext::new(Operation::Open, None, None, "s3://b\x1b[2Jx".to_string());
        let shown = ctx.to_string();
        assert!(!shown.contains('\x1b'), "{shown:?}");
        assert!(shown.contains("s3://b"), "{shown:?}");
    }

    #[test]
    fn errors_say_what_which_where_and_who() {
        let name = ObjectName::new("abcd").unwrap();
        let ctx = || ErrorContext::new(Operation::Put, Some(ObjectKind::Chunk), Some(&name), "/v");
        let cases = [
            (libc::ENOSPC, "VaultStorageFull", "full"),
            (libc::EDQUOT, "VaultStorageFull", "full"),
            (libc::EROFS, "VaultStorageReadOnly", "read-only"),
            (libc::EACCES, "VaultStorageAccessDenied", "access denied"),
            (libc::EPERM, "VaultStorageAccessDenied", "access denied"),
            (libc::EIO, "VaultStorageError", "Input/output error"),
            (libc::ENOENT, "VaultStorageError", "No such file"),
        ];
        for (errno, code, words) in cases {
            let e = BackendError::from_io(ctx(), io::Error::from_raw_os_error(errno));
            let s = e.to_string();
            assert!(s.starts_with("storing chunk abcd (/v): "), "{s}");
            assert!(s.contains(words), "{s}");
            assert_eq!(e.details().code, code, "{s}");
            assert_eq!(e.actor(), Actor::Administrator);
            assert_eq!(e.context().name.as_ref(), Some(&name));
            let src = std::error::Error::source(&e).unwrap();
            assert_eq!(
                src.downcast_ref::<io::Error>().unwrap().raw_os_error(),
                Some(errno)
            );
        }
        let e = BackendError::NotFound { ctx: ctx() };
        assert_eq!(e.actor(), Actor::Caller);
        assert!(e.is_not_found());
        let ctx = ErrorContext::new(Operation::List, Some(ObjectKind::Index), None, "/v");
        assert_eq!(ctx.to_string(), "listing the index objects (/v)");
        let ctx = ErrorContext::new(Operation::Sync, None, None, "/v");
        assert_eq!(ctx.to_string(), "syncing the vault's storage at /v");
    }
}
