//! The `[serve]` section of a `run` config: where `rewindb serve` listens,
//! its TLS files, where API restores may write, the largest upload, and the
//! tokens it accepts (their blake3 only; see `docs/api.md`).

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::auth::{Scope, TokenSpec};
use crate::error::{Error, Result};

/// The default address: this machine only. Anything else is the operator's choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8077";
/// The default largest body of `POST /api/v1/import`.
pub const DEFAULT_MAX_UPLOAD: u64 = 1 << 30;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: Option<Spanned<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub restore_dir: Option<PathBuf>,
    /// "512MiB", "1GiB", or a number of bytes.
    pub max_upload: Option<Spanned<toml::Value>>,
    /// How often the server judges the sources' freshness for alerts
    /// (seconds; default 60).
    pub stale_check_secs: Option<u64>,
    #[serde(default)]
    pub token: Vec<TokenSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub name: Spanned<String>,
    pub scopes: Vec<Spanned<String>>,
    pub blake3: Spanned<String>,
}

/// The `[serve]` section, checked, with paths made absolute.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    /// (certificate chain, private key), PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub restore_dir: Option<PathBuf>,
    pub max_upload: u64,
    pub stale_check_secs: u64,
    pub tokens: Vec<TokenSpec>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            tls: None,
            restore_dir: None,
            max_upload: DEFAULT_MAX_UPLOAD,
            stale_check_secs: 60,
            tokens: Vec::new(),
        }
    }
}

impl ServeSettings {
    /// Checks the section; `at` names the line of a bad value.
    pub fn load(
        section: Option<&ServeSection>,
        base: &Path,
        at: &dyn Fn(Range<usize>, String) -> Error,
    ) -> Result<ServeSettings> {
        let Some(s) = section else {
            return Ok(ServeSettings::default());
        };
        let listen = match &s.listen {
            Some(l) => l.get_ref().parse().map_err(|_| {
                at(
                    l.span(),
                    format!(
                        "serve.listen {:?} is not an address and port (such as {DEFAULT_LISTEN})",
                        l.get_ref()
                    ),
                )
            })?,
            None => DEFAULT_LISTEN.parse().expect("a valid address"),
        };
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
            (None, None) => None,
            _ => {
                return Err(at(
                    0..0,
                    "serve: tls_cert and tls_key go together: set both, or neither".into(),
                ));
            }
        };
        let max_upload = match &s.max_upload {
            Some(v) => parse_size(v.get_ref()).ok_or_else(|| {
                at(
                    v.span(),
                    format!(
                        "serve.max_upload: {} is not a size such as \"512MiB\"",
                        v.get_ref()
                    ),
                )
            })?,
            None => DEFAULT_MAX_UPLOAD,
        };
        let mut tokens: Vec<TokenSpec> = Vec::new();
        for t in &s.token {
            let name = t.name.get_ref();
            if name.is_empty() || tokens.iter().any(|o| &o.name == name) {
                return Err(at(
                    t.name.span(),
                    format!("serve.token name {name:?} is empty or used twice"),
                ));
            }
            let mut scopes = Vec::new();
            for sc in &t.scopes {
                scopes.push(
                    sc.get_ref()
                        .parse::<Scope>()
                        .map_err(|e| at(sc.span(), e))?,
                );
            }
            let hash = blake3::Hash::from_hex(t.blake3.get_ref().trim()).map_err(|_| {
                at(
                    t.blake3.span(),
                    format!(
                        "serve.token {name:?}: blake3 is not 64 hex digits (make one with \
                         `rewindb serve new-token`)"
                    ),
                )
            })?;
            tokens.push(TokenSpec {
                name: name.clone(),
                scopes,
                hash,
            });
        }
        Ok(ServeSettings {
            listen,
            tls,
            restore_dir: s.restore_dir.as_ref().map(|d| base.join(d)),
            max_upload,
            stale_check_secs: s.stale_check_secs.unwrap_or(60),
            tokens,
        })
    }
}

/// `1048576`, `"512MiB"`, `"1GiB"`, `"10MB"`.
fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).ok(),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" => 1_000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            n.checked_mul(mult)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&toml::Value::Integer(10)), Some(10));
        assert_eq!(parse_size(&"512MiB".into()), Some(512 << 20));
        assert_eq!(parse_size(&"2 GiB".into()), Some(2 << 30));
        assert_eq!(parse_size(&"5MB".into()), Some(5_000_000));
        assert_eq!(parse_size(&"lots".into()), None);
        assert_eq!(parse_size(&toml::Value::Integer(-1)), None);
    }
}
