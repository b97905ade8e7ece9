//! A repository held in memory, for unit tests, fault tests and fuzzing.
//!
//! Cloning a [`Memory`] shares its objects and its lock: a test "reopens" the
//! repository after a simulated crash by opening a new `Repository` on a clone.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Lease, Object, ObjectInfo, Storage};
use crate::error::RepoError;
use crate::repo::lock::LockMode;

#[derive(Clone, Default)]
pub struct Memory {
    objects: Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>,
    lock: Arc<LockState>,
}

/// Readers holding the shared lock, and whether a writer holds it.
#[derive(Default)]
struct LockState {
    held: Mutex<(usize, bool)>,
    changed: Condvar,
}

struct Held {
    state: Arc<LockState>,
    mode: LockMode,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.state.held.lock().expect("lock state");
        match self.mode {
            LockMode::Shared => held.0 -= 1,
            LockMode::Exclusive | LockMode::Append => held.1 = false,
        }
        self.state.changed.notify_all();
    }
}

impl Object for Arc<Vec<u8>> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let part = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(part);
        Ok(())
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        self.objects.lock().expect("objects")
    }

    /// An independent copy of every object, with a lock of its own (a test
    /// runs one crash point per copy of a prepared repository).
    pub fn fork(&self) -> Memory {
        Memory {
            objects: Arc::new(Mutex::new(self.objects().clone())),
            lock: Arc::default(),
        }
    }

    /// Every object's bytes (tests compare states and damage objects).
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_vec()))
            .collect()
    }

    /// Overwrites an object as a damaged disk would (tests only).
    pub fn tamper(&self, name: &str, data: Vec<u8>) {
        self.objects().insert(name.to_string(), Arc::new(data));
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such object"))
}

impl Storage for Memory {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn describe(&self, name: &str) -> String {
        format!("memory:{name}")
    }

    fn put(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let mut objects = self.objects();
        if objects.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists"),
            ));
        }
        objects.insert(name.to_string(), Arc::new(data.to_vec()));
        Ok(())
    }

    fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        self.objects()
            .insert(name.to_string(), Arc::new(data.to_vec()));
        Ok(())
    }

    fn get(&self, name: &str) -> io::Result<Vec<u8>> {
        self.objects()
            .get(name)
            .map(|o| o.to_vec())
            .ok_or_else(|| not_found(name))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Object>> {
        let object = self.objects().get(name).cloned();
        Ok(Box::new(object.ok_or_else(|| not_found(name))?))
    }

    fn stat(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self.objects().get(name).map(|o| o.as_slice().len() as u64))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectInfo>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                name: k.clone(),
                size: v.as_slice().len() as u64,
            })
            .collect())
    }

    fn groups(&self, prefix: &str) -> io::Result<Vec<String>> {
        let mut out: Vec<String> = self
            .list(prefix)?
            .into_iter()
            .filter_map(|o| {
                let rest = &o.name[prefix.len()..];
                rest.split_once('/').map(|(group, _)| group.to_string())
            })
            .collect();
        out.dedup();
        Ok(out)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        self.objects().remove(name);
        Ok(())
    }

    fn lock(&self, mode: LockMode, wait: Duration) -> Result<Lease, RepoError> {
        let deadline = Instant::now() + wait;
        let mut held = self.lock.held.lock().expect("lock state");
        loop {
            let free = match mode {
                LockMode::Shared => !held.1,
                LockMode::Exclusive | LockMode::Append => !held.1 && held.0 == 0,
            };
            if free {
                match mode {
                    LockMode::Shared => held.0 += 1,
                    LockMode::Exclusive | LockMode::Append => held.1 = true,
                }
                return Ok(Lease::new(Held {
                    state: self.lock.clone(),
                    mode,
                }));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RepoError::Locked {
                    path: "memory:".into(),
                    waited_secs: wait.as_secs(),
                });
            }
            held = self
                .lock
                .changed
                .wait_timeout(held, left)
                .expect("lock state")
                .0;
        }
    }

    fn remove_abandoned(&self, _: Option<Duration>) -> io::Result<u64> {
        Ok(0) // puts are atomic here: nothing is ever left staged
    }
}
