//! The `libvirt` source through the real CLI (issue 5).
//!
//! - libvirt's test driver (`test:///…/node.xml`, written here) with domains on real qcow2
//!   files: discovery fields, registration findings, backup and restore of shut-off
//!   domains.
//! - `qemu:///system` with real domains under QEMU (software emulation): consistent
//!   backups of a running domain (file-system consistent through the guest agent of the
//!   guest kit, crash-consistent without one), incremental backups through changed-block
//!   tracking, restores equal to what the disk held, and cleanup after a cancel and after a
//!   failure (no backup job left, guest not frozen, no work files).
//! - A missing `virsh` or `qemu-img` is a clear error at discovery.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn tools() -> bool {
    require_tool("virsh")
        && require_tool("qemu-img")
        && require_tool("qemu-nbd")
        && require_tool("qemu-io")
}

/// A vault `kvm` (region lab-1, 64 KiB chunks) on the libvirt host `uri`.
fn env_on(uri: &str, scratch: Option<&Path>) -> Env {
    env_limited(uri, scratch, 0)
}

/// Like [`env_on`], with the vault's read limit (MiB/s, 0: none).
fn env_limited(uri: &str, scratch: Option<&Path>, read_limit_mib_s: u64) -> Env {
    let scratch = scratch
        .map(|p| format!(", scratch_dir = \"{}\"", p.display()))
        .unwrap_or_default();
    Env::with_config(|_| {
        format!(
            "[engine]\nmax_concurrent_jobs = 2\n\n\
             [[vault]]\nname = \"kvm\"\nregion = \"lab-1\"\nchunk_size_kib = 64\n\
             read_limit_mib_s = {read_limit_mib_s}\n\
             source = {{ kind = \"libvirt\", uri = \"{uri}\", region = \"lab-1\"{scratch} }}\n"
        )
    })
}

// ---- libvirt's test driver ------------------------------------------------------------

include!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/libvirt_node.rs"
));

/// The shared test-driver node (web01, win01) with a base image of random data, and run01
/// ("running", Linux by its libosinfo metadata).
fn test_node(dir: &Path) -> PathBuf {
    libvirt_test_node(
        dir,
        |base| {
            let raw = dir.join("base.raw");
            sh("qemu-img", &["create", "-q", "-f", "raw", s(&raw), "16M"]);
            write_random(&raw, 0, 2, 7);
            sh(
                "qemu-img",
                &["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(base)],
            );
            std::fs::remove_file(&raw).expect("rm");
        },
        r#"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>run01</name><uuid>33333333-2222-3333-4444-555555555555</uuid>
    <memory unit='MiB'>512</memory><vcpu>1</vcpu>
    <metadata><libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"><libosinfo:os id="http://debian.org/debian/12"/></libosinfo:libosinfo></metadata>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{db}'/><target dev='vda' bus='virtio'/></disk>
    </devices>
    <test:runstate>1</test:runstate>
  </domain>"#,
    )
}

#[test]
fn test_driver_discovery_registration_and_backups_of_a_shut_off_domain() {
    if !tools() {
        return;
    }
    let images = tempfile::tempdir().expect("tmp");
    let node = test_node(images.path());
    let uri = format!("test://{}", node.display());
    let env = env_on(&uri, None);

    let d = env.json(&["discover"]);
    assert_eq!(d["job"]["status"], "Completed", "{d:#}");
    assert_eq!(d["found"], 3, "{d:#}");
    let items = env.json(&["items"]);
    let web = item(&items, "sales/web01");
    assert_eq!(web["id"], "libvirt:11111111-2222-3333-4444-555555555555");
    assert_eq!(web["region"], "lab-1");
    assert_eq!(web["power_state"], "Stopped");
    assert_eq!(web["os"], "Unknown", "no OS metadata");
    assert_eq!(web["size"], "2 vCPU, 2 GiB");
    let disks: Vec<(String, u64)> = web["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().expect("name").to_string(),
                d["capacity"].as_u64().expect("cap"),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [
            ("vda".to_string(), 16u64 << 20),
            ("vdb".to_string(), 8 << 20)
        ],
        "the cdrom is not a disk to back up"
    );
    let host = sh("virsh", &["-c", &uri, "hostname"]).trim().to_string();
    let win = item(&items, "win01");
    assert_eq!(
        (win["os"].as_str(), win["size"].as_str()),
        (Some("Windows"), Some("4 vCPU, 4 GiB"))
    );
    assert_eq!(win["cloud_service"], host.as_str(), "no tag: the host name");
    let run = item(&items, "run01");
    assert_eq!(
        (run["os"].as_str(), run["power_state"].as_str()),
        (Some("Linux"), Some("Running"))
    );

    // Registration says what it found.
    let reg = env.json(&["register", "sales/web01"]);
    assert_eq!(reg["status"], "CompletedWithWarnings", "{reg:#}");
    let findings = reg["details"]["findings"].to_string();
    assert!(
        findings.contains("disk 0 vda") && findings.contains("readable"),
        "{findings}"
    );
    assert!(findings.contains("changed-block tracking"), "{findings}");
    let warnings = reg["details"]["warnings"].to_string();
    assert!(warnings.contains("no guest agent channel"), "{warnings}");
    assert!(
        !warnings.contains("hdc"),
        "removable media are expected not to be backed up: {warnings}"
    );
    env.ok(&["protect", "sales/web01", "--policy", "DefaultPolicy"]);

    // Back up, change blocks, back up again, restore both points.
    let files = [
        images.path().join("web.qcow2"),
        images.path().join("data.qcow2"),
    ];
    let save = |tag: &str| {
        for (i, f) in files.iter().enumerate() {
            to_raw(f, "qcow2", &env.path(&format!("{tag}-disk{i}.raw")));
        }
    };
    save("a");
    let a = env.json(&["backup", "sales/web01"]);
    assert_eq!(a["status"], "Completed", "{a:#}");
    assert_eq!(a["details"]["consistency"], "CrashConsistent");
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x99 3M 64k", s(&files[0])],
    );
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z 4M 64k", s(&files[1])],
    );
    save("b");
    let b = env.json(&["backup", "sales/web01"]);
    assert_eq!(b["status"], "Completed", "{b:#}");
    for (tag, job) in [("a", &a), ("b", &b)] {
        let point = job["details"]["recovery_point"].as_str().expect("point");
        let to = env.path(&format!("restore-{tag}"));
        env.ok(&["restore", "sales/web01", "--point", point, "--to", s(&to)]);
        for i in 0..2 {
            assert_files_equal(
                &to.join(format!("web01-disk{i}.raw")),
                &env.path(&format!("{tag}-disk{i}.raw")),
            );
        }
    }
}

#[test]
fn missing_virsh_or_qemu_img_is_a_clear_error_at_discovery() {
    let images = tempfile::tempdir().expect("tmp");
    std::fs::write(images.path().join("node.xml"), "<node/>").expect("write");
    let uri = format!("test://{}", images.path().join("node.xml").display());
    let env = env_on(&uri, None);
    let discover = |path: &std::ffi::OsStr| {
        let out = env
            .cmd()
            .env("PATH", path)
            .arg("discover")
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(1),
            "a failed Discover job: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = discover(&path_with_only(&env.path("nothing"), &[]));
    assert!(
        err.contains("UserErrorToolNotFound") && err.contains("virsh not found"),
        "{err}"
    );
    assert!(err.contains("libvirt-clients"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    if !require_tool("virsh") {
        return;
    }
    // virsh but no qemu-img: the disks cannot be inspected.
    let node = test_node(images.path());
    let env = env_on(&format!("test://{}", node.display()), None);
    let out = env
        .cmd()
        .env("PATH", path_with_only(&env.path("virsh-only"), &["virsh"]))
        .arg("discover")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("qemu-img not found") && err.contains("qemu-utils"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

// ---- real domains under qemu:///system ------------------------------------------------

const SYSTEM: &str = "qemu:///system";

fn virsh(args: &[&str]) -> std::process::Output {
    std::process::Command::new("virsh")
        .args(["-q", "-c", SYSTEM])
        .args(args)
        .output()
        .expect("virsh")
}

/// True when qemu:///system answers (libvirtd is started when installed but not running,
/// as root); false (skip) or a panic under VMVAULT_REQUIRE_TOOLS=1 otherwise.
fn system_libvirt() -> bool {
    if !tools() || !require_tool("qemu-system-x86_64") {
        return false;
    }
    static START: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = START.lock().unwrap_or_else(|e| e.into_inner());
    if virsh(&["version"]).status.success() {
        return true;
    }
    if require_tool("libvirtd") {
        let _ = std::process::Command::new("virtlogd").arg("-d").status();
        let _ = std::process::Command::new("libvirtd").arg("-d").status();
        for _ in 0..100 {
            if virsh(&["version"]).status.success() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let why = String::from_utf8_lossy(&virsh(&["version"]).stderr).into_owned();
    if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("qemu:///system is required (VMVAULT_REQUIRE_TOOLS=1) but unreachable: {why}");
    }
    eprintln!("skipping: qemu:///system unreachable: {why}");
    false
}

/// The guest kit of tests/support/guest-kit.sh (a kernel and an initramfs running the
/// guest agent).
fn guest_kit() -> Option<PathBuf> {
    let dir = std::env::var_os("VMVAULT_GUEST_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/vmvault-test/guest-kit"));
    if dir.join("vmlinuz").is_file() && dir.join("initrd.gz").is_file() {
        return Some(dir);
    }
    let why = format!(
        "no guest kit in {} (build it with `sh tests/support/guest-kit.sh`)",
        dir.display()
    );
    if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// A defined, started domain (software emulation) on one qcow2 disk in a folder QEMU can
/// reach; destroyed and undefined (with its checkpoints) on drop.
struct Domain {
    name: String,
    disk: PathBuf,
    dir: tempfile::TempDir,
}

impl Domain {
    /// `kit`: boot the guest kit with a guest agent; else a domain with no OS (and no agent
    /// channel). `disk_mib` of disk, written by `fill` before the domain starts.
    fn start(kit: Option<&Path>, disk_mib: u64, fill: &[&str]) -> Domain {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let disk = dir.path().join("disk0.qcow2");
        sh(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                s(&disk),
                &format!("{disk_mib}M"),
            ],
        );
        let mut io = vec!["-f", "qcow2"];
        for c in fill {
            io.extend(["-c", c]);
        }
        io.push(s(&disk));
        sh("qemu-io", &io);
        let name = format!(
            "vmvault-it-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (boot, memory, extra) = match kit {
            Some(k) => (
                format!(
                    "<kernel>{}</kernel><initrd>{}</initrd><cmdline>console=ttyS0 panic=-1</cmdline>",
                    k.join("vmlinuz").display(),
                    k.join("initrd.gz").display()
                ),
                256,
                format!(
                    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
                     <serial type='file'><source path='{}'/><target port='0'/></serial>",
                    dir.path().join("console.log").display()
                ),
            ),
            None => (String::new(), 64, String::new()),
        };
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>{memory}</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>\
             {extra}<memballoon model='none'/></devices></domain>",
            disk.display()
        );
        let xml_path = dir.path().join("domain.xml");
        std::fs::write(&xml_path, xml).expect("write xml");
        let d = Domain { name, disk, dir };
        d.run(&["define", s(&xml_path)]);
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
        let hmp = format!("qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"{cmd}\"");
        let out = self.run(&["qemu-monitor-command", "--hmp", &self.name, &hmp]);
        assert!(!out.to_lowercase().contains("error"), "{cmd}: {out}");
    }

    /// Sets vmvault's cloud-service tag, as the README says.
    fn tag(&self, cloud_service: &str) {
        let xml = format!("<vm><cloud-service>{cloud_service}</cloud-service></vm>");
        self.run(&[
            "metadata",
            &self.name,
            "urn:vmvault:libvirt:1",
            "--key",
            "vmvault",
            "--set",
            &xml,
            "--live",
            "--config",
        ]);
    }

    /// Whether libvirt runs a job (a backup) on the domain.
    fn has_job(&self) -> bool {
        let info = self.run(&["domjobinfo", &self.name]);
        info.lines()
            .any(|l| l.starts_with("Job type:") && !l.contains("None"))
    }

    fn checkpoints(&self) -> Vec<String> {
        self.run(&["checkpoint-list", &self.name, "--name"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn qemu_pid(&self) -> i32 {
        let pid = std::fs::read_to_string(format!("/run/libvirt/qemu/{}.pid", self.name))
            .expect("QEMU pid file");
        pid.trim().parse().expect("pid")
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Waits until the guest agent answers.
    fn wait_for_agent(&self) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(180) {
            if virsh(&[
                "qemu-agent-command",
                &self.name,
                "--timeout",
                "2",
                r#"{"execute":"guest-ping"}"#,
            ])
            .status
            .success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "the guest agent never answered; console:\n{}",
            self.console()
        );
    }

    fn fsfreeze_status(&self) -> String {
        let out = self.run(&[
            "qemu-agent-command",
            &self.name,
            "--timeout",
            "10",
            r#"{"execute":"guest-fsfreeze-status"}"#,
        ]);
        let v: Value = serde_json::from_str(out.trim()).expect("json");
        v["return"].as_str().expect("status").to_string()
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // A stopped QEMU (a failed test) must not keep the domain from being destroyed.
        if let Ok(pid) = std::fs::read_to_string(format!("/run/libvirt/qemu/{}.pid", self.name)) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: sending a signal.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name, "--checkpoints-metadata"]);
    }
}

/// The disk content `base` with `pattern` written at each (offset, len): what the guest's
/// writes make of it.
fn patched(base: &Path, out: &Path, writes: &[(u8, u64, usize)]) {
    use std::os::unix::fs::FileExt;
    std::fs::copy(base, out).expect("copy");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .expect("open");
    for (pattern, offset, len) in writes {
        f.write_all_at(&vec![*pattern; *len], *offset)
            .expect("write");
    }
}

fn guest_writes(dom: &Domain, writes: &[(u8, u64, usize)]) {
    for (pattern, offset, len) in writes {
        dom.guest_write(&format!("write -P {pattern:#x} {offset} {len}"));
    }
}

fn point_of(job: &Value) -> String {
    job["details"]["recovery_point"]
        .as_str()
        .unwrap_or_else(|| panic!("no point: {job:#}"))
        .to_string()
}

fn restore_equals(env: &Env, vm: &str, point: &str, tag: &str, expected: &Path) {
    let to = env.path(&format!("restore-{tag}"));
    let r = env.json(&["restore", vm, "--point", point, "--to", s(&to)]);
    assert_eq!(r["status"], "Completed", "{r:#}");
    let name = vm.rsplit('/').next().expect("name");
    assert_files_equal(&to.join(format!("{name}-disk0.raw")), expected);
}

fn no_work_left(scratch: &Path) {
    let left: Vec<_> = std::fs::read_dir(scratch)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        left.is_empty(),
        "work folders left behind in {}: {left:?}",
        scratch.display()
    );
}

/// The folder for backup jobs' sockets and scratch files: QEMU (another user) must reach
/// vmvault's work folders in it.
fn scratch_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

#[test]
fn running_domain_without_agent_crash_consistent_incremental_with_cbt_and_restores() {
    if !system_libvirt() {
        return;
    }
    let scratch = scratch_dir();
    let env = env_on(SYSTEM, Some(scratch.path()));
    let dom = Domain::start(
        None,
        64,
        &[
            "write -P 0x11 0 2M",
            "write -P 0x12 16M 1M",
            "write -P 0x13 40M 64k",
        ],
    );
    // The cloud service from vmvault's metadata tag, set the way the README says.
    dom.tag("sales");
    let vm = format!("sales/{}", dom.name);
    let initial = env.path("initial.raw");
    to_raw(&dom.disk, "qcow2", &initial);

    env.ok(&["discover"]);
    let items = env.json(&["items"]);
    let it = item(&items, &vm);
    assert_eq!(it["power_state"], "Running");
    assert_eq!(it["size"], "1 vCPU, 64 MiB");
    assert_eq!(it["disks"][0]["capacity"], 64u64 << 20);
    let reg = env.json(&["register", &vm]);
    assert_eq!(reg["status"], "CompletedWithWarnings", "{reg:#}");
    assert!(
        reg["details"]["warnings"]
            .to_string()
            .contains("no guest agent channel"),
        "{reg:#}"
    );
    assert!(
        reg["details"]["findings"]
            .to_string()
            .contains("libvirt checkpoints"),
        "{reg:#}"
    );
    env.ok(&["protect", &vm, "--policy", "DefaultPolicy"]);

    // Full backup of the running domain: crash-consistent (no agent).
    let a = env.json(&["backup", &vm]);
    assert_eq!(a["status"], "Completed", "{a:#}");
    assert_eq!(a["details"]["consistency"], "CrashConsistent");
    let read_a = a["details"]["bytes_read"].as_u64().expect("bytes_read");
    assert_eq!(
        read_a,
        (3 << 20) + (64 << 10),
        "the allocated data, holes skipped: {a:#}"
    );
    assert!(!dom.has_job(), "the backup job ended");
    no_work_left(scratch.path());

    // The guest writes; the next backup reads only what changed.
    let writes_b = [
        (0xcdu8, 0u64, 64usize << 10),
        (0xee, 1 << 20, 64 << 10),
        (0xef, 20 << 20, 4 << 10),
    ];
    guest_writes(&dom, &writes_b);
    let b = env.json(&["backup", &vm]);
    assert_eq!(b["status"], "Completed", "{b:#}");
    let read_b = b["details"]["bytes_read"].as_u64().expect("bytes_read");
    assert!(
        read_b > 0 && read_b <= 3 * (64 << 10),
        "changed-block tracking: {read_b} bytes read for 3 changed blocks: {b:#}"
    );
    let expected_b = env.path("expected-b.raw");
    patched(&initial, &expected_b, &writes_b);

    // Nothing written: the third backup reads nothing.
    let c = env.json(&["backup", &vm]);
    assert_eq!(c["status"], "Completed", "{c:#}");
    assert_eq!(c["details"]["bytes_read"], 0, "{c:#}");
    assert_eq!(
        dom.checkpoints().len(),
        2,
        "older checkpoints are deleted: {:?}",
        dom.checkpoints()
    );

    restore_equals(&env, &vm, &point_of(&a), "a", &initial);
    restore_equals(&env, &vm, &point_of(&b), "b", &expected_b);
    restore_equals(&env, &vm, &point_of(&c), "c", &expected_b);
    assert_eq!(dom.run(&["domstate", &dom.name]).trim(), "running");
}

/// Polls `vmvault job ID` until `done` says so.
fn job_until(env: &Env, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let j = env.json(&["job", id]);
        if done(&j) {
            return j;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{what}: {j:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `backup VM --no-wait`; returns the job id and the pid of the process running it.
fn backup_in_background(env: &Env, vm: &str) -> (String, i32) {
    let v = env.json(&["backup", vm, "--no-wait"]);
    let id = v["job_id"].as_str().expect("job id").to_string();
    (id, v["pid"].as_i64().expect("pid") as i32)
}

/// Waits until the background process has exited (it owns the vault until then).
fn wait_exit(pid: i32) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its reaper.
        if status.is_empty()
            || status
                .split(") ")
                .nth(1)
                .is_some_and(|r| r.starts_with('Z'))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("background vmvault {pid} did not exit");
}

/// Waits until the backup job `id` transfers data (vmvault has begun libvirt's backup job
/// and opened its export).
fn wait_for_transfer(env: &Env, id: &str) {
    job_until(env, id, "the backup never started its transfer", |j| {
        assert_eq!(
            j["status"], "InProgress",
            "the backup ended before its transfer was seen: {j:#}"
        );
        j["tasks"][1]["status"] == "InProgress"
    });
}

#[test]
fn running_domain_with_guest_agent_file_system_consistent_and_cleanup_after_cancel_and_failure() {
    if !system_libvirt() {
        return;
    }
    let Some(kit) = guest_kit() else { return };
    let scratch_guard = scratch_dir();
    let scratch = scratch_guard.path();
    // Reads are limited to 128 MiB/s: reading the 384 MiB that change below takes three
    // seconds, long enough to cancel or break a backup midway whatever the machine's speed
    // (unlimited, the whole transfer can end before QEMU is stopped).
    let env = env_limited(SYSTEM, Some(scratch), 128);
    let dom = Domain::start(
        Some(&kit),
        768,
        &["write -P 0x5a 0 512M", "write -P 0x11 600M 1M"],
    );
    dom.tag("kit");
    let vm = format!("kit/{}", dom.name);
    let initial = env.path("initial.raw");
    to_raw(&dom.disk, "qcow2", &initial);
    dom.wait_for_agent();

    env.ok(&["discover"]);
    let reg = env.json(&["register", &vm]);
    assert!(
        reg["details"]["findings"]
            .to_string()
            .contains("guest agent: responding"),
        "{reg:#}"
    );
    env.ok(&["protect", &vm, "--policy", "DefaultPolicy"]);

    // A file-system consistent full backup; the guest is thawed right after.
    let freezes = dom.console().matches("guest-fsfreeze-freeze").count();
    let a = env.json(&["backup", &vm]);
    assert_eq!(a["status"], "Completed", "{a:#}");
    assert_eq!(a["details"]["consistency"], "FileSystemConsistent", "{a:#}");
    assert!(
        dom.console().matches("guest-fsfreeze-freeze").count() > freezes,
        "the agent was asked to freeze"
    );
    assert_eq!(dom.fsfreeze_status(), "thawed");
    let points = env.json(&["points", &vm]);
    assert_eq!(
        points[0]["consistency"], "FileSystemConsistent",
        "{points:#}"
    );

    // The guest changes 384 MiB: enough for the next backups (incremental from the first
    // point) to take a while.
    let writes = [
        (0xcdu8, 0u64, 64usize << 10),
        (0xee, 700 << 20, 4 << 10),
        (0x77, 0, 384 << 20),
    ];
    guest_writes(&dom, &writes);
    let qemu = dom.qemu_pid();

    // Cancel midway: QEMU is stopped while vmvault reads its export, so the cancel lands
    // before the backup can finish.
    let (id, pid) = backup_in_background(&env, &vm);
    wait_for_transfer(&env, &id);
    // SAFETY: sending signals to the test domain's QEMU.
    unsafe { libc::kill(qemu, libc::SIGSTOP) };
    let j = env.json(&["job", &id]);
    assert_eq!(j["status"], "InProgress", "{j:#}");
    env.ok(&["cancel", &id]);
    unsafe { libc::kill(qemu, libc::SIGCONT) };
    let j = job_until(&env, &id, "cancelled backup", |j| {
        j["status"] != "InProgress" && j["status"] != "Cancelling"
    });
    assert_eq!(j["status"], "Cancelled", "{j:#}");
    wait_exit(pid);
    assert!(!dom.has_job(), "no backup job left after the cancel");
    assert_eq!(dom.fsfreeze_status(), "thawed");
    no_work_left(scratch);
    assert_eq!(
        env.json(&["points", &vm]).as_array().expect("points").len(),
        1
    );

    // A failure midway: an administrator ends the backup job while vmvault reads (QEMU is
    // stopped until the abort is on its way, so it lands before the reads can finish). The
    // job fails with a clear error, and nothing is left behind.
    let (id, pid) = backup_in_background(&env, &vm);
    wait_for_transfer(&env, &id);
    unsafe { libc::kill(qemu, libc::SIGSTOP) };
    assert_eq!(env.json(&["job", &id])["status"], "InProgress");
    let abort = std::process::Command::new("virsh")
        .args(["-q", "-c", SYSTEM, "domjobabort", &dom.name])
        .spawn()
        .expect("virsh domjobabort");
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(qemu, libc::SIGCONT) };
    let aborted = abort.wait_with_output().expect("virsh");
    assert!(aborted.status.success(), "domjobabort failed");
    let j = job_until(&env, &id, "failed backup", |j| j["status"] != "InProgress");
    assert_eq!(j["status"], "Failed", "{j:#}");
    let message = j["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("vda of kit/{}", dom.name)),
        "the error names the disk and the VM: {j:#}"
    );
    assert!(
        j["error"]["recommendations"]
            .to_string()
            .contains("domjobabort"),
        "and says what may have happened: {j:#}"
    );
    wait_exit(pid);
    assert!(!dom.has_job(), "no backup job left after the failure");
    assert_eq!(dom.fsfreeze_status(), "thawed");
    assert_eq!(dom.run(&["domstate", &dom.name]).trim(), "running");
    no_work_left(scratch);
    let items = env.json(&["items"]);
    assert_eq!(
        item(&items, &vm)["protection_state"],
        "ProtectionError",
        "{items:#}"
    );

    // The cancelled and failed backups cost nothing: the next one is still incremental
    // from the first point (it reads what changed since, not the whole disk), and the
    // restores equal what the disk held.
    let b = env.json(&["backup", &vm]);
    assert_eq!(b["status"], "Completed", "{b:#}");
    assert_eq!(b["details"]["consistency"], "FileSystemConsistent");
    let read_a = a["details"]["bytes_read"].as_u64().expect("bytes_read");
    let read_b = b["details"]["bytes_read"].as_u64().expect("bytes_read");
    assert_eq!(read_a, (513 << 20), "{a:#}");
    assert!(
        (384 << 20..=(384 << 20) + (128 << 10)).contains(&read_b),
        "incremental after a cancel and a failure: {read_b} bytes read for 384 MiB + 2 blocks changed: {b:#}"
    );
    assert_eq!(
        dom.checkpoints().len(),
        2,
        "the base and the new point's: {:?}",
        dom.checkpoints()
    );
    let expected_b = env.path("expected-b.raw");
    patched(&initial, &expected_b, &writes);
    restore_equals(&env, &vm, &point_of(&a), "a", &initial);
    restore_equals(&env, &vm, &point_of(&b), "b", &expected_b);
}

/// A domain whose definition is larger than what a point keeps (a description someone
/// filled): the backup keeps the data and says the definition was left out.
#[test]
fn a_domain_definition_too_large_to_keep_is_left_out_not_the_backup() {
    if !tools() {
        return;
    }
    let images = tempfile::tempdir().expect("tmp");
    let big = format!(
        r#"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>big01</name><uuid>44444444-2222-3333-4444-555555555555</uuid>
    <description>{}</description>
    <memory unit='MiB'>512</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{{db}}'/><target dev='vda' bus='virtio'/></disk>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>"#,
        "x".repeat(1_500_000)
    );
    let node = libvirt_test_node(images.path(), |_| {}, &big);
    let env = env_on(&format!("test://{}", node.display()), None);
    env.ok(&["discover"]);
    env.ok(&["register", "big01"]);
    env.ok(&["protect", "big01", "--policy", "DefaultPolicy"]);
    let j = env.json(&["backup", "big01"]);
    assert_eq!(j["status"], "CompletedWithWarnings", "{j:#}");
    assert!(
        j["details"]["warnings"].to_string().contains("definition"),
        "{j:#}"
    );
    assert_eq!(
        env.json(&["points", "big01"]).as_array().map(Vec::len),
        Some(1)
    );
}
