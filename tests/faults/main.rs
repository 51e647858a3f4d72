//! The fault suite: vmvault attacked the way an unlucky administrator and a hostile local
//! user would. Each module is one kind of fault; every case states what must hold.

#[path = "../common/mod.rs"]
mod common;

mod disk;
mod kill;
mod vault;
