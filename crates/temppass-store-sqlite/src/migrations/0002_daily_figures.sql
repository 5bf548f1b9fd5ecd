-- Daily figures per rule (docs/operating.md): counts added by each server's
-- flush, one row per (service provider, mvpd, day in the rule's time zone).
CREATE TABLE daily_figures (
    service_provider TEXT    NOT NULL,
    mvpd             TEXT    NOT NULL,
    day              TEXT    NOT NULL, -- YYYY-MM-DD
    trials_started   INTEGER NOT NULL DEFAULT 0,
    trials_ended     INTEGER NOT NULL DEFAULT 0,
    trials_exhausted INTEGER NOT NULL DEFAULT 0,
    resources_used   INTEGER NOT NULL DEFAULT 0,
    resets           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (service_provider, mvpd, day)
) WITHOUT ROWID;

-- A trial's end is counted once, by the flush that first marks it.
ALTER TABLE trials ADD COLUMN end_counted INTEGER NOT NULL DEFAULT 0;
