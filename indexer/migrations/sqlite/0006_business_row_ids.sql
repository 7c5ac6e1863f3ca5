-- UBackup's row id of each business (its MySQL `business.id`), kept by `registry import`:
-- the `backup_instance` table names businesses by that id, so a backup_instance export
-- imported after the business export (three files, three commands) resolves against the
-- catalog. NULL for businesses added here (pages, API, registry files without row ids).
ALTER TABLE businesses ADD COLUMN legacy_row_id INTEGER;
CREATE UNIQUE INDEX businesses_legacy_row_id ON businesses (legacy_row_id)
    WHERE legacy_row_id IS NOT NULL;
