-- The machine lifecycle (region/machine) keeps why a machine is failed or
-- broken, and whether it was deployed, so that "mark fixed" can return a
-- machine in service to deployed rather than to ready.
ALTER TABLE machines
    ADD COLUMN status_reason text NOT NULL DEFAULT '',
    ADD COLUMN deployed_at timestamptz;
