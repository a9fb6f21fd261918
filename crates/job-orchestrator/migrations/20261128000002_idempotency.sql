-- Idempotency records (SPEC §2): committed in the same transaction as the effect they
-- describe, so a stored response exists exactly when its resource does.
CREATE TABLE idempotency_keys (
    org_id                 text NOT NULL,
    route                  text NOT NULL,
    key                    text NOT NULL,
    fingerprint            bytea NOT NULL,
    -- 'pending' only inside the transaction that claimed the key (never committed);
    -- 'ok': response_sealed is the encoded protobuf response, sealed with the secrets key
    -- (it may hold a webhook secret); 'error': error_* describe the 4xx to replay.
    outcome                text NOT NULL CHECK (outcome IN ('pending', 'ok', 'error')),
    response_sealed        bytea,
    error_code             text,
    error_message          text,
    error_details          text,
    created_at             timestamptz NOT NULL,
    expires_at             timestamptz NOT NULL,
    PRIMARY KEY (org_id, route, key)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
