//! `lcw register` and `lcw add-models` check, before any transaction, that the models the worker
//! would serve after the change fit in memory together: the models it already serves (the LLM
//! server's models that the worker supports on chain) plus the ones being added.

use anyhow::Context;
use clap::Args;
use lcw_schema::types::ModelId;
use lcw_worker::fit::{self, Fit, Verdict};
use lcw_worker::llm::{Api, Llm, LlmConfig};

use super::{Model, Signed};
use crate::args::FitArgs;

/// The LLM server the models will be served from, and the memory they must fit in.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// LLM server base URL, to size the models (as `lcw work --llm-url`).
    #[arg(long, env = "LCW_LLM_URL", default_value = "http://127.0.0.1:11434")]
    llm_url: String,
    /// Wire protocol: ollama | openai.
    #[arg(long, env = "LCW_LLM_API", default_value = "ollama")]
    llm_api: String,
    #[command(flatten)]
    fit: FitArgs,
}

impl ServerArgs {
    fn llm(&self) -> anyhow::Result<Llm> {
        let api: Api = self.llm_api.parse().map_err(|e| anyhow::anyhow!("--llm-api: {e}"))?;
        Ok(Llm::new(LlmConfig { url: self.llm_url.clone(), api, ..LlmConfig::default() })?)
    }
}

/// Refuses, before anything is sent, a change after which the served models would not fit in
/// memory; warns below 10 % headroom. A server that cannot be read is a warning: the fit is then
/// checked by `lcw preflight` and at the worker's start.
pub(super) async fn ensure_fits(
    s: &Signed,
    args: &ServerArgs,
    models: &[Model],
    registered: bool,
    network: &str,
) -> anyhow::Result<()> {
    let llm = args.llm()?;
    if args.fit.memory_limit.is_none() && !fit::is_local(&llm.config().url) {
        eprintln!(
            "note: memory fit not checked: the LLM server is on another host; give --memory-limit \
             (LCW_MEMORY_LIMIT) with its memory to check it"
        );
        return Ok(());
    }
    let network_flag = crate::args::network_flag(network);
    let served = if registered { served(s, &llm).await } else { Ok(Vec::new()) };
    let served = match served {
        Ok(served) => served,
        Err(e) => return not_checked(format!("{e:#}")),
    };
    let added: Vec<String> = models.iter().map(|m| m.name.clone()).filter(|m| !m.starts_with("0x")).collect();
    let fit = match fit::assess(&llm, &served, &added, args.fit.memory_limit).await {
        Ok(Some(fit)) => fit,
        Ok(None) => return Ok(()),
        Err(e @ fit::FitError::Llm(_)) => return not_checked(e.to_string()),
        Err(e) => return Err(e).context("checking that the models fit in memory; nothing was sent"),
    };
    report(&fit, &network_flag)
}

fn not_checked(why: String) -> anyhow::Result<()> {
    eprintln!("warning: memory fit not checked ({why}); `lcw preflight` on the worker's machine checks it");
    Ok(())
}

fn report(fit: &Fit, network_flag: &str) -> anyhow::Result<()> {
    if !fit.unknown.is_empty() && !matches!(fit.verdict, Verdict::TooBig { .. }) {
        eprintln!(
            "note: {}: size unknown (the LLM server does not serve it, or reports no size), not counted in the \
             memory fit",
            fit.unknown.join(", ")
        );
    }
    match &fit.verdict {
        Verdict::Fits => {
            tracing::info!(total = fit.total(), limit = fit.limit.bytes, "the models fit in memory");
            Ok(())
        }
        Verdict::Tight => {
            eprintln!("warning: {}; {}", fit.sizes(), fit.fix(network_flag).unwrap_or_default());
            Ok(())
        }
        Verdict::TooBig { .. } => anyhow::bail!("{}; nothing was sent", fit.refusal(network_flag)),
    }
}

/// The LLM server's models that the worker already supports on chain, by their on-chain name
/// (Ollama's `:latest` dropped).
async fn served(s: &Signed, llm: &Llm) -> anyhow::Result<Vec<String>> {
    let mut served = Vec::new();
    for listed in llm.models().await? {
        let name = listed.strip_suffix(":latest").unwrap_or(&listed).to_owned();
        for candidate in [&name, &listed] {
            let id = ModelId::from_name(candidate);
            if s.registry().workerSupportsModel(s.worker, id.0).call().await.context("workerSupportsModel")? {
                served.push(candidate.clone());
                break;
            }
        }
    }
    Ok(served)
}
