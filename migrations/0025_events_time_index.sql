-- Boot traffic by the time it happened (GET /api/v1/stats/boots, the web
-- UI's dashboard): the telemetry of a window of at most a day, read by
-- event time through this index rather than by scanning the log. Partial,
-- like the pruning indexes of 0015: state changes are never read this way.
CREATE INDEX events_telemetry_time ON events (time) WHERE telemetry_type(type);
