-- The event log: append-only, one global order (position), and a version per
-- stream for optimistic concurrency. txid is the appending transaction's id:
-- followers read in (txid, position) order and only below the oldest running
-- transaction, so an event committed late is never skipped.
CREATE TABLE events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    id             uuid NOT NULL,
    stream         text NOT NULL,
    version        bigint NOT NULL CHECK (version > 0),
    type           text NOT NULL,
    source         text NOT NULL,
    time           timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    correlation_id text,
    causation_id   text,
    actor          text,
    data           jsonb NOT NULL,
    CONSTRAINT events_id_key UNIQUE (id),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
CREATE INDEX events_txid_position ON events (txid, position);
CREATE INDEX events_type ON events (type, position);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- The current version of each stream; its row lock serialises appends to
-- one stream, so version order is append order.
CREATE TABLE streams (
    name    text PRIMARY KEY,
    version bigint NOT NULL
);

-- Region events waiting to be relayed to JetStream. Written in the same
-- transaction as the event; deleted once JetStream acknowledged it.
CREATE TABLE outbox (
    event_id    uuid PRIMARY KEY REFERENCES events (id),
    position    bigint NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_position ON outbox (position);

-- Messages the region refused, with why. Kept for operators; never replayed.
CREATE TABLE rejected_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    nats_subject text NOT NULL,
    event_id    text,
    type        text,
    source      text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    raw         bytea NOT NULL
);
CREATE INDEX rejected_events_received ON rejected_events (received_at);

-- Projection of rack events and the region's liveness events.
CREATE TABLE racks (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL,
    version               text NOT NULL,
    hostname              text NOT NULL DEFAULT '',
    addresses             text[] NOT NULL DEFAULT '{}',
    tftp                  text[] NOT NULL DEFAULT '{}',
    http                  text[] NOT NULL DEFAULT '{}',
    heartbeat_interval_ms bigint NOT NULL DEFAULT 0,
    started_at            timestamptz NOT NULL,
    first_seen            timestamptz NOT NULL,
    last_seen             timestamptz NOT NULL,
    online                boolean NOT NULL,
    status_changed_at     timestamptz NOT NULL,
    last_heartbeat        timestamptz,
    dropped_events        bigint NOT NULL DEFAULT 0
);
CREATE INDEX racks_name ON racks (name);
