//! A node URL's API key never reaches the settler's errors or log lines: the operator verbs'
//! reads, the governance parameters, opening an operator and the settler's own loop, against a
//! node that cannot be reached and against one that fails every call in the ways that quote the
//! request URL.

// The hostile node of the chain layer's tests, shared rather than copied.
#[path = "../../chain/tests/hostile/mod.rs"]
mod hostile;

use std::time::Duration;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use lcw_chain::FeeCap;
use lcw_chain::node::Chain;
use lcw_schema::profile::Profile;
use lcw_settler::ops::{Operator, on_chain_worker};
use lcw_settler::plan::Mode;
use lcw_settler::settle::{self, SettleConfig};

use hostile::{Answer, HostileNode, assert_no_secret, captured_logs};

const TIMEOUT: Duration = Duration::from_millis(400);

/// A profile of the hostile node's chain (31337) at `url`.
fn profile(url: &str) -> Profile {
    let mut p = Profile::resolve("testnet", std::path::Path::new(".")).expect("the testnet preset");
    p.chain_id = 31337;
    p.rpc_url = url.to_owned();
    p.gateway_url = None;
    p
}

/// Opening an operator and running the settler once over `url`; the loop's outcome if it ends
/// within a few seconds (it keeps retrying a node that answers nothing).
async fn open_and_settle(url: &str, db: &std::path::Path) -> Vec<String> {
    let mut texts = Vec::new();
    let signer = PrivateKeySigner::random();
    match Operator::open(profile(url), db, signer.clone(), FeeCap::default()).await {
        Ok(op) => texts.push(format!("{op:?}")),
        Err(e) => texts.push(format!("{e} / {e:?}")),
    }
    let mut config = SettleConfig::new(profile(url), db.to_owned(), Mode::Keeper, signer);
    config.rpc_timeout = TIMEOUT;
    config.poll_interval = Duration::from_millis(50);
    config.once = true;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    if let Ok(outcome) = tokio::time::timeout(Duration::from_secs(5), settle::run(config, shutdown)).await {
        texts.push(match outcome {
            Ok(summary) => format!("{summary:?}"),
            Err(e) => format!("{e} / {e:?}"),
        });
    }
    texts
}

#[tokio::test]
async fn an_unreachable_node_is_named_without_its_key() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, url) in hostile::secret_urls("127.0.0.1:1").iter().enumerate() {
        let texts = open_and_settle(url, &dir.path().join(format!("{i}.db"))).await;
        assert!(texts.iter().any(|t| t.contains("127.0.0.1:1")), "the node is named: {texts:#?}");
        assert_no_secret(&texts, logs);
    }
}

#[tokio::test]
async fn a_node_failing_in_every_way_that_quotes_its_url_is_reported_without_its_key() {
    let logs = captured_logs();
    let node = HostileNode::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    for answer in Answer::ALL {
        node.answer(answer);
        for (i, url) in hostile::secret_urls(&node.host).iter().enumerate() {
            let chain = Chain::connect(url, TIMEOUT).await.expect("the node answers its chain id");
            let p = profile(url);
            let mut texts = Vec::new();
            let worker = on_chain_worker(&chain, &p, Address::repeat_byte(7)).await;
            texts.push(worker.map(|w| format!("{w:?}")).unwrap_or_else(|e| format!("{e} / {e:?}")));
            let params = settle::chain_params(&chain, &p).await;
            texts.push(params.map(|w| format!("{w:?}")).unwrap_or_else(|e| format!("{e} / {e:?}")));
            texts.extend(open_and_settle(url, &dir.path().join(format!("{answer:?}-{i}.db"))).await);
            assert_no_secret(&texts, logs);
        }
    }
    assert!(node.served() > 0, "the hostile node was asked");
}
