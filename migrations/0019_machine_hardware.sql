-- Operators' tags of machines (machine_tags_set): sorted, each once. The
-- GIN index serves ?tag= filters (tags @> the ones asked for).
ALTER TABLE machines ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX machines_tags ON machines USING gin (tags);

-- Machines' hardware: the projection of racks' inventory_reported
-- events (stream machine/<id>). machine_hardware holds the current
-- inventory of each machine, whole (inventory, as inventory.v1.json), and
-- the figures worth filtering machines on beside it. memory_bytes is the
-- installed memory when the agent knew it, else what the kernel could use
-- (memory_total_bytes): an operator asking for 8 GiB machines means the
-- DIMMs, not MemTotal. rack_id is the rack that passed the report on.
-- A report collected before the current one (collected_at) does not
-- replace it. Rows go with their machine.
CREATE TABLE machine_hardware (
    machine_id         uuid PRIMARY KEY REFERENCES machines (id) ON DELETE CASCADE,
    inventory          jsonb NOT NULL,
    arch               text NOT NULL,
    cpu_model          text NOT NULL,
    cpu_sockets        integer NOT NULL,
    cpu_cores          integer NOT NULL,
    cpu_threads        integer NOT NULL,
    memory_bytes       bigint NOT NULL,
    memory_total_bytes bigint NOT NULL,
    disk_count         integer NOT NULL,
    disk_bytes         bigint NOT NULL,
    largest_disk_bytes bigint NOT NULL,
    nic_count          integer NOT NULL,
    firmware           text NOT NULL,
    secure_boot        boolean,
    collected_at       timestamptz NOT NULL,
    reported_at        timestamptz NOT NULL,
    rack_id            uuid NOT NULL,
    operation_id       text NOT NULL,
    event_id           uuid NOT NULL
);

-- Every report of each machine, in log order (position, the event's),
-- with what changed since the current inventory it followed
-- (inventory_diff): first is true for a machine's first report, stale for
-- one collected before the current inventory (recorded, neither compared
-- nor applied). summary is the figures of machine_hardware as JSON.
CREATE TABLE machine_hardware_history (
    event_id     uuid PRIMARY KEY,
    machine_id   uuid NOT NULL REFERENCES machines (id) ON DELETE CASCADE,
    position     bigint NOT NULL,
    rack_id      uuid NOT NULL,
    operation_id text NOT NULL,
    collected_at timestamptz NOT NULL,
    reported_at  timestamptz NOT NULL,
    summary      jsonb NOT NULL,
    first        boolean NOT NULL,
    stale        boolean NOT NULL,
    diff         jsonb NOT NULL
);
CREATE INDEX machine_hardware_history_machine ON machine_hardware_history (machine_id, position DESC);

-- inventory_diff says what changed from inventory old to inventory new
-- (both inventory.v1), as an object with only the keys that changed:
-- disks_added and disks_removed ([{name, size_bytes, serial}]; a disk is
-- its kernel name with its serial and WWID, so a disk replaced in the
-- same slot is one removed and one added), disks_resized ([{name,
-- from_bytes, to_bytes}]), nics_added and nics_removed ([{name, mac}]; a
-- NIC is its MAC), memory ({from_bytes, to_bytes}: installed memory when
-- known, else the kernel's total), cpu ({from, to}: model, sockets,
-- cores, threads), firmware ({from, to}: type and secure_boot) and
-- architecture ({from, to}). {} when nothing changed. Lists are sorted,
-- so the same two inventories always give the same diff (a rebuild
-- reproduces it).
CREATE FUNCTION inventory_memory_bytes(inv jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((inv->'memory'->>'installed_bytes')::bigint, (inv->'memory'->>'total_bytes')::bigint)
$$;

CREATE FUNCTION inventory_diff(old jsonb, new jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    WITH od AS (
        SELECT d->>'name' AS name, coalesce(d->>'serial', '') AS serial, coalesce(d->>'wwid', '') AS wwid,
            (d->>'size_bytes')::bigint AS size
        FROM jsonb_array_elements(old->'disks') d
    ), nd AS (
        SELECT d->>'name' AS name, coalesce(d->>'serial', '') AS serial, coalesce(d->>'wwid', '') AS wwid,
            (d->>'size_bytes')::bigint AS size
        FROM jsonb_array_elements(new->'disks') d
    ), onic AS (
        SELECT n->>'mac' AS mac, n->>'name' AS name FROM jsonb_array_elements(old->'nics') n
    ), nnic AS (
        SELECT n->>'mac' AS mac, n->>'name' AS name FROM jsonb_array_elements(new->'nics') n
    )
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'disks_added', (SELECT jsonb_agg(jsonb_build_object('name', nd.name, 'size_bytes', nd.size, 'serial', nullif(nd.serial, ''))
                ORDER BY nd.name)
            FROM nd WHERE NOT EXISTS (SELECT 1 FROM od WHERE (od.name, od.serial, od.wwid) = (nd.name, nd.serial, nd.wwid))),
        'disks_removed', (SELECT jsonb_agg(jsonb_build_object('name', od.name, 'size_bytes', od.size, 'serial', nullif(od.serial, ''))
                ORDER BY od.name)
            FROM od WHERE NOT EXISTS (SELECT 1 FROM nd WHERE (od.name, od.serial, od.wwid) = (nd.name, nd.serial, nd.wwid))),
        'disks_resized', (SELECT jsonb_agg(jsonb_build_object('name', nd.name, 'from_bytes', od.size, 'to_bytes', nd.size)
                ORDER BY nd.name)
            FROM nd JOIN od ON (od.name, od.serial, od.wwid) = (nd.name, nd.serial, nd.wwid) WHERE od.size <> nd.size),
        'nics_added', (SELECT jsonb_agg(jsonb_build_object('name', nnic.name, 'mac', nnic.mac) ORDER BY nnic.mac)
            FROM nnic WHERE NOT EXISTS (SELECT 1 FROM onic WHERE onic.mac = nnic.mac)),
        'nics_removed', (SELECT jsonb_agg(jsonb_build_object('name', onic.name, 'mac', onic.mac) ORDER BY onic.mac)
            FROM onic WHERE NOT EXISTS (SELECT 1 FROM nnic WHERE onic.mac = nnic.mac)),
        'memory', CASE WHEN inventory_memory_bytes(old) IS DISTINCT FROM inventory_memory_bytes(new)
            THEN jsonb_build_object('from_bytes', inventory_memory_bytes(old), 'to_bytes', inventory_memory_bytes(new)) END,
        'cpu', CASE WHEN (old->'cpu') - 'flags' IS DISTINCT FROM (new->'cpu') - 'flags'
            THEN jsonb_build_object('from', (old->'cpu') - 'flags', 'to', (new->'cpu') - 'flags') END,
        'firmware', CASE WHEN old->'firmware' IS DISTINCT FROM new->'firmware'
            THEN jsonb_build_object('from', old->'firmware', 'to', new->'firmware') END,
        'architecture', CASE WHEN old->'architecture' IS DISTINCT FROM new->'architecture'
            THEN jsonb_build_object('from', old->'architecture', 'to', new->'architecture') END
    ))
$$;
