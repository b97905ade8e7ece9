//! One module per subcommand family; each decides (plans) and acts, but never prints.

pub mod backup;
pub mod check;
pub mod forget;
pub mod gc;
pub mod maintenance;
pub mod pg_backup;
pub mod pg_check;
pub mod pg_restore;
pub mod pitr;
pub mod restore;
pub mod restore_plan;
pub mod run;
pub mod status;
pub mod stream;
pub mod wal;
