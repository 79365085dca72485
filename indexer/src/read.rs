//! The indexer's reads from the node, each answer checked ([`crate::answer`]) inside the attempt
//! that got it: a refused answer is counted, reported with its endpoint (redacted) and asked of
//! the next endpoint, and nothing of it reaches the store. The requests of one read go to one
//! endpoint, so that a range's logs and the headers its commit needs, or a header and its
//! parent, are checked against each other.

use std::collections::HashMap;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use lcw_chain::rpc::{AttemptError, Node};

use crate::answer::{self, BadAnswer, Blocks, LogsAsked};
use crate::rpc::{FetchedLog, Header, Rpc, RpcResult};

fn bad(e: BadAnswer) -> AttemptError {
    AttemptError::bad_answer(e.reason(), e)
}

/// The logs `asked` for from `node`, checked; and the blocks they name.
async fn checked_logs(
    node: &Node<'_>,
    asked: &LogsAsked,
    split_above: Option<usize>,
    at_most: usize,
) -> Result<(Vec<FetchedLog>, Blocks), AttemptError> {
    let logs = node.logs(&asked.filter(), split_above, at_most).await?;
    let blocks = answer::check_logs(asked, &logs).map_err(bad)?;
    Ok((logs, blocks))
}

/// Block `number` from `node`, checked to be that block.
async fn header_of(node: &Node<'_>, number: u64) -> Result<Header, AttemptError> {
    let header = node
        .header(BlockNumberOrTag::Number(number))
        .await?
        .ok_or_else(|| AttemptError::unavailable(format!("the node has no block {number} yet")))?;
    answer::check_header(number, &header).map_err(bad)?;
    Ok(header)
}

/// A range's logs and what their commit needs from the headers.
#[derive(Debug)]
pub(crate) struct RangeLogs {
    /// The logs, in block and log index order (an answer in another order is refused).
    pub(crate) logs: Vec<FetchedLog>,
    /// The range's last block.
    pub(crate) to: Header,
    /// Timestamps of the blocks whose logs carry none (older nodes).
    pub(crate) block_times: HashMap<u64, u64>,
}

/// The logs `asked` for over a range of final blocks, with the last block's header and the
/// headers of blocks whose logs lack a timestamp, all from one endpoint and each log's block
/// checked against its header when one is read. With `split_above`, a larger answer is reported
/// as [`crate::rpc::RpcError::RangeTooLarge`]; an answer past `at_most` bytes is a bad one.
pub(crate) async fn range(
    rpc: &Rpc,
    asked: &LogsAsked,
    split_above: Option<usize>,
    at_most: usize,
) -> RpcResult<RangeLogs> {
    rpc.checked("eth_getLogs", |node| {
        let asked = asked.clone();
        Box::pin(async move {
            let (logs, blocks) = checked_logs(&node, &asked, split_above, at_most).await?;
            let to = header_of(&node, asked.to).await?;
            blocks.check_header(&to).map_err(bad)?;
            let mut block_times = HashMap::new();
            for number in blocks.without_timestamp().filter(|n| *n != asked.to) {
                let header = header_of(&node, number).await?;
                blocks.check_header(&header).map_err(bad)?;
                block_times.insert(number, header.timestamp);
            }
            Ok(RangeLogs { logs, to, block_times })
        })
    })
    .await
}

/// The logs `asked` for, checked (see [`range`] for the limits).
pub(crate) async fn logs(
    rpc: &Rpc,
    asked: &LogsAsked,
    split_above: Option<usize>,
    at_most: usize,
) -> RpcResult<Vec<FetchedLog>> {
    rpc.checked("eth_getLogs", |node| {
        let asked = asked.clone();
        Box::pin(async move { Ok(checked_logs(&node, &asked, split_above, at_most).await?.0) })
    })
    .await
}

/// The logs of `addresses` in the block `header` (asked by its hash), checked to be that
/// block's; an answer past `at_most` bytes is a bad one.
pub(crate) async fn block(
    rpc: &Rpc,
    header: &Header,
    addresses: Vec<Address>,
    at_most: usize,
) -> RpcResult<Vec<FetchedLog>> {
    logs(rpc, &LogsAsked::block(header, addresses), None, at_most).await
}

/// Block `number`, checked to be that block (None when the node has none).
pub(crate) async fn header(rpc: &Rpc, number: u64) -> RpcResult<Option<Header>> {
    rpc.checked("eth_getBlockByNumber", move |node| {
        Box::pin(async move {
            let header = node.header(BlockNumberOrTag::Number(number)).await?;
            if let Some(h) = &header {
                answer::check_header(number, h).map_err(bad)?;
            }
            Ok(header)
        })
    })
    .await
}

/// The next block for a follower whose last block has hash `tip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// It extends the follower's chain.
    Extends(Header),
    /// The node's chain no longer holds the follower's last block: its block before this one
    /// is another (a reorg).
    Forked,
    /// The node has no such block (yet).
    Missing,
}

/// Block `number` for a follower whose block `number - 1` has hash `tip`. A header whose parent
/// is not `tip` is either a reorg or a wrong answer; the same node's block `number - 1` tells
/// which: the header must link to it, else the answer is refused and asked elsewhere.
pub(crate) async fn next(rpc: &Rpc, number: u64, tip: B256) -> RpcResult<Next> {
    rpc.checked("eth_getBlockByNumber", move |node| {
        Box::pin(async move {
            let Some(header) = node.header(BlockNumberOrTag::Number(number)).await? else {
                return Ok(Next::Missing);
            };
            answer::check_header(number, &header).map_err(bad)?;
            if header.parent_hash == tip {
                return Ok(Next::Extends(header));
            }
            let Some(before) = number.checked_sub(1) else { return Ok(Next::Forked) };
            let parent = header_of(&node, before).await?;
            answer::check_link(&header, &parent).map_err(bad)?;
            Ok(Next::Forked)
        })
    })
    .await
}
