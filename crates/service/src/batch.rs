//! Group writes: each caller hands one item to a [`Batcher`] and awaits its own answer;
//! the batcher's writer tasks take whatever has queued up meanwhile (up to a maximum) and
//! write it with one statement. Under load many events, attempt outcomes, job creations
//! or transitions share one round trip and one commit (and API key look-ups one read);
//! an item that arrives alone is written at once (there is no timer, so no added
//! latency).
//!
//! If a batch fails (a deadlock victim, one row the database refuses), its items are
//! written again one at a time, so one bad item costs only itself.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// Writer tasks of a batcher: one statement fills while the other commits.
pub const WRITERS: usize = 2;
/// Items written by one statement at most.
pub const MAX_BATCH: usize = 256;

type Reply<R, E> = oneshot::Sender<Result<R, E>>;
type Queue<T, R, E> = mpsc::UnboundedReceiver<(T, Reply<R, E>)>;

/// The batcher's writer tasks are gone (the runtime is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batch writers have stopped")]
pub struct Closed;

impl From<Closed> for sqlx::Error {
    fn from(_: Closed) -> Self {
        sqlx::Error::PoolClosed
    }
}

/// A queue of items written in batches by a few writer tasks; a write fails with `E`.
pub struct Batcher<T, R, E = sqlx::Error> {
    queue: mpsc::UnboundedSender<(T, Reply<R, E>)>,
}

impl<T, R, E> Clone for Batcher<T, R, E> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R, E> Batcher<T, R, E>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
    E: From<Closed> + std::fmt::Display + Send + 'static,
{
    /// Starts `writers` tasks that each take up to `max` queued items and pass them to
    /// `write`, which answers one result per item, in order. The tasks end when every
    /// handle of the batcher is dropped.
    pub fn spawn<W, Fut>(writers: usize, max: usize, write: W) -> Self
    where
        W: Fn(Arc<[T]>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, E>> + Send,
    {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            let receiver = receiver.clone();
            let write = write.clone();
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver, max.max(1)).await {
                    write_batch(&write, batch).await;
                }
            });
        }
        Self { queue }
    }

    /// Writes `item` with whatever else is queued, and answers its own result.
    pub async fn submit(&self, item: T) -> Result<R, E> {
        self.enqueue(item)?.await.map_err(|_| Closed)?
    }

    /// Queues `item`; the receiver gets its result.
    fn enqueue(&self, item: T) -> Result<oneshot::Receiver<Result<R, E>>, Closed> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((item, reply)).map_err(|_| Closed)?;
        Ok(answer)
    }
}

/// The next batch: waits for one item, then takes what is already queued, up to `max`.
/// `None` once every sender is gone.
async fn next_batch<T, R, E>(
    receiver: &Mutex<Queue<T, R, E>>,
    max: usize,
) -> Option<Vec<(T, Reply<R, E>)>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Writes one batch and answers each caller; on failure, each item again on its own.
async fn write_batch<T, R, E, W, Fut>(write: &W, batch: Vec<(T, Reply<R, E>)>)
where
    T: Clone,
    E: std::fmt::Display,
    W: Fn(Arc<[T]>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, E>>,
{
    let (items, replies): (Vec<T>, Vec<Reply<R, E>>) = batch.into_iter().unzip();
    let items: Arc<[T]> = items.into();
    let single = items.len() == 1;
    match write(items.clone()).await {
        Ok(results) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Ok(results) => unreachable!(
            "a batch write answered {} results for {} items",
            results.len(),
            replies.len()
        ),
        Err(error) if single => {
            let _ = replies
                .into_iter()
                .next()
                .map(|reply| reply.send(Err(error)));
        }
        Err(error) => {
            tracing::debug!(%error, items = items.len(), "batch write failed: writing its items one at a time");
            for (item, reply) in items.iter().zip(replies) {
                let result = write(Arc::from([item.clone()]))
                    .await
                    .map(|mut results| results.pop().expect("one result for one item"));
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items queued while a write is in flight share the next write; a failing batch
    /// fails only its bad item.
    #[tokio::test]
    async fn queued_items_share_a_write_and_a_bad_item_fails_alone() {
        let (written, mut writes) = mpsc::unbounded_channel();
        let (gate_open, gate) = tokio::sync::watch::channel(false);
        let batcher: Batcher<i32, i32> = Batcher::spawn(1, 64, move |items: Arc<[i32]>| {
            let written = written.clone();
            let mut gate = gate.clone();
            async move {
                written.send(items.to_vec()).expect("test alive");
                gate.wait_for(|open| *open).await.expect("gate");
                if items.contains(&-1) {
                    return Err(sqlx::Error::RowNotFound);
                }
                Ok(items.iter().map(|item| item * 10).collect())
            }
        });
        let first = batcher.enqueue(1).unwrap();
        // The first write is in flight (held at the gate); three more queue up behind it.
        assert_eq!(writes.recv().await.unwrap(), [1]);
        let rest: Vec<_> = [2, -1, 3]
            .into_iter()
            .map(|item| batcher.enqueue(item).unwrap())
            .collect();
        gate_open.send(true).expect("gate");

        assert_eq!(first.await.unwrap().unwrap(), 10);
        let mut answers = Vec::new();
        for answer in rest {
            answers.push(answer.await.unwrap().ok());
        }
        assert_eq!(answers, [Some(20), None, Some(30)]);
        drop(batcher);
        let mut batches = Vec::new();
        while let Some(batch) = writes.recv().await {
            batches.push(batch);
        }
        assert_eq!(batches, [vec![2, -1, 3], vec![2], vec![-1], vec![3]]);
    }
}
