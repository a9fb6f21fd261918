//! Token buckets in this replica's memory: the per-peer limits, and the per-key limits
//! when no shared store is configured (or it is unreachable).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Decision, Rate};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct LocalBuckets {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LocalBuckets {
    /// Buckets refilling at `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket at `now`, if there is one.
    pub fn take(&self, key: &str, now: Instant) -> Decision {
        self.update(key, now, true)
    }

    /// Where `key`'s bucket stands at `now`, taking nothing.
    pub fn peek(&self, key: &str, now: Instant) -> Decision {
        self.update(key, now, false)
    }

    fn update(&self, key: &str, now: Instant, take: bool) -> Decision {
        let Rate { per_second, burst } = self.rate;
        let burst = f64::from(burst);
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if buckets.len() > 100_000 {
            // Forget buckets that have refilled: they hold no state worth keeping.
            let full_after = Duration::from_secs_f64(burst / per_second);
            buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed && take {
            bucket.tokens -= 1.0;
        }
        self.rate.decision(allowed, bucket.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = LocalBuckets::new(Rate {
            per_second: 2.0,
            burst: 3,
        });
        let start = Instant::now();
        let decisions: Vec<Decision> = (0..4).map(|_| limiter.take("k", start)).collect();
        assert_eq!(
            decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(decisions[0].remaining, 2);
        assert_eq!(decisions[2].remaining, 0);
        assert_eq!(decisions[3].retry_after_seconds, 1);
        assert_eq!(decisions[3].reset_seconds, 2, "3 tokens at 2/s");
        // Half a second later one token is back.
        let later = limiter.take("k", start + Duration::from_millis(500));
        assert!(later.allowed);
        assert!(
            !limiter
                .take("k", start + Duration::from_millis(500))
                .allowed
        );
        // Other keys have their own bucket.
        assert!(limiter.take("other", start).allowed);
    }

    #[test]
    fn peeking_takes_nothing() {
        let limiter = LocalBuckets::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        let now = Instant::now();
        assert!(limiter.peek("k", now).allowed);
        assert!(limiter.peek("k", now).allowed);
        assert!(limiter.take("k", now).allowed);
        assert!(!limiter.peek("k", now).allowed);
    }
}
