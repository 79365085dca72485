//! The "memory" check: the footprints of the models the worker serves (`--models`), from the LLM
//! server, summed against the machine's memory or `--memory-limit`. Every served model stays
//! loaded, so a set that does not fit swaps and answers late.

use lcw_worker::fit::{self, Verdict};

use super::{Check, Ctx, Status};
use crate::args::FitArgs;
use crate::cmd::work::LlmArgs;

const NAME: &str = "memory";

/// FAIL when the set does not fit (with every size and what to remove), WARN below 10 %
/// headroom, ok otherwise; skip when it cannot be judged.
pub(super) async fn fit_check(ctx: &Ctx, llm: &LlmArgs, args: &FitArgs) -> Check {
    if ctx.models.is_empty() {
        return Check::skip(NAME, "no models given (--models)");
    }
    let llm = match llm.llm() {
        Ok(llm) => llm,
        Err(_) => return Check::skip(NAME, "the LLM server's settings are invalid (see the llm server check)"),
    };
    let fit = match fit::assess(&llm, &ctx.models, &[], args.memory_limit).await {
        Ok(Some(fit)) => fit,
        Ok(None) => {
            return Check::skip(
                NAME,
                "the LLM server runs on another host, whose memory lcw cannot read; give --memory-limit \
                 (LCW_MEMORY_LIMIT) with that machine's memory to check the fit",
            );
        }
        Err(e @ fit::FitError::Llm(_)) => return Check::skip(NAME, format!("{e} (see the llm checks)")),
        Err(e) => return Check::fail(NAME, e.to_string(), "give the memory with --memory-limit (LCW_MEMORY_LIMIT)"),
    };
    match fit.verdict {
        Verdict::Fits => Check::ok(NAME, fit.sizes()),
        Verdict::Tight => Check::new(NAME, Status::Warn, fit.sizes(), fit.fix(&ctx.network_flag)),
        Verdict::TooBig { .. } => Check::new(
            NAME,
            Status::Fail,
            format!("the models do not fit in memory together (each stays loaded): {}", fit.sizes()),
            fit.fix(&ctx.network_flag),
        ),
    }
}
