//! The webhook retry schedule: exponential backoff (the `backoff` crate's schedule) with
//! full jitter (SPEC §5), and a give-up rule on elapsed time and attempt count. Full
//! jitter spreads the retries of a herd of deliveries that failed together (a receiver
//! outage) over the whole interval instead of bunching them at the scheduled instant; the
//! one floor kept is the initial interval, so a retry never follows its attempt sooner. Pure: the caller persists attempts and the first-attempt time and
//! passes them back in, so the schedule survives restarts.

use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use rand::Rng;

/// The parameters of the schedule (SPEC §7 `PLANGREP_WEBHOOK_RETRY_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_interval: Duration,
    /// Growth factor between retries.
    pub multiplier: f64,
    /// Cap on one delay.
    pub max_interval: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    /// Give up after this many attempts in total.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(5),
            multiplier: 4.0,
            max_interval: Duration::from_secs(10 * 3600),
            max_elapsed: Duration::from_secs(3 * 24 * 3600),
            max_attempts: 30,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Try again after this delay.
    After(Duration),
    /// The window or the attempt budget is exhausted.
    GiveUp,
}

impl RetryPolicy {
    /// The ceiling of the delay before retry number `retry` (1 = first retry): the
    /// exponential schedule, before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let mut schedule = ExponentialBackoff {
            current_interval: self.initial_interval,
            initial_interval: self.initial_interval,
            randomization_factor: 0.0,
            multiplier: self.multiplier,
            max_interval: self.max_interval,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        let mut delay = self.initial_interval;
        for _ in 0..retry.max(1) {
            delay = schedule.next_backoff().unwrap_or(self.max_interval);
        }
        delay
    }

    /// Decides the next step after `attempts_made` failed attempts, the first of which
    /// started `elapsed` ago. `extra_delay` is a receiver's `Retry-After`, honoured up to
    /// `max_interval`. `jitter_sample` in `[0, 1)` makes the result deterministic in tests.
    ///
    /// Full jitter: the delay is uniform between the initial interval (the floor) and the
    /// scheduled delay, `initial + sample × (base − initial)`.
    pub fn next_attempt(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter_sample: f64,
    ) -> NextAttempt {
        if attempts_made >= self.max_attempts {
            return NextAttempt::GiveUp;
        }
        let base = self.base_delay(attempts_made);
        let floor = self.initial_interval.min(base);
        let jittered = floor + (base - floor).mul_f64(jitter_sample.clamp(0.0, 1.0));
        let delay = match retry_after {
            Some(wait) => jittered.max(wait.min(self.max_interval)),
            None => jittered,
        };
        if elapsed + delay > self.max_elapsed {
            NextAttempt::GiveUp
        } else {
            NextAttempt::After(delay)
        }
    }

    /// [`Self::next_attempt`] with a random jitter sample.
    pub fn next_attempt_random(
        &self,
        attempts_made: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> NextAttempt {
        let sample = rand::rng().random::<f64>();
        self.next_attempt(attempts_made, elapsed, retry_after, sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.base_delay(1), secs(5));
        assert_eq!(policy.base_delay(2), secs(20));
        assert_eq!(policy.base_delay(3), secs(80));
        assert_eq!(policy.base_delay(4), secs(320));
        assert_eq!(policy.base_delay(12), secs(10 * 3600));
    }

    #[test]
    fn full_jitter_spans_the_initial_interval_to_the_scheduled_delay() {
        let policy = RetryPolicy::default();
        for (sample, expected) in [(0.0, 5.0), (0.5, 12.5), (0.999_999, 19.999_985)] {
            let NextAttempt::After(delay) = policy.next_attempt(2, secs(10), None, sample) else {
                panic!("gave up early");
            };
            assert!((delay.as_secs_f64() - expected).abs() < 1e-3, "{delay:?}");
        }
    }

    #[test]
    fn a_herd_of_retries_spreads_over_the_whole_interval() {
        // 1000 deliveries failing together at their 4th attempt (scheduled 320 s): with
        // full jitter they spread over [5 s, 320 s] instead of bunching at 320–400 s.
        let policy = RetryPolicy::default();
        let delays: Vec<f64> = (0..1000)
            .map(|_| match policy.next_attempt_random(4, secs(0), None) {
                NextAttempt::After(delay) => delay.as_secs_f64(),
                NextAttempt::GiveUp => panic!("gave up early"),
            })
            .collect();
        let min = delays.iter().copied().fold(f64::MAX, f64::min);
        let max = delays.iter().copied().fold(0.0, f64::max);
        assert!(min >= 5.0, "never sooner than the initial interval: {min}");
        assert!(max <= 320.0, "never later than the schedule: {max}");
        // Each tenth of the interval holds some of the herd (expected 100 each).
        let width = (320.0 - 5.0) / 10.0;
        for decile in 0..10 {
            let low = 5.0 + width * f64::from(decile);
            let count = delays
                .iter()
                .filter(|d| (low..low + width).contains(*d))
                .count();
            assert!(
                (40..=200).contains(&count),
                "decile {decile} holds {count} of 1000"
            );
        }
    }

    #[test]
    fn retry_after_delays_further_but_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.next_attempt(1, secs(0), Some(secs(60)), 0.0),
            NextAttempt::After(secs(60))
        );
        assert_eq!(
            policy.next_attempt(1, secs(0), Some(secs(1)), 0.0),
            NextAttempt::After(secs(5)),
            "a short Retry-After never makes us retry sooner than the initial interval"
        );
        assert_eq!(
            policy.next_attempt(1, secs(0), Some(secs(10 * 86_400)), 0.0),
            NextAttempt::After(policy.max_interval)
        );
    }

    #[test]
    fn gives_up_after_the_window_or_the_attempt_budget() {
        let policy = RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy.next_attempt(5, secs(0), None, 0.0),
            NextAttempt::GiveUp
        );
        let almost_three_days = policy.max_elapsed - secs(1);
        assert_eq!(
            policy.next_attempt(1, almost_three_days, None, 0.0),
            NextAttempt::GiveUp
        );
        assert!(matches!(
            policy.next_attempt(4, secs(0), None, 0.0),
            NextAttempt::After(_)
        ));
    }
}
