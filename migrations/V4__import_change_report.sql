-- What each import changed (or would have): the report computed before
-- the swap. An import refused by --max-change is recorded as 'refused'.
ALTER TABLE ip_service_imports ADD COLUMN change_report jsonb;
ALTER TABLE ip_service_imports DROP CONSTRAINT ip_service_imports_outcome_check;
ALTER TABLE ip_service_imports ADD CONSTRAINT ip_service_imports_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'failed', 'interrupted', 'refused'));
