//! Webhook secret rotation with overlap (SPEC §4 and §5, ADR 0011): a new secret becomes
//! current, the replaced one keeps signing beside it until the overlap ends, and the
//! dispatcher's target lists every secret valid now ([`signing_secrets`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use plangrep_core::id::JobId;
use plangrep_core::webhook::WebhookSecret;
use plangrep_proto::orchestrator::{RotateWebhookSecretResponse, SigningSecret};
use plangrep_proto::time::to_timestamp;
use sqlx::PgConnection;

use crate::crypto::Keyring;
use crate::error::Error;
use crate::store;
use crate::store::webhook_secrets::{self, WebhookSecrets};

/// Rotates the signing secret of `org_id`'s job `job_id` (inside the caller's
/// transaction): a rotation within the overlap of the last one drops the oldest secret,
/// so at most two sign at once.
pub async fn rotate(
    conn: &mut PgConnection,
    keyring: &Keyring,
    org_id: &str,
    job_id: &str,
    overlap: Duration,
) -> Result<RotateWebhookSecretResponse, Error> {
    let parsed: JobId = job_id.parse().map_err(|_| Error::NotFound("job"))?;
    let row = webhook_secrets::lock(conn, org_id, job_id).await?;
    let (Some(_), Some(current)) = (&row.webhook_url, &row.webhook_secret_sealed) else {
        return Err(Error::NoWebhook);
    };
    let secret = WebhookSecret::generate();
    let expires_at = store::now()
        + chrono::Duration::from_std(overlap)
            .map_err(|_| Error::Corrupt("the secret overlap is out of range".into()))?;
    // The replaced secret is kept as sealed (it is bound to this job already); reseal
    // moves it to the primary key like any other blob.
    webhook_secrets::rotate(
        conn,
        job_id,
        &keyring.seal(parsed, &secret),
        current,
        expires_at,
    )
    .await?;
    tracing::info!(job_id, %expires_at, "webhook secret rotated");
    Ok(RotateWebhookSecretResponse {
        webhook_signing_secret: secret.expose(),
        previous_secret_expires_at: Some(to_timestamp(expires_at)),
    })
}

/// Every secret that signs `row`'s deliveries at `now`: the current one, then the
/// previous one while its overlap lasts.
pub fn signing_secrets(
    keyring: &Keyring,
    job_id: JobId,
    row: &WebhookSecrets,
    current: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<SigningSecret>, Error> {
    let open = |sealed: &[u8]| {
        keyring
            .unseal(job_id, sealed)
            .map_err(|e| Error::Corrupt(format!("webhook secret of {job_id}: {e}")))
    };
    let mut secrets = vec![SigningSecret {
        secret: open(current)?.expose(),
        expires_at: None,
    }];
    if let (Some(previous), Some(expires_at)) = (
        &row.previous_webhook_secret_sealed,
        row.previous_webhook_secret_expires_at,
    ) && expires_at > now
    {
        // The current secret alone still signs validly: a previous one that does not
        // open is logged, not a reason to stop the job's webhooks.
        match open(previous) {
            Ok(secret) => secrets.push(SigningSecret {
                secret: secret.expose(),
                expires_at: Some(to_timestamp(expires_at)),
            }),
            Err(error) => tracing::error!(%error, "previous webhook secret skipped"),
        }
    }
    Ok(secrets)
}
