//! Who may call the API: bearer tokens, known by their blake3 only, each with
//! scopes; and the slow-down of an address that keeps presenting bad tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a token may do (`docs/api.md`, "Authentication and scopes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET` but downloads.
    Read,
    /// Start backups and checks, import files.
    Backup,
    /// Download and restore databases.
    Restore,
    /// Forget and protect snapshots.
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "read" => Ok(Scope::Read),
            "backup" => Ok(Scope::Backup),
            "restore" => Ok(Scope::Restore),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope {other:?}: expected read, backup, restore or admin"
            )),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Backup => "backup",
            Scope::Restore => "restore",
            Scope::Admin => "admin",
        })
    }
}

/// A token as the config names it.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// blake3 of the token's text.
    pub hash: blake3::Hash,
}

/// The token that presents `bearer`, if any. `blake3::Hash` compares in
/// constant time, and every token is compared, so the answer's timing does
/// not tell which one came close.
pub fn find<'a>(tokens: &'a [TokenSpec], bearer: &str) -> Option<&'a TokenSpec> {
    let hash = blake3::hash(bearer.as_bytes());
    let mut found = None;
    for t in tokens {
        if t.hash == hash {
            found = Some(t);
        }
    }
    found
}

/// A fresh token: `rwdb_` and 256 random bits in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    format!("rwdb_{}", hex::encode(bytes))
}

/// The first delay after a failed attempt; it doubles with each one.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two attempts from one address.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// An address that has not failed for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Addresses that presented bad tokens, and when each may be answered next.
#[derive(Default)]
pub struct Throttle {
    addresses: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    /// No request from the address is answered before this.
    next: Instant,
    last: Instant,
}

impl Throttle {
    /// Records a failed attempt from `ip` and returns how long its answer
    /// waits: failures from one address queue up behind each other, each
    /// twice as long as the one before, but none waits more than
    /// [`MAX_DELAY`].
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut map = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            next: now,
            last: now,
        });
        f.count = f.count.saturating_add(1);
        let delay = FIRST_DELAY
            .saturating_mul(1u32 << (f.count - 1).min(16))
            .min(MAX_DELAY);
        f.next = (f.next.max(now) + delay).min(now + MAX_DELAY);
        f.last = now;
        f.next.saturating_duration_since(now)
    }

    /// A good token from `ip`: its record is cleared.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_hash_only() {
        let token = new_token();
        assert!(token.starts_with("rwdb_") && token.len() == 69);
        let specs = vec![TokenSpec {
            name: "panel".into(),
            scopes: vec![Scope::Read],
            hash: blake3::hash(token.as_bytes()),
        }];
        assert_eq!(find(&specs, &token).unwrap().name, "panel");
        assert!(find(&specs, &new_token()).is_none());
        assert!(find(&specs, "").is_none());
    }

    #[test]
    fn failures_slow_an_address_down_up_to_a_ceiling_and_a_success_clears_it() {
        let t = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let first = t.failed(ip);
        assert!(
            first > Duration::from_millis(90) && first <= FIRST_DELAY,
            "{first:?}"
        );
        // 100 + 200 ms queued up behind each other.
        assert!(t.failed(ip) > Duration::from_millis(250));
        // A thousand at once wait no more than the ceiling.
        let waits: Vec<Duration> = (0..1000).map(|_| t.failed(ip)).collect();
        assert!(waits.iter().all(|w| *w <= MAX_DELAY), "{:?}", waits.last());
        assert!(*waits.last().unwrap() > MAX_DELAY - Duration::from_millis(100));
        assert!(t.failed(other) <= FIRST_DELAY);
        t.succeeded(ip);
        assert!(t.failed(ip) <= FIRST_DELAY);
        assert_eq!("admin".parse::<Scope>(), Ok(Scope::Admin));
        assert!(
            "root"
                .parse::<Scope>()
                .unwrap_err()
                .contains("unknown scope")
        );
    }
}
