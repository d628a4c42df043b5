-- Empreinte collector store, version 2: duplicate detection in O(runs), the power bound
-- per host and hour, daily and monthly rollups maintained at ingest.

-- Every agent run: the highest sequence number stored and, below it, the holes (numbers
-- not stored yet: a batch arriving out of order, or dropped by the agent's spool). A
-- batch is new when its seq is above `hwm` or inside a hole; otherwise it was stored.
CREATE TABLE runs (
    agent_id    TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    hwm         INTEGER NOT NULL,
    stored_uj   INTEGER NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_ms     INTEGER NOT NULL,
    PRIMARY KEY (agent_id, run_id)
) WITHOUT ROWID;

CREATE TABLE run_holes (
    agent_id  TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    from_seq  INTEGER NOT NULL,
    to_seq    INTEGER NOT NULL,       -- inclusive
    PRIMARY KEY (agent_id, run_id, from_seq)
) WITHOUT ROWID;

-- The batch names of version 1 become runs (their seqs were 1, 2, 3… without gaps only
-- if nothing was dropped: every missing number below the highest becomes a hole).
INSERT INTO runs (agent_id, run_id, hwm, stored_uj, first_ms, last_ms)
    SELECT agent_id, run_id, MAX(seq), SUM(energy_uj), MIN(received_ms), MAX(received_ms)
    FROM batches GROUP BY agent_id, run_id;
INSERT INTO run_holes (agent_id, run_id, from_seq, to_seq)
    SELECT agent_id, run_id, prev + 1, seq - 1 FROM (
        SELECT agent_id, run_id, seq,
               COALESCE(LAG(seq) OVER (PARTITION BY agent_id, run_id ORDER BY seq), 0) AS prev
        FROM batches)
    WHERE seq > prev + 1;
DROP TABLE batches;

-- A row's facility energy (energy × PUE, rounded once), filled by the collector.
ALTER TABLE footprint_hourly ADD COLUMN facility_uj INTEGER NOT NULL DEFAULT 0;

-- Energy per host and hour, all projects and components: bounded by
-- max_host_power_watts × 1 h across batches.
CREATE TABLE host_hours (
    host      TEXT NOT NULL,
    hour_s    INTEGER NOT NULL,
    energy_uj INTEGER NOT NULL,
    PRIMARY KEY (host, hour_s)
) WITHOUT ROWID;
INSERT INTO host_hours (host, hour_s, energy_uj)
    SELECT host, hour_s, SUM(energy_uj) FROM footprint_hourly GROUP BY host, hour_s;

-- Rollups of footprint_hourly by local day and local month of the time zone in
-- store_meta ('rollup_timezone'); `day_s`/`month_s` are the Unix second where the local
-- day or month starts. Every column is the exact sum of the hourly rows below it (a
-- row's facility energy is its energy × PUE rounded once, as the report does). Filled
-- from the hourly rows by the collector when the time zone is set or changes.
CREATE TABLE footprint_daily (
    day_s            INTEGER NOT NULL,
    host             TEXT NOT NULL,
    project          TEXT NOT NULL,
    component        TEXT NOT NULL,
    source           TEXT NOT NULL,
    site             TEXT NOT NULL,
    zone             TEXT NOT NULL,
    energy_uj        INTEGER NOT NULL,
    facility_uj      INTEGER NOT NULL,
    location_ug      INTEGER NOT NULL,
    market_ug        INTEGER NOT NULL,   -- market-based, the location figure where no contract
    embodied_ug      INTEGER NOT NULL,
    PRIMARY KEY (day_s, host, project, component, source, site, zone)
) WITHOUT ROWID;

CREATE TABLE footprint_monthly (
    month_s          INTEGER NOT NULL,
    host             TEXT NOT NULL,
    project          TEXT NOT NULL,
    component        TEXT NOT NULL,
    source           TEXT NOT NULL,
    site             TEXT NOT NULL,
    zone             TEXT NOT NULL,
    energy_uj        INTEGER NOT NULL,
    facility_uj      INTEGER NOT NULL,
    location_ug      INTEGER NOT NULL,
    market_ug        INTEGER NOT NULL,
    embodied_ug      INTEGER NOT NULL,
    PRIMARY KEY (month_s, host, project, component, source, site, zone)
) WITHOUT ROWID;

-- How many hourly rows of a local day use a coefficient (for "coefficients used"
-- without reading the hourly rows).
CREATE TABLE coefficient_use (
    day_s   INTEGER NOT NULL,
    coef_id INTEGER NOT NULL REFERENCES coefficients (id),
    rows    INTEGER NOT NULL,
    PRIMARY KEY (day_s, coef_id)
) WITHOUT ROWID;

-- Hours in which a zone has footprint rows (for the intensity series a report used).
CREATE TABLE zone_hours (
    zone   TEXT NOT NULL,
    hour_s INTEGER NOT NULL,
    PRIMARY KEY (zone, hour_s)
) WITHOUT ROWID;
INSERT INTO zone_hours (zone, hour_s) SELECT DISTINCT zone, hour_s FROM footprint_hourly;

-- Facts about the store itself (the rollups' time zone).
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
