-- A preseed version's format (events.PreseedVersionCreated.format): what
-- kind of document it is, which decides the installer families it fits.
-- Versions saved before formats are '' here and read as detected from
-- their content (events.DetectPreseedFormat), as a replay would store them.
ALTER TABLE preseed_versions
    ADD COLUMN format text NOT NULL DEFAULT '';
