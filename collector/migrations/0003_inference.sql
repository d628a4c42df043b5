-- Empreinte collector store, version 3: the inference servers' requests and tokens (wire
-- v2), and the energy of the records that carry a model. Both are written in the
-- transaction of the batch they came with, so they are stored exactly once with it.

-- Requests and tokens per hour, host, project and model: the sum of the inference
-- records of stored batches, each split over the hours it spans in proportion to time
-- (exact integers). A count is NULL when no record of the hour counted it (the server
-- does not count it), never 0 for "unknown".
CREATE TABLE inference_hourly (
    hour_s              INTEGER NOT NULL,
    host                TEXT NOT NULL,
    project             TEXT NOT NULL,
    model               TEXT NOT NULL,
    server_kinds        INTEGER NOT NULL,  -- bit set of the server kinds seen (1 vllm, 2 sglang, 4 tgi, 8 triton, 16 llamacpp, 32 litellm)
    requests            INTEGER,
    input_tokens        INTEGER,
    cached_input_tokens INTEGER,
    output_tokens       INTEGER,
    span_ms             INTEGER NOT NULL,  -- time the records cover in the hour
    gap_ms              INTEGER NOT NULL,  -- of it, time the server could not be scraped
    resets              INTEGER NOT NULL,  -- counter resets (server restarts) seen
    allocated           INTEGER NOT NULL,  -- 1: the model's energy was split from a process serving several
    PRIMARY KEY (hour_s, host, project, model)
) WITHOUT ROWID;

-- Energy per hour, host, project, model and component: the energy records that carry a
-- model (a part of the project's energy in footprint_hourly, split over hours the same way).
CREATE TABLE model_energy_hourly (
    hour_s    INTEGER NOT NULL,
    host      TEXT NOT NULL,
    project   TEXT NOT NULL,
    model     TEXT NOT NULL,
    component TEXT NOT NULL,
    energy_uj INTEGER NOT NULL,
    PRIMARY KEY (hour_s, host, project, model, component)
) WITHOUT ROWID;

-- All-time counts and model-tagged energy per project and model (the collector's
-- Prometheus counters are read from them); a count stays NULL until some record counted it.
CREATE TABLE inference_totals (
    project             TEXT NOT NULL,
    model               TEXT NOT NULL,
    energy_uj           INTEGER NOT NULL DEFAULT 0,
    requests            INTEGER,
    input_tokens        INTEGER,
    cached_input_tokens INTEGER,
    output_tokens       INTEGER,
    PRIMARY KEY (project, model)
) WITHOUT ROWID;
