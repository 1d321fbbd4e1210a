use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use xm_ip_service::cli::{self, Cli, Command, LogFormat};
use xm_ip_service::serve::startup::{Application, ReloadHandle};

fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    if let Err(err) = run(cli.command) {
        eprintln!("xm-ip-service: {}", one_line(&err));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping a cause whose text an
/// outer message already includes (tokio-postgres repeats its cause).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Query(args) => {
            if !cli::query(args)? {
                std::process::exit(cli::SOME_UNANSWERED);
            }
            Ok(())
        }
        Command::Resolve(args) => runtime()?.block_on(cli::resolve(args)),
        Command::Audit(args) => runtime()?.block_on(cli::audit(args)),
        Command::Watch(args) => {
            let runtime = runtime()?;
            let changed = runtime.block_on(cli::watch(args, shutdown_signal()))?;
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            if changed {
                std::process::exit(cli::CHANGED);
            }
            Ok(())
        }
        Command::Bench(options) => cli::bench(options),
        Command::Compare(options) => {
            if !cli::compare(options)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Import(args) => runtime()?.block_on(cli::import(args)),
        Command::Export { database_url, table } => runtime()?.block_on(cli::export(&database_url, table)),
        Command::Check { database_url, table } => {
            if !runtime()?.block_on(cli::check(&database_url, &table))? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate { database_url } => runtime()?.block_on(cli::migrate(&database_url)),
        Command::Serve(settings) => {
            let runtime = runtime()?;
            let served = runtime.block_on(async {
                let app = Application::build(&settings).await?;
                tokio::spawn(reload_on_hangup(app.reload_handle()));
                app.run_until_stopped(shutdown_signal()).await;
                Ok(())
            });
            // A table rebuild still running on a blocking thread must not
            // hold up the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            served
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_tracing(format: LogFormat) {
    // tokio-postgres logs every server NOTICE ("relation ... already exists,
    // skipping") at INFO; those are chatter, not events.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres::connection=warn,refinery_core=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// SIGHUP asks for new data now: the mmdb file and the in-memory tables.
async fn reload_on_hangup(reload: ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return tracing::warn!("cannot install a SIGHUP handler; reloads wait for the timer");
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: checking for new data");
            reload.reload();
        }
    }
    #[cfg(not(unix))]
    let _ = reload;
}
