-- qidlab measurement store (SQLite, WAL). One row per measured thing; every
-- measurement row carries its config, library versions and code revision.
-- Losses are cross-entropy in nats per model token; N counts non-embedding parameters.
PRAGMA journal_mode = WAL;

CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS checkpoints (
  id             INTEGER PRIMARY KEY,
  suite          TEXT NOT NULL,
  model          TEXT NOT NULL,
  step           INTEGER NOT NULL,
  path           TEXT NOT NULL,
  n_params       INTEGER NOT NULL CHECK (n_params > 0),        -- non-embedding N
  n_params_total INTEGER NOT NULL CHECK (n_params_total >= n_params),
  tokens         INTEGER NOT NULL CHECK (tokens >= 0),          -- D seen by this checkpoint
  content_hash   TEXT NOT NULL,
  run            TEXT,                                          -- which training run (seed) of the model; NULL: one run
  UNIQUE (suite, model, step)
);

CREATE TABLE IF NOT EXISTS eval_sets (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL,
  content_hash TEXT NOT NULL UNIQUE,
  n_docs       INTEGER NOT NULL CHECK (n_docs > 0),
  source_json  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS measurements (
  id            INTEGER PRIMARY KEY,
  checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
  eval_set_id   INTEGER NOT NULL REFERENCES eval_sets(id),
  method        TEXT NOT NULL,               -- 'none' for the 16-bit reference
  bits          REAL NOT NULL,
  group_size    INTEGER,
  exp_bits      INTEGER,
  man_bits      INTEGER,
  block_size    INTEGER,
  config_json   TEXT NOT NULL,
  config_hash   TEXT NOT NULL,
  loss16        REAL NOT NULL,
  loss          REAL NOT NULL,
  qid           REAL NOT NULL,
  qid_ci_low    REAL,
  qid_ci_high   REAL,
  n_tokens      INTEGER NOT NULL,
  versions_json TEXT NOT NULL,
  code_revision TEXT NOT NULL,
  quantization_json TEXT,                     -- what the quantizer reported (GPTQ: damping per layer, fallbacks)
  UNIQUE (checkpoint_id, eval_set_id, config_hash)
);

-- per-document scores, so QiD gets a paired bootstrap CI over documents
CREATE TABLE IF NOT EXISTS doc_losses (
  measurement_id INTEGER NOT NULL REFERENCES measurements(id),
  doc_index      INTEGER NOT NULL,
  nll_sum        REAL NOT NULL,   -- nats, summed over the document's tokens
  n_tokens       INTEGER NOT NULL,
  n_bytes        INTEGER NOT NULL,
  PRIMARY KEY (measurement_id, doc_index)
);

CREATE TABLE IF NOT EXISTS fits (
  id          INTEGER PRIMARY KEY,
  law         TEXT NOT NULL,
  query_json  TEXT NOT NULL,     -- which measurements, grouping, options
  result_json TEXT NOT NULL,     -- the `qidlab fit --json` document
  versions_json TEXT NOT NULL,
  code_revision TEXT NOT NULL
);

-- downstream tasks (lm-evaluation-harness) of the 16-bit and each quantized model: one row per
-- checkpoint x config x task x metric; delta = value - value16 is the task analogue of QiD
CREATE TABLE IF NOT EXISTS task_results (
  id            INTEGER PRIMARY KEY,
  checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
  task          TEXT NOT NULL,               -- lm_eval task (or subtask) name
  metric        TEXT NOT NULL,               -- e.g. acc, acc_norm; "metric,filter" unless the filter is none
  method        TEXT NOT NULL,               -- 'none' for the 16-bit model
  bits          REAL NOT NULL,
  group_size    INTEGER,
  exp_bits      INTEGER,
  man_bits      INTEGER,
  block_size    INTEGER,
  config_json   TEXT NOT NULL,               -- quantization (+ calibration) and the task's identity
  config_hash   TEXT NOT NULL,
  value         REAL NOT NULL,
  stderr        REAL,
  value16       REAL NOT NULL,               -- the 16-bit model's value of the same task and metric
  delta         REAL NOT NULL,               -- value - value16
  higher_is_better INTEGER,                  -- 1, 0, or NULL when lm_eval does not say
  n_docs        INTEGER,
  versions_json TEXT NOT NULL,
  code_revision TEXT NOT NULL,
  UNIQUE (checkpoint_id, task, metric, config_hash)
);

-- the canonical table of the data contract (docs/architecture.md)
CREATE VIEW IF NOT EXISTS canonical AS
SELECT c.n_params, c.n_params_total, c.tokens, m.bits, m.group_size, m.exp_bits, m.man_bits,
       m.block_size, m.method, m.loss16, m.loss, m.qid, m.qid_ci_low, m.qid_ci_high,
       e.name AS eval_set, c.suite, c.model, c.step, c.run, c.path
FROM measurements m
JOIN checkpoints c ON c.id = m.checkpoint_id
JOIN eval_sets e ON e.id = m.eval_set_id
WHERE m.method != 'none';
