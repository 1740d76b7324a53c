//! Token buckets in a map that never holds more than its capacity: per
//! client address for public previews ([`RateLimiter`]), per API key for
//! the API ([`Limiter`] keyed by key id).
//!
//! A client is an IPv4 address or an IPv6 /64 (one host usually holds a
//! whole /64, so keying by full address would give it 2^64 buckets). When
//! the map is full and a new client arrives, full (idle) buckets go first;
//! if none is idle, the least recently seen tenth goes. An evicted client
//! that comes back starts with a full bucket: eviction only ever forgets a
//! limit, it never refuses anyone, so a flood of addresses cannot lock
//! other clients out (it can only make the limit forget the oldest ones).
//! Each eviction pass costs O(n) and frees n/10 places, so a new client
//! costs O(1) amortized.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Buckets kept at most.
pub const MAX_CLIENTS: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// This key's rate and burst (a tenant may have its own).
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// Tokens at `now`, refilled since the last take.
    fn level(&self, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate)
            .min(self.burst)
    }
}

/// `rate` tokens a second per key, bursts up to `burst`, at most
/// `capacity` keys remembered.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: f64,
    burst: f64,
    capacity: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: u32, burst: u32, capacity: usize) -> Limiter<K> {
        Limiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(10),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; when its bucket is empty, how long until
    /// it holds one again.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        self.take_at_rate(key, self.rate, self.burst, now)
    }

    /// [`Limiter::take`] at `rate` a second with bursts of `burst` for this
    /// key (a tenant's own rate); a changed rate applies from this take.
    pub fn take_with(&self, key: K, rate: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        self.take_at_rate(key, f64::from(rate), f64::from(burst.max(1)), now)
    }

    fn take_at_rate(&self, key: K, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            self.evict(&mut map, now);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        });
        b.tokens = b.level(now);
        b.last = now;
        (b.rate, b.burst) = (rate, burst);
        b.tokens = b.tokens.min(burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops idle (full) buckets; if that is not enough, the least
    /// recently seen tenth.
    fn evict(&self, map: &mut HashMap<K, Bucket>, now: Instant) {
        map.retain(|_, b| b.level(now) < b.burst);
        let keep = self.capacity - self.capacity / 10;
        if map.len() <= keep {
            return;
        }
        let mut by_age: Vec<(Instant, K)> = map.iter().map(|(c, b)| (b.last, c.clone())).collect();
        let drop = map.len() - keep;
        by_age.select_nth_unstable_by_key(drop - 1, |(last, _)| *last);
        for (_, c) in &by_age[..drop] {
            map.remove(c);
        }
    }
}

/// A preview client: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// `rate` requests per second per client address, bursts up to `burst`.
#[derive(Debug)]
pub struct RateLimiter(Limiter<Client>);

impl RateLimiter {
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter::with_capacity(rate, burst, MAX_CLIENTS)
    }

    fn with_capacity(rate: u32, burst: u32, capacity: usize) -> RateLimiter {
        RateLimiter(Limiter::new(rate, burst, capacity))
    }

    /// Takes one token for `ip`'s client; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        self.0.take(Client::from(ip), now).is_ok()
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
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

    #[test]
    fn the_map_stays_bounded_when_no_bucket_is_idle() {
        // A rate so slow no bucket refills during the test: the old
        // `retain` of idle buckets dropped nothing and the map grew.
        let r = RateLimiter::new(1, 2);
        let t = Instant::now();
        for i in 0..(2 * MAX_CLIENTS) as u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let now = t + Duration::from_micros(u64::from(i));
            assert!(r.allow(ip, now), "a new client is never refused");
            assert!(r.clients() <= MAX_CLIENTS, "{} clients", r.clients());
        }
        assert!(r.clients() > MAX_CLIENTS / 2, "{}", r.clients());
        // The most recent clients kept their (spent) buckets.
        let last = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 2 * MAX_CLIENTS as u32 - 1));
        let now = t + Duration::from_millis(100);
        assert!(r.allow(last, now));
        assert!(!r.allow(last, now), "its bucket was kept, not reset");
    }

    #[test]
    fn a_keys_own_rate_applies_from_its_next_take() {
        let l: Limiter<&str> = Limiter::new(1, 1, 100);
        let t = Instant::now();
        assert!(l.take_with("k", 10, 2, t).is_ok());
        assert!(l.take_with("k", 10, 2, t).is_ok());
        let wait = l.take_with("k", 10, 2, t).expect_err("burst of 2 spent");
        assert_eq!(wait, Duration::from_millis(100), "one token at 10/s");
        // Refills at the key's rate, not the limiter's 1/s.
        assert!(l
            .take_with("k", 10, 2, t + Duration::from_millis(100))
            .is_ok());
        // A lowered rate holds at once: the bucket is cut to the new burst.
        let t2 = t + Duration::from_secs(10);
        assert!(l.take_with("k", 1, 1, t2).is_ok());
        assert!(l.take_with("k", 1, 1, t2).is_err());
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client() {
        let r = RateLimiter::new(1, 2);
        let t = Instant::now();
        let base = u128::from("2001:db8:1:2::".parse::<Ipv6Addr>().expect("test value"));
        let spent = (0..10u128)
            .filter(|i| !r.allow(IpAddr::V6(Ipv6Addr::from(base + i + 1)), t))
            .count();
        assert_eq!(spent, 8, "addresses of one /64 share a bucket of 2");
        assert_eq!(r.clients(), 1);
        let other = IpAddr::V6("2001:db8:1:3::1".parse().expect("test value"));
        assert!(r.allow(other, t));
        let mapped = IpAddr::V6("::ffff:10.0.0.1".parse().expect("test value"));
        let plain = IpAddr::V4("10.0.0.1".parse().expect("test value"));
        assert!(r.allow(mapped, t) && r.allow(plain, t));
        assert!(!r.allow(plain, t), "mapped and plain IPv4 share one bucket");
    }
}
