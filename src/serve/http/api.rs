//! The routes: the old service's `/api/ip_query` (GET and POST, one
//! address or a batch), the OpenAPI description, `/metrics`, `/healthz`
//! and `/readyz`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::reply::{Charge, ReplyRoom};
use crate::answer::{self, Answer};
use crate::config::Http;
use crate::domain::LookupError;
use crate::inputs::Inputs;
use crate::metrics::{Api, Metrics, Rejection, RequestSeries};
use crate::serve::budget::{reply_cost, Budget, Reservation};
use crate::serve::workers::BatchLane;
use crate::service::{Locator, Route};

const OPENAPI: &str = include_str!("openapi.json");

/// What every request shares, behind one `Arc`: a reference count to
/// clone per request.
struct ApiState {
    locator: Locator,
    metrics: Arc<Metrics>,
    max_batch: usize,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    max_body: usize,
    /// Request bodies being read or answered.
    bodies: Budget,
    /// Where most requests are counted.
    single_ok: RequestSeries,
    /// Where large batches do their work.
    lane: BatchLane,
}

/// The endpoint that produced a response, as the metrics label it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// One address: a GET, or a POST of `{"ip": …}`.
    IpQuery,
    /// A POST of `{"ips": […]}`.
    IpQueryBatch,
    Openapi,
    Metrics,
    Healthz,
    Readyz,
    /// No endpoint: the router's fallback.
    Other,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::IpQuery => "ip_query",
            Endpoint::IpQueryBatch => "ip_query_batch",
            Endpoint::Openapi => "openapi",
            Endpoint::Metrics => "metrics",
            Endpoint::Healthz => "healthz",
            Endpoint::Readyz => "readyz",
            Endpoint::Other => "other",
        }
    }
}

/// When a request on the router's path began: its deadline is this plus
/// the HTTP timeout.
#[derive(Clone, Copy)]
struct Started(Instant);

/// The HTTP API: the single-address `GET /api/ip_query`, most of the
/// traffic, answered on a short path; every other request through the
/// router. Both paths answer and count a request the same way.
pub(super) struct HttpApi {
    state: Arc<ApiState>,
    router: TowerToHyperService<Router>,
}

impl HttpApi {
    pub(super) fn new(
        locator: Locator,
        metrics: Arc<Metrics>,
        limits: &Http,
        max_batch: usize,
        bodies: Budget,
        lane: BatchLane,
    ) -> HttpApi {
        let state = Arc::new(ApiState {
            locator,
            single_ok: metrics.request_series(Api::Http, Endpoint::IpQuery.as_str(), "200"),
            metrics,
            max_batch,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            timeout: limits.timeout,
            max_body: limits.max_body,
            bodies,
            lane,
        });
        let router = Router::new()
            .route("/api/ip_query", get(query_get).post(query_post))
            .route("/api/openapi.json", get(openapi))
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".into()) })
            .method_not_allowed_fallback(|| async {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here".into())
            })
            .layer(DefaultBodyLimit::max(limits.max_body))
            .layer(middleware::from_fn_with_state(state.clone(), guard))
            .with_state(state.clone());
        HttpApi {
            state,
            router: TowerToHyperService::new(router),
        }
    }

    /// Answers one request on a connection whose replies take `room`.
    pub(super) async fn serve(
        &self,
        mut request: axum::http::Request<Incoming>,
        room: &ReplyRoom,
    ) -> Result<Response, Infallible> {
        if let Some(query) = SingleGet::of(&request) {
            return Ok(self.state.single_get(query).await);
        }
        request.extensions_mut().insert(room.clone());
        hyper::service::Service::call(&self.router, request).await
    }
}

/// A `GET /api/ip_query` the short path answers: no body, and a query
/// string that needs no decoding, with `ip` once and `lang` at most once.
/// Anything else goes through the router, whose answers (errors included)
/// are the reference.
struct SingleGet<'a> {
    ip: &'a str,
    lang: Option<&'a str>,
}

impl SingleGet<'_> {
    fn of(request: &axum::http::Request<Incoming>) -> Option<SingleGet<'_>> {
        if request.method() != Method::GET
            || request.uri().path() != "/api/ip_query"
            || request.body().size_hint().upper() != Some(0)
        {
            return None;
        }
        let query = request.uri().query()?;
        if query.bytes().any(|b| b == b'%' || b == b'+') {
            return None;
        }
        let (mut ip, mut lang) = (None, None);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match key {
                "ip" => &mut ip,
                "lang" => &mut lang,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        Some(SingleGet { ip: ip?, lang })
    }
}

/// Bounds each request's time, reads its body within the body budget,
/// sheds load over the in-flight cap, and counts the request.
async fn guard(State(state): State<Arc<ApiState>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    request.extensions_mut().insert(Started(started));
    state
        .bounded(started, state.admit(request, next), |response| {
            response
                .extensions()
                .get::<Endpoint>()
                .copied()
                .unwrap_or(Endpoint::Other)
        })
        .await
}

/// A bounded set of status labels: the codes this API sends.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        400 => "400",
        404 => "404",
        405 => "405",
        413 => "413",
        500 => "500",
        501 => "501",
        503 => "503",
        _ => "other",
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

/// A request-level error: `{"error": "..."}`.
fn error(status: StatusCode, message: String) -> Response {
    (status, json_body(&ErrorBody { error: message })).into_response()
}

fn json_body<T: Serialize>(value: &T) -> Response {
    json_response(serde_json::to_vec(value).expect("plain structs serialise"))
}

fn json_response(body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

fn tagged(mut response: Response, endpoint: Endpoint) -> Response {
    response.extensions_mut().insert(endpoint);
    response
}

#[derive(Deserialize)]
struct SingleQuery {
    ip: Option<String>,
    lang: Option<String>,
}

/// `GET /api/ip_query?ip=IP[&lang=LANG]`.
async fn query_get(State(state): State<Arc<ApiState>>, query: Result<Query<SingleQuery>, QueryRejection>) -> Response {
    let response = match query {
        Err(rejection) => state.bad_request(format!("bad query string: {}", rejection.body_text())),
        Ok(Query(SingleQuery { ip: None, .. })) => state.bad_request("missing the \"ip\" parameter".into()),
        Ok(Query(SingleQuery { ip: Some(ip), lang })) => state.single(&ip, lang.as_deref()).await,
    };
    tagged(response, Endpoint::IpQuery)
}

/// The POST body: `{"ip": "IP"}` as the old service took it, or
/// `{"ips": [...]}` for a batch; either with an optional `"lang"`.
#[derive(Deserialize)]
struct QueryBody {
    ip: Option<String>,
    ips: Option<Inputs>,
    lang: Option<String>,
}

/// `POST /api/ip_query`. The body is read as JSON whatever its content
/// type, as old clients send it. A large reply's room is taken before the
/// body is parsed, so that a request waiting for it holds only its body,
/// which the body budget counts.
async fn query_post(
    State(state): State<Arc<ApiState>>,
    Extension(room): Extension<ReplyRoom>,
    Extension(Started(started)): Extension<Started>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                Rejection::Oversized
            } else {
                Rejection::Garbage
            };
            state.metrics.rejected(Api::Http, reason);
            return tagged(error(status, rejection.body_text()), Endpoint::IpQuery);
        }
    };
    let Some(charge) = room.take(state.reply_cost(&body), started + state.timeout).await else {
        return tagged(state.no_room_for_reply(), Endpoint::IpQueryBatch);
    };
    if !(charge.holds_room() && room.contended()) {
        return state.answer_post(&body, charge).await;
    }
    // A flood (other large replies wait for room): parsed and answered on
    // the batch lane, which yields the CPU to small requests. Otherwise
    // the hop to the lane costs more than it saves (BENCHMARKS.md).
    let lane = state.lane.clone();
    let answered = lane.run(async move { state.answer_post(&body, charge).await }).await;
    answered.unwrap_or_else(|| {
        tagged(
            error(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down".into()),
            Endpoint::IpQueryBatch,
        )
    })
}

impl ApiState {
    /// The answer to a `POST /api/ip_query` body, whose reply holds `charge`.
    async fn answer_post(&self, body: &[u8], charge: Charge) -> Response {
        let parsed: QueryBody = match serde_json::from_slice(body) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.metrics.rejected(Api::Http, Rejection::Garbage);
                return tagged(
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("the body is not the JSON expected: {err}"),
                    ),
                    Endpoint::IpQuery,
                );
            }
        };
        match parsed {
            QueryBody {
                ip: Some(ip),
                ips: None,
                lang,
            } => tagged(self.single(&ip, lang.as_deref()).await, Endpoint::IpQuery),
            QueryBody {
                ip: None,
                ips: Some(ips),
                lang,
            } => tagged(self.batch(ips, lang.as_deref(), charge).await, Endpoint::IpQueryBatch),
            QueryBody {
                ip: Some(_),
                ips: Some(_),
                ..
            } => tagged(
                self.bad_request("give \"ip\" or \"ips\", not both".into()),
                Endpoint::IpQuery,
            ),
            QueryBody {
                ip: None, ips: None, ..
            } => tagged(
                self.bad_request("missing \"ip\" (one address) or \"ips\" (a list)".into()),
                Endpoint::IpQuery,
            ),
        }
    }

    /// Runs a request `started` then within its deadline (503 past it) and
    /// counts it under the endpoint `endpoint` names.
    async fn bounded(
        &self,
        started: Instant,
        request: impl Future<Output = Response>,
        endpoint: impl FnOnce(&Response) -> Endpoint,
    ) -> Response {
        let response = match tokio::time::timeout_at(started + self.timeout, request).await {
            Ok(response) => response,
            Err(_) => {
                self.metrics.rejected(Api::Http, Rejection::Timeout);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the request did not complete within {:?}", self.timeout),
                )
            }
        };
        let took = started.elapsed();
        match (endpoint(&response), response.status()) {
            (Endpoint::IpQuery, StatusCode::OK) => self.single_ok.record(took),
            (endpoint, status) => self
                .metrics
                .request(Api::Http, endpoint.as_str(), status_label(status), took),
        }
        response
    }

    /// The short path's request: what the guard and `query_get` do for it,
    /// with nothing to read.
    async fn single_get(&self, query: SingleGet<'_>) -> Response {
        let answer = async {
            match self.in_flight.try_acquire() {
                Ok(_permit) => self.single(query.ip, query.lang).await,
                Err(_) => self.overloaded(),
            }
        };
        self.bounded(Instant::now(), answer, |_| Endpoint::IpQuery).await
    }

    fn overloaded(&self) -> Response {
        self.metrics.rejected(Api::Http, Rejection::Overloaded);
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry shortly".into(),
        )
    }

    /// Reads the body, then runs the request if there is room in flight. A
    /// body still arriving takes no place in flight, so slow senders cannot
    /// crowd out the requests that have arrived.
    async fn admit(&self, request: Request, next: Next) -> Response {
        let (request, mut body_held) = match self.read_body(request).await {
            Ok(read) => read,
            Err(response) => return response,
        };
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return self.overloaded();
        };
        let response = next.run(request).await;
        body_held.release();
        response
    }

    /// Reads a request's body into one buffer, having first taken its size
    /// from the body budget: its announced length, or the body limit when
    /// none is announced. It waits there while other bodies hold the
    /// budget; the caller's deadline turns a long wait into 503.
    async fn read_body(&self, request: Request) -> Result<(Request, Reservation), Response> {
        let (parts, body) = request.into_parts();
        let mut held = Reservation::default();
        if body.size_hint().upper() == Some(0) {
            return Ok((Request::from_parts(parts, body), held));
        }
        let announced = body.size_hint().exact().and_then(|n| usize::try_from(n).ok());
        if let Some(length) = announced.filter(|&n| n > self.max_body) {
            return Err(self.body_too_large(format!(
                "the body of {length} bytes exceeds the limit of {} bytes",
                self.max_body
            )));
        }
        let size = announced.unwrap_or(self.max_body);
        self.bodies.grow(&mut held, size).await;
        let mut buffer = Vec::with_capacity(size);
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|err| {
                self.metrics.rejected(Api::Http, Rejection::Garbage);
                error(StatusCode::BAD_REQUEST, format!("the body did not arrive whole: {err}"))
            })?;
            if buffer.len() + chunk.len() > self.max_body {
                return Err(self.body_too_large(format!("the body exceeds the limit of {} bytes", self.max_body)));
            }
            buffer.extend_from_slice(&chunk);
        }
        held.shrink_to(buffer.len());
        Ok((Request::from_parts(parts, Body::from(buffer)), held))
    }

    /// An upper bound on what answering `body` holds, for the reply
    /// budget, before it is parsed: each address is a JSON string, so there
    /// are at most half as many as the body has quotes (and at most the
    /// batch limit: more is refused unanswered).
    fn reply_cost(&self, body: &[u8]) -> usize {
        let quotes = body.iter().filter(|&&b| b == b'"').count();
        reply_cost((quotes / 2).min(self.max_batch), body.len())
    }

    fn no_room_for_reply(&self) -> Response {
        self.metrics.rejected(Api::Http, Rejection::Overloaded);
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no room for the reply within {:?}: other large replies hold it; retry shortly",
                self.timeout
            ),
        )
    }

    fn body_too_large(&self, message: String) -> Response {
        self.metrics.rejected(Api::Http, Rejection::Oversized);
        error(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    fn bad_request(&self, message: String) -> Response {
        self.metrics.rejected(Api::Http, Rejection::BadRequest);
        error(StatusCode::BAD_REQUEST, message)
    }

    /// One address: its `GeoInfo`, with the old service's status codes.
    async fn single(&self, ip: &str, lang: Option<&str>) -> Response {
        let outcome = match Route::for_request(lang) {
            Ok(route) => self.locator.locate_one(ip, route).await,
            Err(err) => Err(err),
        };
        self.metrics.answered_items(Api::Http, std::slice::from_ref(&outcome));
        let status = match outcome {
            Ok(_) => StatusCode::OK,
            Err(LookupError::InvalidIp(_) | LookupError::UnsupportedLang(_)) => StatusCode::BAD_REQUEST,
            Err(LookupError::NotFound(_)) => StatusCode::NOT_IMPLEMENTED,
            Err(LookupError::Backend(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = json_response(answer::json(&Answer::new(ip, &outcome)));
        *response.status_mut() = status;
        response
    }

    /// A batch: one `GeoInfo` per input, in order, errors per item; its
    /// reply holds `charge` until it has left.
    async fn batch(&self, ips: Inputs, lang: Option<&str>, charge: Charge) -> Response {
        if ips.len() > self.max_batch {
            self.metrics.rejected(Api::Http, Rejection::BatchOverLimit);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "batch of {} IPs exceeds the limit of {} per request",
                    ips.len(),
                    self.max_batch
                ),
            );
        }
        let outcomes = match Route::for_request(lang) {
            Ok(route) => self.locator.locate(ips.iter(), route).await,
            Err(err) => vec![Err(err); ips.len()],
        };
        self.metrics.answered_items(Api::Http, &outcomes);
        let mut body = Vec::with_capacity(512 * ips.len() + 2);
        body.push(b'[');
        for (i, (ip, outcome)) in ips.iter().zip(&outcomes).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            if let Some(ahead) = outcomes.get(i + answer::WARM_AHEAD) {
                answer::warm(ahead);
            }
            answer::write_json(&Answer::new(ip, outcome), &mut body);
        }
        body.push(b']');
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            charge.into_body(body),
        )
            .into_response()
    }
}

async fn openapi() -> Response {
    let mut response = tagged(OPENAPI.into_response(), Endpoint::Openapi);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn metrics_text(State(state): State<Arc<ApiState>>) -> Response {
    let sampled = state.locator.sample().await;
    let text = state.metrics.render(&sampled);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    tagged(
        ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response(),
        Endpoint::Metrics,
    )
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<String>,
    /// What does not make the server unready but is worth knowing: data
    /// served from snapshot files, and its age.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// The process is up and answering HTTP.
async fn healthz() -> Response {
    tagged(
        json_body(&Health {
            status: "ok",
            missing: Vec::new(),
            notes: Vec::new(),
        }),
        Endpoint::Healthz,
    )
}

/// 200 when every table the routes need can be read and holds rows;
/// otherwise 503 naming what is missing.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if state.metrics.is_draining() {
        let mut response = json_body(&Health {
            status: "draining",
            missing: Vec::new(),
            notes: Vec::new(),
        });
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return tagged(response, Endpoint::Readyz);
    }
    let sampled = state.locator.sample().await;
    let (missing, notes) = (sampled.missing(), sampled.notes());
    let response = if missing.is_empty() {
        json_body(&Health {
            status: "ready",
            missing,
            notes,
        })
    } else {
        let mut response = json_body(&Health {
            status: "not ready",
            missing,
            notes,
        });
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    };
    tagged(response, Endpoint::Readyz)
}
