//! Sealed packs on their way to storage.
//!
//! A local repository stores each pack in the writer's own thread, as it
//! fills: the order of writes is fixed, which the crash tests rely on. A
//! remote one ([`Storage::parallel_uploads`] above 1) hands each pack to one
//! of a few upload threads and goes on filling the next: a PUT's round trips
//! overlap with chunking and compressing. The hand-over waits for a free
//! thread, so at most `uploads + 1` packs are in memory at once.
//!
//! An upload that fails is reported at the next hand-over or at
//! [`PackUploads::finish`]; either way the caller stops before anything
//! refers to the pack (invariant 1). Packs already stored stay unreferenced
//! until gc removes them, as after any failed backup.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::RepoError;
use crate::id::PackId;
use crate::repo::storage::Storage;

/// Stores packs durably, in this thread or in a few others.
pub(crate) struct PackUploads {
    storage: Arc<dyn Storage>,
    queue: Option<SyncSender<(PackId, Vec<u8>)>>,
    workers: Vec<JoinHandle<()>>,
    /// The first upload that failed.
    failure: Arc<Mutex<Option<RepoError>>>,
}

impl PackUploads {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> PackUploads {
        let threads = storage.parallel_uploads();
        let failure = Arc::new(Mutex::new(None));
        if threads <= 1 {
            return PackUploads {
                storage,
                queue: None,
                workers: Vec::new(),
                failure,
            };
        }
        // A rendezvous channel: `send` returns once a thread has taken the pack.
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let (storage, rx, failure) = (storage.clone(), rx.clone(), failure.clone());
                std::thread::spawn(move || upload_loop(&*storage, &rx, &failure))
            })
            .collect();
        PackUploads {
            storage,
            queue: Some(tx),
            workers,
            failure,
        }
    }

    /// Stores a sealed pack, or hands it to an upload thread. Fails with the
    /// first earlier upload's error, if one failed.
    pub(crate) fn send(&mut self, id: PackId, bytes: Vec<u8>) -> Result<(), RepoError> {
        self.check()?;
        match &self.queue {
            None => store_pack(&*self.storage, &id, bytes),
            Some(queue) => match queue.send((id, bytes)) {
                Ok(()) => Ok(()),
                // Every thread is gone, which only a panic does.
                Err(_) => self.finish(),
            },
        }
    }

    /// Waits for every upload; `Ok` once all the packs sent are durable.
    pub(crate) fn finish(&mut self) -> Result<(), RepoError> {
        self.queue = None;
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                self.failure
                    .lock()
                    .expect("failure slot")
                    .get_or_insert_with(|| RepoError::Io {
                        context: format!("uploading packs to {}", self.storage.location()),
                        source: std::io::Error::other("an upload thread panicked"),
                    });
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), RepoError> {
        match self.failure.lock().expect("failure slot").take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for PackUploads {
    fn drop(&mut self) {
        // A writer dropped on an error path: let the uploads in flight end
        // (their packs are unreferenced) rather than leave threads behind.
        let _ = self.finish();
    }
}

fn upload_loop(
    storage: &dyn Storage,
    queue: &Mutex<Receiver<(PackId, Vec<u8>)>>,
    failure: &Mutex<Option<RepoError>>,
) {
    loop {
        let Ok((id, bytes)) = queue.lock().expect("upload queue").recv() else {
            return;
        };
        if failure.lock().expect("failure slot").is_some() {
            continue; // the writer stops at its next hand-over
        }
        if let Err(e) = store_pack(storage, &id, bytes) {
            failure.lock().expect("failure slot").get_or_insert(e);
        }
    }
}

/// Stores a pack create-only; one already there is the same pack (its name
/// is its hash), so that is success.
pub(crate) fn store_pack(
    storage: &dyn Storage,
    id: &PackId,
    bytes: Vec<u8>,
) -> Result<(), RepoError> {
    use crate::error::IoContext;
    let name = crate::repo::storage::pack_name(id);
    match storage.put_owned(&name, bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).ctx(|| format!("writing pack {}", storage.describe(&name)))
        }
        _ => Ok(()),
    }
}
