//! Per-key-store request quotas (token buckets).
//!
//! KMS sends at most its quota per external key store (1,800 requests/s by default); a proxy
//! may enforce its own and answer `ThrottlingException` above it. Health checks are exempt so
//! that an overloaded store still reports its state.

use std::sync::Mutex;
use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `rate` stored (one second of burst).
#[derive(Debug)]
pub struct RequestQuota {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl RequestQuota {
    /// A quota of `per_second` requests per second; 0 means unlimited.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second);
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one token; `false` when over quota.
    pub fn try_acquire(&self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse() {
        let q = RequestQuota::new(50);
        let granted = (0..200).filter(|_| q.try_acquire()).count();
        // One second of burst, plus whatever refilled while the loop ran.
        assert!((50..60).contains(&granted), "{granted}");
        let unlimited = RequestQuota::new(0);
        assert!((0..10_000).all(|_| unlimited.try_acquire()));
    }
}
