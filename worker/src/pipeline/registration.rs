//! Whether the worker is still registered, as the store has it, and what a deregistered worker
//! still owes before it stops.
//!
//! `WorkerDeregistered` ends the worker's service: it takes no new session and acks no new job
//! (one assigned to it anyway is refused, step `deregistered`, final), but every job it acked is
//! still completed (failing to complete one is slashed) and every job it completed is waited for
//! until it is released (its settler releases it after the dispute window). Once nothing is left
//! the pipeline returns with [`Ended::Deregistered`] and the process stops.
//!
//! The registration is read from the store on every pass (one row). A store still catching up
//! with the chain at start-up (its cursor below the first head this process saw) decides
//! nothing: it may not show a later re-registration yet. Once seen, a deregistration stays for
//! the life of the process even if the worker registers again (the keys and models were checked
//! at start against the old registration: serving again needs a restart); only a reorg that
//! undoes the `WorkerDeregistered` itself takes it back.

use lcw_schema::rules::schedule::OpenJob;
use lcw_schema::store::rows::WorkerRow;

use super::*;

/// Why a run of the worker ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown was asked (a signal), or the worker never started.
    #[default]
    Shutdown,
    /// `stop_after` completions were reached.
    StopAfter,
    /// The worker was deregistered (`WorkerDeregistered` in `block`) and owes nothing more.
    Deregistered {
        /// The block of `WorkerDeregistered`.
        block: u64,
    },
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Shutdown => f.write_str("asked to stop"),
            Ended::StopAfter => f.write_str("the requested number of completions was reached"),
            Ended::Deregistered { block } => write!(
                f,
                "this worker was deregistered in block {block} and owes nothing more (no job left to complete, \
                 none left to release); to serve again, register and restart lcw"
            ),
        }
    }
}

/// The worker's row as far as registration goes: registered now, and the block of its last
/// `WorkerDeregistered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub(super) registered: bool,
    pub(super) deregistered_block: Option<u64>,
}

/// The block the worker was deregistered in, as this process holds it, given the store's row
/// and what it held before (`seen`). Sticky across a re-registration (which keeps the row's
/// `deregistered_block`); undone when a reorg takes the deregistration back.
pub(super) fn deregistered(row: Option<Row>, seen: Option<u64>) -> Option<u64> {
    let row = row?;
    match seen {
        Some(block) if row.deregistered_block == Some(block) => Some(block),
        _ if !row.registered => row.deregistered_block,
        _ => None,
    }
}

/// The jobs a deregistered worker still owes, by id: acked and still completable (before its
/// completion deadline, or with its completion in flight), or completed and not yet released
/// (in its dispute window, disputed, or resolved not guilty with escrow left). `acking` are jobs
/// whose ack the outbox has in flight or saw mined while the store may still show them
/// submitted; `live` are jobs with a transaction in flight. A job it was assigned and never
/// acked is not owed.
pub(super) fn owed(open: &[OpenJob], acking: &HashSet<u64>, live: &HashSet<u64>, now: u64) -> Vec<u64> {
    open.iter()
        .filter(|j| match j.state {
            JobState::Submitted => acking.contains(&j.job_id),
            JobState::Acknowledged => live.contains(&j.job_id) || j.deadline.is_none_or(|d| now <= d),
            JobState::Completed | JobState::Disputed => true,
            JobState::Resolved => j.guilty == Some(false) && !j.fee.is_zero(),
            JobState::TimedOut | JobState::Released => false,
        })
        .map(|j| j.job_id)
        .collect()
}

/// What the worker says, once, when it sees that it was deregistered.
pub(super) fn seen_line(block: u64, owed: usize) -> String {
    let rest = match owed {
        0 => "it owes no job, so it stops".to_owned(),
        1 => "finishing the 1 job it owes, then stopping".to_owned(),
        k => format!("finishing the {k} jobs it owes, then stopping"),
    };
    format!(
        "this worker was deregistered in block {block}; {rest}. It takes no new session and acks no new job; to \
         serve again, register and restart lcw"
    )
}

impl Worker {
    /// Reads the worker's registration from the store (one row), once the store has caught up
    /// with the first head this process saw.
    pub(super) fn read_registration(&mut self) -> Result<(), WorkerError> {
        let Some(first) = self.first_head else { return Ok(()) };
        if self.deregistered.is_none() && obligations::cursor(&self.conn)? < first {
            return Ok(());
        }
        let row = WorkerRow::get(&self.conn, &self.me)?
            .map(|r| Row { registered: r.registered, deregistered_block: r.deregistered_block });
        let now = deregistered(row, self.deregistered);
        match (self.deregistered, now) {
            (Some(was), None) => {
                tracing::warn!(block = was, "the deregistration in block {was} was undone by a reorg; serving again");
                self.deregistration_told = false;
            }
            (Some(was), Some(block)) if was != block => self.deregistration_told = false,
            _ => {}
        }
        self.deregistered = now;
        Ok(())
    }

    /// Once deregistered: what it still owes (said once), and the deregistration's block when
    /// nothing is left.
    pub(super) fn owes_nothing(&mut self, head: &Head) -> Result<Option<u64>, WorkerError> {
        let Some(block) = self.deregistered else { return Ok(None) };
        let recent = head.number.saturating_sub(REORG_WINDOW);
        let live: HashSet<u64> = self.outbox.live_by_job()?.keys().copied().collect();
        let mut acking: HashSet<u64> = self.outbox.mined_since("ack", recent)?;
        acking.extend(live.iter().copied());
        let open = obligations::open_jobs(&self.conn, Some(self.me))?;
        let owed = owed(&open, &acking, &live, head.timestamp);
        if !self.deregistration_told {
            self.deregistration_told = true;
            tracing::warn!(block, owed = owed.len(), jobs = ?owed, "{}", seen_line(block, owed.len()));
        }
        Ok(owed.is_empty().then_some(block))
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::U256;

    use super::*;

    fn job(job_id: u64, state: JobState) -> OpenJob {
        OpenJob {
            job_id,
            worker: Address::repeat_byte(7),
            state,
            fee: U256::from(100u64),
            deadline: Some(1_000),
            completed_at: None,
            disputed_at: None,
            guilty: None,
            session_active: true,
        }
    }

    #[test]
    fn a_deregistration_is_read_from_the_row_and_kept_through_a_re_registration() {
        let row = |registered, deregistered_block| Some(Row { registered, deregistered_block });
        assert_eq!(deregistered(None, None), None, "no row: nothing known");
        assert_eq!(deregistered(row(true, None), None), None);
        assert_eq!(deregistered(row(false, Some(40)), None), Some(40));
        // Registered again after it: this process stays deregistered (a restart serves again).
        assert_eq!(deregistered(row(true, Some(40)), Some(40)), Some(40));
        // A process started after the re-registration serves.
        assert_eq!(deregistered(row(true, Some(40)), None), None);
        // A reorg undid it: serving again.
        assert_eq!(deregistered(row(true, None), Some(40)), None);
        // A reorg moved it to another block.
        assert_eq!(deregistered(row(false, Some(41)), Some(40)), Some(41));
    }

    #[test]
    fn a_deregistered_worker_owes_its_acked_and_unreleased_jobs_and_never_an_unacked_one() {
        let none = HashSet::new();
        let mut not_guilty = job(5, JobState::Resolved);
        not_guilty.guilty = Some(false);
        let mut guilty = job(6, JobState::Resolved);
        guilty.guilty = Some(true);
        let mut paid = job(7, JobState::Resolved);
        paid.guilty = Some(false);
        paid.fee = U256::ZERO;
        let open = [
            job(1, JobState::Submitted),
            job(2, JobState::Acknowledged),
            job(3, JobState::Completed),
            job(4, JobState::Disputed),
            not_guilty,
            guilty,
            paid,
        ];
        assert_eq!(owed(&open, &none, &none, 900), [2, 3, 4, 5]);
        // An ack in flight, or mined before the store shows it, makes the job owed.
        let acking: HashSet<u64> = [1].into();
        assert_eq!(owed(&open, &acking, &none, 900), [1, 2, 3, 4, 5]);
        // Past its completion deadline an acked job can no longer be completed, unless its
        // completion is already in flight.
        assert_eq!(owed(&open, &none, &none, 1_001), [3, 4, 5]);
        let live: HashSet<u64> = [2].into();
        assert_eq!(owed(&open, &none, &live, 1_001), [2, 3, 4, 5]);
        assert!(owed(&[], &none, &none, 0).is_empty());
    }

    #[test]
    fn the_line_says_the_block_what_is_owed_and_that_serving_again_needs_a_restart() {
        let line = seen_line(42, 3);
        assert!(line.starts_with("this worker was deregistered in block 42; finishing the 3 jobs it owes"), "{line}");
        assert!(line.contains("restart"), "{line}");
        assert!(seen_line(42, 1).contains("the 1 job it owes"));
        assert!(seen_line(42, 0).contains("it owes no job, so it stops"));
        let ended = Ended::Deregistered { block: 42 }.to_string();
        assert!(ended.contains("deregistered in block 42") && ended.contains("restart"), "{ended}");
    }
}
