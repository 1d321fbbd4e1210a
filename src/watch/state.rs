//! Where the watch keeps what it has confirmed and alerted: PostgreSQL
//! when a database is given (tables `watch_names`, `watch_events`), else a
//! local JSON file replaced atomically. A restart reads it back, so that
//! nothing alerted is alerted again and nothing pending is lost.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::change::{Change, NameState};
use crate::data::store;

/// A confirmed change as kept, with what became of its alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub change: Change,
    /// Route name to what became of the alert there.
    pub deliveries: BTreeMap<String, Delivery>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Pending,
    Sent,
    Failed,
}

/// What a store holds at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Shared with the store and the status board: a watch of many names
    /// keeps one copy of each state.
    pub names: HashMap<String, Arc<NameState>>,
    /// The latest events of each name, oldest first, at most `history`.
    pub recent: Vec<Event>,
    /// Events with an alert still to send.
    pub undelivered: Vec<Event>,
}

pub enum StateStore {
    File(FileStore),
    Postgres(PgStore),
}

impl StateStore {
    pub async fn open_postgres(database_url: &str) -> anyhow::Result<StateStore> {
        store::migrate(database_url)
            .await
            .context("cannot migrate the watch's tables")?;
        Ok(StateStore::Postgres(PgStore {
            url: database_url.to_owned(),
            client: Mutex::new(None),
        }))
    }

    pub fn open_file(path: &Path, history: usize) -> anyhow::Result<StateStore> {
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a watch state file", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => FileData::default(),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(StateStore::File(FileStore {
            path: path.to_owned(),
            history,
            data: Mutex::new(data),
        }))
    }

    pub async fn load(&self, history: usize) -> anyhow::Result<Loaded> {
        match self {
            StateStore::File(file) => Ok(file.load(history).await),
            StateStore::Postgres(pg) => pg.load(history).await,
        }
    }

    /// Keeps the names' new states and their new events (ids assigned),
    /// all or nothing.
    pub async fn save(&self, states: &[(String, Arc<NameState>)], events: Vec<Event>) -> anyhow::Result<Vec<Event>> {
        match self {
            StateStore::File(file) => file.save(states, events).await,
            StateStore::Postgres(pg) => pg.save(states, events).await,
        }
    }

    /// Records what became of one route's alert.
    pub async fn delivered(&self, id: u64, route: &str, delivery: Delivery) -> anyhow::Result<()> {
        match self {
            StateStore::File(file) => file.delivered(id, route, delivery).await,
            StateStore::Postgres(pg) => pg.delivered(id, route, delivery).await,
        }
    }
}

// The file.

#[derive(Default, Serialize, Deserialize)]
struct FileData {
    names: HashMap<String, Arc<NameState>>,
    events: Vec<Event>,
    next_id: u64,
}

pub struct FileStore {
    path: PathBuf,
    history: usize,
    data: Mutex<FileData>,
}

impl FileStore {
    async fn load(&self, history: usize) -> Loaded {
        let data = self.data.lock().await;
        Loaded {
            names: data.names.clone(),
            recent: latest_per_name(&data.events, history),
            undelivered: data.events.iter().filter(|event| has_pending(event)).cloned().collect(),
        }
    }

    async fn save(&self, states: &[(String, Arc<NameState>)], events: Vec<Event>) -> anyhow::Result<Vec<Event>> {
        let mut data = self.data.lock().await;
        let before_names: Vec<(String, Option<Arc<NameState>>)> = states
            .iter()
            .map(|(name, _)| (name.clone(), data.names.get(name).cloned()))
            .collect();
        let before_events = data.events.len();
        let before_id = data.next_id;
        let mut saved = Vec::with_capacity(events.len());
        for mut event in events {
            data.next_id += 1;
            event.id = data.next_id;
            data.events.push(event.clone());
            saved.push(event);
        }
        for (name, state) in states {
            data.names.insert(name.clone(), state.clone());
        }
        if let Err(err) = self.write(&mut data).await {
            // Leave memory as the file is.
            data.events.truncate(before_events);
            data.next_id = before_id;
            for (name, state) in before_names {
                match state {
                    Some(state) => data.names.insert(name, state),
                    None => data.names.remove(&name),
                };
            }
            return Err(err);
        }
        Ok(saved)
    }

    async fn delivered(&self, id: u64, route: &str, delivery: Delivery) -> anyhow::Result<()> {
        let mut data = self.data.lock().await;
        if let Some(event) = data.events.iter_mut().find(|event| event.id == id) {
            event.deliveries.insert(route.to_owned(), delivery);
        }
        self.write(&mut data).await
    }

    /// Trims the history, then replaces the file: a temporary file beside
    /// it, synced, renamed over it, and the directory synced. The writing
    /// and syncing run on a blocking thread: an fsync can take seconds on
    /// a busy disk, which a runtime worker should not wait out.
    async fn write(&self, data: &mut FileData) -> anyhow::Result<()> {
        let keep = latest_per_name(&data.events, self.history);
        let keep_ids: std::collections::HashSet<u64> = keep.iter().map(|event| event.id).collect();
        data.events
            .retain(|event| keep_ids.contains(&event.id) || has_pending(event));
        let bytes = serde_json::to_vec(&*data).context("cannot encode the watch state")?;
        let path = self.path.clone();
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default()
        ));
        let write = move || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        tokio::task::spawn_blocking(write)
            .await
            .context("the state writer stopped")?
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

fn has_pending(event: &Event) -> bool {
    event.deliveries.values().any(|delivery| *delivery == Delivery::Pending)
}

/// Each name's last `history` events, oldest first.
fn latest_per_name(events: &[Event], history: usize) -> Vec<Event> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut kept: Vec<Event> = events
        .iter()
        .rev()
        .filter(|event| {
            let count = counts.entry(event.change.name.as_str()).or_default();
            *count += 1;
            *count <= history
        })
        .cloned()
        .collect();
    kept.reverse();
    kept
}

// PostgreSQL.

/// One connection, made again when it has been lost; every statement has
/// a time limit so that a stalled database cannot stall the rounds.
pub struct PgStore {
    url: String,
    client: Mutex<Option<tokio_postgres::Client>>,
}

const PG_TIMEOUT: Duration = Duration::from_secs(30);

impl PgStore {
    async fn with_client<T>(
        &self,
        work: impl AsyncFnOnce(&mut tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> anyhow::Result<T> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(|client| client.is_closed()) {
            let client = tokio::time::timeout(PG_TIMEOUT, store::connect(&self.url))
                .await
                .context("connecting to the watch's database timed out")??;
            *slot = Some(client);
        }
        let client = slot.as_mut().expect("just connected");
        match tokio::time::timeout(PG_TIMEOUT, work(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if client.is_closed() {
                    *slot = None;
                }
                Err(err).context("the watch's database refused")
            }
            Err(_) => {
                *slot = None;
                anyhow::bail!(
                    "the watch's database did not answer in {}",
                    humantime::format_duration(PG_TIMEOUT)
                )
            }
        }
    }

    async fn load(&self, history: usize) -> anyhow::Result<Loaded> {
        let (names, events) = self
            .with_client(async |client| {
                let names = client.query("SELECT name, state FROM watch_names", &[]).await?;
                let events = client
                    .query(
                        "SELECT id, change, deliveries FROM (
                            SELECT *, row_number() OVER (PARTITION BY name ORDER BY id DESC) AS nth FROM watch_events
                         ) e WHERE nth <= $1 OR jsonb_path_exists(deliveries, '$.* ? (@ == \"pending\")') ORDER BY id",
                        &[&(history as i64)],
                    )
                    .await?;
                Ok((names, events))
            })
            .await?;
        let mut loaded = Loaded::default();
        for row in names {
            let name: String = row.get(0);
            let state: serde_json::Value = row.get(1);
            let state =
                serde_json::from_value(state).with_context(|| format!("the watch state of {name} is unreadable"))?;
            loaded.names.insert(name, state);
        }
        let mut all = Vec::with_capacity(events.len());
        for row in events {
            let id: i64 = row.get(0);
            let event = Event {
                id: id as u64,
                change: serde_json::from_value(row.get(1))
                    .with_context(|| format!("watch event {id} is unreadable"))?,
                deliveries: serde_json::from_value(row.get(2))
                    .with_context(|| format!("watch event {id} is unreadable"))?,
            };
            all.push(event);
        }
        loaded.undelivered = all.iter().filter(|event| has_pending(event)).cloned().collect();
        loaded.recent = latest_per_name(&all, history);
        Ok(loaded)
    }

    async fn save(&self, states: &[(String, Arc<NameState>)], events: Vec<Event>) -> anyhow::Result<Vec<Event>> {
        let names: Vec<&str> = states.iter().map(|(name, _)| name.as_str()).collect();
        let values = states
            .iter()
            .map(|(_, state)| serde_json::to_value(&**state))
            .collect::<Result<Vec<_>, _>>()
            .context("cannot encode a watch state")?;
        let encoded = events
            .iter()
            .map(|event| {
                Ok((
                    serde_json::to_value(&event.change)?,
                    serde_json::to_value(&event.deliveries)?,
                ))
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .context("cannot encode a watch event")?;
        let ids = self
            .with_client(async |client| {
                let tx = client.transaction().await?;
                tx.execute(
                    "INSERT INTO watch_names (name, state)
                     SELECT * FROM unnest($1::text[], $2::jsonb[])
                     ON CONFLICT (name) DO UPDATE SET state = excluded.state, updated_at = now()",
                    &[&names, &values],
                )
                .await?;
                let mut ids = Vec::with_capacity(encoded.len());
                for (event, (change, deliveries)) in events.iter().zip(&encoded) {
                    let at = UNIX_EPOCH + Duration::from_secs(event.change.at);
                    let row = tx
                        .query_one(
                            "INSERT INTO watch_events (name, at, change, deliveries) VALUES ($1, $2, $3, $4) RETURNING id",
                            &[&event.change.name, &at, change, deliveries],
                        )
                        .await?;
                    ids.push(row.get::<_, i64>(0) as u64);
                }
                tx.commit().await?;
                Ok(ids)
            })
            .await?;
        Ok(events
            .into_iter()
            .zip(ids)
            .map(|(event, id)| Event { id, ..event })
            .collect())
    }

    async fn delivered(&self, id: u64, route: &str, delivery: Delivery) -> anyhow::Result<()> {
        let value = serde_json::to_value(delivery).expect("an enum encodes");
        self.with_client(async |client| {
            client
                .execute(
                    "UPDATE watch_events SET deliveries = jsonb_set(deliveries, ARRAY[$2::text], $3) WHERE id = $1",
                    &[&(id as i64), &route, &value],
                )
                .await
        })
        .await?;
        Ok(())
    }
}
