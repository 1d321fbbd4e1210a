-- The ranges an import removed from and added to the data it replaced,
-- so that a memory-mode instance still holding that data (the import's
-- base, named by its relation and import) applies them instead of reading
-- the whole table again. Kept only for the latest import of each table,
-- and only when the changes are small beside the table; base_relation is
-- NULL when none were kept. digest is the new data's TableDigest, which an
-- instance checks after applying them.
ALTER TABLE ip_service_imports
    ADD COLUMN base_relation bigint, ADD COLUMN base_import_id bigint, ADD COLUMN digest bigint;

CREATE TABLE ip_service_import_changes (
    import_id     bigint  NOT NULL REFERENCES ip_service_imports (id) ON DELETE CASCADE,
    added         boolean NOT NULL,
    start_ip      inet    NOT NULL,
    end_ip        inet    NOT NULL,
    country_code  text    NOT NULL,
    country_name  text    NOT NULL,
    province_code text    NOT NULL,
    province_name text    NOT NULL,
    city_code     text    NOT NULL,
    city_name     text    NOT NULL,
    district_name text    NOT NULL,
    carrier_name  text    NOT NULL
);
CREATE INDEX ip_service_import_changes_import ON ip_service_import_changes (import_id, added, start_ip);
