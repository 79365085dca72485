//! Exact latency histograms: counts per whole second, merged across hours, workers and models,
//! and read as percentiles. Stored in `rollups_hourly` as `"seconds:count"` pairs, ascending and
//! space-separated (an empty string is an empty histogram).

use std::collections::BTreeMap;
use std::fmt;

/// Counts of latencies by whole seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<u64, u64>,
}

/// A stored histogram that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("latency histogram {0:?} is not \"seconds:count\" pairs")]
pub struct BadHistogram(pub String);

impl Histogram {
    /// Reads the stored form.
    pub fn parse(text: &str) -> Result<Self, BadHistogram> {
        let mut h = Histogram::default();
        h.merge_text(text)?;
        Ok(h)
    }

    /// Adds the stored form `text` to this histogram.
    pub fn merge_text(&mut self, text: &str) -> Result<(), BadHistogram> {
        for pair in text.split_ascii_whitespace() {
            let parsed = pair.split_once(':').and_then(|(s, c)| Some((s.parse().ok()?, c.parse().ok()?)));
            let (secs, count): (u64, u64) = parsed.ok_or_else(|| BadHistogram(text.to_owned()))?;
            *self.counts.entry(secs).or_default() += count;
        }
        Ok(())
    }

    /// Counts one latency.
    pub fn record(&mut self, secs: u64) {
        *self.counts.entry(secs).or_default() += 1;
    }

    /// Adds `text`'s counts plus one `secs` and returns the stored form (the indexer's update).
    pub fn recorded(text: &str, secs: u64) -> Result<String, BadHistogram> {
        let mut h = Histogram::parse(text)?;
        h.record(secs);
        Ok(h.to_string())
    }

    /// Number of latencies counted.
    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The smallest latency `v` such that at least `q` (0..=1) of all latencies are `<= v`
    /// (nearest rank); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (secs, count) in &self.counts {
            seen += count;
            if seen >= rank {
                return Some(*secs);
            }
        }
        self.counts.keys().next_back().copied()
    }
}

impl fmt::Display for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (secs, count)) in self.counts.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{secs}:{count}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_merges() {
        let mut h = Histogram::parse("").unwrap();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), None);
        for s in [3, 1, 3, 2, 3] {
            h.record(s);
        }
        assert_eq!(h.to_string(), "1:1 2:1 3:3");
        h.merge_text("2:4 10:1").unwrap();
        assert_eq!(h.to_string(), "1:1 2:5 3:3 10:1");
        assert_eq!(Histogram::recorded("1:1", 1).unwrap(), "1:2");
    }

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100, one each: p50 = 50, p95 = 95, p100 = 100, p0 = 1.
        let mut h = Histogram::default();
        (1..=100).for_each(|s| h.record(s));
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.95), Some(95));
        assert_eq!(h.quantile(1.0), Some(100));
        assert_eq!(h.quantile(0.0), Some(1));
        // 9 fast, 1 slow: p50 fast, p95 slow.
        let h = Histogram::parse("2:9 30:1").unwrap();
        assert_eq!(h.quantile(0.5), Some(2));
        assert_eq!(h.quantile(0.95), Some(30));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Histogram::parse("1:2 x").is_err());
        assert!(Histogram::parse("1-2").is_err());
    }
}
