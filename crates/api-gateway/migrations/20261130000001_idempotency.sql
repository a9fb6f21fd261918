-- Idempotency records of the operations the gateway performs or forwards without an
-- orchestrator transaction of their own (the admin API, webhook redelivery). Scope:
-- (organization or `admin`, route, key). `status` is NULL while the first request runs.
CREATE TABLE idempotency_records (
    scope        text NOT NULL,
    route        text NOT NULL,
    key          text NOT NULL,
    fingerprint  bytea NOT NULL,
    status       smallint,
    -- The JSON body; AES-256-GCM sealed for the admin scope (it can hold a plaintext key).
    body         bytea,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, route, key)
);
CREATE INDEX idempotency_records_expires_idx ON idempotency_records (expires_at);
