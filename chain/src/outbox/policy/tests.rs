// The tests compute expectations from values they chose; the module's arithmetic lint is for
// the policy's inputs.
#![allow(clippy::arithmetic_side_effects)]

use lcw_schema::store::outbox::{Kind, LiveTx};
use proptest::prelude::*;

use super::*;

const GWEI: u128 = crate::fees::GWEI;
const CAP: FeeCap = FeeCap { per_gas: 100 * GWEI, per_blob_gas: 100 * GWEI };

/// A live worker transaction at nonce 10, signed at head 100 at 2 gwei (tip 1), accepted then.
fn tx(id: i64) -> LiveTx {
    LiveTx {
        id,
        lane: Lane::Worker,
        kind: Kind::Ack,
        nonce: 10,
        cap: Some(Ceiling { per_gas: CAP.per_gas, per_blob_gas: CAP.per_blob_gas }),
        attempts: 1,
        last: AttemptFees { max_fee: 2 * GWEI, tip: GWEI, blob_fee: None },
        signed_head: 100,
        broadcasts: 1,
        broadcast_block: Some(100),
        accepted_block: Some(100),
        refusal: None,
        refused_block: None,
        bump_tried_block: None,
    }
}

/// `t` refused with `why` since head `since`, last sent at `at`, never accepted.
fn refused(why: &'static str, since: u64, at: u64) -> impl Fn(LiveTx) -> LiveTx {
    move |mut t: LiveTx| {
        t.refusal = Some(why.into());
        t.refused_block = Some(since);
        t.broadcast_block = Some(at);
        t.accepted_block = None;
        t
    }
}

fn market(head: u64, base_fee: u128) -> Market {
    Market { head, base_fee, fees: Some(Fees { max_fee: 2 * base_fee + GWEI, tip: GWEI }) }
}

fn one(m: &Market, t: LiveTx) -> Action {
    let out = plan(Lane::Worker, m, 10, CAP, &[t]);
    assert_eq!(out.len(), 1, "{out:?}");
    out[0]
}

#[test]
fn the_policy_table() {
    let blob = |mut t: LiveTx| {
        t.kind = Kind::Complete;
        t.last.blob_fee = Some(3 * GWEI);
        t
    };
    let at_ceiling = |mut t: LiveTx| {
        t.last.max_fee = CAP.per_gas;
        t
    };
    type Case = (&'static str, Market, LiveTx, Action);
    let cases: Vec<Case> = vec![
        (
            "pending, not stuck: nothing this block",
            market(101, GWEI / 2),
            tx(1),
            Action::Wait { id: 1, why: Why::Pending },
        ),
        (
            "pending for REBROADCAST_BLOCKS: sent again",
            market(103, GWEI / 2),
            {
                let mut t = tx(1);
                t.signed_head = 102;
                t
            },
            Action::Rebroadcast { id: 1, why: Why::Pending },
        ),
        (
            "stuck and under ceiling: +25 % (or the market's), capped",
            market(103, GWEI / 2),
            tx(1),
            Action::Bump {
                id: 1,
                fees: AttemptFees { max_fee: 2 * GWEI + GWEI / 2, tip: GWEI + GWEI / 4, blob_fee: None },
            },
        ),
        (
            "stuck under a market above the ceiling: bumped to the ceiling",
            Market { head: 103, base_fee: 60 * GWEI, fees: Some(Fees { max_fee: 121 * GWEI, tip: GWEI }) },
            tx(1),
            Action::Bump { id: 1, fees: AttemptFees { max_fee: CAP.per_gas, tip: GWEI + GWEI / 4, blob_fee: None } },
        ),
        (
            "stuck blob transaction: +100 % on every fee",
            market(103, GWEI / 2),
            blob(tx(1)),
            Action::Bump { id: 1, fees: AttemptFees { max_fee: 4 * GWEI, tip: 2 * GWEI, blob_fee: Some(6 * GWEI) } },
        ),
        (
            "blob transaction whose doubled fee would pass the ceiling: waits",
            market(103, GWEI / 2),
            {
                let mut t = blob(tx(1));
                t.last.max_fee = 60 * GWEI;
                t
            },
            Action::Rebroadcast { id: 1, why: Why::Unreplaceable },
        ),
        (
            "at its ceiling: waits, re-broadcast",
            market(103, GWEI / 2),
            at_ceiling(tx(1)),
            Action::Rebroadcast { id: 1, why: Why::AtCeiling },
        ),
        (
            "base fee above the ceiling: waits, no bump",
            market(101, 20_000 * GWEI),
            tx(1),
            Action::Wait { id: 1, why: Why::PricedOut },
        ),
        (
            "priced out below the ceiling: bumped at once",
            market(101, 40 * GWEI),
            tx(1),
            Action::Bump { id: 1, fees: AttemptFees { max_fee: 81 * GWEI, tip: GWEI + GWEI / 4, blob_fee: None } },
        ),
        (
            "attempt limit reached: waits at its last",
            market(110, GWEI / 2),
            {
                let mut t = tx(1);
                t.attempts = MAX_ATTEMPTS;
                t
            },
            Action::Rebroadcast { id: 1, why: Why::AttemptLimit },
        ),
        (
            "refused last block: re-broadcast this block",
            market(101, GWEI / 2),
            refused("insufficient funds for gas * price + value", 100, 100)(tx(1)),
            Action::Rebroadcast { id: 1, why: Why::Refused },
        ),
        (
            "refused this block already: no broadcast this block",
            market(101, GWEI / 2),
            refused("insufficient funds for gas * price + value", 100, 101)(tx(1)),
            Action::Wait { id: 1, why: Why::Refused },
        ),
        (
            "refused for funds and stuck: no bump",
            market(110, GWEI / 2),
            refused("Insufficient funds for gas * price + value", 100, 109)(tx(1)),
            Action::Rebroadcast { id: 1, why: Why::Refused },
        ),
        (
            "refused as underpriced: bumped at once",
            market(101, GWEI / 2),
            refused("transaction underpriced", 100, 100)(tx(1)),
            Action::Bump {
                id: 1,
                fees: AttemptFees { max_fee: 2 * GWEI + GWEI / 2, tip: GWEI + GWEI / 4, blob_fee: None },
            },
        ),
        (
            "a refused bump is not tried again before STUCK_BLOCKS",
            market(105, GWEI / 2),
            {
                let mut t = tx(1);
                t.bump_tried_block = Some(103);
                t.broadcast_block = Some(103);
                t
            },
            Action::Wait { id: 1, why: Why::Holding },
        ),
        (
            "a refused bump is tried again after STUCK_BLOCKS",
            market(106, GWEI / 2),
            {
                let mut t = tx(1);
                t.bump_tried_block = Some(103);
                t.broadcast_block = Some(103);
                t
            },
            Action::Bump {
                id: 1,
                fees: AttemptFees { max_fee: 2 * GWEI + GWEI / 2, tip: GWEI + GWEI / 4, blob_fee: None },
            },
        ),
        (
            "priced out, but sent this block already: no second broadcast this block",
            market(101, 40 * GWEI),
            {
                let mut t = tx(1);
                t.broadcast_block = Some(101);
                t
            },
            Action::Wait { id: 1, why: Why::Holding },
        ),
        (
            "no market fees: nothing is bumped",
            Market { head: 110, base_fee: 0, fees: None },
            tx(1),
            Action::Rebroadcast { id: 1, why: Why::Holding },
        ),
    ];
    for (name, m, t, want) in cases {
        assert_eq!(one(&m, t), want, "{name}");
    }
}

#[test]
fn a_used_nonce_without_a_receipt_drops_the_row() {
    let out = plan(Lane::Worker, &market(101, GWEI), 11, CAP, &[tx(1)]);
    assert_eq!(out, vec![Action::Drop { id: 1, nonce: 10 }]);
}

#[test]
fn a_refused_transaction_holding_back_later_nonces_gives_its_nonce_to_a_transfer_to_self() {
    let mut a = tx(1);
    a.refusal = Some("insufficient funds for gas * price + value".into());
    a.refused_block = Some(100);
    a.accepted_block = None;
    let mut b = tx(2);
    b.nonce = 11;
    b.lane = Lane::Settler;
    // Refused this block: one more try first.
    let out = plan(Lane::Worker, &market(100, GWEI), 10, CAP, &[a.clone(), b.clone()]);
    assert_eq!(out, vec![Action::Wait { id: 1, why: Why::Refused }]);
    // Refused since an earlier block: cancelled at market fees under its ceiling.
    let out = plan(Lane::Worker, &market(101, GWEI), 10, CAP, &[a.clone(), b.clone()]);
    assert_eq!(out, vec![Action::Cancel { id: 1, fees: Fees { max_fee: 3 * GWEI, tip: GWEI } }]);
    // Nothing behind it: it only waits for its wallet.
    let out = plan(Lane::Worker, &market(101, GWEI), 10, CAP, std::slice::from_ref(&a));
    assert_eq!(out, vec![Action::Rebroadcast { id: 1, why: Why::Refused }]);
    // Another lane leaves it to its own lane while that lane re-broadcasts it ...
    a.broadcast_block = Some(101);
    let out = plan(Lane::Settler, &market(102, GWEI), 10, CAP, &[a.clone(), b.clone()]);
    assert!(out.iter().all(|x| !matches!(x, Action::Cancel { .. })), "{out:?}");
    // ... and takes over once that lane has stopped.
    let out = plan(Lane::Settler, &market(103, GWEI), 10, CAP, &[a, b]);
    assert!(out.contains(&Action::Cancel { id: 1, fees: Fees { max_fee: 3 * GWEI, tip: GWEI } }), "{out:?}");
}

#[test]
fn a_cancel_of_a_transaction_a_node_may_hold_outbids_it_under_the_ceiling() {
    let mut t = tx(1);
    t.last = AttemptFees { max_fee: 90 * GWEI, tip: 2 * GWEI, blob_fee: None };
    let f = cancel_fees(&t, Some(Fees { max_fee: 3 * GWEI, tip: GWEI }), CAP);
    assert_eq!(f, Fees { max_fee: CAP.per_gas, tip: 2 * GWEI + GWEI / 2 });
    t.accepted_block = None;
    let f = cancel_fees(&t, Some(Fees { max_fee: 300 * GWEI, tip: GWEI }), CAP);
    assert_eq!(f, Fees { max_fee: CAP.per_gas, tip: GWEI });
}

#[test]
fn gaps_below_a_live_transaction_are_found_and_filled() {
    // Held 5 (mined), 7 and 9 (live); the chain is at 5: 6 and 8 are gaps; nothing above 9.
    assert_eq!(gaps(5, &[5, 7, 9], Some(9)), vec![6, 8]);
    assert_eq!(gaps(5, &[5, 6], Some(6)), Vec::<u64>::new());
    assert_eq!(gaps(5, &[], None), Vec::<u64>::new());
    assert_eq!(gaps(0, &[100], Some(100)).len(), MAX_FILLS_PER_HEAD);
    let m = Fees { max_fee: 300 * GWEI, tip: GWEI };
    // No row held it: a transfer to self under the lane's filler ceiling.
    let filler = FeeCap::new(50 * GWEI, GWEI);
    assert_eq!(
        fill(Lane::Worker, None, m, filler),
        Fill::Transfer { fees: Fees { max_fee: 50 * GWEI, tip: GWEI }, cap: filler }
    );
    let dropped = DroppedTx {
        id: 4,
        lane: Lane::Worker,
        kind: Kind::Complete,
        cap: Some(Ceiling { per_gas: 80 * GWEI, per_blob_gas: 2 * GWEI }),
        attempts: 2,
        last: AttemptFees { max_fee: 9 * GWEI, tip: GWEI, blob_fee: Some(3 * GWEI) },
        jobs: vec![3],
        jobs_free: true,
    };
    // This lane's, still wanted: signed again under its own ceiling.
    assert_eq!(
        fill(Lane::Worker, Some(&dropped), m, filler),
        Fill::Resign { id: 4, fees: AttemptFees { max_fee: 80 * GWEI, tip: GWEI, blob_fee: Some(2 * GWEI) } }
    );
    // Another lane's, or its job went out since: a transfer to self under the row's ceiling.
    let row_cap = FeeCap::new(80 * GWEI, 2 * GWEI);
    let transfer = Fill::Transfer { fees: Fees { max_fee: 80 * GWEI, tip: GWEI }, cap: row_cap };
    assert_eq!(fill(Lane::Settler, Some(&dropped), m, filler), transfer);
    assert_eq!(fill(Lane::Worker, Some(&DroppedTx { jobs_free: false, ..dropped.clone() }), m, filler), transfer);
    assert_eq!(fill(Lane::Worker, Some(&DroppedTx { attempts: MAX_ATTEMPTS, ..dropped }), m, filler), transfer);
}

#[test]
fn refusals_are_read_from_node_messages() {
    assert_eq!(Refusal::of("Insufficient funds for gas * price + value"), Refusal::Funds);
    assert_eq!(Refusal::of("replacement transaction underpriced"), Refusal::Fee);
    assert_eq!(Refusal::of("max fee per gas less than block base fee"), Refusal::Fee);
    assert_eq!(Refusal::of("intrinsic gas too low"), Refusal::Other);
}

#[test]
fn raise_and_threshold_at_the_edges() {
    assert_eq!(raise(0, 25), 1);
    assert_eq!(raise(100, 25), 125);
    assert_eq!(raise(3, 25), 4);
    assert_eq!(raise(u128::MAX, 100), u128::MAX);
    assert_eq!(threshold(100, 10), 110);
    assert_eq!(threshold(u128::MAX, 100), u128::MAX);
    assert_eq!(raise(1_000, u128::MAX), u128::MAX, "a percent past any rule saturates");
    assert_eq!(threshold(1_000, u128::MAX), u128::MAX);
    assert_eq!(raise(99, u128::MAX), 99 + 99 * (u128::MAX / 100) + (99 * (u128::MAX % 100)).div_ceil(100));
}

#[test]
fn heads_and_fees_at_their_limits_give_actions_instead_of_panics() {
    // A head behind the block a transaction was broadcast in (a reorg to a shorter chain, or a
    // lagging fallback node), a head at u64::MAX, and fees at u128::MAX.
    for head in [0, 99, u64::MAX] {
        for base_fee in [0, u128::MAX] {
            let m = Market { head, base_fee, fees: Some(Fees { max_fee: u128::MAX, tip: u128::MAX }) };
            for t in [tx(1), refused("insufficient funds", u64::MAX, u64::MAX)(tx(2))] {
                let out = plan(Lane::Worker, &m, u64::MAX, FeeCap::new(u128::MAX, u128::MAX), std::slice::from_ref(&t));
                assert!(out.len() <= 1, "head {head}, base fee {base_fee}: {out:?}");
            }
        }
    }
    let behind = one(&market(99, GWEI), tx(1));
    assert!(matches!(behind, Action::Wait { id: 1, .. }), "sent at 100, seen at 99: no re-broadcast: {behind:?}");
    assert!(gaps(u64::MAX, &[], Some(u64::MAX)).is_empty());
    assert_eq!(gaps(u64::MAX - 2, &[], Some(u64::MAX)), vec![u64::MAX - 2, u64::MAX - 1]);
}

fn fees() -> impl Strategy<Value = AttemptFees> {
    (any::<u128>(), any::<u128>(), proptest::option::of(any::<u128>()))
        .prop_map(|(max_fee, tip, blob_fee)| AttemptFees { max_fee, tip: tip.min(max_fee), blob_fee })
}

proptest! {
    #[test]
    fn raise_never_overflows_and_never_falls(v in any::<u128>(), p in 0u128..=100) {
        let r = raise(v, p);
        prop_assert!(r >= v);
        prop_assert!(v == u128::MAX || r > v);
        prop_assert!(threshold(v, p) <= r || v == u128::MAX);
        prop_assert!(raise(v.saturating_add(1), p) >= r);
    }

    #[test]
    fn a_replacement_never_exceeds_the_ceiling_and_always_outbids(
        last in fees(),
        market_fee in any::<u128>(),
        market_tip in any::<u128>(),
        per_gas in any::<u128>(),
        per_blob_gas in any::<u128>(),
    ) {
        let cap = FeeCap::new(per_gas, per_blob_gas);
        let market = Fees { max_fee: market_fee, tip: market_tip.min(market_fee) };
        if let Ok(new) = replacement(last, market, cap) {
            prop_assert!(new.max_fee <= cap.per_gas);
            prop_assert!(new.tip <= new.max_fee);
            prop_assert!(new.max_fee > last.max_fee);
            prop_assert!(new.tip >= last.tip);
            let least = if last.blob_fee.is_some() { BLOB_BUMP_PERCENT } else { MIN_REPLACEMENT_PERCENT };
            prop_assert!(new.max_fee >= threshold(last.max_fee, least));
            if let (Some(old), Some(b)) = (last.blob_fee, new.blob_fee) {
                prop_assert!(b <= cap.per_blob_gas && b > old);
            }
        }
        let first = capped(market, cap);
        prop_assert!(first.max_fee <= cap.per_gas && first.tip <= first.max_fee);
    }

    #[test]
    fn no_plan_offers_more_than_the_ceiling(
        last in fees(),
        base_fee in any::<u128>(),
        market_fee in any::<u128>(),
        per_gas in any::<u128>(),
        head in 0u64..1_000,
        signed in 0u64..1_000,
        attempts in 1u32..12,
    ) {
        let cap = FeeCap::new(per_gas, per_gas / 2);
        let mut t = tx(1);
        t.cap = Some(Ceiling { per_gas: cap.per_gas, per_blob_gas: cap.per_blob_gas });
        t.last = AttemptFees {
            max_fee: last.max_fee.min(per_gas),
            tip: last.tip.min(last.max_fee.min(per_gas)),
            blob_fee: last.blob_fee.map(|b| b.min(cap.per_blob_gas)),
        };
        t.signed_head = signed;
        t.attempts = attempts;
        let m = Market { head, base_fee, fees: Some(Fees { max_fee: market_fee, tip: market_fee / 3 }) };
        for a in plan(Lane::Worker, &m, 0, CAP, &[t]) {
            match a {
                Action::Bump { fees, .. } => {
                    prop_assert!(attempts < MAX_ATTEMPTS);
                    prop_assert!(fees.max_fee <= cap.per_gas && base_fee <= cap.per_gas);
                    prop_assert!(fees.blob_fee.is_none_or(|b| b <= cap.per_blob_gas));
                }
                Action::Cancel { fees, .. } => prop_assert!(fees.max_fee <= cap.per_gas),
                _ => {}
            }
        }
    }
}
