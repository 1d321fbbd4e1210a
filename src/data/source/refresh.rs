//! The one loop that keeps every source fresh: it checks on a timer, at
//! once on SIGHUP, and whenever the source itself says something changed
//! (a PostgreSQL notification). Each source only says how to listen and
//! how to check.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::data::index::FileSignature;
use crate::domain::Table;

/// What may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToCheck {
    /// Every table and the corrections.
    All,
    Table(Table),
    Corrections,
}

impl ToCheck {
    /// The tables to check.
    pub fn tables(self) -> Vec<Table> {
        match self {
            ToCheck::All => Table::ALL.to_vec(),
            ToCheck::Table(table) => vec![table],
            ToCheck::Corrections => Vec::new(),
        }
    }

    /// Whether the corrections are to be checked.
    pub fn corrections(self) -> bool {
        matches!(self, ToCheck::All | ToCheck::Corrections)
    }
}

/// A source that can be kept fresh.
pub trait Refresh: Send {
    /// Compares what `which` names with what is served, and swaps in
    /// whatever changed; a failure is logged and the old data keeps
    /// serving. Returns whether anything was swapped in.
    fn check(&mut self, which: ToCheck) -> impl Future<Output = bool> + Send;

    /// Gets ready to hear of changes (PostgreSQL: LISTENs again when it is
    /// due). Returns what may have changed while nobody listened.
    fn listen(&mut self) -> impl Future<Output = Option<ToCheck>> + Send {
        async { None }
    }

    /// Completes when the source announces a change (`Some`), or when it
    /// is time to [`listen`](Refresh::listen) again (`None`); never, for a
    /// source without announcements.
    fn announced(&mut self) -> impl Future<Output = Option<ToCheck>> + Send {
        std::future::pending()
    }
}

/// Keeps `source` fresh until `stop` is cancelled or the waking side
/// (SIGHUP) is gone: checks every `every`, when `wake` changes, and when
/// the source announces a change. The first timed check is one period in:
/// whatever was loaded at start-up is fresh.
pub async fn run(mut source: impl Refresh, every: Duration, mut wake: watch::Receiver<u64>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let missed = tokio::select! {
            () = stop.cancelled() => return,
            missed = source.listen() => missed,
        };
        let which = match missed {
            Some(which) => which,
            None => tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => ToCheck::All,
                changed = wake.changed() => match changed {
                    Ok(()) => ToCheck::All,
                    Err(_) => return,
                },
                announced = source.announced() => match announced {
                    Some(which) => which,
                    None => continue,
                },
            },
        };
        let swapped = tokio::select! {
            () = stop.cancelled() => return,
            swapped = source.check(which) => swapped,
        };
        if swapped {
            // The old data was freed in many small pieces.
            let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
        }
    }
}

/// The signature of the file at `path` now.
pub fn signature(path: &Path) -> std::io::Result<FileSignature> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(FileSignature {
        device: meta.dev(),
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.mtime(),
        modified_nanos: meta.mtime_nsec(),
    })
}
