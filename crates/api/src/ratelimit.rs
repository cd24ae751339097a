//! Per-caller rate limiting: a token bucket per access key (or per account, for console
//! tokens), consulted only after the caller is verified, so unauthenticated floods create
//! no state. Memory stays bounded: a bucket that has refilled is the same as no bucket,
//! and such buckets are swept away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sustained rate with a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_sec: f64,
    /// Requests that may come at once after a quiet spell.
    pub burst: f64,
}

impl Rate {
    /// Generous: a person, a script or the SDK never meets it; one key cannot take the
    /// whole API (about 10,000 signed reads a second on 2 cores) for itself.
    pub const DEFAULT: Rate = Rate {
        per_sec: 1000.0,
        burst: 2000.0,
    };
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Limiter {
    rate: Rate,
    buckets: Mutex<(HashMap<String, Bucket>, Instant)>,
}

/// Buckets are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            buckets: Mutex::new((HashMap::new(), Instant::now())),
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token for `key`; `Err(wait)` says how long until one is there.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Rate { per_sec, burst } = self.rate;
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (map, swept) = &mut *guard;
        if now.duration_since(*swept) >= SWEEP_EVERY {
            // A bucket that has had time to refill holds nothing a new one would not.
            let full_after = Duration::from_secs_f64(burst / per_sec);
            map.retain(|_, b| now.duration_since(b.at) < full_after);
            *swept = now;
        }
        let b = match map.get_mut(key) {
            Some(b) => b,
            None => map.entry(key.to_owned()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = Limiter::new(Rate {
            per_sec: 10.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t0).is_ok());
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Another key has its own bucket.
        assert!(l.check_at("b", t0).is_ok());
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.check_at("a", t1).is_ok());
        assert!(l.check_at("a", t1).is_err());
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let l = Limiter::new(Rate {
            per_sec: 100.0,
            burst: 100.0,
        });
        let t0 = Instant::now();
        for i in 0..1000 {
            let _ = l.check_at(&format!("k{i}"), t0);
        }
        assert_eq!(l.len(), 1000);
        // The sweep runs on a request once SWEEP_EVERY has passed; full buckets go.
        let later = t0 + SWEEP_EVERY + Duration::from_secs(1);
        assert!(l.check_at("fresh", later).is_ok());
        assert_eq!(l.len(), 1);
    }
}
