-- A receiver's 410 Gone stops the job's webhook: a fact about the job, not about one
-- delivery row, so a manual redelivery can revive the webhook (delete the row) while the
-- deliveries stopped meanwhile keep their `stopped` state in the log.
CREATE TABLE stopped_webhooks (
    job_id      text PRIMARY KEY,
    stopped_at  timestamptz NOT NULL
);
INSERT INTO stopped_webhooks (job_id, stopped_at)
    SELECT job_id, min(updated_at) FROM deliveries WHERE state = 'stopped' GROUP BY job_id;
