//! Sending alerts: one task per route, each with its own queue (bounded),
//! rate limit, retries with backoff, and a record of what became of each
//! message in the watch's state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::change::Change;
use super::config::{Mail, MailTls, Route, RouteKind};
use super::message;
use super::state::{Delivery, Event, StateStore};
use super::status::{Board, WatchMetrics};

/// Messages a route holds while it waits for its rate limit or retries;
/// beyond this a message is dropped, logged and counted as failed.
const QUEUE: usize = 1_000;

struct Job {
    id: u64,
    change: Arc<Change>,
}

/// The routes' senders.
pub struct Alerter {
    queues: HashMap<String, mpsc::Sender<Job>>,
    tasks: JoinSet<()>,
    outcomes: Arc<Outcomes>,
}

/// Where what became of an alert is told: the metrics, the kept state and
/// the status board.
pub struct Outcomes {
    pub store: Arc<StateStore>,
    pub metrics: Arc<WatchMetrics>,
    pub board: Arc<Board>,
}

impl Outcomes {
    async fn record(&self, id: u64, name: &str, route: &str, delivery: Delivery) {
        self.metrics.alert(route, delivery == Delivery::Sent);
        self.board.delivered(name, id, route, delivery);
        if let Err(err) = self.store.delivered(id, route, delivery).await {
            tracing::warn!(route, event = id, error = %format!("{err:#}"), "cannot record an alert's delivery");
        }
    }
}

impl Alerter {
    pub fn start(routes: &BTreeMap<String, Route>, outcomes: Outcomes) -> anyhow::Result<Alerter> {
        // reqwest and lettre share rustls, with ring as its cryptography
        // (deprecated only for lacking post-quantum key exchange; aws-lc-rs
        // would need cmake to build).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("xm-ip-service-watch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| anyhow::anyhow!("cannot make the HTTP client: {err}"))?;
        let outcomes = Arc::new(outcomes);
        let mut queues = HashMap::new();
        let mut tasks = JoinSet::new();
        for route in routes.values() {
            let sender = Sender::new(route.clone(), http.clone())?;
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(route.name.clone(), tx);
            tasks.spawn(sender.run(rx, outcomes.clone()));
        }
        Ok(Alerter {
            queues,
            tasks,
            outcomes,
        })
    }

    /// Queues the event's pending alerts.
    pub async fn send(&self, event: &Event) {
        let change = Arc::new(event.change.clone());
        for (route, delivery) in &event.deliveries {
            if *delivery != Delivery::Pending {
                continue;
            }
            let Some(queue) = self.queues.get(route) else {
                // The route has left the config since the event was kept.
                tracing::warn!(
                    route,
                    event = event.id,
                    "an alert's route is no longer configured; not sent"
                );
                self.outcomes
                    .record(event.id, &event.change.name, route, Delivery::Failed)
                    .await;
                continue;
            };
            let job = Job {
                id: event.id,
                change: change.clone(),
            };
            if queue.try_send(job).is_err() {
                tracing::warn!(route, name = %event.change.name, "the route's queue is full; alert dropped");
                self.outcomes
                    .record(event.id, &event.change.name, route, Delivery::Failed)
                    .await;
            }
        }
    }

    /// Sends what is queued, then stops.
    pub async fn finish(mut self) {
        self.queues.clear();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// One route's way of sending.
struct Sender {
    route: Route,
    http: reqwest::Client,
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
    /// When the last messages went, for the rate limit.
    sent: VecDeque<Instant>,
}

impl Sender {
    fn new(route: Route, http: reqwest::Client) -> anyhow::Result<Sender> {
        let mailer = match &route.kind {
            RouteKind::Email(mail) => {
                Some(mailer(mail, route.timeout).map_err(|err| anyhow::anyhow!("routes.{}: {err}", route.name))?)
            }
            _ => None,
        };
        Ok(Sender {
            route,
            http,
            mailer,
            sent: VecDeque::new(),
        })
    }

    async fn run(mut self, mut queue: mpsc::Receiver<Job>, outcomes: Arc<Outcomes>) {
        while let Some(job) = queue.recv().await {
            self.wait_for_rate().await;
            let delivery = match self.send_with_retries(&job.change).await {
                Ok(()) => {
                    tracing::info!(route = %self.route.name, name = %job.change.name, "alert sent");
                    Delivery::Sent
                }
                Err(err) => {
                    tracing::error!(route = %self.route.name, name = %job.change.name, error = %err, "alert not sent after every try");
                    Delivery::Failed
                }
            };
            outcomes
                .record(job.id, &job.change.name, &self.route.name, delivery)
                .await;
        }
    }

    /// At most `per_minute` messages in any minute.
    async fn wait_for_rate(&mut self) {
        let minute = Duration::from_secs(60);
        while let Some(first) = self.sent.front() {
            if first.elapsed() >= minute {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        if self.sent.len() >= self.route.per_minute as usize {
            let first = self.sent.pop_front().expect("full");
            tokio::time::sleep_until((first + minute).into()).await;
        }
        self.sent.push_back(Instant::now());
    }

    async fn send_with_retries(&self, change: &Change) -> Result<(), String> {
        let mut wait = self.route.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.send(change).await {
                Ok(()) => return Ok(()),
                Err(err) if tries > self.route.retries => return Err(format!("{err} (after {tries} tries)")),
                Err(err) => {
                    tracing::warn!(route = %self.route.name, name = %change.name, error = %err, try_ = tries, "alert failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2).min(Duration::from_secs(300));
                }
            }
        }
    }

    async fn send(&self, change: &Change) -> Result<(), String> {
        match &self.route.kind {
            RouteKind::Webhook { url } => self.post(url, &message::json(change), false).await,
            RouteKind::Slack { url } => {
                self.post(url, &serde_json::json!({ "text": message::text(change) }), false)
                    .await
            }
            RouteKind::WeCom { url } => {
                let body = serde_json::json!({
                    "msgtype": "markdown",
                    "markdown": { "content": message::markdown(change) },
                });
                self.post(url, &body, true).await
            }
            RouteKind::DingTalk { url, secret } => {
                let body = serde_json::json!({
                    "msgtype": "markdown",
                    "markdown": { "title": message::title(change), "text": message::markdown(change) },
                });
                let url = match secret {
                    Some(secret) => dingtalk_signed(url, secret, now_millis())?,
                    None => url.clone(),
                };
                self.post(&url, &body, true).await
            }
            RouteKind::Email(mail) => {
                let mailer = self.mailer.as_ref().expect("an email route has a mailer");
                let mut builder = lettre::Message::builder()
                    .from(mail.from.parse().map_err(|err| format!("from: {err}"))?)
                    .subject(format!("[watch] {}", message::title(change)))
                    .header(ContentType::TEXT_PLAIN);
                for to in &mail.to {
                    builder = builder.to(to.parse().map_err(|err| format!("to: {err}"))?);
                }
                let email = builder.body(message::text(change)).map_err(|err| err.to_string())?;
                tokio::time::timeout(self.route.timeout, mailer.send(email))
                    .await
                    .map_err(|_| "the mail server did not answer in time".to_owned())?
                    .map(|_| ())
                    .map_err(|err| format!("SMTP: {err}"))
            }
        }
    }

    /// POSTs JSON; a robot (WeCom, DingTalk) must also answer errcode 0.
    async fn post(&self, url: &str, body: &serde_json::Value, robot: bool) -> Result<(), String> {
        let response = self
            .http
            .post(url)
            .json(body)
            .timeout(self.route.timeout)
            .send()
            .await
            .map_err(|err| format!("POST failed: {}", without_url(err)))?;
        let status = response.status();
        let text = body_start(response).await;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()));
        }
        if robot {
            let answer: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| format!("not the robot's JSON: {text:.200}"))?;
            let code = answer.get("errcode").and_then(serde_json::Value::as_i64).unwrap_or(-1);
            if code != 0 {
                return Err(format!("the robot refused: {text:.200}"));
            }
        }
        Ok(())
    }
}

/// The first 64 KiB of a reply's body: a receiver cannot make the watch
/// hold more.
async fn body_start(mut response: reqwest::Response) -> String {
    const LIMIT: usize = 64 * 1024;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(LIMIT - body.len())]);
        if body.len() >= LIMIT {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// reqwest's error and its causes, without its URL, which may hold a token.
fn without_url(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// DingTalk's signed URL: `timestamp` in milliseconds and `sign`, the
/// Base64 of HMAC-SHA256 over "timestamp\nsecret" keyed by the secret.
pub fn dingtalk_signed(url: &str, secret: &str, timestamp: u128) -> Result<String, String> {
    let mut url = reqwest::Url::parse(url).map_err(|err| format!("url: {err}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|err| err.to_string())?;
    mac.update(format!("{timestamp}\n{secret}").as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp.to_string())
        .append_pair("sign", &sign);
    Ok(url.into())
}

fn mailer(mail: &Mail, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let builder = match mail.tls {
        MailTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&mail.server).map_err(|err| err.to_string())?
        }
        MailTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&mail.server).map_err(|err| err.to_string())?,
        MailTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.server),
    };
    let mut builder = builder.port(mail.port).timeout(Some(timeout));
    if let (Some(username), Some(password)) = (&mail.username, &mail.password) {
        builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dingtalk_signature_is_dingtalks_example() {
        // Worked by hand with openssl:
        // printf '1700000000000\nSECret' | openssl dgst -sha256 -hmac SECret -binary | base64
        let url = dingtalk_signed(
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
            "SECret",
            1_700_000_000_000,
        )
        .unwrap();
        let parsed = reqwest::Url::parse(&url).unwrap();
        let pairs: HashMap<String, String> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(pairs["access_token"], "abc");
        assert_eq!(pairs["timestamp"], "1700000000000");
        let expected = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '1700000000000\\nSECret' | openssl dgst -sha256 -hmac SECret -binary | base64")
            .output()
            .expect("openssl runs");
        assert_eq!(pairs["sign"], String::from_utf8(expected.stdout).unwrap().trim());
    }
}
