//! vmvault: backs up virtual machines into a vault, following Azure Backup's portal flow
//! (discover → register → protect → back up → monitor → restore).
//!
//! Layers (data flows one way): `model` (plain data) ← `policy` (pure schedule and
//! retention rules) ← `provider` (VM sources) and `vault` (catalog + chunk store) ←
//! `engine` (jobs, scheduler, events) ← front ends `cli` and `tui`.

pub mod app;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod direct_io;
pub mod disk;
pub mod engine;
pub mod fmt;
pub mod fsx;
pub mod model;
pub mod policy;
pub mod provider;
pub mod tui;
pub mod vault;

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers every module's tests share.

    /// Reports a test skipped for a missing facility (a tool, root) and returns false; panics
    /// under `VMVAULT_REQUIRE_TOOLS=1` (CI must not skip).
    pub fn skip(reason: &str) -> bool {
        if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("required by VMVAULT_REQUIRE_TOOLS=1: {reason}");
        }
        eprintln!("skipped: {reason}");
        false
    }
}
