//! The live status: what the GraphQL API says (the indexed head, jobs by outcome network-wide
//! and for our worker, the latest releases' lag), put in one line refreshed in place on a
//! terminal, and a fuller summary printed now and then.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use serde::Deserialize;

/// Jobs by outcome (one `jobStats` bucket, or their sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Counts {
    pub(super) submitted: u64,
    pub(super) acknowledged: u64,
    pub(super) completed: u64,
    pub(super) released: u64,
    pub(super) timed_out: u64,
    pub(super) settled: u64,
    pub(super) disputed: u64,
    pub(super) guilty: u64,
    pub(super) not_guilty: u64,
    pub(super) defaulted: u64,
}

impl Counts {
    fn add(mut self, o: &Counts) -> Counts {
        self.submitted += o.submitted;
        self.acknowledged += o.acknowledged;
        self.completed += o.completed;
        self.released += o.released;
        self.timed_out += o.timed_out;
        self.settled += o.settled;
        self.disputed += o.disputed;
        self.guilty += o.guilty;
        self.not_guilty += o.not_guilty;
        self.defaulted += o.defaulted;
        self
    }
}

/// One reading of the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// The indexed head.
    pub(super) block: u64,
    /// Every worker's jobs.
    pub(super) all: Counts,
    /// Our worker's (when we run one).
    pub(super) ours: Option<Counts>,
    /// Release lag (seconds after the first second a release could land) of the latest releases.
    pub(super) lags: Vec<u64>,
}

const FIELDS: &str = "submitted acknowledged completed released timedOut settled disputed guilty notGuilty defaulted";

/// The query behind a snapshot.
fn query(ours: Option<Address>) -> String {
    let ours = match ours {
        Some(w) => format!("ours: jobStats(worker: \"{w}\", bucket: DAY) {{ {FIELDS} }}"),
        None => String::new(),
    };
    format!(
        "{{ indexerStatus {{ block }} all: jobStats(bucket: DAY) {{ {FIELDS} }} {ours} \
         recent: jobs(filter: {{ states: [RELEASED] }}, first: 20) {{ nodes {{ releaseLag }} }} }}"
    )
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
    errors: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    indexer_status: Block,
    all: Vec<Counts>,
    ours: Option<Vec<Counts>>,
    recent: Page,
}

#[derive(Deserialize)]
struct Block {
    block: u64,
}

#[derive(Deserialize)]
struct Page {
    nodes: Vec<Lag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lag {
    release_lag: Option<i64>,
}

/// Reads the API at `graphql` (the `/graphql` URL).
pub(super) async fn read(http: &reqwest::Client, graphql: &str, ours: Option<Address>) -> anyhow::Result<Snapshot> {
    let body = serde_json::json!({ "query": query(ours) });
    let answer: Answer = http.post(graphql).json(&body).send().await?.error_for_status()?.json().await?;
    let data = match (answer.data, answer.errors) {
        (Some(d), None) => d,
        (_, errors) => anyhow::bail!("the API answered with errors: {}", errors.unwrap_or_default()),
    };
    let sum = |buckets: &[Counts]| buckets.iter().fold(Counts::default(), |acc, b| acc.add(b));
    Ok(Snapshot {
        block: data.indexer_status.block,
        all: sum(&data.all),
        ours: data.ours.as_deref().map(sum),
        lags: data.recent.nodes.iter().filter_map(|n| n.release_lag).map(|l| l.max(0) as u64).collect(),
    })
}

/// What the status line says about our worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ours {
    /// No LLM server: only simulated workers serve.
    None,
    /// Waiting for the LLM server (drained meanwhile); how it is going.
    Waiting(String),
    /// Serving.
    Serving,
}

/// The one-line status.
pub(super) fn line(s: &Snapshot, ours: &Ours, reorgs: Option<u64>) -> String {
    let mut parts = vec![format!("block {}", s.block)];
    match (ours, s.ours) {
        (Ours::None, _) => parts.push("simulated workers only".into()),
        (Ours::Waiting(how), _) => parts.push(format!("LLM server: {how}")),
        (Ours::Serving, Some(o)) => parts.push(format!("our worker: {} served, {} released", o.completed, o.released)),
        (Ours::Serving, None) => parts.push("our worker: 0 served".into()),
    }
    parts.push(format!("all: {} of {} jobs released", s.all.released, s.all.submitted));
    parts.push(match lag(&s.lags) {
        Some((p50, max)) => format!("release lag {p50} s (max {max} s)"),
        None => "release lag -".into(),
    });
    if let Some(n) = reorgs {
        parts.push(format!("reorgs {n}"));
    }
    parts.join(" · ")
}

/// The fuller summary: every outcome, network-wide and for our worker.
pub(super) fn summary(s: &Snapshot, up: Duration) -> String {
    let a = &s.all;
    let mut text = format!(
        "[{}] block {}: {} jobs, {} acknowledged, {} completed, {} released, {} timed out, {} settled without \
         fault, {} disputed ({} guilty, {} not guilty, {} defaulted)",
        duration(up),
        s.block,
        a.submitted,
        a.acknowledged,
        a.completed,
        a.released,
        a.timed_out,
        a.settled,
        a.disputed,
        a.guilty,
        a.not_guilty,
        a.defaulted
    );
    if let Some(o) = &s.ours {
        text.push_str(&format!(
            "; our worker: {} acknowledged, {} completed, {} released, {} disputed",
            o.acknowledged, o.completed, o.released, o.disputed
        ));
    }
    text
}

/// Median and maximum of the lags.
fn lag(lags: &[u64]) -> Option<(u64, u64)> {
    let mut sorted = lags.to_vec();
    sorted.sort_unstable();
    let max = *sorted.last()?;
    Some((sorted[(sorted.len() - 1) / 2], max))
}

/// `4m05s`, `1h02m`, `12s`.
pub(super) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Where messages and the status line go (stderr). On a terminal the status line is redrawn in
/// place and messages scroll above it; elsewhere (a log, a pipe) the status is printed as a plain
/// line every `every`.
#[derive(Debug)]
pub(super) struct Screen {
    tty: bool,
    width: usize,
    shown: bool,
    every: Duration,
    last_plain: Option<Instant>,
}

impl Screen {
    pub(super) fn new(every: Duration) -> Screen {
        let tty = std::io::stderr().is_terminal();
        Screen { tty, width: if tty { terminal_width() } else { usize::MAX }, shown: false, every, last_plain: None }
    }

    /// A message, above the status line.
    pub(super) fn say(&mut self, message: &str) {
        let mut err = std::io::stderr().lock();
        if self.shown {
            let _ = write!(err, "\r\x1b[2K");
            self.shown = false;
        }
        let _ = writeln!(err, "{message}");
    }

    /// Clears the status line (before printing to stdout, and at the end).
    pub(super) fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            self.shown = false;
        }
    }

    /// The status line.
    pub(super) fn status(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", fit(line, self.width.saturating_sub(1)));
            let _ = err.flush();
            self.shown = true;
        } else if self.last_plain.is_none_or(|t| t.elapsed() >= self.every) {
            let _ = writeln!(err, "status: {line}");
            self.last_plain = Some(Instant::now());
        }
    }
}

/// `line` cut to `width` characters (an ellipsis marks the cut).
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The terminal's columns (`stty size` on the controlling terminal), 80 when unknown.
fn terminal_width() -> usize {
    let tty = std::fs::File::open("/dev/tty");
    let out = tty.ok().and_then(|t| std::process::Command::new("stty").arg("size").stdin(t).output().ok());
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).and_then(|c| c.parse().ok()))
        .filter(|c: &usize| *c > 20)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            block: 412,
            all: Counts { submitted: 230, released: 151, ..Counts::default() },
            ours: Some(Counts { completed: 14, released: 9, ..Counts::default() }),
            lags: vec![1, 0, 0, 2, 0],
        }
    }

    #[test]
    fn the_status_line_names_head_our_jobs_releases_and_lag() {
        let line = line(&snapshot(), &Ours::Serving, Some(1));
        assert_eq!(
            line,
            "block 412 · our worker: 14 served, 9 released · all: 151 of 230 jobs released · release lag 0 s \
             (max 2 s) · reorgs 1"
        );
    }

    #[test]
    fn the_status_line_says_why_our_worker_does_not_serve() {
        let s = Snapshot { lags: Vec::new(), ..snapshot() };
        let waiting = line(&s, &Ours::Waiting("building llama-server: 45%, 3m10s".into()), None);
        assert!(waiting.starts_with("block 412 · LLM server: building llama-server: 45%, 3m10s · all:"), "{waiting}");
        assert!(waiting.contains("release lag -"), "{waiting}");
        assert!(!waiting.contains("reorgs"), "{waiting}");
        assert!(line(&s, &Ours::None, None).contains("simulated workers only"));
    }

    #[test]
    fn the_summary_counts_every_outcome() {
        let mut s = snapshot();
        s.all = Counts {
            submitted: 10,
            acknowledged: 9,
            completed: 8,
            released: 4,
            timed_out: 1,
            settled: 1,
            disputed: 3,
            guilty: 1,
            not_guilty: 1,
            defaulted: 1,
        };
        let text = summary(&s, Duration::from_secs(125));
        assert!(text.starts_with("[2m05s] block 412: 10 jobs,"), "{text}");
        for part in
            ["4 released", "1 timed out", "1 settled without fault", "3 disputed (1 guilty, 1 not guilty, 1 defaulted)"]
        {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert!(text.contains("our worker: 0 acknowledged, 14 completed, 9 released"), "{text}");
    }

    #[test]
    fn buckets_add_up_and_lines_fit_the_terminal() {
        let a = Counts { submitted: 2, released: 1, ..Counts::default() };
        assert_eq!(a.add(&a), Counts { submitted: 4, released: 2, ..Counts::default() });
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(duration(Duration::from_secs(59)), "59s");
    }

    #[test]
    fn the_query_asks_for_our_worker_only_when_there_is_one() {
        assert!(!query(None).contains("ours:"));
        let q = query(Some(Address::repeat_byte(0xab)));
        assert!(q.contains("ours: jobStats(worker: \"0xABaB"), "{q}");
    }
}
