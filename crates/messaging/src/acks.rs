//! Settling a consumer's deliveries with as few frames as AMQP allows (ADR 0026).
//!
//! Handlers finish out of order and often together (a batch commit answers many
//! messages at once). Each finished delivery is recorded in the channel's [`Window`]
//! with how it is to be settled; one task per channel ([`Acks::run`]) then sends the
//! frames: the acknowledgements of the contiguous run of finished deliveries at the
//! head of the window as one `basic.ack` with `multiple`, everything else one frame per
//! delivery. A quorum queue writes every settlement frame to its log, so one frame for a
//! run of acks is most of what the broker spends consuming a message.
//!
//! A `multiple` ack settles every unsettled delivery up to its tag, so it never reaches
//! past a delivery still being handled, and the requeues and rejections inside the run
//! are sent before it (once settled, the ack no longer covers them). A delivery that
//! finished behind one still being handled is acknowledged on its own at once: a slow
//! head (a handler retrying in place) never holds later messages unacknowledged, which
//! would use up the prefetch window and stall the consumer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How a handled delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// Done with: removed from the queue.
    Ack,
    /// Handed back to the queue (counts towards its delivery limit).
    Requeue,
    /// Refused without requeue: into the dead-letter queue.
    Reject,
}

/// One frame to send, with the handle of the delivery it names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<A> {
    /// `basic.ack`; with `multiple`, of every unsettled delivery up to this one.
    Ack { acker: A, multiple: bool },
    /// `basic.nack` with requeue.
    Requeue(A),
    /// `basic.reject` without requeue.
    Reject(A),
}

impl Frame<Acker> {
    async fn send(self) -> Result<bool, lapin::Error> {
        match self {
            Frame::Ack { acker, multiple } => {
                crate::bounded(acker.ack(BasicAckOptions { multiple })).await
            }
            Frame::Requeue(acker) => {
                crate::bounded(acker.nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                }))
                .await
            }
            Frame::Reject(acker) => {
                crate::bounded(acker.reject(BasicRejectOptions { requeue: false })).await
            }
        }
    }
}

/// A channel's deliveries from receipt until their frames are taken, by delivery tag.
#[derive(Debug)]
pub(crate) struct Window<A> {
    open: BTreeMap<u64, Option<(Settlement, A)>>,
}

impl<A> Default for Window<A> {
    fn default() -> Self {
        Self {
            open: BTreeMap::new(),
        }
    }
}

impl<A> Window<A> {
    /// A delivery arrived; it is unsettled until [`Window::finish`].
    pub(crate) fn receive(&mut self, tag: u64) {
        self.open.insert(tag, None);
    }

    /// The delivery's handler is done with it.
    pub(crate) fn finish(&mut self, tag: u64, settlement: Settlement, acker: A) {
        self.open.insert(tag, Some((settlement, acker)));
    }

    /// The frames that settle every finished delivery, in the order they must be sent,
    /// and forgets those deliveries.
    pub(crate) fn take_frames(&mut self) -> Vec<Frame<A>> {
        let mut frames = Vec::new();
        let mut head_ack = None;
        let mut at_head = true;
        let open = std::mem::take(&mut self.open);
        for (tag, slot) in open {
            let Some((settlement, acker)) = slot else {
                at_head = false;
                self.open.insert(tag, None);
                continue;
            };
            match settlement {
                Settlement::Ack if at_head => head_ack = Some(acker),
                Settlement::Ack => frames.push(Frame::Ack {
                    acker,
                    multiple: false,
                }),
                Settlement::Requeue => frames.push(Frame::Requeue(acker)),
                Settlement::Reject => frames.push(Frame::Reject(acker)),
            }
        }
        // Last: by then the head's requeues and rejections are settled and not covered.
        if let Some(acker) = head_ack {
            frames.push(Frame::Ack {
                acker,
                multiple: true,
            });
        }
        frames
    }
}

/// A channel's window and the task that sends its frames.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    window: Mutex<Window<Acker>>,
    finished: Notify,
}

impl Acks {
    /// Records a delivery as it arrives, before its handler starts.
    pub(crate) fn receive(&self, tag: u64) {
        self.lock().receive(tag);
    }

    /// Records how a handled delivery is settled; the frame goes out shortly.
    pub(crate) fn finish(&self, tag: u64, settlement: Settlement, acker: Acker) {
        self.lock().finish(tag, settlement, acker);
        self.finished.notify_one();
    }

    /// Sends frames as deliveries finish; once `closing` is cancelled (every handler
    /// done), sends the last ones and returns.
    pub(crate) async fn run(self: Arc<Self>, closing: CancellationToken) {
        loop {
            tokio::select! {
                () = self.finished.notified() => {}
                () = closing.cancelled() => break,
            }
            // The other handlers answered by the same commit are runnable now: let them
            // finish too, so one frame settles them all.
            tokio::task::yield_now().await;
            self.send().await;
        }
        self.send().await;
    }

    async fn send(&self) {
        let frames = self.lock().take_frames();
        let (mut failed, mut last_error) = (0, None);
        for frame in frames {
            // Every frame is issued, in order, even after one failed: a frame that timed
            // out may still reach a channel that lives on, and a requeue or rejection
            // left out would be covered by the next multiple ack.
            if let Err(error) = frame.send().await {
                failed += 1;
                last_error = Some(error);
            }
        }
        if let Some(error) = last_error {
            // Most likely the channel is gone: the broker redelivers whatever it did not
            // settle, and handlers are idempotent.
            tracing::warn!(%error, failed, "settling deliveries failed");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window<Acker>> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(tags: impl IntoIterator<Item = u64>) -> Window<u64> {
        let mut window = Window::default();
        for tag in tags {
            window.receive(tag);
        }
        window
    }

    fn ack(tag: u64, multiple: bool) -> Frame<u64> {
        Frame::Ack {
            acker: tag,
            multiple,
        }
    }

    #[test]
    fn a_finished_head_is_acknowledged_with_one_frame() {
        let mut window = window(1..=5);
        for tag in [3, 1, 2] {
            window.finish(tag, Settlement::Ack, tag);
        }
        assert_eq!(window.take_frames(), [ack(3, true)]);
        assert_eq!(window.take_frames(), []);
        window.finish(5, Settlement::Ack, 5);
        window.finish(4, Settlement::Ack, 4);
        assert_eq!(window.take_frames(), [ack(5, true)]);
    }

    #[test]
    fn nothing_is_acknowledged_past_a_delivery_still_being_handled() {
        let mut window = window(1..=4);
        window.finish(1, Settlement::Ack, 1);
        window.finish(3, Settlement::Ack, 3);
        window.finish(4, Settlement::Ack, 4);
        assert_eq!(
            window.take_frames(),
            [ack(3, false), ack(4, false), ack(1, true)]
        );
        window.finish(2, Settlement::Ack, 2);
        assert_eq!(window.take_frames(), [ack(2, true)]);
    }

    #[test]
    fn requeues_and_rejections_go_before_the_ack_that_would_cover_them() {
        let mut window = window(1..=6);
        window.finish(1, Settlement::Ack, 1);
        window.finish(2, Settlement::Reject, 2);
        window.finish(3, Settlement::Ack, 3);
        window.finish(4, Settlement::Requeue, 4);
        window.finish(6, Settlement::Reject, 6);
        assert_eq!(
            window.take_frames(),
            [
                Frame::Reject(2),
                Frame::Requeue(4),
                Frame::Reject(6),
                ack(3, true)
            ]
        );
        window.finish(5, Settlement::Ack, 5);
        assert_eq!(window.take_frames(), [ack(5, true)]);
    }

    #[test]
    fn a_head_without_acks_sends_no_ack() {
        let mut window = window(1..=2);
        window.finish(1, Settlement::Requeue, 1);
        assert_eq!(window.take_frames(), [Frame::Requeue(1)]);
        assert_eq!(window.take_frames(), []);
    }
}
