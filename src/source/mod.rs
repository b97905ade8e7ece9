//! Backup sources: the databases rewindb reads.

pub mod sqlite;
