//! Keys of an encrypted vault from the command line: `vmvault key list|add|remove|
//! change-passphrase|export`, opening with a passphrase instead of the key file, and with
//! the paper key when every key slot is lost.

mod common;
mod tui_support;
use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PASS: &str = "correct horse battery staple";

/// A file holding `text`, mode 0600.
fn secret_file(env: &Env, name: &str, text: &str) -> PathBuf {
    let p = env.path(name);
    std::fs::write(&p, text).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// `key list --json` of the selected vault.
fn keys(env: &Env, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.extend(["key", "list"]);
    env.json(&args)
}

fn slots(list: &Value) -> &Vec<Value> {
    list["slots"].as_array().expect("slots")
}

fn key_file(env: &Env) -> PathBuf {
    PathBuf::from(keys(env, &[])["key_file"].as_str().expect("key file"))
}

/// Moves the vault's key file away (returns where it went).
fn move_key_file_away(env: &Env) -> PathBuf {
    let kf = key_file(env);
    let away = env.path("key-file-moved-away");
    std::fs::rename(&kf, &away).expect("move the key file");
    away
}

/// Restores `point` of app01 with the global flags `extra` (the vault's keys) and checks
/// every disk equals what the simulator held at the point's time.
fn restore_matches(env: &Env, extra: &[&str], point: &str, tag: &str) {
    let to = env.path(&format!("restore-{tag}"));
    let mut args = extra.to_vec();
    args.extend(["restore", "app01", "--point", point, "--to", s(&to)]);
    env.ok(&args);
    let time = env.point_time("app01", point);
    let items = env.json(&["items"]);
    for d in item(&items, "app01")["disks"].as_array().expect("disks") {
        let n = d["index"].as_u64().expect("index").to_string();
        let export = env.path(&format!("export-{tag}-{n}.raw"));
        env.ok(&[
            "sim",
            "export-disk",
            "app01",
            "--disk",
            &n,
            "--at",
            &time,
            "--to",
            s(&export),
        ]);
        assert_files_equal(&to.join(format!("app01-disk{n}.raw")), &export);
    }
}

fn stderr_of(env: &Env, code: i32, args: &[&str]) -> String {
    env.fails_with(code, args).1
}

#[test]
fn a_passphrase_alone_opens_the_vault_to_back_up_and_restore() {
    let env = Env::new();
    env.protect(&["app01"]);
    let list = keys(&env, &[]);
    assert_eq!(list["encryption"], "aes-256-gcm");
    assert_eq!(list["key_file_exists"], true);
    let first = &slots(&list)[0];
    assert_eq!(slots(&list).len(), 1, "{list:#}");
    assert_eq!(
        (&first["kind"], &first["opened_by_key_file"], &first["kdf"]),
        (&"key_file".into(), &true.into(), &Value::Null)
    );

    let pw = secret_file(&env, "pw.txt", &format!("{PASS}\n"));
    let added = env.json(&[
        "key",
        "add",
        "--passphrase",
        "--new-passphrase-file",
        s(&pw),
        "--label",
        "admin",
    ]);
    assert_eq!(added["kind"], "passphrase", "{added:#}");
    assert_eq!(added["label"], "admin");
    assert_eq!(
        added["kdf"],
        serde_json::json!({"alg": "argon2id", "m_kib": 65536, "t": 3, "p": 1})
    );
    assert_eq!(slots(&keys(&env, &[])).len(), 2);

    move_key_file_away(&env);
    // Nothing that opens it: refused, with what to give.
    let err = stderr_of(&env, 1, &["backup", "app01"]);
    assert!(
        err.contains("no key file at") && err.contains("--passphrase-file"),
        "{err}"
    );
    // Listing needs no key.
    assert_eq!(slots(&keys(&env, &[])).len(), 2);

    // The passphrase alone: a backup, then a restore bit-identical to the source.
    let job = env.json(&["--passphrase-file", s(&pw), "backup", "app01"]);
    assert_eq!(job["status"], "Completed", "{job:#}");
    let point = job["details"]["recovery_point"]
        .as_str()
        .expect("point")
        .to_string();
    restore_matches(&env, &["--passphrase-file", s(&pw)], &point, "pass");
    // VMVAULT_PASSPHRASE_FILE works as the flag does.
    let out = env
        .cmd()
        .env("VMVAULT_PASSPHRASE_FILE", &pw)
        .args(["verify", "app01", "--json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // The passphrase is nowhere in the vault, the catalog or the log.
    for f in files_under(&env.data) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(PASS.len()).any(|w| w == PASS.as_bytes()),
            "the passphrase is in {}",
            f.display()
        );
    }
}

#[test]
fn a_wrong_passphrase_is_a_clear_error_and_changes_nothing() {
    let env = Env::new();
    env.ok(&["discover"]);
    let pw = secret_file(&env, "pw.txt", &format!("{PASS}\n"));
    env.ok(&[
        "key",
        "add",
        "--passphrase",
        "--new-passphrase-file",
        s(&pw),
    ]);
    move_key_file_away(&env);
    let wrong = secret_file(&env, "wrong.txt", "Correct horse battery staple\n");
    let err = stderr_of(&env, 1, &["--passphrase-file", s(&wrong), "discover"]);
    assert!(
        err.contains("is wrong") && err.contains("wrong.txt"),
        "{err}"
    );
    let empty = secret_file(&env, "empty.txt", "\n");
    let err = stderr_of(&env, 1, &["--passphrase-file", s(&empty), "discover"]);
    assert!(err.contains("is empty"), "{err}");
    let err = stderr_of(&env, 2, &["--passphrase-file", "", "discover"]);
    assert!(err.contains("empty path"), "{err}");
    assert_eq!(slots(&keys(&env, &[])).len(), 2);
    env.ok(&["--passphrase-file", s(&pw), "discover"]);
}

#[test]
fn the_last_slot_and_the_only_way_in_are_never_removed() {
    let env = Env::new();
    env.ok(&["discover"]);
    let first = slots(&keys(&env, &[]))[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let err = stderr_of(&env, 2, &["key", "remove", &first]);
    assert!(err.contains("last key slot"), "{err}");
    assert_eq!(slots(&keys(&env, &[])).len(), 1, "nothing removed");
    // A stray file in keys/ is no slot: listed as such, and it does not count.
    let stray = env.vault_dir("test-we").join("keys").join("notes.txt");
    std::fs::write(&stray, "not a slot").expect("write");
    let list = keys(&env, &[]);
    assert_eq!(slots(&list).len(), 1, "{list:#}");
    assert_eq!(
        list["unreadable"].as_array().map(Vec::len),
        Some(1),
        "{list:#}"
    );
    assert!(env.ok(&["key", "list"]).contains("warning:"));
    let err = stderr_of(&env, 2, &["key", "remove", &first]);
    assert!(err.contains("last key slot"), "{err}");
    std::fs::remove_file(&stray).expect("remove");

    // A second key file elsewhere: the vault's own key file does not open its slot, so the
    // slot that opened the vault stays.
    let usb = env.path("usb.key");
    let added = env.json(&["key", "add", "--key-file", s(&usb), "--label", "usb stick"]);
    assert_eq!(added["kind"], "key_file");
    assert_eq!(
        std::fs::metadata(&usb)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let err = stderr_of(&env, 2, &["key", "remove", &first[..6]]);
    assert!(
        err.contains("opened vault test-we") && err.contains("key add --passphrase"),
        "{err}"
    );
    assert_eq!(slots(&keys(&env, &[])).len(), 2, "nothing removed");
    // Unknown and malformed slot ids.
    let err = stderr_of(&env, 2, &["key", "remove", "ffffffff"]);
    assert!(err.contains("no key slot"), "{err}");
    stderr_of(&env, 2, &["key", "remove", "xyz"]);

    // The usb key file is not the one the vault opens with: removing its slot is fine.
    let usb_id = added["id"].as_str().expect("id");
    let removed = env.json(&["key", "remove", usb_id]);
    assert_eq!(removed["removed"]["id"], usb_id);
    assert_eq!(slots(&keys(&env, &[])).len(), 1);
}

#[test]
fn change_passphrase_replaces_the_slot_and_only_the_new_passphrase_opens() {
    let env = Env::new();
    env.ok(&["discover"]);
    let old = secret_file(&env, "old.txt", "old secret\n");
    let new = secret_file(&env, "new.txt", "new secret\n");
    let added = env.json(&[
        "key",
        "add",
        "--passphrase",
        "--new-passphrase-file",
        s(&old),
        "--label",
        "ops",
    ]);
    let old_id = added["id"].as_str().expect("id").to_string();
    // A key-file slot has no passphrase to change.
    let kf_id = slots(&keys(&env, &[]))
        .iter()
        .find(|s| s["kind"] == "key_file")
        .expect("key-file slot")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let err = stderr_of(
        &env,
        2,
        &[
            "key",
            "change-passphrase",
            &kf_id,
            "--new-passphrase-file",
            s(&new),
        ],
    );
    assert!(err.contains("not a passphrase slot"), "{err}");
    // Without a terminal and without a file there is nothing to read the new one from.
    let err = stderr_of(&env, 2, &["key", "change-passphrase", &old_id]);
    assert!(err.contains("--new-passphrase-file"), "{err}");

    let changed = env.json(&[
        "key",
        "change-passphrase",
        &old_id[..8],
        "--new-passphrase-file",
        s(&new),
    ]);
    assert_eq!(changed["removed"], old_id.as_str());
    assert_eq!(changed["added"]["label"], "ops");
    let list = keys(&env, &[]);
    let ids: Vec<&str> = slots(&list)
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2, "{list:#}");
    assert!(!ids.contains(&old_id.as_str()), "{list:#}");
    assert!(ids.contains(&changed["added"]["id"].as_str().expect("id")));

    move_key_file_away(&env);
    let err = stderr_of(&env, 1, &["--passphrase-file", s(&old), "prune"]);
    assert!(err.contains("is wrong"), "{err}");
    env.ok(&["--passphrase-file", s(&new), "prune"]);
}

#[test]
fn the_paper_key_opens_the_vault_after_every_slot_and_the_key_file_are_lost() {
    let env = Env::new();
    env.protect(&["app01"]);
    let first = env.backup("app01");
    let out = env.run(&["key", "export", "--paper"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let paper = String::from_utf8(out.stdout).expect("utf8");
    let advice = String::from_utf8_lossy(&out.stderr);
    assert!(advice.contains("paper key of vault test-we"), "{advice}");
    let paper = paper.trim().to_string();
    assert_eq!(paper.len(), 14 * 4 + 13, "{paper}");
    let json = env.json(&["key", "export", "--paper"]);
    assert_eq!(json["paper_key"], paper.as_str());

    // Every slot and the key file lost.
    let kf = key_file(&env);
    std::fs::remove_file(&kf).expect("remove the key file");
    let slot_dir = env.vault_dir("test-we").join("keys");
    for e in std::fs::read_dir(&slot_dir).expect("keys/") {
        std::fs::remove_file(e.expect("entry").path()).expect("remove a slot");
    }
    // Listings still work; changing the vault says what is lost and what opens it.
    env.json(&["points", "app01"]);
    let err = stderr_of(&env, 1, &["backup", "app01"]);
    assert!(
        err.contains("key slots") && err.contains("--paper-key-file"),
        "{err}"
    );

    // A paper key file others can read is refused with the fix.
    let open_file = env.path("paper-open.txt");
    std::fs::write(&open_file, format!("{paper}\n")).expect("write");
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = stderr_of(
        &env,
        1,
        &["--paper-key-file", s(&open_file), "backup", "app01"],
    );
    assert!(err.contains("chmod 600"), "{err}");
    // A mistyped one is caught by its checksum.
    let typo = if paper.starts_with('X') { "Y" } else { "X" };
    let typo = secret_file(&env, "typo.txt", &format!("{typo}{}", &paper[1..]));
    let err = stderr_of(&env, 1, &["--paper-key-file", s(&typo), "backup", "app01"]);
    assert!(err.contains("checksum"), "{err}");
    // Another vault's paper key is refused.
    let other = env.run(&["--vault", "test-eus", "key", "export", "--paper"]);
    assert_eq!(other.status.code(), Some(0), "{other:?}");
    let other = secret_file(&env, "other.txt", &String::from_utf8_lossy(&other.stdout));
    let err = stderr_of(&env, 1, &["--paper-key-file", s(&other), "backup", "app01"]);
    assert!(err.contains("not this vault's key"), "{err}");

    // The paper key opens it: a backup, and a new key file where the config expects it.
    let pk = secret_file(&env, "paper.txt", &format!("{paper}\n"));
    let out = env.run(&["--paper-key-file", s(&pk), "backup", "app01", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no key slot left"), "{said}");
    let job: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(job["status"], "Completed", "{job:#}");
    env.ok(&[
        "--paper-key-file",
        s(&pk),
        "key",
        "add",
        "--key-file",
        s(&kf),
    ]);
    // From now on the key file alone opens it again, and both points restore.
    let job = env.json(&["backup", "app01"]);
    assert_eq!(job["status"], "Completed", "{job:#}");
    restore_matches(&env, &[], &first, "paper-first");
    let last = job["details"]["recovery_point"].as_str().expect("point");
    restore_matches(&env, &[], last, "paper-last");
    // Through VMVAULT_PAPER_KEY_FILE as well.
    let out = env
        .cmd()
        .env("VMVAULT_PAPER_KEY_FILE", &pk)
        .args(["prune", "--json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn key_files_are_written_new_and_exported_key_files_open_the_vault() {
    let env = Env::new();
    env.ok(&["discover"]);
    // Never over an existing file.
    let taken = env.path("taken.key");
    std::fs::write(&taken, "precious").expect("write");
    let err = stderr_of(&env, 2, &["key", "add", "--key-file", s(&taken)]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&taken).expect("read"), b"precious");
    let err = stderr_of(
        &env,
        2,
        &[
            "key",
            "export",
            "--key-file",
            s(&env.path("missing/dir/x.key")),
        ],
    );
    assert!(err.contains("missing"), "{err}");
    assert_eq!(slots(&keys(&env, &[])).len(), 1, "no slot without its file");

    let exported = env.path("exported.key");
    let out = env.ok(&["key", "export", "--key-file", s(&exported)]);
    assert!(out.contains("paper key"), "{out}");
    assert_eq!(
        std::fs::metadata(&exported)
            .expect("exported")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let list = keys(&env, &[]);
    assert!(
        slots(&list)
            .iter()
            .any(|s| s["label"] == "exported key file" && s["opened_by_key_file"] == false),
        "{list:#}"
    );
    // The exported key file opens the vault once the config names it.
    move_key_file_away(&env);
    let config = std::fs::read_to_string(&env.config).expect("config");
    let config = config.replacen(
        "region = \"westeurope\"\n",
        &format!("region = \"westeurope\"\nkey_file = \"{}\"\n", s(&exported)),
        1,
    );
    std::fs::write(&env.config, config).expect("config");
    env.ok(&["discover"]);

    // Usage: a way to add is required, and the new passphrase is never an argument.
    stderr_of(&env, 2, &["key", "add"]);
    stderr_of(&env, 2, &["key", "add", "--passphrase", "s3cret"]);
    let err = stderr_of(&env, 2, &["key", "add", "--passphrase"]);
    assert!(err.contains("--new-passphrase-file"), "{err}");
    stderr_of(&env, 2, &["key", "export"]);
}

#[test]
fn key_commands_on_an_unencrypted_vault_say_so() {
    let env = Env::with_config(|_| {
        format!(
            "[[vault]]\nname = \"plain\"\nregion = \"westeurope\"\nencryption = \"none\"\nsource = {{ {FAST_SIM} }}\n"
        )
    });
    env.ok(&["discover"]);
    let pw = secret_file(&env, "pw.txt", "pw\n");
    let k = env.path("k.key");
    let commands: [&[&str]; 6] = [
        &["key", "list"],
        &[
            "key",
            "add",
            "--passphrase",
            "--new-passphrase-file",
            s(&pw),
        ],
        &["key", "add", "--key-file", s(&k)],
        &["key", "remove", "abcd1234"],
        &[
            "key",
            "change-passphrase",
            "abcd1234",
            "--new-passphrase-file",
            s(&pw),
        ],
        &["key", "export", "--paper"],
    ];
    for args in commands {
        let err = stderr_of(&env, 2, args);
        assert!(
            err.contains("vault plain is not encrypted") && err.contains("encryption = \"none\""),
            "{args:?}: {err}"
        );
    }
    assert!(!k.exists());
    let vaults = env.ok(&["vaults"]);
    assert!(vaults.contains("v2 unencrypted"), "{vaults}");
}

#[test]
fn key_list_says_where_the_key_file_is_and_what_losing_it_means() {
    let env = Env::new();
    env.ok(&["discover"]);
    let out = env.ok(&["key", "list"]);
    let kf = key_file(&env);
    assert!(
        out.contains(&format!("Key file: {}", kf.display())),
        "{out}"
    );
    assert!(out.contains("the vault's key file"), "{out}");
    assert!(out.contains("loses the backups"), "{out}");
    assert!(
        Path::new(&kf).starts_with(env.dir.path().join("keys")),
        "{}",
        kf.display()
    );
}

/// On a terminal, a new passphrase is asked twice without echo, and a vault the key file
/// does not open asks for its passphrase.
#[test]
fn passphrases_are_asked_on_a_terminal_without_echo() {
    use tui_support::{Console, TIMEOUT};
    const SECRET: &str = "pty secret 7";
    let env = Env::new();
    env.ok(&["discover"]);
    let config = s(&env.config).to_string();
    let data = s(&env.data).to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["--config", config.as_str(), "--data-dir", data.as_str()];
        all.extend_from_slice(args);
        Console::spawn(&all, &[], 100, 30)
    };
    // Two different passphrases: refused, nothing added.
    let mut c = run(&["key", "add", "--passphrase"]);
    c.wait_for("New passphrase:", TIMEOUT);
    c.send("one\r");
    c.wait_for("Repeat the new passphrase:", TIMEOUT);
    c.send("two\r");
    assert_eq!(c.wait_exit(TIMEOUT), 2);
    assert!(c.screen().contains("differ"), "{}", c.screen());
    assert_eq!(slots(&keys(&env, &[])).len(), 1);

    let mut c = run(&["key", "add", "--passphrase", "--label", "pty"]);
    c.wait_for("New passphrase:", TIMEOUT);
    c.send(&format!("{SECRET}\r"));
    c.wait_for("Repeat the new passphrase:", TIMEOUT);
    c.send(&format!("{SECRET}\r"));
    assert_eq!(c.wait_exit(TIMEOUT), 0);
    let screen = c.screen();
    assert!(screen.contains("Added key slot"), "{screen}");
    assert!(!screen.contains(SECRET), "echoed: {screen}");

    move_key_file_away(&env);
    let mut c = run(&["discover"]);
    c.wait_for("Passphrase of vault", TIMEOUT);
    c.send(&format!("{SECRET}\r"));
    assert_eq!(c.wait_exit(TIMEOUT), 0);
    assert!(!c.screen().contains(SECRET), "{}", c.screen());
    let mut c = run(&["discover"]);
    c.wait_for("Passphrase of vault", TIMEOUT);
    c.send("not it\r");
    assert_eq!(c.wait_exit(TIMEOUT), 1);
    assert!(
        c.screen().contains("the passphrase typed is wrong"),
        "{}",
        c.screen()
    );
}
