//! Backup sources: the databases rewindb reads.

pub mod postgres;
pub mod sqlite;
