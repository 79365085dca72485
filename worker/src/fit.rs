//! Memory fit of the served model set. Every model a worker serves stays loaded at the same time
//! (pinned warm), so their footprints add up; a set that does not fit in memory swaps, answers
//! late and gets the worker slashed for timeouts.
//!
//! [`Fit::judge`] is the pure decision: the set fits, fits with less than [`HEADROOM`] of the
//! limit to spare (warn), or does not fit (refuse), naming the fewest models whose removal makes
//! it fit. [`assess`] is the shell that asks the LLM server for the footprints
//! ([`Llm::footprints`]) and the machine for its memory ([`machine::detect`]); `lcw preflight`,
//! `register`, `add-models` and the worker's start ([`check_at_start`]) call it.

use std::fmt::Write as _;

use tracing::{info, warn};

use crate::llm::{Footprint, Llm, LlmError};

pub mod machine;

pub use machine::{Limit, LimitSource, human_bytes, parse_size};

/// Below this share of the limit left free, a set that fits is warned about.
pub const HEADROOM: f64 = 0.10;

/// Why the fit could not be judged, or why the set is refused.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The machine's memory could not be read.
    #[error("cannot read {path}: {source}; give the memory with --memory-limit (LCW_MEMORY_LIMIT), e.g. 8GiB")]
    Memory {
        /// The file.
        path: String,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/meminfo` lacks `MemTotal` (not Linux, or a sandbox).
    #[error("/proc/meminfo has no MemTotal; give the memory with --memory-limit (LCW_MEMORY_LIMIT), e.g. 8GiB")]
    NoMemTotal,
    /// The footprints could not be read from the LLM server.
    #[error("cannot size the models on the LLM server: {0}")]
    Llm(#[from] LlmError),
    /// The set does not fit; the message names every size and what to remove.
    #[error("{}", .0.refusal(""))]
    TooBig(Box<Fit>),
}

/// One model of the set, sized.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The model's name.
    pub model: String,
    /// Bytes of machine memory it holds while loaded.
    pub bytes: u64,
    /// Whether the operation being checked adds it (it is not served yet).
    pub added: bool,
    /// What the figure includes and where it came from.
    pub detail: String,
}

impl Entry {
    /// The entry for a footprint the server reported.
    pub fn of(footprint: &Footprint, added: bool) -> Entry {
        Entry { model: footprint.model.clone(), bytes: footprint.ram(), added, detail: footprint.describe() }
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// At least [`HEADROOM`] of the limit is left free.
    Fits,
    /// It fits with less than [`HEADROOM`] to spare: the OS, the LLM server's buffers and page
    /// cache have little room.
    Tight,
    /// It does not fit; removing these models (the fewest, then preferring models not added yet)
    /// makes it fit.
    TooBig {
        /// The models to remove.
        remove: Vec<String>,
    },
}

/// A judged set.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// The sized models.
    pub entries: Vec<Entry>,
    /// Models the LLM server does not serve or reports no size for: not counted.
    pub unknown: Vec<String>,
    /// The memory the set must fit in.
    pub limit: Limit,
    /// The decision.
    pub verdict: Verdict,
}

impl Fit {
    /// Judges `entries` against `limit`.
    pub fn judge(entries: Vec<Entry>, unknown: Vec<String>, limit: Limit) -> Fit {
        let total: u64 = entries.iter().map(|e| e.bytes).sum();
        let verdict = if total > limit.bytes {
            let remove = smallest_removal(&entries, total - limit.bytes);
            Verdict::TooBig { remove: remove.into_iter().map(|i| entries[i].model.clone()).collect() }
        } else if ((limit.bytes - total) as f64) < HEADROOM * limit.bytes as f64 {
            Verdict::Tight
        } else {
            Verdict::Fits
        };
        Fit { entries, unknown, limit, verdict }
    }

    /// Bytes the set holds.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// The share of the limit left free (negative when the set does not fit).
    pub fn headroom(&self) -> f64 {
        (self.limit.bytes as f64 - self.total() as f64) / self.limit.bytes.max(1) as f64
    }

    /// `gemma3-270m 272.6 MiB (…); total 272.6 MiB of 8.0 GiB (--memory-limit), 96.7 % free`.
    pub fn sizes(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            let _ = write!(s, "{} {} ({}); ", e.model, human_bytes(e.bytes), e.detail);
        }
        let _ = write!(
            s,
            "total {} of {} ({})",
            human_bytes(self.total()),
            human_bytes(self.limit.bytes),
            self.limit.source
        );
        let free = self.headroom();
        if free >= 0.0 {
            let _ = write!(s, ", {:.1} % free", free * 100.0);
        } else {
            let _ = write!(s, ", {} over", human_bytes(self.total() - self.limit.bytes));
        }
        if !self.unknown.is_empty() {
            let _ = write!(
                s,
                "; size unknown, not counted (not served, or the server reports no size): {}",
                self.unknown.join(", ")
            );
        }
        s
    }

    /// The refusal of a set that does not fit, with the fix; `network_flag` (` --network X`)
    /// goes into the `lcw` commands. Empty when the set fits.
    pub fn refusal(&self, network_flag: &str) -> String {
        match self.fix(network_flag) {
            Some(fix) if matches!(self.verdict, Verdict::TooBig { .. }) => {
                format!("the served models do not fit in memory together (each stays loaded): {}; {fix}", self.sizes())
            }
            _ => String::new(),
        }
    }

    /// What to do about a set that does not fit, or fits tightly; `None` when it fits.
    pub fn fix(&self, network_flag: &str) -> Option<String> {
        let more = "or give the LLM server's machine more memory (then --memory-limit, LCW_MEMORY_LIMIT, if set)";
        match &self.verdict {
            Verdict::Fits => None,
            Verdict::Tight => Some(format!(
                "less than {:.0} % of the memory is left for the OS and the server's buffers: serve fewer models \
                 ({}), {more}",
                HEADROOM * 100.0,
                self.removal_text(&[self.smallest().to_owned()], network_flag)
            )),
            Verdict::TooBig { remove } => Some(format!("{}, {more}", self.removal_text(remove, network_flag))),
        }
    }

    /// The smallest model, for the tight case's example.
    fn smallest(&self) -> &str {
        self.entries.iter().min_by_key(|e| e.bytes).map(|e| e.model.as_str()).unwrap_or("a model")
    }

    /// `do not add A; lcw remove-models --models B and drop B from --models (LCW_MODELS)`.
    fn removal_text(&self, remove: &[String], network_flag: &str) -> String {
        let added = |m: &&String| self.entries.iter().any(|e| &e.model == *m && e.added);
        let (new, served): (Vec<&String>, Vec<&String>) = remove.iter().partition(added);
        let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        let mut parts = Vec::new();
        if !new.is_empty() {
            parts.push(format!("do not add {}", join(&new)));
        }
        if !served.is_empty() {
            let list = join(&served);
            parts.push(format!("remove {list}: `lcw remove-models{network_flag} --models {list}` and drop it from the worker's --models (LCW_MODELS)"));
        }
        parts.join("; ")
    }
}

/// The fewest entries whose bytes sum to at least `excess`; among those, the fewest already
/// served ones, then the least memory given up. Exhaustive up to 16 models, greedy (largest
/// first, still the fewest) beyond.
pub fn smallest_removal(entries: &[Entry], excess: u64) -> Vec<usize> {
    let n = entries.len();
    if n <= 16 {
        let mut best: Option<((u32, usize, u64), u32)> = None;
        for mask in 1u32..(1 << n) {
            let picked = || (0..n).filter(move |i| mask & (1 << i) != 0);
            let sum: u64 = picked().map(|i| entries[i].bytes).sum();
            if sum < excess {
                continue;
            }
            let key = (mask.count_ones(), picked().filter(|&i| !entries[i].added).count(), sum);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, mask));
            }
        }
        return match best {
            Some((_, mask)) => (0..n).filter(|i| mask & (1 << i) != 0).collect(),
            None => (0..n).collect(),
        };
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(entries[i].bytes));
    let mut sum = 0u64;
    order
        .into_iter()
        .take_while(|&i| {
            let before = sum;
            sum += entries[i].bytes;
            before < excess
        })
        .collect()
}

/// Judges `served` (already served) plus `added` (about to be) on `llm`'s server against
/// `limit`, or the machine's memory. `None` when there is nothing to judge against: no limit
/// given and the LLM server is on another host, whose memory lcw cannot read.
pub async fn assess(
    llm: &Llm,
    served: &[String],
    added: &[String],
    limit: Option<u64>,
) -> Result<Option<Fit>, FitError> {
    let limit = match limit {
        Some(bytes) => Limit::given(bytes),
        None if !is_local(&llm.config().url) => return Ok(None),
        None => machine::detect()?,
    };
    let mut names: Vec<String> = served.to_vec();
    names.extend(added.iter().filter(|a| !served.contains(a)).cloned());
    let footprints = llm.footprints(&names).await?;
    let entries = footprints.sized.iter().map(|f| Entry::of(f, added.contains(&f.model) && !served.contains(&f.model)));
    Ok(Some(Fit::judge(entries.collect(), footprints.unknown, limit)))
}

/// The worker's start-up check of the models it serves: refuses ([`FitError::TooBig`]) a set
/// that does not fit, warns about one with less than [`HEADROOM`] to spare, and logs the sizes.
/// `Ok(None)` when the server is remote and no `limit` was given. `network_flag` (` --network X`)
/// goes into the fix's `lcw` commands.
pub async fn check_at_start(
    llm: &Llm,
    models: &[String],
    limit: Option<u64>,
    network_flag: &str,
) -> Result<Option<Fit>, FitError> {
    let Some(fit) = assess(llm, models, &[], limit).await? else {
        info!("memory fit not checked: the LLM server is on another host; give --memory-limit to check it");
        return Ok(None);
    };
    match &fit.verdict {
        Verdict::Fits => {
            info!(total = fit.total(), limit = fit.limit.bytes, sizes = %fit.sizes(), "models fit in memory")
        }
        Verdict::Tight => {
            warn!(total = fit.total(), limit = fit.limit.bytes, sizes = %fit.sizes(), fix = fit.fix(network_flag).unwrap_or_default(), "models fit in memory with little headroom")
        }
        Verdict::TooBig { .. } => return Err(FitError::TooBig(Box::new(fit))),
    }
    Ok(Some(fit))
}

/// Of the models `added` to a served set that `fit` judged together, those that may be loaded
/// and those that may not: all of them when the set fits (tightly or not); otherwise the added
/// ones the fit leaves out, or every added one when the fewest to leave out include a served
/// model (a served model is never unloaded for an addition).
pub fn admit(added: &[String], fit: &Fit) -> (Vec<String>, Vec<String>) {
    let Verdict::TooBig { remove } = &fit.verdict else { return (added.to_vec(), Vec::new()) };
    let only_added = remove.iter().all(|m| added.contains(m));
    added.iter().cloned().partition(|m| only_added && !remove.contains(m))
}

/// Whether `url` names this machine (a loopback address or `localhost`).
pub fn is_local(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else { return false };
    let Some(host) = parsed.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn entry(model: &str, mib: u64, added: bool) -> Entry {
        Entry { model: model.into(), bytes: mib * MIB, added, detail: "test".into() }
    }

    fn judge(entries: Vec<Entry>, limit_mib: u64) -> Fit {
        Fit::judge(entries, vec![], Limit::given(limit_mib * MIB))
    }

    #[test]
    fn a_set_with_room_fits_without_a_fix() {
        let fit = judge(vec![entry("a", 300, false), entry("b", 500, false)], 1000);
        assert_eq!(fit.verdict, Verdict::Fits);
        assert_eq!(fit.fix(""), None);
        assert_eq!(fit.refusal(""), "");
        assert!(fit.sizes().contains("total 800.0 MiB of 1000.0 MiB (--memory-limit), 20.0 % free"), "{}", fit.sizes());
    }

    #[test]
    fn an_addition_that_does_not_fit_is_left_out_and_a_served_model_stays() {
        let added = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        // Fits: every addition is loaded.
        let fit = judge(vec![entry("a", 300, false), entry("b", 300, true)], 1000);
        assert_eq!(admit(&added(&["b"]), &fit), (added(&["b"]), vec![]));
        // b and c do not fit together beside a: one addition is left out, the one that gives up
        // the least memory.
        let fit = judge(vec![entry("a", 300, false), entry("b", 300, true), entry("c", 500, true)], 1000);
        assert_eq!(admit(&added(&["b", "c"]), &fit), (added(&["c"]), added(&["b"])));
        // The fewest to leave out is the served a: no addition is loaded, a stays.
        let fit = judge(vec![entry("a", 900, false), entry("b", 200, true), entry("c", 200, true)], 1000);
        assert_eq!(fit.verdict, Verdict::TooBig { remove: added(&["a"]) });
        assert_eq!(admit(&added(&["b", "c"]), &fit), (vec![], added(&["b", "c"])));
    }

    #[test]
    fn less_than_ten_percent_free_is_tight() {
        let fit = judge(vec![entry("a", 300, false), entry("b", 610, false)], 1000);
        assert_eq!(fit.verdict, Verdict::Tight);
        assert!(fit.fix("").unwrap().contains("less than 10 %"), "{:?}", fit.fix(""));
        assert_eq!(judge(vec![entry("a", 900, false)], 1000).verdict, Verdict::Fits, "exactly 10 % is enough");
    }

    #[test]
    fn a_set_too_big_names_the_fewest_models_to_remove() {
        // 100 MiB over: removing b (150) alone is enough, though a and c together would be too.
        let fit = judge(
            vec![entry("a", 60, false), entry("b", 150, false), entry("c", 60, false), entry("d", 830, false)],
            1000,
        );
        assert_eq!(fit.verdict, Verdict::TooBig { remove: vec!["b".into()] });
        let refusal = fit.refusal(" --network testnet");
        assert!(refusal.contains("a 60.0 MiB (test); b 150.0 MiB (test)"), "{refusal}");
        assert!(refusal.contains("total 1.1 GiB of 1000.0 MiB (--memory-limit), 100.0 MiB over"), "{refusal}");
        assert!(refusal.contains("`lcw remove-models --network testnet --models b`"), "{refusal}");
    }

    #[test]
    fn a_model_being_added_is_left_out_before_a_served_one() {
        let fit = judge(vec![entry("served", 400, false), entry("new", 400, true), entry("other", 400, false)], 1000);
        assert_eq!(fit.verdict, Verdict::TooBig { remove: vec!["new".into()] });
        let fix = fit.fix("").unwrap();
        assert!(fix.starts_with("do not add new,"), "{fix}");
        assert!(!fix.contains("remove-models"), "{fix}");
    }

    #[test]
    fn among_equal_counts_the_least_memory_is_given_up() {
        let entries = vec![entry("a", 500, false), entry("b", 200, false), entry("c", 450, false)];
        assert_eq!(smallest_removal(&entries, 150 * MIB), vec![1]);
        assert_eq!(
            smallest_removal(&entries, 600 * MIB),
            vec![1, 2],
            "two are needed; b+c (650) gives up less than a+b"
        );
        assert_eq!(smallest_removal(&entries, 5000 * MIB), vec![0, 1, 2], "nothing suffices: all of them");
    }

    #[test]
    fn many_models_are_removed_largest_first() {
        let entries: Vec<Entry> = (1..=20).map(|i| entry(&format!("m{i}"), i, false)).collect();
        let picked = smallest_removal(&entries, 39 * MIB);
        assert_eq!(picked, vec![19, 18], "20 + 19 MiB");
    }

    #[test]
    fn unknown_models_are_named_not_counted() {
        let fit = Fit::judge(vec![entry("a", 100, false)], vec!["ghost".into()], Limit::given(1000 * MIB));
        assert_eq!(fit.total(), 100 * MIB);
        assert!(
            fit.sizes().ends_with("size unknown, not counted (not served, or the server reports no size): ghost"),
            "{}",
            fit.sizes()
        );
    }

    #[test]
    fn only_loopback_servers_are_this_machine() {
        assert!(is_local("http://127.0.0.1:8080"));
        assert!(is_local("http://localhost:11434/"));
        assert!(is_local("http://[::1]:8080/v1"));
        assert!(!is_local("https://gpu.example/llm"));
        assert!(!is_local("http://10.0.0.5:11434"));
        assert!(!is_local("not a url"));
    }
}
