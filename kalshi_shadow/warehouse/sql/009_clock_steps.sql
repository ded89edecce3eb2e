-- A writer's file flushed before the file it follows in its own sequence: the wall clock stepped backwards (NTP
-- correcting a bad boot, a VM restored). Recorded once per file (warehouse/frontier.py) and counted by a health
-- check. The writer's frontier keeps its latest flush time, so pricing goes on; quotes seen "before" the frontier
-- after the step are priced as their files load, and decisions resume once the clock has passed the frontier.
CREATE TABLE IF NOT EXISTS raw_clock_steps (
    table_name          VARCHAR NOT NULL,
    writer              VARCHAR NOT NULL,
    seq                 BIGINT NOT NULL,
    flushed_at          TIMESTAMPTZ NOT NULL,   -- the file's flush time, after the step
    previous_flushed_at TIMESTAMPTZ NOT NULL,   -- the flush time of the file it follows
    step_seconds        DOUBLE NOT NULL,        -- how far back
    detected_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (table_name, writer, seq)
);

-- The flush time of each writer's file contiguous_seq as its name says; contiguous_flushed_at (the frontier) keeps the
-- latest of them, so a file after a step is compared with the file it follows, not with the frontier.
ALTER TABLE raw_writer_progress ADD COLUMN IF NOT EXISTS contiguous_file_flushed_at TIMESTAMPTZ;
UPDATE raw_writer_progress SET contiguous_file_flushed_at = contiguous_flushed_at;
