//! A repository made by release 0.1.0, before the repository went behind the
//! storage boundary, opened and used by this build.
//!
//! `tests/fixtures/repo-0.1.0.tar.gz` was made by the 0.1.0 binary (commit
//! 00fbe3e): a SQLite database of 3,000 notes backed up (label `first`,
//! protected), then edited (every 7th note, notes past 2,900 deleted) and
//! backed up again (`second`), `cat` of `printf 'line %s\n' 1..5000` as a
//! command stream, a gc, and a timeline history file pushed for system
//! identifier 7000000000000000001.

use std::process::Command;

use crate::helpers::*;

const FIRST: &str = "30b1fca8946af3aea1dea35da0116f4d15fd0edb77896605ed4d9c966a16ebd3";
const SECOND: &str = "c988aecaad05b7dd6c53c3d3f2202017b96880f9cecbe9b8a461d908d85d73d6";
const DUMP: &str = "31a132c96f512abe46581a92b176d5fad32c57ddf1b05f56c5ba74b14e210bec";
/// The blake3 of each database as the 0.1.0 binary read it.
const FIRST_BLAKE3: &str = "e956020b31c4ede2bab230d068f22f8da1761272d36eecceeb4a23f4822cc3d2";
const SECOND_BLAKE3: &str = "1201bac164cc2ed106331276d9bfeb281b8258c010db5533ef61dc7e2377b5b4";

fn unpack() -> Fixture {
    let f = Fixture::new();
    let tarball = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/repo-0.1.0.tar.gz"
    );
    let status = Command::new("tar")
        .args(["xzf", tarball, "-C"])
        .arg(f.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    f
}

fn notes(db: &std::path::Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_repository_made_by_release_0_1_0_keeps_working() {
    let f = unpack();
    let before = f.repo_state();
    let snaps = f.snapshots();
    let ids: Vec<&str> = snaps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [FIRST, SECOND, DUMP]);
    assert_eq!(snaps[0]["protected"], true);
    assert_eq!(snaps[1]["label"], "second");
    let out = f.ok(&["check", "--read-data"]);
    assert!(out.contains("checked 3 snapshots"), "{out}");

    // Every snapshot restores to what 0.1.0 read.
    for (id, hash, rows) in [(FIRST, FIRST_BLAKE3, 3000), (SECOND, SECOND_BLAKE3, 2900)] {
        let to = f.path(&format!("{}.db", &id[..8]));
        f.ok(&["restore", id, "--to", to.to_str().unwrap()]);
        let bytes = std::fs::read(&to).unwrap();
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), hash);
        assert_eq!(notes(&to), rows);
        assert!(integrity_ok(&to));
    }
    let dump = f.run(&["restore", DUMP, "--stdout"]);
    let expected: String = (1..=5000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8(dump.stdout).unwrap(), expected);
    let history = f.path("00000002.history");
    f.ok(&[
        "wal",
        "fetch",
        "--system-id",
        "7000000000000000001",
        "00000002.history",
        history.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&history).unwrap(),
        "1\t0/3000028\tno recovery target specified\n"
    );
    // Reading changed nothing (the lock file aside).
    assert_eq!(f.repo_state(), before);

    // It takes new backups beside the old ones, and gc and check work on both.
    let db = f.path("app.db");
    std::fs::copy(f.path(&format!("{}.db", &SECOND[..8])), &db).unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE notes SET body = body || ' again' WHERE id < 200",
            [],
        )
        .unwrap();
    let third = f.backup(&[&db]);
    f.ok(&["forget", SECOND]);
    f.ok(&["gc"]);
    let out = f.ok(&["check", "--read-data"]);
    assert!(out.contains("checked 3 snapshots"), "{out}");
    assert_eq!(f.restored_bytes(&third), std::fs::read(&db).unwrap());
    let first = f.restored_bytes(FIRST);
    assert_eq!(blake3::hash(&first).to_hex().as_str(), FIRST_BLAKE3);
    // The old snapshot objects are the same files, byte for byte.
    let now = f.repo_state();
    for (path, bytes) in before.iter().filter(|(p, _)| {
        p.to_string_lossy().contains("/snapshots/") && !p.to_string_lossy().contains(SECOND)
    }) {
        let kept = now.iter().find(|(p, _)| p == path);
        assert_eq!(kept.map(|(_, b)| b), Some(bytes), "{}", path.display());
    }
}
