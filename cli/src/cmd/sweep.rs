//! `lcw sweep --to ADDR` (and `lcw withdraw --then-sweep ADDR`): the worker wallet's spendable
//! balance to a payout address, keeping a gas reserve, the worker apps' "settle earnings".
//!
//! The rule is exact: **the wallet keeps the reserve**. What is sent is
//! `balance − in flight − reserve − transfer gas`, where
//! - *in flight* is what the key's unmined outbox transactions (every lane: a running `lcw work`
//!   or `lcw settle` included) can still take, at their fee caps;
//! - the *reserve* is `--keep LCAI`, or else what the worker's open jobs still cost to finish:
//!   per job the steps it still owes (ack, completion as a type-3 transaction with one blob,
//!   release) at the gas limits the worker and settler sign with, priced at the node's current
//!   fees (twice the base fee plus the worker's tip per gas, twice the blob base fee per blob
//!   gas, as the worker offers them) plus [`MARGIN_PERCENT`], and never less than one release;
//! - the *transfer gas* is paid at one price: the transfer is signed with its whole fee as the
//!   priority fee (`maxPriorityFeePerGas = maxFeePerGas`), so the price paid is exactly the price
//!   signed whatever the base fee is when it is mined, and a transfer to an address without code
//!   uses exactly 21,000 gas. A payout contract's unused gas stays in the wallet, on top of the
//!   reserve; a transfer the outbox has to re-price (stuck for blocks) pays each bump's extra out
//!   of the reserve.
//!
//! The transfer goes through the key's outbox (kind `sweep`, the operator lane), under the
//! `--max-fee-per-gas` ceiling: it is stored before it is broadcast, never signed twice, and a run
//! that stops before it is mined leaves it to the next command, which finishes it instead of
//! sending another.
//!
//! Pure parts ([`owed`], [`Reserve::for_jobs`], [`Figures::new`], [`parse_payout`]) carry the unit
//! tests; [`sweep`] reads the chain and the store, and sends.

use std::time::Duration;

use alloy::eips::eip4844::DATA_GAS_PER_BLOB;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use anyhow::{Context, bail};
use clap::Args;
use lcw_chain::Fees;
use lcw_chain::fees::Wei;
use lcw_chain::outbox::Intent;
use lcw_schema::profile::Profile;
use lcw_schema::rules::schedule::OpenJob;
use lcw_schema::store::outbox::{self as outbox_store, Kind};
use lcw_schema::store::{Identity, Store, obligations};
use lcw_schema::types::{JobState, Lcai};
use lcw_settler::ops::{Operator, Sent};
use lcw_worker::pipeline::{ACK_GAS, COMPLETE_GAS};
use serde_json::json;

use crate::args::DataArgs;
use crate::cmd::operator::{Ctx, WorkerArgs, ctx_signed};

/// Gas of a plain transfer to an address without code.
pub(crate) const TRANSFER_GAS: u64 = 21_000;
/// Gas of releasing one job as the settler reckons it before a simulation measures it: a batch's
/// own gas (60,000) and one job's (40,000).
pub(crate) const RELEASE_GAS: u64 = 100_000;
/// Added to the open jobs' cost: fees may rise before the jobs are done.
pub(crate) const MARGIN_PERCENT: u64 = 25;
/// The tip the worker offers at least (its default `min_tip`), so the reserve prices its acks and
/// completions as it will send them.
const WORKER_MIN_TIP: u128 = 1_000_000_000;
/// The tip of an operator transaction (as every operator verb).
const OPERATOR_MIN_TIP: u128 = 1_000_000;
/// How long the transfer may take to be mined before the command leaves it to the outbox.
const TX_TIMEOUT: Duration = Duration::from_secs(120);

/// `lcw sweep`.
#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    common: WorkerArgs,
    /// The payout address. Mixed case must be a valid EIP-55 checksum; all lower or upper case is
    /// taken as written.
    #[arg(long, env = "LCW_SWEEP_TO", value_name = "ADDR")]
    to: String,
    /// LCAI the wallet keeps, instead of the reserve computed from the open jobs.
    #[arg(long, env = "LCW_SWEEP_KEEP", value_parser = parse_lcai, value_name = "LCAI")]
    keep: Option<Lcai>,
    /// Print the figures; send nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `lcw withdraw --then-sweep ADDR [--keep LCAI]`.
#[derive(Debug, Args)]
pub(crate) struct ThenSweep {
    /// Once the withdrawal is mined, sweep the wallet to this payout address (as `lcw sweep --to`).
    #[arg(long, env = "LCW_WITHDRAW_THEN_SWEEP", value_name = "ADDR")]
    then_sweep: Option<String>,
    /// With --then-sweep: LCAI the wallet keeps, instead of the reserve computed from the open jobs.
    #[arg(long, env = "LCW_SWEEP_KEEP", value_parser = parse_lcai, value_name = "LCAI", requires = "then_sweep")]
    pub(crate) keep: Option<Lcai>,
}

impl ThenSweep {
    /// The payout address, when one is given.
    pub(crate) fn payout(&self) -> anyhow::Result<Option<Address>> {
        self.then_sweep.as_deref().map(parse_payout).transpose()
    }
}

fn parse_lcai(s: &str) -> Result<Lcai, String> {
    Lcai::parse(s).map_err(|e| e.to_string())
}

/// A payout address as the operator wrote it: 0x and 40 hex digits; mixed case must be its EIP-55
/// checksum (a mistyped digit then shows), and the zero address is refused.
pub(crate) fn parse_payout(input: &str) -> anyhow::Result<Address> {
    let s = input.trim();
    let hex = s.strip_prefix("0x").unwrap_or("");
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("`{s}` is not an address: expected 0x followed by 40 hex digits");
    }
    let mixed = hex.chars().any(|c| c.is_ascii_uppercase()) && hex.chars().any(|c| c.is_ascii_lowercase());
    let address = if mixed {
        Address::parse_checksummed(s, None).map_err(|_| {
            anyhow::anyhow!(
                "`{s}` fails its EIP-55 checksum: a character is mistyped, or the case was changed; copy the \
                 address again from its wallet"
            )
        })?
    } else {
        s.parse::<Address>().with_context(|| format!("`{s}` is not an address"))?
    };
    if address.is_zero() {
        bail!("the payout address is the zero address: what is sent there is lost");
    }
    Ok(address)
}

/// Refuses a payout address that is the worker itself or one of the network's contracts.
pub(crate) fn check_payout(to: Address, worker: Address, profile: &Profile) -> anyhow::Result<()> {
    if to == worker {
        bail!("the payout address {to} is the worker's own address: a sweep to it would only pay gas");
    }
    let c = &profile.contracts;
    for (name, address) in
        [("JobRegistry", c.job_registry), ("WorkerRegistry", c.worker_registry), ("AIConfig", c.ai_config)]
    {
        if to == address {
            bail!("the payout address {to} is the network's {name} contract, not a wallet");
        }
    }
    Ok(())
}

/// The steps the open jobs still owe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Owed {
    /// Open jobs counted.
    pub(crate) jobs: u64,
    /// acknowledgeJob transactions.
    pub(crate) acks: u64,
    /// completeJob type-3 transactions, one blob each.
    pub(crate) completions: u64,
    /// Releases.
    pub(crate) releases: u64,
}

/// What each open job still needs: a submitted one its ack, completion and release; an
/// acknowledged one its completion and release; a completed, disputed or resolved one its release
/// (none when the disputer found it guilty: there is nothing to release).
pub(crate) fn owed(jobs: &[OpenJob]) -> Owed {
    let mut o = Owed::default();
    for j in jobs {
        let (ack, complete, release) = match j.state {
            JobState::Submitted => (1, 1, 1),
            JobState::Acknowledged => (0, 1, 1),
            JobState::Completed | JobState::Disputed => (0, 0, 1),
            JobState::Resolved => (0, 0, u64::from(j.guilty != Some(true))),
            JobState::TimedOut | JobState::Released => continue,
        };
        o.jobs += 1;
        o.acks += ack;
        o.completions += complete;
        o.releases += release;
    }
    o
}

/// Prices the reserve is computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prices {
    /// Per gas: what the worker offers (twice the base fee plus its tip).
    pub(crate) gas: u128,
    /// Per blob gas: twice the blob base fee.
    pub(crate) blob_gas: u128,
}

/// What the wallet keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    /// Given with --keep.
    Keep(U256),
    /// Computed from the open jobs.
    Jobs {
        /// The steps owed.
        owed: Owed,
        /// Gas of those steps.
        gas: u64,
        /// Blob gas of those steps.
        blob_gas: u64,
        /// The prices.
        prices: Prices,
        /// Whether the floor of one release applied.
        floor: bool,
        /// The reserve.
        wei: U256,
    },
}

impl Reserve {
    /// The cost of finishing what is owed at `prices`, plus [`MARGIN_PERCENT`], never below one
    /// release.
    pub(crate) fn for_jobs(owed: Owed, prices: Prices) -> Reserve {
        let gas = ACK_GAS
            .saturating_mul(owed.acks)
            .saturating_add(COMPLETE_GAS.saturating_mul(owed.completions))
            .saturating_add(RELEASE_GAS.saturating_mul(owed.releases));
        let floor = gas < RELEASE_GAS && owed.completions == 0;
        let gas = gas.max(RELEASE_GAS);
        let blob_gas = DATA_GAS_PER_BLOB.saturating_mul(owed.completions);
        let cost = U256::from(gas)
            .saturating_mul(U256::from(prices.gas))
            .saturating_add(U256::from(blob_gas).saturating_mul(U256::from(prices.blob_gas)));
        let wei = cost.saturating_add(cost.saturating_mul(U256::from(MARGIN_PERCENT)) / U256::from(100));
        Reserve::Jobs { owed, gas, blob_gas, prices, floor, wei }
    }

    /// The reserve in wei.
    pub(crate) fn wei(&self) -> U256 {
        match self {
            Reserve::Keep(w) | Reserve::Jobs { wei: w, .. } => *w,
        }
    }

    /// How it was computed, in a line.
    fn basis(&self) -> String {
        match self {
            Reserve::Keep(_) => "given with --keep".to_owned(),
            Reserve::Jobs { owed, gas, blob_gas, prices, floor, .. } => {
                let what = if *floor {
                    format!("{} open jobs; never less than one release", owed.jobs)
                } else {
                    format!(
                        "{} open jobs owe {} acks, {} completions (one blob each), {} releases",
                        owed.jobs, owed.acks, owed.completions, owed.releases
                    )
                };
                format!(
                    "{what}: {gas} gas at {} and {blob_gas} blob gas at {}, plus {MARGIN_PERCENT} %",
                    Wei(prices.gas),
                    Wei(prices.blob_gas)
                )
            }
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Reserve::Keep(w) => json!({ "from": "keep", "wei": w.to_string() }),
            Reserve::Jobs { owed, gas, blob_gas, prices, floor, wei } => json!({
                "from": "open_jobs", "wei": wei.to_string(), "jobs": owed.jobs, "acks": owed.acks,
                "completions": owed.completions, "releases": owed.releases, "gas": gas, "blob_gas": blob_gas,
                "gas_price_wei": prices.gas.to_string(), "blob_gas_price_wei": prices.blob_gas.to_string(),
                "margin_percent": MARGIN_PERCENT, "floor_one_release": floor,
            }),
        }
    }
}

/// Every figure of a sweep, and what it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Figures {
    /// The wallet's balance.
    pub(crate) balance: U256,
    /// What the key's unmined transactions can still take.
    pub(crate) in_flight: U256,
    /// What the wallet keeps.
    pub(crate) reserve: Reserve,
    /// The open jobs' reserve when --keep replaced it (and it is more than --keep).
    pub(crate) below_jobs: Option<U256>,
    /// Gas limit of the transfer.
    pub(crate) gas: u64,
    /// Its price per gas (max fee and tip alike).
    pub(crate) fee: u128,
    /// `gas × fee`.
    pub(crate) gas_cost: U256,
    /// What is sent; `None` when the balance does not cover the rest.
    pub(crate) send: Option<U256>,
}

impl Figures {
    /// `balance − in_flight − reserve − gas × fee`, or `None` when that is not above zero.
    pub(crate) fn new(balance: U256, in_flight: U256, reserve: Reserve, gas: u64, fee: u128) -> Figures {
        let gas_cost = U256::from(gas).saturating_mul(U256::from(fee));
        let held = in_flight.saturating_add(reserve.wei()).saturating_add(gas_cost);
        let send = balance.checked_sub(held).filter(|v| !v.is_zero());
        Figures { balance, in_flight, reserve, below_jobs: None, gas, fee, gas_cost, send }
    }

    fn lines(&self, worker: Address, to: Address) -> Vec<String> {
        let mut lines = vec![
            format!("sweep of worker {worker}'s wallet to {to}"),
            format!("  balance       {} LCAI", Lcai(self.balance)),
        ];
        if !self.in_flight.is_zero() {
            lines.push(format!(
                "  in flight     {} LCAI (the key's unmined transactions, at their fee caps)",
                Lcai(self.in_flight)
            ));
        }
        lines.push(format!("  reserve       {} LCAI ({})", Lcai(self.reserve.wei()), self.reserve.basis()));
        if let Some(jobs) = self.below_jobs {
            lines.push(format!("                the open jobs would need {} LCAI at the current fees", Lcai(jobs)));
        }
        lines.push(format!(
            "  transfer gas  {} LCAI ({} gas at {}, all of it tip: the price paid is the price signed)",
            Lcai(self.gas_cost),
            self.gas,
            Wei(self.fee)
        ));
        lines.push(match self.send {
            Some(v) => format!("  to send       {} LCAI", Lcai(v)),
            None => "  to send       nothing".to_owned(),
        });
        lines
    }

    fn json(&self, worker: Address, to: Address) -> serde_json::Value {
        json!({
            "worker": worker, "to": to, "balance_wei": self.balance.to_string(),
            "in_flight_wei": self.in_flight.to_string(), "reserve_wei": self.reserve.wei().to_string(),
            "reserve": self.reserve.json(), "jobs_reserve_wei": self.below_jobs.map(|v| v.to_string()),
            "transfer_gas": self.gas, "fee_per_gas_wei": self.fee.to_string(),
            "gas_cost_wei": self.gas_cost.to_string(), "send_wei": self.send.map(|v| v.to_string()),
        })
    }
}

/// `lcw sweep`.
pub(crate) async fn run(args: SweepArgs, data: DataArgs) -> anyhow::Result<()> {
    // The address is checked before anything is connected or started.
    let to = parse_payout(&args.to).context("--to")?;
    let (c, mut op) = ctx_signed(&args.common, &data).await?;
    check_payout(to, c.worker, &c.profile)?;
    sweep(&c, &mut op, to, args.keep.map(Lcai::wei), args.dry_run, args.common.json).await
}

/// Sweeps the worker's wallet to `to`, keeping `keep` (or the open jobs' reserve); with
/// `dry_run`, prints the figures only.
pub(crate) async fn sweep(
    c: &Ctx,
    op: &mut Operator,
    to: Address,
    keep: Option<U256>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    if let Some((id, hash)) = pending(c)? {
        if dry_run {
            println!("a sweep signed earlier (tx {hash}) is not mined yet; the next `lcw sweep` waits for it");
            return Ok(());
        }
        eprintln!("a sweep signed earlier (tx {hash}) is not mined yet; waiting for it instead of sending another");
        let sent = mined(op, id, hash).await?;
        println!(
            "the earlier sweep was mined in block {} (tx {}); run `lcw sweep` again for what came in since",
            sent.block, sent.tx
        );
        return Ok(());
    }
    let figures = figures(c, op, to, keep).await?;
    let report = |sent: Option<&Sent>, after: Option<U256>| {
        if json {
            let mut v = figures.json(c.worker, to);
            v["dry_run"] = json!(dry_run);
            v["sent"] = json!(sent.map(|s| json!({ "tx": s.tx, "block": s.block, "gas_used": s.gas_used })));
            v["wallet_after_wei"] = json!(after.map(|a| a.to_string()));
            println!("{v}");
        } else {
            for line in figures.lines(c.worker, to) {
                println!("{line}");
            }
        }
    };
    let Some(value) = figures.send else {
        report(None, None);
        bail!(
            "nothing was sent: the balance ({} LCAI) does not exceed what it must hold ({} LCAI: reserve {}, transfer \
             gas {}{}); {}",
            Lcai(figures.balance),
            Lcai(figures.in_flight.saturating_add(figures.reserve.wei()).saturating_add(figures.gas_cost)),
            Lcai(figures.reserve.wei()),
            Lcai(figures.gas_cost),
            if figures.in_flight.is_zero() {
                String::new()
            } else {
                format!(", in flight {}", Lcai(figures.in_flight))
            },
            if keep.is_some() { "lower --keep" } else { "--keep LCAI sets the reserve yourself" }
        );
    };
    if dry_run {
        report(None, None);
        if !json {
            println!("dry run: nothing was sent");
        }
        return Ok(());
    }
    let head = op.chain.head().await?;
    let intent = Intent {
        kind: Kind::Sweep.as_str(),
        to,
        data: Bytes::new(),
        value,
        gas_limit: figures.gas,
        jobs: vec![],
        target_block: head.next_number(),
        blob: None,
        cap: op.cap,
    };
    // The whole fee is the tip: the price paid is the price signed, so the figures hold exactly.
    let fees = Fees { max_fee: figures.fee, tip: figures.fee };
    let (id, hash) = op.submit(&intent, fees, head.number).await?;
    let sent = mined(op, id, hash).await?;
    let after = op.chain.balance(c.worker).await?;
    report(Some(&sent), Some(after));
    if !json {
        println!(
            "sent {} LCAI to {to} in block {} (tx {}); the wallet holds {} LCAI",
            Lcai(value),
            sent.block,
            sent.tx,
            Lcai(after)
        );
    }
    Ok(())
}

/// Reads the balance, the outbox, the open jobs and the fees, and works the figures out.
async fn figures(c: &Ctx, op: &Operator, to: Address, keep: Option<U256>) -> anyhow::Result<Figures> {
    let chain = &op.chain;
    let (head, balance, market, worker_fees, blob_base) = tokio::join!(
        chain.head(),
        chain.balance(c.worker),
        chain.fees(OPERATOR_MIN_TIP),
        chain.fees(WORKER_MIN_TIP),
        chain.provider().get_blob_base_fee()
    );
    let (head, balance) = (head?, balance.context("reading the wallet's balance")?);
    let (market, worker_fees) = (market?, worker_fees?);
    let blob_gas = match blob_base {
        Ok(b) => b.max(1).saturating_mul(2),
        Err(e) => {
            eprintln!(
                "warning: the node did not give the blob base fee ({e}); completions are priced at the blob fee \
                 ceiling"
            );
            op.cap.per_blob_gas
        }
    };
    let (jobs, in_flight) = {
        let store = Store::open_readonly_as(&c.db, &Identity::of(&c.profile))?;
        let jobs = obligations::open_jobs(store.conn(), Some(c.worker)).context("reading the open jobs")?;
        (jobs, outbox_store::live_cost(store.conn(), c.worker).context("reading the outbox")?)
    };
    let computed = Reserve::for_jobs(owed(&jobs), Prices { gas: worker_fees.max_fee, blob_gas });
    let reserve = keep.map_or(computed, Reserve::Keep);
    let fee = market.max_fee.min(op.cap.per_gas);
    if fee < head.base_fee {
        bail!(
            "the base fee ({}) is above the fee ceiling ({}); nothing was sent. Raise --max-fee-per-gas or wait",
            Wei(head.base_fee),
            Wei(op.cap.per_gas)
        );
    }
    let spendable = balance.saturating_sub(U256::from(in_flight)).saturating_sub(reserve.wei());
    let gas = transfer_gas(op, c.worker, to, spendable).await?;
    let mut f = Figures::new(balance, U256::from(in_flight), reserve, gas, fee);
    if keep.is_some_and(|k| k < computed.wei()) {
        f.below_jobs = Some(computed.wei());
    }
    Ok(f)
}

/// The transfer's gas limit: 21,000 to an address without code; a contract's estimate otherwise
/// (its unused gas stays in the wallet).
async fn transfer_gas(op: &Operator, from: Address, to: Address, value: U256) -> anyhow::Result<u64> {
    let provider = op.chain.provider();
    let code = provider.get_code_at(to).await.context("eth_getCode of the payout address")?;
    if code.is_empty() {
        return Ok(TRANSFER_GAS);
    }
    let req = TransactionRequest::default().from(from).to(to).value(value.max(U256::from(1)));
    provider.estimate_gas(req).await.with_context(|| {
        format!("the payout address {to} is a contract that does not accept the transfer; nothing was sent")
    })
}

/// The key's sweep that is signed but not mined yet (a run stopped before it was), with its last
/// hash.
fn pending(c: &Ctx) -> anyhow::Result<Option<(i64, B256)>> {
    let store = Store::open_readonly_as(&c.db, &Identity::of(&c.profile))?;
    let live = outbox_store::live(store.conn(), c.worker).context("reading the outbox")?;
    let Some(tx) = live.into_iter().find(|t| t.kind == Kind::Sweep) else { return Ok(None) };
    let hash = outbox_store::attempt_hashes(store.conn(), tx.id)?.last().copied().unwrap_or_default();
    Ok(Some((tx.id, hash)))
}

/// Waits for outbox row `id` to be mined. The outbox reads receipts before nonces, so a block
/// landing between the two reads can make a mined transaction look dropped: the receipt decides.
async fn mined(op: &mut Operator, id: i64, hash: B256) -> anyhow::Result<Sent> {
    match op.wait(id, hash, TX_TIMEOUT).await {
        Ok(sent) => Ok(sent),
        Err(e) => {
            for _ in 0..10 {
                if let Some(Some(r)) = op.chain.receipts(&[hash]).await?.pop() {
                    if !r.status() {
                        bail!("the sweep {hash} reverted in block {}", r.block_number.unwrap_or(0));
                    }
                    return Ok(Sent { tx: hash, block: r.block_number.unwrap_or(0), gas_used: r.gas_used });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, state: JobState, guilty: Option<bool>) -> OpenJob {
        OpenJob {
            job_id: id,
            worker: Address::repeat_byte(1),
            state,
            fee: U256::from(1),
            deadline: None,
            completed_at: None,
            disputed_at: None,
            guilty,
            session_active: true,
        }
    }

    const PRICES: Prices = Prices { gas: 2_000_000_000, blob_gas: 2 };

    #[test]
    fn each_open_job_owes_the_steps_its_state_has_left() {
        let jobs = [
            job(1, JobState::Submitted, None),
            job(2, JobState::Acknowledged, None),
            job(3, JobState::Completed, None),
            job(4, JobState::Disputed, None),
            job(5, JobState::Resolved, Some(false)),
            job(6, JobState::Resolved, Some(true)),
        ];
        assert_eq!(owed(&jobs), Owed { jobs: 6, acks: 1, completions: 2, releases: 5 });
    }

    #[test]
    fn the_reserve_grows_with_open_jobs_and_is_never_below_one_release() {
        let none = Reserve::for_jobs(owed(&[]), PRICES);
        let one_release = U256::from(RELEASE_GAS) * U256::from(PRICES.gas) * U256::from(125) / U256::from(100);
        assert_eq!(none.wei(), one_release);
        assert!(matches!(none, Reserve::Jobs { floor: true, .. }));
        let one = Reserve::for_jobs(owed(&[job(1, JobState::Submitted, None)]), PRICES);
        let gas = ACK_GAS + COMPLETE_GAS + RELEASE_GAS;
        let cost = U256::from(gas) * U256::from(PRICES.gas) + U256::from(DATA_GAS_PER_BLOB) * U256::from(2);
        assert_eq!(one.wei(), cost + cost * U256::from(25) / U256::from(100));
        let two =
            Reserve::for_jobs(owed(&[job(1, JobState::Submitted, None), job(2, JobState::Completed, None)]), PRICES);
        assert!(two.wei() > one.wei() && one.wei() > none.wei());
    }

    #[test]
    fn the_wallet_keeps_exactly_the_reserve_and_pays_the_transfer_from_what_is_sent() {
        let keep = Reserve::Keep(U256::from(5_000));
        let f = Figures::new(U256::from(100_000), U256::from(1_000), keep, 21_000, 2);
        assert_eq!(f.gas_cost, U256::from(42_000));
        assert_eq!(f.send, Some(U256::from(100_000 - 1_000 - 5_000 - 42_000)));
        // At or below what it must hold, nothing is sent.
        assert_eq!(Figures::new(U256::from(48_000), U256::from(1_000), keep, 21_000, 2).send, None);
        assert_eq!(Figures::new(U256::from(1_000), U256::ZERO, keep, 21_000, 2).send, None);
    }

    #[test]
    fn payout_addresses_are_checked_for_checksum_and_zero() {
        let good = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        assert_eq!(parse_payout(good).unwrap(), parse_payout(&good.to_lowercase()).unwrap());
        assert!(parse_payout(&good.to_uppercase().replacen("0X", "0x", 1)).is_ok());
        let bad = "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        assert!(parse_payout(bad).unwrap_err().to_string().contains("EIP-55"));
        let zero = format!("0x{}", "0".repeat(40));
        assert!(parse_payout(&zero).unwrap_err().to_string().contains("zero address"));
        assert!(parse_payout("0x1234").unwrap_err().to_string().contains("40 hex digits"));
    }

    #[test]
    fn the_worker_itself_and_the_contracts_are_not_payout_addresses() {
        let profile = Profile {
            name: "test".into(),
            chain_id: 1,
            rpc_url: String::new(),
            rpc_fallback_urls: Vec::new(),
            ws_url: None,
            beacon_url: None,
            gateway_url: None,
            start_block: 0,
            contracts: lcw_schema::profile::Contracts {
                worker_registry: Address::repeat_byte(5),
                job_registry: Address::repeat_byte(7),
                ai_config: Address::repeat_byte(6),
            },
            accounts: Vec::new(),
        };
        let worker = Address::repeat_byte(1);
        assert!(check_payout(worker, worker, &profile).unwrap_err().to_string().contains("worker's own address"));
        assert!(
            check_payout(Address::repeat_byte(7), worker, &profile).unwrap_err().to_string().contains("JobRegistry")
        );
        assert!(check_payout(Address::repeat_byte(9), worker, &profile).is_ok());
    }
}
