//! Preflight of the worker's model set as `lcw work` follows it: the models added to the worker
//! on chain, the LLM server's list and `--models`, compared by [`lcw_worker::models::plan`].
//! Each model on chain that `--models` does not name, or that the LLM server does not serve
//! under exactly its name, is one line with its fix; a last line says what would be served. A
//! `--models` name not added on chain is the `model NAME` check's, and one the server lacks the
//! `llm NAME` check's: not repeated here.

use std::collections::BTreeSet;

use alloy::primitives::B256;
use anyhow::Context;
use lcw_chain::Chain;
use lcw_schema::bindings::WorkerRegistry;
use lcw_worker::llm::Llm;
use lcw_worker::models::{self, Inputs, Mismatch};

use super::{Check, Ctx, Status};
use crate::cmd::register::Registration;

const NAME: &str = "model set";

/// The checks (see the module's documentation); skipped when the chain, the registration or the
/// LLM server could not be read.
pub(super) async fn model_set_checks(
    ctx: &Ctx,
    chain: Option<&Chain>,
    reg: Option<&Registration>,
    llm: Option<&Llm>,
) -> anyhow::Result<Vec<Check>> {
    let Some(chain) = chain else { return Ok(vec![Check::skip(NAME, "the chain or the contracts could not be read")]) };
    if !reg.is_some_and(|r| r.registered) {
        return Ok(vec![Check::skip(NAME, "the worker is not registered (see the registration check)")]);
    }
    let Some(llm) = llm else { return Ok(vec![Check::skip(NAME, "the LLM server does not answer")]) };
    let wr = WorkerRegistry::new(ctx.profile.contracts.worker_registry, chain.provider().clone());
    let on_chain: BTreeSet<B256> =
        wr.getWorkerModels(ctx.worker).call().await.context("getWorkerModels")?.into_iter().collect();
    let Ok(listed) = llm.models().await else {
        return Ok(vec![Check::skip(NAME, "the LLM server's models could not be listed")]);
    };
    let plan = models::plan(Inputs {
        chain: Some(&on_chain),
        flag: &ctx.models,
        server: Some(&listed),
        api: llm.config().api,
        warm: &BTreeSet::new(),
        busy: &BTreeSet::new(),
    });
    let lcw = |c: &str| ctx.lcw(c);
    let in_flag = |m: &Mismatch| ctx.models.iter().any(|f| f.trim() == m.model());
    let mut out = Vec::new();
    for m in &plan.mismatches {
        let reported = match m {
            Mismatch::NotAdded { .. } => false,
            Mismatch::NotServed { .. } => !in_flag(m),
            Mismatch::NotInFlag { .. } | Mismatch::Unnamed { .. } => true,
        };
        if reported {
            let status = if m.refuses_jobs() && plan.nothing_to_serve() { Status::Fail } else { Status::Warn };
            out.push(Check::new(format!("{NAME} {}", m.model()), status, m.to_string(), Some(m.fix(&lcw))));
        }
    }
    let served = plan.names();
    out.push(if served.is_empty() {
        let fix = plan
            .mismatches
            .iter()
            .find(|m| m.refuses_jobs() || matches!(m, Mismatch::NotAdded { .. }))
            .map(|m| m.fix(&lcw))
            .unwrap_or_else(|| format!("`{}`", lcw("add-models --models NAME")));
        Check::fail(
            NAME,
            format!(
                "nothing to serve: {} model(s) added on chain, none served by the LLM server under its exact name",
                on_chain.len()
            ),
            fix,
        )
    } else {
        Check::ok(NAME, format!("serves {} (added on chain, listed by the LLM server)", served.join(", ")))
    });
    Ok(out)
}
