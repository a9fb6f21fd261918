-- The relay claims from the head of the partial index of unpublished rows. A row it
-- marks published leaves a dead entry there until a vacuum removes it, and every claim
-- walks those entries: with the default thresholds (a vacuum once 20 % of the table
-- changed, in a table that keeps a week of published rows) the walk grows with the
-- retention and the event rate (ADR 0021). Vacuum and analyze after 1 % instead.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01
);
