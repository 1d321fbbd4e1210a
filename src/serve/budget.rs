//! Process-wide bounds on the bytes connections hold for their peers, and
//! the task that gives memory back once a burst that held them is over.
//!
//! Request budgets serve their waiters smallest first, not first come first
//! served as tokio's `Semaphore` would: under FIFO, one peer waiting for
//! megabytes that a slow sender holds makes every later request for a
//! kilobyte wait too, and a few hundred slow senders lock out everyone at
//! no CPU cost. Smallest first was chosen over separate small and large
//! pools because it needs no size threshold to tune, and a request that
//! already holds most of what it needs is topped up first. A large waiter
//! can be passed over for as long as smaller ones keep the budget full; its
//! own deadline (the read timeout, the HTTP timeout) bounds that wait, and
//! holders that stop making progress give way (see the server's stall
//! rules). A request larger than any valid one is an attacker's anyway.
//!
//! The reply budget serves in arrival order ([`Order`]): its large waiters
//! are valid batches the server has accepted, and under smallest first the
//! replies of peers that never read, smaller and endlessly renewed, kept a
//! 10,000-address batch waiting past its client's timeout (seen in a soak).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

/// The order a [`Budget`] serves its waiters in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    SmallestFirst,
    Arrival,
}

/// Replies estimated larger than this take room in a reply budget before
/// their answers are built; smaller ones (up to about thirty addresses)
/// never wait, and hold at most this much each however long their peer
/// takes. Thrift and HTTP replies follow the same rules.
pub const SMALL_REPLY: usize = 16 * 1024;

/// What answering one address may hold at once, besides its input's
/// text: its encoded answer (about 250 bytes of Thrift, 400 of JSON, the
/// network's fields included), the answer itself and the input's `String`.
const ANSWER_COST: usize = 512;

/// An upper bound on what answering `addresses` from a request of
/// `request_len` bytes holds at once, for a reply budget: each input's
/// text is held at most three times (decoded, in an invalid input's error,
/// echoed in the reply).
pub fn reply_cost(addresses: usize, request_len: usize) -> usize {
    addresses
        .saturating_mul(ANSWER_COST)
        .saturating_add(request_len.saturating_mul(3))
}

/// How long a reply holding reply budget may make no progress, its peer
/// reading nothing, before it gives way to connections waiting for that
/// budget. Long enough that a reader its scheduler kept waiting is not
/// taken for one that stopped reading.
pub const STALL_GRACE: Duration = Duration::from_millis(250);

/// A budget counts bytes in units of this many.
const UNIT: usize = 1024;

/// Bytes that all connections together may hold, shared out on demand,
/// smallest request first.
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    order: Order,
    /// The most units one holding may have: a request for more than the
    /// whole budget waits for all of it rather than for ever.
    capacity: usize,
    /// Woken when a large holding is dropped unused, for
    /// [`return_freed_memory`].
    abandoned: Notify,
}

struct State {
    available: usize,
    /// The most units held at once since [`Budget::shrank_much`] last looked.
    peak_held: usize,
    next_ticket: u64,
    /// Waiters by [`WaitKey`], each with the units it is missing: the
    /// first is served first.
    waiters: BTreeMap<WaitKey, (usize, oneshot::Sender<()>)>,
}

/// A waiter's place: (rank, arrival), where the rank is the units missing
/// when serving smallest first, and 0 in arrival order.
type WaitKey = (usize, u64);

/// Bytes one connection holds of a [`Budget`]. Dropped while still
/// holding, it gives them back as abandoned: the connection went away, or
/// gave up, before it was done with them.
#[derive(Default)]
pub struct Reservation {
    budget: Option<Arc<Inner>>,
    units: usize,
}

impl Reservation {
    fn add(&mut self, inner: &Arc<Inner>, units: usize) {
        self.budget.get_or_insert_with(|| inner.clone());
        self.units += units;
    }

    /// Gives back all but what covers `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT);
        if let (Some(budget), true) = (&self.budget, self.units > keep) {
            budget.give_back(self.units - keep);
            self.units = keep;
        }
    }

    /// Gives everything back.
    pub fn release(&mut self) {
        self.shrink_to(0);
    }

    pub fn is_empty(&self) -> bool {
        self.units == 0
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            if self.units >= ABANDONED_TRIM_UNITS {
                budget.abandoned.notify_one();
            }
        }
        self.release();
    }
}

/// Abandoned holdings this large (256 KiB) have their memory given back
/// at once, not at the next look: slow senders that are closed and
/// replaced would otherwise leave their buffers resident, freed, in the
/// heap, on top of the live ones that the budget counts.
const ABANDONED_TRIM_UNITS: usize = 256;

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn give_back(&self, units: usize) {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.available += units;
        // Every waiter that now fits, smallest first. The units are the
        // waiter's from here on, whether or not it is still there to take
        // them: a waiter that has gone gives them back itself (`Wait`).
        while let Some(entry) = state.waiters.first_entry() {
            let wanted = entry.get().0;
            if wanted > state.available {
                break;
            }
            state.available -= wanted;
            let _ = entry.remove().1.send(());
        }
        state.note_peak(self.capacity);
    }
}

impl State {
    fn note_peak(&mut self, capacity: usize) {
        self.peak_held = self.peak_held.max(capacity - self.available);
    }
}

impl Budget {
    pub fn new(bytes: usize, order: Order) -> Budget {
        let capacity = bytes.div_ceil(UNIT).max(1);
        Budget {
            inner: Arc::new(Inner {
                order,
                state: Mutex::new(State {
                    available: capacity,
                    peak_held: 0,
                    next_ticket: 0,
                    waiters: BTreeMap::new(),
                }),
                capacity,
                abandoned: Notify::new(),
            }),
        }
    }

    /// Grows `held` to cover `bytes`, waiting while others hold the rest;
    /// returns whether it had to wait. Cancel-safe: a wait that is dropped
    /// takes nothing.
    pub async fn grow(&self, held: &mut Reservation, bytes: usize) -> bool {
        let needed = bytes.div_ceil(UNIT).min(self.inner.capacity);
        let Some(missing) = needed.checked_sub(held.units).filter(|&n| n > 0) else {
            return false;
        };
        let (key, granted) = {
            let mut state = self.inner.lock();
            // Smallest first, the waiters left are each larger than what is
            // available, so one that fits now passes no smaller one.
            let first = match self.inner.order {
                Order::SmallestFirst => true,
                Order::Arrival => state.waiters.is_empty(),
            };
            if first && state.available >= missing {
                state.available -= missing;
                state.note_peak(self.inner.capacity);
                drop(state);
                held.add(&self.inner, missing);
                return false;
            }
            let rank = match self.inner.order {
                Order::SmallestFirst => missing,
                Order::Arrival => 0,
            };
            let key = (rank, state.next_ticket);
            state.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            state.waiters.insert(key, (missing, tx));
            (key, rx)
        };
        let mut wait = Wait {
            inner: &self.inner,
            key,
            units: missing,
            done: false,
        };
        // The sender is only dropped after sending, or by `Wait` itself.
        let _ = granted.await;
        wait.done = true;
        held.add(&self.inner, missing);
        true
    }

    /// Whether some connection is waiting for room.
    pub fn contended(&self) -> bool {
        !self.inner.lock().waiters.is_empty()
    }

    /// Whether what is held now is at least [`TRIM_WORTH`] below the most
    /// held since the last call: a burst is over. Steady use, however
    /// large, is not.
    fn shrank_much(&self) -> bool {
        let mut state = self.inner.lock();
        let held = self.inner.capacity - state.available;
        let shrank = state.peak_held >= held + TRIM_WORTH / UNIT;
        state.peak_held = held;
        shrank
    }
}

/// A place in a [`Budget`]'s queue; dropped before it was served, it
/// leaves the queue, or gives back the units it was granted meanwhile.
struct Wait<'a> {
    inner: &'a Inner,
    key: WaitKey,
    units: usize,
    done: bool,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let granted = self.inner.lock().waiters.remove(&self.key).is_none();
        if granted {
            self.inner.give_back(self.units);
        }
    }
}

/// How far a budget's use must fall for its freed memory to be worth
/// giving back: trimming returns every free page, and pages that steady
/// traffic reuses then fault in again.
const TRIM_WORTH: usize = 32 << 20;

/// How often [`return_freed_memory`] looks.
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// How many looks after a burst still trim: the connections that held the
/// budget close, and free their buffers, after they give it back.
const TRIMS_AFTER_RELEASE: u32 = 3;

/// The least time between two trims for abandoned holdings.
const ABANDONED_TRIM_GAP: Duration = Duration::from_millis(200);

/// How many connections must have closed for their buffers (up to 64 KiB
/// each) to be worth giving back: as many as fill [`TRIM_WORTH`].
const CLOSED_WORTH: usize = TRIM_WORTH / (64 << 10);

/// Gives freed heap pages back to the system after a burst that held much
/// of any of `budgets`, or that opened many connections (`open_connections`
/// counts them), is over: glibc's allocator would otherwise keep the
/// burst's peak resident for good. A large holding dropped unused is
/// trimmed for at once (at most every `ABANDONED_TRIM_GAP`).
pub async fn return_freed_memory(budgets: Vec<Budget>, open_connections: impl Fn() -> usize) {
    if budgets.is_empty() {
        return; // nothing to watch, and select_all needs something
    }
    let mut every = tokio::time::interval(TRIM_EVERY);
    let mut trims_left = 0;
    let mut most_open = 0;
    loop {
        let abandoned =
            futures_util::future::select_all(budgets.iter().map(|budget| Box::pin(budget.inner.abandoned.notified())));
        tokio::select! {
            _ = every.tick() => {
                let open = open_connections();
                most_open = most_open.max(open);
                let closed_many = most_open >= open + CLOSED_WORTH;
                if closed_many {
                    most_open = open;
                }
                if budgets.iter().fold(closed_many, |any, budget| budget.shrank_much() | any) {
                    trims_left = TRIMS_AFTER_RELEASE;
                }
                if trims_left == 0 {
                    continue;
                }
                trims_left -= 1;
            }
            _ = abandoned => trims_left = TRIMS_AFTER_RELEASE,
        }
        let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
        tokio::time::sleep(ABANDONED_TRIM_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn waiter(budget: &Budget, bytes: usize) -> tokio::task::JoinHandle<Reservation> {
        let queued = budget.inner.clone();
        let before = queued.lock().waiters.len();
        let budget = budget.clone();
        let task = tokio::spawn(async move {
            let mut held = Reservation::default();
            budget.grow(&mut held, bytes).await;
            held
        });
        while queued.lock().waiters.len() == before {
            tokio::task::yield_now().await;
        }
        task
    }

    #[tokio::test]
    async fn holdings_grow_to_the_budget_and_waiters_are_counted() {
        let budget = Budget::new(10 * UNIT, Order::SmallestFirst);
        let mut first = Reservation::default();
        budget.grow(&mut first, 6 * UNIT).await;
        let mut second = Reservation::default();
        let room = tokio::time::timeout(Duration::from_secs(5), budget.grow(&mut second, 4 * UNIT));
        room.await.expect("4 units are left");
        assert_eq!(second.units, 4);
        assert!(!budget.contended());

        // Asking for more than the whole budget waits for all of it.
        let third = waiter(&budget, 100 * UNIT).await;
        first.shrink_to(UNIT + 1);
        assert_eq!(first.units, 2);
        tokio::task::yield_now().await;
        assert!(budget.contended(), "6 of 10 units are still held");
        first.release();
        second.release();
        assert_eq!(third.await.unwrap().units, 10);
        assert!(!budget.contended());
    }

    #[tokio::test]
    async fn a_small_waiter_is_served_before_a_large_one_that_came_first() {
        let budget = Budget::new(10 * UNIT, Order::SmallestFirst);
        let mut all = Reservation::default();
        budget.grow(&mut all, 10 * UNIT).await;
        let large = waiter(&budget, 8 * UNIT).await;
        let small = waiter(&budget, UNIT).await;

        all.shrink_to(8 * UNIT);
        let small = tokio::time::timeout(Duration::from_secs(5), small).await;
        assert_eq!(small.expect("the small waiter was served").unwrap().units, 1);
        assert!(!large.is_finished());
        all.release();
        assert_eq!(large.await.unwrap().units, 8);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_takes_nothing() {
        let budget = Budget::new(4 * UNIT, Order::SmallestFirst);
        let mut all = Reservation::default();
        budget.grow(&mut all, 4 * UNIT).await;
        let mut gave_up = Reservation::default();
        let waited = tokio::time::timeout(Duration::from_millis(20), budget.grow(&mut gave_up, 2 * UNIT)).await;
        assert!(waited.is_err() && gave_up.is_empty());
        assert!(!budget.contended(), "the cancelled wait left the queue");

        // Granted, then cancelled before it ran: the units come back.
        let granted = waiter(&budget, 4 * UNIT).await;
        all.release();
        granted.abort();
        let _ = granted.await;
        let mut again = Reservation::default();
        let room = tokio::time::timeout(Duration::from_secs(5), budget.grow(&mut again, 4 * UNIT));
        room.await.expect("the whole budget is free again");
    }

    #[tokio::test]
    async fn in_arrival_order_a_small_waiter_waits_behind_a_large_one() {
        let budget = Budget::new(10 * UNIT, Order::Arrival);
        let mut all = Reservation::default();
        budget.grow(&mut all, 10 * UNIT).await;
        let large = waiter(&budget, 8 * UNIT).await;
        let small = waiter(&budget, UNIT).await;

        all.shrink_to(8 * UNIT);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!small.is_finished(), "the small waiter passed the large one");
        all.shrink_to(2 * UNIT);
        assert_eq!(large.await.unwrap().units, 8);
        all.release();
        assert_eq!(small.await.unwrap().units, 1);
    }
}
