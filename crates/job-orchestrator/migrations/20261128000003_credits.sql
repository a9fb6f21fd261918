-- The credits ledger: every grant, reservation, debit and release is a row; the balance
-- is their sum (kept per organization in credit_balances for cheap reads and locking).
CREATE TABLE credit_ledger (
    id          bigserial PRIMARY KEY,
    org_id      text NOT NULL,
    amount      bigint NOT NULL,
    reason      text NOT NULL,
    job_id      text,
    created_at  timestamptz NOT NULL
);
CREATE INDEX credit_ledger_org_idx ON credit_ledger (org_id, id);

CREATE TABLE credit_balances (
    org_id   text PRIMARY KEY,
    balance  bigint NOT NULL CHECK (balance >= 0)
);

CREATE INDEX jobs_project_status_idx ON jobs (project_id, status, created_at DESC, id DESC);
CREATE INDEX jobs_project_external_idx ON jobs (project_id, external_id, created_at DESC, id DESC);
