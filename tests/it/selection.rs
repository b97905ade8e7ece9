//! Choosing what to restore in a repository that holds several kinds of
//! source: SQLite databases, a PostgreSQL cluster's base backups and
//! pg_dump streams. Ambiguity is refused with the list; every named source
//! restores the right thing; `--dry-run` writes nothing.

use crate::helpers::{make_db, row_count};
use crate::pg::{PG_BIN, PgFixture};

#[test]
fn a_mixed_repository_refuses_ambiguous_selections_and_restores_each_source_by_name() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    c.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)");
    let app = f.path("app.db");
    let auth = f.path("auth.db");
    make_db(&app, 100, "wal");
    make_db(&auth, 50, "wal");
    let (app_s, auth_s) = (app.to_str().unwrap(), auth.to_str().unwrap());
    f.ok(&["backup", "sqlite", app_s, auth_s, "--label", "first"]);
    let second: serde_json::Value =
        serde_json::from_str(&f.ok(&["backup", "sqlite", app_s, auth_s, "--json"])).unwrap();
    let pgdata = c.data.to_str().unwrap().to_string();
    f.ok(&[
        "backup",
        "postgres",
        "--pgdata",
        &pgdata,
        "--conn",
        &c.conninfo(),
    ]);
    let pg_dump = format!("{PG_BIN}/pg_dump");
    f.ok(&[
        "backup",
        "pg-dump",
        "--conn",
        &c.conninfo(),
        "--pg-dump",
        &pg_dump,
        "--name",
        "shop",
    ]);
    c.switch_and_wait(&f.repo());
    let sysid = c.system_identifier();
    let now = "2099-01-01 00:00:00+00";
    let x = f.path("x");
    let x_s = x.to_str().unwrap();

    // Ambiguous: refused, every source listed with the value that names it.
    for args in [
        vec!["restore", "latest", "--to", x_s],
        vec!["restore", "--at", now, "--to", x_s],
        vec!["restore", "--at", now, "--to", x_s, "--dry-run"],
    ] {
        let err = f.fails(&args, 2);
        assert!(err.contains("3 sources are in the repository"), "{err}");
        assert!(
            err.contains(&format!("--source {app_s} (or {auth_s})")),
            "{err}"
        );
        assert!(err.contains(&format!("--source {pgdata}")), "{err}");
        assert!(err.contains("--source shop"), "{err}");
        assert!(!x.exists(), "{args:?} wrote {x_s}");
    }
    let err = f.fails(&["restore", "latest", "--source", "crm.db", "--to", x_s], 2);
    assert!(err.contains("no snapshot of source \"crm.db\""), "{err}");
    assert!(err.contains("--source shop"), "{err}");

    // One database of two, by file name or path: that one file.
    let r2 = f.path("r2.db");
    f.ok(&[
        "restore",
        "latest",
        "--source",
        "app.db",
        "--to",
        r2.to_str().unwrap(),
    ]);
    assert!(r2.is_file(), "restored as a file, not a directory");
    assert_eq!(row_count(&r2), 100);
    let r3 = f.path("r3.db");
    f.ok(&[
        "restore",
        "--at",
        now,
        "--source",
        auth_s,
        "--to",
        r3.to_str().unwrap(),
    ]);
    assert_eq!(row_count(&r3), 50);

    // The dump by its name.
    let out = f.run(&["restore", "latest", "--source", "shop", "--stdout"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("CREATE TABLE public.t"));

    // The cluster by data directory or system identifier; --immediate and
    // the other base-backup flags consider base backups only.
    for args in [
        vec!["restore", "latest", "--source", &pgdata],
        vec!["restore", "latest", "--source", &sysid],
        vec!["restore", "--immediate"],
    ] {
        let mut args = args.clone();
        args.extend(["--to", x_s, "--dry-run", "--json"]);
        let plan: serde_json::Value = serde_json::from_str(&f.ok(&args)).unwrap();
        assert_eq!(plan["kind"], "postgres", "{args:?}: {plan}");
        assert_eq!(plan["wal"]["missing"], serde_json::Value::Null, "{plan}");
        assert!(!x.exists(), "{args:?}: a dry run wrote {x_s}");
    }
    // A target past the archived WAL: the dry run shows the gap and exits
    // as the real run would.
    let out = f.run(&[
        "restore",
        "--at",
        now,
        "--source",
        &pgdata,
        "--to",
        x_s,
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WAL: NOT all in the repository"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a restore now would write nothing"));
    assert!(!x.exists());
    let dry = f.ok(&["restore", "--immediate", "--to", x_s, "--dry-run"]);
    assert!(dry.contains("would restore base backup"), "{dry}");
    assert!(dry.contains("all in the repository"), "{dry}");

    // Dry runs of the other kinds name what the real run then does.
    let dry = f.ok(&[
        "restore",
        "latest",
        "--source",
        "app.db",
        "--to",
        x_s,
        "--dry-run",
    ]);
    assert!(dry.contains("app.db ("), "{dry}");
    assert!(dry.contains(&format!("-> {x_s}, a new file")), "{dry}");
    let dry = f.ok(&[
        "restore",
        "latest",
        "--source",
        "app.db",
        "--to",
        r2.to_str().unwrap(),
        "--in-place",
        "--dry-run",
    ]);
    assert!(dry.contains("replacing what is there"), "{dry}");
    let dry = f.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--to",
        x_s,
        "--dry-run",
    ]);
    assert!(dry.contains("a pg_dump stream"), "{dry}");
    let dry = f.ok(&[
        "restore",
        "latest",
        "--source",
        "shop",
        "--stdout",
        "--dry-run",
    ]);
    assert!(dry.contains("to standard output"), "{dry}");
    assert!(!x.exists());

    // A time copied from `snapshots` restores the snapshot listed there,
    // even when it was taken a fraction into that second.
    let listing = f.ok(&["snapshots", "--source", "app.db"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&second["short_id"].as_str().unwrap()[..8]))
        .unwrap_or_else(|| panic!("{listing}"));
    let shown = &line[10..29];
    // Regression (review): the listing printed RFC 3339 with nanoseconds.
    assert!(
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", shown).is_ok()
            && line[29..].starts_with("  "),
        "{line}"
    );
    let plan: serde_json::Value = serde_json::from_str(&f.ok(&[
        "restore",
        "--at",
        &format!("{shown}+00"),
        "--source",
        "app.db",
        "--to",
        x_s,
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert_eq!(plan["snapshot"], second["id"], "{shown}: {plan}");

    // Listing filters.
    let by_label: serde_json::Value =
        serde_json::from_str(&f.ok(&["snapshots", "--label", "first", "--json"])).unwrap();
    assert_eq!(by_label.as_array().unwrap().len(), 1);
    let by_source: serde_json::Value =
        serde_json::from_str(&f.ok(&["snapshots", "--source", "shop", "--json"])).unwrap();
    assert_eq!(by_source.as_array().unwrap().len(), 1);
    assert_eq!(by_source[0]["source"], "pg_dump");
    let since: serde_json::Value =
        serde_json::from_str(&f.ok(&["snapshots", "--since", now, "--json"])).unwrap();
    assert!(since.as_array().unwrap().is_empty());
}
