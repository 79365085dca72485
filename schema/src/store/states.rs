//! States, statuses and amounts read back from their TEXT columns strictly: a value the type
//! does not know is [`StoreError::Corrupt`] naming the table, the row and the value, never a
//! default. The spellings themselves live with the types ([`JobState::as_str`],
//! [`SessionStatus::as_str`], [`super::sortition::RequestStatus`], [`super::claims::ClaimState`],
//! the outbox's `Kind`, `Lane` and `Status`); every read and write goes through them.

use alloy::primitives::U256;

use super::rows::{JobRow, SessionRow};
use super::{StoreError, StoreResult};
use crate::types::{JobState, SessionStatus};

/// The state of job `job_id` as the `jobs.state` column spells it.
pub fn job_state(job_id: u64, value: &str) -> StoreResult<JobState> {
    JobState::parse(value)
        .ok_or_else(|| StoreError::Corrupt { what: format!("jobs.state of job {job_id}"), value: value.to_owned() })
}

/// The status of session `session_id` as the `sessions.status` column spells it.
pub fn session_status(session_id: u64, value: &str) -> StoreResult<SessionStatus> {
    SessionStatus::parse(value).ok_or_else(|| StoreError::Corrupt {
        what: format!("sessions.status of session {session_id}"),
        value: value.to_owned(),
    })
}

/// An amount of wei stored as decimal TEXT; `what` names the column and the row.
pub(crate) fn wei(what: impl FnOnce() -> String, value: &str) -> StoreResult<U256> {
    U256::from_str_radix(value, 10).map_err(|_| StoreError::Corrupt { what: what(), value: value.to_owned() })
}

impl JobRow {
    /// The job's state; an unknown spelling is corruption naming the job.
    pub fn job_state(&self) -> StoreResult<JobState> {
        job_state(self.job_id, &self.state)
    }
}

impl SessionRow {
    /// The session's status; an unknown spelling is corruption naming the session.
    pub fn session_status(&self) -> StoreResult<SessionStatus> {
        session_status(self.session_id, &self.status)
    }
}
