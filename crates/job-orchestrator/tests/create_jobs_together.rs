//! Creates that share a transaction (`jobs::create_many`, ADR 0022) against a real
//! PostgreSQL: each job is inserted `provisioning` with its own secret and its own
//! `created` event, in the order of the requests and continuing each request's trace;
//! a request whose project is unknown, another organization's or not ready is answered
//! with its own error and writes nothing, without affecting the others; a batch whose
//! commit fails is answered with the error, never written again request by request.
//! Requests with an `Idempotency-Key` share the batch too (ADR 0023): each key's outcome
//! is stored as a request alone would store it, and a taken key runs alone.

mod common;

use std::time::Duration;

use common::{insert_project, migrated_pool, new_job};
use plangrep_core::ProjectStatus;
use plangrep_core::id::{JobId, OrgId, ProjectId};
use plangrep_core::validate::ExternalId;
use plangrep_job_orchestrator::crypto::Keyring;
use plangrep_job_orchestrator::error::Error;
use plangrep_job_orchestrator::idempotency::{self, Key};
use plangrep_job_orchestrator::jobs::{self, Created, Creation, NewJob};
use plangrep_proto::events::JobStatusChanged;
use plangrep_proto::orchestrator::{CreateJobResponse, Idempotency};
use plangrep_test_support::TestDatabase;
use prost::Message;
use sqlx::PgPool;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn project(pool: &PgPool, org_id: OrgId, status: ProjectStatus) -> ProjectId {
    insert_project(&mut pool.acquire().await.unwrap(), org_id, status).await
}

/// The history and outbox rows of one `created` event.
#[derive(sqlx::FromRow)]
struct CreatedEvent {
    job_id: String,
    sequence: i32,
    previous_status: Option<String>,
    routing_key: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
}

#[tokio::test]
async fn jobs_created_together_each_get_their_row_and_event_and_a_bad_request_fails_alone() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let org_id = OrgId::generate();
    let ready = project(&pool, org_id, ProjectStatus::Ready).await;
    let provisioning = project(&pool, org_id, ProjectStatus::Provisioning).await;
    let elsewhere = project(&pool, OrgId::generate(), ProjectStatus::Ready).await;
    let keyring = Keyring::insecure_dev_key();

    let requests = [
        NewJob {
            external_id: Some(ExternalId::parse("sheet-set-7").unwrap()),
            webhook_url: Some("https://hooks.example.com/plangrep".to_owned()),
            traceparent: Some(TRACEPARENT.to_owned()),
            ..new_job(org_id, ready)
        },
        new_job(org_id, ProjectId::generate()),
        new_job(org_id, provisioning),
        new_job(org_id, elsewhere),
        new_job(org_id, ready),
    ];
    let mut tx = pool.begin().await.unwrap();
    let answers = jobs::create_many(&mut tx, &keyring, Duration::from_secs(3600), &requests)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(answers.len(), requests.len());
    assert!(matches!(answers[1], Err(Error::NotFound("project"))));
    assert!(matches!(answers[2], Err(Error::ProjectNotReady)));
    assert!(
        matches!(answers[3], Err(Error::NotFound("project"))),
        "another organization's project is not found"
    );
    let first = answers[0].as_ref().unwrap();
    let last = answers[4].as_ref().unwrap();
    let (first_job, last_job) = (first.job.as_ref().unwrap(), last.job.as_ref().unwrap());
    assert_ne!(first_job.id, last_job.id);
    assert_eq!(first_job.status, "provisioning");
    assert_eq!(first_job.external_id.as_deref(), Some("sheet-set-7"));
    assert_eq!(last_job.external_id, None);
    let secret = first
        .webhook_signing_secret
        .as_ref()
        .expect("a job with a webhook gets its signing secret");
    assert!(last.webhook_signing_secret.is_none());

    // Exactly the two jobs exist, the first with its secret sealed for its own id.
    let rows: Vec<(String, String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT id, project_id, webhook_secret_sealed FROM jobs ORDER BY created_at, id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let sealed = rows
        .iter()
        .find(|(id, _, _)| *id == first_job.id)
        .and_then(|(_, _, sealed)| sealed.clone())
        .expect("the first job's secret is stored sealed");
    let job_id: JobId = first_job.id.parse().unwrap();
    assert_eq!(keyring.unseal(job_id, &sealed).unwrap().expose(), *secret);
    assert!(
        rows.iter()
            .all(|(_, project_id, _)| *project_id == ready.to_string())
    );

    // One `created` event per job, in the order of the requests, each with its trace.
    let created: Vec<CreatedEvent> = sqlx::query_as(
        "SELECT e.job_id, e.sequence, e.previous_status, o.routing_key, o.payload, \
           o.traceparent \
         FROM outbox o JOIN job_events e ON e.id = o.event_id ORDER BY o.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let jobs_in_order: Vec<&str> = created.iter().map(|row| row.job_id.as_str()).collect();
    assert_eq!(jobs_in_order, [first_job.id.as_str(), last_job.id.as_str()]);
    for row in &created {
        assert_eq!(row.routing_key, "job.status_changed.provisioning");
        assert_eq!((row.sequence, row.previous_status.as_deref()), (1, None));
        let expected_trace = (row.job_id == first_job.id).then_some(TRACEPARENT);
        assert_eq!(row.traceparent.as_deref(), expected_trace);
        let event = JobStatusChanged::decode(row.payload.as_slice()).unwrap();
        assert_eq!((event.sequence, event.status.as_str()), (1, "provisioning"));
        assert_eq!(event.job.unwrap().id, row.job_id);
    }
}

/// A batch whose commit fails may have been applied anyway (the connection dropped
/// during `COMMIT`): each request is answered with an unavailable database, and none is
/// written again on its own, which could create its job twice.
#[tokio::test]
async fn a_batch_whose_commit_fails_is_not_written_again() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let org_id = OrgId::generate();
    let ready = project(&pool, org_id, ProjectStatus::Ready).await;
    // The first commit that inserted jobs fails (a sequence is not rolled back); any
    // later one goes through.
    for statement in [
        "CREATE SEQUENCE commits_with_jobs",
        "CREATE FUNCTION fail_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF nextval('commits_with_jobs') = 1 THEN \
             RAISE EXCEPTION 'the first commit fails'; \
           END IF; \
           RETURN NULL; \
         END $$",
        "CREATE CONSTRAINT TRIGGER fail_first_commit AFTER INSERT ON jobs \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_first_commit()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let creations = jobs::creations(
        pool.clone(),
        Keyring::insecure_dev_key(),
        Duration::from_secs(3600),
    );

    // Both are queued before a writer runs (one runtime thread), so they share a batch.
    let (first, second) = tokio::join!(
        creations.submit(alone(new_job(org_id, ready))),
        creations.submit(with_key(new_job(org_id, ready), "retry-safe")),
    );
    for answer in [first, second] {
        assert!(
            matches!(&answer, Ok(Created::Answer(Err(status))) if status.code() == tonic::Code::Unavailable),
            "{answer:?}"
        );
    }
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 0, "the key was not stored either");
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(created, 0, "no request was written again on its own");

    // The next create goes through.
    let answer = answer_of(creations.submit(alone(new_job(org_id, ready))).await);
    assert_eq!(answer.unwrap().job.unwrap().status, "provisioning");
}

fn code(status: &tonic::Status) -> &'static str {
    plangrep_proto::status::public_code(status).as_str()
}

fn alone(job: NewJob) -> Creation {
    Creation { job, key: None }
}

fn key(org_id: OrgId, name: &str) -> Key {
    Key::from_request(
        &org_id.to_string(),
        Some(Idempotency {
            key: name.to_owned(),
            route: "POST /projects/{projectId}/jobs".to_owned(),
            fingerprint: name.as_bytes().to_vec(),
        }),
    )
    .unwrap()
}

fn with_key(job: NewJob, name: &str) -> Creation {
    let key = Some(key(job.org_id, name));
    Creation { job, key }
}

/// The answer of a request the batch created (or refused) itself.
fn answer_of(answer: Result<Created, Error>) -> Result<CreateJobResponse, tonic::Status> {
    match answer {
        Ok(Created::Answer(answer)) => answer,
        other => panic!("expected the batch's own answer, got {other:?}"),
    }
}

/// Each request runs alone through `idempotency::run`, as the gRPC service does.
async fn run_alone(
    pool: &PgPool,
    keyring: &Keyring,
    creation: Creation,
) -> Result<idempotency::Outcome<CreateJobResponse>, tonic::Status> {
    idempotency::run(pool, keyring, creation.key, async |conn| {
        jobs::create(conn, keyring, Duration::from_secs(3600), creation.job).await
    })
    .await
}

/// Keys in one batch: a success and a 4xx are stored for replay, a project not yet ready
/// releases its key (as a request alone does), and a key already stored, or the same key
/// a second time, is left to run alone, which replays.
#[tokio::test]
async fn keyed_creates_share_a_batch_and_store_each_outcome_as_alone() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let org_id = OrgId::generate();
    let ready = project(&pool, org_id, ProjectStatus::Ready).await;
    let provisioning = project(&pool, org_id, ProjectStatus::Provisioning).await;
    let keyring = Keyring::insecure_dev_key();
    let earlier = run_alone(&pool, &keyring, with_key(new_job(org_id, ready), "earlier"))
        .await
        .unwrap()
        .response;
    let creations = jobs::creations(pool.clone(), keyring.clone(), Duration::from_secs(3600));

    // All are queued before a writer runs (one runtime thread), so they share a batch.
    let (first, unknown, not_ready, again, plain, retried) = tokio::join!(
        creations.submit(with_key(new_job(org_id, ready), "first")),
        creations.submit(with_key(new_job(org_id, ProjectId::generate()), "unknown")),
        creations.submit(with_key(new_job(org_id, provisioning), "not-ready")),
        creations.submit(with_key(new_job(org_id, ready), "first")),
        creations.submit(alone(new_job(org_id, ready))),
        creations.submit(with_key(new_job(org_id, ready), "earlier")),
    );
    let first = answer_of(first).unwrap();
    assert_eq!(code(&answer_of(unknown).unwrap_err()), "not_found");
    assert_eq!(
        code(&answer_of(not_ready).unwrap_err()),
        "project_not_ready"
    );
    assert!(answer_of(plain).unwrap().job.is_some());
    for taken in [&again, &retried] {
        assert!(matches!(taken, Ok(Created::Alone)), "{taken:?}");
    }

    let stored: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT key, outcome, error_code FROM idempotency_keys ORDER BY key")
            .fetch_all(&pool)
            .await
            .unwrap();
    let stored: Vec<(&str, &str, Option<&str>)> = stored
        .iter()
        .map(|(key, outcome, code)| (key.as_str(), outcome.as_str(), code.as_deref()))
        .collect();
    assert_eq!(
        stored,
        [
            ("earlier", "ok", None),
            ("first", "ok", None),
            ("unknown", "error", Some("not_found")),
        ],
        "a project not ready stores nothing: the key can be retried once it is"
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 3, "the earlier job, the first and the plain one");

    // Run alone, the taken keys replay the stored responses.
    for (name, original) in [("first", &first), ("earlier", &earlier)] {
        let replay = run_alone(&pool, &keyring, with_key(new_job(org_id, ready), name))
            .await
            .unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.response, *original);
    }
    let refused = run_alone(
        &pool,
        &keyring,
        with_key(new_job(org_id, ProjectId::generate()), "unknown"),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&refused), "not_found");
    assert!(
        refused
            .metadata()
            .contains_key(idempotency::REPLAY_METADATA)
    );
}

/// A batch that meets a key another transaction holds waits for it only as long as a
/// request alone would, then its requests are written one by one: the others are
/// created, and that key's request is told another request with it is in progress.
#[tokio::test]
async fn a_key_held_elsewhere_costs_only_its_own_request() {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let org_id = OrgId::generate();
    let ready = project(&pool, org_id, ProjectStatus::Ready).await;
    let keyring = Keyring::insecure_dev_key();
    let mut holder = pool.begin().await.unwrap();
    let held = key(org_id, "in-flight");
    assert_eq!(
        idempotency::claim_many(&mut holder, &[&held])
            .await
            .unwrap(),
        [true]
    );
    let creations = jobs::creations(pool.clone(), keyring, Duration::from_secs(3600));

    let (in_flight, plain) = tokio::join!(
        creations.submit(with_key(new_job(org_id, ready), "in-flight")),
        creations.submit(alone(new_job(org_id, ready))),
    );
    assert!(
        matches!(in_flight, Err(Error::IdempotencyInProgress)),
        "{in_flight:?}"
    );
    assert!(answer_of(plain).unwrap().job.is_some());
    holder.rollback().await.unwrap();
}
