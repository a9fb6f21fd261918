-- The orchestrator's tables, in its own schema (search_path is set by the pool).

CREATE TABLE projects (
    id          text PRIMARY KEY,
    org_id      text NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT projects_org_name_key UNIQUE (org_id, name)
);
CREATE INDEX projects_org_created_idx ON projects (org_id, created_at DESC, id DESC);

CREATE TABLE jobs (
    id                     text PRIMARY KEY,
    org_id                 text NOT NULL,
    project_id             text NOT NULL REFERENCES projects (id),
    external_id            text,
    status                 text NOT NULL,
    -- Optimistic concurrency: every status change is `... WHERE version = $seen`.
    version                integer NOT NULL DEFAULT 1,
    -- The sequence number of the last status-change event of this job.
    last_sequence          integer NOT NULL DEFAULT 0,
    webhook_url            text,
    -- nonce || AES-256-GCM ciphertext of the whsec_ secret; never plaintext.
    webhook_secret_sealed  bytea,
    page_count             integer NOT NULL DEFAULT 0,
    successful_page_count  integer NOT NULL DEFAULT 0,
    credits_reserved       bigint NOT NULL DEFAULT 0,
    credits_debited        bigint NOT NULL DEFAULT 0,
    error_code             text,
    error_message          text,
    result_available       boolean NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    completed_at           timestamptz,
    expires_at             timestamptz NOT NULL,
    CONSTRAINT jobs_webhook_secret_check CHECK ((webhook_url IS NULL) = (webhook_secret_sealed IS NULL))
);
CREATE INDEX jobs_project_created_idx ON jobs (project_id, created_at DESC, id DESC);

-- The status history: one row per status change, numbered per job.
CREATE TABLE job_events (
    id               text PRIMARY KEY,
    job_id           text NOT NULL REFERENCES jobs (id),
    sequence         integer NOT NULL,
    status           text NOT NULL,
    previous_status  text,
    occurred_at      timestamptz NOT NULL,
    CONSTRAINT job_events_job_sequence_key UNIQUE (job_id, sequence)
);

-- Transactional outbox: written in the same transaction as the change it announces,
-- published to RabbitMQ by the relay, pruned after a retention period.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      text NOT NULL UNIQUE,
    routing_key   text NOT NULL,
    payload       bytea NOT NULL,
    traceparent   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- Wake the relay as soon as a change commits (NOTIFY is delivered on commit).
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('plangrep_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
