//! Authenticated API keys, remembered for a few seconds so that a request does not wait
//! on PostgreSQL for a key this gateway has just read (ADR 0024).
//!
//! An entry is stored and served only while the gateway listens for key changes: a
//! trigger on `api_keys` notifies [`CHANNEL`] with the changed key's hash on every update
//! or delete (an admin revoke, an operator's SQL), and [`follow_changes`] forgets that
//! key. Before the subscription is up, and whenever its connection is lost, the cache is
//! empty and unused: every request reads the table, as it would without a cache. Entries
//! also expire after the configured time whatever happens, which bounds a change the
//! listener could miss. A look-up that raced with a change does not store what it read
//! (the generation moved on). Unknown keys are never stored, so guessing cannot fill the
//! memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// The channel the `api_keys` trigger notifies with the changed key's hash (hex).
pub const CHANNEL: &str = "plangrep_api_keys";

/// At most this many keys are remembered; past it, new keys are read every time.
const MAX_ENTRIES: usize = 10_000;

/// How long a lost subscription waits before it subscribes again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The keys read recently, by the SHA-256 of their plaintext.
pub struct KeyCache<V> {
    ttl: Duration,
    state: Mutex<State<V>>,
}

struct State<V> {
    /// Subscribed to key changes: only then are entries stored and served.
    listening: bool,
    /// Moves on with every change heard and every change of subscription.
    generation: u64,
    entries: HashMap<Vec<u8>, (V, Instant)>,
}

impl<V: Clone> KeyCache<V> {
    /// A cache whose entries live `ttl` (zero: nothing is ever stored).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State {
                listening: false,
                generation: 0,
                entries: HashMap::new(),
            }),
        }
    }

    /// Whether nothing is ever stored (a zero `ttl`).
    pub fn is_off(&self) -> bool {
        self.ttl.is_zero()
    }

    fn state(&self) -> MutexGuard<'_, State<V>> {
        // The state stays consistent across a panic (every change is one assignment).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The key stored for `hash`, if it is still fresh and changes are being heard.
    pub fn get(&self, hash: &[u8]) -> Option<V> {
        self.get_at(hash, Instant::now())
    }

    fn get_at(&self, hash: &[u8], now: Instant) -> Option<V> {
        let state = self.state();
        let (value, stored) = state.entries.get(hash).filter(|_| state.listening)?;
        (now.duration_since(*stored) < self.ttl).then(|| value.clone())
    }

    /// The generation to pass to [`KeyCache::insert`]: read it before the look-up.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Stores what a look-up that started at generation `seen` read, unless a change was
    /// heard (or the subscription changed) since.
    pub fn insert(&self, hash: Vec<u8>, value: V, seen: u64) {
        self.insert_at(hash, value, seen, Instant::now());
    }

    fn insert_at(&self, hash: Vec<u8>, value: V, seen: u64, now: Instant) {
        let mut state = self.state();
        if !state.listening || state.generation != seen || self.is_off() {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            state
                .entries
                .retain(|_, (_, stored)| now.duration_since(*stored) < ttl);
            if state.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        state.entries.insert(hash, (value, now));
    }

    /// Forgets the key with `hash` (it changed).
    pub fn forget(&self, hash: &[u8]) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.remove(hash);
    }

    /// Forgets every key.
    pub fn forget_all(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.entries.clear();
    }

    /// Starts or stops trusting entries; either way the cache starts empty, since changes
    /// made while nobody listened were not heard. Returns whether it was listening.
    fn set_listening(&self, listening: bool) -> bool {
        let mut state = self.state();
        state.generation += 1;
        state.entries.clear();
        std::mem::replace(&mut state.listening, listening)
    }

    /// Applies one notification's payload: the changed key's hash in hex; anything else
    /// (a truncate notifies an empty payload) forgets every key.
    fn heard(&self, payload: &str) {
        match decode_hex(payload) {
            Some(hash) => self.forget(&hash),
            None => self.forget_all(),
        }
    }
}

/// Keeps `cache` subscribed to key changes over a connection of `pool` (a pool of its own,
/// so that the subscription never takes a request's connection) until `shutdown`.
pub async fn follow_changes<V: Clone>(
    pool: PgPool,
    cache: Arc<KeyCache<V>>,
    shutdown: CancellationToken,
) {
    loop {
        let lost = tokio::select! {
            _ = shutdown.cancelled() => return,
            lost = listen(&pool, &cache) => lost,
        };
        if cache.set_listening(false) {
            tracing::warn!(
                error = %lost,
                "API key changes not heard; every request reads its key from the database until they are"
            );
        } else {
            tracing::debug!(error = %lost, "API key changes still not heard");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
        }
    }
}

/// Subscribes and applies notifications until the subscription fails; returns why.
async fn listen<V: Clone>(pool: &PgPool, cache: &KeyCache<V>) -> String {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => return error.to_string(),
    };
    // A lost connection must surface here (the cache stops being used), not be mended
    // silently with the notifications sent meanwhile lost.
    listener.eager_reconnect(false);
    if let Err(error) = listener.listen(CHANNEL).await {
        return error.to_string();
    }
    cache.set_listening(true);
    tracing::debug!("listening for API key changes");
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => cache.heard(notification.payload()),
            Ok(None) => return "the connection was lost".to_owned(),
            Err(error) => return error.to_string(),
        }
    }
}

/// The bytes of a lowercase or uppercase hex string.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    fn listening() -> KeyCache<&'static str> {
        let cache = KeyCache::new(TTL);
        cache.set_listening(true);
        cache
    }

    #[test]
    fn nothing_is_stored_or_served_while_changes_are_not_heard() {
        let cache = KeyCache::new(TTL);
        let seen = cache.generation();
        cache.insert(b"k".to_vec(), "row", seen);
        assert_eq!(cache.get(b"k"), None, "not listening yet");

        cache.set_listening(true);
        let seen = cache.generation();
        cache.insert(b"k".to_vec(), "row", seen);
        assert_eq!(cache.get(b"k"), Some("row"));

        cache.set_listening(false);
        assert_eq!(cache.get(b"k"), None, "the subscription was lost");
        cache.set_listening(true);
        assert_eq!(
            cache.get(b"k"),
            None,
            "emptied: changes may have been missed"
        );
    }

    #[test]
    fn a_look_up_that_raced_with_a_change_stores_nothing() {
        let cache = listening();
        let seen = cache.generation();
        // The key changes while the look-up reads the table.
        cache.heard(&"ab".repeat(32));
        cache.insert(b"k".to_vec(), "stale", seen);
        assert_eq!(cache.get(b"k"), None);
    }

    #[test]
    fn a_change_forgets_only_the_changed_key_and_a_truncate_every_key() {
        let cache = listening();
        let seen = cache.generation();
        cache.insert(vec![0xab; 32], "a", seen);
        cache.insert(vec![0x01; 32], "b", seen);
        cache.heard(&"AB".repeat(32));
        assert_eq!(cache.get(&[0xab; 32]), None);
        assert_eq!(cache.get(&[0x01; 32]), Some("b"));
        cache.heard("");
        assert_eq!(cache.get(&[0x01; 32]), None);
    }

    #[test]
    fn entries_expire_and_a_zero_ttl_stores_nothing() {
        let cache = listening();
        let now = Instant::now();
        cache.insert_at(b"k".to_vec(), "row", cache.generation(), now);
        assert_eq!(cache.get_at(b"k", now + TTL / 2), Some("row"));
        assert_eq!(cache.get_at(b"k", now + TTL), None);

        let off = KeyCache::new(Duration::ZERO);
        off.set_listening(true);
        off.insert_at(b"k".to_vec(), "row", off.generation(), now);
        assert_eq!(off.get_at(b"k", now), None);
    }

    #[test]
    fn a_full_cache_makes_room_from_expired_entries_only() {
        let cache = listening();
        let then = Instant::now();
        let seen = cache.generation();
        for n in 0..MAX_ENTRIES {
            cache.insert_at(n.to_be_bytes().to_vec(), "old", seen, then);
        }
        cache.insert_at(b"new".to_vec(), "new", seen, then);
        assert_eq!(cache.get_at(b"new", then), None, "full of fresh entries");
        let later = then + TTL;
        cache.insert_at(b"new".to_vec(), "new", seen, later);
        assert_eq!(cache.get_at(b"new", later), Some("new"));
    }

    #[test]
    fn hex_payloads_decode_and_anything_else_does_not() {
        assert_eq!(decode_hex("00fF10"), Some(vec![0, 255, 16]));
        for bad in ["", "abc", "zz", "éé"] {
            assert_eq!(decode_hex(bad), None, "{bad}");
        }
    }
}
