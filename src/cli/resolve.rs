//! `resolve`: where every address in a file or a log is, in bulk: from a
//! running server over Thrift, or offline from files or PostgreSQL. One
//! output row per input, in input order, then a summary.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use futures_util::stream::{FuturesOrdered, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{ResolveArgs, ResolveFormat};
use crate::answer::{self, csv_record, FIELDS};
use crate::config::LookupMode;
use crate::domain::{LookupError, Outcome};
use crate::thrift::{geo_info, GeoInfo};
use crate::tools::live::{Answerer, LiveSource};
use crate::tools::resolve::{address_in, Summary};

/// Longest line read; the rest of a longer one is skipped and the line
/// reported as invalid.
const MAX_LINE: u64 = 64 * 1024;

pub async fn resolve(args: ResolveArgs) -> anyhow::Result<()> {
    let mut input = Input::open(&args.files, args.field.map(usize::from), args.unique)?;
    let answerer = Answerer::open(&LiveSource {
        addr: args.addr.as_deref(),
        data: args.data.as_deref(),
        database_url: args.database_url.as_deref(),
        mmdb: args.mmdb.as_deref(),
        lang: args.lang.as_deref(),
        connections: args.connections,
        timeout: args.timeout,
        lookup: LookupMode::Postgres,
    })
    .await?;
    let mut output: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?),
        None => Box::new(io::stdout()),
    };
    let mut rows = Rows::new(BufWriter::with_capacity(1 << 20, &mut output), args.format)?;

    let progress = progress_bar();
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut in_flight = FuturesOrdered::new();
    // A server answerer has one client per connection, each for one batch.
    let depth = args.connections.max(1);
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < depth {
            let batch = input.next_batch(args.batch.max(1))?;
            if batch.is_empty() {
                exhausted = true;
            } else {
                in_flight.push_back(answer(answerer.clone(), batch));
            }
        }
        let Some(answers) = in_flight.next().await else { break };
        let answers = answers?;
        for g in &answers {
            summary.add(g);
            rows.write(g)?;
        }
        progress.inc(answers.len() as u64);
    }
    rows.finish()?;
    drop(rows);
    output.flush()?;
    progress.finish_and_clear();

    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} lines read, {} resolved in {seconds:.2} s ({:.0} addresses/s){}",
        input.lines,
        summary.answers,
        summary.answers as f64 / seconds.max(1e-9),
        if args.unique {
            " (each distinct address once)"
        } else {
            ""
        },
    );
    eprint!("{}", summary.render(args.summary));
    Ok(())
}

fn progress_bar() -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} addresses, {per_sec} [{elapsed}]")
            .expect("a valid template"),
    );
    bar
}

/// One input line's address, or why it has none.
enum Item {
    Address(String),
    Invalid { text: String, reason: String },
}

/// The lines of the input files (or standard input), in order, as items.
struct Input {
    readers: Vec<(String, Box<dyn BufRead + Send>)>,
    field: Option<usize>,
    /// Addresses seen so far, with `--unique`.
    seen: Option<HashSet<String>>,
    lines: u64,
    buf: Vec<u8>,
}

impl Input {
    /// Opens every file first, so that a missing one fails before any work.
    fn open(files: &[PathBuf], field: Option<usize>, unique: bool) -> anyhow::Result<Input> {
        let mut readers: Vec<(String, Box<dyn BufRead + Send>)> = Vec::new();
        if files.is_empty() {
            readers.push(("standard input".into(), Box::new(BufReader::new(io::stdin()))));
        }
        for path in files {
            if path == Path::new("-") {
                readers.push(("standard input".into(), Box::new(BufReader::new(io::stdin()))));
                continue;
            }
            let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            readers.push((
                path.display().to_string(),
                Box::new(BufReader::with_capacity(1 << 20, file)),
            ));
        }
        readers.reverse();
        Ok(Input {
            readers,
            field,
            seen: unique.then(HashSet::new),
            lines: 0,
            buf: Vec::new(),
        })
    }

    /// Up to `size` items; none once the input is exhausted.
    fn next_batch(&mut self, size: usize) -> anyhow::Result<Vec<Item>> {
        let mut batch = Vec::with_capacity(size.min(1 << 16));
        while batch.len() < size {
            let Some(line) = self.next_line()? else { break };
            self.lines += 1;
            let item = match line {
                Err(reason) => Item::Invalid {
                    text: String::new(),
                    reason,
                },
                Ok(line) => match address_in(&line, self.field) {
                    None => Item::Invalid {
                        text: String::new(),
                        reason: format!("line {} has no field {}", self.lines, self.field.unwrap_or(1)),
                    },
                    Some(address) => {
                        if let Some(seen) = &mut self.seen {
                            if !seen.insert(address.to_owned()) {
                                continue;
                            }
                        }
                        Item::Address(address.to_owned())
                    }
                },
            };
            batch.push(item);
        }
        Ok(batch)
    }

    /// The next line as text (invalid UTF-8 replaced), or why it was
    /// skipped; `None` at the end of the last input.
    fn next_line(&mut self) -> anyhow::Result<Option<Result<String, String>>> {
        loop {
            let Some((name, reader)) = self.readers.last_mut() else {
                return Ok(None);
            };
            self.buf.clear();
            let read = reader
                .by_ref()
                .take(MAX_LINE)
                .read_until(b'\n', &mut self.buf)
                .with_context(|| format!("cannot read {name}"))?;
            if read == 0 {
                self.readers.pop();
                continue;
            }
            if read as u64 == MAX_LINE && self.buf.last() != Some(&b'\n') {
                skip_line(reader.as_mut()).with_context(|| format!("cannot read {name}"))?;
                return Ok(Some(Err(format!("a line longer than {MAX_LINE} bytes"))));
            }
            return Ok(Some(Ok(String::from_utf8_lossy(&self.buf).into_owned())));
        }
    }
}

/// Reads past the rest of the current line.
fn skip_line(reader: &mut dyn BufRead) -> io::Result<()> {
    loop {
        let (done, used) = {
            let available = reader.fill_buf()?;
            match available.iter().position(|&b| b == b'\n') {
                Some(at) => (true, at + 1),
                None => (available.is_empty(), available.len()),
            }
        };
        reader.consume(used);
        if done {
            return Ok(());
        }
    }
}

/// The answers for one batch of input items, in order: the addresses
/// answered together, the invalid lines as error 1 in their places.
async fn answer(answerer: Answerer, batch: Vec<Item>) -> anyhow::Result<Vec<GeoInfo>> {
    let addresses: Vec<String> = batch
        .iter()
        .filter_map(|item| match item {
            Item::Address(address) => Some(address.clone()),
            Item::Invalid { .. } => None,
        })
        .collect();
    let mut answers = answerer.answer(addresses).await?.into_iter();
    let merged = batch
        .into_iter()
        .map(|item| match item {
            Item::Address(_) => answers.next().expect("one answer per address"),
            Item::Invalid { text, reason } => {
                let outcome: Outcome = Err(LookupError::InvalidIp(reason));
                geo_info(&text, &outcome)
            }
        })
        .collect();
    Ok(merged)
}

/// The output rows: CSV with a header, or JSON lines.
enum Rows<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Json(W),
}

impl<W: Write> Rows<W> {
    fn new(out: W, format: ResolveFormat) -> anyhow::Result<Rows<W>> {
        Ok(match format {
            ResolveFormat::Csv => {
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(FIELDS.map(|field| field.name))?;
                Rows::Csv(Box::new(csv))
            }
            ResolveFormat::Jsonl => Rows::Json(out),
        })
    }

    fn write(&mut self, g: &GeoInfo) -> anyhow::Result<()> {
        match self {
            Rows::Json(out) => {
                let mut line = answer::json(g);
                line.push(b'\n');
                out.write_all(&line)?;
            }
            Rows::Csv(csv) => {
                csv.write_record(csv_record(g))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Rows::Csv(csv) => csv.flush()?,
            Rows::Json(out) => out.flush()?,
        }
        Ok(())
    }
}
