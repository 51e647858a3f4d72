//! QEMU tooling shared by the real VM sources (`images`, `libvirt`): running `qemu-img`,
//! `qemu-nbd` and `virsh` as child processes, reading disk images as raw bytes, and
//! converting a restored raw image to qcow2, vhd or vmdk.
//!
//! # How disks are read
//! - **Allocated extents** come from `qemu-img map --output=json`, which follows backing
//!   chains and knows holes and zero clusters of every format; a range is read only when
//!   qemu-img does not promise it reads as zeros.
//! - **Raw files** are read directly with `pread` (no copy through another process: the
//!   fastest path). While they are read, vmvault holds the same byte-range locks QEMU holds
//!   on an image it reads (open file description locks on bytes 100 and 201, the scheme of
//!   QEMU's `file-posix` driver), so a VM that starts during the backup cannot get the
//!   write lock, and an image a running QEMU writes is refused before reading starts.
//! - **Other formats** (qcow2 and its backing chain, vmdk, vhd, vhdx) are exported by a
//!   private `qemu-nbd --read-only --persistent` on a unix socket in a private folder, which
//!   also holds QEMU's lock for as long as the snapshot lives. Data is read with the small
//!   NBD client below (fixed newstyle handshake, `NBD_OPT_GO`, simple replies; one
//!   connection per reading thread, `--shared=0`) — except that the data clusters of raw
//!   and plain qcow2 layers are read straight from their files at the host offsets
//!   `qemu-img map` reports (the image is locked against writers, so the map cannot go
//!   stale). That makes qcow2 as fast as raw (measured: ~0.7 GB/s through qemu-nbd alone,
//!   disk speed direct); compressed clusters and other formats go through NBD, which
//!   decodes everything QEMU knows. The alternatives were worse: `qemu-nbd -c /dev/nbdX`
//!   needs the `nbd` kernel module (usually absent, and root), and a `qemu-img dd`/`qemu-io`
//!   process per read costs a process start per chunk.
//! - A **libvirt backup job** exports the point-in-time view of a running domain's disk over
//!   NBD too; the same client reads it, and `qemu-img map` over that export (with
//!   `x-dirty-bitmap`) yields the blocks changed since a checkpoint.
//!
//! # Processes
//! Every child is started by `supervise` (it dies with vmvault), runs with a timeout, is
//! killed (with its process group) when the job is cancelled, runs with `LC_ALL=C` so its
//! messages can be recognised, and its stderr ends up in the error message. A missing tool is a clear [`ProviderError`] naming the package to
//! install, never a panic.

use crate::cancel::CancelToken;
use crate::model::Extent;
use crate::provider::chain::ImageChain;
use crate::provider::supervise::Supervised;
use crate::provider::{DiskReader, ProviderError};
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Error code of an image that a running QEMU holds open for writing.
pub const IMAGE_IN_USE: &str = "UserErrorImageInUse";
/// Error code of a missing command-line tool.
pub const TOOL_NOT_FOUND: &str = "UserErrorToolNotFound";

/// Timeout of quick queries (`qemu-img info`, `virsh dumpxml`, …).
pub const QUICK: Duration = Duration::from_secs(60);
/// Timeout of `qemu-img map` (a large fragmented image has many extents).
pub const MAP_TIMEOUT: Duration = Duration::from_secs(600);

/// Format of a disk image written by a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl DiskFormat {
    pub const ALL: &'static [DiskFormat] = &[
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vhd,
        DiskFormat::Vmdk,
    ];

    /// The name people type (`--format vhd`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vmdk => "vmdk",
        }
    }

    /// QEMU's driver name (`vpc` for vhd).
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Vhd => "vpc",
            f => f.as_str(),
        }
    }

    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            f => f.as_str(),
        }
    }

    /// Parses a name, ignoring ASCII case (`vpc` is accepted for vhd).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "raw" | "img" => Some(DiskFormat::Raw),
            "qcow2" => Some(DiskFormat::Qcow2),
            "vhd" | "vpc" => Some(DiskFormat::Vhd),
            "vmdk" => Some(DiskFormat::Vmdk),
            _ => None,
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Tools and processes

/// The package that provides a tool, per distribution family.
fn install_hint(tool: &str) -> &'static str {
    match tool {
        "qemu-img" | "qemu-nbd" | "qemu-io" => {
            "install qemu-utils (Debian/Ubuntu) or qemu-img (Fedora/RHEL)"
        }
        "virsh" => "install libvirt-clients (Debian/Ubuntu) or libvirt-client (Fedora/RHEL)",
        _ => "install it and make sure it is on PATH",
    }
}

/// Where `tool` is on PATH.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    #[cfg(test)]
    if test_support::HIDDEN_TOOLS.with(|h| h.borrow().iter().any(|t| t == tool)) {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The path of `tool`, or an error that says which package provides it.
pub fn require_tool(tool: &str) -> Result<PathBuf, ProviderError> {
    find_tool(tool).ok_or_else(|| tool_not_found(tool))
}

fn tool_not_found(tool: &str) -> ProviderError {
    ProviderError::new(
        TOOL_NOT_FOUND,
        "A required tool is missing",
        format!("{tool} not found on PATH: {}", install_hint(tool)),
    )
    .recommend(format!("{tool}: {}", install_hint(tool)))
}

/// Why a child process did not succeed.
#[derive(Debug)]
pub enum RunError {
    NotFound {
        tool: String,
    },
    Spawn {
        tool: String,
        error: std::io::Error,
    },
    Failed {
        tool: String,
        status: ExitStatus,
        stderr: String,
    },
    TimedOut {
        tool: String,
        after: Duration,
    },
    Cancelled,
}

impl RunError {
    /// What the tool printed on stderr (empty unless it ran and failed).
    pub fn stderr(&self) -> &str {
        match self {
            RunError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }

    /// Turns this into a provider error saying what was being done (`what`).
    pub fn into_provider(self, what: &str) -> ProviderError {
        match self {
            RunError::NotFound { tool } => tool_not_found(&tool),
            RunError::Spawn { tool, error } => ProviderError::new(
                "ToolFailed",
                "A tool could not be started",
                format!("{what}: could not start {tool}: {error}"),
            ),
            RunError::Failed {
                tool,
                status,
                stderr,
            } => ProviderError::new(
                "ToolFailed",
                "A tool reported an error",
                format!("{what}: {tool} failed ({status}): {}", one_line(&stderr)),
            ),
            RunError::TimedOut { tool, after } => ProviderError::new(
                "ToolTimedOut",
                "A tool did not answer in time",
                format!(
                    "{what}: {tool} did not finish within {} s and was stopped",
                    after.as_secs()
                ),
            )
            .recommend("Check that the host is responsive, then retry"),
            RunError::Cancelled => ProviderError::Cancelled,
        }
    }
}

/// Joins the lines of a tool's message so that it fits an error line.
pub fn one_line(s: &str) -> String {
    let joined = s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if joined.is_empty() {
        "no error message".to_string()
    } else {
        joined
    }
}

/// Runs `tool args…` to completion and returns its stdout. The child is killed on timeout
/// and on cancellation.
pub fn run_tool<S: AsRef<OsStr>>(
    tool: &str,
    args: &[S],
    timeout: Duration,
    cancel: &CancelToken,
) -> Result<Vec<u8>, RunError> {
    run_tool_with_fds(tool, args, &[], timeout, cancel)
}

/// Like [`run_tool`]; the descriptors in `inherit` stay open in the tool (an image named
/// `/proc/self/fd/N`).
pub fn run_tool_with_fds<S: AsRef<OsStr>>(
    tool: &str,
    args: &[S],
    inherit: &[RawFd],
    timeout: Duration,
    cancel: &CancelToken,
) -> Result<Vec<u8>, RunError> {
    cancel.check().map_err(|_| RunError::Cancelled)?;
    let path = find_tool(tool).ok_or_else(|| RunError::NotFound {
        tool: tool.to_string(),
    })?;
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Supervised::spawn(cmd, inherit).map_err(|error| RunError::Spawn {
        tool: tool.to_string(),
        error,
    })?;
    let out = drain(child.child_mut().stdout.take());
    let err = drain(child.child_mut().stderr.take());
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(error) => {
                return Err(RunError::Spawn {
                    tool: tool.to_string(),
                    error,
                });
            }
        }
        // Dropping `child` below kills it with its process group.
        if cancel.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        if start.elapsed() >= timeout {
            return Err(RunError::TimedOut {
                tool: tool.to_string(),
                after: timeout,
            });
        }
        // Short polls first: most queries finish within milliseconds.
        let nap = if start.elapsed() < Duration::from_millis(100) {
            2
        } else {
            20
        };
        std::thread::sleep(Duration::from_millis(nap));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    if status.success() {
        Ok(stdout)
    } else {
        Err(RunError::Failed {
            tool: tool.to_string(),
            status,
            stderr,
        })
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Builds an argument list of mixed strings and paths.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(::std::ffi::OsString::from($a)),*] };
}

// ---------------------------------------------------------------------------------------
// qemu-img info / map

/// What `qemu-img info --backing-chain` tells about an image (opened by name: a libvirt
/// domain's disk; the images source resolves its chains itself, see `chain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// QEMU's format name (`raw`, `qcow2`, `vmdk`, `vpc`, `vhdx`, …).
    pub format: String,
    /// Capacity in bytes as the guest sees it.
    pub virtual_size: u64,
    /// Every layer of the chain, top first (`depth` in `qemu-img map` indexes it).
    pub layers: Vec<Layer>,
}

/// One layer of a backing chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub file: PathBuf,
    pub format: String,
    /// Data clusters of this layer may be read straight from `file` at the host offset
    /// `qemu-img map` reports: raw, or qcow2 without external data file or encryption.
    pub direct: bool,
}

/// Reads an image's format, capacity and backing chain. `format` pins the format (no
/// probing); `force_share` reads an image that a running QEMU holds (`-U`).
pub fn image_info(
    path: &Path,
    format: Option<&str>,
    force_share: bool,
    cancel: &CancelToken,
) -> Result<ImageInfo, ProviderError> {
    let mut a = args!["info", "--output=json", "--backing-chain"];
    if let Some(f) = format {
        a.push("-f".into());
        a.push(f.into());
    }
    if force_share {
        a.push("-U".into());
    }
    a.push(path.into());
    let out = run_tool("qemu-img", &a, QUICK, cancel)
        .map_err(|e| image_error(e, path, "reading image information"))?;
    let mut info = parse_image_info(&out, path)?;
    exact_raw_size(&mut info, path);
    Ok(info)
}

/// qemu-img reports the size of a raw file rounded up to whole 512-byte sectors
/// (1,000,001 bytes as 1,000,448). A backup must restore the file's exact length, so the
/// capacity of a raw regular file is its length (a block device keeps qemu-img's size).
fn exact_raw_size(info: &mut ImageInfo, path: &Path) {
    if info.format != "raw" {
        return;
    }
    match std::fs::metadata(path) {
        Ok(md) if md.is_file() => info.virtual_size = md.len(),
        _ => {}
    }
}

/// Maps a qemu-img failure to an error, recognising QEMU's image lock.
pub fn image_error(e: RunError, path: &Path, what: &str) -> ProviderError {
    if is_lock_error(e.stderr()) {
        return image_in_use(path);
    }
    e.into_provider(&format!("{what} of {}", path.display()))
}

/// True when a QEMU tool's message says another process holds the image's write lock.
pub fn is_lock_error(stderr: &str) -> bool {
    stderr.contains("Failed to get") && stderr.contains("lock")
}

/// The error for an image that a running QEMU writes.
pub fn image_in_use(path: &Path) -> ProviderError {
    ProviderError::new(
        IMAGE_IN_USE,
        "Disk image in use",
        format!(
            "{} is in use: a running QEMU process holds its write lock, so its contents \
             change while they would be read",
            path.display()
        ),
    )
}

/// True for the error of [`image_in_use`].
pub fn is_image_in_use(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Failed(d) if d.code == IMAGE_IN_USE)
}

fn parse_image_info(json: &[u8], path: &Path) -> Result<ImageInfo, ProviderError> {
    let bad = |why: String| {
        ProviderError::new(
            "ToolOutputInvalid",
            "Unexpected output from qemu-img",
            format!("qemu-img info of {}: {why}", path.display()),
        )
    };
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    // With --backing-chain the answer is an array (top image first); without, an object.
    let chain: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let top = chain
        .first()
        .ok_or_else(|| bad("empty backing chain".into()))?;
    let format = top["format"]
        .as_str()
        .ok_or_else(|| bad("no format".into()))?
        .to_string();
    let virtual_size = top["virtual-size"]
        .as_u64()
        .ok_or_else(|| bad("no virtual-size".into()))?;
    let mut layers = Vec::new();
    for layer in &chain {
        let file = layer["filename"].as_str().map(PathBuf::from);
        let layer_format = layer["format"].as_str().unwrap_or_default().to_string();
        let specific = &layer["format-specific"]["data"];
        let direct = layer["encrypted"].as_bool() != Some(true)
            && (layer_format == "raw"
                || (layer_format == "qcow2"
                    && specific.get("data-file").is_none()
                    && specific.get("encrypt").is_none()));
        layers.push(Layer {
            direct: direct && file.is_some(),
            file: file.unwrap_or_default(),
            format: layer_format,
        });
    }
    Ok(ImageInfo {
        format,
        virtual_size,
        layers,
    })
}

/// One entry of `qemu-img map --output=json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    #[serde(default)]
    pub zero: bool,
    #[serde(default)]
    pub data: bool,
    /// Host offset of the data in the file of layer `depth` (absent for zeros, and for
    /// formats that do not tell).
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub depth: usize,
    #[serde(default)]
    pub compressed: bool,
}

impl MapEntry {
    pub fn end(&self) -> u64 {
        self.start + self.length
    }
}

/// An image as QEMU's tools open it: a `json:` specification (format, file, and for a
/// checked chain every layer, see `chain`) and the descriptors it names as
/// `/proc/self/fd/N`, which the tool inherits.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuImage {
    spec: serde_json::Value,
    fds: Vec<RawFd>,
    /// The image's path, for messages.
    shown: PathBuf,
}

impl QemuImage {
    /// `spec` names files by the descriptors in `fds`; the caller keeps them open for as
    /// long as a tool may use this.
    pub fn new(spec: serde_json::Value, fds: Vec<RawFd>, shown: PathBuf) -> QemuImage {
        QemuImage { spec, fds, shown }
    }

    /// An image file that QEMU opens by name, following what its header names (a libvirt
    /// domain's disk: the domain's definition says which files it uses).
    pub fn file(path: &Path, format: &str) -> QemuImage {
        let spec = serde_json::json!({
            "driver": format,
            "file": { "filename": path.to_string_lossy() },
        });
        QemuImage::new(spec, Vec::new(), path.to_path_buf())
    }

    pub fn shown(&self) -> &Path {
        &self.shown
    }

    pub fn fds(&self) -> &[RawFd] {
        &self.fds
    }

    /// The tool's image argument; `force_share` reads an image a running QEMU holds (the
    /// block layer's option behind qemu-img's `-U`).
    fn arg(&self, force_share: bool) -> String {
        let mut spec = self.spec.clone();
        if force_share {
            spec["force-share"] = true.into();
            spec["read-only"] = true.into();
        }
        format!("json:{spec}")
    }
}

/// `qemu-img info --output=json` of `image` (its top layer), as printed.
pub fn qemu_img_info(
    image: &QemuImage,
    force_share: bool,
    cancel: &CancelToken,
) -> Result<Vec<u8>, ProviderError> {
    let a = args!["info", "--output=json", image.arg(force_share)];
    run_tool_with_fds("qemu-img", &a, image.fds(), QUICK, cancel)
        .map_err(|e| image_error(e, image.shown(), "reading image information"))
}

/// What `qemu-img map` looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum MapTarget {
    /// An image (file or checked chain).
    Image { image: QemuImage, force_share: bool },
    /// An `--image-opts` string (an NBD export, possibly with `x-dirty-bitmap`).
    ImageOpts(String),
}

/// Runs `qemu-img map --output=json` on `target`.
pub fn image_map(target: &MapTarget, cancel: &CancelToken) -> Result<Vec<MapEntry>, ProviderError> {
    let mut a = args!["map", "--output=json"];
    let (what, fds) = match target {
        MapTarget::Image { image, force_share } => {
            a.push(image.arg(*force_share).into());
            (
                format!("listing allocated extents of {}", image.shown().display()),
                image.fds(),
            )
        }
        MapTarget::ImageOpts(opts) => {
            a.push("--image-opts".into());
            a.push(opts.into());
            (format!("listing extents of {opts}"), &[][..])
        }
    };
    let out =
        run_tool_with_fds("qemu-img", &a, fds, MAP_TIMEOUT, cancel).map_err(|e| match target {
            MapTarget::Image { image, .. } => {
                image_error(e, image.shown(), "listing allocated extents")
            }
            MapTarget::ImageOpts(_) => e.into_provider(&what),
        })?;
    serde_json::from_slice(&out).map_err(|e| {
        ProviderError::new(
            "ToolOutputInvalid",
            "Unexpected output from qemu-img",
            format!("{what}: qemu-img map printed no valid JSON: {e}"),
        )
    })
}

/// Checks that every data cluster `map` places in a layer's file lies within that file
/// (`lens`: the length of each layer's file where the map's host offsets are offsets in
/// it, by depth). A qcow2 cut short (a copy that did not finish) keeps a valid header, and
/// QEMU reads the clusters past the end as zeros: a backup would store zeros silently.
pub fn check_map_within_files(
    map: &[MapEntry],
    lens: &[Option<u64>],
    shown: &Path,
) -> Result<(), ProviderError> {
    for e in map.iter().filter(|e| e.data && !e.zero) {
        let (Some(host), Some(Some(len))) = (e.offset, lens.get(e.depth)) else {
            continue;
        };
        // A compressed cluster's stored size is unknown here: at least its first byte.
        let end = host.saturating_add(if e.compressed { 1 } else { e.length });
        if end > *len {
            let layer = if e.depth == 0 {
                String::new()
            } else {
                format!(" (backing layer {} of its chain)", e.depth)
            };
            return Err(ProviderError::new(
                "ImageTruncated",
                "The image file is incomplete",
                format!(
                    "{}{layer} is truncated: its map places disk bytes {}..{} at file offset {host}, but the file ends at {len} bytes; QEMU would read the missing data as zeros",
                    shown.display(),
                    e.start,
                    e.end(),
                ),
            )
            .recommend("Copy or download the image again completely (the copy that made it did not finish)")
            .recommend(format!(
                "`qemu-img check {}` shows the damage",
                shown.display()
            )));
        }
    }
    Ok(())
}

/// Ranges that may hold data: everything qemu-img does not promise reads as zeros
/// (holes, zero clusters and unallocated ranges without backing are skipped).
pub fn allocated_extents(map: &[MapEntry]) -> Vec<Extent> {
    merge(
        map.iter()
            .filter(|e| !e.zero)
            .map(|e| Extent::new(e.start, e.length)),
    )
}

/// Dirty ranges of a map made with `x-dirty-bitmap`: qemu reports dirty blocks as
/// `"data": false` in that mode (see libvirt's "incremental backup" docs).
pub fn dirty_extents(map: &[MapEntry]) -> Vec<Extent> {
    merge(
        map.iter()
            .filter(|e| !e.data)
            .map(|e| Extent::new(e.start, e.length)),
    )
}

/// Sorts and merges touching or overlapping ranges; drops empty ones.
pub fn merge(extents: impl IntoIterator<Item = Extent>) -> Vec<Extent> {
    let mut v: Vec<Extent> = extents.into_iter().filter(|e| e.len > 0).collect();
    v.sort();
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.offset <= last.end() => {
                let end = last.end().max(e.end());
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Escapes a value for QEMU's `key=value,…` option syntax (a comma is doubled).
pub fn opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// The `--image-opts` of an NBD export on a unix socket.
pub fn nbd_image_opts(socket: &Path, export: &str, dirty_bitmap: Option<&str>) -> String {
    let mut s = format!(
        "driver=nbd,server.type=unix,server.path={},export={}",
        opt_escape(&socket.to_string_lossy()),
        opt_escape(export)
    );
    if let Some(b) = dirty_bitmap {
        s.push_str(&format!(
            ",x-dirty-bitmap=qemu:dirty-bitmap:{}",
            opt_escape(b)
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------
// QEMU-compatible image locks for raw files

/// QEMU's `file-posix` lock layout: byte 100 + bit = "I use this permission", byte 200 +
/// bit = "I do not share this permission"; bit 0 = consistent read, bit 1 = write.
const LOCK_PERM_BASE: i64 = 100;
const LOCK_SHARED_BASE: i64 = 200;
const PERM_CONSISTENT_READ: i64 = 0;
const PERM_WRITE: i64 = 1;

fn ofd_lock(
    file: &File,
    cmd: libc::c_int,
    kind: libc::c_int,
    byte: i64,
) -> std::io::Result<libc::flock> {
    // SAFETY: flock is plain old data; zeroed is a valid value (l_pid must be 0 for OFD
    // locks). fcntl receives a pointer to it for the duration of the call only.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    // SAFETY: valid fd for the lifetime of `file`, valid pointer to `fl`.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

/// Takes QEMU's read locks on an open image: refuses when another process holds the write
/// permission, then keeps writers out for as long as `file` stays open.
pub fn lock_for_read(file: &File, path: &Path) -> Result<(), ProviderError> {
    let probe = ofd_lock(
        file,
        libc::F_OFD_GETLK,
        libc::F_WRLCK,
        LOCK_PERM_BASE + PERM_WRITE,
    )
    .map_err(|e| ProviderError::io(format!("checking the lock of {}", path.display()), e))?;
    if probe.l_type != libc::F_UNLCK as libc::c_short {
        return Err(image_in_use(path));
    }
    for byte in [
        LOCK_PERM_BASE + PERM_CONSISTENT_READ,
        LOCK_SHARED_BASE + PERM_WRITE,
    ] {
        ofd_lock(file, libc::F_OFD_SETLK, libc::F_RDLCK, byte).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EACCES)
            {
                image_in_use(path)
            } else {
                ProviderError::io(format!("locking {}", path.display()), e)
            }
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// NBD client

const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
const NBD_IHAVEOPT: u64 = 0x4948_4156_454F_5054;
const NBD_REPLY_MAGIC_OPT: u64 = 0x0003_e889_0455_65a9;
const NBD_FLAG_FIXED_NEWSTYLE: u16 = 1;
const NBD_FLAG_NO_ZEROES: u16 = 2;
const NBD_OPT_GO: u32 = 7;
const NBD_REP_ACK: u32 = 1;
const NBD_REP_INFO: u32 = 3;
const NBD_REP_FLAG_ERROR: u32 = 1 << 31;
const NBD_INFO_EXPORT: u16 = 0;
const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const NBD_CMD_READ: u16 = 0;
const NBD_CMD_DISC: u16 = 2;
/// Largest read per request: QEMU's server accepts up to 32 MiB.
const NBD_MAX_READ: usize = 16 << 20;
/// A server that stops answering fails the read instead of hanging the backup.
const NBD_IO_TIMEOUT: Duration = Duration::from_secs(300);

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn protocol(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("NBD protocol: {}", msg.into()),
    )
}

/// One connection to an NBD export, in the transmission phase.
struct NbdConn {
    stream: UnixStream,
    size: u64,
    handle: u64,
}

impl NbdConn {
    fn connect(socket: &Path, export: &str) -> std::io::Result<NbdConn> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(NBD_IO_TIMEOUT))?;
        s.set_write_timeout(Some(NBD_IO_TIMEOUT))?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        if be64(&hello[0..]) != NBD_MAGIC || be64(&hello[8..]) != NBD_IHAVEOPT {
            return Err(protocol("not a newstyle NBD server"));
        }
        let server_flags = be16(&hello[16..]);
        if server_flags & NBD_FLAG_FIXED_NEWSTYLE == 0 {
            return Err(protocol("server lacks fixed newstyle negotiation"));
        }
        let client_flags = u32::from(server_flags & (NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
        s.write_all(&client_flags.to_be_bytes())?;
        // NBD_OPT_GO: export name, no extra info requests.
        let name = export.as_bytes();
        let mut opt = Vec::with_capacity(22 + name.len());
        opt.extend_from_slice(&NBD_IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
        opt.extend_from_slice(&((4 + name.len() + 2) as u32).to_be_bytes());
        opt.extend_from_slice(&(name.len() as u32).to_be_bytes());
        opt.extend_from_slice(name);
        opt.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&opt)?;
        let mut size = None;
        loop {
            let mut head = [0u8; 20];
            s.read_exact(&mut head)?;
            if be64(&head[0..]) != NBD_REPLY_MAGIC_OPT {
                return Err(protocol("bad option reply magic"));
            }
            let kind = be32(&head[12..]);
            let len = be32(&head[16..]) as usize;
            if len > 1 << 20 {
                return Err(protocol("oversized option reply"));
            }
            let mut data = vec![0u8; len];
            s.read_exact(&mut data)?;
            if kind & NBD_REP_FLAG_ERROR != 0 {
                return Err(protocol(format!(
                    "export {export:?} refused: {}",
                    String::from_utf8_lossy(&data)
                )));
            }
            match kind {
                NBD_REP_INFO if data.len() >= 12 && be16(&data) == NBD_INFO_EXPORT => {
                    size = Some(be64(&data[2..]));
                }
                NBD_REP_ACK => break,
                _ => {}
            }
        }
        let size = size.ok_or_else(|| protocol("server did not tell the export size"))?;
        Ok(NbdConn {
            stream: s,
            size,
            handle: 0,
        })
    }

    fn read(&mut self, mut offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        for piece in buf.chunks_mut(NBD_MAX_READ) {
            self.handle = self.handle.wrapping_add(1);
            let mut req = [0u8; 28];
            req[0..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
            req[6..8].copy_from_slice(&NBD_CMD_READ.to_be_bytes());
            req[8..16].copy_from_slice(&self.handle.to_be_bytes());
            req[16..24].copy_from_slice(&offset.to_be_bytes());
            req[24..28].copy_from_slice(&(piece.len() as u32).to_be_bytes());
            self.stream.write_all(&req)?;
            let mut reply = [0u8; 16];
            self.stream.read_exact(&mut reply)?;
            if be32(&reply) != NBD_SIMPLE_REPLY_MAGIC {
                return Err(protocol("bad reply magic"));
            }
            if be64(&reply[8..]) != self.handle {
                return Err(protocol("reply to another request"));
            }
            let err = be32(&reply[4..]);
            if err != 0 {
                return Err(std::io::Error::other(format!(
                    "NBD server error {err} (errno) on read"
                )));
            }
            self.stream.read_exact(piece)?;
            offset += piece.len() as u64;
        }
        Ok(())
    }
}

impl Drop for NbdConn {
    fn drop(&mut self) {
        let mut req = [0u8; 28];
        req[0..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        req[6..8].copy_from_slice(&NBD_CMD_DISC.to_be_bytes());
        let _ = self.stream.write_all(&req);
    }
}

/// A pool of NBD connections to one export; each reading thread borrows its own.
pub struct NbdPool {
    socket: PathBuf,
    export: String,
    size: u64,
    idle: Mutex<Vec<NbdConn>>,
}

impl NbdPool {
    /// Connects once (to learn the size and prove the export works).
    pub fn connect(socket: &Path, export: &str) -> std::io::Result<NbdPool> {
        let first = NbdConn::connect(socket, export)?;
        Ok(NbdPool {
            socket: socket.to_path_buf(),
            export: export.to_string(),
            size: first.size,
            idle: Mutex::new(vec![first]),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let taken = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut conn = match taken {
            Some(c) => c,
            None => NbdConn::connect(&self.socket, &self.export)?,
        };
        // A connection that failed mid-request is dropped, never reused.
        conn.read(offset, buf)?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// qemu-nbd server

/// A private folder for sockets and scratch files, removed when dropped.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Creates `<parent>/<prefix>-<random>` with mode 0700.
    pub fn create(parent: &Path, prefix: &str) -> Result<PrivateDir, ProviderError> {
        use std::os::unix::fs::DirBuilderExt;
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let dir = parent.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| ProviderError::io(format!("creating work folder {}", dir.display()), e))?;
        Ok(PrivateDir(dir))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `qemu-nbd` exporting one image read-only on a private unix socket; killed on drop
/// (and when vmvault dies: see `supervise`).
pub struct NbdServer {
    child: Supervised,
    socket: PathBuf,
    _dir: PrivateDir,
}

impl NbdServer {
    /// Starts qemu-nbd for `image` and waits until it accepts connections.
    pub fn start(
        image: &QemuImage,
        force_share: bool,
        cancel: &CancelToken,
    ) -> Result<NbdServer, ProviderError> {
        let path = image.shown();
        let exe = require_tool("qemu-nbd")?;
        let dir = PrivateDir::create(&std::env::temp_dir(), "vmvault-nbd")?;
        let socket = dir.path().join("disk.sock");
        let mut cmd = Command::new(exe);
        cmd.arg("--read-only")
            .arg("--persistent")
            .arg("--shared=0")
            .arg("--socket")
            .arg(&socket)
            .arg(image.arg(force_share));
        cmd.env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = Supervised::spawn(cmd, image.fds()).map_err(|e| {
            ProviderError::io(format!("starting qemu-nbd for {}", path.display()), e)
        })?;
        let stderr = drain(child.child_mut().stderr.take());
        let mut server = NbdServer {
            child,
            socket,
            _dir: dir,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let msg = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
                if is_lock_error(&msg) {
                    return Err(image_in_use(path));
                }
                return Err(ProviderError::new(
                    "ToolFailed",
                    "Could not export the disk image",
                    format!(
                        "qemu-nbd for {} exited ({status}): {}",
                        path.display(),
                        one_line(&msg)
                    ),
                ));
            }
            // A full handshake: qemu-nbd may listen before it has opened (and locked)
            // the image, and exits when that fails.
            if server.socket.exists() && NbdConn::connect(&server.socket, "").is_ok() {
                return Ok(server);
            }
            cancel.check()?;
            if start.elapsed() > QUICK {
                return Err(ProviderError::new(
                    "ToolTimedOut",
                    "Could not export the disk image",
                    format!(
                        "qemu-nbd for {} did not start listening within {} s",
                        path.display(),
                        QUICK.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The qemu-nbd process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

// ---------------------------------------------------------------------------------------
// A disk opened for reading

/// Where the bytes of an opened disk come from.
enum DataPath {
    /// A raw file, read with pread; the file also holds QEMU-compatible read locks.
    File(SourceFile),
    /// An NBD export (a private qemu-nbd, or a libvirt backup job's export).
    Nbd {
        pool: NbdPool,
        _server: Option<Box<NbdServer>>,
        /// Where the data clusters of a locked local image lie in its files.
        direct: Option<DirectMap>,
    },
}

/// A file of a disk, read directly, with its size when it was opened: the disk's capacity
/// may end past it (QEMU rounds a raw file's size up to whole sectors), but a file that
/// ends before it shrank while it was read.
struct SourceFile {
    file: File,
    len: u64,
}

impl SourceFile {
    fn new(file: File) -> std::io::Result<SourceFile> {
        let len = file.metadata()?.len();
        Ok(SourceFile { file, len })
    }

    /// pread that reads past the opened size as zeros and fails when the file now ends
    /// before it.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            match self.file.read_at(&mut buf[done..], at) {
                Ok(0) if at < self.len => return Err(self.shrank()),
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The error of a file that is shorter than when it was opened.
    fn shrank(&self) -> std::io::Error {
        let now = self
            .file
            .metadata()
            .map(|m| format!("{} bytes", m.len()))
            .unwrap_or_else(|_| "unknown".into());
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the image file shrank while it was read ({} bytes when opened, now {now}): \
                 something truncated it, ignoring QEMU's image locks; this backup cannot be a \
                 consistent copy",
                self.len
            ),
        )
    }
}

/// The map of a local image that no one writes, for reading its data clusters straight
/// from the layer files (at disk speed) instead of through qemu-nbd (which tops out at
/// several hundred MB/s). Ranges the map cannot place (compressed clusters, layers of
/// formats without plain host offsets) are still read through NBD; zeros are not read.
struct DirectMap {
    entries: Vec<MapEntry>,
    /// The open file of each layer whose clusters may be read directly.
    files: Vec<Option<SourceFile>>,
}

impl DirectMap {
    /// The map of an image file and its backing chain as `qemu-img` finds it (a libvirt
    /// domain's disk).
    fn of_file(
        path: &Path,
        format: &str,
        cancel: &CancelToken,
    ) -> Result<DirectMap, ProviderError> {
        let info = image_info(path, Some(format), false, cancel)?;
        let entries = image_map(
            &MapTarget::Image {
                image: QemuImage::file(path, format),
                force_share: false,
            },
            cancel,
        )?;
        // A layer that cannot be opened is read through NBD instead.
        let files = info
            .layers
            .iter()
            .map(|l| {
                l.direct
                    .then(|| File::open(&l.file).and_then(SourceFile::new).ok())
                    .flatten()
            })
            .collect();
        DirectMap::new(entries, files, path)
    }

    /// The map of a checked chain: its layers' own descriptors are read, never a name.
    fn of_chain(chain: &ImageChain, cancel: &CancelToken) -> Result<DirectMap, ProviderError> {
        let entries = image_map(
            &MapTarget::Image {
                image: chain.qemu_image(),
                force_share: false,
            },
            cancel,
        )?;
        let files = chain
            .layers
            .iter()
            .map(|l| {
                l.direct
                    .then(|| l.file.file.try_clone().and_then(SourceFile::new).ok())
                    .flatten()
            })
            .collect();
        DirectMap::new(entries, files, &chain.top().file.named)
    }

    /// The map, once it places no data past the end of a layer's file.
    fn new(
        entries: Vec<MapEntry>,
        files: Vec<Option<SourceFile>>,
        shown: &Path,
    ) -> Result<DirectMap, ProviderError> {
        let lens: Vec<Option<u64>> = files.iter().map(|f| f.as_ref().map(|f| f.len)).collect();
        check_map_within_files(&entries, &lens, shown)?;
        Ok(DirectMap { entries, files })
    }

    fn read(&self, pool: &NbdPool, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        let mut i = self.entries.partition_point(|e| e.end() <= pos);
        while pos < end {
            let out_at = (pos - offset) as usize;
            let Some(e) = self.entries.get(i).filter(|e| e.start <= pos) else {
                // Not in the map (it covers the whole disk; this is only a safety net).
                let stop = self.entries.get(i).map_or(end, |e| e.start.min(end));
                pool.read_at(pos, &mut buf[out_at..(stop - offset) as usize])?;
                pos = stop;
                continue;
            };
            let stop = e.end().min(end);
            let out = &mut buf[out_at..(stop - offset) as usize];
            let file = self.files.get(e.depth).and_then(Option::as_ref);
            match (e.zero, e.data, e.offset, e.compressed, file) {
                (true, ..) => out.fill(0),
                (false, true, Some(host), false, Some(f)) => {
                    f.read_at(host + (pos - e.start), out)?
                }
                _ => pool.read_at(pos, out)?,
            }
            pos = stop;
            i += 1;
        }
        Ok(())
    }
}

/// Changed-block tracking of an NBD export: the checkpoint the bitmap counts from.
#[derive(Debug, Clone)]
pub struct DirtyBitmap {
    /// The `cbt_token` of the snapshot the bitmap starts at.
    pub since_token: String,
    /// Name of the exported bitmap (libvirt: `backup-<disk>`).
    pub bitmap: String,
}

/// One disk of a snapshot, open for reading; shared by its readers (and threads).
pub struct OpenDisk {
    label: String,
    capacity: u64,
    data: DataPath,
    /// Whether `view_at` may map the raw file (see there).
    mappable: bool,
    map: MapTarget,
    dirty: Option<DirtyBitmap>,
    extents: OnceLock<Vec<Extent>>,
    /// Keeps the descriptors that `map` names open.
    _chain: Option<ImageChain>,
}

/// What a disk image is opened from.
enum ImageSource {
    /// A file QEMU opens by name, following its header (a libvirt domain's disk).
    File { path: PathBuf, format: String },
    /// A checked chain of the images source: files opened by vmvault, passed by descriptor.
    Chain(ImageChain),
}

impl OpenDisk {
    /// Opens an image file by name for reading (a libvirt domain's disk, whose files the
    /// domain's definition names). Raw files are read directly (under QEMU's read locks
    /// unless `force_share`), other formats through a private qemu-nbd. `label` names the
    /// disk in error messages.
    pub fn open_image(
        path: &Path,
        format: &str,
        capacity: u64,
        force_share: bool,
        label: &str,
        cancel: &CancelToken,
    ) -> Result<OpenDisk, ProviderError> {
        let source = ImageSource::File {
            path: path.to_path_buf(),
            format: format.to_string(),
        };
        Self::open_source(source, capacity, force_share, label, cancel)
    }

    /// Opens a checked chain of the images source for reading: QEMU's tools get its files
    /// by descriptor (see `chain`), and a qemu-nbd that holds any other file is refused.
    pub fn open_chain(
        chain: ImageChain,
        capacity: u64,
        force_share: bool,
        label: &str,
        cancel: &CancelToken,
    ) -> Result<OpenDisk, ProviderError> {
        Self::open_source(
            ImageSource::Chain(chain),
            capacity,
            force_share,
            label,
            cancel,
        )
    }

    fn open_source(
        source: ImageSource,
        capacity: u64,
        force_share: bool,
        label: &str,
        cancel: &CancelToken,
    ) -> Result<OpenDisk, ProviderError> {
        cancel.check()?;
        let (image, format) = match &source {
            ImageSource::File { path, format } => (QemuImage::file(path, format), format.as_str()),
            ImageSource::Chain(chain) => (chain.qemu_image(), chain.format()),
        };
        let path = image.shown().to_path_buf();
        let opening = |e| ProviderError::io(format!("opening {label} ({})", path.display()), e);
        let mut mappable = false;
        let data = if format == "raw" {
            let file = match &source {
                ImageSource::File { path, .. } => File::open(path),
                ImageSource::Chain(chain) => chain.top().file.file.try_clone(),
            }
            .map_err(opening)?;
            if !force_share {
                lock_for_read(&file, &path)?;
                mappable = on_local_file_system(&file);
            }
            DataPath::File(SourceFile::new(file).map_err(opening)?)
        } else {
            let server = NbdServer::start(&image, force_share, cancel)?;
            if let ImageSource::Chain(chain) = &source {
                chain.check_open_files(server.pid())?;
            }
            let pool = NbdPool::connect(server.socket(), "").map_err(|e| {
                ProviderError::io(
                    format!("connecting to the export of {label} ({})", path.display()),
                    e,
                )
            })?;
            // An image in use changes under us: its map would go stale.
            let direct = match (&source, force_share) {
                (_, true) => None,
                (ImageSource::File { path, format }, false) => {
                    Some(DirectMap::of_file(path, format, cancel)?)
                }
                (ImageSource::Chain(chain), false) => Some(DirectMap::of_chain(chain, cancel)?),
            };
            DataPath::Nbd {
                pool,
                _server: Some(Box::new(server)),
                direct,
            }
        };
        Ok(OpenDisk {
            label: label.to_string(),
            capacity,
            data,
            mappable,
            map: MapTarget::Image { image, force_share },
            dirty: None,
            extents: OnceLock::new(),
            _chain: match source {
                ImageSource::Chain(chain) => Some(chain),
                ImageSource::File { .. } => None,
            },
        })
    }

    /// Opens an NBD export on a unix socket (a libvirt pull-mode backup).
    pub fn open_nbd_export(
        socket: &Path,
        export: &str,
        dirty: Option<DirtyBitmap>,
        label: &str,
    ) -> Result<OpenDisk, ProviderError> {
        let pool = NbdPool::connect(socket, export).map_err(|e| {
            ProviderError::io(
                format!("connecting to the backup export {export:?} of {label}"),
                e,
            )
        })?;
        Ok(OpenDisk {
            label: label.to_string(),
            capacity: pool.size(),
            mappable: false,
            map: MapTarget::ImageOpts(nbd_image_opts(socket, export, None)),
            data: DataPath::Nbd {
                pool,
                _server: None,
                direct: None,
            },
            dirty,
            extents: OnceLock::new(),
            _chain: None,
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// A reader for the vault.
    pub fn reader(self: &Arc<Self>) -> Box<dyn DiskReader> {
        Box::new(OpenDiskReader(Arc::clone(self)))
    }

    fn allocated(&self) -> Result<Vec<Extent>, ProviderError> {
        if let Some(e) = self.extents.get() {
            return Ok(e.clone());
        }
        let mut extents = match &self.data {
            DataPath::Nbd {
                direct: Some(map), ..
            } => allocated_extents(&map.entries),
            _ => allocated_extents(&image_map(&self.map, &CancelToken::new())?),
        };
        clamp(&mut extents, self.capacity);
        Ok(self.extents.get_or_init(|| extents).clone())
    }

    fn changed(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        let (Some(dirty), MapTarget::ImageOpts(_)) = (&self.dirty, &self.map) else {
            return Ok(None);
        };
        if dirty.since_token != since {
            return Ok(None);
        }
        let DataPath::Nbd { pool, .. } = &self.data else {
            return Ok(None);
        };
        let opts = nbd_image_opts(&pool.socket, &pool.export, Some(&dirty.bitmap));
        let map = image_map(&MapTarget::ImageOpts(opts), &CancelToken::new())?;
        let mut extents = dirty_extents(&map);
        clamp(&mut extents, self.capacity);
        Ok(Some(extents))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.capacity) {
            return Err(ProviderError::new(
                "DiskReadError",
                "Could not read the disk",
                format!(
                    "{}: read of {} bytes at {offset} lies beyond the capacity {}",
                    self.label,
                    buf.len(),
                    self.capacity
                ),
            ));
        }
        let r = match &self.data {
            // Large reads of a raw file are copied from a mapping of its pages (where
            // `view_at` allows one): cheaper than pread, whose copy looks up the page cache
            // page by page (1 MiB: 0.12 ms instead of 0.50 ms, `benches/stages.rs`).
            DataPath::File(f) => {
                let mapped = (buf.len() >= MAP_READ_MIN)
                    .then(|| self.view_at(offset, buf.len()))
                    .flatten();
                match mapped {
                    Some(v) => {
                        buf.copy_from_slice(&v);
                        // Zeros where the file shrank under the mapping are not the disk's.
                        if v.intact() {
                            Ok(())
                        } else {
                            Err(f.shrank())
                        }
                    }
                    None => f.read_at(offset, buf),
                }
            }
            DataPath::Nbd {
                pool,
                direct: Some(map),
                ..
            } => map.read(pool, offset, buf),
            DataPath::Nbd {
                pool, direct: None, ..
            } => pool.read_at(offset, buf),
        };
        r.map_err(|e| ProviderError::io(format!("reading {} at offset {offset}", self.label), e))
    }
}

/// Reads of raw files at least this large are copied from a mapping (see `read_at`).
const MAP_READ_MIN: usize = 256 * 1024;

impl OpenDisk {
    /// A raw file's bytes mapped from the page cache (see `DiskReader::view_at`); None for
    /// other data paths, or when mapping fails (the caller reads instead).
    fn view_at(&self, offset: u64, len: usize) -> Option<super::DiskView<'_>> {
        let DataPath::File(f) = &self.data else {
            return None;
        };
        // An access to a mapping that the kernel cannot back raises SIGBUS, where `pread`
        // would fail one job with an error. A file that shrinks under its mapping is
        // handled (`view` maps zeros over the missing pages and clears `intact`, which
        // callers check), but a failing disk or a network file system would still kill the
        // process. So a raw file is mapped only under QEMU's read lock (not an image a
        // running QEMU writes, as in crash-consistent reads), and only on a local file
        // system (network and FUSE file systems fail reads more often than local disks).
        if !self.mappable {
            return None;
        }
        if offset.checked_add(len as u64)? > self.capacity {
            return None;
        }
        super::MappedBytes::map(&f.file, offset, len)
            .ok()
            .map(super::DiskView::Mapped)
    }
}

/// Whether `f` lives on a local disk file system (ext2/3/4, xfs, btrfs, tmpfs, f2fs, zfs,
/// bcachefs, or an overlay of them), where mapping it is as safe as reading it (see
/// `OpenDisk::view_at`).
fn on_local_file_system(f: &File) -> bool {
    const LOCAL: [u64; 8] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0x2FC1_2FC1, // zfs
        0xCA45_1A4E, // bcachefs
        0x794C_7630, // overlayfs (containers)
    ];
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs fills the struct for an open descriptor that `f` keeps open.
    let rc = unsafe { libc::fstatfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: fstatfs succeeded, so the struct is initialised.
    let t = unsafe { st.assume_init() }.f_type as u64;
    LOCAL.contains(&t)
}

fn clamp(extents: &mut Vec<Extent>, capacity: u64) {
    extents.retain(|e| e.offset < capacity);
    if let Some(last) = extents.last_mut() {
        if last.end() > capacity {
            last.len = capacity - last.offset;
        }
    }
}

struct OpenDiskReader(Arc<OpenDisk>);

impl DiskReader for OpenDiskReader {
    fn capacity(&self) -> u64 {
        self.0.capacity
    }
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        self.0.allocated()
    }
    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        self.0.changed(since)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        self.0.read_at(offset, buf)
    }
    fn view_at(&self, offset: u64, len: usize) -> Option<super::DiskView<'_>> {
        self.0.view_at(offset, len)
    }
}

// ---------------------------------------------------------------------------------------
// Restore: raw → qcow2 | vhd | vmdk

/// Why [`convert_raw`] failed.
#[derive(Debug)]
pub enum ConvertError {
    /// The file system of the folder failed: the output could not be created or written
    /// (full, read-only, …). qemu-img's own messages about such errors are recognised by
    /// the OS error they name.
    Io(crate::fsx::FsxError),
    /// qemu-img is missing, failed for another reason, timed out, or was cancelled.
    Tool(ProviderError),
}

impl From<crate::fsx::FsxError> for ConvertError {
    fn from(e: crate::fsx::FsxError) -> Self {
        ConvertError::Io(e)
    }
}

/// Converts the raw image `raw` to `format` as the new file `out` (mode 0600, flushed to
/// disk), both in the folder `dir`, which must be one no one else can write. qemu-img
/// reaches both through `/proc/self/fd/N/…`, N being its inherited descriptor of `dir`:
/// a folder renamed or a symlink planted in the path meanwhile cannot redirect it. The
/// result, converted back to raw, equals `raw` byte for byte, up to a size that is not a
/// multiple of 512: qemu-img reads a raw image in whole 512-byte sectors, so such an image
/// comes back with zeros up to the next multiple (vhd images are written with `force_size`
/// so that their capacity is not rounded to a CHS geometry). Returns the output, open.
pub fn convert_raw(
    dir: &crate::fsx::Dir,
    raw: &str,
    format: DiskFormat,
    out: &str,
    cancel: &CancelToken,
) -> Result<File, ConvertError> {
    let size = dir
        .open_read(raw)?
        .metadata()
        .map_err(|e| crate::fsx::FsxError::Io {
            path: dir.path_of(raw),
            source: e,
        })?
        .len();
    // A restored disk is the VM's data: owner-only like a raw restore. qemu-img creates its
    // output with the umask's mode (often 0644) but keeps the mode of a file that exists,
    // so the file is made first; the mode is set again afterwards in case a driver
    // recreated it.
    drop(dir.create_new(out, 0o600)?);
    let mut a = args![
        "convert",
        "-f",
        "raw",
        "-O",
        format.qemu_name(),
        "-t",
        "writeback"
    ];
    match format {
        DiskFormat::Vhd => a.extend(args!["-o", "subformat=dynamic,force_size=on"]),
        DiskFormat::Qcow2 | DiskFormat::Vmdk | DiskFormat::Raw => {}
    }
    a.push(dir.proc_path().join(raw).into());
    a.push(dir.proc_path().join(out).into());
    // A conversion takes as long as the disk is big; allow 10 MB/s plus a minute.
    let timeout = Duration::from_secs(60 + size / 10_000_000);
    let result = run_tool_with_fds("qemu-img", &a, &[dir.fd().as_raw_fd()], timeout, cancel);
    if let Err(e) = result {
        let _ = dir.remove_file(out);
        return Err(match os_error_named(e.stderr()) {
            Some(errno) => ConvertError::Io(crate::fsx::FsxError::Io {
                path: dir.path_of(out),
                source: std::io::Error::from_raw_os_error(errno),
            }),
            None => ConvertError::Tool(e.into_provider(&format!(
                "converting {} to {format}",
                dir.path_of(raw).display()
            ))),
        });
    }
    let file = dir.open_read(out)?;
    let durable = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.sync_all()
    };
    durable().map_err(|e| crate::fsx::FsxError::Io {
        path: dir.path_of(out),
        source: e,
    })?;
    Ok(file)
}

/// The OS error a tool's message names, among those that say the file system it wrote to
/// failed (qemu-img prints `strerror` texts; run_tool sets LC_ALL=C).
fn os_error_named(stderr: &str) -> Option<i32> {
    [
        libc::ENOSPC,
        libc::EDQUOT,
        libc::EROFS,
        libc::EFBIG,
        libc::EIO,
        libc::EACCES,
        libc::EPERM,
    ]
    .into_iter()
    .find(|&errno| {
        let text = std::io::Error::from_raw_os_error(errno).to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        !text.is_empty() && stderr.contains(text)
    })
}

/// Formats a byte count for people (`10 GiB`, `512 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || (v - v.round()).abs() < 0.05 {
        format!("{} {}", v.round() as u64, UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for tests that need real tools.
    use super::*;

    thread_local! {
        /// Tools that `find_tool` pretends are missing on this thread.
        pub static HIDDEN_TOOLS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Runs `f` as if `tool` were not installed (this thread only).
    pub fn without_tool<T>(tool: &str, f: impl FnOnce() -> T) -> T {
        HIDDEN_TOOLS.with(|h| h.borrow_mut().push(tool.to_string()));
        let out = f();
        HIDDEN_TOOLS.with(|h| h.borrow_mut().retain(|t| t != tool));
        out
    }

    /// True when `tool` is on PATH. Otherwise prints why the calling test is skipped and
    /// returns false — or panics when VMVAULT_REQUIRE_TOOLS=1 (CI must not skip).
    pub fn need_tool(tool: &str) -> bool {
        if find_tool(tool).is_some() {
            return true;
        }
        skip(&format!("{tool} is not installed ({})", install_hint(tool)))
    }

    pub use crate::testing::skip;

    /// Runs a command that must succeed; returns stdout.
    pub fn sh(tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `qemu-img create -f qcow2 -b BACKING -F FORMAT PATH [SIZE]`: a qcow2 overlay. With a
    /// size the backing file is not opened (`-u`: it may be missing or refused).
    pub fn overlay(path: &Path, backing: &str, backing_format: &str, size: Option<&str>) {
        let mut a = vec![
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            backing,
            "-F",
            backing_format,
        ];
        let path = path.to_str().unwrap();
        a.push(path);
        if let Some(size) = size {
            a.insert(1, "-u");
            a.push(size);
        }
        sh("qemu-img", &a);
    }

    /// True once an NBD server on `socket` completes a handshake (qemu-nbd listens before
    /// it has opened and locked its image).
    pub fn nbd_ready(socket: &Path) -> bool {
        NbdConn::connect(socket, "").is_ok()
    }

    /// Reads every byte of `reader` (allocated extents only; holes as zeros).
    pub fn read_all(reader: &dyn DiskReader) -> Vec<u8> {
        let mut out = vec![0u8; reader.capacity() as usize];
        for e in reader.allocated_extents().unwrap() {
            reader
                .read_at(e.offset, &mut out[e.offset as usize..e.end() as usize])
                .unwrap();
        }
        out
    }

    /// `qemu-img convert -O raw` of an image, as bytes.
    pub fn raw_of(path: &Path, format: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.raw");
        sh(
            "qemu-img",
            &[
                "convert",
                "-f",
                format,
                "-O",
                "raw",
                path.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
        std::fs::read(out).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use std::process::Child;

    #[test]
    fn merge_joins_touching_and_overlapping_ranges() {
        let m = merge(vec![
            Extent::new(10, 5),
            Extent::new(0, 10),
            Extent::new(30, 0),
            Extent::new(40, 10),
            Extent::new(45, 20),
        ]);
        assert_eq!(m, vec![Extent::new(0, 15), Extent::new(40, 25)]);
    }

    #[test]
    fn map_entries_select_allocated_and_dirty_ranges() {
        let json = br#"[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0},
            { "start": 65536, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false},
            { "start": 131072, "length": 65536, "depth": 1, "present": true, "zero": false, "data": true, "offset": 9}]"#;
        let map: Vec<MapEntry> = serde_json::from_slice(json).unwrap();
        assert_eq!(
            allocated_extents(&map),
            vec![Extent::new(0, 65536), Extent::new(131072, 65536)]
        );
        assert_eq!(dirty_extents(&map), vec![Extent::new(65536, 65536)]);
    }

    #[test]
    fn image_opts_escape_commas() {
        let o = nbd_image_opts(Path::new("/tmp/a,b/s.sock"), "vda", Some("backup-vda"));
        assert_eq!(
            o,
            "driver=nbd,server.type=unix,server.path=/tmp/a,,b/s.sock,export=vda,\
             x-dirty-bitmap=qemu:dirty-bitmap:backup-vda"
        );
    }

    #[test]
    fn disk_format_names() {
        assert_eq!(DiskFormat::parse("VHD"), Some(DiskFormat::Vhd));
        assert_eq!(DiskFormat::parse("vpc").map(|f| f.qemu_name()), Some("vpc"));
        assert_eq!(DiskFormat::parse("vdi"), None);
        assert_eq!(human_bytes(10 << 30), "10 GiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn missing_tool_is_a_clear_error() {
        let e = run_tool(
            "qemu-img-does-not-exist",
            &["info"],
            QUICK,
            &CancelToken::new(),
        )
        .unwrap_err()
        .into_provider("probing");
        let d = e.details();
        assert_eq!(d.code, TOOL_NOT_FOUND);
        assert!(
            d.message.contains("qemu-img-does-not-exist not found"),
            "{}",
            d.message
        );
        let e = tool_not_found("qemu-img").details();
        assert!(e
            .message
            .contains("install qemu-utils (Debian/Ubuntu) or qemu-img (Fedora"));
    }

    #[test]
    fn run_tool_times_out_and_cancels_and_reports_stderr() {
        if !need_tool("sh") {
            return;
        }
        let t0 = Instant::now();
        let e = run_tool(
            "sh",
            &["-c", "sleep 30"],
            Duration::from_millis(200),
            &CancelToken::new(),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::TimedOut { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(20));
        let cancel = CancelToken::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c2.cancel();
        });
        let e = run_tool("sh", &["-c", "sleep 30"], QUICK, &cancel).unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, RunError::Cancelled), "{e:?}");
        let e = run_tool(
            "sh",
            &["-c", "echo boom >&2; exit 3"],
            QUICK,
            &CancelToken::new(),
        )
        .unwrap_err()
        .into_provider("testing");
        assert!(
            e.details().message.contains("boom"),
            "{}",
            e.details().message
        );
    }

    #[test]
    fn qcow2_reads_match_qemu_img_convert_through_nbd() {
        if !need_tool("qemu-img") || !need_tool("qemu-nbd") || !need_tool("qemu-io") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.qcow2");
        let ps = p.to_str().unwrap();
        sh("qemu-img", &["create", "-q", "-f", "qcow2", ps, "40M"]);
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x5a 0 3M",
                "-c",
                "write -P 0x33 20M 100k",
                ps,
            ],
        );
        let info = image_info(&p, Some("qcow2"), false, &CancelToken::new()).unwrap();
        assert_eq!(info.virtual_size, 40 << 20);
        let disk = Arc::new(
            OpenDisk::open_image(
                &p,
                "qcow2",
                info.virtual_size,
                false,
                "test disk",
                &CancelToken::new(),
            )
            .unwrap(),
        );
        let r = disk.reader();
        let ext = r.allocated_extents().unwrap();
        assert!(ext.iter().map(|e| e.len).sum::<u64>() < 5 << 20, "{ext:?}");
        // Several threads at once, each on its own connection.
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| assert_eq!(read_all(r.as_ref()), raw_of(&p, "qcow2")));
            }
        });
        assert_eq!(r.changed_extents("anything").unwrap(), None);
        let mut past = vec![0u8; 10];
        assert!(r.read_at((40 << 20) - 5, &mut past).is_err());
    }

    #[test]
    fn direct_reads_of_qcow2_chains_with_compressed_clusters_match_qemu() {
        if !need_tool("qemu-img") || !need_tool("qemu-nbd") || !need_tool("qemu-io") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.raw");
        let mut bytes = vec![0u8; 6 << 20];
        for (i, b) in bytes.iter_mut().enumerate().take(3 << 20) {
            *b = (i % 13) as u8;
        }
        std::fs::write(&src, &bytes).unwrap();
        // A compressed base (its clusters are read through NBD) under a qcow2 overlay
        // (read straight from the file), with a zero cluster.
        let base = dir.path().join("base.qcow2");
        sh(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-f",
                "raw",
                "-O",
                "qcow2",
                src.to_str().unwrap(),
                base.to_str().unwrap(),
            ],
        );
        let top = dir.path().join("top.qcow2");
        let ts = top.to_str().unwrap();
        overlay(&top, base.to_str().unwrap(), "qcow2", None);
        sh(
            "qemu-io",
            &[
                "-f",
                "qcow2",
                "-c",
                "write -P 0x77 100k 300k",
                "-c",
                "write -z 2M 64k",
                "-c",
                "write -P 0x78 5M 8k",
                ts,
            ],
        );
        let map = image_map(
            &MapTarget::Image {
                image: QemuImage::file(&top, "qcow2"),
                force_share: false,
            },
            &CancelToken::new(),
        )
        .unwrap();
        assert!(
            map.iter().any(|e| e.compressed),
            "the base has compressed clusters: {map:?}"
        );
        assert!(
            map.iter()
                .any(|e| e.data && !e.compressed && e.offset.is_some()),
            "{map:?}"
        );
        let disk = Arc::new(
            OpenDisk::open_image(&top, "qcow2", 6 << 20, false, "t", &CancelToken::new()).unwrap(),
        );
        assert!(matches!(
            disk.data,
            DataPath::Nbd {
                direct: Some(_),
                ..
            }
        ));
        let r = disk.reader();
        assert_eq!(read_all(r.as_ref()), raw_of(&top, "qcow2"));
        // Reads that straddle entries, at odd offsets.
        let expected = raw_of(&top, "qcow2");
        for (off, len) in [
            (100_000u64, 400_000usize),
            (2_000_000, 200_000),
            (5_242_000, 10_000),
            (0, 6 << 20),
        ] {
            let mut buf = vec![0xffu8; len];
            r.read_at(off, &mut buf).unwrap();
            assert_eq!(
                buf,
                expected[off as usize..off as usize + len],
                "at {off}+{len}"
            );
        }
    }

    #[test]
    fn raw_reads_from_mappings_equal_the_file_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.raw");
        let cap: u64 = (3 << 20) + 100; // not a whole number of pages
        let bytes: Vec<u8> = (0..cap).map(|i| (i * 7 + i / 4099) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        for force_share in [false, true] {
            let disk = OpenDisk::open_image(&p, "raw", cap, force_share, "d", &CancelToken::new())
                .unwrap();
            // This folder is on a local file system: a locked file is mapped.
            assert_eq!(disk.view_at(0, 4096).is_some(), !force_share);
            // Below and above MAP_READ_MIN, page-aligned or not, up to the last byte.
            for (off, len) in [
                (0, 4096),
                (1, MAP_READ_MIN),
                (4097, 1 << 20),
                (1 << 20, 2 << 20),
                (cap - MAP_READ_MIN as u64 - 3, MAP_READ_MIN + 3),
            ] {
                let mut buf = vec![0xEEu8; len];
                disk.read_at(off, &mut buf).unwrap();
                assert!(
                    buf[..] == bytes[off as usize..off as usize + len],
                    "force_share {force_share}, at {off}+{len}"
                );
            }
        }
    }

    /// A raw image truncated while a backup reads it (by a process that ignores QEMU's
    /// locks): reads through the mapping and through pread fail with a clear error. Without
    /// the SIGBUS handler, touching the view kills the process.
    #[test]
    fn a_raw_image_truncated_while_it_is_read_fails_the_read_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.raw");
        std::fs::write(&p, vec![0xABu8; 4 << 20]).unwrap();
        let disk = Arc::new(
            OpenDisk::open_image(&p, "raw", 4 << 20, false, "disk a.raw", &CancelToken::new())
                .unwrap(),
        );
        let r = disk.reader();
        let view = r
            .view_at(1 << 20, 2 << 20)
            .expect("a locked raw file is mapped");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        // Map, truncate, read: what the backup's hashing of a view does.
        assert!(view.iter().all(|&b| b == 0), "past the new end: zeros");
        assert!(!view.intact(), "the view knows it was cut");
        drop(view);
        for len in [4096, MAP_READ_MIN, 2 << 20] {
            let mut buf = vec![0u8; len];
            let e = r.read_at(1 << 20, &mut buf).unwrap_err().details();
            assert!(
                e.message.contains("disk a.raw") && e.message.contains("shrank while it was read"),
                "{len}: {}",
                e.message
            );
        }
        // Before the cut, the bytes are still there.
        let mut buf = vec![0u8; 4096];
        r.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0xAB));
    }

    #[test]
    fn raw_lock_keeps_writers_out_and_detects_them() {
        if !need_tool("qemu-img") || !need_tool("qemu-io") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.raw");
        let ps = p.to_str().unwrap();
        sh("qemu-img", &["create", "-q", "-f", "raw", ps, "4M"]);
        let disk =
            OpenDisk::open_image(&p, "raw", 4 << 20, false, "d", &CancelToken::new()).unwrap();
        assert!(
            disk.view_at(0, 4096).is_some(),
            "a locked raw file is mapped"
        );
        // A writer (what a starting VM does) is refused while we read.
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write 0 4k", ps])
            .output()
            .unwrap();
        assert!(
            is_lock_error(&String::from_utf8_lossy(&out.stderr)),
            "writer was not refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(disk);
        // A QEMU that holds the image for writing makes our open fail as "in use".
        let _holder = hold_for_write(&p, "raw");
        let e = OpenDisk::open_image(&p, "raw", 4 << 20, false, "d", &CancelToken::new())
            .err()
            .unwrap();
        assert!(is_image_in_use(&e), "{e:?}");
        // … unless crash-consistent reads are allowed; then it is read, never mapped (a
        // writer may shrink it under the mapping).
        let shared =
            OpenDisk::open_image(&p, "raw", 4 << 20, true, "d", &CancelToken::new()).unwrap();
        assert!(shared.view_at(0, 4096).is_none());
    }

    /// A qemu-nbd that holds `path` open for writing and does not share writes, like a
    /// running VM.
    pub(crate) struct Holder(Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    pub(crate) fn hold_for_write(path: &Path, format: &str) -> Holder {
        let sock = path.with_extension("holder.sock");
        let child = Command::new("qemu-nbd")
            .args([
                "--persistent",
                "--shared=0",
                &format!("--format={format}"),
                "--socket",
            ])
            .arg(&sock)
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !nbd_ready(&sock) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Holder(child)
    }

    #[test]
    fn convert_raw_round_trips_every_format() {
        if !need_tool("qemu-img") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dir = crate::fsx::Dir::open_user(t.path()).unwrap();
        let mut bytes = vec![0u8; 5 << 20];
        for (i, b) in bytes.iter_mut().enumerate().skip(1 << 20).take(300_000) {
            *b = (i * 7 % 251) as u8;
        }
        std::fs::write(t.path().join("disk.raw"), &bytes).unwrap();
        for &f in DiskFormat::ALL {
            let name = format!("out.{}", f.extension());
            convert_raw(&dir, "disk.raw", f, &name, &CancelToken::new()).unwrap();
            let out = t.path().join(&name);
            let mode =
                std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&out).unwrap()) & 0o777;
            assert_eq!(mode, 0o600, "{f}");
            let info = image_info(&out, None, false, &CancelToken::new()).unwrap();
            assert_eq!(info.format, f.qemu_name(), "{f}");
            assert_eq!(raw_of(&out, f.qemu_name()), bytes, "{f} round trip differs");
        }
        // A name taken is never written through.
        let e = convert_raw(
            &dir,
            "disk.raw",
            DiskFormat::Qcow2,
            "out.qcow2",
            &CancelToken::new(),
        )
        .unwrap_err();
        assert!(
            matches!(e, ConvertError::Io(ref e) if e.is_exists()),
            "{e:?}"
        );
    }

    #[test]
    fn convert_raw_reaches_its_folder_by_handle_not_by_path() {
        if !need_tool("qemu-img") {
            return;
        }
        // The work folder is moved away and another put in its place, with symlinks at the
        // names the conversion uses: qemu-img must still read and write the first folder.
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let dir = crate::fsx::Dir::open_user(&work).unwrap();
        // 1,000,001 bytes: qemu-img reads whole sectors, so the result holds 1,000,448.
        let bytes: Vec<u8> = (0..1_000_001u32).map(|i| (i % 253) as u8 | 1).collect();
        std::fs::write(work.join("disk.raw"), &bytes).unwrap();
        std::fs::rename(&work, t.path().join("moved")).unwrap();
        std::fs::create_dir(&work).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, work.join("disk.raw")).unwrap();
        std::os::unix::fs::symlink(&victim, work.join("out.qcow2")).unwrap();
        convert_raw(
            &dir,
            "disk.raw",
            DiskFormat::Qcow2,
            "out.qcow2",
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let back = raw_of(&t.path().join("moved/out.qcow2"), "qcow2");
        assert_eq!(back.len(), 1_000_448);
        assert!(back[..bytes.len()] == bytes[..] && back[bytes.len()..].iter().all(|b| *b == 0));
    }
}
