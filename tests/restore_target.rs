//! Restores never replace, never follow, and say whose problem it is (issue 11): names
//! planted in the target folder (before and during a restore), a full or read-only target,
//! a hostile user swapping the converter's files for symlinks, and a killed conversion.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// A vault with app01 backed up once; returns the point.
fn backed_up() -> (Env, String) {
    let env = Env::new();
    env.protect(&["app01"]);
    let point = env.backup("app01");
    (env, point)
}

fn restore_args<'a>(point: &'a str, to: &'a Path, format: &'a str) -> Vec<&'a str> {
    vec![
        "restore",
        "app01",
        "--point",
        point,
        "--to",
        s(to),
        "--format",
        format,
    ]
}

/// Names in `dir` (hidden ones too).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_taken_name_a_leftover_or_a_file_is_refused_before_the_job() {
    let (env, point) = backed_up();
    let victim = env.path("victim");
    std::fs::write(&victim, b"precious").expect("write");
    for format in ["raw", "qcow2", "vhd", "vmdk"] {
        let to = env.path(&format!("to-{format}"));
        std::fs::create_dir(&to).expect("mkdir");
        // A dangling symlink at the target's name counts as taken.
        let image = to.join(format!("app01-disk0.{format}"));
        std::os::unix::fs::symlink(env.path("nothing"), &image).expect("symlink");
        let (_, err) = env.fails_with(2, &restore_args(&point, &to, format));
        assert!(
            err.contains("already exists (a symbolic link)") && err.contains("never replaces"),
            "{format}: {err}"
        );
        assert!(std::fs::symlink_metadata(&image)
            .expect("kept")
            .is_symlink());
        assert!(!env.path("nothing").exists());
        std::fs::remove_file(&image).expect("rm");
        // A work file of another (or an interrupted) restore, even a symlink to a victim.
        let work = if format == "raw" {
            to.join("app01-disk0.raw.partial")
        } else {
            to.join(format!(".app01-disk0.{format}.vmvault-convert"))
        };
        std::os::unix::fs::symlink(&victim, &work).expect("symlink");
        let (_, err) = env.fails_with(2, &restore_args(&point, &to, format));
        assert!(
            err.contains("another restore into this folder is running") && err.contains("remove"),
            "{format}: {err}"
        );
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(names(&to).len(), 1, "{:?}", names(&to));
    }
    // A file where the folder should be, or above it.
    let file = env.path("a-file");
    std::fs::write(&file, b"x").expect("write");
    for to in [file.clone(), file.join("sub")] {
        let (_, err) = env.fails_with(2, &restore_args(&point, &to, "raw"));
        assert!(err.contains("give the path of a folder"), "{err}");
        assert!(!err.contains("verify"), "{err}");
    }
    assert_eq!(std::fs::read(&file).expect("file"), b"x");
}

#[test]
fn a_full_target_fails_the_job_as_the_target_s_problem_and_a_read_only_one_is_refused() {
    let (env, point) = backed_up();
    let Some(small) = Tmpfs::mount(&env, "small", "size=1m,mode=0700") else {
        return;
    };
    let to = small.0.join("restore");
    let (_, err) = env.fails_with(1, &restore_args(&point, &to, "raw"));
    assert!(err.contains("RestoreTargetFull"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("df -h") && err.contains("are free there now"),
        "{err}"
    );
    assert!(err.contains("The recovery point is intact"), "{err}");
    assert!(!err.contains("verify") && !err.contains("Damaged"), "{err}");
    assert_eq!(
        names(&to),
        Vec::<String>::new(),
        "nothing half-written is left"
    );
    let jobs = env.json(&["jobs", "--operation", "Restore", "--json"]);
    assert_eq!(jobs[0]["status"], "Failed", "{jobs:#}");
    assert_eq!(jobs[0]["error"]["code"], "RestoreTargetFull", "{jobs:#}");

    let Some(ro) = Tmpfs::mount(&env, "ro", "size=1m,ro") else {
        return;
    };
    let (_, err) = env.fails_with(2, &restore_args(&point, &ro.0, "raw"));
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("remount"), "{err}");

    // Elsewhere the same point restores.
    env.assert_restore_matches_source("app01", &point, "after");
}

#[test]
fn a_converted_restore_never_writes_through_what_others_plant_in_the_target_folder() {
    if !require_tool("qemu-img") {
        return;
    }
    let (env, point) = backed_up();
    let victim = env.path("victim");
    std::fs::write(&victim, b"precious").expect("write");
    let to = env.path("to");
    std::fs::create_dir(&to).expect("mkdir");
    // A qemu-img that first plays a user who can write the target folder: each file there
    // but the raw source is moved away and replaced by a symlink to the victim, and each
    // folder by a folder of such symlinks (at the names it held and the ones a converter
    // might use).
    let real = sh("sh", &["-c", "command -v qemu-img"]).trim().to_string();
    let bin = env.path("bin");
    let path = path_with_only(&bin, &["sh", "mv", "mkdir", "ln", "ls"]);
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = convert ]; then\n\
           for e in \"$TARGET\"/* \"$TARGET\"/.[!.]*; do\n\
             [ -e \"$e\" ] || [ -L \"$e\" ] || continue\n\
             if [ -d \"$e\" ] && [ ! -L \"$e\" ]; then\n\
               mv \"$e\" \"$e.moved\"; mkdir \"$e\"\n\
               for n in $(ls -A \"$e.moved\") disk.raw disk.raw.partial converted; do ln -sf \"$VICTIM\" \"$e/$n\"; done\n\
             else\n\
               case \"$e\" in *.raw*) ;; *) mv \"$e\" \"$e.moved\"; ln -s \"$VICTIM\" \"$e\";; esac\n\
             fi\n\
           done\n\
         fi\n\
         exec {real} \"$@\"\n"
    );
    let wrapper = bin.join("qemu-img");
    std::fs::write(&wrapper, script).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = env
        .cmd()
        .env("PATH", &path)
        .env("TARGET", &to)
        .env("VICTIM", &victim)
        .args(restore_args(&point, &to, "qcow2"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    let kept = std::fs::read(&victim).expect("victim");
    assert!(
        kept == b"precious",
        "the victim was written ({} bytes): {err}",
        kept.len()
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The image is the point's disk, and the moved work folder holds nothing of ours.
    let image = to.join("app01-disk0.qcow2");
    assert!(!std::fs::symlink_metadata(&image)
        .expect("image")
        .is_symlink());
    let back = env.path("back.raw");
    to_raw(&image, "qcow2", &back);
    let time = env.point_time("app01", &point);
    let export = env.path("export.raw");
    env.ok(&[
        "sim",
        "export-disk",
        "app01",
        "--disk",
        "0",
        "--at",
        &time,
        "--to",
        s(&export),
    ]);
    assert_files_equal(&back, &export);
    let moved = to.join(".app01-disk0.qcow2.vmvault-convert.moved");
    assert!(moved.is_dir(), "the wrapper ran: {:?}", names(&to));
    assert_eq!(names(&moved), Vec::<String>::new());
    // What they put in its place is theirs: left alone.
    let planted = to.join(".app01-disk0.qcow2.vmvault-convert");
    assert!(names(&planted).contains(&"converted".to_string()));
}

#[test]
fn a_failed_conversion_leaves_nothing_in_the_target_folder() {
    let (env, point) = backed_up();
    let to = env.path("to");
    let path = path_with_only(&env.path("bin"), &[]);
    let out = env
        .cmd()
        .env("PATH", &path)
        .args(restore_args(&point, &to, "vmdk"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("qemu-img not found"), "{err}");
    assert_eq!(names(&to), Vec::<String>::new());
}

#[test]
fn a_killed_conversion_leaves_nothing_once_the_vault_reopens() {
    if !require_tool("qemu-img") {
        return;
    }
    let (env, point) = backed_up();
    let work = |dir: &Path| {
        names(dir)
            .into_iter()
            .any(|n| n.contains("vmvault-convert"))
    };
    for attempt in 0..30 {
        let dir = env.path(&format!("r{attempt}"));
        let mut child = env
            .std_cmd()
            .args(restore_args(&point, &dir, "qcow2"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let caught = loop {
            if work(&dir) {
                child.kill().expect("kill"); // SIGKILL
                child.wait().expect("wait");
                break true;
            }
            if child.try_wait().expect("wait").is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if !caught || !work(&dir) {
            continue; // finished before the kill landed
        }
        // The next owner of the vault removes the work folder; the same folder then takes
        // the restore.
        env.ok(&restore_args(&point, &dir, "qcow2"));
        assert_eq!(names(&dir), vec!["app01-disk0.qcow2".to_string()]);
        return;
    }
    panic!("no conversion was caught half-way in 30 attempts");
}
