//! `watch`: the domain watch, once (for cron) or until stopped.

use std::io::Write;

use anyhow::Context;

use super::WatchArgs;
use crate::config::LookupMode;
use crate::tools::live::{Answerer, LiveSource};
use crate::watch::{message, StateStore, WatchConfig, Watcher};

/// Runs `watch`; true when `--once` confirmed a change.
pub async fn watch(args: WatchArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<bool> {
    let config = WatchConfig::load(&args.config)?;
    // With --addr or --data the database, if any, keeps only the state.
    let lookups_from_database = args.addr.is_none() && args.data.is_none();
    let answerer = Answerer::open(&LiveSource {
        addr: args.addr.as_deref(),
        data: args.data.as_deref(),
        database_url: args.database_url.as_deref().filter(|_| lookups_from_database),
        mmdb: args.mmdb.as_deref(),
        lang: config.lang.as_deref(),
        connections: 1,
        timeout: args.timeout,
        lookup: LookupMode::Postgres,
    })
    .await?;
    let store = match &args.database_url {
        Some(url) => StateStore::open_postgres(url).await?,
        None => StateStore::open_file(&args.state, config.history)?,
    };
    let names = config.domains.len();
    let mut watcher = Watcher::start(config, answerer, store, args.listen).await?;
    if let Some(listening) = watcher.listening {
        tracing::info!(%listening, "watch status listening");
    }
    if !args.once {
        tracing::info!(names, "watching");
        watcher.run(shutdown).await;
        watcher.finish().await;
        return Ok(false);
    }
    let changes = watcher.once().await?;
    watcher.finish().await;
    let mut out = std::io::stdout().lock();
    for change in &changes {
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(change).context("cannot encode a change")?
            )?;
        } else {
            writeln!(out, "{}\n", message::text(change))?;
        }
    }
    Ok(!changes.is_empty())
}
