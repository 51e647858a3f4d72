//! The vault: its data ([`Vault`]: chunks, point indexes and manifests, the objects that
//! describe it) as objects of a storage [`backend`], encoded by the [`codec`] (compressed,
//! encrypted with the vault's [`keys`]); and a catalog (SQLite), the rebuildable cache of
//! what the backend holds plus the job history. One process owns a vault at a time
//! ([`lock`]); in object storage, a lock object its owner keeps refreshing ([`lease`]).

pub mod backend;
pub mod catalog;
pub mod codec;
pub mod folder;
pub mod keys;
pub mod lease;
pub mod lock;
pub mod manifest;
pub mod store;
pub mod unlock;

pub use store::Vault;
