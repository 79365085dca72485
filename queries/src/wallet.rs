//! A worker's wallet and its gas runway, from the node (the chain's logs do not hold balances):
//! read at the store's cursor block, so that it agrees with every other figure on the page, at
//! most once per block and address, a bounded number at once, each within a time limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::primitives::{Address as EthAddress, U256};
use async_graphql::{Context, SimpleObject};
use tokio::sync::Semaphore;

use crate::operator::{Operator, WalletSource};
use crate::scalars::BigInt;

/// What the dashboard says when no process with a node gave the API a wallet source.
pub const NO_SOURCE: &str =
    "the wallet is read from the node: start `lcw run`, or `lcw serve --head-rpc URL`, to see it";

/// Balances kept for one block (distinct addresses asked about).
const MAX_CACHED: usize = 256;
/// Node reads at once.
const MAX_READS: usize = 4;

/// A worker's wallet at the store's cursor block.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    /// The block it was read at: the store's cursor.
    pub block: u64,
    /// The wallet's balance at `block`, wei: the gas money of acks and completions, apart from
    /// stake and earnings. Null when it could not be read (`unavailable` says why).
    pub balance: Option<BigInt>,
    /// The gas of one job, wei: one ack and one completion with its blob, at the fees the next
    /// ones would be signed with.
    pub job_cost: Option<BigInt>,
    /// Whole jobs the balance pays the gas of (balance / jobCost, rounded down; the rule of
    /// the worker's `lcw_worker_runway_jobs`).
    pub runway_jobs: Option<u64>,
    /// Why the balance or the runway is unknown, and what to do.
    pub unavailable: Option<String>,
}

/// Whole jobs `balance` pays for at `job_cost` each (None for a cost of 0: unknown fees);
/// saturates at u64::MAX.
pub fn runway_jobs(balance: U256, job_cost: u128) -> Option<u64> {
    if job_cost == 0 {
        return None;
    }
    Some(u64::try_from(balance / U256::from(job_cost)).unwrap_or(u64::MAX))
}

/// A read's answer, or the reason shown.
type Read<T> = Result<T, String>;

/// One block's answers: `Err` holds the reason shown.
#[derive(Default)]
struct Cache {
    block: u64,
    cost: Option<Result<u128, String>>,
    balances: HashMap<EthAddress, Result<U256, String>>,
}

/// The wallet source with its per-block cache and bounds.
pub(crate) struct Wallets {
    source: Arc<dyn WalletSource>,
    cache: Mutex<Cache>,
    reads: Semaphore,
    timeout: Duration,
}

impl Wallets {
    pub(crate) fn new(source: Arc<dyn WalletSource>, timeout: Duration) -> Self {
        Wallets { source, cache: Mutex::new(Cache::default()), reads: Semaphore::new(MAX_READS), timeout }
    }

    /// What the cache holds for `block` (emptied when the block moves on).
    fn cached(&self, block: u64, address: EthAddress) -> (Option<Read<U256>>, Option<Read<u128>>) {
        let Ok(mut c) = self.cache.lock() else { return (None, None) };
        if c.block != block {
            *c = Cache { block, ..Cache::default() };
        }
        (c.balances.get(&address).cloned(), c.cost.clone())
    }

    fn keep(&self, block: u64, address: EthAddress, balance: &Result<U256, String>, cost: &Result<u128, String>) {
        let Ok(mut c) = self.cache.lock() else { return };
        if c.block != block {
            return;
        }
        if c.balances.len() < MAX_CACHED {
            c.balances.insert(address, balance.clone());
        }
        c.cost.get_or_insert_with(|| cost.clone());
    }

    /// `what` from the node within the time limit, after a read slot; the error as shown.
    async fn read<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, crate::operator::SourceError>>,
    ) -> Result<T, String> {
        let limit = self.timeout.as_millis();
        let attempt = async {
            let _slot = self.reads.acquire().await.map_err(|_| "the API is stopping".to_owned())?;
            f.await.map_err(|e| {
                tracing::warn!(error = %e, what, "reading the wallet from the node failed");
                format!("the node did not answer {what}; see lcw's log")
            })
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(format!("the node did not answer {what} within {limit} ms; try again")),
        }
    }

    /// The wallet of `address` at `block`.
    pub(crate) async fn at(&self, address: EthAddress, block: u64) -> Wallet {
        let (balance, cost) = self.cached(block, address);
        let (balance, cost) = match (balance, cost) {
            (Some(b), Some(c)) => (b, c),
            (b, c) => {
                let balance = async {
                    match b {
                        Some(b) => b,
                        None => self.read("eth_getBalance", self.source.balance(address, block)).await,
                    }
                };
                let cost = async {
                    match c {
                        Some(c) => c,
                        None => self.read("the fees", self.source.job_cost()).await,
                    }
                };
                let (balance, cost) = tokio::join!(balance, cost);
                self.keep(block, address, &balance, &cost);
                (balance, cost)
            }
        };
        wallet(block, balance, cost)
    }
}

/// The answer from what was read.
fn wallet(block: u64, balance: Result<U256, String>, cost: Result<u128, String>) -> Wallet {
    let runway = match (&balance, &cost) {
        (Ok(b), Ok(c)) => runway_jobs(*b, *c),
        _ => None,
    };
    let unavailable = match (&balance, &cost) {
        (Err(e), _) => Some(e.clone()),
        (Ok(_), Err(e)) => Some(format!("no runway: {e}")),
        (Ok(_), Ok(0)) => Some("no runway: the node gave a fee of 0".to_owned()),
        _ => None,
    };
    Wallet {
        block,
        balance: balance.ok().map(BigInt),
        job_cost: cost.ok().filter(|c| *c > 0).map(|c| BigInt(U256::from(c))),
        runway_jobs: runway,
        unavailable,
    }
}

/// The wallet of `address` at the store's cursor, or why it is unknown.
pub(crate) async fn of(ctx: &Context<'_>, address: EthAddress) -> async_graphql::Result<Wallet> {
    let db = crate::api::db(ctx)?;
    let block =
        db.read(|conn| Ok(crate::db::version(conn)?.map(|v| v.0).unwrap_or(0))).await.map_err(crate::api::gql)?;
    let source = ctx.data_opt::<Operator>().and_then(|o| o.wallet.clone());
    Ok(match source {
        Some(w) => w.at(address, block).await,
        None => Wallet { block, balance: None, job_cost: None, runway_jobs: None, unavailable: Some(NO_SOURCE.into()) },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::operator::SourceError;

    #[test]
    fn the_runway_is_whole_jobs_and_unknown_without_a_fee() {
        assert_eq!(runway_jobs(U256::from(10_000u64), 400), Some(25));
        assert_eq!(runway_jobs(U256::from(10_399u64), 400), Some(25), "rounded down: a part job is no job");
        assert_eq!(runway_jobs(U256::ZERO, 400), Some(0));
        assert_eq!(runway_jobs(U256::from(10_000u64), 0), None);
        assert_eq!(runway_jobs(U256::MAX, 1), Some(u64::MAX));
    }

    #[test]
    fn a_failed_read_says_which_and_leaves_the_rest() {
        let w = wallet(7, Ok(U256::from(1_000u64)), Err("the node did not answer the fees".into()));
        assert_eq!(w.balance, Some(BigInt(U256::from(1_000u64))));
        assert_eq!((w.job_cost, w.runway_jobs), (None, None));
        assert_eq!(w.unavailable.as_deref(), Some("no runway: the node did not answer the fees"));
        let w = wallet(7, Err("eth_getBalance failed".into()), Ok(10));
        assert_eq!((w.balance, w.runway_jobs), (None, None));
        assert_eq!(w.job_cost, Some(BigInt(U256::from(10u64))));
        let w = wallet(7, Ok(U256::from(95u64)), Ok(10));
        assert_eq!((w.runway_jobs, w.unavailable), (Some(9), None));
    }

    /// Counts reads; the balance is the block number, the cost 10, or it never answers.
    struct Node {
        reads: AtomicUsize,
        hang: bool,
    }

    impl WalletSource for Node {
        fn balance(&self, _: EthAddress, block: u64) -> BoxFuture<'static, Result<U256, SourceError>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let hang = self.hang;
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(U256::from(block))
            })
        }
        fn job_cost(&self) -> BoxFuture<'static, Result<u128, SourceError>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(10) })
        }
    }

    #[tokio::test]
    async fn the_node_is_asked_once_per_block_and_given_up_on_in_time() {
        let node = Arc::new(Node { reads: AtomicUsize::new(0), hang: false });
        let wallets = Wallets::new(node.clone(), Duration::from_millis(200));
        let a = EthAddress::repeat_byte(1);
        assert_eq!(wallets.at(a, 100).await.runway_jobs, Some(10));
        assert_eq!(wallets.at(a, 100).await.balance, Some(BigInt(U256::from(100u64))));
        assert_eq!(node.reads.load(Ordering::SeqCst), 2, "balance and cost, once for block 100");
        assert_eq!(wallets.at(a, 101).await.balance, Some(BigInt(U256::from(101u64))), "a new block reads again");
        assert_eq!(node.reads.load(Ordering::SeqCst), 4);

        let slow = Arc::new(Node { reads: AtomicUsize::new(0), hang: true });
        let wallets = Wallets::new(slow, Duration::from_millis(50));
        let w = wallets.at(a, 5).await;
        assert_eq!(w.balance, None);
        assert!(w.unavailable.as_deref().is_some_and(|u| u.contains("within 50 ms")), "{w:?}");
    }
}
