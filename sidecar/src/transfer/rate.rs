//! The bandwidth cap (`transfer_max_bandwidth`).

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// A token bucket shared by every transfer, holding the per-transfer cap times the transfers.
pub struct RateLimiter {
    bytes_per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A cap of `bytes_per_sec`, with up to one second of burst.
    pub fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            state: Mutex::new((bytes_per_sec as f64, Instant::now())),
        }
    }

    /// Waits until `n` bytes may pass.
    pub async fn acquire(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.bytes_per_sec;
            s.0 = (s.0 + refill).min(self.bytes_per_sec) - n as f64;
            s.1 = now;
            if s.0 < 0.0 { Duration::from_secs_f64(-s.0 / self.bytes_per_sec) } else { Duration::ZERO }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}
