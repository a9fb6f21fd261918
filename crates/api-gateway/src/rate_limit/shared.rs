//! Token buckets in Redis, shared by every gateway replica (`PLANGREP_REDIS_URL`): the
//! same bucket as [`super::buckets`], refilled and taken from atomically by one Lua
//! script, on Redis' clock (replicas' clocks never disagree about a bucket). A bucket is
//! a hash `{t: tokens, u: updated µs}` under `<prefix><key>`, expiring once it would be
//! full again, so idle keys cost nothing.
//!
//! Connections are pooled (at most [`MAX_CONNECTIONS`] per replica) and every check is
//! bounded by [`CHECK_TIMEOUT`]; the caller falls back to the replica's own buckets when a
//! check fails.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::resp::{Connection, RedisTarget, Reply, RespError};
use super::{Decision, Rate};

/// A check that takes longer fails (and the caller falls back).
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// Connections to Redis per replica at most.
pub const MAX_CONNECTIONS: usize = 32;

/// KEYS[1] the bucket; ARGV[1] tokens per second; ARGV[2] burst.
/// Returns `{allowed (0|1), tokens left (a string: Lua numbers become integers)}`.
const TAKE_SCRIPT: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000000 * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
";

/// Buckets in Redis.
pub struct SharedBuckets {
    target: RedisTarget,
    prefix: String,
    rate: Rate,
    /// Bounds the connections this replica opens.
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
    /// The script's SHA1 as Redis reported it on `SCRIPT LOAD`.
    script: Mutex<Option<String>>,
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuckets")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedBuckets {
    /// Buckets under `prefix` in the Redis at `target` (connected on first use).
    pub fn new(target: RedisTarget, prefix: String, rate: Rate) -> Self {
        Self {
            target,
            prefix,
            rate,
            permits: Semaphore::new(MAX_CONNECTIONS),
            idle: Mutex::new(Vec::new()),
            script: Mutex::new(None),
        }
    }

    /// Takes one token from `key`'s bucket, within [`CHECK_TIMEOUT`].
    pub async fn take(&self, key: &str) -> Result<Decision, RespError> {
        tokio::time::timeout(CHECK_TIMEOUT, self.take_now(key))
            .await
            .map_err(|_| RespError::Io(std::io::ErrorKind::TimedOut.into()))?
    }

    async fn take_now(&self, key: &str) -> Result<Decision, RespError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        let idle = self.idle.lock().expect("not poisoned").pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => Connection::open(&self.target).await?,
        };
        // A connection that failed (or whose call was cancelled) is dropped, not reused.
        let decision = self.run_script(&mut connection, key).await?;
        self.idle.lock().expect("not poisoned").push(connection);
        Ok(decision)
    }

    async fn run_script(
        &self,
        connection: &mut Connection,
        key: &str,
    ) -> Result<Decision, RespError> {
        let bucket = format!("{}{key}", self.prefix);
        let rate = self.rate.per_second.to_string();
        let burst = self.rate.burst.to_string();
        for _ in 0..2 {
            let cached = self.script.lock().expect("not poisoned").clone();
            let sha = match cached {
                Some(sha) => sha,
                None => self.load_script(connection).await?,
            };
            let args: [&[u8]; 6] = [
                b"EVALSHA",
                sha.as_bytes(),
                b"1",
                bucket.as_bytes(),
                rate.as_bytes(),
                burst.as_bytes(),
            ];
            match connection.call(&args).await {
                Ok(reply) => return self.decision(reply),
                // Redis restarted (or flushed its scripts): load it again, once.
                Err(RespError::Server(message)) if message.starts_with("NOSCRIPT") => {
                    *self.script.lock().expect("not poisoned") = None;
                }
                Err(error) => return Err(error),
            }
        }
        Err(RespError::Protocol("the script vanished twice".to_owned()))
    }

    async fn load_script(&self, connection: &mut Connection) -> Result<String, RespError> {
        let reply = connection
            .call(&[b"SCRIPT", b"LOAD", TAKE_SCRIPT.as_bytes()])
            .await?;
        let Reply::Bulk(Some(sha)) = reply else {
            return Err(RespError::Protocol(format!(
                "SCRIPT LOAD answered {reply:?}"
            )));
        };
        let sha = String::from_utf8(sha)
            .map_err(|_| RespError::Protocol("SCRIPT LOAD answered non-UTF-8".to_owned()))?;
        *self.script.lock().expect("not poisoned") = Some(sha.clone());
        Ok(sha)
    }

    fn decision(&self, reply: Reply) -> Result<Decision, RespError> {
        let unexpected = || RespError::Protocol(format!("the script answered {reply:?}"));
        let Reply::Array(Some(items)) = &reply else {
            return Err(unexpected());
        };
        let [Reply::Integer(allowed), Reply::Bulk(Some(tokens))] = items.as_slice() else {
            return Err(unexpected());
        };
        let tokens: f64 = std::str::from_utf8(tokens)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(unexpected)?;
        Ok(self.rate.decision(*allowed == 1, tokens))
    }
}
