-- Documents (the files of a job), their pages, per-organization credit rates, and what
-- the lifecycle needs beyond creation: the rates a job was reserved at, a ledger that
-- names each movement's kind, and an index for the expiry sweeper.

CREATE TABLE documents (
    id              text PRIMARY KEY,
    job_id          text NOT NULL REFERENCES jobs (id),
    -- Upload order within the job (stable order of `job.files` and of processing).
    position        integer NOT NULL,
    file_name       text NOT NULL,
    content_type    text NOT NULL,
    classification  text NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    sha256          text NOT NULL,
    storage_key     text NOT NULL,
    -- uploaded → valid | invalid (preflight) → processed | failed (processing)
    status          text NOT NULL CHECK (status IN ('uploaded', 'valid', 'invalid', 'processed', 'failed')),
    page_count      integer,
    error_code      text,
    error_message   text,
    created_at      timestamptz NOT NULL,
    CONSTRAINT documents_job_position_key UNIQUE (job_id, position)
);

-- One row per page of a valid document, written by preflight (kind and size) and
-- completed by processing (text, sheet, or the page's error).
CREATE TABLE document_pages (
    document_id    text NOT NULL REFERENCES documents (id),
    page_number    integer NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('drawing', 'document')),
    width_pt       double precision NOT NULL,
    height_pt      double precision NOT NULL,
    processed      boolean NOT NULL DEFAULT false,
    text_chars     integer,
    sheet_number   text,
    sheet_title    text,
    error_code     text,
    error_message  text,
    PRIMARY KEY (document_id, page_number)
);

CREATE TABLE credit_rates (
    org_id              text PRIMARY KEY,
    drawing_page_rate   bigint NOT NULL CHECK (drawing_page_rate >= 0),
    document_page_rate  bigint NOT NULL CHECK (document_page_rate >= 0)
);

-- grant | reserve | debit | release. `amount` is the change of the available balance
-- for grant, reserve and release; a debit consumes part of its job's reservation (the
-- balance already paid for it) and records the consumed amount as a negative number.
ALTER TABLE credit_ledger ADD COLUMN kind text NOT NULL DEFAULT 'grant'
    CHECK (kind IN ('grant', 'reserve', 'debit', 'release'));
CREATE INDEX credit_ledger_job_idx ON credit_ledger (job_id) WHERE job_id IS NOT NULL;

-- The rates the job's credits were reserved at (debits use the same ones).
ALTER TABLE jobs ADD COLUMN drawing_page_rate bigint;
ALTER TABLE jobs ADD COLUMN document_page_rate bigint;

-- The expiry sweeper's scan: only live jobs, oldest deadline first.
CREATE INDEX jobs_expiry_idx ON jobs (expires_at)
    WHERE status NOT IN ('completed', 'completed_with_errors', 'failed', 'cancelled', 'expired');
