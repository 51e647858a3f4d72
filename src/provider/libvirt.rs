//! The `libvirt` source: the domains of a libvirt host, through `virsh`.
//!
//! Config: `[[vault]] source = { kind = "libvirt", uri = "qemu:///system", region = "lab-1" }`
//! (`qemu+ssh://host/system`, or libvirt's `test:///path/to/node.xml` driver, work too).
//!
//! # Discovery
//! `virsh list --all --uuid`, then per domain `virsh dumpxml` and `virsh domstate`: name,
//! UUID (source id `libvirt:<uuid>`), power state, vCPUs and memory (the size label), the OS
//! when libosinfo metadata names it (Hyper-V enlightenments also mean Windows; otherwise
//! `Unknown`), and the disks that can be backed up: `type='file'`, `type='block'` and
//! `type='volume'` disks with `device='disk'` (cdroms, floppies and network disks are not
//! backed up; registration says so). The cloud service is the host (`virsh hostname`), or the domain's own tag:
//!
//! ```text
//! virsh metadata DOMAIN urn:vmvault:libvirt:1 --key vmvault --set \
//!     '<vm><cloud-service>sales</cloud-service></vm>'
//! ```
//!
//! # Backups
//! - A **shut-off** domain's disk files are read like images (see `qemu`), under QEMU's
//!   read locks: starting the domain during the backup fails instead of changing the disk
//!   under the backup. Crash-consistent (nothing tells whether the guest shut down cleanly).
//! - A **running** domain is backed up with libvirt's pull-mode backup job
//!   (`virsh backup-begin`): libvirt asks QEMU for a point-in-time view of every disk
//!   (copy-before-write into a scratch file) and exports it over NBD on a unix socket in a
//!   private folder; vmvault reads the export, then ends the job (`virsh domjobabort`),
//!   which drops the scratch files. The guest's file systems are frozen through the guest
//!   agent (`virsh domfsfreeze`) only around `backup-begin` — a fraction of a second — and
//!   the point is then *file-system consistent*; without an answering agent it is
//!   *crash-consistent*.
//!
//!   Why a backup job rather than an external snapshot + `blockcommit --active --pivot`:
//!   the backup job never changes the domain's disk chain, so a failure, a cancel or even a
//!   crash of vmvault cannot leave the domain running on an overlay that somebody must
//!   commit by hand (the worst case is a dangling job, which the next backup recognises as
//!   vmvault's by its socket path and ends); it needs no commit of the data written during
//!   the backup; and it is the interface libvirt pairs with checkpoints for incremental
//!   backups.
//! - **Changed-block tracking**: when every backed-up disk is qcow2, each backup of a running
//!   domain creates a libvirt checkpoint (a persistent QEMU dirty bitmap) named
//!   `vmvault-v<vault>-<time>-<id>` (`<vault>`: 8 hex digits of the vault's name, so two
//!   vaults backing up one domain each keep their own); that name is the snapshot's
//!   `cbt_token`, which the vault keeps
//!   with the recovery point. The next backup is incremental from the checkpoint the vault
//!   names as `since` (its newest recovery point's token) when that checkpoint still
//!   exists; libvirt exports the blocks written since then as the bitmap `backup-<disk>`,
//!   and `changed_extents(since)` lists them (`qemu-img map` with `x-dirty-bitmap`). Any
//!   other checkpoint of this vault (or of vmvault before checkpoint names carried the
//!   vault, `vmvault-<time>-<id>`) is deleted when a backup starts — an older one, or the one of
//!   a backup that failed or was cancelled before the vault committed it — so bitmaps do
//!   not pile up and such a backup never costs the next one its incremental base. Without
//!   a usable base the backup is full (`changed_extents` answers `None`).
//! - Cleanup: every step that changes the domain has a guard whose `Drop` undoes it — a
//!   frozen guest is thawed, a started job is ended — so an error, a cancel or a panic
//!   between the steps leaves the domain as it was.
//! - Remote URIs (`qemu+ssh://…`) are discovered and registered, but their disks and
//!   backup sockets live on the other host: backing them up is refused with a clear error.

use super::qemu::{self, human_bytes, DirtyBitmap, OpenDisk, PrivateDir, RunError};
use crate::cancel::CancelToken;
use crate::model::{Consistency, DiskInfo, Os, PowerState, Vm, VmDefinition};
use crate::provider::{
    Discovery, DiskReader, Provider, ProviderError, RegistrationReport, Snapshot,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `source = { kind = "libvirt", … }` table of a vault (without `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibvirtSettings {
    /// libvirt connection URI (`qemu:///system`, `qemu+ssh://host/system`, `test:///…`).
    pub uri: String,
    /// The region the host stands for.
    pub region: String,
    /// Cloud service of domains without a `cloud-service` metadata tag (default: the
    /// host name that libvirt reports).
    #[serde(default)]
    pub cloud_service: Option<String>,
    /// Folder for backup jobs' NBD sockets and scratch files (default: the temp folder).
    /// QEMU must be able to write there; the scratch files grow with what the guest writes
    /// during the backup.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
}

/// Namespace of vmvault's domain metadata.
pub const METADATA_NS: &str = "urn:vmvault:libvirt:1";
const LIBOSINFO_NS: &str = "http://libosinfo.org/xmlns/libvirt/domain/1.0";
const ID_PREFIX: &str = "libvirt:";
/// Prefix of the checkpoints and work folders vmvault creates (a vault's own add its tag:
/// see `LibvirtProvider::for_vault`).
const CHECKPOINT_PREFIX: &str = "vmvault-";
const WORK_PREFIX: &str = "vmvault-backup";
/// Guest agent calls: a frozen guest must not wait long for us.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `xml` names a socket in a vmvault work folder from before their names carried
/// the vault: `/vmvault-backup-<12 hex digits>/` (tagged ones are `vmvault-backup-v…`).
fn legacy_work_folder_in(xml: &str) -> bool {
    let marker = format!("/{WORK_PREFIX}-");
    xml.match_indices(&marker).any(|(i, _)| {
        xml[i + marker.len()..]
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_hexdigit())
    })
}

/// Whether `name` is a checkpoint of vmvault from before names carried the vault:
/// `vmvault-20261128T101500Z-1a2b3c4d`.
fn legacy_checkpoint(name: &str) -> bool {
    name.strip_prefix(CHECKPOINT_PREFIX)
        .and_then(|rest| rest.get(..9))
        .is_some_and(|t| t[..8].bytes().all(|b| b.is_ascii_digit()) && t.ends_with('T'))
}

/// A libvirt host as a source of VMs.
#[derive(Debug)]
pub struct LibvirtProvider {
    virsh: Virsh,
    region: String,
    cloud_service: Option<String>,
    scratch_dir: PathBuf,
    /// Start of the names of this vault's checkpoints (see [`LibvirtProvider::for_vault`]).
    checkpoint_prefix: String,
    /// Start of the names of this vault's work folders (the same tag).
    work_prefix: String,
    #[cfg(test)]
    fail_after_backup_begin: std::sync::atomic::AtomicBool,
}

/// Runs `virsh -c URI …`.
#[derive(Debug, Clone)]
struct Virsh {
    uri: String,
}

impl Virsh {
    fn raw(
        &self,
        args: &[&str],
        timeout: Duration,
        cancel: &CancelToken,
    ) -> Result<String, RunError> {
        let mut a: Vec<OsString> = vec!["-q".into(), "-c".into(), self.uri.clone().into()];
        a.extend(args.iter().map(OsString::from));
        let out = qemu::run_tool("virsh", &a, timeout, cancel)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn run(&self, args: &[&str], cancel: &CancelToken) -> Result<String, ProviderError> {
        self.raw(args, qemu::QUICK, cancel).map_err(|e| {
            e.into_provider(&format!(
                "virsh -c {} {}",
                self.uri,
                args.first().copied().unwrap_or("")
            ))
        })
    }
}

/// What vmvault needs of a domain's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainXml {
    /// The XML itself, as `virsh dumpxml` gave it (kept with each recovery point).
    xml: String,
    name: String,
    uuid: String,
    vcpus: u32,
    memory_kib: u64,
    os: Os,
    cloud_service: Option<String>,
    disks: Vec<DomainDisk>,
    /// Targets of disks that are not backed up, with why.
    skipped: Vec<(String, String)>,
    has_agent_channel: bool,
    /// uid:gid QEMU runs as (from the live XML's DAC label).
    qemu_owner: Option<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DomainDisk {
    /// Target device (`vda`): the disk's name and its backup export name.
    target: String,
    source: DiskSource,
    /// `<driver type=…>`: the format libvirt uses (None: probe).
    format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DiskSource {
    Path(PathBuf),
    Volume { pool: String, volume: String },
}

fn parse_domain(xml: &str) -> Result<DomainXml, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("invalid domain XML: {e}"))?;
    let root = doc.root_element();
    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
        n.children().find(|c| c.has_tag_name(name))
    }
    fn text(n: Option<roxmltree::Node<'_, '_>>) -> Option<String> {
        n.and_then(|n| n.text()).map(|t| t.trim().to_string())
    }
    let name = text(child(root, "name")).ok_or("domain XML has no <name>")?;
    let uuid = text(child(root, "uuid")).ok_or("domain XML has no <uuid>")?;
    let vcpus = text(child(root, "vcpu"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let memory_kib = child(root, "memory")
        .and_then(|m| {
            let v: u64 = m.text()?.trim().parse().ok()?;
            Some(v.saturating_mul(unit_bytes(m.attribute("unit").unwrap_or("KiB"))?) / 1024)
        })
        .unwrap_or(0);
    let metadata = child(root, "metadata");
    let osinfo = metadata.and_then(|m| {
        m.descendants()
            .find(|d| d.tag_name().name() == "os" && d.tag_name().namespace() == Some(LIBOSINFO_NS))
    });
    let hyperv = child(root, "features")
        .and_then(|f| child(f, "hyperv"))
        .is_some();
    let os = match osinfo.and_then(|o| o.attribute("id")) {
        Some(id) if id.contains("microsoft.com/win") => Os::Windows,
        Some(id) if osinfo_is_linux(id) => Os::Linux,
        _ if hyperv => Os::Windows,
        _ => Os::Unknown,
    };
    let cloud_service = metadata
        .and_then(|m| {
            m.descendants().find(|d| {
                d.tag_name().name() == "cloud-service"
                    && d.tag_name().namespace() == Some(METADATA_NS)
            })
        })
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let mut disks = Vec::new();
    let mut skipped = Vec::new();
    let mut has_agent_channel = false;
    if let Some(devices) = child(root, "devices") {
        for d in devices.children().filter(|c| c.has_tag_name("disk")) {
            let target = child(d, "target")
                .and_then(|t| t.attribute("dev"))
                .unwrap_or("?")
                .to_string();
            let device = d.attribute("device").unwrap_or("disk");
            if device != "disk" {
                skipped.push((target, format!("a {device}")));
                continue;
            }
            if child(d, "readonly").is_some() {
                // Libvirt backup jobs leave read-only disks out; so do offline backups,
                // so that both kinds of recovery point have the same disks.
                skipped.push((target, "a read-only disk".into()));
                continue;
            }
            let kind = d.attribute("type").unwrap_or("file");
            let source = child(d, "source");
            let source = match (kind, source) {
                ("file", Some(s)) => s.attribute("file").map(|f| DiskSource::Path(f.into())),
                ("block", Some(s)) => s.attribute("dev").map(|f| DiskSource::Path(f.into())),
                ("volume", Some(s)) => match (s.attribute("pool"), s.attribute("volume")) {
                    (Some(p), Some(v)) => Some(DiskSource::Volume {
                        pool: p.into(),
                        volume: v.into(),
                    }),
                    _ => None,
                },
                _ => None,
            };
            match source {
                Some(source) => {
                    let format = child(d, "driver")
                        .and_then(|dr| dr.attribute("type"))
                        .map(str::to_string);
                    disks.push(DomainDisk {
                        target,
                        source,
                        format,
                    });
                }
                None if source.is_none() && kind != "network" => {
                    skipped.push((target, "a disk without a source".into()))
                }
                None => skipped.push((
                    target,
                    format!("a {kind} disk (only file, block and volume disks are backed up)"),
                )),
            }
        }
        has_agent_channel = devices
            .children()
            .filter(|c| c.has_tag_name("channel"))
            .any(|c| {
                child(c, "target").and_then(|t| t.attribute("name"))
                    == Some("org.qemu.guest_agent.0")
            });
    }
    let qemu_owner = root
        .children()
        .filter(|c| c.has_tag_name("seclabel") && c.attribute("model") == Some("dac"))
        .find_map(|s| text(child(s, "label")))
        .and_then(|l| {
            let (u, g) = l.split_once(':')?;
            Some((
                u.trim_start_matches('+').parse().ok()?,
                g.trim_start_matches('+').parse().ok()?,
            ))
        });
    Ok(DomainXml {
        xml: xml.to_string(),
        name,
        uuid,
        vcpus,
        memory_kib,
        os,
        cloud_service,
        disks,
        skipped,
        has_agent_channel,
        qemu_owner,
    })
}

/// Whether a libosinfo OS id (`http://debian.org/debian/12`) names a Linux distribution.
/// Vendors with other systems too are matched on their Linux path only (Oracle Linux is
/// `oracle.com/ol`, where `oracle.com/solaris` is not Linux; Novell's ids are NetWare).
fn osinfo_is_linux(id: &str) -> bool {
    const LINUX: &[&str] = &[
        "linux",
        "debian.org",
        "ubuntu.com",
        "redhat.com",
        "centos.org",
        "fedoraproject.org",
        "almalinux.org",
        "rockylinux.org",
        "suse.com",
        "opensuse.org",
        "archlinux.org",
        "alpinelinux.org",
        "oracle.com/ol",
        "gentoo.org",
        "mageia.org",
        "nixos.org",
        "voidlinux.org",
        "slackware.com",
        "mandriva.com",
        "cirros-cloud.net",
        "altlinux.org",
        "eurolinux.eu",
        "asianux.com",
        "endlessos.com",
        "popos",
        "manjaro",
        "kali.org",
    ];
    let id = id.to_ascii_lowercase();
    LINUX.iter().any(|l| id.contains(l))
}

fn unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    })
}

/// `virsh domstate` words → power state.
fn power_state(state: &str) -> PowerState {
    match state.trim() {
        "shut off" | "crashed" => PowerState::Stopped,
        _ => PowerState::Running,
    }
}

/// A disk of a domain resolved to a local path, with its format and capacity.
#[derive(Debug, Clone)]
struct ResolvedDisk {
    target: String,
    path: PathBuf,
    format: String,
    capacity: u64,
}

impl LibvirtProvider {
    pub fn new(s: &LibvirtSettings) -> Result<Self, ProviderError> {
        let bad = |m: &str| {
            ProviderError::new(
                "UserErrorInvalidSourceSettings",
                "Invalid libvirt source settings",
                format!("libvirt source: {m}"),
            )
        };
        if s.region.trim().is_empty() {
            return Err(bad("region is empty: name the region this host stands for"));
        }
        if !s.uri.contains(":///") && !s.uri.contains("://") {
            return Err(bad(&format!(
                "uri {:?} is not a libvirt connection URI (e.g. qemu:///system, qemu+ssh://host/system)",
                s.uri
            )));
        }
        Ok(LibvirtProvider {
            virsh: Virsh {
                uri: s.uri.trim().to_string(),
            },
            region: s.region.trim().to_string(),
            cloud_service: s.cloud_service.clone().filter(|c| !c.trim().is_empty()),
            scratch_dir: s.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
            checkpoint_prefix: CHECKPOINT_PREFIX.to_string(),
            work_prefix: WORK_PREFIX.to_string(),
            #[cfg(test)]
            fail_after_backup_begin: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This provider serves the vault named `vault`: its checkpoints carry the vault
    /// (`vmvault-v<8 hex digits of the name>-…`), and only they (and pre-vault names) are
    /// its to delete, so another vault backing up the same domain keeps its incremental
    /// base. Its work folders carry the vault too, so a backup job of another vault's
    /// live process is never taken for one left behind (see `end_stale_backup`). Without
    /// it, every vmvault checkpoint and job counts as this provider's.
    pub fn for_vault(mut self, vault: &str) -> Self {
        let tag = blake3::hash(vault.as_bytes()).to_hex();
        self.checkpoint_prefix = format!("{CHECKPOINT_PREFIX}v{}-", &tag[..8]);
        self.work_prefix = format!("{WORK_PREFIX}-v{}", &tag[..8]);
        self
    }

    /// Whether checkpoint `name` is this vault's (or from before names carried a vault).
    fn owns_checkpoint(&self, name: &str) -> bool {
        name.starts_with(&self.checkpoint_prefix) || legacy_checkpoint(name)
    }

    /// The host part of the URI (empty for local connections).
    fn uri_host(&self) -> &str {
        let rest = self
            .virsh
            .uri
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or("");
        let host = rest.split('/').next().unwrap_or("");
        host.rsplit('@')
            .next()
            .unwrap_or(host)
            .split(':')
            .next()
            .unwrap_or("")
    }

    fn is_local(&self) -> bool {
        self.uri_host().is_empty()
    }

    fn host_name(&self, cancel: &CancelToken) -> Result<String, ProviderError> {
        if let Some(c) = &self.cloud_service {
            return Ok(c.clone());
        }
        match self.virsh.raw(&["hostname"], qemu::QUICK, cancel) {
            Ok(h) if !h.trim().is_empty() => Ok(h.trim().to_string()),
            Err(RunError::Cancelled) => Err(ProviderError::Cancelled),
            Err(e @ RunError::NotFound { .. }) => Err(e.into_provider("connecting to libvirt")),
            _ if !self.uri_host().is_empty() => Ok(self.uri_host().to_string()),
            _ => Ok("localhost".to_string()),
        }
    }

    fn uuid_of<'a>(&self, vm: &'a Vm) -> Result<&'a str, ProviderError> {
        vm.source_id
            .strip_prefix(ID_PREFIX)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                ProviderError::new(
                    "UserErrorVmNotFound",
                    "VM not found",
                    format!(
                        "{} ({}) is not a domain of this libvirt source",
                        vm.qualified_name(),
                        vm.source_id
                    ),
                )
            })
    }

    /// The domain's XML and power state; a domain that is gone is a clear error.
    fn domain(
        &self,
        uuid: &str,
        cancel: &CancelToken,
    ) -> Result<(DomainXml, PowerState), ProviderError> {
        let xml = self
            .virsh
            .raw(&["dumpxml", uuid], qemu::QUICK, cancel)
            .map_err(|e| {
                if e.stderr().contains("ailed to get domain")
                    || e.stderr().contains("Domain not found")
                {
                    ProviderError::new(
                        "UserErrorVmNotFound",
                        "VM not found",
                        format!("domain {uuid} no longer exists on {}", self.virsh.uri),
                    )
                    .recommend("Run discovery again to refresh the list of VMs")
                } else {
                    e.into_provider(&format!("reading the definition of domain {uuid}"))
                }
            })?;
        let dom = parse_domain(&xml).map_err(|m| {
            ProviderError::new(
                "ToolOutputInvalid",
                "Unexpected output from virsh",
                format!("domain {uuid}: {m}"),
            )
        })?;
        let state = self
            .virsh
            .raw(&["domstate", uuid], qemu::QUICK, cancel)
            .map_err(|e| {
                if e.stderr().contains("ailed to get domain")
                    || e.stderr().contains("Domain not found")
                {
                    ProviderError::new(
                        "UserErrorVmNotFound",
                        "VM not found",
                        format!("domain {uuid} no longer exists on {}", self.virsh.uri),
                    )
                } else {
                    e.into_provider(&format!("reading the state of domain {uuid}"))
                }
            })?;
        Ok((dom, power_state(&state)))
    }

    fn resolve_path(
        &self,
        dom: &DomainXml,
        d: &DomainDisk,
        cancel: &CancelToken,
    ) -> Result<PathBuf, ProviderError> {
        match &d.source {
            DiskSource::Path(p) => Ok(p.clone()),
            DiskSource::Volume { pool, volume } => {
                let p = self
                    .virsh
                    .run(&["vol-path", "--pool", pool, volume], cancel)
                    .map_err(|e| {
                        ProviderError::new(
                            "UserErrorDiskNotFound",
                            "Disk volume not found",
                            format!(
                                "disk {} of {}: volume {volume} of pool {pool}: {}",
                                d.target,
                                dom.name,
                                e.details().message
                            ),
                        )
                    })?;
                Ok(PathBuf::from(p.trim()))
            }
        }
    }

    /// Resolves every disk to a local path, format and capacity (discovery and offline
    /// backups). Capacity comes from qemu-img when the file is readable here, else from
    /// `virsh domblkinfo`.
    fn resolve_disks(
        &self,
        dom: &DomainXml,
        cancel: &CancelToken,
    ) -> Result<Vec<ResolvedDisk>, ProviderError> {
        let mut out = Vec::new();
        for d in &dom.disks {
            let path = self.resolve_path(dom, d, cancel)?;
            // Local connections: the file itself (a missing one is an error); remote: ask
            // libvirt, since the file lives on the other host.
            let (format, capacity) = if self.is_local() {
                let info = qemu::image_info(&path, d.format.as_deref(), true, cancel)?;
                (info.format, info.virtual_size)
            } else {
                let info = self
                    .virsh
                    .run(&["domblkinfo", &dom.uuid, &d.target], cancel)?;
                let cap = info
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Capacity:")
                            .and_then(|v| v.trim().parse().ok())
                    })
                    .unwrap_or(0);
                (d.format.clone().unwrap_or_else(|| "raw".into()), cap)
            };
            out.push(ResolvedDisk {
                target: d.target.clone(),
                path,
                format,
                capacity,
            });
        }
        Ok(out)
    }

    /// Like `resolve_disks`, for discovery: a disk that cannot be inspected (a missing
    /// file, a vanished volume) is listed with capacity 0 and a warning (of the Discover
    /// job, and in the log), so that the VM is still discovered (and not marked "not
    /// found"); its backup will say why.
    fn resolve_disks_for_discovery(
        &self,
        dom: &DomainXml,
        warnings: &mut Vec<String>,
        cancel: &CancelToken,
    ) -> Result<Vec<ResolvedDisk>, ProviderError> {
        let mut out = Vec::new();
        for d in &dom.disks {
            let one = DomainXml {
                disks: vec![d.clone()],
                ..dom.clone()
            };
            match self.resolve_disks(&one, cancel) {
                Ok(mut r) => out.append(&mut r),
                Err(ProviderError::Cancelled) => return Err(ProviderError::Cancelled),
                Err(e) if e.details().code == qemu::TOOL_NOT_FOUND => return Err(e),
                Err(e) => {
                    let warning = format!(
                        "domain {}: disk {} cannot be read: {}",
                        dom.name,
                        d.target,
                        e.details().message
                    );
                    tracing::warn!("{warning}");
                    warnings.push(warning);
                    out.push(ResolvedDisk {
                        target: d.target.clone(),
                        path: match &d.source {
                            DiskSource::Path(p) => p.clone(),
                            DiskSource::Volume { volume, .. } => PathBuf::from(volume),
                        },
                        format: d.format.clone().unwrap_or_else(|| "raw".into()),
                        capacity: 0,
                    });
                }
            }
        }
        Ok(out)
    }

    fn to_vm(&self, dom: &DomainXml, state: PowerState, disks: &[ResolvedDisk], host: &str) -> Vm {
        Vm {
            source_id: format!("{ID_PREFIX}{}", dom.uuid),
            name: dom.name.clone(),
            cloud_service: dom
                .cloud_service
                .clone()
                .unwrap_or_else(|| host.to_string()),
            region: self.region.clone(),
            os: dom.os,
            size: format!("{} vCPU, {}", dom.vcpus, human_bytes(dom.memory_kib * 1024)),
            power_state: state,
            disks: disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskInfo {
                    index: i as u32,
                    name: d.target.clone(),
                    capacity: d.capacity,
                })
                .collect(),
        }
    }

    fn remote_error(&self, vm: &Vm) -> ProviderError {
        ProviderError::new(
            "UserErrorRemoteHostUnsupported",
            "Backups need local disks",
            format!(
                "{} lives on {} ({}): its disks and backup exports are on that host, which vmvault cannot read from here",
                vm.qualified_name(),
                self.uri_host(),
                self.virsh.uri
            ),
        )
        .recommend("Run vmvault on the libvirt host itself with uri = \"qemu:///system\"")
    }

    /// Reads a shut-off domain's disk files under QEMU's read locks.
    fn offline_snapshot(
        &self,
        vm: &Vm,
        dom: &DomainXml,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError> {
        let disks = self.resolve_disks(dom, cancel)?;
        let mut open = Vec::new();
        for d in &disks {
            let label = format!("disk {} of {}", d.target, vm.qualified_name());
            open.push(Arc::new(OpenDisk::open_image(
                &d.path, &d.format, d.capacity, false, &label, cancel,
            )?));
        }
        let infos = self.to_vm(dom, PowerState::Stopped, &disks, "").disks;
        let definition = VmDefinition {
            domain_xml: Some(dom.xml.clone()),
            disk_formats: disks
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u32, d.format.clone()))
                .collect(),
        };
        Ok(Box::new(OfflineSnapshot {
            disks: infos,
            open,
            definition,
        }))
    }

    /// The pull-mode backup of a running domain (see the module doc).
    fn running_snapshot(
        &self,
        vm: &Vm,
        dom: &DomainXml,
        at: DateTime<Utc>,
        since: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError> {
        let uuid = dom.uuid.as_str();
        self.end_stale_backup(uuid, cancel)?;
        // QEMU creates the socket and scratch files: the folder must be its own.
        let work = PrivateDir::create(&self.scratch_dir, &self.work_prefix)?;
        if let Some((uid, gid)) = dom.qemu_owner {
            // Fails harmlessly when vmvault is not root (session mode: QEMU runs as us).
            let _ = std::os::unix::fs::chown(work.path(), Some(uid), Some(gid));
        }
        let socket = work.path().join("nbd.sock");

        // Changed-block tracking: only qcow2 disks can hold persistent bitmaps.
        let cbt = dom
            .disks
            .iter()
            .all(|d| d.format.as_deref() == Some("qcow2"))
            && !dom.disks.is_empty();
        let mut base = None;
        if cbt {
            match self.virsh.run(
                &["checkpoint-list", uuid, "--name", "--topological"],
                cancel,
            ) {
                Ok(list) => {
                    let ours: Vec<&str> = list
                        .lines()
                        .map(str::trim)
                        .filter(|l| self.owns_checkpoint(l))
                        .collect();
                    // The base is the checkpoint of the vault's newest recovery point; any
                    // other checkpoint of this vault (older ones, or one of a backup that failed or
                    // was cancelled before the vault committed it) can never serve as a base
                    // again, and deleting it keeps QEMU from tracking writes in its bitmap.
                    base = since.filter(|s| ours.contains(s)).map(str::to_string);
                    for old in ours.iter().filter(|c| Some(**c) != base.as_deref()) {
                        if let Err(e) = self.virsh.run(&["checkpoint-delete", uuid, old], cancel) {
                            tracing::warn!(
                                "{}: could not delete old checkpoint {old}: {}",
                                vm.qualified_name(),
                                e.details().message
                            );
                        }
                    }
                    if let (Some(s), None) = (since, &base) {
                        tracing::info!(
                            "{}: checkpoint {s} of the previous recovery point is gone; taking a full backup",
                            vm.qualified_name()
                        );
                    }
                }
                Err(ProviderError::Cancelled) => return Err(ProviderError::Cancelled),
                Err(e) => tracing::warn!(
                    "{}: checkpoints unavailable: {}",
                    vm.qualified_name(),
                    e.details().message
                ),
            }
        }
        let checkpoint = cbt.then(|| {
            format!(
                "{}{}-{}",
                self.checkpoint_prefix,
                at.format("%Y%m%dT%H%M%SZ"),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            )
        });
        let ckpt_xml = checkpoint.as_ref().map(|name| {
            let disks: String = dom
                .disks
                .iter()
                .map(|d| {
                    format!(
                        "<disk name='{}' checkpoint='bitmap'/>",
                        xml_escape(&d.target)
                    )
                })
                .collect();
            format!(
                "<domaincheckpoint><name>{name}</name><disks>{disks}</disks></domaincheckpoint>"
            )
        });
        let ckpt_file = work.path().join("checkpoint.xml");
        if let Some(x) = &ckpt_xml {
            std::fs::write(&ckpt_file, x)
                .map_err(|e| ProviderError::io(format!("writing {}", ckpt_file.display()), e))?;
        }
        let backup_file = work.path().join("backup.xml");
        let write_backup_xml = |incremental: Option<&str>| {
            let inc = incremental
                .map(|b| format!("<incremental>{}</incremental>", xml_escape(b)))
                .unwrap_or_default();
            let mut disks = String::new();
            for d in &dom.disks {
                let scratch = work.path().join(format!("{}.scratch", d.target));
                disks.push_str(&format!(
                    "<disk name='{}' backup='yes' type='file'><scratch file='{}'/></disk>",
                    xml_escape(&d.target),
                    xml_escape(&scratch.to_string_lossy())
                ));
            }
            for (target, _) in &dom.skipped {
                if target != "?" && !dom.disks.iter().any(|d| &d.target == target) {
                    disks.push_str(&format!(
                        "<disk name='{}' backup='no'/>",
                        xml_escape(target)
                    ));
                }
            }
            let xml = format!(
                "<domainbackup mode='pull'>{inc}<server transport='unix' socket='{}'/><disks>{disks}</disks></domainbackup>",
                xml_escape(&socket.to_string_lossy())
            );
            std::fs::write(&backup_file, xml)
                .map_err(|e| ProviderError::io(format!("writing {}", backup_file.display()), e))
        };

        // Freeze (best effort), begin the job, thaw at once.
        cancel.check()?;
        let freeze = if dom.has_agent_channel {
            FreezeGuard::freeze(&self.virsh, uuid, &vm.qualified_name())
        } else {
            None
        };
        let consistency = if freeze.is_some() {
            Consistency::FileSystemConsistent
        } else {
            Consistency::CrashConsistent
        };
        let mut job = BackupJob {
            virsh: self.virsh.clone(),
            uuid: uuid.to_string(),
            active: false,
        };
        let mut args: Vec<String> = vec![
            "backup-begin".into(),
            uuid.into(),
            backup_file.to_string_lossy().into_owned(),
        ];
        if checkpoint.is_some() {
            args.push(ckpt_file.to_string_lossy().into_owned());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        write_backup_xml(base.as_deref())?;
        let begun = match self.virsh.run(&argv, cancel) {
            Ok(_) => Ok(()),
            Err(e) if base.is_some() && !matches!(e, ProviderError::Cancelled) => {
                // The base checkpoint may be unusable (e.g. a bitmap lost in a crash):
                // fall back to a full backup, still creating the new checkpoint.
                tracing::warn!(
                    "{}: incremental backup from {} failed ({}); taking a full backup",
                    vm.qualified_name(),
                    base.as_deref().unwrap_or(""),
                    e.details().message
                );
                base = None;
                write_backup_xml(None)?;
                self.virsh.run(&argv, cancel).map(|_| ())
            }
            Err(e) => Err(e),
        };
        let thawed = match freeze {
            Some(f) => f.thaw(),
            None => Ok(()),
        };
        begun.map_err(|e| {
            e.recommend("Check that libvirt and QEMU support backup jobs (libvirt 7.2 or newer, QEMU 6.0 or newer)")
        })?;
        job.active = true;
        thawed?;

        #[cfg(test)]
        if self
            .fail_after_backup_begin
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(ProviderError::new(
                "InjectedFailure",
                "Injected failure",
                "test failure after backup-begin",
            ));
        }

        let mut disks = Vec::new();
        let mut open = Vec::new();
        let mut labels = Vec::new();
        for (i, d) in dom.disks.iter().enumerate() {
            cancel.check()?;
            let dirty = base.as_ref().map(|b| DirtyBitmap {
                since_token: b.clone(),
                bitmap: format!("backup-{}", d.target),
            });
            let label = format!("disk {} of {}", d.target, vm.qualified_name());
            let disk = OpenDisk::open_nbd_export(&socket, &d.target, dirty, &label)
                .map_err(|e| e.recommend(job_ended_hint(uuid)))?;
            disks.push(DiskInfo {
                index: i as u32,
                name: d.target.clone(),
                capacity: disk.capacity(),
            });
            open.push(Arc::new(disk));
            labels.push(label);
        }
        let definition = VmDefinition {
            domain_xml: Some(dom.xml.clone()),
            disk_formats: dom
                .disks
                .iter()
                .enumerate()
                .filter_map(|(i, d)| Some((i as u32, d.format.clone()?)))
                .collect(),
        };
        Ok(Box::new(RunningSnapshot {
            open,
            disks,
            definition,
            labels,
            consistency,
            token: checkpoint,
            job,
            _work: work,
        }))
    }

    /// Ends a backup job that an earlier vmvault run of this vault left behind (recognised
    /// by its socket in one of this vault's work folders, or in a work folder from before
    /// they carried the vault); leaves anybody else's job alone, another vault's too (only
    /// one vmvault process owns a vault, so a job of this vault is never live here).
    fn end_stale_backup(&self, uuid: &str, cancel: &CancelToken) -> Result<(), ProviderError> {
        let info = match self.virsh.raw(&["domjobinfo", uuid], qemu::QUICK, cancel) {
            Ok(i) => i,
            Err(RunError::Cancelled) => return Err(ProviderError::Cancelled),
            Err(_) => return Ok(()),
        };
        let is_backup = info
            .lines()
            .any(|l| l.starts_with("Operation:") && l.contains("Backup"));
        if !is_backup {
            return Ok(());
        }
        let xml = self.virsh.run(&["backup-dumpxml", uuid], cancel)?;
        let ours = xml.contains(&format!("/{}-", self.work_prefix)) || legacy_work_folder_in(&xml);
        if ours {
            tracing::warn!(
                "domain {uuid}: ending a backup job left behind by an earlier vmvault run"
            );
            self.virsh.run(&["domjobabort", uuid], cancel)?;
            Ok(())
        } else if xml.contains(&format!("/{WORK_PREFIX}-v")) {
            Err(ProviderError::new(
                "UserErrorBackupJobRunning",
                "Another backup job is running",
                format!("domain {uuid} is being backed up by another vmvault vault"),
            )
            .recommend("Wait for that backup to finish; the next scheduled backup runs as usual"))
        } else {
            Err(ProviderError::new(
                "UserErrorBackupJobRunning",
                "Another backup job is running",
                format!("domain {uuid} has a backup job that vmvault did not start"),
            )
            .recommend(
                "Wait for the other backup tool to finish, or end its job with `virsh domjobabort`",
            ))
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// A guest whose file systems are frozen; thawed on drop.
struct FreezeGuard {
    virsh: Virsh,
    uuid: String,
    thawed: bool,
}

impl FreezeGuard {
    /// Freezes through the guest agent; None (crash-consistent) when it does not answer.
    fn freeze(virsh: &Virsh, uuid: &str, vm: &str) -> Option<FreezeGuard> {
        // A fresh token: a cancel must not interrupt between freeze and thaw.
        match virsh.raw(&["domfsfreeze", uuid], AGENT_TIMEOUT, &CancelToken::new()) {
            Ok(_) => Some(FreezeGuard {
                virsh: virsh.clone(),
                uuid: uuid.to_string(),
                thawed: false,
            }),
            Err(e) => {
                tracing::warn!(
                    "{vm}: guest agent did not freeze the file systems ({}); crash-consistent",
                    qemu::one_line(e.stderr())
                );
                // A freeze that timed out may still have happened in the guest.
                if matches!(e, RunError::TimedOut { .. }) {
                    let _ = virsh.raw(&["domfsthaw", uuid], AGENT_TIMEOUT, &CancelToken::new());
                }
                None
            }
        }
    }

    fn thaw(mut self) -> Result<(), ProviderError> {
        self.thawed = true;
        let mut last = None;
        for _ in 0..3 {
            match self.virsh.raw(
                &["domfsthaw", &self.uuid],
                AGENT_TIMEOUT,
                &CancelToken::new(),
            ) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(|e| e.into_provider(&format!("thawing the file systems of domain {}", self.uuid)))
            .unwrap_or(ProviderError::Cancelled)
            .recommend(format!(
                "Thaw the guest by hand: virsh domfsthaw {}",
                self.uuid
            )))
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        if !self.thawed {
            let _ = self.virsh.raw(
                &["domfsthaw", &self.uuid],
                AGENT_TIMEOUT,
                &CancelToken::new(),
            );
        }
    }
}

/// A started pull-mode backup job; ended on drop.
#[derive(Debug)]
struct BackupJob {
    virsh: Virsh,
    uuid: String,
    active: bool,
}

impl BackupJob {
    fn end(&mut self) -> Result<(), ProviderError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let no_cancel = CancelToken::new();
        match self
            .virsh
            .raw(&["domjobabort", &self.uuid], qemu::QUICK, &no_cancel)
        {
            Ok(_) => {
                // The abort returns before libvirt has torn the job down; the next backup
                // of this domain can begin only once it has.
                let start = std::time::Instant::now();
                while start.elapsed() < qemu::QUICK {
                    match self
                        .virsh
                        .raw(&["domjobinfo", &self.uuid], qemu::QUICK, &no_cancel)
                    {
                        Ok(info)
                            if info
                                .lines()
                                .any(|l| l.starts_with("Job type:") && !l.contains("None")) =>
                        {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        _ => return Ok(()),
                    }
                }
                Err(ProviderError::new(
                    "ToolTimedOut",
                    "The backup job did not end",
                    format!(
                        "the backup job of domain {} was still running {} s after it was aborted",
                        self.uuid,
                        qemu::QUICK.as_secs()
                    ),
                )
                .recommend(format!("Check it with: virsh domjobinfo {}", self.uuid)))
            }
            // The domain stopped meanwhile, and its job with it.
            Err(e)
                if e.stderr().contains("no job is active")
                    || e.stderr().contains("not running") =>
            {
                Ok(())
            }
            Err(e) => Err(e
                .into_provider(&format!("ending the backup job of domain {}", self.uuid))
                .recommend(format!("End it by hand: virsh domjobabort {}", self.uuid))),
        }
    }
}

impl Drop for BackupJob {
    fn drop(&mut self) {
        if let Err(e) = self.end() {
            tracing::error!("{}", e.details().message);
        }
    }
}

/// A running domain's point in time: a libvirt backup job and its NBD exports.
struct RunningSnapshot {
    // Field order is drop order: readers disconnect, then the job ends, then the folder goes.
    open: Vec<Arc<OpenDisk>>,
    disks: Vec<DiskInfo>,
    definition: VmDefinition,
    /// `disk vda of sales/web01`, per disk.
    labels: Vec<String>,
    consistency: Consistency,
    token: Option<String>,
    job: BackupJob,
    _work: PrivateDir,
}

impl Snapshot for RunningSnapshot {
    fn consistency(&self) -> Consistency {
        self.consistency
    }
    fn definition(&self) -> VmDefinition {
        self.definition.clone()
    }
    fn cbt_token(&self) -> Option<String> {
        self.token.clone()
    }
    fn disks(&self) -> &[DiskInfo] {
        &self.disks
    }
    fn open_disk(&self, index: u32) -> Result<Box<dyn DiskReader>, ProviderError> {
        Ok(Box::new(ExportReader {
            inner: open_disk(&self.open, index)?,
            uuid: self.job.uuid.clone(),
            label: self.labels.get(index as usize).cloned().unwrap_or_default(),
        }))
    }
    fn release(mut self: Box<Self>) -> Result<(), ProviderError> {
        self.open.clear();
        self.job.end()
    }
}

/// Reads a backup job's export; a failure says what usually causes it: the job ended
/// under vmvault.
struct ExportReader {
    inner: Box<dyn DiskReader>,
    uuid: String,
    /// `disk vda of sales/web01`, named in every error.
    label: String,
}

impl ExportReader {
    fn explain<T>(&self, r: Result<T, ProviderError>) -> Result<T, ProviderError> {
        r.map_err(|e| match e {
            ProviderError::Failed(mut d) => {
                if !d.message.contains(&self.label) {
                    d.message = format!("{}: {}", self.label, d.message);
                }
                ProviderError::Failed(d).recommend(job_ended_hint(&self.uuid))
            }
            c => c,
        })
    }
}

/// What usually makes a backup job's export unreadable.
fn job_ended_hint(uuid: &str) -> String {
    format!(
        "The backup job of domain {uuid} may have ended while vmvault read it (`virsh domjobabort`, or the \
         domain was shut down or crashed); check `virsh domjobinfo {uuid}` and the domain's log, then back up again"
    )
}

impl DiskReader for ExportReader {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn allocated_extents(&self) -> Result<Vec<crate::model::Extent>, ProviderError> {
        self.explain(self.inner.allocated_extents())
    }
    fn changed_extents(
        &self,
        since: &str,
    ) -> Result<Option<Vec<crate::model::Extent>>, ProviderError> {
        self.explain(self.inner.changed_extents(since))
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        self.explain(self.inner.read_at(offset, buf))
    }
}

/// A shut-off domain's disk files, held open under QEMU's read locks.
struct OfflineSnapshot {
    disks: Vec<DiskInfo>,
    open: Vec<Arc<OpenDisk>>,
    definition: VmDefinition,
}

impl Snapshot for OfflineSnapshot {
    fn consistency(&self) -> Consistency {
        Consistency::CrashConsistent
    }
    fn definition(&self) -> VmDefinition {
        self.definition.clone()
    }
    fn cbt_token(&self) -> Option<String> {
        None
    }
    fn disks(&self) -> &[DiskInfo] {
        &self.disks
    }
    fn open_disk(&self, index: u32) -> Result<Box<dyn DiskReader>, ProviderError> {
        open_disk(&self.open, index)
    }
}

fn open_disk(open: &[Arc<OpenDisk>], index: u32) -> Result<Box<dyn DiskReader>, ProviderError> {
    open.get(index as usize).map(|d| d.reader()).ok_or_else(|| {
        ProviderError::new(
            "DiskNotFound",
            "No such disk",
            format!(
                "the snapshot has {} disks; disk {index} does not exist",
                open.len()
            ),
        )
    })
}

impl Provider for LibvirtProvider {
    fn kind(&self) -> &'static str {
        "libvirt"
    }

    fn describe(&self) -> String {
        format!("libvirt host {} (region {})", self.virsh.uri, self.region)
    }

    fn discover(&self, cancel: &CancelToken) -> Result<Discovery, ProviderError> {
        qemu::require_tool("virsh")?;
        let list = self
            .virsh
            .run(&["list", "--all", "--uuid"], cancel)
            .map_err(|e| {
                e.recommend(format!(
                    "Check that libvirt is running and that `virsh -c {} list --all` works",
                    self.virsh.uri
                ))
            })?;
        let host = self.host_name(cancel)?;
        let mut found = Discovery::default();
        for uuid in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            cancel.check()?;
            let (dom, state) = match self.domain(uuid, cancel) {
                Ok(d) => d,
                // Undefined between the listing and now.
                Err(ProviderError::Failed(d)) if d.code == "UserErrorVmNotFound" => continue,
                Err(e) => return Err(e),
            };
            if self.is_local() || dom.disks.is_empty() {
                qemu::require_tool("qemu-img")?;
            }
            let disks = self.resolve_disks_for_discovery(&dom, &mut found.warnings, cancel)?;
            found.vms.push(self.to_vm(&dom, state, &disks, &host));
        }
        Ok(found)
    }

    fn register(&self, vm: &Vm, cancel: &CancelToken) -> Result<RegistrationReport, ProviderError> {
        qemu::require_tool("virsh")?;
        let uuid = self.uuid_of(vm)?;
        let (dom, state) = self.domain(uuid, cancel)?;
        if !self.is_local() {
            return Err(self.remote_error(vm));
        }
        let mut report = RegistrationReport::default();
        if dom.disks.is_empty() {
            return Err(ProviderError::new(
                "UserErrorNoDisks",
                "Nothing to back up",
                format!("{} has no file, block or volume disk", vm.qualified_name()),
            ));
        }
        let disks = self.resolve_disks(&dom, cancel)?;
        for (i, d) in disks.iter().enumerate() {
            std::fs::File::open(&d.path).map_err(|e| {
                ProviderError::io(format!("disk {} of {} ({})", d.target, vm.qualified_name(), d.path.display()), e)
                    .recommend("vmvault must be able to read the domain's disk files: run it as root or as a member of the libvirt group")
            })?;
            report.findings.push(format!(
                "disk {i} {}: {} ({}, {}), readable",
                d.target,
                d.path.display(),
                d.format,
                human_bytes(d.capacity)
            ));
        }
        for (target, why) in &dom.skipped {
            // Removable media are expected not to be backed up; anything else is news.
            if why != "a cdrom" && why != "a floppy" {
                report
                    .warnings
                    .push(format!("disk {target} is not backed up: it is {why}"));
            }
        }
        if !dom.has_agent_channel {
            report.warnings.push(
                "no guest agent channel (org.qemu.guest_agent.0): backups of the running VM are crash-consistent; \
                 add the channel and install qemu-guest-agent in the guest for file-system consistent backups"
                    .into(),
            );
        } else if state == PowerState::Running {
            match self.virsh.raw(&["qemu-agent-command", uuid, "--timeout", "5", r#"{"execute":"guest-ping"}"#], qemu::QUICK, cancel) {
                Ok(_) => report.findings.push("guest agent: responding (backups of the running VM are file-system consistent)".into()),
                Err(RunError::Cancelled) => return Err(ProviderError::Cancelled),
                Err(e) => report.warnings.push(format!(
                    "guest agent not responding ({}): backups of the running VM are crash-consistent until qemu-guest-agent runs in the guest",
                    qemu::one_line(e.stderr())
                )),
            }
        } else {
            report
                .findings
                .push("guest agent channel: present (checked when the VM runs)".into());
        }
        if dom
            .disks
            .iter()
            .all(|d| d.format.as_deref() == Some("qcow2"))
        {
            report.findings.push("changed-block tracking: libvirt checkpoints on qcow2 disks (incremental backups while the VM runs)".into());
        } else {
            report.warnings.push("changed-block tracking unavailable: not every disk is qcow2, so every backup reads all allocated data".into());
        }
        Ok(report)
    }

    fn snapshot(
        &self,
        vm: &Vm,
        at: DateTime<Utc>,
        since: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError> {
        qemu::require_tool("virsh")?;
        let uuid = self.uuid_of(vm)?;
        let (dom, state) = self.domain(uuid, cancel)?;
        if !self.is_local() {
            return Err(self.remote_error(vm));
        }
        if dom.disks.is_empty() {
            return Err(ProviderError::new(
                "UserErrorNoDisks",
                "Nothing to back up",
                format!("{} has no file, block or volume disk", vm.qualified_name()),
            ));
        }
        if state == PowerState::Stopped {
            match self.offline_snapshot(vm, &dom, cancel) {
                Err(e) if qemu::is_image_in_use(&e) => {
                    // Started meanwhile? Then take the running path once.
                    let (dom, state) = self.domain(uuid, cancel)?;
                    if state == PowerState::Running {
                        return self.running_snapshot(vm, &dom, at, since, cancel);
                    }
                    Err(e.recommend("Another process holds the disk for writing although the domain is shut off; stop it and retry"))
                }
                other => other,
            }
        } else {
            self.running_snapshot(vm, &dom, at, since, cancel)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::qemu::test_support::*;
    use super::*;
    use std::path::Path;
    use std::process::Command;

    #[test]
    fn checkpoints_are_the_vaults_own_or_from_before_names_carried_a_vault() {
        let s = LibvirtSettings {
            uri: "test:///default".into(),
            region: "lab-1".into(),
            cloud_service: None,
            scratch_dir: None,
        };
        let a = LibvirtProvider::new(&s).unwrap().for_vault("vault-a");
        let b = LibvirtProvider::new(&s).unwrap().for_vault("vault-b");
        let legacy = "vmvault-20261128T101500Z-1a2b3c4d";
        assert!(legacy_checkpoint(legacy));
        assert!(a.owns_checkpoint(legacy) && b.owns_checkpoint(legacy));
        let mine = format!("{}20261128T101500Z-1a2b3c4d", a.checkpoint_prefix);
        assert!(a.owns_checkpoint(&mine) && !b.owns_checkpoint(&mine));
        assert!(!legacy_checkpoint(&mine));
        assert!(!a.owns_checkpoint("nightly") && !a.owns_checkpoint("vmvault-backup"));
        // The same vault name gives the same names in every process.
        let again = LibvirtProvider::new(&s).unwrap().for_vault("vault-a");
        assert_eq!(a.checkpoint_prefix, again.checkpoint_prefix);
    }

    #[test]
    fn work_folders_from_before_they_carried_the_vault() {
        assert!(legacy_work_folder_in(
            "<server transport='unix' socket='/tmp/vmvault-backup-1a2b3c4d5e6f/nbd.sock'/>"
        ));
        assert!(!legacy_work_folder_in(
            "<server transport='unix' socket='/tmp/vmvault-backup-v0011aabb-1a2b3c4d5e6f/nbd.sock'/>"
        ));
        assert!(!legacy_work_folder_in(
            "<server socket='/run/other/nbd.sock'/>"
        ));
    }

    #[test]
    fn osinfo_ids_of_linux_distributions_and_of_other_systems() {
        for id in [
            "http://debian.org/debian/12",
            "http://ubuntu.com/ubuntu/24.04",
            "http://redhat.com/rhel/9.4",
            "http://oracle.com/ol/8.0",
            "http://suse.com/sles/15.5",
            "http://archlinux.org/archlinux/rolling",
        ] {
            assert!(osinfo_is_linux(id), "{id}");
        }
        for id in [
            "http://oracle.com/solaris/11",
            "http://novell.com/netware/6.5",
            "http://freebsd.org/freebsd/14.0",
            "http://microsoft.com/win/2k19",
        ] {
            assert!(!osinfo_is_linux(id), "{id}");
        }
    }

    const DOMAIN_XML: &str = r#"<domain type='kvm' id='3'>
  <name>web01</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://microsoft.com/win/2k19"/>
    </libosinfo:libosinfo>
    <vmvault:vm xmlns:vmvault="urn:vmvault:libvirt:1"><vmvault:cloud-service> sales </vmvault:cloud-service></vmvault:vm>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <vcpu placement='static'>2</vcpu>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web01.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='volume' device='disk'><source pool='default' volume='logs.qcow2'/><target dev='vdc' bus='virtio'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdd' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/base.img'/><target dev='vde' bus='virtio'/><readonly/></disk>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+108</label></seclabel>
</domain>"#;

    #[test]
    fn parses_the_domain_xml() {
        let d = parse_domain(DOMAIN_XML).unwrap();
        assert_eq!(d.name, "web01");
        assert_eq!(d.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!((d.vcpus, d.memory_kib), (2, 4 << 20));
        assert_eq!(d.os, Os::Windows);
        assert_eq!(d.cloud_service.as_deref(), Some("sales"));
        assert!(d.has_agent_channel);
        assert_eq!(d.qemu_owner, Some((64055, 108)));
        let targets: Vec<&str> = d.disks.iter().map(|d| d.target.as_str()).collect();
        assert_eq!(targets, ["vda", "vdb", "vdc"]);
        assert_eq!(d.disks[1].source, DiskSource::Path("/dev/vg/data".into()));
        assert_eq!(
            d.disks[2].source,
            DiskSource::Volume {
                pool: "default".into(),
                volume: "logs.qcow2".into()
            }
        );
        assert_eq!(d.disks[2].format, None);
        let skipped: Vec<&str> = d.skipped.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(skipped, ["vdd", "sda", "vde"]);
        // No metadata: Linux, no tag; Hyper-V enlightenments: Windows.
        let plain = "<domain><name>a</name><uuid>u</uuid><memory unit='MiB'>512</memory><devices/></domain>";
        let d = parse_domain(plain).unwrap();
        assert_eq!(
            (d.os, d.cloud_service, d.memory_kib, d.vcpus),
            (Os::Unknown, None, 512 << 10, 1)
        );
        let osinfo = |id: &str| {
            format!("<domain><name>a</name><uuid>u</uuid><metadata><libosinfo:libosinfo xmlns:libosinfo=\"{LIBOSINFO_NS}\"><libosinfo:os id=\"{id}\"/></libosinfo:libosinfo></metadata></domain>")
        };
        assert_eq!(
            parse_domain(&osinfo("http://debian.org/debian/12"))
                .unwrap()
                .os,
            Os::Linux
        );
        assert_eq!(
            parse_domain(&osinfo("http://ubuntu.com/ubuntu/24.04"))
                .unwrap()
                .os,
            Os::Linux
        );
        assert_eq!(
            parse_domain(&osinfo("http://freebsd.org/freebsd/14.0"))
                .unwrap()
                .os,
            Os::Unknown
        );
        let hv = "<domain><name>a</name><uuid>u</uuid><features><hyperv mode='custom'/></features></domain>";
        assert_eq!(parse_domain(hv).unwrap().os, Os::Windows);
        assert!(parse_domain("<domain><uuid>u</uuid></domain>").is_err());
        assert_eq!(power_state("shut off\n"), PowerState::Stopped);
        assert_eq!(power_state("paused"), PowerState::Running);
    }

    #[test]
    fn settings_are_checked() {
        let s: LibvirtSettings =
            toml::from_str("uri = \"qemu+ssh://root@kvm1:22/system\"\nregion = \"r\"\n").unwrap();
        let p = LibvirtProvider::new(&s).unwrap();
        assert_eq!(p.uri_host(), "kvm1");
        assert!(!p.is_local());
        let local = LibvirtProvider::new(&LibvirtSettings {
            uri: "qemu:///system".into(),
            ..s.clone()
        })
        .unwrap();
        assert!(local.is_local());
        assert!(LibvirtProvider::new(&LibvirtSettings {
            uri: "nonsense".into(),
            ..s.clone()
        })
        .is_err());
        assert!(LibvirtProvider::new(&LibvirtSettings {
            region: "".into(),
            ..s
        })
        .is_err());
        assert!(toml::from_str::<LibvirtSettings>(
            "uri = \"test:///default\"\nregion = \"r\"\nkind = \"libvirt\"\n"
        )
        .is_err());
    }

    #[test]
    fn missing_virsh_is_a_clear_error_at_discovery() {
        let p = LibvirtProvider::new(&LibvirtSettings {
            uri: "test:///default".into(),
            region: "r".into(),
            cloud_service: None,
            scratch_dir: None,
        })
        .unwrap();
        let e = without_tool("virsh", || p.discover(&CancelToken::new()))
            .unwrap_err()
            .details();
        assert_eq!(e.code, qemu::TOOL_NOT_FOUND);
        assert!(
            e.message.contains("virsh not found")
                && e.message.contains("libvirt-clients (Debian/Ubuntu)"),
            "{}",
            e.message
        );
    }

    fn p(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    include!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/libvirt_node.rs"
    ));

    /// The shared test-driver node (web01, win01) and ghost01, whose disk file is gone.
    fn test_node(dir: &Path) -> PathBuf {
        libvirt_test_node(
            dir,
            |base| {
                let base = base.to_str().expect("UTF-8 test path");
                sh(
                    "qemu-io",
                    &["-f", "qcow2", "-c", "write -P 0x21 0 2M", base],
                );
            },
            r#"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>ghost01</name><uuid>33333333-2222-3333-4444-555555555555</uuid>
    <memory unit='MiB'>512</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/nonexistent/vmvault/ghost.qcow2'/><target dev='vda' bus='virtio'/></disk>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>"#,
        )
    }

    #[test]
    fn test_driver_discovery_and_offline_backup() {
        if !need_tool("virsh")
            || !need_tool("qemu-img")
            || !need_tool("qemu-nbd")
            || !need_tool("qemu-io")
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let node = test_node(dir.path());
        let provider = LibvirtProvider::new(&LibvirtSettings {
            uri: format!("test://{}", node.display()),
            region: "lab-1".into(),
            cloud_service: None,
            scratch_dir: None,
        })
        .unwrap();
        let found = provider.discover(&CancelToken::new()).unwrap();
        let mut vms = found.vms;
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(vms.len(), 3);
        // A domain whose disk file is gone is still discovered (capacity unknown: 0), with
        // a warning of the discovery.
        let ghost = vms.remove(0);
        assert!(
            found.warnings.len() == 1 && found.warnings[0].contains(&ghost.name),
            "{:?}",
            found.warnings
        );
        assert_eq!(ghost.name, "ghost01");
        assert_eq!(ghost.disks[0].capacity, 0);
        assert!(provider
            .snapshot(&ghost, Utc::now(), None, &CancelToken::new())
            .is_err());
        let web = &vms[0];
        assert_eq!(
            web.source_id,
            "libvirt:11111111-2222-3333-4444-555555555555"
        );
        assert_eq!(
            (
                web.name.as_str(),
                web.cloud_service.as_str(),
                web.region.as_str()
            ),
            ("web01", "sales", "lab-1")
        );
        assert_eq!(web.size, "2 vCPU, 2 GiB");
        assert_eq!(web.os, Os::Unknown, "no OS metadata");
        assert_eq!(web.power_state, PowerState::Stopped);
        let disks: Vec<(&str, u64)> = web
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.capacity))
            .collect();
        assert_eq!(
            disks,
            [("vda", 16 << 20), ("vdb", 8 << 20)],
            "the cdrom is skipped"
        );
        let win = &vms[1];
        assert_eq!((win.os, win.size.as_str()), (Os::Windows, "4 vCPU, 4 GiB"));
        let host = String::from_utf8(
            Command::new("virsh")
                .args(["-c", &provider.virsh.uri, "hostname"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(win.cloud_service, host.trim(), "no tag: the host name");

        let reg = provider.register(web, &CancelToken::new()).unwrap();
        assert!(
            reg.findings
                .iter()
                .any(|f| f.starts_with("disk 0 vda:") && f.contains("readable")),
            "{reg:?}"
        );
        assert!(
            reg.warnings
                .iter()
                .any(|w| w.contains("no guest agent channel")),
            "{reg:?}"
        );
        assert!(
            reg.findings
                .iter()
                .any(|f| f.contains("changed-block tracking")),
            "{reg:?}"
        );

        let snap = provider
            .snapshot(web, Utc::now(), None, &CancelToken::new())
            .unwrap();
        assert_eq!(snap.consistency(), Consistency::CrashConsistent);
        assert_eq!(snap.cbt_token(), None);
        assert_eq!(snap.disks(), web.disks.as_slice());
        // The domain's definition and its disks' formats go with the point.
        let def = snap.definition();
        let xml = def.domain_xml.as_deref().unwrap_or("");
        assert!(
            xml.contains("<name>web01</name>") && xml.contains("web.qcow2"),
            "{xml}"
        );
        assert_eq!(
            def.disk_formats,
            vec![(0, "qcow2".to_string()), (1, "qcow2".to_string())]
        );
        for (i, file) in ["web.qcow2", "data.qcow2"].iter().enumerate() {
            let r = snap.open_disk(i as u32).unwrap();
            assert_eq!(
                read_all(r.as_ref()),
                raw_of(&dir.path().join(file), "qcow2"),
                "{file}"
            );
            assert_eq!(r.changed_extents("x").unwrap(), None);
        }
        drop(snap);
        let gone = Vm {
            source_id: "libvirt:99999999-2222-3333-4444-555555555555".into(),
            ..web.clone()
        };
        let e = provider
            .snapshot(&gone, Utc::now(), None, &CancelToken::new())
            .err()
            .unwrap()
            .details();
        assert_eq!(e.code, "UserErrorVmNotFound", "{e:?}");
    }

    // ---- real QEMU under libvirtd ---------------------------------------------------

    const SYSTEM: &str = "qemu:///system";

    fn virsh(args: &[&str]) -> std::process::Output {
        Command::new("virsh")
            .args(["-q", "-c", SYSTEM])
            .args(args)
            .output()
            .unwrap()
    }

    /// True when qemu:///system answers; starts virtlogd and libvirtd (as root) when they
    /// are installed but not running.
    fn system_libvirt() -> bool {
        if !need_tool("virsh")
            || !need_tool("qemu-system-x86_64")
            || !need_tool("qemu-nbd")
            || !need_tool("qemu-img")
        {
            return false;
        }
        static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = START.lock().unwrap_or_else(|e| e.into_inner());
        if virsh(&["version"]).status.success() {
            return true;
        }
        if qemu::find_tool("libvirtd").is_none() {
            return skip("libvirtd is not installed (apt-get install libvirt-daemon-driver-qemu libvirt-daemon)");
        }
        if qemu::find_tool("virtlogd").is_some() {
            let _ = Command::new("virtlogd").arg("-d").status();
        }
        let started = Command::new("libvirtd").arg("-d").output().unwrap();
        for _ in 0..100 {
            if virsh(&["version"]).status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let why = String::from_utf8_lossy(&virsh(&["version"]).stderr).into_owned();
        skip(&format!(
            "qemu:///system unreachable after starting libvirtd ({}): {why}",
            String::from_utf8_lossy(&started.stderr).trim()
        ))
    }

    /// A defined and started domain (software emulation, no OS) on one qcow2 disk;
    /// destroyed and undefined on drop.
    struct TestDomain {
        name: String,
        disk: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl TestDomain {
        fn start(agent: bool) -> TestDomain {
            Self::start_with(agent, None)
        }

        /// `kit`: boot the guest kit (kernel + initramfs running the guest agent).
        fn start_with(agent: bool, kit: Option<&Path>) -> TestDomain {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            // QEMU runs as another user: it must reach the image.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let disk = dir.path().join("disk0.qcow2");
            sh(
                "qemu-img",
                &["create", "-q", "-f", "qcow2", p(&disk), "32M"],
            );
            sh(
                "qemu-io",
                &[
                    "-f",
                    "qcow2",
                    "-c",
                    "write -P 0x11 0 1M",
                    "-c",
                    "write -P 0x12 16M 1M",
                    p(&disk),
                ],
            );
            let name = format!(
                "vmvault-test-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let channel = if agent {
                "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
            } else {
                ""
            };
            let (boot, memory, console) = match kit {
                Some(k) => (
                    format!(
                        "<kernel>{}</kernel><initrd>{}</initrd><cmdline>console=ttyS0 panic=-1</cmdline>",
                        k.join("vmlinuz").display(),
                        k.join("initrd.gz").display()
                    ),
                    256,
                    format!(
                        "<serial type='file'><source path='{}'/><target port='0'/></serial>",
                        dir.path().join("console.log").display()
                    ),
                ),
                None => (String::new(), 64, String::new()),
            };
            let xml = format!(
                "<domain type='qemu'><name>{name}</name><memory unit='MiB'>{memory}</memory><vcpu>1</vcpu>\
                 <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os><devices>\
                 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
                 {channel}{console}<memballoon model='none'/></devices></domain>",
                disk.display()
            );
            let xml_path = dir.path().join("domain.xml");
            std::fs::write(&xml_path, xml).unwrap();
            let out = virsh(&["define", p(&xml_path)]);
            assert!(
                out.status.success(),
                "define: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let d = TestDomain {
                name,
                disk,
                _dir: dir,
            };
            d.run(&["start", &d.name]);
            d
        }

        fn run(&self, args: &[&str]) -> String {
            let out = virsh(args);
            assert!(
                out.status.success(),
                "virsh {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// Writes through the running QEMU, as the guest would.
        fn guest_write(&self, cmd: &str) {
            let hmp =
                format!("qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"{cmd}\"");
            let out = self.run(&["qemu-monitor-command", "--hmp", &self.name, &hmp]);
            assert!(!out.to_lowercase().contains("error"), "{cmd}: {out}");
        }

        fn job(&self) -> String {
            self.run(&["domjobinfo", &self.name])
        }

        fn vm(&self, provider: &LibvirtProvider) -> Vm {
            provider
                .discover(&CancelToken::new())
                .unwrap()
                .vms
                .into_iter()
                .find(|v| v.name == self.name)
                .unwrap()
        }
    }

    impl Drop for TestDomain {
        fn drop(&mut self) {
            let _ = virsh(&["destroy", &self.name]);
            let _ = virsh(&["undefine", &self.name, "--checkpoints-metadata"]);
        }
    }

    /// The guest kit built by tests/support/guest-kit.sh, if there is one.
    fn guest_kit() -> Option<PathBuf> {
        let dir = std::env::var_os("VMVAULT_GUEST_KIT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/vmvault-test/guest-kit"));
        if dir.join("vmlinuz").is_file() && dir.join("initrd.gz").is_file() {
            Some(dir)
        } else {
            skip(&format!(
                "no guest kit in {} (build it with tests/support/guest-kit.sh)",
                dir.display()
            ));
            None
        }
    }

    fn agent_status(dom: &TestDomain) -> String {
        let out = dom.run(&[
            "qemu-agent-command",
            &dom.name,
            "--timeout",
            "10",
            r#"{"execute":"guest-fsfreeze-status"}"#,
        ]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["return"].as_str().unwrap().to_string()
    }

    #[test]
    fn guest_agent_freeze_makes_a_file_system_consistent_point_and_always_thaws() {
        if !system_libvirt() {
            return;
        }
        let Some(kit) = guest_kit() else { return };
        let scratch = tempfile::tempdir().unwrap();
        let provider = system_provider(scratch.path());
        let dom = TestDomain::start_with(true, Some(&kit));
        let mut up = false;
        for _ in 0..120 {
            let ping = virsh(&[
                "qemu-agent-command",
                &dom.name,
                "--timeout",
                "2",
                r#"{"execute":"guest-ping"}"#,
            ]);
            if ping.status.success() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let console =
            || std::fs::read_to_string(dom.disk.with_file_name("console.log")).unwrap_or_default();
        assert!(
            up,
            "the guest agent never answered; console:\n{}",
            console()
        );
        let vm = dom.vm(&provider);
        let reg = provider.register(&vm, &CancelToken::new()).unwrap();
        assert!(
            reg.findings
                .iter()
                .any(|f| f.contains("guest agent: responding")),
            "{reg:?}"
        );

        let frozen_before = console().matches("guest-fsfreeze-freeze").count();
        let snap = provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        assert_eq!(snap.consistency(), Consistency::FileSystemConsistent);
        assert_eq!(
            agent_status(&dom),
            "thawed",
            "thawed right after backup-begin"
        );
        assert!(
            console().matches("guest-fsfreeze-freeze").count() > frozen_before,
            "the agent was asked to freeze"
        );
        let r = snap.open_disk(0).unwrap();
        assert_eq!(byte_at(r.as_ref(), 0), 0x11);
        assert_eq!(byte_at(r.as_ref(), 16 << 20), 0x12);
        drop(r);
        snap.release().unwrap();

        // A failure after the freeze still thaws the guest and ends the job.
        provider
            .fail_after_backup_begin
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .is_err());
        provider
            .fail_after_backup_begin
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(agent_status(&dom), "thawed");
        assert!(dom.job().contains("None"), "{}", dom.job());
        no_work_left(scratch.path());
    }

    fn system_provider(scratch: &Path) -> LibvirtProvider {
        LibvirtProvider::new(&LibvirtSettings {
            uri: SYSTEM.into(),
            region: "lab-1".into(),
            cloud_service: Some("kvm-lab".into()),
            scratch_dir: Some(scratch.to_path_buf()),
        })
        .unwrap()
    }

    fn no_work_left(scratch: &Path) {
        let left: Vec<_> = std::fs::read_dir(scratch)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "work folders left behind: {left:?}");
    }

    fn byte_at(r: &dyn DiskReader, offset: u64) -> u8 {
        let mut b = [0u8; 1];
        r.read_at(offset, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn running_domain_point_in_time_cbt_and_cleanup() {
        if !system_libvirt() {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let provider = system_provider(scratch.path()).for_vault("vault-a");
        let dom = TestDomain::start(true);
        let vm = dom.vm(&provider);
        assert_eq!(vm.power_state, PowerState::Running);
        assert_eq!(
            (vm.cloud_service.as_str(), vm.disks[0].capacity),
            ("kvm-lab", 32 << 20)
        );
        let reg = provider.register(&vm, &CancelToken::new()).unwrap();
        assert!(
            reg.warnings
                .iter()
                .any(|w| w.contains("guest agent not responding")),
            "{reg:?}"
        );

        // Full backup: a point in time that later guest writes do not change.
        let expected = {
            let out = scratch.path().join("expected.raw");
            sh(
                "qemu-img",
                &[
                    "convert",
                    "-U",
                    "-f",
                    "qcow2",
                    "-O",
                    "raw",
                    p(&dom.disk),
                    p(&out),
                ],
            );
            let b = std::fs::read(&out).unwrap();
            std::fs::remove_file(&out).unwrap();
            b
        };
        let snap = provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        assert_eq!(
            snap.consistency(),
            Consistency::CrashConsistent,
            "no agent answers in a guest without OS"
        );
        let token1 = snap.cbt_token().expect("qcow2 disks get a checkpoint");
        let def = snap.definition();
        assert!(
            def.domain_xml
                .as_deref()
                .is_some_and(|x| x.contains(&format!("<name>{}</name>", dom.name))),
            "{def:?}"
        );
        assert_eq!(def.disk_formats, vec![(0, "qcow2".to_string())]);
        assert!(dom.job().contains("Backup"));
        dom.guest_write("write -P 0xcd 0 64k");
        let r = snap.open_disk(0).unwrap();
        assert_eq!(r.capacity(), 32 << 20);
        let ext = r.allocated_extents().unwrap();
        assert!(
            ext.iter().map(|e| e.len).sum::<u64>() < 8 << 20,
            "holes are not data: {ext:?}"
        );
        assert_eq!(
            read_all(r.as_ref()),
            expected,
            "the snapshot is the point in time of backup-begin"
        );
        assert_eq!(
            r.changed_extents(&token1).unwrap(),
            None,
            "first backup has no base"
        );
        drop(r);
        snap.release().unwrap();
        assert!(dom.job().contains("None"), "job ended: {}", dom.job());
        no_work_left(scratch.path());

        // Incremental: only the blocks written since token1 are reported changed.
        dom.guest_write("write -P 0xee 1M 64k");
        dom.guest_write("write -P 0xef 20M 4k");
        let snap = provider
            .snapshot(&vm, Utc::now(), Some(&token1), &CancelToken::new())
            .unwrap();
        let token2 = snap.cbt_token().unwrap();
        assert_ne!(token1, token2);
        let r = snap.open_disk(0).unwrap();
        let changed = r
            .changed_extents(&token1)
            .unwrap()
            .expect("changed-block tracking from token1");
        let covers = |off: u64| changed.iter().any(|e| e.offset <= off && off < e.end());
        assert!(
            covers(0) && covers(1 << 20) && covers(20 << 20),
            "{changed:?}"
        );
        assert!(
            !covers(16 << 20) && !covers(8 << 20),
            "unchanged blocks are not reported: {changed:?}"
        );
        assert!(
            changed.iter().map(|e| e.len).sum::<u64>() <= 4 * 65536,
            "{changed:?}"
        );
        assert_eq!(r.changed_extents("vmvault-unknown").unwrap(), None);
        assert_eq!(
            (
                byte_at(r.as_ref(), 0),
                byte_at(r.as_ref(), 1 << 20),
                byte_at(r.as_ref(), 20 << 20)
            ),
            (0xcd, 0xee, 0xef)
        );
        assert_eq!(byte_at(r.as_ref(), 16 << 20), 0x12);
        drop(r);
        drop(snap); // Drop ends the job too.
        assert!(
            dom.job().contains("None"),
            "job ended on drop: {}",
            dom.job()
        );
        no_work_left(scratch.path());
        let ckpts = dom.run(&["checkpoint-list", &dom.name, "--name"]);
        assert!(
            ckpts.contains(&token1) && ckpts.contains(&token2),
            "{ckpts}"
        );

        // The next backup is incremental from token2, the vault's newest point; token1 is
        // pruned, and asking for changes since token1 answers "unknown".
        let snap = provider
            .snapshot(&vm, Utc::now(), Some(&token2), &CancelToken::new())
            .unwrap();
        let token3 = snap.cbt_token().unwrap();
        let r = snap.open_disk(0).unwrap();
        assert_eq!(r.changed_extents(&token1).unwrap(), None);
        assert_eq!(
            r.changed_extents(&token2).unwrap(),
            Some(vec![]),
            "nothing written since token2"
        );
        drop(r);
        drop(snap);
        let ckpts = dom.run(&["checkpoint-list", &dom.name, "--name"]);
        assert!(
            !ckpts.contains(&token1) && ckpts.contains(&token2) && ckpts.contains(&token3),
            "{ckpts}"
        );

        // A failure after backup-begin leaves no job and no work folder behind.
        provider
            .fail_after_backup_begin
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let e = provider
            .snapshot(&vm, Utc::now(), Some(&token3), &CancelToken::new())
            .err()
            .unwrap();
        assert_eq!(e.details().code, "InjectedFailure");
        provider
            .fail_after_backup_begin
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(
            dom.job().contains("None"),
            "job ended after failure: {}",
            dom.job()
        );
        no_work_left(scratch.path());
        assert_eq!(dom.run(&["domstate", &dom.name]).trim(), "running");

        // The failed backup's checkpoint never becomes a base: the next backup is still
        // incremental from the vault's token3, and the stray checkpoint is deleted.
        dom.guest_write("write -P 0xab 8M 4k");
        let snap = provider
            .snapshot(&vm, Utc::now(), Some(&token3), &CancelToken::new())
            .unwrap();
        let token4 = snap.cbt_token().unwrap();
        let r = snap.open_disk(0).unwrap();
        let changed = r
            .changed_extents(&token3)
            .unwrap()
            .expect("changed-block tracking from token3 despite the failed backup");
        let covers = |off: u64| changed.iter().any(|e| e.offset <= off && off < e.end());
        assert!(covers(8 << 20) && !covers(0), "{changed:?}");
        drop(r);
        snap.release().unwrap();
        let ckpts: Vec<String> = dom
            .run(&["checkpoint-list", &dom.name, "--name"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(ckpts.len(), 2, "{ckpts:?}");
        assert!(
            ckpts.contains(&token3) && ckpts.contains(&token4),
            "{ckpts:?}"
        );

        // Another vault backing up the same domain keeps to its own checkpoints: ours is
        // still our base afterwards, and our next backup leaves its checkpoint alone.
        let other = system_provider(scratch.path()).for_vault("vault-b");
        let snap_b = other
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        let b1 = snap_b.cbt_token().unwrap();
        assert!(!provider.owns_checkpoint(&b1) && other.owns_checkpoint(&b1));
        snap_b.release().unwrap();
        dom.guest_write("write -P 0xac 12M 4k");
        let snap = provider
            .snapshot(&vm, Utc::now(), Some(&token4), &CancelToken::new())
            .unwrap();
        let token5 = snap.cbt_token().unwrap();
        let r = snap.open_disk(0).unwrap();
        let changed = r
            .changed_extents(&token4)
            .unwrap()
            .expect("still incremental from token4 after the other vault's backup");
        assert!(
            changed
                .iter()
                .any(|e| e.offset <= 12 << 20 && 12 << 20 < e.end()),
            "{changed:?}"
        );
        drop(r);
        snap.release().unwrap();
        let ckpts = dom.run(&["checkpoint-list", &dom.name, "--name"]);
        assert!(
            ckpts.contains(&b1) && ckpts.contains(&token4) && ckpts.contains(&token5),
            "{ckpts}"
        );
        assert!(!ckpts.contains(&token3), "{ckpts}");

        // While the other vault's backup job runs, ours does not take it for one left
        // behind: it is refused, and the other job goes on.
        let live_b = other
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        let e = provider
            .snapshot(&vm, Utc::now(), Some(&token5), &CancelToken::new())
            .err()
            .expect("refused while another vault backs the domain up");
        assert_eq!(e.details().code, "UserErrorBackupJobRunning", "{e:?}");
        assert!(
            e.details().message.contains("another vmvault vault"),
            "{e:?}"
        );
        assert!(
            dom.job().contains("Backup"),
            "the other job runs on: {}",
            dom.job()
        );
        live_b.release().unwrap();

        // A cancelled backup starts nothing.
        let cancel = CancelToken::new();
        cancel.cancel();
        assert!(matches!(
            provider.snapshot(&vm, Utc::now(), None, &cancel),
            Err(ProviderError::Cancelled)
        ));
        assert!(dom.job().contains("None"));
        no_work_left(scratch.path());

        // A job left behind by a crashed vmvault is recognised and ended.
        let stale = provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        std::mem::forget(stale);
        let snap = provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        assert_eq!(byte_at(snap.open_disk(0).unwrap().as_ref(), 0), 0xcd);
        snap.release().unwrap();
        assert!(dom.job().contains("None"));
    }

    #[test]
    fn shut_off_domain_is_read_from_its_files_and_cannot_start_meanwhile() {
        if !system_libvirt() {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let provider = system_provider(scratch.path());
        let dom = TestDomain::start(false);
        dom.run(&["destroy", &dom.name]);
        let vm = dom.vm(&provider);
        assert_eq!(vm.power_state, PowerState::Stopped);
        let snap = provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        assert_eq!(
            (snap.consistency(), snap.cbt_token()),
            (Consistency::CrashConsistent, None)
        );
        let out = virsh(&["start", &dom.name]);
        assert!(
            !out.status.success(),
            "the domain must not start while its disk is read"
        );
        let r = snap.open_disk(0).unwrap();
        assert_eq!(read_all(r.as_ref()), raw_of(&dom.disk, "qcow2"));
        drop(r);
        drop(snap);
        dom.run(&["start", &dom.name]);
    }
}
