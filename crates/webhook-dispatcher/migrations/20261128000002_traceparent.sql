-- The trace the event belongs to (W3C traceparent), so attempts log the customer's
-- request's trace id.
ALTER TABLE deliveries ADD COLUMN traceparent text;
