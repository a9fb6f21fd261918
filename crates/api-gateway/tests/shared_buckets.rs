//! The Redis-backed token buckets against the real Redis: two replicas' buckets are one
//! limit, the headers' figures match the in-memory buckets, a flushed script is loaded
//! again, and an unreachable Redis is a prompt error (the limiter then falls back).

use plangrep_api_gateway::rate_limit::Rate;
use plangrep_api_gateway::rate_limit::resp::{Connection, RedisTarget};
use plangrep_api_gateway::rate_limit::shared::SharedBuckets;
use plangrep_test_support::ports::ReservedPort;
use plangrep_test_support::{random_token, redis_url};

const RATE: Rate = Rate {
    per_second: 0.001,
    burst: 4,
};

#[tokio::test]
async fn two_replicas_take_from_one_bucket_per_key() {
    let target = RedisTarget::parse(&redis_url()).unwrap();
    let prefix = format!("test:{}:", random_token());
    let replicas = [
        SharedBuckets::new(target.clone(), prefix.clone(), RATE),
        SharedBuckets::new(target.clone(), prefix.clone(), RATE),
    ];
    let mut decisions = Vec::new();
    for round in 0..6 {
        decisions.push(replicas[round % 2].take("key_a").await.unwrap());
    }
    assert_eq!(
        decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [true, true, true, true, false, false]
    );
    assert_eq!(
        decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(),
        [3, 2, 1, 0, 0, 0]
    );
    assert_eq!(decisions[5].limit, 4);
    assert!(decisions[5].retry_after_seconds >= 1);
    assert!(
        replicas[1].take("key_b").await.unwrap().allowed,
        "another key"
    );

    // Redis lost its scripts (a restart): the next check loads it again.
    let mut redis = Connection::open(&target).await.unwrap();
    redis.call(&[b"SCRIPT", b"FLUSH"]).await.unwrap();
    assert!(replicas[0].take("key_c").await.unwrap().allowed);

    for key in ["key_a", "key_b", "key_c"] {
        let key = format!("{prefix}{key}");
        redis.call(&[b"DEL", key.as_bytes()]).await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let closed = ReservedPort::new();
    let target = RedisTarget::parse(&format!("redis://{}", closed.addr())).unwrap();
    let buckets = SharedBuckets::new(target, "test:".to_owned(), RATE);
    assert!(buckets.take("key").await.is_err());
}
