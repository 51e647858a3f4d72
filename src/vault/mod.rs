//! The vault: a catalog (SQLite) and a chunk store (files) in one folder, owned by one
//! process at a time.

pub mod backend;
pub mod catalog;
pub mod codec;
pub mod folder;
pub mod keys;
pub mod lock;
pub mod manifest;
pub mod store;
pub mod unlock;
