//! A progress bar on stderr (bytes, rate, ETA) while a backup or restore
//! reads or writes, shown only when the CLI enables it: stderr is a terminal
//! and `--quiet` was not given. Library code reports through [`start`] and
//! [`add`], which do nothing otherwise, so cron's mail never holds a bar.
//! The same calls feed the [`Counters`] that [`track`] installs: the
//! progress `rewindb serve` shows for the job it runs (one at a time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);
static TRACKING: AtomicBool = AtomicBool::new(false);
static SINK: Mutex<Option<Arc<Counters>>> = Mutex::new(None);

/// Bytes done of bytes to do, for a reader other than the terminal.
#[derive(Debug, Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// Sends progress to `counters` from now on (`None`: no longer).
pub fn track(counters: Option<Arc<Counters>>) {
    TRACKING.store(counters.is_some(), Ordering::Relaxed);
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = counters;
}

fn sink() -> Option<Arc<Counters>> {
    if !TRACKING.load(Ordering::Relaxed) {
        return None;
    }
    SINK.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Lets [`start`] show bars (the CLI calls this when stderr is a terminal).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether bars are shown (callers skip work done only for them).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed) || TRACKING.load(Ordering::Relaxed)
}

/// Clears the bar when dropped.
pub struct Bar(());

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = BAR.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

/// Shows a bar for `total` bytes of `what`, until the returned guard drops.
pub fn start(total: u64, what: &str) -> Bar {
    if let Some(c) = sink() {
        c.total.fetch_add(total, Ordering::Relaxed);
    }
    if ENABLED.load(Ordering::Relaxed) {
        let bar = ProgressBar::new(total).with_message(what.to_string());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    Bar(())
}

/// Counts `n` more bytes done.
pub fn add(n: u64) {
    if let Some(c) = sink() {
        c.done.fetch_add(n, Ordering::Relaxed);
    }
    if ENABLED.load(Ordering::Relaxed)
        && let Some(bar) = BAR.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
    {
        bar.inc(n);
    }
}
