-- Operators' commissioning scripts: the projection of
-- commissioning_script_set and commissioning_script_deleted (stream
-- commissioning-script/<name>). The agent of a machine being
-- commissioned runs every one, in name order, after it reported the
-- inventory. sha256 is the hex digest of content.
CREATE TABLE commissioning_scripts (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    content         text NOT NULL CHECK (octet_length(content) BETWEEN 1 AND 65536),
    sha256          text NOT NULL,
    timeout_seconds integer NOT NULL DEFAULT 300 CHECK (timeout_seconds BETWEEN 1 AND 3600),
    description     text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    event_id        uuid NOT NULL
);

-- What each script did on each commissioning operation of a machine: the
-- projection of racks' agent_script_reported events (stream
-- machine/<id>). A script reported twice in one operation (an agent's
-- retry) keeps its latest report (position, the event's); replaying an
-- event changes nothing (event_id). output is the tail of the script's
-- stdout and stderr, truncated when there was more. Rows go with their
-- machine.
CREATE TABLE commissioning_script_results (
    machine_id   uuid NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    operation_id text NOT NULL,
    name         text NOT NULL,
    exit_code    integer NOT NULL,
    output       text NOT NULL CHECK (octet_length(output) <= 16384),
    truncated    boolean NOT NULL,
    duration_ms  bigint NOT NULL,
    reported_at  timestamptz NOT NULL,
    rack_id      uuid NOT NULL,
    position     bigint NOT NULL,
    event_id     uuid NOT NULL UNIQUE,
    PRIMARY KEY (machine_id, operation_id, name)
);
CREATE INDEX commissioning_script_results_latest ON commissioning_script_results (machine_id, position DESC);
