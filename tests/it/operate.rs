//! Running from cron: `run --config`, overlapping and killed runs, `status`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

/// Writes `rewindb.toml` in the fixture's directory and returns its path.
fn config(f: &Fixture, text: &str) -> String {
    let path = f.path("rewindb.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const TWO_SOURCES: &str = r#"
repository = "repo"

[gc]
every = "1d"

[[sqlite]]
name = "orders"
paths = ["orders.db"]
keep = { last = 2 }

[[sqlite]]
name = "users"
paths = ["users.db", "sessions.db"]
label = "hourly"
keep = { last = 1 }
"#;

#[test]
fn run_backs_up_every_source_applies_each_retention_and_spaces_gc() {
    let f = Fixture::with_repo();
    for (db, rows) in [
        ("orders.db", 5_000),
        ("users.db", 2_000),
        ("sessions.db", 500),
    ] {
        make_db(&f.path(db), rows, "wal");
    }
    let cfg = config(&f, TWO_SOURCES);
    let mut outputs = Vec::new();
    for round in 0..3 {
        update_rows(&f.path("orders.db"), 100, round);
        update_rows(&f.path("users.db"), 50, round);
        outputs.push(f.ok(&["run", "--config", &cfg]));
    }
    let first = &outputs[0];
    assert!(
        first.lines().any(|l| l.starts_with("orders: snapshot ")),
        "{first}"
    );
    assert!(
        first.lines().any(|l| l.starts_with("users: snapshot ")),
        "{first}"
    );
    assert!(first.contains("gc: reclaimed"), "{first}");
    // gc ran on the first run only (every = "1d"); retention on every run.
    assert!(outputs[2].contains("gc: not due until"), "{}", outputs[2]);
    assert!(outputs[2].contains("orders: snapshot") && outputs[2].contains("kept 2, forgot 1"));
    let snaps = f.snapshots();
    let of = |name: &str| {
        snaps
            .iter()
            .filter(|s| s["files"][0]["name"] == name)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("orders.db").len(), 2, "{snaps:?}");
    assert_eq!(of("users.db").len(), 1, "{snaps:?}");
    assert_eq!(of("users.db")[0]["label"], "hourly");
    assert_eq!(of("users.db")[0]["file_count"], 2);
    // What is left restores.
    let out = f.path("orders-restored.db");
    f.ok(&[
        "restore",
        "latest",
        "--source",
        "orders.db",
        "--to",
        out.to_str().unwrap(),
    ]);
    assert!(integrity_ok(&out));
    f.ok(&["check", "--read-data"]);
    // --json: one object per source and the gc state.
    let v: serde_json::Value =
        serde_json::from_str(&f.ok(&["run", "--config", &cfg, "--json"])).unwrap();
    assert_eq!(v["sources"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["gc"]["state"], "not_due", "{v}");
    // status --config names the sources as the config does.
    let status = f.ok(&["status", "--config", &cfg, "--max-age", "1h"]);
    assert!(
        status.contains("orders (sqlite ") && status.contains("users (sqlite "),
        "{status}"
    );
}

#[test]
fn a_failing_source_does_not_stop_the_others() {
    let f = Fixture::with_repo();
    make_db(&f.path("orders.db"), 1_000, "wal");
    make_db(&f.path("users.db"), 1_000, "wal");
    // sessions.db is missing.
    let cfg = config(&f, TWO_SOURCES);
    let out = f.run(&["--quiet", "run", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // Quiet: nothing on stdout; the failure on stderr, naming the source
    // and the file.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim()
            == format!(
                "rewindb: users: FAILED: {}: no such file",
                f.path("sessions.db").display()
            ),
        "{stderr}"
    );
    let snaps = f.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["files"][0]["name"], "orders.db");
}

#[test]
fn invalid_config_files_name_the_line_and_the_key() {
    let f = Fixture::with_repo();
    let cases: &[(&str, &str)] = &[
        (
            "[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\nkeep = { lats = 3 }\n",
            "line 4",
        ),
        (
            "[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\nkeep = { lats = 3 }\n",
            "lats",
        ),
        (
            "[[sqlite]]\nname = \"a\"\npath = [\"a.db\"]\n",
            "unknown field `path`",
        ),
        (
            "[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\n[gc]\nevery = \"often\"\n",
            "line 5: gc.every",
        ),
        ("[gc]\nevery = \"1d\"\n", "no sources"),
        ("[[postgres]]\nname = \"pg\"\n", "missing field `pgdata`"),
        (
            "[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\n[[sqlite]]\nname = \"b\"\npaths = [\"a.db\"]\n",
            "back up the same data",
        ),
        (
            "repository = 3\n[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\n",
            "line 1",
        ),
    ];
    let state = f.repo_state();
    for (text, needle) in cases {
        let cfg = config(&f, text);
        let err = f.fails(&["run", "--config", &cfg], 2);
        assert!(
            err.contains(needle) && err.contains("rewindb.toml"),
            "{text}: {err}"
        );
    }
    let err = f.fails(&["run", "--config", "nowhere.toml"], 2);
    assert!(err.contains("nowhere.toml"), "{err}");
    assert!(f.repo_state() == state);
}

#[test]
fn overlapping_runs_wait_or_exit_3_and_a_killed_run_blocks_nothing() {
    let f = Fixture::with_repo();
    make_db(&f.path("big.db"), 200_000, "wal");
    let cfg = config(
        &f,
        "repository = \"repo\"\n[[sqlite]]\nname = \"big\"\npaths = [\"big.db\"]\n",
    );
    let spawn = |extra: &[&str]| {
        Command::new(BIN)
            .args(extra)
            .args(["run", "--config", &cfg])
            .current_dir(f.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Two runs at once: the second waits for the first and both succeed.
    let (a, b) = (spawn(&[]), spawn(&[]));
    for p in [a, b] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(f.snapshots().len(), 2);
    // With no time to wait, the second exits 3 and says why.
    let lock = std::fs::File::options()
        .write(true)
        .open(f.repo().join("lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = spawn(&["--lock-wait", "0"]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by another rewindb process"));
    drop(lock);
    // A run killed mid-way leaves no lock and nothing half-made behind.
    update_rows(&f.path("big.db"), 20_000, 9);
    let mut killed = spawn(&[]);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        killed.try_wait().unwrap().is_none(),
        "the run ended before it could be killed"
    );
    let _ = killed.kill(); // SIGKILL
    killed.wait().unwrap();
    let out = spawn(&["--lock-wait", "5"]).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.ok(&["check", "--read-data"]);
    let restored = f.path("big-restored.db");
    f.ok(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    assert!(integrity_ok(&restored));
}

#[test]
fn status_is_zero_for_a_fresh_source_and_5_for_a_stale_one() {
    let f = Fixture::with_repo();
    let err = f.ok(&["status", "--max-age", "1h"]);
    assert!(err.contains("0 snapshot(s)"), "{err}");
    make_db(&f.path("a.db"), 1_000, "wal");
    let id = f.backup(&[&f.path("a.db")]);
    let fresh = f.ok(&["status", "--max-age", "1h"]);
    assert!(
        fresh.contains(&id[..8]) && !fresh.contains("STALE"),
        "{fresh}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&f.ok(&["status", "--json", "--max-age", "1h"])).unwrap();
    assert_eq!(v["sources"][0]["newest"], id.as_str());
    assert_eq!(v["sources"][0]["stale"], false);
    assert!(v["repository_bytes"].as_u64().unwrap() > 0);
    std::thread::sleep(Duration::from_millis(2100));
    let err = f.fails(&["status", "--max-age", "1s"], 5);
    assert!(err.contains("stale") && err.contains("a.db"), "{err}");
    let err = f.fails(&["status", "--max-age", "soon"], 2);
    assert!(err.contains("malformed duration"), "{err}");
    // A configured source that never got a snapshot is stale too.
    make_db(&f.path("b.db"), 100, "wal");
    let cfg = config(
        &f,
        "repository = \"repo\"\n[[sqlite]]\nname = \"a\"\npaths = [\"a.db\"]\n\
         [[sqlite]]\nname = \"b\"\npaths = [\"b.db\"]\n",
    );
    let out = f.run(&["status", "--config", &cfg, "--max-age", "1h"]);
    assert_eq!(out.status.code(), Some(5));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("STALE b (sqlite ") && stdout.contains("never backed up"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a (sqlite ") && !stdout.contains("STALE a"),
        "{stdout}"
    );
}

#[test]
fn progress_only_on_a_terminal_and_nothing_but_errors_with_quiet() {
    let f = Fixture::with_repo();
    let db = f.path("a.db");
    make_db(&db, 60_000, "wal");
    // stderr piped (cron): no bar, no chatter.
    let out = f.run(&["backup", "sqlite", "a.db"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = f.run(&["--quiet", "backup", "sqlite", "a.db"]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
    // On a terminal (script(1) gives the command a pseudo-terminal): a bar
    // with bytes, rate and ETA; with --quiet, none.
    let on_tty = |quiet: &str| {
        let cmd = format!(
            "{BIN} --repo {} {quiet} backup sqlite {}",
            f.repo().display(),
            db.display()
        );
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .output()
            .expect("script(1) from util-linux")
    };
    let shown = String::from_utf8_lossy(&on_tty("").stdout).into_owned();
    assert!(shown.contains("MiB/s") && shown.contains("ETA"), "{shown}");
    let quiet = String::from_utf8_lossy(&on_tty("--quiet").stdout).into_owned();
    assert!(!quiet.contains("ETA"), "{quiet}");
}

#[test]
fn completions_and_man_page_come_from_the_command_line_definition() {
    let f = Fixture::new();
    let bash = f.ok(&["completions", "bash"]);
    for sub in ["forget", "gc", "run", "status", "restore"] {
        assert!(bash.contains(sub), "{sub} missing from bash completions");
    }
    assert!(f.ok(&["completions", "zsh"]).contains("#compdef rewindb"));
    let man = f.ok(&["man"]);
    assert!(man.contains(".TH rewindb 1"), "{man}");
    // The exit codes keep their line breaks (no-fill), one code a line.
    let exit = &man[man
        .find(".SH \"EXIT STATUS\"")
        .expect("an EXIT STATUS section")..];
    assert!(exit.contains(".nf\n"), "{exit}");
    assert!(exit.contains("\n  3  the repository is locked"), "{exit}");
    assert!(man.contains("status"), "{man}");
    // Every page the top page refers to exists (rewindb-restore(1), ...).
    let dir = f.path("man1");
    f.ok(&["man", "--dir", dir.to_str().unwrap()]);
    let top = std::fs::read_to_string(dir.join("rewindb.1")).unwrap();
    assert!(top.contains("EXIT STATUS"), "{top}");
    for page in [
        "rewindb-restore.1",
        "rewindb-backup.1",
        "rewindb-backup-sqlite.1",
        "rewindb-wal-push.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    let restore = std::fs::read_to_string(dir.join("rewindb-restore.1")).unwrap();
    assert!(restore.contains("archive\\-mode"), "{restore}");
    f.fails(&["completions", "tcsh"], 2);
}

/// Splits a shell command line into words (quotes, no expansions); stops at
/// a shell operator or a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    w.push(q);
                }
            }
            ' ' | '\t' => words.extend(word.take()),
            '|' | '>' | '#' | ';' | '&' if word.is_none() => break,
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn every_command_in_the_operations_guide_parses() {
    use clap::Parser;
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap();
    let mut checked = 0;
    // Shell and systemd blocks; not the TOML one.
    let mut block: Option<String> = None;
    for line in guide.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(lang.to_string()),
            };
            continue;
        }
        if !matches!(block.as_deref(), Some("sh" | "ini")) {
            continue;
        }
        let words = shell_words(line.trim_start().trim_start_matches("ExecStart="));
        let Some(at) = words
            .iter()
            .position(|w| w == "rewindb" || w.ends_with("/rewindb"))
        else {
            continue;
        };
        let args = &words[at..];
        if let Err(e) = rewindb::cli::Cli::try_parse_from(args) {
            panic!("docs/operations.md: {line:?} does not parse:\n{e}");
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} commands found");
    // The tests the guide names exist.
    let mut sources = String::new();
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it")).unwrap() {
        sources += &std::fs::read_to_string(f.unwrap().path()).unwrap();
    }
    for name in guide.split('`').filter(|w| {
        w.contains("::")
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == ':')
    }) {
        let test = name.rsplit("::").next().unwrap();
        assert!(
            sources.contains(&format!("fn {test}(")),
            "the guide names {name}, not a test"
        );
    }
}

#[test]
fn run_backs_up_a_postgres_cluster_beside_a_database_and_status_shows_its_window() {
    use crate::pg::PgFixture;
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    c.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g");
    make_db(&f.path("app.db"), 2_000, "wal");
    let cfg = f.path("rewindb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[sqlite]]\nname = \"app\"\npaths = [\"app.db\"]\nkeep = {{ last = 1 }}\n\n\
             [[postgres]]\nname = \"main\"\npgdata = \"{}\"\nconn = \"{}\"\n\
             keep = {{ last = 1 }}\n",
            c.data.display(),
            c.conninfo()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    for _ in 0..2 {
        c.sql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
        let out = f.ok(&["run", "--config", cfg]);
        assert!(
            out.contains("main: snapshot ") && out.contains("app: snapshot "),
            "{out}"
        );
    }
    c.switch_and_wait(&f.repo());
    let status: serde_json::Value = serde_json::from_str(&f.ok(&["status", "--json"])).unwrap();
    let sources = status["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{status}");
    let pg = sources
        .iter()
        .find(|s| s["source"].as_str().unwrap().starts_with("postgres"))
        .unwrap();
    assert_eq!(
        pg["snapshots"], 1,
        "retention kept one base backup: {status}"
    );
    assert!(!pg["pitr_window"].is_null(), "{status}");
    f.ok(&["check", "--read-data"]);
}

/// Regression: `completions bash | head -1` panicked on the closed pipe, and
/// `restore --stdout | head` exited 1. A reader that leaves early is not an
/// error (ripgrep's rule): both exit 0, printing nothing on stderr.
#[test]
fn a_reader_that_closes_the_pipe_early_is_not_an_error() {
    let f = Fixture::with_repo();
    f.ok(&[
        "backup", "command", "--name", "numbers", "--", "seq", "1", "2000000",
    ]);
    let repo = f.repo();
    for pipeline in [
        format!("{BIN} completions bash | head -1"),
        format!(
            "{BIN} --repo {} restore latest --source numbers --stdout | head -c 10",
            repo.display()
        ),
    ] {
        let out = Command::new("bash")
            .args(["-c", &format!("set -o pipefail; {pipeline} >/dev/null")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{pipeline}: {stderr}");
        assert!(!stderr.contains("panicked"), "{pipeline}: {stderr}");
    }
}

#[test]
fn read_data_subsets_cover_every_pack_once_and_find_damage_in_theirs() {
    let f = Fixture::with_repo();
    f.use_small_packs();
    let db = f.path("app.db");
    make_db(&db, 20_000, "wal");
    f.backup(&[&db]);
    let read = |args: &[&str]| -> u64 {
        let mut all = vec!["check", "--json"];
        all.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&f.ok(&all)).unwrap();
        v["chunks_read"].as_u64().unwrap()
    };
    let whole = read(&["--read-data"]);
    let parts: Vec<u64> = (1..=3)
        .map(|n| read(&["--read-data-subset", &format!("{n}/3")]))
        .collect();
    assert_eq!(parts.iter().sum::<u64>(), whole, "{parts:?} of {whole}");
    assert!(parts.iter().all(|&p| p < whole), "{parts:?} of {whole}");
    let some = read(&["--read-data-subset", "30%"]);
    assert!(some < whole, "{some} of {whole}");
    for bad in ["0/3", "4/3", "3", "0%", "150%", "x/y"] {
        let err = f.fails(&["check", "--read-data-subset", bad], 2);
        assert!(err.contains("not a subset"), "{bad}: {err}");
    }
    // Damage inside one pack's data: exactly one of the three parts finds it.
    let packs: Vec<std::path::PathBuf> = walk(&f.repo().join("packs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    let victim = &packs[packs.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(victim, bytes).unwrap();
    let found: Vec<bool> = (1..=3)
        .map(|n| {
            let out = f.run(&["check", "--read-data-subset", &format!("{n}/3")]);
            out.status.code() == Some(4)
        })
        .collect();
    assert_eq!(found.iter().filter(|&&x| x).count(), 1, "{found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        match p.is_dir() {
            true => out.extend(walk(&p)),
            false => out.push(p),
        }
    }
    out
}
