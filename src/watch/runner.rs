//! The watch's rounds: resolve the names due, locate every address in one
//! batch, confirm changes, keep the state, then alert; and the schedule
//! that spreads the names over their intervals.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::stream::{self, StreamExt};

use super::alert::{Alerter, Outcomes};
use super::change::{Change, NameState, Observation, Place};
use super::config::{Domain, WatchConfig};
use super::dns::{Dns, Resolution};
use super::state::{Delivery, Event, StateStore};
use super::status::{self, Board, WatchMetrics};
use crate::tools::live::Answerer;

/// Addresses located per request to the answerer.
const LOCATE_BATCH: usize = 1_000;

pub struct Watcher {
    domains: Vec<Domain>,
    concurrency: usize,
    dns: Dns,
    answerer: Answerer,
    store: Arc<StateStore>,
    alerter: Alerter,
    metrics: Arc<WatchMetrics>,
    board: Arc<Board>,
    states: HashMap<String, Arc<NameState>>,
    /// Where the status endpoint listens, if it does.
    pub listening: Option<SocketAddr>,
}

impl Watcher {
    /// Reads the state back, starts the routes (re-sending what a previous
    /// run left unsent) and the status endpoint.
    pub async fn start(
        config: WatchConfig,
        answerer: Answerer,
        store: StateStore,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Watcher> {
        let dns = Dns::new(&config.resolver)?;
        let store = Arc::new(store);
        let loaded = store
            .load(config.history)
            .await
            .context("cannot read the watch state")?;
        let metrics = Arc::new(WatchMetrics::new(config.routes.keys().cloned()));
        metrics.names(config.domains.len());
        let names: Vec<String> = config.domains.iter().map(|domain| domain.name.clone()).collect();
        let board = Arc::new(Board::new(config.history, &names, &loaded.names, loaded.recent));
        let outcomes = Outcomes {
            store: store.clone(),
            metrics: metrics.clone(),
            board: board.clone(),
        };
        let alerter = Alerter::start(&config.routes, outcomes)?;
        if !loaded.undelivered.is_empty() {
            tracing::info!(
                events = loaded.undelivered.len(),
                "sending the alerts a previous run left unsent"
            );
        }
        for event in &loaded.undelivered {
            alerter.send(event).await;
        }
        let listening = match listen {
            Some(listen) => Some(status::serve(listen, board.clone(), metrics.clone()).await?),
            None => None,
        };
        Ok(Watcher {
            concurrency: config.resolver.concurrency,
            domains: config.domains,
            dns,
            answerer,
            store,
            alerter,
            metrics,
            board,
            states: loaded.names,
            listening,
        })
    }

    /// One round of every name.
    pub async fn once(&mut self) -> anyhow::Result<Vec<Change>> {
        let all: Vec<usize> = (0..self.domains.len()).collect();
        self.round(&all).await
    }

    /// One round of the names at `which`; returns the changes it confirmed.
    pub async fn round(&mut self, which: &[usize]) -> anyhow::Result<Vec<Change>> {
        let started = Instant::now();
        let dns = &self.dns;
        let domains = &self.domains;
        let resolutions: Vec<(usize, Resolution)> = stream::iter(which.iter().copied())
            .map(|i| async move { (i, dns.resolve(&domains[i].name).await) })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;

        let resolved = started.elapsed();
        let places = self.locate(&resolutions).await?;
        let located = started.elapsed() - resolved;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut updated = Vec::with_capacity(resolutions.len());
        let mut events = Vec::new();
        for (i, resolution) in resolutions {
            let domain = &self.domains[i];
            let observation = match resolution {
                Resolution::Resolved { chain, addresses } => Observation::Resolved {
                    chain,
                    addresses: addresses
                        .into_iter()
                        .map(|ip| (ip, places.get(&ip).cloned().unwrap_or_default()))
                        .collect(),
                },
                Resolution::Failed { failure, detail } => Observation::Failed { failure, detail },
            };
            let mut state = self
                .states
                .get(&domain.name)
                .map(|state| NameState::clone(state))
                .unwrap_or_default();
            self.metrics.resolution(observation.result());
            let change = state.observe(domain, observation, now);
            if let Some(change) = change {
                let deliveries = if change.alert {
                    domain
                        .routes
                        .iter()
                        .map(|route| (route.clone(), Delivery::Pending))
                        .collect()
                } else {
                    BTreeMap::new()
                };
                events.push(Event {
                    id: 0,
                    change,
                    deliveries,
                });
            }
            updated.push((domain.name.clone(), Arc::new(state)));
        }

        // Kept before anything is sent: a crash now re-sends, never forgets.
        let saved = self
            .store
            .save(&updated, events)
            .await
            .context("cannot keep the watch state")?;
        for (name, state) in updated {
            self.board.update(&name, &state);
            self.states.insert(name, state);
        }
        let mut changes = Vec::with_capacity(saved.len());
        for event in saved {
            for kind in &event.change.kinds {
                self.metrics.change(*kind);
            }
            tracing::info!(name = %event.change.name, change = %super::message::title(&event.change), "change confirmed");
            self.board.event(&event);
            self.alerter.send(&event).await;
            changes.push(event.change);
        }
        self.metrics.oldest_unresolved(self.oldest_unresolved(now));
        tracing::info!(
            names = which.len(),
            addresses = places.len(),
            changes = changes.len(),
            resolving = ?resolved,
            locating = ?located,
            total = ?started.elapsed(),
            "round done"
        );
        Ok(changes)
    }

    /// Where each address of the round is, asked in batches.
    async fn locate(&self, resolutions: &[(usize, Resolution)]) -> anyhow::Result<HashMap<IpAddr, Place>> {
        let mut distinct = HashSet::new();
        for (_, resolution) in resolutions {
            if let Resolution::Resolved { addresses, .. } = resolution {
                distinct.extend(addresses.iter().copied());
            }
        }
        let distinct: Vec<IpAddr> = distinct.into_iter().collect();
        let mut places = HashMap::with_capacity(distinct.len());
        for chunk in distinct.chunks(LOCATE_BATCH) {
            let answers = self
                .answerer
                .answer(chunk.iter().map(IpAddr::to_string).collect())
                .await
                .context("cannot locate the addresses")?;
            for (ip, answer) in chunk.iter().zip(&answers) {
                places.insert(*ip, Place::of(answer));
            }
        }
        Ok(places)
    }

    /// Seconds the longest-unresolved watched name has gone without
    /// resolving.
    fn oldest_unresolved(&self, now: u64) -> f64 {
        self.domains
            .iter()
            .filter_map(|domain| self.states.get(&domain.name))
            .filter(|state| state.last_result != "ok")
            .map(|state| now.saturating_sub(state.resolved_at.or(state.first_checked).unwrap_or(now)))
            .max()
            .unwrap_or(0) as f64
    }

    /// Rounds until `shutdown` completes, each name every interval (±10%),
    /// the first round spread over the first interval or 30 s, whichever
    /// is shorter.
    pub async fn run(&mut self, shutdown: impl std::future::Future<Output = ()>) {
        let random = std::hash::RandomState::new();
        let fraction = |seed: (usize, u64)| (random.hash_one(seed) % 10_000) as f64 / 10_000.0;
        let start = Instant::now();
        let mut due: BinaryHeap<Reverse<(Instant, usize)>> = self
            .domains
            .iter()
            .enumerate()
            .map(|(i, domain)| {
                let spread = domain.interval.min(Duration::from_secs(30));
                Reverse((start + spread.mul_f64(fraction((i, 0))), i))
            })
            .collect();
        tokio::pin!(shutdown);
        let mut rounds = 0u64;
        loop {
            let next = due.peek().expect("at least one name").0 .0;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            // Everything due within the next 50 ms goes in this round.
            let now = Instant::now();
            let mut batch = Vec::new();
            while let Some(Reverse((at, i))) = due.peek().copied() {
                if at > now + Duration::from_millis(50) {
                    break;
                }
                due.pop();
                batch.push(i);
            }
            rounds += 1;
            if let Err(err) = self.round(&batch).await {
                tracing::error!(error = %format!("{err:#}"), names = batch.len(), "a round failed; its names are tried again next time");
            }
            let now = Instant::now();
            for i in batch {
                let jitter = 0.9 + 0.2 * fraction((i, rounds));
                due.push(Reverse((now + self.domains[i].interval.mul_f64(jitter), i)));
            }
        }
    }

    /// Waits for the queued alerts to be sent or given up.
    pub async fn finish(self) {
        self.alerter.finish().await;
    }
}
