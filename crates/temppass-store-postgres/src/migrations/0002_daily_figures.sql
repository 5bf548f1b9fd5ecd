-- Daily figures per rule (docs/operating.md): counts added by each server's
-- flush, one row per (service provider, mvpd, day in the rule's time zone).
CREATE TABLE daily_figures (
    service_provider TEXT   NOT NULL,
    mvpd             TEXT   NOT NULL,
    day              TEXT   NOT NULL, -- YYYY-MM-DD
    trials_started   BIGINT NOT NULL DEFAULT 0,
    trials_ended     BIGINT NOT NULL DEFAULT 0,
    trials_exhausted BIGINT NOT NULL DEFAULT 0,
    resources_used   BIGINT NOT NULL DEFAULT 0,
    resets           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (service_provider, mvpd, day)
);

-- A trial's end is counted once, by the flush that first marks it.
ALTER TABLE trials ADD COLUMN end_counted BOOLEAN NOT NULL DEFAULT FALSE;
