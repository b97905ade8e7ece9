//! rewindb: backups of databases into a content-addressed, deduplicated repository.
//!
//! Layers, from the bottom (see `docs/ARCHITECTURE.md` for the code map):
//! - [`id`], [`chunker`], [`time`], [`retention`], [`timeline`], [`selection`]:
//!   pure values and logic, no I/O;
//! - [`repo`]: the repository on disk (packs, index, snapshots, lock);
//! - [`source`]: reading databases consistently;
//! - [`pipeline`]: chunks into packs and a snapshot, and back into files;
//! - [`commands`]: what each subcommand does, as library functions;
//! - [`cli`]: argument parsing and output, the only place that prints.

pub mod alerts;
pub mod chunker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod error;
pub mod filehash;
pub mod id;
pub mod pipeline;
pub mod progress;
pub mod repo;
pub mod retention;
pub mod selection;
pub mod serve;
pub mod source;
pub mod time;
pub mod timeline;
