//! The loop behind every background check for new data: on a timer, and
//! at once when woken (SIGHUP).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Runs `check` every `every` and whenever `wake` changes, until `stop` is
/// cancelled or the waking side is gone. The first run is one period in:
/// whatever was loaded at start-up is fresh.
pub async fn every_or_when_woken<F>(
    every: Duration,
    mut wake: watch::Receiver<u64>,
    stop: CancellationToken,
    mut check: impl FnMut() -> F,
) where
    F: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
            changed = wake.changed() => if changed.is_err() { return },
        }
        check().await;
    }
}
