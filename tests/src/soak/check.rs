//! The invariants about jobs and stores, from the chain ([`Scan`]), a fresh index of it, lcw's
//! two stores and the fault log: what happened to every job, which timeouts were lcw's fault,
//! whether each job was released exactly once and how late, whether each store equals a fresh
//! index (and its own replay, and the chain), and how long each restart after a kill took.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use alloy::primitives::Address;
use lcw_schema::store::Store;
use rusqlite::OptionalExtension;
use serde::Serialize;

use super::faults::{BACK_AT_WORK_TIMEOUT, Record, Restart};
use super::rig::{DISPUTE_WINDOW, RESOLUTION_TIMEOUT, Rig};
use super::scan::Scan;
use lcw_tests::stats::{Dist, dist};

/// Outcomes of every job on the chain.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Jobs {
    pub(crate) submitted: u64,
    pub(crate) served: u64,
    pub(crate) released: u64,
    pub(crate) timed_out: u64,
    pub(crate) settled_no_fault: u64,
    pub(crate) disputed: u64,
    pub(crate) guilty: u64,
    /// Not released, timed out, settled or ruled guilty when the soak ended.
    pub(crate) open: u64,
}

/// What lcw's worker did with the jobs assigned to it.
#[derive(Debug, Default, Serialize)]
pub(crate) struct WorkerJobs {
    pub(crate) assigned: u64,
    pub(crate) acked: u64,
    pub(crate) completed: u64,
    pub(crate) released: u64,
    pub(crate) timed_out: u64,
    pub(crate) settled_no_fault: u64,
    /// Refusals in `worker_refusals`, by step.
    pub(crate) refusals: BTreeMap<String, u64>,
    /// Acked jobs that timed out because the worker's side was out (see [`clean_stretch`]).
    pub(crate) outage_timeouts: Vec<String>,
    /// Timeouts that were lcw's fault, each with what explains it.
    pub(crate) lcw_fault_timeouts: Vec<String>,
}

/// Releases and their lag.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Releases {
    pub(crate) released: u64,
    /// Jobs with more than one JobReleased log in a store (store, job, count).
    pub(crate) more_than_once: Vec<String>,
    /// Release block minus the first block whose timestamp reached releasableAt.
    pub(crate) lag_blocks: Dist,
    /// The three latest releases, with the faults around them.
    pub(crate) worst: Vec<String>,
}

/// One lcw store against a fresh index, its replay and the chain.
#[derive(Debug, Default, Serialize)]
pub(crate) struct StoreCheck {
    pub(crate) store: String,
    pub(crate) equal_to_fresh_index: bool,
    pub(crate) replay_equal: bool,
    pub(crate) verify_ok: bool,
    pub(crate) detail: Vec<String>,
}

/// Which refusal steps put the blame on someone other than lcw (the consumer, the operator or
/// the network), so that a job refused for one of them may time out.
pub(crate) fn excused(step: &str) -> Option<&'static str> {
    match step {
        "prompt" | "key" | "session" => Some("consumer"),
        // The LLM server is the operator's: while it is down no job is acked.
        "funds" | "model" | "deadline" | "llm" => Some("operator"),
        "node" => Some("network"),
        // lcw was not running: excused only where the soak killed it (see `worker_jobs`).
        "offline" => Some("a kill"),
        _ => None,
    }
}

/// Faults that leave a worker unable to finish an acked job, whoever runs it: its LLM server
/// down or too slow to answer, its wallet emptied, its process killed.
const OUTAGES: [&str; 4] = ["llm outage", "llm slow", "low balance", "kill -9 worker"];

/// An acked job that timed out is lcw's fault when the worker had at least this many blocks
/// (seconds, on the soak's 1 s devnet) in a row without an [`OUTAGES`] fault before its deadline:
/// enough to restart, fetch, answer and complete.
const CLEAN_BLOCKS_TO_COMPLETE: u64 = 15;

/// The longest run of blocks in `from..to` that no [`OUTAGES`] fault covers (a fault counts until
/// 2 blocks after its end: the restart or the first answer).
pub(crate) fn clean_stretch(faults: &[Record], from: u64, to: u64) -> u64 {
    let mut busy: Vec<(u64, u64)> = faults
        .iter()
        .filter(|f| OUTAGES.contains(&f.kind))
        .map(|f| (f.start_block, f.end_block + 2))
        .filter(|&(s, e)| s < to && e > from)
        .collect();
    busy.sort_unstable();
    let (mut longest, mut at) = (0, from);
    for (s, e) in busy {
        longest = longest.max(s.saturating_sub(at));
        at = at.max(e);
    }
    longest.max(to.saturating_sub(at))
}

/// A restart after a kill must be back at work within this many seconds. A restart takes under a
/// second (keeper) to a few seconds (worker) on a quiet network, and up to about 50 s when a slow
/// LLM (its check waits 10 s), an RPC storm on the process's RPC (its start fails and is tried
/// again; 12 s hangs) and the KZG setup overlap on a loaded 2-core machine. Slower than this is a
/// regression of lcw's start-up, which the kill's window (it lasts until then) would hide.
pub(crate) const BACK_AT_WORK_WITHIN_S: f64 = 90.0;

/// The restarts after a kill that were not back at work within [`BACK_AT_WORK_WITHIN_S`].
pub(crate) fn slow_restarts(restarts: &[Restart]) -> Vec<&Restart> {
    restarts.iter().filter(|r| !r.back_after_s.is_some_and(|s| s <= BACK_AT_WORK_WITHIN_S)).collect()
}

/// Each restart after a kill with how long it took, and the longest.
pub(crate) fn restart_figures(restarts: &[Restart]) -> String {
    if restarts.is_empty() {
        return "no kill in this run".into();
    }
    let each: Vec<String> = restarts
        .iter()
        .map(|r| match r.back_after_s {
            Some(s) => format!("{} (#{}) {s:.1} s", r.process, r.n),
            None => format!("{} (#{}) not back within {} s", r.process, r.n, BACK_AT_WORK_TIMEOUT.as_secs()),
        })
        .collect();
    let longest = match restarts.iter().map(|r| r.back_after_s).try_fold(0.0f64, |m, s| s.map(|s| m.max(s))) {
        Some(s) => format!("{s:.1} s"),
        None => format!("over {} s", BACK_AT_WORK_TIMEOUT.as_secs()),
    };
    format!("{}; longest {longest} (bound {BACK_AT_WORK_WITHIN_S:.0} s)", each.join(", "))
}

/// Whether a fault of `kind` overlaps blocks `from..=to`.
fn killed(faults: &[Record], kind: &str, from: u64, to: u64) -> bool {
    faults.iter().any(|f| f.kind == kind && f.start_block <= to && f.end_block + 2 >= from)
}

/// The faults whose time overlaps blocks `from..=to` (a few blocks of slack after each).
pub(crate) fn around(faults: &[Record], from: u64, to: u64) -> String {
    let hits: Vec<String> = faults
        .iter()
        .filter(|f| f.start_block <= to && f.end_block + 3 >= from)
        .map(|f| match f.n {
            0 => format!("{} at {}", f.kind, f.start_block),
            n => format!("#{n} {} (blocks {}..{})", f.kind, f.start_block, f.end_block),
        })
        .collect();
    if hits.is_empty() {
        return "no fault around it".into();
    }
    // Exits come in bursts (a crash loop): only the first few are named.
    let exits = hits.iter().filter(|h| !h.starts_with('#')).count();
    let mut shown: Vec<String> = hits.iter().filter(|h| h.starts_with('#')).cloned().collect();
    shown.extend(hits.iter().filter(|h| !h.starts_with('#')).take(3).cloned());
    if exits > 3 {
        shown.push(format!("{} more exits", exits - 3));
    }
    format!("around it: {}", shown.join(", "))
}

fn count(conn: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> anyhow::Result<u64> {
    Ok(conn.query_row(sql, params, |r| r.get::<_, Option<i64>>(0))?.unwrap_or_default() as u64)
}

/// Job outcomes, from the fresh index.
pub(crate) fn jobs(fresh: &Path) -> anyhow::Result<Jobs> {
    let store = Store::open_readonly(fresh)?;
    let c = store.conn();
    Ok(Jobs {
        submitted: count(c, "SELECT count(*) FROM jobs", [])?,
        served: count(c, "SELECT count(*) FROM jobs WHERE completed_block IS NOT NULL", [])?,
        released: count(c, "SELECT count(*) FROM jobs WHERE released_block IS NOT NULL", [])?,
        timed_out: count(
            c,
            "SELECT count(*) FROM jobs WHERE timed_out_block IS NOT NULL AND settled_no_fault = 0",
            [],
        )?,
        settled_no_fault: count(c, "SELECT count(*) FROM jobs WHERE settled_no_fault = 1", [])?,
        disputed: count(c, "SELECT count(*) FROM jobs WHERE disputed_block IS NOT NULL", [])?,
        guilty: count(c, "SELECT count(*) FROM jobs WHERE guilty = 1", [])?,
        open: count(
            c,
            "SELECT count(*) FROM jobs WHERE released_block IS NULL AND timed_out_block IS NULL
             AND settled_no_fault = 0 AND coalesce(guilty, 0) = 0",
            [],
        )?,
    })
}

/// What lcw's worker did, and which of its timeouts were its own fault: a job it acked and did
/// not complete, or did not ack without a refusal that blames someone else.
pub(crate) fn worker_jobs(
    fresh: &Path,
    worker_db: &Path,
    me: Address,
    faults: &[Record],
) -> anyhow::Result<WorkerJobs> {
    let store = Store::open_readonly(fresh)?;
    let c = store.conn();
    let w = me.as_slice();
    let mut out = WorkerJobs {
        assigned: count(c, "SELECT count(*) FROM jobs WHERE worker = ?1", [w])?,
        acked: count(c, "SELECT count(*) FROM jobs WHERE worker = ?1 AND acknowledged_block IS NOT NULL", [w])?,
        completed: count(c, "SELECT count(*) FROM jobs WHERE worker = ?1 AND completed_block IS NOT NULL", [w])?,
        released: count(c, "SELECT count(*) FROM jobs WHERE worker = ?1 AND released_block IS NOT NULL", [w])?,
        timed_out: count(
            c,
            "SELECT count(*) FROM jobs WHERE worker = ?1 AND timed_out_block IS NOT NULL AND settled_no_fault = 0",
            [w],
        )?,
        settled_no_fault: count(c, "SELECT count(*) FROM jobs WHERE worker = ?1 AND settled_no_fault = 1", [w])?,
        ..WorkerJobs::default()
    };
    let own = Store::open_readonly(worker_db)?;
    let has_refusals = count(own.conn(), "SELECT count(*) FROM sqlite_master WHERE name = 'worker_refusals'", [])? > 0;
    let refusal = |job: i64| -> anyhow::Result<Option<(String, String, bool)>> {
        if !has_refusals {
            return Ok(None);
        }
        Ok(own
            .conn()
            .query_row(
                "SELECT step, reason, final FROM worker_refusals WHERE worker = ?1 AND job_id = ?2",
                rusqlite::params![w, job],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    };
    if has_refusals {
        let mut stmt =
            own.conn().prepare("SELECT step, count(*) FROM worker_refusals WHERE worker = ?1 GROUP BY step")?;
        for row in stmt.query_map([w], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))? {
            let (step, n) = row?;
            out.refusals.insert(step, n);
        }
    }
    let mut stmt = c.prepare(
        "SELECT job_id, submitted_block, acknowledged_block, timed_out_block FROM jobs
         WHERE worker = ?1 AND timed_out_block IS NOT NULL AND settled_no_fault = 0 ORDER BY job_id",
    )?;
    let rows: Vec<(i64, i64, Option<i64>, i64)> =
        stmt.query_map([w], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
    for (job, submitted, acked, timed_out) in rows {
        let why = refusal(job)?;
        let blame = why.as_ref().and_then(|(step, ..)| excused(step));
        let fault = match (acked, &why, blame) {
            (Some(a), _, _) if clean_stretch(faults, a as u64, timed_out as u64) < CLEAN_BLOCKS_TO_COMPLETE => {
                out.outage_timeouts.push(format!(
                    "job {job}: acked in block {a}, timed out in block {timed_out}: at most {} blocks in a row \
                     without an outage of the worker's side; {}",
                    clean_stretch(faults, a as u64, timed_out as u64),
                    around(faults, a as u64, timed_out as u64)
                ));
                None
            }
            (Some(a), _, _) => Some(format!("acked in block {a} and not completed")),
            (None, None, _) => Some("not acked, and no refusal recorded".to_owned()),
            (None, Some((step, reason, _)), None) => Some(format!("not acked; refused at step `{step}`: {reason}")),
            (None, Some((step, reason, _)), Some(_))
                if step == "offline" && !killed(faults, "kill -9 worker", submitted as u64, timed_out as u64) =>
            {
                Some(format!("not acked while lcw was not running, and the soak did not kill it then: {reason}"))
            }
            (None, Some(_), Some(_)) => None,
        };
        if let Some(fault) = fault {
            out.lcw_fault_timeouts.push(format!(
                "job {job}: submitted in block {submitted}, timed out in block {timed_out}: {fault}{}; {}",
                why.map(|(s, r, f)| format!(" [refusal row: {s}, final {f}: {r}]")).unwrap_or_default(),
                around(faults, submitted as u64, timed_out as u64)
            ));
        }
    }
    Ok(out)
}

/// A released job: id, release block, completedAt, resolvedAt, guilty, disputedAt, defaulted block.
type ReleasedJob = (i64, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Releases: exactly once per job in every store, and the lag of each behind its releasableAt.
pub(crate) fn releases(
    fresh: &Path,
    stores: &[(&str, &Path)],
    scan: &Scan,
    faults: &[Record],
) -> anyhow::Result<Releases> {
    let mut out = Releases::default();
    for (name, db) in std::iter::once(&("fresh index", fresh)).chain(stores) {
        let store = Store::open_readonly(db)?;
        let mut stmt = store.conn().prepare(
            "SELECT job_id, count(*) FROM logs WHERE event = 'JobReleased' GROUP BY job_id HAVING count(*) > 1",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (job, n) = row?;
            out.more_than_once.push(format!("{name}: job {job} released {n} times"));
        }
    }
    let store = Store::open_readonly(fresh)?;
    let mut stmt = store.conn().prepare(
        "SELECT job_id, released_block, completed_at, resolved_at, guilty, disputed_at, defaulted_block
         FROM jobs WHERE released_block IS NOT NULL",
    )?;
    let rows: Vec<ReleasedJob> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
        .collect::<Result<_, _>>()?;
    let mut lags: Vec<(i64, i64, u64)> = Vec::new();
    for (job, released, completed_at, resolved_at, guilty, disputed_at, defaulted) in rows {
        let releasable_at = match (resolved_at, guilty, defaulted, disputed_at) {
            (Some(at), Some(0), _, _) => at,
            (_, _, Some(_), Some(disputed)) => disputed + RESOLUTION_TIMEOUT as i64,
            _ => completed_at.unwrap_or_default() + DISPUTE_WINDOW as i64,
        } as u64;
        let first = scan.first_at(releasable_at).unwrap_or(released as u64);
        lags.push((released - first as i64, job, first));
    }
    out.released = lags.len() as u64;
    out.lag_blocks = dist(lags.iter().map(|(l, ..)| *l as f64).collect());
    lags.sort_unstable_by(|a, b| b.cmp(a));
    for (lag, job, first) in lags.iter().take(3) {
        out.worst.push(format!(
            "job {job}: {lag} blocks late (releasable from block {first}); {}",
            around(faults, *first, *first + (*lag).max(0) as u64)
        ));
    }
    Ok(out)
}

/// An lcw store against the fresh index (raw logs and every projection), its own replay, and
/// the chain (`lcw verify`).
pub(crate) async fn store(rig: &Rig, name: &str, db: &Path, fresh: &Path) -> StoreCheck {
    let mut out = StoreCheck { store: name.to_owned(), ..StoreCheck::default() };
    let diffs = lcw_tests::indexing::differences(db, fresh);
    out.equal_to_fresh_index = diffs.is_empty();
    for d in diffs {
        out.detail.push(format!(
            "{}: {} rows only in the {name} store, {} only in the fresh index",
            d.table, d.only_in_first, d.only_in_second
        ));
    }
    match lcw_indexer::replay::replay(db, false) {
        Ok(r) => {
            out.replay_equal = r.equal();
            for d in r.differences {
                out.detail
                    .push(format!("replay: {} differs ({} / {} rows)", d.table, d.only_in_first, d.only_in_second));
            }
        }
        Err(e) => out.detail.push(format!("replay failed: {e}")),
    }
    match lcw_indexer::verify::verify(rig.net.profile(), db, Duration::from_secs(30)).await {
        Ok(v) => {
            out.verify_ok = v.ok();
            for d in v.differences {
                out.detail.push(format!("verify: {}: {}", d.check, d.detail));
            }
        }
        Err(e) => out.detail.push(format!("verify failed: {e}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: &'static str, start_block: u64, end_block: u64) -> Record {
        Record { n: 1, kind, detail: String::new(), start_s: 0.0, end_s: 0.0, start_block, end_block }
    }

    #[test]
    fn the_clean_stretch_leaves_out_outages_of_the_workers_side_only() {
        // An LLM outage 10..20 and a kill 30..31 (each counted 2 blocks longer) in 0..60.
        let faults = [fault("llm outage", 10, 20), fault("kill -9 worker", 30, 31), fault("rpc storm", 0, 60)];
        assert_eq!(clean_stretch(&faults, 0, 60), 27, "33..60");
        assert_eq!(clean_stretch(&faults, 12, 40), 8, "22..30");
        assert_eq!(clean_stretch(&[], 5, 9), 4);
        assert_eq!(clean_stretch(&[fault("low balance", 0, 100)], 5, 9), 0);
    }

    #[test]
    fn a_job_that_arrived_while_the_killed_worker_started_up_is_the_kills() {
        // Killed in block 115, started again in 119, back at work in 146; a job submitted in 122
        // timed out in 143. The window that ended at the start left it to lcw.
        assert!(!killed(&[fault("kill -9 worker", 115, 119)], "kill -9 worker", 122, 143));
        let kill = [fault("kill -9 worker", 115, 146)];
        assert!(killed(&kill, "kill -9 worker", 122, 143));
        assert!(killed(&kill, "kill -9 worker", 142, 163), "submitted before it was back");
        assert!(!killed(&kill, "kill -9 worker", 149, 170), "submitted after it was back");
        assert!(!killed(&[fault("kill -9 keeper", 115, 146)], "kill -9 worker", 122, 143));
    }

    fn restart(n: usize, process: &'static str, back_after_s: Option<f64>) -> Restart {
        Restart { n, process, back_after_s }
    }

    #[test]
    fn a_restart_slower_than_the_bound_or_never_back_is_slow() {
        let restarts = [restart(3, "keeper", Some(4.2)), restart(8, "worker", Some(37.0))];
        assert!(slow_restarts(&restarts).is_empty());
        assert_eq!(restart_figures(&restarts), "keeper (#3) 4.2 s, worker (#8) 37.0 s; longest 37.0 s (bound 90 s)");
        let restarts = [restart(3, "keeper", Some(4.2)), restart(8, "worker", Some(90.5)), restart(9, "keeper", None)];
        let slow: Vec<usize> = slow_restarts(&restarts).iter().map(|r| r.n).collect();
        assert_eq!(slow, [8, 9]);
        assert_eq!(
            restart_figures(&restarts),
            "keeper (#3) 4.2 s, worker (#8) 90.5 s, keeper (#9) not back within 120 s; longest over 120 s (bound 90 s)"
        );
        assert!(slow_restarts(&[]).is_empty());
        assert_eq!(restart_figures(&[]), "no kill in this run");
    }
}
