-- Empreinte collector store, version 5: euros. Money is integer micro-euros (ueur).

-- Every electricity tariff rate that produced a cost, once: the site, the price, the band
-- (flat, peak, off_peak), the first local day of the tariff ('' when it always applied),
-- its off-peak hours ('' for a flat tariff) and its source.
CREATE TABLE tariffs (
    id                 INTEGER PRIMARY KEY,
    site               TEXT NOT NULL,
    price_ueur_per_kwh INTEGER NOT NULL,
    band               TEXT NOT NULL CHECK (band IN ('flat', 'peak', 'off_peak')),
    valid_from         TEXT NOT NULL,
    off_peak_hours     TEXT NOT NULL,
    source             TEXT NOT NULL,
    UNIQUE (site, price_ueur_per_kwh, band, valid_from, off_peak_hours, source)
);

-- The cost of the facility energy (PUE included) per hour, site and project, with the
-- tariff rate that produced it. `facility_uj` is the sum of the hourly footprint rows'
-- facility energy; `cost_ueur` is facility_uj × price, rounded once.
CREATE TABLE cost_hourly (
    hour_s      INTEGER NOT NULL,
    site        TEXT NOT NULL,
    project     TEXT NOT NULL,
    tariff_id   INTEGER NOT NULL REFERENCES tariffs (id),
    facility_uj INTEGER NOT NULL,
    cost_ueur   INTEGER NOT NULL,
    PRIMARY KEY (hour_s, site, project, tariff_id)
) WITHOUT ROWID;

-- All-time sums of cost_hourly per site and project (the Prometheus counters).
CREATE TABLE cost_totals (
    site        TEXT NOT NULL,
    project     TEXT NOT NULL,
    facility_uj INTEGER NOT NULL,
    cost_ueur   INTEGER NOT NULL,
    PRIMARY KEY (site, project)
) WITHOUT ROWID;
