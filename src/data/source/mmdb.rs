//! Keeping the MaxMind database fresh: a file replaced (by a rename) or
//! rewritten is opened again and swapped in; one that does not open is
//! logged once and the open one keeps answering.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{error, info};

use super::refresh::{signature, Refresh, ToCheck};
use crate::data::index::FileSignature;
use crate::data::mmdb::{GeoDb, MaxMind, MmdbError};
use crate::metrics::{Metrics, Reload};

/// The mmdb file behind a [`MaxMind`], and the version last opened.
pub struct MmdbFile {
    path: PathBuf,
    seen: Option<FileSignature>,
    maxmind: MaxMind,
    metrics: Arc<Metrics>,
}

/// What a check for a replaced file found.
enum FileCheck {
    Unchanged,
    Replaced(Box<GeoDb>),
    /// The new file could not be used; the old one stays.
    Failed,
}

impl MmdbFile {
    /// Opens `path`, remembering its version so that a replacement is
    /// noticed; with `networks`, each version's networks are also
    /// held as tables ([`MaxMind::with_networks`]).
    pub fn open(path: &Path, metrics: Arc<Metrics>, networks: bool) -> Result<MmdbFile, MmdbError> {
        let seen = signature(path).ok();
        let maxmind = MaxMind::open(path)?;
        Ok(MmdbFile {
            path: path.to_owned(),
            seen,
            maxmind: maxmind.with_networks(networks),
            metrics,
        })
    }

    /// The live database this file feeds.
    pub fn maxmind(&self) -> &MaxMind {
        &self.maxmind
    }
}

/// Opens the file at `path` if it is not the version `seen`, updating it.
fn reopen_if_replaced(path: &Path, seen: &mut Option<FileSignature>) -> FileCheck {
    let now = match signature(path) {
        Ok(now) => now,
        Err(err) => {
            // Between a delete and a rename, or gone: keep what we have.
            if seen.take().is_some() {
                error!(path = %path.display(), error = %err, "MaxMind database is missing; still serving the open one");
            }
            return FileCheck::Failed;
        }
    };
    if *seen == Some(now) {
        return FileCheck::Unchanged;
    }
    *seen = Some(now);
    match GeoDb::open(path) {
        Ok(db) => {
            info!(path = %path.display(), build = %db.describe(), "MaxMind database reopened");
            FileCheck::Replaced(Box::new(db))
        }
        Err(err) => {
            error!(error = %err, "the replaced MaxMind database does not open; still serving the previous one");
            FileCheck::Failed
        }
    }
}

impl Refresh for MmdbFile {
    async fn check(&mut self, _which: ToCheck) -> bool {
        let path = self.path.clone();
        let mut seen = self.seen;
        // Opening maps and checks the file: keep it off the workers.
        let Ok((reopened, seen)) =
            tokio::task::spawn_blocking(move || (reopen_if_replaced(&path, &mut seen), seen)).await
        else {
            return false;
        };
        self.seen = seen;
        match reopened {
            FileCheck::Replaced(db) => {
                self.maxmind.replace(*db);
                self.metrics.reloaded(Reload::Mmdb, true);
                true
            }
            FileCheck::Failed => {
                self.metrics.reloaded(Reload::Mmdb, false);
                false
            }
            FileCheck::Unchanged => false,
        }
    }
}
