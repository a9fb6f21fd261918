//! Rate limits across gateway replicas (ADR 0014): with `PLANGREP_REDIS_URL` two gateways
//! share one bucket per API key; without it each replica has its own; with Redis
//! unreachable each replica falls back to its own buckets, never a 5xx.

use plangrep_api_gateway::rate_limit::resp::{Connection, RedisTarget, Reply};
use plangrep_test_support::ports::ReservedPort;
use plangrep_test_support::{random_token, redis_url};

use crate::edge::gateway_metric;
use crate::helpers::{Options, TestApp};

const BURST: usize = 6;

/// Options for a small bucket that (practically) does not refill during a test.
fn small_bucket() -> Options {
    Options::default()
        .with("PLANGREP_RATE_LIMIT_BURST", &BURST.to_string())
        .with("PLANGREP_RATE_LIMIT_PER_SECOND", "0.001")
}

/// Sends `rounds` requests with `key` to each gateway in turn; returns how many each
/// accepted (every other answer must be a 429 in the SPEC format).
async fn accepted_per_gateway(urls: &[String], key: &str, rounds: usize) -> Vec<usize> {
    let http = reqwest::Client::new();
    let mut accepted = vec![0; urls.len()];
    for _ in 0..rounds {
        for (url, count) in urls.iter().zip(accepted.iter_mut()) {
            let response = http
                .get(format!("{url}/api/open/v1/projects"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                200 => *count += 1,
                429 => {
                    assert!(response.headers().contains_key("retry-after"));
                    assert_eq!(response.headers()["ratelimit-remaining"], "0");
                    let body: serde_json::Value = response.json().await.unwrap();
                    assert_eq!(body["error"]["code"], "rate_limited");
                }
                other => panic!("{other}: {}", response.text().await.unwrap()),
            }
        }
    }
    accepted
}

/// Deletes the test's keys.
async fn delete_keys(prefix: &str) {
    let target = RedisTarget::parse(&redis_url()).unwrap();
    let mut redis = Connection::open(&target).await.unwrap();
    let pattern = format!("{prefix}*");
    if let Reply::Array(Some(keys)) = redis.call(&[b"KEYS", pattern.as_bytes()]).await.unwrap() {
        for key in keys {
            if let Reply::Bulk(Some(key)) = key {
                redis.call(&[b"DEL", &key]).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn an_api_keys_limit_holds_across_two_gateways_sharing_redis() {
    let prefix = format!("test:{}:", random_token());
    let mut app = TestApp::spawn_with(
        small_bucket()
            .with("PLANGREP_REDIS_URL", &redis_url())
            .with("PLANGREP_REDIS_KEY_PREFIX", &prefix),
    )
    .await;
    let (_org, key) = app.create_customer().await;
    let replica = app.start_gateway_replica().await;

    let accepted =
        accepted_per_gateway(&[app.base_url.clone(), replica.url.clone()], &key, 10).await;
    assert_eq!(
        accepted.iter().sum::<usize>(),
        BURST,
        "one bucket for both: {accepted:?}"
    );
    assert_eq!(accepted, [BURST / 2, BURST / 2], "both took part");
    for ops_url in [
        format!("http://{}", app.gateway_ops_addr),
        replica.ops_url.clone(),
    ] {
        assert_eq!(
            gateway_metric(&ops_url, "plangrep_rate_limit_fallbacks_total").await,
            0.0
        );
    }
    replica.stop().await;
    app.stop().await;
    delete_keys(&prefix).await;
}

#[tokio::test]
async fn without_redis_each_gateway_replica_limits_on_its_own() {
    let mut app = TestApp::spawn_with(small_bucket()).await;
    let (_org, key) = app.create_customer().await;
    let replica = app.start_gateway_replica().await;

    let accepted =
        accepted_per_gateway(&[app.base_url.clone(), replica.url.clone()], &key, 10).await;
    assert_eq!(accepted, [BURST, BURST], "a bucket per replica");
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_per_replica_limits_never_a_5xx() {
    let closed = ReservedPort::new();
    let unreachable = format!("redis://{}", closed.addr());
    let app = TestApp::spawn_with(small_bucket().with("PLANGREP_REDIS_URL", &unreachable)).await;
    let (_org, key) = app.create_customer().await;

    let accepted = accepted_per_gateway(std::slice::from_ref(&app.base_url), &key, 10).await;
    assert_eq!(accepted, [BURST], "the replica's own bucket still limits");
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    assert_eq!(
        gateway_metric(&ops_url, "plangrep_rate_limit_fallbacks_total").await,
        10.0,
        "every decision was made locally"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_redis_outage_at_runtime_falls_back_per_replica_and_sharing_resumes_after_it() {
    use plangrep_test_support::proxy::TcpProxy;
    let redis_addr = redis_url()
        .trim_start_matches("redis://")
        .parse()
        .expect("TEST_REDIS_URL is redis://host:port");
    let proxy = TcpProxy::start(redis_addr).await;
    let prefix = format!("test:{}:", random_token());
    let app = TestApp::spawn_with(
        small_bucket()
            .with("PLANGREP_REDIS_URL", &format!("redis://{}", proxy.addr()))
            .with("PLANGREP_REDIS_KEY_PREFIX", &prefix),
    )
    .await;
    let (_org, key) = app.create_customer().await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    let fallbacks = || gateway_metric(&ops_url, "plangrep_rate_limit_fallbacks_total");
    let list = || async {
        let response = app
            .api(reqwest::Method::GET, "/projects", &key)
            .send()
            .await
            .unwrap();
        let remaining = response.headers()["ratelimit-remaining"]
            .to_str()
            .unwrap()
            .to_owned();
        (response.status().as_u16(), remaining)
    };

    // Shared: two tokens of the Redis bucket.
    assert_eq!(list().await, (200, "5".to_owned()));
    assert_eq!(list().await, (200, "4".to_owned()));
    assert_eq!(fallbacks().await, 0.0);

    // Redis goes away: the replica limits on its own (a fresh bucket), never a 5xx.
    proxy.cut();
    assert_eq!(list().await, (200, "5".to_owned()));
    assert_eq!(fallbacks().await, 1.0);

    // Redis is back: decisions return to the shared bucket, which kept its state.
    proxy.restore();
    let (status, remaining) = plangrep_test_support::eventually(
        "decisions to use Redis again",
        crate::helpers::PATIENCE,
        || async {
            let before = fallbacks().await;
            let answer = list().await;
            assert!(matches!(answer.0, 200 | 429), "{answer:?}");
            (fallbacks().await == before).then_some(answer)
        },
    )
    .await;
    assert_eq!((status, remaining.as_str()), (200, "3"));
    app.stop().await;
    delete_keys(&prefix).await;
}
