-- Empreinte collector store, version 1.
-- Energy is integer microjoules (uj), emissions integer micrograms CO2e (ug), times
-- Unix seconds (s) or milliseconds (ms), UTC.

-- Agents seen, with the state of their spool at their last push.
CREATE TABLE agents (
    agent_id          TEXT PRIMARY KEY NOT NULL,
    hostname          TEXT NOT NULL,
    agent_version     TEXT NOT NULL,
    first_push_ms     INTEGER NOT NULL,
    last_push_ms      INTEGER NOT NULL,
    last_batch_end_ms INTEGER,
    spool_batches     INTEGER NOT NULL DEFAULT 0,
    spool_bytes       INTEGER NOT NULL DEFAULT 0,
    spool_oldest_ms   INTEGER,
    spool_dropped     INTEGER NOT NULL DEFAULT 0
);

-- Every batch stored, by its name: a replay finds its name here and is ignored.
CREATE TABLE batches (
    agent_id    TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    energy_uj   INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (agent_id, run_id, seq)
) WITHOUT ROWID;

-- The latest cumulative counters of each agent run (to check that nothing is missing).
CREATE TABLE run_counters (
    agent_id  TEXT NOT NULL,
    run_id    TEXT NOT NULL,
    project   TEXT NOT NULL,
    component TEXT NOT NULL,
    source    TEXT NOT NULL,
    total_uj  INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    PRIMARY KEY (agent_id, run_id, project, component, source)
) WITHOUT ROWID;

-- Every coefficient ever used, once: what it is, its value, source and year, and
-- whether it is a built-in default rather than the organisation's own.
CREATE TABLE coefficients (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,     -- grid_intensity | pue | market_factor | embodied
    subject    TEXT NOT NULL,     -- zone, site or host
    value      REAL NOT NULL,
    unit       TEXT NOT NULL,
    source     TEXT NOT NULL,
    year       INTEGER,
    is_default INTEGER NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    UNIQUE (kind, subject, value, unit, source, year, is_default, detail)
);

-- Imported intensity time series, one row per import.
CREATE TABLE intensity_imports (
    id          INTEGER PRIMARY KEY,
    zone        TEXT NOT NULL,
    source      TEXT NOT NULL,
    kind        TEXT NOT NULL,    -- lifecycle | direct
    file        TEXT NOT NULL,
    imported_ms INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    first_s     INTEGER NOT NULL,
    last_s      INTEGER NOT NULL
);

-- Hourly mean grid intensity from imported series (time-weighted over the hour).
CREATE TABLE intensity_hourly (
    zone       TEXT NOT NULL,
    hour_s     INTEGER NOT NULL,
    g_per_kwh  REAL NOT NULL,
    covered    REAL NOT NULL,     -- share of the hour the series covers
    import_id  INTEGER NOT NULL REFERENCES intensity_imports (id),
    PRIMARY KEY (zone, hour_s)
) WITHOUT ROWID;

-- The footprint: energy per hour, host, project, component and source, with the
-- coefficients that turned it into emissions.
CREATE TABLE footprint_hourly (
    hour_s              INTEGER NOT NULL,
    host                TEXT NOT NULL,
    project             TEXT NOT NULL,
    component           TEXT NOT NULL,
    source              TEXT NOT NULL,
    site                TEXT NOT NULL,
    zone                TEXT NOT NULL,
    energy_uj           INTEGER NOT NULL,
    pue                 REAL NOT NULL,
    pue_coef            INTEGER NOT NULL REFERENCES coefficients (id),
    intensity_g_per_kwh REAL NOT NULL,
    intensity_coef      INTEGER REFERENCES coefficients (id),        -- a yearly factor…
    intensity_import    INTEGER REFERENCES intensity_imports (id),   -- …or an imported series
    location_co2e_ug    INTEGER NOT NULL,
    market_g_per_kwh    REAL,
    market_coef         INTEGER REFERENCES coefficients (id),
    market_co2e_ug      INTEGER,
    embodied_co2e_ug    INTEGER NOT NULL DEFAULT 0,
    embodied_coef       INTEGER REFERENCES coefficients (id),
    PRIMARY KEY (hour_s, host, project, component, source)
) WITHOUT ROWID;
CREATE INDEX footprint_by_project ON footprint_hourly (project, hour_s);
CREATE INDEX footprint_by_zone ON footprint_hourly (zone, hour_s);

-- Access tokens: agents push with theirs, readers read with theirs. Only a hash of the
-- secret is kept.
CREATE TABLE tokens (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('agent', 'read')),
    agent_id   TEXT,
    secret_sha256 BLOB NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER,
    CHECK ((kind = 'agent') = (agent_id IS NOT NULL))
);
