//! `vmvault key …`: the key slots of an encrypted vault. Secrets never come from the
//! command line: a passphrase is read from a file (`--new-passphrase-file`) or asked on the
//! terminal, and the paper key goes to stdout only when asked for (`export --paper`).

use super::args::{KeyAdd, KeyChangePassphrase, KeyCommand, KeyExport, KeySlotArg};
use super::table::Table;
use super::{open_owner, print_json, AppError, Result, Setup};
use crate::engine::{Engine, KeySlotInfo, OpenMode};
use crate::fmt;
use crate::vault::keys::{self, KeyError, SlotKind};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

pub(super) fn key(setup: &Setup, cmd: KeyCommand) -> Result<u8> {
    match cmd {
        KeyCommand::List(a) => list(setup, a.json),
        KeyCommand::Add(a) => add(setup, &a),
        KeyCommand::Remove(a) => remove(setup, &a),
        KeyCommand::ChangePassphrase(a) => change_passphrase(setup, &a),
        KeyCommand::Export(a) => export(setup, &a),
    }
}

fn kind_name(kind: SlotKind) -> &'static str {
    match kind {
        SlotKind::Passphrase => "passphrase",
        SlotKind::Keyfile => "key_file",
    }
}

fn slot_json(s: &KeySlotInfo) -> Value {
    json!({
        "id": s.id,
        "kind": kind_name(s.kind),
        "label": s.label,
        "created": fmt::rfc3339(s.created),
        "kdf": s.kdf.map(|k| json!({"alg": "argon2id", "m_kib": k.m_kib, "t": k.t, "p": k.p})),
        "opened_by_key_file": s.opened_by_key_file,
    })
}

fn list(setup: &Setup, as_json: bool) -> Result<u8> {
    // Slots are public metadata: listing them needs neither the keys nor the lock.
    let engine = setup.open(OpenMode::ReadOnly)?;
    let keys = engine.keys_overview()?;
    if !keys.encrypted {
        // Says why there is nothing to list.
        engine.key_slots()?;
    }
    let (slots, key_file, exists) = (&keys.slots, &keys.key_file, keys.key_file_exists);
    if as_json {
        print_json(&json!({
            "vault": engine.vault_name(),
            "encryption": "aes-256-gcm",
            "key_file": key_file.as_ref().map(|p| p.display().to_string()),
            "key_file_exists": exists,
            "slots": slots.iter().map(slot_json).collect::<Vec<_>>(),
            "unreadable": keys.unreadable,
        }));
        return Ok(0);
    }
    let mut t = Table::new(&["SLOT", "KIND", "LABEL", "CREATED", "KDF", "OPENED BY"]);
    for s in slots {
        t.row(vec![
            s.id.clone(),
            s.kind.to_string(),
            s.label.clone(),
            fmt::time(s.created),
            s.kdf.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
            match s.kind {
                SlotKind::Keyfile if s.opened_by_key_file => "the vault's key file".into(),
                SlotKind::Keyfile => "another key file".into(),
                SlotKind::Passphrase => "its passphrase".into(),
            },
        ]);
    }
    out!("{t}");
    for problem in &keys.unreadable {
        outln!("warning: {problem}; it opens nothing (remove it if it is not a key slot)");
    }
    match key_file {
        Some(p) if exists => outln!("Key file: {}", p.display()),
        Some(p) => outln!("Key file: {} (missing)", p.display()),
        None => outln!("Key file: none configured"),
    }
    if slots.is_empty() {
        // No slot: nothing opens the vault but its paper key, and `export --paper` needs the
        // vault open. Say so instead of advice that cannot work.
        outln!(
            "warning: the vault has no key slot (its keys/ folder is missing or empty): nothing opens it but its paper key. Put keys/ back from a copy of the vault folder, or open it with the paper key (--paper-key-file FILE) and add a key (`vmvault key add`)."
        );
        return Ok(1);
    }
    outln!(
        "Losing every key (the key file, each passphrase and the paper key) loses the backups: nobody can read them. `vmvault key export --paper` prints the paper key."
    );
    Ok(0)
}

/// A passphrase problem is the user's to fix; a terminal that fails is a failure.
fn key_error(e: KeyError) -> AppError {
    match e {
        KeyError::Environment { .. } => AppError::failed(e.to_string()),
        e => AppError::usage(e.to_string()),
    }
}

/// The new passphrase: the first line of `file`, else asked twice on the terminal.
fn new_passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    match file {
        Some(f) => keys::read_passphrase_file(f).map_err(key_error),
        None if std::io::stdin().is_terminal() => {
            keys::prompt_new_passphrase().map_err(key_error)
        }
        None => Err(AppError::usage(
            "no new passphrase given: put it on the first line of a file and give --new-passphrase-file FILE, or run on a terminal to be asked (twice). A passphrase is never taken from the command line",
        )),
    }
}

/// The engine of an encrypted vault this process owns (refused at once otherwise, before
/// anything is asked).
fn open_keys(setup: &Setup) -> Result<Engine> {
    let engine = open_owner(setup)?;
    engine.key_slots()?;
    Ok(engine)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    crate::fsx::absolute(path).map_err(|e| AppError::usage(e.to_string()))
}

fn report_added(s: &KeySlotInfo, key_file: Option<&Path>, as_json: bool) {
    if as_json {
        let mut v = slot_json(s);
        if let Some(p) = key_file {
            v["key_file"] = json!(p.display().to_string());
        }
        print_json(&v);
        return;
    }
    match key_file {
        Some(p) => {
            outln!("Added key slot {} ({}, \"{}\").", s.id, s.kind, s.label);
            outln!(
                "Key file written to {} (mode 0600). Keep it apart from the vault: whoever has it reads the backups.",
                p.display()
            );
        }
        None => outln!(
            "Added key slot {} ({}, \"{}\", {}).",
            s.id,
            s.kind,
            s.label,
            s.kdf.map(|k| k.to_string()).unwrap_or_default()
        ),
    }
}

fn add(setup: &Setup, a: &KeyAdd) -> Result<u8> {
    let engine = open_keys(setup)?;
    match &a.key_file {
        Some(path) => {
            let path = absolute(path)?;
            let label = a.label.clone().unwrap_or_else(|| {
                format!(
                    "key file {}",
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            });
            let label = fmt::cut(&fmt::escape(&label), 40).into_owned();
            let s = engine.add_key_file_slot(&path, &label)?;
            report_added(&s, Some(&path), a.json);
        }
        None => {
            let pass = new_passphrase(a.new_passphrase_file.as_deref())?;
            let label = a.label.as_deref().unwrap_or("passphrase");
            let s = engine.add_passphrase_slot(&pass, label)?;
            report_added(&s, None, a.json);
        }
    }
    Ok(0)
}

fn remove(setup: &Setup, a: &KeySlotArg) -> Result<u8> {
    let engine = open_keys(setup)?;
    let s = engine.remove_key_slot(&a.id)?;
    if a.json {
        print_json(&json!({ "removed": slot_json(&s) }));
    } else {
        outln!("Removed key slot {} ({}, \"{}\").", s.id, s.kind, s.label);
        if s.kind == SlotKind::Keyfile {
            outln!("Its key file no longer opens the vault (it can be deleted).");
        }
    }
    Ok(0)
}

fn change_passphrase(setup: &Setup, a: &KeyChangePassphrase) -> Result<u8> {
    let engine = open_keys(setup)?;
    // Refused before the new passphrase is asked.
    let old = engine.key_slot(&a.id)?;
    if old.kind != SlotKind::Passphrase {
        return Err(AppError::usage(format!(
            "key slot {} is a {} slot, not a passphrase slot; `vmvault key list` shows each slot's kind",
            old.id, old.kind
        )));
    }
    let pass = new_passphrase(a.new_passphrase_file.as_deref())?;
    let s = engine.change_passphrase(&old.id, &pass)?;
    if a.json {
        print_json(&json!({ "removed": old.id, "added": slot_json(&s) }));
    } else {
        outln!(
            "Changed the passphrase of \"{}\": slot {} replaces slot {}.",
            s.label,
            s.id,
            old.id
        );
    }
    Ok(0)
}

fn export(setup: &Setup, a: &KeyExport) -> Result<u8> {
    let engine = open_keys(setup)?;
    if let Some(path) = &a.key_file {
        let path = absolute(path)?;
        let label = a.label.as_deref().unwrap_or("exported key file");
        let s = engine.add_key_file_slot(&path, label)?;
        report_added(&s, Some(&path), a.json);
        if !a.json {
            outln!(
                "It opens the vault while its key slot is there; against the loss of the vault's keys/ folder keep the paper key too (`vmvault key export --paper`)."
            );
        }
        return Ok(0);
    }
    let paper = engine.paper_key()?;
    let text = if a.json {
        // A JSON string needs no escaping for these characters (0-9, A-Z and '-').
        Zeroizing::new(format!(
            "{{\n  \"vault\": {},\n  \"paper_key\": \"{}\"\n}}\n",
            json!(engine.vault_name()),
            paper.as_str()
        ))
    } else {
        Zeroizing::new(format!("{}\n", paper.as_str()))
    };
    write_secret(&text)?;
    errln!(
        "This is the paper key of vault {}: the vault's master key itself. It opens the vault when every key slot is lost (--paper-key-file FILE or VMVAULT_PAPER_KEY_FILE), and whoever holds it can read every backup: print it or write it down, keep it offline and apart from the vault, and do not leave it in a file or a terminal's scrollback.",
        engine.vault_name()
    );
    Ok(0)
}

/// Writes secret text to stdout straight from its wiped buffer (no escaped copy is made;
/// the text is printable ASCII).
fn write_secret(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| AppError::failed(format!("writing the paper key to stdout: {e}")))
}
