-- Empreinte collector store, version 6: the configuration history (issue 16). The plan
-- in force (sites, zones, PUE, market factors, tariffs, inventory) with the instant it
-- applies from, and every recomputation of stored hours with the figures before and
-- after, per local month.

-- A plan applies from `from_s` (Unix second, on the hour) until the next active one.
-- One that a plan starting earlier replaced is kept, with `replaced_ms`.
CREATE TABLE plan_history (
    id          INTEGER PRIMARY KEY,
    from_s      INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL,
    plan        TEXT NOT NULL,      -- JSON: default_site, sites, inventory
    replaced_ms INTEGER
);

CREATE TABLE recomputations (
    id     INTEGER PRIMARY KEY,
    at_ms  INTEGER NOT NULL,
    from_s INTEGER NOT NULL,
    rows   INTEGER NOT NULL
);

-- Per local month (store's time zone) a recomputation touched: rows, figures before and
-- after, and the coefficients the rows had before (ids into `coefficients`, which keeps
-- every coefficient ever used).
CREATE TABLE recomputed_months (
    recomputation_id     INTEGER NOT NULL REFERENCES recomputations (id),
    month_s              INTEGER NOT NULL,
    rows                 INTEGER NOT NULL,
    before_facility_uj   INTEGER NOT NULL,
    before_location_ug   INTEGER NOT NULL,
    before_market_ug     INTEGER NOT NULL,
    before_embodied_ug   INTEGER NOT NULL,
    before_cost_ueur     INTEGER NOT NULL,
    after_facility_uj    INTEGER NOT NULL,
    after_location_ug    INTEGER NOT NULL,
    after_market_ug      INTEGER NOT NULL,
    after_embodied_ug    INTEGER NOT NULL,
    after_cost_ueur      INTEGER NOT NULL,
    coefficients_before  TEXT NOT NULL,   -- ids, comma-separated
    PRIMARY KEY (recomputation_id, month_s)
);
