//! How `altinn-events import` shows its progress: a bar on a terminal
//! (rows/s and ETA), a line every ten seconds otherwise, and a summary.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use altinn_events::import::{Report, Status};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Display {
    bar: Option<ProgressBar>,
    /// Without a terminal: when the last line was written, and where it stood.
    last: Mutex<Option<(Instant, u64)>>,
    started: Instant,
}

impl Display {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] sequenceno {pos}/{len} {per_sec} ETA {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        Self { bar, last: Mutex::new(None), started: Instant::now() }
    }

    pub fn show(&self, s: &Status) {
        let message = format!("{} events, {} skipped, {} gaps watched", s.events, s.skipped, s.gaps);
        if let Some(bar) = &self.bar {
            bar.set_length(s.head.max(s.events_through));
            bar.set_position(s.events_through);
            bar.set_message(message);
            return;
        }
        let mut last = self.last.lock().expect("display lock");
        let due = last.is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(10));
        if due {
            let rate = match *last {
                Some((at, through)) => s.events_through.saturating_sub(through) as f64 / at.elapsed().as_secs_f64(),
                None => 0.0,
            };
            tracing::info!(
                sequenceno = s.events_through,
                head = s.head,
                rows_per_second = rate.round(),
                elapsed_s = self.started.elapsed().as_secs(),
                "{message}"
            );
            *last = Some((Instant::now(), s.events_through));
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// What the run did, on standard output.
pub fn summary(report: &Report) {
    let p = &report.progress;
    let s = &report.subscriptions;
    println!("import: events imported through sequenceno {}", p.events_through);
    println!("  events: {} this run, {} in all", report.events_this_run, p.events);
    println!(
        "  subscriptions: {} created, {} updated, {} unchanged, {} deleted, {} skipped",
        s.created, s.updated, s.unchanged, s.deleted, s.skipped
    );
    println!("  gaps watched (numbers without a row yet): {}", p.gaps.len());
    if report.events_this_run > 0 {
        println!(
            "  Cosmos DB requests: {} ({:.2} per event imported this run)",
            report.cosmos_requests,
            report.cosmos_requests as f64 / report.events_this_run as f64
        );
        println!(
            "    {:.0} RU; {} sequence numbers taken by another writer; {} look-ups for rows written before",
            report.store.request_charge, report.store.seq_conflicts, report.store.maybe_stored_lookups
        );
    }
    match &report.cut_over {
        Some(c) => println!(
            "  cut-over: {} imported subscriptions are pushed everything after sequenceno {}",
            c.subscriptions, c.at
        ),
        None => {
            if let Some(at) = p.cut_over {
                println!("  cut-over: made earlier, at sequenceno {at}");
            }
        }
    }
    println!("  skipped rows: {} events, {} subscriptions", p.skipped_count, p.skipped_subscriptions.len());
    for skipped in p.skipped.iter().chain(&p.skipped_subscriptions).take(50) {
        println!("    {} {}: {}", skipped.table, skipped.row, skipped.reason);
    }
    let listed = p.skipped.len() + p.skipped_subscriptions.len();
    if listed > 50 {
        println!("    ... {} more in the progress document (pk \"import\", id \"progress\")", listed - 50);
    }
}
