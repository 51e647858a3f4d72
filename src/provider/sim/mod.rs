//! The simulated source: a subscription of VMs in several regions (from
//! `assets/subscription.toml`, embedded, or a user's file), with configurable latencies and
//! failures, and disks whose contents are generated deterministically and change a little
//! every simulated day, with changed-block tracking.
//!
//! Everything downstream (chunking, storage, restore) is real: the vault reads these disks
//! exactly as it reads a real one, so the simulator must be exact and fast.
//!
//! * **Deterministic.** Every byte is a pure function of (seed, VM source id, disk, simulated
//!   day, offset), computed with our own splitmix64 (`diskgen`), never with a crate's PRNG
//!   whose streams may change between versions. `export_disk` writes what a disk held at a
//!   time; a restored image must equal it byte for byte.
//! * **Days.** Day `d` = whole days since the subscription's origin date (UTC). The state of
//!   a disk on day `d` is its day-0 layout with the change runs of days `1..=d` overlaid
//!   (`layout`, `overlay`); states are cached per disk so day 3000 costs no more than day 3.
//! * **Changed-block tracking.** A snapshot's token is `sim1:<fingerprint>:<day>`. The
//!   fingerprint covers the seed, the VM and its disks' parameters, so a token of another VM
//!   or of an edited subscription gives `None` (read everything), never a wrong answer.
//!   (Changing the seed, the churn or a VM's disks changes that VM's whole simulated
//!   history, past days included: recovery points keep what was backed up, but
//!   `export_disk` of an old time then shows the new history.)
//! * **Latencies** sleep on the job's `CancelToken`; `set_fast_forward(true)` skips them (and
//!   the read throttle) while simulated time is advanced.

mod diskgen;
mod layout;
mod overlay;
mod subscription;

pub use layout::Content;
pub use subscription::{SimDisk, SimVm, Subscription, VmAgent, DEFAULT_DAILY_CHANGE_PERCENT};

use self::diskgen::{derive, hash_bytes, SplitMix};
use self::layout::{DiskModel, DiskParams};
use self::overlay::Segment;
use crate::cancel::CancelToken;
use crate::disk::Throttle;
use crate::model::{Consistency, DiskInfo, Extent, Os, PowerState, Vm};
use crate::provider::{
    Discovery, DiskReader, Provider, ProviderError, RegistrationReport, Snapshot,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Default discovery latency: "a few seconds", like listing a real subscription.
pub const DEFAULT_DISCOVERY_LATENCY_MS: u64 = 3_000;
/// Default latency of registering a VM (installing the backup extension).
pub const DEFAULT_REGISTRATION_LATENCY_MS: u64 = 2_000;
/// Default latency of taking a snapshot.
pub const DEFAULT_SNAPSHOT_LATENCY_MS: u64 = 1_500;
/// The longest latency a setting may ask for (ten minutes): a simulated step that takes
/// longer is a mistake (a value in seconds or microseconds), and would look like a hang.
pub const MAX_LATENCY_MS: u64 = 600_000;
/// Most VMs `generate_vms` accepts.
pub const MAX_GENERATED_VMS: usize = 1_000_000;

/// Settings of a simulated source: the `[vault.source]` table of kind "simulated", without
/// `kind`. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSettings {
    /// A subscription file replacing the embedded one.
    pub subscription: Option<PathBuf>,
    /// Overrides the subscription's seed.
    pub seed: Option<u64>,
    /// Default `DEFAULT_DISCOVERY_LATENCY_MS`; 0 makes discovery instant.
    pub discovery_latency_ms: Option<u64>,
    /// Default `DEFAULT_REGISTRATION_LATENCY_MS`.
    pub registration_latency_ms: Option<u64>,
    /// Default `DEFAULT_SNAPSHOT_LATENCY_MS`.
    pub snapshot_latency_ms: Option<u64>,
    /// Chance (0 to 1) that a snapshot fails with a transient error; deterministic from the
    /// seed, the VM and the snapshot time. Default 0.
    pub failure_probability: Option<f64>,
    /// Throttles disk reads to this many MiB/s (shared by all reads of the source) so a demo
    /// shows progress. None or 0: unthrottled.
    pub read_throughput_mib_s: Option<u64>,
    /// Replaces the subscription's VMs with this many synthesized ones (scale tests).
    pub generate_vms: Option<usize>,
    /// Overrides the churn of every VM (percent of allocated bytes per simulated day);
    /// 0 freezes every disk.
    pub daily_change_percent: Option<f64>,
}

impl SimSettings {
    /// Checks value ranges; the error names the key (the caller adds the file and line).
    pub fn validate(&self) -> Result<(), SimError> {
        for (key, ms) in [
            ("discovery_latency_ms", self.discovery_latency_ms),
            ("registration_latency_ms", self.registration_latency_ms),
            ("snapshot_latency_ms", self.snapshot_latency_ms),
        ] {
            if let Some(ms) = ms.filter(|ms| *ms > MAX_LATENCY_MS) {
                return Err(SimError::Setting {
                    key,
                    message: format!(
                        "{ms} ms is too long, expected 0 to {MAX_LATENCY_MS} (ten minutes)"
                    ),
                });
            }
        }
        if let Some(p) = self.failure_probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(SimError::Setting {
                    key: "failure_probability",
                    message: format!("expected a probability from 0 to 1, found {p}"),
                });
            }
        }
        if let Some(p) = self.daily_change_percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(SimError::Setting {
                    key: "daily_change_percent",
                    message: format!("expected a percentage from 0 to 100, found {p}"),
                });
            }
        }
        if let Some(n) = self.generate_vms {
            if !(1..=MAX_GENERATED_VMS).contains(&n) {
                return Err(SimError::Setting {
                    key: "generate_vms",
                    message: format!("expected 1 to {MAX_GENERATED_VMS} VMs, found {n}"),
                });
            }
        }
        Ok(())
    }
}

/// Why a simulated source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A subscription file is not valid.
    #[error("{}", subscription_message(origin, *line, *column, key.as_deref(), message))]
    Subscription {
        /// The file (a path, or the embedded file).
        origin: String,
        line: usize,
        column: usize,
        /// The key at fault, as dotted path where known (`vm.disks.capacity_gib`).
        key: Option<String>,
        /// What was wrong and what was expected.
        message: String,
    },
    #[error("reading subscription file {}: {source} (check the `subscription` setting of the simulated source)", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range; the caller knows the file and line of `key`.
    #[error("simulated source setting `{key}`: {message}")]
    Setting { key: &'static str, message: String },
}

fn subscription_message(
    origin: &str,
    line: usize,
    column: usize,
    key: Option<&str>,
    message: &str,
) -> String {
    match key {
        Some(k) => format!("{origin}:{line}:{column}: key `{k}`: {message}"),
        None => format!("{origin}:{line}:{column}: {message}"),
    }
}

impl Subscription {
    /// The subscription the settings ask for: the user's file or the embedded one, with the
    /// seed override and `generate_vms` applied.
    pub fn load(settings: &SimSettings) -> Result<Subscription, SimError> {
        settings.validate()?;
        let mut sub = match &settings.subscription {
            Some(path) => {
                let text = crate::fsx::read_input_text(
                    path,
                    crate::fsx::limits::SUBSCRIPTION,
                    "a subscription file",
                )
                .map_err(|e| SimError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                Subscription::from_toml_str(&text, &path.display().to_string())?
            }
            None => Subscription::embedded_default(),
        };
        if let Some(seed) = settings.seed {
            sub.seed = seed;
        }
        if let Some(n) = settings.generate_vms {
            sub.synthesize(n);
        }
        Ok(sub)
    }
}

/// The simulated source of VMs.
pub struct SimProvider {
    sub: Subscription,
    by_source_id: HashMap<String, usize>,
    origin: DateTime<Utc>,
    discovery_latency: Duration,
    registration_latency: Duration,
    snapshot_latency: Duration,
    failure_probability: f64,
    daily_change_override: Option<f64>,
    pacing: Pacing,
    /// Disk models by (VM index, disk index), built on first use.
    models: Mutex<HashMap<(usize, u32), Arc<DiskModel>>>,
}

impl fmt::Debug for SimProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SimProvider {
    /// A provider over `sub`, behaving as `settings` say (latencies, failures, throttle,
    /// churn). `seed`, `subscription` and `generate_vms` are applied by `Subscription::load`.
    pub fn new(sub: Subscription, settings: &SimSettings) -> SimProvider {
        let by_source_id = sub
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| (v.vm.source_id.clone(), i))
            .collect();
        let origin = sub
            .origin
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
        let throttle = settings
            .read_throughput_mib_s
            .filter(|&r| r > 0)
            .map(|r| Arc::new(Throttle::new(r)));
        SimProvider {
            by_source_id,
            origin,
            discovery_latency: ms(settings.discovery_latency_ms, DEFAULT_DISCOVERY_LATENCY_MS),
            registration_latency: ms(
                settings.registration_latency_ms,
                DEFAULT_REGISTRATION_LATENCY_MS,
            ),
            snapshot_latency: ms(settings.snapshot_latency_ms, DEFAULT_SNAPSHOT_LATENCY_MS),
            failure_probability: settings.failure_probability.unwrap_or(0.0).clamp(0.0, 1.0),
            daily_change_override: settings.daily_change_percent,
            pacing: Pacing {
                throttle,
                fast_forward: Arc::new(AtomicBool::new(false)),
            },
            models: Mutex::new(HashMap::new()),
            sub,
        }
    }

    /// `Subscription::load` then `new`.
    pub fn from_settings(settings: &SimSettings) -> Result<SimProvider, SimError> {
        Ok(SimProvider::new(Subscription::load(settings)?, settings))
    }

    pub fn subscription(&self) -> &Subscription {
        &self.sub
    }

    /// The VM with this source id, as discovery reports it.
    pub fn vm(&self, source_id: &str) -> Option<Vm> {
        self.by_source_id
            .get(source_id)
            .map(|&i| self.sub.vms[i].vm.clone())
    }

    /// Skips latencies and the read throttle while on: simulated time is being advanced
    /// (`sim advance`), where hundreds of backups run back to back.
    pub fn set_fast_forward(&self, on: bool) {
        self.pacing.fast_forward.store(on, Ordering::Relaxed);
    }

    /// Simulated day 0 (the subscription's origin, UTC midnight).
    pub fn origin(&self) -> DateTime<Utc> {
        self.origin
    }

    /// The simulated day of an instant: whole days since the origin (0 before it).
    pub fn simulated_day(&self, at: DateTime<Utc>) -> u32 {
        let secs = (at - self.origin).num_seconds();
        if secs <= 0 {
            0
        } else {
            u32::try_from(secs / 86_400).unwrap_or(u32::MAX)
        }
    }

    /// Writes what disk `disk` of the VM held at `at` to `to`, as a sparse raw image: the
    /// file has the disk's capacity, and only non-zero 4 KiB blocks are written. Written to
    /// a temporary file beside `to`, synced, then renamed. Returns the bytes written.
    pub fn export_disk(
        &self,
        source_id: &str,
        disk: u32,
        at: DateTime<Utc>,
        to: &Path,
    ) -> Result<u64, ProviderError> {
        let i = self.index_of(source_id, source_id)?;
        let sim_vm = &self.sub.vms[i];
        let info = sim_vm
            .vm
            .disks
            .get(disk as usize)
            .ok_or_else(|| no_such_disk(&sim_vm.vm, disk))?;
        let state = self.model(i, disk).state_at(self.simulated_day(at));
        let failed = |what: &str, e: std::io::Error| {
            ProviderError::new(
                "DiskExportFailed",
                "Could not export the simulated disk",
                format!("{what} {}: {e}", to.display()),
            )
            .recommend("Check that the target folder exists, is writable and has room for the disk's data.")
        };
        let file_name = to
            .file_name()
            .ok_or_else(|| failed("exporting to", std::io::Error::other("not a file path")))?;
        // Like a restore: created owner-only through a handle of the folder, never through
        // a symlink, and moved into place without replacing anything.
        let folder = match to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let fsx_failed = |what: &str, e: crate::fsx::FsxError| {
            ProviderError::new(
                "DiskExportFailed",
                "Could not export the simulated disk",
                format!("{what}: {e}"),
            )
            .recommend("Check that the target folder exists, is writable and has room for the disk's data.")
        };
        let dir = crate::fsx::Dir::open_user(folder)
            .map_err(|e| fsx_failed("opening the target folder", e))?;
        let prefix = format!(".{}.partial-", file_name.to_string_lossy());
        remove_dead_exports(&dir, &prefix);
        let tmp = std::ffi::OsString::from(format!("{prefix}{}", std::process::id()));
        let mut f = dir
            .create_new(&tmp, 0o600)
            .map_err(|e| fsx_failed("creating a temporary file", e))?;
        let result = (|| {
            f.set_len(info.capacity).map_err(|e| failed("sizing", e))?;
            let written = write_sparse(&mut f, &state).map_err(|e| failed("writing", e))?;
            f.sync_all().map_err(|e| failed("syncing", e))?;
            // Placed without replacing, then checked to be our file (in a folder others can
            // write, the name could be swapped after the move), then made durable.
            dir.rename_noreplace(&tmp, &dir, file_name)
                .map_err(|e| fsx_failed("placing the exported disk", e))?;
            let ours = dir
                .holds(file_name, f.as_fd())
                .map_err(|e| fsx_failed("checking the exported disk", e))?;
            if !ours {
                return Err(ProviderError::new(
                    "DiskExportFailed",
                    "Could not export the simulated disk",
                    format!(
                        "{} was replaced by someone else right after the export placed it; the file there now is not the export",
                        to.display()
                    ),
                )
                .recommend("Export into a folder only you can write."));
            }
            dir.sync()
                .map_err(|e| fsx_failed("syncing the folder", e))?;
            Ok(written)
        })();
        if result.is_err() && dir.holds(&tmp, f.as_fd()).unwrap_or(false) {
            let _ = dir.remove_file(&tmp);
        }
        result
    }

    fn index_of(&self, source_id: &str, shown_as: &str) -> Result<usize, ProviderError> {
        self.by_source_id.get(source_id).copied().ok_or_else(|| {
            ProviderError::new(
                "UserErrorVmNotFound",
                "Virtual machine not found",
                format!(
                    "{shown_as} ({source_id}) is not in the simulated subscription {:?} ({})",
                    self.sub.name, self.sub.loaded_from
                ),
            )
            .recommend(
                "Run discovery again: the VM may have been removed from the subscription file.",
            )
        })
    }

    fn find(&self, vm: &Vm) -> Result<usize, ProviderError> {
        self.index_of(&vm.source_id, &vm.qualified_name())
    }

    /// The setting overrides everything (an operator's knob, e.g. 0 to freeze all disks),
    /// then the VM's own value, then the subscription's.
    fn daily_change_percent(&self, v: &SimVm) -> f64 {
        self.daily_change_override
            .or(v.daily_change_percent)
            .unwrap_or(self.sub.daily_change_percent)
    }

    fn disk_params(&self, i: usize, disk: u32) -> DiskParams {
        let v = &self.sub.vms[i];
        let d = v.disks[disk as usize];
        let running = v.vm.power_state == PowerState::Running;
        DiskParams {
            key: derive(
                hash_bytes(self.sub.seed, v.vm.source_id.as_bytes()),
                u64::from(disk),
            ),
            capacity: v.vm.disks[disk as usize].capacity,
            allocated: d.allocated,
            content: d.content,
            // Only a running VM writes to its disks.
            daily_change: if running {
                self.daily_change_percent(v) / 100.0
            } else {
                0.0
            },
        }
    }

    fn model(&self, i: usize, disk: u32) -> Arc<DiskModel> {
        let mut models = match self.models.lock() {
            Ok(m) => m,
            // Models are inserted whole; a panic elsewhere cannot leave one half-built.
            Err(poisoned) => poisoned.into_inner(),
        };
        models
            .entry((i, disk))
            .or_insert_with(|| Arc::new(DiskModel::new(self.disk_params(i, disk))))
            .clone()
    }

    /// Identifies the VM's disks as the simulator generates them: a CBT token carries it,
    /// so changes are only ever computed against the same disks.
    fn fingerprint(&self, i: usize) -> u64 {
        let v = &self.sub.vms[i];
        let mut h = hash_bytes(self.sub.seed, v.vm.source_id.as_bytes());
        h = derive(h, self.origin.timestamp() as u64);
        for disk in 0..v.disks.len() as u32 {
            let p = self.disk_params(i, disk);
            for x in [
                p.capacity,
                p.allocated,
                p.content as u64,
                p.daily_change.to_bits(),
            ] {
                h = derive(h, x);
            }
        }
        h
    }

    fn latency(&self, d: Duration, cancel: &CancelToken) -> Result<(), ProviderError> {
        if d.is_zero() || self.pacing.fast_forward.load(Ordering::Relaxed) {
            cancel.check()?;
        } else {
            cancel.sleep(d)?;
        }
        Ok(())
    }

    /// A transient failure for this VM at this instant, with the configured probability.
    fn transient_failure(&self, v: &SimVm, at: DateTime<Utc>) -> Option<ProviderError> {
        if self.failure_probability <= 0.0 {
            return None;
        }
        let key = derive(
            hash_bytes(self.sub.seed ^ 0xFA11, v.vm.source_id.as_bytes()),
            at.timestamp() as u64,
        );
        let mut rng = SplitMix::new(key);
        if !rng.chance(self.failure_probability) {
            return None;
        }
        let name = v.vm.qualified_name();
        Some(match rng.below(3) {
            0 => ProviderError::new(
                "ExtensionSnapshotFailedNoNetwork",
                "Snapshot operation failed due to no network connectivity on the virtual machine",
                format!("The snapshot of {name} could not be taken: the VM lost network connectivity to the Azure platform."),
            )
            .recommend("Check that the VM can reach Azure storage and the platform address 168.63.129.16 (network security groups, firewall, proxy).")
            .recommend("The next scheduled backup retries automatically; run 'Back up now' for a recovery point sooner."),
            1 => ProviderError::new(
                "GuestAgentSnapshotTaskStatusError",
                "Could not communicate with the VM agent for snapshot status",
                format!("The VM agent of {name} did not report the status of the snapshot task in time."),
            )
            .recommend("Retry the backup. If it keeps failing, restart the VM agent in the VM and make sure it is up to date."),
            _ => ProviderError::new(
                "BackUpOperationFailedV2",
                "Backup failed with an internal error",
                format!("The backup service failed while taking the snapshot of {name}."),
            )
            .recommend("Retry the operation in a few minutes: transient service errors clear on their own."),
        })
    }
}

fn no_such_disk(vm: &Vm, disk: u32) -> ProviderError {
    ProviderError::new(
        "DiskNotFound",
        "Disk not found",
        format!(
            "{} has {} disk(s) (0 to {}); there is no disk {disk}",
            vm.qualified_name(),
            vm.disks.len(),
            vm.disks.len().saturating_sub(1)
        ),
    )
}

fn guest_agent_unavailable(vm: &Vm) -> ProviderError {
    let agent = match vm.os {
        Os::Windows => "the Windows Azure Guest Agent service",
        Os::Linux | Os::Unknown => "the Linux agent (waagent)",
    };
    ProviderError::new(
        "UserErrorGuestAgentStatusUnavailable",
        "VM agent unable to communicate with Azure Backup",
        format!(
            "The VM agent of {} is not reporting its status, so the snapshot could not be taken.",
            vm.qualified_name()
        ),
    )
    .recommend(format!(
        "Check that {agent} is running in the VM and restart it if needed."
    ))
    .recommend(
        "Check that the VM can reach the Azure platform at 168.63.129.16 on ports 80 and 32526.",
    )
    .recommend("Once the agent reports 'Ready', run 'Back up now'.")
}

/// Removes the temporary files (`prefix` + pid) that exports killed before they finished
/// left in `dir`: files of ours whose process is gone. Best effort; what it cannot tell or
/// remove stays.
fn remove_dead_exports(dir: &crate::fsx::Dir, prefix: &str) {
    let Ok(rd) = std::fs::read_dir(dir.path()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let ours = e.metadata().is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.file_type().is_file() && m.uid() == crate::fsx::euid()
        });
        if gone && ours {
            if let Err(err) = dir.remove_file(&name) {
                tracing::warn!(error = %err, "could not remove the leftover of an interrupted export");
            }
        }
    }
}

/// Writes the non-zero 4 KiB blocks of a state at their offsets; returns the bytes written.
fn write_sparse(f: &mut std::fs::File, state: &[Segment]) -> std::io::Result<u64> {
    const BUF: usize = 1 << 20;
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; BUF];
    let mut written = 0u64;
    for ext in overlay::allocated_extents(state) {
        let mut off = ext.offset;
        while off < ext.end() {
            let n = (ext.end() - off).min(BUF as u64) as usize;
            overlay::read(state, off, &mut buf[..n]);
            // Coalesce runs of non-zero blocks into one write each.
            let mut i = 0;
            while i < n {
                let block_end = |i: usize| (i + BLOCK).min(n);
                if is_zero(&buf[i..block_end(i)]) {
                    i = block_end(i);
                    continue;
                }
                let start = i;
                while i < n && !is_zero(&buf[i..block_end(i)]) {
                    i = block_end(i);
                }
                f.seek(SeekFrom::Start(off + start as u64))?;
                f.write_all(&buf[start..i])?;
                written += (i - start) as u64;
            }
            off += n as u64;
        }
    }
    Ok(written)
}

fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(16);
    let any = (&mut chunks).fold(0u128, |acc, c| {
        acc | u128::from_ne_bytes(c.try_into().unwrap_or([0xFF; 16]))
    });
    any == 0 && chunks.remainder().iter().all(|&x| x == 0)
}

/// Read throttle shared by every reader of a provider, and the fast-forward switch.
#[derive(Debug, Clone)]
struct Pacing {
    throttle: Option<Arc<Throttle>>,
    fast_forward: Arc<AtomicBool>,
}

impl Pacing {
    fn before_read(&self, bytes: usize) {
        if let Some(t) = &self.throttle {
            if !self.fast_forward.load(Ordering::Relaxed) {
                t.pace(bytes);
            }
        }
    }
}

impl Provider for SimProvider {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn describe(&self) -> String {
        format!(
            "simulated subscription {:?}: {} VMs in {} regions (seed {}, from {})",
            self.sub.name,
            self.sub.vms.len(),
            self.sub.regions().len(),
            self.sub.seed,
            self.sub.loaded_from
        )
    }

    fn discover(&self, cancel: &CancelToken) -> Result<Discovery, ProviderError> {
        self.latency(self.discovery_latency, cancel)?;
        Ok(Discovery::of(
            self.sub.vms.iter().map(|v| v.vm.clone()).collect(),
        ))
    }

    fn register(&self, vm: &Vm, cancel: &CancelToken) -> Result<RegistrationReport, ProviderError> {
        let i = self.find(vm)?;
        self.latency(self.registration_latency, cancel)?;
        let v = &self.sub.vms[i];
        if let Some(f) = &v.registration_failure {
            return Err(ProviderError::Failed(f.clone()));
        }
        let name = v.vm.qualified_name();
        let (agent, extension, consistency) = match v.vm.os {
            Os::Windows => (
                "Windows Azure Guest Agent 2.7.41491.1102",
                "VMSnapshot",
                "application-consistent (VSS writers)",
            ),
            Os::Linux | Os::Unknown => (
                "Linux agent (waagent) 2.9.1.1",
                "VMSnapshotLinux",
                "file-system-consistent (fsfreeze)",
            ),
        };
        let mut report = RegistrationReport::default();
        match (v.vm.power_state, v.vm_agent) {
            (PowerState::Running, VmAgent::Ready) => {
                report.findings.push(format!("VM agent: Ready ({agent})"));
                report
                    .findings
                    .push(format!("Backup extension {extension}: installed"));
                report
                    .findings
                    .push(format!("Snapshots will be {consistency}"));
            }
            (PowerState::Running, VmAgent::NotReady) => {
                report
                    .findings
                    .push("VM agent: Not Ready (no status reported for more than 48 hours)".into());
                report.warnings.push(format!(
                    "The VM agent of {name} is not reporting: backups of {name} will fail until it \
                     reports Ready (check the agent service and the VM's network access to 168.63.129.16)."
                ));
            }
            (state, _) => {
                let state = state.as_str().to_ascii_lowercase();
                report
                    .findings
                    .push(format!("VM agent: not reachable (the VM is {state})"));
                report.warnings.push(format!(
                    "{name} is {state}: the backup extension {extension} is installed when the VM next \
                     starts; until then its backups are crash-consistent."
                ));
            }
        }
        let allocated: u64 = v.disks.iter().map(|d| d.allocated).sum();
        report.findings.push(format!(
            "{} disk(s), {} GiB provisioned, {} MiB in use: readable",
            v.vm.disks.len(),
            v.vm.provisioned_bytes() >> 30,
            allocated >> 20
        ));
        Ok(report)
    }

    fn snapshot(
        &self,
        vm: &Vm,
        at: DateTime<Utc>,
        // The simulator derives changes from its model: any earlier day of the same disk
        // layout is a usable base, so nothing needs to be kept for `since`.
        _since: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError> {
        let i = self.find(vm)?;
        self.latency(self.snapshot_latency, cancel)?;
        let v = &self.sub.vms[i];
        if let Some(f) = &v.backup_failure {
            return Err(ProviderError::Failed(f.clone()));
        }
        let running = v.vm.power_state == PowerState::Running;
        if running && v.vm_agent == VmAgent::NotReady {
            return Err(guest_agent_unavailable(&v.vm));
        }
        if let Some(e) = self.transient_failure(v, at) {
            return Err(e);
        }
        let consistency = match (running, v.vm.os) {
            (true, Os::Windows) => Consistency::ApplicationConsistent,
            (true, Os::Linux | Os::Unknown) => Consistency::FileSystemConsistent,
            (false, _) => Consistency::CrashConsistent,
        };
        let day = self.simulated_day(at);
        let fingerprint = self.fingerprint(i);
        let models: Vec<Arc<DiskModel>> = (0..v.disks.len() as u32)
            .map(|d| self.model(i, d))
            .collect();
        Ok(Box::new(SimSnapshot {
            vm_name: v.vm.qualified_name(),
            consistency,
            day,
            fingerprint,
            disks: v.vm.disks.clone(),
            states: models.iter().map(|_| OnceLock::new()).collect(),
            models,
            pacing: self.pacing.clone(),
        }))
    }
}

/// The CBT token of a snapshot: `sim1:<fingerprint as 16 hex digits>:<day>`.
fn cbt_token(fingerprint: u64, day: u32) -> String {
    format!("sim1:{fingerprint:016x}:{day}")
}

fn parse_cbt_token(token: &str) -> Option<(u64, u32)> {
    let mut parts = token.trim().split(':');
    if parts.next()? != "sim1" {
        return None;
    }
    let fingerprint = u64::from_str_radix(parts.next()?, 16).ok()?;
    let day = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((fingerprint, day))
}

/// A VM's disks on one simulated day.
struct SimSnapshot {
    vm_name: String,
    consistency: Consistency,
    day: u32,
    fingerprint: u64,
    disks: Vec<DiskInfo>,
    models: Vec<Arc<DiskModel>>,
    /// Each disk's state, computed when first opened and shared by its readers.
    states: Vec<OnceLock<Arc<Vec<Segment>>>>,
    pacing: Pacing,
}

impl Snapshot for SimSnapshot {
    fn consistency(&self) -> Consistency {
        self.consistency
    }

    fn cbt_token(&self) -> Option<String> {
        Some(cbt_token(self.fingerprint, self.day))
    }

    fn disks(&self) -> &[DiskInfo] {
        &self.disks
    }

    fn open_disk(&self, index: u32) -> Result<Box<dyn DiskReader>, ProviderError> {
        let i = index as usize;
        let (Some(model), Some(info)) = (self.models.get(i), self.disks.get(i)) else {
            return Err(ProviderError::new(
                "DiskNotFound",
                "Disk not found",
                format!(
                    "the snapshot of {} has {} disk(s); there is no disk {index}",
                    self.vm_name,
                    self.disks.len()
                ),
            ));
        };
        let state = self.states[i]
            .get_or_init(|| model.state_at(self.day))
            .clone();
        Ok(Box::new(SimDiskReader {
            disk_name: format!("{} disk {index} ({})", self.vm_name, info.name),
            model: model.clone(),
            state,
            day: self.day,
            fingerprint: self.fingerprint,
            pacing: self.pacing.clone(),
        }))
    }
}

/// Reads one disk of a snapshot; immutable, so any number of threads may read at once.
struct SimDiskReader {
    disk_name: String,
    model: Arc<DiskModel>,
    state: Arc<Vec<Segment>>,
    day: u32,
    fingerprint: u64,
    pacing: Pacing,
}

impl DiskReader for SimDiskReader {
    fn capacity(&self) -> u64 {
        self.model.params().capacity
    }

    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        Ok(overlay::allocated_extents(&self.state))
    }

    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        Ok(match parse_cbt_token(since) {
            Some((fp, day)) if fp == self.fingerprint && day <= self.day => {
                Some(self.model.changed_between(day, self.day))
            }
            _ => None,
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        let capacity = self.capacity();
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > capacity)
        {
            return Err(ProviderError::new(
                "DiskReadError",
                "Read beyond the end of the disk",
                format!(
                    "reading {} bytes at offset {offset} of {}, whose capacity is {capacity} bytes",
                    buf.len(),
                    self.disk_name
                ),
            ));
        }
        self.pacing.before_read(buf.len());
        overlay::read(&self.state, offset, buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
