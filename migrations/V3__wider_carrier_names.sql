-- Real carrier names run past 100 characters (the qqwry data has
-- institution names of up to 138). The importer refuses rather than cuts
-- them, so the column widens; this changes only the type's limit, not a
-- row, in PostgreSQL.
ALTER TABLE ip_service_cn ALTER COLUMN carrier_name TYPE varchar(255);
ALTER TABLE ip_service_en ALTER COLUMN carrier_name TYPE varchar(255);
ALTER TABLE ip_service_v6 ALTER COLUMN carrier_name TYPE varchar(255);
