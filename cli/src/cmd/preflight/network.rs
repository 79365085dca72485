//! Preflight checks of how work reaches the worker on today's network: sortition (is it on, does
//! the SessionManager AIConfig names have code, can this worker claim in principle) and the
//! worker-gateway (reachable, and sign-in works when the key can be used).

use alloy::primitives::Address;
use alloy::providers::Provider;
use anyhow::Context;
use lcw_chain::Chain;
use lcw_schema::bindings::{AIConfig, WorkerRegistry};
use lcw_schema::profile::redact_url;
use lcw_schema::types::ModelId;
use lcw_worker::gateway::{Gateway, GatewayConfig};

use super::{Check, Ctx, Status};
use crate::cmd::register::Registration;

/// "sortition": on or off, the SessionManager's code, an expected address matching AIConfig's.
pub(super) async fn sortition_check(ctx: &Ctx, chain: &Chain, expected: Option<Address>) -> anyhow::Result<Check> {
    const NAME: &str = "sortition";
    let ai = AIConfig::new(ctx.profile.contracts.ai_config, chain.provider().clone());
    let enabled = ai.getSortitionEnabled().call().await.context("AIConfig.getSortitionEnabled")?;
    let manager = ai.getSessionManagerAddress().call().await.context("AIConfig.getSessionManagerAddress")?;
    if let Some(expected) = expected
        && expected != manager
    {
        return Ok(Check::fail(
            NAME,
            format!("SESSION_MANAGER_ADDRESS is {expected} but AIConfig names {manager}"),
            "unset SESSION_MANAGER_ADDRESS (--session-manager): lcw reads the SessionManager from AIConfig",
        ));
    }
    if !enabled {
        return Ok(Check::ok(NAME, "off: sessions are assigned by the dispatcher, no claim is needed"));
    }
    if manager == Address::ZERO {
        return Ok(Check::fail(
            NAME,
            "on, but AIConfig names no SessionManager: no session can be requested or claimed",
            "nothing to do on this side: the network's governance must set the SessionManager",
        ));
    }
    let code = chain.provider().get_code_at(manager).await.context("eth_getCode(SessionManager)")?;
    if code.is_empty() {
        return Ok(Check::fail(
            NAME,
            format!("on, but the SessionManager AIConfig names ({manager}) has no code on this chain"),
            "check --network and the AI_CONFIG_ADDRESS override: this AIConfig belongs to another deployment",
        ));
    }
    let window = ai.getClaimWindowBlocks().call().await.context("AIConfig.getClaimWindowBlocks")?;
    Ok(Check::ok(
        NAME,
        format!("on: SessionManager {manager}, claim window {window} blocks; the worker claims its sessions"),
    ))
}

/// "claims": whether this worker can claim at all (registered, not suspended, stake at the
/// minimum, a served model supported and enabled), its capabilities, and its capacity.
pub(super) async fn claims_check(ctx: &Ctx, chain: &Chain, reg: Option<&Registration>) -> anyhow::Result<Check> {
    const NAME: &str = "claims";
    let ai = AIConfig::new(ctx.profile.contracts.ai_config, chain.provider().clone());
    if !ai.getSortitionEnabled().call().await.context("AIConfig.getSortitionEnabled")? {
        return Ok(Check::ok(NAME, "none needed: sortition is off"));
    }
    let Some(reg) = reg.filter(|r| r.registered) else {
        return Ok(Check::skip(NAME, "the worker is not registered"));
    };
    let wr = WorkerRegistry::new(ctx.profile.contracts.worker_registry, chain.provider().clone());
    let mut claimable = Vec::new();
    for name in &ctx.models {
        let Ok(id) = ModelId::parse(name) else { continue };
        if wr.isEligible(ctx.worker, id.0).call().await.context("isEligible")?
            && ai.isModelEnabled(id.0).call().await.unwrap_or(true)
        {
            claimable.push(name.clone());
        }
    }
    if claimable.is_empty() {
        return Ok(Check::fail(
            NAME,
            format!(
                "{} cannot claim a session for any model served here ({}): not eligible (suspended, stake \
                 below the minimum, or the models not added or disabled)",
                ctx.worker,
                ctx.models.join(", ")
            ),
            "fix the registration, stake and model checks above",
        ));
    }
    let caps = wr.getWorkerCapabilities(ctx.worker).call().await.context("getWorkerCapabilities")?;
    let count = wr.getCapabilityCount().call().await.context("getCapabilityCount")?;
    let mut names = Vec::new();
    for bit in 0..count.min(256) {
        if caps.bit(usize::from(bit)) {
            names.push(wr.getCapabilityName(bit as u8).call().await.context("getCapabilityName")?);
        }
    }
    let active = wr.getActiveJobCount(ctx.worker).call().await.context("getActiveJobCount")?;
    let max = ai.getMaxConcurrentJobs().call().await.context("getMaxConcurrentJobs")?;
    let caps_text = if names.is_empty() {
        "no capabilities (requests that require one go to others)".to_owned()
    } else {
        format!("capabilities {}", names.join(", "))
    };
    let detail = format!(
        "eligible for {}; {caps_text}; {active} active jobs of at most {max}; stake {} LCAI",
        claimable.join(", "),
        lcw_schema::types::Lcai(reg.stake)
    );
    if active >= max {
        return Ok(Check::new(
            NAME,
            Status::Warn,
            format!("{detail}: at capacity, claims are refused until jobs are released"),
            Some(ctx.lcw("release")),
        ));
    }
    Ok(Check::ok(NAME, detail))
}

/// "gateway": reachable (a challenge is served), and sign-in works when the key is at hand.
pub(super) async fn gateway_check(ctx: &Ctx, signer: Option<alloy::signers::local::PrivateKeySigner>) -> Check {
    const NAME: &str = "gateway";
    let Some(url) = ctx.profile.gateway_url.as_deref() else {
        return Check::ok(NAME, "none configured: heartbeats and the response stream are off (WORKER_GATEWAY_URL)");
    };
    let shown = redact_url(url);
    let fix = "check WORKER_GATEWAY_URL (--gateway-url); the on-chain path works without it, but consumers \
               only offer workers whose heartbeats the gateway sees";
    let challenge = format!("{}/api/auth/challenge", url.trim_end_matches('/'));
    let client = match reqwest::Client::builder().timeout(super::TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, format!("HTTP client: {e}"), fix),
    };
    match client.get(&challenge).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => return Check::fail(NAME, format!("{shown} answers the challenge with {}", r.status()), fix),
        Err(e) => return Check::fail(NAME, format!("{shown} does not answer: {e}"), fix),
    }
    let Some(signer) = signer else {
        return Check::new(
            NAME,
            Status::Warn,
            format!("{shown} answers; sign-in not tried: the worker's key needs its password"),
            Some("give --password-file or LCW_PASSWORD to try the sign-in too".into()),
        );
    };
    if signer.address() != ctx.worker {
        return Check::skip(NAME, format!("{shown} answers; the key at hand is not {}'s", ctx.worker));
    }
    let gateway = match Gateway::new(GatewayConfig::new(url), signer) {
        Ok(g) => g,
        Err(e) => return Check::fail(NAME, e.to_string(), fix),
    };
    match gateway.sign_in().await {
        Ok(()) => Check::ok(NAME, format!("{shown} answers and {} signs in", ctx.worker)),
        Err(e) => Check::fail(
            NAME,
            format!("{shown} refused the sign-in of {}: {e}", ctx.worker),
            "the gateway knows registered workers only: check `lcw status`, then the key (--key)",
        ),
    }
}
