//! The scheduler: a claim loop that leases due deliveries in short statements and hands
//! each to an attempt task ([`crate::attempt`]), bounded by the worker count and by the
//! per-destination cap ([`crate::slots`]) while it talks HTTP; the outcomes of finished
//! exchanges are then written together ([`plangrep_service::batch`]). Intake leases a
//! delivery due at once itself when a worker and a slot are free ([`Scheduler::reserve`],
//! ADR 0017).
//!
//! No transaction, row lock or pooled connection is held across an HTTP attempt: a claim
//! is a lease ([`crate::store::leases`]), the attempt runs outside any transaction, and
//! its outcome is recorded only while the lease still holds. A crash mid-attempt leaves
//! the lease to expire; the delivery is then claimed again (at-least-once, same
//! `webhook-id`). Claims round-robin across organizations and skip saturated
//! destinations, so one tenant's slow receiver cannot take every worker. Shutdown stops
//! claiming; attempts in flight finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use plangrep_core::retry::RetryPolicy;
use plangrep_telemetry::trace::TraceContext;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::metrics::DeliveryMetrics;
use crate::sender::Sender;
use crate::slots::{DestinationSlot, DestinationSlots};
use crate::store::leases::{self, ClaimRequest, Claimed, Recording};
use crate::store::{self};
use crate::target::{Target, TargetClient, TargetError};
use plangrep_service::batch::{Batcher, MAX_BATCH, WRITERS};

/// How many due rows a claim looks at per delivery it may take: the window in which it
/// round-robins organizations.
const FAIRNESS_WINDOW_FACTOR: i64 = 8;

/// What the claim loop and the attempts share.
#[derive(Clone)]
pub struct Scheduler {
    pub pool: PgPool,
    pub sender: Sender,
    pub targets: Arc<TargetClient>,
    pub retry: RetryPolicy,
    /// Notified when a delivery may have become due (new event, finished predecessor,
    /// manual redelivery) or a worker or destination slot came free.
    pub wake: Arc<Notify>,
    /// Backstop poll for scheduled retries and other replicas' changes.
    pub poll_interval: Duration,
    /// Attempt outcomes and latencies.
    pub metrics: DeliveryMetrics,
    /// This replica's name in leases and attempt rows.
    pub owner: String,
    /// How long a claim is ours (`Config::lease_duration`).
    pub lease: Duration,
    /// In-flight attempts per destination.
    pub destinations: Arc<DestinationSlots>,
    /// NOT_FOUND answers in a row before a job's webhook is stopped.
    pub not_found_attempts: u32,
    /// Writes attempt outcomes, those of concurrent attempts together ([`Scheduler::recorder`]).
    pub recorder: Batcher<Recording, bool>,
    /// Worker permits: at most this many attempts talk HTTP at once, whether the claim
    /// loop or intake ([`Scheduler::reserve`]) started them.
    pub workers: Arc<Semaphore>,
}

/// Webhook targets being fetched ahead of the attempts that need them, by job id.
pub(crate) type TargetsAhead = JoinHandle<HashMap<String, Result<Target, TargetError>>>;

/// What an attempt holds while it talks HTTP: its destination's slot and (in the claim
/// loop) a worker permit. Both are given back as soon as the exchange is over, so the
/// next delivery goes out while this outcome waits to be written with others'.
pub(crate) type Exchange = (DestinationSlot, Option<OwnedSemaphorePermit>);

/// Why a delivery could not be processed now.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("webhook target unavailable: {0}")]
    TargetUnavailable(String),
}

impl Scheduler {
    /// The outcome writer over `pool`: [`WRITERS`] statements in flight, each writing the
    /// outcomes that queued up while the other ran.
    pub fn recorder(pool: PgPool) -> Batcher<Recording, bool> {
        Batcher::spawn(WRITERS, MAX_BATCH, move |batch: Arc<[Recording]>| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await?;
                let recorded = leases::record(&mut tx, &batch).await?;
                tx.commit().await?;
                Ok(recorded)
            }
        })
    }

    /// Claims due deliveries while worker permits are free and runs each attempt as a
    /// task of `tasks`, until `shutdown`.
    pub async fn claim_loop(self, tasks: TaskTracker, shutdown: CancellationToken) {
        let free = self.workers.clone();
        let mut backoff = self.poll_interval;
        while !shutdown.is_cancelled() {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = free.clone().acquire_owned() => permit.expect("never closed"),
            };
            let mut permits = vec![first];
            while let Ok(permit) = free.clone().try_acquire_owned() {
                permits.push(permit);
            }
            let requested = permits.len();
            match self.claim_and_start(&mut permits, &tasks).await {
                // A full claim may have left due deliveries behind: claim again at once.
                Ok(claimed) if claimed == requested => {
                    backoff = self.poll_interval;
                    continue;
                }
                // A short one saw none left; what becomes due later wakes the loop.
                Ok(_) => backoff = self.poll_interval,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "claiming deliveries failed");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            drop(permits);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut notified => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Claims up to one delivery per permit and spawns an attempt for each that gets a
    /// destination slot (taking its permit along). Returns how many it claimed.
    async fn claim_and_start(
        &self,
        permits: &mut Vec<OwnedSemaphorePermit>,
        tasks: &TaskTracker,
    ) -> Result<usize, ScheduleError> {
        let claimed = self.claim(permits.len()).await?;
        let count = claimed.len();
        let mut ready = Vec::with_capacity(count);
        for claimed in claimed {
            let Some(slot) = self.destinations.try_acquire(&claimed.delivery.destination) else {
                // Two of the batch went to one destination beyond its cap: hand it back.
                self.hand_back(&claimed).await?;
                continue;
            };
            let permit = permits.pop().expect("one permit per claimed delivery");
            ready.push((claimed, (slot, Some(permit))));
        }
        self.start(ready, None, tasks);
        Ok(count)
    }

    /// A free worker permit and a slot at `destination`, if both are to be had now: what
    /// an attempt of a delivery leased outside the claim loop needs ([`crate::intake`]).
    pub(crate) fn reserve(&self, destination: &str) -> Option<Exchange> {
        let permit = self.workers.clone().try_acquire_owned().ok()?;
        let slot = self.destinations.try_acquire(destination)?;
        Some((slot, Some(permit)))
    }

    /// Runs an attempt for each leased delivery, holding what was reserved for it. The
    /// targets come from `ahead` when it has them all, else from one call for the batch;
    /// either way in a task of its own, so the caller goes on at once.
    pub(crate) fn start(
        &self,
        ready: Vec<(Claimed, Exchange)>,
        ahead: Option<TargetsAhead>,
        tasks: &TaskTracker,
    ) {
        if ready.is_empty() {
            return;
        }
        let scheduler = self.clone();
        let attempts = tasks.clone();
        tasks.spawn(async move {
            let targets = scheduler.targets_for(&ready, ahead).await;
            for ((claimed, exchange), target) in ready.into_iter().zip(targets) {
                let scheduler = scheduler.clone();
                attempts.spawn(async move {
                    scheduler.attempt_traced(claimed, target, exchange).await;
                    // The outcome is written (the job's next event may be due) and the
                    // permit and slot are free.
                    scheduler.wake.notify_waiters();
                });
            }
        });
    }

    /// Starts fetching the webhook targets of `job_ids` (one call) while the caller
    /// leases their deliveries.
    pub(crate) fn fetch_ahead(&self, mut job_ids: Vec<String>) -> TargetsAhead {
        job_ids.sort_unstable();
        job_ids.dedup();
        let targets = self.targets.clone();
        tokio::spawn(async move {
            let fetched = targets.get_many(&job_ids).await;
            job_ids.into_iter().zip(fetched).collect()
        })
    }

    /// The targets of `ready`, in order: from `ahead` if it holds every job, else fetched.
    async fn targets_for(
        &self,
        ready: &[(Claimed, Exchange)],
        ahead: Option<TargetsAhead>,
    ) -> Vec<Result<Target, TargetError>> {
        let fetched = match ahead {
            Some(task) => task.await.ok(),
            None => None,
        };
        let from_ahead = fetched.and_then(|fetched| {
            ready
                .iter()
                .map(|(claimed, _)| fetched.get(&claimed.delivery.job_id).cloned())
                .collect::<Option<Vec<_>>>()
        });
        match from_ahead {
            Some(targets) => targets,
            None => {
                self.targets_of(ready.iter().map(|(claimed, _)| claimed))
                    .await
            }
        }
    }

    /// The webhook targets of claimed deliveries, in one call, just before they are sent.
    async fn targets_of(
        &self,
        claimed: impl Iterator<Item = &Claimed>,
    ) -> Vec<Result<Target, TargetError>> {
        let job_ids: Vec<String> = claimed.map(|c| c.delivery.job_id.clone()).collect();
        self.targets.get_many(&job_ids).await
    }

    /// One step, for tests and tools: claims at most one due delivery and attempts it
    /// here. `Ok(false)` when none is due (or its destination is at its cap).
    pub async fn try_process_next(&self) -> Result<bool, ScheduleError> {
        let Some(claimed) = self.claim(1).await?.pop() else {
            return Ok(false);
        };
        let Some(slot) = self.destinations.try_acquire(&claimed.delivery.destination) else {
            self.hand_back(&claimed).await?;
            return Ok(false);
        };
        let target = self.targets_of(std::iter::once(&claimed)).await.pop();
        let target = target.expect("one target for one delivery");
        self.attempt_traced(claimed, target, (slot, None)).await;
        Ok(true)
    }

    /// Leases up to `limit` due deliveries for this replica.
    pub async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, sqlx::Error> {
        let now = store::now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let token = ulid::Ulid::generate().to_string();
        leases::claim(
            &self.pool,
            &ClaimRequest {
                owner: &self.owner,
                token: &token,
                limit,
                window: limit.saturating_mul(FAIRNESS_WINDOW_FACTOR),
                saturated: &self.destinations.saturated(),
                per_destination: i64::try_from(self.destinations.max()).unwrap_or(i64::MAX),
                now,
                lease_expires_at: now
                    + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX),
            },
        )
        .await
    }

    /// Gives a claimed delivery back untouched (due when it was due before).
    pub(crate) async fn hand_back(&self, claimed: &Claimed) -> Result<(), sqlx::Error> {
        leases::release(
            &self.pool,
            &claimed.delivery.id,
            claimed.token(),
            claimed.due_at,
        )
        .await?;
        Ok(())
    }

    /// Runs one attempt inside a span of the trace that caused the event (a child of the
    /// span that recorded the delivery); errors are logged, the lease then expires.
    async fn attempt_traced(
        &self,
        claimed: Claimed,
        target: Result<Target, TargetError>,
        held: Exchange,
    ) {
        let delivery = &claimed.delivery;
        let span = tracing::info_span!(
            "attempt",
            otel.name = "webhook attempt",
            otel.kind = "client",
            delivery_id = %delivery.id,
            job_id = %delivery.job_id,
            sequence = delivery.sequence,
        );
        plangrep_telemetry::export::continue_trace(
            &span,
            crate::startup::SERVICE,
            delivery
                .traceparent
                .as_deref()
                .and_then(TraceContext::parse),
        );
        if let Err(error) = self.attempt(claimed, target, held).instrument(span).await {
            tracing::warn!(%error, "webhook attempt not recorded; its lease will expire");
        }
    }
}
