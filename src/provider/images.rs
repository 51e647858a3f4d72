//! The `images` source: a folder of disk images treated as VMs.
//!
//! Config: `[[vault]] source = { kind = "images", path = "/srv/images", region = "lab-1" }`.
//!
//! # What is a VM
//! - Each image file directly in the folder is a VM with one disk; its name is the file
//!   name without extension (the whole file name when two would clash).
//! - Each subfolder holding images is a VM with several disks, ordered by file name.
//! - Image files are recognised by extension: `.raw .img .bin .qcow2 .qcow .vmdk .vhd .vpc
//!   .vhdx` (other files, and hidden ones, are ignored). The format is pinned by the
//!   extension, never probed: `.raw .img .bin` are raw (a raw disk holds guest data, which
//!   can look like an image header naming other files). An `.img` that starts like a
//!   qcow2 image is read as raw, with a warning (cloud images named `.img` are often qcow2:
//!   rename those to `.qcow2`).
//! - A file that is the backing file of another image, its data file, or an extent of a
//!   split vmdk, is part of that disk, not a VM: a qcow2 overlay with its backing chain is
//!   ONE disk. A VM that became part of another so is reported by discovery with what
//!   happened.
//! - The cloud service is the folder's name, the region comes from the settings, and the
//!   source id is `images:<path relative to the folder>`, stable across runs.
//!
//! # What is read
//! Only regular files inside the folder, or inside the folders of `allowed_roots`; every
//! file an image names (backing files, data files, vmdk extents) is checked before QEMU's
//! tools may open it, and they get exactly the checked files (see `chain`). Registration
//! shows each disk's chain.
//!
//! # One bad image does not hide the others
//! An entry that looks like a VM but cannot be read (a truncated image, a missing backing
//! file, a backing loop, a FIFO, a socket or a device named like an image, a file outside
//! the folder) is listed with its error and is a warning of the Discover job; the other
//! VMs are listed as usual. Registering or backing it up fails with the same error.
//!
//! # Consistency
//! An image that no QEMU writes does not change while vmvault reads it: the snapshot holds
//! QEMU's read locks (directly on raw files, through `qemu-nbd` for other formats), so a
//! VM that starts during the backup cannot get the write lock. Whether the guest was shut
//! down cleanly cannot be known from the file, so the recovery point is marked
//! *crash-consistent* (Azure's word for the backup of a VM that is not running).
//! An image that a running QEMU writes is refused with a clear error (back the VM up
//! through the `libvirt` source, which takes a consistent snapshot of a running domain),
//! unless `allow_crash_consistent_reads = true`: then it is read while it changes, which is
//! crash-consistent at best (blocks written during the read may come from different
//! instants) — each such disk is a warning of the backup job (`Snapshot::warnings`), which
//! then completes with warnings.
//!
//! Plain files have no changed-block tracking: `cbt_token` is `None` and the vault reads
//! every allocated extent (its deduplication still stores only changed chunks).

use super::chain::{display_format, format_of_name, FileId, ImageChain, Roots, TopInfo};
use super::qemu::{self, human_bytes, OpenDisk};
use crate::cancel::CancelToken;
use crate::model::{Consistency, DiskInfo, ErrorDetails, Os, PowerState, Vm, VmDefinition};
use crate::provider::{
    Discovery, DiskReader, Provider, ProviderError, RegistrationReport, Snapshot, VM_ABSORBED,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The `source = { kind = "images", … }` table of a vault (without `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSettings {
    /// The folder that holds the images.
    pub path: PathBuf,
    /// The region the folder stands for.
    pub region: String,
    /// Read images that a running QEMU writes (crash-consistent at best). Default false.
    #[serde(default)]
    pub allow_crash_consistent_reads: Option<bool>,
    /// Folders outside `path` whose files images may reference (shared backing files,
    /// vmdk extents, symlinked images). Default none: only files inside `path` are read.
    #[serde(default)]
    pub allowed_roots: Vec<PathBuf>,
}

impl ImagesSettings {
    /// Checks what serde cannot; `Err((key, message))` names the key at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err((
                "path",
                "path is empty: give the folder that holds the images (e.g. path = \"/srv/images\")".into(),
            ));
        }
        if self.region.trim().is_empty() {
            return Err((
                "region",
                "region is empty: name the region this folder stands for".into(),
            ));
        }
        if self.allowed_roots.iter().any(|r| r.as_os_str().is_empty()) {
            return Err((
                "allowed_roots",
                "allowed_roots holds an empty path: give folders (e.g. allowed_roots = [\"/srv/base-images\"])".into(),
            ));
        }
        Ok(())
    }
}

/// A folder of disk images as a source of VMs.
#[derive(Debug, Clone)]
pub struct ImagesProvider {
    root: PathBuf,
    allowed_roots: Vec<PathBuf>,
    region: String,
    cloud_service: String,
    allow_crash_consistent_reads: bool,
}

/// Prefix of this source's VM ids.
const ID_PREFIX: &str = "images:";

/// Size label of a VM that cannot be read.
const UNREADABLE: &str = "unreadable";

/// One disk image of a VM, as found on disk, with everything it reads.
#[derive(Debug)]
struct ImageDisk {
    path: PathBuf,
    file_name: String,
    chain: ImageChain,
    info: TopInfo,
    in_use: bool,
    /// Worth a warning, but readable (an `.img` that looks like qcow2).
    notes: Vec<String>,
}

/// A disk image that cannot be read, with why.
#[derive(Debug)]
struct BadDisk {
    file_name: String,
    /// What the entry is (following symlinks), to tell whether it is part of another image.
    id: Option<FileId>,
    error: ProviderError,
}

/// A VM of the folder: one image file, or a subfolder of images.
#[derive(Debug)]
struct ImageVm {
    /// Path relative to the folder (`web.qcow2`, `db`).
    rel: String,
    /// The name before clash resolution (file stem or folder name).
    stem: String,
    disks: Vec<Result<ImageDisk, BadDisk>>,
    /// Why the VM as a whole cannot be read (a subfolder outside the folder).
    error: Option<ProviderError>,
}

/// How much of an image `inspect` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Discovery: also that its data lies within its files (a truncated qcow2), which
    /// costs a `qemu-img map`.
    Whole,
    /// Registration and backup: what opening it needs; a backup checks the map when it
    /// opens the image.
    Opened,
}

/// What a look at the folder found.
struct Scan {
    vms: Vec<ImageVm>,
    /// Source ids of VMs that are now parts of other images, with why.
    absorbed: Vec<(String, ErrorDetails)>,
    /// Entries that are no VM although they look like one, with why.
    warnings: Vec<String>,
}

impl ImageVm {
    /// The first error that keeps this VM from being read.
    fn error(&self) -> Option<&ProviderError> {
        self.error.as_ref().or_else(|| {
            self.disks
                .iter()
                .find_map(|d| d.as_ref().err().map(|b| &b.error))
        })
    }

    fn readable(&self) -> impl Iterator<Item = &ImageDisk> {
        self.disks.iter().filter_map(|d| d.as_ref().ok())
    }

    /// The identity of a single-file VM's file (to tell whether it is part of another).
    fn single_file(&self) -> Option<FileId> {
        match self.disks.as_slice() {
            [Ok(d)] if self.rel == d.file_name => Some(d.chain.top().file.id),
            [Err(b)] if self.rel == b.file_name => b.id,
            _ => None,
        }
    }
}

impl ImagesProvider {
    pub fn new(s: &ImagesSettings) -> Result<Self, ProviderError> {
        s.validate().map_err(|(_, msg)| settings_error(&msg))?;
        let root = std::path::absolute(&s.path).unwrap_or_else(|_| s.path.clone());
        let cloud_service = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "images".to_string());
        Ok(ImagesProvider {
            root,
            allowed_roots: s
                .allowed_roots
                .iter()
                .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone()))
                .collect(),
            region: s.region.trim().to_string(),
            cloud_service,
            allow_crash_consistent_reads: s.allow_crash_consistent_reads.unwrap_or(false),
        })
    }

    /// The folders images may read, once the folder is found to exist.
    fn roots(&self) -> Result<Roots, ProviderError> {
        if !self.root.is_dir() {
            return Err(ProviderError::new(
                "UserErrorImagesFolderNotFound",
                "Images folder not found",
                format!(
                    "the images folder {} does not exist or is not a folder",
                    self.root.display()
                ),
            )
            .recommend("Check `path` of the vault's source in the configuration"));
        }
        Roots::new(&self.root, &self.allowed_roots).map_err(|e| {
            ProviderError::io(
                format!("resolving the images folder {}", self.root.display()),
                e,
            )
        })
    }

    /// Every VM of the folder, parts of other images excluded; with the ids of VMs that are
    /// now parts of others, and why.
    fn scan(&self, cancel: &CancelToken) -> Result<Scan, ProviderError> {
        let roots = self.roots()?;
        qemu::require_tool("qemu-img")?;
        let mut vms = Vec::new();
        let mut warnings = Vec::new();
        for entry in sorted_entries(&self.root)? {
            cancel.check()?;
            let name = file_name(&entry);
            let is_vm = entry.is_dir() || format_of_name(&entry).is_some();
            if is_vm && entry.file_name().and_then(|n| n.to_str()).is_none() {
                // A VM is named and found again by its name: one that is not text cannot be.
                warnings.push(format!(
                    "{}: the name is not valid UTF-8 text, so it cannot be a VM (it could not be found again by its name): rename it, e.g. with `mv`, and discover again",
                    crate::fmt::escape(&name)
                ));
                continue;
            }
            if entry.is_dir() {
                let vm = self.folder_vm(&entry, &name, &roots, Check::Whole, cancel)?;
                if !vm.disks.is_empty() || vm.error.is_some() {
                    vms.push(vm);
                }
            } else if let Some(format) = format_of_name(&entry) {
                vms.push(ImageVm {
                    stem: stem_of(&name),
                    disks: vec![self.inspect(&entry, format, &roots, Check::Whole, cancel)?],
                    rel: name,
                    error: None,
                });
            }
        }
        // A file that is part of another image is no VM of its own.
        let parts: HashMap<FileId, String> = vms
            .iter()
            .flat_map(|vm| vm.readable().map(move |d| (vm, d)))
            .flat_map(|(vm, d)| {
                d.chain.parts().map(move |(id, role)| {
                    (
                        id,
                        format!("{role} of {} (VM {})", d.path_in(&vm.rel), vm.stem),
                    )
                })
            })
            .collect();
        let mut absorbed = Vec::new();
        vms.retain_mut(|vm| {
            if let Some(of) = vm.single_file().and_then(|id| parts.get(&id)) {
                absorbed.push((format!("{ID_PREFIX}{}", vm.rel), self.absorbed(&vm.rel, of)));
                return false;
            }
            vm.disks.retain(|d| {
                let id = match d {
                    Ok(d) => Some(d.chain.top().file.id),
                    Err(b) => b.id,
                };
                !id.is_some_and(|id| parts.contains_key(&id))
            });
            !vm.disks.is_empty() || vm.error.is_some()
        });
        Ok(Scan {
            vms,
            absorbed,
            warnings,
        })
    }

    /// Why a VM that became part of another is no VM any more.
    fn absorbed(&self, rel: &str, of: &str) -> ErrorDetails {
        ErrorDetails::new(
            VM_ABSORBED,
            "The image is now part of another VM",
            format!(
                "{rel} is no VM of its own any more: it is now the {of}; its data is backed up with that VM"
            ),
        )
        .recommend("Back up the VM it belongs to now (register and protect it if it is not yet)")
        .recommend(format!(
            "Or, if {rel} must stay a VM of its own, keep a copy of it for the other image (qemu-img create -b COPY …) and run discovery again"
        ))
        .recommend("Its recovery points are kept; stop its protection when it needs no new backups")
    }

    /// A subfolder as a VM: its images, ordered by file name.
    fn folder_vm(
        &self,
        dir: &Path,
        name: &str,
        roots: &Roots,
        check: Check,
        cancel: &CancelToken,
    ) -> Result<ImageVm, ProviderError> {
        let mut vm = ImageVm {
            rel: name.to_string(),
            stem: name.to_string(),
            disks: Vec::new(),
            error: None,
        };
        let images: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|f| !f.is_dir() && format_of_name(f).is_some())
            .collect();
        if images.is_empty() {
            return Ok(vm);
        }
        // A symlink to a folder elsewhere: its images are not the folder's.
        if let Err(e) = roots.check_folder(dir) {
            vm.error = Some(e);
            return Ok(vm);
        }
        for f in images {
            cancel.check()?;
            if let Some(format) = format_of_name(&f) {
                vm.disks
                    .push(self.inspect(&f, format, roots, check, cancel)?);
            }
        }
        Ok(vm)
    }

    /// Resolves an image's chain and reads its capacity; an image a running QEMU holds is
    /// reported as in use (its information read with force-share). Errors of the image
    /// are a `BadDisk`; only cancellation and a missing tool fail the caller.
    fn inspect(
        &self,
        path: &Path,
        format: &str,
        roots: &Roots,
        check: Check,
        cancel: &CancelToken,
    ) -> Result<Result<ImageDisk, BadDisk>, ProviderError> {
        let file_name = file_name(path);
        let inspected = ImageChain::resolve(path, format, roots).and_then(|chain| {
            let (info, in_use) = match chain.info(false, cancel) {
                Ok(info) => (info, false),
                Err(e) if qemu::is_image_in_use(&e) => (chain.info(true, cancel)?, true),
                Err(e) => return Err(e),
            };
            // The map of an image in use changes under us; its backup checks it when read.
            if !in_use && check == Check::Whole {
                chain.check_complete(cancel)?;
            }
            Ok((chain, info, in_use))
        });
        match inspected {
            Ok((chain, info, in_use)) => {
                let notes = looks_like_qcow2(&chain)
                    .then(|| format!(
                        "{file_name} starts like a qcow2 image but is read as raw, because its name says raw; if it is a qcow2 image (a cloud image, not a VM's disk), rename it to {}.qcow2",
                        stem_of(&file_name)
                    ))
                    .into_iter()
                    .collect();
                Ok(Ok(ImageDisk {
                    path: path.to_path_buf(),
                    file_name,
                    chain,
                    info,
                    in_use,
                    notes,
                }))
            }
            Err(ProviderError::Cancelled) => Err(ProviderError::Cancelled),
            Err(e) if e.details().code == qemu::TOOL_NOT_FOUND => Err(e),
            Err(error) => Ok(Err(BadDisk {
                file_name,
                id: FileId::of_path(path),
                error,
            })),
        }
    }

    /// Finds the VM behind a source id again (the folder may have changed since discovery);
    /// an image of it that cannot be read is the error.
    fn find(&self, vm: &Vm, cancel: &CancelToken) -> Result<Vec<ImageDisk>, ProviderError> {
        let not_found = || {
            ProviderError::new(
                "UserErrorVmNotFound",
                "VM not found",
                format!(
                    "{} ({}) is no longer in the images folder {}",
                    vm.qualified_name(),
                    vm.source_id,
                    self.root.display()
                ),
            )
            .recommend("Run discovery again to refresh the list of VMs")
        };
        let rel = vm.source_id.strip_prefix(ID_PREFIX).ok_or_else(not_found)?;
        let rel_path = Path::new(rel);
        // Only a plain name inside the folder: a source id never leads elsewhere.
        if rel.is_empty()
            || rel_path.components().count() != 1
            || !matches!(rel_path.components().next(), Some(Component::Normal(_)))
        {
            return Err(not_found());
        }
        let roots = self.roots()?;
        qemu::require_tool("qemu-img")?;
        let path = self.root.join(rel_path);
        let found = if path.is_dir() {
            self.folder_vm(&path, rel, &roots, Check::Opened, cancel)?
        } else if let Some(format) =
            format_of_name(&path).filter(|_| std::fs::symlink_metadata(&path).is_ok())
        {
            ImageVm {
                rel: rel.to_string(),
                stem: vm.name.clone(),
                disks: vec![self.inspect(&path, format, &roots, Check::Opened, cancel)?],
                error: None,
            }
        } else {
            return Err(not_found());
        };
        if let Some(e) = found.error() {
            return Err(e.clone());
        }
        // Parts of the subfolder's other images are no disks of their own.
        let mut disks: Vec<ImageDisk> = found.disks.into_iter().filter_map(Result::ok).collect();
        let parts: std::collections::HashSet<FileId> = disks
            .iter()
            .flat_map(|d| d.chain.parts().map(|(id, _)| id))
            .collect();
        disks.retain(|d| !parts.contains(&d.chain.top().file.id));
        if disks.is_empty() {
            return Err(not_found());
        }
        Ok(disks)
    }

    fn to_vm(&self, vm: &ImageVm, name: String) -> Vm {
        let disks: Vec<DiskInfo> = vm
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| DiskInfo {
                index: i as u32,
                name: match d {
                    Ok(d) => d.file_name.clone(),
                    Err(b) => b.file_name.clone(),
                },
                capacity: d.as_ref().map_or(0, |d| d.info.virtual_size),
            })
            .collect();
        let capacity: u64 = disks.iter().map(|d| d.capacity).sum();
        let size = match vm.disks.as_slice() {
            _ if vm.error().is_some() => UNREADABLE.to_string(),
            [Ok(one)] => format!(
                "{}, {}",
                display_format(one.chain.format()),
                human_bytes(capacity)
            ),
            many => format!("{} disks, {}", many.len(), human_bytes(capacity)),
        };
        Vm {
            source_id: format!("{ID_PREFIX}{}", vm.rel),
            os: guess_os(&name),
            name,
            cloud_service: self.cloud_service.clone(),
            region: self.region.clone(),
            size,
            power_state: if vm.readable().any(|d| d.in_use) {
                PowerState::Running
            } else {
                PowerState::Stopped
            },
            disks,
        }
    }

    /// Opens a disk for a snapshot: locked against writers, or (an image a running QEMU
    /// writes, when allowed) shared, with a warning.
    fn open_disk(
        &self,
        d: ImageDisk,
        label: &str,
        warnings: &mut Vec<String>,
        cancel: &CancelToken,
    ) -> Result<OpenDisk, ProviderError> {
        let capacity = d.info.virtual_size;
        let mut shared = |chain: ImageChain| {
            if !self.allow_crash_consistent_reads {
                return Err(self.in_use_error(qemu::image_in_use(&d.path)));
            }
            tracing::warn!(
                "{label}: {} is in use by a running QEMU; reading it while it changes (allow_crash_consistent_reads)",
                d.path.display()
            );
            warnings.push(format!(
                "{} was in use by a running QEMU and was read while it changed (allow_crash_consistent_reads): \
                 the recovery point is crash-consistent at best; a libvirt source takes a consistent snapshot",
                d.file_name
            ));
            OpenDisk::open_chain(chain, capacity, true, label, cancel)
        };
        if d.in_use {
            return shared(d.chain);
        }
        let format = d.chain.format().to_string();
        match OpenDisk::open_chain(d.chain, capacity, false, label, cancel) {
            // A VM started since the image was found: its chain again, shared.
            Err(e) if qemu::is_image_in_use(&e) => {
                shared(ImageChain::resolve(&d.path, &format, &self.roots()?)?)
            }
            other => other,
        }
    }

    fn in_use_error(&self, e: ProviderError) -> ProviderError {
        e.recommend(
            "Back up this VM through a libvirt source (source = { kind = \"libvirt\", uri = \"qemu:///system\", … }), \
             which takes a consistent snapshot of a running VM",
        )
        .recommend("Or shut the VM down before the backup")
        .recommend(
            "Or set allow_crash_consistent_reads = true in this vault's source to read the image while it changes \
             (crash-consistent at best)",
        )
    }
}

impl ImageDisk {
    /// Files of the chain outside the images folder (read because `allowed_roots` allows
    /// them), for a warning at registration.
    fn outside(&self, roots: &Roots) -> Vec<String> {
        self.chain
            .files()
            .filter(|f| !f.real.starts_with(roots.folder()))
            .map(|f| f.real.display().to_string())
            .collect()
    }
}

trait PathIn {
    fn path_in(&self, rel: &str) -> String;
}

impl PathIn for ImageDisk {
    /// The disk's path relative to the images folder (`db01/1-data.qcow2`).
    fn path_in(&self, rel: &str) -> String {
        if rel == self.file_name {
            rel.to_string()
        } else {
            format!("{rel}/{}", self.file_name)
        }
    }
}

/// A raw image whose first bytes are a qcow2 header.
fn looks_like_qcow2(chain: &ImageChain) -> bool {
    use std::os::unix::fs::FileExt;
    let top = chain.top();
    let mut magic = [0u8; 4];
    top.format == "raw"
        && top.file.file.read_exact_at(&mut magic, 0).is_ok()
        && magic == *b"QFI\xfb"
}

fn settings_error(msg: &str) -> ProviderError {
    ProviderError::new(
        "UserErrorInvalidSourceSettings",
        "Invalid images source settings",
        format!("images source: {msg}"),
    )
}

fn disk_infos(disks: &[ImageDisk]) -> Vec<DiskInfo> {
    disks
        .iter()
        .enumerate()
        .map(|(i, d)| DiskInfo {
            index: i as u32,
            name: d.file_name.clone(),
            capacity: d.info.virtual_size,
        })
        .collect()
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ProviderError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        ProviderError::io(format!("listing the images folder {}", dir.display()), e)
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn stem_of(file_name: &str) -> String {
    Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| file_name.to_string())
}

/// A disk image tells nothing reliable about its OS; a name that says Windows or a common
/// Linux distribution is taken at its word, anything else is Unknown. Words are compared
/// whole, with a version allowed after them (`ubuntu-22.04`, `rhel9`, `win2019-dc`), so
/// `archive` or `winterfell` say nothing.
fn guess_os(name: &str) -> Os {
    const LINUX: &[&str] = &[
        "linux",
        "debian",
        "ubuntu",
        "rhel",
        "centos",
        "fedora",
        "alma",
        "almalinux",
        "rocky",
        "rockylinux",
        "suse",
        "opensuse",
        "sles",
        "arch",
        "archlinux",
        "alpine",
        "oraclelinux",
        "ol",
        "amzn",
        "amazonlinux",
        "gentoo",
        "nixos",
    ];
    const WINDOWS: &[&str] = &["windows", "win", "winsrv"];
    let n = name.to_ascii_lowercase();
    // "win2k19", "rhel9", "ubuntu2204": the word, then only digits (and k, as in 2k19).
    let is = |word: &str, names: &[&str]| {
        names.iter().any(|w| {
            word.strip_prefix(w).is_some_and(|rest| {
                rest.chars().all(|c| c.is_ascii_digit() || c == 'k')
                    && (rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
    };
    let words: Vec<&str> = n
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    if words.iter().any(|w| is(w, WINDOWS)) {
        Os::Windows
    } else if words.iter().any(|w| is(w, LINUX) || w.ends_with("linux")) {
        Os::Linux
    } else {
        Os::Unknown
    }
}

/// VM names: the stem, or the relative path where two stems clash. Names are compared
/// regardless of letter case, as VMs are looked up (`DUP.raw` beside a folder `dup`).
fn names(vms: &[ImageVm]) -> Vec<String> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for vm in vms {
        *count.entry(vm.stem.to_lowercase()).or_default() += 1;
    }
    vms.iter()
        .map(|vm| {
            if count.get(&vm.stem.to_lowercase()).copied().unwrap_or(0) > 1 {
                vm.rel.clone()
            } else {
                vm.stem.clone()
            }
        })
        .collect()
}

/// Warnings for VMs whose names still differ only in letter case (`a.raw` and a folder
/// `A.RAW`): a name finds both, so each is reached only by its item id.
fn case_clashes(names: &[String]) -> Vec<String> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut warnings = Vec::new();
    for name in names {
        if let Some(first) = seen.insert(name.to_lowercase(), name) {
            warnings.push(format!(
                "{} and {} differ only in letter case, and vmvault finds VMs by name regardless of case: rename one of them (and discover again), or name each by its item id (`vmvault items --json`)",
                crate::fmt::escape(first),
                crate::fmt::escape(name)
            ));
        }
    }
    warnings
}

impl Provider for ImagesProvider {
    fn kind(&self) -> &'static str {
        "images"
    }

    fn describe(&self) -> String {
        format!(
            "folder of disk images {} (region {})",
            self.root.display(),
            self.region
        )
    }

    fn discover(&self, cancel: &CancelToken) -> Result<Discovery, ProviderError> {
        let Scan {
            vms,
            absorbed,
            warnings,
        } = self.scan(cancel)?;
        let names = names(&vms);
        let mut found = Discovery {
            absorbed,
            warnings,
            ..Default::default()
        };
        found.warnings.extend(case_clashes(&names));
        for (vm, name) in vms.iter().zip(names) {
            let listed = self.to_vm(vm, name);
            let notes = vm.readable().flat_map(|d| &d.notes);
            found
                .warnings
                .extend(notes.map(|n| format!("{}: {n}", listed.qualified_name())));
            match vm.error() {
                Some(e) => found.unreadable.push((listed, e.details())),
                None => found.vms.push(listed),
            }
        }
        for r in &self.allowed_roots {
            if !r.is_dir() {
                found.warnings.push(format!(
                    "allowed_roots: {} does not exist or is not a folder; it allows nothing",
                    r.display()
                ));
            }
        }
        Ok(found)
    }

    fn register(&self, vm: &Vm, cancel: &CancelToken) -> Result<RegistrationReport, ProviderError> {
        let disks = self.find(vm, cancel)?;
        let roots = self.roots()?;
        let mut report = RegistrationReport::default();
        for (i, d) in disks.iter().enumerate() {
            let reads = if d.chain.layers.len() > 1 {
                "backing chain"
            } else {
                "reads"
            };
            report.findings.push(format!(
                "disk {i} {}: {}, {}, {} on the host; {reads}: {}",
                d.file_name,
                display_format(d.chain.format()),
                human_bytes(d.info.virtual_size),
                human_bytes(d.chain.allocated()),
                d.chain.describe(&roots)
            ));
            let outside = d.outside(&roots);
            if !outside.is_empty() {
                report.warnings.push(format!(
                    "disk {i} {} reads files outside the images folder (allowed by allowed_roots): {}",
                    d.file_name,
                    outside.join(", ")
                ));
            }
            report.warnings.extend(d.notes.iter().cloned());
            if d.in_use {
                report.warnings.push(if self.allow_crash_consistent_reads {
                    format!(
                        "{} is in use by a running QEMU: it will be read while it changes (crash-consistent at best); \
                         a libvirt source would take a consistent snapshot",
                        d.file_name
                    )
                } else {
                    format!(
                        "{} is in use by a running QEMU: backups fail while it runs; back it up through a libvirt \
                         source, or set allow_crash_consistent_reads = true",
                        d.file_name
                    )
                });
            }
        }
        report.findings.push("changed-block tracking: not available for image files (every backup reads all allocated data)".into());
        Ok(report)
    }

    fn snapshot(
        &self,
        vm: &Vm,
        _at: DateTime<Utc>,
        // Image files have no changed-block tracking.
        _since: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Box<dyn Snapshot>, ProviderError> {
        let found = self.find(vm, cancel)?;
        let infos = disk_infos(&found);
        let definition = VmDefinition {
            domain_xml: None,
            disk_formats: found
                .iter()
                .enumerate()
                .filter_map(|(i, d)| Some((i as u32, d.chain.layers.first()?.format.clone())))
                .collect(),
        };
        let mut open = Vec::with_capacity(found.len());
        let mut warnings = Vec::new();
        for d in found {
            let label = format!("disk {} of {}", d.file_name, vm.qualified_name());
            open.push(Arc::new(self.open_disk(
                d,
                &label,
                &mut warnings,
                cancel,
            )?));
        }
        Ok(Box::new(ImagesSnapshot {
            disks: infos,
            open,
            warnings,
            definition,
        }))
    }
}

/// The disks of an image VM, held open (and locked) until dropped.
struct ImagesSnapshot {
    disks: Vec<DiskInfo>,
    open: Vec<Arc<OpenDisk>>,
    /// One per disk read while a running QEMU wrote it.
    warnings: Vec<String>,
    definition: VmDefinition,
}

impl Snapshot for ImagesSnapshot {
    fn consistency(&self) -> Consistency {
        Consistency::CrashConsistent
    }
    fn cbt_token(&self) -> Option<String> {
        None
    }
    fn disks(&self) -> &[DiskInfo] {
        &self.disks
    }
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
    fn definition(&self) -> VmDefinition {
        self.definition.clone()
    }
    fn open_disk(&self, index: u32) -> Result<Box<dyn DiskReader>, ProviderError> {
        self.open
            .get(index as usize)
            .map(|d| d.reader())
            .ok_or_else(|| {
                ProviderError::new(
                    "DiskNotFound",
                    "No such disk",
                    format!(
                        "the snapshot has {} disks; disk {index} does not exist",
                        self.open.len()
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::qemu::test_support::*;
    use super::*;
    use crate::provider::chain;
    use std::process::Command;

    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn settings(path: &Path) -> ImagesSettings {
        ImagesSettings {
            path: path.to_path_buf(),
            region: "lab-1".into(),
            allow_crash_consistent_reads: None,
            allowed_roots: vec![],
        }
    }

    fn tools() -> bool {
        need_tool("qemu-img") && need_tool("qemu-nbd") && need_tool("qemu-io")
    }

    fn p(path: &Path) -> &str {
        path.to_str().unwrap()
    }

    /// A folder with a raw, a qcow2 overlay on a backing file, a vmdk, a vhd, a two-disk
    /// subfolder and a file that is no image.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("lab-images")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // raw: data, a hole, data.
        let raw = d.join("web01.raw");
        sh("qemu-img", &["create", "-q", "-f", "raw", p(&raw), "24M"]);
        sh(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0x11 0 1M",
                "-c",
                "write -P 0x12 17M 300k",
                p(&raw),
            ],
        );
        // qcow2 overlay on a backing file: one disk.
        let base = d.join("base.qcow2");
        sh(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", p(&base), "32M"],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x21 0 4M",
                "-c",
                "write -P 0x22 30M 1M",
                p(&base),
            ],
        );
        let app = d.join("app01.qcow2");
        overlay(&app, "base.qcow2", "qcow2", None);
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x23 2M 1M",
                "-c",
                "write -z 30M 512k",
                p(&app),
            ],
        );
        let vmdk = d.join("legacy.vmdk");
        sh("qemu-img", &["create", "-q", "-f", "vmdk", p(&vmdk), "16M"]);
        sh(
            "qemu-io",
            &["-f", "vmdk", "-c", "write -P 0x31 1M 2M", p(&vmdk)],
        );
        let vhd = d.join("hyperv.vhd");
        sh(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "vpc",
                "-o",
                "force_size=on",
                p(&vhd),
                "16M",
            ],
        );
        sh(
            "qemu-io",
            &["-f", "vpc", "-c", "write -P 0x41 5M 1M", p(&vhd)],
        );
        let db = d.join("db01");
        std::fs::create_dir(&db).unwrap();
        sh(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                p(&db.join("1-data.qcow2")),
                "8M",
            ],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x51 0 64k",
                p(&db.join("1-data.qcow2")),
            ],
        );
        sh(
            "qemu-img",
            &["create", "-q", "-f", "raw", p(&db.join("0-os.raw")), "8M"],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0x52 4M 64k",
                p(&db.join("0-os.raw")),
            ],
        );
        std::fs::write(d.join("README.txt"), "not an image").unwrap();
        std::fs::create_dir(d.join("empty")).unwrap();
        dir
    }

    fn check_all_disks(provider: &ImagesProvider, vm: &Vm, dir: &Path) {
        let snap = provider
            .snapshot(vm, Utc::now(), None, &CancelToken::new())
            .unwrap();
        assert_eq!(snap.consistency(), Consistency::CrashConsistent);
        assert_eq!(snap.cbt_token(), None);
        assert_eq!(snap.disks(), vm.disks.as_slice());
        for d in snap.disks() {
            let r = snap.open_disk(d.index).unwrap();
            assert_eq!(r.capacity(), d.capacity);
            assert_eq!(r.changed_extents("x").unwrap(), None);
            let path = if vm.disks.len() > 1 {
                dir.join(&vm.name).join(&d.name)
            } else {
                dir.join(&d.name)
            };
            let fmt = qemu::image_info(&path, None, false, &CancelToken::new())
                .unwrap()
                .format;
            assert_eq!(
                read_all(r.as_ref()),
                raw_of(&path, &fmt),
                "{} of {}",
                d.name,
                vm.name
            );
        }
        assert!(snap.open_disk(99).is_err());
    }

    #[test]
    fn discovers_reads_and_rereads_after_changes() {
        if !tools() {
            return;
        }
        let dir = folder();
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        let found = provider.discover(&CancelToken::new()).unwrap();
        assert!(
            found.unreadable.is_empty() && found.warnings.is_empty(),
            "{found:#?}"
        );
        let vms = found.vms;
        let summary: Vec<(String, String, Vec<String>)> = vms
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.source_id.clone(),
                    v.disks.iter().map(|d| d.name.clone()).collect(),
                )
            })
            .collect();
        let s = |a: &str, b: &str, c: &[&str]| {
            (
                a.to_string(),
                b.to_string(),
                c.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            summary,
            vec![
                s("app01", "images:app01.qcow2", &["app01.qcow2"]),
                s("db01", "images:db01", &["0-os.raw", "1-data.qcow2"]),
                s("hyperv", "images:hyperv.vhd", &["hyperv.vhd"]),
                s("legacy", "images:legacy.vmdk", &["legacy.vmdk"]),
                s("web01", "images:web01.raw", &["web01.raw"]),
            ],
            "base.qcow2 is a backing file, README.txt and empty/ are no VMs"
        );
        let cs = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for vm in &vms {
            assert_eq!(vm.cloud_service, cs);
            assert_eq!(vm.region, "lab-1");
            assert_eq!(vm.power_state, PowerState::Stopped);
        }
        assert_eq!(vms[0].disks[0].capacity, 32 << 20);
        assert_eq!(vms[0].size, "qcow2, 32 MiB");
        // The disks' formats go with the point; an image has no definition beyond them.
        let def = provider
            .snapshot(&vms[0], Utc::now(), None, &CancelToken::new())
            .unwrap()
            .definition();
        assert_eq!(def.domain_xml, None);
        assert_eq!(def.disk_formats, vec![(0, "qcow2".to_string())]);
        assert_eq!(vms[1].size, "2 disks, 16 MiB");
        assert_eq!(vms[2].disks[0].capacity, 16 << 20);
        for vm in &vms {
            check_all_disks(&provider, vm, dir.path());
        }
        // Holes are never read: the raw disk's extents cover its data, not its 24 MiB.
        let snap = provider
            .snapshot(&vms[4], Utc::now(), None, &CancelToken::new())
            .unwrap();
        let ext = snap.open_disk(0).unwrap().allocated_extents().unwrap();
        assert!(ext.iter().map(|e| e.len).sum::<u64>() <= 2 << 20, "{ext:?}");
        drop(snap);

        // Change some blocks, read again.
        let d = dir.path();
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0xab 1M 64k",
                p(&d.join("app01.qcow2")),
            ],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "raw",
                "-c",
                "write -P 0xab 10M 64k",
                p(&d.join("web01.raw")),
            ],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "vmdk",
                "-c",
                "write -P 0xab 8M 64k",
                p(&d.join("legacy.vmdk")),
            ],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "vpc",
                "-c",
                "write -P 0xab 0 64k",
                p(&d.join("hyperv.vhd")),
            ],
        );
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0xab 7M 64k",
                p(&d.join("db01/1-data.qcow2")),
            ],
        );
        for vm in &provider.discover(&CancelToken::new()).unwrap().vms {
            check_all_disks(&provider, vm, dir.path());
        }
        let reg = provider.register(&vms[0], &CancelToken::new()).unwrap();
        assert!(
            reg.findings[0].contains("backing chain: app01.qcow2 (qcow2) → base.qcow2 (qcow2)"),
            "{reg:?}"
        );
        assert!(reg.warnings.is_empty(), "{reg:?}");
    }

    #[test]
    fn an_image_in_use_is_refused_unless_crash_consistent_reads_are_allowed() {
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("busy.qcow2");
        sh("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "8M"]);
        sh(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -P 0x61 0 1M", p(&img)],
        );
        // A qemu-nbd holding the image for writing stands in for a running VM.
        let sock = dir.path().join("holder.sock");
        let holder = Command::new("qemu-nbd")
            .args([
                "--persistent",
                "--format=qcow2",
                "--socket",
                p(&sock),
                p(&img),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _holder = KillOnDrop(holder);
        let t0 = std::time::Instant::now();
        while !nbd_ready(&sock) && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        let vms = provider.discover(&CancelToken::new()).unwrap().vms;
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].power_state, PowerState::Running);
        assert_eq!(vms[0].disks[0].capacity, 8 << 20);
        let reg = provider.register(&vms[0], &CancelToken::new()).unwrap();
        assert!(
            reg.warnings[0].contains("in use by a running QEMU"),
            "{reg:?}"
        );
        let err = provider
            .snapshot(&vms[0], Utc::now(), None, &CancelToken::new())
            .err()
            .unwrap()
            .details();
        assert_eq!(err.code, qemu::IMAGE_IN_USE);
        assert!(err.message.contains("busy.qcow2"), "{}", err.message);
        assert!(
            err.recommendations.iter().any(|r| r.contains("libvirt")),
            "{err:?}"
        );
        assert!(
            err.recommendations
                .iter()
                .any(|r| r.contains("allow_crash_consistent_reads")),
            "{err:?}"
        );

        let mut s = settings(dir.path());
        s.allow_crash_consistent_reads = Some(true);
        let allowed = ImagesProvider::new(&s).unwrap();
        let snap = match allowed.snapshot(&vms[0], Utc::now(), None, &CancelToken::new()) {
            Ok(s) => s,
            Err(e) => panic!("{:?}", e.details()),
        };
        assert_eq!(snap.consistency(), Consistency::CrashConsistent);
        assert!(
            snap.warnings().len() == 1 && snap.warnings()[0].contains("busy.qcow2"),
            "{:?}",
            snap.warnings()
        );
        let r = snap.open_disk(0).unwrap();
        let mut buf = vec![0u8; 4096];
        r.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0x61));
        drop(snap);
    }

    // -----------------------------------------------------------------------------------
    // The folder's walls: every way out that was found, each refused; allowed_roots.

    const SECRET: &[u8; 8] = b"SECRET!!";

    /// `lab/` (the images folder) and beside it `outside/secret.raw`: 1 MiB of SECRET!!.
    struct Escape {
        _dir: tempfile::TempDir,
        lab: PathBuf,
        outside: PathBuf,
        secret: PathBuf,
    }

    fn escape() -> Escape {
        let dir = tempfile::tempdir().unwrap();
        let lab = dir.path().join("lab");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&lab).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let secret = outside.join("secret.raw");
        std::fs::write(&secret, SECRET.repeat(1 << 17)).unwrap();
        Escape {
            _dir: dir,
            lab,
            outside,
            secret,
        }
    }

    impl Escape {
        fn provider(&self, allowed: &[&Path]) -> ImagesProvider {
            let mut s = settings(&self.lab);
            s.allowed_roots = allowed.iter().map(|r| r.to_path_buf()).collect();
            ImagesProvider::new(&s).unwrap()
        }

        /// Discovery lists `name` as unreadable with `code`, registration and a snapshot
        /// fail with the same error, and no other VM is hidden by it.
        fn assert_refused(&self, name: &str, code: &str, says: &[&str]) -> ErrorDetails {
            let p = self.provider(&[]);
            let found = p.discover(&CancelToken::new()).unwrap();
            let (vm, e) = found
                .unreadable
                .iter()
                .find(|(vm, _)| vm.name == name)
                .unwrap_or_else(|| panic!("{name} is not refused: {found:#?}"));
            assert_eq!(e.code, code, "{e:?}");
            for s in says {
                assert!(
                    e.message.contains(s) || e.recommendations.iter().any(|r| r.contains(s)),
                    "{s:?} missing: {e:?}"
                );
            }
            let reg = p.register(vm, &CancelToken::new()).unwrap_err().details();
            assert_eq!(&reg, e, "registration says what discovery said");
            let snap = p
                .snapshot(vm, Utc::now(), None, &CancelToken::new())
                .err()
                .expect("no snapshot of a refused image")
                .details();
            assert_eq!(&snap, e);
            e.clone()
        }

        /// Everything `vm` reads, as bytes.
        fn read(&self, p: &ImagesProvider, name: &str) -> Vec<u8> {
            let found = p.discover(&CancelToken::new()).unwrap();
            let vm = found
                .vms
                .iter()
                .find(|v| v.name == name)
                .unwrap_or_else(|| panic!("{name} not readable: {found:#?}"));
            let snap = p
                .snapshot(vm, Utc::now(), None, &CancelToken::new())
                .unwrap_or_else(|e| panic!("{:?}", e.details()));
            let bytes = read_all(snap.open_disk(0).unwrap().as_ref());
            bytes
        }
    }

    fn contains_secret(bytes: &[u8]) -> bool {
        bytes.windows(SECRET.len()).any(|w| w == SECRET)
    }

    #[test]
    fn a_raw_symlink_to_a_file_outside_is_refused_and_one_inside_is_read() {
        if !tools() {
            return;
        }
        let x = escape();
        std::os::unix::fs::symlink(&x.secret, x.lab.join("link.raw")).unwrap();
        std::fs::create_dir(x.lab.join(".real")).unwrap();
        std::fs::write(x.lab.join(".real/inside.raw"), vec![7u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(".real/inside.raw", x.lab.join("inside.raw")).unwrap();
        let e = x.assert_refused(
            "link",
            chain::OUTSIDE_FOLDER,
            &[
                "link.raw is a symbolic link to",
                "secret.raw",
                "allowed_roots",
            ],
        );
        assert!(!e.message.contains("no longer"), "{e:?}");
        assert!(x.read(&x.provider(&[]), "inside") == vec![7u8; 1 << 20]);
    }

    #[test]
    fn a_backing_file_outside_is_refused_unless_an_allowed_root_holds_it() {
        if !tools() {
            return;
        }
        let x = escape();
        let over = x.lab.join("over.qcow2");
        overlay(&over, "../outside/secret.raw", "raw", None);
        x.assert_refused(
            "over",
            chain::OUTSIDE_FOLDER,
            &[
                "backing file \"../outside/secret.raw\" of",
                "over.qcow2",
                "allowed_roots = [",
            ],
        );
        // Allowed: read, and registration shows the chain and warns that it leaves the folder.
        let p = x.provider(&[&x.outside]);
        assert!(x.read(&p, "over") == std::fs::read(&x.secret).unwrap());
        let vm = p.discover(&CancelToken::new()).unwrap().vms.remove(0);
        let reg = p.register(&vm, &CancelToken::new()).unwrap();
        let chain_shown = format!(
            "backing chain: over.qcow2 (qcow2) → ../outside/secret.raw → {} (raw)",
            std::fs::canonicalize(&x.secret).unwrap().display()
        );
        assert!(reg.findings[0].contains(&chain_shown), "{reg:?}");
        assert!(
            reg.warnings
                .iter()
                .any(|w| w.contains("outside the images folder") && w.contains("secret.raw")),
            "{reg:?}"
        );
    }

    /// A qcow2 cut short keeps its header, and QEMU reads its missing clusters as zeros:
    /// discovery lists it with an error naming it, and its backup fails, instead of
    /// storing zeros.
    #[test]
    fn a_truncated_qcow2_is_an_error_not_zeros() {
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("cut.qcow2");
        sh("qemu-img", &["create", "-q", "-f", "qcow2", p(&img), "16M"]);
        sh(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -P 0x61 0 8M", p(&img)],
        );
        let whole = std::fs::metadata(&img).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        file.set_len(whole / 2).unwrap();
        drop(file);
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        let found = provider.discover(&CancelToken::new()).unwrap();
        assert!(found.vms.is_empty(), "{found:?}");
        let (vm, e) = &found.unreadable[0];
        assert_eq!(e.code, "ImageTruncated", "{e:?}");
        assert!(
            e.message.contains("cut.qcow2") && e.message.contains("truncated"),
            "{e:?}"
        );
        let err = provider
            .snapshot(vm, Utc::now(), None, &CancelToken::new())
            .err()
            .expect("the backup of a truncated image fails");
        assert_eq!(err.details().code, "ImageTruncated", "{err:?}");
    }

    /// A name that is not UTF-8 cannot be a VM (it is found again by name): discovery says
    /// so, and lists the others.
    #[test]
    fn an_image_name_that_is_not_utf8_is_a_discovery_warning() {
        use std::os::unix::ffi::OsStrExt;
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"bad\xff.raw"));
        std::fs::write(&bad, vec![0u8; 65536]).unwrap();
        std::fs::write(dir.path().join("good.raw"), vec![0u8; 65536]).unwrap();
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        let found = provider.discover(&CancelToken::new()).unwrap();
        assert_eq!(found.vms.len(), 1, "{found:?}");
        assert_eq!(found.vms[0].name, "good");
        assert_eq!(found.warnings.len(), 1, "{found:?}");
        assert!(
            found.warnings[0].contains("not valid UTF-8") && found.warnings[0].contains("rename"),
            "{found:?}"
        );
    }

    #[test]
    fn an_img_holding_a_qcow2_header_is_read_as_raw_bytes() {
        if !tools() {
            return;
        }
        let x = escape();
        // What a guest can write to its own raw disk: a qcow2 header naming a file outside.
        let img = x.lab.join("guest.img");
        overlay(&img, p(&x.secret), "raw", None);
        let p = x.provider(&[]);
        let found = p.discover(&CancelToken::new()).unwrap();
        assert!(
            found
                .warnings
                .iter()
                .any(|w| w.contains("guest.img starts like a qcow2 image but is read as raw")),
            "{found:#?}"
        );
        let bytes = x.read(&p, "guest");
        let file = std::fs::read(&img).unwrap();
        // (QEMU rounds a raw file's size up to whole sectors: zeros after its end.)
        let differ = bytes.iter().zip(&file).position(|(a, b)| a != b);
        assert!(
            bytes.len() >= file.len()
                && differ.is_none()
                && bytes[file.len()..].iter().all(|&b| b == 0),
            "not the file's own bytes: {} vs {} bytes, first difference at {differ:?}",
            bytes.len(),
            file.len()
        );
        assert!(!contains_secret(&bytes));
    }

    #[test]
    fn a_vmdk_extent_outside_is_refused_unless_an_allowed_root_holds_it() {
        if !tools() {
            return;
        }
        let x = escape();
        std::fs::write(
            x.lab.join("split.vmdk"),
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\n\n# Extent description\n\
             RW 2048 FLAT \"../outside/secret.raw\" 0\n",
        )
        .unwrap();
        x.assert_refused(
            "split",
            chain::OUTSIDE_FOLDER,
            &["extent \"../outside/secret.raw\" of", "split.vmdk"],
        );
        // Allowed: QEMU reads the extent through the rewritten descriptor.
        let p = x.provider(&[&x.outside]);
        assert!(x.read(&p, "split") == std::fs::read(&x.secret).unwrap());
    }

    #[test]
    fn json_and_protocol_backing_names_are_refused() {
        if !tools() {
            return;
        }
        let x = escape();
        let spec = format!(
            "json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"file\",\"filename\":\"{}\"}}}}",
            x.secret.display()
        );
        for (name, backing) in [
            ("viajson", spec),
            ("viafile", format!("file:{}", x.secret.display())),
        ] {
            overlay(
                &x.lab.join(format!("{name}.qcow2")),
                &backing,
                "raw",
                Some("1M"),
            );
        }
        x.assert_refused("viajson", chain::CHAIN_REFUSED, &["a json: specification"]);
        x.assert_refused("viafile", chain::CHAIN_REFUSED, &["a protocol name"]);
    }

    #[test]
    fn a_data_file_or_a_subfolder_outside_is_refused() {
        if !tools() {
            return;
        }
        let x = escape();
        let data = x.outside.join("data.raw");
        let ext = x.lab.join("ext.qcow2");
        let opt = format!("data_file={}", p(&data));
        sh(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", &opt, p(&ext), "1M"],
        );
        sh(
            "qemu-io",
            &["-f", "qcow2", "-c", "write -P 0x44 0 64k", p(&ext)],
        );
        x.assert_refused("ext", chain::OUTSIDE_FOLDER, &["data file", "data.raw"]);
        // Allowed: QEMU reads the data file by descriptor.
        let bytes = x.read(&x.provider(&[&x.outside]), "ext");
        assert!(
            bytes[..64 << 10].iter().all(|&b| b == 0x44)
                && bytes[64 << 10..].iter().all(|&b| b == 0)
        );
        std::os::unix::fs::symlink(&x.outside, x.lab.join("vmdir")).unwrap();
        x.assert_refused(
            "vmdir",
            chain::OUTSIDE_FOLDER,
            &["vmdir is a symbolic link to"],
        );
    }

    #[test]
    fn settings_and_lookups_fail_clearly() {
        let e = toml::from_str::<ImagesSettings>("path = \"/x\"\nregion = \"r\"\nbogus = 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let s: ImagesSettings = toml::from_str("path = \"/x\"\nregion = \"r\"\n").unwrap();
        assert_eq!(s.allow_crash_consistent_reads, None);
        assert!(ImagesProvider::new(&ImagesSettings {
            region: " ".into(),
            ..s.clone()
        })
        .is_err());
        let missing = ImagesProvider::new(&ImagesSettings {
            path: "/nonexistent/vmvault-images".into(),
            ..s
        })
        .unwrap();
        let e = missing.discover(&CancelToken::new()).unwrap_err().details();
        assert_eq!(e.code, "UserErrorImagesFolderNotFound");
        assert!(e.message.contains("/nonexistent/vmvault-images"));
        // A source id never leads out of the folder.
        let dir = tempfile::tempdir().unwrap();
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        let vm = Vm {
            source_id: "images:../etc".into(),
            name: "etc".into(),
            cloud_service: "x".into(),
            region: "lab-1".into(),
            os: Os::Linux,
            size: String::new(),
            power_state: PowerState::Stopped,
            disks: vec![],
        };
        let e = provider
            .snapshot(&vm, Utc::now(), None, &CancelToken::new())
            .err()
            .unwrap()
            .details();
        assert_eq!(e.code, "UserErrorVmNotFound");
    }

    #[test]
    fn missing_qemu_img_is_a_clear_error_at_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        let e = without_tool("qemu-img", || provider.discover(&CancelToken::new()))
            .unwrap_err()
            .details();
        assert_eq!(e.code, qemu::TOOL_NOT_FOUND);
        assert!(
            e.message.contains("qemu-img not found")
                && e.message.contains("qemu-utils (Debian/Ubuntu)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn clashing_names_fall_back_to_file_names() {
        let vm = |rel: &str| ImageVm {
            rel: rel.into(),
            stem: stem_of(rel),
            disks: vec![],
            error: None,
        };
        let vms = [vm("web.qcow2"), vm("web.raw"), vm("db.raw"), vm("web")];
        assert_eq!(names(&vms), vec!["web.qcow2", "web.raw", "db", "web"]);
        // Names that differ only in case clash too (VMs are looked up regardless of case);
        // what still clashes then is a warning.
        let vms = [vm("DUP.raw"), vm("dup"), vm("a.raw"), vm("A.RAW")];
        let named = names(&vms);
        assert_eq!(named, vec!["DUP.raw", "dup", "a.raw", "A.RAW"]);
        let w = case_clashes(&named);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("a.raw and A.RAW differ only in letter case"),
            "{w:?}"
        );
        assert_eq!(guess_os("win2019-dc"), Os::Windows);
        assert_eq!(guess_os("Windows_Server_2022"), Os::Windows);
        assert_eq!(guess_os("dc-win2k19"), Os::Windows);
        assert_eq!(guess_os("ubuntu-22.04"), Os::Linux);
        assert_eq!(guess_os("rhel9-db"), Os::Linux);
        assert_eq!(guess_os("ol8"), Os::Linux);
        assert_eq!(guess_os("kali-linux"), Os::Linux);
        assert_eq!(guess_os("web01"), Os::Unknown);
        // Words that only begin like a system's name say nothing.
        assert_eq!(guess_os("archive01"), Os::Unknown);
        assert_eq!(guess_os("winterfell"), Os::Unknown);
        assert_eq!(
            guess_os("oracle-erp"),
            Os::Unknown,
            "Oracle's software runs on Windows too"
        );
        assert_eq!(guess_os("oraclelinux8"), Os::Linux);
        assert_eq!(guess_os("research"), Os::Unknown);
    }

    /// Read throughput of raw vs qcow2 (release build):
    /// `cargo test --release --lib images::tests::read_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn read_throughput() {
        if !tools() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("big.raw");
        // 1 GiB of incompressible-ish data, fully allocated.
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&raw).unwrap());
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut block = vec![0u8; 1 << 20];
            for _ in 0..1024 {
                for c in block.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.copy_from_slice(&x.to_le_bytes());
                }
                f.write_all(&block).unwrap();
            }
        }
        let qcow = dir.path().join("big.qcow2");
        sh(
            "qemu-img",
            &["convert", "-f", "raw", "-O", "qcow2", p(&raw), p(&qcow)],
        );
        let provider = ImagesProvider::new(&settings(dir.path())).unwrap();
        for vm in provider.discover(&CancelToken::new()).unwrap().vms {
            // Drop the page cache's advantage of the first read: read once, then measure.
            let snap = provider
                .snapshot(&vm, Utc::now(), None, &CancelToken::new())
                .unwrap();
            let r = snap.open_disk(0).unwrap();
            let ext = r.allocated_extents().unwrap();
            for (threads, cold) in [(1usize, true), (1, false), (2, false)] {
                // Cold: from the disk, when the page cache can be dropped (root only).
                let cold = cold && std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
                let t0 = std::time::Instant::now();
                let chunk = 4u64 << 20;
                let cap = r.capacity();
                std::thread::scope(|s| {
                    for t in 0..threads as u64 {
                        let r = &r;
                        s.spawn(move || {
                            let mut buf = vec![0u8; chunk as usize];
                            let mut off = t * chunk;
                            while off < cap {
                                let n = chunk.min(cap - off) as usize;
                                r.read_at(off, &mut buf[..n]).unwrap();
                                off += chunk * threads as u64;
                            }
                        });
                    }
                });
                let secs = t0.elapsed().as_secs_f64();
                println!(
                    "{}: {} MiB allocated in {} extents, {threads} thread(s), {} cache: {:.0} MB/s",
                    vm.name,
                    ext.iter().map(|e| e.len).sum::<u64>() >> 20,
                    ext.len(),
                    if cold { "cold" } else { "warm" },
                    cap as f64 / secs / 1e6
                );
            }
        }
    }
}
