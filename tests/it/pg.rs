//! A real PostgreSQL 15 cluster for tests, run as the `postgres` OS user.
//!
//! PostgreSQL refuses to run as root, so the cluster lives in a directory
//! `postgres` owns, listens only on a unix socket there, and archives with a
//! copy of the rewindb binary placed where `postgres` can run it (the build
//! directory may not be reachable for it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::helpers::{BIN, exited_with, succeeded};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PORT: &str = "5432";

/// Runs a command as the `postgres` user; panics with its output on failure.
pub fn as_postgres(program: &str, args: &[&str]) -> Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A directory tree that `postgres` owns, with a repository and the binary.
pub struct PgFixture {
    pub dir: tempfile::TempDir,
    /// The password file of an encrypted repository ([`PgFixture::encrypted`]).
    pub password: Option<PathBuf>,
}

impl PgFixture {
    pub fn new() -> PgFixture {
        Self::make(false)
    }

    /// A fixture whose repository is encrypted: every rewindb run, and the
    /// server's archive_command, read the password from a file `postgres`
    /// can read (as `docs/operations.md` tells operators to set it up).
    pub fn encrypted() -> PgFixture {
        Self::make(true)
    }

    fn make(encrypted: bool) -> PgFixture {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 server binaries are not in {PG_BIN}: install postgresql-15 \
             (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        install_binary(&dir.path().join("rewindb"));
        let password = encrypted.then(|| {
            let pw = dir.path().join("password");
            std::fs::write(&pw, "pg secret\n").unwrap();
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
            chown_postgres(&pw);
            let cache = dir.path().join("pg-cache");
            std::fs::create_dir(&cache).unwrap();
            chown_postgres(&cache);
            pw
        });
        let f = PgFixture { dir, password };
        f.ok(&["init"]);
        // The server's archive_command runs as `postgres`: it reads
        // config.json and writes wal/ (backups here run as root).
        chown_postgres(&f.repo());
        f
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn bin(&self) -> PathBuf {
        self.path("rewindb")
    }

    /// Runs rewindb (as root, like an operator's cron job) in `cwd`.
    pub fn run_in(&self, cwd: &Path, args: &[&str]) -> Output {
        let mut c = Command::new(self.bin());
        c.arg("--repo")
            .arg(self.repo())
            .args(args)
            .env_remove("REWINDB_REPOSITORY")
            .current_dir(cwd);
        if let Some(pw) = &self.password {
            c.env("REWINDB_PASSWORD_FILE", pw)
                .env("REWINDB_KDF", "1024,1")
                .env("REWINDB_CACHE_DIR", self.path("cache"));
        }
        c.output().unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_in(self.dir.path(), args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Runs rewindb, asserts it exits with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        exited_with(args, self.run(args), code)
    }

    /// Creates a cluster in `name` (not started) archiving into the repository.
    pub fn cluster(&self, name: &str) -> Cluster {
        let root = self.path(name);
        std::fs::create_dir(&root).unwrap();
        chown_postgres(&root);
        let data = root.join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let env = match &self.password {
            Some(pw) => format!(
                "REWINDB_PASSWORD_FILE={} REWINDB_CACHE_DIR={} ",
                pw.display(),
                self.path("pg-cache").display()
            ),
            None => String::new(),
        };
        let conf = format!(
            "\nport = {PORT}\nunix_socket_directories = '{}'\nlisten_addresses = ''\n\
             archive_mode = on\narchive_command = '{env}{} --repo {} wal push %p'\n\
             wal_level = replica\nfsync = off\nshared_buffers = 32MB\n",
            root.display(),
            self.bin().display(),
            self.repo().display()
        );
        append(&data.join("postgresql.conf"), &conf);
        Cluster {
            root,
            data,
            running: false,
        }
    }
}

/// Copies the rewindb binary to `to` (mode 0755) in a child process.
///
/// Regression guard for "Text file busy" (ETXTBSY): copying in this process
/// held the new file open for writing while other test threads forked, and a
/// child forked in that window kept the descriptor until its exec, so running
/// the copy failed at random. `install` opens it in a process nobody forks from.
fn install_binary(to: &Path) {
    let st = Command::new("install")
        .args(["-m", "0755", BIN])
        .arg(to)
        .status()
        .unwrap_or_else(|e| panic!("install {BIN}: {e}"));
    assert!(st.success(), "install {BIN} {} failed", to.display());
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

pub fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// One cluster: data directory and socket directory.
pub struct Cluster {
    pub root: PathBuf,
    pub data: PathBuf,
    running: bool,
}

impl Cluster {
    /// A cluster restored into `data` by rewindb, served from `root`'s socket.
    pub fn restored(root: &Path, data: &Path) -> Cluster {
        Cluster {
            root: root.to_path_buf(),
            data: data.to_path_buf(),
            running: false,
        }
    }

    pub fn start(&mut self) {
        let log = self.root.join(format!(
            "{}.log",
            self.data.file_name().unwrap().to_str().unwrap()
        ));
        let opts = format!("-p {PORT} -k {}", self.root.display());
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "120",
                "start",
            ],
        );
        self.running = true;
    }

    pub fn stop(&mut self) {
        if self.running {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(Path::new(PG_BIN).join("pg_ctl"))
                .args([
                    "-D",
                    self.data.to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .output();
            self.running = false;
        }
    }

    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            self.root.display()
        )
    }

    /// Runs SQL through psql; returns its unaligned output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                self.root.to_str().unwrap(),
                "-p",
                PORT,
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                "postgres",
                "-qtAX",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Switches to a new WAL segment and waits until the finished one is in
    /// the repository; returns its name.
    pub fn switch_and_wait(&self, repo: &Path) -> String {
        // A record first, so that the switch has something to close.
        self.sql("SELECT pg_create_restore_point('rewindb-test')");
        let name = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        wait_for_wal(repo, &name);
        name
    }

    pub fn system_identifier(&self) -> String {
        self.sql("SELECT system_identifier FROM pg_control_system()")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits (up to a minute) until WAL file `name` is archived in `repo`.
pub fn wait_for_wal(repo: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir(repo.join("wal"))
            .unwrap()
            .flatten()
            .any(|d| d.path().join(name).exists());
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "WAL {name} was not archived within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
