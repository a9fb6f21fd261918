-- Claims read the partial index of pending deliveries from its earliest due time. A
-- delivery that is leased or finishes leaves a dead entry there until a vacuum removes
-- it, and every claim walks those entries: with the default thresholds (a vacuum once
-- 20 % of the table changed, in a table that keeps 30 days of finished deliveries) the
-- walk grows with the retention and the delivery rate (ADR 0021). Vacuum and analyze
-- after 1 % instead.
ALTER TABLE deliveries SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.01
);
