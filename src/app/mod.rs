//! The composition root: configuration → data folder → sources → engines, shared by both
//! front ends (`cli` and `tui`). It decides how a vault is opened (its folder, its source,
//! its settings) once, so that the console and the command line open vaults alike.

use crate::config::{Config, ConfigError, SourceConfig, VaultConfig};
use crate::engine::{Engine, EngineError, EngineOptions, OpenMode};
use crate::fmt;
use crate::provider::Provider;
use chrono::Duration;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The exit codes of `vmvault` (README and `--help` list them: scripts rely on them).
pub mod exit {
    /// Success: every job Completed (or CompletedWithWarnings).
    pub const OK: u8 = 0;
    /// The operation failed: a job Failed, or the vault could not do it.
    pub const FAILED: u8 = 1;
    /// Bad usage or bad input; nothing was changed.
    pub const USAGE: u8 = 2;
    /// A job was cancelled (`vmvault cancel`, the console, the vault shutting down): it did
    /// not do what was asked, and nothing it had started was committed.
    pub const CANCELLED: u8 = 3;
    /// Ctrl-C: the command stopped and cancelled its jobs (128 + SIGINT, as shells report).
    pub const INTERRUPTED: u8 = 130;
}

/// An error a front end reports: its message and the exit code it means.
#[derive(Debug)]
pub struct AppError {
    pub code: u8,
    pub message: String,
    /// Another process owns the vault (it can still be opened for reading).
    pub busy: bool,
}

impl AppError {
    pub fn usage(message: impl Into<String>) -> AppError {
        AppError {
            code: exit::USAGE,
            message: message.into(),
            busy: false,
        }
    }
    pub fn failed(message: impl Into<String>) -> AppError {
        AppError {
            code: exit::FAILED,
            message: message.into(),
            busy: false,
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Usage(m) => AppError::usage(m),
            EngineError::Locked(l) => AppError {
                busy: true,
                ..AppError::usage(l.to_string())
            },
            EngineError::Lease(l @ crate::vault::lease::LeaseError::Busy { .. }) => AppError {
                busy: true,
                ..AppError::usage(l.to_string())
            },
            e @ (EngineError::Failed(_)
            | EngineError::Catalog(_)
            | EngineError::Folder(_)
            | EngineError::Store(_)
            | EngineError::Unlock(_)
            | EngineError::Lease(_)) => AppError::failed(e.to_string()),
        }
    }
}

impl From<ConfigError> for AppError {
    fn from(e: ConfigError) -> Self {
        AppError::usage(format!("configuration error: {e}"))
    }
}

type Result<T> = std::result::Result<T, AppError>;

/// Resolved configuration for one invocation.
pub struct Setup {
    pub config: Config,
    pub vault: VaultConfig,
    pub data_dir: PathBuf,
    /// How an encrypted vault may be opened besides its key file.
    pub unlock: UnlockOptions,
}

/// What the front end gives to open an encrypted vault besides its key file (which the
/// configuration names): never a secret itself, only where to read one.
#[derive(Debug, Clone, Default)]
pub struct UnlockOptions {
    /// `--passphrase-file` (else `VMVAULT_PASSPHRASE_FILE` is read).
    pub passphrase_file: Option<PathBuf>,
    /// `--paper-key-file` (else `VMVAULT_PAPER_KEY_FILE` is read).
    pub paper_key_file: Option<PathBuf>,
    /// A passphrase may be asked on the terminal (the command line on a terminal only).
    pub prompt: bool,
}

impl Setup {
    pub fn load(
        cli_config: Option<&Path>,
        data_dir: Option<&Path>,
        vault: Option<&str>,
    ) -> Result<Setup> {
        let config = Config::load(cli_config)?;
        let vault = config.select_vault(vault)?.clone();
        let data_dir = config.data_dir(data_dir)?;
        config.check_vault_folders(&data_dir)?;
        for v in &config.vaults {
            let catalog = config
                .vault_dir(v, &data_dir)
                .join(crate::vault::catalog::CATALOG_FILE);
            crate::vault::catalog::check_path_length(&catalog)
                .map_err(|e| AppError::usage(format!("vault {}: {e}", v.name)))?;
        }
        let data = crate::fsx::Dir::open_private(&data_dir, true)
            .map_err(|e| AppError::failed(format!("data folder: {e}")))?;
        init_logging(&config, &data);
        // Ends what a killed earlier run left running (a qemu-nbd holding an image lock).
        crate::provider::supervise::init(&data_dir);
        Ok(Setup {
            config,
            vault,
            data_dir,
            unlock: UnlockOptions::default(),
        })
    }

    /// The same setup, opening encrypted vaults also with what `unlock` gives.
    pub fn with_unlock(mut self, unlock: UnlockOptions) -> Setup {
        self.unlock = unlock;
        self
    }

    pub fn vault_dir(&self) -> PathBuf {
        self.config.vault_dir(&self.vault, &self.data_dir)
    }

    /// Opens the engine of the selected vault (for the command line: where the key file of
    /// a vault this made is, is said on stderr; the console says it in its own way).
    pub fn open(&self, mode: OpenMode) -> Result<Engine> {
        let engine = self.open_vault(&self.vault, mode)?;
        if let Some(path) = engine.new_key_file() {
            write_stderr(format_args!(
                "vmvault: new vault {} is encrypted; its key file is {}. Keep a copy of it somewhere safe (not next to the vault): without it the backups cannot be read.",
                engine.vault_name(),
                path.display()
            ));
        }
        if engine.opened_with() == Some(crate::vault::unlock::Opened::PaperKey) {
            let slots = engine.key_slots().map(|s| s.len()).unwrap_or(0);
            if slots == 0 {
                write_stderr(format_args!(
                    "vmvault: vault {} was opened with its paper key and has no key slot left: add one now, e.g. `vmvault key add --key-file {}` (a new key file where the configuration expects it) or `vmvault key add --passphrase`, each with the paper key given once more.",
                    engine.vault_name(),
                    engine
                        .key_file_path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "PATH".into())
                ));
            }
        }
        Ok(engine)
    }

    pub fn open_vault(&self, vault: &VaultConfig, mode: OpenMode) -> Result<Engine> {
        Ok(Engine::open(self.engine_options(vault)?, mode)?)
    }

    /// What the engine of `vault` is opened with.
    pub fn engine_options(&self, vault: &VaultConfig) -> Result<EngineOptions> {
        let (provider, simulator) = build_provider(&vault.source, &vault.name)?;
        let threads = match self.config.engine.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let opts = EngineOptions {
            vault_name: vault.name.clone(),
            region: vault.region.clone(),
            dir: self.config.vault_dir(vault, &self.data_dir),
            provider,
            simulator,
            chunk_size: vault.chunk_size_kib * 1024,
            compression_level: vault.compression_level,
            read_limit_mib_s: vault.read_limit_mib_s,
            gc_grace: Duration::minutes(vault.gc_grace_minutes as i64),
            max_concurrent_jobs: self.config.engine.max_concurrent_jobs,
            threads,
            other_vaults: self
                .config
                .vaults
                .iter()
                .filter(|v| v.name != vault.name)
                .map(|v| (v.name.clone(), v.region.clone()))
                .collect(),
            new_layout: crate::vault::folder::Layout::V2 {
                encrypted: vault.encryption == crate::config::Encryption::Aes256Gcm,
            },
            storage: vault.object_storage().cloned(),
            keys: crate::vault::unlock::KeySource {
                key_file: vault.key_file.clone(),
                key_dir: self.config.folder.as_ref().map(|f| f.join("keys")),
                passphrase_file: self.unlock.passphrase_file.clone(),
                paper_key_file: self.unlock.paper_key_file.clone(),
                prompt: self.unlock.prompt,
            },
        };
        Ok(opts)
    }
}

type Providers = (
    Arc<dyn Provider>,
    Option<Arc<crate::provider::sim::SimProvider>>,
);

/// Builds the provider a vault's source names, for the vault named `vault`.
pub fn build_provider(source: &SourceConfig, vault: &str) -> Result<Providers> {
    match source {
        SourceConfig::Simulated(s) => {
            let sub = crate::provider::sim::Subscription::load(s)
                .map_err(|e| AppError::usage(e.to_string()))?;
            let sim = Arc::new(crate::provider::sim::SimProvider::new(sub, s));
            Ok((sim.clone(), Some(sim)))
        }
        SourceConfig::Images(s) => {
            let p = crate::provider::images::ImagesProvider::new(s)
                .map_err(|e| AppError::usage(e.details().to_string()))?;
            Ok((Arc::new(p), None))
        }
        SourceConfig::Libvirt(s) => {
            let p = crate::provider::libvirt::LibvirtProvider::new(s)
                .map_err(|e| AppError::usage(e.details().to_string()))?
                .for_vault(vault);
            Ok((Arc::new(p), None))
        }
    }
}

/// Opens the log (appending; never through a symlink, never a file of another user or with
/// other names) and installs the subscriber. A log that cannot be opened is skipped with a
/// warning: vmvault works without it.
fn init_logging(config: &Config, data_dir: &crate::fsx::Dir) {
    use std::sync::OnceLock;
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let opened = match config
        .log_file
        .as_ref()
        .map(|p| crate::config::expand_home(p))
    {
        None => data_dir.open_append("vmvault.log", 0o600),
        Some(path) => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            match path.file_name() {
                Some(name) => {
                    crate::fsx::Dir::open_user(&parent).and_then(|d| d.open_append(name, 0o600))
                }
                None => {
                    write_stderr(format_args!(
                        "warning: log_file {} names no file; logging is off",
                        path.display()
                    ));
                    return;
                }
            }
        }
    };
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            write_stderr(format_args!("warning: not logging: {e}"));
            return;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(SafeLog(std::sync::Mutex::new(file)))
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}

/// The log file, one line per event that no name can forge: every control character of an
/// event except its final line break is escaped ([`fmt::escape`]), so a VM named
/// `x\n… job finished …` or holding terminal escapes shows as such.
struct SafeLog<W>(std::sync::Mutex<W>);

struct SafeLogLine<'a, W>(std::sync::MutexGuard<'a, W>);

impl<'a, W: Write + 'a> tracing_subscriber::fmt::MakeWriter<'a> for SafeLog<W> {
    type Writer = SafeLogLine<'a, W>;
    fn make_writer(&'a self) -> Self::Writer {
        SafeLogLine(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<W: Write> Write for SafeLogLine<'_, W> {
    /// Gets one whole formatted event (the formatter writes each event at once).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        // The log is best effort: a line that cannot be written (the disk is full) is
        // dropped, not reported on stderr for every event.
        let mut line = fmt::escape(body).into_owned();
        line.push_str(end);
        let _ = self.0.write_all(line.as_bytes());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// A line on stderr, escaped; a stderr nobody reads any more (a closed pipe) is not an
/// error worth dying for (eprintln! would panic).
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    let text = std::fmt::format(args);
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(crate::fmt::printable(&text).as_bytes())
        .and_then(|_| err.write_all(b"\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_cannot_be_forged_by_names() {
        let buf = Shared::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(SafeLog(std::sync::Mutex::new(buf.clone())))
            .with_ansi(false)
            .finish();
        let name = "web01\n2026-01-01T00:00:00Z  INFO job finished status=Completed\x1b[2J";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(item = %name, "job started");
            tracing::info!("second event");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(
                "item=web01\\n2026-01-01T00:00:00Z  INFO job finished status=Completed\\u{1b}[2J"
            ),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }

    /// A writer whose disk is full.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }

    #[test]
    fn a_log_on_a_full_disk_drops_lines_quietly() {
        use tracing_subscriber::fmt::MakeWriter;
        let log = SafeLog(std::sync::Mutex::new(Full));
        let mut w = log.make_writer();
        assert_eq!(w.write(b"a line\n").unwrap(), 7);
        assert!(w.flush().is_ok());
    }
}
