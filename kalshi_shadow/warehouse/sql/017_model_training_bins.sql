-- The recalibrated model's training data, kept as outcomes become known (models/recalibrated.py). An hourly fit
-- used to re-read 14 days of snapshots (8 s a tick on 26 days of history); it now sums these bins, which each
-- settled contract adds once, so a fit costs the same on a day of history as on months.

-- The settled contracts whose priced snapshots are in the bins (or had none): each is binned once.
CREATE TABLE IF NOT EXISTS kalshi_model_training_contracts (
    model_version VARCHAR NOT NULL,      -- the model that trains on them
    ticker        VARCHAR NOT NULL,
    known_ts      TIMESTAMPTZ NOT NULL,  -- when its outcome was first recorded
    n_rows        BIGINT NOT NULL,       -- its priced snapshots binned
    binned_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (model_version, ticker)
);

-- The champion's priced snapshots of those contracts, counted per seen-time bucket (the model's refit interval) and
-- logit bin: a fit at boundary H sums the bins with known_ts < H and seen_bucket in [H - window, H).
CREATE TABLE IF NOT EXISTS kalshi_model_training_bins (
    model_version VARCHAR NOT NULL,
    series_ticker VARCHAR NOT NULL,
    event_ticker  VARCHAR,
    known_ts      TIMESTAMPTZ NOT NULL,
    y             BOOLEAN NOT NULL,      -- the outcome as first read: yes
    seen_bucket   TIMESTAMPTZ NOT NULL,  -- the refit boundary at or before the quote was seen
    x             DOUBLE NOT NULL,       -- logit(p_champion), rounded to the bin
    n             BIGINT NOT NULL
);
