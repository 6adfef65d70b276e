//! Time as the front end sees it. Deletion windows and other time-dependent behaviour run on
//! this clock; in test builds the end-to-end suite can move it forward.

use std::sync::atomic::{AtomicI64, Ordering};

/// The service clock: system time plus an offset that only test builds can change.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        sys.saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward (test builds only).
    #[cfg(feature = "test-hooks")]
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Epoch milliseconds as KMS renders timestamps: epoch seconds with millisecond fraction.
pub fn epoch_seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}
