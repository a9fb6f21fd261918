//! Trust boundaries of the internal services (ADR 0010): internal gRPC methods answer only
//! callers holding the service credential (health and reflection stay open), they refuse
//! malformed requests, the batched webhook-target look-up answers each job on its own, and
//! an event nobody authenticated never becomes a webhook.

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use plangrep_core::id::{EventId, JobId, OrgId};
use plangrep_messaging::topology::{DISPATCHER_EVENTS, PREFLIGHT_STAGE};
use plangrep_messaging::{EventsKey, OutgoingMessage, Publisher, Topology, WorkQueue};
use plangrep_proto::dispatcher::ListDeliveriesRequest;
use plangrep_proto::dispatcher::webhook_dispatcher_client::WebhookDispatcherClient;
use plangrep_proto::events::JobStatusChanged;
use plangrep_proto::orchestrator::job_orchestrator_client::JobOrchestratorClient;
use plangrep_proto::orchestrator::webhook_target_result::Outcome;
use plangrep_proto::orchestrator::{
    GetCreditBalanceRequest, GetJobRequest, GetWebhookTargetRequest, GetWebhookTargetsRequest,
    GrantCreditsRequest, RegisterDocumentsRequest, SetCreditRatesRequest, UploadedDocument,
};
use plangrep_service::internal_auth::InternalToken;
use plangrep_test_support::eventually;
use plangrep_test_support::receiver::Receiver;
use prost::Message;
use sqlx::Connection;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{INTERNAL_TOKEN, PATIENCE, TestApp};

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC server reachable")
}

/// A request carrying `authorization: Bearer <token>` when a token is given.
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn internal_methods_answer_only_callers_with_the_service_credential() {
    let app = TestApp::spawn().await;
    let org_id = OrgId::generate().to_string();
    let mut orchestrator = JobOrchestratorClient::new(channel(app.orchestrator_addr).await);
    let mut dispatcher = WebhookDispatcherClient::new(channel(app.dispatcher_addr).await);
    let wrong = "test-internal-token-0123456789-abcdefghiJ";

    for token in [None, Some(wrong), Some("")] {
        let balance = orchestrator
            .get_credit_balance(with_token(
                GetCreditBalanceRequest {
                    org_id: org_id.clone(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(balance.code(), Code::Unauthenticated, "{token:?}");
        let grant = orchestrator
            .grant_credits(with_token(
                GrantCreditsRequest {
                    org_id: org_id.clone(),
                    amount: 1_000,
                    reason: "free money".to_owned(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(grant.code(), Code::Unauthenticated, "{token:?}");
        let target = orchestrator
            .get_webhook_target(with_token(
                GetWebhookTargetRequest {
                    job_id: JobId::generate().to_string(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(target.code(), Code::Unauthenticated, "{token:?}");
        let targets = orchestrator
            .get_webhook_targets(with_token(
                GetWebhookTargetsRequest {
                    job_ids: vec![JobId::generate().to_string()],
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(targets.code(), Code::Unauthenticated, "{token:?}");
        let deliveries = dispatcher
            .list_deliveries(with_token(
                ListDeliveriesRequest {
                    org_id: org_id.clone(),
                    job_id: JobId::generate().to_string(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(deliveries.code(), Code::Unauthenticated, "{token:?}");
    }

    // Nothing was granted by the refused calls; the right token is answered.
    let balance = orchestrator
        .get_credit_balance(with_token(
            GetCreditBalanceRequest {
                org_id: org_id.clone(),
            },
            Some(INTERNAL_TOKEN),
        ))
        .await
        .expect("the credential is accepted")
        .into_inner();
    assert_eq!(balance.balance, 0);
    let deliveries = dispatcher
        .list_deliveries(with_token(
            ListDeliveriesRequest {
                org_id,
                job_id: JobId::generate().to_string(),
            },
            Some(INTERNAL_TOKEN),
        ))
        .await
        .expect("the credential is accepted")
        .into_inner();
    assert!(deliveries.deliveries.is_empty());

    // Health stays open (reflection too: tests/system/reflection.rs calls it bare).
    for addr in [app.orchestrator_addr, app.dispatcher_addr] {
        let health = HealthClient::new(channel(addr).await)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(health.is_ok(), "health at {addr}: {health:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn internal_methods_refuse_malformed_requests_with_invalid_argument() {
    let app = TestApp::spawn().await;
    let mut orchestrator = JobOrchestratorClient::new(
        InternalToken::new(INTERNAL_TOKEN).attach(channel(app.orchestrator_addr).await),
    );
    let org_id = OrgId::generate().to_string();

    let mut refused = Vec::new();
    refused.push((
        "empty GrantCredits",
        orchestrator
            .grant_credits(GrantCreditsRequest::default())
            .await
            .map(drop),
    ));
    for (what, amount, reason) in [
        ("zero grant", 0, "welcome"),
        ("overflowing grant", i64::MAX, "welcome"),
        ("grant without a reason", 10, " "),
    ] {
        let outcome = orchestrator
            .grant_credits(GrantCreditsRequest {
                org_id: org_id.clone(),
                amount,
                reason: reason.to_owned(),
            })
            .await
            .map(drop);
        refused.push((what, outcome));
    }
    refused.push((
        "GetJob without ids",
        orchestrator
            .get_job(GetJobRequest::default())
            .await
            .map(drop),
    ));
    refused.push((
        "GetJob with a project id for the job",
        orchestrator
            .get_job(GetJobRequest {
                org_id: org_id.clone(),
                job_id: "proj_01jg0000000000000000000000".to_owned(),
            })
            .await
            .map(drop),
    ));
    refused.push((
        "negative credit rate",
        orchestrator
            .set_credit_rates(SetCreditRatesRequest {
                org_id: org_id.clone(),
                drawing_page_rate: Some(-1),
                document_page_rate: None,
            })
            .await
            .map(drop),
    ));
    refused.push((
        "a document without a digest",
        orchestrator
            .register_documents(RegisterDocumentsRequest {
                org_id: org_id.clone(),
                job_id: JobId::generate().to_string(),
                documents: vec![UploadedDocument {
                    id: "doc_nope".to_owned(),
                    file_name: "a.pdf".to_owned(),
                    ..UploadedDocument::default()
                }],
            })
            .await
            .map(drop),
    ));
    refused.push((
        "GetWebhookTarget without a job id",
        orchestrator
            .get_webhook_target(GetWebhookTargetRequest::default())
            .await
            .map(drop),
    ));
    refused.push((
        "GetWebhookTargets with a project id",
        orchestrator
            .get_webhook_targets(GetWebhookTargetsRequest {
                job_ids: vec![
                    JobId::generate().to_string(),
                    "proj_01jg0000000000000000000000".to_owned(),
                ],
            })
            .await
            .map(drop),
    ));
    refused.push((
        "GetWebhookTargets with 257 job ids",
        orchestrator
            .get_webhook_targets(GetWebhookTargetsRequest {
                job_ids: (0..257).map(|_| JobId::generate().to_string()).collect(),
            })
            .await
            .map(drop),
    ));
    let mut dispatcher = WebhookDispatcherClient::new(
        InternalToken::new(INTERNAL_TOKEN).attach(channel(app.dispatcher_addr).await),
    );
    refused.push((
        "ListDeliveries without ids",
        dispatcher
            .list_deliveries(ListDeliveriesRequest::default())
            .await
            .map(drop),
    ));
    for (what, outcome) in refused {
        let status = outcome.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }

    // Nothing was granted; a well-formed grant still works.
    let balance = orchestrator
        .grant_credits(GrantCreditsRequest {
            org_id: org_id.clone(),
            amount: 25,
            reason: "welcome".to_owned(),
        })
        .await
        .expect("a valid grant")
        .into_inner();
    assert_eq!(balance.balance, 25);
    app.stop().await;
}

/// The dispatcher's batched look-up answers each job on its own: a job with a webhook
/// gets its URL and the very secret the customer was given, a job without a webhook and
/// an unknown job get `not_found`, in the order asked.
#[tokio::test]
async fn batched_webhook_targets_answer_each_job_on_its_own() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let url = "http://127.0.0.1:9/hooks";
    let (with_webhook, secret) = app.create_job_with_webhook(&key, url).await;
    let project = app.create_ready_project(&key, "No webhooks").await;
    let without = crate::helpers::expect_status(
        app.post_job(&key, &project, serde_json::json!({})).await,
        202,
    )
    .await["job"]["id"]
        .as_str()
        .expect("job id")
        .to_owned();
    let unknown = JobId::generate().to_string();
    let mut orchestrator = JobOrchestratorClient::new(
        InternalToken::new(INTERNAL_TOKEN).attach(channel(app.orchestrator_addr).await),
    );
    let results = orchestrator
        .get_webhook_targets(GetWebhookTargetsRequest {
            job_ids: vec![unknown.clone(), with_webhook.clone(), without.clone()],
        })
        .await
        .expect("a valid look-up")
        .into_inner()
        .results;
    let ids: Vec<&str> = results.iter().map(|r| r.job_id.as_str()).collect();
    assert_eq!(ids, [&unknown, &with_webhook, &without]);
    assert_eq!(results[0].outcome, Some(Outcome::NotFound(true)));
    assert_eq!(results[2].outcome, Some(Outcome::NotFound(true)));
    let Some(Outcome::Target(target)) = &results[1].outcome else {
        panic!("no target for the job with a webhook: {:?}", results[1]);
    };
    assert_eq!(target.url, url);
    assert_eq!(target.signing_secret, secret);
    assert_eq!(target.signing_secrets.len(), 1);
    app.stop().await;
}

/// The payload the outbox published for `job_id`'s event number `sequence`.
async fn published_event(app: &TestApp, job_id: &str, sequence: i32) -> JobStatusChanged {
    let mut db = sqlx::PgConnection::connect(app.database.url())
        .await
        .unwrap();
    let (payload,): (Vec<u8>,) = sqlx::query_as(
        "SELECT o.payload FROM orchestrator.outbox o \
         JOIN orchestrator.job_events e ON e.id = o.event_id \
         WHERE e.job_id = $1 AND e.sequence = $2",
    )
    .bind(job_id)
    .bind(sequence)
    .fetch_one(&mut db)
    .await
    .unwrap();
    JobStatusChanged::decode(payload.as_slice()).unwrap()
}

/// The message ids in `queue`'s dead-letter queue, once it holds `count` messages (taken
/// off it).
async fn dead_lettered(
    channel: &lapin::Channel,
    topology: &Topology,
    queue: &WorkQueue,
    count: u32,
) -> Vec<String> {
    let dead_queue = topology.dead_queue(queue);
    eventually(
        &format!("{count} messages dead-lettered in {dead_queue}"),
        PATIENCE,
        || {
            let channel = channel.clone();
            let dead_queue = dead_queue.clone();
            async move {
                let declared = channel
                    .queue_declare(
                        dead_queue.into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .ok()?;
                (declared.message_count() >= count).then_some(())
            }
        },
    )
    .await;
    let mut ids = Vec::new();
    while let Some(message) = channel
        .basic_get(dead_queue.clone().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        if let Some(id) = message.properties.message_id() {
            ids.push(id.to_string());
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn a_forged_event_on_the_broker_is_dead_lettered_and_never_becomes_a_webhook() {
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    for sequence in [1, 2] {
        let webhook = receiver.next(PATIENCE).await;
        let body: serde_json::Value = serde_json::from_slice(&webhook.body).unwrap();
        assert_eq!(body["data"]["sequence"], sequence);
    }

    // An attacker with access to the exchange announces the job as completed: a valid
    // protobuf, the job's real view, the next sequence; once untagged, once tagged with
    // a key that is not ours.
    let mut forged = published_event(&app, &job_id, 2).await;
    forged.sequence = 3;
    forged.previous_status = Some(forged.status.clone());
    forged.status = "completed".to_owned();
    if let Some(job) = forged.job.as_mut() {
        job.status = "completed".to_owned();
    }
    let untagged_id = EventId::generate().to_string();
    let mistagged_id = EventId::generate().to_string();
    let routing_key = "job.status_changed.completed";
    let topology = Topology::new(app.settings.raw("PLANGREP_AMQP_PREFIX").unwrap());
    let connection = plangrep_messaging::connect(&plangrep_test_support::amqp_url())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    forged.event_id = untagged_id.clone();
    channel
        .basic_publish(
            topology.exchange().into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &forged.encode_to_vec(),
            BasicProperties::default()
                .with_message_id(untagged_id.clone().into())
                .with_content_type("application/protobuf".into())
                .with_headers(FieldTable::default()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    forged.event_id = mistagged_id.clone();
    let impostor = Publisher::open(
        &connection,
        &topology,
        EventsKey::derive(b"not-the-deployment-token-0123456789"),
    )
    .await
    .unwrap();
    impostor
        .publish(&OutgoingMessage {
            message_id: mistagged_id.clone(),
            routing_key: routing_key.to_owned(),
            payload: forged.encode_to_vec(),
            traceparent: None,
            mandatory: true,
        })
        .await
        .unwrap();

    // A pipeline stage is fooled no more than the dispatcher: a tagged-with-the-wrong-key
    // `preflighting` would otherwise start preflight.
    let pipeline_id = EventId::generate().to_string();
    forged.event_id = pipeline_id.clone();
    forged.status = "preflighting".to_owned();
    impostor
        .publish(&OutgoingMessage {
            message_id: pipeline_id.clone(),
            routing_key: "job.status_changed.preflighting".to_owned(),
            payload: forged.encode_to_vec(),
            traceparent: None,
            mandatory: true,
        })
        .await
        .unwrap();

    // Every forgery is refused before any handler: it lands in the dead-letter queues.
    let mut forgeries = vec![
        untagged_id.clone(),
        mistagged_id.clone(),
        pipeline_id.clone(),
    ];
    forgeries.sort();
    assert_eq!(
        dead_lettered(&channel, &topology, &DISPATCHER_EVENTS, 3).await,
        forgeries
    );
    assert_eq!(
        dead_lettered(&channel, &topology, &PREFLIGHT_STAGE, 1).await,
        vec![pipeline_id.clone()]
    );
    let _ = connection.close(200, "done".into()).await;

    // The genuine third event (the cancel's) is the next webhook, and the only one with
    // sequence 3.
    let cancel = app
        .api(
            reqwest::Method::POST,
            &format!("/jobs/{job_id}/cancel"),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let webhook = receiver.next(PATIENCE).await;
    let body: serde_json::Value = serde_json::from_slice(&webhook.body).unwrap();
    assert_eq!(body["data"]["sequence"], 3);
    let genuine = published_event(&app, &job_id, 3).await;
    assert_ne!(genuine.status, "completed");
    assert_eq!(body["data"]["job"]["status"], genuine.status.as_str());
    assert_eq!(webhook.header("webhook-id"), genuine.event_id);

    // The delivery log never saw the forgeries.
    let deliveries = app.deliveries(&key, &job_id).await;
    let event_ids: Vec<&str> = deliveries
        .iter()
        .filter_map(|d| d["eventId"].as_str())
        .collect();
    assert_eq!(event_ids.len(), 3, "{deliveries:?}");
    for forgery in &forgeries {
        assert!(
            !event_ids.contains(&forgery.as_str()),
            "{forgery} delivered"
        );
    }
    app.stop().await;
}
