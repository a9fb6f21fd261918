-- Every gateway remembers the keys it read for a few seconds and forgets a key as soon
-- as it changes (ADR 0024): each update or delete of a key notifies its hash, and a
-- truncate notifies an empty payload (forget every key).
CREATE FUNCTION api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('plangrep_api_keys', '');
    ELSE
        PERFORM pg_notify('plangrep_api_keys', encode(OLD.key_hash, 'hex'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_notify();
CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_notify();
