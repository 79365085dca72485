//! Backfill progress: a bar with blocks and events per second and an ETA on a terminal,
//! structured logs every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::ProgressMode;
use crate::backfill::Progress;

/// A running reporter; `finish` stops it.
#[derive(Debug)]
pub struct Reporter {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    /// Stops reporting (and clears the bar).
    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Starts reporting `progress`.
pub fn spawn(mode: ProgressMode, progress: Arc<Progress>, started: Instant) -> Reporter {
    if mode == ProgressMode::Off {
        return Reporter { task: None, bar: None };
    }
    let terminal = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
    if terminal {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} backfill [{bar:30}] block {pos}/{len} {msg} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let (from, to) = (progress.from.load(Ordering::Relaxed), progress.to.load(Ordering::Relaxed));
                let done = progress.delivered_block.load(Ordering::Relaxed).max(from.saturating_sub(1));
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let logs = progress.delivered_logs.load(Ordering::Relaxed);
                b.set_length(to.saturating_sub(from) + 1);
                b.set_position((done + 1).saturating_sub(from));
                b.set_message(format!(
                    "{:.0} blocks/s {:.0} events/s ({logs} events)",
                    (done + 1).saturating_sub(from) as f64 / secs,
                    logs as f64 / secs
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        return Reporter { task: Some(task), bar: Some(bar) };
    }
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (from, to) = (progress.from.load(Ordering::Relaxed), progress.to.load(Ordering::Relaxed));
            let done = progress.delivered_block.load(Ordering::Relaxed);
            let logs = progress.delivered_logs.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let blocks = (done + 1).saturating_sub(from);
            let rate = blocks as f64 / secs;
            let eta = if rate > 0.0 { (to.saturating_sub(done)) as f64 / rate } else { f64::INFINITY };
            tracing::info!(
                block = done,
                to,
                events = logs,
                blocks_per_sec = rate as u64,
                events_per_sec = (logs as f64 / secs) as u64,
                eta_secs = eta as u64,
                "backfill progress"
            );
        }
    });
    Reporter { task: Some(task), bar: None }
}
