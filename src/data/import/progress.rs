//! Import progress: a bar on a terminal, a log line every few seconds
//! otherwise (cron, CI, a pipe).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    table: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    logged: Instant,
}

impl Progress {
    pub fn new(table: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {human_pos}/{human_len} rows, {per_sec:0}, eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(table);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            table,
            total,
            done: 0,
            started: now,
            logged: now,
        }
    }

    pub fn add(&mut self, rows: u64) {
        self.done += rows;
        match &self.bar {
            Some(bar) => bar.inc(rows),
            None if self.logged.elapsed() >= LOG_EVERY => {
                self.logged = Instant::now();
                let rate = self.done as f64 / self.started.elapsed().as_secs_f64();
                info!(
                    table = self.table,
                    rows = self.done,
                    total = self.total,
                    rows_per_sec = rate as u64,
                    "loading"
                );
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
