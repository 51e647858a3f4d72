//! Where VMs come from. A provider discovers VMs, registers them (checks that backup can
//! reach them), and takes consistent snapshots whose disks the vault reads.
//!
//! Everything downstream of this trait (chunking, storage, restore) is the same for every
//! source: the simulator (`sim`), a folder of disk images (`images`), a libvirt host
//! (`libvirt`).

use crate::cancel::{CancelToken, Cancelled};
use crate::model::{Consistency, DiskInfo, ErrorDetails, Extent, Vm};
use chrono::{DateTime, Utc};

/// An error of a source, with details an administrator can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Failed(ErrorDetails),
    #[error("cancelled")]
    Cancelled,
}

impl From<Cancelled> for ProviderError {
    fn from(_: Cancelled) -> Self {
        ProviderError::Cancelled
    }
}

impl ProviderError {
    pub fn new(code: &str, title: &str, message: impl Into<String>) -> Self {
        ProviderError::Failed(ErrorDetails::new(code, title, message))
    }
    pub fn recommend(self, r: impl Into<String>) -> Self {
        match self {
            ProviderError::Failed(d) => ProviderError::Failed(d.recommend(r)),
            c => c,
        }
    }
    /// An I/O error while reading a disk, with what was being read.
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        ProviderError::new(
            "DiskReadError",
            "Could not read the disk",
            format!("{}: {e}", context.into()),
        )
    }
    /// The details to record on a job.
    pub fn details(&self) -> ErrorDetails {
        match self {
            ProviderError::Failed(d) => d.clone(),
            ProviderError::Cancelled => ErrorDetails::new(
                "OperationCancelled",
                "Cancelled",
                "the operation was cancelled",
            ),
        }
    }
}

/// What a discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The VMs of the source that can be read.
    pub vms: Vec<Vm>,
    /// VMs that are there but cannot be read, each with why. They are listed (a VM the
    /// vault knows is not "not found" because its image broke) and each is a warning of
    /// the Discover job; registering or backing one up fails with the same error.
    pub unreadable: Vec<(Vm, ErrorDetails)>,
    /// Source ids that are no longer VMs of their own, each with why (an image that
    /// became the backing file of another): a vault item with such an id is marked not
    /// found with this error, which its backups then report.
    pub absorbed: Vec<(String, ErrorDetails)>,
    /// Other things the Discover job warns about.
    pub warnings: Vec<String>,
}

impl Discovery {
    /// A discovery of readable VMs only.
    pub fn of(vms: Vec<Vm>) -> Discovery {
        Discovery {
            vms,
            ..Default::default()
        }
    }
}

/// Error code of a VM that is no longer one of its own (see [`Discovery::absorbed`]).
pub const VM_ABSORBED: &str = "UserErrorVmPartOfAnother";

/// What registration found out about a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationReport {
    /// Facts worth showing ("guest agent: responding", "2 disks readable").
    pub findings: Vec<String>,
    /// Things that work but degrade backups (e.g. crash-consistent only).
    pub warnings: Vec<String>,
}

/// A source of VMs.
pub trait Provider: Send + Sync {
    /// Short name of the source kind: `simulated`, `images`, `libvirt`.
    fn kind(&self) -> &'static str;

    /// One line for people: what this source is.
    fn describe(&self) -> String;

    /// Lists every VM of the source (all regions). One VM that cannot be read does not
    /// fail the discovery: it is listed in `Discovery::unreadable` with its error.
    fn discover(&self, cancel: &CancelToken) -> Result<Discovery, ProviderError>;

    /// Checks the VM can be backed up (in Azure: installs the backup extension).
    fn register(&self, vm: &Vm, cancel: &CancelToken) -> Result<RegistrationReport, ProviderError>;

    /// Takes a consistent point-in-time snapshot of the VM's disks. `at` is the vault's
    /// clock (simulated time for the simulator). `since` is the `cbt_token` of the vault's
    /// newest recovery point of this VM (None: no point, or one without a token): a source
    /// that tracks changes keeps what it needs to answer `changed_extents(since)` and may
    /// drop its tracking state for any other token. The snapshot is released when dropped.
    fn snapshot(
        &self,
        vm: &Vm,
        at: DateTime<Utc>,
        since: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError>;
}

/// A consistent point in time of a VM's disks. Dropping it releases whatever the source
/// holds (an overlay, a frozen guest); `release` does the same and reports errors.
pub trait Snapshot: Send + Sync {
    fn consistency(&self) -> Consistency;

    /// Identifies this point in time for changed-block tracking; the vault stores it with
    /// the recovery point and hands it back as `since` next time. None: no tracking.
    fn cbt_token(&self) -> Option<String>;

    fn disks(&self) -> &[DiskInfo];

    fn open_disk(&self, index: u32) -> Result<Box<dyn DiskReader>, ProviderError>;

    /// What the backup job should warn about (e.g. a disk read while a running VM writes
    /// it). Empty by default.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Releases the snapshot, reporting a failure to clean up.
    fn release(self: Box<Self>) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Reads one disk of a snapshot. Methods take `&self`: the vault reads from several
/// threads at once.
pub trait DiskReader: Send + Sync {
    fn capacity(&self) -> u64;

    /// Sorted, non-overlapping byte ranges that may hold data. Everything else reads as
    /// zeros and is never read.
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError>;

    /// Byte ranges that may have changed since the snapshot whose `cbt_token` was `since`
    /// (sorted, non-overlapping). `None`: unknown (read every allocated extent).
    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError>;

    /// Fills `buf` with the bytes at `offset` (must lie within the capacity).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError>;

    /// The bytes at `offset..offset + len` without a copy, where the reader can offer them
    /// (raw image files are mapped from the page cache); `None` where it cannot: use
    /// `read_at`. The range must be allocated and within the capacity. A view may change
    /// while it lives if something writes the disk, so callers copy what they store.
    fn view_at(&self, _offset: u64, _len: usize) -> Option<DiskView<'_>> {
        None
    }
}

pub use view::{DiskView, MappedBytes};

mod view;

pub mod chain;
pub mod images;
pub mod libvirt;
pub mod qemu;
pub mod sim;
pub mod supervise;
