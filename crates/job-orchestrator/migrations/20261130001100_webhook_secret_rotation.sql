-- Webhook secret rotation with overlap (SPEC §4, ADR 0011): the secret a rotation
-- replaced keeps signing deliveries (beside the new one) until it expires. Both columns
-- are set together or not at all. Sealed like webhook_secret_sealed (keyring format,
-- job id as associated data).
ALTER TABLE jobs
    ADD COLUMN previous_webhook_secret_sealed bytea,
    ADD COLUMN previous_webhook_secret_expires_at timestamptz,
    ADD CONSTRAINT jobs_previous_webhook_secret_check
        CHECK ((previous_webhook_secret_sealed IS NULL) = (previous_webhook_secret_expires_at IS NULL));
