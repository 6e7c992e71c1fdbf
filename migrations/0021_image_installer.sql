-- An image version's installer family and, for a disk image, the disk
-- image the agent writes (events.ImageVersion.installer and .disk), as
-- the rack's capability snapshot reports them. Rows of snapshots taken
-- before families are 'custom' with no disk: what they booted as.
ALTER TABLE rack_images
    ADD COLUMN installer text NOT NULL DEFAULT 'custom',
    ADD COLUMN disk jsonb;
