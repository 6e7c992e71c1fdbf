-- Boot telemetry may be pruned (region/postgres PruneTelemetry, regiond
-- -telemetry-*): the events of unauthenticated boot traffic that no
-- projection depends on. telemetry_type names them, as
-- postgres.TelemetryTypes does (TestTelemetryTypesAreTheDatabases checks
-- that the two agree).
CREATE FUNCTION telemetry_type(t text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t IN (
        'rackplane.rack.boot_handoff.v1',
        'rackplane.rack.boot_transfer.v1',
        'rackplane.rack.boot_request_rejected.v1',
        'rackplane.rack.boot_requests_summarized.v1',
        'rackplane.rack.handoff_file_deleted.v1',
        'rackplane.rack.dhcp_leases_changed.v1',
        'rackplane.region.discovery_refused.v1')
$$;

-- The log stays append-only for every other event, and for these too
-- unless the deleting transaction says it prunes (SET LOCAL
-- rackplane.prune_telemetry = 'on'): the database itself refuses any
-- other UPDATE or DELETE.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('rackplane.prune_telemetry', true) = 'on'
        AND telemetry_type(OLD.type) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER events_append_only ON events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

-- Pruning by age (recorded_at) and by count per source (the newest kept).
CREATE INDEX events_telemetry_age ON events (recorded_at) WHERE telemetry_type(type);
CREATE INDEX events_telemetry_source ON events (source, position) WHERE telemetry_type(type);
