//! The `images` source through the real CLI (issue 5): a folder of raw, qcow2 (with a
//! backing file), vmdk and vhd images made by qemu-img; discover, register, protect, back
//! up, change blocks, back up again, restore both points in every format and compare with
//! what the images held at each backup; an image a running QEMU holds; missing tools.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn tools() -> bool {
    require_tool("qemu-img") && require_tool("qemu-nbd") && require_tool("qemu-io")
}

/// A test folder with the images folder `lab-images` (the cloud service) and two vaults on
/// it: `lab` (the default) and `lab-crash` (allow_crash_consistent_reads = true).
fn lab() -> (Env, PathBuf) {
    let env = Env::with_config(|dir| {
        let images = dir.join("lab-images");
        std::fs::create_dir(&images).expect("mkdir");
        format!(
            "[engine]\nmax_concurrent_jobs = 2\n\n\
             [[vault]]\nname = \"lab\"\nregion = \"lab-1\"\nchunk_size_kib = 64\n\
             source = {{ kind = \"images\", path = \"{0}\", region = \"lab-1\" }}\n\n\
             [[vault]]\nname = \"lab-crash\"\nregion = \"lab-1\"\nchunk_size_kib = 64\n\
             source = {{ kind = \"images\", path = \"{0}\", region = \"lab-1\", allow_crash_consistent_reads = true }}\n",
            images.display()
        )
    });
    let images = env.path("lab-images");
    (env, images)
}

/// The VMs of the folder: (name, file, qemu format).
const VMS: &[(&str, &str, &str)] = &[
    ("web01", "web01.raw", "raw"),
    ("app01", "app01.qcow2", "qcow2"),
    ("legacy", "legacy.vmdk", "vmdk"),
    ("hyperv", "hyperv.vhd", "vpc"),
];

/// Makes the four images: incompressible data with holes, so that deduplication of the
/// second backup and skipped holes are visible.
fn make_images(env: &Env, images: &Path) {
    let work = env.path("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    // raw: 24 MiB, 3 MiB of data at 0, 1 MiB at 17 MiB, the rest a hole.
    let web = images.join("web01.raw");
    sh("qemu-img", &["create", "-q", "-f", "raw", s(&web), "24M"]);
    write_random(&web, 0, 3, 1);
    write_random(&web, 17 << 20, 1, 2);
    // qcow2 overlay on a backing file (one disk): base 32 MiB with data, overlay writes.
    let base_raw = work.join("base.raw");
    sh(
        "qemu-img",
        &["create", "-q", "-f", "raw", s(&base_raw), "32M"],
    );
    write_random(&base_raw, 0, 4, 3);
    write_random(&base_raw, 30 << 20, 1, 4);
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&base_raw),
            s(&images.join("base.qcow2")),
        ],
    );
    let app = images.join("app01.qcow2");
    overlay(&app, "base.qcow2", None);
    sh(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x23 2M 1M",
            "-c",
            "write -z 30M 512k",
            s(&app),
        ],
    );
    // vmdk converted from raw data.
    let vmdk_raw = work.join("vmdk.raw");
    sh(
        "qemu-img",
        &["create", "-q", "-f", "raw", s(&vmdk_raw), "16M"],
    );
    write_random(&vmdk_raw, 1 << 20, 2, 5);
    sh(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            s(&vmdk_raw),
            s(&images.join("legacy.vmdk")),
        ],
    );
    // vhd (vpc) created by qemu-img, written through qemu-io.
    let vhd = images.join("hyperv.vhd");
    sh("qemu-img", &["create", "-q", "-f", "vpc", s(&vhd), "16M"]);
    sh(
        "qemu-io",
        &[
            "-f",
            "vpc",
            "-c",
            "write -P 0x41 5M 1M",
            "-c",
            "write -P 0x42 0 64k",
            s(&vhd),
        ],
    );
}

/// Changes some blocks of every image: the raw file directly, the others through qemu-io.
fn change_blocks(images: &Path) {
    write_random(&images.join("web01.raw"), 10 << 20, 1, 9);
    write_random(&images.join("web01.raw"), 1 << 20, 1, 10);
    let q = |fmt: &str, file: &str, cmd: &str| {
        sh("qemu-io", &["-f", fmt, "-c", cmd, s(&images.join(file))])
    };
    q("qcow2", "app01.qcow2", "write -P 0xab 1M 64k");
    q("qcow2", "app01.qcow2", "write -P 0xac 31M 4k");
    q("vmdk", "legacy.vmdk", "write -P 0xab 8M 64k");
    q("vpc", "hyperv.vhd", "write -P 0xab 0 64k");
}

/// Saves what every image holds now, as raw files `<tag>-<vm>.raw`.
fn save_originals(env: &Env, images: &Path, tag: &str) {
    for (vm, file, fmt) in VMS {
        to_raw(
            &images.join(file),
            fmt,
            &env.path(&format!("{tag}-{vm}.raw")),
        );
    }
}

fn details(job: &Value) -> &Value {
    &job["details"]
}

#[test]
fn images_back_up_change_back_up_and_restore_both_points_in_every_format() {
    if !tools() {
        return;
    }
    let (env, images) = lab();
    make_images(&env, &images);
    std::fs::write(images.join("notes.txt"), "not an image").expect("write");

    // Discover: one VM per image; the backing file is part of app01, not a VM.
    let d = env.json(&["discover"]);
    assert_eq!(d["job"]["status"], "Completed", "{d:#}");
    assert_eq!(d["found"], 4, "{d:#}");
    let items = env.json(&["items"]);
    assert_eq!(items.as_array().expect("items").len(), 4, "{items:#}");
    for (vm, file, _) in VMS {
        let i = item(&items, vm);
        assert_eq!(i["cloud_service"], "lab-images", "the folder's name: {i:#}");
        assert_eq!(i["region"], "lab-1");
        assert_eq!(i["power_state"], "Stopped");
        assert_eq!(i["os"], "Unknown", "a disk image does not say: {i:#}");
        assert_eq!(i["id"], format!("images:{file}"));
        assert_eq!(i["disks"][0]["name"], *file);
    }
    assert_eq!(item(&items, "web01")["disks"][0]["capacity"], 24u64 << 20);
    assert_eq!(item(&items, "app01")["disks"][0]["capacity"], 32u64 << 20);
    assert_eq!(item(&items, "app01")["size"], "qcow2, 32 MiB");
    assert_eq!(item(&items, "legacy")["disks"][0]["capacity"], 16u64 << 20);

    // Register: findings name formats and the backing file.
    let names: Vec<&str> = VMS.iter().map(|v| v.0).collect();
    let mut reg = vec!["register"];
    reg.extend(&names);
    reg.push("--json");
    let jobs: Value = serde_json::from_str(&env.ok(&reg)).expect("json");
    let app_reg = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["item"].as_str().is_some_and(|i| i.ends_with("app01")))
        .expect("register job of app01");
    assert_eq!(app_reg["status"], "Completed", "{app_reg:#}");
    let findings = details(app_reg)["findings"].to_string();
    assert!(
        findings.contains("backing chain: app01.qcow2 (qcow2) → base.qcow2 (qcow2)"),
        "{findings}"
    );
    let mut prot = vec!["protect"];
    prot.extend(&names);
    prot.extend(["--policy", "DefaultPolicy"]);
    env.ok(&prot);

    // First backup of every VM, with the images' contents saved at that time.
    save_originals(&env, &images, "a");
    let mut first = Vec::new();
    for vm in &names {
        let job = env.json(&["backup", vm]);
        assert_eq!(job["status"], "Completed", "{job:#}");
        assert_eq!(details(&job)["consistency"], "CrashConsistent");
        first.push(job);
    }
    // Holes are never read: web01 has 4 MiB of data in 24 MiB.
    assert_eq!(
        details(&first[0])["bytes_read"],
        4u64 << 20,
        "{:#}",
        first[0]
    );

    change_blocks(&images);
    save_originals(&env, &images, "b");
    let mut second = Vec::new();
    for (vm, a) in names.iter().zip(&first) {
        let job = env.json(&["backup", vm]);
        assert_eq!(job["status"], "Completed", "{job:#}");
        // No changed-block tracking for files: everything allocated is read again, but
        // only changed chunks are stored.
        let (stored_a, stored_b) = (
            details(a)["stored_bytes"].as_u64().expect("n"),
            details(&job)["stored_bytes"].as_u64().expect("n"),
        );
        assert!(
            stored_b < stored_a,
            "{vm}: second backup stored {stored_b} bytes, first {stored_a}"
        );
        second.push(job);
    }
    let web_b = details(&second[0])["stored_bytes"].as_u64().expect("n");
    assert!(
        web_b <= 3 << 20,
        "2 MiB changed in web01, {web_b} bytes stored"
    );

    // Restore both points of every VM; each equals the image at its backup time.
    for (i, (vm, _, _)) in VMS.iter().enumerate() {
        for (tag, job) in [("a", &first[i]), ("b", &second[i])] {
            let point = details(job)["recovery_point"].as_str().expect("point");
            let to = env.path(&format!("restore-{tag}-{vm}"));
            let r = env.json(&["restore", vm, "--point", point, "--to", s(&to)]);
            assert_eq!(r["status"], "Completed", "{r:#}");
            assert_eq!(mode(&to.join(format!("{vm}-disk0.raw"))), 0o600);
            assert_files_equal(
                &to.join(format!("{vm}-disk0.raw")),
                &env.path(&format!("{tag}-{vm}.raw")),
            );
        }
    }

    // Restore as qcow2, vhd and vmdk: converted back to raw, each equals the source.
    for (i, vm) in [(0usize, "web01"), (1, "app01"), (3, "hyperv")] {
        for (tag, job) in [("a", &first[i]), ("b", &second[i])] {
            let point = details(job)["recovery_point"].as_str().expect("point");
            for (format, qemu) in [("qcow2", "qcow2"), ("vhd", "vpc"), ("vmdk", "vmdk")] {
                let to = env.path(&format!("restore-{tag}-{vm}-{format}"));
                let r = env.json(&[
                    "restore",
                    vm,
                    "--point",
                    point,
                    "--to",
                    s(&to),
                    "--format",
                    format,
                ]);
                assert_eq!(r["status"], "Completed", "{r:#}");
                let image = to.join(format!("{vm}-disk0.{format}"));
                assert_eq!(mode(&image), 0o600, "{} is not owner-only", image.display());
                let info: Value =
                    serde_json::from_str(&sh("qemu-img", &["info", "--output=json", s(&image)]))
                        .expect("json");
                assert_eq!(info["format"], qemu, "{info:#}");
                let back = env.path(&format!("back-{tag}-{vm}-{format}.raw"));
                to_raw(&image, qemu, &back);
                assert_files_equal(&back, &env.path(&format!("{tag}-{vm}.raw")));
                let left: Vec<_> = std::fs::read_dir(&to)
                    .expect("ls")
                    .map(|e| e.expect("entry").file_name())
                    .collect();
                assert_eq!(
                    left.len(),
                    1,
                    "only the image is left in {}: {left:?}",
                    to.display()
                );
            }
        }
    }
    let v = env.json(&["verify"]);
    assert_eq!(v["status"], "Completed", "{v:#}");
}

/// Kills the process on drop.
struct Holder(std::process::Child);
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A qemu-nbd that holds `image` open for writing, as a running VM's QEMU does.
fn hold(image: &Path, format: &str) -> Holder {
    let sock = image.with_extension("holder.sock");
    let spawn = || {
        std::process::Command::new("qemu-nbd")
            .args([
                "--persistent",
                "--format",
                format,
                "--socket",
                s(&sock),
                s(image),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(image.with_extension("holder.log")).expect("log"))
            .spawn()
            .expect("qemu-nbd")
    };
    let mut holder = Holder(spawn());
    // Ready once a reader without force-share is refused.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(60) {
        // The probe below holds a shared lock for an instant; a qemu-nbd starting in that
        // instant cannot take its write lock and exits: start it again.
        if let Ok(Some(_)) = holder.0.try_wait() {
            holder = Holder(spawn());
        }
        let out = std::process::Command::new("qemu-img")
            .args(["info", s(image)])
            .output()
            .expect("qemu-img");
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("lock") {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = holder.0.try_wait();
    let log = std::fs::read_to_string(image.with_extension("holder.log")).unwrap_or_default();
    panic!(
        "qemu-nbd never locked {} ({status:?}): {log}",
        image.display()
    );
}

#[test]
fn an_image_in_use_fails_the_backup_clearly_unless_crash_consistent_reads_are_allowed() {
    if !tools() {
        return;
    }
    let (env, images) = lab();
    let busy = images.join("busy.qcow2");
    sh("qemu-img", &["create", "-q", "-f", "qcow2", s(&busy), "8M"]);
    sh(
        "qemu-io",
        &[
            "-f",
            "qcow2",
            "-c",
            "write -P 0x61 0 1M",
            "-c",
            "write -P 0x62 6M 64k",
            s(&busy),
        ],
    );
    let expected = env.path("busy-expected.raw");
    to_raw(&busy, "qcow2", &expected);
    let holder = hold(&busy, "qcow2");

    // Discovery sees it in use: Running.
    env.ok(&["discover"]);
    let items = env.json(&["items"]);
    assert_eq!(item(&items, "busy")["power_state"], "Running", "{items:#}");
    // Registration succeeds (the VM may be shut down before its backup) and warns.
    let reg = env.json(&["register", "busy"]);
    assert_eq!(reg["status"], "CompletedWithWarnings", "{reg:#}");
    let warnings = reg["details"]["warnings"].to_string();
    assert!(
        warnings.contains("in use by a running QEMU")
            && warnings.contains("allow_crash_consistent_reads"),
        "{warnings}"
    );
    env.ok(&["protect", "busy", "--policy", "DefaultPolicy"]);

    // The backup fails (exit 1) with a clear error and what to do.
    let out = env.run(&["backup", "busy", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["error"]["code"], "UserErrorImageInUse", "{job:#}");
    assert!(
        job["error"]["message"]
            .as_str()
            .expect("message")
            .contains("busy.qcow2"),
        "{job:#}"
    );
    let recs = job["error"]["recommendations"].to_string();
    assert!(
        recs.contains("libvirt") && recs.contains("allow_crash_consistent_reads = true"),
        "{recs}"
    );
    // The text output says the same.
    let (_, err) = env.fails_with(1, &["backup", "busy"]);
    assert!(
        err.contains("UserErrorImageInUse") && err.contains("allow_crash_consistent_reads"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let items = env.json(&["items"]);
    assert_eq!(item(&items, "busy")["protection_state"], "ProtectionError");

    // The vault that allows crash-consistent reads backs it up, with a warning.
    let v = ["--vault", "lab-crash"];
    env.ok(&[v[0], v[1], "discover"]);
    env.ok(&[v[0], v[1], "register", "busy"]);
    env.ok(&[v[0], v[1], "protect", "busy", "--policy", "DefaultPolicy"]);
    let job = env.json(&[v[0], v[1], "backup", "busy"]);
    assert_eq!(job["status"], "CompletedWithWarnings", "{job:#}");
    assert_eq!(job["details"]["consistency"], "CrashConsistent");
    let w = job["details"]["warnings"].to_string();
    assert!(
        w.contains("busy.qcow2") && w.contains("crash-consistent"),
        "{w}"
    );
    let point = job["details"]["recovery_point"]
        .as_str()
        .expect("point")
        .to_string();
    let to = env.path("restore-crash");
    env.ok(&[
        v[0],
        v[1],
        "restore",
        "busy",
        "--point",
        &point,
        "--to",
        s(&to),
    ]);
    assert_files_equal(&to.join("busy-disk0.raw"), &expected);

    // Once the QEMU is gone, the default vault backs it up too.
    drop(holder);
    let job = env.json(&["backup", "busy"]);
    assert_eq!(job["status"], "Completed", "{job:#}");
    assert_eq!(
        item(&env.json(&["items"]), "busy")["protection_state"],
        "Protected"
    );
}

#[test]
fn a_missing_qemu_img_is_a_clear_error_at_discovery() {
    let (env, images) = lab();
    std::fs::write(images.join("web01.raw"), vec![0u8; 1 << 20]).expect("write");
    let path = path_with_only(&env.path("bin"), &[]);
    let out = env
        .cmd()
        .env("PATH", &path)
        .arg("discover")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a failed Discover job: {err}");
    assert!(err.contains("UserErrorToolNotFound"), "{err}");
    assert!(
        err.contains("qemu-img not found") && err.contains("qemu-utils"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // Nothing was discovered; with the tool back, discovery works.
    if require_tool("qemu-img") {
        let d = env.json(&["discover"]);
        assert_eq!(d["found"], 1, "{d:#}");
    }
}

/// Permission bits of a file.
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// A qcow2 overlay of `backing` (a qcow2) at `path`; with a size, made without opening
/// the backing file (it may be missing).
fn overlay(path: &Path, backing: &str, size: Option<&str>) {
    let mut a = vec![
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        backing,
        "-F",
        "qcow2",
        s(path),
    ];
    if let Some(size) = size {
        a.insert(1, "-u");
        a.push(size);
    }
    sh("qemu-img", &a);
}

/// A new qcow2 image of `size` with `write` (a qemu-io command) done on it.
fn qcow2_with_data(path: &Path, size: &str, write: &str) {
    sh("qemu-img", &["create", "-q", "-f", "qcow2", s(path), size]);
    sh("qemu-io", &["-f", "qcow2", "-c", write, s(path)]);
}

/// The code and message of an item's error (`items --json`).
fn item_error(items: &Value, name: &str) -> (String, String) {
    let e = &item(items, name)["last_error"];
    (
        e["code"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn bad_images_are_listed_with_their_errors_and_hide_no_good_one() {
    if !tools() {
        return;
    }
    let (env, images) = lab();
    let img = |name: &str| images.join(name);
    sh(
        "qemu-img",
        &["create", "-q", "-f", "raw", s(&img("good1.raw")), "4M"],
    );
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&img("good2.qcow2")), "4M"],
    );
    // Named like images, but a FIFO (it blocked discovery for 60 s), a socket and a
    // symlink to a device.
    sh("mkfifo", &[s(&img("fifo.raw"))]);
    let _socket = std::os::unix::net::UnixListener::bind(img("sock.raw")).expect("bind");
    std::os::unix::fs::symlink("/dev/null", img("dev.raw")).expect("symlink");
    // A truncated qcow2, a missing backing file, a backing loop.
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&img("trunc.qcow2")), "4M"],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(img("trunc.qcow2"))
        .and_then(|f| f.set_len(64))
        .expect("truncate");
    overlay(&img("orphan.qcow2"), "missing.qcow2", Some("4M"));
    overlay(&img("loop1.qcow2"), "loop2.qcow2", Some("4M"));
    overlay(&img("loop2.qcow2"), "loop1.qcow2", Some("4M"));

    let d = env.json(&["discover"]);
    assert_eq!(d["job"]["status"], "CompletedWithWarnings", "{d:#}");
    assert_eq!(d["found"], 9, "{d:#}");
    let items = env.json(&["items"]);
    for good in ["good1", "good2"] {
        assert!(item(&items, good)["last_error"].is_null(), "{items:#}");
    }
    let warnings = d["warnings"].to_string();
    for (name, code, says) in [
        ("fifo", "UserErrorImageNotAFile", "which is a FIFO"),
        ("sock", "UserErrorImageNotAFile", "which is a socket"),
        (
            "dev",
            "UserErrorImageNotAFile",
            "symbolic link to /dev/null",
        ),
        (
            "trunc",
            "UserErrorImageInvalid",
            "trunc.qcow2 is not a valid qcow2 image",
        ),
        (
            "orphan",
            "UserErrorImageFileMissing",
            "\"missing.qcow2\" of",
        ),
        (
            "loop1",
            "UserErrorImageChainRefused",
            "already in the chain",
        ),
        (
            "loop2",
            "UserErrorImageChainRefused",
            "already in the chain",
        ),
    ] {
        let (c, m) = item_error(&items, name);
        assert_eq!(c, code, "{name}: {m}");
        assert!(m.contains(says), "{name}: {m}");
        assert_eq!(item(&items, name)["size"], "unreadable");
        assert!(
            warnings.contains(&format!("lab-images/{name}: ")),
            "{name} is not a warning: {warnings}"
        );
    }
    // Registration says what discovery said (not "no longer in the images folder").
    let (_, err) = env.fails_with(1, &["register", "dev"]);
    assert!(
        err.contains("character device") && !err.contains("no longer"),
        "{err}"
    );
    let reg = env.json(&["register", "good2"]);
    assert_eq!(reg["status"], "Completed", "{reg:#}");
    // A registered VM whose image breaks stays found and registered, with its error.
    std::fs::OpenOptions::new()
        .write(true)
        .open(img("good2.qcow2"))
        .and_then(|f| f.set_len(64))
        .expect("truncate");
    let d = env.json(&["discover"]);
    assert_eq!(d["no_longer_found"], 0, "{d:#}");
    let items = env.json(&["items"]);
    let good2 = item(&items, "good2");
    assert_eq!(good2["not_found"], false, "{good2:#}");
    assert_eq!(good2["registration_state"], "Registered", "{good2:#}");
    assert_eq!(
        good2["disks"][0]["capacity"],
        4u64 << 20,
        "facts as last known"
    );
    assert_eq!(item_error(&items, "good2").0, "UserErrorImageInvalid");
}

#[test]
fn an_image_that_becomes_a_backing_file_says_so_at_discovery_and_backup() {
    if !tools() {
        return;
    }
    let (env, images) = lab();
    qcow2_with_data(&images.join("base.qcow2"), "4M", "write -P 0x42 0 1M");
    env.protect(&["base"]);
    env.backup("base");
    // Someone makes base.qcow2 the backing file of a new overlay.
    overlay(&images.join("app.qcow2"), "base.qcow2", None);
    let d = env.json(&["discover"]);
    assert_eq!(d["job"]["status"], "CompletedWithWarnings", "{d:#}");
    assert_eq!(d["no_longer_found"], 1, "{d:#}");
    let w = d["warnings"].to_string();
    assert!(
        w.contains("lab-images/base: base.qcow2 is no VM of its own any more: it is now the backing file of app.qcow2 (VM app)"),
        "{w}"
    );
    let out = env.run(&["backup", "base", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["error"]["code"], "UserErrorVmPartOfAnother", "{job:#}");
    let recs = job["error"]["recommendations"].to_string();
    assert!(recs.contains("Back up the VM it belongs to now"), "{recs}");
    // The overlay's registration shows its chain.
    let out = env.ok(&["register", "app"]);
    assert!(
        out.contains("backing chain: app.qcow2 (qcow2) → base.qcow2 (qcow2)"),
        "{out}"
    );
}

/// Processes whose parent is `pid`: (pid, command name).
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.get(1) == Some(&pid.to_string().as_str()) {
            if let Ok(p) = e.file_name().to_string_lossy().parse() {
                out.push((p, stat[open + 1..close].to_string()));
            }
        }
    }
    out
}

/// Whether `pid` still runs (a zombie waiting for its new parent to reap it does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[test]
fn a_killed_vmvault_leaves_no_qemu_nbd_holding_the_image() {
    if !tools() {
        return;
    }
    let (env, images) = lab();
    let disk = images.join("busy.qcow2");
    qcow2_with_data(&disk, "8M", "write -P 0x61 0 1M");
    env.protect(&["busy"]);
    // A qemu-img that stops at `map`: the backup then holds its qemu-nbd (and the image's
    // lock) and waits, until it is killed.
    let bin = env.path("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let real = sh("sh", &["-c", "command -v qemu-img"]).trim().to_string();
    let mark = env.path("at-map");
    let wrapper = bin.join("qemu-img");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = map ]; then touch '{}'; exec sleep 600; fi\nexec '{real}' \"$@\"\n",
            s(&mark)
        ),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    // Its qemu-nbd's socket folder stays behind a kill -9: in the test's folder, not /tmp.
    let tmp = env.path("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let mut vmvault = env
        .std_cmd()
        .env("PATH", &path)
        .env("TMPDIR", &tmp)
        .args(["backup", "busy"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let t0 = std::time::Instant::now();
    while !mark.exists() && t0.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kids = children_of(vmvault.id());
    let _ = vmvault.kill();
    let _ = vmvault.wait();
    assert!(mark.exists(), "the backup never reached qemu-img map");
    assert!(
        kids.iter().any(|(_, name)| name == "qemu-nbd"),
        "the backup holds a qemu-nbd: {kids:?}"
    );
    // kill -9 of vmvault ends its children (qemu-nbd and the sleeping qemu-img).
    let t0 = std::time::Instant::now();
    while kids.iter().any(|(p, _)| running(*p)) && t0.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left: Vec<_> = kids.iter().filter(|(p, _)| running(*p)).collect();
    assert!(left.is_empty(), "children outlived vmvault: {left:?}");
    // The image's lock is free: a writer (a VM starting) gets it.
    sh(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x62 0 4k", s(&disk)],
    );
    // The killed run's records of its children are cleared by the next run.
    let records = env.data.join("children");
    assert!(
        std::fs::read_dir(&records).expect("records").count() >= 1,
        "the killed run recorded its children"
    );
    env.ok(&["items"]);
    let rest: Vec<_> = std::fs::read_dir(&records)
        .expect("records")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(rest.is_empty(), "records left: {rest:?}");
}

#[test]
fn a_raw_image_whose_size_is_not_a_multiple_of_512_restores_to_exactly_that_size() {
    if !tools() {
        return;
    }
    let (env, images) = lab();
    // 1,000,001 bytes, none of them zero: qemu-img calls it 1,000,448.
    let bytes: Vec<u8> = (0..1_000_001u32).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(images.join("odd.raw"), &bytes).expect("write");
    env.protect(&["odd"]);
    let items = env.json(&["items"]);
    assert_eq!(
        item(&items, "odd")["disks"][0]["capacity"],
        1_000_001,
        "{items:#}"
    );
    let point = env.backup("odd");
    let to = env.path("restore-odd");
    let r = env.json(&["restore", "odd", "--point", &point, "--to", s(&to)]);
    assert_eq!(r["status"], "Completed", "{r:#}");
    let restored = std::fs::read(to.join("odd-disk0.raw")).expect("read");
    assert_eq!(restored.len(), 1_000_001);
    assert!(restored == bytes, "the restored image differs");
    // A converted image holds whole sectors (qemu-img pads with zeros), as README says.
    let to = env.path("restore-odd-qcow2");
    let r = env.json(&[
        "restore",
        "odd",
        "--point",
        &point,
        "--to",
        s(&to),
        "--format",
        "qcow2",
    ]);
    assert_eq!(r["status"], "Completed", "{r:#}");
    let back = env.path("odd-back.raw");
    to_raw(&to.join("odd-disk0.qcow2"), "qcow2", &back);
    let back = std::fs::read(&back).expect("read");
    assert_eq!(back.len(), 1_000_448);
    assert!(back[..bytes.len()] == bytes[..] && back[bytes.len()..].iter().all(|b| *b == 0));
}

#[test]
fn a_vault_read_limit_keeps_a_backup_under_its_rate() {
    if !tools() {
        return;
    }
    let env = Env::with_config(|dir| {
        let images = dir.join("slow-images");
        std::fs::create_dir(&images).expect("mkdir");
        format!(
            "[[vault]]\nname = \"slow\"\nregion = \"lab-1\"\nchunk_size_kib = 64\nread_limit_mib_s = 8\n\
             source = {{ kind = \"images\", path = \"{}\", region = \"lab-1\" }}\n",
            images.display()
        )
    });
    let image = env.path("slow-images").join("db01.raw");
    sh("qemu-img", &["create", "-q", "-f", "raw", s(&image), "16M"]);
    write_random(&image, 0, 6, 9);
    env.protect(&["db01"]);
    // 6 MiB at 8 MiB/s: three quarters of a second at least, however fast the disk.
    let t0 = std::time::Instant::now();
    let job = env.json(&["backup", "db01"]);
    let took = t0.elapsed();
    assert_eq!(job["status"], "Completed", "{job:#}");
    assert_eq!(details(&job)["bytes_read"], 6 << 20, "{job:#}");
    assert!(
        took >= std::time::Duration::from_millis(740),
        "6 MiB read in {took:?} under an 8 MiB/s limit"
    );
}
