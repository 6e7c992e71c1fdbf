-- Readers waiting for new events (GET /api/v1/events?wait=...) are woken
-- by a notification rather than polling the log. A statement trigger costs
-- no round trip of its own, and Postgres sends one notification per
-- transaction however many statements append.
CREATE FUNCTION events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rackplane_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_appended AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_appended();
