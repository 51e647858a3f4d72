//! Where VMs come from. A provider discovers VMs, registers them (checks that backup can
//! reach them), and takes consistent snapshots whose disks the vault reads.
//!
//! Everything downstream of this trait (chunking, storage, restore) is the same for every
//! source: the simulator (`sim`), a folder of disk images (`images`), a libvirt host
//! (`libvirt`).

use crate::cancel::CancelToken;
use crate::model::{Consistency, DiskInfo, ErrorDetails, Vm};
use chrono::{DateTime, Utc};

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

    /// What the source says the VM is at this point (its definition, its disks' formats),
    /// kept with the recovery point. Default: nothing beyond the disks.
    fn definition(&self) -> crate::model::VmDefinition {
        crate::model::VmDefinition::default()
    }

    /// Releases the snapshot, reporting a failure to clean up.
    fn release(self: Box<Self>) -> Result<(), ProviderError> {
        Ok(())
    }
}

pub use crate::disk::{DiskReader, DiskView, MappedBytes, ProviderError};

pub mod chain;
pub mod images;
pub mod libvirt;
pub mod qemu;
pub mod sim;
pub mod supervise;
