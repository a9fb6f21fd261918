//! The consumer settles every delivery with the real broker exactly as its handler
//! decided, however the handlers' finishing order interleaves, and acknowledges in bulk
//! without ever holding later messages behind one still being handled (ADR 0026).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plangrep_messaging::redrive::occupancy;
use plangrep_messaging::topology::DISPATCHER_EVENTS;
use plangrep_messaging::{
    BrokerHealth, ConsumerConfig, EventsKey, HandleError, Incoming, OutgoingMessage, Publisher,
    Topology, consume_loop,
};
use plangrep_test_support::{BrokerCleanup, amqp_url, eventually, unique_prefix};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Broker {
    topology: Topology,
    key: EventsKey,
    connection: lapin::Connection,
    _cleanup: BrokerCleanup,
}

impl Broker {
    async fn with_messages(count: usize) -> Self {
        let topology = Topology::new(unique_prefix());
        let key = EventsKey::derive(b"settlement test key");
        let connection = plangrep_messaging::connect(&amqp_url()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology
            .declare_work_queue(&channel, &DISPATCHER_EVENTS)
            .await
            .unwrap();
        let cleanup = BrokerCleanup {
            topology: topology.clone(),
            queues: vec![DISPATCHER_EVENTS],
        };
        let publisher = Publisher::open(&connection, &topology, key.clone())
            .await
            .unwrap();
        for number in 0..count {
            publisher
                .publish(&OutgoingMessage {
                    message_id: format!("message-{number}"),
                    routing_key: "job.status_changed.provisioning".to_owned(),
                    payload: number.to_string().into_bytes(),
                    traceparent: None,
                    mandatory: true,
                })
                .await
                .unwrap();
        }
        Self {
            topology,
            key,
            connection,
            _cleanup: cleanup,
        }
    }

    fn config(&self, concurrency: u16) -> ConsumerConfig {
        ConsumerConfig {
            amqp_url: amqp_url(),
            topology: self.topology.clone(),
            queue: DISPATCHER_EVENTS,
            concurrency,
            consumer_tag: "settlement-test".to_owned(),
            service: "settlement-test",
            events_key: self.key.clone(),
        }
    }

    /// Messages ready in the work queue once no consumer is attached (its
    /// unacknowledged messages returned): 0 when every one was settled.
    async fn ready(&self) -> u32 {
        let queue = self.topology.queue(&DISPATCHER_EVENTS);
        eventually("the consumer to detach", WAIT, || async {
            let occupancy = occupancy(&self.connection, &queue).await.ok()??;
            (occupancy.consumers == 0).then_some(occupancy.messages)
        })
        .await
    }

    /// Messages in the dead-letter queue, once at least `expected` arrived.
    async fn dead(&self, expected: u32) -> u32 {
        let queue = self.topology.dead_queue(&DISPATCHER_EVENTS);
        eventually("the dead-lettered messages", WAIT, || async {
            let dead = occupancy(&self.connection, &queue).await.ok()?;
            let messages = dead.map_or(0, |o| o.messages);
            (messages >= expected).then_some(messages)
        })
        .await
    }
}

fn number(message: &Incoming) -> usize {
    std::str::from_utf8(&message.payload)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn each_message_is_settled_as_its_handler_decided_in_whatever_order_they_finish() {
    const COUNT: usize = 300;
    let broker = Broker::with_messages(COUNT).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(consume_loop(
        broker.config(32),
        BrokerHealth::default(),
        {
            let handled = handled.clone();
            move |message: Incoming| {
                let handled = handled.clone();
                async move {
                    let number = number(&message);
                    // Finish out of order: a varying number of scheduler turns each.
                    for _ in 0..number % 5 {
                        tokio::task::yield_now().await;
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    match number % 10 {
                        3 => Err(HandleError::DeadLetter("refused".into())),
                        7 => Err(HandleError::Ignore("stale".into())),
                        _ => Ok(()),
                    }
                }
            }
        },
        shutdown.clone(),
    ));
    eventually("every message handled", WAIT, || async {
        (handled.load(Ordering::SeqCst) >= COUNT).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();

    assert_eq!(
        broker.ready().await,
        0,
        "every handled message left the work queue"
    );
    assert_eq!(
        broker.dead(COUNT as u32 / 10).await,
        COUNT as u32 / 10,
        "exactly the refused messages were dead-lettered, none acknowledged along with the others"
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        COUNT,
        "no message was delivered twice"
    );
}

#[tokio::test]
async fn a_message_still_being_handled_does_not_hold_back_the_ones_behind_it() {
    const COUNT: usize = 40;
    let broker = Broker::with_messages(COUNT).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let release_first = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    // Two at a time: with the first message held, only acknowledging each later one
    // lets the broker deliver the next.
    let consumer = tokio::spawn(consume_loop(
        broker.config(2),
        BrokerHealth::default(),
        {
            let (handled, release_first) = (handled.clone(), release_first.clone());
            move |message: Incoming| {
                let (handled, release_first) = (handled.clone(), release_first.clone());
                async move {
                    if number(&message) == 0 {
                        release_first.notified().await;
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        },
        shutdown.clone(),
    ));
    eventually(
        "every message behind the held one handled",
        WAIT,
        || async { (handled.load(Ordering::SeqCst) == COUNT - 1).then_some(()) },
    )
    .await;
    release_first.notify_one();
    eventually("the held message handled", WAIT, || async {
        (handled.load(Ordering::SeqCst) == COUNT).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.await.unwrap();
    assert_eq!(broker.ready().await, 0);
    assert_eq!(broker.dead(0).await, 0);
}
