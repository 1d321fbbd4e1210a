//! The corrections table, `ip_service_overrides`, read whole: what memory
//! mode holds and what an import of corrections compares with.

use std::net::IpAddr;
use std::time::SystemTime;

use tokio_postgres::GenericClient;

use super::StoreError;
use crate::data::corrections::Correction;
use crate::data::index::Version;
use crate::domain::{Place, TableLang, PLACE_COLUMNS};

/// The table's name, as the import history and NOTIFY payloads give it.
pub const OVERRIDES: &str = "ip_service_overrides";

/// The place columns, in `PLACE_COLUMNS` order.
pub fn place_columns(prefix: &str) -> String {
    PLACE_COLUMNS
        .iter()
        .map(|column| format!("{prefix}{}", column.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every correction, expired or not, by language and address; and the
/// latest successful import of them, which versions what was read.
pub async fn load_corrections(client: &impl GenericClient) -> Result<(Vec<Correction>, CorrectionsImport), StoreError> {
    let sql = format!(
        "SELECT start_ip, end_ip, lang, {}, reason, source, created_at, expires_at \
         FROM {OVERRIDES} ORDER BY lang, start_ip",
        place_columns("")
    );
    let rows = client.query(&sql, &[]).await?;
    let mut corrections = Vec::with_capacity(rows.len());
    for row in rows {
        let lang: &str = row.try_get(2)?;
        let lang = TableLang::ALL
            .into_iter()
            .find(|l| l.as_str() == lang)
            .ok_or_else(|| StoreError::Invalid(format!("a correction in language {lang:?}")))?;
        let mut values = [""; 8];
        for (i, value) in values.iter_mut().enumerate() {
            *value = row.try_get(3 + i)?;
        }
        let at = 3 + PLACE_COLUMNS.len();
        corrections.push(Correction {
            start: row.try_get::<_, IpAddr>(0)?,
            end: row.try_get::<_, IpAddr>(1)?,
            lang,
            place: Place::from_columns(values),
            reason: row.try_get(at)?,
            source: row.try_get(at + 1)?,
            created_at: Some(row.try_get::<_, SystemTime>(at + 2)?),
            expires_at: row.try_get(at + 3)?,
        });
    }
    Ok((corrections, corrections_import(client).await?))
}

/// The latest successful import of corrections: its id and when it
/// finished; `None` before the first.
pub type CorrectionsImport = Option<(i64, Option<SystemTime>)>;

/// The latest successful import of corrections.
pub async fn corrections_import(client: &impl GenericClient) -> Result<CorrectionsImport, StoreError> {
    Ok(client
        .query_opt(
            "SELECT id, finished_at FROM ip_service_imports WHERE table_name = $1 AND outcome = 'succeeded' \
             ORDER BY id DESC LIMIT 1",
            &[&OVERRIDES],
        )
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

/// The version memory mode gives corrections read after `import`.
pub fn corrections_version(import: CorrectionsImport) -> Version {
    Version::Postgres {
        relation: 0,
        import_id: import.map(|(id, _)| id),
    }
}
