//! Applying SessionManager events to `session_requests`: SessionRequested opens a request with
//! its expiry and required capabilities (from the facts fetched with the log, see
//! [`crate::facts`]), SessionClaimed records the claimer, SessionReady the adopted session.
//! Pure over the store, like [`crate::apply`].

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolCall;
use lcw_schema::bindings::{JobRegistry, SessionManager};
use lcw_schema::store::raw::CallResult;
use lcw_schema::store::rows::SessionRequestRow;
use lcw_schema::store::sortition::RequestStatus;
use lcw_schema::store::{StoreError, StoreResult};

use crate::apply::Meta;
use crate::cache::Projector;

impl Projector<'_> {
    /// The stored answer of `C` called with `id` on `contract`, decoded; None when none was
    /// fetched.
    fn fact<C: SolCall>(&self, contract: Address, id: u64) -> StoreResult<Option<C::Return>> {
        let Some(row) = CallResult::get(self.conn, &contract, C::SIGNATURE, id)? else { return Ok(None) };
        C::abi_decode_returns(&row.data).map(Some).map_err(|e| StoreError::Corrupt {
            what: format!("call_results {} with id {id} of {contract}", C::SIGNATURE),
            value: e.to_string(),
        })
    }

    /// A fact every log of its kind is indexed with: its absence means the raw layer was edited.
    fn required_fact<C: SolCall>(&self, contract: Address, id: u64) -> StoreResult<C::Return> {
        self.fact::<C>(contract, id)?.ok_or_else(|| StoreError::Corrupt {
            what: format!("call_results {} with id {id} of {contract}", C::SIGNATURE),
            value: "missing: it is fetched with every SessionRequested; re-index into a fresh store".into(),
        })
    }

    /// What `getSession` of `job_registry` said about an adopted session when its
    /// SessionAdopted was indexed (None for logs indexed before lcw fetched it).
    pub(crate) fn adopted_session(
        &self,
        job_registry: Address,
        session: u64,
    ) -> StoreResult<Option<JobRegistry::Session>> {
        self.fact::<JobRegistry::getSessionCall>(job_registry, session)
    }

    /// SessionRequested: a new open request.
    pub(crate) fn session_requested(
        &mut self,
        manager: Address,
        req: u64,
        user: Address,
        model: B256,
        request_block: u64,
        m: &Meta,
    ) -> StoreResult<()> {
        let request = self.required_fact::<SessionManager::getRequestCall>(manager, req)?;
        let caps = self.required_fact::<SessionManager::getRequiredCapabilitiesCall>(manager, req)?;
        self.put_request(SessionRequestRow {
            manager,
            req_id: req,
            user,
            model_id: model,
            request_block,
            request_block_hash: m.block_hash,
            requested_at: m.timestamp,
            // SQLite integers are signed: an expiry past i64::MAX (never, in practice) is kept
            // at i64::MAX so that comparisons with chain time stay right.
            expiry: request.expiry.min(i64::MAX as u64),
            required_caps: caps,
            status: RequestStatus::Open.as_str().into(),
            worker: None,
            claimed_block: None,
            claimed_at: None,
            claim_tx: None,
            session_id: None,
            ready_block: None,
            ready_at: None,
            updated_block: m.block,
        })
    }

    /// SessionClaimed: the request's claimer.
    pub(crate) fn session_claimed(&mut self, manager: Address, req: u64, worker: Address, m: &Meta) -> StoreResult<()> {
        match self.request_mut((manager, req))? {
            Some(r) => {
                r.status = RequestStatus::Claimed.as_str().into();
                r.worker = Some(worker);
                r.claimed_block = Some(m.block);
                r.claimed_at = Some(m.timestamp);
                r.claim_tx = Some(m.tx_hash);
                r.updated_block = m.block;
            }
            None => self.unattributed += 1,
        }
        Ok(())
    }

    /// SessionReady: the session JobRegistry adopted for the request.
    pub(crate) fn session_ready(&mut self, manager: Address, req: u64, session: u64, m: &Meta) -> StoreResult<()> {
        match self.request_mut((manager, req))? {
            Some(r) => {
                r.status = RequestStatus::Ready.as_str().into();
                r.session_id = Some(session);
                r.ready_block = Some(m.block);
                r.ready_at = Some(m.timestamp);
                r.updated_block = m.block;
            }
            None => self.unattributed += 1,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
