//! Coalescing: concurrent callers' addresses for one table share a query.
//! A caller arriving while the table's queries are all in flight waits and
//! goes with everyone else who arrived meanwhile in the next query, so a
//! busy server makes one round trip for many calls and an idle one adds no
//! delay. A caller's addresses always travel in one query, so they are
//! answered from one version of the table.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::StoreError;
use crate::domain::Found;
use crate::domain::Unavailable;

/// One table's rows for a query's keys, in key order.
type Rows = Vec<Found>;
/// What a caller gets: its own rows, or the short reason its query failed.
type Answer = Result<Rows, Unavailable>;

/// How far coalescing goes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Queries of one table running at once.
    pub in_flight: usize,
    /// Keys one query may carry; a single caller with more goes alone.
    pub max_keys: usize,
    /// Callers that may wait for a turn before new ones are held back.
    pub queue: usize,
    /// The longest a caller waits for its answer, turn and query together.
    pub timeout: Duration,
}

struct Waiting<K> {
    keys: Vec<K>,
    reply: oneshot::Sender<Answer>,
}

/// The front of one table's coalescing task.
pub struct Coalescer<K> {
    queue: mpsc::Sender<Waiting<K>>,
    timeout: Duration,
}

impl<K> Clone for Coalescer<K> {
    fn clone(&self) -> Self {
        Coalescer {
            queue: self.queue.clone(),
            timeout: self.timeout,
        }
    }
}

impl<K: Send + 'static> Coalescer<K> {
    /// Starts the task that runs `query` for batches of callers' keys; it
    /// ends when the last `Coalescer` handle is dropped.
    pub fn start<Q, F>(limits: Limits, query: Q) -> Coalescer<K>
    where
        Q: Fn(Vec<K>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Rows, StoreError>> + Send + 'static,
    {
        let (queue, arrivals) = mpsc::channel(limits.queue);
        tokio::spawn(serve(arrivals, query, limits));
        Coalescer {
            queue,
            timeout: limits.timeout,
        }
    }

    /// The rows for `keys`, in order.
    pub async fn lookup(&self, keys: Vec<K>) -> Answer {
        let wait = async {
            let (reply, answer) = oneshot::channel();
            let stopped = Err(Unavailable::LookupStopped);
            if self.queue.send(Waiting { keys, reply }).await.is_err() {
                return stopped;
            }
            answer.await.unwrap_or(stopped)
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .unwrap_or(Err(Unavailable::DatabaseTimeout))
    }
}

async fn serve<K, Q, F>(mut arrivals: mpsc::Receiver<Waiting<K>>, query: Q, limits: Limits)
where
    Q: Fn(Vec<K>) -> F,
    F: Future<Output = Result<Rows, StoreError>>,
{
    let mut waiting = VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        while let Ok(caller) = arrivals.try_recv() {
            waiting.push_back(caller);
        }
        while in_flight.len() < limits.in_flight && !waiting.is_empty() {
            let batch = next_batch(&mut waiting, limits.max_keys);
            if !batch.is_empty() {
                in_flight.push(answer(batch, &query));
            }
        }
        if !open && waiting.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            arrived = arrivals.recv(), if open => match arrived {
                Some(caller) => waiting.push_back(caller),
                None => open = false,
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

/// The callers at the front of the queue whose keys fit in one query (at
/// least one caller), skipping those who stopped waiting.
fn next_batch<K>(waiting: &mut VecDeque<Waiting<K>>, max_keys: usize) -> Vec<Waiting<K>> {
    let mut batch = Vec::new();
    let mut keys = 0;
    while let Some(next) = waiting.front() {
        if next.reply.is_closed() {
            waiting.pop_front();
            continue;
        }
        if !batch.is_empty() && keys + next.keys.len() > max_keys {
            break;
        }
        keys += next.keys.len();
        batch.extend(waiting.pop_front());
    }
    batch
}

/// Runs one query for `batch` and hands each caller its own rows.
async fn answer<K, Q, F>(mut batch: Vec<Waiting<K>>, query: &Q)
where
    Q: Fn(Vec<K>) -> F,
    F: Future<Output = Result<Rows, StoreError>>,
{
    let sizes: Vec<usize> = batch.iter().map(|w| w.keys.len()).collect();
    let keys: Vec<K> = batch.iter_mut().flat_map(|w| std::mem::take(&mut w.keys)).collect();
    let total = keys.len();
    match query(keys).await {
        Ok(rows) if rows.len() == total => {
            let mut rows = rows.into_iter();
            for (caller, size) in batch.into_iter().zip(sizes) {
                let _ = caller.reply.send(Ok(rows.by_ref().take(size).collect()));
            }
        }
        Ok(rows) => {
            warn!(
                rows = rows.len(),
                keys = total,
                "the database returned the wrong number of rows"
            );
            fail(batch, Unavailable::RowCount)
        }
        Err(err) => {
            // Logged once per query with its cause; each caller gets the short form.
            warn!(error = %err, callers = batch.len(), addresses = total, "range table lookup failed");
            fail(batch, err.unavailable());
        }
    }
}

fn fail<K>(batch: Vec<Waiting<K>>, reason: Unavailable) {
    for caller in batch {
        let _ = caller.reply.send(Err(reason));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::domain::{Located, Place, Source};

    fn row(key: u32) -> Found {
        let ip = IpAddr::V4(Ipv4Addr::from(key));
        Found {
            place: Some(Located {
                place: Place::default(),
                start: ip,
                end: ip,
                source: Source::Cn,
                network: None,
                corrected: false,
            }),
            ..Found::default()
        }
    }

    fn keys_of(rows: &Rows) -> Vec<u32> {
        rows.iter()
            .map(|r| match r.place.as_ref().unwrap().start {
                IpAddr::V4(v4) => u32::from(v4),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    fn limits(in_flight: usize) -> Limits {
        Limits {
            in_flight,
            max_keys: 10_000,
            queue: 1024,
            timeout: Duration::from_secs(5),
        }
    }

    /// A query that takes `delay`, counts itself, and fails any batch
    /// holding the key `u32::MAX`.
    fn slow_query(
        delay: Duration,
        queries: Arc<AtomicUsize>,
    ) -> impl Fn(Vec<u32>) -> BoxFuture<'static, Result<Rows, StoreError>> {
        move |keys| {
            queries.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if keys.contains(&u32::MAX) {
                    return Err(StoreError::Timeout(Duration::from_millis(1)));
                }
                Ok(keys.into_iter().map(row).collect())
            })
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_queries_and_each_gets_exactly_its_own_rows() {
        let queries = Arc::new(AtomicUsize::new(0));
        let coalescer = Coalescer::start(limits(1), slow_query(Duration::from_millis(20), queries.clone()));
        let callers: Vec<_> = (0..50u32)
            .map(|caller| {
                let coalescer = coalescer.clone();
                tokio::spawn(async move {
                    let keys: Vec<u32> = (0..=caller % 7).map(|k| caller * 100 + k).collect();
                    let rows = coalescer.lookup(keys.clone()).await.unwrap();
                    assert_eq!(keys_of(&rows), keys, "caller {caller}");
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let queries = queries.load(Ordering::SeqCst);
        assert!(queries < 10, "50 callers took {queries} queries");
    }

    #[tokio::test]
    async fn an_idle_table_queries_at_once_for_a_lone_caller() {
        let queries = Arc::new(AtomicUsize::new(0));
        let coalescer = Coalescer::start(limits(2), slow_query(Duration::ZERO, queries.clone()));
        for round in 0..3u32 {
            let rows = coalescer.lookup(vec![round, round + 1]).await.unwrap();
            assert_eq!(keys_of(&rows), [round, round + 1]);
        }
        assert_eq!(queries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_query_fails_only_its_own_callers() {
        let queries = Arc::new(AtomicUsize::new(0));
        let coalescer = Coalescer::start(limits(1), slow_query(Duration::from_millis(20), queries));
        // The first caller runs alone; the poisoned one and the next wait
        // together; the last arrives after that query has failed.
        let first = tokio::spawn({
            let c = coalescer.clone();
            async move { c.lookup(vec![1]).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let poisoned = tokio::spawn({
            let c = coalescer.clone();
            async move { c.lookup(vec![2, u32::MAX]).await }
        });
        let sharing = tokio::spawn({
            let c = coalescer.clone();
            async move { c.lookup(vec![3]).await }
        });
        assert_eq!(keys_of(&first.await.unwrap().unwrap()), [1]);
        let reason = poisoned.await.unwrap().unwrap_err();
        assert_eq!(reason.to_string(), "database timed out");
        assert!(sharing.await.unwrap().is_err(), "shared the failed query");
        assert_eq!(keys_of(&coalescer.lookup(vec![4]).await.unwrap()), [4]);
    }

    #[tokio::test]
    async fn a_caller_over_the_key_limit_goes_alone_and_others_are_not_split() {
        let queries = Arc::new(AtomicUsize::new(0));
        let coalescer = Coalescer::start(
            Limits {
                max_keys: 3,
                ..limits(1)
            },
            slow_query(Duration::from_millis(10), queries.clone()),
        );
        let big: Vec<u32> = (10..20).collect();
        let (a, b, c) = tokio::join!(
            coalescer.lookup(big.clone()),
            coalescer.lookup(vec![1, 2]),
            coalescer.lookup(vec![3, 4])
        );
        assert_eq!(keys_of(&a.unwrap()), big);
        assert_eq!(keys_of(&b.unwrap()), [1, 2]);
        assert_eq!(keys_of(&c.unwrap()), [3, 4]);
        assert_eq!(queries.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_caller_gives_up_after_its_timeout() {
        let queries = Arc::new(AtomicUsize::new(0));
        let coalescer = Coalescer::start(
            Limits {
                timeout: Duration::from_millis(30),
                ..limits(1)
            },
            slow_query(Duration::from_secs(10), queries),
        );
        let reason = coalescer.lookup(vec![1]).await.unwrap_err();
        assert_eq!(reason.to_string(), "database timed out");
    }
}
