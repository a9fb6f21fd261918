-- Deferring an unreachable destination's due deliveries (leases::defer_destination) and
-- counting them reads only that destination's pending rows.
CREATE INDEX deliveries_pending_destination_idx ON deliveries (destination, next_attempt_at)
    WHERE state = 'pending';
