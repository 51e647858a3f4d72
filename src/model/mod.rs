//! Plain data of the domain (see `DOMAIN.md`): virtual machines, items, jobs, recovery
//! points. No I/O here. Names follow Azure Backup's REST API so that an Azure administrator
//! recognises every word; serde names are the DOMAIN names (states) or snake_case (fields).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Defines a plain enum with its serde/Display names and a `parse` that accepts the
/// name case-insensitively (what a user types on a command line).
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The stable name (as in JSON output and in the catalog).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parses the stable name, ignoring ASCII case.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            }
            /// All names, for "expected one of …" messages.
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

named_enum!(
    /// Guest operating system family. `Unknown` when the source cannot tell (a disk image
    /// says nothing reliable about its guest; a libvirt domain without OS metadata).
    Os { Linux => "Linux", Windows => "Windows", Unknown => "Unknown" }
);

named_enum!(
    /// Power state of a VM as the source reports it.
    PowerState { Running => "Running", Stopped => "Stopped", Deallocated => "Deallocated" }
);

named_enum!(
    /// Registration of a VM with the vault (step 2 of the portal flow).
    RegistrationState {
        NotRegistered => "NotRegistered",
        Registering => "Registering",
        Registered => "Registered",
        RegistrationFailed => "RegistrationFailed",
    }
);

named_enum!(
    /// Protection state of an item (DOMAIN.md "Protection states").
    ProtectionState {
        NotProtected => "NotProtected",
        IrPending => "IRPending",
        Protected => "Protected",
        ProtectionError => "ProtectionError",
        ProtectionStopped => "ProtectionStopped",
        BackupsSuspended => "BackupsSuspended",
        SoftDeleted => "SoftDeleted",
    }
);

impl ProtectionState {
    /// True when the item is under a policy (scheduled backups run).
    pub fn is_under_policy(self) -> bool {
        matches!(
            self,
            ProtectionState::IrPending
                | ProtectionState::Protected
                | ProtectionState::ProtectionError
        )
    }
    /// Words for people ("Protected (pending initial backup)" for IRPending).
    pub fn label(self) -> &'static str {
        match self {
            ProtectionState::NotProtected => "Not protected",
            ProtectionState::IrPending => "Protected (pending initial backup)",
            ProtectionState::Protected => "Protected",
            ProtectionState::ProtectionError => "Protection error",
            ProtectionState::ProtectionStopped => "Protection stopped",
            ProtectionState::BackupsSuspended => "Backups suspended",
            ProtectionState::SoftDeleted => "Soft deleted",
        }
    }
}

named_enum!(
    /// Operations a job performs (Azure Backup's operation names, plus the vault's own).
    JobOperation {
        Discover => "Discover",
        Register => "Register",
        ConfigureBackup => "ConfigureBackup",
        Backup => "Backup",
        Restore => "Restore",
        DisableBackup => "DisableBackup",
        DeleteBackupData => "DeleteBackupData",
        Undelete => "Undelete",
        Prune => "Prune",
        Verify => "Verify",
        GarbageCollect => "GarbageCollect",
    }
);

named_enum!(
    /// Status of a job.
    JobStatus {
        InProgress => "InProgress",
        Completed => "Completed",
        CompletedWithWarnings => "CompletedWithWarnings",
        Failed => "Failed",
        Cancelling => "Cancelling",
        Cancelled => "Cancelled",
    }
);

impl JobStatus {
    /// A job in this status still runs.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::InProgress | JobStatus::Cancelling)
    }
}

named_enum!(
    /// Status of one task of a job.
    TaskStatus {
        NotStarted => "NotStarted",
        InProgress => "InProgress",
        Completed => "Completed",
        Failed => "Failed",
        Cancelled => "Cancelled",
        Skipped => "Skipped",
    }
);

named_enum!(
    /// Consistency of a recovery point (Azure's recovery point types).
    Consistency {
        ApplicationConsistent => "AppConsistent",
        FileSystemConsistent => "FileSystemConsistent",
        CrashConsistent => "CrashConsistent",
    }
);

named_enum!(
    /// How a recovery point came to be.
    PointKind { Scheduled => "scheduled", OnDemand => "on_demand" }
);

/// What went wrong, and what to do about it (Azure's error details).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetails {
    /// Stable machine-readable code, e.g. `UserErrorGuestAgentStatusUnavailable`.
    pub code: String,
    /// One-line title.
    pub title: String,
    /// What happened, with the names involved.
    pub message: String,
    /// What the administrator can do.
    pub recommendations: Vec<String>,
}

impl ErrorDetails {
    pub fn new(code: &str, title: &str, message: impl Into<String>) -> Self {
        ErrorDetails {
            code: code.to_string(),
            title: title.to_string(),
            message: message.into(),
            recommendations: Vec::new(),
        }
    }
    pub fn recommend(mut self, r: impl Into<String>) -> Self {
        self.recommendations.push(r.into());
        self
    }
}

impl fmt::Display for ErrorDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A byte range of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn new(offset: u64, len: u64) -> Self {
        Extent { offset, len }
    }
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// One disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// 0 = OS disk, then data disks in LUN order.
    pub index: u32,
    pub name: String,
    /// Capacity in bytes.
    pub capacity: u64,
}

/// What a source says a VM is at a point in time, beyond its disks' bytes: kept in the
/// recovery point's manifest, for a restore as a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDefinition {
    /// The source's own definition of the VM, where it has one: libvirt's domain XML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_xml: Option<String>,
    /// Disk number → the disk's image format at the source (`qcow2`, `raw`, `vmdk`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_formats: Vec<(u32, String)>,
}

/// A VM as a source reports it at discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// Stable identity within the source (e.g. `sim:/sales/web01`, a libvirt UUID).
    pub source_id: String,
    pub name: String,
    /// Resource group / cloud service; tells same-named VMs apart.
    pub cloud_service: String,
    pub region: String,
    pub os: Os,
    /// Size label, e.g. `Standard_D2s_v3` or `2 vCPU, 4 GiB`.
    pub size: String,
    pub power_state: PowerState,
    pub disks: Vec<DiskInfo>,
}

impl Vm {
    /// `cloud-service/name`, the unambiguous name used on command lines.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.cloud_service, self.name)
    }
    pub fn provisioned_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.capacity).sum()
    }
}

/// A VM known to the vault, with its registration and protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Vault-local identity (stable; equals the VM's source id).
    pub id: String,
    pub name: String,
    pub cloud_service: String,
    pub region: String,
    pub os: Os,
    pub size: String,
    pub power_state: PowerState,
    pub disks: Vec<DiskInfo>,
    pub registration_state: RegistrationState,
    pub protection_state: ProtectionState,
    pub policy: Option<String>,
    pub last_backup_time: Option<DateTime<Utc>>,
    pub last_backup_status: Option<JobStatus>,
    /// The VM was not seen at the last discovery.
    pub not_found: bool,
    pub discovered_at: DateTime<Utc>,
    /// When soft-deleted data is purged.
    pub purge_at: Option<DateTime<Utc>>,
    /// Scheduled instant of the last scheduled backup started for this item.
    pub last_scheduled_run: Option<DateTime<Utc>>,
    /// Last registration or protection error, if any.
    pub last_error: Option<ErrorDetails>,
}

impl Item {
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.cloud_service, self.name)
    }
    /// Needs an administrator's attention (the dashboard's third count).
    pub fn needs_attention(&self) -> bool {
        self.registration_state == RegistrationState::RegistrationFailed
            || self.protection_state == ProtectionState::ProtectionError
            || (self.not_found && self.protection_state.is_under_policy())
    }
}

/// One task of a job (e.g. *Take snapshot*, *Transfer data to vault*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTask {
    pub name: String,
    pub status: TaskStatus,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A job: one operation on one item (or on the vault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub operation: JobOperation,
    /// Item id, when the job is about one item.
    pub item_id: Option<String>,
    /// Display name of the item (`cloud-service/name`), or the vault's name.
    pub item: String,
    pub status: JobStatus,
    pub start_time: DateTime<Utc>,
    pub end_time: Option<DateTime<Utc>>,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub is_user_triggered: bool,
    pub tasks: Vec<JobTask>,
    pub error: Option<ErrorDetails>,
    /// Operation-specific facts (e.g. the recovery point created, restore target).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Job {
    /// Fraction done in 0..=1 (1 when finished).
    pub fn progress(&self) -> f64 {
        if !self.status.is_active() {
            return if self.status == JobStatus::Completed {
                1.0
            } else {
                self.raw_progress()
            };
        }
        self.raw_progress()
    }
    fn raw_progress(&self) -> f64 {
        if self.bytes_total == 0 {
            0.0
        } else {
            (self.bytes_done as f64 / self.bytes_total as f64).clamp(0.0, 1.0)
        }
    }
    pub fn duration(&self, now: DateTime<Utc>) -> chrono::Duration {
        self.end_time.unwrap_or(now) - self.start_time
    }
}

/// A recovery point of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    pub id: String,
    pub item_id: String,
    /// Snapshot time.
    pub time: DateTime<Utc>,
    /// The schedule instant this point stands for (retention is judged on it); equals
    /// `time` for on-demand points.
    pub scheduled_time: DateTime<Utc>,
    /// When retention lets it go (None: kept until deleted by hand).
    pub expiry: Option<DateTime<Utc>>,
    pub kind: PointKind,
    pub consistency: Consistency,
    /// Bytes of the disks that hold data (allocated, not holes).
    pub logical_bytes: u64,
    /// Bytes this point added to the chunk store (compressed, new chunks only).
    pub stored_bytes: u64,
    pub disks: Vec<DiskInfo>,
    /// Changed-block-tracking token of the source snapshot, for the next incremental.
    pub cbt_token: Option<String>,
    pub job_id: Option<String>,
}
