//! The console (full-screen TUI).

use crate::cli::{CliError, Setup};

/// Opens the console on the selected vault.
pub async fn run(_setup: Setup) -> Result<u8, CliError> {
    Err(CliError::usage(
        "the console is not available in this build yet; use the subcommands (`vmvault --help`)",
    ))
}
