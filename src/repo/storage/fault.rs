//! A storage that fails on purpose, in the spirit of redb's crash-testing
//! backend: it counts the operations that change the repository (each put,
//! replace and delete is one) and at a chosen one fails, tears the write or
//! "crashes". After a crash every operation fails, as if the process were
//! gone; the test then opens a new `Repository` on the inner storage (the
//! restart) and checks what survived.
//!
//! Running a command once without a fault and reading [`Faulty::writes`]
//! gives the number of crash points to try.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Lease, Object, ObjectInfo, Storage};
use crate::error::RepoError;
use crate::repo::lock::LockMode;

/// What happens at the chosen write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The write fails and changes nothing; later operations work.
    Fail,
    /// The process dies before the write takes effect.
    CrashBefore,
    /// The process dies after the write took effect, before it learnt so.
    CrashAfter,
    /// A put or replace stores only the first half of its bytes and reports
    /// success (a storage that lies); a delete fails as with `Fail`.
    ShortWrite,
}

struct State {
    writes: u64,
    at: Option<(u64, Fault)>,
    crashed: bool,
    /// What [`Storage::parallel_uploads`] says (1 unless a test asks).
    uploads: usize,
    /// What [`Storage::is_remote`] says, when a test overrides the inner's.
    remote: Option<bool>,
}

/// Wraps a storage and injects one fault at its `n`th write.
pub struct Faulty {
    inner: Arc<dyn Storage>,
    state: Mutex<State>,
}

/// The error every operation returns once the simulated process is gone.
fn crashed() -> io::Error {
    io::Error::other("simulated crash: this process is gone")
}

/// What a write should do, decided before it runs.
enum Step {
    Run,
    RunThenCrash,
    Fail,
    Short,
}

impl Faulty {
    /// No fault until [`inject`](Self::inject).
    pub fn new(inner: Arc<dyn Storage>) -> Faulty {
        Faulty {
            inner,
            state: Mutex::new(State {
                writes: 0,
                at: None,
                crashed: false,
                uploads: 1,
                remote: None,
            }),
        }
    }

    /// Injects `fault` at write number `n` (1-based, counted from creation).
    pub fn inject(&self, n: u64, fault: Fault) {
        self.state.lock().expect("fault state").at = Some((n, fault));
    }

    /// Makes writers upload packs from `n` threads, as to a remote storage.
    pub fn with_parallel_uploads(self, n: usize) -> Faulty {
        self.state.lock().expect("fault state").uploads = n;
        self
    }

    /// Makes the repository behave as a remote one (index objects, larger
    /// packs for a new repository).
    pub fn as_remote(self) -> Faulty {
        self.state.lock().expect("fault state").remote = Some(true);
        self
    }

    /// Writes seen so far (those that failed included).
    pub fn writes(&self) -> u64 {
        self.state.lock().expect("fault state").writes
    }

    /// Whether the simulated crash happened.
    pub fn crashed(&self) -> bool {
        self.state.lock().expect("fault state").crashed
    }

    fn read_ok(&self) -> io::Result<()> {
        match self.crashed() {
            true => Err(crashed()),
            false => Ok(()),
        }
    }

    fn step(&self) -> io::Result<Step> {
        let mut s = self.state.lock().expect("fault state");
        if s.crashed {
            return Err(crashed());
        }
        s.writes += 1;
        let fault = match s.at {
            Some((n, fault)) if n == s.writes => fault,
            _ => return Ok(Step::Run),
        };
        Ok(match fault {
            Fault::Fail => Step::Fail,
            Fault::ShortWrite => Step::Short,
            Fault::CrashBefore => {
                s.crashed = true;
                return Err(crashed());
            }
            Fault::CrashAfter => {
                s.crashed = true;
                Step::RunThenCrash
            }
        })
    }

    /// Runs one write under the fault plan; `short` is the torn version.
    fn write(
        &self,
        run: impl FnOnce() -> io::Result<()>,
        short: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        match self.step()? {
            Step::Run => run(),
            Step::RunThenCrash => run().and(Err(crashed())),
            Step::Fail => Err(io::Error::other("injected write failure")),
            Step::Short => short(),
        }
    }
}

impl Storage for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn describe(&self, name: &str) -> String {
        self.inner.describe(name)
    }

    fn put(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.write(
            || self.inner.put(name, data),
            || self.inner.put(name, &data[..data.len() / 2]),
        )
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.write(
            || self.inner.replace(name, data),
            || self.inner.replace(name, &data[..data.len() / 2]),
        )
    }

    fn get(&self, name: &str) -> io::Result<Vec<u8>> {
        self.read_ok()?;
        self.inner.get(name)
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Object>> {
        self.read_ok()?;
        self.inner.open(name)
    }

    fn stat(&self, name: &str) -> io::Result<Option<u64>> {
        self.read_ok()?;
        self.inner.stat(name)
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        self.read_ok()?;
        self.inner.list(prefix)
    }

    fn groups(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.read_ok()?;
        self.inner.groups(prefix)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        self.write(
            || self.inner.delete(name),
            || Err(io::Error::other("injected delete failure")),
        )
    }

    fn delete_many(&self, names: &[String]) -> io::Result<()> {
        names.iter().try_for_each(|n| self.delete(n))
    }

    fn lock(&self, mode: LockMode, wait: Duration) -> Result<Lease, RepoError> {
        use crate::error::IoContext;
        self.read_ok().ctx(|| "locking the repository".into())?;
        self.inner.lock(mode, wait)
    }

    fn remove_abandoned(&self, wal_older_than: Option<Duration>) -> io::Result<u64> {
        self.read_ok()?;
        self.inner.remove_abandoned(wal_older_than)
    }

    fn is_remote(&self) -> bool {
        let remote = self.state.lock().expect("fault state").remote;
        remote.unwrap_or_else(|| self.inner.is_remote())
    }

    fn parallel_uploads(&self) -> usize {
        self.state.lock().expect("fault state").uploads
    }

    fn local_dir(&self) -> Option<&Path> {
        self.inner.local_dir()
    }
}
