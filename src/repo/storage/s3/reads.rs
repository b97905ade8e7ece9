//! Reading objects of a bucket: one bounded set of fetched ranges shared by
//! every reader of the backend ([`Windows`]), and the [`Object`] that reads
//! through it ([`S3Object`]).

use std::io;
use std::sync::{Arc, Mutex};

use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::{Inner, io_error};
use crate::repo::storage::Object;

/// Bytes fetched at once when a pack is read in pieces: a restore reads a
/// pack's frames in order, so one request serves many of them.
const READ_WINDOW: u64 = 4 << 20;

/// An object read through the backend's [`Windows`].
pub(super) struct S3Object {
    pub(super) inner: Arc<Inner>,
    pub(super) name: String,
    pub(super) path: ObjectPath,
    pub(super) len: u64,
}

impl Object for S3Object {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (start, bytes) = self.inner.windows.read(self, offset, end)?;
        let from = (offset - start) as usize;
        buf.copy_from_slice(&bytes[from..from + buf.len()]);
        Ok(())
    }
}

/// The ranges of objects fetched lately, shared by every reader of this
/// backend (a restore's two reader threads take alternate batches of one
/// pack: each fetching for itself, both would download all of it).
///
/// A read that continues where the last fetch of its object ended fetches
/// ahead, twice as far each time up to [`READ_WINDOW`] (a restore reads a
/// pack's frames in order, so one request serves many of them); a read
/// elsewhere fetches just what it asks (a delta's base, a pack's table).
/// Once a stream reads whole windows, the next [`PREFETCH`] windows are
/// fetched in the background, so the reader rarely waits for the network.
/// A range being fetched is waited for, not fetched again. At most
/// [`MAX_BYTES`] are kept: memory stays bounded however many packs the
/// readers hold open.
#[derive(Default)]
pub(super) struct Windows {
    state: Mutex<WindowState>,
    fetched: std::sync::Condvar,
}

#[derive(Default)]
struct WindowState {
    /// Most recently used last.
    windows: std::collections::VecDeque<Window>,
    /// Per object: where its fetches (done or under way) end, and how far
    /// the last one read ahead.
    streams: std::collections::HashMap<String, (u64, u64)>,
}

/// What the windows hold of a range.
enum Gathered {
    Ready(u64, bytes::Bytes),
    UnderWay,
    /// Nothing covers this offset (the first such).
    Missing(u64),
}

struct Window {
    name: String,
    start: u64,
    end: u64,
    /// `None` while it is being fetched; an error is the fetcher's to report.
    bytes: Option<bytes::Bytes>,
}

/// Bytes the windows hold at most (fetched, or being fetched).
const MAX_BYTES: u64 = 48 << 20;
/// Background fetches under way at most.
const MAX_PREFETCHES: usize = 6;
/// Windows fetched ahead of a stream that reads whole windows.
const PREFETCH: u64 = 2;
/// The least a read that continues the one before fetches ahead.
const MIN_AHEAD: u64 = 256 << 10;

impl Windows {
    /// The bytes of `object` covering `offset..end`, with where they start.
    fn read(
        self: &Arc<Self>,
        object: &S3Object,
        offset: u64,
        end: u64,
    ) -> io::Result<(u64, bytes::Bytes)> {
        let mut state = self.state.lock().expect("windows");
        loop {
            let missing = match Self::gather(&state, &object.name, offset, end) {
                Gathered::Ready(start, bytes) => {
                    self.prefetch(&mut state, object, offset);
                    return Ok((start, bytes));
                }
                // Being fetched (by another reader, or ahead): wait.
                Gathered::UnderWay => {
                    state = self.fetched.wait(state).expect("windows");
                    continue;
                }
                Gathered::Missing(at) => at,
            };
            let (from, to) = Self::plan(&mut state, object, missing, end);
            Self::push(&mut state, &object.name, from, to);
            self.prefetch(&mut state, object, offset);
            drop(state);
            let got = object
                .inner
                .block(object.inner.store.get_range(&object.path, from..to));
            let got = match got {
                // Shorter than its recorded size: the object was truncated.
                Ok(bytes) if (bytes.len() as u64) < to - from => {
                    Err(io::Error::from(io::ErrorKind::UnexpectedEof))
                }
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(io_error(e)),
            };
            self.complete(&object.name, from, got.as_ref().ok().cloned());
            got?;
            state = self.state.lock().expect("windows");
        }
    }

    /// `offset..end` of `name` from the windows: one window's bytes when one
    /// covers it, else the pieces of adjacent windows joined (a frame that
    /// straddles two windows is not fetched again).
    fn gather(state: &WindowState, name: &str, offset: u64, end: u64) -> Gathered {
        let mut pieces: Vec<bytes::Bytes> = Vec::new();
        let mut at = offset;
        while at < end {
            let Some(w) =
                (state.windows.iter()).find(|w| w.name == name && w.start <= at && at < w.end)
            else {
                return Gathered::Missing(at);
            };
            let Some(bytes) = &w.bytes else {
                return Gathered::UnderWay;
            };
            let upto = end.min(w.end);
            if pieces.is_empty() && upto == end {
                return Gathered::Ready(w.start, bytes.clone());
            }
            pieces.push(bytes.slice((at - w.start) as usize..(upto - w.start) as usize));
            at = upto;
        }
        Gathered::Ready(offset, pieces.concat().into())
    }

    /// Adds a window that is about to be fetched, evicting the oldest
    /// fetched ones while the windows would hold more than [`MAX_BYTES`].
    fn push(state: &mut WindowState, name: &str, start: u64, end: u64) {
        let mut held: u64 = state.windows.iter().map(|w| w.end - w.start).sum();
        while held + (end - start) > MAX_BYTES {
            let Some(i) = state.windows.iter().position(|w| w.bytes.is_some()) else {
                break; // all under way: they are bounded by the prefetch budget
            };
            let w = state.windows.remove(i).expect("found");
            held -= w.end - w.start;
        }
        state.windows.push_back(Window {
            name: name.to_string(),
            start,
            end,
            bytes: None,
        });
    }

    /// Fills (or, on failure, drops: a waiting reader fetches it itself) the
    /// window of `name` at `start`, and wakes the readers waiting for it.
    fn complete(&self, name: &str, start: u64, bytes: Option<bytes::Bytes>) {
        let mut state = self.state.lock().expect("windows");
        let at = state
            .windows
            .iter()
            .position(|w| w.name == name && w.start == start && w.bytes.is_none());
        match (bytes, at) {
            (Some(bytes), Some(i)) => state.windows[i].bytes = Some(bytes),
            (None, Some(i)) => {
                state.windows.remove(i);
            }
            _ => {}
        }
        self.fetched.notify_all();
    }

    /// The range to fetch for a read of `offset..end` that no window covers.
    fn plan(state: &mut WindowState, object: &S3Object, offset: u64, end: u64) -> (u64, u64) {
        if state.streams.len() > 1024 {
            state.streams.clear();
        }
        let (last_end, ahead) = state.streams.get(&object.name).copied().unwrap_or((0, 0));
        // Continuing: at or just past where the last fetch ended.
        let continuing = last_end > 0
            && offset >= last_end.saturating_sub(READ_WINDOW * (PREFETCH + 1))
            && offset <= last_end + MIN_AHEAD;
        let ahead = match continuing {
            true => (ahead * 2).clamp(MIN_AHEAD, READ_WINDOW),
            false => 0,
        };
        // Up to the next window already there: nothing is fetched twice.
        let next = (state.windows.iter())
            .filter(|w| w.name == object.name && w.start > offset)
            .map(|w| w.start)
            .min()
            .unwrap_or(u64::MAX);
        let to = object.len.min(end.max((offset + ahead).min(next)));
        let last_end = match continuing {
            true => last_end.max(to),
            false => to,
        };
        state.streams.insert(object.name.clone(), (last_end, ahead));
        (offset, to)
    }

    /// For a stream reading whole windows, starts fetching the windows up to
    /// [`PREFETCH`] ahead of `offset` that are not there or under way.
    fn prefetch(self: &Arc<Self>, state: &mut WindowState, object: &S3Object, offset: u64) {
        let Some(&(mut at, ahead)) = state.streams.get(&object.name) else {
            return;
        };
        if ahead < READ_WINDOW {
            return;
        }
        let horizon = object.len.min(offset + READ_WINDOW * (PREFETCH + 1));
        let under_way = state.windows.iter().filter(|w| w.bytes.is_none()).count();
        let mut budget = MAX_PREFETCHES.saturating_sub(under_way);
        while at < horizon && budget > 0 {
            let mine = || state.windows.iter().filter(|w| w.name == object.name);
            if let Some(w) = mine().find(|w| w.start <= at && at < w.end) {
                at = w.end; // there, or under way
                continue;
            }
            let next = mine().filter(|w| w.start > at).map(|w| w.start).min();
            let to = object
                .len
                .min(at + READ_WINDOW)
                .min(next.unwrap_or(u64::MAX));
            Self::push(state, &object.name, at, to);
            let (windows, store, path, name) = (
                self.clone(),
                object.inner.store.clone(),
                object.path.clone(),
                object.name.clone(),
            );
            // The task holds the client and these windows, not the backend:
            // a runtime must not be dropped from one of its own tasks.
            object.inner.rt.spawn(async move {
                let got = store.get_range(&path, at..to).await.ok();
                let got = got.filter(|b| b.len() as u64 == to - at);
                windows.complete(&name, at, got);
            });
            at = to;
            budget -= 1;
        }
        state.streams.insert(object.name.clone(), (at, ahead));
    }
}
