//! What the watch shows: its Prometheus metrics, and each name's state
//! and latest events over HTTP (`watch --listen`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::change::{ChangeKind, NameState};
use super::state::{Delivery, Event};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    /// A route's name from the config file: a fixed set.
    route: String,
    outcome: &'static str,
}

/// The watch's metrics, in a registry of its own.
pub struct WatchMetrics {
    registry: Registry,
    names: Gauge,
    resolutions: Family<ResultLabel, Counter>,
    changes: Family<KindLabel, Counter>,
    alerts: Family<RouteLabel, Counter>,
    oldest_unresolved: Gauge<f64, AtomicU64>,
}

impl WatchMetrics {
    pub fn new(routes: impl IntoIterator<Item = String>) -> WatchMetrics {
        let mut registry = Registry::with_prefix("xm_watch");
        let metrics = WatchMetrics {
            names: Gauge::default(),
            resolutions: Family::default(),
            changes: Family::default(),
            alerts: Family::default(),
            oldest_unresolved: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("names", "Names watched", metrics.names.clone());
        registry.register(
            "resolutions",
            "Rounds of a name, by result (ok or the failure)",
            metrics.resolutions.clone(),
        );
        registry.register("changes", "Changes confirmed, by kind", metrics.changes.clone());
        registry.register(
            "alerts",
            "Alerts by route and outcome (sent, failed)",
            metrics.alerts.clone(),
        );
        registry.register(
            "oldest_unresolved_seconds",
            "Longest time a watched name has gone without resolving (since its last success, or since it was first checked)",
            metrics.oldest_unresolved.clone(),
        );
        for kind in ChangeKind::ALL {
            let _ = metrics.changes.get_or_create(&KindLabel { kind: kind.as_str() });
        }
        for route in routes {
            for outcome in ["sent", "failed"] {
                let _ = metrics.alerts.get_or_create(&RouteLabel {
                    route: route.clone(),
                    outcome,
                });
            }
        }
        WatchMetrics { registry, ..metrics }
    }

    pub fn names(&self, count: usize) {
        self.names.set(count as i64);
    }

    /// One round of a name: "ok", or the failure's name.
    pub fn resolution(&self, result: &'static str) {
        self.resolutions.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn change(&self, kind: ChangeKind) {
        self.changes.get_or_create(&KindLabel { kind: kind.as_str() }).inc();
    }

    pub fn alert(&self, route: &str, sent: bool) {
        let outcome = if sent { "sent" } else { "failed" };
        self.alerts
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn oldest_unresolved(&self, seconds: f64) {
        self.oldest_unresolved.set(seconds);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// Each name's state and latest events, for the endpoint.
pub struct Board {
    history: usize,
    names: Mutex<BTreeMap<String, NameStatus>>,
}

#[derive(Clone, Serialize)]
pub struct NameStatus {
    pub name: String,
    pub state: Arc<NameState>,
    pub events: VecDeque<Event>,
}

impl Board {
    pub fn new(
        history: usize,
        names: &[String],
        states: &HashMap<String, Arc<NameState>>,
        recent: Vec<Event>,
    ) -> Board {
        let mut board: BTreeMap<String, NameStatus> = names
            .iter()
            .map(|name| {
                let status = NameStatus {
                    name: name.clone(),
                    state: states.get(name).cloned().unwrap_or_default(),
                    events: VecDeque::new(),
                };
                (name.clone(), status)
            })
            .collect();
        for event in recent {
            if let Some(status) = board.get_mut(&event.change.name) {
                status.events.push_back(event);
            }
        }
        Board {
            history,
            names: Mutex::new(board),
        }
    }

    pub fn update(&self, name: &str, state: &Arc<NameState>) {
        if let Some(status) = self.names.lock().expect("not poisoned").get_mut(name) {
            status.state = state.clone();
        }
    }

    pub fn event(&self, event: &Event) {
        if let Some(status) = self.names.lock().expect("not poisoned").get_mut(&event.change.name) {
            status.events.push_back(event.clone());
            while status.events.len() > self.history {
                status.events.pop_front();
            }
        }
    }

    pub fn delivered(&self, name: &str, id: u64, route: &str, delivery: Delivery) {
        if let Some(status) = self.names.lock().expect("not poisoned").get_mut(name) {
            if let Some(event) = status.events.iter_mut().find(|event| event.id == id) {
                event.deliveries.insert(route.to_owned(), delivery);
            }
        }
    }

    fn all(&self) -> Vec<NameStatus> {
        self.names.lock().expect("not poisoned").values().cloned().collect()
    }

    fn one(&self, name: &str) -> Option<NameStatus> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.lock().expect("not poisoned").get(&name).cloned()
    }
}

#[derive(Clone)]
struct Shared {
    board: Arc<Board>,
    metrics: Arc<WatchMetrics>,
}

/// Connections the status listener serves at once; more are closed.
const MAX_CONNECTIONS: usize = 64;
/// A request's head must arrive, and a connection end, within these.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `/metrics`, `/v1/watch` and `/v1/watch/{name}` until the
/// process ends, to at most `MAX_CONNECTIONS` peers at once, each with
/// a time limit, so that no scraper can hold the watch's memory.
pub async fn serve(listen: SocketAddr, board: Arc<Board>, metrics: Arc<WatchMetrics>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {listen}: {err}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/v1/watch", get(all_names))
        .route("/v1/watch/{name}", get(one_name))
        .with_state(Shared { board, metrics });
    let service = TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(admitted) = room.clone().try_acquire_owned() else {
                continue;
            };
            let (http, service) = (http.clone(), service.clone());
            tokio::spawn(async move {
                let connection = http.serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
                drop(admitted);
            });
        }
    });
    Ok(bound)
}

async fn metrics_text(State(shared): State<Shared>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        shared.metrics.render(),
    )
        .into_response()
}

async fn all_names(State(shared): State<Shared>) -> Response {
    Json(serde_json::json!({ "names": shared.board.all() })).into_response()
}

async fn one_name(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    match shared.board.one(&name) {
        Some(status) => Json(status).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("{name} is not watched") })),
        )
            .into_response(),
    }
}
