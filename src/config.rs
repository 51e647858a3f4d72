//! Configuration: a TOML file (`config.example.toml` documents every key), default
//! locations from `directories` (XDG), and an embedded default used when no file exists:
//! one vault per region of the simulated subscription.
//!
//! Every error names the file, the line, the key and what was expected.

use crate::provider::images::ImagesSettings;
use crate::provider::libvirt::LibvirtSettings;
use crate::provider::sim::SimSettings;
pub use crate::vault::backend::ObjectStorage;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The configuration used when the user has none: the simulated subscription, one vault
/// per region.
pub const EMBEDDED_DEFAULT: &str = include_str!("../assets/default-config.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where vaults live unless a vault sets `storage`.
    pub data_dir: Option<PathBuf>,
    /// The log file (default `<data_dir>/vmvault.log`).
    pub log_file: Option<PathBuf>,
    /// The vault used when `--vault` is not given (default: the first).
    pub default_vault: Option<String>,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default, rename = "vault")]
    pub vaults: Vec<VaultConfig>,
    #[serde(default)]
    pub tui: TuiConfig,
    /// Where this configuration came from (a path, or "embedded default").
    #[serde(skip)]
    pub origin: String,
    /// The folder of the configuration file (for the embedded default, the XDG config
    /// folder, where a config file would be): vault key files live in its `keys/`.
    #[serde(skip)]
    pub folder: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Data jobs (backup, restore, verify, garbage collection) running at once.
    pub max_concurrent_jobs: usize,
    /// Worker threads per data job; 0 = the number of cores.
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_concurrent_jobs: 2,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    pub name: String,
    pub region: String,
    /// Where the vault keeps its data: a folder (default `<data_dir>/vaults/<name>`), or
    /// object storage (then `<data_dir>/vaults/<name>` keeps the catalog, a cache).
    pub storage: Option<Storage>,
    /// Chunk size of a new vault, in KiB (a power of two, 64..=16384). Fixed once the
    /// vault exists (kept in its catalog).
    #[serde(default = "default_chunk_kib")]
    pub chunk_size_kib: u32,
    /// zstd level for chunks (1..=19).
    #[serde(default = "default_compression")]
    pub compression_level: i32,
    /// Unreferenced chunks younger than this are kept by garbage collection.
    #[serde(default = "default_gc_grace")]
    pub gc_grace_minutes: u64,
    /// How fast one backup job may read a VM's disks, all disks together, in MiB/s (0: as
    /// fast as they go). Keeps backups from taking the disk bandwidth running VMs need.
    #[serde(default)]
    pub read_limit_mib_s: u64,
    /// Encryption of a new vault (an existing vault keeps what it was made with).
    #[serde(default)]
    pub encryption: Encryption,
    /// The key file of the vault (default `<config folder>/keys/<vault id>.key`).
    pub key_file: Option<PathBuf>,
    pub source: SourceConfig,
}

/// Where a vault keeps its data: `storage = "/srv/vault"` (a folder) or
/// `storage = { kind = "s3", bucket = "…", … }` / `{ kind = "azure", … }` (object storage:
/// [`ObjectStorage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Folder(PathBuf),
    Object(ObjectStorage),
}

impl<'de> Deserialize<'de> for Storage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Storage, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Storage::Folder(PathBuf::from(s))),
            v @ toml::Value::Table(_) => ObjectStorage::deserialize(v)
                .map(Storage::Object)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "{}; expected {{ kind = \"s3\", bucket = \"…\", prefix, endpoint, region }} or {{ kind = \"azure\", account = \"…\", container = \"…\", prefix, endpoint }}",
                        e.message().trim_end_matches('\n')
                    ))
                }),
            other => Err(D::Error::custom(format!(
                "storage: expected a folder (a string) or object storage (a table with kind = \"s3\" or \"azure\"), found {} {}",
                if other.type_str().starts_with(['a', 'i']) { "an" } else { "a" },
                other.type_str()
            ))),
        }
    }
}

impl VaultConfig {
    /// The vault's object storage, when its data lives there.
    pub fn object_storage(&self) -> Option<&ObjectStorage> {
        match &self.storage {
            Some(Storage::Object(o)) => Some(o),
            _ => None,
        }
    }
}

/// Whether a new vault encrypts what it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encryption {
    /// AES-256-GCM with a key kept wrapped in the vault (the default).
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// No encryption: anyone who can read the vault folder can read the backups.
    #[serde(rename = "none")]
    None,
}

/// 1 MiB: a changed block costs one chunk, so smaller chunks store less per change (a 1 %
/// change of a 2 GiB disk adds about 30 MB at 1 MiB against 60 MB at 4 MiB) while keeping
/// indexes small (32 bytes per MiB of data). See the benchmarks in the README.
fn default_chunk_kib() -> u32 {
    1024
}
fn default_compression() -> i32 {
    3
}
fn default_gc_grace() -> u64 {
    60
}

/// The longest grace period of garbage collection: a year, in minutes.
pub const MAX_GC_GRACE_MINUTES: u64 = 365 * 24 * 60;
/// The longest vault name (Azure's limit for Recovery Services vaults).
pub const MAX_VAULT_NAME_LEN: usize = 50;
/// The most worker threads per data job a configuration may ask for.
pub const MAX_THREADS: usize = 256;
/// The highest read limit (1 TiB/s): more is no limit at all.
pub const MAX_READ_LIMIT_MIB_S: u64 = 1 << 20;

/// Where a vault's VMs come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Simulated(SimSettings),
    Images(ImagesSettings),
    Libvirt(LibvirtSettings),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Simulated(_) => "simulated",
            SourceConfig::Images(_) => "images",
            SourceConfig::Libvirt(_) => "libvirt",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuiConfig {
    /// Mouse support (click tabs and rows, scroll).
    pub mouse: bool,
    /// Action name → key, e.g. `discover = "d"`, `quit = "ctrl-q"`.
    pub keys: BTreeMap<String, String>,
    /// Colour role → colour name or `#rrggbb`.
    pub theme: BTreeMap<String, String>,
}

/// A configuration error: file, line, key, and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

/// The key whose value starts at `offset` (`key = value` on that line, also inside an
/// inline table), if the text there reads so.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let eq = line.rfind('=')?;
    // Only a value right after the `=` (a span at the key itself is about the key).
    if !line[eq + 1..].trim().is_empty() {
        return None;
    }
    let head = line[..eq].trim_end();
    // After the last character that cannot be in a bare key (which may take several
    // bytes: the key starts after all of them).
    let start = head
        .char_indices()
        .rfind(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let key = &head[start..];
    (!key.is_empty()).then_some(key)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Where the configuration is read from when `--config` / `VMVAULT_CONFIG` is not given.
pub fn default_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "vmvault").map(|d| d.config_dir().join("config.toml"))
}

/// The default data folder (XDG data home).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "vmvault").map(|d| d.data_dir().to_path_buf())
}

impl Config {
    /// Parses and checks a configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            // serde quotes the bad value, which may be huge.
            let mut message = crate::fmt::echo_at_most(e.message(), 1000);
            // A bad value: serde says what was expected but not of which key.
            if let Some(key) = e.span().and_then(|s| key_before(text, s.start)) {
                if !message.contains(key) {
                    message = format!("{key}: {message}");
                }
            }
            ConfigError {
                origin: origin.to_string(),
                line,
                message,
            }
        })?;
        cfg.origin = origin.to_string();
        cfg.check(text)?;
        Ok(cfg)
    }

    /// Loads the configuration: `explicit` (from `--config` or `VMVAULT_CONFIG`), else the
    /// XDG config file when it exists, else the embedded default.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => default_config_path().filter(|p| p.exists()),
        };
        match path {
            Some(p) => {
                let origin = p.display().to_string();
                let text = crate::fsx::read_input_text(
                    &p,
                    crate::fsx::limits::CONFIG,
                    "a configuration file",
                )
                .map_err(|e| ConfigError {
                    origin: origin.clone(),
                    line: None,
                    message: format!("cannot read the configuration file: {e}"),
                })?;
                let mut cfg = Config::parse(&text, &origin)?;
                let dir = match p.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                cfg.resolve_relative_paths(&dir);
                cfg.folder = Some(dir);
                Ok(cfg)
            }
            None => {
                let mut cfg = Config::parse(EMBEDDED_DEFAULT, "embedded default configuration")?;
                cfg.folder = default_config_path().and_then(|p| p.parent().map(Path::to_path_buf));
                Ok(cfg)
            }
        }
    }

    /// Checks what serde cannot: ranges, unique names. Errors point at the vault's line.
    fn check(&self, text: &str) -> Result<(), ConfigError> {
        let err = |needle: &str, message: String| {
            let line = text.find(needle).map(|o| line_of(text, o));
            ConfigError {
                origin: self.origin.clone(),
                line,
                message,
            }
        };
        if self.vaults.is_empty() {
            return Err(err(
                "",
                "no [[vault]] is defined: add one (see config.example.toml)".into(),
            ));
        }
        // An empty path is no path: it would mean the working folder (or the config's).
        for (key, path, default) in [
            ("data_dir", &self.data_dir, "the XDG data folder"),
            ("log_file", &self.log_file, "<data_dir>/vmvault.log"),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(err(
                    key,
                    format!("{key} is empty, expected a path (remove the key for the default, {default})"),
                ));
            }
        }
        if self.engine.max_concurrent_jobs == 0 || self.engine.max_concurrent_jobs > 64 {
            return Err(err(
                "max_concurrent_jobs",
                format!(
                    "engine.max_concurrent_jobs: {} is out of range, expected 1..=64",
                    self.engine.max_concurrent_jobs
                ),
            ));
        }
        if self.engine.threads > MAX_THREADS {
            return Err(err(
                "threads",
                format!(
                    "engine.threads: {} is out of range, expected 0 (one per core) to {MAX_THREADS}",
                    self.engine.threads
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for v in &self.vaults {
            let at = format!("\"{}\"", v.name);
            // Keys of this vault are found after its name.
            let from = text.find(&at).unwrap_or(0);
            let err = |needle: &str, message: String| {
                let line = text[from..]
                    .find(needle)
                    .map(|o| line_of(text, from + o))
                    .or_else(|| text.find(needle).map(|o| line_of(text, o)));
                ConfigError {
                    origin: self.origin.clone(),
                    line,
                    message,
                }
            };
            if v.name.trim().is_empty()
                || v.name.len() > MAX_VAULT_NAME_LEN
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(err(
                    &at,
                    format!(
                        "vault.name: \"{}\" is not a valid vault name, expected 1 to {MAX_VAULT_NAME_LEN} letters, digits, '-', '_' or '.'",
                        crate::fmt::echo(&v.name)
                    ),
                ));
            }
            if !seen.insert(v.name.to_lowercase()) {
                return Err(err(
                    &at,
                    format!(
                        "vault.name: \"{}\" is defined twice, expected unique names",
                        v.name
                    ),
                ));
            }
            if v.region.trim().is_empty() {
                return Err(err(&at, format!("vault \"{}\": region is empty, expected a region name such as \"westeurope\"", v.name)));
            }
            if let Some(Storage::Object(o)) = &v.storage {
                if let Err(why) = o.check() {
                    return Err(err(
                        "storage",
                        format!("vault \"{}\": storage: {why}", v.name),
                    ));
                }
            }
            if matches!(&v.storage, Some(Storage::Folder(p)) if p.as_os_str().is_empty()) {
                return Err(err(
                    "storage",
                    format!("vault \"{}\": storage is empty, expected a folder (remove the key for the default, <data_dir>/vaults/{})", v.name, v.name),
                ));
            }
            if v.key_file
                .as_ref()
                .is_some_and(|p| p.as_os_str().is_empty())
            {
                return Err(err(
                    "key_file",
                    format!("vault \"{}\": key_file is empty, expected a file path (remove the key for the default, <config folder>/keys/<vault id>.key)", v.name),
                ));
            }
            if !v.chunk_size_kib.is_power_of_two() || !(64..=16384).contains(&v.chunk_size_kib) {
                return Err(err(
                    "chunk_size_kib",
                    format!(
                        "vault \"{}\": chunk_size_kib = {} is not allowed, expected a power of two from 64 to 16384",
                        v.name, v.chunk_size_kib
                    ),
                ));
            }
            if let SourceConfig::Simulated(sim) = &v.source {
                if let Err(crate::provider::sim::SimError::Setting { key, message }) =
                    sim.validate()
                {
                    return Err(err(
                        key,
                        format!("vault \"{}\": source.{key}: {message}", v.name),
                    ));
                }
            }
            if let SourceConfig::Images(images) = &v.source {
                if let Err((key, message)) = images.validate() {
                    return Err(err(
                        key,
                        format!("vault \"{}\": source.{key}: {message}", v.name),
                    ));
                }
            }
            if v.gc_grace_minutes > MAX_GC_GRACE_MINUTES {
                return Err(err(
                    "gc_grace_minutes",
                    format!(
                        "vault \"{}\": gc_grace_minutes = {} is out of range, expected 0 to {MAX_GC_GRACE_MINUTES} (a year)",
                        v.name, v.gc_grace_minutes
                    ),
                ));
            }
            if v.read_limit_mib_s > MAX_READ_LIMIT_MIB_S {
                return Err(err(
                    "read_limit_mib_s",
                    format!(
                        "vault \"{}\": read_limit_mib_s = {} is out of range, expected 0 (no limit) to {MAX_READ_LIMIT_MIB_S}",
                        v.name, v.read_limit_mib_s
                    ),
                ));
            }
            if !(1..=19).contains(&v.compression_level) {
                return Err(err(
                    "compression_level",
                    format!(
                        "vault \"{}\": compression_level = {} is out of range, expected 1..=19",
                        v.name, v.compression_level
                    ),
                ));
            }
        }
        if let Some(d) = &self.default_vault {
            if self.vault(d).is_none() {
                return Err(err(
                    "default_vault",
                    format!(
                        "default_vault: no vault is named \"{}\", expected one of: {}",
                        crate::fmt::echo(d),
                        self.vault_names()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Paths in the file are relative to the file's folder, not to the working directory.
    fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            let expanded = expand_home(p);
            *p = if expanded.is_relative() {
                base.join(expanded)
            } else {
                expanded
            };
        };
        if let Some(d) = &mut self.data_dir {
            fix(d);
        }
        if let Some(l) = &mut self.log_file {
            fix(l);
        }
        for v in &mut self.vaults {
            if let Some(Storage::Folder(s)) = &mut v.storage {
                fix(s);
            }
            if let Some(k) = &mut v.key_file {
                fix(k);
            }
            match &mut v.source {
                SourceConfig::Simulated(s) => {
                    if let Some(p) = &mut s.subscription {
                        fix(p);
                    }
                }
                SourceConfig::Images(s) => {
                    fix(&mut s.path);
                    s.allowed_roots.iter_mut().for_each(&fix);
                }
                SourceConfig::Libvirt(s) => {
                    if let Some(p) = &mut s.scratch_dir {
                        fix(p);
                    }
                }
            }
        }
    }

    pub fn vault_names(&self) -> String {
        self.vaults
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn vault(&self, name: &str) -> Option<&VaultConfig> {
        self.vaults
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
    }

    /// The vault to use: `name` when given, else `default_vault`, else the first.
    pub fn select_vault(&self, name: Option<&str>) -> Result<&VaultConfig, ConfigError> {
        let wanted = name.or(self.default_vault.as_deref());
        match wanted {
            Some(n) => self.vault(n).ok_or_else(|| ConfigError {
                origin: self.origin.clone(),
                line: None,
                message: format!(
                    "no vault is named \"{}\"; configured vaults: {}",
                    crate::fmt::echo(n),
                    self.vault_names()
                ),
            }),
            None => self.vaults.first().ok_or_else(|| ConfigError {
                origin: self.origin.clone(),
                line: None,
                message: "no vault is defined".into(),
            }),
        }
    }

    /// The data folder: `--data-dir`, else `data_dir`, else the XDG data home.
    pub fn data_dir(&self, override_dir: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(d) = override_dir {
            return Ok(d.to_path_buf());
        }
        if let Some(d) = &self.data_dir {
            return Ok(expand_home(d));
        }
        default_data_dir().ok_or_else(|| ConfigError {
            origin: self.origin.clone(),
            line: None,
            message: "cannot find a home folder for the default data folder; set data_dir or pass --data-dir".into(),
        })
    }

    /// Checks that no two vaults share a folder (or one lies inside another's): their
    /// catalogs, locks and chunk stores would be one, and each would take the other's
    /// chunks for garbage. The same for the prefixes of vaults in one bucket.
    pub fn check_vault_folders(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let places: Vec<(&str, String, String)> = self
            .vaults
            .iter()
            .filter_map(|v| Some((v.name.as_str(), v.object_storage()?.place())))
            .map(|(n, (bucket, prefix))| (n, bucket, prefix))
            .collect();
        for (i, (a, ba, pa)) in places.iter().enumerate() {
            for (b, bb, pb) in &places[i + 1..] {
                let inside =
                    |x: &str, y: &str| y.is_empty() || x == y || x.starts_with(&format!("{y}/"));
                if ba == bb && (inside(pa, pb) || inside(pb, pa)) {
                    return Err(ConfigError {
                        origin: self.origin.clone(),
                        line: None,
                        message: format!(
                            "vaults \"{a}\" and \"{b}\" use the same place in {ba} (prefixes \"{pa}\" and \"{pb}\"): every vault needs a prefix of its own that is not inside another's"
                        ),
                    });
                }
            }
        }
        let dirs: Vec<(&str, PathBuf)> = self
            .vaults
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    comparable_path(&self.vault_dir(v, data_dir)),
                )
            })
            .collect();
        for (i, (a, da)) in dirs.iter().enumerate() {
            for (b, db) in &dirs[i + 1..] {
                let clash = if da == db {
                    Some(format!(
                        "vaults \"{a}\" and \"{b}\" use the same folder {}",
                        da.display()
                    ))
                } else if db.starts_with(da) || da.starts_with(db) {
                    Some(format!(
                        "the folder of vault \"{}\" ({}) lies inside the folder of vault \"{}\" ({})",
                        if db.starts_with(da) { b } else { a },
                        if db.starts_with(da) { db.display() } else { da.display() },
                        if db.starts_with(da) { a } else { b },
                        if db.starts_with(da) { da.display() } else { db.display() },
                    ))
                } else {
                    None
                };
                if let Some(what) = clash {
                    return Err(ConfigError {
                        origin: self.origin.clone(),
                        line: None,
                        message: format!(
                            "{what}: every vault needs a folder of its own (set a different `storage` for one of them)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The folder of a vault.
    pub fn vault_dir(&self, vault: &VaultConfig, data_dir: &Path) -> PathBuf {
        match &vault.storage {
            Some(Storage::Folder(p)) => expand_home(p),
            Some(Storage::Object(_)) | None => data_dir.join("vaults").join(&vault.name),
        }
    }
}

/// A path in a form two spellings of one folder agree on: absolute, `.`/`..` removed,
/// symlinks resolved as far as the path exists.
fn comparable_path(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            c => clean.push(c),
        }
    }
    // Resolve the longest existing prefix, keep the rest as written.
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(n), Some(parent)) => {
                rest.push(n);
                existing = parent.to_path_buf();
            }
            _ => return clean,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for n in rest.iter().rev() {
        out.push(n);
    }
    out
}

/// Expands a leading `~/` to the home folder.
pub fn expand_home(p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = directories::BaseDirs::new() {
            return home.home_dir().join(rest);
        }
    }
    p.to_path_buf()
}

#[cfg(test)]
mod tests {

    #[test]
    fn key_before_survives_multibyte_characters() {
        assert_eq!(key_before("é=", 3), None);
        assert_eq!(key_before("aé名x = ", 9), Some("x"));
        assert_eq!(key_before("{ ⊕key = ", 11), Some("key"));
    }

    use super::*;

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_and_line() {
        for (line, key) in [
            ("read_limit_mib_s = -1", "read_limit_mib_s"),
            ("read_limit_mib_s = 2.5", "read_limit_mib_s"),
            ("chunk_size_kib = \"big\"", "chunk_size_kib"),
            ("gc_grace_minutes = true", "gc_grace_minutes"),
        ] {
            let text = format!(
                "[[vault]]\nname = \"a\"\nregion = \"r\"\n{line}\nsource = {{ kind = \"simulated\" }}\n"
            );
            let e = Config::parse(&text, "c.toml").unwrap_err();
            assert_eq!(e.line, Some(4), "{line}: {e}");
            assert!(e.message.starts_with(&format!("{key}: ")), "{line}: {e}");
        }
        // An unknown key is named by serde already, once.
        let e = Config::parse("[engine]\nthreadz = 2\n", "c.toml").unwrap_err();
        assert_eq!(e.message.matches("threadz").count(), 1, "{e}");
    }

    #[test]
    fn two_vaults_never_share_a_folder() {
        let text = |a: &str, b: &str| {
            format!(
                "[[vault]]\nname = \"a\"\nregion = \"r\"\n{a}\nsource = {{ kind = \"simulated\" }}\n\n[[vault]]\nname = \"b\"\nregion = \"r\"\n{b}\nsource = {{ kind = \"simulated\" }}\n"
            )
        };
        let data = Path::new("/srv/vmvault");
        let ok = Config::parse(&text("", ""), "t").unwrap();
        ok.check_vault_folders(data).unwrap();
        let same = Config::parse(
            &text("storage = \"/srv/v\"", "storage = \"/srv/x/../v\""),
            "t",
        )
        .unwrap();
        let e = same.check_vault_folders(data).unwrap_err().to_string();
        assert!(e.contains("use the same folder /srv/v"), "{e}");
        // A vault's default folder given to another as its storage.
        let taken = Config::parse(&text("", "storage = \"/srv/vmvault/vaults/a\""), "t").unwrap();
        assert!(taken.check_vault_folders(data).is_err());
        let inside = Config::parse(
            &text("storage = \"/srv/v\"", "storage = \"/srv/v/chunks\""),
            "t",
        )
        .unwrap();
        let e = inside.check_vault_folders(data).unwrap_err().to_string();
        assert!(e.contains("lies inside"), "{e}");
    }

    #[test]
    fn embedded_default_parses() {
        let c = Config::parse(EMBEDDED_DEFAULT, "embedded").unwrap();
        assert!(c.vaults.len() >= 3);
        assert_eq!(c.select_vault(None).unwrap().name, c.vaults[0].name);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "[engine]\nmax_concurrent_jobs = 2\nthreds = 4\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(3));
        let s = e.to_string();
        assert!(s.starts_with("c.toml:3:"), "{s}");
        assert!(s.contains("threds") && s.contains("expected"), "{s}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = "[[vault]]\nname = \"a\"\nregion = \"r\"\nchunk_size_kib = \"big\"\nsource = { kind = \"simulated\" }\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().contains("expected"), "{e}");
    }

    #[test]
    fn bad_chunk_size_is_explained() {
        let text = "[[vault]]\nname = \"a\"\nregion = \"r\"\nchunk_size_kib = 1000\nsource = { kind = \"simulated\" }\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("power of two"), "{e}");
    }

    #[test]
    fn unknown_source_kind_lists_kinds() {
        let text = "[[vault]]\nname = \"a\"\nregion = \"r\"\nsource = { kind = \"vmware\" }\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("simulated"), "{e}");
    }

    /// The commented vault examples of config.example.toml, uncommented, parse: every key
    /// they show exists, with a value of the right type.
    #[test]
    fn commented_source_examples_of_the_example_config_parse() {
        let example = include_str!("../config.example.toml");
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in example.lines() {
            match (&mut current, line) {
                (None, "# [[vault]]") => current = Some("[[vault]]\n".into()),
                (Some(b), l) if l.starts_with("# ") => {
                    let l = &l[2..];
                    // Nested comments ("# # key = …") are optional keys: uncomment them too.
                    let l = l
                        .strip_prefix("# ")
                        .filter(|k| k.contains(" = ") && !k.starts_with(' '))
                        .unwrap_or(l);
                    if !l.starts_with('#') {
                        b.push_str(l);
                        b.push('\n');
                    }
                }
                (Some(_), _) => blocks.push(current.take().unwrap_or_default()),
                _ => {}
            }
        }
        let kinds: Vec<&str> = blocks
            .iter()
            .map(|b| {
                Config::parse(b, "example")
                    .unwrap_or_else(|e| panic!("{e}\n{b}"))
                    .vaults[0]
                    .source
                    .kind()
            })
            .collect();
        assert_eq!(kinds, ["images", "libvirt"]);
        assert!(
            blocks[0].contains("allow_crash_consistent_reads")
                && blocks[0].contains("allowed_roots"),
            "{}",
            blocks[0]
        );
        assert!(
            blocks[1].contains("scratch_dir") && blocks[1].contains("cloud_service"),
            "{}",
            blocks[1]
        );
    }

    #[test]
    fn images_source_refuses_an_empty_path_or_root_naming_line_and_key() {
        let text = "[[vault]]\nname = \"lab\"\nregion = \"r\"\n[vault.source]\nkind = \"images\"\nregion = \"r\"\npath = \"\"\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        let s = e.to_string();
        assert!(
            s.starts_with("c.toml:7:") && s.contains("source.path") && s.contains("empty"),
            "{s}"
        );
        let text = "[[vault]]\nname = \"lab\"\nregion = \"r\"\nsource = { kind = \"images\", path = \"/srv/i\", region = \"r\",\n  allowed_roots = [\"/srv/base\", \"\"] }\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("source.allowed_roots"), "{e}");
        // Relative roots are relative to the configuration file, like `path`.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[[vault]]\nname = \"lab\"\nregion = \"r\"\nsource = { kind = \"images\", path = \"img\", region = \"r\", allowed_roots = [\"base\"] }\n",
        )
        .unwrap();
        let c = Config::load(Some(&file)).unwrap();
        let SourceConfig::Images(s) = &c.vaults[0].source else {
            panic!("{:?}", c.vaults[0].source)
        };
        assert_eq!(s.path, dir.path().join("img"));
        assert_eq!(s.allowed_roots, vec![dir.path().join("base")]);
    }

    #[test]
    fn duplicate_vault_names_refused() {
        let text = "[[vault]]\nname = \"a\"\nregion = \"r\"\nsource = { kind = \"simulated\" }\n[[vault]]\nname = \"a\"\nregion = \"s\"\nsource = { kind = \"simulated\" }\n";
        let e = Config::parse(text, "c.toml").unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
    }
}
