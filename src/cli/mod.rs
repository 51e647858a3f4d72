//! The command-line front end: one subcommand per step of the portal flow, `--json` for
//! scripts, a progress bar on a terminal. It only sends commands to the engine and prints
//! what comes back.

/// Prints to stdout; a closed pipe (`vmvault jobs | head`) ends the process quietly, as
/// SIGPIPE would, instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*), false) };
}
macro_rules! outln {
    () => { $crate::cli::write_stdout(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli::write_stdout(format_args!($($t)*), true) };
}
/// A line on stderr, escaped like stdout.
macro_rules! errln {
    ($($t:tt)*) => { $crate::app::write_stderr(format_args!($($t)*)) };
}

pub mod args;
#[cfg(test)]
mod input_proptests;
mod json;
mod keys;
mod progress;
mod table;

pub use crate::app::{exit, AppError, Setup};
use crate::engine::{AdvanceReport, Engine, Event, OpenMode, RestoreFormat};
use crate::fmt;
use crate::fsx;
use crate::model::*;
use crate::vault::catalog::JobFilter;
use args::*;
use clap::Parser;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use table::Table;

/// The exit code of jobs that have ended: success when every one completed, else
/// cancelled when the others completed or were cancelled, else failed (a job still running
/// is not a success either).
pub fn exit_code_of(jobs: &[Job]) -> u8 {
    let completed = |j: &Job| {
        matches!(
            j.status,
            JobStatus::Completed | JobStatus::CompletedWithWarnings
        )
    };
    if jobs.iter().all(completed) {
        exit::OK
    } else if jobs
        .iter()
        .all(|j| completed(j) || j.status == JobStatus::Cancelled)
    {
        exit::CANCELLED
    } else {
        exit::FAILED
    }
}

type Result<T> = std::result::Result<T, AppError>;

/// The longest error message printed (a list of ambiguous VMs fits; a file does not).
const MAX_ERROR_CHARS: usize = 10_000;

/// Entry point of the `vmvault` binary.
pub fn main() -> ExitCode {
    args::drop_empty_env();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::app::write_stderr(format_args!("error: cannot start the runtime: {e}"));
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = rt.block_on(async {
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                // Messages echo user input capped where they are made; this bounds the rest
                // (a path, a tool's output) however it was built.
                errln!("error: {}", fmt::cut(&e.message, MAX_ERROR_CHARS));
                e.code
            }
        }
    });
    // Blocking threads of cancelled work must not keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

/// Prints to stdout with control characters escaped ([`fmt::printable`]): names from
/// outside (image files, VMs) cannot move the cursor or forge lines in what people read.
#[doc(hidden)]
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    let text = std::fmt::format(args);
    let mut out = std::io::stdout().lock();
    let r = out
        .write_all(fmt::printable(&text).as_bytes())
        .and_then(|_| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        });
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
    }
}

fn print_json(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    outln!("{text}");
}

fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

async fn run(cli: Cli) -> Result<u8> {
    let unlock = crate::app::UnlockOptions {
        passphrase_file: cli.passphrase_file.clone(),
        paper_key_file: cli.paper_key_file.clone(),
        // Asked on the terminal only by a command run there (never by the console).
        prompt: cli.command.is_some() && std::io::stdin().is_terminal(),
    };
    let Some(command) = cli.command else {
        let setup = Setup::load(
            cli.config.as_deref(),
            cli.data_dir.as_deref(),
            cli.vault.as_deref(),
        )?
        .with_unlock(unlock);
        return crate::tui::run(setup).await;
    };
    let setup = Setup::load(
        cli.config.as_deref(),
        cli.data_dir.as_deref(),
        cli.vault.as_deref(),
    )?
    .with_unlock(unlock);
    let globals = cli_globals(
        &cli.config,
        &cli.data_dir,
        &cli.vault,
        &cli.passphrase_file,
        &cli.paper_key_file,
    );
    match command {
        Command::Vaults(a) => vaults(&setup, a.json),
        Command::Discover(a) => discover(&setup, a.json).await,
        Command::Items(a) => items(&setup, &a),
        Command::Register(a) => register(&setup, &a).await,
        Command::Protect(a) => protect(&setup, &a).await,
        Command::Backup(a) => backup(&setup, &globals, &a).await,
        Command::Jobs(a) => jobs(&setup, &a),
        Command::Job(a) => job(&setup, &a).await,
        Command::Cancel(a) => cancel(&setup, &a),
        Command::Summary(a) => summary(&setup, a.json),
        Command::Points(a) => points(&setup, &a),
        Command::Restore(a) => restore(&setup, &globals, &a).await,
        Command::Verify(a) => verify(&setup, &a).await,
        Command::StopProtection(a) => {
            let engine = open_owner(&setup)?;
            let item = engine.resolve_item(&a.vm)?;
            let id = engine.stop_protection(&item, a.delete_data)?;
            wait_and_report(&engine, &[id], a.json).await
        }
        Command::ResumeProtection(a) => {
            let engine = open_owner(&setup)?;
            let item = engine.resolve_item(&a.vm)?;
            let id = engine.resume_protection(&item, &a.policy)?;
            wait_and_report(&engine, &[id], a.json).await
        }
        Command::Undelete(a) => {
            let engine = open_owner(&setup)?;
            let item = engine.resolve_item(&a.vm)?;
            let id = engine.undelete(&item)?;
            wait_and_report(&engine, &[id], a.json).await
        }
        Command::Policy(p) => policy(&setup, p).await,
        Command::Prune(a) => {
            let engine = open_owner(&setup)?;
            let (job, signal) = until_stopped(&engine, engine.prune_now()).await?;
            let code = match job? {
                Some(job) => report_finished(&engine, &[job], a.json)?,
                None => exit::OK,
            };
            stopped_outcome(signal, code)
        }
        Command::Gc(a) => {
            let engine = open_owner(&setup)?;
            let (job, signal) = until_stopped(&engine, engine.gc_now()).await?;
            let code = report_finished(&engine, &[job?], a.json)?;
            stopped_outcome(signal, code)
        }
        Command::Run => run_headless(&setup).await,
        Command::Sim(s) => sim(&setup, s).await,
        Command::Vault(VaultCommand::Rebuild(a)) => vault_rebuild(&setup, a.json).await,
        Command::Vault(VaultCommand::Upgrade(a)) => vault_upgrade(&setup, a.json).await,
        Command::Key(k) => keys::key(&setup, k),
        Command::Detached(a) => detached(&setup, &a).await,
    }
}

/// Global flags to hand to a detached child, each value joined to its flag (`--config=…`)
/// and kept as the OS gave it (a path need not be UTF-8). The child opens the vault itself:
/// it gets the passphrase and paper key files too (only their names; it cannot be asked on
/// a terminal).
fn cli_globals(
    config: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    vault: &Option<String>,
    passphrase_file: &Option<PathBuf>,
    paper_key_file: &Option<PathBuf>,
) -> Vec<OsString> {
    let mut v = Vec::new();
    if let Some(c) = config {
        v.push(option_arg("config", c.as_os_str()));
    }
    if let Some(d) = data_dir {
        v.push(option_arg("data-dir", d.as_os_str()));
    }
    if let Some(n) = vault {
        v.push(option_arg("vault", n.as_ref()));
    }
    if let Some(p) = passphrase_file {
        v.push(option_arg("passphrase-file", p.as_os_str()));
    }
    if let Some(p) = paper_key_file {
        v.push(option_arg("paper-key-file", p.as_os_str()));
    }
    v
}

/// `--name=value`: one argument, so a value starting with `-` is never taken for a flag.
fn option_arg(name: &str, value: &std::ffi::OsStr) -> OsString {
    let mut arg = OsString::from(format!("--{name}="));
    arg.push(value);
    arg
}

/// The arguments of a `--no-wait` child: `detached WHAT --option=value… -- VM`. Values are
/// joined to their options and the VM comes after `--`: no user value can become an
/// option of the child (a VM named `--help`).
fn detached_args(what: &str, vm: &str, options: &[(&str, &std::ffi::OsStr)]) -> Vec<OsString> {
    let mut args = vec![OsString::from("detached"), OsString::from(what)];
    args.extend(options.iter().map(|(name, value)| option_arg(name, value)));
    args.extend([OsString::from("--"), OsString::from(vm)]);
    args
}

/// The data format of a vault as its folder (or, for a vault in object storage, this
/// machine's catalog of it) says, without opening anything else.
fn vault_layout(
    setup: &Setup,
    v: &crate::config::VaultConfig,
) -> Option<crate::vault::folder::Layout> {
    let dir = setup.config.vault_dir(v, &setup.data_dir);
    if v.object_storage().is_some() {
        crate::vault::folder::cached_layout(&dir)
    } else {
        crate::vault::folder::layout_of(&dir)
    }
}

fn vaults(setup: &Setup, as_json: bool) -> Result<u8> {
    if as_json {
        let v: Vec<Value> = setup
            .config
            .vaults
            .iter()
            .map(|v| {
                let layout = vault_layout(setup, v);
                let dir = setup
                    .config
                    .vault_dir(v, &setup.data_dir)
                    .display()
                    .to_string();
                json!({
                    "name": v.name,
                    "region": v.region,
                    "source": v.source.kind(),
                    "storage": v.object_storage().map_or(dir.clone(), |o| o.summary()),
                    "catalog": dir,
                    "selected": v.name == setup.vault.name,
                    "format": layout.map(|l| l.version()),
                    "encryption": layout.map(|l| l.encryption()),
                })
            })
            .collect();
        print_json(&Value::Array(v));
        return Ok(0);
    }
    let mut t = Table::new(&["", "VAULT", "REGION", "SOURCE", "FORMAT", "STORAGE"]);
    for v in &setup.config.vaults {
        let format = match vault_layout(setup, v) {
            Some(l) if l.is_encrypted() => format!("v{} encrypted", l.version()),
            Some(l) => format!("v{} unencrypted", l.version()),
            None => "-".into(),
        };
        t.row(vec![
            if v.name == setup.vault.name {
                "*".into()
            } else {
                String::new()
            },
            v.name.clone(),
            v.region.clone(),
            v.source.kind().into(),
            format,
            v.object_storage().map_or_else(
                || {
                    setup
                        .config
                        .vault_dir(v, &setup.data_dir)
                        .display()
                        .to_string()
                },
                |o| o.summary(),
            ),
        ]);
    }
    out!("{t}");
    outln!("(configuration: {})", setup.config.origin);
    Ok(0)
}

async fn vault_rebuild(setup: &Setup, as_json: bool) -> Result<u8> {
    let opts = setup.engine_options(&setup.vault)?;
    let dir = opts.dir.clone();
    let report = tokio::task::spawn_blocking(move || crate::engine::rebuild_catalog(&opts))
        .await
        .map_err(|e| AppError::failed(format!("the rebuild stopped unexpectedly: {e}")))??;
    if as_json {
        print_json(&serde_json::to_value(&report).unwrap_or(Value::Null));
    } else {
        outln!(
            "Rebuilt the catalog of {}: {} item(s), {} polic(ies), {} recovery point(s), {} chunk(s).",
            dir.display(),
            report.items,
            report.policies,
            report.points,
            report.chunks
        );
        if report.missing_chunks > 0 {
            outln!(
                "{} chunk(s) that recovery points need are missing: `vmvault verify` names the points; the next backups store them again.",
                report.missing_chunks
            );
        }
        for p in &report.problems {
            errln!("warning: {p}");
        }
        outln!("The job history is not part of the vault's data and starts afresh.");
    }
    Ok(if report.problems.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

async fn vault_upgrade(setup: &Setup, as_json: bool) -> Result<u8> {
    use crate::engine::upgrade;
    use crate::vault::folder::{layout_of, Layout};
    if let Some(o) = setup.vault.object_storage() {
        return Err(AppError::usage(format!(
            "vault {} is in object storage ({}): vaults there are made in format 2, there is nothing to upgrade",
            setup.vault.name,
            o.summary()
        )));
    }
    let dir = setup.vault_dir();
    let (work, kept) = upgrade::leftovers(&dir);
    let name = &setup.vault.name;
    if layout_of(&dir).is_some_and(|l| l.version() >= 2) {
        // An upgrade killed between its two renames: the old vault is still in the work
        // folder.
        if work.as_deref().and_then(layout_of) == Some(Layout::V1) {
            let kept = upgrade::exchange(&dir, true)?;
            outln!(
                "Vault {name} is of format 2 now; the old vault is kept at {}: remove it once you are satisfied.",
                kept.display()
            );
            return Ok(exit::OK);
        }
        return Err(AppError::usage(format!(
            "vault {name} is of format 2 already; nothing to upgrade"
        )));
    }
    if let Some(k) = kept {
        return Err(AppError::usage(format!(
            "{} is there (an earlier upgrade kept an old vault there): move it away first",
            k.display()
        )));
    }
    let work = upgrade::work_dir(&dir)
        .ok_or_else(|| AppError::usage("the vault's folder name is not UTF-8"))?;
    let old = open_owner(setup)?;
    if old.format_version() != 1 {
        return Err(AppError::usage(format!(
            "vault {name} is of format {} already; nothing to upgrade",
            old.format_version()
        )));
    }
    let mut opts = setup.engine_options(&setup.vault)?;
    opts.dir = work.clone();
    let new = Engine::open(opts, OpenMode::Exclusive)?;
    let key_file = new.new_key_file().map(|p| p.to_path_buf());
    let cancel = crate::cancel::CancelToken::new();
    let mut signals = StopSignals::new()?;
    let task = {
        let (old, new, cancel) = (old.clone(), new.clone(), cancel.clone());
        let quiet = as_json;
        tokio::task::spawn_blocking(move || {
            upgrade::copy_vault(&old, &new, &cancel, |n, total, id| {
                if !quiet {
                    errln!("copying recovery point {n}/{total} ({id})");
                }
            })
        })
    };
    tokio::pin!(task);
    let mut stopped = None;
    let result = tokio::select! {
        r = &mut task => r,
        s = signals.recv() => {
            errln!("{}: stopping after the current recovery point…", s.name());
            stopped = Some(s);
            cancel.cancel();
            task.await
        }
    };
    old.shutdown(std::time::Duration::from_secs(30)).await;
    new.shutdown(std::time::Duration::from_secs(30)).await;
    let report =
        result.map_err(|e| AppError::failed(format!("the upgrade stopped unexpectedly: {e}")));
    if let Some(s) = stopped {
        drop((old, new));
        return Err(AppError {
            code: s.exit_code(),
            message: format!(
                "stopped by {}: vault {name} is unchanged (format 1); `vmvault vault upgrade` goes on from where it stopped",
                s.name()
            ),
            busy: false,
        });
    }
    let report = report??;
    drop((old, new));
    let kept = upgrade::exchange(&dir, false)?;
    if as_json {
        print_json(&json!({
            "report": report,
            "kept": kept.display().to_string(),
            "key_file": key_file.as_ref().map(|p| p.display().to_string()),
        }));
    } else {
        outln!(
            "Vault {name} is of format 2 now: {} recovery point(s) copied ({} already there from an earlier run), {} item(s), {} polic(ies).",
            report.points_copied,
            report.points_already_there,
            report.items,
            report.policies
        );
        outln!(
            "The old vault is kept at {}: run `vmvault verify`, then remove it.",
            kept.display()
        );
    }
    Ok(exit::OK)
}

async fn discover(setup: &Setup, as_json: bool) -> Result<u8> {
    let engine = open_owner(setup)?;
    let id = engine.discover()?;
    if !as_json && stdout_is_tty() {
        outln!("Discovering virtual machines… (job {id})");
    }
    let done = wait_jobs(&engine, &[id], false).await?;
    let job = &done[0];
    if !matches!(
        job.status,
        JobStatus::Completed | JobStatus::CompletedWithWarnings
    ) {
        return report_finished(&engine, &done, as_json);
    }
    let items = engine.items()?;
    let warnings: Vec<&str> = job
        .details
        .get("warnings")
        .and_then(|v| v.as_array())
        .map(|w| w.iter().filter_map(|w| w.as_str()).collect())
        .unwrap_or_default();
    if as_json {
        let counts = engine.point_counts()?;
        print_json(&json!({
            "job": json::job(job, engine.now(), None),
            "found": job.details.get("found"),
            "new": job.details.get("new"),
            "no_longer_found": job.details.get("no_longer_found"),
            "warnings": warnings,
            "items": items.iter().map(|i| json::item(i, counts.get(&i.id).copied().unwrap_or(0))).collect::<Vec<_>>(),
        }));
        return Ok(0);
    }
    let n = |k: &str| job.details.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    outln!(
        "Discovery complete: {} found, {} new, {} no longer found (job {})",
        n("found"),
        n("new"),
        n("no_longer_found"),
        job.id
    );
    for w in &warnings {
        outln!("  warning: {w}");
    }
    print_items(&engine, &items)?;
    Ok(0)
}

fn items(setup: &Setup, a: &ItemsArgs) -> Result<u8> {
    let engine = setup.open(OpenMode::ReadOnly)?;
    let mut items = engine.items()?;
    if let Some(s) = &a.state {
        let state = ProtectionState::parse(s).ok_or_else(|| {
            AppError::usage(format!(
                "unknown protection state \"{}\"; expected one of {}",
                fmt::echo(s),
                ProtectionState::names()
            ))
        })?;
        items.retain(|i| i.protection_state == state);
    }
    if a.json {
        let counts = engine.point_counts()?;
        print_json(&Value::Array(
            items
                .iter()
                .map(|i| json::item(i, counts.get(&i.id).copied().unwrap_or(0)))
                .collect(),
        ));
        return Ok(0);
    }
    if items.is_empty() && a.state.is_none() {
        outln!(
            "No VMs known to vault {} yet: run `vmvault discover`.",
            engine.vault_name()
        );
        return Ok(0);
    }
    print_items(&engine, &items)?;
    Ok(0)
}

fn print_items(engine: &Engine, items: &[Item]) -> Result<()> {
    let counts = engine.point_counts()?;
    let mut t = Table::new(&[
        "NAME",
        "CLOUD SERVICE",
        "REGION",
        "OS",
        "POWER",
        "REGISTRATION",
        "PROTECTION",
        "POLICY",
        "LAST BACKUP",
        "POINTS",
    ]);
    for i in items {
        let region = if i.region.eq_ignore_ascii_case(engine.region()) {
            i.region.clone()
        } else {
            format!("{} (other)", i.region)
        };
        t.row(vec![
            i.name.clone(),
            i.cloud_service.clone(),
            region,
            i.os.to_string(),
            i.power_state.to_string(),
            if i.not_found {
                "Not found".into()
            } else {
                i.registration_state.to_string()
            },
            i.protection_state.label().to_string(),
            i.policy.clone().unwrap_or_else(|| "-".into()),
            match (i.last_backup_time, i.last_backup_status) {
                (Some(t), Some(s)) => format!("{} {s}", fmt::time(t)),
                _ => "-".into(),
            },
            counts.get(&i.id).copied().unwrap_or(0).to_string(),
        ]);
    }
    out!("{t}");
    Ok(())
}

fn resolve_all(engine: &Engine, names: &[String]) -> Result<Vec<Item>> {
    let mut out: Vec<Item> = Vec::new();
    for n in names {
        let item = engine.resolve_item(n)?;
        if !out.iter().any(|i| i.id == item.id) {
            out.push(item);
        }
    }
    Ok(out)
}

async fn register(setup: &Setup, a: &RegisterArgs) -> Result<u8> {
    let engine = open_owner(setup)?;
    let items = resolve_all(&engine, &a.vms)?;
    let ids = engine.register(&items)?;
    if a.no_wait {
        return print_started(&engine, &ids, a.json);
    }
    wait_and_report(&engine, &ids, a.json).await
}

async fn protect(setup: &Setup, a: &ProtectArgs) -> Result<u8> {
    let engine = open_owner(setup)?;
    let items = resolve_all(&engine, &a.vms)?;
    let ids = engine.protect(&items, &a.policy)?;
    wait_and_report(&engine, &ids, a.json).await
}

async fn backup(setup: &Setup, globals: &[OsString], a: &BackupArgs) -> Result<u8> {
    let retain_until = a
        .retain_until
        .as_deref()
        .map(|s| {
            fmt::parse_time(s, true).map_err(|e| AppError::usage(format!("--retain-until: {e}")))
        })
        .transpose()?;
    if a.no_wait {
        let options: Vec<(&str, &std::ffi::OsStr)> = a
            .retain_until
            .iter()
            .map(|r| ("retain-until", r.as_ref()))
            .collect();
        let args = detached_args("backup", &a.vm, &options);
        return spawn_detached(setup, globals, args, a.json).await;
    }
    let engine = open_owner(setup)?;
    let item = engine.resolve_item(&a.vm)?;
    let id = engine.backup_now(&item, retain_until)?;
    wait_and_report(&engine, &[id], a.json).await
}

async fn restore(setup: &Setup, globals: &[OsString], a: &RestoreArgs) -> Result<u8> {
    let format = RestoreFormat::parse(&a.format).ok_or_else(|| {
        AppError::usage(format!(
            "--format {}: expected raw, qcow2, vhd or vmdk",
            fmt::echo(&a.format)
        ))
    })?;
    if a.no_wait {
        let to = std::path::absolute(&a.to).unwrap_or_else(|_| a.to.clone());
        let args = detached_args(
            "restore",
            &a.vm,
            &[
                ("point", a.point.as_ref()),
                ("to", to.as_os_str()),
                ("format", a.format.as_ref()),
            ],
        );
        return spawn_detached(setup, globals, args, a.json).await;
    }
    let engine = open_owner(setup)?;
    let item = engine.resolve_item(&a.vm)?;
    let point = engine.resolve_point(&item, &a.point)?;
    let id = engine.restore(&item, &point, &a.to, format)?;
    wait_and_report(&engine, &[id], a.json).await
}

/// `--no-wait`: a child process owns the vault and runs the job to its end; this process
/// prints the job id once the child has created the job.
async fn spawn_detached(
    _setup: &Setup,
    globals: &[OsString],
    args: Vec<OsString>,
    as_json: bool,
) -> Result<u8> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| AppError::failed(format!("cannot find the vmvault binary: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(globals).args(&args);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Its own session: closing this terminal or Ctrl-C here must not stop the job.
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| AppError::failed(format!("cannot start the background job: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| AppError::failed("no pipe to the background job"))?;
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    let id = line.trim().to_string();
    if id.is_empty() {
        // The child refused before creating a job: relay its message and exit code.
        let out = child
            .wait_with_output()
            .map_err(|e| AppError::failed(e.to_string()))?;
        let msg = String::from_utf8_lossy(&out.stderr)
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        let code = out.status.code().unwrap_or(1) as u8;
        return Err(AppError {
            code: if code == 0 { 1 } else { code },
            message: msg,
            busy: false,
        });
    }
    if as_json {
        print_json(&json!({ "job_id": id, "status": "InProgress", "pid": child.id() }));
    } else {
        outln!("{id}");
        if stdout_is_tty() {
            errln!("Started in the background; follow it with `vmvault job {id}`.");
        }
    }
    Ok(0)
}

/// The child side of `--no-wait`.
async fn detached(setup: &Setup, a: &DetachedArgs) -> Result<u8> {
    let engine = open_owner(setup)?;
    let item = engine.resolve_item(&a.vm)?;
    let id = match a.what.as_str() {
        "backup" => {
            let retain_until = a
                .retain_until
                .as_deref()
                .map(|s| {
                    fmt::parse_time(s, true)
                        .map_err(|e| AppError::usage(format!("--retain-until: {e}")))
                })
                .transpose()?;
            engine.backup_now(&item, retain_until)?
        }
        "restore" => {
            let point = engine.resolve_point(&item, a.point.as_deref().unwrap_or_default())?;
            let format = RestoreFormat::parse(a.format.as_deref().unwrap_or("raw"))
                .ok_or_else(|| AppError::usage("bad --format"))?;
            let to =
                a.to.clone()
                    .ok_or_else(|| AppError::usage("--to is required"))?;
            engine.restore(&item, &point, &to, format)?
        }
        other => return Err(AppError::usage(format!("unknown detached job {other}"))),
    };
    outln!("{id}");
    let _ = std::io::stdout().flush();
    detach_stdio();
    let jobs = wait_jobs(&engine, &[id], false).await?;
    Ok(exit_code_of(&jobs))
}

/// Points stdout and stderr at /dev/null (the parent stopped reading them).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::unix::io::AsRawFd;
        // SAFETY: dup2 on valid descriptors; replaces fds 1 and 2 of this process.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

fn print_started(engine: &Engine, ids: &[String], as_json: bool) -> Result<u8> {
    if as_json {
        let jobs: Vec<Value> = ids
            .iter()
            .filter_map(|id| engine.job(id).ok())
            .map(|j| json::job(&j, engine.now(), None))
            .collect();
        print_json(&Value::Array(jobs));
    } else {
        for id in ids {
            outln!("{id}");
        }
    }
    Ok(0)
}

/// Waits for jobs, drawing a progress bar on a terminal. A stop signal (Ctrl-C, SIGTERM,
/// SIGHUP) stops the engine: the jobs end as Cancelled, and the error carries the signal's
/// exit code (unless every job had completed anyway).
async fn wait_jobs(engine: &Engine, ids: &[String], bar: bool) -> Result<Vec<Job>> {
    let mut rx = engine.subscribe();
    let mut bars: Vec<progress::Bar> = ids
        .iter()
        .map(|id| {
            let label = engine
                .job(id)
                .map(|j| format!("{} {}", j.operation, j.item))
                .unwrap_or_default();
            progress::Bar::new(bar && ids.len() == 1 && stdout_is_tty(), label)
        })
        .collect();
    let mut finished: Vec<Option<Job>> = vec![None; ids.len()];
    let mut signals = StopSignals::new()?;
    let mut stopped_by = None;
    loop {
        for (id, slot) in ids.iter().zip(finished.iter_mut()) {
            if slot.is_none() {
                *slot = engine.ended_job(id)?;
            }
        }
        if finished.iter().all(|f| f.is_some()) {
            break;
        }
        tokio::select! {
            signal = signals.recv(), if stopped_by.is_none() => {
                for b in &mut bars { b.clear(); }
                stop_engine(engine, signal);
                stopped_by = Some(signal);
            }
            ev = rx.recv() => {
                match ev {
                    Ok(Event::JobProgress(p)) if stopped_by.is_none() => {
                        if let Some(i) = ids.iter().position(|id| *id == p.id) {
                            bars[i].draw(&p);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
    for b in &mut bars {
        b.clear();
    }
    let jobs: Vec<Job> = finished.into_iter().flatten().collect();
    stopped_outcome(stopped_by, exit_code_of(&jobs))?;
    Ok(jobs)
}

/// A signal that stops a command: Ctrl-C, SIGTERM (`kill`, a service manager), SIGHUP (the
/// terminal closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopSignal {
    Interrupt,
    Terminate,
    Hangup,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "Ctrl-C",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        }
    }

    /// Ctrl-C exits 130 as shells report it; SIGTERM and SIGHUP exit as for a cancel.
    fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => exit::INTERRUPTED,
            StopSignal::Terminate | StopSignal::Hangup => exit::CANCELLED,
        }
    }
}

/// The stop signal this process got, if any ([`listen_for_stop_signals`]).
static STOP_SIGNAL: std::sync::OnceLock<tokio::sync::watch::Receiver<Option<StopSignal>>> =
    std::sync::OnceLock::new();

/// From now on, a stop signal no longer kills this process: it is noted, and the code that
/// waits for jobs ([`StopSignals`]) cancels them through the engine, so they are recorded
/// as Cancelled. tokio's handlers only note a signal and wake the runtime (a flag and a
/// pipe: nothing else is safe in a handler). Called before a job can start: a signal that
/// comes before the wait is kept for it.
fn listen_for_stop_signals() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    if STOP_SIGNAL.get().is_some() {
        return Ok(());
    }
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| AppError::failed(format!("cannot listen for signals: {e}")))
    };
    let (mut int, mut term, mut hup) = (
        listen(SignalKind::interrupt())?,
        listen(SignalKind::terminate())?,
        listen(SignalKind::hangup())?,
    );
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        loop {
            let got = tokio::select! {
                _ = int.recv() => StopSignal::Interrupt,
                _ = term.recv() => StopSignal::Terminate,
                _ = hup.recv() => StopSignal::Hangup,
            };
            tx.send_replace(Some(got));
        }
    });
    let _ = STOP_SIGNAL.set(rx);
    Ok(())
}

/// Waits for a stop signal (one that came before this was made included).
struct StopSignals(tokio::sync::watch::Receiver<Option<StopSignal>>);

impl StopSignals {
    fn new() -> Result<StopSignals> {
        listen_for_stop_signals()?;
        STOP_SIGNAL
            .get()
            .cloned()
            .map(StopSignals)
            .ok_or_else(|| AppError::failed("cannot listen for signals"))
    }

    async fn recv(&mut self) -> StopSignal {
        loop {
            if let Some(got) = *self.0.borrow_and_update() {
                return got;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Opens the selected vault as its owner, stop signals noted from here on: every job this
/// process starts is cancelled cleanly by Ctrl-C, SIGTERM or SIGHUP.
fn open_owner(setup: &Setup) -> Result<Engine> {
    listen_for_stop_signals()?;
    setup.open(OpenMode::Exclusive)
}

/// What a stop signal does to this process's vault: every running job is cancelled (and
/// recorded so) and no other job starts.
fn stop_engine(engine: &Engine, signal: StopSignal) {
    tracing::info!(
        signal = signal.name(),
        "stop signal: cancelling running jobs"
    );
    let running = engine.running_job_count();
    errln!("{}: cancelling {running} running job(s)…", signal.name());
    engine.stop();
}

/// The exit of a command that a signal stopped: the signal's code, unless its jobs had all
/// completed anyway (`code` is OK).
fn stopped_outcome(signal: Option<StopSignal>, code: u8) -> Result<u8> {
    match signal {
        Some(s) if code != exit::OK => Err(AppError {
            code: s.exit_code(),
            message: format!("stopped by {}: the job(s) were cancelled", s.name()),
            busy: false,
        }),
        _ => Ok(code),
    }
}

/// Runs `work` (a job this process runs to its end) to its end; a stop signal meanwhile
/// stops the engine ([`stop_engine`]), which makes the work end soon as Cancelled.
async fn until_stopped<T>(
    engine: &Engine,
    work: impl std::future::Future<Output = T>,
) -> Result<(T, Option<StopSignal>)> {
    let mut signals = StopSignals::new()?;
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => Ok((out, None)),
        signal = signals.recv() => {
            stop_engine(engine, signal);
            Ok((work.await, Some(signal)))
        }
    }
}

async fn wait_and_report(engine: &Engine, ids: &[String], as_json: bool) -> Result<u8> {
    let jobs = wait_jobs(engine, ids, !as_json).await?;
    report_finished(engine, &jobs, as_json)
}

/// Prints finished jobs; the exit code says how they ended ([`exit_code_of`]).
fn report_finished(engine: &Engine, jobs: &[Job], as_json: bool) -> Result<u8> {
    if as_json {
        let now = engine.now();
        let v: Vec<Value> = jobs.iter().map(|j| json::job(j, now, None)).collect();
        print_json(&if v.len() == 1 {
            v.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(v)
        });
    } else {
        for j in jobs {
            print_job_outcome(j);
        }
    }
    Ok(exit_code_of(jobs))
}

fn print_job_outcome(j: &Job) {
    let d = |k: &str| j.details.get(k);
    let dur = j
        .end_time
        .map(|e| fmt::duration(e - j.start_time))
        .unwrap_or_default();
    match j.status {
        JobStatus::Completed | JobStatus::CompletedWithWarnings => {
            let what = match j.operation {
                JobOperation::Backup => format!(
                    ": recovery point {} ({} of data, {} read, {} newly stored)",
                    d("recovery_point").and_then(|v| v.as_str()).unwrap_or("?"),
                    fmt::bytes(d("logical_bytes").and_then(|v| v.as_u64()).unwrap_or(0)),
                    fmt::bytes(d("bytes_read").and_then(|v| v.as_u64()).unwrap_or(0)),
                    fmt::bytes(d("stored_bytes").and_then(|v| v.as_u64()).unwrap_or(0)),
                ),
                JobOperation::Restore => match d("files").and_then(|v| v.as_array()) {
                    Some(files) => format!(
                        ": {}",
                        files
                            .iter()
                            .filter_map(|f| f.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => String::new(),
                },
                JobOperation::Verify => format!(
                    ": {} recovery point(s), {} chunk(s), no damage found",
                    d("points_checked").and_then(|v| v.as_u64()).unwrap_or(0),
                    d("chunks_checked").and_then(|v| v.as_u64()).unwrap_or(0)
                ),
                JobOperation::Prune => format!(
                    ": {} expired recovery point(s) removed",
                    d("points_removed").and_then(|v| v.as_u64()).unwrap_or(0)
                ),
                JobOperation::GarbageCollect => format!(
                    ": {} chunk(s) freed ({}), {} in use",
                    d("chunks_freed").and_then(|v| v.as_u64()).unwrap_or(0),
                    fmt::bytes(d("bytes_freed").and_then(|v| v.as_u64()).unwrap_or(0)),
                    d("chunks_in_use").and_then(|v| v.as_u64()).unwrap_or(0)
                ),
                JobOperation::DeleteBackupData => format!(
                    ": data soft-deleted, purged after {} unless undeleted",
                    d("purge_at").and_then(|v| v.as_str()).unwrap_or("14 days")
                ),
                JobOperation::Register => match d("findings").and_then(|v| v.as_array()) {
                    Some(f) if !f.is_empty() => {
                        format!(
                            " ({})",
                            f.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    }
                    _ => String::new(),
                },
                JobOperation::ConfigureBackup => format!(
                    " with policy {}",
                    d("policy").and_then(|v| v.as_str()).unwrap_or("?")
                ),
                _ => String::new(),
            };
            outln!(
                "{} of {} {} in {dur}{what} (job {})",
                j.operation,
                j.item,
                j.status,
                j.id
            );
            if let Some(w) = d("warnings").and_then(|v| v.as_array()) {
                for w in w.iter().filter_map(|w| w.as_str()) {
                    outln!("  warning: {w}");
                }
            }
        }
        JobStatus::Cancelled => outln!(
            "{} of {} Cancelled after {dur} (job {})",
            j.operation,
            j.item,
            j.id
        ),
        _ => {
            errln!(
                "error: {} of {} {} (job {})",
                j.operation,
                j.item,
                j.status,
                j.id
            );
            if let Some(e) = &j.error {
                errln!("  {}: {}", e.code, e.title);
                errln!("  {}", e.message);
                if !e.recommendations.is_empty() {
                    errln!("  What to do:");
                    for r in &e.recommendations {
                        errln!("   - {r}");
                    }
                }
            }
        }
    }
}

fn job_filter(engine: &Engine, a: &JobsArgs) -> Result<JobFilter> {
    let mut f = JobFilter {
        limit: a.limit.map(|n| n as usize),
        ..Default::default()
    };
    if let Some(s) = &a.since {
        // A period is digits and a unit; a time has a date (`-`) or a clock (`:`).
        let since = if s.contains(['-', ':']) {
            fmt::parse_time(s, false)
        } else {
            fmt::parse_period(s).map(|d| engine.now() - d)
        };
        f.since = Some(since.map_err(|e| AppError::usage(format!("--since: {e}")))?);
    }
    for s in &a.status {
        for part in s.split(',') {
            f.statuses.push(JobStatus::parse(part).ok_or_else(|| {
                AppError::usage(format!(
                    "--status {}: unknown status; expected one of {}",
                    fmt::echo(part),
                    JobStatus::names()
                ))
            })?);
        }
    }
    for s in &a.operation {
        for part in s.split(',') {
            f.operations.push(JobOperation::parse(part).ok_or_else(|| {
                AppError::usage(format!(
                    "--operation {}: unknown operation; expected one of {}",
                    fmt::echo(part),
                    JobOperation::names()
                ))
            })?);
        }
    }
    if let Some(i) = &a.item {
        f.item_id = Some(engine.resolve_item(i)?.id);
    }
    Ok(f)
}

fn jobs(setup: &Setup, a: &JobsArgs) -> Result<u8> {
    let engine = setup.open(OpenMode::ReadOnly)?;
    let filter = job_filter(&engine, a)?;
    let list = engine.jobs(&filter)?;
    let now = engine.now();
    let live = engine.live_progress();
    if a.json {
        print_json(&Value::Array(
            list.iter()
                .map(|j| json::job(j, now, live.get(&j.id)))
                .collect(),
        ));
        return Ok(0);
    }
    let mut t = Table::new(&[
        "JOB ID",
        "OPERATION",
        "ITEM",
        "STATUS",
        "START (UTC)",
        "DURATION",
        "PROGRESS",
    ]);
    for j in &list {
        let progress = if j.status.is_active() && j.bytes_total > 0 {
            format!(
                "{:.0}% of {}",
                j.bytes_done as f64 * 100.0 / j.bytes_total as f64,
                fmt::bytes(j.bytes_total)
            )
        } else if j.bytes_total > 0 {
            fmt::bytes(j.bytes_total)
        } else {
            String::new()
        };
        t.row(vec![
            j.id.chars().take(8).collect(),
            j.operation.to_string(),
            j.item.clone(),
            j.status.to_string(),
            fmt::time(j.start_time),
            fmt::duration(j.duration(now)),
            progress,
        ]);
    }
    out!("{t}");
    if list.is_empty() {
        outln!("(no jobs match)");
    }
    Ok(0)
}

async fn job(setup: &Setup, a: &JobArgs) -> Result<u8> {
    let engine = setup.open(OpenMode::ReadOnly)?;
    let mut j = engine.job(&a.id)?;
    if a.wait && j.status.is_active() {
        j = engine.wait_job(&j.id).await?;
    }
    let now = engine.now();
    let live = engine.live_progress();
    if a.json {
        print_json(&json::job(&j, now, live.get(&j.id)));
        return Ok(job_exit(&j, a.wait));
    }
    outln!("Job        {}", j.id);
    outln!("Operation  {}", j.operation);
    outln!("Item       {}", j.item);
    outln!("Status     {}", j.status);
    outln!("Started    {} UTC", fmt::time(j.start_time));
    if let Some(e) = j.end_time {
        outln!("Ended      {} UTC", fmt::time(e));
    }
    outln!("Duration   {}", fmt::duration(j.duration(now)));
    if j.bytes_total > 0 {
        outln!(
            "Progress   {:.1}%  {} of {}",
            j.bytes_done as f64 * 100.0 / j.bytes_total as f64,
            fmt::bytes(j.bytes_done),
            fmt::bytes(j.bytes_total)
        );
    }
    outln!(
        "Triggered  {}",
        if j.is_user_triggered {
            "by a user"
        } else {
            "by the schedule"
        }
    );
    if !j.tasks.is_empty() {
        outln!("Tasks:");
        for t in &j.tasks {
            let dur = match (t.start_time, t.end_time) {
                (Some(s), Some(e)) => fmt::duration(e - s),
                (Some(s), None) => fmt::duration(now - s),
                _ => String::new(),
            };
            let bytes = if t.bytes_total > 0 {
                format!(
                    "  {} of {}",
                    fmt::bytes(t.bytes_done),
                    fmt::bytes(t.bytes_total)
                )
            } else {
                String::new()
            };
            outln!("  {:<26} {:<12} {dur}{bytes}", t.name, t.status.to_string());
        }
    }
    if !j.details.is_empty() {
        outln!("Details:");
        for (k, v) in &j.details {
            let (label, values) = fmt::job_detail(k, v);
            for (n, text) in values.iter().enumerate() {
                outln!("  {:<20} {text}", if n == 0 { label.as_str() } else { "" });
            }
        }
    }
    if let Some(e) = &j.error {
        outln!("Error      {}: {}", e.code, e.title);
        outln!("           {}", e.message);
        for r in &e.recommendations {
            outln!("           - {r}");
        }
    }
    Ok(job_exit(&j, a.wait))
}

/// `job ID` reports; `job ID --wait` also returns the job's outcome as its exit code.
fn job_exit(j: &Job, waited: bool) -> u8 {
    if waited {
        exit_code_of(std::slice::from_ref(j))
    } else {
        exit::OK
    }
}

fn cancel(setup: &Setup, a: &CancelArgs) -> Result<u8> {
    let engine = setup.open(OpenMode::ReadOnly)?;
    let j = engine.cancel_job(&a.id)?;
    if a.json {
        print_json(&json::job(&j, engine.now(), None));
    } else {
        outln!("Cancelling job {} ({} of {})", j.id, j.operation, j.item);
    }
    Ok(0)
}

fn summary(setup: &Setup, as_json: bool) -> Result<u8> {
    let engine = setup.open(OpenMode::ReadOnly)?;
    let s = engine.summary()?;
    if as_json {
        print_json(&json::summary(&s));
        return Ok(0);
    }
    outln!(
        "Vault {} ({}, {} source) at {} UTC",
        engine.vault_name(),
        engine.region(),
        engine.source_kind(),
        fmt::time(s.time)
    );
    outln!();
    outln!("  Protected items        {}", s.protected);
    outln!("  Registered items       {}", s.registered);
    outln!("  Needing attention      {}", s.needs_attention);
    outln!();
    outln!(
        "  Jobs, last 24 hours    Completed {}   Failed {}   In progress {}",
        s.jobs_24h.completed,
        s.jobs_24h.failed,
        s.jobs_24h.in_progress
    );
    outln!();
    let st = &s.storage;
    outln!(
        "  Protected size         {}",
        fmt::bytes(st.protected_bytes)
    );
    outln!(
        "  Stored size            {} in {} chunks, {} recovery points",
        fmt::bytes(st.stored_bytes),
        st.chunks,
        st.recovery_points
    );
    outln!(
        "  Deduplication          {:.2}×   Compression {:.2}×",
        st.dedup_ratio,
        st.compression_ratio
    );
    Ok(0)
}

fn points(setup: &Setup, a: &PointsArgs) -> Result<u8> {
    let engine = setup.open(OpenMode::ReadOnly)?;
    let item = engine.resolve_item(&a.vm)?;
    let points = engine.points(&item.id)?;
    let damaged = engine.damaged_points(&item.id)?;
    if a.json {
        print_json(&Value::Array(
            points
                .iter()
                .rev()
                .map(|p| json::point(p, &item, damaged.contains(&p.id)))
                .collect(),
        ));
        return Ok(0);
    }
    if points.is_empty() {
        outln!("{} has no recovery points yet.", item.qualified_name());
        return Ok(0);
    }
    let mut t = Table::new(&[
        "POINT ID",
        "TIME (UTC)",
        "KIND",
        "CONSISTENCY",
        "EXPIRY (UTC)",
        "SIZE",
        "STORED",
        "DAMAGED",
    ]);
    for p in points.iter().rev() {
        t.row(vec![
            p.id.clone(),
            fmt::time(p.time),
            p.kind.to_string(),
            p.consistency.to_string(),
            p.expiry.map(fmt::time).unwrap_or_else(|| "kept".into()),
            fmt::bytes(p.logical_bytes),
            fmt::bytes(p.stored_bytes),
            if damaged.contains(&p.id) {
                "yes: see `vmvault verify`".into()
            } else {
                "no".into()
            },
        ]);
    }
    out!("{t}");
    Ok(0)
}

async fn verify(setup: &Setup, a: &VerifyArgs) -> Result<u8> {
    let engine = open_owner(setup)?;
    let item =
        a.vm.as_deref()
            .map(|v| engine.resolve_item(v))
            .transpose()?;
    let id = engine.verify(item.as_ref())?;
    wait_and_report(&engine, &[id], a.json).await
}

async fn policy(setup: &Setup, cmd: PolicyCommand) -> Result<u8> {
    use crate::policy::Policy;
    match cmd {
        PolicyCommand::List(a) => {
            let engine = setup.open(OpenMode::ReadOnly)?;
            let usage = engine.policy_usage()?;
            let list = engine.policies()?;
            if a.json {
                let v: Vec<Value> = list
                    .iter()
                    .map(|(row, p)| {
                        policy_json(p, row.builtin, usage.get(&p.name).copied().unwrap_or(0))
                    })
                    .collect();
                print_json(&Value::Array(v));
                return Ok(0);
            }
            let mut t = Table::new(&["NAME", "SCHEDULE", "RETENTION", "ITEMS"]);
            for (_, p) in &list {
                let words = p.describe();
                t.row(vec![
                    p.name.clone(),
                    words.first().cloned().unwrap_or_default(),
                    words.iter().skip(1).cloned().collect::<Vec<_>>().join("; "),
                    usage.get(&p.name).copied().unwrap_or(0).to_string(),
                ]);
            }
            out!("{t}");
            Ok(0)
        }
        PolicyCommand::Show(a) => {
            let engine = setup.open(OpenMode::ReadOnly)?;
            let p = engine.policy(&a.name)?;
            let usage = engine.policy_usage()?;
            let builtin = engine
                .policies()?
                .iter()
                .any(|(r, _)| r.name == p.name && r.builtin);
            if a.json {
                print_json(&policy_json(
                    &p,
                    builtin,
                    usage.get(&p.name).copied().unwrap_or(0),
                ));
                return Ok(0);
            }
            outln!(
                "Policy {}{}",
                p.name,
                if builtin { " (built in)" } else { "" }
            );
            for line in p.describe() {
                outln!("  {line}");
            }
            outln!(
                "  Used by {} item(s)",
                usage.get(&p.name).copied().unwrap_or(0)
            );
            Ok(0)
        }
        PolicyCommand::Create(a) => {
            let p = read_policy_file(&a.file)?;
            let engine = open_owner(setup)?;
            engine.create_policy(&p)?;
            if a.json {
                print_json(&policy_json(&p, false, 0));
            } else {
                outln!("Created policy {}:", p.name);
                for line in p.describe() {
                    outln!("  {line}");
                }
            }
            Ok(0)
        }
        PolicyCommand::Update(a) => {
            let p = read_policy_file(&a.file)?;
            let engine = open_owner(setup)?;
            let n = engine.update_policy(&a.name, &p)?.evaluated;
            if a.json {
                print_json(
                    &json!({ "policy": policy_json(&p, false, 0), "points_reevaluated": n }),
                );
            } else {
                outln!(
                    "Updated policy {}; {} existing recovery point(s) re-evaluated",
                    p.name,
                    n
                );
            }
            Ok(0)
        }
        PolicyCommand::Delete(a) => {
            let engine = open_owner(setup)?;
            engine.delete_policy(&a.name)?;
            if a.json {
                print_json(&json!({ "deleted": a.name }));
            } else {
                outln!("Deleted policy {}", a.name);
            }
            Ok(0)
        }
        PolicyCommand::Import(a) => {
            let text = read_input(&a.file, fsx::limits::AZURE_JSON, "an Azure policy file")?;
            let imported = crate::policy::import_azure(&text, &a.file.display().to_string())
                .map_err(|e| AppError::usage(e.to_string()))?;
            for s in &imported.skipped {
                errln!("Skipped policy {}: {}", s.name, s.reason);
            }
            let mut policies = imported.policies;
            if let Some(name) = &a.name {
                if policies.len() != 1 {
                    return Err(AppError::usage(format!(
                        "--name applies to a file with one policy; {} holds {}",
                        a.file.display(),
                        policies.len()
                    )));
                }
                policies[0].name = name.clone();
            }
            let engine = open_owner(setup)?;
            for p in &policies {
                if engine.policy(&p.name).is_ok() {
                    return Err(AppError::usage(format!(
                        "a policy named \"{}\" exists already; import it under another name with --name NEW_NAME",
                        p.name
                    )));
                }
            }
            for p in &policies {
                engine.create_policy(p)?;
            }
            if a.json {
                print_json(&Value::Array(
                    policies.iter().map(|p| policy_json(p, false, 0)).collect(),
                ));
            } else {
                for p in &policies {
                    outln!("Imported policy {}:", p.name);
                    for line in p.describe() {
                        outln!("  {line}");
                    }
                }
            }
            Ok(0)
        }
        PolicyCommand::Preview(a) => {
            let engine = setup.open(OpenMode::ReadOnly)?;
            let p: Policy = engine.policy(&a.name)?;
            let from = match &a.from {
                Some(s) => {
                    fmt::parse_date(s).map_err(|e| AppError::usage(format!("--from: {e}")))?
                }
                None => engine.now().with_timezone(&p.time_zone).date_naive(),
            };
            if a.days == 0 || a.days > 365 * 100 {
                return Err(AppError::usage(format!(
                    "--days {}: expected 1..=36500",
                    a.days
                )));
            }
            let preview = crate::policy::preview(&p, from, a.days);
            // vmvault's dates end with the year 9999: a preview that would run or keep
            // points past it is refused rather than printed as `+10000-…`.
            // (Expiries end at max_time: one that reaches it was cut there.)
            if let Some(pt) = preview
                .points
                .iter()
                .find(|pt| pt.expiry >= fmt::max_time() || pt.time > fmt::max_time())
            {
                return Err(AppError::usage(format!(
                    "--from {from} --days {}: the preview reaches past the year 9999 (the point of {} would be kept beyond it); vmvault handles dates up to 9999-12-31, so preview an earlier range",
                    a.days,
                    fmt::time(pt.time.min(fmt::max_time()))
                )));
            }
            if a.json {
                print_json(&json!({
                    "policy": p.name,
                    "from": from.to_string(),
                    "days": a.days,
                    "points": preview.points.iter().map(|pt| json!({
                        "time": fmt::rfc3339(pt.time),
                        "expiry": fmt::rfc3339(pt.expiry),
                        "rules": pt.rules.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "daily_counts": preview.daily_counts.iter().map(|(d, n)| json!({"date": d.to_string(), "points": n})).collect::<Vec<_>>(),
                }));
                return Ok(0);
            }
            outln!(
                "Policy {}: after {} days from {} ({}), {} recovery point(s) exist:",
                p.name,
                a.days,
                from,
                p.time_zone,
                preview.points.len()
            );
            let mut t = Table::new(&["TIME (UTC)", "EXPIRY (UTC)", "KEPT BY"]);
            for pt in &preview.points {
                t.row(vec![
                    fmt::time(pt.time),
                    fmt::time(pt.expiry),
                    pt.rules
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ]);
            }
            out!("{t}");
            Ok(0)
        }
    }
}

fn policy_json(p: &crate::policy::Policy, builtin: bool, items: usize) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("builtin".into(), builtin.into());
        m.insert("items".into(), items.into());
        m.insert("description".into(), p.describe().into());
    }
    v
}

/// Reads a file the user named as input: a regular file within `limit` bytes (a FIFO, a
/// device or `/dev/zero` is refused at once, see [`fsx::read_input_file`]).
fn read_input(path: &Path, limit: u64, what: &'static str) -> Result<String> {
    fsx::read_input_text(path, limit, what)
        .map_err(|e| AppError::usage(format!("cannot read {what}: {e}")))
}

fn read_policy_file(path: &Path) -> Result<crate::policy::Policy> {
    let text = read_input(path, fsx::limits::POLICY, "a policy file")?;
    crate::policy::Policy::from_toml_str(&text, &path.display().to_string())
        .map_err(|e| AppError::usage(e.to_string()))
}

async fn run_headless(setup: &Setup) -> Result<u8> {
    let engine = open_owner(setup)?;
    let stop = crate::cancel::CancelToken::new();
    let mut signals = StopSignals::new()?;
    tracing::info!(
        vault = engine.vault_name(),
        "vmvault run: engine and scheduler started"
    );
    errln!(
        "vmvault run: vault {} ({}, {} source); scheduler running. Logs: {}. Stop with Ctrl-C, SIGTERM or SIGHUP.",
        engine.vault_name(),
        engine.region(),
        engine.source_kind(),
        setup.config.log_file.clone().unwrap_or_else(|| setup.data_dir.join("vmvault.log")).display()
    );
    let sched = {
        let e = engine.clone();
        let s = stop.clone();
        tokio::spawn(async move { e.run_scheduler(s).await })
    };
    let signal = signals.recv().await;
    tracing::info!(signal = signal.name(), "vmvault run: stopping");
    // The scheduler first, then the engine: no round, and no clean-up after the cancelled
    // backups, starts once the signal came.
    stop.cancel();
    let running = engine.running_job_count();
    engine.shutdown(std::time::Duration::from_secs(30)).await;
    let _ = sched.await;
    tracing::info!(cancelled = running, "vmvault run: stopped");
    errln!("vmvault run: stopped ({running} running job(s) cancelled)");
    Ok(0)
}

async fn sim(setup: &Setup, cmd: SimCommand) -> Result<u8> {
    match cmd {
        SimCommand::Now(a) => {
            let engine = setup.open(OpenMode::ReadOnly)?;
            require_sim(&engine)?;
            let now = engine.now();
            if a.json {
                print_json(
                    &json!({ "now": fmt::rfc3339(now), "offset_seconds": (now - chrono::Utc::now()).num_seconds() }),
                );
            } else {
                outln!("{}", fmt::rfc3339(now));
            }
            Ok(0)
        }
        SimCommand::Advance(a) => {
            let by = fmt::parse_period(&a.by).map_err(AppError::usage)?;
            let engine = open_owner(setup)?;
            require_sim(&engine)?;
            let mut stopped_by = None;
            let r: AdvanceReport = if a.offline {
                engine.sim_advance_offline(by)?
            } else {
                // A stop signal stops after the current step, with the clock saved there.
                let stop = crate::cancel::CancelToken::new();
                let mut signals = StopSignals::new()?;
                let advance = engine.sim_advance(by, stop.clone());
                tokio::pin!(advance);
                tokio::select! {
                    r = &mut advance => r?,
                    signal = signals.recv() => {
                        errln!("{}: stopping after the current step…", signal.name());
                        stopped_by = Some(signal);
                        stop.cancel();
                        advance.await?
                    }
                }
            };
            if a.json {
                print_json(&serde_json::to_value(&r).unwrap_or(Value::Null));
            } else {
                outln!(
                    "Simulated clock: {} → {} UTC. {} scheduled backup(s) ({} failed), {} expired point(s) removed, {} garbage collection(s); {} recovery point(s) now. Took {:.1}s.",
                    fmt::time(r.from),
                    fmt::time(r.to),
                    r.backups,
                    r.backups_failed,
                    r.points_removed,
                    r.gc_runs,
                    r.points_alive,
                    r.elapsed_seconds
                );
            }
            if let Some(job) = &r.gc_failed_job {
                errln!(
                    "warning: {} of the {} garbage collection(s) failed or were refused, so nothing was freed by them; `vmvault job {job}` says why",
                    r.gc_failed,
                    r.gc_runs
                );
            }
            if r.interrupted {
                errln!(
                    "Interrupted at {} UTC (simulated); `vmvault sim advance` goes on from there.",
                    fmt::time(r.to)
                );
                // 130 for Ctrl-C, as for a cancel for SIGTERM and SIGHUP (as other commands).
                return Ok(stopped_by.map_or(exit::INTERRUPTED, StopSignal::exit_code));
            }
            Ok(exit::OK)
        }
        SimCommand::ExportDisk(a) => {
            let engine = setup.open(OpenMode::ReadOnly)?;
            let sim = require_sim(&engine)?;
            let now = engine.now();
            let at = match &a.at {
                Some(s) => {
                    fmt::parse_time(s, false).map_err(|e| AppError::usage(format!("--at: {e}")))?
                }
                None => now,
            };
            // The simulated disks have a history up to the simulated clock, not beyond (and
            // working out a day far ahead would take as long as every day before it).
            if at > now {
                return Err(AppError::usage(format!(
                    "--at {}: that is after the simulated clock ({} UTC); give a time up to `vmvault sim now`, or move the clock with `vmvault sim advance`",
                    fmt::rfc3339(at),
                    fmt::time(now)
                )));
            }
            let item = engine.resolve_item(&a.vm)?;
            if !item.disks.iter().any(|d| d.index == a.disk) {
                return Err(AppError::usage(format!(
                    "{} has no disk {}; its disks are {}",
                    item.qualified_name(),
                    a.disk,
                    item.disks
                        .iter()
                        .map(|d| d.index.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            // A dangling symlink counts as taken: the file is never written through one.
            if a.to.symlink_metadata().is_ok() {
                return Err(AppError::usage(format!(
                    "{} exists already; choose another file",
                    a.to.display()
                )));
            }
            let n = sim
                .export_disk(&item.id, a.disk, at, &a.to)
                .map_err(|e| AppError::failed(e.details().to_string()))?;
            outln!(
                "Wrote {} ({} of data) as disk {} of {} held it at {}",
                a.to.display(),
                fmt::bytes(n),
                a.disk,
                item.qualified_name(),
                fmt::rfc3339(at)
            );
            Ok(0)
        }
    }
}

fn require_sim(engine: &Engine) -> Result<Arc<crate::provider::sim::SimProvider>> {
    engine.simulator().ok_or_else(|| {
        AppError::usage(format!(
            "`sim` commands need a simulated source; vault {} uses the {} source",
            engine.vault_name(),
            engine.source_kind()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_how_jobs_ended() {
        let job = |status| Job {
            id: "j".into(),
            operation: JobOperation::Backup,
            item_id: None,
            item: "vm".into(),
            status,
            start_time: chrono::Utc::now(),
            end_time: None,
            bytes_done: 0,
            bytes_total: 0,
            is_user_triggered: true,
            tasks: vec![],
            error: None,
            details: Default::default(),
        };
        use JobStatus::*;
        assert_eq!(
            exit_code_of(&[job(Completed), job(CompletedWithWarnings)]),
            exit::OK
        );
        assert_eq!(
            exit_code_of(&[job(Completed), job(Cancelled)]),
            exit::CANCELLED
        );
        assert_eq!(exit_code_of(&[job(Cancelled), job(Failed)]), exit::FAILED);
        assert_eq!(exit_code_of(&[job(InProgress)]), exit::FAILED);
    }
}
