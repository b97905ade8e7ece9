//! `rewindb serve` (the HTTP server, in [`crate::serve`]) and `serve
//! new-token`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::args::ServeAction;
use super::repository::run_repository;
use super::{Cli, CliError, out};
use crate::error::Error;
use crate::serve::auth::{Scope, new_token};

pub fn run(
    cli: &Cli,
    w: &mut impl Write,
    config: Option<&Path>,
    action: Option<&ServeAction>,
) -> Result<(), CliError> {
    match action {
        Some(ServeAction::NewToken { name, scopes }) => {
            let scopes: Vec<Scope> = scopes
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, String>>()
                .map_err(Error::Usage)?;
            if name.trim().is_empty() || name.contains('"') {
                return Err(
                    Error::Usage("--name must be a non-empty name without quotes".into()).into(),
                );
            }
            let token = new_token();
            let quoted: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
            out(writeln!(
                w,
                "token (shown only now; give it to the client, store it nowhere else):\n\n  {token}\n\n\
                 add to the config:\n\n[[serve.token]]\nname = \"{name}\"\nscopes = [{}]\nblake3 = \"{}\"",
                quoted.join(", "),
                blake3::hash(token.as_bytes()).to_hex()
            ))
        }
        None => {
            let config = config.ok_or_else(|| {
                Error::Usage(
                    "rewindb serve needs --config FILE (a run config with a [serve] section)"
                        .into(),
                )
            })?;
            let cfg = crate::config::load(config)?;
            keep_arenas_few();
            let repository = run_repository(&cfg, cli);
            crate::serve::serve(crate::serve::ServeOptions {
                config: cfg,
                repository,
                cache_dir: cli.cache_dir.clone(),
                lock_wait: Duration::from_secs(cli.lock_wait),
            })?;
            Ok(())
        }
    }
}

/// The server runs job after job on threads of its own; glibc gives each
/// thread that allocates its own malloc arena and keeps what they free, so
/// the server's memory would climb with every backup (to about 240 MB after
/// 70 backups of a 256 MiB database here, against 46 MB with two arenas:
/// `docs/benchmarks.md`). Unless the operator chose otherwise, the process
/// starts itself again (same pid, same arguments) with `MALLOC_ARENA_MAX=2`,
/// which glibc reads only at start.
fn keep_arenas_few() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    tracing::warn!(
        "could not restart with MALLOC_ARENA_MAX=2 ({err}); memory may grow with each job"
    );
}
