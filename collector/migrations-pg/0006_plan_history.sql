-- Empreinte collector store on PostgreSQL: the configuration history (issue 16), as in
-- collector/migrations/0006_plan_history.sql. The plan in force (sites, zones, PUE, market factors,
-- tariffs, inventory) with the instant it applies from, and every recomputation of stored
-- hours with the figures before and after, per local month.

-- A plan applies from `from_s` (Unix second, on the hour) until the next active one.
-- One that a plan starting earlier replaced is kept, with `replaced_ms`.
CREATE TABLE plan_history (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_s      BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    plan        TEXT NOT NULL,      -- JSON: default_site, sites, inventory
    replaced_ms BIGINT
);

CREATE TABLE recomputations (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms  BIGINT NOT NULL,
    from_s BIGINT NOT NULL,
    rows   BIGINT NOT NULL
);

-- Per local month (store's time zone) a recomputation touched: rows, figures before and
-- after, and the coefficients the rows had before (ids into `coefficients`, which keeps
-- every coefficient ever used).
CREATE TABLE recomputed_months (
    recomputation_id     BIGINT NOT NULL REFERENCES recomputations (id),
    month_s              BIGINT NOT NULL,
    rows                 BIGINT NOT NULL,
    before_facility_uj   BIGINT NOT NULL,
    before_location_ug   BIGINT NOT NULL,
    before_market_ug     BIGINT NOT NULL,
    before_embodied_ug   BIGINT NOT NULL,
    before_cost_ueur     BIGINT NOT NULL,
    after_facility_uj    BIGINT NOT NULL,
    after_location_ug    BIGINT NOT NULL,
    after_market_ug      BIGINT NOT NULL,
    after_embodied_ug    BIGINT NOT NULL,
    after_cost_ueur      BIGINT NOT NULL,
    coefficients_before  TEXT NOT NULL,   -- ids, comma-separated
    PRIMARY KEY (recomputation_id, month_s)
);
