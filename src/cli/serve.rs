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
