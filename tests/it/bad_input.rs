//! Every bad input gets a clear message, a non-zero exit code, and an untouched repository.

use crate::helpers::*;

#[test]
fn bad_inputs_are_refused_and_leave_the_repository_untouched() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 500, "wal");
    f.backup(&[&db]);
    std::fs::write(f.path("notes.txt"), "hello, not a database\n".repeat(20)).unwrap();
    std::fs::write(f.path("empty.db"), b"").unwrap();
    let mut truncated = std::fs::read(&db).unwrap();
    truncated.truncate(50);
    std::fs::write(f.path("truncated.db"), truncated).unwrap();
    // Named like a WAL segment, but not one.
    std::fs::write(f.path("000000010000000000000001"), vec![7u8; 4096]).unwrap();

    let before = f.repo_state();
    let logged = f.audit_entries();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["backup", "sqlite", "notes.txt"],
            2,
            "not a SQLite database",
        ),
        (&["backup", "sqlite", "empty.db"], 2, "the file is empty"),
        (
            &["backup", "sqlite", "truncated.db"],
            2,
            "not a SQLite database",
        ),
        (
            &["backup", "sqlite", "missing.db"],
            2,
            "missing.db: no such file",
        ),
        (
            &["backup", "sqlite", "app.db", "missing.db"],
            2,
            "no such file",
        ),
        (&["backup", "sqlite", "."], 2, "it is a directory"),
        (
            &["restore", "deadbeef", "--to", "x.db"],
            2,
            "no snapshot matches \"deadbeef\"",
        ),
        (&["restore", "zz", "--to", "x.db"], 2, "no snapshot matches"),
        (
            &["restore", "--at", "2001-01-01 00:00:00+00", "--to", "x.db"],
            2,
            "no snapshot at or before 2001-01-01 00:00:00; the oldest is from",
        ),
        (
            &["restore", "--at", "last tuesday", "--to", "x.db"],
            2,
            "malformed time",
        ),
        (
            &["restore", "--at", "2026-02-30 10:00", "--to", "x.db"],
            2,
            "malformed time",
        ),
        (&["restore", "latest"], 2, "give --to PATH"),
        (
            &["restore", "latest", "--to", "app.db"],
            2,
            "already exists",
        ),
        (
            &["restore", "latest", "--to", "nodir/x.db"],
            2,
            "does not exist",
        ),
        (
            &["restore", "latest", "--file", "other.db", "--to", "x.db"],
            2,
            "no file named",
        ),
        (&["init"], 2, "already exists"),
        (&["wal", "push", "notes.txt"], 2, "is not a WAL file name"),
        (
            &["wal", "push", "000000010000000000000001"],
            2,
            "not a WAL segment",
        ),
        (
            &["wal", "fetch", "00000001000000000000000g", "x.db"],
            2,
            "is not a WAL file name",
        ),
        (
            &["restore", "--lsn", "16B3748", "--to", "x.db"],
            2,
            "is not an LSN",
        ),
        (
            &["backup", "postgres", "--pgdata", "."],
            2,
            "not a PostgreSQL data directory",
        ),
        (
            &["backup", "postgres", "--pgdata", "nowhere"],
            2,
            "no such directory",
        ),
        (&["backup", "command", "--name", "x"], 2, "required"),
        (&["forget"], 2, "give a policy"),
        (
            &["forget", "--keep-within", "3 fortnights"],
            2,
            "malformed duration",
        ),
        (&["forget", "--keep-within=-2d"], 2, "must be positive"),
        (&["forget", "--keep-last=-1"], 2, "invalid value"),
        (&["forget", "deadbeef"], 2, "no snapshot matches"),
        (
            &["forget", "--keep-last", "2", "--source", "other.db"],
            2,
            "no snapshot of \"other.db\"",
        ),
        (&["protect", "deadbeef"], 2, "no snapshot matches"),
        // The server, not the command line: exit 1 (running again can help).
        (
            &[
                "check",
                "postgres",
                "--conn",
                "host=/nonexistent-socket-dir port=1 user=x",
            ],
            1,
            "running again helps once it accepts connections",
        ),
        (
            &["check", "postgres", "--conn", "host='unterminated"],
            2,
            "is not a connection string",
        ),
        (
            &["gc", "--repack-threshold", "1.5"],
            2,
            "--repack-threshold must be between 0 and 1",
        ),
    ];
    for (args, code, needle) in cases {
        let err = f.fails(args, *code);
        assert!(
            err.contains(needle),
            "rewindb {args:?}: expected {needle:?} in {err}"
        );
        assert!(!f.path("x.db").exists(), "{args:?} wrote x.db");
    }
    assert_eq!(
        f.audit_entries(),
        logged,
        "a bad input was logged as an action"
    );
    assert!(
        f.repo_state() == before,
        "a bad input changed the repository"
    );
}

#[test]
fn repository_that_does_not_exist_or_is_not_a_repository() {
    let f = Fixture::new();
    let db = f.path("app.db");
    make_db(&db, 10, "wal");
    // --repo pointing nowhere: refused, nothing created.
    let err = f.fails(&["backup", "sqlite", "app.db"], 2);
    assert!(
        err.contains("no rewindb repository at") && err.contains("init"),
        "{err}"
    );
    assert!(!f.repo().exists());
    for cmd in [
        &["snapshots"][..],
        &["check"],
        &["stats"],
        &["restore", "latest", "--to", "y.db"],
    ] {
        let err = f.fails(cmd, 2);
        assert!(err.contains("no rewindb repository"), "{cmd:?}: {err}");
    }
    // A directory that is something else.
    std::fs::create_dir(f.repo()).unwrap();
    std::fs::write(f.repo().join("precious.txt"), b"keep me").unwrap();
    let err = f.fails(&["backup", "sqlite", "app.db"], 2);
    assert!(err.contains("is not a rewindb repository"), "{err}");
    let err = f.fails(&["init"], 2);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(f.repo()).unwrap().count(), 1);
}

#[test]
fn repository_of_a_newer_format_is_refused() {
    let f = Fixture::with_repo();
    let cfg = f.repo().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"version\": 2", "\"version\": 99")).unwrap();
    let err = f.fails(&["snapshots"], 2);
    assert!(
        err.contains("format version 99") && err.contains("upgrade"),
        "{err}"
    );
}

/// Regression (a forgotten repository setting): run from cron, with no
/// --repo or REWINDB_REPOSITORY and no default repository yet, a backup
/// used to create one under ~/.local/share, print nothing and exit 0. Now
/// it fails saying how to name or create one, and creates nothing; from a
/// terminal it creates the default and says so, even with --quiet.
#[test]
fn the_default_repository_is_created_only_from_a_terminal() {
    let f = Fixture::new();
    let db = f.path("app.db");
    make_db(&db, 10, "wal");
    let home = f.path("home");
    let default = home.join(".local/share/rewindb/repository");
    let out = std::process::Command::new(BIN)
        .args(["-q", "backup", "sqlite"])
        .arg(&db)
        .env_remove("REWINDB_REPOSITORY")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", &home)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = crate::helpers::exited_with(&["-q", "backup", "sqlite"], out, 2);
    for needle in ["--repo", "REWINDB_REPOSITORY", "rewindb init"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(
        !default.exists(),
        "a non-interactive run created {default:?}"
    );
    // Other commands say the same.
    let out = std::process::Command::new(BIN)
        .arg("snapshots")
        .env_remove("REWINDB_REPOSITORY")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", &home)
        .output()
        .unwrap();
    let err = crate::helpers::exited_with(&["snapshots"], out, 2);
    assert!(err.contains("rewindb init"), "{err}");

    // From a terminal (script(1) gives the command one).
    let command = format!("{BIN} -q backup sqlite {}", db.display());
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("REWINDB_REPOSITORY")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", &home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(default.join("config.json").is_file(), "{text}");
    assert!(text.contains("created the default repository at"), "{text}");
}

/// `init --config FILE` creates the config's repository, the order the
/// operations guide gives before `run --config`; `--if-missing` makes it
/// repeatable.
#[test]
fn init_from_a_run_config_then_run() {
    let f = Fixture::new();
    make_db(&f.path("app.db"), 100, "wal");
    let cfg = f.path("rewindb.toml");
    std::fs::write(
        &cfg,
        format!(
            "repository = \"{}\"\n[[sqlite]]\nname = \"app\"\npaths = [\"{}\"]\n",
            f.repo().display(),
            f.path("app.db").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    f.ok(&["init", "--config", cfg]);
    assert!(f.repo().join("config.json").is_file());
    let err = f.fails(&["init", "--config", cfg], 2);
    assert!(err.contains("already"), "{err}");
    f.ok(&["init", "--config", cfg, "--if-missing"]);
    f.ok(&["run", "--config", cfg]);
    // The snapshot records the config's name, which --source takes.
    let snaps = f.snapshots();
    assert_eq!(snaps[0]["name"], "app", "{snaps:?}");
    let to = f.path("restored.db");
    f.ok(&[
        "restore",
        "latest",
        "--source",
        "app",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(crate::helpers::row_count(&to), 100);
}

/// Regression: a bare relative name has an empty parent, which cannot be fsynced.
#[test]
fn relative_repository_path_works() {
    let f = Fixture::new();
    let db = f.path("app.db");
    make_db(&db, 10, "wal");
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .current_dir(f.dir.path())
            .env_remove("REWINDB_REPOSITORY")
            .output()
            .unwrap()
    };
    assert!(run(&["--repo", "rel", "init"]).status.success());
    assert!(
        run(&["--repo", "rel", "backup", "sqlite", "app.db"])
            .status
            .success()
    );
    assert!(
        run(&["--repo", "rel", "restore", "latest", "--to", "out.db"])
            .status
            .success()
    );
    assert!(f.path("out.db").is_file());
}

/// Regression (review finding): sizes the pack format cannot hold are refused
/// at open, not discovered as unrestorable packs later.
#[test]
fn config_with_sizes_the_format_cannot_hold_is_refused() {
    let f = Fixture::with_repo();
    let cfg = f.repo().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "\"frame_target_bytes\": 1048576",
            "\"frame_target_bytes\": 67108864",
        ),
    )
    .unwrap();
    let err = f.fails(&["snapshots"], 2);
    assert!(err.contains("frame_target_bytes must be"), "{err}");
}

/// Regression: `init` into an existing empty directory renamed a staging
/// directory over it, which fails on a mount point (`/backups` on its own
/// disk) and when the parent is not writable. It now initialises the
/// directory in place (same inode), and takes up what a killed in-place init
/// left (no config.json yet); a directory holding anything else is refused.
#[test]
fn init_initialises_an_existing_directory_in_place() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::new();
    std::fs::create_dir(f.repo()).unwrap();
    let inode = std::fs::metadata(f.repo()).unwrap().ino();
    f.ok(&["init"]);
    assert_eq!(std::fs::metadata(f.repo()).unwrap().ino(), inode);
    assert!(f.repo().join("config.json").is_file());
    let db = f.path("app.db");
    make_db(&db, 10, "wal");
    f.backup(&[&db]);
    f.ok(&["check", "--read-data"]);

    // A killed in-place init: layout without config.json.
    let g = Fixture::new();
    std::fs::create_dir_all(g.repo().join("packs/00")).unwrap();
    std::fs::create_dir(g.repo().join("tmp")).unwrap();
    std::fs::write(g.repo().join("index.redb"), b"half an index").unwrap();
    g.ok(&["init"]);
    g.backup(&[&db]);
    g.ok(&["check", "--read-data"]);

    // Anything else in the directory: refused, untouched.
    let h = Fixture::new();
    std::fs::create_dir(h.repo()).unwrap();
    std::fs::write(h.repo().join("notes.txt"), b"mine").unwrap();
    let err = h.fails(&["init"], 2);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read_dir(h.repo()).unwrap().count(), 1);
}

/// Regression (review finding): init builds beside the target and renames it
/// into place, so it works into an existing empty directory, and what a killed
/// init leaves (a `.rewindb-init-*` directory beside it) blocks nothing.
#[test]
fn init_into_an_empty_directory_and_beside_a_killed_init() {
    let f = Fixture::new();
    std::fs::create_dir(f.repo()).unwrap();
    std::fs::create_dir(f.path(".rewindb-init-leftover")).unwrap();
    std::fs::write(f.path(".rewindb-init-leftover/config.json"), b"{}").unwrap();
    f.ok(&["init"]);
    assert!(f.repo().join("config.json").is_file());
    let db = f.path("app.db");
    make_db(&db, 10, "wal");
    f.backup(&[&db]);
    f.ok(&["check", "--read-data"]);
}
