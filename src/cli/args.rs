//! Command-line syntax. These names and flags are a contract (scripts use them): extend
//! them, don't rename them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "vmvault",
    version,
    about = "Back up virtual machines into a vault: discover → register → protect → back up → restore",
    long_about = "Back up virtual machines into a vault, following Azure Backup's portal flow.\n\
                  Without a command, opens the console. With no configuration file, uses the embedded \
                  default: a simulated subscription and one vault per region in your data folder.",
    after_help = "Exit codes: 0 success, 1 the operation failed (a job Failed), 2 bad usage or bad input \
                  (nothing was changed), 3 a job was cancelled (by `vmvault cancel`, the console, SIGTERM, \
                  SIGHUP or a shutdown), 130 interrupted by Ctrl-C (its jobs were cancelled). `vmvault job ID --wait` \
                  exits with the job's code.",
    args_override_self = true
)]
pub struct Cli {
    /// Configuration file (default: ~/.config/vmvault/config.toml, else the embedded default)
    #[arg(long, global = true, env = "VMVAULT_CONFIG", value_name = "FILE", value_parser = non_empty_path)]
    pub config: Option<PathBuf>,
    /// Data folder holding the vaults (default: ~/.local/share/vmvault)
    #[arg(long, global = true, env = "VMVAULT_DATA_DIR", value_name = "DIR", value_parser = non_empty_path)]
    pub data_dir: Option<PathBuf>,
    /// Vault to use (default: the config's default_vault, else the first)
    #[arg(long, global = true, env = "VMVAULT_VAULT", value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub vault: Option<String>,
    /// File whose first line is the passphrase of an encrypted vault, used when its key
    /// file does not open it (also VMVAULT_PASSPHRASE_FILE; on a terminal it is asked)
    #[arg(long, global = true, value_name = "FILE", value_parser = non_empty_path)]
    pub passphrase_file: Option<PathBuf>,
    /// File holding the vault's paper key (`vmvault key export --paper`): opens the vault
    /// when every key slot is lost (also VMVAULT_PAPER_KEY_FILE; mode 0600)
    #[arg(long, global = true, value_name = "FILE", value_parser = non_empty_path)]
    pub paper_key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The environment variables of the global flags. Set but empty, each counts as unset
/// ([`drop_empty_env`]), as `VMVAULT_CONFIG= vmvault …` is meant to clear it.
pub const ENV_FLAGS: [&str; 3] = ["VMVAULT_CONFIG", "VMVAULT_DATA_DIR", "VMVAULT_VAULT"];

/// Removes the empty ones of [`ENV_FLAGS`] from the environment. Called first thing in
/// `main`, before any other thread exists (changing the environment is not thread-safe).
pub fn drop_empty_env() {
    for var in ENV_FLAGS {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
}

/// A path given on the command line: an empty one names nothing (it would mean the working
/// folder).
fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err(
            "an empty path names nothing; give a path (or leave the option out for the default)"
                .into(),
        );
    }
    Ok(PathBuf::from(s))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Discover the VMs of the source (a Discover job) and list what was found
    Discover(JsonFlag),
    /// List discovered, registered and protected VMs
    Items(ItemsArgs),
    /// Register VMs with the vault (one Register job each; at most 1000 VMs at once)
    Register(RegisterArgs),
    /// Protect registered VMs with a backup policy (one ConfigureBackup job each; at most 100
    /// VMs at once, Azure Backup's limit per protect operation)
    Protect(ProtectArgs),
    /// Back up a protected VM now
    Backup(BackupArgs),
    /// List jobs
    Jobs(JobsArgs),
    /// Show one job: tasks, progress, error details
    Job(JobArgs),
    /// Cancel a running job
    Cancel(CancelArgs),
    /// The dashboard: counts, jobs of the last 24 hours, storage
    Summary(JsonFlag),
    /// List the recovery points of a VM: SIZE (what it restores), STORED (the compressed
    /// bytes it holds that the point before it does not; the oldest: all it holds), DAMAGED
    Points(PointsArgs),
    /// Restore the disks of a recovery point into a folder
    Restore(RestoreArgs),
    /// Re-read and re-hash every chunk the recovery points need
    Verify(VerifyArgs),
    /// Stop protection of a VM, keeping or deleting its backup data
    StopProtection(StopArgs),
    /// Resume protection of a VM whose protection was stopped
    ResumeProtection(ResumeArgs),
    /// Bring back soft-deleted backup data (the item becomes ProtectionStopped)
    Undelete(ItemArg),
    /// Backup policies
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Remove expired recovery points now (a Prune job)
    Prune(JsonFlag),
    /// Free chunks no recovery point needs (a GarbageCollect job)
    Gc(JsonFlag),
    /// Run the engine and scheduler without the console (for servers); stops on SIGTERM/SIGINT
    Run,
    /// List the configured vaults
    Vaults(JsonFlag),
    /// The vault itself: rebuild its catalog from its data
    #[command(subcommand)]
    Vault(VaultCommand),
    /// The simulated source: its clock and disks
    #[command(subcommand)]
    Sim(SimCommand),
    /// Keys of an encrypted vault: list its key slots, add a passphrase or a key file,
    /// remove a slot, change a passphrase, export a key file or the paper key
    #[command(subcommand)]
    Key(KeyCommand),
    /// (internal) run a job detached from the terminal for --no-wait
    #[command(hide = true)]
    Detached(DetachedArgs),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ItemsArgs {
    #[arg(long)]
    pub json: bool,
    /// Only items in this protection state (e.g. Protected, IRPending, NotProtected)
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// VMs: a name, or cloud-service/name when the name is ambiguous
    #[arg(required = true, value_name = "VM")]
    pub vms: Vec<String>,
    /// Start the jobs and return without waiting
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ProtectArgs {
    #[arg(required = true, value_name = "VM")]
    pub vms: Vec<String>,
    /// Backup policy (e.g. DefaultPolicy)
    #[arg(long, value_name = "NAME")]
    pub policy: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Keep this recovery point until this date (YYYY-MM-DD, end of day UTC, or RFC 3339); default 30 days
    #[arg(long, value_name = "DATE")]
    pub retain_until: Option<String>,
    /// Start the backup and print its job id without waiting (it goes on in the background)
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs started in this period (e.g. 24h, 7d, 30m) or since this time
    #[arg(long, value_name = "PERIOD")]
    pub since: Option<String>,
    /// Only jobs with this status (InProgress, Completed, CompletedWithWarnings, Failed, Cancelling, Cancelled)
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Only jobs of this operation (Discover, Register, ConfigureBackup, Backup, Restore, …)
    #[arg(long, value_name = "OPERATION")]
    pub operation: Vec<String>,
    /// Only jobs of this VM
    #[arg(long, value_name = "VM")]
    pub item: Option<String>,
    /// The newest N jobs; a running job the filters select is listed even when it is older
    /// (a long backup never hides behind shorter jobs started after it)
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Job id (or a unique prefix of at least 4 characters)
    #[arg(value_name = "JOB_ID")]
    pub id: String,
    /// Wait until the job has finished, and exit with its outcome (0, 1 failed, 3 cancelled)
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[arg(value_name = "JOB_ID")]
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PointsArgs {
    #[arg(value_name = "VM")]
    pub vm: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Recovery point id (or a unique prefix of at least 4 characters); see `vmvault points VM`
    #[arg(long, value_name = "POINT_ID")]
    pub point: String,
    /// Target folder; each disk is written as <vm>-disk<N>.<format>
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Image format: raw (sparse), or qcow2, vhd, vmdk through qemu-img
    #[arg(long, default_value = "raw", value_name = "FORMAT")]
    pub format: String,
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only the recovery points of this VM (default: the whole vault)
    #[arg(value_name = "VM")]
    pub vm: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("data").required(true).args(["retain_data", "delete_data"]))]
pub struct StopArgs {
    #[arg(value_name = "VM")]
    pub vm: String,
    /// Keep the recovery points (until deleted by hand); no more backups
    #[arg(long)]
    pub retain_data: bool,
    /// Delete the backup data (soft delete: kept 14 days, `vmvault undelete` brings it back)
    #[arg(long)]
    pub delete_data: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[arg(value_name = "VM")]
    pub vm: String,
    #[arg(long, value_name = "NAME")]
    pub policy: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ItemArg {
    #[arg(value_name = "VM")]
    pub vm: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the policies of the vault
    List(JsonFlag),
    /// Show a policy: schedule and every retention rule
    Show(PolicyName),
    /// Create a policy from a TOML file
    Create(PolicyFile),
    /// Replace a policy's schedule and retention from a TOML file (existing points are re-evaluated)
    Update(PolicyUpdate),
    /// Delete a policy no item uses
    Delete(PolicyName),
    /// Import an Azure Backup policy (AzureIaasVM) from its REST API JSON
    Import(PolicyImport),
    /// Which recovery points would exist after N days of a policy, and when each expires
    Preview(PolicyPreview),
}

#[derive(Debug, Args)]
pub struct PolicyName {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyFile {
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyUpdate {
    pub name: String,
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyImport {
    #[arg(value_name = "AZURE.json")]
    pub file: PathBuf,
    /// Name for the imported policy (when the file holds one)
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyPreview {
    pub name: String,
    /// First day (YYYY-MM-DD, in the policy's time zone); default today
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Number of days to simulate
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Rebuild a lost catalog (catalog.db) of a format 2 vault from the vault's own data:
    /// items, policies, recovery points and chunks (not the job history)
    Rebuild(JsonFlag),
    /// Convert a format 1 vault to format 2 (encrypted unless the vault's config says
    /// encryption = "none"): its points are copied into a new vault beside it, which then
    /// takes its place; the old one is kept as <name>.format1. Resumable; needs room for a
    /// second copy of the vault's data while it runs
    Upgrade(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Print the simulated clock
    Now(JsonFlag),
    /// Move the simulated clock forward (e.g. 800d, 12h, 2w; at most 100 years), running every
    /// scheduled backup and clean-up in between; Ctrl-C, SIGTERM or SIGHUP stops after the
    /// current step (exit 130)
    Advance(SimAdvance),
    /// Write what a simulated disk held at a time as a sparse raw image
    ExportDisk(SimExport),
}

#[derive(Debug, Args)]
pub struct SimAdvance {
    #[arg(value_name = "DURATION")]
    pub by: String,
    /// As if the vault was not running: no backups in between (the next start of the
    /// scheduler — `vmvault run` or the console — catches up once per item)
    #[arg(long)]
    pub offline: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimExport {
    #[arg(value_name = "VM")]
    pub vm: String,
    #[arg(long, default_value_t = 0)]
    pub disk: u32,
    /// Time (RFC 3339, or YYYY-MM-DD[ HH:MM[:SS]] UTC); default now
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
}

#[derive(Debug, Args)]
pub struct DetachedArgs {
    /// backup | restore
    pub what: String,
    pub vm: String,
    #[arg(long)]
    pub retain_until: Option<String>,
    #[arg(long)]
    pub point: Option<String>,
    #[arg(long)]
    pub to: Option<PathBuf>,
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots (id, kind, label, created, KDF parameters) and where the key file is
    List(JsonFlag),
    /// Add a way to open the vault: a passphrase (asked twice, or --new-passphrase-file) or a
    /// new key file
    Add(KeyAdd),
    /// Remove a key slot (never the last one, nor the one that opened the vault unless
    /// another slot you can open remains)
    Remove(KeySlotArg),
    /// Replace the passphrase of a passphrase slot (the new slot is added before the old one
    /// is removed)
    ChangePassphrase(KeyChangePassphrase),
    /// Export a new key file (with its slot), or print the paper key (the master key itself:
    /// it opens the vault when every slot is lost)
    Export(KeyExport),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("way").required(true).args(["passphrase", "key_file"]))]
pub struct KeyAdd {
    /// A passphrase slot (Argon2id, m = 64 MiB, t = 3, p = 1)
    #[arg(long)]
    pub passphrase: bool,
    /// A new key file written at PATH (mode 0600; an existing file is never replaced)
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub key_file: Option<PathBuf>,
    /// A label for the slot (default "passphrase" or "key file NAME")
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// File whose first line is the new passphrase (default: asked twice on the terminal)
    #[arg(long, value_name = "FILE", requires = "passphrase", value_parser = non_empty_path)]
    pub new_passphrase_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeySlotArg {
    /// Key slot id (or a unique prefix of at least 4 characters); see `vmvault key list`
    #[arg(value_name = "SLOT_ID")]
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeyChangePassphrase {
    /// The passphrase slot (id or a unique prefix of at least 4 characters)
    #[arg(value_name = "SLOT_ID")]
    pub id: String,
    /// File whose first line is the new passphrase (default: asked twice on the terminal)
    #[arg(long, value_name = "FILE", value_parser = non_empty_path)]
    pub new_passphrase_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["key_file", "paper"]))]
pub struct KeyExport {
    /// Write a new key file at PATH (mode 0600, never replacing a file) and add its slot
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub key_file: Option<PathBuf>,
    /// Print the paper key on stdout (advice on stderr): keep it offline, e.g. on paper
    #[arg(long)]
    pub paper: bool,
    /// A label for the new key file's slot (default "exported key file")
    #[arg(long, value_name = "LABEL", requires = "key_file")]
    pub label: Option<String>,
    #[arg(long)]
    pub json: bool,
}
