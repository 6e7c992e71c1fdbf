-- A retired rack (rack_retired, on its stream) stays in racks, for the
-- history its id is named in (events, machines' hardware, audit), but
-- leaves the racks the API lists, the liveness monitor watches and the
-- OS registry offers. retired_by is who retired it (the event's actor).
ALTER TABLE racks
    ADD COLUMN retired_at timestamptz,
    ADD COLUMN retired_by text NOT NULL DEFAULT '';
CREATE INDEX racks_active ON racks (online DESC, name) WHERE retired_at IS NULL;
