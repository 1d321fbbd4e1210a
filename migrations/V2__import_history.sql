-- One row per import attempt. The live data of a table is the newest
-- 'succeeded' row's file; an import of the same SHA-256 is a no-op.
CREATE TABLE ip_service_imports (
    id          bigserial   PRIMARY KEY,
    table_name  text        NOT NULL,
    source_file text        NOT NULL,
    sha256      text        NOT NULL,
    format      text        NOT NULL,
    row_count   bigint,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text        NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted')),
    message     text        NOT NULL DEFAULT ''
);
CREATE INDEX ip_service_imports_live ON ip_service_imports (table_name, id DESC) WHERE outcome = 'succeeded';
