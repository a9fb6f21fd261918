//! Per-destination concurrency: at most `max` attempts in flight at once to one
//! destination (`scheme://host[:port]` of the webhook URL), per replica.
//!
//! A slow or hanging receiver (a tarpit) can then occupy only its own slots, never every
//! worker: the scheduler asks for a slot with [`DestinationSlots::try_acquire`] (no
//! waiting), and claims skip [`DestinationSlots::saturated`] destinations, so a worker
//! goes on to other tenants' deliveries instead of queueing behind the tarpit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The destination key of a webhook URL: scheme, lowercase host and the port when it is
/// not the scheme's default. Empty for a URL that does not parse (it cannot be sent
/// anyway; such deliveries share one key).
pub fn destination_key(url: &str) -> String {
    let Ok(url) = reqwest::Url::parse(url) else {
        return String::new();
    };
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The longest an unreachable destination's deliveries are deferred at once.
pub const MAX_DESTINATION_DEFERRAL: Duration = Duration::from_secs(300);

/// In-flight attempts per destination, and how long each unreachable destination waits.
#[derive(Debug)]
pub struct DestinationSlots {
    max: usize,
    in_flight: Mutex<HashMap<String, usize>>,
    unreachable: Mutex<HashMap<String, Unreachable>>,
}

/// A destination that refused or timed out: failures in a row and until when its
/// deliveries wait.
#[derive(Debug, Clone, Copy)]
struct Unreachable {
    streak: i32,
    until: DateTime<Utc>,
}

/// One slot of a destination, given back on drop.
#[derive(Debug)]
pub struct DestinationSlot {
    slots: Arc<DestinationSlots>,
    destination: String,
}

impl DestinationSlots {
    /// At most `max` attempts at once per destination.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            in_flight: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
        })
    }

    /// Records that `destination` could not be reached at `now` and returns until when its
    /// deliveries should wait: `first` after the first failure, `multiplier` times longer
    /// after each further failed wave (at most [`MAX_DESTINATION_DEFERRAL`]). While a
    /// deferral runs, further failures (the rest of the wave, deliveries recorded since)
    /// get the same deadline and do not lengthen it.
    pub fn defer_unreachable(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        first: Duration,
        multiplier: f64,
    ) -> DateTime<Utc> {
        let mut unreachable = self.unreachable.lock().expect("not poisoned");
        let entry = unreachable
            .entry(destination.to_owned())
            .or_insert(Unreachable {
                streak: 0,
                until: now,
            });
        if entry.until <= now {
            let wait = first
                .mul_f64(multiplier.max(1.0).powi(entry.streak))
                .min(MAX_DESTINATION_DEFERRAL);
            entry.streak = entry.streak.saturating_add(1);
            entry.until = now + chrono::Duration::from_std(wait).unwrap_or_default();
        }
        entry.until
    }

    /// Records that `destination` answered: the next failure starts a new streak.
    pub fn reached(&self, destination: &str) {
        self.unreachable
            .lock()
            .expect("not poisoned")
            .remove(destination);
    }

    /// The cap: attempts at once per destination.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot of `destination`, or `None` when it is at its cap.
    pub fn try_acquire(self: &Arc<Self>, destination: &str) -> Option<DestinationSlot> {
        let mut in_flight = self.in_flight.lock().expect("not poisoned");
        let count = in_flight.entry(destination.to_owned()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(DestinationSlot {
            slots: self.clone(),
            destination: destination.to_owned(),
        })
    }

    /// The destinations at their cap now.
    pub fn saturated(&self) -> Vec<String> {
        self.in_flight
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, count)| **count >= self.max)
            .map(|(destination, _)| destination.clone())
            .collect()
    }
}

impl Drop for DestinationSlot {
    fn drop(&mut self) {
        let mut in_flight = self.slots.in_flight.lock().expect("not poisoned");
        if let Some(count) = in_flight.get_mut(&self.destination) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.destination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_scheme_host_and_non_default_port() {
        assert_eq!(
            destination_key("https://Hooks.Example.com/a?b"),
            "https://hooks.example.com"
        );
        assert_eq!(
            destination_key("https://hooks.example.com:443/x"),
            "https://hooks.example.com"
        );
        assert_eq!(
            destination_key("http://127.0.0.1:8081/webhooks"),
            "http://127.0.0.1:8081"
        );
        assert_eq!(destination_key("not a url"), "");
    }

    #[test]
    fn an_unreachable_destination_waits_longer_after_each_wave_until_it_answers() {
        let slots = DestinationSlots::new(4);
        let now = Utc::now();
        let second = Duration::from_secs(1);
        let until = |secs: i64| now + chrono::Duration::seconds(secs);
        let defer = |destination: &str, at: i64| {
            slots.defer_unreachable(destination, until(at), second * 5, 4.0)
        };
        assert_eq!(defer("http://down", 0), until(5));
        // The rest of the wave fails too: same deadline, not a longer one.
        assert_eq!(defer("http://down", 1), until(5));
        assert_eq!(defer("http://down", 5), until(25));
        assert_eq!(defer("http://down", 25), until(25 + 80));
        assert_eq!(defer("http://down", 105), until(105 + 300), "capped");
        assert_eq!(
            defer("http://other", 105),
            until(110),
            "destinations are independent"
        );
        slots.reached("http://down");
        assert_eq!(
            defer("http://down", 500),
            until(505),
            "an answer starts a new streak"
        );
    }

    #[test]
    fn a_destination_at_its_cap_refuses_until_a_slot_is_given_back() {
        let slots = DestinationSlots::new(2);
        let first = slots.try_acquire("https://a").unwrap();
        let _second = slots.try_acquire("https://a").unwrap();
        assert!(slots.try_acquire("https://a").is_none());
        assert_eq!(slots.saturated(), ["https://a"]);
        assert!(
            slots.try_acquire("https://b").is_some(),
            "others unaffected"
        );
        drop(first);
        assert!(slots.saturated().is_empty());
        assert!(slots.try_acquire("https://a").is_some());
    }
}
