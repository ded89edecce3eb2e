-- A writer's file flushed before the file it follows in its own sequence: the wall clock stepped backwards (NTP
-- correcting a bad boot, a VM restored). Recorded once per file (warehouse/frontier.py) and counted by a health
-- check. The writer's frontier keeps its latest flush time, so pricing goes on; quotes seen "before" the frontier
-- after the step are priced as their files load, and decisions resume once the clock has passed the frontier.
CREATE TABLE IF NOT EXISTS raw_clock_steps (
    table_name          VARCHAR NOT NULL,
    writer              VARCHAR NOT NULL,
    seq                 BIGINT NOT NULL,
    flushed_at          TIMESTAMPTZ NOT NULL,   -- the file's flush time, after the step
    previous_flushed_at TIMESTAMPTZ NOT NULL,   -- the latest flush time of the writer's files before it
    step_seconds        DOUBLE NOT NULL,        -- how far back
    detected_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (table_name, writer, seq)
);
