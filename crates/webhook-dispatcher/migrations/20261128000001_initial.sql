-- The dispatcher's tables, in its own schema (search_path is set by the pool).

-- One row per (event, webhook): the exact body, the state and the retry schedule. All
-- state that must survive a restart lives here, never only in memory.
CREATE TABLE deliveries (
    id                 text PRIMARY KEY,
    event_id           text NOT NULL,
    org_id             text NOT NULL,
    job_id             text NOT NULL,
    sequence           integer NOT NULL,
    job_status         text NOT NULL,
    -- The body, serialised once; every attempt signs and sends these exact bytes.
    payload            bytea NOT NULL,
    state              text NOT NULL,
    attempt_count      integer NOT NULL DEFAULT 0,
    -- Start of the retry window (first attempt, or the last manual redelivery).
    window_started_at  timestamptz,
    -- When the scheduler may next attempt it; NULL once finished.
    next_attempt_at    timestamptz,
    -- Set by a manual redelivery, cleared by the attempt it causes.
    manual_requested   boolean NOT NULL DEFAULT false,
    event_occurred_at  timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_event_key UNIQUE (event_id),
    CONSTRAINT deliveries_job_sequence_key UNIQUE (job_id, sequence),
    CONSTRAINT deliveries_state_check
        CHECK (state IN ('pending', 'waiting', 'succeeded', 'failed', 'stopped'))
);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at)
    WHERE state IN ('pending', 'waiting');

-- Every attempt, successful or not.
CREATE TABLE attempts (
    delivery_id       text NOT NULL REFERENCES deliveries (id),
    number            integer NOT NULL,
    trigger           text NOT NULL CHECK (trigger IN ('initial', 'retry', 'manual')),
    started_at        timestamptz NOT NULL,
    duration_ms       integer NOT NULL,
    status_code       integer,
    error             text,
    response_snippet  text,
    PRIMARY KEY (delivery_id, number)
);
