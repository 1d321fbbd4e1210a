//! File mode's refresh: a table whose data file is rewritten is read again
//! in the background and swapped in whole; a file that does not load is
//! logged and the table keeps what it had.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{DataFiles, ImportError};
use crate::domain::Table;
use crate::index::Tables;
use crate::metrics::{Metrics, Reload};

/// Keeps `tables` equal to what `files` give.
pub struct FileWatch {
    pub files: DataFiles,
    pub tables: Arc<Tables>,
    /// How often the files' modification times are compared.
    pub interval: Duration,
    pub metrics: Arc<Metrics>,
}

impl FileWatch {
    /// Checks the files every `interval` and whenever `wake` changes
    /// (SIGHUP), until `stop`.
    pub async fn run(self, wake: watch::Receiver<u64>, stop: CancellationToken) {
        if self.files.is_sample() {
            return;
        }
        crate::periodic::every_or_when_woken(self.interval, wake, stop, || self.reload_changed()).await;
    }

    /// The files as they are now, and the tables whose file changed.
    fn changed_files(&self) -> Result<(DataFiles, Vec<Table>), ImportError> {
        let files = self.files.rescanned()?;
        let changed = files.changed(|table| self.tables.snapshot(table).data_time)?;
        Ok((files, changed))
    }

    /// Reads again the tables whose file changed since it was loaded.
    async fn reload_changed(&self) {
        let (files, changed) = match self.changed_files() {
            Ok((_, changed)) if changed.is_empty() => return,
            Ok(found) => found,
            Err(err) => {
                warn!(error = %err, "the data files cannot be read; the tables keep their data");
                return;
            }
        };
        let wanted = changed.clone();
        // Parsing and indexing take seconds of CPU: keep them off the workers.
        let Ok(loaded) = tokio::task::spawn_blocking(move || files.load_only(&wanted)).await else {
            return;
        };
        match loaded {
            Ok(loaded) => {
                for (table, snapshot) in loaded.tables {
                    info!(
                        ?table,
                        ranges = snapshot.index.len(),
                        "table reloaded from its rewritten file"
                    );
                    self.tables.replace(table, snapshot);
                    self.metrics.reloaded(Reload::Table, true);
                }
                crate::index::release_free_memory();
            }
            Err(err) => {
                warn!(tables = ?changed, error = %err, "a rewritten data file does not load; its tables keep their data");
                self.metrics.reloaded(Reload::Table, false);
            }
        }
    }
}
