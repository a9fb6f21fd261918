//! A broker that stops answering without closing the connection (a frozen node, a
//! partition) is noticed by the missing heartbeats: the consumer reports the broker
//! down and comes back once it answers again. The interval here is the URL's 1 s; the
//! default ([`plangrep_messaging::HEARTBEAT`]) makes the same happen within 30 s.

use std::time::Duration;

use plangrep_messaging::topology::DISPATCHER_EVENTS;
use plangrep_messaging::{BrokerHealth, ConsumerConfig, EventsKey, Topology, consume_loop};
use plangrep_test_support::proxy::TcpProxy;
use plangrep_test_support::{BrokerCleanup, amqp_url, eventually, unique_prefix};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_consumer_notices_a_silent_broker_by_its_heartbeats_and_comes_back() {
    let topology = Topology::new(unique_prefix());
    let _cleanup = BrokerCleanup {
        topology: topology.clone(),
        queues: vec![DISPATCHER_EVENTS],
    };
    let (proxy, proxied) = TcpProxy::in_front_of(&amqp_url()).await;
    let separator = if proxied.contains('?') { '&' } else { '?' };
    let health = BrokerHealth::default();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume_loop(
        ConsumerConfig {
            amqp_url: format!("{proxied}{separator}heartbeat=1"),
            topology,
            queue: DISPATCHER_EVENTS,
            concurrency: 4,
            consumer_tag: "silence-test".to_owned(),
            service: "silence-test",
            events_key: EventsKey::derive(b"silence test key"),
        },
        health.clone(),
        |_| async { Ok(()) },
        shutdown.clone(),
    ));
    let is = |up: bool| {
        let health = health.clone();
        move || {
            let health = health.clone();
            async move { (health.is_up() == up).then_some(()) }
        }
    };
    eventually("the consumer connected", WAIT, is(true)).await;

    proxy.stall();
    eventually("the silent broker noticed", WAIT, is(false)).await;

    proxy.restore();
    eventually("the consumer back", WAIT, is(true)).await;
    shutdown.cancel();
    consumer.await.unwrap();
}
