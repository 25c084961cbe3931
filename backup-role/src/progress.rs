//! How far a run or a restore is, as restic shows it on a terminal: files and bytes done of
//! the total, the rate, and the time left. The owner counts ([`Progress`]); the status route
//! serves [`ProgressView`]; the CLI prints [`ProgressView::line`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Counters one run or restore moves forward.
#[derive(Debug, Default)]
pub struct Progress {
    active: AtomicBool,
    started: std::sync::Mutex<Option<Instant>>,
    files: AtomicU64,
    bytes: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    totals_known: AtomicBool,
    sent: AtomicU64,
}

impl Progress {
    /// Starts counting afresh.
    pub fn start(&self) {
        for c in [
            &self.files,
            &self.bytes,
            &self.total_files,
            &self.total_bytes,
            &self.sent,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.totals_known.store(false, Ordering::Relaxed);
        *self.started.lock().expect("started") = Some(Instant::now());
        self.active.store(true, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.active.store(false, Ordering::Relaxed);
    }

    pub fn set_totals(&self, files: u64, bytes: u64) {
        self.total_files.store(files, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
        self.totals_known.store(true, Ordering::Relaxed);
    }

    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bytes_done(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn view(&self) -> ProgressView {
        let known = self.totals_known.load(Ordering::Relaxed);
        ProgressView {
            active: self.active.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_files: known.then(|| self.total_files.load(Ordering::Relaxed)),
            total_bytes: known.then(|| self.total_bytes.load(Ordering::Relaxed)),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            elapsed_ms: self
                .started
                .lock()
                .expect("started")
                .map_or(0, |s| s.elapsed().as_millis() as u64),
        }
    }
}

/// A run's or a restore's progress as the status route answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressView {
    /// Whether one is under way.
    pub active: bool,
    pub files: u64,
    /// Bytes of file content read (a run) or written (a restore).
    pub bytes: u64,
    /// Known once the tree has been counted.
    pub total_files: Option<u64>,
    pub total_bytes: Option<u64>,
    /// Sealed bytes sent to spaces (a run).
    pub bytes_sent: u64,
    pub elapsed_ms: u64,
}

/// `bytes` as people read them: `812 B`, `45.2 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}", secs / 60, secs % 60)
}

impl ProgressView {
    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        if self.elapsed_ms == 0 {
            0.0
        } else {
            self.bytes as f64 * 1000.0 / self.elapsed_ms as f64
        }
    }

    /// Seconds left at the rate so far (unknown without totals or a rate).
    pub fn eta_secs(&self) -> Option<u64> {
        let total = self.total_bytes?;
        let rate = self.rate();
        (rate > 0.0).then(|| (total.saturating_sub(self.bytes) as f64 / rate).ceil() as u64)
    }

    /// One terminal line: `[0:03] 1204/16804 files, 45.2 MiB/192.0 MiB, 15.1 MiB/s, ETA 0:10`.
    pub fn line(&self) -> String {
        let files = match self.total_files {
            Some(t) => format!("{}/{t} files", self.files),
            None => format!("{} files", self.files),
        };
        let bytes = match self.total_bytes {
            Some(t) => format!("{}/{}", human(self.bytes), human(t)),
            None => human(self.bytes),
        };
        let mut line = format!(
            "[{}] {files}, {bytes}, {}/s",
            clock(self.elapsed_ms / 1000),
            human(self.rate() as u64)
        );
        if self.bytes_sent > 0 {
            line.push_str(&format!(", {} sent", human(self.bytes_sent)));
        }
        if let Some(eta) = self.eta_secs() {
            line.push_str(&format!(", ETA {}", clock(eta)));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_files_bytes_rate_and_time_left() {
        let view = ProgressView {
            active: true,
            files: 1204,
            bytes: 50 << 20,
            total_files: Some(16804),
            total_bytes: Some(200 << 20),
            bytes_sent: 0,
            elapsed_ms: 5_000,
        };
        assert_eq!(view.rate(), (10 << 20) as f64);
        assert_eq!(view.eta_secs(), Some(15));
        assert_eq!(
            view.line(),
            "[0:05] 1204/16804 files, 50.0 MiB/200.0 MiB, 10.0 MiB/s, ETA 0:15"
        );
        let counting = ProgressView {
            total_files: None,
            total_bytes: None,
            bytes_sent: 2048,
            ..view
        };
        assert_eq!(counting.eta_secs(), None);
        assert!(
            counting.line().ends_with("10.0 MiB/s, 2.0 KiB sent"),
            "{}",
            counting.line()
        );
        assert_eq!(human(812), "812 B");
    }
}
