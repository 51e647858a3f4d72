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
pub mod engine;
pub mod fmt;
pub mod fsx;
pub mod model;
pub mod policy;
pub mod provider;
pub mod tui;
pub mod vault;
