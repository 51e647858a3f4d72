//! The files a disk image of the `images` source reads: found, checked against the folders
//! the source may read, and handed to QEMU's tools so that they read nothing else.
//!
//! # What an image may read
//! An image names other files: the backing file of a qcow2, qcow or vmdk overlay (and that
//! file's backing file, …), the external data file of a qcow2, the extents of a vmdk
//! descriptor. Each is resolved the way QEMU resolves it (relative to the image that names
//! it), opened by vmvault, and accepted only when it is a regular file whose real path
//! (symlinks resolved) lies in the images folder or in a folder of `allowed_roots`.
//! Refused, each with a message that names the file and what to do:
//! - a file outside those folders (a symlink inside the folder to a file inside is fine);
//! - anything but a regular file: a FIFO blocks whoever opens it, a device would be read
//!   as a disk;
//! - a `json:` specification or a protocol name (`nbd:`, `http:`, `file:` …) as a backing
//!   file: either can name any file or a network source;
//! - a backing chain that loops or is deeper than [`MAX_DEPTH`].
//!
//! # Formats are never probed
//! A raw file holds guest data, and guest data can look like an image header that names
//! other files (the classic way out of a VM). So an image's format comes from its name
//! (`.raw .img .bin` are raw, see `images`), a backing file's from what its overlay records
//! (else from its name; with neither, it is refused). The headers that name other files
//! (qcow2, qcow, vmdk) are read here, not by QEMU, before QEMU opens anything.
//!
//! # QEMU opens only what was checked
//! Checking names and then handing the names to QEMU would leave a window: a name can be
//! swapped for a symlink, a header rewritten to name another backing file. So QEMU never
//! gets a name to resolve: each checked file is passed as `/proc/self/fd/N`, the descriptor
//! vmvault opened (inherited by the tool), inside a `json:` specification that spells out
//! the whole chain — every layer's format and file, the data file, and `"backing": null`
//! at its end — so QEMU follows nothing the headers say. A vmdk descriptor is handed over
//! as a copy in memory whose extents name those descriptors. As a last guard, a
//! `qemu-nbd` is used only while every file it holds open is one of the checked files
//! ([`ImageChain::check_open_files`]).

use super::qemu::{self, QemuImage};
use crate::cancel::CancelToken;
use crate::provider::ProviderError;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Backing chains deeper than this are refused (QEMU's own limit is far above any real one).
pub const MAX_DEPTH: usize = 64;

/// Error codes.
pub const OUTSIDE_FOLDER: &str = "UserErrorImageOutsideFolder";
pub const NOT_A_FILE: &str = "UserErrorImageNotAFile";
pub const FILE_MISSING: &str = "UserErrorImageFileMissing";
pub const CHAIN_REFUSED: &str = "UserErrorImageChainRefused";
pub const IMAGE_INVALID: &str = "UserErrorImageInvalid";

/// The config key that lets images reach outside their folder.
const ROOTS_KEY: &str = "allowed_roots";

/// The folders an images source may read: its folder, then its `allowed_roots`.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The images folder as configured (absolute).
    configured: PathBuf,
    /// The images folder, canonical.
    folder: PathBuf,
    /// Canonical allowed roots (those that exist).
    allowed: Vec<PathBuf>,
}

impl Roots {
    /// `folder` must exist; allowed roots that do not are skipped (they allow nothing).
    pub fn new(folder: &Path, allowed: &[PathBuf]) -> io::Result<Roots> {
        Ok(Roots {
            configured: folder.to_path_buf(),
            folder: std::fs::canonicalize(folder)?,
            allowed: allowed
                .iter()
                .filter_map(|r| std::fs::canonicalize(r).ok())
                .collect(),
        })
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn contains(&self, real: &Path) -> bool {
        std::iter::once(&self.folder)
            .chain(&self.allowed)
            .any(|r| real.starts_with(r))
    }

    /// The error for a file or folder (`shown` says which, and how it was reached) whose
    /// real path `real` lies outside every root.
    fn outside(&self, shown: &str, real: &Path) -> ProviderError {
        let folder = real
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string();
        let allowed = if self.allowed.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self
                .allowed
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            format!(" and {ROOTS_KEY} ({})", list.join(", "))
        };
        refused(
            OUTSIDE_FOLDER,
            "A file outside the images folder",
            format!(
                "{shown}, which is {}, outside the images folder {}: the images source reads only files inside its folder{allowed}",
                real.display(),
                self.folder.display(),
            ),
        )
        .recommend(format!(
            "If it is meant to be read, allow its folder in this vault's source: {ROOTS_KEY} = [\"{folder}\"]"
        ))
    }

    /// Checks that the folder `dir` (a VM's subfolder, maybe a symlink) lies inside a root.
    pub fn check_folder(&self, dir: &Path) -> Result<(), ProviderError> {
        let what = dir.display().to_string();
        let real = std::fs::canonicalize(dir).map_err(|e| io_refusal(&what, &e))?;
        if self.contains(&real) {
            return Ok(());
        }
        let shown = match std::fs::read_link(dir) {
            Ok(target) => format!("{what} is a symbolic link to {}", target.display()),
            Err(_) => what,
        };
        Err(self.outside(&shown, &real))
    }

    /// How `real` is shown: relative to the images folder when inside it.
    pub fn show(&self, real: &Path) -> String {
        match real.strip_prefix(&self.folder) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => real.display().to_string(),
        }
    }
}

/// A file's identity: device and inode (names may change, this does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(md: &std::fs::Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
        }
    }

    /// The identity of what `path` names (following symlinks), if anything.
    pub fn of_path(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId::of(&m))
    }
}

/// A file of a chain, opened and checked.
#[derive(Debug)]
pub struct ChainFile {
    /// The path as the image names it (joined to the image's folder), for messages.
    pub named: PathBuf,
    /// Where it really is (symlinks resolved).
    pub real: PathBuf,
    pub file: File,
    pub id: FileId,
    /// Size when it was opened: a read past it means the file shrank meanwhile.
    pub len: u64,
    /// Bytes it takes on the host.
    pub allocated: u64,
}

/// One layer of a chain: an image file in one format, with the files it names.
#[derive(Debug)]
pub struct ChainLayer {
    pub file: ChainFile,
    /// QEMU's format name (`raw`, `qcow2`, `qcow`, `vmdk`, `vpc`, `vhdx`).
    pub format: String,
    /// The external data file of a qcow2.
    pub data_file: Option<ChainFile>,
    /// The extents of a vmdk descriptor.
    pub extents: Vec<ChainFile>,
    /// A vmdk descriptor rewritten to name its extents by descriptor (what QEMU opens
    /// instead of the layer's file).
    descriptor: Option<File>,
    /// Data clusters lie in `file` at the host offsets `qemu-img map` reports: raw, or a
    /// qcow2 without data file or encryption.
    pub direct: bool,
}

/// A disk image with everything it reads, top layer first.
#[derive(Debug)]
pub struct ImageChain {
    pub layers: Vec<ChainLayer>,
}

/// Why a file is read, for messages: the image itself, or a file another one names.
#[derive(Clone, Copy)]
enum Role<'a> {
    Image,
    Backing { of: &'a Path, name: &'a str },
    DataFile { of: &'a Path, name: &'a str },
    Extent { of: &'a Path, name: &'a str },
}

impl Role<'_> {
    fn describe(&self, named: &Path) -> String {
        let (what, of, name) = match *self {
            Role::Image => return named.display().to_string(),
            Role::Backing { of, name } => ("the backing file", of, name),
            Role::DataFile { of, name } => ("the data file", of, name),
            Role::Extent { of, name } => ("the extent", of, name),
        };
        format!("{what} \"{name}\" of {}", of.display())
    }
}

fn refused(code: &str, title: &str, message: String) -> ProviderError {
    ProviderError::new(code, title, message)
}

fn io_refusal(what: &str, e: &io::Error) -> ProviderError {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => refused(
            FILE_MISSING,
            "A file of the image is missing",
            format!("{what} does not exist"),
        ),
        Some(libc::ELOOP) => refused(
            CHAIN_REFUSED,
            "Symbolic link loop",
            format!("{what} is a symbolic link that loops"),
        ),
        _ => ProviderError::new(
            "UserErrorImageUnreadable",
            "A file of the image cannot be read",
            format!("{what}: {e}"),
        ),
    }
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a folder"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

fn open_raw(path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: `c` is NUL-terminated; the descriptor is owned by the OwnedFd.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `named` for reading when it is a regular file inside `roots`; `role` says why it
/// is read (for messages).
fn open_checked(named: &Path, roots: &Roots, role: Role<'_>) -> Result<ChainFile, ProviderError> {
    let what = role.describe(named);
    // O_PATH opens nothing: a device's open has effects (a watchdog starts, a tape rewinds)
    // and a FIFO's blocks. The file is opened for reading only once it proved regular,
    // through this very descriptor, so that a rename meanwhile cannot swap it.
    let handle = open_raw(named, libc::O_PATH).map_err(|e| io_refusal(&what, &e))?;
    let proc = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let md = std::fs::metadata(&proc).map_err(|e| io_refusal(&what, &e))?;
    let real = std::fs::read_link(&proc).map_err(|e| io_refusal(&what, &e))?;
    let link = std::fs::read_link(named).ok();
    let shown = match &link {
        Some(target) => format!("{what} is a symbolic link to {}", target.display()),
        None => what.clone(),
    };
    if !md.file_type().is_file() {
        return Err(refused(
            NOT_A_FILE,
            "Not a disk image file",
            format!(
                "{shown}{}, which is {}: the images source reads regular files only",
                match &link {
                    Some(target) if *target != real => format!(" ({})", real.display()),
                    _ => String::new(),
                },
                kind_of(md.file_type())
            ),
        )
        .recommend("Replace it with a regular image file, or move it out of the images folder"));
    }
    if !roots.contains(&real) {
        return Err(roots.outside(&shown, &real));
    }
    let file = File::from(
        open_raw(&proc, libc::O_RDONLY | libc::O_NOCTTY).map_err(|e| io_refusal(&what, &e))?,
    );
    let opened = file.metadata().map_err(|e| io_refusal(&what, &e))?;
    if FileId::of(&opened) != FileId::of(&md) || !opened.file_type().is_file() {
        return Err(io_refusal(
            &what,
            &io::Error::other("it changed while it was opened"),
        ));
    }
    Ok(ChainFile {
        named: named.to_path_buf(),
        real,
        id: FileId::of(&opened),
        len: opened.len(),
        allocated: opened.blocks() * 512,
        file,
    })
}

/// QEMU formats the images source reads.
const FORMATS: &[&str] = &["raw", "qcow2", "qcow", "vmdk", "vpc", "vhdx"];

/// The format a file name pins: `.raw .img .bin` raw, `.qcow2` qcow2, … (None: no image
/// name).
pub fn format_of_name(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    Some(match ext.as_str() {
        "raw" | "img" | "bin" => "raw",
        "qcow2" => "qcow2",
        "qcow" => "qcow",
        "vmdk" => "vmdk",
        "vhd" | "vpc" => "vpc",
        "vhdx" => "vhdx",
        _ => return None,
    })
}

/// QEMU's test for a protocol prefix: a ':' before any '/' (`nbd:`, `json:`, `file:`).
fn has_protocol(name: &str) -> bool {
    name.find([':', '/'])
        .is_some_and(|i| name.as_bytes()[i] == b':')
}

/// Where QEMU looks for `name`, named by the image at `image`: absolute as is, relative to
/// the image's folder (as named, like QEMU).
fn combine(image: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        name.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new("")).join(name)
    }
}

/// Refuses names QEMU would not take as a plain file.
fn check_reference(role: Role<'_>, name: &str) -> Result<(), ProviderError> {
    let what = role.describe(Path::new(name));
    if name.is_empty() {
        return Err(refused(
            CHAIN_REFUSED,
            "An image names an empty file",
            format!("{what} is empty"),
        ));
    }
    if name.starts_with("json:") || has_protocol(name) {
        let kind = if name.starts_with("json:") {
            "a json: specification"
        } else {
            "a protocol name"
        };
        return Err(refused(
            CHAIN_REFUSED,
            "An image names a file in a way vmvault does not follow",
            format!(
                "{what} is {kind}, which can name any file or a network source; the images source follows only plain file names"
            ),
        )
        .recommend("Point the image at a plain file: qemu-img rebase -u -b FILE -F FORMAT IMAGE"));
    }
    Ok(())
}

impl ImageChain {
    /// Resolves and checks everything the image at `path` (format `format`) reads.
    pub fn resolve(path: &Path, format: &str, roots: &Roots) -> Result<ImageChain, ProviderError> {
        let mut layers: Vec<ChainLayer> = Vec::new();
        let mut seen: HashSet<FileId> = HashSet::new();
        let mut next = (
            path.to_path_buf(),
            format.to_string(),
            None::<(PathBuf, String)>,
        );
        loop {
            let (named, format, referrer) = next;
            let role = match &referrer {
                Some((of, name)) => Role::Backing { of, name },
                None => Role::Image,
            };
            let file = open_checked(&named, roots, role)?;
            if !seen.insert(file.id) {
                return Err(refused(
                    CHAIN_REFUSED,
                    "The backing chain loops",
                    format!(
                        "{} leads back to {}, which is already in the chain: {}",
                        role.describe(&named),
                        roots.show(&file.real),
                        describe_layers(&layers, roots)
                    ),
                ));
            }
            if layers.len() >= MAX_DEPTH {
                return Err(refused(
                    CHAIN_REFUSED,
                    "The backing chain is too deep",
                    format!("{} has more than {MAX_DEPTH} layers", path.display()),
                ));
            }
            let refs = read_references(&file, &format)?;
            let data_file = match &refs.data_file {
                Some(name) => {
                    let role = Role::DataFile { of: &named, name };
                    check_reference(role, name)?;
                    Some(open_checked(&combine(&named, name), roots, role)?)
                }
                None => None,
            };
            let mut extents = Vec::new();
            let mut descriptor = None;
            if let Some(d) = &refs.descriptor {
                for name in &d.extents {
                    let role = Role::Extent { of: &named, name };
                    check_reference(role, name)?;
                    extents.push(open_checked(&combine(&named, name), roots, role)?);
                }
                descriptor = Some(d.rewrite(&extents).map_err(|e| {
                    io_refusal(
                        &format!("copying the descriptor of {}", named.display()),
                        &e,
                    )
                })?);
            }
            let direct =
                format == "raw" || (format == "qcow2" && data_file.is_none() && !refs.encrypted);
            layers.push(ChainLayer {
                file,
                format,
                data_file,
                extents,
                descriptor,
                direct,
            });
            let Some((name, recorded)) = refs.backing else {
                break;
            };
            let role = Role::Backing {
                of: &named,
                name: &name,
            };
            check_reference(role, &name)?;
            let backing = combine(&named, &name);
            let format = match recorded.or_else(|| format_of_name(&backing).map(String::from)) {
                Some(f) if FORMATS.contains(&f.as_str()) => f,
                Some(f) => {
                    return Err(refused(
                        CHAIN_REFUSED,
                        "Unsupported backing format",
                        format!(
                            "{} is recorded as format \"{f}\"; the images source reads raw, qcow2, qcow, vmdk, vhd and vhdx files",
                            role.describe(&backing)
                        ),
                    ))
                }
                None => {
                    return Err(refused(
                        CHAIN_REFUSED,
                        "The backing file's format is not recorded",
                        format!(
                            "{} has no recorded format and a name that does not say one; vmvault does not guess formats (guest data in a raw file can look like an image header)",
                            role.describe(&backing)
                        ),
                    )
                    .recommend(format!(
                        "Record it: qemu-img rebase -u -b '{name}' -F FORMAT '{}' (FORMAT: raw, qcow2, …)",
                        named.display()
                    )))
                }
            };
            next = (backing, format, Some((named, name)));
        }
        Ok(ImageChain { layers })
    }

    /// The top layer (the image itself).
    pub fn top(&self) -> &ChainLayer {
        // A chain always has its top layer (resolve pushes it before anything else).
        &self.layers[0]
    }

    /// QEMU's format of the image.
    pub fn format(&self) -> &str {
        &self.top().format
    }

    /// Every file the chain reads.
    pub fn files(&self) -> impl Iterator<Item = &ChainFile> {
        self.layers.iter().flat_map(|l| {
            std::iter::once(&l.file)
                .chain(&l.data_file)
                .chain(&l.extents)
        })
    }

    /// Files that are parts of this image (every file but the top layer's own), each with
    /// what it is to the image ("backing file", "data file", "extent").
    pub fn parts(&self) -> impl Iterator<Item = (FileId, &'static str)> + '_ {
        let top = self.top().file.id;
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                let own = (i > 0).then_some((l.file.id, "backing file"));
                own.into_iter()
                    .chain(l.data_file.iter().map(|d| (d.id, "data file")))
                    .chain(l.extents.iter().map(|e| (e.id, "extent")))
            })
            .filter(move |(id, _)| *id != top)
    }

    /// Bytes the image's own files (not its backing files) take on the host.
    pub fn allocated(&self) -> u64 {
        let top = self.top();
        std::iter::once(&top.file)
            .chain(&top.data_file)
            .chain(&top.extents)
            .map(|f| f.allocated)
            .sum()
    }

    /// The chain for people: `app01.qcow2 (qcow2) → base.qcow2 (qcow2)`, with where
    /// symlinks lead and the data file and extents of each layer.
    pub fn describe(&self, roots: &Roots) -> String {
        describe_layers(&self.layers, roots)
    }

    /// How QEMU's tools open this chain: a `json:` specification naming every file by
    /// descriptor, and those descriptors.
    pub fn qemu_image(&self) -> QemuImage {
        image_of(&self.layers)
    }

    /// Checks that no data of the image lies past the end of its files (a qcow2 cut short
    /// reads as zeros there, see [`qemu::check_map_within_files`]). Raw images have nothing
    /// to check: their data is their file.
    pub fn check_complete(&self, cancel: &CancelToken) -> Result<(), ProviderError> {
        if self.layers.iter().all(|l| l.format == "raw" || !l.direct) {
            return Ok(());
        }
        let map = qemu::image_map(
            &qemu::MapTarget::Image {
                image: self.qemu_image(),
                force_share: false,
            },
            cancel,
        )?;
        let lens: Vec<Option<u64>> = self
            .layers
            .iter()
            .map(|l| l.direct.then_some(l.file.len))
            .collect();
        qemu::check_map_within_files(&map, &lens, &self.top().file.named)
    }

    /// Checks that every regular file process `pid` (a qemu-nbd serving this chain) holds
    /// open is one of this chain's: whatever QEMU's drivers made of the files, nothing
    /// else gets exported.
    pub fn check_open_files(&self, pid: u32) -> Result<(), ProviderError> {
        let mut ours: HashSet<FileId> = self.files().map(|f| f.id).collect();
        for l in &self.layers {
            if let Some(d) = &l.descriptor {
                if let Ok(md) = d.metadata() {
                    ours.insert(FileId::of(&md));
                }
            }
        }
        let dir = format!("/proc/{pid}/fd");
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            ProviderError::io(format!("listing the files qemu-nbd holds ({dir})"), e)
        })?;
        for e in entries.flatten() {
            // 0–2 are /dev/null and the pipe vmvault gave it.
            if matches!(e.file_name().to_str(), Some("0" | "1" | "2")) {
                continue;
            }
            let Ok(md) = std::fs::metadata(e.path()) else {
                continue;
            };
            if md.file_type().is_file() && !ours.contains(&FileId::of(&md)) {
                let what = std::fs::read_link(e.path()).unwrap_or_default();
                return Err(refused(
                    CHAIN_REFUSED,
                    "The image reads a file that was not checked",
                    format!(
                        "qemu-nbd, exporting {}, opened {}, which is not one of the files of its checked chain; the export was stopped",
                        self.top().file.named.display(),
                        what.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads the image's format facts with `qemu-img info` (the top layer; its backing
    /// chain as resolved here): virtual size, and whether a running QEMU holds it.
    pub fn info(&self, force_share: bool, cancel: &CancelToken) -> Result<TopInfo, ProviderError> {
        // The top layer alone: qemu-img info takes no backing options (it opens none).
        let image = image_of(&self.layers[..1]);
        let out = qemu::qemu_img_info(&image, force_share, cancel)?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| {
            refused(
                "ToolOutputInvalid",
                "Unexpected output from qemu-img",
                format!(
                    "qemu-img info of {}: not JSON: {e}",
                    image.shown().display()
                ),
            )
        })?;
        let virtual_size = v["virtual-size"].as_u64().ok_or_else(|| {
            refused(
                "ToolOutputInvalid",
                "Unexpected output from qemu-img",
                format!(
                    "qemu-img info of {}: no virtual-size",
                    image.shown().display()
                ),
            )
        })?;
        if v["format-specific"]["data"]["corrupt"].as_bool() == Some(true) {
            return Err(refused(
                IMAGE_INVALID,
                "The image is marked corrupt",
                format!(
                    "{} is marked corrupt by QEMU",
                    self.top().file.named.display()
                ),
            )
            .recommend(
                "Check and repair it: qemu-img check -r all IMAGE (with no VM running on it)",
            ));
        }
        // qemu-img reports a raw file's size rounded up to whole 512-byte sectors
        // (1,000,001 bytes as 1,000,448); a backup must restore its exact length.
        let top = self.top();
        let virtual_size =
            if top.format == "raw" && top.file.file.metadata().is_ok_and(|m| m.is_file()) {
                top.file.len
            } else {
                virtual_size
            };
        Ok(TopInfo { virtual_size })
    }
}

/// What `qemu-img info` adds to a resolved chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopInfo {
    /// Capacity in bytes as the guest sees it.
    pub virtual_size: u64,
}

/// The QEMU image of `layers` (top first): the last one's backing is `null`.
fn image_of(layers: &[ChainLayer]) -> QemuImage {
    let mut fds = Vec::new();
    let mut spec = Value::Null;
    for l in layers.iter().rev() {
        let main = l.descriptor.as_ref().unwrap_or(&l.file.file);
        fds.push(main.as_raw_fd());
        fds.extend(l.extents.iter().map(|e| e.file.as_raw_fd()));
        let mut node = json!({ "driver": l.format, "file": fd_node(main) });
        if let Some(d) = &l.data_file {
            fds.push(d.file.as_raw_fd());
            node["data-file"] = fd_node(&d.file);
        }
        if l.format != "raw" {
            // null ends the chain: QEMU follows no backing file the header names.
            node["backing"] = spec;
        }
        spec = node;
    }
    let shown = layers
        .first()
        .map(|l| l.file.named.clone())
        .unwrap_or_default();
    QemuImage::new(spec, fds, shown)
}

fn fd_node(f: &File) -> Value {
    json!({ "driver": "file", "filename": format!("/proc/self/fd/{}", f.as_raw_fd()) })
}

fn describe_layers(layers: &[ChainLayer], roots: &Roots) -> String {
    // As the image names it (inside the folder: relative to it), then where it really is
    // when that differs (a symlink, a file outside the folder).
    let file = |f: &ChainFile| {
        let named = [&roots.configured, &roots.folder]
            .iter()
            .find_map(|r| f.named.strip_prefix(r).ok())
            .unwrap_or(&f.named)
            .display()
            .to_string();
        let real = roots.show(&f.real);
        if named == real {
            named
        } else {
            format!("{named} → {real}")
        }
    };
    layers
        .iter()
        .map(|l| {
            let mut s = format!("{} ({}", file(&l.file), display_format(&l.format));
            if let Some(d) = &l.data_file {
                s.push_str(&format!(", data file {}", file(d)));
            }
            if !l.extents.is_empty() {
                let names: Vec<String> = l.extents.iter().map(&file).collect();
                s.push_str(&format!(", extents {}", names.join(", ")));
            }
            s.push(')');
            s
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The format's name for people (`vhd` for QEMU's `vpc`).
pub fn display_format(qemu_format: &str) -> &str {
    if qemu_format == "vpc" {
        "vhd"
    } else {
        qemu_format
    }
}

// ---------------------------------------------------------------------------------------
// Headers: what each format names

/// What a layer's header names.
#[derive(Debug, Default)]
struct References {
    /// The backing file's name and recorded format.
    backing: Option<(String, Option<String>)>,
    data_file: Option<String>,
    descriptor: Option<VmdkDescriptor>,
    encrypted: bool,
}

fn read_head(f: &ChainFile, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match f.file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

fn invalid(f: &ChainFile, format: &str, why: &str) -> ProviderError {
    refused(
        IMAGE_INVALID,
        "Not a valid disk image",
        format!(
            "{} is not a valid {} image: {why}",
            f.named.display(),
            display_format(format)
        ),
    )
    .recommend("Check the file (qemu-img check), or give it the extension of its real format")
}

fn read_references(f: &ChainFile, format: &str) -> Result<References, ProviderError> {
    let read_err = |e: io::Error| io_refusal(&f.named.display().to_string(), &e);
    match format {
        "qcow2" | "qcow" => {
            let head = read_head(f, 0, 64 << 10).map_err(read_err)?;
            qcow_references(&head, f, format)
        }
        "vmdk" => vmdk_references(f).map_err(|e| match e {
            VmdkError::Io(e) => read_err(e),
            VmdkError::Invalid(why) => invalid(f, format, &why),
        }),
        _ => Ok(References::default()),
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const QCOW_MAGIC: u32 = 0x5146_49fb;
const QCOW2_EXT_END: u32 = 0;
const QCOW2_EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const QCOW2_EXT_DATA_FILE: u32 = 0x4441_5441;
const QCOW2_INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// The backing file (qcow and qcow2), its format and the data file (qcow2) of a header.
fn qcow_references(head: &[u8], f: &ChainFile, format: &str) -> Result<References, ProviderError> {
    let bad = |why: &str| invalid(f, format, why);
    if be32(head, 0) != Some(QCOW_MAGIC) {
        return Err(bad("no qcow header"));
    }
    let version = be32(head, 4).ok_or_else(|| bad("header cut short"))?;
    match (format, version) {
        ("qcow", 1) | ("qcow2", 2 | 3) => {}
        _ => return Err(bad(&format!("header version {version}"))),
    }
    let mut refs = References::default();
    let off = be64(head, 8).ok_or_else(|| bad("header cut short"))?;
    let size = be32(head, 16).ok_or_else(|| bad("header cut short"))? as u64;
    if off != 0 && size != 0 {
        if size > 1023 {
            return Err(bad("backing file name longer than 1023 bytes"));
        }
        let name = read_head(f, off, size as usize)
            .map_err(|e| io_refusal(&f.named.display().to_string(), &e))?;
        if name.len() as u64 != size {
            return Err(bad("backing file name cut short"));
        }
        let name = String::from_utf8(name).map_err(|_| bad("backing file name is not UTF-8"))?;
        refs.backing = Some((name, None));
    }
    // crypt_method: at 32 in both versions.
    refs.encrypted = be32(head, 32).is_some_and(|m| m != 0);
    if format == "qcow" {
        return Ok(refs);
    }
    let (incompatible, mut at) = if version == 2 {
        (0, 72usize)
    } else {
        (
            be64(head, 72).ok_or_else(|| bad("header cut short"))?,
            be32(head, 100).ok_or_else(|| bad("header cut short"))? as usize,
        )
    };
    let mut data_file = None;
    // Header extensions: type, length, data padded to 8 bytes, until the end marker.
    while let (Some(kind), Some(len)) = (be32(head, at), be32(head, at + 4)) {
        if kind == QCOW2_EXT_END {
            break;
        }
        let data = head
            .get(at + 8..at + 8 + len as usize)
            .ok_or_else(|| bad("header extension cut short"))?;
        let text = || String::from_utf8(data.to_vec()).map_err(|_| bad("a file name is not UTF-8"));
        match kind {
            QCOW2_EXT_BACKING_FORMAT => {
                if let Some((_, fmt)) = &mut refs.backing {
                    *fmt = Some(text()?);
                }
            }
            QCOW2_EXT_DATA_FILE => data_file = Some(text()?),
            _ => {}
        }
        at += 8 + (len as usize).div_ceil(8) * 8;
    }
    if incompatible & QCOW2_INCOMPAT_DATA_FILE != 0 {
        refs.data_file = Some(data_file.ok_or_else(|| {
            bad("it keeps its data in an external data file but does not name it")
        })?);
    }
    Ok(refs)
}

/// A vmdk descriptor with the extents it names.
#[derive(Debug)]
struct VmdkDescriptor {
    /// The descriptor's lines.
    lines: Vec<String>,
    /// For each extent: the index of its line and its file name.
    extent_lines: Vec<(usize, String)>,
    extents: Vec<String>,
}

enum VmdkError {
    Io(io::Error),
    Invalid(String),
}

impl From<io::Error> for VmdkError {
    fn from(e: io::Error) -> Self {
        VmdkError::Io(e)
    }
}

const VMDK4_MAGIC: u32 = 0x564d_444b; // "KDMV"
const VMDK3_MAGIC: u32 = 0x4457_4f43; // "COWD"
/// QEMU reads at most this much of a descriptor file.
const DESC_MAX: usize = (1 << 20) - 1;

/// Where a vmdk's other files are named: in a descriptor (a text file, or one embedded in
/// a sparse file whose capacity is 0), as extents; and as `parentFileNameHint`, its
/// backing file. Mirrors QEMU's `vmdk_open`.
fn vmdk_references(f: &ChainFile) -> Result<References, VmdkError> {
    let head = read_head(f, 0, 512)?;
    let magic = le32(&head, 0);
    let mut refs = References::default();
    if magic == Some(VMDK3_MAGIC) {
        return Ok(refs); // an ESX sparse file: all in itself
    }
    let text = if magic == Some(VMDK4_MAGIC) {
        let capacity =
            le64(&head, 12).ok_or_else(|| VmdkError::Invalid("header cut short".into()))?;
        let desc_offset = le64(&head, 28).unwrap_or(0);
        let desc_size = le64(&head, 36).unwrap_or(0);
        if desc_offset == 0 {
            return Ok(refs);
        }
        let len = (desc_size.saturating_mul(512)).min(DESC_MAX as u64) as usize;
        let desc = read_head(f, desc_offset.saturating_mul(512), len)?;
        let desc = String::from_utf8_lossy(&desc)
            .trim_end_matches('\0')
            .to_string();
        if capacity != 0 {
            // The data is in this file; the embedded descriptor may name a parent.
            refs.backing = parent_hint(&desc).map(|p| (p, Some("vmdk".into())));
            return Ok(refs);
        }
        desc
    } else {
        if f.len > DESC_MAX as u64 {
            return Err(VmdkError::Invalid(
                "neither a sparse VMDK nor a descriptor file (too large for one)".into(),
            ));
        }
        let desc = read_head(f, 0, DESC_MAX)?;
        String::from_utf8(desc).map_err(|_| {
            VmdkError::Invalid("neither a sparse VMDK nor a descriptor file (not text)".into())
        })?
    };
    if !text.contains("createType") {
        return Err(VmdkError::Invalid(
            "the descriptor has no createType".into(),
        ));
    }
    refs.backing = parent_hint(&text).map(|p| (p, Some("vmdk".into())));
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let mut extent_lines = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match parse_extent(line) {
            Some(Ok(name)) => extent_lines.push((i, name)),
            Some(Err(())) => {
                return Err(VmdkError::Invalid(format!(
                    "descriptor line {} is not an extent vmvault understands: {}",
                    i + 1,
                    line.trim()
                )))
            }
            None => {}
        }
    }
    let extents = extent_lines.iter().map(|(_, n)| n.clone()).collect();
    refs.descriptor = Some(VmdkDescriptor {
        lines,
        extent_lines,
        extents,
    });
    Ok(refs)
}

/// QEMU takes the text after `parentFileNameHint="` up to the next quote.
fn parent_hint(desc: &str) -> Option<String> {
    let at = desc.find("parentFileNameHint")? + "parentFileNameHint".len() + 2;
    let rest = desc.get(at..)?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

/// An extent line (`RW 2048 FLAT "disk-flat.vmdk" 0`): Some(Ok(file name)); Some(Err) for
/// a line that starts like one (access `RW`) but does not parse; None for other lines.
/// QEMU opens the extents of `RW` lines only.
fn parse_extent(line: &str) -> Option<Result<String, ()>> {
    let mut rest = line.trim_start();
    let access = rest.split_whitespace().next()?;
    if access != "RW" {
        return None;
    }
    rest = rest[access.len()..].trim_start();
    let sectors_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '+'))
        .unwrap_or(rest.len());
    if sectors_end == 0 {
        return Some(Err(()));
    }
    rest = rest[sectors_end..].trim_start();
    let kind = rest.split_whitespace().next().unwrap_or("");
    if kind.is_empty() || kind.len() > 10 || kind.contains('"') {
        return Some(Err(()));
    }
    rest = rest[kind.len()..].trim_start();
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(Err(()));
    };
    match quoted.find(['"', '\n', '\r']) {
        Some(end) if quoted.as_bytes()[end] == b'"' && end > 0 => Some(Ok(quoted[..end].into())),
        _ => Some(Err(())),
    }
}

impl VmdkDescriptor {
    /// The descriptor QEMU gets: extents named `/proc/self/fd/N` (the checked files), no
    /// parent hint (the chain names the backing file), in a memory file.
    fn rewrite(&self, extents: &[ChainFile]) -> io::Result<File> {
        let mut lines = self.lines.clone();
        for ((i, name), file) in self.extent_lines.iter().zip(extents) {
            if let Some(line) = lines.get_mut(*i) {
                *line = line.replacen(
                    &format!("\"{name}\""),
                    &format!("\"/proc/self/fd/{}\"", file.file.as_raw_fd()),
                    1,
                );
            }
        }
        lines.retain(|l| !l.contains("parentFileNameHint"));
        let text = lines.join("\n") + "\n";
        // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by the File.
        let fd =
            unsafe { libc::memfd_create(c"vmvault-vmdk-descriptor".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        file.write_all_at(text.as_bytes(), 0)?;
        Ok(file)
    }
}
