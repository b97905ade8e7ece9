//! A progress bar on stderr (bytes, rate, ETA) while a backup or restore
//! reads or writes, shown only when the CLI enables it: stderr is a terminal
//! and `--quiet` was not given. Library code reports through [`start`] and
//! [`add`], which do nothing otherwise, so cron's mail never holds a bar.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Lets [`start`] show bars (the CLI calls this when stderr is a terminal).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether bars are shown (callers skip work done only for them).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
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
    if ENABLED.load(Ordering::Relaxed)
        && let Some(bar) = BAR.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
    {
        bar.inc(n);
    }
}
