-- attempt_count when the current retry window started (0 at first; a manual redelivery
-- starts a new window), so a revived delivery gets the full schedule and attempt budget.
ALTER TABLE deliveries ADD COLUMN window_start_attempt integer NOT NULL DEFAULT 0;
