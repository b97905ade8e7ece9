//! The integration tests: real SQLite databases, the real binary, real processes.

mod alerts;
mod bad_input;
mod compat;
mod console;
mod encryption;
mod fault_proxy;
mod faults;
mod gc;
mod helpers;
mod operate;
mod pg;
mod postgres;
mod robustness;
mod s3;
mod s3_network;
mod selection;
mod serve;
mod sqlite;
mod timelines;
