//! Shared test support: a fresh data folder and configuration per test, and helpers to run
//! the real `vmvault` binary.
#![allow(dead_code)]

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
}

/// Simulator settings that make tests instant.
pub const FAST_SIM: &str = "kind = \"simulated\", discovery_latency_ms = 0, registration_latency_ms = 0, snapshot_latency_ms = 0";

impl Env {
    /// Two vaults on the default simulated subscription: `test-we` (westeurope, the default)
    /// and `test-eus` (eastus). `extra_source` adds keys to both sources.
    pub fn with_source(extra_source: &str) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let config = dir.path().join("config.toml");
        let extra = if extra_source.is_empty() {
            String::new()
        } else {
            format!(", {extra_source}")
        };
        let text = format!(
            "[engine]\nmax_concurrent_jobs = 2\n\n\
             [[vault]]\nname = \"test-we\"\nregion = \"westeurope\"\nsource = {{ {FAST_SIM}{extra} }}\n\n\
             [[vault]]\nname = \"test-eus\"\nregion = \"eastus\"\nsource = {{ {FAST_SIM}{extra} }}\n"
        );
        std::fs::write(&config, text).expect("write config");
        Env { dir, config, data }
    }

    pub fn new() -> Env {
        Env::with_source("")
    }

    /// A configuration of the test's own: `text` gets the test's folder (for paths).
    pub fn with_config(text: impl FnOnce(&Path) -> String) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text(dir.path())).expect("write config");
        Env { dir, config, data }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn vault_dir(&self, name: &str) -> PathBuf {
        self.data.join("vaults").join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("vmvault").expect("binary");
        c.env_remove("VMVAULT_CONFIG")
            .env_remove("VMVAULT_VAULT")
            .env_remove("VMVAULT_DATA_DIR");
        c.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data);
        c.timeout(std::time::Duration::from_secs(300));
        c
    }

    /// A std command (for processes the test kills or runs in the background).
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmvault"));
        c.env_remove("VMVAULT_CONFIG")
            .env_remove("VMVAULT_VAULT")
            .env_remove("VMVAULT_DATA_DIR");
        c.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run vmvault")
    }

    /// Runs and asserts exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "vmvault {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs with `--json` appended, asserts success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("vmvault {a:?}: not JSON ({e}):\n{s}"))
    }

    /// Runs and asserts the exit code; returns (stdout, stderr).
    pub fn fails_with(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "vmvault {args:?}: expected exit {code}\nstdout:\n{o}\nstderr:\n{e}"
        );
        (o, e)
    }

    /// discover + register + protect `vms` with DefaultPolicy.
    pub fn protect(&self, vms: &[&str]) {
        self.ok(&["discover"]);
        let mut reg = vec!["register"];
        reg.extend_from_slice(vms);
        self.ok(&reg);
        let mut prot = vec!["protect"];
        prot.extend_from_slice(vms);
        prot.extend_from_slice(&["--policy", "DefaultPolicy"]);
        self.ok(&prot);
    }

    /// Backs up `vm` and returns the new point id.
    pub fn backup(&self, vm: &str) -> String {
        let job = self.json(&["backup", vm]);
        assert_eq!(job["status"], "Completed", "{job:#}");
        job["details"]["recovery_point"]
            .as_str()
            .expect("point id")
            .to_string()
    }

    pub fn point_time(&self, vm: &str, point: &str) -> String {
        let points = self.json(&["points", vm]);
        points
            .as_array()
            .expect("points array")
            .iter()
            .find(|p| p["id"] == point)
            .unwrap_or_else(|| panic!("point {point} not listed: {points:#}"))["time"]
            .as_str()
            .expect("time")
            .to_string()
    }

    /// Restores `point` of `vm` into a new folder and checks every disk equals what the
    /// simulator says the disk held at the point's time.
    pub fn assert_restore_matches_source(&self, vm: &str, point: &str, tag: &str) {
        let to = self.path(&format!("restore-{tag}"));
        self.ok(&[
            "restore",
            vm,
            "--point",
            point,
            "--to",
            to.to_str().expect("utf8"),
        ]);
        let time = self.point_time(vm, point);
        let name = vm.rsplit('/').next().expect("name");
        let item = self
            .json(&["items"])
            .as_array()
            .expect("items")
            .iter()
            .find(|i| {
                i["name"] == name
                    && (vm.contains('/') && i["cloud_service"] == vm.split('/').next().expect("cs")
                        || !vm.contains('/'))
            })
            .cloned()
            .expect("item");
        for d in item["disks"].as_array().expect("disks") {
            let n = d["index"].as_u64().expect("index");
            let restored = to.join(format!("{name}-disk{n}.raw"));
            let export = self.path(&format!("export-{tag}-{n}.raw"));
            self.ok(&[
                "sim",
                "export-disk",
                vm,
                "--disk",
                &n.to_string(),
                "--at",
                &time,
                "--to",
                export.to_str().expect("utf8"),
            ]);
            assert_files_equal(&restored, &export);
        }
    }
}

/// Data extents of a sparse file (SEEK_DATA / SEEK_HOLE); everything else reads as zeros.
pub fn data_extents(f: &std::fs::File, len: u64) -> Vec<(u64, u64)> {
    use std::os::unix::io::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut off: i64 = 0;
    while (off as u64) < len {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            break; // no more data (ENXIO)
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        out.push((data as u64, end as u64));
        off = end;
    }
    out
}

/// Compares two (possibly huge, sparse) files byte for byte, reading only where either
/// holds data.
pub fn assert_files_equal(a: &Path, b: &Path) {
    use std::os::unix::fs::FileExt;
    let fa = std::fs::File::open(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let fb = std::fs::File::open(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "sizes differ: {} vs {}", a.display(), b.display());
    let mut ranges = data_extents(&fa, la);
    ranges.extend(data_extents(&fb, lb));
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    for (s, e) in merged {
        let mut off = s;
        while off < e {
            let n = ((e - off) as usize).min(ba.len());
            fa.read_exact_at(&mut ba[..n], off).expect("read a");
            fb.read_exact_at(&mut bb[..n], off).expect("read b");
            if ba[..n] != bb[..n] {
                let i = ba[..n]
                    .iter()
                    .zip(&bb[..n])
                    .position(|(x, y)| x != y)
                    .unwrap_or(0);
                panic!(
                    "{} and {} differ at byte {}",
                    a.display(),
                    b.display(),
                    off + i as u64
                );
            }
            off += n as u64;
        }
    }
}

/// Whether a test that needs an external tool should run: when the tool is missing it
/// prints why and returns false, unless VMVAULT_REQUIRE_TOOLS=1 (CI), where it panics.
pub fn require_tool(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("{tool} is required (VMVAULT_REQUIRE_TOOLS=1) but not installed");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Runs a program, asserts it succeeded, returns its stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path as &str (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Converts a disk image to raw with qemu-img (`-U`: also while a QEMU holds it).
pub fn to_raw(image: &Path, format: &str, out: &Path) {
    sh(
        "qemu-img",
        &["convert", "-U", "-f", format, "-O", "raw", s(image), s(out)],
    );
}

/// Writes `mib` MiB of deterministic pseudo-random (incompressible) data from `seed` at
/// `offset` of `file` (which may be sparse around it).
pub fn write_random(file: &Path, offset: u64, mib: usize, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)
        .expect("open");
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..mib {
        for c in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all_at(&block, offset + ((i as u64) << 20))
            .expect("write");
    }
    f.sync_all().expect("sync");
}

/// The item named `name` (or `cloud_service/name`) in an `items --json` listing.
pub fn item<'a>(items: &'a Value, name: &str) -> &'a Value {
    let (cs, n) = match name.split_once('/') {
        Some((c, n)) => (Some(c), n),
        None => (None, name),
    };
    items
        .as_array()
        .expect("items array")
        .iter()
        .find(|i| i["name"] == n && cs.is_none_or(|c| i["cloud_service"] == c))
        .unwrap_or_else(|| panic!("{name} not in {items:#}"))
}

/// A PATH holding only symlinks to the given tools (plus what a shell needs), to run
/// vmvault on a machine that lacks the others.
pub fn path_with_only(dir: &Path, tools: &[&str]) -> std::ffi::OsString {
    std::fs::create_dir_all(dir).expect("mkdir");
    for t in tools {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .expect("sh");
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        if !path.is_empty() {
            let _ = std::os::unix::fs::symlink(path, dir.join(t));
        }
    }
    dir.as_os_str().to_owned()
}

/// Every file under `dir` (not folders), sorted; a folder that cannot be read counts as empty.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A tmpfs mounted on a new folder, unmounted when dropped; None (after saying why) where
/// the test cannot mount one.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(env: &Env, name: &str, options: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("mounting a tmpfs needs root (VMVAULT_REQUIRE_TOOLS=1)");
            }
            eprintln!("skipping: mounting a tmpfs needs root");
            return None;
        }
        let dir = env.path(name);
        std::fs::create_dir(&dir).expect("mkdir");
        sh("mount", &["-t", "tmpfs", "-o", options, "tmpfs", s(&dir)]);
        Some(Tmpfs(dir))
    }
}

impl Tmpfs {
    /// Changes the mount's options (e.g. `size=200m` to make room).
    pub fn remount(&self, options: &str) {
        sh("mount", &["-o", &format!("remount,{options}"), s(&self.0)]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
