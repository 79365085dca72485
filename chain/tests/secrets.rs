//! A node URL's API key never reaches an error or a log line of the chain layer: a node that
//! cannot be reached, and one that answers only its chain id and then fails every call in the
//! ways that quote the request URL (an error page, a garbled answer, a JSON-RPC error, a dropped
//! connection), with the key in the URL's path, query and user info.

mod hostile;

use std::time::Duration;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes};
use lcw_chain::node::{CallSpec, Chain};
use lcw_chain::rpc::Rpc;
use lcw_schema::profile::Profile;

use hostile::{Answer, HostileNode, assert_no_secret, captured_logs};

const TIMEOUT: Duration = Duration::from_millis(400);

/// Every call of the node view and of the failover client, at once: each outcome's `Display`
/// and `Debug`.
async fn every_call(chain: &Chain) -> Vec<String> {
    fn shown<T: std::fmt::Debug, E: std::fmt::Display + std::fmt::Debug>(r: Result<T, E>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("{e} / {e:?}"),
        }
    }
    let call = CallSpec { from: Address::ZERO, to: Address::repeat_byte(1), data: Bytes::from_static(&[1, 2, 3, 4]) };
    let calls = std::slice::from_ref(&call);
    let rpc = chain.rpc();
    let raw = Bytes::from_static(&[0x02, 0xc0]);
    let (head, block, fees, simulate, call_at, send_raw) = futures::join!(
        chain.head(),
        chain.block(BlockNumberOrTag::Number(1)),
        chain.fees(1),
        chain.simulate(calls, 2, 3),
        chain.call_at(&call, 2, 3),
        chain.send_raw(&raw),
    );
    let hashes = [B256::ZERO];
    let (receipts, nonces, balance, header, logs) = futures::join!(
        chain.receipts(&hashes),
        chain.nonces(Address::ZERO),
        chain.balance(Address::ZERO),
        rpc.header(BlockNumberOrTag::Latest),
        rpc.logs(&[Address::ZERO], 1, 2),
    );
    vec![
        shown(head),
        shown(block),
        shown(fees),
        shown(simulate),
        shown(call_at),
        shown(send_raw),
        shown(receipts),
        shown(nonces),
        shown(balance),
        shown(header),
        shown(logs),
    ]
}

#[tokio::test]
async fn an_unreachable_node_is_named_without_its_key() {
    let logs = captured_logs();
    // Port 1 on loopback refuses at once; reqwest quotes the whole URL in its error.
    let urls = hostile::secret_urls("127.0.0.1:1");
    let mut texts = Vec::new();
    for url in &urls {
        let e = Chain::connect(url, TIMEOUT).await.expect_err("nothing listens on port 1");
        texts.push(format!("{e} / {e:?}"));
        let rpc = Rpc::new(std::slice::from_ref(url), TIMEOUT).expect("a valid URL").give_up_after(TIMEOUT);
        let e = rpc.chain_id().await.expect_err("nothing listens on port 1");
        texts.push(format!("{e} / {e:?}"));
        texts.push(format!("{rpc:?}"));
    }
    let mut profile = Profile::resolve("testnet", std::path::Path::new(".")).expect("the testnet preset");
    profile.rpc_url = urls[0].clone();
    profile.rpc_fallback_urls = urls[1..].to_vec();
    let e = Chain::open(&profile, TIMEOUT).await.expect_err("nothing listens on port 1");
    texts.push(format!("{e} / {e:?}"));
    texts.push(format!("{profile:?}"));
    assert!(texts.iter().any(|t| t.contains("127.0.0.1:1")), "the node is named: {texts:#?}");
    assert_no_secret(&texts, logs);
}

#[tokio::test]
async fn a_node_failing_in_every_way_that_quotes_its_url_is_reported_without_its_key() {
    let logs = captured_logs();
    let node = HostileNode::start().await;
    for answer in Answer::ALL {
        node.answer(answer);
        for url in hostile::secret_urls(&node.host) {
            // A fresh client per URL and way of failing: no endpoint rests from the last one.
            let chain = Chain::connect(&url, TIMEOUT).await.expect("the node answers its chain id");
            let texts = every_call(&chain).await;
            assert_no_secret(&texts, logs);
            assert!(node.served() > 0, "the hostile node was asked");
        }
    }
}
