//! The object-storage backend: vault objects in an S3-compatible bucket or an Azure Blob
//! container, through Apache Arrow's [`object_store`] crate (its S3 and Azure clients: request
//! signing, the standard credential chains, retries with backoff and jitter).
//!
//! # Settings and credentials
//! [`ObjectStorage`] is what the config file says (`storage = { kind = "s3", bucket, prefix,
//! endpoint, region }` or `{ kind = "azure", account, container, prefix, endpoint }`); it
//! never holds a credential. Credentials come only from each service's standard environment
//! and credential chain ([`AmazonS3Builder::from_env`]: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web identity, ECS and EC2 instance roles;
//! [`MicrosoftAzureBuilder::from_env`]: `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`,
//! service principals, workload and managed identities, `AZURE_STORAGE_USE_EMULATOR` for
//! Azurite). object_store reads no `~/.aws` profiles (`AWS_PROFILE`); with no AWS
//! credentials in the environment it asks the EC2 instance metadata service for a role's.
//! They are never logged and never in a message: errors are rebuilt from the
//! service's error code and text, URLs lose their query strings (a SAS token lives there),
//! and this type's `Debug` leaves the client out (object_store's own `Debug` prints its
//! configuration, credentials included). Plain `http://` is accepted only to a loopback
//! address (an emulator, a local gateway); anything else must be `https://`.
//!
//! # Layout
//! `<prefix>/<kind>/<name>`, each kind its own folder (`config`, `key`, `chunk`, `index`,
//! `manifest`, `item`, `policy`, `lock`); chunks are fanned out by the first two hex digits
//! of their name, `<prefix>/chunk/ab/abcdef…`, because S3 partitions request rates by key
//! prefix (3,500 writes and 5,500 reads per second per prefix) and random hex spreads a
//! backup over 256 of them from the start. A listing only returns keys that are valid names
//! of their kind in their place (a chunk in the wrong fan-out folder, a nested key, a name
//! vmvault never gives are [`Backend::strays`], named by their URL).
//!
//! **One object per chunk.** Chunks are at most 16 MiB (1 MiB by default), large enough
//! that per-request costs stay small: storing a GiB of new data is 1 PUT per chunk (1,024
//! PUTs per GiB at 1 MiB, 64 at 16 MiB), restoring it as many GETs, deleting a chunk is one
//! DELETE. Proxmox Backup Server's S3 datastores do the same with 4 MiB chunks. Packs of
//! chunks with an index (restic, kopia) save requests for tiny chunks but make garbage
//! collection rewrite ("repack") packs that hold both live and dead chunks, paying egress
//! and PUTs again for data that did not change, and make a pack's index a second thing that
//! must agree with it; with chunks this size packing would save little. One PUT per chunk
//! also keeps every object write atomic without multipart uploads, so a killed upload
//! leaves nothing behind.
//!
//! # How the promises of [`Backend`] are kept
//! - **put** is one PUT (`PutMode::Overwrite`): object stores make a PUT atomic (readers
//!   see the old object or the whole new one) and durable when it returns, so
//!   [`Backend::sync`] has nothing left to do. On S3 every upload carries its SHA-256
//!   (`x-amz-checksum-sha256`), which the service checks before it stores the object.
//!   Azure's Put Blob as object_store sends it carries no checksum (object_store sends no
//!   `Content-MD5`); TLS protects it in transit, and every chunk is checked against its
//!   name when read.
//! - **create** is a conditional PUT (`If-None-Match: *`, `PutMode::Create`): the service
//!   lets exactly one creator win and answers the others 412 (S3) or 409 (Azure), which
//!   are [`Created::AlreadyExists`]. object_store never retries a conditional create after
//!   a timeout (it may have been applied), so a create that cannot be confirmed is an
//!   error, never a second winner. Both emulators the tests use (moto, Azurite) honour it
//!   (the racing-creators check of the conformance suite passes on both); some older
//!   S3-compatible services ignore the header, and a vault must not live on one.
//! - **get** reads the object's size from the GET's headers before its body: an object
//!   larger than the caller's `max` is refused without reading it. **get_range** asks for
//!   exactly the range; a range past the end (which services answer 416, or cut short) is
//!   [`BackendError::OutOfRange`] with the object's size from a HEAD.
//! - **list** pages through a prefix listing (up to 1,000 keys per request), one page per
//!   request as the caller iterates; errors come as items.
//! - **stat** is a HEAD; its 404 has no body, so it cannot tell a missing object from a
//!   missing bucket (opening the backend checks the bucket; GETs and listings name it).
//! - **delete** of a missing object is `Ok` (S3 answers 204, Azure 404).
//! - **set_aside** copies the object to `<prefix>/damaged/<kind>/<name>` and deletes it: a
//!   namespace of its own, so it is never listed or a stray of any kind (a `.damaged`
//!   sibling would be a valid name of most kinds); never over an earlier one (that is kept,
//!   and the object only deleted).
//! - **cleanup_temp** has nothing to remove: every write is a single PUT, so no multipart
//!   upload is ever left half done.
//!
//! # What the emulators the tests run on support
//! - **moto** 5.2.1 (`moto_server`, S3): conditional create (412 to every loser; one
//!   winner in each race of the conformance suite), ranged GETs (a range running past the
//!   end is cut short, one starting past it is 416). It accepts `x-amz-checksum-sha256` but
//!   neither checks nor stores it (a wrong checksum is stored without complaint), and it
//!   checks no signature (any key works). Real S3 checks both.
//! - **Azurite** 3.35.0 (`azurite-blob`): conditional create (409 `BlobAlreadyExists` to
//!   every loser), ranged GETs, Shared Key signatures (a wrong key is 403
//!   `AuthorizationFailure`). Started with `--skipApiVersionCheck --loose`, so that newer
//!   client API versions and headers it does not know are accepted.
//!
//! # Requests, retries and threads
//! object_store retries 5xx answers, throttling (429, S3's `SlowDown`, 503), dropped and
//! refused connections and timeouts of requests that are safe to repeat, with exponential
//! backoff and jitter ([`Tuning`]: connect timeout 5 s, request timeout 60 s, up to 8
//! retries within 3 minutes); at most 16 requests are in flight per backend. The
//! [`Backend`] methods block: the backend owns a small tokio runtime (2 worker threads) on
//! which each request runs as its own task, and the calling thread waits on a channel, so
//! it may be any thread (a plain worker, a tokio blocking thread) but never blocks inside a
//! runtime.

use super::{
    check_kind_name, checked_range, Backend, BackendError, Created, ErrorContext, ObjectInfo,
    ObjectKind, ObjectList, ObjectName, Operation, Stray,
};
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutPayload, RetryConfig,
};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

/// Where a vault's objects are kept in object storage: the `storage` of a vault in the
/// config file. Never holds credentials (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ObjectStorage {
    /// Amazon S3 or any S3-compatible service.
    S3 {
        bucket: String,
        /// Folder of the vault in the bucket (`vaults/x`); None: the bucket's root.
        prefix: Option<String>,
        /// The service's URL (`https://s3.example.net`, `http://127.0.0.1:9000`); None:
        /// AWS (or `AWS_ENDPOINT` from the environment). Requests are path-style.
        endpoint: Option<String>,
        /// None: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`.
        region: Option<String>,
    },
    /// Azure Blob Storage (or Azurite).
    Azure {
        account: String,
        container: String,
        prefix: Option<String>,
        /// The account's blob URL (`http://127.0.0.1:10000/devstoreaccount1` for Azurite);
        /// None: `https://<account>.blob.core.windows.net`.
        endpoint: Option<String>,
    },
}

impl ObjectStorage {
    /// What is wrong with these settings, checked without the network (opening the
    /// backend checks them again, and that the bucket answers).
    pub fn check(&self) -> Result<(), String> {
        let ctx = || ErrorContext::new(Operation::Open, None, None, String::new());
        let message = |e: BackendError| match e {
            BackendError::Misconfigured { message, .. } => message,
            e => e.to_string(),
        };
        let (names, endpoint): (Vec<(&str, &str)>, _) = match self {
            ObjectStorage::S3 {
                bucket, endpoint, ..
            } => (vec![("bucket", bucket.as_str())], endpoint),
            ObjectStorage::Azure {
                account,
                container,
                endpoint,
                ..
            } => (
                vec![
                    ("account", account.as_str()),
                    ("container", container.as_str()),
                ],
                endpoint,
            ),
        };
        for (what, name) in names {
            check_name(what, name, ctx).map_err(message)?;
        }
        if let Some(e) = endpoint {
            check_endpoint(e, ctx).map_err(message)?;
        }
        if let Some(p) = self.prefix().map(|p| p.trim_matches('/')) {
            if !p.is_empty() {
                Key::parse(p).map_err(|e| {
                    format!(
                        "the prefix {:?} is not a usable key prefix ({e}): use folder names joined by '/', without empty, '.' or '..' parts",
                        crate::fmt::echo(p)
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The bucket (or account and container, with the endpoint) and the prefix (without
    /// outer slashes): two vaults with the same bucket and overlapping prefixes would
    /// share objects.
    pub fn place(&self) -> (String, String) {
        let prefix = self.prefix().unwrap_or("").trim_matches('/').to_string();
        let service = match self {
            ObjectStorage::S3 {
                bucket, endpoint, ..
            } => format!(
                "s3 bucket {bucket} at {}",
                endpoint.as_deref().unwrap_or("AWS")
            ),
            ObjectStorage::Azure {
                account,
                container,
                endpoint,
                ..
            } => format!(
                "azure container {account}/{container} at {}",
                endpoint.as_deref().unwrap_or("Azure")
            ),
        };
        (service, prefix)
    }

    /// The settings in a few words, for listings (`s3 bucket b, prefix p at URL`).
    pub fn summary(&self) -> String {
        let at = |p: &Option<String>, e: &Option<String>| {
            let mut s = String::new();
            if let Some(p) = p
                .as_deref()
                .map(|p| p.trim_matches('/'))
                .filter(|p| !p.is_empty())
            {
                s.push_str(&format!(", prefix {p}"));
            }
            if let Some(e) = e {
                s.push_str(&format!(" at {}", without_secrets(e)));
            }
            s
        };
        match self {
            ObjectStorage::S3 {
                bucket,
                prefix,
                endpoint,
                ..
            } => format!("s3 bucket {bucket}{}", at(prefix, endpoint)),
            ObjectStorage::Azure {
                account,
                container,
                prefix,
                endpoint,
            } => format!(
                "azure container {container} of account {account}{}",
                at(prefix, endpoint)
            ),
        }
    }

    fn prefix(&self) -> Option<&str> {
        match self {
            ObjectStorage::S3 { prefix, .. } | ObjectStorage::Azure { prefix, .. } => {
                prefix.as_deref()
            }
        }
    }
}

/// Timeouts, retries and concurrency of an [`ObjectStoreBackend`].
#[derive(Debug, Clone)]
pub struct Tuning {
    /// To open a connection.
    pub connect_timeout: Duration,
    /// For a whole request (a 16 MiB chunk at 2 Mbit/s takes ~64 s).
    pub request_timeout: Duration,
    /// Retries of one request (5xx, throttling, dropped connections, timeouts).
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt (credentials signed into a
    /// request must stay valid this long: keep it below 5 minutes).
    pub retry_timeout: Duration,
    /// The first backoff; each next one is up to twice as long (with jitter).
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Requests in flight at once, over all callers.
    pub concurrency: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            max_retries: 8,
            retry_timeout: Duration::from_secs(180),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            concurrency: 16,
        }
    }
}

/// Vault objects in an S3 bucket or an Azure Blob container. See the module docs.
pub struct ObjectStoreBackend {
    /// Runs the requests; Some for the backend's whole life (taken when it is dropped).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    store: Arc<dyn ObjectStore>,
    /// Requests in flight.
    limit: Arc<Semaphore>,
    /// The vault's prefix in the bucket (empty: the root).
    root: Key,
    /// URL of the bucket or container, without credentials or query (`s3://b`,
    /// `http://127.0.0.1:9000/b`, `https://acct.blob.core.windows.net/c`).
    base: String,
    /// URL of the vault (`base` + prefix), for messages.
    location: String,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the store: its Debug prints its configuration, credentials included.
        f.debug_struct("ObjectStoreBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for ObjectStoreBackend {
    fn drop(&mut self) {
        // Never blocks, so never panics, even when dropped inside another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The folder of each kind under the prefix.
fn folder(kind: ObjectKind) -> &'static str {
    kind.as_str()
}

/// The folder of objects set aside ([`Backend::set_aside`]), beside the kind folders.
const DAMAGED: &str = "damaged";

/// Keys pulled from a listing per round trip to the runtime (S3 and Azure pages hold up to
/// 1,000).
const LIST_BATCH: usize = 1000;

/// Opens the vault storage `spec` with the default [`Tuning`], and checks that its bucket
/// or container answers (one listing request).
pub fn open(spec: &ObjectStorage) -> Result<ObjectStoreBackend, BackendError> {
    ObjectStoreBackend::open(spec, &Tuning::default())
}

impl ObjectStoreBackend {
    /// Opens the vault storage `spec`: builds the client from the environment's credentials
    /// and checks that the bucket or container answers (one listing request, at most one
    /// page of the vault's top folder).
    pub fn open(spec: &ObjectStorage, tuning: &Tuning) -> Result<ObjectStoreBackend, BackendError> {
        let (store, base) = build_store(spec, tuning)?;
        let bad = |message: String| BackendError::Misconfigured {
            ctx: ErrorContext::new(Operation::Open, None, None, base.clone()),
            message,
        };
        let root = match spec.prefix().map(|p| p.trim_matches('/')) {
            None | Some("") => Key::default(),
            Some(p) => Key::parse(p).map_err(|e| {
                bad(format!(
                    "the prefix {:?} is not a usable key prefix ({e}): use folder names joined by '/', without empty, '.' or '..' parts",
                    crate::fmt::echo(p)
                ))
            })?,
        };
        let location = if root.as_ref().is_empty() {
            base.clone()
        } else {
            format!("{base}/{root}")
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vmvault-objstore")
            .enable_all()
            .build()
            .map_err(|e| BackendError::Io {
                ctx: ErrorContext::new(Operation::Open, None, None, location.clone()),
                source: format!("cannot start the threads of the storage client: {e}").into(),
            })?;
        let backend = ObjectStoreBackend {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            store,
            limit: Arc::new(Semaphore::new(tuning.concurrency.max(1))),
            root,
            base,
            location,
        };
        backend.check_reachable()?;
        Ok(backend)
    }

    /// One listing request at the vault's folder: the bucket exists, the credentials work,
    /// the endpoint answers.
    fn check_reachable(&self) -> Result<(), BackendError> {
        let store = self.store.clone();
        let root = self.root.clone();
        let prefix = (!root.as_ref().is_empty()).then_some(root);
        let ctx = || ErrorContext::new(Operation::Open, None, None, self.location.clone());
        match self.run(async move { store.list_with_delimiter(prefix.as_ref()).await }) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(match classify(ctx(), e) {
                // Nothing of the vault can be "not found" here: the bucket is missing.
                BackendError::NotFound { ctx } => BackendError::Remote {
                    ctx,
                    status: 404,
                    message: "the bucket or container does not exist".into(),
                },
                e => e,
            }),
            None => Err(stopped(ctx())),
        }
    }

    /// Runs `fut` on the backend's runtime, with one of the request permits, and waits for
    /// it on this thread. None if the task could not finish (the runtime is shutting down,
    /// or the task panicked).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let limit = self.limit.clone();
        self.handle.spawn(async move {
            // The semaphore is never closed; without a permit the request still runs.
            let _permit = limit.acquire_owned().await.ok();
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }

    /// Runs one request and classifies its error.
    fn call<T: Send + 'static>(
        &self,
        ctx: impl FnOnce() -> ErrorContext,
        fut: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T, BackendError> {
        match self.run(fut) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(classify(ctx(), e)),
            None => Err(stopped(ctx())),
        }
    }

    /// The key of the folder of `kind`.
    fn kind_key(&self, kind: ObjectKind) -> Key {
        self.root.clone().join(folder(kind))
    }

    /// The key of object `(kind, name)` (a valid name of `kind`).
    fn key(&self, kind: ObjectKind, name: &ObjectName) -> Key {
        let s = name.as_str();
        let dir = self.kind_key(kind);
        match (kind, s.get(..2)) {
            (ObjectKind::Chunk, Some(fan)) => dir.join(fan).join(s),
            _ => dir.join(s),
        }
    }

    /// Where a set-aside object is kept.
    fn damaged_key(&self, kind: ObjectKind, name: &ObjectName) -> Key {
        self.root
            .clone()
            .join(DAMAGED)
            .join(folder(kind))
            .join(name.as_str())
    }

    /// The URL of `key`, for messages.
    fn url(&self, key: &Key) -> String {
        format!("{}/{key}", self.base)
    }

    fn ctx(&self, op: Operation, kind: ObjectKind, name: Option<&ObjectName>) -> ErrorContext {
        let at = match name {
            Some(n) if kind.check_name(n).is_ok() => self.url(&self.key(kind, n)),
            _ => self.url(&self.kind_key(kind)),
        };
        ErrorContext::new(op, Some(kind), name, at)
    }

    /// HEAD: the object's size and time, None when it does not exist.
    fn head(
        &self,
        op: Operation,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, BackendError> {
        let store = self.store.clone();
        let key = self.key(kind, name);
        match self.call(|| self.ctx(op, kind, Some(name)), async move {
            store.head(&key).await
        }) {
            Ok(meta) => Ok(Some(meta)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The error for a range that does not fit, with the object's size from a HEAD; None
    /// when the range fits after all.
    fn range_error(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        offset: u64,
        len: usize,
    ) -> Result<Option<BackendError>, BackendError> {
        let ctx = || self.ctx(Operation::GetRange, kind, Some(name));
        match self.head(Operation::GetRange, kind, name)? {
            None => Ok(Some(BackendError::NotFound { ctx: ctx() })),
            Some(meta) => Ok(checked_range(ctx, meta.size, offset, len).err()),
        }
    }

    /// The name of the object at `key` if it is a valid object of `kind` in its place
    /// (a chunk in its fan-out folder, any other kind directly in its folder).
    fn name_at(&self, kind: ObjectKind, key: &Key) -> Option<ObjectName> {
        let rest: Vec<_> = key.prefix_match(&self.kind_key(kind))?.collect();
        let (fan, last) = match rest.as_slice() {
            [fan, last] if kind == ObjectKind::Chunk => (Some(fan.as_ref()), last.as_ref()),
            [last] if kind != ObjectKind::Chunk => (None, last.as_ref()),
            _ => return None,
        };
        let name = ObjectName::new(last).ok()?;
        kind.check_name(&name).ok()?;
        match fan {
            Some(fan) if name.as_str().get(..2) != Some(fan) => None,
            _ => Some(name),
        }
    }

    fn info(name: ObjectName, meta: &ObjectMeta) -> ObjectInfo {
        ObjectInfo {
            name,
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        }
    }

    /// Every key under the folder of `kind`, a batch (a page) per round trip, as the caller
    /// iterates; an error ends the listing.
    fn scan(&self, kind: ObjectKind) -> Pages<'_> {
        Pages {
            backend: self,
            kind,
            stream: None,
            done: false,
        }
    }
}

/// A listing in progress ([`ObjectStoreBackend::scan`]).
struct Pages<'a> {
    backend: &'a ObjectStoreBackend,
    kind: ObjectKind,
    /// The listing's stream between batches (None before the first and after the last).
    stream: Option<BoxStream<'static, object_store::Result<ObjectMeta>>>,
    done: bool,
}

impl Iterator for Pages<'_> {
    type Item = Result<Vec<ObjectMeta>, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let b = self.backend;
        let store = b.store.clone();
        let prefix = b.kind_key(self.kind);
        let s = self.stream.take();
        let batch = b.run(async move {
            let mut s = s.unwrap_or_else(|| store.list(Some(&prefix)));
            let mut batch = Vec::new();
            while batch.len() < LIST_BATCH {
                match s.next().await {
                    Some(Ok(meta)) => batch.push(meta),
                    Some(Err(e)) => return (None, Err(e)),
                    None => return (None, Ok(batch)),
                }
            }
            (Some(s), Ok(batch))
        });
        let ctx = || b.ctx(Operation::List, self.kind, None);
        match batch {
            None => {
                self.done = true;
                Some(Err(stopped(ctx())))
            }
            Some((_, Err(e))) => {
                self.done = true;
                Some(Err(classify(ctx(), e)))
            }
            Some((rest, Ok(batch))) => {
                self.done = rest.is_none();
                self.stream = rest;
                Some(Ok(batch))
            }
        }
    }
}

impl Drop for Pages<'_> {
    fn drop(&mut self) {
        // A listing left half way: its stream (an open response, perhaps) goes back to the
        // runtime to be dropped there.
        if let Some(s) = self.stream.take() {
            self.backend.handle.spawn(async move { drop(s) });
        }
    }
}

/// The error of a request whose task never finished.
fn stopped(ctx: ErrorContext) -> BackendError {
    BackendError::Io {
        ctx,
        source: "the storage client stopped before the request finished".into(),
    }
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> &str {
        &self.location
    }

    fn locate(&self, kind: ObjectKind, name: &ObjectName) -> String {
        self.ctx(Operation::Stat, kind, Some(name)).location
    }

    fn put(&self, kind: ObjectKind, name: &ObjectName, data: &[u8]) -> Result<(), BackendError> {
        let ctx = || self.ctx(Operation::Put, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let (store, key) = (self.store.clone(), self.key(kind, name));
        let payload = PutPayload::from(data.to_vec());
        self.call(ctx, async move {
            store
                .put_opts(&key, payload, PutMode::Overwrite.into())
                .await
        })
        .map(drop)
    }

    fn create(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        data: &[u8],
    ) -> Result<Created, BackendError> {
        let ctx = || self.ctx(Operation::Create, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let (store, key) = (self.store.clone(), self.key(kind, name));
        let payload = PutPayload::from(data.to_vec());
        match self.run(async move { store.put_opts(&key, payload, PutMode::Create.into()).await }) {
            Some(Ok(_)) => Ok(Created::New),
            Some(Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            )) => Ok(Created::AlreadyExists),
            Some(Err(e)) => Err(classify(ctx(), e)),
            None => Err(stopped(ctx())),
        }
    }

    fn get_into(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        buf: &mut Vec<u8>,
        max: u64,
    ) -> Result<(), BackendError> {
        let ctx = || self.ctx(Operation::Get, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let (store, key) = (self.store.clone(), self.key(kind, name));
        // The buffer goes to the request and comes back, allocation and all.
        let mut out = std::mem::take(buf);
        out.clear();
        let result = self.run(async move {
            let got = match store.get_opts(&key, GetOptions::default()).await {
                Ok(got) => got,
                Err(e) => return (out, Err(Fetch::Store(e))),
            };
            // The size is known from the headers: a giant is refused before its body.
            let size = got.meta.size;
            if size > max {
                return (out, Err(Fetch::TooLarge(size)));
            }
            if out
                .try_reserve_exact(usize::try_from(size).unwrap_or(usize::MAX))
                .is_err()
            {
                return (out, Err(Fetch::NoMemory(size)));
            }
            let mut body = got.into_stream();
            while let Some(part) = body.next().await {
                match part {
                    Ok(bytes) => out.extend_from_slice(&bytes),
                    Err(e) => return (out, Err(Fetch::Store(e))),
                }
                // A body longer than announced is read up to `max` only.
                if out.len() as u64 > max {
                    let n = out.len() as u64;
                    return (out, Err(Fetch::TooLarge(n)));
                }
            }
            (out, Ok(()))
        });
        let Some((out, r)) = result else {
            return Err(stopped(ctx()));
        };
        *buf = out;
        r.map_err(|e| match e {
            Fetch::Store(e) => classify(ctx(), e),
            Fetch::TooLarge(size) => {
                buf.clear();
                BackendError::TooLarge {
                    ctx: ctx(),
                    size,
                    max,
                }
            }
            Fetch::NoMemory(size) => BackendError::Io {
                ctx: ctx(),
                source: format!("no memory for an object of {size} bytes").into(),
            },
        })
    }

    fn get_range(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, BackendError> {
        let ctx = || self.ctx(Operation::GetRange, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let end = match offset.checked_add(len as u64) {
            // Nothing to read (services refuse empty ranges), or a range no object holds:
            // only the size can tell.
            Some(end) if len > 0 => end,
            _ => {
                return match self.range_error(kind, name, offset, len)? {
                    Some(e) => Err(e),
                    None => Ok(Vec::new()),
                }
            }
        };
        let (store, key) = (self.store.clone(), self.key(kind, name));
        let result = self.run(async move {
            let options = GetOptions::default().with_range(Some(offset..end));
            let got = store.get_opts(&key, options).await?;
            let (range, size) = (got.range.clone(), got.meta.size);
            let bytes = got.bytes().await?;
            Ok::<_, object_store::Error>((range, size, bytes))
        });
        match result {
            None => Err(stopped(ctx())),
            Some(Ok((range, size, bytes))) => {
                if range != (offset..end) || bytes.len() != len {
                    // Cut short at the end of the object.
                    return Err(checked_range(ctx, size, offset, len)
                        .err()
                        .unwrap_or_else(|| BackendError::Io {
                            ctx: ctx(),
                            source: format!(
                                "the service sent bytes {}..{} ({} bytes) for bytes {offset}..{end}",
                                range.start,
                                range.end,
                                bytes.len()
                            )
                            .into(),
                        }));
                }
                Ok(bytes.to_vec())
            }
            Some(Err(e)) => {
                let e = classify(ctx(), e);
                if e.is_not_found() {
                    return Err(e);
                }
                // 416, or object_store refusing a short answer: the size tells.
                match self.range_error(kind, name, offset, len)? {
                    Some(range_error) => Err(range_error),
                    None => Err(e),
                }
            }
        }
    }

    fn stat(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<Option<ObjectInfo>, BackendError> {
        check_kind_name(|| self.ctx(Operation::Stat, kind, Some(name)), kind, name)?;
        Ok(self
            .head(Operation::Stat, kind, name)?
            .map(|meta| Self::info(name.clone(), &meta)))
    }

    fn list(&self, kind: ObjectKind) -> ObjectList<'_> {
        Box::new(self.scan(kind).flat_map(move |batch| {
            let items: Vec<Result<ObjectInfo, BackendError>> = match batch {
                Ok(metas) => metas
                    .iter()
                    .filter_map(|meta| {
                        let name = self.name_at(kind, &meta.location)?;
                        Some(Ok(Self::info(name, meta)))
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            items
        }))
    }

    fn delete(&self, kind: ObjectKind, name: &ObjectName) -> Result<(), BackendError> {
        let ctx = || self.ctx(Operation::Delete, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let (store, key) = (self.store.clone(), self.key(kind, name));
        match self.call(ctx, async move { store.delete(&key).await }) {
            Err(BackendError::NotFound { .. }) => Ok(()),
            r => r,
        }
    }

    fn sync(&self) -> Result<(), BackendError> {
        // Every put and delete was durable when it returned.
        Ok(())
    }

    fn set_aside(&self, kind: ObjectKind, name: &ObjectName) -> Result<bool, BackendError> {
        let ctx = || self.ctx(Operation::Delete, kind, Some(name));
        check_kind_name(ctx, kind, name)?;
        let (store, key, aside) = (
            self.store.clone(),
            self.key(kind, name),
            self.damaged_key(kind, name),
        );
        // Never over an earlier one: that is evidence too, and this one is only deleted.
        let store2 = store.clone();
        let aside2 = aside.clone();
        let earlier = match self.call(ctx, async move { store2.head(&aside2).await }) {
            Ok(_) => true,
            Err(BackendError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        if earlier {
            return self.delete(kind, name).map(|()| false);
        }
        match self.call(ctx, async move { store.copy(&key, &aside).await }) {
            Ok(()) => self.delete(kind, name).map(|()| true),
            Err(BackendError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn strays(&self, kind: ObjectKind) -> Result<Vec<Stray>, BackendError> {
        let mut out = Vec::new();
        for batch in self.scan(kind) {
            for meta in batch? {
                if self.name_at(kind, &meta.location).is_none() {
                    out.push(Stray {
                        at: crate::fmt::echo(&self.url(&meta.location)),
                        what: format!(
                            "an object whose key vmvault never gives a {kind} object (not a valid name, or not in its place)"
                        ),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.at.cmp(&b.at));
        Ok(out)
    }

    fn cleanup_temp(&self, _older_than: SystemTime) -> Result<u64, BackendError> {
        // Every write is one PUT: no upload is ever left half done.
        Ok(0)
    }
}

/// Why a GET did not fill the buffer.
enum Fetch {
    Store(object_store::Error),
    TooLarge(u64),
    NoMemory(u64),
}

/// Builds the client for `spec` (credentials from the environment) and names the bucket or
/// container by URL.
fn build_store(
    spec: &ObjectStorage,
    tuning: &Tuning,
) -> Result<(Arc<dyn ObjectStore>, String), BackendError> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: tuning.first_backoff,
            max_backoff: tuning.max_backoff,
            base: 2.,
        },
        max_retries: tuning.max_retries,
        retry_timeout: tuning.retry_timeout,
    };
    let timeouts = [
        (
            ClientConfigKey::ConnectTimeout,
            format!("{}ms", tuning.connect_timeout.as_millis()),
        ),
        (
            ClientConfigKey::Timeout,
            format!("{}ms", tuning.request_timeout.as_millis()),
        ),
    ];
    match spec {
        ObjectStorage::S3 {
            bucket,
            endpoint,
            region,
            ..
        } => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                // Path-style requests (every S3-compatible service takes them).
                .with_virtual_hosted_style_request(false)
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                .with_checksum_algorithm(Checksum::SHA256)
                .with_retry(retry);
            for (k, v) in timeouts {
                b = b.with_config(AmazonS3ConfigKey::Client(k), v);
            }
            if let Some(r) = region {
                b = b.with_region(r);
            }
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            // The endpoint in effect (ours, or AWS_ENDPOINT from the environment).
            let effective = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            let base = match &effective {
                Some(e) => format!("{}/{bucket}", without_secrets(e.trim_end_matches('/'))),
                None => format!("s3://{bucket}"),
            };
            let ctx = || ErrorContext::new(Operation::Open, None, None, base.clone());
            check_name("bucket", bucket, ctx)?;
            let allow_http = match &effective {
                Some(e) => check_endpoint(e, ctx)?,
                None => false,
            };
            let store =
                b.with_allow_http(allow_http)
                    .build()
                    .map_err(|e| BackendError::Misconfigured {
                        ctx: ctx(),
                        message: scrub(&e.to_string()),
                    })?;
            Ok((Arc::new(store), base))
        }
        ObjectStorage::Azure {
            account,
            container,
            endpoint,
            ..
        } => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_account(account)
                .with_container_name(container)
                .with_retry(retry);
            for (k, v) in timeouts {
                b = b.with_config(AzureConfigKey::Client(k), v);
            }
            if let Some(e) = endpoint {
                b = b.with_endpoint(e.clone());
            }
            #[cfg(test)]
            if let Some(key) = testenv::AZURE_KEY.with(|k| k.borrow().clone()) {
                b = b.with_access_key(key);
            }
            let emulator = b
                .get_config_value(&AzureConfigKey::UseEmulator)
                .is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes" | "on"));
            // The account URL in effect: Azurite's (object_store adds the account to it),
            // ours, or Azure's.
            let effective = if emulator {
                let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
                    .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
                Some(format!("{}/{account}", url.trim_end_matches('/')))
            } else {
                b.get_config_value(&AzureConfigKey::Endpoint)
            };
            let base = match &effective {
                Some(e) => format!("{}/{container}", without_secrets(e.trim_end_matches('/'))),
                None => format!("https://{account}.blob.core.windows.net/{container}"),
            };
            let ctx = || ErrorContext::new(Operation::Open, None, None, base.clone());
            check_name("account", account, ctx)?;
            check_name("container", container, ctx)?;
            let allow_http = match &effective {
                Some(e) => check_endpoint(e, ctx)?,
                None => false,
            };
            let store =
                b.with_allow_http(allow_http)
                    .build()
                    .map_err(|e| BackendError::Misconfigured {
                        ctx: ctx(),
                        message: scrub(&e.to_string()),
                    })?;
            Ok((Arc::new(store), base))
        }
    }
}

/// A bucket, account or container name: not empty, nothing that could change the URL.
fn check_name(
    what: &str,
    name: &str,
    ctx: impl FnOnce() -> ErrorContext,
) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        return Ok(());
    }
    Err(BackendError::Misconfigured {
        ctx: ctx(),
        message: format!(
            "the {what} name {:?} is not valid: letters, digits, '-', '.' and '_' only",
            crate::fmt::echo(name)
        ),
    })
}

/// Checks an endpoint URL: http or https, no credentials or query in it, plain http only
/// to this machine (an emulator, a local gateway). True when http is to be allowed.
fn check_endpoint(endpoint: &str, ctx: impl Fn() -> ErrorContext) -> Result<bool, BackendError> {
    let refuse = |message: String| BackendError::Misconfigured {
        ctx: ctx(),
        message,
    };
    let url = url::Url::parse(endpoint).map_err(|e| {
        refuse(format!(
            "the endpoint {} is not a URL: {e}",
            crate::fmt::echo(&without_secrets(endpoint))
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "the endpoint has credentials in it: remove them, credentials come only from the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, …)".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse(format!(
            "the endpoint {} has a query or fragment: give the service's URL only (a SAS token belongs in AZURE_STORAGE_SAS_KEY)",
            crate::fmt::echo(&without_secrets(endpoint))
        )));
    }
    match url.scheme() {
        "https" => Ok(false),
        "http" if is_loopback(&url) => Ok(true),
        "http" => Err(refuse(format!(
            "the endpoint {} is plain http to another machine: credentials and vault data would cross the network unprotected. Use https (plain http is accepted only to 127.0.0.1, ::1 or localhost)",
            crate::fmt::echo(endpoint)
        ))),
        other => Err(refuse(format!(
            "the endpoint's scheme {:?} is neither https nor http",
            crate::fmt::echo(other)
        ))),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `url` without user info and query (where credentials and SAS tokens live); as given
/// when it is no URL.
fn without_secrets(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.as_str().trim_end_matches('/').to_string()
        }
        _ => scrub(url),
    }
}

/// A message from a client or service, safe to show: every URL in it loses its query
/// string (SAS tokens, presigned signatures) and user info; one line; at most 500
/// characters.
fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(600));
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match word.find("://") {
            Some(at) => {
                // Up to the scheme, then the URL without its query.
                let start = word[..at]
                    .rfind(|c: char| !c.is_ascii_alphanumeric())
                    .map_or(0, |i| i + 1);
                out.push_str(&word[..start]);
                let url = &word[start..];
                let end = url
                    .find(['"', '\'', ')', '>', '<', ','])
                    .unwrap_or(url.len());
                let (url, tail) = url.split_at(end);
                let mut cut = url.split(['?', '#']).next().unwrap_or("").to_string();
                if let Some(scheme_end) = cut.find("://") {
                    let host_start = scheme_end + 3;
                    if let Some(at) = cut[host_start..].find('@') {
                        let slash = cut[host_start..].find('/').unwrap_or(usize::MAX);
                        if at < slash {
                            cut.replace_range(host_start..host_start + at + 1, "");
                        }
                    }
                }
                out.push_str(&cut);
                out.push_str(tail);
            }
            None => out.push_str(word),
        }
    }
    if out.chars().count() > 500 {
        out = out.chars().take(500).collect::<String>() + "…";
    }
    out
}

/// What a failed request says, in words safe to show.
#[derive(Debug, PartialEq, Eq)]
struct Described {
    /// The HTTP status the service answered with (None: no answer).
    status: Option<u16>,
    /// The service's error code (`NoSuchBucket`, `AuthorizationFailure`, …).
    code: Option<String>,
    /// What to show: the service's code and message, or what went wrong on the way.
    message: String,
    /// The request got no answer (connection, timeout, dropped).
    transport: bool,
}

/// Reads an object_store error: object_store does not expose the HTTP status or the body of
/// its errors (its `RetryError` is private), so they are read from its messages (the form
/// is pinned by tests), and only the service's error code and message are kept: bodies can
/// echo signatures (Azure's `AuthenticationErrorDetail`, S3's `SignatureDoesNotMatch`).
fn describe(e: &object_store::Error) -> Described {
    const STATUS: &str = "Server returned non-2xx status code: ";
    const IN_BODY: &str = "Server returned error response: ";
    let mut status = None;
    let mut body = None;
    let mut transport = None;
    let mut retried = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if retried.is_none() {
            retried = retries_of(&text);
        }
        if let Some(rest) = text.strip_prefix(STATUS) {
            status = rest.get(..3).and_then(|s| s.parse::<u16>().ok());
            body = Some(rest.split_once(": ").map_or("", |(_, b)| b).to_string());
            break;
        }
        if let Some(rest) = text.strip_prefix(IN_BODY) {
            body = Some(rest.to_string());
            break;
        }
        if let Some(h) = err.downcast_ref::<HttpError>() {
            transport = Some((h.kind(), chain_below(err)));
            break;
        }
        cur = err.source();
    }
    let retried = retried.map(|r| format!(" ({r})")).unwrap_or_default();
    if let Some((kind, below)) = transport {
        let what = match kind {
            HttpErrorKind::Connect => "could not connect",
            HttpErrorKind::Timeout => "timed out",
            HttpErrorKind::Interrupted => "the connection was cut",
            HttpErrorKind::Request => "the request could not be sent",
            HttpErrorKind::Decode => "the answer could not be read",
            _ => "the request failed",
        };
        return Described {
            status: None,
            code: None,
            message: scrub(&format!("{what}: {below}{retried}")),
            transport: true,
        };
    }
    if let Some(body) = body {
        let code = xml_field(&body, "Code");
        let message = match (&code, xml_field(&body, "Message")) {
            (Some(c), Some(m)) => format!("{c}: {}", m.lines().next().unwrap_or("").trim()),
            (Some(c), None) => c.clone(),
            (None, _) if body.trim().is_empty() => match status {
                Some(s) => http_reason(s).to_string(),
                None => "an error".into(),
            },
            (None, _) => body.clone(),
        };
        return Described {
            status,
            code,
            message: scrub(&format!("{message}{retried}")),
            transport: false,
        };
    }
    // Nothing from the wire (a header that could not be parsed, a credential provider's
    // own error): the message itself, without URLs' queries.
    Described {
        status: None,
        code: None,
        message: scrub(&e.to_string()),
        transport: false,
    }
}

/// "gave up after 8 retries in 1.2s" from the message of object_store's retry loop (None
/// when the request was not retried).
fn retries_of(text: &str) -> Option<String> {
    let rest = text.strip_prefix("Error performing ")?;
    let (head, _) = rest.split_once(" - ")?;
    let (_, tail) = head.split_once(" in ")?;
    let (elapsed, after) = tail.split_once(", after ")?;
    let after = after.split(',').next()?.trim();
    // A Debug duration ("48.833901ms", "8.062851535s"), to one decimal.
    let elapsed = elapsed.trim();
    let unit_at = elapsed
        .rfind(|c: char| c.is_ascii_digit())
        .map_or(elapsed.len(), |i| i + 1);
    let (number, unit) = elapsed.split_at(unit_at);
    let number = match number.split_once('.') {
        Some((whole, frac)) => format!("{whole}.{}", frac.get(..1).unwrap_or("0")),
        None => number.to_string(),
    };
    Some(format!("gave up after {after} in {number}{unit}"))
}

/// The messages of `e`'s causes, joined (reqwest and hyper say what happened in layers).
fn chain_below(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// The text of `<name>…</name>` in an XML error body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find(&close)?;
    let v = body[start..start + len].trim();
    (!v.is_empty()).then(|| v.to_string())
}

fn http_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "an error",
    }
}

/// Service error codes that mean the missing thing is the bucket or container (a 404 that
/// is no missing object).
const MISSING_CONTAINER: [&str; 3] = ["NoSuchBucket", "ContainerNotFound", "ContainerBeingDeleted"];

/// Whether a service error says that the storage is full: quotas (S3-compatible services,
/// Azure's account limits) and 507.
fn is_full(d: &Described) -> bool {
    d.status == Some(507)
        || d.code.as_deref().is_some_and(|c| {
            c.contains("Quota")
                || c.contains("StorageFull")
                || c.contains("InsufficientStorage")
                || c == "AccountLimitExceeded"
        })
}

/// Classifies an object_store error (see [`Actor`](super::Actor)): a missing object is the
/// caller's; credentials, quotas, the network and the service are the administrator's.
fn classify(ctx: ErrorContext, e: object_store::Error) -> BackendError {
    let d = describe(&e);
    let missing_container = d
        .code
        .as_deref()
        .is_some_and(|c| MISSING_CONTAINER.contains(&c));
    // object_store maps statuses to its variants for some requests only (a listing's 403
    // is `Generic`): the status decides where there is one.
    let not_found = matches!(e, object_store::Error::NotFound { .. }) || d.status == Some(404);
    let denied = matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) || matches!(d.status, Some(401 | 403));
    if is_full(&d) {
        return BackendError::Full {
            ctx,
            source: d.message.into(),
        };
    }
    match d.status {
        _ if not_found && !missing_container => BackendError::NotFound { ctx },
        _ if denied => BackendError::PermissionDenied {
            ctx,
            source: d.message.into(),
        },
        _ if d.transport => BackendError::Unreachable {
            ctx,
            message: d.message,
        },
        Some(status) => BackendError::Remote {
            ctx,
            status,
            message: d.message,
        },
        None => BackendError::Io {
            ctx,
            source: d.message.into(),
        },
    }
}

#[cfg(test)]
#[path = "../../../tests/support/emulators.rs"]
mod emulators;

#[cfg(test)]
pub(crate) mod testenv {
    //! Emulators for the tests: moto's S3 server and Azurite, found through
    //! `VMVAULT_TEST_S3_ENDPOINT` and `VMVAULT_TEST_AZURE_ENDPOINT`, credentials from the
    //! usual environment (see `.ci/run`). Each test gets a fresh random prefix in a bucket
    //! or container made on first use.

    use super::*;
    use std::sync::OnceLock;

    /// The bucket and container the tests use.
    pub const TEST_BUCKET: &str = "vmvault-test";

    thread_local! {
        /// An Azure account key that replaces the environment's for backends opened on this
        /// thread (tests of wrong credentials; the environment is shared by all tests).
        pub static AZURE_KEY: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }

    /// A fresh random prefix.
    pub fn fresh_prefix() -> String {
        format!("t-{}", uuid::Uuid::new_v4().simple())
    }

    /// The S3 emulator's settings for a fresh prefix; None (after saying why, or a panic
    /// under VMVAULT_REQUIRE_TOOLS=1) when it is not set up.
    pub fn s3() -> Option<ObjectStorage> {
        let endpoint = endpoint("VMVAULT_TEST_S3_ENDPOINT", "an S3 server (moto)")?;
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            || std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none()
        {
            crate::testing::skip(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (moto takes any, e.g. test)",
            );
            return None;
        }
        static MADE: OnceLock<Result<(), String>> = OnceLock::new();
        let made = MADE.get_or_init(|| emulators::create_bucket(&endpoint, TEST_BUCKET));
        if let Err(e) = made {
            panic!("the S3 emulator at {endpoint} does not work: {e}");
        }
        Some(ObjectStorage::S3 {
            bucket: TEST_BUCKET.into(),
            prefix: Some(format!("vaults/{}", fresh_prefix())),
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
        })
    }

    /// The Azure emulator's settings for a fresh prefix, as [`s3`].
    pub fn azure() -> Option<ObjectStorage> {
        let endpoint = endpoint(
            "VMVAULT_TEST_AZURE_ENDPOINT",
            "an Azure Blob server (Azurite)",
        )?;
        let Ok(key) = std::env::var("AZURE_STORAGE_ACCOUNT_KEY") else {
            crate::testing::skip(
                "AZURE_STORAGE_ACCOUNT_KEY is not set (Azurite's devstoreaccount1 key)",
            );
            return None;
        };
        let account = endpoint
            .rsplit('/')
            .next()
            .filter(|a| !a.is_empty() && !a.contains(':'))
            .unwrap_or("devstoreaccount1")
            .to_string();
        static MADE: OnceLock<Result<(), String>> = OnceLock::new();
        let made = MADE.get_or_init(|| create_container(&endpoint, &account, &key));
        if let Err(e) = made {
            panic!("the Azure emulator at {endpoint} does not work: {e}");
        }
        Some(ObjectStorage::Azure {
            account,
            container: TEST_BUCKET.into(),
            prefix: Some(format!("vaults/{}", fresh_prefix())),
            endpoint: Some(endpoint),
        })
    }

    fn endpoint(var: &str, what: &str) -> Option<String> {
        match std::env::var(var) {
            Ok(e) if !e.is_empty() => Some(e.trim_end_matches('/').to_string()),
            _ => {
                crate::testing::skip(&format!("{var} is not set: no {what} to test against"));
                None
            }
        }
    }

    use super::emulators;

    fn create_container(endpoint: &str, account: &str, key: &str) -> Result<(), String> {
        emulators::create_container(endpoint, account, key, TEST_BUCKET)
    }
}

#[cfg(test)]
mod tests {
    use super::testenv;
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn name(s: &str) -> ObjectName {
        ObjectName::new(s).unwrap()
    }

    #[derive(Debug, serde::Deserialize)]
    struct Vault {
        storage: ObjectStorage,
    }

    #[test]
    fn settings_parse_from_the_config_file() {
        let v: Vault = toml::from_str(
            r#"storage = { kind = "s3", bucket = "b", prefix = "vaults/x", endpoint = "http://127.0.0.1:9000", region = "us-east-1" }"#,
        )
        .unwrap();
        assert_eq!(
            v.storage,
            ObjectStorage::S3 {
                bucket: "b".into(),
                prefix: Some("vaults/x".into()),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
            }
        );
        let v: Vault =
            toml::from_str(r#"storage = { kind = "azure", account = "a", container = "c" }"#)
                .unwrap();
        assert_eq!(
            v.storage,
            ObjectStorage::Azure {
                account: "a".into(),
                container: "c".into(),
                prefix: None,
                endpoint: None,
            }
        );
        for bad in [
            r#"storage = { kind = "s3", bucket = "b", secret_access_key = "x" }"#,
            r#"storage = { kind = "azure", account = "a", container = "c", access_key = "x" }"#,
            r#"storage = { kind = "gcs", bucket = "b" }"#,
            r#"storage = { kind = "s3" }"#,
        ] {
            let e = toml::from_str::<Vault>(bad).unwrap_err().to_string();
            assert!(e.contains("unknown") || e.contains("missing"), "{bad}: {e}");
        }
    }

    #[test]
    fn endpoints_are_https_or_loopback_http_without_secrets() {
        let ctx = || ErrorContext::new(Operation::Open, None, None, "s3://b");
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000",
            "http://[::1]:9000",
            "http://127.0.0.2",
        ] {
            assert!(check_endpoint(ok, ctx).unwrap(), "{ok}");
        }
        assert!(!check_endpoint("https://s3.example.net", ctx).unwrap());
        for (bad, words) in [
            ("http://s3.example.net", "plain http to another machine"),
            ("http://10.0.0.1:9000", "plain http"),
            ("https://key:secret@s3.example.net", "credentials in it"),
            ("https://s3.example.net/?sig=abc", "query"),
            ("ftp://s3.example.net", "neither https nor http"),
            ("not a url", "not a URL"),
        ] {
            let e = check_endpoint(bad, ctx).unwrap_err();
            let s = e.to_string();
            assert!(matches!(e, BackendError::Misconfigured { .. }), "{s}");
            assert!(s.contains(words), "{bad}: {s}");
            assert!(!s.contains("secret") && !s.contains("sig=abc"), "{s}");
            assert_eq!(e.details().code, "VaultStorageMisconfigured");
        }
    }

    #[test]
    fn opening_refuses_bad_settings_before_any_request() {
        let spec = |endpoint: &str, prefix: &str| ObjectStorage::S3 {
            bucket: "b".into(),
            prefix: Some(prefix.into()),
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
        };
        let e = open(&spec("http://s3.example.net", "v")).unwrap_err();
        assert!(e.to_string().contains("plain http"), "{e}");
        let e = open(&spec("http://127.0.0.1:1", "a//b")).unwrap_err();
        assert!(e.to_string().contains("prefix"), "{e}");
        let e = open(&ObjectStorage::Azure {
            account: "a/b".into(),
            container: "c".into(),
            prefix: None,
            endpoint: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("account name"), "{e}");
    }

    #[test]
    fn messages_lose_queries_and_user_info() {
        let s = scrub(
            "error sending request for url (https://acct.blob.core.windows.net/c/k?sv=2021&sig=SECRET) and http://u:p@h/x?X-Amz-Signature=abc",
        );
        assert_eq!(
            s,
            "error sending request for url (https://acct.blob.core.windows.net/c/k) and http://h/x"
        );
        assert_eq!(
            without_secrets("https://u:p@h.example/acct?sig=1"),
            "https://h.example/acct"
        );
        assert!(scrub(&"x".repeat(10_000)).chars().count() <= 501);
    }

    #[test]
    fn retry_messages_are_read() {
        assert_eq!(
            retries_of("Error performing PUT http://127.0.0.1:1/b/k in 1.502s, after 8 retries, max_retries: 8, retry_timeout: 180s  - HTTP error: x").as_deref(),
            Some("gave up after 8 retries in 1.5s")
        );
        assert_eq!(
            retries_of("Error performing GET http://h/b/k in 20ms - Server returned"),
            None
        );
        assert_eq!(
            retries_of("Error performing GET http://h/b/k in 48.833901ms, after 3 retries, max_retries: 3 - x").as_deref(),
            Some("gave up after 3 retries in 48.8ms")
        );
        assert_eq!(retries_of("something else"), None);
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist\nRequestId:1</Message><Signature>x</Signature></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml_field(body, "Nope"), None);
    }

    #[test]
    fn keys_follow_the_layout() {
        // A backend without a runtime or a reachable store is enough for key arithmetic.
        let b = offline("vaults/x");
        let chunk = name("abcdef");
        assert_eq!(
            b.key(ObjectKind::Chunk, &chunk).as_ref(),
            "vaults/x/chunk/ab/abcdef"
        );
        assert_eq!(
            b.key(ObjectKind::Index, &name("p.d0")).as_ref(),
            "vaults/x/index/p.d0"
        );
        assert_eq!(
            b.damaged_key(ObjectKind::Chunk, &chunk).as_ref(),
            "vaults/x/damaged/chunk/abcdef"
        );
        assert_eq!(
            b.locate(ObjectKind::Chunk, &chunk),
            "s3://b/vaults/x/chunk/ab/abcdef"
        );
        let at = |k: &str| Key::parse(k).unwrap();
        let c = ObjectKind::Chunk;
        assert_eq!(b.name_at(c, &at("vaults/x/chunk/ab/abcdef")), Some(chunk));
        for stray in [
            "vaults/x/chunk/cd/abcdef",
            "vaults/x/chunk/abcdef",
            "vaults/x/chunk/ab/abzz",
            "vaults/x/chunk/ab/x/abcdef",
            "vaults/x/damaged/chunk/abcdef",
        ] {
            assert_eq!(b.name_at(c, &at(stray)), None, "{stray}");
        }
        let m = ObjectKind::Manifest;
        assert_eq!(b.name_at(m, &at("vaults/x/manifest/p1")), Some(name("p1")));
        assert_eq!(b.name_at(m, &at("vaults/x/manifest/P1")), None);
        assert_eq!(b.name_at(m, &at("vaults/x/manifest/a/b")), None);
        assert_eq!(b.name_at(ObjectKind::Index, &at("vaults/x/index/p")), None);
    }

    /// A backend whose store is never asked anything (an unreachable endpoint).
    fn offline(prefix: &str) -> ObjectStoreBackend {
        let spec = ObjectStorage::S3 {
            bucket: "b".into(),
            prefix: Some(prefix.into()),
            endpoint: None,
            region: Some("us-east-1".into()),
        };
        let (store, _) = build_store(&spec, &Tuning::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        ObjectStoreBackend {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            store,
            limit: Arc::new(Semaphore::new(1)),
            root: Key::parse(prefix).unwrap(),
            base: "s3://b".into(),
            location: format!("s3://b/{prefix}"),
        }
    }

    #[test]
    fn dropping_inside_a_runtime_does_not_panic() {
        let b = offline("v");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move { drop(b) });
        // And its Debug never shows the client's configuration.
        let s = format!("{:?}", offline("v"));
        assert_eq!(s, "ObjectStoreBackend { location: \"s3://b/v\", .. }");
    }

    /// Fast retries, short timeouts.
    fn quick() -> Tuning {
        Tuning {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(2),
            max_retries: 3,
            retry_timeout: Duration::from_secs(10),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            concurrency: 4,
        }
    }

    fn with_endpoint(spec: ObjectStorage, endpoint: String) -> ObjectStorage {
        match spec {
            ObjectStorage::S3 {
                bucket,
                prefix,
                region,
                ..
            } => ObjectStorage::S3 {
                bucket,
                prefix,
                endpoint: Some(endpoint),
                region,
            },
            azure => azure,
        }
    }

    /// A proxy in front of `target` (host:port) that answers the first `fail` requests
    /// with 503 (each on its own connection, closed after it) and relays the rest. Returns
    /// its address and the count of requests it failed.
    fn flaky_proxy(target: String, fail: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let failed = Arc::new(AtomicUsize::new(0));
        let count = failed.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                if count.load(Ordering::SeqCst) < fail {
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        // Read the request head and body, then refuse it.
                        let _ = read_request(&mut client);
                        let _ = client.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 79\r\nConnection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>Please reduce your rate.</Message></Error>",
                        );
                    });
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(&target) else {
                    return;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        (addr, failed)
    }

    /// Reads one HTTP request (head and a Content-Length body).
    fn read_request(s: &mut TcpStream) -> std::io::Result<()> {
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            data.extend_from_slice(&buf[..n]);
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while data.len() < end + 4 + len {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                return Ok(());
            }
        }
    }

    #[test]
    fn server_errors_and_throttling_are_retried() {
        let Some(spec) = testenv::s3() else { return };
        let ObjectStorage::S3 {
            endpoint: Some(endpoint),
            ..
        } = &spec
        else {
            unreachable!()
        };
        let target = url::Url::parse(endpoint).unwrap();
        let target = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port_or_known_default().unwrap()
        );
        // The open's listing and the put each meet 503s, fewer than the retries.
        let (proxy, failed) = flaky_proxy(target.clone(), 2);
        let b = ObjectStoreBackend::open(
            &with_endpoint(spec.clone(), format!("http://{proxy}")),
            &quick(),
        )
        .unwrap();
        assert_eq!(failed.load(Ordering::SeqCst), 2);
        let data = crate::vault::store::testutil::random(9, 100_000);
        let n = name(&blake3::hash(&data).to_hex());
        b.put(ObjectKind::Chunk, &n, &data).unwrap();
        assert_eq!(b.get(ObjectKind::Chunk, &n).unwrap(), data);
        // More 503s than retries: a clear error, the service's own words.
        let (proxy, _) = flaky_proxy(target, 1000);
        let e = ObjectStoreBackend::open(&with_endpoint(spec, format!("http://{proxy}")), &quick())
            .unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, BackendError::Remote { status: 503, .. }), "{s}");
        assert!(s.contains("SlowDown: Please reduce your rate"), "{s}");
        assert!(s.contains("gave up after 3 retries"), "{s}");
        assert_eq!(e.details().code, "VaultStorageServiceError");
    }

    #[test]
    fn a_dead_or_silent_endpoint_is_a_clear_error_in_bounded_time() {
        let Some(spec) = testenv::s3() else { return };
        // Nothing listens there.
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let started = std::time::Instant::now();
        let e = ObjectStoreBackend::open(
            &with_endpoint(spec.clone(), format!("http://127.0.0.1:{port}")),
            &quick(),
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, BackendError::Unreachable { .. }), "{s}");
        assert!(s.contains("could not connect"), "{s}");
        assert!(
            s.contains(&format!("http://127.0.0.1:{port}/vmvault-test")),
            "{s}"
        );
        assert_eq!(e.details().code, "VaultStorageUnreachable");
        assert_eq!(e.actor(), crate::vault::backend::Actor::Administrator);
        assert!(started.elapsed() < Duration::from_secs(10), "{s}");
        // Something listens but never answers: the request timeout, retried, then given up.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let started = std::time::Instant::now();
        let e = ObjectStoreBackend::open(&with_endpoint(spec, format!("http://{addr}")), &quick())
            .unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, BackendError::Unreachable { .. }), "{s}");
        assert!(s.contains("timed out"), "{s}");
        assert!(started.elapsed() < Duration::from_secs(20), "{s}");
        drop(silent);
    }

    #[test]
    fn a_missing_bucket_is_named_at_open() {
        let Some(ObjectStorage::S3 {
            endpoint, region, ..
        }) = testenv::s3()
        else {
            return;
        };
        let spec = ObjectStorage::S3 {
            bucket: format!("missing-{}", testenv::fresh_prefix()),
            prefix: None,
            endpoint,
            region,
        };
        let e = ObjectStoreBackend::open(&spec, &quick()).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, BackendError::Remote { status: 404, .. }), "{s}");
        assert!(s.contains("NoSuchBucket"), "{s}");
        assert!(
            s.starts_with("opening the vault's storage at http://"),
            "{s}"
        );
    }

    #[test]
    fn a_missing_container_is_named_at_open() {
        let Some(ObjectStorage::Azure {
            account, endpoint, ..
        }) = testenv::azure()
        else {
            return;
        };
        let spec = ObjectStorage::Azure {
            account,
            container: format!("missing-{}", testenv::fresh_prefix()),
            prefix: None,
            endpoint,
        };
        let e = ObjectStoreBackend::open(&spec, &quick()).unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, BackendError::Remote { status: 404, .. }), "{s}");
        assert!(s.contains("ContainerNotFound"), "{s}");
    }

    #[test]
    fn strays_are_named_and_set_aside_objects_are_neither() {
        for spec in [testenv::s3(), testenv::azure()].into_iter().flatten() {
            let b = ObjectStoreBackend::open(&spec, &quick()).unwrap();
            let chunk = name("abcd");
            b.put(ObjectKind::Chunk, &chunk, b"x").unwrap();
            // Keys vmvault never writes, planted beside the objects.
            let store = b.store.clone();
            let root = b.root.clone();
            for k in [
                "chunk/cd/abcd",
                "chunk/ab/Not-Hex",
                "item/a/b",
                "item/UPPER",
            ] {
                let (store, key) = (store.clone(), Key::parse(format!("{root}/{k}")).unwrap());
                b.run(async move { store.put(&key, "x".into()).await })
                    .unwrap()
                    .unwrap();
            }
            let listed: Vec<_> = b.list(ObjectKind::Chunk).map(|r| r.unwrap().name).collect();
            assert_eq!(listed, vec![chunk.clone()]);
            assert_eq!(b.list(ObjectKind::Item).count(), 0);
            let strays = b.strays(ObjectKind::Chunk).unwrap();
            assert_eq!(strays.len(), 2, "{strays:?}");
            assert!(strays[0].at.ends_with("/chunk/ab/Not-Hex"), "{strays:?}");
            assert!(strays[1].at.ends_with("/chunk/cd/abcd"), "{strays:?}");
            assert_eq!(b.strays(ObjectKind::Item).unwrap().len(), 2);
            assert!(b.set_aside(ObjectKind::Chunk, &chunk).unwrap());
            assert!(b.strays(ObjectKind::Chunk).unwrap().len() == 2);
            assert_eq!(b.list(ObjectKind::Chunk).count(), 0);
            // Kept for inspection.
            let (store, key) = (store.clone(), b.damaged_key(ObjectKind::Chunk, &chunk));
            let kept = b.run(async move { store.get(&key).await?.bytes().await });
            assert_eq!(&kept.unwrap().unwrap()[..], b"x");
        }
    }

    #[test]
    fn wrong_credentials_are_access_denied_and_never_shown() {
        let Some(spec) = testenv::azure() else { return };
        // A valid key, of another account.
        let wrong = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";
        testenv::AZURE_KEY.with(|k| *k.borrow_mut() = Some(wrong.into()));
        let opened = ObjectStoreBackend::open(&spec, &quick());
        testenv::AZURE_KEY.with(|k| *k.borrow_mut() = None);
        let e = opened.unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, BackendError::PermissionDenied { .. }), "{s}");
        assert!(s.contains("access denied: AuthorizationFailure"), "{s}");
        assert_eq!(e.details().code, "VaultStorageAccessDenied");
        let d = e.details();
        assert!(
            d.recommendations
                .iter()
                .any(|r| r.contains("AZURE_STORAGE_ACCOUNT_KEY")),
            "{d:?}"
        );
        // Neither the key nor the request's signature, nor what was signed.
        for secret in [wrong, "Signature", "SharedKey", "string to sign", "MAC"] {
            assert!(!s.contains(secret), "{secret}: {s}");
        }
    }

    #[test]
    fn a_listing_can_be_left_half_way() {
        let Some(spec) = testenv::s3() else { return };
        let b = ObjectStoreBackend::open(&spec, &quick()).unwrap();
        // More than a batch, so that a stream is still open after the first.
        let keys: Vec<Key> = (0..LIST_BATCH + 5)
            .map(|i| b.key(ObjectKind::Item, &name(&format!("i{i}"))))
            .collect();
        let store = b.store.clone();
        b.run(async move {
            futures_util::stream::iter(keys)
                .for_each_concurrent(16, |k| {
                    let store = store.clone();
                    async move {
                        store.put(&k, "x".into()).await.unwrap();
                    }
                })
                .await
        })
        .unwrap();
        let mut listing = b.list(ObjectKind::Item);
        assert!(listing.next().unwrap().is_ok());
        drop(listing);
        assert_eq!(b.list(ObjectKind::Item).count(), LIST_BATCH + 5);
        let mut pages = b.scan(ObjectKind::Item);
        assert_eq!(pages.next().unwrap().unwrap().len(), LIST_BATCH);
        assert!(pages.stream.is_some());
        drop(pages);
        drop(b);
    }

    #[test]
    fn requests_wait_for_the_backend_from_any_thread() {
        let Some(spec) = testenv::s3() else { return };
        let b = Arc::new(ObjectStoreBackend::open(&spec, &quick()).unwrap());
        // From a tokio blocking thread, and from inside another runtime's worker.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let b2 = b.clone();
        rt.block_on(async move {
            tokio::task::spawn_blocking(move || b2.put(ObjectKind::Item, &name("i"), b"x"))
                .await
                .unwrap()
                .unwrap();
        });
        let b3 = b.clone();
        let got = rt.block_on(async move { b3.get(ObjectKind::Item, &name("i")) });
        assert_eq!(got.unwrap(), b"x");
        // The last reference dropped inside a runtime.
        rt.block_on(async move { drop(b) });
    }
}
