-- Where each follower of the log (a component that turns some events into
-- new ones) has read up to. Followers are idempotent, so a crash between
-- handling an event and saving the cursor only makes them see it again.
CREATE TABLE follower_cursors (
    name       text PRIMARY KEY,
    cursor     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
