-- Empreinte collector store, version 7: the amortised hardware cost (a host's purchase
-- price spread over its amortisation period), kept apart from the electricity cost.
-- Money is integer micro-euros (ueur).

-- Every amortisation that produced a cost, once: the host, its purchase price, the
-- period in hours (years × 8760), the first local day ('' when not given), the source.
CREATE TABLE hardware_rates (
    id           INTEGER PRIMARY KEY,
    host         TEXT NOT NULL,
    price_ueur   INTEGER NOT NULL,
    period_hours INTEGER NOT NULL,
    purchased_on TEXT NOT NULL,
    source       TEXT NOT NULL,
    UNIQUE (host, price_ueur, period_hours, purchased_on, source)
);

-- The amortised cost of the time a host reported, per hour, host and project (shared by
-- energy between the host's projects), with the site and the rate that produced it.
CREATE TABLE hardware_cost_hourly (
    hour_s    INTEGER NOT NULL,
    host      TEXT NOT NULL,
    project   TEXT NOT NULL,
    rate_id   INTEGER NOT NULL REFERENCES hardware_rates (id),
    site      TEXT NOT NULL,
    cost_ueur INTEGER NOT NULL,
    PRIMARY KEY (hour_s, host, project, rate_id)
) WITHOUT ROWID;

-- All-time sums of hardware_cost_hourly per site and project (the Prometheus counters).
CREATE TABLE hardware_cost_totals (
    site      TEXT NOT NULL,
    project   TEXT NOT NULL,
    cost_ueur INTEGER NOT NULL,
    PRIMARY KEY (site, project)
) WITHOUT ROWID;
