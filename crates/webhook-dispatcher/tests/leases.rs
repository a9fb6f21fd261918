//! Leases, claims and retention against a real PostgreSQL: the claim is an index scan
//! over a large backlog, an expired lease is claimed again while the late outcome of the
//! lost one is discarded, claims round-robin organizations and skip saturated
//! destinations, an event recorded while its predecessor's outcome is written (or before
//! its predecessor's row commits) is never left waiting, and housekeeping deletes finished deliveries past the retention.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use plangrep_service::Settings;
use plangrep_service::database;
use plangrep_test_support::eventually;
use plangrep_test_support::{TestDatabase, table_options};
use plangrep_webhook_dispatcher::housekeeping::Housekeeping;
use plangrep_webhook_dispatcher::metrics::DeliveryMetrics;
use plangrep_webhook_dispatcher::store::attempts::AttemptRow;
use plangrep_webhook_dispatcher::store::deliveries::{self, IntakeLease, NewDelivery, Recorded};
use plangrep_webhook_dispatcher::store::leases::{self, CLAIM_SQL, ClaimRequest, Recording};
use plangrep_webhook_dispatcher::{Config, startup};
use sqlx::PgPool;
use tokio::sync::Notify;

async fn migrated(db: &TestDatabase, extra: &[(&str, &str)]) -> (Config, PgPool) {
    let mut pairs = vec![
        ("DATABASE_URL", db.url().to_owned()),
        (
            "PLANGREP_INTERNAL_TOKEN",
            "a-test-token-of-at-least-32-characters".to_owned(),
        ),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let config = Config::from_settings(&Settings::from_pairs(pairs)).expect("config");
    startup::migrate(&config).await.expect("migrations apply");
    let pool = database::lazy_pool(startup::connect_options(&config).unwrap(), 4);
    (config, pool)
}

/// A batch of deliveries to seed.
struct Seed<'a> {
    prefix: &'a str,
    org: &'a str,
    state: &'a str,
    count: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    destination: &'a str,
    updated_at: DateTime<Utc>,
}

async fn seed(pool: &PgPool, seed: Seed<'_>) {
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, org_id, job_id, sequence, job_status, payload, \
           state, next_attempt_at, event_occurred_at, destination, created_at, updated_at) \
         SELECT 'dlv_' || $1 || g, 'evt_' || $1 || g, $2, 'job_' || $1 || g, 1, \
           'provisioning', '\\x7b7d'::bytea, $3, $4 + g * interval '1 millisecond', now(), \
           $5, $6, $6 \
         FROM generate_series(1, $7) g",
    )
    .bind(seed.prefix)
    .bind(seed.org)
    .bind(seed.state)
    .bind(seed.next_attempt_at)
    .bind(seed.destination)
    .bind(seed.updated_at)
    .bind(seed.count)
    .execute(pool)
    .await
    .unwrap();
}

/// One pending delivery, due a second before `now`: `dlv_<prefix>1` of job `job_<prefix>1`.
async fn seed_one_due(pool: &PgPool, prefix: &str, now: DateTime<Utc>) {
    seed(
        pool,
        Seed {
            prefix,
            org: "org_a",
            state: "pending",
            count: 1,
            next_attempt_at: Some(now - chrono::Duration::seconds(1)),
            destination: "https://a.example",
            updated_at: now,
        },
    )
    .await;
}

fn request<'a>(
    token: &'a str,
    now: DateTime<Utc>,
    limit: i64,
    saturated: &'a [String],
) -> ClaimRequest<'a> {
    ClaimRequest {
        owner: "test-replica",
        token,
        limit,
        window: limit * 8,
        saturated,
        per_destination: 100,
        now,
        lease_expires_at: now + chrono::Duration::hours(1),
    }
}

#[tokio::test]
async fn the_claim_is_an_index_scan_whatever_the_backlog() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    let hour = chrono::Duration::hours(1);
    for (prefix, state, count, next) in [
        ("w", "waiting", 20_000, Some(now - hour)),
        ("f", "pending", 5_000, Some(now + hour)),
        ("s", "succeeded", 20_000, None),
        ("d", "pending", 50, Some(now - hour)),
    ] {
        seed(
            &pool,
            Seed {
                prefix,
                org: "org_a",
                state,
                count,
                next_attempt_at: next,
                destination: "https://a.example",
                updated_at: now,
            },
        )
        .await;
    }
    sqlx::query("ANALYZE deliveries")
        .execute(&pool)
        .await
        .unwrap();

    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {CLAIM_SQL}")))
        .bind(now)
        .bind(Vec::<String>::new())
        .bind(64_i64)
        .bind(8_i64)
        .bind("replica")
        .bind("token")
        .bind(now + hour)
        .bind(4_i64)
        .fetch_all(&pool)
        .await
        .unwrap();
    let plan = plan.join("\n");
    println!("{plan}");
    assert!(
        plan.contains("Index Scan using deliveries_claim_idx on deliveries"),
        "the claim does not use its index:\n{plan}"
    );
    assert!(
        !plan.contains("Seq Scan"),
        "the claim scans a table:\n{plan}"
    );

    let claimed = leases::claim(&pool, &request("t1", now, 8, &[]))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 8);
    assert!(claimed.iter().all(|c| c.delivery.id.starts_with("dlv_d")));
}

/// Every lease and every finished delivery leaves a dead entry in the claim's index until
/// a vacuum; the table is vacuumed after 1 % of it changed, not the default 20 %, so
/// those entries stay few however many finished deliveries the retention keeps (ADR 0021).
#[tokio::test]
async fn the_deliveries_table_is_vacuumed_and_analyzed_after_one_percent_changed() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    assert_eq!(
        table_options(&pool, "deliveries").await,
        [
            "autovacuum_analyze_scale_factor=0.01",
            "autovacuum_vacuum_scale_factor=0.01"
        ]
    );
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_the_lost_lease_outcome_is_discarded() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    seed_one_due(&pool, "x", now).await;

    // Worker A claims, then "crashes" (never records).
    let first = leases::claim(&pool, &request("token-a", now, 1, &[]))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        leases::claim(&pool, &request("token-x", now, 1, &[]))
            .await
            .unwrap()
            .is_empty(),
        "a live lease is not claimable"
    );
    // After the lease expired, worker B takes the same delivery (same event id).
    let later = now + chrono::Duration::hours(2);
    let second = leases::claim(&pool, &request("token-b", later, 1, &[]))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery.event_id, first[0].delivery.event_id);
    assert_eq!(second[0].token(), "token-b");

    let id = &first[0].delivery.id;
    let recording = |token: &str| Recording {
        token: token.to_owned(),
        state: "succeeded",
        window_started_at: later,
        next_attempt_at: None,
        now: later,
        attempt: AttemptRow {
            delivery_id: id.clone(),
            number: 1,
            trigger: "initial".to_owned(),
            started_at: later,
            duration_ms: 3,
            status_code: Some(204),
            error: None,
            response_snippet: None,
            worker: Some(format!("worker-{token}")),
        },
    };
    let mut conn = pool.acquire().await.unwrap();
    // Both outcomes arrive in one batch: only the lease holder's is written.
    assert_eq!(
        leases::record(&mut conn, &[recording("token-a"), recording("token-b")])
            .await
            .unwrap(),
        [false, true],
        "A's late outcome must be discarded"
    );
    assert_eq!(
        leases::record(&mut conn, &[recording("token-b")])
            .await
            .unwrap(),
        [false],
        "a recorded outcome ends the lease"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts WHERE delivery_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "only the lease holder's attempt is logged");
    let (state, owner): (String, Option<String>) =
        sqlx::query_as("SELECT state, lease_owner FROM deliveries WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), owner), ("succeeded", None));
}

#[tokio::test]
async fn claims_round_robin_organizations_and_skip_saturated_destinations() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    // The flooding org's deliveries are all older than the quiet org's.
    for (prefix, org, count, age, destination) in [
        ("a", "org_flood", 30, 60, "http://tarpit.example"),
        ("b", "org_quiet", 3, 10, "http://fast.example"),
    ] {
        seed(
            &pool,
            Seed {
                prefix,
                org,
                state: "pending",
                count,
                next_attempt_at: Some(now - chrono::Duration::seconds(age)),
                destination,
                updated_at: now,
            },
        )
        .await;
    }

    let claimed = leases::claim(&pool, &request("t1", now, 4, &[]))
        .await
        .unwrap();
    let mut orgs: Vec<&str> = claimed.iter().map(|c| c.delivery.org_id.as_str()).collect();
    orgs.sort_unstable();
    assert_eq!(orgs, ["org_flood", "org_flood", "org_quiet", "org_quiet"]);

    let saturated = vec!["http://tarpit.example".to_owned()];
    let claimed = leases::claim(&pool, &request("t2", now, 4, &saturated))
        .await
        .unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(
        ids,
        ["dlv_b3"],
        "only the quiet org's last one is left off the tarpit"
    );
}

#[tokio::test]
async fn a_claim_takes_no_more_of_one_destination_than_its_cap() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    // One org: fairness across orgs does not spread this claim, only the cap does.
    for (prefix, count, age, destination) in [
        ("a", 10, 60, "http://backlog.example"),
        ("b", 3, 10, "http://other.example"),
    ] {
        seed(
            &pool,
            Seed {
                prefix,
                org: "org_a",
                state: "pending",
                count,
                next_attempt_at: Some(now - chrono::Duration::seconds(age)),
                destination,
                updated_at: now,
            },
        )
        .await;
    }
    let mut capped = request("t1", now, 6, &[]);
    capped.per_destination = 2;
    let claimed = leases::claim(&pool, &capped).await.unwrap();
    let mut ids: Vec<&str> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["dlv_a1", "dlv_a2", "dlv_b1", "dlv_b2"]);
}

#[tokio::test]
async fn deferring_an_unreachable_destination_moves_only_its_unleased_due_deliveries() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    for (prefix, state, age, destination) in [
        ("down", "pending", 60, "http://down.example"),
        ("up", "pending", 60, "http://up.example"),
        ("later", "waiting", 60, "http://down.example"),
    ] {
        seed(
            &pool,
            Seed {
                prefix,
                org: "org_a",
                state,
                count: 3,
                next_attempt_at: Some(now - chrono::Duration::seconds(age)),
                destination,
                updated_at: now,
            },
        )
        .await;
    }
    // One of the down destination's deliveries is in flight under a lease.
    let mut one = request("in-flight", now, 1, &[]);
    one.per_destination = 1;
    let leased = leases::claim(&pool, &one).await.unwrap();
    assert_eq!(leased[0].delivery.destination, "http://down.example");

    // Whole milliseconds: stored and read back exactly.
    let until =
        DateTime::from_timestamp_millis((now + chrono::Duration::seconds(30)).timestamp_millis())
            .unwrap();
    let deferred = leases::defer_destination(&pool, "http://down.example", until)
        .await
        .unwrap();
    assert_eq!(deferred, 2, "the two unleased pending ones");
    let due: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, next_attempt_at FROM deliveries WHERE state = 'pending' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, next) in due {
        let expected_deferred = id.starts_with("dlv_down") && id != leased[0].delivery.id;
        assert_eq!(next == until, expected_deferred, "{id}: {next}");
    }
    // Nothing is due at that destination now; the other destination still is.
    let claimed = leases::claim(&pool, &request("t2", now, 10, &[]))
        .await
        .unwrap();
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.destination == "http://up.example")
    );
    assert_eq!(claimed.len(), 3);
}

#[tokio::test]
async fn housekeeping_deletes_finished_deliveries_past_the_retention_with_their_attempts() {
    let db = TestDatabase::create().await;
    let (config, pool) = migrated(&db, &[("PLANGREP_DELIVERY_RETENTION", "30d")]).await;
    let now = Utc::now();
    let old = now - chrono::Duration::days(40);
    for (prefix, state, count, updated_at) in [
        ("old_ok", "succeeded", 1_200, old),
        ("old_failed", "failed", 5, old),
        ("old_stopped", "stopped", 5, old),
        ("old_open", "pending", 5, old),
        (
            "recent_ok",
            "succeeded",
            10,
            now - chrono::Duration::days(1),
        ),
    ] {
        seed(
            &pool,
            Seed {
                prefix,
                org: "org_a",
                state,
                count,
                next_attempt_at: (state == "pending").then_some(now),
                destination: "https://a.example",
                updated_at,
            },
        )
        .await;
    }
    sqlx::query(
        "INSERT INTO attempts (delivery_id, number, trigger, started_at, duration_ms) \
         SELECT id, 1, 'initial', updated_at, 5 FROM deliveries",
    )
    .execute(&pool)
    .await
    .unwrap();

    let metrics = DeliveryMetrics::default();
    let housekeeping = Housekeeping {
        pool: pool.clone(),
        metrics: metrics.clone(),
        wake: Arc::new(Notify::new()),
        retention: config.delivery_retention,
        missing_predecessor_grace: config.missing_predecessor_grace,
        interval: Duration::from_secs(60),
    };
    let pass = housekeeping.run_once().await.unwrap();
    assert_eq!(pass.deleted, 1_210);

    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.state, count(a.*) FROM deliveries d \
         LEFT JOIN attempts a ON a.delivery_id = d.id GROUP BY d.state ORDER BY d.state",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        [("pending".to_owned(), 5), ("succeeded".to_owned(), 10)]
    );
    let orphans: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        orphans, 15,
        "the deleted deliveries' attempts went with them"
    );
    let text = metrics.render();
    assert!(
        text.lines().any(|l| l == "plangrep_webhook_backlog 5"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "plangrep_webhook_failed_deliveries 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_redelivered_waiting_delivery_still_waits_for_its_predecessor() {
    use plangrep_webhook_dispatcher::store::deliveries::{Redelivery, request_redelivery};
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    seed(
        &pool,
        Seed {
            prefix: "w",
            org: "org_a",
            state: "waiting",
            count: 1,
            next_attempt_at: Some(now),
            destination: "https://a.example",
            updated_at: now,
        },
    )
    .await;
    let Redelivery::Scheduled(row) = request_redelivery(&pool, "org_a", "dlv_w1", now)
        .await
        .unwrap()
    else {
        panic!("the delivery exists and is not in flight");
    };
    assert_eq!(row.state, "waiting");
    assert!(row.manual_requested);
    assert!(
        leases::claim(&pool, &request("t", now, 1, &[]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        request_redelivery(&pool, "org_b", "dlv_w1", now)
            .await
            .unwrap(),
        Redelivery::NotFound
    ));
}

/// The second event of `job`, as intake would record it.
fn second_event(job: &str) -> NewDelivery {
    NewDelivery {
        id: format!("dlv_{job}_2"),
        event_id: format!("evt_{job}_2"),
        org_id: "org_a".to_owned(),
        job_id: job.to_owned(),
        sequence: 2,
        job_status: "awaiting_uploads".to_owned(),
        payload: b"{}".to_vec(),
        event_occurred_at: Utc::now(),
        traceparent: None,
        destination: "https://a.example".to_owned(),
    }
}

/// The (succeeded) outcome of `claimed`.
fn succeeded(claimed: &leases::Claimed) -> Recording {
    let now = Utc::now();
    Recording {
        token: claimed.token().to_owned(),
        state: "succeeded",
        window_started_at: now,
        next_attempt_at: None,
        now,
        attempt: AttemptRow {
            delivery_id: claimed.delivery.id.clone(),
            number: 1,
            trigger: "initial".to_owned(),
            started_at: now,
            duration_ms: 1,
            status_code: Some(204),
            error: None,
            response_snippet: None,
            worker: None,
        },
    }
}

/// Waits until a session of this database waits for a row lock.
async fn until_blocked(pool: &PgPool) {
    eventually(
        "a session waiting for a row lock",
        Duration::from_secs(10),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
}

/// The claimed delivery of `job`.
fn head_of(claimed: &[leases::Claimed], job: &str) -> leases::Claimed {
    claimed
        .iter()
        .find(|c| c.delivery.job_id == job)
        .expect("claimed")
        .clone()
}

async fn state_of(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT state FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Intake and the outcome writer meet on the predecessor's row. Whichever locks it
/// first, the second event ends `pending` once the first succeeded: intake sees the
/// outcome, or the outcome's release sees intake's row. (A release that read the table
/// as it was before the lock wait would leave the event waiting for the housekeeping
/// grace.)
#[tokio::test]
async fn an_event_recorded_while_its_predecessor_finishes_is_released() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    // One job per order below: job_i1 and job_o1, each with its first event due.
    for prefix in ["i", "o"] {
        seed_one_due(&pool, prefix, now).await;
    }
    let claimed = leases::claim(&pool, &request("t", now, 2, &[]))
        .await
        .unwrap();
    let head = |job: &str| head_of(&claimed, job);

    // Intake first: it holds the predecessor's share lock while the outcome waits.
    let mut intake = pool.begin().await.unwrap();
    let inserted = deliveries::insert_new(&mut *intake, &[second_event("job_i1")], None, now)
        .await
        .unwrap();
    assert!(matches!(inserted[..], [Recorded::Stored]));
    let outcome = tokio::spawn({
        let (pool, recording) = (pool.clone(), succeeded(&head("job_i1")));
        async move {
            let mut tx = pool.begin().await.unwrap();
            let recorded = leases::record(&mut tx, &[recording]).await.unwrap();
            tx.commit().await.unwrap();
            recorded
        }
    });
    until_blocked(&pool).await;
    intake.commit().await.unwrap();
    assert_eq!(outcome.await.unwrap(), [true]);
    assert_eq!(state_of(&pool, "dlv_job_i1_2").await, "pending");

    // The outcome first: intake waits for it, then sees the predecessor finished.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        leases::record(&mut tx, &[succeeded(&head("job_o1"))])
            .await
            .unwrap(),
        [true]
    );
    let intake = tokio::spawn({
        let pool = pool.clone();
        async move { deliveries::insert_new(&pool, &[second_event("job_o1")], None, now).await }
    });
    until_blocked(&pool).await;
    tx.commit().await.unwrap();
    let inserted = intake.await.unwrap().unwrap();
    assert!(matches!(inserted[..], [Recorded::Stored]));
    assert_eq!(state_of(&pool, "dlv_job_o1_2").await, "pending");
}

/// The first event of `job`, as intake would record it.
fn first_event(job: &str) -> NewDelivery {
    NewDelivery {
        id: format!("dlv_{job}_1"),
        event_id: format!("evt_{job}_1"),
        sequence: 1,
        job_status: "provisioning".to_owned(),
        ..second_event(job)
    }
}

/// Two intake batches in flight at once: the second event's statement cannot see the
/// first event's row (not committed yet), so there is no lock to meet on, and the first
/// event's outcome, written before the second row commits, releases nothing. Intake is
/// told (`WaitingForUnseen`) and looks again once its row has committed: that releases
/// the row whether the outcome committed before, or is still being written (the recheck
/// waits for it). A predecessor in the same batch needs no recheck: its outcome comes
/// after both rows commit.
#[tokio::test]
async fn an_event_recorded_before_its_predecessors_row_commits_is_released_on_recheck() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = Utc::now();
    let (mut first_u1, mut first_u2) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    for (tx, job) in [(&mut first_u1, "job_u1"), (&mut first_u2, "job_u2")] {
        let recorded = deliveries::insert_new(&mut **tx, &[first_event(job)], None, now)
            .await
            .unwrap();
        assert!(matches!(recorded[..], [Recorded::Stored]), "{recorded:?}");
    }
    let (mut second_u1, mut second_u2) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    for (tx, job) in [(&mut second_u1, "job_u1"), (&mut second_u2, "job_u2")] {
        let recorded = deliveries::insert_new(&mut **tx, &[second_event(job)], None, now)
            .await
            .unwrap();
        let [Recorded::WaitingForUnseen(id)] = &recorded[..] else {
            panic!("{recorded:?}");
        };
        assert_eq!(id, &format!("dlv_{job}_2"));
    }
    first_u1.commit().await.unwrap();
    first_u2.commit().await.unwrap();
    let claimed = leases::claim(&pool, &request("t", Utc::now(), 2, &[]))
        .await
        .unwrap();
    let head = |job: &str| head_of(&claimed, job);

    // job_u1: the outcome commits before the second row does, and misses it.
    let mut outcome = pool.begin().await.unwrap();
    let recording = succeeded(&head("job_u1"));
    assert_eq!(
        leases::record(&mut outcome, &[recording]).await.unwrap(),
        [true]
    );
    outcome.commit().await.unwrap();
    second_u1.commit().await.unwrap();
    assert_eq!(state_of(&pool, "dlv_job_u1_2").await, "waiting");
    let released =
        deliveries::release_after_unseen_predecessors(&pool, &["dlv_job_u1_2".to_owned()], now)
            .await
            .unwrap();
    assert_eq!(released, 1);
    assert_eq!(state_of(&pool, "dlv_job_u1_2").await, "pending");

    // job_u2: the outcome, blind to the second row, is still being written when the
    // recheck runs: the recheck waits for it and reads the predecessor as it leaves it.
    let mut outcome = pool.begin().await.unwrap();
    let recording = succeeded(&head("job_u2"));
    assert_eq!(
        leases::record(&mut outcome, &[recording]).await.unwrap(),
        [true]
    );
    second_u2.commit().await.unwrap();
    let recheck = tokio::spawn({
        let pool = pool.clone();
        async move {
            deliveries::release_after_unseen_predecessors(&pool, &["dlv_job_u2_2".to_owned()], now)
                .await
        }
    });
    until_blocked(&pool).await;
    outcome.commit().await.unwrap();
    assert_eq!(recheck.await.unwrap().unwrap(), 1);
    assert_eq!(state_of(&pool, "dlv_job_u2_2").await, "pending");

    // A predecessor in the same batch: no recheck.
    let recorded = deliveries::insert_new(
        &pool,
        &[first_event("job_u3"), second_event("job_u3")],
        None,
        now,
    )
    .await
    .unwrap();
    assert!(
        matches!(recorded[..], [Recorded::Stored, Recorded::Stored]),
        "{recorded:?}"
    );
    assert_eq!(state_of(&pool, "dlv_job_u3_2").await, "waiting");
}

/// Intake leases a delivery it was offered a lease for only when the delivery is due at
/// once: a job's first event is leased (and hidden from claims until the lease runs
/// out), a later event whose predecessor is unfinished waits unleased, a redelivered
/// event writes nothing, and an event after a stopped one is left to a claim.
#[tokio::test]
async fn intake_leases_only_the_deliveries_due_at_once() {
    let db = TestDatabase::create().await;
    let (_, pool) = migrated(&db, &[]).await;
    let now = plangrep_webhook_dispatcher::store::now();
    let first = NewDelivery {
        id: "dlv_job_n1_1".to_owned(),
        event_id: "evt_job_n1_1".to_owned(),
        sequence: 1,
        job_status: "provisioning".to_owned(),
        ..second_event("job_n1")
    };
    let expires_at = now + chrono::Duration::minutes(5);
    let lease = |tokens: &[&str]| IntakeLease {
        owner: "intake-replica".to_owned(),
        expires_at,
        tokens: tokens.iter().map(|t| Some((*t).to_owned())).collect(),
    };
    let batch = [first.clone(), second_event("job_n1")];
    let recorded = deliveries::insert_new(&pool, &batch, Some(&lease(&["tok_1", "tok_2"])), now)
        .await
        .unwrap();
    let [Recorded::Leased(leased), Recorded::Stored] = &recorded[..] else {
        panic!("the first event leased, the second stored: {recorded:?}");
    };
    assert_eq!(leased.id, "dlv_job_n1_1");
    assert_eq!(leased.state, "pending");
    assert_eq!(leased.lease_owner.as_deref(), Some("intake-replica"));
    assert_eq!(leased.lease_token.as_deref(), Some("tok_1"));
    assert_eq!(leased.next_attempt_at, Some(expires_at));
    assert_eq!(state_of(&pool, "dlv_job_n1_2").await, "waiting");
    let unleased: Option<String> =
        sqlx::query_scalar("SELECT lease_token FROM deliveries WHERE id = 'dlv_job_n1_2'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unleased, None);

    // A claim does not take the leased delivery while its lease holds.
    let claimed = leases::claim(&pool, &request("t", now, 10, &[]))
        .await
        .unwrap();
    assert!(claimed.is_empty(), "claimed {claimed:?}");

    // The same message again: nothing is written, the lease stays.
    let again = deliveries::insert_new(&pool, &[first], Some(&lease(&["tok_3"])), now)
        .await
        .unwrap();
    assert!(matches!(again[..], [Recorded::Already]), "{again:?}");
    let token: Option<String> =
        sqlx::query_scalar("SELECT lease_token FROM deliveries WHERE id = 'dlv_job_n1_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(token.as_deref(), Some("tok_1"));

    // After a stopped predecessor the event is due, but left to a claim: the stop may
    // be newer than what this statement saw.
    seed(
        &pool,
        Seed {
            prefix: "s",
            org: "org_a",
            state: "stopped",
            count: 1,
            next_attempt_at: None,
            destination: "https://a.example",
            updated_at: now,
        },
    )
    .await;
    let after_stop = [second_event("job_s1")];
    let recorded = deliveries::insert_new(&pool, &after_stop, Some(&lease(&["tok_4"])), now)
        .await
        .unwrap();
    assert!(matches!(recorded[..], [Recorded::Stored]), "{recorded:?}");
    assert_eq!(state_of(&pool, "dlv_job_s1_2").await, "pending");
}
