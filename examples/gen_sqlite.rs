//! Benchmark helper: generate a realistic SQLite database and simulate changes.
//!
//! ```text
//! gen_sqlite gen   PATH --size-mib N [--seed S] [--journal wal|delete]
//! gen_sqlite churn PATH [--seed S] [--update-pct 1.0] [--insert-pct 0.5] [--delete-pct 0.25]
//! gen_sqlite count PATH
//! ```
//!
//! `gen` fills three tables (`users`, `orders`, `events`, with indexes) with
//! text built from a small vocabulary (so it compresses roughly like real
//! application data) until the file reaches about N MiB. `churn` simulates
//! "one hour of changes": it updates, inserts and deletes the given percentage
//! of rows of each table, at random. Both are deterministic for a given seed.
//!
//! Run with `cargo run --release --example gen_sqlite -- gen db.sqlite --size-mib 1024`.

use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage:
  gen_sqlite gen   PATH --size-mib N [--seed S] [--journal wal|delete]
  gen_sqlite churn PATH [--seed S] [--update-pct 1.0] [--insert-pct 0.5] [--delete-pct 0.25]
  gen_sqlite count PATH";

const TABLES: [&str; 3] = ["users", "orders", "events"];

const SCHEMA: &str = "
CREATE TABLE users(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    country TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    balance REAL NOT NULL,
    bio TEXT
);
CREATE TABLE orders(
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    amount REAL NOT NULL,
    status TEXT NOT NULL,
    note TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX orders_user_id ON orders(user_id);
CREATE INDEX orders_created_at ON orders(created_at);
CREATE TABLE events(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    ts INTEGER NOT NULL
);
CREATE INDEX events_ts ON events(ts);
";

// Rows inserted per batch by `gen` (about 0.7 MiB of database per batch); the
// file size is checked after every batch.
const USERS_PER_BATCH: usize = 200;
const ORDERS_PER_BATCH: usize = 800;
const EVENTS_PER_BATCH: usize = 2000;
// Batches per transaction.
const BATCHES_PER_TX: usize = 32;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "that",
    "this",
    "it",
    "as",
    "at",
    "be",
    "by",
    "from",
    "or",
    "an",
    "are",
    "was",
    "we",
    "you",
    "not",
    "but",
    "all",
    "can",
    "new",
    "more",
    "one",
    "will",
    "has",
    "have",
    "our",
    "your",
    "they",
    "their",
    "about",
    "order",
    "customer",
    "delivery",
    "package",
    "shipping",
    "payment",
    "invoice",
    "account",
    "please",
    "thanks",
    "refund",
    "return",
    "item",
    "product",
    "quality",
    "price",
    "discount",
    "coupon",
    "size",
    "color",
    "black",
    "white",
    "blue",
    "red",
    "green",
    "small",
    "large",
    "medium",
    "box",
    "store",
    "online",
    "service",
    "support",
    "team",
    "email",
    "phone",
    "address",
    "street",
    "city",
    "weekend",
    "morning",
    "evening",
    "today",
    "tomorrow",
    "yesterday",
    "week",
    "month",
    "year",
    "time",
    "day",
    "late",
    "early",
    "fast",
    "slow",
    "good",
    "great",
    "excellent",
    "bad",
    "poor",
    "happy",
    "love",
    "like",
    "need",
    "want",
    "buy",
    "sell",
    "send",
    "receive",
    "check",
    "update",
    "change",
    "cancel",
    "confirm",
    "track",
    "number",
    "code",
    "gift",
    "wrap",
    "card",
    "credit",
    "bank",
    "transfer",
    "cash",
    "home",
    "office",
    "garden",
    "kitchen",
    "coffee",
    "tea",
    "book",
    "music",
    "travel",
    "photography",
    "hiking",
    "cooking",
    "reading",
    "running",
    "yoga",
    "football",
    "developer",
    "designer",
    "teacher",
    "student",
    "engineer",
    "manager",
    "nurse",
    "writer",
    "artist",
    "enthusiast",
    "lover",
    "fan",
    "based",
    "living",
    "working",
    "born",
    "family",
    "friends",
    "dog",
    "cat",
    "kids",
    "life",
    "world",
    "people",
    "open",
    "source",
    "software",
    "data",
    "cloud",
    "mobile",
    "app",
    "web",
    "design",
    "marketing",
    "sales",
    "finance",
    "health",
    "fitness",
    "food",
    "wine",
    "beer",
    "film",
    "art",
    "history",
    "science",
    "nature",
    "ocean",
    "mountain",
    "river",
    "forest",
    "sun",
    "rain",
    "snow",
    "summer",
    "winter",
    "spring",
    "autumn",
    "very",
    "really",
    "just",
    "also",
    "still",
    "again",
    "never",
    "always",
    "sometimes",
    "often",
    "maybe",
    "first",
    "last",
    "next",
    "previous",
    "other",
    "same",
    "different",
    "best",
    "worst",
    "favorite",
    "local",
    "global",
    "free",
    "premium",
    "standard",
    "express",
    "priority",
    "warehouse",
    "courier",
    "damaged",
    "missing",
    "wrong",
    "correct",
    "received",
    "shipped",
    "delayed",
    "arrived",
    "left",
    "door",
    "neighbor",
    "reception",
    "signature",
    "required",
    "fragile",
    "handle",
    "care",
    "urgent",
    "note",
    "request",
    "issue",
];

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Carlos",
    "Maria",
    "Luca",
    "Giulia",
    "Hans",
    "Anna",
    "Pierre",
    "Marie",
    "Yuki",
    "Hiroshi",
    "Wei",
    "Mei",
    "Arjun",
    "Priya",
    "Olga",
    "Ivan",
    "Fatima",
    "Omar",
    "Sven",
    "Ingrid",
    "Liam",
    "Emma",
    "Noah",
    "Olivia",
    "Mateo",
    "Sofia",
    "Lukas",
    "Mia",
    "Kofi",
    "Amara",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Martin",
    "Jackson",
    "Lee",
    "Rossi",
    "Russo",
    "Muller",
    "Schmidt",
    "Schneider",
    "Dubois",
    "Bernard",
    "Tanaka",
    "Suzuki",
    "Wang",
    "Li",
    "Zhang",
    "Patel",
    "Sharma",
    "Ivanov",
    "Petrov",
    "Hassan",
    "Ali",
    "Andersson",
    "Nilsson",
    "Kowalski",
    "Nowak",
    "Silva",
    "Santos",
    "Okafor",
    "Mensah",
    "Murphy",
    "Kelly",
];

const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "proton.me",
    "icloud.com",
    "example.org",
    "mail.de",
    "orange.fr",
    "qq.com",
];

const COUNTRIES: &[&str] = &[
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "SE", "PL", "JP", "CN", "IN", "BR", "MX", "CA", "AU",
    "NG", "GH", "EG", "RU", "CH", "AT", "BE", "PT", "IE", "DK", "NO", "FI", "KR", "AR",
];

const STATUSES: &[&str] = &[
    "delivered",
    "shipped",
    "paid",
    "pending",
    "cancelled",
    "refunded",
    "returned",
];

const EVENT_KINDS: &[&str] = &[
    "page_view",
    "click",
    "api_call",
    "search",
    "login",
    "add_to_cart",
    "logout",
    "purchase",
    "error",
    "signup",
];

const PATHS: &[&str] = &[
    "/",
    "/products",
    "/products/{}",
    "/cart",
    "/checkout",
    "/orders/{}",
    "/account",
    "/search",
    "/api/v1/orders/{}",
    "/api/v1/users/{}",
    "/help",
    "/login",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
    "okhttp/4.12.0",
    "curl/8.5.0",
];

/// splitmix64: tiny, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1A4_F87D)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Picks early entries more often (like word frequencies in real text).
    fn skewed<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        let u = self.unit() * self.unit();
        xs[((u * xs.len() as f64) as usize).min(xs.len() - 1)]
    }
    /// Money amount with two decimals in `0..max`.
    fn money(&mut self, max: f64) -> f64 {
        (self.unit() * max * 100.0).round() / 100.0
    }
}

fn push_sentence(rng: &mut Rng, out: &mut String) {
    let n = rng.range(4, 14);
    for i in 0..n {
        let w = rng.skewed(WORDS);
        if i == 0 {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                out.push(c.to_ascii_uppercase());
            }
            out.push_str(cs.as_str());
        } else {
            out.push(' ');
            out.push_str(w);
        }
    }
    out.push(if rng.chance(0.1) { '!' } else { '.' });
}

/// Some sentences of about `min..=max` characters.
fn paragraph(rng: &mut Rng, min: i64, max: i64) -> String {
    let target = rng.range(min, max) as usize;
    let mut s = String::with_capacity(target + 80);
    while s.len() < target {
        if !s.is_empty() {
            s.push(' ');
        }
        push_sentence(rng, &mut s);
    }
    s
}

fn hex(rng: &mut Rng, digits: usize) -> String {
    let v = rng.next_u64();
    format!("{v:016x}")[..digits.min(16)].to_string()
}

struct User {
    name: String,
    email: String,
    country: &'static str,
    balance: f64,
    bio: Option<String>,
}

fn make_user(rng: &mut Rng, id: i64) -> User {
    let first = rng.skewed(FIRST_NAMES);
    let last = rng.skewed(LAST_NAMES);
    let domain = rng.skewed(DOMAINS);
    User {
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}{id}@{domain}",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        country: rng.skewed(COUNTRIES),
        balance: rng.money(5000.0),
        bio: if rng.chance(0.85) {
            Some(paragraph(rng, 30, 500))
        } else {
            None
        },
    }
}

fn order_note(rng: &mut Rng) -> Option<String> {
    if rng.chance(0.45) {
        Some(paragraph(rng, 10, 160))
    } else {
        None
    }
}

fn event_payload(rng: &mut Rng, kind: &str, max_user: i64, ts: i64) -> String {
    let path = rng
        .skewed(PATHS)
        .replace("{}", &rng.range(1, 99_999).to_string());
    let mut p = format!(
        "{{\"user_id\":{},\"session\":\"{}\",\"request_id\":\"{}\",\"ip\":\"{}.{}.{}.{}\",\"method\":\"{}\",\"path\":\"{}\",\"status\":{},\"duration_ms\":{},\"ts\":{}",
        rng.range(1, max_user.max(1)),
        hex(rng, 16),
        hex(rng, 16),
        rng.skewed(&["10", "192", "172", "81", "93", "203"]),
        rng.range(0, 255),
        rng.range(0, 255),
        rng.range(1, 254),
        if rng.chance(0.8) { "GET" } else { "POST" },
        path,
        rng.skewed(&["200", "200", "304", "201", "404", "302", "500"]),
        rng.range(1, 900),
        ts,
    );
    if rng.chance(0.25) {
        p.push_str(",\"ua\":\"");
        p.push_str(rng.skewed(USER_AGENTS));
        p.push('"');
    }
    if kind == "search" || kind == "error" || rng.chance(0.5) {
        p.push_str(",\"message\":\"");
        p.push_str(&paragraph(rng, 10, 120));
        p.push('"');
    }
    p.push('}');
    p
}

fn file_size(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages * size) as u64)
}

fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    // Returns (busy, log, checkpointed) in WAL mode; harmless otherwise.
    let _: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(())
}

fn counts(conn: &Connection) -> rusqlite::Result<Vec<(&'static str, i64)>> {
    TABLES
        .iter()
        .map(|t| -> rusqlite::Result<(&'static str, i64)> {
            Ok((
                *t,
                conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?,
            ))
        })
        .collect()
}

const MIB: f64 = 1024.0 * 1024.0;

fn gen_db(path: &str, size_mib: u64, seed: u64, journal: &str) -> Result<(), String> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = format!("{path}{suffix}");
        if std::fs::metadata(&p).is_ok() {
            std::fs::remove_file(&p).map_err(|e| format!("removing {p}: {e}"))?;
        }
    }
    let start = Instant::now();
    let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row(&format!("PRAGMA journal_mode={journal}"), [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    conn.execute_batch(
        "PRAGMA synchronous=OFF; PRAGMA cache_size=-524288; PRAGMA temp_store=MEMORY;",
    )
    .map_err(|e| e.to_string())?;
    conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;

    let target = size_mib * 1024 * 1024;
    let mut rng = Rng::new(seed);
    let mut clock: i64 = 1_600_000_000;
    let (mut users, mut orders, mut events) = (0i64, 0i64, 0i64);
    let mut size = file_size(&conn).map_err(|e| e.to_string())?;
    let mut last_report = Instant::now();
    'outer: while size < target {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        {
            let mut ins_user = tx
                .prepare_cached(
                    "INSERT INTO users(id, name, email, country, created_at, balance, bio) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| e.to_string())?;
            let mut ins_order = tx
                .prepare_cached(
                    "INSERT INTO orders(id, user_id, amount, status, note, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(|e| e.to_string())?;
            let mut ins_event = tx
                .prepare_cached("INSERT INTO events(id, kind, payload, ts) VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| e.to_string())?;
            for _ in 0..BATCHES_PER_TX {
                for _ in 0..USERS_PER_BATCH {
                    users += 1;
                    clock += rng.range(0, 3);
                    let u = make_user(&mut rng, users);
                    ins_user
                        .execute(params![
                            users, u.name, u.email, u.country, clock, u.balance, u.bio
                        ])
                        .map_err(|e| e.to_string())?;
                }
                for _ in 0..ORDERS_PER_BATCH {
                    orders += 1;
                    clock += rng.range(0, 1);
                    let user_id = rng.range(1, users);
                    let amount = rng.money(800.0) + 0.99;
                    let status = rng.skewed(STATUSES);
                    let note = order_note(&mut rng);
                    ins_order
                        .execute(params![orders, user_id, amount, status, note, clock])
                        .map_err(|e| e.to_string())?;
                }
                for _ in 0..EVENTS_PER_BATCH {
                    events += 1;
                    let kind = rng.skewed(EVENT_KINDS);
                    let payload = event_payload(&mut rng, kind, users, clock);
                    ins_event
                        .execute(params![events, kind, payload, clock])
                        .map_err(|e| e.to_string())?;
                }
                size = file_size(&tx).map_err(|e| e.to_string())?;
                if last_report.elapsed().as_secs() >= 10 {
                    last_report = Instant::now();
                    eprintln!(
                        "  ... {:.0} MiB of {size_mib} MiB ({:.1}s)",
                        size as f64 / MIB,
                        start.elapsed().as_secs_f64()
                    );
                }
                if size >= target {
                    drop(ins_user);
                    drop(ins_order);
                    drop(ins_event);
                    tx.commit().map_err(|e| e.to_string())?;
                    break 'outer;
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())?;
    }
    checkpoint(&conn).map_err(|e| e.to_string())?;
    drop(conn);
    let secs = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    println!(
        "generated {path}: {:.1} MiB (journal_mode={mode}), users={users} orders={orders} events={events}, {secs:.1}s ({:.1} MiB/s)",
        bytes as f64 / MIB,
        bytes as f64 / MIB / secs
    );
    Ok(())
}

fn churn_db(
    path: &str,
    seed: u64,
    update_pct: f64,
    insert_pct: f64,
    delete_pct: f64,
) -> Result<(), String> {
    if std::fs::metadata(path).is_err() {
        return Err(format!("{path}: no such file"));
    }
    let start = Instant::now();
    let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
    conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA cache_size=-262144;")
        .map_err(|e| e.to_string())?;
    let e = |e: rusqlite::Error| e.to_string();
    let mut rng = Rng::new(seed ^ 0xC4_0A_11);

    let mut stats = Vec::new();
    let tx = conn.transaction().map_err(e)?;
    {
        let mut clock: i64 = tx
            .query_row(
                "SELECT max(coalesce((SELECT max(created_at) FROM users), 0), coalesce((SELECT max(created_at) FROM orders), 0), coalesce((SELECT max(ts) FROM events), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(e)?;
        let mut max_ids: HashMap<&str, (i64, i64)> = HashMap::new();
        for t in TABLES {
            let v: (i64, i64) = tx
                .query_row(
                    &format!("SELECT count(*), coalesce(max(id), 0) FROM {t}"),
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(e)?;
            max_ids.insert(t, v);
        }
        let max_user = max_ids["users"].1;
        for t in TABLES {
            let (count, max_id) = max_ids[t];
            let n_upd = (count as f64 * update_pct / 100.0).round() as u64;
            let n_ins = (count as f64 * insert_pct / 100.0).round() as u64;
            let n_del = (count as f64 * delete_pct / 100.0).round() as u64;
            let (mut updated, mut inserted, mut deleted) = (0u64, 0u64, 0u64);

            // Updates: random existing rows (ids of deleted rows are retried).
            let upd_sql = match t {
                "users" => {
                    "UPDATE users SET balance = ?2, country = coalesce(?3, country), bio = coalesce(?4, bio) WHERE id = ?1"
                }
                "orders" => {
                    "UPDATE orders SET status = ?2, amount = coalesce(?3, amount), note = coalesce(?4, note) WHERE id = ?1"
                }
                _ => {
                    "UPDATE events SET kind = ?2, payload = ?3, ts = coalesce(?4, ts) WHERE id = ?1"
                }
            };
            let mut upd = tx.prepare_cached(upd_sql).map_err(e)?;
            let mut attempts = 0u64;
            while updated < n_upd && attempts < n_upd * 20 + 100 && max_id > 0 {
                attempts += 1;
                let id = rng.range(1, max_id);
                let n = match t {
                    "users" => {
                        let balance = rng.money(5000.0);
                        let country = if rng.chance(0.05) {
                            Some(rng.skewed(COUNTRIES))
                        } else {
                            None
                        };
                        let bio = if rng.chance(0.4) {
                            Some(paragraph(&mut rng, 30, 500))
                        } else {
                            None
                        };
                        upd.execute(params![id, balance, country, bio])
                    }
                    "orders" => {
                        let status = rng.skewed(STATUSES);
                        let amount = if rng.chance(0.2) {
                            Some(rng.money(800.0) + 0.99)
                        } else {
                            None
                        };
                        let note = if rng.chance(0.5) {
                            Some(paragraph(&mut rng, 10, 160))
                        } else {
                            None
                        };
                        upd.execute(params![id, status, amount, note])
                    }
                    _ => {
                        let kind = rng.skewed(EVENT_KINDS);
                        let payload = event_payload(&mut rng, kind, max_user, clock);
                        let ts: Option<i64> = None;
                        upd.execute(params![id, kind, payload, ts])
                    }
                }
                .map_err(e)?;
                updated += n as u64;
            }
            drop(upd);

            // Inserts: new rows at the end, with new timestamps.
            for i in 1..=n_ins as i64 {
                let id = max_id + i;
                clock += rng.range(0, 1);
                match t {
                    "users" => {
                        let u = make_user(&mut rng, id);
                        tx.prepare_cached(
                            "INSERT INTO users(id, name, email, country, created_at, balance, bio) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )
                        .map_err(e)?
                        .execute(params![id, u.name, u.email, u.country, clock, u.balance, u.bio])
                        .map_err(e)?;
                    }
                    "orders" => {
                        let user_id = rng.range(1, max_user.max(1));
                        let amount = rng.money(800.0) + 0.99;
                        let status = rng.skewed(&["pending", "paid", "pending"]);
                        let note = order_note(&mut rng);
                        tx.prepare_cached(
                            "INSERT INTO orders(id, user_id, amount, status, note, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )
                        .map_err(e)?
                        .execute(params![id, user_id, amount, status, note, clock])
                        .map_err(e)?;
                    }
                    _ => {
                        let kind = rng.skewed(EVENT_KINDS);
                        let payload = event_payload(&mut rng, kind, max_user, clock);
                        tx.prepare_cached(
                            "INSERT INTO events(id, kind, payload, ts) VALUES (?1, ?2, ?3, ?4)",
                        )
                        .map_err(e)?
                        .execute(params![id, kind, payload, clock])
                        .map_err(e)?;
                    }
                }
                inserted += 1;
            }

            // Deletes: random old rows (not the ones just inserted).
            let mut del = tx
                .prepare_cached(&format!("DELETE FROM {t} WHERE id = ?1"))
                .map_err(e)?;
            let mut attempts = 0u64;
            while deleted < n_del && attempts < n_del * 20 + 100 && max_id > 0 {
                attempts += 1;
                let id = rng.range(1, max_id);
                deleted += del.execute(params![id]).map_err(e)? as u64;
            }
            stats.push((t, updated, inserted, deleted));
        }
    }
    tx.commit().map_err(e)?;
    checkpoint(&conn).map_err(e)?;
    drop(conn);
    for (t, u, i, d) in &stats {
        println!("{t:<7} updated {u:>8}  inserted {i:>8}  deleted {d:>8}");
    }
    println!("churned {path} in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn count_db(path: &str) -> Result<(), String> {
    if std::fs::metadata(path).is_err() {
        return Err(format!("{path}: no such file"));
    }
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    let mut total = 0;
    for (t, n) in counts(&conn).map_err(|e| e.to_string())? {
        println!("{t:<7} {n}");
        total += n;
    }
    println!("total   {total}");
    println!(
        "size    {:.1} MiB",
        file_size(&conn).map_err(|e| e.to_string())? as f64 / MIB
    );
    Ok(())
}

/// Parses `--key value` flags after the positional arguments.
fn parse_flags(args: &[String], allowed: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let key = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {a:?}"))?;
        let (key, value) = match key.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (
                key.to_string(),
                it.next()
                    .ok_or_else(|| format!("--{key} needs a value"))?
                    .clone(),
            ),
        };
        if !allowed.contains(&key.as_str()) {
            return Err(format!("unknown flag --{key}"));
        }
        out.insert(key, value);
    }
    Ok(out)
}

fn flag<T: std::str::FromStr>(
    flags: &HashMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, String> {
    match flags.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("--{key}: invalid value {v:?}")),
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, path) = match args {
        [cmd, path, ..] => (cmd.as_str(), path.as_str()),
        _ => return Err(USAGE.to_string()),
    };
    let rest = &args[2..];
    match cmd {
        "gen" => {
            let f = parse_flags(rest, &["size-mib", "seed", "journal"])?;
            let size: u64 = flag(&f, "size-mib", 0)?;
            if size == 0 {
                return Err("gen: --size-mib N is required (N > 0)".into());
            }
            let journal: String = flag(&f, "journal", "wal".to_string())?;
            if journal != "wal" && journal != "delete" {
                return Err("--journal must be wal or delete".into());
            }
            gen_db(path, size, flag(&f, "seed", 1)?, &journal)
        }
        "churn" => {
            let f = parse_flags(rest, &["seed", "update-pct", "insert-pct", "delete-pct"])?;
            churn_db(
                path,
                flag(&f, "seed", 2)?,
                flag(&f, "update-pct", 1.0)?,
                flag(&f, "insert-pct", 0.5)?,
                flag(&f, "delete-pct", 0.25)?,
            )
        }
        "count" => {
            parse_flags(rest, &[])?;
            count_db(path)
        }
        _ => Err(USAGE.to_string()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("gen_sqlite: {msg}");
            ExitCode::FAILURE
        }
    }
}
