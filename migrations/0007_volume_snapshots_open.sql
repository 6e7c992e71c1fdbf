-- What the optional storage actions leave on a volume: the snapshots taken
-- (appended from each successful snapshot's volume_action_completed, as
-- [{name, taken_at}], oldest first) and whether it is open, and how, as
-- the rack's latest event says. Older events carry none of this, so the
-- defaults are what a rebuild gives them too.
ALTER TABLE volumes
    ADD COLUMN snapshots      jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN open           boolean NOT NULL DEFAULT false,
    ADD COLUMN open_exclusive boolean NOT NULL DEFAULT false;
