//! A pipeline step that moves many jobs at once (`lifecycle::advance_jobs`, ADR 0018)
//! against a real PostgreSQL: each job moved gets its own history row and outbox
//! message, in the order of the steps and with its own trace; a job that moved on or
//! does not exist is told apart and changes nothing; a step given twice, or repeated
//! later, writes nothing twice.

mod common;

use std::time::Duration;

use common::{insert_project, migrated_pool, new_job};
use plangrep_core::id::OrgId;
use plangrep_core::{JobEvent, JobStatus, ProjectStatus};
use plangrep_job_orchestrator::crypto::Keyring;
use plangrep_job_orchestrator::jobs;
use plangrep_job_orchestrator::lifecycle::{self, Advanced, Step};
use plangrep_proto::events::JobStatusChanged;
use plangrep_test_support::TestDatabase;
use prost::Message;
use sqlx::PgPool;

/// An outbox message with the history row of the same event.
#[derive(sqlx::FromRow)]
struct Appended {
    event_id: String,
    routing_key: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    job_id: String,
    sequence: i32,
    previous_status: Option<String>,
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A ready project of `org_id` and three of its jobs, just created (`provisioning`).
async fn three_new_jobs(pool: &PgPool, org_id: OrgId) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    let project_id = insert_project(&mut tx, org_id, ProjectStatus::Ready).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created = jobs::create(
            &mut tx,
            &Keyring::insecure_dev_key(),
            Duration::from_secs(3600),
            new_job(org_id, project_id),
        )
        .await
        .unwrap();
        ids.push(created.job.unwrap().id);
    }
    tx.commit().await.unwrap();
    ids
}

async fn allocate(pool: &PgPool, steps: &[Step]) -> Vec<Advanced> {
    let mut tx = pool.begin().await.unwrap();
    let advanced = lifecycle::advance_jobs(
        &mut tx,
        steps,
        JobStatus::Provisioning,
        JobEvent::StorageAllocated,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    advanced
}

#[tokio::test]
async fn jobs_advanced_together_each_get_their_own_event_in_step_order() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let org_id = OrgId::generate();
    let ids = three_new_jobs(&pool, org_id).await;
    let (first, second, cancelled) = (&ids[0], &ids[1], &ids[2]);
    let mut conn = pool.acquire().await.unwrap();
    jobs::cancel(&mut conn, &org_id.to_string(), cancelled)
        .await
        .unwrap();
    drop(conn);
    let published_before: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();

    // The second job comes first: the events follow the steps, not the ids.
    let steps = [
        Step {
            job_id: second.clone(),
            traceparent: Some(TRACEPARENT.to_owned()),
        },
        Step {
            job_id: "job_01JZZZZZZZZZZZZZZZZZZZZZZZ".to_owned(),
            traceparent: None,
        },
        Step {
            job_id: cancelled.clone(),
            traceparent: None,
        },
        Step {
            job_id: first.clone(),
            traceparent: None,
        },
        // A redelivered message in the same batch.
        Step {
            job_id: second.clone(),
            traceparent: None,
        },
    ];
    assert_eq!(
        allocate(&pool, &steps).await,
        [
            Advanced::Moved,
            Advanced::Missing,
            Advanced::Elsewhere,
            Advanced::Moved,
            Advanced::Moved
        ]
    );

    let statuses: Vec<(String, String, i32, i32)> = sqlx::query_as(
        "SELECT id, status, version, last_sequence FROM jobs WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, status, version, last_sequence) in &statuses {
        if id == cancelled {
            assert_eq!(status, "cancelled", "a job that moved on stays where it is");
        } else {
            assert_eq!(
                (status.as_str(), *version, *last_sequence),
                ("awaiting_uploads", 2, 2)
            );
        }
    }

    let appended: Vec<Appended> = sqlx::query_as(
        "SELECT o.event_id, o.routing_key, o.payload, o.traceparent, \
           e.job_id, e.sequence, e.previous_status \
         FROM outbox o JOIN job_events e ON e.id = o.event_id \
         WHERE o.id > $1 ORDER BY o.id",
    )
    .bind(published_before)
    .fetch_all(&pool)
    .await
    .unwrap();
    let jobs_in_order: Vec<&str> = appended.iter().map(|row| row.job_id.as_str()).collect();
    assert_eq!(jobs_in_order, [second.as_str(), first.as_str()]);
    for row in &appended {
        assert_eq!(row.routing_key, "job.status_changed.awaiting_uploads");
        assert_eq!(
            (row.sequence, row.previous_status.as_deref()),
            (2, Some("provisioning"))
        );
        let expected_trace = (&row.job_id == second).then_some(TRACEPARENT);
        assert_eq!(row.traceparent.as_deref(), expected_trace);
        let event = JobStatusChanged::decode(row.payload.as_slice()).unwrap();
        assert_eq!(event.event_id, row.event_id);
        assert_eq!(
            (event.sequence, event.status.as_str()),
            (2, "awaiting_uploads")
        );
        assert_eq!(event.previous_status.as_deref(), Some("provisioning"));
        let job = event.job.unwrap();
        assert_eq!(
            (&job.id, job.status.as_str()),
            (&row.job_id, "awaiting_uploads")
        );
    }

    // A redelivered step finds its jobs moved on already and writes nothing.
    assert_eq!(
        allocate(&pool, &steps[..1]).await,
        [Advanced::Elsewhere],
        "a repeated step does nothing twice"
    );
    let published_after: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(published_after, published_before + 2);
}
