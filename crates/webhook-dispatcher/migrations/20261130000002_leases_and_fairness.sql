-- Leases instead of row locks held across the HTTP attempt (ADR 0012).
--
-- A claim sets the lease and moves next_attempt_at to the lease's expiry in one short
-- statement: a leased delivery is simply not due until its lease runs out, so an expired
-- lease (a crashed worker) is re-claimable by the same index range as any due delivery.
ALTER TABLE deliveries ADD COLUMN lease_owner text;
ALTER TABLE deliveries ADD COLUMN lease_token text;
ALTER TABLE deliveries ADD COLUMN lease_expires_at timestamptz;
-- The destination (scheme://host:port of the webhook URL): the unit of the per-destination
-- concurrency cap.
ALTER TABLE deliveries ADD COLUMN destination text NOT NULL DEFAULT '';
UPDATE deliveries SET destination = coalesce(lower(substring(
        convert_from(payload, 'UTF8')::jsonb #>> '{data,job,webhookUrl}'
        FROM '^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]+)')), '')
    WHERE state IN ('pending', 'waiting');

-- Only the head of each job (its oldest unfinished event) is `pending`; later events are
-- `waiting` until it finishes. A waiting row that had been made claimable by the old
-- claim query (its predecessor finished) becomes pending here.
UPDATE deliveries w SET state = 'pending'
    WHERE w.state = 'waiting'
      AND EXISTS (SELECT 1 FROM deliveries p WHERE p.job_id = w.job_id
                  AND p.sequence = w.sequence - 1
                  AND p.state IN ('succeeded', 'failed', 'stopped'));

-- The claim: `state = 'pending' AND next_attempt_at <= now ORDER BY next_attempt_at`.
DROP INDEX deliveries_due_idx;
CREATE INDEX deliveries_claim_idx ON deliveries (next_attempt_at) WHERE state = 'pending';
-- Waiting rows, for the sweep that releases events whose predecessor never arrived, and
-- for the backlog gauge.
CREATE INDEX deliveries_waiting_idx ON deliveries (created_at) WHERE state = 'waiting';
-- Retention: finished deliveries by age.
CREATE INDEX deliveries_finished_idx ON deliveries (updated_at)
    WHERE state IN ('succeeded', 'failed', 'stopped');
-- The failed-deliveries gauge.
CREATE INDEX deliveries_failed_idx ON deliveries (updated_at) WHERE state = 'failed';

-- Which dispatcher replica made the attempt (its lease owner).
ALTER TABLE attempts ADD COLUMN worker text;
