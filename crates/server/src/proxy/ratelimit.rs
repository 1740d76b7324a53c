//! Per-client-IP token buckets for public previews.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Buckets kept at most; past that, full (idle) buckets are dropped.
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// `rate` requests per second per IP, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.buckets.lock();
        if map.len() >= MAX_CLIENTS && !map.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate_per_ip() {
        let r = RateLimiter::new(10, 3);
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("test value"),
            "10.0.0.2".parse().expect("test value"),
        );
        let t = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t)));
        assert!(!r.allow(a, t), "burst spent");
        assert!(r.allow(b, t), "another client has its own bucket");
        assert!(!r.allow(a, t + Duration::from_millis(50)), "half a token");
        assert!(r.allow(a, t + Duration::from_millis(110)), "one token back");
        assert!(!r.allow(a, t + Duration::from_millis(120)));
    }
}
