-- Idempotency records expire; the purge walks them by age.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
