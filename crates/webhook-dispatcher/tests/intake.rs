//! Intake against a real PostgreSQL: a redelivered event message records nothing twice,
//! events without a webhook record nothing, undecodable ones are dead-lettered, and an
//! event that overtakes its predecessor waits.

use std::sync::Arc;

use plangrep_core::id::{EventId, JobId, OrgId, ProjectId};
use plangrep_messaging::{HandleError, Incoming};
use plangrep_proto::events::JobStatusChanged;
use plangrep_proto::orchestrator::Job;
use plangrep_service::Settings;
use plangrep_service::database;
use plangrep_test_support::TestDatabase;
use plangrep_webhook_dispatcher::intake::Intake;
use plangrep_webhook_dispatcher::{Config, startup};
use prost::Message;
use tokio::sync::Notify;

async fn intake_on(db: &TestDatabase) -> (Intake, sqlx::PgPool) {
    let config = Config::from_settings(&Settings::from_pairs([
        ("DATABASE_URL", db.url()),
        ("PLANGREP_DEV_MODE", "true"),
    ]))
    .expect("config");
    startup::migrate(&config).await.expect("migrations apply");
    let pool = database::lazy_pool(startup::connect_options(&config).unwrap(), 4);
    (
        Intake::new(pool.clone(), Arc::new(Notify::new()), None),
        pool,
    )
}

fn event(job_id: &str, sequence: u32, webhook: Option<&str>) -> Incoming {
    let now = prost_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    };
    let job = Job {
        id: job_id.to_owned(),
        org_id: OrgId::generate().to_string(),
        project_id: ProjectId::generate().to_string(),
        status: "awaiting_uploads".to_owned(),
        webhook_url: webhook.map(str::to_owned),
        created_at: Some(now),
        updated_at: Some(now),
        expires_at: Some(now),
        ..Job::default()
    };
    let message = JobStatusChanged {
        event_id: EventId::generate().to_string(),
        sequence,
        status: "awaiting_uploads".to_owned(),
        previous_status: Some("provisioning".to_owned()),
        occurred_at: Some(now),
        job: Some(job),
    };
    Incoming {
        message_id: Some(message.event_id.clone()),
        routing_key: "job.status_changed.awaiting_uploads".to_owned(),
        payload: message.encode_to_vec(),
        redelivered: false,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    }
}

/// A new job whose first two events intake has recorded: event 1 due, event 2 waiting.
async fn job_with_two_events(intake: &Intake) -> String {
    let job = JobId::generate().to_string();
    for sequence in [1, 2] {
        intake
            .handle(event(&job, sequence, Some("https://93.184.216.34/hook")))
            .await
            .unwrap();
    }
    job
}

async fn states(pool: &sqlx::PgPool, job_id: &str) -> Vec<(i32, String)> {
    sqlx::query_as("SELECT sequence, state FROM deliveries WHERE job_id = $1 ORDER BY sequence")
        .bind(job_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redelivered_event_message_records_one_delivery() {
    let db = TestDatabase::create().await;
    let (intake, pool) = intake_on(&db).await;
    let job = JobId::generate().to_string();
    let message = event(&job, 1, Some("https://93.184.216.34/hook"));

    intake.handle(message.clone()).await.unwrap();
    intake
        .handle(Incoming {
            redelivered: true,
            ..message
        })
        .await
        .unwrap();
    assert_eq!(states(&pool, &job).await, [(1, "pending".to_owned())]);
}

#[tokio::test]
async fn an_event_that_overtakes_its_predecessor_waits_for_it() {
    let db = TestDatabase::create().await;
    let (intake, pool) = intake_on(&db).await;
    let job = JobId::generate().to_string();
    intake
        .handle(event(&job, 2, Some("https://93.184.216.34/hook")))
        .await
        .unwrap();
    intake
        .handle(event(&job, 1, Some("https://93.184.216.34/hook")))
        .await
        .unwrap();
    assert_eq!(
        states(&pool, &job).await,
        [(1, "pending".to_owned()), (2, "waiting".to_owned())]
    );
}

#[tokio::test]
async fn events_without_a_webhook_record_nothing_and_garbage_is_dead_lettered() {
    let db = TestDatabase::create().await;
    let (intake, pool) = intake_on(&db).await;
    let job = JobId::generate().to_string();
    intake.handle(event(&job, 1, None)).await.unwrap();
    assert!(states(&pool, &job).await.is_empty());

    let garbage = Incoming {
        payload: b"not protobuf at all".to_vec(),
        ..event(&job, 1, None)
    };
    assert!(matches!(
        intake.handle(garbage).await,
        Err(HandleError::DeadLetter(_))
    ));
}

#[tokio::test]
async fn a_predecessor_that_never_arrives_is_given_up_after_the_grace_period() {
    use plangrep_webhook_dispatcher::store::deliveries::release_stranded;
    let db = TestDatabase::create().await;
    let (intake, pool) = intake_on(&db).await;
    let job = JobId::generate().to_string();
    intake
        .handle(event(&job, 2, Some("https://93.184.216.34/hook")))
        .await
        .unwrap();
    let grace = std::time::Duration::from_secs(600);

    let released = release_stranded(&pool, chrono::Utc::now(), grace)
        .await
        .unwrap();
    assert_eq!(released, 0, "event 2 waits for event 1");
    assert_eq!(states(&pool, &job).await, [(2, "waiting".to_owned())]);

    sqlx::query("UPDATE deliveries SET created_at = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    let released = release_stranded(&pool, chrono::Utc::now(), grace)
        .await
        .unwrap();
    assert_eq!(released, 1, "event 1 never came: go on");
    assert_eq!(states(&pool, &job).await, [(2, "pending".to_owned())]);
}

/// Intake and the outcome writer release a job's next event themselves; should a race
/// ever leave one waiting behind a finished predecessor, housekeeping releases it on its
/// next pass, not after the missing-predecessor grace.
#[tokio::test]
async fn a_delivery_left_waiting_behind_a_finished_predecessor_is_released_at_once() {
    use plangrep_webhook_dispatcher::store::deliveries::release_stranded;
    let db = TestDatabase::create().await;
    let (intake, pool) = intake_on(&db).await;
    let job = job_with_two_events(&intake).await;
    // The race, staged: the first event finished without releasing the second.
    sqlx::query("UPDATE deliveries SET state = 'succeeded' WHERE job_id = $1 AND sequence = 1")
        .bind(&job)
        .execute(&pool)
        .await
        .unwrap();
    let released = release_stranded(
        &pool,
        chrono::Utc::now(),
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert_eq!(released, 1);
    assert_eq!(
        states(&pool, &job).await,
        [(1, "succeeded".to_owned()), (2, "pending".to_owned())]
    );
}

#[tokio::test]
async fn a_predecessor_that_exists_but_has_not_finished_is_always_waited_for() {
    use plangrep_webhook_dispatcher::store::deliveries::release_stranded;
    let db = TestDatabase::create().await;
    let (intake, pool) = intake_on(&db).await;
    let job = job_with_two_events(&intake).await;
    sqlx::query("UPDATE deliveries SET created_at = now() - interval '1 hour'")
        .execute(&pool)
        .await
        .unwrap();
    let released = release_stranded(&pool, chrono::Utc::now(), std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(released, 0);
    assert_eq!(
        states(&pool, &job).await,
        [(1, "pending".to_owned()), (2, "waiting".to_owned())]
    );
}
