-- PostgreSQL lets one notifying transaction commit at a time, and holds
-- that turn across the commit's WAL flush: when every append notifies,
-- appends that run at once still commit one after the other. A writer
-- that sets rackplane.notify_after_commit to 'on' for its transaction
-- (set_config(..., true)) takes on sending the notification itself once
-- it has committed; the trigger then stays silent for that transaction.
-- Every other append notifies as before.
CREATE OR REPLACE FUNCTION events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('rackplane.notify_after_commit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('rackplane_events', '');
    RETURN NULL;
END;
$$;
