//! Process-wide bounds on the bytes connections hold for their peers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A budget counts bytes in units of this many.
const UNIT: usize = 1024;

/// Bytes that all connections together may hold, shared out on demand,
/// first come first served.
#[derive(Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    /// The most units one holding may have: a request for more than the
    /// whole budget waits for all of it rather than for ever.
    capacity: usize,
    /// Connections waiting for room.
    waiting: Arc<AtomicUsize>,
}

/// Bytes one connection holds of a [`Budget`]; given back when dropped.
#[derive(Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl Held {
    fn units(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    fn add(&mut self, more: OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(held) => held.merge(more),
            None => self.0 = Some(more),
        }
    }

    /// Gives back all but what covers `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT);
        if let Some(held) = &mut self.0 {
            if keep == 0 {
                self.0 = None;
            } else if held.num_permits() > keep {
                drop(held.split(held.num_permits() - keep));
            }
        }
    }

    /// Gives everything back.
    pub fn release(&mut self) {
        self.0 = None;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let capacity = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            units: Arc::new(Semaphore::new(capacity)),
            capacity,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Units to cover `bytes`, beyond what `held` has already.
    fn shortfall(&self, held: &Held, bytes: usize) -> Option<u32> {
        let needed = bytes.div_ceil(UNIT).min(self.capacity);
        let missing = needed.checked_sub(held.units()).filter(|&n| n > 0)?;
        // The capacity is at most Semaphore::MAX_PERMITS, below u32::MAX.
        Some(missing as u32)
    }

    /// Grows `held` to cover `bytes`, waiting while others hold the rest.
    pub async fn grow(&self, held: &mut Held, bytes: usize) {
        let Some(missing) = self.shortfall(held, bytes) else {
            return;
        };
        let _waiting = Waiting::new(&self.waiting);
        // The semaphore is never closed.
        if let Ok(more) = self.units.clone().acquire_many_owned(missing).await {
            held.add(more);
        }
    }

    /// Whether some connection is waiting for room.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }
}

/// Counts a waiter for as long as it waits, cancelled or not.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn holdings_grow_to_the_budget_and_waiters_are_counted() {
        let budget = Budget::new(10 * UNIT);
        let mut first = Held::default();
        budget.grow(&mut first, 6 * UNIT).await;
        let mut second = Held::default();
        let room = tokio::time::timeout(Duration::from_secs(5), budget.grow(&mut second, 4 * UNIT));
        room.await.expect("4 units are left");
        assert_eq!(second.units(), 4);
        assert!(!budget.contended());

        // Asking for more than the whole budget waits for all of it.
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut third = Held::default();
                budget.grow(&mut third, 100 * UNIT).await;
                third.units()
            })
        };
        while !budget.contended() {
            tokio::task::yield_now().await;
        }
        first.shrink_to(UNIT + 1);
        assert_eq!(first.units(), 2);
        tokio::task::yield_now().await;
        assert!(budget.contended(), "6 of 10 units are still held");
        first.release();
        second.release();
        assert_eq!(waiter.await.unwrap(), 10);
        assert!(!budget.contended());
    }
}
