-- Empreinte collector store on PostgreSQL, version 3: the inference servers' requests and
-- tokens (wire v2) and the energy of the records that carry a model, as the SQLite store's
-- collector/migrations/0003_inference.sql (the same tables, in PostgreSQL's types). Both
-- are written in the transaction of the push they came with (store/pg/inference.rs), so
-- they are stored exactly once with their batch.

-- Requests and tokens per hour, host, project and model. A count is NULL when no record
-- of the hour counted it (the server does not count it), never 0 for "unknown".
CREATE TABLE inference_hourly (
    hour_s              BIGINT NOT NULL,
    host                TEXT COLLATE "C" NOT NULL,
    project             TEXT COLLATE "C" NOT NULL,
    model               TEXT COLLATE "C" NOT NULL,
    server_kinds        BIGINT NOT NULL,  -- bit set of the server kinds seen (1 vllm, 2 sglang, 4 tgi, 8 triton, 16 llamacpp, 32 litellm)
    requests            BIGINT,
    input_tokens        BIGINT,
    cached_input_tokens BIGINT,
    output_tokens       BIGINT,
    span_ms             BIGINT NOT NULL,  -- time the records cover in the hour
    gap_ms              BIGINT NOT NULL,  -- of it, time the server could not be scraped
    resets              BIGINT NOT NULL,  -- counter resets (server restarts) seen
    allocated           BOOLEAN NOT NULL, -- the model's energy was split from a process serving several
    PRIMARY KEY (hour_s, host, project, model)
);

-- Energy per hour, host, project, model and component: the energy records that carry a
-- model (a part of the project's energy in footprint_hourly).
CREATE TABLE model_energy_hourly (
    hour_s    BIGINT NOT NULL,
    host      TEXT COLLATE "C" NOT NULL,
    project   TEXT COLLATE "C" NOT NULL,
    model     TEXT COLLATE "C" NOT NULL,
    component TEXT COLLATE "C" NOT NULL,
    energy_uj BIGINT NOT NULL,
    PRIMARY KEY (hour_s, host, project, model, component)
);

-- All-time counts and model-tagged energy per project and model (the collector's
-- Prometheus counters); a count stays NULL until some record counted it. Rows shared by
-- every agent: written in key order by each push.
CREATE TABLE inference_totals (
    project             TEXT COLLATE "C" NOT NULL,
    model               TEXT COLLATE "C" NOT NULL,
    energy_uj           BIGINT NOT NULL DEFAULT 0,
    requests            BIGINT,
    input_tokens        BIGINT,
    cached_input_tokens BIGINT,
    output_tokens       BIGINT,
    PRIMARY KEY (project, model)
);
